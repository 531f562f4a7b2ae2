//! Applications (spec §5) and the graceful node stop (spec §6.1).
//!
//! An application is a named, versioned supervision tree with a start type. Starting one
//! ([`Node::start_application`](crate::Node::start_application)) checks that its dependencies run, then spawns its
//! **application master**: a native process that traps exits and starts the top
//! supervisor linked to itself (`supervisor::start_link`), waiting until the whole tree
//! has started. The master then waits for one of two things:
//!
//! - a stop request ([`Node::stop_application`](crate::Node::stop_application), or [`Node::shutdown`](crate::Node::shutdown)): it sends
//!   `exit(Top, shutdown)` and waits, **without a time limit**, for the top supervisor to
//!   exit (the supervisor stops its children in reverse start order, each by its shutdown
//!   rule, subtrees first), logs `application X exited: stopped`, and exits `normal`. An
//!   explicit stop never takes the node down, and applications that depend on the stopped
//!   one keep running (OTP does the same).
//! - the top supervisor exiting on its own (typically `shutdown`, after too many restarts):
//!   the master exits with the same reason, and the start type decides (spec §5.2):
//!   `temporary` is logged and the node keeps running; `transient` terminates the node
//!   unless the reason is `normal`; `permanent` terminates the node.
//!
//! "The node terminates" means the node records a halt reason,
//! `{application_terminated, App, Reason}` (or `{application_start_failure, App, Reason}`
//! when a permanent or transient application's tree fails to start), after one error line
//! naming the application, its type and the reason. The embedding program awaits it
//! ([`Node::halted`](crate::Node::halted)), stops the other applications ([`Node::shutdown`](crate::Node::shutdown)) and exits with
//! status 1, as `hotswap start` does. The node itself keeps running until then.
//!
//! [`Node::shutdown`](crate::Node::shutdown) is `init:stop()`: a second request joins the first; applications are
//! stopped one at a time in reverse start order, each completely before the next; if the
//! time limit runs out first, the graceful phase is abandoned with a log line naming what it
//! was waiting for (the application, the supervisor, the children still alive); then every
//! remaining process is killed and every module purged ([`Node::stop`](crate::Node::stop)).
//!
//! Differences from OTP: there is no application callback module (`Mod:start/2`,
//! `prep_stop`, `stop`): an application *is* its top supervisor's tree (built in Rust or by
//! a module's `Supervisor::init`). Processes have no group leader, so a stop does not kill
//! stray processes that the application spawned outside its tree; [`Node::shutdown`](crate::Node::shutdown)'s kill
//! phase does.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap::{codec, Ctx, ExitReason, Message, MessageKind, Pid};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tracing::{error, info};

pub use crate::behaviour::supervisor::Source;

use crate::code::PurgeReport;

/// How long the kill phase of [`Node::shutdown`](crate::Node::shutdown) may wait for killed processes, at least,
/// when the graceful phase used up the time limit.
pub(crate) const KILL_PHASE: Duration = Duration::from_millis(500);

/// What happens when an application's top supervisor exits on its own (spec §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartType {
    /// The node terminates, whatever the reason (the default in releases).
    #[default]
    Permanent,
    /// The node terminates unless the reason is `normal`.
    Transient,
    /// Logged; the node keeps running.
    Temporary,
}

impl fmt::Display for StartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartType::Permanent => "permanent",
            StartType::Transient => "transient",
            StartType::Temporary => "temporary",
        })
    }
}

/// An application: a named, versioned supervision tree and its start type.
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    /// Its name (unique among running applications).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Applications that must be running before it starts.
    pub depends: Vec<String>,
    /// What its termination means for the node.
    pub start_type: StartType,
    /// Its top supervisor's tree.
    pub supervisor: Source,
}

impl Application {
    /// A permanent application with no dependencies whose top supervisor is `supervisor`.
    pub fn new(name: impl Into<String>, version: impl Into<String>, supervisor: Source) -> Self {
        Application {
            name: name.into(),
            version: version.into(),
            depends: Vec::new(),
            start_type: StartType::Permanent,
            supervisor,
        }
    }

    /// With these dependencies.
    pub fn depends(mut self, deps: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.depends = deps.into_iter().map(Into::into).collect();
        self
    }

    /// With this start type.
    pub fn start_type(mut self, t: StartType) -> Self {
        self.start_type = t;
        self
    }
}

/// Why an application operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// `{not_started, Dep}`: a dependency is not running; nothing was started.
    #[error("application {app:?} cannot start: it depends on {dep:?}, which is not running (start {dep:?} first)")]
    NotStarted {
        /// The application.
        app: String,
        /// The dependency that is not running.
        dep: String,
    },
    /// `{already_started, App}`: it is running (or starting) already.
    #[error("application {0:?} is already started")]
    AlreadyStarted(String),
    /// No running application has this name.
    #[error("application {0:?} is not running")]
    NotRunning(String),
    /// The node is stopping: no application starts any more.
    #[error("application {0:?} cannot start: the node is stopping")]
    Stopping(String),
    /// The top supervisor did not start (its reason), or its `init` returned ignore.
    #[error("application {app:?} did not start: {reason}")]
    StartFailed {
        /// The application.
        app: String,
        /// Why its top supervisor did not start.
        reason: String,
    },
}

/// A running application, as [`Node::applications`](crate::Node::applications) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its start type.
    pub start_type: StartType,
    /// Its dependencies.
    pub depends: Vec<String>,
    /// Its application master.
    pub master: Pid,
    /// Its top supervisor.
    pub supervisor: Pid,
}

/// What [`Node::stop`](crate::Node::stop) did.
#[derive(Debug, Clone)]
pub struct StopReport {
    /// Processes killed.
    pub killed: usize,
    /// Processes that did not exit in time.
    pub stuck: Vec<Pid>,
    /// Per-module purges.
    pub purges: Vec<PurgeReport>,
}

/// What [`Node::shutdown`](crate::Node::shutdown) did.
#[derive(Debug, Clone)]
pub struct ShutdownReport {
    /// The applications stopped gracefully, in the order they were stopped.
    pub stopped: Vec<String>,
    /// Set when the time limit ran out: what the graceful phase was waiting for.
    pub abandoned: Option<String>,
    /// The kill phase: processes killed, stuck ones, module purges.
    pub stop: StopReport,
    /// How long the whole shutdown took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// Every application stopped in time, no process was stuck, and every module version
    /// was unmapped.
    pub fn clean(&self) -> bool {
        self.abandoned.is_none()
            && self.stop.stuck.is_empty()
            && self.stop.purges.iter().all(|p| p.pinned.is_none())
    }
}

/// The message a host sends an application master to stop its application.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum MasterRequest {
    StopApplication,
}

/// A running application and how to learn that its master has finished.
pub(crate) struct Running {
    pub(crate) info: AppInfo,
    /// A stop was requested: the top supervisor's exit is the stop, not a termination.
    pub(crate) stopping: bool,
    /// `Some(reason)` once the master has finished; closed if it was killed.
    pub(crate) done: watch::Receiver<Option<ExitReason>>,
}

#[derive(Default)]
pub(crate) struct State {
    /// In start order.
    pub(crate) running: Vec<Running>,
    /// Names of applications whose trees are starting.
    pub(crate) starting: Vec<String>,
    /// [`Node::shutdown`](crate::Node::shutdown) has begun.
    pub(crate) shutting_down: bool,
}

/// The node's application controller.
pub(crate) struct Apps {
    pub(crate) state: Mutex<State>,
    pub(crate) halt: watch::Sender<Option<String>>,
    pub(crate) shutdown: tokio::sync::OnceCell<ShutdownReport>,
}

impl Apps {
    pub(crate) fn new() -> Apps {
        Apps {
            state: Mutex::new(State::default()),
            halt: watch::Sender::new(None),
            shutdown: tokio::sync::OnceCell::new(),
        }
    }

    /// Record the node's halt reason (the first one stays).
    pub(crate) fn halt(&self, reason: String) {
        self.halt.send_if_modified(|h| {
            if h.is_none() {
                *h = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn remove(&self, name: &str) {
        self.state.lock().running.retain(|r| r.info.name != name);
    }

    /// The top supervisor of `info` exited on its own with `reason`: spec §5.2. `false` if
    /// a stop had been requested meanwhile (then it is the stop).
    pub(crate) fn terminated(&self, info: &AppInfo, reason: &ExitReason) -> bool {
        let stopping = {
            let mut st = self.state.lock();
            let stopping = st
                .running
                .iter()
                .any(|r| r.info.name == info.name && r.stopping);
            st.running.retain(|r| r.info.name != info.name);
            stopping
        };
        if stopping {
            return false;
        }
        let (name, t) = (&info.name, info.start_type);
        match (t, reason) {
            (StartType::Temporary, _) | (StartType::Transient, ExitReason::Normal) => {
                info!(application = %name, %reason, r#type = %t, "application {name} exited: {reason}, type: {t}");
            }
            _ => {
                let why = format!("{{application_terminated, {name}, {reason}}}");
                error!(application = %name, %reason, r#type = %t, "application {name} exited: {reason}, type: {t}: the node terminates: {why}");
                self.halt(why);
            }
        }
        true
    }
}

/// The application master's body.
pub(crate) async fn master(
    ctx: Ctx,
    apps: Arc<Apps>,
    app: Application,
    started: oneshot::Sender<Result<Pid, AppError>>,
    done: watch::Sender<Option<ExitReason>>,
) -> ExitReason {
    ctx.trap_exit(true);
    let name = app.name.clone();
    let top = match crate::behaviour::supervisor::start_link(&ctx, app.supervisor, None).await {
        Ok(Some(top)) => top,
        Ok(None) => {
            let _ = started.send(Err(AppError::StartFailed {
                app: name,
                reason: "its top supervisor's init returned ignore: an application needs a supervision tree".into(),
            }));
            return ExitReason::Normal;
        }
        Err(e) => {
            let reason = e.to_string();
            let _ = started.send(Err(AppError::StartFailed {
                app: name,
                reason: reason.clone(),
            }));
            return ExitReason::ShutdownWith(reason);
        }
    };
    let info = AppInfo {
        name: name.clone(),
        version: app.version,
        start_type: app.start_type,
        depends: app.depends,
        master: ctx.self_pid(),
        supervisor: top,
    };
    {
        let mut st = apps.state.lock();
        st.starting.retain(|n| *n != name);
        st.running.push(Running {
            info: info.clone(),
            stopping: false,
            done: done.subscribe(),
        });
    }
    info!(application = %name, version = %info.version, r#type = %info.start_type, supervisor = %top, "application {name} started");
    let _ = started.send(Ok(top));
    let t0 = loop {
        match ctx.recv().await {
            Message::Exit { from, reason } if from == top => {
                if apps.terminated(&info, &reason) {
                    let _ = done.send(Some(reason.clone()));
                    return reason;
                }
                // A stop had been requested: this exit is it.
                break Instant::now();
            }
            Message::User { data, .. }
                if codec::decode::<MasterRequest>(&data) == Ok(MasterRequest::StopApplication) =>
            {
                let t0 = Instant::now();
                ctx.exit(top, &ExitReason::Shutdown);
                // No time limit (spec §5.3): the tree's own shutdown rules bound it.
                let _ = ctx
                    .recv_where(|k, from, _| k == MessageKind::Exit && from == top, None)
                    .await;
                break t0;
            }
            _ => {}
        }
    };
    apps.remove(&name);
    info!(application = %name, elapsed_ms = t0.elapsed().as_millis() as u64, "application {name} exited: stopped");
    let _ = done.send(Some(ExitReason::Normal));
    ExitReason::Normal
}

/// Wait until an application master has finished (or was killed).
pub(crate) async fn finished(mut done: watch::Receiver<Option<ExitReason>>) {
    let _ = done.wait_for(Option::is_some).await;
}

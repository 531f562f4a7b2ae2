//! Applications (spec §5) and the graceful node stop (spec §6.1).
//!
//! An application is a named, versioned supervision tree with a start type. Starting one
//! ([`Node::start_application`]) checks that its dependencies run, then spawns its
//! **application master**: a native process that traps exits and starts the top
//! supervisor linked to itself (`supervisor::start_link`), waiting until the whole tree
//! has started. The master then waits for one of two things:
//!
//! - a stop request ([`Node::stop_application`], or [`Node::shutdown`]): it sends
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
//! ([`Node::halted`]), stops the other applications ([`Node::shutdown`]) and exits with
//! status 1, as `hotswap start` does. The node itself keeps running until then.
//!
//! [`Node::shutdown`] is `init:stop()`: a second request joins the first; applications are
//! stopped one at a time in reverse start order, each completely before the next; if the
//! time limit runs out first, the graceful phase is abandoned with a log line naming what it
//! was waiting for (the application, the supervisor, the children still alive); then every
//! remaining process is killed and every module purged ([`Node::stop`]).
//!
//! Differences from OTP: there is no application callback module (`Mod:start/2`,
//! `prep_stop`, `stop`): an application *is* its top supervisor's tree (built in Rust or by
//! a module's `Supervisor::init`). Processes have no group leader, so a stop does not kill
//! stray processes that the application spawned outside its tree; [`Node::shutdown`]'s kill
//! phase does.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap::{codec, Ctx, ExitReason, Message, MessageKind, Pid};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

pub use crate::behaviour::supervisor::Source;

use crate::node::NodeInner;
use crate::{Node, StopReport};

/// How long the kill phase of [`Node::shutdown`] may wait for killed processes, at least,
/// when the graceful phase used up the time limit.
const KILL_PHASE: Duration = Duration::from_millis(500);

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

/// A running application, as [`Node::applications`] reports it.
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

/// What [`Node::shutdown`] did.
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
enum MasterRequest {
    StopApplication,
}

/// A running application and how to learn that its master has finished.
struct Running {
    info: AppInfo,
    /// A stop was requested: the top supervisor's exit is the stop, not a termination.
    stopping: bool,
    /// `Some(reason)` once the master has finished; closed if it was killed.
    done: watch::Receiver<Option<ExitReason>>,
}

#[derive(Default)]
struct State {
    /// In start order.
    running: Vec<Running>,
    /// Names of applications whose trees are starting.
    starting: Vec<String>,
    /// [`Node::shutdown`] has begun.
    shutting_down: bool,
}

/// The node's application controller.
pub(crate) struct Apps {
    state: Mutex<State>,
    halt: watch::Sender<Option<String>>,
    shutdown: tokio::sync::OnceCell<ShutdownReport>,
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
    fn halt(&self, reason: String) {
        self.halt.send_if_modified(|h| {
            if h.is_none() {
                *h = Some(reason);
                true
            } else {
                false
            }
        });
    }

    fn remove(&self, name: &str) {
        self.state.lock().running.retain(|r| r.info.name != name);
    }

    /// The top supervisor of `info` exited on its own with `reason`: spec §5.2. `false` if
    /// a stop had been requested meanwhile (then it is the stop).
    fn terminated(&self, info: &AppInfo, reason: &ExitReason) -> bool {
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
async fn master(
    ctx: Ctx,
    node: Arc<NodeInner>,
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
        let mut st = node.apps.state.lock();
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
                if node.apps.terminated(&info, &reason) {
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
    node.apps.remove(&name);
    info!(application = %name, elapsed_ms = t0.elapsed().as_millis() as u64, "application {name} exited: stopped");
    let _ = done.send(Some(ExitReason::Normal));
    ExitReason::Normal
}

/// Wait until an application master has finished (or was killed).
async fn finished(mut done: watch::Receiver<Option<ExitReason>>) {
    let _ = done.wait_for(Option::is_some).await;
}

impl Node {
    /// Start an application (`application:start/2`): its dependencies must be running; its
    /// master starts the top supervisor and waits until the whole tree has started. Returns
    /// the top supervisor's pid.
    ///
    /// If the tree does not start, the error says why; for a permanent or transient
    /// application the node also records the halt reason
    /// `{application_start_failure, App, Reason}` ([`Node::halted`]), as OTP terminates
    /// the node then.
    pub async fn start_application(&self, app: Application) -> Result<Pid, AppError> {
        let apps = &self.inner.apps;
        let name = app.name.clone();
        {
            let mut st = apps.state.lock();
            if st.shutting_down {
                return Err(AppError::Stopping(name));
            }
            if st.starting.contains(&name) || st.running.iter().any(|r| r.info.name == name) {
                return Err(AppError::AlreadyStarted(name));
            }
            if let Some(dep) = app
                .depends
                .iter()
                .find(|d| !st.running.iter().any(|r| r.info.name == **d))
            {
                return Err(AppError::NotStarted {
                    app: name,
                    dep: dep.clone(),
                });
            }
            st.starting.push(name.clone());
        }
        let start_type = app.start_type;
        let (tx, rx) = oneshot::channel();
        let (done, _) = watch::channel(None);
        let node = self.inner.clone();
        let spawned = self
            .inner
            .spawn_native(None, 0, move |ctx| master(ctx, node, app, tx, done));
        let result = match spawned {
            Err(_) => Err(AppError::Stopping(name.clone())),
            Ok(_) => rx.await.unwrap_or_else(|_| {
                Err(AppError::StartFailed {
                    app: name.clone(),
                    reason: "its application master was killed while the tree started".into(),
                })
            }),
        };
        if let Err(e) = &result {
            apps.state.lock().starting.retain(|n| *n != name);
            if start_type != StartType::Temporary && !matches!(e, AppError::Stopping(_)) {
                let reason = match e {
                    AppError::StartFailed { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                let why = format!("{{application_start_failure, {name}, {reason}}}");
                error!(application = %name, r#type = %start_type, "application {name} failed to start, type: {start_type}: the node terminates: {why}");
                apps.halt(why);
            }
        }
        result
    }

    /// Stop a running application (`application:stop/1`): its master sends
    /// `exit(Top, shutdown)` and waits, without a time limit, until the whole tree is down.
    /// This never takes the node down, whatever the start type; applications that depend
    /// on it keep running. A second request for the same application waits for the first.
    pub async fn stop_application(&self, name: &str) -> Result<(), AppError> {
        let (master, send, done) = {
            let mut st = self.inner.apps.state.lock();
            let r = st
                .running
                .iter_mut()
                .find(|r| r.info.name == name)
                .ok_or_else(|| AppError::NotRunning(name.to_string()))?;
            let send = !r.stopping;
            r.stopping = true;
            (r.info.master, send, r.done.clone())
        };
        if send {
            self.send(master, &MasterRequest::StopApplication);
        }
        finished(done).await;
        self.inner.apps.remove(name);
        Ok(())
    }

    /// The running applications, in start order.
    pub fn applications(&self) -> Vec<AppInfo> {
        let st = self.inner.apps.state.lock();
        st.running.iter().map(|r| r.info.clone()).collect()
    }

    /// Wait until the node must terminate because an application did (spec §5.2): the
    /// halt reason, e.g. `{application_terminated, db, shutdown}`. The embedding program
    /// should then [`Node::shutdown`] (stopping the other applications) and exit with
    /// status 1.
    pub async fn halted(&self) -> String {
        let mut rx = self.inner.apps.halt.subscribe();
        let got = rx.wait_for(Option::is_some).await.map(|h| h.clone());
        match got {
            Ok(Some(reason)) => reason,
            // The sender lives as long as the node, which `self` keeps alive.
            _ => std::future::pending().await,
        }
    }

    /// The halt reason, if an application has terminated the node ([`Node::halted`]).
    pub fn halt_reason(&self) -> Option<String> {
        self.inner.apps.halt.borrow().clone()
    }

    /// Stop the node gracefully (`init:stop()`): refuse new applications, stop the running
    /// ones in reverse start order, one at a time and each completely, through their trees;
    /// then kill every remaining process and purge every module ([`Node::stop`]).
    ///
    /// `time_limit` bounds the graceful phase: when it runs out, the phase is abandoned
    /// with a log line naming what it was waiting for (application, supervisor, children
    /// still alive), and the node proceeds to kill. A second call (from anywhere) does not
    /// start another shutdown: it waits for the first and gets the same report.
    pub async fn shutdown(&self, time_limit: Duration) -> ShutdownReport {
        let node = self.clone();
        self.inner
            .apps
            .shutdown
            .get_or_init(|| async move { node.shutdown_now(time_limit).await })
            .await
            .clone()
    }

    async fn shutdown_now(&self, limit: Duration) -> ShutdownReport {
        let t0 = tokio::time::Instant::now();
        let deadline = t0 + limit;
        let apps = &self.inner.apps;
        let count = {
            let mut st = apps.state.lock();
            st.shutting_down = true;
            st.running.len()
        };
        info!(
            applications = count,
            time_limit_ms = limit.as_millis() as u64,
            "node shutdown: stopping the applications in reverse start order"
        );
        let mut stopped = Vec::new();
        let mut abandoned = None;
        loop {
            // The latest-started application still running (one that started while the
            // shutdown began is stopped too).
            let next = {
                let mut st = apps.state.lock();
                st.running.last_mut().map(|r| {
                    let send = !r.stopping;
                    r.stopping = true;
                    (r.info.clone(), send, r.done.clone())
                })
            };
            let Some((info, send, done)) = next else {
                break;
            };
            if send {
                self.send(info.master, &MasterRequest::StopApplication);
            }
            if tokio::time::timeout_at(deadline, finished(done))
                .await
                .is_err()
            {
                let what = self.waiting_for(&info);
                let left: Vec<String> = self.applications().into_iter().map(|a| a.name).collect();
                warn!(
                    "graceful shutdown abandoned: the time limit of {} ms ran out while waiting for {what}; applications not stopped: {}; killing every process",
                    limit.as_millis(),
                    left.join(", ")
                );
                abandoned = Some(what);
                break;
            }
            apps.remove(&info.name);
            stopped.push(info.name);
        }
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(KILL_PHASE);
        let stop = self.stop(left).await;
        apps.state.lock().running.clear();
        ShutdownReport {
            stopped,
            abandoned,
            stop,
            elapsed: t0.elapsed(),
        }
    }

    /// What stopping `app` waits for: its tree's processes that are still alive, and which
    /// supervisor is waiting for which child.
    fn waiting_for(&self, app: &AppInfo) -> String {
        let head = format!(
            "application {:?} ({}; master {}, top supervisor {})",
            app.name, app.start_type, app.master, app.supervisor
        );
        if !self.is_alive(app.supervisor) {
            return format!("{head}: its tree is down, the master has not finished");
        }
        // Walk the tree from the top: children are linked to their supervisor, and the
        // child a supervisor is stopping is unlinked and monitored instead.
        let mut seen: HashSet<u64> = HashSet::from([app.master.0, app.supervisor.0]);
        let mut queue = VecDeque::from([app.supervisor]);
        let mut waited: Vec<(Pid, Pid)> = Vec::new();
        let mut alive = 0usize;
        while let Some(p) = queue.pop_front() {
            let Some(proc) = self.inner.table.get(p.0) else {
                continue;
            };
            let (links, monitoring) = {
                let g = proc.inner.lock();
                if g.exited || g.external {
                    continue;
                }
                match g.rel.as_deref() {
                    Some(r) => (
                        r.links.iter().copied().collect::<Vec<u64>>(),
                        r.monitoring.values().copied().collect::<Vec<u64>>(),
                    ),
                    None => (Vec::new(), Vec::new()),
                }
            };
            for m in monitoring {
                if self.is_alive(Pid(m)) && seen.insert(m) {
                    waited.push((p, Pid(m)));
                    queue.push_back(Pid(m));
                    alive += 1;
                }
            }
            for l in links {
                if seen.insert(l) && self.is_alive(Pid(l)) {
                    queue.push_back(Pid(l));
                    alive += 1;
                }
            }
            if seen.len() > 100_000 {
                break;
            }
        }
        let mut out = head;
        for (sup, child) in waited.iter().take(5) {
            out.push_str(&format!(
                "; supervisor {sup} is waiting for {} to exit",
                self.describe(*child)
            ));
        }
        if waited.len() > 5 {
            out.push_str(&format!("; and {} more", waited.len() - 5));
        }
        out.push_str(&format!(
            "; {alive} process{} of its tree still alive",
            if alive == 1 { "" } else { "es" }
        ));
        out
    }

    /// A process in a few words: pid, registered name, what it runs.
    fn describe(&self, pid: Pid) -> String {
        let Some(i) = self.process_info(pid) else {
            return pid.to_string();
        };
        let mut s = pid.to_string();
        if let Some(n) = &i.name {
            s.push_str(&format!(" {n:?}"));
        }
        if let Some((m, v)) = &i.gen_server {
            s.push_str(&format!(" (gen_server {m} {v})"));
        } else if let Some((m, v, _)) = i.running.first() {
            s.push_str(&format!(" (running {m} {v})"));
        }
        s
    }
}

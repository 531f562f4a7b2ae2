//! Supervisors (spec §4): a native process of the node that starts its children in order,
//! restarts them by its strategy, gives up past its restart intensity, and stops them in
//! reverse order by their shutdown rules.
//!
//! The supervisor runs no module code (only its `init` callback, when its tree comes from
//! a module, is a fully-qualified call), so loads and purges never touch it. It speaks the
//! `gen_server` call protocol, so `hotswap::supervisor`'s client functions work from module
//! code, and it answers the `sys` requests a release upgrade needs (suspend, resume,
//! get_state, get_status, change_code, terminate).
//!
//! Protocol of one child's shutdown (spec §4.6), as OTP's `monitor_child`: monitor it,
//! unlink it (an exit that already arrived is taken as its reason), send `shutdown` (or
//! `kill`), wait for the `Down` (up to the timeout, then `kill` and wait again). Unlinking
//! first keeps trapped exits of dying children out of the mailbox, so stopping N children
//! costs O(N), not O(N²) in mailbox scans.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap::gen_server::{self as gs, wire, Caller, ServerRef, StartError, StartOpts};
use hotswap::supervisor::{append_args, Request, INIT_FUNCTION};
use hotswap::sys::{Request as SysRequest, ServerStatus, E_FAILED, E_REFUSED};
use hotswap::{codec, Ctx, ExitReason, Message, MessageKind, Pid};
use hotswap_abi as abi;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

pub use hotswap::supervisor::{
    ChildInfo, ChildPid, ChildRef, ChildSpec, ChildType, Counts, Restart, Shutdown, Spec, Start,
    Strategy, SupError,
};

use crate::process::NodeInner;
use crate::process::{Payload, Process};

/// Where a supervisor's tree comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A tree built in Rust.
    Spec(Spec),
    /// The tree `module`'s `Supervisor::init` returns for the encoded `arg`.
    Module {
        /// The callback module.
        module: String,
        /// The encoded argument of `init`.
        arg: Vec<u8>,
    },
}

impl Source {
    fn module(&self) -> Option<&str> {
        match self {
            Source::Spec(_) => None,
            Source::Module { module, .. } => Some(module),
        }
    }
}

/// The process behind a native process's `Ctx`.
fn proc_of(ctx: &Ctx) -> &Process {
    // SAFETY: the handle of a process's `Ctx` is the address of its `Process`, which lives
    // at least as long as the process's future, and this `Ctx` is only used inside it.
    unsafe { &*(ctx.__raw() as *const Process) }
}

/// Ask `module`'s `Supervisor::init` (its current version) for a tree.
fn module_init(ctx: &Ctx, module: &str, arg: &[u8]) -> Result<Option<Spec>, String> {
    let mut f = ctx.function::<(), Option<Spec>>(module, INIT_FUNCTION);
    let mut out = Vec::new();
    f.call_bytes(arg, &mut out).map_err(|e| {
        format!("{module}:{INIT_FUNCTION} failed: {e} (does the module declare `supervisor: T` in hotswap::module!?)")
    })?;
    codec::decode(&out).map_err(|e| {
        format!("{module}:{INIT_FUNCTION} returned something that is not a supervisor spec: {e}")
    })
}

/// Start a supervisor linked to the calling native process (its parent), and wait until
/// its children have started. `None`: its `init` returned ignore.
///
/// The supervisor tells its parent through the parent's mailbox (a process is woken only
/// by its mailbox and its timer), and the wait also ends on the supervisor's exit, so a
/// supervisor killed while it starts cannot hang its parent.
pub(crate) async fn start_link(
    ctx: &Ctx,
    source: Source,
    name: Option<String>,
) -> Result<Option<Pid>, SupError> {
    let parent = proc_of(ctx);
    let me = parent.pid;
    let (sup, _) = parent
        .node
        .spawn_native(Some(parent), abi::SPAWN_LINK, move |c| {
            run(c, source, name, Some(me), Started::Process(me))
        })
        .map_err(|e| SupError::StartFailed(e.to_string()))?;
    let reply = ctx
        .recv_where(
            |k, from, _| from == sup && (k == MessageKind::User || k == MessageKind::Exit),
            None,
        )
        .await;
    match reply {
        Some(Message::User { data, .. }) => codec::decode(&data).unwrap_or_else(|e| {
            Err(SupError::StartFailed(format!(
                "malformed start result from the supervisor: {e}"
            )))
        }),
        Some(Message::Exit { reason, .. }) => Err(SupError::StartFailed(format!(
            "the supervisor exited while it started its children: {reason}"
        ))),
        _ => Err(SupError::StartFailed("no start result".into())),
    }
}

/// A supervisor child of the supervisor `ctx` (boxed: supervisors start supervisors).
fn nested(
    ctx: Ctx,
    source: Source,
    name: Option<String>,
) -> Pin<Box<dyn Future<Output = Result<Option<Pid>, SupError>> + Send>> {
    Box::pin(async move { start_link(&ctx, source, name).await })
}

/// Start a supervisor without a parent, for host code.
pub(crate) async fn start_unlinked(
    node: &Arc<NodeInner>,
    source: Source,
    name: Option<String>,
) -> Result<Option<Pid>, SupError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(None, 0, move |ctx| {
        run(ctx, source, name, None, Started::Host(tx))
    })
    .map_err(|e| SupError::StartFailed(e.to_string()))?;
    rx.await.unwrap_or_else(|_| {
        Err(SupError::StartFailed(
            "the supervisor was killed while it started its children".into(),
        ))
    })
}

/// Who waits for a supervisor's start result.
enum Started {
    /// Host code, on a channel.
    Host(tokio::sync::oneshot::Sender<Result<Option<Pid>, SupError>>),
    /// The parent process, by a message.
    Process(Pid),
}

impl Started {
    /// Report a start that did not produce a running supervisor: its name is released
    /// first, so whoever gets the result finds the name free (as OTP's `gen` does).
    fn fail(self, ctx: &Ctx, name: Option<&str>, r: Result<Option<Pid>, SupError>) {
        if let Some(n) = name {
            ctx.unregister(n);
        }
        self.send(ctx, r);
    }

    fn send(self, ctx: &Ctx, r: Result<Option<Pid>, SupError>) {
        match self {
            Started::Host(tx) => {
                let _ = tx.send(r);
            }
            Started::Process(p) => ctx.send(p, &r),
        }
    }
}

/// A static child.
#[derive(Debug)]
struct Child {
    spec: ChildSpec,
    pid: Option<Pid>,
    restarting: bool,
}

/// A simple_one_for_one child.
#[derive(Debug)]
struct Dyn {
    seq: u64,
    args: Vec<u8>,
}

/// Messages a supervisor sends itself.
#[derive(Debug, Serialize, Deserialize)]
enum Internal {
    /// Try again to restart the static child `id`.
    Retry(String),
    /// Try again to restart a simple_one_for_one child with these arguments.
    RetryDyn(u64),
}

struct Sup {
    ctx: Ctx,
    node: Arc<NodeInner>,
    me: Pid,
    name: Option<String>,
    parent: Option<Pid>,
    source: Source,
    spec_flags: Spec,
    children: Vec<Child>,
    template: Option<ChildSpec>,
    dynamic: HashMap<Pid, Dyn>,
    dyn_restarting: HashMap<u64, Vec<u8>>,
    next_seq: u64,
    restarts: VecDeque<Instant>,
    suspended: bool,
    handled: u64,
}

/// Why the supervisor stops.
type Stop = ExitReason;

async fn run(
    ctx: Ctx,
    source: Source,
    name: Option<String>,
    parent: Option<Pid>,
    started: Started,
) -> ExitReason {
    ctx.trap_exit(true);
    let me = ctx.self_pid();
    let node = proc_of(&ctx).node.clone();
    if let Some(n) = &name {
        if let Err(_e) = ctx.register(n, me) {
            let holder = ctx.whereis(n).unwrap_or(Pid(0));
            started.send(&ctx, Err(SupError::AlreadyStarted(holder)));
            return ExitReason::Normal;
        }
    }
    let spec = match &source {
        Source::Spec(s) => Ok(Some(s.clone())),
        Source::Module { module, arg } => module_init(&ctx, module, arg),
    };
    let spec = match spec {
        Ok(Some(s)) => s,
        Ok(None) => {
            started.fail(&ctx, name.as_deref(), Ok(None));
            return ExitReason::Normal;
        }
        Err(e) => {
            started.fail(&ctx, name.as_deref(), Err(SupError::Invalid(e.clone())));
            return ExitReason::ShutdownWith(format!("bad supervisor init: {e}"));
        }
    };
    if let Err(e) = spec.check() {
        started.fail(&ctx, name.as_deref(), Err(SupError::Invalid(e.clone())));
        return ExitReason::ShutdownWith(format!("bad supervisor spec: {e}"));
    }
    let mut sup = Sup {
        ctx,
        node,
        me,
        name,
        parent,
        source,
        template: None,
        children: Vec::new(),
        dynamic: HashMap::new(),
        dyn_restarting: HashMap::new(),
        next_seq: 0,
        restarts: VecDeque::new(),
        suspended: false,
        handled: 0,
        spec_flags: Spec {
            children: Vec::new(),
            ..spec.clone()
        },
    };
    if spec.strategy == Strategy::SimpleOneForOne {
        sup.template = spec.children.into_iter().next();
    } else {
        for c in spec.children {
            match sup.start(&c.start).await {
                Ok(pid) => {
                    sup.report_started(&c.id, pid);
                    if pid.is_some() || c.restart != Restart::Temporary {
                        sup.children.push(Child {
                            spec: c,
                            pid,
                            restarting: false,
                        });
                    }
                }
                Err(e) => {
                    let why = format!("failed_to_start_child {:?}: {e}", c.id);
                    error!(supervisor = %sup.who(), child = %c.id, "{why}");
                    sup.terminate_all().await;
                    let r = Err(SupError::StartFailed(why.clone()));
                    started.fail(&sup.ctx, sup.name.as_deref(), r);
                    return ExitReason::ShutdownWith(why);
                }
            }
        }
    }
    info!(supervisor = %sup.who(), strategy = ?sup.spec_flags.strategy, children = sup.children.len(), "supervisor started");
    started.send(&sup.ctx, Ok(Some(me)));
    let reason = sup.serve().await;
    info!(supervisor = %sup.who(), %reason, "supervisor exited");
    reason
}

impl Sup {
    fn who(&self) -> String {
        match &self.name {
            Some(n) => format!("{n} ({})", self.me),
            None => self.me.to_string(),
        }
    }

    fn report_started(&self, id: &str, pid: Option<Pid>) {
        match pid {
            Some(p) => debug!(supervisor = %self.who(), child = %id, pid = %p, "child started"),
            None => debug!(supervisor = %self.who(), child = %id, "child start returned ignore"),
        }
    }

    /// Start one child, linked; `None` if its start returned ignore.
    async fn start(&self, start: &Start) -> Result<Option<Pid>, String> {
        match start {
            Start::Server { module, arg, name } => {
                let opts = StartOpts {
                    name: name.clone(),
                    timeout: None,
                };
                match gs::start_encoded(&self.ctx, module, arg, &opts, abi::SPAWN_LINK).await {
                    Ok((pid, _)) => Ok(Some(pid)),
                    Err(StartError::Ignore) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
            Start::Spawn {
                module,
                function,
                arg,
                name,
            } => {
                let (pid, _) = self
                    .node
                    .spawn(
                        Some(proc_of(&self.ctx)),
                        module,
                        function,
                        arg,
                        abi::SPAWN_LINK,
                    )
                    .map_err(|e| e.to_string())?;
                if let Some(n) = name {
                    if let Err(e) = self.ctx.register(n, pid) {
                        self.ctx.unlink(pid);
                        self.ctx.exit(pid, &ExitReason::Kill);
                        return Err(match self.ctx.whereis(n) {
                            Some(holder) => {
                                format!("already_started: {n:?} is registered by {holder}")
                            }
                            None => e.to_string(),
                        });
                    }
                }
                Ok(Some(pid))
            }
            Start::Supervisor { spec, name } => {
                nested(self.ctx, Source::Spec((**spec).clone()), name.clone())
                    .await
                    .map_err(|e| e.to_string())
            }
            Start::SupervisorModule { module, arg, name } => {
                let source = Source::Module {
                    module: module.clone(),
                    arg: arg.clone(),
                };
                nested(self.ctx, source, name.clone())
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The main loop; returns the exit reason.
    async fn serve(&mut self) -> Stop {
        loop {
            let parent = self.parent;
            let msg = if self.suspended {
                self.ctx
                    .recv_where(
                        |k, from, _| {
                            k == MessageKind::System
                                || (k == MessageKind::Exit && is_parent(parent, from))
                        },
                        None,
                    )
                    .await
            } else {
                Some(self.ctx.recv().await)
            };
            let Some(msg) = msg else { continue };
            let r = match msg {
                Message::Exit { from, reason } if is_parent(parent, from) => {
                    self.terminate_all().await;
                    return reason;
                }
                Message::Exit { from, reason } => self.child_exited(from, reason).await,
                Message::Request {
                    kind: abi::MSG_CALL,
                    from,
                    tag,
                    data,
                } => {
                    self.handled += 1;
                    self.call(Caller { pid: from, tag }, &data).await;
                    Ok(())
                }
                Message::Request {
                    kind: abi::MSG_SYSTEM,
                    from,
                    tag,
                    data,
                } => {
                    if let Some(reason) = self.system(from, tag, &data).await {
                        return reason;
                    }
                    Ok(())
                }
                Message::User { from, data } if from == self.me => {
                    match codec::decode::<Internal>(&data) {
                        Ok(Internal::Retry(id)) => self.retry(&id).await,
                        Ok(Internal::RetryDyn(seq)) => self.retry_dyn(seq).await,
                        Err(_) => Ok(()),
                    }
                }
                Message::Down { .. } => Ok(()),
                other => {
                    warn!(supervisor = %self.who(), message = ?other, "supervisor received an unexpected message");
                    Ok(())
                }
            };
            if let Err(reason) = r {
                return reason;
            }
        }
    }

    // ----- restarts -----------------------------------------------------------------

    /// Record a restart; `Err(shutdown)` (after stopping every child) when that makes more
    /// than `intensity` restarts within `period`.
    async fn add_restart(&mut self) -> Result<(), Stop> {
        let now = Instant::now();
        let period = Duration::from_secs(self.spec_flags.period_secs);
        self.restarts.push_back(now);
        while let Some(&t) = self.restarts.front() {
            if now.duration_since(t) >= period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() > self.spec_flags.intensity as usize {
            error!(
                supervisor = %self.who(),
                intensity = self.spec_flags.intensity,
                period_secs = self.spec_flags.period_secs,
                "reached_max_restart_intensity: shutting down"
            );
            self.terminate_all().await;
            return Err(ExitReason::Shutdown);
        }
        Ok(())
    }

    /// A linked process exited.
    async fn child_exited(&mut self, pid: Pid, reason: ExitReason) -> Result<(), Stop> {
        if self.template.is_some() {
            let Some(d) = self.dynamic.remove(&pid) else {
                return Ok(());
            };
            let t = self
                .template
                .clone()
                .expect("simple_one_for_one has a template");
            self.report_exit(&t, pid, &reason);
            if !needs_restart(t.restart, &reason) {
                return Ok(());
            }
            self.add_restart().await?;
            self.restart_dyn(d.seq, d.args).await;
            return Ok(());
        }
        let Some(i) = self.find(&ChildRef::Pid(pid)) else {
            return Ok(());
        };
        self.children[i].pid = None;
        let spec = self.children[i].spec.clone();
        self.report_exit(&spec, pid, &reason);
        if !needs_restart(spec.restart, &reason) {
            if spec.restart == Restart::Temporary {
                self.children.remove(i);
            }
            return Ok(());
        }
        self.add_restart().await?;
        self.restart(i).await;
        Ok(())
    }

    fn report_exit(&self, spec: &ChildSpec, pid: Pid, reason: &ExitReason) {
        if !reason.is_normalish() || spec.restart == Restart::Permanent {
            error!(supervisor = %self.who(), child = %spec.id, %pid, %reason, restart = ?spec.restart, "child_terminated");
        } else {
            debug!(supervisor = %self.who(), child = %spec.id, %pid, %reason, "child exited");
        }
    }

    /// Restart static child `i` by the strategy: stop the others it takes down (reverse
    /// start order; temporary ones are dropped), then start them all again in start order.
    /// A start that fails marks that child `restarting` and retries by a message to self.
    async fn restart(&mut self, i: usize) {
        let ids: Vec<String> = match self.spec_flags.strategy {
            Strategy::OneForAll => self.children.iter().map(|c| c.spec.id.clone()).collect(),
            Strategy::RestForOne => self.children[i..]
                .iter()
                .map(|c| c.spec.id.clone())
                .collect(),
            _ => vec![self.children[i].spec.id.clone()],
        };
        let failed = self.children[i].spec.id.clone();
        for id in ids.iter().rev().filter(|id| **id != failed) {
            if let Some(j) = self.position(id) {
                self.stop_child(j).await;
            }
        }
        self.children.retain(|c| {
            !(c.spec.restart == Restart::Temporary && c.pid.is_none() && ids.contains(&c.spec.id))
        });
        for id in ids {
            let Some(j) = self.position(&id) else {
                continue;
            };
            if self.children[j].pid.is_some() {
                continue;
            }
            let start = self.children[j].spec.start.clone();
            match self.start(&start).await {
                Ok(pid) => {
                    self.report_started(&id, pid);
                    self.children[j].pid = pid;
                    self.children[j].restarting = false;
                }
                Err(e) => {
                    error!(supervisor = %self.who(), child = %id, "restart failed: {e}; trying again");
                    self.children[j].restarting = true;
                    self.ctx.send(self.me, &Internal::Retry(id));
                    break;
                }
            }
        }
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    async fn retry(&mut self, id: &str) -> Result<(), Stop> {
        let Some(i) = self
            .children
            .iter()
            .position(|c| c.spec.id == id && c.restarting)
        else {
            return Ok(());
        };
        self.add_restart().await?;
        self.restart(i).await;
        Ok(())
    }

    async fn restart_dyn(&mut self, seq: u64, args: Vec<u8>) {
        let t = self
            .template
            .clone()
            .expect("simple_one_for_one has a template");
        match self.start(&t.start.with_arg(args.clone())).await {
            Ok(Some(pid)) => {
                self.report_started(&t.id, Some(pid));
                self.dynamic.insert(pid, Dyn { seq, args });
            }
            Ok(None) => {}
            Err(e) => {
                error!(supervisor = %self.who(), child = %t.id, "restart failed: {e}; trying again");
                self.dyn_restarting.insert(seq, args);
                self.ctx.send(self.me, &Internal::RetryDyn(seq));
            }
        }
    }

    async fn retry_dyn(&mut self, seq: u64) -> Result<(), Stop> {
        let Some(args) = self.dyn_restarting.remove(&seq) else {
            return Ok(());
        };
        self.add_restart().await?;
        self.restart_dyn(seq, args).await;
        Ok(())
    }

    // ----- shutdown -----------------------------------------------------------------

    /// Stop static child `j` by its rule (if it runs); its spec stays.
    async fn stop_child(&mut self, j: usize) {
        let Some(pid) = self.children[j].pid.take() else {
            self.children[j].restarting = false;
            return;
        };
        let spec = self.children[j].spec.clone();
        let reason = self.shutdown_one(pid, spec.shutdown_rule()).await;
        self.check_shutdown(&spec, pid, &reason);
    }

    /// Stop one process: monitor, unlink, signal, wait (spec §4.6). Its exit reason.
    async fn shutdown_one(&self, pid: Pid, rule: Shutdown) -> ExitReason {
        let mref = self.ctx.monitor(pid);
        self.ctx.unlink(pid);
        if let Some(Message::Exit { reason, .. }) = self
            .ctx
            .recv_where(
                |k, from, _| k == MessageKind::Exit && from == pid,
                Some(Duration::ZERO),
            )
            .await
        {
            // It died before we unlinked: its Down is on the way; take it.
            self.ctx.down(mref, None).await;
            return reason;
        }
        let wait = match rule {
            Shutdown::BrutalKill => {
                self.ctx.exit(pid, &ExitReason::Kill);
                None
            }
            Shutdown::Timeout(t) => {
                self.ctx.exit(pid, &ExitReason::Shutdown);
                Some(t)
            }
            Shutdown::Infinity => {
                self.ctx.exit(pid, &ExitReason::Shutdown);
                None
            }
        };
        match self.ctx.down(mref, wait).await {
            Some(r) => r,
            None => {
                warn!(supervisor = %self.who(), %pid, "child did not stop within its shutdown timeout: killing it");
                self.ctx.exit(pid, &ExitReason::Kill);
                self.ctx
                    .down(mref, None)
                    .await
                    .unwrap_or(ExitReason::Killed)
            }
        }
    }

    /// Log a `shutdown_error` for an exit reason the rule does not expect.
    fn check_shutdown(&self, spec: &ChildSpec, pid: Pid, reason: &ExitReason) {
        let rule = spec.shutdown_rule();
        let fine = match reason {
            ExitReason::Shutdown => true,
            ExitReason::Normal | ExitReason::ShutdownWith(_) => spec.restart != Restart::Permanent,
            ExitReason::Killed => rule == Shutdown::BrutalKill,
            _ => false,
        };
        if fine {
            debug!(supervisor = %self.who(), child = %spec.id, %pid, %reason, "child stopped");
        } else {
            error!(supervisor = %self.who(), child = %spec.id, %pid, %reason, shutdown = ?rule, "shutdown_error");
        }
    }

    /// Stop every child: static ones in reverse start order, each completely; dynamic ones
    /// all at once with one shared timer.
    async fn terminate_all(&mut self) {
        if let Some(t) = self.template.clone() {
            self.terminate_dynamic(&t).await;
            return;
        }
        for j in (0..self.children.len()).rev() {
            self.stop_child(j).await;
        }
        self.children
            .retain(|c| c.spec.restart != Restart::Temporary);
    }

    async fn terminate_dynamic(&mut self, t: &ChildSpec) {
        let rule = t.shutdown_rule();
        let kids: HashSet<Pid> = self.dynamic.drain().map(|(p, _)| p).collect();
        self.dyn_restarting.clear();
        let mut waiting: HashMap<u64, Pid> = HashMap::with_capacity(kids.len());
        for &pid in &kids {
            let mref = self.ctx.monitor(pid);
            self.ctx.unlink(pid);
            waiting.insert(mref.0, pid);
        }
        // Exits that arrived before the unlinks: those children are already gone; their
        // Downs (maybe `noproc`) follow and are taken below, with these reasons.
        let mut early: HashMap<Pid, ExitReason> = HashMap::new();
        while let Some(Message::Exit { from, reason }) = self
            .ctx
            .recv_where(
                |k, from, _| k == MessageKind::Exit && kids.contains(&from),
                Some(Duration::ZERO),
            )
            .await
        {
            early.insert(from, reason);
        }
        let signal = if rule == Shutdown::BrutalKill {
            ExitReason::Kill
        } else {
            ExitReason::Shutdown
        };
        for &pid in waiting.values() {
            self.ctx.exit(pid, &signal);
        }
        let deadline = match rule {
            Shutdown::Timeout(d) => Some(Instant::now() + d),
            _ => None,
        };
        let mut killed = false;
        while !waiting.is_empty() {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let keys: &HashMap<u64, Pid> = &waiting;
            let got = self
                .ctx
                .recv_where(
                    |k, _, r| k == MessageKind::Down && keys.contains_key(&r),
                    if killed { None } else { left },
                )
                .await;
            match got {
                Some(Message::Down {
                    reference, reason, ..
                }) => {
                    if let Some(pid) = waiting.remove(&reference.0) {
                        let reason = early.remove(&pid).unwrap_or(reason);
                        self.check_shutdown(t, pid, &reason);
                    }
                }
                _ => {
                    warn!(supervisor = %self.who(), left = waiting.len(), "children did not stop within their shutdown timeout: killing them");
                    for &pid in waiting.values() {
                        self.ctx.exit(pid, &ExitReason::Kill);
                    }
                    killed = true;
                }
            }
        }
    }

    // ----- calls --------------------------------------------------------------------

    fn reply<T: Serialize>(&self, to: Caller, value: &Result<T, SupError>) {
        gs::reply(&self.ctx, &to, value);
    }

    async fn call(&mut self, from: Caller, data: &[u8]) {
        let req = match codec::decode::<Request>(data) {
            Ok(r) => r,
            Err(e) => {
                return self.reply::<()>(
                    from,
                    &Err(SupError::Invalid(format!(
                        "not a supervisor request ({}): {e}",
                        codec::describe(data)
                    ))),
                )
            }
        };
        match req {
            Request::StartChild(spec) => {
                let r = self.start_child(spec).await;
                self.reply(from, &r)
            }
            Request::StartSimple(extra) => {
                let r = self.start_simple(&extra).await;
                self.reply(from, &r)
            }
            Request::TerminateChild(c) => {
                let r = self.terminate_child(c).await;
                self.reply(from, &r)
            }
            Request::RestartChild(id) => {
                let r = self.restart_child(&id).await;
                self.reply(from, &r)
            }
            Request::DeleteChild(id) => {
                let r = self.delete_child(&id);
                self.reply(from, &r)
            }
            Request::WhichChildren => self.reply(from, &Ok(self.which_children())),
            Request::CountChildren => self.reply(from, &Ok(self.count_children())),
            Request::GetChildSpec(c) => {
                let r = self.get_childspec(&c);
                self.reply(from, &r)
            }
        }
    }

    async fn start_child(&mut self, spec: ChildSpec) -> Result<Option<Pid>, SupError> {
        if self.template.is_some() {
            return Err(SupError::Invalid(
                "a simple_one_for_one supervisor starts children from its template: use start_simple_child".into(),
            ));
        }
        spec.check().map_err(SupError::Invalid)?;
        if let Some(c) = self.children.iter().find(|c| c.spec.id == spec.id) {
            return Err(match c.pid {
                Some(p) => SupError::AlreadyStarted(p),
                None => SupError::AlreadyPresent,
            });
        }
        let pid = self
            .start(&spec.start)
            .await
            .map_err(SupError::StartFailed)?;
        self.report_started(&spec.id, pid);
        if pid.is_some() || spec.restart != Restart::Temporary {
            self.children.push(Child {
                spec,
                pid,
                restarting: false,
            });
        }
        Ok(pid)
    }

    async fn start_simple(&mut self, extra: &[u8]) -> Result<Option<Pid>, SupError> {
        let Some(t) = self.template.clone() else {
            return Err(SupError::Invalid(
                "start_simple_child is for simple_one_for_one supervisors: give a child spec to start_child".into(),
            ));
        };
        let base = t.start.arg().unwrap_or(&[0xc0]);
        let args = append_args(base, extra).map_err(SupError::Invalid)?;
        let pid = self
            .start(&t.start.with_arg(args.clone()))
            .await
            .map_err(SupError::StartFailed)?;
        if let Some(p) = pid {
            self.report_started(&t.id, pid);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.dynamic.insert(p, Dyn { seq, args });
        }
        Ok(pid)
    }

    async fn terminate_child(&mut self, c: ChildRef) -> Result<(), SupError> {
        if let Some(t) = self.template.clone() {
            let ChildRef::Pid(pid) = c else {
                return Err(SupError::SimpleOneForOne);
            };
            if self.dynamic.remove(&pid).is_some() {
                let reason = self.shutdown_one(pid, t.shutdown_rule()).await;
                self.check_shutdown(&t, pid, &reason);
                return Ok(());
            }
            return if self.node.table.get(pid.0).is_some() {
                Err(SupError::NotFound)
            } else {
                Ok(())
            };
        }
        let j = self.find(&c).ok_or(SupError::NotFound)?;
        self.stop_child(j).await;
        if self.children[j].spec.restart == Restart::Temporary {
            self.children.remove(j);
        }
        Ok(())
    }

    async fn restart_child(&mut self, id: &str) -> Result<Option<Pid>, SupError> {
        if self.template.is_some() {
            return Err(SupError::SimpleOneForOne);
        }
        let j = self.stopped_child(id)?;
        let start = self.children[j].spec.start.clone();
        let pid = self.start(&start).await.map_err(SupError::StartFailed)?;
        self.report_started(id, pid);
        self.children[j].pid = pid;
        Ok(pid)
    }

    fn delete_child(&mut self, id: &str) -> Result<(), SupError> {
        if self.template.is_some() {
            return Err(SupError::SimpleOneForOne);
        }
        let j = self.stopped_child(id)?;
        self.children.remove(j);
        Ok(())
    }

    /// The index of the static child `id`, which must be neither running nor restarting
    /// (what `restart_child` and `delete_child` need).
    fn stopped_child(&self, id: &str) -> Result<usize, SupError> {
        let j = self.position(id).ok_or(SupError::NotFound)?;
        let c = &self.children[j];
        if c.restarting {
            Err(SupError::Restarting)
        } else if c.pid.is_some() {
            Err(SupError::Running)
        } else {
            Ok(j)
        }
    }

    fn find(&self, c: &ChildRef) -> Option<usize> {
        match c {
            ChildRef::Id(id) => self.position(id),
            ChildRef::Pid(p) => self.children.iter().position(|x| x.pid == Some(*p)),
        }
    }

    fn which_children(&self) -> Vec<ChildInfo> {
        if let Some(t) = &self.template {
            let mut v: Vec<(u64, ChildInfo)> = self
                .dynamic
                .iter()
                .map(|(&p, d)| (d.seq, info_of(t, None, ChildPid::Running(p))))
                .chain(
                    self.dyn_restarting
                        .keys()
                        .map(|&s| (s, info_of(t, None, ChildPid::Restarting))),
                )
                .collect();
            v.sort_by_key(|e| std::cmp::Reverse(e.0));
            return v.into_iter().map(|(_, i)| i).collect();
        }
        self.children
            .iter()
            .rev()
            .map(|c| {
                let pid = match (c.pid, c.restarting) {
                    (Some(p), _) => ChildPid::Running(p),
                    (None, true) => ChildPid::Restarting,
                    (None, false) => ChildPid::Undefined,
                };
                info_of(&c.spec, Some(c.spec.id.clone()), pid)
            })
            .collect()
    }

    fn count_children(&self) -> Counts {
        if let Some(t) = &self.template {
            let n = self.dynamic.len() + self.dyn_restarting.len();
            let sup = t.child_type == ChildType::Supervisor;
            return Counts {
                specs: 1,
                active: self.dynamic.len(),
                supervisors: if sup { n } else { 0 },
                workers: if sup { 0 } else { n },
            };
        }
        let sups = self
            .children
            .iter()
            .filter(|c| c.spec.child_type == ChildType::Supervisor)
            .count();
        Counts {
            specs: self.children.len(),
            active: self.children.iter().filter(|c| c.pid.is_some()).count(),
            supervisors: sups,
            workers: self.children.len() - sups,
        }
    }

    fn get_childspec(&self, c: &ChildRef) -> Result<ChildSpec, SupError> {
        if let Some(t) = &self.template {
            return match c {
                ChildRef::Pid(p) if self.dynamic.contains_key(p) => Ok(t.clone()),
                _ => Err(SupError::NotFound),
            };
        }
        self.find(c)
            .map(|j| self.children[j].spec.clone())
            .ok_or(SupError::NotFound)
    }

    // ----- sys ----------------------------------------------------------------------

    fn sys_reply(&self, to: Pid, tag: u64, payload: Vec<u8>) {
        if to.0 != 0 {
            self.node.post(
                self.me.0,
                to.0,
                abi::MSG_REPLY,
                tag,
                Payload::from_vec(payload),
            );
        }
    }

    fn sys_ok(&self, to: Pid, tag: u64, value: &[u8]) {
        let mut d = vec![wire::R_VALUE];
        d.extend_from_slice(value);
        self.sys_reply(to, tag, d);
    }

    fn sys_err(&self, to: Pid, tag: u64, code: u8, msg: &str) {
        let mut d = vec![wire::R_SYS_ERROR, code];
        d.extend_from_slice(msg.as_bytes());
        self.sys_reply(to, tag, d);
    }

    fn state_view(&self) -> SupState {
        SupState {
            strategy: self.spec_flags.strategy,
            intensity: self.spec_flags.intensity,
            period_secs: self.spec_flags.period_secs,
            module: self.source.module().map(str::to_string),
            children: self.which_children(),
        }
    }

    /// A system request; `Some(reason)` when the supervisor must exit.
    async fn system(&mut self, from: Pid, tag: u64, data: &[u8]) -> Option<Stop> {
        let req = match codec::decode::<SysRequest>(data) {
            Ok(r) => r,
            Err(e) => {
                self.sys_err(
                    from,
                    tag,
                    E_REFUSED,
                    &format!("unknown system message: {e}"),
                );
                return None;
            }
        };
        match req {
            SysRequest::Suspend => {
                self.suspended = true;
                self.sys_ok(from, tag, &codec::encode(&()));
            }
            SysRequest::Resume => {
                self.suspended = false;
                self.sys_ok(from, tag, &codec::encode(&()));
            }
            SysRequest::GetState => self.sys_ok(from, tag, &codec::encode(&self.state_view())),
            SysRequest::GetStatus => {
                let state = serde_json::to_string(&self.state_view()).unwrap_or_default();
                let st = ServerStatus {
                    pid: self.me,
                    name: self.name.clone(),
                    module: self.source.module().unwrap_or("supervisor").to_string(),
                    version: None,
                    suspended: self.suspended,
                    parent: self.parent,
                    state,
                    message_queue_len: {
                        let p = proc_of(&self.ctx);
                        let g = p.inner.lock();
                        p.queue_len(&g)
                    },
                    messages_in: self.handled,
                    messages_out: self.handled,
                };
                self.sys_ok(from, tag, &codec::encode(&st));
            }
            SysRequest::ChangeCode { module, extra, .. } => {
                match self.change_code(&module, extra) {
                    Ok(()) => self.sys_ok(from, tag, &codec::encode(&())),
                    Err((code, m)) => self.sys_err(from, tag, code, &m),
                }
            }
            SysRequest::Terminate(r) => {
                self.sys_ok(from, tag, &[]);
                self.terminate_all().await;
                return Some(ExitReason::decode(&r));
            }
            other => self.sys_err(
                from,
                tag,
                E_REFUSED,
                &format!("a supervisor does not handle {other:?}"),
            ),
        }
        None
    }

    /// Supervisor code change (spec §4.8): call the new `init` with the original argument
    /// and take its flags and specs, keeping running children. A tree built in Rust has no
    /// `init` to call again: its new tree comes as the `Extra` (an encoded [`Spec`], what a
    /// release upgrade passes when the manifest's tree changed), else it is refused.
    fn change_code(&mut self, module: &str, extra: Option<Vec<u8>>) -> Result<(), (u8, String)> {
        if !self.suspended {
            return Err((
                E_REFUSED,
                "change_code needs the supervisor suspended first (sys suspend)".into(),
            ));
        }
        let spec = match &self.source {
            Source::Spec(_) => {
                let Some(new) = extra.as_deref().and_then(|b| codec::decode::<Spec>(b).ok()) else {
                    return Err((
                        E_REFUSED,
                        "this supervisor's tree was built in Rust, not by a module: there is no init to call again (give the new tree, an encoded Spec, as the Extra)".into(),
                    ));
                };
                new
            }
            Source::Module { module: m, arg } => {
                if m != module {
                    return Err((
                        E_REFUSED,
                        format!("this supervisor's callback module is {m:?}, not {module:?}"),
                    ));
                }
                match module_init(&self.ctx, m, arg) {
                    Ok(Some(s)) => s,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err((E_FAILED, e)),
                }
            }
        };
        spec.check().map_err(|e| (E_FAILED, e))?;
        if let Source::Spec(_) = &self.source {
            self.source = Source::Spec(spec.clone());
        }
        if (spec.strategy == Strategy::SimpleOneForOne) != self.template.is_some() {
            return Err((
                E_FAILED,
                "a code change cannot switch between simple_one_for_one and another strategy"
                    .into(),
            ));
        }
        if self.template.is_some() {
            self.template = spec.children.first().cloned();
        } else {
            for c in &spec.children {
                match self.children.iter_mut().find(|x| x.spec.id == c.id) {
                    Some(x) => x.spec = c.clone(),
                    None => self.children.push(Child {
                        spec: c.clone(),
                        pid: None,
                        restarting: false,
                    }),
                }
            }
        }
        self.spec_flags = Spec {
            children: Vec::new(),
            ..spec
        };
        Ok(())
    }
}

fn is_parent(parent: Option<Pid>, from: Pid) -> bool {
    match parent {
        Some(p) => p == from,
        // A supervisor started by host code: the host (pid 0) is its parent.
        None => from.0 == 0,
    }
}

fn needs_restart(r: Restart, reason: &ExitReason) -> bool {
    match r {
        Restart::Permanent => true,
        Restart::Transient => !reason.is_normalish(),
        Restart::Temporary => false,
    }
}

fn info_of(spec: &ChildSpec, id: Option<String>, pid: ChildPid) -> ChildInfo {
    ChildInfo {
        id,
        pid,
        child_type: spec.child_type,
        modules: spec.modules_in_use(),
    }
}

/// What `sys::get_state` returns for a supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupState {
    /// Its strategy.
    pub strategy: Strategy,
    /// Its restart intensity.
    pub intensity: u32,
    /// Its intensity period.
    pub period_secs: u64,
    /// Its callback module, if its tree came from one.
    pub module: Option<String>,
    /// Its children, latest-started first.
    pub children: Vec<ChildInfo>,
}

/// The supervisor client operations on a node's supervisors; see [`Node::supervisor`](crate::Node::supervisor).
/// Every operation waits as long as the supervisor takes (OTP: `infinity`).
#[derive(Debug, Clone, Copy)]
pub struct Supervisors<'a> {
    node: &'a Arc<NodeInner>,
}

impl<'a> Supervisors<'a> {
    /// The client operations on `node`'s supervisors.
    pub(crate) fn new(node: &'a Arc<NodeInner>) -> Self {
        Supervisors { node }
    }
}

macro_rules! via_process {
    ($self:ident, |$ctx:ident| $body:expr) => {
        crate::behaviour::in_process($self.node, move |$ctx| async move { $body.await })
            .await
            .map_err(SupError::Call)?
    };
}

impl Supervisors<'_> {
    /// `start_child` on a static supervisor.
    pub async fn start_child(
        &self,
        sup: impl Into<ServerRef>,
        spec: ChildSpec,
    ) -> Result<Option<Pid>, SupError> {
        let sup = sup.into();
        via_process!(self, |c| hotswap::supervisor::start_child(&c, sup, spec))
    }

    /// `start_child` on a simple_one_for_one supervisor: the template's argument tuple
    /// followed by `extra`'s elements.
    pub async fn start_simple_child<A: Serialize + ?Sized>(
        &self,
        sup: impl Into<ServerRef>,
        extra: &A,
    ) -> Result<Option<Pid>, SupError> {
        let (sup, extra) = (sup.into(), codec::encode(extra));
        via_process!(self, |c| hotswap::supervisor::start_simple_child_encoded(
            &c, sup, extra
        ))
    }

    /// `terminate_child`.
    pub async fn terminate_child(
        &self,
        sup: impl Into<ServerRef>,
        child: impl Into<ChildRef>,
    ) -> Result<(), SupError> {
        let (sup, child) = (sup.into(), child.into());
        via_process!(self, |c| hotswap::supervisor::terminate_child(
            &c, sup, child
        ))
    }

    /// `restart_child`.
    pub async fn restart_child(
        &self,
        sup: impl Into<ServerRef>,
        id: &str,
    ) -> Result<Option<Pid>, SupError> {
        let (sup, id) = (sup.into(), id.to_string());
        via_process!(self, |c| hotswap::supervisor::restart_child(&c, sup, &id))
    }

    /// `delete_child`.
    pub async fn delete_child(&self, sup: impl Into<ServerRef>, id: &str) -> Result<(), SupError> {
        let (sup, id) = (sup.into(), id.to_string());
        via_process!(self, |c| hotswap::supervisor::delete_child(&c, sup, &id))
    }

    /// `which_children`: latest-started first.
    pub async fn which_children(
        &self,
        sup: impl Into<ServerRef>,
    ) -> Result<Vec<ChildInfo>, SupError> {
        let sup = sup.into();
        via_process!(self, |c| hotswap::supervisor::which_children(&c, sup))
    }

    /// `count_children`.
    pub async fn count_children(&self, sup: impl Into<ServerRef>) -> Result<Counts, SupError> {
        let sup = sup.into();
        via_process!(self, |c| hotswap::supervisor::count_children(&c, sup))
    }

    /// `get_childspec`.
    pub async fn get_childspec(
        &self,
        sup: impl Into<ServerRef>,
        child: impl Into<ChildRef>,
    ) -> Result<ChildSpec, SupError> {
        let (sup, child) = (sup.into(), child.into());
        via_process!(self, |c| hotswap::supervisor::get_childspec(&c, sup, child))
    }
}

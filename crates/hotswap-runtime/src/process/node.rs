//! The node's shared state, as every process sees it: the process table, registry, timers,
//! clock, and the code server, with spawning (start `module:function` on current code).

use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hotswap::{Ctx, IntoOutcome, Pid};
use hotswap_abi as abi;
use parking_lot::Mutex;

use crate::code::CodeServer;
use crate::error::SpawnError;
use crate::process::{
    self, Body, Envelope, Gate, ModuleFuture, Payload, Process, ProcessTable, Registry,
};

/// How far the coarse clock may trail the precise one, as [`NodeInner::reached`] assumes:
/// ten ticks of the slowest common kernel tick (100 Hz). Were it ever exceeded, a timeout
/// would fire late by the excess, never early.
const COARSE_SLACK: u64 = 100_000_000;

/// `clock` (`CLOCK_MONOTONIC` or `CLOCK_MONOTONIC_COARSE`) in nanoseconds.
pub(crate) fn monotonic_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter; both clocks exist on every Linux the node
    // supports (the call cannot fail for them).
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The state shared by every process of a node and by its facade ([`crate::Node`]).
pub(crate) struct NodeInner {
    pub(crate) table: ProcessTable,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) code: CodeServer,
    pub(crate) timers: Mutex<HashMap<u64, (tokio::task::AbortHandle, Instant)>>,
    pub(crate) rt: tokio::runtime::Handle,
    /// `CLOCK_MONOTONIC` (the clock `Instant` reads) at the node's start, in nanoseconds:
    /// the origin of [`NodeInner::now_ns`].
    epoch: u64,
    /// The same moment as a tokio instant (read just after `epoch`, so a timer armed for a
    /// node-clock deadline never fires before it).
    tokio_epoch: tokio::time::Instant,
    next_pid: AtomicU64,
    next_ref: AtomicU64,
    pub(crate) exited: AtomicU64,
    /// Woken (all waiters) whenever a process exits.
    pub(crate) exit_notify: tokio::sync::Notify,
    pub(crate) stopping: AtomicBool,
    pub(crate) owns_code_dir: bool,
    /// The host API table (see [`NodeInner::new`]).
    host: &'static abi::HostApi,
    /// Spawns of the modules an upgrade switches wait here.
    pub(crate) gate: Gate,
    /// State that a layer above keeps per node (the release handler's), owned here so that
    /// it lives as long as the node; only that layer knows its type.
    pub(crate) upper: OnceLock<Box<dyn Any + Send + Sync>>,
    /// The port table (sockets), kept here for `net/`, the only layer that knows its type
    /// (`NodeInner::ports`), so that the process core does not name the layer above it.
    pub(crate) net: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for NodeInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("processes", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl NodeInner {
    /// `host` is the host API table module code calls (the layer above builds it): the
    /// code server hands it to every module it loads, and native processes use it too.
    pub(crate) fn new(
        code_dir: PathBuf,
        owns_code_dir: bool,
        purge_timeout: Duration,
        module_heaps: bool,
        rt: tokio::runtime::Handle,
        host: &'static abi::HostApi,
    ) -> NodeInner {
        NodeInner {
            table: ProcessTable::new(),
            registry: Mutex::new(Registry::default()),
            code: CodeServer::new(code_dir, purge_timeout, module_heaps, host),
            host,
            timers: Mutex::new(HashMap::new()),
            rt,
            epoch: monotonic_ns(libc::CLOCK_MONOTONIC),
            tokio_epoch: tokio::time::Instant::now(),
            next_pid: AtomicU64::new(1),
            next_ref: AtomicU64::new(1),
            exited: AtomicU64::new(0),
            exit_notify: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
            owns_code_dir,
            gate: Gate::default(),
            upper: OnceLock::new(),
            net: OnceLock::new(),
        }
    }

    /// The node's monotonic clock: nanoseconds since the node started.
    pub(crate) fn now_ns(&self) -> u64 {
        monotonic_ns(libc::CLOCK_MONOTONIC).saturating_sub(self.epoch)
    }

    /// Whether the node clock has reached `deadline`, reading the precise clock only when
    /// the answer is close. The coarse clock (`CLOCK_MONOTONIC_COARSE`: the same clock as
    /// of the kernel's last tick, a few nanoseconds to read where the precise one costs
    /// ~25 ns) is never ahead of the precise one, so a deadline it has reached has passed;
    /// and it trails by one tick (1–4 ms), so a deadline more than [`COARSE_SLACK`] beyond
    /// it has not. Only a deadline in between costs a precise read: a receive's 5 s call
    /// timeout is decided with the coarse clock alone, a zero timeout with the precise one.
    pub(crate) fn reached(&self, deadline: u64) -> bool {
        let coarse = monotonic_ns(libc::CLOCK_MONOTONIC_COARSE).saturating_sub(self.epoch);
        if coarse >= deadline {
            return true;
        }
        if deadline - coarse > COARSE_SLACK {
            return false;
        }
        self.now_ns() >= deadline
    }

    pub(crate) fn instant_at(&self, ns: u64) -> tokio::time::Instant {
        self.tokio_epoch + Duration::from_nanos(ns)
    }

    pub(crate) fn new_ref(&self) -> u64 {
        self.next_ref.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn new_pid(&self) -> Pid {
        Pid(self.next_pid.fetch_add(1, Ordering::Relaxed))
    }

    /// Resolve `module:function` on the current version and start it for `proc` (binding
    /// `proc` to that version).
    pub(crate) fn start_body(
        &self,
        proc: &Process,
        module: &str,
        function: &str,
        arg: &[u8],
    ) -> Result<Body, SpawnError> {
        let v = self
            .code
            .current(module)
            .ok_or_else(|| SpawnError::ModuleNotLoaded {
                module: module.into(),
            })?;
        let Some(&start) = v.exports.get(function) else {
            return Err(SpawnError::NoSuchFunction {
                module: module.into(),
                version: v.vsn.clone(),
                function: function.into(),
                exports: v.export_names.join(", "),
            });
        };
        proc.bind(&v);
        Ok(Body::Module(ModuleFuture::start(&v, start, proc, arg)))
    }

    /// Link or monitor `child` from `parent` before the child runs.
    fn attach(&self, parent: Option<&Process>, child: &Process, flags: u32) -> u64 {
        let Some(parent) = parent else { return 0 };
        let mut mref = 0;
        if flags & abi::SPAWN_LINK != 0 {
            child.inner.lock().rel().links.insert(parent.pid.0);
            parent.inner.lock().rel().links.insert(child.pid.0);
        }
        if flags & abi::SPAWN_MONITOR != 0 {
            mref = self.new_ref();
            child
                .inner
                .lock()
                .rel()
                .monitored_by
                .insert(mref, parent.pid.0);
            parent
                .inner
                .lock()
                .rel()
                .monitoring
                .insert(mref, child.pid.0);
        }
        mref
    }

    /// Spawn `module:function(arg)` on the current version.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        parent: Option<&Process>,
        module: &str,
        function: &str,
        arg: &[u8],
        flags: u32,
    ) -> Result<(Pid, u64), SpawnError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(SpawnError::NodeStopping);
        }
        let proc = Arc::new(Process::new(self.new_pid(), self.clone()));
        if self.gate.closes(module) {
            return self.launch_gated(parent, proc, module, function, arg, flags);
        }
        let body = self.start_body(&proc, module, function, arg)?;
        Ok(self.launch(parent, proc, body, flags))
    }

    /// A spawn on a module an upgrade is switching: checked against the current version
    /// now, started at the gate's opening on the version current then.
    fn launch_gated(
        self: &Arc<Self>,
        parent: Option<&Process>,
        proc: Arc<Process>,
        module: &str,
        function: &str,
        arg: &[u8],
        flags: u32,
    ) -> Result<(Pid, u64), SpawnError> {
        let v = self
            .code
            .current(module)
            .ok_or_else(|| SpawnError::ModuleNotLoaded {
                module: module.into(),
            })?;
        if !v.exports.contains_key(function) {
            return Err(SpawnError::NoSuchFunction {
                module: module.into(),
                version: v.vsn.clone(),
                function: function.into(),
                exports: v.export_names.join(", "),
            });
        }
        drop(v);
        let (p, module, function, arg) = (
            proc.clone(),
            module.to_string(),
            function.to_string(),
            arg.to_vec(),
        );
        let body: Body = Body::Native(Box::pin(async move {
            p.node.gate.pass(&p).await;
            hotswap::Outcome::Continue {
                module,
                function,
                arg,
            }
        }));
        Ok(self.launch(parent, proc, body, flags))
    }

    pub(crate) fn launch<S>(
        self: &Arc<Self>,
        parent: Option<&Process>,
        proc: Arc<Process>,
        body: Body<S>,
        flags: u32,
    ) -> (Pid, u64)
    where
        S: std::future::Future<Output = hotswap::Outcome> + Send + Unpin + 'static,
    {
        let mref = self.attach(parent, &proc, flags);
        let pid = proc.pid;
        self.table.insert(proc.clone());
        self.rt.spawn(process::run(proc, body));
        (pid, mref)
    }

    /// Spawn a native (host) process running `f`.
    pub(crate) fn spawn_native<F, Fut>(
        self: &Arc<Self>,
        parent: Option<&Process>,
        flags: u32,
        f: F,
    ) -> Result<(Pid, u64), SpawnError>
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: IntoOutcome,
    {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(SpawnError::NodeStopping);
        }
        hotswap::private::set_host(self.host);
        let proc = Arc::new(Process::new(self.new_pid(), self.clone()));
        // SAFETY: the handle is this new process's, and the host table is installed.
        let ctx = unsafe { Ctx::from_raw(proc.as_handle()) };
        let fut = f(ctx);
        let body: Body = Body::Native(Box::pin(async move { fut.await.into_outcome() }));
        Ok(self.launch(parent, proc, body, flags))
    }

    pub(crate) fn send(&self, from: u64, to: u64, data: Vec<u8>) {
        self.deliver_user(from, to, Payload::from_vec(data));
    }

    pub(crate) fn send_slice(&self, from: u64, to: u64, data: &[u8]) {
        self.deliver_user(from, to, Payload::from_slice(data));
    }

    /// Put an envelope of any kind into `to`'s mailbox; `false` if there is no such process.
    pub(crate) fn post(
        &self,
        from: u64,
        to: u64,
        kind: u32,
        reference: u64,
        data: Payload,
    ) -> bool {
        self.table
            .with(to, |p| {
                p.deliver(Envelope {
                    kind,
                    from,
                    reference,
                    data,
                })
            })
            .is_some()
    }

    fn deliver_user(&self, from: u64, to: u64, data: Payload) {
        self.post(from, to, abi::MSG_USER, 0, data);
    }

    pub(crate) fn send_after(
        self: &Arc<Self>,
        from: u64,
        after: Duration,
        to: u64,
        data: Vec<u8>,
    ) -> u64 {
        let r = self.new_ref();
        let node = self.clone();
        let deadline = Instant::now() + after;
        let mut timers = self.timers.lock();
        let h = self.rt.spawn(async move {
            tokio::time::sleep(after).await;
            if node.timers.lock().remove(&r).is_some() {
                node.send(from, to, data);
            }
        });
        timers.insert(r, (h.abort_handle(), deadline));
        r
    }

    pub(crate) fn cancel_timer(&self, r: u64) -> Option<Duration> {
        let (h, deadline) = self.timers.lock().remove(&r)?;
        h.abort();
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    pub(crate) fn register(&self, name: &str, pid: u64) -> bool {
        let mut reg = self.registry.lock();
        if reg.names.contains_key(name) {
            return false;
        }
        let Some(p) = self.table.get(pid) else {
            return false;
        };
        let mut g = p.inner.lock();
        if g.exited || g.name().is_some() {
            return false;
        }
        g.rel().name = Some(name.into());
        reg.names.insert(name.into(), pid);
        true
    }

    pub(crate) fn unregister(&self, name: &str) -> bool {
        let mut reg = self.registry.lock();
        match reg.names.remove(name) {
            Some(pid) => {
                if let Some(p) = self.table.get(pid) {
                    if let Some(r) = p.inner.lock().rel.as_mut() {
                        r.name = None;
                    }
                }
                true
            }
            None => false,
        }
    }
}

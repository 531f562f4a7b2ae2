//! Processes: a pid, a mailbox with selective receive, links, monitors, trap-exit, and one
//! future that is the process's code.
//!
//! # Protocol
//!
//! A process is a tokio task driving one *body*: a future created by a module version
//! through the ABI (or a native host future). The task loop is
//!
//! 1. **signals first**: if an exit signal that was not trapped arrived (`pending_exit`),
//!    the process exits with it at once, without polling its code again;
//! 2. poll the body once (module code runs only here, with the version's in-flight count
//!    held);
//! 3. if the body finished: a value is a `normal` exit, an exit outcome exits with its
//!    reason, a panic exits with `{panic, Message}`, and a *continue* outcome is a
//!    fully-qualified tail call: the finished future is dropped and `module:function(arg)`
//!    is started on the **current** version, which is how a process moves to new code;
//! 4. otherwise wait until something happens to the process (a message, a signal, the
//!    deadline of the receive it is blocked in, or, for a native body, a wake of the waker
//!    it was polled with: a tokio timer, channel or any other future), and repeat.
//!
//! An idle process holds no thread: it is a parked task.
//!
//! Killing a process (a `kill` signal, or a purge of code it runs) drops its body at the
//! next await point, running the module's own destructors while the version is still
//! mapped. Native code cannot be pre-empted: a process busy inside one poll is killed when
//! that poll returns.
//!
//! # Exit signals (spec conventions)
//!
//! On exit with reason `R`, every linked process receives an exit signal `R` and every
//! monitor a `Down` message. A receiver that traps exits gets `{'EXIT', From, R}` as a
//! message, except for `kill`, which is untrappable and makes the receiver exit `killed`.
//! A receiver that does not trap exits ignores `normal` and exits with any other reason.
//!
//! Locking: each process has one mutex; code never holds two process locks at once.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use hotswap::{ExitReason, Outcome, Pid};
use hotswap_abi as abi;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::code::Version;
use crate::node::{FxMap, FxSet, NodeInner};

/// A mailbox entry.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) kind: u32,
    pub(crate) from: u64,
    pub(crate) reference: u64,
    pub(crate) data: Payload,
}

/// A message payload. Small ones (most messages) are stored inline in the envelope, so
/// sending them allocates nothing beyond the mailbox slot.
pub(crate) enum Payload {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

const INLINE: usize = 22;

impl Payload {
    pub(crate) fn from_slice(b: &[u8]) -> Payload {
        if b.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..b.len()].copy_from_slice(b);
            Payload::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            Payload::Heap(b.into())
        }
    }

    pub(crate) fn from_vec(v: Vec<u8>) -> Payload {
        if v.len() <= INLINE {
            Payload::from_slice(&v)
        } else {
            Payload::Heap(v.into_boxed_slice())
        }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Inline { len, buf } => &buf[..*len as usize],
            Payload::Heap(b) => b,
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

/// Links, monitors and the registered name: most processes have none, so they live in a
/// box allocated on first use. Maps are keyed by monitor reference, so a process watching
/// many others (a supervisor, a spawner) cleans up each one in O(1).
#[derive(Default)]
pub(crate) struct Relations {
    pub(crate) name: Option<Box<str>>,
    pub(crate) links: FxSet<u64>,
    /// reference → watcher: processes monitoring this one.
    pub(crate) monitored_by: FxMap<u64, u64>,
    /// reference → target: processes this one monitors.
    pub(crate) monitoring: FxMap<u64, u64>,
    /// Tags of the calls this process waits for: only replies carrying one are delivered.
    pub(crate) aliases: Vec<u64>,
    /// A gen_server's calls answered with `noreply`: `(caller, tag)`. If the server exits
    /// before replying, each caller gets the exit reason (as an OTP caller's monitor would).
    pub(crate) callers: Vec<(u64, u64)>,
}

/// The versions whose code a process runs: its body's version, then any version it is
/// awaiting through a fully-qualified call (a stack). The first one is stored inline.
#[derive(Default)]
pub(crate) struct Bindings {
    first: Option<Arc<Version>>,
    #[expect(
        clippy::box_collection,
        reason = "8 bytes instead of 24 in every process; nested calls are rare"
    )]
    more: Option<Box<Vec<Arc<Version>>>>,
}

impl Bindings {
    fn push(&mut self, v: Arc<Version>) {
        if self.first.is_none() {
            self.first = Some(v);
        } else {
            self.more.get_or_insert_with(Default::default).push(v);
        }
    }

    /// Remove the innermost binding of `v`.
    fn remove(&mut self, v: &Arc<Version>) -> Option<Arc<Version>> {
        if let Some(more) = self.more.as_mut() {
            if let Some(pos) = more.iter().rposition(|b| Arc::ptr_eq(b, v)) {
                let b = more.remove(pos);
                if more.is_empty() {
                    self.more = None;
                }
                return Some(b);
            }
        }
        if self.first.as_ref().is_some_and(|b| Arc::ptr_eq(b, v)) {
            let f = self.first.take();
            if let Some(more) = self.more.as_mut() {
                self.first = Some(more.remove(0));
                if more.is_empty() {
                    self.more = None;
                }
            }
            return f;
        }
        None
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Version>> {
        self.first
            .iter()
            .chain(self.more.iter().flat_map(|m| m.iter()))
    }

    pub(crate) fn contains(&self, v: &Arc<Version>) -> bool {
        self.iter().any(|b| Arc::ptr_eq(b, v))
    }

    fn take_all(&mut self) -> Vec<Arc<Version>> {
        let mut out: Vec<Arc<Version>> = self.first.take().into_iter().collect();
        if let Some(more) = self.more.take() {
            out.extend(*more);
        }
        out
    }
}

#[derive(Default)]
pub(crate) struct ProcInner {
    pub(crate) mailbox: VecDeque<Envelope>,
    pub(crate) rel: Option<Box<Relations>>,
    pub(crate) trap_exit: bool,
    /// Set once, when the process has exited.
    pub(crate) exited: bool,
    /// A host-side mailbox ([`crate::ExternalProcess`]), not driven by a task. Set at
    /// creation, never changed.
    pub(crate) external: bool,
    /// An exit signal that was not trapped: the process exits with it before running again.
    pub(crate) pending_exit: Option<Box<ExitReason>>,
    pub(crate) bindings: Bindings,
    /// The earliest receive deadline asked for during the last poll (`u64::MAX`: none).
    pub(crate) wake_at: u64,
    pub(crate) received: u64,
}

impl ProcInner {
    pub(crate) fn rel(&mut self) -> &mut Relations {
        self.rel.get_or_insert_with(Default::default)
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.rel.as_ref().and_then(|r| r.name.as_deref())
    }
}

/// A process. Shared by the process table, the task driving it and host calls.
///
/// Its mailbox has two parts, as in Erlang: senders append to the `inbox` under its own
/// small lock, and the process moves whole batches from there into its private
/// `ProcInner::mailbox`, where selective receive scans. So a sender never waits for a
/// receiver that is scanning, and a busy receiver takes the shared lock once per batch,
/// not once per message. Everything addressed to the process (messages, trapped exits,
/// monitor notifications) goes through the inbox, which keeps each sender's order.
pub(crate) struct Process {
    pub(crate) pid: Pid,
    pub(crate) node: Arc<NodeInner>,
    pub(crate) inner: Mutex<ProcInner>,
    inbox: Mutex<Vec<Envelope>>,
    /// Woken when anything happens to the process.
    pub(crate) notify: Notify,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Process {
    pub(crate) fn new(pid: Pid, node: Arc<NodeInner>) -> Process {
        Process {
            pid,
            node,
            inner: Mutex::new(ProcInner {
                wake_at: u64::MAX,
                ..Default::default()
            }),
            inbox: Mutex::new(Vec::new()),
            notify: Notify::new(),
        }
    }

    pub(crate) fn as_handle(&self) -> *mut abi::ProcHandle {
        self as *const Process as *mut abi::ProcHandle
    }

    /// Deliver a message. (Messages that reach a process after it exited are dropped with
    /// it.)
    ///
    /// Only the message that makes the inbox non-empty wakes the process: while the inbox
    /// is non-empty a wake-up is already owed, and the process has not drained since.
    pub(crate) fn deliver(&self, env: Envelope) {
        let was_empty = {
            let mut ib = self.inbox.lock();
            let e = ib.is_empty();
            ib.push(env);
            e
        };
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Move everything that arrived into the private mailbox; `false` if nothing had.
    /// Lock order: `inner`, then `inbox` (senders only ever take `inbox`).
    pub(crate) fn take_inbox(&self, g: &mut ProcInner) -> bool {
        let mut ib = self.inbox.lock();
        if ib.is_empty() {
            return false;
        }
        let aliases = g.rel.as_ref().map(|r| &r.aliases[..]).unwrap_or(&[]);
        for e in ib.drain(..) {
            // A reply nobody waits for any more (its call timed out) is dropped here, so it
            // never reaches the mailbox (OTP 24's aliases).
            if e.kind == abi::MSG_REPLY && !aliases.contains(&e.reference) {
                continue;
            }
            g.mailbox.push_back(e);
        }
        true
    }

    /// Messages waiting, in both parts of the mailbox.
    pub(crate) fn queue_len(&self, g: &ProcInner) -> usize {
        g.mailbox.len() + self.inbox.lock().len()
    }

    /// Find the first message `pred` accepts, scanning the private mailbox and then each
    /// batch taken from the inbox (every message is looked at once per call), and remove it.
    pub(crate) fn take_first(
        &self,
        g: &mut ProcInner,
        mut pred: impl FnMut(&Envelope) -> bool,
    ) -> Option<Envelope> {
        let mut from = 0;
        loop {
            if let Some(i) = g.mailbox.range(from..).position(&mut pred) {
                return g.mailbox.remove(from + i);
            }
            from = g.mailbox.len();
            if !self.take_inbox(g) {
                return None;
            }
        }
    }

    /// Remove the first message if `pred` accepts it (taking what arrived if the private
    /// mailbox is empty).
    pub(crate) fn take_front_if(
        &self,
        g: &mut ProcInner,
        pred: impl FnOnce(&Envelope) -> bool,
    ) -> Option<Envelope> {
        if g.mailbox.is_empty() && !self.take_inbox(g) {
            return None;
        }
        if g.mailbox.front().is_some_and(pred) {
            g.mailbox.pop_front()
        } else {
            None
        }
    }

    /// Deliver an exit signal from `from` (`via_link`: because a linked process exited).
    pub(crate) fn signal_exit(&self, from: u64, reason: &ExitReason, via_link: bool) {
        {
            let mut g = self.inner.lock();
            if g.exited {
                return;
            }
            if via_link {
                if let Some(r) = g.rel.as_mut() {
                    r.links.remove(&from);
                }
            }
            if *reason == ExitReason::Kill {
                g.pending_exit = Some(Box::new(ExitReason::Killed));
            } else if g.trap_exit {
                let mut data = Vec::new();
                reason.encode_into(&mut data);
                // Through the inbox, after whatever `from` sent before exiting.
                self.inbox.lock().push(Envelope {
                    kind: abi::MSG_EXIT,
                    from,
                    reference: 0,
                    data: Payload::from_vec(data),
                });
            } else if *reason == ExitReason::Normal && from != self.pid.0 {
                return;
            } else if g.pending_exit.is_none() {
                g.pending_exit = Some(Box::new(reason.clone()));
            }
        }
        self.notify.notify_one();
    }

    pub(crate) fn bind(&self, v: &Arc<Version>) {
        v.bind();
        self.inner.lock().bindings.push(v.clone());
    }

    /// Release a binding taken with [`Process::bind`]; consumes the caller's reference.
    pub(crate) fn unbind(&self, v: Arc<Version>) {
        let mine = self.inner.lock().bindings.remove(&v);
        drop(mine);
        Version::unbind(v);
    }

    /// Record the exit and propagate it to links, monitors, the registry and the table.
    pub(crate) fn finish(self: &Arc<Process>, reason: ExitReason) {
        let (rel, bindings, mailbox) = {
            let mut g = self.inner.lock();
            if g.exited {
                return;
            }
            g.exited = true;
            (
                g.rel.take(),
                g.bindings.take_all(),
                std::mem::take(&mut g.mailbox),
            )
        };
        let node = &self.node;
        // The name goes first: whoever finds the process gone (a monitor's `noproc`) must
        // find its name released too.
        if let Some(n) = rel.as_ref().and_then(|r| r.name.as_deref()) {
            node.registry.lock().remove_if(n, self.pid.0);
        }
        // Out of the table next: a sender reaches a process only through the table, so
        // after this nothing new can arrive and the drain below sees every request.
        node.table.remove(self.pid.0);
        let inbox = std::mem::take(&mut *self.inbox.lock());
        // Callers waiting on requests this process will never answer get its exit reason.
        let mut waiting: Vec<(u64, u64)> = mailbox
            .iter()
            .chain(inbox.iter())
            .filter(|e| (e.kind == abi::MSG_CALL || e.kind == abi::MSG_SYSTEM) && e.reference != 0)
            .map(|e| (e.from, e.reference))
            .collect();
        drop(mailbox);
        drop(inbox);
        if let Some(r) = rel.as_ref() {
            waiting.extend_from_slice(&r.callers);
        }
        if !waiting.is_empty() {
            let mut data = vec![hotswap::gen_server::wire::R_EXIT];
            reason.encode_into(&mut data);
            for (caller, tag) in waiting {
                node.post(
                    self.pid.0,
                    caller,
                    abi::MSG_REPLY,
                    tag,
                    Payload::from_slice(&data),
                );
            }
        }
        for v in bindings {
            Version::unbind(v);
        }
        if let Some(rel) = rel {
            let Relations {
                links,
                monitored_by,
                monitoring,
                ..
            } = *rel;
            for l in links {
                if let Some(p) = node.table.get(l) {
                    p.signal_exit(self.pid.0, &reason, true);
                }
            }
            if !monitored_by.is_empty() {
                let data = reason.encode();
                for (r, watcher) in monitored_by {
                    if let Some(p) = node.table.get(watcher) {
                        if let Some(rel) = p.inner.lock().rel.as_mut() {
                            rel.monitoring.remove(&r);
                        }
                        p.deliver(Envelope {
                            kind: abi::MSG_DOWN,
                            from: self.pid.0,
                            reference: r,
                            data: Payload::from_slice(&data),
                        });
                    }
                }
            }
            for (r, target) in monitoring {
                if let Some(p) = node.table.get(target) {
                    if let Some(rel) = p.inner.lock().rel.as_mut() {
                        rel.monitored_by.remove(&r);
                    }
                }
            }
        }
        if !reason.is_normalish() && reason != ExitReason::Killed {
            tracing::debug!(pid = %self.pid, %reason, "process exited");
        }
        node.exited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        node.exit_notify.notify_waiters();
    }

    /// Wait until this process has exited (a node-wide exit notification serves all
    /// waiters, so processes carry no notifier of their own for this).
    pub(crate) async fn wait_done(&self) {
        loop {
            let n = self.node.exit_notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.inner.lock().exited {
                return;
            }
            n.await;
        }
    }
}

/// The code of a process (or of a fully-qualified call in progress).
pub(crate) enum Body {
    /// A future created by a module version.
    Module(ModuleFuture),
    /// A native future of the host (used for the node's own processes).
    Native(Pin<Box<dyn Future<Output = Outcome> + Send>>),
}

/// What one poll of a body produced.
pub(crate) enum Step {
    Pending,
    Done(Outcome),
    Panicked(String),
}

/// A future owned by a module version; dropped through that version's drop function.
pub(crate) struct ModuleFuture {
    pub(crate) version: Arc<Version>,
    fut: *mut abi::FutureObj,
}

// SAFETY: the future is only touched by the one task (or call handle) that owns this value,
// through the version's poll/drop functions; the module side makes no thread-affinity
// assumptions (its futures are polled with a no-op waker and hold no thread-local state).
unsafe impl Send for ModuleFuture {}

impl ModuleFuture {
    /// Own a future that `version` created.
    pub(crate) fn from_raw(version: &Arc<Version>, fut: *mut abi::FutureObj) -> ModuleFuture {
        ModuleFuture {
            version: version.clone(),
            fut,
        }
    }

    /// Start `export` of `version` for process `proc`.
    pub(crate) fn start(
        version: &Arc<Version>,
        start: abi::StartFn,
        proc: &Process,
        arg: &[u8],
    ) -> ModuleFuture {
        let _in = version.enter();
        // SAFETY: `start` belongs to `version`, which is mapped while we hold the Arc; the
        // handle is the live process; the argument range is valid for the call.
        let fut = unsafe { start(proc.as_handle(), arg.as_ptr(), arg.len()) };
        ModuleFuture::from_raw(version, fut)
    }

    pub(crate) fn poll(&mut self) -> Step {
        let mut out: Vec<u8> = Vec::new();
        let st = {
            let _in = self.version.enter();
            // SAFETY: `fut` was created by this version and not yet dropped; the version
            // is mapped while we hold its Arc; `out` outlives the call.
            unsafe {
                (self.version.poll)(
                    self.fut,
                    &mut out as *mut Vec<u8> as *mut c_void,
                    crate::host_api::write_vec,
                )
            }
        };
        match st {
            abi::STATUS_PENDING => Step::Pending,
            abi::STATUS_READY => match Outcome::decode_vec(out) {
                Some(o) => Step::Done(o),
                None => Step::Done(Outcome::Exit(ExitReason::User(
                    "malformed outcome from module".into(),
                ))),
            },
            _ => Step::Panicked(String::from_utf8_lossy(&out).into_owned()),
        }
    }
}

impl Drop for ModuleFuture {
    fn drop(&mut self) {
        let mut out: Vec<u8> = Vec::new();
        let st = {
            let _in = self.version.enter();
            // SAFETY: `fut` was created by this version and is dropped exactly once, here,
            // while the version is mapped (we hold its Arc).
            unsafe {
                (self.version.drop_future)(
                    self.fut,
                    &mut out as *mut Vec<u8> as *mut c_void,
                    crate::host_api::write_vec,
                )
            }
        };
        if st != abi::STATUS_READY {
            tracing::warn!(module = %self.version.name, "a destructor in module code panicked: {}", String::from_utf8_lossy(&out));
        }
    }
}

impl Body {
    /// Poll once. A native body is polled with `waker` (see [`process_waker`]); a module
    /// body is woken by its mailbox and its receive deadline only.
    pub(crate) fn poll(&mut self, waker: &Waker) -> Step {
        match self {
            Body::Module(m) => m.poll(),
            Body::Native(f) => {
                let mut cx = Context::from_waker(waker);
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    f.as_mut().poll(&mut cx)
                })) {
                    Ok(Poll::Pending) => Step::Pending,
                    Ok(Poll::Ready(o)) => Step::Done(o),
                    Err(p) => Step::Panicked(panic_text(p)),
                }
            }
        }
    }

    pub(crate) fn version(&self) -> Option<&Arc<Version>> {
        match self {
            Body::Module(m) => Some(&m.version),
            Body::Native(_) => None,
        }
    }
}

pub(crate) fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

/// The waker of a process's native body: a wake makes the process runnable, as a message
/// does (it notifies the process, whose task then polls the body again). So a native
/// process can await any future, a tokio timer or channel included. Clones hold a
/// reference on the process.
static PROCESS_WAKER: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

unsafe fn waker_clone(p: *const ()) -> RawWaker {
    // SAFETY: `p` is `Arc::as_ptr` of a live process (the borrowed waker's process is alive
    // while it is borrowed; a clone holds its own reference).
    unsafe { Arc::increment_strong_count(p as *const Process) };
    RawWaker::new(p, &PROCESS_WAKER)
}

unsafe fn waker_wake(p: *const ()) {
    // SAFETY: an owned waker (a clone) carries one reference, consumed here.
    let proc = unsafe { Arc::from_raw(p as *const Process) };
    proc.notify.notify_one();
}

unsafe fn waker_wake_by_ref(p: *const ()) {
    // SAFETY: the waker keeps the process alive (borrowed, or holding a reference).
    unsafe { &*(p as *const Process) }.notify.notify_one();
}

unsafe fn waker_drop(p: *const ()) {
    // SAFETY: an owned waker carries one reference, released here.
    drop(unsafe { Arc::from_raw(p as *const Process) });
}

/// A borrowed waker for `proc` (see [`PROCESS_WAKER`]); never dropped, so it takes no
/// reference: it is only lent to a poll while `proc` is alive.
fn process_waker(proc: &Arc<Process>) -> std::mem::ManuallyDrop<Waker> {
    let raw = RawWaker::new(Arc::as_ptr(proc) as *const (), &PROCESS_WAKER);
    // SAFETY: the vtable's functions uphold the `RawWaker` contract for a pointer made by
    // `Arc::as_ptr`; `ManuallyDrop` keeps the borrowed waker from releasing a reference
    // it never took.
    std::mem::ManuallyDrop::new(unsafe { Waker::from_raw(raw) })
}

/// The task that drives a process until it exits.
pub(crate) async fn run(proc: Arc<Process>, mut body: Body) {
    // Armed at the earliest deadline seen and kept across waits: a later deadline does not
    // re-register it (an early expiry only re-polls the body, which re-arms it).
    let mut timer: Option<(u64, std::pin::Pin<Box<tokio::time::Sleep>>)> = None;
    let reason = loop {
        {
            let mut g = proc.inner.lock();
            if let Some(r) = g.pending_exit.take() {
                break *r;
            }
            g.wake_at = u64::MAX;
        }
        match body.poll(&process_waker(&proc)) {
            Step::Pending => {}
            Step::Done(Outcome::Value(_)) => break ExitReason::Normal,
            Step::Done(Outcome::Exit(r)) => break r,
            Step::Panicked(m) => break ExitReason::Panic(m),
            Step::Done(Outcome::Continue {
                module,
                function,
                arg,
            }) => match proc.node.start_body(&proc, &module, &function, &arg) {
                Ok(next) => {
                    let old = std::mem::replace(&mut body, next);
                    if let Some(v) = old.version().cloned() {
                        drop(old);
                        proc.unbind(v);
                    }
                    continue;
                }
                Err(e) => break e.exit_reason(),
            },
        }
        let wake_at = proc.inner.lock().wake_at;
        if wake_at == u64::MAX {
            if timer.as_ref().is_some_and(|(_, s)| s.is_elapsed()) {
                timer = None;
            }
            proc.notify.notified().await;
        } else {
            let sleep = match &mut timer {
                Some((at, s)) if *at <= wake_at && !s.is_elapsed() => s,
                Some((at, s)) => {
                    s.as_mut().reset(proc.node.instant_at(wake_at));
                    *at = wake_at;
                    s
                }
                None => {
                    &mut timer
                        .insert((
                            wake_at,
                            Box::pin(tokio::time::sleep_until(proc.node.instant_at(wake_at))),
                        ))
                        .1
                }
            };
            tokio::select! {
                biased;
                _ = proc.notify.notified() => {}
                _ = sleep.as_mut() => {}
            }
        }
    };
    if let Some(v) = body.version().cloned() {
        drop(body);
        proc.unbind(v);
    } else {
        drop(body);
    }
    proc.finish(reason);
}

impl Process {
    /// Bytes the node holds for this process: its record (with the `Arc` header), its
    /// mailbox (slots and out-of-line payloads, both parts), and its links, monitors and
    /// name. Allocations made by module code (its future and what it owns) are not counted:
    /// they belong to the module's allocator, which the node does not see.
    pub(crate) fn memory(&self, g: &ProcInner) -> usize {
        let env = std::mem::size_of::<Envelope>();
        let payload = |e: &Envelope| match &e.data {
            Payload::Heap(b) => b.len(),
            Payload::Inline { .. } => 0,
        };
        let mut bytes = std::mem::size_of::<Process>() + 2 * std::mem::size_of::<usize>();
        bytes += g.mailbox.capacity() * env + g.mailbox.iter().map(payload).sum::<usize>();
        {
            let ib = self.inbox.lock();
            bytes += ib.capacity() * env + ib.iter().map(payload).sum::<usize>();
        }
        if let Some(r) = g.rel.as_deref() {
            let pair = 2 * std::mem::size_of::<u64>();
            bytes += std::mem::size_of::<Relations>()
                + r.name.as_deref().map_or(0, str::len)
                + r.links.capacity() * std::mem::size_of::<u64>()
                + (r.monitored_by.capacity() + r.monitoring.capacity()) * pair;
        }
        bytes
    }
}

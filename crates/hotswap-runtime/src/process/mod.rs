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

mod body;
mod gate;
mod mailbox;
mod node;
pub(crate) mod ops;
pub mod sched;
mod table;
mod waker;

pub(crate) use body::{panic_text, Body, ModuleFuture, NoInline, Step};
pub(crate) use gate::Gate;
pub(crate) use mailbox::{Envelope, Inbox, Payload};
pub(crate) use node::NodeInner;
pub(crate) use table::{ProcessTable, Registry};

use waker::process_waker;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hotswap::{ExitReason, Outcome, Pid};
use hotswap_abi as abi;
use parking_lot::Mutex;

use crate::code::Version;
use crate::util::{FxMap, FxSet};

/// The cold part of a process: links, monitors, the registered name, and the rare states
/// (a pending exit signal, nested bindings). Most processes have none of these, so they
/// live in a box allocated on first use. Maps are keyed by monitor reference, so a process
/// watching many others (a supervisor, a spawner) cleans up each one in O(1).
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
    /// An exit signal that was not trapped: the process exits with it before running again.
    pub(crate) pending_exit: Option<ExitReason>,
    /// The versions bound after the first (see [`ProcInner::push_binding`]).
    pub(crate) more_bindings: Vec<Arc<Version>>,
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
    /// Set by a gen_server's loop while it waits for its next event with none taken: it is
    /// between events, its state idle (see [`Process::try_hold`]).
    pub(crate) idle: bool,
    /// Held by a release upgrade (see [`Process::try_hold`]): the gen_server's loop takes
    /// no event, and no timeout fires, until it is released.
    pub(crate) held: bool,
    /// The first version this process is bound to (see [`ProcInner::bindings`]).
    binding: Option<Arc<Version>>,
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

    /// Take the exit signal the process must exit with, if one arrived.
    fn take_pending_exit(&mut self) -> Option<ExitReason> {
        self.rel.as_mut().and_then(|r| r.pending_exit.take())
    }
}

/// A process. Shared by the process table, the task driving it and host calls.
///
/// Its mailbox has two parts, as in Erlang: senders append to the `inbox` under its own
/// small lock, and the process moves whole batches from there into its private
/// `ProcInner::mailbox`, where selective receive scans. So a sender never waits for a
/// receiver that is scanning, and a busy receiver takes the shared lock once per batch,
/// not once per message. Everything addressed to the process (messages, trapped exits,
/// monitor notifications) goes through the inbox, which keeps each sender's order. The
/// inbox also holds the waker of whoever waits for the process (see [`Inbox`]): anything
/// that happens to the process calls [`Process::wake`].
pub(crate) struct Process {
    pub(crate) pid: Pid,
    pub(crate) node: Arc<NodeInner>,
    pub(crate) inner: Mutex<ProcInner>,
    pub(super) inbox: Mutex<Inbox>,
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
            inbox: Mutex::new(Inbox::new()),
        }
    }

    /// A host-side mailbox (not driven by a task; see [`crate::ExternalProcess`]): it traps
    /// exits, and host tasks wait for it on the returned `Notify` (see [`Inbox`]).
    pub(crate) fn new_host(
        pid: Pid,
        node: Arc<NodeInner>,
    ) -> (Arc<Process>, Arc<tokio::sync::Notify>) {
        let mut p = Process::new(pid, node);
        let g = p.inner.get_mut();
        g.external = true;
        g.trap_exit = true;
        let notify = Arc::new(tokio::sync::Notify::new());
        p.set_host_waker(&notify);
        (Arc::new(p), notify)
    }

    /// Hold a gen_server that waits for its next event, in place (a release upgrade's
    /// suspend without a round trip through its mailbox): from now on its loop takes no
    /// event until [`Process::release_hold`], so its state stays idle. `false` (nothing
    /// changed) if it is not waiting between events: busy in a callback, in `init`, in a
    /// system request, or not a gen_server; such a process is suspended by a `sys` request
    /// instead.
    pub(crate) fn try_hold(&self) -> bool {
        let mut g = self.inner.lock();
        if g.idle && !g.held && !g.exited {
            g.held = true;
            true
        } else {
            false
        }
    }

    /// Let a held gen_server go on (it handles what queued meanwhile, in order).
    pub(crate) fn release_hold(&self) {
        let was = std::mem::replace(&mut self.inner.lock().held, false);
        if was {
            self.wake();
        }
    }

    pub(crate) fn as_handle(&self) -> *mut abi::ProcHandle {
        self as *const Process as *mut abi::ProcHandle
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
                g.rel().pending_exit = Some(ExitReason::Killed);
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
            } else {
                let rel = g.rel();
                if rel.pending_exit.is_none() {
                    rel.pending_exit = Some(reason.clone());
                }
            }
        }
        self.wake();
    }

    pub(crate) fn bind(&self, v: &Arc<Version>) {
        v.bind();
        self.inner.lock().push_binding(v.clone());
    }

    /// Release a binding taken with [`Process::bind`]; consumes the caller's reference.
    pub(crate) fn unbind(&self, v: Arc<Version>) {
        let mine = self.inner.lock().remove_binding(&v);
        drop(mine);
        Version::unbind(v);
    }

    /// Record the exit and propagate it to links, monitors, the registry and the table.
    pub(crate) fn finish(self: &Arc<Process>, reason: ExitReason) {
        let (mut rel, first_binding, mailbox) = {
            let mut g = self.inner.lock();
            if g.exited {
                return;
            }
            g.exited = true;
            (
                g.rel.take(),
                g.binding.take(),
                std::mem::take(&mut g.mailbox),
            )
        };
        let bindings: Vec<Arc<Version>> = first_binding
            .into_iter()
            .chain(
                rel.as_mut()
                    .map(|r| std::mem::take(&mut r.more_bindings))
                    .unwrap_or_default(),
            )
            .collect();
        // Nothing waits for an exited process: its waker (the task's) is let go.
        drop(self.disarm());
        let node = &self.node;
        // The name goes first: whoever finds the process gone (a monitor's `noproc`) must
        // find its name released too.
        if let Some(n) = rel.as_ref().and_then(|r| r.name.as_deref()) {
            node.registry.lock().remove_if(n, self.pid.0);
        }
        // Out of the table next: a sender reaches a process only through the table, so
        // after this nothing new can arrive and the drain below sees every request.
        node.table.remove(self.pid.0);
        let inbox = self.inbox.lock().take_all();
        // Callers waiting on requests this process will never answer get its exit reason.
        let mut waiting: Vec<(u64, u64)> = mailbox
            .iter()
            .chain(inbox.iter().flatten())
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

/// The task that drives a process until it exits (see the module docs).
pub(crate) fn run<S>(proc: Arc<Process>, body: Body<S>) -> Task<S> {
    Task {
        proc,
        body: Some(body),
        timer: None,
        timer_polled: false,
        waker: None,
    }
}

/// The future of a process's task: written out by hand, so that it holds only these
/// fields across waits (the `async fn` it replaced kept 184 bytes, a tokio `Notified`
/// and `select!` state included, which put every task in tokio's 384-byte cell; this one
/// fits the 256-byte cell). A gen_server's loop is kept here too ([`Body::Inline`]): its
/// task's cell is 384 bytes, and it has no box of its own.
pub(crate) struct Task<S = NoInline> {
    proc: Arc<Process>,
    /// `None` once the process has exited.
    body: Option<Body<S>>,
    /// Armed at the earliest deadline seen and kept across waits: a later deadline does not
    /// re-register it (an early expiry only re-polls the body, which re-arms it).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The timer was polled since it was last armed: it holds the task's waker (which
    /// never changes) until it fires, so later waits only ask whether it has fired. A poll
    /// registers the waker with atomics and reads the coop budget, ~80 instructions a wait
    /// (callgrind, issue 16): a call with the default 5 s timeout pays it once per arming.
    timer_polled: bool,
    /// The task's waker while it runs (see [`Process::unpark`]), so that waiting again
    /// stores it without a clone.
    waker: Option<std::task::Waker>,
}

impl<S: Future<Output = Outcome> + Unpin> Future for Task<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(());
        };
        let proc = &this.proc;
        // Running: a wake from here on leaves the owed mark, which `park` finds.
        proc.unpark(&mut this.waker);
        let reason = loop {
            {
                let mut g = proc.inner.lock();
                if let Some(r) = g.take_pending_exit() {
                    break r;
                }
                g.wake_at = u64::MAX;
            }
            match body.poll(&process_waker(proc)) {
                Step::Pending => {}
                Step::Done(Outcome::Value(_)) => break ExitReason::Normal,
                Step::Done(Outcome::Exit(r)) => break r,
                Step::Panicked(m) => break ExitReason::Panic(m),
                Step::Done(Outcome::Continue {
                    module,
                    function,
                    arg,
                }) => match proc.node.start_body(proc, &module, &function, &arg) {
                    Ok(next) => {
                        let old = std::mem::replace(body, next.widen());
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
            if proc.park(&mut this.waker, cx.waker()) {
                continue;
            }
            if wake_at == u64::MAX {
                if this.timer.as_ref().is_some_and(|t| t.is_elapsed()) {
                    this.timer = None;
                }
                return Poll::Pending;
            }
            let at = proc.node.instant_at(wake_at);
            let timer = match &mut this.timer {
                Some(t) if t.deadline() <= at && !t.is_elapsed() => t,
                Some(t) => {
                    t.as_mut().reset(at);
                    this.timer_polled = false;
                    t
                }
                None => {
                    this.timer_polled = false;
                    this.timer.insert(Box::pin(tokio::time::sleep_until(at)))
                }
            };
            let fired = if this.timer_polled {
                timer.is_elapsed()
            } else {
                this.timer_polled = true;
                timer.as_mut().poll(cx).is_ready()
            };
            if !fired {
                return Poll::Pending;
            }
            // The deadline passed: poll the body again, which sees it.
            proc.unpark(&mut this.waker);
        };
        this.timer = None;
        let body = this.body.take().expect("present until the exit");
        if let Some(v) = body.version().cloned() {
            drop(body);
            proc.unbind(v);
        } else {
            drop(body);
        }
        proc.finish(reason);
        Poll::Ready(())
    }
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
            bytes += ib.capacity_bytes() + ib.iter().map(payload).sum::<usize>();
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

#[cfg(test)]
mod size_guard {
    /// An idle process must stay well under 1 KB: the process struct (plus the `Arc`
    /// header) fits the allocator's 160-byte class (see also the gen_server budget test).
    #[test]
    fn process_struct_stays_small() {
        let p = std::mem::size_of::<super::Process>();
        assert!(p + 16 <= 160, "Process is {p} bytes");
    }
}

//! The gen_server loop (spec §2.3) and the sys protocol (§3), on the node's side.
//!
//! A server is a native process whose body is a [`ServerBody`]. Each event (call, cast,
//! info, timeout, continue) is dispatched to the **current** version of the module: if
//! the state was made by another version, that version encodes it and the current
//! version's `code_change` builds the new state first. While a callback waits the process
//! is bound to the version running it (a purge of that version kills it, as in Erlang);
//! a callback that finishes at once, and an idle server, are bound to nothing, so loads
//! and purges never kill an idle server.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use hotswap::gen_server::{wire, Action};
use hotswap::sys::{Request, ServerStatus, Statistics, E_FAILED, E_REFUSED};
use hotswap::{codec, ExitReason, Outcome, Pid};
use hotswap_abi as abi;

use super::state::{Slot, StateCell, StatePtr};
use crate::code::LiveState;
use crate::code::Version;
use crate::process::{Envelope, ModuleFuture, Payload, Process, Step};

/// How a server starts.
pub(crate) struct Start {
    pub(crate) version: Arc<Version>,
    pub(crate) module: String,
    pub(crate) arg: Vec<u8>,
    /// Who waits for the result of `init`, and the tag to answer with.
    pub(crate) starter: u64,
    pub(crate) tag: u64,
    /// The `start_link` caller.
    pub(crate) parent: Option<u64>,
}

/// What a server knows between events.
pub(crate) struct Server {
    proc: Arc<Process>,
    module: String,
    parent: Option<u64>,
    cell: Arc<StateCell>,
    /// The current version as of an export-table generation.
    cached: Option<(&'static abi::ExportSlot, u64, Weak<Version>)>,
    suspended: bool,
    messages_in: u64,
    messages_out: u64,
    /// `sys:statistics`: when switched on, and the counters then.
    stats: Option<Box<(u64, u64, u64)>>,
    /// The call being handled (the caller and its tag; during `init`, the starter): if
    /// the server is killed in the middle of it, the caller gets the exit reason (see
    /// `Drop`); when a waiting callback finishes, it says whether that was a call.
    in_call: Option<(u64, u64)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cell.abandoned();
        if let Some(c) = self.in_call.take() {
            // Dropped mid-callback (killed): the exit notifies everyone listed here.
            self.proc.inner.lock().rel().callers.push(c);
        }
    }
}

/// At most this many queued casts and plain messages go to the module in one callback.
/// A batch runs on the version that was current when it started (as a loop of local
/// calls would): a load in the middle of one takes effect at the next batch.
const BATCH: usize = 64;

/// Call the module's `handle` for one event.
fn handle_now(
    proc: *mut abi::ProcHandle,
    obj: *mut abi::StateObj,
    v: &Version,
    kind: u32,
    from: u64,
    reference: u64,
    data: &[u8],
) -> Started {
    // Sized for a usual result (tag, action, a small reply): one allocation, no growth.
    let mut out = Vec::with_capacity(32);
    let mut fut: *mut abi::FutureObj = std::ptr::null_mut();
    // SAFETY: `handle` belongs to `v`, which made `obj`; the state is marked busy so
    // nothing else touches it until the callback is done; `data` is valid for the call
    // (the shim decodes it before returning); `out` and `fut` outlive it.
    let st = unsafe {
        (v.sv().handle)(
            proc,
            obj,
            kind,
            from,
            reference,
            data.as_ptr(),
            data.len(),
            &mut out as *mut Vec<u8> as *mut std::ffi::c_void,
            hotswap::private::write_vec,
            &mut fut,
        )
    };
    match st {
        abi::STATUS_READY => Started::Done(out),
        abi::STATUS_PENDING if !fut.is_null() => Started::Waits(fut),
        _ => Started::Panicked(String::from_utf8_lossy(&out).into_owned()),
    }
}

/// A callback, begun.
enum Begun {
    /// It finished at once.
    Done(Result<Vec<u8>, ExitReason>),
    /// It waits.
    Waits(ModuleFuture),
}

/// What calling into the module for a callback gave.
enum Started {
    /// It finished at once: its outcome bytes.
    Done(Vec<u8>),
    /// It panicked at once.
    Panicked(String),
    /// It waits: its future.
    Waits(*mut abi::FutureObj),
}

/// What a callback's result asks for.
enum Flow {
    Go(Option<Action>),
    /// Terminate with the reason; then send the reply, if any (`to`, tag, payload).
    Crash(ExitReason, Option<(u64, u64, Payload)>),
}

enum Next {
    Go(Option<Action>),
    Exit(ExitReason),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Run a module future to completion.
async fn drive(mut f: ModuleFuture) -> Step {
    poll_fn(|_| match f.poll() {
        Step::Pending => Poll::Pending,
        s => Poll::Ready(s),
    })
    .await
}

fn exit_outcome(reason: ExitReason) -> Outcome {
    match reason {
        ExitReason::Normal => Outcome::Value(Vec::new()),
        r => Outcome::Exit(r),
    }
}

type SlowFuture = Pin<Box<dyn Future<Output = (Server, Next)> + Send>>;
type InitFuture =
    Pin<Box<dyn Future<Output = (Server, Result<Option<Action>, ExitReason>)> + Send>>;

/// Where the loop is.
enum Phase {
    /// Running `init` (boxed, once).
    Init(InitFuture),
    /// Deciding what to do next (apply the pending action, compute the deadline).
    Run,
    /// Waiting for the next event until `deadline`.
    Wait,
    /// A callback that waits (for a call, `Server::in_call` names the caller).
    Callback(ModuleFuture),
    /// Anything rare (sys, terminate, continue, timeout, runs of casts), boxed: it owns the
    /// server until it is done.
    Slow(SlowFuture),
}

/// The body of a gen_server process: a hand-written loop (spec §2.3), so that an idle
/// server costs only its fields (an `async fn` loop kept ~800 B for its deepest paths).
pub(crate) struct ServerBody {
    // Declared first: a callback's future borrows the state, so it is dropped before it.
    phase: Phase,
    server: Option<Server>,
    action: Option<Action>,
    timeout: Option<Duration>,
    /// Of the current wait (node clock); `u64::MAX`: none.
    deadline: u64,
}

impl ServerBody {
    /// A new server process's body.
    pub(crate) fn new(proc: Arc<Process>, start: Start) -> ServerBody {
        let cell = StateCell::new(proc.pid.0);
        // Listed by its version from the start (empty until init returns), so that a
        // release upgrade closing its spawn gate sees the servers still in init and
        // suspends them once init is done.
        start
            .version
            .states
            .lock()
            .insert(proc.pid.0, Arc::downgrade(&cell) as Weak<dyn LiveState>);
        let s = Server {
            cell,
            proc,
            module: start.module.clone(),
            parent: start.parent,
            cached: None,
            suspended: false,
            messages_in: 0,
            messages_out: 0,
            stats: None,
            // The starter waits like a caller: if the server is killed before or during
            // init, it gets the reason (see `Drop`).
            in_call: Some((start.starter, start.tag)),
        };
        ServerBody {
            phase: Phase::Init(Box::pin(async move {
                let mut s = s;
                let r = s.init(start).await;
                (s, r)
            })),
            server: None,
            action: None,
            timeout: None,
            deadline: u64::MAX,
        }
    }

    fn slow(&mut self, f: impl FnOnce(Server) -> SlowFuture) {
        let s = self
            .server
            .take()
            .expect("the server is here between phases");
        self.phase = Phase::Slow(f(s));
    }

    /// Carry on after a callback: continue with its action, or exit (boxed).
    fn follow(&mut self, flow: Flow) {
        match flow {
            Flow::Go(a) => {
                self.action = a;
                self.phase = Phase::Run;
            }
            crash => self.slow(|mut s| {
                Box::pin(async move {
                    let n = s.follow(crash).await;
                    (s, n)
                })
            }),
        }
    }

    /// Handle one event taken from the mailbox.
    fn event(&mut self, e: Envelope) {
        let s = self.server.as_mut().expect("server present");
        match e.kind {
            abi::MSG_SYSTEM => self.slow(|mut s| {
                Box::pin(async move {
                    let n = match s.system(e).await {
                        Some(r) => Next::Exit(r),
                        None => Next::Go(None),
                    };
                    (s, n)
                })
            }),
            abi::MSG_EXIT if Some(e.from) == s.parent => self.slow(|mut s| {
                Box::pin(async move {
                    let r = s.terminate(ExitReason::decode(&e.data)).await;
                    (s, Next::Exit(r))
                })
            }),
            abi::MSG_REPLY => self.phase = Phase::Run,
            abi::MSG_CALL => {
                self.timeout = None;
                s.messages_in += 1;
                s.in_call = Some((e.from, e.reference));
                let r = match s.begin_event(abi::MSG_CALL, e.from, e.reference, &e.data) {
                    Ok(Begun::Waits(fut)) => {
                        self.phase = Phase::Callback(fut);
                        return;
                    }
                    Ok(Begun::Done(r)) => r,
                    Err(r) => Err(r),
                };
                s.in_call = None;
                let flow = s.after_call(e.from, e.reference, r);
                self.follow(flow);
            }
            kind => {
                self.timeout = None;
                let more = if kind == abi::MSG_CAST || kind == abi::MSG_USER {
                    // Casts and plain messages queued right behind this one go to the
                    // module together: one callback for the run.
                    s.take_run()
                } else {
                    Vec::new()
                };
                if !more.is_empty() {
                    let mut batch = Vec::with_capacity(more.len() + 1);
                    batch.push(e);
                    batch.extend(more);
                    return self.slow(|mut s| {
                        Box::pin(async move {
                            let r = s.dispatch_batch(batch).await;
                            let n = s.follow(Server::after_cast(r)).await;
                            (s, n)
                        })
                    });
                }
                s.messages_in += 1;
                let r = match s.begin_event(kind, e.from, e.reference, &e.data) {
                    Ok(Begun::Waits(fut)) => {
                        self.phase = Phase::Callback(fut);
                        return;
                    }
                    Ok(Begun::Done(r)) => r,
                    Err(r) => Err(r),
                };
                self.follow(Server::after_cast(r));
            }
        }
    }

    /// A callback event that is not a message (continue, timeout): boxed, rare.
    fn synthetic(&mut self, kind: u32, data: Vec<u8>) {
        self.slow(|mut s| {
            Box::pin(async move {
                let r = s.dispatch(kind, 0, 0, &data).await;
                let n = s.follow(Server::after_cast(r)).await;
                (s, n)
            })
        });
    }
}

impl Future for ServerBody {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Outcome> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Init(f) => match f.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready((s, r)) => {
                        this.server = Some(s);
                        match r {
                            Ok(a) => {
                                this.action = a;
                                this.phase = Phase::Run;
                            }
                            Err(reason) => return Poll::Ready(exit_outcome(reason)),
                        }
                    }
                },
                Phase::Slow(f) => match f.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready((s, n)) => {
                        this.server = Some(s);
                        match n {
                            Next::Go(a) => {
                                this.action = a;
                                this.phase = Phase::Run;
                            }
                            Next::Exit(r) => return Poll::Ready(exit_outcome(r)),
                        }
                    }
                },
                Phase::Callback(fut) => {
                    let step = fut.poll();
                    if let Step::Pending = step {
                        return Poll::Pending;
                    }
                    let Phase::Callback(fut) = std::mem::replace(&mut this.phase, Phase::Run)
                    else {
                        unreachable!("matched above")
                    };
                    let v = fut.version.clone();
                    drop(fut);
                    let s = this.server.as_mut().expect("server present");
                    let r = s.end(v, step);
                    let flow = match s.in_call.take() {
                        Some((from, tag)) => s.after_call(from, tag, r),
                        None => Server::after_cast(r),
                    };
                    this.follow(flow);
                }
                Phase::Run => {
                    match this.action.take() {
                        Some(Action::Continue(c)) => {
                            this.synthetic(abi::HANDLE_CONTINUE, c);
                            continue;
                        }
                        Some(Action::Timeout(d)) => this.timeout = Some(d),
                        Some(Action::Hibernate) => {
                            let s = this.server.as_ref().expect("server present");
                            s.proc.inner.lock().mailbox.shrink_to_fit();
                        }
                        None => {}
                    }
                    let s = this.server.as_ref().expect("server present");
                    // Restarted from zero after every event, system messages included
                    // (§2.3).
                    this.deadline = match (this.timeout, s.suspended) {
                        (Some(d), false) => s
                            .proc
                            .node
                            .now_ns()
                            .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
                        _ => u64::MAX,
                    };
                    this.phase = Phase::Wait;
                }
                Phase::Wait => {
                    let s = this.server.as_ref().expect("server present");
                    match s.poll_next((this.deadline != u64::MAX).then_some(this.deadline)) {
                        None => return Poll::Pending,
                        Some(None) => {
                            this.timeout = None;
                            this.synthetic(abi::HANDLE_TIMEOUT, Vec::new());
                        }
                        Some(Some(e)) => this.event(e),
                    }
                }
            }
        }
    }
}

impl Server {
    fn reply(&self, to: u64, tag: u64, payload: Payload) {
        if tag != 0 {
            self.proc
                .node
                .post(self.proc.pid.0, to, abi::MSG_REPLY, tag, payload);
        }
    }

    fn sys_ok(&self, e: &Envelope, value: &[u8]) {
        let mut d = Vec::with_capacity(value.len() + 1);
        d.push(wire::R_VALUE);
        d.extend_from_slice(value);
        self.reply(e.from, e.reference, Payload::from_vec(d));
    }

    fn sys_err(&self, e: &Envelope, code: u8, msg: &str) {
        let mut d = vec![wire::R_SYS_ERROR, code];
        d.extend_from_slice(msg.as_bytes());
        self.reply(e.from, e.reference, Payload::from_vec(d));
    }

    async fn init(&mut self, start: Start) -> Result<Option<Action>, ExitReason> {
        let v = start.version;
        let arg = start.arg;
        self.proc.bind(&v);
        let fut = {
            let _in = v.enter();
            // SAFETY: `init` belongs to `v`, mapped while we hold it; the handle is this
            // live process; the argument is valid for the call.
            let f = unsafe { (v.sv().init)(self.proc.as_handle(), arg.as_ptr(), arg.len()) };
            ModuleFuture::from_raw(&v, f)
        };
        let step = drive(fut).await;
        self.in_call = None;
        self.proc.unbind(v.clone());
        let ack =
            |payload: Vec<u8>| self.reply(start.starter, start.tag, Payload::from_vec(payload));
        // A start that leaves no server releases the name before the starter hears of it,
        // so the starter finds the name free (as OTP's `gen` does).
        let release_name = || {
            let name = self.proc.inner.lock().name().map(str::to_string);
            if let Some(n) = name {
                self.proc.node.unregister(&n);
            }
        };
        // A start that leaves no server leaves no entry in its version's list.
        let unlist = || {
            v.states.lock().remove(&self.proc.pid.0);
        };
        let fail = |r: ExitReason| {
            unlist();
            release_name();
            let mut d = vec![wire::R_EXIT];
            r.encode_into(&mut d);
            ack(d);
            Err(r)
        };
        match step {
            Step::Done(Outcome::Value(b)) => match wire::get_inited(&b) {
                Some(wire::Inited::Ok(ptr, action)) => {
                    let mut g = self.cell.slot.lock();
                    self.cell
                        .set_live(&mut g, &v, StatePtr(ptr as usize as *mut abi::StateObj));
                    drop(g);
                    ack(vec![wire::R_VALUE]);
                    Ok(action)
                }
                Some(wire::Inited::Ignore) => {
                    unlist();
                    release_name();
                    ack(vec![wire::R_IGNORE]);
                    Err(ExitReason::Normal)
                }
                Some(wire::Inited::Stop(r)) => fail(r),
                None => fail(ExitReason::BadArg("malformed init result".into())),
            },
            Step::Done(Outcome::Exit(r)) => fail(r),
            Step::Done(Outcome::Continue { .. }) => {
                fail(ExitReason::BadArg("init returned a tail call".into()))
            }
            Step::Panicked(m) => fail(ExitReason::Panic(m)),
            Step::Pending => unreachable!("drive runs to completion"),
        }
    }

    /// The current version of the module, re-resolved only when it changed.
    fn current(&mut self) -> Result<Arc<Version>, ExitReason> {
        if let Some((slot, generation, v)) = &self.cached {
            if slot.generation.load(std::sync::atomic::Ordering::SeqCst) == *generation {
                if let Some(v) = v.upgrade() {
                    return Ok(v);
                }
            }
        }
        let (slot, generation, v) = self.proc.node.code.current_at(&self.module);
        let v = v.ok_or_else(|| {
            ExitReason::Undef(format!(
                "module `{}` is not loaded (it was deleted and purged)",
                self.module
            ))
        })?;
        if v.server.is_none() {
            return Err(ExitReason::Undef(format!(
                "version {} of `{}` is not a gen_server",
                v.vsn, self.module
            )));
        }
        self.cached = Some((slot, generation, Arc::downgrade(&v)));
        Ok(v)
    }

    /// Make the state an object of `v`, migrating it with `v`'s `code_change` if another
    /// version made it. On failure the old state stays.
    fn migrate_to(&self, v: &Arc<Version>) -> Result<(), ExitReason> {
        let mut g = self.cell.slot.lock();
        let (old_vsn, bytes) = match &*g {
            Slot::Live { version, .. } if Arc::ptr_eq(version, v) => return Ok(()),
            Slot::Live { version, obj, .. } => {
                let b = version.export_state(obj).map_err(|e| {
                    ExitReason::User(format!(
                        "version {} of `{}` could not encode its state for the upgrade: {e}",
                        version.vsn, self.module
                    ))
                })?;
                (version.vsn.clone(), b)
            }
            Slot::Bytes(enc) => (enc.vsn.clone(), enc.bytes.clone()),
            Slot::Lost(r) => return Err(ExitReason::User(r.clone())),
            Slot::Empty => return Err(ExitReason::User("the server has no state".into())),
        };
        let new = v
            .code_change(self.proc.as_handle(), &old_vsn, &bytes, None)
            .map_err(|e| {
                ExitReason::User(format!(
                    "code_change of `{}` from version {old_vsn} to {} failed: {e}",
                    self.module, v.vsn
                ))
            })?;
        if let Slot::Live { version, obj, .. } = self.cell.take(&mut g) {
            version.drop_state(obj);
        }
        self.cell.set_live(&mut g, v, new);
        Ok(())
    }

    /// Borrow the live state for a callback of its version.
    fn borrow(&self) -> Option<(Arc<Version>, *mut abi::StateObj)> {
        match &mut *self.cell.slot.lock() {
            Slot::Live {
                version, obj, busy, ..
            } => {
                *busy = true;
                Some((version.clone(), obj.0))
            }
            _ => None,
        }
    }

    fn give_back(&self) {
        let mut g = self.cell.slot.lock();
        if let Slot::Live { busy, .. } = &mut *g {
            *busy = false;
        }
        // A release check waiting for a copy of this state gets it now, before the next
        // event can change it.
        self.cell.given_back(&g);
    }

    /// Dispatch one event to the current version: the callback's encoded result.
    async fn dispatch(
        &mut self,
        kind: u32,
        from: u64,
        reference: u64,
        data: &[u8],
    ) -> Result<Vec<u8>, ExitReason> {
        self.dispatch_with(|proc, obj, v| handle_now(proc, obj, v, kind, from, reference, data))
            .await
    }

    /// Dispatch a run of queued casts and plain messages as one callback; the result of
    /// the last one handled. Those the module did not reach (it stopped after a result
    /// that was not a plain noreply) go back to the front of the mailbox.
    async fn dispatch_batch(&mut self, batch: Vec<Envelope>) -> Result<Vec<u8>, ExitReason> {
        let n = batch.len();
        let r = self
            .dispatch_with(|proc, obj, v| {
                let views: Vec<abi::MsgView> = batch
                    .iter()
                    .map(|e| abi::MsgView {
                        kind: e.kind,
                        from: e.from,
                        reference: e.reference,
                        data: abi::Bytes::new(&e.data),
                    })
                    .collect();
                // SAFETY: as in `dispatch`; the views point into `batch`, alive during
                // the call (the shim decodes every message before returning).
                Started::Waits(unsafe {
                    (v.sv().handle_batch)(proc, obj, views.as_ptr(), views.len())
                })
            })
            .await?;
        let done = r
            .get(..4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .filter(|d| (1..=n).contains(d))
            .ok_or_else(|| ExitReason::BadArg("malformed batch result".into()))?;
        self.messages_in += done as u64;
        if done < n {
            let mut g = self.proc.inner.lock();
            g.received -= (n - done) as u64;
            for e in batch.into_iter().skip(done).rev() {
                g.mailbox.push_front(e);
            }
        }
        Ok(r[4..].to_vec())
    }

    /// Run a callback of the current version on the state (migrating it first if another
    /// version made it): `start` calls into the module. A callback that finishes at once
    /// never binds the process; one that waits binds it to the version until it is done
    /// (a purge of that version kills it, as in Erlang).
    async fn dispatch_with(
        &mut self,
        start: impl FnOnce(*mut abi::ProcHandle, *mut abi::StateObj, &Version) -> Started,
    ) -> Result<Vec<u8>, ExitReason> {
        match self.begin(start)? {
            Begun::Done(r) => r,
            Begun::Waits(f) => {
                let v = f.version.clone();
                let step = drive(f).await;
                self.end(v, step)
            }
        }
    }

    /// The synchronous part of [`Server::dispatch_with`]: the callback finished at once,
    /// or here is its future (the process is bound to its version until [`Server::end`]).
    fn begin(
        &mut self,
        start: impl FnOnce(*mut abi::ProcHandle, *mut abi::StateObj, &Version) -> Started,
    ) -> Result<Begun, ExitReason> {
        let v = self.current()?;
        // Fast path: the state is already the current version's (one lock).
        let fast = match &mut *self.cell.slot.lock() {
            Slot::Live {
                version, obj, busy, ..
            } if Arc::ptr_eq(version, &v) => {
                *busy = true;
                Some(obj.0)
            }
            _ => None,
        };
        let obj = match fast {
            Some(o) => o,
            None => {
                self.migrate_to(&v)?;
                self.borrow()
                    .map(|(_, o)| o)
                    .ok_or_else(|| ExitReason::User("the server has no state".into()))?
            }
        };
        let started = {
            let _in = v.enter();
            start(self.proc.as_handle(), obj, &v)
        };
        Ok(match started {
            Started::Done(out) => {
                self.give_back();
                Begun::Done(match Outcome::decode_vec(out) {
                    Some(Outcome::Value(b)) => Ok(b),
                    Some(Outcome::Exit(r)) => Err(r),
                    _ => Err(ExitReason::BadArg("malformed callback result".into())),
                })
            }
            Started::Panicked(m) => {
                self.give_back();
                Begun::Done(Err(ExitReason::Panic(m)))
            }
            Started::Waits(f) => {
                self.proc.bind(&v);
                Begun::Waits(ModuleFuture::from_raw(&v, f))
            }
        })
    }

    /// A callback that waited has finished (its future is dropped): its result.
    fn end(&mut self, v: Arc<Version>, step: Step) -> Result<Vec<u8>, ExitReason> {
        self.give_back();
        self.proc.unbind(v);
        match step {
            Step::Done(Outcome::Value(b)) => Ok(b),
            Step::Done(Outcome::Exit(r)) => Err(r),
            Step::Done(Outcome::Continue { .. }) => {
                Err(ExitReason::BadArg("a callback returned a tail call".into()))
            }
            Step::Panicked(m) => Err(ExitReason::Panic(m)),
            Step::Pending => unreachable!("only finished callbacks end"),
        }
    }

    /// Start a callback for one event: see [`Server::begin`].
    fn begin_event(
        &mut self,
        kind: u32,
        from: u64,
        reference: u64,
        data: &[u8],
    ) -> Result<Begun, ExitReason> {
        self.begin(|proc, obj, v| handle_now(proc, obj, v, kind, from, reference, data))
    }

    /// `terminate(reason)` on the state's own version; the reason the server exits with
    /// (a panic in `terminate` replaces it).
    async fn terminate(&mut self, reason: ExitReason) -> ExitReason {
        let rb = reason.encode();
        let Some(fut) = self.borrow().map(|(v, obj)| {
            self.proc.bind(&v);
            let _in = v.enter();
            // SAFETY: as in `dispatch`.
            let f =
                unsafe { (v.sv().terminate)(self.proc.as_handle(), obj, rb.as_ptr(), rb.len()) };
            ModuleFuture::from_raw(&v, f)
        }) else {
            return reason;
        };
        let v = fut.version.clone();
        let step = drive(fut).await;
        match self.end(v, step) {
            Ok(_) => reason,
            Err(r) => r,
        }
    }

    /// A callback crashed (or returned stop): run `terminate`, then exit; for a stop with
    /// a reply, reply after `terminate` (even if it panicked).
    async fn crash(
        &mut self,
        reason: ExitReason,
        reply: Option<(u64, u64, Payload)>,
    ) -> ExitReason {
        if !reason.is_normalish() {
            tracing::error!(pid = %self.proc.pid, module = %self.module, %reason, "gen_server terminating");
        }
        let r = self.terminate(reason).await;
        if let Some((to, tag, p)) = reply {
            self.messages_out += 1;
            self.reply(to, tag, p);
        }
        r
    }

    /// What a call's callback result means (no awaiting here: the rare exits are run by
    /// the caller, boxed, so the loop's future stays small).
    fn after_call(&mut self, from: u64, tag: u64, res: Result<Vec<u8>, ExitReason>) -> Flow {
        let b = match res {
            Ok(b) => b,
            Err(r) => {
                self.wait_for_exit(from, tag);
                return Flow::Crash(r, None);
            }
        };
        match wire::get_handled(&b) {
            Some(wire::Handled::Reply(a, r)) => {
                self.messages_out += 1;
                // The module wrote [H_REPLY, action, reply]; with no action the tail
                // [A_NONE = R_VALUE, reply] is already the reply payload.
                if a.is_none() && b.len() >= 2 && b[1] == wire::R_VALUE {
                    self.reply(from, tag, Payload::from_slice(&b[1..]));
                } else {
                    let mut d = Vec::with_capacity(r.len() + 1);
                    d.push(wire::R_VALUE);
                    d.extend_from_slice(r);
                    self.reply(from, tag, Payload::from_vec(d));
                }
                Flow::Go(a)
            }
            Some(wire::Handled::NoReply(a)) => {
                self.wait_for_exit(from, tag);
                Flow::Go(a)
            }
            Some(wire::Handled::Stop(r)) => {
                self.wait_for_exit(from, tag);
                Flow::Crash(r, None)
            }
            Some(wire::Handled::StopReply(r, reply)) => {
                let mut d = Vec::with_capacity(reply.len() + 1);
                d.push(wire::R_VALUE);
                d.extend_from_slice(reply);
                Flow::Crash(r, Some((from, tag, Payload::from_vec(d))))
            }
            None => {
                self.wait_for_exit(from, tag);
                Flow::Crash(ExitReason::BadArg("malformed callback result".into()), None)
            }
        }
    }

    /// A call that is not answered now: if the server exits first, the caller gets the
    /// exit reason.
    ///
    /// A call deferred and then answered by *another* process stays listed (the server
    /// cannot see that reply); the list is pruned of callers that stopped waiting whenever
    /// its length reaches a power of two from 64 on, so it stays bounded.
    fn wait_for_exit(&self, from: u64, tag: u64) {
        let n = {
            let mut g = self.proc.inner.lock();
            let c = &mut g.rel().callers;
            c.push((from, tag));
            c.len()
        };
        if n >= 64 && n.is_power_of_two() {
            let listed = self.proc.inner.lock().rel().callers.clone();
            // One process lock at a time: look at each caller, then prune ours.
            let gone: crate::util::FxSet<(u64, u64)> = listed
                .into_iter()
                .filter(|(pid, tag)| {
                    !self
                        .proc
                        .node
                        .table
                        .with(*pid, |p| {
                            p.inner
                                .lock()
                                .rel
                                .as_ref()
                                .is_some_and(|r| r.aliases.contains(tag))
                        })
                        .unwrap_or(false)
                })
                .collect();
            if !gone.is_empty() {
                let mut g = self.proc.inner.lock();
                g.rel().callers.retain(|c| !gone.contains(c));
            }
        }
    }

    fn after_cast(res: Result<Vec<u8>, ExitReason>) -> Flow {
        match res.map(|b| match wire::get_handled(&b) {
            Some(wire::Handled::NoReply(a)) => Ok(a),
            Some(wire::Handled::Stop(r)) => Err(r),
            _ => Err(ExitReason::BadArg("malformed callback result".into())),
        }) {
            Ok(Ok(a)) => Flow::Go(a),
            Ok(Err(r)) | Err(r) => Flow::Crash(r, None),
        }
    }

    /// Carry out a flow: `Go` continues, a crash runs `terminate` (boxed: rare, and it
    /// would otherwise make every idle server's future as large as its deepest path).
    async fn follow(&mut self, f: Flow) -> Next {
        match f {
            Flow::Go(a) => Next::Go(a),
            Flow::Crash(r, reply) => Next::Exit(self.crash(r, reply).await),
        }
    }

    /// The casts and plain messages at the front of the mailbox (at most `BATCH - 1`).
    fn take_run(&self) -> Vec<Envelope> {
        let mut out = Vec::new();
        let mut g = self.proc.inner.lock();
        while out.len() < BATCH - 1 {
            match self.proc.take_front_if(&mut g, |e| {
                e.kind == abi::MSG_CAST || e.kind == abi::MSG_USER
            }) {
                Some(e) => out.push(e),
                None => break,
            }
        }
        g.received += out.len() as u64;
        out
    }

    /// Take the next event: `None` if there is none yet (the process is woken when one
    /// arrives or `deadline` passes), `Some(None)` when `deadline` (node clock) has passed.
    fn poll_next(&self, deadline: Option<u64>) -> Option<Option<Envelope>> {
        let parent = self.parent;
        let mut g = self.proc.inner.lock();
        if g.held {
            // Held in place by a release upgrade: nothing is taken until it is released
            // (which wakes the process).
            g.idle = true;
            return None;
        }
        let got = if self.suspended {
            self.proc.take_first(&mut g, |e| {
                e.kind == abi::MSG_SYSTEM || (e.kind == abi::MSG_EXIT && Some(e.from) == parent)
            })
        } else {
            self.proc.take_first(&mut g, |_| true)
        };
        if let Some(e) = got {
            g.received += 1;
            g.idle = false;
            return Some(Some(e));
        }
        if let Some(d) = deadline {
            if self.proc.node.now_ns() >= d {
                g.idle = false;
                return Some(None);
            }
            g.wake_at = g.wake_at.min(d);
        }
        g.idle = true;
        None
    }

    /// Export the state as bytes (whatever version holds it).
    fn state_bytes(&self) -> Result<(Option<String>, Vec<u8>), String> {
        match &*self.cell.slot.lock() {
            Slot::Live { version, obj, .. } => version
                .export_state(obj)
                .map(|b| (Some(version.vsn.clone()), b)),
            Slot::Bytes(enc) => Ok((None, enc.bytes.clone())),
            Slot::Lost(r) => Err(r.clone()),
            Slot::Empty => Err("the server has no state".into()),
        }
    }

    fn status(&self) -> ServerStatus {
        let (version, state) = {
            let g = self.cell.slot.lock();
            match &*g {
                Slot::Live { version, obj, .. } => {
                    let text = version.format_status(obj).unwrap_or_else(|| {
                        match version.export_state(obj) {
                            Ok(b) => state_json(&b),
                            Err(e) => format!("<state could not be encoded: {e}>"),
                        }
                    });
                    (Some(version.vsn.clone()), text)
                }
                Slot::Bytes(enc) => (
                    None,
                    format!(
                        "{} (encoded by version {}, migrated at the next message)",
                        state_json(&enc.bytes),
                        enc.vsn
                    ),
                ),
                Slot::Lost(r) => (None, format!("<lost: {r}>")),
                Slot::Empty => (None, "<none>".into()),
            }
        };
        let (name, queue) = {
            let g = self.proc.inner.lock();
            (g.name().map(str::to_string), self.proc.queue_len(&g))
        };
        ServerStatus {
            pid: self.proc.pid,
            name,
            module: self.module.clone(),
            version,
            suspended: self.suspended,
            parent: self.parent.map(Pid),
            state,
            message_queue_len: queue,
            messages_in: self.messages_in,
            messages_out: self.messages_out,
        }
    }

    /// Handle a system request; `Some(reason)` if the server must exit.
    async fn system(&mut self, e: Envelope) -> Option<ExitReason> {
        let req = match codec::decode::<Request>(&e.data) {
            Ok(r) => r,
            Err(err) => {
                self.sys_err(&e, E_REFUSED, &format!("unknown_system_msg: {err}"));
                return None;
            }
        };
        match req {
            Request::Suspend => {
                self.suspended = true;
                self.sys_ok(&e, &[]);
            }
            Request::Resume => {
                self.suspended = false;
                self.sys_ok(&e, &[]);
            }
            Request::GetState => match self.state_bytes() {
                Ok((_, b)) => self.sys_ok(&e, &b),
                Err(m) => self.sys_err(&e, E_FAILED, &m),
            },
            Request::GetStatus => {
                let st = codec::encode(&self.status());
                self.sys_ok(&e, &st);
            }
            Request::Statistics(on) => {
                match on {
                    Some(true) => {
                        self.stats = Some(Box::new((now_ms(), self.messages_in, self.messages_out)))
                    }
                    Some(false) => self.stats = None,
                    None => {}
                }
                let st = self.stats.as_deref().map(|&(t, i, o)| Statistics {
                    start_time_ms: t,
                    current_time_ms: now_ms(),
                    messages_in: self.messages_in - i,
                    messages_out: self.messages_out - o,
                });
                self.sys_ok(&e, &codec::encode(&st));
            }
            Request::ReplaceBegin => self.replace_state(e).await,
            Request::ReplaceCommit(_) | Request::ReplaceCancel => {
                self.sys_err(
                    &e,
                    E_REFUSED,
                    "unknown_system_msg: no replace_state in progress",
                );
            }
            Request::ChangeCode {
                module,
                old_vsn,
                extra,
            } => self.change_code(&e, &module, &old_vsn, extra.as_deref()),
            Request::Terminate(r) => {
                self.sys_ok(&e, &[]);
                let reason = ExitReason::decode(&r);
                return Some(self.terminate(reason).await);
            }
        }
        None
    }

    fn change_code(&mut self, e: &Envelope, module: &str, old_vsn: &str, extra: Option<&[u8]>) {
        if !self.suspended {
            return self.sys_err(
                e,
                E_REFUSED,
                "unknown_system_msg: change_code is only accepted while the process is suspended (sys suspend it first)",
            );
        }
        if module != self.module {
            return self.sys_err(
                e,
                E_REFUSED,
                &format!("this process runs module `{}`, not `{module}`", self.module),
            );
        }
        let v = match self.current() {
            Ok(v) => v,
            Err(r) => return self.sys_err(e, E_FAILED, &r.to_string()),
        };
        let mut g = self.cell.slot.lock();
        let bytes = match &*g {
            Slot::Live { version, obj, .. } => version.export_state(obj),
            Slot::Bytes(enc) => Ok(enc.bytes.clone()),
            Slot::Lost(r) => Err(r.clone()),
            Slot::Empty => Err("the server has no state".into()),
        };
        let res = bytes.and_then(|b| v.code_change(self.proc.as_handle(), old_vsn, &b, extra));
        match res {
            Ok(new) => {
                if let Slot::Live { version, obj, .. } = self.cell.take(&mut g) {
                    version.drop_state(obj);
                }
                self.cell.set_live(&mut g, &v, new);
                drop(g);
                self.sys_ok(e, &[]);
            }
            Err(m) => {
                drop(g);
                self.sys_err(
                    e,
                    E_FAILED,
                    &format!(
                        "code_change of `{module}` version {} failed: {m}; the process keeps its old state and stays suspended",
                        v.vsn
                    ),
                );
            }
        }
    }

    /// `sys:replace_state`: send the state, then wait for the caller's new state (or its
    /// cancel) before anything else runs.
    async fn replace_state(&mut self, e: Envelope) {
        let b = match self.state_bytes() {
            Ok((_, b)) => b,
            Err(m) => return self.sys_err(&e, E_FAILED, &m),
        };
        self.sys_ok(&e, &b);
        let caller = e.from;
        let deadline = self
            .proc
            .node
            .now_ns()
            .saturating_add(hotswap::gen_server::DEFAULT_TIMEOUT.as_nanos() as u64);
        let next = poll_fn(|_| {
            let mut g = self.proc.inner.lock();
            if let Some(m) = self.proc.take_first(&mut g, |m| {
                m.kind == abi::MSG_SYSTEM
                    && m.from == caller
                    && matches!(
                        codec::decode::<Request>(&m.data),
                        Ok(Request::ReplaceCommit(_) | Request::ReplaceCancel)
                    )
            }) {
                return Poll::Ready(Some(m));
            }
            if self.proc.node.now_ns() >= deadline {
                return Poll::Ready(None);
            }
            g.wake_at = g.wake_at.min(deadline);
            Poll::Pending
        })
        .await;
        let Some(m) = next else {
            tracing::warn!(pid = %self.proc.pid, "replace_state: the caller sent no new state in time; state kept");
            return;
        };
        let Ok(Request::ReplaceCommit(bytes)) = codec::decode::<Request>(&m.data) else {
            return self.sys_ok(&m, &[]);
        };
        let mut g = self.cell.slot.lock();
        let res = match &*g {
            Slot::Live { version, .. } => {
                version.import_state(&bytes).map(|o| (version.clone(), o))
            }
            _ => Err("the state is not live (its version was purged); send a message first".into()),
        };
        match res {
            Ok((v, new)) => {
                if let Slot::Live { version, obj, .. } = self.cell.take(&mut g) {
                    version.drop_state(obj);
                }
                self.cell.set_live(&mut g, &v, new);
                drop(g);
                self.sys_ok(&m, &[]);
            }
            Err(err) => {
                drop(g);
                self.sys_err(
                    &m,
                    E_FAILED,
                    &format!("callback_failed: the new state did not decode: {err}"),
                );
            }
        }
    }
}

/// Encoded state rendered as JSON (MessagePack with named fields maps onto it).
pub(crate) fn state_json(b: &[u8]) -> String {
    match rmp_serde::from_slice::<serde_json::Value>(b) {
        Ok(v) => v.to_string(),
        Err(_) => format!("<{} bytes>", b.len()),
    }
}

#[cfg(test)]
mod tests {
    /// Every idle server carries this future: its rare paths (init, sys, terminate) are
    /// boxed so that it stays small (the budget of a whole idle server is
    /// `budget::idle_process_record_and_loop_fit_budget`).
    #[test]
    fn server_future_stays_small() {
        let n = std::mem::size_of::<super::ServerBody>();
        // The async loop this replaced kept 816 B; 224 B is an allocator size class.
        assert!(n <= 224, "the server loop is {n} bytes");
    }
}

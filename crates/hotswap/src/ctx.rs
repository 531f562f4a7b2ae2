//! [`Ctx`]: what a process can do. Every method goes through the node's host API table.

use std::ffi::c_void;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hotswap_abi as abi;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, DecodeError};
use crate::message::Message;
use crate::outcome::Outcome;
use crate::types::{ExitReason, Pid, Ref};

/// The calling process's handle on the node. Cheap to copy.
///
/// A `Ctx` is only valid inside the process it was given to, while that process runs: do
/// not store it in a static or hand it to another process. It is `Send` because a process
/// (and so its future) moves between the node's worker threads between polls.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    proc: *mut abi::ProcHandle,
}

// SAFETY: the handle names a process; the node serialises everything that process does (one
// poll at a time), whichever worker thread polls it.
unsafe impl Send for Ctx {}
// SAFETY: as above; `Ctx` has no interior state.
unsafe impl Sync for Ctx {}

/// Log levels for [`Ctx::log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Level {
    /// Errors.
    Error = 0,
    /// Warnings.
    Warn = 1,
    /// Information.
    Info = 2,
    /// Debugging detail.
    Debug = 3,
    /// Tracing detail.
    Trace = 4,
}

/// Why a spawn failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnError(pub String);

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SpawnError {}

/// Why a fully-qualified call ([`Ctx::apply`]) failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ApplyError {
    /// No such module loaded, or it exports no such function (`undef`).
    Undef(String),
    /// The called function exited with a reason instead of returning.
    Exit(ExitReason),
    /// The called function panicked.
    Panicked(String),
    /// The return value did not decode as the expected type.
    Decode(DecodeError),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Undef(s) => write!(f, "undef: {s}"),
            ApplyError::Exit(r) => write!(f, "called function exited: {r}"),
            ApplyError::Panicked(m) => write!(f, "called function panicked: {m}"),
            ApplyError::Decode(e) => write!(f, "bad return value: {e}"),
        }
    }
}
impl std::error::Error for ApplyError {}

pub(crate) fn host() -> &'static abi::HostApi {
    crate::host::host()
}

/// Copy `(ptr, len)` onto the `Vec<u8>` behind `out` (the SDK's `WriteFn`).
///
/// # Safety
/// `out` must be a `*mut Vec<u8>` and `(ptr, len)` a readable range.
pub unsafe extern "C" fn write_vec(out: *mut c_void, ptr: *const u8, len: usize) {
    // SAFETY: the host passes back the `&mut Vec<u8>` we gave it as `out`, and a valid
    // `(ptr, len)` byte range for the duration of this call.
    unsafe {
        let v = &mut *(out as *mut Vec<u8>);
        let b = std::slice::from_raw_parts(ptr, len);
        if v.capacity() == 0 {
            // The usual case (a received message, a reply): one allocation of the exact
            // size, without the growth path `extend_from_slice` takes from empty.
            *v = b.to_vec();
        } else {
            v.extend_from_slice(b);
        }
    }
}

fn b(s: &[u8]) -> abi::Bytes {
    abi::Bytes::new(s)
}

impl Ctx {
    /// Build a `Ctx` from the raw handle the node passed to an export.
    ///
    /// # Safety
    /// `proc` must be the handle of the process that will use this `Ctx`, and the SDK's
    /// host table must have been installed (the export shims and the node do both).
    #[doc(hidden)]
    pub unsafe fn from_raw(proc: *mut abi::ProcHandle) -> Ctx {
        Ctx { proc }
    }

    /// The raw process handle, for benchmarks calling ABI entry points directly.
    #[doc(hidden)]
    pub fn __raw(&self) -> *mut abi::ProcHandle {
        self.proc
    }

    /// This process's pid.
    pub fn self_pid(&self) -> Pid {
        // SAFETY: `self.proc` is the live handle of the calling process (type invariant).
        Pid(unsafe { (host().self_pid)(self.proc) })
    }

    /// Send a value (encoded with the SDK codec) to a process. Sending to a dead process is
    /// not an error, as in Erlang.
    pub fn send<T: Serialize + ?Sized>(&self, to: Pid, msg: &T) {
        codec::with_encoded(msg, |b| self.send_bytes(to, b));
    }

    /// Send raw bytes to a process (no encoding: the fast path).
    pub fn send_bytes(&self, to: Pid, bytes: &[u8]) {
        // SAFETY: live handle; the byte range is valid for the call.
        unsafe { (host().send)(self.proc, to.0, bytes.as_ptr(), bytes.len()) };
    }

    /// Send a value to a registered name. Fails (`badarg`) if nothing is registered under it.
    pub fn send_named<T: Serialize + ?Sized>(&self, name: &str, msg: &T) -> Result<(), ExitReason> {
        let data = codec::encode(msg);
        // SAFETY: live handle; byte ranges valid for the call.
        let r = unsafe {
            (host().send_named)(self.proc, b(name.as_bytes()), data.as_ptr(), data.len())
        };
        if r == 0 {
            Ok(())
        } else {
            Err(ExitReason::BadArg(format!(
                "no process registered as {name:?}"
            )))
        }
    }

    /// Wait for the next message of any kind (user messages, trapped exits, monitor downs).
    pub fn recv(&self) -> Receive<AnyMsg> {
        Receive::new(*self, AnyMsg, None)
    }

    /// Like [`Ctx::recv`], giving up after `timeout` (`None` then).
    pub fn recv_timeout(&self, timeout: Duration) -> TimedReceive<AnyMsg> {
        TimedReceive(Receive::new(*self, AnyMsg, Some(timeout)))
    }

    /// Selective receive: wait for the first user message that decodes as `T`. Messages that
    /// do not decode stay in the mailbox, in order.
    pub fn receive<T: DeserializeOwned>(&self) -> Receive<AnyOf<T>> {
        Receive::new(*self, Typed::new(accept_all::<T>), None)
    }

    /// Selective receive with a predicate: the first user message that decodes as `T` and
    /// satisfies `pred`. Everything else stays in the mailbox.
    ///
    /// The node runs `pred` while it holds this process's mailbox: the predicate must only
    /// look at the message, never call this `Ctx` (sending to itself would deadlock).
    pub fn receive_match<T: DeserializeOwned, F: FnMut(&T) -> bool>(
        &self,
        pred: F,
    ) -> Receive<Typed<T, F>> {
        Receive::new(*self, Typed::new(pred), None)
    }

    /// [`Ctx::receive`] with a timeout (`None` when it expires).
    pub fn receive_timeout<T: DeserializeOwned>(
        &self,
        timeout: Duration,
    ) -> TimedReceive<AnyOf<T>> {
        TimedReceive(Receive::new(
            *self,
            Typed::new(accept_all::<T>),
            Some(timeout),
        ))
    }

    /// Wait for the next user message as raw bytes (no decoding: the fast path).
    pub fn receive_bytes(&self) -> Receive<RawBytes> {
        Receive::new(*self, RawBytes, None)
    }

    /// Sleep without consuming any message (`receive after T -> ok end`).
    pub fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        let r = TimedReceive(Receive::new(*self, Nothing, Some(d)));
        async move {
            r.await;
        }
    }

    fn spawn_flags(
        &self,
        module: &str,
        function: &str,
        arg: &[u8],
        flags: u32,
    ) -> Result<(Pid, Ref), SpawnError> {
        let (mut pid, mut reference) = (0u64, 0u64);
        let mut err = Vec::new();
        // SAFETY: live handle; all pointers are valid for the duration of the call.
        let st = unsafe {
            (host().spawn)(
                self.proc,
                b(module.as_bytes()),
                b(function.as_bytes()),
                b(arg),
                flags,
                &mut pid,
                &mut reference,
                &mut err as *mut Vec<u8> as *mut c_void,
                write_vec,
            )
        };
        if st == abi::STATUS_READY {
            Ok((Pid(pid), Ref(reference)))
        } else {
            Err(SpawnError(String::from_utf8_lossy(&err).into_owned()))
        }
    }

    /// Spawn `module:function(arg)` on the module's current version.
    pub fn spawn<A: Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Result<Pid, SpawnError> {
        self.spawn_flags(module, function, &codec::encode(arg), 0)
            .map(|p| p.0)
    }

    /// Spawn and link atomically.
    pub fn spawn_link<A: Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Result<Pid, SpawnError> {
        self.spawn_flags(module, function, &codec::encode(arg), abi::SPAWN_LINK)
            .map(|p| p.0)
    }

    /// Spawn and monitor atomically.
    pub fn spawn_monitor<A: Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Result<(Pid, Ref), SpawnError> {
        self.spawn_flags(module, function, &codec::encode(arg), abi::SPAWN_MONITOR)
    }

    /// Link with `pid`. Linking with a dead process delivers a `noproc` exit signal.
    pub fn link(&self, pid: Pid) {
        // SAFETY: live handle.
        unsafe { (host().link)(self.proc, pid.0) };
    }

    /// Remove a link.
    pub fn unlink(&self, pid: Pid) {
        // SAFETY: live handle.
        unsafe { (host().unlink)(self.proc, pid.0) };
    }

    /// Monitor `pid`: a `Down` message arrives when it exits (at once, `noproc`, if dead).
    pub fn monitor(&self, pid: Pid) -> Ref {
        // SAFETY: live handle.
        Ref(unsafe { (host().monitor)(self.proc, pid.0) })
    }

    /// Remove a monitor; `true` if it was still active.
    pub fn demonitor(&self, r: Ref) -> bool {
        // SAFETY: live handle.
        unsafe { (host().demonitor)(self.proc, r.0) == 1 }
    }

    /// Set the trap-exit flag; returns the old value.
    pub fn trap_exit(&self, on: bool) -> bool {
        // SAFETY: live handle.
        unsafe { (host().trap_exit)(self.proc, on as i32) == 1 }
    }

    /// Send an exit signal to `pid` (`erlang:exit/2`).
    pub fn exit(&self, pid: Pid, reason: &ExitReason) {
        let r = reason.encode();
        // SAFETY: live handle; byte range valid for the call.
        unsafe { (host().exit)(self.proc, pid.0, b(&r)) };
    }

    /// Register `name` for `pid`. Fails if the name is taken, the pid is dead or named.
    pub fn register(&self, name: &str, pid: Pid) -> Result<(), ExitReason> {
        // SAFETY: live handle; byte range valid for the call.
        match unsafe { (host().register)(self.proc, b(name.as_bytes()), pid.0) } {
            0 => Ok(()),
            _ => Err(ExitReason::BadArg(format!(
                "cannot register {name:?} for {pid}: name taken, process dead or already named"
            ))),
        }
    }

    /// Remove a registered name; `false` if it was not registered.
    pub fn unregister(&self, name: &str) -> bool {
        // SAFETY: live handle; byte range valid for the call.
        unsafe { (host().unregister)(self.proc, b(name.as_bytes())) == 0 }
    }

    /// The pid registered under `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        // SAFETY: live handle; byte range valid for the call.
        let p = unsafe { (host().whereis)(self.proc, b(name.as_bytes())) };
        (p != 0).then_some(Pid(p))
    }

    /// Send `msg` to `to` after `after`; returns a timer reference for [`Ctx::cancel_timer`].
    pub fn send_after<T: Serialize + ?Sized>(&self, after: Duration, to: Pid, msg: &T) -> Ref {
        let data = codec::encode(msg);
        let ms = after.as_millis().min(u64::MAX as u128) as u64;
        // SAFETY: live handle; byte range valid for the call.
        Ref(unsafe { (host().send_after)(self.proc, ms, to.0, data.as_ptr(), data.len()) })
    }

    /// Cancel a timer: the time that was left, or `None` if it fired or never existed.
    pub fn cancel_timer(&self, timer: Ref) -> Option<Duration> {
        // SAFETY: live handle.
        let left = unsafe { (host().cancel_timer)(self.proc, timer.0) };
        (left >= 0).then(|| Duration::from_millis(left as u64))
    }

    /// Log a line through the node's logger (modules must not print to stdout).
    pub fn log(&self, level: Level, msg: &str) {
        // SAFETY: live handle; byte range valid for the call.
        unsafe { (host().log)(self.proc, level as u32, msg.as_ptr(), msg.len()) };
    }

    /// A fully-qualified tail call: finish this function and continue in
    /// `module:function(arg)` on the **current** version. Return it from the export:
    ///
    /// ```ignore
    /// "code_switch" => return ctx.continue_with("m", "loop", &state),
    /// ```
    pub fn continue_with<A: Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Outcome {
        Outcome::Continue {
            module: module.into(),
            function: function.into(),
            arg: codec::encode(arg),
        }
    }

    /// Call another module's exported function on its current version and await its value.
    /// While it runs, this process is bound to that version (a purge of it would kill this
    /// process, as in Erlang).
    pub fn apply<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Apply<R> {
        let arg = codec::encode(arg);
        let mut err = Vec::new();
        // SAFETY: live handle; byte ranges valid for the call.
        let h = unsafe {
            (host().apply_start)(
                self.proc,
                b(module.as_bytes()),
                b(function.as_bytes()),
                b(&arg),
                &mut err as *mut Vec<u8> as *mut c_void,
                write_vec,
            )
        };
        Apply {
            ctx: *self,
            handle: h,
            err: (h.is_null()).then(|| String::from_utf8_lossy(&err).into_owned()),
            _r: PhantomData,
        }
    }

    /// A handle on the synchronous exported function `module:function`: each
    /// `call` is a fully-qualified call, reaching the module's **current**
    /// version. The handle caches its resolution and re-resolves only when the module's
    /// current version changes, so a call costs what a call through Erlang's export table
    /// does: one load and compare more than a local call.
    pub fn function<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        module: &str,
        function: &str,
    ) -> Function<A, R> {
        Function {
            ctx: *self,
            module: module.into(),
            function: function.into(),
            slot: std::ptr::null(),
            res: abi::Resolved {
                generation: 0,
                call: None,
                version: std::ptr::null(),
            },
            _t: PhantomData,
        }
    }

    /// A fresh reference, unique on the node.
    pub(crate) fn new_ref(&self) -> u64 {
        // SAFETY: live handle.
        unsafe { (host().new_ref)(self.proc) }
    }

    /// Accept (or stop accepting) replies tagged `tag`.
    pub(crate) fn alias(&self, tag: u64, on: bool) {
        // SAFETY: live handle.
        unsafe { (host().alias)(self.proc, tag, on as i32) }
    }

    /// Post a message of any kind to `pid` (or, if `pid` is 0, to `name`): 0, -1 if there
    /// is no such process, -2 if a call or system request targets the caller itself.
    pub(crate) fn post(
        &self,
        pid: u64,
        name: &[u8],
        kind: u32,
        reference: u64,
        data: &[u8],
    ) -> i32 {
        // SAFETY: live handle; byte ranges valid for the call.
        unsafe { (host().post)(self.proc, pid, b(name), kind, reference, b(data)) }
    }

    /// Wait for the reply tagged `tag` (its payload), or `None` after `timeout`.
    pub(crate) async fn receive_reply(
        &self,
        tag: u64,
        timeout: Option<Duration>,
    ) -> Option<Vec<u8>> {
        self.receive_within(ReplyTo(tag), timeout).await
    }

    /// Wait for the `Down` message of monitor `r` (its reason), or `None` after `timeout`
    /// (`None`: wait forever). Other messages stay in the mailbox, in order.
    pub async fn down(&self, r: Ref, timeout: Option<Duration>) -> Option<ExitReason> {
        self.receive_within(DownOf(r.0), timeout).await
    }

    /// Selective receive on the envelope: the first message (of any kind) for which
    /// `pred(kind, from, reference)` holds, or `None` after `timeout` (`None`: wait
    /// forever). Other messages stay in the mailbox, in order. `reference` is the monitor
    /// reference of a `Down` and the tag of a call or reply (0 otherwise).
    ///
    /// ```no_run
    /// # async fn f(ctx: hotswap::Ctx, child: hotswap::Pid) {
    /// use hotswap::{Message, MessageKind};
    /// // flush the trapped exit of `child`, if there is one
    /// let flushed = ctx
    ///     .recv_where(|k, from, _| k == MessageKind::Exit && from == child, Some(std::time::Duration::ZERO))
    ///     .await;
    /// # }
    /// ```
    pub async fn recv_where<F: FnMut(MessageKind, Pid, u64) -> bool + Unpin>(
        &self,
        pred: F,
        timeout: Option<Duration>,
    ) -> Option<Message> {
        self.receive_within(Where(pred), timeout).await
    }

    /// A selective receive that gives up after `timeout` (`None`: never).
    async fn receive_within<M: Matcher + Unpin>(
        &self,
        m: M,
        timeout: Option<Duration>,
    ) -> Option<M::Output> {
        match timeout {
            Some(t) => TimedReceive(Receive::new(*self, m, Some(t))).await,
            None => Some(Receive::new(*self, m, None).await),
        }
    }

    /// Start a gen_server (see the host API's `start_server`): its pid, the monitor
    /// reference and the version whose `init` runs. On failure: the pid holding the name
    /// if it was taken, and the message.
    pub(crate) fn start_server(
        &self,
        module: &str,
        arg: &[u8],
        name: Option<&str>,
        flags: u32,
        tag: u64,
    ) -> Result<(Pid, Ref, String), (Option<Pid>, String)> {
        let (mut pid, mut reference) = (0u64, 0u64);
        let mut err = Vec::new();
        // SAFETY: live handle; all pointers are valid for the duration of the call.
        let st = unsafe {
            (host().start_server)(
                self.proc,
                b(module.as_bytes()),
                b(arg),
                b(name.unwrap_or("").as_bytes()),
                flags,
                tag,
                &mut pid,
                &mut reference,
                &mut err as *mut Vec<u8> as *mut c_void,
                write_vec,
            )
        };
        if st == abi::STATUS_READY {
            Ok((
                Pid(pid),
                Ref(reference),
                String::from_utf8_lossy(&err).into_owned(),
            ))
        } else if pid != 0 {
            Err((Some(Pid(pid)), String::from_utf8_lossy(&err).into_owned()))
        } else {
            Err((None, String::from_utf8_lossy(&err).into_owned()))
        }
    }

    fn now_ns(&self) -> u64 {
        // SAFETY: live handle.
        unsafe { (host().now_ns)(self.proc) }
    }
}

/// The matcher of [`Ctx::receive`]: any user message that decodes as `T`.
pub type AnyOf<T> = Typed<T, fn(&T) -> bool>;

/// A synchronous exported function of a module, resolved against its current version; see
/// [`Ctx::function`].
pub struct Function<A: ?Sized, R> {
    ctx: Ctx,
    module: Box<str>,
    function: Box<str>,
    slot: *const abi::ExportSlot,
    res: abi::Resolved,
    _t: PhantomData<fn(&A) -> R>,
}

impl<A: ?Sized, R> std::fmt::Debug for Function<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Function({}:{}, generation {})",
            self.module, self.function, self.res.generation
        )
    }
}

// SAFETY: the slot pointer names node-owned data that lives forever and is only read
// atomically; the handle is used by one process at a time.
unsafe impl<A: ?Sized, R> Send for Function<A, R> {}

impl<A: Serialize + ?Sized, R: DeserializeOwned> Function<A, R> {
    /// Call it with a value (encoded with the SDK codec) and decode the result.
    pub fn call(&mut self, arg: &A) -> Result<R, ApplyError> {
        let mut out = Vec::new();
        self.call_bytes(&codec::encode(arg), &mut out)?;
        codec::decode(&out).map_err(ApplyError::Decode)
    }

    /// Call it with an encoded argument; the encoded result is appended to `out`.
    ///
    /// The call goes through the node (its host API's `call`), which checks that the
    /// cached resolution is still the module's current version and counts the call in
    /// that version's quiescence while it runs: a purge pins the version instead of
    /// unmapping code this call is running, whatever kind of process makes it.
    #[inline]
    pub fn call_bytes(&mut self, arg: &[u8], out: &mut Vec<u8>) -> Result<(), ApplyError> {
        if self.res.call.is_none() {
            self.resolve()?;
        }
        loop {
            // SAFETY: live handle; `slot` and `res` come from the host's `resolve` (the slot
            // lives forever); the argument range and `out` are valid for the call.
            let st = unsafe {
                (host().call)(
                    self.ctx.proc,
                    self.slot,
                    &self.res,
                    arg.as_ptr(),
                    arg.len(),
                    out as *mut Vec<u8> as *mut c_void,
                    write_vec,
                )
            };
            match st {
                abi::STATUS_READY => return Ok(()),
                abi::STATUS_STALE => {
                    self.resolve()?;
                }
                _ => return Err(self.call_error(st, out)),
            }
        }
    }

    /// Call an entry point obtained from [`Function::__resolved`] directly (not through
    /// the node) and check its status: for benchmarks comparing a fully-qualified call with
    /// a local one.
    ///
    /// # Safety
    /// Only from module code of the version `call` belongs to, during the poll that
    /// obtained it: the node counts that poll in the version's quiescence, and nothing else
    /// would count this call (a call from anywhere else could run code a purge unmaps).
    #[doc(hidden)]
    #[inline]
    pub unsafe fn __invoke(
        &self,
        call: abi::CallFn,
        arg: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ApplyError> {
        // SAFETY: caller contract (the version is entered by the caller's own poll); the
        // argument range and `out` are valid for the call.
        let st = unsafe {
            call(
                self.ctx.proc,
                arg.as_ptr(),
                arg.len(),
                out as *mut Vec<u8> as *mut c_void,
                write_vec,
            )
        };
        match st {
            abi::STATUS_READY => Ok(()),
            _ => Err(self.call_error(st, out)),
        }
    }

    #[cold]
    fn call_error(&self, st: u32, out: &[u8]) -> ApplyError {
        let msg = String::from_utf8_lossy(out).into_owned();
        if st == abi::STATUS_PANICKED {
            ApplyError::Panicked(msg)
        } else {
            ApplyError::Exit(ExitReason::BadArg(msg))
        }
    }

    /// The entry point a call would use now (resolving if needed). For benchmarks that
    /// compare a call through this handle with a direct call of the same entry point: the
    /// pointer is only valid until the end of the current poll.
    #[doc(hidden)]
    pub fn __resolved(&mut self) -> Result<abi::CallFn, ApplyError> {
        match self.cached() {
            Some(c) => Ok(c),
            None => self.resolve(),
        }
    }

    /// The cached resolution, if the module's current version has not changed since.
    #[inline]
    fn cached(&self) -> Option<abi::CallFn> {
        let call = self.res.call?;
        // SAFETY: `call` is set only together with a non-null slot, which is node-owned and
        // lives forever.
        let slot = unsafe { &*self.slot };
        (slot.generation.load(std::sync::atomic::Ordering::SeqCst) == self.res.generation)
            .then_some(call)
    }

    #[cold]
    fn resolve(&mut self) -> Result<abi::CallFn, ApplyError> {
        let mut err = Vec::new();
        let mut res = abi::Resolved {
            generation: 0,
            call: None,
            version: std::ptr::null(),
        };
        // SAFETY: live handle; all pointers are valid for the call.
        let slot = unsafe {
            (host().resolve)(
                self.ctx.proc,
                b(self.module.as_bytes()),
                b(self.function.as_bytes()),
                &mut res,
                &mut err as *mut Vec<u8> as *mut c_void,
                write_vec,
            )
        };
        match (slot.is_null(), res.call) {
            (false, Some(c)) => {
                self.slot = slot;
                self.res = res;
                Ok(c)
            }
            _ => Err(ApplyError::Undef(
                String::from_utf8_lossy(&err).into_owned(),
            )),
        }
    }
}

fn accept_all<T>(_: &T) -> bool {
    true
}

/// How a [`Receive`] picks messages. Implemented by the SDK's matchers.
pub trait Matcher {
    /// What the receive yields.
    type Output;
    /// Whether the payload must be copied out on a match.
    const NEEDS_BYTES: bool;
    /// `true` for "accept anything" (lets the node take the front message directly).
    fn accepts_all(&self) -> bool {
        false
    }
    /// Whether this message matches.
    fn matches(&mut self, view: &abi::MsgView) -> bool;
    /// Build the result from the taken message.
    fn finish(&mut self, header: &abi::MsgHeader, data: Vec<u8>) -> Self::Output;
}

/// Matches every message; yields [`Message`].
#[derive(Debug)]
pub struct AnyMsg;

impl Matcher for AnyMsg {
    type Output = Message;
    const NEEDS_BYTES: bool = true;
    fn accepts_all(&self) -> bool {
        true
    }
    fn matches(&mut self, _: &abi::MsgView) -> bool {
        true
    }
    fn finish(&mut self, h: &abi::MsgHeader, data: Vec<u8>) -> Message {
        message_from(h, data)
    }
}

pub(crate) fn message_from(h: &abi::MsgHeader, data: Vec<u8>) -> Message {
    match h.kind {
        abi::MSG_EXIT => Message::Exit {
            from: Pid(h.from),
            reason: ExitReason::decode(&data),
        },
        abi::MSG_DOWN => Message::Down {
            reference: Ref(h.reference),
            pid: Pid(h.from),
            reason: ExitReason::decode(&data),
        },
        abi::MSG_PORT => Message::Port(crate::net::port::PortMsg::decode(h.reference, &data)),
        abi::MSG_CALL | abi::MSG_CAST | abi::MSG_SYSTEM => Message::Request {
            kind: h.kind,
            from: Pid(h.from),
            tag: h.reference,
            data,
        },
        _ => Message::User {
            from: Pid(h.from),
            data,
        },
    }
}

/// Matches the reply tagged with the given alias; yields its payload.
#[derive(Debug)]
pub(crate) struct ReplyTo(pub(crate) u64);

impl Matcher for ReplyTo {
    type Output = Vec<u8>;
    const NEEDS_BYTES: bool = true;
    fn matches(&mut self, v: &abi::MsgView) -> bool {
        v.kind == abi::MSG_REPLY && v.reference == self.0
    }
    fn finish(&mut self, _: &abi::MsgHeader, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

/// Matches the `Down` message of one monitor; yields the reason.
#[derive(Debug)]
struct DownOf(u64);

impl Matcher for DownOf {
    type Output = ExitReason;
    const NEEDS_BYTES: bool = true;
    fn matches(&mut self, v: &abi::MsgView) -> bool {
        v.kind == abi::MSG_DOWN && v.reference == self.0
    }
    fn finish(&mut self, _: &abi::MsgHeader, data: Vec<u8>) -> ExitReason {
        ExitReason::decode(&data)
    }
}

/// The kind of a message, as [`Ctx::recv_where`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// An ordinary message.
    User,
    /// A trapped exit signal.
    Exit,
    /// A monitor's `Down`.
    Down,
    /// A `gen_server` call.
    Call,
    /// A `gen_server` cast.
    Cast,
    /// A reply to a call.
    Reply,
    /// A `sys` request.
    System,
    /// A port event ([`crate::net::PortMsg`]); the reference is the port id.
    Port,
}

impl MessageKind {
    fn of(kind: u32) -> MessageKind {
        match kind {
            abi::MSG_EXIT => MessageKind::Exit,
            abi::MSG_DOWN => MessageKind::Down,
            abi::MSG_CALL => MessageKind::Call,
            abi::MSG_CAST => MessageKind::Cast,
            abi::MSG_REPLY => MessageKind::Reply,
            abi::MSG_SYSTEM => MessageKind::System,
            abi::MSG_PORT => MessageKind::Port,
            _ => MessageKind::User,
        }
    }
}

/// Matches on the envelope (kind, sender, reference); yields [`Message`].
struct Where<F>(F);

impl<F: FnMut(MessageKind, Pid, u64) -> bool> Matcher for Where<F> {
    type Output = Message;
    const NEEDS_BYTES: bool = true;
    fn matches(&mut self, v: &abi::MsgView) -> bool {
        (self.0)(MessageKind::of(v.kind), Pid(v.from), v.reference)
    }
    fn finish(&mut self, h: &abi::MsgHeader, data: Vec<u8>) -> Message {
        message_from(h, data)
    }
}

/// Matches nothing (used by [`Ctx::sleep`]).
#[derive(Debug)]
pub struct Nothing;

impl Matcher for Nothing {
    type Output = ();
    const NEEDS_BYTES: bool = false;
    fn matches(&mut self, _: &abi::MsgView) -> bool {
        false
    }
    fn finish(&mut self, _: &abi::MsgHeader, _: Vec<u8>) {}
}

/// Matches user messages; yields their bytes.
#[derive(Debug)]
pub struct RawBytes;

impl Matcher for RawBytes {
    type Output = Vec<u8>;
    const NEEDS_BYTES: bool = true;
    fn matches(&mut self, v: &abi::MsgView) -> bool {
        v.kind == abi::MSG_USER
    }
    fn finish(&mut self, _: &abi::MsgHeader, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

/// Matches user messages that decode as `T` and satisfy a predicate.
#[derive(Debug)]
pub struct Typed<T, F> {
    pred: F,
    found: Option<T>,
}

impl<T, F> Typed<T, F> {
    fn new(pred: F) -> Self {
        Typed { pred, found: None }
    }
}

impl<T: DeserializeOwned, F: FnMut(&T) -> bool> Matcher for Typed<T, F> {
    type Output = T;
    const NEEDS_BYTES: bool = false;
    fn matches(&mut self, v: &abi::MsgView) -> bool {
        if v.kind != abi::MSG_USER {
            return false;
        }
        // SAFETY: the host guarantees `data` is a valid byte range during the callback.
        let bytes = unsafe { std::slice::from_raw_parts(v.data.ptr, v.data.len) };
        match codec::decode::<T>(bytes) {
            Ok(t) if (self.pred)(&t) => {
                self.found = Some(t);
                true
            }
            _ => false,
        }
    }
    fn finish(&mut self, _: &abi::MsgHeader, _: Vec<u8>) -> T {
        self.found
            .take()
            .expect("matched message was stored by `matches`")
    }
}

struct MatchState<'a, M> {
    m: &'a mut M,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

unsafe extern "C" fn match_trampoline<M: Matcher>(
    data: *mut c_void,
    view: *const abi::MsgView,
) -> u8 {
    // SAFETY: `data` is the `MatchState<M>` passed to `receive` for this call and `view` is
    // valid for the callback (host contract).
    let st = unsafe { &mut *(data as *mut MatchState<'_, M>) };
    if st.panic.is_some() {
        return 0;
    }
    // SAFETY: the host passes a view that is valid for the duration of the callback.
    let view = unsafe { &*view };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| st.m.matches(view))) {
        Ok(b) => b as u8,
        Err(p) => {
            st.panic = Some(p);
            0
        }
    }
}

/// A pending receive. Await it.
#[derive(Debug)]
#[must_use = "a receive does nothing unless awaited"]
pub struct Receive<M> {
    ctx: Ctx,
    matcher: M,
    timeout: Option<Duration>,
    deadline: Option<u64>,
}

impl<M> Receive<M> {
    fn new(ctx: Ctx, matcher: M, timeout: Option<Duration>) -> Self {
        Receive {
            ctx,
            matcher,
            timeout,
            deadline: None,
        }
    }
}

impl<M: Matcher + Unpin> Future for Receive<M> {
    type Output = M::Output;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<M::Output> {
        let this = self.get_mut();
        match this.poll_receive() {
            Some(Ok(v)) => Poll::Ready(v),
            // A receive without a timeout has no deadline, so it cannot time out.
            Some(Err(())) | None => Poll::Pending,
        }
    }
}

impl<M: Matcher> Receive<M> {
    /// One attempt: `Some(Ok)` matched, `Some(Err)` timed out, `None` pending.
    fn poll_receive(&mut self) -> Option<Result<M::Output, ()>> {
        let deadline = match (self.deadline, self.timeout) {
            (Some(d), _) => d,
            (None, Some(t)) => {
                let d = self
                    .ctx
                    .now_ns()
                    .saturating_add(t.as_nanos().min(u64::MAX as u128) as u64);
                self.deadline = Some(d);
                d
            }
            (None, None) => u64::MAX,
        };
        let mut header = abi::MsgHeader::default();
        let mut data: Vec<u8> = Vec::new();
        let accepts_all = self.matcher.accepts_all();
        let mut st = MatchState {
            m: &mut self.matcher,
            panic: None,
        };
        let write: Option<abi::WriteFn> = if M::NEEDS_BYTES {
            Some(write_vec)
        } else {
            None
        };
        // SAFETY: live handle; `st` and `data` outlive the call; the trampoline matches `st`'s
        // type.
        let status = unsafe {
            (host().receive)(
                self.ctx.proc,
                if accepts_all {
                    None
                } else {
                    Some(match_trampoline::<M>)
                },
                &mut st as *mut MatchState<'_, M> as *mut c_void,
                deadline,
                &mut header,
                &mut data as *mut Vec<u8> as *mut c_void,
                write,
            )
        };
        if let Some(p) = st.panic.take() {
            std::panic::resume_unwind(p);
        }
        match status {
            abi::STATUS_READY => Some(Ok(self.matcher.finish(&header, data))),
            abi::STATUS_TIMEOUT => Some(Err(())),
            _ => None,
        }
    }
}

/// A receive that yields `None` when its timeout expires.
#[derive(Debug)]
#[must_use = "a receive does nothing unless awaited"]
pub struct TimedReceive<M>(Receive<M>);

impl<M: Matcher + Unpin> Future for TimedReceive<M> {
    type Output = Option<M::Output>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut().0.poll_receive() {
            Some(Ok(v)) => Poll::Ready(Some(v)),
            Some(Err(())) => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

/// A fully-qualified call in progress; see [`Ctx::apply`].
#[derive(Debug)]
#[must_use = "a call does nothing unless awaited"]
pub struct Apply<R> {
    ctx: Ctx,
    handle: *mut abi::CallHandle,
    err: Option<String>,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> Future for Apply<R> {
    type Output = Result<R, ApplyError>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(e) = this.err.take() {
            return Poll::Ready(Err(ApplyError::Undef(e)));
        }
        if this.handle.is_null() {
            return Poll::Ready(Err(ApplyError::Undef("call already finished".into())));
        }
        let mut out = Vec::new();
        // SAFETY: live handle; `this.handle` came from `apply_start` and was not dropped.
        let st = unsafe {
            (host().apply_poll)(
                this.ctx.proc,
                this.handle,
                &mut out as *mut Vec<u8> as *mut c_void,
                write_vec,
            )
        };
        let res = match st {
            abi::STATUS_PENDING => return Poll::Pending,
            abi::STATUS_READY => match Outcome::decode(&out) {
                Some(Outcome::Value(v)) => codec::decode(&v).map_err(ApplyError::Decode),
                // A missing module or function further on (a tail call of the callee)
                // is the same `undef` as one at the start.
                Some(Outcome::Exit(ExitReason::Undef(m))) => Err(ApplyError::Undef(m)),
                Some(Outcome::Exit(r)) => Err(ApplyError::Exit(r)),
                _ => Err(ApplyError::Undef("malformed call result".into())),
            },
            _ => Err(ApplyError::Panicked(
                String::from_utf8_lossy(&out).into_owned(),
            )),
        };
        // SAFETY: as above; the handle is not used again (nulled).
        unsafe { (host().apply_drop)(this.ctx.proc, this.handle) };
        this.handle = std::ptr::null_mut();
        Poll::Ready(res)
    }
}

// SAFETY: the call handle belongs to the calling process and is only used from its future,
// which the node polls from one thread at a time.
unsafe impl<R> Send for Apply<R> {}

impl<R> Drop for Apply<R> {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: the handle is live and owned by this value.
            unsafe { (host().apply_drop)(self.ctx.proc, self.handle) };
        }
    }
}

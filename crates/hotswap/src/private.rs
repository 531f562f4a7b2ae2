//! Support for the `module!` macro's expansion. Not a public API.
#![allow(missing_docs)]

use std::ffi::c_void;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

pub use hotswap_abi as abi;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::ctx::Ctx;
use crate::outcome::{IntoOutcome, Outcome};
use crate::types::ExitReason;

/// The SDK version recorded in every descriptor.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
pub use crate::codec::CODEC_ID;
pub use crate::ctx::write_vec;
pub use crate::heap::ModuleHeap;

pub use crate::host::set_host;
pub(crate) use crate::panic::{panic_message, record_location};

type Task = Pin<Box<dyn Future<Output = Outcome>>>;

/// Report a shim's result to the host: the bytes on success, the message on an error or a
/// panic, with the matching status.
fn report(
    out: *mut c_void,
    write: abi::WriteFn,
    r: std::thread::Result<Result<Vec<u8>, String>>,
) -> u32 {
    let (status, bytes) = match r {
        Ok(Ok(v)) => (abi::STATUS_READY, v),
        Ok(Err(e)) => (abi::STATUS_ERROR, e.into_bytes()),
        Err(p) => (abi::STATUS_PANICKED, panic_message(p).into_bytes()),
    };
    write_str(out, write, &bytes);
    status
}

fn write_str(out: *mut c_void, write: abi::WriteFn, s: &[u8]) {
    // SAFETY: `out`/`write` are the host's buffer and copy callback for this call.
    unsafe { write(out, s.as_ptr(), s.len()) }
}

/// Export shim body: decode the argument and start the user's async function as a task.
///
/// # Safety
/// `arg` must point at `len` readable bytes and `proc` be the calling process's handle.
pub unsafe fn start<A, F, Fut>(
    proc: *mut abi::ProcHandle,
    arg: *const u8,
    len: usize,
    f: F,
) -> *mut abi::FutureObj
where
    A: DeserializeOwned,
    F: FnOnce(Ctx, A) -> Fut,
    Fut: Future + 'static,
    Fut::Output: IntoOutcome,
{
    // SAFETY: caller contract.
    let bytes = unsafe { std::slice::from_raw_parts(arg, len) };
    let made = catch_unwind(AssertUnwindSafe(|| -> Task {
        // SAFETY: caller contract: `proc` is the handle of the process this task runs in.
        let ctx = unsafe { Ctx::from_raw(proc) };
        match codec::decode::<A>(bytes) {
            Ok(a) => {
                let fut = f(ctx, a);
                Box::pin(async move { fut.await.into_outcome() })
            }
            Err(e) => {
                let r = ExitReason::BadArg(format!("argument {e}"));
                Box::pin(async move { Outcome::Exit(r) })
            }
        }
    }));
    into_obj(task_or_exit(made))
}

/// The task a shim made, or one that exits with the panic that making it raised.
fn task_or_exit(made: std::thread::Result<Task>) -> Task {
    match made {
        Ok(t) => t,
        Err(p) => {
            let r = ExitReason::Panic(panic_message(p));
            Box::pin(async move { Outcome::Exit(r) })
        }
    }
}

/// Poll a task once, catching a panic (its message).
fn poll_task(task: &mut Task) -> Result<Poll<Outcome>, String> {
    // Every await point of a module future is a host operation; the node re-polls the
    // process whenever anything it waits for happens, so no waker is needed.
    let mut cx = Context::from_waker(Waker::noop());
    catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(&mut cx))).map_err(panic_message)
}

/// Drop a task, catching a panic in a destructor (its message).
fn drop_task(task: Task) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(move || drop(task))).map_err(panic_message)
}

/// Synchronous export shim body: decode the argument, call, encode the result.
///
/// # Safety
/// `arg` must point at `len` readable bytes, `proc` be the calling process's handle, and
/// `out`/`write` the host's buffer and copy callback.
pub unsafe fn call<A, R, F>(
    proc: *mut abi::ProcHandle,
    arg: *const u8,
    len: usize,
    out: *mut c_void,
    write: abi::WriteFn,
    f: F,
) -> u32
where
    A: DeserializeOwned,
    R: serde::Serialize,
    F: FnOnce(Ctx, A) -> R,
{
    // SAFETY: caller contract.
    let bytes = unsafe { std::slice::from_raw_parts(arg, len) };
    let r = catch_unwind(AssertUnwindSafe(|| match codec::decode::<A>(bytes) {
        // SAFETY: caller contract: `proc` is the calling process's handle.
        Ok(a) => Ok(codec::encode(&f(unsafe { Ctx::from_raw(proc) }, a))),
        Err(e) => Err(format!("argument {e}")),
    }));
    report(out, write, r)
}

/// # Safety
/// Called by the node once, with a table that lives for the rest of the process and the
/// version's heap (or 0), before any other function of this library.
pub unsafe extern "C" fn init(
    host: *const abi::HostApi,
    heap: u64,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    let r = catch_unwind(|| {
        // SAFETY: the node passes a `'static` table (caller contract).
        let h = unsafe { &*host };
        if h.abi_version != abi::ABI_VERSION {
            return Err(format!(
                "node speaks hotswap ABI {}, module was built for ABI {}",
                h.abi_version,
                abi::ABI_VERSION
            ));
        }
        set_host(h);
        let on_heap = crate::heap::install(h, heap);
        // Our own hook: no stderr noise, no `thread::current()` (which would register a
        // thread-exit destructor inside this library), just the location for the reason.
        std::panic::set_hook(Box::new(record_location));
        Ok(if on_heap {
            abi::HEAP_IN_USE.to_vec()
        } else {
            abi::HEAP_NOT_USED.to_vec()
        })
    });
    report(out, write, r)
}

/// # Safety
/// `fut` must come from [`start`] of this same library and not have been dropped.
pub unsafe extern "C" fn poll(
    fut: *mut abi::FutureObj,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    // SAFETY: caller contract: `fut` is a live `Box<Task>` made by `start`.
    let task = unsafe { &mut *(fut as *mut Task) };
    match poll_task(task) {
        Ok(Poll::Pending) => abi::STATUS_PENDING,
        Ok(Poll::Ready(outcome)) => {
            write_str(out, write, &outcome.into_encoded());
            abi::STATUS_READY
        }
        Err(m) => {
            write_str(out, write, m.as_bytes());
            abi::STATUS_PANICKED
        }
    }
}

/// # Safety
/// `fut` must come from [`start`] of this same library; it is consumed.
pub unsafe extern "C" fn drop_future(
    fut: *mut abi::FutureObj,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    // SAFETY: caller contract: `fut` is a live `Box<Task>` made by `start`, dropped once.
    let task = unsafe { Box::from_raw(fut as *mut Task) };
    match drop_task(*task) {
        Ok(()) => abi::STATUS_READY,
        Err(m) => {
            write_str(out, write, m.as_bytes());
            abi::STATUS_PANICKED
        }
    }
}

// ---- gen_server shims -------------------------------------------------------------------

use crate::gen_server::{
    wire, Action, CallResult, Caller, CastResult, Direction, Extra, GenServer, Info, Init, OldState,
};
use crate::types::{Pid, Ref};

fn push_reason(out: &mut Vec<u8>, r: &ExitReason) {
    r.encode_into(out);
}

fn init_value<S: GenServer>(r: Init<S>) -> Outcome {
    let mut out = Vec::with_capacity(16);
    let (s, a) = match r {
        Init::Ok(s) => (s, None),
        Init::OkThen(s, a) => (s, Some(a)),
        Init::Ignore => return Outcome::Value(vec![wire::INIT_IGNORE]),
        Init::Stop(reason) => {
            out.push(wire::INIT_STOP);
            push_reason(&mut out, &reason);
            return Outcome::Value(out);
        }
    };
    out.push(wire::INIT_OK);
    let p = Box::into_raw(Box::new(s)) as usize as u64;
    out.extend_from_slice(&p.to_le_bytes());
    wire::put_action(&mut out, a.as_ref());
    Outcome::Value(out)
}

fn call_value<R: serde::Serialize>(r: CallResult<R>) -> Outcome {
    let mut out = Vec::with_capacity(24);
    match r {
        CallResult::Reply(v) => reply_into(&mut out, None, &v),
        CallResult::ReplyThen(v, a) => reply_into(&mut out, Some(&a), &v),
        CallResult::NoReply => noreply_into(&mut out, None),
        CallResult::NoReplyThen(a) => noreply_into(&mut out, Some(&a)),
        CallResult::Stop(reason) => stop_into(&mut out, &reason),
        CallResult::StopReply(reason, v) => {
            out.push(wire::H_STOP_REPLY);
            let mut rb = Vec::new();
            push_reason(&mut rb, &reason);
            out.extend_from_slice(&(rb.len() as u32).to_le_bytes());
            out.extend_from_slice(&rb);
            codec::encode_into(&mut out, &v);
        }
    }
    Outcome::Value(out)
}

fn reply_into<R: serde::Serialize>(out: &mut Vec<u8>, a: Option<&Action>, v: &R) {
    out.push(wire::H_REPLY);
    wire::put_action(out, a);
    codec::encode_into(out, v);
}

fn noreply_into(out: &mut Vec<u8>, a: Option<&Action>) {
    out.push(wire::H_NOREPLY);
    wire::put_action(out, a);
}

fn stop_into(out: &mut Vec<u8>, reason: &ExitReason) {
    out.push(wire::H_STOP);
    push_reason(out, reason);
}

fn cast_value(r: CastResult) -> Outcome {
    let mut out = Vec::with_capacity(8);
    match r {
        CastResult::NoReply => noreply_into(&mut out, None),
        CastResult::NoReplyThen(a) => noreply_into(&mut out, Some(&a)),
        CastResult::Stop(reason) => stop_into(&mut out, &reason),
    }
    Outcome::Value(out)
}

fn stop_task(reason: ExitReason) -> Task {
    let mut out = Vec::new();
    stop_into(&mut out, &reason);
    Box::pin(async move { Outcome::Value(out) })
}

fn into_obj(t: Task) -> *mut abi::FutureObj {
    Box::into_raw(Box::new(t)) as *mut abi::FutureObj
}

/// `ServerVTable::init` for `S`.
///
/// # Safety
/// As [`start`].
pub unsafe extern "C" fn server_init<S: GenServer>(
    proc: *mut abi::ProcHandle,
    arg: *const u8,
    len: usize,
) -> *mut abi::FutureObj {
    // SAFETY: caller contract.
    unsafe {
        start(proc, arg, len, |ctx: Ctx, a: S::Arg| async move {
            init_value(S::init(ctx, a).await)
        })
    }
}

/// `ServerVTable::handle` for `S`: make the callback's future and poll it once; most
/// callbacks finish then, which costs one call across the boundary and no future object.
///
/// # Safety
/// `state` must be a live state made by this library for `S`, not used by anything else
/// until the callback has finished (or its future is dropped); `data` must point at `len`
/// readable bytes; `out`/`write` are the host's; `fut_out` is writable.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn server_handle<S: GenServer>(
    proc: *mut abi::ProcHandle,
    state: *mut abi::StateObj,
    kind: u32,
    from: u64,
    reference: u64,
    data: *const u8,
    len: usize,
    out: *mut c_void,
    write: abi::WriteFn,
    fut_out: *mut *mut abi::FutureObj,
) -> u32 {
    // SAFETY: caller contract: exclusive use of the state until the future is dropped,
    // which the node guarantees by never touching the state while a callback runs.
    let s: &'static mut S = unsafe { &mut *(state as *mut S) };
    // SAFETY: caller contract.
    let bytes = unsafe { std::slice::from_raw_parts(data, len) };
    // SAFETY: caller contract: `proc` is the handle of the server process.
    let ctx = unsafe { Ctx::from_raw(proc) };
    let made = catch_unwind(AssertUnwindSafe(move || -> Task {
        fn info<S: GenServer>(s: &'static mut S, ctx: Ctx, i: Info<S::Info>) -> Task {
            Box::pin(async move { cast_value(s.handle_info(ctx, i).await) })
        }
        match kind {
            abi::MSG_CALL => match S::decode_call(bytes) {
                Ok(req) => Box::pin(async move {
                    let caller = Caller {
                        pid: Pid(from),
                        tag: reference,
                    };
                    call_value(s.handle_call(ctx, req, caller).await)
                }),
                Err(e) => stop_task(ExitReason::FunctionClause(format!(
                    "handle_call: no clause for the message {}: {e}",
                    codec::describe(bytes)
                ))),
            },
            abi::MSG_CAST => match S::decode_cast(bytes) {
                Ok(m) => Box::pin(async move { cast_value(s.handle_cast(ctx, m).await) }),
                Err(e) => stop_task(ExitReason::FunctionClause(format!(
                    "handle_cast: no clause for the message {}: {e}",
                    codec::describe(bytes)
                ))),
            },
            abi::MSG_USER => match S::decode_info(bytes) {
                Ok(m) => info(s, ctx, Info::Msg(m)),
                Err(e) => stop_task(ExitReason::FunctionClause(format!(
                    "handle_info: no clause for the message {}: {e}",
                    codec::describe(bytes)
                ))),
            },
            abi::MSG_EXIT => info(
                s,
                ctx,
                Info::Exit {
                    from: Pid(from),
                    reason: ExitReason::decode(bytes),
                },
            ),
            abi::MSG_DOWN => info(
                s,
                ctx,
                Info::Down {
                    reference: Ref(reference),
                    pid: Pid(from),
                    reason: ExitReason::decode(bytes),
                },
            ),
            abi::HANDLE_TIMEOUT => info(s, ctx, Info::Timeout),
            abi::MSG_PORT => info(
                s,
                ctx,
                Info::Port(crate::net::PortMsg::decode(reference, bytes)),
            ),
            abi::HANDLE_CONTINUE => {
                let c = bytes.to_vec();
                Box::pin(async move { cast_value(s.handle_continue(ctx, c).await) })
            }
            k => stop_task(ExitReason::BadArg(format!(
                "unknown gen_server event kind {k}"
            ))),
        }
    }));
    let mut task = task_or_exit(made);
    let polled = poll_task(&mut task);
    if let Ok(Poll::Pending) = polled {
        // SAFETY: caller contract: `fut_out` is writable.
        unsafe { *fut_out = into_obj(task) };
        return abi::STATUS_PENDING;
    }
    // Finished (or panicked): drop it now; a panic in a destructor replaces the result.
    let dropped = drop_task(task);
    match (polled, dropped) {
        (Ok(Poll::Ready(outcome)), Ok(())) => {
            write_str(out, write, &outcome.into_encoded());
            abi::STATUS_READY
        }
        (Err(m), _) | (_, Err(m)) => {
            write_str(out, write, m.as_bytes());
            abi::STATUS_PANICKED
        }
        (Ok(Poll::Pending), _) => unreachable!("handled above"),
    }
}

/// `ServerVTable::handle_batch` for `S`.
///
/// # Safety
/// As [`server_handle`]; `msgs` must point at `n` readable views.
pub unsafe extern "C" fn server_handle_batch<S: GenServer>(
    proc: *mut abi::ProcHandle,
    state: *mut abi::StateObj,
    msgs: *const abi::MsgView,
    n: usize,
) -> *mut abi::FutureObj {
    // SAFETY: caller contract (see `server_handle`).
    let s: &'static mut S = unsafe { &mut *(state as *mut S) };
    // SAFETY: caller contract.
    let views = unsafe { std::slice::from_raw_parts(msgs, n) };
    // SAFETY: caller contract: `proc` is the handle of the server process.
    let ctx = unsafe { Ctx::from_raw(proc) };
    enum Ev<C, I> {
        Cast(C),
        Info(I),
    }
    type Decoded<S> = Result<Ev<<S as GenServer>::Cast, <S as GenServer>::Info>, ExitReason>;
    let made = catch_unwind(AssertUnwindSafe(move || -> Task {
        // Decode everything now: the views are only valid during this call.
        let events: Vec<Decoded<S>> = views
            .iter()
            .map(|v| {
                // SAFETY: each view's data is readable during this call (caller contract).
                let bytes = unsafe { std::slice::from_raw_parts(v.data.ptr, v.data.len) };
                let clause = |what: &str, e| {
                    ExitReason::FunctionClause(format!(
                        "{what}: no clause for the message {}: {e}",
                        codec::describe(bytes)
                    ))
                };
                match v.kind {
                    abi::MSG_CAST => S::decode_cast(bytes)
                        .map(Ev::Cast)
                        .map_err(|e| clause("handle_cast", e)),
                    _ => S::decode_info(bytes)
                        .map(Ev::Info)
                        .map_err(|e| clause("handle_info", e)),
                }
            })
            .collect();
        Box::pin(async move {
            let mut done: u32 = 0;
            let mut last = CastResult::NoReply;
            for ev in events {
                done += 1;
                last = match ev {
                    Ok(Ev::Cast(m)) => s.handle_cast(ctx, m).await,
                    Ok(Ev::Info(m)) => s.handle_info(ctx, Info::Msg(m)).await,
                    Err(r) => CastResult::Stop(r),
                };
                if last != CastResult::NoReply {
                    break;
                }
            }
            let mut out = done.to_le_bytes().to_vec();
            match last {
                CastResult::NoReply => noreply_into(&mut out, None),
                CastResult::NoReplyThen(a) => noreply_into(&mut out, Some(&a)),
                CastResult::Stop(reason) => stop_into(&mut out, &reason),
            }
            Outcome::Value(out)
        })
    }));
    into_obj(task_or_exit(made))
}

/// `ServerVTable::terminate` for `S`.
///
/// # Safety
/// As [`server_handle`].
pub unsafe extern "C" fn server_terminate<S: GenServer>(
    proc: *mut abi::ProcHandle,
    state: *mut abi::StateObj,
    reason: *const u8,
    len: usize,
) -> *mut abi::FutureObj {
    // SAFETY: caller contract (see `server_handle`).
    let s: &'static mut S = unsafe { &mut *(state as *mut S) };
    // SAFETY: caller contract.
    let reason = ExitReason::decode(unsafe { std::slice::from_raw_parts(reason, len) });
    // SAFETY: caller contract.
    let ctx = unsafe { Ctx::from_raw(proc) };
    into_obj(Box::pin(async move {
        s.terminate(ctx, reason).await;
        Outcome::Value(Vec::new())
    }))
}

fn store_state<S>(state_out: *mut *mut abi::StateObj, s: S) {
    // SAFETY: caller contract of the shims below: `state_out` is writable.
    unsafe { *state_out = Box::into_raw(Box::new(s)) as *mut abi::StateObj };
}

/// `ServerVTable::code_change` for `S`.
///
/// # Safety
/// The byte strings must be readable, `state_out` writable, `out`/`write` the host's.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn server_code_change<S: GenServer>(
    _proc: *mut abi::ProcHandle,
    old_vsn: abi::Bytes,
    state: abi::Bytes,
    extra: abi::Bytes,
    has_extra: u32,
    state_out: *mut *mut abi::StateObj,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    // SAFETY: caller contract.
    let (vsn, bytes, extra) = unsafe {
        (
            std::slice::from_raw_parts(old_vsn.ptr, old_vsn.len),
            std::slice::from_raw_parts(state.ptr, state.len),
            std::slice::from_raw_parts(extra.ptr, extra.len),
        )
    };
    let flags = has_extra;
    let ex = (flags & abi::CODE_CHANGE_EXTRA != 0).then_some(Extra(extra));
    if flags & abi::CODE_CHANGE_EXPORT_DOWN != 0 {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let to = String::from_utf8_lossy(vsn);
            let me: S = codec::decode(bytes).map_err(|e| e.to_string())?;
            me.downgrade(&to, ex)
        }));
        return report(out, write, r);
    }
    let r = catch_unwind(AssertUnwindSafe(|| {
        let vsn = String::from_utf8_lossy(vsn);
        let direction = if flags & abi::CODE_CHANGE_DOWN != 0 {
            Direction::Down
        } else {
            Direction::Up
        };
        let old = OldState {
            vsn: &vsn,
            bytes,
            direction,
        };
        S::code_change(old, ex).map(|s| store_state(state_out, s))
    }));
    report(out, write, r.map(|x| x.map(|()| Vec::new())))
}

/// `ServerVTable::import_state` for `S`.
///
/// # Safety
/// As [`server_code_change`].
pub unsafe extern "C" fn server_import_state<S: GenServer>(
    state: abi::Bytes,
    state_out: *mut *mut abi::StateObj,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    // SAFETY: caller contract.
    let bytes = unsafe { std::slice::from_raw_parts(state.ptr, state.len) };
    let r = catch_unwind(AssertUnwindSafe(|| {
        codec::decode::<S>(bytes)
            .map(|s| {
                store_state(state_out, s);
                Vec::new()
            })
            .map_err(|e| e.to_string())
    }));
    report(out, write, r)
}

/// `ServerVTable::export_state` for `S`.
///
/// # Safety
/// `state` must be a live state of `S` made by this library, not in use by a callback.
pub unsafe extern "C" fn server_export_state<S: GenServer>(
    state: *const abi::StateObj,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    // SAFETY: caller contract.
    let s = unsafe { &*(state as *const S) };
    report(
        out,
        write,
        catch_unwind(AssertUnwindSafe(|| Ok(codec::encode(s)))),
    )
}

/// `ServerVTable::format_status` for `S`: [`abi::STATUS_READY`] with the text, or
/// [`abi::STATUS_ERROR`] when the module has no formatter (or it failed).
///
/// # Safety
/// As [`server_export_state`].
pub unsafe extern "C" fn server_format_status<S: GenServer>(
    state: *const abi::StateObj,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    // SAFETY: caller contract.
    let s = unsafe { &*(state as *const S) };
    let r = catch_unwind(AssertUnwindSafe(|| {
        s.format_status()
            .map(String::into_bytes)
            .ok_or_else(String::new)
    }));
    report(out, write, r)
}

/// `ServerVTable::drop_state` for `S`.
///
/// # Safety
/// `state` must be a live state of `S` made by this library; it is consumed.
pub unsafe extern "C" fn server_drop_state<S: GenServer>(
    state: *mut abi::StateObj,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    // SAFETY: caller contract: made by `Box::into_raw` of an `S`, dropped once.
    let b = unsafe { Box::from_raw(state as *mut S) };
    report(
        out,
        write,
        catch_unwind(AssertUnwindSafe(move || {
            drop(b);
            Ok(Vec::new())
        })),
    )
}

/// The vtable `module!{ gen_server: S }` exports.
pub const fn server_vtable<S: GenServer>() -> abi::ServerVTable {
    abi::ServerVTable {
        init: server_init::<S>,
        handle: server_handle::<S>,
        handle_batch: server_handle_batch::<S>,
        terminate: server_terminate::<S>,
        code_change: server_code_change::<S>,
        import_state: server_import_state::<S>,
        export_state: server_export_state::<S>,
        format_status: server_format_status::<S>,
        drop_state: server_drop_state::<S>,
    }
}

// ---------------------------------------------------------------------------------------
// Type descriptions (`ModuleDescriptor::describe`).

use crate::schema::{describe as describe_type, ModuleSchema, ServerSchema, TypeDesc};

/// A type to describe, through autoref specialisation: `(&Probe::<T>::new())
/// .__hotswap_describe()` traces `T` when it implements `Deserialize` ([`DescribeDe`]) and
/// says why not otherwise ([`DescribeOther`]).
#[derive(Debug)]
pub struct Probe<T>(std::marker::PhantomData<T>);

impl<T> Probe<T> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Probe(std::marker::PhantomData)
    }
}

/// The describing side of [`Probe`].
pub trait DescribeDe {
    fn __hotswap_describe(&self) -> TypeDesc;
}

impl<T: DeserializeOwned> DescribeDe for Probe<T> {
    fn __hotswap_describe(&self) -> TypeDesc {
        describe_type::<T>()
    }
}

/// The fallback side of [`Probe`].
pub trait DescribeOther {
    fn __hotswap_describe(&self) -> TypeDesc;
}

impl<T> DescribeOther for &Probe<T> {
    fn __hotswap_describe(&self) -> TypeDesc {
        TypeDesc::unknown(
            std::any::type_name::<T>(),
            "the type does not implement Deserialize, so it cannot be traced",
        )
    }
}

/// The argument type of an export `async fn(Ctx, A) -> R`.
pub fn describe_arg<A: DeserializeOwned, F, Fut>(_: &F) -> TypeDesc
where
    F: FnOnce(Ctx, A) -> Fut,
{
    describe_type::<A>()
}

/// A [`Probe`] of an async export's result type.
pub fn probe_output<A, F, Fut>(_: &F) -> Probe<Fut::Output>
where
    F: FnOnce(Ctx, A) -> Fut,
    Fut: Future,
{
    Probe::new()
}

/// A [`Probe`] of a synchronous function's result type.
pub fn probe_return<A, R, F>(_: &F) -> Probe<R>
where
    F: FnOnce(Ctx, A) -> R,
{
    Probe::new()
}

/// The state and message types of a gen_server (`reply` is described by the macro, which
/// sees whether `Reply` implements `Deserialize`).
pub fn describe_server<S: GenServer>(reply: TypeDesc) -> ServerSchema {
    ServerSchema {
        state: describe_type::<S>(),
        call: describe_type::<S::Call>(),
        reply,
        cast: describe_type::<S::Cast>(),
        info: describe_type::<S::Info>(),
        accepts: S::accepts(),
    }
}

/// `ModuleDescriptor::describe` body: build the schema and write it encoded.
///
/// # Safety
/// `out`/`write` must be the host's buffer and copy callback.
pub unsafe fn describe(
    out: *mut c_void,
    write: abi::WriteFn,
    build: impl FnOnce() -> ModuleSchema,
) -> u32 {
    report(
        out,
        write,
        catch_unwind(AssertUnwindSafe(|| {
            Ok(crate::schema::describing(build).encode())
        })),
    )
}

//! Support for the `module!` macro's expansion. Not a public API.
#![allow(missing_docs)]

use std::cell::Cell;
use std::ffi::c_void;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::task::{Context, Poll, Waker};

pub use hotswap_abi as abi;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::outcome::{IntoOutcome, Outcome};
use crate::types::ExitReason;
use crate::Ctx;

/// The SDK version recorded in every descriptor.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");
pub use crate::codec::CODEC_ID;
pub use crate::ctx::write_vec;

static HOST: AtomicPtr<abi::HostApi> = AtomicPtr::new(std::ptr::null_mut());

pub(crate) fn host() -> &'static abi::HostApi {
    let p = HOST.load(Ordering::Acquire);
    assert!(
        !p.is_null(),
        "hotswap: no host API installed (module code must run inside a node)"
    );
    // SAFETY: the pointer was installed by `init`/`set_host` from a `&'static HostApi` that
    // lives in the node binary for the life of the process.
    unsafe { &*p }
}

/// Install the host table for this copy of the SDK (used by the node for its own native
/// processes; modules get it through [`init`]).
pub fn set_host(h: &'static abi::HostApi) {
    HOST.store(
        h as *const abi::HostApi as *mut abi::HostApi,
        Ordering::Release,
    );
}

type Task = Pin<Box<dyn Future<Output = Outcome>>>;

thread_local! {
    // Const-initialised and without a destructor, so it registers nothing with the thread's
    // exit machinery and never pins the module (dylib-findings B3).
    static PANIC_AT: Cell<([u8; 120], usize)> = const { Cell::new(([0; 120], 0)) };
}

fn record_location(info: &std::panic::PanicHookInfo<'_>) {
    if let Some(loc) = info.location() {
        let s = format!("{}:{}:{}", loc.file(), loc.line(), loc.column());
        let mut buf = [0u8; 120];
        let n = s.len().min(buf.len());
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        PANIC_AT.with(|c| c.set((buf, n)));
    }
}

pub(crate) fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let msg = if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    };
    let (buf, n) = PANIC_AT.with(|c| c.replace(([0; 120], 0)));
    if n > 0 {
        format!("{msg} (at {})", String::from_utf8_lossy(&buf[..n]))
    } else {
        msg
    }
}

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
    let task: Task = match made {
        Ok(t) => t,
        Err(p) => {
            let r = ExitReason::Panic(panic_message(p));
            Box::pin(async move { Outcome::Exit(r) })
        }
    };
    Box::into_raw(Box::new(task)) as *mut abi::FutureObj
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
/// Called by the node once, with a table that lives for the rest of the process.
pub unsafe extern "C" fn init(
    host: *const abi::HostApi,
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
        // Our own hook: no stderr noise, no `thread::current()` (which would register a
        // thread-exit destructor inside this library), just the location for the reason.
        std::panic::set_hook(Box::new(record_location));
        Ok(Vec::new())
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
    // Every await point of a module future is a host operation; the node re-polls the
    // process whenever anything it waits for happens, so no waker is needed.
    let mut cx = Context::from_waker(Waker::noop());
    match catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(&mut cx))) {
        Ok(Poll::Pending) => abi::STATUS_PENDING,
        Ok(Poll::Ready(outcome)) => {
            write_str(out, write, &outcome.encode());
            abi::STATUS_READY
        }
        Err(p) => {
            write_str(out, write, panic_message(p).as_bytes());
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
    match catch_unwind(AssertUnwindSafe(move || drop(task))) {
        Ok(()) => abi::STATUS_READY,
        Err(p) => {
            write_str(out, write, panic_message(p).as_bytes());
            abi::STATUS_PANICKED
        }
    }
}

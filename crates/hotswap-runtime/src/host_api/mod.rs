//! The host API table: what module code (and native processes) can ask of the node.
//!
//! Every function receives the calling process's handle, which is the address of its
//! [`Process`]; the node only hands a handle to code running inside that process, and the
//! process outlives every call made with it (its future is dropped before it is freed).
//! Every function catches panics: a bug in the node must not unwind into module code.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use hotswap::{ExitReason, Outcome};
use hotswap_abi as abi;

use crate::process::{ops, Body, Payload, Process, Step};

/// # Safety
/// `h` must be a live process handle (see the module docs).
unsafe fn proc_ref<'a>(h: *mut abi::ProcHandle) -> &'a Process {
    // SAFETY: caller contract.
    unsafe { &*(h as *const Process) }
}

/// # Safety
/// `b` must be a readable byte range for the duration of the call.
unsafe fn bytes<'a>(b: abi::Bytes) -> &'a [u8] {
    if b.len == 0 {
        return &[];
    }
    // SAFETY: caller contract.
    unsafe { std::slice::from_raw_parts(b.ptr, b.len) }
}

/// # Safety
/// As [`bytes`].
unsafe fn text<'a>(b: abi::Bytes) -> std::borrow::Cow<'a, str> {
    // SAFETY: caller contract.
    String::from_utf8_lossy(unsafe { bytes(b) })
}

fn guarded<T>(default: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            tracing::error!(
                "node bug: a host function panicked: {}",
                crate::process::panic_text(p)
            );
            default
        }
    }
}

unsafe extern "C" fn self_pid(p: *mut abi::ProcHandle) -> u64 {
    // SAFETY: live handle (module docs).
    unsafe { proc_ref(p) }.pid.0
}

unsafe extern "C" fn now_ns(p: *mut abi::ProcHandle) -> u64 {
    // SAFETY: live handle (module docs).
    unsafe { proc_ref(p) }.node.now_ns()
}

unsafe extern "C" fn send(p: *mut abi::ProcHandle, to: u64, ptr: *const u8, len: usize) -> i32 {
    guarded(0, || {
        // SAFETY: live handle; readable range (ABI contract).
        let (p, data) = unsafe { (proc_ref(p), bytes(abi::Bytes { ptr, len })) };
        p.node.send_slice(p.pid.0, to, data);
        0
    })
}

unsafe extern "C" fn send_named(
    p: *mut abi::ProcHandle,
    name: abi::Bytes,
    ptr: *const u8,
    len: usize,
) -> i32 {
    guarded(-1, || {
        // SAFETY: live handle; readable ranges (ABI contract).
        let (p, name, data) = unsafe { (proc_ref(p), text(name), bytes(abi::Bytes { ptr, len })) };
        match p.node.registry.lock().get(&name) {
            Some(to) => {
                p.node.send(p.pid.0, to, data.to_vec());
                0
            }
            None => -1,
        }
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn receive(
    p: *mut abi::ProcHandle,
    matcher: Option<abi::MatchFn>,
    mdata: *mut c_void,
    deadline: u64,
    header: *mut abi::MsgHeader,
    out: *mut c_void,
    write: Option<abi::WriteFn>,
) -> u32 {
    guarded(abi::STATUS_PENDING, || {
        // SAFETY: live handle (module docs).
        let p = unsafe { proc_ref(p) };
        let mut g = p.inner.lock();
        // The message is copied out where it lies in the mailbox, under the process's lock
        // (the matcher runs there too), and dropped there: see `take_first_with`.
        let deliver = |e: &crate::process::Envelope| {
            // SAFETY: `header` is the caller's out-parameter.
            unsafe {
                *header = abi::MsgHeader {
                    kind: e.kind,
                    from: e.from,
                    reference: e.reference,
                }
            };
            if let Some(w) = write {
                // SAFETY: the caller's copy callback and buffer; our range is valid.
                unsafe { w(out, e.data.as_ptr(), e.data.len()) };
            }
        };
        let found = match matcher {
            // Replies are only ever taken by the call waiting for them.
            None => p.take_first_with(&mut g, |e| e.kind != abi::MSG_REPLY, deliver),
            Some(m) => p.take_first_with(
                &mut g,
                |e| {
                    let view = abi::MsgView {
                        kind: e.kind,
                        from: e.from,
                        reference: e.reference,
                        data: abi::Bytes::new(&e.data),
                    };
                    // SAFETY: the matcher and its data come from the caller for this call;
                    // the view is valid during the callback.
                    unsafe { m(mdata, &view) != 0 }
                },
                deliver,
            ),
        };
        if found.is_some() {
            g.received += 1;
            return abi::STATUS_READY;
        }
        if deadline != u64::MAX {
            if p.node.reached(deadline) {
                return abi::STATUS_TIMEOUT;
            }
            g.wake_at = g.wake_at.min(deadline);
        }
        abi::STATUS_PENDING
    })
}

/// Hand a spawn's result to the caller: the pid and monitor reference, or the message.
///
/// # Safety
/// The out-parameters must be writable and `err`/`write` the caller's buffer and callback.
unsafe fn report_spawn(
    r: Result<(hotswap::Pid, u64), String>,
    pid_out: *mut u64,
    ref_out: *mut u64,
    err: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    match r {
        Ok((pid, mref)) => {
            // SAFETY: caller contract.
            unsafe {
                *pid_out = pid.0;
                *ref_out = mref;
            }
            abi::STATUS_READY
        }
        Err(m) => {
            // SAFETY: caller contract.
            unsafe { write(err, m.as_ptr(), m.len()) };
            abi::STATUS_ERROR
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn spawn(
    p: *mut abi::ProcHandle,
    module: abi::Bytes,
    function: abi::Bytes,
    arg: abi::Bytes,
    flags: u32,
    pid_out: *mut u64,
    ref_out: *mut u64,
    err: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    guarded(abi::STATUS_ERROR, || {
        // SAFETY: live handle; readable ranges (ABI contract).
        let (p, module, function, arg) =
            unsafe { (proc_ref(p), text(module), text(function), bytes(arg)) };
        let r = p
            .node
            .spawn(Some(p), &module, &function, arg, flags)
            .map_err(|e| e.to_string());
        // SAFETY: the caller's out-parameters, copy callback and buffer.
        unsafe { report_spawn(r, pid_out, ref_out, err, write) }
    })
}

unsafe extern "C" fn link(p: *mut abi::ProcHandle, pid: u64) -> i32 {
    // SAFETY: live handle (module docs).
    guarded(0, || ops::link(unsafe { proc_ref(p) }, pid))
}

unsafe extern "C" fn unlink(p: *mut abi::ProcHandle, pid: u64) -> i32 {
    // SAFETY: live handle (module docs).
    guarded(0, || ops::unlink(unsafe { proc_ref(p) }, pid))
}

unsafe extern "C" fn monitor(p: *mut abi::ProcHandle, pid: u64) -> u64 {
    // SAFETY: live handle (module docs).
    guarded(0, || ops::monitor(unsafe { proc_ref(p) }, pid))
}

unsafe extern "C" fn demonitor(p: *mut abi::ProcHandle, r: u64) -> i32 {
    guarded(0, || {
        // SAFETY: live handle (module docs).
        let p = unsafe { proc_ref(p) };
        ops::demonitor(p, r) as i32
    })
}

unsafe extern "C" fn trap_exit(p: *mut abi::ProcHandle, on: i32) -> i32 {
    guarded(0, || {
        // SAFETY: live handle (module docs).
        let mut g = unsafe { proc_ref(p) }.inner.lock();
        std::mem::replace(&mut g.trap_exit, on != 0) as i32
    })
}

unsafe extern "C" fn exit(p: *mut abi::ProcHandle, pid: u64, reason: abi::Bytes) -> i32 {
    guarded(0, || {
        // SAFETY: live handle; readable range (ABI contract).
        let (p, r) = unsafe { (proc_ref(p), bytes(reason)) };
        let reason = ExitReason::decode(r);
        if let Some(t) = p.node.table.get(pid) {
            t.signal_exit(p.pid.0, &reason, false);
        }
        0
    })
}

unsafe extern "C" fn register(p: *mut abi::ProcHandle, name: abi::Bytes, pid: u64) -> i32 {
    guarded(-1, || {
        // SAFETY: live handle; readable range (ABI contract).
        let (p, name) = unsafe { (proc_ref(p), text(name)) };
        if p.node.register(&name, pid) {
            0
        } else {
            -1
        }
    })
}

unsafe extern "C" fn unregister(p: *mut abi::ProcHandle, name: abi::Bytes) -> i32 {
    guarded(-1, || {
        // SAFETY: live handle; readable range (ABI contract).
        let (p, name) = unsafe { (proc_ref(p), text(name)) };
        if p.node.unregister(&name) {
            0
        } else {
            -1
        }
    })
}

unsafe extern "C" fn whereis(p: *mut abi::ProcHandle, name: abi::Bytes) -> u64 {
    guarded(0, || {
        // SAFETY: live handle; readable range (ABI contract).
        let (p, name) = unsafe { (proc_ref(p), text(name)) };
        p.node.registry.lock().get(&name).unwrap_or(0)
    })
}

unsafe extern "C" fn send_after(
    p: *mut abi::ProcHandle,
    ms: u64,
    to: u64,
    ptr: *const u8,
    len: usize,
) -> u64 {
    guarded(0, || {
        // SAFETY: live handle; readable range (ABI contract).
        let (p, data) = unsafe { (proc_ref(p), bytes(abi::Bytes { ptr, len })) };
        p.node
            .send_after(p.pid.0, Duration::from_millis(ms), to, data.to_vec())
    })
}

unsafe extern "C" fn cancel_timer(p: *mut abi::ProcHandle, r: u64) -> i64 {
    guarded(-1, || {
        // SAFETY: live handle (module docs).
        let p = unsafe { proc_ref(p) };
        p.node
            .cancel_timer(r)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(-1)
    })
}

unsafe extern "C" fn log(p: *mut abi::ProcHandle, level: u32, ptr: *const u8, len: usize) {
    guarded((), || {
        // SAFETY: live handle; readable range (ABI contract).
        let (p, msg) = unsafe { (proc_ref(p), text(abi::Bytes { ptr, len })) };
        let pid = p.pid;
        match level {
            0 => tracing::error!(target: "hotswap::module", %pid, "{msg}"),
            1 => tracing::warn!(target: "hotswap::module", %pid, "{msg}"),
            2 => tracing::info!(target: "hotswap::module", %pid, "{msg}"),
            3 => tracing::debug!(target: "hotswap::module", %pid, "{msg}"),
            _ => tracing::trace!(target: "hotswap::module", %pid, "{msg}"),
        }
    })
}

/// A fully-qualified call in progress: the callee's body, bound to its version.
struct CallState {
    body: Option<Body>,
}

unsafe extern "C" fn apply_start(
    p: *mut abi::ProcHandle,
    module: abi::Bytes,
    function: abi::Bytes,
    arg: abi::Bytes,
    err: *mut c_void,
    write: abi::WriteFn,
) -> *mut abi::CallHandle {
    guarded(std::ptr::null_mut(), || {
        // SAFETY: live handle; readable ranges (ABI contract).
        let (p, module, function, arg) =
            unsafe { (proc_ref(p), text(module), text(function), bytes(arg)) };
        match p.node.start_body(p, &module, &function, arg) {
            Ok(body) => {
                Box::into_raw(Box::new(CallState { body: Some(body) })) as *mut abi::CallHandle
            }
            Err(e) => {
                // `ApplyError::Undef` on the caller's side says "undef" itself.
                let m = e.caller_text();
                // SAFETY: the caller's copy callback and buffer.
                unsafe { write(err, m.as_ptr(), m.len()) };
                std::ptr::null_mut()
            }
        }
    })
}

fn drop_body(p: &Process, body: Body) {
    if let Some(v) = body.version().cloned() {
        drop(body);
        p.unbind(v);
    }
}

unsafe extern "C" fn apply_poll(
    p: *mut abi::ProcHandle,
    h: *mut abi::CallHandle,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    guarded(abi::STATUS_PANICKED, || {
        // SAFETY: live handle; `h` came from `apply_start` and is not dropped (ABI contract).
        let (p, cs) = unsafe { (proc_ref(p), &mut *(h as *mut CallState)) };
        loop {
            let Some(body) = cs.body.as_mut() else {
                return abi::STATUS_PANICKED;
            };
            // A callee's body is a module's (started by `start_body`): woken by the
            // caller's mailbox, like the caller.
            let (status, bytes) = match body.poll(std::task::Waker::noop()) {
                Step::Pending => return abi::STATUS_PENDING,
                Step::Done(Outcome::Continue {
                    module,
                    function,
                    arg,
                }) => match p.node.start_body(p, &module, &function, &arg) {
                    Ok(next) => {
                        let old = cs.body.replace(next).expect("checked");
                        drop_body(p, old);
                        continue;
                    }
                    Err(e) => (abi::STATUS_READY, Outcome::Exit(e.exit_reason()).encode()),
                },
                Step::Done(o) => (abi::STATUS_READY, o.encode()),
                Step::Panicked(m) => (abi::STATUS_PANICKED, m.into_bytes()),
            };
            // SAFETY: the caller's copy callback and buffer.
            unsafe { write(out, bytes.as_ptr(), bytes.len()) };
            return status;
        }
    })
}

unsafe extern "C" fn apply_drop(p: *mut abi::ProcHandle, h: *mut abi::CallHandle) {
    guarded((), || {
        // SAFETY: live handle; `h` came from `apply_start` and is dropped once (ABI contract).
        let (p, cs) = unsafe { (proc_ref(p), Box::from_raw(h as *mut CallState)) };
        if let Some(b) = cs.body {
            drop_body(p, b);
        }
    })
}

unsafe extern "C" fn resolve(
    p: *mut abi::ProcHandle,
    module: abi::Bytes,
    function: abi::Bytes,
    out: *mut abi::Resolved,
    err: *mut c_void,
    write: abi::WriteFn,
) -> *const abi::ExportSlot {
    guarded(std::ptr::null(), || {
        // SAFETY: live handle; readable ranges (ABI contract).
        let (p, module, function) = unsafe { (proc_ref(p), text(module), text(function)) };
        match p.node.code.resolve(&module, &function) {
            Ok((slot, r)) => {
                // SAFETY: the caller's out-parameter.
                unsafe { *out = r };
                slot
            }
            Err(m) => {
                // SAFETY: the caller's copy callback and buffer.
                unsafe { write(err, m.as_ptr(), m.len()) };
                std::ptr::null()
            }
        }
    })
}

/// A synchronous fully-qualified call (`Ctx::function`): counted in the version's
/// quiescence while it runs, refused as stale if the version is no longer current. Not
/// `guarded`: nothing here panics, and module code catches its own panics.
unsafe extern "C" fn call(
    p: *mut abi::ProcHandle,
    slot: *const abi::ExportSlot,
    res: *const abi::Resolved,
    arg: *const u8,
    arg_len: usize,
    out: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    // SAFETY: live handle; `slot` is a node-owned export slot (it lives forever) and `res`
    // the caller's resolution, both readable for the call (ABI contract).
    let (proc, slot, res) = unsafe { (proc_ref(p), &*slot, &*res) };
    let Some(f) = res.call else {
        return abi::STATUS_STALE;
    };
    if crate::code::guard::in_module() {
        // Called from module code (the fast path): this thread has been inside module code
        // since before its poll began, and stays inside until after this call returns, so
        // a resolution that is still current here cannot be freed under it: a purge (and
        // `retry_pinned`) waits for every thread inside module code to leave first.
        if slot.generation.load(std::sync::atomic::Ordering::SeqCst) != res.generation {
            return abi::STATUS_STALE;
        }
        // SAFETY: `f` belongs to the module's current version (checked just above, with
        // this thread inside module code); the argument range and buffer are valid.
        return unsafe { f(p, arg, arg_len, out, write) };
    }
    // From host code (a native process): enter module code here, and count the call.
    crate::code::Version::call_resolved(proc.node.code.node_id(), slot, res, || {
        // SAFETY: `f` belongs to the version `call_resolved` entered, which stays mapped
        // while it is counted; the argument range and the caller's buffer are valid.
        unsafe { f(p, arg, arg_len, out, write) }
    })
    .unwrap_or(abi::STATUS_STALE)
}

unsafe extern "C" fn new_ref(p: *mut abi::ProcHandle) -> u64 {
    // SAFETY: live handle (module docs).
    guarded(0, || unsafe { proc_ref(p) }.node.new_ref())
}

unsafe extern "C" fn post(
    p: *mut abi::ProcHandle,
    to: u64,
    name: abi::Bytes,
    kind: u32,
    reference: u64,
    data: abi::Bytes,
) -> i32 {
    guarded(-1, || {
        // SAFETY: live handle; readable range (ABI contract).
        let (p, data) = unsafe { (proc_ref(p), bytes(data)) };
        let to = if to != 0 {
            to
        } else {
            // SAFETY: readable range (ABI contract).
            let name = unsafe { text(name) };
            match p.node.registry.lock().get(&name) {
                Some(pid) => pid,
                None => return -1,
            }
        };
        if to == p.pid.0 && (kind == abi::MSG_CALL || kind == abi::MSG_SYSTEM) {
            return -2;
        }
        if kind == abi::MSG_REPLY {
            // A server answering a call it deferred: it no longer owes that caller.
            if let Some(rel) = p.inner.lock().rel.as_mut() {
                if let Some(i) = rel.callers.iter().position(|c| *c == (to, reference)) {
                    rel.callers.swap_remove(i);
                }
            }
        }
        if p.node
            .post(p.pid.0, to, kind, reference, Payload::from_slice(data))
        {
            0
        } else {
            -1
        }
    })
}

unsafe extern "C" fn alias(p: *mut abi::ProcHandle, tag: u64, on: i32) {
    guarded((), || {
        // SAFETY: live handle (module docs).
        let p = unsafe { proc_ref(p) };
        let mut g = p.inner.lock();
        if on != 0 {
            g.rel().aliases.push(tag);
        } else if let Some(rel) = g.rel.as_mut() {
            if let Some(i) = rel.aliases.iter().position(|t| *t == tag) {
                rel.aliases.swap_remove(i);
            }
        }
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn start_server(
    p: *mut abi::ProcHandle,
    module: abi::Bytes,
    arg: abi::Bytes,
    name: abi::Bytes,
    flags: u32,
    tag: u64,
    pid_out: *mut u64,
    ref_out: *mut u64,
    err: *mut c_void,
    write: abi::WriteFn,
) -> u32 {
    guarded(abi::STATUS_ERROR, || {
        // SAFETY: live handle; readable ranges (ABI contract).
        let (p, module, arg, name) = unsafe { (proc_ref(p), text(module), bytes(arg), text(name)) };
        let name = (!name.is_empty()).then_some(&*name);
        let node = p.node.clone();
        let r = node
            .start_server(p, &module, arg, name, flags, tag)
            .map(|(pid, mref, vsn)| {
                // SAFETY: the caller's copy callback and buffer (the version, on success).
                unsafe { write(err, vsn.as_ptr(), vsn.len()) };
                (pid, mref)
            })
            .map_err(|f| match f {
                crate::behaviour::server::StartFail::Taken(pid) => {
                    // SAFETY: the caller's out-parameter (the holder of the name).
                    unsafe { *pid_out = pid.0 };
                    format!("already_started: {pid}")
                }
                crate::behaviour::server::StartFail::Other(m) => m,
            });
        // SAFETY: the caller's out-parameters, copy callback and buffer.
        unsafe { report_spawn(r, pid_out, ref_out, err, write) }
    })
}

static TABLE: abi::HostApi = abi::HostApi {
    abi_version: abi::ABI_VERSION,
    size: std::mem::size_of::<abi::HostApi>() as u32,
    self_pid,
    now_ns,
    send,
    send_named,
    receive,
    spawn,
    link,
    unlink,
    monitor,
    demonitor,
    trap_exit,
    exit,
    register,
    unregister,
    whereis,
    send_after,
    cancel_timer,
    log,
    apply_start,
    apply_poll,
    apply_drop,
    resolve,
    new_ref,
    post,
    alias,
    start_server,
    call,
    heap_alloc: crate::code::heap::heap_alloc,
    heap_alloc_zeroed: crate::code::heap::heap_alloc_zeroed,
    heap_realloc: crate::code::heap::heap_realloc,
    heap_free: crate::code::heap::heap_free,
    net: crate::net::host::net,
};

/// The node's host API table.
pub(crate) fn table() -> &'static abi::HostApi {
    &TABLE
}

/// Install the table into the node's own copy of the SDK (for native processes).
pub(crate) fn install() {
    hotswap::private::set_host(&TABLE);
}

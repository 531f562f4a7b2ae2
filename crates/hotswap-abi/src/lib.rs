//! The frozen C ABI between a hotswap node (the host) and a native module (a `cdylib`).
//!
//! Nothing here has logic: these are the `#[repr(C)]` types and function-pointer types that
//! cross the boundary, and the constants both sides agree on. The rules (see
//! `architecture.md` §2) are:
//!
//! * **Only bytes cross.** Arguments are host-owned `(ptr, len)` pairs borrowed for the
//!   duration of one call; results are handed back through a host [`WriteFn`] that copies
//!   them into host memory. The host never keeps a pointer into a module image after a call.
//! * **Objects a module creates stay opaque** ([`FutureObj`]) and are destroyed through the
//!   same version's [`DropFn`].
//! * **Every module export catches panics** and reports them as [`STATUS_PANICKED`].
//! * **The descriptor is read before any module function runs**: it is a `static`
//!   ([`DESCRIPTOR_SYMBOL`]) whose first fields ([`ModuleDescriptor::magic`],
//!   [`ModuleDescriptor::abi_version`], [`ModuleDescriptor::size`]) never change layout.
#![no_std]

use core::ffi::c_void;
use core::sync::atomic::AtomicU64;

/// The ABI version this crate describes. Bumped on any layout change of the types below.
/// (3: [`HostApi::call`]; 4: [`InitFn`] receives the version's heap, and [`HostApi`]
/// gained the heap functions; 5: [`HostApi::net`] at the end; 6:
/// [`ModuleDescriptor::describe`].)
pub const ABI_VERSION: u32 = 6;

/// The first eight bytes of every [`ModuleDescriptor`].
pub const MAGIC: [u8; 8] = *b"HOTSWAP\0";

/// The exported symbol (a `static ModuleDescriptor`) the node looks up in a module.
pub const DESCRIPTOR_SYMBOL: &str = "HOTSWAP_MODULE_DESCRIPTOR";

/// The same symbol as a NUL-terminated C string, for `dlsym`.
pub const DESCRIPTOR_SYMBOL_C: &core::ffi::CStr = c"HOTSWAP_MODULE_DESCRIPTOR";

/// Status: the future is not finished, or no message matched yet.
pub const STATUS_PENDING: u32 = 0;
/// Status: finished; the result was written through the [`WriteFn`].
pub const STATUS_READY: u32 = 1;
/// Status: module code panicked; the panic message was written through the [`WriteFn`].
pub const STATUS_PANICKED: u32 = 2;
/// Status: a receive's deadline passed with no matching message.
pub const STATUS_TIMEOUT: u32 = 3;
/// Status: the operation failed; an error message was written through the [`WriteFn`].
pub const STATUS_ERROR: u32 = 4;
/// Status of [`HostApi::call`]: the resolution is out of date (the module's current
/// version changed since it was made); nothing was called. Resolve again.
pub const STATUS_STALE: u32 = 5;

/// Message kind: an ordinary message sent with `send`.
pub const MSG_USER: u32 = 0;
/// Message kind: a trapped exit signal `{'EXIT', From, Reason}`; data is an encoded exit reason.
pub const MSG_EXIT: u32 = 1;
/// Message kind: a monitor notification `{'DOWN', Ref, process, Pid, Reason}`.
pub const MSG_DOWN: u32 = 2;

/// Message kind: a `gen_server` call `{'$gen_call', {From, Tag}, Req}`; `reference` is the
/// tag the reply must carry.
pub const MSG_CALL: u32 = 3;
/// Message kind: a `gen_server` cast `{'$gen_cast', Msg}`.
pub const MSG_CAST: u32 = 4;
/// Message kind: the reply to a call or a system request; `reference` is its tag. Only
/// delivered while the receiver still waits for that tag (late replies are dropped).
pub const MSG_REPLY: u32 = 5;
/// Message kind: a system request `{system, {From, Tag}, Req}` (the `sys` protocol).
pub const MSG_SYSTEM: u32 = 6;

/// Message kind: an event of a port (socket) the receiver owns (`hotswap::net`):
/// `reference` is the port id, the data an encoded `hotswap::net::PortMsg` event.
pub const MSG_PORT: u32 = 7;

/// [`HostApi::net`] operation: a request encoded by `hotswap::net` (MessagePack).
pub const NET_REQUEST: u32 = 0;
/// [`HostApi::net`] operation: send the argument bytes on a connected port (the fast path).
pub const NET_SEND: u32 = 1;
/// [`HostApi::net`] operation: set the active mode; the argument is one mode byte (0
/// passive, 1 once, 2 N, 3 true) and, for N, an `i32 LE` count.
pub const NET_ACTIVE: u32 = 2;

/// [`ServerVTable::handle`] kind: no message arrived within the callback's timeout.
pub const HANDLE_TIMEOUT: u32 = 100;
/// [`ServerVTable::handle`] kind: `handle_continue` with the data of a continue action.
pub const HANDLE_CONTINUE: u32 = 101;

/// Spawn flag: link the new process to the caller before it runs.
pub const SPAWN_LINK: u32 = 1;
/// Spawn flag: monitor the new process from the caller before it runs.
pub const SPAWN_MONITOR: u32 = 2;

/// Outcome tag (first byte of a READY result): a value; for a process body, a normal exit.
pub const OUTCOME_VALUE: u8 = 0;
/// Outcome tag: the process exits with the encoded reason that follows.
pub const OUTCOME_EXIT: u8 = 1;
/// Outcome tag: a fully-qualified tail call `module:function(arg)` resolved by the node
/// against the current version. Layout after the tag: `u32 LE` module length, module bytes,
/// `u32 LE` function length, function bytes, then the argument bytes.
pub const OUTCOME_CONTINUE: u8 = 2;

/// `ServerVTable::code_change` flag: `extra` is given.
pub const CODE_CHANGE_EXTRA: u32 = 1;
/// `ServerVTable::code_change` flag: the state comes from a newer version (a downgrade).
pub const CODE_CHANGE_DOWN: u32 = 2;
/// `ServerVTable::code_change` flag: encode this version's state for the older version
/// `old_vsn` (the first half of a downgrade) instead of building a state.
pub const CODE_CHANGE_EXPORT_DOWN: u32 = 4;

/// Opaque `gen_server` state created by a module version (its `init` or `code_change`) and
/// only touched through that version's [`ServerVTable`].
#[repr(C)]
#[derive(Debug)]
pub struct StateObj {
    _private: [u8; 0],
}

/// The `gen_server` callbacks of a module (`module!{ gen_server: Type }`). Results of the
/// futures are [`OUTCOME_VALUE`] outcomes whose bytes the SDK and the node agree on
/// (`hotswap::gen_server` documents the layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ServerVTable {
    /// `init(arg)`: a future whose value carries the new [`StateObj`] pointer.
    pub init: StartFn,
    /// Handle one event (`kind`: [`MSG_CALL`], [`MSG_CAST`], [`MSG_USER`], [`MSG_EXIT`],
    /// [`MSG_DOWN`], [`HANDLE_TIMEOUT`], [`HANDLE_CONTINUE`]). The callback is polled once
    /// at once: if it finishes, its outcome is written through `write` and
    /// [`STATUS_READY`] returned; if it waits, the future is stored in `fut_out` (the
    /// state borrowed until it is dropped) and [`STATUS_PENDING`] returned; a panic writes
    /// its message and returns [`STATUS_PANICKED`].
    pub handle: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        state: *mut StateObj,
        kind: u32,
        from: u64,
        reference: u64,
        data: *const u8,
        len: usize,
        out: *mut c_void,
        write: WriteFn,
        fut_out: *mut *mut FutureObj,
    ) -> u32,
    /// A run of queued casts ([`MSG_CAST`]) and plain messages ([`MSG_USER`]), handled in
    /// order by one future (the messages are decoded during this call; the views need not
    /// outlive it). The batch stops after the first event whose result is not a plain
    /// noreply. The future's value is the number of events handled (`u32 LE`) followed by
    /// the last one's result, in [`ServerVTable::handle`]'s layout.
    pub handle_batch: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        state: *mut StateObj,
        msgs: *const MsgView,
        n: usize,
    ) -> *mut FutureObj,
    /// `terminate(reason)` (encoded exit reason), the state borrowed until the future is
    /// dropped.
    pub terminate: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        state: *mut StateObj,
        reason: *const u8,
        len: usize,
    ) -> *mut FutureObj,
    /// `code_change(old_vsn, old_state_bytes, extra)`: on [`STATUS_READY`] the new state
    /// is stored in `state_out`; otherwise a message is written. `has_extra` holds flags:
    /// [`CODE_CHANGE_EXTRA`] when `extra` is given (it is not when the change is implicit,
    /// no `sys:change_code`), [`CODE_CHANGE_DOWN`] when the state comes from a newer
    /// version (a downgrade), and [`CODE_CHANGE_EXPORT_DOWN`] to ask this (newer) version
    /// to encode `state`, its own encoded state, for the older version `old_vsn`: the
    /// bytes are written to `out` and `state_out` is left alone.
    pub code_change: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        old_vsn: Bytes,
        state: Bytes,
        extra: Bytes,
        has_extra: u32,
        state_out: *mut *mut StateObj,
        out: *mut c_void,
        write: WriteFn,
    ) -> u32,
    /// Build a state of this version from bytes it exported (`sys:replace_state`): on
    /// [`STATUS_READY`] the state is stored in `state_out`, otherwise a message is written.
    pub import_state: unsafe extern "C" fn(
        state: Bytes,
        state_out: *mut *mut StateObj,
        out: *mut c_void,
        write: WriteFn,
    ) -> u32,
    /// Encode the state (MessagePack, named fields) through `write`.
    pub export_state:
        unsafe extern "C" fn(state: *const StateObj, out: *mut c_void, write: WriteFn) -> u32,
    /// The state as text for `sys:get_status` (`format_status`).
    pub format_status:
        unsafe extern "C" fn(state: *const StateObj, out: *mut c_void, write: WriteFn) -> u32,
    /// Destroy the state (running the module's destructors).
    pub drop_state:
        unsafe extern "C" fn(state: *mut StateObj, out: *mut c_void, write: WriteFn) -> u32,
}

// SAFETY: immutable static data of the module image (function pointers only).
unsafe impl Sync for ServerVTable {}

/// A borrowed byte string: `len` bytes at `ptr`. Valid only for the call it is passed to,
/// except in the descriptor, where it points into the module image (the host copies it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Bytes {
    /// First byte (may be dangling when `len == 0`).
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl Bytes {
    /// Borrow a byte slice as an ABI byte string.
    pub const fn new(s: &[u8]) -> Self {
        Bytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
}

/// Opaque process handle owned by the host. Valid while the process it names is alive and
/// only on the thread that is polling or starting that process.
#[repr(C)]
#[derive(Debug)]
pub struct ProcHandle {
    _private: [u8; 0],
}

/// Opaque future created by a module version and only touched through that version's
/// [`PollFn`] and [`DropFn`].
#[repr(C)]
#[derive(Debug)]
pub struct FutureObj {
    _private: [u8; 0],
}

/// Opaque handle for a fully-qualified call in progress (`apply`), owned by the host.
#[repr(C)]
#[derive(Debug)]
pub struct CallHandle {
    _private: [u8; 0],
}

/// Host callback that copies `len` bytes at `ptr` into the host buffer `out`.
pub type WriteFn = unsafe extern "C" fn(out: *mut c_void, ptr: *const u8, len: usize);

/// Module function: start export `index` of this version for process `proc` with the encoded
/// argument. Never returns null: an undecodable argument yields a future that finishes with
/// an exit outcome.
pub type StartFn =
    unsafe extern "C" fn(proc: *mut ProcHandle, arg: *const u8, arg_len: usize) -> *mut FutureObj;

/// Module function: poll a future once. Returns [`STATUS_PENDING`], [`STATUS_READY`] (the
/// outcome bytes were written to `out`) or [`STATUS_PANICKED`] (the message was written).
pub type PollFn =
    unsafe extern "C" fn(fut: *mut FutureObj, out: *mut c_void, write: WriteFn) -> u32;

/// Module function: call a synchronous exported function with the encoded argument. Returns
/// [`STATUS_READY`] (the encoded result was written to `out`), [`STATUS_PANICKED`] or
/// [`STATUS_ERROR`] (a message was written: e.g. the argument did not decode).
pub type CallFn = unsafe extern "C" fn(
    proc: *mut ProcHandle,
    arg: *const u8,
    arg_len: usize,
    out: *mut c_void,
    write: WriteFn,
) -> u32;

/// Module function: destroy a future (running the module's destructors). Returns
/// [`STATUS_READY`], or [`STATUS_PANICKED`] with the message written if a destructor panicked.
pub type DropFn =
    unsafe extern "C" fn(fut: *mut FutureObj, out: *mut c_void, write: WriteFn) -> u32;

/// Module function: called once after the descriptor was accepted, before any export runs.
/// `heap` is the version's own heap (see [`HostApi::heap_alloc`]), or 0: the module then
/// allocates with the system allocator. Returns [`STATUS_READY`] with [`HEAP_IN_USE`] or
/// [`HEAP_NOT_USED`] written (whether the module's allocations go to `heap` from now on),
/// or [`STATUS_PANICKED`]/[`STATUS_ERROR`] with a message written.
pub type InitFn =
    unsafe extern "C" fn(host: *const HostApi, heap: u64, out: *mut c_void, write: WriteFn) -> u32;

/// What a successful [`InitFn`] writes when the module allocates from the heap it was given.
pub const HEAP_IN_USE: &[u8] = b"heap";
/// What a successful [`InitFn`] writes when the module allocates elsewhere (it was given no
/// heap, or it had to use the system allocator before `init`): nothing goes to the heap.
pub const HEAP_NOT_USED: &[u8] = b"system";

/// Module function: write the module's description of its types (the SDK's
/// `hotswap::schema::ModuleSchema`, MessagePack with named fields) through `write`. Runs no
/// other module code and needs no host API (it may be called before [`InitFn`]). Returns
/// [`STATUS_READY`], or [`STATUS_PANICKED`]/[`STATUS_ERROR`] with a message written.
pub type DescribeFn = unsafe extern "C" fn(out: *mut c_void, write: WriteFn) -> u32;

/// One exported function of a module.
#[repr(C)]
#[derive(Debug)]
pub struct Export {
    /// The function's name as callers spell it (`module:name`).
    pub name: Bytes,
    /// Starts the function as a future.
    pub start: StartFn,
}

/// One synchronous exported function of a module.
#[repr(C)]
#[derive(Debug)]
pub struct Function {
    /// The function's name as callers spell it (`module:name`).
    pub name: Bytes,
    /// Calls it.
    pub call: CallFn,
}

/// A module's entry in the node's export table, owned by the node and never freed. Its
/// `generation` changes (under the code server's lock) whenever the module's current
/// version does, so a caller that cached a resolution re-resolves exactly then.
#[repr(C)]
#[derive(Debug)]
pub struct ExportSlot {
    /// Bumped on every change of the module's current version.
    pub generation: AtomicU64,
}

/// A resolution of `module:function` against the current version. Module code never
/// calls `call` itself: it hands the resolution to [`HostApi::call`], which checks that it
/// is still current and counts the call in the version's quiescence while it runs.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Resolved {
    /// The [`ExportSlot::generation`] the resolution is valid for.
    pub generation: u64,
    /// The current version's function.
    pub call: Option<CallFn>,
    /// The host's token for the version `call` belongs to (opaque to modules).
    pub version: *const c_void,
}

/// What a module tells the node about itself. Exported as the `static`
/// [`DESCRIPTOR_SYMBOL`]; read by the node before any module code runs.
#[repr(C)]
#[derive(Debug)]
pub struct ModuleDescriptor {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The [`ABI_VERSION`] the module was built against.
    pub abi_version: u32,
    /// `size_of::<ModuleDescriptor>()` as the module saw it.
    pub size: u32,
    /// Module name (what `spawn(module, ..)` names).
    pub name: Bytes,
    /// Module version string.
    pub version: Bytes,
    /// Unique per build of the module.
    pub build_id: Bytes,
    /// Version of the SDK crate the module was built with.
    pub sdk_version: Bytes,
    /// Identifier of the message encoding the SDK uses (both sides must agree).
    pub codec: Bytes,
    /// 1 if the module was built with `panic = "unwind"`, 0 for `panic = "abort"`.
    pub panic_unwind: u8,
    /// Exported functions.
    pub exports: *const Export,
    /// Number of exported functions.
    pub exports_len: usize,
    /// Synchronous exported functions.
    pub functions: *const Function,
    /// Number of synchronous exported functions.
    pub functions_len: usize,
    /// See [`InitFn`].
    pub init: InitFn,
    /// See [`PollFn`].
    pub poll: PollFn,
    /// See [`DropFn`].
    pub drop_future: DropFn,
    /// The module's `gen_server` callbacks, or null.
    pub server: *const ServerVTable,
    /// Describes the module's state and message types (see [`DescribeFn`]); `None` for a
    /// module that describes nothing (its loads are not checked for compatibility).
    pub describe: Option<DescribeFn>,
}

// SAFETY: the descriptor is immutable static data: its raw pointers point at other immutable
// statics of the same module image and are only read.
unsafe impl Sync for ModuleDescriptor {}
// SAFETY: as above; `Export` is part of the immutable descriptor data.
unsafe impl Sync for Export {}
// SAFETY: as above; `Function` is part of the immutable descriptor data.
unsafe impl Sync for Function {}

/// A message as the host shows it to a module's receive matcher.
#[repr(C)]
#[derive(Debug)]
pub struct MsgView {
    /// [`MSG_USER`], [`MSG_EXIT`] or [`MSG_DOWN`].
    pub kind: u32,
    /// Sender (user messages), exiting process (exit/down).
    pub from: u64,
    /// Monitor reference for [`MSG_DOWN`], else 0.
    pub reference: u64,
    /// Payload: the message bytes, or an encoded exit reason.
    pub data: Bytes,
}

/// Module callback deciding whether a message matches a selective receive (1) or not (0).
pub type MatchFn = unsafe extern "C" fn(data: *mut c_void, msg: *const MsgView) -> u8;

/// Where the host stores the header of a received message.
#[repr(C)]
#[derive(Debug, Default)]
pub struct MsgHeader {
    /// See [`MsgView::kind`].
    pub kind: u32,
    /// See [`MsgView::from`].
    pub from: u64,
    /// See [`MsgView::reference`].
    pub reference: u64,
}

/// The functions a node offers to module code. A single immutable table in the host binary.
/// Every function takes the calling process's handle first.
#[repr(C)]
#[derive(Debug)]
pub struct HostApi {
    /// The host's [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<HostApi>()` in the host.
    pub size: u32,
    /// The calling process's pid.
    pub self_pid: unsafe extern "C" fn(proc: *mut ProcHandle) -> u64,
    /// Monotonic clock in nanoseconds (node-wide epoch).
    pub now_ns: unsafe extern "C" fn(proc: *mut ProcHandle) -> u64,
    /// Send bytes to a pid. Sending to a dead pid succeeds silently (as in Erlang). Returns 0.
    pub send:
        unsafe extern "C" fn(proc: *mut ProcHandle, to: u64, ptr: *const u8, len: usize) -> i32,
    /// Send bytes to a registered name. Returns 0, or -1 if the name is not registered.
    pub send_named:
        unsafe extern "C" fn(proc: *mut ProcHandle, name: Bytes, ptr: *const u8, len: usize) -> i32,
    /// Selective receive: scan the mailbox in arrival order and take the first message the
    /// matcher accepts (a null matcher accepts anything). On a match, writes the header to
    /// `header`, copies the payload through `write` (if non-null) and returns
    /// [`STATUS_READY`]. Otherwise returns [`STATUS_TIMEOUT`] if `deadline_ns` (on the
    /// [`HostApi::now_ns`] clock; `u64::MAX` = none) has passed, else [`STATUS_PENDING`] and
    /// the host will poll the process again when a message arrives or the deadline passes.
    pub receive: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        matcher: Option<MatchFn>,
        match_data: *mut c_void,
        deadline_ns: u64,
        header: *mut MsgHeader,
        out: *mut c_void,
        write: Option<WriteFn>,
    ) -> u32,
    /// Spawn `module:function(arg)` on the current version; `flags` is a mix of
    /// [`SPAWN_LINK`] and [`SPAWN_MONITOR`]. On success writes the pid (and monitor
    /// reference) and returns [`STATUS_READY`]; on failure writes an error message and
    /// returns [`STATUS_ERROR`].
    pub spawn: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        module: Bytes,
        function: Bytes,
        arg: Bytes,
        flags: u32,
        pid_out: *mut u64,
        ref_out: *mut u64,
        err: *mut c_void,
        write: WriteFn,
    ) -> u32,
    /// Link with a process (a dead one delivers a `noproc` exit signal). Returns 0.
    pub link: unsafe extern "C" fn(proc: *mut ProcHandle, pid: u64) -> i32,
    /// Remove a link. Returns 0.
    pub unlink: unsafe extern "C" fn(proc: *mut ProcHandle, pid: u64) -> i32,
    /// Monitor a process; returns the reference (a dead one delivers `DOWN noproc` at once).
    pub monitor: unsafe extern "C" fn(proc: *mut ProcHandle, pid: u64) -> u64,
    /// Remove a monitor. Returns 1 if it was active, 0 otherwise.
    pub demonitor: unsafe extern "C" fn(proc: *mut ProcHandle, reference: u64) -> i32,
    /// Set the trap-exit flag (0/1); returns the previous value.
    pub trap_exit: unsafe extern "C" fn(proc: *mut ProcHandle, on: i32) -> i32,
    /// Send an exit signal with an encoded reason to a pid (`erlang:exit/2`). Returns 0.
    pub exit: unsafe extern "C" fn(proc: *mut ProcHandle, pid: u64, reason: Bytes) -> i32,
    /// Register a name for a pid. Returns 0, or -1 if the name is taken, the pid is dead or
    /// already has a name.
    pub register: unsafe extern "C" fn(proc: *mut ProcHandle, name: Bytes, pid: u64) -> i32,
    /// Remove a registered name. Returns 0, or -1 if it was not registered.
    pub unregister: unsafe extern "C" fn(proc: *mut ProcHandle, name: Bytes) -> i32,
    /// The pid registered under a name, or 0.
    pub whereis: unsafe extern "C" fn(proc: *mut ProcHandle, name: Bytes) -> u64,
    /// Send bytes to `to` after `ms` milliseconds; returns a timer reference.
    pub send_after: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        ms: u64,
        to: u64,
        ptr: *const u8,
        len: usize,
    ) -> u64,
    /// Cancel a timer; returns the milliseconds that were left, or -1 if it already fired or
    /// never existed.
    pub cancel_timer: unsafe extern "C" fn(proc: *mut ProcHandle, timer: u64) -> i64,
    /// Log a UTF-8 line at a level (0 error, 1 warn, 2 info, 3 debug, 4 trace).
    pub log: unsafe extern "C" fn(proc: *mut ProcHandle, level: u32, ptr: *const u8, len: usize),
    /// Start a fully-qualified call `module:function(arg)` on the current version, binding
    /// the caller to that version while it runs. Returns null and writes an error message
    /// if there is no such module or function.
    pub apply_start: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        module: Bytes,
        function: Bytes,
        arg: Bytes,
        err: *mut c_void,
        write: WriteFn,
    ) -> *mut CallHandle,
    /// Poll a call started with `apply_start`: [`STATUS_PENDING`], [`STATUS_READY`] (outcome
    /// bytes written) or [`STATUS_PANICKED`] (message written).
    pub apply_poll: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        call: *mut CallHandle,
        out: *mut c_void,
        write: WriteFn,
    ) -> u32,
    /// Drop a call handle (finished or not), releasing the version binding.
    pub apply_drop: unsafe extern "C" fn(proc: *mut ProcHandle, call: *mut CallHandle),
    /// Resolve the synchronous function `module:function` on the current version: writes
    /// the resolution and returns the module's export slot (valid forever), or returns
    /// null and writes an error message (`undef`).
    pub resolve: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        module: Bytes,
        function: Bytes,
        out: *mut Resolved,
        err: *mut c_void,
        write: WriteFn,
    ) -> *const ExportSlot,
    /// A fresh reference (unique on the node).
    pub new_ref: unsafe extern "C" fn(proc: *mut ProcHandle) -> u64,
    /// Put a message of any kind into a process's mailbox: to `to`, or when `to` is 0 to
    /// the process registered as `name`. Returns 0, or -1 if there is no such process.
    pub post: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        to: u64,
        name: Bytes,
        kind: u32,
        reference: u64,
        data: Bytes,
    ) -> i32,
    /// Start (`on` = 1) or stop (0) accepting [`MSG_REPLY`] messages tagged `tag`.
    pub alias: unsafe extern "C" fn(proc: *mut ProcHandle, tag: u64, on: i32),
    /// Start the `gen_server` of `module` (current version) with `arg`, registered as
    /// `name` when it is not empty, with [`SPAWN_LINK`]/[`SPAWN_MONITOR`] `flags`. The
    /// server posts the result of `init` as a [`MSG_REPLY`] tagged `tag` to the caller.
    /// Writes the pid (and monitor reference), writes the version string of the module
    /// version whose `init` runs through `write`, and returns [`STATUS_READY`]; or writes
    /// an error and returns [`STATUS_ERROR`].
    pub start_server: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        module: Bytes,
        arg: Bytes,
        name: Bytes,
        flags: u32,
        tag: u64,
        pid_out: *mut u64,
        ref_out: *mut u64,
        err: *mut c_void,
        write: WriteFn,
    ) -> u32,
    /// Call the synchronous function of a resolution made by [`HostApi::resolve`] for the
    /// export slot `slot`, with the encoded argument. The host counts the call in the
    /// version's quiescence (a purge pins the version instead of unmapping it while the
    /// call runs) and returns [`STATUS_STALE`] without calling anything if the module's
    /// current version changed since the resolution; otherwise what [`CallFn`] returns.
    pub call: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        slot: *const ExportSlot,
        res: *const Resolved,
        arg: *const u8,
        arg_len: usize,
        out: *mut c_void,
        write: WriteFn,
    ) -> u32,
    /// Allocate `size` bytes (`size > 0`) aligned to `align` (a power of two) from the
    /// version heap `heap` (the value its [`InitFn`] received). Null when out of memory.
    /// Callable from any thread, inside or outside a process: a module's global allocator
    /// forwards here. The node frees the whole heap once the version is unmapped.
    pub heap_alloc: unsafe extern "C" fn(heap: u64, size: usize, align: usize) -> *mut u8,
    /// As [`HostApi::heap_alloc`], the bytes zeroed.
    pub heap_alloc_zeroed: unsafe extern "C" fn(heap: u64, size: usize, align: usize) -> *mut u8,
    /// Resize a block of `heap` (allocated with `size` and `align`) to `new_size` bytes,
    /// keeping its contents; the old block is freed on success. Null (the old block kept)
    /// when out of memory.
    pub heap_realloc: unsafe extern "C" fn(
        heap: u64,
        ptr: *mut u8,
        size: usize,
        align: usize,
        new_size: usize,
    ) -> *mut u8,
    /// Free a block of `heap` allocated with `size` and `align`.
    pub heap_free: unsafe extern "C" fn(heap: u64, ptr: *mut u8, size: usize, align: usize),
    /// Sockets as ports (`hotswap::net`): operation `op` ([`NET_REQUEST`], [`NET_SEND`],
    /// [`NET_ACTIVE`]) on `port` with `arg`. Returns [`STATUS_READY`] with the result
    /// written, [`STATUS_ERROR`] with an encoded error written, or [`STATUS_PENDING`]: the
    /// result will arrive later as a [`MSG_REPLY`] tagged `tag` (the caller must accept
    /// that tag with [`HostApi::alias`] before it next receives).
    pub net: unsafe extern "C" fn(
        proc: *mut ProcHandle,
        op: u32,
        port: u64,
        arg: Bytes,
        tag: u64,
        out: *mut c_void,
        write: WriteFn,
    ) -> u32,
}

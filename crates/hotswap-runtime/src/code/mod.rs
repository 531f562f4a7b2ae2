//! The code server: two slots (current, old) per module, with Erlang's operations
//! (`spec/otp-semantics.md` §1) on native libraries.
//!
//! # Versions and what binds a process to one
//!
//! Every load makes a new [`Version`]: its own write-once copy of the library, its own
//! statics. A process is *bound* to a version while it runs code of it: the version that
//! created its current future, plus any version whose exported function it is awaiting
//! (`Ctx::apply`). `check_process_code` and purge answer from these bindings, kept per
//! version, so purging a module costs nothing for the processes that do not run it.
//!
//! # Purge
//!
//! Purging the old version kills (untrappably, reason `killed`) every process bound to it,
//! waits until each is gone (their futures dropped by the version's own drop function),
//! then closes the library and verifies it is unmapped. If a process does not reach an
//! await point within the purge timeout (native code cannot be pre-empted), or the image
//! stays mapped, the version is **pinned**: kept mapped, reported with the reason, never
//! unmapped under running code.
//!
//! # Quiescence: every way a node thread runs a version's code is counted
//!
//! A version is closed only when nothing can run its code again. Three counts say so, and
//! every path into module code holds at least one of them while it runs:
//!
//! * **binding**: a process bound to the version (`Process::bind`); a purge kills it and
//!   waits for it to unbind;
//! * **in flight**: `Version::enter` (or `Version::call_resolved`) counts a call inside
//!   the version; a version with a call in flight is pinned, never closed;
//! * **epoch**: the same guards mark the thread as inside module code
//!   (`guard::InModule`); after a version stops being current, a purge (and
//!   `retry_pinned`) waits until every thread that was inside module code has left it
//!   once, so no thread still holds a resolution of the version taken before.
//!
//! A thread still inside after the purge timeout pins the version, with the reason;
//! `retry_pinned` frees it once the code has returned.
//!
//! | path on which a node thread runs a version's code | where it is counted |
//! |---|---|
//! | a module process's body: start, each poll (`spawn`, `continue_with`) | `ModuleFuture::start`/`poll`: `Version::enter`; the process is bound to the version (`NodeInner::start_body`) |
//! | dropping a module future (a process killed or exiting, an `apply` dropped, a callback future dropped) | `ModuleFuture::drop`: `Version::enter`; the owner stays bound until after the drop (`process::run`, `host_api::drop_body`, `Server::end`) |
//! | a synchronous function, `Ctx::function(..).call`, from host code: a native process, a supervisor module's `init` (called that way) | `host_api::call` → `Version::call_resolved`: epoch entered *before* the resolution's generation is checked, then in flight; a stale resolution runs nothing and is re-resolved |
//! | the same call from module code (a module process, a callback) | `host_api::call`, fast path: the generation is checked while the thread is inside module code (its epoch has been odd since before its poll began, and stays so until after the call), so a purge or `retry_pinned` waits for the thread before it can free the version; a stale resolution runs nothing |
//! | `Ctx::apply` (start, polls, drop of the callee's future) | `host_api::apply_start`/`apply_poll`/`apply_drop`: the caller is bound to the callee's version, and each call into it is `ModuleFuture`'s `Version::enter` |
//! | gen_server `init` | `Server::init`: bound, `Version::enter` at start, polls as a `ModuleFuture` |
//! | gen_server `handle_call`/`handle_cast`/`handle_info`/timeout/continue, batches of casts | `Server::begin`: `Version::enter` around the first call; a callback that waits binds the process (`Begun::Waits`) until `Server::end` |
//! | gen_server `terminate` | `Server::terminate`: bound and `Version::enter` |
//! | gen_server `code_change` (a migration at the next message, or `sys:change_code`) | `Version::code_change`: `Version::enter` (the caller holds the version's `Arc`) |
//! | `import_state` (`sys:replace_state`), `export_state` (`sys:get_state`, a migration, and turning idle states into bytes during a purge or `retry_pinned`), `format_status` (`sys:get_status`), `drop_state` (a state replaced or its server gone) | `server::state`: `Version::enter` in each; the server runs them under its state's lock, so a purge that turns that state into bytes waits on the lock (blocking its worker thread) until the encoder has returned |
//! | the module's `init` at load | `loader::open`: `guard::InModule`; the version is not published yet, and loads and purges hold the code server's `ops` lock |
//! | a module's receive matcher and its copy callback, called back by the host | inside the module's own poll or call (already entered) |
//! | a thread-local destructor of module code at thread exit (`thread_local!` values with a destructor) | `guard::tls_trampoline`: registered with glibc instead of the module's; runs under the guard's read lock, which `guard::retire` (before `dlclose`) takes for writing, inside the thread's epoch; skipped once the version is retired |
//! | a pthread-key destructor of module code at thread exit (std's keys, e.g. for `std::thread::current`) | `guard::key_trampoline`: the same, through one of 64 host trampolines given to glibc instead of the module's destructor; the keys are deleted by `guard::retire` |
//! | `atexit` handlers and ELF destructors of the library | run by `dlclose` itself, on the purging thread, after everything above is quiet |
//!
//! Limits: with all 64 key trampolines taken (64 live keys with module destructors), a
//! further key's destructor is given to glibc directly and counted in
//! `guard::unguarded_key_destructors`; a purge of that module can then race with a thread
//! that is exiting at that moment. A trampoline slot freed by a purge is reused last
//! (round-robin), since a thread that read it just before the purge may still call it.
//!
//! # Memory
//!
//! Every version allocates from a heap of its own (see [`heap`]). A purge that verified
//! the unmapping frees that heap as a whole: what the module's statics, thread-locals and
//! leaks held is returned with it. A pinned version keeps its heap.

pub mod compat;
pub(crate) mod error;
pub(crate) mod guard;
pub(crate) mod heap;
pub(crate) mod loader;
pub(crate) mod prepared;
pub(crate) mod record;
pub mod steps;

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use hotswap::Pid;
use hotswap_abi as abi;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

pub use self::error::CodeError;
pub use self::loader::error::LoadError;
use crate::util::FxMap;

/// The processes as the code server sees them: which are bound to a version (running its
/// code), and how to kill one. The process layer implements it on its process table, so
/// the code server needs nothing else of processes.
pub(crate) trait Processes: Sync {
    /// The processes bound to `v`, sorted.
    fn bound_to(&self, v: &Arc<Version>) -> Vec<Pid>;
    /// Whether `pid` is bound to `v`.
    fn is_bound_to(&self, pid: Pid, v: &Arc<Version>) -> bool;
    /// Send `pid` the untrappable exit signal `kill`.
    fn kill(&self, pid: Pid);
}

/// A gen_server state that a version made and that outlives a purge of it, as the code
/// server sees it. The behaviour layer implements it (`server::state`); the code server
/// only asks it, before unmapping the version, to turn itself into bytes.
pub(crate) trait LiveState: Send + Sync {
    /// If `v` made this state and no callback borrows it, encode it with `v`'s own
    /// `export_state` and drop the object (`v` is about to be unmapped).
    fn dehydrate(&self, v: &Arc<Version>);
    /// The state as its own type, for the layer that made it (the release handler
    /// migrates states it finds through their versions).
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
    /// For [`CodeServer::check`]'s dry run: encode a copy of the state with the version
    /// that made it and decode it with `new`'s `code_change` (the result is dropped; the
    /// server and its state are untouched). `None` when the state is not live; skipped
    /// when the server is inside a callback.
    fn dry_run(&self, new: &Arc<Version>) -> Option<DryRun>;
}

/// One loaded instance of a module.
pub(crate) struct Version {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) vsn: String,
    pub(crate) build_id: String,
    pub(crate) sdk_version: String,
    pub(crate) hash: u64,
    pub(crate) source: PathBuf,
    pub(crate) file: PathBuf,
    pub(crate) loaded_at: SystemTime,
    inode: u64,
    guard_id: u64,
    handle: *mut c_void,
    /// The version's heap (`None`: it allocates with the system allocator). Freed only
    /// after the library was verified unmapped.
    heap: Mutex<Option<heap::Heap>>,
    pub(crate) poll: abi::PollFn,
    pub(crate) drop_future: abi::DropFn,
    /// The module's `gen_server` callbacks, if it has any.
    pub(crate) server: Option<abi::ServerVTable>,
    /// The module's `describe`, if it has one.
    describe: Option<abi::DescribeFn>,
    /// Where the library's description record is (beside the path the load was given, see
    /// [`record`]): read when the description is first needed, used instead of calling
    /// `describe` if it was made for exactly this version's bytes (`hash`).
    record: PathBuf,
    /// Its description, asked once (at the first load that compares against it).
    schema: std::sync::OnceLock<Result<Described, String>>,
    /// The gen_server states this version made that are alive, by pid: a purge turns
    /// each idle one into bytes (see `server::state`) instead of killing its server.
    pub(crate) states: Mutex<FxMap<u64, Weak<dyn LiveState>>>,
    pub(crate) exports: HashMap<Box<str>, abi::StartFn>,
    pub(crate) export_names: Vec<String>,
    pub(crate) functions: HashMap<Box<str>, abi::CallFn>,
    /// The node that loaded it (for quiescence, see `guard::quiesce`).
    node: u64,
    /// Calls running inside this version, counted per thread slot so that polls on
    /// different workers do not contend on one cache line.
    in_flight: [FlightSlot; FLIGHT_SLOTS],
    /// How many bindings processes hold on this version (see `Process::bind`). The pids
    /// themselves are in each process's own bindings; a purge scans the table only when
    /// this is not zero.
    bound: AtomicUsize,
    unbound: Arc<Notify>,
    /// A purge is waiting on `unbound` (so unbinding only notifies when someone listens).
    awaited: std::sync::atomic::AtomicBool,
}

const FLIGHT_SLOTS: usize = 8;

#[repr(align(64))]
#[derive(Default)]
struct FlightSlot(AtomicUsize);

fn flight_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % FLIGHT_SLOTS;
    }
    SLOT.with(|s| *s)
}

// SAFETY: the handle and function pointers are only used while the library is open, which
// the code server guarantees for as long as any `Arc<Version>` can reach them (a version
// is closed only when its `Arc` is the last one); the module's functions are thread-safe
// entry points by the ABI contract.
unsafe impl Send for Version {}
// SAFETY: as above; all mutable state is behind atomics and locks.
unsafe impl Sync for Version {}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} (#{})", self.name, self.vsn, self.id)
    }
}

/// Held while module code of a version runs on this thread.
pub(crate) struct Enter<'a> {
    slot: &'a AtomicUsize,
    _m: guard::InModule,
}

impl Drop for Enter<'_> {
    fn drop(&mut self) {
        self.slot.fetch_sub(1, Ordering::Release);
    }
}

impl Version {
    pub(crate) fn enter(&self) -> Enter<'_> {
        let slot = &self.in_flight[flight_slot()].0;
        slot.fetch_add(1, Ordering::Acquire);
        Enter {
            slot,
            _m: guard::InModule::enter(self.node),
        }
    }

    /// Run `f` (a call of the synchronous function `res` resolved) counted in the
    /// version's quiescence, if `res` is still the current version of its module: `None`
    /// (nothing run) if the module's current version changed since `res` was made.
    ///
    /// The thread enters module code (its quiesce epoch) *before* it checks the
    /// generation: either it sees the change, or the purge that follows the change sees
    /// the thread inside module code and waits for it (so the version behind
    /// `res.version` is still alive when it is counted here).
    pub(crate) fn call_resolved<R>(
        node: u64,
        slot: &abi::ExportSlot,
        res: &abi::Resolved,
        f: impl FnOnce() -> R,
    ) -> Option<R> {
        let m = guard::InModule::enter(node);
        if slot.generation.load(Ordering::SeqCst) != res.generation || res.version.is_null() {
            return None;
        }
        // SAFETY: `res.version` is `Arc::as_ptr` of the version `resolve` found current at
        // `res.generation`, which is still the generation: the version has not stopped
        // being current before this thread entered module code, so no purge can have
        // freed it (`release_quiesced` waits for this thread first).
        let v = unsafe { &*(res.version as *const Version) };
        let slot = &v.in_flight[flight_slot()].0;
        slot.fetch_add(1, Ordering::Acquire);
        let _in = Enter { slot, _m: m };
        Some(f())
    }

    fn in_flight(&self) -> usize {
        self.in_flight
            .iter()
            .map(|s| s.0.load(Ordering::Acquire))
            .sum()
    }

    pub(crate) fn bind(&self) {
        self.bound.fetch_add(1, Ordering::AcqRel);
    }

    /// Release one binding, consuming the caller's reference first: a purge woken by the
    /// last unbind must find itself the only holder of the version.
    pub(crate) fn unbind(this: Arc<Version>) {
        // SeqCst pairs with `wait_unbound`: either it sees the count at zero, or we see
        // that it waits.
        if this.bound.fetch_sub(1, Ordering::SeqCst) == 1 && this.awaited.load(Ordering::SeqCst) {
            let unbound = this.unbound.clone();
            drop(this);
            unbound.notify_waiters();
        }
    }

    fn is_bound(&self) -> bool {
        self.bound.load(Ordering::Acquire) != 0
    }

    /// Before this version is unmapped: every idle gen_server state it made becomes
    /// bytes (see [`LiveState`]).
    pub(crate) fn dehydrate_states(self: &Arc<Self>) {
        let cells: Vec<Weak<dyn LiveState>> = self.states.lock().values().cloned().collect();
        for c in cells.iter().filter_map(Weak::upgrade) {
            c.dehydrate(self);
        }
    }

    /// The processes bound to this version (a scan of the table, only when any is).
    pub(crate) fn bound_pids(self: &Arc<Self>, table: &dyn Processes) -> Vec<Pid> {
        if !self.is_bound() {
            return Vec::new();
        }
        table.bound_to(self)
    }

    async fn wait_unbound(&self) {
        self.awaited.store(true, Ordering::SeqCst);
        loop {
            let n = self.unbound.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.bound.load(Ordering::SeqCst) == 0 {
                return;
            }
            n.await;
        }
    }

    /// The module's description of its types, asked of its `describe` once.
    pub(crate) fn schema(&self) -> Result<Arc<hotswap::schema::ModuleSchema>, String> {
        self.described(None).map(|d| d.schema)
    }

    /// The description, encoded and decoded: from the description record found beside the
    /// library at load (made at build time for these exact bytes, see [`record`]) when
    /// there is a valid one, else from the module's `describe`. When `like` (the version it
    /// is compared with) encoded exactly the same bytes, its decoded description is shared
    /// instead of decoded again: a rebuild that changed no type costs `describe` (or nothing,
    /// with a record) and a comparison of bytes.
    fn described(&self, like: Option<&Described>) -> Result<Described, String> {
        self.schema
            .get_or_init(|| {
                let d = self
                    .describe
                    .ok_or_else(|| "the module does not describe its types".to_string())?;
                // Read only now (a load that compares nothing never looks), and trusted only
                // for the bytes this version was loaded from (see `record`).
                let ignored = match record::find(&self.record, self.hash) {
                    record::Found::Valid(b) => {
                        steps::mark("description record");
                        match Described::decode(b, like) {
                            Ok(d) => return Ok(d),
                            // Its checksum held, so this is a description the node cannot
                            // read (a newer SDK's?): ask the module itself.
                            Err(e) => Some(format!("its description does not decode ({e})")),
                        }
                    }
                    record::Found::Ignored(why) => Some(why),
                    record::Found::Absent => None,
                };
                steps::mark("read record");
                if let Some(why) = ignored {
                    tracing::warn!(
                        module = %self.name,
                        version = %self.vsn,
                        record = %self.record.display(),
                        "description record ignored: {why}; calling the module's describe instead"
                    );
                }
                let _in = self.enter();
                let b = compat::call_describe(d);
                steps::mark("describe");
                Described::decode(b?.into(), like)
            })
            .clone()
    }

    pub(crate) fn info(self: &Arc<Self>, table: &dyn Processes) -> VersionInfo {
        VersionInfo {
            version: self.vsn.clone(),
            build_id: self.build_id.clone(),
            sdk_version: self.sdk_version.clone(),
            hash: format!("{:016x}", self.hash),
            source: self.source.clone(),
            file: self.file.clone(),
            exports: self.export_names.clone(),
            processes: self.bound_pids(table),
            loaded_at: self.loaded_at,
            instance: self.id,
        }
    }
}

/// A public description of one loaded version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    /// The module's version string.
    pub version: String,
    /// Unique id of the build.
    pub build_id: String,
    /// SDK version the module was built with.
    pub sdk_version: String,
    /// Content hash of the library file.
    pub hash: String,
    /// The file it was loaded from.
    pub source: PathBuf,
    /// Its write-once copy in the node's code directory (the mapped file).
    pub file: PathBuf,
    /// Exported functions.
    pub exports: Vec<String>,
    /// Processes bound to (running code of) this version.
    pub processes: Vec<Pid>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Node-unique number of this loaded instance (two loads of one file differ).
    pub instance: u64,
}

/// The two slots of a module.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// The current version, if any (none after `delete`).
    pub current: Option<VersionInfo>,
    /// The old version, if any.
    pub old: Option<VersionInfo>,
}

/// A version that could not be freed safely and is kept mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct PinnedInfo {
    /// Module name.
    pub module: String,
    /// The version.
    pub version: VersionInfo,
    /// Why it is kept.
    pub reason: String,
}

/// What a purge did.
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeReport {
    /// Module name.
    pub module: String,
    /// The version purged (`None`: there was no old code).
    pub version: Option<String>,
    /// Processes killed because they ran the old code.
    pub killed: Vec<Pid>,
    /// `None` when the version was unmapped (or there was none); the reason when pinned.
    pub pinned: Option<String>,
}

impl PurgeReport {
    /// Erlang's `code:purge/1` result: `true` only if a process was killed.
    pub fn killed_any(&self) -> bool {
        !self.killed.is_empty()
    }
}

#[derive(Default)]
struct Slots {
    current: Option<Arc<Version>>,
    old: Option<Arc<Version>>,
}

struct Pinned {
    version: Arc<Version>,
    reason: String,
}

/// How a load treats existing old code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoadMode {
    /// Refuse with `not_purged` if old code exists (`code:load_file`).
    Plain,
    /// Purge old code first, killing its processes (`code:load_binary`, `c:l/1`).
    Purging,
}

pub(crate) struct CodeServer {
    slots: RwLock<HashMap<String, Slots>>,
    ops: tokio::sync::Mutex<()>,
    pinned: Mutex<Vec<Pinned>>,
    pub(crate) code_dir: PathBuf,
    seq: AtomicU64,
    purge_timeout: Duration,
    pub(crate) freed: AtomicU64,
    /// Read buffer reused by loads (taken under the `ops` lock).
    buf: Mutex<Vec<u8>>,
    /// The node-unique id of this code server's node.
    node: u64,
    /// The export table: one slot per module name ever loaded, never freed (handles in
    /// module code point at them). Generations change under the `slots` write lock.
    export_slots: Mutex<HashMap<String, &'static abi::ExportSlot>>,
    /// The host API table handed to each module's `init` (the node passes it in).
    host: &'static abi::HostApi,
    /// Copies of purged versions, verified unmapped, by content hash: a later load of the
    /// same bytes opens one instead of writing a new copy.
    spares: Mutex<Vec<(u64, PathBuf)>>,
    /// Whether versions get heaps of their own (`NodeConfig::module_heaps`).
    heaps: bool,
    /// The copy file and heap made ahead for the next load (see [`loader::Blank`]).
    ahead: Arc<Mutex<AheadPool>>,
    /// Notified when a preparation of the next load's copy and heap is over.
    ahead_done: Arc<tokio::sync::Notify>,
    /// The size of the last library read (what the next load's copy is prepared for).
    ahead_len: AtomicUsize,
}

/// What the background preparation left for the next load.
#[derive(Default)]
struct AheadPool {
    ahead: loader::Ahead,
    /// A preparation is under way.
    busy: bool,
    /// The node stopped: prepare nothing more.
    closed: bool,
}

/// How many unmapped copies are kept for reuse.
const SPARES: usize = 16;

/// Prepares the next load's copy and heap ([`CodeServer::prepare_ahead`]) when dropped.
struct PrepareAfter<'a>(&'a CodeServer);

impl Drop for PrepareAfter<'_> {
    fn drop(&mut self) {
        self.0.prepare_ahead();
    }
}

/// How much of a heap made ahead is faulted in before a version gets it ([`heap::Heap::warm`]):
/// enough for the first slabs of a version's `init` and `describe`.
const WARM_HEAP: usize = 256 << 10;

impl CodeServer {
    /// A code server that hands `host` (the node's host API table) to every module it
    /// loads, and gives each version a heap of its own if `heaps`.
    pub(crate) fn new(
        code_dir: PathBuf,
        purge_timeout: Duration,
        heaps: bool,
        host: &'static abi::HostApi,
    ) -> CodeServer {
        static NODES: AtomicU64 = AtomicU64::new(1);
        CodeServer {
            slots: RwLock::new(HashMap::new()),
            ops: tokio::sync::Mutex::new(()),
            pinned: Mutex::new(Vec::new()),
            code_dir,
            seq: AtomicU64::new(1),
            purge_timeout,
            freed: AtomicU64::new(0),
            buf: Mutex::new(Vec::new()),
            spares: Mutex::new(Vec::new()),
            node: NODES.fetch_add(1, Ordering::Relaxed),
            export_slots: Mutex::new(HashMap::new()),
            heaps,
            host,
            ahead: Arc::new(Mutex::new(AheadPool::default())),
            ahead_done: Arc::new(tokio::sync::Notify::new()),
            ahead_len: AtomicUsize::new(0),
        }
    }

    /// Whether a copy file (and a heap, if versions get heaps) is ready for the next load.
    pub(crate) fn prepared(&self) -> bool {
        let p = self.ahead.lock();
        p.ahead.blank.is_some() && (!self.heaps || p.ahead.heap.is_some())
    }

    /// Wait until no preparation for the next load is pending or under way (see
    /// [`Self::prepare_ahead`]).
    pub(crate) async fn next_load_prepared(&self) {
        loop {
            let n = self.ahead_done.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.ahead.try_lock().is_some_and(|p| !p.busy) {
                return;
            }
            n.await;
        }
    }

    /// Make, on a blocking thread of the runtime, what the next load would otherwise make on
    /// its own path: a blank copy file with pages for `len` bytes and a fresh heap. Nothing
    /// runs at rest: this is one task after a load, and none outside a tokio runtime. The
    /// task holds the pool's lock while it makes them, so that a node that stopped
    /// ([`CodeServer::clear_spares`] waits for the lock) never gets a file or heap after.
    ///
    /// Called when the operation that opened a version is over (see [`PrepareAfter`]), not
    /// right after `open`: waking a blocking thread hands it the core of the thread that
    /// woke it, and a load that is still running then waits for the copy and heap of the
    /// *next* load to be made (0.25–2.8 ms of a load on a loaded machine, measured).
    fn prepare_ahead(&self) {
        let len = self.ahead_len.load(Ordering::Relaxed);
        if len == 0 {
            return; // nothing was read: no size to prepare for
        }
        {
            // Never wait on the load's path: the pool is locked only by a task making the
            // next load's copy and heap right now (or by a node stopping), and that task
            // fills the pool for the next load anyway.
            let Some(mut p) = self.ahead.try_lock() else {
                return;
            };
            let wanted = p.ahead.blank.is_none() || (self.heaps && p.ahead.heap.is_none());
            if p.closed || p.busy || !wanted {
                return;
            }
            p.busy = true;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.ahead.lock().busy = false;
            return;
        };
        static BLANKS: AtomicU64 = AtomicU64::new(1);
        let name = format!("blank-{}.so", BLANKS.fetch_add(1, Ordering::Relaxed));
        let (pool, dir, heaps) = (self.ahead.clone(), self.code_dir.clone(), self.heaps);
        // Room for a slightly larger next build; the load gives back what it does not use.
        let len = (len as u64).next_multiple_of(64 << 10);
        let done = self.ahead_done.clone();
        let job = move || {
            {
                let mut p = pool.lock();
                p.busy = false;
                if !p.closed {
                    if p.ahead.blank.is_none() {
                        p.ahead.blank = loader::Blank::make(&dir, &name, len).ok();
                    }
                    if heaps && p.ahead.heap.is_none() {
                        p.ahead.heap = heap::Heap::create();
                        if std::env::var_os("HOTSWAP_NO_WARM").is_none() {
                            if let Some(h) = &p.ahead.heap {
                                h.warm(WARM_HEAP);
                            }
                        }
                    }
                }
            }
            done.notify_waiters();
        };
        rt.spawn_blocking(job);
    }

    /// The node-unique id of this code server's node (for `guard::InModule`).
    pub(crate) fn node_id(&self) -> u64 {
        self.node
    }

    /// The current version of a module (what a fully-qualified call reaches).
    pub(crate) fn current(&self, module: &str) -> Option<Arc<Version>> {
        self.slots
            .read()
            .get(module)
            .and_then(|s| s.current.clone())
    }

    /// `(module, version)` of the loaded version holding `pid`'s gen_server state.
    pub(crate) fn server_state_of(&self, pid: u64) -> Option<(String, String)> {
        let slots = self.slots.read();
        slots
            .values()
            .flat_map(|s| s.current.iter().chain(s.old.iter()))
            .find(|v| v.server.is_some() && v.states.lock().contains_key(&pid))
            .map(|v| (v.name.clone(), v.vsn.clone()))
    }

    fn old(&self, module: &str) -> Option<Arc<Version>> {
        self.slots.read().get(module).and_then(|s| s.old.clone())
    }

    fn open(&self, path: &Path, expect: Option<&str>) -> Result<Arc<Version>, LoadError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // What was made ahead, unless it is being made right now (then this load makes its
        // own rather than wait).
        let mut ahead = self
            .ahead
            .try_lock()
            .map(|mut p| std::mem::take(&mut p.ahead))
            .unwrap_or_default();
        // SAFETY: loading native code is the node's job; the loader validates the file and
        // its descriptor before any module function runs (see `loader::open`).
        let o = unsafe {
            loader::open(
                path,
                expect,
                loader::Target {
                    code_dir: &self.code_dir,
                    seq,
                    node: self.node,
                    host: self.host,
                    heap: self.heaps,
                },
                &mut self.buf.lock(),
                &mut |hash| {
                    let mut sp = self.spares.lock();
                    let i = sp.iter().position(|(h, _)| *h == hash)?;
                    Some(sp.swap_remove(i).1)
                },
                &mut ahead,
            )
        };
        {
            // Give back what this load did not use (dropped, i.e. removed, if the node
            // stopped meanwhile or more is being made), and prepare the next load's copy
            // and heap.
            if let Some(mut p) = self.ahead.try_lock() {
                if !p.closed {
                    if p.ahead.blank.is_none() {
                        p.ahead.blank = ahead.blank.take();
                    }
                    if p.ahead.heap.is_none() {
                        p.ahead.heap = ahead.heap.take();
                    }
                }
            }
        }
        steps::mark("ahead back");
        drop(ahead);
        steps::mark("drop ahead");
        self.ahead_len
            .store(self.buf.lock().len(), Ordering::Relaxed);
        {
            // Keep the reused buffer for ordinary module sizes only.
            let mut b = self.buf.lock();
            if b.capacity() > 16 << 20 {
                *b = Vec::new();
            }
        }
        let o = o?;
        let source = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        steps::mark("canonicalize");
        // The description record beside the file as given (where the tools write it).
        let record = record::record_path(path);
        Ok(Arc::new(Version {
            id: seq,
            name: o.name,
            vsn: o.version,
            build_id: o.build_id,
            sdk_version: o.sdk_version,
            hash: o.hash,
            source,
            file: o.file,
            loaded_at: SystemTime::now(),
            inode: o.inode,
            guard_id: o.guard_id,
            handle: o.handle,
            heap: Mutex::new(o.heap),
            poll: o.poll,
            drop_future: o.drop_future,
            server: o.server,
            describe: o.describe,
            record,
            schema: std::sync::OnceLock::new(),
            states: Mutex::new(Default::default()),
            exports: o.exports,
            export_names: o.export_names,
            functions: o.functions,
            node: self.node,
            in_flight: Default::default(),
            bound: AtomicUsize::new(0),
            unbound: Arc::new(Notify::new()),
            awaited: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    pub(crate) async fn load(
        &self,
        node: &dyn Processes,
        path: &Path,
        expect: Option<&str>,
        mode: LoadMode,
        force: bool,
        check: bool,
    ) -> Result<ModuleInfo, CodeError> {
        let _op = self.ops.lock().await;
        // Declared after the lock guard, so dropped before it: the next load's copy and
        // heap are prepared once this load is over, whichever way it ends.
        let _prepare = PrepareAfter(self);
        if let (Some(name), LoadMode::Plain) = (expect, mode) {
            if let Some(old) = self.old(name) {
                return Err(not_purged(&old, node));
            }
        }
        steps::start();
        let v = self.open(path, expect);
        steps::mark("open (rest)");
        let v = v?;
        let name = v.name.clone();
        let cur = self.current(&name).filter(|_| check);
        let report = cur.and_then(|cur| compare(&cur, &v));
        if let Some(report) = report {
            if report.refuses() && !force {
                steps::finish();
                self.release(v, "refused load (incompatible)");
                return Err(CodeError::Incompatible {
                    report: Box::new(report),
                });
            }
            for f in report.incompatible.iter().chain(&report.warnings) {
                tracing::warn!(module = %name, forced = force, "{f}");
            }
            drop(report);
            steps::mark("report");
        }
        steps::finish();
        if let Some(old) = self.old(&name) {
            match mode {
                LoadMode::Plain => {
                    let err = not_purged(&old, node);
                    self.release(v, "refused load (not_purged)");
                    return Err(err);
                }
                LoadMode::Purging => {
                    self.purge_locked(node, &name).await;
                }
            }
        }
        {
            let mut slots = self.slots.write();
            let s = slots.entry(name.clone()).or_default();
            s.old = s.current.take();
            s.current = Some(v.clone());
            self.bump(&name);
        }
        tracing::info!(module = %name, version = %v.vsn, file = %v.file.display(), "loaded");
        Ok(self.info(&name, node).expect("just loaded"))
    }

    pub(crate) fn info(&self, module: &str, table: &dyn Processes) -> Option<ModuleInfo> {
        let slots = self.slots.read();
        let s = slots.get(module)?;
        if s.current.is_none() && s.old.is_none() {
            return None;
        }
        Some(ModuleInfo {
            name: module.to_string(),
            current: s.current.as_ref().map(|v| v.info(table)),
            old: s.old.as_ref().map(|v| v.info(table)),
        })
    }

    pub(crate) fn all(&self, table: &dyn Processes) -> Vec<ModuleInfo> {
        let mut names: Vec<String> = self.slots.read().keys().cloned().collect();
        names.sort();
        names.iter().filter_map(|n| self.info(n, table)).collect()
    }

    pub(crate) fn pinned(&self, table: &dyn Processes) -> Vec<PinnedInfo> {
        self.pinned
            .lock()
            .iter()
            .map(|p| PinnedInfo {
                module: p.version.name.clone(),
                version: p.version.info(table),
                reason: p.reason.clone(),
            })
            .collect()
    }

    pub(crate) fn check_process_code(&self, pid: Pid, module: &str, table: &dyn Processes) -> bool {
        let Some(old) = self.old(module).filter(|v| v.is_bound()) else {
            return false;
        };
        table.is_bound_to(pid, &old)
    }

    pub(crate) async fn purge(
        &self,
        node: &dyn Processes,
        module: &str,
    ) -> Result<PurgeReport, CodeError> {
        let _op = self.ops.lock().await;
        if !self.slots.read().contains_key(module) {
            return Err(CodeError::NotLoaded {
                module: module.into(),
            });
        }
        Ok(self.purge_locked(node, module).await)
    }

    pub(crate) async fn soft_purge(&self, module: &str) -> Result<bool, CodeError> {
        let _op = self.ops.lock().await;
        if !self.slots.read().contains_key(module) {
            return Err(CodeError::NotLoaded {
                module: module.into(),
            });
        }
        let old = {
            let mut slots = self.slots.write();
            let s = slots.get_mut(module).expect("checked");
            match &s.old {
                None => return Ok(true),
                Some(v) if v.is_bound() => return Ok(false),
                Some(_) => s.old.take().expect("checked"),
            }
        };
        self.release_quiesced(old, "soft_purge").await;
        self.forget_if_empty(module);
        Ok(true)
    }

    pub(crate) async fn delete(&self, module: &str) -> Result<(), CodeError> {
        let _op = self.ops.lock().await;
        let mut slots = self.slots.write();
        let Some(s) = slots.get_mut(module).filter(|s| s.current.is_some()) else {
            return Err(CodeError::NotLoaded {
                module: module.into(),
            });
        };
        if s.old.is_some() {
            tracing::warn!(
                module,
                "cannot delete: old code must be purged before deleting"
            );
            return Err(CodeError::OldCodeExists {
                module: module.into(),
            });
        }
        s.old = s.current.take();
        self.bump(module);
        Ok(())
    }

    /// The current version with the export-table generation it is valid for: a caller
    /// may keep it until the slot's generation changes.
    pub(crate) fn current_at(
        &self,
        module: &str,
    ) -> (&'static abi::ExportSlot, u64, Option<Arc<Version>>) {
        let slots = self.slots.read();
        let slot = self.export_slot(module);
        let generation = slot.generation.load(Ordering::SeqCst);
        let v = slots.get(module).and_then(|s| s.current.clone());
        (slot, generation, v)
    }

    pub(crate) fn export_slot(&self, module: &str) -> &'static abi::ExportSlot {
        let mut m = self.export_slots.lock();
        if let Some(s) = m.get(module).copied() {
            return s;
        }
        let s: &'static abi::ExportSlot = Box::leak(Box::new(abi::ExportSlot {
            generation: AtomicU64::new(1),
        }));
        m.insert(module.to_string(), s);
        s
    }

    /// The module's current version changed: invalidate every cached resolution. Called
    /// with the `slots` write lock held.
    fn bump(&self, module: &str) {
        self.export_slot(module)
            .generation
            .fetch_add(1, Ordering::SeqCst);
    }

    /// Resolve the synchronous function `module:function` on the current version.
    pub(crate) fn resolve(
        &self,
        module: &str,
        function: &str,
    ) -> Result<(&'static abi::ExportSlot, abi::Resolved), String> {
        let slots = self.slots.read();
        let slot = self.export_slot(module);
        let generation = slot.generation.load(Ordering::SeqCst);
        let Some(v) = slots.get(module).and_then(|s| s.current.as_ref()) else {
            return Err(crate::error::undef_not_loaded(module));
        };
        match v.functions.get(function) {
            Some(&call) => Ok((
                slot,
                abi::Resolved {
                    generation,
                    call: Some(call),
                    version: Arc::as_ptr(v) as *const c_void,
                },
            )),
            None => Err(crate::error::undef_no_function(
                module,
                &v.vsn,
                function,
                &v.export_names.join(", "),
            )),
        }
    }

    /// Kill what runs the old version of `module`, then free it. The `ops` lock is held.
    async fn purge_locked(&self, node: &dyn Processes, module: &str) -> PurgeReport {
        let old = {
            let mut slots = self.slots.write();
            slots.get_mut(module).and_then(|s| s.old.take())
        };
        let Some(old) = old else {
            return PurgeReport {
                module: module.into(),
                version: None,
                killed: Vec::new(),
                pinned: None,
            };
        };
        let report = self.kill_and_release(node, old).await;
        self.forget_if_empty(module);
        report
    }

    /// Kill what runs `old`, a version no slot holds any more, then free it (pinned if
    /// its processes do not leave it within the purge timeout). The `ops` lock is held.
    async fn kill_and_release(&self, node: &dyn Processes, old: Arc<Version>) -> PurgeReport {
        let module = old.name.clone();
        let module = module.as_str();
        let version = old.vsn.clone();
        let killed = old.bound_pids(node);
        for pid in &killed {
            node.kill(*pid);
        }
        let waited = tokio::time::timeout(self.purge_timeout, old.wait_unbound()).await;
        // Idle gen_servers are not running this code (spec §1.4): they survive, their
        // states turned into bytes that the current version will read.
        old.dehydrate_states();
        let pinned = if waited.is_err() {
            let still: Vec<String> = old.bound_pids(node).iter().map(|p| p.to_string()).collect();
            let reason = format!(
                "process(es) {} still running its code {:?} after the kill (busy inside a call, not at an await point)",
                still.join(", "),
                self.purge_timeout
            );
            self.pin(old, reason.clone());
            Some(reason)
        } else {
            self.release_quiesced(old, "purge").await
        };
        if !killed.is_empty() {
            tracing::info!(module, %version, killed = killed.len(), "purged old code, killing the processes that ran it");
        }
        PurgeReport {
            module: module.into(),
            version: Some(version),
            killed,
            pinned,
        }
    }

    fn forget_if_empty(&self, module: &str) {
        let mut slots = self.slots.write();
        if slots
            .get(module)
            .is_some_and(|s| s.current.is_none() && s.old.is_none())
        {
            slots.remove(module);
        }
    }

    fn pin(&self, v: Arc<Version>, reason: String) {
        tracing::warn!(module = %v.name, version = %v.vsn, %reason, "version pinned: kept mapped");
        self.pinned.lock().push(Pinned { version: v, reason });
    }

    /// [`CodeServer::release`] once no thread can still hold a resolution of the version
    /// taken while it was current (see `guard::quiesce`).
    /// Calls still in flight inside it (synchronous code: a function, a callback) are
    /// waited for first, within the same purge timeout.
    async fn release_quiesced(&self, v: Arc<Version>, why: &str) -> Option<String> {
        let deadline = std::time::Instant::now() + self.purge_timeout;
        while v.in_flight() != 0 && std::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if v.in_flight() == 0 && guard::quiesce(self.node, left).await {
            self.release(v, why)
        } else {
            let reason = busy_reason(&v, self.purge_timeout);
            self.pin(v, reason.clone());
            Some(reason)
        }
    }

    /// Close a version nobody runs. Returns the pin reason if it could not be freed.
    fn release(&self, v: Arc<Version>, why: &str) -> Option<String> {
        let reason = if v.in_flight() != 0 {
            Some(busy_reason(&v, self.purge_timeout))
        } else if Arc::strong_count(&v) != 1 {
            Some(format!(
                "still referenced by {} holder(s)",
                Arc::strong_count(&v) - 1
            ))
        } else if !guard::active() {
            Some("the thread-local guard is not exported by this executable, so unmapping could crash a thread at exit (link with -Wl,--export-dynamic-symbol, see hotswap-runtime's build.rs)".to_string())
        } else {
            // SAFETY: no process is bound to it, no call is in flight, and ours is the only
            // reference, so nothing can run or reach its code again.
            match unsafe { loader::close(v.handle, v.guard_id, v.inode, &v.file) } {
                loader::Closed::Unmapped => {
                    self.freed.fetch_add(1, Ordering::Relaxed);
                    let mut sp = self.spares.lock();
                    sp.push((v.hash, v.file.clone()));
                    if sp.len() > SPARES {
                        let (_, old) = sp.remove(0);
                        let _ = std::fs::remove_file(old);
                    }
                    drop(sp);
                    tracing::debug!(module = %v.name, version = %v.vsn, why, "unmapped");
                    let heap = v.heap.lock().take();
                    // Dropping a `Version` never touches the (now closed) library.
                    drop(v);
                    if let Some(h) = heap {
                        // SAFETY: the library is unmapped, so none of its code runs; by the
                        // boundary rule nothing else points into its heap.
                        unsafe { h.destroy() };
                    }
                    return None;
                }
                loader::Closed::StillMapped(r) => Some(r),
            }
        };
        let r = reason.clone().expect("set above");
        self.pin(v, r);
        reason
    }

    /// Try again to free pinned versions that nothing runs any more. Returns how many were
    /// unmapped.
    ///
    /// A candidate is a pinned version no process is bound to and no call runs inside; its
    /// idle gen_server states become bytes (as in a purge), and it is freed once every
    /// thread that was inside module code has left it (the same quiescence as a purge), so
    /// a thread that resolved it while it was current cannot still be about to run it.
    pub(crate) async fn retry_pinned(&self) -> usize {
        let _op = self.ops.lock().await;
        let candidates: Vec<Pinned> = {
            let mut p = self.pinned.lock();
            let (free, keep): (Vec<Pinned>, Vec<Pinned>) = std::mem::take(&mut *p)
                .into_iter()
                .partition(|x| !x.version.is_bound() && x.version.in_flight() == 0);
            *p = keep;
            free
        };
        if candidates.is_empty() {
            return 0;
        }
        for c in &candidates {
            c.version.dehydrate_states();
        }
        if !guard::quiesce(self.node, self.purge_timeout).await {
            for c in candidates {
                let reason = busy_reason(&c.version, self.purge_timeout);
                self.pin(c.version, reason);
            }
            return 0;
        }
        let mut n = 0;
        for c in candidates {
            if self
                .release(c.version, "retry of a pinned version")
                .is_none()
            {
                n += 1;
            }
        }
        n
    }

    /// Delete the kept copies of purged versions, and what was made ahead for a next load
    /// (nothing more is made).
    pub(crate) fn clear_spares(&self) {
        let ahead = {
            let mut p = self.ahead.lock();
            p.closed = true;
            std::mem::take(&mut p.ahead)
        };
        drop(ahead);
        for (_, f) in self.spares.lock().drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }

    /// Purge every module completely (node stop): delete, then purge twice.
    pub(crate) async fn purge_all(&self, node: &dyn Processes) -> Vec<PurgeReport> {
        let names: Vec<String> = self.slots.read().keys().cloned().collect();
        let mut out = Vec::new();
        for n in names {
            let _op = self.ops.lock().await;
            out.push(self.purge_locked(node, &n).await);
            {
                let mut slots = self.slots.write();
                if let Some(s) = slots.get_mut(&n) {
                    s.old = s.current.take();
                }
                self.bump(&n);
            }
            out.push(self.purge_locked(node, &n).await);
        }
        out
    }
}

/// A module's description of its types: the bytes its `describe` wrote, and what they
/// decode to.
#[derive(Clone)]
struct Described {
    bytes: Arc<[u8]>,
    schema: Arc<hotswap::schema::ModuleSchema>,
}

impl Described {
    /// The description encoded as `bytes`, decoded; or `like`'s (the version it is compared
    /// with) when it encoded exactly the same bytes: a rebuild that changed no type is not
    /// decoded again.
    fn decode(bytes: Arc<[u8]>, like: Option<&Described>) -> Result<Described, String> {
        if let Some(l) = like.filter(|l| *l.bytes == *bytes) {
            return Ok(l.clone());
        }
        let s = hotswap::schema::ModuleSchema::decode(&bytes);
        steps::mark("decode");
        s.map(|s| Described {
            bytes,
            schema: Arc::new(s),
        })
        .map_err(|e| e.to_string())
    }
}

/// The compatibility report of loading `new` over `cur`, or `None` when a side does not
/// describe itself (logged: such a load is not checked).
fn compare(cur: &Arc<Version>, new: &Arc<Version>) -> Option<compat::CompatReport> {
    let a = cur.described(None);
    let b = new.described(a.as_ref().ok());
    match (a, b) {
        (Ok(a), Ok(b)) => {
            let r = compat::check(&a.schema, &b.schema);
            steps::mark("compare");
            Some(r)
        }
        (a, b) => {
            let why = a.err().or(b.err()).unwrap_or_default();
            tracing::warn!(module = %new.name, "load not checked for compatibility: {why}");
            None
        }
    }
}

/// The static half of [`CodeServer::check`]: `new`'s description compared with `cur`'s
/// ([`compat::check`]), or why it could not be (a side does not describe itself). The
/// release upgrade's check phase runs it on every changed module's prepared version.
pub(crate) fn static_check(
    cur: &Version,
    new: &Version,
) -> (Option<compat::CompatReport>, Option<String>) {
    match (cur.schema(), new.schema()) {
        (Ok(a), Ok(b)) => (Some(compat::check(&a, &b)), None),
        (a, b) => (None, a.err().or(b.err())),
    }
}

/// One live gen_server state decoded by a new version's `code_change` in a dry run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DryRun {
    /// The server.
    pub pid: Pid,
    /// The version that made its state.
    pub from_version: String,
    /// `None` when the new version's `code_change` built a state from a copy of it; the
    /// error otherwise (or why it was skipped, see `skipped`).
    pub error: Option<String>,
    /// The state was not tried (the server was inside a callback); the reason.
    pub skipped: Option<String>,
}

/// What [`crate::Code::check`] found: the static check against the current version and
/// the dry run on every live state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckReport {
    /// The module.
    pub module: String,
    /// The version checked (the file's).
    pub version: String,
    /// The static check against the current version (`None`: nothing to compare with, or
    /// a side does not describe itself; see `not_checked`).
    pub report: Option<compat::CompatReport>,
    /// Why there is no static report.
    pub not_checked: Option<String>,
    /// One entry per live server of the module.
    pub dry_run: Vec<DryRun>,
}

impl CheckReport {
    /// Whether a load of the version would be refused, or a live state failed to convert.
    pub fn refuses(&self) -> bool {
        self.report.as_ref().is_some_and(|r| r.refuses())
            || self.dry_run.iter().any(|d| d.error.is_some())
    }
}

impl CodeServer {
    /// Open `path` without making it current, check it against the current version and
    /// decode a copy of every live state of the module with its `code_change` (the release
    /// upgrade's check phase calls this for every changed module). Nothing changes.
    pub(crate) async fn check(&self, path: &Path) -> Result<CheckReport, CodeError> {
        let _op = self.ops.lock().await;
        let _prepare = PrepareAfter(self);
        let v = self.open(path, None)?;
        let (cur, old) = {
            let slots = self.slots.read();
            let s = slots.get(&v.name);
            (
                s.and_then(|s| s.current.clone()),
                s.and_then(|s| s.old.clone()),
            )
        };
        let (report, not_checked) = match &cur {
            None => (
                None,
                Some(format!(
                    "module `{}` is not loaded: nothing to compare with",
                    v.name
                )),
            ),
            Some(c) => static_check(c, &v),
        };
        let mut dry_run = Vec::new();
        if v.server.is_some() {
            for made_by in cur.iter().chain(old.iter()) {
                let cells: Vec<_> = made_by
                    .states
                    .lock()
                    .values()
                    .filter_map(std::sync::Weak::upgrade)
                    .collect();
                dry_run.extend(cells.iter().filter_map(|cell| cell.dry_run(&v)));
            }
        }
        dry_run.sort_by_key(|d| d.pid);
        let out = CheckReport {
            module: v.name.clone(),
            version: v.vsn.clone(),
            report,
            not_checked,
            dry_run,
        };
        self.release(v, "check");
        Ok(out)
    }
}

/// Why a version that code may still be running in is kept.
fn busy_reason(v: &Version, waited: Duration) -> String {
    match v.in_flight() {
        0 => format!(
            "a thread stayed inside module code for more than {waited:?}, so it may still be using this version (retry_pinned frees it once no thread is)"
        ),
        n => format!(
            "{n} call(s) still running inside it after {waited:?}: synchronous module code that has not returned (a function called through Ctx::function, a callback, a destructor) cannot be pre-empted, so the version stays mapped until it returns (then retry_pinned frees it)"
        ),
    }
}

fn not_purged(old: &Arc<Version>, table: &dyn Processes) -> CodeError {
    CodeError::NotPurged {
        module: old.name.clone(),
        old_version: old.vsn.clone(),
        processes: old.bound_pids(table),
    }
}

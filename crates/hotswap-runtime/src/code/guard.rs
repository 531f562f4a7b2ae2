//! The thread-local guard (`architecture.md` §4, `dylib-findings.md` B3).
//!
//! Ordinary Rust in a module registers thread-exit hooks that point into the module:
//! `thread_local!` values with a destructor go through `__cxa_thread_atexit_impl` (which
//! makes glibc pin the library until the thread exits), and `std::thread::current()` creates
//! a pthread key with a destructor (which crashes the node when a thread exits after the
//! library was unmapped). The node executable therefore defines and exports these symbols
//! itself; a loaded module's std binds to them because the executable comes first in the
//! global lookup scope. The guard
//!
//! * registers a host trampoline with glibc instead of a module's pthread-key destructor,
//!   records the key, and deletes those keys before the module is closed (a trampoline
//!   that runs late skips the destructor of a retired module);
//! * registers a host trampoline with glibc instead of a module's TLS destructor (so the
//!   library is not pinned), and skips destructors of retired modules (their TLS values are
//!   leaked: ~1 KB per purged version at most);
//! * refuses `pthread_create` while module code runs on the calling thread: modules must not
//!   spawn threads (a module thread would run code that a purge unmaps).
//!
//! A destructor trampoline (TLS or pthread key) holds the registry's read lock while it runs
//! module code; retiring a module takes the write lock, so a purge never unmaps under a
//! running destructor.
//!
//! The symbols are only effective if the executable exports them (`-Wl,--export-dynamic-symbol`,
//! see this crate's `build.rs`). [`active`] checks that at run time; without it the code server
//! never unmaps a version (it pins it instead).

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

/// A mapped module image: its address ranges and whether it is still alive.
struct Dso {
    id: u64,
    ranges: Vec<(usize, usize)>,
    alive: bool,
}

static DSOS: RwLock<Vec<Dso>> = RwLock::new(Vec::new());
/// Pthread keys created with a module destructor: `(key, destructor address, the
/// trampoline slot glibc was given instead, if one was free)`.
static KEYS: Mutex<Vec<(libc::pthread_key_t, usize, Option<usize>)>> = Mutex::new(Vec::new());
static REFUSED_THREADS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IN_MODULE: Cell<u32> = const { Cell::new(0) };
    // A `&'static` (no destructor): registering it costs the thread no exit hook.
    static EPOCH: &'static Epoch = Epoch::register();
}

/// Per-thread record of module code running, for quiescence (see [`quiesce`]): `seq` is
/// odd while the thread runs module code (outermost entry), `node` says whose (0: not
/// known, e.g. a thread-exit destructor).
struct Epoch {
    seq: AtomicU64,
    node: AtomicU64,
}

static EPOCHS: Mutex<Vec<&'static Epoch>> = Mutex::new(Vec::new());

impl Epoch {
    fn register() -> &'static Epoch {
        let e: &'static Epoch = Box::leak(Box::new(Epoch {
            seq: AtomicU64::new(0),
            node: AtomicU64::new(0),
        }));
        EPOCHS.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        e
    }
}

/// Marks the current thread as running module code (of `node`'s versions) while alive.
#[derive(Debug)]
pub(crate) struct InModule(());

impl InModule {
    pub(crate) fn enter(node: u64) -> InModule {
        let depth = IN_MODULE.with(|c| {
            let d = c.get() + 1;
            c.set(d);
            d
        });
        if depth == 1 {
            let _ = EPOCH.try_with(|e| {
                e.node.store(node, Ordering::Relaxed);
                // SeqCst (a full fence): a purge that reads this thread's sequence after a
                // module's current version changed sees it odd if this thread may have
                // resolved that version before the change.
                e.seq
                    .store(e.seq.load(Ordering::Relaxed) + 1, Ordering::SeqCst);
            });
        }
        InModule(())
    }
}

impl Drop for InModule {
    fn drop(&mut self) {
        let depth = IN_MODULE.with(|c| {
            let d = c.get().saturating_sub(1);
            c.set(d);
            d
        });
        if depth == 0 {
            let _ = EPOCH.try_with(|e| {
                e.seq
                    .store(e.seq.load(Ordering::Relaxed) + 1, Ordering::Release)
            });
        }
    }
}

/// Wait until every thread that is running module code of `node` (or of an unknown node)
/// right now has left it at least once. After a version stopped being current, this makes
/// sure no thread still holds a resolution of it taken before the change (a cached
/// fully-qualified call is re-checked on every call, and resolutions never outlive a poll).
/// `false` if `timeout` passed first.
pub(crate) async fn quiesce(node: u64, timeout: std::time::Duration) -> bool {
    let busy: Vec<(&'static Epoch, u64)> = EPOCHS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|e| (*e, e.seq.load(Ordering::SeqCst)))
        .filter(|(e, s)| {
            let n = e.node.load(Ordering::Relaxed);
            s % 2 == 1 && (n == 0 || n == node)
        })
        .collect();
    let deadline = std::time::Instant::now() + timeout;
    for (e, s) in busy {
        // Polls are short: yield to other tasks while waiting.
        while e.seq.load(Ordering::SeqCst) == s {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::task::yield_now().await;
        }
    }
    true
}

/// Whether this thread is running module code now (an [`InModule`] is held).
#[inline]
pub(crate) fn in_module() -> bool {
    IN_MODULE.try_with(|c| c.get() > 0).unwrap_or(false)
}

/// How many thread creations by module code were refused since the node started.
pub fn refused_threads() -> u64 {
    REFUSED_THREADS.load(Ordering::Relaxed)
}

fn owner_of(addr: usize, dsos: &[Dso]) -> Option<u64> {
    dsos.iter()
        .find(|d| d.alive && d.ranges.iter().any(|&(a, b)| addr >= a && addr < b))
        .map(|d| d.id)
}

/// Start watching a freshly opened module image.
pub(crate) fn register(id: u64, ranges: Vec<(usize, usize)>) {
    let mut d = DSOS.write().unwrap_or_else(|e| e.into_inner());
    d.push(Dso {
        id,
        ranges,
        alive: true,
    });
}

/// Before `dlclose`: retire the module's TLS destructors and delete its pthread keys.
/// Returns the number of keys deleted.
pub(crate) fn retire(id: u64) -> usize {
    let ranges = {
        // The write lock waits for any trampoline still running this module's destructors.
        let mut d = DSOS.write().unwrap_or_else(|e| e.into_inner());
        let Some(pos) = d.iter().position(|x| x.id == id) else {
            return 0;
        };
        d[pos].alive = false;
        let ranges = d[pos].ranges.clone();
        // Keep retired entries only while trampolines may still name them; ids are unique,
        // so a retired entry is just `alive: false` and can be dropped now.
        d.remove(pos);
        ranges
    };
    let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    let mut n = 0;
    keys.retain(|&(k, dtor, slot)| {
        if ranges.iter().any(|&(a, b)| dtor >= a && dtor < b) {
            // SAFETY: `k` is a key created through our interposer and not yet deleted;
            // deleting it only stops glibc from calling its (soon unmapped) destructor.
            unsafe { libc::pthread_key_delete(k) };
            if let Some(i) = slot {
                // A thread exiting right now may still call this slot's trampoline: it
                // finds the module retired (above, under the write lock) and skips it.
                KEY_DTORS[i].store(0, Ordering::Release);
            }
            n += 1;
            false
        } else {
            true
        }
    });
    n
}

/// How many pthread keys with a module destructor can be routed through a trampoline at
/// once (std creates a few per module; purged modules give theirs back).
const KEY_SLOTS: usize = 64;

/// The module destructor behind each key trampoline (0: free).
static KEY_DTORS: [AtomicUsize; KEY_SLOTS] = [const { AtomicUsize::new(0) }; KEY_SLOTS];

/// Where the search for a free slot starts: slots are taken round-robin, so a slot freed by
/// a purge is reused as late as possible.
static NEXT_KEY_SLOT: AtomicUsize = AtomicUsize::new(0);

/// Module key destructors that found no free trampoline and were given to glibc directly.
static UNGUARDED_KEYS: AtomicU64 = AtomicU64::new(0);

/// Glibc calls a key's destructor directly when a thread exits, with no lock the purge
/// could wait on. A module's key destructor is therefore registered as one of these host
/// trampolines, which run it as [`tls_trampoline`] runs a TLS destructor: under the
/// registry's read lock (so `retire`, which takes the write lock before `dlclose`, waits
/// for it), inside the thread's quiesce epoch, and only while the module is alive.
unsafe extern "C" fn key_trampoline<const I: usize>(value: *mut c_void) {
    let dsos = DSOS.read().unwrap_or_else(|p| p.into_inner());
    let d = KEY_DTORS[I].load(Ordering::Acquire);
    if d != 0 && owner_of(d, &dsos).is_some() {
        let _m = InModule::enter(0);
        // SAFETY: `d` is the address of the destructor the module passed to
        // `pthread_key_create`; its module is alive (checked under the lock that retiring
        // takes), so it is mapped; glibc hands us the value stored under the key.
        unsafe {
            let f = std::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void)>(d);
            f(value)
        };
    }
    // else: the module was purged; the value is leaked, never touched.
}

macro_rules! key_trampolines {
    ($($i:literal)*) => {
        [$(key_trampoline::<$i> as unsafe extern "C" fn(*mut c_void)),*]
    };
}

static KEY_TRAMPOLINES: [unsafe extern "C" fn(*mut c_void); KEY_SLOTS] = key_trampolines!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60
    61 62 63
);

/// Take a free trampoline slot for the module destructor at `dtor`.
fn take_key_slot(dtor: usize) -> Option<usize> {
    let start = NEXT_KEY_SLOT.load(Ordering::Relaxed);
    (0..KEY_SLOTS)
        .map(|k| (start + k) % KEY_SLOTS)
        .find(|&i| {
            KEY_DTORS[i]
                .compare_exchange(0, dtor, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
        .inspect(|&i| NEXT_KEY_SLOT.store(i + 1, Ordering::Relaxed))
}

/// How many module pthread-key destructors were handed to glibc unguarded because every
/// trampoline was taken (a purge of such a module can race with a thread exiting).
pub fn unguarded_key_destructors() -> u64 {
    UNGUARDED_KEYS.load(Ordering::Relaxed)
}

/// Whether the executable exports the guard, so that modules bind to it.
pub fn active() -> bool {
    static ACTIVE: AtomicUsize = AtomicUsize::new(0); // 0 unknown, 1 no, 2 yes
    match ACTIVE.load(Ordering::Relaxed) {
        1 => return false,
        2 => return true,
        _ => {}
    }
    let ok = [
        "pthread_key_create",
        "__cxa_thread_atexit_impl",
        "pthread_create",
    ]
    .iter()
    .all(|name| {
        let c = std::ffi::CString::new(*name).expect("no NUL in symbol names");
        // SAFETY: plain symbol lookups in the global scope.
        let global = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
        let ours = match *name {
            "pthread_key_create" => pthread_key_create as *const () as usize,
            "__cxa_thread_atexit_impl" => __cxa_thread_atexit_impl as *const () as usize,
            _ => pthread_create as *const () as usize,
        };
        global as usize == ours
    });
    ACTIVE.store(if ok { 2 } else { 1 }, Ordering::Relaxed);
    ok
}

fn real(cache: &AtomicUsize, name: &std::ffi::CStr) -> usize {
    let mut f = cache.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: looking up the next definition of a libc symbol after this executable.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        cache.store(f, Ordering::Release);
    }
    f
}

type KeyCreate = unsafe extern "C" fn(
    *mut libc::pthread_key_t,
    Option<unsafe extern "C" fn(*mut c_void)>,
) -> libc::c_int;
type ThreadAtexit = unsafe extern "C" fn(
    unsafe extern "C" fn(*mut c_void),
    *mut c_void,
    *mut c_void,
) -> libc::c_int;
type ThreadCreate = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    extern "C" fn(*mut c_void) -> *mut c_void,
    *mut c_void,
) -> libc::c_int;

/// Interposed `pthread_key_create`: records keys whose destructor lies in a module.
///
/// # Safety
/// Same contract as libc's `pthread_key_create`.
#[no_mangle]
pub unsafe extern "C" fn pthread_key_create(
    key: *mut libc::pthread_key_t,
    dtor: Option<unsafe extern "C" fn(*mut c_void)>,
) -> libc::c_int {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let f = real(&REAL, c"pthread_key_create");
    if f == 0 {
        return libc::EAGAIN;
    }
    // SAFETY: `f` is libc's `pthread_key_create`, which has this signature.
    let real: KeyCreate = unsafe { std::mem::transmute::<usize, KeyCreate>(f) };
    let module_dtor = dtor.map(|d| d as usize).filter(|&addr| {
        DSOS.read()
            .map(|dsos| owner_of(addr, &dsos).is_some())
            .unwrap_or(false)
    });
    let Some(addr) = module_dtor else {
        // SAFETY: not a module destructor: forward the caller's arguments unchanged.
        return unsafe { real(key, dtor) };
    };
    let slot = take_key_slot(addr);
    let given = match slot {
        Some(i) => Some(KEY_TRAMPOLINES[i]),
        None => {
            UNGUARDED_KEYS.fetch_add(1, Ordering::Relaxed);
            dtor
        }
    };
    // SAFETY: forwarding the caller's key under its contract, with a host trampoline (or,
    // if none is free, the module's own destructor) as the destructor.
    let r = unsafe { real(key, given) };
    if r == 0 {
        // SAFETY: `real` succeeded, so `*key` was written.
        let k = unsafe { *key };
        KEYS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((k, addr, slot));
    } else if let Some(i) = slot {
        KEY_DTORS[i].store(0, Ordering::Release);
    }
    r
}

struct TlsDtor {
    dtor: unsafe extern "C" fn(*mut c_void),
    obj: *mut c_void,
    owner: u64,
}

unsafe extern "C" fn tls_trampoline(e: *mut c_void) {
    // SAFETY: `e` is the `Box<TlsDtor>` leaked in `__cxa_thread_atexit_impl`, run once.
    let e = unsafe { Box::from_raw(e as *mut TlsDtor) };
    // Hold the read lock while module code runs, so `retire` (write lock) waits for us.
    let dsos = DSOS.read().unwrap_or_else(|p| p.into_inner());
    if dsos.iter().any(|d| d.id == e.owner && d.alive) {
        let _m = InModule::enter(0);
        // SAFETY: the owning module is alive (checked under the lock that retiring takes),
        // so its destructor is mapped; it is called once with the object it registered.
        unsafe { (e.dtor)(e.obj) };
    }
    // else: the module was purged; its thread-local value is leaked, never touched.
}

/// Interposed `__cxa_thread_atexit_impl`: module TLS destructors go through a host
/// trampoline registered against the executable, so they never pin a module.
///
/// # Safety
/// Same contract as glibc's `__cxa_thread_atexit_impl`.
#[no_mangle]
pub unsafe extern "C" fn __cxa_thread_atexit_impl(
    dtor: unsafe extern "C" fn(*mut c_void),
    obj: *mut c_void,
    dso: *mut c_void,
) -> libc::c_int {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let f = real(&REAL, c"__cxa_thread_atexit_impl");
    if f == 0 {
        return -1;
    }
    // SAFETY: `f` is glibc's `__cxa_thread_atexit_impl`, which has this signature.
    let real: ThreadAtexit = unsafe { std::mem::transmute::<usize, ThreadAtexit>(f) };
    let owner = DSOS.read().ok().and_then(|d| owner_of(dtor as usize, &d));
    match owner {
        // SAFETY: not a module destructor: forward unchanged.
        None => unsafe { real(dtor, obj, dso) },
        Some(owner) => {
            let e = Box::into_raw(Box::new(TlsDtor { dtor, obj, owner }));
            // Register against the executable (an address inside it), not the module.
            // SAFETY: the trampoline lives in the executable and consumes `e` exactly once.
            unsafe {
                real(
                    tls_trampoline,
                    e as *mut c_void,
                    tls_trampoline as *mut c_void,
                )
            }
        }
    }
}

/// Interposed `pthread_create`: refused while module code runs on this thread.
///
/// # Safety
/// Same contract as libc's `pthread_create`.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> libc::c_int {
    if in_module() {
        REFUSED_THREADS.fetch_add(1, Ordering::Relaxed);
        return libc::EPERM;
    }
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let f = real(&REAL, c"pthread_create");
    if f == 0 {
        return libc::EAGAIN;
    }
    // SAFETY: `f` is libc's `pthread_create`, which has this signature.
    let real: ThreadCreate = unsafe { std::mem::transmute::<usize, ThreadCreate>(f) };
    // SAFETY: forwarding the caller's arguments under the caller's contract.
    unsafe { real(thread, attr, start, arg) }
}

#[cfg(test)]
mod tests {
    use super::*;

    static RAN: AtomicUsize = AtomicUsize::new(0);
    static RAN_IN_MODULE: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn fake_module_dtor(_: *mut c_void) {
        RAN.fetch_add(1, Ordering::SeqCst);
        if in_module() {
            RAN_IN_MODULE.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A pthread-key destructor of module code runs through a host trampoline (inside the
    /// thread's quiesce epoch, under the lock retiring takes), and not at all once its
    /// module is retired.
    #[test]
    fn module_key_destructors_run_through_a_trampoline() {
        let addr = fake_module_dtor as *const () as usize;
        let id = u64::MAX - 7;
        register(id, vec![(addr, addr + 1)]);
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: a valid out-parameter and destructor.
        let r = unsafe { pthread_key_create(&mut key, Some(fake_module_dtor)) };
        assert_eq!(r, 0);
        let slot = KEYS
            .lock()
            .unwrap()
            .iter()
            .find(|k| k.0 == key)
            .and_then(|k| k.2)
            .expect("the key got a trampoline");
        assert_eq!(KEY_DTORS[slot].load(Ordering::SeqCst), addr);

        // A thread that stored a value runs the destructor when it exits.
        std::thread::spawn(move || {
            // SAFETY: `key` is a live key; any non-null value makes glibc call its
            // destructor at thread exit.
            unsafe { libc::pthread_setspecific(key, std::ptr::dangling::<c_void>()) };
        })
        .join()
        .unwrap();
        assert_eq!(RAN.load(Ordering::SeqCst), 1);
        assert_eq!(RAN_IN_MODULE.load(Ordering::SeqCst), 1, "inside the epoch");

        // Retired: the key is deleted, the slot freed, and a trampoline that runs late
        // (a thread that read the destructor before the delete) skips it.
        assert_eq!(retire(id), 1);
        assert_eq!(KEY_DTORS[slot].load(Ordering::SeqCst), 0);
        // SAFETY: the trampoline accepts any value; it must not call the destructor.
        unsafe { KEY_TRAMPOLINES[slot](std::ptr::dangling_mut::<c_void>()) };
        assert_eq!(RAN.load(Ordering::SeqCst), 1);
    }
}

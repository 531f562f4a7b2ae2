//! Per-version heaps: every byte module code allocates comes from a heap the node keeps for
//! that loaded version, and a purge frees the heap as a whole once the version is unmapped.
//! A static `Vec`, a `OnceLock<Regex>`, a thread-local buffer whose destructor the guard
//! retired: all of it is returned, although the module never frees it.
//!
//! # How
//!
//! A heap is a jemalloc arena of its own (`arenas.create`, a jemalloc linked into the node
//! with prefixed symbols: the node's own allocator is not affected). The SDK's global
//! allocator in each module forwards to [`TABLE_FNS`] (`HostApi::heap_alloc` and friends)
//! with the heap id its `init` received. A purge that verified the unmapping calls
//! [`Heap::destroy`]: `arena.<i>.destroy` returns every extent of the arena to the system.
//!
//! Thread caches: jemalloc's automatic per-thread cache mixes blocks of every arena, and an
//! arena may only be destroyed when no cache holds its blocks. Each thread therefore uses an
//! explicit cache (`tcache.create`) per heap, created the first time it allocates from that
//! heap and registered with it; destroying a heap first destroys its caches (which hands
//! their blocks back), then the arena. A thread that exits destroys its own caches. Without
//! a cache (jemalloc's limit of 4 095 explicit caches reached) a thread allocates uncached:
//! slower, still correct.
//!
//! # What must hold (and why it does)
//!
//! * **Nothing live points into a destroyed heap.** The boundary rule (`architecture.md`
//!   §2.1) copies every byte that crosses into memory of the receiving side: replies,
//!   messages, encoded states, panic messages and log lines are written by module code
//!   through a host `WriteFn` (node code, node allocator) or read by the node from borrowed
//!   `(ptr, len)` pairs during the call. Objects a module makes (states, futures) are
//!   dropped by that version's own functions while it is mapped (§2.2). A version's TLS
//!   values whose destructors the guard retired are never touched again.
//! * **No block changes allocator.** Each side's `WriteFn` is its own code, so a buffer is
//!   always grown by the allocator that made it: the node passes its `write_vec` with a node
//!   `Vec`, a module passes its own copy with a module `Vec`.
//! * **A block freed by another version than the one that allocated it** (which §2.2
//!   forbids; nothing in the SDK does it) is not detected. jemalloc routes it to its own
//!   arena when it leaves a thread cache (a flush looks each block's arena up by address),
//!   but until then the freeing version may hand it out again from its cache, and if the
//!   owner is purged first, that memory is gone under it: the same use after free as
//!   keeping a pointer into a purged version. Detecting it on every free needs the owner
//!   of an address in O(1): e.g. giving each arena its own aligned address window through
//!   extent hooks, so that the owner is a table entry indexed by `address >> 36`, and
//!   sending foreign blocks to their owner uncached. Not done.
//! * **Only unmapped versions lose their heap.** A pinned version keeps it; a version whose
//!   `init` failed loses it only if its image is verified gone.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tikv_jemalloc_sys as je;

/// jemalloc's options, read when it starts (the symbol its weak default yields to).
/// `retain:false`: with retained virtual memory (jemalloc's default on 64-bit Linux), each
/// arena that allocated and was destroyed leaves a page of metadata behind (4 KiB per
/// load/purge cycle, measured); without it nothing does.
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_CONF: ConfStr = ConfStr(c"retain:false".as_ptr());

/// A C string in a static (the type of jemalloc's `malloc_conf`).
#[repr(transparent)]
#[derive(Debug)]
pub struct ConfStr(*const std::ffi::c_char);

// SAFETY: it points at an immutable string literal.
unsafe impl Sync for ConfStr {}

/// One version's heap as the host functions see it (its address is the heap id a module
/// receives). Freed by [`Heap::destroy`].
struct HeapInner {
    uid: u64,
    arena: u32,
    /// `MALLOCX_ARENA(arena)`.
    arena_flag: c_int,
    /// The explicit thread caches made for this heap (one per thread that allocated).
    tcaches: Mutex<Vec<u32>>,
}

/// The uids of live heaps: a thread that exits destroys only caches of heaps still alive
/// (under this lock, which [`Heap::destroy`] also takes).
static LIVE: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static NEXT_UID: AtomicU64 = AtomicU64::new(1);
static CREATED: AtomicUsize = AtomicUsize::new(0);
static DESTROYED: AtomicUsize = AtomicUsize::new(0);

/// A version's heap, owned by the code server. Dropping it keeps the arena (a version that
/// could not be unmapped keeps its memory); only [`Heap::destroy`] frees it.
pub(crate) struct Heap {
    inner: *mut HeapInner,
}

// SAFETY: `HeapInner` is only read through shared references (its mutable part is behind a
// lock) and jemalloc's arena functions are thread-safe.
unsafe impl Send for Heap {}
// SAFETY: as above.
unsafe impl Sync for Heap {}

impl std::fmt::Debug for Heap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: the inner record lives until `destroy` consumes `self`.
        let h = unsafe { &*self.inner };
        write!(f, "heap #{} (arena {})", h.uid, h.arena)
    }
}

fn mallctl_u32_out(name: &std::ffi::CStr) -> Option<u32> {
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>();
    // SAFETY: `name` is a read-only control that writes one `unsigned` to `v`.
    let rc = unsafe {
        je::mallctl(
            name.as_ptr(),
            &mut v as *mut u32 as *mut c_void,
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (rc == 0).then_some(v)
}

fn mallctl_u32_in(name: &std::ffi::CStr, mut v: u32) -> bool {
    // SAFETY: `name` is a write-only control that reads one `unsigned` from `v`.
    let rc = unsafe {
        je::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut v as *mut u32 as *mut c_void,
            std::mem::size_of::<u32>(),
        )
    };
    rc == 0
}

impl Heap {
    /// A fresh heap, or `None` if jemalloc cannot make another arena (the version then
    /// allocates with the system allocator; see the log).
    pub(crate) fn create() -> Option<Heap> {
        // Keep the options' object file in the link (nothing else refers to the symbol but
        // jemalloc's weak reference, which does not pull it in).
        std::hint::black_box(&JEMALLOC_CONF);
        let Some(arena) = mallctl_u32_out(c"arenas.create") else {
            tracing::warn!("cannot create a heap for a module version (jemalloc arenas.create failed): it will use the system allocator, and a purge will not return its memory");
            return None;
        };
        let uid = NEXT_UID.fetch_add(1, Ordering::Relaxed);
        let inner = Box::into_raw(Box::new(HeapInner {
            uid,
            arena,
            arena_flag: je::MALLOCX_ARENA(arena as usize),
            tcaches: Mutex::new(Vec::new()),
        }));
        LIVE.lock().push(uid);
        CREATED.fetch_add(1, Ordering::Relaxed);
        Some(Heap { inner })
    }

    /// The id module code passes to the heap functions.
    pub(crate) fn id(&self) -> u64 {
        self.inner as usize as u64
    }

    /// Free everything allocated from this heap.
    ///
    /// # Safety
    /// No code may use a block of this heap again: the version that allocated from it is
    /// unmapped (so none of its code runs), and by the boundary rule nothing else keeps a
    /// pointer into it.
    pub(crate) unsafe fn destroy(self) {
        // SAFETY: `inner` came from `Box::into_raw` in `create` and is freed only here.
        let inner = unsafe { Box::from_raw(self.inner) };
        let mut live = LIVE.lock();
        live.retain(|u| *u != inner.uid);
        for tc in inner.tcaches.lock().drain(..) {
            // Hands the cached blocks back to their arenas and frees the cache's identifier.
            mallctl_u32_in(c"tcache.destroy", tc);
        }
        let name = CString::new(format!("arena.{}.destroy", inner.arena)).expect("no NUL");
        // SAFETY: a write-only control with no value; no cache holds blocks of the arena
        // (destroyed above) and no thread is bound to it (we never use `thread.arena`).
        let rc = unsafe {
            je::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        drop(live);
        if rc == 0 {
            DESTROYED.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::warn!(
                arena = inner.arena,
                rc,
                "jemalloc refused to destroy a purged version's heap: its memory is kept"
            );
        }
    }
}

/// `(created, destroyed)` heaps since the process started.
pub fn heap_counts() -> (usize, usize) {
    (
        CREATED.load(Ordering::Relaxed),
        DESTROYED.load(Ordering::Relaxed),
    )
}

/// One thread's explicit cache for one heap.
struct Entry {
    uid: u64,
    heap: *const HeapInner,
    /// `MALLOCX_TCACHE(tc)`, or `MALLOCX_TCACHE_NONE` if no cache could be made.
    flags: c_int,
    tc: Option<u32>,
}

/// A thread's caches; destroyed with the thread.
struct ThreadCaches(Vec<Entry>);

impl Drop for ThreadCaches {
    fn drop(&mut self) {
        // Later allocations on this thread (other thread-exit destructors) go uncached.
        LAST.with(|l| l.set((0, 0)));
        let live = LIVE.lock();
        for e in self.0.drain(..) {
            let Some(tc) = e.tc else { continue };
            if !live.contains(&e.uid) {
                continue; // the heap was destroyed, and its caches with it
            }
            // SAFETY: the heap is alive (checked under the lock `destroy` takes).
            let h = unsafe { &*e.heap };
            h.tcaches.lock().retain(|t| *t != tc);
            mallctl_u32_in(c"tcache.destroy", tc);
        }
    }
}

thread_local! {
    /// `(heap uid, flags)` of the heap this thread used last: the fast path. Const and
    /// without a destructor, so it is usable during thread exit.
    static LAST: Cell<(u64, c_int)> = const { Cell::new((0, 0)) };
    static CACHES: RefCell<ThreadCaches> = const { RefCell::new(ThreadCaches(Vec::new())) };
}

/// This thread's cache flags for `h` (made on first use).
#[inline]
fn cache_flags(h: &HeapInner) -> c_int {
    let (uid, flags) = LAST.with(|l| l.get());
    if uid == h.uid {
        return flags;
    }
    cache_flags_slow(h)
}

#[cold]
fn cache_flags_slow(h: &HeapInner) -> c_int {
    let found = CACHES.try_with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            return je::MALLOCX_TCACHE_NONE;
        };
        if let Some(e) = c.0.iter().find(|e| e.uid == h.uid) {
            return e.flags;
        }
        // Forget caches of heaps destroyed since (their caches went with them).
        {
            let live = LIVE.lock();
            c.0.retain(|e| live.contains(&e.uid));
        }
        let mut tcaches = h.tcaches.lock();
        let tc = mallctl_u32_out(c"tcache.create");
        let flags = match tc {
            Some(t) => {
                tcaches.push(t);
                je::MALLOCX_TCACHE(t as usize)
            }
            None => je::MALLOCX_TCACHE_NONE,
        };
        drop(tcaches);
        c.0.push(Entry {
            uid: h.uid,
            heap: h,
            flags,
            tc,
        });
        flags
    });
    match found {
        Ok(flags) => {
            LAST.with(|l| l.set((h.uid, flags)));
            flags
        }
        // The thread is exiting: its caches are gone.
        Err(_) => je::MALLOCX_TCACHE_NONE,
    }
}

/// jemalloc's alignment flag for a block of `size` bytes aligned to `align`: none when the
/// size class already guarantees it (every class is aligned to 16 bytes or to its size).
#[inline]
fn align_flag(size: usize, align: usize) -> c_int {
    if align <= 16 && align <= size {
        0
    } else {
        je::MALLOCX_ALIGN(align)
    }
}

/// # Safety
/// `heap` must be the id of a live heap (the calling version's).
#[inline]
unsafe fn heap_ref<'a>(heap: u64) -> &'a HeapInner {
    // SAFETY: caller contract: a module only passes the id its `init` received, and the
    // heap outlives the module's image.
    unsafe { &*(heap as usize as *const HeapInner) }
}

/// `HostApi::heap_alloc`.
pub(crate) unsafe extern "C" fn heap_alloc(heap: u64, size: usize, align: usize) -> *mut u8 {
    // SAFETY: ABI contract (the calling version's heap).
    let h = unsafe { heap_ref(heap) };
    let flags = h.arena_flag | cache_flags(h) | align_flag(size, align);
    // SAFETY: `size > 0` (ABI contract); the flags name a live arena and this thread's cache.
    unsafe { je::mallocx(size, flags) as *mut u8 }
}

/// `HostApi::heap_alloc_zeroed`.
pub(crate) unsafe extern "C" fn heap_alloc_zeroed(heap: u64, size: usize, align: usize) -> *mut u8 {
    // SAFETY: ABI contract (the calling version's heap).
    let h = unsafe { heap_ref(heap) };
    let flags = h.arena_flag | cache_flags(h) | align_flag(size, align) | je::MALLOCX_ZERO;
    // SAFETY: as in `heap_alloc`.
    unsafe { je::mallocx(size, flags) as *mut u8 }
}

/// `HostApi::heap_realloc`.
pub(crate) unsafe extern "C" fn heap_realloc(
    heap: u64,
    ptr: *mut u8,
    _size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: ABI contract (the calling version's heap).
    let h = unsafe { heap_ref(heap) };
    let flags = h.arena_flag | cache_flags(h) | align_flag(new_size, align);
    // SAFETY: `ptr` is a live block of this heap (ABI contract); `new_size > 0`.
    unsafe { je::rallocx(ptr as *mut c_void, new_size, flags) as *mut u8 }
}

/// `HostApi::heap_free`.
pub(crate) unsafe extern "C" fn heap_free(heap: u64, ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: ABI contract (the calling version's heap).
    let h = unsafe { heap_ref(heap) };
    let flags = cache_flags(h) | align_flag(size, align);
    // SAFETY: `ptr` is a live block allocated with `size` and `align` (ABI contract); the
    // alignment flag is the one it was allocated with, as sized deallocation requires.
    unsafe { je::sdallocx(ptr as *mut c_void, size, flags) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_from_the_heap_and_destroy_returns_them() {
        let heap = Heap::create().expect("an arena");
        let id = heap.id();
        // SAFETY: a live heap; sizes and alignments are valid; every block is freed once.
        unsafe {
            let a = heap_alloc(id, 24, 8);
            let z = heap_alloc_zeroed(id, 4096, 64);
            assert!(!a.is_null() && !z.is_null());
            assert_eq!(z as usize % 64, 0);
            assert!(std::slice::from_raw_parts(z, 4096).iter().all(|b| *b == 0));
            a.write_bytes(7, 24);
            let b = heap_realloc(id, a, 24, 8, 100_000);
            assert!(std::slice::from_raw_parts(b, 24).iter().all(|x| *x == 7));
            heap_free(id, b, 100_000, 8);
            // `z` is left allocated: destroying the heap frees it.
            let (_, destroyed) = heap_counts();
            heap.destroy();
            assert!(heap_counts().1 > destroyed);
        }
    }
}

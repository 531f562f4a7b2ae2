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
//! slower, still correct. In front of jemalloc, each thread keeps a few free small blocks
//! per heap (size classes of 16 bytes up to 256, at most 32 blocks each: see [`Bins`]),
//! because `mallocx`/`sdallocx` with flags cost about twice glibc's `malloc`/`free`; a
//! destroyed heap's blocks in those lists are forgotten, never touched.
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

    /// Fault in `bytes` of memory for this heap ahead of its first use: one block of that
    /// size is allocated (uncached), each of its pages touched, and freed. The arena keeps
    /// the freed pages as dirty memory (until jemalloc's decay returns them) and carves the
    /// first slabs of the version's small allocations from them, so the version's first
    /// allocations do not each fault a fresh page. Meant for a heap made ahead, off the load.
    pub(crate) fn warm(&self, bytes: usize) {
        // SAFETY: `inner` is live until `destroy`.
        let flags = unsafe { (*self.inner).arena_flag } | je::MALLOCX_TCACHE_NONE;
        // SAFETY: a plain allocation from this heap's arena, with a non-zero size.
        let p = unsafe { je::mallocx(bytes.max(1), flags) } as *mut u8;
        if p.is_null() {
            return;
        }
        for off in (0..bytes).step_by(4096) {
            // SAFETY: `off < bytes`, inside the block just allocated.
            unsafe { p.add(off).write_volatile(0) };
        }
        // SAFETY: `p` was allocated above with these flags and this size, and is not used
        // again.
        unsafe { je::sdallocx(p as *mut c_void, bytes.max(1), flags) };
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

/// Small blocks: sizes up to [`SMALL_MAX`] with alignment up to 16 are rounded up to a
/// multiple of 16 (`class(size) = (size - 1) / 16`), so that every block of a class can
/// serve any request of that class; each thread keeps up to [`BIN_CAP`] free blocks per
/// class and heap, popped and pushed without a call into jemalloc (whose `mallocx` with
/// flags takes its slow path: about twice the cost of glibc's `malloc` here).
const SMALL_MAX: usize = 256;
const CLASSES: usize = SMALL_MAX / 16;
const BIN_CAP: u32 = 32;

/// Free small blocks of one heap kept by one thread (a block's first word links the next).
struct Bins {
    head: [*mut u8; CLASSES],
    count: [u32; CLASSES],
}

impl Bins {
    fn new() -> Bins {
        Bins {
            head: [std::ptr::null_mut(); CLASSES],
            count: [0; CLASSES],
        }
    }
}

#[inline]
fn small_class(size: usize, align: usize) -> Option<usize> {
    (size <= SMALL_MAX && align <= 16).then(|| size.saturating_sub(1) >> 4)
}

#[inline]
fn class_size(k: usize) -> usize {
    (k + 1) << 4
}

/// One thread's caches for one heap.
struct Entry {
    uid: u64,
    heap: *const HeapInner,
    /// `MALLOCX_TCACHE(tc)`, or `MALLOCX_TCACHE_NONE` if no cache could be made.
    flags: c_int,
    tc: Option<u32>,
    bins: Box<Bins>,
}

/// A thread's caches; destroyed with the thread.
struct ThreadCaches(Vec<Entry>);

impl Drop for ThreadCaches {
    fn drop(&mut self) {
        // Later allocations on this thread (other thread-exit destructors) go uncached.
        LAST.with(|l| l.set((0, 0, std::ptr::null_mut())));
        let live = LIVE.lock();
        for mut e in self.0.drain(..) {
            if !live.contains(&e.uid) {
                continue; // the heap was destroyed, and its blocks with it
            }
            for (k, head) in e.bins.head.iter_mut().enumerate() {
                let mut p = std::mem::replace(head, std::ptr::null_mut());
                while !p.is_null() {
                    // SAFETY: a free block of this live heap, its first word the next link.
                    let next = unsafe { *(p as *mut *mut u8) };
                    // SAFETY: allocated with the class size (see `small_class`).
                    unsafe { je::sdallocx(p as *mut c_void, class_size(k), e.flags) };
                    p = next;
                }
            }
            let Some(tc) = e.tc else { continue };
            // SAFETY: the heap is alive (checked under the lock `destroy` takes).
            let h = unsafe { &*e.heap };
            h.tcaches.lock().retain(|t| *t != tc);
            mallctl_u32_in(c"tcache.destroy", tc);
        }
    }
}

thread_local! {
    /// `(heap uid, flags, bins)` of the heap this thread used last: the fast path. Const
    /// and without a destructor, so it is usable during thread exit.
    static LAST: Cell<(u64, c_int, *mut Bins)> =
        const { Cell::new((0, 0, std::ptr::null_mut())) };
    static CACHES: RefCell<ThreadCaches> = const { RefCell::new(ThreadCaches(Vec::new())) };
}

/// This thread's cache flags and free bins for `h` (made on first use; null bins when the
/// thread is exiting).
#[inline]
fn thread_cache(h: &HeapInner) -> (c_int, *mut Bins) {
    let (uid, flags, bins) = LAST.with(|l| l.get());
    if uid == h.uid {
        return (flags, bins);
    }
    thread_cache_slow(h)
}

#[cold]
fn thread_cache_slow(h: &HeapInner) -> (c_int, *mut Bins) {
    let found = CACHES.try_with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            return (je::MALLOCX_TCACHE_NONE, std::ptr::null_mut());
        };
        if let Some(e) = c.0.iter_mut().find(|e| e.uid == h.uid) {
            return (e.flags, &mut *e.bins as *mut Bins);
        }
        // Forget caches of heaps destroyed since (their blocks went with them).
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
        let mut bins = Box::new(Bins::new());
        let b = &mut *bins as *mut Bins;
        c.0.push(Entry {
            uid: h.uid,
            heap: h,
            flags,
            tc,
            bins,
        });
        (flags, b)
    });
    match found {
        Ok((flags, bins)) => {
            if !bins.is_null() {
                LAST.with(|l| l.set((h.uid, flags, bins)));
            }
            (flags, bins)
        }
        // The thread is exiting: its caches are gone.
        Err(_) => (je::MALLOCX_TCACHE_NONE, std::ptr::null_mut()),
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

/// Allocate from `h` (uninitialised).
#[inline]
fn alloc_in(h: &HeapInner, size: usize, align: usize) -> *mut u8 {
    let (flags, bins) = thread_cache(h);
    if let Some(k) = small_class(size, align) {
        if !bins.is_null() {
            // SAFETY: this thread's bins for `h` (only this thread touches them, and nothing
            // in between can re-enter).
            let b = unsafe { &mut *bins };
            let p = b.head[k];
            if !p.is_null() {
                // SAFETY: a free block of class `k`; its first word links the next.
                b.head[k] = unsafe { *(p as *mut *mut u8) };
                b.count[k] -= 1;
                return p;
            }
        }
        // SAFETY: a non-zero size; the flags name a live arena and this thread's cache; a
        // multiple of 16 is aligned to 16.
        return unsafe { je::mallocx(class_size(k), h.arena_flag | flags) as *mut u8 };
    }
    // SAFETY: `size > 0` (ABI contract); flags as above.
    unsafe { je::mallocx(size, h.arena_flag | flags | align_flag(size, align)) as *mut u8 }
}

/// Free a block of `h` allocated with `size` and `align`.
///
/// # Safety
/// `ptr` is a live block of `h` allocated with that layout.
#[inline]
unsafe fn free_in(h: &HeapInner, ptr: *mut u8, size: usize, align: usize) {
    let (flags, bins) = thread_cache(h);
    if let Some(k) = small_class(size, align) {
        if !bins.is_null() {
            // SAFETY: as in `alloc_in`.
            let b = unsafe { &mut *bins };
            if b.count[k] < BIN_CAP {
                // SAFETY: the block is ours now and at least a class size (16 B) long.
                unsafe { *(ptr as *mut *mut u8) = b.head[k] };
                b.head[k] = ptr;
                b.count[k] += 1;
                return;
            }
        }
        // SAFETY: small blocks are allocated with their class size.
        unsafe { je::sdallocx(ptr as *mut c_void, class_size(k), flags) };
        return;
    }
    // SAFETY: caller contract; the alignment flag is the one it was allocated with, as
    // sized deallocation requires.
    unsafe { je::sdallocx(ptr as *mut c_void, size, flags | align_flag(size, align)) }
}

/// `HostApi::heap_alloc`.
pub(crate) unsafe extern "C" fn heap_alloc(heap: u64, size: usize, align: usize) -> *mut u8 {
    // SAFETY: ABI contract (the calling version's heap).
    alloc_in(unsafe { heap_ref(heap) }, size, align)
}

/// `HostApi::heap_alloc_zeroed`.
pub(crate) unsafe extern "C" fn heap_alloc_zeroed(heap: u64, size: usize, align: usize) -> *mut u8 {
    // SAFETY: ABI contract (the calling version's heap).
    let h = unsafe { heap_ref(heap) };
    if small_class(size, align).is_some() {
        let p = alloc_in(h, size, align);
        if !p.is_null() {
            // SAFETY: `p` has room for `size` bytes.
            unsafe { p.write_bytes(0, size) };
        }
        return p;
    }
    let (flags, _) = thread_cache(h);
    let flags = h.arena_flag | flags | align_flag(size, align) | je::MALLOCX_ZERO;
    // SAFETY: as in `alloc_in`.
    unsafe { je::mallocx(size, flags) as *mut u8 }
}

/// `HostApi::heap_realloc`.
pub(crate) unsafe extern "C" fn heap_realloc(
    heap: u64,
    ptr: *mut u8,
    size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: ABI contract (the calling version's heap).
    let h = unsafe { heap_ref(heap) };
    match (small_class(size, align), small_class(new_size, align)) {
        (Some(a), Some(b)) if a == b => ptr,
        (None, None) => {
            let (flags, _) = thread_cache(h);
            let flags = h.arena_flag | flags | align_flag(new_size, align);
            // SAFETY: `ptr` is a live large block of this heap (ABI contract).
            unsafe { je::rallocx(ptr as *mut c_void, new_size, flags) as *mut u8 }
        }
        _ => {
            let n = alloc_in(h, new_size, align);
            if !n.is_null() {
                // SAFETY: both blocks are valid for the smaller size and distinct; the old
                // one is freed once, with its layout.
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, n, size.min(new_size));
                    free_in(h, ptr, size, align);
                }
            }
            n
        }
    }
}

/// `HostApi::heap_free`.
pub(crate) unsafe extern "C" fn heap_free(heap: u64, ptr: *mut u8, size: usize, align: usize) {
    // SAFETY: ABI contract (the calling version's heap and a live block of it).
    unsafe { free_in(heap_ref(heap), ptr, size, align) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_from_the_heap_and_destroy_returns_them() {
        let heap = Heap::create().expect("an arena");
        let id = heap.id();
        // SAFETY: a live heap; sizes and alignments are valid; every block is freed once,
        // with the layout it was allocated with.
        unsafe {
            // Small blocks go round the thread's bins: a freed one is reused.
            let a = heap_alloc(id, 24, 8);
            a.write_bytes(0xEE, 24);
            heap_free(id, a, 24, 8);
            let b = heap_alloc(id, 20, 4);
            assert_eq!(a, b, "a freed block of the class is reused");
            heap_free(id, b, 20, 4);
            let z = heap_alloc_zeroed(id, 30, 2);
            assert_eq!(z, a, "zeroed requests take cached blocks too");
            assert!(std::slice::from_raw_parts(z, 30).iter().all(|x| *x == 0));
            heap_free(id, z, 30, 2);
            // 8-byte requests get a 16-byte class block (every block serves its class).
            let t = heap_alloc(id, 8, 8);
            t.write_bytes(1, 8);
            // Growth across classes and into large blocks keeps the contents.
            let g = heap_realloc(id, t, 8, 8, 200);
            assert!(std::slice::from_raw_parts(g, 8).iter().all(|x| *x == 1));
            let g = heap_realloc(id, g, 200, 8, 100_000);
            assert!(std::slice::from_raw_parts(g, 8).iter().all(|x| *x == 1));
            let g = heap_realloc(id, g, 100_000, 8, 16);
            assert!(std::slice::from_raw_parts(g, 8).iter().all(|x| *x == 1));
            heap_free(id, g, 16, 8);
            let big = heap_alloc_zeroed(id, 4096, 64);
            assert_eq!(big as usize % 64, 0);
            assert!(std::slice::from_raw_parts(big, 4096)
                .iter()
                .all(|x| *x == 0));
            // More frees than a bin keeps: the rest go back to jemalloc.
            let many: Vec<*mut u8> = (0..100).map(|_| heap_alloc(id, 48, 16)).collect();
            for p in many {
                heap_free(id, p, 48, 16);
            }
            // `big` and the cached blocks are left: destroying the heap frees them.
            let (_, destroyed) = heap_counts();
            heap.destroy();
            assert!(heap_counts().1 > destroyed);
        }
    }
}

//! The global allocator of a module: every allocation module code makes goes to a heap the
//! node owns for this loaded version (`HostApi::heap_alloc` and friends), so that a purge
//! can return all of it, statics included, once the version is unmapped.
//!
//! `module!` installs [`ModuleHeap`] as the library's `#[global_allocator]`. It has three
//! modes:
//!
//! * **boot** (from `dlopen` until the node calls `init`): allocations are carved from a
//!   buffer in the library's own `.bss` and never reused; freeing one does nothing. The
//!   buffer goes away with the image, so even these bytes are returned by a purge.
//! * **heap** (after `init` received a heap): everything goes to the node.
//! * **system** (`init` received no heap, or the boot buffer ran out before `init`, as in a
//!   test harness that links the module crate with no node): the system allocator. Nothing
//!   is then returned by a purge beyond what the module frees itself.
//!
//! Every block is freed by the allocator that made it: boot blocks are recognised by their
//! address (two comparisons), and the mode only ever moves from boot to one of the others,
//! never back, and never between heap and system (a module that had to use the system
//! allocator before `init` stays on it and tells the node so).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use hotswap_abi as abi;

const BOOT: u8 = 0;
const HEAP: u8 = 1;
const SYSTEM: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(BOOT);
static TABLE: AtomicPtr<abi::HostApi> = AtomicPtr::new(std::ptr::null_mut());
static HEAP_ID: AtomicU64 = AtomicU64::new(0);

/// Size of the boot buffer: Rust's std allocates nothing before `init`; this leaves room
/// for a dependency's constructor.
const BOOT_LEN: usize = 64 << 10;

#[repr(C, align(4096))]
struct BootBuf(UnsafeCell<[u8; BOOT_LEN]>);

// SAFETY: disjoint ranges of the buffer are handed out exactly once (an atomic bump), so no
// two threads ever get the same bytes.
unsafe impl Sync for BootBuf {}

static BOOT_BUF: BootBuf = BootBuf(UnsafeCell::new([0; BOOT_LEN]));
static BOOT_USED: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn boot_start() -> usize {
    BOOT_BUF.0.get() as usize
}

#[inline]
fn in_boot(p: *mut u8) -> bool {
    (p as usize).wrapping_sub(boot_start()) < BOOT_LEN
}

/// Carve `l` from the boot buffer, or `None` when it does not fit.
fn boot_alloc(l: Layout) -> Option<*mut u8> {
    let start = boot_start();
    let mut used = BOOT_USED.load(Ordering::Relaxed);
    loop {
        let at = (start + used).checked_next_multiple_of(l.align())?;
        let end = at.checked_add(l.size())?;
        if end > start + BOOT_LEN {
            return None;
        }
        match BOOT_USED.compare_exchange_weak(
            used,
            end - start,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            // The bytes of a static in `.bss` are zero and never handed out twice.
            Ok(_) => return Some(at as *mut u8),
            Err(u) => used = u,
        }
    }
}

/// Switch to the heap the node gave this version (0: none). Returns whether allocations go
/// to it from now on. Called by the SDK's `init`, once, before any export runs.
pub(crate) fn install(table: &'static abi::HostApi, heap: u64) -> bool {
    if heap == 0 {
        let _ = MODE.compare_exchange(BOOT, SYSTEM, Ordering::AcqRel, Ordering::Acquire);
        return false;
    }
    TABLE.store(
        table as *const abi::HostApi as *mut abi::HostApi,
        Ordering::Release,
    );
    HEAP_ID.store(heap, Ordering::Release);
    match MODE.compare_exchange(BOOT, HEAP, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(m) => m == HEAP && HEAP_ID.load(Ordering::Acquire) == heap,
    }
}

/// The host table and heap id while in heap mode.
#[inline]
fn heap() -> Option<(&'static abi::HostApi, u64)> {
    if MODE.load(Ordering::Acquire) != HEAP {
        return None;
    }
    let t = TABLE.load(Ordering::Acquire);
    // SAFETY: heap mode is entered only after `install` stored a `&'static HostApi`.
    Some((unsafe { &*t }, HEAP_ID.load(Ordering::Relaxed)))
}

/// The allocator `module!` installs in every module library (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ModuleHeap;

impl ModuleHeap {
    #[cold]
    fn alloc_slow(l: Layout, zeroed: bool) -> *mut u8 {
        loop {
            match MODE.load(Ordering::Acquire) {
                HEAP => {
                    let (t, h) = heap().expect("heap mode");
                    // SAFETY: the node's heap functions take any non-zero size and
                    // power-of-two alignment, which a `Layout` from `GlobalAlloc` is.
                    return unsafe {
                        if zeroed {
                            (t.heap_alloc_zeroed)(h, l.size(), l.align())
                        } else {
                            (t.heap_alloc)(h, l.size(), l.align())
                        }
                    };
                }
                SYSTEM => {
                    // SAFETY: forwarding the caller's non-zero layout.
                    return unsafe {
                        if zeroed {
                            System.alloc_zeroed(l)
                        } else {
                            System.alloc(l)
                        }
                    };
                }
                _ => {
                    if let Some(p) = boot_alloc(l) {
                        return p;
                    }
                    // Out of boot space before `init`: the system allocator for good.
                    let _ =
                        MODE.compare_exchange(BOOT, SYSTEM, Ordering::AcqRel, Ordering::Acquire);
                }
            }
        }
    }
}

// SAFETY: every block is returned by the allocator that made it (see the module docs), and
// each mode's allocator meets `GlobalAlloc`'s contract: the node's heap functions and the
// system allocator by their own contracts, the boot buffer by handing out disjoint, aligned,
// zeroed ranges that are never reused.
unsafe impl GlobalAlloc for ModuleHeap {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        match heap() {
            // SAFETY: as in `alloc_slow`.
            Some((t, h)) => unsafe { (t.heap_alloc)(h, l.size(), l.align()) },
            None => Self::alloc_slow(l, false),
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        match heap() {
            // SAFETY: as in `alloc_slow`.
            Some((t, h)) => unsafe { (t.heap_alloc_zeroed)(h, l.size(), l.align()) },
            None => Self::alloc_slow(l, true),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if in_boot(p) {
            return;
        }
        match heap() {
            // SAFETY: `p` was made by this heap with `l` (it is not a boot block, and the
            // mode never changes away from heap).
            Some((t, h)) => unsafe { (t.heap_free)(h, p, l.size(), l.align()) },
            // SAFETY: not a boot block and not in heap mode: the system allocator made it.
            None => unsafe { System.dealloc(p, l) },
        }
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if in_boot(p) {
            // SAFETY: `GlobalAlloc::realloc`'s contract makes this layout valid.
            let nl = unsafe { Layout::from_size_align_unchecked(new_size, l.align()) };
            // SAFETY: non-zero size (caller contract).
            let n = unsafe { self.alloc(nl) };
            if !n.is_null() {
                // SAFETY: both ranges are valid for the smaller size and do not overlap.
                unsafe { std::ptr::copy_nonoverlapping(p, n, l.size().min(new_size)) };
            }
            return n;
        }
        match heap() {
            // SAFETY: as in `dealloc`; the heap keeps the block when it returns null.
            Some((t, h)) => unsafe { (t.heap_realloc)(h, p, l.size(), l.align(), new_size) },
            // SAFETY: as in `dealloc`.
            None => unsafe { System.realloc(p, l, new_size) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_blocks_are_aligned_disjoint_and_recognised() {
        let a = boot_alloc(Layout::from_size_align(3, 1).unwrap()).unwrap();
        let b = boot_alloc(Layout::from_size_align(64, 64).unwrap()).unwrap();
        assert!(in_boot(a) && in_boot(b));
        assert_eq!(b as usize % 64, 0);
        assert!(b as usize >= a as usize + 3);
        assert!(!in_boot(Box::into_raw(Box::new(1u8))));
        assert!(boot_alloc(Layout::from_size_align(BOOT_LEN + 1, 1).unwrap()).is_none());
    }
}

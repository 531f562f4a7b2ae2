//! What an idle gen_server costs the node, in bytes, computed from the sizes of what it
//! keeps (issue 16: an idle server in at most 1 024 B, its 80-byte state included). Pinned
//! here so that a change that grows one of the parts fails a test, not a benchmark run
//! weeks later.
//!
//! The parts, for the bench's 100 000 `upgrade_srv` servers (BENCHMARKS.md, "Idle
//! gen_server memory"):
//!
//! * the process record, an `Arc<Process>`;
//! * its tokio task: the cell tokio allocates for the task's future, [`Task`] with the
//!   server loop stored inline ([`Body::Inline`](crate::process::Body)), measured here by
//!   spawning a future of the same size and recording the allocation tokio makes;
//! * the state cell shared with the version (an `Arc<StateCell>`) and the module name the
//!   loop keeps;
//! * a slot in the process table (64 shards) and one in the version's map of its states;
//! * the state itself, made by the module: 80 B for `upgrade_srv` (see the bench).
//!
//! Heap blocks are counted at the size class of mimalloc, the node's allocator in the CLI
//! and the bench. The RSS figure of the bench adds what no type here shows (allocator pages
//! and the module heap's own rounding; BENCHMARKS.md gives both).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::mem::{size_of, MaybeUninit};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use super::run::ServerBody;
use super::StateCell;
use crate::process::{Process, Task};

/// The system allocator, recording the layouts allocated by a thread that asked for it.
struct Recording;

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}
static RECORDED: Mutex<Vec<Layout>> = Mutex::new(Vec::new());

// SAFETY: every call is forwarded to `System` unchanged; recording allocates nothing with
// the flag set (it is cleared around the push).
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if RECORDING.with(|r| r.replace(false)) {
            RECORDED.lock().expect("not poisoned").push(l);
            RECORDING.with(|r| r.set(true));
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Recording = Recording;

/// A future of `T`'s size that finishes at once.
struct SizeOf<T>(MaybeUninit<T>);

impl<T> Future for SizeOf<T> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// The bytes tokio allocates for a task whose future is `F`: the one 128-byte-aligned
/// block `spawn` makes (the task cell: header, scheduler, future, trailer).
fn tokio_task_bytes<F: Send + 'static>() -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _g = rt.enter();
    RECORDED.lock().expect("not poisoned").clear();
    RECORDING.with(|r| r.set(true));
    let h = tokio::spawn(SizeOf::<F>(MaybeUninit::uninit()));
    RECORDING.with(|r| r.set(false));
    rt.block_on(h).expect("the task finishes");
    let cells: Vec<Layout> = RECORDED
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|l| l.align() >= 128)
        .copied()
        .collect();
    assert_eq!(cells.len(), 1, "one task cell per spawn: {cells:?}");
    cells[0].size()
}

/// mimalloc's size class for a block of `n` bytes: whole words up to 64 bytes, then four
/// classes per power of two (80, 96, 112, 128, 160, 192, 224, 256, 320, 384, ...).
fn mi_class(n: usize) -> usize {
    let w = n.div_ceil(8);
    if w <= 8 {
        return w * 8;
    }
    let b = usize::BITS - 1 - (w - 1).leading_zeros();
    let step = 1usize << (b - 2);
    w.div_ceil(step) * step * 8
}

/// Bytes per entry of hashbrown maps holding `entries` entries of `entry` bytes each,
/// spread over `maps` maps (buckets of 8/7 the capacity, rounded to a power of two, one
/// control byte each).
fn map_slot_bytes(entry: usize, entries: usize, maps: usize) -> f64 {
    let per_map = entries.div_ceil(maps);
    let buckets = (per_map * 8 / 7).next_power_of_two();
    (buckets * (entry + 1) * maps) as f64 / entries as f64
}

/// The bench's figure: 100 000 idle servers.
const N: usize = 100_000;
/// The module-side state of `upgrade_srv` (see the bench): not the node's to shrink.
const STATE: usize = 80;
/// The target (issue 16), the state included.
const TARGET: usize = 1024;

#[test]
fn mi_class_matches_mimalloc_bins() {
    let classes: Vec<usize> = [
        8, 60, 65, 96, 97, 144, 160, 161, 176, 208, 224, 300, 344, 384,
    ]
    .iter()
    .map(|&n| mi_class(n))
    .collect();
    assert_eq!(
        classes,
        [8, 64, 80, 96, 112, 160, 160, 192, 192, 224, 224, 320, 384, 384]
    );
}

/// The computed bytes of an idle gen_server stay within the target, with room for what the
/// RSS figure adds; and each part stays in the size class it reached.
#[test]
fn idle_process_record_and_loop_fit_budget() {
    let record = mi_class(2 * size_of::<usize>() + size_of::<Process>());
    let task = tokio_task_bytes::<Task<ServerBody>>();
    let bare_task = tokio_task_bytes::<Task>();
    let cell = mi_class(2 * size_of::<usize>() + size_of::<StateCell>());
    let name = mi_class("upgrade_srv".len());
    // (pid, Arc<Process>) in 64 shards; (pid, Weak<dyn LiveState>) in the version's map.
    let table = map_slot_bytes(16, N, 64);
    let states = map_slot_bytes(24, N, 1);
    let total = (record + task + cell + name + STATE) as f64 + table + states;
    eprintln!(
        "idle gen_server: record {record} + task {task} (a process without an inline body: \
         {bare_task}) + state cell {cell} + module name {name} + table slot {table:.1} + \
         states slot {states:.1} + state {STATE} = {total:.0} B (target {TARGET} B)"
    );
    assert!(record <= 160, "the process record takes {record} B");
    assert!(bare_task <= 256, "a process's task takes {bare_task} B");
    assert!(task <= 384, "a gen_server's task takes {task} B");
    assert!(cell <= 64, "the state cell takes {cell} B");
    // What the bench's RSS figure adds to the computed parts (allocator pages and
    // rounding) was 149-190 B before these changes and 182-212 B after (BENCHMARKS.md).
    assert!(
        total + 212.0 <= TARGET as f64,
        "an idle gen_server takes {total:.0} B"
    );
}

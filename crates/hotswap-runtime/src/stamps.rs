//! Time stamps of a TCP frame's stages through the node (a leaf: `net/` and the mailbox
//! stamp into it), for the bench's breakdown of an
//! echo's round trip (`compare tcp_echo_stages`). Off unless [`start`] was called: each
//! stage then costs one relaxed atomic load.
//!
//! Each stage keeps its own numbered list of stamps; with one connection in ping-pong (one
//! frame in flight), the `i`-th stamp of every stage belongs to the `i`-th frame.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// A stage of a received frame's way to the owner and of its answer's way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The connection's reader read bytes from the socket.
    Read = 0,
    /// The frame was posted to the owner's mailbox (or answered a passive `recv`).
    Post = 1,
    /// The owner took a port message from its mailbox (its `handle_info` starts).
    Taken = 2,
    /// A send is about to write to the socket from the owner's thread.
    Write = 3,
}

/// How many stages there are.
pub const STAGES: usize = 4;

/// Stamps kept per stage; later ones are counted but dropped.
pub const CAPACITY: usize = 1 << 15;

static ON: AtomicBool = AtomicBool::new(false);
static COUNT: [AtomicUsize; STAGES] = [const { AtomicUsize::new(0) }; STAGES];
static STAMPS: [[AtomicU64; CAPACITY]; STAGES] =
    [const { [const { AtomicU64::new(0) }; CAPACITY] }; STAGES];

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds on the stamps' clock (the bench stamps its client's send and receive with
/// it too).
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Forget earlier stamps and start recording.
pub fn start() {
    epoch();
    for c in &COUNT {
        c.store(0, Ordering::Relaxed);
    }
    ON.store(true, Ordering::Release);
}

/// Stop recording; every stage's stamps in order (nanoseconds, see [`now_ns`]).
pub fn stop() -> [Vec<u64>; STAGES] {
    ON.store(false, Ordering::Release);
    std::array::from_fn(|s| {
        let n = COUNT[s].load(Ordering::Acquire).min(CAPACITY);
        STAMPS[s][..n]
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .collect()
    })
}

/// Stamp `stage` now, if recording.
#[inline]
pub(crate) fn record(stage: Stage) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let s = stage as usize;
    let t = now_ns();
    let i = COUNT[s].fetch_add(1, Ordering::AcqRel);
    if i < CAPACITY {
        STAMPS[s][i].store(t, Ordering::Relaxed);
    }
}

//! How the tokio runtime that drives a node's processes is set up (issue 16).
//!
//! Processes are tokio tasks, and a message to an idle process makes its task runnable on
//! the sender's worker. When tokio decides another worker should help (a task waiting in a
//! local queue), it wakes a parked worker with a futex or the I/O driver's eventfd: a
//! system call on the *sender's* critical path, and several microseconds before the woken
//! worker runs, on a virtual machine tens. Erlang's schedulers avoid most of that by
//! spinning briefly before they sleep. [`tune`] does the same with tokio's park hook: a
//! worker that found no work spins for a short while (still counted as awake, so nobody
//! pays a wake-up system call for it) before it really parks. Spinning stops at that bound,
//! so a node at rest parks every worker within [`DEFAULT_SPIN`] and uses no CPU.

use std::time::{Duration, Instant};

/// How long a worker that found no work spins before it parks, unless the environment
/// variable `HOTSWAP_SPIN_US` says otherwise (`0` turns spinning off).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);

/// The spin bound in effect: `HOTSWAP_SPIN_US` (microseconds) if set and valid, else
/// [`DEFAULT_SPIN`].
pub fn spin_bound() -> Duration {
    std::env::var("HOTSWAP_SPIN_US")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(DEFAULT_SPIN, Duration::from_micros)
}

/// Set up a multi-thread runtime builder for a node: workers spin for [`spin_bound`]
/// before parking (see the module documentation). Apply it before `build()`; it replaces
/// any `on_thread_park` callback set earlier.
pub fn tune(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    let spin = spin_bound();
    if !spin.is_zero() {
        builder.on_thread_park(move || spin_for(spin));
    }
    builder
}

/// Busy-wait for `d`, reading the clock only every few dozen pause instructions. Work that
/// arrives from outside the workers (the runtime's global queue: a wake from a host thread)
/// ends the spin at once: while every worker spins, none is parked for tokio to wake.
fn spin_for(d: Duration) {
    let rt = tokio::runtime::Handle::try_current().ok();
    let metrics = rt.as_ref().map(|h| h.metrics());
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            std::hint::spin_loop();
        }
        if start.elapsed() >= d || metrics.as_ref().is_some_and(|m| m.global_queue_depth() > 0) {
            return;
        }
    }
}

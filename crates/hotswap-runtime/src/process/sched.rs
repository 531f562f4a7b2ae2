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
//!
//! A worker spins only while another worker is still running tasks: that is when a wake-up
//! for it is likely (the busy worker's queue overflowing its LIFO slot) and when spinning
//! saves the system call. When every worker has run out of work, none spins: they park at
//! once, and the first to park takes tokio's I/O driver and sleeps in `epoll_wait`. A
//! spinning worker does not poll the driver, so with every worker spinning a socket's data
//! would wait for the spin to end (measured: a TCP echo's round trip went from ~20 µs to
//! ~117 µs, plain tokio on the same runtime included).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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

/// Set up a multi-thread runtime builder for a node: a worker that runs out of work spins
/// for up to [`spin_bound`] before parking, while another worker is still busy (see the
/// module documentation). Apply it before `build()`; it replaces any `on_thread_park` and
/// `on_thread_unpark` callbacks set earlier.
pub fn tune(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    let spin = spin_bound();
    if !spin.is_zero() {
        // Workers between their park hook and their unpark hook: spinning or parked.
        let idle = Arc::new(AtomicUsize::new(0));
        let unparked = idle.clone();
        builder
            .on_thread_park(move || {
                idle.fetch_add(1, Ordering::AcqRel);
                spin_while_others_work(spin, &idle);
            })
            .on_thread_unpark(move || {
                unparked.fetch_sub(1, Ordering::AcqRel);
            });
    }
    builder
}

/// Busy-wait for up to `d`, reading the clock only every few dozen pause instructions, and
/// only while some other worker is running tasks (`idle` counts this worker too). Work that
/// arrives from outside the workers (the runtime's global queue: a wake from a host thread)
/// ends the spin at once, and so does every other worker running out of work: then this
/// one parks, and a parked worker polls the I/O driver.
fn spin_while_others_work(d: Duration, idle: &AtomicUsize) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let metrics = rt.metrics();
    let workers = metrics.num_workers();
    let start = Instant::now();
    while idle.load(Ordering::Acquire) < workers {
        for _ in 0..32 {
            std::hint::spin_loop();
        }
        if start.elapsed() >= d || metrics.global_queue_depth() > 0 {
            return;
        }
    }
}

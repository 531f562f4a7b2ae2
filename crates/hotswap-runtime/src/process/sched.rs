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
//! saves the system call. A spinning worker does not poll tokio's I/O driver, so a socket's
//! data would wait for the spin to end (measured: a TCP echo's round trip went from ~20 µs
//! to ~117 µs when every worker spun blindly).
//!
//! **Sockets (issue 13).** The node's ports register their sockets with a watch of their
//! own (`watch_io`: an epoll set, edge-triggered, that nobody sleeps on). A spinning
//! worker looks at it between its pauses and stops spinning the moment a socket becomes
//! ready, so it parks, takes the I/O driver and finds the event already there. And when
//! every worker has run out of work right after the ports saw traffic (within
//! [`IO_RECENT`]), one of them keeps spinning on that watch for up to the spin bound
//! instead of sleeping in `epoll_wait`: the next request of a ping-pong peer then finds a
//! worker awake, as Erlang's schedulers are when they busy-wait, instead of waking a
//! sleeping thread (and, on a virtual machine, a halted virtual CPU). The other workers
//! wait in a sleep (not a spin) until that worker has parked, so that it, not they, takes
//! the I/O driver. With no traffic for [`IO_RECENT`], nobody spins for I/O: a node at rest
//! parks every worker at once.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::node::monotonic_ns;

/// How long a worker that found no work spins before it parks, unless the environment
/// variable `HOTSWAP_SPIN_US` says otherwise (`0` turns spinning off).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);

/// How recent the ports' last traffic must be for a worker to spin on the sockets when
/// every worker has run out of work. Measured on the coarse clock (1–4 ms ticks).
pub const IO_RECENT: Duration = Duration::from_millis(10);

/// The spin bound in effect: `HOTSWAP_SPIN_US` (microseconds) if set and valid, else
/// [`DEFAULT_SPIN`].
pub fn spin_bound() -> Duration {
    std::env::var("HOTSWAP_SPIN_US")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(DEFAULT_SPIN, Duration::from_micros)
}

/// Whether a spinning worker watches the ports' sockets: yes unless the environment
/// variable `HOTSWAP_IO_SPIN` is `0` (for measuring with and without it).
/// Read once per OS process.
pub fn io_spin() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("HOTSWAP_IO_SPIN").map_or(true, |v| v.trim() != "0"))
}

/// Set up a multi-thread runtime builder for a node: a worker that runs out of work spins
/// for up to [`spin_bound`] before parking, while another worker is still busy or right
/// after socket traffic (see the module documentation). Apply it before `build()`; it
/// replaces any `on_thread_park` and `on_thread_unpark` callbacks set earlier.
pub fn tune(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    let spin = spin_bound();
    if !spin.is_zero() {
        let workers = Arc::new(Workers::default());
        let unparked = workers.clone();
        builder
            .on_thread_park(move || workers.before_park(spin))
            .on_thread_unpark(move || {
                unparked.idle.fetch_sub(1, Ordering::AcqRel);
            });
    }
    builder
}

/// What the park hooks of one runtime's workers share.
#[derive(Default)]
struct Workers {
    /// Workers between their park hook and their unpark hook: spinning or parked.
    idle: AtomicUsize,
    /// A worker is spinning on the sockets with every worker out of work.
    io_spinner: AtomicBool,
    /// The others wait on this until it has parked.
    lock: Mutex<()>,
    spun: Condvar,
}

/// Why a spin ended.
#[derive(PartialEq)]
enum Ended {
    /// The bound passed.
    Bound,
    /// Work arrived from outside the workers (the runtime's global queue).
    Work,
    /// A watched socket became ready.
    Io,
    /// Every worker ran out of work.
    AllIdle,
}

impl Workers {
    /// The park hook: spin while another worker works (see [`Self::spin`]); when every
    /// worker has run out of work right after socket traffic, one of them spins on the
    /// sockets and the others wait for it to park.
    fn before_park(&self, bound: Duration) {
        self.idle.fetch_add(1, Ordering::AcqRel);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let metrics = rt.metrics();
        let workers = metrics.num_workers();
        // None with the spin on sockets off: nothing is ever registered then.
        let watch = IoWatch::get();
        let others_work = || self.idle.load(Ordering::Acquire) < workers;
        if spin(bound, &metrics, watch, others_work) != Ended::AllIdle {
            return;
        }
        let Some(watch) = watch.filter(|_| io_recent()) else {
            return;
        };
        if self
            .io_spinner
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let ended = spin(bound, &metrics, Some(watch), || true);
            IO_SPINS.fetch_add(1, Ordering::Relaxed);
            if ended == Ended::Io {
                IO_SPINS_READY.fetch_add(1, Ordering::Relaxed);
            }
            self.io_spinner.store(false, Ordering::Release);
            // Ready data: park (and take the driver) at once; the others end their wait at
            // their own bound. Otherwise there is no hurry: let them go now.
            if ended != Ended::Io {
                let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.spun.notify_all();
            }
        } else {
            let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let _ = self
                .spun
                .wait_timeout_while(g, bound, |_| self.io_spinner.load(Ordering::Acquire));
        }
    }
}

/// Busy-wait for up to `d` while `go` holds, reading the clock (and the socket watch)
/// only every few dozen pause instructions. Work that arrives from outside the workers
/// (the runtime's global queue: a wake from a host thread) ends the spin at once, and so
/// does a watched socket becoming ready: then this worker parks, and a parked worker
/// polls the I/O driver.
fn spin(
    d: Duration,
    metrics: &tokio::runtime::RuntimeMetrics,
    watch: Option<&IoWatch>,
    go: impl Fn() -> bool,
) -> Ended {
    let start = Instant::now();
    while go() {
        for _ in 0..32 {
            std::hint::spin_loop();
        }
        if start.elapsed() >= d {
            return Ended::Bound;
        }
        if metrics.global_queue_depth() > 0 {
            return Ended::Work;
        }
        if watch.is_some_and(IoWatch::ready) {
            return Ended::Io;
        }
    }
    Ended::AllIdle
}

static IO_SPINS: AtomicU64 = AtomicU64::new(0);
static IO_SPINS_READY: AtomicU64 = AtomicU64::new(0);

/// How often, since this OS process started, a worker spun on the sockets with every
/// worker out of work, and how many of those spins a socket's data ended (the others ran
/// to the bound or met other work).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoSpinStats {
    /// Spins on the sockets.
    pub spins: u64,
    /// Of those, the ones a ready socket ended: a request that found a worker awake.
    pub ended_ready: u64,
}

/// The counters of spins on the sockets (all tuned runtimes of this OS process).
pub fn io_spin_stats() -> IoSpinStats {
    IoSpinStats {
        spins: IO_SPINS.load(Ordering::Relaxed),
        ended_ready: IO_SPINS_READY.load(Ordering::Relaxed),
    }
}

/// The coarse clock's reading (ms) at the ports' last traffic.
static LAST_IO_MS: AtomicU64 = AtomicU64::new(0);

fn coarse_ms() -> u64 {
    monotonic_ns(libc::CLOCK_MONOTONIC_COARSE) / 1_000_000
}

/// Record socket traffic (a read or a write by a port): for [`IO_RECENT`], workers that
/// run out of work spin on the sockets before they sleep. One coarse clock read and a
/// relaxed store.
pub(crate) fn note_io() {
    LAST_IO_MS.store(coarse_ms(), Ordering::Relaxed);
}

fn io_recent() -> bool {
    let last = LAST_IO_MS.load(Ordering::Relaxed);
    last != 0 && coarse_ms().saturating_sub(last) <= IO_RECENT.as_millis() as u64
}

/// The sockets spinning workers watch: an epoll set of the ports' sockets, edge-triggered
/// for input, that nobody ever sleeps on (tokio's driver has its own registration of each
/// socket, which this does not disturb). A socket leaves the set by itself when it is
/// closed (the kernel drops an epoll registration with its last file reference).
struct IoWatch {
    ep: OwnedFd,
}

static WATCH: OnceLock<Option<IoWatch>> = OnceLock::new();

impl IoWatch {
    /// The watch, once a socket has been registered (`None` before: nothing to watch).
    fn get() -> Option<&'static IoWatch> {
        WATCH.get().and_then(Option::as_ref)
    }

    fn create() -> Option<IoWatch> {
        // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a descriptor epoll_create1 just returned, owned by nobody else.
        let ep = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(IoWatch { ep })
    }

    /// Whether a watched socket became readable since the last look (one `epoll_wait`
    /// that does not block).
    fn ready(&self) -> bool {
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: `ev` is a writable array of 4 events; a zero timeout never blocks.
        let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), ev.as_mut_ptr(), 4, 0) };
        n > 0
    }
}

/// Add a port's socket to the watch spinning workers look at (see the module
/// documentation). Failures are ignored: a socket missing from the watch only means a
/// worker sleeps where it could have spun.
pub(crate) fn watch_io(socket: &impl AsRawFd) {
    let fd = socket.as_raw_fd();
    if !io_spin() {
        return;
    }
    let Some(w) = WATCH.get_or_init(IoWatch::create).as_ref() else {
        return;
    };
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
        u64: fd as u64,
    };
    // SAFETY: both descriptors are open (the caller holds the socket); `ev` is valid.
    unsafe { libc::epoll_ctl(w.ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
}

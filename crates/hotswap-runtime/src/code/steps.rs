//! Where a load spends its time: timestamps between the steps of a load (read, inspect,
//! hash, copy, `dlopen`, heap, `init`, rename, the compatibility check's description:
//! `description record` when a valid record replaced `describe`, else `read record` then
//! `describe`; then its decode, the comparison, and the report's findings logged), for the
//! benchmarks (`compare module_load load_compat_check` prints their medians).
//!
//! Off by default: a step mark is then one relaxed atomic load. [`record`] turns the
//! recording on for the whole process; [`take`] returns what was recorded since the last
//! call, one entry per load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

static ON: AtomicBool = AtomicBool::new(false);

/// One finished load: `(step, µs)` in order.
type Load = Vec<(&'static str, f64)>;

/// A step's end.
type Mark = (&'static str, Instant);

/// The marks of the load in progress, and the finished loads' steps.
static MARKS: Mutex<(Vec<Mark>, Vec<Load>)> = Mutex::new((Vec::new(), Vec::new()));

/// Turn the recording of load steps on or off (process-wide).
pub fn record(on: bool) {
    ON.store(on, Ordering::Relaxed);
    let mut m = MARKS.lock();
    m.0.clear();
    m.1.clear();
}

/// The steps of every load finished since the last call: per load, `(step, µs)` in the
/// order they ran (the time from the previous mark to the end of the step).
pub fn take() -> Vec<Vec<(&'static str, f64)>> {
    std::mem::take(&mut MARKS.lock().1)
}

/// A load starts (loads are serialised by the code server's `ops` lock).
pub(crate) fn start() {
    if ON.load(Ordering::Relaxed) {
        let mut m = MARKS.lock();
        m.0.clear();
        m.0.push(("start", Instant::now()));
    }
}

/// The step `name` of the load in progress just ended.
pub(crate) fn mark(name: &'static str) {
    if ON.load(Ordering::Relaxed) {
        MARKS.lock().0.push((name, Instant::now()));
    }
}

/// The load in progress ended: keep its steps.
pub(crate) fn finish() {
    if ON.load(Ordering::Relaxed) {
        let mut m = MARKS.lock();
        let steps: Vec<(&'static str, f64)> =
            m.0.windows(2)
                .map(|w| (w[1].0, (w[1].1 - w[0].1).as_secs_f64() * 1e6))
                .collect();
        m.0.clear();
        if !steps.is_empty() {
            m.1.push(steps);
        }
    }
}

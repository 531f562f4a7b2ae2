// Shared body of the seed002 Counter versions (included by modules/seed002_counter_v*,
// which define `INCREMENT` and `VSN`). From seed 002: `count(n)` sleeps, reports, and calls
// itself with n + INCREMENT, a local call, so a running counter keeps its version's
// increment after a new version is loaded, while a counter spawned afterwards uses the new one.

use hotswap::{Ctx, Pid};
use std::time::Duration;

/// Argument of `count`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Arg {
    /// Where to report each count.
    pub reporter: Pid,
    /// Milliseconds between ticks.
    pub period_ms: u64,
}

/// One report.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Count {
    /// The counting process.
    pub pid: Pid,
    /// The count after this tick.
    pub n: u64,
    /// The version that counted.
    pub version: String,
}

async fn count(ctx: Ctx, arg: Arg) {
    let mut n = 0;
    loop {
        // `:timer.sleep(period)`, unless told to stop.
        if ctx.receive_timeout::<String>(Duration::from_millis(arg.period_ms)).await.is_some() {
            return;
        }
        n += INCREMENT;
        ctx.send(arg.reporter, &Count { pid: ctx.self_pid(), n, version: VSN.to_string() });
    }
}

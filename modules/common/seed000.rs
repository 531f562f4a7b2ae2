// Shared body of the seed000 module versions (included by modules/seed000_v*/src/lib.rs,
// which define `VSN`). From seed 000: a registered process in a receive loop that only
// makes local calls never upgrades and dies on the second load; one that makes the
// fully-qualified call `m:loop()` on `code_switch` moves to the current version.

use hotswap::{Ctx, Outcome, Pid};
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-version static: every loaded instance of the library has its own.
static PINGS: AtomicU64 = AtomicU64::new(0);

/// Requests understood by both loops.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub enum Req {
    /// Reply with a [`Pong`] to this pid.
    Ping(Pid),
    /// Make the fully-qualified call to `seed000:loop` (only `loop` does).
    CodeSwitch,
    /// Exit normally.
    Stop,
}

/// The reply to a ping: which version answered, and its static counter.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Pong {
    /// The module version that handled the ping.
    pub version: String,
    /// The version's static ping counter after this ping.
    pub pings: u64,
    /// The answering process.
    pub pid: Pid,
}

fn pong(ctx: &Ctx, to: Pid) {
    let pings = PINGS.fetch_add(1, Ordering::Relaxed) + 1;
    ctx.send(to, &Pong { version: VSN.to_string(), pings, pid: ctx.self_pid() });
}

/// `do_loop()`: receive, handle, recurse locally. Never upgrades.
async fn do_loop(ctx: Ctx, _: ()) -> Outcome {
    loop {
        match ctx.receive::<Req>().await {
            Req::Ping(from) => pong(&ctx, from),
            Req::CodeSwitch => {} // a local loop ignores it: it has no fully-qualified call
            Req::Stop => return Outcome::Value(Vec::new()),
        }
    }
}

/// `loop()`: like `do_loop`, but `code_switch` makes the fully-qualified call `seed000:loop()`.
async fn run_loop(ctx: Ctx, _: ()) -> Outcome {
    loop {
        match ctx.receive::<Req>().await {
            Req::Ping(from) => pong(&ctx, from),
            Req::CodeSwitch => return ctx.continue_with("seed000", "loop", &()),
            Req::Stop => return Outcome::Value(Vec::new()),
        }
    }
}

/// A plain function for `Ctx::apply`: the version and its ping count, without a process.
async fn version(_ctx: Ctx, _: ()) -> hotswap::Value<(String, u64)> {
    hotswap::Value((VSN.to_string(), PINGS.load(Ordering::Relaxed)))
}

/// A synchronous function, for fully-qualified calls with `Ctx::function`: which version
/// answered, and `x + 1`.
fn whoami(_ctx: Ctx, x: u64) -> (String, u64) {
    (VSN.to_string(), x + 1)
}

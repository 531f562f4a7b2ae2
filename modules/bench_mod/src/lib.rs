//! Benchmark module `bench`, version 1: the workloads of `hotswap-bench`'s `compare` binary
//! and of `hotswap-runtime`'s criterion benches. Every export is as small as the Erlang
//! counterpart in `bench/erlang/hs_bench_help.erl` / `hs_bench_fq.erl`.

use std::hint::black_box;
use std::time::Instant;

use hotswap::{Ctx, Message, Pid, Value};

/// `fun() -> ok end`: return at once (spawn/exit rate).
async fn exit_now(_ctx: Ctx, _: ()) {}

/// `receive _ -> ok end`: park until any message (or signal) arrives (idle memory, purge).
async fn idle(ctx: Ctx, _: ()) {
    let _ = ctx.recv().await;
}

/// Take `n` user messages as raw bytes, then send the string `"done"` to `reporter`.
async fn sink(ctx: Ctx, (reporter, n): (Pid, u64)) {
    for _ in 0..n {
        let _ = ctx.receive_bytes().await;
    }
    ctx.send(reporter, &"done");
}

/// Send `n` raw 8-byte messages (the counter, little-endian) to `to` as fast as possible.
async fn source(ctx: Ctx, (to, n): (Pid, u64)) {
    for i in 0..n {
        ctx.send_bytes(to, &i.to_le_bytes());
    }
}

/// Echo every user message's bytes back to its sender; exit on any other message.
async fn echo(ctx: Ctx, _: ()) {
    loop {
        match ctx.recv().await {
            Message::User { from, data } => ctx.send_bytes(from, &data),
            _ => return,
        }
    }
}

/// `f(X) -> X + 1.`: the target of the local and the fully-qualified calls.
async fn add_one(_ctx: Ctx, x: u64) -> Value<u64> {
    Value(x + 1)
}

/// A synchronous function for fully-qualified calls (`Ctx::function`).
fn inc(_ctx: Ctx, x: u64) -> u64 {
    x + 1
}

/// What `fq_bench` reports: nanoseconds per call.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct FqTimes {
    /// A call of `bench:inc` that stays in this version: its entry point called directly.
    pub local_ns: f64,
    /// The fully-qualified call `bench:inc(X)` through a `Function` handle (the export
    /// table: a generation check, re-resolving after a code change).
    pub remote_ns: f64,
    /// For reference: `inc` called as plain Rust, no module boundary (no encoding).
    pub native_ns: f64,
}

/// Time `n` calls each way and send [`FqTimes`] (or an error string) to `reporter`. The
/// mirror of `hs_bench_fq.erl`: a local and a remote call of the same function.
async fn fq_bench(ctx: Ctx, (reporter, n): (Pid, u64)) {
    let arg = hotswap::codec::encode(&41u64);
    let mut out: Vec<u8> = Vec::with_capacity(16);
    let mut f = ctx.function::<u64, u64>("bench", "inc");
    let call = match f.__resolved() {
        Ok(c) => c,
        Err(e) => {
            ctx.send(reporter, &format!("resolve failed: {e}"));
            return;
        }
    };
    let t = Instant::now();
    for _ in 0..n {
        out.clear();
        // The entry point resolved in this poll, called directly: a call that stays in
        // this version, with the same status check as a fully-qualified one.
        // SAFETY: `call` is this version's own `inc`, resolved in this poll, called from
        // this version's code (a local call, counted by this poll).
        if let Err(e) = unsafe { f.__invoke(call, black_box(&arg), &mut out) } {
            ctx.send(reporter, &format!("call failed: {e}"));
            return;
        }
    }
    let local_ns = t.elapsed().as_nanos() as f64 / n.max(1) as f64;
    let t = Instant::now();
    for _ in 0..n {
        out.clear();
        if let Err(e) = f.call_bytes(black_box(&arg), &mut out) {
            ctx.send(reporter, &format!("call failed: {e}"));
            return;
        }
    }
    let remote_ns = t.elapsed().as_nanos() as f64 / n.max(1) as f64;
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..n {
        acc = black_box(inc(ctx, black_box(acc)));
    }
    let native_ns = t.elapsed().as_nanos() as f64 / n.max(1) as f64;
    assert_eq!(acc, n);
    ctx.send(
        reporter,
        &FqTimes {
            local_ns,
            remote_ns,
            native_ns,
        },
    );
}

hotswap::module! {
    name: "bench",
    version: "1",
    exports: [exit_now, idle, sink, source, echo, add_one, fq_bench],
    functions: [inc],
}

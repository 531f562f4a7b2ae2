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

/// What `fq_bench` reports: nanoseconds per call.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct FqTimes {
    /// A local call of `add_one` (a direct `async fn` call awaited in place).
    pub local_ns: f64,
    /// A fully-qualified call `bench:add_one(X)` through `Ctx::apply`.
    pub remote_ns: f64,
}

/// Time `n_local` local calls and `n_remote` fully-qualified calls of `add_one`, then send
/// [`FqTimes`] (or an error string) to `reporter`. The mirror of `hs_bench_fq.erl`.
async fn fq_bench(ctx: Ctx, (reporter, n_local, n_remote): (Pid, u64, u64)) {
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..n_local {
        acc = black_box(add_one(ctx, black_box(acc)).await.0);
    }
    let local_ns = t.elapsed().as_nanos() as f64 / n_local.max(1) as f64;
    assert_eq!(acc, n_local);
    let t = Instant::now();
    let mut acc = 0u64;
    for _ in 0..n_remote {
        match ctx.apply::<u64, u64>("bench", "add_one", &acc).await {
            Ok(v) => acc = v,
            Err(e) => {
                ctx.send(reporter, &format!("apply failed: {e}"));
                return;
            }
        }
    }
    let remote_ns = t.elapsed().as_nanos() as f64 / n_remote.max(1) as f64;
    assert_eq!(acc, n_remote);
    ctx.send(
        reporter,
        &FqTimes {
            local_ns,
            remote_ns,
        },
    );
}

hotswap::module! {
    name: "bench",
    version: "1",
    exports: [exit_now, idle, sink, source, echo, add_one, fq_bench],
}

//! Benchmark module `alloc_srv`: a gen_server whose every call allocates, as ordinary
//! service code does (a formatted `String` and a `Vec`), to measure what the version's own
//! heap costs module code (`compare`'s `module_heap_alloc_calls`).

use hotswap::gen_server::{CallResult, Caller, GenServer, Init};
use hotswap::Ctx;
use serde::{Deserialize, Serialize};

/// The state: calls handled.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct Allocs {
    /// Calls handled.
    pub calls: u64,
}

impl GenServer for Allocs {
    type Arg = ();
    type Call = u64;
    type Reply = u64;
    type Cast = ();
    type Info = ();

    async fn init(_ctx: Ctx, _: ()) -> Init<Self> {
        Init::Ok(Allocs::default())
    }

    /// Build a `String` and a `Vec` from the request, reply with a number made of both.
    async fn handle_call(&mut self, _ctx: Ctx, n: u64, _from: Caller) -> CallResult<u64> {
        self.calls += 1;
        let text = format!("request {n}, call number {}", self.calls);
        let parts: Vec<u64> = (0..16).map(|i| n.wrapping_mul(i) ^ self.calls).collect();
        CallResult::Reply(text.len() as u64 + parts.iter().fold(0, |a, b| a ^ b))
    }

    async fn handle_cast(&mut self, _ctx: Ctx, _: ()) -> hotswap::gen_server::CastResult {
        hotswap::gen_server::CastResult::NoReply
    }
}

/// The allocations of `n` calls without the calls: build and drop the same `String` and
/// `Vec` `n` times; nanoseconds per iteration.
fn alloc_loop(_ctx: Ctx, n: u64) -> f64 {
    let t = std::time::Instant::now();
    let mut acc = 0u64;
    for i in 0..n {
        let text = format!("request {i}, call number {}", i + 1);
        let parts: Vec<u64> = (0..16).map(|k| i.wrapping_mul(k) ^ acc).collect();
        acc ^= std::hint::black_box(text.len() as u64 + parts.iter().fold(0, |a, b| a ^ b));
    }
    std::hint::black_box(acc);
    t.elapsed().as_nanos() as f64 / n.max(1) as f64
}

hotswap::module! {
    name: "alloc_srv",
    version: "1",
    gen_server: Allocs,
    functions: [alloc_loop],
}

//! `msgrate`: `compare message_throughput`'s hotswap side alone (no Erlang run): a native
//! process sends N 8-byte messages to a fresh `bench:sink` per round, on the 2-worker
//! runtime `compare` uses; prints each round's rate and the median, for quick before/after
//! comparisons of the message path.
//!
//! ```text
//! msgrate LIBRARY N [ROUNDS]
//! ```

use std::time::Duration;

use hotswap_runtime::{Node, NodeConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Only the argument parsing is used here: this runs on `compare`'s 2-worker runtime.
#[allow(dead_code)]
mod counted;
// Only the native sender is used here.
#[allow(dead_code)]
mod throughput;

fn main() {
    let (lib, n, more) = counted::args("msgrate", "LIBRARY N [ROUNDS]");
    let rounds: usize = more.first().and_then(|r| r.parse().ok()).unwrap_or(9);
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    hotswap_runtime::sched::tune(&mut b);
    let rt = b.build().expect("tokio runtime");
    let mut rates = rt.block_on(async move {
        let node = Node::start(NodeConfig::default()).expect("node");
        node.code().load(&lib).await.expect("load the library");
        let mut rates = Vec::new();
        for _ in 0..rounds {
            rates.push(throughput::throughput_round(&node, n, throughput::Sender::Native).await);
        }
        node.stop(Duration::from_secs(10)).await;
        rates
    });
    let list: Vec<String> = rates.iter().map(|r| format!("{:.2}", r / 1e6)).collect();
    // The first two rounds are warm-up, as in `compare`.
    let mut steady = rates.split_off(2.min(rates.len()));
    steady.sort_by(f64::total_cmp);
    let median = steady.get(steady.len() / 2).copied().unwrap_or(0.0);
    println!(
        "msgrate: {n} messages a round, M/s: [{}]; median after warm-up {:.2}",
        list.join(", "),
        median / 1e6
    );
}

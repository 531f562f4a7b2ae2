//! `msgpath`: one native process sending N 8-byte messages to a `bench:sink` module
//! process, for counting instructions per message with callgrind (issue 16's
//! `message_throughput`, see `BENCHMARKS.md`).
//!
//! ```text
//! msgpath LIBRARY N
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p ./target/release/msgpath \
//!     target/release/libbench_mod.so 1200000
//! ```
//!
//! Runs on a 1-worker runtime, like `callpath`. Instructions per message: the difference
//! of two runs with different N, divided by the difference of N.

use std::time::Duration;

use hotswap_runtime::{Node, NodeConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod counted;

fn main() {
    let (lib, n, _) = counted::args("msgpath", "LIBRARY N");
    let rt = counted::one_worker_runtime();
    let done = rt.block_on(async move {
        let node = Node::start(NodeConfig::default()).expect("node");
        node.code().load(&lib).await.expect("load the library");
        let me = node.external();
        let sink = node
            .spawn("bench", "sink", &(me.pid(), n))
            .expect("spawn sink");
        node.spawn_native(move |ctx| async move {
            for i in 0..n {
                ctx.send_bytes(sink, &i.to_le_bytes());
            }
        })
        .expect("spawn_native");
        let done: Option<String> = me.receive(Duration::from_secs(600)).await;
        node.stop(Duration::from_secs(10)).await;
        done
    });
    assert_eq!(done.as_deref(), Some("done"), "the sink did not finish");
    println!("{n} messages");
}

//! `callpath`: one client process making N gen_server calls, for counting instructions per
//! call with callgrind (issue 16's "the call's own cost", see `BENCHMARKS.md`).
//!
//! ```text
//! callpath LIBRARY N [timeout|none]
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p ./target/release/callpath \
//!     target/release/libupgrade_srv_v1.so 11000 timeout
//! ```
//!
//! Runs on a 1-worker runtime without spinning (callgrind serialises threads anyway; a
//! spinning worker would count its spin). The calls are not timed one by one, so the count
//! is the call path alone. Instructions per call: the difference of two runs with
//! different N, divided by the difference of N (set-up and teardown cancel out).

use std::time::Duration;

use hotswap::gen_server::{self as gs, StartOpts};
use hotswap_runtime::{Node, NodeConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod counted;

fn main() {
    let (lib, n, rest) = counted::args("callpath", "LIBRARY N [timeout|none]");
    let timeout = match rest.first().map(String::as_str) {
        None | Some("timeout") => Some(gs::DEFAULT_TIMEOUT),
        Some("none") => None,
        Some(o) => {
            eprintln!("callpath: the variant is timeout or none, not {o:?}");
            std::process::exit(2);
        }
    };
    let rt = counted::one_worker_runtime();
    let last = rt.block_on(async move {
        let node = Node::start(NodeConfig::default()).expect("node");
        node.code().load(&lib).await.expect("load the library");
        let pid = node
            .start_server("upgrade_srv", &(), StartOpts::default())
            .await
            .expect("start upgrade_srv");
        let (tx, rx) = tokio::sync::oneshot::channel();
        node.spawn_native(move |ctx| async move {
            let mut last = 0u64;
            for _ in 0..n {
                last = gs::call_timeout(&ctx, pid, &(), timeout)
                    .await
                    .expect("call");
            }
            let _ = tx.send(last);
        })
        .expect("spawn_native");
        let last = rx.await.expect("the client died");
        node.stop(Duration::from_secs(10)).await;
        last
    });
    assert_eq!(last, n, "every call was answered");
    println!("{n} calls");
}

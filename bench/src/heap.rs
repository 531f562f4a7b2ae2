//! What the per-version heaps cost module code that allocates on every message: calls/s
//! to the `alloc_srv` gen_server (a `String` and a `Vec` built per call) on a node whose
//! versions allocate from their own heaps (the default) and on one whose modules use the
//! system allocator (`NodeConfig::module_heaps = false`), same library, same runtime.

use std::time::{Duration, Instant};

use hotswap::gen_server::{self as gs, StartOpts};
use hotswap_runtime::{Node, NodeConfig};

use super::{fmt_list, median, unload, Libs, Res, WAIT};

const MODULE: &str = "alloc_srv";

/// One client process making `n` calls to a fresh `alloc_srv` on `node`; calls/s.
async fn round(node: &Node, n: u64) -> f64 {
    let pid = node
        .start_server(MODULE, &(), StartOpts::default())
        .await
        .expect("start alloc_srv");
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let t = Instant::now();
        let mut acc = 0u64;
        for i in 0..n {
            let r: u64 = gs::call(&ctx, pid, &i).await.expect("call alloc_srv");
            acc ^= r;
        }
        let _ = tx.send((t.elapsed(), acc));
    })
    .expect("spawn_native");
    let (el, acc) = tokio::time::timeout(WAIT, rx)
        .await
        .expect("the client timed out")
        .expect("the client died");
    std::hint::black_box(acc);
    node.exit(pid, hotswap_runtime::ExitReason::Kill);
    n as f64 / el.as_secs_f64()
}

/// `module_heap_alloc_calls` (with heaps), `module_heap_alloc_calls_system` (without) and
/// `module_heap_alloc_ratio` (the first over the second): 200 000 calls per round, the
/// two nodes alternating, 7 rounds each after a warm-up; medians.
pub(crate) async fn m_alloc_calls(libs: &Libs) -> Vec<Res> {
    const N: u64 = 200_000;
    const ROUNDS: usize = 7;
    let mut nodes = Vec::new();
    for heaps in [true, false] {
        let node = Node::start(NodeConfig {
            module_heaps: heaps,
            ..Default::default()
        })
        .expect("node starts");
        node.code()
            .load(&libs.alloc_srv)
            .await
            .expect("load alloc_srv");
        round(&node, N).await; // warm-up
        nodes.push(node);
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        with.push(round(&nodes[0], N).await);
        without.push(round(&nodes[1], N).await);
    }
    let ratios: Vec<f64> = with.iter().zip(&without).map(|(a, b)| a / b).collect();
    info!(
        "module_heap_alloc_calls rounds (per-version heap): {}",
        fmt_list(&with, "per_s")
    );
    info!(
        "module_heap_alloc_calls_system rounds (system allocator): {}",
        fmt_list(&without, "per_s")
    );
    info!(
        "module_heap_alloc_ratio per pair of rounds: [{}]",
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for node in nodes {
        unload(&node, MODULE).await;
        node.stop(Duration::from_secs(10)).await;
    }
    let (a, b) = (median(&with), median(&without));
    vec![
        Res::new("module_heap_alloc_calls", a, "per_s"),
        Res::new("module_heap_alloc_calls_system", b, "per_s"),
        Res::new("module_heap_alloc_ratio", a / b, "x"),
    ]
}

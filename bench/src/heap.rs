//! What the per-version heaps cost module code that allocates on every message: calls/s
//! to the `alloc_srv` gen_server (a `String` and a `Vec` built per call) on a node whose
//! versions allocate from their own heaps (the default) and on one whose modules use the
//! system allocator (`NodeConfig::module_heaps = false`), same library, same runtime.
//!
//! Wall-clock calls/s swing by ±30 % round to round when other programs load the machine;
//! the CPU time the whole process spends per call (`CLOCK_PROCESS_CPUTIME_ID`) is what the
//! allocator changes, and it is much steadier, so the ratio is taken on it.

use std::time::{Duration, Instant};

use hotswap::gen_server::{self as gs, StartOpts};
use hotswap_runtime::{Node, NodeConfig};

use super::{fmt_list, median, unload, Libs, Res, WAIT};

const MODULE: &str = "alloc_srv";

/// CPU time of this whole process, in seconds.
fn process_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// One client process making `n` calls to a fresh `alloc_srv` on `node`: `(calls per
/// second of wall-clock time, calls per second of the process's CPU time)`.
async fn round(node: &Node, n: u64) -> (f64, f64) {
    let pid = node
        .start_server(MODULE, &(), StartOpts::default())
        .await
        .expect("start alloc_srv");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let cpu = process_cpu();
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
    let cpu = process_cpu() - cpu;
    std::hint::black_box(acc);
    node.exit(pid, hotswap_runtime::ExitReason::Kill);
    (n as f64 / el.as_secs_f64(), n as f64 / cpu)
}

/// `alloc_srv:alloc_loop(n)` on `node` (the allocations of `n` calls, no calls): ns per
/// iteration.
async fn alloc_loop(node: &Node, n: u64) -> f64 {
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let r = ctx
            .function::<u64, f64>(MODULE, "alloc_loop")
            .call(&n)
            .expect("alloc_srv:alloc_loop");
        let _ = tx.send(r);
    })
    .expect("spawn_native");
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("alloc_loop timed out")
        .expect("alloc_loop died")
}

/// `module_heap_alloc_calls` (with heaps), `module_heap_alloc_calls_system` (without),
/// both in wall-clock calls/s, and `module_heap_alloc_ratio`: calls per CPU-second with
/// heaps over the same without, per pair of rounds. 200 000 calls per round, the two nodes
/// alternating, 11 rounds each after a warm-up; medians.
pub(crate) async fn m_alloc_calls(libs: &Libs) -> Vec<Res> {
    const N: u64 = 200_000;
    const ROUNDS: usize = 11;
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
    let (mut cpu_with, mut cpu_without) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (w, c) = round(&nodes[0], N).await;
        with.push(w);
        cpu_with.push(c);
        let (w, c) = round(&nodes[1], N).await;
        without.push(w);
        cpu_without.push(c);
    }
    let ratios: Vec<f64> = cpu_with
        .iter()
        .zip(&cpu_without)
        .map(|(a, b)| a / b)
        .collect();
    info!(
        "module_heap_alloc_calls rounds (per-version heap): {}",
        fmt_list(&with, "per_s")
    );
    info!(
        "module_heap_alloc_calls_system rounds (system allocator): {}",
        fmt_list(&without, "per_s")
    );
    info!(
        "info: calls per CPU-second of the process, per-version heap: {} (median {:.0}); system allocator: {} (median {:.0})",
        fmt_list(&cpu_with, "per_s"),
        median(&cpu_with),
        fmt_list(&cpu_without, "per_s"),
        median(&cpu_without)
    );
    info!(
        "info: wall-clock ratio (median of heap / median of system): {:.3}",
        median(&with) / median(&without)
    );
    info!(
        "module_heap_alloc_ratio (calls per CPU-second, heap / system) per pair of rounds: [{}]",
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The allocations alone, without the calls around them (min of 9 runs each: the
    // machine's noise only ever adds).
    let (mut lw, mut ls) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        lw.push(alloc_loop(&nodes[0], 1_000_000).await);
        ls.push(alloc_loop(&nodes[1], 1_000_000).await);
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    info!(
        "info: the allocations of one call alone (format! String + Vec of 16 u64, built and dropped; alloc_srv:alloc_loop, min of 9 x 1 M): per-version heap {:.1} ns, system allocator {:.1} ns (medians {:.1} / {:.1} ns)",
        min(&lw),
        min(&ls),
        median(&lw),
        median(&ls)
    );
    for node in nodes {
        unload(&node, MODULE).await;
        node.stop(Duration::from_secs(10)).await;
    }
    vec![
        Res::new("module_heap_alloc_calls", median(&with), "per_s"),
        Res::new("module_heap_alloc_calls_system", median(&without), "per_s"),
        Res::new("module_heap_alloc_ratio", median(&ratios), "x"),
    ]
}

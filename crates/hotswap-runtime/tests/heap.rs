//! Memory held by a module's statics is returned at purge (each loaded version allocates
//! from a heap of its own, freed once the version is unmapped).
//!
//! A test binary of its own with a single test: resident memory is a figure of the whole
//! OS process, which tests running beside it would disturb.

#[allow(dead_code)]
#[path = "all/support.rs"]
mod support;

use std::time::Duration;

use hotswap_runtime::{Node, NodeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use support::{module, WAIT};

const MIB: usize = 1 << 20;
const MODULE: &str = "heap_hold";

/// Resident set size of this process, in bytes, after glibc returned the free memory it
/// caches for the node (which would otherwise blur the figure by tens of KiB either way;
/// memory a module still holds is not free, so trimming cannot hide it). Read from
/// `/proc/self/smaps_rollup`, which counts pages in the page tables: `statm`'s counters are
/// per-CPU approximations that lagged by tens of MiB here.
fn rss() -> usize {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").expect("read smaps_rollup");
    let kib: usize = s
        .lines()
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("smaps_rollup has an Rss line");
    kib * 1024
}

/// Call `heap_hold:<function>(arg)` from a native process; its result.
async fn call<A, R>(node: &Node, function: &'static str, arg: A) -> R
where
    A: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let r = ctx
            .function::<A, R>(MODULE, function)
            .call(&arg)
            .map_err(|e| e.to_string());
        let _ = tx.send(r);
    })
    .expect("spawn a native process");
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("the call finished")
        .expect("the caller reported")
        .expect("the call succeeded")
}

/// Load `heap_hold`, run `body` against it, then delete and purge it (verified unmapped).
async fn cycle<F, Fut>(node: &Node, body: F)
where
    F: FnOnce(Node) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    node.code()
        .load(module(MODULE))
        .await
        .expect("load heap_hold");
    body(node.clone()).await;
    node.code().delete(MODULE).await.expect("delete");
    let r = node.code().purge(MODULE).await.expect("purge");
    assert_eq!(r.pinned, None, "the version was unmapped");
}

async fn use_regex(node: Node) {
    assert!(call::<_, bool>(&node, "matches", "joe@example.com".to_string()).await);
    assert!(!call::<_, bool>(&node, "matches", "not an address".to_string()).await);
}

async fn hold(node: Node, mib: u64) {
    let held: u64 = call(&node, "hold", mib).await;
    assert_eq!(held as usize, mib as usize * MIB);
}

/// What one node keeps resident after purges: `(retained after the purge of a 64 MiB
/// static, bytes per load/purge cycle of a static Regex)`.
async fn measure(module_heaps: bool) -> (isize, f64) {
    let node = Node::start(NodeConfig {
        purge_timeout: Duration::from_secs(5),
        module_heaps,
        ..Default::default()
    })
    .expect("node starts");
    // Warm up: the node's and the allocators' own structures reach their steady size.
    for _ in 0..5 {
        cycle(&node, |n| async move {
            use_regex(n.clone()).await;
            hold(n, 1).await;
        })
        .await;
    }

    let base = rss();
    let mut peak = 0;
    cycle(&node, |n| async {
        hold(n, 64).await;
        peak = rss();
    })
    .await;
    let after = rss();
    assert!(
        peak >= base + 60 * MIB,
        "the 64 MiB static is resident while loaded (base {base} B, loaded {peak} B)"
    );
    let retained = after as isize - base as isize;

    for _ in 0..10 {
        cycle(&node, use_regex).await;
    }
    let before = rss();
    const CYCLES: usize = 100;
    for _ in 0..CYCLES {
        cycle(&node, use_regex).await;
    }
    let per_cycle = (rss() as f64 - before as f64) / CYCLES as f64;
    eprintln!(
        "module_heaps={module_heaps}: 64 MiB static: base {} KiB, loaded {} KiB, after purge {} KiB (retained {} KiB); static Regex: {per_cycle:.0} B per load/purge cycle over {CYCLES} cycles",
        base / 1024,
        peak / 1024,
        after / 1024,
        retained / 1024
    );
    node.stop(Duration::from_secs(10)).await;
    (retained, per_cycle)
}

/// A static `Vec` of 64 MiB: resident memory returns to its baseline (within 1 MiB) after
/// the purge; 100 load/purge cycles of a module that compiles a `Regex` into a static grow
/// it by at most 1 KiB per cycle. The same workload with the system allocator (no heaps)
/// keeps the 64 MiB, which shows the measurement sees what the heaps return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_returns_memory_held_by_statics() {
    // The node reads each library file (21 MiB for this debug fixture) into a buffer; glibc
    // raises its mmap threshold after the first such free and then keeps the next ones in
    // its arenas, resident or not depending on the thread: noise of 21 MiB either way. A
    // fixed threshold sends every large node buffer back to the system when freed.
    // SAFETY: mallopt has no preconditions.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10) };
    let (created, destroyed) = hotswap_runtime::module_heap_counts();
    let (retained, per_cycle) = measure(true).await;
    let (created2, destroyed2) = hotswap_runtime::module_heap_counts();
    let (c, d) = (created2 - created, destroyed2 - destroyed);
    // One more heap may have been made ahead for a next load that never came (the node
    // destroys it when it stops).
    assert!(
        c == d && (116..=117).contains(&c),
        "every loaded version had a heap, and every purge freed it: {c} created, {d} destroyed"
    );
    assert!(
        retained <= MIB as isize,
        "after the purge of a 64 MiB static, {} KiB more than before stay resident",
        retained / 1024
    );
    assert!(
        per_cycle <= 1024.0,
        "a static Regex costs {per_cycle:.0} B per load/purge cycle"
    );

    let (retained_sys, per_cycle_sys) = measure(false).await;
    assert_eq!(
        hotswap_runtime::module_heap_counts(),
        (created2, destroyed2),
        "no heaps without module_heaps"
    );
    assert!(
        retained_sys >= 60 * MIB as isize,
        "with the system allocator the static's 64 MiB stay ({} KiB retained)",
        retained_sys / 1024
    );
    eprintln!("system allocator: {per_cycle_sys:.0} B per Regex cycle");
}

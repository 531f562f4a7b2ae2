//! Seed 002: a spawned Counter keeps its version's increment after a new version loads.

use hotswap_runtime::{ExternalProcess, Pid};

use crate::support::{self, module, Count, CounterArg, WAIT};

/// Wait for the next `k` reports from `pid`.
async fn reports(me: &ExternalProcess, pid: Pid, k: usize) -> Vec<Count> {
    let mut out = Vec::new();
    while out.len() < k {
        let m = me
            .recv_match(WAIT, |m| {
                m.decode::<Count>().map(|c| c.pid == pid).unwrap_or(false)
            })
            .await
            .unwrap_or_else(|| panic!("counter {pid} stopped reporting"));
        out.push(m.decode().unwrap());
    }
    out
}

fn steps(r: &[Count]) -> Vec<u64> {
    r.windows(2).map(|w| w[1].n - w[0].n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed002_spawned_counter_keeps_old_increment() {
    let node = support::node();
    let me = node.external();
    node.code()
        .load(module("seed002_counter_v1"))
        .await
        .unwrap();
    let arg = CounterArg {
        reporter: me.pid(),
        period_ms: 5,
    };
    let old = node.spawn("counter", "count", &arg).unwrap();
    let before = reports(&me, old, 3).await;
    assert_eq!(steps(&before), vec![1, 1], "v1 counts +1");

    // `r Counter`: v2 (+2) becomes current; the running counter stays in v1.
    node.code()
        .load(module("seed002_counter_v2"))
        .await
        .unwrap();
    let mut after = reports(&me, old, 4).await;
    // Drop any report already in flight across the load, then check the steps.
    after.retain(|c| c.n > before.last().unwrap().n);
    assert!(
        after.iter().all(|c| c.version == "1"),
        "still v1 code: {after:?}"
    );
    assert!(
        steps(&after).iter().all(|&s| s == 1),
        "still +1 after the load: {after:?}"
    );
    assert!(node.code().check_process_code(old, "counter"));

    // A counter spawned now runs v2 and counts +2, side by side with the old one.
    let new = node.spawn("counter", "count", &arg).unwrap();
    let fresh = reports(&me, new, 3).await;
    assert_eq!(steps(&fresh), vec![2, 2], "v2 counts +2");
    assert!(fresh.iter().all(|c| c.version == "2"));
    assert_eq!(
        steps(&reports(&me, old, 3).await),
        vec![1, 1],
        "old counter still +1"
    );
    let (current, old_procs) = node.code().which_processes("counter");
    assert_eq!(current, vec![new]);
    assert_eq!(old_procs, vec![old]);
}

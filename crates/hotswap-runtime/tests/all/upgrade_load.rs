//! 10 000 gen_servers upgraded ten times while two clients call them: nothing is lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap::gen_server as gs;
use hotswap::sys;
use hotswap_runtime::{Node, Pid};
use serde::{Deserialize, Serialize};

use crate::support::{self, module};

/// Mirror of `modules/common/upgrade_srv.rs` `Counter`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Counter {
    calls: u64,
    migrations: u32,
    vsn: String,
}

const SERVERS: usize = 10_000;
const WINDOWS: u32 = 10;
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `f` in a native process; its result.
async fn in_proc<T: Send + 'static, F, Fut>(node: &Node, f: F) -> T
where
    F: FnOnce(hotswap::Ctx) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let _ = tx.send(f(ctx).await);
    })
    .unwrap();
    rx.await.expect("helper process finished")
}

/// One client: calls random servers until `stop`; per-server call counts and the
/// latencies of the calls that overlapped an upgrade window.
struct ClientResult {
    counts: Vec<u64>,
    window_latencies_ns: Vec<u64>,
    failures: Vec<String>,
}

fn client(
    node: &Node,
    pids: Arc<Vec<Pid>>,
    seed: u64,
    window: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    done_calls: Arc<AtomicU64>,
) -> tokio::sync::oneshot::Receiver<ClientResult> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let mut r = ClientResult {
            counts: vec![0; pids.len()],
            window_latencies_ns: Vec::new(),
            failures: Vec::new(),
        };
        let mut x = seed;
        while !stop.load(Ordering::Relaxed) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % pids.len() as u64) as usize;
            let in_window = window.load(Ordering::Relaxed);
            let t = Instant::now();
            match gs::call_timeout::<_, u64>(&ctx, pids[i], &(), Some(CALL_TIMEOUT)).await {
                Ok(_) => r.counts[i] += 1,
                Err(e) => r.failures.push(format!("call to {}: {e}", pids[i])),
            }
            if in_window || window.load(Ordering::Relaxed) {
                r.window_latencies_ns.push(t.elapsed().as_nanos() as u64);
            }
            done_calls.fetch_add(1, Ordering::Relaxed);
        }
        let _ = tx.send(r);
    })
    .unwrap();
    rx
}

async fn until_more_calls(done: &AtomicU64, n: u64) {
    let start = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < start + n {
        tokio::task::yield_now().await;
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_load_loses_nothing() {
    let node = support::node();
    let libs = [module("upgrade_srv_v1"), module("upgrade_srv_v2")];
    node.code().load(&libs[0]).await.unwrap();
    let pids: Arc<Vec<Pid>> = Arc::new(
        in_proc(&node, |ctx| async move {
            let mut v = Vec::with_capacity(SERVERS);
            for _ in 0..SERVERS {
                let opts = hotswap::gen_server::StartOpts::default();
                v.push(gs::start(&ctx, "upgrade_srv", &(), opts).await.unwrap());
            }
            v
        })
        .await,
    );
    let window = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            client(
                &node,
                pids.clone(),
                0x9E37_79B9_7F4A_7C15 ^ (c + 1),
                window.clone(),
                stop.clone(),
                done.clone(),
            )
        })
        .collect();
    until_more_calls(&done, 2_000).await;

    let mut window_ms = Vec::new();
    for w in 0..WINDOWS {
        let (old_vsn, new_lib) = if w % 2 == 0 {
            ("1", &libs[1])
        } else {
            ("2", &libs[0])
        };
        let t = Instant::now();
        window.store(true, Ordering::Relaxed);
        let p = pids.clone();
        let errs = in_proc(&node, move |ctx| async move {
            let mut errs = Vec::new();
            for pid in p.iter() {
                if let Err(e) = sys::suspend(&ctx, *pid, sys::DEFAULT_TIMEOUT).await {
                    errs.push(e.to_string());
                }
            }
            errs
        })
        .await;
        assert!(errs.is_empty(), "suspend: {errs:?}");
        if w > 0 {
            // The previous window's old version: nothing runs it (every state moved).
            let r = node.code().purge("upgrade_srv").await.unwrap();
            assert!(r.killed.is_empty(), "{r:?}");
        }
        node.code().load(new_lib).await.unwrap();
        let p = pids.clone();
        let errs = in_proc(&node, move |ctx| async move {
            let mut errs = Vec::new();
            for pid in p.iter() {
                if let Err(e) = sys::change_code(
                    &ctx,
                    *pid,
                    "upgrade_srv",
                    old_vsn,
                    None,
                    sys::DEFAULT_TIMEOUT,
                )
                .await
                {
                    errs.push(e.to_string());
                }
            }
            for pid in p.iter() {
                if let Err(e) = sys::resume(&ctx, *pid, sys::DEFAULT_TIMEOUT).await {
                    errs.push(e.to_string());
                }
            }
            errs
        })
        .await;
        assert!(errs.is_empty(), "change_code/resume: {errs:?}");
        window.store(false, Ordering::Relaxed);
        window_ms.push(t.elapsed().as_secs_f64() * 1e3);
        until_more_calls(&done, 1_000).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }
    let failures: Vec<_> = results.iter().flat_map(|r| r.failures.iter()).collect();
    assert!(failures.is_empty(), "every call completes: {failures:?}");

    let p = pids.clone();
    let states: Vec<Counter> = in_proc(&node, move |ctx| async move {
        let mut v = Vec::with_capacity(p.len());
        for pid in p.iter() {
            v.push(
                sys::get_state(&ctx, *pid, sys::DEFAULT_TIMEOUT)
                    .await
                    .unwrap(),
            );
        }
        v
    })
    .await;
    let last_vsn = if WINDOWS % 2 == 1 { "2" } else { "1" };
    let mut total = 0;
    for (i, st) in states.iter().enumerate() {
        let made: u64 = results.iter().map(|r| r.counts[i]).sum();
        total += made;
        assert_eq!(
            st.calls, made,
            "server {i}: its counter equals the calls made"
        );
        assert_eq!(
            st.migrations, WINDOWS,
            "server {i}: migrated in every window"
        );
        assert_eq!(st.vsn, last_vsn);
    }
    let mut lat: Vec<u64> = results
        .iter()
        .flat_map(|r| r.window_latencies_ns.iter().copied())
        .collect();
    let (med, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
    window_ms.sort_by(f64::total_cmp);
    eprintln!(
        "upgrade_under_load: {SERVERS} servers, {WINDOWS} windows (median {:.1} ms), {total} calls; \
         client latency during windows: median {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} calls) \
         [Erlang max 68-80 ms; this is a {} build]",
        window_ms[window_ms.len() / 2],
        med as f64 / 1e6,
        p99 as f64 / 1e6,
        max as f64 / 1e6,
        lat.len(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
    );
}

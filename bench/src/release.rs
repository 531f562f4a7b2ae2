//! Issue 11's release measures: one `upgrade` of a node from release 1.0.0 to 2.0.0 (three
//! gen_server modules, each changed, the N servers spread evenly over them), through
//! [`hotswap_runtime::release::Releases::upgrade`], the same call `hotswap upgrade` makes.
//!
//! - `release_upgrade_{1000,10000,100000}`: the upgrade's wall time per server (check,
//!   suspend, code_change, commit, resume, finish), every state verified afterwards.
//! - `release_upgrade_client_latency{,_p99,_max}`: two clients calling the servers of the
//!   10 000 upgrade throughout; the calls that overlapped the upgrade.
//! - `release_rollback_10000`: the upgrade to a release whose `code_change` fails at the
//!   last server; the time until the failed upgrade returned, that is until every server
//!   runs the old version again with its old state (verified afterwards).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hotswap::gen_server::{self as gs, StartOpts};
use hotswap_runtime::release::{Release, ReleaseDir, ReleaseError, UpgradeOptions};
use hotswap_runtime::{Node, NodeConfig, Pid};

use super::{fmt_list, median, Libs, Res, WAIT};

/// Mirror of `modules/common/rel_srv.rs` `Req` (the calls the clients make).
#[derive(serde::Serialize, serde::Deserialize)]
enum Req {
    Get,
    Bump,
}

/// Mirror of `modules/common/rel_srv.rs` `Rep`.
#[derive(serde::Serialize, serde::Deserialize)]
enum Rep {
    State(u64, u64),
    Count(u64),
}

/// The three modules, in manifest order (rel_srv last: its last server is the last one
/// the switch converts).
const MODULES: [&str; 3] = ["upgrade_srv", "rel_aux", "rel_srv"];

fn write_release(root: &Path, vsn: &str, module_vsn: &str, libs: &[&Path; 3], extra: &str) {
    let mut text = format!(
        "[release]\nname = \"bench\"\nversion = \"{vsn}\"\n\n[node]\nlog_level = \"warn\"\n\n"
    );
    for (m, lib) in MODULES.iter().zip(libs) {
        let file = format!("lib/{}", lib.file_name().unwrap().to_string_lossy());
        let dst = root.join(&file);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        if !dst.exists() {
            std::fs::copy(lib, &dst).expect("copy a module library");
        }
        text.push_str(&format!(
            "[[module]]\nname = \"{m}\"\nversion = \"{module_vsn}\"\nfile = \"{file}\"\n\n"
        ));
    }
    text.push_str(extra);
    let d = root.join("releases").join(vsn);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("release.toml"), text).unwrap();
}

/// `n` servers, a third of each module (rel_aux and rel_srv get ids 1.., in start order).
async fn start_servers(node: &Node, n: usize) -> Vec<(usize, Pid)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let mut v = Vec::with_capacity(n);
        for (mi, m) in MODULES.iter().enumerate() {
            let k = n / 3 + usize::from(mi < n % 3);
            for id in 1..=k as u64 {
                let p = if *m == "upgrade_srv" {
                    gs::start(&ctx, m, &(), StartOpts::default()).await
                } else {
                    gs::start(&ctx, m, &id, StartOpts::default()).await
                };
                v.push((mi, p.expect("server starts")));
            }
        }
        let _ = tx.send(v);
    })
    .expect("spawn_native");
    tokio::time::timeout(WAIT * 5, rx)
        .await
        .expect("starting the servers timed out")
        .expect("the starter died")
}

/// What one round measured.
struct Round {
    wall_ms: f64,
    pause_ms: f64,
    /// Durations (ns) of the client calls that overlapped the upgrade.
    latencies: Vec<u64>,
}

/// Two clients calling the rel_aux / rel_srv servers until `stop`; `(start, end)` of every
/// call in ns since `origin`.
fn clients(
    node: &Node,
    pids: Arc<Vec<Pid>>,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::sync::oneshot::Receiver<Vec<(u64, u64)>>> {
    (0..2u64)
        .map(|c| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (pids, stop) = (pids.clone(), stop.clone());
            node.spawn_native(move |ctx| async move {
                let mut log = Vec::new();
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ c;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let p = pids[(x % pids.len() as u64) as usize];
                    let t0 = origin.elapsed().as_nanos() as u64;
                    let r: Result<Rep, _> = gs::call_timeout(&ctx, p, &Req::Bump, Some(WAIT)).await;
                    assert!(matches!(r, Ok(Rep::Count(_))), "a client call failed");
                    log.push((t0, origin.elapsed().as_nanos() as u64));
                }
                let _ = tx.send(log);
            })
            .expect("spawn_native");
            rx
        })
        .collect()
}

/// One upgrade (or failing upgrade, `fail`) of `n` servers; `by_message`: every server
/// suspended by a sys request, as before idle servers were held in place (the A/B of the
/// client-latency measure).
async fn round(libs: &Libs, n: usize, fail: bool, with_clients: bool, by_message: bool) -> Round {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let root = std::env::temp_dir().join(format!(
        "hotswap-bench-release-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&root);
    let [s1, s2, a1, a2] = &libs.rel;
    write_release(&root, "1.0.0", "1", &[&libs.upsrv1, a1, s1], "");
    write_release(&root, "2.0.0", "2", &[&libs.upsrv2, a2, s2], "");
    let last_id = n / 3;
    write_release(
        &root,
        "3.0.0",
        "2",
        &[&libs.upsrv2, a2, s2],
        &format!("[upgrade.rel_srv]\nextra = {{ fail_id = {last_id}, fail_on = 2 }}\n"),
    );
    let node = Node::start(NodeConfig::default()).expect("node starts");
    let dir = ReleaseDir::new(&root);
    node.releases()
        .boot(&Release::load(&dir, "1.0.0").expect("manifest"))
        .await
        .expect("boot 1.0.0");
    let servers = start_servers(&node, n).await;
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let called: Vec<Pid> = servers
        .iter()
        .filter(|(m, _)| *m != 0)
        .map(|(_, p)| *p)
        .collect();
    let rxs = if with_clients {
        let c = clients(&node, Arc::new(called), origin, stop.clone());
        // Let the clients get going before the upgrade starts.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        c
    } else {
        Vec::new()
    };
    let target = if fail { "3.0.0" } else { "2.0.0" };
    let t0 = origin.elapsed().as_nanos() as u64;
    let t = Instant::now();
    let r = node
        .releases()
        .upgrade(
            target,
            UpgradeOptions {
                suspend_by_message: by_message,
                ..UpgradeOptions::default()
            },
        )
        .await;
    let wall_ms = t.elapsed().as_secs_f64() * 1e3;
    let t1 = origin.elapsed().as_nanos() as u64;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for rx in rxs {
        for (a, b) in rx.await.expect("client finished") {
            if b >= t0 && a <= t1 {
                latencies.push(b - a);
            }
        }
    }
    let want = if fail { "1" } else { "2" };
    let pause_ms = match (r, fail) {
        (Ok(rep), false) => {
            assert_eq!(rep.servers_migrated, n, "every server migrated");
            let phases: Vec<String> = rep
                .phases
                .iter()
                .map(|(p, ms)| format!("{p} {ms:.1}"))
                .collect();
            info!("  upgrade of {n}: phases (ms): {}", phases.join(", "));
            rep.pause_ms
        }
        (Err(ReleaseError::RolledBack { phase, .. }), true) => {
            assert_eq!(phase, "code_change");
            f64::NAN
        }
        (r, _) => panic!(
            "unexpected upgrade result: {:?}",
            r.map(|x| x.servers_migrated)
        ),
    };
    // Every state is of the expected version (untimed).
    let bad = servers
        .iter()
        .filter(|(_, p)| {
            node.process_info(*p)
                .and_then(|i| i.gen_server)
                .is_none_or(|(_, v)| v != want)
        })
        .count();
    assert_eq!(bad, 0, "{bad} of {n} servers not on version {want}");
    if fail {
        // The old state is back: a call still sees version 1's shape.
        let (_, p) = servers.last().expect("servers");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let p = *p;
        node.spawn_native(move |ctx| async move {
            let r: Result<Rep, _> = gs::call_timeout(&ctx, p, &Req::Get, Some(WAIT)).await;
            let _ = tx.send(matches!(r, Ok(Rep::State(id, _)) if id == last_id as u64));
        })
        .unwrap();
        assert!(
            rx.await.unwrap(),
            "the last server answers with its old state"
        );
    }
    node.stop(WAIT).await;
    let _ = std::fs::remove_dir_all(&root);
    Round {
        wall_ms,
        pause_ms,
        latencies,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let k = ((p * n as f64).ceil() as usize).clamp(1, n);
    sorted[k - 1] as f64
}

/// The release measures that `want` selects.
pub(crate) async fn m_release(libs: &Libs, want: &(dyn Fn(&str) -> bool + Sync)) -> Vec<Res> {
    let mut out = Vec::new();
    round(libs, 1000, false, false, false).await; // warm-up
    for (n, rounds, name) in [
        (1_000, 5, "release_upgrade_1000"),
        (10_000, 3, "release_upgrade_10000"),
        (100_000, 2, "release_upgrade_100000"),
    ] {
        if !want(name) {
            continue;
        }
        let mut per = Vec::new();
        let mut pauses = Vec::new();
        for _ in 0..rounds {
            let r = round(libs, n, false, false, false).await;
            per.push(r.wall_ms * 1e3 / n as f64);
            pauses.push(r.pause_ms);
        }
        info!(
            "{name} rounds (us/server): {}",
            fmt_list(&per, "us_per_process")
        );
        info!(
            "info: {name}: pause (first suspend to last resume) median {:.1} ms {}",
            median(&pauses),
            fmt_list(&pauses, "ms")
        );
        out.push(Res::new(name, median(&per), "us_per_process"));
    }
    let lat = [
        "release_upgrade_client_latency",
        "release_upgrade_client_latency_p99",
        "release_upgrade_client_latency_max",
    ];
    if lat.iter().any(|m| want(m)) {
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        let mut max = Vec::new();
        // The same rounds with every server suspended by a sys request (how the switch
        // suspended them before idle servers were held in place), interleaved with the
        // headline ones so that both see the same load.
        let mut max_msg = Vec::new();
        let mut pause = [Vec::new(), Vec::new()];
        for _ in 0..5 {
            for by_message in [false, true] {
                let mut r = round(libs, 10_000, false, true, by_message).await;
                r.latencies.sort_unstable();
                info!(
                    "  release_upgrade_client_latency round{}: {} calls overlapped the upgrade ({:.1} ms, pause {:.1} ms): p50 {:.0} us, p99 {:.0} us, max {:.0} us",
                    if by_message { " (suspend by message)" } else { "" },
                    r.latencies.len(),
                    r.wall_ms,
                    r.pause_ms,
                    pct(&r.latencies, 0.5) / 1e3,
                    pct(&r.latencies, 0.99) / 1e3,
                    pct(&r.latencies, 1.0) / 1e3
                );
                pause[usize::from(by_message)].push(r.pause_ms);
                if by_message {
                    max_msg.push(pct(&r.latencies, 1.0) / 1e3);
                    continue;
                }
                p50.push(pct(&r.latencies, 0.5) / 1e3);
                p99.push(pct(&r.latencies, 0.99) / 1e3);
                max.push(pct(&r.latencies, 1.0) / 1e3);
            }
        }
        info!(
            "info: release_upgrade_client_latency_max: held in place median {:.0} us {}, suspended by message median {:.0} us {}; pause medians {:.1} / {:.1} ms",
            median(&max),
            fmt_list(&max, "us"),
            median(&max_msg),
            fmt_list(&max_msg, "us"),
            median(&pause[0]),
            median(&pause[1])
        );
        out.push(Res::new(lat[0], median(&p50), "us"));
        out.push(Res::new(lat[1], median(&p99), "us"));
        out.push(Res::new(lat[2], median(&max), "us"));
    }
    if want("release_rollback_10000") {
        let mut ms = Vec::new();
        for _ in 0..3 {
            ms.push(round(libs, 10_000, true, false, false).await.wall_ms);
        }
        info!(
            "release_rollback_10000 rounds (ms): {}",
            fmt_list(&ms, "ms")
        );
        out.push(Res::new("release_rollback_10000", median(&ms), "ms"));
    }
    out
}

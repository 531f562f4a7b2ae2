//! The supervision measures of issue 4: `node_stop_10k` (a real `hotswap start` node whose
//! release has one application of 10 000 gen_server workers, from the stop request to the
//! OS process's exit) and `child_restart` (a killed permanent worker until its
//! replacement has run `init`). The Erlang side is `m_node_stop` and `m_child_restart` in
//! `bench/erlang/compare.escript`; the workloads mirror them:
//!
//! - node_stop_10k: the escript starts `erl -noshell` with an application whose top
//!   supervisor (`hs_bench_sup`, one_for_one, intensity 10 per second) has 10 000
//!   `hs_bench_gs` workers (permanent, default shutdown, not trapping exits), waits for
//!   `ready`, writes a line to its stdin, on which it calls `init:stop()`, and times until
//!   the port reports the exit status. Here: `hotswap start <release>` with the
//!   `app_worker` module's supervisor (the same flags) of 10 000 `app_worker` workers; on
//!   its ready line, SIGTERM (a graceful stop, as `init:stop()`), and the time until
//!   `waitpid` returns. The release keeps the defaults (`log_level = "info"`: the node writes
//!   its log file as usual; per-child progress reports are `debug`, as OTP hides its
//!   progress reports by default); stderr also shows rounds with `log_level = "debug"` (a
//!   line per child started and stopped) and with 0 children (the fixed cost).
//! - child_restart: one_for_one (intensity 1 000 000 per second), one permanent worker
//!   whose `init` notifies the measuring process; the time from `exit(W, kill)` to the new
//!   worker's notification, median of 1 001.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hotswap::{Ctx, ExitReason, Pid};
use hotswap_runtime::supervisor::{ChildSpec, Shutdown, Spec, Strategy};
use hotswap_runtime::Node;

use super::{ensure_loaded, fmt_list, median, Libs, Res, WAIT};

/// Mirror of `app_worker`'s `Config` (the fields the benchmarks set).
#[derive(serde::Serialize, Default)]
struct Config {
    notify: Option<Pid>,
}

/// Mirror of `app_worker`'s `Note`.
#[derive(serde::Deserialize, Debug)]
#[expect(
    dead_code,
    reason = "mirrors the fixture's type; the bench reads only Started's pid"
)]
enum Note {
    Started(Pid, String),
    Terminated(String, String),
}

/// Rounds of each node stop (the escript runs 3).
const STOP_ROUNDS: usize = 5;
/// Restarts timed (the escript times 1 001).
const RESTARTS: usize = 1001;

/// A release directory with the `app_worker` module and one application whose top
/// supervisor is `app_worker`'s, with `children` workers; the node's log filter is
/// `log_level` (the default is `info`).
fn write_release(libs: &Libs, children: u32, log_level: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!(
        "hotswap-bench-stop-{}-{children}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("releases/1.0.0")).expect("release dir");
    std::fs::create_dir_all(root.join("lib")).expect("lib dir");
    std::fs::copy(&libs.app_worker, root.join("lib/libapp_worker.so")).expect("copy app_worker");
    let manifest = format!(
        r#"[release]
name = "bench_node"
version = "1.0.0"

[node]
log_level = "{log_level}"

[[module]]
name = "app_worker"
version = "1"
file = "lib/libapp_worker.so"

[[application]]
name = "bench_node"
version = "1"
supervisor = "app_worker"
arg = {{ children = {children} }}
"#
    );
    std::fs::write(root.join("releases/1.0.0/release.toml"), manifest).expect("manifest");
    root
}

/// One round: start the node, wait for its ready line, SIGTERM it, and time until it has
/// exited. Milliseconds.
fn stop_round(hotswap: &Path, release: &Path) -> f64 {
    let mut child = Command::new(hotswap)
        .arg("start")
        .arg(release)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a hotswap node");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read the node's stdout");
        assert!(
            n > 0,
            "the node exited before it was ready: {:?}",
            child.wait()
        );
        if line.starts_with("node started:") {
            break;
        }
    }
    let t0 = Instant::now();
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
    let status = child.wait().expect("wait for the node");
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if !status.success() {
        info!("node exit status {status}");
    }
    ms
}

/// `node_stop_10k`.
pub(crate) fn m_node_stop(libs: &Libs) -> Res {
    let run = |children: u32, log_level: &str| -> Vec<f64> {
        let dir = write_release(libs, children, log_level);
        let v: Vec<f64> = (0..STOP_ROUNDS)
            .map(|_| {
                let _ = std::fs::remove_dir_all(dir.join("log"));
                stop_round(&libs.hotswap, &dir)
            })
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        v
    };
    let with = run(10_000, "info");
    info!(
        "node_stop_10k rounds (SIGTERM to exit, ms): {}",
        fmt_list(&with, "ms")
    );
    let verbose = run(10_000, "debug");
    info!(
        "info: same with log_level = \"debug\" (the supervisor's progress reports written: a line per child started and stopped): median {:.1} ms, rounds {}",
        median(&verbose),
        fmt_list(&verbose, "ms")
    );
    let without = run(0, "info");
    info!(
        "info: same with 0 children (fixed cost of a stop): median {:.1} ms, rounds {}",
        median(&without),
        fmt_list(&without, "ms")
    );
    Res::new("node_stop_10k", median(&with), "ms")
}

/// The measuring process of `child_restart`: waits for the first worker, then kills the
/// current worker and times until its replacement's `init` has notified, `n` times.
async fn restarts(ctx: Ctx, n: usize) -> Vec<f64> {
    let next = |ctx: Ctx| async move {
        match ctx.receive::<Note>().await {
            Note::Started(p, _) => p,
            other => panic!("unexpected {other:?}"),
        }
    };
    let mut w = next(ctx).await;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        ctx.exit(w, &ExitReason::Kill);
        let w2 = next(ctx).await;
        out.push(t0.elapsed().as_secs_f64() * 1e6);
        assert_ne!(w2, w, "a new worker");
        w = w2;
    }
    out
}

/// `child_restart`.
pub(crate) async fn m_child_restart(node: &Node, libs: &Libs) -> Res {
    ensure_loaded(node, "app_worker", &libs.app_worker).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let measurer = node
        .spawn_native(move |ctx| async move {
            let _ = tx.send(restarts(ctx, RESTARTS).await);
        })
        .expect("spawn the measuring process");
    let spec = Spec::new(Strategy::OneForOne)
        .intensity(1_000_000)
        .period(Duration::from_secs(1))
        .child(
            ChildSpec::server(
                "w",
                "app_worker",
                &Config {
                    notify: Some(measurer),
                },
            )
            .shutdown(Shutdown::BrutalKill),
        );
    let sup = node
        .start_supervisor(spec, None)
        .await
        .expect("start the supervisor");
    let times = tokio::time::timeout(WAIT, rx)
        .await
        .expect("child_restart timed out")
        .expect("the measuring process died");
    node.exit(sup, ExitReason::Shutdown);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    info!(
        "child_restart: {} restarts, median {:.2} us, p90 {:.2} us, p99 {:.2} us, max {:.1} us",
        times.len(),
        median(&times),
        sorted[sorted.len() * 9 / 10],
        sorted[sorted.len() * 99 / 100],
        sorted[sorted.len() - 1]
    );
    Res::new("child_restart", median(&times), "us")
}

//! `compare`: hotswap against Erlang/OTP on the same machine.
//!
//! ```text
//! cargo run --release -p hotswap-bench --bin compare [measure or group...]
//! ```
//!
//! Groups name several measures of one workload, as the escript's do: `gen_server_call`,
//! `gen_server_calls`, `gen_server_upgrade`, `gen_server_upgrade_client_latency`, and
//! `gen_server` for all of issue 3's (their workloads are in `gen_server.rs`). Issue 4's
//! supervision measures, `node_stop_10k` and `child_restart`, are in `apps.rs`.
//!
//! Runs each workload in-process on a two-worker tokio runtime (several rounds, medians;
//! `node_stop_10k` starts real `hotswap start` nodes),
//! then runs `bench/erlang/compare.escript` for the same measures, and prints one line per
//! measure on stdout:
//!
//! ```text
//! <measure> hotswap=<value><unit> erlang=<value><unit> ratio=<hotswap/erlang>
//! ```
//!
//! Details of every round, the variants that are not the headline number, and a summary of
//! the issue's targets go to stderr. See `BENCHMARKS.md` at the repository root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hotswap_runtime::{ExitReason, Message, Node, NodeConfig, Pid};

/// One measure: the name of its stdout line, the command-line groups that select it (as
/// the escript's group names do), and whether the escript measures it too.
struct Measure {
    name: &'static str,
    groups: &'static [&'static str],
    erlang: bool,
}

/// A measure the escript also runs.
const fn both(name: &'static str, groups: &'static [&'static str]) -> Measure {
    Measure {
        name,
        groups,
        erlang: true,
    }
}

/// A measure with no Erlang counterpart in the escript (the comparison is elsewhere; see
/// `BENCHMARKS.md`).
const fn hs_only(name: &'static str, groups: &'static [&'static str]) -> Measure {
    Measure {
        name,
        groups,
        erlang: false,
    }
}

const GS_CALL: &[&str] = &["gen_server_call", "gen_server"];
const GS_CALLS: &[&str] = &["gen_server_calls", "gen_server"];
const GS: &[&str] = &["gen_server"];
const GS_UPGRADE: &[&str] = &["gen_server_upgrade", "gen_server"];
const GS_UP_LATENCY: &[&str] = &["gen_server_upgrade_client_latency", "gen_server"];
const HEAP: &[&str] = &["module_heap"];
const REL_UPGRADE: &[&str] = &["release_upgrade", "release"];
const REL: &[&str] = &["release"];
const TCP_ECHO: &[&str] = &["tcp_echo", "tcp"];
const TCP_UPGRADE: &[&str] = &["tcp_upgrade", "tcp"];
const TCP_ECHO_AB: &[&str] = &["tcp_echo_ab"];

/// Every measure, in the order they print: the one list the command line, the Erlang run
/// and the output read. The escript has no client-latency-during-upgrades measure (the
/// issue quotes Erlang's maximum, 68-80 ms on this machine kind, and the target summary
/// repeats it); issue 13's Erlang echo server is run by `net.rs` itself (same client for
/// all).
const MEASURES: &[Measure] = &[
    both("spawn_exit_rate", &[]),
    both("idle_process_memory", &[]),
    both("message_throughput", &[]),
    both("module_load", &[]),
    both("purge_100k_idle", &[]),
    both("fq_call_overhead", &[]),
    hs_only("purged_version_memory", &[]),
    both("gen_server_call_rtt", GS_CALL),
    both("gen_server_call_p99", GS_CALL),
    both("gen_server_calls_1client", GS_CALLS),
    both("gen_server_calls_2clients", GS_CALLS),
    both("gen_server_cast_throughput", GS),
    both("gen_server_idle_memory", GS),
    both("gen_server_upgrade_1000", GS_UPGRADE),
    both("gen_server_upgrade_10000", GS_UPGRADE),
    both("gen_server_upgrade_100000", GS_UPGRADE),
    hs_only("gen_server_upgrade_client_latency", GS_UP_LATENCY),
    hs_only("gen_server_upgrade_client_latency_p99", GS_UP_LATENCY),
    hs_only("gen_server_upgrade_client_latency_max", GS_UP_LATENCY),
    both("node_stop_10k", &[]),
    both("child_restart", &[]),
    hs_only("load_compat_check", &[]),
    hs_only("module_heap_alloc_calls", HEAP),
    hs_only("module_heap_alloc_calls_system", HEAP),
    hs_only("module_heap_alloc_ratio", HEAP),
    both("release_upgrade_1000", REL_UPGRADE),
    both("release_upgrade_10000", REL_UPGRADE),
    both("release_upgrade_100000", REL_UPGRADE),
    hs_only("release_upgrade_client_latency", REL),
    hs_only("release_upgrade_client_latency_p99", REL),
    hs_only("release_upgrade_client_latency_max", REL),
    hs_only("release_rollback_10000", REL),
    hs_only("tcp_echo_rtt", TCP_ECHO),
    hs_only("tcp_echo_p99", TCP_ECHO),
    hs_only("tcp_echo_throughput", TCP_ECHO),
    hs_only("tcp_echo_readahead_rtt", TCP_ECHO_AB),
    hs_only("tcp_echo_readahead_p99", TCP_ECHO_AB),
    hs_only("tcp_upgrade_pause", TCP_UPGRADE),
    hs_only("tcp_upgrade_lost_bytes", TCP_UPGRADE),
    both("idle_node_cpu", &[]),
];

/// The measures a command-line group selects (empty: not a group).
fn group(g: &str) -> Vec<&'static str> {
    MEASURES
        .iter()
        .filter(|m| m.groups.contains(&g))
        .map(|m| m.name)
        .collect()
}

/// Every group name, in first-use order.
fn group_names() -> Vec<&'static str> {
    let mut gs: Vec<&'static str> = Vec::new();
    for g in MEASURES.iter().flat_map(|m| m.groups.iter().copied()) {
        if !gs.contains(&g) {
            gs.push(g);
        }
    }
    gs
}

/// How long any single wait may take before the run is declared broken.
const WAIT: Duration = Duration::from_secs(120);

/// Mirror of `bench_mod`'s `FqTimes`.
#[derive(serde::Deserialize, Debug)]
struct FqTimes {
    local_ns: f64,
    remote_ns: f64,
    native_ns: f64,
}

/// One result: a median over rounds.
#[derive(Debug, Clone)]
struct Res {
    name: &'static str,
    value: f64,
    unit: &'static str,
    /// A secondary number with an Erlang counterpart on the escript's stderr
    /// (see [`ERLANG_EXTRA`]): `(key, value)`.
    extra: Option<(&'static str, f64)>,
}

impl Res {
    fn new(name: &'static str, value: f64, unit: &'static str) -> Res {
        Res {
            name,
            value,
            unit,
            extra: None,
        }
    }
}

/// The node's allocator. Modules allocate from their version's heap (a jemalloc arena the
/// node keeps per loaded version): no allocation ever changes owner across the module
/// boundary, so each side may choose.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

macro_rules! info {
    ($($t:tt)*) => { eprintln!("# {}", format!($($t)*)) };
}

mod apps;
mod gen_server;
mod heap;
mod net;
mod netload;
mod release;
mod throughput;

// ---------------------------------------------------------------------------------------
// small utilities

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn fmt_list(v: &[f64], unit: &str) -> String {
    let items: Vec<String> = v.iter().map(|x| fmt_value(*x, unit)).collect();
    format!("[{}]", items.join(", "))
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "ns" if v.abs() >= 100.0 => format!("{v:.0}"),
        "ns" | "us_per_process" => format!("{v:.3}"),
        "us" | "ms" => format!("{v:.1}"),
        "x" | "pct_core" => format!("{v:.3}"),
        _ => format!("{v:.0}"),
    }
}

/// The runtime a node runs on, as `hotswap start` builds it
/// ([`hotswap_runtime::sched::tune`]), with `workers` workers. For experiments, the
/// environment can also set tokio's stable knobs: `HS_BENCH_EVENT_INTERVAL=N`,
/// `HS_BENCH_GLOBAL_QUEUE_INTERVAL=N` (turning the LIFO slot off needs `tokio_unstable`).
fn node_runtime(workers: usize) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(workers).enable_all();
    hotswap_runtime::sched::tune(&mut b);
    let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    if let Some(n) = num("HS_BENCH_EVENT_INTERVAL") {
        b.event_interval(n);
    }
    if let Some(n) = num("HS_BENCH_GLOBAL_QUEUE_INTERVAL") {
        b.global_queue_interval(n);
    }
    info!(
        "runtime: {workers} workers, spin before park {:?}, event_interval {:?}, global_queue_interval {:?}",
        hotswap_runtime::sched::spin_bound(),
        num("HS_BENCH_EVENT_INTERVAL"),
        num("HS_BENCH_GLOBAL_QUEUE_INTERVAL")
    );
    b.build().expect("tokio runtime")
}

/// Times the runtime's workers have parked so far (all workers).
fn worker_parks() -> u64 {
    let m = tokio::runtime::Handle::current().metrics();
    (0..m.num_workers()).map(|w| m.worker_park_count(w)).sum()
}

/// Time each of the runtime's workers has spent busy so far.
fn worker_busy() -> Vec<Duration> {
    let m = tokio::runtime::Handle::current().metrics();
    (0..m.num_workers())
        .map(|w| m.worker_total_busy_duration(w))
        .collect()
}

/// Resident set size of this OS process, from `/proc/self/statm`.
fn rss_bytes() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    pages * page
}

/// `(RssAnon, RssFile, RssShmem)` in bytes, from `/proc/self/status`.
fn rss_parts() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| -> f64 {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|x| x.parse::<f64>().ok())
            .map_or(0.0, |kb| kb * 1024.0)
    };
    [field("RssAnon:"), field("RssFile:"), field("RssShmem:")]
}

/// Bytes the C allocator has handed out and not got back (all arenas, plus mmapped chunks).
fn heap_in_use() -> f64 {
    // SAFETY: mallinfo2 has no preconditions; it only reads allocator statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as f64
}

/// Give free allocator memory back to the OS, so that RSS deltas measure live memory.
fn trim() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// Wait until two RSS readings 20 ms apart agree within 64 KiB (at most ~2 s).
async fn settle_rss() {
    let mut prev = rss_bytes();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = rss_bytes();
        if (now - prev).abs() < 65536.0 {
            return;
        }
        prev = now;
    }
}

/// Wait until `exited_count` reaches `target`.
async fn wait_exited(node: &Node, target: u64) {
    let deadline = Instant::now() + WAIT;
    while node.exited_count() < target {
        assert!(
            Instant::now() < deadline,
            "processes did not exit: {} of {target}",
            node.exited_count()
        );
        tokio::task::yield_now().await;
    }
}

/// Remove every version of `module` (old purged, current deleted and purged).
async fn unload(node: &Node, module: &str) {
    let code = node.code();
    let Some(m) = code.module(module) else { return };
    if m.old.is_some() {
        let r = code.purge(module).await.expect("purge");
        assert!(r.pinned.is_none(), "{module} pinned: {:?}", r.pinned);
    }
    if m.current.is_some() {
        code.delete(module).await.expect("delete");
        let r = code.purge(module).await.expect("purge");
        assert!(r.pinned.is_none(), "{module} pinned: {:?}", r.pinned);
    }
}

async fn ensure_loaded(node: &Node, module: &str, path: &Path) {
    if node.code().is_loaded(module).is_none() {
        node.code()
            .load(path)
            .await
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    }
}

// ---------------------------------------------------------------------------------------
// locating and building the modules

#[derive(Clone)]
struct Libs {
    bench: PathBuf,
    seed000: PathBuf,
    /// `upgrade_srv` version 1 and 2 (the gen_server measures).
    upsrv1: PathBuf,
    upsrv2: PathBuf,
    /// The `app_worker` fixture (the supervision measures).
    app_worker: PathBuf,
    /// The `alloc_srv` module (the per-version heap's cost).
    alloc_srv: PathBuf,
    /// `rel_srv` v1, v2 and `rel_aux` v1, v2 (the release measures).
    rel: [PathBuf; 4],
    /// The `hotswap` binary (node_stop_10k starts real nodes).
    hotswap: PathBuf,
    /// The `port_echo` fixture (version 1; the TCP echo measures).
    port_echo: PathBuf,
    /// The chat example, versions 1 and 2 (tcp_upgrade_pause).
    chat: [PathBuf; 2],
    /// `compat_bench` version 1 and 2 (five message types; load_compat_check).
    compat1: PathBuf,
    compat2: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

/// `target/release` next to this executable when it is a release build, else the
/// workspace's own `target/release`.
fn release_dir() -> (PathBuf, PathBuf) {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            if dir.file_name().is_some_and(|n| n == "release") {
                if let Some(t) = dir.parent() {
                    return (t.to_path_buf(), dir.to_path_buf());
                }
            }
        }
    }
    let t = repo_root().join("target");
    (t.clone(), t.join("release"))
}

/// The release builds `compare` needs: `(cargo package, file in target/release)`. The one
/// list the build command, its log line, the check that each file is there and [`Libs`]
/// read.
const BUILDS: &[(&str, &str)] = &[
    ("bench_mod", "libbench_mod.so"),
    ("seed000_v1", "libseed000_v1.so"),
    ("upgrade_srv_v1", "libupgrade_srv_v1.so"),
    ("upgrade_srv_v2", "libupgrade_srv_v2.so"),
    ("app_worker", "libapp_worker.so"),
    ("alloc_srv", "liballoc_srv.so"),
    ("rel_srv_v1", "librel_srv_v1.so"),
    ("rel_srv_v2", "librel_srv_v2.so"),
    ("rel_aux_v1", "librel_aux_v1.so"),
    ("rel_aux_v2", "librel_aux_v2.so"),
    ("hotswap-cli", "hotswap"),
    ("port_echo_v1", "libport_echo_v1.so"),
    ("chat_v1", "libchat_v1.so"),
    ("chat_v2", "libchat_v2.so"),
    ("compat_bench_v1", "libcompat_bench_v1.so"),
    ("compat_bench_v2", "libcompat_bench_v2.so"),
];

/// Build (or refresh) the release modules with cargo, as `tests/all/support.rs` does.
fn build_modules() -> Libs {
    let (target, rel) = release_dir();
    let file = |package: &str| {
        let (_, f) = BUILDS
            .iter()
            .find(|(p, _)| *p == package)
            .expect("a package of BUILDS");
        rel.join(f)
    };
    let libs = Libs {
        bench: file("bench_mod"),
        seed000: file("seed000_v1"),
        upsrv1: file("upgrade_srv_v1"),
        upsrv2: file("upgrade_srv_v2"),
        app_worker: file("app_worker"),
        alloc_srv: file("alloc_srv"),
        rel: [
            file("rel_srv_v1"),
            file("rel_srv_v2"),
            file("rel_aux_v1"),
            file("rel_aux_v2"),
        ],
        hotswap: file("hotswap-cli"),
        port_echo: file("port_echo_v1"),
        chat: [file("chat_v1"), file("chat_v2")],
        compat1: file("compat_bench_v1"),
        compat2: file("compat_bench_v2"),
    };
    let packages: Vec<&str> = BUILDS.iter().flat_map(|(p, _)| ["-p", p]).collect();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    info!(
        "building the modules and the node: cargo build --release {}",
        packages.join(" ")
    );
    let out = Command::new(cargo)
        .current_dir(repo_root())
        .args(["build", "--release"])
        .args(&packages)
        .arg("--target-dir")
        .arg(&target)
        .stdout(Stdio::null())
        .output();
    let ok = match &out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            info!(
                "building the modules failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            false
        }
        Err(e) => {
            info!("cannot run cargo: {e}");
            false
        }
    };
    for (_, f) in BUILDS {
        let p = rel.join(f);
        if !p.exists() {
            eprintln!("compare: {} is missing and could not be built", p.display());
            std::process::exit(1);
        }
    }
    if !ok {
        info!("using the existing (possibly stale) module libraries");
    }
    libs
}

// ---------------------------------------------------------------------------------------
// the workloads

/// Spawn `n` `bench:exit_now` processes with monitors from one (native) process and wait
/// for all `n` `Down` messages: the workload of the Erlang side. Returns processes/s.
async fn spawn_exit_monitors(node: &Node, n: u64) -> f64 {
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let t = Instant::now();
        for _ in 0..n {
            ctx.spawn_monitor("bench", "exit_now", &()).expect("spawn");
        }
        let mut downs = 0;
        while downs < n {
            if let Message::Down { .. } = ctx.recv().await {
                downs += 1;
            }
        }
        let _ = tx.send(t.elapsed());
    })
    .expect("spawn_native");
    let d = tokio::time::timeout(WAIT, rx)
        .await
        .expect("spawner timed out")
        .expect("spawner died");
    n as f64 / d.as_secs_f64()
}

/// Spawn `n` `bench:exit_now` processes from host code (no monitors) and wait until the
/// node counts `n` more exits. Returns processes/s.
async fn spawn_exit_plain(node: &Node, n: u64) -> f64 {
    let base = node.exited_count();
    let t = Instant::now();
    for _ in 0..n {
        node.spawn("bench", "exit_now", &()).expect("spawn");
    }
    wait_exited(node, base + n).await;
    n as f64 / t.elapsed().as_secs_f64()
}

async fn m_spawn_exit(node: &Node) -> Res {
    const N: u64 = 200_000;
    for _ in 0..2 {
        spawn_exit_monitors(node, N).await; // warm-up: allocators grow
    }
    let mut rs = Vec::new();
    for _ in 0..7 {
        rs.push(spawn_exit_monitors(node, N).await);
    }
    info!(
        "spawn_exit_rate rounds (spawn_monitor from a process + wait for all Down): {}",
        fmt_list(&rs, "per_s")
    );
    let mut ps = Vec::new();
    for _ in 0..5 {
        ps.push(spawn_exit_plain(node, N).await);
    }
    info!(
        "info: plain spawn from host code + wait for exited_count: median {} per_s {}",
        fmt_value(median(&ps), "per_s"),
        fmt_list(&ps, "per_s")
    );
    Res {
        extra: Some(("spawn_exit_plain", median(&ps))),
        ..Res::new("spawn_exit_rate", median(&rs), "per_s")
    }
}

/// RSS and C heap in use, after giving free memory back and letting RSS settle.
async fn mem_snapshot() -> (f64, f64) {
    trim();
    settle_rss().await;
    (rss_bytes(), heap_in_use())
}

/// What one idle "process" is, for [`idle_memory_round`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Idle {
    /// `bench:idle`: a module process parked in `ctx.recv()` (the headline).
    Module,
    /// A native process parked in `ctx.recv()`.
    Native,
    /// A bare tokio task parked on a `Notify` (what the runtime is built on).
    TokioTask,
    /// An `upgrade_srv` gen_server waiting for its next message.
    GenServer,
}

/// Per-idle-process `(RSS delta, C heap delta)` of `n` parked processes.
async fn idle_memory_round(node: &Node, kind: Idle, n: usize) -> (f64, f64) {
    // The pid list is allocated and touched before the first reading, so it is not counted.
    let mut pids = Vec::with_capacity(n);
    pids.resize(n, Pid(u64::MAX));
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let tasks0 = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let (r0, h0) = mem_snapshot().await;
    if kind == Idle::GenServer {
        pids = gen_server::start_into(node, pids).await;
    }
    for p in pids.iter_mut() {
        match kind {
            Idle::GenServer => break,
            Idle::Module => *p = node.spawn("bench", "idle", &()).expect("spawn"),
            Idle::Native => {
                *p = node
                    .spawn_native(|ctx| async move {
                        let _ = ctx.recv().await;
                    })
                    .expect("spawn_native")
            }
            Idle::TokioTask => {
                let n = notify.clone();
                drop(tokio::spawn(async move { n.notified().await }));
            }
        }
    }
    // let every process run to its first receive and park
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (r1, h1) = mem_snapshot().await;
    if kind == Idle::TokioTask {
        notify.notify_waiters();
        let metrics = tokio::runtime::Handle::current().metrics();
        while metrics.num_alive_tasks() > tasks0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    } else {
        let base = node.exited_count();
        for p in &pids {
            node.exit(*p, ExitReason::Kill);
        }
        wait_exited(node, base + n as u64).await;
    }
    drop(pids);
    trim();
    ((r1 - r0) / n as f64, (h1 - h0) / n as f64)
}

/// One idle-memory round in a fresh child process (this binary, `--idle-child KIND`), so
/// that no earlier round's freed memory is reused: whatever the allocator, the RSS growth of
/// a fresh process is what N idle processes really cost. Returns `(rss, heap)` per process.
fn idle_memory_child(kind: &str) -> (f64, f64) {
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--idle-child", kind])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the idle-memory child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("IDLE "))
        .unwrap_or_else(|| panic!("idle-memory child ({kind}) failed: {}", out.status));
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().expect("number"))
        .collect();
    (v[0], v[1])
}

/// The child side of [`idle_memory_child`].
fn idle_child_main(kind: &str, libs: Libs) {
    let kind = match kind {
        "module" => Idle::Module,
        "native" => Idle::Native,
        "gen_server" => Idle::GenServer,
        _ => Idle::TokioTask,
    };
    let rt = node_runtime(2);
    let (r, h) = rt.block_on(async move {
        tokio::spawn(async move {
            let node = Node::start(NodeConfig::default()).expect("node starts");
            ensure_loaded(&node, "bench", &libs.bench).await;
            ensure_loaded(&node, gen_server::MODULE, &libs.upsrv1).await;
            let r = idle_memory_round(&node, kind, 100_000).await;
            node.stop(Duration::from_secs(10)).await;
            r
        })
        .await
        .expect("idle round")
    });
    println!("IDLE {r} {h}");
}

async fn m_idle_memory(_node: &Node) -> Res {
    let mut rs = Vec::new();
    let mut hs = Vec::new();
    for _ in 0..5 {
        let (r, h) = idle_memory_child("module");
        rs.push(r);
        hs.push(h);
    }
    info!(
        "idle_process_memory rounds (bench:idle, RSS growth of a fresh process / N, bytes): {}",
        fmt_list(&rs, "bytes")
    );
    info!(
        "info: C heap (glibc, module side) delta / N, bytes: {}",
        fmt_list(&hs, "bytes")
    );
    for kind in ["native", "tokio"] {
        let (mut rs, mut hs) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (r, h) = idle_memory_child(kind);
            rs.push(r);
            hs.push(h);
        }
        let what = match kind {
            "native" => "a native process parked in ctx.recv()",
            _ => "a bare tokio task parked on a Notify",
        };
        info!(
            "info: {what}: RSS {} B, C heap {} B (medians of 3)",
            fmt_value(median(&rs), "bytes"),
            fmt_value(median(&hs), "bytes")
        );
    }
    Res::new("idle_process_memory", median(&rs), "bytes")
}

/// `gen_server_idle_memory`: as `idle_process_memory`, for 100 000 idle `upgrade_srv`
/// servers (each started with `gen_server::start` from one native process). Median of 3.
async fn m_gs_idle_memory() -> Res {
    let (mut rs, mut hs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (r, h) = idle_memory_child("gen_server");
        rs.push(r);
        hs.push(h);
    }
    info!(
        "gen_server_idle_memory rounds (upgrade_srv, RSS growth of a fresh process / N, bytes): {}",
        fmt_list(&rs, "bytes")
    );
    info!(
        "info: of which C heap (glibc: the module-side state) / N, bytes: {} (the state: Box<Counter> of {} B + a 1-byte String = {} B in glibc chunks)",
        fmt_list(&hs, "bytes"),
        std::mem::size_of::<(u64, u32, String)>(),
        gen_server::STATE_BYTES
    );
    Res::new("gen_server_idle_memory", median(&rs), "bytes")
}

use throughput::{throughput_round, Sender};

async fn m_throughput(node: &Node) -> Res {
    const N: u64 = 2_000_000;
    let mut all = HashMap::new();
    for s in [Sender::Module, Sender::Native, Sender::Host] {
        // Warm-up (as the Erlang side does): the first rounds grow the allocator's pools.
        for _ in 0..2 {
            throughput_round(node, N, s).await;
        }
        let mut rs = Vec::new();
        for _ in 0..7 {
            rs.push(throughput_round(node, N, s).await);
        }
        all.insert(format!("{s:?}"), rs);
    }
    let m = &all["Native"];
    info!(
        "message_throughput rounds (native process ctx.send_bytes -> bench:sink): {}",
        fmt_list(m, "per_s")
    );
    for k in ["Module", "Host"] {
        let v = &all[k];
        let what = if k == "Module" {
            "module process bench:source"
        } else {
            "host code, node.send_bytes"
        };
        info!(
            "info: sender = {what}: median {} per_s {}",
            fmt_value(median(v), "per_s"),
            fmt_list(v, "per_s")
        );
    }
    Res::new("message_throughput", median(m), "per_s")
}

/// Print the per-step medians of the loads recorded since `load_steps::record(true)`
/// (`hotswap_runtime::load_steps`), skipping the first `skip` loads (warm-up), and turn
/// the recording off.
fn print_load_steps(what: &str, skip: usize) -> Vec<Vec<(&'static str, f64)>> {
    let all = hotswap_runtime::load_steps::take();
    hotswap_runtime::load_steps::record(false);
    let loads = all.get(skip..).unwrap_or(&[]);
    let mut names: Vec<&'static str> = Vec::new();
    for l in loads {
        for (n, _) in l {
            if !names.contains(n) {
                names.push(n);
            }
        }
    }
    let parts: Vec<String> = names
        .iter()
        .map(|n| {
            let v: Vec<f64> = loads
                .iter()
                .flat_map(|l| l.iter().filter(|(m, _)| m == n).map(|(_, t)| *t))
                .collect();
            format!("{n} {:.1}", median(&v))
        })
        .collect();
    let sums: Vec<f64> = loads
        .iter()
        .map(|l| l.iter().map(|(_, t)| t).sum())
        .collect();
    info!(
        "{what}: load steps (us, medians of {} loads): {}; sum {:.1}",
        loads.len(),
        parts.join(", "),
        median(&sums)
    );
    loads.to_vec()
}

/// The steps of a load that are the compatibility check: reading the description record,
/// or `describe`, then the decode and the comparison.
const CHECK_STEPS: &[&str] = &[
    "read record",
    "description record",
    "describe",
    "decode",
    "compare",
    "report",
];

/// Per load, the time of its check steps and of the rest.
fn check_split(loads: &[Vec<(&'static str, f64)>]) -> (Vec<f64>, Vec<f64>) {
    loads
        .iter()
        .map(|l| {
            let check: f64 = l
                .iter()
                .filter(|(n, _)| CHECK_STEPS.contains(n))
                .map(|(_, t)| t)
                .sum();
            let all: f64 = l.iter().map(|(_, t)| t).sum();
            (check, all - check)
        })
        .unzip()
}

/// Time `rounds` loads (after 10 warm-up loads) of `paths[i % paths.len()]`, unloading the
/// module completely after each.
async fn load_times(node: &Node, paths: &[PathBuf], rounds: usize) -> Vec<f64> {
    unload(node, "bench").await;
    let mut ts = Vec::new();
    for i in 0..rounds + 10 {
        // As a load seconds after the last one: what that load prepared for this one is
        // made (not raced).
        node.code().next_load_prepared().await;
        let t = Instant::now();
        node.code()
            .load(&paths[i % paths.len()])
            .await
            .expect("load");
        let d = t.elapsed();
        unload(node, "bench").await;
        if i >= 10 {
            ts.push(d.as_secs_f64() * 1e6);
        }
    }
    ts
}

/// `module_load`: every load is a build the node has never seen (a fresh copy of the
/// library, written to the code directory and opened): the cost of an upgrade. For
/// reference, `module_reload`: the same bytes again after a purge, which reuses the
/// verified-unmapped copy (what Erlang's benchmark does: `load_binary` of one binary).
async fn m_module_load(node: &Node, libs: &Libs) -> Res {
    const ROUNDS: usize = 201;
    let size = std::fs::metadata(&libs.bench).map(|m| m.len()).unwrap_or(0);
    // Distinct builds: the library with a unique trailer (bytes after the section headers
    // are not part of any segment), so each has its own content hash.
    let dir = std::env::temp_dir().join(format!("hotswap-compare-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let bytes = std::fs::read(&libs.bench).expect("read bench_mod");
    let fresh: Vec<PathBuf> = (0..ROUNDS + 10)
        .map(|i| {
            let p = dir.join(format!("libbench_mod-{i}.so"));
            let mut b = bytes.clone();
            b.extend_from_slice(&(i as u64).to_le_bytes());
            std::fs::write(&p, b).expect("write a build");
            p
        })
        .collect();
    hotswap_runtime::load_steps::record(true);
    let ts = load_times(node, &fresh, ROUNDS).await;
    print_load_steps("module_load", 10);
    let min = ts.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ts.iter().copied().fold(0.0, f64::max);
    info!(
        "module_load (new build each time, {} KB): min {min:.1} max {max:.1} us",
        size / 1024
    );
    let again = load_times(node, std::slice::from_ref(&libs.bench), ROUNDS).await;
    let _ = std::fs::remove_dir_all(&dir);
    // The loads above leave `bench` unloaded; the lines after this one use it.
    ensure_loaded(node, "bench", &libs.bench).await;
    let mut r = Res::new("module_load", median(&ts), "us");
    r.extra = Some(("module_reload", median(&again)));
    r
}

/// Load times of fresh builds of `compat_bench` v1 and v2 in turn (each over the other, so
/// each load replaces a current version and is checked unless `unchecked`); the old
/// version is purged after each (not timed). With `records`, each build has its
/// description record beside it, written before the loads by
/// `compat::record_description` as `hotswap release` writes them.
async fn compat_load_times(
    node: &Node,
    libs: &Libs,
    rounds: usize,
    unchecked: bool,
    records: bool,
) -> Vec<f64> {
    let dir = std::env::temp_dir().join(format!(
        "hotswap-compat-{}-{unchecked}-{records}",
        std::process::id()
    ));
    let _ = std::fs::create_dir_all(&dir);
    let (b1, b2) = (
        std::fs::read(&libs.compat1).expect("read compat_bench_v1"),
        std::fs::read(&libs.compat2).expect("read compat_bench_v2"),
    );
    // Distinct builds (a unique trailer each): every load describes a version never seen.
    let fresh: Vec<PathBuf> = (0..rounds + 11)
        .map(|i| {
            let p = dir.join(format!("libcompat_bench-{i}.so"));
            let mut b = if i % 2 == 0 { b1.clone() } else { b2.clone() };
            b.extend_from_slice(&(i as u64).to_le_bytes());
            std::fs::write(&p, b).expect("write a build");
            if records {
                hotswap_runtime::compat::record_description(&p).expect("record a build");
            }
            p
        })
        .collect();
    unload(node, "compat_bench").await;
    let opts = hotswap_runtime::LoadOptions {
        force: true,
        unchecked,
        ..Default::default()
    };
    node.code().load_with(&fresh[0], opts).await.expect("load");
    let mut ts = Vec::new();
    for (i, p) in fresh.iter().enumerate().skip(1) {
        node.code().next_load_prepared().await;
        let t = Instant::now();
        node.code().load_with(p, opts).await.expect("load");
        let d = t.elapsed();
        node.code().purge("compat_bench").await.expect("purge");
        if i > 10 {
            ts.push(d.as_secs_f64() * 1e6);
        }
    }
    unload(node, "compat_bench").await;
    let _ = std::fs::remove_dir_all(&dir);
    ts
}

/// `load_compat_check`: what the compatibility check adds to a load that replaces a
/// gen_server module with five message types (state, call, reply, cast, info), as in
/// production: each library has its description record beside it (written at packaging
/// time by `compat::record_description`), so the check reads it, decodes the description
/// and compares. The figure: the check's steps (reading the record, the decode, the
/// comparison, logging the report's findings) in percent of the rest of the same load,
/// median over the checked loads (`load_steps`). Info lines give the same from load times
/// (checked loads against unchecked ones, pooled and per pair of sets): on this VM whole
/// sets of 34 loads run 10-25 % faster or slower than the set before them, so a
/// difference of load times swings from -1 % to 24 % between runs for a check of 7-9 %,
/// where the steps are measured inside each load. For reference, the check without
/// records: the new version's `describe` (tracing the five types) runs at the load.
async fn m_load_compat_check(node: &Node, libs: &Libs) -> Res {
    // Nine short sets of each kind in turn rather than three long ones: the machine's
    // drift (another process, the page cache) then lands on every kind alike.
    const ROUNDS: usize = 34;
    let (mut with, mut without, mut described) = (Vec::new(), Vec::new(), Vec::new());
    let (mut steps_rec, mut steps_desc) = (Vec::new(), Vec::new());
    // Each set of checked loads against the unchecked set just before it (an info line).
    let mut paired = Vec::new();
    for _ in 0..9 {
        let a = compat_load_times(node, libs, ROUNDS, true, false).await;
        hotswap_runtime::load_steps::record(true);
        let b = compat_load_times(node, libs, ROUNDS, false, true).await;
        paired.push((median(&b) - median(&a)) / median(&a) * 100.0);
        without.extend(a);
        with.extend(b);
        steps_rec.extend(print_load_steps(
            "load_compat_check (with the check, description records)",
            11,
        ));
        hotswap_runtime::load_steps::record(true);
        described.extend(compat_load_times(node, libs, ROUNDS, false, false).await);
        steps_desc.extend(print_load_steps(
            "load_compat_check (with the check, no records: describe at load)",
            11,
        ));
    }
    let (w, wo, d) = (median(&with), median(&without), median(&described));
    // The same from the load steps of the checked loads alone (robust to the runs'
    // drift on a shared machine: the check's steps against the rest of the same loads).
    let mut share = f64::NAN;
    for (what, steps) in [
        ("description records", &steps_rec),
        ("no records", &steps_desc),
    ] {
        let (check, rest) = check_split(steps);
        let pct: Vec<f64> = check
            .iter()
            .zip(&rest)
            .map(|(c, r)| c / r * 100.0)
            .collect();
        info!(
            "load_compat_check ({what}), from the load steps: the check {:.1} us, the rest of the load {:.1} us: {:.1} % (medians of {} loads)",
            median(&check),
            median(&rest),
            median(&pct),
            check.len()
        );
        if what == "description records" {
            share = median(&pct);
        }
    }
    info!(
        "load_compat_check: without description records (describe at load) the check costs {:.1} us, {:.1} % of a load ({d:.1} us with it)",
        d - wo,
        (d - wo) / wo * 100.0
    );
    // The check alone, outside a load: describe both files' types and compare them.
    let mut alone = Vec::new();
    let (s1, s2) = (
        hotswap_runtime::compat::describe_file(&libs.compat1).expect("describe v1"),
        hotswap_runtime::compat::describe_file(&libs.compat2).expect("describe v2"),
    );
    for _ in 0..201 {
        let t = Instant::now();
        let r = hotswap_runtime::compat::check(&s1, &s2);
        alone.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(!r.refuses());
    }
    info!(
        "load_compat_check: load with the check (description records) {w:.1} us, without the check {wo:.1} us (medians of {} loads each); the comparison alone {:.1} us",
        with.len(),
        median(&alone)
    );
    paired.sort_by(f64::total_cmp);
    info!(
        "load_compat_check: from load times instead (checked loads with records against unchecked loads): {:.1} % from the pooled medians, {:.1} % the median of the nine pairs of sets (per pair: {} %)",
        (w - wo) / wo * 100.0,
        median(&paired),
        paired.iter().map(|p| format!("{p:.1}")).collect::<Vec<_>>().join(" "),
    );
    Res::new("load_compat_check", share, "%")
}

async fn m_purge(node: &Node, libs: &Libs) -> Res {
    const N: usize = 100_000;
    ensure_loaded(node, "seed000", &libs.seed000).await;
    unload(node, "bench").await;
    let mut pids = Vec::with_capacity(N);
    for _ in 0..N {
        pids.push(node.spawn("seed000", "do_loop", &()).expect("spawn"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ts = Vec::new();
    for _ in 0..7 {
        unload(node, "bench").await;
        node.code().load(&libs.bench).await.expect("load");
        node.code().load(&libs.bench).await.expect("load again");
        assert!(node.code().module("bench").is_some_and(|m| m.old.is_some()));
        let t = Instant::now();
        let r = node.code().purge("bench").await.expect("purge");
        let d = t.elapsed();
        assert!(
            r.killed.is_empty() && r.pinned.is_none(),
            "unexpected purge report {r:?}"
        );
        ts.push(d.as_secs_f64() * 1e6);
    }
    info!("purge_100k_idle rounds (us): {}", fmt_list(&ts, "us"));
    let alive = pids.iter().filter(|p| node.is_alive(**p)).count();
    assert_eq!(
        alive, N,
        "idle processes must survive the purge of another module"
    );
    let base = node.exited_count();
    for p in &pids {
        node.exit(*p, ExitReason::Kill);
    }
    wait_exited(node, base + N as u64).await;
    unload(node, "bench").await;
    unload(node, "seed000").await;
    Res::new("purge_100k_idle", median(&ts), "us")
}

#[inline(never)]
/// `fq_call_overhead`: a fully-qualified call `bench:inc(X)` through a `Function` handle
/// minus a local call of the same function (its entry point called directly, staying in
/// the version), both from module code with the same argument bytes, as Erlang's
/// `m:f(X)` against `f(X)`. What crossing the module boundary costs at all (encoding the
/// argument and result) is reported beside it.
async fn m_fq(node: &Node) -> Res {
    const N: u64 = 20_000_000;
    let me = node.external();
    let mut ds = Vec::new();
    let mut cross = Vec::new();
    for _ in 0..7 {
        node.spawn("bench", "fq_bench", &(me.pid(), N))
            .expect("spawn fq_bench");
        let m = me.recv(WAIT).await.expect("fq_bench reports");
        let t: FqTimes = match m.decode() {
            Ok(t) => t,
            Err(_) => panic!("fq_bench failed: {:?}", m.decode::<String>()),
        };
        info!(
            "fq: local {:.3} ns, fully-qualified {:.3} ns, plain Rust call {:.3} ns",
            t.local_ns, t.remote_ns, t.native_ns
        );
        ds.push(t.remote_ns - t.local_ns);
        cross.push(t.local_ns - t.native_ns);
    }
    info!(
        "info: crossing the module boundary (encode u64 argument and result, call, copy back): {:.1} ns per call over a plain Rust call",
        median(&cross)
    );
    Res::new("fq_call_overhead", median(&ds), "ns")
}

/// CPU time (user + system) this OS process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value for getrusage to overwrite.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// `idle_node_cpu` (issue 16): the CPU time of this node (the whole OS process) with
/// 10 000 idle `bench:idle` processes over 10 s, in percent of one core. Workers spin
/// before they park ([`hotswap_runtime::sched`]); at rest they must all be parked.
async fn m_idle_cpu(node: &Node) -> Res {
    const N: usize = 10_000;
    const WINDOW: Duration = Duration::from_secs(10);
    let pids: Vec<Pid> = (0..N)
        .map(|_| node.spawn("bench", "idle", &()).expect("spawn"))
        .collect();
    // Let every process reach its receive and park.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let parks = worker_parks();
    let (c0, t0) = (cpu_time(), Instant::now());
    tokio::time::sleep(WINDOW).await;
    let (cpu, wall) = (cpu_time() - c0, t0.elapsed());
    let parks = worker_parks() - parks;
    let pct = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    info!(
        "idle_node_cpu: {:.2} ms of CPU in {:.2} s with {N} idle processes; the workers parked {parks} times",
        cpu.as_secs_f64() * 1e3,
        wall.as_secs_f64()
    );
    let base = node.exited_count();
    for p in &pids {
        node.exit(*p, ExitReason::Kill);
    }
    wait_exited(node, base + N as u64).await;
    Res::new("idle_node_cpu", pct, "pct_core")
}

async fn load_run_purge(node: &Node, path: &Path) {
    node.code().load(path).await.expect("load");
    let base = node.exited_count();
    node.spawn("bench", "exit_now", &()).expect("spawn");
    wait_exited(node, base + 1).await;
    node.code().delete("bench").await.expect("delete");
    let r = node.code().purge("bench").await.expect("purge");
    assert!(r.pinned.is_none(), "version pinned: {:?}", r.pinned);
}

/// RSS kept per loaded-and-purged version. The growth is measured over ten intervals of
/// 100 cycles and the median interval is reported: a leak per version shows in every
/// interval, while a one-time step (glibc keeps one freed 4.7 MB file buffer in the top
/// chunk of a second worker's arena, which `malloc_trim` does not trim) shows in one.
async fn m_purged_memory(node: &Node, libs: &Libs) -> Res {
    const WARM: usize = 50;
    const INTERVALS: usize = 10;
    const PER: usize = 100;
    unload(node, "bench").await;
    for _ in 0..WARM {
        load_run_purge(node, &libs.bench).await;
    }
    let (r0, h0) = mem_snapshot().await;
    let (p0, f0) = (rss_parts(), node.code().freed_count());
    let maps0 = std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0);
    let t = Instant::now();
    let mut per_interval = Vec::new();
    let mut prev = r0;
    for _ in 0..INTERVALS {
        for _ in 0..PER {
            load_run_purge(node, &libs.bench).await;
        }
        let (r, _) = mem_snapshot().await;
        per_interval.push((r - prev) / PER as f64);
        prev = r;
    }
    let el = t.elapsed();
    let n = INTERVALS * PER;
    let (r1, h1) = mem_snapshot().await;
    let (p1, f1) = (rss_parts(), node.code().freed_count());
    let maps1 = std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0);
    info!(
        "purged_version_memory: {n} load/spawn/delete/purge cycles in {:.2} s; unmapped {} versions, pinned {}; mappings {maps0} -> {maps1}",
        el.as_secs_f64(),
        f1 - f0,
        node.code().pinned().len()
    );
    info!(
        "purged_version_memory: RSS growth per version in each interval of {PER}: {}",
        fmt_list(&per_interval, "bytes")
    );
    info!(
        "purged_version_memory: whole run: RSS {:+.0} KB (anon {:+.0}, file {:+.0}, shmem {:+.0}) = {:.0} B/version; C heap in use {:+.0} B/version",
        (r1 - r0) / 1024.0,
        (p1[0] - p0[0]) / 1024.0,
        (p1[1] - p0[1]) / 1024.0,
        (p1[2] - p0[2]) / 1024.0,
        (r1 - r0) / n as f64,
        (h1 - h0) / n as f64
    );
    Res::new("purged_version_memory", median(&per_interval), "bytes")
}

async fn run_ours(node: Node, libs: Libs, wanted: Vec<String>) -> Vec<Res> {
    let want = |m: &str| wanted.is_empty() || wanted.iter().any(|w| w == m);
    let want_group = |g: &str| group(g).iter().any(|m| want(m));
    let mut out = Vec::new();
    ensure_loaded(&node, "bench", &libs.bench).await;
    // Memory first, while the allocator is fresh.
    if want("idle_process_memory") {
        out.push(m_idle_memory(&node).await);
    }
    if want("spawn_exit_rate") {
        out.push(m_spawn_exit(&node).await);
    }
    if want("message_throughput") {
        out.push(m_throughput(&node).await);
    }
    if want("fq_call_overhead") {
        out.push(m_fq(&node).await);
    }
    if want("module_load") {
        out.push(m_module_load(&node, &libs).await);
    }
    if want("purge_100k_idle") {
        out.push(m_purge(&node, &libs).await);
    }
    if want("purged_version_memory") {
        out.push(m_purged_memory(&node, &libs).await);
    }
    if want("gen_server_idle_memory") {
        out.push(m_gs_idle_memory().await);
    }
    if want_group("gen_server_call") {
        out.extend(gen_server::m_call(&node, &libs).await);
    }
    if want_group("gen_server_calls") {
        out.extend(gen_server::m_calls(&node, &libs).await);
    }
    if want("gen_server_cast_throughput") {
        out.push(gen_server::m_cast(&node, &libs).await);
    }
    if want_group("gen_server_upgrade") {
        out.extend(gen_server::m_upgrade(&node, &libs).await);
    }
    if want_group("gen_server_upgrade_client_latency") {
        out.extend(gen_server::m_upgrade_latency(&node, &libs).await);
    }
    if want_group("module_heap") {
        out.extend(heap::m_alloc_calls(&libs).await);
    }
    if want("child_restart") {
        out.push(apps::m_child_restart(&node, &libs).await);
    }
    if want_group("tcp_echo") {
        out.extend(net::m_echo(&node, &libs).await);
    }
    if want_group("tcp_echo_ab") {
        out.extend(net::m_echo_ab(&libs).await);
    }
    if want_group("tcp_upgrade") {
        out.extend(net::m_upgrade_pause(&node, &libs).await);
    }
    if want("load_compat_check") {
        out.push(m_load_compat_check(&node, &libs).await);
    }
    if want("idle_node_cpu") {
        out.push(m_idle_cpu(&node).await);
    }
    if want("node_stop_10k") {
        // Real node processes: waiting for them blocks, so not on a runtime worker.
        let l = libs.clone();
        out.push(
            tokio::task::spawn_blocking(move || apps::m_node_stop(&l))
                .await
                .expect("node_stop_10k panicked"),
        );
    }
    if want_group("release") {
        out.extend(release::m_release(&libs, &want).await);
    }
    out.retain(|r| want(r.name));
    let stop = node.stop(Duration::from_secs(10)).await;
    if !stop.stuck.is_empty() || !node.code().pinned().is_empty() {
        info!(
            "warning: node stop left {} stuck process(es), {} pinned version(s)",
            stop.stuck.len(),
            node.code().pinned().len()
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// Erlang

/// What the Erlang side produced: the stdout measures, plus the extra numbers its stderr
/// reports that have a hotswap counterpart here.
struct ErlangRun {
    values: HashMap<String, (f64, String)>,
    extra: HashMap<&'static str, f64>,
}

enum Erlang {
    NotInstalled,
    Ran(ErlangRun),
}

/// The Erlang side's stderr lines worth keeping: `(prefix, key)`; the value is the number
/// after "median".
const ERLANG_EXTRA: &[(&str, &str)] = &[(
    "# info: plain spawn + poll process_count",
    "spawn_exit_plain",
)];

fn run_erlang(measures: &[&str]) -> Erlang {
    use std::io::BufRead;
    let script = repo_root().join("bench/erlang/compare.escript");
    let args: Vec<&str> = measures
        .iter()
        .copied()
        .filter(|m| MEASURES.iter().any(|x| x.name == *m && x.erlang))
        .collect();
    let mut run = ErlangRun {
        values: HashMap::new(),
        extra: HashMap::new(),
    };
    if args.is_empty() {
        return Erlang::Ran(run);
    }
    let child = Command::new("escript")
        .arg(&script)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Erlang::NotInstalled,
        Err(e) => {
            info!("cannot run escript: {e}");
            return Erlang::Ran(run);
        }
        Ok(c) => c,
    };
    info!("running escript {} {}", script.display(), args.join(" "));
    // Echo the Erlang side's diagnostics as they come, keeping the lines we parse.
    let stderr = child.stderr.take().expect("piped");
    let echo = std::thread::spawn(move || {
        let mut extra = HashMap::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("{line}");
            for (prefix, key) in ERLANG_EXTRA {
                if line.starts_with(prefix) {
                    let v = line
                        .split("median")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|x| x.parse::<f64>().ok());
                    if let Some(v) = v {
                        extra.insert(*key, v);
                    }
                }
            }
        }
        extra
    });
    let mut stdout = String::new();
    if let Some(mut o) = child.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut stdout);
    }
    match child.wait() {
        Ok(st) if !st.success() => info!("escript exited with {st}"),
        Err(e) => info!("waiting for escript: {e}"),
        _ => {}
    }
    run.extra = echo.join().unwrap_or_default();
    for line in stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [name, value, unit] = f[..] {
            if let Ok(v) = value.parse::<f64>() {
                run.values.insert(name.to_string(), (v, unit.to_string()));
            }
        }
    }
    Erlang::Ran(run)
}

fn erlang_version() -> Option<String> {
    let o = Command::new("erl")
        .args([
            "-noshell",
            "-eval",
            "io:format(\"~s\", [erlang:system_info(otp_release)]), halt().",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

// ---------------------------------------------------------------------------------------
// targets

enum Target {
    /// hotswap/erlang ratio at least this.
    RatioAtLeast(f64),
    /// hotswap/erlang ratio at most this.
    RatioAtMost(f64),
    /// hotswap value at most this (absolute, in the measure's unit).
    AtMost(f64),
    /// hotswap value at least this (absolute, in the measure's unit).
    AtLeast(f64),
    /// No target: the value is reported.
    Report,
}

fn target(name: &str) -> (Target, &'static str) {
    match name {
        "spawn_exit_rate" => (Target::RatioAtLeast(1.0), ">= 1x Erlang"),
        "idle_process_memory" => (Target::AtMost(1024.0), "<= 1 KB"),
        "message_throughput" => (Target::RatioAtLeast(1.5), ">= 1.5x Erlang"),
        "module_load" => (Target::RatioAtMost(0.5), "<= 0.5x Erlang"),
        "purge_100k_idle" => (Target::AtMost(1000.0), "<= 1 ms"),
        "fq_call_overhead" => (Target::AtMost(1.0), "<= +1 ns"),
        "purged_version_memory" => (Target::AtMost(1024.0), "<= 1 KB"),
        // issue 3; in brackets Erlang/OTP 25 on this machine kind, as the issue quotes it
        "gen_server_call_rtt" => (Target::RatioAtMost(0.5), "<= 0.5x Erlang [1.03 us]"),
        "gen_server_call_p99" => (Target::Report, "reported"),
        "gen_server_calls_1client" => (Target::RatioAtLeast(1.0), ">= 1x Erlang [962 k/s]"),
        "gen_server_calls_2clients" => (Target::RatioAtLeast(1.0), ">= 1x Erlang [609 k/s]"),
        "gen_server_cast_throughput" => (Target::RatioAtLeast(1.5), ">= 1.5x Erlang [8.45 M/s]"),
        "gen_server_idle_memory" => (
            Target::AtMost(1024.0 + gen_server::STATE_BYTES),
            "<= 1 KB + state (80 B) [2.7 KB]",
        ),
        "gen_server_upgrade_1000" | "gen_server_upgrade_10000" | "gen_server_upgrade_100000" => {
            (Target::RatioAtMost(0.5), "<= 0.5x Erlang [7.25 us]")
        }
        "gen_server_upgrade_client_latency" | "gen_server_upgrade_client_latency_p99" => {
            (Target::Report, "reported")
        }
        "gen_server_upgrade_client_latency_max" => {
            (Target::Report, "reported [Erlang max 68-80 ms]")
        }
        // issue 4
        "node_stop_10k" => (Target::AtMost(100.0), "<= 100 ms [Erlang 1 048 ms]"),
        "child_restart" => (Target::Report, "reported [Erlang ~10 us]"),
        // issue 12
        "load_compat_check" => (Target::AtMost(10.0), "<= 10 % of a load"),
        // issue 10: what module code pays for its version's own heap
        "module_heap_alloc_calls" | "module_heap_alloc_calls_system" => {
            (Target::Report, "reported")
        }
        "module_heap_alloc_ratio" => (Target::AtLeast(0.95), ">= 0.95 (<= 5% slower)"),
        // issue 11
        "release_upgrade_1000" | "release_upgrade_10000" | "release_upgrade_100000" => (
            Target::RatioAtMost(0.5),
            "<= 0.5x Erlang (release_handler relup)",
        ),
        "release_upgrade_client_latency" | "release_upgrade_client_latency_p99" => {
            (Target::Report, "reported")
        }
        // 0.5x of Erlang's 68-80 ms, in us.
        "release_upgrade_client_latency_max" => (
            Target::AtMost(34_000.0),
            "<= 34 ms (0.5x Erlang's 68-80 ms)",
        ),
        "release_rollback_10000" => (
            Target::Report,
            "reported [Erlang: a node restart, states lost]",
        ),
        // issue 13 (Erlang: gen_tcp {active, once} {packet, 4}, same client)
        "tcp_echo_rtt" | "tcp_echo_p99" => {
            (Target::RatioAtMost(1.0), "<= 1x Erlang, <= 1.3x tokio")
        }
        "tcp_echo_throughput" => (Target::RatioAtLeast(1.0), ">= 1x Erlang, >= 1/1.3 tokio"),
        "tcp_echo_readahead_rtt" | "tcp_echo_readahead_p99" => (
            Target::AtMost(1.0),
            "read-ahead on / off, interleaved: <= 1",
        ),
        "tcp_upgrade_pause" => (Target::Report, "reported (includes the 100 ms send period)"),
        "tcp_upgrade_lost_bytes" => (Target::AtMost(0.0), "= 0"),
        // issue 16: percent of one core
        "idle_node_cpu" => (Target::AtMost(1.0), "< 1 % of one core"),
        _ => (Target::AtMost(f64::INFINITY), "?"),
    }
}

fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    if wanted.first().map(String::as_str) == Some("--idle-child") {
        let kind = wanted.get(1).cloned().unwrap_or_default();
        idle_child_main(&kind, build_modules());
        return;
    }
    let mut expanded = Vec::new();
    for w in &wanted {
        let ms = group(w);
        if !ms.is_empty() {
            expanded.extend(ms.iter().map(|m| m.to_string()));
        } else if MEASURES.iter().any(|m| m.name == w) {
            expanded.push(w.clone());
        } else {
            let names: Vec<&str> = MEASURES.iter().map(|m| m.name).collect();
            eprintln!(
                "compare: unknown measure {w:?} (known: {}; groups: {})",
                names.join(" "),
                group_names().join(" ")
            );
            std::process::exit(2);
        }
    }
    let wanted = expanded;
    let libs = build_modules();
    if !hotswap_runtime::guard_active() {
        info!("warning: the thread-local guard is not exported by this executable; purged versions stay mapped");
    }
    let t0 = Instant::now();
    let rt = node_runtime(2);
    let ours = rt.block_on(async move {
        // `HS_BENCH_READ_AHEAD=0`: the node's TCP connections read only when their owner
        // asks (issue 13's variant without read-ahead; `compare tcp_echo_ab` compares both).
        let mut config = NodeConfig::default();
        if let Some(n) = std::env::var("HS_BENCH_READ_AHEAD")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            info!("node read-ahead {n} bytes (HS_BENCH_READ_AHEAD)");
            config.read_ahead = n;
        }
        let node = Node::start(config).expect("node starts");
        // The driver itself runs on a worker, so the whole workload uses the two workers.
        tokio::spawn(run_ours(node, libs, wanted))
            .await
            .expect("benchmarks panicked")
    });
    drop(rt);
    let mut ours = ours;
    ours.sort_by_key(|r| MEASURES.iter().position(|m| m.name == r.name));
    info!("hotswap side done in {:.1} s", t0.elapsed().as_secs_f64());

    let names: Vec<&str> = ours.iter().map(|r| r.name).collect();
    let erl = run_erlang(&names);
    let not_installed = matches!(erl, Erlang::NotInstalled);
    if not_installed {
        eprintln!("compare: Erlang/OTP is not installed (escript not on PATH): apt-get install -y erlang-nox");
    }
    let (mut erl, erl_extra) = match erl {
        Erlang::Ran(r) => (r.values, r.extra),
        Erlang::NotInstalled => (HashMap::new(), HashMap::new()),
    };
    let net_compared = net::COMPARED.lock().unwrap().clone();
    let mut tokio_vals = HashMap::new();
    for (name, e, t) in net_compared {
        let unit = ours.iter().find(|r| r.name == name).map_or("", |r| r.unit);
        if let Some(e) = e {
            erl.insert(name.to_string(), (e, unit.to_string()));
        }
        if let Some(t) = t {
            tokio_vals.insert(name, t);
        }
    }

    let mut summary = Vec::new();
    let mut extras = Vec::new();
    let name_w = ours.iter().map(|r| r.name.len()).max().unwrap_or(0).max(22);
    let desc_w = ours
        .iter()
        .map(|r| target(r.name).1.len())
        .max()
        .unwrap_or(0)
        .max(15);
    for r in &ours {
        let e = erl.get(r.name).map(|(v, _)| *v);
        let (estr, ratio) = match e {
            Some(e) => {
                // A ratio to a difference that is zero within noise (Erlang's
                // fully-qualified call overhead) means nothing: n/a.
                let floor = if r.name == "fq_call_overhead" {
                    0.1
                } else {
                    0.0
                };
                let ratio = (e > floor).then(|| r.value / e);
                (format!("{}{}", fmt_value(e, r.unit), r.unit), ratio)
            }
            None => ("n/a".to_string(), None),
        };
        let rstr = ratio
            .map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "n/a".into());
        let tokio_part = tokio_vals
            .get(r.name)
            .map(|t| {
                format!(
                    " tokio={}{} ratio_tokio={:.3}",
                    fmt_value(*t, r.unit),
                    r.unit,
                    r.value / t
                )
            })
            .unwrap_or_default();
        println!(
            "{} hotswap={}{} erlang={} ratio={}{tokio_part}",
            r.name,
            fmt_value(r.value, r.unit),
            r.unit,
            estr,
            rstr
        );
        let (t, tdesc) = target(r.name);
        let met = match t {
            Target::RatioAtLeast(x) => ratio.map(|q| q >= x),
            Target::RatioAtMost(x) => ratio.map(|q| q <= x),
            Target::AtMost(x) => Some(r.value <= x),
            Target::AtLeast(x) => Some(r.value >= x),
            Target::Report => None,
        };
        let verdict = match (met, &t) {
            (_, Target::Report) => "-",
            (Some(true), _) => "MET",
            (Some(false), _) => "MISSED",
            (None, _) => "unknown (no Erlang value)",
        };
        let detail = match t {
            Target::AtMost(_) | Target::AtLeast(_) | Target::Report => {
                format!("{}{}", fmt_value(r.value, r.unit), r.unit)
            }
            _ => format!("ratio {rstr}"),
        };
        summary.push(format!(
            "  {:<w$} target {:<t$} {:<8} ({detail})",
            r.name,
            tdesc,
            verdict,
            w = name_w,
            t = desc_w
        ));
        if let Some((key, v)) = r.extra {
            // A reload is compared with Erlang's load of the same binary.
            let e = match key {
                "module_reload" => erl.get("module_load").map(|(v, _)| *v),
                _ => erl_extra.get(key).copied(),
            };
            let es = e
                .map(|e| format!("{}{}", fmt_value(e, r.unit), r.unit))
                .unwrap_or_else(|| "n/a".into());
            let q = e
                .filter(|e| *e > 0.0)
                .map(|e| format!("{:.3}", v / e))
                .unwrap_or_else(|| "n/a".into());
            extras.push(format!(
                "  {key}: hotswap={}{} erlang={es} ratio={q}",
                fmt_value(v, r.unit),
                r.unit
            ));
        }
    }
    let otp = if not_installed {
        None
    } else {
        erlang_version()
    };
    eprintln!(
        "targets (hotswap on a 2-worker tokio runtime; Erlang/OTP {}):",
        otp.as_deref().unwrap_or("n/a")
    );
    for s in summary {
        eprintln!("{s}");
    }
    if !extras.is_empty() {
        eprintln!("for reference (not the headline workload):");
        for s in extras {
            eprintln!("{s}");
        }
    }
}

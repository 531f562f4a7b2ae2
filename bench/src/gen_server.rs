//! The `gen_server` measures of issue 3: call round trip, calls/s, cast throughput, memory
//! per idle server, upgrade of N servers, and client latency while servers are upgraded.
//!
//! Every server is the `upgrade_srv` fixture (`modules/common/upgrade_srv.rs`): state
//! `{calls: u64, migrations: u32, vsn: String}`, call `()` → `calls += 1` and reply `calls`,
//! cast `()` → `calls += 1`, `code_change` → `migrations += 1`, `vsn` = the new version.
//! Every client is a native process using the SDK (`hotswap::gen_server`, `hotswap::sys`);
//! the host API's `node.call`/`node.sys()` start a helper process per operation, which is
//! fine for setup but not what a process-to-process call costs.
//!
//! A native process's body is polled with a no-op waker: it can only wait for messages,
//! never for a tokio primitive. Processes report to host code through tokio channels
//! (sending needs no waker) and host code talks to them with `node.send`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap::gen_server::{self as gs, StartOpts};
use hotswap::{sys, Ctx};
use hotswap_runtime::{ExitReason, Node, Pid};

use super::{ensure_loaded, fmt_list, fmt_value, median, unload, Libs, Res, WAIT};

/// The fixture's module name (both versions).
pub(crate) const MODULE: &str = "upgrade_srv";

/// What one idle `upgrade_srv` state costs on the module's (glibc) heap: `Box<Counter>` is
/// 40 bytes (a 48-byte chunk), its `vsn` buffer of 1 byte takes the 32-byte minimum chunk.
pub(crate) const STATE_BYTES: f64 = 80.0;

/// Mirror of the fixture's state.
#[derive(serde::Deserialize, Debug)]
struct Counter {
    calls: u64,
    migrations: u32,
    vsn: String,
}

/// Call timeout of the measuring clients: long enough for any upgrade window.
const CALL_TIMEOUT: Option<Duration> = Some(Duration::from_secs(60));

// ---------------------------------------------------------------------------------------
// helpers

/// Run `f` in a fresh native process; its result.
async fn in_process<T, F, Fut>(node: &Node, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| {
        let fut = f(ctx);
        async move {
            let _ = tx.send(fut.await);
        }
    })
    .expect("spawn_native");
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("a measuring process timed out")
        .expect("a measuring process died")
}

/// Nearest-rank percentile of sorted values (as the escript computes it).
fn percentile(sorted: &[u64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let k = ((p * n as f64).ceil() as usize).clamp(1, n);
    sorted[k - 1] as f64
}

/// Start `n` servers of the current version from one process (sequentially, each start
/// waits for `init`). Progress goes to stderr for large `n`.
async fn start_servers(node: &Node, n: usize) -> Vec<Pid> {
    let t = Instant::now();
    let pids = in_process(node, move |ctx| async move {
        let mut pids = Vec::with_capacity(n);
        for i in 0..n {
            let p = gs::start(&ctx, MODULE, &(), StartOpts::default())
                .await
                .expect("start upgrade_srv");
            pids.push(p);
            if n >= 50_000 && (i + 1) % 25_000 == 0 {
                info!("  started {}/{n} servers", i + 1);
            }
        }
        pids
    })
    .await;
    if n >= 10_000 {
        info!(
            "  started {n} servers in {:.2} s ({:.1} us each)",
            t.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
    pids
}

/// Kill `pids` and wait until each is gone (by pid: other processes, such as a measuring
/// process finishing, may exit meanwhile, so `exited_count` alone could return early while
/// a server still holds its module version).
async fn kill_all(node: &Node, pids: &[Pid]) {
    for p in pids {
        node.exit(*p, ExitReason::Kill);
    }
    let deadline = Instant::now() + WAIT;
    for p in pids {
        while node.is_alive(*p) {
            assert!(Instant::now() < deadline, "{p} did not exit");
            tokio::task::yield_now().await;
        }
    }
}

/// A fresh `upgrade_srv` v1 (every version unloaded first).
async fn fresh_v1(node: &Node, libs: &Libs) {
    unload(node, MODULE).await;
    node.code()
        .load(&libs.upsrv1)
        .await
        .expect("load upgrade_srv v1");
}

/// xorshift64*: random server indexes for the latency clients.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

// ---------------------------------------------------------------------------------------
// call round trip

/// How a client's loop of calls is timed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum CallLoop {
    /// Every call timed with `Instant::now()`, default 5 s timeout (the headline).
    Timed,
    /// Every call timed, no timeout (`call_timeout(.., None)`).
    TimedNoTimeout,
    /// Not timed one by one: elapsed / N.
    Untimed,
}

/// `n` calls to `pid` from one fresh process: the sorted per-call times (ns), or for
/// [`CallLoop::Untimed`] one value, the mean.
async fn call_loop(node: &Node, pid: Pid, n: usize, how: CallLoop) -> Vec<u64> {
    in_process(node, move |ctx| async move {
        let mut v = Vec::with_capacity(if how == CallLoop::Untimed { 1 } else { n });
        let t0 = Instant::now();
        let mut last = 0u64;
        for _ in 0..n {
            let t = Instant::now();
            let r: u64 = match how {
                CallLoop::TimedNoTimeout => gs::call_timeout(&ctx, pid, &(), None).await,
                _ => gs::call(&ctx, pid, &()).await,
            }
            .expect("call");
            if how != CallLoop::Untimed {
                v.push(t.elapsed().as_nanos() as u64);
            }
            assert!(r > last, "replies count up");
            last = r;
        }
        if how == CallLoop::Untimed {
            v.push(t0.elapsed().as_nanos() as u64 / n as u64);
        }
        v.sort_unstable();
        v
    })
    .await
}

/// `gen_server_call_rtt` and `gen_server_call_p99`: one client process calling one server,
/// 200 000 timed calls per round; median and p99 per round, medians over 5 rounds.
pub(crate) async fn m_call(node: &Node, libs: &Libs) -> Vec<Res> {
    const N: usize = 200_000;
    ensure_loaded(node, MODULE, &libs.upsrv1).await;
    let pid = node
        .start_server(MODULE, &(), StartOpts::default())
        .await
        .expect("start");
    call_loop(node, pid, N, CallLoop::Timed).await; // warm-up
    let (mut meds, mut p99s) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let parks = crate::worker_parks();
        let v = call_loop(node, pid, N, CallLoop::Timed).await;
        let parks = crate::worker_parks() - parks;
        meds.push(percentile(&v, 0.5));
        p99s.push(percentile(&v, 0.99));
        info!(
            "gen_server_call round: median {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns, max {:.0} us; workers parked {:.2} times per 1000 calls",
            percentile(&v, 0.5),
            percentile(&v, 0.9),
            percentile(&v, 0.99),
            percentile(&v, 0.999),
            percentile(&v, 1.0) / 1000.0,
            parks as f64 * 1000.0 / N as f64
        );
    }
    let mut no_to = Vec::new();
    let mut mean = Vec::new();
    for _ in 0..3 {
        no_to.push(percentile(
            &call_loop(node, pid, N, CallLoop::TimedNoTimeout).await,
            0.5,
        ));
        mean.push(call_loop(node, pid, N, CallLoop::Untimed).await[0] as f64);
    }
    info!(
        "info: gen_server_call without a timeout (call_timeout None): median {} ns {}",
        fmt_value(median(&no_to), "ns"),
        fmt_list(&no_to, "ns")
    );
    info!(
        "info: gen_server_call untimed loop, elapsed / N: {} ns {}",
        fmt_value(median(&mean), "ns"),
        fmt_list(&mean, "ns")
    );
    kill_all(node, &[pid]).await;
    let (one_timed, one_plain) = one_worker_rtt(libs);
    info!(
        "info: the same on a 1-worker runtime (client and server on one thread, no cross-thread wake-ups): median {} ns, without a timeout {} ns",
        fmt_value(one_timed, "ns"),
        fmt_value(one_plain, "ns")
    );
    let (enc, clock) = codec_and_clock_costs();
    info!(
        "info: in a call, the codec's share (encode the () request, decode it, encode the u64 reply, decode it; hotswap::codec): {enc:.1} ns; one Instant::now(): {clock:.1} ns"
    );
    vec![
        Res::new("gen_server_call_rtt", median(&meds), "ns"),
        Res::new("gen_server_call_p99", median(&p99s), "ns"),
    ]
}

/// Medians of per-call times on a separate node on a 1-worker runtime (in its own
/// thread): `(with the default timeout, without a timeout)`. Where the 2-worker figure
/// differs, the difference is threads waking each other.
fn one_worker_rtt(libs: &Libs) -> (f64, f64) {
    const N: usize = 200_000;
    let path = libs.upsrv1.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hs-one-worker")
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async move {
            tokio::spawn(async move {
                let node = Node::start(hotswap_runtime::NodeConfig::default()).expect("node");
                node.code().load(&path).await.expect("load upgrade_srv");
                let pid = node
                    .start_server(MODULE, &(), StartOpts::default())
                    .await
                    .expect("start");
                call_loop(&node, pid, N, CallLoop::Timed).await; // warm-up
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..3 {
                    a.push(percentile(
                        &call_loop(&node, pid, N, CallLoop::Timed).await,
                        0.5,
                    ));
                    b.push(percentile(
                        &call_loop(&node, pid, N, CallLoop::TimedNoTimeout).await,
                        0.5,
                    ));
                }
                node.stop(Duration::from_secs(10)).await;
                (median(&a), median(&b))
            })
            .await
            .expect("1-worker round")
        })
    })
    .join()
    .expect("1-worker thread")
}

/// The codec work of one call (the client encodes `()`, the module decodes it, encodes
/// the `u64` reply, the client decodes it), and the cost of one `Instant::now()`; ns.
fn codec_and_clock_costs() -> (f64, f64) {
    use std::hint::black_box;
    const N: u64 = 2_000_000;
    let t = Instant::now();
    for i in 0..N {
        let req = hotswap::codec::encode(black_box(&()));
        let () = hotswap::codec::decode(black_box(&req)).expect("decode");
        let rep = hotswap::codec::encode(black_box(&i));
        let r: u64 = hotswap::codec::decode(black_box(&rep)).expect("decode");
        black_box(r);
    }
    let enc = t.elapsed().as_nanos() as f64 / N as f64;
    let t = Instant::now();
    for _ in 0..N {
        black_box(Instant::now());
    }
    (enc, t.elapsed().as_nanos() as f64 / N as f64)
}

// ---------------------------------------------------------------------------------------
// calls per second

/// `clients` processes, each making `n` calls to `pid`; total calls / elapsed (from before
/// the first spawn to the last client's end).
async fn calls_round(node: &Node, pid: Pid, clients: usize, n: usize) -> f64 {
    let t = Instant::now();
    let mut rxs = Vec::new();
    for _ in 0..clients {
        let (tx, rx) = tokio::sync::oneshot::channel();
        node.spawn_native(move |ctx| async move {
            for _ in 0..n {
                let _: u64 = gs::call(&ctx, pid, &()).await.expect("call");
            }
            let _ = tx.send(Instant::now());
        })
        .expect("spawn_native");
        rxs.push(rx);
    }
    let mut end = t;
    for rx in rxs {
        let e = tokio::time::timeout(WAIT, rx)
            .await
            .expect("client timed out")
            .expect("client died");
        end = end.max(e);
    }
    (clients * n) as f64 / (end - t).as_secs_f64()
}

/// `gen_server_calls_1client` / `_2clients`: 1 or 2 clients, 200 000 calls each, to one
/// shared server (as the escript does). Median of 5.
pub(crate) async fn m_calls(node: &Node, libs: &Libs) -> Vec<Res> {
    const N: usize = 200_000;
    ensure_loaded(node, MODULE, &libs.upsrv1).await;
    let pid = node
        .start_server(MODULE, &(), StartOpts::default())
        .await
        .expect("start");
    let mut out = Vec::new();
    for (clients, name) in [
        (1, "gen_server_calls_1client"),
        (2, "gen_server_calls_2clients"),
    ] {
        calls_round(node, pid, clients, N).await; // warm-up
        let mut rs = Vec::new();
        for _ in 0..5 {
            rs.push(calls_round(node, pid, clients, N).await);
        }
        info!(
            "{name} rounds ({clients} client(s) x {N} calls, one server): {}",
            fmt_list(&rs, "per_s")
        );
        out.push(Res::new(name, median(&rs), "per_s"));
    }
    kill_all(node, &[pid]).await;
    out
}

// ---------------------------------------------------------------------------------------
// cast throughput

/// A fresh server; one process casts `n` times, then calls (the reply must be `n + 1`).
/// Returns `(casts/s, time of the casts alone / n in ns)`.
async fn cast_round(node: &Node, n: u64) -> (f64, f64) {
    let pid = node
        .start_server(MODULE, &(), StartOpts::default())
        .await
        .expect("start");
    let (busy0, parks0) = (crate::worker_busy(), crate::worker_parks());
    let (el, sent) = in_process(node, move |ctx| async move {
        let t = Instant::now();
        for _ in 0..n {
            gs::cast(&ctx, pid, &());
        }
        let sent = t.elapsed();
        let r: u64 = gs::call_timeout(&ctx, pid, &(), CALL_TIMEOUT)
            .await
            .expect("call");
        assert_eq!(r, n + 1, "every cast was handled before the call");
        (t.elapsed(), sent)
    })
    .await;
    let busy: Vec<String> = crate::worker_busy()
        .iter()
        .zip(&busy0)
        .map(|(b, b0)| format!("{:.0}", (*b - *b0).as_secs_f64() * 1e3))
        .collect();
    info!(
        "  cast round: {:.0} per_s, sender {:.1} ns per cast, workers busy [{}] ms of {:.0} ms, parked {} times",
        n as f64 / el.as_secs_f64(),
        sent.as_nanos() as f64 / n as f64,
        busy.join(", "),
        el.as_secs_f64() * 1e3,
        crate::worker_parks() - parks0
    );
    kill_all(node, &[pid]).await;
    (
        n as f64 / el.as_secs_f64(),
        sent.as_nanos() as f64 / n as f64,
    )
}

/// `gen_server_cast_throughput`: 2 000 000 casts then one call, a fresh server per round.
/// Median of 5.
pub(crate) async fn m_cast(node: &Node, libs: &Libs) -> Res {
    const N: u64 = 2_000_000;
    ensure_loaded(node, MODULE, &libs.upsrv1).await;
    cast_round(node, N).await; // warm-up
    let (mut rs, mut send) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let (r, s) = cast_round(node, N).await;
        rs.push(r);
        send.push(s);
    }
    info!(
        "gen_server_cast_throughput rounds ({N} casts + 1 call): {}",
        fmt_list(&rs, "per_s")
    );
    info!(
        "info: the sender's loop alone (encode + post): {:.1} ns per cast",
        median(&send)
    );
    Res::new("gen_server_cast_throughput", median(&rs), "per_s")
}

// ---------------------------------------------------------------------------------------
// idle memory

/// Start `pids.len()` servers from one process, filling `pids` (allocated by the caller,
/// so it is not counted).
pub(crate) async fn start_into(node: &Node, mut pids: Vec<Pid>) -> Vec<Pid> {
    in_process(node, move |ctx| async move {
        for p in pids.iter_mut() {
            *p = gs::start(&ctx, MODULE, &(), StartOpts::default())
                .await
                .expect("start upgrade_srv");
        }
        pids
    })
    .await
}

// ---------------------------------------------------------------------------------------
// upgrade

/// What the upgrade orchestrator reports to host code.
enum Report {
    /// Every server acknowledged `suspend`.
    Suspended,
    /// Every server was changed and resumed: `(start, suspended, loaded seen, changed, end)`.
    Done([Instant; 5]),
}

/// Apply `op` to every pid: one after the other (`depth` 1), or `depth` requests in flight
/// together (a chunk is posted, then its replies collected).
async fn each<F, Fut>(pids: &[Pid], depth: usize, what: &str, op: F)
where
    F: Fn(Pid) -> Fut,
    Fut: Future<Output = Result<(), sys::SysError>>,
{
    if depth <= 1 {
        for p in pids {
            op(*p).await.unwrap_or_else(|e| panic!("{what} {p}: {e}"));
        }
        return;
    }
    for chunk in pids.chunks(depth) {
        let mut futs: Vec<_> = chunk.iter().map(|p| Some(Box::pin(op(*p)))).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, p) in futs.iter_mut().zip(chunk) {
                if let Some(fut) = f {
                    match fut.as_mut().poll(cx) {
                        std::task::Poll::Ready(r) => {
                            r.unwrap_or_else(|e| panic!("{what} {p}: {e}"));
                            *f = None;
                        }
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
    }
}

/// One upgrade window from inside a native process: suspend all → (host loads) → change
/// code all → resume all, `depth` requests in flight (1: sequential, as release_handler
/// does). Waits for a `u8` message from host code after `Suspended`.
async fn upgrade_window(
    ctx: &Ctx,
    pids: &[Pid],
    old_vsn: &str,
    depth: usize,
    report: &tokio::sync::mpsc::UnboundedSender<Report>,
) {
    let t = sys::DEFAULT_TIMEOUT;
    let t0 = Instant::now();
    each(pids, depth, "suspend", |p| sys::suspend(ctx, p, t)).await;
    let t1 = Instant::now();
    let _ = report.send(Report::Suspended);
    let _: u8 = ctx.receive().await;
    let t2 = Instant::now();
    each(pids, depth, "change_code", |p| {
        sys::change_code(ctx, p, MODULE, old_vsn, None, t)
    })
    .await;
    let t3 = Instant::now();
    each(pids, depth, "resume", |p| sys::resume(ctx, p, t)).await;
    let _ = report.send(Report::Done([t0, t1, t2, t3, Instant::now()]));
}

async fn next_report(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Report>) -> Report {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("upgrade orchestrator timed out")
        .expect("upgrade orchestrator died")
}

/// Drive one window from host code: wait until every orchestrator has suspended its
/// servers, load `path`, let them go on; the window's five instants (the earliest start,
/// then the latest of each phase's end) and the load time.
async fn drive_window(
    node: &Node,
    orchs: &[Pid],
    path: &std::path::Path,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Report>,
) -> ([Instant; 5], Duration) {
    for _ in orchs {
        let Report::Suspended = next_report(rx).await else {
            panic!("expected Suspended")
        };
    }
    let tl = Instant::now();
    node.code().load(path).await.expect("load the new version");
    let load = tl.elapsed();
    for o in orchs {
        node.send(*o, &1u8);
    }
    let mut all: Option<[Instant; 5]> = None;
    for _ in orchs {
        let Report::Done(ts) = next_report(rx).await else {
            panic!("expected Done")
        };
        all = Some(match all {
            None => ts,
            Some(a) => std::array::from_fn(|i| {
                if i == 0 {
                    a[0].min(ts[0])
                } else {
                    a[i].max(ts[i])
                }
            }),
        });
    }
    (all.expect("at least one orchestrator"), load)
}

/// Check every state: `migrations` and `vsn` as expected; returns the states' `calls`.
async fn verify(node: &Node, pids: Arc<Vec<Pid>>, migrations: u32, vsn: &'static str) -> Vec<u64> {
    in_process(node, move |ctx| async move {
        let mut calls = Vec::with_capacity(pids.len());
        let mut bad = 0usize;
        for p in pids.iter() {
            let s: Counter = sys::get_state(&ctx, *p, sys::DEFAULT_TIMEOUT)
                .await
                .expect("get_state");
            if s.migrations != migrations || s.vsn != vsn {
                bad += 1;
            }
            calls.push(s.calls);
        }
        assert_eq!(
            bad,
            0,
            "{bad} of {} states not migrated (want migrations {migrations}, vsn {vsn})",
            pids.len()
        );
        calls
    })
    .await
}

/// One timed upgrade of `n` fresh v1 servers to v2 by `k` orchestrator processes (each
/// one a slice of the servers, `depth` requests in flight); per-phase seconds `[suspend,
/// load (host) + hand-over, change_code, resume, total]`, and the load alone.
async fn upgrade_round(
    node: &Node,
    libs: &Libs,
    n: usize,
    k: usize,
    depth: usize,
) -> ([f64; 5], f64) {
    fresh_v1(node, libs).await;
    let pids = Arc::new(start_servers(node, n).await);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut orchs = Vec::new();
    for i in 0..k {
        let (ps, tx) = (pids.clone(), tx.clone());
        let (a, b) = (i * n / k, (i + 1) * n / k);
        orchs.push(
            node.spawn_native(move |ctx| async move {
                upgrade_window(&ctx, &ps[a..b], "1", depth, &tx).await;
            })
            .expect("spawn_native"),
        );
    }
    let (ts, load) = drive_window(node, &orchs, &libs.upsrv2, &mut rx).await;
    let calls = verify(node, pids.clone(), 1, "2").await;
    assert!(calls.iter().all(|c| *c == 0), "no calls were made");
    kill_all(node, &pids).await;
    unload(node, MODULE).await;
    let s = |a: usize, b: usize| (ts[b] - ts[a]).as_secs_f64();
    (
        [s(0, 1), s(1, 2), s(2, 3), s(3, 4), s(0, 4)],
        load.as_secs_f64(),
    )
}

/// `gen_server_upgrade_1000/10000/100000`: per process, suspend all → load v2 →
/// change_code all → resume all, from one native process (sequential, as release_handler
/// does); every state verified afterwards (untimed). Median of 5 (1k, 10k) / 3 (100k).
pub(crate) async fn m_upgrade(node: &Node, libs: &Libs) -> Vec<Res> {
    let mut out = Vec::new();
    upgrade_round(node, libs, 1000, 1, 1).await; // warm-up
    for (n, rounds, name) in [
        (1_000, 5, "gen_server_upgrade_1000"),
        (10_000, 5, "gen_server_upgrade_10000"),
        (100_000, 3, "gen_server_upgrade_100000"),
    ] {
        let mut per = Vec::new();
        let mut phases: [Vec<f64>; 4] = Default::default();
        let mut loads = Vec::new();
        for r in 0..rounds {
            let (p, load) = upgrade_round(node, libs, n, 1, 1).await;
            let us = |x: f64| x * 1e6 / n as f64;
            per.push(us(p[4]));
            for (i, v) in phases.iter_mut().enumerate() {
                v.push(us(p[i]));
            }
            loads.push(load * 1e6);
            if n >= 100_000 {
                info!(
                    "  {name} round {}/{rounds}: {:.3} us/process",
                    r + 1,
                    us(p[4])
                );
            }
        }
        info!(
            "{name} rounds (us/process): {}",
            fmt_list(&per, "us_per_process")
        );
        info!(
            "info: {name} phases, medians in us/process: suspend {:.3}, load + hand-over {:.3} (the load alone {:.0} us in all), change_code {:.3}, resume {:.3}",
            median(&phases[0]),
            median(&phases[1]),
            median(&loads),
            median(&phases[2]),
            median(&phases[3])
        );
        out.push(Res::new(name, median(&per), "us_per_process"));
    }
    // Not the headline (release_handler is sequential): two orchestrators, one per worker;
    // and one orchestrator with 32 requests in flight (what a batched sys API would do).
    for (k, depth, what) in [
        (
            2,
            1,
            "by 2 orchestrator processes in parallel (half the servers each)",
        ),
        (1, 32, "by one process with 32 sys requests in flight"),
    ] {
        for (n, rounds) in [(10_000, 3), (100_000, 2)] {
            let mut per = Vec::new();
            for _ in 0..rounds {
                per.push(upgrade_round(node, libs, n, k, depth).await.0[4] * 1e6 / n as f64);
            }
            info!(
                "info: gen_server_upgrade_{n} {what}: {} us/process {}",
                fmt_value(median(&per), "us_per_process"),
                fmt_list(&per, "us_per_process")
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// client latency during upgrades

/// What one latency client measured.
struct ClientLog {
    /// `(start, end)` of every call, in ns since the common origin.
    calls: Vec<(u64, u64)>,
    /// Calls made to each server (by index).
    per_server: Vec<u64>,
}

/// `gen_server_upgrade_client_latency` (median), `_p99`, `_max`: 10 000 servers, 2 client
/// processes calling random servers continuously, 10 upgrade windows (suspend all → load
/// → change_code all → resume all; v1 and v2 alternately, the old version purged between
/// windows). Reported: the latency of the calls that overlap a window. Afterwards every
/// server's `calls` must equal the calls the clients made to it, and its `migrations` 10.
pub(crate) async fn m_upgrade_latency(node: &Node, libs: &Libs) -> Vec<Res> {
    const N: usize = 10_000;
    const WINDOWS: usize = 10;
    const CLIENTS: u64 = 2;
    const GAP: Duration = Duration::from_millis(100);
    fresh_v1(node, libs).await;
    let pids = Arc::new(start_servers(node, N).await);
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (pids, stop) = (pids.clone(), stop.clone());
        node.spawn_native(move |ctx| async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (c + 1));
            let mut log = ClientLog {
                calls: Vec::with_capacity(1 << 20),
                per_server: vec![0; pids.len()],
            };
            while !stop.load(Ordering::Relaxed) {
                let i = rng.below(pids.len());
                let t = origin.elapsed().as_nanos() as u64;
                let _: u64 = gs::call_timeout(&ctx, pids[i], &(), CALL_TIMEOUT)
                    .await
                    .expect("call during upgrades");
                log.calls.push((t, origin.elapsed().as_nanos() as u64));
                log.per_server[i] += 1;
            }
            let _ = tx.send(log);
        })
        .expect("spawn_native");
        clients.push(rx);
    }
    // The orchestrator runs one window per `String` (the old version) it receives.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let ps = pids.clone();
    let orch = node
        .spawn_native(move |ctx| async move {
            loop {
                let old: String = ctx.receive().await;
                if old.is_empty() {
                    break;
                }
                upgrade_window(&ctx, &ps, &old, 1, &tx).await;
            }
        })
        .expect("spawn_native");
    let mut windows = Vec::new();
    let mut purges = Vec::new();
    let mut durs = Vec::new();
    let ns = |i: Instant| (i - origin).as_nanos() as u64;
    for w in 0..WINDOWS {
        tokio::time::sleep(GAP).await;
        if node.code().module(MODULE).is_some_and(|m| m.old.is_some()) {
            let t = Instant::now();
            let r = node.code().purge(MODULE).await.expect("purge");
            purges.push((ns(t), ns(Instant::now())));
            assert!(
                r.killed.is_empty() && r.pinned.is_none(),
                "the purge between windows killed servers: {r:?}"
            );
        }
        let (old, path) = if w % 2 == 0 {
            ("1", &libs.upsrv2)
        } else {
            ("2", &libs.upsrv1)
        };
        node.send(orch, &old.to_string());
        let (ts, _) = drive_window(node, &[orch], path, &mut rx).await;
        windows.push((ns(ts[0]), ns(ts[4])));
        durs.push((ts[4] - ts[0]).as_secs_f64() * 1e3);
    }
    tokio::time::sleep(GAP).await;
    node.send(orch, &String::new());
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for rx in clients {
        logs.push(
            tokio::time::timeout(WAIT, rx)
                .await
                .expect("client timed out")
                .expect("client died"),
        );
    }
    let last_vsn = if WINDOWS % 2 == 1 { "2" } else { "1" };
    let calls = verify(node, pids.clone(), WINDOWS as u32, last_vsn).await;
    let mut made = vec![0u64; N];
    for l in &logs {
        for (m, k) in made.iter_mut().zip(&l.per_server) {
            *m += k;
        }
    }
    assert_eq!(
        calls, made,
        "every server counted exactly the calls made to it"
    );
    let (mut during, mut purging, mut outside) = (Vec::new(), Vec::new(), Vec::new());
    let overlaps = |v: &[(u64, u64)], s: u64, e: u64| v.iter().any(|&(a, b)| s < b && e > a);
    for l in &logs {
        for &(s, e) in &l.calls {
            let lat = e - s;
            if overlaps(&windows, s, e) {
                during.push(lat);
            } else if overlaps(&purges, s, e) {
                purging.push(lat);
            } else {
                outside.push(lat);
            }
        }
    }
    during.sort_unstable();
    purging.sort_unstable();
    outside.sort_unstable();
    let pms: Vec<f64> = purges.iter().map(|(a, b)| (b - a) as f64 / 1e6).collect();
    let total: u64 = made.iter().sum();
    info!(
        "gen_server_upgrade_client_latency: {WINDOWS} windows of {N} servers, {CLIENTS} clients, {total} calls (all counted, all states migrated {WINDOWS} times); window lengths ms: {}",
        fmt_list(&durs, "ms")
    );
    let us = |v: &[u64], p: f64| percentile(v, p) / 1000.0;
    info!(
        "gen_server_upgrade_client_latency: {} calls overlapping a window: median {:.1} us, p99 {:.1} us, max {:.1} us",
        during.len(),
        us(&during, 0.5),
        us(&during, 0.99),
        us(&during, 1.0)
    );
    info!(
        "info: {} calls overlapping the purge of the old version between windows (purges took {} ms): median {:.1} us, p99 {:.1} us, max {:.1} us",
        purging.len(),
        fmt_list(&pms, "ms"),
        us(&purging, 0.5),
        us(&purging, 0.99),
        us(&purging, 1.0)
    );
    info!(
        "info: {} other calls: median {:.1} us, p99 {:.1} us, max {:.1} us",
        outside.len(),
        us(&outside, 0.5),
        us(&outside, 0.99),
        us(&outside, 1.0)
    );
    kill_all(node, &pids).await;
    unload(node, MODULE).await;
    vec![
        Res::new("gen_server_upgrade_client_latency", us(&during, 0.5), "us"),
        Res::new(
            "gen_server_upgrade_client_latency_p99",
            us(&during, 0.99),
            "us",
        ),
        Res::new(
            "gen_server_upgrade_client_latency_max",
            us(&during, 1.0),
            "us",
        ),
    ]
}

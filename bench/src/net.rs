//! Issue 13's TCP measures: `tcp_echo_rtt` (with `tcp_echo_p99`) and `tcp_echo_throughput`
//! against three echo servers with `{packet, 4}` framing: hotswap's (`port_echo`, a
//! gen_server owning its connections in `{active, once}`), Erlang's (`gen_tcp`, one process
//! per connection in `{active, once}`, `bench/erlang/tcp_echo.escript`) and a plain tokio
//! server written here (the floor). The same Rust client, on a thread of its own, drives
//! all three. `tcp_upgrade_pause`: 1 000 connections streaming to the chat example while
//! its servers are upgraded; the longest gap a client saw and the bytes lost.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hotswap_runtime::{Node, NodeConfig, Pid, StartOpts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::netload::{self, Load, LoadConfig};
use crate::{median, Libs, Res};

/// The other servers' figures for one measure: `(measure, erlang, tokio)`.
pub(crate) type Compared = (&'static str, Option<f64>, Option<f64>);

/// The other servers' figures, by measure.
pub(crate) static COMPARED: Mutex<Vec<Compared>> = Mutex::new(Vec::new());

const PAYLOAD: usize = 64;
const RTT_PINGS: usize = 20_000;
const TP_CONNS: usize = 100;
const TP_SECS: f64 = 2.0;
const TP_ROUNDS: usize = 3;

/// Run `f` on a client runtime of its own (one thread), so that the client never competes
/// with the server for the server's workers.
async fn on_client<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let _ = tx.send(rt.block_on(f()));
    });
    rx.await.expect("the client thread finished")
}

async fn ping(s: &mut TcpStream, frame: &[u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
    s.write_all(frame).await?;
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await?;
    buf.resize(u32::from_be_bytes(h) as usize, 0);
    s.read_exact(buf).await?;
    Ok(())
}

fn frame() -> Vec<u8> {
    let mut f = (PAYLOAD as u32).to_be_bytes().to_vec();
    f.extend(std::iter::repeat_n(0x5Au8, PAYLOAD));
    f
}

/// One connection's ping-pong round trips, in microseconds (sorted).
async fn rtt(addr: String) -> Vec<f64> {
    let mut v = rtt_n(addr, 2_000, RTT_PINGS).await;
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// One connection: `warm` round trips, then `n` measured ones (microseconds, in order).
async fn rtt_n(addr: String, warm: usize, n: usize) -> Vec<f64> {
    on_client(move || async move {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        let (f, mut buf) = (frame(), Vec::new());
        for _ in 0..warm {
            ping(&mut s, &f, &mut buf).await.expect("warm-up ping");
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            ping(&mut s, &f, &mut buf).await.expect("ping");
            v.push(t.elapsed().as_nanos() as f64 / 1e3);
        }
        v
    })
    .await
}

/// `TP_CONNS` closed-loop connections for `TP_SECS`: frames echoed per second.
async fn throughput(addr: String) -> f64 {
    on_client(move || async move {
        let mut conns = Vec::new();
        for _ in 0..TP_CONNS {
            let s = TcpStream::connect(&addr).await.expect("connect");
            s.set_nodelay(true).unwrap();
            conns.push(s);
        }
        let start = Instant::now() + Duration::from_millis(300);
        let end = start + Duration::from_secs_f64(TP_SECS);
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let (f, mut buf) = (frame(), Vec::new());
                    let mut n = 0u64;
                    loop {
                        ping(&mut s, &f, &mut buf).await.expect("ping");
                        let now = Instant::now();
                        if now >= end {
                            return n;
                        }
                        if now >= start {
                            n += 1;
                        }
                    }
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("client task");
        }
        total as f64 / TP_SECS
    })
    .await
}

struct Figures {
    rtt: Vec<f64>,
    tp: Vec<f64>,
}

async fn measure(addr: &str) -> Figures {
    let rtt = rtt(addr.to_string()).await;
    let mut tp = Vec::new();
    for _ in 0..TP_ROUNDS {
        tp.push(throughput(addr.to_string()).await);
    }
    Figures { rtt, tp }
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The plain tokio echo server (on the bench's runtime, as the node is).
async fn tokio_server() -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().unwrap().to_string();
    let h = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut h = [0u8; 4];
                    if s.read_exact(&mut h).await.is_err() {
                        return;
                    }
                    buf.resize(4 + u32::from_be_bytes(h) as usize, 0);
                    buf[..4].copy_from_slice(&h);
                    if s.read_exact(&mut buf[4..]).await.is_err() {
                        return;
                    }
                    if s.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, h)
}

/// The Erlang echo server: the child (its stdin closing stops it) and its address.
fn erlang_server() -> Option<(std::process::Child, String)> {
    let script = crate::repo_root().join("bench/erlang/tcp_echo.escript");
    let mut c = Command::new("escript")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let port: u16 = line.trim().parse().ok()?;
    Some((c, format!("127.0.0.1:{port}")))
}

#[derive(serde::Serialize)]
struct EchoArg {
    addr: String,
}

#[derive(serde::Serialize)]
enum EchoCall {
    Info,
}

fn report(who: &str, f: &Figures) {
    info!(
        "tcp_echo {who}: rtt median {:.1} us p99 {:.1} us (of {RTT_PINGS}); throughput {} frames/s (rounds {:?})",
        pct(&f.rtt, 0.5),
        pct(&f.rtt, 0.99),
        median(&f.tp).round(),
        f.tp.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
}

/// Start a `port_echo` server on `node`: its pid and address.
async fn start_echo(node: &Node, libs: &Libs) -> (Pid, String) {
    crate::ensure_loaded(node, "port_echo", &libs.port_echo).await;
    let pid: Pid = node
        .start_server(
            "port_echo",
            &EchoArg {
                addr: "127.0.0.1:0".into(),
            },
            StartOpts::default(),
        )
        .await
        .expect("port_echo starts");
    let (_, addr, ..): (u64, String, usize, u64, u8) = node
        .call(pid, &EchoCall::Info, Duration::from_secs(5))
        .await
        .expect("port_echo info");
    (pid, addr)
}

/// `tcp_echo_rtt`, `tcp_echo_p99`, `tcp_echo_throughput`.
pub(crate) async fn m_echo(node: &Node, libs: &Libs) -> Vec<Res> {
    let (pid, addr) = start_echo(node, libs).await;
    let s0 = hotswap_runtime::sched::io_spin_stats();
    let ours = measure(&addr).await;
    report("hotswap", &ours);
    let s1 = hotswap_runtime::sched::io_spin_stats();
    info!(
        "tcp_echo hotswap: workers spun on the sockets {} times, {} ended by a ready socket (HOTSWAP_IO_SPIN={})",
        s1.spins - s0.spins,
        s1.ended_ready - s0.ended_ready,
        u8::from(hotswap_runtime::sched::io_spin())
    );
    let _ = node
        .stop_server(
            pid,
            hotswap_runtime::ExitReason::Shutdown,
            Duration::from_secs(5),
        )
        .await;

    let (taddr, th) = tokio_server().await;
    let tok = measure(&taddr).await;
    th.abort();
    report("tokio", &tok);

    let erl = match erlang_server() {
        Some((mut child, eaddr)) => {
            let f = measure(&eaddr).await;
            drop(child.stdin.take());
            let _ = child.wait();
            report("erlang", &f);
            Some(f)
        }
        None => {
            info!("tcp_echo: Erlang's escript is not available: apt-get install -y erlang-nox");
            None
        }
    };
    let mut c = COMPARED.lock().unwrap();
    c.push((
        "tcp_echo_rtt",
        erl.as_ref().map(|e| pct(&e.rtt, 0.5)),
        Some(pct(&tok.rtt, 0.5)),
    ));
    c.push((
        "tcp_echo_p99",
        erl.as_ref().map(|e| pct(&e.rtt, 0.99)),
        Some(pct(&tok.rtt, 0.99)),
    ));
    c.push((
        "tcp_echo_throughput",
        erl.as_ref().map(|e| median(&e.tp)),
        Some(median(&tok.tp)),
    ));
    vec![
        Res::new("tcp_echo_rtt", pct(&ours.rtt, 0.5), "us"),
        Res::new("tcp_echo_p99", pct(&ours.rtt, 0.99), "us"),
        Res::new("tcp_echo_throughput", median(&ours.tp), "frames_per_s"),
    ]
}

#[derive(serde::Serialize)]
struct ChatArg {
    addr: String,
}

#[derive(serde::Serialize)]
enum ChatCall {
    Info,
}

const UP_CONNS: usize = 1_000;
const UP_SERVERS: usize = 4;
const UP_RATE: f64 = 10.0;
const UP_UPGRADES: usize = 3;

/// `tcp_upgrade_pause` (the longest gap between two echoes a client saw, over a run in
/// which the chat servers owning the connections are upgraded `UP_UPGRADES` times) and
/// `tcp_upgrade_lost_bytes`.
pub(crate) async fn m_upgrade_pause(node: &Node, libs: &Libs) -> Vec<Res> {
    netload::raise_fd_limit();
    crate::ensure_loaded(node, "chat", &libs.chat[0]).await;
    let mut pids = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..UP_SERVERS {
        let pid: Pid = node
            .start_server(
                "chat",
                &ChatArg {
                    addr: "127.0.0.1:0".into(),
                },
                StartOpts::default(),
            )
            .await
            .expect("chat starts");
        let (addr, ..): (String, usize, u64, u8) = node
            .call(pid, &ChatCall::Info, Duration::from_secs(5))
            .await
            .expect("chat info");
        pids.push(pid);
        addrs.push(addr);
    }
    let cfg = LoadConfig {
        addrs,
        conns: UP_CONNS,
        rate: UP_RATE,
        room_size: 1,
        padding: 36,
    };
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let client = on_client(move || async move {
        let load = Load::start(&cfg);
        let _ = go_rx.await;
        load.finish().await
    });
    let client = tokio::spawn(client);
    // Every connection streaming before the first upgrade.
    let deadline = Instant::now() + Duration::from_secs(60);
    while node
        .ports()
        .iter()
        .filter(|p| p.kind == "tcp" && p.msgs_in > 1)
        .count()
        < UP_CONNS
    {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut windows = Vec::new();
    for u in 0..UP_UPGRADES {
        let t = Instant::now();
        let sys = node.sys();
        for p in &pids {
            sys.suspend(*p).await.expect("suspend");
        }
        if u > 0 {
            node.code().purge("chat").await.expect("purge");
        }
        let (lib, old) = if u % 2 == 0 {
            (&libs.chat[1], "1")
        } else {
            (&libs.chat[0], "2")
        };
        node.code().load(lib).await.expect("load");
        for p in &pids {
            sys.change_code(*p, "chat", old, None)
                .await
                .expect("change_code");
        }
        for p in &pids {
            sys.resume(*p).await.expect("resume");
        }
        windows.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let _ = go_tx.send(());
    let r = client.await.expect("the load client");
    info!("tcp_upgrade_pause: {UP_CONNS} connections at {UP_RATE} frames/s each on {UP_SERVERS} chat servers, {UP_UPGRADES} upgrades (suspend, load, code_change, resume: {:?} ms)", windows.iter().map(|w| (w * 10.0).round() / 10.0).collect::<Vec<_>>());
    info!("tcp_upgrade_pause: {}", r.describe());
    info!(
        "tcp_upgrade_pause: the longest gap includes the send period ({:.0} ms)",
        1e3 / UP_RATE
    );
    for p in pids {
        let _ = node
            .stop_server(
                p,
                hotswap_runtime::ExitReason::Shutdown,
                Duration::from_secs(5),
            )
            .await;
    }
    vec![
        Res::new("tcp_upgrade_pause", r.longest_gap_ms, "ms"),
        Res::new("tcp_upgrade_lost_bytes", r.lost_bytes as f64, "bytes"),
    ]
}

const AB_ROUNDS: usize = 8;
const AB_PINGS: usize = 5_000;
const STAGE_PINGS: usize = 20_000;

/// `tcp_echo_readahead_rtt` and `tcp_echo_readahead_p99`: the echo's median and p99 with
/// the connection's read-ahead (the default) over the same without it
/// (`NodeConfig::read_ahead = 0`: the reader is woken at every `{active, once}` re-arm),
/// two nodes on the same runtime, measured in alternating rounds (A/B/B/A...) so that load
/// on the machine falls on both alike. Then, on stderr, where each variant's round trip
/// goes, stage by stage ([`stages`]).
pub(crate) async fn m_echo_ab(libs: &Libs) -> Vec<Res> {
    let with = Node::start(NodeConfig::default()).expect("node starts");
    let without = Node::start(NodeConfig {
        read_ahead: 0,
        ..Default::default()
    })
    .expect("node starts");
    let (wpid, waddr) = start_echo(&with, libs).await;
    let (opid, oaddr) = start_echo(&without, libs).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for r in 0..AB_ROUNDS {
        let order = if r % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for on in order {
            let addr = if on { &waddr } else { &oaddr };
            let v = rtt_n(addr.clone(), 500, AB_PINGS).await;
            info!(
                "tcp_echo_ab round {r} read-ahead {}: median {:.1} us p99 {:.1} us",
                if on { "on " } else { "off" },
                median(&v),
                pct_unsorted(&v, 0.99)
            );
            if on {
                a.extend(v)
            } else {
                b.extend(v)
            }
        }
    }
    for v in [&mut a, &mut b] {
        v.sort_by(|x, y| x.total_cmp(y));
    }
    info!(
        "tcp_echo_ab: read-ahead on: median {:.1} us p99 {:.1} us; off: median {:.1} us p99 {:.1} us ({} round trips each, {AB_ROUNDS} alternating rounds)",
        pct(&a, 0.5),
        pct(&a, 0.99),
        pct(&b, 0.5),
        pct(&b, 0.99),
        a.len()
    );
    for (name, addr) in [("read-ahead on", &waddr), ("read-ahead off", &oaddr)] {
        stages(name, addr).await;
    }
    for (n, p) in [(&with, wpid), (&without, opid)] {
        let _ = n
            .stop_server(
                p,
                hotswap_runtime::ExitReason::Shutdown,
                Duration::from_secs(5),
            )
            .await;
        n.stop(Duration::from_secs(5)).await;
    }
    vec![
        Res::new("tcp_echo_readahead_rtt", pct(&a, 0.5) / pct(&b, 0.5), "x"),
        Res::new("tcp_echo_readahead_p99", pct(&a, 0.99) / pct(&b, 0.99), "x"),
    ]
}

fn pct_unsorted(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    pct(&s, p)
}

/// Where one connection's echo round trip goes, from the node's stage stamps
/// ([`hotswap_runtime::stamps`]) and the client's own (same clock): client write ->
/// reader read (kernel, I/O driver, reader task scheduled) -> posted to the owner (framing,
/// message) -> taken by the owner (process woken and scheduled) -> the reply's write (event
/// decoded, `handle_info` up to `tcp_send`) -> client read (kernel, client woken). Prints
/// p50/p99/p99.9 of each stage, and each stage's mean within the slowest 1 % of round
/// trips (where the p99 sits).
async fn stages(name: &str, addr: &str) {
    use hotswap_runtime::stamps as st;
    let addr = addr.to_string();
    let (client, node) = on_client(move || async move {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        let (f, mut buf) = (frame(), Vec::new());
        for _ in 0..1_000 {
            ping(&mut s, &f, &mut buf).await.expect("warm-up ping");
        }
        let mut v = Vec::with_capacity(STAGE_PINGS);
        st::start();
        for _ in 0..STAGE_PINGS {
            let t0 = st::now_ns();
            ping(&mut s, &f, &mut buf).await.expect("ping");
            v.push((t0, st::now_ns()));
        }
        (v, st::stop())
    })
    .await;
    let counts: Vec<usize> = node.iter().map(Vec::len).collect();
    if counts.iter().any(|&c| c != client.len()) {
        info!(
            "tcp_echo_stages {name}: stamps do not line up (client {}, node {counts:?}); skipped",
            client.len()
        );
        return;
    }
    const NAMES: [&str; 6] = [
        "client write -> reader read",
        "read -> posted to owner",
        "posted -> taken by owner",
        "taken -> reply written",
        "written -> client read",
        "round trip",
    ];
    // Per frame: the five stage durations and the total, in microseconds.
    let rows: Vec<[f64; 6]> = (0..client.len())
        .map(|i| {
            let (t0, t5) = client[i];
            let t = [t0, node[0][i], node[1][i], node[2][i], node[3][i], t5];
            let d = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e3;
            [
                d(t[0], t[1]),
                d(t[1], t[2]),
                d(t[2], t[3]),
                d(t[3], t[4]),
                d(t[4], t[5]),
                d(t[0], t[5]),
            ]
        })
        .collect();
    let mut by_total = rows.clone();
    by_total.sort_by(|a, b| a[5].total_cmp(&b[5]));
    let tail = &by_total[by_total.len() * 99 / 100..];
    info!("tcp_echo_stages {name} ({} round trips; us):", rows.len());
    info!(
        "  {:<28} {:>8} {:>8} {:>8} {:>10}",
        "stage", "p50", "p99", "p99.9", "slow 1% mean"
    );
    for (k, label) in NAMES.iter().enumerate() {
        let col: Vec<f64> = rows.iter().map(|r| r[k]).collect();
        let mean_tail = tail.iter().map(|r| r[k]).sum::<f64>() / tail.len() as f64;
        info!(
            "  {label:<28} {:>8.1} {:>8.1} {:>8.1} {:>10.1}",
            pct_unsorted(&col, 0.5),
            pct_unsorted(&col, 0.99),
            pct_unsorted(&col, 0.999),
            mean_tail
        );
    }
}

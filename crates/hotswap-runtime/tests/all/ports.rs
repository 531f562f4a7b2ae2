//! Ports (issue 13): TCP and UDP sockets owned by the node, used by processes, across
//! code upgrades. Loopback only; every wait is bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap::net::{
    Active, Framing, ListenOptions, NetError, PortId, PortMsg, SetOpts, TcpOptions, UdpOptions,
};
use hotswap::{Ctx, ExitReason};
use hotswap_runtime::{Node, Pid, StartOpts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, module, QUIET, WAIT};

/// Run `f` in a native process; its result.
async fn in_proc<T: Send + 'static, F, Fut>(node: &Node, f: F) -> T
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let _ = tx.send(f(ctx).await);
    })
    .unwrap();
    tokio::time::timeout(WAIT * 3, rx)
        .await
        .expect("helper process finished in time")
        .expect("helper process finished")
}

/// Spawn `f` in a native process; a receiver of its result.
fn spawn_proc<T: Send + 'static, F, Fut>(
    node: &Node,
    f: F,
) -> (Pid, tokio::sync::oneshot::Receiver<T>)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pid = node
        .spawn_native(move |ctx| async move {
            let _ = tx.send(f(ctx).await);
        })
        .unwrap();
    (pid, rx)
}

async fn done<T>(rx: tokio::sync::oneshot::Receiver<T>) -> T {
    tokio::time::timeout(WAIT * 3, rx)
        .await
        .expect("process finished in time")
        .expect("process finished")
}

fn len4(data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

async fn read_len4(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await?;
    let mut v = vec![0u8; u32::from_be_bytes(h) as usize];
    s.read_exact(&mut v).await?;
    Ok(v)
}

async fn read_len4_within(s: &mut TcpStream, t: Duration) -> Option<Vec<u8>> {
    tokio::time::timeout(t, read_len4(s)).await.ok()?.ok()
}

/// A listener on a free loopback port owned by a native process; `(listener, address)`.
async fn listen(ctx: &Ctx, opts: &ListenOptions) -> (PortId, String) {
    let l = ctx.tcp_listen("127.0.0.1:0", opts).await.expect("listen");
    let addr = ctx.port_info(l).await.expect("info").local;
    (l, addr)
}

fn len4_opts(active: Active) -> ListenOptions {
    ListenOptions {
        conn: TcpOptions {
            framing: Framing::Len4,
            active,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Wait (bounded) until the event of `port` arrives.
async fn event(ctx: &Ctx, port: PortId) -> PortMsg {
    ctx.port_event(Some(port), Some(WAIT))
        .await
        .unwrap_or_else(|| panic!("no event of {port} in time"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_tcp_echo_passive_and_active_once() {
    let node = support::node();
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (_, server) = spawn_proc(&node, move |ctx| async move {
        let (l, addr) = listen(&ctx, &len4_opts(Active::False)).await;
        atx.send(addr).unwrap();
        let c = ctx.tcp_accept(l, Some(WAIT)).await.expect("accept");
        // Passive: recv one frame, echo it.
        let f = ctx.tcp_recv(c, Some(WAIT)).await.expect("recv");
        ctx.tcp_send(c, &f).await.expect("send");
        // Active once: one message, then passive again (the next frame waits in the node).
        ctx.set_active(c, Active::Once).unwrap();
        let PortMsg::Tcp { data, .. } = event(&ctx, c).await else {
            panic!("a frame")
        };
        ctx.tcp_send(c, &data).await.unwrap();
        let quiet = ctx.port_event(Some(c), Some(QUIET)).await;
        assert_eq!(quiet, None, "active once delivers one frame only");
        let info = ctx.port_info(c).await.unwrap();
        assert_eq!(info.active, "false");
        ctx.set_active(c, Active::Once).unwrap();
        let PortMsg::Tcp { data, .. } = event(&ctx, c).await else {
            panic!("the waiting frame")
        };
        ctx.tcp_send(c, &data).await.unwrap();
        // The peer closes: delivered once the port is active again.
        ctx.set_active(c, Active::Once).unwrap();
        let closed = event(&ctx, c).await;
        assert_eq!(closed, PortMsg::TcpClosed { port: c });
        assert_eq!(ctx.tcp_send(c, b"x").await, Err(NetError::Closed(c)));
    });
    let addr = arx.await.unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    for m in [&b"passive"[..], b"once", b"again"] {
        s.write_all(&len4(m)).await.unwrap();
        if m == b"once" {
            // Written before the server re-arms: it must not be delivered early.
            s.write_all(&len4(b"again")).await.unwrap();
            assert_eq!(read_len4(&mut s).await.unwrap(), b"once");
            assert_eq!(read_len4(&mut s).await.unwrap(), b"again");
            break;
        }
        assert_eq!(read_len4(&mut s).await.unwrap(), m);
    }
    drop(s);
    done(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_active_n_sends_passive() {
    let node = support::node();
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (_, server) = spawn_proc(&node, move |ctx| async move {
        let (l, addr) = listen(&ctx, &len4_opts(Active::N(3))).await;
        atx.send(addr).unwrap();
        let c = ctx.tcp_accept(l, Some(WAIT)).await.expect("accept");
        let mut got = Vec::new();
        for _ in 0..3 {
            match event(&ctx, c).await {
                PortMsg::Tcp { data, .. } => got.push(data),
                other => panic!("a frame, got {other:?}"),
            }
        }
        assert_eq!(event(&ctx, c).await, PortMsg::TcpPassive { port: c });
        assert_eq!(ctx.port_event(Some(c), Some(QUIET)).await, None);
        // N adds to the counter (Erlang): 2 more, then passive again.
        ctx.set_active(c, Active::N(2)).unwrap();
        for _ in 0..2 {
            match event(&ctx, c).await {
                PortMsg::Tcp { data, .. } => got.push(data),
                other => panic!("a frame, got {other:?}"),
            }
        }
        assert_eq!(event(&ctx, c).await, PortMsg::TcpPassive { port: c });
        // A non-positive count turns it passive at once, with the message.
        ctx.set_active(c, Active::N(0)).unwrap();
        assert_eq!(event(&ctx, c).await, PortMsg::TcpPassive { port: c });
        got
    });
    let mut s = TcpStream::connect(arx.await.unwrap()).await.unwrap();
    for i in 0..5u8 {
        s.write_all(&len4(&[i])).await.unwrap();
    }
    let got = done(server).await;
    assert_eq!(got, (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_owner_exit_closes_socket() {
    let node = support::node();
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (gtx, grx) = tokio::sync::oneshot::channel::<()>();
    let (pid, server) = spawn_proc(&node, move |ctx| async move {
        let (l, addr) = listen(&ctx, &len4_opts(Active::False)).await;
        atx.send(addr).unwrap();
        let c = ctx.tcp_accept(l, Some(WAIT)).await.expect("accept");
        gtx.send(()).unwrap();
        // Wait to be killed.
        ctx.sleep(WAIT * 3).await;
        c
    });
    let addr = arx.await.unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    grx.await.unwrap();
    assert_eq!(node.ports().len(), 2, "a listener and a connection");
    node.exit(pid, ExitReason::Kill);
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(WAIT, s.read(&mut b))
        .await
        .expect("the peer sees the close in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "end of stream");
    assert!(server.await.is_err(), "the owner was killed");
    assert!(node.ports().is_empty(), "{:?}", node.ports());
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "the listener closed with its owner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_parked_socket_adopted_after_restart() {
    let node = support::node();
    let mut opts = len4_opts(Active::False);
    opts.conn.park = true;
    opts.conn.label = Some("session".into());
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (gtx, grx) = tokio::sync::oneshot::channel::<PortId>();
    // The first child owns the listener's connection and the listener lives in another
    // process (the supervisor's side), so only the connection's owner dies.
    let (_lpid, _listener) = spawn_proc(&node, move |ctx| async move {
        let (l, addr) = listen(&ctx, &opts).await;
        atx.send(addr).unwrap();
        ctx.sleep(WAIT * 3).await;
        l
    });
    let addr = arx.await.unwrap();
    let listener = node.ports()[0].id;
    let (child, first) = spawn_proc(&node, move |ctx| async move {
        let c = ctx.tcp_accept(listener, Some(WAIT)).await.expect("accept");
        let f = ctx.tcp_recv(c, Some(WAIT)).await.expect("recv");
        ctx.tcp_send(c, &f).await.unwrap();
        gtx.send(c).unwrap();
        ctx.sleep(WAIT * 3).await;
    });
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&len4(b"before")).await.unwrap();
    assert_eq!(read_len4(&mut s).await.unwrap(), b"before");
    let c = grx.await.unwrap();
    node.exit(child, ExitReason::Kill);
    assert!(first.await.is_err());
    // Parked: still open, reads paused; bytes sent meanwhile wait in the node.
    s.write_all(&len4(b"while parked")).await.unwrap();
    let parked = loop {
        let p = node
            .ports()
            .into_iter()
            .find(|p| p.id == c)
            .expect("still open");
        if p.parked {
            break p;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(parked.owner, None);
    let mut b = [0u8; 1];
    assert!(
        tokio::time::timeout(QUIET, s.read(&mut b)).await.is_err(),
        "the connection stays open"
    );
    // The restarted child finds it by label and adopts it.
    let got = in_proc(&node, move |ctx| async move {
        let parked = ctx.parked_ports(Some("session")).await.unwrap();
        assert_eq!(parked.len(), 1);
        let c = parked[0].id;
        assert_eq!(
            ctx.tcp_send(c, b"x").await,
            Err(NetError::NotOwner {
                port: c,
                owner: None
            }),
            "a parked port must be adopted first"
        );
        ctx.port_adopt(c).await.unwrap();
        assert_eq!(ctx.port_adopt(c).await, Err(NetError::NotParked(c)));
        let f = ctx.tcp_recv(c, Some(WAIT)).await.unwrap();
        ctx.tcp_send(c, &f).await.unwrap();
        f
    })
    .await;
    assert_eq!(got, b"while parked");
    assert_eq!(read_len4(&mut s).await.unwrap(), b"while parked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_controlling_process_moves_pending_data() {
    let node = support::node();
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    // B waits for the port id, then reads what A had not taken, in order, then more.
    let (b_pid, b) = spawn_proc(&node, move |ctx| async move {
        let c: u64 = ctx.receive().await;
        let c = PortId(c);
        let mut got = Vec::new();
        while got.len() < 4 {
            match event(&ctx, c).await {
                PortMsg::Tcp { data, .. } => got.push(data),
                other => panic!("a frame, got {other:?}"),
            }
        }
        ctx.tcp_send(c, b"from b").await.unwrap();
        got
    });
    let (_, a) = spawn_proc(&node, move |ctx| async move {
        let (l, addr) = listen(&ctx, &len4_opts(Active::True)).await;
        atx.send(addr).unwrap();
        let c = ctx.tcp_accept(l, Some(WAIT)).await.expect("accept");
        ready_tx.send(()).unwrap();
        // Three frames delivered to A's mailbox, not taken.
        while ctx.port_info(c).await.unwrap().msgs_in < 3 {
            ctx.sleep(Duration::from_millis(2)).await;
        }
        ctx.controlling_process(c, b_pid).await.unwrap();
        ctx.send(b_pid, &c.0);
        let not_owner = ctx.tcp_send(c, b"x").await;
        let left = ctx.port_event(Some(c), Some(Duration::ZERO)).await;
        (c, not_owner, left)
    });
    let mut s = TcpStream::connect(arx.await.unwrap()).await.unwrap();
    ready_rx.await.unwrap();
    for m in [&b"one"[..], b"two", b"three"] {
        s.write_all(&len4(m)).await.unwrap();
    }
    let (c, not_owner, left) = done(a).await;
    assert_eq!(
        not_owner,
        Err(NetError::NotOwner {
            port: c,
            owner: Some(b_pid)
        })
    );
    assert_eq!(left, None, "nothing of the port stays with the old owner");
    s.write_all(&len4(b"four")).await.unwrap();
    let got = done(b).await;
    assert_eq!(
        got,
        vec![
            b"one".to_vec(),
            b"two".to_vec(),
            b"three".to_vec(),
            b"four".to_vec()
        ]
    );
    assert_eq!(read_len4(&mut s).await.unwrap(), b"from b");
}

/// A connection to a fresh listener with `conn` options, accepted by a process that
/// turns it active (true) and collects its events until `TcpClosed`.
async fn collect_events(
    node: &Node,
    conn: TcpOptions,
) -> (TcpStream, tokio::sync::oneshot::Receiver<Vec<PortMsg>>) {
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (_, rx) = spawn_proc(node, move |ctx| async move {
        let opts = ListenOptions {
            conn,
            ..Default::default()
        };
        let (l, addr) = listen(&ctx, &opts).await;
        atx.send(addr).unwrap();
        let c = ctx.tcp_accept(l, Some(WAIT)).await.expect("accept");
        ctx.set_active(c, Active::True).unwrap();
        let mut v = Vec::new();
        loop {
            let e = event(&ctx, c).await;
            let end = matches!(e, PortMsg::TcpClosed { .. });
            v.push(e);
            if end {
                return v;
            }
        }
    });
    (TcpStream::connect(arx.await.unwrap()).await.unwrap(), rx)
}

fn frames(v: &[PortMsg]) -> Vec<Vec<u8>> {
    v.iter()
        .filter_map(|e| match e {
            PortMsg::Tcp { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn error_of(v: &[PortMsg]) -> String {
    v.iter()
        .find_map(|e| match e {
            PortMsg::TcpError { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("an error event in {v:?}"))
}

async fn peer_sees_close(s: &mut TcpStream) {
    let mut b = [0u8; 64];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was not closed"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_framing_length_and_line_limits() {
    let node = support::node();
    // A 2-byte length prefix, at most 10 bytes: a valid frame, then one announcing 100.
    let (mut s, rx) = collect_events(
        &node,
        TcpOptions {
            framing: Framing::Len2,
            max_frame: 10,
            ..Default::default()
        },
    )
    .await;
    s.write_all(&[0, 5, b'h', b'e', b'l', b'l', b'o', 0, 100])
        .await
        .unwrap();
    let ev = done(rx).await;
    assert_eq!(frames(&ev), vec![b"hello".to_vec()]);
    assert!(
        error_of(&ev).contains("frame of 100 bytes exceeds the maximum of 10"),
        "{ev:?}"
    );
    peer_sees_close(&mut s).await;

    // Lines of at most 8 bytes: a line (newline kept), then 10 bytes without a newline.
    let (mut s, rx) = collect_events(
        &node,
        TcpOptions {
            framing: Framing::Line,
            max_frame: 8,
            ..Default::default()
        },
    )
    .await;
    s.write_all(b"abc\nde\n0123456789").await.unwrap();
    let ev = done(rx).await;
    assert_eq!(frames(&ev), vec![b"abc\n".to_vec(), b"de\n".to_vec()]);
    assert!(error_of(&ev).contains("exceeds the maximum of 8"), "{ev:?}");
    peer_sees_close(&mut s).await;

    // A malformed line: the peer closes in the middle of one.
    let (mut s, rx) = collect_events(
        &node,
        TcpOptions {
            framing: Framing::Line,
            max_frame: 100,
            ..Default::default()
        },
    )
    .await;
    s.write_all(b"ok\npartial").await.unwrap();
    s.shutdown().await.unwrap();
    let ev = done(rx).await;
    assert_eq!(frames(&ev), vec![b"ok\n".to_vec()]);
    assert!(error_of(&ev).contains("malformed line"), "{ev:?}");

    // Send side: the length prefix's limit and the maximum frame are enforced too.
    let (mut s, rx) = collect_events(
        &node,
        TcpOptions {
            framing: Framing::Len1,
            ..Default::default()
        },
    )
    .await;
    s.shutdown().await.unwrap();
    let ev = done(rx).await;
    assert!(matches!(ev.last(), Some(PortMsg::TcpClosed { .. })));
    let too_big = in_proc(&node, |ctx| async move {
        let (l, addr) = listen(&ctx, &ListenOptions::default()).await;
        let opts = TcpOptions {
            framing: Framing::Len1,
            ..Default::default()
        };
        let c = ctx.tcp_connect(&addr, &opts, Some(WAIT)).await.unwrap();
        let r = ctx.tcp_send(c, &[0; 300]).await;
        ctx.port_close(c).await.unwrap();
        ctx.port_close(l).await.unwrap();
        r
    })
    .await;
    assert_eq!(too_big, Err(NetError::FrameTooLarge { len: 300, max: 255 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_send_backpressure_bounded() {
    let node = support::node();
    const CHUNK: usize = 16 << 10;
    // Small kernel buffers so the node's own queue is what fills.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (_, server) = spawn_proc(&node, move |ctx| async move {
        let opts = ListenOptions {
            conn: TcpOptions {
                send_buffer: Some(4096),
                send_high_watermark: 64 << 10,
                send_low_watermark: 32 << 10,
                send_timeout_ms: Some(200),
                ..Default::default()
            },
            ..Default::default()
        };
        let (l, addr) = listen(&ctx, &opts).await;
        atx.send(addr).unwrap();
        let c = ctx.tcp_accept(l, Some(WAIT)).await.expect("accept");
        let chunk = vec![7u8; CHUNK];
        let mut accepted = 0usize;
        let mut max_queued = 0usize;
        let t = Instant::now();
        let err = loop {
            match ctx.tcp_send(c, &chunk).await {
                Ok(()) => accepted += CHUNK,
                Err(e) => break e,
            }
            max_queued = max_queued.max(ctx.port_info(c).await.unwrap().tx_queued);
            assert!(t.elapsed() < WAIT, "sends never blocked");
        };
        (accepted, max_queued, err, ctx.port_info(c).await.unwrap())
    });
    let _peer = sock
        .connect(arx.await.unwrap().parse().unwrap())
        .await
        .unwrap();
    let (accepted, max_queued, err, info) = done(server).await;
    assert_eq!(
        err,
        NetError::Timeout,
        "a send that waits too long times out"
    );
    assert!(
        max_queued <= (64 << 10) + CHUNK,
        "the node's queue stays under the high watermark plus one frame: {max_queued}"
    );
    assert!(
        accepted < 4 << 20,
        "a peer that never reads cannot make the node buffer without bound: {accepted} bytes accepted"
    );
    assert!(
        info.tx_queued >= 32 << 10,
        "the queue is still full: {info:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_udp_roundtrip() {
    let node = support::node();
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (_, server) = spawn_proc(&node, move |ctx| async move {
        let u = ctx
            .udp_open("127.0.0.1:0", &UdpOptions::default())
            .await
            .unwrap();
        atx.send(ctx.port_info(u).await.unwrap().local).unwrap();
        // Passive.
        let (peer, data) = ctx.udp_recv(u, Some(WAIT)).await.unwrap();
        ctx.udp_send_to(u, &peer, &data).await.unwrap();
        // Active once.
        ctx.set_active(u, Active::Once).unwrap();
        let PortMsg::Udp { peer, data, .. } = event(&ctx, u).await else {
            panic!("a datagram")
        };
        ctx.udp_send_to(u, &peer, &data).await.unwrap();
        // Active 1: a datagram, then passive.
        ctx.set_active(u, Active::N(1)).unwrap();
        let PortMsg::Udp { peer, data, .. } = event(&ctx, u).await else {
            panic!("a datagram")
        };
        assert_eq!(event(&ctx, u).await, PortMsg::UdpPassive { port: u });
        ctx.udp_send_to(u, &peer, &data).await.unwrap();
        let bad = ctx.udp_send_to(u, "nowhere", b"x").await;
        assert!(matches!(bad, Err(NetError::InvalidArgument(_))), "{bad:?}");
        ctx.port_close(u).await.unwrap();
    });
    let addr = arx.await.unwrap();
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut b = [0u8; 64];
    for m in [&b"passive"[..], b"once", b"n"] {
        c.send_to(m, &addr).await.unwrap();
        let (n, from) = tokio::time::timeout(WAIT, c.recv_from(&mut b))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(&b[..n], m);
        assert_eq!(from.to_string(), addr);
    }
    done(server).await;
}

/// The echo server's `Info` reply: `(listener, address, connections, frames, version)`.
pub(crate) type EchoInfo = (u64, String, usize, u64, u8);

#[derive(serde::Serialize)]
struct EchoArg {
    addr: String,
}

#[derive(serde::Serialize)]
enum EchoCall {
    Info,
}

pub(crate) async fn start_echo(node: &Node) -> (Pid, EchoInfo) {
    let pid = node
        .start_server(
            "port_echo",
            &EchoArg {
                addr: "127.0.0.1:0".into(),
            },
            StartOpts::default(),
        )
        .await
        .unwrap();
    let info: EchoInfo = node.call(pid, &EchoCall::Info, WAIT).await.unwrap();
    (pid, info)
}

/// Suspend, load the other version, change code, resume: one upgrade of `pids`.
async fn upgrade(node: &Node, pids: &[Pid], to_v2: bool, purge_first: bool) {
    let sys = node.sys();
    for p in pids {
        sys.suspend(*p).await.unwrap();
    }
    if purge_first {
        let r = node.code().purge("port_echo").await.unwrap();
        assert!(r.killed.is_empty(), "{r:?}");
    }
    let (lib, old) = if to_v2 {
        (module("port_echo_v2"), "1")
    } else {
        (module("port_echo_v1"), "2")
    };
    node.code().load(lib).await.unwrap();
    for p in pids {
        sys.change_code(*p, "port_echo", old, None).await.unwrap();
    }
    for p in pids {
        sys.resume(*p).await.unwrap();
    }
}

/// One streaming client's findings.
#[derive(Debug, Default)]
struct Stream {
    sent: u64,
    received: u64,
    gaps: u64,
    duplicates: u64,
    corrupt: u64,
    resets: Vec<String>,
    versions: Vec<u8>,
}

fn checksum(seq: u64) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// A client that sends a sequence-numbered, checksummed frame every `period` until
/// `stop`, then drains every echo.
async fn stream_client(addr: String, period: Duration, stop: Arc<AtomicBool>) -> Stream {
    let mut r = Stream::default();
    let s = match TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            r.resets.push(format!("connect: {e}"));
            return r;
        }
    };
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut r = Stream::default();
        let mut next = 0u64;
        loop {
            let mut h = [0u8; 4];
            if let Err(e) = rd.read_exact(&mut h).await {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    r.resets.push(format!("read: {e}"));
                }
                return r;
            }
            let mut f = vec![0u8; u32::from_be_bytes(h) as usize];
            if let Err(e) = rd.read_exact(&mut f).await {
                r.resets.push(format!("read: {e}"));
                return r;
            }
            if f.len() != 17 {
                r.corrupt += 1;
                continue;
            }
            let v = f[0];
            let seq = u64::from_le_bytes(f[1..9].try_into().unwrap());
            let sum = u64::from_le_bytes(f[9..17].try_into().unwrap());
            if sum != checksum(seq) {
                r.corrupt += 1;
            }
            match seq.cmp(&next) {
                std::cmp::Ordering::Less => r.duplicates += 1,
                std::cmp::Ordering::Greater => {
                    r.gaps += seq - next;
                    next = seq + 1;
                }
                std::cmp::Ordering::Equal => next += 1,
            }
            r.received += 1;
            if r.versions.last() != Some(&v) {
                r.versions.push(v);
            }
        }
    });
    let mut tick = tokio::time::interval(period);
    let mut seq = 0u64;
    loop {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut f = Vec::with_capacity(20);
        f.extend_from_slice(&16u32.to_be_bytes());
        f.extend_from_slice(&seq.to_le_bytes());
        f.extend_from_slice(&checksum(seq).to_le_bytes());
        if let Err(e) = wr.write_all(&f).await {
            r.resets.push(format!("write: {e}"));
            break;
        }
        seq += 1;
    }
    r.sent = seq;
    // Half-close: the server echoes what it has, sees the end, closes; the reader drains.
    let _ = wr.shutdown().await;
    let got = tokio::time::timeout(WAIT * 2, reader)
        .await
        .expect("every echo arrives in time")
        .unwrap();
    r.received = got.received;
    r.gaps = got.gaps;
    r.duplicates = got.duplicates;
    r.corrupt = got.corrupt;
    r.resets.extend(got.resets);
    r.versions = got.versions;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_survives_module_upgrade_no_bytes_lost() {
    const SERVERS: usize = 4;
    const CONNS: usize = 100;
    const UPGRADES: usize = 20;
    let node = support::node();
    node.code().load(module("port_echo_v1")).await.unwrap();
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        servers.push(start_echo(&node).await);
    }
    let pids: Vec<Pid> = servers.iter().map(|s| s.0).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CONNS)
        .map(|i| {
            let addr = servers[i % SERVERS].1 .1.clone();
            tokio::spawn(stream_client(addr, Duration::from_millis(10), stop.clone()))
        })
        .collect();
    // Every connection accepted and streaming before the first upgrade.
    let t = Instant::now();
    loop {
        let conns: usize = node
            .ports()
            .iter()
            .filter(|p| p.kind == "tcp" && p.msgs_in > 0)
            .count();
        if conns == CONNS {
            break;
        }
        assert!(t.elapsed() < WAIT, "only {conns} connections streaming");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for u in 0..UPGRADES {
        upgrade(&node, &pids, u % 2 == 0, u > 0).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let final_vsn = if UPGRADES % 2 == 1 { 2u8 } else { 1u8 };
    // Streams keep going on the final version for a moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Stream::default();
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!(r.received, r.sent, "every frame echoed: {r:?}");
        assert_eq!(
            r.versions.last(),
            Some(&final_vsn),
            "the last echoes come from the new code: {r:?}"
        );
        total.sent += r.sent;
        total.received += r.received;
        total.gaps += r.gaps;
        total.duplicates += r.duplicates;
        total.corrupt += r.corrupt;
        total.resets.extend(r.resets);
        total.versions.push(r.versions.len() as u8);
    }
    assert!(total.resets.is_empty(), "resets: {:?}", total.resets);
    assert_eq!((total.gaps, total.duplicates, total.corrupt), (0, 0, 0));
    let switched = total.versions.iter().filter(|&&n| n > 1).count();
    assert!(
        switched == CONNS,
        "every connection saw the versions change: {switched}"
    );
    eprintln!(
        "port_survives_module_upgrade: {CONNS} connections on {SERVERS} servers, {UPGRADES} upgrades, {} frames echoed, 0 resets, 0 gaps, 0 duplicates",
        total.received
    );
    for p in &pids {
        let (_, _, conns, _, v): EchoInfo = node.call(*p, &EchoCall::Info, WAIT).await.unwrap();
        assert_eq!(v, final_vsn);
        assert_eq!(
            conns, 0,
            "every connection closed by its client was removed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_survives_purge_of_old_code() {
    let node = support::node();
    node.code().load(module("port_echo_v1")).await.unwrap();
    let (pid, (_, addr, ..)) = start_echo(&node).await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(&len4(b"hi")).await.unwrap();
        assert_eq!(read_len4(&mut s).await.unwrap(), b"\x01hi");
        conns.push(s);
    }
    // A plain load: the idle server's state migrates on its next message, then the old
    // version is purged; no process runs it, nothing is killed, no socket is touched.
    node.code().load(module("port_echo_v2")).await.unwrap();
    let (.., v): EchoInfo = node.call(pid, &EchoCall::Info, WAIT).await.unwrap();
    assert_eq!(v, 2);
    let r = node.code().purge("port_echo").await.unwrap();
    assert!(r.killed.is_empty(), "{r:?}");
    for s in &mut conns {
        s.write_all(&len4(b"after")).await.unwrap();
        assert_eq!(read_len4_within(s, WAIT).await.unwrap(), b"\x02after");
    }
    assert_eq!(node.ports().iter().filter(|p| p.kind == "tcp").count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_listener_not_rebound_on_upgrade() {
    let node = support::node();
    node.code().load(module("port_echo_v1")).await.unwrap();
    let (pid, (listener, addr, ..)) = start_echo(&node).await;
    let before = node.ports();
    let sys = node.sys();
    sys.suspend(pid).await.unwrap();
    node.code().load(module("port_echo_v2")).await.unwrap();
    // A client connecting during the switch waits in the kernel's backlog.
    let mut during = TcpStream::connect(&addr).await.unwrap();
    during.write_all(&len4(b"during")).await.unwrap();
    sys.change_code(pid, "port_echo", "1", None).await.unwrap();
    sys.resume(pid).await.unwrap();
    assert_eq!(
        read_len4_within(&mut during, WAIT).await.unwrap(),
        b"\x02during"
    );
    let (l2, addr2, ..): EchoInfo = node.call(pid, &EchoCall::Info, WAIT).await.unwrap();
    assert_eq!(
        (l2, &addr2),
        (listener, &addr),
        "the same listener, never re-bound"
    );
    let listeners: Vec<_> = node
        .ports()
        .into_iter()
        .filter(|p| p.kind == "tcp_listen")
        .collect();
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0].id, before[0].id);
    assert_eq!(listeners[0].local, before[0].local);
    let e = std::net::TcpListener::bind(&addr).unwrap_err();
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::AddrInUse,
        "still bound by the node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_bad_inputs_clear_errors() {
    let node = support::node();
    // An echo server on the same node keeps working through all of this.
    node.code().load(module("port_echo_v1")).await.unwrap();
    let (_, (_, echo_addr, ..)) = start_echo(&node).await;
    let mut witness = TcpStream::connect(&echo_addr).await.unwrap();

    let (owner_tx, owner_rx) = tokio::sync::oneshot::channel::<(Pid, PortId, Vec<NetError>)>();
    let (_, a) = spawn_proc(&node, move |ctx| async move {
        let (l, addr) = listen(&ctx, &ListenOptions::default()).await;
        let mut errs = Vec::new();
        // Unknown and closed ids.
        errs.push(ctx.tcp_send(PortId(u64::MAX), b"x").await.unwrap_err());
        let c = ctx
            .tcp_connect(&addr, &TcpOptions::default(), Some(WAIT))
            .await
            .unwrap();
        ctx.port_close(c).await.unwrap();
        errs.push(ctx.tcp_send(c, b"x").await.unwrap_err());
        // Address in use.
        errs.push(
            ctx.tcp_listen(&addr, &ListenOptions::default())
                .await
                .unwrap_err(),
        );
        // A malformed address.
        errs.push(
            ctx.tcp_listen("localhost", &ListenOptions::default())
                .await
                .unwrap_err(),
        );
        // Kinds: recv on a listener; recv on an active port.
        errs.push(ctx.tcp_recv(l, None).await.unwrap_err());
        let opts = TcpOptions {
            active: Active::True,
            ..Default::default()
        };
        let c2 = ctx.tcp_connect(&addr, &opts, Some(WAIT)).await.unwrap();
        errs.push(ctx.tcp_recv(c2, None).await.unwrap_err());
        owner_tx.send((ctx.self_pid(), c2, errs)).unwrap();
        ctx.sleep(WAIT * 3).await;
    });
    let (a_pid, c2, errs) = owner_rx.await.unwrap();
    assert!(
        matches!(errs[0], NetError::UnknownPort(PortId(u64::MAX))),
        "{:?}",
        errs[0]
    );
    assert!(matches!(errs[1], NetError::Closed(_)), "{:?}", errs[1]);
    assert!(matches!(errs[2], NetError::AddrInUse(_)), "{:?}", errs[2]);
    assert!(
        matches!(errs[3], NetError::InvalidArgument(_)),
        "{:?}",
        errs[3]
    );
    assert!(
        matches!(errs[4], NetError::WrongKind { .. }),
        "{:?}",
        errs[4]
    );
    assert!(matches!(errs[5], NetError::Busy(_)), "{:?}", errs[5]);
    for e in &errs {
        eprintln!("port_bad_inputs: {e}");
    }
    let errs_b = in_proc(&node, move |ctx| async move {
        // Another process's port.
        let mut errs = vec![ctx.tcp_send(c2, b"x").await.unwrap_err()];
        errs.push(ctx.set_active(c2, Active::Once).unwrap_err());
        errs.push(ctx.port_close(c2).await.unwrap_err());
        // Connect to a closed address.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap().to_string();
        drop(free);
        errs.push(
            ctx.tcp_connect(&addr, &TcpOptions::default(), Some(WAIT))
                .await
                .unwrap_err(),
        );
        errs
    })
    .await;
    let not_owner = NetError::NotOwner {
        port: c2,
        owner: Some(a_pid),
    };
    assert_eq!(
        &errs_b[..3],
        &[not_owner.clone(), not_owner.clone(), not_owner]
    );
    assert!(
        matches!(&errs_b[3], NetError::ConnectionRefused(_)),
        "{:?}",
        errs_b[3]
    );
    node.exit(a_pid, ExitReason::Kill);
    let _ = a.await;

    // A peer faster than the owner reads: an active-once port whose owner never re-arms
    // reads at most a bounded amount, the writer is held back by TCP.
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (slow_pid, slow) = spawn_proc(&node, move |ctx| async move {
        let opts = ListenOptions {
            conn: TcpOptions {
                recv_buffer: Some(4096),
                active: Active::Once,
                ..Default::default()
            },
            ..Default::default()
        };
        let (l, addr) = listen(&ctx, &opts).await;
        atx.send(addr).unwrap();
        let c = ctx.tcp_accept(l, Some(WAIT)).await.unwrap();
        ctx.sleep(WAIT * 3).await;
        c
    });
    let mut fast = TcpStream::connect(arx.await.unwrap()).await.unwrap();
    let blob = vec![0u8; 64 << 10];
    let mut written = 0usize;
    let t = Instant::now();
    while let Ok(Ok(())) =
        tokio::time::timeout(Duration::from_millis(200), fast.write_all(&blob)).await
    {
        written += blob.len();
        assert!(written < 64 << 20, "the peer was never held back");
        assert!(t.elapsed() < WAIT);
    }
    let slow_port = node
        .ports()
        .into_iter()
        .find(|p| p.owner == Some(slow_pid) && p.kind == "tcp")
        .unwrap();
    assert!(
        slow_port.bytes_in < 1 << 20,
        "the node read only what the owner asked for (plus one read): {slow_port:?}"
    );
    node.exit(slow_pid, ExitReason::Kill);
    let _ = slow.await;

    witness.write_all(&len4(b"still here")).await.unwrap();
    assert_eq!(
        read_len4_within(&mut witness, WAIT).await.unwrap(),
        b"\x01still here"
    );
}

/// Regression (found with the chat example): in `AcceptMode::ToOwner`, the owner hears of
/// a connection before any of its data, even when the peer writes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_accepted_arrives_before_data() {
    let node = support::node();
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (_, server) = spawn_proc(&node, move |ctx| async move {
        let mut opts = len4_opts(Active::True);
        opts.accept = hotswap::net::AcceptMode::ToOwner;
        let (l, addr) = listen(&ctx, &opts).await;
        atx.send(addr).unwrap();
        let mut firsts = Vec::new();
        for _ in 0..20 {
            let m = ctx.port_event(None, Some(WAIT)).await.expect("an event");
            let PortMsg::Accepted { listener, port, .. } = m else {
                panic!("data before its connection was announced: {m:?}")
            };
            assert_eq!(listener, l);
            firsts.push(event(&ctx, port).await);
        }
        firsts
    });
    let addr = arx.await.unwrap();
    let mut conns = Vec::new();
    for i in 0..20u8 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(&len4(&[i])).await.unwrap();
        conns.push(s);
    }
    let firsts = done(server).await;
    assert!(
        firsts.iter().all(|m| matches!(m, PortMsg::Tcp { .. })),
        "{firsts:?}"
    );
}

#[derive(serde::Serialize)]
struct ChatArg {
    addr: String,
}

#[derive(serde::Serialize)]
enum ChatCall {
    Info,
}

/// Publish `text` from `s` (chat protocol: `[1] payload`).
async fn publish(s: &mut TcpStream, text: &[u8]) {
    let mut f = vec![1u8];
    f.extend_from_slice(text);
    s.write_all(&len4(&f)).await.unwrap();
}

/// The next publication `s` receives: `(server version, payload)`.
async fn heard(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let f = read_len4_within(s, WAIT).await.expect("a publication");
    assert_eq!(f[0], 1, "{f:?}");
    (f[1], f[10..].to_vec())
}

/// The chat example (`modules/chat_v*`): rooms survive an upgrade that changes the state
/// type (version 2 keeps sets and per-member records), and every member keeps hearing
/// every publication of its room, from the new code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_chat_example_rooms_survive_state_type_change() {
    let node = support::node();
    node.code().load(module("chat_v1")).await.unwrap();
    let pid = node
        .start_server(
            "chat",
            &ChatArg {
                addr: "127.0.0.1:0".into(),
            },
            StartOpts::default(),
        )
        .await
        .unwrap();
    let (addr, ..): (String, usize, u64, u8) = node.call(pid, &ChatCall::Info, WAIT).await.unwrap();
    // Three rooms of two members.
    let mut members = Vec::new();
    for i in 0..6u32 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let mut join = vec![0u8];
        join.extend_from_slice(&(100 + i / 2).to_le_bytes());
        s.write_all(&len4(&join)).await.unwrap();
        members.push(s);
    }
    // Every join frame delivered to the server; a call posted after them is answered
    // after they were handled.
    let t = Instant::now();
    while node
        .ports()
        .iter()
        .filter(|p| p.kind == "tcp" && p.msgs_in >= 1)
        .count()
        < 6
    {
        assert!(t.elapsed() < WAIT, "members did not join");
        tokio::task::yield_now().await;
    }
    let (_, n, ..): (String, usize, u64, u8) = node.call(pid, &ChatCall::Info, WAIT).await.unwrap();
    assert_eq!(n, 6);
    for round in 0..2u8 {
        for (i, s) in members.iter_mut().enumerate() {
            publish(s, &[round, i as u8]).await;
        }
        let want_vsn = round + 1;
        for (i, s) in members.iter_mut().enumerate() {
            let mate = i ^ 1;
            let mut got = vec![heard(s).await, heard(s).await];
            got.sort();
            let mut want = vec![
                (want_vsn, vec![round, i as u8]),
                (want_vsn, vec![round, mate as u8]),
            ];
            want.sort();
            assert_eq!(got, want, "member {i}, round {round}");
        }
        if round == 0 {
            let sys = node.sys();
            sys.suspend(pid).await.unwrap();
            node.code().load(module("chat_v2")).await.unwrap();
            sys.change_code(pid, "chat", "1", None).await.unwrap();
            sys.resume(pid).await.unwrap();
        }
    }
    let (_, conns, published, vsn): (String, usize, u64, u8) =
        node.call(pid, &ChatCall::Info, WAIT).await.unwrap();
    assert_eq!((conns, published, vsn), (6, 12, 2));
}

/// `setopts` on open ports (issue 13's gap 1): framing, maximum frame, active mode, the
/// kernel's socket options and the send watermarks and timeout change while the
/// connection is open; a bad option is refused as a whole, naming it; a listener's
/// options apply to the connections it accepts afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_setopts_after_open() {
    let node = support::node();
    let (atx, arx) = tokio::sync::oneshot::channel::<String>();
    let (ptx, prx) = tokio::sync::oneshot::channel::<PortId>();
    let (_, server) = spawn_proc(&node, move |ctx| async move {
        let (l, addr) = listen(&ctx, &len4_opts(Active::False)).await;
        atx.send(addr).unwrap();
        let c = ctx.tcp_accept(l, Some(WAIT)).await.expect("accept");
        ptx.send(c).unwrap();
        let mut log = Vec::new();
        // Length-prefixed as opened.
        log.push(ctx.tcp_recv(c, Some(WAIT)).await.expect("len4 frame"));
        // To lines: the next frame is cut at the newline.
        let lines = SetOpts {
            framing: Some(Framing::Line),
            max_frame: Some(64),
            ..Default::default()
        };
        ctx.setopts(c, &lines).await.expect("setopts framing");
        log.push(ctx.tcp_recv(c, Some(WAIT)).await.expect("a line"));
        // A bad option is refused as a whole: the framing named with it does not change.
        let bad = SetOpts {
            framing: Some(Framing::Len2),
            max_frame: Some(0),
            ..Default::default()
        };
        let e = ctx.setopts(c, &bad).await.expect_err("max_frame 0");
        assert!(
            matches!(&e, NetError::InvalidArgument(m) if m.contains("max_frame")),
            "{e}"
        );
        assert_eq!(ctx.port_info(c).await.unwrap().framing, "line");
        let e = ctx
            .setopts(
                c,
                &SetOpts {
                    send_low_watermark: Some(1 << 20),
                    ..Default::default()
                },
            )
            .await
            .expect_err("low above high");
        assert!(
            matches!(&e, NetError::InvalidArgument(m) if m.contains("send_low_watermark")),
            "{e}"
        );
        for zero in [
            SetOpts {
                recv_buffer: Some(0),
                ..Default::default()
            },
            SetOpts {
                send_high_watermark: Some(0),
                ..Default::default()
            },
        ] {
            assert!(matches!(
                ctx.setopts(c, &zero).await,
                Err(NetError::InvalidArgument(_))
            ));
        }
        // Kernel options are taken.
        let kernel = SetOpts {
            nodelay: Some(false),
            keepalive: Some(true),
            recv_buffer: Some(8192),
            send_buffer: Some(8192),
            ..Default::default()
        };
        ctx.setopts(c, &kernel).await.expect("socket options");
        // Active once through setopts: the next line arrives as a message.
        let once = SetOpts {
            active: Some(Active::Once),
            ..Default::default()
        };
        ctx.setopts(c, &once).await.expect("setopts active");
        match event(&ctx, c).await {
            PortMsg::Tcp { data, .. } => log.push(data),
            other => panic!("{other:?}"),
        }
        assert_eq!(ctx.port_info(c).await.unwrap().active, "false");
        // Watermarks and timeout: with a high watermark of 1 byte and a 100 ms timeout,
        // a peer that does not read makes a send time out.
        let tight = SetOpts {
            send_high_watermark: Some(1),
            send_low_watermark: Some(0),
            send_timeout_ms: Some(100),
            max_frame: Some(2 << 20),
            ..Default::default()
        };
        ctx.setopts(c, &tight).await.expect("watermarks");
        let chunk = vec![1u8; 1 << 20];
        let mut sent = 0;
        let err = loop {
            match ctx.tcp_send(c, &chunk).await {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(
                sent < 256,
                "sends never waited with a 1-byte high watermark"
            );
        };
        assert_eq!(err, NetError::Timeout);
        // A listener's options change the connections it accepts from now on.
        ctx.setopts(l, &lines).await.expect("listener setopts");
        let c2 = ctx.tcp_accept(l, Some(WAIT)).await.expect("accept 2");
        let f2 = ctx.tcp_recv(c2, Some(WAIT)).await.expect("a line on c2");
        assert_eq!(ctx.port_info(c2).await.unwrap().framing, "line");
        log.push(f2);
        log
    });
    let addr = arx.await.unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let c = prx.await.unwrap();
    s.write_all(&len4(b"framed")).await.unwrap();
    s.write_all(b"a line\n").await.unwrap();
    s.write_all(b"active\n").await.unwrap();
    let mut s2 = TcpStream::connect(&addr).await.unwrap();
    s2.write_all(b"second conn\n").await.unwrap();
    // Another process may not change the options.
    let e = in_proc(&node, move |ctx| async move {
        ctx.setopts(
            c,
            &SetOpts {
                active: Some(Active::True),
                ..Default::default()
            },
        )
        .await
    })
    .await;
    assert!(matches!(e, Err(NetError::NotOwner { .. })), "{e:?}");
    let log = done(server).await;
    assert_eq!(
        log,
        vec![
            b"framed".to_vec(),
            b"a line\n".to_vec(),
            b"active\n".to_vec(),
            b"second conn\n".to_vec()
        ]
    );
    // UDP takes only active and park.
    let e = in_proc(&node, |ctx| async move {
        let u = ctx
            .udp_open("127.0.0.1:0", &UdpOptions::default())
            .await
            .unwrap();
        let framing = SetOpts {
            framing: Some(Framing::Len4),
            ..Default::default()
        };
        let e = ctx.setopts(u, &framing).await;
        let active = SetOpts {
            active: Some(Active::Once),
            ..Default::default()
        };
        ctx.setopts(u, &active).await.expect("udp active");
        e
    })
    .await;
    assert!(
        matches!(&e, Err(NetError::InvalidArgument(m)) if m.contains("udp") && m.contains("framing")),
        "{e:?}"
    );
}

/// A listener opened with `park` outlives its owner (issue 13's gap 2): it stays bound,
/// connections made meanwhile wait in the backlog, and the restarted owner adopts it and
/// gets them, on the same port and address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_parked_listener_adopted_after_restart() {
    let node = support::node();
    let mut opts = len4_opts(Active::Once);
    opts.accept = hotswap::net::AcceptMode::ToOwner;
    opts.park = true;
    opts.label = Some("front".into());
    let (atx, arx) = tokio::sync::oneshot::channel::<(PortId, String)>();
    let (first, first_done) = spawn_proc(&node, move |ctx| async move {
        let (l, addr) = listen(&ctx, &opts).await;
        atx.send((l, addr)).unwrap();
        // Serve one connection, then stay until killed.
        let c = match event(&ctx, l).await {
            PortMsg::Accepted { port, .. } => port,
            other => panic!("{other:?}"),
        };
        if let PortMsg::Tcp { data, .. } = event(&ctx, c).await {
            ctx.tcp_send(c, &data).await.unwrap();
        }
        ctx.sleep(WAIT * 3).await;
    });
    let (l, addr) = arx.await.unwrap();
    let mut s1 = TcpStream::connect(&addr).await.unwrap();
    s1.write_all(&len4(b"one")).await.unwrap();
    assert_eq!(read_len4(&mut s1).await.unwrap(), b"one");
    node.exit(first, ExitReason::Kill);
    assert!(first_done.await.is_err());
    let parked = loop {
        let p = node
            .ports()
            .into_iter()
            .find(|p| p.id == l)
            .expect("the listener stays open");
        if p.parked {
            break p;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(parked.local, addr);
    // A client connects while nobody owns the listener: it waits in the backlog.
    let mut s2 = TcpStream::connect(&addr).await.unwrap();
    s2.write_all(&len4(b"while parked")).await.unwrap();
    let served = in_proc(&node, move |ctx| async move {
        let found = ctx.parked_ports(Some("front")).await.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].id, l);
        assert_eq!(found[0].kind, "tcp_listen");
        ctx.port_adopt(l).await.expect("adopt the listener");
        let c = match event(&ctx, l).await {
            PortMsg::Accepted { port, .. } => port,
            other => panic!("{other:?}"),
        };
        let PortMsg::Tcp { data, .. } = event(&ctx, c).await else {
            panic!("no frame")
        };
        ctx.tcp_send(c, &data).await.unwrap();
        (ctx.port_info(l).await.unwrap(), data)
    })
    .await;
    assert_eq!(served.1, b"while parked");
    assert_eq!(read_len4(&mut s2).await.unwrap(), b"while parked");
    assert_eq!(served.0.local, addr, "the same socket, never re-bound");
    assert!(!served.0.parked);
}

/// Draining a listener as the node's operator: accepting stops, open connections are
/// untouched, and the drain returns when the last one closes (or reports what is left
/// at its limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_listener_drain_waits_for_connections() {
    let node = Arc::new(support::node());
    let mut opts = len4_opts(Active::Once);
    opts.accept = hotswap::net::AcceptMode::ToOwner;
    let (atx, arx) = tokio::sync::oneshot::channel::<(PortId, String)>();
    let (_, _owner) = spawn_proc(&node, move |ctx| async move {
        let (l, addr) = listen(&ctx, &opts).await;
        atx.send((l, addr)).unwrap();
        // Echo on every connection; closed ones close their port.
        loop {
            match ctx.port_event(None, Some(WAIT * 3)).await {
                Some(PortMsg::Tcp { port, data }) => {
                    let _ = ctx.tcp_send(port, &data).await;
                    let _ = ctx.set_active(port, Active::Once);
                }
                Some(_) => {}
                None => break,
            }
        }
    });
    let (l, addr) = arx.await.unwrap();
    let mut a = TcpStream::connect(&addr).await.unwrap();
    a.write_all(&len4(b"a")).await.unwrap();
    assert_eq!(read_len4(&mut a).await.unwrap(), b"a");
    // Not drained within a short limit: one connection is open.
    let left = node.drain_listener(l, QUIET).await.unwrap();
    assert_eq!(left, 1);
    let info = node.ports().into_iter().find(|p| p.id == l).unwrap();
    assert_eq!(info.connections, Some((1, true)), "paused, one open");
    // A new client is not accepted while paused; the open one is still served.
    let mut b = TcpStream::connect(&addr).await.unwrap();
    b.write_all(&len4(b"b")).await.unwrap();
    assert!(read_len4_within(&mut b, QUIET).await.is_none());
    a.write_all(&len4(b"a2")).await.unwrap();
    assert_eq!(read_len4(&mut a).await.unwrap(), b"a2");
    // The drain waits for the last connection to close.
    let n = node.clone();
    let drain = tokio::spawn(async move { n.drain_listener(l, WAIT).await });
    drop(a);
    assert_eq!(drain.await.unwrap().unwrap(), 0, "drained");
    // Resume: the waiting client is accepted and served.
    let info = node.pause_accepting(l, false).unwrap();
    assert_eq!(info.connections.map(|c| c.1), Some(false));
    assert_eq!(read_len4(&mut b).await.unwrap(), b"b");
    // Bad targets.
    assert_eq!(
        node.pause_accepting(PortId(999_999), true),
        Err(NetError::UnknownPort(PortId(999_999)))
    );
    let conn = node
        .ports()
        .into_iter()
        .find(|p| p.kind == "tcp")
        .unwrap()
        .id;
    assert!(matches!(
        node.drain_listener(conn, QUIET).await,
        Err(NetError::WrongKind { .. })
    ));
}

/// Processes waiting in `accept` on listener `l`, as the node's port table shows them.
fn acceptors(node: &Node, l: PortId) -> usize {
    node.ports()
        .into_iter()
        .find(|p| p.id == l)
        .expect("the listener is open")
        .acceptors
}

/// Wait (bounded) until `n` processes wait in `accept` on `l`.
async fn until_acceptors(node: &Node, l: PortId, n: usize) {
    let t = Instant::now();
    while acceptors(node, l) != n {
        assert!(t.elapsed() < WAIT, "{n} acceptors never waited on {l}");
        tokio::task::yield_now().await;
    }
}

/// A process that exits while waiting in `accept` stays in the listener's accept queue;
/// the node's acceptor skips it, and the connection goes to the next live one (not to a
/// reply nobody reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_accept_skips_exited_acceptor() {
    let node = support::node();
    let (atx, arx) = tokio::sync::oneshot::channel::<(PortId, String)>();
    let (_owner, _owner_done) = spawn_proc(&node, move |ctx| async move {
        let (l, addr) = listen(&ctx, &len4_opts(Active::False)).await;
        atx.send((l, addr)).unwrap();
        ctx.sleep(WAIT * 3).await;
    });
    let (l, addr) = arx.await.unwrap();
    // A waits in accept and is killed there.
    let (a, a_done) = spawn_proc(&node, move |ctx| async move {
        let _ = ctx.tcp_accept(l, None).await;
    });
    until_acceptors(&node, l, 1).await;
    node.exit(a, ExitReason::Kill);
    assert!(a_done.await.is_err(), "A was killed in accept");
    while node.is_alive(a) {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        acceptors(&node, l),
        1,
        "the exited process's accept still waits in the queue"
    );
    // B waits behind it; then a client connects.
    let (b, b_done) = spawn_proc(&node, move |ctx| async move {
        let c = ctx.tcp_accept(l, Some(WAIT)).await?;
        let owner = ctx.port_info(c).await?.owner;
        let data = ctx.tcp_recv(c, Some(WAIT)).await?;
        ctx.tcp_send(c, &data).await?;
        Ok::<_, NetError>(owner)
    });
    until_acceptors(&node, l, 2).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&len4(b"to b")).await.unwrap();
    let owner = done(b_done)
        .await
        .expect("B accepted the connection (not the exited A)");
    assert_eq!(owner, Some(b));
    assert_eq!(read_len4(&mut s).await.unwrap(), b"to b");
    assert_eq!(acceptors(&node, l), 0, "both entries left the queue");
}

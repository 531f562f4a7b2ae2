//! TCP ports: listeners with the node's acceptor, and connections with a reader and a
//! writer task each.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BufMut;
use hotswap::net::{wire, AcceptMode, ListenOptions, NetError, SetOpts, TcpOptions};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::frame::{self, Next};
use super::{admit, deliver, emit, io_error, parse_addr, reply, Kind, Listen, Port, State};
use crate::process::NodeInner;

/// How long the acceptor waits after a failed accept before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The most a connection's reader takes from the socket at once beyond its read-ahead
/// (while the owner waits for a frame larger than the read-ahead).
const READ_SIZE: usize = 16 << 10;

/// How long a closed connection's writer may still take to flush what was queued.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

fn check(opts: &TcpOptions) -> Result<(), NetError> {
    if opts.max_frame == 0 {
        return Err(NetError::InvalidArgument(
            "max_frame must be at least 1".into(),
        ));
    }
    if opts.send_low_watermark > opts.send_high_watermark {
        return Err(NetError::InvalidArgument(format!(
            "send_low_watermark ({}) is above send_high_watermark ({})",
            opts.send_low_watermark, opts.send_high_watermark
        )));
    }
    Ok(())
}

fn socket_for(
    a: std::net::SocketAddr,
    opts: &TcpOptions,
    addr: &str,
) -> Result<TcpSocket, NetError> {
    let s = if a.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| io_error(&e, addr))?;
    let e = |e: std::io::Error| io_error(&e, addr);
    if let Some(n) = opts.recv_buffer {
        s.set_recv_buffer_size(n).map_err(e)?;
    }
    if let Some(n) = opts.send_buffer {
        s.set_send_buffer_size(n).map_err(e)?;
    }
    s.set_keepalive(opts.keepalive).map_err(e)?;
    Ok(s)
}

/// Bind and listen; the listener's id. Options of accepted connections that the kernel
/// inherits from the listening socket (buffer sizes, keepalive) are set on it.
pub(super) fn listen(
    node: &Arc<NodeInner>,
    owner: u64,
    addr: &str,
    opts: ListenOptions,
) -> Result<u64, NetError> {
    let a = parse_addr(addr)?;
    check(&opts.conn)?;
    if opts.max_connections == 0 {
        return Err(NetError::InvalidArgument(
            "max_connections must be at least 1".into(),
        ));
    }
    let s = socket_for(a, &opts.conn, addr)?;
    s.set_reuseaddr(opts.reuseaddr)
        .map_err(|e| io_error(&e, addr))?;
    s.bind(a).map_err(|e| io_error(&e, addr))?;
    let l = s.listen(opts.backlog).map_err(|e| io_error(&e, addr))?;
    let mut st = State::new(owner);
    st.local = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    st.label = opts.label.clone();
    st.park = opts.park;
    st.listen = Some(Listen {
        mode: opts.accept,
        conn: opts.conn,
        max: opts.max_connections,
        conns: 0,
        paused: false,
        acceptors: Default::default(),
        accept_errors: 0,
    });
    let p = node
        .ports()
        .insert(node, Kind::Listen, st, None, None, None);
    node.rt.spawn(acceptor(node.clone(), p.clone(), l));
    Ok(p.id)
}

/// Connect in a node task; the caller gets the connection's id (or the error) as the
/// reply tagged `tag`.
pub(super) fn connect(
    node: &Arc<NodeInner>,
    caller: u64,
    tag: u64,
    addr: String,
    opts: TcpOptions,
    timeout_ms: Option<u64>,
) -> Result<(), NetError> {
    let a = parse_addr(&addr)?;
    check(&opts)?;
    let s = socket_for(a, &opts, &addr)?;
    let n = node.clone();
    node.rt.spawn(async move {
        let r = match timeout_ms {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), s.connect(a))
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
            None => s.connect(a).await,
        };
        match r {
            Ok(stream) => {
                let id = start_conn(&n, stream, &opts, caller, None, |_| {});
                reply(&n, caller, tag, Ok(&id.to_le_bytes()));
            }
            Err(e) => reply(&n, caller, tag, Err(&io_error(&e, &addr))),
        }
    });
    Ok(())
}

/// Make a connection port of `stream` owned by `owner`, with its reader and writer.
fn start_conn(
    node: &Arc<NodeInner>,
    stream: TcpStream,
    opts: &TcpOptions,
    owner: u64,
    listener: Option<Weak<Port>>,
    announce: impl FnOnce(u64),
) -> u64 {
    let _ = stream.set_nodelay(opts.nodelay);
    let mut st = State::new(owner);
    st.local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    st.peer = stream.peer_addr().ok().map(|a| a.to_string());
    st.park = opts.park;
    st.label = opts.label.clone();
    st.active = opts.active;
    st.framing = opts.framing;
    st.max_frame = opts.max_frame;
    st.high = opts.send_high_watermark;
    st.low = opts.send_low_watermark;
    st.send_timeout = opts.send_timeout_ms.map(Duration::from_millis);
    st.send_timeout_close = opts.send_timeout_close;
    st.read_ahead = node.ports().read_ahead();
    let s = Arc::new(stream);
    let p = node
        .ports()
        .insert(node, Kind::Tcp, st, listener, None, Some(s.clone()));
    // Announced before the reader runs, so that the owner hears of the connection
    // before any of its data.
    announce(p.id);
    node.rt.spawn(reader(node.clone(), p.clone(), s.clone()));
    node.rt.spawn(writer(node.clone(), p.clone(), s));
    p.id
}

/// What [`pump`] left.
pub(super) enum Pumped {
    /// The port closed (an oversized frame, or the stream's end reached by the owner).
    Closed,
    /// Open; `short`: the owner wants a frame that is not complete in the read-ahead.
    Open { short: bool },
}

/// Deliver the complete frames of the read-ahead while the owner wants them (the active
/// mode counts them down, exactly as if the reader had just read them); close the port
/// when the owner reaches an oversized frame or the stream's end. Runs on the reader and
/// on the owner's own thread (`set_active`, `recv`). Call with `st` locked.
pub(super) fn pump(node: &NodeInner, p: &Port, st: &mut State) -> Pumped {
    if st.closed {
        return Pumped::Closed;
    }
    if st.rx_end.is_none() {
        if let Some(e) = st.write_error.clone() {
            st.rx_end = Some(Some(e));
        }
    }
    let mut short = false;
    while st.wants() {
        match frame::next(st.framing, st.max_frame, &st.rxbuf[st.rx_start..]) {
            Next::Frame { skip, len } => {
                let at = st.rx_start + skip;
                let buf = std::mem::take(&mut st.rxbuf);
                deliver(node, p, st, &buf[at..at + len]);
                st.rxbuf = buf;
                st.rx_start = at + len;
            }
            Next::TooLarge(len) => {
                let e = format!(
                    "{}; the connection was closed",
                    NetError::FrameTooLarge {
                        len,
                        max: st.max_frame
                    }
                );
                node.ports().close(node, p, st, Some((Some(e), true)));
                return Pumped::Closed;
            }
            Next::Need => {
                if let Some(reason) = st.rx_end.take() {
                    let left = st.rxbuf.len() - st.rx_start;
                    let reason = reason.or_else(|| frame::leftover_error(st.framing, left));
                    node.ports().close(node, p, st, Some((reason, true)));
                    return Pumped::Closed;
                }
                short = true;
                break;
            }
        }
    }
    if st.rx_start == st.rxbuf.len() {
        st.rxbuf.clear();
        st.rx_start = 0;
    }
    Pumped::Open { short }
}

/// How many bytes the reader may read now: up to the read-ahead bound, or (when the owner
/// wants a frame still incomplete, `short`) a read's worth more; 0 while the port is
/// parked, closed or its stream ended. Call with `st` locked.
pub(super) fn read_cap(st: &State, short: bool) -> usize {
    if st.closed || st.owner.is_none() || st.rx_end.is_some() {
        return 0;
    }
    let room = st.read_ahead.saturating_sub(st.rxbuf.len() - st.rx_start);
    if short {
        room.max(READ_SIZE)
    } else {
        room
    }
}

/// The reader: waits on the socket while the read-ahead has room (whether or not the
/// owner asked for data), reads into the port's state and delivers what the owner wants.
/// It waits to be woken instead only while it may not read (read-ahead full, parked, the
/// stream ended): `set_active`/`recv` deliver buffered frames themselves and wake it only
/// then, so an owner re-arming `{active, once}` costs no task wake-up.
async fn reader(node: Arc<NodeInner>, p: Arc<Port>, rd: Arc<TcpStream>) {
    loop {
        let n = p.rx.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        let cap = {
            let mut st = p.st.lock();
            let short = match pump(&node, &p, &mut st) {
                Pumped::Closed => return,
                Pumped::Open { short } => short,
            };
            let cap = read_cap(&st, short);
            st.rx_idle = cap == 0;
            cap
        };
        if cap == 0 {
            n.await;
            continue;
        }
        let ready = tokio::select! {
            r = rd.readable() => r,
            _ = &mut n => continue,
        };
        let mut st = p.st.lock();
        if st.closed {
            return;
        }
        if let Err(e) = ready {
            st.rx_end = Some(Some(format!("receive failed: {e}")));
            continue;
        }
        // The state may have changed while waiting: the bound as of now.
        let short = matches!(
            frame::next(st.framing, st.max_frame, &st.rxbuf[st.rx_start..]),
            Next::Need
        ) && st.wants();
        let cap = read_cap(&st, short);
        if cap == 0 {
            continue;
        }
        if st.rx_start > 0 {
            let start = st.rx_start;
            st.rxbuf.drain(..start);
            st.rx_start = 0;
        }
        st.rxbuf.reserve(cap.min(READ_SIZE));
        let room = cap.min(st.rxbuf.capacity() - st.rxbuf.len());
        let buf = &mut st.rxbuf;
        let mut short = None;
        // The read runs inside `try_io` so that a short read (the socket's queue drained)
        // clears the socket's readiness as of *before* the read, as tokio's own
        // `poll_read` does: the next wait then goes straight to the I/O driver instead of
        // costing one more `recv` that would block, on the way to the owner. Bytes that
        // arrive after the read are a new readiness event, which this does not clear.
        let r = rd.try_io(Interest::READABLE, || {
            match rd.try_read_buf(&mut buf.limit(cap)) {
                Ok(k) if k > 0 && k < room => {
                    short = Some(k);
                    Err(std::io::ErrorKind::WouldBlock.into())
                }
                r => r,
            }
        });
        match short.map_or(r, Ok) {
            Ok(0) => st.rx_end = Some(None),
            Ok(k) => {
                st.bytes_in += k as u64;
                crate::stamps::record(crate::stamps::Stage::Read);
                crate::process::sched::note_io();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => st.rx_end = Some(Some(format!("receive failed: {e}"))),
        }
    }
}

/// Set the socket options of `o` that live in the kernel on connection `s`.
pub(super) fn set_socket_options(s: &TcpStream, o: &SetOpts) -> std::io::Result<()> {
    if let Some(v) = o.nodelay {
        s.set_nodelay(v)?;
    }
    let int_opts = [
        (libc::SO_KEEPALIVE, o.keepalive.map(libc::c_int::from)),
        (libc::SO_RCVBUF, o.recv_buffer.map(clamp_int)),
        (libc::SO_SNDBUF, o.send_buffer.map(clamp_int)),
    ];
    for (name, v) in int_opts {
        if let Some(v) = v {
            setsockopt_int(s, libc::SOL_SOCKET, name, v)?;
        }
    }
    Ok(())
}

fn clamp_int(n: u32) -> libc::c_int {
    libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX)
}

/// `setsockopt(fd, level, name, &v, sizeof v)` for an `int` option.
fn setsockopt_int(
    s: &TcpStream,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is owned by `s`, alive for the call; the option value is a
    // local `int` whose address and size are passed together and read only during it.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Write all of `b`.
async fn write_all(s: &TcpStream, mut b: &[u8]) -> std::io::Result<()> {
    while !b.is_empty() {
        s.writable().await?;
        match s.try_write(b) {
            Ok(n) => b = &b[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Resolves a grace period after the port closed.
async fn closed_then(p: &Port, grace: Duration) {
    loop {
        let n = p.tx.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        if p.st.lock().closed {
            break;
        }
        n.await;
    }
    tokio::time::sleep(grace).await;
}

/// The writer: writes what is queued, admits waiting sends below the low watermark.
async fn writer(node: Arc<NodeInner>, p: Arc<Port>, wr: Arc<TcpStream>) {
    loop {
        let n = p.tx.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        let chunk: Option<Vec<u8>> = {
            let mut st = p.st.lock();
            if st.txq.is_empty() {
                if st.closed || st.write_shut {
                    break;
                }
                None
            } else if st.txq.len() == 1 {
                st.writing = true;
                Some(st.txq.pop_front().expect("one queued"))
            } else {
                st.writing = true;
                let mut v = Vec::with_capacity(st.tx_bytes);
                for c in st.txq.drain(..) {
                    v.extend_from_slice(&c);
                }
                Some(v)
            }
        };
        let Some(chunk) = chunk else {
            n.await;
            continue;
        };
        let len = chunk.len();
        let r = tokio::select! {
            r = write_all(&wr, &chunk) => r,
            _ = closed_then(&p, CLOSE_GRACE) => Err(std::io::Error::other("closed before the queue drained")),
        };
        let failed = {
            let mut st = p.st.lock();
            st.writing = false;
            match r {
                Ok(()) => {
                    st.tx_bytes -= len;
                    st.bytes_out += len as u64;
                    crate::process::sched::note_io();
                    if st.tx_bytes <= st.low {
                        admit(&node, &mut st);
                    }
                    false
                }
                Err(e) => {
                    st.write_error = Some(format!("send failed: {e}"));
                    st.txq.clear();
                    st.tx_bytes = 0;
                    let closed = NetError::Closed(hotswap::net::PortId(p.id));
                    for w in st.waiters.drain(..) {
                        reply(&node, w.pid, w.tag, Err(&closed));
                    }
                    true
                }
            }
        };
        if failed {
            p.rx.notify_one();
            return;
        }
    }
    shutdown_write(&wr);
}

/// Send FIN (`shutdown(SHUT_WR)`): the peer reads end-of-file once the queue is out.
fn shutdown_write(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is owned by `s`, which is alive for the call; `shutdown`
    // only changes the socket's state and cannot invalidate the descriptor.
    unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) };
}

/// The acceptor of a listener: accepts while a process waits in `accept` (or, in
/// `ToOwner` mode, while the owner lives), below `max_connections`, unless paused.
async fn acceptor(node: Arc<NodeInner>, p: Arc<Port>, l: TcpListener) {
    let local = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut spare: Option<(TcpStream, std::net::SocketAddr)> = None;
    // Failed accepts in a row (0: accepting normally).
    let mut failing: u64 = 0;
    loop {
        let n = p.rx.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        let ready = {
            let st = p.st.lock();
            if st.closed {
                return;
            }
            let ls = st.listen.as_ref().expect("listener state");
            !ls.paused
                && ls.conns < ls.max
                && match ls.mode {
                    AcceptMode::ToOwner => st.owner.is_some(),
                    AcceptMode::Manual => !ls.acceptors.is_empty(),
                }
        };
        if !ready {
            n.await;
            continue;
        }
        let r = match spare.take() {
            Some(s) => Ok(s),
            None => tokio::select! {
                r = l.accept() => r,
                _ = &mut n => continue,
            },
        };
        match r {
            Ok((stream, peer)) => {
                if failing > 0 {
                    tracing::info!(
                        port = %hotswap::net::PortId(p.id),
                        "listener {} ({local}): accepting again after {failing} failed attempts",
                        hotswap::net::PortId(p.id)
                    );
                    failing = 0;
                }
                let mut st = p.st.lock();
                if st.closed {
                    return;
                }
                let owner = st.owner;
                let ls = st.listen.as_mut().expect("listener state");
                let target = match ls.mode {
                    // A waiting acceptor whose process has exited (e.g. the owner of a
                    // parked listener) is skipped: the connection goes to a live one.
                    AcceptMode::Manual => std::iter::from_fn(|| ls.acceptors.pop_front())
                        .find(|a| {
                            node.table
                                .get(a.pid)
                                .is_some_and(|w| !w.inner.lock().exited)
                        })
                        .map(|a| (Some((a.pid, a.tag)), a.owner)),
                    AcceptMode::ToOwner => owner.map(|o| (None, o)),
                };
                let Some((waiter, owner)) = target else {
                    // The waiting acceptor gave up meanwhile: keep the connection for the
                    // next one.
                    spare = Some((stream, peer));
                    continue;
                };
                ls.conns += 1;
                let conn = ls.conn.clone();
                st.msgs_in += 1;
                let st = &st;
                start_conn(
                    &node,
                    stream,
                    &conn,
                    owner,
                    Some(Arc::downgrade(&p)),
                    |id| match waiter {
                        Some((pid, tag)) => reply(&node, pid, tag, Ok(&id.to_le_bytes())),
                        None => {
                            let mut body = id.to_le_bytes().to_vec();
                            body.extend_from_slice(peer.to_string().as_bytes());
                            emit(&node, st, p.id, wire::ACCEPTED, &body);
                        }
                    },
                );
            }
            Err(e) => {
                failing += 1;
                let err = io_error(&e, &local);
                let scarce = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                {
                    let mut st = p.st.lock();
                    if st.closed {
                        return;
                    }
                    let Some(ls) = st.listen.as_mut() else { return };
                    ls.accept_errors += 1;
                    let manual = ls.mode == AcceptMode::Manual;
                    if scarce {
                        // The connection waits in the backlog: keep the waiting acceptors
                        // and retry; say so once per episode, not once per attempt.
                        if failing == 1 {
                            tracing::warn!(
                                port = %hotswap::net::PortId(p.id),
                                "listener {} ({local}): accept failed: {err}; retrying every {} ms until descriptors are free (new connections wait in the backlog)",
                                hotswap::net::PortId(p.id),
                                ACCEPT_BACKOFF.as_millis()
                            );
                            emit(
                                &node,
                                &st,
                                p.id,
                                wire::TCP_ERROR,
                                format!("accept failed: {err}; the node keeps retrying").as_bytes(),
                            );
                        }
                    } else if manual {
                        if let Some(a) = st.listen.as_mut().and_then(|l| l.acceptors.pop_front()) {
                            reply(&node, a.pid, a.tag, Err(&err));
                        }
                    } else {
                        emit(
                            &node,
                            &st,
                            p.id,
                            wire::TCP_ERROR,
                            format!("accept failed: {err}").as_bytes(),
                        );
                    }
                }
                // Back off instead of spinning (ranch sleeps 100 ms on emfile). A
                // connection of this listener closing (a descriptor freed), or the
                // listener changing, ends the wait early.
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    _ = &mut n => {}
                }
            }
        }
    }
}

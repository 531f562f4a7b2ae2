//! Ports: sockets owned by the node, used by processes (`hotswap::net` is the module side).
//!
//! # Model
//! Every socket lives in the node's port table; a process holds a port id. Module code
//! never sees a file descriptor or a tokio object, so loading, upgrading or purging a
//! module never touches a socket. Each port has tasks of the node (a reader and a writer
//! for a connection, an acceptor for a listener, a reader for UDP) and one owner process.
//!
//! # Protocol (who may do what, under which lock)
//! * A port's [`State`] mutex guards its owner, mode, pending receive, send queue and
//!   counters. Events are posted to the owner **while that lock is held**, so an ownership
//!   change (which takes the same lock, then the old owner's mailbox lock) sees every event
//!   either in the old mailbox (and moves it, in order) or not at all (and the event goes
//!   to the new owner). Lock order: port state, then process locks; never the reverse.
//! * A connection's reader reads ahead, up to the port's `read_ahead` bytes, whether or not
//!   the owner wants data now (more only to complete a frame the owner waits for), into
//!   the port's state; frames are delivered only while someone wants them (a pending
//!   passive receive, or an active mode with credit), by the reader or, when the owner
//!   re-arms, from the owner's thread. Bytes read but not delivered stay in the node, in
//!   the port's state, across any code change and ownership move.
//! * Owners are watched through monitors held by one host-side watcher process: when an
//!   owner exits, its ports close, or park (owner `None`, reads paused) when opened with
//!   `park`.
//! * A pending operation (receive, accept, a send above the high watermark, connect) is
//!   always answered with a `MSG_REPLY` tagged as the caller asked: a value, an error, or
//!   a timeout the node enforces.

mod frame;
pub(crate) mod host;
mod tcp;
mod udp;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use hotswap::net::{
    wire, AcceptMode, Active, Framing, NetError, PortId, PortInfo, SetOpts, TcpOptions,
};
use hotswap::Pid;
use hotswap_abi as abi;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::process::NodeInner;
use crate::process::{Payload, Process};
use crate::stamps;
use crate::util::{FxMap, FxSet};

/// The kind of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Listen,
    Udp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Listen => "tcp_listen",
            Kind::Udp => "udp",
        }
    }
}

/// A send waiting for the queue to drain.
struct Waiter {
    pid: u64,
    tag: u64,
    seq: u64,
    data: Vec<u8>,
}

/// A process waiting in `accept`.
struct Acceptor {
    pid: u64,
    tag: u64,
    seq: u64,
    owner: u64,
}

/// Listener state.
pub(crate) struct Listen {
    mode: AcceptMode,
    conn: TcpOptions,
    max: usize,
    conns: usize,
    paused: bool,
    acceptors: VecDeque<Acceptor>,
    /// Failed accepts since the listener opened.
    accept_errors: u64,
}

/// Everything about a port that changes; see the module docs for the locking protocol.
pub(crate) struct State {
    /// `None`: parked.
    owner: Option<u64>,
    park: bool,
    closed: bool,
    label: Option<String>,
    local: String,
    peer: Option<String>,
    active: Active,
    /// A pending passive receive: `(pid, tag, seq)`.
    recv: Option<(u64, u64, u64)>,
    framing: Framing,
    max_frame: usize,
    bytes_in: u64,
    bytes_out: u64,
    msgs_in: u64,
    msgs_out: u64,
    /// A UDP port's datagram held by its reader (connections count `rxbuf` instead).
    rx_buffered: usize,
    /// A connection's read-ahead: bytes read from the socket and not delivered yet are
    /// `rxbuf[rx_start..]` (the partial frame included). Kept here, not in the reader, so
    /// that the owner's thread can deliver a buffered frame itself (see [`tcp::pump`]).
    rxbuf: Vec<u8>,
    rx_start: usize,
    /// The stream ended after the bytes in `rxbuf`: `Some(None)` the peer closed,
    /// `Some(Some(reason))` an error.
    rx_end: Option<Option<String>>,
    /// How many bytes the reader reads ahead of what the owner asked for.
    read_ahead: usize,
    /// The reader waits to be woken (not for the socket): set by the reader, under this
    /// lock, before it waits.
    rx_idle: bool,
    txq: VecDeque<Vec<u8>>,
    tx_bytes: usize,
    waiters: VecDeque<Waiter>,
    high: usize,
    low: usize,
    send_timeout: Option<Duration>,
    send_timeout_close: bool,
    /// The writer failed (the reader reports it as the connection's end).
    write_error: Option<String>,
    /// No more sends (`shutdown(write)`): the writer ends after draining.
    write_shut: bool,
    /// The writer holds bytes taken from the queue that are not written yet (a send may
    /// then not write directly: it would overtake them).
    writing: bool,
    /// Listener state (listeners only).
    listen: Option<Listen>,
}

impl State {
    fn new(owner: u64) -> State {
        State {
            owner: Some(owner),
            park: false,
            closed: false,
            label: None,
            local: String::new(),
            peer: None,
            active: Active::False,
            recv: None,
            framing: Framing::Raw,
            max_frame: 8 << 20,
            bytes_in: 0,
            bytes_out: 0,
            msgs_in: 0,
            msgs_out: 0,
            rx_buffered: 0,
            rxbuf: Vec::new(),
            rx_start: 0,
            rx_end: None,
            read_ahead: 0,
            rx_idle: false,
            txq: VecDeque::new(),
            tx_bytes: 0,
            waiters: VecDeque::new(),
            high: 64 << 10,
            low: 32 << 10,
            send_timeout: None,
            send_timeout_close: false,
            write_error: None,
            write_shut: false,
            writing: false,
            listen: None,
        }
    }

    /// Whether the reader should produce something now.
    fn wants(&self) -> bool {
        self.owner.is_some()
            && !self.closed
            && (self.recv.is_some() || self.active != Active::False)
    }
}

/// A port: id, kind, state and the notifiers of its tasks.
pub(crate) struct Port {
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    pub(crate) st: Mutex<State>,
    /// Wakes the reader (or acceptor): mode, owner or state changed.
    pub(crate) rx: Notify,
    /// Wakes the writer: something queued, or the port closed.
    pub(crate) tx: Notify,
    /// A listener's open connections reached 0 (wakes [`Ports::drain`]).
    drained: Notify,
    /// The listener that accepted this connection (its connection count).
    listener: Option<Weak<Port>>,
    /// A UDP port's socket (sends go straight to it).
    udp: Option<Arc<tokio::net::UdpSocket>>,
    /// A connection's socket, shared by its reader, its writer and the send fast path.
    tcp: Option<Arc<tokio::net::TcpStream>>,
}

impl NodeInner {
    /// The node's port table, made at its first use. It lives in a slot of the node's
    /// shared state whose type only this layer knows (`NodeInner::net`).
    pub(crate) fn ports(&self) -> &Ports {
        self.net
            .get_or_init(|| Box::new(Ports::default()))
            .downcast_ref::<Ports>()
            .expect("NodeInner::net holds the port table: only net/ sets it")
    }
}

/// The node's port table.
pub(crate) struct Ports {
    table: Mutex<FxMap<u64, Arc<Port>>>,
    next: AtomicU64,
    seq: AtomicU64,
    watcher: OnceLock<Arc<Process>>,
    watched: Mutex<FxSet<u64>>,
    /// The read-ahead of connections opened from now on, in bytes.
    read_ahead: AtomicUsize,
}

/// The read-ahead of a connection unless the node is configured otherwise (the reader's
/// read size, so a connection's buffer is no larger than without read-ahead).
pub(crate) const DEFAULT_READ_AHEAD: usize = 16 << 10;

impl Default for Ports {
    fn default() -> Self {
        Ports {
            table: Mutex::new(FxMap::default()),
            next: AtomicU64::new(1),
            seq: AtomicU64::new(1),
            watcher: OnceLock::new(),
            watched: Mutex::new(FxSet::default()),
            read_ahead: AtomicUsize::new(DEFAULT_READ_AHEAD),
        }
    }
}

/// Hand one frame (or datagram) to whoever wants it: the pending passive receive, or
/// the owner as a message (then the active mode counts it down). Call with `st` locked.
fn deliver(node: &NodeInner, p: &Port, st: &mut State, body: &[u8]) {
    st.msgs_in += 1;
    if let Some((pid, tag, _)) = st.recv.take() {
        reply(node, pid, tag, Ok(body));
        return;
    }
    let (data_tag, passive_tag) = match p.kind {
        Kind::Udp => (wire::UDP, wire::UDP_PASSIVE),
        _ => (wire::TCP, wire::TCP_PASSIVE),
    };
    emit(node, st, p.id, data_tag, body);
    stamps::record(stamps::Stage::Post);
    match st.active {
        Active::Once => st.active = Active::False,
        Active::N(k) if k <= 1 => {
            st.active = Active::False;
            emit(node, st, p.id, passive_tag, &[]);
        }
        Active::N(k) => st.active = Active::N(k - 1),
        Active::True | Active::False => {}
    }
}

/// Post a port event to the port's owner (call with the port's state locked).
fn emit(node: &NodeInner, st: &State, id: u64, tag: u8, body: &[u8]) {
    if let Some(owner) = st.owner {
        node.post(
            0,
            owner,
            abi::MSG_PORT,
            id,
            Payload::from_vec(wire::encode_event(tag, body)),
        );
    }
}

/// Answer a pending operation.
fn reply(node: &NodeInner, pid: u64, tag: u64, r: Result<&[u8], &NetError>) {
    let mut v = Vec::new();
    match r {
        Ok(b) => {
            v.reserve(1 + b.len());
            v.push(wire::R_OK);
            v.extend_from_slice(b);
        }
        Err(e) => {
            v.push(wire::R_ERR);
            hotswap::codec::encode_into(&mut v, e);
        }
    }
    node.post(0, pid, abi::MSG_REPLY, tag, Payload::from_vec(v));
}

/// Map an OS error to the error the owner sees.
fn io_error(e: &std::io::Error, addr: &str) -> NetError {
    use std::io::ErrorKind as K;
    if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) {
        return NetError::TooManyOpenFiles;
    }
    match e.kind() {
        K::AddrInUse => NetError::AddrInUse(addr.into()),
        K::ConnectionRefused => NetError::ConnectionRefused(addr.into()),
        K::TimedOut => NetError::Timeout,
        _ => NetError::Io(format!("{addr}: {e}")),
    }
}

fn parse_addr(addr: &str) -> Result<std::net::SocketAddr, NetError> {
    addr.parse().map_err(|_| {
        NetError::InvalidArgument(format!(
            "{addr:?} is not a socket address (ip:port, e.g. 127.0.0.1:4000 or [::1]:4000)"
        ))
    })
}

fn active_text(a: Active) -> String {
    match a {
        Active::False => "false".into(),
        Active::Once => "once".into(),
        Active::N(n) => n.to_string(),
        Active::True => "true".into(),
    }
}

/// What an operation answers at once.
pub(crate) enum Now {
    /// The value.
    Value(Vec<u8>),
    /// The answer will come as a reply tagged as asked.
    Later,
}

impl Ports {
    /// Set the read-ahead of connections opened from now on (see `NodeConfig::read_ahead`).
    pub(crate) fn set_read_ahead(&self, bytes: usize) {
        self.read_ahead.store(bytes, Ordering::Relaxed);
    }

    /// The read-ahead of a connection opened now.
    fn read_ahead(&self) -> usize {
        self.read_ahead.load(Ordering::Relaxed)
    }

    fn seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A port by id, or the error naming why there is none.
    fn get(&self, id: u64) -> Result<Arc<Port>, NetError> {
        if let Some(p) = self.table.lock().get(&id) {
            return Ok(p.clone());
        }
        if id != 0 && id < self.next.load(Ordering::Relaxed) {
            Err(NetError::Closed(PortId(id)))
        } else {
            Err(NetError::UnknownPort(PortId(id)))
        }
    }

    /// A port `caller` owns, of one of `kinds`.
    fn owned(&self, id: u64, caller: u64, kinds: &[Kind]) -> Result<Arc<Port>, NetError> {
        let p = self.get(id)?;
        if !kinds.contains(&p.kind) {
            return Err(NetError::WrongKind {
                port: PortId(id),
                kind: p.kind.name().into(),
                needs: kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(" or "),
            });
        }
        let owner = p.st.lock().owner;
        if owner != Some(caller) {
            return Err(NetError::NotOwner {
                port: PortId(id),
                owner: owner.map(Pid),
            });
        }
        Ok(p)
    }

    /// Add a port to the table, owned by `owner` (watched from now on).
    fn insert(
        &self,
        node: &Arc<NodeInner>,
        kind: Kind,
        st: State,
        listener: Option<Weak<Port>>,
        udp: Option<Arc<tokio::net::UdpSocket>>,
        tcp: Option<Arc<tokio::net::TcpStream>>,
    ) -> Arc<Port> {
        let owner = st.owner;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = &tcp {
            crate::process::sched::watch_io(s);
        } else if let Some(s) = &udp {
            crate::process::sched::watch_io(s);
        }
        let p = Arc::new(Port {
            id,
            kind,
            st: Mutex::new(st),
            rx: Notify::new(),
            tx: Notify::new(),
            drained: Notify::new(),
            listener,
            udp,
            tcp,
        });
        self.table.lock().insert(id, p.clone());
        if let Some(o) = owner {
            self.watch(node, o);
        }
        p
    }

    /// Close a port: out of the table, pending operations answered, tasks woken to end
    /// (the writer still writes what was queued). `end` is posted to the owner first
    /// (an error and/or the closed event), if given.
    fn close(
        &self,
        node: &NodeInner,
        p: &Port,
        st: &mut State,
        end: Option<(Option<String>, bool)>,
    ) {
        if st.closed {
            return;
        }
        st.closed = true;
        self.table.lock().remove(&p.id);
        let closed = NetError::Closed(PortId(p.id));
        let had_recv = st.recv.take();
        if let Some((pid, tag, _)) = had_recv {
            // A passive receive learns of the end as its result (`{error, closed}`), not
            // as messages.
            let e = match &end {
                Some((Some(reason), _)) => NetError::Io(reason.clone()),
                _ => closed.clone(),
            };
            reply(node, pid, tag, Err(&e));
        }
        let end = if had_recv.is_some() { None } else { end };
        for w in st.waiters.drain(..) {
            reply(node, w.pid, w.tag, Err(&closed));
        }
        if let Some(l) = st.listen.as_mut() {
            for a in l.acceptors.drain(..) {
                reply(node, a.pid, a.tag, Err(&closed));
            }
        }
        if let Some((error, closed_event)) = end {
            let (etag, ctag) = match p.kind {
                Kind::Udp => (wire::UDP_ERROR, None),
                _ => (wire::TCP_ERROR, Some(wire::TCP_CLOSED)),
            };
            if let Some(e) = error {
                emit(node, st, p.id, etag, e.as_bytes());
            }
            if let (true, Some(c)) = (closed_event, ctag) {
                emit(node, st, p.id, c, &[]);
            }
        }
        if let Some(l) = p.listener.as_ref().and_then(Weak::upgrade) {
            if let Some(ls) = l.st.lock().listen.as_mut() {
                ls.conns = ls.conns.saturating_sub(1);
                if ls.conns == 0 {
                    l.drained.notify_waiters();
                }
            }
            l.rx.notify_one();
        }
        p.rx.notify_one();
        p.tx.notify_one();
        p.drained.notify_waiters();
    }

    /// Start watching `pid` (one monitor per owner, held by the watcher process).
    fn watch(&self, node: &Arc<NodeInner>, pid: u64) {
        if !self.watched.lock().insert(pid) {
            return;
        }
        let w = self.watcher.get_or_init(|| {
            let (p, notify) = Process::new_host(node.new_pid(), node.clone());
            node.table.insert(p.clone());
            let (w, n) = (p.clone(), node.clone());
            node.rt.spawn(async move { watch_loop(n, w, notify).await });
            p
        });
        crate::process::ops::monitor(w, pid);
    }

    /// The owner `pid` exited: its ports close, or park.
    fn owner_exited(&self, node: &NodeInner, pid: u64) {
        self.watched.lock().remove(&pid);
        let ports: Vec<Arc<Port>> = self.table.lock().values().cloned().collect();
        for p in ports {
            let mut st = p.st.lock();
            if st.owner != Some(pid) {
                continue;
            }
            if st.park {
                st.owner = None;
                st.recv = None;
                st.waiters.clear();
                if let Some(l) = st.listen.as_mut() {
                    l.acceptors.retain(|a| a.pid != pid);
                }
            } else {
                self.close(node, &p, &mut st, None);
            }
        }
    }

    /// Close every port (the node stops).
    pub(crate) fn close_all(&self, node: &NodeInner) {
        let ports: Vec<Arc<Port>> = self.table.lock().values().cloned().collect();
        for p in ports {
            let mut st = p.st.lock();
            self.close(node, &p, &mut st, None);
        }
    }

    fn info_of(&self, p: &Port) -> PortInfo {
        let st = p.st.lock();
        PortInfo {
            id: PortId(p.id),
            kind: p.kind.name().into(),
            owner: st.owner.map(Pid),
            local: st.local.clone(),
            peer: st.peer.clone(),
            bytes_in: st.bytes_in,
            bytes_out: st.bytes_out,
            msgs_in: st.msgs_in,
            msgs_out: st.msgs_out,
            rx_buffered: st.rx_buffered + (st.rxbuf.len() - st.rx_start),
            tx_queued: st.tx_bytes,
            tx_waiting: st.waiters.len(),
            active: active_text(st.active),
            framing: format!("{:?}", st.framing).to_lowercase(),
            parked: st.owner.is_none(),
            label: st.label.clone(),
            connections: st.listen.as_ref().map(|l| (l.conns, l.paused)),
            accept_errors: st.listen.as_ref().map_or(0, |l| l.accept_errors),
            acceptors: st.listen.as_ref().map_or(0, |l| l.acceptors.len()),
        }
    }

    /// Every port, by id.
    pub(crate) fn list(&self) -> Vec<PortInfo> {
        let mut ports: Vec<Arc<Port>> = self.table.lock().values().cloned().collect();
        ports.sort_by_key(|p| p.id);
        ports.iter().map(|p| self.info_of(p)).collect()
    }

    /// Set the active mode.
    fn set_active(
        &self,
        node: &NodeInner,
        caller: u64,
        id: u64,
        a: Active,
    ) -> Result<(), NetError> {
        let p = self.owned(id, caller, &[Kind::Tcp, Kind::Udp])?;
        let mut st = p.st.lock();
        check_active(&st, a)?;
        apply_active(node, &p, &mut st, a);
        let wake = rx_changed(node, &p, &mut st);
        drop(st);
        if wake {
            p.rx.notify_one();
        }
        Ok(())
    }

    /// `inet:setopts`: check every option first, then change them all (or none).
    fn setopts(&self, node: &NodeInner, caller: u64, id: u64, o: SetOpts) -> Result<(), NetError> {
        let p = self.owned(id, caller, &[Kind::Tcp, Kind::Udp, Kind::Listen])?;
        let bad = |m: String| Err(NetError::InvalidArgument(m));
        for (name, zero) in [
            ("max_frame", o.max_frame == Some(0)),
            ("recv_buffer", o.recv_buffer == Some(0)),
            ("send_buffer", o.send_buffer == Some(0)),
            ("send_high_watermark", o.send_high_watermark == Some(0)),
        ] {
            if zero {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if p.kind == Kind::Udp {
            let tcp_only = [
                ("framing", o.framing.is_some()),
                ("max_frame", o.max_frame.is_some()),
                ("nodelay", o.nodelay.is_some()),
                ("keepalive", o.keepalive.is_some()),
                ("recv_buffer", o.recv_buffer.is_some()),
                ("send_buffer", o.send_buffer.is_some()),
                ("send_high_watermark", o.send_high_watermark.is_some()),
                ("send_low_watermark", o.send_low_watermark.is_some()),
                ("send_timeout_ms", o.send_timeout_ms.is_some()),
                ("send_timeout_close", o.send_timeout_close.is_some()),
            ];
            if let Some((name, _)) = tcp_only.iter().find(|(_, set)| *set) {
                return bad(format!(
                    "{name} does not apply to a udp port {}: it takes only active and park",
                    PortId(id)
                ));
            }
        }
        let mut st = p.st.lock();
        if p.kind == Kind::Listen {
            let Some(ls) = st.listen.as_mut() else {
                return bad("a listener without listener state".into());
            };
            let mut c = ls.conn.clone();
            merge(&mut c, &o);
            check_watermarks(c.send_high_watermark, c.send_low_watermark)?;
            ls.conn = c;
            return Ok(());
        }
        let (high, low) = (
            o.send_high_watermark.unwrap_or(st.high),
            o.send_low_watermark.unwrap_or(st.low),
        );
        check_watermarks(high, low)?;
        if let Some(a) = o.active {
            check_active(&st, a)?;
        }
        if let Some(s) = p.tcp.as_deref() {
            tcp::set_socket_options(s, &o).map_err(|e| io_error(&e, &st.local))?;
        }
        if let Some(f) = o.framing {
            st.framing = f;
        }
        if let Some(m) = o.max_frame {
            st.max_frame = m;
        }
        (st.high, st.low) = (high, low);
        if let Some(t) = o.send_timeout_ms {
            st.send_timeout = (t > 0).then(|| Duration::from_millis(t));
        }
        if let Some(c) = o.send_timeout_close {
            st.send_timeout_close = c;
        }
        if let Some(k) = o.park {
            st.park = k;
        }
        if let Some(a) = o.active {
            apply_active(node, &p, &mut st, a);
        }
        // A raised watermark may admit waiting sends now.
        let admitted = st.tx_bytes <= st.low && admit(node, &mut st);
        drop(st);
        if admitted {
            p.tx.notify_one();
        }
        p.rx.notify_one();
        Ok(())
    }

    /// Pause (`true`) or resume accepting on listener `id`, for the node's operator (no
    /// ownership needed); the listener's information afterwards.
    pub(crate) fn pause_accepting(&self, id: u64, pause: bool) -> Result<PortInfo, NetError> {
        let p = self.listener(id)?;
        if let Some(l) = p.st.lock().listen.as_mut() {
            l.paused = pause;
        }
        p.rx.notify_one();
        Ok(self.info_of(&p))
    }

    /// Drain listener `id` (ranch's `suspend_listener` + `wait_for_connections(==, 0)`):
    /// stop accepting, then wait up to `limit` until every connection it accepted has
    /// closed. The open connections left (0: drained). The listener stays open and
    /// paused (resume it, or its owner closes it).
    pub(crate) async fn drain(&self, id: u64, limit: Duration) -> Result<usize, NetError> {
        let p = self.listener(id)?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let n = p.drained.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            let conns = {
                let mut st = p.st.lock();
                if st.closed {
                    return Err(NetError::Closed(PortId(id)));
                }
                let l = st.listen.as_mut().expect("a listener has listener state");
                l.paused = true;
                l.conns
            };
            p.rx.notify_one();
            if conns == 0 {
                return Ok(0);
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                let st = p.st.lock();
                if st.closed {
                    return Err(NetError::Closed(PortId(id)));
                }
                return Ok(st.listen.as_ref().map_or(0, |l| l.conns));
            }
        }
    }

    /// Listener `id`, or why not.
    fn listener(&self, id: u64) -> Result<Arc<Port>, NetError> {
        let p = self.get(id)?;
        if p.kind != Kind::Listen {
            return Err(NetError::WrongKind {
                port: PortId(id),
                kind: p.kind.name().into(),
                needs: "tcp_listen".into(),
            });
        }
        Ok(p)
    }
}

/// Whether active mode `a` may be set now.
fn check_active(st: &State, a: Active) -> Result<(), NetError> {
    if st.recv.is_some() && a != Active::False {
        return Err(NetError::Busy(
            "a passive recv is waiting on this port; it must finish first".into(),
        ));
    }
    Ok(())
}

fn check_watermarks(high: usize, low: usize) -> Result<(), NetError> {
    if low > high {
        return Err(NetError::InvalidArgument(format!(
            "send_low_watermark ({low}) is above send_high_watermark ({high})"
        )));
    }
    Ok(())
}

/// `o` applied to connection options `c`.
fn merge(c: &mut TcpOptions, o: &SetOpts) {
    if let Some(a) = o.active {
        c.active = a;
    }
    if let Some(f) = o.framing {
        c.framing = f;
    }
    if let Some(m) = o.max_frame {
        c.max_frame = m;
    }
    if let Some(v) = o.nodelay {
        c.nodelay = v;
    }
    if let Some(v) = o.keepalive {
        c.keepalive = v;
    }
    if o.recv_buffer.is_some() {
        c.recv_buffer = o.recv_buffer;
    }
    if o.send_buffer.is_some() {
        c.send_buffer = o.send_buffer;
    }
    if let Some(v) = o.send_high_watermark {
        c.send_high_watermark = v;
    }
    if let Some(v) = o.send_low_watermark {
        c.send_low_watermark = v;
    }
    if let Some(t) = o.send_timeout_ms {
        c.send_timeout_ms = (t > 0).then_some(t);
    }
    if let Some(v) = o.send_timeout_close {
        c.send_timeout_close = v;
    }
    if let Some(v) = o.park {
        c.park = v;
    }
}

/// Move waiting sends into the queue while it is below the high watermark, answering
/// each; whether any moved. Call with `st` locked.
fn admit(node: &NodeInner, st: &mut State) -> bool {
    let mut any = false;
    while st.tx_bytes < st.high {
        let Some(w) = st.waiters.pop_front() else {
            break;
        };
        st.tx_bytes += w.data.len();
        st.msgs_out += 1;
        st.txq.push_back(w.data);
        reply(node, w.pid, w.tag, Ok(&[]));
        any = true;
    }
    any
}

/// The owner now wants data (an active mode or a passive receive was set): for a
/// connection, deliver what the read-ahead holds from this thread ([`tcp::pump`]);
/// whether the reader must be woken (always for the other kinds; for a connection only
/// when it stopped reading, its read-ahead full). Call with `st` locked.
fn rx_changed(node: &NodeInner, p: &Port, st: &mut State) -> bool {
    if p.kind != Kind::Tcp {
        return true;
    }
    match tcp::pump(node, p, st) {
        tcp::Pumped::Closed => false,
        tcp::Pumped::Open { short } => st.rx_idle && tcp::read_cap(st, short) > 0,
    }
}

/// Set the active mode (checked with [`check_active`]); call with `st` locked.
fn apply_active(node: &NodeInner, p: &Port, st: &mut State, a: Active) {
    st.active = match (st.active, a) {
        (Active::N(k), Active::N(n)) => Active::N(k.saturating_add(n)),
        (_, a) => a,
    };
    if let Active::N(n) = st.active {
        if n <= 0 {
            st.active = Active::False;
            let tag = if p.kind == Kind::Udp {
                wire::UDP_PASSIVE
            } else {
                wire::TCP_PASSIVE
            };
            emit(node, st, p.id, tag, &[]);
        }
    }
}

impl Ports {
    /// Queue a frame for sending.
    fn send(
        &self,
        node: &Arc<NodeInner>,
        caller: u64,
        id: u64,
        data: &[u8],
        tag: u64,
    ) -> Result<Now, NetError> {
        let p = self.owned(id, caller, &[Kind::Tcp])?;
        let mut st = p.st.lock();
        if st.write_error.is_some() || st.write_shut {
            return Err(NetError::Closed(PortId(id)));
        }
        let mut framed = frame::encode(st.framing, st.max_frame, data)?;
        // Fast path: nothing queued or in flight, so write straight to the socket from
        // this thread (no wake-up of the writer task); what the kernel does not take now
        // is queued for the writer.
        if st.txq.is_empty() && !st.writing && st.waiters.is_empty() {
            if let Some(s) = p.tcp.as_ref() {
                stamps::record(stamps::Stage::Write);
                match s.try_write(&framed) {
                    Ok(n) if n == framed.len() => {
                        st.bytes_out += n as u64;
                        crate::process::sched::note_io();
                        st.msgs_out += 1;
                        return Ok(Now::Value(Vec::new()));
                    }
                    Ok(n) => {
                        st.bytes_out += n as u64;
                        framed.drain(..n);
                    }
                    // Would block, or an error the writer will meet and report.
                    Err(_) => {}
                }
            }
        }
        if st.waiters.is_empty() && st.tx_bytes < st.high {
            st.tx_bytes += framed.len();
            st.txq.push_back(framed);
            st.msgs_out += 1;
            drop(st);
            p.tx.notify_one();
            return Ok(Now::Value(Vec::new()));
        }
        let seq = self.seq();
        st.waiters.push_back(Waiter {
            pid: caller,
            tag,
            seq,
            data: framed,
        });
        if let Some(t) = st.send_timeout {
            let (n, port) = (node.clone(), p.clone());
            node.rt.spawn(async move {
                tokio::time::sleep(t).await;
                let mut st = port.st.lock();
                let Some(i) = st.waiters.iter().position(|w| w.seq == seq) else {
                    return;
                };
                let w = st.waiters.remove(i).expect("found");
                reply(&n, w.pid, w.tag, Err(&NetError::Timeout));
                if st.send_timeout_close {
                    let e = format!(
                        "send timeout: the peer did not read {} queued bytes in time",
                        st.tx_bytes
                    );
                    n.ports().close(&n, &port, &mut st, Some((Some(e), true)));
                }
            });
        }
        Ok(Now::Later)
    }

    /// Start a passive receive.
    fn recv(
        &self,
        node: &Arc<NodeInner>,
        caller: u64,
        id: u64,
        tag: u64,
        timeout: Option<u64>,
    ) -> Result<Now, NetError> {
        let p = self.owned(id, caller, &[Kind::Tcp, Kind::Udp])?;
        let mut st = p.st.lock();
        if st.active != Active::False {
            return Err(NetError::Busy(format!(
                "the port is active ({}): its data arrives as messages; set it passive to recv",
                active_text(st.active)
            )));
        }
        if st.recv.is_some() {
            return Err(NetError::Busy(
                "a recv is already waiting on this port".into(),
            ));
        }
        let seq = self.seq();
        st.recv = Some((caller, tag, seq));
        let wake = rx_changed(node, &p, &mut st);
        let answered = st.recv.is_none();
        drop(st);
        if wake {
            p.rx.notify_one();
        }
        if answered {
            return Ok(Now::Later);
        }
        if let Some(ms) = timeout {
            let (n, port) = (node.clone(), p.clone());
            node.rt.spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let mut st = port.st.lock();
                if let Some((pid, tag, s)) = st.recv {
                    if s == seq {
                        st.recv = None;
                        reply(&n, pid, tag, Err(&NetError::Timeout));
                    }
                }
            });
        }
        Ok(Now::Later)
    }

    /// Move ownership, with the port's messages waiting in the old owner's mailbox.
    fn controlling_process(
        &self,
        node: &Arc<NodeInner>,
        caller: u64,
        id: u64,
        to: u64,
    ) -> Result<(), NetError> {
        let p = self.owned(id, caller, &[Kind::Tcp, Kind::Udp, Kind::Listen])?;
        if to == caller {
            return Ok(());
        }
        let Some(new) = node.table.get(to) else {
            return Err(NetError::InvalidArgument(format!(
                "{} is not a live process",
                Pid(to)
            )));
        };
        let mut st = p.st.lock();
        let mut moved = Vec::new();
        if let Some(old) = node.table.get(caller) {
            let mut g = old.inner.lock();
            while let Some(e) =
                old.take_first(&mut g, |e| e.kind == abi::MSG_PORT && e.reference == id)
            {
                moved.push(e);
            }
        }
        if new.inner.lock().exited {
            // Put them back: the move is refused as a whole.
            if let Some(old) = node.table.get(caller) {
                for e in moved {
                    old.deliver(e);
                }
            }
            return Err(NetError::InvalidArgument(format!(
                "{} is not a live process",
                Pid(to)
            )));
        }
        for e in moved {
            new.deliver(e);
        }
        st.owner = Some(to);
        if let Some((pid, tag, _)) = st.recv.take() {
            reply(
                node,
                pid,
                tag,
                Err(&NetError::NotOwner {
                    port: PortId(id),
                    owner: Some(Pid(to)),
                }),
            );
        }
        drop(st);
        self.watch(node, to);
        p.rx.notify_one();
        Ok(())
    }

    /// Handle one request from process `p`.
    pub(crate) fn request(
        &self,
        p: &Process,
        id: u64,
        req: wire::Request,
        tag: u64,
    ) -> Result<Now, NetError> {
        use wire::Request as R;
        let node = &p.node;
        let caller = p.pid.0;
        let unit = || Ok(Now::Value(Vec::new()));
        match req {
            R::Listen { addr, opts } => tcp::listen(node, caller, &addr, opts)
                .map(|id| Now::Value(id.to_le_bytes().to_vec())),
            R::Connect {
                addr,
                opts,
                timeout_ms,
            } => {
                tcp::connect(node, caller, tag, addr, opts, timeout_ms)?;
                Ok(Now::Later)
            }
            R::Accept { owner, timeout_ms } => {
                let l = self.get(id)?;
                if l.kind != Kind::Listen {
                    return Err(NetError::WrongKind {
                        port: PortId(id),
                        kind: l.kind.name().into(),
                        needs: "tcp_listen".into(),
                    });
                }
                let owner = if owner == 0 { caller } else { owner };
                let seq = self.seq();
                {
                    let mut st = l.st.lock();
                    let ls = st.listen.as_mut().expect("a listener has listener state");
                    ls.acceptors.push_back(Acceptor {
                        pid: caller,
                        tag,
                        seq,
                        owner,
                    });
                }
                l.rx.notify_one();
                if let Some(ms) = timeout_ms {
                    let (n, port) = (node.clone(), l.clone());
                    node.rt.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let mut st = port.st.lock();
                        if let Some(ls) = st.listen.as_mut() {
                            if let Some(i) = ls.acceptors.iter().position(|a| a.seq == seq) {
                                let a = ls.acceptors.remove(i).expect("found");
                                reply(&n, a.pid, a.tag, Err(&NetError::Timeout));
                            }
                        }
                    });
                }
                Ok(Now::Later)
            }
            R::Recv { timeout_ms } => self.recv(node, caller, id, tag, timeout_ms),
            R::Close => {
                let port = self.owned(id, caller, &[Kind::Tcp, Kind::Udp, Kind::Listen])?;
                let mut st = port.st.lock();
                self.close(node, &port, &mut st, None);
                unit()
            }
            R::Shutdown(how) => {
                let port = self.owned(id, caller, &[Kind::Tcp])?;
                let mut st = port.st.lock();
                match how {
                    hotswap::net::Shutdown::Write => {
                        st.write_shut = true;
                        drop(st);
                        port.tx.notify_one();
                    }
                    _ => self.close(node, &port, &mut st, None),
                }
                unit()
            }
            R::ControllingProcess(to) => self
                .controlling_process(node, caller, id, to)
                .and_then(|_| unit()),
            R::Adopt => {
                let port = self.get(id)?;
                let mut st = port.st.lock();
                if st.owner.is_some() {
                    return Err(NetError::NotParked(PortId(id)));
                }
                st.owner = Some(caller);
                drop(st);
                self.watch(node, caller);
                port.rx.notify_one();
                unit()
            }
            R::Parked(label) => {
                let v: Vec<PortInfo> = self
                    .list()
                    .into_iter()
                    .filter(|i| i.parked && (label.is_none() || i.label == label))
                    .collect();
                Ok(Now::Value(hotswap::codec::encode(&v)))
            }
            R::Info => {
                let port = self.get(id)?;
                Ok(Now::Value(hotswap::codec::encode(&self.info_of(&port))))
            }
            R::PauseAccepting(pause) => {
                let port = self.owned(id, caller, &[Kind::Listen])?;
                if let Some(l) = port.st.lock().listen.as_mut() {
                    l.paused = pause;
                }
                port.rx.notify_one();
                unit()
            }
            R::UdpOpen { addr, opts } => {
                udp::open(node, caller, &addr, opts).map(|id| Now::Value(id.to_le_bytes().to_vec()))
            }
            R::SendTo { addr, data } => {
                let port = self.owned(id, caller, &[Kind::Udp])?;
                udp::send_to(&port, &addr, &data).and_then(|_| unit())
            }
            R::SetOpts(o) => self.setopts(node, caller, id, o).and_then(|_| unit()),
        }
    }
}

/// The watcher process's loop: each `Down` of an owner closes or parks its ports.
async fn watch_loop(node: Arc<NodeInner>, w: Arc<Process>, notify: Arc<tokio::sync::Notify>) {
    loop {
        let n = notify.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        let mut downs = Vec::new();
        {
            let mut g = w.inner.lock();
            if g.exited {
                return;
            }
            while let Some(e) = w.take_first(&mut g, |_| true) {
                if e.kind == abi::MSG_DOWN {
                    downs.push(e.from);
                }
            }
        }
        for pid in downs {
            node.ports().owner_exited(&node, pid);
        }
        n.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EMFILE cannot be provoked in a shared test process without starving the other
    /// tests of descriptors (the limit is per process), so the mapping is checked here.
    #[test]
    fn os_errors_map_to_clear_net_errors() {
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(io_error(&emfile, "x"), NetError::TooManyOpenFiles);
        assert!(NetError::TooManyOpenFiles.to_string().contains("ulimit -n"));
        let inuse = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(
            io_error(&inuse, "127.0.0.1:1"),
            NetError::AddrInUse("127.0.0.1:1".into())
        );
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(matches!(
            io_error(&refused, "a"),
            NetError::ConnectionRefused(_)
        ));
        assert!(matches!(
            parse_addr("localhost"),
            Err(NetError::InvalidArgument(_))
        ));
    }
}

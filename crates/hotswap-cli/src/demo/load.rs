//! The demo's TCP clients: many connections to the chat servers (`modules/chat_v*`), each
//! joining a room and publishing sequence-numbered frames at a steady rate, checking every
//! frame that comes back. Used by `hotswap demo` and by `hotswap demo-client` (the same
//! clients against a node started by hand).
//!
//! Connection `j` of server `k` joins room `ROOM_STRIDE * k + 1 + j / room_size`, so the
//! third server holds rooms above 255 (which chat version 3 refuses). It then publishes
//! `[1] client:u32 seq:u64` (little endian, 4-byte big-endian length prefix). The server
//! sends each publication to every member of the room as `[1] vsn:u8 sender:u64 payload`;
//! the sender's own copy is its acknowledgement, and says which module version handled it.
//! A connection checks its own frames (each acknowledged once, in order) and the frames of
//! the other members (per sender: no gap, no repeat after the first one seen).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Room ids of server `k` start at `ROOM_STRIDE * k + 1`.
pub const ROOM_STRIDE: u32 = 150;

/// The largest module version byte the clients count separately.
const VERSIONS: usize = 8;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The chat servers' listen addresses, in server order.
    pub servers: Vec<SocketAddr>,
    /// Connections per server.
    pub conns_per_server: usize,
    /// Connections per room.
    pub room_size: usize,
    /// Frames per second per connection.
    pub rate: f64,
}

impl LoadConfig {
    /// All connections.
    pub fn connections(&self) -> usize {
        self.servers.len() * self.conns_per_server
    }
}

/// What a connection shows while it runs (read by the demo to pace its steps).
#[derive(Debug, Default)]
pub struct Live {
    /// Frames sent.
    pub sent: AtomicU64,
    /// Own frames acknowledged.
    pub acked: AtomicU64,
    /// Own frames acknowledged, by the version byte of the acknowledgement.
    pub by_vsn: [AtomicU64; VERSIONS],
    /// The version of the last acknowledgement, and how many in a row came from it.
    pub run_vsn: AtomicU64,
    /// See `run_vsn`.
    pub run_len: AtomicU64,
    /// The connection's id on the server (the `sender` of its acknowledgements), or
    /// `u64::MAX` before the first one.
    pub port: AtomicU64,
    /// Set by the writer while the load is held (it sends nothing then).
    pub held: AtomicBool,
    /// The connection failed (reset, closed by the peer, bad frame).
    pub failed: AtomicBool,
}

impl Live {
    /// Acknowledgements that came from version `vsn`.
    pub fn from(&self, vsn: u8) -> u64 {
        self.by_vsn
            .get(vsn as usize)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }
}

/// One connection's final account.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnReport {
    /// The server's index.
    pub server: usize,
    /// The client's number (unique over all connections).
    pub client: u32,
    /// The room it joined.
    pub room: u32,
    /// Its connection id on the server, learned from its acknowledgements.
    pub port: Option<u64>,
    /// Frames sent.
    pub sent: u64,
    /// Own frames acknowledged.
    pub acked: u64,
    /// Own frames never acknowledged (`sent - acked` at the end).
    pub lost: u64,
    /// Own sequence numbers skipped.
    pub gaps: u64,
    /// Own sequence numbers repeated (or acknowledged but never sent).
    pub duplicates: u64,
    /// Frames of other members received.
    pub foreign: u64,
    /// Skipped or repeated sequence numbers of other members.
    pub foreign_errors: u64,
    /// Frames of a wrong shape.
    pub corrupt: u64,
    /// Acknowledgements per module version byte, as `(version, count)`.
    pub versions: Vec<(u8, u64)>,
    /// The versions of its acknowledgements as runs, in order: `(version, count)`.
    pub runs: Vec<(u8, u64)>,
    /// The longest time between two acknowledgements (not counting a hold of the load),
    /// in milliseconds: the send period plus the longest pause the connection saw.
    pub longest_gap_ms: f64,
    /// Why the connection failed before the load closed it.
    pub error: Option<String>,
}

/// The load: every connection's tasks and live counters.
#[derive(Debug)]
pub struct Load {
    /// Per connection, in order (server 0's first).
    pub live: Vec<Arc<Live>>,
    /// Per connection: (server index, client number, room).
    pub conns: Vec<(usize, u32, u32)>,
    hold: Arc<AtomicBool>,
    /// Bumped by every hold and release, so a wait across a hold is not taken for a pause.
    epoch: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    close: Arc<tokio::sync::Notify>,
    closing: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<Writer>>,
    /// The writers' halves once they stopped: dropping one closes the connection's
    /// sending side, so they are kept until [`Load::finish`].
    stopped: Vec<tokio::net::tcp::OwnedWriteHalf>,
    readers: Vec<tokio::task::JoinHandle<ConnReport>>,
}

/// The room of connection `j` of server `k`.
pub fn room_of(k: usize, j: usize, room_size: usize) -> u32 {
    ROOM_STRIDE * k as u32 + 1 + (j / room_size.max(1)) as u32
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 4);
    b.extend_from_slice(&(body.len() as u32).to_be_bytes());
    b.extend_from_slice(body);
    b
}

impl Load {
    /// Open every connection (each joins its room) and start sending. Fails if a
    /// connection cannot be opened.
    pub async fn start(cfg: &LoadConfig) -> Result<Load, String> {
        let hold = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let close = Arc::new(tokio::sync::Notify::new());
        let closing = Arc::new(AtomicBool::new(false));
        let mut load = Load {
            live: Vec::new(),
            conns: Vec::new(),
            hold,
            epoch: Arc::new(AtomicU64::new(0)),
            stop,
            close,
            closing,
            writers: Vec::new(),
            stopped: Vec::new(),
            readers: Vec::new(),
        };
        let period = Duration::from_secs_f64(1.0 / cfg.rate.max(0.1));
        for (k, addr) in cfg.servers.iter().enumerate() {
            for j in 0..cfg.conns_per_server {
                let client = (k * cfg.conns_per_server + j) as u32;
                let room = room_of(k, j, cfg.room_size);
                let stream = TcpStream::connect(addr).await.map_err(|e| {
                    format!("cannot connect to chat server {} at {addr}: {e}", k + 1)
                })?;
                let _ = stream.set_nodelay(true);
                let (rd, mut wr) = stream.into_split();
                let mut join = vec![0u8];
                join.extend_from_slice(&room.to_le_bytes());
                wr.write_all(&frame(&join))
                    .await
                    .map_err(|e| format!("cannot send to chat server {} at {addr}: {e}", k + 1))?;
                let live = Arc::new(Live {
                    port: AtomicU64::new(u64::MAX),
                    ..Default::default()
                });
                load.live.push(live.clone());
                load.conns.push((k, client, room));
                // Spread the first sends over one period.
                let offset = period.mul_f64(j as f64 / cfg.conns_per_server.max(1) as f64);
                load.writers.push(tokio::spawn(writer(
                    wr,
                    client,
                    period,
                    offset,
                    live.clone(),
                    load.hold.clone(),
                    load.stop.clone(),
                )));
                let report = ConnReport {
                    server: k,
                    client,
                    room,
                    ..Default::default()
                };
                load.readers.push(tokio::spawn(reader(
                    rd,
                    report,
                    live,
                    load.epoch.clone(),
                    load.close.clone(),
                    load.closing.clone(),
                )));
            }
        }
        Ok(load)
    }

    /// Sum of a live counter over every connection.
    pub fn total(&self, f: impl Fn(&Live) -> u64) -> u64 {
        self.live.iter().map(|l| f(l)).sum()
    }

    /// Connections that failed so far.
    pub fn failed(&self) -> usize {
        self.live
            .iter()
            .filter(|l| l.failed.load(Ordering::Relaxed))
            .count()
    }

    /// Wait until every connection has `n` more acknowledgements from version `vsn` than
    /// `base` (its count then, per connection), or `limit` passes (then: how many
    /// connections fell short).
    pub async fn wait_acks(
        &self,
        vsn: u8,
        base: &[u64],
        n: u64,
        limit: Duration,
    ) -> Result<(), usize> {
        let deadline = Instant::now() + limit;
        loop {
            let short = self
                .live
                .iter()
                .zip(base)
                .filter(|(l, b)| l.from(vsn) < *b + n && !l.failed.load(Ordering::Relaxed))
                .count();
            if short == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(short);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Each connection's acknowledgements from `vsn` so far.
    pub fn acks_from(&self, vsn: u8) -> Vec<u64> {
        self.live.iter().map(|l| l.from(vsn)).collect()
    }

    /// Hold the load: the writers stop sending (sequence numbers continue afterwards), and
    /// this waits until every frame sent was acknowledged. `Err`: how many connections
    /// still wait for acknowledgements after `limit`.
    pub async fn hold(&self, limit: Duration) -> Result<(), usize> {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.hold.store(true, Ordering::SeqCst);
        self.drained(limit, true).await
    }

    /// Let the writers send again after [`Load::hold`].
    pub fn release(&self) {
        self.hold.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    async fn drained(&self, limit: Duration, held: bool) -> Result<(), usize> {
        let deadline = Instant::now() + limit;
        loop {
            let waiting = self
                .live
                .iter()
                .filter(|l| {
                    !l.failed.load(Ordering::Relaxed)
                        && ((held && !l.held.load(Ordering::SeqCst))
                            || l.acked.load(Ordering::SeqCst) < l.sent.load(Ordering::SeqCst))
                })
                .count();
            if waiting == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(waiting);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stop sending and wait (up to `limit`) until every frame sent was acknowledged; the
    /// connections stay open. `Err`: how many connections still wait.
    pub async fn stop(&mut self, limit: Duration) -> Result<(), usize> {
        self.stop.store(true, Ordering::SeqCst);
        for w in std::mem::take(&mut self.writers) {
            match w.await {
                Ok((half, e)) => {
                    if let Some(e) = e {
                        tracing::debug!("a demo client's writer failed: {e}");
                    }
                    self.stopped.push(half);
                }
                Err(e) => tracing::debug!("a demo client's writer failed: {e}"),
            }
        }
        self.drained(limit, false).await
    }

    /// Close every connection and return what each saw.
    pub async fn finish(mut self) -> Vec<ConnReport> {
        self.stop.store(true, Ordering::SeqCst);
        for w in std::mem::take(&mut self.writers) {
            let _ = w.await;
        }
        self.closing.store(true, Ordering::SeqCst);
        self.close.notify_waiters();
        let mut out = Vec::new();
        for (r, (k, client, room)) in std::mem::take(&mut self.readers)
            .into_iter()
            .zip(&self.conns)
        {
            out.push(r.await.unwrap_or_else(|e| ConnReport {
                server: *k,
                client: *client,
                room: *room,
                error: Some(format!("the reader task failed: {e}")),
                ..Default::default()
            }));
        }
        // Only now, with every reader done, close the sending sides.
        self.stopped.clear();
        out
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.closing.store(true, Ordering::SeqCst);
        self.close.notify_waiters();
    }
}

/// A writer's sending half (kept open) and why it stopped early, if it did.
type Writer = (tokio::net::tcp::OwnedWriteHalf, Option<String>);

async fn writer(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    client: u32,
    period: Duration,
    offset: Duration,
    live: Arc<Live>,
    hold: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Writer {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        ticker.tick().await;
        if stop.load(Ordering::SeqCst) {
            live.held.store(true, Ordering::SeqCst);
            return (wr, None);
        }
        if hold.load(Ordering::SeqCst) {
            live.held.store(true, Ordering::SeqCst);
            continue;
        }
        live.held.store(false, Ordering::SeqCst);
        if live.failed.load(Ordering::Relaxed) {
            return (wr, None);
        }
        seq += 1;
        let mut body = Vec::with_capacity(13);
        body.push(1);
        body.extend_from_slice(&client.to_le_bytes());
        body.extend_from_slice(&seq.to_le_bytes());
        live.sent.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = wr.write_all(&frame(&body)).await {
            live.failed.store(true, Ordering::Relaxed);
            return (wr, Some(format!("send: {e}")));
        }
    }
}

/// What a reader keeps between frames.
struct ReadState {
    r: ConnReport,
    own_next: u64,
    others: std::collections::HashMap<u32, u64>,
    last_ack: Option<Instant>,
    longest: Duration,
    epoch: u64,
}

/// Read and check frames until the connection fails.
async fn read_frames(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    st: &mut ReadState,
    live: &Live,
    epoch: &AtomicU64,
) -> std::io::Result<()> {
    let mut head = [0u8; 4];
    let mut body = Vec::new();
    loop {
        rd.read_exact(&mut head).await?;
        let n = u32::from_be_bytes(head) as usize;
        if n > 1 << 16 {
            return Err(std::io::Error::other(format!("a frame of {n} bytes")));
        }
        body.resize(n, 0);
        rd.read_exact(&mut body).await?;
        // [1] vsn sender:u64 client:u32 seq:u64
        if n != 22 || body[0] != 1 {
            st.r.corrupt += 1;
            continue;
        }
        let vsn = body[1];
        let sender = u64::from_le_bytes(body[2..10].try_into().expect("8 bytes"));
        let client = u32::from_le_bytes(body[10..14].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(body[14..22].try_into().expect("8 bytes"));
        if client != st.r.client {
            st.r.foreign += 1;
            let next = st.others.entry(client).or_insert(seq);
            if seq != *next {
                st.r.foreign_errors += 1;
            }
            *next = seq.max(*next) + 1;
            continue;
        }
        let now = Instant::now();
        let e = epoch.load(Ordering::SeqCst);
        if e != st.epoch {
            // The load was held or released since the last acknowledgement.
            st.epoch = e;
            st.last_ack = None;
        }
        if let Some(t) = st.last_ack {
            st.longest = st.longest.max(now - t);
        }
        st.last_ack = Some(now);
        st.r.port = Some(sender);
        live.port.store(sender, Ordering::Relaxed);
        if seq < st.own_next || seq > live.sent.load(Ordering::SeqCst) {
            st.r.duplicates += 1;
            continue;
        }
        if seq > st.own_next {
            st.r.gaps += seq - st.own_next;
        }
        st.own_next = seq + 1;
        match st.r.runs.last_mut() {
            Some((v, n)) if *v == vsn => *n += 1,
            _ => st.r.runs.push((vsn, 1)),
        }
        if live.run_vsn.load(Ordering::Relaxed) == vsn as u64 {
            live.run_len.fetch_add(1, Ordering::SeqCst);
        } else {
            live.run_vsn.store(vsn as u64, Ordering::SeqCst);
            live.run_len.store(1, Ordering::SeqCst);
        }
        if let Some(c) = live.by_vsn.get(vsn as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        live.acked.fetch_add(1, Ordering::SeqCst);
    }
}

/// Read and check frames until the load closes the connection (or it fails).
async fn reader(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    r: ConnReport,
    live: Arc<Live>,
    epoch: Arc<AtomicU64>,
    close: Arc<tokio::sync::Notify>,
    closing: Arc<AtomicBool>,
) -> ConnReport {
    let mut st = ReadState {
        r,
        own_next: 1,
        others: Default::default(),
        last_ack: None,
        longest: Duration::ZERO,
        epoch: epoch.load(Ordering::SeqCst),
    };
    let closed = close.notified();
    tokio::pin!(closed);
    // Registered before the flag is read, so a close between the two is not missed.
    closed.as_mut().enable();
    if !closing.load(Ordering::SeqCst) {
        tokio::select! {
            res = read_frames(&mut rd, &mut st, &live, &epoch) => {
                // An end seen after the load began closing is the load's own doing.
                match res {
                    Err(e) if !closing.load(Ordering::SeqCst) => {
                    live.failed.store(true, Ordering::Relaxed);
                    st.r.error = Some(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        "closed by the server".to_string()
                    } else {
                        e.to_string()
                    });
                    }
                    _ => {}
                }
            }
            _ = &mut closed => {}
        }
    }
    let mut r = st.r;
    r.sent = live.sent.load(Ordering::SeqCst);
    r.acked = live.acked.load(Ordering::SeqCst);
    r.lost = r.sent.saturating_sub(r.acked);
    r.versions = (0..VERSIONS as u8)
        .map(|v| (v, live.from(v)))
        .filter(|(_, n)| *n > 0)
        .collect();
    r.longest_gap_ms = st.longest.as_secs_f64() * 1e3;
    r
}

/// The sum of what the connections saw.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Totals {
    /// Connections.
    pub connections: usize,
    /// Connections that failed (reset, closed by the server, ...) before the end.
    pub dropped: usize,
    /// Frames sent.
    pub sent: u64,
    /// Own frames acknowledged.
    pub acked: u64,
    /// Frames never acknowledged.
    pub lost: u64,
    /// Own sequence numbers skipped.
    pub gaps: u64,
    /// Own frames acknowledged twice.
    pub duplicated: u64,
    /// Frames of other room members received.
    pub foreign: u64,
    /// Other members' frames skipped or repeated.
    pub foreign_errors: u64,
    /// Malformed frames.
    pub corrupt: u64,
    /// Acknowledgements per version.
    pub by_version: std::collections::BTreeMap<u8, u64>,
    /// The longest time a connection waited between two acknowledgements, in ms.
    pub longest_gap_ms: f64,
    /// The first few failures, in words.
    pub errors: Vec<String>,
}

impl Totals {
    /// Add up `reports`.
    pub fn of(reports: &[ConnReport]) -> Totals {
        let mut t = Totals {
            connections: reports.len(),
            ..Default::default()
        };
        for r in reports {
            if let Some(e) = &r.error {
                t.dropped += 1;
                if t.errors.len() < 5 {
                    t.errors.push(format!(
                        "client {} (server {}): {e}",
                        r.client,
                        r.server + 1
                    ));
                }
            }
            t.sent += r.sent;
            t.acked += r.acked;
            t.lost += r.lost;
            t.gaps += r.gaps;
            t.duplicated += r.duplicates;
            t.foreign += r.foreign;
            t.foreign_errors += r.foreign_errors;
            t.corrupt += r.corrupt;
            for (v, n) in &r.versions {
                *t.by_version.entry(*v).or_default() += n;
            }
            t.longest_gap_ms = t.longest_gap_ms.max(r.longest_gap_ms);
        }
        t
    }

    /// Nothing dropped, lost, skipped, repeated or malformed.
    pub fn clean(&self) -> bool {
        self.dropped == 0
            && self.lost == 0
            && self.gaps == 0
            && self.duplicated == 0
            && self.foreign_errors == 0
            && self.corrupt == 0
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let by: Vec<String> = self
            .by_version
            .iter()
            .map(|(v, n)| format!("v{v}: {n}"))
            .collect();
        format!(
            "{} connections, {} dropped; {} frames sent, {} acknowledged ({}), {} lost, {} duplicated, {} skipped; {} frames relayed to other members, {} out of order; longest wait between acknowledgements {:.0} ms",
            self.connections,
            self.dropped,
            self.sent,
            self.acked,
            by.join(", "),
            self.lost,
            self.duplicated,
            self.gaps,
            self.foreign,
            self.foreign_errors,
            self.longest_gap_ms
        )
    }
}

//! A load-generating TCP client: many connections, each sending sequence-numbered,
//! checksummed frames at a constant rate to a chat server (`modules/chat_v*`), checking
//! every frame that comes back. Used by the `chat_load` binary and by `compare`'s
//! `tcp_upgrade_pause`.
//!
//! Each connection joins room `index / room_size`, then publishes frames
//! `[1] index:u32 seq:u64 sent_ns:u64 checksum:u64 padding` (all LE). The server sends every
//! publication to each member of the room, the sender included; a connection checks its
//! own frames: in order (a skipped sequence number is a gap, a repeated one a duplicate),
//! intact (checksum), and how long after sending they came back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server addresses; connection `i` uses `addrs[i % addrs.len()]`.
    pub addrs: Vec<String>,
    /// Connections.
    pub conns: usize,
    /// Frames per second per connection.
    pub rate: f64,
    /// Connections per room.
    pub room_size: usize,
    /// Bytes of padding after the 28-byte header.
    pub padding: usize,
}

/// What all connections saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Connections that were opened.
    pub connected: usize,
    /// Own frames sent.
    pub sent: u64,
    /// Own frames received back.
    pub received: u64,
    /// Frames of other members received.
    pub foreign: u64,
    /// Bytes of own frames sent minus those received back (after the drain).
    pub lost_bytes: u64,
    /// Skipped sequence numbers.
    pub gaps: u64,
    /// Repeated sequence numbers.
    pub duplicates: u64,
    /// Frames whose checksum or shape was wrong.
    pub corrupt: u64,
    /// Connection errors (resets, refused connects, unexpected ends).
    pub resets: Vec<String>,
    /// Round-trip latencies of own frames, in microseconds (sorted).
    pub latencies_us: Vec<f64>,
    /// The longest time between two consecutive own frames coming back, on any
    /// connection, in milliseconds.
    pub longest_gap_ms: f64,
    /// Versions of the server seen (the `vsn` byte of replies), in order of first sight.
    pub versions: Vec<u8>,
}

impl LoadReport {
    /// The `p`-quantile of the latencies, in microseconds.
    pub fn latency(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i]
    }

    fn merge(&mut self, o: LoadReport) {
        self.connected += o.connected;
        self.sent += o.sent;
        self.received += o.received;
        self.foreign += o.foreign;
        self.lost_bytes += o.lost_bytes;
        self.gaps += o.gaps;
        self.duplicates += o.duplicates;
        self.corrupt += o.corrupt;
        self.resets.extend(o.resets);
        self.latencies_us.extend(o.latencies_us);
        self.longest_gap_ms = self.longest_gap_ms.max(o.longest_gap_ms);
        for v in o.versions {
            if !self.versions.contains(&v) {
                self.versions.push(v);
            }
        }
    }

    /// One paragraph for people.
    pub fn describe(&self) -> String {
        format!(
            "connections {} | frames sent {} echoed {} (foreign {}) | resets {} gaps {} duplicates {} corrupt {} lost bytes {} | latency median {:.0} us p99 {:.0} us max {:.0} us | longest gap {:.1} ms | server versions seen {:?}{}",
            self.connected,
            self.sent,
            self.received,
            self.foreign,
            self.resets.len(),
            self.gaps,
            self.duplicates,
            self.corrupt,
            self.lost_bytes,
            self.latency(0.5),
            self.latency(0.99),
            self.latency(1.0),
            self.longest_gap_ms,
            self.versions,
            if self.resets.is_empty() {
                String::new()
            } else {
                format!(" | first reset: {}", self.resets[0])
            }
        )
    }
}

fn checksum(index: u32, seq: u64, t: u64) -> u64 {
    let mut x = (index as u64) ^ seq.rotate_left(21) ^ t.rotate_left(42) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 29)
}

async fn read_frame(rd: &mut tokio::net::tcp::OwnedReadHalf) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 4];
    rd.read_exact(&mut h).await?;
    let mut f = vec![0u8; u32::from_be_bytes(h) as usize];
    rd.read_exact(&mut f).await?;
    Ok(f)
}

async fn one(
    index: u32,
    addr: String,
    cfg: LoadConfig,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let mut r = LoadReport::default();
    let s = match TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            r.resets
                .push(format!("connection {index}: connect to {addr}: {e}"));
            return r;
        }
    };
    let _ = s.set_nodelay(true);
    r.connected = 1;
    let (mut rd, mut wr) = s.into_split();
    let room = (index as usize / cfg.room_size.max(1)) as u32;
    let mut join = vec![0, 0, 0, 5, 0];
    join.extend_from_slice(&room.to_le_bytes());
    if let Err(e) = wr.write_all(&join).await {
        r.resets.push(format!("connection {index}: join: {e}"));
        return r;
    }
    let frame_len = 1 + 28 + cfg.padding;
    let reader = tokio::spawn(async move {
        let mut r = LoadReport::default();
        let mut next = 0u64;
        let mut last: Option<Instant> = None;
        loop {
            let f = match read_frame(&mut rd).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return r,
                Err(e) => {
                    r.resets.push(format!("connection {index}: read: {e}"));
                    return r;
                }
            };
            // [1] vsn sender:u64 | index seq t sum padding
            if f.len() < 10 + 28 || f[0] != 1 {
                r.corrupt += 1;
                continue;
            }
            let vsn = f[1];
            if !r.versions.contains(&vsn) {
                r.versions.push(vsn);
            }
            let p = &f[10..];
            let who = u32::from_le_bytes(p[0..4].try_into().unwrap());
            let seq = u64::from_le_bytes(p[4..12].try_into().unwrap());
            let t = u64::from_le_bytes(p[12..20].try_into().unwrap());
            let sum = u64::from_le_bytes(p[20..28].try_into().unwrap());
            if sum != checksum(who, seq, t) {
                r.corrupt += 1;
                continue;
            }
            if who != index {
                r.foreign += 1;
                continue;
            }
            let now = Instant::now();
            if let Some(l) = last {
                r.longest_gap_ms = r.longest_gap_ms.max((now - l).as_secs_f64() * 1e3);
            }
            last = Some(now);
            r.latencies_us
                .push((now - epoch).as_nanos().saturating_sub(t as u128) as f64 / 1e3);
            r.received += 1;
            match seq.cmp(&next) {
                std::cmp::Ordering::Less => r.duplicates += 1,
                std::cmp::Ordering::Greater => {
                    r.gaps += seq - next;
                    next = seq + 1;
                }
                std::cmp::Ordering::Equal => next += 1,
            }
        }
    });
    let period = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));
    // Spread the connections' phases over one period.
    let phase = period.mul_f64((index as f64 * 0.618_034) % 1.0);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut buf = Vec::with_capacity(4 + frame_len);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let t = epoch.elapsed().as_nanos() as u64;
        buf.clear();
        buf.extend_from_slice(&(frame_len as u32).to_be_bytes());
        buf.push(1);
        buf.extend_from_slice(&index.to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.extend_from_slice(&t.to_le_bytes());
        buf.extend_from_slice(&checksum(index, seq, t).to_le_bytes());
        buf.resize(4 + frame_len, 0xAB);
        if let Err(e) = wr.write_all(&buf).await {
            r.resets.push(format!("connection {index}: write: {e}"));
            break;
        }
        seq += 1;
    }
    r.sent = seq;
    // Half-close: the server sends what it has, sees the end, closes; we drain.
    let _ = wr.shutdown().await;
    match tokio::time::timeout(Duration::from_secs(60), reader).await {
        Ok(Ok(got)) => {
            let missing = r.sent.saturating_sub(got.received);
            r.merge(got);
            r.connected = 1;
            r.lost_bytes = missing * frame_len as u64;
        }
        _ => r.resets.push(format!(
            "connection {index}: the echoes did not all arrive within 60 s"
        )),
    }
    r
}

/// A running load; [`Load::finish`] stops it and collects the report.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadReport>>,
}

impl Load {
    /// Open the connections (on the current tokio runtime) and start sending.
    pub fn start(cfg: &LoadConfig) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let tasks = (0..cfg.conns)
            .map(|i| {
                let addr = cfg.addrs[i % cfg.addrs.len()].clone();
                tokio::spawn(one(i as u32, addr, cfg.clone(), epoch, stop.clone()))
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stop sending, wait for every echo, and report.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for t in self.tasks {
            match t.await {
                Ok(r) => total.merge(r),
                Err(e) => total.resets.push(format!("a client task failed: {e}")),
            }
        }
        total.latencies_us.sort_by(|a, b| a.total_cmp(b));
        total
    }
}

/// Raise this process's open-file limit to its hard limit (1 000 connections need 2 000
/// descriptors when client and server share the process).
pub fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } == 0 && l.rlim_cur < l.rlim_max {
        l.rlim_cur = l.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) };
    }
}

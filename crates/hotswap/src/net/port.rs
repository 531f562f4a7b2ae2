//! What a port is, as module code sees it: its id, its modes and options, the messages its
//! owner receives, its errors and its description, and the wire forms shared with the
//! node. The operations on ports are [`Ctx`](crate::Ctx) methods (the parent module).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::types::Pid;

/// A port: a socket owned by the node. Printed as Erlang does: `#Port<0.7>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PortId(pub u64);

impl fmt::Debug for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#Port<0.{}>", self.0)
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How a port delivers what it reads (`inet:setopts(S, [{active, _}])`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Active {
    /// Passive: nothing is read until the owner calls `recv`.
    #[default]
    False,
    /// Deliver one message, then turn passive.
    Once,
    /// Add N to the port's message counter (Erlang's `{active, N}`); at 0 the port turns
    /// passive and the owner gets a `passive` message. A result ≤ 0 turns it passive at once.
    N(i32),
    /// Deliver everything as it arrives (no flow control).
    True,
}

impl Active {
    pub(crate) fn encode(self) -> [u8; 5] {
        let (k, n) = match self {
            Active::False => (0, 0),
            Active::Once => (1, 0),
            Active::N(n) => (2, n),
            Active::True => (3, 0),
        };
        let n = n.to_le_bytes();
        [k, n[0], n[1], n[2], n[3]]
    }

    /// Decode what the SDK sent with [`hotswap_abi::NET_ACTIVE`].
    #[doc(hidden)]
    pub fn decode(b: &[u8]) -> Option<Active> {
        let n = i32::from_le_bytes(b.get(1..5)?.try_into().ok()?);
        Some(match b.first()? {
            0 => Active::False,
            1 => Active::Once,
            2 => Active::N(n),
            3 => Active::True,
            _ => return None,
        })
    }
}

/// How the node cuts a byte stream into frames (Erlang's `{packet, _}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Framing {
    /// No framing: each read is delivered as it comes.
    #[default]
    Raw,
    /// A 1-byte length before each frame (added on send, stripped on receive).
    Len1,
    /// A 2-byte big-endian length before each frame.
    Len2,
    /// A 4-byte big-endian length before each frame.
    Len4,
    /// Lines ending in `\n` (the newline is kept). Receive only: sends are sent as given.
    Line,
}

/// Options of a TCP connection (connect, or each connection a listener accepts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TcpOptions {
    /// The framing.
    pub framing: Framing,
    /// The largest frame (or line) accepted or sent, in bytes; at least 1. Default 8 MiB.
    pub max_frame: usize,
    /// The mode the port starts in.
    pub active: Active,
    /// `TCP_NODELAY` (default on, as ranch).
    pub nodelay: bool,
    /// `SO_KEEPALIVE`.
    pub keepalive: bool,
    /// `SO_RCVBUF` in bytes (the kernel's default when `None`).
    pub recv_buffer: Option<u32>,
    /// `SO_SNDBUF` in bytes.
    pub send_buffer: Option<u32>,
    /// Sends wait while this many bytes are queued in the node (default 64 KiB).
    pub send_high_watermark: usize,
    /// ... until the queue drained to this many (default 32 KiB).
    pub send_low_watermark: usize,
    /// A send that waits longer fails with [`NetError::Timeout`] (`None`: it waits as long
    /// as the peer does not read).
    pub send_timeout_ms: Option<u64>,
    /// Close the connection when a send times out (Erlang's `send_timeout_close`).
    pub send_timeout_close: bool,
    /// When the owner exits, keep the port open with reads paused until a process adopts
    /// it, instead of closing it.
    pub park: bool,
    /// A label shown by `hotswap ports` and used to find parked ports.
    pub label: Option<String>,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            framing: Framing::Raw,
            max_frame: 8 << 20,
            active: Active::False,
            nodelay: true,
            keepalive: false,
            recv_buffer: None,
            send_buffer: None,
            send_high_watermark: 64 << 10,
            send_low_watermark: 32 << 10,
            send_timeout_ms: None,
            send_timeout_close: false,
            park: false,
            label: None,
        }
    }
}

/// Who owns the connections a listener accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AcceptMode {
    /// Processes call [`Ctx::tcp_accept`](crate::Ctx::tcp_accept); each accepted connection goes to one caller.
    #[default]
    Manual,
    /// The node accepts on its own and gives each connection to the listener's owner with
    /// a [`PortMsg::Accepted`] message (a gen_server needs no acceptor process).
    ToOwner,
}

/// Options of a listening socket (with the node's acceptor pool).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListenOptions {
    /// The kernel's accept backlog (default 1024).
    pub backlog: u32,
    /// At most this many connections of this listener are open at once; beyond that the
    /// acceptor waits (the backlog queues the rest). Default 1024.
    pub max_connections: usize,
    /// `SO_REUSEADDR` (default on).
    pub reuseaddr: bool,
    /// Who gets accepted connections.
    pub accept: AcceptMode,
    /// Options of each accepted connection.
    pub conn: TcpOptions,
    /// A label shown by `hotswap ports` and used to find the listener when parked.
    pub label: Option<String>,
    /// When the owner exits, keep listening (the socket stays bound; new connections
    /// wait in the backlog) until a process adopts the listener, instead of closing it.
    pub park: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            max_connections: 1024,
            reuseaddr: true,
            accept: AcceptMode::Manual,
            conn: TcpOptions::default(),
            label: None,
            park: false,
        }
    }
}

/// Options changed on an open port ([`Ctx::setopts`](crate::Ctx::setopts), Erlang's `inet:setopts/2`). Each
/// `None` leaves that option as it is.
///
/// On a connection, each option takes effect at once: bytes already read but not yet
/// delivered are cut under the new framing; the watermarks apply to the next send. On a
/// listener, the options change the [`TcpOptions`] of the connections it accepts from then
/// on (open connections keep theirs). A UDP port takes only `active` and `park`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SetOpts {
    /// The active mode (as [`Ctx::set_active`](crate::Ctx::set_active); `Active::N` adds to the counter).
    pub active: Option<Active>,
    /// The framing.
    pub framing: Option<Framing>,
    /// The largest frame (at least 1).
    pub max_frame: Option<usize>,
    /// `TCP_NODELAY`.
    pub nodelay: Option<bool>,
    /// `SO_KEEPALIVE`.
    pub keepalive: Option<bool>,
    /// `SO_RCVBUF` in bytes (at least 1; the kernel may round it).
    pub recv_buffer: Option<u32>,
    /// `SO_SNDBUF` in bytes (at least 1; the kernel may round it).
    pub send_buffer: Option<u32>,
    /// The send queue's high watermark (at least 1, and not below the low one).
    pub send_high_watermark: Option<usize>,
    /// The send queue's low watermark (not above the high one).
    pub send_low_watermark: Option<usize>,
    /// The send timeout in milliseconds; `Some(0)` removes it (sends wait as long as the
    /// peer does not read).
    pub send_timeout_ms: Option<u64>,
    /// Close the connection when a send times out.
    pub send_timeout_close: Option<bool>,
    /// Park instead of closing when the owner exits.
    pub park: Option<bool>,
}

/// Options of a UDP port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UdpOptions {
    /// The mode the port starts in.
    pub active: Active,
    /// The largest datagram received (longer ones are truncated by the kernel). Default
    /// 65 535.
    pub max_datagram: usize,
    /// Park instead of closing when the owner exits (see [`TcpOptions::park`]).
    pub park: bool,
    /// A label shown by `hotswap ports`.
    pub label: Option<String>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            active: Active::False,
            max_datagram: 65_535,
            park: false,
            label: None,
        }
    }
}

/// Which direction [`Ctx::tcp_shutdown`](crate::Ctx::tcp_shutdown) closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shutdown {
    /// No more sends (after the queue drained, the peer reads end-of-file).
    Write,
    /// No more receives.
    Read,
    /// Both.
    Both,
}

/// What a port's owner receives (as [`crate::gen_server::Info::Port`] in a gen_server).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortMsg {
    /// A frame arrived (`{tcp, Port, Data}`).
    Tcp {
        /// The connection.
        port: PortId,
        /// The frame (without its length prefix).
        data: Vec<u8>,
    },
    /// The connection closed: by the peer, after an error, or by the node (`{tcp_closed,
    /// Port}`). The port no longer exists.
    TcpClosed {
        /// The connection.
        port: PortId,
    },
    /// An error on the connection (`{tcp_error, Port, Reason}`); a `TcpClosed` follows.
    TcpError {
        /// The connection.
        port: PortId,
        /// What happened.
        reason: String,
    },
    /// The `Active::N` counter reached 0: the port is passive (`{tcp_passive, Port}`).
    TcpPassive {
        /// The connection.
        port: PortId,
    },
    /// A listener in [`AcceptMode::ToOwner`] accepted a connection, now owned by the
    /// receiver.
    Accepted {
        /// The listener.
        listener: PortId,
        /// The new connection.
        port: PortId,
        /// The peer's address.
        peer: String,
    },
    /// A datagram arrived (`{udp, Port, Ip, PortNo, Data}`).
    Udp {
        /// The UDP port.
        port: PortId,
        /// The sender's address.
        peer: String,
        /// The datagram.
        data: Vec<u8>,
    },
    /// The `Active::N` counter of a UDP port reached 0 (`{udp_passive, Port}`).
    UdpPassive {
        /// The UDP port.
        port: PortId,
    },
    /// An error on a UDP port.
    UdpError {
        /// The UDP port.
        port: PortId,
        /// What happened.
        reason: String,
    },
}

/// The wire forms shared with the node (not part of the API).
#[doc(hidden)]
pub mod wire {
    use super::*;

    /// [`PortMsg`] tags (first byte of a [`hotswap_abi::MSG_PORT`] payload).
    pub const TCP: u8 = 0;
    /// See [`TCP`].
    pub const TCP_CLOSED: u8 = 1;
    /// See [`TCP`].
    pub const TCP_ERROR: u8 = 2;
    /// See [`TCP`].
    pub const TCP_PASSIVE: u8 = 3;
    /// See [`TCP`].
    pub const ACCEPTED: u8 = 4;
    /// See [`TCP`].
    pub const UDP: u8 = 5;
    /// See [`TCP`].
    pub const UDP_PASSIVE: u8 = 6;
    /// See [`TCP`].
    pub const UDP_ERROR: u8 = 7;

    /// Reply tags (first byte of a [`hotswap_abi::MSG_REPLY`] to a pending net operation).
    pub const R_OK: u8 = 0;
    /// See [`R_OK`]; a MessagePack [`NetError`] follows.
    pub const R_ERR: u8 = 1;

    /// Append `u16 LE` length and the address text.
    pub fn put_addr(out: &mut Vec<u8>, addr: &str) {
        out.extend_from_slice(&(addr.len() as u16).to_le_bytes());
        out.extend_from_slice(addr.as_bytes());
    }

    /// Split what [`put_addr`] wrote from what follows.
    pub fn take_addr(b: &[u8]) -> Option<(String, &[u8])> {
        let n = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
        let a = b.get(2..2 + n)?;
        Some((String::from_utf8_lossy(a).into_owned(), &b[2 + n..]))
    }

    /// A request for [`hotswap_abi::NET_REQUEST`].
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub enum Request {
        /// Bind and listen; value: the listener's id (`u64 LE`).
        Listen {
            /// Address to bind.
            addr: String,
            /// Options.
            opts: ListenOptions,
        },
        /// Accept from the listener `port`; value: the connection's id.
        Accept {
            /// Owner of the connection (0: the caller).
            owner: u64,
            /// Give up after this long.
            timeout_ms: Option<u64>,
        },
        /// Connect; value: the connection's id.
        Connect {
            /// Peer address.
            addr: String,
            /// Options.
            opts: TcpOptions,
            /// Give up after this long.
            timeout_ms: Option<u64>,
        },
        /// Passive receive; value: the frame (UDP: address then datagram).
        Recv {
            /// Give up after this long.
            timeout_ms: Option<u64>,
        },
        /// Close.
        Close,
        /// Half-close.
        Shutdown(Shutdown),
        /// Move ownership.
        ControllingProcess(u64),
        /// Adopt a parked port.
        Adopt,
        /// Parked ports (with this label); value: `Vec<PortInfo>`.
        Parked(Option<String>),
        /// The port's information; value: [`PortInfo`].
        Info,
        /// Pause (`true`) or resume accepting on a listener.
        PauseAccepting(bool),
        /// Open a UDP port; value: its id.
        UdpOpen {
            /// Address to bind.
            addr: String,
            /// Options.
            opts: UdpOptions,
        },
        /// Send a datagram.
        SendTo {
            /// Destination.
            addr: String,
            /// The datagram.
            #[serde(with = "bytes_as_bin")]
            data: Vec<u8>,
        },
        /// Change options of an open port.
        SetOpts(SetOpts),
    }

    mod bytes_as_bin {
        use serde::{Deserializer, Serializer};
        pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
        pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(v.to_vec())
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                    Ok(v)
                }
            }
            d.deserialize_byte_buf(V)
        }
    }

    /// Encode a port event for [`hotswap_abi::MSG_PORT`].
    pub fn encode_event(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + body.len());
        v.push(tag);
        v.extend_from_slice(body);
        v
    }
}

impl PortMsg {
    /// Decode a [`hotswap_abi::MSG_PORT`] message of `port`. Malformed data decodes as an error
    /// event naming it, never a panic.
    pub fn decode(port: u64, b: &[u8]) -> PortMsg {
        let port = PortId(port);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let bad = || PortMsg::TcpError {
            port,
            reason: format!("malformed port message of {} bytes", b.len()),
        };
        let Some((&tag, rest)) = b.split_first() else {
            return bad();
        };
        match tag {
            wire::TCP => PortMsg::Tcp {
                port,
                data: rest.to_vec(),
            },
            wire::TCP_CLOSED => PortMsg::TcpClosed { port },
            wire::TCP_ERROR => PortMsg::TcpError {
                port,
                reason: text(rest),
            },
            wire::TCP_PASSIVE => PortMsg::TcpPassive { port },
            wire::ACCEPTED if rest.len() >= 8 => PortMsg::Accepted {
                listener: port,
                port: PortId(u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"))),
                peer: text(&rest[8..]),
            },
            wire::UDP => match wire::take_addr(rest) {
                Some((peer, data)) => PortMsg::Udp {
                    port,
                    peer,
                    data: data.to_vec(),
                },
                None => bad(),
            },
            wire::UDP_PASSIVE => PortMsg::UdpPassive { port },
            wire::UDP_ERROR => PortMsg::UdpError {
                port,
                reason: text(rest),
            },
            _ => bad(),
        }
    }

    /// The port the message is about (for `Accepted`, the new connection).
    pub fn port(&self) -> PortId {
        match self {
            PortMsg::Tcp { port, .. }
            | PortMsg::TcpClosed { port }
            | PortMsg::TcpError { port, .. }
            | PortMsg::TcpPassive { port }
            | PortMsg::Accepted { port, .. }
            | PortMsg::Udp { port, .. }
            | PortMsg::UdpPassive { port }
            | PortMsg::UdpError { port, .. } => *port,
        }
    }
}

/// Why a port operation failed. Each variant says what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NetError {
    /// No port with this id was ever opened on this node.
    UnknownPort(PortId),
    /// The port was closed (by its owner, the peer, an error, or its owner's exit).
    Closed(PortId),
    /// Only the port's owner may do this; `owner` is the owner (`None`: the port is
    /// parked and must be adopted first).
    NotOwner {
        /// The port.
        port: PortId,
        /// Its owner.
        owner: Option<Pid>,
    },
    /// The operation does not apply to this kind of port (e.g. `recv` on a listener).
    WrongKind {
        /// The port.
        port: PortId,
        /// What it is.
        kind: String,
        /// What the operation needs.
        needs: String,
    },
    /// The address is already in use (`eaddrinuse`).
    AddrInUse(String),
    /// Nothing listens at the address (`econnrefused`).
    ConnectionRefused(String),
    /// The node's process is out of file descriptors (`emfile`): close ports or raise
    /// the limit (`ulimit -n`).
    TooManyOpenFiles,
    /// The operation did not finish in time.
    Timeout,
    /// A frame is longer than the framing allows.
    FrameTooLarge {
        /// Its length.
        len: usize,
        /// The largest allowed.
        max: usize,
    },
    /// A passive receive was asked of a port that is active or already has one pending.
    Busy(String),
    /// The port is not parked, so it cannot be adopted.
    NotParked(PortId),
    /// A bad argument (an unparsable address, a zero maximum frame, ...).
    InvalidArgument(String),
    /// Any other operating-system error.
    Io(String),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::UnknownPort(p) => write!(f, "no port {p} was ever opened on this node"),
            NetError::Closed(p) => write!(f, "port {p} is closed"),
            NetError::NotOwner { port, owner: Some(o) } => write!(
                f,
                "port {port} is owned by {o}: only its owner may use it (controlling_process moves it)"
            ),
            NetError::NotOwner { port, owner: None } => {
                write!(f, "port {port} is parked: adopt it first")
            }
            NetError::WrongKind { port, kind, needs } => {
                write!(f, "port {port} is a {kind} port; this needs a {needs} port")
            }
            NetError::AddrInUse(a) => write!(f, "address {a} is already in use (eaddrinuse)"),
            NetError::ConnectionRefused(a) => {
                write!(f, "connection to {a} refused: nothing listens there (econnrefused)")
            }
            NetError::TooManyOpenFiles => f.write_str(
                "too many open files (emfile): close ports or raise the limit (ulimit -n)",
            ),
            NetError::Timeout => f.write_str("timed out"),
            NetError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            NetError::Busy(s) => write!(f, "port busy: {s}"),
            NetError::NotParked(p) => write!(f, "port {p} is not parked"),
            NetError::InvalidArgument(s) => write!(f, "invalid argument: {s}"),
            NetError::Io(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for NetError {}

impl NetError {
    pub(crate) fn decode(b: &[u8]) -> NetError {
        codec::decode(b).unwrap_or_else(|e| NetError::Io(format!("undecodable net error: {e}")))
    }
}

/// What the node knows about a port (`hotswap ports`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// The port.
    pub id: PortId,
    /// `tcp`, `tcp_listen` or `udp`.
    pub kind: String,
    /// Its owner (`None`: parked).
    pub owner: Option<Pid>,
    /// Local address.
    pub local: String,
    /// Peer address (connections).
    pub peer: Option<String>,
    /// Bytes read from the socket.
    pub bytes_in: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// Frames (datagrams, accepted connections) delivered to owners.
    pub msgs_in: u64,
    /// Sends accepted.
    pub msgs_out: u64,
    /// Bytes read but not delivered yet.
    pub rx_buffered: usize,
    /// Bytes queued for sending.
    pub tx_queued: usize,
    /// Sends waiting for the queue to drain.
    pub tx_waiting: usize,
    /// The active mode (`false`, `once`, `N`, `true`).
    pub active: String,
    /// The framing.
    pub framing: String,
    /// Parked (owner exited, waiting for adoption).
    pub parked: bool,
    /// Its label.
    pub label: Option<String>,
    /// For a listener: open connections accepted from it, and whether accepting is paused.
    pub connections: Option<(usize, bool)>,
    /// For a listener: failed accepts (e.g. out of file descriptors) since it opened.
    #[serde(default)]
    pub accept_errors: u64,
    /// For a listener: processes waiting in `accept` (the node's accept queue).
    #[serde(default)]
    pub acceptors: usize,
}

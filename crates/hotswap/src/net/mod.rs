//! Sockets as ports: TCP and UDP owned by the node, used by processes (Erlang's `gen_tcp`,
//! `gen_udp` and ranch's acceptor pool).
//!
//! A module never holds a socket: the node keeps every socket in its port table and a
//! process holds a [`PortId`]. Replacing or purging a module never touches a socket, so a
//! `gen_server` that owns connections is upgraded with `code_change` and the next bytes on
//! each connection reach the new code; bytes the node read but did not deliver yet wait in
//! the node across the switch.
//!
//! # Ownership
//! Each port has one owner process. Only the owner may receive from it, send on it, change
//! its mode or close it ([`NetError::NotOwner`] otherwise). [`Ctx::controlling_process`]
//! moves ownership atomically, with the port's messages still waiting in the old owner's
//! mailbox. When the owner exits the port closes (Erlang's rule) unless it was opened with
//! [`TcpOptions::park`]: then it stays open with reads paused until a process
//! [`Ctx::port_adopt`]s it (a supervisor's restarted child finds it with
//! [`Ctx::parked_ports`]).
//! Events already delivered to the exited owner's mailbox (at most one frame in
//! `Active::Once`) went with it; everything the node had not delivered yet waits for the
//! adopter. A listener opened with [`ListenOptions::park`] parks the same way: it stays
//! bound, connections wait in the kernel's backlog (in [`AcceptMode::ToOwner`]) until a
//! process adopts it, and processes already waiting in [`Ctx::tcp_accept`] keep being
//! served.
//!
//! # Options after open
//! [`Ctx::setopts`] changes a port's options while it is open (`inet:setopts/2`): the
//! active mode, framing and maximum frame, `TCP_NODELAY`, keepalive, buffer sizes, the
//! send watermarks and timeout. A bad option is refused as a whole with
//! [`NetError::InvalidArgument`] naming it, and nothing changes. On a listener the options
//! apply to the connections it accepts from then on (as ranch's `set_protocol_options`).
//!
//! # Receiving
//! A connected port is passive ([`Active::False`]: [`Ctx::tcp_recv`]) or active: the
//! node delivers each frame as a message ([`PortMsg::Tcp`]), which a `gen_server` receives
//! in `handle_info` as [`crate::gen_server::Info::Port`]. [`Active::Once`] delivers one
//! frame then turns passive; [`Active::N`] delivers N then sends [`PortMsg::TcpPassive`];
//! [`Active::True`] has no flow control. Once and N bound what the node reads, so a
//! sender cannot outrun its reader (TCP backpressure).
//!
//! # Framing
//! The node frames on receive and send ([`Framing`]): raw, a 1, 2 or 4 byte big-endian
//! length prefix, or lines. Every mode has a maximum frame size; a longer frame closes the
//! connection with a [`PortMsg::TcpError`] naming the sizes.
//!
//! # Sending
//! [`Ctx::tcp_send`] queues bytes in the node. The queue is bounded by
//! [`TcpOptions::send_high_watermark`]: a send that finds it above that waits until the
//! writer drained it to the low watermark, or fails with [`NetError::Timeout`] after
//! [`TcpOptions::send_timeout_ms`].
//!
//! ```no_run
//! use hotswap::net::{Active, Framing, ListenOptions, PortMsg, TcpOptions};
//! # async fn demo(ctx: hotswap::Ctx) -> Result<(), hotswap::net::NetError> {
//! let conn = TcpOptions { framing: Framing::Len4, active: Active::Once, ..Default::default() };
//! let listener = ctx
//!     .tcp_listen("127.0.0.1:0", &ListenOptions { conn, ..Default::default() })
//!     .await?;
//! let port = ctx.tcp_accept(listener, None).await?;
//! // ... in handle_info: Info::Port(PortMsg::Tcp { port, data }) => echo it back:
//! # let data = vec![0u8];
//! ctx.tcp_send(port, &data).await?;
//! ctx.set_active(port, Active::Once)?;
//! # Ok(()) }
//! ```

use std::ffi::c_void;
use std::time::Duration;

use hotswap_abi as abi;

use crate::codec;
use crate::ctx::{host, write_vec, Ctx};
use crate::types::Pid;

pub(crate) mod port;

pub use self::port::*;

/// Accept replies tagged `tag` while alive.
struct AliasGuard(Ctx, u64);

impl Drop for AliasGuard {
    fn drop(&mut self) {
        self.0.alias(self.1, false);
    }
}

/// One net operation: immediate, or waited for as a reply.
async fn op(ctx: Ctx, code: u32, port: u64, arg: &[u8]) -> Result<Vec<u8>, NetError> {
    let tag = ctx.new_ref();
    let mut out: Vec<u8> = Vec::new();
    // SAFETY: live handle (a `Ctx` is only used inside its process); the argument range
    // and `out` are valid for the call.
    let st = unsafe {
        (host().net)(
            ctx.__raw(),
            code,
            port,
            abi::Bytes::new(arg),
            tag,
            &mut out as *mut Vec<u8> as *mut c_void,
            write_vec,
        )
    };
    match st {
        abi::STATUS_READY => Ok(out),
        abi::STATUS_PENDING => {
            ctx.alias(tag, true);
            let _guard = AliasGuard(ctx, tag);
            // The node always answers a pending operation (with a value, an error, or a
            // timeout it enforces itself).
            let r = ctx.receive_reply(tag, None).await.unwrap_or_default();
            match r.split_first() {
                Some((&wire::R_OK, v)) => Ok(v.to_vec()),
                Some((_, e)) => Err(NetError::decode(e)),
                None => Err(NetError::Io("empty reply from the node".into())),
            }
        }
        _ => Err(NetError::decode(&out)),
    }
}

async fn request(ctx: Ctx, port: u64, req: &wire::Request) -> Result<Vec<u8>, NetError> {
    op(ctx, abi::NET_REQUEST, port, &codec::encode(req)).await
}

fn port_of(v: &[u8]) -> Result<PortId, NetError> {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(|b| PortId(u64::from_le_bytes(b)))
        .ok_or_else(|| NetError::Io("malformed port id from the node".into()))
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis().min(u64::MAX as u128) as u64)
}

impl Ctx {
    /// Listen on `addr` (`"127.0.0.1:0"` picks a free port; see [`Ctx::port_info`] for the
    /// one chosen). The caller owns the listener. The node runs the acceptor pool: upgrades
    /// never re-bind it.
    pub async fn tcp_listen(&self, addr: &str, opts: &ListenOptions) -> Result<PortId, NetError> {
        let r = wire::Request::Listen {
            addr: addr.into(),
            opts: opts.clone(),
        };
        port_of(&request(*self, 0, &r).await?)
    }

    /// Accept one connection from `listener`; the caller owns it. Any process may accept
    /// (an acceptor pool is several processes accepting at once).
    pub async fn tcp_accept(
        &self,
        listener: PortId,
        timeout: Option<Duration>,
    ) -> Result<PortId, NetError> {
        self.tcp_accept_for(listener, self.self_pid(), timeout)
            .await
    }

    /// Accept one connection from `listener` and give it to `owner`.
    pub async fn tcp_accept_for(
        &self,
        listener: PortId,
        owner: Pid,
        timeout: Option<Duration>,
    ) -> Result<PortId, NetError> {
        let r = wire::Request::Accept {
            owner: owner.0,
            timeout_ms: ms(timeout),
        };
        port_of(&request(*self, listener.0, &r).await?)
    }

    /// Connect to `addr`; the caller owns the connection.
    pub async fn tcp_connect(
        &self,
        addr: &str,
        opts: &TcpOptions,
        timeout: Option<Duration>,
    ) -> Result<PortId, NetError> {
        let r = wire::Request::Connect {
            addr: addr.into(),
            opts: opts.clone(),
            timeout_ms: ms(timeout),
        };
        port_of(&request(*self, 0, &r).await?)
    }

    /// Send one frame (the node adds the length prefix of the port's framing). Waits only
    /// while the port's send queue is above its high watermark.
    pub async fn tcp_send(&self, port: PortId, data: &[u8]) -> Result<(), NetError> {
        op(*self, abi::NET_SEND, port.0, data).await.map(drop)
    }

    /// Receive one frame from a passive port (`gen_tcp:recv`).
    pub async fn tcp_recv(
        &self,
        port: PortId,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, NetError> {
        let r = wire::Request::Recv {
            timeout_ms: ms(timeout),
        };
        request(*self, port.0, &r).await
    }

    /// Set a port's active mode (`inet:setopts(S, [{active, A}])`). Immediate.
    pub fn set_active(&self, port: PortId, active: Active) -> Result<(), NetError> {
        let arg = active.encode();
        let mut out: Vec<u8> = Vec::new();
        // SAFETY: live handle; valid ranges for the call. NET_ACTIVE never pends.
        let st = unsafe {
            (host().net)(
                self.__raw(),
                abi::NET_ACTIVE,
                port.0,
                abi::Bytes::new(&arg),
                0,
                &mut out as *mut Vec<u8> as *mut c_void,
                write_vec,
            )
        };
        match st {
            abi::STATUS_READY => Ok(()),
            _ => Err(NetError::decode(&out)),
        }
    }

    /// Change options of an open port (`inet:setopts/2`); see [`SetOpts`]. Immediate. A
    /// bad option is refused with [`NetError::InvalidArgument`] and nothing is changed.
    pub async fn setopts(&self, port: PortId, opts: &SetOpts) -> Result<(), NetError> {
        request(*self, port.0, &wire::Request::SetOpts(opts.clone()))
            .await
            .map(drop)
    }

    /// Close a port (its queued sends are still written, then the socket closes). Frames
    /// already delivered to the mailbox stay there.
    pub async fn port_close(&self, port: PortId) -> Result<(), NetError> {
        request(*self, port.0, &wire::Request::Close)
            .await
            .map(drop)
    }

    /// Close one or both directions of a connection.
    pub async fn tcp_shutdown(&self, port: PortId, how: Shutdown) -> Result<(), NetError> {
        request(*self, port.0, &wire::Request::Shutdown(how))
            .await
            .map(drop)
    }

    /// Give the port to `pid`, with the port's messages waiting in the caller's mailbox
    /// (moved in order, atomically: no event is lost or reordered). Only the owner may.
    pub async fn controlling_process(&self, port: PortId, pid: Pid) -> Result<(), NetError> {
        request(*self, port.0, &wire::Request::ControllingProcess(pid.0))
            .await
            .map(drop)
    }

    /// Become the owner of a parked port; its reads resume in its mode.
    pub async fn port_adopt(&self, port: PortId) -> Result<(), NetError> {
        request(*self, port.0, &wire::Request::Adopt)
            .await
            .map(drop)
    }

    /// Parked ports, all or those with `label`.
    pub async fn parked_ports(&self, label: Option<&str>) -> Result<Vec<PortInfo>, NetError> {
        let v = request(*self, 0, &wire::Request::Parked(label.map(Into::into))).await?;
        codec::decode(&v).map_err(|e| NetError::Io(e.to_string()))
    }

    /// What the node knows about a port (addresses, counters, queues, mode).
    pub async fn port_info(&self, port: PortId) -> Result<PortInfo, NetError> {
        let v = request(*self, port.0, &wire::Request::Info).await?;
        codec::decode(&v).map_err(|e| NetError::Io(e.to_string()))
    }

    /// Stop (`true`) or resume accepting on a listener; open connections are untouched.
    pub async fn pause_accepting(&self, listener: PortId, pause: bool) -> Result<(), NetError> {
        request(*self, listener.0, &wire::Request::PauseAccepting(pause))
            .await
            .map(drop)
    }

    /// Open a UDP port bound to `addr`; the caller owns it.
    pub async fn udp_open(&self, addr: &str, opts: &UdpOptions) -> Result<PortId, NetError> {
        let r = wire::Request::UdpOpen {
            addr: addr.into(),
            opts: opts.clone(),
        };
        port_of(&request(*self, 0, &r).await?)
    }

    /// Send a datagram to `addr`.
    pub async fn udp_send_to(&self, port: PortId, addr: &str, data: &[u8]) -> Result<(), NetError> {
        let r = wire::Request::SendTo {
            addr: addr.into(),
            data: data.to_vec(),
        };
        request(*self, port.0, &r).await.map(drop)
    }

    /// Receive one datagram from a passive UDP port: the sender's address and the data.
    pub async fn udp_recv(
        &self,
        port: PortId,
        timeout: Option<Duration>,
    ) -> Result<(String, Vec<u8>), NetError> {
        let r = wire::Request::Recv {
            timeout_ms: ms(timeout),
        };
        let v = request(*self, port.0, &r).await?;
        wire::take_addr(&v)
            .map(|(a, d)| (a, d.to_vec()))
            .ok_or_else(|| NetError::Io("malformed datagram from the node".into()))
    }

    /// Wait for the next event of `port` (or of any port when `None`), leaving other
    /// messages in the mailbox: for processes that are not gen_servers.
    pub async fn port_event(
        &self,
        port: Option<PortId>,
        timeout: Option<Duration>,
    ) -> Option<PortMsg> {
        let want = port.map(|p| p.0);
        let m = self
            .recv_where(
                move |kind, _, reference| {
                    kind == crate::ctx::MessageKind::Port && want.is_none_or(|p| p == reference)
                },
                timeout,
            )
            .await?;
        match m {
            crate::message::Message::Port(msg) => Some(msg),
            _ => None,
        }
    }
}

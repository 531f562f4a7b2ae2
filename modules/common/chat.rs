// A chat (pub/sub) server: one gen_server owns its listener and every connection
// (`AcceptMode::ToOwner`, 4-byte length framing, `{active, once}`). Included by
// modules/chat_v*, which define `VSN`, `MAX_ROOM` (the largest room id the version
// accepts, if it has a limit) and the state type `Chat` with fields `addr`, `conns` (a map keyed by connection),
// `published`, and the methods `joined`, `left`, `room_of`, `count_publication` and
// `restore_frames`. Any version reads any other's state through `ChatState` here.
//
// Protocol (client → server, one frame each):
// * `[0] room:u32 LE`: join a room (leaving the previous one; a room above `MAX_ROOM`
//   is a malformed frame);
// * `[1] payload`: publish `payload` to every member of the sender's room, the sender
//   included (its own copy is its acknowledgement).
// Server → client: `[1] vsn:u8 sender:u64 LE payload` for each publication.

use hotswap::gen_server::{CallResult, Caller, CastResult, Extra, GenServer, Info, Init, OldState};
use hotswap::net::{AcceptMode, Active, Framing, ListenOptions, PortId, PortMsg, TcpOptions};
use hotswap::{Ctx, ExitReason};

/// Any version's state, as every version reads it (`code_change` up and down).
#[derive(serde::Deserialize)]
pub struct ChatState {
    addr: String,
    conns: std::collections::BTreeMap<u64, AnyMember>,
    #[serde(default)]
    published: u64,
}

/// A member as any version keeps it: version 1 keeps the room id, later versions a record.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum AnyMember {
    Room(u32),
    Record {
        room: u32,
        #[serde(default)]
        frames: u64,
    },
}

impl Chat {
    fn new(addr: String) -> Chat {
        Chat {
            addr,
            ..Default::default()
        }
    }

    /// This version's state from any version's; fails on a room id this version cannot
    /// hold (above `MAX_ROOM`).
    fn from_any(s: ChatState) -> Result<Chat, String> {
        let mut c = Chat::new(s.addr);
        c.published = s.published;
        for (conn, m) in s.conns {
            let (room, frames) = match m {
                AnyMember::Room(r) => (r, 0),
                AnyMember::Record { room, frames } => (room, frames),
            };
            if let Some(max) = MAX_ROOM.filter(|max| room > *max) {
                return Err(format!(
                    "connection {conn} is in room {room}, but chat version {VSN} numbers rooms 0..={max}"
                ));
            }
            c.joined(conn, room);
            c.restore_frames(conn, frames);
        }
        Ok(c)
    }

    fn addr(&self) -> &str {
        &self.addr
    }

    fn connections(&self) -> usize {
        self.conns.len()
    }

    fn published(&self) -> u64 {
        self.published
    }
}

/// What `init` takes.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct ChatArg {
    /// `ip:port` to listen on (port 0 picks one).
    pub addr: String,
    /// At most this many connections (default 10 000).
    #[serde(default)]
    pub max_connections: Option<usize>,
}

/// Calls.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub enum ChatCall {
    /// `(listen address, connections, publications, version)`.
    Info,
}

impl GenServer for Chat {
    type Arg = ChatArg;
    type Call = ChatCall;
    type Reply = (String, usize, u64, u8);
    type Cast = ();
    type Info = ();

    async fn init(ctx: Ctx, arg: ChatArg) -> Init<Self> {
        let opts = ListenOptions {
            accept: AcceptMode::ToOwner,
            max_connections: arg.max_connections.unwrap_or(10_000),
            conn: TcpOptions {
                framing: Framing::Len4,
                max_frame: 64 << 10,
                active: Active::Once,
                ..Default::default()
            },
            label: Some("chat".into()),
            ..Default::default()
        };
        let l = match ctx.tcp_listen(&arg.addr, &opts).await {
            Ok(l) => l,
            Err(e) => return Init::Stop(ExitReason::User(format!("chat: listen on {}: {e}", arg.addr))),
        };
        let addr = match ctx.port_info(l).await {
            Ok(i) => i.local,
            Err(e) => return Init::Stop(ExitReason::User(format!("chat: {e}"))),
        };
        Init::Ok(Chat::new(addr))
    }

    async fn handle_call(&mut self, _ctx: Ctx, _: ChatCall, _from: Caller) -> CallResult<Self::Reply> {
        CallResult::Reply((self.addr().to_string(), self.connections(), self.published(), VSN))
    }

    async fn handle_info(&mut self, ctx: Ctx, msg: Info<()>) -> CastResult {
        match msg {
            Info::Port(PortMsg::Accepted { port, .. }) => self.joined(port.0, 0),
            Info::Port(PortMsg::Tcp { port, data }) => {
                match data.split_first() {
                    Some((0, room))
                        if room.len() == 4
                            && MAX_ROOM.is_none_or(|max| u32::from_le_bytes(room.try_into().expect("4 bytes")) <= max) =>
                    {
                        self.joined(port.0, u32::from_le_bytes(room.try_into().expect("4 bytes")));
                    }
                    Some((1, payload)) => {
                        let mut out = Vec::with_capacity(payload.len() + 10);
                        out.push(1);
                        out.push(VSN);
                        out.extend_from_slice(&port.0.to_le_bytes());
                        out.extend_from_slice(payload);
                        for m in self.room_of(port.0) {
                            if let Err(e) = ctx.tcp_send(PortId(m), &out).await {
                                ctx.log(hotswap::Level::Debug, &format!("chat: send to {}: {e}", PortId(m)));
                            }
                        }
                        self.count_publication(port.0);
                    }
                    _ => {
                        ctx.log(hotswap::Level::Warn, &format!("chat: {port} sent a malformed frame; closing it"));
                        let _ = ctx.port_close(port).await;
                        self.left(port.0);
                        return CastResult::NoReply;
                    }
                }
                if let Err(e) = ctx.set_active(port, Active::Once) {
                    ctx.log(hotswap::Level::Debug, &format!("chat: {port}: {e}"));
                }
            }
            Info::Port(PortMsg::TcpClosed { port }) => self.left(port.0),
            Info::Port(PortMsg::TcpError { port, reason }) => {
                ctx.log(hotswap::Level::Info, &format!("chat: {port}: {reason}"));
            }
            _ => {}
        }
        CastResult::NoReply
    }

    /// `code_change` converts either version's state itself (the shapes differ on purpose),
    /// so the compatibility check leaves the state to the dry run.
    fn accepts() -> hotswap::schema::Accepts {
        hotswap::schema::Accepts::new().state_converted("code_change reads both versions' room and member shapes through ChatState")
    }

    fn code_change(old: OldState<'_>, _extra: Option<Extra<'_>>) -> Result<Self, String> {
        let s: ChatState = old.decode().map_err(|e| e.to_string())?;
        Chat::from_any(s)
    }
}

// An echo gen_server that owns its TCP listener and every connection (included by
// modules/port_echo_v*, which define `VSN` and the state type `Echo`). Frames are
// length-prefixed (4 bytes); each is echoed with the version byte in front, so a client
// sees which code answered. Version 1 counts frames per connection; version 2 keeps a
// record per connection, so `code_change` really converts the state.

use hotswap::gen_server::{CallResult, Caller, CastResult, Extra, GenServer, Info, Init, OldState};
use hotswap::net::{AcceptMode, Active, Framing, ListenOptions, PortMsg, TcpOptions};
use hotswap::{Ctx, ExitReason};

/// What `init` takes: the address to listen on.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct EchoArg {
    /// `ip:port` (port 0 picks one).
    pub addr: String,
}

/// Calls.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub enum EchoCall {
    /// `(listener, address, connections, frames echoed, version)`.
    Info,
}

/// A state of either version, as the other version exported it.
#[derive(serde::Deserialize)]
struct AnyState {
    listener: u64,
    addr: String,
    conns: std::collections::BTreeMap<u64, AnyConn>,
    #[serde(default)]
    migrations: u32,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
#[allow(dead_code)] // version 1 keeps only the frame count
enum AnyConn {
    Count(u64),
    Record { frames: u64, bytes: u64 },
}

trait ConnCount {
    fn frames(&self) -> u64;
    fn bump(&mut self, bytes: usize);
    fn from_any(c: AnyConn) -> Self;
}


impl GenServer for Echo {
    type Arg = EchoArg;
    type Call = EchoCall;
    type Reply = (u64, String, usize, u64, u8);
    type Cast = ();
    type Info = ();

    async fn init(ctx: Ctx, arg: EchoArg) -> Init<Self> {
        let opts = ListenOptions {
            accept: AcceptMode::ToOwner,
            conn: TcpOptions {
                framing: Framing::Len4,
                active: Active::Once,
                ..Default::default()
            },
            ..Default::default()
        };
        let l = match ctx.tcp_listen(&arg.addr, &opts).await {
            Ok(l) => l,
            Err(e) => return Init::Stop(ExitReason::User(format!("listen: {e}"))),
        };
        let addr = match ctx.port_info(l).await {
            Ok(i) => i.local,
            Err(e) => return Init::Stop(ExitReason::User(format!("port_info: {e}"))),
        };
        Init::Ok(Echo {
            listener: l.0,
            addr,
            ..Default::default()
        })
    }

    async fn handle_call(&mut self, _ctx: Ctx, _: EchoCall, _from: Caller) -> CallResult<Self::Reply> {
        let frames = self.conns.values().map(|c| c.frames()).sum();
        CallResult::Reply((self.listener, self.addr.clone(), self.conns.len(), frames, VSN))
    }

    async fn handle_info(&mut self, ctx: Ctx, msg: Info<()>) -> CastResult {
        match msg {
            Info::Port(PortMsg::Accepted { port, .. }) => {
                self.conns.insert(port.0, Default::default());
            }
            Info::Port(PortMsg::Tcp { port, data }) => {
                let mut out = Vec::with_capacity(data.len() + 1);
                out.push(VSN);
                out.extend_from_slice(&data);
                if let Err(e) = ctx.tcp_send(port, &out).await {
                    ctx.log(hotswap::Level::Warn, &format!("echo send on {port}: {e}"));
                }
                self.conns.entry(port.0).or_default().bump(data.len());
                if let Err(e) = ctx.set_active(port, Active::Once) {
                    ctx.log(hotswap::Level::Warn, &format!("echo set_active on {port}: {e}"));
                }
            }
            Info::Port(PortMsg::TcpClosed { port }) => {
                self.conns.remove(&port.0);
            }
            Info::Port(PortMsg::TcpError { port, reason }) => {
                ctx.log(hotswap::Level::Warn, &format!("echo: {port}: {reason}"));
            }
            _ => {}
        }
        CastResult::NoReply
    }

    /// `code_change` converts either version's state itself (the shapes differ on purpose),
    /// so the compatibility check leaves the state to the dry run.
    fn accepts() -> hotswap::schema::Accepts {
        hotswap::schema::Accepts::new().state_converted("code_change reads both versions' shapes of `conns` (a count, or a per-connection record) through AnyState")
    }

    fn code_change(old: OldState<'_>, _extra: Option<Extra<'_>>) -> Result<Self, String> {
        let s: AnyState = old.decode().map_err(|e| e.to_string())?;
        Ok(Echo {
            listener: s.listener,
            addr: s.addr,
            conns: s
                .conns
                .into_iter()
                .map(|(k, c)| (k, ConnCount::from_any(c)))
                .collect(),
            migrations: s.migrations + 1,
        })
    }
}

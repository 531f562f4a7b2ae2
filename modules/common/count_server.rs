// Seed 002's CountServer as a gen_server (included by modules/count_server_v*, which define
// `VSN`, `STEP`, `MAKE_EVEN`, the message type `Tick`, `decode_tick` and `extra_accepts`, the
// older forms `decode_tick` reads, declared for the compatibility check).
//
// * v1: +1 per `Increment` tick (the message is the bare `Increment`, like `:increment`);
// * v2: +2;
// * v3: +2, and `code_change` makes an odd count even;
// * v4: the message becomes `Increment(value)` (`{:increment, value}`), with no clause for
//   the old form: an old tick still in flight crashes it (`function_clause`);
// * v5: as v4, plus the backward-compatible clause: an old `Increment` counts as +2.

use hotswap::gen_server::{CastResult, Extra, GenServer, Info, Init, OldState};
use hotswap::{Ctx, Pid};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The tick of versions 1 to 3 (`:increment`).
#[derive(Serialize, Deserialize, Debug)]
pub enum OldTick {
    /// One tick.
    Increment,
}

/// The tick of versions 4 and 5 (`{:increment, value}`).
#[derive(Serialize, Deserialize, Debug)]
pub enum NewTick {
    /// One tick of `value`.
    Increment(u64),
}

impl From<OldTick> for NewTick {
    fn from(_: OldTick) -> NewTick {
        NewTick::Increment(2)
    }
}

/// What a tick adds, and the tick this version sends itself.
pub trait TickMsg {
    /// The amount to add.
    fn value(&self) -> u64;
    /// This version's next tick.
    fn next() -> Self;
}

impl TickMsg for OldTick {
    fn value(&self) -> u64 {
        STEP
    }
    fn next() -> Self {
        OldTick::Increment
    }
}

impl TickMsg for NewTick {
    fn value(&self) -> u64 {
        let NewTick::Increment(v) = self;
        *v
    }
    fn next() -> Self {
        NewTick::Increment(STEP)
    }
}

/// `init` argument.
#[derive(Serialize, Deserialize, Debug)]
pub struct Arg {
    /// Who gets a [`Report`] after each tick.
    pub listener: Pid,
    /// Milliseconds between self-sent ticks (0: only ticks others send).
    pub interval_ms: u64,
}

/// Sent to the listener after each tick.
#[derive(Serialize, Deserialize, Debug)]
pub struct Report {
    /// The server.
    pub pid: Pid,
    /// The count.
    pub n: u64,
    /// The version that counted.
    pub vsn: String,
}

/// The state.
#[derive(Serialize, Deserialize, Debug)]
pub struct CountServer {
    /// The count.
    pub n: u64,
    listener: Pid,
    interval_ms: u64,
}

impl GenServer for CountServer {
    type Arg = Arg;
    type Call = ();
    type Reply = u64;
    type Cast = ();
    type Info = Tick;

    async fn init(ctx: Ctx, arg: Arg) -> Init<Self> {
        if arg.interval_ms > 0 {
            ctx.send_after(Duration::from_millis(arg.interval_ms), ctx.self_pid(), &Tick::next());
        }
        Init::Ok(CountServer {
            n: 0,
            listener: arg.listener,
            interval_ms: arg.interval_ms,
        })
    }

    async fn handle_info(&mut self, ctx: Ctx, msg: Info<Tick>) -> CastResult {
        if let Info::Msg(t) = msg {
            self.n += t.value();
            ctx.send(
                self.listener,
                &Report {
                    pid: ctx.self_pid(),
                    n: self.n,
                    vsn: VSN.into(),
                },
            );
            if self.interval_ms > 0 {
                ctx.send_after(Duration::from_millis(self.interval_ms), ctx.self_pid(), &Tick::next());
            }
        }
        CastResult::NoReply
    }

    fn code_change(old: OldState<'_>, _extra: Option<Extra<'_>>) -> Result<Self, String> {
        let mut s: CountServer = old.decode().map_err(|e| e.to_string())?;
        if MAKE_EVEN && s.n % 2 == 1 {
            s.n -= 1;
        }
        Ok(s)
    }

    fn decode_info(bytes: &[u8]) -> Result<Tick, hotswap::codec::DecodeError> {
        decode_tick(bytes)
    }

    fn accepts() -> hotswap::schema::Accepts {
        extra_accepts()
    }
}

// A gen_server fixture for the behaviour tests (included by modules/gs_test_v*, which
// define `VSN` and `FAILING_CODE_CHANGE`). Its `terminate` tells the listener it ran.

use hotswap::gen_server::{
    self as gs, Action, CallResult, CastResult, Caller, Extra, GenServer, Info, Init, OldState,
};
use hotswap::{Ctx, ExitReason, Pid};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What `init` does.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum InitMode {
    /// `{ok, State}`.
    Ok,
    /// `{ok, State, Timeout}`: `handle_info(timeout)` after this many ms of silence.
    OkTimeout(u64),
    /// `ignore`.
    Ignore,
    /// `{stop, Reason}`.
    Stop(String),
    /// Panic.
    Panic,
    /// Sleep this long first.
    Sleep(u64),
}

/// `init` argument.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Arg {
    /// Who gets [`Event`]s.
    pub listener: Pid,
    /// Trap exits (so the parent's exit signal runs `terminate`).
    pub trap_exit: bool,
    /// What `init` does.
    pub init: InitMode,
}

/// Requests (calls and casts).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Req {
    /// Reply with the value.
    Echo(u64),
    /// Sleep, then reply with the count.
    Sleep(u64),
    /// Do not reply now; keep the caller.
    Defer,
    /// Reply to the kept caller with this value (from this server), then reply 0.
    Release(u64),
    /// Stop with a reason, no reply.
    Stop(String),
    /// Stop with a reason, replying 7 after terminate.
    StopReply(String),
    /// Panic.
    Panic,
    /// Reply with the number of requests handled.
    Count,
}

/// What the server tells its listener.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Event {
    /// `terminate` ran with this reason.
    Terminated {
        /// The reason, formatted.
        reason: String,
        /// The version whose `terminate` ran.
        vsn: String,
    },
    /// `handle_info` got this.
    Info(String),
}

/// The state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct State {
    /// Who gets events.
    pub listener: Pid,
    /// Requests handled.
    pub count: u64,
    /// A deferred caller.
    pub deferred: Option<Caller>,
    /// The version that made this state.
    pub vsn: String,
}

impl GenServer for State {
    type Arg = Arg;
    type Call = Req;
    type Reply = u64;
    type Cast = Req;
    type Info = String;

    async fn init(ctx: Ctx, arg: Arg) -> Init<Self> {
        ctx.trap_exit(arg.trap_exit);
        let s = State {
            listener: arg.listener,
            count: 0,
            deferred: None,
            vsn: VSN.into(),
        };
        match arg.init {
            InitMode::Ok => Init::Ok(s),
            InitMode::OkTimeout(ms) => Init::OkThen(s, Action::Timeout(Duration::from_millis(ms))),
            InitMode::Ignore => Init::Ignore,
            InitMode::Stop(r) => Init::Stop(ExitReason::User(r)),
            InitMode::Panic => panic!("init exploded"),
            InitMode::Sleep(ms) => {
                ctx.sleep(Duration::from_millis(ms)).await;
                Init::Ok(s)
            }
        }
    }

    async fn handle_call(&mut self, ctx: Ctx, req: Req, from: Caller) -> CallResult<u64> {
        self.count += 1;
        match req {
            Req::Echo(v) => CallResult::Reply(v),
            Req::Sleep(ms) => {
                ctx.sleep(Duration::from_millis(ms)).await;
                CallResult::Reply(self.count)
            }
            Req::Defer => {
                self.deferred = Some(from);
                CallResult::NoReply
            }
            Req::Release(v) => {
                if let Some(c) = self.deferred.take() {
                    gs::reply(&ctx, &c, &v);
                }
                CallResult::Reply(0)
            }
            Req::Stop(r) => CallResult::Stop(ExitReason::User(r)),
            Req::StopReply(r) => CallResult::StopReply(ExitReason::User(r), 7),
            Req::Panic => panic!("handle_call exploded"),
            Req::Count => CallResult::Reply(self.count),
        }
    }

    async fn handle_cast(&mut self, _ctx: Ctx, req: Req) -> CastResult {
        self.count += 1;
        match req {
            Req::Stop(r) => CastResult::Stop(ExitReason::User(r)),
            Req::Panic => panic!("handle_cast exploded"),
            _ => CastResult::NoReply,
        }
    }

    async fn handle_info(&mut self, ctx: Ctx, msg: Info<String>) -> CastResult {
        let text = match msg {
            Info::Msg(s) => s,
            Info::Exit { from, reason } => format!("EXIT {from} {reason}"),
            Info::Down { pid, reason, .. } => format!("DOWN {pid} {reason}"),
            Info::Timeout => "timeout".into(),
            Info::Port(m) => format!("PORT {m:?}"),
        };
        ctx.send(self.listener, &Event::Info(text));
        CastResult::NoReply
    }

    async fn terminate(&mut self, ctx: Ctx, reason: ExitReason) {
        ctx.send(
            self.listener,
            &Event::Terminated {
                reason: reason.to_string(),
                vsn: VSN.into(),
            },
        );
    }

    fn code_change(old: OldState<'_>, extra: Option<Extra<'_>>) -> Result<Self, String> {
        if FAILING_CODE_CHANGE {
            match extra.map(|e| e.decode::<String>()) {
                Some(Ok(s)) if s == "error" => return Err("nope".into()),
                Some(Ok(s)) if s == "panic" => panic!("code_change exploded"),
                _ => {}
            }
        }
        let mut s: State = old.decode().map_err(|e| e.to_string())?;
        s.vsn = VSN.into();
        Ok(s)
    }
}

// A counter gen_server for upgrades under load and the upgrade benchmark (included by
// modules/upgrade_srv_v*, which define `VSN`). Every `code_change` counts itself in the
// state, so a test can check that every state was migrated.

use hotswap::gen_server::{CallResult, Caller, Extra, GenServer, Init, OldState};
use hotswap::Ctx;
use serde::{Deserialize, Serialize};

/// The state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Counter {
    /// Calls handled.
    pub calls: u64,
    /// `code_change`s applied.
    pub migrations: u32,
    /// The version that made it.
    pub vsn: String,
}

impl GenServer for Counter {
    type Arg = ();
    type Call = ();
    type Reply = u64;
    type Cast = ();
    type Info = ();

    async fn init(_ctx: Ctx, _: ()) -> Init<Self> {
        Init::Ok(Counter {
            vsn: VSN.into(),
            ..Default::default()
        })
    }

    async fn handle_call(&mut self, _ctx: Ctx, _: (), _from: Caller) -> CallResult<u64> {
        self.calls += 1;
        CallResult::Reply(self.calls)
    }

    async fn handle_cast(&mut self, _ctx: Ctx, _: ()) -> hotswap::gen_server::CastResult {
        self.calls += 1;
        hotswap::gen_server::CastResult::NoReply
    }

    fn code_change(old: OldState<'_>, _extra: Option<Extra<'_>>) -> Result<Self, String> {
        let mut s: Counter = old.decode().map_err(|e| e.to_string())?;
        s.migrations += 1;
        s.vsn = VSN.into();
        Ok(s)
    }
}

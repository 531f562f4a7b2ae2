// Seed 001's `sync_code_reload` gen_server (included by modules/sync_code_reload_v*, which
// define `VSN`). Version 1 keeps a count of handled messages; version 2's `code_change`
// records the OldVsn and Extra it was given, as the seed's io:format does.

use hotswap::gen_server::{CallResult, CastResult, Caller, Extra, GenServer, Init, OldState};
use hotswap::Ctx;
use serde::{Deserialize, Serialize};

/// The state. Version 1 only fills `handled`.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct State {
    /// Calls and casts handled.
    pub handled: u64,
    /// The version that made it.
    #[serde(default)]
    pub vsn: String,
    /// What `code_change` was given as OldVsn.
    #[serde(default)]
    pub old_vsn: Option<String>,
    /// What `code_change` was given as Extra.
    #[serde(default)]
    pub extra: Option<String>,
}

impl GenServer for State {
    type Arg = ();
    type Call = String;
    type Reply = String;
    type Cast = String;
    type Info = String;

    async fn init(_ctx: Ctx, _: ()) -> Init<Self> {
        Init::Ok(State {
            vsn: VSN.into(),
            ..Default::default()
        })
    }

    async fn handle_call(&mut self, _ctx: Ctx, _req: String, _from: Caller) -> CallResult<String> {
        self.handled += 1;
        CallResult::Reply(format!("ok from {VSN}"))
    }

    async fn handle_cast(&mut self, _ctx: Ctx, _msg: String) -> CastResult {
        self.handled += 1;
        CastResult::NoReply
    }

    fn code_change(old: OldState<'_>, extra: Option<Extra<'_>>) -> Result<Self, String> {
        let mut s: State = old.decode().map_err(|e| e.to_string())?;
        if CODE_CHANGE_RECORDS {
            s.old_vsn = Some(old.vsn.to_string());
            s.extra = extra.map(|e| e.decode::<String>().unwrap_or_else(|e| e.to_string()));
        }
        s.vsn = VSN.into();
        Ok(s)
    }
}

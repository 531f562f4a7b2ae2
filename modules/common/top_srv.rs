// A gen_server for the `hotswap top` tests (included by modules/top_srv_v*, which define
// `VSN`). Both versions keep the same state, `{id, count}`, so an upgrade between them
// runs `code_change` for every server without the load-time check refusing anything.
//
// Two ways for a test to hold a release upgrade where it wants, with no timing involved:
//
// * The hold: the call `Hold(path)` answers only once the file `path` exists (it looks
//   again every few milliseconds, in its own task: no thread is blocked). The check
//   copies a busy server's state only when its call gives it back (and a server busy in
//   a call does not answer a suspend), so the upgrade waits in its check phase until the
//   test creates the file.
// * The gate: when the node's environment names a FIFO in `HOTSWAP_TOP_GATE`, the
//   `code_change` of server 4 opens it for reading, which blocks its thread until a
//   writer opens it: each of its code_changes (the check's dry run, then the switch)
//   waits for the test. A slow code_change, as a big state's conversion would be.

use hotswap::gen_server::{CallResult, Caller, CastResult, Extra, GenServer, Init, OldState};
use hotswap::Ctx;
use serde::{Deserialize, Serialize};

/// The state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct State {
    /// The server's id (its init argument).
    pub id: u64,
    /// Calls and casts counted.
    pub count: u64,
}

/// A call.
#[derive(Serialize, Deserialize, Debug)]
pub enum Req {
    /// The count.
    Get,
    /// Count one; the new count.
    Bump,
    /// This version.
    Vsn,
    /// Answer once this file exists (the count).
    Hold(String),
}

/// A reply.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub enum Rep {
    /// The count.
    Count(u64),
    /// A version.
    Vsn(String),
}

impl GenServer for State {
    type Arg = u64;
    type Call = Req;
    type Reply = Rep;
    type Cast = ();
    type Info = ();

    async fn init(_ctx: Ctx, id: u64) -> Init<Self> {
        Init::Ok(State { id, count: 0 })
    }

    async fn handle_call(&mut self, ctx: Ctx, req: Req, _from: Caller) -> CallResult<Rep> {
        match req {
            Req::Get => CallResult::Reply(Rep::Count(self.count)),
            Req::Bump => {
                self.count += 1;
                CallResult::Reply(Rep::Count(self.count))
            }
            Req::Vsn => CallResult::Reply(Rep::Vsn(VSN.into())),
            Req::Hold(path) => {
                while !std::path::Path::new(&path).exists() {
                    ctx.sleep(std::time::Duration::from_millis(5)).await;
                }
                CallResult::Reply(Rep::Count(self.count))
            }
        }
    }

    async fn handle_cast(&mut self, _ctx: Ctx, _: ()) -> CastResult {
        self.count += 1;
        CastResult::NoReply
    }

    fn code_change(old: OldState<'_>, _extra: Option<Extra<'_>>) -> Result<Self, String> {
        let s: State = old.decode().map_err(|e| e.to_string())?;
        if s.id == 4 {
            if let Some(path) = std::env::var_os("HOTSWAP_TOP_GATE") {
                // Returns once a writer has opened the FIFO; then read to its end.
                if let Ok(mut f) = std::fs::File::open(path) {
                    let _ = std::io::Read::read_to_end(&mut f, &mut Vec::new());
                }
            }
        }
        Ok(s)
    }
}

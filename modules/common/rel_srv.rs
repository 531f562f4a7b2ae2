// A gen_server for release upgrades (included by modules/rel_srv_v*, which define `VSN`
// and the state type `State` with `from_v1`/`to_v1`).
//
// * v1's state is `{id, count}`; v2's is `{id, total, upgraded_from}`: the field is
//   renamed, so migrating needs a real `code_change` (and a downgrade a real `downgrade`).
// * The `Extra` of an upgrade may ask a `code_change` to fail: `{fail_id, fail_on}` makes
//   the server whose id is `fail_id` fail on the `fail_on`-th `code_change` this version
//   ran for it (the check runs it once on a copy: `fail_on = 1` fails the check,
//   `fail_on = 2` passes the check and fails the switch).
// * Calls: `Get` (the state as `(id, count)`), `Bump` (count + 1), `Sleep(ms)` (answers
//   after `ms`: a server busy in a call does not answer a suspend), `Vsn`.

use std::sync::atomic::{AtomicU32, Ordering};

use hotswap::gen_server::{CallResult, Caller, CastResult, Direction, Extra, GenServer, Init, OldState};
use hotswap::Ctx;
use serde::{Deserialize, Serialize};

/// Version 1's state (also what version 2 sends back on a downgrade).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct V1 {
    /// The server's id (its init argument).
    pub id: u64,
    /// Calls and casts counted.
    pub count: u64,
}

/// A call.
#[derive(Serialize, Deserialize, Debug)]
pub enum Req {
    /// `(id, count)`.
    Get,
    /// Count one; the new count.
    Bump,
    /// Answer after this many milliseconds.
    Sleep(u64),
    /// This version.
    Vsn,
}

/// A reply.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub enum Rep {
    /// `(id, count)`.
    State(u64, u64),
    /// The count.
    Count(u64),
    /// Done.
    Ok,
    /// A version.
    Vsn(String),
}

/// The `Extra` that injects a failure.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct FailAt {
    /// The id of the server whose `code_change` fails.
    pub fail_id: Option<u64>,
    /// On which of its `code_change`s (1: the check's copy).
    pub fail_on: Option<u32>,
}

static RUNS: AtomicU32 = AtomicU32::new(0);

fn maybe_fail(id: u64, extra: Option<Extra<'_>>) -> Result<(), String> {
    let f: FailAt = match extra {
        Some(e) => e.decode().unwrap_or_default(),
        None => FailAt::default(),
    };
    if f.fail_id == Some(id) {
        let n = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
        if Some(n) == f.fail_on.or(Some(1)) {
            return Err(format!(
                "rel_srv {VSN}: code_change refused for server {id} (injected failure, run {n})"
            ));
        }
    }
    Ok(())
}

impl GenServer for State {
    type Arg = u64;
    type Call = Req;
    type Reply = Rep;
    type Cast = ();
    type Info = ();

    async fn init(_ctx: Ctx, id: u64) -> Init<Self> {
        Init::Ok(State::from_v1(V1 { id, count: 0 }, "init"))
    }

    async fn handle_call(&mut self, ctx: Ctx, req: Req, _from: Caller) -> CallResult<Rep> {
        match req {
            Req::Get => {
                let v = self.to_v1();
                CallResult::Reply(Rep::State(v.id, v.count))
            }
            Req::Bump => {
                let mut v = self.to_v1();
                v.count += 1;
                let n = v.count;
                *self = State::from_v1(v, self.origin());
                CallResult::Reply(Rep::Count(n))
            }
            Req::Sleep(ms) => {
                ctx.sleep(std::time::Duration::from_millis(ms)).await;
                CallResult::Reply(Rep::Ok)
            }
            Req::Vsn => CallResult::Reply(Rep::Vsn(VSN.into())),
        }
    }

    async fn handle_cast(&mut self, _ctx: Ctx, _: ()) -> CastResult {
        let mut v = self.to_v1();
        v.count += 1;
        *self = State::from_v1(v, self.origin());
        CastResult::NoReply
    }

    /// `code_change` converts either version's state itself (v2 renames a field on
    /// purpose), so the types check leaves the state to the dry run.
    fn accepts() -> hotswap::schema::Accepts {
        hotswap::schema::Accepts::new()
            .state_converted("code_change reads version 1's {id, count} (and version 2's own shape on a downgrade) through State::read")
    }

    fn code_change(old: OldState<'_>, extra: Option<Extra<'_>>) -> Result<Self, String> {
        let v1 = State::read(old)?;
        maybe_fail(v1.id, extra)?;
        Ok(State::from_v1(v1, old.vsn))
    }

    fn downgrade(&self, to: &str, extra: Option<Extra<'_>>) -> Result<Vec<u8>, String> {
        let v1 = self.to_v1();
        maybe_fail(v1.id, extra)?;
        let _ = to;
        Ok(hotswap::codec::encode(&v1))
    }
}

/// Whether a state came from a newer version (used by `State::read`).
#[allow(dead_code)]
fn is_down(old: &OldState<'_>) -> bool {
    old.direction() == Direction::Down
}

// A gen_server with five realistic message types (state, call, reply, cast, info), for the
// benchmark of the compatibility check a load runs (`compare load_compat_check`). Included
// by modules/compat_bench_v1 and _v2, which define `VSN` and `V2`; v2 (feature `v2`) adds
// an optional field and a call variant: a compatible change that the check really compares.

use hotswap::gen_server::{CallResult, CastResult, Caller, GenServer, Info, Init};
use hotswap::Ctx;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One account.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Account {
    /// Its id.
    pub id: u64,
    /// Its owner.
    pub owner: String,
    /// Its balance in cents.
    pub balance: i64,
    /// Tags.
    pub tags: Vec<String>,
}

/// The state.
#[derive(Serialize, Deserialize, Debug)]
pub struct Ledger {
    /// Accounts by id.
    pub accounts: BTreeMap<u64, Account>,
    /// The last transfer's sequence number.
    pub seq: u64,
    /// A label.
    pub label: Option<String>,
    /// Added in v2.
    #[cfg(feature = "v2")]
    #[serde(default)]
    pub audit: Vec<(u64, String)>,
}

/// Calls.
#[derive(Serialize, Deserialize, Debug)]
pub enum Call {
    /// Read an account.
    Get { id: u64 },
    /// Open an account.
    Open(Account),
    /// Move money.
    Transfer { from: u64, to: u64, cents: i64, memo: Option<String> },
    /// Close one.
    Close(u64),
    /// List the ids.
    List,
    /// Added in v2.
    #[cfg(feature = "v2")]
    Audit { since: u64 },
}

/// Replies.
#[derive(Serialize, Deserialize, Debug)]
pub enum Reply {
    /// An account.
    Account(Account),
    /// Done.
    Ok,
    /// Ids.
    Ids(Vec<u64>),
    /// Refused.
    Error { code: u32, text: String },
}

/// Casts.
#[derive(Serialize, Deserialize, Debug)]
pub enum Cast {
    /// Tag an account.
    Tag { id: u64, tag: String },
    /// Forget everything.
    Reset,
}

/// Other messages.
#[derive(Serialize, Deserialize, Debug)]
pub enum Tick {
    /// Interest, in basis points.
    Interest(u32),
    /// A snapshot request.
    Snapshot { to: u64, full: bool },
}

impl GenServer for Ledger {
    type Arg = ();
    type Call = Call;
    type Reply = Reply;
    type Cast = Cast;
    type Info = Tick;

    async fn init(_ctx: Ctx, _: ()) -> Init<Self> {
        Init::Ok(Ledger {
            accounts: BTreeMap::new(),
            seq: 0,
            label: Some(VSN.into()),
            #[cfg(feature = "v2")]
            audit: Vec::new(),
        })
    }

    async fn handle_call(&mut self, _ctx: Ctx, req: Call, _from: Caller) -> CallResult<Reply> {
        CallResult::Reply(match req {
            Call::Get { id } => match self.accounts.get(&id) {
                Some(a) => Reply::Account(a.clone()),
                None => Reply::Error { code: 404, text: "no such account".into() },
            },
            Call::Open(a) => {
                self.accounts.insert(a.id, a);
                Reply::Ok
            }
            Call::List => Reply::Ids(self.accounts.keys().copied().collect()),
            _ if !V2 => Reply::Error { code: 501, text: "not in this version".into() },
            _ => Reply::Ok,
        })
    }

    async fn handle_cast(&mut self, _ctx: Ctx, msg: Cast) -> CastResult {
        if let Cast::Reset = msg {
            self.accounts.clear();
        }
        CastResult::NoReply
    }

    async fn handle_info(&mut self, _ctx: Ctx, _msg: Info<Tick>) -> CastResult {
        self.seq += 1;
        CastResult::NoReply
    }
}

// A gen_server whose version 2 validates its state in a custom `Deserialize`
// (`#[serde(try_from)]`): the traced format is the same as version 1's (a struct with a
// `u64`), so the static check says compatible, but a live state above `LIMIT` does not
// decode. Only the dry run on live states (`Code::check`) catches it. Included by
// modules/dry_run_v1 and _v2, which define `LIMIT` (`None`: no limit).

use hotswap::gen_server::{GenServer, Init};
use hotswap::Ctx;
use serde::{Deserialize, Serialize};

/// The state as written.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Raw {
    /// A count.
    pub n: u64,
}

/// The state, validated on decode.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(try_from = "Raw")]
pub struct Bounded {
    /// A count, at most `LIMIT` when there is one.
    pub n: u64,
}

impl TryFrom<Raw> for Bounded {
    type Error = String;
    fn try_from(r: Raw) -> Result<Bounded, String> {
        match LIMIT {
            Some(l) if r.n > l => Err(format!("n = {} is above this version's limit {l}", r.n)),
            _ => Ok(Bounded { n: r.n }),
        }
    }
}

impl GenServer for Bounded {
    type Arg = u64;
    type Call = ();
    type Reply = u64;
    type Cast = ();
    type Info = ();

    async fn init(_ctx: Ctx, n: u64) -> Init<Self> {
        Init::Ok(Bounded { n })
    }
}

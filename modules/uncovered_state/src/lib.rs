//! Fixture: a gen_server whose state holds an untagged enum. The tracer cannot describe it
//! (serde reads it with `deserialize_any`), so `hotswap check` reports the state "not
//! checked" with the reason instead of "compatible".

use hotswap::gen_server::{GenServer, Init};
use hotswap::Ctx;
use serde::{Deserialize, Serialize};

/// A number or a text, told apart by what was written.
#[derive(Serialize, Deserialize, Debug)]
#[serde(untagged)]
pub enum Loose {
    /// A number.
    N(u64),
    /// A text.
    S(String),
}

/// The state.
#[derive(Serialize, Deserialize, Debug)]
pub struct State {
    /// A count.
    pub n: u64,
    /// Anything.
    pub extra: Loose,
}

impl GenServer for State {
    type Arg = u64;
    type Call = ();
    type Reply = u64;
    type Cast = ();
    type Info = ();

    async fn init(_ctx: Ctx, n: u64) -> Init<Self> {
        Init::Ok(State {
            n,
            extra: Loose::N(n),
        })
    }
}

hotswap::module! { name: "uncovered_state", version: "1", gen_server: State }

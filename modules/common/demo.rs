// Shared body of the `demo` module versions (included by modules/demo_v*/src/lib.rs, which
// define `VSN` and the process state type `State` with `State::new(name)`,
// `State::add(amount)`, `State::total()` and `State::snapshot(pid)`).
//
// The story of `hotswap demo`: each `demo` process is a tally server. It keeps a running
// total of the numbers clients send it and replies to every request with the new total.
// On `CodeSwitch` it makes the fully-qualified tail call `demo:loop(State)`, which runs the
// *current* version of the module: the process moves to new code, carrying its state
// (encoded with the SDK codec, so a field added in a later version decodes with its default).

use hotswap::{Ctx, Outcome, Pid};

/// What a tally server understands (the host mirrors this type in `hotswap-cli`).
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub enum Req {
    /// Add `amount` to the total and reply with a [`Reply`] to `from`.
    Add {
        /// Where to send the reply.
        from: Pid,
        /// The client's sequence number, echoed in the reply.
        seq: u64,
        /// How much to add.
        amount: u64,
    },
    /// Reply with a [`Snapshot`] of the state to `from`.
    Get {
        /// Where to send the snapshot.
        from: Pid,
    },
    /// Make the fully-qualified call `demo:loop(State)`: continue on the current version.
    CodeSwitch,
    /// Exit normally.
    Stop,
}

/// The reply to one `Add`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Reply {
    /// The server that handled the request.
    pub server: Pid,
    /// The request's sequence number.
    pub seq: u64,
    /// The running total after this request.
    pub total: u64,
    /// The module version whose code handled the request.
    pub version: String,
}

/// The reply to `Get`: the server's state as its current code sees it.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Snapshot {
    /// The server.
    pub server: Pid,
    /// The module version that answered.
    pub version: String,
    /// The server's name (set at start, carried across upgrades).
    pub name: String,
    /// The running total.
    pub total: u64,
    /// How many `Add` requests it has handled.
    pub count: u64,
    /// Requests handled since the process started running v2 (`None` from v1, which has no
    /// such field).
    #[serde(default)]
    pub since_upgrade: Option<u64>,
}

/// `demo:start(Name)`: make a fresh state, then enter `demo:loop(State)`.
async fn start(ctx: Ctx, name: String) -> Outcome {
    ctx.continue_with("demo", "loop", &State::new(name))
}

/// `demo:loop(State)`: serve requests; `CodeSwitch` re-enters `demo:loop` on the current
/// version, carrying the state.
async fn serve(ctx: Ctx, mut state: State) -> Outcome {
    loop {
        match ctx.receive::<Req>().await {
            Req::Add { from, seq, amount } => {
                state.add(amount);
                let reply = Reply { server: ctx.self_pid(), seq, total: state.total(), version: VSN.to_string() };
                ctx.send(from, &reply);
            }
            Req::Get { from } => ctx.send(from, &state.snapshot(ctx.self_pid())),
            Req::CodeSwitch => return ctx.continue_with("demo", "loop", &state),
            Req::Stop => return Outcome::Value(Vec::new()),
        }
    }
}

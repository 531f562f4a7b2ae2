// Module code that keeps a node thread inside it without awaiting ("spins"; included by
// modules/spin_v*/src/lib.rs, which define `VSN`): a synchronous function, an `apply`
// target, a future whose destructor spins, a gen_server whose `init`, callbacks,
// `terminate` and `code_change` spin, and a supervisor whose `init` spins. The tests purge
// the version while a node thread is inside one of them: the version must be pinned, never
// unmapped under the running code.
//
// What spins first tells the process registered as `spin_watch` (if there is one) which
// part started, so the tests wait for that instead of sleeping. `code_change` and the
// supervisor's `init` have no `Ctx`: they create a marker file instead.

use hotswap::gen_server::{CallResult, CastResult, Caller, Extra, GenServer, Info, Init, OldState};
use hotswap::supervisor::{Spec, Strategy, Supervisor};
use hotswap::{Ctx, ExitReason, Value};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Stay `ms` milliseconds inside this version's code without returning to the node. The
/// thread blocks (for the node, the same as a spin loop: a worker thread inside module
/// code, not at an await point) instead of burning a CPU the other tests share.
fn spin(ms: u64) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(ms) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Tell the watcher (the process registered as `spin_watch`) what started.
fn tell(ctx: &Ctx, what: &str) {
    let _ = ctx.send_named("spin_watch", &format!("{what} v{VSN}"));
}

/// `busy(ms)`, a synchronous function: spins for `ms` milliseconds, then says which version
/// ran it.
fn busy(ctx: Ctx, ms: u64) -> String {
    tell(&ctx, "busy");
    spin(ms);
    format!("v{VSN} spun {ms} ms")
}

/// `apply_busy(ms)`, a target for `Ctx::apply`: spins in its first poll, then returns which
/// version ran it.
async fn apply_busy(ctx: Ctx, ms: u64) -> Value<String> {
    tell(&ctx, "apply_busy");
    spin(ms);
    Value(format!("v{VSN} spun {ms} ms"))
}

/// Spins for its milliseconds when dropped (as a process's future is when it is killed).
struct SpinOnDrop(Ctx, u64);

impl Drop for SpinOnDrop {
    fn drop(&mut self) {
        tell(&self.0, "drop");
        spin(self.1);
    }
}

/// `drop_spin(ms)`: waits for a message forever; its future's destructor spins `ms` ms.
async fn drop_spin(ctx: Ctx, ms: u64) {
    let _guard = SpinOnDrop(ctx, ms);
    tell(&ctx, "waiting");
    let _ = ctx.recv().await;
}

/// Calls of the gen_server.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Req {
    /// Spin this many ms inside `handle_call`, then reply with the version.
    Spin(u64),
    /// Reply with the version that handles the call.
    Vsn,
    /// Make `terminate` spin this many ms.
    SpinInTerminate(u64),
    /// Make the next `code_change` create the file at this path, then spin this many ms.
    SpinInCodeChange(String, u64),
}

/// The gen_server's state.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct State {
    /// The version that made it.
    pub vsn: String,
    /// How long `terminate` spins.
    pub terminate_ms: u64,
    /// The marker file and spin time of the next `code_change`.
    pub code_change: Option<(String, u64)>,
}

impl GenServer for State {
    type Arg = u64;
    type Call = Req;
    type Reply = String;
    type Cast = ();
    type Info = String;

    /// `init(ms)`: spins `ms` milliseconds first (when not 0).
    async fn init(ctx: Ctx, ms: u64) -> Init<Self> {
        if ms > 0 {
            tell(&ctx, "init");
            spin(ms);
        }
        Init::Ok(State {
            vsn: VSN.into(),
            terminate_ms: 0,
            code_change: None,
        })
    }

    async fn handle_call(&mut self, ctx: Ctx, req: Req, _from: Caller) -> CallResult<String> {
        match req {
            Req::Spin(ms) => {
                tell(&ctx, "handle_call");
                spin(ms);
            }
            Req::Vsn => {}
            Req::SpinInTerminate(ms) => self.terminate_ms = ms,
            Req::SpinInCodeChange(path, ms) => self.code_change = Some((path, ms)),
        }
        CallResult::Reply(format!("v{VSN}"))
    }

    async fn handle_cast(&mut self, _ctx: Ctx, _req: ()) -> CastResult {
        CastResult::NoReply
    }

    async fn handle_info(&mut self, _ctx: Ctx, _msg: Info<String>) -> CastResult {
        CastResult::NoReply
    }

    async fn terminate(&mut self, ctx: Ctx, _reason: ExitReason) {
        if self.terminate_ms > 0 {
            tell(&ctx, "terminate");
            spin(self.terminate_ms);
        }
    }

    fn code_change(old: OldState<'_>, _extra: Option<Extra<'_>>) -> Result<Self, String> {
        let mut s: State = old.decode().map_err(|e| e.to_string())?;
        if let Some((path, ms)) = s.code_change.take() {
            std::fs::write(&path, VSN).map_err(|e| format!("cannot write {path}: {e}"))?;
            spin(ms);
        }
        s.vsn = VSN.into();
        Ok(s)
    }
}

/// The supervisor: `init((marker, ms))` creates the marker file, spins `ms` milliseconds,
/// then describes an empty one_for_one tree.
pub struct SpinSup;

impl Supervisor for SpinSup {
    type Arg = (String, u64);

    fn init((path, ms): (String, u64)) -> Option<Spec> {
        let _ = std::fs::write(&path, VSN);
        spin(ms);
        Some(Spec::new(Strategy::OneForOne))
    }
}

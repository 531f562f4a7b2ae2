//! Fixture `app_worker`: a gen_server whose configuration says what it does, for the
//! application and node-stop tests and benchmarks, and a supervisor of N of them.
//!
//! The worker (configuration [`Config`], every field optional):
//! - `id`: its label in log lines;
//! - `trap_exit`: trap exits, so that the supervisor's `shutdown` runs `terminate`
//!   (`seeds/003`: without it, or with `brutal_kill`, terminate never runs);
//! - `log`: a file to which it appends `init <id>` when it starts and
//!   `terminate <id> <reason>` when `terminate` runs (one `write` per line, `O_APPEND`);
//! - `notify`: a pid that gets `Started(<its pid>, <id>)` from every `init` and
//!   `Terminated(<id>, <reason>)` from `terminate` (runtime tests, restart benchmarks);
//! - `crash`: right after `init`, stop with this reason (a crash loop for intensity tests);
//! - `terminate_hang`: `terminate` waits for a message that never comes (shutdown time
//!   limits).
//!
//! The supervisor ([`Pool`], argument [`PoolArg`]): one_for_one, intensity 10 per second
//! (as the Erlang benchmark's `hs_bench_sup`), `children` workers with ids `1..=N`, each
//! with the `worker` configuration and its id appended to `worker.id`.
//!
//! A fixture may write its log file itself: tests read it after the node is gone, and the
//! writes are a few short appends.

use std::io::Write;

use hotswap::gen_server::{CastResult, GenServer, Info, Init};
use hotswap::supervisor::{ChildSpec, Spec, Strategy, Supervisor};
use hotswap::{Ctx, ExitReason, Pid};
use serde::{Deserialize, Serialize};

/// What a worker does (the `init` argument).
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct Config {
    /// Its label in log lines.
    pub id: String,
    /// Trap exits.
    pub trap_exit: bool,
    /// Append `init`/`terminate` lines to this file.
    pub log: Option<String>,
    /// Send [`Note`]s here from `init` and `terminate`.
    pub notify: Option<Pid>,
    /// Stop with this reason right after `init`.
    pub crash: Option<String>,
    /// `terminate` never returns.
    pub terminate_hang: bool,
}

/// What a worker sends to `notify`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A worker (its pid, its id) has run `init`.
    Started(Pid, String),
    /// A worker (its id) runs `terminate` with this reason.
    Terminated(String, String),
}

fn append(path: &Option<String>, line: String) {
    if let Some(p) = path {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

impl GenServer for Config {
    type Arg = Config;
    type Call = ();
    type Reply = String;
    type Cast = ();
    type Info = ();

    async fn init(ctx: Ctx, c: Config) -> Init<Self> {
        if c.trap_exit {
            ctx.trap_exit(true);
        }
        append(&c.log, format!("init {}", c.id));
        if let Some(to) = c.notify {
            ctx.send(to, &Note::Started(ctx.self_pid(), c.id.clone()));
        }
        if c.crash.is_some() {
            return Init::OkThen(c, hotswap::gen_server::Action::Continue(Vec::new()));
        }
        Init::Ok(c)
    }

    async fn handle_call(
        &mut self,
        _ctx: Ctx,
        _: (),
        _from: hotswap::gen_server::Caller,
    ) -> hotswap::gen_server::CallResult<String> {
        hotswap::gen_server::CallResult::Reply(self.id.clone())
    }

    async fn handle_cast(&mut self, _ctx: Ctx, _: ()) -> CastResult {
        CastResult::NoReply
    }

    async fn handle_info(&mut self, _ctx: Ctx, _msg: Info<()>) -> CastResult {
        CastResult::NoReply
    }

    async fn handle_continue(&mut self, _ctx: Ctx, _data: Vec<u8>) -> CastResult {
        match &self.crash {
            Some(r) => CastResult::Stop(ExitReason::User(r.clone())),
            None => CastResult::NoReply,
        }
    }

    async fn terminate(&mut self, ctx: Ctx, reason: ExitReason) {
        append(&self.log, format!("terminate {} {reason}", self.id));
        if let Some(to) = self.notify {
            ctx.send(to, &Note::Terminated(self.id.clone(), reason.to_string()));
        }
        if self.terminate_hang {
            // Nobody sends this: terminate waits until the node kills the process.
            #[derive(Deserialize)]
            enum Never {
                NobodySendsThisToAnAppWorker,
            }
            let _ = ctx.receive::<Never>().await;
        }
    }
}

/// The supervisor's argument.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct PoolArg {
    /// How many workers.
    pub children: u32,
    /// Their configuration (each one's id is `worker.id` followed by its number).
    pub worker: Config,
}

/// A supervisor of `children` workers.
pub struct Pool;

impl Supervisor for Pool {
    type Arg = PoolArg;
    fn init(a: PoolArg) -> Option<Spec> {
        let mut spec = Spec::new(Strategy::OneForOne)
            .intensity(10)
            .period(std::time::Duration::from_secs(1));
        for i in 1..=a.children {
            let c = Config {
                id: format!("{}{i}", a.worker.id),
                ..a.worker.clone()
            };
            spec = spec.child(ChildSpec::server(i.to_string(), "app_worker", &c));
        }
        Some(spec)
    }
}

hotswap::module! { name: "app_worker", version: "1", gen_server: Config, supervisor: Pool }

// The supervisor tests' worker (included by modules/sup_worker): a gen_server whose init
// argument is `(Config,)` (see `sup_types.rs`). It appends `init <id>` (or
// `init_failed <id>`), `terminate <id> <reason>` and `terminate_done <id>` lines to its
// log file, tells its `notify` process when it starts and when `terminate` begins, and
// crashes or stops when asked.

use std::io::Write;
use std::time::Duration;

use hotswap::gen_server::{CallResult, Caller, CastResult, GenServer, Info, Init};
use hotswap::{Ctx, ExitReason};
use serde::{Deserialize, Serialize};

use crate::types::{Call, Config, Event, Reply, WorkerArg};

/// Append one line to the log file `path` (nothing if it is empty).
fn log_line(path: &str, line: &str) {
    if path.is_empty() {
        return;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("sup_worker: cannot open the log {path}: {e}"));
    // One write per line: appends from several workers never interleave.
    f.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| panic!("sup_worker: cannot write the log {path}: {e}"));
}

/// The state: the worker's config.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Worker {
    /// How it was started.
    pub config: Config,
}

impl Worker {
    fn handle(&self, ctx: &Ctx, req: Call) -> CallResult<Reply> {
        match req {
            Call::Id => CallResult::Reply(Reply::Id(self.config.id.clone())),
            Call::Pid => CallResult::Reply(Reply::Pid(ctx.self_pid())),
            Call::Crash => panic!("sup_worker {} crashed on request", self.config.id),
            Call::StopNormal => CallResult::StopReply(ExitReason::Normal, Reply::Ok),
            Call::StopShutdown => CallResult::StopReply(ExitReason::Shutdown, Reply::Ok),
        }
    }
}

impl GenServer for Worker {
    type Arg = WorkerArg;
    type Call = Call;
    type Reply = Reply;
    type Cast = Call;
    type Info = String;

    async fn init(ctx: Ctx, (config,): WorkerArg) -> Init<Self> {
        ctx.trap_exit(config.trap_exit);
        let fail_if = &config.fail_init_if;
        if config.fail_init || (!fail_if.is_empty() && std::path::Path::new(fail_if).exists()) {
            log_line(&config.log, &format!("init_failed {}", config.id));
            return Init::Stop(ExitReason::User(format!("init failed {}", config.id)));
        }
        if config.ignore_init {
            return Init::Ignore;
        }
        log_line(&config.log, &format!("init {}", config.id));
        if let Some(to) = config.notify {
            ctx.send(
                to,
                &Event::Started {
                    id: config.id.clone(),
                    pid: ctx.self_pid(),
                },
            );
        }
        Init::Ok(Worker { config })
    }

    async fn handle_call(&mut self, ctx: Ctx, req: Call, _from: Caller) -> CallResult<Reply> {
        self.handle(&ctx, req)
    }

    async fn handle_cast(&mut self, ctx: Ctx, req: Call) -> CastResult {
        match self.handle(&ctx, req) {
            CallResult::Stop(r) | CallResult::StopReply(r, _) => CastResult::Stop(r),
            _ => CastResult::NoReply,
        }
    }

    async fn handle_info(&mut self, _ctx: Ctx, msg: Info<String>) -> CastResult {
        // Logged so that a test can see a signal that reached the worker as a message
        // (for example a supervisor's `shutdown` arriving from a process that is not the
        // worker's parent).
        let text = match msg {
            Info::Msg(s) => s,
            Info::Exit { from, reason } => format!("EXIT {from} {reason}"),
            Info::Down { pid, reason, .. } => format!("DOWN {pid} {reason}"),
            Info::Timeout => "timeout".into(),
            Info::Port(m) => format!("PORT {m:?}"),
        };
        log_line(&self.config.log, &format!("info {} {text}", self.config.id));
        CastResult::NoReply
    }

    async fn terminate(&mut self, ctx: Ctx, reason: ExitReason) {
        let id = &self.config.id;
        log_line(&self.config.log, &format!("terminate {id} {reason}"));
        if let Some(to) = self.config.notify {
            ctx.send(
                to,
                &Event::Terminating {
                    id: id.clone(),
                    pid: ctx.self_pid(),
                    reason: reason.to_string(),
                },
            );
        }
        if self.config.terminate_ms > 0 {
            ctx.sleep(Duration::from_millis(self.config.terminate_ms))
                .await;
        }
        log_line(&self.config.log, &format!("terminate_done {id}"));
    }
}

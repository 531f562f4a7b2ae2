//! The values the supervisor fixtures (`modules/sup_worker`, `modules/sup_tree`) and the
//! supervisor tests exchange. One source for all three: the crates and the test binary
//! include this file as a module (`#[path = ..] mod`).

use std::time::Duration;

use hotswap::supervisor::{ChildSpec, Restart, Shutdown, Spec, Strategy};
use hotswap::Pid;
use serde::{Deserialize, Serialize};

/// The module name of the worker fixture.
pub const WORKER: &str = "sup_worker";

/// How a `sup_worker` behaves. Its `init` argument is always the one-element tuple
/// `(Config,)` ([`WorkerArg`]), so the same config works for a static child (argument
/// `(config,)`) and for a simple_one_for_one child (template argument `()`, extra
/// argument `(config,)`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// Its name in log lines and events.
    pub id: String,
    /// Trap exits (set in `init`), so that its parent's `shutdown` signal runs
    /// `terminate`.
    pub trap_exit: bool,
    /// A file to append `init <id>` (or `init_failed <id>`), `terminate <id> <reason>`
    /// and `terminate_done <id>` lines to; empty: no log.
    pub log: String,
    /// How long `terminate` sleeps (after logging its first line, before its last).
    pub terminate_ms: u64,
    /// Who gets [`Event`]s (`Started` from `init`, `Terminating` from `terminate`).
    pub notify: Option<Pid>,
    /// `init` stops with the reason `init failed <id>`.
    pub fail_init: bool,
    /// `init` returns `ignore`.
    pub ignore_init: bool,
    /// A file: while it exists, `init` stops with the reason `init failed <id>` (so that
    /// a test can make restarts fail, then succeed again); empty: never.
    pub fail_init_if: String,
}

impl Config {
    /// A worker `id` that traps exits, logs to `log` and tells `notify`.
    pub fn new(id: &str, log: &str, notify: Pid) -> Config {
        Config {
            id: id.into(),
            trap_exit: true,
            log: log.into(),
            notify: Some(notify),
            ..Config::default()
        }
    }

    /// The same, not trapping exits.
    pub fn no_trap(mut self) -> Config {
        self.trap_exit = false;
        self
    }

    /// The same, with `terminate` sleeping `ms`.
    pub fn terminate_ms(mut self, ms: u64) -> Config {
        self.terminate_ms = ms;
        self
    }

    /// The same, failing its `init`.
    pub fn fail_init(mut self) -> Config {
        self.fail_init = true;
        self
    }

    /// The same, failing its `init` while the file `path` exists.
    pub fn fail_init_if(mut self, path: &str) -> Config {
        self.fail_init_if = path.into();
        self
    }

    /// The same, returning `ignore` from `init`.
    pub fn ignore_init(mut self) -> Config {
        self.ignore_init = true;
        self
    }

    /// A static child spec running this worker (id = the config's id).
    pub fn spec(&self) -> ChildSpec {
        ChildSpec::server(self.id.clone(), WORKER, &(self.clone(),))
    }
}

/// The `init` argument of `sup_worker`.
pub type WorkerArg = (Config,);

/// Calls (and casts) a `sup_worker` understands.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Call {
    /// Reply with its id.
    Id,
    /// Reply with its pid.
    Pid,
    /// Panic (an abnormal exit: `{panic, ..}`).
    Crash,
    /// Stop with reason `normal` (replying `Reply::Ok` after `terminate`).
    StopNormal,
    /// Stop with reason `shutdown` (replying `Reply::Ok` after `terminate`).
    StopShutdown,
}

/// Replies of a `sup_worker`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Reply {
    /// Its id.
    Id(String),
    /// Its pid.
    Pid(Pid),
    /// Done.
    Ok,
}

/// What a `sup_worker` tells its `notify` process.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Event {
    /// `init` ran (and is about to return a state).
    Started {
        /// The worker's id.
        id: String,
        /// Its pid.
        pid: Pid,
    },
    /// `terminate` began with this reason.
    Terminating {
        /// The worker's id.
        id: String,
        /// Its pid.
        pid: Pid,
        /// The reason, formatted.
        reason: String,
    },
}

/// One child of a `sup_tree` supervisor.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TreeChild {
    /// The worker (its id is the child's id).
    pub config: Config,
    /// Its restart type.
    pub restart: Restart,
    /// Its shutdown rule (`None`: the default).
    pub shutdown: Option<Shutdown>,
}

/// The argument of `sup_tree`'s `Supervisor::init`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TreeArg {
    /// Return `ignore`.
    pub ignore: bool,
    /// The strategy.
    pub strategy: Strategy,
    /// The restart intensity.
    pub intensity: u32,
    /// The intensity period, in seconds.
    pub period_secs: u64,
    /// The children, in start order.
    pub children: Vec<TreeChild>,
    /// Supervisors below this one, after the children.
    #[serde(default)]
    pub subtrees: Vec<SubTree>,
    /// `sup_tree` version 2 returns this tree as version 1 does (its subtrees still
    /// built by version 2): for a change below an unchanged supervisor.
    #[serde(default)]
    pub same_in_v2: bool,
}

/// A supervisor below a `sup_tree` supervisor.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SubTree {
    /// Its id.
    pub id: String,
    /// Started as a `sup_tree` supervisor module with `arg` (its own `init` builds its
    /// tree), else as a supervisor of the tree built from `arg` by its parent's `init`.
    pub module: bool,
    /// Its tree.
    pub arg: TreeArg,
}

impl TreeArg {
    /// The tree this argument describes (what `sup_tree` returns).
    pub fn spec(&self) -> Option<Spec> {
        self.spec_by(&TreeArg::spec)
    }

    /// The tree this argument describes, its inline subtrees built by `sub`.
    pub fn spec_by(&self, sub: &dyn Fn(&TreeArg) -> Option<Spec>) -> Option<Spec> {
        if self.ignore {
            return None;
        }
        let mut spec = Spec::new(self.strategy)
            .intensity(self.intensity)
            .period(Duration::from_secs(self.period_secs));
        for c in &self.children {
            let mut cs = c.config.spec().restart(c.restart);
            if let Some(s) = c.shutdown {
                cs = cs.shutdown(s);
            }
            spec = spec.child(cs);
        }
        for t in &self.subtrees {
            if t.module {
                spec = spec.child(ChildSpec::supervisor_module(
                    t.id.clone(),
                    "sup_tree",
                    &t.arg,
                ));
            } else if let Some(s) = sub(&t.arg) {
                spec = spec.child(ChildSpec::supervisor(t.id.clone(), s));
            }
        }
        Some(spec)
    }
}

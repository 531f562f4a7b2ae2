//! Supervisors (OTP's `supervisor`, `spec/otp-semantics.md` §4): the data that describes a
//! supervision tree, the callback a module implements to describe one, and the client
//! functions that talk to a running supervisor.
//!
//! A supervisor is a process of the node (it runs no module code, so no load or purge can
//! touch it). It starts its children in order, restarts them by its strategy when they
//! die, gives up when they die more often than its restart intensity allows, and stops
//! them in reverse order, each by its shutdown rule.
//!
//! A tree built in Rust:
//!
//! ```
//! use std::time::Duration;
//! use hotswap::supervisor::{ChildSpec, Restart, Shutdown, Spec, Strategy};
//!
//! let spec = Spec::new(Strategy::OneForOne)
//!     .intensity(3)
//!     .period(Duration::from_secs(5))
//!     .child(ChildSpec::server("cache", "cache", &()).name("cache"))
//!     .child(
//!         ChildSpec::server("player", "player", &42u64)
//!             .restart(Restart::Transient)
//!             .shutdown(Shutdown::Timeout(Duration::from_secs(2))),
//!     );
//! assert!(spec.check().is_ok());
//! ```
//!
//! The same tree from a module, so that a release can name it (`supervisor = "game_sup"`):
//!
//! ```no_run
//! use hotswap::supervisor::{ChildSpec, Spec, Strategy, Supervisor};
//!
//! struct GameSup;
//! impl Supervisor for GameSup {
//!     type Arg = ();
//!     fn init(_: ()) -> Option<Spec> {
//!         Some(Spec::new(Strategy::OneForAll).child(ChildSpec::server("cache", "cache", &())))
//!     }
//! }
//!
//! hotswap::module! { name: "game_sup", version: "1", supervisor: GameSup }
//! # fn main() {}
//! ```
//!
//! `init` must be free of side effects: a code change of the supervisor calls it again.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::ctx::Ctx;
use crate::gen_server::{call_encoded, CallError, ServerRef};
use crate::types::Pid;

/// The name of the synchronous function that `module!{.., supervisor: T}` exports: the
/// node calls it with the encoded `T::Arg` and reads an encoded `Option<Spec>`.
pub const INIT_FUNCTION: &str = "supervisor_init";

/// What a module implements to describe a supervision tree (`Mod:init/1`).
pub trait Supervisor: 'static {
    /// The argument of `init`.
    type Arg: DeserializeOwned;
    /// The flags and child specs, or `None` for `ignore` (the supervisor is not started).
    /// Called again, with the same argument, by a code change of the supervisor: it must
    /// have no side effects.
    fn init(arg: Self::Arg) -> Option<Spec>;
}

/// The function `module!` exports for a [`Supervisor`].
#[doc(hidden)]
pub fn __init<S: Supervisor>(_: Ctx, arg: S::Arg) -> Option<Spec> {
    S::init(arg)
}

/// How a supervisor restarts its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart only the child that died.
    #[default]
    OneForOne,
    /// Stop all other children (reverse start order), then start all again (start order).
    OneForAll,
    /// Stop the children started after the one that died, then restart it and them.
    RestForOne,
    /// One template; children are added with [`start_simple_child`] and restarted like
    /// `OneForOne`. They are stopped all at once, with one shared timer.
    SimpleOneForOne,
}

/// When a child that exited is restarted (spec §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always.
    #[default]
    Permanent,
    /// Only after an abnormal exit (not `normal`, `shutdown` or `{shutdown, _}`); the spec
    /// is kept either way.
    Transient,
    /// Never; the spec is removed when the child exits.
    Temporary,
}

/// How a child is stopped (spec §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shutdown {
    /// `exit(Child, kill)`: `terminate` never runs.
    BrutalKill,
    /// `exit(Child, shutdown)`, then `kill` if it has not exited after this long. A
    /// gen_server that traps exits runs `terminate(shutdown)` within that time.
    Timeout(Duration),
    /// `exit(Child, shutdown)` and wait as long as it takes (for supervisor children).
    Infinity,
}

/// A worker or a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChildType {
    /// Any process that is not a supervisor.
    #[default]
    Worker,
    /// A supervisor.
    Supervisor,
}

/// How a child is started. Every child is linked to its supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// The gen_server of `module`, with an encoded `init` argument (`gen_server:start_link`).
    Server {
        /// Its module.
        module: String,
        /// The encoded argument of `init`.
        arg: Vec<u8>,
        /// Register it under this name.
        name: Option<String>,
    },
    /// A process running `module:function(arg)`.
    Spawn {
        /// Its module.
        module: String,
        /// The exported function.
        function: String,
        /// The encoded argument.
        arg: Vec<u8>,
        /// Register it under this name.
        name: Option<String>,
    },
    /// A supervisor of the tree `spec`.
    Supervisor {
        /// Its tree.
        spec: Box<Spec>,
        /// Register it under this name.
        name: Option<String>,
    },
    /// A supervisor whose tree `module`'s [`Supervisor::init`] describes.
    SupervisorModule {
        /// The module.
        module: String,
        /// The encoded argument of `init`.
        arg: Vec<u8>,
        /// Register it under this name.
        name: Option<String>,
    },
}

impl Start {
    /// The module it runs (the callback module, for a supervisor), if any.
    pub fn module(&self) -> Option<&str> {
        match self {
            Start::Server { module, .. }
            | Start::Spawn { module, .. }
            | Start::SupervisorModule { module, .. } => Some(module),
            Start::Supervisor { .. } => None,
        }
    }

    /// The name it registers.
    pub fn name(&self) -> Option<&str> {
        match self {
            Start::Server { name, .. }
            | Start::Spawn { name, .. }
            | Start::Supervisor { name, .. }
            | Start::SupervisorModule { name, .. } => name.as_deref(),
        }
    }

    fn name_mut(&mut self) -> &mut Option<String> {
        match self {
            Start::Server { name, .. }
            | Start::Spawn { name, .. }
            | Start::Supervisor { name, .. }
            | Start::SupervisorModule { name, .. } => name,
        }
    }

    /// The encoded argument, for the kinds that have one.
    pub fn arg(&self) -> Option<&[u8]> {
        match self {
            Start::Server { arg, .. }
            | Start::Spawn { arg, .. }
            | Start::SupervisorModule { arg, .. } => Some(arg),
            Start::Supervisor { .. } => None,
        }
    }

    /// The same start with another encoded argument (a simple_one_for_one child).
    pub fn with_arg(&self, new: Vec<u8>) -> Start {
        let mut s = self.clone();
        match &mut s {
            Start::Server { arg, .. }
            | Start::Spawn { arg, .. }
            | Start::SupervisorModule { arg, .. } => *arg = new,
            Start::Supervisor { .. } => {}
        }
        s
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Start::Server { module, .. } => write!(f, "gen_server {module}"),
            Start::Spawn {
                module, function, ..
            } => write!(f, "spawn {module}:{function}"),
            Start::Supervisor { spec, .. } => write!(f, "supervisor ({:?})", spec.strategy),
            Start::SupervisorModule { module, .. } => write!(f, "supervisor {module}"),
        }
    }
}

/// A child specification (spec §4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildSpec {
    /// Unique among the supervisor's children (ignored for simple_one_for_one).
    pub id: String,
    /// How it starts.
    pub start: Start,
    /// When it is restarted.
    #[serde(default)]
    pub restart: Restart,
    /// How it is stopped; `None` is the default: 5 s for a worker, `Infinity` for a
    /// supervisor.
    #[serde(default)]
    pub shutdown: Option<Shutdown>,
    /// Worker or supervisor (set by the constructors).
    #[serde(default)]
    pub child_type: ChildType,
    /// The modules the child uses (release upgrades suspend and code-change by this list);
    /// empty means the module of `start`.
    #[serde(default)]
    pub modules: Vec<String>,
}

impl ChildSpec {
    /// A child spec with the defaults: permanent, default shutdown.
    pub fn new(id: impl Into<String>, start: Start) -> ChildSpec {
        let child_type = match start {
            Start::Supervisor { .. } | Start::SupervisorModule { .. } => ChildType::Supervisor,
            _ => ChildType::Worker,
        };
        ChildSpec {
            id: id.into(),
            start,
            restart: Restart::Permanent,
            shutdown: None,
            child_type,
            modules: Vec::new(),
        }
    }

    /// A gen_server worker of `module`, started with `arg` for `init`.
    pub fn server<A: Serialize + ?Sized>(id: impl Into<String>, module: &str, arg: &A) -> Self {
        Self::new(
            id,
            Start::Server {
                module: module.into(),
                arg: codec::encode(arg),
                name: None,
            },
        )
    }

    /// A process worker running `module:function(arg)`.
    pub fn spawn<A: Serialize + ?Sized>(
        id: impl Into<String>,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Self {
        Self::new(
            id,
            Start::Spawn {
                module: module.into(),
                function: function.into(),
                arg: codec::encode(arg),
                name: None,
            },
        )
    }

    /// A supervisor child with the tree `spec`.
    pub fn supervisor(id: impl Into<String>, spec: Spec) -> Self {
        Self::new(
            id,
            Start::Supervisor {
                spec: Box::new(spec),
                name: None,
            },
        )
    }

    /// A supervisor child whose tree `module`'s [`Supervisor::init`] describes.
    pub fn supervisor_module<A: Serialize + ?Sized>(
        id: impl Into<String>,
        module: &str,
        arg: &A,
    ) -> Self {
        Self::new(
            id,
            Start::SupervisorModule {
                module: module.into(),
                arg: codec::encode(arg),
                name: None,
            },
        )
    }

    /// Register the child under `name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        *self.start.name_mut() = Some(name.into());
        self
    }

    /// Its restart type.
    pub fn restart(mut self, r: Restart) -> Self {
        self.restart = r;
        self
    }

    /// Its shutdown rule.
    pub fn shutdown(mut self, s: Shutdown) -> Self {
        self.shutdown = Some(s);
        self
    }

    /// The modules it uses (for release upgrades).
    pub fn modules(mut self, m: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.modules = m.into_iter().map(Into::into).collect();
        self
    }

    /// The shutdown rule in force: the given one, or 5 s for a worker and `Infinity` for
    /// a supervisor.
    pub fn shutdown_rule(&self) -> Shutdown {
        self.shutdown.unwrap_or(match self.child_type {
            ChildType::Worker => Shutdown::Timeout(Duration::from_secs(5)),
            ChildType::Supervisor => Shutdown::Infinity,
        })
    }

    /// The modules in force: the given list, or the module of `start`.
    pub fn modules_in_use(&self) -> Vec<String> {
        if self.modules.is_empty() {
            self.start
                .module()
                .map(str::to_string)
                .into_iter()
                .collect()
        } else {
            self.modules.clone()
        }
    }

    /// What is wrong with this spec, if anything.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty() {
            return Err("a child spec has an empty id: give every child an id".into());
        }
        let bad = |what: &str| Err(format!("child {:?}: {what}", self.id));
        match &self.start {
            Start::Server { module, .. } | Start::SupervisorModule { module, .. }
                if module.is_empty() =>
            {
                bad("the module is empty")
            }
            Start::Spawn {
                module, function, ..
            } if module.is_empty() || function.is_empty() => {
                bad("spawn needs a module and a function")
            }
            Start::Supervisor { spec, .. } => spec
                .check()
                .map_err(|e| format!("child {:?} (a supervisor): {e}", self.id)),
            _ => Ok(()),
        }
    }
}

/// A supervisor's flags and children (`{ok, {SupFlags, [ChildSpec]}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The restart strategy.
    pub strategy: Strategy,
    /// At most this many restarts ...
    pub intensity: u32,
    /// ... within this many seconds; one more and the supervisor gives up.
    pub period_secs: u64,
    /// The children, in start order (for simple_one_for_one: exactly one template).
    pub children: Vec<ChildSpec>,
}

impl Spec {
    /// A supervisor with `strategy` and OTP's defaults: intensity 1 in 5 seconds.
    pub fn new(strategy: Strategy) -> Spec {
        Spec {
            strategy,
            intensity: 1,
            period_secs: 5,
            children: Vec::new(),
        }
    }

    /// Restart intensity: at most `n` restarts within the period.
    pub fn intensity(mut self, n: u32) -> Self {
        self.intensity = n;
        self
    }

    /// The intensity period (whole seconds; at least one).
    pub fn period(mut self, p: Duration) -> Self {
        self.period_secs = p.as_secs().max(1);
        self
    }

    /// Add a child (after the others).
    pub fn child(mut self, c: ChildSpec) -> Self {
        self.children.push(c);
        self
    }

    /// What is wrong with this spec, if anything: `{supervisor_data, ..}` and `{start_spec,
    /// ..}` of OTP, in words.
    pub fn check(&self) -> Result<(), String> {
        if self.period_secs == 0 {
            return Err("the period must be at least 1 second".into());
        }
        if self.strategy == Strategy::SimpleOneForOne && self.children.len() != 1 {
            return Err(format!(
                "a simple_one_for_one supervisor needs exactly one child spec (the template), not {}",
                self.children.len()
            ));
        }
        let mut ids = HashSet::new();
        for c in &self.children {
            c.check()?;
            if self.strategy != Strategy::SimpleOneForOne && !ids.insert(c.id.as_str()) {
                return Err(format!(
                    "duplicate_child_name: two children have the id {:?}",
                    c.id
                ));
            }
        }
        Ok(())
    }
}

/// Where a child is, as [`which_children`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildPid {
    /// Running with this pid.
    Running(Pid),
    /// Its restart failed; the supervisor is trying again.
    Restarting,
    /// Not running (the spec is kept).
    Undefined,
}

/// One child, as [`which_children`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// Its id (`None` for a simple_one_for_one child).
    pub id: Option<String>,
    /// Its process.
    pub pid: ChildPid,
    /// Worker or supervisor.
    pub child_type: ChildType,
    /// The modules it uses.
    pub modules: Vec<String>,
}

/// [`count_children`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Child specs (1 for a simple_one_for_one supervisor: its template).
    pub specs: usize,
    /// Children with a live process.
    pub active: usize,
    /// Supervisor children.
    pub supervisors: usize,
    /// Worker children.
    pub workers: usize,
}

/// A child, named for [`terminate_child`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildRef {
    /// By id (static supervisors).
    Id(String),
    /// By pid (simple_one_for_one).
    Pid(Pid),
}

impl From<&str> for ChildRef {
    fn from(s: &str) -> ChildRef {
        ChildRef::Id(s.into())
    }
}

impl From<Pid> for ChildRef {
    fn from(p: Pid) -> ChildRef {
        ChildRef::Pid(p)
    }
}

/// Why a supervisor request failed (spec §4.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum SupError {
    /// `already_present`: a spec with this id exists and is not running; use
    /// [`restart_child`] or [`delete_child`].
    #[error("already_present: a child with this id exists but is not running (restart_child or delete_child it)")]
    AlreadyPresent,
    /// `already_started`: a child with this id runs as this pid.
    #[error("already_started: the child runs as {0}")]
    AlreadyStarted(Pid),
    /// `not_found`.
    #[error("not_found: the supervisor has no such child")]
    NotFound,
    /// `running`: stop it first with [`terminate_child`].
    #[error("running: the child is running (terminate_child it first)")]
    Running,
    /// `restarting`.
    #[error("restarting: the supervisor is restarting the child")]
    Restarting,
    /// `simple_one_for_one`: the request does not apply to a simple_one_for_one
    /// supervisor (name children by pid).
    #[error("simple_one_for_one: not for a simple_one_for_one supervisor (name the child by pid)")]
    SimpleOneForOne,
    /// The child's start failed, with why.
    #[error("the child did not start: {0}")]
    StartFailed(String),
    /// The spec or the request was invalid, with why.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The request itself failed (no such supervisor, it exited, ...).
    #[error("{0}")]
    Call(String),
}

/// A request to a supervisor. Not a public API: the node and the SDK exchange these.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// `start_child(Sup, Spec)`.
    StartChild(ChildSpec),
    /// `start_child(Sup, ExtraArgs)` (simple_one_for_one): the encoded extra arguments.
    StartSimple(Vec<u8>),
    /// `terminate_child`.
    TerminateChild(ChildRef),
    /// `restart_child`.
    RestartChild(String),
    /// `delete_child`.
    DeleteChild(String),
    /// `which_children`.
    WhichChildren,
    /// `count_children`.
    CountChildren,
    /// `get_childspec`.
    GetChildSpec(ChildRef),
}

async fn request<T: DeserializeOwned>(
    ctx: &Ctx,
    sup: impl Into<ServerRef>,
    req: &Request,
) -> Result<T, SupError> {
    let r = call_encoded(ctx, sup, &codec::encode(req), None)
        .await
        .map_err(|e: CallError| SupError::Call(e.to_string()))?;
    codec::decode::<Result<T, SupError>>(&r)
        .map_err(|e| SupError::Call(format!("malformed supervisor reply: {e}")))?
}

/// `supervisor:start_child(Sup, Spec)` on a static supervisor: the child's pid, or `None`
/// if its start returned `ignore` (the spec is kept).
pub async fn start_child(
    ctx: &Ctx,
    sup: impl Into<ServerRef>,
    spec: ChildSpec,
) -> Result<Option<Pid>, SupError> {
    request(ctx, sup, &Request::StartChild(spec)).await
}

/// `supervisor:start_child(Sup, ExtraArgs)` on a simple_one_for_one supervisor. The child
/// gets the template's argument followed by `extra`, as Erlang appends argument lists: both
/// must encode as tuples (a template argument of `()` counts as the empty tuple).
pub async fn start_simple_child<A: Serialize + ?Sized>(
    ctx: &Ctx,
    sup: impl Into<ServerRef>,
    extra: &A,
) -> Result<Option<Pid>, SupError> {
    start_simple_child_encoded(ctx, sup, codec::encode(extra)).await
}

/// [`start_simple_child`] with the extra arguments already encoded.
pub async fn start_simple_child_encoded(
    ctx: &Ctx,
    sup: impl Into<ServerRef>,
    extra: Vec<u8>,
) -> Result<Option<Pid>, SupError> {
    request(ctx, sup, &Request::StartSimple(extra)).await
}

/// `supervisor:terminate_child`: stop the child by its shutdown rule. The spec is kept
/// (restart it with [`restart_child`]) unless the child is temporary.
pub async fn terminate_child(
    ctx: &Ctx,
    sup: impl Into<ServerRef>,
    child: impl Into<ChildRef>,
) -> Result<(), SupError> {
    request(ctx, sup, &Request::TerminateChild(child.into())).await
}

/// `supervisor:restart_child`: start a kept, stopped child again.
pub async fn restart_child(
    ctx: &Ctx,
    sup: impl Into<ServerRef>,
    id: &str,
) -> Result<Option<Pid>, SupError> {
    request(ctx, sup, &Request::RestartChild(id.into())).await
}

/// `supervisor:delete_child`: forget a stopped child's spec.
pub async fn delete_child(ctx: &Ctx, sup: impl Into<ServerRef>, id: &str) -> Result<(), SupError> {
    request(ctx, sup, &Request::DeleteChild(id.into())).await
}

/// `supervisor:which_children`: latest-started first.
pub async fn which_children(
    ctx: &Ctx,
    sup: impl Into<ServerRef>,
) -> Result<Vec<ChildInfo>, SupError> {
    request(ctx, sup, &Request::WhichChildren).await
}

/// `supervisor:count_children`.
pub async fn count_children(ctx: &Ctx, sup: impl Into<ServerRef>) -> Result<Counts, SupError> {
    request(ctx, sup, &Request::CountChildren).await
}

/// `supervisor:get_childspec`.
pub async fn get_childspec(
    ctx: &Ctx,
    sup: impl Into<ServerRef>,
    child: impl Into<ChildRef>,
) -> Result<ChildSpec, SupError> {
    request(ctx, sup, &Request::GetChildSpec(child.into())).await
}

/// Append the elements of the encoded tuple `extra` to the encoded tuple `base` (Erlang's
/// `A ++ ExtraArgs` for simple_one_for_one children). `()` counts as the empty tuple.
pub fn append_args(base: &[u8], extra: &[u8]) -> Result<Vec<u8>, String> {
    fn split(b: &[u8], which: &str) -> Result<(usize, usize), String> {
        match b.first() {
            Some(0xc0) if b.len() == 1 => Ok((0, 1)),
            Some(&t) if (0x90..=0x9f).contains(&t) => Ok(((t & 0x0f) as usize, 1)),
            Some(0xdc) if b.len() >= 3 => Ok((u16::from_be_bytes([b[1], b[2]]) as usize, 3)),
            Some(0xdd) if b.len() >= 5 => Ok((
                u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize,
                5,
            )),
            _ => Err(format!(
                "the {which} is not a tuple ({}): simple_one_for_one appends argument tuples, so give tuples such as `(a, b)` or `()`",
                codec::describe(b)
            )),
        }
    }
    let (n1, h1) = split(base, "template's argument")?;
    let (n2, h2) = split(extra, "start_child argument")?;
    let n = n1 + n2;
    let mut out = Vec::with_capacity(base.len() + extra.len() + 4);
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(&base[h1..]);
    out.extend_from_slice(&extra[h2..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_args_decode_as_the_longer_tuple() {
        let base = codec::encode(&(1u32, "a"));
        let extra = codec::encode(&(true,));
        let v = append_args(&base, &extra).unwrap();
        let t: (u32, String, bool) = codec::decode(&v).unwrap();
        assert_eq!(t, (1, "a".into(), true));
        let v = append_args(&codec::encode(&()), &codec::encode(&(7u8, 8u8))).unwrap();
        assert_eq!(codec::decode::<(u8, u8)>(&v).unwrap(), (7, 8));
        let long: Vec<u8> = (0..20).collect();
        let v = append_args(&codec::encode(&(1u8,)), &codec::encode(&long)).unwrap();
        assert_eq!(codec::decode::<Vec<u8>>(&v).unwrap().len(), 21);
    }

    #[test]
    fn appending_to_a_non_tuple_names_the_problem() {
        let e = append_args(&codec::encode(&5u32), &codec::encode(&())).unwrap_err();
        assert!(e.contains("template's argument is not a tuple"), "{e}");
    }

    #[test]
    fn specs_are_checked() {
        let ok = Spec::new(Strategy::OneForOne).child(ChildSpec::server("a", "m", &()));
        assert!(ok.check().is_ok());
        let dup = ok.clone().child(ChildSpec::server("a", "n", &()));
        assert!(dup.check().unwrap_err().contains("duplicate_child_name"));
        let simple = Spec::new(Strategy::SimpleOneForOne);
        assert!(simple.check().unwrap_err().contains("exactly one"));
        let empty_id = Spec::new(Strategy::OneForOne).child(ChildSpec::server("", "m", &()));
        assert!(empty_id.check().unwrap_err().contains("empty id"));
        let w = ChildSpec::server("a", "m", &());
        assert_eq!(w.shutdown_rule(), Shutdown::Timeout(Duration::from_secs(5)));
        assert_eq!(w.modules_in_use(), vec!["m".to_string()]);
        let s = ChildSpec::supervisor("s", Spec::new(Strategy::OneForAll));
        assert_eq!(s.shutdown_rule(), Shutdown::Infinity);
        assert_eq!(s.child_type, ChildType::Supervisor);
    }
}

//! `gen_server`: a process that holds state and answers calls, casts and other messages,
//! whose code can be replaced while it runs without losing that state (OTP's
//! `gen_server`, `spec/otp-semantics.md` §2).
//!
//! A module declares one server type with `module!{ .., gen_server: MyServer }`. The node
//! runs the loop; every callback is a fully-qualified call, so **the next message after a
//! load runs the new version**. The state is a Rust value made by one version of the
//! module; before another version touches it, the node migrates it: the old version
//! encodes it ([`crate::codec`], MessagePack with named fields), the new version's
//! [`GenServer::code_change`] builds its own state from those bytes (by default it decodes
//! the same type). `sys::suspend` → load → `sys::change_code` → `sys::resume` does the
//! same explicitly, with an `extra` term (spec §3).
//!
//! ```no_run
//! use hotswap::gen_server::{CallResult, CastResult, GenServer, Info, Init};
//! use hotswap::Ctx;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Counter { n: u64 }
//!
//! #[derive(Serialize, Deserialize)]
//! enum Req { Get, Add(u64) }
//!
//! impl GenServer for Counter {
//!     type Arg = u64;
//!     type Call = Req;
//!     type Reply = u64;
//!     type Cast = ();
//!     type Info = ();
//!
//!     async fn init(_ctx: Ctx, start: u64) -> Init<Self> {
//!         Init::Ok(Counter { n: start })
//!     }
//!     async fn handle_call(&mut self, _ctx: Ctx, req: Req, _from: hotswap::gen_server::Caller)
//!         -> CallResult<u64> {
//!         match req {
//!             Req::Get => CallResult::Reply(self.n),
//!             Req::Add(k) => { self.n += k; CallResult::Reply(self.n) }
//!         }
//!     }
//! }
//!
//! hotswap::module! { name: "counter", version: "1", gen_server: Counter }
//! # fn main() {}
//! ```

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::ctx::Ctx;
use crate::types::{ExitReason, Pid, Ref};
use hotswap_abi as abi;

/// The callbacks of a `gen_server` (OTP's callback module). `Self` is the state.
///
/// Callbacks are `async`: a callback may call other processes (`gen_server::call`), sleep,
/// or receive. While one runs, the server handles nothing else, as in OTP. Only `init` is
/// required; the others have OTP's defaults.
pub trait GenServer: Serialize + DeserializeOwned + Send + Sized + 'static {
    /// The argument of `init`.
    type Arg: DeserializeOwned;
    /// Call requests.
    type Call: DeserializeOwned;
    /// Replies to calls.
    type Reply: Serialize;
    /// Casts.
    type Cast: DeserializeOwned;
    /// Other messages (plain `send`s to the server).
    type Info: DeserializeOwned;

    /// Build the initial state. The starter waits until this returns.
    fn init(ctx: Ctx, arg: Self::Arg) -> impl Future<Output = Init<Self>> + Send;

    /// A call. The default crashes the server with `undef`, as a missing `handle_call/3`
    /// does in OTP.
    fn handle_call(
        &mut self,
        ctx: Ctx,
        req: Self::Call,
        from: Caller,
    ) -> impl Future<Output = CallResult<Self::Reply>> + Send {
        let _ = (ctx, req, from);
        async { CallResult::Stop(ExitReason::Undef("handle_call is not implemented".into())) }
    }

    /// A cast. The default crashes the server with `undef`.
    fn handle_cast(
        &mut self,
        ctx: Ctx,
        msg: Self::Cast,
    ) -> impl Future<Output = CastResult> + Send {
        let _ = (ctx, msg);
        async { CastResult::Stop(ExitReason::Undef("handle_cast is not implemented".into())) }
    }

    /// Any other message: a plain message, a trapped exit of a process other than the
    /// parent, a monitor notification, or a timeout action expiring. The default logs a
    /// warning and drops it.
    fn handle_info(
        &mut self,
        ctx: Ctx,
        msg: Info<Self::Info>,
    ) -> impl Future<Output = CastResult> + Send {
        let what = match &msg {
            Info::Msg(_) => "a message",
            Info::Exit { .. } => "an exit signal",
            Info::Down { .. } => "a monitor notification",
            Info::Timeout => "a timeout",
            Info::Port(_) => "a port event",
        };
        ctx.log(
            crate::ctx::Level::Warn,
            &format!(
                "gen_server {}: unexpected {what} dropped (no handle_info)",
                ctx.self_pid()
            ),
        );
        async { CastResult::NoReply }
    }

    /// Runs first after a callback returned [`Action::Continue`], before any new message.
    fn handle_continue(
        &mut self,
        ctx: Ctx,
        data: Vec<u8>,
    ) -> impl Future<Output = CastResult> + Send {
        let _ = (ctx, data);
        async { CastResult::NoReply }
    }

    /// The server is stopping with `reason` (spec §2.6 says when this runs: a callback
    /// returned `Stop`, a callback panicked, `gen_server::stop`/`sys::terminate`, or the
    /// parent's exit signal while trapping exits; never after a `kill` or a failed `init`).
    fn terminate(&mut self, ctx: Ctx, reason: ExitReason) -> impl Future<Output = ()> + Send {
        let _ = (ctx, reason);
        async {}
    }

    /// Build this version's state from the state another version made. Called by
    /// `sys::change_code` (with its `extra`) and, with `extra == None`, when a message
    /// reaches a server whose state an older version made. The default decodes the same
    /// type. An error leaves the old state in place (`sys::change_code` reports it; an
    /// implicit migration crashes the server with it).
    fn code_change(old: OldState<'_>, extra: Option<Extra<'_>>) -> Result<Self, String> {
        let _ = extra;
        old.decode::<Self>().map_err(|e| e.to_string())
    }

    /// The first half of a downgrade (OTP's `code_change({down, Vsn}, ..)`): this, the
    /// newer version, encodes its state for the older version `to`, whose
    /// [`GenServer::code_change`] then reads it (with [`OldState::direction`]
    /// [`Direction::Down`]). The default encodes the state as it is, which the older
    /// version decodes when the two differ only by optional fields. Return an error when
    /// the state cannot go back: the release upgrade's check refuses the downgrade and
    /// nothing is touched.
    fn downgrade(&self, to: &str, extra: Option<Extra<'_>>) -> Result<Vec<u8>, String> {
        let _ = (to, extra);
        Ok(codec::encode(self))
    }

    /// The state as text for `sys::get_status` (OTP's `format_status`), for example to
    /// hide secrets. `None` (the default): the node shows the encoded state as JSON.
    fn format_status(&self) -> Option<String> {
        None
    }

    /// What this server's explicit conversions accept besides its own types, for the
    /// compatibility check a load runs (`crate::schema`). Declare here every older form a
    /// `decode_call`/`decode_cast`/`decode_info` override or a `code_change` reads, e.g.
    /// `Accepts::new().info::<OldTick>()` next to a `decode_info` that uses
    /// [`codec::decode_compat`]`::<NewTick, OldTick>`. The default: nothing besides.
    fn accepts() -> crate::schema::Accepts {
        crate::schema::Accepts::new()
    }

    /// Decode a call request. Override to accept older forms too
    /// ([`codec::decode_compat`]), and declare them in [`GenServer::accepts`].
    fn decode_call(bytes: &[u8]) -> Result<Self::Call, DecodeError> {
        codec::decode(bytes)
    }

    /// Decode a cast. Override to accept older forms too.
    fn decode_cast(bytes: &[u8]) -> Result<Self::Cast, DecodeError> {
        codec::decode(bytes)
    }

    /// Decode an info message. Override to accept older forms too: a message the server
    /// cannot decode crashes it with `function_clause`, naming the expected type.
    fn decode_info(bytes: &[u8]) -> Result<Self::Info, DecodeError> {
        codec::decode(bytes)
    }
}

/// What `init` returns (spec §2.1).
#[derive(Debug)]
pub enum Init<S> {
    /// Run with this state.
    Ok(S),
    /// Run with this state, then apply the action.
    OkThen(S, Action),
    /// Start nothing: the starter gets `ignore`, the process exits `normal`.
    Ignore,
    /// Fail the start with this reason; the process exits with it.
    Stop(ExitReason),
}

/// What to do after a callback (spec §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// If no message arrives within this time, `handle_info(Info::Timeout)` runs.
    Timeout(Duration),
    /// Sleep until the next message (accepted; the node keeps no stack to drop).
    Hibernate,
    /// Run `handle_continue(data)` before any new message.
    Continue(Vec<u8>),
}

impl Action {
    /// A continue action carrying an encoded value.
    pub fn continue_with<T: Serialize + ?Sized>(v: &T) -> Action {
        Action::Continue(codec::encode(v))
    }
}

/// What `handle_call` returns.
#[derive(Debug)]
pub enum CallResult<R> {
    /// Reply and continue.
    Reply(R),
    /// Reply, then apply the action.
    ReplyThen(R, Action),
    /// Do not reply now: the caller keeps waiting until someone calls [`reply`] with the
    /// [`Caller`].
    NoReply,
    /// No reply now, then apply the action.
    NoReplyThen(Action),
    /// Run `terminate(reason)` and exit with it; the caller gets the exit reason.
    Stop(ExitReason),
    /// Run `terminate(reason)`, then reply (even if terminate panics), then exit.
    StopReply(ExitReason, R),
}

/// What `handle_cast`, `handle_info` and `handle_continue` return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CastResult {
    /// Continue.
    NoReply,
    /// Continue, then apply the action.
    NoReplyThen(Action),
    /// Run `terminate(reason)` and exit with it.
    Stop(ExitReason),
}

/// A message for `handle_info`.
#[derive(Debug, Clone, PartialEq)]
pub enum Info<T> {
    /// A plain message, decoded.
    Msg(T),
    /// A trapped exit signal from a process other than the parent.
    Exit {
        /// Who exited.
        from: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// A monitor notification.
    Down {
        /// The monitor.
        reference: Ref,
        /// The monitored process.
        pid: Pid,
        /// Why it exited.
        reason: ExitReason,
    },
    /// A [`Action::Timeout`] expired with no message.
    Timeout,
    /// An event of a port (socket) the server owns: a frame, a close, an error, a
    /// `passive` notice, an accepted connection ([`crate::net`]).
    Port(crate::net::PortMsg),
}

/// Who made a call: keep it (it is serializable, so it survives in the state) to reply
/// later with [`reply`], from this process or any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Caller {
    /// The calling process.
    pub pid: Pid,
    /// The call's tag.
    pub tag: u64,
}

/// The state another version of the module made, for [`GenServer::code_change`].
#[derive(Debug, Clone, Copy)]
pub struct OldState<'a> {
    /// The version string of the module version that made it.
    pub vsn: &'a str,
    /// The encoded state.
    pub bytes: &'a [u8],
    /// Whether it comes from an older version (an upgrade) or from a newer one (a
    /// downgrade, after the newer version's [`GenServer::downgrade`] encoded it).
    pub direction: Direction,
}

/// Which way a state moves between versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Direction {
    /// From an older version (an upgrade, or an implicit migration).
    #[default]
    Up,
    /// From a newer version (a downgrade).
    Down,
}

impl OldState<'_> {
    /// Whether this is an upgrade or a downgrade.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Decode it as `T` (the old version's state type, or one compatible with it).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        codec::decode(self.bytes)
    }
}

/// The `Extra` argument of `sys::change_code`.
#[derive(Debug, Clone, Copy)]
pub struct Extra<'a>(pub &'a [u8]);

impl Extra<'_> {
    /// Decode it as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        codec::decode(self.0)
    }
}

/// The default timeout of a call and of every `sys` operation (OTP's 5000 ms).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A server, by pid or by registered name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServerRef {
    /// A pid.
    Pid(Pid),
    /// A registered name.
    Name(String),
}

impl ServerRef {
    /// The pid this names now, if any (a registered name is looked up).
    pub fn resolve(&self, ctx: &Ctx) -> Option<Pid> {
        match self {
            ServerRef::Pid(p) => Some(*p),
            ServerRef::Name(n) => ctx.whereis(n),
        }
    }
}

impl From<Pid> for ServerRef {
    fn from(p: Pid) -> Self {
        ServerRef::Pid(p)
    }
}

impl From<&str> for ServerRef {
    fn from(s: &str) -> Self {
        ServerRef::Name(s.to_string())
    }
}

impl From<String> for ServerRef {
    fn from(s: String) -> Self {
        ServerRef::Name(s)
    }
}

impl std::fmt::Display for ServerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerRef::Pid(p) => write!(f, "{p}"),
            ServerRef::Name(n) => write!(f, "{n:?}"),
        }
    }
}

impl std::str::FromStr for ServerRef {
    type Err = std::convert::Infallible;
    /// `<0.12.0>` (how pids print), `<0.12>`, `0.12.0`, `0.12` or `12` are pids; anything
    /// else is a registered name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let inner = t
            .strip_prefix('<')
            .and_then(|x| x.strip_suffix('>'))
            .unwrap_or(t);
        let parts: Vec<&str> = inner.split('.').collect();
        let n = match parts.as_slice() {
            [n] | ["0", n] | ["0", n, "0"] => n.parse::<u64>().ok(),
            _ => None,
        };
        Ok(match n {
            Some(n) if n > 0 => ServerRef::Pid(Pid(n)),
            _ => ServerRef::Name(t.to_string()),
        })
    }
}

/// Options for starting a server.
#[derive(Debug, Clone, Default)]
pub struct StartOpts {
    /// Register the server under this name (before `init` runs; a taken name fails the
    /// start with [`StartError::AlreadyStarted`] and `init` is not called).
    pub name: Option<String>,
    /// How long `init` may take; then the server is killed and the start fails with
    /// [`StartError::Timeout`]. `None`: wait forever (OTP's default).
    pub timeout: Option<Duration>,
}

impl StartOpts {
    /// Options with a registered name.
    pub fn named(name: impl Into<String>) -> Self {
        StartOpts {
            name: Some(name.into()),
            ..Default::default()
        }
    }
}

/// Why a server did not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The name is registered to another process.
    #[error("a process is already registered as {name:?} ({pid}); pick another name or call the running one")]
    AlreadyStarted {
        /// The name.
        name: String,
        /// Who has it.
        pid: Pid,
    },
    /// `init` returned `ignore`: no server runs (not an error in OTP, but nothing to call).
    #[error("init returned ignore: no server was started")]
    Ignore,
    /// `init` stopped with this reason (or panicked: `{panic, ..}`).
    #[error("init failed: {0}")]
    Init(ExitReason),
    /// `init` did not finish in time. The server was sent an untrappable `kill`; `running`
    /// says whether it had exited when the start gave up.
    #[error("{}", timeout_text(.after, .running))]
    Timeout {
        /// The start's time limit.
        after: Duration,
        /// `None`: the server was killed and is gone. `Some`: it is still alive, busy in
        /// native code inside `init` (which cannot be pre-empted), and exits only when
        /// `init` returns to an await point.
        running: Option<StillRunning>,
    },
    /// The module is not loaded, or is not a gen_server.
    #[error("{0}")]
    Spawn(String),
}

/// A server whose `init` ran past the start's time limit and had not exited after the
/// kill (see [`StartError::Timeout`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StillRunning {
    /// The server.
    pub pid: Pid,
    /// The name it still holds, if it was started with one.
    pub name: Option<String>,
    /// Its module.
    pub module: String,
    /// The version whose `init` it runs: a purge keeps that version mapped (pinned) until
    /// `init` returns.
    pub version: String,
}

fn timeout_text(after: &Duration, running: &Option<StillRunning>) -> String {
    let Some(r) = running else {
        return format!("init did not finish within {after:?}; the server was killed");
    };
    let name = match &r.name {
        Some(n) => format!(" and still holds the name {n:?}"),
        None => String::new(),
    };
    format!(
        "init did not finish within {after:?}, and the server {pid} is still running: it was sent kill, but its init is busy in native code of `{module}` version {vsn}, which cannot be pre-empted; it is alive{name} until init returns to an await point, and then exits (killed). Until then version {vsn} of `{module}` stays mapped (a purge pins it). What to do: make init await instead of blocking (or move the slow work after init), and wait for {pid} to exit before starting the server again",
        pid = r.pid,
        module = r.module,
        vsn = r.version,
    )
}

/// How long a start that timed out waits for the killed server to exit before it reports
/// the server as still running.
const KILL_GRACE: Duration = Duration::from_millis(500);

/// Why a call failed (OTP: the caller exits with `{Reason, {gen_server, call, ..}}`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No such process or registered name.
    #[error("no process {0} (noproc): is the server running and is the name right?")]
    NoProc(ServerRef),
    /// The server did not reply in time. The request stays queued and will still run; a
    /// late reply is discarded.
    #[error("the server did not reply within {0:?} (timeout)")]
    Timeout(Duration),
    /// The server exited before replying, with this reason.
    #[error("the server exited before replying: {0}")]
    Exit(ExitReason),
    /// A server called itself.
    #[error("a server cannot call itself (calling_self)")]
    CallingSelf,
    /// The reply did not decode as the expected type.
    #[error("the reply did not decode: {0}")]
    Decode(String),
}

/// The byte layouts the SDK and the node agree on for `gen_server` traffic. Not a public
/// API: both sides use these functions, so the layouts live in one place.
#[doc(hidden)]
pub mod wire {
    use super::Action;
    use crate::types::ExitReason;
    use serde::{Deserialize, Serialize};
    use std::time::Duration;

    /// A system request (`{system, From, Req}`), `hotswap::sys::Request`. Not a public
    /// API: the node and the SDK exchange these.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum SysRequest {
        /// `sys:suspend`.
        Suspend,
        /// `sys:resume`.
        Resume,
        /// `sys:get_state`.
        GetState,
        /// `sys:get_status`.
        GetStatus,
        /// First half of `sys:replace_state`: reply with the state and wait for the caller's
        /// commit or cancel.
        ReplaceBegin,
        /// The new state (encoded).
        ReplaceCommit(Vec<u8>),
        /// Keep the state.
        ReplaceCancel,
        /// `sys:change_code`.
        ChangeCode {
            /// The module the caller means.
            module: String,
            /// Passed to `code_change` untouched.
            old_vsn: String,
            /// Passed to `code_change`.
            extra: Option<Vec<u8>>,
        },
        /// `sys:statistics`: `Some(on)` switches, `None` reads.
        Statistics(Option<bool>),
        /// `sys:terminate` / `gen_server:stop`: an encoded exit reason.
        Terminate(Vec<u8>),
    }

    /// `init` returned a state (then: state pointer `u64 LE`, action).
    pub const INIT_OK: u8 = 0;
    /// `init` returned `ignore`.
    pub const INIT_IGNORE: u8 = 1;
    /// `init` stopped (then: exit reason).
    pub const INIT_STOP: u8 = 2;

    /// A callback replied (then: action, reply bytes).
    pub const H_REPLY: u8 = 0;
    /// A callback did not reply (then: action).
    pub const H_NOREPLY: u8 = 1;
    /// A callback stopped (then: exit reason).
    pub const H_STOP: u8 = 2;
    /// A callback stopped with a reply (then: `u32 LE` reason length, reason, reply).
    pub const H_STOP_REPLY: u8 = 3;

    const A_NONE: u8 = 0;
    const A_TIMEOUT: u8 = 1;
    const A_HIBERNATE: u8 = 2;
    const A_CONTINUE: u8 = 3;

    /// Reply payload: a value follows.
    pub const R_VALUE: u8 = 0;
    /// Reply payload: the server exited (or the request failed); an exit reason follows.
    pub const R_EXIT: u8 = 1;
    /// Reply payload: a `sys` error (MessagePack of `sys::SysError`) follows.
    pub const R_SYS_ERROR: u8 = 2;
    /// Reply payload of a start: `init` returned `ignore`.
    pub const R_IGNORE: u8 = 3;

    /// Append an action.
    pub fn put_action(out: &mut Vec<u8>, a: Option<&Action>) {
        match a {
            None => out.push(A_NONE),
            Some(Action::Timeout(d)) => {
                out.push(A_TIMEOUT);
                out.extend_from_slice(&(d.as_millis().min(u64::MAX as u128) as u64).to_le_bytes());
            }
            Some(Action::Hibernate) => out.push(A_HIBERNATE),
            Some(Action::Continue(c)) => {
                out.push(A_CONTINUE);
                out.extend_from_slice(&(c.len() as u32).to_le_bytes());
                out.extend_from_slice(c);
            }
        }
    }

    fn split(b: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
        (b.len() >= n).then(|| b.split_at(n))
    }

    /// Read an action; the rest of the bytes.
    pub fn get_action(b: &[u8]) -> Option<(Option<Action>, &[u8])> {
        let (&t, rest) = b.split_first()?;
        match t {
            A_NONE => Some((None, rest)),
            A_TIMEOUT => {
                let (ms, rest) = split(rest, 8)?;
                let ms = u64::from_le_bytes(ms.try_into().ok()?);
                Some((Some(Action::Timeout(Duration::from_millis(ms))), rest))
            }
            A_HIBERNATE => Some((Some(Action::Hibernate), rest)),
            A_CONTINUE => {
                let (n, rest) = split(rest, 4)?;
                let n = u32::from_le_bytes(n.try_into().ok()?) as usize;
                let (c, rest) = split(rest, n)?;
                Some((Some(Action::Continue(c.to_vec())), rest))
            }
            _ => None,
        }
    }

    /// What `init` produced, as the node reads it.
    #[derive(Debug)]
    pub enum Inited {
        /// A state object and an action.
        Ok(u64, Option<Action>),
        /// `ignore`.
        Ignore,
        /// Stop with a reason.
        Stop(ExitReason),
    }

    /// Read what `init` produced.
    pub fn get_inited(b: &[u8]) -> Option<Inited> {
        let (&t, rest) = b.split_first()?;
        match t {
            INIT_OK => {
                let (p, rest) = split(rest, 8)?;
                let (a, _) = get_action(rest)?;
                Some(Inited::Ok(u64::from_le_bytes(p.try_into().ok()?), a))
            }
            INIT_IGNORE => Some(Inited::Ignore),
            INIT_STOP => Some(Inited::Stop(ExitReason::decode(rest))),
            _ => None,
        }
    }

    /// What a callback produced, as the node reads it.
    #[derive(Debug)]
    pub enum Handled<'a> {
        /// Reply (encoded) and continue.
        Reply(Option<Action>, &'a [u8]),
        /// Continue.
        NoReply(Option<Action>),
        /// Stop.
        Stop(ExitReason),
        /// Stop, then reply.
        StopReply(ExitReason, &'a [u8]),
    }

    /// Read what a callback produced.
    pub fn get_handled(b: &[u8]) -> Option<Handled<'_>> {
        let (&t, rest) = b.split_first()?;
        match t {
            H_REPLY => {
                let (a, r) = get_action(rest)?;
                Some(Handled::Reply(a, r))
            }
            H_NOREPLY => Some(Handled::NoReply(get_action(rest)?.0)),
            H_STOP => Some(Handled::Stop(ExitReason::decode(rest))),
            H_STOP_REPLY => {
                let (n, rest) = split(rest, 4)?;
                let n = u32::from_le_bytes(n.try_into().ok()?) as usize;
                let (reason, reply) = split(rest, n)?;
                Some(Handled::StopReply(ExitReason::decode(reason), reply))
            }
            _ => None,
        }
    }
}

fn target(to: &ServerRef) -> (u64, &[u8]) {
    match to {
        ServerRef::Pid(p) => (p.0, &[]),
        ServerRef::Name(n) => (0, n.as_bytes()),
    }
}

/// Stops accepting replies for a tag when the wait ends, however it ends.
struct Alias {
    ctx: Ctx,
    tag: u64,
}

impl Alias {
    fn new(ctx: Ctx) -> Alias {
        let tag = ctx.new_ref();
        ctx.alias(tag, true);
        Alias { ctx, tag }
    }
}

impl Drop for Alias {
    fn drop(&mut self) {
        self.ctx.alias(self.tag, false);
    }
}

/// Send a request of `kind` tagged with a fresh alias and wait for its reply payload.
pub(crate) async fn request(
    ctx: Ctx,
    to: &ServerRef,
    kind: u32,
    payload: &[u8],
    timeout: Option<Duration>,
) -> Result<Vec<u8>, CallError> {
    let alias = Alias::new(ctx);
    let (pid, name) = target(to);
    posted(ctx.post(pid, name, kind, alias.tag, payload), to)?;
    reply_of(&ctx, alias, timeout).await
}

/// What the post of a request to `to` returned ([`Ctx::post`]'s status): sent, or why not.
fn posted(status: i32, to: &ServerRef) -> Result<(), CallError> {
    match status {
        0 => Ok(()),
        -2 => Err(CallError::CallingSelf),
        _ => Err(CallError::NoProc(to.clone())),
    }
}

/// `gen_server:call` with the default 5 s timeout.
pub async fn call<Q: Serialize + ?Sized, R: DeserializeOwned>(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    req: &Q,
) -> Result<R, CallError> {
    call_timeout(ctx, to, req, Some(DEFAULT_TIMEOUT)).await
}

/// `gen_server:call` with a timeout (`None`: wait forever). On timeout the request stays
/// queued in the server and still runs; its late reply is dropped, never delivered.
pub async fn call_timeout<Q: Serialize + ?Sized, R: DeserializeOwned>(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    req: &Q,
    timeout: Option<Duration>,
) -> Result<R, CallError> {
    let r = call_bytes(ctx, to.into(), req, timeout).await?;
    codec::decode(r.get(1..).unwrap_or_default()).map_err(|e| CallError::Decode(e.to_string()))
}

/// [`call_timeout`] up to the decode: the reply payload as it came (its first byte is the
/// wire tag). The request is encoded on the stack when it fits, and the post happens
/// before the first await, so nothing of it lives in the call's future.
async fn call_bytes<Q: Serialize + ?Sized>(
    ctx: &Ctx,
    to: ServerRef,
    req: &Q,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, CallError> {
    let alias = Alias::new(*ctx);
    let (pid, name) = target(&to);
    posted(
        codec::with_encoded(req, |b| ctx.post(pid, name, abi::MSG_CALL, alias.tag, b)),
        &to,
    )?;
    reply_of(ctx, alias, timeout).await
}

/// Wait for the reply to the request tagged with `alias`: its payload (first byte the
/// wire tag), the server's exit, or a timeout.
async fn reply_of(
    ctx: &Ctx,
    alias: Alias,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, CallError> {
    match ctx.receive_reply(alias.tag, timeout).await {
        Some(r) if r.first() == Some(&wire::R_EXIT) => {
            Err(CallError::Exit(ExitReason::decode(&r[1..])))
        }
        Some(r) => Ok(r),
        None => Err(CallError::Timeout(timeout.unwrap_or(Duration::MAX))),
    }
}

/// [`call_timeout`] with an encoded request; the encoded reply.
pub async fn call_encoded(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    req: &[u8],
    timeout: Option<Duration>,
) -> Result<Vec<u8>, CallError> {
    let mut r = request(*ctx, &to.into(), abi::MSG_CALL, req, timeout).await?;
    r.remove(0);
    Ok(r)
}

/// `gen_server:cast`: returns at once, even if there is no such server.
pub fn cast<Q: Serialize + ?Sized>(ctx: &Ctx, to: impl Into<ServerRef>, msg: &Q) {
    let to = to.into();
    let (pid, name) = target(&to);
    codec::with_encoded(msg, |b| ctx.post(pid, name, abi::MSG_CAST, 0, b));
}

/// `gen_server:reply`: answer a call that was answered with [`CallResult::NoReply`],
/// from any process. A caller that stopped waiting never sees it.
pub fn reply<R: Serialize + ?Sized>(ctx: &Ctx, to: &Caller, value: &R) {
    let mut payload = vec![wire::R_VALUE];
    payload.extend_from_slice(&codec::encode(value));
    ctx.post(to.pid.0, &[], abi::MSG_REPLY, to.tag, &payload);
}

/// Start a server with an encoded `init` argument and spawn `flags` (the hotswap ABI's
/// `SPAWN_LINK`/`SPAWN_MONITOR`); what [`start`], [`start_link`] and [`start_monitor`] use.
pub async fn start_encoded(
    ctx: &Ctx,
    module: &str,
    arg: &[u8],
    opts: &StartOpts,
    flags: u32,
) -> Result<(Pid, Ref), StartError> {
    let alias = Alias::new(*ctx);
    let (pid, mref, version) = ctx
        .start_server(module, arg, opts.name.as_deref(), flags, alias.tag)
        .map_err(|(taken, msg)| match taken {
            Some(pid) => StartError::AlreadyStarted {
                name: opts.name.clone().unwrap_or_default(),
                pid,
            },
            None => StartError::Spawn(msg),
        })?;
    match ctx.receive_reply(alias.tag, opts.timeout).await {
        None => {
            // A server waiting at an await point exits at once; one busy in native code
            // only when that code returns, so say which it is.
            let watch = ctx.monitor(pid);
            ctx.exit(pid, &ExitReason::Kill);
            let mut gone = ctx.down(watch, Some(KILL_GRACE)).await.is_some();
            if !gone {
                ctx.demonitor(watch);
                // A `Down` that arrived in between is flushed (and means it is gone).
                gone = ctx.down(watch, Some(Duration::ZERO)).await.is_some();
            }
            Err(StartError::Timeout {
                after: opts.timeout.unwrap_or(Duration::MAX),
                running: (!gone).then(|| StillRunning {
                    pid,
                    name: opts.name.clone(),
                    module: module.to_string(),
                    version,
                }),
            })
        }
        Some(r) => match r.first() {
            Some(&wire::R_VALUE) => Ok((pid, mref)),
            Some(&wire::R_IGNORE) => Err(StartError::Ignore),
            _ => Err(StartError::Init(ExitReason::decode(
                r.get(1..).unwrap_or(&[]),
            ))),
        },
    }
}

/// `gen_server:start`: start `module`'s server (its current version) and wait until its
/// `init` has returned. The server has no parent.
pub async fn start<A: Serialize + ?Sized>(
    ctx: &Ctx,
    module: &str,
    arg: &A,
    opts: StartOpts,
) -> Result<Pid, StartError> {
    start_encoded(ctx, module, &codec::encode(arg), &opts, 0)
        .await
        .map(|r| r.0)
}

/// `gen_server:start_link`: as [`start`], linked to the caller, which becomes the
/// server's parent (its exit signal makes a trapping server run `terminate`).
pub async fn start_link<A: Serialize + ?Sized>(
    ctx: &Ctx,
    module: &str,
    arg: &A,
    opts: StartOpts,
) -> Result<Pid, StartError> {
    start_encoded(ctx, module, &codec::encode(arg), &opts, abi::SPAWN_LINK)
        .await
        .map(|r| r.0)
}

/// `gen_server:start_monitor`: as [`start`], monitored by the caller.
pub async fn start_monitor<A: Serialize + ?Sized>(
    ctx: &Ctx,
    module: &str,
    arg: &A,
    opts: StartOpts,
) -> Result<(Pid, Ref), StartError> {
    start_encoded(ctx, module, &codec::encode(arg), &opts, abi::SPAWN_MONITOR).await
}

/// `gen_server:stop(Server, Reason, Timeout)`: the server runs `terminate(reason)` whether
/// or not it traps exits, then exits with `reason`. Returns once it is gone with exactly
/// that reason; another reason is returned as [`CallError::Exit`].
pub async fn stop(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    reason: ExitReason,
    timeout: Option<Duration>,
) -> Result<(), CallError> {
    let to = to.into();
    let pid = to
        .resolve(ctx)
        .ok_or_else(|| CallError::NoProc(to.clone()))?;
    if pid == ctx.self_pid() {
        return Err(CallError::CallingSelf);
    }
    let mref = ctx.monitor(pid);
    let req = wire::SysRequest::Terminate(reason.encode());
    if ctx.post(pid.0, &[], abi::MSG_SYSTEM, 0, &codec::encode(&req)) != 0 {
        ctx.demonitor(mref);
        return Err(CallError::NoProc(to));
    }
    match ctx.down(mref, timeout).await {
        None => {
            ctx.demonitor(mref);
            Err(CallError::Timeout(timeout.unwrap_or(Duration::MAX)))
        }
        Some(ExitReason::NoProc) => Err(CallError::NoProc(to)),
        Some(r) if r == reason => Ok(()),
        Some(r) => Err(CallError::Exit(r)),
    }
}

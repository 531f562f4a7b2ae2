//! `sys`: suspend, resume, inspect and change the code of a running `gen_server`, from
//! any process (OTP's `sys` module, `spec/otp-semantics.md` §3). The node's runtime API
//! offers the same operations to host code.
//!
//! An upgrade of a server that needs its state changed:
//!
//! ```no_run
//! # async fn f(ctx: hotswap::Ctx, pid: hotswap::Pid) -> Result<(), hotswap::sys::SysError> {
//! use hotswap::sys;
//! let t = sys::DEFAULT_TIMEOUT;
//! sys::suspend(&ctx, pid, t).await?;          // ordinary messages now wait
//! // ... the new version of the module is loaded here ...
//! sys::change_code(&ctx, pid, "counter", "1", None, t).await?; // new code_change runs
//! sys::resume(&ctx, pid, t).await?;           // queued messages run on the new code
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::ctx::Ctx;
use crate::gen_server::{request, wire, CallError, ServerRef};
use crate::types::{ExitReason, Pid};
use hotswap_abi as abi;

pub use crate::gen_server::DEFAULT_TIMEOUT;

#[doc(hidden)]
pub use crate::gen_server::wire::SysRequest as Request;

/// `R_SYS_ERROR` payload code: the request was refused.
#[doc(hidden)]
pub const E_REFUSED: u8 = 0;
/// `R_SYS_ERROR` payload code: the operation failed.
#[doc(hidden)]
pub const E_FAILED: u8 = 1;

/// Why a `sys` operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SysError {
    /// No such process or registered name.
    #[error("no process {0} (noproc)")]
    NoProc(ServerRef),
    /// No answer in time. A late `suspend` is still obeyed by the process: send `resume`
    /// to undo it.
    #[error("no answer within {0:?} (timeout)")]
    Timeout(Duration),
    /// The process exited before answering.
    #[error("the process exited: {0}")]
    Exit(ExitReason),
    /// The process refused the request (OTP: `{error, {unknown_system_msg, ..}}`), for
    /// example `change_code` on a process that is not suspended.
    #[error("refused: {0}")]
    Refused(String),
    /// `code_change` (or a `replace_state` function) failed; the process keeps its old
    /// state (and stays suspended, for `change_code`).
    #[error("{0}")]
    Failed(String),
    /// The state did not decode as the requested type.
    #[error("the state did not decode: {0}")]
    Decode(String),
}

/// `sys:get_status` for a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Its pid.
    pub pid: Pid,
    /// Its registered name.
    pub name: Option<String>,
    /// The callback module.
    pub module: String,
    /// The version of the module its state was made by (`None` while the state is held
    /// as bytes between a purge and the next message).
    pub version: Option<String>,
    /// Suspended by `sys::suspend`.
    pub suspended: bool,
    /// Its parent (the `start_link` caller), if any.
    pub parent: Option<Pid>,
    /// The state as the module formats it (`format_status`), by default its fields as
    /// JSON.
    pub state: String,
    /// Messages waiting in its mailbox.
    pub message_queue_len: usize,
    /// Calls, casts and infos handled.
    pub messages_in: u64,
    /// Replies sent.
    pub messages_out: u64,
}

/// `sys:statistics(P, get)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    /// When statistics were switched on (ms since the UNIX epoch).
    pub start_time_ms: u64,
    /// Now (ms since the UNIX epoch).
    pub current_time_ms: u64,
    /// Calls, casts and infos received since then.
    pub messages_in: u64,
    /// Replies sent since then.
    pub messages_out: u64,
}

impl SysError {
    fn from_call(e: CallError) -> SysError {
        match e {
            CallError::NoProc(r) => SysError::NoProc(r),
            CallError::Timeout(t) => SysError::Timeout(t),
            CallError::Exit(r) => SysError::Exit(r),
            CallError::CallingSelf => {
                SysError::Refused("a process cannot send sys requests to itself".into())
            }
            CallError::Decode(d) => SysError::Decode(d),
        }
    }
}

/// Send a system request; the value bytes of a successful reply.
pub(crate) async fn system(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    req: &Request,
    timeout: Duration,
) -> Result<Vec<u8>, SysError> {
    let r = request(
        *ctx,
        &to.into(),
        abi::MSG_SYSTEM,
        &codec::encode(req),
        Some(timeout),
    )
    .await
    .map_err(SysError::from_call)?;
    match r.split_first() {
        Some((&wire::R_VALUE, rest)) => Ok(rest.to_vec()),
        Some((&wire::R_SYS_ERROR, rest)) => {
            let msg = String::from_utf8_lossy(rest.get(1..).unwrap_or(&[])).into_owned();
            Err(if rest.first() == Some(&E_REFUSED) {
                SysError::Refused(msg)
            } else {
                SysError::Failed(msg)
            })
        }
        _ => Err(SysError::Failed(
            "malformed reply to a system request".into(),
        )),
    }
}

/// `sys:suspend`: the process then handles only system messages (and its parent's exit
/// signal); calls, casts and other messages wait in its mailbox, in order.
pub async fn suspend(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    timeout: Duration,
) -> Result<(), SysError> {
    system(ctx, to, &Request::Suspend, timeout).await.map(drop)
}

/// `sys:resume`.
pub async fn resume(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    timeout: Duration,
) -> Result<(), SysError> {
    system(ctx, to, &Request::Resume, timeout).await.map(drop)
}

/// `sys:get_state`, encoded (MessagePack with named fields).
pub async fn get_state_raw(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    timeout: Duration,
) -> Result<Vec<u8>, SysError> {
    system(ctx, to, &Request::GetState, timeout).await
}

/// `sys:get_state`, decoded as `T`.
pub async fn get_state<T: DeserializeOwned>(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    timeout: Duration,
) -> Result<T, SysError> {
    let b = get_state_raw(ctx, to, timeout).await?;
    codec::decode(&b).map_err(|e| SysError::Decode(e.to_string()))
}

/// `sys:replace_state`: the process waits while `f` computes its new state from the
/// current one (decoded as `T`); returns the new state. If `f` panics or the state does
/// not decode as `T`, the state is unchanged and the error says why.
pub async fn replace_state<T: Serialize + DeserializeOwned>(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    f: impl FnOnce(T) -> T,
    timeout: Duration,
) -> Result<T, SysError> {
    let to = to.into();
    let cur = system(ctx, to.clone(), &Request::ReplaceBegin, timeout).await?;
    let new = match codec::decode::<T>(&cur) {
        Err(e) => Err(SysError::Decode(e.to_string())),
        Ok(v) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(v))).map_err(|p| {
            SysError::Failed(format!(
                "callback_failed: the replace_state function panicked: {}",
                crate::panic::panic_message(p)
            ))
        }),
    };
    match new {
        Ok(v) => {
            system(ctx, to, &Request::ReplaceCommit(codec::encode(&v)), timeout).await?;
            Ok(v)
        }
        Err(e) => {
            system(ctx, to, &Request::ReplaceCancel, timeout).await?;
            Err(e)
        }
    }
}

/// `sys:change_code(P, Module, OldVsn, Extra)`: only while suspended (otherwise refused,
/// and nothing happens). The current version of `module` builds the new state with its
/// `code_change(old, extra)`; on failure (an error or a panic) the process keeps its old
/// state, stays suspended, and the error names the cause.
pub async fn change_code(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    module: &str,
    old_vsn: &str,
    extra: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(), SysError> {
    let req = Request::ChangeCode {
        module: module.into(),
        old_vsn: old_vsn.into(),
        extra,
    };
    system(ctx, to, &req, timeout).await.map(drop)
}

/// `sys:get_status`.
pub async fn get_status(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    timeout: Duration,
) -> Result<ServerStatus, SysError> {
    let b = system(ctx, to, &Request::GetStatus, timeout).await?;
    codec::decode(&b).map_err(|e| SysError::Decode(e.to_string()))
}

/// `sys:statistics`: `Some(true)` switches them on, `Some(false)` off, `None` reads them
/// (`None` when they are off).
pub async fn statistics(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    on: Option<bool>,
    timeout: Duration,
) -> Result<Option<Statistics>, SysError> {
    let b = system(ctx, to, &Request::Statistics(on), timeout).await?;
    codec::decode(&b).map_err(|e| SysError::Decode(e.to_string()))
}

/// `sys:terminate`: the process runs `terminate(reason)` and exits with `reason`.
pub async fn terminate(
    ctx: &Ctx,
    to: impl Into<ServerRef>,
    reason: &ExitReason,
    timeout: Duration,
) -> Result<(), SysError> {
    system(ctx, to, &Request::Terminate(reason.encode()), timeout)
        .await
        .map(drop)
}

/// The pid a [`ServerRef`] names now, if any.
pub fn resolve(ctx: &Ctx, to: &ServerRef) -> Option<Pid> {
    to.resolve(ctx)
}

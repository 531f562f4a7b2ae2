//! The public side of `gen_server` and `sys` on a node: starting servers, calling them,
//! and the `sys` operations, usable from host code (tests, the control server).

use std::time::Duration;

use hotswap::{ExitReason, Pid};
use serde::{Deserialize, Serialize};

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
    /// `<0.12>`, `0.12` or `12` are pids; anything else is a registered name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let inner = t
            .strip_prefix('<')
            .and_then(|x| x.strip_suffix('>'))
            .unwrap_or(t);
        let num = inner.strip_prefix("0.").unwrap_or(inner);
        match num.parse::<u64>() {
            Ok(n) if !num.is_empty() => Ok(ServerRef::Pid(Pid(n))),
            _ => Ok(ServerRef::Name(t.to_string())),
        }
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
    /// `init` did not finish in time; the server was killed.
    #[error("init did not finish within {0:?}; the server was killed")]
    Timeout(Duration),
    /// The module is not loaded, or is not a gen_server.
    #[error("{0}")]
    Spawn(String),
}

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

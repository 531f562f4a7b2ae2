//! Plain values shared by modules and the node: pids, references, exit reasons, messages.

use std::fmt;

/// A process identifier. Printed as Erlang does: `<0.42.0>`.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Pid(pub u64);

impl Pid {
    /// The raw number (never 0 for a real process).
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<0.{}.0>", self.0)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A monitor or timer reference.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Ref(pub u64);

/// Why a process exited (or the reason carried by an exit signal).
///
/// `Normal`, `Shutdown` and `ShutdownWith` are the "normal-ish" reasons: a linked process
/// that does not trap exits ignores only `Normal`. `Kill` can only be a signal: it cannot be
/// trapped and the victim is seen to exit with `Killed`.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ExitReason {
    /// The process finished its work.
    Normal,
    /// The untrappable kill signal (`exit(Pid, kill)`); never an exit reason itself.
    Kill,
    /// The process was killed (by `kill`, or by a purge of the code it was running).
    Killed,
    /// Orderly shutdown.
    Shutdown,
    /// Orderly shutdown with a detail (`{shutdown, Term}`).
    ShutdownWith(String),
    /// Module code panicked: `{panic, Message}`.
    Panic(String),
    /// The target process did not exist (`noproc`).
    NoProc,
    /// A bad argument was given (`badarg`), with what was wrong.
    BadArg(String),
    /// Any other reason, chosen by user code.
    User(String),
    /// A message had a form the receiver has no clause for (`function_clause`): what was
    /// expected and what the decoder said.
    FunctionClause(String),
    /// A function that does not exist was called (`undef`).
    Undef(String),
}

const R_NORMAL: u8 = 0;
const R_KILL: u8 = 1;
const R_KILLED: u8 = 2;
const R_SHUTDOWN: u8 = 3;
const R_SHUTDOWN_WITH: u8 = 4;
const R_PANIC: u8 = 5;
const R_NOPROC: u8 = 6;
const R_BADARG: u8 = 7;
const R_USER: u8 = 8;
const R_FUNCTION_CLAUSE: u8 = 9;
const R_UNDEF: u8 = 10;

impl ExitReason {
    /// `true` for `normal`, `shutdown` and `{shutdown, _}` (supervisors do not report these).
    pub fn is_normalish(&self) -> bool {
        matches!(
            self,
            ExitReason::Normal | ExitReason::Shutdown | ExitReason::ShutdownWith(_)
        )
    }

    /// Encode for the boundary: one tag byte, then UTF-8 detail.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1);
        self.encode_into(&mut v);
        v
    }

    /// Append the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (tag, detail): (u8, &str) = match self {
            ExitReason::Normal => (R_NORMAL, ""),
            ExitReason::Kill => (R_KILL, ""),
            ExitReason::Killed => (R_KILLED, ""),
            ExitReason::Shutdown => (R_SHUTDOWN, ""),
            ExitReason::ShutdownWith(s) => (R_SHUTDOWN_WITH, s),
            ExitReason::Panic(s) => (R_PANIC, s),
            ExitReason::NoProc => (R_NOPROC, ""),
            ExitReason::BadArg(s) => (R_BADARG, s),
            ExitReason::User(s) => (R_USER, s),
            ExitReason::FunctionClause(s) => (R_FUNCTION_CLAUSE, s),
            ExitReason::Undef(s) => (R_UNDEF, s),
        };
        out.push(tag);
        out.extend_from_slice(detail.as_bytes());
    }

    /// Decode what [`ExitReason::encode`] wrote. Unknown or malformed input decodes as a
    /// `User` reason describing it, never as a panic.
    pub fn decode(bytes: &[u8]) -> ExitReason {
        let Some((&tag, rest)) = bytes.split_first() else {
            return ExitReason::User("<empty exit reason>".into());
        };
        let s = || String::from_utf8_lossy(rest).into_owned();
        match tag {
            R_NORMAL => ExitReason::Normal,
            R_KILL => ExitReason::Kill,
            R_KILLED => ExitReason::Killed,
            R_SHUTDOWN => ExitReason::Shutdown,
            R_SHUTDOWN_WITH => ExitReason::ShutdownWith(s()),
            R_PANIC => ExitReason::Panic(s()),
            R_NOPROC => ExitReason::NoProc,
            R_BADARG => ExitReason::BadArg(s()),
            R_USER => ExitReason::User(s()),
            R_FUNCTION_CLAUSE => ExitReason::FunctionClause(s()),
            R_UNDEF => ExitReason::Undef(s()),
            t => ExitReason::User(format!("<unknown exit reason tag {t}>")),
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Kill => f.write_str("kill"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::ShutdownWith(s) => write!(f, "{{shutdown, {s:?}}}"),
            ExitReason::Panic(s) => write!(f, "{{panic, {s:?}}}"),
            ExitReason::NoProc => f.write_str("noproc"),
            ExitReason::BadArg(s) => write!(f, "{{badarg, {s:?}}}"),
            ExitReason::User(s) => f.write_str(s),
            ExitReason::FunctionClause(s) => write!(f, "{{function_clause, {s:?}}}"),
            ExitReason::Undef(s) => write!(f, "{{undef, {s:?}}}"),
        }
    }
}

//! The control server: a node's Unix socket that the `hotswap` control commands (or any
//! client speaking the protocol below) use to inspect and change the running node. It is
//! the layer above [`crate::release`] and the [`Node`](crate::Node) facade, and drives the
//! node only through their public API; [`server::run`] serves it, [`node_state::NodeState`]
//! is what it knows of the node. [`server`] owns the socket and the dispatch; each group
//! of commands has a file of its own (`inspect`: status, processes, modules; `code`: load,
//! check, purge; `sys`; `sup`: supervisors; `releases`; `ports`; `top`; `call`), and none
//! of them imports the server. A program embedding the runtime can serve it too:
//!
//! ```no_run
//! # async fn demo(node: hotswap_runtime::Node, release: hotswap_runtime::release::Release) -> Result<(), String> {
//! use hotswap_runtime::control::{node_state::NodeState, server};
//! let (state, _stop_requests) = NodeState::new(node, release, "cookie".into(), 0);
//! let listener = server::bind(std::path::Path::new("run/control.sock"))?;
//! tokio::spawn(server::run(listener, state, server::Limits::default()));
//! # Ok(()) }
//! ```
//!
//! # The protocol
//!
//! One request per connection on the node's Unix socket (`run/control.sock`, mode 0600):
//!
//! 1. the client sends a **frame**: a 4-byte big-endian length, then that many bytes of
//!    JSON `{"cookie": "<hex>", "cmd": "<command>", "args": {...}}` (at most
//!    [`MAX_REQUEST`] bytes);
//! 2. the node answers with one frame, JSON `{"ok": true, "result": ...}` or
//!    `{"ok": false, "error": {"kind": "...", "message": "...", "hint": "..."}}`, and closes.
//!
//! The node checks the peer's uid (it must be the node's own, or root), then reads the
//! request with a time limit (the manifest's `control_read_timeout_ms`, default
//! [`DEFAULT_CONTROL_READ_TIMEOUT_MS`]), checks the cookie (in constant time) before looking at anything
//! else, and only then runs the command. Anything malformed gets an error reply naming
//! what was wrong; nothing a client sends can stop the node except a well-formed `stop`
//! with the right cookie.
//!
//! Each connection is served concurrently, by a task of its own: a client that connects
//! and sends nothing (a stuck script, a crashed client) holds only its own connection
//! until its read deadline, and never delays the others. At most
//! `control_max_connections` (default [`DEFAULT_CONTROL_MAX_CONNECTIONS`]) are open at once; past that
//! the one that has waited longest for its request is closed to make room (see
//! [`server::run`]).
//!
//! [`DEFAULT_CONTROL_READ_TIMEOUT_MS`]: crate::release::manifest::DEFAULT_CONTROL_READ_TIMEOUT_MS
//! [`DEFAULT_CONTROL_MAX_CONNECTIONS`]: crate::release::manifest::DEFAULT_CONTROL_MAX_CONNECTIONS

mod args;
mod call;
mod code;
mod inspect;
pub mod msgpack;
pub mod node_state;
mod ports;
pub mod releases;
pub mod server;
mod sup;
mod sys;
mod top;

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest request the node accepts.
pub const MAX_REQUEST: u32 = 1 << 20;
/// The largest reply a client accepts.
pub const MAX_REPLY: u32 = 64 << 20;

/// A request, as the client sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The node's cookie (the contents of `run/cookie`).
    pub cookie: String,
    /// The command.
    pub cmd: String,
    /// Its arguments (an object; `null` or absent for none).
    #[serde(default)]
    pub args: Value,
}

/// An error reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorReply {
    /// A stable word for scripts: `wrong_cookie`, `bad_request`, `not_loaded`,
    /// `not_purged`, `noproc`, ...
    pub kind: String,
    /// What failed and why.
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Extra facts (e.g. the processes holding old code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ErrorReply {
    /// An error of `kind`.
    pub fn new(kind: &str, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            kind: kind.into(),
            message: message.into(),
            hint: None,
            details: None,
        }
    }

    /// With a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> ErrorReply {
        self.hint = Some(hint.into());
        self
    }

    /// With details.
    pub fn details(mut self, details: Value) -> ErrorReply {
        self.details = Some(details);
        self
    }
}

/// A reply frame's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the command succeeded.
    pub ok: bool,
    /// The result, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
}

impl Reply {
    /// A success.
    pub fn ok(result: Value) -> Reply {
        Reply {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(e: ErrorReply) -> Reply {
        Reply {
            ok: false,
            result: None,
            error: Some(e),
        }
    }
}

/// Write one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len =
        u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame larger than 4 GiB"))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)?;
    w.flush()
}

/// Read one frame of at most `max` bytes.
pub fn read_frame(r: &mut impl Read, max: u32) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than the limit of {max}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Whether two cookies are equal, in time that depends only on their lengths.
pub fn cookie_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Read a cookie file (trimmed).
pub fn read_cookie(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{\"a\":1}").unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 7]);
        assert_eq!(read_frame(&mut &buf[..], 100).unwrap(), b"{\"a\":1}");
        let e = read_frame(&mut &buf[..], 3).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let e = read_frame(&mut &buf[..6], 100).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn cookies_compare_by_content_and_length() {
        assert!(cookie_eq(b"abc", b"abc"));
        assert!(!cookie_eq(b"abc", b"abd"));
        assert!(!cookie_eq(b"abc", b"abcd"));
        assert!(cookie_eq(b"", b""));
    }
}

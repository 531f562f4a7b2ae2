//! A control request's arguments, read with errors that name the argument and what it
//! must be.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::ErrorReply;

/// A `bad_request` error with `msg`.
pub(super) fn bad(msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new("bad_request", msg)
}

/// `path` if it is absolute; else a `bad_request` that names it as `what` ("library",
/// "package"): the node resolves paths in its own working directory, not the client's.
pub(super) fn absolute<'p>(path: &'p Path, what: &str) -> Result<&'p Path, ErrorReply> {
    if path.is_absolute() {
        return Ok(path);
    }
    Err(bad(format!(
        "the {what} path {} must be absolute (the node's working directory is not the client's)",
        path.display()
    )))
}

/// A request's arguments.
#[derive(Clone, Copy)]
pub(super) struct Args<'a>(pub(super) &'a Value);

impl Args<'_> {
    pub(super) fn str(&self, key: &str) -> Result<&str, ErrorReply> {
        match self.0.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => Err(bad(format!("argument {key:?} must be a non-empty string"))),
            None => Err(bad(format!("missing argument {key:?}"))),
        }
    }

    pub(super) fn bool(&self, key: &str) -> Result<bool, ErrorReply> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad(format!("argument {key:?} must be true or false"))),
        }
    }

    pub(super) fn millis(&self, key: &str) -> Result<Option<Duration>, ErrorReply> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&ms| ms <= 3_600_000)
                .map(|ms| Some(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    bad(format!(
                        "argument {key:?} must be a number of milliseconds (at most one hour)"
                    ))
                }),
        }
    }
}

//! The node's side of `call` and `cast`: a gen_server request given as JSON (encoded as
//! the SDK encodes values: MessagePack with named fields; an enum variant is `"Get"` or
//! `{"Add": 2}`), its reply answered as JSON.

use std::time::Duration;

use crate::Node;
use hotswap::gen_server::{CallError, ServerRef};
use serde_json::{json, Value};

use super::ErrorReply;

fn bad(msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new("bad_request", msg)
}

/// `call` (or, with `cast: true`, `cast`).
pub async fn call(node: &Node, args: &Value) -> Result<Value, ErrorReply> {
    let target = match args.get("target") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(bad(
                "missing argument \"target\" (a pid or a registered name)",
            ))
        }
    };
    let to: ServerRef = match target.parse() {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let request = args.get("request").cloned().unwrap_or(Value::Null);
    if let ServerRef::Name(n) = &to {
        if node.whereis(n).is_none() {
            return Err(
                ErrorReply::new("noproc", format!("no process is registered as {n:?}"))
                    .hint("`hotswap processes` lists the live processes and their names"),
            );
        }
    }
    if args.get("cast").and_then(Value::as_bool) == Some(true) {
        node.cast(to, &request);
        return Ok(json!({ "cast": true }));
    }
    let timeout = args
        .get("timeout_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .unwrap_or(hotswap::gen_server::DEFAULT_TIMEOUT);
    match node
        .call::<Value, Value>(to.clone(), &request, timeout)
        .await
    {
        Ok(reply) => Ok(json!({ "reply": reply })),
        Err(e) => {
            let kind = match &e {
                CallError::NoProc(_) => "noproc",
                CallError::Timeout(_) => "timeout",
                CallError::Exit(_) => "exited",
                CallError::Decode(_) => "decode",
                _ => "call_error",
            };
            let mut r = ErrorReply::new(kind, format!("call to {to}: {e}"));
            if let CallError::Exit(_) = e {
                r = r.hint("a request the server cannot decode crashes it with function_clause: check the request's shape (an enum variant is \"Get\" or {\"Add\": 2})");
            }
            Err(r)
        }
    }
}

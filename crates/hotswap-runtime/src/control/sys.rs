//! The `sys` commands on one gen_server: `suspend`, `resume`, `get_state`, `change_code`.

use serde_json::{json, Value};

use super::args::{bad, Args};
use super::node_state::NodeState;
use super::ErrorReply;
use crate::{ServerRef, SysError};
use tracing::info;

/// A pid in any form it prints as, or a registered name (see `ServerRef`'s `FromStr`).
pub(super) fn parse_target(s: &str) -> ServerRef {
    match s.parse::<ServerRef>() {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

pub(super) fn sys_error(target: &ServerRef, e: SysError) -> ErrorReply {
    let msg = format!("{target}: {e}");
    match e {
        SysError::NoProc(_) => ErrorReply::new("noproc", msg)
            .hint("`hotswap processes` lists the live processes and their names"),
        SysError::Timeout(_) => ErrorReply::new("timeout", msg)
            .hint("is it a gen_server (only gen_servers answer sys requests)? a longer --timeout may help if it is busy"),
        SysError::Exit(_) => ErrorReply::new("exited", msg),
        SysError::Refused(_) => ErrorReply::new("refused", msg)
            .hint("change-code needs the process suspended first: `hotswap suspend <target>`"),
        SysError::Failed(_) => ErrorReply::new("failed", msg)
            .hint("the process kept its old state (and stays suspended after a failed change-code)"),
        SysError::Decode(_) => ErrorReply::new("decode", msg),
        _ => ErrorReply::new("sys_error", msg),
    }
}

pub(super) async fn sys(state: &NodeState, cmd: &str, args: Args<'_>) -> Result<Value, ErrorReply> {
    let target_text = args.str("target")?;
    let target = parse_target(target_text);
    let node = &state.node;
    let pid = match &target {
        ServerRef::Pid(p) => *p,
        ServerRef::Name(n) => node.whereis(n).ok_or_else(|| {
            ErrorReply::new("noproc", format!("no process is registered as {n:?}"))
                .hint("`hotswap processes` lists the live processes and their names")
        })?,
    };
    if !node.is_alive(pid) {
        return Err(ErrorReply::new("noproc", format!("no process {pid}"))
            .hint("`hotswap processes` lists the live processes"));
    }
    let mut sys = node.sys();
    if let Some(t) = args.millis("timeout_ms")? {
        sys = sys.timeout(t);
    }
    let out = match cmd {
        "suspend" => sys
            .suspend(pid)
            .await
            .map(|()| json!({ "suspended": true })),
        "resume" => sys.resume(pid).await.map(|()| json!({ "resumed": true })),
        "get_state" => {
            // JSON for scripts (the default), or text for people: see `super::msgpack`.
            let text = match args.0.get("render") {
                None | Some(Value::Null) => false,
                Some(Value::String(r)) if r == "json" => false,
                Some(Value::String(r)) if r == "text" => true,
                Some(_) => return Err(bad("argument \"render\" must be \"json\" or \"text\"")),
            };
            match sys.get_state_raw(pid).await {
                Ok(bytes) => {
                    let len = bytes.len();
                    let rendered =
                        tokio::task::spawn_blocking(move || super::msgpack::render(bytes, text))
                            .await
                            .unwrap_or_else(|e| Err(format!("rendering it failed: {e}")));
                    match rendered {
                        Ok(v) if text => Ok(json!({ "text": v })),
                        Ok(v) => Ok(json!({ "state": v })),
                        Err(e) => Err(SysError::Decode(format!(
                            "the state ({len} bytes) is not readable as data: {e}"
                        ))),
                    }
                }
                Err(e) => Err(e),
            }
        }
        "change_code" => {
            let module = args.str("module")?;
            let old_vsn = args.str("old_vsn")?;
            let extra = match args.0.get("extra") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    rmp_serde::to_vec_named(v)
                        .map_err(|e| bad(format!("argument \"extra\" cannot be encoded: {e}")))?,
                ),
            };
            let r = sys.change_code(pid, module, old_vsn, extra).await;
            if r.is_ok() {
                info!(%pid, module, old_vsn, "code changed");
            }
            r.map(|()| json!({ "changed": true, "module": module, "old_vsn": old_vsn }))
        }
        other => return Err(bad(format!("unknown sys command {other:?}"))),
    };
    out.map(|mut v| {
        v["pid"] = json!(pid.to_string());
        v
    })
    .map_err(|e| sys_error(&target, e))
}

//! The node's side of `ports`: its port table (sockets) as JSON, one object per open
//! port, by id, and the operator's actions on a listener (`pause_accepting`,
//! `resume_accepting`, `drain`). (The client prints them.)

use std::time::{Duration, Instant};

use hotswap::net::{NetError, PortId, PortInfo};
use serde_json::{json, Value};

use super::ErrorReply;
use crate::Node;

fn bad(msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new("bad_request", msg)
}

/// A port error as a control error reply.
fn net_error(e: NetError) -> ErrorReply {
    let kind = match &e {
        NetError::UnknownPort(_) => "no_such_port",
        NetError::Closed(_) => "closed",
        NetError::WrongKind { .. } => "not_a_listener",
        _ => "port_error",
    };
    let r = ErrorReply::new(kind, e.to_string());
    match kind {
        "no_such_port" | "closed" | "not_a_listener" => {
            r.hint("see the listeners with: hotswap ports (type tcp_listen)")
        }
        _ => r,
    }
}

/// The listener `text` names: a port id (`7` or `#Port<0.7>`) or a listener's label.
fn resolve(node: &Node, text: &str) -> Result<PortId, ErrorReply> {
    let t = text.trim();
    let digits = t
        .strip_prefix("#Port<0.")
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(t);
    if let Ok(n) = digits.parse::<u64>() {
        return Ok(PortId(n));
    }
    let found: Vec<PortInfo> = node
        .ports()
        .into_iter()
        .filter(|p| p.kind == "tcp_listen" && p.label.as_deref() == Some(t))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.id),
        [] => Err(ErrorReply::new(
            "no_such_port",
            format!("no listener is labelled {t:?} and it is not a port id"),
        )
        .hint("name the listener by its id (7 or #Port<0.7>) or its label; see: hotswap ports")),
        many => Err(ErrorReply::new(
            "ambiguous",
            format!(
                "{} listeners are labelled {t:?}: {}",
                many.len(),
                many.iter()
                    .map(|p| p.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .hint("name one by its id")),
    }
}

/// The node's side of `ports`: the table, or an action on a listener.
pub(crate) async fn command(node: &Node, args: &Value) -> Result<Value, ErrorReply> {
    let Some(action) = args.get("action") else {
        return Ok(ports(node));
    };
    let port = match args.get("port").and_then(Value::as_str) {
        Some(p) => resolve(node, p)?,
        None => return Err(bad("argument \"port\" (the listener) is missing")),
    };
    match action.as_str() {
        Some(a @ ("pause_accepting" | "resume_accepting")) => node
            .pause_accepting(port, a == "pause_accepting")
            .map(|p| row(&p))
            .map_err(net_error),
        Some("drain") => {
            let Some(ms) = args.get("limit_ms").and_then(Value::as_u64) else {
                return Err(bad(
                    "argument \"limit_ms\" must be a number of milliseconds",
                ));
            };
            let t = Instant::now();
            let left = node
                .drain_listener(port, Duration::from_millis(ms))
                .await
                .map_err(net_error)?;
            let waited_ms = t.elapsed().as_millis() as u64;
            let listener = node
                .ports()
                .into_iter()
                .find(|p| p.id == port)
                .map(|p| row(&p));
            if left == 0 {
                Ok(
                    json!({ "port": port.to_string(), "drained": true, "connections": 0, "waited_ms": waited_ms, "listener": listener }),
                )
            } else {
                Err(ErrorReply::new(
                    "not_drained",
                    format!("listener {port}: {left} connection(s) still open after {ms} ms; it stays paused"),
                )
                .hint("wait longer (--drain-limit), let the clients finish, or accept again with --resume-accepting")
                .details(json!({ "port": port.to_string(), "drained": false, "connections": left, "waited_ms": waited_ms })))
            }
        }
        _ => Err(bad(format!(
            "unknown ports action {action}: pause_accepting, resume_accepting or drain"
        ))),
    }
}

/// One port as JSON.
fn row(p: &PortInfo) -> Value {
    json!({
                "id": p.id.0,
                "port": p.id.to_string(),
                "type": p.kind,
                "owner": p.owner.map(|o| o.to_string()),
                "parked": p.parked,
                "label": p.label,
                "local": p.local,
                "peer": p.peer,
                "bytes_in": p.bytes_in,
                "bytes_out": p.bytes_out,
                "messages_in": p.msgs_in,
                "messages_out": p.msgs_out,
                "rx_buffered": p.rx_buffered,
                "tx_queued": p.tx_queued,
                "tx_waiting": p.tx_waiting,
                "active": p.active,
                "framing": p.framing,
                "connections": p.connections.map(|(n, _)| n),
        "accepting_paused": p.connections.map(|(_, paused)| paused),
        "accept_errors": (p.kind == "tcp_listen").then_some(p.accept_errors),
        "acceptors": (p.kind == "tcp_listen").then_some(p.acceptors),
    })
}

/// The node's answer to a plain `ports`: one object per open port, by id.
pub(crate) fn ports(node: &Node) -> Value {
    Value::Array(node.ports().iter().map(row).collect())
}

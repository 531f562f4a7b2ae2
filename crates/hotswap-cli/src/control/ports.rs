//! `hotswap ports`: the node's port table (sockets), and the operator's actions on a
//! listener (`--pause-accepting`, `--resume-accepting`, `--drain`), as the node answers
//! them and as the client prints them. Kept apart from the server's connection handling.

use std::time::{Duration, Instant};

use hotswap::net::{NetError, PortId, PortInfo};
use hotswap_runtime::Node;
use serde_json::{json, Value};

use super::ErrorReply;

/// What `hotswap ports` does besides listing.
#[derive(Debug, Clone)]
pub enum Action {
    /// Stop (`true`) or resume accepting on a listener.
    Pause {
        /// The listener: its id, `#Port<0.N>`, or its label.
        port: String,
        /// Pause or resume.
        pause: bool,
    },
    /// Stop accepting and wait for the listener's connections to close.
    Drain {
        /// The listener.
        port: String,
        /// How long the node waits.
        limit: Duration,
    },
}

/// The request's name and arguments (the node's waits stay under the client's `timeout`).
pub fn wire(action: Option<&Action>, timeout: Duration) -> (&'static str, Value) {
    let args = match action {
        None => Value::Null,
        Some(Action::Pause { port, pause }) => json!({
            "action": if *pause { "pause_accepting" } else { "resume_accepting" },
            "port": port,
        }),
        Some(Action::Drain { port, limit }) => json!({
            "action": "drain",
            "port": port,
            "limit_ms": (*limit).min(timeout * 9 / 10).as_millis() as u64,
        }),
    };
    ("ports", args)
}

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
    })
}

/// The node's answer to a plain `ports`: one object per open port, by id.
pub(crate) fn ports(node: &Node) -> Value {
    Value::Array(node.ports().iter().map(row).collect())
}

/// What an action's answer prints.
pub fn render_action(action: &Action, v: &Value) -> String {
    match action {
        Action::Pause { .. } => {
            let (n, paused) = (text(&v["connections"]), v["accepting_paused"] == true);
            format!(
                "listener {} at {}: {} ({n} connections open)\n",
                text(&v["port"]),
                text(&v["local"]),
                if paused { "accepting paused" } else { "accepting" }
            )
        }
        Action::Drain { .. } => format!(
            "listener {}: drained (no connection open) after {} ms; accepting stays paused (resume with --resume-accepting)\n",
            text(&v["port"]),
            text(&v["waited_ms"])
        ),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The human-readable table.
pub(crate) fn render(v: &Value) -> String {
    let head = [
        "PORT",
        "TYPE",
        "OWNER",
        "LOCAL",
        "PEER",
        "IN",
        "OUT",
        "MSGS IN/OUT",
        "QUEUES RX/TX",
        "ACTIVE",
    ];
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let owner = if p["parked"] == true {
                "parked".to_string()
            } else {
                text(&p["owner"])
            };
            let peer = match (&p["peer"], &p["connections"]) {
                (Value::Null, Value::Null) => "-".to_string(),
                (Value::Null, n) => format!(
                    "{} conns{}{}",
                    text(n),
                    if p["accepting_paused"] == true {
                        ", paused"
                    } else {
                        ""
                    },
                    match p["accept_errors"].as_u64() {
                        Some(e) if e > 0 => format!(", {e} accept errors"),
                        _ => String::new(),
                    }
                ),
                (peer, _) => text(peer),
            };
            vec![
                text(&p["port"]),
                text(&p["type"]),
                owner,
                text(&p["local"]),
                peer,
                text(&p["bytes_in"]),
                text(&p["bytes_out"]),
                format!("{}/{}", text(&p["messages_in"]), text(&p["messages_out"])),
                format!("{}/{}", text(&p["rx_buffered"]), text(&p["tx_queued"])),
                if p["type"] == "tcp_listen" {
                    "-".to_string()
                } else {
                    text(&p["active"])
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no open ports\n".into();
    }
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

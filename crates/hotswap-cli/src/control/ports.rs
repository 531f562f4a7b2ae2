//! `hotswap ports`: the node's port table (sockets) and the operator's actions on a
//! listener (`--pause-accepting`, `--resume-accepting`, `--drain`), as the client sends
//! and prints them (the node's side is `hotswap_runtime::control`).

use std::time::Duration;

use serde_json::{json, Value};

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

//! `hotswap ports`: the node's port table (sockets), as the node answers it and as the
//! client prints it. Kept apart from the server's connection handling.

use serde_json::{json, Value};

/// The node's answer: one object per open port, by id.
pub(crate) fn ports(node: &hotswap_runtime::Node) -> Value {
    let rows: Vec<Value> = node
        .ports()
        .into_iter()
        .map(|p| {
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
            })
        })
        .collect();
    Value::Array(rows)
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
                    "{} conns{}",
                    text(n),
                    if p["accepting_paused"] == true {
                        ", paused"
                    } else {
                        ""
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

//! `hotswap ports`: the node's port table (sockets) as the client prints it (the node's
//! side is `hotswap_runtime::control`).

use serde_json::Value;

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

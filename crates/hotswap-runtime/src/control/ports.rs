//! The node's side of `ports`: its port table (sockets) as JSON, one object per open
//! port, by id. (The client prints it as a table.)

use serde_json::{json, Value};

use crate::Node;

/// The node's answer: one object per open port, by id.
pub(crate) fn ports(node: &Node) -> Value {
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

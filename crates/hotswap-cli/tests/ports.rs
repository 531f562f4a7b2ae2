//! `hotswap ports` against a real node whose application owns TCP ports (the
//! `port_echo` fixture: a gen_server owning a listener and every connection it accepts).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use serde_json::Value;

mod support;
use support::*;

const MANIFEST: &str = r#"
[release]
name = "net"
version = "1.0.0"

[node]
stop_timeout_ms = 5000

[[module]]
name = "port_echo"
version = "1"
file = "lib/libport_echo_v1.so"

[[application]]
name = "echo"
version = "1.0.0"
start = [
  { server = "port_echo", id = "echo", arg = { addr = "127.0.0.1:0" }, name = "echo" },
]
"#;

fn ports(rel: &Rel) -> Vec<Value> {
    let (code, v) = rel.json(&["ports"]);
    assert_eq!(code, Some(0), "{v}");
    v.as_array().expect("an array of ports").clone()
}

fn echo(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let mut f = (data.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(data);
    s.write_all(&f).unwrap();
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    let mut v = vec![0u8; u32::from_be_bytes(h) as usize];
    s.read_exact(&mut v).unwrap();
    v
}

#[test]
fn cli_ports_lists_listener_and_connections() {
    let rel = Rel::with_manifest("ports", MANIFEST);
    let _node = NodeProc::start(&rel);

    let before = ports(&rel);
    assert_eq!(before.len(), 1, "{before:?}");
    let l = &before[0];
    assert_eq!(l["type"], "tcp_listen");
    assert_eq!(l["connections"], 0);
    let owner = l["owner"].as_str().expect("an owner").to_string();
    let addr = l["local"].as_str().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{l}");

    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(echo(&mut s, b"hello"), b"\x01hello");
    let me = s.local_addr().unwrap().to_string();

    let now = ports(&rel);
    assert_eq!(now.len(), 2, "{now:?}");
    let c = now
        .iter()
        .find(|p| p["type"] == "tcp")
        .expect("the connection");
    assert_eq!(c["owner"], owner.as_str(), "the echo server owns it: {c}");
    assert_eq!(c["peer"], me.as_str());
    assert_eq!(c["bytes_in"], 9, "{c}");
    assert_eq!(c["messages_in"], 1, "{c}");
    assert_eq!(c["messages_out"], 1, "{c}");
    assert_eq!(c["active"], "once", "re-armed after the frame: {c}");
    assert_eq!(c["framing"], "len4");
    assert_eq!(c["tx_queued"], 0);
    let l = now.iter().find(|p| p["type"] == "tcp_listen").unwrap();
    assert_eq!(l["connections"], 1, "{l}");

    let text = rel.ctl(&["ports"]);
    assert_eq!(text.code, Some(0), "{text}");
    let head = text.stdout.lines().next().unwrap_or_default();
    for col in [
        "PORT",
        "TYPE",
        "OWNER",
        "LOCAL",
        "PEER",
        "QUEUES RX/TX",
        "ACTIVE",
    ] {
        assert!(head.contains(col), "{text}");
    }
    assert!(text.stdout.contains("tcp_listen"), "{text}");
    assert!(text.stdout.contains("1 conns"), "{text}");
    let row = text
        .stdout
        .lines()
        .find(|l| l.contains(&me))
        .unwrap_or_else(|| panic!("a row for {me}:\n{text}"));
    assert!(
        row.contains(&owner) && row.contains("once") && row.contains("1/1"),
        "{row}"
    );

    // The client leaves: the connection's port goes away, the listener stays.
    drop(s);
    let t = Instant::now();
    while ports(&rel).len() != 1 {
        assert!(t.elapsed() < WAIT, "the closed connection stays listed");
    }
}

#[test]
fn cli_ports_on_a_node_without_sockets() {
    let rel = Rel::new("noports");
    let _node = NodeProc::start(&rel);
    assert!(ports(&rel).is_empty());
    let text = rel.ctl(&["ports"]);
    assert_eq!(text.code, Some(0), "{text}");
    assert_eq!(text.stdout, "no open ports\n");
}

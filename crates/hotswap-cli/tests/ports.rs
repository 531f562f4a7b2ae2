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

fn listener(rel: &Rel) -> Value {
    ports(rel)
        .into_iter()
        .find(|p| p["type"] == "tcp_listen")
        .expect("a listener")
}

fn send_frame(s: &mut TcpStream, data: &[u8]) {
    let mut f = (data.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(data);
    s.write_all(&f).unwrap();
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let mut v = vec![0u8; u32::from_be_bytes(h) as usize];
    s.read_exact(&mut v)?;
    Ok(v)
}

/// How long a client waits to see that nothing arrives.
const QUIET: std::time::Duration = std::time::Duration::from_millis(300);

/// `hotswap ports --pause-accepting / --resume-accepting / --drain` on a real node's
/// listener (issue 13's gap 4): paused, open connections are still served and new ones
/// wait in the backlog; resumed, they are accepted; a drain reports what is still open at
/// its limit (exit 1, `not_drained`) and succeeds once the clients have gone.
#[test]
fn cli_ports_pause_resume_and_drain_a_listener() {
    let rel = Rel::with_manifest("drain", MANIFEST);
    let _node = NodeProc::start(&rel);
    let l = listener(&rel);
    let id = l["id"].as_u64().expect("an id").to_string();
    let name = l["port"].as_str().expect("#Port<0.N>").to_string();
    let addr = l["local"].as_str().unwrap().to_string();
    let mut a = TcpStream::connect(&addr).unwrap();
    a.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(echo(&mut a, b"a"), b"\x01a");

    let (code, v) = rel.json(&["ports", "--pause-accepting", &name]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["accepting_paused"], true, "{v}");
    assert_eq!(v["connections"], 1, "{v}");
    let text = rel.ctl(&["ports", "--pause-accepting", &id]);
    assert_eq!(text.code, Some(0), "{text}");
    assert!(
        text.stdout
            .contains("accepting paused (1 connections open)"),
        "{text}"
    );
    let table = rel.ctl(&["ports"]);
    assert!(table.stdout.contains("1 conns, paused"), "{table}");

    // Paused: a new client waits in the backlog, the open one is still served.
    let mut b = TcpStream::connect(&addr).unwrap();
    send_frame(&mut b, b"b");
    b.set_read_timeout(Some(QUIET)).unwrap();
    assert!(read_frame(&mut b).is_err(), "not accepted while paused");
    assert_eq!(echo(&mut a, b"a2"), b"\x01a2");

    let (code, v) = rel.json(&["ports", "--resume-accepting", &id]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["accepting_paused"], false, "{v}");
    b.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(
        read_frame(&mut b).unwrap(),
        b"\x01b",
        "accepted once resumed"
    );

    // A drain that cannot finish in its limit says what is left, and pauses.
    let r = rel.ctl(&["ports", "--drain", &id, "--drain-limit", "0.2", "--json"]);
    assert_eq!(r.code, Some(1), "{r}");
    let e: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"));
    assert_eq!(e["error"]["kind"], "not_drained", "{e}");
    assert_eq!(e["error"]["details"]["connections"], 2, "{e}");
    assert_eq!(listener(&rel)["accepting_paused"], true);
    let r = rel.ctl(&["ports", "--drain", &id, "--drain-limit", "0.2"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("2 connection(s) still open"), "{r}");

    // The clients leave while a drain waits: it succeeds.
    let (root, target) = (rel.root.clone(), id.clone());
    let drain = std::thread::spawn(move || {
        hotswap(
            &[
                "ports".into(),
                "--drain".into(),
                target,
                "--drain-limit".into(),
                "50".into(),
                "--json".into(),
                "-d".into(),
                root.display().to_string(),
            ],
            &[],
        )
    });
    drop(a);
    drop(b);
    let r = drain.join().unwrap();
    assert_eq!(r.code, Some(0), "{r}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["drained"], true, "{v}");
    assert_eq!(v["connections"], 0, "{v}");
    assert_eq!(v["listener"]["accepting_paused"], true, "{v}");

    // Bad targets: clear errors, nothing else touched.
    let (code, v) = rel.json(&["ports", "--pause-accepting", "999999"]);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "no_such_port", "{v}");
    let (code, v) = rel.json(&["ports", "--pause-accepting", "no-such-label"]);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "no_such_port", "{v}");
    let mut c = TcpStream::connect(&addr).unwrap();
    let _ = rel.json(&["ports", "--resume-accepting", &id]);
    c.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(echo(&mut c, b"c"), b"\x01c");
    let conn = ports(&rel)
        .into_iter()
        .find(|p| p["type"] == "tcp")
        .expect("the connection");
    let (code, v) = rel.json(&["ports", "--drain", &conn["id"].to_string()]);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "not_a_listener", "{v}");
    let r = rel.ctl(&["ports", "--pause-accepting", &id, "--drain", &id]);
    assert_eq!(r.code, Some(2), "one action at a time: {r}");
}

/// Out of file descriptors (issue 13's gap 3): a real node started with a low
/// RLIMIT_NOFILE (hard and soft, so it cannot raise it) gets more clients than it has
/// descriptors. Accept fails with EMFILE: the node says so once, counts it, backs off and
/// keeps running; once clients leave it accepts the ones that waited in the backlog.
#[test]
fn ports_accept_survives_fd_exhaustion() {
    use std::os::unix::process::CommandExt;
    const NOFILE: libc::rlim_t = 64;
    const CLIENTS: usize = NOFILE as usize + 16;
    let manifest = MANIFEST.replace("[node]\n", "[node]\nlog_level = \"info\"\n");
    assert_ne!(manifest, MANIFEST);
    let rel = Rel::with_manifest("emfile", &manifest);
    let node = NodeProc::try_start_with(&rel, |c| {
        // SAFETY: the closure runs in the forked child before exec and only calls
        // setrlimit, which is async-signal-safe, on a value on its own stack.
        unsafe {
            c.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: NOFILE,
                    rlim_max: NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
    .unwrap_or_else(|r| panic!("the node did not start with {NOFILE} descriptors:\n{r}"));
    let l = listener(&rel);
    let addr = l["local"].as_str().unwrap().to_string();
    assert_eq!(l["accept_errors"], 0, "{l}");

    // More clients than the node has descriptors; each sends one frame.
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("client {i}: {e}"));
            send_frame(&mut s, format!("client {i}").as_bytes());
            s
        })
        .collect();
    assert!(
        node.wait_stderr("retrying every", WAIT),
        "the node never reported the failed accept:\n{}",
        node.stderr()
    );
    assert!(
        node.wait_stderr("too many open files", WAIT),
        "{}",
        node.stderr()
    );
    // The last client cannot have been accepted: it waits in the backlog. Every other
    // client leaves, which frees the node's descriptors.
    let mut last = clients.pop().unwrap();
    drop(clients);
    last.set_read_timeout(Some(WAIT)).unwrap();
    let got = read_frame(&mut last).unwrap_or_else(|e| {
        panic!(
            "the waiting client was never served ({e}); node stderr:\n{}",
            node.stderr()
        )
    });
    assert_eq!(got, format!("\x01client {}", CLIENTS - 1).as_bytes());
    assert!(
        node.wait_stderr("accepting again after", WAIT),
        "{}",
        node.stderr()
    );
    // The listener counted the failures; each episode was reported once, not per attempt.
    let l = listener(&rel);
    let errors = l["accept_errors"].as_u64().expect("a count");
    assert!(errors >= 1, "{l}");
    let table = rel.ctl(&["ports"]);
    assert!(table.stdout.contains(" accept errors"), "{table}");
    let log = node.stderr();
    let (failed, recovered) = (
        log.matches("retrying every").count(),
        log.matches("accepting again after").count(),
    );
    assert!(
        failed >= 1 && failed == recovered,
        "{failed} episodes reported, {recovered} recoveries:\n{log}"
    );
    eprintln!("{errors} failed accepts in {failed} episode(s)");
    // And the node serves as before.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(echo(&mut s, b"after"), b"\x01after");
}

const CHAT_MANIFEST: &str = r#"
[release]
name = "chat"
version = "1.0.0"

[node]
stop_timeout_ms = 5000

[[module]]
name = "chat"
version = "1"
file = "lib/libchat_v1.so"

[[application]]
name = "chat"
version = "1.0.0"
start = [
  { server = "chat", id = "chat", arg = { addr = "127.0.0.1:0" }, name = "chat" },
]
"#;

/// The `chat_load` client (bench) against a node started with the chat release (issue
/// 13's gap 5): a bounded run on loopback, many connections publishing sequence-numbered,
/// checksummed frames; nothing is lost, duplicated, corrupted or reset.
#[test]
fn chat_load_against_a_started_node_loses_nothing() {
    let load = cargo_build(&["-p", "hotswap-bench", "--bin", "chat_load"]).join("chat_load");
    let rel = Rel::with_manifest("chat", CHAT_MANIFEST);
    let _node = NodeProc::start(&rel);
    let l = listener(&rel);
    assert_eq!(l["label"], "chat", "{l}");
    let addr = l["local"].as_str().unwrap().to_string();
    let mut child = std::process::Command::new(&load)
        .args([
            addr.as_str(),
            "--conns",
            "20",
            "--rate",
            "20",
            "--secs",
            "3",
            "--room-size",
            "4",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run chat_load");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut o = String::new();
        let mut e = String::new();
        let _ = { out }.read_to_string(&mut o);
        let _ = { err }.read_to_string(&mut e);
        let _ = tx.send((o, e));
    });
    let (stdout, stderr) = match rx.recv_timeout(WAIT) {
        Ok(v) => v,
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("chat_load did not finish within {WAIT:?}");
        }
    };
    let status = child.wait().unwrap();
    eprintln!("chat_load: {stdout}");
    assert!(
        status.success(),
        "chat_load reported a loss ({status}):\n{stdout}\n{stderr}"
    );
    for clean in [
        "resets 0 ",
        "gaps 0 ",
        "duplicates 0 ",
        "corrupt 0 ",
        "lost bytes 0 ",
    ] {
        assert!(stdout.contains(clean), "{clean:?} missing:\n{stdout}");
    }
    let count = |word: &str| -> u64 {
        stdout
            .split(word)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {word:?} figure in:\n{stdout}"))
    };
    assert!(count("connections ") >= 20, "{stdout}");
    assert!(count("frames sent ") > 0, "{stdout}");
    assert!(count("echoed ") > 0, "{stdout}");
}

//! `hotswap start` and the control commands against real node processes: each test starts
//! `hotswap start <release-dir>` as a child process, on a release directory of its own
//! built from the workspace's module crates, and talks to it with the real `hotswap`
//! binary (or raw on its socket).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::*;

/// One raw request on the node's socket: the reply (if a whole frame came back).
fn raw(sock: &Path, bytes: &[u8]) -> std::io::Result<Option<Value>> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(WAIT))?;
    s.set_write_timeout(Some(WAIT))?;
    // The node may answer (and close) before reading everything we send: ignore that.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    if out.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
    assert_eq!(out.len(), 4 + len, "a reply frame is exactly its length");
    Ok(Some(
        serde_json::from_slice(&out[4..]).expect("the reply is JSON"),
    ))
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

/// The pids of the two tally servers, in start order.
fn tally_pids(rel: &Rel) -> Vec<String> {
    let (code, st) = rel.json(&["status"]);
    assert_eq!(code, Some(0), "{st}");
    st["applications"][0]["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| p["pid"].as_str().expect("pid").to_string())
        .collect()
}

#[test]
fn cli_ping_pid_stop() {
    let rel = Rel::new("ping");
    let mut node = NodeProc::start(&rel);

    let r = rel.ctl(&["ping"]);
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), "pong\n"), "{r}");
    let (code, v) = rel.json(&["ping"]);
    assert_eq!((code, v), (Some(0), json!("pong")));

    let r = rel.ctl(&["pid"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.stdout.trim(), node.pid.to_string());
    let (_, v) = rel.json(&["pid"]);
    assert_eq!(v["pid"], node.pid);
    let pid_file = std::fs::read_to_string(rel.run().join("node.pid")).expect("pid file");
    assert_eq!(pid_file.trim(), node.pid.to_string());

    // From another working directory, through HOTSWAP_DIR.
    let r = hotswap(
        &["ping".into()],
        &[("HOTSWAP_DIR", rel.root.to_str().unwrap())],
    );
    assert_eq!(r.code, Some(0), "{r}");

    // stop returns only once the OS process is gone, and the node exits 0.
    let r = rel.ctl(&["stop"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout
            .contains(&format!("node stopped (pid {},", node.pid)),
        "{r}"
    );
    let status = node.child.try_wait().expect("try_wait");
    assert!(
        status.is_some(),
        "hotswap stop returned while the node was still running"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", node.stderr());
    assert!(!rel.socket().exists(), "the socket is removed");
    assert!(
        !rel.run().join("node.pid").exists(),
        "the pid file is removed"
    );
    let log = std::fs::read_to_string(rel.root.join("log/node.log")).expect("log file");
    assert!(log.contains("node stopped"), "{log}");
    assert!(log.contains("application tally exited: stopped"), "{log}");

    let r = rel.ctl(&["ping"]);
    assert_eq!(r.code, Some(3), "{r}");
    assert!(r.stderr.contains("node is not running"), "{r}");
}

#[test]
fn cli_load_purge_and_which() {
    // The purges below kill the tally processes: as temporary children they are not
    // restarted (permanent ones would be, and killing them twice within the intensity
    // period would terminate the node, as in OTP).
    let manifest = DEFAULT_MANIFEST.replace("\" },", "\", restart = \"temporary\" },");
    assert_eq!(manifest.matches("restart = \"temporary\"").count(), 2);
    let rel = Rel::with_manifest("load", &manifest);
    let _node = NodeProc::start(&rel);
    let servers = tally_pids(&rel);
    assert_eq!(servers.len(), 2);

    // Load v2: v1 becomes old code, still run by both servers.
    let v2 = rel.lib("demo_v2");
    let (code, v) = rel.json(&["load", v2.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["name"], "demo");
    assert_eq!(v["current"]["version"], "2");
    assert_eq!(v["old"]["version"], "1");
    assert_eq!(strs(&v["old"]["processes"]), servers);

    let (code, w) = rel.json(&["which", "demo"]);
    assert_eq!(code, Some(0), "{w}");
    assert_eq!(strs(&w["old"]), servers);
    assert_eq!(strs(&w["current"]), Vec::<String>::new());
    assert_eq!(
        (&w["old_version"], &w["current_version"]),
        (&json!("1"), &json!("2"))
    );
    let r = rel.ctl(&["which", "demo"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout
            .contains(&format!("old code (1) is run by {}", servers.join(", "))),
        "{r}"
    );

    // The processes say what they run.
    let (_, ps) = rel.json(&["processes"]);
    for p in ps.as_array().unwrap() {
        if servers.contains(&p["pid"].as_str().unwrap().to_string()) {
            assert_eq!(
                (&p["module"], &p["version"], &p["old_code"]),
                (&json!("demo"), &json!("1"), &json!(true)),
                "{p}"
            );
        }
    }

    // Refusals name the processes holding old code.
    let r = rel.ctl(&["soft-purge", "demo"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("still run by"), "{r}");
    for p in &servers {
        assert!(r.stderr.contains(p.as_str()), "{r}");
    }
    let (code, e) = rel.json(&["load", v2.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(e["error"]["kind"], "not_purged", "{e}");
    assert_eq!(strs(&e["error"]["details"]["processes"]), servers);
    assert!(
        e["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("hotswap purge demo"),
        "{e}"
    );

    // purge kills them and frees v1.
    let (code, p) = rel.json(&["purge", "demo"]);
    assert_eq!(code, Some(0), "{p}");
    assert_eq!(p["version"], "1");
    assert_eq!(strs(&p["killed"]), servers);
    assert_eq!(p["pinned"], Value::Null, "{p}");
    let (_, w) = rel.json(&["which", "demo"]);
    assert_eq!(strs(&w["old"]), Vec::<String>::new());
    assert_eq!(w["old_version"], Value::Null);
    let (_, ms) = rel.json(&["modules"]);
    let demo = &ms.as_array().unwrap()[0];
    assert_eq!(
        (&demo["current"]["version"], &demo["old"]),
        (&json!("2"), &Value::Null)
    );
    let r = rel.ctl(&["soft-purge", "demo"]);
    assert_eq!(r.code, Some(0), "nothing old is left: {r}");

    // A purging load of the same file: v2 (new instance) replaces v2.
    let (code, v) = rel.json(&["load", "--purging", v2.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{v}");
    let r = rel.ctl(&["load", v2.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "old code exists again: {r}");
    let r = rel.ctl(&["purge", "demo"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("purged demo 2"), "{r}");

    // delete: the current version becomes old.
    let r = rel.ctl(&["delete", "demo"]);
    assert_eq!(r.code, Some(0), "{r}");
    let (_, ms) = rel.json(&["modules"]);
    let demo = &ms.as_array().unwrap()[0];
    assert_eq!(
        (&demo["current"], &demo["old"]["version"]),
        (&Value::Null, &json!("2"))
    );
    // Nothing current is left to delete; a load now is refused until the old code goes.
    let r = rel.ctl(&["delete", "demo"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("`demo` is not loaded"), "{r}");
    let (code, e) = rel.json(&["load", v2.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{e}");
    assert_eq!(e["error"]["kind"], "not_purged", "{e}");

    // Unknown modules and files: named, with what to do.
    for cmd in ["purge", "soft-purge", "which", "delete"] {
        let (code, e) = rel.json(&[cmd, "nosuch"]);
        assert_eq!(code, Some(1), "{cmd}: {e}");
        assert_eq!(e["error"]["kind"], "not_loaded", "{cmd}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`nosuch` is not loaded"),
            "{cmd}: {e}"
        );
    }
    let missing = rel.root.join("lib/libnothere.so");
    let r = rel.ctl(&["load", missing.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("no such module file") && r.stderr.contains("libnothere.so"),
        "{r}"
    );
    let not_a_lib = rel.root.join("releases/1.0.0/release.toml");
    let r = rel.ctl(&["load", not_a_lib.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("not a shared library"), "{r}");
    // A relative path is the client's, not the node's.
    let r = hotswap(
        &[
            "load".into(),
            "lib/libdemo_v1.so".into(),
            "-d".into(),
            ".".into(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(3), "no node in the test's directory: {r}");
    let mut c = Command::new(bin());
    c.current_dir(&rel.root)
        .args(["purge", "demo"])
        .env_remove("HOTSWAP_DIR");
    assert_eq!(output(c).code, Some(0));
    let mut c = Command::new(bin());
    c.current_dir(&rel.root)
        .args(["load", "lib/libdemo_v1.so"])
        .env_remove("HOTSWAP_DIR");
    let r = output(c);
    assert_eq!(
        r.code,
        Some(0),
        "a path relative to the client's directory: {r}"
    );
}

#[test]
fn cli_status_and_processes_json_is_valid() {
    let rel = Rel::new("status");
    let node = NodeProc::start(&rel);

    let (code, st) = rel.json(&["status"]);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["release"], json!({ "name": "test", "version": "1.0.0" }));
    assert_eq!(st["node_pid"], node.pid);
    assert!(st["uptime_ms"].is_u64(), "{st}");
    assert!(
        st["started_at_ms"].as_u64().unwrap() > 1_600_000_000_000,
        "{st}"
    );
    // The two tally processes, their supervisor and the application master.
    assert_eq!(st["processes"], 4, "{st}");
    assert_eq!(st["modules"], 1, "{st}");
    assert_eq!(st["pinned"], 0, "{st}");
    assert!(
        st["memory"]["rss_bytes"].as_u64().unwrap() > 1 << 20,
        "{st}"
    );
    assert!(
        st["memory"]["processes_bytes"].as_u64().unwrap() > 0,
        "{st}"
    );
    let app = &st["applications"][0];
    assert_eq!(
        (&app["name"], &app["version"]),
        (&json!("tally"), &json!("1.0.0"))
    );
    assert_eq!(app["type"], "permanent", "{st}");
    assert_eq!(app["processes"][0]["name"], "tally-1");
    assert_eq!(
        app["processes"][0]["id"], "tally-1",
        "the id defaults to the name"
    );
    assert_eq!(app["processes"][1]["id"], "demo#2", "{st}");
    assert_eq!(app["processes"][0]["starts"], "spawn demo:start");

    let (code, ps) = rel.json(&["processes"]);
    assert_eq!(code, Some(0), "{ps}");
    let ps = ps.as_array().expect("an array");
    assert_eq!(ps.len(), 4);
    let role = |r: &str| -> Vec<&Value> { ps.iter().filter(|p| p["role"] == r).collect() };
    let (master, sup) = (role("application_master"), role("supervisor"));
    assert_eq!((master.len(), sup.len()), (1, 1), "{ps:?}");
    assert_eq!(master[0]["pid"], app["master"], "{ps:?}");
    assert_eq!(sup[0]["pid"], app["supervisor"], "{ps:?}");
    for p in master.iter().chain(&sup) {
        assert_eq!(p["application"], "tally", "{p}");
        assert_eq!(p["module"], Value::Null, "runs no module code: {p}");
    }
    let ps = role("worker");
    assert_eq!(ps.len(), 2);
    for p in &ps {
        assert!(p["pid"].as_str().unwrap().starts_with('<'), "{p}");
        assert_eq!(p["application"], "tally", "{p}");
        assert_eq!(
            (&p["module"], &p["version"]),
            (&json!("demo"), &json!("1")),
            "{p}"
        );
        assert_eq!(p["old_code"], false, "{p}");
        assert!(p["message_queue_len"].is_u64(), "{p}");
        assert!(p["memory"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["running"][0]["module"], "demo", "{p}");
    }
    assert_eq!(ps[0]["name"], "tally-1");
    assert_eq!(ps[1]["name"], Value::Null);

    let (code, ms) = rel.json(&["modules"]);
    assert_eq!(code, Some(0), "{ms}");
    let demo = &ms[0];
    assert_eq!(demo["name"], "demo");
    assert_eq!(demo["current"]["version"], "1");
    assert_eq!(demo["old"], Value::Null);
    assert_eq!(demo["pinned"], json!([]));
    assert_eq!(strs(&demo["current"]["processes"]).len(), 2);
    assert!(
        demo["current"]["file"].as_str().unwrap().ends_with(".so"),
        "{demo}"
    );

    // The human forms say the same.
    let r = rel.ctl(&["status"]);
    assert!(r.stdout.contains("release      test 1.0.0"), "{r}");
    assert!(r.stdout.contains("application  tally 1.0.0"), "{r}");
    assert!(
        r.stdout
            .contains("application  tally 1.0.0 (permanent, supervisor <"),
        "{r}"
    );
    let r = rel.ctl(&["processes"]);
    assert!(r.stdout.starts_with("PID"), "{r}");
    assert!(
        r.stdout.contains("application master") && r.stdout.contains("supervisor"),
        "{r}"
    );
    assert!(
        r.stdout.contains("tally-1") && r.stdout.contains("demo 1"),
        "{r}"
    );
    let r = rel.ctl(&["modules"]);
    assert!(r.stdout.starts_with("MODULE"), "{r}");
    assert!(r.stdout.contains("demo"), "{r}");
}

#[test]
fn cli_wrong_cookie_refused() {
    let rel = Rel::new("cookie");
    let _node = NodeProc::start(&rel);
    let cookie = rel.cookie();
    assert_eq!(cookie.len(), 64, "32 random bytes in hex");
    assert!(cookie.bytes().all(|b| b.is_ascii_hexdigit()));

    // The last digit changed (to one it is not: a fixed digit would be the right cookie
    // one time in sixteen).
    let last = if cookie.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &cookie[..63]);
    let r = rel.ctl(&["ping", "--cookie", &wrong]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("wrong cookie"), "{r}");
    assert!(
        r.stderr.contains("run/cookie"),
        "says where the right one is: {r}"
    );
    let (code, v) = rel.json(&["stop", "--cookie", "nope"]);
    assert_eq!(code, Some(1));
    assert_eq!(v["error"]["kind"], "wrong_cookie", "{v}");
    let r = hotswap(
        &["pid".into(), "-d".into(), rel.root.display().to_string()],
        &[("HOTSWAP_COOKIE", &wrong)],
    );
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("wrong cookie"), "{r}");

    // Raw: a well-formed stop without the cookie, or with an empty one, does nothing.
    for req in [
        json!({ "cmd": "stop" }),
        json!({ "cookie": "", "cmd": "stop" }),
        json!({ "cookie": cookie.to_uppercase(), "cmd": "stop" }),
    ] {
        let reply = raw(&rel.socket(), &frame(req.to_string().as_bytes()))
            .expect("connect")
            .expect("a reply");
        assert_eq!(reply["ok"], false, "{req} -> {reply}");
    }
    // The right cookie works, and the node is still there.
    let r = rel.ctl(&["ping", "--cookie", &cookie]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = rel.ctl(&["ping"]);
    assert_eq!(r.code, Some(0), "{r}");
}

#[test]
fn cli_socket_is_owner_only() {
    let rel = Rel::new("owner");
    let node = NodeProc::start(&rel);
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&rel.socket()), 0o600, "control socket");
    assert_eq!(mode(&rel.run().join("cookie")), 0o600, "cookie file");
    assert_eq!(mode(&rel.run()), 0o700, "run directory");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(rel.socket())
        .unwrap()
        .file_type()
        .is_socket());

    // Another user is refused, with or without the cookie. (Only root can run a command as
    // another user; elsewhere the modes above are what keep others out.)
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let other = 65534; // nobody
        let copy = std::env::temp_dir().join(format!("hs-owner-bin-{}", std::process::id()));
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = copy.join("hotswap");
        // A hard link, not a copy: a copy's file is open for writing for a moment, and a
        // child that another test forks meanwhile inherits that descriptor until it execs,
        // which makes executing the copy fail with ETXTBSY ("text file busy").
        if std::fs::hard_link(bin(), &exe).is_err() {
            std::fs::copy(bin(), &exe).unwrap();
        }
        let as_other = |extra: &[&str]| {
            let mut c = Command::new(&exe);
            c.args(["ping", "-d"])
                .arg(&rel.root)
                .args(extra)
                .env_remove("HOTSWAP_COOKIE")
                .current_dir(&copy);
            std::os::unix::process::CommandExt::uid(&mut c, other);
            std::os::unix::process::CommandExt::gid(&mut c, other);
            output(c)
        };
        let r = as_other(&[]);
        assert_eq!(r.code, Some(3), "{r}");
        assert!(r.stderr.contains("permission denied"), "{r}");
        let cookie = rel.cookie();
        let r = as_other(&["--cookie", &cookie]);
        assert_eq!(r.code, Some(3), "{r}");
        assert!(r.stderr.contains("permission denied"), "{r}");
        let _ = std::fs::remove_dir_all(&copy);
    }
    drop(node);

    // A cookie file others can read is refused at start.
    let cookie = rel.run().join("cookie");
    std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = NodeProc::try_start(&rel).err().expect("start must fail");
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("chmod 600"), "{r}");
}

#[test]
fn cli_node_not_running_clear_error() {
    // No such directory.
    let r = hotswap(
        &[
            "ping".into(),
            "-d".into(),
            "/nonexistent/hotswap-release".into(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(3), "{r}");
    assert!(r.stderr.contains("node is not running"), "{r}");
    assert!(r.stderr.contains("not a release directory"), "{r}");

    // A release that never ran.
    let rel = Rel::new("notrunning");
    for cmd in ["ping", "stop", "status"] {
        let r = rel.ctl(&[cmd]);
        assert_eq!(r.code, Some(3), "{cmd}: {r}");
        assert!(r.stderr.contains("node is not running"), "{cmd}: {r}");
        assert!(
            r.stderr.contains("hotswap start"),
            "says how to start it: {r}"
        );
    }
    let (code, v) = rel.json(&["ping"]);
    assert_eq!(code, Some(3));
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["kind"], "unreachable", "{v}");

    // A node that died without cleaning up: the stale socket is named, and a new start
    // clears it.
    let mut node = NodeProc::start(&rel);
    signal(node.pid, libc::SIGKILL);
    node.wait_exit(WAIT);
    assert!(rel.socket().exists(), "SIGKILL leaves the socket behind");
    let r = rel.ctl(&["ping"]);
    assert_eq!(r.code, Some(3), "{r}");
    assert!(r.stderr.contains("nothing listens on"), "{r}");
    let node = NodeProc::start(&rel);
    assert_eq!(rel.ctl(&["ping"]).code, Some(0));

    // A second node on the same release is refused while the first runs.
    let r = NodeProc::try_start(&rel)
        .err()
        .expect("second start must fail");
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("already running"), "{r}");
    assert!(r.stderr.contains(&format!("pid {}", node.pid)), "{r}");
    assert_eq!(rel.ctl(&["ping"]).code, Some(0), "the first is unharmed");
    drop(node);

    // Bad releases: each says what is wrong.
    let empty = Rel::new("empty");
    std::fs::remove_dir_all(empty.root.join("releases")).unwrap();
    let r = NodeProc::try_start(&empty).err().expect("must fail");
    assert!(r.stderr.contains("holds no release"), "{r}");
    let cases: &[(&str, &str)] = &[
        (
            "version = \"1\"\nfile = \"lib/libdemo_v1.so\"",
            "version = \"7\"\nfile = \"lib/libdemo_v1.so\"",
        ),
        ("lib/libdemo_v1.so", "lib/libmissing.so"),
        (
            "demo:start\", arg = \"tally-1\"",
            "demo:nosuch\", arg = \"tally-1\"",
        ),
        (
            "demo:start\", arg = \"tally-1\"",
            "nosuchmodule:start\", arg = \"tally-1\"",
        ),
        ("[release]", "[release]\nbogus_key = 1"),
        (
            "spawn = \"demo:start\", arg = \"tally-2\"",
            "server = \"demo\", arg = \"tally-2\"",
        ),
    ];
    let expect = [
        "holds version \"1\", but",
        "lib/libmissing.so not found",
        "exports no function `nosuch`",
        "module \"nosuchmodule\" is not in the release's [[module]] list",
        "bogus_key",
        "is not a gen_server",
    ];
    assert_eq!(cases.len(), expect.len());
    for ((from, to), want) in cases.iter().zip(expect) {
        let manifest = DEFAULT_MANIFEST.replacen(from, to, 1);
        assert_ne!(manifest, DEFAULT_MANIFEST);
        let bad = Rel::with_manifest("bad", &manifest);
        let r = NodeProc::try_start(&bad)
            .err()
            .expect("a bad release must not start");
        assert_eq!(r.code, Some(1), "{r}");
        assert!(r.stderr.contains(want), "want {want:?}\n{r}");
        assert!(!r.stderr.contains("panicked"), "{r}");
        assert!(!bad.socket().exists(), "no socket left behind: {r}");
    }
}

#[test]
fn cli_sigterm_stops_gracefully() {
    let rel = Rel::new("sigterm");
    let mut node = NodeProc::start(&rel);
    assert_eq!(rel.ctl(&["ping"]).code, Some(0));
    signal(node.pid, libc::SIGTERM);
    let code = node.wait_exit(WAIT);
    assert_eq!(code, Some(0), "{}", node.stderr());
    let err = node.stderr();
    assert!(err.contains("SIGTERM received: stopping the node"), "{err}");
    assert!(err.contains("application tally exited: stopped"), "{err}");
    assert!(
        err.contains("node stopped") && err.contains("clean=true"),
        "{err}"
    );
    assert!(!rel.socket().exists(), "the socket is removed");
    assert!(
        !rel.run().join("node.pid").exists(),
        "the pid file is removed"
    );
    let log = std::fs::read_to_string(rel.root.join("log/node.log")).expect("log file");
    assert!(
        log.contains("SIGTERM received"),
        "the log file has it too: {log}"
    );
    let r = rel.ctl(&["ping"]);
    assert_eq!(r.code, Some(3), "{r}");
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Fewer than `max` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
}

#[test]
fn cli_malformed_requests_never_crash_node() {
    let rel = Rel::new("fuzz");
    let node = NodeProc::start(&rel);
    let sock = rel.socket();
    let cookie = rel.cookie();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);

    // A client that connects and sends nothing holds no one up.
    let idle = UnixStream::connect(&sock).expect("connect");
    let mut half = UnixStream::connect(&sock).expect("connect");
    half.write_all(&[0, 0, 0, 50, b'{']).expect("write");

    let commands = [
        "ping",
        "pid",
        "status",
        "processes",
        "modules",
        "load",
        "purge",
        "soft_purge",
        "delete",
        "which",
        "suspend",
        "resume",
        "get_state",
        "change_code",
        "",
        "STOP",
        "stop ",
        "nosuch",
    ];
    let junk = [
        json!(null),
        json!(1),
        json!(-1),
        json!(1.5e300),
        json!("x"),
        json!(""),
        json!([]),
        json!({}),
        json!(true),
        json!("<0.999.0>"),
        json!("/nonexistent.so"),
        json!({ "a": [1, { "b": null }] }),
        json!("x".repeat(5000)),
    ];
    let keys = [
        "path",
        "module",
        "target",
        "old_vsn",
        "extra",
        "purging",
        "timeout_ms",
    ];
    let mut replies = 0;
    let mut errors = 0;
    let n = 3000;
    for i in 0..n {
        let bytes: Vec<u8> = match i % 6 {
            // Random bytes.
            0 => rng.some_bytes(64),
            // A length prefix promising more than is sent.
            1 => {
                let body = rng.some_bytes(32);
                let mut f = ((body.len() + 1 + rng.below(1000)) as u32)
                    .to_be_bytes()
                    .to_vec();
                f.extend_from_slice(&body);
                f
            }
            // Over the size limit.
            2 => {
                let mut f = (0x0010_0001u32 + rng.below(1 << 30) as u32)
                    .to_be_bytes()
                    .to_vec();
                f.extend_from_slice(&rng.bytes(16));
                f
            }
            // A whole frame of random bytes, or of JSON that is not a request.
            3 => {
                let body = if rng.below(2) == 0 {
                    rng.some_bytes(200)
                } else {
                    junk[rng.below(junk.len())].to_string().into_bytes()
                };
                frame(&body)
            }
            // A request with the right cookie, a random command and random arguments (never
            // a well-formed stop: "STOP" and "stop " are not commands).
            4 => {
                let mut args = serde_json::Map::new();
                for _ in 0..rng.below(4) {
                    args.insert(
                        keys[rng.below(keys.len())].into(),
                        junk[rng.below(junk.len())].clone(),
                    );
                }
                let req = json!({ "cookie": cookie, "cmd": commands[rng.below(commands.len())], "args": args });
                frame(req.to_string().as_bytes())
            }
            // A valid request cut short anywhere.
            _ => {
                let req = json!({ "cookie": cookie, "cmd": "status", "args": {} });
                let f = frame(req.to_string().as_bytes());
                f[..rng.below(f.len())].to_vec()
            }
        };
        match raw(&sock, &bytes) {
            Ok(Some(reply)) => {
                replies += 1;
                if reply["ok"] == false {
                    errors += 1;
                    let e = &reply["error"];
                    assert!(
                        e["kind"].is_string()
                            && e["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "an error reply names the error: {reply}"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => panic!(
                "request #{i}: the node stopped accepting connections: {e}\n{}",
                node.stderr()
            ),
        }
    }
    assert!(
        replies > n / 2,
        "most malformed requests get a reply ({replies} of {n})"
    );
    assert!(errors > n / 2, "and they are error replies ({errors})");
    drop((idle, half));

    // The node is unharmed: same process, still answering, its processes still there.
    let r = rel.ctl(&["ping"]);
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), "pong\n"), "{r}");
    let (_, v) = rel.json(&["pid"]);
    assert_eq!(v["pid"], node.pid);
    let (_, st) = rel.json(&["status"]);
    assert_eq!(st["processes"], 4, "{st}");
    let err = node.stderr();
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn cli_background_start_and_stop() {
    let rel = Rel::new("background");
    let r = hotswap(
        &[
            "start".into(),
            rel.root.display().to_string(),
            "--background".into(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.starts_with("node started: release test 1.0.0"),
        "{r}"
    );
    let pid: u32 = std::fs::read_to_string(rel.run().join("node.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert!(r.stdout.contains(&format!("pid {pid}")), "{r}");
    assert_ne!(pid, std::process::id());
    let p = rel.ctl(&["pid"]);
    assert_eq!(p.stdout.trim(), pid.to_string(), "{p}");
    // A second start, in the background or not, is refused.
    let again = hotswap(
        &[
            "start".into(),
            rel.root.display().to_string(),
            "--background".into(),
        ],
        &[],
    );
    assert_eq!(again.code, Some(1), "{again}");
    assert!(again.stderr.contains("already running"), "{again}");
    let r = rel.ctl(&["stop"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true),
        "the background node is gone after stop"
    );
    let log = std::fs::read_to_string(rel.root.join("log/node.log")).expect("log");
    assert!(
        log.contains("node running") && log.contains("node stopped"),
        "{log}"
    );
}

const SERVERS_MANIFEST: &str = r#"
[release]
name = "servers"
version = "1.0.0"

[[module]]
name = "demo"
version = "1"
file = "lib/libdemo_v1.so"

[[module]]
name = "upgrade_srv"
version = "1"
file = "lib/libupgrade_srv_v1.so"

[[application]]
name = "counters"
version = "1.0.0"
start = [
  { server = "upgrade_srv", name = "counter" },
  { server = "upgrade_srv" },
]

[[application]]
name = "plain"
version = "1.0.0"
depends = ["counters"]
start = [{ spawn = "demo:start", arg = "plain", name = "plain" }]
"#;

/// suspend → load → change-code → resume on a gen_server started by the release, by name
/// and by pid, with the state read back at each step; and every refusal on the way.
#[test]
fn cli_sys_suspend_change_code_resume() {
    let rel = Rel::with_manifest("sys", SERVERS_MANIFEST);
    let mut node = NodeProc::start(&rel);
    let (_, st) = rel.json(&["status"]);
    let apps = st["applications"].as_array().expect("applications");
    assert_eq!(apps[0]["name"], "counters", "{st}");
    assert_eq!(apps[1]["name"], "plain", "dependencies first: {st}");
    let other = apps[0]["processes"][1]["pid"]
        .as_str()
        .expect("pid")
        .to_string();
    assert_eq!(apps[0]["processes"][0]["starts"], "gen_server upgrade_srv");

    // The state v1's init made.
    let (code, v) = rel.json(&["get-state", "counter"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["state"],
        json!({ "calls": 0, "migrations": 0, "vsn": "1" }),
        "{v}"
    );
    let r = rel.ctl(&["get-state", &other]);
    assert_eq!(r.code, Some(0), "by pid: {r}");
    assert!(r.stdout.contains("\"vsn\": \"1\""), "{r}");

    // change-code is refused unless suspended; the state is unchanged.
    let (code, e) = rel.json(&["change-code", "counter", "upgrade_srv", "1"]);
    assert_eq!(code, Some(1), "{e}");
    assert_eq!(e["error"]["kind"], "refused", "{e}");
    assert!(
        e["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("hotswap suspend"),
        "{e}"
    );

    // suspend, load v2 while suspended, change-code, then the state is v2's.
    let r = rel.ctl(&["suspend", "counter"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("suspended"), "{r}");
    let r = rel.ctl(&["load", rel.lib("upgrade_srv_v2").to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{r}");
    let (_, ps) = rel.json(&["processes"]);
    let counter = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "counter")
        .expect("the counter in processes")
        .clone();
    assert_eq!(counter["module"], "upgrade_srv", "{counter}");
    assert_eq!(
        counter["version"], "1",
        "its state is still v1's: {counter}"
    );
    assert_eq!(counter["old_code"], true, "{counter}");
    let (code, v) = rel.json(&[
        "change-code",
        "counter",
        "upgrade_srv",
        "1",
        "--extra",
        r#"{"reason": "test"}"#,
    ]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["changed"], true, "{v}");
    let (_, v) = rel.json(&["get-state", "counter"]);
    assert_eq!(
        v["state"],
        json!({ "calls": 0, "migrations": 1, "vsn": "2" }),
        "{v}"
    );
    let r = rel.ctl(&["resume", "counter"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("resumed"), "{r}");
    let (_, v) = rel.json(&["get-state", "counter"]);
    assert_eq!(v["state"]["vsn"], "2", "still v2's after resume: {v}");

    // The same by pid, in its printed form.
    for step in [
        vec!["suspend", other.as_str()],
        vec!["change-code", other.as_str(), "upgrade_srv", "1"],
        vec!["resume", other.as_str()],
    ] {
        let r = rel.ctl(&step);
        assert_eq!(r.code, Some(0), "{step:?}: {r}");
    }
    let (_, v) = rel.json(&["get-state", &other]);
    assert_eq!(
        v["state"],
        json!({ "calls": 0, "migrations": 1, "vsn": "2" }),
        "{v}"
    );
    // No process runs v1 any more, so it can go without killing anything.
    let r = rel.ctl(&["soft-purge", "upgrade_srv"]);
    assert_eq!(r.code, Some(0), "{r}");

    // Refusals say what was wrong.
    for target in ["nosuch", "<0.999.0>", "999"] {
        let (code, e) = rel.json(&["suspend", target]);
        assert_eq!(code, Some(1), "{target}: {e}");
        assert_eq!(e["error"]["kind"], "noproc", "{target}: {e}");
    }
    let r = rel.ctl(&[
        "change-code",
        "counter",
        "upgrade_srv",
        "1",
        "--extra",
        "{not json",
    ]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("--extra") && r.stderr.contains("not JSON"),
        "{r}"
    );
    // A plain process does not speak sys: no answer, and the error says why that may be.
    let (code, e) = rel.json(&["get-state", "plain", "--timeout", "0.5"]);
    assert_eq!(code, Some(1), "{e}");
    assert!(
        e["error"]["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("gen_server"),
        "{e}"
    );

    // Stopping runs the servers' terminate and exits cleanly.
    let r = rel.ctl(&["stop"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(node.wait_exit(WAIT), Some(0));
    let err = node.stderr();
    assert!(err.contains("clean=true"), "{err}");
}

/// `get-state` of a real gen_server whose state holds maps keyed by integers, tuples and
/// enums (nested), a binary and an extension value: every value renders, for scripts
/// (`--json`, keys as strings, labelled binaries and extensions) and for people (keys as
/// they are, in the state's order).
#[test]
fn cli_get_state_renders_non_string_keys() {
    let rel = Rel::with_manifest(
        "keys",
        r#"
[release]
name = "keys"
version = "1.0.0"

[[module]]
name = "keyed_state"
version = "1"
file = "lib/libkeyed_state.so"

[[application]]
name = "keys"
version = "1.0.0"
start = [{ server = "keyed_state", name = "keyed" }]
"#,
    );
    let _node = NodeProc::start(&rel);

    let (code, v) = rel.json(&["get-state", "keyed"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["state"],
        json!({
            "counts": { "0": 10, "2": 30, "10": 100 },
            "pairs": { "[1,\"a\"]": true, "[2,\"b\"]": false },
            "slots": {
                "Free": "free",
                "{\"Taken\":7}": "seven",
                "{\"Pair\":[1,2]}": "pair",
            },
            "nested": { "5": { "[0,-1]": [1, 2], "[3,4]": [] } },
            "blob": { "$binary": "deadbeef" },
            "ext": { "$ext": { "type": 7, "data": "010203" } },
        }),
        "{v}"
    );
    let pid = v["pid"].as_str().expect("pid").to_string();

    // For people: the same state, keys as they are, in the state's order.
    for target in ["keyed", pid.as_str()] {
        let r = rel.ctl(&["get-state", target]);
        assert_eq!(r.code, Some(0), "{target}: {r}");
        assert_eq!(
            r.stdout,
            r#"{
  "counts": {0: 10, 2: 30, 10: 100},
  "pairs": {[1, "a"]: true, [2, "b"]: false},
  "slots": {"Free": "free", {"Taken": 7}: "seven", {"Pair": [1, 2]}: "pair"},
  "nested": {5: {[0, -1]: [1, 2], [3, 4]: []}},
  "blob": <binary 4 bytes: deadbeef>,
  "ext": <ext 7, 3 bytes: 010203>
}
"#,
            "{target}: {r}"
        );
    }

    // A client that asks for a rendering the node does not know is told which there are.
    let cookie = rel.cookie();
    let req = json!({ "cookie": cookie, "cmd": "get_state", "args": { "target": "keyed", "render": "yaml" } });
    let reply = raw(&rel.socket(), &frame(req.to_string().as_bytes()))
        .expect("connect")
        .expect("a reply");
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"json\" or \"text\""),
        "{reply}"
    );
}

/// Raise this test process's open-file limit to at least `n` (the idle-connection tests
/// hold a thousand sockets).
fn raise_open_files(n: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur < n {
        assert!(
            lim.rlim_max >= n,
            "the hard open-file limit {} is below the {n} this test needs",
            lim.rlim_max
        );
        lim.rlim_cur = n;
        // SAFETY: setrlimit reads one rlimit from the struct we pass.
        let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        assert_eq!(r, 0, "setrlimit: {}", std::io::Error::last_os_error());
    }
}

/// Whether `s` has been neither answered nor closed by the node (a read would block).
fn still_waiting(s: &UnixStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    let open = matches!((&*s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).expect("blocking");
    open
}

/// A thousand clients connected to the control socket that send nothing (a stuck script,
/// crashed clients) cost only themselves: `ping` answers while they are all connected,
/// and each is closed by the node after its own read deadline, with an answer saying why.
#[test]
fn control_socket_answers_with_idle_clients_connected() {
    const IDLE: usize = 1000;
    const LIMIT: Duration = Duration::from_secs(8);
    raise_open_files(4096);
    let manifest = DEFAULT_MANIFEST.replace(
        "[node]\n",
        &format!("[node]\ncontrol_read_timeout_ms = {}\n", LIMIT.as_millis()),
    );
    assert_ne!(manifest, DEFAULT_MANIFEST);
    let rel = Rel::with_manifest("idle", &manifest);
    let _node = NodeProc::start(&rel);

    let opened = Instant::now();
    let idle: Vec<UnixStream> = (0..IDLE)
        .map(|i| {
            UnixStream::connect(rel.socket()).unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    let t = Instant::now();
    let r = rel.ctl(&["ping"]);
    let took = t.elapsed();
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.stdout, "pong\n", "{r}");
    eprintln!("ping with {IDLE} idle connections: {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "ping took {took:?} with {IDLE} idle connections"
    );
    // They were all still connected while ping was answered (the node accepts in order,
    // so it had taken every one of them before the ping).
    let waiting = idle.iter().filter(|s| still_waiting(s)).count();
    assert_eq!(
        waiting,
        IDLE,
        "{} idle connections were answered or closed before the read deadline ({:?} after they opened)",
        IDLE - waiting,
        opened.elapsed()
    );

    // Each is closed after its own deadline, not before, with an answer saying why.
    for (i, mut s) in idle.into_iter().enumerate() {
        s.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("connection {i} was not closed within {WAIT:?}: {e}"));
        assert!(
            opened.elapsed() >= LIMIT,
            "connection {i} closed after {:?}, before its deadline",
            opened.elapsed()
        );
        assert!(out.len() > 4, "connection {i}: no answer before the close");
        let v: Value = serde_json::from_slice(&out[4..]).expect("an answer frame");
        assert_eq!(v["ok"], false, "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("not complete within 8s") && msg.contains("control_read_timeout_ms"),
            "{v}"
        );
    }
    assert!(
        opened.elapsed() < LIMIT + WAIT,
        "closing the idle connections took {:?}",
        opened.elapsed()
    );
    let r = rel.ctl(&["ping"]);
    assert_eq!(r.code, Some(0), "{r}");
}

/// With `control_max_connections` open and idle, one more connection closes the one that
/// has waited longest for its request (which is told why), and is served.
#[test]
fn control_socket_closes_the_oldest_idle_connection_when_full() {
    let manifest = DEFAULT_MANIFEST.replace("[node]\n", "[node]\ncontrol_max_connections = 4\n");
    assert_ne!(manifest, DEFAULT_MANIFEST);
    let rel = Rel::with_manifest("full", &manifest);
    let _node = NodeProc::start(&rel);
    let mut idle: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(rel.socket()).expect("connect"))
        .collect();
    let r = rel.ctl(&["ping"]);
    assert_eq!(r.code, Some(0), "{r}");
    let mut oldest = idle.remove(0);
    oldest.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut out = Vec::new();
    oldest.read_to_end(&mut out).expect("closed");
    let v: Value = serde_json::from_slice(&out[4..]).expect("an answer frame");
    assert_eq!(v["error"]["kind"], "busy", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("control_max_connections"),
        "{v}"
    );
    assert!(idle.iter().all(still_waiting), "the newer ones are kept");
}

/// Wait until the application's top supervisor runs `n` children, none of them in
/// `gone`: their pids.
fn wait_restarted(rel: &Rel, app: &str, n: usize, gone: &[String]) -> Vec<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (code, c) = rel.json(&["children", "--app", app]);
        assert_eq!(code, Some(0), "{c}");
        let pids: Vec<String> = c["children"]
            .as_array()
            .expect("children")
            .iter()
            .filter_map(|k| k["pid"].as_str())
            .filter(|p| p.starts_with('<') && !gone.iter().any(|g| g == p))
            .map(str::to_string)
            .collect();
        if pids.len() == n {
            return pids;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the children of {app} were not restarted within {WAIT:?}: {c}"
        );
    }
}

/// A release of three tally servers (module `demo` v1) whose tree allows 10 restarts in
/// 5 s: a purge of `demo` kills the three and each is restarted, which OTP's default
/// intensity (1 in 5 s) would answer by giving up and taking the node down.
const TALLY3: &str = r#"
[release]
name = "tally"
version = "1.0.0"

[node]
stop_timeout_ms = 5000
purge_timeout_ms = 5000

[[module]]
name = "demo"
version = "1"
file = "lib/libdemo_v1.so"

[[application]]
name = "tally"
version = "1.0.0"
intensity = 10
period_secs = 5
start = [
  { spawn = "demo:start", arg = "tally-1", name = "tally-1", restart = "transient" },
  { spawn = "demo:start", arg = "tally-2", name = "tally-2", restart = "transient" },
  { spawn = "demo:start", arg = "tally-3", name = "tally-3", restart = "transient" },
]
"#;

/// `hotswap purge demo` on the release [`TALLY3`] kills the three tally servers, and its
/// answer names them and the supervisor that restarts them; the release's intensity keeps
/// the node up through two purges and a purging load in a row. On a release
/// with OTP's intensity (1 in 5 s) the same answer says that the supervisor gives up, and
/// it does: the node exits 1.
#[test]
fn cli_purge_names_the_killed_and_their_supervisors() {
    let rel = Rel::with_manifest("demo-purge", TALLY3);
    let root = rel.root.clone();
    let mut node = NodeProc::start(&rel);
    let (_, st) = rel.json(&["status"]);
    let sup = st["applications"][0]["supervisor"]
        .as_str()
        .expect("the top supervisor")
        .to_string();
    let servers = tally_pids(&rel);
    assert_eq!(servers.len(), 3, "{st}");
    let v2 = root.join("lib/libdemo_v2.so");

    // For people: the killed, and the supervisor that restarts them, within its intensity.
    let r = rel.ctl(&["load", v2.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = rel.ctl(&["purge", "demo"]);
    assert_eq!(r.code, Some(0), "{r}");
    let ids: Vec<String> = (1..=3)
        .map(|i| format!("tally-{i} ({})", servers[i - 1]))
        .collect();
    assert_eq!(
        r.stdout,
        format!(
            "purged demo 1: killed {}; unmapped\nrestarted by supervisor {sup} (application tally): {}; 3 of at most 10 restarts in 5 s (its intensity)\n",
            servers.join(", "),
            ids.join(", ")
        ),
        "{r}"
    );
    let again = wait_restarted(&rel, "tally", 3, &servers);

    // For scripts, a second purge in a row: the same facts, field by field.
    let r = rel.ctl(&["load", v2.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{r}");
    let (code, p) = rel.json(&["purge", "demo"]);
    assert_eq!(code, Some(0), "{p}");
    let mut killed = strs(&p["killed"]);
    killed.sort();
    let mut want = again.clone();
    want.sort();
    assert_eq!(killed, want, "{p}");
    for k in p["killed_processes"].as_array().expect("killed_processes") {
        let pid = k["pid"].as_str().expect("pid");
        assert!(again.iter().any(|a| a == pid), "{k}");
        assert_eq!(k["supervisor"]["pid"], sup.as_str(), "{k}");
        assert_eq!(k["supervisor"]["application"], "tally", "{k}");
        assert_eq!(k["application"], "tally", "{k}");
        assert_eq!(
            k["id"], k["name"],
            "the demo names each server by its id: {k}"
        );
        assert!(k["id"].as_str().unwrap().starts_with("tally-"), "{k}");
        assert_eq!(k["restart"], "transient", "{k}");
        assert_eq!(k["will_restart"], true, "{k}");
    }
    assert_eq!(
        p["supervisors"],
        json!([{
            "pid": sup, "name": null, "application": "tally", "restarts": 3,
            "strategy": "one_for_one", "intensity": 10, "period_secs": 5,
            "exceeds_intensity": false,
        }]),
        "{p}"
    );
    let third = wait_restarted(&rel, "tally", 3, &[servers.clone(), again.clone()].concat());

    // A purging load kills too, and says so the same way.
    let r = rel.ctl(&["load", v2.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = rel.ctl(&["load", "--purging", v2.to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{r}");
    let first = r.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("purged the old code of demo first: killed <"),
        "{r}"
    );
    for p in &third {
        assert!(first.contains(p.as_str()), "{p}: {r}");
    }
    assert!(
        r.stdout.contains(&format!(
            "\nrestarted by supervisor {sup} (application tally): tally-"
        )) && r
            .stdout
            .contains("; 3 of at most 10 restarts in 5 s (its intensity)\nloaded demo 2"),
        "{r}"
    );
    wait_restarted(&rel, "tally", 3, &[servers.clone(), again, third].concat());
    let r = rel.ctl(&["ping"]);
    assert_eq!(
        r.code,
        Some(0),
        "the node is up after two purges and a purging load: {r}"
    );
    assert!(
        !node.stderr().contains("reached_max_restart_intensity"),
        "{}",
        node.stderr()
    );
    let r = rel.ctl(&["stop"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(node.wait_exit(WAIT), Some(0));

    // OTP's default intensity: two permanent servers killed are one restart too many, and
    // the answer says what follows.
    let rel = Rel::new("purge-gives-up");
    let mut node = NodeProc::start(&rel);
    let (_, st) = rel.json(&["status"]);
    let sup = st["applications"][0]["supervisor"]
        .as_str()
        .unwrap()
        .to_string();
    let r = rel.ctl(&["load", rel.lib("demo_v2").to_str().unwrap()]);
    assert_eq!(r.code, Some(0), "{r}");
    let r = rel.ctl(&["purge", "demo"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains(&format!(
            "restarted by supervisor {sup} (application tally): tally-1 ("
        )) && r.stdout.contains(
            "; 2 restarts are more than its intensity (1 in 5 s) allows: it will give up, stopping its children, and its application terminates (a permanent application takes the node down)\n"
        ),
        "{r}"
    );
    assert_eq!(node.wait_exit(WAIT), Some(1), "{}", node.stderr());
    assert!(
        node.stderr().contains("reached_max_restart_intensity"),
        "{}",
        node.stderr()
    );
}

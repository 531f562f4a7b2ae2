//! `hotswap top` in a real terminal: a tmux pane (its own tmux server, one per test) runs
//! it against a real node started with `hotswap start`; the test types keys with
//! `send-keys` and reads the screen with `capture-pane`.
//!
//! Upgrades are held where the test wants them without any timing (see
//! `modules/common/top_srv.rs`): in the check phase by a server busy in a call (`Hold`,
//! whose state the check waits for) that answers only once a file exists, or inside a
//! `code_change` that waits on a FIFO.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::*;

/// Release 1.0.0: six `top_srv` servers and a TCP listener (`port_echo`).
const V1: &str = r#"
[release]
name = "shop"
version = "1.0.0"

[node]
stop_timeout_ms = 5000

[[module]]
name = "top_srv"
version = "1"
file = "lib/libtop_srv_v1.so"

[[module]]
name = "port_echo"
version = "1"
file = "lib/libport_echo_v1.so"

[[application]]
name = "carts"
version = "1.0.0"
start = [
  { server = "top_srv", id = "cart-1", arg = 1, name = "cart-1" },
  { server = "top_srv", id = "cart-2", arg = 2, name = "cart-2" },
  { server = "top_srv", id = "cart-3", arg = 3, name = "cart-3" },
  { server = "top_srv", id = "cart-4", arg = 4, name = "cart-4" },
  { server = "top_srv", id = "cart-5", arg = 5, name = "cart-5" },
  { server = "top_srv", id = "cart-6", arg = 6, name = "cart-6" },
  { server = "port_echo", id = "echo", arg = { addr = "127.0.0.1:0" }, name = "echo" },
]
"#;

/// A tmux server of its own (`tmux -L`), with one session whose pane runs a command;
/// killed on drop.
struct Pane {
    socket: String,
}

impl Pane {
    /// A `cols` x `rows` pane running `sh -c script`.
    fn start(script: &str, cols: u16, rows: u16) -> Pane {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = Pane {
            socket: format!(
                "hs-top-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        };
        let out = p
            .tmux()
            .args(["new-session", "-d", "-s", "top", "-x"])
            .arg(cols.to_string())
            .arg("-y")
            .arg(rows.to_string())
            .args(["sh", "-c", script])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run tmux ({e}): these tests drive `hotswap top` in a tmux pane; install tmux (.ci/run does)")
            });
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"])
            .env_remove("TMUX")
            .stdin(Stdio::null());
        c
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tmux format of the pane (`#{alternate_on}`, ...).
    fn format(&self, f: &str) -> String {
        let out = self
            .tmux()
            .args(["display-message", "-p", "-t", "top", f])
            .output()
            .expect("tmux display-message");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Type keys (tmux key names: `q`, `Escape`, ...).
    fn keys(&self, keys: &[&str]) {
        let st = self
            .tmux()
            .args(["send-keys", "-t", "top"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }

    /// Read the screen until `done` holds for it (or panic after [`WAIT`], showing the
    /// last screen); that screen.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.screen();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the screen did not show {what} within {WAIT:?}; it shows:\n{s}"
            );
            // The next look at the screen (tmux has no event for a screen change).
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
    }
}

/// `sh` quoting of a path.
fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The pane's script: `hotswap top -d DIR`, then its exit status on the screen, the
/// terminal settings before and after it in files, and a `cat` that keeps the pane open.
fn top_script(rel: &Rel, tmp: &Path) -> String {
    format!(
        "printf 'before top\\n'; stty -g > {before}; {bin} top -d {dir}; echo \"top exited with $?\"; stty -g > {after}; exec cat",
        before = q(&tmp.join("stty.before")),
        after = q(&tmp.join("stty.after")),
        bin = q(&bin()),
        dir = q(&rel.root),
    )
}

/// The row of `module` in the modules box, as words.
fn module_row(screen: &str, module: &str) -> Option<Vec<String>> {
    screen.lines().find_map(|l| {
        let words: Vec<String> = l
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        (words.first().map(String::as_str) == Some(module)).then_some(words)
    })
}

/// Release 2.0.0 (top_srv version 2) next to 1.0.0, once the node runs 1.0.0 (as
/// `unpack` would put it).
fn add_v2(rel: &Rel) {
    let v2 = V1
        .replacen("version = \"1.0.0\"", "version = \"2.0.0\"", 1)
        .replacen(
            "version = \"1\"\nfile = \"lib/libtop_srv_v1.so\"",
            "version = \"2\"\nfile = \"lib/libtop_srv_v2.so\"",
            1,
        );
    assert!(v2.contains("libtop_srv_v2"));
    std::fs::create_dir_all(rel.root.join("releases/2.0.0")).unwrap();
    std::fs::write(rel.root.join("releases/2.0.0/release.toml"), v2).unwrap();
}

fn spawn(args: &[&str]) -> Child {
    Command::new(bin())
        .args(args)
        .env_remove("HOTSWAP_COOKIE")
        .env_remove("HOTSWAP_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hotswap")
}

fn finish(c: Child) -> Run {
    let out = c.wait_with_output().expect("wait");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn top_shows_processes_modules_and_upgrade_progress() {
    let rel = Rel::with_manifest("top", V1);
    let _node = NodeProc::start(&rel);
    add_v2(&rel);
    let dir = rel.root.display().to_string();

    let pane = Pane::start(&top_script(&rel, &rel.root), 100, 40);
    // The processes, the modules with their versions and the processes on each, the port.
    let s = pane.wait_for("the processes and modules of release 1.0.0", |s| {
        s.contains("release shop 1.0.0")
            && (1..=6).all(|i| s.contains(&format!("cart-{i}")))
            && module_row(s, "top_srv").is_some()
    });
    assert_eq!(
        module_row(&s, "top_srv").unwrap(),
        ["top_srv", "v1", "6", "-", "-"],
        "module top_srv: current v1 with its 6 servers, no old version:\n{s}"
    );
    assert_eq!(
        module_row(&s, "port_echo").unwrap(),
        ["port_echo", "v1", "1", "-", "-"],
        "{s}"
    );
    for want in [
        "top_srv v1",
        "echo",
        "tcp_listen",
        "no upgrade in progress",
        "q quit",
    ] {
        assert!(s.contains(want), "want {want:?} on the screen:\n{s}");
    }

    // cart-4 busy in a call until the file `released` exists.
    let released: PathBuf = rel.root.join("released");
    let hold = serde_json::json!({ "Hold": released.display().to_string() }).to_string();
    let call = spawn(&["call", "cart-4", &hold, "--timeout", "600", "-d", &dir]);
    let deadline = Instant::now() + WAIT;
    loop {
        // The call is taken from its mailbox: cart-4 is in it.
        let (code, v) = rel.json(&["top", "--once"]);
        assert_eq!(code, Some(0), "{v}");
        let cart4 = v["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "cart-4")
            .cloned()
            .unwrap_or(Value::Null);
        if cart4["messages_received"].as_u64() >= Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "cart-4 never took the call: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The upgrade waits for cart-4 in its check phase (the check copies every live state,
    // a busy server's when its callback gives it back): five of six checked.
    let upgrade = spawn(&[
        "upgrade",
        "2.0.0",
        "--suspend-timeout-ms",
        "600000",
        "--json",
        "-d",
        &dir,
    ]);
    let s = pane.wait_for("the upgrade in its check phase, 5 of 6 done", |s| {
        s.contains("check 5/6")
    });
    // `TOP_CAPTURE=FILE` keeps this frame: the README's capture is one.
    if let Some(f) = std::env::var_os("TOP_CAPTURE") {
        std::fs::write(f, &s).expect("TOP_CAPTURE file");
    }
    let bar = s
        .lines()
        .find(|l| l.contains("check 5/6"))
        .expect("the bar's line");
    assert!(
        bar.contains('█'),
        "a progress bar, 5/6 filled, labelled with its phase:\n{s}"
    );
    for want in [
        "to release 2.0.0",
        "[check]",
        "suspend",
        "code_change",
        "resume",
    ] {
        assert!(s.contains(want), "want {want:?} on the screen:\n{s}");
    }
    assert_eq!(
        module_row(&s, "top_srv").unwrap(),
        ["top_srv", "v1", "6", "-", "-"],
        "nothing switched yet:\n{s}"
    );

    // Let cart-4 go: the upgrade finishes, and the view shows the new release.
    std::fs::write(&released, b"").unwrap();
    let r = finish(call);
    assert_eq!(r.code, Some(0), "{r}");
    let r = finish(upgrade);
    assert_eq!(r.code, Some(0), "{r}");
    let v: Value = serde_json::from_str(&r.stdout).expect("upgrade --json");
    assert_eq!(v["report"]["servers_migrated"], 6, "{v}");
    let s = pane.wait_for("release 2.0.0 with top_srv v2", |s| {
        s.contains("release shop 2.0.0")
            && s.contains("no upgrade in progress")
            && module_row(s, "top_srv").is_some_and(|r| r[1] == "v2")
    });
    assert_eq!(
        module_row(&s, "top_srv").unwrap(),
        ["top_srv", "v2", "6", "-", "-"],
        "{s}"
    );
    assert!(s.contains("top_srv v2"), "{s}");

    pane.keys(&["q"]);
    pane.wait_for("top's exit", |s| s.contains("top exited with 0"));
}

#[test]
fn top_quits_cleanly() {
    let rel = Rel::with_manifest("top-quit", V1);
    let _node = NodeProc::start(&rel);
    let pane = Pane::start(&top_script(&rel, &rel.root), 100, 30);
    pane.wait_for("the view", |s| s.contains("q quit") && s.contains("cart-6"));
    assert_eq!(
        pane.format("#{alternate_on}"),
        "1",
        "drawn on the alternate screen"
    );

    // The sort keys, each named in the processes box's title.
    for (key, title) in [
        ("p", "sorted by pid)"),
        ("r", "sorted by pid, reversed)"),
        ("l", "sorted by queue length)"),
        ("a", "sorted by activity)"),
        ("m", "sorted by memory)"),
    ] {
        pane.keys(&[key]);
        pane.wait_for(title, |s| s.contains(title));
    }
    let s = pane.wait_for("pids in order", |s| s.contains("sorted by memory)"));
    assert!(s.contains("MEMORY▼"), "{s}");

    pane.keys(&["q"]);
    let s = pane.wait_for("top's exit", |s| s.contains("top exited with"));
    assert!(s.contains("top exited with 0"), "exit status 0:\n{s}");
    assert_eq!(
        pane.format("#{alternate_on}"),
        "0",
        "the alternate screen is left"
    );
    assert_eq!(
        pane.format("#{cursor_flag}"),
        "1",
        "the cursor is shown again"
    );
    assert!(
        s.contains("before top") && !s.contains("q quit"),
        "the screen from before top is back:\n{s}"
    );
    let before = std::fs::read_to_string(rel.root.join("stty.before")).unwrap();
    let deadline = Instant::now() + WAIT;
    let after = loop {
        // Written by the pane's shell right after the exit line.
        match std::fs::read_to_string(rel.root.join("stty.after")) {
            Ok(a) if !a.is_empty() => break a,
            _ => {
                assert!(Instant::now() < deadline, "no stty.after");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(
        before, after,
        "the terminal's settings (raw mode off) are restored"
    );
}

#[test]
fn top_without_a_terminal_refuses_or_prints_one_frame() {
    let rel = Rel::with_manifest("top-once", V1);
    let _node = NodeProc::start(&rel);
    let r = rel.ctl(&["top"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("stdout is not one") && r.stderr.contains("--once"),
        "{r}"
    );
    let r = rel.ctl(&["top", "--once", "--interval", "0"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("--interval"), "{r}");
    let r = rel.ctl(&["top", "--json"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("--once"), "--json needs --once: {r}");
    let r = rel.ctl(&["top", "--once", "--width", "100"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("release shop 1.0.0"), "{r}");
    assert_eq!(
        module_row(&r.stdout, "top_srv").unwrap(),
        ["top_srv", "v1", "6", "-", "-"],
        "{r}"
    );
    assert!(r.stdout.lines().all(|l| l.chars().count() <= 100), "{r}");
    let (code, v) = rel.json(&["top", "--once"]);
    assert_eq!(code, Some(0), "{v}");
    let names: Vec<&str> = v["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for i in 1..=6 {
        assert!(names.contains(&format!("cart-{i}").as_str()), "{v}");
    }
    assert_eq!(v["upgrade"], Value::Null, "{v}");
}

/// The upgrade's progress (`top --once --json`), or null when none runs.
fn progress(rel: &Rel) -> Value {
    let (code, v) = rel.json(&["top", "--once", "--timeout", "5"]);
    assert_eq!(code, Some(0), "the node answers `top` within 5 s: {v}");
    v["upgrade"].clone()
}

/// Open the FIFO for writing once the blocked code_change has it open for reading (it
/// may not have reached its `open` yet); closing it lets that code_change go on.
fn open_gate(fifo: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = Instant::now() + WAIT;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(_) => return,
            // ENXIO: no reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                assert!(Instant::now() < deadline, "no code_change opened {fifo:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open {fifo:?}: {e}"),
        }
    }
}

/// Wait until the upgrade is in `phase`; its progress then.
fn wait_phase(rel: &Rel, phase: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let p = progress(rel);
        if p["phase"] == phase {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "the upgrade never reached {phase}: {p}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn top_follows_an_upgrade_through_a_slow_code_change() {
    let rel = Rel::with_manifest("top-gate", V1);
    let fifo = rel.root.join("gate");
    let path = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path, which lives across the call.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let gate = fifo.display().to_string();
    let _node = NodeProc::start_with_env(&rel, &[("HOTSWAP_TOP_GATE", &gate)]);
    add_v2(&rel);
    let dir = rel.root.display().to_string();
    let upgrade = spawn(&["upgrade", "2.0.0", "--json", "-d", &dir]);

    // Server 4's code_change holds a thread of the node in the check's dry run, then in
    // the switch; the node still answers, and says where the upgrade is.
    for phase in ["check", "code_change"] {
        let p = wait_phase(&rel, phase);
        assert_eq!(p["to"], "2.0.0", "{p}");
        assert_eq!(p["total"], 6, "{p}");
        assert!(p["done"].as_u64() < Some(6), "server 4 is not done: {p}");
        let r = rel.ctl(&["ping", "--timeout", "5"]);
        assert_eq!(r.code, Some(0), "the node answers during {phase}: {r}");
        open_gate(&fifo);
    }
    let r = finish(upgrade);
    assert_eq!(r.code, Some(0), "{r}");
    let v: Value = serde_json::from_str(&r.stdout).expect("upgrade --json");
    assert_eq!(v["report"]["servers_migrated"], 6, "{v}");
    assert_eq!(progress(&rel), Value::Null);
}

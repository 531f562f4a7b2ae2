//! `hotswap demo` end to end: the real binary, the real module libraries, real TCP
//! clients, checked through its `--json` step records; and its release directory replayed
//! by hand with `hotswap start`, `demo-client`, `upgrade`, `ports` and `status`.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one run of the binary may take before the test gives up (the demo takes 3-5 s).
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hotswap"))
}

/// `target/<profile>`: where the binary is, and where cargo puts the module libraries.
fn profile_dir() -> PathBuf {
    bin()
        .parent()
        .expect("the binary has a directory")
        .to_path_buf()
}

/// The demo's module crates.
const CRATES: [&str; 3] = ["chat_v1", "chat_v2", "chat_v3"];

/// Build the chat modules into the binary's directory (once per test binary).
fn modules_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = profile_dir();
            let target = dir.parent().expect("target dir");
            let mut c = Command::new(option_env!("CARGO").unwrap_or("cargo"));
            c.current_dir(env!("CARGO_MANIFEST_DIR"));
            c.arg("build").arg("--target-dir").arg(target);
            for k in CRATES {
                c.args(["-p", k]);
            }
            match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => {}
                Some(profile) => {
                    c.args(["--profile", profile]);
                }
            }
            let out = c
                .output()
                .unwrap_or_else(|e| panic!("cannot run cargo to build the demo modules: {e}"));
            assert!(
                out.status.success(),
                "building {CRATES:?} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for krate in CRATES {
                let f = dir.join(format!(
                    "{}{krate}{}",
                    std::env::consts::DLL_PREFIX,
                    std::env::consts::DLL_SUFFIX
                ));
                assert!(f.is_file(), "{} was not built", f.display());
            }
            dir
        })
        .clone()
}

/// What a run of the binary produced.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `hotswap args...`, killing it if it outlives [`RUN_LIMIT`].
fn hotswap(args: &[&str]) -> Run {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the hotswap binary");
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for hotswap") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "hotswap {args:?} did not finish within {RUN_LIMIT:?}; stdout so far:\n{}",
                out.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn records(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON record ({e}): {l}"))
        })
        .collect()
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// The whole story, checked through its records: release 1.0.0 boots, 120 TCP clients
/// stream, 2.0.0 is installed, 3.0.0 is refused with every state intact, 1.0.0 and 2.0.0
/// again; nothing dropped, lost or duplicated, every state consistent, old code unmapped.
#[test]
fn demo_upgrade_rollback_downgrade_loses_nothing() {
    let dir = modules_dir();
    let run = hotswap(&[
        "demo",
        "--json",
        "--modules-dir",
        dir.to_str().expect("utf-8 path"),
    ]);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(0), "the demo failed\n{ctx}");
    assert!(!run.stderr.contains("panicked"), "{ctx}");
    let recs = records(&run.stdout);
    for r in &recs {
        assert!(
            r["t"].is_number() && r["step"].is_string() && r["msg"].is_string(),
            "malformed record {r}"
        );
    }
    let steps: Vec<&str> = recs
        .iter()
        .map(|r| r["step"].as_str().unwrap_or_default())
        .collect();
    let find = |from: usize, step: &str, pred: &dyn Fn(&Value) -> bool| -> usize {
        (from..recs.len())
            .find(|&i| steps[i] == step && pred(&recs[i]))
            .unwrap_or_else(|| panic!("no {step:?} record (matching) after record {from}\n{ctx}"))
    };

    // The story, in order.
    let i = find(0, "booted", &|r| {
        r["release"] == "chat" && r["version"] == "1.0.0" && r["module_version"] == "1"
    });
    assert_eq!(
        recs[i]["releases"],
        serde_json::json!(["1.0.0", "2.0.0", "3.0.0"]),
        "{ctx}"
    );
    assert_eq!(recs[i]["listen"].as_array().map(Vec::len), Some(3), "{ctx}");
    let i = find(i, "clients", &|r| r["connections"] == 120);
    let i = find(i, "plan", &|r| r["to"] == "2.0.0");
    assert_eq!(recs[i]["plan"]["direction"], "Up", "{}", recs[i]);
    let i = find(i, "upgraded", &|r| r["to"] == "2.0.0");
    assert_eq!(u(&recs[i], "servers_migrated"), 3, "{}", recs[i]);
    assert!(
        recs[i]["pause_ms"].is_number(),
        "the pause is measured: {}",
        recs[i]
    );
    let i = find(i, "plan", &|r| r["to"] == "3.0.0");
    let i = find(i, "refused", &|r| r["to"] == "3.0.0");
    assert!(
        recs[i]["refused"] == true || recs[i]["rolled_back"] == true,
        "{}",
        recs[i]
    );
    assert!(
        recs[i]["error"]
            .as_str()
            .is_some_and(|e| e.contains("chat-3") && e.contains("room")),
        "the refusal names the server and why: {}",
        recs[i]
    );
    let i = find(i, "intact", &|r| {
        r["module_intact"] == true && r["states_consistent"] == true
    });
    let i = find(i, "upgraded", &|r| {
        r["to"] == "1.0.0" && r["direction"] == "Down"
    });
    let i = find(i, "upgraded", &|r| {
        r["to"] == "2.0.0" && r["from"] == "1.0.0"
    });
    find(i, "stopped", &|_| true);

    // The final record.
    let result = recs.last().expect("records");
    assert_eq!(result["step"], "result", "{ctx}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(
        result["failures"].as_array().map(Vec::len),
        Some(0),
        "{result}"
    );
    assert_eq!(u(result, "connections"), 120, "{result}");
    for key in [
        "dropped",
        "lost",
        "duplicated",
        "skipped",
        "relayed_out_of_order",
        "malformed",
    ] {
        assert_eq!(u(result, key), 0, "{key}: {result}");
    }
    assert!(u(result, "frames_sent") > 0, "{result}");
    assert_eq!(
        u(result, "frames_sent"),
        u(result, "frames_acked"),
        "every frame acknowledged: {result}"
    );
    let by = &result["acked_by_version"];
    assert!(
        u(by, "1") > 0 && u(by, "2") > 0 && by.get("3").is_none(),
        "frames handled by v1 and v2, none by the refused v3: {result}"
    );
    let rb = &result["rollback"];
    assert_eq!(rb["attempted"], "3.0.0", "{result}");
    assert!(
        rb["refused"] == true || rb["rolled_back"] == true,
        "{result}"
    );
    assert_eq!(rb["states_intact"], true, "{result}");
    assert_eq!(result["downgrade_done"], true, "{result}");
    assert_eq!(result["reupgrade_done"], true, "{result}");
    let ups = result["upgrades"].as_array().expect("upgrades");
    let path: Vec<(&str, &str)> = ups
        .iter()
        .map(|u| {
            (
                u["to"].as_str().unwrap_or(""),
                u["direction"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        path,
        [("2.0.0", "Up"), ("1.0.0", "Down"), ("2.0.0", "Up")],
        "{result}"
    );
    assert_eq!(result["states_consistent"], true, "{result}");
    let servers = result["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 3, "{result}");
    for s in servers {
        assert_eq!(s["consistent"], true, "{s}");
        assert_eq!(u(s, "published"), u(s, "acked"), "{s}");
        assert_eq!(u(s, "connections"), 40, "{s}");
        assert_eq!(s["member_records"], true, "the 2.0.0 state shape: {s}");
    }
    assert_eq!(result["old_versions_unmapped"], true, "{result}");
    assert_eq!(
        result["replaced_versions"].as_array().map(Vec::len),
        Some(3),
        "{result}"
    );
    if cfg!(target_os = "linux") {
        assert_eq!(
            result["mapped"].as_array().map(Vec::len),
            Some(1),
            "only the running version mapped: {result}"
        );
    }
    assert_eq!(result["node_stopped_clean"], true, "{result}");
}

/// Missing module libraries: exit 2, naming the files and the cargo command that builds them.
#[test]
fn demo_without_modules_says_what_to_build() {
    let empty = std::env::temp_dir().join(format!("hotswap-cli-test-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let run = hotswap(&["demo", "--modules-dir", empty.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_dir_all(&empty);
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(
        CRATES
            .iter()
            .all(|k| run.stderr.contains(&format!("lib{k}"))),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("cargo build --release -p chat_v1 -p chat_v2 -p chat_v3"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);

    let missing = Path::new("/nonexistent/hotswap-modules");
    let run = hotswap(&[
        "demo",
        "--json",
        "--modules-dir",
        missing.to_str().expect("utf-8"),
    ]);
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    let last = records(&run.stdout).pop().expect("an error record");
    assert_eq!(last["step"], "error");
    assert_eq!(last["exit_code"], 2);
    assert!(
        last["msg"]
            .as_str()
            .is_some_and(|m| m.contains("no such directory")),
        "{last}"
    );
}

/// `--help`, `--version`, and bad arguments give clap's answers, not panics.
#[test]
fn help_version_and_bad_arguments() {
    let run = hotswap(&["--help"]);
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("demo"), "{}", run.stdout);
    let run = hotswap(&["--version"]);
    assert_eq!(run.code, Some(0));
    assert_eq!(
        run.stdout.trim(),
        format!("hotswap {}", env!("CARGO_PKG_VERSION"))
    );
    for bad in [
        &["demo", "--bogus"][..],
        &["frobnicate"][..],
        &["demo", "--modules-dir"][..],
    ] {
        let run = hotswap(bad);
        assert_eq!(run.code, Some(2), "{bad:?}: {}", run.stderr);
        assert!(run.stderr.contains("error"), "{bad:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{bad:?}: {}", run.stderr);
    }
}

/// The JSON document `hotswap <args> -d <rel> --json` prints, and its exit code.
fn ctl_json(rel: &support::Rel, args: &[&str]) -> (Option<i32>, Value) {
    rel.json(args)
}

/// `--release-dir` writes the three releases and a replay script; a node started from it
/// with `hotswap start` serves the demo's clients (`hotswap demo-client`) while it is
/// upgraded, refused, downgraded and upgraded again with `hotswap upgrade`, as `ports` and
/// `status` show.
#[test]
fn demo_release_dir_replays_by_hand() {
    let dir = modules_dir();
    let root = std::env::temp_dir().join(format!("hotswap-demo-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let rel = support::Rel { root: root.clone() };
    let run = hotswap(&[
        "demo",
        "--modules-dir",
        dir.to_str().expect("utf-8 path"),
        "--release-dir",
        root.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    for f in [
        "releases/1.0.0/release.toml",
        "releases/2.0.0/release.toml",
        "releases/3.0.0/release.toml",
        "lib/libchat_v1.so",
        "lib/libchat_v2.so",
        "lib/libchat_v3.so",
        "replay.sh",
    ] {
        assert!(root.join(f).is_file(), "{f} is written");
    }
    let script = std::fs::read_to_string(root.join("replay.sh")).expect("replay.sh");
    for cmd in [
        "start",
        "demo-client",
        "upgrade 2.0.0",
        "upgrade 3.0.0",
        "upgrade 1.0.0",
        "ports",
        "stop",
    ] {
        assert!(script.contains(cmd), "replay.sh runs {cmd}:\n{script}");
    }
    assert!(
        run.stdout.contains("hotswap top"),
        "the replay mentions top: {}",
        run.stdout
    );
    // A second write into the same directory is refused: nothing is overwritten.
    let again = hotswap(&[
        "demo",
        "--modules-dir",
        dir.to_str().expect("utf-8 path"),
        "--release-dir",
        root.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(again.code, Some(2), "{}", again.stderr);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);

    let mut node = support::NodeProc::start(&rel);
    let (code, ports) = ctl_json(&rel, &["ports"]);
    assert_eq!(code, Some(0), "{ports}");
    let listeners = ports
        .as_array()
        .expect("ports")
        .iter()
        .filter(|p| p["type"] == "tcp_listen")
        .count();
    assert_eq!(listeners, 3, "{ports}");

    // The clients, for the whole replay: 10 connections per server.
    let client = Command::new(bin())
        .args([
            "demo-client",
            "--json",
            "--conns",
            "10",
            "--secs",
            "8",
            "-d",
        ])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hotswap demo-client");

    let (code, v) = ctl_json(&rel, &["upgrade", "2.0.0"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["report"]["servers_migrated"], 3, "{v}");
    let (code, st) = ctl_json(&rel, &["get-state", "chat-1"]);
    assert_eq!(code, Some(0), "{st}");
    assert!(
        st["state"]["rooms"].is_object() && st["state"]["published"].is_u64(),
        "{st}"
    );
    let (code, v) = ctl_json(&rel, &["upgrade", "3.0.0"]);
    assert_eq!(code, Some(1), "3.0.0 is refused: {v}");
    assert!(
        v["error"]["kind"] == "refused" || v["error"]["kind"] == "rolled_back",
        "{v}"
    );
    let (_, st) = ctl_json(&rel, &["status"]);
    assert_eq!(st["release"]["version"], "2.0.0", "{st}");
    let (code, v) = ctl_json(&rel, &["upgrade", "1.0.0"]);
    assert_eq!(code, Some(0), "{v}");
    let (code, v) = ctl_json(&rel, &["upgrade", "2.0.0"]);
    assert_eq!(code, Some(0), "{v}");
    let (code, st) = ctl_json(&rel, &["status"]);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["release"]["version"], "2.0.0", "{st}");

    // The same three listeners; the client's connections, owned by the servers.
    let (_, ports) = ctl_json(&rel, &["ports"]);
    let ports = ports.as_array().expect("ports");
    assert_eq!(
        ports.iter().filter(|p| p["type"] == "tcp_listen").count(),
        3,
        "{ports:?}"
    );

    let out = client.wait_with_output().expect("wait for demo-client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "demo-client: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(text.trim()).expect("demo-client --json");
    let t = &report["totals"];
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(u(t, "connections"), 30, "{report}");
    assert!(u(t, "sent") > 0, "{report}");
    for key in [
        "dropped",
        "lost",
        "duplicated",
        "gaps",
        "foreign_errors",
        "corrupt",
    ] {
        assert_eq!(u(t, key), 0, "{key}: {report}");
    }

    let stop = hotswap(&["stop", "-d", root.to_str().expect("utf-8 path")]);
    assert_eq!(stop.code, Some(0), "{}", stop.stderr);
    assert_eq!(node.wait_exit(support::WAIT), Some(0));
}

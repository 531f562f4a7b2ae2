//! `hotswap demo` end to end: the real binary, the real module libraries, checked through
//! its `--json` step records.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one run of the binary may take before the test gives up (the demo takes ~3 s).
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

/// Build `demo_v1` and `demo_v2` into the binary's directory (once per test binary).
fn modules_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = profile_dir();
            let target = dir.parent().expect("target dir");
            let mut c = Command::new(option_env!("CARGO").unwrap_or("cargo"));
            c.current_dir(env!("CARGO_MANIFEST_DIR"));
            c.args(["build", "-p", "demo_v1", "-p", "demo_v2", "--target-dir"])
                .arg(target);
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
                "building demo_v1 and demo_v2 failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for krate in ["demo_v1", "demo_v2"] {
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

/// The whole story, checked through its records: v1 serves, v2 loads while v1 keeps running
/// the servers, CodeSwitch moves them with their state, soft_purge frees v1, and every
/// request got exactly one correct reply.
#[test]
fn demo_runs_and_loses_nothing() {
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

    // The story, in order.
    let find = |from: usize, step: &str, pred: &dyn Fn(&Value) -> bool| -> usize {
        (from..recs.len())
            .find(|&i| steps[i] == step && pred(&recs[i]))
            .unwrap_or_else(|| panic!("no {step:?} record (matching) after record {from}\n{ctx}"))
    };
    // Booted from the embedded release, version 1.0.0, with 2.0.0 beside it.
    let i = find(0, "release", &|r| {
        r["release"] == "tally" && r["version"] == "1.0.0"
    });
    assert_eq!(
        recs[i]["versions"],
        serde_json::json!(["1.0.0", "2.0.0"]),
        "{ctx}"
    );
    let i = find(i, "loaded", &|r| r["version"] == "1");
    let spawned: Vec<&Value> = recs.iter().filter(|r| r["step"] == "spawned").collect();
    assert_eq!(spawned.len(), 3, "{ctx}");
    let servers: Vec<String> = spawned
        .iter()
        .map(|r| r["pid"].as_str().expect("pid").to_string())
        .collect();
    let i = find(i, "loaded", &|r| {
        r["version"] == "2" && r["old_version"] == "1"
    });
    let i = find(i, "which", &|r| {
        r["current"].as_array().is_some_and(|a| a.is_empty())
    });
    let old: Vec<&str> = recs[i]["old"]
        .as_array()
        .expect("old")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        old, servers,
        "after loading v2 every server runs old code\n{ctx}"
    );
    for p in recs[i]["processes"].as_array().expect("processes") {
        assert_eq!(p["check_process_code"], true, "{p}");
        assert_eq!(p["running"][0][1], "1", "{p}");
    }
    let i = find(i, "soft_purge", &|r| r["purged"] == false);
    let i = find(i, "code_switch", &|_| true);
    for pid in &servers {
        find(i, "switched", &|r| {
            r["pid"] == pid.as_str() && r["version"] == "2" && r["running"][0][1] == "2"
        });
    }
    let i = find(i, "which", &|r| {
        r["old"].as_array().is_some_and(|a| a.is_empty())
    });
    let current: Vec<&str> = recs[i]["current"]
        .as_array()
        .expect("current")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        current, servers,
        "after CodeSwitch every server runs v2\n{ctx}"
    );
    let i = find(i, "soft_purge", &|r| r["purged"] == true);
    let purge = &recs[i];
    assert_eq!(purge["old_version_freed"], true, "{purge}");
    assert_eq!(purge["old_slot_empty"], true, "{purge}");
    assert_eq!(purge["pinned"].as_array().map(Vec::len), Some(0), "{purge}");
    assert_ne!(purge["mapped_after"], true, "v1 is still mapped: {purge}");
    find(i, "node_stopped", &|r| {
        r["stuck"].as_array().is_some_and(|a| a.is_empty())
    });

    // The final record: nothing lost.
    let result = recs.last().expect("records");
    assert_eq!(result["step"], "result", "{ctx}");
    assert_eq!(result["ok"], true, "{result}");
    assert!(u(result, "sent") > 0, "{result}");
    assert_eq!(
        u(result, "sent"),
        u(result, "replied"),
        "every request got a reply: {result}"
    );
    for key in [
        "lost",
        "duplicates",
        "wrong_totals",
        "unexpected_messages",
        "unexpected_exits",
        "pinned",
    ] {
        assert_eq!(u(result, key), 0, "{key}: {result}");
    }
    assert!(
        u(result, "replies_v1") > 0 && u(result, "replies_v2") > 0,
        "served by both versions: {result}"
    );
    assert!(
        u(result, "replies_v1_since_v2_loaded") > 0,
        "old code served after v2 was loaded: {result}"
    );
    assert_eq!(
        u(result, "replies_v1") + u(result, "replies_v2"),
        u(result, "replied"),
        "{result}"
    );
    assert_eq!(result["state_carried"], true, "{result}");
    assert_eq!(result["old_version_freed"], true, "{result}");
    assert_eq!(result["node_stopped_clean"], true, "{result}");
    assert_eq!(
        result["failures"].as_array().map(Vec::len),
        Some(0),
        "{result}"
    );
    let per_server = result["servers"].as_array().expect("servers");
    assert_eq!(per_server.len(), 3);
    for s in per_server {
        assert_eq!(s["version"], "2", "{s}");
        assert_eq!(
            u(s, "total"),
            u(s, "expected_total"),
            "the total carried across the upgrade: {s}"
        );
        assert_eq!(u(s, "count"), u(s, "sent"), "{s}");
        assert_eq!(u(s, "sent"), u(s, "replied"), "{s}");
        assert_eq!(
            u(s, "since_upgrade"),
            u(s, "replies_v2"),
            "the new v2 field counted from the switch: {s}"
        );
        assert_eq!(
            u(s, "count"),
            u(s, "replies_v1") + u(s, "replies_v2"),
            "{s}"
        );
    }
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
        run.stderr.contains("libdemo_v1") && run.stderr.contains("libdemo_v2"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("cargo build --release -p demo_v1 -p demo_v2"),
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

/// `--release-dir` keeps the demo release, and it is a release `hotswap start` runs.
#[test]
fn demo_release_dir_is_kept_and_starts() {
    let dir = modules_dir();
    let rel = std::env::temp_dir().join(format!("hotswap-demo-keep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&rel);
    let run = hotswap(&[
        "demo",
        "--modules-dir",
        dir.to_str().expect("utf-8 path"),
        "--release-dir",
        rel.to_str().expect("utf-8 path"),
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
        "releases/current",
        "lib/libdemo_v1.so",
        "lib/libdemo_v2.so",
    ] {
        assert!(rel.join(f).is_file(), "{f} is kept");
    }

    let mut node = Command::new(bin())
        .arg("start")
        .arg(&rel)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hotswap start");
    let mut first = String::new();
    let mut out = std::io::BufReader::new(node.stdout.take().expect("stdout"));
    std::io::BufRead::read_line(&mut out, &mut first).expect("read the ready line");
    assert!(
        first.starts_with("node started: release tally 1.0.0"),
        "{first}"
    );
    let status = hotswap(&["status", "--json", "-d", rel.to_str().unwrap()]);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let v: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    // The three tally servers, their supervisor and the application master.
    assert_eq!(v["processes"], 5, "{v}");
    assert_eq!(
        v["applications"][0]["processes"].as_array().map(Vec::len),
        Some(3),
        "{v}"
    );
    let stop = hotswap(&["stop", "-d", rel.to_str().unwrap()]);
    assert_eq!(stop.code, Some(0), "{}", stop.stderr);
    assert!(node.wait().expect("wait").success());
    let _ = std::fs::remove_dir_all(&rel);
}

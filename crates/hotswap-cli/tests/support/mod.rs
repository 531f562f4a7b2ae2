//! What the CLI test binaries share: the module crates they build, release directories,
//! runs of the `hotswap` binary, and nodes started with `hotswap start`.

#![allow(dead_code, reason = "each test binary uses its own part of it")]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long anything that should be prompt may take (debug builds on a busy 2-core CI).
pub const WAIT: Duration = Duration::from_secs(60);

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hotswap"))
}

pub fn lib_name(krate: &str) -> String {
    format!(
        "{}{krate}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The module crates the tests use, built once per test binary into the binary's
/// directory (target/<profile>).
pub const MODULES: &[&str] = &[
    "demo_v1",
    "demo_v2",
    "upgrade_srv_v1",
    "upgrade_srv_v2",
    "app_worker",
    "rel_srv_v1",
    "rel_srv_v2",
    "port_echo_v1",
    "count_server_v1",
    "count_server_v4",
    "count_server_v5",
    "uncovered_state",
    "keyed_state",
    "top_srv_v1",
    "top_srv_v2",
    "chat_v1",
];

/// `cargo build <args>` into this test binary's target directory and profile; the
/// directory the artifacts land in (target/<profile>).
pub fn cargo_build(args: &[&str]) -> PathBuf {
    let dir = bin().parent().expect("binary dir").to_path_buf();
    let target = dir.parent().expect("target dir");
    let mut c = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.arg("build").arg("--target-dir").arg(target);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            c.args(["--profile", profile]);
        }
    }
    c.args(args);
    let out = c.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

pub fn modules_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let args: Vec<&str> = MODULES.iter().flat_map(|m| ["-p", m]).collect();
            cargo_build(&args)
        })
        .clone()
}

/// A release directory in a fresh temp directory, removed on drop.
pub struct Rel {
    /// The directory.
    pub root: PathBuf,
}

impl Drop for Rel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Rel {
    /// A release `test 1.0.0` with module `demo` v1 and an application `tally` of two
    /// tally servers (one registered as `tally-1`), plus `manifest_extra` appended.
    pub fn new(tag: &str) -> Rel {
        Rel::with_manifest(tag, DEFAULT_MANIFEST)
    }

    pub fn with_manifest(tag: &str, manifest: &str) -> Rel {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "hs-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("releases/1.0.0")).unwrap();
        std::fs::create_dir_all(root.join("lib")).unwrap();
        let m = modules_dir();
        for k in MODULES {
            std::fs::copy(m.join(lib_name(k)), root.join("lib").join(lib_name(k)))
                .unwrap_or_else(|e| panic!("copy {k}: {e}"));
        }
        std::fs::write(root.join("releases/1.0.0/release.toml"), manifest).unwrap();
        Rel { root }
    }

    pub fn lib(&self, krate: &str) -> PathBuf {
        self.root.join("lib").join(lib_name(krate))
    }

    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.run().join("control.sock")
    }

    pub fn cookie(&self) -> String {
        std::fs::read_to_string(self.run().join("cookie"))
            .expect("cookie")
            .trim()
            .to_string()
    }

    /// `hotswap <args> -d <root>`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.push("-d".into());
        a.push(self.root.display().to_string());
        hotswap(&a, &[])
    }

    /// `hotswap <args> -d <root> --json`, which must print JSON.
    pub fn json(&self, args: &[&str]) -> (Option<i32>, Value) {
        let mut a = args.to_vec();
        a.push("--json");
        let r = self.ctl(&a);
        let v = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("{args:?} --json printed no JSON ({e}):\n{r}"));
        (r.code, v)
    }
}

/// Write `manifest` as release `vsn` of the release directory `root`
/// (`releases/<vsn>/release.toml`).
pub fn write_manifest(root: &Path, vsn: &str, manifest: &str) {
    let d = root.join("releases").join(vsn);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("release.toml"), manifest).unwrap();
}

/// The set-up of the release-upgrade tests: a release directory (`tag`) whose release
/// 1.0.0 is `manifest`, a node started on it (which makes 1.0.0 permanent), then the
/// `later` releases `(version, manifest)` put beside it, as `hotswap unpack` would.
pub fn release_node(tag: &str, manifest: &str, later: &[(&str, String)]) -> (Rel, NodeProc) {
    let rel = Rel::with_manifest(tag, manifest);
    let node = NodeProc::start(&rel);
    for (vsn, text) in later {
        write_manifest(&rel.root, vsn, text);
    }
    (rel, node)
}

pub const DEFAULT_MANIFEST: &str = r#"
[release]
name = "test"
version = "1.0.0"

[node]
stop_timeout_ms = 5000
log_level = "info"

[[module]]
name = "demo"
version = "1"
file = "lib/libdemo_v1.so"

[[application]]
name = "tally"
version = "1.0.0"
start = [
  { spawn = "demo:start", arg = "tally-1", name = "tally-1" },
  { spawn = "demo:start", arg = "tally-2" },
]
"#;

/// What a run of the binary produced.
pub struct Run {
    /// Its exit code.
    pub code: Option<i32>,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn output(mut c: Command) -> Run {
    let out = c
        .stdin(Stdio::null())
        .output()
        .expect("run the hotswap binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn hotswap(args: &[String], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(bin());
    c.args(args)
        .env_remove("HOTSWAP_COOKIE")
        .env_remove("HOTSWAP_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    output(c)
}

/// What a node printed on stderr so far, and whether the stream has ended (the node
/// exited), with a condition variable to wait for more.
#[derive(Default)]
struct Stream {
    text: Mutex<(String, bool)>,
    more: Condvar,
}

impl Stream {
    /// Collect `r` until it ends.
    fn collect(r: impl Read + Send + 'static) -> Arc<Stream> {
        let s = Arc::new(Stream::default());
        let sink = s.clone();
        std::thread::spawn(move || {
            let mut r = r;
            let mut buf = [0u8; 4096];
            loop {
                let n = r.read(&mut buf).unwrap_or(0);
                let mut g = sink.text.lock().unwrap();
                if n == 0 {
                    g.1 = true;
                } else {
                    g.0.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                sink.more.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        s
    }

    /// Wait up to `limit` until `done(text, ended)`; whether it happened.
    fn wait(&self, limit: Duration, mut done: impl FnMut(&str, bool) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut g = self.text.lock().unwrap();
        loop {
            if done(&g.0, g.1) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self.more.wait_timeout(g, left).unwrap().0;
        }
    }
}

/// A node started with `hotswap start`, killed on drop if still running.
pub struct NodeProc {
    /// The `hotswap start` process.
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    stderr: Arc<Stream>,
}

impl NodeProc {
    /// Start a node on `rel` and wait for its ready line.
    pub fn start(rel: &Rel) -> NodeProc {
        NodeProc::try_start(rel).unwrap_or_else(|r| panic!("the node did not start:\n{r}"))
    }

    /// Start a node on `rel` with `env` added to its environment; wait for its ready line.
    pub fn start_with_env(rel: &Rel, env: &[(&str, &str)]) -> NodeProc {
        NodeProc::try_start_with_env(rel, env)
            .unwrap_or_else(|r| panic!("the node did not start:\n{r}"))
    }

    /// Start a node on `rel`: the node once it printed its ready line, or how it failed.
    pub fn try_start(rel: &Rel) -> Result<NodeProc, Run> {
        NodeProc::try_start_with(rel, |_| {})
    }

    /// [`NodeProc::try_start`] with `env` added to the node's environment.
    pub fn try_start_with_env(rel: &Rel, env: &[(&str, &str)]) -> Result<NodeProc, Run> {
        NodeProc::try_start_with(rel, |c| {
            c.envs(env.iter().copied());
        })
    }

    /// Start a node on `rel`, its command first changed by `configure` (e.g. limits set
    /// in the child before it runs, or environment added).
    pub fn try_start_with(
        rel: &Rel,
        configure: impl FnOnce(&mut Command),
    ) -> Result<NodeProc, Run> {
        let mut cmd = Command::new(bin());
        cmd.env_remove("RUST_LOG");
        configure(&mut cmd);
        let mut child = cmd
            .arg("start")
            .arg(&rel.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hotswap start");
        let pid = child.id();
        let stderr = Stream::collect(child.stderr.take().expect("stderr"));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut seen = String::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("node started:") => {
                    assert!(line.contains(&format!("pid {pid}")), "{line}");
                    return Ok(NodeProc { child, pid, stderr });
                }
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(e) => {
                    let timed_out = matches!(e, mpsc::RecvTimeoutError::Timeout);
                    if timed_out {
                        let _ = child.kill();
                    }
                    let status = child.wait().expect("wait");
                    stderr.wait(WAIT, |_, ended| ended);
                    let err = stderr.text.lock().unwrap().0.clone();
                    return Err(Run {
                        code: status.code(),
                        stdout: seen,
                        stderr: if timed_out {
                            format!("(no ready line within {WAIT:?})\n{err}")
                        } else {
                            err
                        },
                    });
                }
            }
        }
    }

    /// Wait for the node to exit (its stderr ends when it does); its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        assert!(
            self.stderr.wait(limit, |_, ended| ended),
            "the node did not exit within {limit:?}; stderr:\n{}",
            self.stderr()
        );
        self.child.wait().expect("wait").code()
    }

    /// Wait up to `limit` until its stderr contains `text`; whether it did.
    pub fn wait_stderr(&self, text: &str, limit: Duration) -> bool {
        self.stderr.wait(limit, |s, _| s.contains(text))
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text.lock().unwrap().0.clone()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send a signal to a process of ours.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

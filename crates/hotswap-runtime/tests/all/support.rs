//! Shared test helpers: fixture modules (built once per test binary), node start-up, and the
//! message types the fixture modules speak.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use hotswap_runtime::{Node, NodeConfig, Pid};

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to show that something does *not* happen.
pub const QUIET: Duration = Duration::from_millis(150);

/// The fixture crates under `modules/` that a plain workspace build produces.
const FIXTURES: &[&str] = &[
    "seed000_v1",
    "seed000_v2",
    "seed002_counter_v1",
    "seed002_counter_v2",
    "misbehave",
    "soak",
    "bad_no_descriptor",
    "bad_abi_mismatch",
    "sync_code_reload_v1",
    "sync_code_reload_v2",
    "count_server_v1",
    "count_server_v2",
    "count_server_v3",
    "count_server_v4",
    "count_server_v5",
    "gs_test_v1",
    "gs_test_v2",
    "upgrade_srv_v1",
    "upgrade_srv_v2",
    "sup_worker",
    "sup_tree",
    "sup_tree_v2",
    "app_worker",
    "rel_srv_v1",
    "rel_srv_v2",
    "spin_v1",
    "spin_v2",
    "dry_run_v1",
    "dry_run_v2",
    "heap_hold",
    "port_echo_v1",
    "port_echo_v2",
    "chat_v1",
    "chat_v2",
];

fn target_dir() -> PathBuf {
    // .../target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn cargo() -> Command {
    let mut c = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {what}: {e}"));
    assert!(
        out.status.success(),
        "building {what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Path of a fixture module library, building all fixtures once.
pub fn module(krate: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut c = cargo();
        c.arg("build").arg("--target-dir").arg(target_dir());
        if profile() == "release" {
            c.arg("--release");
        }
        for f in FIXTURES {
            c.args(["-p", f]);
        }
        run(c, "the fixture modules");
    });
    let p = target_dir().join(profile()).join(format!("lib{krate}.so"));
    assert!(p.exists(), "fixture {} was not built", p.display());
    p
}

/// The `bad_panic_abort` fixture built with `-C panic=abort` (in its own target dir).
pub fn panic_abort_module() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = target_dir().join("panic-abort");
            let mut c = cargo();
            c.args(["rustc", "-p", "bad_panic_abort", "--lib", "--target-dir"])
                .arg(&dir);
            if profile() == "release" {
                c.arg("--release");
            }
            c.args(["--", "-C", "panic=abort"]);
            run(c, "bad_panic_abort with panic=abort");
            dir.join(profile()).join("libbad_panic_abort.so")
        })
        .clone()
}

/// A node with a short purge timeout (tests that need the default make their own).
pub fn node() -> Node {
    node_with(Duration::from_secs(5))
}

/// A node with the given purge timeout.
pub fn node_with(purge_timeout: Duration) -> Node {
    Node::start(NodeConfig {
        code_dir: None,
        purge_timeout,
        ..Default::default()
    })
    .expect("node starts")
}

/// One module of a release: (name, version, fixture crate, depends).
pub type Mod<'a> = (&'a str, &'a str, &'a str, &'a [&'a str]);

/// Write release `vsn` into `root`: each module's library copied to
/// `lib/<crate>/lib<crate>.so`, then the manifest with `rest` (applications, `[upgrade]`).
pub fn write_release(root: &Path, vsn: &str, modules: &[Mod], rest: &str) {
    let mut text = format!("[release]\nname = \"rel\"\nversion = \"{vsn}\"\n\n");
    for (name, version, krate, depends) in modules {
        let rel = format!("lib/{krate}/lib{krate}.so");
        let dst = root.join(&rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        if !dst.exists() {
            std::fs::copy(module(krate), &dst).unwrap();
        }
        let deps: Vec<String> = depends.iter().map(|d| format!("{d:?}")).collect();
        text.push_str(&format!(
            "[[module]]\nname = \"{name}\"\nversion = \"{version}\"\nfile = \"{rel}\"\ndepends = [{}]\n\n",
            deps.join(", ")
        ));
    }
    text.push_str(rest);
    let dir = root.join("releases").join(vsn);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("release.toml"), text).unwrap();
}

/// The set-up of the release tests: a release directory in a fresh temp directory
/// (`tag`) holding `releases` (each `(version, modules, the rest of its manifest)`, see
/// [`write_release`]), and a node booted from the first of them.
pub async fn release_node(tag: &str, releases: &[(&str, &[Mod<'_>], &str)]) -> (TempDir, Node) {
    let d = TempDir::new(tag);
    for (vsn, modules, rest) in releases {
        write_release(&d.0, vsn, modules, rest);
    }
    let node = boot(&d.0, releases[0].0).await;
    (d, node)
}

/// A node booted from release `vsn` of the release directory `root`.
pub async fn boot(root: &Path, vsn: &str) -> Node {
    let node = node();
    let dir = hotswap_runtime::release::ReleaseDir::new(root);
    let r = hotswap_runtime::release::Release::load(&dir, vsn).expect("manifest loads");
    node.releases().boot(&r).await.expect("boots");
    node
}

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory.
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("hotswap-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Mirror of `modules/common/seed000.rs` `Req`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub enum Req {
    /// Reply with a pong.
    Ping(Pid),
    /// Make the fully-qualified call.
    CodeSwitch,
    /// Exit normally.
    Stop,
}

/// Mirror of `modules/common/seed000.rs` `Pong`.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
pub struct Pong {
    /// Version that answered.
    pub version: String,
    /// Its static counter.
    pub pings: u64,
    /// The answering process.
    pub pid: Pid,
}

/// Mirror of `modules/common/counter.rs` `Arg`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct CounterArg {
    /// Report destination.
    pub reporter: Pid,
    /// Tick period.
    pub period_ms: u64,
}

/// Mirror of `modules/common/counter.rs` `Count`.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
pub struct Count {
    /// Counting process.
    pub pid: Pid,
    /// Count after the tick.
    pub n: u64,
    /// Version that counted.
    pub version: String,
}

/// Ping `pid` from `me` and wait for its pong.
pub async fn ping(me: &hotswap_runtime::ExternalProcess, pid: Pid) -> Pong {
    me.send(pid, &Req::Ping(me.pid()));
    let m = me
        .recv_match(WAIT, |m| {
            m.decode::<Pong>().map(|p| p.pid == pid).unwrap_or(false)
        })
        .await
        .unwrap_or_else(|| panic!("no pong from {pid}"));
    m.decode().expect("pong decodes")
}

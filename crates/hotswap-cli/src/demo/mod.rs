//! `hotswap demo`: a networked service upgraded, refused, downgraded and upgraded again as
//! releases, under live TCP traffic, and checked at the end.
//!
//! The embedded release `chat` (see `demo-release/`) has three versions, side by side in one
//! release directory: 1.0.0 runs module `chat` v1 (`modules/chat_v1`), 2.0.0 runs v2 (its
//! state type changed: member records and room records instead of plain ids), 3.0.0 runs v3
//! (whose `code_change` refuses room ids above 255). The demo boots 1.0.0 in this process
//! exactly as `hotswap start` would: an application of three chat servers, each a
//! gen_server owning its TCP listener and every connection (ports are the node's, so they
//! survive code changes). Real TCP clients ([`load`]) connect on 127.0.0.1, join rooms and
//! publish sequence-numbered frames; every frame comes back to each member of the room.
//!
//! While they run, through the release handler (`Node::releases`, what `hotswap upgrade`
//! uses): upgrade to 2.0.0 (plan, check, switch; the pause measured), attempt 3.0.0 (refused
//! by the check: chat-3 holds rooms 301.., every state intact), downgrade to 1.0.0 and
//! upgrade back to 2.0.0. Then it checks: no connection dropped, no frame lost, duplicated
//! or skipped, every server's state equal to what its clients sent, every replaced version
//! unmapped. Exit 0 when all hold, 1 naming what failed, 2 when it cannot start.
//!
//! `--release-dir DIR` writes the three releases and a replay script instead, to play the
//! same story by hand with `hotswap start`, `upgrade`, `ports`, `top` and `demo-client`.

pub mod client;
pub mod load;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hotswap_runtime::release::{Release, ReleaseDir, ReleaseError, UpgradeOptions, UpgradeReport};
use hotswap_runtime::{Node, NodeConfig, Pid};
use serde_json::{json, Value};

use crate::report::Reporter;
use load::{Load, LoadConfig, Totals};

/// Options of `hotswap demo`.
#[derive(Debug)]
pub struct Options {
    /// JSON step records instead of text.
    pub json: bool,
    /// More detail: the plans, each server's state, each upgrade's phases.
    pub verbose: bool,
    /// Where the module libraries are (default: the executable's directory).
    pub modules_dir: Option<PathBuf>,
    /// Write the three releases and a replay script here instead of running the demo.
    pub release_dir: Option<PathBuf>,
}

/// The embedded demo release: one manifest per version.
const RELEASES: [(&str, &str); 3] = [
    ("1.0.0", include_str!("../../demo-release/1.0.0.toml")),
    ("2.0.0", include_str!("../../demo-release/2.0.0.toml")),
    ("3.0.0", include_str!("../../demo-release/3.0.0.toml")),
];
/// The module crates of the three releases, in order.
const CRATES: [&str; 3] = ["chat_v1", "chat_v2", "chat_v3"];
/// The version the demo boots.
const BOOT: &str = "1.0.0";
/// The server names of the release, in order.
const SERVERS: [&str; 3] = ["chat-1", "chat-2", "chat-3"];

/// Client connections per server.
const CONNS_PER_SERVER: usize = 40;
/// Connections per room.
const ROOM_SIZE: usize = 4;
/// Frames per second per connection.
const RATE: f64 = 25.0;
/// Each phase lasts until every connection had this many frames handled by the version
/// the phase is about.
const PHASE_ACKS: u64 = 10;
/// How long to wait for something that should happen promptly.
const WAIT: Duration = Duration::from_secs(10);

/// Why the demo stopped early.
#[derive(Debug)]
struct Fail {
    /// 2: could not start (setup); 1: something went wrong during the run.
    code: u8,
    msg: String,
}

fn setup(msg: impl Into<String>) -> Fail {
    Fail {
        code: 2,
        msg: msg.into(),
    }
}

fn broken(msg: impl Into<String>) -> Fail {
    Fail {
        code: 1,
        msg: msg.into(),
    }
}

/// Run the demo; the process exit code.
pub fn run(opts: Options) -> ExitCode {
    let rep = Reporter::new(opts.json, opts.verbose);
    let files = match locate(opts.modules_dir.as_deref()) {
        Ok(f) => f,
        Err(f) => {
            rep.error(f.code, &f.msg);
            return ExitCode::from(f.code);
        }
    };
    if let Some(dir) = &opts.release_dir {
        return match write_for_replay(&rep, &files, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => {
                rep.error(f.code, &f.msg);
                ExitCode::from(f.code)
            }
        };
    }
    let rt = match hotswap_runtime::sched::tune(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all(),
    )
    .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            rep.error(2, &format!("cannot start the async runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    match rt.block_on(demo(&rep, &files)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            rep.error(f.code, &f.msg);
            ExitCode::from(f.code)
        }
    }
}

/// The three module libraries.
#[derive(Debug)]
struct Files {
    libs: [PathBuf; 3],
    /// The cargo command that builds them into their directory.
    build: String,
}

fn lib_file(dir: &Path, krate: &str) -> PathBuf {
    dir.join(format!(
        "{}{krate}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

/// Find `libchat_v{1,2,3}.so` (cargo builds them next to this executable), or say exactly
/// how to build them.
fn locate(dir: Option<&Path>) -> Result<Files, Fail> {
    let dir = match dir {
        Some(d) => {
            if !d.exists() {
                return Err(setup(format!(
                    "--modules-dir {}: no such directory",
                    d.display()
                )));
            }
            if !d.is_dir() {
                return Err(setup(format!(
                    "--modules-dir {}: not a directory",
                    d.display()
                )));
            }
            d.to_path_buf()
        }
        None => {
            let exe = std::env::current_exe().map_err(|e| {
                setup(format!(
                    "cannot find this executable's directory ({e}); pass --modules-dir DIR"
                ))
            })?;
            exe.parent().map(Path::to_path_buf).ok_or_else(|| {
                setup("cannot find this executable's directory; pass --modules-dir DIR")
            })?
        }
    };
    let release = if dir.file_name().is_some_and(|n| n == "debug") {
        ""
    } else {
        " --release"
    };
    let build = format!("cargo build{release} -p chat_v1 -p chat_v2 -p chat_v3");
    let files = Files {
        libs: CRATES.map(|k| lib_file(&dir, k)),
        build,
    };
    let missing: Vec<String> = files
        .libs
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Ok(files);
    }
    Err(setup(format!(
        "the demo module library {} not found: {}\n  build the demo modules with:  {}\n  \
         (or everything:  cargo build --workspace{release}), then run the demo again;\n  \
         or pass --modules-dir DIR naming the directory that holds the libraries (target/debug or target/release)",
        if missing.len() == 1 { "is" } else { "files are" },
        missing.join(", "),
        files.build,
    )))
}

/// Write the three releases (manifests, `releases/current`, the libraries in `lib/`) into
/// `root`, which must not exist or be empty.
fn write_release(files: &Files, root: &Path) -> Result<ReleaseDir, Fail> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        setup(format!(
            "cannot write the demo release: {what} {}: {e}",
            p.display()
        ))
    };
    if root.exists() {
        if !root.is_dir() {
            return Err(setup(format!(
                "{} exists and is not a directory: give a new or empty directory",
                root.display()
            )));
        }
        let mut entries = std::fs::read_dir(root).map_err(|e| io("read", root, e))?;
        if entries.next().is_some() {
            return Err(setup(format!(
                "{} is not empty: give a new or empty directory (the demo never overwrites files)",
                root.display()
            )));
        }
    }
    let dir = ReleaseDir::new(root);
    for (vsn, manifest) in RELEASES {
        let m = dir.manifest(vsn);
        let parent = m.parent().expect("releases/<vsn>");
        std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        std::fs::write(&m, manifest).map_err(|e| io("write", &m, e))?;
    }
    let current = dir.releases().join("current");
    std::fs::write(&current, format!("{BOOT}\n")).map_err(|e| io("write", &current, e))?;
    let lib = dir.root().join("lib");
    std::fs::create_dir_all(&lib).map_err(|e| io("create", &lib, e))?;
    for f in &files.libs {
        let to = lib.join(f.file_name().expect("a library file name"));
        std::fs::copy(f, &to).map_err(|e| io("copy to", &to, e))?;
    }
    Ok(dir)
}

/// The replay script `--release-dir` writes: the demo's story, step by step, by hand.
fn replay_script(exe: &Path, dir: &Path) -> String {
    let hs = shell_quote(&exe.display().to_string());
    let d = shell_quote(&dir.display().to_string());
    format!(
        r#"#!/bin/sh
# The story of `hotswap demo`, by hand: run this script, or type its commands one by one.
# (Written by `hotswap demo --release-dir`.)
set -e
HS={hs}
DIR={d}

# 1. Boot release 1.0.0: three chat servers (module chat v1), each on a free port.
$HS start "$DIR" --background
$HS ports -d "$DIR"                 # the three listeners (tcp_listen), owned by chat-1..3

# 2. The clients: 40 connections per server, each publishing 25 numbered frames/s, for 20 s
#    (it finds the listeners with `hotswap ports`; its report comes at the end).
$HS demo-client -d "$DIR" --secs 20 &
CLIENT=$!
sleep 2

# 3. Upgrade to 2.0.0 (the state type changes): the plan first, then the upgrade.
$HS upgrade 2.0.0 --plan -d "$DIR"
$HS upgrade 2.0.0 -d "$DIR"
$HS get-state chat-1 -d "$DIR" | head -20   # member records now: {{"room": .., "frames": ..}}
sleep 2

# 4. 3.0.0's code_change fails on chat-3 (room ids above 255): refused, nothing touched.
$HS upgrade 3.0.0 -d "$DIR" || echo "refused, as expected"
sleep 2

# 5. Downgrade to 1.0.0, then upgrade back to 2.0.0.
$HS upgrade 1.0.0 -d "$DIR"
sleep 2
$HS upgrade 2.0.0 -d "$DIR"
$HS status -d "$DIR"
$HS ports -d "$DIR" | head -8       # the same listeners, every connection still open
# A live view while you do this, from another terminal (q quits):  $HS top -d "$DIR"

# 6. The clients' report: 0 dropped, 0 lost, 0 duplicated. Then stop the node.
wait $CLIENT
$HS stop -d "$DIR"
"#
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `--release-dir DIR`: write the releases and the replay script, and say how to replay.
fn write_for_replay(rep: &Reporter, files: &Files, root: &Path) -> Result<(), Fail> {
    let dir = write_release(files, root)?;
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hotswap"));
    let script = dir.root().join("replay.sh");
    std::fs::write(&script, replay_script(&exe, dir.root()))
        .map_err(|e| setup(format!("cannot write {}: {e}", script.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755));
    }
    let d = dir.root().display();
    rep.step(
        "written",
        format!("wrote the demo releases 1.0.0, 2.0.0 and 3.0.0 of `chat` to {d}"),
        json!({
            "dir": dir.root(), "versions": dir.versions(), "script": script,
            "libraries": CRATES.map(|k| format!("lib/{}", lib_file(Path::new(""), k).display())),
            "client": format!("hotswap demo-client -d {d}"),
        }),
    );
    for line in [
        format!("replay the story by hand (or run {}):", script.display()),
        format!("  hotswap start {d} --background"),
        format!(
            "  hotswap demo-client -d {d} --secs 20 &     # 120 TCP clients, report at the end"
        ),
        format!("  hotswap upgrade 2.0.0 --plan -d {d}; hotswap upgrade 2.0.0 -d {d}"),
        format!(
            "  hotswap upgrade 3.0.0 -d {d}               # refused: chat-3's state cannot convert"
        ),
        format!("  hotswap upgrade 1.0.0 -d {d}; hotswap upgrade 2.0.0 -d {d}"),
        format!("  hotswap ports -d {d}; hotswap status -d {d}; hotswap top -d {d}"),
        format!("  hotswap stop -d {d}"),
    ] {
        rep.note(line);
    }
    Ok(())
}

async fn demo(rep: &Reporter, files: &Files) -> Result<(), Fail> {
    let root = std::env::temp_dir().join(format!("hotswap-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = write_release(files, &root)?;
    let r = run_release(rep, files, &dir).await;
    let _ = std::fs::remove_dir_all(dir.root());
    r
}

/// Each chat version that was current, in order: (release, module version, instance,
/// the mapped copy of its library).
type Versions = Vec<(String, String, u64, PathBuf)>;

/// What the run found, for the final record.
#[derive(Debug, Default)]
struct Outcome {
    failures: Vec<String>,
    fields: serde_json::Map<String, Value>,
}

impl Outcome {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) -> bool {
        if !ok {
            self.failures.push(what());
        }
        ok
    }
}

async fn run_release(rep: &Reporter, files: &Files, dir: &ReleaseDir) -> Result<(), Fail> {
    let started = Instant::now();
    let release = Release::load(dir, BOOT)
        .map_err(|e| setup(format!("the embedded demo release does not check: {e}")))?;
    let node = Node::start(NodeConfig {
        code_dir: None,
        purge_timeout: Duration::from_millis(release.manifest.node.purge_timeout_ms),
        ..Default::default()
    })
    .map_err(|e| setup(format!("cannot start a node: {e}")))?;
    let mut out = Outcome::default();
    let r = scenario(rep, &node, &release, files, &mut out).await;
    let stop = node.shutdown(WAIT).await.stop;
    r?;
    let pinned_at_stop: Vec<String> = stop
        .purges
        .iter()
        .filter_map(|p| {
            p.pinned
                .as_ref()
                .map(|r| format!("{} {}: {r}", p.module, p.version.as_deref().unwrap_or("?")))
        })
        .collect();
    let stop_ok = stop.stuck.is_empty() && pinned_at_stop.is_empty();
    out.check(stop_ok, || {
        format!(
            "node stop: stuck processes {:?}, pinned versions {pinned_at_stop:?}",
            stop.stuck
        )
    });
    rep.detail(format!(
        "stopped the node: {}",
        if stop_ok {
            "every module version unmapped".to_string()
        } else {
            format!("stuck {:?}, pinned {pinned_at_stop:?}", stop.stuck)
        }
    ));
    out.fields
        .insert("node_stopped_clean".into(), json!(stop_ok));
    let elapsed = started.elapsed().as_secs_f64();
    let ok = out.failures.is_empty();
    out.fields.insert("ok".into(), json!(ok));
    out.fields.insert("failures".into(), json!(out.failures));
    out.fields.insert(
        "elapsed_s".into(),
        json!((elapsed * 1000.0).round() / 1000.0),
    );
    let msg = if ok {
        format!("OK in {elapsed:.1} s: upgraded, refused, downgraded and upgraded again under live traffic; nothing dropped, lost or duplicated, every state consistent, old code freed")
    } else {
        format!("FAILED: {}", out.failures.join("; "))
    };
    rep.step("result", msg, Value::Object(out.fields));
    if ok {
        Ok(())
    } else {
        Err(Fail {
            code: 1,
            msg: format!("the demo's checks failed: {}", out.failures.join("; ")),
        })
    }
}

/// The pids of the three chat servers, in order.
fn server_pids(node: &Node) -> Result<Vec<Pid>, Fail> {
    SERVERS
        .iter()
        .map(|n| {
            node.whereis(n)
                .ok_or_else(|| broken(format!("chat server {n} is not running")))
        })
        .collect()
}

/// The current version of module chat: (version, instance, mapped file).
fn current_chat(node: &Node) -> Result<(String, u64, PathBuf), Fail> {
    let v = node
        .code()
        .module("chat")
        .and_then(|m| m.current)
        .ok_or_else(|| broken("module chat has no current version"))?;
    Ok((v.version, v.instance, v.file))
}

fn upgrade_fields(r: &UpgradeReport) -> Value {
    json!({
        "from": r.from, "to": r.to, "direction": r.direction,
        "servers_migrated": r.servers_migrated, "pause_ms": round(r.pause_ms), "check_ms": round(r.check_ms),
        "total_ms": round(r.total_ms), "phases": r.phases, "warnings": r.warnings,
    })
}

fn round(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

/// Run one upgrade (or downgrade) through the release handler, printing its plan (in
/// verbose mode), its check and its pause.
async fn upgrade(
    rep: &Reporter,
    node: &Node,
    to: &str,
    what: &str,
) -> Result<UpgradeReport, ReleaseError> {
    let plan = node.releases().plan(to).await?;
    let migrate: Vec<String> = plan
        .modules
        .iter()
        .filter(|m| m.from_version != m.to_version)
        .map(|m| {
            format!(
                "module {} {} -> {} ({} servers migrate their state with code_change)",
                m.name,
                m.from_version.as_deref().unwrap_or("-"),
                m.to_version.as_deref().unwrap_or("-"),
                m.servers.len()
            )
        })
        .collect();
    rep.step(
        "plan",
        format!(
            "plan {} -> {to}: {}, {} steps",
            plan.from,
            migrate.join("; "),
            plan.steps.len()
        ),
        json!({ "from": plan.from, "to": to, "plan": plan }),
    );
    for l in plan.to_string().lines() {
        rep.detail(format!("  {l}"));
    }
    let r = node
        .releases()
        .upgrade(to, UpgradeOptions::default())
        .await?;
    rep.step(
        "upgraded",
        format!(
            "{what} {to}: check passed ({} servers' code_change tried on copies of their states, {:.1} ms); switched with the servers paused {:.1} ms; {:.0} ms in all",
            r.servers_migrated,
            r.check_ms,
            r.pause_ms,
            r.total_ms
        ),
        upgrade_fields(&r),
    );
    for (phase, ms) in &r.phases {
        rep.detail(format!("  {phase:<14} {ms:>8.2} ms"));
    }
    Ok(r)
}

async fn wait_phase(load: &Load, vsn: u8, base: &[u64], what: &str) -> Result<(), Fail> {
    load.wait_acks(vsn, base, PHASE_ACKS, WAIT)
        .await
        .map_err(|short| {
            broken(format!(
                "{what}: {short} connection(s) did not get {PHASE_ACKS} frames handled by chat v{vsn} within {WAIT:?}"
            ))
        })
}

fn traffic_line(rep: &Reporter, load: &Load, what: &str) {
    let sent = load.total(|l| l.sent.load(Ordering::Relaxed));
    let acked = load.total(|l| l.acked.load(Ordering::Relaxed));
    let by: Vec<String> = (1..=3u8)
        .map(|v| (v, load.total(|l| l.from(v))))
        .filter(|(_, n)| *n > 0)
        .map(|(v, n)| format!("v{v} {n}"))
        .collect();
    rep.step(
        "traffic",
        format!(
            "{what}: {acked} of {sent} frames acknowledged so far (handled by {}), {} connections failed",
            by.join(", "),
            load.failed()
        ),
        json!({ "sent": sent, "acked": acked, "failed": load.failed(), "phase": what }),
    );
}

async fn scenario(
    rep: &Reporter,
    node: &Node,
    release: &Release,
    files: &Files,
    out: &mut Outcome,
) -> Result<(), Fail> {
    let conns = SERVERS.len() * CONNS_PER_SERVER;
    rep.step(
        "start",
        format!("hotswap demo: a chat service upgraded as releases under {conns} live TCP connections"),
        json!({ "servers": SERVERS.len(), "connections": conns, "rate_per_connection": RATE, "room_size": ROOM_SIZE, "guard_active": hotswap_runtime::guard_active() }),
    );
    if !hotswap_runtime::guard_active() {
        rep.note("warning: this executable does not export the thread-local guard: old code cannot be unmapped");
    }
    // 1. Boot 1.0.0.
    node.releases().boot(release).await.map_err(|e| {
        setup(format!(
            "cannot boot the demo release: {e}\n  rebuild the demo modules:  {}",
            files.build
        ))
    })?;
    let pids = server_pids(node)?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let ports = node.ports();
    for (name, pid) in SERVERS.iter().zip(&pids) {
        let l = ports
            .iter()
            .find(|p| p.owner == Some(*pid) && p.kind == "tcp_listen")
            .ok_or_else(|| broken(format!("{name} has no listener")))?;
        addrs.push(
            l.local
                .parse()
                .map_err(|e| broken(format!("{name} listens on {:?}: {e}", l.local)))?,
        );
    }
    let mut versions: Versions = Vec::new();
    let (v, inst, file) = current_chat(node)?;
    versions.push((BOOT.into(), v.clone(), inst, file));
    let listen: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    rep.step(
        "booted",
        format!(
            "booted release chat {BOOT}: servers {} run module chat v{v}, listening on {}",
            SERVERS.join(", "),
            listen.join(", ")
        ),
        json!({ "release": "chat", "version": BOOT, "releases": release.dir.versions(), "servers": SERVERS, "pids": pids.iter().map(|p| p.to_string()).collect::<Vec<_>>(), "listen": listen, "module_version": v }),
    );

    // 2. The clients.
    let cfg = LoadConfig {
        servers: addrs.clone(),
        conns_per_server: CONNS_PER_SERVER,
        room_size: ROOM_SIZE,
        rate: RATE,
    };
    let mut load = Load::start(&cfg).await.map_err(broken)?;
    rep.step(
        "clients",
        format!(
            "{conns} TCP clients connected ({CONNS_PER_SERVER} per server, rooms of {ROOM_SIZE}); each publishes {RATE} numbered frames/s, and every frame comes back to each member of its room"
        ),
        json!({ "connections": conns }),
    );
    rep.note(
        "chat-3's rooms are numbered 301 and up; chat v3 (release 3.0.0) accepts only 0..=255",
    );
    wait_phase(&load, 1, &vec![0; conns], "on 1.0.0").await?;
    traffic_line(rep, &load, "on 1.0.0");

    // 3. Upgrade to 2.0.0.
    let mut upgrades = Vec::new();
    let base = load.acks_from(2);
    let r = upgrade(rep, node, "2.0.0", "upgraded to")
        .await
        .map_err(|e| broken(format!("the upgrade to 2.0.0 failed: {e}")))?;
    upgrades.push(upgrade_fields(&r));
    rep.note("2.0.0's state type differs: a member is a record {room, frames} (was a room id), a");
    rep.note(
        "room is {members, published} (was a list); code_change converted each suspended server",
    );
    let (v, inst, file) = current_chat(node)?;
    versions.push(("2.0.0".into(), v, inst, file));
    wait_phase(&load, 2, &base, "on 2.0.0").await?;
    traffic_line(rep, &load, "on 2.0.0");

    // 4. Attempt 3.0.0: refused (or rolled back), states intact, clients unaffected.
    let before = current_chat(node)?;
    let base = load.acks_from(2);
    let attempt = upgrade(rep, node, "3.0.0", "upgraded to").await;
    let (refused, rolled_back, mut error) = match &attempt {
        Ok(_) => (false, false, String::new()),
        Err(ReleaseError::Refused { failed, .. }) => (true, false, failed.clone()),
        Err(ReleaseError::RolledBack { failed, phase, .. }) => {
            (false, true, format!("{failed} (phase {phase})"))
        }
        Err(e) => (false, false, e.to_string()),
    };
    for (pid, name) in pids.iter().zip(SERVERS) {
        let p = pid.to_string();
        error = error.replace(&p, &format!("{p} ({name})"));
    }
    if attempt.is_ok() {
        return Err(broken("release 3.0.0 was accepted, but chat-3's state cannot convert to chat v3: the check missed a failing code_change"));
    }
    rep.step(
        "refused",
        format!(
            "upgrade to 3.0.0 {}: {error}",
            if refused {
                "refused by the check, nothing touched"
            } else if rolled_back {
                "rolled back"
            } else {
                "FAILED otherwise"
            }
        ),
        json!({ "to": "3.0.0", "refused": refused, "rolled_back": rolled_back, "error": error }),
    );
    out.check(refused || rolled_back, || {
        format!("the upgrade to 3.0.0 failed in an unexpected way: {error}")
    });
    let after = current_chat(node)?;
    let module_intact =
        node.code().module("chat").is_some_and(|m| m.old.is_none()) && after == before;
    let held = load.hold(WAIT).await;
    let states = check_states(node, &load, &pids).await;
    load.release();
    rep.step(
        "intact",
        format!(
            "after the refusal: chat v{} (instance {}) still current{}; every server's state {}",
            after.0,
            after.1,
            if module_intact { "" } else { "  <-- CHANGED" },
            if states.ok { "matches what its clients sent (published counts, members, rooms, frames per member)".to_string() } else { format!("does NOT match what its clients sent: {}", states.problems.join("; ")) }
        ),
        json!({ "module_intact": module_intact, "drained": held.is_ok(), "states_consistent": states.ok, "servers": states.servers }),
    );
    if let Err(n) = held {
        out.failures.push(format!(
            "after the refusal, {n} connection(s) still waited for acknowledgements"
        ));
    }
    out.check(module_intact, || {
        format!("after the refused upgrade module chat changed: {before:?} -> {after:?}")
    });
    out.check(states.ok, || {
        format!("after the refused upgrade: {}", states.problems.join("; "))
    });
    wait_phase(&load, 2, &base, "after the refusal").await?;
    // Every connection had frames handled by v2 since: every server still runs it.
    let v3_frames = load.total(|l| l.from(3));
    let intact = module_intact && v3_frames == 0 && held.is_ok() && states.ok;
    out.check(v3_frames == 0, || {
        format!("{v3_frames} frames were handled by chat v3, which was refused")
    });
    traffic_line(rep, &load, "still on 2.0.0, clients unaffected");
    out.fields.insert(
        "rollback".into(),
        json!({ "attempted": "3.0.0", "refused": refused, "rolled_back": rolled_back, "error": error, "states_intact": intact }),
    );

    // 5. Downgrade to 1.0.0, then upgrade back to 2.0.0.
    let base = load.acks_from(1);
    let r = upgrade(rep, node, "1.0.0", "downgraded to")
        .await
        .map_err(|e| broken(format!("the downgrade to 1.0.0 failed: {e}")))?;
    upgrades.push(upgrade_fields(&r));
    rep.note("the same transaction backwards: v2 handed its state back in v1's shape (frames per member dropped)");
    let (v, inst, file) = current_chat(node)?;
    versions.push(("1.0.0".into(), v, inst, file));
    wait_phase(&load, 1, &base, "on 1.0.0 again").await?;
    traffic_line(rep, &load, "on 1.0.0 again");
    let base = load.acks_from(2);
    let r = upgrade(rep, node, "2.0.0", "upgraded again to")
        .await
        .map_err(|e| broken(format!("the second upgrade to 2.0.0 failed: {e}")))?;
    upgrades.push(upgrade_fields(&r));
    let (v, inst, file) = current_chat(node)?;
    versions.push(("2.0.0".into(), v, inst, file));
    wait_phase(&load, 2, &base, "on 2.0.0 again").await?;
    out.fields.insert("downgrade_done".into(), json!(true));
    out.fields.insert("reupgrade_done".into(), json!(true));
    out.fields.insert("upgrades".into(), Value::Array(upgrades));

    // 6. Stop the clients (connections stay open), check every state, then close.
    let drained = load.stop(WAIT).await;
    let states = check_states(node, &load, &pids).await;
    let reports = load.finish().await;
    let t = Totals::of(&reports);
    rep.step(
        "stopped",
        format!("stopped the clients: {}", t.describe()),
        json!({ "totals": t }),
    );
    for r in reports.iter().filter(|r| {
        r.error.is_some() || r.lost + r.gaps + r.duplicates + r.foreign_errors + r.corrupt > 0
    }) {
        rep.detail(format!(
            "  client {} (server {}, room {}): {r:?}",
            r.client,
            r.server + 1,
            r.room
        ));
    }
    if let Err(n) = drained {
        out.failures.push(format!(
            "{n} connection(s) still waited for acknowledgements at the end"
        ));
    }
    let frames_ok = out.check(t.clean(), || {
        format!(
            "clients: {} dropped, {} lost, {} duplicated, {} skipped, {} relayed out of order, {} malformed ({})",
            t.dropped,
            t.lost,
            t.duplicated,
            t.gaps,
            t.foreign_errors,
            t.corrupt,
            t.errors.join("; ")
        )
    });
    out.check(t.sent > 0, || "no frame was sent".into());
    rep.step(
        "check",
        format!(
            "check: connections dropped {}, frames lost {} / duplicated {} / skipped {} of {}{}",
            t.dropped,
            t.lost,
            t.duplicated,
            t.gaps,
            t.sent,
            if frames_ok { "" } else { "  <-- FAILED" }
        ),
        json!({ "what": "frames", "ok": frames_ok }),
    );
    rep.step(
        "check",
        format!(
            "check: every server's state consistent with what its clients sent: {}",
            if states.ok {
                "yes (published counts, members, rooms, frames per member since the last upgrade)"
                    .to_string()
            } else {
                format!("NO: {}", states.problems.join("; "))
            }
        ),
        json!({ "what": "states", "ok": states.ok, "servers": states.servers }),
    );
    for s in &states.servers {
        rep.detail(format!("  {s}"));
    }
    out.check(states.ok, || {
        format!("server states: {}", states.problems.join("; "))
    });

    // 7. Old versions freed: of the chat versions that were current, only the last one
    // is still mapped; nothing else under the code directory is.
    let code_dir = node.code().code_dir().to_path_buf();
    let mapped = mapped_under(&code_dir);
    let pinned = node.code().pinned();
    let last = versions
        .last()
        .cloned()
        .expect("at least the booted version");
    let (unmapped_ok, mapped_list) = match &mapped {
        Some(m) => (
            m.len() == 1 && m.contains(&last.3) && pinned.is_empty(),
            m.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
        ),
        None => (pinned.is_empty(), Vec::new()),
    };
    let replaced: Vec<String> = versions[..versions.len() - 1]
        .iter()
        .map(|(rel, v, i, _)| format!("v{v} instance {i} (release {rel})"))
        .collect();
    rep.step(
        "check",
        format!(
            "check: old versions freed: {}",
            match (&mapped, unmapped_ok) {
                (Some(_), true) => format!(
                    "{} unmapped (/proc/self/maps); only chat v{} instance {} is mapped",
                    replaced.join(", "),
                    last.1,
                    last.2
                ),
                (None, true) => "nothing pinned (the memory map is not readable here)".to_string(),
                (_, false) => format!("NO: mapped {mapped_list:?}, pinned {}", pinned.len()),
            }
        ),
        json!({ "what": "old_versions", "ok": unmapped_ok, "mapped": mapped_list, "replaced": replaced, "pinned": pinned.len(), "checked_maps": mapped.is_some() }),
    );
    out.check(unmapped_ok, || {
        format!(
            "old versions still mapped or pinned: mapped {mapped_list:?}, {} pinned",
            pinned.len()
        )
    });

    let f = &mut out.fields;
    f.insert("connections".into(), json!(t.connections));
    f.insert("dropped".into(), json!(t.dropped));
    f.insert("frames_sent".into(), json!(t.sent));
    f.insert("frames_acked".into(), json!(t.acked));
    f.insert("lost".into(), json!(t.lost));
    f.insert("duplicated".into(), json!(t.duplicated));
    f.insert("skipped".into(), json!(t.gaps));
    f.insert("relayed".into(), json!(t.foreign));
    f.insert("relayed_out_of_order".into(), json!(t.foreign_errors));
    f.insert("malformed".into(), json!(t.corrupt));
    f.insert("acked_by_version".into(), json!(t.by_version));
    f.insert(
        "longest_client_wait_ms".into(),
        json!(round(t.longest_gap_ms)),
    );
    f.insert("states_consistent".into(), json!(states.ok));
    f.insert("servers".into(), json!(states.servers));
    f.insert("old_versions_unmapped".into(), json!(unmapped_ok));
    f.insert("mapped".into(), json!(mapped_list));
    f.insert("replaced_versions".into(), json!(replaced));
    Ok(())
}

/// The files under `dir` this OS process maps (`None`: cannot tell).
fn mapped_under(dir: &Path) -> Option<BTreeSet<PathBuf>> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let d = dir.to_string_lossy().into_owned();
    Some(
        maps.lines()
            .filter_map(|l| l.find('/').map(|i| &l[i..]))
            .filter(|p| p.starts_with(&d))
            .map(PathBuf::from)
            .collect(),
    )
}

/// A chat server's state as any version encodes it (see `modules/common/chat.rs`).
#[derive(serde::Deserialize, Debug)]
struct ChatState {
    rooms: BTreeMap<u32, AnyRoom>,
    conns: BTreeMap<u64, AnyMember>,
    published: u64,
}

#[derive(serde::Deserialize, Debug)]
#[serde(untagged)]
enum AnyMember {
    /// Version 1: the room id.
    Room(u32),
    /// Versions 2 and 3: a record.
    Record { room: u32, frames: u64 },
}

#[derive(serde::Deserialize, Debug)]
#[serde(untagged)]
enum AnyRoom {
    /// Version 1: the members.
    Members(Vec<u64>),
    /// Versions 2 and 3: a record.
    Record { members: Vec<u64>, published: u64 },
}

/// What [`check_states`] found.
#[derive(Debug)]
struct StateCheck {
    ok: bool,
    problems: Vec<String>,
    servers: Vec<Value>,
}

/// Compare every server's state with what its clients sent and saw acknowledged. The
/// clients must be held (or stopped) and drained.
async fn check_states(node: &Node, load: &Load, pids: &[Pid]) -> StateCheck {
    let mut problems = Vec::new();
    let mut servers = Vec::new();
    for (k, (&pid, name)) in pids.iter().zip(SERVERS).enumerate() {
        let mut bad = Vec::new();
        let state: ChatState = match node.sys().get_state(pid).await {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{name}: cannot read its state: {e}"));
                continue;
            }
        };
        let clients: Vec<usize> = (0..load.conns.len())
            .filter(|&i| load.conns[i].0 == k)
            .collect();
        let acked: u64 = clients
            .iter()
            .map(|&i| load.live[i].acked.load(Ordering::SeqCst))
            .sum();
        if state.published != acked {
            bad.push(format!(
                "{name} counts {} publications, its clients got {acked} acknowledged",
                state.published
            ));
        }
        if state.conns.len() != clients.len() {
            bad.push(format!(
                "{name} has {} connections, it should have {}",
                state.conns.len(),
                clients.len()
            ));
        }
        let mut rooms: BTreeMap<u32, (BTreeSet<u64>, u64)> = BTreeMap::new();
        let mut records = false;
        for &i in &clients {
            let live = &load.live[i];
            let (_, client, room) = load.conns[i];
            let port = live.port.load(Ordering::SeqCst);
            // Frames handled by the running version since it took over.
            let run = live.run_len.load(Ordering::SeqCst);
            let e = rooms.entry(room).or_default();
            e.0.insert(port);
            e.1 += run;
            match state.conns.get(&port) {
                None => bad.push(format!(
                    "{name} has no member for client {client} (connection {port})"
                )),
                Some(AnyMember::Room(r)) if *r != room => bad.push(format!(
                    "{name}: client {client} is in room {r}, it joined {room}"
                )),
                Some(AnyMember::Record { room: r, frames }) => {
                    records = true;
                    if *r != room {
                        bad.push(format!(
                            "{name}: client {client} is in room {r}, it joined {room}"
                        ));
                    }
                    if *frames != run {
                        bad.push(format!(
                            "{name}: client {client} has {frames} frames counted, but {run} were handled since the last upgrade"
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        let state_rooms: BTreeMap<u32, (BTreeSet<u64>, Option<u64>)> = state
            .rooms
            .iter()
            .map(|(r, v)| match v {
                AnyRoom::Members(m) => (*r, (m.iter().copied().collect(), None)),
                AnyRoom::Record { members, published } => {
                    (*r, (members.iter().copied().collect(), Some(*published)))
                }
            })
            .collect();
        if state_rooms.keys().ne(rooms.keys()) {
            bad.push(format!(
                "{name} has rooms {:?}, its clients joined {:?}",
                state_rooms.keys().collect::<Vec<_>>(),
                rooms.keys().collect::<Vec<_>>()
            ));
        }
        for (r, (members, published)) in &state_rooms {
            let Some((want, frames)) = rooms.get(r) else {
                continue;
            };
            if members != want {
                bad.push(format!(
                    "{name}: room {r} has members {members:?}, expected {want:?}"
                ));
            }
            if let Some(p) = published {
                if p != frames {
                    bad.push(format!(
                        "{name}: room {r} counts {p} publications, its members' counts add up to {frames}"
                    ));
                }
            }
        }
        servers.push(json!({
            "name": name, "pid": pid.to_string(), "published": state.published, "acked": acked,
            "connections": state.conns.len(), "clients": clients.len(), "rooms": state.rooms.len(),
            "member_records": records, "consistent": bad.is_empty(), "problems": bad,
        }));
        problems.extend(bad.into_iter().take(3));
    }
    StateCheck {
        ok: problems.is_empty() && servers.len() == pids.len(),
        problems,
        servers,
    }
}

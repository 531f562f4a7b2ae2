//! `hotswap demo`: a live upgrade under load, step by step.
//!
//! The demo writes a release directory (the embedded release `tally`: versions 1.0.0 with
//! `demo` v1 and 2.0.0 with `demo` v2, side by side; see `demo-release/`) and boots release
//! 1.0.0 exactly as `hotswap start` would, in this process, with no outside service.
//!
//! The story: module `demo` (crates `modules/demo_v1` and `modules/demo_v2`, shared source
//! `modules/common/demo.rs`) is a tally server. A few server processes run it, each keeping a
//! running total; one client per server keeps adding numbers and checks every reply. While
//! they work, the demo loads v2 (v1 becomes old code and keeps running the servers), shows
//! which processes run old code, sends `CodeSwitch` so each server makes the fully-qualified
//! call `demo:loop(State)` into v2 carrying its state (v2's state has a new field), frees v1
//! with `soft_purge`, and finally checks that nothing was lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotswap_runtime::{ExitReason, ExternalProcess, Message, Node, NodeConfig, Pid, VersionInfo};
use serde_json::{json, Value};

use crate::node_state::NodeState;
use crate::release::{Release, ReleaseDir};
use crate::report::Reporter;
use crate::start;

/// Options of `hotswap demo`.
#[derive(Debug)]
pub struct Options {
    /// JSON step records instead of text.
    pub json: bool,
    /// Where the module libraries are (default: the executable's directory).
    pub modules_dir: Option<PathBuf>,
    /// Write the demo release here and keep it (default: a temporary directory, removed).
    pub release_dir: Option<PathBuf>,
}

/// The embedded demo release: one manifest per version.
const RELEASES: [(&str, &str); 2] = [
    ("1.0.0", include_str!("../demo-release/1.0.0.toml")),
    ("2.0.0", include_str!("../demo-release/2.0.0.toml")),
];
/// The version the demo boots.
const BOOT: &str = "1.0.0";
/// The version whose module the demo upgrades to.
const NEXT: &str = "2.0.0";

/// Number of tally servers (and clients).
const SERVERS: usize = 3;
/// A client sends `BURST` requests every `TICK`.
const TICK: Duration = Duration::from_millis(2);
const BURST: usize = 3;
/// How long each phase of traffic lasts.
const PHASE: Duration = Duration::from_millis(700);
/// How long to wait for something that should happen promptly.
const WAIT: Duration = Duration::from_secs(5);
/// How long a stopped client waits for its last replies.
const DRAIN: Duration = Duration::from_secs(3);

/// Mirror of `Req` in `modules/common/demo.rs`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
enum Req {
    Add { from: Pid, seq: u64, amount: u64 },
    Get { from: Pid },
    CodeSwitch,
    Stop,
}

/// Mirror of `Reply` in `modules/common/demo.rs`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Reply {
    server: Pid,
    seq: u64,
    total: u64,
    version: String,
}

/// Mirror of `Snapshot` in `modules/common/demo.rs`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct Snapshot {
    server: Pid,
    version: String,
    name: String,
    total: u64,
    count: u64,
    #[serde(default)]
    since_upgrade: Option<u64>,
}

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
    let rep = Reporter::new(opts.json);
    let files = match locate(opts.modules_dir.as_deref()) {
        Ok(f) => f,
        Err(f) => {
            rep.error(f.code, &f.msg);
            return ExitCode::from(f.code);
        }
    };
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
    match rt.block_on(demo(&rep, &files, opts.release_dir.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            rep.error(f.code, &f.msg);
            ExitCode::from(f.code)
        }
    }
}

/// The two module libraries.
#[derive(Debug)]
struct Files {
    v1: PathBuf,
    v2: PathBuf,
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

/// Find `libdemo_v1.so` and `libdemo_v2.so`, or say exactly how to build them.
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
    let build = format!("cargo build{release} -p demo_v1 -p demo_v2");
    let files = Files {
        v1: lib_file(&dir, "demo_v1"),
        v2: lib_file(&dir, "demo_v2"),
        build,
    };
    let missing: Vec<String> = [&files.v1, &files.v2]
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
         or pass --modules-dir DIR naming the directory that holds both libraries (target/debug or target/release)",
        if missing.len() == 1 { "is" } else { "files are" },
        missing.join(", "),
        files.build,
    )))
}

/// What one client saw, shared live with the demo while it runs.
#[derive(Debug, Default, Clone)]
struct Traffic {
    sent: u64,
    replied: u64,
    /// Replies per module version that handled the request.
    by_version: BTreeMap<String, u64>,
}

impl Traffic {
    fn from(&self, vsn: &str) -> u64 {
        self.by_version.get(vsn).copied().unwrap_or(0)
    }
}

/// A client's final account.
#[derive(Debug, Default)]
struct ClientReport {
    traffic: Traffic,
    /// Sum of the amounts it sent (what the server's total must be).
    sum_sent: u64,
    /// Requests that never got a reply.
    lost: u64,
    /// Replies to a request that was already answered or never sent.
    duplicates: u64,
    /// Replies whose running total was not the sum of the amounts sent so far.
    wrong_totals: u64,
    /// Other messages (from another server, not decodable, exit signals).
    unexpected: u64,
    /// The first few problems, in words.
    problems: Vec<String>,
}

impl ClientReport {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 5 {
            self.problems.push(p);
        }
    }

    /// Account for one message from the client's mailbox. `outstanding` maps each request
    /// not yet answered to the total its reply must carry.
    fn handle(
        &mut self,
        m: Message,
        server: Pid,
        outstanding: &mut BTreeMap<u64, u64>,
        live: &Mutex<Traffic>,
    ) {
        let reply = match m.decode::<Reply>() {
            Ok(reply) if reply.server == server => reply,
            Ok(reply) => {
                self.unexpected += 1;
                return self.problem(format!("a reply from {} instead of {server}", reply.server));
            }
            Err(_) => {
                self.unexpected += 1;
                return self.problem(format!("an unexpected message: {m:?}"));
            }
        };
        let Some(expected) = outstanding.remove(&reply.seq) else {
            self.duplicates += 1;
            return self.problem(format!(
                "a second reply, or a reply to a request never sent: #{}",
                reply.seq
            ));
        };
        if reply.total != expected {
            self.wrong_totals += 1;
            self.problem(format!(
                "request #{} answered with total {}, expected {expected}",
                reply.seq, reply.total
            ));
        }
        self.traffic.replied += 1;
        *self.traffic.by_version.entry(reply.version).or_default() += 1;
        *live.lock().unwrap_or_else(|e| e.into_inner()) = self.traffic.clone();
    }
}

/// A small deterministic generator for the amounts (1..=100).
struct Amounts(u64);

impl Amounts {
    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 100 + 1
    }
}

/// A client: a host-side process that keeps adding numbers to `server` (`BURST` requests
/// every `TICK`, without waiting), checks each reply against the running total it expects,
/// and, once `stop` is set, waits for the replies still in flight.
async fn client(
    me: ExternalProcess,
    server: Pid,
    seed: u64,
    stop: Arc<AtomicBool>,
    live: Arc<Mutex<Traffic>>,
) -> ClientReport {
    let mut r = ClientReport::default();
    let mut amounts = Amounts(seed | 1);
    let mut seq = 0u64;
    // seq -> the total the server must reply with.
    let mut outstanding: BTreeMap<u64, u64> = BTreeMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        for _ in 0..BURST {
            seq += 1;
            let amount = amounts.next();
            r.sum_sent += amount;
            outstanding.insert(seq, r.sum_sent);
            me.send(
                server,
                &Req::Add {
                    from: me.pid(),
                    seq,
                    amount,
                },
            );
            r.traffic.sent += 1;
        }
        *live.lock().unwrap_or_else(|e| e.into_inner()) = r.traffic.clone();
        while let Some(m) = me.recv(Duration::ZERO).await {
            r.handle(m, server, &mut outstanding, &live);
        }
    }
    let deadline = tokio::time::Instant::now() + DRAIN;
    while !outstanding.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match me.recv(left).await {
            Some(m) => r.handle(m, server, &mut outstanding, &live),
            None => break,
        }
    }
    // Anything arriving after the last expected reply is a duplicate.
    while let Some(m) = me.recv(Duration::from_millis(50)).await {
        r.handle(m, server, &mut outstanding, &live);
    }
    r.lost = outstanding.len() as u64;
    if let Some((seq, _)) = outstanding.first_key_value() {
        let n = outstanding.len();
        r.problem(format!("{n} request(s) never answered, the first #{seq}"));
    }
    r
}

/// Sets the clients' stop flag when dropped, so an early return never leaves them running.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn pids(p: &[Pid]) -> String {
    let v: Vec<String> = p.iter().map(|p| p.to_string()).collect();
    format!("[{}]", v.join(", "))
}

fn pid_list(p: &[Pid]) -> Vec<String> {
    p.iter().map(|p| p.to_string()).collect()
}

/// What `process_info(pid).running` says: `(module, version, instance)`, outermost first.
type Running = Vec<(String, String, u64)>;

/// The `(module, version, instance)` bindings of a process (empty if it is gone).
fn running(node: &Node, pid: Pid) -> Vec<(String, String, u64)> {
    node.process_info(pid)
        .map(|p| p.running)
        .unwrap_or_default()
}

/// `(module, version, instance)` bindings as text: `demo v1 (instance 1)`.
fn running_text(r: &[(String, String, u64)]) -> String {
    if r.is_empty() {
        return "no module code".into();
    }
    let v: Vec<String> = r
        .iter()
        .map(|(m, v, i)| format!("{m} v{v} (instance {i})"))
        .collect();
    v.join(" inside ")
}

/// Whether `file` appears in this OS process's memory map (`None`: cannot tell).
fn is_mapped(file: &Path) -> Option<bool> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let f = file.to_string_lossy();
    Some(maps.lines().any(|l| l.ends_with(f.as_ref())))
}

fn sum_traffic(live: &[Arc<Mutex<Traffic>>]) -> Traffic {
    let mut t = Traffic::default();
    for l in live {
        let l = l.lock().unwrap_or_else(|e| e.into_inner());
        t.sent += l.sent;
        t.replied += l.replied;
        for (v, n) in &l.by_version {
            *t.by_version.entry(v.clone()).or_default() += n;
        }
    }
    t
}

fn traffic_fields(t: &Traffic) -> Value {
    json!({ "sent": t.sent, "replied": t.replied, "replies_v1": t.from("1"), "replies_v2": t.from("2") })
}

/// Ask a server for its state (from the observer `obs`).
async fn snapshot(obs: &ExternalProcess, server: Pid) -> Result<Snapshot, Fail> {
    obs.send(server, &Req::Get { from: obs.pid() });
    let m = obs
        .recv_match(WAIT, |m| {
            m.decode::<Snapshot>().is_ok_and(|s| s.server == server)
        })
        .await
        .ok_or_else(|| {
            broken(format!(
                "server {server} did not answer a state request within {WAIT:?}"
            ))
        })?;
    m.decode()
        .map_err(|e| broken(format!("bad state reply from {server}: {e}")))
}

fn version_of(
    node: &Node,
    slot: impl Fn(hotswap_runtime::ModuleInfo) -> Option<VersionInfo>,
) -> Result<VersionInfo, Fail> {
    node.code()
        .module("demo")
        .and_then(slot)
        .ok_or_else(|| broken("module demo has lost a version it should have"))
}

/// Load `file` as module `demo` and check that it is version `vsn`; a wrong or unloadable file
/// is a setup error (exit 2) that says how to rebuild.
async fn load(node: &Node, file: &Path, vsn: &str, files: &Files) -> Result<VersionInfo, Fail> {
    let info = node.code().load_as("demo", file).await.map_err(|e| {
        setup(format!(
            "cannot load {}: {e}\n  rebuild the demo modules:  {}",
            file.display(),
            files.build
        ))
    })?;
    let v = info.current.ok_or_else(|| {
        broken(format!(
            "{} loaded but module demo has no current version",
            file.display()
        ))
    })?;
    if v.version != vsn {
        return Err(setup(format!(
            "{} holds demo version {:?}, expected {vsn:?}: the file was renamed or built from another crate\n  rebuild the demo modules:  {}",
            file.display(),
            v.version,
            files.build
        )));
    }
    Ok(v)
}

/// Write the demo release into `dir` (or a fresh temporary directory): both manifests,
/// `releases/current`, and the two libraries in `lib/`.
fn write_release(files: &Files, dir: Option<&Path>) -> Result<ReleaseDir, Fail> {
    let root = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("hotswap-demo-{}", std::process::id())),
    };
    let io = |what: &str, p: &Path, e: std::io::Error| {
        setup(format!(
            "cannot write the demo release: {what} {}: {e}",
            p.display()
        ))
    };
    let dir = ReleaseDir::new(&root);
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
    for f in [&files.v1, &files.v2] {
        let to = lib.join(f.file_name().expect("a library file name"));
        std::fs::copy(f, &to).map_err(|e| io("copy to", &to, e))?;
    }
    Ok(dir)
}

async fn demo(rep: &Reporter, files: &Files, keep: Option<&Path>) -> Result<(), Fail> {
    let dir = write_release(files, keep)?;
    let r = run_release(rep, files, &dir).await;
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(dir.root());
    }
    r
}

async fn run_release(rep: &Reporter, files: &Files, dir: &ReleaseDir) -> Result<(), Fail> {
    let release = Release::load(dir, BOOT)
        .map_err(|e| setup(format!("the embedded demo release does not check: {e}")))?;
    let next = Release::load(dir, NEXT)
        .map_err(|e| setup(format!("the embedded demo release does not check: {e}")))?;
    let node = Node::start(NodeConfig {
        code_dir: None,
        purge_timeout: Duration::from_millis(release.manifest.node.purge_timeout_ms),
        ..Default::default()
    })
    .map_err(|e| setup(format!("cannot start a node: {e}")))?;
    let (state, _stop_requests) = NodeState::new(node.clone(), release, String::new(), 0);
    let outcome = scenario(&state, &next, rep, files).await;
    let stop = node.shutdown(WAIT).await.stop;
    let mut checks = outcome?;
    let pinned_at_stop: Vec<String> = stop
        .purges
        .iter()
        .filter_map(|p| {
            p.pinned
                .as_ref()
                .map(|r| format!("{} {}: {r}", p.module, p.version.as_deref().unwrap_or("?")))
        })
        .collect();
    let stop_ok =
        stop.stuck.is_empty() && pinned_at_stop.is_empty() && node.code().pinned().is_empty();
    rep.step(
        "node_stopped",
        if stop_ok {
            "stopped the node: every module version unmapped".to_string()
        } else {
            format!("stopped the node: stuck processes {}, pinned versions {:?}", pids(&stop.stuck), pinned_at_stop)
        },
        json!({ "stuck": pid_list(&stop.stuck), "pinned": pinned_at_stop, "freed_total": node.code().freed_count() }),
    );
    if !stop_ok {
        checks.failures.push(format!(
            "node stop: stuck processes {}, pinned {:?}",
            pids(&stop.stuck),
            pinned_at_stop
        ));
    }
    checks
        .fields
        .insert("node_stopped_clean".into(), json!(stop_ok));
    let ok = checks.failures.is_empty();
    checks.fields.insert("ok".into(), json!(ok));
    checks
        .fields
        .insert("failures".into(), json!(checks.failures));
    let msg = if ok {
        "OK: module demo upgraded from v1 to v2 under load; nothing lost, state carried, old code freed".to_string()
    } else {
        format!("FAILED: {}", checks.failures.join("; "))
    };
    rep.step("result", msg, Value::Object(checks.fields));
    if ok {
        Ok(())
    } else {
        Err(Fail {
            code: 1,
            msg: format!(
                "the demo's final check failed: {}",
                checks.failures.join("; ")
            ),
        })
    }
}

/// What the final check found.
#[derive(Debug, Default)]
struct Checks {
    failures: Vec<String>,
    fields: serde_json::Map<String, Value>,
}

async fn scenario(
    state: &NodeState,
    next: &Release,
    rep: &Reporter,
    files: &Files,
) -> Result<Checks, Fail> {
    let node = &state.node;
    let code = node.code();
    let dir = &state.release.dir;
    rep.step(
        "start",
        format!("hotswap demo: upgrade module `demo` from v1 to v2 while {SERVERS} clients keep using it"),
        json!({ "servers": SERVERS, "guard_active": hotswap_runtime::guard_active(), "code_dir": code.code_dir() }),
    );
    rep.note(format!("{SERVERS} tally servers (processes running module code) keep a running total; one client per"));
    rep.note("server keeps adding numbers and checks every reply. Nothing may be lost across the upgrade.");
    if !hotswap_runtime::guard_active() {
        rep.note("warning: this executable does not export the thread-local guard: old code cannot be unmapped");
    }

    // 1. Boot release 1.0.0: it loads demo v1 and starts the tally servers.
    let id = &state.release.manifest.release;
    rep.step(
        "release",
        format!("booting release {} {} from {}", id.name, id.version, dir.root().display()),
        json!({ "release": id.name, "version": id.version, "dir": dir.root(), "versions": dir.versions(), "manifest": state.release.path }),
    );
    rep.note(format!(
        "releases {} sit side by side in {}; each manifest names its modules",
        dir.versions().join(" and "),
        dir.releases().display()
    ));
    rep.note("(with their versions and library files) and the applications to start");
    start::boot(state).await.map_err(|e| {
        setup(format!(
            "cannot boot the demo release: {e}\n  rebuild the demo modules:  {}",
            files.build
        ))
    })?;
    let v1 = version_of(node, |m| m.current)?;
    rep.step(
        "loaded",
        format!("loaded demo v{} (instance {}) from {}", v1.version, v1.instance, v1.source.display()),
        json!({ "module": "demo", "version": v1.version, "instance": v1.instance, "file": v1.source, "exports": v1.exports }),
    );

    let obs = node.external();
    let mut servers = Vec::new();
    let mut monitors = Vec::new();
    let mut started = Vec::new();
    for a in node.applications() {
        started.extend(state.app_children(&a).await);
    }
    for p in started {
        let Some(pid) = p.pid else {
            return Err(broken(format!(
                "the tally application's child {:?} is not running",
                p.id
            )));
        };
        let name = node.process_info(pid).and_then(|i| i.name);
        monitors.push(obs.monitor(pid));
        let s = snapshot(&obs, pid).await?;
        let running = running(node, pid);
        rep.step(
            "spawned",
            format!(
                "application tally started {pid} ({}) running {}: tally server {:?}, total {}",
                p.starts,
                running_text(&running),
                s.name,
                s.total
            ),
            json!({ "pid": pid.to_string(), "name": name, "running": running }),
        );
        servers.push(pid);
    }
    if servers.len() != SERVERS {
        return Err(broken(format!(
            "the demo release started {} servers, expected {SERVERS}",
            servers.len()
        )));
    }

    // 2. The clients.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let mut live = Vec::new();
    let mut tasks = Vec::new();
    let mut client_pids = Vec::new();
    for (i, &server) in servers.iter().enumerate() {
        let me = node.external();
        let cpid = me.pid();
        let l = Arc::new(Mutex::new(Traffic::default()));
        live.push(l.clone());
        client_pids.push(cpid);
        tasks.push(tokio::spawn(client(
            me,
            server,
            0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1),
            stop.clone(),
            l,
        )));
        rep.step(
            "client",
            format!(
                "started client {cpid} -> {server}: sends {BURST} numbers to add every {}ms, checks each reply's running total",
                TICK.as_millis()
            ),
            json!({ "client": cpid.to_string(), "server": server.to_string() }),
        );
    }

    tokio::time::sleep(PHASE).await;
    let t = sum_traffic(&live);
    rep.step(
        "traffic",
        format!(
            "traffic on v1: {} requests sent, {} replies (v1: {}, v2: {})",
            t.sent,
            t.replied,
            t.from("1"),
            t.from("2")
        ),
        traffic_fields(&t),
    );

    // 3. Load v2: v1 becomes old code, and the servers keep running it.
    let v2_spec = next
        .manifest
        .modules
        .iter()
        .find(|m| m.name == "demo")
        .ok_or_else(|| setup(format!("{} names no module demo", next.path.display())))?;
    let v2_file = next.module_file(v2_spec);
    let v2 = load(node, &v2_file, &v2_spec.version, files).await?;
    let v1_at_load = sum_traffic(&live).from("1");
    rep.step(
        "loaded",
        format!("loaded demo v{} (instance {}) from {} (the module of release {NEXT})", v2.version, v2.instance, v2_file.display()),
        json!({ "module": "demo", "version": v2.version, "instance": v2.instance, "file": v2_file, "old_version": v1.version }),
    );
    rep.note(format!(
        "an operator does the same on a running node: hotswap load {} -d <release-dir>",
        v2_file.display()
    ));
    rep.note(format!(
        "v{} is now current and v{} is old code; a process stays in the code it runs",
        v2.version, v1.version
    ));
    rep.note("until it makes a fully-qualified call (here: demo:loop(State) on CodeSwitch)");

    let (cur, old) = code.which_processes("demo");
    let details: Vec<(Pid, bool, Running)> = servers
        .iter()
        .map(|&pid| {
            (
                pid,
                code.check_process_code(pid, "demo"),
                running(node, pid),
            )
        })
        .collect();
    rep.step(
        "which",
        format!("which_processes(demo): current v{} runs {}, old v{} runs {}", v2.version, pids(&cur), v1.version, pids(&old)),
        json!({
            "current": pid_list(&cur), "old": pid_list(&old), "current_version": v2.version, "old_version": v1.version,
            "processes": details.iter().map(|(pid, on_old, running)| json!({ "pid": pid.to_string(), "check_process_code": on_old, "running": running })).collect::<Vec<_>>(),
        }),
    );
    for (pid, on_old, running) in &details {
        rep.note(format!(
            "{pid}: check_process_code(demo) = {on_old}, running {}",
            running_text(running)
        ));
    }
    let old_set: BTreeSet<Pid> = old.iter().copied().collect();
    if servers.iter().any(|p| !old_set.contains(p)) {
        return Err(broken(format!(
            "after loading v2 the servers {} should all run old code, but old code runs {}",
            pids(&servers),
            pids(&old)
        )));
    }
    if let Some((pid, ..)) = details.iter().find(|d| !d.1) {
        return Err(broken(format!(
            "check_process_code({pid}, demo) is false right after loading v2"
        )));
    }
    let refused = !code
        .soft_purge("demo")
        .await
        .map_err(|e| broken(format!("soft_purge(demo): {e}")))?;
    rep.step(
        "soft_purge",
        format!(
            "soft_purge(demo) = {}: {}",
            !refused,
            if refused {
                "refused, old code is still running; nothing was killed"
            } else {
                "freed old code that processes were running!"
            }
        ),
        json!({ "purged": !refused }),
    );
    if !refused {
        return Err(broken(
            "soft_purge(demo) freed v1 while the servers were still running it",
        ));
    }

    tokio::time::sleep(PHASE).await;
    let t = sum_traffic(&live);
    let v1_after_load = t.from("1") - v1_at_load;
    rep.step(
        "traffic",
        format!("old code keeps serving: {} more replies from v1 since v2 was loaded (total: {} sent, {} replies)", v1_after_load, t.sent, t.replied),
        json!({ "sent": t.sent, "replied": t.replied, "replies_v1": t.from("1"), "replies_v2": t.from("2"), "replies_v1_since_v2_loaded": v1_after_load }),
    );

    // 4. CodeSwitch: each server re-enters demo:loop on the current version, with its state.
    for &pid in &servers {
        obs.send(pid, &Req::CodeSwitch);
    }
    rep.step(
        "code_switch",
        format!(
            "sent CodeSwitch to {}: each makes the fully-qualified call demo:loop(State)",
            pids(&servers)
        ),
        json!({ "to": pid_list(&servers) }),
    );
    let mut carried = Vec::new();
    for &pid in &servers {
        // Sent after CodeSwitch by the same sender, so handled after the switch.
        let s = snapshot(&obs, pid).await?;
        let running = running(node, pid);
        rep.step(
            "switched",
            format!(
                "{pid} now runs {}, state carried over: name {:?}, total {}, count {}, since_upgrade {}",
                running_text(&running),
                s.name,
                s.total,
                s.count,
                s.since_upgrade.map_or("missing".to_string(), |n| n.to_string())
            ),
            json!({ "pid": pid.to_string(), "version": s.version, "running": running, "name": s.name, "total": s.total, "count": s.count, "since_upgrade": s.since_upgrade }),
        );
        if s.version != v2.version {
            return Err(broken(format!(
                "{pid} still answers from v{} after CodeSwitch",
                s.version
            )));
        }
        carried.push(s);
    }
    rep.note("since_upgrade is new in v2: v1's state has no such field, so v2 decoded it with");
    rep.note("#[serde(default)] (0 at the switch; it counts the requests handled since)");
    let (cur, old) = code.which_processes("demo");
    rep.step(
        "which",
        format!("which_processes(demo): current v{} runs {}, old v{} runs {}", v2.version, pids(&cur), v1.version, pids(&old)),
        json!({ "current": pid_list(&cur), "old": pid_list(&old), "current_version": v2.version, "old_version": v1.version }),
    );
    if !old.is_empty() {
        return Err(broken(format!(
            "after CodeSwitch old code still runs {}",
            pids(&old)
        )));
    }

    tokio::time::sleep(PHASE).await;
    let t = sum_traffic(&live);
    rep.step(
        "traffic",
        format!(
            "traffic on v2: {} requests sent, {} replies (v1: {}, v2: {})",
            t.sent,
            t.replied,
            t.from("1"),
            t.from("2")
        ),
        traffic_fields(&t),
    );

    // 5. Free the old version.
    let old_v1 = version_of(node, |m| m.old)?;
    let freed_before = code.freed_count();
    let mapped_before = is_mapped(&old_v1.file);
    let purged = code
        .soft_purge("demo")
        .await
        .map_err(|e| broken(format!("soft_purge(demo): {e}")))?;
    let pinned = code.pinned();
    let old_after = code.module("demo").and_then(|m| m.old);
    let freed = code.freed_count() - freed_before;
    let mapped_after = is_mapped(&old_v1.file);
    let unmapped = match (mapped_before, mapped_after) {
        (Some(true), Some(false)) => Some(true),
        (Some(true), Some(true)) => Some(false),
        _ => None, // cannot tell from /proc/self/maps
    };
    let old_freed =
        purged && old_after.is_none() && pinned.is_empty() && freed == 1 && unmapped != Some(false);
    let pinned_text: Vec<String> = pinned
        .iter()
        .map(|p| format!("{} v{}: {}", p.module, p.version.version, p.reason))
        .collect();
    rep.step(
        "soft_purge",
        format!(
            "soft_purge(demo) = {purged}: {}",
            if old_freed { format!("demo v{} (instance {}) freed", old_v1.version, old_v1.instance) } else { "old version NOT freed".into() }
        ),
        json!({
            "purged": purged, "old_slot_empty": old_after.is_none(), "pinned": pinned_text, "freed": freed,
            "file": old_v1.file, "mapped_before": mapped_before, "mapped_after": mapped_after, "old_version_freed": old_freed,
        }),
    );
    rep.note(format!(
        "old slot {}, pinned() = {:?}, freed_count +{freed}, its library copy {}",
        if old_after.is_none() {
            "empty"
        } else {
            "still set"
        },
        pinned_text,
        match unmapped {
            Some(true) => "is no longer mapped (/proc/self/maps)",
            Some(false) => "is STILL in /proc/self/maps",
            None => "(mapping not checkable here)",
        }
    ));

    tokio::time::sleep(PHASE / 2).await;

    // 6. Stop the clients and collect what they saw.
    stop.store(true, Ordering::Relaxed);
    rep.step(
        "stopping",
        "stopped the clients; waiting for the replies still in flight",
        Value::Null,
    );
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(
            t.await
                .map_err(|e| broken(format!("a client task failed: {e}")))?,
        );
    }
    let mut finals = Vec::new();
    for &pid in &servers {
        finals.push(snapshot(&obs, pid).await?);
    }
    // Any monitor message now means a server died during the run.
    let mut unexpected_exits = Vec::new();
    while let Some(Message::Down { pid, reason, .. }) = obs
        .recv_match(Duration::ZERO, |m| matches!(m, Message::Down { .. }))
        .await
    {
        unexpected_exits.push(format!("{pid} exited: {reason}"));
    }
    for &pid in &servers {
        obs.send(pid, &Req::Stop);
    }
    let mut stopped_normally = 0;
    for (&pid, &mon) in servers.iter().zip(&monitors) {
        match obs.down(mon, WAIT).await {
            Some(ExitReason::Normal) => stopped_normally += 1,
            Some(r) => unexpected_exits.push(format!("{pid} exited with {r} when told to stop")),
            None => unexpected_exits.push(format!("{pid} did not exit when told to stop")),
        }
    }

    // 7. The final check.
    let seen = Seen {
        servers,
        clients: client_pids,
        reports,
        carried,
        finals,
        v1_after_load,
        unexpected_exits,
        stopped_normally,
        old_freed,
        pinned: pinned_text,
    };
    Ok(final_check(rep, &seen))
}

/// Everything the final check looks at.
#[derive(Debug)]
struct Seen {
    servers: Vec<Pid>,
    /// The client of each server.
    clients: Vec<Pid>,
    /// What each client saw.
    reports: Vec<ClientReport>,
    /// Each server's state right after CodeSwitch.
    carried: Vec<Snapshot>,
    /// Each server's state at the end.
    finals: Vec<Snapshot>,
    /// Replies from v1 after v2 was loaded.
    v1_after_load: u64,
    unexpected_exits: Vec<String>,
    stopped_normally: usize,
    old_freed: bool,
    /// Pinned versions after the soft purge.
    pinned: Vec<String>,
}

fn final_check(rep: &Reporter, seen: &Seen) -> Checks {
    let Seen {
        servers,
        clients,
        reports,
        carried,
        finals,
        unexpected_exits,
        pinned,
        ..
    } = seen;
    let (v1_after_load, stopped_normally, old_freed) =
        (seen.v1_after_load, seen.stopped_normally, seen.old_freed);
    let mut c = Checks::default();
    let sum = |f: fn(&ClientReport) -> u64| reports.iter().map(f).sum::<u64>();
    let sent = sum(|r| r.traffic.sent);
    let replied = sum(|r| r.traffic.replied);
    let lost = sum(|r| r.lost);
    let duplicates = sum(|r| r.duplicates);
    let wrong_totals = sum(|r| r.wrong_totals);
    let unexpected_msgs = sum(|r| r.unexpected);
    let replies_v1 = sum(|r| r.traffic.from("1"));
    let replies_v2 = sum(|r| r.traffic.from("2"));

    rep.step("check", "final check:", Value::Null);
    let mut per_server = Vec::new();
    let mut state_carried = true;
    for (i, &pid) in servers.iter().enumerate() {
        let (r, s, at_switch) = (&reports[i], &finals[i], &carried[i]);
        let v1n = r.traffic.from("1");
        let v2n = r.traffic.from("2");
        let mut bad = Vec::new();
        if r.lost + r.duplicates + r.wrong_totals + r.unexpected > 0
            || r.traffic.replied != r.traffic.sent
        {
            bad.push(format!(
                "client {}: sent {}, replied {}, lost {}, duplicates {}, wrong totals {}, unexpected messages {} ({})",
                clients[i],
                r.traffic.sent,
                r.traffic.replied,
                r.lost,
                r.duplicates,
                r.wrong_totals,
                r.unexpected,
                r.problems.join("; ")
            ));
        }
        if s.version != "2" {
            bad.push(format!("{pid} ended on v{}, not v2", s.version));
        }
        if s.total != r.sum_sent || s.count != r.traffic.sent {
            bad.push(format!(
                "{pid} has total {} over {} requests, but its client sent {} over {}",
                s.total, s.count, r.sum_sent, r.traffic.sent
            ));
        }
        if s.since_upgrade != Some(v2n) || s.count.checked_sub(v2n) != Some(v1n) {
            bad.push(format!("{pid}: since_upgrade {:?}, count {}, but its client got {v1n} replies from v1 and {v2n} from v2", s.since_upgrade, s.count));
        }
        if v1n == 0 || v2n == 0 {
            bad.push(format!("{pid} served {v1n} requests on v1 and {v2n} on v2: the upgrade did not happen under load"));
        }
        // What v2 saw right after the switch: everything before since_upgrade was v1's work.
        if at_switch
            .since_upgrade
            .and_then(|n| at_switch.count.checked_sub(n))
            != Some(v1n)
            || at_switch.name != s.name
        {
            bad.push(format!(
                "{pid}: right after the switch its state was {at_switch:?}, but its client got {v1n} replies from v1"
            ));
        }
        state_carried &= s.version == "2"
            && s.total == r.sum_sent
            && s.count == r.traffic.sent
            && s.since_upgrade == Some(v2n)
            && s.count.checked_sub(v2n) == Some(v1n);
        rep.note(format!(
            "{pid} {:?}: total {} = the sum of the {} numbers its client sent ({v1n} added by v1, {v2n} by v2){}",
            s.name,
            s.total,
            s.count,
            if bad.is_empty() { "" } else { "  <-- MISMATCH" }
        ));
        per_server.push(json!({
            "pid": pid.to_string(), "client": clients[i].to_string(), "name": s.name, "version": s.version,
            "total": s.total, "expected_total": r.sum_sent, "count": s.count, "sent": r.traffic.sent, "replied": r.traffic.replied,
            "since_upgrade": s.since_upgrade, "replies_v1": v1n, "replies_v2": v2n, "lost": r.lost, "duplicates": r.duplicates,
            "wrong_totals": r.wrong_totals, "problems": r.problems,
        }));
        c.failures.extend(bad);
    }
    let exactly_once = sent == replied
        && lost == 0
        && duplicates == 0
        && wrong_totals == 0
        && unexpected_msgs == 0;
    rep.note(format!(
        "{sent} requests sent, {replied} replies: {}",
        if exactly_once {
            "every request answered exactly once, in order, with the right total".to_string()
        } else {
            format!("{lost} lost, {duplicates} duplicated, {wrong_totals} wrong totals, {unexpected_msgs} unexpected messages")
        }
    ));
    rep.note(format!("replies from v1: {replies_v1} ({v1_after_load} of them after v2 was loaded), from v2: {replies_v2}"));
    if v1_after_load == 0 {
        c.failures
            .push("no request was served by the old code after v2 was loaded".into());
    }
    let no_deaths = unexpected_exits.is_empty() && stopped_normally == servers.len();
    rep.note(if no_deaths {
        format!(
            "no process died unexpectedly; the {} servers exited normally when told to stop",
            servers.len()
        )
    } else {
        format!(
            "processes died unexpectedly: {}",
            unexpected_exits.join("; ")
        )
    });
    if !no_deaths {
        c.failures
            .push(format!("unexpected exits: {}", unexpected_exits.join("; ")));
    }
    rep.note(if old_freed {
        "old version v1 was freed by soft_purge: not pinned, not mapped".to_string()
    } else {
        format!("old version v1 was NOT freed (pinned: {pinned:?})")
    });
    if !old_freed {
        c.failures
            .push(format!("old version v1 was not freed (pinned: {pinned:?})"));
    }
    let f = &mut c.fields;
    f.insert("sent".into(), json!(sent));
    f.insert("replied".into(), json!(replied));
    f.insert("lost".into(), json!(lost));
    f.insert("duplicates".into(), json!(duplicates));
    f.insert("wrong_totals".into(), json!(wrong_totals));
    f.insert("unexpected_messages".into(), json!(unexpected_msgs));
    f.insert("replies_v1".into(), json!(replies_v1));
    f.insert("replies_v2".into(), json!(replies_v2));
    f.insert("replies_v1_since_v2_loaded".into(), json!(v1_after_load));
    f.insert("state_carried".into(), json!(state_carried));
    f.insert("unexpected_exits".into(), json!(unexpected_exits.len()));
    f.insert("old_version_freed".into(), json!(old_freed));
    f.insert("pinned".into(), json!(pinned.len()));
    f.insert("servers".into(), Value::Array(per_server));
    c
}

//! `hotswap dev`: run the project's release on a node and keep it current. Every save
//! builds the module crates (profile `hotswap-dev`: incremental, no debug info), makes a
//! new development release of the changed libraries, and upgrades the running node to it
//! through the same transaction as production (`unpack`, then `upgrade`: check on copies
//! of the live states, switch, roll back on failure), so gen_server states are kept
//! across type changes by `code_change`.
//!
//! One line per save on stdout:
//!
//! ```text
//! upgraded to 0.1.0-dev.3 (shop): detect 31 ms · build 812 ms · load 6 ms · check 2 ms · switch 1 ms · 1 server migrated
//! build failed (the node still runs 0.1.0-dev.3): error[E0308]: mismatched types ...
//! refused by the check (the node still runs 0.1.0-dev.3): ...
//! no change: this save changed nothing that runs (shop: the same code as 0.1.0-dev.3)
//! build cancelled: a newer save arrived
//! ```
//!
//! A newer save during a build cancels it (cargo and its compilers are killed) and, once
//! that save's burst of file events is over, builds again. On stderr, `dev: building ...`
//! marks the start of each build.
//!
//! The node is a child process (`hotswap start <target>/hotswap-dev/<release>`), stopped
//! when `hotswap dev` exits; its logs go to stderr.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::build::{cargo_build, identify, Built};
use super::Project;
use crate::control::client::{self, Failure, Target};

/// Options of `hotswap dev`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// A directory of the project.
    pub(crate) project: PathBuf,
    /// Restart the affected processes instead of migrating their state.
    pub(crate) restart: bool,
    /// Pass `--offline` to cargo.
    pub(crate) offline: bool,
    /// Quiet time that ends a burst of file events.
    pub(crate) debounce: Duration,
}

/// The profile a dev build uses (defined with `--config`, so any project has it).
const PROFILE_ARGS: &[&str] = &[
    "--profile",
    "hotswap-dev",
    "--config",
    "profile.hotswap-dev.inherits=\"dev\"",
    "--config",
    "profile.hotswap-dev.debug=0",
    "--config",
    "profile.hotswap-dev.strip=\"debuginfo\"",
    "--config",
    "profile.hotswap-dev.incremental=true",
];

/// `hotswap dev`.
pub(crate) fn run(opts: Options) -> ExitCode {
    match dev(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The running development node and what it runs.
struct Running {
    child: Child,
    target: Target,
    version: String,
    /// Module name → its build.
    modules: BTreeMap<String, Built>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // A graceful stop; the child also gets SIGTERM if we die first (PDEATHSIG).
        let _ = client::request(&self.target, "stop", Value::Null);
        let _ = self.child.wait();
    }
}

fn dev(opts: &Options) -> Result<()> {
    let project = Project::load(&opts.project)?;
    let dir = project.target_dir.join("hotswap-dev").join(&project.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let _watcher = watch(&project, tx)?;
    println!(
        "dev: watching {} for release {} ({} module crate{}); release directory {}",
        project
            .local_dirs
            .iter()
            .map(|d| d
                .strip_prefix(&project.root)
                .unwrap_or(d)
                .display()
                .to_string())
            .collect::<Vec<_>>()
            .join(", "),
        project.name,
        project.crates.len(),
        if project.crates.len() == 1 { "" } else { "s" },
        dir.display()
    );
    let mut seq = 0u32;
    let mut running: Option<Running> = None;
    // What starts the next round: the first build, a save to wait for, or the save that
    // cancelled a build (already seen: only the rest of its burst is waited for).
    let mut next = Round::First;
    loop {
        // Wait for a save (except for the first build), then for the burst to end. The
        // detect phase runs from the save's first file event (not from the wait's start:
        // the time the node sat idle is nobody's phase).
        if next == Round::Wait {
            let Ok(p) = rx.recv() else {
                bail!("the file watcher stopped")
            };
            tracing::debug!(path = %p.display(), "change");
        }
        let detect_start = Instant::now();
        let detect = if next == Round::First {
            Duration::ZERO
        } else {
            debounce(&rx, opts.debounce, detect_start)
        };
        // Progress for people (stdout keeps one status line per save).
        eprintln!(
            "dev: building{}",
            if next == Round::First {
                " the project"
            } else {
                " after a save"
            }
        );
        next = Round::Wait;
        // Build, cancelled by a newer save.
        let t = Instant::now();
        let built = match build_cancellable(&project, opts.offline, &rx) {
            BuildOutcome::Cancelled => {
                println!("build cancelled: a newer save arrived");
                // The save that cancelled it starts the next round once its burst ends.
                next = Round::Cancelled;
                continue;
            }
            BuildOutcome::Failed(e) => {
                match &running {
                    Some(r) => println!("build failed (the node still runs {}): {e:#}", r.version),
                    None => println!("build failed (no node yet: fix it and save): {e:#}"),
                }
                continue;
            }
            BuildOutcome::Built(libs) => libs,
        };
        let build = t.elapsed();
        let t = Instant::now();
        let built = match identify(&built) {
            Ok(b) => b,
            Err(e) => {
                println!("load failed: {e:#}");
                continue;
            }
        };
        if let Some(r) = &running {
            let changed: Vec<&Built> = built
                .iter()
                .filter(|b| r.modules.get(&b.name).map(|p| &p.hash) != Some(&b.hash))
                .collect();
            if changed.is_empty() && built.len() == r.modules.len() {
                println!(
                    "no change: this save changed nothing that runs ({}: the same code as {})",
                    built
                        .iter()
                        .map(|b| b.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.version
                );
                continue;
            }
        }
        seq += 1;
        let version = format!("{}-dev.{seq}", project.version);
        match running.as_mut() {
            None => {
                write_release(&project, &dir, &version, &built, opts.restart)?;
                let r = start_node(&dir, version.clone(), &built)?;
                println!(
                    "node started: release {version} ({}), build {} ms; control it with `hotswap <command> -d {}`",
                    built
                        .iter()
                        .map(|b| format!("{} {}", b.name, b.version))
                        .collect::<Vec<_>>()
                        .join(", "),
                    build.as_millis(),
                    dir.display()
                );
                running = Some(r);
            }
            Some(r) => {
                let stage = dir.join("staging").join(&version);
                let _ = std::fs::remove_dir_all(&stage);
                write_release(&project, &stage, &version, &built, opts.restart)?;
                let up = upgrade(r, &stage, &version);
                let _ = std::fs::remove_dir_all(&stage);
                let load = t.elapsed();
                if up.is_err() {
                    // Unpacked but not running: removed, so that only releases that ran
                    // stay in the node's directory.
                    let _ =
                        client::request(&r.target, "remove_release", json!({ "version": version }));
                }
                match up {
                    Ok(report) => {
                        let check = report["check_ms"].as_f64().unwrap_or(0.0);
                        let total = report["total_ms"].as_f64().unwrap_or(0.0);
                        let load = load.as_secs_f64() * 1000.0 - total;
                        let migrated = report["servers_migrated"].as_u64().unwrap_or(0);
                        let restarted = report["processes_restarted"].as_u64().unwrap_or(0);
                        let mut what = Vec::new();
                        if migrated > 0 {
                            what.push(format!(
                                "{migrated} server{} migrated",
                                if migrated == 1 { "" } else { "s" }
                            ));
                        }
                        if restarted > 0 {
                            what.push(format!(
                                "{restarted} process{} restarted",
                                if restarted == 1 { "" } else { "es" }
                            ));
                        }
                        println!(
                            "upgraded to {version} ({}): detect {} ms · build {} ms · load {:.0} ms · check {:.0} ms · switch {:.0} ms{}",
                            report["modules_changed"]
                                .as_array()
                                .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
                                .unwrap_or_default(),
                            detect.as_millis(),
                            build.as_millis(),
                            load.max(0.0),
                            check,
                            (total - check).max(0.0),
                            if what.is_empty() { String::new() } else { format!(" · {}", what.join(", ")) }
                        );
                        // The previous dev release is of no more use (the first one, the
                        // permanent release, stays: the node would boot it).
                        let _ = client::request(
                            &r.target,
                            "remove_release",
                            json!({ "version": r.version }),
                        );
                        r.version = version;
                        r.modules = built.into_iter().map(|b| (b.name.clone(), b)).collect();
                    }
                    Err(UpgradeFailure::Refused(msg)) => {
                        println!(
                            "refused by the check (the node still runs {}): {msg}{}",
                            r.version,
                            if opts.restart {
                                ""
                            } else {
                                "\n  to restart the affected processes instead of migrating them, run `hotswap dev --restart`"
                            }
                        );
                    }
                    Err(UpgradeFailure::RolledBack(msg)) => {
                        println!(
                            "upgrade failed and was rolled back (the node still runs {}): {msg}",
                            r.version
                        );
                    }
                    Err(UpgradeFailure::Other(msg)) => {
                        println!("upgrade failed (the node still runs {}): {msg}", r.version);
                    }
                }
            }
        }
    }
}

/// What starts a round of the dev loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The first build, at start.
    First,
    /// A save, still to come.
    Wait,
    /// The save that cancelled the last build (it has arrived; the rest of its burst of
    /// file events is debounced).
    Cancelled,
}

/// Watch every local package of the module crates, and the project file.
fn watch(project: &Project, tx: mpsc::Sender<PathBuf>) -> Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let ignore: Vec<PathBuf> = vec![
        project.target_dir.clone(),
        project.root.join("target"),
        project.root.join("_release"),
        project.root.join(".git"),
    ];
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if !matches!(
            ev.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) {
            return;
        }
        for p in ev.paths {
            if ignore.iter().any(|i| p.starts_with(i)) {
                continue;
            }
            let _ = tx.send(p);
        }
    })
    .context("cannot start the file watcher")?;
    for d in &project.local_dirs {
        w.watch(d, RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch {}", d.display()))?;
    }
    w.watch(
        &project.root.join(super::PROJECT_FILE),
        RecursiveMode::NonRecursive,
    )
    .context("cannot watch the project file")?;
    Ok(w)
}

/// Drain events until `quiet` passes without one; the time since `start`.
fn debounce(rx: &mpsc::Receiver<PathBuf>, quiet: Duration, start: Instant) -> Duration {
    while rx.recv_timeout(quiet).is_ok() {}
    start.elapsed()
}

enum BuildOutcome {
    Built(Vec<PathBuf>),
    Failed(anyhow::Error),
    Cancelled,
}

/// Build on a thread; a file event meanwhile cancels it (cargo is killed).
fn build_cancellable(
    project: &Project,
    offline: bool,
    rx: &mpsc::Receiver<PathBuf>,
) -> BuildOutcome {
    let cancel = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();
    let p = project.clone();
    let c = cancel.clone();
    std::thread::spawn(move || {
        let r = cargo_build(
            &p,
            PROFILE_ARGS,
            offline,
            Some(&|| c.load(Ordering::Relaxed)),
        );
        let _ = done_tx.send(r);
    });
    loop {
        if let Ok(r) = done_rx.try_recv() {
            return match r {
                Ok(libs) => BuildOutcome::Built(libs),
                Err(_) if cancel.load(Ordering::Relaxed) => BuildOutcome::Cancelled,
                Err(e) => BuildOutcome::Failed(e),
            };
        }
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(_) => {
                cancel.store(true, Ordering::Relaxed);
                // Wait for cargo to be gone. Even a build that finished before it saw the
                // cancel is stale: the next round builds the newer save.
                let _ = done_rx.recv();
                return BuildOutcome::Cancelled;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return BuildOutcome::Failed(anyhow!("the file watcher stopped"))
            }
        }
    }
}

/// Write release `version` of `built` into the release directory `dir`, its libraries
/// under `lib/<version>/` (a release never overwrites another's files, and two dev builds
/// of the same code differ in their build ids), each with its description record.
fn write_release(
    project: &Project,
    dir: &Path,
    version: &str,
    built: &[Built],
    restart: bool,
) -> Result<()> {
    let lib = dir.join("lib").join(version);
    std::fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let mut modules = Vec::new();
    for b in built {
        let dst = lib.join(b.file_name());
        if !dst.exists() {
            std::fs::copy(&b.path, &dst).with_context(|| {
                format!("cannot copy {} to {}", b.path.display(), dst.display())
            })?;
        }
        // The description record beside it (unpacked with it): the node's check compares
        // it instead of running the new version's `describe`.
        super::build::write_record(&dst, &b.name);
        modules.push((
            b.name.clone(),
            b.version.clone(),
            format!("lib/{version}/{}", b.file_name()),
        ));
    }
    let mut text = project.manifest(version, &modules);
    if restart {
        let mut t: toml::Table = text.parse().expect("the manifest we wrote parses");
        let up = t
            .entry("upgrade")
            .or_insert_with(|| toml::Table::new().into());
        if let toml::Value::Table(up) = up {
            for b in built {
                let e = up
                    .entry(b.name.clone())
                    .or_insert_with(|| toml::Table::new().into());
                if let toml::Value::Table(e) = e {
                    e.insert("restart".into(), true.into());
                }
            }
        }
        text = toml::to_string(&t).expect("a table serializes");
    }
    let m = dir.join("releases").join(version);
    std::fs::create_dir_all(&m).with_context(|| format!("cannot create {}", m.display()))?;
    std::fs::write(m.join("release.toml"), text)
        .context("cannot write the dev release's manifest")?;
    Ok(())
}

/// Start `hotswap start <dir>` and wait for its ready line.
fn start_node(dir: &Path, version: String, built: &[Built]) -> Result<Running> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("start")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // prctl(2), which is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("cannot start the node")?;
    let out = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with(crate::start::READY) => break,
            Some(Ok(_)) => {}
            _ => {
                let st = child.wait().ok();
                bail!("the node did not start ({st:?}): see its log above");
            }
        }
    }
    // Keep draining its stdout so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Running {
        child,
        target: Target {
            dir: crate::release::ReleaseDir::new(dir),
            cookie: None,
            timeout: Duration::from_secs(60),
            json: true,
        },
        version,
        modules: built.iter().map(|b| (b.name.clone(), b.clone())).collect(),
    })
}

enum UpgradeFailure {
    Refused(String),
    RolledBack(String),
    Other(String),
}

/// `unpack` the staged release, then `upgrade` to it; the upgrade report.
fn upgrade(r: &Running, stage: &Path, version: &str) -> Result<Value, UpgradeFailure> {
    let fail = |f: Failure| match f {
        Failure::Unreachable(m) => UpgradeFailure::Other(m),
        Failure::Refused(e) => {
            let msg = match &e.hint {
                Some(h) => format!("{}\n  {h}", e.message),
                None => e.message.clone(),
            };
            match e.kind.as_str() {
                "refused" => UpgradeFailure::Refused(msg),
                "rolled_back" => UpgradeFailure::RolledBack(msg),
                _ => UpgradeFailure::Other(msg),
            }
        }
    };
    let abs = std::path::absolute(stage).unwrap_or_else(|_| stage.to_path_buf());
    client::request(&r.target, "unpack", json!({ "path": abs })).map_err(fail)?;
    let v = client::request(&r.target, "upgrade", json!({ "version": version })).map_err(fail)?;
    Ok(v["report"].clone())
}

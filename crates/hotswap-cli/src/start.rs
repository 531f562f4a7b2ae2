//! `hotswap start <release-dir>`: run a node from a release.
//!
//! Boot, in order: pick the release version and check its manifest; make `run/` (mode
//! 0700) and `log/`; refuse if a node of this release already answers; create the cookie
//! (mode 0600) on first start; start logging (`log/node.log`, and stderr in the
//! foreground); start the node; load every module, checking its name and version against
//! the manifest; start the applications (dependencies first), each a supervision tree
//! under its application master ([`Node::start_application`]); bind the control socket
//! (mode 0600) and write the pid file; print the ready line.
//!
//! Stop (on `hotswap stop`, SIGTERM or SIGINT): remove the control socket, then
//! [`Node::shutdown`] with the manifest's `stop_timeout_ms` as its time limit: the
//! applications stop in reverse start order, each through its tree (children in reverse
//! order, each by its shutdown rule: gen_servers that trap exits run `terminate`); what is
//! left when the time limit runs out is named in the log and killed; every module is
//! purged. Then remove the pid file and exit 0.
//!
//! When an application terminates the node (a permanent one whose top supervisor exited,
//! or a transient one that exited abnormally: spec §5.2), the node logs why, stops the
//! other applications the same way, and exits 1.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hotswap_runtime::{Node, NodeConfig};
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::os;
use crate::release::{Release, ReleaseDir, Releases};
use hotswap_runtime::control::node_state::NodeState;
use hotswap_runtime::control::server;

/// The line a node prints on stdout once it is ready (what `--background` and the tests
/// wait for).
pub const READY: &str = "node started:";

/// Options of `hotswap start`.
#[derive(Debug)]
pub struct Options {
    /// The release directory.
    pub dir: PathBuf,
    /// The release version to boot (default: `releases/current`, or the only one).
    pub release_version: Option<String>,
    /// Start in the background and return once the node is ready.
    pub background: bool,
    /// Internal: this is the background node itself (no stderr logging).
    pub detached: bool,
}

/// Why start failed, for the exit code.
struct StartFail(String);

impl<E: std::fmt::Display> From<E> for StartFail {
    fn from(e: E) -> Self {
        StartFail(e.to_string())
    }
}

/// Run `hotswap start`; the process exit code.
pub fn run(opts: Options) -> ExitCode {
    let dir = ReleaseDir::new(&opts.dir);
    let prepared = match prepare(&dir, opts.release_version.as_deref()) {
        Ok(p) => p,
        Err(StartFail(msg)) => {
            eprintln!("error: cannot start the node: {msg}");
            return ExitCode::FAILURE;
        }
    };
    if opts.background && !opts.detached {
        return background(&dir, &prepared.release.manifest.release.version);
    }
    if let Err(e) = init_logging(&dir, &prepared.release, opts.detached) {
        eprintln!(
            "error: cannot open the log file {}: {e}",
            dir.log_file().display()
        );
        return ExitCode::FAILURE;
    }
    let rt = match hotswap_runtime::sched::tune(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("hotswap-node"),
    )
    .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(serve(prepared));
    // Processes that ignore the stop are gone with the OS process; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}

/// What is checked and created before the node starts.
struct Prepared {
    release: Release,
    cookie: String,
    uid: u32,
}

fn prepare(dir: &ReleaseDir, wanted: Option<&str>) -> Result<Prepared, StartFail> {
    let vsn = Releases::select(dir, wanted).map_err(|e| StartFail(e.to_string()))?;
    let release = Release::load(dir, &vsn).map_err(StartFail)?;
    let run = dir.run_dir();
    std::fs::create_dir_all(&run)
        .map_err(|e| format!("cannot create the run directory {}: {e}", run.display()))?;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
        format!(
            "cannot make the run directory {} owner-only (chmod 700): {e}",
            run.display()
        )
    })?;
    let log = dir.log_dir();
    std::fs::create_dir_all(&log)
        .map_err(|e| format!("cannot create the log directory {}: {e}", log.display()))?;
    let sock = dir.socket();
    // sun_path holds 108 bytes with the terminating NUL.
    if sock.as_os_str().len() > 107 {
        return Err(StartFail(format!(
            "the control socket path {} is {} bytes, more than a Unix socket allows (107): move the release directory to a shorter path",
            sock.display(),
            sock.as_os_str().len()
        )));
    }
    if let Some(pid) = running_node(dir) {
        return Err(StartFail(format!(
            "a node of this release is already running (pid {pid}, control socket {}): stop it first with `hotswap stop -d {}`",
            sock.display(),
            dir.root().display()
        )));
    }
    // Stale files of a node that did not stop cleanly.
    for f in [dir.pid_file(), sock] {
        if f.exists() {
            let _ = std::fs::remove_file(&f);
        }
    }
    let cookie = ensure_cookie(&dir.cookie())?;
    let uid = std::fs::metadata(&run)
        .map_err(|e| format!("{}: {e}", run.display()))?
        .uid();
    Ok(Prepared {
        release,
        cookie,
        uid,
    })
}

/// The pid (as its pid file says, or "unknown") of a node of this release that accepts
/// connections on its control socket.
fn running_node(dir: &ReleaseDir) -> Option<String> {
    std::os::unix::net::UnixStream::connect(dir.socket()).ok()?;
    let pid = std::fs::read_to_string(dir.pid_file()).unwrap_or_default();
    let pid = pid.trim();
    Some(if pid.is_empty() {
        "unknown".into()
    } else {
        pid.to_string()
    })
}

/// Read the cookie, creating it (64 random hex digits, mode 0600) if absent. A cookie file
/// that others may read is refused.
fn ensure_cookie(path: &Path) -> Result<String, StartFail> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            let cookie = os::hex(&os::random_bytes(32)?);
            f.write_all(cookie.as_bytes())
                .map_err(|e| format!("cannot write the cookie file {}: {e}", path.display()))?;
            return Ok(cookie);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(StartFail(format!(
                "cannot create the cookie file {}: {e}",
                path.display()
            )))
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StartFail(format!(
            "the cookie file {} has mode {mode:04o}: others could read it; make it owner-only with `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let cookie = crate::control::read_cookie(path)
        .map_err(|e| format!("cannot read the cookie file {}: {e}", path.display()))?;
    if cookie.len() < 16 {
        return Err(StartFail(format!(
            "the cookie in {} is too short ({} characters, at least 16): delete the file and a new one is made at the next start",
            path.display(),
            cookie.len()
        )));
    }
    Ok(cookie)
}

/// Logs go to `log/node.log`, and to stderr unless detached. `RUST_LOG` overrides the
/// manifest's `log_level`.
fn init_logging(dir: &ReleaseDir, release: &Release, detached: bool) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.log_file())?;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(&release.manifest.node.log_level)
        })
    };
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_filter(filter());
    let stderr_layer = (!detached).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .with_filter(filter())
    });
    let _ = tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
    Ok(())
}

/// `--background`: run the node as a detached child, wait for its ready line, print it,
/// and return.
fn background(dir: &ReleaseDir, vsn: &str) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "error: cannot find this executable to start the node in the background: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("start")
        .arg(dir.root())
        .args(["--release-version", vsn, "--detached"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start the node in the background: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let ready = line.starts_with(READY);
            let _ = tx.send(line);
            if ready {
                break;
            }
        }
    });
    let limit = Duration::from_secs(120);
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(READY) => {
                println!("{line}");
                println!(
                    "running in the background; stop it with: hotswap stop -d {}",
                    dir.root().display()
                );
                return ExitCode::SUCCESS;
            }
            Ok(line) => println!("{line}"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "error: the node (pid {}) did not report ready within {limit:?}; it may still be starting: see {}",
                    child.id(),
                    dir.log_file().display()
                );
                return ExitCode::FAILURE;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait();
                let err = err_reader.join().unwrap_or_default();
                eprint!("{err}");
                eprintln!(
                    "error: the node exited before it was ready ({}); see {}",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    dir.log_file().display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Run the node until it is asked to stop.
async fn serve(p: Prepared) -> ExitCode {
    let Prepared {
        release,
        cookie,
        uid,
    } = p;
    let dir = release.dir.clone();
    let id = release.manifest.release.clone();
    info!(release = %id.name, version = %id.version, dir = %dir.root().display(), "starting node");
    // Signals first, so that a SIGTERM during boot is not lost.
    let (mut sigterm, mut sigint) = match (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            error!("cannot install the SIGTERM/SIGINT handlers: {e}");
            eprintln!("error: cannot install the SIGTERM/SIGINT handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let node = match Node::start(NodeConfig {
        code_dir: None,
        purge_timeout: Duration::from_millis(release.manifest.node.purge_timeout_ms),
        ..Default::default()
    }) {
        Ok(n) => n,
        Err(e) => {
            error!("cannot start the node: {e}");
            eprintln!("error: cannot start the node: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (state, mut stop_rx) = NodeState::new(node.clone(), release, cookie, uid);
    let stop_timeout = state.release.manifest.node.stop_timeout();

    if let Err(msg) = boot(&state).await {
        error!("{msg}");
        eprintln!("error: cannot start the node: {msg}");
        shutdown(&state, stop_timeout).await;
        return ExitCode::FAILURE;
    }
    let listener = match server::bind(&dir.socket()) {
        Ok(l) => l,
        Err(msg) => {
            error!("{msg}");
            eprintln!("error: cannot start the node: {msg}");
            shutdown(&state, stop_timeout).await;
            return ExitCode::FAILURE;
        }
    };
    let pid = std::process::id();
    if let Err(e) = std::fs::write(dir.pid_file(), format!("{pid}\n")) {
        let msg = format!(
            "cannot write the pid file {}: {e}",
            dir.pid_file().display()
        );
        error!("{msg}");
        eprintln!("error: cannot start the node: {msg}");
        drop(listener);
        let _ = std::fs::remove_file(dir.socket());
        shutdown(&state, stop_timeout).await;
        return ExitCode::FAILURE;
    }
    let accept = tokio::spawn(server::run(
        listener,
        state.clone(),
        control_limits(&state.release.manifest.node),
    ));
    info!(pid, socket = %dir.socket().display(), processes = node.process_count(), "node running");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{READY} release {} {}, pid {pid}, {} processes, control socket {}",
            id.name,
            id.version,
            node.process_count(),
            dir.socket().display()
        );
        let _ = out.flush();
    }

    let (why, code) = tokio::select! {
        _ = sigterm.recv() => ("SIGTERM received".to_string(), ExitCode::SUCCESS),
        _ = sigint.recv() => ("SIGINT received".to_string(), ExitCode::SUCCESS),
        w = stop_rx.recv() => (w.unwrap_or_else(|| "stop requested".into()), ExitCode::SUCCESS),
        h = node.halted() => (format!("the node terminates: {h}"), ExitCode::FAILURE),
    };
    let t = Instant::now();
    if code == ExitCode::SUCCESS {
        info!("{why}: stopping the node");
    } else {
        error!("{why}: stopping the other applications; the node exits with status 1");
    }
    // No new connections from here on: the socket goes first, so clients see "not running".
    accept.abort();
    let _ = std::fs::remove_file(dir.socket());
    let clean = shutdown(&state, stop_timeout).await;
    let _ = std::fs::remove_file(dir.pid_file());
    info!(
        elapsed_ms = t.elapsed().as_millis() as u64,
        clean, "node stopped"
    );
    code
}

/// File descriptors kept for the node's own use (its log, its runtime, module files)
/// beside the control connections.
const FD_RESERVE: libc::rlim_t = 256;

/// The control server's limits from the manifest, with the open-file limit raised to fit
/// `control_max_connections` (as far as the hard limit allows; fewer connections, and a
/// warning, if it does not).
fn control_limits(n: &crate::release::NodeSettings) -> server::Limits {
    let want = n.control_max_connections as libc::rlim_t + FD_RESERVE;
    let max_connections = match os::raise_open_files(want) {
        Ok(got) if got >= want => n.control_max_connections,
        Ok(got) => {
            let fit = got.saturating_sub(FD_RESERVE).max(16) as usize;
            warn!(
                open_files = got,
                control_max_connections = n.control_max_connections,
                "the open-file limit (its hard limit: ulimit -Hn) leaves room for {fit} control connections, not control_max_connections"
            );
            fit.min(n.control_max_connections)
        }
        Err(e) => {
            warn!("cannot read or raise the open-file limit: {e}");
            n.control_max_connections
        }
    };
    server::Limits {
        read_timeout: n.control_read_timeout(),
        max_connections,
    }
}

/// Load the release's modules (checking each one's name and version), start its
/// applications (dependencies first) and record it in the release store
/// ([`hotswap_runtime::release::Releases::boot`]). Stops at the first failure, or when an
/// application already started has terminated the node; [`shutdown`] then stops what did
/// start.
pub async fn boot(state: &NodeState) -> Result<(), String> {
    state
        .node
        .releases()
        .boot(&state.release)
        .await
        .map_err(|e| e.to_string())
}

/// Stop the node gracefully ([`Node::shutdown`] with `timeout` as its time limit). `true`
/// if every application stopped in time, nothing was stuck and every module version was
/// unmapped.
async fn shutdown(state: &NodeState, timeout: Duration) -> bool {
    let report = state.node.shutdown(timeout).await;
    if !report.stop.stuck.is_empty() {
        warn!(stuck = ?report.stop.stuck, "processes did not exit when killed");
    }
    for p in &report.stop.purges {
        if let Some(why) = &p.pinned {
            warn!(module = %p.module, version = ?p.version, "kept mapped at stop: {why}");
        }
    }
    report.clean()
}

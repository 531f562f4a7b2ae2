//! The control commands: one request to the node, its answer printed for people or as
//! JSON (`--json`).
//!
//! Exit status: 0 on success; 1 when the node refused or failed the command (the error
//! says why and what to do); 3 when the node could not be asked (not running, no socket,
//! permission denied, no cookie, a broken reply). Usage errors are clap's 2.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{read_cookie, read_frame, write_frame, ErrorReply, Reply, Request, MAX_REPLY};
use crate::os;
use crate::release::ReleaseDir;

/// Exit status when the node refused or failed the command.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status when the node could not be asked.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Where and how to reach a node.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its release directory.
    pub dir: ReleaseDir,
    /// A cookie given on the command line (default: `run/cookie`).
    pub cookie: Option<String>,
    /// How long to wait for the answer.
    pub timeout: Duration,
    /// Print JSON.
    pub json: bool,
}

/// A control command.
#[derive(Debug, Clone)]
pub enum Cmd {
    /// `ping`.
    Ping,
    /// `pid`.
    Pid,
    /// `stop`.
    Stop,
    /// `status`.
    Status,
    /// `processes`.
    Processes,
    /// `modules`.
    Modules,
    /// `load`.
    Load {
        /// The library.
        path: PathBuf,
        /// Purge old code first.
        purging: bool,
        /// Load even if the compatibility check refuses it.
        force: bool,
    },
    /// `check`: the compatibility check and the dry run against the node's current version.
    Check {
        /// The library.
        path: PathBuf,
        /// Downgrade findings refuse too.
        downgrade: bool,
    },
    /// `purge`.
    Purge(String),
    /// `soft-purge`.
    SoftPurge(String),
    /// `delete`.
    Delete(String),
    /// `which`.
    Which(String),
    /// `suspend`.
    Suspend(String),
    /// `resume`.
    Resume(String),
    /// `get-state`.
    GetState(String),
    /// `gen_server:call` (or `cast`) with a request given as JSON.
    Call {
        /// The server.
        target: String,
        /// The request.
        request: Value,
        /// Cast instead of call.
        cast: bool,
    },
    /// `change-code`.
    ChangeCode {
        /// Pid or registered name.
        target: String,
        /// The module whose current version builds the new state.
        module: String,
        /// The version the state was made by.
        old_vsn: String,
        /// `extra` for `code_change`, as JSON.
        extra: Option<Value>,
    },
    /// `children`.
    Children(Sup),
    /// `terminate-child`.
    TerminateChild {
        /// The supervisor.
        sup: Sup,
        /// The child's id, or its pid.
        child: String,
    },
    /// `restart-child`.
    RestartChild {
        /// The supervisor.
        sup: Sup,
        /// The child's id.
        child: String,
    },
    /// `ports`, or an action on a listener.
    Ports(Option<super::ports::Action>),
    /// `delete-child`.
    DeleteChild {
        /// The supervisor.
        sup: Sup,
        /// The child's id.
        child: String,
    },
    /// `releases`.
    Releases,
    /// `unpack`.
    Unpack(PathBuf),
    /// `upgrade`.
    Upgrade {
        /// The target release.
        version: String,
        /// Only print the plan.
        plan: bool,
        /// Make it permanent once done.
        permanent: bool,
        /// The suspend time limit of every process.
        suspend_timeout_ms: Option<u64>,
        /// Past the types check.
        force: bool,
    },
    /// `upgrade-status`.
    UpgradeStatus,
    /// `make-permanent`.
    MakePermanent(Option<String>),
    /// `remove-release`.
    RemoveRelease(String),
}

/// A supervisor, as a control command names it.
#[derive(Debug, Clone)]
pub enum Sup {
    /// A pid (`<0.12.0>`, `0.12`, `12`) or a registered name.
    Target(String),
    /// An application: its top supervisor.
    App(String),
}

impl Sup {
    fn wire(&self) -> Value {
        match self {
            Sup::Target(t) => json!({ "sup": t }),
            Sup::App(a) => json!({ "app": a }),
        }
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The node could not be asked.
    Unreachable(String),
    /// The node answered with an error.
    Refused(ErrorReply),
}

impl Cmd {
    fn wire(&self, timeout: Duration) -> (&'static str, Value) {
        let ms = timeout.as_millis() as u64;
        match self {
            Cmd::Ping => ("ping", Value::Null),
            Cmd::Pid => ("pid", Value::Null),
            Cmd::Stop => ("stop", Value::Null),
            Cmd::Status => ("status", Value::Null),
            Cmd::Processes => ("processes", Value::Null),
            Cmd::Ports(a) => super::ports::wire(a.as_ref(), timeout),
            Cmd::Modules => ("modules", Value::Null),
            Cmd::Load {
                path,
                purging,
                force,
            } => {
                let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                (
                    "load",
                    json!({ "path": abs, "purging": purging, "force": force }),
                )
            }
            Cmd::Check { path, downgrade } => {
                let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                ("check", json!({ "path": abs, "downgrade": downgrade }))
            }
            Cmd::Purge(m) => ("purge", json!({ "module": m })),
            Cmd::SoftPurge(m) => ("soft_purge", json!({ "module": m })),
            Cmd::Delete(m) => ("delete", json!({ "module": m })),
            Cmd::Which(m) => ("which", json!({ "module": m })),
            // The node's own wait is a little shorter than ours, so its answer arrives.
            Cmd::Suspend(t) => ("suspend", json!({ "target": t, "timeout_ms": ms * 9 / 10 })),
            Cmd::Resume(t) => ("resume", json!({ "target": t, "timeout_ms": ms * 9 / 10 })),
            Cmd::GetState(t) => (
                "get_state",
                json!({ "target": t, "timeout_ms": ms * 9 / 10 }),
            ),
            Cmd::Call {
                target,
                request,
                cast,
            } => (
                "call",
                json!({ "target": target, "request": request, "cast": cast, "timeout_ms": ms * 9 / 10 }),
            ),
            Cmd::ChangeCode {
                target,
                module,
                old_vsn,
                extra,
            } => (
                "change_code",
                json!({ "target": target, "module": module, "old_vsn": old_vsn, "extra": extra, "timeout_ms": ms * 9 / 10 }),
            ),
            Cmd::Children(sup) => ("children", sup_args(sup, None, ms)),
            Cmd::TerminateChild { sup, child } => {
                ("terminate_child", sup_args(sup, Some(child), ms))
            }
            Cmd::RestartChild { sup, child } => ("restart_child", sup_args(sup, Some(child), ms)),
            Cmd::DeleteChild { sup, child } => ("delete_child", sup_args(sup, Some(child), ms)),
            Cmd::Releases => ("releases", Value::Null),
            Cmd::Unpack(p) => {
                let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                ("unpack", json!({ "path": abs }))
            }
            Cmd::Upgrade {
                version,
                plan,
                permanent,
                suspend_timeout_ms,
                force,
            } => (
                "upgrade",
                json!({ "version": version, "plan": plan, "permanent": permanent, "suspend_timeout_ms": suspend_timeout_ms, "force": force }),
            ),
            Cmd::UpgradeStatus => ("upgrade_progress", Value::Null),
            Cmd::MakePermanent(v) => ("make_permanent", json!({ "version": v })),
            Cmd::RemoveRelease(v) => ("remove_release", json!({ "version": v })),
        }
    }
}

/// A supervisor command's arguments; the node's wait for the supervisor is a little
/// shorter than ours, so its answer arrives.
fn sup_args(sup: &Sup, child: Option<&String>, ms: u64) -> Value {
    let mut v = sup.wire();
    if let Some(c) = child {
        v["child"] = json!(c);
    }
    v["timeout_ms"] = json!(ms * 9 / 10);
    v
}

/// Run a control command; the process exit code.
pub fn run(t: &Target, cmd: &Cmd) -> ExitCode {
    let started = Instant::now();
    let (name, mut args) = cmd.wire(t.timeout);
    if matches!(cmd, Cmd::GetState(_)) && !t.json {
        // The state for people: the node renders it from its MessagePack (map keys of any
        // type, in the state's order), see `hotswap_runtime::control::msgpack`.
        args["render"] = json!("text");
    }
    let result = match cmd {
        Cmd::Upgrade { plan: false, .. } if !t.json => with_progress(t, name, args),
        _ => request(t, name, args),
    }
    .and_then(|v| match cmd {
        Cmd::Stop => wait_stopped(t, v, started),
        _ => Ok(v),
    });
    match result {
        Ok(v) => {
            if t.json {
                out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                ));
            } else {
                out(&human(cmd, &v));
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(e)) => {
            if t.json {
                out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&json!({ "ok": false, "error": e }))
                        .unwrap_or_default()
                ));
            }
            eprintln!("error: {}", e.message);
            if let Some(h) = &e.hint {
                eprintln!("  {h}");
            }
            ExitCode::from(EXIT_REFUSED)
        }
        Err(Failure::Unreachable(msg)) => {
            if t.json {
                out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(
                        &json!({ "ok": false, "error": { "kind": "unreachable", "message": msg } })
                    )
                    .unwrap_or_default()
                ));
            }
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// Send an upgrade and, while it runs, show its progress (phase, processes done of N,
/// elapsed) on stderr, asked of the node on a second connection.
fn with_progress(t: &Target, name: &'static str, args: Value) -> Result<Value, Failure> {
    let (tx, rx) = std::sync::mpsc::channel();
    let t2 = t.clone();
    std::thread::spawn(move || {
        let _ = tx.send(request(&t2, name, args));
    });
    let mut last = String::new();
    let probe = Target {
        timeout: Duration::from_secs(2),
        ..t.clone()
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => return r,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Failure::Unreachable("the upgrade request was lost".into()))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Ok(p) = request(&probe, "upgrade_progress", Value::Null) {
            if p.is_object() {
                let line = format!(
                    "upgrade to {}: {} {}/{} ({} ms)",
                    s(&p["to"]),
                    s(&p["phase"]),
                    p["done"],
                    p["total"],
                    p["elapsed_ms"]
                );
                if line != last {
                    eprintln!("{line}");
                    last = line;
                }
            }
        }
    }
}

/// Print the answer on stdout. A reader that went away (`hotswap processes | head`) is
/// not an error of the command: the rest is dropped, as other Unix tools do.
fn out(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes()).and_then(|()| o.flush());
}

/// After the node accepted `stop`: wait until its OS process is gone.
fn wait_stopped(t: &Target, v: Value, started: Instant) -> Result<Value, Failure> {
    let pid = v["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| {
            Failure::Unreachable(format!("the node's answer to stop has no pid: {v}"))
        })?;
    if !os::wait_pid_exit(pid, t.timeout) {
        return Err(Failure::Unreachable(format!(
            "the node (pid {pid}) accepted stop but is still running after {:?}; see {}",
            t.timeout,
            t.dir.log_file().display()
        )));
    }
    Ok(json!({ "pid": pid, "stopped": true, "elapsed_ms": started.elapsed().as_millis() as u64 }))
}

/// Send one request and return the result, or why there is none.
pub fn request(t: &Target, cmd: &str, args: Value) -> Result<Value, Failure> {
    let sock = t.dir.socket();
    let mut stream = connect(t)?;
    let cookie = match &t.cookie {
        Some(c) => c.clone(),
        None => {
            let path = t.dir.cookie();
            read_cookie(&path).map_err(|e| {
                Failure::Unreachable(match e.kind() {
                    ErrorKind::PermissionDenied => format!(
                        "permission denied reading the cookie {}: run as the node's user, or pass --cookie",
                        path.display()
                    ),
                    _ => format!("cannot read the cookie {}: {e}", path.display()),
                })
            })?
        }
    };
    let req = Request {
        cookie,
        cmd: cmd.into(),
        args,
    };
    let body = serde_json::to_vec(&req).map_err(|e| Failure::Unreachable(e.to_string()))?;
    let io = |e: std::io::Error| {
        Failure::Unreachable(match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
                "the node did not answer {cmd} within {:?} (socket {}); it may be busy: try a longer --timeout",
                t.timeout,
                sock.display()
            ),
            _ => format!("talking to the node on {} failed: {e}", sock.display()),
        })
    };
    stream.set_write_timeout(Some(t.timeout)).map_err(io)?;
    stream.set_read_timeout(Some(t.timeout)).map_err(io)?;
    write_frame(&mut stream, &body).map_err(io)?;
    let answer = read_frame(&mut stream, MAX_REPLY).map_err(io)?;
    let reply: Reply = serde_json::from_slice(&answer).map_err(|e| {
        Failure::Unreachable(format!("the node's answer is not a control reply: {e}"))
    })?;
    match (reply.ok, reply.result, reply.error) {
        (true, Some(v), _) => Ok(v),
        (true, None, _) => Ok(Value::Null),
        (false, _, Some(e)) => Err(Failure::Refused(e)),
        (false, _, None) => Err(Failure::Refused(ErrorReply::new(
            "unknown",
            "the node refused the request without saying why",
        ))),
    }
}

/// Connect to the control socket, explaining every way that can fail.
fn connect(t: &Target) -> Result<UnixStream, Failure> {
    let dir = &t.dir;
    let sock = dir.socket();
    let start_hint = format!("start it with: hotswap start {}", dir.root().display());
    match UnixStream::connect(&sock) {
        Ok(s) => Ok(s),
        Err(e) => Err(Failure::Unreachable(match e.kind() {
            ErrorKind::NotFound => {
                let run = dir.run_dir();
                if !dir.root().is_dir() {
                    format!(
                        "node is not running: {} is not a release directory (no such directory); pass the release directory with -d DIR",
                        dir.root().display()
                    )
                } else if std::fs::metadata(&run).is_err() {
                    format!(
                        "node is not running: no node has started from {} (it has no run/ directory); {start_hint}",
                        dir.root().display()
                    )
                } else if let Some(pid) = std::fs::read_to_string(dir.pid_file())
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .filter(|&p| os::pid_alive(p))
                {
                    format!(
                        "socket not found: {} does not exist, but the pid file names a live process {pid}: the node may be starting or stopping; try again, or see {}",
                        sock.display(),
                        dir.log_file().display()
                    )
                } else {
                    format!(
                        "node is not running (no control socket at {}); {start_hint}",
                        sock.display()
                    )
                }
            }
            ErrorKind::ConnectionRefused => format!(
                "node is not running: nothing listens on {} (left over from a node that did not stop cleanly); {start_hint}",
                sock.display()
            ),
            ErrorKind::PermissionDenied => {
                let owner = std::fs::metadata(dir.run_dir())
                    .map(|m| format!(" (it belongs to uid {})", m.uid()))
                    .unwrap_or_default();
                format!(
                    "permission denied: cannot connect to {}{owner}; only the node's user may control it",
                    sock.display()
                )
            }
            _ => format!("cannot connect to the node on {}: {e}", sock.display()),
        })),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a.iter().map(s).collect::<Vec<_>>().join(", "),
        _ => "none".into(),
    }
}

fn bytes(v: &Value) -> String {
    match v.as_u64() {
        Some(b) if b >= 10 << 20 => format!("{} MiB", b >> 20),
        Some(b) if b >= 10 << 10 => format!("{} KiB", b >> 10),
        Some(b) => format!("{b} B"),
        None => "-".into(),
    }
}

/// Rows as aligned columns.
fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

fn version_text(v: &Value) -> String {
    if v.is_null() {
        return "-".into();
    }
    format!("{} (#{})", s(&v["version"]), s(&v["instance"]))
}

/// The answer for people.
fn human(cmd: &Cmd, v: &Value) -> String {
    match cmd {
        Cmd::Ping => "pong\n".into(),
        Cmd::Pid => format!("{}\n", s(&v["pid"])),
        Cmd::Stop => format!(
            "node stopped (pid {}, {} ms)\n",
            s(&v["pid"]),
            s(&v["elapsed_ms"])
        ),
        Cmd::Status => {
            let mut out = format!(
                "release      {} {}\nnode pid     {}\nuptime       {:.1} s\nprocesses    {}\nmodules      {} ({} pinned)\nmemory       {} resident (peak {}), {} held for processes\n",
                s(&v["release"]["name"]),
                s(&v["release"]["version"]),
                s(&v["node_pid"]),
                v["uptime_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
                s(&v["processes"]),
                s(&v["modules"]),
                s(&v["pinned"]),
                bytes(&v["memory"]["rss_bytes"]),
                bytes(&v["memory"]["peak_rss_bytes"]),
                bytes(&v["memory"]["processes_bytes"]),
            );
            for a in v["applications"].as_array().into_iter().flatten() {
                let procs: Vec<String> = a["processes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let mut t = if p["pid"].is_null() {
                            format!("{} (not running)", s(&p["id"]))
                        } else {
                            s(&p["pid"])
                        };
                        if !p["name"].is_null() {
                            t.push_str(&format!(" {}", s(&p["name"])));
                        }
                        if p["alive"] == false && !p["pid"].is_null() {
                            t.push_str(" (exited)");
                        }
                        t
                    })
                    .collect();
                out.push_str(&format!(
                    "application  {} {} ({}, supervisor {}): {}\n",
                    s(&a["name"]),
                    s(&a["version"]),
                    s(&a["type"]),
                    s(&a["supervisor"]),
                    if procs.is_empty() {
                        "no children".into()
                    } else {
                        procs.join(", ")
                    }
                ));
            }
            if let Some(h) = v["halt_reason"].as_str() {
                out.push_str(&format!("terminating  {h}\n"));
            }
            out
        }
        Cmd::Ports(None) => super::ports::render(v),
        Cmd::Ports(Some(a)) => super::ports::render_action(a, v),
        Cmd::Processes => {
            let rows = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let code = if p["module"].is_null() {
                        match p["role"].as_str() {
                            Some(r @ ("supervisor" | "application_master")) => r.replace('_', " "),
                            _ => "-".to_string(),
                        }
                    } else {
                        format!(
                            "{} {}{}",
                            s(&p["module"]),
                            s(&p["version"]),
                            if p["old_code"] == true { " (old)" } else { "" }
                        )
                    };
                    vec![
                        s(&p["pid"]),
                        s(&p["name"]),
                        s(&p["application"]),
                        code,
                        s(&p["message_queue_len"]),
                        bytes(&p["memory"]),
                    ]
                })
                .collect();
            table(
                &["PID", "NAME", "APPLICATION", "RUNS", "QUEUE", "MEMORY"],
                rows,
            )
        }
        Cmd::Modules => {
            let mut pinned_lines = String::new();
            let rows = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    for p in m["pinned"].as_array().into_iter().flatten() {
                        pinned_lines.push_str(&format!(
                            "pinned: {} {} (#{}): {}\n",
                            s(&m["name"]),
                            s(&p["version"]),
                            s(&p["instance"]),
                            s(&p["reason"])
                        ));
                    }
                    vec![
                        s(&m["name"]),
                        version_text(&m["current"]),
                        list(&m["current"]["processes"]),
                        version_text(&m["old"]),
                        if m["old"].is_null() {
                            "-".into()
                        } else {
                            list(&m["old"]["processes"])
                        },
                        m["pinned"].as_array().map_or(0, Vec::len).to_string(),
                    ]
                })
                .collect();
            table(
                &["MODULE", "CURRENT", "RUN BY", "OLD", "RUN BY", "PINNED"],
                rows,
            ) + &pinned_lines
        }
        Cmd::Load { .. } => {
            let mut out = String::new();
            if v["killed"].as_array().is_some_and(|k| !k.is_empty()) {
                out.push_str(&format!(
                    "purged the old code of {} first: killed {}\n",
                    s(&v["name"]),
                    list(&v["killed"])
                ));
                out.push_str(&purge_restarts(v));
            }
            out.push_str(&format!(
                "loaded {} {} from {}\n",
                s(&v["name"]),
                version_text(&v["current"]),
                s(&v["current"]["source"])
            ));
            if !v["old"].is_null() {
                out.push_str(&format!(
                    "old code: {} {}, run by {}\n",
                    s(&v["name"]),
                    version_text(&v["old"]),
                    list(&v["old"]["processes"])
                ));
            }
            out
        }
        Cmd::Check { .. } => v["text"].as_str().unwrap_or_default().to_string(),
        Cmd::Purge(m) => match v["version"].as_str() {
            None => format!("{m}: no old code to purge\n"),
            Some(vsn) => {
                format!(
                    "purged {m} {vsn}: killed {}; {}\n",
                    list(&v["killed"]),
                    match v["pinned"].as_str() {
                        Some(why) => format!("kept mapped (pinned): {why}"),
                        None => "unmapped".into(),
                    }
                ) + &purge_restarts(v)
            }
        },
        Cmd::SoftPurge(m) => match v["version"].as_str() {
            None => format!("{m}: no old code to purge\n"),
            Some(vsn) => format!("soft-purged {m} {vsn}: no process ran it; unmapped\n"),
        },
        Cmd::Delete(m) => {
            format!("deleted {m}: its code is old now, nothing new can start in it\n")
        }
        Cmd::Which(m) => format!(
            "{m}: old code ({}) is run by {}\n{m}: current code ({}) is run by {}\n",
            s(&v["old_version"]),
            list(&v["old"]),
            s(&v["current_version"]),
            list(&v["current"])
        ),
        Cmd::Suspend(t) => format!("{t} ({}) suspended\n", s(&v["pid"])),
        Cmd::Resume(t) => format!("{t} ({}) resumed\n", s(&v["pid"])),
        Cmd::GetState(_) => match v["text"].as_str() {
            Some(t) => format!("{t}\n"),
            None => format!(
                "{}\n",
                serde_json::to_string_pretty(&v["state"]).unwrap_or_default()
            ),
        },
        Cmd::Call { target, cast, .. } => {
            if *cast {
                format!("cast sent to {target}\n")
            } else {
                format!(
                    "{}\n",
                    serde_json::to_string(&v["reply"]).unwrap_or_default()
                )
            }
        }
        Cmd::ChangeCode {
            target,
            module,
            old_vsn,
            ..
        } => format!(
            "{target} ({}): state changed from {module} {old_vsn} to the current version's\n",
            s(&v["pid"])
        ),
        Cmd::Children(_) => {
            let c = &v["counts"];
            let mut out = format!(
                "{}: {} specs, {} active ({} supervisors, {} workers)\n",
                sup_text(&v["supervisor"]),
                s(&c["specs"]),
                s(&c["active"]),
                s(&c["supervisors"]),
                s(&c["workers"]),
            );
            let rows: Vec<Vec<String>> = v["children"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| {
                    let mut pid = s(&k["pid"]);
                    if let Some(n) = k["name"].as_str() {
                        pid.push_str(&format!(" ({n})"));
                    }
                    let modules = list(&k["modules"]);
                    vec![
                        s(&k["id"]),
                        pid,
                        s(&k["type"]),
                        if modules == "none" { "-".into() } else { modules },
                    ]
                })
                .collect();
            if rows.is_empty() {
                out.push_str("no children\n");
            } else {
                out.push_str(&table(&["ID", "PID", "TYPE", "MODULES"], rows));
            }
            out
        }
        Cmd::TerminateChild { sup, child } => {
            let sup_t = sup_text(&v["supervisor"]);
            let what = match (v["id"].as_str(), v["pid"].as_str()) {
                (Some(id), Some(p)) if p.starts_with('<') => {
                    format!("terminated {id} ({p}) of {sup_t}")
                }
                (Some(id), Some(p)) => {
                    format!("{id} of {sup_t} was not running ({p}): nothing to terminate")
                }
                (Some(id), None) => format!("terminated {id} of {sup_t}"),
                (None, _) => format!("terminated {child} of {sup_t}"),
            };
            let after = match v["id"].as_str() {
                Some(id) if v["spec_kept"] == true => format!(
                    "its spec is kept: `hotswap restart-child {} {id}` starts it again, `hotswap delete-child {} {id}` removes it",
                    sup_arg(sup),
                    sup_arg(sup)
                ),
                Some(_) => "its spec is gone (a temporary child)".into(),
                None => "a simple_one_for_one child: it is gone".into(),
            };
            format!("{what}; {after}\n")
        }
        Cmd::RestartChild { child, .. } => match v["pid"].as_str() {
            Some(p) => format!(
                "restarted {child} of {}: it runs as {p}\n",
                sup_text(&v["supervisor"])
            ),
            None => format!(
                "restarted {child} of {}: its start returned ignore, it is not running (its spec is kept)\n",
                sup_text(&v["supervisor"])
            ),
        },
        Cmd::Releases => {
            let rows = v["releases"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| {
                            let running = v["running"] == r["version"];
                            vec![
                                s(&r["version"]),
                                s(&r["name"]),
                                s(&r["status"]),
                                if running { "running".into() } else { String::new() },
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(&["VERSION", "NAME", "STATUS", ""], rows)
        }
        Cmd::Unpack(_) => format!(
            "release {} unpacked: upgrade to it with `hotswap upgrade {}` (see the plan first with --plan)\n",
            s(&v["version"]),
            s(&v["version"])
        ),
        Cmd::Upgrade { plan: true, .. } => s(&v["text"]),
        Cmd::Upgrade { .. } => upgrade_text(v),
        Cmd::UpgradeStatus => {
            if v.is_null() {
                "no upgrade in progress\n".into()
            } else {
                format!(
                    "upgrade to {}: {} {}/{} ({} ms)\n",
                    s(&v["to"]),
                    s(&v["phase"]),
                    v["done"],
                    v["total"],
                    v["elapsed_ms"]
                )
            }
        }
        Cmd::MakePermanent(_) => format!(
            "release {} is permanent: a restart boots it\n",
            s(&v["version"])
        ),
        Cmd::RemoveRelease(_) => {
            let mut out = format!("release {} removed; deleted:\n", s(&v["version"]));
            for f in v["removed"].as_array().into_iter().flatten() {
                out.push_str(&format!("  {}\n", s(f)));
            }
            out
        }
        Cmd::DeleteChild { child, .. } => format!(
            "deleted the spec of {child} from {}\n",
            sup_text(&v["supervisor"])
        ),
    }
}

/// `tally-1 (<0.3.0>)`: a killed process by its id (or name) and pid.
fn victim_text(k: &Value) -> String {
    match k["id"].as_str().or(k["name"].as_str()) {
        Some(n) => format!("{n} ({})", s(&k["pid"])),
        None => s(&k["pid"]),
    }
}

/// The lines of a purge's answer that say who restarts the processes it killed.
fn purge_restarts(v: &Value) -> String {
    let killed = v["killed_processes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = String::new();
    for sup in v["supervisors"].as_array().into_iter().flatten() {
        let theirs: Vec<String> = killed
            .iter()
            .filter(|k| k["will_restart"] == true && k["supervisor"]["pid"] == sup["pid"])
            .map(victim_text)
            .collect();
        let n = sup["restarts"].as_u64().unwrap_or(0);
        let flags = match (sup["intensity"].as_u64(), sup["period_secs"].as_u64()) {
            (Some(i), Some(p)) if sup["exceeds_intensity"] == true => format!(
                "; {n} restarts are more than its intensity ({i} in {p} s) allows: it will give up, stopping its children{}",
                if sup["application"].is_string() {
                    ", and its application terminates (a permanent application takes the node down)"
                } else {
                    ""
                }
            ),
            (Some(i), Some(p)) => {
                format!("; {n} of at most {i} restarts in {p} s (its intensity)")
            }
            _ => String::new(),
        };
        out.push_str(&format!(
            "restarted by {}: {}{flags}\n",
            sup_text(sup),
            theirs.join(", ")
        ));
    }
    for k in killed.iter().filter(|k| k["will_restart"] != true) {
        let why = match (k["supervisor"].is_null(), k["restart"].as_str()) {
            (true, _) => "it has no supervisor in an application's tree".to_string(),
            (false, Some(r)) => format!("a {r} child of {}", sup_text(&k["supervisor"])),
            (false, None) => format!(
                "a child of {}, which did not give its child spec in time: whether it restarts it is not known",
                sup_text(&k["supervisor"])
            ),
        };
        out.push_str(&format!("not restarted: {} ({why})\n", victim_text(k)));
    }
    out
}

/// `supervisor <0.2.0>`, `supervisor game_sup (<0.2.0>)`, `... (application shop)`.
/// The summary of a successful upgrade.
fn upgrade_text(v: &Value) -> String {
    let r = &v["report"];
    let names = |k: &str| list(&r[k]);
    let mut out = format!(
        "{} from release {} to {}: done in {:.1} ms\n",
        if r["direction"] == "Down" {
            "downgrade"
        } else {
            "upgrade"
        },
        s(&r["from"]),
        s(&r["to"]),
        r["total_ms"].as_f64().unwrap_or(0.0)
    );
    out.push_str(&format!(
        "  modules: changed {}; added {}; removed {}\n",
        names("modules_changed"),
        names("modules_added"),
        names("modules_removed")
    ));
    out.push_str(&format!(
        "  processes: {} server(s) migrated by code_change, {} switch at their next call, {} restarted\n",
        r["servers_migrated"], r["processes_switching"], r["processes_restarted"]
    ));
    out.push_str(&format!(
        "  pause: {:.1} ms (servers suspended); check {:.1} ms\n",
        r["pause_ms"].as_f64().unwrap_or(0.0),
        r["check_ms"].as_f64().unwrap_or(0.0)
    ));
    for p in r["phases"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "    {:<14} {:.1} ms\n",
            s(&p[0]),
            p[1].as_f64().unwrap_or(0.0)
        ));
    }
    if r["applications_started"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
        || r["applications_stopped"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    {
        out.push_str(&format!(
            "  applications: started {}; stopped {}\n",
            names("applications_started"),
            names("applications_stopped")
        ));
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("  warning: {}\n", s(w)));
    }
    out.push_str(&if v["status"] == "permanent" {
        format!("release {} is permanent: a restart boots it\n", s(&r["to"]))
    } else {
        format!(
            "release {} is current, not permanent: a restart boots the permanent release; keep it with `hotswap make-permanent`\n",
            s(&r["to"])
        )
    });
    out
}

fn sup_text(v: &Value) -> String {
    let mut out = match v["name"].as_str() {
        Some(n) => format!("supervisor {n} ({})", s(&v["pid"])),
        None => format!("supervisor {}", s(&v["pid"])),
    };
    if let Some(a) = v["application"].as_str() {
        out.push_str(&format!(" (application {a})"));
    }
    out
}

/// The supervisor as the command line named it, for the next command to type.
fn sup_arg(sup: &Sup) -> String {
    match sup {
        Sup::Target(t) => t.clone(),
        Sup::App(a) => format!("--app {a}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_says_who_restarts_what_it_killed_and_what_is_not_restarted() {
        let sup = json!({ "pid": "<0.2.0>", "name": "top", "application": "shop" });
        let v = json!({
            "module": "m", "version": "1", "pinned": null,
            "killed": ["<0.3.0>", "<0.4.0>", "<0.5.0>", "<0.6.0>", "<0.7.0>"],
            "killed_processes": [
                { "pid": "<0.3.0>", "id": "cart", "supervisor": sup, "restart": "permanent", "will_restart": true },
                { "pid": "<0.4.0>", "id": null, "name": "audit", "supervisor": sup, "restart": "transient", "will_restart": true },
                { "pid": "<0.5.0>", "id": "tmp", "supervisor": sup, "restart": "temporary", "will_restart": false },
                { "pid": "<0.6.0>", "supervisor": null, "restart": null, "will_restart": false },
                { "pid": "<0.7.0>", "id": "x", "supervisor": sup, "restart": null, "will_restart": false },
            ],
            "supervisors": [{
                "pid": "<0.2.0>", "name": "top", "application": "shop", "restarts": 2,
                "intensity": 1, "period_secs": 5, "exceeds_intensity": true,
            }],
        });
        let t = human(&Cmd::Purge("m".into()), &v);
        assert_eq!(
            t,
            "purged m 1: killed <0.3.0>, <0.4.0>, <0.5.0>, <0.6.0>, <0.7.0>; unmapped\n\
             restarted by supervisor top (<0.2.0>) (application shop): cart (<0.3.0>), audit (<0.4.0>); 2 restarts are more than its intensity (1 in 5 s) allows: it will give up, stopping its children, and its application terminates (a permanent application takes the node down)\n\
             not restarted: tmp (<0.5.0>) (a temporary child of supervisor top (<0.2.0>) (application shop))\n\
             not restarted: <0.6.0> (it has no supervisor in an application's tree)\n\
             not restarted: x (<0.7.0>) (a child of supervisor top (<0.2.0>) (application shop), which did not give its child spec in time: whether it restarts it is not known)\n"
        );
        // Nothing old: nothing killed.
        let t = human(&Cmd::Purge("m".into()), &json!({ "version": null }));
        assert_eq!(t, "m: no old code to purge\n");
    }
}

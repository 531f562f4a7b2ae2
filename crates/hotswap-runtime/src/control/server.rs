//! The node's side of the control protocol (see the parent module for the wire format).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::supervisor::{ChildInfo, ChildPid, ChildRef, Restart, Strategy, SupError, SupState};
use crate::{CodeError, LoadError, ModuleInfo, Node, Pid, ServerRef, SysError, VersionInfo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use super::node_state::NodeState;
use super::{cookie_eq, ErrorReply, Reply, Request, MAX_REQUEST};

/// How long a client has to take its reply.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bind the control socket and make it owner-only (mode 0600) before anything is
/// accepted. (The run directory is mode 0700 too, so nobody else can reach the socket
/// even in the moment between bind and chmod.)
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    let l = UnixListener::bind(path).map_err(|e| {
        format!(
            "cannot listen on the control socket {}: {e}",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        format!(
            "cannot make the control socket {} owner-only (chmod 600): {e}",
            path.display()
        )
    })?;
    Ok(l)
}

/// The limits of the control server (the manifest's `[node]` settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a connection may take to send its whole request (`control_read_timeout_ms`).
    pub read_timeout: Duration,
    /// How many connections may be open at once (`control_max_connections`).
    pub max_connections: usize,
}

impl Default for Limits {
    /// The manifest's defaults ([`NodeSettings::default`](crate::release::NodeSettings)).
    fn default() -> Limits {
        let n = crate::release::NodeSettings::default();
        Limits {
            read_timeout: n.control_read_timeout(),
            max_connections: n.control_max_connections,
        }
    }
}

/// The connections still reading their request, oldest first: dropping one's sender
/// closes it (when the node has `max_connections` open and another arrives).
#[derive(Default)]
struct Reading {
    next: u64,
    open: std::collections::BTreeMap<u64, tokio::sync::oneshot::Sender<()>>,
}

/// Accept connections until the task is aborted.
///
/// Every connection is served by a task of its own, so a client that sends nothing, or
/// sends slowly, costs only itself: a file descriptor and a small task until its read
/// deadline ([`Limits::read_timeout`]), when it gets an error answer and is closed. The
/// accept loop never waits for a connection. At most [`Limits::max_connections`] are open
/// at once; when one more arrives, the connection that has been reading its request the
/// longest is closed (with an error answer saying why) to make room, and when every open
/// connection is running a command the newcomer gets a `busy` answer instead.
pub async fn run(listener: UnixListener, state: Arc<NodeState>, limits: Limits) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let reading = Arc::new(std::sync::Mutex::new(Reading::default()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: keep serving, do not spin.
                warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                // Full: make room by closing the connection that has waited longest for
                // its request, if any is still reading.
                let evicted = lock(&reading).open.pop_first();
                if evicted.is_none() {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let reply = Reply::err(
                            ErrorReply::new(
                                "busy",
                                format!(
                                    "the node is running {} control commands at once (control_max_connections); this connection was refused",
                                    limits.max_connections
                                ),
                            )
                            .hint("try again when they are done"),
                        );
                        write_reply(stream, &reply, After::Nothing, &state).await;
                    });
                    continue;
                }
                debug!("control connections at their limit: the oldest idle one is closed");
                // Its task ends at once and returns its permit, which this one waits for.
                None
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = {
            let mut r = lock(&reading);
            let id = r.next;
            r.next += 1;
            r.open.insert(id, tx);
            id
        };
        let (state, permits, reading) = (state.clone(), permits.clone(), reading.clone());
        tokio::spawn(async move {
            let _permit = match permit {
                Some(p) => p,
                None => match permits.acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            connection(stream, state, limits, rx, || {
                lock(&reading).open.remove(&id);
            })
            .await;
        });
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What to do once the reply is written.
enum After {
    Nothing,
    Stop(String),
}

/// Serve one connection: check the peer, read its request (until the read deadline, or
/// until `evicted` fires), run it, answer. `read_done` is called once the request is read
/// (or reading failed), from when the connection can no longer be evicted.
async fn connection(
    mut stream: UnixStream,
    state: Arc<NodeState>,
    limits: Limits,
    evicted: tokio::sync::oneshot::Receiver<()>,
    read_done: impl FnOnce(),
) {
    let read_timeout = limits.read_timeout;
    let read = match stream.peer_cred() {
        Ok(c) if c.uid() != state.uid && c.uid() != 0 => Err(ErrorReply::new(
            "permission_denied",
            format!(
                "permission denied: the node runs as uid {}, this request came from uid {}",
                state.uid,
                c.uid()
            ),
        )
        .hint("run the control command as the node's user")),
        _ => tokio::select! {
            r = tokio::time::timeout(read_timeout, read_request(&mut stream)) => match r {
                Err(_) => Err(ErrorReply::new(
                    "bad_request",
                    format!("the request was not complete within {read_timeout:?} (control_read_timeout_ms); the connection is closed"),
                )),
                Ok(r) => r,
            },
            _ = evicted => Err(ErrorReply::new(
                "busy",
                format!(
                    "closed: the node had {} control connections open (control_max_connections) and this one had waited longest for its request",
                    limits.max_connections
                ),
            )
            .hint("send the request as soon as the connection is open")),
        },
    };
    read_done();
    let (reply, after) = match read {
        Err(e) => (Reply::err(e), After::Nothing),
        Ok(body) => handle(&body, &state).await,
    };
    write_reply(stream, &reply, after, &state).await;
}

/// Write the reply (within [`WRITE_TIMEOUT`]), close, then do what comes after.
async fn write_reply(mut stream: UnixStream, reply: &Reply, after: After, state: &NodeState) {
    let body = serde_json::to_vec(reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&frame).await?;
        stream.shutdown().await
    })
    .await;
    if let After::Stop(who) = after {
        let _ = state.stop.send(who);
    }
}

async fn read_request(stream: &mut UnixStream) -> Result<Vec<u8>, ErrorReply> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(|e| {
        ErrorReply::new(
            "bad_request",
            format!("the request ended before its 4-byte length: {e}"),
        )
    })?;
    let len = u32::from_be_bytes(len);
    if len > MAX_REQUEST {
        return Err(ErrorReply::new(
            "bad_request",
            format!("the request is {len} bytes; the limit is {MAX_REQUEST}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await.map_err(|e| {
        ErrorReply::new(
            "bad_request",
            format!("the request ended before its {len} bytes: {e}"),
        )
    })?;
    Ok(body)
}

fn bad(msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new("bad_request", msg)
}

async fn handle(body: &[u8], state: &NodeState) -> (Reply, After) {
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                Reply::err(bad(format!(
                    "the request is not JSON {{\"cookie\", \"cmd\", \"args\"}}: {e}"
                ))),
                After::Nothing,
            )
        }
    };
    if !cookie_eq(req.cookie.as_bytes(), state.cookie.as_bytes()) {
        warn!(cmd = %truncate(&req.cmd), "control request with a wrong cookie refused");
        return (
            Reply::err(
                ErrorReply::new(
                    "wrong_cookie",
                    "wrong cookie: the request's cookie is not this node's",
                )
                .hint(format!(
                    "use the cookie in {} (the default), or pass the right one with --cookie",
                    state.release.dir.cookie().display()
                )),
            ),
            After::Nothing,
        );
    }
    debug!(cmd = %req.cmd, "control request");
    let args = Args(&req.args);
    let result = match req.cmd.as_str() {
        "ping" => Ok(json!("pong")),
        "pid" => Ok(json!({ "pid": std::process::id() })),
        "stop" => {
            info!("stop requested through the control socket");
            return (
                Reply::ok(json!({ "pid": std::process::id(), "stopping": true })),
                After::Stop("stop requested through the control socket".into()),
            );
        }
        "status" => Ok(status(state).await),
        "processes" => Ok(processes(state).await),
        "modules" => Ok(modules(state)),
        "load" => load(state, args).await,
        "check" => check(state, args).await,
        "purge" => purge(state, args).await,
        "soft_purge" => soft_purge(state, args).await,
        "delete" => delete(state, args).await,
        "which" => which(state, args),
        "suspend" | "resume" | "get_state" | "change_code" => {
            sys(state, req.cmd.as_str(), args).await
        }
        "call" => super::call::call(&state.node, args.0).await,
        "children" => children(state, args).await,
        "terminate_child" => terminate_child(state, args).await,
        "restart_child" => restart_child(state, args).await,
        "delete_child" => delete_child(state, args).await,
        "releases" => super::releases::releases(&state.node),
        "unpack" => super::releases::unpack(&state.node, &req.args).await,
        "upgrade" => super::releases::upgrade(&state.node, &req.args).await,
        "upgrade_progress" => Ok(super::releases::progress(&state.node)),
        "make_permanent" => super::releases::make_permanent(&state.node, &req.args).await,
        "remove_release" => super::releases::remove(&state.node, &req.args).await,
        "ports" => super::ports::command(&state.node, &req.args).await,
        "top" => Ok(super::top::snapshot(&state.node, state.started.elapsed())),
        other => Err(bad(format!("unknown command {:?}", truncate(other))).hint(
            "the commands are ping, pid, stop, status, processes, modules, load, check, purge, soft_purge, delete, which, suspend, resume, get_state, change_code, call, children, terminate_child, restart_child, delete_child, releases, unpack, upgrade, upgrade_progress, make_permanent, remove_release, ports, top",
        )),
    };
    match result {
        Ok(v) => (Reply::ok(v), After::Nothing),
        Err(e) => (Reply::err(e), After::Nothing),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A request's arguments.
#[derive(Clone, Copy)]
struct Args<'a>(&'a Value);

impl Args<'_> {
    fn str(&self, key: &str) -> Result<&str, ErrorReply> {
        match self.0.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => Err(bad(format!("argument {key:?} must be a non-empty string"))),
            None => Err(bad(format!("missing argument {key:?}"))),
        }
    }

    fn bool(&self, key: &str) -> Result<bool, ErrorReply> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad(format!("argument {key:?} must be true or false"))),
        }
    }

    fn millis(&self, key: &str) -> Result<Option<Duration>, ErrorReply> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&ms| ms <= 3_600_000)
                .map(|ms| Some(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    bad(format!(
                        "argument {key:?} must be a number of milliseconds (at most one hour)"
                    ))
                }),
        }
    }
}

fn ms_since_epoch(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This process's resident and peak resident memory in bytes, from `/proc/self/status`.
fn memory() -> (Option<u64>, Option<u64>) {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn status(state: &NodeState) -> Value {
    let node = &state.node;
    // Counted before asking the supervisors, whose answers come through helper processes.
    let process_count = node.process_count();
    let code = node.code();
    let (rss, peak) = memory();
    let process_bytes: usize = node
        .processes()
        .into_iter()
        .filter_map(|p| node.process_info(p))
        .map(|i| i.memory)
        .sum();
    let mut apps = Vec::new();
    for a in node.applications() {
        let children = state.app_children(&a).await;
        apps.push(json!({
            "name": a.name,
            "version": a.version,
            "type": a.start_type.to_string(),
            "depends": a.depends,
            "master": a.master.to_string(),
            "supervisor": a.supervisor.to_string(),
            "processes": children.iter().map(|c| json!({
                "id": c.id,
                "pid": c.pid.map(|p| p.to_string()),
                "name": c.pid.and_then(|p| node.process_info(p)).and_then(|i| i.name),
                "starts": c.starts,
                "type": c.child_type,
                "alive": c.pid.is_some_and(|p| node.is_alive(p)),
            })).collect::<Vec<_>>(),
        }));
    }
    // The release the node runs now (an upgrade changes it).
    let running = state.running();
    let id = &running.manifest.release;
    json!({
        "release": { "name": id.name, "version": id.version },
        "release_dir": running.dir.root(),
        "manifest": running.path,
        "node_pid": std::process::id(),
        "hotswap_version": env!("CARGO_PKG_VERSION"),
        "started_at_ms": ms_since_epoch(state.started_at),
        "uptime_ms": state.started.elapsed().as_millis() as u64,
        "processes": process_count,
        "modules": code.modules().len(),
        "pinned": code.pinned().len(),
        "memory": { "rss_bytes": rss, "peak_rss_bytes": peak, "processes_bytes": process_bytes },
        "applications": apps,
        "halt_reason": node.halt_reason(),
    })
}

async fn processes(state: &NodeState) -> Value {
    let node = &state.node;
    // Listed before asking the supervisors, whose answers come through helper processes.
    let infos: Vec<_> = node
        .processes()
        .into_iter()
        .filter_map(|pid| node.process_info(pid))
        .collect();
    let roles = state.app_processes().await;
    // module -> its old version (instance, version) and its current version string, to
    // mark processes running old code (or gen_servers whose state the old version made).
    let mods = node.code().modules();
    let old: HashMap<&str, (u64, &str)> = mods
        .iter()
        .filter_map(|m| {
            m.old
                .as_ref()
                .map(|o| (m.name.as_str(), (o.instance, o.version.as_str())))
        })
        .collect();
    let current: HashMap<&str, &str> = mods
        .iter()
        .filter_map(|m| {
            m.current
                .as_ref()
                .map(|c| (m.name.as_str(), c.version.as_str()))
        })
        .collect();
    let list: Vec<Value> = infos
        .into_iter()
        .map(|i| {
            let (module, version) = runs(&i);
            let old_code = i
                .running
                .iter()
                .any(|(m, _, inst)| old.get(m.as_str()).is_some_and(|o| o.0 == *inst))
                || i.gen_server.as_ref().is_some_and(|(m, v)| {
                    old.get(m.as_str()).is_some_and(|o| o.1 == v)
                        && current.get(m.as_str()) != Some(&v.as_str())
                });
            json!({
                "pid": i.pid.to_string(),
                "name": i.name,
                "application": roles.get(&i.pid).map(|r| &r.0),
                "role": roles.get(&i.pid).map(|r| r.1.as_str()),
                "module": module,
                "version": version,
                "old_code": old_code,
                "gen_server": i.gen_server.as_ref().map(|(m, v)| json!({ "module": m, "version": v })),
                "running": i.running.iter().map(|(m, v, inst)| json!({ "module": m, "version": v, "instance": inst })).collect::<Vec<_>>(),
                "message_queue_len": i.message_queue_len,
                "memory": i.memory,
                "links": i.links.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
                "trap_exit": i.trap_exit,
            })
        })
        .collect();
    Value::Array(list)
}

fn version_json(v: &VersionInfo) -> Value {
    json!({
        "version": v.version,
        "instance": v.instance,
        "build_id": v.build_id,
        "source": v.source,
        "file": v.file,
        "loaded_at_ms": ms_since_epoch(v.loaded_at),
        "exports": v.exports,
        "processes": v.processes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    })
}

fn module_json(m: &ModuleInfo, pinned: &[Value]) -> Value {
    json!({
        "name": m.name,
        "current": m.current.as_ref().map(version_json),
        "old": m.old.as_ref().map(version_json),
        "pinned": pinned,
    })
}

fn modules(state: &NodeState) -> Value {
    let code = state.node.code();
    let mut pinned: HashMap<String, Vec<Value>> = HashMap::new();
    for p in code.pinned() {
        pinned.entry(p.module.clone()).or_default().push(json!({
            "version": p.version.version, "instance": p.version.instance, "reason": p.reason,
            "processes": p.version.processes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        }));
    }
    let mut list: Vec<Value> = code
        .modules()
        .iter()
        .map(|m| module_json(m, pinned.remove(&m.name).as_deref().unwrap_or_default()))
        .collect();
    // Versions of modules that are otherwise gone but could not be unmapped.
    for (name, p) in pinned {
        list.push(json!({ "name": name, "current": null, "old": null, "pinned": p }));
    }
    list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Value::Array(list)
}

fn pids_json(p: &[Pid]) -> Value {
    json!(p.iter().map(|p| p.to_string()).collect::<Vec<_>>())
}

fn code_error(e: CodeError) -> ErrorReply {
    let msg = e.to_string();
    match e {
        CodeError::NotPurged {
            module,
            old_version,
            processes,
        } => ErrorReply::new("not_purged", msg)
            .hint(format!(
                "`hotswap purge {module}` frees the old code (killing the processes running it); `hotswap soft-purge {module}` frees it once no process runs it; `hotswap load --purging` does the purge and the load in one step"
            ))
            .details(json!({ "module": module, "old_version": old_version, "processes": pids_json(&processes) })),
        CodeError::NotLoaded { module } => ErrorReply::new("not_loaded", msg)
            .hint("`hotswap modules` lists the loaded modules; `hotswap load <library>` loads one")
            .details(json!({ "module": module })),
        CodeError::OldCodeExists { module } => ErrorReply::new("old_code_exists", msg)
            .hint(format!("purge the old code first: `hotswap purge {module}` or `hotswap soft-purge {module}`"))
            .details(json!({ "module": module })),
        CodeError::Load(LoadError::NoFile { .. }) => ErrorReply::new("no_file", msg)
            .hint("give the path of a module library (lib<crate>.so) as the node can see it"),
        CodeError::Load(_) => ErrorReply::new("load_failed", msg),
        CodeError::Incompatible { report } => ErrorReply::new("incompatible", msg)
            .hint("`hotswap check --node <library>` shows the whole report; `hotswap load --force` loads it anyway")
            .details(json!(report)),
    }
}

async fn load(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let path = Path::new(args.str("path")?);
    if !path.is_absolute() {
        return Err(bad(format!(
            "the library path {} must be absolute (the node's working directory is not the client's)",
            path.display()
        )));
    }
    let purging = args.bool("purging")?;
    let force = args.bool("force")?;
    let code = state.node.code();
    // A purging load kills what runs the module's old code. Which module the file holds
    // is known only once it is loaded, so the processes on any module's old code, and
    // their supervisors, are taken first.
    let old: Vec<(String, Pid)> = if purging {
        code.modules()
            .into_iter()
            .flat_map(|m| {
                let name = m.name;
                m.old
                    .map(|o| o.processes)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |p| (name.clone(), p))
            })
            .collect()
    } else {
        Vec::new()
    };
    let victims = Victims::find(state, &old.iter().map(|(_, p)| *p).collect::<Vec<_>>()).await;
    let r = code
        .load_with(
            path,
            crate::LoadOptions {
                purging,
                force,
                unchecked: false,
            },
        )
        .await;
    let m = r.map_err(|e| {
        warn!(file = %path.display(), "load refused: {e}");
        code_error(e)
    })?;
    if let Some(c) = &m.current {
        info!(module = %m.name, version = %c.version, instance = c.instance, file = %path.display(), purging, "loaded");
    }
    let mut v = module_json(&m, &[]);
    if purging {
        // The ones on this module's old code that are gone now: the purge killed them.
        let killed: Vec<Pid> = old
            .iter()
            .filter(|(name, p)| *name == m.name && !state.node.is_alive(*p))
            .map(|(_, p)| *p)
            .collect();
        let (procs, sups) = victims.answer(&killed);
        v["killed"] = pids_json(&killed);
        v["killed_processes"] = procs;
        v["supervisors"] = sups;
    }
    Ok(v)
}

/// What a purge's answer says about one process it kills: who restarts it, found before
/// the purge (a killed process has no links left to look at).
struct Victim {
    name: Option<String>,
    app: Option<String>,
    /// Its supervisor, its id there and its restart type, if it is a child in an
    /// application's tree.
    sup: Option<(Pid, Option<String>, Option<Restart>)>,
}

/// A supervisor of killed processes: its flags, as its `sys` state says.
struct SupFlags {
    strategy: Strategy,
    intensity: u32,
    period_secs: u64,
}

/// The processes a purge may kill and their supervisors, as they were before it.
#[derive(Default)]
struct Victims {
    of: HashMap<Pid, Victim>,
    flags: HashMap<Pid, SupFlags>,
    /// Each supervisor as the answer names it, taken before the purge too: one that gives
    /// up may be gone with its application by the time the purge returns.
    sups: HashMap<Pid, Value>,
}

impl Victims {
    /// Find each of `pids` in the application tree: its supervisor, its id and restart
    /// type there, and the supervisor's flags.
    async fn find(state: &NodeState, pids: &[Pid]) -> Victims {
        let mut v = Victims::default();
        if pids.is_empty() {
            return v;
        }
        let node = &state.node;
        let tree = state.app_tree().await;
        let mut specs: HashMap<(Pid, Option<String>), Option<Restart>> = HashMap::new();
        for &p in pids {
            let entry = tree.get(&p);
            let sup = match entry.and_then(|e| e.parent.map(|s| (s, e.id.clone()))) {
                Some((sup, id)) => {
                    let restart = match specs.get(&(sup, id.clone())) {
                        Some(r) => *r,
                        None => {
                            let r = tokio::time::timeout(
                                SUP_TIMEOUT,
                                node.supervisor().get_childspec(sup, ChildRef::Pid(p)),
                            )
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .map(|c| c.restart);
                            specs.insert((sup, id.clone()), r);
                            r
                        }
                    };
                    v.sups.entry(sup).or_insert_with(|| {
                        json!({
                            "pid": sup.to_string(),
                            "name": node.process_info(sup).and_then(|i| i.name),
                            "application": node.applications().into_iter().find(|a| a.supervisor == sup).map(|a| a.name),
                        })
                    });
                    if let std::collections::hash_map::Entry::Vacant(e) = v.flags.entry(sup) {
                        let got = node
                            .sys()
                            .timeout(SUP_TIMEOUT)
                            .get_state::<SupState>(sup)
                            .await;
                        if let Ok(st) = got {
                            e.insert(SupFlags {
                                strategy: st.strategy,
                                intensity: st.intensity,
                                period_secs: st.period_secs,
                            });
                        }
                    }
                    Some((sup, id, restart))
                }
                None => None,
            };
            v.of.insert(
                p,
                Victim {
                    name: node.process_info(p).and_then(|i| i.name),
                    app: entry.map(|e| e.app.clone()),
                    sup,
                },
            );
        }
        v
    }

    /// The answer's `killed_processes` and `supervisors` for the processes `killed`.
    fn answer(&self, killed: &[Pid]) -> (Value, Value) {
        let sup_info = |sup: Pid| {
            self.sups
                .get(&sup)
                .cloned()
                .unwrap_or_else(|| json!({ "pid": sup.to_string() }))
        };
        let mut restarts: Vec<(Pid, usize)> = Vec::new();
        let procs: Vec<Value> = killed
            .iter()
            .map(|p| {
                let v = self.of.get(p);
                let sup = v.and_then(|v| v.sup.as_ref());
                // Killed is an abnormal exit: permanent and transient children are restarted.
                let will_restart = sup.is_some_and(|(_, _, r)| {
                    matches!(r, Some(Restart::Permanent | Restart::Transient))
                });
                if let (true, Some((s, _, _))) = (will_restart, sup) {
                    match restarts.iter_mut().find(|(x, _)| x == s) {
                        Some((_, n)) => *n += 1,
                        None => restarts.push((*s, 1)),
                    }
                }
                json!({
                    "pid": p.to_string(),
                    "name": v.and_then(|v| v.name.clone()),
                    "application": v.and_then(|v| v.app.clone()),
                    "supervisor": sup.map(|(s, _, _)| sup_info(*s)),
                    "id": sup.and_then(|(_, id, _)| id.clone()),
                    "restart": sup.and_then(|(_, _, r)| *r),
                    "will_restart": will_restart,
                })
            })
            .collect();
        let sups: Vec<Value> = restarts
            .iter()
            .map(|(s, n)| {
                let mut v = sup_info(*s);
                v["restarts"] = json!(n);
                if let Some(f) = self.flags.get(s) {
                    v["strategy"] = json!(f.strategy);
                    v["intensity"] = json!(f.intensity);
                    v["period_secs"] = json!(f.period_secs);
                    v["exceeds_intensity"] = json!(*n > f.intensity as usize);
                }
                v
            })
            .collect();
        (Value::Array(procs), Value::Array(sups))
    }
}

/// `check`: the compatibility check and the dry run on live states; refused (kind
/// `incompatible`, the report in the details) when a load would be refused or a live state
/// does not convert.
async fn check(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let path = Path::new(args.str("path")?);
    if !path.is_absolute() {
        return Err(bad(format!(
            "the library path {} must be absolute (the node's working directory is not the client's)",
            path.display()
        )));
    }
    let downgrade = args.bool("downgrade")?;
    let c = state.node.code().check(path).await.map_err(code_error)?;
    let mut text = match &c.report {
        Some(r) => r.to_text(),
        None => format!(
            "{} {}: not checked statically: {}\n",
            c.module,
            c.version,
            c.not_checked.as_deref().unwrap_or("no report")
        ),
    };
    for d in &c.dry_run {
        text.push_str(&match (&d.error, &d.skipped) {
            (Some(e), _) => format!(
                "  dry run {} (state of {}): FAILED: {e}\n",
                d.pid, d.from_version
            ),
            (None, Some(s)) => format!(
                "  dry run {} (state of {}): skipped: {s}\n",
                d.pid, d.from_version
            ),
            (None, None) => format!("  dry run {} (state of {}): ok\n", d.pid, d.from_version),
        });
    }
    let downgrade_refuses = downgrade
        && c.report.as_ref().is_some_and(|r| {
            r.warnings
                .iter()
                .any(|w| w.level == crate::compat::Level::Downgrade)
        });
    let v = json!({ "check": c, "text": text });
    if c.refuses() || downgrade_refuses {
        return Err(ErrorReply::new("incompatible", text.trim_end().to_string())
            .hint("`hotswap load --force` loads it anyway")
            .details(v));
    }
    Ok(v)
}

async fn purge(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let module = args.str("module")?;
    let node = &state.node;
    // The processes on the old code, and for each its supervisor in the application tree
    // (the supervisor that will restart it), taken before the purge kills them.
    let (_, old) = node.code().which_processes(module);
    let victims = Victims::find(state, &old).await;
    let r = node.code().purge(module).await.map_err(code_error)?;
    info!(module, version = ?r.version, killed = r.killed.len(), pinned = ?r.pinned, "purged");
    let (killed, supervisors) = victims.answer(&r.killed);
    Ok(json!({
        "module": r.module,
        "version": r.version,
        "killed": pids_json(&r.killed),
        "killed_processes": killed,
        "supervisors": supervisors,
        "pinned": r.pinned,
        "freed": r.version.is_some() && r.pinned.is_none(),
    }))
}

async fn soft_purge(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let module = args.str("module")?;
    let code = state.node.code();
    let old = code.module(module).and_then(|m| m.old);
    let purged = code.soft_purge(module).await.map_err(code_error)?;
    if purged {
        info!(module, version = ?old.as_ref().map(|o| &o.version), "soft-purged");
        return Ok(json!({ "module": module, "version": old.map(|o| o.version), "purged": true }));
    }
    let (_, holders) = code.which_processes(module);
    let vsn = old.map(|o| o.version).unwrap_or_default();
    Err(ErrorReply::new(
        "not_purged",
        format!(
            "soft purge of `{module}` refused: its old code ({vsn}) is still run by {}",
            holders.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
        ),
    )
    .hint(format!(
        "wait for those processes to move to the new code, or `hotswap purge {module}` to kill them and free it"
    ))
    .details(json!({ "module": module, "old_version": vsn, "processes": pids_json(&holders) })))
}

async fn delete(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let module = args.str("module")?;
    state.node.code().delete(module).await.map_err(code_error)?;
    info!(module, "deleted");
    Ok(json!({ "module": module, "deleted": true }))
}

fn which(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let module = args.str("module")?;
    let Some(m) = state.node.code().module(module) else {
        return Err(code_error(CodeError::NotLoaded {
            module: module.into(),
        }));
    };
    Ok(json!({
        "module": m.name,
        "current_version": m.current.as_ref().map(|v| &v.version),
        "old_version": m.old.as_ref().map(|v| &v.version),
        "current": m.current.as_ref().map(|v| pids_json(&v.processes)).unwrap_or(json!([])),
        "old": m.old.as_ref().map(|v| pids_json(&v.processes)).unwrap_or(json!([])),
    }))
}

/// A pid in any form it prints as, or a registered name (see `ServerRef`'s `FromStr`).
fn parse_target(s: &str) -> ServerRef {
    match s.parse::<ServerRef>() {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

fn sys_error(target: &ServerRef, e: SysError) -> ErrorReply {
    let msg = format!("{target}: {e}");
    match e {
        SysError::NoProc(_) => ErrorReply::new("noproc", msg)
            .hint("`hotswap processes` lists the live processes and their names"),
        SysError::Timeout(_) => ErrorReply::new("timeout", msg)
            .hint("is it a gen_server (only gen_servers answer sys requests)? a longer --timeout may help if it is busy"),
        SysError::Exit(_) => ErrorReply::new("exited", msg),
        SysError::Refused(_) => ErrorReply::new("refused", msg)
            .hint("change-code needs the process suspended first: `hotswap suspend <target>`"),
        SysError::Failed(_) => ErrorReply::new("failed", msg)
            .hint("the process kept its old state (and stays suspended after a failed change-code)"),
        SysError::Decode(_) => ErrorReply::new("decode", msg),
        _ => ErrorReply::new("sys_error", msg),
    }
}

async fn sys(state: &NodeState, cmd: &str, args: Args<'_>) -> Result<Value, ErrorReply> {
    let target_text = args.str("target")?;
    let target = parse_target(target_text);
    let node = &state.node;
    let pid = match &target {
        ServerRef::Pid(p) => *p,
        ServerRef::Name(n) => node.whereis(n).ok_or_else(|| {
            ErrorReply::new("noproc", format!("no process is registered as {n:?}"))
                .hint("`hotswap processes` lists the live processes and their names")
        })?,
    };
    if !node.is_alive(pid) {
        return Err(ErrorReply::new("noproc", format!("no process {pid}"))
            .hint("`hotswap processes` lists the live processes"));
    }
    let mut sys = node.sys();
    if let Some(t) = args.millis("timeout_ms")? {
        sys = sys.timeout(t);
    }
    let out = match cmd {
        "suspend" => sys
            .suspend(pid)
            .await
            .map(|()| json!({ "suspended": true })),
        "resume" => sys.resume(pid).await.map(|()| json!({ "resumed": true })),
        "get_state" => {
            // JSON for scripts (the default), or text for people: see `super::msgpack`.
            let text = match args.0.get("render") {
                None | Some(Value::Null) => false,
                Some(Value::String(r)) if r == "json" => false,
                Some(Value::String(r)) if r == "text" => true,
                Some(_) => return Err(bad("argument \"render\" must be \"json\" or \"text\"")),
            };
            match sys.get_state_raw(pid).await {
                Ok(bytes) => {
                    let len = bytes.len();
                    let rendered =
                        tokio::task::spawn_blocking(move || super::msgpack::render(bytes, text))
                            .await
                            .unwrap_or_else(|e| Err(format!("rendering it failed: {e}")));
                    match rendered {
                        Ok(v) if text => Ok(json!({ "text": v })),
                        Ok(v) => Ok(json!({ "state": v })),
                        Err(e) => Err(SysError::Decode(format!(
                            "the state ({len} bytes) is not readable as data: {e}"
                        ))),
                    }
                }
                Err(e) => Err(e),
            }
        }
        "change_code" => {
            let module = args.str("module")?;
            let old_vsn = args.str("old_vsn")?;
            let extra = match args.0.get("extra") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    rmp_serde::to_vec_named(v)
                        .map_err(|e| bad(format!("argument \"extra\" cannot be encoded: {e}")))?,
                ),
            };
            let r = sys.change_code(pid, module, old_vsn, extra).await;
            if r.is_ok() {
                info!(%pid, module, old_vsn, "code changed");
            }
            r.map(|()| json!({ "changed": true, "module": module, "old_vsn": old_vsn }))
        }
        other => return Err(bad(format!("unknown sys command {other:?}"))),
    };
    out.map(|mut v| {
        v["pid"] = json!(pid.to_string());
        v
    })
    .map_err(|e| sys_error(&target, e))
}

/// How long a supervisor request waits for the supervisor when the client names no time
/// limit. (The supervisor calls themselves wait forever, as OTP's `infinity`.)
const SUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The supervisor a request names: by `app` (its top supervisor) or `sup` (a pid or a
/// registered name), checked to be a live process that can be a supervisor.
struct SupTarget {
    pid: Pid,
    /// How the client named it, for hints: `<0.2.0>`, `game_sup` or `--app shop`.
    arg: String,
    /// The application whose top supervisor it is.
    app: Option<String>,
}

impl SupTarget {
    /// `supervisor game_sup (<0.2.0>)`, `supervisor <0.2.0> (application shop)`.
    fn who(&self, node: &Node) -> String {
        let mut out = format!("supervisor {}", self.pid);
        if let Some(n) = node.process_info(self.pid).and_then(|i| i.name) {
            out = format!("supervisor {n} ({})", self.pid);
        }
        if let Some(a) = &self.app {
            out.push_str(&format!(" (application {a})"));
        }
        out
    }
}

fn sup_target(state: &NodeState, args: Args<'_>) -> Result<SupTarget, ErrorReply> {
    let node = &state.node;
    let apps = node.applications();
    let (pid, arg) = match args.0.get("app") {
        Some(v) if !v.is_null() => {
            let name = args.str("app")?;
            let a = apps.iter().find(|a| a.name == name).ok_or_else(|| {
                ErrorReply::new("noproc", format!("no application {name:?} is running")).hint(
                    format!(
                        "the running applications are: {} (`hotswap status` shows them)",
                        if apps.is_empty() {
                            "none".to_string()
                        } else {
                            apps.iter()
                                .map(|a| a.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                )
            })?;
            (a.supervisor, format!("--app {name}"))
        }
        _ => {
            let text = args.str("sup")?;
            let pid = match parse_target(text) {
                ServerRef::Pid(p) => p,
                ServerRef::Name(n) => node.whereis(&n).ok_or_else(|| {
                    ErrorReply::new("noproc", format!("no process is registered as {n:?}"))
                        .hint("`hotswap processes` lists the live processes, their names and which are supervisors; `hotswap children --app <application>` names an application's top supervisor")
                })?,
            };
            (pid, text.to_string())
        }
    };
    let not_sup = |what: String| {
        ErrorReply::new("not_a_supervisor", format!("{pid} {what}, not a supervisor"))
            .hint("`hotswap processes` shows which processes are supervisors (RUNS: supervisor); `hotswap children --app <application>` lists an application's top supervisor")
            .details(json!({ "pid": pid.to_string() }))
    };
    let Some(info) = node.process_info(pid) else {
        return Err(ErrorReply::new("noproc", format!("no process {pid}"))
            .hint("`hotswap processes` lists the live processes"));
    };
    let label = match &info.name {
        Some(n) => format!("({n})"),
        None => String::new(),
    };
    // Only a supervisor answers a supervisor request: a gen_server would take it for one
    // of its own calls (and crash on it), a plain process would never answer. Both are
    // told apart without asking them.
    if let Some((m, v)) = &info.gen_server {
        return Err(not_sup(
            format!("{label} is a gen_server of module {m} {v}")
                .trim_start()
                .to_string(),
        ));
    }
    if let Some((m, v, _)) = info.running.first() {
        return Err(not_sup(
            format!("{label} is a process running module {m} {v}")
                .trim_start()
                .to_string(),
        ));
    }
    if let Some(a) = apps.iter().find(|a| a.master == pid) {
        return Err(
            not_sup(format!("is the application master of {}", a.name)).hint(format!(
                "its top supervisor is {}: `hotswap children --app {}`",
                a.supervisor, a.name
            )),
        );
    }
    let app = apps
        .iter()
        .find(|a| a.supervisor == pid)
        .map(|a| a.name.clone());
    Ok(SupTarget { pid, arg, app })
}

/// Run one supervisor request with a time limit (the client's, else [`SUP_TIMEOUT`]).
async fn sup_call<T>(
    node: &Node,
    sup: &SupTarget,
    args: Args<'_>,
    changes: bool,
    f: impl std::future::Future<Output = Result<T, SupError>>,
) -> Result<Result<T, SupError>, ErrorReply> {
    let limit = args.millis("timeout_ms")?.unwrap_or(SUP_TIMEOUT);
    tokio::time::timeout(limit, f).await.map_err(|_| {
        ErrorReply::new(
            "timeout",
            format!(
                "{} did not answer within {limit:?}{}",
                sup.who(node),
                if changes {
                    "; the request may still be carried out when it does"
                } else {
                    ""
                }
            ),
        )
        .hint("a supervisor answers once it has finished what it is doing (stopping a child waits for that child's shutdown); try again, or with a longer --timeout")
    })
}

/// A supervisor's refusal, with what to do about it.
fn sup_error(node: &Node, sup: &SupTarget, child: &str, e: SupError) -> ErrorReply {
    let who = sup.who(node);
    let s = &sup.arg;
    let msg = if child.is_empty() {
        format!("{who}: {e}")
    } else {
        format!("{who}, child {child:?}: {e}")
    };
    match e {
        SupError::NotFound => ErrorReply::new("not_found", format!("{who} has no child {child:?}"))
            .hint(format!("`hotswap children {s}` lists its children and their ids")),
        SupError::Running => ErrorReply::new("running", format!("{who}: child {child:?} is running"))
            .hint(format!("terminate-child it first: `hotswap terminate-child {s} {child}`")),
        SupError::Restarting => ErrorReply::new("restarting", msg)
            .hint(format!("the supervisor is retrying its start; `hotswap terminate-child {s} {child}` stops the retries")),
        SupError::AlreadyPresent => ErrorReply::new("already_present", msg)
            .hint(format!("`hotswap restart-child {s} {child}` starts it again; `hotswap delete-child {s} {child}` removes its spec")),
        SupError::AlreadyStarted(p) => ErrorReply::new("already_started", msg)
            .details(json!({ "pid": p.to_string() })),
        SupError::SimpleOneForOne => ErrorReply::new("simple_one_for_one", msg)
            .hint(format!("a simple_one_for_one supervisor's children have no ids: terminate one by its pid (`hotswap children {s}` lists them); restart-child and delete-child do not apply")),
        SupError::StartFailed(_) => ErrorReply::new("start_failed", msg)
            .hint("its spec is kept; the node's log (log/node.log) says more"),
        SupError::Invalid(_) => ErrorReply::new("invalid", msg),
        SupError::Call(_) => ErrorReply::new("call_failed", format!("{who}: {e}"))
            .hint("did it exit meanwhile? `hotswap processes` lists the live processes"),
        _ => ErrorReply::new("sup_error", msg),
    }
}

fn child_pid_json(p: &ChildPid) -> Value {
    match p {
        ChildPid::Running(p) => json!(p.to_string()),
        ChildPid::Restarting => json!("restarting"),
        ChildPid::Undefined => json!("undefined"),
    }
}

/// `which_children` of the supervisor, or the error to answer with.
async fn which_children(
    state: &NodeState,
    sup: &SupTarget,
    args: Args<'_>,
) -> Result<Vec<ChildInfo>, ErrorReply> {
    let node = &state.node;
    sup_call(
        node,
        sup,
        args,
        false,
        node.supervisor().which_children(sup.pid),
    )
    .await?
    .map_err(|e| sup_error(node, sup, "", e))
}

fn sup_json(node: &Node, sup: &SupTarget) -> Value {
    json!({
        "pid": sup.pid.to_string(),
        "name": node.process_info(sup.pid).and_then(|i| i.name),
        "application": sup.app,
    })
}

async fn children(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let node = &state.node;
    let sup = sup_target(state, args)?;
    let kids = which_children(state, &sup, args).await?;
    let counts = sup_call(
        node,
        &sup,
        args,
        false,
        node.supervisor().count_children(sup.pid),
    )
    .await?
    .map_err(|e| sup_error(node, &sup, "", e))?;
    Ok(json!({
        "supervisor": sup_json(node, &sup),
        "children": kids.iter().map(|c| json!({
            "id": c.id,
            "pid": child_pid_json(&c.pid),
            "name": match c.pid {
                ChildPid::Running(p) => node.process_info(p).and_then(|i| i.name),
                _ => None,
            },
            "type": c.child_type,
            "modules": c.modules,
        })).collect::<Vec<_>>(),
        "counts": {
            "specs": counts.specs,
            "active": counts.active,
            "supervisors": counts.supervisors,
            "workers": counts.workers,
        },
    }))
}

async fn terminate_child(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let node = &state.node;
    let sup = sup_target(state, args)?;
    let text = args.str("child")?;
    // An id if the supervisor has a child of that id, else a pid if it reads as one (a
    // simple_one_for_one child, or a static child named by its pid), else an id.
    let kids = which_children(state, &sup, args).await?;
    let by_id = kids.iter().find(|c| c.id.as_deref() == Some(text));
    let (child, info) = match (by_id, parse_target(text)) {
        (Some(c), _) => (ChildRef::Id(text.to_string()), Some(c)),
        (None, ServerRef::Pid(p)) => (
            ChildRef::Pid(p),
            kids.iter().find(|c| c.pid == ChildPid::Running(p)),
        ),
        (None, ServerRef::Name(_)) => (ChildRef::Id(text.to_string()), None),
    };
    let id = info.and_then(|c| c.id.clone());
    let was = info.map(|c| child_pid_json(&c.pid));
    sup_call(
        node,
        &sup,
        args,
        true,
        node.supervisor().terminate_child(sup.pid, child.clone()),
    )
    .await?
    .map_err(|e| sup_error(node, &sup, text, e))?;
    // Whether the spec is kept (a temporary child's goes with it).
    let kept = match &id {
        Some(id) => which_children(state, &sup, args)
            .await?
            .iter()
            .any(|c| c.id.as_deref() == Some(id.as_str())),
        None => false,
    };
    info!(supervisor = %sup.pid, child = text, "child terminated through the control socket");
    Ok(json!({
        "supervisor": sup_json(node, &sup),
        "child": text,
        "id": id,
        "pid": was,
        "terminated": true,
        "spec_kept": kept,
    }))
}

async fn restart_child(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let node = &state.node;
    let sup = sup_target(state, args)?;
    let id = args.str("child")?;
    let pid = sup_call(
        node,
        &sup,
        args,
        true,
        node.supervisor().restart_child(sup.pid, id),
    )
    .await?
    .map_err(|e| sup_error(node, &sup, id, e))?;
    info!(supervisor = %sup.pid, child = id, pid = ?pid, "child restarted through the control socket");
    Ok(json!({
        "supervisor": sup_json(node, &sup),
        "id": id,
        "pid": pid.map(|p| p.to_string()),
        "restarted": true,
    }))
}

async fn delete_child(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let node = &state.node;
    let sup = sup_target(state, args)?;
    let id = args.str("child")?;
    sup_call(
        node,
        &sup,
        args,
        true,
        node.supervisor().delete_child(sup.pid, id),
    )
    .await?
    .map_err(|e| sup_error(node, &sup, id, e))?;
    info!(supervisor = %sup.pid, child = id, "child spec deleted through the control socket");
    Ok(json!({
        "supervisor": sup_json(node, &sup),
        "id": id,
        "deleted": true,
    }))
}

/// What a process runs, as (module, version): its outermost binding, or for an idle
/// gen_server the version that made its state.
pub(super) fn runs(i: &crate::ProcessInfo) -> (Option<String>, Option<String>) {
    i.running
        .first()
        .map(|(m, v, _)| (Some(m.clone()), Some(v.clone())))
        .or_else(|| i.gen_server.clone().map(|(m, v)| (Some(m), Some(v))))
        .unwrap_or((None, None))
}

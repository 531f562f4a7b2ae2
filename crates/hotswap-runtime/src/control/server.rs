//! The node's side of the control protocol (see the parent module for the wire format).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use super::args::{bad, Args};
use super::node_state::NodeState;
use super::{code, inspect, sup, sys};
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
        "status" => Ok(inspect::status(state).await),
        "processes" => Ok(inspect::processes(state).await),
        "modules" => Ok(inspect::modules(state)),
        "load" => code::load(state, args).await,
        "check" => code::check(state, args).await,
        "purge" => code::purge(state, args).await,
        "soft_purge" => code::soft_purge(state, args).await,
        "delete" => code::delete(state, args).await,
        "which" => code::which(state, args),
        "suspend" | "resume" | "get_state" | "change_code" => {
            sys::sys(state, req.cmd.as_str(), args).await
        }
        "call" => super::call::call(&state.node, args.0).await,
        "children" => sup::children(state, args).await,
        "terminate_child" => sup::terminate_child(state, args).await,
        "restart_child" => sup::restart_child(state, args).await,
        "delete_child" => sup::delete_child(state, args).await,
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

//! The supervisor commands: `children`, `terminate_child`, `restart_child`, `delete_child`.

use std::time::Duration;

use serde_json::{json, Value};

use super::args::Args;
use super::node_state::NodeState;
use super::sys::parse_target;
use super::ErrorReply;
use crate::supervisor::{ChildInfo, ChildPid, ChildRef, SupError};
use crate::{Node, Pid, ServerRef};
use tracing::info;

/// How long a supervisor request waits for the supervisor when the client names no time
/// limit. (The supervisor calls themselves wait forever, as OTP's `infinity`.)
pub(super) const SUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The supervisor a request names: by `app` (its top supervisor) or `sup` (a pid or a
/// registered name), checked to be a live process that can be a supervisor.
pub(super) struct SupTarget {
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

pub(super) fn sup_target(state: &NodeState, args: Args<'_>) -> Result<SupTarget, ErrorReply> {
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
pub(super) async fn sup_call<T>(
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
pub(super) fn sup_error(node: &Node, sup: &SupTarget, child: &str, e: SupError) -> ErrorReply {
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

pub(super) fn child_pid_json(p: &ChildPid) -> Value {
    match p {
        ChildPid::Running(p) => json!(p.to_string()),
        ChildPid::Restarting => json!("restarting"),
        ChildPid::Undefined => json!("undefined"),
    }
}

/// `which_children` of the supervisor, or the error to answer with.
pub(super) async fn which_children(
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

pub(super) fn sup_json(node: &Node, sup: &SupTarget) -> Value {
    json!({
        "pid": sup.pid.to_string(),
        "name": node.process_info(sup.pid).and_then(|i| i.name),
        "application": sup.app,
    })
}

pub(super) async fn children(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
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

pub(super) async fn terminate_child(
    state: &NodeState,
    args: Args<'_>,
) -> Result<Value, ErrorReply> {
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

pub(super) async fn restart_child(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
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

pub(super) async fn delete_child(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
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

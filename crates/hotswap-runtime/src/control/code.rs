//! The code server's commands: `load`, `check`, `purge`, `soft_purge`, `delete`, `which`.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::args::{absolute, Args};
use super::inspect::{module_json, pids_json};
use super::node_state::NodeState;
use super::sup::SUP_TIMEOUT;
use super::ErrorReply;
use crate::supervisor::{ChildRef, Restart, Strategy, SupState};
use crate::{CodeError, LoadError, Pid};
use std::path::Path;
use tracing::{info, warn};

pub(super) fn code_error(e: CodeError) -> ErrorReply {
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

pub(super) async fn load(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let path = absolute(Path::new(args.str("path")?), "library")?;
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
pub(super) struct Victim {
    name: Option<String>,
    app: Option<String>,
    /// Its supervisor, its id there and its restart type, if it is a child in an
    /// application's tree.
    sup: Option<(Pid, Option<String>, Option<Restart>)>,
}

/// A supervisor of killed processes: its flags, as its `sys` state says.
pub(super) struct SupFlags {
    strategy: Strategy,
    intensity: u32,
    period_secs: u64,
}

/// The processes a purge may kill and their supervisors, as they were before it.
#[derive(Default)]
pub(super) struct Victims {
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
pub(super) async fn check(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let path = absolute(Path::new(args.str("path")?), "library")?;
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

pub(super) async fn purge(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
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

pub(super) async fn soft_purge(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
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

pub(super) async fn delete(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
    let module = args.str("module")?;
    state.node.code().delete(module).await.map_err(code_error)?;
    info!(module, "deleted");
    Ok(json!({ "module": module, "deleted": true }))
}

pub(super) fn which(state: &NodeState, args: Args<'_>) -> Result<Value, ErrorReply> {
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

//! The read-only commands: `status`, `processes` and `modules`, and how a process, a
//! module and a version are shown (also used by `top`).

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use serde_json::{json, Value};

use super::node_state::NodeState;
use crate::{ModuleInfo, Pid, VersionInfo};

pub(super) fn ms_since_epoch(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This process's resident and peak resident memory in bytes, from `/proc/self/status`.
pub(super) fn memory() -> (Option<u64>, Option<u64>) {
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

pub(super) async fn status(state: &NodeState) -> Value {
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

pub(super) async fn processes(state: &NodeState) -> Value {
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

pub(super) fn version_json(v: &VersionInfo) -> Value {
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

pub(super) fn module_json(m: &ModuleInfo, pinned: &[Value]) -> Value {
    json!({
        "name": m.name,
        "current": m.current.as_ref().map(version_json),
        "old": m.old.as_ref().map(version_json),
        "pinned": pinned,
    })
}

pub(super) fn modules(state: &NodeState) -> Value {
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

pub(super) fn pids_json(p: &[Pid]) -> Value {
    json!(p.iter().map(|p| p.to_string()).collect::<Vec<_>>())
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

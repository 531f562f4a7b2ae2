//! The node's side of `hotswap top`: one cheap snapshot of everything the view shows,
//! answered in one round trip. It reads only the node's own tables (processes, code,
//! ports, the upgrade in progress) and asks no process anything, so it answers at once
//! even while an upgrade holds every server of a module suspended.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::{Node, Pid, VersionInfo};
use serde_json::{json, Value};

/// `top`: the release, the node's memory, every process (with its queue, memory and the
/// messages it has taken so far), every module's current and old version with the
/// processes on each, every port, and the upgrade in progress (`null` if none).
pub(crate) fn snapshot(node: &Node, uptime: Duration) -> Value {
    let infos: Vec<_> = node
        .processes()
        .into_iter()
        .filter_map(|pid| node.process_info(pid))
        .collect();
    // The processes on each version: running its code (by instance), or idle gen_servers
    // whose state it made (by version).
    let mut on_instance: HashMap<(&str, u64), HashSet<Pid>> = HashMap::new();
    let mut on_version: HashMap<(&str, &str), HashSet<Pid>> = HashMap::new();
    for i in &infos {
        for (m, _, inst) in &i.running {
            on_instance.entry((m, *inst)).or_default().insert(i.pid);
        }
        if let Some((m, v)) = &i.gen_server {
            on_version.entry((m, v)).or_default().insert(i.pid);
        }
    }
    let processes: Vec<Value> = infos
        .iter()
        .map(|i| {
            let (module, version) = super::inspect::runs(i);
            json!({
                "pid": i.pid.to_string(),
                "name": i.name,
                "module": module,
                "version": version,
                "message_queue_len": i.message_queue_len,
                "memory": i.memory,
                "messages_received": i.messages_received,
            })
        })
        .collect();
    let mut modules: Vec<Value> = node
        .code()
        .modules()
        .iter()
        .map(|m| {
            let version = |v: &VersionInfo| {
                let mut on: HashSet<Pid> = v.processes.iter().copied().collect();
                on.extend(
                    on_instance
                        .get(&(m.name.as_str(), v.instance))
                        .into_iter()
                        .flatten(),
                );
                on.extend(
                    on_version
                        .get(&(m.name.as_str(), v.version.as_str()))
                        .into_iter()
                        .flatten(),
                );
                json!({ "version": v.version, "instance": v.instance, "processes": on.len() })
            };
            json!({
                "name": m.name,
                "current": m.current.as_ref().map(version),
                "old": m.old.as_ref().map(version),
            })
        })
        .collect();
    modules.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let release = node
        .releases()
        .running()
        .map(|r| json!({ "name": r.manifest.release.name, "version": r.manifest.release.version }));
    json!({
        "release": release,
        "node_pid": std::process::id(),
        "uptime_ms": uptime.as_millis() as u64,
        "rss_bytes": rss(),
        "processes": processes,
        "modules": modules,
        "ports": super::ports::ports(node),
        "upgrade": node.releases().progress(),
    })
}

/// This process's resident memory in bytes (`VmRSS` of `/proc/self/status`).
fn rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

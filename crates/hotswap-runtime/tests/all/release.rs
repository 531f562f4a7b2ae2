//! Release upgrades as transactions (issue 11): real release directories with real module
//! libraries, a node booted from one, upgraded, rolled back and downgraded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hotswap::gen_server as gs;
use hotswap_runtime::release::{ReleaseDir, ReleaseError, ReleaseStatus, Store, UpgradeOptions};
use hotswap_runtime::{Node, Pid, StartOpts};
use serde::{Deserialize, Serialize};

use crate::support::{self, module, ping, write_release, Mod, TempDir, WAIT};

/// Mirror of `modules/common/rel_srv.rs` `Req`.
#[derive(Serialize, Deserialize, Debug)]
enum Req {
    Get,
    Bump,
    Sleep(u64),
    Vsn,
}

/// Mirror of `modules/common/rel_srv.rs` `Rep`.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Rep {
    State(u64, u64),
    Count(u64),
    Ok,
    Vsn(String),
}

/// Version 1's state.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct V1 {
    id: u64,
    count: u64,
}

/// Version 2's state.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct V2 {
    id: u64,
    total: u64,
    upgraded_from: String,
}

const V1_MODS: &[Mod] = &[("rel_srv", "1", "rel_srv_v1", &[])];
const V2_MODS: &[Mod] = &[("rel_srv", "2", "rel_srv_v2", &[])];

/// `n` unsupervised rel_srv servers with ids `first..first + n`.
async fn servers(node: &Node, first: u64, n: u64) -> Vec<Pid> {
    let mut v = Vec::new();
    for id in first..first + n {
        v.push(
            node.start_server("rel_srv", &id, StartOpts::default())
                .await
                .expect("server starts"),
        );
    }
    v
}

async fn call(node: &Node, pid: Pid, r: Req) -> Rep {
    node.call(pid, &r, WAIT).await.expect("call answered")
}

async fn vsn_of(node: &Node, pid: Pid) -> String {
    match call(node, pid, Req::Vsn).await {
        Rep::Vsn(v) => v,
        r => panic!("{r:?}"),
    }
}

fn current_vsn(node: &Node, m: &str) -> Option<(String, u64)> {
    node.code()
        .module(m)
        .and_then(|i| i.current)
        .map(|c| (c.version, c.instance))
}

fn status(root: &Path) -> BTreeMap<String, ReleaseStatus> {
    Store::open(&ReleaseDir::new(root))
        .unwrap()
        .entries()
        .iter()
        .map(|e| (e.version.clone(), e.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_migrates_every_server() {
    let apps = r#"
[[application]]
name = "pool"
version = "1"
start = [
  { server = "rel_srv", name = "s1", arg = 1001 },
  { server = "rel_srv", name = "s2", arg = 1002 },
]
"#;
    let (d, node) = support::release_node(
        "rel-migrate",
        &[("1.0.0", V1_MODS, apps), ("2.0.0", V2_MODS, apps)],
    )
    .await;
    let mut pids = servers(&node, 1, 200).await;
    pids.push(node.whereis("s1").unwrap());
    pids.push(node.whereis("s2").unwrap());
    let mut before = BTreeMap::new();
    for (i, &p) in pids.iter().enumerate() {
        for _ in 0..(i % 5) {
            call(&node, p, Req::Bump).await;
        }
        let s: V1 = node.sys().get_state(p).await.unwrap();
        before.insert(p, s);
    }
    let report = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect("upgrade succeeds");
    assert_eq!(report.servers_migrated, pids.len(), "{report:?}");
    assert_eq!(report.modules_changed, ["rel_srv"]);
    assert_eq!(current_vsn(&node, "rel_srv").unwrap().0, "2");
    for &p in &pids {
        let s: V2 = node.sys().get_state(p).await.unwrap();
        let b = &before[&p];
        assert_eq!(
            s,
            V2 {
                id: b.id,
                total: b.count,
                upgraded_from: "1".into()
            }
        );
        assert_eq!(vsn_of(&node, p).await, "2");
    }
    assert!(
        node.code().module("rel_srv").unwrap().old.is_none(),
        "the old version, which nothing runs any more, is purged"
    );
    let st = status(&d.0);
    assert_eq!(st["1.0.0"], ReleaseStatus::Permanent);
    assert_eq!(st["2.0.0"], ReleaseStatus::Current);
    assert_eq!(
        node.releases().running().unwrap().manifest.release.version,
        "2.0.0"
    );
    node.stop(WAIT).await;
}

/// Clients bump their own servers throughout; each reply must be the previous count + 1
/// (every call answered once, in order). The counts each client saw, by server.
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<Result<BTreeMap<Pid, u64>, String>>>,
}

fn load(node: &Node, pids: &[Pid], clients: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for c in 0..clients {
        let mine: Vec<Pid> = pids.iter().copied().skip(c).step_by(clients).collect();
        let (node, stop) = (node.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            node.spawn_native(move |ctx| async move {
                let mut seen: BTreeMap<Pid, u64> = BTreeMap::new();
                let mut i = 0usize;
                let r = loop {
                    if stop.load(Ordering::Relaxed) {
                        break Ok(seen);
                    }
                    let p = mine[i % mine.len()];
                    i += 1;
                    let r: Result<Rep, _> =
                        gs::call_timeout(&ctx, p, &Req::Bump, Some(Duration::from_secs(30))).await;
                    let prev = seen.get(&p).copied();
                    match r {
                        Ok(Rep::Count(n)) => {
                            if let Some(prev) = prev {
                                if n != prev + 1 {
                                    break Err(format!(
                                        "server {p}: count {n} after {prev} (a call lost or doubled)"
                                    ));
                                }
                            }
                            seen.insert(p, n);
                        }
                        other => break Err(format!("server {p}: {other:?}")),
                    }
                };
                let _ = tx.send(r);
            })
            .unwrap();
            rx.await.map_err(|e| e.to_string())?
        }));
    }
    Load { stop, handles }
}

impl Load {
    async fn finish(self) -> BTreeMap<Pid, u64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = BTreeMap::new();
        for h in self.handles {
            all.extend(
                h.await
                    .unwrap()
                    .expect("client saw every call answered in order"),
            );
        }
        all
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_rolls_back_when_code_change_fails_at_k() {
    // The 500th server's code_change passes the check (its first run, on a copy) and
    // fails in the switch (its second run).
    let (d, node) = support::release_node(
        "rel-rollback-k",
        &[
            ("1.0.0", V1_MODS, ""),
            (
                "2.0.0",
                V2_MODS,
                "[upgrade.rel_srv]\nextra = { fail_id = 500, fail_on = 2 }\n",
            ),
        ],
    )
    .await;
    let pids = servers(&node, 1, 1000).await;
    for (i, &p) in pids.iter().enumerate() {
        if i % 3 == 0 {
            call(&node, p, Req::Bump).await;
        }
    }
    let v1 = current_vsn(&node, "rel_srv").unwrap();
    // The clients' servers are excluded from the state comparison (their counts move).
    let (loaded, quiet) = pids.split_at(20);
    let mut before = BTreeMap::new();
    for &p in quiet {
        let s: V1 = node.sys().get_state(p).await.unwrap();
        before.insert(p, s);
    }
    let clients = load(&node, loaded, 2);
    let e = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect_err("the 500th code_change fails");
    let ReleaseError::RolledBack {
        phase,
        failed,
        resumed,
        ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(phase, "code_change", "{e}");
    assert!(failed.contains(&pids[499].to_string()), "{e}");
    assert!(failed.contains("injected failure"), "{e}");
    assert!(failed.contains("of 1000"), "{e}");
    assert_eq!(*resumed, 1000, "{e}");
    assert_eq!(
        current_vsn(&node, "rel_srv").unwrap(),
        v1,
        "the old version (the very same instance) is current again"
    );
    assert!(node.code().module("rel_srv").unwrap().old.is_none());
    let counts = clients.finish().await;
    for &p in quiet {
        let s: V1 = node.sys().get_state(p).await.unwrap();
        assert_eq!(s, before[&p], "server {p}: its old state is back");
        let st = node.sys().get_status(p).await.unwrap();
        assert!(!st.suspended, "server {p} resumed");
        assert_eq!(st.version.as_deref(), Some("1"));
    }
    for (&p, &n) in &counts {
        match call(&node, p, Req::Get).await {
            Rep::State(_, c) => {
                assert_eq!(c, n, "server {p}: every call the clients made counted once")
            }
            r => panic!("{r:?}"),
        }
    }
    assert!(counts.values().sum::<u64>() > 0, "the clients made calls");
    let st = status(&d.0);
    assert_eq!(st["1.0.0"], ReleaseStatus::Permanent);
    assert_eq!(st["2.0.0"], ReleaseStatus::Unpacked);
    assert!(
        node.code().pinned().is_empty(),
        "{:?}",
        node.code().pinned()
    );
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_rolls_back_when_a_library_fails_to_load() {
    let (d, node) = support::release_node(
        "rel-badlib",
        &[
            (
                "1.0.0",
                &[
                    ("rel_srv", "1", "rel_srv_v1", &[]),
                    ("upgrade_srv", "1", "upgrade_srv_v1", &[]),
                ],
                "",
            ),
            (
                "2.0.0",
                &[
                    ("rel_srv", "2", "rel_srv_v2", &[]),
                    ("upgrade_srv", "2", "upgrade_srv_v2", &[]),
                ],
                "",
            ),
        ],
    )
    .await;
    // The second library of the new release is damaged after it was put there.
    let lib = d.0.join("lib/upgrade_srv_v2/libupgrade_srv_v2.so");
    std::fs::write(&lib, b"\x7fELF but not really a library").unwrap();
    let pids = servers(&node, 1, 10).await;
    let freed = node.code().freed_count();
    let v1 = current_vsn(&node, "rel_srv").unwrap();
    let e = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect_err("a library does not load");
    let msg = e.to_string();
    assert!(matches!(e, ReleaseError::Refused { .. }), "{msg}");
    assert!(
        msg.contains("upgrade_srv") && msg.contains("does not load"),
        "{msg}"
    );
    assert!(msg.contains(&lib.display().to_string()), "{msg}");
    assert_eq!(current_vsn(&node, "rel_srv").unwrap(), v1);
    assert!(node.code().module("rel_srv").unwrap().old.is_none());
    assert!(
        node.code().freed_count() > freed,
        "the version prepared before the failure was unmapped"
    );
    assert!(node.code().pinned().is_empty());
    for &p in &pids {
        assert_eq!(vsn_of(&node, p).await, "1");
    }
    assert_eq!(status(&d.0)["2.0.0"], ReleaseStatus::Unpacked);
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_refused_by_check_touches_nothing() {
    let (d, node) = support::release_node(
        "rel-check",
        &[
            ("1.0.0", V1_MODS, ""),
            (
                "2.0.0",
                V2_MODS,
                "[upgrade.rel_srv]\nextra = { fail_id = 7, fail_on = 1 }\n",
            ),
        ],
    )
    .await;
    let pids = servers(&node, 1, 20).await;
    for &p in &pids {
        call(&node, p, Req::Bump).await;
    }
    let mut before = Vec::new();
    for &p in &pids {
        let st = node.sys().get_status(p).await.unwrap();
        before.push((st.state, st.messages_in));
    }
    let v1 = current_vsn(&node, "rel_srv").unwrap();
    let e = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect_err("the check refuses");
    let msg = e.to_string();
    assert!(matches!(e, ReleaseError::Refused { .. }), "{msg}");
    assert!(
        msg.contains(&pids[6].to_string()) && msg.contains("rel_srv"),
        "{msg}"
    );
    assert!(msg.contains("nothing was touched"), "{msg}");
    assert_eq!(current_vsn(&node, "rel_srv").unwrap(), v1);
    for (i, &p) in pids.iter().enumerate() {
        let st = node.sys().get_status(p).await.unwrap();
        assert_eq!(
            (st.state, st.messages_in),
            before[i],
            "server {p} untouched (no message handled, same state)"
        );
        assert!(!st.suspended);
    }
    assert_eq!(status(&d.0)["1.0.0"], ReleaseStatus::Permanent);
    assert_eq!(status(&d.0)["2.0.0"], ReleaseStatus::Unpacked);
    node.stop(WAIT).await;
}

/// A server busy in a callback while the check runs is not skipped: the check copies its
/// state the moment the callback gives it back, and its `code_change` (which fails on that
/// copy) refuses the upgrade before anything is suspended; the busy call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_check_covers_a_busy_server() {
    let (_d, node) = support::release_node(
        "rel-checkbusy",
        &[
            ("1.0.0", V1_MODS, ""),
            (
                "2.0.0",
                V2_MODS,
                // The first code_change of server 3 fails: the check's, if it sees it.
                "[upgrade.rel_srv]\nextra = { fail_id = 3, fail_on = 1 }\n",
            ),
        ],
    )
    .await;
    let pids = servers(&node, 1, 6).await;
    for &p in &pids {
        call(&node, p, Req::Bump).await;
    }
    let busy = pids[2];
    let n2 = node.clone();
    let slow = tokio::spawn(async move { call(&n2, busy, Req::Sleep(1000)).await });
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.process_info(busy).unwrap().running.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow call never started"
        );
        tokio::task::yield_now().await;
    }
    let e = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect_err("the check sees the busy server's state and refuses");
    let msg = e.to_string();
    assert!(
        matches!(e, ReleaseError::Refused { .. }),
        "refused by the check, not rolled back by the switch: {msg}"
    );
    assert!(
        msg.contains(&busy.to_string()) && msg.contains("injected failure, run 1"),
        "{msg}"
    );
    assert_eq!(slow.await.unwrap(), Rep::Ok, "the busy call is answered");
    assert_eq!(current_vsn(&node, "rel_srv").unwrap().0, "1");
    for (i, &p) in pids.iter().enumerate() {
        let st = node.sys().get_status(p).await.unwrap();
        assert!(!st.suspended, "{p} was never suspended");
        let s: V1 = node.sys().get_state(p).await.unwrap();
        assert_eq!(
            s,
            V1 {
                id: i as u64 + 1,
                count: 1
            }
        );
    }
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_orders_dependent_modules() {
    // rel_srv calls upgrade_srv: it is suspended first and resumed last.
    let (_d, node) = support::release_node(
        "rel-order",
        &[
            (
                "1.0.0",
                &[
                    ("upgrade_srv", "1", "upgrade_srv_v1", &[]),
                    ("rel_srv", "1", "rel_srv_v1", &["upgrade_srv"]),
                ],
                "",
            ),
            (
                "2.0.0",
                &[
                    ("upgrade_srv", "2", "upgrade_srv_v2", &[]),
                    ("rel_srv", "2", "rel_srv_v2", &["upgrade_srv"]),
                ],
                "",
            ),
        ],
    )
    .await;
    servers(&node, 1, 5).await;
    for _ in 0..5 {
        node.start_server("upgrade_srv", &(), StartOpts::default())
            .await
            .unwrap();
    }
    let plan = node.releases().plan("2.0.0").await.unwrap();
    assert_eq!(plan.order, ["rel_srv", "upgrade_srv"], "dependents first");
    let text = plan.to_string();
    let at = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("{s:?} not in\n{text}"))
    };
    assert!(at("suspend rel_srv") < at("suspend upgrade_srv"), "{text}");
    assert!(at("resume upgrade_srv") < at("resume rel_srv"), "{text}");
    assert!(
        at("commit: make current upgrade_srv, rel_srv") > 0,
        "{text}"
    );
    let r = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        r.log,
        [
            "suspend rel_srv (5)",
            "suspend upgrade_srv (5)",
            "code_change up (10 states)",
            "commit upgrade_srv rel_srv",
            "resume upgrade_srv (5)",
            "resume rel_srv (5)",
        ],
        "what the switch did, in order"
    );
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_supervisor_spec_change_starts_and_stops_children() {
    let (_d, node) = support::release_node(
        "rel-sup",
        &[
            (
                "1.0.0",
                V1_MODS,
                r#"
[[application]]
name = "pool"
version = "1"
start = [
  { server = "rel_srv", name = "a", arg = 1 },
  { server = "rel_srv", name = "b", arg = 2 },
]
"#,
            ),
            (
                "2.0.0",
                V2_MODS,
                r#"
[[application]]
name = "pool"
version = "2"
intensity = 4
start = [
  { server = "rel_srv", name = "a", arg = 1 },
  { server = "rel_srv", name = "c", arg = 3 },
]
"#,
            ),
        ],
    )
    .await;
    let a = node.whereis("a").unwrap();
    call(&node, a, Req::Bump).await;
    let plan = node.releases().plan("2.0.0").await.unwrap();
    assert!(
        plan.to_string().contains("supervisor of pool: start c\n"),
        "{plan}"
    );
    assert!(
        plan.to_string().contains("supervisor of pool: stop b\n"),
        "{plan}"
    );
    assert!(
        plan.to_string().contains(
            "supervisor of pool: sys change_code (the new manifest's tree), flags intensity 1 -> 4"
        ),
        "{plan}"
    );
    let r = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    assert!(
        r.log
            .contains(&"change_code supervisor of pool".to_string()),
        "the tree changed through the supervisor's sys change_code: {:?}",
        r.log
    );
    let sup = node.applications()[0].supervisor;
    let st: hotswap_runtime::supervisor::SupState = node.sys().get_state(sup).await.unwrap();
    assert_eq!(st.intensity, 4, "the new flags taken");
    assert_eq!(node.whereis("a"), Some(a), "a kept, migrated");
    let s: V2 = node.sys().get_state(a).await.unwrap();
    assert_eq!(s.total, 1);
    assert_eq!(node.whereis("b"), None, "b stopped");
    let c = node.whereis("c").expect("c started");
    assert_eq!(vsn_of(&node, c).await, "2", "c runs the new version");
    let sup = node.applications()[0].supervisor;
    let mut ids: Vec<String> = node
        .supervisor()
        .which_children(sup)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "c"]);
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_adds_and_removes_applications() {
    let keep = "[[application]]\nname = \"keep\"\nversion = \"1\"\nstart = [{ server = \"rel_srv\", name = \"k\", arg = 1 }]\n";
    let (_d, node) = support::release_node(
        "rel-apps",
        &[
            ("1.0.0",
        V1_MODS,
        &format!("{keep}[[application]]\nname = \"gone\"\nversion = \"1\"\nstart = [{{ server = \"rel_srv\", name = \"g\", arg = 2 }}]\n")),
            ("2.0.0",
        &[
            ("rel_srv", "2", "rel_srv_v2", &[]),
            ("upgrade_srv", "2", "upgrade_srv_v2", &[]),
        ],
        &format!("{keep}[[application]]\nname = \"new\"\nversion = \"1\"\nstart = [{{ server = \"upgrade_srv\", name = \"n\" }}]\n")),
        ],
    )
    .await;
    let k = node.whereis("k").unwrap();
    let r = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.applications_started, ["new"]);
    assert_eq!(r.applications_stopped, ["gone"]);
    assert_eq!(r.modules_added, ["upgrade_srv"]);
    let mut names: Vec<String> = node.applications().into_iter().map(|a| a.name).collect();
    names.sort();
    assert_eq!(names, ["keep", "new"]);
    assert_eq!(node.whereis("g"), None);
    assert!(node.whereis("n").is_some());
    assert_eq!(node.whereis("k"), Some(k));
    assert_eq!(vsn_of(&node, k).await, "2");
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_finds_processes_outside_child_specs() {
    let app = "[[application]]\nname = \"pool\"\nversion = \"1\"\nstart = [{ server = \"rel_srv\", name = \"inside\", arg = 1 }]\n";
    let (_d, node) = support::release_node(
        "rel-outside",
        &[("1.0.0", V1_MODS, app), ("2.0.0", V2_MODS, app)],
    )
    .await;
    // Started by hand and by a plain process: no child spec lists them.
    let outside = servers(&node, 10, 3).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let r = gs::start(&ctx, "rel_srv", &99u64, StartOpts::default()).await;
        let _ = tx.send(r.map_err(|e| e.to_string()));
        ctx.recv().await;
    })
    .unwrap();
    let by_process = rx.await.unwrap().unwrap();
    let plan = node.releases().plan("2.0.0").await.unwrap();
    let m = plan.module("rel_srv").unwrap();
    let inside = node.whereis("inside").unwrap();
    for p in outside.iter().chain([&by_process, &inside]) {
        assert!(m.servers.contains(p), "{p} is in the plan: {:?}", m.servers);
    }
    node.releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    for &p in outside.iter().chain([&by_process, &inside]) {
        let s: V2 = node.sys().get_state(p).await.unwrap();
        assert_eq!(s.upgraded_from, "1", "{p} migrated");
    }
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_suspend_timeout_aborts_and_resumes() {
    let (_d, node) = support::release_node(
        "rel-timeout",
        &[
            ("1.0.0", V1_MODS, ""),
            ("2.0.0", V2_MODS, "[upgrade.rel_srv]\ntimeout_ms = 200\n"),
        ],
    )
    .await;
    let pids = servers(&node, 1, 50).await;
    let busy = pids[25];
    // A call that keeps the server in a callback for longer than the suspend limit.
    let n2 = node.clone();
    let slow = tokio::spawn(async move { call(&n2, busy, Req::Sleep(1500)).await });
    // Wait until the server is inside the callback (its sleep is running).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = node.process_info(busy).unwrap();
        if !info.running.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow call never started"
        );
        tokio::task::yield_now().await;
    }
    let t = std::time::Instant::now();
    let e = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect_err("the busy server does not answer in time");
    assert!(
        t.elapsed() < Duration::from_millis(1400),
        "aborted at the limit, not after the sleep: {:?}",
        t.elapsed()
    );
    let ReleaseError::RolledBack { phase, failed, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(phase, "suspend");
    assert!(
        failed.contains(&busy.to_string()) && failed.contains("200 ms"),
        "{e}"
    );
    // Every other server answers at once: it was resumed.
    for &p in pids.iter().filter(|&&p| p != busy) {
        assert_eq!(vsn_of(&node, p).await, "1");
        assert!(!node.sys().get_status(p).await.unwrap().suspended);
    }
    assert_eq!(slow.await.unwrap(), Rep::Ok, "the slow call is answered");
    // The late suspend was followed by a resume.
    assert_eq!(vsn_of(&node, busy).await, "1");
    assert!(!node.sys().get_status(busy).await.unwrap().suspended);
    assert_eq!(current_vsn(&node, "rel_srv").unwrap().0, "1");
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_downgrade_restores_old_state_shape() {
    let (d, node) = support::release_node(
        "rel-down",
        &[("1.0.0", V1_MODS, ""), ("2.0.0", V2_MODS, "")],
    )
    .await;
    let pids = servers(&node, 1, 30).await;
    for &p in &pids {
        call(&node, p, Req::Bump).await;
    }
    node.releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    for &p in &pids {
        call(&node, p, Req::Bump).await;
        let s: V2 = node.sys().get_state(p).await.unwrap();
        assert_eq!(s.total, 2);
    }
    let plan = node.releases().plan("1.0.0").await.unwrap();
    assert!(
        plan.to_string()
            .starts_with("downgrade from release 2.0.0 to 1.0.0"),
        "{plan}"
    );
    let r = node
        .releases()
        .upgrade("1.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.servers_migrated, pids.len());
    assert!(
        r.log.contains(&"code_change down (30 states)".to_string()),
        "{:?}",
        r.log
    );
    for (i, &p) in pids.iter().enumerate() {
        let s: V1 = node.sys().get_state(p).await.unwrap();
        assert_eq!(
            s,
            V1 {
                id: i as u64 + 1,
                count: 2
            },
            "the old shape, with the count kept"
        );
        assert_eq!(vsn_of(&node, p).await, "1");
    }
    let st = status(&d.0);
    assert_eq!(st["1.0.0"], ReleaseStatus::Permanent);
    assert_eq!(st["2.0.0"], ReleaseStatus::Old);
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_under_load_loses_nothing() {
    let (_d, node) = support::release_node(
        "rel-load",
        &[("1.0.0", V1_MODS, ""), ("2.0.0", V2_MODS, "")],
    )
    .await;
    let pids = servers(&node, 1, 100).await;
    let clients = load(&node, &pids, 2);
    let mut migrated = 0;
    for i in 0..100 {
        let to = if i % 2 == 0 { "2.0.0" } else { "1.0.0" };
        let r = node
            .releases()
            .upgrade(to, UpgradeOptions::default())
            .await
            .unwrap_or_else(|e| panic!("upgrade {i} to {to}: {e}"));
        migrated += r.servers_migrated;
    }
    assert_eq!(
        migrated,
        100 * pids.len(),
        "every server migrated each time"
    );
    let counts = clients.finish().await;
    assert_eq!(current_vsn(&node, "rel_srv").unwrap().0, "1");
    let mut total = 0;
    for &p in &pids {
        let Rep::State(_, c) = call(&node, p, Req::Get).await else {
            panic!()
        };
        assert_eq!(c, counts.get(&p).copied().unwrap_or(0), "server {p}");
        total += c;
    }
    assert!(total > 100, "the clients kept calling: {total} calls");
    assert!(
        node.code().pinned().is_empty(),
        "{:?}",
        node.code().pinned()
    );
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_unpack_rejects_bad_release() {
    let (d, node) = support::release_node("rel-unpack", &[("1.0.0", V1_MODS, "")]).await;
    let pkg_root = TempDir::new("rel-unpack-pkgs");
    let listing = |root: &Path| -> Vec<PathBuf> {
        let mut v = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    v.push(e.path());
                }
            }
        }
        v.sort();
        v
    };
    let before = listing(&d.0);
    // Each case: a package and the words its refusal must hold.
    let mut n = 0;
    let mut case = |f: &dyn Fn(&Path)| {
        n += 1;
        let p = pkg_root.0.join(format!("case{n}"));
        std::fs::create_dir_all(&p).unwrap();
        f(&p);
        p
    };
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (case(&|_p: &Path| {}), vec!["holds no release"]),
        (
            case(&|p: &Path| {
                write_release(p, "2.0.0", V2_MODS, "");
                std::fs::write(
                    p.join("releases/2.0.0/release.toml"),
                    "[release]\nname = 3\n",
                )
                .unwrap();
            }),
            vec!["not a valid release manifest"],
        ),
        (
            case(&|p: &Path| {
                write_release(p, "2.0.0", &[("rel_srv", "2", "rel_srv_v2", &[])], "");
                std::fs::remove_file(p.join("lib/rel_srv_v2/librel_srv_v2.so")).unwrap();
            }),
            vec!["not found"],
        ),
        (
            case(&|p: &Path| write_release(p, "2.0.0", &[("rel_srv", "3", "rel_srv_v2", &[])], "")),
            vec!["version \"2\"", "\"3\""],
        ),
        (
            case(&|p: &Path| {
                write_release(p, "2.0.0", &[("other_name", "2", "rel_srv_v2", &[])], "")
            }),
            vec!["rel_srv", "other_name"],
        ),
        (
            case(&|p: &Path| {
                write_release(p, "2.0.0", &[("rel_srv", "2", "rel_srv_v2", &[])], "");
                std::fs::write(p.join("lib/rel_srv_v2/librel_srv_v2.so"), b"not a library")
                    .unwrap();
            }),
            vec!["rel_srv"],
        ),
        (
            // Would overwrite release 1.0.0's library with another file.
            case(&|p: &Path| {
                write_release(p, "2.0.0", V2_MODS, "");
                let text = std::fs::read_to_string(p.join("releases/2.0.0/release.toml")).unwrap();
                std::fs::write(
                    p.join("releases/2.0.0/release.toml"),
                    text.replace(
                        "lib/rel_srv_v2/librel_srv_v2.so",
                        "lib/rel_srv_v1/librel_srv_v1.so",
                    ),
                )
                .unwrap();
                std::fs::create_dir_all(p.join("lib/rel_srv_v1")).unwrap();
                std::fs::copy(
                    module("rel_srv_v2"),
                    p.join("lib/rel_srv_v1/librel_srv_v1.so"),
                )
                .unwrap();
            }),
            vec!["already exists with other content", "release 1.0.0"],
        ),
        (
            case(&|p: &Path| write_release(p, "1.0.0", V1_MODS, "")),
            vec!["release 1.0.0 is already in"],
        ),
        (
            case(&|p: &Path| {
                write_release(p, "2.0.0", V2_MODS, "");
                write_release(p, "3.0.0", V2_MODS, "");
            }),
            vec!["holds 2 releases"],
        ),
        (pkg_root.0.join("missing.tar.gz"), vec!["no such file"]),
    ];
    let bad_tgz = pkg_root.0.join("bad.tar.gz");
    std::fs::write(&bad_tgz, b"not gzip").unwrap();
    let mut cases = cases;
    cases.push((bad_tgz, vec!["not a valid .tar.gz"]));
    for (pkg, want) in &cases {
        let e = node
            .releases()
            .unpack(pkg)
            .await
            .expect_err("a bad package is refused");
        let msg = e.to_string();
        assert!(
            matches!(e, ReleaseError::BadPackage(_)),
            "{}: {msg}",
            pkg.display()
        );
        assert!(msg.contains("nothing was written"), "{msg}");
        for w in want {
            assert!(msg.contains(w), "{}: want {w:?} in {msg}", pkg.display());
        }
        assert_eq!(listing(&d.0), before, "{}: nothing written", pkg.display());
    }
    // A good one, as a .tar.gz, goes in.
    let good = pkg_root.0.join("good");
    write_release(&good, "2.0.0", V2_MODS, "");
    let tgz = pkg_root.0.join("good.tar.gz");
    let ok = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&good)
        .args(["releases", "lib"])
        .status()
        .unwrap();
    assert!(ok.success());
    assert_eq!(node.releases().unpack(&tgz).await.unwrap(), "2.0.0");
    assert!(d.0.join("lib/rel_srv_v2/librel_srv_v2.so").is_file());
    assert_eq!(status(&d.0)["2.0.0"], ReleaseStatus::Unpacked);
    node.stop(WAIT).await;
}

/// Servers started while upgrades switch the module: each one ends on the version current
/// after the switch (the gate holds their `init` until it is decided), whether the switch
/// succeeds or rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_spawns_during_the_switch_start_on_the_version_after_it() {
    let (_d, node) = support::release_node(
        "rel-gate",
        &[
            ("1.0.0", V1_MODS, ""),
            ("2.0.0", V2_MODS, ""),
            (
                "3.0.0",
                V2_MODS,
                "[upgrade.rel_srv]\nextra = { fail_id = 150, fail_on = 2 }\n",
            ),
        ],
    )
    .await;
    servers(&node, 1, 300).await;
    for (target, want) in [("3.0.0", "1"), ("2.0.0", "2")] {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s2 = stop.clone();
        node.spawn_native(move |ctx| async move {
            let mut started = Vec::new();
            let mut id = 10_000;
            while !s2.load(Ordering::Relaxed) {
                id += 1;
                started.push(
                    gs::start(&ctx, "rel_srv", &id, StartOpts::default())
                        .await
                        .expect("a server starts during the switch"),
                );
            }
            let _ = tx.send(started);
        })
        .unwrap();
        let r = node
            .releases()
            .upgrade(target, UpgradeOptions::default())
            .await;
        stop.store(true, Ordering::Relaxed);
        assert_eq!(r.is_ok(), target == "2.0.0", "{:?}", r.as_ref().err());
        if let Ok(rep) = &r {
            eprintln!("spawns held at the gate: {}", rep.spawns_gated);
        }
        let started = rx.await.unwrap();
        assert!(!started.is_empty());
        for p in started {
            let v = node.process_info(p).and_then(|i| i.gen_server);
            assert_eq!(
                v,
                Some(("rel_srv".to_string(), want.to_string())),
                "server {p} started during the switch to {target}"
            );
        }
    }
    node.stop(WAIT).await;
}

/// `[upgrade.<module>] restart = true`: the module's supervised processes are restarted by
/// their supervisors on the new version instead of being migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_restart_override_restarts_through_supervisors() {
    let app = "[[application]]\nname = \"pool\"\nversion = \"1\"\nstart = [{ server = \"rel_srv\", name = \"r\", arg = 5 }]\n";
    let (_d, node) = support::release_node(
        "rel-restart",
        &[
            ("1.0.0", V1_MODS, app),
            (
                "2.0.0",
                V2_MODS,
                &format!("{app}[upgrade.rel_srv]\nrestart = true\n"),
            ),
        ],
    )
    .await;
    let r = node.whereis("r").unwrap();
    call(&node, r, Req::Bump).await;
    let plan = node.releases().plan("2.0.0").await.unwrap();
    assert!(
        plan.to_string()
            .contains("restart rel_srv through its supervisors"),
        "{plan}"
    );
    let rep = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (rep.servers_migrated, rep.processes_restarted),
        (0, 1),
        "{rep:?}"
    );
    let r2 = node.whereis("r").expect("restarted");
    assert_ne!(r2, r);
    let s: V2 = node.sys().get_state(r2).await.unwrap();
    assert_eq!(
        s,
        V2 {
            id: 5,
            total: 0,
            upgraded_from: "init".into()
        },
        "a fresh state of the new version"
    );
    node.stop(WAIT).await;
}

/// The check phase runs the types check (the static half of `Code::check`) on every
/// changed module: count_server v4 cannot read the ticks v1 queued, so the upgrade is
/// refused before anything is suspended, naming the module, the callback, the variant and
/// the fix, and `--force` (`UpgradeOptions::force`) is what overrides it, as for `load`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_types_check_refuses_incompatible_module_unless_forced() {
    let (d, node) = support::release_node(
        "rel-types",
        &[
            (
                "1.0.0",
                &[
                    ("rel_srv", "1", "rel_srv_v1", &[]),
                    ("count_server", "1", "count_server_v1", &[]),
                ],
                "",
            ),
            (
                "2.0.0",
                &[
                    ("rel_srv", "2", "rel_srv_v2", &[]),
                    ("count_server", "4", "count_server_v4", &[]),
                ],
                "",
            ),
        ],
    )
    .await;
    let pids = servers(&node, 1, 10).await;
    for &p in &pids {
        call(&node, p, Req::Bump).await;
    }
    let mut before = Vec::new();
    for &p in &pids {
        let st = node.sys().get_status(p).await.unwrap();
        before.push((st.state, st.messages_in));
    }
    let e = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect_err("count_server 4 cannot read version 1's ticks");
    let msg = e.to_string();
    let ReleaseError::Incompatible { reports, .. } = &e else {
        panic!("expected the types check to refuse, got {msg}")
    };
    assert_eq!(reports.len(), 1, "{msg}");
    assert_eq!(reports[0].module, "count_server");
    assert_eq!(reports[0].incompatible[0].callback, "handle_info", "{msg}");
    for want in [
        "count_server",
        "1 -> 4",
        "handle_info",
        "variant `Increment`",
        "Accepts::new().info::<OldTick>()",
        "nothing was touched",
        "--force",
    ] {
        assert!(msg.contains(want), "missing {want:?} in: {msg}");
    }
    // Nothing was suspended or switched.
    assert_eq!(current_vsn(&node, "rel_srv").unwrap().0, "1");
    assert_eq!(current_vsn(&node, "count_server").unwrap().0, "1");
    for (i, &p) in pids.iter().enumerate() {
        let st = node.sys().get_status(p).await.unwrap();
        assert_eq!(
            (st.state, st.messages_in),
            before[i],
            "server {p} untouched"
        );
        assert!(!st.suspended);
    }
    assert_eq!(status(&d.0)["2.0.0"], ReleaseStatus::Unpacked);
    // Forced: the upgrade runs, and says what it was forced past.
    let r = node
        .releases()
        .upgrade(
            "2.0.0",
            UpgradeOptions {
                force: true,
                ..UpgradeOptions::default()
            },
        )
        .await
        .expect("a forced upgrade runs");
    assert_eq!(current_vsn(&node, "count_server").unwrap().0, "4");
    assert_eq!(r.servers_migrated, pids.len());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("forced past the types check") && w.contains("handle_info")),
        "{:?}",
        r.warnings
    );
    node.stop(WAIT).await;
}

/// Releases for the purge tests: seed000 v1 in 1.0.0, v2 in 2.0.0, v1's build again in
/// 3.0.0 (`soft_purge`, the default) and 4.0.0 (`purge = "brutal_purge"`). A `do_loop`
/// process never makes a fully-qualified call, so it stays on the version it started on.
fn purge_releases(root: &Path) {
    let v1: &[Mod] = &[("seed000", "1", "seed000_v1", &[])];
    write_release(root, "1.0.0", v1, "");
    write_release(root, "2.0.0", &[("seed000", "2", "seed000_v2", &[])], "");
    write_release(root, "3.0.0", v1, "");
    write_release(
        root,
        "4.0.0",
        v1,
        "[upgrade.seed000]\npurge = \"brutal_purge\"\n",
    );
}

/// `soft_purge` (the default, OTP's PrePurge soft_purge): a process still running an old
/// version of a changed module refuses the upgrade (`old_processes`), naming it and the
/// ways out; nothing is killed or switched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_soft_purge_refuses_while_old_code_runs() {
    let d = TempDir::new("rel-softpurge");
    purge_releases(&d.0);
    let node = support::boot(&d.0, "1.0.0").await;
    let me = node.external();
    let on_v1 = node.spawn("seed000", "do_loop", &()).unwrap();
    let r = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    assert!(r.processes_killed.is_empty());
    // The replaced version stays (soft): the process still runs it.
    let info = node.code().module("seed000").unwrap();
    assert_eq!(info.old.as_ref().map(|o| o.version.as_str()), Some("1"));
    let plan = node.releases().plan("3.0.0").await.unwrap();
    assert_eq!(plan.module("seed000").unwrap().old_processes, [on_v1]);
    let e = node
        .releases()
        .upgrade("3.0.0", UpgradeOptions::default())
        .await
        .expect_err("a process still runs old code");
    let msg = e.to_string();
    assert!(matches!(e, ReleaseError::Refused { .. }), "{msg}");
    for want in [
        "seed000",
        &on_v1.to_string(),
        "still run its old code (soft_purge)",
        "purge = \"brutal_purge\"",
        "nothing was touched",
    ] {
        assert!(msg.contains(want), "missing {want:?} in: {msg}");
    }
    assert!(node.is_alive(on_v1), "nothing killed");
    assert_eq!(ping(&me, on_v1).await.version, "1");
    assert_eq!(current_vsn(&node, "seed000").unwrap().0, "2");
    node.stop(WAIT).await;
}

/// `purge = "brutal_purge"` (OTP's brutal_purge): the processes still on the old version
/// are killed before the switch so it can be purged, and those left on the replaced
/// version are killed after it; the report names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_brutal_purge_kills_processes_on_old_code() {
    let d = TempDir::new("rel-brutalpurge");
    purge_releases(&d.0);
    let node = support::boot(&d.0, "1.0.0").await;
    let me = node.external();
    let on_v1 = node.spawn("seed000", "do_loop", &()).unwrap();
    node.releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    let on_v2 = node.spawn("seed000", "do_loop", &()).unwrap();
    assert_eq!(ping(&me, on_v2).await.version, "2");
    let (m1, m2) = (me.monitor(on_v1), me.monitor(on_v2));
    let plan = node.releases().plan("4.0.0").await.unwrap();
    let text = plan.to_string();
    assert!(
        text.contains(&format!(
            "brutal_purge seed000: kill 1 process(es) still running its old code: {on_v1}"
        )),
        "{text}"
    );
    assert!(
        text.contains("brutal_purge the old code of seed000"),
        "{text}"
    );
    let r = node
        .releases()
        .upgrade("4.0.0", UpgradeOptions::default())
        .await
        .expect("brutal_purge lets the upgrade proceed");
    assert_eq!(r.processes_killed, [on_v1, on_v2], "{r:?}");
    assert_eq!(
        me.down(m1, WAIT).await,
        Some(hotswap_runtime::ExitReason::Killed)
    );
    assert_eq!(
        me.down(m2, WAIT).await,
        Some(hotswap_runtime::ExitReason::Killed)
    );
    let info = node.code().module("seed000").unwrap();
    assert_eq!(info.current.unwrap().version, "1");
    assert!(info.old.is_none(), "the old code was purged");
    let fresh = node.spawn("seed000", "do_loop", &()).unwrap();
    assert_eq!(ping(&me, fresh).await.version, "1");
    node.stop(WAIT).await;
}

/// `brutal_purge` kills only once the switch can no longer fail: an upgrade whose switch
/// fails after the processes on old code were found (a `code_change` at the second of four
/// servers) rolls back with every process that was alive before still alive, on the code
/// it ran, and every server with its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_brutal_purge_kills_nothing_when_rolled_back() {
    let d = TempDir::new("rel-brutalrollback");
    let seed = |v: &'static str| -> Mod<'static> {
        if v == "1" {
            ("seed000", "1", "seed000_v1", &[])
        } else {
            ("seed000", "2", "seed000_v2", &[])
        }
    };
    write_release(&d.0, "1.0.0", &[seed("1"), V1_MODS[0]], "");
    write_release(&d.0, "2.0.0", &[seed("2"), V1_MODS[0]], "");
    write_release(
        &d.0,
        "3.0.0",
        &[seed("1"), V2_MODS[0]],
        "[upgrade.seed000]\npurge = \"brutal_purge\"\n[upgrade.rel_srv]\nextra = { fail_id = 2, fail_on = 2 }\n",
    );
    let node = support::boot(&d.0, "1.0.0").await;
    let me = node.external();
    let on_v1 = node.spawn("seed000", "do_loop", &()).unwrap();
    node.releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    let on_v2 = node.spawn("seed000", "do_loop", &()).unwrap();
    let pids = servers(&node, 1, 4).await;
    for &p in &pids {
        call(&node, p, Req::Bump).await;
    }
    let plan = node.releases().plan("3.0.0").await.unwrap();
    assert_eq!(plan.module("seed000").unwrap().old_processes, [on_v1]);
    let e = node
        .releases()
        .upgrade("3.0.0", UpgradeOptions::default())
        .await
        .expect_err("the code_change of server 2 fails in the switch");
    let ReleaseError::RolledBack { phase, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(phase, "code_change", "{e}");
    for (p, vsn) in [(on_v1, "1"), (on_v2, "2")] {
        assert!(node.is_alive(p), "{p} was not killed: {e}");
        assert_eq!(ping(&me, p).await.version, vsn, "{p} runs the code it ran");
    }
    let info = node.code().module("seed000").unwrap();
    assert_eq!(info.current.unwrap().version, "2");
    assert_eq!(
        info.old.map(|o| o.version),
        Some("1".to_string()),
        "the old version is back in its slot"
    );
    for (i, &p) in pids.iter().enumerate() {
        let s: V1 = node.sys().get_state(p).await.unwrap();
        assert_eq!(
            s,
            V1 {
                id: i as u64 + 1,
                count: 1
            },
            "{p} kept its state"
        );
    }
    node.stop(WAIT).await;
}

/// The ids and pids of a supervisor's children, sorted by id.
async fn kids(node: &Node, sup: Pid) -> Vec<(String, Option<Pid>)> {
    let mut v: Vec<(String, Option<Pid>)> = node
        .supervisor()
        .which_children(sup)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| {
            let pid = match c.pid {
                hotswap_runtime::supervisor::ChildPid::Running(p) => Some(p),
                _ => None,
            };
            c.id.map(|id| (id, pid))
        })
        .collect();
    v.sort();
    v
}

/// An application whose tree comes from a supervisor module (`sup_tree`): the plan calls
/// both versions' `init` and compares the trees (v2 raises the intensity by 10 and adds
/// `added_in_v2`); the upgrade goes through the supervisor's sys `change_code` (spec
/// §4.8), then starts the added child, keeping the running one; the downgrade takes the
/// old tree back the same way and stops the child v1 does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_supervisor_module_tree_changes_through_change_code() {
    use hotswap_runtime::supervisor::SupState;
    let app = r#"
[[application]]
name = "tree"
version = "1"
supervisor = "sup_tree"
arg = { ignore = false, strategy = "one_for_one", intensity = 2, period_secs = 10, children = [
  { config = { id = "s1", trap_exit = false, log = "", terminate_ms = 0, fail_init = false, ignore_init = false, fail_init_if = "" }, restart = "permanent" },
] }
"#;
    let (_d, node) = support::release_node(
        "rel-suptree",
        &[
            (
                "1.0.0",
                &[
                    ("sup_worker", "1", "sup_worker", &[]),
                    ("sup_tree", "1", "sup_tree", &[]),
                ],
                app,
            ),
            (
                "2.0.0",
                &[
                    ("sup_worker", "1", "sup_worker", &[]),
                    ("sup_tree", "2", "sup_tree_v2", &[]),
                ],
                app,
            ),
        ],
    )
    .await;
    let sup = node.applications()[0].supervisor;
    let before = kids(&node, sup).await;
    assert_eq!(before.len(), 1);
    let s1 = before[0].1.expect("s1 runs");
    let plan = node.releases().plan("2.0.0").await.unwrap();
    let text = plan.to_string();
    for want in [
        "tree                 children: start added_in_v2, stop nothing, restart nothing; flags intensity 2 -> 12 (trees of both versions of sup_tree compared)",
        "supervisor of tree: sys change_code (the tree of sup_tree's new init), flags intensity 2 -> 12",
        "supervisor of tree: start added_in_v2\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let r = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect("upgrade succeeds");
    assert!(
        r.log
            .contains(&"change_code supervisor of tree".to_string()),
        "{:?}",
        r.log
    );
    assert_eq!(node.applications()[0].supervisor, sup, "same supervisor");
    let st: SupState = node.sys().get_state(sup).await.unwrap();
    assert_eq!(st.intensity, 12, "the new flags");
    let after = kids(&node, sup).await;
    assert_eq!(after[0].0, "added_in_v2");
    assert!(after[0].1.is_some(), "the added child was started");
    assert_eq!(after[1], ("s1".to_string(), Some(s1)), "s1 kept running");

    let plan = node.releases().plan("1.0.0").await.unwrap();
    assert!(
        plan.to_string()
            .contains("supervisor of tree: stop added_in_v2\n"),
        "{plan}"
    );
    node.releases()
        .upgrade("1.0.0", UpgradeOptions::default())
        .await
        .expect("downgrade succeeds");
    let st: SupState = node.sys().get_state(sup).await.unwrap();
    assert_eq!(st.intensity, 2, "the old flags back");
    assert_eq!(
        kids(&node, sup).await,
        [("s1".to_string(), Some(s1))],
        "the child v1 does not have was stopped and deleted"
    );
    node.stop(WAIT).await;
}

/// A `sup_worker` child entry of a `sup_tree` argument, as TOML.
fn tree_worker(id: &str, fail_if: &str) -> String {
    format!(
        "{{ config = {{ id = \"{id}\", trap_exit = false, log = \"\", terminate_ms = 0, fail_init = false, ignore_init = false, fail_init_if = \"{fail_if}\" }}, restart = \"permanent\" }}"
    )
}

/// An application `tree` whose top supervisor (`sup_tree`, unchanged by version 2:
/// `same_in_v2`) has a worker `s1` and two supervisors below it: `inner`, whose tree the
/// top's `init` builds inline (its parent's entry), and `nested`, a `sup_tree` supervisor
/// module of its own. Version 2 of `sup_tree` raises the intensity of both by 10 and adds
/// `added_in_v2` (a copy of their first worker, which fails to start while `fail_if`
/// exists).
fn nested_tree_app(fail_if: &str) -> String {
    let sub = |intensity: u32, worker: &str| {
        format!(
            "{{ ignore = false, strategy = \"one_for_one\", intensity = {intensity}, period_secs = 10, children = [{}] }}",
            tree_worker(worker, fail_if)
        )
    };
    format!(
        r#"
[[application]]
name = "tree"
version = "1"
supervisor = "sup_tree"

[application.arg]
ignore = false
strategy = "one_for_one"
intensity = 2
period_secs = 10
same_in_v2 = true
children = [{}]

[[application.arg.subtrees]]
id = "inner"
module = false
arg = {}

[[application.arg.subtrees]]
id = "nested"
module = true
arg = {}
"#,
        tree_worker("s1", ""),
        sub(3, "i1"),
        sub(4, "n1")
    )
}

/// A node running [`nested_tree_app`] in release 1.0.0 (`sup_tree` 1), with release
/// 2.0.0 (`sup_tree` 2) beside it.
async fn nested_tree_node(tag: &str, fail_if: &str) -> (TempDir, Node) {
    let app = nested_tree_app(fail_if);
    support::release_node(
        tag,
        &[
            (
                "1.0.0",
                &[
                    ("sup_worker", "1", "sup_worker", &[]),
                    ("sup_tree", "1", "sup_tree", &[]),
                ],
                &app,
            ),
            (
                "2.0.0",
                &[
                    ("sup_worker", "1", "sup_worker", &[]),
                    ("sup_tree", "2", "sup_tree_v2", &[]),
                ],
                &app,
            ),
        ],
    )
    .await
}

/// The restart intensity of a supervisor.
async fn intensity(node: &Node, sup: Pid) -> u32 {
    let st: hotswap_runtime::supervisor::SupState = node.sys().get_state(sup).await.unwrap();
    st.intensity
}

/// The intensity of the tree that `parent`'s entry `id` gives the supervisor below it.
async fn entry_intensity(node: &Node, parent: Pid, id: &str) -> u32 {
    let spec = node.supervisor().get_childspec(parent, id).await.unwrap();
    match spec.start {
        hotswap::supervisor::Start::Supervisor { spec, .. } => spec.intensity,
        other => panic!("{id} is not an inline supervisor: {other:?}"),
    }
}

/// Supervisors below an application's top one are compared in the plan and take their
/// new trees by sys `change_code` during the switch, the top one unchanged by its module:
/// `inner` (a tree its parent's entry gives: the parent takes the new entry, `inner` the
/// new tree) and `nested` (a supervisor module that changed). Each keeps its pid and its
/// running children, gets the new flags, and starts the child it gains; the downgrade
/// takes every old tree back the same way and stops the added children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_nested_supervisor_changes_through_change_code() {
    let (_d, node) = nested_tree_node("rel-nested", "").await;
    let top = node.applications()[0].supervisor;
    let before = kids(&node, top).await;
    let ids: Vec<&str> = before.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["inner", "nested", "s1"]);
    let (inner, nested) = (before[0].1.unwrap(), before[1].1.unwrap());
    let (i1, n1) = (kids(&node, inner).await, kids(&node, nested).await);
    assert_eq!(i1.len(), 1);
    assert_eq!(n1.len(), 1);
    let plan = node.releases().plan("2.0.0").await.unwrap();
    let text = plan.to_string();
    for want in [
        "tree                 children: start nothing, stop nothing, restart nothing (trees of both versions of sup_tree compared)\n",
        "tree/inner           children: start added_in_v2, stop nothing, restart nothing; flags intensity 3 -> 13\n",
        "tree/nested          children: start added_in_v2, stop nothing, restart nothing; flags intensity 4 -> 14 (trees of both versions of sup_tree compared)\n",
        "supervisor inner of tree: sys change_code (the tree in its parent's new entry), flags intensity 3 -> 13\n",
        "supervisor nested of tree: sys change_code (the tree of sup_tree's new init), flags intensity 4 -> 14\n",
        "supervisor inner of tree: start added_in_v2\n",
        "supervisor nested of tree: start added_in_v2\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let r = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect("upgrade succeeds");
    for want in [
        "change_code supervisor of tree",
        "change_code supervisor inner of tree",
        "change_code supervisor nested of tree",
    ] {
        assert!(r.log.contains(&want.to_string()), "{want:?} in {:?}", r.log);
    }
    assert_eq!(kids(&node, top).await, before, "the top's children kept");
    assert_eq!(intensity(&node, top).await, 2, "the top's flags unchanged");
    assert_eq!(
        entry_intensity(&node, top, "inner").await,
        13,
        "the new entry"
    );
    for (sup, was, flags) in [(inner, &i1, 13), (nested, &n1, 14)] {
        assert_eq!(intensity(&node, sup).await, flags, "{sup}: the new flags");
        let now = kids(&node, sup).await;
        assert_eq!(now.len(), 2, "{now:?}");
        assert_eq!(now[0].0, "added_in_v2");
        assert!(now[0].1.is_some(), "the added child was started");
        assert_eq!(now[1], was[0], "the running child kept");
    }

    node.releases()
        .upgrade("1.0.0", UpgradeOptions::default())
        .await
        .expect("downgrade succeeds");
    assert_eq!(kids(&node, top).await, before);
    assert_eq!(
        entry_intensity(&node, top, "inner").await,
        3,
        "the old entry"
    );
    for (sup, was, flags) in [(inner, &i1, 3), (nested, &n1, 4)] {
        assert_eq!(intensity(&node, sup).await, flags, "{sup}: the old flags");
        assert_eq!(&kids(&node, sup).await, was, "the added child stopped");
    }
    node.stop(WAIT).await;
}

/// A child that a supervisor below the top one gains fails to start: the upgrade rolls
/// back, and every supervisor of the tree takes its old tree back (old flags, old entry,
/// the added ids deleted), their pids and running children untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_nested_supervisor_change_rolls_back() {
    let d = TempDir::new("rel-nested-fail");
    let fail = d.0.join("fail-init");
    let (_d2, node) = nested_tree_node("rel-nested-rollback", fail.to_str().unwrap()).await;
    let top = node.applications()[0].supervisor;
    let before = kids(&node, top).await;
    let (inner, nested) = (before[0].1.unwrap(), before[1].1.unwrap());
    let (i1, n1) = (kids(&node, inner).await, kids(&node, nested).await);
    // From now on the workers' init fails: so does the added copy's.
    std::fs::write(&fail, "").unwrap();
    let e = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect_err("the added child does not start");
    let ReleaseError::RolledBack { phase, failed, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(phase, "applications", "{e}");
    assert!(
        failed.contains("supervisor inner of tree") && failed.contains("added_in_v2"),
        "{e}"
    );
    assert_eq!(current_vsn(&node, "sup_tree").unwrap().0, "1");
    assert_eq!(kids(&node, top).await, before, "the top's children kept");
    assert_eq!(
        entry_intensity(&node, top, "inner").await,
        3,
        "the old entry back"
    );
    for (sup, was, flags) in [(inner, &i1, 3), (nested, &n1, 4)] {
        assert_eq!(
            intensity(&node, sup).await,
            flags,
            "{sup}: the old flags back"
        );
        assert_eq!(
            &kids(&node, sup).await,
            was,
            "{sup}: the added id deleted, the running child kept"
        );
    }
    node.stop(WAIT).await;
}

/// An application whose start type changed is stopped and started again from the new
/// release (OTP's `restart_application`); the other application's servers keep their
/// state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_restarts_application_whose_start_type_changed() {
    use hotswap_runtime::application::StartType;
    let keep = "[[application]]\nname = \"keep\"\nversion = \"1\"\nstart = [{ server = \"rel_srv\", name = \"k\", arg = 1 }]\n";
    let flip = |t: &str| {
        format!("[[application]]\nname = \"flip\"\nversion = \"1\"\ntype = \"{t}\"\nstart = [{{ server = \"rel_srv\", name = \"f\", arg = 2 }}]\n")
    };
    let (_d, node) = support::release_node(
        "rel-apptype",
        &[
            ("1.0.0", V1_MODS, &format!("{keep}{}", flip("temporary"))),
            ("2.0.0", V2_MODS, &format!("{keep}{}", flip("permanent"))),
        ],
    )
    .await;
    let (k, f) = (node.whereis("k").unwrap(), node.whereis("f").unwrap());
    call(&node, k, Req::Bump).await;
    call(&node, f, Req::Bump).await;
    let plan = node.releases().plan("2.0.0").await.unwrap();
    assert!(
        plan.to_string()
            .contains("restart application flip (start type temporary -> permanent)"),
        "{plan}"
    );
    let r = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.applications_restarted, ["flip"]);
    let apps = node.applications();
    let flip_app = apps.iter().find(|a| a.name == "flip").expect("flip runs");
    assert_eq!(flip_app.start_type, StartType::Permanent);
    let f2 = node.whereis("f").expect("f started again");
    assert_ne!(f2, f, "a new process");
    let s: V2 = node.sys().get_state(f2).await.unwrap();
    assert_eq!(
        s,
        V2 {
            id: 2,
            total: 0,
            upgraded_from: "init".into()
        },
        "started afresh on the new version"
    );
    assert_eq!(node.whereis("k"), Some(k), "the other application kept");
    let s: V2 = node.sys().get_state(k).await.unwrap();
    assert_eq!(s.total, 1, "its state kept");
    node.stop(WAIT).await;
}

/// The switch holds servers that wait between events in place (no suspend message, no
/// round trip through their mailboxes), and suspends a busy one with a `sys` request,
/// answered once its callback is done; both are migrated, and the busy one's calls are
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_holds_idle_servers_in_place_and_suspends_busy_ones() {
    let (_d, node) = support::release_node(
        "rel-hold",
        &[("1.0.0", V1_MODS, ""), ("2.0.0", V2_MODS, "")],
    )
    .await;
    let pids = servers(&node, 1, 40).await;
    for &p in &pids {
        call(&node, p, Req::Bump).await;
    }
    let busy = pids[7];
    let n2 = node.clone();
    let slow = tokio::spawn(async move { call(&n2, busy, Req::Sleep(600)).await });
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.process_info(busy).unwrap().running.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow call never started"
        );
        tokio::task::yield_now().await;
    }
    // A second slow call queued behind it: the check copies the state between the two
    // (when the first gives it back), and the switch finds the server busy in the second.
    let n3 = node.clone();
    let slow2 = tokio::spawn(async move { call(&n3, busy, Req::Sleep(300)).await });
    while node.process_info(busy).unwrap().message_queue_len == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second slow call was never queued"
        );
        tokio::task::yield_now().await;
    }
    let r = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect("upgrade succeeds");
    assert_eq!(r.servers_migrated, 40, "{r:?}");
    assert_eq!(
        r.servers_held, 39,
        "every idle server held in place, the busy one suspended by message"
    );
    assert_eq!(slow.await.unwrap(), Rep::Ok);
    assert_eq!(slow2.await.unwrap(), Rep::Ok);
    for (i, &p) in pids.iter().enumerate() {
        let s: V2 = node.sys().get_state(p).await.unwrap();
        assert_eq!(
            s,
            V2 {
                id: i as u64 + 1,
                total: 1,
                upgraded_from: "1".into()
            }
        );
        assert!(!node.sys().get_status(p).await.unwrap().suspended);
    }
    // The same upgrade back, every server suspended by message: none held.
    let r = node
        .releases()
        .upgrade(
            "1.0.0",
            UpgradeOptions {
                suspend_by_message: true,
                ..UpgradeOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((r.servers_migrated, r.servers_held), (40, 0));
    node.stop(WAIT).await;
}

/// A child the new tree adds fails to start: the upgrade rolls back, and the supervisor
/// takes its old tree back (old flags, the added id deleted), its running child untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_upgrade_supervisor_change_rolls_back_when_a_new_child_fails() {
    use hotswap_runtime::supervisor::SupState;
    // `bad`'s argument is not the u64 rel_srv's init takes: it does not start.
    let (_d, node) = support::release_node(
        "rel-suprollback",
        &[
            (
                "1.0.0",
                V1_MODS,
                "[[application]]\nname = \"pool\"\nversion = \"1\"\nstart = [{ server = \"rel_srv\", name = \"a\", arg = 1 }]\n",
            ),
            (
                "2.0.0",
                V2_MODS,
                "[[application]]\nname = \"pool\"\nversion = \"2\"\nintensity = 7\nstart = [{ server = \"rel_srv\", name = \"a\", arg = 1 }, { server = \"rel_srv\", name = \"bad\", arg = \"not a number\" }]\n",
            ),
        ],
    )
    .await;
    let a = node.whereis("a").unwrap();
    call(&node, a, Req::Bump).await;
    let sup = node.applications()[0].supervisor;
    let e = node
        .releases()
        .upgrade("2.0.0", UpgradeOptions::default())
        .await
        .expect_err("the added child does not start");
    let ReleaseError::RolledBack { phase, failed, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(phase, "applications", "{e}");
    assert!(failed.contains("bad"), "{e}");
    let st: SupState = node.sys().get_state(sup).await.unwrap();
    assert_eq!(st.intensity, 1, "the old flags back");
    assert_eq!(
        kids(&node, sup).await,
        [("a".to_string(), Some(a))],
        "the added id deleted, the running child kept"
    );
    let s: V1 = node.sys().get_state(a).await.unwrap();
    assert_eq!(s, V1 { id: 1, count: 1 }, "its old state");
    assert_eq!(current_vsn(&node, "rel_srv").unwrap().0, "1");
    node.stop(WAIT).await;
}

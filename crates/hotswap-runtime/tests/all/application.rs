//! Applications (spec §5) and the graceful node stop (spec §6.1), with the `app_worker`
//! fixture: gen_servers that tell a listener when they start and when `terminate` runs.

use std::time::Duration;

use hotswap_runtime::supervisor::{ChildSpec, Shutdown, Source, Spec, Strategy};
use hotswap_runtime::{AppError, Application, ExitReason, ExternalProcess, Node, Pid, StartType};
use serde::{Deserialize, Serialize};

use crate::support::{module, TempDir, WAIT};

/// Mirror of the fixture's `Config`.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct Config {
    id: String,
    trap_exit: bool,
    log: Option<String>,
    notify: Option<Pid>,
    crash: Option<String>,
    terminate_hang: bool,
}

/// Mirror of the fixture's `Note`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
enum Note {
    Started(Pid, String),
    Terminated(String, String),
}

async fn node() -> Node {
    let node = crate::support::node();
    node.code().load(module("app_worker")).await.unwrap();
    node
}

fn worker(me: &ExternalProcess, id: &str) -> Config {
    Config {
        id: id.into(),
        trap_exit: true,
        notify: Some(me.pid()),
        ..Config::default()
    }
}

/// An application of trapping workers `ids`, each telling `me`.
fn app(me: &ExternalProcess, name: &str, ids: &[&str]) -> Application {
    let mut spec = Spec::new(Strategy::OneForOne);
    for id in ids {
        spec = spec.child(ChildSpec::server(*id, "app_worker", &worker(me, id)));
    }
    Application::new(name, "1.0", Source::Spec(spec))
}

/// The next note, within `WAIT`.
async fn note(me: &ExternalProcess) -> Note {
    me.receive::<Note>(WAIT)
        .await
        .expect("a note from a worker")
}

/// The ids of the next `n` `Started` notes.
async fn started(me: &ExternalProcess, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        match note(me).await {
            Note::Started(_, id) => v.push(id),
            other => panic!("expected Started, got {other:?}"),
        }
    }
    v
}

/// The `(id, reason)` of the next `n` `Terminated` notes.
async fn terminated(me: &ExternalProcess, n: usize) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for _ in 0..n {
        match note(me).await {
            Note::Terminated(id, r) => v.push((id, r)),
            other => panic!("expected Terminated, got {other:?}"),
        }
    }
    v
}

/// A monitor of the master of the running application `name`, if it is still running.
fn watch_master(node: &Node, me: &ExternalProcess, name: &str) -> Option<hotswap_runtime::Ref> {
    let a = node.applications().into_iter().find(|a| a.name == name)?;
    Some(me.monitor(a.master))
}

/// Wait until the master [`watch_master`] watched has exited (it removes its application
/// from the running ones before it exits).
async fn master_gone(me: &ExternalProcess, m: Option<hotswap_runtime::Ref>) {
    if let Some(m) = m {
        let r = me.down(m, WAIT).await.expect("the master exits");
        assert!(
            matches!(
                r,
                ExitReason::Shutdown | ExitReason::Normal | ExitReason::NoProc
            ),
            "{r}"
        );
    }
}

fn ids(v: &[(String, String)]) -> Vec<&str> {
    v.iter().map(|(id, _)| id.as_str()).collect()
}

/// The fixture's log file: a shutdown kills the listener too (its mailbox goes with it), so
/// what happens during one is read from the file afterwards.
struct Log(TempDir);

impl Log {
    fn new(tag: &str) -> Log {
        Log(TempDir::new(tag))
    }

    fn path(&self) -> String {
        self.0 .0.join("log").display().to_string()
    }

    /// A trapping worker that logs to this file (and tells `me` when it starts).
    fn worker(&self, me: &ExternalProcess, id: &str) -> Config {
        Config {
            log: Some(self.path()),
            ..worker(me, id)
        }
    }

    fn app(&self, me: &ExternalProcess, name: &str, ids: &[&str]) -> Application {
        let mut spec = Spec::new(Strategy::OneForOne);
        for id in ids {
            spec = spec.child(ChildSpec::server(*id, "app_worker", &self.worker(me, id)));
        }
        Application::new(name, "1.0", Source::Spec(spec))
    }

    /// The `terminate <id> <reason>` lines, as `id reason`.
    fn terminated(&self) -> Vec<String> {
        std::fs::read_to_string(self.path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("terminate "))
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_start_stop_dependencies_and_refusals() {
    let node = node().await;
    let me = node.external();

    // A dependency that is not running: nothing starts.
    let b = app(&me, "b", &["b1"]).depends(["a"]);
    assert_eq!(
        node.start_application(b.clone()).await,
        Err(AppError::NotStarted {
            app: "b".into(),
            dep: "a".into()
        })
    );
    assert!(node.applications().is_empty());

    let top_a = node
        .start_application(app(&me, "a", &["a1", "a2"]))
        .await
        .expect("a starts");
    assert_eq!(started(&me, 2).await, ["a1", "a2"], "children in order");
    let top_b = node.start_application(b).await.expect("b starts");
    assert_eq!(started(&me, 1).await, ["b1"]);
    assert_eq!(
        node.start_application(app(&me, "a", &[])).await,
        Err(AppError::AlreadyStarted("a".into()))
    );

    let apps = node.applications();
    assert_eq!(apps.len(), 2);
    assert_eq!(
        (
            apps[0].name.as_str(),
            apps[0].supervisor,
            apps[0].start_type
        ),
        ("a", top_a, StartType::Permanent)
    );
    assert_eq!((apps[1].name.as_str(), apps[1].supervisor), ("b", top_b));
    assert_eq!(apps[1].depends, ["a"]);
    let kids = node.supervisor().which_children(top_a).await.unwrap();
    assert_eq!(kids.len(), 2);
    assert!(node.process_info(apps[0].master).unwrap().trap_exit);
    assert_eq!(
        node.process_info(apps[0].master).unwrap().links,
        vec![top_a],
        "the master is linked to its top supervisor"
    );

    // Stopping `a` stops its tree in reverse order; `b`, which depends on it, keeps running,
    // and nothing halts the node (an explicit stop never does).
    let mon = me.monitor(top_a);
    let master = me.monitor(apps[0].master);
    node.stop_application("a").await.expect("a stops");
    assert_eq!(me.down(mon, WAIT).await, Some(ExitReason::Shutdown));
    assert_eq!(me.down(master, WAIT).await, Some(ExitReason::Normal));
    let t = terminated(&me, 2).await;
    assert_eq!(ids(&t), ["a2", "a1"]);
    assert!(t.iter().all(|(_, r)| r == "shutdown"), "{t:?}");
    let left: Vec<String> = node.applications().into_iter().map(|a| a.name).collect();
    assert_eq!(left, ["b"]);
    assert!(node.is_alive(top_b));
    assert_eq!(
        node.stop_application("a").await,
        Err(AppError::NotRunning("a".into()))
    );
    assert_eq!(node.halt_reason(), None);

    // It can start again.
    node.start_application(app(&me, "a", &["a1"]))
        .await
        .expect("a starts again");
    assert_eq!(started(&me, 1).await, ["a1"]);
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_permanent_termination_halts_node() {
    let node = node().await;
    let me = node.external();
    let log = Log::new("app-perm");
    node.start_application(log.app(&me, "keeper", &["k1"]))
        .await
        .unwrap();
    started(&me, 1).await;
    // A worker that crashes right after init: restarted once (intensity 1), then the
    // supervisor gives up with `shutdown`.
    let crash = Config {
        crash: Some("boom".into()),
        ..worker(&me, "c")
    };
    let spec = Spec::new(Strategy::OneForOne).child(ChildSpec::server("c", "app_worker", &crash));
    let top = node
        .start_application(
            Application::new("doomed", "2.0", Source::Spec(spec)).depends(["keeper"]),
        )
        .await
        .expect("the tree starts (the crash comes after init)");
    let reason = tokio::time::timeout(WAIT, node.halted())
        .await
        .expect("the node halts");
    assert_eq!(reason, "{application_terminated, doomed, shutdown}");
    assert_eq!(node.halt_reason().as_deref(), Some(reason.as_str()));
    assert!(!node.is_alive(top));
    let left: Vec<String> = node.applications().into_iter().map(|a| a.name).collect();
    assert_eq!(left, ["keeper"], "the other application still runs");

    // What the embedding program then does: stop the rest.
    let report = node.shutdown(WAIT).await;
    assert_eq!(report.stopped, ["keeper"]);
    assert!(report.clean(), "{report:?}");
    assert_eq!(log.terminated(), ["k1 shutdown"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_temporary_and_transient_terminations() {
    let node = node().await;
    let me = node.external();
    let crashing = |name: &str, t: StartType| {
        let c = Config {
            crash: Some("boom".into()),
            ..worker(&me, name)
        };
        Application::new(
            name,
            "1",
            Source::Spec(
                Spec::new(Strategy::OneForOne)
                    .intensity(0)
                    .child(ChildSpec::server("c", "app_worker", &c)),
            ),
        )
        .start_type(t)
    };

    // Temporary: the node keeps running.
    node.start_application(crashing("temp", StartType::Temporary))
        .await
        .unwrap();
    let m = watch_master(&node, &me, "temp");
    master_gone(&me, m).await;
    assert!(node.applications().is_empty());
    assert_eq!(node.halt_reason(), None);

    // Transient, top supervisor exiting `normal` (sys:terminate): the node keeps running.
    let top = node
        .start_application(app(&me, "tn", &["t1"]).start_type(StartType::Transient))
        .await
        .unwrap();
    started(&me, 1).await;
    let m = watch_master(&node, &me, "tn");
    node.sys()
        .terminate(top, ExitReason::Normal)
        .await
        .expect("the supervisor terminates");
    master_gone(&me, m).await;
    assert!(node.applications().is_empty());
    assert_eq!(node.halt_reason(), None);

    // Transient, `shutdown` after too many restarts: the node terminates.
    node.start_application(crashing("trans", StartType::Transient))
        .await
        .unwrap();
    let reason = tokio::time::timeout(WAIT, node.halted()).await.unwrap();
    assert_eq!(reason, "{application_terminated, trans, shutdown}");
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_start_failure() {
    let node = node().await;
    let me = node.external();
    let bad = |name: &str| {
        Application::new(
            name,
            "1",
            Source::Spec(
                Spec::new(Strategy::OneForOne)
                    .child(ChildSpec::server("ok", "app_worker", &worker(&me, "ok")))
                    .child(ChildSpec::server("missing", "no_such_module", &())),
            ),
        )
    };
    // Temporary: the error, and the node keeps running.
    let e = node
        .start_application(bad("t").start_type(StartType::Temporary))
        .await
        .unwrap_err();
    let AppError::StartFailed { app, reason } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(app, "t");
    assert!(
        reason.contains("missing") && reason.contains("no_such_module"),
        "{e}"
    );
    // The child that had started was stopped again.
    assert_eq!(started(&me, 1).await, ["ok"]);
    assert_eq!(terminated(&me, 1).await, [("ok".into(), "shutdown".into())]);
    assert!(node.applications().is_empty());
    assert_eq!(node.halt_reason(), None);
    // A module whose supervisor callback is missing.
    let e = node
        .start_application(
            Application::new(
                "m",
                "1",
                Source::Module {
                    module: "no_such_module".into(),
                    arg: hotswap::codec::encode(&()),
                },
            )
            .start_type(StartType::Temporary),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no_such_module"), "{e}");
    // Permanent: the same error, and the node must terminate.
    node.start_application(bad("p")).await.unwrap_err();
    let reason = tokio::time::timeout(WAIT, node.halted()).await.unwrap();
    assert!(
        reason.starts_with("{application_start_failure, p, "),
        "{reason}"
    );
    node.stop(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_shutdown_stops_applications_in_reverse_order_and_joins() {
    let node = node().await;
    let me = node.external();
    let log = Log::new("app-order");
    node.start_application(log.app(&me, "a", &["a1", "a2"]))
        .await
        .unwrap();
    // A tree from the module's own supervisor callback, nested under a Rust-built one.
    let inner = hotswap::codec::encode(&serde_json::json!({
        "children": 2,
        "worker": log.worker(&me, "bm"),
    }));
    let spec = Spec::new(Strategy::OneForOne)
        .child(ChildSpec::server(
            "b1",
            "app_worker",
            &log.worker(&me, "b1"),
        ))
        .child(ChildSpec::new(
            "pool",
            hotswap_runtime::supervisor::Start::SupervisorModule {
                module: "app_worker".into(),
                arg: inner,
                name: Some("b_pool".into()),
            },
        ))
        .child(
            ChildSpec::server("b2", "app_worker", &log.worker(&me, "b2"))
                .shutdown(Shutdown::BrutalKill),
        );
    node.start_application(Application::new("b", "1", Source::Spec(spec)).depends(["a"]))
        .await
        .unwrap();
    assert_eq!(
        started(&me, 6).await,
        ["a1", "a2", "b1", "bm1", "bm2", "b2"]
    );

    // Two requests: one shutdown, the same report for both.
    let (r1, r2) = tokio::join!(node.shutdown(WAIT), node.shutdown(WAIT));
    assert_eq!(r1.stopped, ["b", "a"]);
    assert_eq!(r2.stopped, r1.stopped);
    assert_eq!(r2.elapsed, r1.elapsed, "the second joined the first");
    assert!(r1.clean(), "{r1:?}");
    // b2 was brutally killed (no terminate), the module's tree went before b1, then a.
    assert_eq!(
        log.terminated(),
        [
            "bm2 shutdown",
            "bm1 shutdown",
            "b1 shutdown",
            "a2 shutdown",
            "a1 shutdown"
        ]
    );
    assert_eq!(node.process_count(), 0, "{:?}", node.processes());
    assert!(node.applications().is_empty());
    assert_eq!(
        node.start_application(app(&me, "c", &[])).await,
        Err(AppError::Stopping("c".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_shutdown_time_limit_abandons_the_graceful_phase() {
    let node = node().await;
    let me = node.external();
    let log = Log::new("app-limit");
    node.start_application(log.app(&me, "quick", &["q1"]))
        .await
        .unwrap();
    let hang = Config {
        terminate_hang: true,
        ..log.worker(&me, "h1")
    };
    let spec = Spec::new(Strategy::OneForOne).child(
        ChildSpec::server("h1", "app_worker", &hang)
            .name("hanger")
            .shutdown(Shutdown::Infinity),
    );
    node.start_application(Application::new("slow", "1", Source::Spec(spec)).depends(["quick"]))
        .await
        .unwrap();
    started(&me, 2).await;
    let hanger = node.whereis("hanger").expect("registered");
    let limit = Duration::from_millis(300);
    let r = node.shutdown(limit).await;
    let what = r
        .abandoned
        .clone()
        .expect("the graceful phase is abandoned");
    assert!(what.contains("application \"slow\""), "{what}");
    assert!(
        what.contains(&format!(
            "is waiting for {hanger} \"hanger\" (gen_server app_worker 1)"
        )),
        "{what}"
    );
    assert!(r.stopped.is_empty(), "{r:?}");
    assert!(!r.clean());
    assert!(r.elapsed >= limit, "{r:?}");
    assert!(r.elapsed < limit + WAIT, "{r:?}");
    // Its terminate started; quick's never ran (killed, not shut down).
    assert_eq!(log.terminated(), ["h1 shutdown"]);
    assert_eq!(node.process_count(), 0);
}

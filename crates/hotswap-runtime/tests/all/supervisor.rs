//! Supervisors (spec §4): strategies, restart types, restart intensity, the client API and
//! its errors, trees from a module callback, nested supervisors. The children are
//! `sup_worker` gen_servers (`modules/common/sup_worker.rs`) that log `init`/`terminate`
//! lines to a file (the order of starts and stops) and tell the test when they start (their
//! pids); the test learns about exits from monitors, never by sleeping.

use std::path::PathBuf;
use std::time::Duration;

use hotswap_runtime::supervisor::{
    ChildPid, ChildSpec, ChildType, Counts, Restart, Spec, Strategy, SupError,
};
use hotswap_runtime::{ExitReason, ExternalProcess, Node, Pid, Ref};

use crate::sup_types::{Call, Config, Event, TreeArg, TreeChild, WORKER};
use crate::support::{module, TempDir, QUIET, WAIT};

/// A node with `sup_worker` (and `sup_tree`) loaded, a host process that gets the workers'
/// events, and a log file for them.
pub struct Env {
    /// The node.
    pub node: Node,
    /// The test's process: workers tell it when they start and terminate.
    pub me: ExternalProcess,
    /// The workers' log file.
    pub log: PathBuf,
    _dir: TempDir,
}

impl Env {
    /// A fresh node with the fixtures loaded.
    pub async fn new(tag: &str) -> Env {
        let node = crate::support::node();
        node.code().load(module("sup_worker")).await.unwrap();
        node.code().load(module("sup_tree")).await.unwrap();
        let me = node.external();
        let dir = TempDir::new(tag);
        let log = dir.0.join("log");
        Env {
            node,
            me,
            log,
            _dir: dir,
        }
    }

    /// A worker `id` that traps exits, logs here and tells this test's process.
    pub fn cfg(&self, id: &str) -> Config {
        Config::new(id, self.log.to_str().unwrap(), self.me.pid())
    }

    /// A child spec for the worker `id` (trapping exits).
    pub fn child(&self, id: &str) -> ChildSpec {
        self.cfg(id).spec()
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        match std::fs::read_to_string(&self.log) {
            Ok(s) => s.lines().map(str::to_string).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The log lines after the first `n`.
    pub fn log_after(&self, n: usize) -> Vec<String> {
        self.log().into_iter().skip(n).collect()
    }

    /// The `init` and `terminate` lines after the first `n` (not `terminate_done`).
    pub fn starts_stops_after(&self, n: usize) -> Vec<String> {
        self.log_after(n)
            .into_iter()
            .filter(|l| l.starts_with("init ") || l.starts_with("terminate "))
            .collect()
    }

    /// Wait for the worker `id` to start; its pid.
    pub async fn started(&self, id: &str) -> Pid {
        let m = self
            .me
            .recv_match(
                WAIT,
                |m| matches!(m.decode::<Event>(), Ok(Event::Started { id: i, .. }) if i == id),
            )
            .await
            .unwrap_or_else(|| panic!("worker {id} did not start"));
        match m.decode::<Event>().unwrap() {
            Event::Started { pid, .. } => pid,
            e => unreachable!("{e:?}"),
        }
    }

    /// Whether a start of `id` is already in the mailbox (taken if so). A worker sends
    /// `Started` from its `init`, before its starter (the supervisor) goes on, so once a
    /// supervisor has answered a later request, any start it made is here.
    pub async fn started_now(&self, id: &str) -> bool {
        self.me
            .recv_match(
                Duration::ZERO,
                |m| matches!(m.decode::<Event>(), Ok(Event::Started { id: i, .. }) if i == id),
            )
            .await
            .is_some()
    }

    /// Whether any `Terminating` event of `pid` is already in the mailbox (taken if so).
    /// A worker sends it before it exits, so once its `Down` is here, so is this.
    pub async fn terminating_now(&self, pid: Pid) -> Option<String> {
        let m = self
            .me
            .recv_match(Duration::ZERO, |m| {
                matches!(m.decode::<Event>(), Ok(Event::Terminating { pid: p, .. }) if p == pid)
            })
            .await?;
        match m.decode::<Event>().unwrap() {
            Event::Terminating { reason, .. } => Some(reason),
            e => unreachable!("{e:?}"),
        }
    }

    /// Monitor a process.
    pub fn monitor(&self, pid: Pid) -> Ref {
        self.me.monitor(pid)
    }

    /// Wait for a monitor's `Down`; the exit reason.
    pub async fn down(&self, r: Ref) -> ExitReason {
        self.me
            .down(r, WAIT)
            .await
            .unwrap_or_else(|| panic!("no Down for {r:?} within {WAIT:?}"))
    }

    /// Start a supervisor of `spec`.
    pub async fn start(&self, spec: Spec) -> Pid {
        self.start_as(spec, None).await
    }

    /// Start a supervisor of `spec`, registered as `name`. Fails the test if the start has
    /// not returned within [`WAIT`] (a child that never finishes starting, or a
    /// supervisor that is not told its child supervisor has started).
    pub async fn start_as(&self, spec: Spec, name: Option<&str>) -> Pid {
        let nested = spec
            .children
            .iter()
            .any(|c| c.child_type == ChildType::Supervisor);
        tokio::time::timeout(WAIT, self.node.start_supervisor(spec, name))
            .await
            .unwrap_or_else(|_| {
                panic!("start_supervisor did not return within {WAIT:?} (supervisor children: {nested})")
            })
            .unwrap()
    }

    /// Stop a supervisor as its parent would (exit signal `shutdown`); its exit reason.
    pub async fn stop(&self, sup: Pid) -> ExitReason {
        let r = self.monitor(sup);
        self.node.exit(sup, ExitReason::Shutdown);
        self.down(r).await
    }

    /// `which_children` as (id, pid) pairs.
    pub async fn children(&self, sup: Pid) -> Vec<(Option<String>, ChildPid)> {
        self.node
            .supervisor()
            .which_children(sup)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.pid))
            .collect()
    }

    /// The running pid of the static child `id`.
    pub async fn pid_of(&self, sup: Pid, id: &str) -> Pid {
        match self
            .children(sup)
            .await
            .into_iter()
            .find(|c| c.0.as_deref() == Some(id))
        {
            Some((_, ChildPid::Running(p))) => p,
            other => panic!("child {id} is not running: {other:?}"),
        }
    }

    /// Make the worker `pid` panic; wait until it is gone. Its exit reason.
    pub async fn crash(&self, pid: Pid) -> ExitReason {
        let r = self.monitor(pid);
        self.node.cast(pid, &Call::Crash);
        self.down(r).await
    }
}

/// Run a test body, failing it if it has not finished within a minute: supervisor
/// requests wait as long as the supervisor takes (OTP's `infinity`), so a stuck
/// supervisor would otherwise hang the test run instead of failing it.
pub async fn within<F: std::future::Future>(body: F) -> F::Output {
    const LIMIT: Duration = Duration::from_secs(60);
    tokio::time::timeout(LIMIT, body).await.unwrap_or_else(|_| {
        panic!("the test did not finish within {LIMIT:?}: a supervisor or child is stuck")
    })
}

/// `(id, Running(pid))` for a which_children comparison.
pub fn running(id: &str, pid: Pid) -> (Option<String>, ChildPid) {
    (Some(id.to_string()), ChildPid::Running(pid))
}

/// A `terminate` line.
pub fn term(id: &str, reason: &str) -> String {
    format!("terminate {id} {reason}")
}

/// An `init` line.
pub fn init(id: &str) -> String {
    format!("init {id}")
}

/// Whether `reason` is a `sup_worker` crash.
fn is_crash(reason: &ExitReason) -> bool {
    matches!(reason, ExitReason::Panic(m) if m.contains("crashed on request"))
}

/// Start a supervisor with workers `ids` (trapping, default shutdown).
async fn sup_of(env: &Env, strategy: Strategy, ids: &[&str]) -> (Pid, Vec<Pid>) {
    let mut spec = Spec::new(strategy)
        .intensity(10)
        .period(Duration::from_secs(60));
    for id in ids {
        spec = spec.child(env.child(id));
    }
    let sup = env.start(spec).await;
    let mut pids = Vec::new();
    for id in ids {
        pids.push(env.started(id).await);
    }
    (sup, pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_one_for_one_restarts_only_failed() {
    within(async {
        let env = Env::new("one_for_one").await;
        let (sup, p) = sup_of(&env, Strategy::OneForOne, &["a", "b", "c"]).await;
        assert_eq!(
            env.log(),
            vec![init("a"), init("b"), init("c")],
            "start order"
        );
        assert_eq!(
            env.children(sup).await,
            vec![running("c", p[2]), running("b", p[1]), running("a", p[0])]
        );
        let mark = env.log().len();
        let reason = env.crash(p[1]).await;
        assert!(is_crash(&reason), "{reason}");
        let b2 = env.started("b").await;
        assert_ne!(b2, p[1], "b got a new process");
        assert_eq!(
            env.children(sup).await,
            vec![running("c", p[2]), running("b", b2), running("a", p[0])],
            "only b was restarted; its place in the order is kept"
        );
        let after = env.starts_stops_after(mark);
        assert_eq!(after.len(), 2, "{after:?}");
        assert!(after[0].starts_with("terminate b {panic"), "{after:?}");
        assert_eq!(after[1], init("b"));
        assert!(env.node.is_alive(p[0]) && env.node.is_alive(p[2]));
        assert!(!env.started_now("a").await && !env.started_now("c").await);

        // The exit of a linked process that is not a child is ignored.
        let stranger = env
            .node
            .spawn_native(move |ctx| async move {
                let _ = ctx.receive::<String>().await;
                ctx.link(sup);
                Err::<(), _>(ExitReason::User("stranger died".into()))
            })
            .unwrap();
        let r = env.monitor(stranger);
        env.me.send(stranger, &"go".to_string());
        assert_eq!(env.down(r).await, ExitReason::User("stranger died".into()));
        assert!(env.node.is_alive(sup));
        assert_eq!(
            env.children(sup).await,
            vec![running("c", p[2]), running("b", b2), running("a", p[0])]
        );
        assert!(!env.started_now("a").await && !env.started_now("b").await);
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_one_for_all_restarts_all() {
    within(async {
        let env = Env::new("one_for_all").await;
        let spec = Spec::new(Strategy::OneForAll)
            .intensity(10)
            .period(Duration::from_secs(60))
            .child(env.child("a"))
            .child(env.child("b"))
            .child(env.child("c"))
            .child(env.child("t").restart(Restart::Temporary));
        let sup = env.start(spec).await;
        let mut p = Vec::new();
        for id in ["a", "b", "c", "t"] {
            p.push(env.started(id).await);
        }
        let monitors: Vec<Ref> = p.iter().map(|&x| env.monitor(x)).collect();
        let mark = env.log().len();
        let reason = env.crash(p[1]).await;
        assert!(is_crash(&reason), "{reason}");
        let a2 = env.started("a").await;
        let b2 = env.started("b").await;
        let c2 = env.started("c").await;
        for (i, r) in monitors.iter().enumerate() {
            let why = env.down(*r).await;
            if i != 1 {
                assert_eq!(why, ExitReason::Shutdown, "sibling {i} was shut down");
            }
        }
        for (old, new) in [(p[0], a2), (p[1], b2), (p[2], c2)] {
            assert_ne!(old, new);
        }
        let after = env.starts_stops_after(mark);
        assert!(after[0].starts_with("terminate b {panic"), "{after:?}");
        assert_eq!(
            after[1..],
            [
                term("t", "shutdown"),
                term("c", "shutdown"),
                term("a", "shutdown"),
                init("a"),
                init("b"),
                init("c"),
            ],
            "the others stop in reverse start order, then all start in start order"
        );
        assert!(
            !env.started_now("t").await,
            "a temporary child is not restarted"
        );
        assert_eq!(
            env.children(sup).await,
            vec![running("c", c2), running("b", b2), running("a", a2)],
            "the temporary child's spec was dropped"
        );
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_rest_for_one_restarts_later_siblings() {
    within(async {
        let env = Env::new("rest_for_one").await;
        let (sup, p) = sup_of(&env, Strategy::RestForOne, &["a", "b", "c", "d"]).await;
        let (mc, md) = (env.monitor(p[2]), env.monitor(p[3]));
        let mark = env.log().len();
        let reason = env.crash(p[1]).await;
        assert!(is_crash(&reason), "{reason}");
        let b2 = env.started("b").await;
        let c2 = env.started("c").await;
        let d2 = env.started("d").await;
        assert_eq!(env.down(mc).await, ExitReason::Shutdown);
        assert_eq!(env.down(md).await, ExitReason::Shutdown);
        let after = env.starts_stops_after(mark);
        assert!(after[0].starts_with("terminate b {panic"), "{after:?}");
        assert_eq!(
            after[1..],
            [
                term("d", "shutdown"),
                term("c", "shutdown"),
                init("b"),
                init("c"),
                init("d"),
            ]
        );
        assert_eq!(
            env.children(sup).await,
            vec![
                running("d", d2),
                running("c", c2),
                running("b", b2),
                running("a", p[0]),
            ],
            "a, started before b, keeps its process"
        );
        assert!(!env.started_now("a").await);

        // The last child crashing restarts only itself.
        let mark = env.log().len();
        env.crash(d2).await;
        let d3 = env.started("d").await;
        let after = env.starts_stops_after(mark);
        assert_eq!(after.len(), 2, "{after:?}");
        assert_eq!(
            env.children(sup).await,
            vec![
                running("d", d3),
                running("c", c2),
                running("b", b2),
                running("a", p[0]),
            ]
        );
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_intensity_exceeded_shuts_down() {
    within(async {
        let env = Env::new("intensity").await;
        let spec = Spec::new(Strategy::OneForOne)
            .intensity(2)
            .period(Duration::from_secs(60))
            .child(env.child("a"))
            .child(env.child("b"))
            .child(env.child("c"));
        let sup = env.start(spec).await;
        let mut a = env.started("a").await;
        let b = env.started("b").await;
        let c = env.started("c").await;
        let msup = env.monitor(sup);
        let (mb, mc) = (env.monitor(b), env.monitor(c));
        // Two crashes are within the intensity: a is restarted each time.
        for _ in 0..2 {
            env.crash(a).await;
            a = env.started("a").await;
            assert!(env.node.is_alive(sup));
        }
        // The third within the period is one too many.
        let mark = env.log().len();
        env.crash(a).await;
        assert_eq!(
            env.down(msup).await,
            ExitReason::Shutdown,
            "the supervisor gives up"
        );
        assert_eq!(env.down(mc).await, ExitReason::Shutdown);
        assert_eq!(env.down(mb).await, ExitReason::Shutdown);
        let after = env.starts_stops_after(mark);
        assert!(after[0].starts_with("terminate a {panic"), "{after:?}");
        assert_eq!(
            after[1..],
            [term("c", "shutdown"), term("b", "shutdown")],
            "the others stop in reverse start order; a is not started again"
        );
        assert!(!env.started_now("a").await);
        for p in [a, b, c, sup] {
            assert!(!env.node.is_alive(p));
        }

        // intensity 0: the first crash brings the supervisor down.
        let spec = Spec::new(Strategy::OneForOne)
            .intensity(0)
            .child(env.child("z"));
        let sup = env.start(spec).await;
        let z = env.started("z").await;
        let msup = env.monitor(sup);
        env.crash(z).await;
        assert_eq!(env.down(msup).await, ExitReason::Shutdown);
        assert!(!env.started_now("z").await);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_transient_normal_exit_not_restarted() {
    within(async {
        let env = Env::new("transient").await;
        let spec = Spec::new(Strategy::OneForOne)
            .intensity(10)
            .period(Duration::from_secs(60))
            .child(env.child("p"))
            .child(env.child("t").restart(Restart::Transient))
            .child(env.child("x").restart(Restart::Temporary));
        let sup = env.start(spec).await;
        let p = env.started("p").await;
        let mut t = env.started("t").await;
        let x = env.started("x").await;
        let sv = env.node.supervisor();

        // Transient: normal and shutdown exits are not restarted; the spec is kept.
        for stop in [Call::StopNormal, Call::StopShutdown] {
            let r = env.monitor(t);
            let _: Result<crate::sup_types::Reply, _> = env.node.call(t, &stop, WAIT).await;
            let why = env.down(r).await;
            // The supervisor takes the child's exit before this later request.
            let kids = env.children(sup).await;
            assert_eq!(
                kids[1],
                (Some("t".into()), ChildPid::Undefined),
                "{stop:?} ({why}): not restarted, spec kept: {kids:?}"
            );
            assert!(!env.started_now("t").await);
            // restart_child starts it again.
            let t2 = sv.restart_child(sup, "t").await.unwrap().unwrap();
            assert_eq!(env.started("t").await, t2);
            t = t2;
        }
        // An abnormal exit is restarted.
        assert!(is_crash(&env.crash(t).await));
        let t3 = env.started("t").await;
        assert_eq!(env.pid_of(sup, "t").await, t3);
        // A kill too (`killed` is abnormal).
        let r = env.monitor(t3);
        env.node.exit(t3, ExitReason::Kill);
        assert_eq!(env.down(r).await, ExitReason::Killed);
        let t4 = env.started("t").await;
        assert_eq!(env.pid_of(sup, "t").await, t4);

        // Temporary: never restarted, and its spec goes, even after a crash.
        let r = env.monitor(x);
        let _: Result<crate::sup_types::Reply, _> = env.node.call(x, &Call::StopNormal, WAIT).await;
        assert_eq!(env.down(r).await, ExitReason::Normal);
        assert_eq!(
            sv.get_childspec(sup, "x").await,
            Err(SupError::NotFound),
            "the temporary child's spec was removed"
        );
        assert_eq!(sv.restart_child(sup, "x").await, Err(SupError::NotFound));
        assert!(!env.started_now("x").await);
        let y = sv
            .start_child(sup, env.child("y").restart(Restart::Temporary))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.started("y").await, y);
        assert!(is_crash(&env.crash(y).await));
        assert_eq!(
            env.children(sup).await,
            vec![running("t", t4), running("p", p)],
            "a crashed temporary child is not restarted and its spec goes"
        );
        assert!(!env.started_now("y").await);
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_api_errors_static() {
    within(async {
        let env = Env::new("api_static").await;
        let (sup, p) = sup_of(&env, Strategy::OneForOne, &["a", "b"]).await;
        let sv = env.node.supervisor();

        // start_child with an id in use: already_started (running) / already_present (stopped).
        assert_eq!(
            sv.start_child(sup, env.child("a")).await,
            Err(SupError::AlreadyStarted(p[0]))
        );
        assert!(!env.started_now("a").await, "nothing was started");
        assert_eq!(sv.restart_child(sup, "a").await, Err(SupError::Running));
        assert_eq!(sv.delete_child(sup, "a").await, Err(SupError::Running));
        let r = env.monitor(p[0]);
        assert_eq!(sv.terminate_child(sup, "a").await, Ok(()));
        assert_eq!(env.down(r).await, ExitReason::Shutdown);
        assert!(
            !env.node.is_alive(p[0]),
            "terminate_child returns once it is gone"
        );
        assert_eq!(
            sv.start_child(sup, env.child("a")).await,
            Err(SupError::AlreadyPresent)
        );
        assert_eq!(
            sv.terminate_child(sup, "a").await,
            Ok(()),
            "terminating a stopped child is fine"
        );
        let a2 = sv.restart_child(sup, "a").await.unwrap().unwrap();
        assert_eq!(env.started("a").await, a2);
        // By pid too.
        assert_eq!(sv.terminate_child(sup, a2).await, Ok(()));
        assert!(!env.node.is_alive(a2));
        assert_eq!(sv.delete_child(sup, "a").await, Ok(()));
        assert_eq!(sv.delete_child(sup, "a").await, Err(SupError::NotFound));
        assert_eq!(sv.restart_child(sup, "a").await, Err(SupError::NotFound));
        assert_eq!(sv.terminate_child(sup, "a").await, Err(SupError::NotFound));
        assert_eq!(sv.get_childspec(sup, "a").await, Err(SupError::NotFound));
        assert_eq!(
            sv.terminate_child(sup, env.me.pid()).await,
            Err(SupError::NotFound),
            "a pid that is not a child"
        );
        assert_eq!(sv.get_childspec(sup, "b").await, Ok(env.child("b")));
        assert_eq!(sv.get_childspec(sup, p[1]).await, Ok(env.child("b")));

        // A child whose start fails: the error says why; nothing is kept.
        let r = sv.start_child(sup, env.cfg("f").fail_init().spec()).await;
        match &r {
            Err(SupError::StartFailed(m)) => assert!(m.contains("init failed f"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(sv.get_childspec(sup, "f").await, Err(SupError::NotFound));
        // A child whose init returns ignore: Ok(None), the spec is kept, not running.
        assert_eq!(
            sv.start_child(sup, env.cfg("i").ignore_init().spec()).await,
            Ok(None)
        );
        assert_eq!(
            env.children(sup).await[0],
            (Some("i".into()), ChildPid::Undefined)
        );
        // terminate_child removes a temporary child's spec.
        let tmp = sv
            .start_child(sup, env.child("tmp").restart(Restart::Temporary))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.started("tmp").await, tmp);
        assert_eq!(sv.terminate_child(sup, "tmp").await, Ok(()));
        assert!(!env.node.is_alive(tmp));
        assert_eq!(sv.get_childspec(sup, "tmp").await, Err(SupError::NotFound));
        // A temporary child whose init returns ignore is not kept.
        assert_eq!(
            sv.start_child(
                sup,
                env.cfg("ti")
                    .ignore_init()
                    .spec()
                    .restart(Restart::Temporary)
            )
            .await,
            Ok(None)
        );
        assert_eq!(sv.get_childspec(sup, "ti").await, Err(SupError::NotFound));
        // An invalid spec is refused with why.
        match sv.start_child(sup, env.child("")).await {
            Err(SupError::Invalid(m)) => assert!(m.contains("empty id"), "{m}"),
            other => panic!("{other:?}"),
        }
        match sv.start_simple_child(sup, &(env.cfg("s"),)).await {
            Err(SupError::Invalid(m)) => assert!(m.contains("simple_one_for_one"), "{m}"),
            other => panic!("{other:?}"),
        }
        // No such supervisor.
        let r = sv.which_children("no_such_sup").await;
        assert!(matches!(r, Err(SupError::Call(_))), "{r:?}");
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
        let r = sv.count_children(sup).await;
        assert!(matches!(r, Err(SupError::Call(_))), "{r:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_api_errors_simple_one_for_one() {
    within(async {
        let env = Env::new("api_simple").await;
        let template = ChildSpec::server("w", WORKER, &()).restart(Restart::Temporary);
        let sup = env
            .start(Spec::new(Strategy::SimpleOneForOne).child(template.clone()))
            .await;
        let sv = env.node.supervisor();
        assert!(!env.started_now("w1").await, "no child starts at init");
        let w1 = sv
            .start_simple_child(sup, &(env.cfg("w1"),))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.started("w1").await, w1);
        let w2 = sv
            .start_simple_child(sup, &(env.cfg("w2"),))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.started("w2").await, w2);
        assert_eq!(
            sv.start_simple_child(sup, &(env.cfg("w3").ignore_init(),))
                .await,
            Ok(None),
            "ignore: nothing stored"
        );

        assert_eq!(
            sv.terminate_child(sup, "w").await,
            Err(SupError::SimpleOneForOne)
        );
        assert_eq!(
            sv.restart_child(sup, "w").await,
            Err(SupError::SimpleOneForOne)
        );
        assert_eq!(
            sv.delete_child(sup, "w").await,
            Err(SupError::SimpleOneForOne)
        );
        assert_eq!(
            sv.terminate_child(sup, env.me.pid()).await,
            Err(SupError::NotFound),
            "a live pid that is not a child"
        );
        assert_eq!(
            sv.terminate_child(sup, Pid(999_999_999)).await,
            Ok(()),
            "a dead pid"
        );
        match sv.start_child(sup, env.child("x")).await {
            Err(SupError::Invalid(_)) => {}
            other => panic!("{other:?}"),
        }
        match sv.start_simple_child(sup, &7u32).await {
            Err(SupError::Invalid(m)) => assert!(m.contains("not a tuple"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(sv.get_childspec(sup, w1).await, Ok(template.clone()));
        assert_eq!(
            env.children(sup).await,
            vec![(None, ChildPid::Running(w2)), (None, ChildPid::Running(w1))],
            "latest first, no ids"
        );
        assert_eq!(
            sv.count_children(sup).await,
            Ok(Counts {
                specs: 1,
                active: 2,
                supervisors: 0,
                workers: 2
            })
        );
        let r = env.monitor(w1);
        assert_eq!(sv.terminate_child(sup, w1).await, Ok(()));
        assert_eq!(env.down(r).await, ExitReason::Shutdown);
        assert_eq!(env.children(sup).await, vec![(None, ChildPid::Running(w2))]);
        assert_eq!(sv.terminate_child(sup, w1).await, Ok(()), "now dead");
        // gen_server:stop (sys terminate) stops a supervisor and its children too.
        let r = env.monitor(w2);
        env.node
            .stop_server(sup, ExitReason::Shutdown, WAIT)
            .await
            .unwrap();
        assert_eq!(env.down(r).await, ExitReason::Shutdown);
        assert_eq!(env.terminating_now(w2).await.as_deref(), Some("shutdown"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_invalid_spec_refused() {
    within(async {
        let env = Env::new("invalid").await;
        let before = env.node.processes();
        let spec = Spec::new(Strategy::OneForOne)
            .child(env.child("a"))
            .child(env.child("b"))
            .child(env.child("a"));
        match env.node.start_supervisor(spec, Some("bad_sup")).await {
            Err(SupError::Invalid(m)) => {
                assert!(
                    m.contains("duplicate_child_name") && m.contains("\"a\""),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Nothing runs: no child started, and every process the attempt made is gone.
        assert!(!env.started_now("a").await && !env.started_now("b").await);
        assert!(env.log().is_empty(), "{:?}", env.log());
        for pid in env.node.processes() {
            if !before.contains(&pid) {
                let r = env.monitor(pid);
                env.down(r).await;
            }
        }
        assert_eq!(env.node.whereis("bad_sup"), None);

        let two_templates = Spec::new(Strategy::SimpleOneForOne)
            .child(ChildSpec::server("w", WORKER, &()))
            .child(ChildSpec::server("v", WORKER, &()));
        match env.node.start_supervisor(two_templates, None).await {
            Err(SupError::Invalid(m)) => assert!(m.contains("exactly one"), "{m}"),
            other => panic!("{other:?}"),
        }
        let nested_bad = Spec::new(Strategy::OneForOne).child(ChildSpec::supervisor(
            "inner",
            Spec::new(Strategy::OneForOne)
                .child(env.child("x"))
                .child(env.child("x")),
        ));
        match env.node.start_supervisor(nested_bad, None).await {
            Err(SupError::Invalid(m)) => assert!(m.contains("duplicate_child_name"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!env.started_now("x").await);

        // A name in use.
        let sup = env
            .node
            .start_supervisor(Spec::new(Strategy::OneForOne), Some("taken"))
            .await
            .unwrap();
        assert_eq!(
            env.node
                .start_supervisor(Spec::new(Strategy::OneForOne), Some("taken"))
                .await,
            Err(SupError::AlreadyStarted(sup))
        );
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_count_and_which_children() {
    within(async {
        let env = Env::new("count").await;
        let inner = Spec::new(Strategy::OneForOne).child(env.child("x"));
        let spec = Spec::new(Strategy::OneForOne)
            .child(env.child("a"))
            .child(ChildSpec::supervisor("inner", inner))
            .child(env.cfg("ign").ignore_init().spec())
            .child(env.child("b").name("named_b"));
        let sup = env.start_as(spec, Some("top")).await;
        let a = env.started("a").await;
        let x = env.started("x").await;
        let b = env.started("b").await;
        assert_eq!(env.node.whereis("named_b"), Some(b));
        assert_eq!(env.node.whereis("top"), Some(sup));
        let sv = env.node.supervisor();
        let kids = sv.which_children("top").await.unwrap();
        let inner_pid = match kids[2].pid {
            ChildPid::Running(p) => p,
            ref o => panic!("{o:?}"),
        };
        assert_eq!(
            kids.iter()
                .map(|c| (c.id.clone().unwrap(), c.child_type, c.modules.clone()))
                .collect::<Vec<_>>(),
            vec![
                ("b".to_string(), ChildType::Worker, vec![WORKER.to_string()]),
                ("ign".into(), ChildType::Worker, vec![WORKER.into()]),
                ("inner".into(), ChildType::Supervisor, vec![]),
                ("a".into(), ChildType::Worker, vec![WORKER.into()]),
            ],
            "latest started first"
        );
        assert_eq!(kids[0].pid, ChildPid::Running(b));
        assert_eq!(kids[1].pid, ChildPid::Undefined, "ignore keeps the spec");
        assert_eq!(kids[3].pid, ChildPid::Running(a));
        assert_eq!(env.children(inner_pid).await, vec![running("x", x)]);
        assert_eq!(
            sv.count_children("top").await,
            Ok(Counts {
                specs: 4,
                active: 3,
                supervisors: 1,
                workers: 3
            })
        );
        // A child added later is last in start order: first in which_children.
        let c = sv
            .start_child("top", env.child("c"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(env.started("c").await, c);
        assert_eq!(env.children(sup).await[0], running("c", c));
        sv.terminate_child("top", "a").await.unwrap();
        assert_eq!(
            sv.count_children("top").await,
            Ok(Counts {
                specs: 5,
                active: 3,
                supervisors: 1,
                workers: 4
            }),
            "active counts live children only"
        );
        // Stopping the tree stops the added child first.
        let mark = env.log().len();
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
        assert_eq!(
            env.starts_stops_after(mark),
            [
                term("c", "shutdown"),
                term("b", "shutdown"),
                term("x", "shutdown")
            ]
        );
        assert_eq!(env.node.whereis("top"), None);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_child_start_failure_fails_start() {
    within(async {
        let env = Env::new("start_failure").await;
        let spec = Spec::new(Strategy::OneForOne)
            .child(env.child("a"))
            .child(env.child("b"))
            .child(env.cfg("c").fail_init().spec())
            .child(env.child("d"));
        let r = env.node.start_supervisor(spec, Some("failing")).await;
        let a = env.started("a").await;
        let b = env.started("b").await;
        match &r {
            Err(SupError::StartFailed(m)) => assert!(
                m.contains("failed_to_start_child")
                    && m.contains("\"c\"")
                    && m.contains("init failed c"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        // The children already started were stopped, in reverse order, before the start
        // returned; d never started.
        assert!(!env.node.is_alive(a) && !env.node.is_alive(b));
        assert_eq!(
            env.starts_stops_after(0),
            [
                init("a"),
                init("b"),
                term("b", "shutdown"),
                term("a", "shutdown")
            ]
        );
        assert!(!env.started_now("d").await);
        assert_eq!(env.node.whereis("failing"), None);

        // The same through a nested supervisor: the outer start fails too, naming the inner.
        let mark = env.log().len();
        let inner = Spec::new(Strategy::OneForOne)
            .child(env.child("x"))
            .child(env.cfg("y").fail_init().spec());
        let spec = Spec::new(Strategy::OneForOne)
            .child(env.child("a"))
            .child(ChildSpec::supervisor("inner", inner));
        match env.node.start_supervisor(spec, None).await {
            Err(SupError::StartFailed(m)) => assert!(m.contains("\"inner\""), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            env.starts_stops_after(mark),
            [
                init("a"),
                init("x"),
                term("x", "shutdown"),
                term("a", "shutdown")
            ]
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_spec_from_module_callback() {
    within(async {
        let env = Env::new("module").await;
        let child = |id: &str, restart| TreeChild {
            config: env.cfg(id),
            restart,
            shutdown: None,
        };
        let arg = TreeArg {
            ignore: false,
            strategy: Strategy::RestForOne,
            intensity: 3,
            period_secs: 10,
            children: vec![
                child("m1", Restart::Permanent),
                child("m2", Restart::Transient),
            ],
            subtrees: Vec::new(),
            same_in_v2: false,
        };
        let sup = env
            .node
            .start_supervisor_module("sup_tree", &arg, Some("tree"))
            .await
            .unwrap()
            .expect("init returned a tree");
        let m1 = env.started("m1").await;
        let m2 = env.started("m2").await;
        assert_eq!(env.node.whereis("tree"), Some(sup));
        assert_eq!(
            env.children(sup).await,
            vec![running("m2", m2), running("m1", m1)]
        );
        let sv = env.node.supervisor();
        assert_eq!(
            sv.get_childspec(sup, "m2").await.map(|s| s.restart),
            Ok(Restart::Transient)
        );
        // Its strategy is the one the callback chose: rest_for_one.
        env.crash(m1).await;
        let m1b = env.started("m1").await;
        let m2b = env.started("m2").await;
        assert_ne!(m1, m1b);
        assert_ne!(
            m2, m2b,
            "rest_for_one: m2, started after m1, was restarted too"
        );

        // init returning ignore: no supervisor.
        let before = env.node.processes();
        let ignored = TreeArg {
            ignore: true,
            ..arg.clone()
        };
        assert_eq!(
            env.node
                .start_supervisor_module("sup_tree", &ignored, Some("ignored"))
                .await,
            Ok(None)
        );
        assert_eq!(env.node.whereis("ignored"), None);
        for pid in env.node.processes() {
            if !before.contains(&pid) {
                let r = env.monitor(pid);
                env.down(r).await;
            }
        }
        // Not a supervisor module: refused with why.
        match env
            .node
            .start_supervisor_module("sup_worker", &arg, None)
            .await
        {
            Err(e) => assert!(e.to_string().contains("supervisor_init"), "{e}"),
            Ok(p) => panic!("{p:?}"),
        }

        // As children of another supervisor: one tree, one ignore (kept, not running).
        let inner = TreeArg {
            strategy: Strategy::OneForOne,
            children: vec![child("k", Restart::Permanent)],
            ..arg.clone()
        };
        let spec = Spec::new(Strategy::OneForOne)
            .child(ChildSpec::supervisor_module("inner", "sup_tree", &inner))
            .child(ChildSpec::supervisor_module("none", "sup_tree", &ignored));
        let top = env.start(spec).await;
        let k = env.started("k").await;
        let kids = env.children(top).await;
        assert_eq!(kids[0], (Some("none".into()), ChildPid::Undefined));
        let ChildPid::Running(inner_pid) = kids[1].1 else {
            panic!("{kids:?}")
        };
        assert_eq!(env.children(inner_pid).await, vec![running("k", k)]);
        let info = sv.which_children(top).await.unwrap();
        assert_eq!(info[1].child_type, ChildType::Supervisor);
        assert_eq!(info[1].modules, vec!["sup_tree".to_string()]);
        assert_eq!(env.stop(top).await, ExitReason::Shutdown);
        assert!(!env.node.is_alive(k));
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_nested_shutdown_order() {
    within(async {
        let env = Env::new("nested").await;
        // Slow terminates: each child is stopped completely before the next one.
        let slow = |id: &str| env.cfg(id).terminate_ms(20).spec();
        let inner = Spec::new(Strategy::OneForOne)
            .child(slow("x"))
            .child(slow("y"));
        let spec = Spec::new(Strategy::OneForOne)
            .child(slow("a"))
            .child(ChildSpec::supervisor("inner", inner))
            .child(slow("b"));
        let top = env.start(spec).await;
        for id in ["a", "x", "y", "b"] {
            env.started(id).await;
        }
        assert_eq!(
            env.log(),
            [init("a"), init("x"), init("y"), init("b")],
            "depth-first start order"
        );
        let inner_pid = env.pid_of(top, "inner").await;
        let minner = env.monitor(inner_pid);
        assert_eq!(env.stop(top).await, ExitReason::Shutdown);
        assert_eq!(env.down(minner).await, ExitReason::Shutdown);
        let done = |id: &str| format!("terminate_done {id}");
        assert_eq!(
            env.log_after(4),
            [
                term("b", "shutdown"),
                done("b"),
                term("y", "shutdown"),
                done("y"),
                term("x", "shutdown"),
                done("x"),
                term("a", "shutdown"),
                done("a"),
            ],
            "reverse order, one at a time; the inner supervisor stops its own children before a stops"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_nested_child_gives_up_and_is_restarted() {
    within(async {
        let env = Env::new("nested_restart").await;
        let inner = Spec::new(Strategy::OneForOne)
            .intensity(0)
            .child(env.child("x"))
            .child(env.child("y"));
        let spec = Spec::new(Strategy::OneForOne)
            .intensity(5)
            .period(Duration::from_secs(60))
            .child(env.child("a"))
            .child(ChildSpec::supervisor("inner", inner));
        let top = env.start(spec).await;
        let a = env.started("a").await;
        let x = env.started("x").await;
        env.started("y").await;
        let inner1 = env.pid_of(top, "inner").await;
        let minner = env.monitor(inner1);
        // x crashes; the inner supervisor (intensity 0) gives up with `shutdown`; the top one
        // restarts it (permanent), which starts x and y again.
        env.crash(x).await;
        assert_eq!(env.down(minner).await, ExitReason::Shutdown);
        let x2 = env.started("x").await;
        env.started("y").await;
        assert_ne!(x, x2);
        let inner2 = env.pid_of(top, "inner").await;
        assert_ne!(inner1, inner2);
        assert_eq!(env.pid_of(top, "a").await, a, "a is not touched");
        assert_eq!(env.stop(top).await, ExitReason::Shutdown);
    })
    .await
}

/// A one_for_one supervisor (this intensity in 60 s) of `b` and then `a`, whose `init`
/// fails while the returned file exists: the env, that file, the supervisor, `a`, `b`.
async fn failing_restarts(tag: &str, intensity: u32) -> (Env, PathBuf, Pid, Pid, Pid) {
    let env = Env::new(tag).await;
    let flag = env.log.with_file_name("fail");
    let cfg = env.cfg("a").fail_init_if(flag.to_str().unwrap());
    let spec = Spec::new(Strategy::OneForOne)
        .intensity(intensity)
        .period(Duration::from_secs(60))
        .child(env.child("b"))
        .child(cfg.spec());
    let sup = env.start(spec).await;
    let b = env.started("b").await;
    let a = env.started("a").await;
    (env, flag, sup, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_failed_restart_retries_as_restarting() {
    within(async {
        let (env, flag, sup, a, b) = failing_restarts("restarting", 1_000_000).await;
        let sv = env.node.supervisor();
        std::fs::write(&flag, "").unwrap();
        assert!(is_crash(&env.crash(a).await));
        // Its restart fails; the supervisor marks it restarting and tries again by a
        // message to itself, serving requests in between.
        assert_eq!(
            env.children(sup).await,
            vec![(Some("a".into()), ChildPid::Restarting), running("b", b)]
        );
        assert_eq!(sv.restart_child(sup, "a").await, Err(SupError::Restarting));
        assert_eq!(sv.delete_child(sup, "a").await, Err(SupError::Restarting));
        assert_eq!(sv.count_children(sup).await.map(|c| c.active), Ok(1));
        assert!(env.log().contains(&"init_failed a".to_string()));
        // Once its init can succeed, a retry starts it.
        std::fs::remove_file(&flag).unwrap();
        let a2 = env.started("a").await;
        assert_eq!(env.pid_of(sup, "a").await, a2);
        assert_eq!(env.pid_of(sup, "b").await, b);
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_failed_restarts_count_towards_intensity() {
    within(async {
        let (env, flag, sup, a, b) = failing_restarts("restart_intensity", 3).await;
        let (msup, mb) = (env.monitor(sup), env.monitor(b));
        std::fs::write(&flag, "").unwrap();
        let mark = env.log().len();
        assert!(is_crash(&env.crash(a).await));
        assert_eq!(env.down(msup).await, ExitReason::Shutdown);
        assert_eq!(env.down(mb).await, ExitReason::Shutdown);
        let after = env.log_after(mark);
        assert!(after[0].starts_with("terminate a {panic"), "{after:?}");
        assert_eq!(
            after[1..],
            [
                "terminate_done a".to_string(),
                "init_failed a".to_string(),
                "init_failed a".to_string(),
                "init_failed a".to_string(),
                term("b", "shutdown"),
                "terminate_done b".to_string(),
            ],
            "the crash and each failed attempt count: the 4th restart within the period is one too many"
        );
    })
    .await
}

/// `sys` on a supervisor, as a release upgrade uses it (spec §4.8): a suspended supervisor
/// answers only system requests; `change_code` (only while suspended) calls the new
/// version's `init` with the original argument, takes its flags, adds new ids without
/// starting them and keeps the running children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_sys_suspend_change_code_resume() {
    use hotswap_runtime::supervisor::SupState;
    use hotswap_runtime::SysError;
    within(async {
        let env = Env::new("sys").await;
        let child = |id: &str| TreeChild {
            config: env.cfg(id),
            restart: Restart::Permanent,
            shutdown: None,
        };
        let arg = TreeArg {
            ignore: false,
            strategy: Strategy::OneForOne,
            intensity: 2,
            period_secs: 10,
            children: vec![child("s1"), child("s2")],
            subtrees: Vec::new(),
            same_in_v2: false,
        };
        let sup = env
            .node
            .start_supervisor_module("sup_tree", &arg, None)
            .await
            .unwrap()
            .expect("a tree");
        let (s1, s2) = (env.started("s1").await, env.started("s2").await);
        let sys = env.node.sys();
        let st: SupState = sys.get_state(sup).await.unwrap();
        assert_eq!((st.strategy, st.intensity), (Strategy::OneForOne, 2));
        assert_eq!(st.module.as_deref(), Some("sup_tree"));
        let status = sys.get_status(sup).await.unwrap();
        assert_eq!(
            (status.module.as_str(), status.suspended),
            ("sup_tree", false)
        );

        // change_code needs a suspended supervisor.
        assert!(matches!(
            sys.change_code(sup, "sup_tree", "1", None).await,
            Err(SysError::Refused(m)) if m.contains("suspend")
        ));
        sys.suspend(sup).await.unwrap();
        // While suspended, supervisor requests wait in its mailbox.
        let node = env.node.clone();
        let waiting = tokio::spawn(async move { node.supervisor().count_children(sup).await });
        tokio::time::sleep(QUIET).await;
        assert!(
            !waiting.is_finished(),
            "a suspended supervisor answered a request"
        );
        env.node.code().load(module("sup_tree_v2")).await.unwrap();
        // Another module's name is refused, the right one runs v2's init.
        assert!(matches!(
            sys.change_code(sup, "sup_worker", "1", None).await,
            Err(SysError::Refused(_))
        ));
        sys.change_code(sup, "sup_tree", "1", None).await.unwrap();
        sys.resume(sup).await.unwrap();
        let counts = waiting.await.unwrap().unwrap();
        assert_eq!((counts.specs, counts.active), (3, 2), "{counts:?}");

        // New flags; the new id is known but not started; running children kept.
        let st: SupState = sys.get_state(sup).await.unwrap();
        assert_eq!(st.intensity, 12);
        assert_eq!(
            env.children(sup).await,
            vec![
                (Some("added_in_v2".to_string()), ChildPid::Undefined),
                running("s2", s2),
                running("s1", s1)
            ]
        );
        // Starting it is an explicit request, as in OTP.
        let added = env
            .node
            .supervisor()
            .restart_child(sup, "added_in_v2")
            .await
            .unwrap()
            .expect("a pid");
        assert_eq!(env.started("added_in_v2").await, added);
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
    })
    .await
}

/// A supervisor whose tree was built in Rust has no `init` to call again: its code change
/// is refused with the reason, and it keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_change_code_of_a_rust_tree_is_refused() {
    use hotswap_runtime::SysError;
    within(async {
        let env = Env::new("sys-rust").await;
        let sup = env
            .start(Spec::new(Strategy::OneForOne).child(env.child("r1")))
            .await;
        let r1 = env.started("r1").await;
        let sys = env.node.sys();
        sys.suspend(sup).await.unwrap();
        match sys.change_code(sup, "sup_tree", "1", None).await {
            Err(SysError::Refused(m)) => assert!(m.contains("built in Rust"), "{m}"),
            other => panic!("{other:?}"),
        }
        sys.resume(sup).await.unwrap();
        assert_eq!(env.children(sup).await, vec![running("r1", r1)]);
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
    })
    .await
}

/// Host code that stops waiting for a supervisor (a timeout around the request) leaves no
/// process behind: the helper that made the call is ended with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_request_abandoned_by_host_leaves_no_process() {
    within(async {
        let env = Env::new("abandoned").await;
        let sup = env
            .start(Spec::new(Strategy::OneForOne).child(env.child("x")))
            .await;
        let x = env.started("x").await;
        env.node.sys().suspend(sup).await.unwrap();
        // What must be left: the test's own process, the supervisor and its child (the
        // helper of `suspend` itself may still be on its way out here).
        let mut before = vec![env.me.pid(), sup, x];
        before.sort();
        let r = tokio::time::timeout(QUIET, env.node.supervisor().which_children(sup)).await;
        assert!(r.is_err(), "a suspended supervisor answered: {r:?}");
        let deadline = std::time::Instant::now() + WAIT;
        while env.node.processes() != before {
            assert!(
                std::time::Instant::now() < deadline,
                "the helper is still there: {:?} (before: {before:?})",
                env.node.processes()
            );
            tokio::task::yield_now().await;
        }
        env.node.sys().resume(sup).await.unwrap();
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
    })
    .await
}

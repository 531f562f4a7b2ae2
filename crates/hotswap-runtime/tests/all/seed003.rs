//! Seed 003 (`seeds/003_*.txt`, spec §4.6 and §2.6): how a child's shutdown rule decides
//! whether its `terminate` runs. `brutal_kill` kills it (never terminate); a timeout sends
//! `shutdown`, which a trapping gen_server turns into `terminate(shutdown)` and a
//! non-trapping one dies of at once; a child still running when the timeout expires is
//! killed. A simple_one_for_one supervisor stops all its children at once.

use std::time::{Duration, Instant};

use hotswap_runtime::supervisor::{ChildSpec, Restart, Shutdown, Spec, Strategy};
use hotswap_runtime::{ExitReason, Pid, Ref};

use crate::sup_types::WORKER;
use crate::supervisor::{term, within, Env};

/// How far past its shutdown timeout a child may still be alive before the test calls it a
/// failure. The children's `terminate` runs for 10 s, so a kill within a second of the
/// timeout can only come from the timeout, not from `terminate` returning. The delay itself
/// (typically well under a millisecond on a quiet machine) is printed, not asserted: a
/// scheduling delay on a loaded machine is not a behaviour (seen: 49 ms at load 12 on 2 cores).
const KILL_SLACK: Duration = Duration::from_secs(1);

/// A one_for_one supervisor of one worker with this config and shutdown rule; the
/// supervisor and the worker's pid.
async fn one(env: &Env, cfg: crate::sup_types::Config, rule: Shutdown) -> (Pid, Pid) {
    let id = cfg.id.clone();
    let sup = env
        .start(Spec::new(Strategy::OneForOne).child(cfg.spec().shutdown(rule)))
        .await;
    (sup, env.started(&id).await)
}

fn has_line(env: &Env, prefix: &str) -> bool {
    env.log().iter().any(|l| l.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed003_brutal_kill_skips_terminate() {
    within(async {
        let env = Env::new("seed003_brutal").await;
        let (sup, w) = one(&env, env.cfg("w"), Shutdown::BrutalKill).await;
        let sv = env.node.supervisor();

        // terminate_child: killed, although it traps exits; terminate never runs.
        let r = env.monitor(w);
        assert_eq!(sv.terminate_child(sup, "w").await, Ok(()));
        assert_eq!(env.down(r).await, ExitReason::Killed);
        assert_eq!(env.terminating_now(w).await, None);
        assert!(!has_line(&env, "terminate w"), "{:?}", env.log());

        // The supervisor stopping: the same.
        let w2 = sv.restart_child(sup, "w").await.unwrap().unwrap();
        assert_eq!(env.started("w").await, w2);
        let r = env.monitor(w2);
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
        assert_eq!(env.down(r).await, ExitReason::Killed);
        assert_eq!(env.terminating_now(w2).await, None);
        assert!(!has_line(&env, "terminate w"), "{:?}", env.log());

        // simple_one_for_one children with brutal_kill: all killed, none runs terminate.
        let template = ChildSpec::server("k", WORKER, &()).shutdown(Shutdown::BrutalKill);
        let sup = env
            .start(Spec::new(Strategy::SimpleOneForOne).child(template))
            .await;
        let mut kids = Vec::new();
        for i in 0..10 {
            let id = format!("k{i}");
            let pid = sv
                .start_simple_child(sup, &(env.cfg(&id),))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(env.started(&id).await, pid);
            kids.push((pid, env.monitor(pid)));
        }
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
        for (pid, r) in kids {
            assert_eq!(env.down(r).await, ExitReason::Killed);
            assert_eq!(env.terminating_now(pid).await, None);
        }
        assert!(!has_line(&env, "terminate "), "{:?}", env.log());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed003_timeout_shutdown_calls_terminate_when_trapping() {
    within(async {
        let env = Env::new("seed003_timeout").await;
        let rule = Shutdown::Timeout(Duration::from_secs(5));
        // terminate takes a while (well within the timeout): the supervisor waits for it.
        let (sup, w) = one(&env, env.cfg("w").terminate_ms(50), rule).await;
        let sv = env.node.supervisor();

        let r = env.monitor(w);
        assert_eq!(sv.terminate_child(sup, "w").await, Ok(()));
        // terminate_child returned once the child was gone, and its terminate had run to
        // the end.
        assert!(!env.node.is_alive(w));
        let log = env.log();
        assert_eq!(
            log[1..],
            [term("w", "shutdown"), "terminate_done w".to_string()],
            "{log:?}"
        );
        // terminate began before the child exited: its event is ahead of the Down.
        let first = env
            .me
            .recv_match(crate::support::WAIT, |m| match m {
                hotswap_runtime::Message::Down { reference, .. } => *reference == r,
                m => matches!(
                    m.decode::<crate::sup_types::Event>(),
                    Ok(crate::sup_types::Event::Terminating { pid, .. }) if pid == w
                ),
            })
            .await
            .unwrap();
        assert!(
            !matches!(first, hotswap_runtime::Message::Down { .. }),
            "terminate ran before the child was gone"
        );
        assert_eq!(env.down(r).await, ExitReason::Shutdown);

        // The supervisor stopping: the same.
        let w2 = sv.restart_child(sup, "w").await.unwrap().unwrap();
        assert_eq!(env.started("w").await, w2);
        let r = env.monitor(w2);
        let mark = env.log().len();
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
        assert_eq!(env.down(r).await, ExitReason::Shutdown);
        assert_eq!(env.terminating_now(w2).await.as_deref(), Some("shutdown"));
        assert_eq!(
            env.log_after(mark),
            [term("w", "shutdown"), "terminate_done w".to_string()]
        );

        // Shutdown::Infinity also sends `shutdown`: terminate runs.
        let (sup, w3) = one(&env, env.cfg("v"), Shutdown::Infinity).await;
        let r = env.monitor(w3);
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
        assert_eq!(env.down(r).await, ExitReason::Shutdown);
        assert_eq!(env.terminating_now(w3).await.as_deref(), Some("shutdown"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed003_no_trap_exit_skips_terminate() {
    within(async {
        let env = Env::new("seed003_no_trap").await;
        let rule = Shutdown::Timeout(Duration::from_secs(5));
        let (sup, w) = one(&env, env.cfg("w").no_trap(), rule).await;
        let sv = env.node.supervisor();

        // The `shutdown` signal kills it at once (long before the timeout), without terminate.
        let r = env.monitor(w);
        let t0 = Instant::now();
        assert_eq!(sv.terminate_child(sup, "w").await, Ok(()));
        assert_eq!(env.down(r).await, ExitReason::Shutdown);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "it died of the signal, not of the timeout's kill: {:?}",
            t0.elapsed()
        );
        assert_eq!(env.terminating_now(w).await, None);
        assert!(!has_line(&env, "terminate w"), "{:?}", env.log());

        // The supervisor stopping: the same.
        let w2 = sv.restart_child(sup, "w").await.unwrap().unwrap();
        assert_eq!(env.started("w").await, w2);
        let r = env.monitor(w2);
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
        assert_eq!(env.down(r).await, ExitReason::Shutdown);
        assert_eq!(env.terminating_now(w2).await, None);
        assert!(!has_line(&env, "terminate w"), "{:?}", env.log());
    })
    .await
}

/// Wait for the `Down` of `r` while `f` runs; the time from just before `f` started.
async fn time_to_down<F: std::future::Future + Send + 'static>(
    env: &Env,
    r: Ref,
    f: F,
) -> (ExitReason, Duration)
where
    F::Output: Send + 'static,
{
    let t0 = Instant::now();
    let task = tokio::spawn(f);
    let why = env.down(r).await;
    let elapsed = t0.elapsed();
    task.await.unwrap();
    (why, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed003_ignoring_child_killed_after_timeout() {
    within(async {
        const T: Duration = Duration::from_millis(200);
        let env = Env::new("seed003_kill").await;
        // Its terminate (10 s) takes far longer than its shutdown timeout.
        let cfg = env.cfg("slow").terminate_ms(10_000);
        let (sup, w) = one(&env, cfg, Shutdown::Timeout(T)).await;
        let sv = env.node.supervisor();

        // terminate_child.
        let r = env.monitor(w);
        let node = env.node.clone();
        let (why, by_terminate_child) = time_to_down(&env, r, async move {
            assert_eq!(node.supervisor().terminate_child(sup, "slow").await, Ok(()));
        })
        .await;
        assert_eq!(why, ExitReason::Killed);
        assert_eq!(
            env.terminating_now(w).await.as_deref(),
            Some("shutdown"),
            "terminate began"
        );
        assert!(
            !has_line(&env, "terminate_done"),
            "and was cut short: {:?}",
            env.log()
        );

        // The supervisor stopping.
        let w2 = sv.restart_child(sup, "slow").await.unwrap().unwrap();
        assert_eq!(env.started("slow").await, w2);
        let r = env.monitor(w2);
        let rsup = env.monitor(sup);
        let node = env.node.clone();
        let (why, by_stop) = time_to_down(&env, r, async move {
            node.exit(sup, ExitReason::Shutdown);
        })
        .await;
        assert_eq!(why, ExitReason::Killed);
        assert_eq!(env.terminating_now(w2).await.as_deref(), Some("shutdown"));
        assert_eq!(env.down(rsup).await, ExitReason::Shutdown);
        assert!(!has_line(&env, "terminate_done"), "{:?}", env.log());

        eprintln!(
            "seed003 kill delay after the {T:?} timeout: terminate_child {:?}, supervisor stop {:?}",
            by_terminate_child.saturating_sub(T),
            by_stop.saturating_sub(T)
        );
        for (how, d) in [("terminate_child", by_terminate_child), ("stop", by_stop)] {
            assert!(d >= T, "{how}: killed before its timeout: {d:?}");
            assert!(
                d <= T + KILL_SLACK,
                "{how}: killed {:?} after its {T:?} timeout (at most {KILL_SLACK:?})",
                d - T
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed003_simple_one_for_one_children_all_terminated() {
    within(async {
        const N: usize = 50;
        const TERMINATE_MS: u64 = 100;
        let env = Env::new("seed003_simple").await;
        let template = ChildSpec::server("w", WORKER, &())
            .restart(Restart::Permanent)
            .shutdown(Shutdown::Timeout(Duration::from_secs(5)));
        let sup = env
            .start(Spec::new(Strategy::SimpleOneForOne).child(template))
            .await;
        let sv = env.node.supervisor();
        let mut kids = Vec::new();
        for i in 0..N {
            let id = format!("w{i}");
            // Every fifth child does not trap exits: the signal kills it, no terminate.
            let mut cfg = env.cfg(&id).terminate_ms(TERMINATE_MS);
            if i % 5 == 4 {
                cfg = cfg.no_trap();
            }
            let pid = sv.start_simple_child(sup, &(cfg,)).await.unwrap().unwrap();
            assert_eq!(env.started(&id).await, pid);
            kids.push((id, pid, env.monitor(pid), i % 5 != 4));
        }
        let counts = sv.count_children(sup).await.unwrap();
        assert_eq!((counts.specs, counts.active, counts.workers), (1, N, N));

        let t0 = Instant::now();
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
        let elapsed = t0.elapsed();
        for (id, pid, r, traps) in &kids {
            assert_eq!(env.down(*r).await, ExitReason::Shutdown, "{id}");
            assert!(!env.node.is_alive(*pid), "{id}");
            let t = env.terminating_now(*pid).await;
            if *traps {
                assert_eq!(t.as_deref(), Some("shutdown"), "{id} ran terminate");
                assert!(env.log().contains(&format!("terminate_done {id}")), "{id}");
            } else {
                assert_eq!(t, None, "{id} does not trap exits: no terminate");
            }
        }
        let terminated = env
            .log()
            .iter()
            .filter(|l| l.starts_with("terminate w"))
            .count();
        assert_eq!(terminated, N - N / 5);
        // All at once: one after the other would take N * 100 ms (5 s).
        assert!(
            elapsed < Duration::from_millis(TERMINATE_MS * N as u64 / 2),
            "the children were not stopped at once: {elapsed:?}"
        );
        eprintln!("seed003 simple_one_for_one: {N} children stopped in {elapsed:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed003_simple_one_for_one_one_shared_timer() {
    within(async {
        const N: usize = 20;
        const T: Duration = Duration::from_millis(200);
        let env = Env::new("seed003_shared_timer").await;
        let template = ChildSpec::server("w", WORKER, &()).shutdown(Shutdown::Timeout(T));
        let sup = env
            .start(Spec::new(Strategy::SimpleOneForOne).child(template))
            .await;
        let sv = env.node.supervisor();
        let mut kids = Vec::new();
        for i in 0..N {
            let id = format!("s{i}");
            let cfg = env.cfg(&id).terminate_ms(10_000);
            let pid = sv.start_simple_child(sup, &(cfg,)).await.unwrap().unwrap();
            assert_eq!(env.started(&id).await, pid);
            kids.push((pid, env.monitor(pid)));
        }
        let t0 = Instant::now();
        assert_eq!(env.stop(sup).await, ExitReason::Shutdown);
        let elapsed = t0.elapsed();
        for (pid, r) in kids {
            assert_eq!(env.down(r).await, ExitReason::Killed);
            assert_eq!(env.terminating_now(pid).await.as_deref(), Some("shutdown"));
        }
        assert!(!has_line(&env, "terminate_done"), "{:?}", env.log());
        // One timer for all: killed about T after the signal, not N * T.
        assert!(
            elapsed >= T && elapsed < 2 * T,
            "{N} children that ignore shutdown, timeout {T:?}: stopped in {elapsed:?}"
        );
    })
    .await
}

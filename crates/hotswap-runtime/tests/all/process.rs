//! Processes: links, exit signals, trap_exit, kill, monitors, selective receive, timeouts,
//! timers, the registry, and fully-qualified calls binding a process to a version.

use std::time::Duration;

use hotswap::{Ctx, ExitReason, Message, Pid};
use hotswap_runtime::Node;

use crate::support::{self, module, QUIET, WAIT};

/// Spawn a native process that waits for one `String` and exits with it as its reason.
fn exit_on_word(node: &Node) -> Pid {
    node.spawn_native(|ctx: Ctx| async move {
        let w: String = ctx.receive().await;
        match w.as_str() {
            "normal" => ExitReason::Normal,
            other => ExitReason::User(other.into()),
        }
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_link_propagates_abnormal_exit_not_normal() {
    let node = support::node();
    let me = node.external();
    for (word, dies) in [("normal", false), ("crashed", true)] {
        let child = exit_on_word(&node);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let partner = node
            .spawn_native(move |ctx: Ctx| async move {
                ctx.link(child);
                let _ = tx.send(());
                let _: u32 = ctx.receive().await; // waits forever unless killed by a signal
            })
            .unwrap();
        let mon = me.monitor(partner);
        rx.await.unwrap();
        me.send(child, &word);
        if dies {
            assert_eq!(
                me.down(mon, WAIT).await,
                Some(ExitReason::User("crashed".into()))
            );
        } else {
            assert_eq!(
                me.down(mon, QUIET).await,
                None,
                "a normal exit does not kill links"
            );
            assert!(node.is_alive(partner));
            assert!(
                node.process_info(partner).unwrap().links.is_empty(),
                "the link is gone"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_trap_exit_turns_signals_into_messages_but_not_kill() {
    let node = support::node();
    let me = node.external();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let me_pid = me.pid();
    let trapper = node
        .spawn_native(move |ctx: Ctx| async move {
            ctx.trap_exit(true);
            ctx.send(me_pid, &"trapping");
            while let Message::Exit { from, reason } = ctx.recv().await {
                let _ = tx.send((from, reason));
            }
        })
        .unwrap();
    let mon = me.monitor(trapper);
    assert_eq!(
        me.receive::<String>(WAIT).await.as_deref(),
        Some("trapping")
    );
    node.exit(trapper, ExitReason::User("go away".into()));
    node.exit(trapper, ExitReason::Normal);
    assert_eq!(
        rx.recv().await.unwrap(),
        (Pid(0), ExitReason::User("go away".into()))
    );
    assert_eq!(rx.recv().await.unwrap(), (Pid(0), ExitReason::Normal));
    assert!(node.is_alive(trapper));
    // `kill` cannot be trapped, and is seen as `killed`.
    node.exit(trapper, ExitReason::Kill);
    assert_eq!(me.down(mon, WAIT).await, Some(ExitReason::Killed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_monitor_down_and_noproc() {
    let node = support::node();
    let me = node.external();
    let p = exit_on_word(&node);
    let r = me.monitor(p);
    me.send(p, &"bye");
    assert_eq!(me.down(r, WAIT).await, Some(ExitReason::User("bye".into())));
    // Monitoring a dead process: DOWN with noproc at once.
    let r2 = me.monitor(p);
    assert_eq!(me.down(r2, WAIT).await, Some(ExitReason::NoProc));
    // A demonitored process's exit sends nothing.
    let q = exit_on_word(&node);
    let r3 = me.monitor(q);
    assert!(me.demonitor(r3));
    me.send(q, &"bye");
    assert_eq!(me.down(r3, QUIET).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_selective_receive_and_timeout() {
    let node = support::node();
    let me = node.external();
    let me_pid = me.pid();
    let p = node
        .spawn_native(move |ctx: Ctx| async move {
            // Take the u32 messages greater than 10 first; everything else stays in order.
            let big = ctx.receive_match(|n: &u32| *n > 10).await;
            let s: String = ctx.receive().await;
            let rest = [ctx.receive::<u32>().await, ctx.receive::<u32>().await];
            let none = ctx.receive_timeout::<u32>(Duration::from_millis(30)).await;
            ctx.send(me_pid, &(big, s, rest.to_vec(), none));
        })
        .unwrap();
    me.send(p, &1u32);
    me.send(p, &"text");
    me.send(p, &2u32);
    me.send(p, &42u32);
    let got: (u32, String, Vec<u32>, Option<u32>) = me.receive(WAIT).await.unwrap();
    assert_eq!(got, (42, "text".into(), vec![1, 2], None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_timers_sleep_send_after_cancel() {
    let node = support::node();
    let me = node.external();
    let me_pid = me.pid();
    node.spawn_native(move |ctx: Ctx| async move {
        let t0 = std::time::Instant::now();
        ctx.sleep(Duration::from_millis(20)).await;
        let slept = t0.elapsed() >= Duration::from_millis(20);
        let keep = ctx.send_after(Duration::from_millis(10), ctx.self_pid(), &"kept");
        let gone = ctx.send_after(Duration::from_secs(30), ctx.self_pid(), &"cancelled");
        let left = ctx.cancel_timer(gone);
        let first: String = ctx.receive().await;
        let again = ctx.cancel_timer(keep);
        let nothing = ctx
            .receive_timeout::<String>(Duration::from_millis(50))
            .await;
        ctx.send(
            me_pid,
            &(
                slept,
                left.is_some_and(|d| d > Duration::from_secs(20)),
                first,
                again.is_none(),
                nothing,
            ),
        );
    })
    .unwrap();
    let got: (bool, bool, String, bool, Option<String>) = me.receive(WAIT).await.unwrap();
    assert_eq!(got, (true, true, "kept".into(), true, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_register_unregister_whereis() {
    let node = support::node();
    let me = node.external();
    let a = exit_on_word(&node);
    let b = exit_on_word(&node);
    node.register("svc", a).unwrap();
    assert!(node.register("svc", b).is_err(), "name taken");
    assert!(node.register("other", a).is_err(), "already named");
    assert_eq!(node.whereis("svc"), Some(a));
    assert!(node.send_named("svc", &"bye"));
    let r = me.monitor(a);
    assert!(me.down(r, WAIT).await.is_some());
    assert_eq!(
        node.whereis("svc"),
        None,
        "a dead process's name is released"
    );
    assert!(!node.send_named("svc", &"x"));
    node.register("svc", b).unwrap();
    assert!(node.unregister("svc"));
    assert!(!node.unregister("svc"));
    assert!(
        node.register("svc", Pid(999_999)).is_err(),
        "no such process"
    );
}

fn threads() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_idle_processes_hold_no_thread() {
    let node = support::node();
    node.code().load(module("seed000_v1")).await.unwrap();
    let before = threads();
    let pids: Vec<Pid> = (0..20_000)
        .map(|_| node.spawn("seed000", "do_loop", &()).unwrap())
        .collect();
    assert_eq!(node.process_count(), 20_000);
    assert!(
        threads() <= before + 1,
        "20k idle processes, threads {before} -> {}",
        threads()
    );
    let me = node.external();
    assert_eq!(crate::support::ping(&me, pids[12_345]).await.version, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_apply_binds_caller_to_version_while_waiting() {
    let node = support::node();
    let me = node.external();
    let me_pid = me.pid();
    node.code().load(module("seed000_v1")).await.unwrap();
    node.code().load(module("misbehave")).await.unwrap();
    let caller = node
        .spawn_native(move |ctx: Ctx| async move {
            let v: (String, u64) = ctx.apply("seed000", "version", &()).await.unwrap();
            ctx.send(me_pid, &v.0);
            // misbehave:idle waits for any message: the caller is bound to that version
            // while it waits.
            let r: Result<(), _> = ctx.apply("misbehave", "idle", &()).await;
            ctx.send(me_pid, &format!("{r:?}"));
            let missing: Result<(), _> = ctx.apply("nomodule", "f", &()).await;
            ctx.send(me_pid, &format!("{missing:?}"));
            let _: String = ctx.receive().await;
        })
        .unwrap();
    assert_eq!(me.receive::<String>(WAIT).await.as_deref(), Some("1"));
    // Wait until the caller is inside misbehave:idle.
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.code().which_processes("misbehave").0 != vec![caller] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "caller never bound to misbehave"
        );
        tokio::task::yield_now().await;
    }
    node.code().load(module("misbehave")).await.unwrap();
    assert!(
        node.code().check_process_code(caller, "misbehave"),
        "awaiting old code binds the caller"
    );
    me.send(caller, &"wake up");
    assert_eq!(me.receive::<String>(WAIT).await.as_deref(), Some("Ok(())"));
    assert!(
        !node.code().check_process_code(caller, "misbehave"),
        "returned: no longer bound"
    );
    let undef = me.receive::<String>(WAIT).await.unwrap();
    assert!(
        undef.contains("Undef") && undef.contains("nomodule"),
        "{undef}"
    );
    assert!(node.code().soft_purge("misbehave").await.unwrap());
}

/// A fully-qualified synchronous call reaches the current version each time, re-resolving
/// only after a load or delete; purging the version it used before is safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_function_handle_follows_current_version() {
    let node = support::node();
    let me = node.external();
    let me_pid = me.pid();
    node.code().load(module("seed000_v1")).await.unwrap();
    let caller = node
        .spawn_native(move |ctx: Ctx| async move {
            let mut f = ctx.function::<u64, (String, u64)>("seed000", "whoami");
            let mut missing = ctx.function::<u64, u64>("seed000", "nope");
            // Until told 0: answer each number with both calls' results.
            loop {
                let x: u64 = ctx.receive().await;
                if x == 0 {
                    return;
                }
                let r = f.call(&x).map_err(|e| e.to_string());
                let m = missing.call(&x).map_err(|e| e.to_string());
                ctx.send(me_pid, &(r, m.unwrap_err()));
            }
        })
        .unwrap();
    let ask = |x: u64| {
        me.send(caller, &x);
        async {
            me.receive::<(Result<(String, u64), String>, String)>(WAIT)
                .await
                .unwrap()
        }
    };
    let (r, missing) = ask(1).await;
    assert_eq!(r, Ok(("1".into(), 2)));
    assert!(
        missing.contains("undef") && missing.contains("whoami"),
        "{missing}"
    );
    node.code().load(module("seed000_v2")).await.unwrap();
    assert_eq!(
        ask(2).await.0,
        Ok(("2".into(), 3)),
        "the next call reaches the new version"
    );
    // The version the handle used before is purged and unmapped: the handle re-resolved.
    let r = node.code().purge("seed000").await.unwrap();
    assert_eq!(r.pinned, None);
    assert_eq!(ask(3).await.0, Ok(("2".into(), 4)));
    node.code().delete("seed000").await.unwrap();
    let (r, _) = ask(4).await;
    assert!(r.unwrap_err().contains("not loaded"));
    node.code().purge("seed000").await.unwrap();
    node.code().load(module("seed000_v1")).await.unwrap();
    assert_eq!(
        ask(5).await.0,
        Ok(("1".into(), 6)),
        "and back, after delete and purge"
    );
}

/// A native process may await tokio's own futures: a timer's or the scheduler's wake makes
/// it runnable, as a message does (issue 10, part 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_process_wakes_on_tokio_sleep_and_yield() {
    let node = support::node();
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |_ctx: Ctx| async move {
        let t = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let slept = t.elapsed();
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        let _ = tx.send(slept);
    })
    .unwrap();
    let slept = tokio::time::timeout(WAIT, rx)
        .await
        .expect("the process resumed after its sleep and its yields")
        .unwrap();
    assert!(slept >= Duration::from_millis(10), "{slept:?}");
}

/// A native process parked on a tokio oneshot resumes when the value is sent from outside
/// any process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_process_wakes_on_oneshot_fed_from_outside() {
    use std::future::Future;
    use std::task::Poll;

    let node = support::node();
    let me = node.external();
    let me_pid = me.pid();
    let (in_tx, mut in_rx) = tokio::sync::oneshot::channel::<u64>();
    let (out_tx, out_rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx: Ctx| async move {
        // Poll the receiver once (registering the process's waker with it) before saying
        // so: the value sent after that can only arrive through a wake.
        let pending = std::future::poll_fn(|cx| {
            Poll::Ready(std::pin::Pin::new(&mut in_rx).poll(cx).is_pending())
        })
        .await;
        ctx.send(me_pid, &pending);
        let v = in_rx.await.unwrap();
        let _ = out_tx.send(v + 1);
    })
    .unwrap();
    assert_eq!(
        me.receive::<bool>(WAIT).await,
        Some(true),
        "parked on the oneshot"
    );
    in_tx.send(41).unwrap();
    let v = tokio::time::timeout(WAIT, out_rx)
        .await
        .expect("the process woke when the oneshot was fed")
        .unwrap();
    assert_eq!(v, 42);
}

/// A missing module is one reason, `undef`, with the same words, whichever way it is
/// reached: a process's tail call (`continue_with`) into a deleted module exits with
/// `ExitReason::Undef`, and a call (`Ctx::apply`, `Ctx::function`) into it fails with
/// `ApplyError::Undef` (issue 10, part 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undef_is_one_reason_on_every_path() {
    let node = support::node();
    let me = node.external();
    let me_pid = me.pid();
    node.code().load(module("seed000_v1")).await.unwrap();
    let (looper, mon) = me.spawn_monitor("seed000", "loop", &()).unwrap();
    assert_eq!(support::ping(&me, looper).await.version, "1");
    node.code().delete("seed000").await.unwrap();
    let expected = "module `seed000` is not loaded".to_string();

    // The tail call `seed000:loop()` finds no current version.
    me.send(looper, &support::Req::CodeSwitch);
    assert_eq!(
        me.down(mon, WAIT).await,
        Some(ExitReason::Undef(expected.clone()))
    );

    // Calls into it, from a process.
    node.spawn_native(move |ctx: Ctx| async move {
        let applied = ctx
            .apply::<(), (String, u64)>("seed000", "version", &())
            .await;
        let called = ctx
            .function::<u64, (String, u64)>("seed000", "whoami")
            .call(&1);
        ctx.send(
            me_pid,
            &[applied.map(|_| ()), called.map(|_| ())].map(|r| match r {
                Err(hotswap::ApplyError::Undef(m)) => Ok(m),
                other => Err(format!("{other:?}")),
            }),
        );
    })
    .unwrap();
    let got = me
        .receive::<[Result<String, String>; 2]>(WAIT)
        .await
        .unwrap();
    assert_eq!(got, [Ok(expected.clone()), Ok(expected)]);
}

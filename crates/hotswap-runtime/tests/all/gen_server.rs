//! gen_server behaviour: calls (timeouts, dead servers, deferred replies), when `terminate`
//! runs (spec §2.6), `init` results, and loads/purges never killing an idle server.

use std::time::Duration;

use hotswap::gen_server as gs;
use hotswap_runtime::{CallError, ExitReason, Pid, StartError, StartOpts};

use crate::gs::{self as g, Event, InitMode, Req, State};
use crate::support::{module, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_call_timeout() {
    let node = g::node().await;
    let me = node.external();
    let pid = g::start(&node, &g::arg(&me)).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A caller process: its call times out, the request still runs, and the late reply
    // never reaches its mailbox.
    let caller = node
        .spawn_native(move |ctx| async move {
            let slow = gs::call_timeout::<_, u64>(
                &ctx,
                pid,
                &Req::Sleep(300),
                Some(Duration::from_millis(30)),
            )
            .await;
            let count = gs::call::<_, u64>(&ctx, pid, &Req::Count).await;
            let _ = tx.send((slow, count));
            // Stay alive so the test can look at the mailbox.
            let _ = ctx.receive::<String>().await;
        })
        .unwrap();
    let (slow, count) = rx.await.unwrap();
    assert!(
        matches!(slow, Err(CallError::Timeout(d)) if d == Duration::from_millis(30)),
        "{slow:?}"
    );
    assert_eq!(
        count.unwrap(),
        2,
        "the timed-out request still ran, before this one"
    );
    let info = node.process_info(caller).unwrap();
    assert_eq!(info.message_queue_len, 0, "the late reply was dropped");
    me.send(caller, &"done".to_string());

    // From host code too.
    let r = node
        .call::<_, u64>(pid, &Req::Sleep(200), Duration::from_millis(20))
        .await;
    assert!(matches!(r, Err(CallError::Timeout(_))), "{r:?}");
}

/// A call with a timeout ends with `Timeout` when the server never answers (`Req::Defer`
/// is answered `noreply` and never released), after at least its timeout, whatever
/// deadline the caller's receive timer held before: a process keeps one timer armed
/// across waits (issue 16), so here it first moves earlier (a 5 s call answered, then a
/// 30 ms one that is not) and then fires early and is re-armed later (a 20 ms call
/// answered, then a 100 ms one that is not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_call_times_out_when_the_server_never_replies() {
    let node = g::node().await;
    let me = node.external();
    let pid = g::start(&node, &g::arg(&me)).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let mut out = Vec::new();
        for (answered, unanswered) in [(5_000, 30), (20, 100)] {
            let n = gs::call_timeout::<_, u64>(
                &ctx,
                pid,
                &Req::Count,
                Some(Duration::from_millis(answered)),
            )
            .await;
            let t = std::time::Instant::now();
            let r = gs::call_timeout::<_, u64>(
                &ctx,
                pid,
                &Req::Defer,
                Some(Duration::from_millis(unanswered)),
            )
            .await;
            out.push((n, unanswered, r, t.elapsed()));
        }
        let _ = tx.send(out);
    })
    .unwrap();
    let out = tokio::time::timeout(WAIT, rx)
        .await
        .expect("the calls ended")
        .unwrap();
    for (n, ms, r, took) in out {
        assert!(n.is_ok(), "the answered call: {n:?}");
        let limit = Duration::from_millis(ms);
        assert!(
            matches!(r, Err(CallError::Timeout(d)) if d == limit),
            "the unanswered call with {ms} ms: {r:?}"
        );
        assert!(
            took >= limit,
            "timed out after {took:?}, before its {ms} ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_call_to_dead_process() {
    let node = g::node().await;
    let me = node.external();
    // No such pid, no such name.
    let r = node.call::<_, u64>(Pid(999_999), &Req::Count, WAIT).await;
    assert!(matches!(r, Err(CallError::NoProc(_))), "{r:?}");
    let r = node.call::<_, u64>("nobody", &Req::Count, WAIT).await;
    assert!(
        matches!(&r, Err(CallError::NoProc(n)) if n.to_string().contains("nobody")),
        "{r:?}"
    );

    // A server that dies handling the call: the caller gets its exit reason.
    let pid = node
        .start_server("gs_test", &g::arg(&me), StartOpts::named("victim"))
        .await
        .unwrap();
    let v: u64 = node.call("victim", &Req::Echo(5), WAIT).await.unwrap();
    assert_eq!(v, 5, "calls by registered name");
    let r = node.call::<_, u64>(pid, &Req::Panic, WAIT).await;
    assert!(
        matches!(&r, Err(CallError::Exit(ExitReason::Panic(m))) if m.contains("handle_call exploded")),
        "{r:?}"
    );
    let r = node.call::<_, u64>(pid, &Req::Count, WAIT).await;
    assert!(matches!(r, Err(CallError::NoProc(_))), "dead now: {r:?}");

    // Calls queued behind a call that stops the server get its reason (even `normal`).
    let pid = g::start(&node, &g::arg(&me)).await;
    node.sys().suspend(pid).await.unwrap();
    let n1 = node.clone();
    let queued = tokio::spawn(async move { n1.call::<_, u64>(pid, &Req::Count, WAIT).await });
    let n2 = node.clone();
    let stopper = tokio::spawn(async move {
        n2.call::<_, u64>(pid, &Req::Stop("normal".into()), WAIT)
            .await
    });
    // Both calls are queued before the server resumes.
    while node.process_info(pid).unwrap().message_queue_len < 2 {
        tokio::task::yield_now().await;
    }
    node.sys().resume(pid).await.unwrap();
    let a = queued.await.unwrap();
    let b = stopper.await.unwrap();
    // Which of the two ran first is decided by arrival order; the other one sees the exit.
    let outcomes = [format!("{a:?}"), format!("{b:?}")];
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("Exit(User(\"normal\"))")),
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_terminate_rules() {
    let node = g::node().await;
    let me = node.external();
    let arg = g::arg(&me);
    let trapping = g::Arg {
        trap_exit: true,
        ..arg.clone()
    };

    // A callback returns stop: terminate runs with that reason, then the server exits with it.
    let pid = g::start(&node, &arg).await;
    let mref = me.monitor(pid);
    let r = node
        .call::<_, u64>(pid, &Req::Stop("bye".into()), WAIT)
        .await;
    assert!(
        matches!(&r, Err(CallError::Exit(ExitReason::User(s))) if s == "bye"),
        "{r:?}"
    );
    assert_eq!(g::terminated(&me).await.as_deref(), Some("bye"));
    assert_eq!(
        me.down(mref, WAIT).await,
        Some(ExitReason::User("bye".into()))
    );

    // stop with a reply: terminate runs, then the caller gets the reply.
    let pid = g::start(&node, &arg).await;
    let v: u64 = node
        .call(pid, &Req::StopReply("done".into()), WAIT)
        .await
        .unwrap();
    assert_eq!(v, 7);
    assert_eq!(g::terminated(&me).await.as_deref(), Some("done"));

    // A panic: terminate runs with {panic, ..}.
    let pid = g::start(&node, &arg).await;
    node.cast(pid, &Req::Panic);
    let t = g::terminated(&me).await.unwrap();
    assert!(
        t.contains("panic") && t.contains("handle_cast exploded"),
        "{t}"
    );

    // gen_server:stop runs terminate whether or not the server traps exits.
    let pid = g::start(&node, &arg).await;
    node.stop_server(pid, ExitReason::Shutdown, WAIT)
        .await
        .unwrap();
    assert_eq!(g::terminated(&me).await.as_deref(), Some("shutdown"));

    // kill: never terminate.
    let pid = g::start(&node, &trapping).await;
    let mref = me.monitor(pid);
    node.exit(pid, ExitReason::Kill);
    assert_eq!(me.down(mref, WAIT).await, Some(ExitReason::Killed));
    assert!(!g::terminated_now(&me).await, "no terminate after kill");

    // The parent's exit signal: terminate only when trapping exits.
    for (trap, runs) in [(true, true), (false, false)] {
        let a = g::Arg {
            trap_exit: trap,
            ..arg.clone()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let parent = node
            .spawn_native(move |ctx| async move {
                let pid = gs::start_link(&ctx, "gs_test", &a, StartOpts::default())
                    .await
                    .unwrap();
                let _ = tx.send(pid);
                let _ = ctx.receive::<String>().await;
                Err::<(), _>(ExitReason::User("parent gone".into()))
            })
            .unwrap();
        let pid = rx.await.unwrap();
        let mref = me.monitor(pid);
        me.send(parent, &"go".to_string());
        assert_eq!(
            me.down(mref, WAIT).await,
            Some(ExitReason::User("parent gone".into()))
        );
        assert_eq!(g::terminated_now(&me).await, runs, "trap_exit = {trap}");
    }

    // An exit signal from a process other than the parent, while trapping: handle_info.
    let pid = g::start(&node, &trapping).await;
    let other = node.external();
    other.link(pid);
    let other_pid = other.pid();
    drop(other); // exits `normal`
    let m = me
        .recv_match(WAIT, |m| matches!(m.decode::<Event>(), Ok(Event::Info(_))))
        .await
        .unwrap();
    assert_eq!(
        m.decode::<Event>().unwrap(),
        Event::Info(format!("EXIT {other_pid} normal"))
    );
    assert!(node.is_alive(pid));
    assert!(!g::terminated_now(&me).await);

    // init fails: no terminate, and the start says why.
    let bad = g::Arg {
        init: InitMode::Stop("no way".into()),
        ..arg.clone()
    };
    let r = node
        .start_server("gs_test", &bad, StartOpts::default())
        .await;
    assert_eq!(r, Err(StartError::Init(ExitReason::User("no way".into()))));
    assert!(
        !g::terminated_now(&me).await,
        "terminate never runs when init fails"
    );
}

/// Wait until the server has saved a deferred caller other than `prev`.
async fn deferred_other_than(
    node: &hotswap_runtime::Node,
    pid: Pid,
    prev: Option<g::Caller>,
) -> g::Caller {
    loop {
        let st: State = node.sys().get_state(pid).await.unwrap();
        if let Some(c) = st.deferred.filter(|c| Some(*c) != prev) {
            return c;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_deferred_reply() {
    let node = g::node().await;
    let me = node.external();
    let pid = g::start(&node, &g::arg(&me)).await;

    // The server defers, then answers from itself on a later request.
    let n1 = node.clone();
    let waiting = tokio::spawn(async move { n1.call::<_, u64>(pid, &Req::Defer, WAIT).await });
    deferred_other_than(&node, pid, None).await;
    let _: u64 = node.call(pid, &Req::Release(42), WAIT).await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 42);

    // Another process answers with the saved caller.
    let n2 = node.clone();
    let waiting = tokio::spawn(async move { n2.call::<_, u64>(pid, &Req::Defer, WAIT).await });
    let caller = deferred_other_than(&node, pid, None).await;
    node.spawn_native(move |ctx| async move {
        gs::reply(
            &ctx,
            &gs::Caller {
                pid: caller.pid,
                tag: caller.tag,
            },
            &99u64,
        );
    })
    .unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 99);

    // A server that exits while a caller waits for a deferred reply: the caller gets why.
    let n3 = node.clone();
    let waiting = tokio::spawn(async move { n3.call::<_, u64>(pid, &Req::Defer, WAIT).await });
    // (The reply from another process left the previous caller in the state.)
    deferred_other_than(&node, pid, Some(caller)).await;
    node.exit(pid, ExitReason::User("gone".into()));
    let r = waiting.await.unwrap();
    assert!(
        matches!(&r, Err(CallError::Exit(ExitReason::User(s))) if s == "gone"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_init_results_and_names() {
    let node = g::node().await;
    let me = node.external();
    let arg = g::arg(&me);
    let with = |init| g::Arg {
        init,
        ..arg.clone()
    };
    assert_eq!(
        node.start_server("gs_test", &with(InitMode::Ignore), StartOpts::default())
            .await,
        Err(StartError::Ignore)
    );
    let r = node
        .start_server("gs_test", &with(InitMode::Panic), StartOpts::default())
        .await;
    assert!(
        matches!(&r, Err(StartError::Init(ExitReason::Panic(m))) if m.contains("init exploded")),
        "{r:?}"
    );
    let r = node
        .start_server(
            "gs_test",
            &with(InitMode::Sleep(2_000)),
            StartOpts {
                timeout: Some(Duration::from_millis(30)),
                ..Default::default()
            },
        )
        .await;
    // Waiting at an await point, the server dies of the kill at once: it says so.
    assert_eq!(
        r,
        Err(StartError::Timeout {
            after: Duration::from_millis(30),
            running: None
        })
    );
    assert!(
        r.unwrap_err().to_string().contains("the server was killed"),
        "a killed server is reported as killed"
    );
    // A server killed during init: the starter learns why at once.
    let n1 = node.clone();
    let slow = with(InitMode::Sleep(60_000));
    let starting = tokio::spawn(async move {
        n1.start_server("gs_test", &slow, StartOpts::named("slow"))
            .await
    });
    let pid = loop {
        if let Some(p) = node.whereis("slow") {
            break p;
        }
        tokio::task::yield_now().await;
    };
    node.exit(pid, ExitReason::Kill);
    assert_eq!(
        starting.await.unwrap(),
        Err(StartError::Init(ExitReason::Killed))
    );

    // A timeout action: handle_info(timeout) after silence.
    let pid = g::start(&node, &with(InitMode::OkTimeout(20))).await;
    let m = me
        .recv_match(WAIT, |m| {
            m.decode::<Event>() == Ok(Event::Info("timeout".into()))
        })
        .await;
    assert!(m.is_some());
    assert!(node.is_alive(pid));

    // Names: a taken name fails without running init.
    let first = node
        .start_server("gs_test", &arg, StartOpts::named("solo"))
        .await
        .unwrap();
    let r = node
        .start_server("gs_test", &arg, StartOpts::named("solo"))
        .await;
    assert_eq!(
        r,
        Err(StartError::AlreadyStarted {
            name: "solo".into(),
            pid: first
        })
    );
    // Bad modules are clear errors.
    let r = node.start_server("nope", &arg, StartOpts::default()).await;
    assert!(
        matches!(&r, Err(StartError::Spawn(m)) if m.contains("not loaded")),
        "{r:?}"
    );
    node.code().load(module("seed000_v1")).await.unwrap();
    let r = node
        .start_server("seed000", &arg, StartOpts::default())
        .await;
    assert!(
        matches!(&r, Err(StartError::Spawn(m)) if m.contains("not a gen_server")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_idle_survives_load_and_purge() {
    let node = g::node().await;
    let me = node.external();
    let pid = g::start(&node, &g::arg(&me)).await;
    let _: u64 = node.call(pid, &Req::Echo(1), WAIT).await.unwrap();
    node.code().load(module("gs_test_v2")).await.unwrap();
    // Idle, with its state made by v1: not running v1, so the purge keeps it alive and
    // turns its state into bytes with v1's own encoder before unmapping v1.
    assert!(!node.code().check_process_code(pid, "gs_test"));
    let freed = node.code().freed_count();
    let report = node.code().purge("gs_test").await.unwrap();
    assert!(report.killed.is_empty(), "{report:?}");
    assert_eq!(node.code().freed_count(), freed + 1, "v1 was unmapped");
    let st = node.sys().get_status(pid).await.unwrap();
    assert_eq!(st.version, None, "state held as bytes");
    // The next message migrates it to v2 (default code_change: same type).
    let n: u64 = node.call(pid, &Req::Count, WAIT).await.unwrap();
    assert_eq!(n, 2);
    let st: State = node.sys().get_state(pid).await.unwrap();
    assert_eq!(st.vsn, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_queued_casts_and_messages_keep_order() {
    // Queued casts and plain messages are handed to the module in runs: order, counts,
    // and a stop in the middle of a run must be exactly as one-by-one handling.
    let node = g::node().await;
    let me = node.external();
    let pid = g::start(&node, &g::arg(&me)).await;
    node.sys().suspend(pid).await.unwrap();
    for i in 0..150u64 {
        if i % 3 == 0 {
            node.send(pid, &format!("m{i}"));
        } else {
            node.cast(pid, &Req::Echo(i));
        }
    }
    let n1 = node.clone();
    let count = tokio::spawn(async move { n1.call::<_, u64>(pid, &Req::Count, WAIT).await });
    while node.process_info(pid).unwrap().message_queue_len < 151 {
        tokio::task::yield_now().await;
    }
    for i in 0..10u64 {
        node.cast(pid, &Req::Echo(i));
    }
    node.cast(pid, &Req::Stop("mid".into()));
    node.send(pid, &"never".to_string());
    let mref = me.monitor(pid);
    node.sys().resume(pid).await.unwrap();
    assert_eq!(
        count.await.unwrap().unwrap(),
        100 + 1,
        "100 casts, then the call"
    );
    let mut infos = Vec::new();
    assert_eq!(
        me.down(mref, WAIT).await,
        Some(ExitReason::User("mid".into()))
    );
    while let Some(m) = me.recv(Duration::ZERO).await {
        if let Ok(e) = m.decode::<Event>() {
            infos.push(e);
        }
    }
    let want: Vec<Event> = (0..150u64)
        .filter(|i| i % 3 == 0)
        .map(|i| Event::Info(format!("m{i}")))
        .chain([Event::Terminated {
            reason: "mid".into(),
            vsn: "1".into(),
        }])
        .collect();
    assert_eq!(infos, want, "in order; nothing after the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_server_busy_in_old_code_is_killed_by_purge() {
    // A server in the middle of a callback that waits runs that version's code: a purge
    // of it kills the server (as Erlang's does), and its caller learns why.
    let node = g::node().await;
    let me = node.external();
    let pid = g::start(&node, &g::arg(&me)).await;
    let n1 = node.clone();
    let caller =
        tokio::spawn(async move { n1.call::<_, u64>(pid, &Req::Sleep(60_000), WAIT * 6).await });
    while node.process_info(pid).unwrap().running.is_empty() {
        tokio::task::yield_now().await;
    }
    node.code().load(module("gs_test_v2")).await.unwrap();
    assert!(node.code().check_process_code(pid, "gs_test"));
    let report = node.code().purge("gs_test").await.unwrap();
    assert_eq!(report.killed, vec![pid]);
    let r = caller.await.unwrap();
    assert!(
        matches!(r, Err(CallError::Exit(ExitReason::Killed))),
        "{r:?}"
    );
}

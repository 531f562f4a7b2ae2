//! Seed 000: Erlang's two code versions, local loops that never upgrade, and `code_switch`.

use std::time::Duration;

use hotswap_runtime::{CodeError, ExitReason, Message};

use crate::support::{self, module, ping, Req, QUIET, WAIT};

/// `t:start()` + monitor; `l(t)` once: still alive on old code; `l(t)` again: killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed000_local_loop_survives_first_load_killed_on_second() {
    let node = support::node();
    let me = node.external();
    node.code()
        .load(module("seed000_v1"))
        .await
        .expect("load v1");
    let pid = node.spawn("seed000", "do_loop", &()).expect("spawn");
    node.register("t", pid).expect("register");
    let mon = me.monitor(pid);
    assert_eq!(ping(&me, pid).await.version, "1");

    // First load (a purging load, like `l(t)`): nothing to purge yet; the process is alive
    // and still runs the old code.
    let r = node
        .code()
        .load_purging(module("seed000_v2"))
        .await
        .expect("load v2");
    assert_eq!(r.current.as_ref().unwrap().version, "2");
    assert_eq!(node.whereis("t"), Some(pid));
    assert!(
        node.code().check_process_code(pid, "seed000"),
        "the local loop runs old code"
    );
    assert_eq!(
        ping(&me, pid).await.version,
        "1",
        "local calls stay in the old version"
    );
    assert!(me
        .recv_match(QUIET, |m| matches!(m, Message::Down { .. }))
        .await
        .is_none());

    // Second load: the old code is purged and the process running it is killed.
    node.code()
        .load_purging(module("seed000_v1"))
        .await
        .expect("second load");
    assert_eq!(me.down(mon, WAIT).await, Some(ExitReason::Killed));
    assert_eq!(node.whereis("t"), None, "the registered name is gone");
    assert!(!node.is_alive(pid));
}

/// `m:loop()` on `code_switch`: the process moves to each new current version, 5 loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed000_code_switch_moves_to_current_version() {
    let node = support::node();
    let me = node.external();
    let files = [module("seed000_v1"), module("seed000_v2")];
    node.code().load(&files[0]).await.expect("load");
    let pid = node.spawn("seed000", "loop", &()).expect("spawn");
    let mon = me.monitor(pid);
    let mut instance = node
        .code()
        .module("seed000")
        .unwrap()
        .current
        .unwrap()
        .instance;
    for i in 1..=5 {
        let next = &files[i % 2];
        let info = node.code().load_purging(next).await.expect("load");
        let new = info.current.unwrap();
        assert!(new.instance > instance);
        instance = new.instance;
        // Before the switch the process is in old code; after it, in the new current one.
        assert!(node.code().check_process_code(pid, "seed000"));
        me.send(pid, &Req::CodeSwitch);
        let pong = ping(&me, pid).await;
        assert_eq!(
            pong.version, new.version,
            "load {i}: runs the new version's code"
        );
        assert!(
            !node.code().check_process_code(pid, "seed000"),
            "load {i}: left the old code"
        );
        let running = node.process_info(pid).unwrap().running;
        assert_eq!(
            running,
            vec![("seed000".to_string(), new.version.clone(), instance)]
        );
    }
    assert!(
        me.recv_match(QUIET, |m| matches!(m, Message::Down { .. }))
            .await
            .is_none(),
        "survived 5 loads"
    );
    assert!(node.is_alive(pid));
    me.demonitor(mon);
}

/// `soft_purge` refuses while a process runs the old code, and kills nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed000_soft_purge_refuses_while_old_code_runs() {
    let node = support::node();
    let me = node.external();
    node.code().load(module("seed000_v1")).await.unwrap();
    let pid = node.spawn("seed000", "do_loop", &()).unwrap();
    let mon = me.monitor(pid);
    node.code().load(module("seed000_v2")).await.unwrap();
    assert!(
        !node.code().soft_purge("seed000").await.unwrap(),
        "refused: old code is running"
    );
    assert!(
        node.code().module("seed000").unwrap().old.is_some(),
        "nothing changed"
    );
    assert_eq!(ping(&me, pid).await.version, "1");
    assert!(
        me.recv_match(QUIET, |m| matches!(m, Message::Down { .. }))
            .await
            .is_none(),
        "nothing killed"
    );

    // Once the process leaves, soft_purge frees the old version.
    me.send(pid, &Req::Stop);
    assert_eq!(me.down(mon, WAIT).await, Some(ExitReason::Normal));
    assert!(node.code().soft_purge("seed000").await.unwrap());
    assert!(node.code().module("seed000").unwrap().old.is_none());
    assert!(
        node.code().pinned().is_empty(),
        "freed, not pinned: {:?}",
        node.code().pinned()
    );
}

/// A plain load while old code exists is refused with `not_purged`, naming the holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed000_plain_load_refused_not_purged() {
    let node = support::node();
    let me = node.external();
    node.code().load(module("seed000_v1")).await.unwrap();
    let pid = node.spawn("seed000", "do_loop", &()).unwrap();
    let mon = me.monitor(pid);
    node.code().load(module("seed000_v2")).await.unwrap();
    let before = node.code().module("seed000").unwrap();
    let err = node
        .code()
        .load(module("seed000_v1"))
        .await
        .expect_err("not_purged");
    match &err {
        CodeError::NotPurged {
            module, processes, ..
        } => {
            assert_eq!(module, "seed000");
            assert_eq!(processes, &vec![pid]);
        }
        other => panic!("expected NotPurged, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("not_purged") && text.contains(&pid.to_string()),
        "{text}"
    );
    let after = node.code().module("seed000").unwrap();
    assert_eq!(
        before.current.unwrap().instance,
        after.current.unwrap().instance,
        "nothing changed"
    );
    assert_eq!(before.old.unwrap().instance, after.old.unwrap().instance);
    assert_eq!(
        me.down(mon, Duration::from_millis(100)).await,
        None,
        "nothing killed"
    );
    assert_eq!(ping(&me, pid).await.version, "1");
}

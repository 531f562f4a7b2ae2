//! A purge never unmaps code a node thread is running (issue 10, part 1): for every path on
//! which a thread can be held inside a version's code (the `spin` fixture spins there
//! without awaiting), a purge of that version pins it with a reason instead, the code runs
//! to its end, and `retry_pinned` then frees the version for real.
//!
//! Every test waits on what the fixture reports (a message to `spin_watch`, a marker
//! file), never on a fixed sleep.

use std::time::Duration;

use hotswap_runtime::{ExitReason, ExternalProcess, Node, Pid, StartError, StartOpts};
use serde::{Deserialize, Serialize};

use crate::support::{self, module, TempDir, WAIT};

/// Mirror of `modules/common/spin.rs` `Req`.
#[derive(Serialize, Deserialize, Debug, Clone)]
enum Req {
    Spin(u64),
    Vsn,
    SpinInTerminate(u64),
    SpinInCodeChange(String, u64),
}

/// How long a purge waits for running code before it pins.
const PURGE_TIMEOUT: Duration = Duration::from_millis(500);

/// A node whose purges give up after [`PURGE_TIMEOUT`], with `spin` v1 loaded, and a
/// host-side process registered as `spin_watch` that hears what the fixture starts.
async fn setup() -> (Node, ExternalProcess) {
    let node = support::node_with(PURGE_TIMEOUT);
    let me = node.external();
    node.register("spin_watch", me.pid()).unwrap();
    node.code().load(module("spin_v1")).await.unwrap();
    (node, me)
}

/// Wait until the fixture reports `what`.
async fn heard(me: &ExternalProcess, what: &str) {
    let got = me
        .recv_match(WAIT, |m| m.decode::<String>().is_ok_and(|s| s == what))
        .await;
    assert!(got.is_some(), "the fixture never reported {what:?}");
}

/// Load v2 (v1 becomes old) and purge v1 while a thread runs its code: pinned, with the
/// reason. Returns the purge's killed processes and the reason.
async fn purge_v1_pinned(node: &Node) -> (Vec<Pid>, String) {
    node.code().load(module("spin_v2")).await.unwrap();
    let r = node.code().purge("spin").await.unwrap();
    assert_eq!(r.version.as_deref(), Some("1"));
    let reason = r
        .pinned
        .clone()
        .unwrap_or_else(|| panic!("v1 must be pinned, not unmapped under running code: {r:?}"));
    let pinned = node.code().pinned();
    assert_eq!(pinned.len(), 1, "{pinned:?}");
    assert_eq!(
        (
            pinned[0].module.as_str(),
            pinned[0].version.version.as_str()
        ),
        ("spin", "1")
    );
    assert_eq!(pinned[0].reason, reason);
    (r.killed, reason)
}

/// Once the code has returned, the pinned version is unmapped by `retry_pinned`.
async fn retry_frees(node: &Node) {
    let freed = node.code().freed_count();
    assert_eq!(
        node.code().retry_pinned().await,
        1,
        "{:?}",
        node.code().pinned()
    );
    assert!(node.code().pinned().is_empty());
    assert_eq!(node.code().freed_count(), freed + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_pins_while_native_process_runs_module_code() {
    let (node, me) = setup().await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.spawn_native(move |ctx| async move {
        let r = ctx.function::<u64, String>("spin", "busy").call(&2000);
        let _ = tx.send(r);
    })
    .unwrap();
    heard(&me, "busy v1").await;

    let (killed, reason) = purge_v1_pinned(&node).await;
    assert!(killed.is_empty(), "a call does not bind: {killed:?}");
    assert!(
        reason.contains("1 call(s) still running inside it"),
        "{reason}"
    );

    // The call runs to its end on v1 and answers.
    assert_eq!(rx.await.unwrap(), Ok("v1 spun 2000 ms".to_string()));
    retry_frees(&node).await;
}

/// The same call from module code (a process of another module, `misbehave`): the
/// caller's own poll keeps the thread inside module code, which the purge waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_pins_while_module_process_runs_a_function() {
    let (node, me) = setup().await;
    node.code().load(module("misbehave")).await.unwrap();
    let arg = ("spin".to_string(), "busy".to_string(), 1500u64);
    node.spawn("misbehave", "call_function", &arg).unwrap();
    heard(&me, "busy v1").await;

    let (killed, reason) = purge_v1_pinned(&node).await;
    assert!(
        killed.is_empty(),
        "the caller runs misbehave, not spin: {killed:?}"
    );
    assert!(reason.contains("inside module code"), "{reason}");

    heard(&me, "Ok(\"v1 spun 1500 ms\")").await;
    retry_frees(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_pins_while_gen_server_callback_spins() {
    let (node, me) = setup().await;
    let pid = node
        .start_server("spin", &0u64, StartOpts::default())
        .await
        .unwrap();
    let n = node.clone();
    let call = tokio::spawn(async move { n.call::<_, String>(pid, &Req::Spin(1500), WAIT).await });
    heard(&me, "handle_call v1").await;

    let (killed, reason) = purge_v1_pinned(&node).await;
    assert!(
        killed.is_empty(),
        "a callback that has not waited does not bind: {killed:?}"
    );
    assert!(reason.contains("still running inside it"), "{reason}");

    assert_eq!(call.await.unwrap(), Ok("v1".to_string()));
    // The idle server's state becomes bytes, so nothing holds v1 any more.
    retry_frees(&node).await;
    let r: Result<String, _> = node.call(pid, &Req::Vsn, WAIT).await;
    assert_eq!(r, Ok("v2".to_string()), "the server migrated to v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_pins_while_terminate_spins() {
    let (node, me) = setup().await;
    let pid = node
        .start_server("spin", &0u64, StartOpts::default())
        .await
        .unwrap();
    let r: Result<String, _> = node.call(pid, &Req::SpinInTerminate(1500), WAIT).await;
    assert_eq!(r, Ok("v1".to_string()));
    let mon = me.monitor(pid);
    let n = node.clone();
    let stop = tokio::spawn(async move { n.stop_server(pid, ExitReason::Normal, WAIT).await });
    heard(&me, "terminate v1").await;

    let (killed, reason) = purge_v1_pinned(&node).await;
    assert_eq!(killed, vec![pid], "terminate binds the server to v1");
    assert!(reason.contains(&pid.to_string()), "{reason}");

    assert!(me.down(mon, WAIT).await.is_some(), "the server exits");
    let _ = stop.await.unwrap();
    retry_frees(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_pins_while_code_change_spins() {
    let (node, _me) = setup().await;
    let dir = TempDir::new("spin-code-change");
    let marker = dir.0.join("code_change_started");
    let pid = node
        .start_server("spin", &0u64, StartOpts::default())
        .await
        .unwrap();
    let req = Req::SpinInCodeChange(marker.display().to_string(), 1500);
    let r: Result<String, _> = node.call(pid, &req, WAIT).await;
    assert_eq!(r, Ok("v1".to_string()));
    // v2 current; v1 purged while the server is idle (its state kept as bytes).
    node.code().load(module("spin_v2")).await.unwrap();
    let r = node.code().purge("spin").await.unwrap();
    assert!(r.killed.is_empty() && r.pinned.is_none(), "{r:?}");

    // The next call migrates the state: v2's `code_change` spins.
    let n = node.clone();
    let call = tokio::spawn(async move { n.call::<_, String>(pid, &Req::Vsn, WAIT).await });
    wait_for_file(&marker).await;

    // v1 loaded again makes v2 old; purging v2 finds a thread in its `code_change`.
    node.code().load(module("spin_v1")).await.unwrap();
    let r = node.code().purge("spin").await.unwrap();
    assert_eq!(r.version.as_deref(), Some("2"));
    assert!(r.killed.is_empty(), "{r:?}");
    let reason = r.pinned.expect("v2 pinned while its code_change runs");
    assert!(reason.contains("still running inside it"), "{reason}");

    // The call is then handled by v2, which made the state.
    assert_eq!(call.await.unwrap(), Ok("v2".to_string()));
    let freed = node.code().freed_count();
    assert_eq!(node.code().retry_pinned().await, 1);
    assert_eq!(node.code().freed_count(), freed + 1);
    let r: Result<String, _> = node.call(pid, &Req::Vsn, WAIT).await;
    assert_eq!(r, Ok("v1".to_string()), "the server migrated to the new v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_pins_while_a_future_drop_spins() {
    let (node, me) = setup().await;
    let (pid, mon) = me.spawn_monitor("spin", "drop_spin", &1500u64).unwrap();
    heard(&me, "waiting v1").await;

    // The purge kills the process; dropping its future runs v1's destructor, which spins.
    let (killed, reason) = purge_v1_pinned(&node).await;
    assert_eq!(killed, vec![pid]);
    assert!(reason.contains(&pid.to_string()), "{reason}");
    heard(&me, "drop v1").await;

    assert_eq!(me.down(mon, WAIT).await, Some(ExitReason::Killed));
    retry_frees(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_pins_while_apply_runs_module_code() {
    let (node, me) = setup().await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pid = node
        .spawn_native(move |ctx| async move {
            let r = ctx.apply::<u64, String>("spin", "apply_busy", &1500).await;
            let _ = tx.send(r);
            let _ = ctx.recv().await;
        })
        .unwrap();
    let mon = me.monitor(pid);
    heard(&me, "apply_busy v1").await;

    // `apply` binds the caller to the version it runs: the purge kills it and pins v1.
    let (killed, reason) = purge_v1_pinned(&node).await;
    assert_eq!(killed, vec![pid]);
    assert!(reason.contains(&pid.to_string()), "{reason}");

    assert_eq!(rx.await.unwrap(), Ok("v1 spun 1500 ms".to_string()));
    assert_eq!(me.down(mon, WAIT).await, Some(ExitReason::Killed));
    retry_frees(&node).await;
}

/// A supervisor's tree from a module comes from its `init`, a synchronous function the
/// supervisor (a native process) calls: counted like any call from host code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_pins_while_supervisor_init_spins() {
    let (node, _me) = setup().await;
    let dir = TempDir::new("spin-sup-init");
    let marker = dir.0.join("init_started");
    let n = node.clone();
    let arg = (marker.display().to_string(), 1500u64);
    let start = tokio::spawn(async move { n.start_supervisor_module("spin", &arg, None).await });
    wait_for_file(&marker).await;

    let (killed, reason) = purge_v1_pinned(&node).await;
    assert!(killed.is_empty(), "{killed:?}");
    assert!(
        reason.contains("1 call(s) still running inside it"),
        "{reason}"
    );

    let sup = start.await.unwrap().unwrap().expect("a tree, not ignore");
    assert!(node.is_alive(sup));
    retry_frees(&node).await;
}

/// Wait until a fixture has created `path`.
async fn wait_for_file(path: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} was never created",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A start whose `init` is still busy in native code when its time limit passes says so
/// (the server is alive, holds its name, runs v1, and what to do), instead of claiming the
/// server was killed (issue 10, part 6). The plain killed case is in `gen_server.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_timeout_says_the_server_still_runs_native_code() {
    let (node, me) = setup().await;
    let opts = StartOpts {
        name: Some("spinner".into()),
        timeout: Some(Duration::from_millis(50)),
    };
    let err = node.start_server("spin", &1500u64, opts).await.unwrap_err();
    let StartError::Timeout {
        after,
        running: Some(r),
    } = &err
    else {
        panic!("expected a timeout with the server still running, got {err:?}");
    };
    assert_eq!(*after, Duration::from_millis(50));
    assert_eq!(
        (r.name.as_deref(), r.module.as_str(), r.version.as_str()),
        (Some("spinner"), "spin", "1")
    );
    let pid = r.pid;
    // What it says is true: alive, still named, on v1.
    assert!(node.is_alive(pid));
    assert_eq!(node.whereis("spinner"), Some(pid));
    let text = err.to_string();
    for part in [
        "still running",
        &pid.to_string(),
        "\"spinner\"",
        "`spin` version 1",
        "await point",
        "pins it",
        "What to do",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert!(!text.contains("was killed"), "{text}");
    heard(&me, "init v1").await;

    // When init returns, the kill takes effect and the name is free again.
    let mon = me.monitor(pid);
    assert_eq!(me.down(mon, WAIT).await, Some(ExitReason::Killed));
    assert_eq!(node.whereis("spinner"), None);
}

//! Seed 002 as a gen_server: the next message after a load runs the new version,
//! `code_change` migrates the state, and a changed message format needs a compatible clause.

use hotswap_runtime::compat::{Level, Verdict};
use hotswap_runtime::{CodeError, ExitReason, ExternalProcess, LoadOptions, Pid, StartOpts};
use serde::{Deserialize, Serialize};

use crate::support::{self, module, WAIT};

/// Mirror of `modules/common/count_server.rs` `Arg`.
#[derive(Serialize, Deserialize, Debug)]
struct Arg {
    listener: Pid,
    interval_ms: u64,
}

/// Mirror of `Report`.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Report {
    pid: Pid,
    n: u64,
    vsn: String,
}

/// The tick of versions 1-3 (`:increment`).
#[derive(Serialize, Deserialize, Debug)]
enum OldTick {
    Increment,
}

/// Mirror of the state.
#[derive(Serialize, Deserialize, Debug)]
struct CountServer {
    n: u64,
}

async fn report(me: &ExternalProcess, pid: Pid) -> Report {
    me.recv_match(WAIT, |m| m.decode::<Report>().is_ok_and(|r| r.pid == pid))
        .await
        .unwrap_or_else(|| panic!("no report from {pid}"))
        .decode()
        .unwrap()
}

async fn tick(me: &ExternalProcess, pid: Pid) -> Report {
    me.send(pid, &OldTick::Increment);
    report(me, pid).await
}

async fn start(node: &hotswap_runtime::Node, me: &ExternalProcess, interval_ms: u64) -> Pid {
    node.start_server(
        "count_server",
        &Arg {
            listener: me.pid(),
            interval_ms,
        },
        StartOpts::default(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed002_genserver_next_message_runs_new_code() {
    let node = support::node();
    let me = node.external();
    node.code().load(module("count_server_v1")).await.unwrap();
    // The seed's CountServer ticks itself with send_after.
    let pid = start(&node, &me, 2).await;
    let mut last = report(&me, pid).await;
    for _ in 0..3 {
        let r = report(&me, pid).await;
        assert_eq!((r.n - last.n, r.vsn.as_str()), (1, "1"), "v1 ticks +1");
        last = r;
    }
    node.code().load(module("count_server_v2")).await.unwrap();
    // Ticks already handled by v1 count +1; the first one after the load counts +2, in the
    // same process: no restart.
    let first_v2 = loop {
        let r = report(&me, pid).await;
        if r.vsn == "2" {
            break r;
        }
        assert_eq!(r.n - last.n, 1);
        last = r;
    };
    assert_eq!(
        first_v2.n - last.n,
        2,
        "the next message after the load runs v2"
    );
    let r = report(&me, pid).await;
    assert_eq!((r.n - first_v2.n, r.vsn.as_str()), (2, "2"));
    assert!(node.is_alive(pid));
    // The old version is not running anything: the idle server is not bound to it.
    assert!(!node.code().check_process_code(pid, "count_server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed002_code_change_makes_state_even() {
    let node = support::node();
    let me = node.external();
    node.code().load(module("count_server_v1")).await.unwrap();
    let pid = start(&node, &me, 0).await;
    for _ in 0..3 {
        tick(&me, pid).await;
    }
    node.code().load(module("count_server_v2")).await.unwrap();
    assert_eq!(
        tick(&me, pid).await.n,
        5,
        "v2 adds 2 to an odd count: odd stays odd"
    );
    assert_eq!(tick(&me, pid).await.n, 7);

    node.sys().suspend(pid).await.unwrap();
    node.code().purge("count_server").await.unwrap();
    node.code().load(module("count_server_v3")).await.unwrap();
    node.sys()
        .change_code(pid, "count_server", "2", None)
        .await
        .unwrap();
    let st: CountServer = node.sys().get_state(pid).await.unwrap();
    assert_eq!(st.n, 6, "v3's code_change made the count even");
    node.sys().resume(pid).await.unwrap();
    for want in [8, 10, 12] {
        let r = tick(&me, pid).await;
        assert_eq!((r.n, r.vsn.as_str()), (want, "3"));
    }
}

/// v1 ticks itself (old message form); v4/v5 are loaded while a v1 tick is pending (v4
/// only by force: the compatibility check refuses it, see
/// `seed002_changed_message_format_refused_at_load`).
async fn load_while_old_tick_pending(
    new: &str,
    force: bool,
) -> (
    hotswap_runtime::Node,
    ExternalProcess,
    Pid,
    Report,
    hotswap_runtime::Ref,
) {
    let node = support::node();
    let me = node.external();
    node.code().load(module("count_server_v1")).await.unwrap();
    let pid = start(&node, &me, 20).await;
    let r = report(&me, pid).await;
    // Each v1 tick schedules the next one, in v1's message form. Freeze the server so
    // that the load certainly happens before it handles the pending tick.
    node.sys().suspend(pid).await.unwrap();
    node.code()
        .load_with(
            module(new),
            LoadOptions {
                force,
                ..LoadOptions::default()
            },
        )
        .await
        .unwrap();
    let mref = me.monitor(pid);
    node.sys().resume(pid).await.unwrap();
    (node, me, pid, r, mref)
}

/// The same v4 load as above, not forced: refused before anything switches, with a
/// message naming the callback, the old form, the new type and the fix; the server goes
/// on counting on v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed002_changed_message_format_refused_at_load() {
    let node = support::node();
    let me = node.external();
    node.code().load(module("count_server_v1")).await.unwrap();
    let pid = start(&node, &me, 0).await;
    assert_eq!(tick(&me, pid).await.n, 1);
    let err = node
        .code()
        .load(module("count_server_v4"))
        .await
        .expect_err("v4 cannot read v1's queued ticks");
    let text = err.to_string();
    let CodeError::Incompatible { report } = &err else {
        panic!("expected incompatible, got {err}")
    };
    assert_eq!(report.incompatible.len(), 1, "{text}");
    let f = &report.incompatible[0];
    assert_eq!(
        (f.callback.as_str(), f.level),
        ("handle_info", Level::Upgrade)
    );
    assert!(f.written_type.ends_with("OldTick"), "{text}");
    assert!(f.reader_type.ends_with("NewTick"), "{text}");
    for want in [
        "handle_info",
        "`enum OldTick { Increment }`",
        "`enum NewTick { Increment(u64) }`",
        "variant `Increment` is written as a unit variant `Increment`, read as a newtype variant `Increment(u64)`",
        "decode_compat::<NewTick, OldTick>",
        "Accepts::new().info::<OldTick>()",
        "--force",
    ] {
        assert!(text.contains(want), "missing {want:?} in: {text}");
    }
    // Nothing switched: v1 is still current and the server still counts +1.
    let info = node.code().module("count_server").unwrap();
    assert_eq!(info.current.unwrap().version, "1");
    assert!(info.old.is_none());
    assert_eq!(
        tick(&me, pid).await,
        Report {
            pid,
            n: 2,
            vsn: "1".into()
        }
    );
}

/// v5 keeps the backward-compatible clause and declares it: the check (static and the dry
/// run on the live state) passes, and a plain load is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed002_compat_clause_passes_check() {
    let node = support::node();
    let me = node.external();
    node.code().load(module("count_server_v1")).await.unwrap();
    let pid = start(&node, &me, 0).await;
    tick(&me, pid).await;
    let c = node.code().check(module("count_server_v5")).await.unwrap();
    let r = c.report.as_ref().expect("v1 and v5 describe themselves");
    assert_eq!(r.verdict(), Verdict::Compatible, "{}", r.to_text());
    assert!(
        r.compatible.iter().any(|c| c == "handle_info (upgrade)"),
        "{}",
        r.to_text()
    );
    // The downgrade is reported: v1 could not read v5's new ticks.
    assert!(
        r.warnings
            .iter()
            .any(|w| w.callback == "handle_info" && w.level == Level::Downgrade),
        "{}",
        r.to_text()
    );
    assert_eq!(c.dry_run.len(), 1, "{c:?}");
    assert_eq!(
        (c.dry_run[0].pid, c.dry_run[0].error.as_deref()),
        (pid, None)
    );
    assert!(!c.refuses());
    // The same check refuses v4, and nothing was loaded by either check.
    let c4 = node.code().check(module("count_server_v4")).await.unwrap();
    assert!(c4.refuses());
    assert_eq!(
        node.code()
            .module("count_server")
            .unwrap()
            .current
            .unwrap()
            .version,
        "1"
    );
    node.code().load(module("count_server_v5")).await.unwrap();
    assert_eq!(
        tick(&me, pid).await,
        Report {
            pid,
            n: 3,
            vsn: "5".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed002_changed_message_format_crashes_without_compat_clause() {
    let (node, me, pid, _, mref) = load_while_old_tick_pending("count_server_v4", true).await;
    let reason = me
        .down(mref, WAIT)
        .await
        .expect("v4 crashes on the old tick");
    match &reason {
        ExitReason::FunctionClause(why) => {
            assert!(why.contains("handle_info"), "{why}");
            assert!(why.contains("NewTick"), "names the expected type: {why}");
            assert!(
                why.contains("Increment"),
                "names what did not decode: {why}"
            );
        }
        other => panic!("expected function_clause, got {other}"),
    }
    assert!(!node.is_alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed002_compat_clause_keeps_old_messages_working() {
    let (node, me, pid, last, _) = load_while_old_tick_pending("count_server_v5", false).await;
    // Every v1 report after `last` was +1; the first v5 one handles the old tick as +2.
    let mut prev = last;
    let first = loop {
        let r = report(&me, pid).await;
        if r.vsn == "5" {
            break r;
        }
        prev = r;
    };
    assert_eq!(first.n - prev.n, 2, "the old `Increment` still counts");
    // Then v5's own ticks, in the new form.
    let r = report(&me, pid).await;
    assert_eq!((r.n - first.n, r.vsn.as_str()), (2, "5"));
    assert!(node.is_alive(pid));
}

//! `sys`: change_code refusals and failures keep the process alive, suspended, on its old
//! state.

use hotswap_runtime::SysError;

use crate::gs::{self, Req, State};
use crate::support::{module, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_change_code_failure_keeps_old_state_suspended() {
    let node = gs::node().await;
    let me = node.external();
    let pid = gs::start(&node, &gs::arg(&me)).await;
    let _: u64 = node.call(pid, &Req::Echo(1), WAIT).await.unwrap();
    let before: State = node.sys().get_state(pid).await.unwrap();
    assert_eq!((before.count, before.vsn.as_str()), (1, "1"));

    node.sys().suspend(pid).await.unwrap();
    node.cast(pid, &Req::Echo(2)); // waits in the mailbox
    node.code().load(module("gs_test_v2")).await.unwrap();

    for (extra, cause) in [("error", "nope"), ("panic", "code_change exploded")] {
        let err = node
            .sys()
            .change_code(pid, "gs_test", "1", Some(hotswap::codec::encode(extra)))
            .await
            .expect_err("code_change fails");
        match &err {
            SysError::Failed(m) => {
                assert!(m.contains(cause), "names the cause: {m}");
                assert!(m.contains("keeps its old state"), "{m}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(
            node.is_alive(pid),
            "the process survives a failed code_change"
        );
        let st = node.sys().get_status(pid).await.unwrap();
        assert!(st.suspended, "and stays suspended");
        assert_eq!(
            st.version.as_deref(),
            Some("1"),
            "on the old version's state"
        );
        let now: State = node.sys().get_state(pid).await.unwrap();
        assert_eq!(now, before, "with the old state");
    }

    // A good code_change then works, and the queued cast runs after resume.
    node.sys()
        .change_code(pid, "gs_test", "1", Some(hotswap::codec::encode("fine")))
        .await
        .unwrap();
    node.sys().resume(pid).await.unwrap();
    let n: u64 = node.call(pid, &Req::Count, WAIT).await.unwrap();
    assert_eq!(n, 3, "the first call, the queued cast, and this call");
    let st: State = node.sys().get_state(pid).await.unwrap();
    assert_eq!(st.vsn, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_change_code_refused_when_not_suspended() {
    let node = gs::node().await;
    let me = node.external();
    let pid = gs::start(&node, &gs::arg(&me)).await;
    node.code().load(module("gs_test_v2")).await.unwrap();
    let before: State = node.sys().get_state(pid).await.unwrap();
    let err = node
        .sys()
        .change_code(pid, "gs_test", "1", None)
        .await
        .expect_err("refused while running");
    match &err {
        SysError::Refused(m) => assert!(m.contains("suspended"), "says what to do: {m}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    let after: State = node.sys().get_state(pid).await.unwrap();
    assert_eq!(after, before, "nothing happened");
    assert!(!node.sys().get_status(pid).await.unwrap().suspended);
    let v: u64 = node.call(pid, &Req::Echo(9), WAIT).await.unwrap();
    assert_eq!(v, 9, "and it still serves");

    // A wrong module name is refused too, and bad targets name themselves.
    node.sys().suspend(pid).await.unwrap();
    let err = node
        .sys()
        .change_code(pid, "other", "1", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SysError::Refused(m) if m.contains("gs_test")),
        "{err:?}"
    );
    let err = node.sys().suspend("nobody").await.unwrap_err();
    assert!(matches!(err, SysError::NoProc(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_replace_state_statistics_and_status() {
    let node = gs::node().await;
    let me = node.external();
    let pid = gs::start(&node, &gs::arg(&me)).await;
    assert_eq!(node.sys().statistics(pid, None).await.unwrap(), None);
    node.sys().statistics(pid, Some(true)).await.unwrap();
    for i in 0..3 {
        let _: u64 = node.call(pid, &Req::Echo(i), WAIT).await.unwrap();
    }
    let s = node.sys().statistics(pid, None).await.unwrap().unwrap();
    assert_eq!((s.messages_in, s.messages_out), (3, 3));

    let new: State = node
        .sys()
        .replace_state(pid, |mut s: State| {
            s.count = 100;
            s
        })
        .await
        .unwrap();
    assert_eq!(new.count, 100);
    let n: u64 = node.call(pid, &Req::Count, WAIT).await.unwrap();
    assert_eq!(n, 101, "the server continues from the replaced state");

    // A panicking function leaves the state alone.
    let err = node
        .sys()
        .replace_state(pid, |_: State| -> State { panic!("no") })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SysError::Failed(m) if m.contains("panicked")),
        "{err:?}"
    );
    let n: u64 = node.call(pid, &Req::Count, WAIT).await.unwrap();
    assert_eq!(n, 102);

    let st = node.sys().get_status(pid).await.unwrap();
    assert_eq!(
        (st.module.as_str(), st.version.as_deref()),
        ("gs_test", Some("1"))
    );
    assert!(
        st.state.contains("\"count\":102"),
        "state shown as JSON: {}",
        st.state
    );
}

//! Seed 001: `sys:suspend` → load → `sys:change_code` → `sys:resume` on the
//! `sync_code_reload` gen_server.

use hotswap_runtime::StartOpts;
use serde::{Deserialize, Serialize};

use crate::support::{self, module, WAIT};

/// Mirror of `modules/common/sync_code_reload.rs` `State`.
#[derive(Serialize, Deserialize, Debug, Default)]
struct State {
    handled: u64,
    #[serde(default)]
    vsn: String,
    #[serde(default)]
    old_vsn: Option<String>,
    #[serde(default)]
    extra: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed001_suspend_change_code_resume() {
    let node = support::node();
    node.code()
        .load(module("sync_code_reload_v1"))
        .await
        .unwrap();
    let pid = node
        .start_server("sync_code_reload", &(), StartOpts::default())
        .await
        .unwrap();
    let r: String = node.call(pid, "before", WAIT).await.unwrap();
    assert_eq!(r, "ok from 1");

    node.sys().suspend(pid).await.unwrap();
    // While suspended, casts and calls wait in the mailbox.
    const CASTS: u64 = 40;
    for i in 0..CASTS {
        node.cast(pid, &format!("cast {i}"));
    }
    let node2 = node.clone();
    let waiting_call =
        tokio::spawn(async move { node2.call::<_, String>(pid, "during", WAIT).await.unwrap() });
    let status = node.sys().get_status(pid).await.unwrap();
    assert!(status.suspended);
    let st: State = node.sys().get_state(pid).await.unwrap();
    assert_eq!(st.handled, 1, "nothing handled while suspended");

    // Load the new version: the suspended server does not move until change_code.
    node.code()
        .load(module("sync_code_reload_v2"))
        .await
        .unwrap();
    let extra = hotswap::codec::encode("upgrade-extra");
    node.sys()
        .change_code(pid, "sync_code_reload", "1", Some(extra))
        .await
        .unwrap();
    let st: State = node.sys().get_state(pid).await.unwrap();
    assert_eq!(st.vsn, "2", "the new state is version 2's");
    assert_eq!(st.old_vsn.as_deref(), Some("1"), "code_change got OldVsn");
    assert_eq!(
        st.extra.as_deref(),
        Some("upgrade-extra"),
        "code_change got Extra"
    );
    assert_eq!(st.handled, 1, "still nothing handled before resume");

    node.sys().resume(pid).await.unwrap();
    assert_eq!(
        waiting_call.await.unwrap(),
        "ok from 2",
        "the waiting call ran on v2"
    );
    let r: String = node.call(pid, "after", WAIT).await.unwrap();
    assert_eq!(r, "ok from 2");
    let st: State = node.sys().get_state(pid).await.unwrap();
    assert_eq!(
        st.handled,
        1 + CASTS + 2,
        "every message sent while suspended was handled"
    );
    assert_eq!(st.vsn, "2");
}

//! Mirrors of `modules/common/gs_test.rs` and helpers for the gen_server and sys tests.

use hotswap_runtime::{ExternalProcess, Node, Pid, StartOpts};
use serde::{Deserialize, Serialize};

use crate::support::{module, WAIT};

/// Mirror of `InitMode`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum InitMode {
    Ok,
    OkTimeout(u64),
    Ignore,
    Stop(String),
    Panic,
    Sleep(u64),
}

/// Mirror of `Arg`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Arg {
    pub listener: Pid,
    pub trap_exit: bool,
    pub init: InitMode,
}

/// Mirror of `Req`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub enum Req {
    Echo(u64),
    Sleep(u64),
    Defer,
    Release(u64),
    Stop(String),
    StopReply(String),
    Panic,
    Count,
}

/// Mirror of `Event`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Event {
    Terminated { reason: String, vsn: String },
    Info(String),
}

/// Mirror of `Caller`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Caller {
    pub pid: Pid,
    pub tag: u64,
}

/// Mirror of `State`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct State {
    pub listener: Pid,
    pub count: u64,
    pub deferred: Option<Caller>,
    pub vsn: String,
}

/// A node with `gs_test` v1 loaded.
pub async fn node() -> Node {
    let node = crate::support::node();
    node.code().load(module("gs_test_v1")).await.unwrap();
    node
}

pub fn arg(me: &ExternalProcess) -> Arg {
    Arg {
        listener: me.pid(),
        trap_exit: false,
        init: InitMode::Ok,
    }
}

pub async fn start(node: &Node, a: &Arg) -> Pid {
    node.start_server("gs_test", a, StartOpts::default())
        .await
        .unwrap()
}

/// The next `Terminated` event, if one comes within `WAIT`.
pub async fn terminated(me: &ExternalProcess) -> Option<String> {
    let m = me
        .recv_match(WAIT, |m| {
            matches!(m.decode::<Event>(), Ok(Event::Terminated { .. }))
        })
        .await?;
    match m.decode::<Event>() {
        Ok(Event::Terminated { reason, .. }) => Some(reason),
        _ => None,
    }
}

/// Whether a `Terminated` event is already in the mailbox (no waiting: events a process
/// sent before it exited arrive before its `DOWN`).
pub async fn terminated_now(me: &ExternalProcess) -> bool {
    me.recv_match(std::time::Duration::ZERO, |m| {
        matches!(m.decode::<Event>(), Ok(Event::Terminated { .. }))
    })
    .await
    .is_some()
}

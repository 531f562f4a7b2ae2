//! `gen_server` and `sys` on the host side: the server loop, and the API host code uses.

mod api;

use std::time::Duration;

use hotswap::{ExitReason, Pid};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use api::{
    CallError, ServerRef, ServerStatus, StartError, StartOpts, Statistics, SysError,
    DEFAULT_TIMEOUT,
};

use crate::Node;

/// The `sys` operations on a node's processes; see [`Node::sys`].
#[derive(Debug, Clone, Copy)]
pub struct Sys<'a> {
    node: &'a Node,
    timeout: Duration,
}

impl Node {
    /// Start the gen_server of `module` (its current version) with `arg` for `init`, and
    /// wait until `init` has returned.
    pub async fn start_server<A: Serialize + ?Sized>(
        &self,
        module: &str,
        arg: &A,
        opts: StartOpts,
    ) -> Result<Pid, StartError> {
        let _ = (module, hotswap::codec::encode(arg), opts);
        Err(StartError::Spawn("not implemented yet".into()))
    }

    /// `gen_server:call`: send `req` and wait up to `timeout` for the reply.
    pub async fn call<Q: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        to: impl Into<ServerRef>,
        req: &Q,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let _ = (to.into(), hotswap::codec::encode(req));
        Err(CallError::Timeout(timeout))
    }

    /// `gen_server:cast`: send `msg` and return at once (even if there is no such server).
    pub fn cast<Q: Serialize + ?Sized>(&self, to: impl Into<ServerRef>, msg: &Q) {
        let _ = (to.into(), hotswap::codec::encode(msg));
    }

    /// `gen_server:stop`: the server runs `terminate(reason)` (trapping exits or not) and
    /// exits; returns once it is gone with that reason.
    pub async fn stop_server(
        &self,
        to: impl Into<ServerRef>,
        reason: ExitReason,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let _ = (to.into(), reason);
        Err(CallError::Timeout(timeout))
    }

    /// The `sys` operations, with the default 5 s timeout.
    pub fn sys(&self) -> Sys<'_> {
        Sys {
            node: self,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Sys<'_> {
    /// The same operations with another timeout.
    pub fn timeout(self, timeout: Duration) -> Self {
        Sys { timeout, ..self }
    }

    fn todo(&self) -> SysError {
        let _ = self.node;
        SysError::Timeout(self.timeout)
    }

    /// `sys:suspend`: the process handles only system messages until resumed; ordinary
    /// messages (calls and casts too) wait in its mailbox.
    pub async fn suspend(&self, to: impl Into<ServerRef>) -> Result<(), SysError> {
        let _ = to.into();
        Err(self.todo())
    }

    /// `sys:resume`.
    pub async fn resume(&self, to: impl Into<ServerRef>) -> Result<(), SysError> {
        let _ = to.into();
        Err(self.todo())
    }

    /// `sys:get_state`, as the encoded bytes (MessagePack with named fields).
    pub async fn get_state_raw(&self, to: impl Into<ServerRef>) -> Result<Vec<u8>, SysError> {
        let _ = to.into();
        Err(self.todo())
    }

    /// `sys:get_state`, decoded as `T`.
    pub async fn get_state<T: DeserializeOwned>(
        &self,
        to: impl Into<ServerRef>,
    ) -> Result<T, SysError> {
        let b = self.get_state_raw(to).await?;
        hotswap::codec::decode(&b).map_err(|e| SysError::Decode(e.to_string()))
    }

    /// `sys:replace_state`: the process waits while `f` computes its new state from the
    /// current one; returns the new state. If `f` panics, the state is unchanged.
    pub async fn replace_state<T: Serialize + DeserializeOwned>(
        &self,
        to: impl Into<ServerRef>,
        f: impl FnOnce(T) -> T,
    ) -> Result<T, SysError> {
        let _ = (to.into(), f);
        Err(self.todo())
    }

    /// `sys:change_code(P, Module, OldVsn, Extra)`: only while suspended. The current
    /// version of `module` builds the new state with its `code_change`; on failure the
    /// process keeps its old state and stays suspended.
    pub async fn change_code(
        &self,
        to: impl Into<ServerRef>,
        module: &str,
        old_vsn: &str,
        extra: Option<Vec<u8>>,
    ) -> Result<(), SysError> {
        let _ = (to.into(), module, old_vsn, extra);
        Err(self.todo())
    }

    /// `sys:get_status`.
    pub async fn get_status(&self, to: impl Into<ServerRef>) -> Result<ServerStatus, SysError> {
        let _ = to.into();
        Err(self.todo())
    }

    /// `sys:statistics`: `Some(true)` switches them on, `Some(false)` off, `None` reads
    /// them (`None` if they are off).
    pub async fn statistics(
        &self,
        to: impl Into<ServerRef>,
        on: Option<bool>,
    ) -> Result<Option<Statistics>, SysError> {
        let _ = (to.into(), on);
        Err(self.todo())
    }

    /// `sys:terminate`: the process runs `terminate(reason)` and exits.
    pub async fn terminate(
        &self,
        to: impl Into<ServerRef>,
        reason: ExitReason,
    ) -> Result<(), SysError> {
        let _ = (to.into(), reason);
        Err(self.todo())
    }
}

//! `gen_server` and `sys` on the host side: the server loop ([`run`]), the states it
//! keeps ([`state`]), and the API host code uses ([`Node::start_server`](crate::Node::start_server), [`Node::call`](crate::Node::call),
//! [`Node::sys`](crate::Node::sys)).
//!
//! Host code is not a process, so each operation of the API runs in a short-lived native
//! process that uses the SDK's client functions: one protocol, one implementation.

#[cfg(test)]
mod budget;
mod run;
mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hotswap::sys as hsys;
use hotswap::{Ctx, ExitReason, Pid};
use hotswap_abi as abi;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use hotswap::gen_server::{CallError, ServerRef, StartError, StartOpts, DEFAULT_TIMEOUT};
pub use hotswap::sys::{ServerStatus, Statistics, SysError};

use crate::behaviour::in_process;
use crate::process::NodeInner;
use crate::process::{Body, Process};
pub(crate) use state::{Slot, StateCell, StateCopy, StatePtr};

/// Why `start_server` could not even spawn.
pub(crate) enum StartFail {
    /// The name is taken by this pid.
    Taken(Pid),
    /// Anything else, said in words.
    Other(String),
}

impl NodeInner {
    /// Spawn the gen_server of `module` for `starter` (who gets the `init` result as a
    /// reply tagged `tag`), registered as `name`, linked/monitored per `flags`: its pid,
    /// the monitor reference and the version whose `init` runs.
    pub(crate) fn start_server(
        self: &Arc<Self>,
        starter: &Process,
        module: &str,
        arg: &[u8],
        name: Option<&str>,
        flags: u32,
        tag: u64,
    ) -> Result<(Pid, u64, String), StartFail> {
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StartFail::Other("the node is stopping".into()));
        }
        let v = self.code.current(module).ok_or_else(|| {
            StartFail::Other(format!(
                "module `{module}` is not loaded: load it first (hotswap load <library>)"
            ))
        })?;
        if v.server.is_none() {
            return Err(StartFail::Other(format!(
                "module `{module}` (version {}) is not a gen_server: declare `gen_server: YourType` in its hotswap::module! invocation",
                v.vsn
            )));
        }
        let proc = Arc::new(Process::new(self.new_pid(), self.clone()));
        self.table.insert(proc.clone());
        if let Some(n) = name {
            if !self.register(n, proc.pid.0) {
                self.table.remove(proc.pid.0);
                let holder = self.registry.lock().get(n).unwrap_or(0);
                return Err(StartFail::Taken(Pid(holder)));
            }
        }
        let vsn = v.vsn.clone();
        let start = run::Start {
            version: v,
            module: module.to_string(),
            arg: arg.to_vec(),
            starter: starter.pid.0,
            tag,
            parent: (flags & abi::SPAWN_LINK != 0).then_some(starter.pid.0),
        };
        // Made (and listed by its version) atomically with the gate's closing: an upgrade
        // that closes it after this finds the server, one that closed it before holds
        // its init until the switch is decided, then runs it on the version current then.
        let p = proc.clone();
        let mut start = Some(start);
        let body = match self.gate.admit(module, || {
            run::ServerBody::new(p, start.take().expect("not taken yet"))
        }) {
            Some(b) => Body::Inline(b),
            None => {
                let p = proc.clone();
                let mut start = start.expect("not taken: the gate did not admit it");
                Body::Native(Box::pin(async move {
                    p.node.gate.pass(&p).await;
                    match p.node.code.current(&start.module) {
                        Some(v) if v.server.is_some() => start.version = v,
                        _ => {}
                    }
                    run::ServerBody::new(p, start).await
                }))
            }
        };
        let (pid, mref) = self.launch(Some(starter), proc, body, flags);
        Ok((pid, mref, vsn))
    }
}

/// The `sys` operations on a node's processes; see [`Node::sys`](crate::Node::sys).
#[derive(Debug, Clone, Copy)]
pub struct Sys<'a> {
    node: &'a Arc<NodeInner>,
    timeout: Duration,
}

impl<'a> Sys<'a> {
    /// The `sys` operations on `node`'s processes, waiting up to `timeout` for each.
    pub(crate) fn new(node: &'a Arc<NodeInner>, timeout: Duration) -> Self {
        Sys { node, timeout }
    }

    /// The same operations with another timeout.
    pub fn timeout(self, timeout: Duration) -> Self {
        Sys { timeout, ..self }
    }

    async fn run<T, F, Fut>(&self, f: F) -> Result<T, SysError>
    where
        T: Send + 'static,
        F: FnOnce(Ctx, Duration) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, SysError>> + Send + 'static,
    {
        let t = self.timeout;
        in_process(self.node, move |ctx| f(ctx, t))
            .await
            .map_err(SysError::Failed)?
    }

    /// `sys:suspend`: the process handles only system messages until resumed; ordinary
    /// messages (calls and casts too) wait in its mailbox.
    pub async fn suspend(&self, to: impl Into<ServerRef>) -> Result<(), SysError> {
        let to = to.into();
        self.run(move |c, t| async move { hsys::suspend(&c, to, t).await })
            .await
    }

    /// `sys:resume`.
    pub async fn resume(&self, to: impl Into<ServerRef>) -> Result<(), SysError> {
        let to = to.into();
        self.run(move |c, t| async move { hsys::resume(&c, to, t).await })
            .await
    }

    /// `sys:get_state`, as the encoded bytes (MessagePack with named fields).
    pub async fn get_state_raw(&self, to: impl Into<ServerRef>) -> Result<Vec<u8>, SysError> {
        let to = to.into();
        self.run(move |c, t| async move { hsys::get_state_raw(&c, to, t).await })
            .await
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
    pub async fn replace_state<T, F>(&self, to: impl Into<ServerRef>, f: F) -> Result<T, SysError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce(T) -> T + Send + 'static,
    {
        let to = to.into();
        self.run(move |c, t| async move { hsys::replace_state(&c, to, f, t).await })
            .await
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
        let (to, module, old_vsn) = (to.into(), module.to_string(), old_vsn.to_string());
        self.run(
            move |c, t| async move { hsys::change_code(&c, to, &module, &old_vsn, extra, t).await },
        )
        .await
    }

    /// `sys:get_status`.
    pub async fn get_status(&self, to: impl Into<ServerRef>) -> Result<ServerStatus, SysError> {
        let to = to.into();
        self.run(move |c, t| async move { hsys::get_status(&c, to, t).await })
            .await
    }

    /// `sys:statistics`: `Some(true)` switches them on, `Some(false)` off, `None` reads
    /// them (`None` if they are off).
    pub async fn statistics(
        &self,
        to: impl Into<ServerRef>,
        on: Option<bool>,
    ) -> Result<Option<Statistics>, SysError> {
        let to = to.into();
        self.run(move |c, t| async move { hsys::statistics(&c, to, on, t).await })
            .await
    }

    /// `sys:terminate`: the process runs `terminate(reason)` and exits.
    pub async fn terminate(
        &self,
        to: impl Into<ServerRef>,
        reason: ExitReason,
    ) -> Result<(), SysError> {
        let to = to.into();
        self.run(move |c, t| async move { hsys::terminate(&c, to, &reason, t).await })
            .await
    }
}

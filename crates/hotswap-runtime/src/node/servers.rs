//! The gen_server and `sys` operations as host code calls them: each runs in a short-lived
//! native process (see `behaviour::in_process`).

use std::time::Duration;

use hotswap::gen_server as gs;
use hotswap::{ExitReason, Pid};
use hotswap_abi as abi;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Node;
use crate::behaviour::in_process;
use crate::behaviour::server::{CallError, ServerRef, StartError, StartOpts, Sys, DEFAULT_TIMEOUT};
use crate::process::Payload;

impl Node {
    /// Start the gen_server of `module` (its current version) with `arg` for `init`, and
    /// wait until `init` has returned. The server has no parent.
    pub async fn start_server<A: Serialize + ?Sized>(
        &self,
        module: &str,
        arg: &A,
        opts: StartOpts,
    ) -> Result<Pid, StartError> {
        let (module, arg) = (module.to_string(), hotswap::codec::encode(arg));
        in_process(&self.inner, move |ctx| async move {
            gs::start_encoded(&ctx, &module, &arg, &opts, 0)
                .await
                .map(|r| r.0)
        })
        .await
        .map_err(StartError::Spawn)?
    }

    /// `gen_server:call`: send `req` and wait up to `timeout` for the reply.
    pub async fn call<Q: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        to: impl Into<ServerRef>,
        req: &Q,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let (to, req) = (to.into(), hotswap::codec::encode(req));
        let r = in_process(&self.inner, move |ctx| async move {
            gs::call_encoded(&ctx, to, &req, Some(timeout)).await
        })
        .await
        .map_err(|e| CallError::Exit(ExitReason::User(e)))??;
        hotswap::codec::decode(&r).map_err(|e| CallError::Decode(e.to_string()))
    }

    /// `gen_server:cast`: send `msg` and return at once (even if there is no such server).
    pub fn cast<Q: Serialize + ?Sized>(&self, to: impl Into<ServerRef>, msg: &Q) {
        let to = to.into();
        let pid = match &to {
            ServerRef::Pid(p) => Some(*p),
            ServerRef::Name(n) => self.whereis(n),
        };
        if let Some(pid) = pid {
            self.inner.post(
                0,
                pid.0,
                abi::MSG_CAST,
                0,
                Payload::from_vec(hotswap::codec::encode(msg)),
            );
        }
    }

    /// `gen_server:stop`: the server runs `terminate(reason)` (trapping exits or not) and
    /// exits; returns once it is gone with that reason.
    pub async fn stop_server(
        &self,
        to: impl Into<ServerRef>,
        reason: ExitReason,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let to = to.into();
        in_process(&self.inner, move |ctx| async move {
            gs::stop(&ctx, to, reason, Some(timeout)).await
        })
        .await
        .map_err(|e| CallError::Exit(ExitReason::User(e)))?
    }

    /// The `sys` operations, with the default 5 s timeout.
    pub fn sys(&self) -> Sys<'_> {
        Sys::new(&self.inner, DEFAULT_TIMEOUT)
    }
}

//! Behaviours on the host side: `gen_server` and `sys` ([`server`]), supervisors
//! ([`supervisor`]) and applications with the node's graceful stop ([`application`]).

pub mod application;
pub(crate) mod server;
pub mod supervisor;

use std::future::Future;
use std::sync::Arc;

use hotswap::{Ctx, ExitReason, Pid};

use crate::process::NodeInner;

/// Run `f` in a short-lived native process and return what it returns.
pub(crate) async fn in_process<T, F, Fut>(node: &Arc<NodeInner>, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (pid, _) = node
        .spawn_native(None, 0, move |ctx| async move {
            let _ = tx.send(f(ctx).await);
        })
        .map_err(|e| e.to_string())?;
    // Host code that stops waiting (a timeout around this future) also ends the
    // helper, which would otherwise wait on for an answer nobody reads.
    let helper = KillOnDrop(node, Some(pid));
    let r = rx.await;
    helper.defuse();
    r.map_err(|_| "the helper process was killed (is the node stopping?)".to_string())
}

/// Kills a helper process when dropped, unless defused.
struct KillOnDrop<'a>(&'a NodeInner, Option<Pid>);

impl KillOnDrop<'_> {
    fn defuse(mut self) {
        self.1 = None;
    }
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.1 {
            if let Some(p) = self.0.table.get(pid.0) {
                p.signal_exit(0, &ExitReason::Kill, false);
            }
        }
    }
}

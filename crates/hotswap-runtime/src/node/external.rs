//! [`ExternalProcess`]: a pid and mailbox that host code reads directly.

use std::sync::Arc;
use std::time::Duration;

use hotswap::{ExitReason, Message, Pid, Ref};
use hotswap_abi as abi;

use crate::error::SpawnError;
use crate::process::{ops, Envelope, Process};

/// A host-side process: a real pid and mailbox that host code reads directly (tests, the
/// control server). It traps exits. Dropping it exits it with reason `normal`.
#[derive(Debug)]
pub struct ExternalProcess {
    pub(super) proc: Arc<Process>,
    /// What host tasks wait on: the process's wake-up slot notifies it.
    pub(super) notify: Arc<tokio::sync::Notify>,
}

fn to_message(e: &Envelope) -> Message {
    match e.kind {
        abi::MSG_EXIT => Message::Exit {
            from: Pid(e.from),
            reason: ExitReason::decode(&e.data),
        },
        abi::MSG_DOWN => Message::Down {
            reference: Ref(e.reference),
            pid: Pid(e.from),
            reason: ExitReason::decode(&e.data),
        },
        _ => Message::User {
            from: Pid(e.from),
            data: e.data.to_vec(),
        },
    }
}

impl ExternalProcess {
    /// Its pid.
    pub fn pid(&self) -> Pid {
        self.proc.pid
    }

    /// Messages waiting.
    pub fn mailbox_len(&self) -> usize {
        let g = self.proc.inner.lock();
        self.proc.queue_len(&g)
    }

    /// Send a value from this process.
    pub fn send<T: serde::Serialize + ?Sized>(&self, to: Pid, msg: &T) {
        self.proc
            .node
            .send(self.proc.pid.0, to.0, hotswap::codec::encode(msg));
    }

    /// Link with `pid`.
    pub fn link(&self, pid: Pid) {
        ops::link(&self.proc, pid.0);
    }

    /// Monitor `pid`.
    pub fn monitor(&self, pid: Pid) -> Ref {
        Ref(ops::monitor(&self.proc, pid.0))
    }

    /// Remove a monitor.
    pub fn demonitor(&self, r: Ref) -> bool {
        ops::demonitor(&self.proc, r.0)
    }

    fn spawn_with<A: serde::Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
        flags: u32,
    ) -> Result<(Pid, u64), SpawnError> {
        let arg = hotswap::codec::encode(arg);
        self.proc
            .node
            .spawn(Some(&self.proc), module, function, &arg, flags)
    }

    /// Spawn linked to this process.
    pub fn spawn_link<A: serde::Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Result<Pid, SpawnError> {
        self.spawn_with(module, function, arg, abi::SPAWN_LINK)
            .map(|r| r.0)
    }

    /// Spawn monitored by this process.
    pub fn spawn_monitor<A: serde::Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Result<(Pid, Ref), SpawnError> {
        self.spawn_with(module, function, arg, abi::SPAWN_MONITOR)
            .map(|(p, r)| (p, Ref(r)))
    }

    /// Spawn a native process linked to this one.
    pub fn spawn_native_link<F, Fut>(&self, f: F) -> Result<Pid, SpawnError>
    where
        F: FnOnce(hotswap::Ctx) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: hotswap::IntoOutcome,
    {
        self.proc
            .node
            .spawn_native(Some(&self.proc), abi::SPAWN_LINK, f)
            .map(|r| r.0)
    }

    /// Wait up to `timeout` for the first message `pred` accepts; it is removed from the
    /// mailbox, the others stay in order.
    pub async fn recv_match(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut g = self.proc.inner.lock();
                if let Some(e) = self.proc.take_first(&mut g, |e| pred(&to_message(e))) {
                    g.received += 1;
                    return Some(to_message(&e));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Wait up to `timeout` for the next message of any kind.
    pub async fn recv(&self, timeout: Duration) -> Option<Message> {
        self.recv_match(timeout, |_| true).await
    }

    /// Wait up to `timeout` for the first user message that decodes as `T`.
    pub async fn receive<T: serde::de::DeserializeOwned>(&self, timeout: Duration) -> Option<T> {
        let m = self
            .recv_match(timeout, |m| m.decode::<T>().is_ok())
            .await?;
        m.decode().ok()
    }

    /// Wait up to `timeout` for the `Down` message of a monitor; its exit reason.
    pub async fn down(&self, r: Ref, timeout: Duration) -> Option<ExitReason> {
        match self
            .recv_match(
                timeout,
                |m| matches!(m, Message::Down { reference, .. } if *reference == r),
            )
            .await?
        {
            Message::Down { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl Drop for ExternalProcess {
    fn drop(&mut self) {
        self.proc.finish(ExitReason::Normal);
    }
}

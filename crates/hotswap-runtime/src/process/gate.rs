//! The spawn gate: while an upgrade switches a set of modules, a process spawned on one of
//! them (or a gen_server of one of them started) gets its pid at once but starts running
//! only when the upgrade is decided, on the version current then, so that no process is
//! born on code the transaction may purge (architecture §6, "Spawns during the switch").

use std::collections::BTreeSet;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use parking_lot::{Mutex, RwLock};

use crate::process::Process;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
    modules: RwLock<BTreeSet<String>>,
    waiting: Mutex<Vec<Arc<Process>>>,
}

impl Gate {
    /// Whether a spawn on `module` must wait.
    pub(crate) fn closes(&self, module: &str) -> bool {
        self.closed.load(Ordering::Acquire) && self.modules.read().contains(module)
    }

    /// Make spawns on `modules` wait. Once this returns, every [`Gate::admit`] that was
    /// let through has finished.
    pub(crate) fn close(&self, modules: BTreeSet<String>) {
        let _w = self.waiting.lock();
        *self.modules.write() = modules;
        self.closed.store(true, Ordering::Release);
    }

    /// Run `f` if a start on `module` need not wait (`None` if it must), atomically with
    /// respect to [`Gate::close`]: what `f` registers is visible to whoever closed the gate.
    pub(crate) fn admit<R>(&self, module: &str, f: impl FnOnce() -> R) -> Option<R> {
        let _w = self.waiting.lock();
        if self.closes(module) {
            None
        } else {
            Some(f())
        }
    }

    /// Let every waiting spawn go on.
    pub(crate) fn open(&self) {
        let waiting = {
            let mut w = self.waiting.lock();
            self.closed.store(false, Ordering::Release);
            std::mem::take(&mut *w)
        };
        self.modules.write().clear();
        for p in waiting {
            p.wake();
        }
    }

    /// How many spawns wait.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.lock().len()
    }

    /// Wait (as process `proc`) until the gate is open.
    pub(crate) async fn pass(&self, proc: &Arc<Process>) {
        let mut listed = false;
        poll_fn(|_| {
            if !self.closed.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            if !listed {
                let mut w = self.waiting.lock();
                // Checked again under the list's lock: `open` empties it under the same lock.
                if !self.closed.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                w.push(proc.clone());
                listed = true;
            }
            Poll::Pending
        })
        .await
    }
}

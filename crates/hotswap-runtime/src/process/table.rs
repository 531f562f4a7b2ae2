//! The process table (sharded by pid) and the registry of names.

use std::collections::HashMap;
use std::sync::Arc;

use hotswap::{ExitReason, Pid};
use parking_lot::Mutex;

use super::Process;
use crate::code::Version;
use crate::util::FxMap;

const SHARDS: usize = 64;

/// The process table, sharded to keep spawn and send off one lock.
pub(crate) struct ProcessTable {
    shards: Vec<Mutex<FxMap<u64, Arc<Process>>>>,
}

impl ProcessTable {
    pub(super) fn new() -> ProcessTable {
        ProcessTable {
            shards: (0..SHARDS).map(|_| Mutex::new(FxMap::default())).collect(),
        }
    }
    fn shard(&self, pid: u64) -> &Mutex<FxMap<u64, Arc<Process>>> {
        &self.shards[(pid as usize) % SHARDS]
    }
    /// Run `f` on a live process under its shard's lock (no reference-count traffic on
    /// the process, which the receiving side's own lock shares a cache line with).
    pub(crate) fn with<R>(&self, pid: u64, f: impl FnOnce(&Process) -> R) -> Option<R> {
        self.shard(pid).lock().get(&pid).map(|p| f(p))
    }
    pub(crate) fn get(&self, pid: u64) -> Option<Arc<Process>> {
        self.shard(pid).lock().get(&pid).cloned()
    }
    pub(crate) fn insert(&self, p: Arc<Process>) {
        self.shard(p.pid.0).lock().insert(p.pid.0, p);
    }
    pub(crate) fn remove(&self, pid: u64) {
        self.shard(pid).lock().remove(&pid);
    }
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
    pub(crate) fn pids(&self) -> Vec<Pid> {
        let mut v: Vec<Pid> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().keys().map(|&p| Pid(p)).collect::<Vec<_>>())
            .collect();
        v.sort();
        v
    }
    pub(crate) fn all(&self) -> Vec<Arc<Process>> {
        self.shards
            .iter()
            .flat_map(|s| s.lock().values().cloned().collect::<Vec<_>>())
            .collect()
    }
}

impl crate::code::Processes for ProcessTable {
    fn bound_to(&self, v: &Arc<Version>) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self
            .all()
            .into_iter()
            .filter(|p| p.inner.lock().is_bound_to(v))
            .map(|p| p.pid)
            .collect();
        pids.sort();
        pids
    }

    fn is_bound_to(&self, pid: Pid, v: &Arc<Version>) -> bool {
        self.get(pid.0)
            .is_some_and(|p| p.inner.lock().is_bound_to(v))
    }

    fn kill(&self, pid: Pid) {
        if let Some(p) = self.get(pid.0) {
            p.signal_exit(0, &ExitReason::Kill, false);
        }
    }
}

/// Registered names.
#[derive(Default)]
pub(crate) struct Registry {
    pub(super) names: HashMap<Box<str>, u64>,
}

impl Registry {
    pub(crate) fn get(&self, name: &str) -> Option<u64> {
        self.names.get(name).copied()
    }
    pub(crate) fn remove_if(&mut self, name: &str, pid: u64) {
        if self.names.get(name) == Some(&pid) {
            self.names.remove(name);
        }
    }
    pub(crate) fn names(&self) -> Vec<(String, Pid)> {
        let mut v: Vec<(String, Pid)> = self
            .names
            .iter()
            .map(|(k, &v)| (k.to_string(), Pid(v)))
            .collect();
        v.sort();
        v
    }
}

//! Prepared versions: the code server's side of a release transaction (architecture §6).
//!
//! A *prepared* version is mapped and its descriptor checked, but it is in no slot: a
//! fully-qualified call or a spawn cannot reach it, only the release handler that holds
//! its `Arc` (to run its `code_change` on copies of states, then on the suspended
//! servers). [`CodeServer::commit`] makes every prepared version of an upgrade current in
//! one step under the slots' write lock; [`CodeServer::uncommit`] puts the slots back as
//! they were; [`CodeServer::discard`] unmaps a prepared version nothing is bound to.

use std::path::Path;
use std::sync::Arc;

use super::loader::error::LoadError;
use super::Processes;
use super::{CodeServer, Version};

/// What one module's slots held before a commit.
pub(crate) struct Undo {
    module: String,
    current: Option<Arc<Version>>,
    old: Option<Arc<Version>>,
}

impl Undo {
    /// The old version the commit displaced from the module's old slot (processes may
    /// still run it; no slot holds it now), dropping the rest of the undo record.
    pub(crate) fn into_displaced(self) -> Option<Arc<Version>> {
        // Only a current version moving to the old slot displaces what was there.
        self.current.and(self.old)
    }
}

/// Holds the code server for a release transaction: no load or purge interleaves.
pub(crate) type SwitchGuard<'a> = tokio::sync::MutexGuard<'a, ()>;

impl CodeServer {
    /// Map and check a library as a prepared version of `module` (invisible to calls and
    /// spawns).
    pub(crate) fn prepare(&self, path: &Path, module: &str) -> Result<Arc<Version>, LoadError> {
        let _prepare = super::PrepareAfter(self);
        self.open(path, Some(module))
    }

    /// Check that a library opens as `module` version `vsn`, then unmap it.
    pub(crate) async fn inspect(&self, path: &Path, module: &str, vsn: &str) -> Result<(), String> {
        let v = self.prepare(path, module).map_err(|e| e.to_string())?;
        let got = v.vsn.clone();
        self.discard(v);
        if got != vsn {
            return Err(format!(
                "{} holds version {got:?} of `{module}`, but the manifest says version {vsn:?}: fix the manifest or the file",
                path.display()
            ));
        }
        Ok(())
    }

    /// Unmap a prepared (or rolled-back) version that nothing is bound to; pinned, with the
    /// reason, if it cannot be freed.
    pub(crate) fn discard(&self, v: Arc<Version>) {
        v.dehydrate_states();
        let _ = self.release(v, "prepared version discarded");
    }

    /// Take the code server's operation lock for a switch.
    pub(crate) async fn switch_lock(&self) -> SwitchGuard<'_> {
        self.ops.lock().await
    }

    /// The old version of `module`, if any.
    pub(crate) fn old_of(&self, module: &str) -> Option<Arc<Version>> {
        self.old(module)
    }

    /// Free the old version of `module` if no process runs it (its idle servers' states
    /// become bytes first, as a purge does); `Err` with the processes bound to it
    /// otherwise. The switch lock must be held.
    pub(crate) async fn soft_purge_held(
        &self,
        module: &str,
        table: &dyn Processes,
    ) -> Result<(), Vec<hotswap::Pid>> {
        let old = {
            let mut slots = self.slots.write();
            let Some(s) = slots.get_mut(module) else {
                return Ok(());
            };
            match &s.old {
                None => return Ok(()),
                Some(v) if v.is_bound() => return Err(v.bound_pids(table)),
                Some(_) => s.old.take().expect("checked"),
            }
        };
        old.dehydrate_states();
        self.release_quiesced(old, "purge of old code before an upgrade")
            .await;
        self.forget_if_empty(module);
        Ok(())
    }

    /// Kill the processes still running the old version of `module`, then free it (a
    /// `brutal_purge`, as [`CodeServer::purge`] does). The switch lock must be held.
    pub(crate) async fn purge_held(
        &self,
        module: &str,
        table: &dyn Processes,
    ) -> super::PurgeReport {
        self.purge_locked(table, module).await
    }

    /// Kill the processes still running `v`, a version a commit displaced from its
    /// module's old slot (see [`Undo::into_displaced`]), then free it: a `brutal_purge`
    /// of it, once the transaction can no longer fail. The switch lock must be held.
    pub(crate) async fn purge_displaced(
        &self,
        v: Arc<Version>,
        table: &dyn Processes,
    ) -> super::PurgeReport {
        self.kill_and_release(table, v).await
    }

    /// Make each module's version the given one (`None`: delete the module, its current
    /// version becoming old) in one step; the current version of each becomes old. A
    /// module's old slot should be empty (see [`CodeServer::soft_purge_held`]); a version
    /// still there is displaced: kept by the [`Undo`] (a rollback puts it back), and
    /// purged by the caller once the transaction is decided
    /// ([`CodeServer::purge_displaced`]).
    pub(crate) fn commit(&self, changes: &[(String, Option<Arc<Version>>)]) -> Vec<Undo> {
        let mut slots = self.slots.write();
        let mut undo = Vec::with_capacity(changes.len());
        for (module, new) in changes {
            let s = slots.entry(module.clone()).or_default();
            undo.push(Undo {
                module: module.clone(),
                current: s.current.clone(),
                old: s.old.clone(),
            });
            if s.current.is_some() {
                s.old = s.current.take();
            }
            s.current = new.clone();
            self.bump(module);
        }
        undo
    }

    /// Put the slots back as they were before [`CodeServer::commit`], in one step.
    pub(crate) fn uncommit(&self, undo: Vec<Undo>) {
        let mut slots = self.slots.write();
        for u in undo.into_iter().rev() {
            if u.current.is_none() && u.old.is_none() {
                slots.remove(&u.module);
            } else {
                let s = slots.entry(u.module.clone()).or_default();
                s.current = u.current;
                s.old = u.old;
            }
            self.bump(&u.module);
        }
    }
}

impl Version {
    /// Call this version's synchronous function `name` (the version need not be current:
    /// a prepared one is asked too) from host code, with no calling process: for
    /// functions that need none, such as a supervisor module's side-effect-free `init`,
    /// which a release plan asks of both versions to compare their trees. The encoded
    /// result, or the error the module wrote.
    pub(crate) fn call_function(&self, name: &str, arg: &[u8]) -> Result<Vec<u8>, String> {
        let f = *self.functions.get(name).ok_or_else(|| {
            format!(
                "`{}` version {} has no function `{name}`",
                self.name, self.vsn
            )
        })?;
        let mut out: Vec<u8> = Vec::new();
        let _in = self.enter();
        // SAFETY: `f` is a function of this version's accepted descriptor, and the library
        // stays open while `self` is borrowed; `arg` is a live slice; `out` is a `Vec<u8>`
        // as `write_vec` expects. A null process handle is what the dry run passes too:
        // the functions called here take no context from it.
        let st = unsafe {
            f(
                std::ptr::null_mut(),
                arg.as_ptr(),
                arg.len(),
                &mut out as *mut Vec<u8> as *mut std::ffi::c_void,
                hotswap::private::write_vec,
            )
        };
        match st {
            hotswap_abi::STATUS_READY => Ok(out),
            hotswap_abi::STATUS_PANICKED => Err(format!(
                "{}:{name} panicked: {}",
                self.name,
                String::from_utf8_lossy(&out)
            )),
            _ => Err(format!(
                "{}:{name} failed: {}",
                self.name,
                String::from_utf8_lossy(&out)
            )),
        }
    }
}

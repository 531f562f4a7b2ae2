//! [`Code`]: the code server as embedders see it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use hotswap::Pid;

use super::Node;
use crate::code::CodeError;
use crate::code::{CheckReport, LoadMode, ModuleInfo, PinnedInfo, PurgeReport};
use crate::process::NodeInner;

/// Options of [`Code::load_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Purge old code first, killing the processes still running it.
    pub purging: bool,
    /// Load even if the compatibility check refuses the version (it still runs, and what
    /// it found is logged).
    pub force: bool,
    /// Do not run the compatibility check at all (nothing is described or compared): for
    /// measuring what the check costs.
    pub unchecked: bool,
}

/// The code server of a node; see [`Node::code`].
#[derive(Debug)]
pub struct Code<'a> {
    pub(super) node: &'a Node,
}

impl Code<'_> {
    fn n(&self) -> &NodeInner {
        &self.node.inner
    }

    /// Load a module library without purging (`code:load_file`): refused with
    /// [`CodeError::NotPurged`] if the module has old code. The current version becomes old.
    pub async fn load(&self, path: impl AsRef<Path>) -> Result<ModuleInfo, CodeError> {
        self.n()
            .code
            .load(
                &self.n().table,
                path.as_ref(),
                None,
                LoadMode::Plain,
                false,
                true,
            )
            .await
    }

    /// Like [`Code::load`], but refuse a file that holds another module than `name`.
    pub async fn load_as(
        &self,
        name: &str,
        path: impl AsRef<Path>,
    ) -> Result<ModuleInfo, CodeError> {
        self.n()
            .code
            .load(
                &self.n().table,
                path.as_ref(),
                Some(name),
                LoadMode::Plain,
                false,
                true,
            )
            .await
    }

    /// Purging load (`code:load_binary`, `c:l/1`): purge old code first (killing processes
    /// still running it), then load.
    pub async fn load_purging(&self, path: impl AsRef<Path>) -> Result<ModuleInfo, CodeError> {
        self.n()
            .code
            .load(
                &self.n().table,
                path.as_ref(),
                None,
                LoadMode::Purging,
                false,
                true,
            )
            .await
    }

    /// Load with options: [`LoadOptions::purging`] as [`Code::load_purging`],
    /// [`LoadOptions::force`] to load a version the compatibility check refuses
    /// ([`CodeError::Incompatible`]: its server could not read the current version's state
    /// or queued messages).
    pub async fn load_with(
        &self,
        path: impl AsRef<Path>,
        opts: LoadOptions,
    ) -> Result<ModuleInfo, CodeError> {
        let mode = if opts.purging {
            LoadMode::Purging
        } else {
            LoadMode::Plain
        };
        self.n()
            .code
            .load(
                &self.n().table,
                path.as_ref(),
                None,
                mode,
                opts.force,
                !opts.unchecked,
            )
            .await
    }

    /// Check a module library against the module's current version without loading it:
    /// the static compatibility check ([`compat::check`](crate::compat::check)) and a dry run that decodes a copy
    /// of every live gen_server state of the module with the new version's `code_change`
    /// (so a custom `Deserialize` the static rules cannot see is still caught). Nothing
    /// changes: no state, no slot. The release upgrade's check phase calls this for every
    /// changed module.
    pub async fn check(&self, path: impl AsRef<Path>) -> Result<CheckReport, CodeError> {
        self.n().code.check(path.as_ref()).await
    }

    /// Purge the old version: kill the processes running it, wait for them, free it.
    pub async fn purge(&self, module: &str) -> Result<PurgeReport, CodeError> {
        self.n().code.purge(&self.n().table, module).await
    }

    /// Purge the old version only if no process runs it (`true`), else change nothing
    /// (`false`).
    pub async fn soft_purge(&self, module: &str) -> Result<bool, CodeError> {
        self.n().code.soft_purge(module).await
    }

    /// Make the current version old and remove the exports (`code:delete`).
    pub async fn delete(&self, module: &str) -> Result<(), CodeError> {
        self.n().code.delete(module).await
    }

    /// Whether `pid` runs old code of `module`.
    pub fn check_process_code(&self, pid: Pid, module: &str) -> bool {
        self.n()
            .code
            .check_process_code(pid, module, &self.n().table)
    }

    /// The file of the current version, if the module has one (`code:is_loaded`).
    pub fn is_loaded(&self, module: &str) -> Option<PathBuf> {
        self.n().code.current(module).map(|v| v.source.clone())
    }

    /// Every module with a current version and its file (`code:all_loaded`).
    pub fn all_loaded(&self) -> Vec<(String, PathBuf)> {
        self.n()
            .code
            .all(&self.n().table)
            .into_iter()
            .filter_map(|m| m.current.map(|c| (m.name, c.source)))
            .collect()
    }

    /// Both slots of one module.
    pub fn module(&self, module: &str) -> Option<ModuleInfo> {
        self.n().code.info(module, &self.n().table)
    }

    /// Both slots of every module.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        self.n().code.all(&self.n().table)
    }

    /// Processes running the current and the old version of `module`.
    pub fn which_processes(&self, module: &str) -> (Vec<Pid>, Vec<Pid>) {
        match self.n().code.info(module, &self.n().table) {
            Some(m) => (
                m.current.map(|v| v.processes).unwrap_or_default(),
                m.old.map(|v| v.processes).unwrap_or_default(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// Versions kept mapped because they could not be freed safely, with the reason.
    pub fn pinned(&self) -> Vec<PinnedInfo> {
        self.n().code.pinned(&self.n().table)
    }

    /// Try again to free pinned versions whose processes have since exited (for example a
    /// process that was busy in old code during a purge). Returns how many were unmapped.
    pub async fn retry_pinned(&self) -> usize {
        self.n().code.retry_pinned().await
    }

    /// Versions unmapped since the node started.
    pub fn freed_count(&self) -> u64 {
        self.n().code.freed.load(Ordering::Relaxed)
    }

    /// Whether the next load of a new build finds its copy file (and, with module heaps,
    /// its heap) already made: they are prepared in the background after each load, so
    /// that a load does not wait for the kernel to allocate the copy's pages.
    pub fn prepared_for_next_load(&self) -> bool {
        self.n().code.prepared()
    }

    /// Wait until the background preparation for the next load (its copy file and heap,
    /// made after each load: [`Self::prepared_for_next_load`]) is over. A load never needs
    /// this; benchmarks that time loads back to back use it so that each load meets the
    /// node as a load seconds after the previous one does, instead of racing the
    /// preparation the previous load started.
    ///
    /// ```no_run
    /// # async fn f(node: &hotswap_runtime::Node) -> Result<(), hotswap_runtime::CodeError> {
    /// node.code().load("target/release/libcounter.so").await?;
    /// node.code().next_load_prepared().await;
    /// assert!(node.code().prepared_for_next_load());
    /// # Ok(()) }
    /// ```
    pub async fn next_load_prepared(&self) {
        self.n().code.next_load_prepared().await
    }

    /// The node's code directory.
    pub fn code_dir(&self) -> &Path {
        &self.n().code.code_dir
    }
}

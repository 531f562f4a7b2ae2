//! Releases: a node started from a release directory, upgraded (and downgraded) to
//! another release of that directory in one transaction (spec §7, architecture §6).
//!
//! ```text
//! <release-dir>/
//!   releases/
//!     RELEASES.toml           each release's status: unpacked, current, permanent, old
//!                             (see [`store`]); a start boots the permanent one
//!     1.0.0/release.toml      the manifest of release 1.0.0 (see [`manifest`])
//!     1.1.0/release.toml      another release, side by side
//!   lib/                      module libraries (any path the manifests name; a release
//!                             never overwrites a file of another), each with its
//!                             description record LIB.so.schema if it was packaged with
//!                             one (see `code::record`)
//!   run/                      created at start, mode 0700: node.pid, control.sock, cookie
//!   log/                      created at start: node.log
//! ```
//!
//! The parts, each pointing down to the code server and the behaviours:
//!
//! - [`manifest`]: the manifest, parsed and checked;
//! - [`store`]: the releases present and their states, written atomically;
//! - [`plan`]: what an upgrade from the running release to another one does, derived from
//!   the two manifests, the libraries' descriptors and the live processes;
//! - `handler`: the transaction that carries a plan out (check, switch, rollback);
//! - `gate`: spawns of a module wait while an upgrade switches it.
//!
//! [`Node::releases`] is the entry point.

mod dir;
mod handler;
pub mod manifest;
mod migrate;
pub mod plan;
pub mod store;
mod sys_batch;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use dir::{ReleaseDir, MANIFEST};
pub use handler::{Progress, UpgradeOptions, UpgradeReport};
pub use manifest::{
    AppSpec, Manifest, ModuleSpec, NodeSettings, PurgeMode, Release, StartSpec, UpgradeSpec,
};
pub use plan::Plan;
pub use store::{ReleaseEntry, ReleaseStatus, Store};

use crate::node::Node;
use crate::process::NodeInner;

/// Why a release operation failed. Each message says what was refused or failed, why, and
/// what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The node was not booted from a release directory.
    #[error("this node was not started from a release directory, so it has no releases (start it with `hotswap start <dir>` or Releases::boot)")]
    NotBooted,
    /// A manifest is missing or invalid.
    #[error("{0}")]
    Manifest(String),
    /// The release store (RELEASES.toml, a release's files) could not be read or written.
    #[error("{0}")]
    Store(String),
    /// `unpack` refused the package.
    #[error("the release package is refused (nothing was written): {0}")]
    BadPackage(String),
    /// No such release in the directory.
    #[error("no release {version:?} in this release directory; the releases are: {}", .known.join(", "))]
    NoSuchRelease {
        /// The version asked for.
        version: String,
        /// The versions there are.
        known: Vec<String>,
    },
    /// The release's status does not allow the operation.
    #[error("release {version} is {status}: {hint}")]
    BadStatus {
        /// The release.
        version: String,
        /// Its status.
        status: ReleaseStatus,
        /// What to do.
        hint: String,
    },
    /// The node already runs that release.
    #[error("the node already runs release {0}: nothing to upgrade")]
    AlreadyRunning(String),
    /// Another upgrade is in progress.
    #[error("another upgrade is in progress (to release {0}): wait until it is done")]
    Busy(String),
    /// The upgrade was refused before anything was touched (a library that does not
    /// load, a `code_change` that fails on a copy of a live state, processes still on
    /// old code, ...). `failed` names the process, the module and the error.
    #[error("upgrade to {to} refused by the check, nothing was touched: {failed}")]
    Refused {
        /// The target release.
        to: String,
        /// What failed.
        failed: String,
    },
    /// The types check refused the upgrade before anything was touched: a changed
    /// module's new version cannot read what its running version wrote (its state, its
    /// queued messages, its exports' arguments), as a `load` would be refused
    /// (`CodeError::Incompatible`). Each report names the module, the callback, the field
    /// and the fix; [`UpgradeOptions::force`] upgrades anyway.
    #[error("upgrade to {to} refused by the types check, nothing was touched: {}; fix the new version, or upgrade with --force (UpgradeOptions::force) to switch anyway, as `hotswap load --force` does", incompatible_text(.reports))]
    Incompatible {
        /// The target release.
        to: String,
        /// One report per module that does not read its running version's data.
        reports: Vec<crate::code::compat::CompatReport>,
    },
    /// The switch failed and was rolled back: the old versions are current again, every
    /// process has its old state and is resumed.
    #[error("upgrade to {to} failed in phase {phase} and was rolled back (old versions current, old states back, {resumed} processes resumed, nothing killed): {failed}")]
    RolledBack {
        /// The target release.
        to: String,
        /// The phase that failed.
        phase: String,
        /// What failed.
        failed: String,
        /// How many processes were resumed.
        resumed: usize,
    },
}

fn incompatible_text(reports: &[crate::code::compat::CompatReport]) -> String {
    reports
        .iter()
        .map(|r| {
            let f: Vec<String> = r.incompatible.iter().map(|f| f.to_string()).collect();
            format!(
                "module `{}` {} -> {} is incompatible ({}): {}",
                r.module,
                r.old_version,
                r.new_version,
                r.incompatible.len(),
                f.join("; ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The release state of one node: where its releases are, which one runs, the upgrade
/// in progress.
#[derive(Default)]
pub(crate) struct NodeReleases {
    /// Set by [`Releases::boot`].
    pub(crate) booted: parking_lot::Mutex<Option<Booted>>,
    /// Held for the whole of an upgrade, unpack or removal.
    pub(crate) busy: tokio::sync::Mutex<()>,
    /// The upgrade in progress (for [`Releases::progress`]).
    pub(crate) progress: parking_lot::Mutex<Option<handler::ProgressState>>,
}

impl NodeReleases {
    /// The release state of `node`, made on first use. It is kept in the node's slot for
    /// the layer above the process core (see `NodeInner::upper`), since only this layer
    /// knows its type; the spawn gate itself is the process core's (`NodeInner::gate`).
    pub(crate) fn of(node: &NodeInner) -> &NodeReleases {
        node.upper
            .get_or_init(|| Box::new(NodeReleases::default()))
            .downcast_ref()
            .expect("the node's upper slot holds the release state only")
    }
}

/// The release a node runs.
#[derive(Debug, Clone)]
pub(crate) struct Booted {
    pub(crate) dir: ReleaseDir,
    pub(crate) running: Release,
}

/// The releases of a node; see [`Node::releases`].
#[derive(Debug, Clone, Copy)]
pub struct Releases<'a> {
    node: &'a Node,
}

impl Node {
    /// The node's releases: boot one, list them, unpack, plan and run upgrades and
    /// downgrades, make one permanent, remove one.
    pub fn releases(&self) -> Releases<'_> {
        Releases { node: self }
    }
}

impl<'a> Releases<'a> {
    fn state(&self) -> &NodeReleases {
        NodeReleases::of(&self.node.inner)
    }

    fn booted(&self) -> Result<Booted, ReleaseError> {
        self.state()
            .booted
            .lock()
            .clone()
            .ok_or(ReleaseError::NotBooted)
    }

    /// Which release `dir` boots: `wanted` if given, else the permanent one of
    /// `RELEASES.toml`, else the one `releases/current` names, else the only one.
    pub fn select(dir: &ReleaseDir, wanted: Option<&str>) -> Result<String, ReleaseError> {
        if wanted.is_none() && dir.root().is_dir() {
            if let Ok(store) = Store::open(dir) {
                if let Some(p) = store.permanent() {
                    return Ok(p.to_string());
                }
            }
        }
        dir.select(wanted).map_err(ReleaseError::Manifest)
    }

    /// Boot `release`: load its modules (each checked against the manifest's name and
    /// version), start its applications (dependencies first), and record it in the
    /// store (permanent when no release is yet). Stops at the first failure; the caller
    /// then stops the node.
    pub async fn boot(&self, release: &Release) -> Result<(), ReleaseError> {
        let node = self.node;
        for m in &release.manifest.modules {
            let file = release.module_file(m);
            let info = node.code().load_as(&m.name, &file).await.map_err(|e| {
                ReleaseError::Manifest(format!(
                    "module {:?} ({}): {e}",
                    m.name,
                    release.path.display()
                ))
            })?;
            let got = info.current.map(|v| v.version).unwrap_or_default();
            if got != m.version {
                return Err(ReleaseError::Manifest(format!(
                    "module {:?}: {} holds version {got:?}, but {} says version {:?}: fix the manifest or the file",
                    m.name,
                    file.display(),
                    release.path.display(),
                    m.version
                )));
            }
            tracing::info!(module = %m.name, version = %m.version, file = %file.display(), "module of the release loaded");
        }
        for app in &release.manifest.applications {
            if let Some(h) = node.halt_reason() {
                return Err(ReleaseError::Manifest(format!(
                    "the node terminates during boot: {h}"
                )));
            }
            let a = app.application().map_err(|e| {
                ReleaseError::Manifest(format!(
                    "application {:?} ({}): {e}",
                    app.name,
                    release.path.display()
                ))
            })?;
            node.start_application(a)
                .await
                .map_err(|e| ReleaseError::Manifest(e.to_string()))?;
        }
        let mut store = Store::open(&release.dir)?;
        store.booted(&release.manifest.release.version)?;
        *self.state().booted.lock() = Some(Booted {
            dir: release.dir.clone(),
            running: release.clone(),
        });
        Ok(())
    }

    /// The release the node runs.
    pub fn running(&self) -> Option<Release> {
        self.state()
            .booted
            .lock()
            .as_ref()
            .map(|b| b.running.clone())
    }

    /// The releases of the node's directory and their states.
    pub fn list(&self) -> Result<Vec<ReleaseEntry>, ReleaseError> {
        let b = self.booted()?;
        Ok(Store::open(&b.dir)?.entries().to_vec())
    }

    /// Add the release in `package` (a directory with `releases/<vsn>/release.toml` and
    /// the files its manifest names, with their description records if it has them, or a
    /// `.tar.gz` of one) to the node's directory,
    /// after checking it: exactly one release, not present yet; its manifest valid; every
    /// library a hotswap module with the declared name and version; no file of another
    /// release overwritten. Nothing is written unless every check passes. Its version.
    pub async fn unpack(&self, package: &Path) -> Result<String, ReleaseError> {
        let b = self.booted()?;
        let _busy = self.state().busy.lock().await;
        let (staging, _cleanup) = unpack_source(package)?;
        let (release, copies) = store::check_package(&b.dir, &staging)?;
        for m in &release.manifest.modules {
            let file = release.module_file(m);
            self.node
                .inner
                .code
                .inspect(&file, &m.name, &m.version)
                .await
                .map_err(|e| ReleaseError::BadPackage(format!("module {:?}: {e}", m.name)))?;
        }
        let vsn = release.manifest.release.version.clone();
        let mut written: Vec<PathBuf> = Vec::new();
        let undo = |written: &[PathBuf]| {
            for f in written.iter().rev() {
                let _ = std::fs::remove_file(f);
            }
            let _ = std::fs::remove_dir(b.dir.releases().join(&vsn));
        };
        for (src, dst) in &copies {
            let r = (|| -> std::io::Result<()> {
                if let Some(p) = dst.parent() {
                    std::fs::create_dir_all(p)?;
                }
                let tmp = dst.with_extension("unpacking");
                std::fs::copy(src, &tmp)?;
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, dst)
            })();
            if let Err(e) = r {
                undo(&written);
                return Err(ReleaseError::Store(format!(
                    "cannot copy {} to {}: {e} (the files already copied were removed)",
                    src.display(),
                    dst.display()
                )));
            }
            written.push(dst.clone());
        }
        let mut store = Store::open(&b.dir)?;
        if let Err(e) = store.add(&vsn, &release.manifest.release.name) {
            undo(&written);
            return Err(e);
        }
        tracing::info!(release = %vsn, "release unpacked");
        Ok(vsn)
    }

    /// The plan of an upgrade (or downgrade) from the running release to `vsn`, touching
    /// nothing.
    pub async fn plan(&self, vsn: &str) -> Result<Plan, ReleaseError> {
        let b = self.booted()?;
        let target = self.target(&b, vsn)?;
        let (plan, prepared) = plan::derive(self.node, &b.running, &target).await?;
        for v in prepared.into_values() {
            self.node.inner.code.discard(v);
        }
        Ok(plan)
    }

    /// The plan of an upgrade from release `running` to release `target` on this node as
    /// it is (the module versions it has loaded, the processes it runs), touching
    /// nothing; the node need not have booted a release. `hotswap release` derives the
    /// plan between two releases it built on a scratch node that loaded only `running`'s
    /// modules (so no processes).
    pub async fn plan_between(
        &self,
        running: &Release,
        target: &Release,
    ) -> Result<Plan, ReleaseError> {
        let (plan, prepared) = plan::derive(self.node, running, target).await?;
        for v in prepared.into_values() {
            self.node.inner.code.discard(v);
        }
        Ok(plan)
    }

    fn target(&self, b: &Booted, vsn: &str) -> Result<Release, ReleaseError> {
        if vsn == b.running.manifest.release.version {
            return Err(ReleaseError::AlreadyRunning(vsn.into()));
        }
        if !b.dir.manifest(vsn).is_file() {
            let store = Store::open(&b.dir)?;
            return Err(store.unknown(vsn));
        }
        Release::load(&b.dir, vsn).map_err(ReleaseError::Manifest)
    }

    /// Upgrade (or downgrade, to an older version) the node to release `vsn` in one
    /// transaction: check (touching nothing), then switch; any failure rolls back. On
    /// success the release is `current` (or `permanent` with
    /// [`UpgradeOptions::permanent`]).
    pub async fn upgrade(
        &self,
        vsn: &str,
        opts: UpgradeOptions,
    ) -> Result<UpgradeReport, ReleaseError> {
        let b = self.booted()?;
        let _busy = match self.state().busy.try_lock() {
            Ok(g) => g,
            Err(_) => {
                let to = self
                    .state()
                    .progress
                    .lock()
                    .as_ref()
                    .map(|p| p.snapshot().to)
                    .unwrap_or_default();
                return Err(ReleaseError::Busy(to));
            }
        };
        let target = self.target(&b, vsn)?;
        let r = handler::run(self.node, &b.running, &target, &opts).await;
        *self.state().progress.lock() = None;
        let report = r?;
        let mut store = Store::open(&b.dir)?;
        store.installed(&b.running.manifest.release.version, vsn)?;
        if opts.permanent {
            store.make_permanent(vsn)?;
        }
        *self.state().booted.lock() = Some(Booted {
            dir: b.dir.clone(),
            running: target,
        });
        Ok(report)
    }

    /// The upgrade in progress, if any.
    pub fn progress(&self) -> Option<Progress> {
        self.state()
            .progress
            .lock()
            .as_ref()
            .map(handler::ProgressState::snapshot)
    }

    /// Make `vsn` (default: the running release) what a restart boots.
    pub async fn make_permanent(&self, vsn: Option<&str>) -> Result<String, ReleaseError> {
        let b = self.booted()?;
        let _busy = self.state().busy.lock().await;
        let vsn = vsn
            .map(str::to_string)
            .unwrap_or_else(|| b.running.manifest.release.version.clone());
        let mut store = Store::open(&b.dir)?;
        store.make_permanent(&vsn)?;
        Ok(vsn)
    }

    /// Delete release `vsn` and the library files no other release uses (refused for the
    /// permanent and the running release). The paths deleted.
    pub async fn remove(&self, vsn: &str) -> Result<Vec<PathBuf>, ReleaseError> {
        let b = self.booted()?;
        let _busy = self.state().busy.lock().await;
        let mut store = Store::open(&b.dir)?;
        store.remove(vsn, &b.running.manifest.release.version)
    }
}

/// Removes a temporary directory when dropped.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A package as a directory: itself, or a `.tar.gz` extracted into a temporary one.
fn unpack_source(package: &Path) -> Result<(PathBuf, TempDir), ReleaseError> {
    let bad = |m: String| ReleaseError::BadPackage(m);
    if package.is_dir() {
        return Ok((package.to_path_buf(), TempDir(None)));
    }
    let name = package.to_string_lossy();
    if !package.is_file() {
        return Err(bad(format!(
            "{name}: no such file or directory (give a release directory or a .tar.gz of one)"
        )));
    }
    if !(name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
        return Err(bad(format!(
            "{name} is neither a directory nor a .tar.gz: give a release directory or a .tar.gz of one"
        )));
    }
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = std::env::temp_dir().join(format!(
        "hotswap-unpack-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&tmp)
        .map_err(|e| ReleaseError::Store(format!("cannot create {}: {e}", tmp.display())))?;
    let guard = TempDir(Some(tmp.clone()));
    let out = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(package)
        .arg("-C")
        .arg(&tmp)
        .arg("--no-same-owner")
        .output()
        .map_err(|e| bad(format!("cannot run tar to extract {name}: {e}")))?;
    if !out.status.success() {
        return Err(bad(format!(
            "{name} is not a valid .tar.gz: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((tmp, guard))
}

/// How long a suspend may take by default (OTP's sys default).
pub(crate) const DEFAULT_SUSPEND_TIMEOUT: Duration = Duration::from_secs(5);

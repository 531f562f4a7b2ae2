//! Why an operation of the code server was refused. Each variant says when it happens.

use hotswap::Pid;

use super::loader::error::LoadError;

/// Why a code-server operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// Loading the file failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A plain load while old code exists (`not_purged`).
    #[error("cannot load `{module}`: old code ({old_version}) is still loaded (not_purged){}; purge it first, or use a purging load", holders_text(.processes))]
    NotPurged {
        /// Module name.
        module: String,
        /// Version of the old code.
        old_version: String,
        /// Processes still running the old code.
        processes: Vec<Pid>,
    },
    /// The new version could not read what the current version wrote (its state, queued
    /// messages or export arguments): refused unless the load is forced (`incompatible`).
    #[error("cannot load `{}` {} over {}: incompatible ({}): {}; the current version stays. Load with force (hotswap load --force) to load it anyway", .report.module, .report.new_version, .report.old_version, .report.incompatible.len(), incompatible_text(.report))]
    Incompatible {
        /// What does not read.
        report: Box<super::compat::CompatReport>,
    },
    /// The module is not loaded.
    #[error("module `{module}` is not loaded")]
    NotLoaded {
        /// Module name.
        module: String,
    },
    /// `delete` while old code exists.
    #[error("cannot delete `{module}`: its old code must be purged before deleting")]
    OldCodeExists {
        /// Module name.
        module: String,
    },
}

fn incompatible_text(r: &super::compat::CompatReport) -> String {
    let v: Vec<String> = r.incompatible.iter().map(|f| f.to_string()).collect();
    v.join("; ")
}

fn holders_text(p: &[Pid]) -> String {
    if p.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        format!(", run by {}", list.join(", "))
    }
}

//! Errors of the code server and of spawning. Each variant says when it happens.

use std::path::PathBuf;

use hotswap::{ExitReason, Pid};

/// Why a module file could not be loaded. Nothing already loaded or running is affected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file does not exist (`nofile`).
    #[error("no such module file: {path} (build the module crate, or check the path)")]
    NoFile {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file could not be read or copied.
    #[error("cannot read or copy {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not an ELF shared library (`badfile`).
    #[error("{path} is not a shared library: {why} (a module is a cargo crate built with crate-type = [\"cdylib\"])")]
    NotElf {
        /// The path.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The ELF file is cut short, or its headers point past its end (`badfile`).
    #[error("{path} is truncated or damaged: {why} (rebuild the module: the file was not fully written, or was changed after the build)")]
    Truncated {
        /// The path.
        path: PathBuf,
        /// What was missing.
        why: String,
    },
    /// The library was built for another platform: another machine, word size or byte
    /// order than the node's (`badfile`). Found in the ELF header, before it is mapped.
    #[error("{path} was built for {found}, but this node runs on {node}: build the module for the node's platform (the same target as the node binary)")]
    WrongPlatform {
        /// The path.
        path: PathBuf,
        /// The platform the file was built for (word size, byte order, machine).
        found: String,
        /// The node's platform, in the same terms.
        node: String,
    },
    /// The dynamic linker refused the file.
    #[error("the dynamic linker refused {path}: {message}")]
    DlOpen {
        /// The path.
        path: PathBuf,
        /// `dlerror()`'s text.
        message: String,
    },
    /// The library has no module descriptor: it was not built with `hotswap::module!`.
    /// Found in its dynamic symbol table before it is mapped, so none of its code ran.
    #[error("{path} is a shared library but not a hotswap module: its dynamic symbol table does not define `HOTSWAP_MODULE_DESCRIPTOR`, so it was refused before any of its code ran (declare the module with `hotswap::module!`)")]
    NoDescriptor {
        /// The path.
        path: PathBuf,
    },
    /// The descriptor is malformed.
    #[error("{path} has a malformed module descriptor: {why}")]
    BadDescriptor {
        /// The path.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The module was built for another ABI version.
    #[error("{path} was built for hotswap ABI {module_abi}, but this node speaks ABI {node_abi}: rebuild the module against the hotswap SDK this node was built with")]
    AbiMismatch {
        /// The path.
        path: PathBuf,
        /// The module's ABI version.
        module_abi: u32,
        /// The node's ABI version.
        node_abi: u32,
    },
    /// The module encodes messages differently from the node.
    #[error("module `{module}` uses message codec {module_codec:?}, this node uses {node_codec:?}: rebuild the module against the node's hotswap SDK")]
    CodecMismatch {
        /// Module name.
        module: String,
        /// The module's codec.
        module_codec: String,
        /// The node's codec.
        node_codec: String,
    },
    /// The module was built with `panic = "abort"`, so its panics cannot be contained.
    #[error("module `{module}` was built with panic = \"abort\": a panic in it would abort the whole node; build it with panic = \"unwind\" (the default)")]
    PanicAbort {
        /// Module name.
        module: String,
    },
    /// The file holds a different module than the one asked for (`badfile`).
    #[error("{path} holds module `{found}`, not `{expected}`")]
    NameMismatch {
        /// The path.
        path: PathBuf,
        /// The name asked for.
        expected: String,
        /// The name in the descriptor.
        found: String,
    },
    /// The module's init function failed or panicked.
    #[error("module `{module}` failed to initialise: {message}")]
    InitFailed {
        /// Module name.
        module: String,
        /// What it said.
        message: String,
    },
}

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
        report: Box<crate::code::compat::CompatReport>,
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

fn incompatible_text(r: &crate::code::compat::CompatReport) -> String {
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

/// Why a spawn failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// No current version of the module.
    #[error("undef: module `{module}` is not loaded")]
    ModuleNotLoaded {
        /// Module name.
        module: String,
    },
    /// The module exports no such function.
    #[error("undef: module `{module}` (version {version}) exports no function `{function}`; it exports: {exports}")]
    NoSuchFunction {
        /// Module name.
        module: String,
        /// Version searched.
        version: String,
        /// The missing function.
        function: String,
        /// What it does export.
        exports: String,
    },
    /// The node is stopping.
    #[error("the node is stopping")]
    NodeStopping,
}

impl SpawnError {
    /// What an `undef` says (no such module or function), or `None` for other errors.
    pub(crate) fn undef_detail(&self) -> Option<String> {
        match self {
            SpawnError::ModuleNotLoaded { module } => Some(undef_not_loaded(module)),
            SpawnError::NoSuchFunction {
                module,
                version,
                function,
                exports,
            } => Some(undef_no_function(module, version, function, exports)),
            SpawnError::NodeStopping => None,
        }
    }

    /// The exit reason of a process whose fully-qualified call failed this way: `undef`
    /// for a missing module or function, the same reason on every path (a tail call with
    /// `continue_with`, a call through `Ctx::apply`, a gen_server's next message).
    pub(crate) fn exit_reason(&self) -> ExitReason {
        match self.undef_detail() {
            Some(d) => ExitReason::Undef(d),
            None => ExitReason::User(self.to_string()),
        }
    }

    /// The text a caller gets for this error: the `undef` detail (its error type says
    /// `undef`), or the whole message.
    pub(crate) fn caller_text(&self) -> String {
        self.undef_detail().unwrap_or_else(|| self.to_string())
    }
}

/// The `undef` detail for a module that has no current version.
pub(crate) fn undef_not_loaded(module: &str) -> String {
    format!("module `{module}` is not loaded")
}

/// The `undef` detail for a function the current version does not export.
pub(crate) fn undef_no_function(
    module: &str,
    version: &str,
    function: &str,
    exports: &str,
) -> String {
    format!("module `{module}` (version {version}) exports no function `{function}`; it exports: {exports}")
}

//! Errors of spawning, and the `undef` texts every path uses. Each variant says when it
//! happens. (The code server's errors are in `code::error`.)

use hotswap::ExitReason;

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

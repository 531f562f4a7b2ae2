//! Why a module file could not be loaded. Each variant says when it happens.

use std::path::PathBuf;

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

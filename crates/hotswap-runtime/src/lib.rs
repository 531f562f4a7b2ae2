//! # hotswap-runtime: the node
//!
//! A [`Node`] runs lightweight processes (tokio tasks, each driving one future created by a
//! native module) and a code server that keeps two versions of every module, with Erlang's
//! semantics: processes stay in the version they run until they make a fully-qualified
//! call; a second load purges the oldest version, killing the processes still in it; a
//! purge really unmaps the library, or pins it and says why.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hotswap_runtime::{Node, NodeConfig};
//! let node = Node::start(NodeConfig::default())?;
//! node.code().load("target/debug/libseed000_v1.so").await?;
//! let pid = node.spawn("seed000", "do_loop", &())?;
//! node.code().load("target/debug/libseed000_v2.so").await?; // pid keeps running v1
//! assert!(node.code().check_process_code(pid, "seed000"));
//! # Ok(()) }
//! ```
//!
//! Executables that embed the runtime must export the thread-local guard (see
//! [`guard_link_args`]); otherwise the code server keeps purged versions mapped.
//!
//! # Layers
//!
//! Each folder is one concern, and a layer imports only the layers under it:
//!
//! ```text
//!   lib.rs      re-exports, and the guard's link arguments
//!   control/    the control server: a node's Unix socket, its wire protocol and every
//!               control command's node side; it uses release/ and the facade only
//!   release/    release handling: release directories, manifests, the store, upgrade
//!               plans run as transactions; it drives the node through the facade's API
//!   node/       the facade: Node, Code, ExternalProcess, and the host-side APIs of the
//!               behaviours (start_server, call, sys; supervisors; applications, shutdown)
//!   host_api/   the table module code calls: it exposes the layers below it
//!   net/        ports: TCP and UDP sockets owned by processes
//!   behaviour/  gen_server and sys (server/), supervisor, application
//!   process/    pids, the process table, mailboxes, links and monitors (ops), the
//!               registry, timers, the waker, the spawn gate, spawning; NodeInner, what
//!               every process shares (it holds the code server)
//!   code/       the code server: versions, the loader (dlopen, ELF checks), the
//!               thread-local guard
//!   error, util leaves: spawn errors and the undef texts, the hash maps keyed by pids
//!               (the code server's errors are its own: code/error.rs)
//!   stamps      leaf: bench-only time stamps of a TCP frame's stages (ports, mailboxes)
//! ```
//!
//! Where a lower layer must act on something above it, the upper layer hands it in:
//! - the facade builds the host API table and passes it down to the node's state and the
//!   code server (which gives it to each module's `init`);
//! - the process table implements `code::Processes` (which processes run a version, kill
//!   one), all a purge needs of processes;
//! - a gen_server state registers with the version that made it as a `code::LiveState`,
//!   which a purge asks to turn itself into bytes before the version is unmapped;
//! - the release handler keeps its per-node state in a slot of `NodeInner` whose type only
//!   it knows (`NodeInner::upper`); the spawn gate it closes is the process core's;
//! - the port table lives in such a slot too (`NodeInner::net`, reached through
//!   `NodeInner::ports`, which `net/` defines);
//! - `hotswap_runtime::compat::describe_file` (here, at the top) hands the host API table to
//!   the code server's `describe_bytes_with`, which opens a library without a node.
//!
//! The code server sits under the process core rather than over it: a process is bound to
//! the versions it runs (it holds them, and its body is a future of one), so processes
//! name `code::Version`, while the code server reaches processes only through that trait.

mod behaviour;
mod code;
pub mod control;
mod error;
mod host_api;
mod net;
mod node;
mod process;
pub mod release;
pub mod stamps;
mod util;

pub use behaviour::application::{
    AppError, AppInfo, Application, ShutdownReport, StartType, StopReport,
};
pub use behaviour::server::{
    CallError, ServerRef, ServerStatus, StartError, StartOpts, Statistics, Sys, SysError,
    DEFAULT_TIMEOUT,
};
pub use behaviour::{application, supervisor};
/// The types check (issue 12): module descriptions, the compatibility rules and reports.
pub mod compat {
    pub use crate::code::compat::*;

    /// Describe a module library without a node: validate and open it as a load would (in
    /// a private temporary directory), ask its `describe`, and close it again.
    pub fn describe_file(
        path: &std::path::Path,
    ) -> Result<hotswap::schema::ModuleSchema, DescribeError> {
        describe_file_bytes(path).map(|d| d.schema)
    }

    pub use crate::code::record::{
        encode_record, parse_record, record_path, Found as RecordFound, RECORD_SUFFIX,
        RECORD_VERSION,
    };

    /// [`describe_file`], with what a description record of the library holds: the
    /// library's hash and the description's bytes as `describe` wrote them.
    pub fn describe_file_bytes(path: &std::path::Path) -> Result<FileDescription, DescribeError> {
        crate::code::compat::describe_bytes_with(path, crate::host_api::table())
    }

    /// The description of the library at `path` as a node loading it would take it: from
    /// its description record when one beside it was made for these exact bytes (nothing
    /// of the library is opened or run), else from its `describe` as [`describe_file`]
    /// does; and where it came from. `hotswap check OLD.so NEW.so` uses it.
    pub fn describe_file_recorded(
        path: &std::path::Path,
    ) -> Result<(hotswap::schema::ModuleSchema, DescriptionSource), DescribeError> {
        crate::code::compat::describe_recorded_with(path, crate::host_api::table())
    }

    /// The description record beside the library at `lib`, as a node that loaded bytes
    /// hashing to `lib_hash` from `lib` would find it: absent, valid (its description), or
    /// ignored, and why.
    pub fn find_record(lib: &std::path::Path, lib_hash: u64) -> RecordFound {
        crate::code::record::find(&record_path(lib), lib_hash)
    }

    /// Describe a module library as [`describe_file`] does and write its description record
    /// beside it (`<library>.schema`, see the README's "Description records"): a node that
    /// loads these exact bytes later compares this description instead of running the
    /// module's `describe`. Written atomically (a temporary file renamed over the record).
    /// `hotswap describe --write`, `hotswap release` and `hotswap dev` call it.
    pub fn record_description(path: &std::path::Path) -> Result<RecordWritten, DescribeError> {
        crate::code::compat::record_description_with(path, crate::host_api::table())
    }
}
pub use code::steps as load_steps;
pub use code::{CheckReport, DryRun, ModuleInfo, PinnedInfo, PurgeReport, VersionInfo};
pub use code::{CodeError, LoadError};
pub use error::SpawnError;
pub use hotswap::{ExitReason, Message, Pid, Ref};
pub use node::{Code, ExternalProcess, LoadOptions, Node, NodeConfig, ProcessInfo};
pub use process::sched;

/// The linker arguments an executable embedding the runtime needs, one per line, for a
/// build script: `for a in hotswap_runtime::guard_link_args() { println!("cargo:rustc-link-arg-bins={a}") }`.
pub fn guard_link_args() -> [&'static str; 3] {
    [
        "-Wl,--export-dynamic-symbol=pthread_key_create",
        "-Wl,--export-dynamic-symbol=__cxa_thread_atexit_impl",
        "-Wl,--export-dynamic-symbol=pthread_create",
    ]
}

/// Whether this executable exports the thread-local guard (see [`guard_link_args`]).
pub fn guard_active() -> bool {
    code::guard::active()
}

/// `(created, destroyed)`: how many per-version heaps were made and how many were freed by
/// purges in this OS process (see [`NodeConfig::module_heaps`]).
pub fn module_heap_counts() -> (usize, usize) {
    code::heap::heap_counts()
}

/// How many thread creations by module code the guard refused in this OS process.
pub fn refused_module_threads() -> u64 {
    code::guard::refused_threads()
}

/// How many pthread-key destructors of module code the guard could not route through one
/// of its trampolines in this OS process (all were taken). A purge of such a module can
/// race with a thread that exits at that moment; 0 in every normal run.
pub fn unguarded_module_key_destructors() -> u64 {
    code::guard::unguarded_key_destructors()
}

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

pub mod application;
mod code;
mod error;
mod host_api;
mod node;
mod ops;
mod process;
pub mod release;
mod server;
pub mod supervisor;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use application::{AppError, AppInfo, Application, ShutdownReport, StartType};
pub use code::{ModuleInfo, PinnedInfo, PurgeReport, VersionInfo};
pub use error::{CodeError, LoadError, SpawnError};
pub use hotswap::{ExitReason, Message, Pid, Ref};
pub use server::{
    CallError, ServerRef, ServerStatus, StartError, StartOpts, Statistics, Sys, SysError,
    DEFAULT_TIMEOUT,
};

use code::LoadMode;
use hotswap_abi as abi;
use node::NodeInner;
use process::{Envelope, Process};

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

/// Node settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where write-once copies of loaded libraries live. Default: a fresh directory on
    /// `/dev/shm` (or the system temp dir), removed when the node stops.
    pub code_dir: Option<PathBuf>,
    /// How long a purge waits for killed processes to leave the old code before it pins the
    /// version instead of unmapping it. Default 5 s.
    pub purge_timeout: Duration,
    /// Give every loaded version a heap of its own, which a purge frees as a whole once the
    /// version is unmapped (memory held by its statics included). Default `true`; `false`
    /// makes modules allocate with the system allocator (a purge then returns only what the
    /// module freed itself), which is there to measure the heaps' cost.
    pub module_heaps: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            code_dir: None,
            purge_timeout: Duration::from_secs(5),
            module_heaps: true,
        }
    }
}

/// A running node. Cheap to clone (all clones are the same node).
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("processes", &self.process_count())
            .finish_non_exhaustive()
    }
}

/// Information about a live process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: Pid,
    /// Registered name.
    pub name: Option<String>,
    /// Messages waiting in its mailbox.
    pub message_queue_len: usize,
    /// Messages it has taken from its mailbox.
    pub messages_received: u64,
    /// Linked processes.
    pub links: Vec<Pid>,
    /// Whether it traps exits.
    pub trap_exit: bool,
    /// The module versions whose code it runs: `(module, version, instance)`, outermost
    /// first.
    pub running: Vec<(String, String, u64)>,
    /// Bytes the node holds for it: its record, its mailbox (with the messages waiting),
    /// links, monitors and name. Memory that module code allocated is not included (it
    /// belongs to the module's own allocator).
    pub memory: usize,
    /// For a gen_server whose state is live: `(module, version)` of the version that made
    /// its state (an idle server runs no code, so `running` is empty then).
    pub gen_server: Option<(String, String)>,
}

/// What [`Node::stop`] did.
#[derive(Debug, Clone)]
pub struct StopReport {
    /// Processes killed.
    pub killed: usize,
    /// Processes that did not exit in time.
    pub stuck: Vec<Pid>,
    /// Per-module purges.
    pub purges: Vec<PurgeReport>,
}

static NODE_SEQ: AtomicU64 = AtomicU64::new(1);

/// A fresh per-node directory: on tmpfs (`/dev/shm`) when there is one, since every load
/// writes a copy of the library there, else under the system temp dir.
fn default_code_dir() -> PathBuf {
    let name = format!(
        "hotswap-{}-{}",
        std::process::id(),
        NODE_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let shm = Path::new("/dev/shm");
    let writable = std::fs::metadata(shm).is_ok_and(|m| m.is_dir() && !m.permissions().readonly());
    let parent = if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| sweep_stale_code_dirs(&parent));
    parent.join(name)
}

/// Remove the default code directories of processes that are gone: a node that was never
/// stopped (a crash, a kill, a test process) leaves its library copies behind, and on
/// tmpfs they hold memory. Directories of live processes are left alone.
fn sweep_stale_code_dirs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hotswap-"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, seq)| seq.parse::<u64>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Node {
    /// Start a node on the current tokio runtime.
    ///
    /// Fails if called outside a tokio runtime or if the code directory cannot be created.
    pub fn start(config: NodeConfig) -> std::io::Result<Node> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            std::io::Error::other(
                "Node::start must be called inside a tokio runtime (e.g. from #[tokio::main])",
            )
        })?;
        let (dir, owned) = match config.code_dir {
            Some(d) => (d, false),
            None => (default_code_dir(), true),
        };
        std::fs::create_dir_all(&dir)?;
        host_api::install();
        if !code::guard::active() {
            tracing::warn!("the thread-local guard is not exported by this executable: purged versions will be kept mapped (see hotswap_runtime::guard_link_args)");
        }
        Ok(Node {
            inner: Arc::new(NodeInner::new(
                dir,
                owned,
                config.purge_timeout,
                config.module_heaps,
                rt,
            )),
        })
    }

    /// The code server.
    pub fn code(&self) -> Code<'_> {
        Code { node: self }
    }

    /// Spawn `module:function(arg)` on the module's current version.
    pub fn spawn<A: serde::Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Result<Pid, SpawnError> {
        self.spawn_raw(module, function, &hotswap::codec::encode(arg))
    }

    /// Spawn with an already-encoded argument.
    pub fn spawn_raw(&self, module: &str, function: &str, arg: &[u8]) -> Result<Pid, SpawnError> {
        self.inner
            .spawn(None, module, function, arg, 0)
            .map(|r| r.0)
    }

    /// Spawn a native process running `f` (the node's own code, not a module's).
    ///
    /// The future may await anything: `Ctx` receives, and also tokio timers, channels and
    /// other futures (a wake of its waker makes the process runnable, as a message does).
    pub fn spawn_native<F, Fut>(&self, f: F) -> Result<Pid, SpawnError>
    where
        F: FnOnce(hotswap::Ctx) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: hotswap::IntoOutcome,
    {
        self.inner.spawn_native(None, 0, f).map(|r| r.0)
    }

    /// Send a value to a process (from outside any process).
    pub fn send<T: serde::Serialize + ?Sized>(&self, to: Pid, msg: &T) {
        self.inner.send(0, to.0, hotswap::codec::encode(msg));
    }

    /// Send raw bytes to a process.
    pub fn send_bytes(&self, to: Pid, bytes: Vec<u8>) {
        self.inner.send(0, to.0, bytes);
    }

    /// Send a value to a registered name; `false` if nothing is registered under it.
    pub fn send_named<T: serde::Serialize + ?Sized>(&self, name: &str, msg: &T) -> bool {
        match self.whereis(name) {
            Some(p) => {
                self.send(p, msg);
                true
            }
            None => false,
        }
    }

    /// Send an exit signal to a process (`exit(Pid, Reason)` from outside any process).
    pub fn exit(&self, pid: Pid, reason: ExitReason) {
        if let Some(p) = self.inner.table.get(pid.0) {
            p.signal_exit(0, &reason, false);
        }
    }

    /// Register `name` for a live process (`register/2`). Fails with `badarg` if the name
    /// is taken, or the process is dead or already has a name.
    pub fn register(&self, name: &str, pid: Pid) -> Result<(), ExitReason> {
        if self.inner.register(name, pid.0) {
            Ok(())
        } else {
            Err(ExitReason::BadArg(format!(
                "cannot register {name:?} for {pid}: name taken, or process dead or already named"
            )))
        }
    }

    /// Remove a registered name; `false` if it was not registered.
    pub fn unregister(&self, name: &str) -> bool {
        self.inner.unregister(name)
    }

    /// The pid registered under `name`.
    pub fn whereis(&self, name: &str) -> Option<Pid> {
        self.inner.registry.lock().get(name).map(Pid)
    }

    /// All registered names.
    pub fn registered(&self) -> Vec<(String, Pid)> {
        self.inner.registry.lock().names()
    }

    /// Whether a process is alive.
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.inner
            .table
            .get(pid.0)
            .is_some_and(|p| !p.inner.lock().exited)
    }

    /// All live pids, sorted.
    pub fn processes(&self) -> Vec<Pid> {
        self.inner.table.pids()
    }

    /// Number of live processes.
    pub fn process_count(&self) -> usize {
        self.inner.table.len()
    }

    /// Number of processes that have exited since the node started.
    pub fn exited_count(&self) -> u64 {
        self.inner.exited.load(Ordering::Relaxed)
    }

    /// Information about a live process.
    pub fn process_info(&self, pid: Pid) -> Option<ProcessInfo> {
        let p = self.inner.table.get(pid.0)?;
        let g = p.inner.lock();
        Some(ProcessInfo {
            pid,
            name: g.name().map(str::to_string),
            message_queue_len: p.queue_len(&g),
            messages_received: g.received,
            links: {
                let mut l: Vec<Pid> = g
                    .rel
                    .as_ref()
                    .map(|r| r.links.iter().map(|&l| Pid(l)).collect())
                    .unwrap_or_default();
                l.sort();
                l
            },
            trap_exit: g.trap_exit,
            running: g
                .bindings
                .iter()
                .map(|v| (v.name.clone(), v.vsn.clone(), v.id))
                .collect(),
            memory: p.memory(&g),
            gen_server: self.inner.code.server_state_of(pid.0),
        })
    }

    /// A host-side process: a pid with a mailbox that host code (a test, a control server)
    /// reads directly. It traps exits, so links never kill it.
    pub fn external(&self) -> ExternalProcess {
        let mut p = Process::new(self.inner.new_pid(), self.inner.clone());
        p.inner.get_mut().external = true;
        p.inner.get_mut().trap_exit = true;
        let p = Arc::new(p);
        self.inner.table.insert(p.clone());
        ExternalProcess { proc: p }
    }

    /// Stop: kill every process (waiting for each), cancel timers, and purge every module,
    /// verifying that each library is unmapped.
    pub async fn stop(&self, timeout: Duration) -> StopReport {
        let n = &self.inner;
        n.stopping.store(true, Ordering::Relaxed);
        // Host-side mailboxes just close; every process is killed, then awaited.
        let (external, procs): (Vec<_>, Vec<_>) = n
            .table
            .all()
            .into_iter()
            .partition(|p| p.inner.lock().external);
        for p in &external {
            p.finish(ExitReason::Killed);
        }
        // Every process is marked killed before any is woken, so that none runs code in
        // this phase (spec §6.1: nothing runs terminate here): woken one by one, a
        // supervisor could see its killed parent's exit and shut its children down first.
        for p in &procs {
            let mut g = p.inner.lock();
            if !g.exited {
                g.pending_exit = Some(Box::new(ExitReason::Killed));
            }
        }
        for p in &procs {
            p.notify.notify_one();
        }
        let killed = procs.len();
        let mut stuck = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        for p in &procs {
            if tokio::time::timeout_at(deadline, p.wait_done())
                .await
                .is_err()
            {
                stuck.push(p.pid);
            }
        }
        for (_, (h, _)) in n.timers.lock().drain() {
            h.abort();
        }
        let purges = n.code.purge_all(n).await;
        n.code.clear_spares();
        if n.owns_code_dir && n.code.pinned(&n.table).is_empty() {
            let _ = std::fs::remove_dir_all(&n.code.code_dir);
        }
        StopReport {
            killed,
            stuck,
            purges,
        }
    }
}

/// The code server of a node; see [`Node::code`].
#[derive(Debug)]
pub struct Code<'a> {
    node: &'a Node,
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
            .load(self.n(), path.as_ref(), None, LoadMode::Plain)
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
            .load(self.n(), path.as_ref(), Some(name), LoadMode::Plain)
            .await
    }

    /// Purging load (`code:load_binary`, `c:l/1`): purge old code first (killing processes
    /// still running it), then load.
    pub async fn load_purging(&self, path: impl AsRef<Path>) -> Result<ModuleInfo, CodeError> {
        self.n()
            .code
            .load(self.n(), path.as_ref(), None, LoadMode::Purging)
            .await
    }

    /// Purge the old version: kill the processes running it, wait for them, free it.
    pub async fn purge(&self, module: &str) -> Result<PurgeReport, CodeError> {
        self.n().code.purge(self.n(), module).await
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

    /// The node's code directory.
    pub fn code_dir(&self) -> &Path {
        &self.n().code.code_dir
    }
}

/// A host-side process: a real pid and mailbox that host code reads directly (tests, the
/// control server). It traps exits. Dropping it exits it with reason `normal`.
#[derive(Debug)]
pub struct ExternalProcess {
    proc: Arc<Process>,
}

fn to_message(e: &Envelope) -> Message {
    match e.kind {
        abi::MSG_EXIT => Message::Exit {
            from: Pid(e.from),
            reason: ExitReason::decode(&e.data),
        },
        abi::MSG_DOWN => Message::Down {
            reference: Ref(e.reference),
            pid: Pid(e.from),
            reason: ExitReason::decode(&e.data),
        },
        _ => Message::User {
            from: Pid(e.from),
            data: e.data.to_vec(),
        },
    }
}

impl ExternalProcess {
    /// Its pid.
    pub fn pid(&self) -> Pid {
        self.proc.pid
    }

    /// Messages waiting.
    pub fn mailbox_len(&self) -> usize {
        let g = self.proc.inner.lock();
        self.proc.queue_len(&g)
    }

    /// Send a value from this process.
    pub fn send<T: serde::Serialize + ?Sized>(&self, to: Pid, msg: &T) {
        self.proc
            .node
            .send(self.proc.pid.0, to.0, hotswap::codec::encode(msg));
    }

    /// Link with `pid`.
    pub fn link(&self, pid: Pid) {
        ops::link(&self.proc, pid.0);
    }

    /// Monitor `pid`.
    pub fn monitor(&self, pid: Pid) -> Ref {
        Ref(ops::monitor(&self.proc, pid.0))
    }

    /// Remove a monitor.
    pub fn demonitor(&self, r: Ref) -> bool {
        ops::demonitor(&self.proc, r.0)
    }

    fn spawn_with<A: serde::Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
        flags: u32,
    ) -> Result<(Pid, u64), SpawnError> {
        let arg = hotswap::codec::encode(arg);
        self.proc
            .node
            .spawn(Some(&self.proc), module, function, &arg, flags)
    }

    /// Spawn linked to this process.
    pub fn spawn_link<A: serde::Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Result<Pid, SpawnError> {
        self.spawn_with(module, function, arg, abi::SPAWN_LINK)
            .map(|r| r.0)
    }

    /// Spawn monitored by this process.
    pub fn spawn_monitor<A: serde::Serialize + ?Sized>(
        &self,
        module: &str,
        function: &str,
        arg: &A,
    ) -> Result<(Pid, Ref), SpawnError> {
        self.spawn_with(module, function, arg, abi::SPAWN_MONITOR)
            .map(|(p, r)| (p, Ref(r)))
    }

    /// Spawn a native process linked to this one.
    pub fn spawn_native_link<F, Fut>(&self, f: F) -> Result<Pid, SpawnError>
    where
        F: FnOnce(hotswap::Ctx) -> Fut,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: hotswap::IntoOutcome,
    {
        self.proc
            .node
            .spawn_native(Some(&self.proc), abi::SPAWN_LINK, f)
            .map(|r| r.0)
    }

    /// Wait up to `timeout` for the first message `pred` accepts; it is removed from the
    /// mailbox, the others stay in order.
    pub async fn recv_match(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.proc.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut g = self.proc.inner.lock();
                if let Some(e) = self.proc.take_first(&mut g, |e| pred(&to_message(e))) {
                    g.received += 1;
                    return Some(to_message(&e));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Wait up to `timeout` for the next message of any kind.
    pub async fn recv(&self, timeout: Duration) -> Option<Message> {
        self.recv_match(timeout, |_| true).await
    }

    /// Wait up to `timeout` for the first user message that decodes as `T`.
    pub async fn receive<T: serde::de::DeserializeOwned>(&self, timeout: Duration) -> Option<T> {
        let m = self
            .recv_match(timeout, |m| m.decode::<T>().is_ok())
            .await?;
        m.decode().ok()
    }

    /// Wait up to `timeout` for the `Down` message of a monitor; its exit reason.
    pub async fn down(&self, r: Ref, timeout: Duration) -> Option<ExitReason> {
        match self
            .recv_match(
                timeout,
                |m| matches!(m, Message::Down { reference, .. } if *reference == r),
            )
            .await?
        {
            Message::Down { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl Drop for ExternalProcess {
    fn drop(&mut self) {
        self.proc.finish(ExitReason::Normal);
    }
}
#[cfg(test)]
mod sweep {
    #[test]
    fn code_dirs_of_dead_processes_are_swept() {
        let parent =
            std::env::temp_dir().join(format!("hotswap-sweep-test-{}", std::process::id()));
        // Pid numbers never reach 999 999 999, so that process is certainly gone.
        let stale = parent.join("hotswap-999999999-1");
        let mine = parent.join(format!("hotswap-{}-7", std::process::id()));
        let other = parent.join("hotswap-not-a-node");
        for d in [&stale, &mine, &other] {
            std::fs::create_dir_all(d.join("lib")).unwrap();
        }
        super::sweep_stale_code_dirs(&parent);
        assert!(!stale.exists(), "a dead process's directory is removed");
        assert!(mine.exists(), "this process's directories stay");
        assert!(other.exists(), "other names are not touched");
        std::fs::remove_dir_all(&parent).unwrap();
    }
}

#[cfg(test)]
mod size_guard {
    /// An idle process must stay well under 1 KB: the process struct (plus the `Arc`
    /// header) fits the allocator's 192-byte class.
    #[test]
    fn process_struct_stays_small() {
        let p = std::mem::size_of::<crate::process::Process>();
        assert!(p + 16 <= 192, "Process is {p} bytes");
    }
}

//! The facade: [`Node`], the handle embedders hold, with its views [`Code`] (the code
//! server), [`ExternalProcess`] (a host-side mailbox) and the host-side APIs of the
//! behaviours (servers, supervisors, applications). Everything here delegates to the
//! layers below; nothing below imports it.

mod applications;
mod code;
mod external;
mod servers;
mod supervisors;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hotswap::{ExitReason, Pid};

pub use code::{Code, LoadOptions};
pub use external::ExternalProcess;

use crate::behaviour::application::{Apps, StopReport};
use crate::error::SpawnError;
use crate::process::{NodeInner, Process};

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
    /// How many bytes a TCP connection's reader reads ahead of what its owner asked for
    /// (counted in the port's `rx_buffered`). With room in it, the reader keeps waiting on
    /// the socket, so an owner re-arming `{active, once}` gets a frame that arrived
    /// meanwhile from its own thread, without waking the reader. `0`: read only while the
    /// owner wants data (the reader is woken at every re-arm). Default 16 KiB.
    pub read_ahead: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            code_dir: None,
            purge_timeout: Duration::from_secs(5),
            module_heaps: true,
            read_ahead: crate::net::DEFAULT_READ_AHEAD,
        }
    }
}

/// A running node. Cheap to clone (all clones are the same node).
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
    /// The application controller.
    pub(crate) apps: Arc<Apps>,
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
        crate::host_api::install();
        if !crate::code::guard::active() {
            tracing::warn!("the thread-local guard is not exported by this executable: purged versions will be kept mapped (see hotswap_runtime::guard_link_args)");
        }
        let inner = Arc::new(NodeInner::new(
            dir,
            owned,
            config.purge_timeout,
            config.module_heaps,
            rt,
            crate::host_api::table(),
        ));
        inner.ports().set_read_ahead(config.read_ahead);
        Ok(Node {
            inner,
            apps: Arc::new(Apps::new()),
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

    /// Every open port (socket) of the node, by id: type, owner, addresses, counters,
    /// queues and mode (what `hotswap ports` shows).
    pub fn ports(&self) -> Vec<hotswap::net::PortInfo> {
        self.inner.ports().list()
    }

    /// Stop (`true`) or resume accepting on a listener, as the node's operator (no need to
    /// own it): open connections are untouched, new ones wait in the kernel's backlog. The
    /// listener's information afterwards. `hotswap ports --pause-accepting`.
    pub fn pause_accepting(
        &self,
        listener: hotswap::net::PortId,
        pause: bool,
    ) -> Result<hotswap::net::PortInfo, hotswap::net::NetError> {
        self.inner.ports().pause_accepting(listener.0, pause)
    }

    /// Drain a listener (ranch's `suspend_listener` then `wait_for_connections(==, 0)`):
    /// stop accepting, then wait up to `limit` until every connection accepted from it has
    /// closed. Returns the connections still open (0: drained). The listener stays open
    /// and paused: resume it with [`Node::pause_accepting`], or its owner closes it.
    /// `hotswap ports --drain`.
    pub async fn drain_listener(
        &self,
        listener: hotswap::net::PortId,
        limit: Duration,
    ) -> Result<usize, hotswap::net::NetError> {
        self.inner.ports().drain(listener.0, limit).await
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
                .bindings()
                .map(|v| (v.name.clone(), v.vsn.clone(), v.id))
                .collect(),
            memory: p.memory(&g),
            gen_server: self.inner.code.server_state_of(pid.0),
        })
    }

    /// A host-side process: a pid with a mailbox that host code (a test, a control server)
    /// reads directly. It traps exits, so links never kill it.
    pub fn external(&self) -> ExternalProcess {
        let (p, notify) = Process::new_host(self.inner.new_pid(), self.inner.clone());
        self.inner.table.insert(p.clone());
        ExternalProcess { proc: p, notify }
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
                g.rel().pending_exit = Some(ExitReason::Killed);
            }
        }
        for p in &procs {
            p.wake();
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
        n.ports().close_all(n);
        for (_, (h, _)) in n.timers.lock().drain() {
            h.abort();
        }
        let purges = n.code.purge_all(&n.table).await;
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

//! The release manifest (`releases/<version>/release.toml`): parsing and checking.
//!
//! A manifest names the release and its version, the modules (each with its version and
//! library file, relative to the release directory), the applications to start, and the
//! node's settings:
//!
//! ```toml
//! [release]
//! name = "tally"
//! version = "1.0.0"
//!
//! [node]                      # optional; these are the defaults
//! stop_timeout_ms = 5000      # how long a stop may take to stop the applications
//! purge_timeout_ms = 5000     # how long a purge waits before pinning a version
//! log_level = "info"          # RUST_LOG overrides it
//! control_read_timeout_ms = 5000  # a control connection's time to send its request
//! control_max_connections = 4096  # control connections open at once
//!
//! [[module]]
//! name = "demo"
//! version = "1"
//! file = "lib/demo-1/libdemo_v1.so"
//! depends = []                # modules it calls: an upgrade suspends it before them and
//!                             # resumes it after them (optional)
//!
//! [[application]]
//! name = "tally"
//! version = "1.0.0"
//! depends = []                # applications started before this one
//! start = [
//!   { spawn = "demo:start", arg = "tally-1", name = "tally-1" },
//! ]
//! ```
//!
//! An application is a supervision tree (spec §4-§5). By default its top supervisor is
//! one_for_one (intensity 1 in 5 seconds, as OTP) and its children are the `start`
//! entries, started in order and stopped in reverse: `spawn = "module:function"` (a
//! process) or `server = "module"` (a gen_server), each with an optional `arg` (any TOML
//! value, given to the function or to `init`, encoded as the SDK encodes messages) and an
//! optional registered `name`. Every key of the tree is optional:
//!
//! ```toml
//! [[application]]
//! name = "shop"
//! version = "2.1.0"
//! depends = ["tally"]
//! type = "permanent"          # or "transient", "temporary": what its termination means
//! strategy = "one_for_one"    # or "one_for_all", "rest_for_one", "simple_one_for_one"
//! intensity = 1               # at most this many restarts ...
//! period_secs = 5             # ... in this many seconds, or the tree gives up
//! start = [
//!   # id: unique in the tree (default: the name, else "<module>#<position>");
//!   # restart: "permanent" (default), "transient" or "temporary";
//!   # shutdown: "brutal_kill", milliseconds (default 5000) or "infinity";
//!   # type: "worker" (default) or "supervisor".
//!   { server = "cart", id = "cart", restart = "transient", shutdown = 2000 },
//!   { spawn = "audit:start", arg = { level = 2 }, shutdown = "brutal_kill" },
//! ]
//!
//! [[application]]             # or a tree that a module's Supervisor callback describes
//! name = "pool"
//! version = "1.0.0"
//! supervisor = "pool_sup"     # module whose hotswap::module! declares `supervisor: T`
//! arg = { size = 8 }          # the argument of its init
//! ```
//!
//! An optional `[upgrade]` table changes how an upgrade *to* this release treats a module
//! (see [`super::plan`]):
//!
//! ```toml
//! [upgrade.demo]
//! extra = { reset = true }    # the `Extra` of its gen_servers' code_change (any TOML value)
//! restart = true              # restart its processes through their supervisors instead
//! timeout_ms = 2000           # how long each of its processes may take to suspend
//! purge = "brutal_purge"      # kill processes still on old code (default "soft_purge":
//!                             # such a process refuses the upgrade, see PurgeMode)
//! ```
//!
//! A downgrade uses the target's table, or, for a module it does not name, the running
//! (newer) release's.
//!
//! `type` defaults to `permanent`, as in OTP releases: when a permanent application's top
//! supervisor exits (for example after too many restarts) the node stops the other
//! applications and exits with status 1; a transient one does so unless the exit is
//! `normal`; a temporary one is only logged. Applications start in manifest order, after
//! the ones they depend on, and stop in reverse.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::dir::ReleaseDir;
use crate::behaviour::application::{Application, StartType};
use crate::behaviour::supervisor::Source;
use hotswap::supervisor::{ChildSpec, ChildType, Restart, Shutdown, Spec, Start, Strategy};
use serde::{Deserialize, Serialize};

/// A release manifest (`releases/<version>/release.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The release's name and version.
    pub release: ReleaseId,
    /// Node settings.
    #[serde(default)]
    pub node: NodeSettings,
    /// The modules, loaded in this order before any application starts.
    #[serde(default, rename = "module")]
    pub modules: Vec<ModuleSpec>,
    /// The applications, in start order (dependencies first).
    #[serde(default, rename = "application")]
    pub applications: Vec<AppSpec>,
    /// How an upgrade to this release treats each module (by module name).
    #[serde(default)]
    pub upgrade: BTreeMap<String, UpgradeSpec>,
}

/// `[upgrade.<module>]`: how an upgrade to this release treats one module.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeSpec {
    /// The `Extra` argument of its gen_servers' `code_change` (encoded as messages are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<toml::Value>,
    /// Restart its processes (through their supervisors) instead of migrating them.
    #[serde(default)]
    pub restart: bool,
    /// How long each of its processes may take to answer the suspend (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What to do with processes still running old code of the module (OTP's PrePurge
    /// and PostPurge, spec §7.2): `soft_purge` (the default) refuses the upgrade when
    /// a process still runs an old version before it, and leaves the now-old version to
    /// the processes still in it after it; `brutal_purge` kills those processes, so the
    /// purge can proceed.
    #[serde(default, skip_serializing_if = "PurgeMode::is_soft")]
    pub purge: PurgeMode,
}

/// `[upgrade.<module>] purge`: OTP's PrePurge/PostPurge methods (spec §7.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeMode {
    /// Never kill: processes still on an old version before the upgrade refuse it;
    /// after it, the now-old version stays for the processes still in it.
    #[default]
    SoftPurge,
    /// Kill the processes still running an old version (the version older than the
    /// current one, and the one the upgrade replaces), once the switch has succeeded: an
    /// upgrade that rolls back kills nothing.
    BrutalPurge,
}

impl PurgeMode {
    /// Whether it is [`PurgeMode::SoftPurge`].
    pub fn is_soft(&self) -> bool {
        *self == PurgeMode::SoftPurge
    }
}

impl UpgradeSpec {
    /// `extra`, encoded as the SDK encodes messages.
    pub fn extra_bytes(&self) -> Option<Vec<u8>> {
        self.extra
            .as_ref()
            .map(|v| hotswap::codec::encode(&ArgValue(Some(v))))
    }
}

/// `[release]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseId {
    /// The release's name.
    pub name: String,
    /// The release's version.
    pub version: String,
}

/// The default of `[node] control_read_timeout_ms`.
pub const DEFAULT_CONTROL_READ_TIMEOUT_MS: u64 = 5000;
/// The default of `[node] control_max_connections`.
pub const DEFAULT_CONTROL_MAX_CONNECTIONS: usize = 4096;

/// `[node]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSettings {
    /// The time limit of a graceful stop: how long stopping the applications may take
    /// before the rest is killed.
    pub stop_timeout_ms: u64,
    /// How long a purge waits for processes to leave old code before it pins the version.
    pub purge_timeout_ms: u64,
    /// The log filter (`RUST_LOG` syntax); `RUST_LOG` overrides it.
    pub log_level: String,
    /// How long a connection to the control socket may take to send its whole request;
    /// then it gets an error answer and is closed. Each connection has its own deadline:
    /// an idle one delays no other.
    pub control_read_timeout_ms: u64,
    /// How many control connections may be open at once (at least 1). When one more
    /// arrives, the one that has waited longest for its request is closed. The node
    /// raises its open-file limit to fit them, as far as the hard limit allows.
    pub control_max_connections: usize,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            stop_timeout_ms: 5000,
            purge_timeout_ms: 5000,
            log_level: "info".into(),
            control_read_timeout_ms: DEFAULT_CONTROL_READ_TIMEOUT_MS,
            control_max_connections: DEFAULT_CONTROL_MAX_CONNECTIONS,
        }
    }
}

impl NodeSettings {
    /// `stop_timeout_ms` as a duration.
    pub fn stop_timeout(&self) -> Duration {
        Duration::from_millis(self.stop_timeout_ms)
    }

    /// `control_read_timeout_ms` as a duration.
    pub fn control_read_timeout(&self) -> Duration {
        Duration::from_millis(self.control_read_timeout_ms)
    }
}

/// `[[module]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// The module's name (as its `hotswap::module!` declares it).
    pub name: String,
    /// The version the library must hold (as its `hotswap::module!` declares it).
    pub version: String,
    /// The library, relative to the release directory (or absolute).
    pub file: PathBuf,
    /// Modules it calls (of this release): an upgrade suspends it before them and resumes
    /// it after them, as OTP's `DepMods`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
}

/// `[[application]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The application's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Applications that must be started before it.
    #[serde(default)]
    pub depends: Vec<String>,
    /// What its termination means for the node (default `permanent`).
    #[serde(default, rename = "type")]
    pub start_type: StartType,
    /// The top supervisor's strategy (default `one_for_one`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// The top supervisor's restart intensity (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intensity: Option<u32>,
    /// Its intensity period in seconds (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_secs: Option<u64>,
    /// A module whose `Supervisor` callback describes the whole tree (instead of `start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<String>,
    /// The argument of that callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<toml::Value>,
    /// The top supervisor's children, in start order.
    #[serde(default)]
    pub start: Vec<StartSpec>,
}

/// One child of an application's top supervisor.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartSpec {
    /// `module:function`: spawn a process running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn: Option<String>,
    /// `module`: start its gen_server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The argument (of the function, or of `init`); none means `()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<toml::Value>,
    /// Register the process under this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its id in the tree (default: `name`, else `<module>#<position>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When it is restarted (default `permanent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// How it is stopped: `"brutal_kill"`, milliseconds, or `"infinity"` (default 5000 for
    /// a worker, `"infinity"` for a supervisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<toml::Value>,
    /// `"worker"` (default) or `"supervisor"`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub child_type: Option<ChildType>,
}

/// What a start entry starts, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Starts {
    /// Spawn `module:function`.
    Spawn {
        /// The module.
        module: String,
        /// The function.
        function: String,
    },
    /// Start the gen_server of `module`.
    Server {
        /// The module.
        module: String,
    },
}

impl Starts {
    /// The module it runs.
    pub fn module(&self) -> &str {
        match self {
            Starts::Spawn { module, .. } | Starts::Server { module } => module,
        }
    }
}

impl fmt::Display for Starts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Starts::Spawn { module, function } => write!(f, "spawn {module}:{function}"),
            Starts::Server { module } => write!(f, "gen_server {module}"),
        }
    }
}

impl StartSpec {
    /// What it starts, or what is wrong with it.
    pub fn starts(&self) -> Result<Starts, String> {
        match (&self.spawn, &self.server) {
            (Some(s), None) => match s.split_once(':') {
                Some((m, f)) if !m.is_empty() && !f.is_empty() && !f.contains(':') => {
                    Ok(Starts::Spawn {
                        module: m.into(),
                        function: f.into(),
                    })
                }
                _ => Err(format!(
                    "spawn = {s:?} is not \"module:function\" (e.g. spawn = \"demo:start\")"
                )),
            },
            (None, Some(m)) if !m.is_empty() && !m.contains(':') => {
                Ok(Starts::Server { module: m.clone() })
            }
            (None, Some(m)) => Err(format!(
                "server = {m:?} must name a module (e.g. server = \"counter\")"
            )),
            (Some(_), Some(_)) => Err("has both spawn and server: give exactly one of them".into()),
            (None, None) => Err(
                "starts nothing: give spawn = \"module:function\" or server = \"module\"".into(),
            ),
        }
    }
}

/// A TOML value as a manifest shows it, for messages.
fn toml_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "[...]".into(),
        toml::Value::Table(_) => "{...}".into(),
    }
}

/// A `shutdown` value: `"brutal_kill"`, a number of milliseconds, or `"infinity"`.
pub fn parse_shutdown(v: &toml::Value) -> Result<Shutdown, String> {
    match v {
        toml::Value::Integer(ms) if *ms >= 0 => Ok(Shutdown::Timeout(Duration::from_millis(*ms as u64))),
        toml::Value::String(s) if s == "brutal_kill" => Ok(Shutdown::BrutalKill),
        toml::Value::String(s) if s == "infinity" => Ok(Shutdown::Infinity),
        other => Err(format!(
            "shutdown = {} is not a shutdown rule: give \"brutal_kill\", a number of milliseconds (e.g. shutdown = 5000) or \"infinity\"",
            toml_text(other)
        )),
    }
}

impl StartSpec {
    /// The child spec of the entry at `index` (0-based) of its application.
    pub fn child_spec(&self, index: usize) -> Result<ChildSpec, String> {
        let starts = self.starts()?;
        let arg = hotswap::codec::encode(&ArgValue(self.arg.as_ref()));
        let name = self.name.clone();
        let start = match &starts {
            Starts::Spawn { module, function } => Start::Spawn {
                module: module.clone(),
                function: function.clone(),
                arg,
                name,
            },
            Starts::Server { module } => Start::Server {
                module: module.clone(),
                arg,
                name,
            },
        };
        let id = match (&self.id, &self.name) {
            (Some(id), _) if id.is_empty() => return Err("id is empty".into()),
            (Some(id), _) => id.clone(),
            (None, Some(n)) => n.clone(),
            (None, None) => format!("{}#{}", starts.module(), index + 1),
        };
        let mut c = ChildSpec::new(id, start).restart(self.restart.unwrap_or_default());
        if let Some(t) = self.child_type {
            c.child_type = t;
        }
        if let Some(v) = &self.shutdown {
            c = c.shutdown(parse_shutdown(v)?);
        }
        Ok(c)
    }
}

impl AppSpec {
    /// The top supervisor's tree, or what is wrong with it.
    pub fn source(&self) -> Result<Source, String> {
        if let Some(m) = &self.supervisor {
            let mut extra: Vec<&str> = Vec::new();
            if !self.start.is_empty() {
                extra.push("start");
            }
            if self.strategy.is_some() {
                extra.push("strategy");
            }
            if self.intensity.is_some() {
                extra.push("intensity");
            }
            if self.period_secs.is_some() {
                extra.push("period_secs");
            }
            if !extra.is_empty() {
                return Err(format!(
                    "supervisor = {m:?} takes the whole tree from that module's Supervisor callback, so {} cannot be given too: remove {}, or remove supervisor",
                    extra.join(", "),
                    if extra.len() == 1 { "it" } else { "them" }
                ));
            }
            if m.is_empty() || m.contains(':') {
                return Err(format!(
                    "supervisor = {m:?} must name a module (e.g. supervisor = \"pool_sup\")"
                ));
            }
            return Ok(Source::Module {
                module: m.clone(),
                arg: hotswap::codec::encode(&ArgValue(self.arg.as_ref())),
            });
        }
        if self.arg.is_some() {
            return Err("arg is the argument of a supervisor module's init: give supervisor = \"module\" too (each start entry takes its own arg)".into());
        }
        let mut spec = Spec::new(self.strategy.unwrap_or_default());
        if let Some(i) = self.intensity {
            spec.intensity = i;
        }
        if let Some(p) = self.period_secs {
            spec.period_secs = p;
        }
        for (i, s) in self.start.iter().enumerate() {
            let c = s
                .child_spec(i)
                .map_err(|e| format!("start entry #{}: {e}", i + 1))?;
            spec = spec.child(c);
        }
        spec.check()
            .map_err(|e| format!("its supervision tree is invalid: {e}"))?;
        Ok(Source::Spec(spec))
    }

    /// The application to start (the manifest must have been checked).
    pub fn application(&self) -> Result<Application, String> {
        Ok(Application {
            name: self.name.clone(),
            version: self.version.clone(),
            depends: self.depends.clone(),
            start_type: self.start_type,
            supervisor: self.source()?,
        })
    }
}

/// A start entry's argument as the process gets it: the TOML value (tables become maps
/// with named fields, as the SDK encodes structs), or `()` when there is none.
#[derive(Debug, Clone, Copy)]
pub struct ArgValue<'a>(pub Option<&'a toml::Value>);

impl Serialize for ArgValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(v) => v.serialize(s),
            None => ().serialize(s),
        }
    }
}

/// A manifest that was read and checked.
#[derive(Debug, Clone)]
pub struct Release {
    /// The release directory.
    pub dir: ReleaseDir,
    /// The manifest's path.
    pub path: PathBuf,
    /// What it says, with the applications in start order.
    pub manifest: Manifest,
}

impl Release {
    /// Read and check the manifest of `version` in `dir`. Every problem is named, with the
    /// file and what to do.
    pub fn load(dir: &ReleaseDir, version: &str) -> Result<Release, String> {
        let path = dir.manifest(version);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the manifest {}: {e}", path.display()))?;
        let manifest = Release::parse(dir, &path, &text)?;
        if manifest.release.version != version {
            return Err(format!(
                "{}: [release] version is {:?}, but the manifest is in releases/{version}/: they must agree",
                path.display(),
                manifest.release.version
            ));
        }
        Ok(Release {
            dir: dir.clone(),
            path,
            manifest,
        })
    }

    /// Parse and check a manifest's text (`path` is for messages).
    pub fn parse(dir: &ReleaseDir, path: &Path, text: &str) -> Result<Manifest, String> {
        let p = path.display();
        let mut m: Manifest = toml::from_str(text)
            .map_err(|e| format!("{p} is not a valid release manifest: {e}"))?;
        let mut problems = Vec::new();
        if m.release.name.trim().is_empty() {
            problems.push("[release] name is empty".to_string());
        }
        if m.release.version.trim().is_empty() {
            problems.push("[release] version is empty".to_string());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&m.node.log_level) {
            problems.push(format!("[node] log_level {:?}: {e}", m.node.log_level));
        }
        if m.node.control_read_timeout_ms == 0 || m.node.control_read_timeout_ms > 3_600_000 {
            problems.push(format!(
                "[node] control_read_timeout_ms = {}: give a number of milliseconds from 1 to 3600000 (one hour)",
                m.node.control_read_timeout_ms
            ));
        }
        if m.node.control_max_connections == 0 || m.node.control_max_connections > 1 << 20 {
            problems.push(format!(
                "[node] control_max_connections = {}: give a number from 1 to 1048576",
                m.node.control_max_connections
            ));
        }
        let mut modules = BTreeSet::new();
        for (i, md) in m.modules.iter().enumerate() {
            let at = format!("[[module]] #{} ({:?})", i + 1, md.name);
            if md.name.is_empty() {
                problems.push(format!("{at}: name is empty"));
            } else if !modules.insert(md.name.clone()) {
                problems.push(format!("{at}: module {:?} is listed twice", md.name));
            }
            if md.version.is_empty() {
                problems.push(format!("{at}: version is empty"));
            }
            let file = dir.root().join(&md.file);
            if !file.is_file() {
                problems.push(format!(
                    "{at}: library file {} not found (file = {:?} is relative to the release directory {}); build the module crate and copy its lib*.so there",
                    file.display(),
                    md.file.display().to_string(),
                    dir.root().display()
                ));
            }
        }
        for md in &m.modules {
            for d in &md.depends {
                if !modules.contains(d) {
                    problems.push(format!(
                        "[[module]] {:?} depends on {d:?}, which is not a module of this release",
                        md.name
                    ));
                } else if d == &md.name {
                    problems.push(format!("[[module]] {:?} depends on itself", md.name));
                }
            }
        }
        for (name, u) in &m.upgrade {
            if !modules.contains(name) {
                problems.push(format!(
                    "[upgrade.{name}] names a module that is not in the release's [[module]] list"
                ));
            }
            if u.timeout_ms == Some(0) {
                problems.push(format!("[upgrade.{name}] timeout_ms must be at least 1"));
            }
        }
        let names: BTreeSet<String> = m.applications.iter().map(|a| a.name.clone()).collect();
        let mut seen = BTreeSet::new();
        for a in &m.applications {
            let at = format!("[[application]] {:?}", a.name);
            if a.name.is_empty() {
                problems.push("[[application]]: name is empty".into());
            } else if !seen.insert(a.name.clone()) {
                problems.push(format!("{at} is listed twice"));
            }
            if a.version.is_empty() {
                problems.push(format!("{at}: version is empty"));
            }
            for d in &a.depends {
                if !names.contains(d) {
                    problems.push(format!(
                        "{at} depends on {d:?}, which is not an application of this release"
                    ));
                }
            }
            let before = problems.len();
            if let Some(m) = &a.supervisor {
                if !m.is_empty() && !modules.contains(m) {
                    problems.push(format!(
                        "{at}: supervisor module {m:?} is not in the release's [[module]] list"
                    ));
                }
            }
            for (i, s) in a.start.iter().enumerate() {
                match s.starts() {
                    Err(e) => problems.push(format!("{at}, start entry #{}: {e}", i + 1)),
                    Ok(st) if !modules.contains(st.module()) => problems.push(format!(
                        "{at}, start entry #{} ({st}): module {:?} is not in the release's [[module]] list",
                        i + 1,
                        st.module()
                    )),
                    Ok(_) => {}
                }
                if s.name.as_deref() == Some("") {
                    problems.push(format!("{at}, start entry #{}: name is empty", i + 1));
                }
            }
            // The tree as a whole (ids, shutdown rules, flags), once its entries are sound.
            if problems.len() == before {
                if let Err(e) = a.source() {
                    problems.push(format!("{at}: {e}"));
                }
            }
        }
        if problems.is_empty() {
            match start_order(&m.applications) {
                Ok(order) => m.applications = order,
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Ok(m)
        } else {
            Err(format!(
                "{p} has {} problem{}:\n  - {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                problems.join("\n  - ")
            ))
        }
    }

    /// The absolute path of a module's library.
    pub fn module_file(&self, m: &ModuleSpec) -> PathBuf {
        self.dir.root().join(&m.file)
    }
}

/// Applications in manifest order, each moved after the ones it depends on; a cycle is an
/// error naming it.
fn start_order(apps: &[AppSpec]) -> Result<Vec<AppSpec>, String> {
    let by_name: BTreeMap<&str, &AppSpec> = apps.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut order: Vec<AppSpec> = Vec::new();
    let mut done = BTreeSet::new();
    fn visit<'a>(
        a: &'a AppSpec,
        by_name: &BTreeMap<&str, &'a AppSpec>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        order: &mut Vec<AppSpec>,
    ) -> Result<(), String> {
        if done.contains(&a.name) {
            return Ok(());
        }
        if path.contains(&a.name) {
            path.push(a.name.clone());
            return Err(format!(
                "the applications depend on each other in a cycle: {}",
                path.join(" -> ")
            ));
        }
        path.push(a.name.clone());
        for d in &a.depends {
            if let Some(dep) = by_name.get(d.as_str()) {
                visit(dep, by_name, done, path, order)?;
            }
        }
        path.pop();
        done.insert(a.name.clone());
        order.push(a.clone());
        Ok(())
    }
    for a in apps {
        visit(a, &by_name, &mut done, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (ReleaseDir, PathBuf) {
        let root =
            std::env::temp_dir().join(format!("hotswap-release-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("lib")).unwrap();
        std::fs::write(root.join("lib/libm.so"), b"").unwrap();
        (ReleaseDir::new(&root), root)
    }

    const GOOD: &str = r#"
        [release]
        name = "r"
        version = "1.0.0"
        [[module]]
        name = "m"
        version = "1"
        file = "lib/libm.so"
        [[application]]
        name = "b"
        version = "1"
        depends = ["a"]
        start = [{ server = "m", name = "srv" }]
        [[application]]
        name = "a"
        version = "1"
        start = [{ spawn = "m:start", arg = { n = 3 } }]
    "#;

    #[test]
    fn a_good_manifest_parses_and_orders_dependencies_first() {
        let (d, _root) = dir();
        let m = Release::parse(&d, Path::new("x.toml"), GOOD).expect("parses");
        let names: Vec<&str> = m.applications.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(m.node.stop_timeout_ms, 5000);
        assert_eq!(
            (
                m.node.control_read_timeout_ms,
                m.node.control_max_connections
            ),
            (5000, 4096)
        );
        assert_eq!(
            m.applications[0].start[0].starts(),
            Ok(Starts::Spawn {
                module: "m".into(),
                function: "start".into()
            })
        );
    }

    #[test]
    fn every_problem_is_named() {
        let (d, _root) = dir();
        let bad = GOOD
            .replace("lib/libm.so", "lib/missing.so")
            .replace("\"m:start\"", "\"m\"")
            .replace("depends = [\"a\"]", "depends = [\"zz\"]");
        let e = Release::parse(&d, Path::new("x.toml"), &bad).unwrap_err();
        assert!(e.contains("lib/missing.so"), "{e}");
        assert!(e.contains("not \"module:function\""), "{e}");
        assert!(e.contains("\"zz\""), "{e}");
        let e = Release::parse(&d, Path::new("x.toml"), "[release]\nname = 1").unwrap_err();
        assert!(e.contains("x.toml is not a valid release manifest"), "{e}");
        let e = Release::parse(
            &d,
            Path::new("x.toml"),
            &GOOD.replace("depends = [\"a\"]", "depends = [\"b\"]"),
        )
        .unwrap_err();
        assert!(e.contains("cycle: b -> b"), "{e}");
        let e = Release::parse(&d, Path::new("x.toml"), &format!("{GOOD}\nbogus = 1")).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let node = |settings: &str| {
            Release::parse(
                &d,
                Path::new("x.toml"),
                &GOOD.replace("[[module]]", &format!("[node]\n{settings}\n[[module]]")),
            )
        };
        let m = node("control_read_timeout_ms = 250\ncontrol_max_connections = 10").unwrap();
        assert_eq!(
            (
                m.node.control_read_timeout(),
                m.node.control_max_connections
            ),
            (Duration::from_millis(250), 10)
        );
        let e = node("control_read_timeout_ms = 0\ncontrol_max_connections = 0").unwrap_err();
        assert!(
            e.contains("control_read_timeout_ms = 0: give a number of milliseconds"),
            "{e}"
        );
        assert!(
            e.contains("control_max_connections = 0: give a number from 1"),
            "{e}"
        );
        let e = node("control_max_connections = -1").unwrap_err();
        assert!(e.contains("control_max_connections"), "{e}");
    }

    #[test]
    fn start_entries_become_the_top_supervisors_children() {
        let (d, _root) = dir();
        let m = Release::parse(&d, Path::new("x.toml"), GOOD).expect("parses");
        let b = &m.applications[1];
        assert_eq!(
            b.start_type,
            StartType::Permanent,
            "the default in releases"
        );
        let app = b.application().unwrap();
        let Source::Spec(spec) = &app.supervisor else {
            panic!("{app:?}")
        };
        assert_eq!(
            (spec.strategy, spec.intensity, spec.period_secs),
            (Strategy::OneForOne, 1, 5),
            "OTP's defaults"
        );
        assert_eq!(spec.children.len(), 1);
        let c = &spec.children[0];
        assert_eq!(c.id, "srv", "the id defaults to the name");
        assert_eq!(c.restart, Restart::Permanent);
        assert_eq!(c.shutdown_rule(), Shutdown::Timeout(Duration::from_secs(5)));
        assert_eq!(c.start.to_string(), "gen_server m");
        assert_eq!(c.start.name(), Some("srv"));
        let a = m.applications[0].application().unwrap();
        let Source::Spec(spec) = &a.supervisor else {
            panic!()
        };
        assert_eq!(spec.children[0].id, "m#1", "no name: module and position");

        let full = GOOD.replace(
            "start = [{ server = \"m\", name = \"srv\" }]",
            r#"type = "transient"
            strategy = "rest_for_one"
            intensity = 3
            period_secs = 10
            start = [
              { server = "m", id = "one", restart = "temporary", shutdown = "brutal_kill" },
              { spawn = "m:run", restart = "transient", shutdown = 250 },
              { server = "m", id = "three", shutdown = "infinity", type = "supervisor" },
            ]"#,
        );
        let m = Release::parse(&d, Path::new("x.toml"), &full).expect("parses");
        let b = m.applications[1].application().unwrap();
        assert_eq!(b.start_type, StartType::Transient);
        let Source::Spec(spec) = &b.supervisor else {
            panic!()
        };
        assert_eq!(
            (spec.strategy, spec.intensity, spec.period_secs),
            (Strategy::RestForOne, 3, 10)
        );
        let ids: Vec<&str> = spec.children.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["one", "m#2", "three"]);
        assert_eq!(spec.children[0].restart, Restart::Temporary);
        assert_eq!(spec.children[0].shutdown_rule(), Shutdown::BrutalKill);
        assert_eq!(spec.children[1].restart, Restart::Transient);
        assert_eq!(
            spec.children[1].shutdown_rule(),
            Shutdown::Timeout(Duration::from_millis(250))
        );
        assert_eq!(spec.children[2].shutdown_rule(), Shutdown::Infinity);
        assert_eq!(spec.children[2].child_type, ChildType::Supervisor);

        // A tree from a module's Supervisor callback.
        let module = GOOD.replace(
            "start = [{ server = \"m\", name = \"srv\" }]",
            "supervisor = \"m\"\narg = { children = 4 }",
        );
        let m = Release::parse(&d, Path::new("x.toml"), &module).expect("parses");
        let b = m.applications[1].application().unwrap();
        let Source::Module { module, arg } = &b.supervisor else {
            panic!("{b:?}")
        };
        assert_eq!(module, "m");
        #[derive(serde::Deserialize)]
        struct A {
            children: u32,
        }
        assert_eq!(hotswap::codec::decode::<A>(arg).unwrap().children, 4);
    }

    #[test]
    fn bad_trees_are_named_with_the_fix() {
        let (d, _root) = dir();
        let with = |tree: &str| {
            let text = GOOD.replace("start = [{ server = \"m\", name = \"srv\" }]", tree);
            assert_ne!(text, GOOD);
            Release::parse(&d, Path::new("x.toml"), &text).unwrap_err()
        };
        let cases: &[(&str, &[&str])] = &[
            (
                r#"start = [{ server = "m", shutdown = "soon" }]"#,
                &[
                    "x.toml",
                    "\"b\": start entry #1",
                    "shutdown = \"soon\" is not a shutdown rule",
                    "\"brutal_kill\", a number of milliseconds",
                ],
            ),
            (
                r#"start = [{ server = "m", shutdown = -1 }]"#,
                &["shutdown = -1 is not a shutdown rule"],
            ),
            (
                r#"strategy = "one_for_none""#,
                &[
                    "x.toml is not a valid release manifest",
                    "one_for_none",
                    "one_for_one",
                ],
            ),
            (
                r#"type = "forever""#,
                &["forever", "permanent", "transient", "temporary"],
            ),
            (
                r#"start = [{ server = "m", restart = "sometimes" }]"#,
                &["sometimes", "transient"],
            ),
            (
                r#"start = [{ server = "m", type = "boss" }]"#,
                &["boss", "worker"],
            ),
            (
                r#"start = [{ server = "m", colour = "red" }]"#,
                &["x.toml", "colour"],
            ),
            (
                r#"start = [{ server = "m", id = "x" }, { spawn = "m:f", id = "x" }]"#,
                &[
                    "\"b\": its supervision tree is invalid",
                    "duplicate_child_name",
                    "\"x\"",
                ],
            ),
            (
                r#"start = [{ server = "m", id = "" }]"#,
                &["start entry #1: id is empty"],
            ),
            ("period_secs = 0", &["the period must be at least 1 second"]),
            (
                "strategy = \"simple_one_for_one\"\nstart = []",
                &["simple_one_for_one", "exactly one child spec"],
            ),
            (
                "supervisor = \"m\"\nstart = [{ server = \"m\" }]\nintensity = 2",
                &[
                    "supervisor = \"m\" takes the whole tree",
                    "start, intensity",
                    "remove them, or remove supervisor",
                ],
            ),
            (
                "supervisor = \"nosuch\"",
                &["supervisor module \"nosuch\" is not in the release's [[module]] list"],
            ),
            (
                "arg = 3",
                &[
                    "arg is the argument of a supervisor module's init",
                    "supervisor = \"module\"",
                ],
            ),
        ];
        for (tree, want) in cases {
            let e = with(tree);
            for w in *want {
                assert!(e.contains(w), "{tree}: want {w:?} in:\n{e}");
            }
        }
    }
}

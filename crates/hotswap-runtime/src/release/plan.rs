//! The plan of an upgrade, derived (never hand-written) from the running and the target
//! release's manifests, the libraries' descriptors and the live processes.
//!
//! - **Modules** are added, removed, changed (their build ids differ) or unchanged.
//! - For each changed module, its **processes** come from the code server itself, not
//!   only from child specs (OTP's sharp edge): every gen_server whose state the current
//!   version made *migrates* (suspended, `code_change`, resumed), every other process
//!   bound to the current version *switches* at its next fully-qualified call, and
//!   `[upgrade.<module>] restart = true` makes their supervisors *restart* them instead.
//!   Processes still bound to the module's *old* version refuse the upgrade (old code
//!   must go first, like OTP's PrePurge `soft_purge`), unless `[upgrade.<module>] purge =
//!   "brutal_purge"` has them killed once the switch has succeeded (with those left on
//!   the replaced version): a rolled-back upgrade kills nothing.
//! - **Order** follows `depends` (spec §7.4): dependents are suspended first, and
//!   dependencies are resumed first.
//! - **Applications** are added, removed, restarted or changed. One whose start type or
//!   top supervisor module changed is stopped and started again (OTP's
//!   `restart_application`). Otherwise the old and the new tree of its top supervisor are
//!   compared (the manifests' trees, or, for a supervisor module, the trees both versions'
//!   `init` return for its argument): the supervisor takes the new one by sys
//!   `change_code` (new flags, new ids), the children it gains are started, those it loses
//!   stopped, those whose spec changed restarted with the new one. The same goes for the
//!   supervisors below it, compared in turn: one started as a supervisor module that
//!   changed (both versions' trees for its argument), or one whose tree its parent's
//!   entry gives (an entry that differs only by that tree is not a restart: the parent
//!   takes the new entry, the supervisor the new tree). A simple_one_for_one supervisor's
//!   children have no ids to be found by and are not compared.
//! - A target **older** than the running release makes it a downgrade: the newer
//!   version's `downgrade` converts each state back, the older version's `code_change`
//!   reads it ([`hotswap::gen_server::Direction::Down`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use hotswap::gen_server::Direction;
use hotswap::Pid;
use serde::Serialize;

use super::manifest::{AppSpec, PurgeMode, Release, UpgradeSpec};
use super::store::version_order;
use super::{ReleaseError, DEFAULT_SUSPEND_TIMEOUT};
use crate::behaviour::supervisor::Source;
use crate::code::Version;
use crate::node::Node;
use hotswap::supervisor::{ChildSpec, Spec, Start, Strategy, INIT_FUNCTION};

/// How a module differs between the two releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleChange {
    /// Only in the target release.
    Added,
    /// Only in the running release.
    Removed,
    /// In both, with different build ids.
    Changed,
    /// In both, the same build.
    Unchanged,
}

/// One module of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct ModulePlan {
    /// Its name.
    pub name: String,
    /// How it differs.
    pub change: ModuleChange,
    /// Its version in the running release.
    pub from_version: Option<String>,
    /// Its version in the target release.
    pub to_version: Option<String>,
    /// The running build's id.
    pub from_build: Option<String>,
    /// The target build's id.
    pub to_build: Option<String>,
    /// gen_servers whose state the current version made: suspended and migrated by
    /// `code_change` (restarted instead with `restart`).
    pub servers: Vec<Pid>,
    /// Other processes running the current version: they switch at their next
    /// fully-qualified call (restarted instead with `restart`).
    pub processes: Vec<Pid>,
    /// Processes still running its old version (they refuse the upgrade, or are killed
    /// with `purge = "brutal_purge"`).
    pub old_processes: Vec<Pid>,
    /// `[upgrade.<module>] purge`: what happens to processes still on old code.
    pub purge: PurgeMode,
    /// `[upgrade.<module>] restart`.
    pub restart: bool,
    /// The suspend time limit of its processes, in milliseconds.
    pub timeout_ms: u64,
    /// `[upgrade.<module>] extra`, as JSON (for display).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
    /// The modules it depends on (calls).
    pub depends: Vec<String>,
}

/// A supervisor of an application whose tree differs between the two releases: the top
/// one, or one below it. It takes the new tree by sys `change_code` (spec §4.8: new flags,
/// new ids added, running children kept), then the new children are started and the
/// removed ones stopped, as OTP's hand-written `apply` steps would.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupervisorChange {
    /// The child ids from the application's top supervisor down to this one (empty: the
    /// top supervisor).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// Children started.
    pub start: Vec<String>,
    /// Children stopped.
    pub stop: Vec<String>,
    /// Children whose entry changed: restarted with the new one.
    pub restart: Vec<String>,
    /// How the flags change (`intensity 2 -> 12`, ...), if they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    /// The supervisor module whose new version's `init` gives the new tree (both
    /// versions' trees were compared); none: the new tree is given, the manifest's (a top
    /// supervisor) or its parent's new entry (a supervisor below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The new tree when it is given (no module): the `Extra` of its `change_code`.
    #[serde(skip)]
    pub tree: Option<Spec>,
    /// The old tree when it is given: what a rollback gives back.
    #[serde(skip)]
    pub old_tree: Option<Spec>,
}

impl SupervisorChange {
    /// `supervisor of <app>` (the top one) or `supervisor <path> of <app>`.
    pub fn who(&self, app: &str) -> String {
        sup_name(app, &self.path)
    }
}

/// How an application differs between the two releases.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum AppChange {
    /// Only in the target release: started.
    Added,
    /// Only in the running release: stopped.
    Removed,
    /// Supervisors of its tree take new trees: its top supervisor's tree differs, or the
    /// tree of one below it (a supervisor module that changed, or a tree its parent's
    /// entry gives). Parents come before the supervisors below them.
    Children {
        /// Each supervisor whose tree changes.
        supervisors: Vec<SupervisorChange>,
    },
    /// Its start type or its top supervisor module changed: stopped and started again
    /// from the new release (OTP's `restart_application`); its processes start afresh,
    /// every other process keeps its state.
    Restart {
        /// What changed.
        reason: String,
    },
}

/// One application of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct AppPlan {
    /// Its name.
    pub name: String,
    /// What changes.
    #[serde(flatten)]
    pub change: AppChange,
}

/// One step, in the order the switch runs them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    /// Load the target's libraries as prepared versions and run each changed gen_server's
    /// `code_change` on a copy of every live state; nothing changes.
    Check {
        /// Libraries loaded.
        libraries: usize,
        /// States converted on a copy.
        states: usize,
    },
    /// `purge = "brutal_purge"`: kill the processes still running an old version of the
    /// module, so that version can be purged; done once the switch has succeeded (until
    /// then they run on, and a rolled-back upgrade kills nothing).
    PrePurge {
        /// The module.
        module: String,
        /// The processes killed.
        pids: Vec<Pid>,
    },
    /// Suspend the module's servers (dependents first).
    Suspend {
        /// The module.
        module: String,
        /// Its servers.
        pids: Vec<Pid>,
    },
    /// Convert every suspended server's state with the new code.
    CodeChange {
        /// The module.
        module: String,
        /// Up or down.
        direction: Direction,
        /// The servers.
        pids: Vec<Pid>,
    },
    /// Make every prepared version current (and delete removed modules) in one step.
    Commit {
        /// Modules made current.
        load: Vec<String>,
    },
    /// Start an application.
    StartApplication {
        /// Its name.
        name: String,
    },
    /// A supervisor of the application takes its new tree by sys `change_code` (new
    /// flags, new ids added without starting them, running children kept).
    SupervisorChangeCode {
        /// The application.
        application: String,
        /// The child ids from its top supervisor down to this one (empty: the top one).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<String>,
        /// The supervisor module whose new `init` gives the tree (none: the manifest's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        module: Option<String>,
        /// How its flags change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flags: Option<String>,
    },
    /// Stop an application and start it again from the new release.
    RestartApplication {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Change the children of a supervisor of the application.
    Supervisor {
        /// The application.
        application: String,
        /// The child ids from its top supervisor down to this one (empty: the top one).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<String>,
        /// Children started.
        start: Vec<String>,
        /// Children stopped.
        stop: Vec<String>,
        /// Children restarted with their new entry.
        restart: Vec<String>,
    },
    /// Resume the module's servers (dependencies first).
    Resume {
        /// The module.
        module: String,
        /// Its servers.
        pids: Vec<Pid>,
    },
    /// Restart processes through their supervisors (`restart = true`).
    Restart {
        /// The module.
        module: String,
        /// The processes.
        pids: Vec<Pid>,
    },
    /// Processes that switch to the new code at their next fully-qualified call.
    Switch {
        /// The module.
        module: String,
        /// The processes.
        pids: Vec<Pid>,
    },
    /// Stop an application.
    StopApplication {
        /// Its name.
        name: String,
    },
    /// Delete the removed modules (their current version becomes old).
    Delete {
        /// The modules.
        modules: Vec<String>,
    },
    /// Free the old versions nothing runs any more (`soft_purge`), or kill what still
    /// runs them first (`brutal_purge`).
    Purge {
        /// The modules purged softly.
        modules: Vec<String>,
        /// The modules purged brutally.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        brutal: Vec<String>,
    },
}

fn pids(p: &[Pid]) -> String {
    if p.is_empty() {
        return "none".into();
    }
    let shown: Vec<String> = p.iter().take(8).map(|p| p.to_string()).collect();
    if p.len() > 8 {
        format!("{} ... ({} in all)", shown.join(" "), p.len())
    } else {
        shown.join(" ")
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Check { libraries, states } => write!(
                f,
                "check: load {libraries} librar{} as prepared versions, run code_change on a copy of {states} live state{}",
                if *libraries == 1 { "y" } else { "ies" },
                if *states == 1 { "" } else { "s" }
            ),
            Step::PrePurge { module, pids: p } => write!(
                f,
                "brutal_purge {module}: kill {} process(es) still running its old code: {}",
                p.len(),
                pids(p)
            ),
            Step::Suspend { module, pids: p } => {
                write!(f, "suspend {module}: {} process(es): {}", p.len(), pids(p))
            }
            Step::CodeChange {
                module,
                direction,
                pids: p,
            } => write!(
                f,
                "code_change {module} ({}): {} state(s)",
                match direction {
                    Direction::Up => "up",
                    Direction::Down => "down",
                },
                p.len()
            ),
            Step::Commit { load } => write!(f, "commit: make current {}", list(load)),
            Step::StartApplication { name } => write!(f, "start application {name}"),
            Step::SupervisorChangeCode {
                application,
                path,
                module,
                flags,
            } => {
                write!(f, "{}: sys change_code", sup_name(application, path))?;
                match module {
                    Some(m) => write!(f, " (the tree of {m}'s new init)")?,
                    None if path.is_empty() => write!(f, " (the new manifest's tree)")?,
                    None => write!(f, " (the tree in its parent's new entry)")?,
                }
                if let Some(fl) = flags {
                    write!(f, ", flags {fl}")?;
                }
                Ok(())
            }
            Step::RestartApplication { name, reason } => {
                write!(f, "restart application {name} ({reason})")
            }
            Step::Supervisor {
                application,
                path,
                start,
                stop,
                restart,
            } => {
                write!(f, "{}:", sup_name(application, path))?;
                let mut sep = " ";
                for (what, ids) in [("start", start), ("stop", stop), ("restart", restart)] {
                    if !ids.is_empty() {
                        write!(f, "{sep}{what} {}", list(ids))?;
                        sep = ", ";
                    }
                }
                Ok(())
            }
            Step::Resume { module, pids: p } => {
                write!(f, "resume {module}: {} process(es): {}", p.len(), pids(p))
            }
            Step::Restart { module, pids: p } => write!(
                f,
                "restart {module} through its supervisors: {}",
                pids(p)
            ),
            Step::Switch { module, pids: p } => write!(
                f,
                "{module}: {} process(es) switch at their next fully-qualified call: {}",
                p.len(),
                pids(p)
            ),
            Step::StopApplication { name } => write!(f, "stop application {name}"),
            Step::Delete { modules } => write!(f, "delete {}", list(modules)),
            Step::Purge { modules, brutal } => {
                let mut sep = "";
                if !modules.is_empty() {
                    write!(
                        f,
                        "purge the old code of {} (where no process runs it)",
                        list(modules)
                    )?;
                    sep = "; ";
                }
                if !brutal.is_empty() {
                    write!(
                        f,
                        "{sep}brutal_purge the old code of {} (killing the processes still running it)",
                        list(brutal)
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// `supervisor of <app>` or `supervisor <path> of <app>`.
fn sup_name(app: &str, path: &[String]) -> String {
    if path.is_empty() {
        format!("supervisor of {app}")
    } else {
        format!("supervisor {} of {app}", path.join("/"))
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

/// What an upgrade does.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The running release.
    pub from: String,
    /// The target release.
    pub to: String,
    /// Up (a newer release) or down (an older one).
    pub direction: Direction,
    /// Every module of either release.
    pub modules: Vec<ModulePlan>,
    /// The applications that change.
    pub applications: Vec<AppPlan>,
    /// The changed modules with processes, dependents first (the suspend order).
    pub order: Vec<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Anything the plan cannot do and why (a dependency cycle kept in manifest order, a
    /// supervisor module's tree not compared, ...).
    pub notes: Vec<String>,
}

impl Plan {
    /// The module's plan.
    pub fn module(&self, name: &str) -> Option<&ModulePlan> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// How many servers migrate.
    pub fn servers(&self) -> usize {
        self.modules
            .iter()
            .filter(|m| !m.restart)
            .map(|m| m.servers.len())
            .sum()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} from release {} to {}",
            match self.direction {
                Direction::Up => "upgrade",
                Direction::Down => "downgrade",
            },
            self.from,
            self.to
        )?;
        writeln!(f, "modules:")?;
        for m in &self.modules {
            let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "  {:<20} {:<9} {} -> {}{}",
                m.name,
                format!("{:?}", m.change).to_lowercase(),
                v(&m.from_version),
                v(&m.to_version),
                match m.change {
                    ModuleChange::Changed | ModuleChange::Removed => format!(
                        "  ({} server(s) {}, {} other process(es) {})",
                        m.servers.len(),
                        if m.restart { "restart" } else { "migrate" },
                        m.processes.len(),
                        if m.restart { "restart" } else { "switch" }
                    ),
                    _ => String::new(),
                }
            )?;
        }
        if !self.applications.is_empty() {
            writeln!(f, "applications:")?;
            for a in &self.applications {
                match &a.change {
                    AppChange::Added => writeln!(f, "  {:<20} added", a.name)?,
                    AppChange::Removed => writeln!(f, "  {:<20} removed", a.name)?,
                    AppChange::Children { supervisors } => {
                        for c in supervisors {
                            let name = if c.path.is_empty() {
                                a.name.clone()
                            } else {
                                format!("{}/{}", a.name, c.path.join("/"))
                            };
                            write!(
                                f,
                                "  {:<20} children: start {}, stop {}, restart {}",
                                name,
                                list(&c.start),
                                list(&c.stop),
                                list(&c.restart)
                            )?;
                            if let Some(fl) = &c.flags {
                                write!(f, "; flags {fl}")?;
                            }
                            if let Some(m) = &c.module {
                                write!(f, " (trees of both versions of {m} compared)")?;
                            }
                            writeln!(f)?;
                        }
                    }
                    AppChange::Restart { reason } => {
                        writeln!(f, "  {:<20} restarted: {reason}", a.name)?
                    }
                }
            }
        }
        writeln!(f, "steps:")?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {:>2}. {s}", i + 1)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// The prepared versions of the target's changed and added modules, by name.
pub(crate) type Prepared = BTreeMap<String, Arc<Version>>;

/// Derive the plan from `running` to `target`, loading the target's libraries as prepared
/// versions (returned for the transaction; the caller discards them otherwise).
pub(crate) async fn derive(
    node: &Node,
    running: &Release,
    target: &Release,
) -> Result<(Plan, Prepared), ReleaseError> {
    let inner = &node.inner;
    let from = running.manifest.release.version.clone();
    let to = target.manifest.release.version.clone();
    let direction = if version_order(&to, &from).is_lt() {
        Direction::Down
    } else {
        Direction::Up
    };
    let mut prepared = Prepared::new();
    let discard_all = |prepared: Prepared| {
        for v in prepared.into_values() {
            inner.code.discard(v);
        }
    };
    let old_specs: BTreeMap<&str, _> = running
        .manifest
        .modules
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let new_specs: BTreeMap<&str, _> = target
        .manifest
        .modules
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let mut modules = Vec::new();
    let mut names: Vec<&str> = running
        .manifest
        .modules
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    for m in &target.manifest.modules {
        if !old_specs.contains_key(m.name.as_str()) {
            names.push(&m.name);
        }
    }
    for name in names {
        let current = inner.code.current(name);
        let mut mp = ModulePlan {
            name: name.to_string(),
            change: ModuleChange::Unchanged,
            from_version: current.as_ref().map(|v| v.vsn.clone()),
            to_version: None,
            from_build: current.as_ref().map(|v| v.build_id.clone()),
            to_build: None,
            servers: Vec::new(),
            processes: Vec::new(),
            old_processes: Vec::new(),
            restart: false,
            purge: PurgeMode::SoftPurge,
            timeout_ms: DEFAULT_SUSPEND_TIMEOUT.as_millis() as u64,
            extra: None,
            depends: Vec::new(),
        };
        let ov: Option<&UpgradeSpec> = target
            .manifest
            .upgrade
            .get(name)
            .or_else(|| running.manifest.upgrade.get(name));
        if let Some(u) = ov {
            mp.restart = u.restart;
            mp.purge = u.purge;
            if let Some(t) = u.timeout_ms {
                mp.timeout_ms = t;
            }
            mp.extra = u.extra.as_ref().and_then(|e| serde_json::to_value(e).ok());
        }
        let mut deps: BTreeSet<String> = BTreeSet::new();
        for s in [old_specs.get(name), new_specs.get(name)]
            .into_iter()
            .flatten()
        {
            deps.extend(s.depends.iter().cloned());
        }
        mp.depends = deps.into_iter().collect();
        if let Some(spec) = new_specs.get(name) {
            let file = target.module_file(spec);
            let v = match inner.code.prepare(&file, name) {
                Ok(v) => v,
                Err(e) => {
                    discard_all(prepared);
                    return Err(ReleaseError::Refused {
                        to,
                        failed: format!(
                            "module `{name}`: the library {} does not load: {e}",
                            file.display()
                        ),
                    });
                }
            };
            if v.vsn != spec.version {
                let got = v.vsn.clone();
                inner.code.discard(v);
                discard_all(prepared);
                return Err(ReleaseError::Refused {
                    to,
                    failed: format!(
                        "module `{name}`: {} holds version {got:?}, but the manifest of {} says {:?}",
                        file.display(),
                        target.manifest.release.version,
                        spec.version
                    ),
                });
            }
            mp.to_version = Some(v.vsn.clone());
            mp.to_build = Some(v.build_id.clone());
            match &current {
                None => {
                    mp.change = ModuleChange::Added;
                    prepared.insert(name.to_string(), v);
                }
                Some(c) if c.build_id == v.build_id && c.vsn == v.vsn => {
                    inner.code.discard(v);
                }
                Some(_) => {
                    mp.change = ModuleChange::Changed;
                    prepared.insert(name.to_string(), v);
                }
            }
        } else {
            mp.change = ModuleChange::Removed;
        }
        if let (Some(c), ModuleChange::Changed | ModuleChange::Removed) = (&current, mp.change) {
            let mut servers: Vec<Pid> = c
                .states
                .lock()
                .keys()
                .map(|&p| Pid(p))
                .filter(|p| node.is_alive(*p))
                .collect();
            servers.sort();
            let set: BTreeSet<Pid> = servers.iter().copied().collect();
            mp.processes = c
                .bound_pids(&inner.table)
                .into_iter()
                .filter(|p| !set.contains(p))
                .collect();
            mp.servers = servers;
        }
        if mp.change != ModuleChange::Unchanged {
            if let Some(old) = inner.code.old_of(name) {
                mp.old_processes = old.bound_pids(&inner.table);
            }
        }
        modules.push(mp);
    }
    let (order, mut notes) = suspend_order(&modules);
    // A supervisor module's tree, as the given version's side-effect-free `init` returns
    // it for `arg`.
    let init = |v: Option<Arc<Version>>, m: &str, arg: &[u8]| -> Result<Option<Spec>, String> {
        let v = v.ok_or_else(|| format!("supervisor module {m} is not loaded"))?;
        let b = v.call_function(INIT_FUNCTION, arg)?;
        hotswap::codec::decode(&b).map_err(|e| {
            format!("{m}:{INIT_FUNCTION} returned something that is not a supervisor spec: {e}")
        })
    };
    let trees = Trees {
        old: &|m, arg| init(inner.code.current(m), m, arg),
        new: &|m, arg| {
            init(
                prepared.get(m).cloned().or_else(|| inner.code.current(m)),
                m,
                arg,
            )
        },
        changed: &|m| {
            modules
                .iter()
                .any(|x| x.name == m && x.change == ModuleChange::Changed)
        },
    };
    let applications = app_changes(
        &running.manifest.applications,
        &target.manifest.applications,
        &trees,
        &mut notes,
    );
    let steps = steps(
        &modules,
        &order,
        &applications,
        &target.manifest.applications,
        direction,
        &running.manifest.applications,
    );
    Ok((
        Plan {
            from,
            to,
            direction,
            modules,
            applications,
            order,
            steps,
            notes,
        },
        prepared,
    ))
}

/// The changed (or removed) modules, dependents before their dependencies (spec §7.4);
/// a cycle keeps manifest order and is noted.
fn suspend_order(modules: &[ModulePlan]) -> (Vec<String>, Vec<String>) {
    let changed: Vec<&ModulePlan> = modules
        .iter()
        .filter(|m| matches!(m.change, ModuleChange::Changed | ModuleChange::Removed))
        .collect();
    let names: BTreeSet<&str> = changed.iter().map(|m| m.name.as_str()).collect();
    // Kahn's algorithm on "m before d" edges (m depends on d), stable in manifest order.
    let mut indegree: HashMap<&str, usize> = changed.iter().map(|m| (m.name.as_str(), 0)).collect();
    for m in &changed {
        for d in &m.depends {
            if names.contains(d.as_str()) {
                *indegree.get_mut(d.as_str()).expect("listed") += 1;
            }
        }
    }
    let mut order = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while let Some(next) = changed
        .iter()
        .find(|m| !done.contains(m.name.as_str()) && indegree[m.name.as_str()] == 0)
    {
        done.insert(&next.name);
        order.push(next.name.clone());
        for d in &next.depends {
            if let Some(n) = indegree.get_mut(d.as_str()) {
                *n -= 1;
            }
        }
    }
    let mut notes = Vec::new();
    let rest: Vec<String> = changed
        .iter()
        .filter(|m| !done.contains(m.name.as_str()))
        .map(|m| m.name.clone())
        .collect();
    if !rest.is_empty() {
        notes.push(format!(
            "the modules {} depend on each other in a cycle: they keep their manifest order",
            rest.join(", ")
        ));
        order.extend(rest);
    }
    (order, notes)
}

/// A supervisor module's tree for an encoded `init` argument (`None`: `ignore`).
type TreeOf<'a> = dyn Fn(&str, &[u8]) -> Result<Option<Spec>, String> + 'a;

/// How the plan reads supervisor trees: each supervisor module's tree for an argument,
/// from the running version (`old`) and from the version current after the upgrade
/// (`new`); and whether a module changes.
struct Trees<'a> {
    old: &'a TreeOf<'a>,
    new: &'a TreeOf<'a>,
    changed: &'a dyn Fn(&str) -> bool,
}

/// `strategy a -> b, intensity 1 -> 11, period 5 -> 10` for the flags that differ.
fn flags_change(o: &Spec, n: &Spec) -> Option<String> {
    let mut v = Vec::new();
    if o.strategy != n.strategy {
        v.push(format!("strategy {:?} -> {:?}", o.strategy, n.strategy).to_lowercase());
    }
    if o.intensity != n.intensity {
        v.push(format!("intensity {} -> {}", o.intensity, n.intensity));
    }
    if o.period_secs != n.period_secs {
        v.push(format!("period {} s -> {} s", o.period_secs, n.period_secs));
    }
    (!v.is_empty()).then(|| v.join(", "))
}

/// A supervisor below another whose tree may change: its id, its old and new trees, and
/// the module whose `init` gives them (none: its parent's entries give them).
struct Below {
    id: String,
    old: Spec,
    new: Spec,
    module: Option<String>,
}

/// Whether two entries differ only by the tree of the supervisor they start (a change
/// the running supervisor takes by `change_code`, not by a restart).
fn only_tree_differs(o: &ChildSpec, n: &ChildSpec) -> Option<(Spec, Spec)> {
    let (Start::Supervisor { spec: os, name: on }, Start::Supervisor { spec: ns, name: nn }) =
        (&o.start, &n.start)
    else {
        return None;
    };
    let same_rest = on == nn
        && o.id == n.id
        && o.restart == n.restart
        && o.shutdown == n.shutdown
        && o.child_type == n.child_type
        && o.modules == n.modules;
    same_rest.then(|| ((**os).clone(), (**ns).clone()))
}

/// The children of two trees compared by id: (started, stopped, restarted with their new
/// spec), and the supervisors below whose trees are compared in turn.
fn children_change(
    o: &Spec,
    n: &Spec,
    trees: &Trees<'_>,
    app: &str,
    notes: &mut Vec<String>,
) -> (Vec<String>, Vec<String>, Vec<String>, Vec<Below>) {
    let ids = |s: &Spec| -> BTreeMap<String, ChildSpec> {
        s.children
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect()
    };
    let (oi, ni) = (ids(o), ids(n));
    let start = n
        .children
        .iter()
        .filter(|c| !oi.contains_key(&c.id))
        .map(|c| c.id.clone())
        .collect();
    let stop = o
        .children
        .iter()
        .rev()
        .filter(|c| !ni.contains_key(&c.id))
        .map(|c| c.id.clone())
        .collect();
    let mut restart = Vec::new();
    let mut below = Vec::new();
    // A simple_one_for_one supervisor's children are made from its template: none has
    // an id to be found by.
    let dynamic = n.strategy == Strategy::SimpleOneForOne;
    for c in &n.children {
        let Some(oc) = oi.get(&c.id) else {
            continue;
        };
        if oc != c {
            match only_tree_differs(oc, c).filter(|_| !dynamic) {
                Some((old, new)) => below.push(Below {
                    id: c.id.clone(),
                    old,
                    new,
                    module: None,
                }),
                None => restart.push(c.id.clone()),
            }
            continue;
        }
        let Start::SupervisorModule { module, arg, .. } = &c.start else {
            continue;
        };
        if dynamic || !(trees.changed)(module) {
            continue;
        }
        match ((trees.old)(module, arg), (trees.new)(module, arg)) {
            (Ok(Some(old)), Ok(Some(new))) => below.push(Below {
                id: c.id.clone(),
                old,
                new,
                module: Some(module.clone()),
            }),
            (Ok(None), _) | (_, Ok(None)) => notes.push(format!(
                "application {app}: supervisor {}: {module}'s init returns ignore, so its tree is not compared",
                c.id
            )),
            (Err(e), _) | (_, Err(e)) => notes.push(format!(
                "application {app}: supervisor {}: its tree could not be read from {module}: {e}; it is not changed",
                c.id
            )),
        }
    }
    (start, stop, restart, below)
}

/// The supervisors of the tree at `path` that take a new tree, parents first: this one
/// if its tree differs, then those below it.
#[allow(clippy::too_many_arguments)]
fn tree_changes(
    app: &str,
    path: Vec<String>,
    old: &Spec,
    new: &Spec,
    module: Option<String>,
    trees: &Trees<'_>,
    notes: &mut Vec<String>,
    out: &mut Vec<SupervisorChange>,
) {
    let flags = flags_change(old, new);
    let (start, stop, restart, below) = children_change(old, new, trees, app, notes);
    if old != new {
        let given = module.is_none();
        out.push(SupervisorChange {
            path: path.clone(),
            start,
            stop,
            restart,
            flags,
            module,
            tree: given.then(|| new.clone()),
            old_tree: given.then(|| old.clone()),
        });
    }
    for b in below {
        let mut p = path.clone();
        p.push(b.id);
        tree_changes(app, p, &b.old, &b.new, b.module, trees, notes, out);
    }
}

fn app_changes(
    old: &[AppSpec],
    new: &[AppSpec],
    trees: &Trees<'_>,
    notes: &mut Vec<String>,
) -> Vec<AppPlan> {
    let mut out = Vec::new();
    let old_by: BTreeMap<&str, &AppSpec> = old.iter().map(|a| (a.name.as_str(), a)).collect();
    let new_by: BTreeMap<&str, &AppSpec> = new.iter().map(|a| (a.name.as_str(), a)).collect();
    for a in new {
        let Some(o) = old_by.get(a.name.as_str()) else {
            out.push(AppPlan {
                name: a.name.clone(),
                change: AppChange::Added,
            });
            continue;
        };
        // OTP's restart_application: what a running tree cannot take in place.
        let mut why = Vec::new();
        if o.start_type != a.start_type {
            why.push(format!("start type {} -> {}", o.start_type, a.start_type));
        }
        if o.supervisor != a.supervisor {
            let name = |s: &Option<String>| match s {
                Some(m) => format!("module {m}"),
                None => "the manifest's tree".into(),
            };
            why.push(format!(
                "top supervisor {} -> {}",
                name(&o.supervisor),
                name(&a.supervisor)
            ));
        } else if o.supervisor.is_some() && o.arg != a.arg {
            why.push("the argument of its supervisor module's init changed".into());
        }
        if !why.is_empty() {
            out.push(AppPlan {
                name: a.name.clone(),
                change: AppChange::Restart {
                    reason: why.join(", "),
                },
            });
            continue;
        }
        let (os, ns) = match (o.source(), a.source()) {
            (Ok(os), Ok(ns)) => (os, ns),
            (Err(e), _) | (_, Err(e)) => {
                notes.push(format!("application {}: {e}", a.name));
                continue;
            }
        };
        let (ot, nt, module) = match (&os, &ns) {
            (Source::Spec(ot), Source::Spec(nt)) => (ot.clone(), nt.clone(), None),
            (Source::Module { module, arg }, _) => {
                // An unchanged module gives the same tree, but supervisors below it may
                // still change.
                let new = if (trees.changed)(module) {
                    (trees.new)(module, arg)
                } else {
                    (trees.old)(module, arg)
                };
                match ((trees.old)(module, arg), new) {
                    (Ok(Some(ot)), Ok(Some(nt))) => (ot, nt, Some(module.clone())),
                    (Ok(None), _) | (_, Ok(None)) => {
                        if (trees.changed)(module) {
                            notes.push(format!(
                                "application {}: {module}'s init returns ignore, so its tree is not compared",
                                a.name
                            ));
                        }
                        continue;
                    }
                    (Err(e), _) | (_, Err(e)) if (trees.changed)(module) => {
                        notes.push(format!(
                            "application {}: its tree could not be read from {module}: {e}; the supervisor's change_code will fail and roll the upgrade back",
                            a.name
                        ));
                        out.push(AppPlan {
                            name: a.name.clone(),
                            change: AppChange::Children {
                                supervisors: vec![SupervisorChange {
                                    path: Vec::new(),
                                    start: Vec::new(),
                                    stop: Vec::new(),
                                    restart: Vec::new(),
                                    flags: None,
                                    module: Some(module.clone()),
                                    tree: None,
                                    old_tree: None,
                                }],
                            },
                        });
                        continue;
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        notes.push(format!(
                            "application {}: its tree could not be read from {module}: {e}",
                            a.name
                        ));
                        continue;
                    }
                }
            }
            _ => continue,
        };
        let mut supervisors = Vec::new();
        tree_changes(
            &a.name,
            Vec::new(),
            &ot,
            &nt,
            module,
            trees,
            notes,
            &mut supervisors,
        );
        if supervisors.is_empty() {
            continue;
        }
        out.push(AppPlan {
            name: a.name.clone(),
            change: AppChange::Children { supervisors },
        });
    }
    for a in old.iter().rev() {
        if !new_by.contains_key(a.name.as_str()) {
            out.push(AppPlan {
                name: a.name.clone(),
                change: AppChange::Removed,
            });
        }
    }
    out
}

fn steps(
    modules: &[ModulePlan],
    order: &[String],
    apps: &[AppPlan],
    target_apps: &[AppSpec],
    direction: Direction,
    _running_apps: &[AppSpec],
) -> Vec<Step> {
    let by: BTreeMap<&str, &ModulePlan> = modules.iter().map(|m| (m.name.as_str(), m)).collect();
    let migrating: Vec<&ModulePlan> = order
        .iter()
        .filter_map(|n| by.get(n.as_str()).copied())
        .filter(|m| m.change == ModuleChange::Changed && !m.restart && !m.servers.is_empty())
        .collect();
    let mut steps = vec![Step::Check {
        libraries: modules
            .iter()
            .filter(|m| matches!(m.change, ModuleChange::Added | ModuleChange::Changed))
            .count(),
        states: migrating.iter().map(|m| m.servers.len()).sum(),
    }];
    for m in &migrating {
        steps.push(Step::Suspend {
            module: m.name.clone(),
            pids: m.servers.clone(),
        });
    }
    for m in &migrating {
        steps.push(Step::CodeChange {
            module: m.name.clone(),
            direction,
            pids: m.servers.clone(),
        });
    }
    let mut load: Vec<String> = modules
        .iter()
        .filter(|m| matches!(m.change, ModuleChange::Added | ModuleChange::Changed))
        .map(|m| m.name.clone())
        .collect();
    // Dependencies first, as OTP loads them.
    load.sort_by_key(|n| order.iter().rev().position(|o| o == n).unwrap_or(0));
    let delete: Vec<String> = modules
        .iter()
        .filter(|m| m.change == ModuleChange::Removed)
        .map(|m| m.name.clone())
        .collect();
    steps.push(Step::Commit { load });
    let sups = || {
        apps.iter().flat_map(|a| match &a.change {
            AppChange::Children { supervisors } => {
                supervisors.iter().map(|c| (&a.name, c)).collect()
            }
            _ => Vec::new(),
        })
    };
    for (app, c) in sups() {
        steps.push(Step::SupervisorChangeCode {
            application: app.clone(),
            path: c.path.clone(),
            module: c.module.clone(),
            flags: c.flags.clone(),
        });
    }
    for a in target_apps {
        if apps
            .iter()
            .any(|p| p.name == a.name && p.change == AppChange::Added)
        {
            steps.push(Step::StartApplication {
                name: a.name.clone(),
            });
        }
    }
    for (app, c) in sups() {
        if !c.start.is_empty() {
            steps.push(Step::Supervisor {
                application: app.clone(),
                path: c.path.clone(),
                start: c.start.clone(),
                stop: Vec::new(),
                restart: Vec::new(),
            });
        }
    }
    for m in migrating.iter().rev() {
        steps.push(Step::Resume {
            module: m.name.clone(),
            pids: m.servers.clone(),
        });
    }
    // What cannot be undone comes once nothing can fail any more.
    for (app, c) in sups() {
        if !(c.stop.is_empty() && c.restart.is_empty()) {
            steps.push(Step::Supervisor {
                application: app.clone(),
                path: c.path.clone(),
                start: Vec::new(),
                stop: c.stop.clone(),
                restart: c.restart.clone(),
            });
        }
    }
    for n in order {
        let m = by[n.as_str()];
        if m.change != ModuleChange::Changed {
            continue;
        }
        if m.restart {
            let mut p = m.servers.clone();
            p.extend(&m.processes);
            if !p.is_empty() {
                steps.push(Step::Restart {
                    module: m.name.clone(),
                    pids: p,
                });
            }
        } else if !m.processes.is_empty() {
            steps.push(Step::Switch {
                module: m.name.clone(),
                pids: m.processes.clone(),
            });
        }
    }
    for a in apps {
        if let AppChange::Restart { reason } = &a.change {
            steps.push(Step::RestartApplication {
                name: a.name.clone(),
                reason: reason.clone(),
            });
        }
    }
    for a in apps {
        if a.change == AppChange::Removed {
            steps.push(Step::StopApplication {
                name: a.name.clone(),
            });
        }
    }
    if !delete.is_empty() {
        steps.push(Step::Delete { modules: delete });
    }
    // Kills come last, once the switch can no longer fail: a rolled-back upgrade kills
    // nothing.
    for m in modules {
        if m.purge == PurgeMode::BrutalPurge && !m.old_processes.is_empty() {
            steps.push(Step::PrePurge {
                module: m.name.clone(),
                pids: m.old_processes.clone(),
            });
        }
    }
    let purged = |mode: PurgeMode| -> Vec<String> {
        modules
            .iter()
            .filter(|m| matches!(m.change, ModuleChange::Changed | ModuleChange::Removed))
            .filter(|m| m.purge == mode)
            .map(|m| m.name.clone())
            .collect()
    };
    let (soft, brutal) = (purged(PurgeMode::SoftPurge), purged(PurgeMode::BrutalPurge));
    if !(soft.is_empty() && brutal.is_empty()) {
        steps.push(Step::Purge {
            modules: soft,
            brutal,
        });
    }
    steps
}

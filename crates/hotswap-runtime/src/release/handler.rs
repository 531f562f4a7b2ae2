//! The release handler: an upgrade as a transaction with no point of no return
//! (architecture §6).
//!
//! 1. **Plan and check**, touching nothing: the target's changed libraries are loaded as
//!    prepared versions; the types check compares each changed module's new description
//!    with the running one's (the static half of `Code::check`: an incompatible module
//!    refuses the upgrade unless [`UpgradeOptions::force`]); each changed gen_server's
//!    new `code_change` runs on a copy of every live state and the results are dropped
//!    (a server busy in a callback copies its state as the callback gives it back,
//!    waited for up to its suspend time limit);
//!    processes still on a changed module's old code refuse the upgrade (`soft_purge`).
//!    Any failure discards the prepared versions and names the process, the module and
//!    the error.
//! 2. **Switch**, under the code server's lock, with spawns of the changed modules held at
//!    the gate: free old code nothing runs (with `brutal_purge`, what still runs it is
//!    left running until the end: the commit displaces that version and keeps it); suspend
//!    the servers, module by module, dependents first: a server waiting between events is
//!    held in place (`Process::try_hold`: no message, one lock), the others get a sys
//!    suspend in parallel, each with its time limit (one that does not answer aborts);
//!    convert every suspended server's state with the new code, in parallel, keeping the
//!    old state objects; make every prepared version current in one step; supervisors
//!    whose tree changes (at any depth, parents first) take it by sys `change_code`;
//!    start the added applications and children; resume, dependencies first.
//! 3. **Rollback** on any failure in 2: the old versions current again, the old state
//!    objects back (no conversion needed), the supervisors' old trees back, the new
//!    versions discarded, every process resumed (held ones released), nothing killed
//!    (`brutal_purge` kills only in 4); queued messages stay queued.
//!    The error names what failed.
//! 4. **After**: the old state objects are dropped; removed children and applications are
//!    stopped; processes with `restart = true` are restarted by their supervisors;
//!    applications whose start type or top supervisor changed are restarted; removed
//!    modules are deleted; old code nothing runs is purged (with `brutal_purge`, what
//!    still runs it, the displaced version's or the replaced one's, is killed first).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotswap::gen_server::Direction;
use hotswap::sys::Request;
use hotswap::Pid;
use serde::Serialize;

use super::manifest::{PurgeMode, Release};
use super::migrate::{self, Migration};
use super::plan::{self, AppChange, ModuleChange, Plan, Prepared, SupervisorChange};
use super::sys_batch::{self, Answer};
use super::{NodeReleases, ReleaseError};
use crate::behaviour::server::StateCell;
use crate::behaviour::supervisor::ChildPid;
use crate::code::compat::{self, CompatReport};
use crate::code::Version;
use crate::node::Node;
use crate::process::NodeInner;
use hotswap::supervisor::Spec;

/// How an upgrade runs.
#[derive(Debug, Clone, Default)]
pub struct UpgradeOptions {
    /// Make the release permanent once the upgrade succeeded.
    pub permanent: bool,
    /// The suspend time limit of every process (default: each module's `timeout_ms`, else
    /// 5 s).
    pub suspend_timeout: Option<Duration>,
    /// Upgrade even if the types check refuses a changed module (its new version cannot
    /// read what the running one wrote), as `hotswap load --force` does; what it found is
    /// reported in [`UpgradeReport::warnings`]. The dry run of `code_change` on the live
    /// states still runs and still refuses.
    pub force: bool,
    /// Suspend every server with a `sys` suspend request, as before servers waiting
    /// between events were held in place: for measuring what holding saves.
    pub suspend_by_message: bool,
}

/// The upgrade in progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// The target release.
    pub to: String,
    /// The phase: `plan`, `check`, `suspend`, `code_change`, `commit`, `applications`,
    /// `resume`, `finish`, or `rollback`.
    pub phase: String,
    /// Processes done in this phase.
    pub done: usize,
    /// Processes this phase touches.
    pub total: usize,
    /// Since the upgrade began, in milliseconds.
    pub elapsed_ms: u64,
}

/// The live side of [`Progress`].
pub(crate) struct ProgressState {
    to: String,
    phase: &'static str,
    done: Arc<AtomicUsize>,
    total: usize,
    started: Instant,
}

impl ProgressState {
    pub(crate) fn snapshot(&self) -> Progress {
        Progress {
            to: self.to.clone(),
            phase: self.phase.into(),
            done: self.done.load(Ordering::Relaxed).min(self.total),
            total: self.total,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// What a successful upgrade did.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeReport {
    /// The release the node ran.
    pub from: String,
    /// The release it runs now.
    pub to: String,
    /// Up or down.
    pub direction: Direction,
    /// Modules whose new version is current now.
    pub modules_changed: Vec<String>,
    /// Modules added.
    pub modules_added: Vec<String>,
    /// Modules deleted.
    pub modules_removed: Vec<String>,
    /// gen_servers whose state was migrated by `code_change`.
    pub servers_migrated: usize,
    /// Of the migrated servers, those held in place while they waited between events (no
    /// suspend message); the others were suspended by a `sys` request.
    pub servers_held: usize,
    /// Processes that switch at their next fully-qualified call.
    pub processes_switching: usize,
    /// Processes restarted through their supervisors.
    pub processes_restarted: usize,
    /// Processes killed because they still ran old code of a module with
    /// `purge = "brutal_purge"` (its old version, or the version it replaced), once the
    /// switch had succeeded.
    pub processes_killed: Vec<Pid>,
    /// Applications started.
    pub applications_started: Vec<String>,
    /// Applications stopped.
    pub applications_stopped: Vec<String>,
    /// Applications stopped and started again from the new release (their start type or
    /// top supervisor changed: OTP's `restart_application`).
    pub applications_restarted: Vec<String>,
    /// Spawns that waited at the gate during the switch.
    pub spawns_gated: usize,
    /// How long the servers were suspended (first suspend sent to last resume answered),
    /// in milliseconds.
    pub pause_ms: f64,
    /// The check, in milliseconds.
    pub check_ms: f64,
    /// The whole upgrade, in milliseconds.
    pub total_ms: f64,
    /// Each phase and how long it took, in milliseconds.
    pub phases: Vec<(String, f64)>,
    /// What the switch did, in the order it did it (`suspend rel_a (12)`, `commit ...`,
    /// `resume rel_b (3)`, ...).
    pub log: Vec<String>,
    /// What went wrong after the switch without undoing it (a child that did not
    /// restart, ...).
    pub warnings: Vec<String>,
    /// The plan that ran.
    pub plan: Plan,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One server to migrate.
#[derive(Clone)]
struct Target {
    pid: Pid,
    module: usize,
}

/// A module being migrated.
#[derive(Clone)]
struct Mig {
    name: String,
    /// The modules it depends on.
    depends: Vec<String>,
    from: Arc<Version>,
    to: Arc<Version>,
    extra: Option<Vec<u8>>,
    timeout: Duration,
    /// When the check began: a busy server's state is waited for until `since + timeout`.
    since: Instant,
    /// The servers the check's first pass found busy in a callback (shared by the clones
    /// the chunks get): its second pass waits for their states.
    busy: Arc<parking_lot::Mutex<Vec<u64>>>,
}

struct Ctx<'a> {
    node: &'a Node,
    to: String,
    started: Instant,
    phases: Vec<(String, f64)>,
    phase_start: Instant,
}

impl Ctx<'_> {
    fn inner(&self) -> &Arc<NodeInner> {
        &self.node.inner
    }

    fn phase(&mut self, phase: &'static str, total: usize) -> Arc<AtomicUsize> {
        let now = Instant::now();
        let prev = NodeReleases::of(self.inner())
            .progress
            .lock()
            .as_ref()
            .map(|p| p.phase);
        if let Some(p) = prev {
            self.phases
                .push((p.to_string(), ms(now - self.phase_start)));
        }
        self.phase_start = now;
        let done = Arc::new(AtomicUsize::new(0));
        *NodeReleases::of(self.inner()).progress.lock() = Some(ProgressState {
            to: self.to.clone(),
            phase,
            done: done.clone(),
            total,
            started: self.started,
        });
        tracing::info!(to = %self.to, phase, total, "upgrade phase");
        done
    }

    fn discard(&self, prepared: Prepared) {
        for v in prepared.into_values() {
            self.inner().code.discard(v);
        }
    }
}

/// How many servers one task converts.
const CHUNK: usize = 256;

/// Run the upgrade from `running` to `target`.
pub(crate) async fn run(
    node: &Node,
    running: &Release,
    target: &Release,
    opts: &UpgradeOptions,
) -> Result<UpgradeReport, ReleaseError> {
    let started = Instant::now();
    let mut cx = Ctx {
        node,
        to: target.manifest.release.version.clone(),
        started,
        phases: Vec::new(),
        phase_start: started,
    };
    let to = cx.to.clone();
    cx.phase("plan", 0);
    let (plan, prepared) = plan::derive(node, running, target).await?;
    let direction = plan.direction;

    // ---- check: nothing is touched ------------------------------------------------------
    for m in &plan.modules {
        if !m.old_processes.is_empty() && m.purge == PurgeMode::SoftPurge {
            cx.discard(prepared);
            return Err(ReleaseError::Refused {
                to,
                failed: format!(
                    "module `{}`: process(es) {} still run its old code (soft_purge); wait until they make a fully-qualified call, purge it (hotswap purge {}), or set purge = \"brutal_purge\" in [upgrade.{}] of the target release to kill them during the upgrade",
                    m.name,
                    pid_list(&m.old_processes),
                    m.name,
                    m.name
                ),
            });
        }
    }
    let mut warnings = Vec::new();
    if let Err(reports) = types_check(node, &plan, &prepared, opts.force, &mut warnings) {
        cx.discard(prepared);
        return Err(ReleaseError::Incompatible { to, reports });
    }
    let mut migs: Vec<Mig> = Vec::new();
    for name in &plan.order {
        let m = plan.module(name).expect("in the plan");
        if m.change != ModuleChange::Changed || m.restart {
            continue;
        }
        let (Some(from), Some(to_v)) = (node.inner.code.current(name), prepared.get(name)) else {
            continue;
        };
        if from.server.is_none() || to_v.server.is_none() {
            continue;
        }
        let spec = target
            .manifest
            .upgrade
            .get(name)
            .or_else(|| running.manifest.upgrade.get(name));
        migs.push(Mig {
            name: name.clone(),
            depends: m.depends.clone(),
            from,
            to: to_v.clone(),
            extra: spec.and_then(|u| u.extra_bytes()),
            timeout: opts
                .suspend_timeout
                .unwrap_or(Duration::from_millis(m.timeout_ms)),
            since: Instant::now(),
            busy: Arc::default(),
        });
    }
    let check_targets = collect(&migs, &node.inner);
    let done = cx.phase("check", check_targets.len());
    // First every server whose state no callback has, then (waiting for each as its
    // callback gives its state back, up to its suspend time limit) the busy ones.
    let first = run_chunks(
        &node.inner,
        &migs,
        &check_targets,
        direction,
        &done,
        |cell, m, dir, proc| {
            let r = migrate::check(cell, &m.from, &m.to, dir, m.extra.as_deref(), proc, None)?;
            if r == migrate::Checked::Busy {
                m.busy.lock().push(cell.pid);
            }
            Ok(None)
        },
    )
    .await;
    let busy: Vec<Target> = migs
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            let pids = std::mem::take(&mut *m.busy.lock());
            pids.into_iter().map(move |p| Target {
                pid: Pid(p),
                module: i,
            })
        })
        .collect();
    done.fetch_sub(busy.len(), Ordering::Relaxed);
    let checked = match first {
        Ok(_) if !busy.is_empty() => {
            run_chunks(
                &node.inner,
                &migs,
                &busy,
                direction,
                &done,
                |cell, m, dir, proc| {
                    let deadline = m.since + m.timeout;
                    migrate::check(
                        cell,
                        &m.from,
                        &m.to,
                        dir,
                        m.extra.as_deref(),
                        proc,
                        Some(deadline),
                    )
                    .map(|_| None)
                },
            )
            .await
        }
        other => other,
    };
    if let Err((pid, module, e, _)) = checked {
        drop(migs);
        cx.discard(prepared);
        return Err(ReleaseError::Refused {
            to,
            failed: format!("process {pid} (module `{module}`): {e}"),
        });
    }
    let check_ms = ms(started.elapsed());

    // ---- switch --------------------------------------------------------------------------
    let mut log: Vec<String> = Vec::new();
    let inner = node.inner.clone();
    let _lock = inner.code.switch_lock().await;
    let mut killed: Vec<Pid> = Vec::new();
    // Old code nothing runs goes now. Processes still on a `brutal_purge` module's old
    // code keep running: the commit displaces that version (a rollback puts it back), and
    // they are killed only once the switch can no longer fail, so a rolled-back upgrade
    // has killed nothing.
    for m in &plan.modules {
        if !matches!(m.change, ModuleChange::Changed | ModuleChange::Removed) {
            continue;
        }
        if let Err(p) = inner.code.soft_purge_held(&m.name, &inner.table).await {
            if m.purge == PurgeMode::BrutalPurge {
                continue;
            }
            drop(migs);
            cx.discard(prepared);
            return Err(ReleaseError::Refused {
                to,
                failed: format!(
                    "module `{}`: process(es) {} still run its old code",
                    m.name,
                    pid_list(&p)
                ),
            });
        }
    }
    let switched: BTreeSet<String> = plan
        .modules
        .iter()
        .filter(|m| m.change != ModuleChange::Unchanged)
        .map(|m| m.name.clone())
        .collect();
    inner.gate.close(switched);
    // Collected again with the gate closed: every server of these modules is here, or
    // waits at the gate.
    let targets = collect(&migs, &inner);
    let pause_start = Instant::now();
    let done = cx.phase("suspend", targets.len());
    // Servers waiting between events are held in place (no round trip through their
    // mailboxes: the suspend costs one lock each); the others (busy in a callback, in
    // init, ...) get a sys suspend, each with its time limit.
    let mut held: Vec<Vec<Pid>> = vec![Vec::new(); migs.len()];
    let mut suspended: Vec<Vec<Pid>> = vec![Vec::new(); migs.len()];
    let mut late: Vec<Pid> = Vec::new();
    let mut failure: Option<(String, String)> = None;
    for (i, m) in migs.iter().enumerate() {
        let mut mine: Vec<(Pid, Duration)> = Vec::new();
        for t in targets.iter().filter(|t| t.module == i) {
            match inner.table.get(t.pid.0) {
                Some(p) if !opts.suspend_by_message && p.try_hold() => {
                    held[i].push(t.pid);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => mine.push((t.pid, m.timeout)),
                None => {}
            }
        }
        let answers = sys_batch::send_all(&inner, &mine, &Request::Suspend, &done).await;
        log.push(format!(
            "suspend {} ({})",
            m.name,
            held[i].len() + mine.len()
        ));
        for ((pid, t), a) in mine.iter().zip(answers) {
            match a {
                Answer::Ok => suspended[i].push(*pid),
                Answer::NoProc => {}
                Answer::Timeout => {
                    // A late suspend is still obeyed: a resume follows it.
                    late.push(*pid);
                    failure.get_or_insert((
                        "suspend".into(),
                        format!(
                            "process {pid} (module `{}`) did not answer the suspend within {} ms",
                            m.name,
                            t.as_millis()
                        ),
                    ));
                }
                Answer::Failed(e) => {
                    failure.get_or_insert((
                        "suspend".into(),
                        format!(
                            "process {pid} (module `{}`) refused the suspend: {e}",
                            m.name
                        ),
                    ));
                }
            }
        }
        if failure.is_some() {
            break;
        }
    }
    let mut migrations: Vec<Migration> = Vec::new();
    let mut undo = None;
    let mut started_apps: Vec<String> = Vec::new();
    let mut started_children: Vec<(Pid, String)> = Vec::new();
    let mut changed_sups: Vec<ChangedSup> = Vec::new();
    let mut spawns_gated = 0;
    if failure.is_none() {
        let live: Vec<Target> = held
            .iter()
            .zip(&suspended)
            .enumerate()
            .flat_map(|(i, (h, v))| h.iter().chain(v).map(move |&pid| Target { pid, module: i }))
            .collect();
        let done = cx.phase("code_change", live.len());
        log.push(format!(
            "code_change {} ({} states)",
            match direction {
                Direction::Up => "up",
                Direction::Down => "down",
            },
            live.len()
        ));
        match run_chunks(
            &inner,
            &migs,
            &live,
            direction,
            &done,
            |cell, m, dir, proc| {
                migrate::migrate(cell, &m.from, &m.to, dir, m.extra.as_deref(), proc).map(Some)
            },
        )
        .await
        {
            Ok(ms) => migrations = ms,
            Err((pid, module, e, ms)) => {
                migrations = ms;
                let k = live.iter().position(|t| t.pid == pid).map_or(0, |k| k + 1);
                failure = Some((
                    "code_change".into(),
                    format!(
                        "process {pid} (module `{module}`, {k} of {}): {e}",
                        live.len()
                    ),
                ));
            }
        }
    }
    if failure.is_none() {
        cx.phase("commit", 0);
        let loads: Vec<(String, Option<Arc<Version>>)> = plan
            .steps
            .iter()
            .find_map(|s| match s {
                plan::Step::Commit { load } => Some(load.clone()),
                _ => None,
            })
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| prepared.get(&n).map(|v| (n, Some(v.clone()))))
            .collect();
        log.push(format!(
            "commit {}",
            loads
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        undo = Some(inner.code.commit(&loads));
        spawns_gated = inner.gate.waiting();
        inner.gate.open();
        cx.phase("supervisors", 0);
        if let Err(e) = change_supervisors(node, &plan, &mut changed_sups, &mut log).await {
            failure = Some(("supervisors".into(), e));
        }
    }
    if failure.is_none() {
        cx.phase("applications", 0);
        if let Err(e) = start_apps(
            node,
            &plan,
            target,
            &changed_sups,
            &mut started_apps,
            &mut started_children,
        )
        .await
        {
            failure = Some(("applications".into(), e));
        }
    }
    if let Some((phase, failed)) = failure {
        cx.phase("rollback", migrations.len());
        let gated = inner.gate.waiting();
        for (sup, id) in started_children.iter().rev() {
            let _ = node.supervisor().terminate_child(*sup, id.as_str()).await;
            let _ = node.supervisor().delete_child(*sup, id).await;
        }
        for a in started_apps.iter().rev() {
            let _ = node.stop_application(a).await;
        }
        if let Some(u) = undo.take() {
            inner.code.uncommit(u);
        }
        revert_supervisors(node, &changed_sups).await;
        rollback(migrations).await;
        inner.gate.open();
        sys_batch::post_all(&inner, &late, &Request::Resume);
        let resumed = resume(
            &inner,
            &migs,
            &held,
            &suspended,
            &Arc::new(AtomicUsize::new(0)),
            &mut Vec::new(),
        )
        .await;
        drop(migs);
        cx.discard(prepared);
        tracing::warn!(%to, %phase, %failed, resumed, gated, "upgrade rolled back");
        return Err(ReleaseError::RolledBack {
            to,
            phase,
            failed,
            resumed,
        });
    }
    let servers_held = held.iter().map(Vec::len).sum();
    let done = cx.phase("resume", suspended.iter().chain(&held).map(Vec::len).sum());
    resume(&inner, &migs, &held, &suspended, &done, &mut log).await;
    let pause_ms = ms(pause_start.elapsed());
    // The versions these name are freed below (a purge needs the only reference); the
    // old versions the commit displaced (still run by processes of `brutal_purge`
    // modules) are purged below.
    drop(migs);
    let mut displaced: Vec<Arc<Version>> = undo
        .take()
        .into_iter()
        .flatten()
        .filter_map(|u| u.into_displaced())
        .collect();

    // ---- after: nothing here undoes the switch ---------------------------------------------
    cx.phase("finish", migrations.len());
    let servers_migrated = migrations.len();
    finish(migrations).await;
    let mut restarted = 0;
    let mut stopped_apps = Vec::new();
    // Children stopped, and restarted with their new entries, bottom-up.
    for c in changed_sups.iter().rev() {
        let who = c.change.who(&c.app);
        for id in &c.change.stop {
            let r = node.supervisor().terminate_child(c.pid, id.as_str()).await;
            let d = node.supervisor().delete_child(c.pid, id).await;
            if let Err(e) = r
                .map_err(|e| e.to_string())
                .and(d.map_err(|e| e.to_string()))
            {
                warnings.push(format!("{who}: child {id} was not stopped: {e}"));
            }
        }
        for id in &c.change.restart {
            // Its spec was replaced by the change_code: a restart takes the new one.
            let t = node.supervisor().terminate_child(c.pid, id.as_str()).await;
            let r = node.supervisor().restart_child(c.pid, id).await;
            if let Err(e) = t
                .map_err(|e| e.to_string())
                .and(r.map(drop).map_err(|e| e.to_string()))
            {
                warnings.push(format!("{who}: child {id} was not restarted: {e}"));
            }
        }
    }
    for m in &plan.modules {
        if m.change == ModuleChange::Changed && m.restart {
            let mut pids = m.servers.clone();
            pids.extend(&m.processes);
            match restart_processes(node, &pids).await {
                Ok(n) => restarted += n,
                Err(e) => warnings.push(format!("module {}: {e}", m.name)),
            }
        }
    }
    let mut restarted_apps = Vec::new();
    for a in &plan.applications {
        if let AppChange::Restart { reason } = &a.change {
            match restart_application(node, &a.name, target).await {
                Ok(()) => {
                    log.push(format!("restart application {} ({reason})", a.name));
                    restarted_apps.push(a.name.clone());
                }
                Err(e) => warnings.push(format!(
                    "application {} was not restarted ({reason}): {e}",
                    a.name
                )),
            }
        }
    }
    for a in &plan.applications {
        if a.change == AppChange::Removed {
            match node.stop_application(&a.name).await {
                Ok(()) => stopped_apps.push(a.name.clone()),
                Err(e) => warnings.push(format!("application {} was not stopped: {e}", a.name)),
            }
        }
    }
    let removed: Vec<String> = plan
        .modules
        .iter()
        .filter(|m| m.change == ModuleChange::Removed)
        .map(|m| m.name.clone())
        .collect();
    if !removed.is_empty() {
        let dels: Vec<(String, Option<Arc<Version>>)> =
            removed.iter().map(|n| (n.clone(), None)).collect();
        displaced.extend(
            inner
                .code
                .commit(&dels)
                .into_iter()
                .filter_map(|u| u.into_displaced()),
        );
    }
    // Nothing can fail any more: what runs a `brutal_purge` module's old code is killed,
    // first the version the commit displaced (the processes that refused a soft purge),
    // then what is left on the replaced one.
    for v in displaced {
        let r = inner.code.purge_displaced(v, &inner.table).await;
        if !r.killed.is_empty() {
            log.push(format!(
                "brutal_purge {} ({} killed)",
                r.module,
                r.killed.len()
            ));
        }
        killed.extend(r.killed);
    }
    for m in &plan.modules {
        if !matches!(m.change, ModuleChange::Changed | ModuleChange::Removed) {
            continue;
        }
        if m.purge == PurgeMode::BrutalPurge {
            let r = inner.code.purge_held(&m.name, &inner.table).await;
            if !r.killed.is_empty() {
                warnings.push(format!(
                    "module {}: brutal_purge killed {} process(es) still running its replaced version: {}",
                    m.name,
                    r.killed.len(),
                    pid_list(&r.killed)
                ));
            }
            killed.extend(r.killed);
        } else if let Err(p) = inner.code.soft_purge_held(&m.name, &inner.table).await {
            tracing::info!(module = %m.name, processes = %pid_list(&p), "the replaced version stays old: processes still run it (soft_purge)");
        }
    }
    drop(_lock);
    cx.phase("done", 0);
    let pick = |c: ModuleChange| -> Vec<String> {
        plan.modules
            .iter()
            .filter(|m| m.change == c)
            .map(|m| m.name.clone())
            .collect()
    };
    let report = UpgradeReport {
        from: plan.from.clone(),
        to: plan.to.clone(),
        direction,
        modules_changed: pick(ModuleChange::Changed),
        modules_added: pick(ModuleChange::Added),
        modules_removed: removed,
        servers_migrated,
        servers_held,
        processes_switching: plan
            .modules
            .iter()
            .filter(|m| m.change == ModuleChange::Changed && !m.restart)
            .map(|m| m.processes.len())
            .sum(),
        processes_restarted: restarted,
        processes_killed: killed,
        applications_started: started_apps,
        applications_stopped: stopped_apps,
        applications_restarted: restarted_apps,
        spawns_gated,
        pause_ms,
        check_ms,
        total_ms: ms(started.elapsed()),
        phases: cx.phases.clone(),
        log,
        warnings,
        plan,
    };
    tracing::info!(to = %report.to, servers = report.servers_migrated, pause_ms = report.pause_ms, total_ms = report.total_ms, "upgrade done");
    Ok(report)
}

fn pid_list(p: &[Pid]) -> String {
    p.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The types check of every changed module (the static half of `Code::check`: the new
/// version's description against the running one's; the dry run on live states is the
/// check phase's own, in parallel). The reports that refuse, unless `force` (then they
/// become warnings). In a downgrade the newer version's `downgrade` converts each state
/// explicitly, so only the dry run checks the state; messages are still compared.
fn types_check(
    node: &Node,
    plan: &Plan,
    prepared: &Prepared,
    force: bool,
    warnings: &mut Vec<String>,
) -> Result<(), Vec<CompatReport>> {
    let mut refusing = Vec::new();
    for m in &plan.modules {
        if m.change != ModuleChange::Changed {
            continue;
        }
        let (Some(cur), Some(new)) = (node.inner.code.current(&m.name), prepared.get(&m.name))
        else {
            continue;
        };
        let (report, not_checked) = crate::code::static_check(&cur, new);
        let Some(mut r) = report else {
            if let Some(why) = not_checked {
                warnings.push(format!(
                    "module {}: not checked for compatibility: {why}",
                    m.name
                ));
            }
            continue;
        };
        if plan.direction == Direction::Down || m.restart {
            let why = if m.restart {
                "its processes restart with a fresh state (restart = true)"
            } else {
                "a downgrade: the newer version's downgrade converts each state; the dry run on the live states checks it"
            };
            r.incompatible
                .retain(|f| !(f.callback == "code_change" && f.level == compat::Level::Upgrade));
            r.unchecked.push(compat::Unchecked {
                callback: "code_change".into(),
                level: compat::Level::Upgrade,
                reason: why.into(),
            });
        }
        for f in r.incompatible.iter().chain(&r.warnings) {
            tracing::warn!(module = %m.name, forced = force, "{f}");
        }
        if r.refuses() {
            if force {
                warnings.push(format!(
                    "module {}: forced past the types check: {}",
                    m.name,
                    r.to_text().trim_end()
                ));
            } else {
                refusing.push(r);
            }
        }
    }
    if refusing.is_empty() {
        Ok(())
    } else {
        Err(refusing)
    }
}

/// The live servers of each migrating module (from its current version's states).
fn collect(migs: &[Mig], inner: &NodeInner) -> Vec<Target> {
    let mut out = Vec::new();
    for (i, m) in migs.iter().enumerate() {
        let mut pids: Vec<u64> = m.from.states.lock().keys().copied().collect();
        pids.sort_unstable();
        out.extend(
            pids.into_iter()
                .filter(|p| inner.table.get(*p).is_some())
                .map(|p| Target {
                    pid: Pid(p),
                    module: i,
                }),
        );
    }
    out
}

type ChunkErr = (Pid, String, String, Vec<Migration>);

/// Run `f` on every target's state cell, in parallel chunks; stops at the first error
/// (the other chunks stop soon after). The migrations made, or the first error with them.
async fn run_chunks<F>(
    inner: &Arc<NodeInner>,
    migs: &[Mig],
    targets: &[Target],
    dir: Direction,
    done: &Arc<AtomicUsize>,
    f: F,
) -> Result<Vec<Migration>, ChunkErr>
where
    F: Fn(
            &Arc<StateCell>,
            &Mig,
            Direction,
            *mut hotswap_abi::ProcHandle,
        ) -> Result<Option<Migration>, String>
        + Send
        + Sync
        + Copy
        + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let migs: Arc<Vec<Mig>> = Arc::new(migs.to_vec());
    // Module code (code_change, downgrade) runs on threads of the blocking pool, never on
    // the runtime's workers: a worker busy in a long conversion would stop driving the
    // node's I/O (the control socket, ports, timers) for as long as it takes. As many
    // threads as cores take the chunks in turn.
    let chunks: Arc<Vec<Vec<Target>>> =
        Arc::new(targets.chunks(CHUNK).map(<[Target]>::to_vec).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(chunks.len());
    let mut tasks = Vec::new();
    for _ in 0..threads {
        let (inner, migs, stop, done) = (inner.clone(), migs.clone(), stop.clone(), done.clone());
        let (chunks, next) = (chunks.clone(), next.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut made = Vec::new();
            let mine = std::iter::from_fn(|| chunks.get(next.fetch_add(1, Ordering::Relaxed)));
            for t in mine.flatten() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let m = &migs[t.module];
                let (name, from, to) = (&m.name, &m.from, &m.to);
                let Some(proc) = inner.table.get(t.pid.0) else {
                    continue; // exited since: nothing to migrate
                };
                let cell = from
                    .states
                    .lock()
                    .get(&t.pid.0)
                    .and_then(|w| w.upgrade())
                    .and_then(|c| c.into_any().downcast::<StateCell>().ok());
                let Some(cell) = cell else {
                    if to.states.lock().contains_key(&t.pid.0) {
                        continue;
                    }
                    stop.store(true, Ordering::Relaxed);
                    return Err((
                        t.pid,
                        name.clone(),
                        "its state is no longer an object of the version being replaced"
                            .to_string(),
                        made,
                    ));
                };
                match f(&cell, m, dir, proc.as_handle()) {
                    Ok(Some(mg)) => made.push(mg),
                    Ok(None) => {}
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err((t.pid, name.clone(), e, made));
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(made)
        }));
    }
    let mut all = Vec::new();
    let mut first_err: Option<(Pid, String, String)> = None;
    for t in tasks {
        match t.await {
            Ok(Ok(made)) => all.extend(made),
            Ok(Err((pid, m, e, made))) => {
                all.extend(made);
                if first_err.is_none() {
                    first_err = Some((pid, m, e));
                }
            }
            Err(e) => {
                first_err.get_or_insert((
                    Pid(0),
                    String::new(),
                    format!("a conversion task failed: {e}"),
                ));
            }
        }
    }
    match first_err {
        None => Ok(all),
        Some((p, m, e)) => Err((p, m, e, all)),
    }
}

/// Drop the old state objects (in parallel chunks).
async fn finish(migrations: Vec<Migration>) {
    each_chunk(migrations, Migration::commit).await
}

/// Put the old state objects back (in parallel chunks).
async fn rollback(migrations: Vec<Migration>) {
    each_chunk(migrations, Migration::rollback).await
}

async fn each_chunk(mut v: Vec<Migration>, f: fn(Migration)) {
    let mut tasks = Vec::new();
    while !v.is_empty() {
        let rest = v.split_off(v.len().saturating_sub(CHUNK * 4));
        tasks.push(tokio::spawn(async move { rest.into_iter().for_each(f) }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Resume the suspended servers, dependencies first (the reverse of the suspend order).
/// A module that a module resumed after it depends on is resumed and its answers awaited
/// before the next one; the others' resumes are only sent: a server takes its resume
/// before any other message waiting for it, so nothing can see it suspended once the
/// resume is in its mailbox. How many servers were sent (and, if awaited, answered) a
/// resume.
async fn resume(
    inner: &Arc<NodeInner>,
    migs: &[Mig],
    held: &[Vec<Pid>],
    suspended: &[Vec<Pid>],
    done: &Arc<AtomicUsize>,
    log: &mut Vec<String>,
) -> usize {
    let mut n = 0;
    for (i, pids) in suspended.iter().enumerate().rev() {
        let awaited = (0..i).any(|j| migs[j].depends.contains(&migs[i].name));
        log.push(format!(
            "resume {} ({})",
            migs[i].name,
            pids.len() + held[i].len()
        ));
        // Released at once: a held server takes no event until its flag is cleared, so
        // it is running again (as far as anyone can see) when this returns.
        for p in &held[i] {
            if let Some(proc) = inner.table.get(p.0) {
                proc.release_hold();
                n += 1;
            }
        }
        done.fetch_add(held[i].len(), Ordering::Relaxed);
        if !awaited {
            let sent = sys_batch::post_all(inner, pids, &Request::Resume);
            done.fetch_add(pids.len(), Ordering::Relaxed);
            n += sent;
            continue;
        }
        let t = migs[i].timeout.max(Duration::from_secs(5));
        let targets: Vec<(Pid, Duration)> = pids.iter().map(|p| (*p, t)).collect();
        let answers = sys_batch::send_all(inner, &targets, &Request::Resume, done).await;
        for ((pid, _), a) in targets.iter().zip(answers) {
            match a {
                Answer::Ok => n += 1,
                Answer::NoProc => {}
                other => {
                    tracing::warn!(pid = %pid, module = %migs[i].name, answer = ?other, "resume not answered")
                }
            }
        }
    }
    n
}

/// Start the added applications and the children the changed supervisors gain (parents
/// first).
async fn start_apps(
    node: &Node,
    plan: &Plan,
    target: &Release,
    changed: &[ChangedSup],
    started_apps: &mut Vec<String>,
    started_children: &mut Vec<(Pid, String)>,
) -> Result<(), String> {
    for a in &target.manifest.applications {
        if plan
            .applications
            .iter()
            .any(|p| p.name == a.name && p.change == AppChange::Added)
        {
            let app = a.application()?;
            node.start_application(app)
                .await
                .map_err(|e| format!("application {} did not start: {e}", a.name))?;
            started_apps.push(a.name.clone());
        }
    }
    for c in changed {
        // The supervisor's change_code added their specs; starting them is explicit, as
        // in OTP (spec §4.8).
        for id in &c.change.start {
            node.supervisor()
                .restart_child(c.pid, id)
                .await
                .map_err(|e| {
                    format!(
                        "application {}: {}: child {id} did not start: {e}",
                        c.app,
                        c.change.who(&c.app)
                    )
                })?;
            started_children.push((c.pid, id.clone()));
        }
    }
    Ok(())
}

/// A supervisor that took a new tree by `change_code`: what undoes it.
struct ChangedSup {
    app: String,
    pid: Pid,
    /// The change (its module gives the old tree after an uncommit; else its old tree is
    /// given back).
    change: SupervisorChange,
}

/// The pid of the supervisor at `path` below `top` (each step a running supervisor
/// child), or `None` if one of them is not running.
async fn supervisor_at(node: &Node, top: Pid, path: &[String]) -> Result<Option<Pid>, String> {
    let mut at = top;
    for id in path {
        let kids = node
            .supervisor()
            .which_children(at)
            .await
            .map_err(|e| format!("supervisor {at} did not list its children: {e}"))?;
        let found = kids.into_iter().find_map(|c| match c.pid {
            ChildPid::Running(p)
                if c.id.as_deref() == Some(id.as_str())
                    && c.child_type == crate::behaviour::supervisor::ChildType::Supervisor =>
            {
                Some(p)
            }
            _ => None,
        });
        match found {
            Some(p) => at = p,
            None => return Ok(None),
        }
    }
    Ok(Some(at))
}

/// sys `change_code` of one supervisor (suspended around it): `module`'s current `init`,
/// or the tree given.
async fn supervisor_change_code(
    node: &Node,
    sup: Pid,
    module: Option<&str>,
    tree: Option<&Spec>,
) -> Result<(), String> {
    let sys = node.sys();
    sys.suspend(sup)
        .await
        .map_err(|e| format!("its supervisor {sup} did not suspend: {e}"))?;
    let r = sys
        .change_code(
            sup,
            module.unwrap_or(""),
            "",
            tree.map(hotswap::codec::encode),
        )
        .await;
    let resumed = sys.resume(sup).await;
    r.map_err(|e| format!("the change_code of its supervisor {sup} failed: {e}"))?;
    resumed.map_err(|e| format!("its supervisor {sup} did not resume: {e}"))
}

/// Every supervisor whose tree changes takes it by sys `change_code` (spec §4.8): new
/// flags, new ids added without starting them, running children kept. Parents first: a
/// supervisor below takes its tree after its parent took the entry that gives it. One
/// that is not running is skipped: its parent's new entry (or its module's new `init`)
/// is what it starts with next.
async fn change_supervisors(
    node: &Node,
    plan: &Plan,
    changed: &mut Vec<ChangedSup>,
    log: &mut Vec<String>,
) -> Result<(), String> {
    for p in &plan.applications {
        let AppChange::Children { supervisors } = &p.change else {
            continue;
        };
        let Some(app) = node.applications().into_iter().find(|x| x.name == p.name) else {
            return Err(format!("application {} is not running", p.name));
        };
        for c in supervisors {
            let who = c.who(&p.name);
            let Some(pid) = supervisor_at(node, app.supervisor, &c.path)
                .await
                .map_err(|e| format!("{who}: {e}"))?
            else {
                log.push(format!("{who} is not running: not changed"));
                continue;
            };
            supervisor_change_code(node, pid, c.module.as_deref(), c.tree.as_ref())
                .await
                .map_err(|e| format!("application {}: {who}: {e}", p.name))?;
            log.push(if c.path.is_empty() {
                format!("change_code supervisor of {}", p.name)
            } else {
                format!("change_code {who}")
            });
            changed.push(ChangedSup {
                app: p.name.clone(),
                pid,
                change: c.clone(),
            });
        }
    }
    Ok(())
}

/// Undo [`change_supervisors`] (the old versions current again), bottom-up: each
/// supervisor takes its old tree back, and the ids the change added are deleted.
async fn revert_supervisors(node: &Node, changed: &[ChangedSup]) {
    for c in changed.iter().rev() {
        for id in &c.change.start {
            let _ = node.supervisor().delete_child(c.pid, id).await;
        }
        if let Err(e) = supervisor_change_code(
            node,
            c.pid,
            c.change.module.as_deref(),
            c.change.old_tree.as_ref(),
        )
        .await
        {
            tracing::warn!(application = %c.app, supervisor = %c.change.who(&c.app), "supervisor not reverted: {e}");
        }
    }
}

/// OTP's `restart_application`: stop the application, start it from the new release.
async fn restart_application(node: &Node, name: &str, target: &Release) -> Result<(), String> {
    let spec = target
        .manifest
        .applications
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| {
            format!(
                "no application {name} in release {}",
                target.manifest.release.version
            )
        })?;
    let app = spec.application()?;
    node.stop_application(name)
        .await
        .map_err(|e| format!("it did not stop: {e}"))?;
    node.start_application(app)
        .await
        .map(drop)
        .map_err(|e| format!("it did not start again: {e}"))
}

/// Restart processes through the supervisors that own them; how many.
async fn restart_processes(node: &Node, pids: &[Pid]) -> Result<usize, String> {
    let want: BTreeSet<Pid> = pids.iter().copied().collect();
    let mut n = 0;
    let mut sups: Vec<Pid> = node.applications().iter().map(|a| a.supervisor).collect();
    while let Some(sup) = sups.pop() {
        let kids = node
            .supervisor()
            .which_children(sup)
            .await
            .map_err(|e| e.to_string())?;
        for c in kids {
            let ChildPid::Running(p) = c.pid else {
                continue;
            };
            if c.child_type == crate::behaviour::supervisor::ChildType::Supervisor {
                sups.push(p);
            }
            if want.contains(&p) {
                if let Some(id) = c.id {
                    node.supervisor()
                        .terminate_child(sup, id.as_str())
                        .await
                        .map_err(|e| e.to_string())?;
                    node.supervisor()
                        .restart_child(sup, &id)
                        .await
                        .map_err(|e| e.to_string())?;
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

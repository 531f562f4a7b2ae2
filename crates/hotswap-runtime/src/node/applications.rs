//! Applications as host code starts and stops them, and the node's graceful shutdown.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use hotswap::Pid;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use super::Node;
use crate::behaviour::application::{
    finished, master, AppError, AppInfo, Application, MasterRequest, ShutdownReport, StartType,
    KILL_PHASE,
};

impl Node {
    /// Start an application (`application:start/2`): its dependencies must be running; its
    /// master starts the top supervisor and waits until the whole tree has started. Returns
    /// the top supervisor's pid.
    ///
    /// If the tree does not start, the error says why; for a permanent or transient
    /// application the node also records the halt reason
    /// `{application_start_failure, App, Reason}` ([`Node::halted`]), as OTP terminates
    /// the node then.
    pub async fn start_application(&self, app: Application) -> Result<Pid, AppError> {
        let apps = &self.apps;
        let name = app.name.clone();
        {
            let mut st = apps.state.lock();
            if st.shutting_down {
                return Err(AppError::Stopping(name));
            }
            if st.starting.contains(&name) || st.running.iter().any(|r| r.info.name == name) {
                return Err(AppError::AlreadyStarted(name));
            }
            if let Some(dep) = app
                .depends
                .iter()
                .find(|d| !st.running.iter().any(|r| r.info.name == **d))
            {
                return Err(AppError::NotStarted {
                    app: name,
                    dep: dep.clone(),
                });
            }
            st.starting.push(name.clone());
        }
        let start_type = app.start_type;
        let (tx, rx) = oneshot::channel();
        let (done, _) = watch::channel(None);
        let controller = self.apps.clone();
        let spawned = self
            .inner
            .spawn_native(None, 0, move |ctx| master(ctx, controller, app, tx, done));
        let result = match spawned {
            Err(_) => Err(AppError::Stopping(name.clone())),
            Ok(_) => rx.await.unwrap_or_else(|_| {
                Err(AppError::StartFailed {
                    app: name.clone(),
                    reason: "its application master was killed while the tree started".into(),
                })
            }),
        };
        if let Err(e) = &result {
            apps.state.lock().starting.retain(|n| *n != name);
            if start_type != StartType::Temporary && !matches!(e, AppError::Stopping(_)) {
                let reason = match e {
                    AppError::StartFailed { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                let why = format!("{{application_start_failure, {name}, {reason}}}");
                error!(application = %name, r#type = %start_type, "application {name} failed to start, type: {start_type}: the node terminates: {why}");
                apps.halt(why);
            }
        }
        result
    }

    /// Stop a running application (`application:stop/1`): its master sends
    /// `exit(Top, shutdown)` and waits, without a time limit, until the whole tree is down.
    /// This never takes the node down, whatever the start type; applications that depend
    /// on it keep running. A second request for the same application waits for the first.
    pub async fn stop_application(&self, name: &str) -> Result<(), AppError> {
        let (master, send, done) = {
            let mut st = self.apps.state.lock();
            let r = st
                .running
                .iter_mut()
                .find(|r| r.info.name == name)
                .ok_or_else(|| AppError::NotRunning(name.to_string()))?;
            let send = !r.stopping;
            r.stopping = true;
            (r.info.master, send, r.done.clone())
        };
        if send {
            self.send(master, &MasterRequest::StopApplication);
        }
        finished(done).await;
        self.apps.remove(name);
        Ok(())
    }

    /// The running applications, in start order.
    pub fn applications(&self) -> Vec<AppInfo> {
        let st = self.apps.state.lock();
        st.running.iter().map(|r| r.info.clone()).collect()
    }

    /// Wait until the node must terminate because an application did (spec §5.2): the
    /// halt reason, e.g. `{application_terminated, db, shutdown}`. The embedding program
    /// should then [`Node::shutdown`] (stopping the other applications) and exit with
    /// status 1.
    pub async fn halted(&self) -> String {
        let mut rx = self.apps.halt.subscribe();
        let got = rx.wait_for(Option::is_some).await.map(|h| h.clone());
        match got {
            Ok(Some(reason)) => reason,
            // The sender lives as long as the node, which `self` keeps alive.
            _ => std::future::pending().await,
        }
    }

    /// The halt reason, if an application has terminated the node ([`Node::halted`]).
    pub fn halt_reason(&self) -> Option<String> {
        self.apps.halt.borrow().clone()
    }

    /// Stop the node gracefully (`init:stop()`): refuse new applications, stop the running
    /// ones in reverse start order, one at a time and each completely, through their trees;
    /// then kill every remaining process and purge every module ([`Node::stop`]).
    ///
    /// `time_limit` bounds the graceful phase: when it runs out, the phase is abandoned
    /// with a log line naming what it was waiting for (application, supervisor, children
    /// still alive), and the node proceeds to kill. A second call (from anywhere) does not
    /// start another shutdown: it waits for the first and gets the same report.
    pub async fn shutdown(&self, time_limit: Duration) -> ShutdownReport {
        let node = self.clone();
        self.apps
            .shutdown
            .get_or_init(|| async move { node.shutdown_now(time_limit).await })
            .await
            .clone()
    }

    async fn shutdown_now(&self, limit: Duration) -> ShutdownReport {
        let t0 = tokio::time::Instant::now();
        let deadline = t0 + limit;
        let apps = &self.apps;
        let count = {
            let mut st = apps.state.lock();
            st.shutting_down = true;
            st.running.len()
        };
        info!(
            applications = count,
            time_limit_ms = limit.as_millis() as u64,
            "node shutdown: stopping the applications in reverse start order"
        );
        let mut stopped = Vec::new();
        let mut abandoned = None;
        loop {
            // The latest-started application still running (one that started while the
            // shutdown began is stopped too).
            let next = {
                let mut st = apps.state.lock();
                st.running.last_mut().map(|r| {
                    let send = !r.stopping;
                    r.stopping = true;
                    (r.info.clone(), send, r.done.clone())
                })
            };
            let Some((info, send, done)) = next else {
                break;
            };
            if send {
                self.send(info.master, &MasterRequest::StopApplication);
            }
            if tokio::time::timeout_at(deadline, finished(done))
                .await
                .is_err()
            {
                let what = self.waiting_for(&info);
                let left: Vec<String> = self.applications().into_iter().map(|a| a.name).collect();
                warn!(
                    "graceful shutdown abandoned: the time limit of {} ms ran out while waiting for {what}; applications not stopped: {}; killing every process",
                    limit.as_millis(),
                    left.join(", ")
                );
                abandoned = Some(what);
                break;
            }
            apps.remove(&info.name);
            stopped.push(info.name);
        }
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(KILL_PHASE);
        let stop = self.stop(left).await;
        apps.state.lock().running.clear();
        ShutdownReport {
            stopped,
            abandoned,
            stop,
            elapsed: t0.elapsed(),
        }
    }

    /// What stopping `app` waits for: its tree's processes that are still alive, and which
    /// supervisor is waiting for which child.
    fn waiting_for(&self, app: &AppInfo) -> String {
        let head = format!(
            "application {:?} ({}; master {}, top supervisor {})",
            app.name, app.start_type, app.master, app.supervisor
        );
        if !self.is_alive(app.supervisor) {
            return format!("{head}: its tree is down, the master has not finished");
        }
        // Walk the tree from the top: children are linked to their supervisor, and the
        // child a supervisor is stopping is unlinked and monitored instead.
        let mut seen: HashSet<u64> = HashSet::from([app.master.0, app.supervisor.0]);
        let mut queue = VecDeque::from([app.supervisor]);
        let mut waited: Vec<(Pid, Pid)> = Vec::new();
        let mut alive = 0usize;
        while let Some(p) = queue.pop_front() {
            let Some(proc) = self.inner.table.get(p.0) else {
                continue;
            };
            let (links, monitoring) = {
                let g = proc.inner.lock();
                if g.exited || g.external {
                    continue;
                }
                match g.rel.as_deref() {
                    Some(r) => (
                        r.links.iter().copied().collect::<Vec<u64>>(),
                        r.monitoring.values().copied().collect::<Vec<u64>>(),
                    ),
                    None => (Vec::new(), Vec::new()),
                }
            };
            for m in monitoring {
                if self.is_alive(Pid(m)) && seen.insert(m) {
                    waited.push((p, Pid(m)));
                    queue.push_back(Pid(m));
                    alive += 1;
                }
            }
            for l in links {
                if seen.insert(l) && self.is_alive(Pid(l)) {
                    queue.push_back(Pid(l));
                    alive += 1;
                }
            }
            if seen.len() > 100_000 {
                break;
            }
        }
        let mut out = head;
        for (sup, child) in waited.iter().take(5) {
            out.push_str(&format!(
                "; supervisor {sup} is waiting for {} to exit",
                self.describe(*child)
            ));
        }
        if waited.len() > 5 {
            out.push_str(&format!("; and {} more", waited.len() - 5));
        }
        out.push_str(&format!(
            "; {alive} process{} of its tree still alive",
            if alive == 1 { "" } else { "es" }
        ));
        out
    }

    /// A process in a few words: pid, registered name, what it runs.
    fn describe(&self, pid: Pid) -> String {
        let Some(i) = self.process_info(pid) else {
            return pid.to_string();
        };
        let mut s = pid.to_string();
        if let Some(n) = &i.name {
            s.push_str(&format!(" {n:?}"));
        }
        if let Some((m, v)) = &i.gen_server {
            s.push_str(&format!(" (gen_server {m} {v})"));
        } else if let Some((m, v, _)) = i.running.first() {
            s.push_str(&format!(" (running {m} {v})"));
        }
        s
    }
}

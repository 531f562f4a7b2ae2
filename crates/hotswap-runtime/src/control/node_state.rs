//! What the control server knows of the running node: [`NodeState`], and the application
//! trees it walks for `status` and `processes`. `start` builds it; the control server reads
//! it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::supervisor::{ChildPid, ChildType};
use crate::{AppInfo, Node, Pid};

use crate::release::Release;

/// How long the control server waits for a supervisor to list its children (a
/// supervisor busy stopping its tree answers only once it is done).
const WHICH_CHILDREN_TIMEOUT: Duration = Duration::from_secs(2);

/// A child of an application's top supervisor, as `status` shows it.
#[derive(Debug, Clone)]
pub struct AppChild {
    /// Its id in the tree.
    pub id: Option<String>,
    /// Its pid, if it runs.
    pub pid: Option<Pid>,
    /// Worker or supervisor.
    pub child_type: ChildType,
    /// What it runs, in words (`spawn demo:start`, `gen_server counter`, ...).
    pub starts: String,
}

/// What a process is to its application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The application master.
    Master,
    /// A supervisor of the tree.
    Supervisor,
    /// A worker of the tree.
    Worker,
}

impl Role {
    /// The word `processes` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "application_master",
            Role::Supervisor => "supervisor",
            Role::Worker => "worker",
        }
    }
}

/// Everything the control server needs to know about the running node.
#[derive(Debug)]
pub struct NodeState {
    /// The node.
    pub node: Node,
    /// The release it runs.
    pub release: Release,
    /// When it started.
    pub started: Instant,
    /// When it started, wall clock.
    pub started_at: SystemTime,
    /// The cookie every request must carry.
    pub cookie: String,
    /// The uid allowed to connect (besides root): the owner of the run directory.
    pub uid: u32,
    /// Asks the node to stop (with who asked).
    pub stop: tokio::sync::mpsc::UnboundedSender<String>,
}

impl NodeState {
    /// The state of a node that runs `release`, and the receiving end of its stop requests.
    pub fn new(
        node: Node,
        release: Release,
        cookie: String,
        uid: u32,
    ) -> (Arc<NodeState>, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (stop, rx) = tokio::sync::mpsc::unbounded_channel();
        let state = NodeState {
            node,
            release,
            started: Instant::now(),
            started_at: SystemTime::now(),
            cookie,
            uid,
            stop,
        };
        (Arc::new(state), rx)
    }

    /// The release the node runs: the booted one until an upgrade moves it.
    pub fn running(&self) -> Release {
        self.node
            .releases()
            .running()
            .unwrap_or_else(|| self.release.clone())
    }

    /// The children of an application's top supervisor, in start order (empty if the
    /// supervisor does not answer in time, e.g. while it stops its tree).
    pub async fn app_children(&self, app: &AppInfo) -> Vec<AppChild> {
        // What each child runs, by id: its start entry in the manifest, else its modules.
        let entries: std::collections::HashMap<String, String> = self
            .running()
            .manifest
            .applications
            .iter()
            .filter(|a| a.name == app.name)
            .flat_map(|a| a.start.iter().enumerate())
            .filter_map(|(i, s)| s.child_spec(i).ok())
            .map(|cs| (cs.id, cs.start.to_string()))
            .collect();
        let kids = which_children(&self.node, app.supervisor).await;
        kids.into_iter()
            .rev()
            .map(|c| {
                let entry = c.id.as_ref().and_then(|id| entries.get(id));
                let starts = match entry {
                    Some(s) => s.clone(),
                    None => match c.child_type {
                        ChildType::Supervisor => format!("supervisor {}", c.modules.join(" ")),
                        ChildType::Worker => c.modules.join(" "),
                    },
                };
                AppChild {
                    id: c.id,
                    pid: match c.pid {
                        ChildPid::Running(p) => Some(p),
                        _ => None,
                    },
                    child_type: c.child_type,
                    starts,
                }
            })
            .collect()
    }

    /// Every process of every application's tree: its application and its role. The tree
    /// is walked with `which_children` (a supervisor that does not answer in time is left
    /// out, with its subtree).
    pub async fn app_processes(&self) -> std::collections::HashMap<Pid, (String, Role)> {
        self.app_tree()
            .await
            .into_iter()
            .map(|(p, e)| (p, (e.app, e.role)))
            .collect()
    }

    /// Every process of every application's tree, with its place in it (its supervisor
    /// and its id there); walked as [`NodeState::app_processes`].
    pub async fn app_tree(&self) -> std::collections::HashMap<Pid, TreeEntry> {
        let mut out = std::collections::HashMap::new();
        for app in self.node.applications() {
            let entry = |role, parent, id| TreeEntry {
                app: app.name.clone(),
                role,
                parent,
                id,
            };
            out.insert(app.master, entry(Role::Master, None, None));
            out.insert(
                app.supervisor,
                entry(Role::Supervisor, Some(app.master), None),
            );
            let mut sups = vec![app.supervisor];
            while let Some(sup) = sups.pop() {
                for c in which_children(&self.node, sup).await {
                    if let ChildPid::Running(p) = c.pid {
                        let role = match c.child_type {
                            ChildType::Supervisor => {
                                sups.push(p);
                                Role::Supervisor
                            }
                            ChildType::Worker => Role::Worker,
                        };
                        out.insert(p, entry(role, Some(sup), c.id));
                    }
                }
            }
        }
        out
    }
}

/// A process's place in its application's tree.
#[derive(Debug, Clone)]
pub struct TreeEntry {
    /// The application.
    pub app: String,
    /// What it is to the application.
    pub role: Role,
    /// Its supervisor (the application master, for the top supervisor).
    pub parent: Option<Pid>,
    /// Its id in its supervisor (`None` for a simple_one_for_one child, or the top).
    pub id: Option<String>,
}

/// `which_children`, or nothing if the supervisor does not answer in time.
async fn which_children(node: &Node, sup: Pid) -> Vec<crate::supervisor::ChildInfo> {
    match tokio::time::timeout(
        WHICH_CHILDREN_TIMEOUT,
        node.supervisor().which_children(sup),
    )
    .await
    {
        Ok(Ok(v)) => v,
        _ => Vec::new(),
    }
}

//! Link and monitor operations shared by the host API and host-side handles.

use hotswap::ExitReason;
use hotswap_abi as abi;

use crate::process::{Envelope, Process};

/// Link `p` with `pid`. A dead or unknown `pid` sends `p` a `noproc` exit signal.
pub(crate) fn link(p: &Process, pid: u64) -> i32 {
    if pid == p.pid.0 {
        return 0;
    }
    let linked = match p.node.table.get(pid) {
        Some(t) => {
            let mut g = t.inner.lock();
            if g.exited.is_some() {
                false
            } else {
                if !g.links.contains(&p.pid.0) {
                    g.links.push(p.pid.0);
                }
                true
            }
        }
        None => false,
    };
    if linked {
        let mut g = p.inner.lock();
        if !g.links.contains(&pid) {
            g.links.push(pid);
        }
    } else {
        p.signal_exit(pid, &ExitReason::NoProc, false);
    }
    0
}

/// Remove a link in both directions.
pub(crate) fn unlink(p: &Process, pid: u64) -> i32 {
    p.inner.lock().links.retain(|&l| l != pid);
    if let Some(t) = p.node.table.get(pid) {
        t.inner.lock().links.retain(|&l| l != p.pid.0);
    }
    0
}

/// Monitor `pid` from `p`; a dead or unknown `pid` delivers `Down noproc` at once.
pub(crate) fn monitor(p: &Process, pid: u64) -> u64 {
    let r = p.node.new_ref();
    let alive = match p.node.table.get(pid) {
        Some(t) => {
            let mut g = t.inner.lock();
            if g.exited.is_some() {
                false
            } else {
                g.monitored_by.push((r, p.pid.0));
                true
            }
        }
        None => false,
    };
    if alive {
        p.inner.lock().monitoring.push((r, pid));
    } else {
        p.deliver(Envelope {
            kind: abi::MSG_DOWN,
            from: pid,
            reference: r,
            data: ExitReason::NoProc.encode(),
        });
    }
    r
}

/// Remove a monitor; `true` if it was active.
pub(crate) fn demonitor(p: &Process, r: u64) -> bool {
    let target = {
        let mut g = p.inner.lock();
        let Some(pos) = g.monitoring.iter().position(|&(mr, _)| mr == r) else {
            return false;
        };
        g.monitoring.swap_remove(pos).1
    };
    if let Some(t) = p.node.table.get(target) {
        t.inner.lock().monitored_by.retain(|&(mr, _)| mr != r);
    }
    true
}

//! Link and monitor operations shared by the host API and host-side handles.

use hotswap::ExitReason;
use hotswap_abi as abi;

use crate::process::{Envelope, Payload, Process};

/// Link `p` with `pid`. A dead or unknown `pid` sends `p` a `noproc` exit signal.
pub(crate) fn link(p: &Process, pid: u64) -> i32 {
    if pid == p.pid.0 {
        return 0;
    }
    let linked = match p.node.table.get(pid) {
        Some(t) => {
            let mut g = t.inner.lock();
            if g.exited {
                false
            } else {
                g.rel().links.insert(p.pid.0);
                true
            }
        }
        None => false,
    };
    if linked {
        p.inner.lock().rel().links.insert(pid);
    } else {
        p.signal_exit(pid, &ExitReason::NoProc, false);
    }
    0
}

/// Remove a link in both directions.
pub(crate) fn unlink(p: &Process, pid: u64) -> i32 {
    if let Some(r) = p.inner.lock().rel.as_mut() {
        r.links.remove(&pid);
    }
    if let Some(t) = p.node.table.get(pid) {
        if let Some(r) = t.inner.lock().rel.as_mut() {
            r.links.remove(&p.pid.0);
        }
    }
    0
}

/// Monitor `pid` from `p`; a dead or unknown `pid` delivers `Down noproc` at once.
pub(crate) fn monitor(p: &Process, pid: u64) -> u64 {
    let r = p.node.new_ref();
    let alive = match p.node.table.get(pid) {
        Some(t) => {
            let mut g = t.inner.lock();
            if g.exited {
                false
            } else {
                g.rel().monitored_by.insert(r, p.pid.0);
                true
            }
        }
        None => false,
    };
    if alive {
        p.inner.lock().rel().monitoring.insert(r, pid);
    } else {
        p.deliver(Envelope {
            kind: abi::MSG_DOWN,
            from: pid,
            reference: r,
            data: Payload::from_vec(ExitReason::NoProc.encode()),
        });
    }
    r
}

/// Remove a monitor; `true` if it was active.
pub(crate) fn demonitor(p: &Process, r: u64) -> bool {
    let target = {
        let mut g = p.inner.lock();
        let Some(target) = g.rel.as_mut().and_then(|rel| rel.monitoring.remove(&r)) else {
            return false;
        };
        target
    };
    if let Some(t) = p.node.table.get(target) {
        if let Some(rel) = t.inner.lock().rel.as_mut() {
            rel.monitored_by.remove(&r);
        }
    }
    true
}

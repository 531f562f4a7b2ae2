//! A gen_server's state and the version that made it.
//!
//! The state is an object of one module version, touched only through that version's
//! functions (architecture §2.2). It lives in a [`StateCell`] shared by the server's loop
//! and the version (which lists the cells it made), so that a purge can turn an idle
//! server's state into bytes with the old version's own `export_state` before unmapping
//! it: the server survives, and the current version's `code_change` reads the bytes at
//! its next message.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use hotswap_abi as abi;
use parking_lot::{Condvar, Mutex};

use crate::code::{DryRun, LiveState, Version};
use hotswap::private::write_vec;
use hotswap::Pid;

/// A state object made by a version.
pub(crate) struct StatePtr(pub(crate) *mut abi::StateObj);

// SAFETY: the object is only touched by one thread at a time (under the cell's lock, or by
// the server's callback while the cell is marked busy); module state types are `Send`
// (the SDK's `GenServer` requires it).
unsafe impl Send for StatePtr {}

/// Where a server's state is.
pub(crate) enum Slot {
    /// None yet (before `init`), or gone (after `terminate`).
    Empty,
    /// An object of `version`. `busy` while a callback borrows it.
    Live {
        version: Arc<Version>,
        obj: StatePtr,
        busy: bool,
    },
    /// Encoded, waiting for the current version's `code_change` (boxed: rare, and every
    /// server carries a `Slot`).
    Bytes(Box<Encoded>),
    /// The state could not be kept (its version failed to encode it before a purge).
    Lost(String),
}

/// A state encoded by version `vsn`.
pub(crate) struct Encoded {
    pub(crate) vsn: String,
    pub(crate) bytes: Vec<u8>,
}

/// A server's state, shared with the versions that list it.
pub(crate) struct StateCell {
    pub(crate) pid: u64,
    pub(crate) slot: Mutex<Slot>,
}

impl StateCell {
    pub(crate) fn new(pid: u64) -> Arc<StateCell> {
        Arc::new(StateCell {
            pid,
            slot: Mutex::new(Slot::Empty),
        })
    }

    /// Make `obj` of `version` the state (the slot must not hold a live object).
    pub(crate) fn set_live(self: &Arc<Self>, g: &mut Slot, version: &Arc<Version>, obj: StatePtr) {
        let listed: Weak<dyn LiveState> = Arc::downgrade(self) as Weak<dyn LiveState>;
        version.states.lock().insert(self.pid, listed);
        *g = Slot::Live {
            version: version.clone(),
            obj,
            busy: false,
        };
    }

    /// Take the slot's content out, unlisting a live object from its version (the caller
    /// owns the object then).
    pub(crate) fn take(&self, g: &mut Slot) -> Slot {
        let s = std::mem::replace(g, Slot::Empty);
        if let Slot::Live { version, .. } = &s {
            version.states.lock().remove(&self.pid);
        }
        s
    }
}

/// What [`StateCell::copy_when_idle`] got.
pub(crate) enum StateCopy {
    /// The state, encoded by the version that made it.
    Made(Vec<u8>),
    /// A callback has it (and kept it until the deadline).
    Busy,
    /// It is not a live object of the version asked for (another version's, or none).
    NotOurs,
}

/// A copy of a busy server's state, asked for while a callback had it (see
/// [`StateCell::copy_when_idle`]) and made by the server itself the moment the callback
/// gives it back, before it takes its next event.
struct WantedCopy {
    /// The copy once made: the encoded state, or why there is none.
    made: Mutex<Option<Result<Vec<u8>, String>>>,
    ready: Condvar,
}

/// How many copies are wanted, node-wide: a server giving its state back looks at
/// [`WANTED`] only when this is not zero (one relaxed load on every callback's return).
static WANTED_COUNT: AtomicUsize = AtomicUsize::new(0);

/// The copies wanted, by the address of their cell (unique while the asker holds the
/// cell). Registered and taken only under the cell's slot lock.
static WANTED: Mutex<Option<HashMap<usize, Arc<WantedCopy>>>> = Mutex::new(None);

fn cell_key(cell: &StateCell) -> usize {
    cell as *const StateCell as usize
}

/// The copy wanted of `cell`'s state, taken out of [`WANTED`] (the caller holds the slot
/// lock).
fn take_wanted(cell: &StateCell) -> Option<Arc<WantedCopy>> {
    if WANTED_COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let w = WANTED.lock().as_mut()?.remove(&cell_key(cell))?;
    WANTED_COUNT.fetch_sub(1, Ordering::Relaxed);
    Some(w)
}

fn fulfil(w: &WantedCopy, r: Result<Vec<u8>, String>) {
    *w.made.lock() = Some(r);
    w.ready.notify_all();
}

impl StateCell {
    /// The state a callback just gave back (`g`, the slot, locked): if a copy of it is
    /// wanted (a release check waits for it), make it now, before the next event can
    /// change it.
    pub(crate) fn given_back(&self, g: &Slot) {
        let Some(w) = take_wanted(self) else {
            return;
        };
        let r = match g {
            Slot::Live { version, obj, .. } => version.export_state(obj),
            _ => Err("the server has no state any more".into()),
        };
        fulfil(&w, r);
    }

    /// The server is gone (its loop dropped): a copy still wanted will never be made.
    pub(crate) fn abandoned(&self) {
        if WANTED_COUNT.load(Ordering::Relaxed) == 0 {
            return;
        }
        let _g = self.slot.lock();
        if let Some(w) = take_wanted(self) {
            fulfil(&w, Err("the server exited".into()));
        }
    }

    /// A copy of the state, encoded by `from`, the version that made it: at once if no
    /// callback has it; else, with a `deadline`, the state as the callback in progress
    /// gives it back (the server makes the copy before its next event), waited for until
    /// then.
    pub(crate) fn copy_when_idle(
        &self,
        from: &Arc<Version>,
        deadline: Option<Instant>,
    ) -> Result<StateCopy, String> {
        let (w, deadline) = {
            let g = self.slot.lock();
            match &*g {
                Slot::Live {
                    version,
                    obj,
                    busy: false,
                } if Arc::ptr_eq(version, from) => {
                    return version.export_state(obj).map(StateCopy::Made)
                }
                Slot::Live {
                    version,
                    busy: true,
                    ..
                } if Arc::ptr_eq(version, from) => {}
                _ => return Ok(StateCopy::NotOurs),
            }
            let Some(deadline) = deadline else {
                return Ok(StateCopy::Busy);
            };
            let w = Arc::new(WantedCopy {
                made: Mutex::new(None),
                ready: Condvar::new(),
            });
            let mut all = WANTED.lock();
            if all
                .get_or_insert_with(HashMap::new)
                .insert(cell_key(self), w.clone())
                .is_none()
            {
                WANTED_COUNT.fetch_add(1, Ordering::Relaxed);
            }
            (w, deadline)
        };
        let mut made = w.made.lock();
        while made.is_none() {
            if w.ready.wait_until(&mut made, deadline).timed_out() {
                break;
            }
        }
        if let Some(r) = made.take() {
            return r.map(StateCopy::Made);
        }
        drop(made);
        // Timed out: take the wish back, unless the server fulfilled it meanwhile.
        let g = self.slot.lock();
        if WANTED
            .lock()
            .as_mut()
            .and_then(|m| m.remove(&cell_key(self)))
            .is_some()
        {
            WANTED_COUNT.fetch_sub(1, Ordering::Relaxed);
            return Ok(StateCopy::Busy);
        }
        drop(g);
        let r = w.made.lock().take();
        r.unwrap_or_else(|| Err("its state copy was lost".into()))
            .map(StateCopy::Made)
    }
}

impl LiveState for StateCell {
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }

    /// A copy of the state encoded by the version that made it, decoded by `new`'s
    /// `code_change` outside the state's lock (the server goes on meanwhile).
    fn dry_run(&self, new: &Arc<Version>) -> Option<DryRun> {
        let pid = Pid(self.pid);
        let copy = {
            let g = self.slot.lock();
            match &*g {
                Slot::Live {
                    version,
                    obj,
                    busy: false,
                } => (version.vsn.clone(), version.export_state(obj)),
                Slot::Live { version, .. } => {
                    return Some(DryRun {
                        pid,
                        from_version: version.vsn.clone(),
                        error: None,
                        skipped: Some("the server was inside a callback".into()),
                    })
                }
                _ => return None,
            }
        };
        let (from_version, error) = match copy {
            (vsn, Err(e)) => (
                vsn,
                Some(format!("its version could not encode the state: {e}")),
            ),
            (vsn, Ok(bytes)) => match new.code_change(std::ptr::null_mut(), &vsn, &bytes, None) {
                Ok(obj) => {
                    new.drop_state(obj);
                    (vsn, None)
                }
                Err(e) => (
                    vsn,
                    Some(format!(
                        "code_change of version {} failed on a copy of the live state: {e}",
                        new.vsn
                    )),
                ),
            },
        };
        Some(DryRun {
            pid,
            from_version,
            error,
            skipped: None,
        })
    }

    /// Turn an idle live state of `v` into bytes (before `v` is unmapped).
    fn dehydrate(&self, v: &Arc<Version>) {
        let mut g = self.slot.lock();
        let ours =
            matches!(&*g, Slot::Live { version, busy: false, .. } if Arc::ptr_eq(version, v));
        if !ours {
            return;
        }
        let Slot::Live { version, obj, .. } = self.take(&mut g) else {
            return;
        };
        *g = match version.export_state(&obj) {
            Ok(bytes) => Slot::Bytes(Box::new(Encoded {
                vsn: version.vsn.clone(),
                bytes,
            })),
            Err(e) => Slot::Lost(format!(
                "version {} of {} could not encode the state before it was purged: {e}",
                version.vsn, version.name
            )),
        };
        version.drop_state(obj);
    }
}

impl Drop for StateCell {
    fn drop(&mut self) {
        let s = std::mem::replace(self.slot.get_mut(), Slot::Empty);
        if let Slot::Live { version, obj, .. } = s {
            version.states.lock().remove(&self.pid);
            version.drop_state(obj);
        }
    }
}

fn status_text(st: u32, out: Vec<u8>) -> Result<Vec<u8>, String> {
    match st {
        abi::STATUS_READY => Ok(out),
        abi::STATUS_PANICKED => Err(format!("panicked: {}", String::from_utf8_lossy(&out))),
        _ => Err(String::from_utf8_lossy(&out).into_owned()),
    }
}

fn out_ptr(v: &mut Vec<u8>) -> *mut c_void {
    v as *mut Vec<u8> as *mut c_void
}

impl Version {
    /// The gen_server callbacks (only versions that have them make states).
    pub(crate) fn sv(&self) -> &abi::ServerVTable {
        self.server
            .as_ref()
            .expect("only gen_server modules make states")
    }

    /// Encode a state this version made.
    pub(crate) fn export_state(&self, obj: &StatePtr) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let _in = self.enter();
        // SAFETY: `obj` is a live state of this version, not borrowed by a callback; the
        // version is mapped while `self` is reachable.
        let st = unsafe { (self.sv().export_state)(obj.0, out_ptr(&mut out), write_vec) };
        status_text(st, out)
    }

    /// The module's `format_status` text, if it has one.
    pub(crate) fn format_status(&self, obj: &StatePtr) -> Option<String> {
        let mut out = Vec::new();
        let _in = self.enter();
        // SAFETY: as for `export_state`.
        let st = unsafe { (self.sv().format_status)(obj.0, out_ptr(&mut out), write_vec) };
        (st == abi::STATUS_READY).then(|| String::from_utf8_lossy(&out).into_owned())
    }

    /// Destroy a state this version made.
    pub(crate) fn drop_state(&self, obj: StatePtr) {
        let mut out = Vec::new();
        let _in = self.enter();
        // SAFETY: `obj` is a live state of this version and is consumed here.
        let st = unsafe { (self.sv().drop_state)(obj.0, out_ptr(&mut out), write_vec) };
        if st != abi::STATUS_READY {
            tracing::warn!(module = %self.name, "a gen_server state destructor panicked: {}", String::from_utf8_lossy(&out));
        }
    }

    /// This version's `code_change(old_vsn, bytes, extra)`.
    pub(crate) fn code_change(
        &self,
        proc: *mut abi::ProcHandle,
        old_vsn: &str,
        bytes: &[u8],
        extra: Option<&[u8]>,
    ) -> Result<StatePtr, String> {
        let mut out = Vec::new();
        let mut obj: *mut abi::StateObj = std::ptr::null_mut();
        let _in = self.enter();
        // SAFETY: all byte ranges are valid for the call; `obj` and `out` outlive it.
        let st = unsafe {
            (self.sv().code_change)(
                proc,
                abi::Bytes::new(old_vsn.as_bytes()),
                abi::Bytes::new(bytes),
                abi::Bytes::new(extra.unwrap_or(&[])),
                extra.is_some() as u32,
                &mut obj,
                out_ptr(&mut out),
                write_vec,
            )
        };
        status_text(st, out).and_then(|_| {
            if obj.is_null() {
                Err("code_change returned no state".into())
            } else {
                Ok(StatePtr(obj))
            }
        })
    }

    /// Decode a state of this version from bytes it exported.
    pub(crate) fn import_state(&self, bytes: &[u8]) -> Result<StatePtr, String> {
        let mut out = Vec::new();
        let mut obj: *mut abi::StateObj = std::ptr::null_mut();
        let _in = self.enter();
        // SAFETY: as for `code_change`.
        let st = unsafe {
            (self.sv().import_state)(
                abi::Bytes::new(bytes),
                &mut obj,
                out_ptr(&mut out),
                write_vec,
            )
        };
        status_text(st, out).and_then(|_| {
            if obj.is_null() {
                Err("import returned no state".into())
            } else {
                Ok(StatePtr(obj))
            }
        })
    }
}

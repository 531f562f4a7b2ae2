//! Moving a suspended server's state from one version to another, keeping the old state
//! object alive until the transaction is decided (architecture §6, "Old states kept, not
//! re-made").
//!
//! Upgrade: the old version encodes its state, the new version's `code_change` builds the
//! new one. Downgrade: the newer version's `downgrade` encodes its state for the older
//! version, whose `code_change` (told the direction) builds it. Either way the old object
//! stays in a [`Migration`]: [`Migration::commit`] drops it with its own version's drop,
//! [`Migration::rollback`] drops the new one and puts it back, so going back needs no
//! conversion and cannot fail.

use std::ffi::c_void;
use std::sync::Arc;

use hotswap::gen_server::Direction;
use hotswap_abi as abi;

use crate::behaviour::server::{Slot, StateCell, StateCopy, StatePtr};
use crate::code::Version;
use hotswap::private::write_vec;

fn status_text(st: u32, out: Vec<u8>) -> Result<Vec<u8>, String> {
    match st {
        abi::STATUS_READY => Ok(out),
        abi::STATUS_PANICKED => Err(format!("panicked: {}", String::from_utf8_lossy(&out))),
        _ => Err(String::from_utf8_lossy(&out).into_owned()),
    }
}

/// Call `v`'s `code_change` entry with `flags`: a state object, or (with
/// `CODE_CHANGE_EXPORT_DOWN`) bytes.
fn code_change_raw(
    v: &Version,
    proc: *mut abi::ProcHandle,
    vsn: &str,
    bytes: &[u8],
    extra: Option<&[u8]>,
    flags: u32,
) -> Result<(Option<StatePtr>, Vec<u8>), String> {
    let mut out = Vec::new();
    let mut obj: *mut abi::StateObj = std::ptr::null_mut();
    let flags = flags
        | if extra.is_some() {
            abi::CODE_CHANGE_EXTRA
        } else {
            0
        };
    let _in = v.enter();
    // SAFETY: `v` is mapped while we hold it and has gen_server callbacks (checked by the
    // caller through `sv`); the byte ranges are valid for the call; `obj` and `out`
    // outlive it; `proc` is the server's handle (or null, which the SDK does not read).
    let st = unsafe {
        (v.sv().code_change)(
            proc,
            abi::Bytes::new(vsn.as_bytes()),
            abi::Bytes::new(bytes),
            abi::Bytes::new(extra.unwrap_or(&[])),
            flags,
            &mut obj,
            &mut out as *mut Vec<u8> as *mut c_void,
            write_vec,
        )
    };
    let out = status_text(st, out)?;
    Ok(((!obj.is_null()).then_some(StatePtr(obj)), out))
}

/// Build a state of `to` from the bytes `from` encoded, in `dir`.
pub(crate) fn convert(
    from: &Version,
    to: &Version,
    bytes: &[u8],
    dir: Direction,
    extra: Option<&[u8]>,
    proc: *mut abi::ProcHandle,
) -> Result<StatePtr, String> {
    let (bytes, flags) = match dir {
        Direction::Up => (std::borrow::Cow::Borrowed(bytes), 0),
        Direction::Down => {
            let (_, b) = code_change_raw(
                from,
                proc,
                &to.vsn,
                bytes,
                extra,
                abi::CODE_CHANGE_EXPORT_DOWN,
            )
            .map_err(|e| {
                format!(
                    "version {} of `{}` could not convert its state back to version {}: {e}",
                    from.vsn, from.name, to.vsn
                )
            })?;
            (std::borrow::Cow::Owned(b), abi::CODE_CHANGE_DOWN)
        }
    };
    match code_change_raw(to, proc, &from.vsn, &bytes, extra, flags) {
        Ok((Some(obj), _)) => Ok(obj),
        Ok((None, _)) => Err(format!(
            "code_change of `{}` version {} returned no state",
            to.name, to.vsn
        )),
        Err(e) => Err(format!(
            "code_change of `{}` from version {} to {} failed: {e}",
            to.name, from.vsn, to.vsn
        )),
    }
}

/// The encoded state of `cell` if it is an idle object of `from`.
fn encode_idle(g: &Slot, from: &Arc<Version>) -> Result<Vec<u8>, String> {
    match g {
        Slot::Live {
            version,
            obj,
            busy: false,
        } if Arc::ptr_eq(version, from) => version.export_state(obj),
        Slot::Live { busy: true, .. } => {
            Err("its state is in use by a callback (the server is busy)".into())
        }
        Slot::Live { version, .. } => Err(format!(
            "its state was made by version {} (#{}), not the one being replaced",
            version.vsn, version.id
        )),
        Slot::Bytes(_) => Err("its state is encoded, waiting for its next message".into()),
        Slot::Lost(r) => Err(format!("its state was lost: {r}")),
        Slot::Empty => Err("it has no state".into()),
    }
}

/// What the check did with one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Its state converted on a copy, the result dropped.
    Done,
    /// A callback had its state (until the deadline, if one was given).
    Busy,
    /// Its state is no object of the version replaced: nothing to check.
    Nothing,
}

/// Run the conversion on a copy of the live state and drop the result: nothing changes.
/// A server busy in a callback is, with a `deadline` (its suspend time limit), copied the
/// moment the callback gives its state back (the server makes the copy before its next
/// event); without one it is left for later. One still busy at the deadline is left to
/// the switch, whose suspend of it times out too, and the upgrade rolls back.
pub(crate) fn check(
    cell: &StateCell,
    from: &Arc<Version>,
    to: &Arc<Version>,
    dir: Direction,
    extra: Option<&[u8]>,
    proc: *mut abi::ProcHandle,
    deadline: Option<std::time::Instant>,
) -> Result<Checked, String> {
    let bytes = match cell.copy_when_idle(from, deadline)? {
        StateCopy::Made(b) => b,
        StateCopy::Busy => return Ok(Checked::Busy),
        StateCopy::NotOurs => return Ok(Checked::Nothing),
    };
    let obj = convert(from, to, &bytes, dir, extra, proc)?;
    to.drop_state(obj);
    Ok(Checked::Done)
}

/// A state moved to a new version, its old object kept.
pub(crate) struct Migration {
    cell: Arc<StateCell>,
    old_version: Arc<Version>,
    old_obj: StatePtr,
}

/// Move a suspended server's state from `from` to `to`.
pub(crate) fn migrate(
    cell: &Arc<StateCell>,
    from: &Arc<Version>,
    to: &Arc<Version>,
    dir: Direction,
    extra: Option<&[u8]>,
    proc: *mut abi::ProcHandle,
) -> Result<Migration, String> {
    let mut g = cell.slot.lock();
    let bytes = encode_idle(&g, from)?;
    let new = convert(from, to, &bytes, dir, extra, proc)?;
    let Slot::Live {
        version: old_version,
        obj: old_obj,
        ..
    } = cell.take(&mut g)
    else {
        unreachable!("encode_idle checked that the state is live")
    };
    cell.set_live(&mut g, to, new);
    Ok(Migration {
        cell: cell.clone(),
        old_version,
        old_obj,
    })
}

impl Migration {
    /// The transaction succeeded: drop the old object with its own version.
    pub(crate) fn commit(self) {
        self.old_version.drop_state(self.old_obj);
    }

    /// The transaction failed: drop the new object, put the old one back.
    pub(crate) fn rollback(self) {
        let mut g = self.cell.slot.lock();
        if let Slot::Live { version, obj, .. } = self.cell.take(&mut g) {
            version.drop_state(obj);
        }
        self.cell.set_live(&mut g, &self.old_version, self.old_obj);
    }
}

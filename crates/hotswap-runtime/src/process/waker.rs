//! The waker of a native body.

use std::sync::Arc;
use std::task::{RawWaker, RawWakerVTable, Waker};

use super::Process;

/// The waker of a process's native body: a wake makes the process runnable, as a message
/// does (it notifies the process, whose task then polls the body again). So a native
/// process can await any future, a tokio timer or channel included. Clones hold a
/// reference on the process.
static PROCESS_WAKER: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

unsafe fn waker_clone(p: *const ()) -> RawWaker {
    // SAFETY: `p` is `Arc::as_ptr` of a live process (the borrowed waker's process is alive
    // while it is borrowed; a clone holds its own reference).
    unsafe { Arc::increment_strong_count(p as *const Process) };
    RawWaker::new(p, &PROCESS_WAKER)
}

unsafe fn waker_wake(p: *const ()) {
    // SAFETY: an owned waker (a clone) carries one reference, consumed here.
    let proc = unsafe { Arc::from_raw(p as *const Process) };
    proc.wake();
}

unsafe fn waker_wake_by_ref(p: *const ()) {
    // SAFETY: the waker keeps the process alive (borrowed, or holding a reference).
    unsafe { &*(p as *const Process) }.wake();
}

unsafe fn waker_drop(p: *const ()) {
    // SAFETY: an owned waker carries one reference, released here.
    drop(unsafe { Arc::from_raw(p as *const Process) });
}

/// A borrowed waker for `proc` (see [`PROCESS_WAKER`]); never dropped, so it takes no
/// reference: it is only lent to a poll while `proc` is alive.
pub(super) fn process_waker(proc: &Arc<Process>) -> std::mem::ManuallyDrop<Waker> {
    let raw = RawWaker::new(Arc::as_ptr(proc) as *const (), &PROCESS_WAKER);
    // SAFETY: the vtable's functions uphold the `RawWaker` contract for a pointer made by
    // `Arc::as_ptr`; `ManuallyDrop` keeps the borrowed waker from releasing a reference
    // it never took.
    std::mem::ManuallyDrop::new(unsafe { Waker::from_raw(raw) })
}

//! What a process runs: its body (a future of a module version, or a native future) and
//! the versions it is bound to.

use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use hotswap::{ExitReason, Outcome};
use hotswap_abi as abi;

use super::{ProcInner, Process};
use crate::code::Version;

/// The versions whose code a process runs: its body's version, then any version it is
/// awaiting through a fully-qualified call (a stack). The first one is stored in the
/// process record, the others (nested calls are rare) in its cold part
/// ([`Relations::more_bindings`](super::Relations)).
impl ProcInner {
    pub(super) fn push_binding(&mut self, v: Arc<Version>) {
        if self.binding.is_none() {
            self.binding = Some(v);
        } else {
            self.rel().more_bindings.push(v);
        }
    }

    /// Remove the innermost binding of `v`.
    pub(super) fn remove_binding(&mut self, v: &Arc<Version>) -> Option<Arc<Version>> {
        if let Some(more) = self.rel.as_mut().map(|r| &mut r.more_bindings) {
            if let Some(pos) = more.iter().rposition(|b| Arc::ptr_eq(b, v)) {
                return Some(more.remove(pos));
            }
        }
        if self.binding.as_ref().is_some_and(|b| Arc::ptr_eq(b, v)) {
            let f = self.binding.take();
            if let Some(more) = self.rel.as_mut().map(|r| &mut r.more_bindings) {
                if !more.is_empty() {
                    self.binding = Some(more.remove(0));
                }
            }
            return f;
        }
        None
    }

    /// The versions this process is bound to, outermost first.
    pub(crate) fn bindings(&self) -> impl Iterator<Item = &Arc<Version>> {
        self.binding
            .iter()
            .chain(self.rel.iter().flat_map(|r| r.more_bindings.iter()))
    }

    pub(crate) fn is_bound_to(&self, v: &Arc<Version>) -> bool {
        self.bindings().any(|b| Arc::ptr_eq(b, v))
    }
}

/// The code of a process (or of a fully-qualified call in progress).
///
/// `S` is the type of a native body kept inline, in the process's task itself instead of a
/// box of its own: a gen_server's loop, which every idle server carries ([`NoInline`] for
/// every other process).
pub(crate) enum Body<S = NoInline> {
    /// A future created by a module version.
    Module(ModuleFuture),
    /// A native future of the host (used for the node's own processes).
    Native(Pin<Box<dyn Future<Output = Outcome> + Send>>),
    /// A native future stored in place.
    Inline(S),
}

/// No inline body: the `S` of [`Body`] for processes without one.
pub(crate) enum NoInline {}

impl Future for NoInline {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Outcome> {
        match *self.get_mut() {}
    }
}

impl Body {
    /// The same body in a process whose inline body type is `S` (a tail call's next body).
    pub(crate) fn widen<S>(self) -> Body<S> {
        match self {
            Body::Module(m) => Body::Module(m),
            Body::Native(f) => Body::Native(f),
            Body::Inline(n) => match n {},
        }
    }
}

/// What one poll of a body produced.
pub(crate) enum Step {
    Pending,
    Done(Outcome),
    Panicked(String),
}

/// A future owned by a module version; dropped through that version's drop function.
pub(crate) struct ModuleFuture {
    pub(crate) version: Arc<Version>,
    fut: *mut abi::FutureObj,
}

// SAFETY: the future is only touched by the one task (or call handle) that owns this value,
// through the version's poll/drop functions; the module side makes no thread-affinity
// assumptions (its futures are polled with a no-op waker and hold no thread-local state).
unsafe impl Send for ModuleFuture {}

impl ModuleFuture {
    /// Own a future that `version` created.
    pub(crate) fn from_raw(version: &Arc<Version>, fut: *mut abi::FutureObj) -> ModuleFuture {
        ModuleFuture {
            version: version.clone(),
            fut,
        }
    }

    /// Start `export` of `version` for process `proc`.
    pub(crate) fn start(
        version: &Arc<Version>,
        start: abi::StartFn,
        proc: &Process,
        arg: &[u8],
    ) -> ModuleFuture {
        let _in = version.enter();
        // SAFETY: `start` belongs to `version`, which is mapped while we hold the Arc; the
        // handle is the live process; the argument range is valid for the call.
        let fut = unsafe { start(proc.as_handle(), arg.as_ptr(), arg.len()) };
        ModuleFuture::from_raw(version, fut)
    }

    pub(crate) fn poll(&mut self) -> Step {
        let mut out: Vec<u8> = Vec::new();
        let st = {
            let _in = self.version.enter();
            // SAFETY: `fut` was created by this version and not yet dropped; the version
            // is mapped while we hold its Arc; `out` outlives the call.
            unsafe {
                (self.version.poll)(
                    self.fut,
                    &mut out as *mut Vec<u8> as *mut c_void,
                    hotswap::private::write_vec,
                )
            }
        };
        match st {
            abi::STATUS_PENDING => Step::Pending,
            abi::STATUS_READY => match Outcome::decode_vec(out) {
                Some(o) => Step::Done(o),
                None => Step::Done(Outcome::Exit(ExitReason::User(
                    "malformed outcome from module".into(),
                ))),
            },
            _ => Step::Panicked(String::from_utf8_lossy(&out).into_owned()),
        }
    }
}

impl Drop for ModuleFuture {
    fn drop(&mut self) {
        let mut out: Vec<u8> = Vec::new();
        let st = {
            let _in = self.version.enter();
            // SAFETY: `fut` was created by this version and is dropped exactly once, here,
            // while the version is mapped (we hold its Arc).
            unsafe {
                (self.version.drop_future)(
                    self.fut,
                    &mut out as *mut Vec<u8> as *mut c_void,
                    hotswap::private::write_vec,
                )
            }
        };
        if st != abi::STATUS_READY {
            tracing::warn!(module = %self.version.name, "a destructor in module code panicked: {}", String::from_utf8_lossy(&out));
        }
    }
}

impl<S: Future<Output = Outcome> + Unpin> Body<S> {
    /// Poll once. A native body is polled with `waker` (see [`process_waker`](super::waker::process_waker)); a module
    /// body is woken by its mailbox and its receive deadline only.
    pub(crate) fn poll(&mut self, waker: &Waker) -> Step {
        match self {
            Body::Module(m) => m.poll(),
            Body::Native(f) => poll_native(f.as_mut(), waker),
            Body::Inline(f) => poll_native(Pin::new(f), waker),
        }
    }

    pub(crate) fn version(&self) -> Option<&Arc<Version>> {
        match self {
            Body::Module(m) => Some(&m.version),
            Body::Native(_) | Body::Inline(_) => None,
        }
    }
}

/// Poll a native body once, a panic included.
fn poll_native<F: Future<Output = Outcome> + ?Sized>(f: Pin<&mut F>, waker: &Waker) -> Step {
    let mut cx = Context::from_waker(waker);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.poll(&mut cx))) {
        Ok(Poll::Pending) => Step::Pending,
        Ok(Poll::Ready(o)) => Step::Done(o),
        Err(p) => Step::Panicked(panic_text(p)),
    }
}

pub(crate) fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

//! The mailbox: envelopes, payloads, how a process takes messages from its two-part
//! mailbox (see [`Process`]), and how it is woken.

use std::task::{RawWaker, RawWakerVTable, Waker};

use hotswap_abi as abi;

use super::{ProcInner, Process};

/// A mailbox entry.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) kind: u32,
    pub(crate) from: u64,
    pub(crate) reference: u64,
    pub(crate) data: Payload,
}

/// A message payload. Small ones (most messages) are stored inline in the envelope, so
/// sending them allocates nothing beyond the mailbox slot.
pub(crate) enum Payload {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

const INLINE: usize = 22;

impl Payload {
    pub(crate) fn from_slice(b: &[u8]) -> Payload {
        if b.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..b.len()].copy_from_slice(b);
            Payload::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            Payload::Heap(b.into())
        }
    }

    pub(crate) fn from_vec(v: Vec<u8>) -> Payload {
        if v.len() <= INLINE {
            Payload::from_slice(&v)
        } else {
            Payload::Heap(v.into_boxed_slice())
        }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Inline { len, buf } => &buf[..*len as usize],
            Payload::Heap(b) => b,
        }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.len())
    }
}

/// The shared part of a mailbox: what arrived since the process last looked, and how the
/// one waiting for it is woken.
///
/// # Waking (one waiter, no list)
///
/// Whoever makes something happen to a process changes its state first, then calls
/// [`Process::wake`]. The slot says what that wake finds:
///
/// * **empty**: the process's task is running (it cleared the slot with
///   [`Process::unpark`] when it was polled): the wake leaves an *owed* mark and nothing
///   else (no task wake-up);
/// * **owed**: a wake is owed already: nothing to do;
/// * **a waker**: the task waits ([`Process::park`] stored its waker after looking at
///   everything and finding the mark absent): the wake takes the waker out and wakes it.
///
/// So a wake is never lost (before the task looks, it is seen by the look; while it runs,
/// the mark makes it look again before waiting; while it waits, the waker is woken), and a
/// process that is owed a wake costs its wakers one lock and nothing else. All of this is
/// 16 bytes in the process: tokio's `Notify` took 32, and the task waiting on it kept a
/// 64-byte `Notified` across every wait.
///
/// A host-side mailbox ([`crate::ExternalProcess`]) has no task: host tasks wait on a
/// `Notify` of its own. Its slot holds a [`host_waker`] that stays (it is not taken), and
/// waking it notifies that `Notify`, with tokio's semantics for any number of waiters.
pub(crate) struct Inbox {
    pub(super) msgs: Vec<Envelope>,
    /// Empty, the owed mark ([`OWED`]), the task's waker or a host waker: see above.
    waker: Option<Waker>,
}

impl Inbox {
    pub(super) fn new() -> Inbox {
        Inbox {
            msgs: Vec::new(),
            waker: None,
        }
    }

    /// A wake: the waker to wake outside the lock, taken out of the slot (a host waker
    /// stays: a clone of it is woken).
    fn take_for_wake(&mut self) -> Option<Waker> {
        match &self.waker {
            None => {
                self.waker = Some(owed());
                None
            }
            Some(w) if is_owed(w) => None,
            Some(w) if is_host_waker(w) => Some(w.clone()),
            Some(_) => self.waker.take(),
        }
    }
}

/// The owed mark: a waker that does nothing, told apart by its vtable.
static OWED: RawWakerVTable =
    RawWakerVTable::new(|p| RawWaker::new(p, &OWED), |_| {}, |_| {}, |_| {});

fn owed() -> Waker {
    // SAFETY: every function of the vtable ignores the (null) pointer.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &OWED)) }
}

fn is_owed(w: &Waker) -> bool {
    std::ptr::eq(w.vtable(), &OWED)
}

/// The waker of a host-side mailbox: wakes the `Notify` its host tasks wait on.
static HOST_WAKER: RawWakerVTable =
    RawWakerVTable::new(host_clone, host_wake, host_wake_by_ref, host_drop);

unsafe fn host_clone(p: *const ()) -> RawWaker {
    // SAFETY: `p` is `Arc::into_raw` of a live `Notify` (a waker holds one reference).
    unsafe { std::sync::Arc::increment_strong_count(p as *const tokio::sync::Notify) };
    RawWaker::new(p, &HOST_WAKER)
}

unsafe fn host_wake(p: *const ()) {
    // SAFETY: an owned waker carries one reference, consumed here.
    let n = unsafe { std::sync::Arc::from_raw(p as *const tokio::sync::Notify) };
    n.notify_one();
}

unsafe fn host_wake_by_ref(p: *const ()) {
    // SAFETY: the waker holds a reference, so the `Notify` is alive.
    unsafe { &*(p as *const tokio::sync::Notify) }.notify_one();
}

unsafe fn host_drop(p: *const ()) {
    // SAFETY: an owned waker carries one reference, released here.
    drop(unsafe { std::sync::Arc::from_raw(p as *const tokio::sync::Notify) });
}

/// A waker that notifies `n` (see [`Inbox`]): put in a host-side mailbox's slot, where it
/// stays.
fn host_waker(n: &std::sync::Arc<tokio::sync::Notify>) -> Waker {
    let raw = RawWaker::new(
        std::sync::Arc::into_raw(n.clone()) as *const (),
        &HOST_WAKER,
    );
    // SAFETY: the vtable's functions uphold the `RawWaker` contract for a pointer made by
    // `Arc::into_raw`, and the new waker owns the reference taken just above.
    unsafe { Waker::from_raw(raw) }
}

fn is_host_waker(w: &Waker) -> bool {
    std::ptr::eq(w.vtable(), &HOST_WAKER)
}

impl Process {
    /// The task driving the process was polled: it runs now (a wake leaves the owed mark).
    /// Its waker, if the slot held it, goes back to `cache` for the next [`Process::park`].
    pub(crate) fn unpark(&self, cache: &mut Option<Waker>) {
        let mut ib = self.inbox.lock();
        if ib.waker.as_ref().is_some_and(|w| !is_owed(w)) {
            *cache = ib.waker.take();
        }
    }

    /// The task looked at everything and is about to wait: `true` if a wake came since it
    /// was polled (it must look again); otherwise its waker (from `cache` if it is the same
    /// task's) is stored in the slot for the next wake.
    pub(crate) fn park(&self, cache: &mut Option<Waker>, waker: &Waker) -> bool {
        let mut ib = self.inbox.lock();
        if ib.waker.as_ref().is_some_and(is_owed) {
            ib.waker = None;
            return true;
        }
        if ib.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return false;
        }
        ib.waker = Some(match cache.take() {
            Some(w) if w.will_wake(waker) => w,
            _ => waker.clone(),
        });
        false
    }

    /// Put a host waker in the slot of a host-side mailbox (once, when it is made).
    pub(super) fn set_host_waker(&self, n: &std::sync::Arc<tokio::sync::Notify>) {
        self.inbox.lock().waker = Some(host_waker(n));
    }

    /// Wake whoever waits for this process (after changing what it will look at).
    pub(crate) fn wake(&self) {
        let w = self.inbox.lock().take_for_wake();
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Forget the waker (the process has exited: nothing will wait for it again).
    pub(super) fn disarm(&self) -> Option<Waker> {
        self.inbox.lock().waker.take()
    }

    /// Deliver a message. (Messages that reach a process after it exited are dropped with
    /// it.)
    ///
    /// Only the message that makes the inbox non-empty wakes the process: while the inbox
    /// is non-empty a wake-up is already owed, and the process has not drained since.
    pub(crate) fn deliver(&self, env: Envelope) {
        let w = {
            let mut ib = self.inbox.lock();
            let was_empty = ib.msgs.is_empty();
            ib.msgs.push(env);
            if !was_empty {
                return;
            }
            ib.take_for_wake()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Move everything that arrived into the private mailbox; `false` if nothing had.
    /// Lock order: `inner`, then `inbox` (senders only ever take `inbox`).
    pub(crate) fn take_inbox(&self, g: &mut ProcInner) -> bool {
        let mut ib = self.inbox.lock();
        if ib.msgs.is_empty() {
            return false;
        }
        let aliases = g.rel.as_ref().map(|r| &r.aliases[..]).unwrap_or(&[]);
        // A reply nobody waits for any more (its call timed out) is dropped here, so it
        // never reaches the mailbox (OTP 24's aliases).
        let stale = |e: &Envelope| e.kind == abi::MSG_REPLY && !aliases.contains(&e.reference);
        if g.mailbox.is_empty() {
            // The usual case: everything taken was handled. The batch becomes the mailbox
            // as it is (a `Vec` turns into a `VecDeque` without copying), and the inbox
            // gets the empty mailbox's buffer: a call's reply, or two million queued
            // casts, is not copied from one to the other.
            if ib.msgs.iter().any(stale) {
                ib.msgs.retain(|e| !stale(e));
            }
            let empty = std::mem::take(&mut g.mailbox);
            g.mailbox = std::mem::replace(&mut ib.msgs, Vec::from(empty)).into();
            return true;
        }
        for e in ib.msgs.drain(..) {
            if !stale(&e) {
                g.mailbox.push_back(e);
            }
        }
        true
    }

    /// Messages waiting, in both parts of the mailbox.
    pub(crate) fn queue_len(&self, g: &ProcInner) -> usize {
        g.mailbox.len() + self.inbox.lock().msgs.len()
    }

    /// Find the first message `pred` accepts, scanning the private mailbox and then each
    /// batch taken from the inbox (every message is looked at once per call), and remove it.
    pub(crate) fn take_first(
        &self,
        g: &mut ProcInner,
        pred: impl FnMut(&Envelope) -> bool,
    ) -> Option<Envelope> {
        let at = self.find_first(g, pred)?;
        Self::remove_at(g, at)
    }

    /// As [`Process::take_first`], but the message is handed to `f` where it lies in the
    /// mailbox and then dropped there, instead of being moved out: a receive that copies
    /// the payload into module memory does not move the 48-byte envelope twice on its way
    /// (callgrind and perf, issue 16: those moves, stored in pieces and read back whole,
    /// stalled the receiver). `f` runs with the process locked, as `pred` does.
    pub(crate) fn take_first_with<R>(
        &self,
        g: &mut ProcInner,
        pred: impl FnMut(&Envelope) -> bool,
        f: impl FnOnce(&Envelope) -> R,
    ) -> Option<R> {
        let at = self.find_first(g, pred)?;
        let r = f(&g.mailbox[at]);
        drop(Self::remove_at(g, at));
        Some(r)
    }

    /// Where the first message `pred` accepts is in the private mailbox, after taking what
    /// arrived as needed (see [`Process::take_first`]).
    fn find_first(
        &self,
        g: &mut ProcInner,
        mut pred: impl FnMut(&Envelope) -> bool,
    ) -> Option<usize> {
        if g.mailbox.is_empty() && !self.take_inbox(g) {
            return None;
        }
        // The usual case, a receive that takes the oldest message, is decided without an
        // iterator; otherwise the scan starts after the front, which was looked at (the
        // mailbox is empty here only if everything taken was a stale reply, dropped).
        if g.mailbox.front().is_some_and(&mut pred) {
            return Some(0);
        }
        let mut from = g.mailbox.len().min(1);
        loop {
            if let Some(i) = g.mailbox.range(from..).position(&mut pred) {
                return Some(from + i);
            }
            from = g.mailbox.len();
            if !self.take_inbox(g) {
                return None;
            }
        }
    }

    /// Remove the message at `at` of the private mailbox (stamping a port message as
    /// taken).
    fn remove_at(g: &mut ProcInner, at: usize) -> Option<Envelope> {
        let e = if at == 0 {
            g.mailbox.pop_front()
        } else {
            g.mailbox.remove(at)
        };
        if e.as_ref().is_some_and(|e| e.kind == abi::MSG_PORT) {
            crate::stamps::record(crate::stamps::Stage::Taken);
        }
        e
    }

    /// Remove the first message if `pred` accepts it (taking what arrived if the private
    /// mailbox is empty).
    pub(crate) fn take_front_if(
        &self,
        g: &mut ProcInner,
        pred: impl FnOnce(&Envelope) -> bool,
    ) -> Option<Envelope> {
        if g.mailbox.is_empty() && !self.take_inbox(g) {
            return None;
        }
        if g.mailbox.front().is_some_and(pred) {
            g.mailbox.pop_front()
        } else {
            None
        }
    }
}

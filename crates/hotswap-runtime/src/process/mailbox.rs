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
    #[inline]
    pub(crate) fn from_slice(b: &[u8]) -> Payload {
        if b.len() <= INLINE {
            Payload::Inline {
                len: b.len() as u8,
                buf: inline_buf(b),
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

/// `b` (at most [`INLINE`] bytes) zero-padded to [`INLINE`] bytes, put together from a few
/// overlapping fixed-size loads instead of a `memcpy` of `b.len()` bytes. A `memcpy` of
/// variable length stores the bytes in pieces, and the envelope's 16-byte moves that follow
/// read them back at once: a failed store-to-load forward, which perf showed as most of the
/// sender's own time per message (issue 16).
#[inline]
fn inline_buf(b: &[u8]) -> [u8; INLINE] {
    let n = b.len();
    assert!(n <= INLINE);
    let p = b.as_ptr();
    // Every load below reads `at..at + size` with `at + size <= n` (the match arms' ranges).
    // SAFETY: inside `b` by the above; unaligned reads are allowed.
    let w64 = |at: usize| u64::from_le(unsafe { p.add(at).cast::<u64>().read_unaligned() });
    // SAFETY: as for `w64`.
    let w32 = |at: usize| u32::from_le(unsafe { p.add(at).cast::<u32>().read_unaligned() });
    // Bytes 0..16 and 16..24 of the result, little-endian. Where two loads overlap they
    // hold the same bytes at the same places, so or-ing them is exact.
    let (lo, hi): (u128, u64) = match n {
        0 => (0, 0),
        1..=3 => {
            let v = b[0] as u128
                | (b[n / 2] as u128) << (8 * (n / 2))
                | (b[n - 1] as u128) << (8 * (n - 1));
            (v, 0)
        }
        4..=8 => (w32(0) as u128 | (w32(n - 4) as u128) << (8 * (n - 4)), 0),
        9..=16 => (w64(0) as u128 | (w64(n - 8) as u128) << (8 * (n - 8)), 0),
        // 17..=22: the last 8 bytes start at n - 8 (9..=14); keep those at 16 and after.
        _ => (
            w64(0) as u128 | (w64(8) as u128) << 64,
            w64(n - 8) >> (8 * (24 - n)),
        ),
    };
    let mut buf = [0u8; INLINE];
    buf[..16].copy_from_slice(&lo.to_le_bytes());
    buf[16..].copy_from_slice(&hi.to_le_bytes()[..INLINE - 16]);
    buf
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
///
/// # Blocks
///
/// The messages are a chain of blocks, oldest first. Senders append to the last block,
/// which grows as a `Vec` up to [`BLOCK`] envelopes; then a new block of that size is
/// linked after it. The process takes one block at a time ([`Process::take_inbox`]). So a
/// backlog of millions of messages is never one buffer doubled and copied into fresh
/// pages (issue 16: growing a 96 MB inbox was a quarter of `message_throughput`'s time,
/// most of it the kernel zeroing new pages), and a process keeping up with its senders
/// reuses one block's buffer.
pub(crate) struct Inbox {
    /// The oldest block. Only the last block of the chain may be empty.
    head: Option<Box<Block>>,
    /// The last block of the chain `head` owns (where senders append); null when `head`
    /// is `None`.
    tail: *mut Block,
    /// Empty, the owed mark ([`OWED`]), the task's waker or a host waker: see above.
    waker: Option<Waker>,
}

// SAFETY: `tail` points into the chain of blocks that `head` owns (or is null): it is an
// alias of owned data, never shared outside the `Inbox`, so sending the `Inbox` to another
// thread sends that data with it, as sending `head` alone would.
unsafe impl Send for Inbox {}

/// One block of the inbox (see [`Inbox`]).
struct Block {
    msgs: Vec<Envelope>,
    next: Option<Box<Block>>,
}

/// The most envelopes a block holds (48 KB of 48-byte envelopes: in the allocator's
/// medium classes, and in a core's L2 cache while a process drains it).
const BLOCK: usize = 1024;

impl Inbox {
    pub(super) fn new() -> Inbox {
        Inbox {
            head: None,
            tail: std::ptr::null_mut(),
            waker: None,
        }
    }

    /// No message waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.head.as_ref().is_none_or(|b| b.msgs.is_empty())
    }

    /// Messages waiting.
    pub(super) fn len(&self) -> usize {
        self.blocks().map(|b| b.msgs.len()).sum()
    }

    fn blocks(&self) -> impl Iterator<Item = &Block> {
        std::iter::successors(self.head.as_deref(), |b| b.next.as_deref())
    }

    /// Every message waiting, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Envelope> {
        self.blocks().flat_map(|b| b.msgs.iter())
    }

    /// Bytes held for the blocks themselves (headers and slots, used or not).
    pub(super) fn capacity_bytes(&self) -> usize {
        self.blocks()
            .map(|b| {
                std::mem::size_of::<Block>() + b.msgs.capacity() * std::mem::size_of::<Envelope>()
            })
            .sum()
    }

    /// Append a message.
    pub(super) fn push(&mut self, e: Envelope) {
        // SAFETY: `tail` is null or points to the last block of the chain `head` owns
        // (type invariant), and `&mut self` gives exclusive access to it.
        if let Some(t) = unsafe { self.tail.as_mut() } {
            if t.msgs.len() < BLOCK {
                t.msgs.push(e);
                return;
            }
        }
        self.push_block(e);
    }

    /// Append a message in a new block (the last one is full, or there is none).
    #[cold]
    fn push_block(&mut self, e: Envelope) {
        let mut msgs = if self.tail.is_null() {
            Vec::new()
        } else {
            Vec::with_capacity(BLOCK)
        };
        msgs.push(e);
        let mut b = Box::new(Block { msgs, next: None });
        let p: *mut Block = &mut *b;
        // SAFETY: as in `push`.
        match unsafe { self.tail.as_mut() } {
            Some(t) => t.next = Some(b),
            None => self.head = Some(b),
        }
        // The block's address does not change when its box moves into the chain.
        self.tail = p;
    }

    /// Unlink the oldest block, which is not the last one.
    fn pop_block(&mut self) -> Box<Block> {
        let mut b = self.head.take().expect("a block");
        debug_assert!(b.next.is_some(), "the last block stays linked");
        self.head = b.next.take();
        b
    }

    /// Take every message waiting, block by block, oldest first.
    pub(super) fn take_all(&mut self) -> Vec<Vec<Envelope>> {
        let mut all = Vec::new();
        let mut cur = self.head.take();
        self.tail = std::ptr::null_mut();
        while let Some(mut b) = cur {
            cur = b.next.take();
            all.push(std::mem::take(&mut b.msgs));
        }
        all
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

impl Drop for Inbox {
    /// Free the chain one block at a time (a recursive drop of a long chain could overflow
    /// the stack).
    fn drop(&mut self) {
        let mut cur = self.head.take();
        while let Some(mut b) = cur {
            cur = b.next.take();
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
            let was_empty = ib.is_empty();
            ib.push(env);
            if !was_empty {
                return;
            }
            ib.take_for_wake()
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Move what arrived into the private mailbox, one block of the inbox (see [`Inbox`]) at
    /// a time; `false` if nothing had.
    /// Lock order: `inner`, then `inbox` (senders only ever take `inbox`).
    pub(crate) fn take_inbox(&self, g: &mut ProcInner) -> bool {
        let mut ib = self.inbox.lock();
        if ib.is_empty() {
            return false;
        }
        let aliases = g.rel.as_ref().map(|r| &r.aliases[..]).unwrap_or(&[]);
        // A reply nobody waits for any more (its call timed out) is dropped here, so it
        // never reaches the mailbox (OTP 24's aliases).
        let stale = |e: &Envelope| e.kind == abi::MSG_REPLY && !aliases.contains(&e.reference);
        // The oldest block is the last one: it stays linked, for senders to fill again.
        let last = ib.head.as_ref().is_some_and(|b| b.next.is_none());
        if g.mailbox.is_empty() {
            // The usual case: everything taken was handled. The block's messages become
            // the mailbox as they are (a `Vec` turns into a `VecDeque` without copying);
            // the last block gets the empty mailbox's buffer, an older block is freed.
            let empty = Vec::from(std::mem::take(&mut g.mailbox));
            let mut batch = if last {
                let b = ib.head.as_mut().expect("not empty");
                std::mem::replace(&mut b.msgs, empty)
            } else {
                std::mem::take(&mut ib.pop_block().msgs)
            };
            drop(ib);
            if batch.iter().any(stale) {
                batch.retain(|e| !stale(e));
            }
            g.mailbox = batch.into();
            return true;
        }
        let fresh = |e: &Envelope| !stale(e);
        if last {
            // Drained in place: the block keeps its buffer for the senders.
            let b = ib.head.as_mut().expect("not empty");
            g.mailbox.extend(b.msgs.drain(..).filter(fresh));
        } else {
            let b = ib.pop_block();
            drop(ib);
            g.mailbox.extend(b.msgs.into_iter().filter(fresh));
        }
        true
    }

    /// Messages waiting, in both parts of the mailbox.
    pub(crate) fn queue_len(&self, g: &ProcInner) -> usize {
        g.mailbox.len() + self.inbox.lock().len()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(i: u64) -> Envelope {
        Envelope {
            kind: abi::MSG_USER,
            from: i,
            reference: 0,
            data: Payload::from_slice(&i.to_le_bytes()),
        }
    }

    #[test]
    fn inline_payloads_keep_their_bytes() {
        let src: Vec<u8> = (1..=INLINE as u8 + 3).collect();
        for n in 0..=src.len() {
            let p = Payload::from_slice(&src[..n]);
            assert_eq!(&*p, &src[..n], "{n} bytes");
            if let Payload::Inline { buf, .. } = &p {
                assert!(
                    buf[n..].iter().all(|&x| x == 0),
                    "{n} bytes: padding is zero"
                );
            }
        }
    }

    #[test]
    fn inbox_blocks_keep_arrival_order() {
        let mut ib = Inbox::new();
        assert!(ib.is_empty());
        let n = 2 * BLOCK as u64 + 5;
        for i in 0..n {
            ib.push(env(i));
        }
        assert!(!ib.is_empty());
        assert_eq!(ib.len(), n as usize);
        assert_eq!(
            ib.blocks().count(),
            3,
            "full blocks of {BLOCK}, then a partial one"
        );
        assert!(ib.iter().map(|e| e.from).eq(0..n));
        // The oldest block is unlinked whole; the chain goes on from the next one.
        let first = ib.pop_block();
        assert!(first.msgs.iter().map(|e| e.from).eq(0..BLOCK as u64));
        assert!(ib.iter().map(|e| e.from).eq(BLOCK as u64..n));
        let all = ib.take_all();
        assert!(all.iter().flatten().map(|e| e.from).eq(BLOCK as u64..n));
        assert!(ib.is_empty());
        assert_eq!(ib.len(), 0, "nothing left to count");
        // Appending after taking everything starts a new chain.
        ib.push(env(7));
        assert!(ib.iter().map(|e| e.from).eq([7]));
    }
}

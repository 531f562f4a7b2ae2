//! The mailbox: envelopes, payloads, and how a process takes messages from its two-part
//! mailbox (see [`Process`]).

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

impl Process {
    /// Deliver a message. (Messages that reach a process after it exited are dropped with
    /// it.)
    ///
    /// Only the message that makes the inbox non-empty wakes the process: while the inbox
    /// is non-empty a wake-up is already owed, and the process has not drained since.
    pub(crate) fn deliver(&self, env: Envelope) {
        let was_empty = {
            let mut ib = self.inbox.lock();
            let e = ib.is_empty();
            ib.push(env);
            e
        };
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Move everything that arrived into the private mailbox; `false` if nothing had.
    /// Lock order: `inner`, then `inbox` (senders only ever take `inbox`).
    pub(crate) fn take_inbox(&self, g: &mut ProcInner) -> bool {
        let mut ib = self.inbox.lock();
        if ib.is_empty() {
            return false;
        }
        let aliases = g.rel.as_ref().map(|r| &r.aliases[..]).unwrap_or(&[]);
        for e in ib.drain(..) {
            // A reply nobody waits for any more (its call timed out) is dropped here, so it
            // never reaches the mailbox (OTP 24's aliases).
            if e.kind == abi::MSG_REPLY && !aliases.contains(&e.reference) {
                continue;
            }
            g.mailbox.push_back(e);
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
        mut pred: impl FnMut(&Envelope) -> bool,
    ) -> Option<Envelope> {
        let mut from = 0;
        loop {
            if let Some(i) = g.mailbox.range(from..).position(&mut pred) {
                let e = g.mailbox.remove(from + i);
                if e.as_ref().is_some_and(|e| e.kind == hotswap_abi::MSG_PORT) {
                    crate::stamps::record(crate::stamps::Stage::Taken);
                }
                return e;
            }
            from = g.mailbox.len();
            if !self.take_inbox(g) {
                return None;
            }
        }
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

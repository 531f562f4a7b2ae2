//! How a process is woken: a permit and the wakers of whoever waits for it.
//!
//! A process has one waiter almost always (its own task; for an
//! [`ExternalProcess`](crate::ExternalProcess), the host code reading it), and every
//! message, signal or native wake-up only says "something happened, look again". tokio's
//! `Notify` keeps an intrusive list of waiters and a state word for `notify_waiters`, and
//! in a call round trip (two waits and two wakes) its bookkeeping was ~650 instructions of
//! ~5 500 (callgrind, issue 16). [`Wake`] keeps only what a process needs: a permit (set
//! by [`Wake::notify_one`], consumed by the wait that sees it, as `Notify`'s permit is) and
//! the wakers to call when it is set. A wake-up that finds the permit already set costs one
//! atomic swap: the waiter has yet to look, or has been woken already.

use std::cell::UnsafeCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::lock_api::RawMutex as _;
use parking_lot::RawMutex;

/// A process's wake-up: see the module documentation. 32 bytes, as tokio's `Notify` was
/// (a process must stay in its allocator size class): a one-byte lock and the permit share
/// the word before the waiters.
pub(crate) struct Wake {
    lock: RawMutex,
    permit: AtomicBool,
    /// Only touched with `lock` held (see [`Wake::waiters`]).
    waiters: UnsafeCell<Waiters>,
}

// SAFETY: `waiters` is only reached through `Wake::waiters`, under `lock`; wakers are
// `Send + Sync`.
unsafe impl Sync for Wake {}

impl Default for Wake {
    fn default() -> Wake {
        Wake {
            lock: RawMutex::INIT,
            permit: AtomicBool::new(false),
            waiters: UnsafeCell::new(Waiters::default()),
        }
    }
}

/// The waiters, locked; unlocked on drop.
struct Locked<'a>(&'a Wake);

impl std::ops::Deref for Locked<'_> {
    type Target = Waiters;
    fn deref(&self) -> &Waiters {
        // SAFETY: the lock is held while this guard lives (see `Wake::waiters`).
        unsafe { &*self.0.waiters.get() }
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Waiters {
        // SAFETY: the lock is held while this guard lives, so this is the only reference.
        unsafe { &mut *self.0.waiters.get() }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard took the lock in `Wake::waiters` and releases it once.
        unsafe { self.0.lock.unlock() };
    }
}

/// The wakers to call on the next notification: the usual single waiter inline, any
/// other concurrent waiters (host code waiting on an external process from two tasks)
/// boxed.
#[derive(Default)]
struct Waiters {
    first: Option<Waker>,
    #[expect(
        clippy::box_collection,
        reason = "8 bytes instead of 24 in every process; a second waiter is rare"
    )]
    more: Option<Box<Vec<Waker>>>,
}

impl Wake {
    /// Wake the waiter (every registered one: the first to look takes the permit, the
    /// others wait again), or leave a permit for the next wait.
    pub(crate) fn notify_one(&self) {
        if self.permit.swap(true, Ordering::AcqRel) {
            return;
        }
        let (first, more) = {
            let mut w = self.waiters();
            (w.first.take(), w.more.take())
        };
        if let Some(w) = first {
            w.wake();
        }
        if let Some(more) = more {
            for w in *more {
                w.wake();
            }
        }
    }

    /// Wait for a notification (or take the permit left by one).
    pub(crate) fn notified(&self) -> Notified<'_> {
        Notified { wake: self }
    }

    /// Take the permit if one is set.
    fn take(&self) -> bool {
        // A relaxed load first: while waiting, polls mostly find no permit, and the swap
        // would take the cache line for writing.
        self.permit.load(Ordering::Relaxed) && self.permit.swap(false, Ordering::AcqRel)
    }

    /// Lock the waiters.
    fn waiters(&self) -> Locked<'_> {
        self.lock.lock();
        Locked(self)
    }

    fn register(&self, waker: &Waker) {
        let mut w = self.waiters();
        match &w.first {
            None => w.first = Some(waker.clone()),
            Some(f) if f.will_wake(waker) => {}
            Some(_) => {
                let more = w.more.get_or_insert_with(Default::default);
                if !more.iter().any(|m| m.will_wake(waker)) {
                    more.push(waker.clone());
                }
            }
        }
    }
}

/// The future of [`Wake::notified`]. Dropping it unpolled, or after it was woken by
/// something else, loses nothing: a notification that was not taken stays as the permit.
#[must_use = "a wait does nothing unless polled"]
pub(crate) struct Notified<'a> {
    wake: &'a Wake,
}

impl Notified<'_> {
    /// Kept for the call sites written for tokio's `Notify`, which had to register a wait
    /// before checking the mailbox so that a message in between was not missed: here the
    /// permit already keeps every notification made after the last wait took it.
    pub(crate) fn enable(self: Pin<&mut Self>) -> bool {
        false
    }
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let wake = self.wake;
        if wake.take() {
            return Poll::Ready(());
        }
        wake.register(cx.waker());
        // A notification between the first look and the registration found no waker to
        // call; it left the permit, so look again.
        if wake.take() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::Wake;
    use std::sync::Arc;

    #[test]
    fn as_small_as_tokio_notify() {
        assert_eq!(
            std::mem::size_of::<Wake>(),
            std::mem::size_of::<tokio::sync::Notify>()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_notification_before_the_wait_is_kept() {
        let w = Wake::default();
        w.notify_one();
        w.notify_one();
        w.notified().await;
        // One permit, not two: a second wait would block; it is not awaited here.
        assert!(!w.take());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_is_woken_from_another_thread() {
        let w = Arc::new(Wake::default());
        for _ in 0..1000 {
            let w2 = w.clone();
            let t = tokio::spawn(async move { w2.notified().await });
            tokio::task::yield_now().await;
            w.notify_one();
            t.await.expect("the waiter finished");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_waiters_both_end() {
        let w = Arc::new(Wake::default());
        let (a, b) = (w.clone(), w.clone());
        let ta = tokio::spawn(async move { a.notified().await });
        let tb = tokio::spawn(async move { b.notified().await });
        // Each notification lets at least one of them through (the other, woken too, waits
        // again): keep notifying until both are done.
        while !(ta.is_finished() && tb.is_finished()) {
            w.notify_one();
            tokio::task::yield_now().await;
        }
        ta.await.expect("a");
        tb.await.expect("b");
    }
}

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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// A process's wake-up: see the module documentation.
#[derive(Default)]
pub(crate) struct Wake {
    permit: AtomicBool,
    waiters: Mutex<Waiters>,
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
            let mut w = self.waiters.lock();
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

    fn register(&self, waker: &Waker) {
        let mut w = self.waiters.lock();
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

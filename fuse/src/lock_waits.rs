//! Lock requests that wait (`F_SETLKW`, `flock` without `LOCK_NB`) for as long
//! as another holds the lock: the one kind of request that a signal must be
//! able to end. The kernel tells of the signal with `FUSE_INTERRUPT` naming
//! the request, which then answers `EINTR`; without that, a waiter killed
//! with SIGKILL would hang, unkillable, until the lock came free.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Interrupts of requests not (yet) waiting that are remembered: over
/// io_uring an interrupt may be read before the request it names.
const EARLY_KEPT: usize = 64;

#[derive(Default)]
struct Inner {
    waiting: HashMap<u64, oneshot::Sender<()>>,
    early: VecDeque<u64>,
    ended: bool,
}

#[derive(Default)]
pub(crate) struct LockWaits {
    inner: Mutex<Inner>,
}

impl LockWaits {
    /// Request `unique` is about to wait: the receiver completes when its
    /// caller is interrupted or the mount ends ([`LockWaits::done`] after).
    pub(crate) fn register(&self, unique: u64) -> oneshot::Receiver<()> {
        let (tell, told) = oneshot::channel();
        let mut inner = self.inner.lock();
        if let Some(at) = inner.early.iter().position(|u| *u == unique) {
            inner.early.remove(at);
            let _ = tell.send(());
        } else if inner.ended {
            let _ = tell.send(());
        } else {
            inner.waiting.insert(unique, tell);
        }
        told
    }

    pub(crate) fn done(&self, unique: u64) {
        self.inner.lock().waiting.remove(&unique);
    }

    /// The caller of request `unique` got a signal.
    pub(crate) fn interrupt(&self, unique: u64) {
        let mut inner = self.inner.lock();
        match inner.waiting.remove(&unique) {
            Some(tell) => {
                let _ = tell.send(());
            }
            None => {
                if inner.early.len() == EARLY_KEPT {
                    inner.early.pop_front();
                }
                inner.early.push_back(unique);
            }
        }
    }

    /// The mount is gone: no waiter will ever be answered.
    pub(crate) fn end_all(&self) {
        let mut inner = self.inner.lock();
        inner.ended = true;
        for (_, tell) in inner.waiting.drain() {
            let _ = tell.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_reaches_its_waiter_even_when_it_comes_first() {
        let waits = LockWaits::default();
        let mut first = waits.register(1);
        assert!(first.try_recv().is_err(), "nothing yet");
        waits.interrupt(1);
        assert!(first.try_recv().is_ok());

        waits.interrupt(2);
        assert!(waits.register(2).try_recv().is_ok(), "an early interrupt is kept for its request");

        let mut third = waits.register(3);
        waits.end_all();
        assert!(third.try_recv().is_ok());
        assert!(waits.register(4).try_recv().is_ok(), "after the end, nothing waits");
    }
}

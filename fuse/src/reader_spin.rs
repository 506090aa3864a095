//! Keeping a mount's `/dev/fuse` reader awake between the requests of a burst.
//!
//! A synchronous walk (`ls -lR`, `find`, `tar -x`) sends its next request a
//! few tens of µs after our answer. A reader blocked in `read(2)` is then woken
//! by an interrupt to its CPU, and a virtual machine's idle vCPU halts: waking
//! it costs more than serving the request (measured: `ls -lR` of 27k entries
//! 1.65 s with the reader blocking, 1.29 s polling; docs/DESIGN.md). So after answering, a
//! reader that is in a burst (its last request came within the window of the
//! answer before) polls the device without blocking for up to the window, then
//! blocks. The CPU it spends is bounded: a request stream sparser than the
//! window never polls, and at most [`max_spinners`] readers of the daemon poll
//! at once (one per two CPUs), whatever the number of mounts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Readers polling now, daemon-wide.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

fn max_spinners() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1))
}

/// One reader's view: the window, and when it last answered.
pub(crate) struct Spin {
    window: Duration,
    answered: Option<Instant>,
    in_burst: bool,
}

/// A slot among the daemon's polling readers, given back when dropped.
pub(crate) struct Polling(());

impl Drop for Polling {
    fn drop(&mut self) {
        SPINNING.fetch_sub(1, Ordering::Release);
    }
}

impl Spin {
    pub(crate) fn new(window: Duration) -> Self {
        Spin { window, answered: None, in_burst: false }
    }

    /// Whether the reader polls at all (a zero window: it always blocks).
    pub(crate) fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    /// A request arrived: it is part of a burst if it came within the window
    /// of the previous answer.
    pub(crate) fn arrived(&mut self, now: Instant) {
        self.in_burst = self.answered.is_some_and(|answered| now.duration_since(answered) < self.window);
    }

    /// The request was answered.
    pub(crate) fn answered(&mut self, now: Instant) {
        self.answered = Some(now);
    }

    /// Until when to poll before blocking, and the slot that allows it; none
    /// outside a burst or while enough other readers poll.
    pub(crate) fn poll_until(&self) -> Option<(Instant, Polling)> {
        let answered = self.answered?;
        if !self.in_burst || self.window.is_zero() {
            return None;
        }
        SPINNING
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| (n < max_spinners()).then_some(n + 1))
            .ok()
            .map(|_| (answered + self.window, Polling(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_only_in_a_burst_within_the_window_and_within_the_cap() {
        let window = Duration::from_micros(50);
        let t0 = Instant::now();
        let mut spin = Spin::new(window);
        // The first request: nothing answered before, no burst.
        spin.arrived(t0);
        spin.answered(t0 + Duration::from_micros(5));
        assert!(spin.poll_until().is_none());
        // The next came 10 µs after the answer: a burst; poll until 50 µs after the answer.
        spin.arrived(t0 + Duration::from_micros(15));
        spin.answered(t0 + Duration::from_micros(20));
        let (until, slot) = spin.poll_until().expect("in a burst");
        assert_eq!(until, t0 + Duration::from_micros(70));
        drop(slot);
        // A request a millisecond after the answer ends the burst.
        spin.arrived(t0 + Duration::from_millis(2));
        spin.answered(t0 + Duration::from_millis(2));
        assert!(spin.poll_until().is_none());
        assert!(!Spin::new(Duration::ZERO).enabled());

        // At most one reader per two CPUs polls at once (one test: the count is daemon-wide).
        let readers: Vec<Spin> = (0..max_spinners() + 2)
            .map(|_| {
                let mut spin = Spin::new(window);
                spin.answered(t0);
                spin.arrived(t0 + Duration::from_micros(1));
                spin.answered(t0 + Duration::from_micros(2));
                spin
            })
            .collect();
        let slots: Vec<_> = readers.iter().filter_map(Spin::poll_until).collect();
        assert_eq!(slots.len(), max_spinners());
        drop(slots);
        assert_eq!(SPINNING.load(Ordering::Acquire), 0, "slots given back");
        assert!(readers[0].poll_until().is_some());
    }
}

//! Progress of a long job (snapshot capture, restore, garbage collection):
//! counters its workers bump as they go, read by whoever publishes them.
//!
//! Bumping is meant to cost nothing next to the work it counts: relaxed
//! atomic additions, once per file and once per block (64 KiB on average),
//! never a lock, a system call or a catalog write. A publisher (the engine's
//! job ticker, or `GET /admin/gc`) samples the counters a few times a second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A job's progress as published on its container record (and shown by
/// `GET /admin/gc`): a [`Sample`] with its rate and what the job is. The
/// catalog records it with the field names and defaults the API's `Progress`
/// has, so records written when they held that type read unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    pub phase: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    /// Bytes per second over the last few seconds.
    #[serde(default)]
    pub rate: u64,
    /// False while the totals are an estimate.
    #[serde(default)]
    pub totals_exact: bool,
    /// `snapshot`, `restore` or `gc`.
    #[serde(default)]
    pub job: String,
    /// The snapshot's alias (snapshot and restore jobs).
    #[serde(default)]
    pub snapshot: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
}

#[derive(Debug)]
pub struct Reporter {
    phase: Mutex<&'static str>,
    files_done: AtomicU64,
    files_total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    /// What a walk found so far, raising the estimated totals.
    files_found: AtomicU64,
    bytes_found: AtomicU64,
    /// Until set, the totals are an estimate (or what was counted so far).
    exact: AtomicBool,
}

/// The counters at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub phase: &'static str,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub exact: bool,
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::new("starting")
    }
}

impl Reporter {
    pub fn new(phase: &'static str) -> Self {
        Reporter { phase: Mutex::new(phase), files_done: AtomicU64::new(0), files_total: AtomicU64::new(0), bytes_done: AtomicU64::new(0), bytes_total: AtomicU64::new(0), files_found: AtomicU64::new(0), bytes_found: AtomicU64::new(0), exact: AtomicBool::new(false) }
    }

    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().expect("progress phase") = phase;
    }

    /// Totals not known yet: shown as the totals until more is counted.
    pub fn estimate(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
    }

    /// A file of `size` bytes found by a walk that has not ended: the totals
    /// shown are at least what was found.
    #[inline]
    pub fn found(&self, size: u64) {
        self.files_found.fetch_add(1, Ordering::Relaxed);
        self.bytes_found.fetch_add(size, Ordering::Relaxed);
    }

    /// The real totals.
    pub fn set_totals(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.exact.store(true, Ordering::Relaxed);
    }

    /// Counts `bytes` of work done (a block read, written, examined).
    #[inline]
    pub fn add_bytes(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One file (pack, tree) done, of `size` bytes of which `counted` were
    /// already counted by [`Reporter::add_bytes`] (more when it was read twice).
    #[inline]
    pub fn file_done(&self, size: u64, counted: u64) {
        // Wrapping: a negative correction is an addition modulo 2^64.
        self.bytes_done.fetch_add(size.wrapping_sub(counted), Ordering::Relaxed);
        self.files_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Resets what was done, for a phase that counts again.
    pub fn reset_done(&self) {
        self.files_done.store(0, Ordering::Relaxed);
        self.bytes_done.store(0, Ordering::Relaxed);
    }

    /// The counters now. Done never exceeds an exact total; an estimated
    /// total is raised to what was done already.
    pub fn sample(&self) -> Sample {
        let phase = *self.phase.lock().expect("progress phase");
        let exact = self.exact.load(Ordering::Relaxed);
        let (mut files_done, mut files_total) = (self.files_done.load(Ordering::Relaxed), self.files_total.load(Ordering::Relaxed));
        let (mut bytes_done, mut bytes_total) = (self.bytes_done.load(Ordering::Relaxed), self.bytes_total.load(Ordering::Relaxed));
        if exact {
            files_done = files_done.min(files_total);
            bytes_done = bytes_done.min(bytes_total);
        } else {
            files_total = files_total.max(files_done).max(self.files_found.load(Ordering::Relaxed));
            bytes_total = bytes_total.max(bytes_done).max(self.bytes_found.load(Ordering::Relaxed));
        }
        Sample { phase, files_done, files_total, bytes_done, bytes_total, exact }
    }
}

/// Bytes per second over the last few samples.
#[derive(Debug, Default)]
pub struct RateMeter {
    samples: std::collections::VecDeque<(std::time::Instant, u64)>,
}

impl RateMeter {
    /// How far back the rate looks.
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(3);

    pub fn rate(&mut self, bytes_done: u64) -> u64 {
        let now = std::time::Instant::now();
        // Done can go down (a phase that counts again): start over.
        if self.samples.back().is_some_and(|(_, b)| *b > bytes_done) {
            self.samples.clear();
        }
        self.samples.push_back((now, bytes_done));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|(t, _)| now - *t > Self::WINDOW) {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples.front().copied().expect("a sample");
        let secs = (now - t0).as_secs_f64();
        if secs < 0.05 {
            return 0;
        }
        ((bytes_done - b0) as f64 / secs) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_never_passes_an_exact_total_and_an_estimate_grows_with_done() {
        let r = Reporter::new("scanning");
        r.estimate(2, 100);
        r.found(5);
        assert_eq!((r.sample().files_total, r.sample().bytes_total), (2, 100));
        (0..3).for_each(|_| r.found(1));
        assert_eq!(r.sample().files_total, 4);
        r.file_done(150, 0);
        r.file_done(10, 0);
        r.file_done(10, 0);
        let s = r.sample();
        assert_eq!((s.files_done, s.files_total, s.bytes_done, s.bytes_total, s.exact), (3, 4, 170, 170, false));
        r.set_totals(3, 160);
        let s = r.sample();
        assert_eq!((s.files_done, s.bytes_done, s.bytes_total), (3, 160, 160));
        // A file read twice is counted once in the end.
        let r = Reporter::new("reading");
        r.add_bytes(64);
        r.add_bytes(64);
        r.file_done(100, 128);
        assert_eq!(r.sample().bytes_done, 100);
    }
}

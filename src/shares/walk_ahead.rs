//! Reading a walker's next directories ahead, in the time the mount's reader
//! would otherwise spend polling for the next request.
//!
//! A walk (`find`, `ls -lR`, `du`) lists a directory and then opens its
//! subdirectories one by one; for each entry of those, the backend's answer
//! costs a lookup in the source's filesystem, cold after a walk of another
//! part of the tree. While the walker digests an answer, the reader has tens
//! of µs with nothing to do (docs/DESIGN.md, "polling reader"): it spends them,
//! one short step at a time, on the listed subdirectories — reading their
//! first batch of entries, then opening each entry — so that their `opendir`
//! and first `readdirplus` find that work done.
//!
//! What was read ahead is served only while the directory is unchanged: its
//! modification and change times, taken before its entries are read, must be
//! the same at `opendir` and at each `readdirplus` that hands out an entry
//! opened ahead (every name created, removed or renamed in it sets them), and
//! every entry's attributes are taken fresh when served. A directory changed
//! within the last [`SETTLED`] is not read ahead: on a filesystem whose times
//! are as coarse as the kernel's tick, a second change within the same tick
//! would leave them as they were; where times have no fraction of a second
//! (ext3, vfat) the wait is [`SETTLED_COARSE`]. Read ahead for a walker that
//! went elsewhere is dropped when the mount goes idle. Its descriptors count
//! against the daemon's budget: nothing is read ahead where the files the
//! kernels hold leave no room.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hoody_fuse::NodeId;

use super::dir_stream::{dir_times, DirStream, DirTimes};
use super::node_table::held_descriptors;
use super::syscalls::{descriptor_budget, stat};

/// Directories waiting to be read ahead, streams read ahead kept at once, and
/// descriptors those may hold (one per entry opened).
const QUEUED: usize = 64;
const READY: usize = 8;
const DESCRIPTORS: usize = 256;
/// Several ticks of the coarsest kernel clock (HZ=100).
const SETTLED: Duration = Duration::from_millis(50);
/// Times in whole seconds (or two, vfat), and a tick.
const SETTLED_COARSE: Duration = Duration::from_secs(3);

/// Descriptors held by every mount's read-ahead.
static HELD: AtomicUsize = AtomicUsize::new(0);
/// Directories served from what was read ahead, by every mount (for `/metrics`).
static SERVED: AtomicU64 = AtomicU64::new(0);

pub(super) fn served_total() -> u64 {
    SERVED.load(Ordering::Relaxed)
}

#[derive(Default)]
pub(super) struct WalkAhead {
    /// In the order a depth-first walker takes them, the last first; each with
    /// the number of its listing, which keeps that order when a directory read
    /// ahead too early goes back.
    queue: Vec<(u64, NodeId, Arc<OwnedFd>)>,
    listings: u64,
    ready: Vec<Prepared>,
    /// Descriptors held by `ready`.
    held: usize,
    /// Directories served from what was read ahead.
    served: u64,
    /// A reader is stepping (since the last pause): only then is anything
    /// queued, so that a mount whose reader never idles holds nothing.
    stepping: bool,
}

struct Prepared {
    listed: u64,
    dir: NodeId,
    fd: Arc<OwnedFd>,
    times: DirTimes,
    stream: DirStream,
    descriptors: usize,
}

fn times(dir: &OwnedFd) -> Option<DirTimes> {
    stat(dir.as_fd()).ok().map(|st| dir_times(&st))
}

/// Whether times last set at `times` cannot be set to the same again.
fn settled(times: &DirTimes) -> bool {
    let changed = Duration::new(times[2].max(0) as u64, times[3].clamp(0, 999_999_999) as u32);
    let wait = if times[1] == 0 && times[3] == 0 { SETTLED_COARSE } else { SETTLED };
    SystemTime::now().duration_since(UNIX_EPOCH).is_ok_and(|now| now > changed + wait)
}

/// Whether one more descriptor fits the daemon's budget beside the files
/// the kernels hold.
fn room() -> bool {
    held_descriptors() + HELD.load(Ordering::Relaxed) < descriptor_budget()
}

impl WalkAhead {
    /// Subdirectories just listed to a walker, in listing order.
    pub(super) fn listed(&mut self, dirs: impl DoubleEndedIterator<Item = (NodeId, Arc<OwnedFd>)>) {
        if !self.stepping {
            return;
        }
        for (dir, fd) in dirs.rev() {
            if self.queue.len() == QUEUED {
                self.queue.remove(0);
            }
            self.listings += 1;
            self.queue.push((self.listings, dir, fd));
        }
    }

    /// One short step of reading ahead; false when there is nothing to do.
    /// Descriptors it stops holding go to `closed`, for the caller to close.
    pub(super) fn step(&mut self, closed: &mut Vec<OwnedFd>) -> bool {
        self.stepping = true;
        if !room() {
            return false;
        }
        if let Some(prepared) = self.ready.last_mut() {
            if self.held < DESCRIPTORS {
                if let Some(opened) = prepared.stream.open_next_ahead() {
                    prepared.descriptors += usize::from(opened);
                    self.hold(usize::from(opened));
                    return true;
                }
            }
        }
        let Some(&(next, ..)) = self.queue.last() else { return false };
        if self.ready.len() == READY || self.held >= DESCRIPTORS {
            // The ready ones are those the walker takes soonest: a queued
            // directory displaces one only if it was listed later.
            let Some((at, _)) = self.ready.iter().enumerate().filter(|(_, prepared)| prepared.listed < next).min_by_key(|(_, prepared)| prepared.listed) else {
                return false;
            };
            let displaced = self.ready.remove(at);
            self.release(&displaced);
            closed.extend(displaced.stream.take_opened());
            let at = self.queue.partition_point(|(listed, ..)| *listed < displaced.listed);
            self.queue.insert(at, (displaced.listed, displaced.dir, displaced.fd));
        }
        let Some((listed, dir, fd)) = self.queue.pop() else { return false };
        // Times first: a change while the entries are read makes them differ at opendir.
        let Some(times) = times(&fd).filter(settled) else { return true };
        if let Ok(stream) = DirStream::read_ahead(fd.as_fd(), times) {
            self.ready.push(Prepared { listed, dir, fd, times, stream, descriptors: 1 });
            self.hold(1);
        }
        true
    }

    /// The stream read ahead for `dir` (a descriptor of it: `fd`), if the
    /// directory is unchanged since; a stale one's descriptors go to `closed`.
    pub(super) fn take(&mut self, dir: NodeId, fd: &OwnedFd, closed: &mut Vec<OwnedFd>) -> Option<DirStream> {
        self.queue.retain(|(_, queued, _)| *queued != dir);
        let at = self.ready.iter().position(|prepared| prepared.dir == dir)?;
        let prepared = self.ready.remove(at);
        self.release(&prepared);
        let unchanged = times(fd) == Some(prepared.times);
        if !unchanged {
            closed.extend(prepared.stream.take_opened());
        }
        self.served += u64::from(unchanged);
        SERVED.fetch_add(u64::from(unchanged), Ordering::Relaxed);
        unchanged.then_some(prepared.stream)
    }

    /// The walker paused: what was read ahead would be stale by its return.
    /// Returns the descriptors to close.
    pub(super) fn clear(&mut self) -> Vec<OwnedFd> {
        self.stepping = false;
        self.queue.clear();
        let mut closed = Vec::new();
        for prepared in std::mem::take(&mut self.ready) {
            self.release(&prepared);
            closed.extend(prepared.stream.take_opened());
        }
        closed
    }

    pub(super) fn served(&self) -> u64 {
        self.served
    }

    fn hold(&mut self, count: usize) {
        self.held += count;
        HELD.fetch_add(count, Ordering::Relaxed);
    }

    /// `prepared` left `ready`: its descriptors are no longer counted here.
    fn release(&mut self, prepared: &Prepared) {
        self.held -= prepared.descriptors;
        HELD.fetch_sub(prepared.descriptors, Ordering::Relaxed);
    }
}

impl Drop for WalkAhead {
    fn drop(&mut self) {
        HELD.fetch_sub(self.held, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_times_set_long_enough_ago_are_trusted() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let at = |ago: Duration| {
            let t = now - ago;
            [0, 0, t.as_secs() as i64, i64::from(t.subsec_nanos())]
        };
        assert!(settled(&at(Duration::from_secs(1))));
        assert!(!settled(&at(Duration::from_millis(5))));
        assert!(!settled(&at(Duration::ZERO)));
        assert!(!settled(&[0, 0, now.as_secs() as i64 + 60, 0]), "a time in the future");
    }
}

//! An open directory read in pieces, each resuming at the cookie the kernel
//! last consumed (the `d_off` of `getdents64`), as FUSE readdir asks for it.
//!
//! The kernel asks for a page of entries at a time, and each seek of a large
//! ext4 directory rebuilds its hash-order listing: so one `getdents64` batch is
//! read ahead, and a request resuming where the last one stopped is served from
//! it without a system call. (Entries read ahead may be older than the request
//! that gets them, as readdir allows; one removed meanwhile is skipped when it
//! fails to open.)

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use parking_lot::Mutex;

use super::syscalls::{getdents, open_beneath, reopen, seek};

const BATCH_BYTES: usize = 16 * 1024;

pub(super) struct RawEntry {
    pub(super) name: CString,
    /// Cookie resuming after this entry.
    pub(super) offset: u64,
    /// The entry opened (`O_PATH`, beneath the directory) ahead of the
    /// request that lists it, by [`DirStream::open_next_ahead`].
    pub(super) opened: Option<OwnedFd>,
}

pub(super) struct DirStream {
    fd: OwnedFd,
    /// Seek and read must not interleave between two readers of one stream.
    cursor: Mutex<ReadAhead>,
}

/// Entries read but not yet asked for, and the cookie they follow.
#[derive(Default)]
struct ReadAhead {
    after: Option<u64>,
    entries: VecDeque<RawEntry>,
    /// Entries at the front already tried by `open_next_ahead`.
    opened_upto: usize,
    /// The directory's times when the entries were read ahead: what they were
    /// opened as holds only while the times stay.
    opened_for: Option<DirTimes>,
    /// Entries opened ahead of a batch read again: closed by the caller of
    /// `take_opened`, not on the thread that read the batch.
    stale: Vec<OwnedFd>,
}

/// A directory's modification and change times: every name created, removed
/// or renamed in it sets them.
pub(super) type DirTimes = [i64; 4];

pub(super) fn dir_times(st: &libc::stat64) -> DirTimes {
    [st.st_mtime, st.st_mtime_nsec, st.st_ctime, st.st_ctime_nsec]
}

impl DirStream {
    pub(super) fn open(dir: BorrowedFd<'_>) -> io::Result<Self> {
        let fd = reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
        Ok(DirStream { fd, cursor: Mutex::new(ReadAhead::default()) })
    }

    /// A stream whose first batch is read now, ahead of the opendir it is
    /// for, from a directory whose times were `times` before.
    pub(super) fn read_ahead(dir: BorrowedFd<'_>, times: DirTimes) -> io::Result<Self> {
        let stream = Self::open(dir)?;
        {
            let mut ahead = stream.cursor.lock();
            ahead.entries = stream.read_batch(0)?;
            ahead.after = Some(0);
            ahead.opened_for = Some(times);
        }
        Ok(stream)
    }

    /// Takes out the entries opened ahead unless the directory's times are
    /// still `now`: a name may name another file since.
    pub(super) fn opened_unless_unchanged(&self, now: DirTimes) -> Vec<OwnedFd> {
        let mut ahead = self.cursor.lock();
        if ahead.opened_for == Some(now) {
            return std::mem::take(&mut ahead.stale);
        }
        ahead.opened_for = None;
        Self::opened_of(&mut ahead)
    }

    /// Takes out every entry opened ahead and not served.
    pub(super) fn take_opened(&self) -> Vec<OwnedFd> {
        Self::opened_of(&mut self.cursor.lock())
    }

    fn opened_of(ahead: &mut ReadAhead) -> Vec<OwnedFd> {
        let mut opened = std::mem::take(&mut ahead.stale);
        opened.extend(ahead.entries.iter_mut().filter_map(|entry| entry.opened.take()));
        opened
    }

    /// Opens the next entry read ahead and not tried yet: `None` when none is
    /// left, else whether it opened. An entry that cannot be opened now is
    /// left for its request to try.
    pub(super) fn open_next_ahead(&self) -> Option<bool> {
        let mut ahead = self.cursor.lock();
        let ReadAhead { entries, opened_upto, .. } = &mut *ahead;
        loop {
            let entry = entries.get_mut(*opened_upto)?;
            *opened_upto += 1;
            if !matches!(entry.name.as_bytes(), b"." | b"..") {
                entry.opened = open_beneath(self.fd.as_fd(), &entry.name, libc::O_PATH, 0).ok();
                return Some(entry.opened.is_some());
            }
        }
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Up to `max` entries from cookie `offset` (0: the start).
    pub(super) fn read_from(&self, offset: u64, max: usize) -> io::Result<Vec<RawEntry>> {
        let mut ahead = self.cursor.lock();
        if ahead.after != Some(offset) || ahead.entries.is_empty() {
            let read = self.read_batch(offset)?;
            let replaced = std::mem::replace(&mut ahead.entries, read);
            ahead.stale.extend(replaced.into_iter().filter_map(|entry| entry.opened));
            ahead.opened_upto = 0;
        }
        let take = max.min(ahead.entries.len());
        let entries: Vec<RawEntry> = ahead.entries.drain(..take).collect();
        ahead.opened_upto = ahead.opened_upto.saturating_sub(take);
        ahead.after = entries.last().map(|entry| entry.offset);
        Ok(entries)
    }

    /// One `getdents64` batch from cookie `offset`.
    fn read_batch(&self, offset: u64) -> io::Result<VecDeque<RawEntry>> {
        seek(self.fd.as_fd(), offset, libc::SEEK_SET)?;
        let mut buf = vec![0u8; BATCH_BYTES];
        let filled = getdents(self.fd.as_fd(), &mut buf)?;
        let mut entries = VecDeque::new();
        let mut at = 0;
        while at < filled {
            let record = &buf[at..filled];
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
            let cookie = u64::from_ne_bytes(record[8..16].try_into().expect("8 bytes"));
            let length = usize::from(u16::from_ne_bytes(record[16..18].try_into().expect("2 bytes")));
            let name_bytes = &record[19..length];
            let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(name_bytes.len());
            let name = CString::new(&name_bytes[..name_len]).expect("no NUL before the terminator");
            entries.push_back(RawEntry { name, offset: cookie, opened: None });
            at += length;
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs::File;
    use std::os::fd::AsFd;

    use super::*;

    fn names(entries: &[RawEntry]) -> Vec<String> {
        entries.iter().map(|e| e.name.to_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn pieces_resume_where_asked_whether_read_ahead_or_not() {
        let dir = tempfile::tempdir().unwrap();
        // More than one getdents64 batch of entries.
        let expected: BTreeSet<String> = (0..1500).map(|i| format!("entry-with-a-longish-name-{i:05}")).collect();
        for name in &expected {
            File::create(dir.path().join(name)).unwrap();
        }
        let stream = DirStream::open(File::open(dir.path()).unwrap().as_fd()).unwrap();
        let mut seen = Vec::new();
        let mut offset = 0;
        loop {
            let piece = stream.read_from(offset, 37).unwrap();
            let Some(last) = piece.last() else { break };
            offset = last.offset;
            seen.extend(names(&piece));
        }
        seen.retain(|n| n != "." && n != "..");
        assert_eq!(seen.len(), expected.len(), "each entry once");
        assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);

        // Back to the start, then resuming from an earlier cookie than the last
        // one served (the kernel's buffer took fewer entries than offered).
        let first = stream.read_from(0, 10).unwrap();
        let again = stream.read_from(first[4].offset, 3).unwrap();
        let fresh = DirStream::open(File::open(dir.path()).unwrap().as_fd()).unwrap();
        let all = fresh.read_from(0, 8).unwrap();
        assert_eq!(names(&again), names(&all[5..8]));
    }
}

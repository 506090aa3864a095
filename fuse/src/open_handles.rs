//! The adapter's open files and directories: the `fh` the kernel holds for each
//! open ↔ the backend's handle, and the passthrough backing of each inode.
//!
//! The kernel insists that all passthrough opens of one inode share one backing
//! file, so a backing is registered on the first such open of an inode and
//! reused until the last of them is released.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::id_map::IdMap;
use crate::device::BackingId;
use crate::{FsError, FsResult, HandleId};

/// The most entries a directory listing asks the backend for, and its first
/// ask (then at most what the kernel's buffer holds of short names: see
/// `ReplyDirectory::room_for_typical_names`); adapted to what the buffer
/// really takes (see [`OpenDir::entries_hint`]).
const MAX_ENTRIES_HINT: usize = 1024;

pub(crate) struct OpenFile {
    pub(crate) handle: HandleId,
    pub(crate) ino: u64,
    /// Held so the kernel's backing stays registered while the file is open.
    pub(crate) backing: Option<Arc<BackingId>>,
}

pub(crate) struct OpenDir {
    pub(crate) handle: HandleId,
    /// Entries that fit the kernel's last buffer: names vary in length, and
    /// every entry the backend returns but the buffer cannot take costs a
    /// lookup and a forget.
    entries_hint: AtomicUsize,
}

impl OpenDir {
    pub(crate) fn entries_hint(&self) -> usize {
        self.entries_hint.load(Ordering::Relaxed)
    }

    /// `asked` entries were requested, `taken` fitted; `full` if the buffer overflowed.
    pub(crate) fn learn(&self, asked: usize, taken: usize, full: bool) {
        let next = if full {
            taken.max(1)
        } else if taken >= asked {
            (asked * 2).min(MAX_ENTRIES_HINT)
        } else {
            asked
        };
        self.entries_hint.store(next, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct OpenHandles {
    next_fh: AtomicU64,
    files: Mutex<IdMap<u64, Arc<OpenFile>>>,
    dirs: Mutex<IdMap<u64, Arc<OpenDir>>>,
    backings: Mutex<IdMap<u64, Weak<BackingId>>>,
}

impl OpenHandles {
    fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn insert_file(&self, file: OpenFile) -> u64 {
        let fh = self.next_fh();
        self.files.lock().insert(fh, Arc::new(file));
        fh
    }

    pub(crate) fn file(&self, fh: u64) -> FsResult<Arc<OpenFile>> {
        self.files.lock().get(&fh).cloned().ok_or(FsError::BadHandle)
    }

    /// Forgets the open; returns the backend handle to release.
    pub(crate) fn remove_file(&self, fh: u64) -> FsResult<HandleId> {
        let file = self.files.lock().remove(&fh).ok_or(FsError::BadHandle)?;
        let (handle, ino, had_backing) = (file.handle, file.ino, file.backing.is_some());
        drop(file);
        if had_backing {
            let mut backings = self.backings.lock();
            if backings.get(&ino).is_some_and(|weak| weak.strong_count() == 0) {
                backings.remove(&ino);
            }
        }
        Ok(handle)
    }

    pub(crate) fn insert_dir(&self, handle: HandleId) -> u64 {
        let fh = self.next_fh();
        let dir = OpenDir { handle, entries_hint: AtomicUsize::new(MAX_ENTRIES_HINT) };
        self.dirs.lock().insert(fh, Arc::new(dir));
        fh
    }

    pub(crate) fn dir(&self, fh: u64) -> FsResult<Arc<OpenDir>> {
        self.dirs.lock().get(&fh).cloned().ok_or(FsError::BadHandle)
    }

    pub(crate) fn remove_dir(&self, fh: u64) -> FsResult<Arc<OpenDir>> {
        self.dirs.lock().remove(&fh).ok_or(FsError::BadHandle)
    }

    /// The inode's live backing, or a new one from `register`.
    pub(crate) fn backing(&self, ino: u64, register: impl FnOnce() -> io::Result<BackingId>) -> io::Result<Arc<BackingId>> {
        let mut backings = self.backings.lock();
        if let Some(backing) = backings.get(&ino).and_then(Weak::upgrade) {
            return Ok(backing);
        }
        let backing = Arc::new(register()?);
        backings.insert(ino, Arc::downgrade(&backing));
        Ok(backing)
    }

    pub(crate) fn open_count(&self) -> (usize, usize) {
        (self.files.lock().len(), self.dirs.lock().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_distinct_and_removed_once() {
        let handles = OpenHandles::default();
        let a = handles.insert_file(OpenFile { handle: HandleId(7), ino: 5, backing: None });
        let b = handles.insert_dir(HandleId(7));
        assert_ne!(a, b);
        assert_eq!(handles.file(a).unwrap().handle, HandleId(7));
        assert!(handles.file(b).is_err());
        assert_eq!(handles.dir(b).unwrap().handle, HandleId(7));
        assert_eq!(handles.remove_file(a), Ok(HandleId(7)));
        assert_eq!(handles.remove_file(a).err(), Some(FsError::BadHandle));
        assert!(handles.remove_dir(b).is_ok());
        assert_eq!(handles.open_count(), (0, 0));
    }

    #[test]
    fn entries_hint_follows_the_kernel_buffer() {
        let handles = OpenHandles::default();
        let dir = handles.dir(handles.insert_dir(HandleId(1))).unwrap();
        assert_eq!(dir.entries_hint(), MAX_ENTRIES_HINT);
        dir.learn(32, 32, false);
        assert_eq!(dir.entries_hint(), 64);
        dir.learn(64, 20, true);
        assert_eq!(dir.entries_hint(), 20);
        dir.learn(20, 3, false);
        assert_eq!(dir.entries_hint(), 20);
        dir.learn(1024, 1024, false);
        assert_eq!(dir.entries_hint(), MAX_ENTRIES_HINT);
    }
}

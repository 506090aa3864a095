//! Locks taken through a share, taken on the source file itself: they exclude
//! processes working on the source directly and through every other mount of
//! it, as locks on one local file do.
//!
//! A POSIX record lock belongs to a process, not to a descriptor: a process
//! never conflicts with itself, whichever of its descriptors it locks through,
//! and two processes sharing one open file (after `fork`) do conflict. So the
//! daemon holds one descriptor of the file per (file, owner) and takes
//! open-file-description locks (`F_OFD_SETLK`) on it: those conflict with each
//! other and with the classic POSIX locks of processes on the source exactly
//! as the owners' own locks would, and all of an owner's go when its
//! descriptor is closed. A `flock` lock belongs to the open file: taken on the
//! handle's own descriptor.
//!
//! An owner's locks end when it unlocks, when a handle it locked through is
//! released (the last close of that open file), or when its process exits,
//! which the daemon learns from a pidfd: the kernel reports no `close(2)` of
//! a share's file (its closes cost no round trip, `FOPEN_NOFLUSH`), so a
//! worker that dies holding a lock on a file its siblings keep open would
//! otherwise hold it until they all close it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use hoody_fuse::{FileLock, FsError, FsResult, HandleId, LockKind, LOCK_TO_END};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::syscalls::{self, stat};

/// A source file, as the host names it.
type FileKey = (u64, u64);

/// One process's locks on one file: the descriptor they are held on, and the
/// handles they were taken through, whose release ends them.
struct OwnerLocks {
    fd: OwnedFd,
    through: Vec<HandleId>,
    /// Tells this entry from a later one of a reused owner id.
    serial: u64,
    /// The processes that locked as this owner, each watched for its exit
    /// (the sender, dropped with the entry, ends the watch). Usually one; more
    /// when an open file's (OFD) locks are taken by processes sharing it, or
    /// when the kernel gave a dead owner's id to a new one before its exit
    /// was seen. The entry ends by exit only when all of them have exited:
    /// never while one of them may still count on its locks.
    processes: Vec<(u32, oneshot::Sender<()>)>,
    /// A process that could not be watched locked as this owner: its locks
    /// then end only by unlock or release.
    unwatched: bool,
}

/// Owners with a descriptor of their own per mount: each costs the daemon a
/// descriptor and a pidfd, so one target cannot take them all (`ENOLCK`).
const MAX_OWNERS: usize = 4096;

#[derive(Default)]
struct Held {
    serials: u64,
    owners: HashMap<(FileKey, u64), OwnerLocks>,
    /// Which owners locked through each handle.
    by_handle: HashMap<HandleId, Vec<(FileKey, u64)>>,
    /// Handles holding a `flock` lock on their own descriptor.
    flocked: Vec<HandleId>,
}

pub(super) struct FileLocks {
    held: Mutex<Held>,
    /// Whether any lock was ever taken: until then the release of a file,
    /// on the path of every close, takes no lock of its own.
    in_use: AtomicBool,
    max_owners: usize,
}

impl Default for FileLocks {
    fn default() -> Self {
        FileLocks::with_max_owners(MAX_OWNERS)
    }
}

fn flock_struct(lock: &FileLock) -> FsResult<libc::flock> {
    if lock.end < lock.start || lock.start > LOCK_TO_END || lock.end > LOCK_TO_END {
        return Err(FsError::InvalidArgument);
    }
    let len = if lock.end == LOCK_TO_END { 0 } else { lock.end - lock.start + 1 };
    // SAFETY: `flock` is plain data.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = lock.kind.to_fcntl() as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = lock.start as libc::off_t;
    fl.l_len = len as libc::off_t;
    Ok(fl)
}

fn fcntl_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
    // SAFETY: valid descriptor and lock structure.
    if unsafe { libc::fcntl(fd.as_raw_fd(), cmd, fl as *mut libc::flock) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A lock held by another comes back as `EAGAIN` (`EACCES` for some).
fn conflict(err: io::Error) -> FsError {
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => FsError::WouldBlock,
        _ => err.into(),
    }
}

impl FileLocks {
    fn with_max_owners(max_owners: usize) -> Self {
        FileLocks { held: Mutex::default(), in_use: AtomicBool::new(false), max_owners }
    }

    /// The first lock in the way of `owner` taking `lock` on the file of `fd`.
    pub(super) fn getlk(&self, fd: BorrowedFd<'_>, owner: u64, lock: &FileLock) -> FsResult<Option<FileLock>> {
        let mut fl = flock_struct(lock)?;
        let key = (file_key(fd)?, owner);
        let held = self.held.lock();
        // The owner's own descriptor, so that its own locks are no conflict;
        // without one, the handle's, on which no record lock is ever taken.
        let on = held.owners.get(&key).map_or(fd, |locks| locks.fd.as_fd());
        fcntl_lock(on, libc::F_OFD_GETLK, &mut fl)?;
        let kind = LockKind::from_fcntl(i32::from(fl.l_type)).ok_or(FsError::InvalidArgument)?;
        if kind == LockKind::Unlock {
            return Ok(None);
        }
        let start = fl.l_start as u64;
        let end = if fl.l_len == 0 { LOCK_TO_END } else { start + fl.l_len as u64 - 1 };
        // An OFD lock (every lock taken through a share) names no process: -1.
        Ok(Some(FileLock { kind, start, end, pid: u32::try_from(fl.l_pid).unwrap_or(0) }))
    }

    /// Takes, changes or drops `owner`'s record lock, never waiting.
    /// `writable`: whether the share may open the file for writing (write
    /// locks need it); `lock.pid` the owner's process, watched for its exit.
    pub(super) fn set_record(self: &Arc<Self>, handle: HandleId, fd: BorrowedFd<'_>, owner: u64, lock: &FileLock, writable: bool) -> FsResult<()> {
        let mut fl = flock_struct(lock)?;
        let key = (file_key(fd)?, owner);
        let mut held = self.held.lock();
        let held = &mut *held;
        match held.owners.get(&key) {
            Some(locks) => fcntl_lock(locks.fd.as_fd(), libc::F_OFD_SETLK, &mut fl).map_err(conflict)?,
            // Nothing to drop for an owner that holds nothing here.
            None if lock.kind == LockKind::Unlock => return Ok(()),
            None if held.owners.len() >= self.max_owners => return Err(FsError::Os(libc::ENOLCK)),
            None => {
                // Taken on a descriptor of its own before the owner is
                // recorded: a new owner refused its first lock leaves nothing.
                let fd = lock_descriptor(fd, writable)?;
                fcntl_lock(fd.as_fd(), libc::F_OFD_SETLK, &mut fl).map_err(conflict)?;
                held.serials += 1;
                let locks = OwnerLocks { fd, through: Vec::new(), serial: held.serials, processes: Vec::new(), unwatched: false };
                held.owners.insert(key, locks);
                self.in_use.store(true, Ordering::Relaxed);
            }
        }
        let locks = held.owners.get_mut(&key).expect("present or just recorded");
        if lock.kind != LockKind::Unlock {
            self.note_process(locks, lock.pid, key);
        }
        if !locks.through.contains(&handle) {
            locks.through.push(handle);
            held.by_handle.entry(handle).or_default().push(key);
        }
        Ok(())
    }

    /// `pid` took a lock as the owner of `locks`: watched from now on.
    fn note_process(self: &Arc<Self>, locks: &mut OwnerLocks, pid: u32, key: (FileKey, u64)) {
        if locks.unwatched || locks.processes.iter().any(|(known, _)| *known == pid) {
            return;
        }
        match self.watch_exit(pid, key, locks.serial) {
            Some(watch) => locks.processes.push((pid, watch)),
            None => locks.unwatched = true,
        }
    }

    /// Takes, changes or drops the `flock` lock of the open file `fd`, never waiting.
    pub(super) fn set_flock(&self, handle: HandleId, fd: BorrowedFd<'_>, kind: LockKind) -> FsResult<()> {
        let operation = match kind {
            LockKind::Read => libc::LOCK_SH,
            LockKind::Write => libc::LOCK_EX,
            LockKind::Unlock => libc::LOCK_UN,
        };
        let mut held = self.held.lock();
        // SAFETY: valid descriptor.
        if unsafe { libc::flock(fd.as_raw_fd(), operation | libc::LOCK_NB) } < 0 {
            return Err(conflict(io::Error::last_os_error()));
        }
        if kind != LockKind::Unlock && !held.flocked.contains(&handle) {
            held.flocked.push(handle);
            self.in_use.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `handle` is being closed: the record locks taken through it end, and
    /// its `flock` lock, which the kernel's passthrough reference to the open
    /// file could otherwise keep alive.
    pub(super) fn released(&self, handle: HandleId, fd: BorrowedFd<'_>) {
        // Set under the lock that recorded the first lock; a release of a
        // handle that took one comes after that answer.
        if !self.in_use.load(Ordering::Relaxed) {
            return;
        }
        let mut held = self.held.lock();
        if let Some(at) = held.flocked.iter().position(|h| *h == handle) {
            held.flocked.swap_remove(at);
            // SAFETY: valid descriptor.
            unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) };
        }
        let Some(keys) = held.by_handle.remove(&handle) else { return };
        for key in keys {
            held.end_owner(key);
        }
    }

    /// Tells entry `serial` of `key` when process `pid` exits; `None` where
    /// it cannot be watched (no runtime, no such process).
    fn watch_exit(self: &Arc<Self>, pid: u32, key: (FileKey, u64), serial: u64) -> Option<oneshot::Sender<()>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let pidfd = pidfd_open(pid).ok()?;
        let (tell, told) = oneshot::channel::<()>();
        let locks: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            // SAFETY: the pidfd is owned by the AsyncFd and stays open as long as it.
            let Ok(exit) = (unsafe { tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }) else { return };
            tokio::select! {
                _ = exit.readable() => {
                    if let Some(locks) = locks.upgrade() {
                        locks.exited(key, serial, pid);
                    }
                }
                // The entry ended first.
                _ = told => {}
            }
        });
        Some(tell)
    }

    /// Owners holding a descriptor for their locks (for tests of the cleanup).
    #[cfg(test)]
    fn owners(&self) -> usize {
        self.held.lock().owners.len()
    }
}

impl FileLocks {
    fn exited(&self, key: (FileKey, u64), serial: u64, pid: u32) {
        let mut held = self.held.lock();
        let Some(entry) = held.owners.get_mut(&key).filter(|entry| entry.serial == serial) else { return };
        entry.processes.retain(|(known, _)| *known != pid);
        if entry.processes.is_empty() && !entry.unwatched {
            held.end_owner(key);
        }
    }
}

impl Held {
    /// Closes the owner's descriptor, which drops its locks on the file.
    fn end_owner(&mut self, key: (FileKey, u64)) {
        if let Some(locks) = self.owners.remove(&key) {
            for handle in &locks.through {
                if let Some(list) = self.by_handle.get_mut(handle) {
                    list.retain(|k| *k != key);
                }
            }
        }
    }
}

/// A descriptor that polls readable once process `pid` has exited.
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    if pid == 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: plain system call; a descriptor is returned on success.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn file_key(fd: BorrowedFd<'_>) -> FsResult<FileKey> {
    let st = stat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// A descriptor of the file for one owner's locks, open as the handle it
/// first locks through: read-write if that is open for writing (a write lock
/// needs it, a read lock reading), else read-only, so that the daemon never
/// holds a file open for writing that the caller had not (which would refuse
/// to run it as a program). A write lock asked later through a writable
/// handle of an owner whose descriptor is read-only is `EBADF`.
fn lock_descriptor(fd: BorrowedFd<'_>, writable: bool) -> FsResult<OwnedFd> {
    let flags = libc::O_NOCTTY | libc::O_NONBLOCK;
    // SAFETY: valid descriptor.
    let status = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if status < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let writer = matches!(status & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR);
    let access = if writable && writer { libc::O_RDWR } else { libc::O_RDONLY };
    Ok(syscalls::reopen(fd, access | flags)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn lock(kind: LockKind, start: u64, end: u64) -> FileLock {
        FileLock { kind, start, end, pid: 0 }
    }

    fn fd(file: &File) -> BorrowedFd<'_> {
        file.as_fd()
    }

    #[test]
    fn owners_exclude_each_other_but_never_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let (a, b) = (File::options().read(true).write(true).open(&path).unwrap(), File::options().read(true).write(true).open(&path).unwrap());
        let locks = Arc::new(FileLocks::default());
        locks.set_record(HandleId(1), fd(&a), 7, &lock(LockKind::Write, 0, 4), true).unwrap();
        // The same owner through another handle: no conflict, the lock just changes.
        locks.set_record(HandleId(2), fd(&b), 7, &lock(LockKind::Read, 0, 4), true).unwrap();
        assert_eq!(locks.getlk(fd(&a), 7, &lock(LockKind::Write, 0, LOCK_TO_END)).unwrap(), None);
        let seen = locks.getlk(fd(&a), 8, &lock(LockKind::Write, 0, LOCK_TO_END)).unwrap().unwrap();
        assert_eq!((seen.kind, seen.start, seen.end), (LockKind::Read, 0, 4));
        assert_eq!(locks.set_record(HandleId(1), fd(&a), 8, &lock(LockKind::Write, 2, 2), true), Err(FsError::WouldBlock));
        locks.set_record(HandleId(1), fd(&a), 8, &lock(LockKind::Read, 2, LOCK_TO_END), true).unwrap();
        assert_eq!(locks.owners(), 2);

        // Releasing handle 2 ends owner 7's locks (taken through it too), not 8's.
        locks.released(HandleId(2), fd(&b));
        assert_eq!(locks.owners(), 1);
        assert_eq!(locks.set_record(HandleId(1), fd(&a), 9, &lock(LockKind::Write, 0, 1), true), Ok(()));
        locks.released(HandleId(1), fd(&a));
        assert_eq!(locks.owners(), 0);
        assert_eq!(locks.getlk(fd(&a), 10, &lock(LockKind::Write, 0, LOCK_TO_END)).unwrap(), None);
    }

    #[test]
    fn an_owner_first_seen_reading_holds_the_file_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let (reading, writing) = (File::open(&path).unwrap(), File::options().read(true).write(true).open(&path).unwrap());
        let locks = Arc::new(FileLocks::default());
        locks.set_record(HandleId(1), fd(&reading), 7, &lock(LockKind::Read, 0, 0), true).unwrap();
        assert_eq!(locks.set_record(HandleId(2), fd(&writing), 7, &lock(LockKind::Write, 5, 5), true), Err(FsError::BadHandle));
        locks.released(HandleId(1), fd(&reading));
        locks.set_record(HandleId(2), fd(&writing), 7, &lock(LockKind::Write, 5, 5), true).unwrap();
        // A read-only share never holds a file open for writing.
        locks.set_record(HandleId(2), fd(&writing), 8, &lock(LockKind::Read, 0, 0), false).unwrap();
        assert_eq!(locks.set_record(HandleId(2), fd(&writing), 8, &lock(LockKind::Write, 0, 0), false), Err(FsError::BadHandle));
    }

    /// An owner id the kernel hands to a new process before the old one's
    /// exit is seen, or an open file two processes lock through: the locks
    /// stay while one of them lives, and go when all have exited.
    #[test]
    fn an_owner_ends_by_exit_only_when_every_process_that_locked_as_it_has() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let _inside = runtime.enter();
        let file = tempfile::tempfile().unwrap();
        let locks = Arc::new(FileLocks::default());
        let mut first = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let mut second = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let as_process = |pid: u32, start: u64| FileLock { pid, ..lock(LockKind::Write, start, start) };
        locks.set_record(HandleId(1), fd(&file), 7, &as_process(first.id(), 0), true).unwrap();
        locks.set_record(HandleId(1), fd(&file), 7, &as_process(second.id(), 1), true).unwrap();
        let gone = |locks: &FileLocks| {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while locks.owners() > 0 && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            locks.owners() == 0
        };
        first.kill().unwrap();
        first.wait().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(locks.owners(), 1, "the second process still counts on the owner's locks");
        second.kill().unwrap();
        second.wait().unwrap();
        assert!(gone(&locks), "all that locked as the owner exited: its locks end");
    }

    #[test]
    fn owners_past_the_limit_are_refused_until_one_ends() {
        let file = tempfile::tempfile().unwrap();
        let locks = Arc::new(FileLocks::with_max_owners(2));
        locks.set_record(HandleId(1), fd(&file), 1, &lock(LockKind::Read, 0, 0), true).unwrap();
        locks.set_record(HandleId(2), fd(&file), 2, &lock(LockKind::Read, 0, 0), true).unwrap();
        assert_eq!(locks.set_record(HandleId(3), fd(&file), 3, &lock(LockKind::Read, 0, 0), true), Err(FsError::Os(libc::ENOLCK)));
        locks.set_record(HandleId(1), fd(&file), 1, &lock(LockKind::Write, 9, 9), true).unwrap();
        locks.released(HandleId(2), fd(&file));
        locks.set_record(HandleId(3), fd(&file), 3, &lock(LockKind::Read, 5, 5), true).unwrap();
    }

    #[test]
    fn unlocking_what_was_never_locked_opens_nothing() {
        let file = tempfile::tempfile().unwrap();
        let locks = Arc::new(FileLocks::default());
        locks.set_record(HandleId(1), fd(&file), 7, &lock(LockKind::Unlock, 0, LOCK_TO_END), true).unwrap();
        assert_eq!(locks.owners(), 0);
        assert_eq!(locks.set_record(HandleId(1), fd(&file), 7, &lock(LockKind::Read, 5, 4), true), Err(FsError::InvalidArgument));
    }
}

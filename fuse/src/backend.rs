//! The backend trait a mount serves, and the types of its calls: what a
//! share's files are, independent of where they live (a source directory on
//! this node, or a source on another node over QUIC).

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::error::FsResult;
use crate::invalidation::CacheInvalidator;

/// A file as the backend names it: stable across restarts of either side (for
/// the local backend, derived from the source file's device and inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// An open file or directory of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandleId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub node: NodeId,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Allocated size in 512-byte units, as `st_blocks`.
    pub blocks: u64,
    pub rdev: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// One entry of a directory listing. `offset` is the cookie that resumes the
/// listing right after this entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: OsString,
    pub offset: u64,
    pub attr: Attr,
}

/// A time to set: the caller's clock at the moment of the change, or a given time.
/// Kept apart because "now" needs only write permission, a given time ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(SystemTime),
}

/// Changes of `setattr`; `None` leaves the field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits (the file type bits are ignored).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// Set to the caller when it may not keep privileges
    /// ([`Caller::may_keep_privileges`]) and truncates the file or asked the
    /// kernel to drop them: the backend drops setuid, setgid (when
    /// group-executable, or the caller is not of the file's group) and
    /// `security.capability` of a regular file, as a local filesystem does.
    pub drop_privileges: Option<Caller>,
}

/// Who creates or changes a file: the owner of what it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    /// Whether a write or truncate by this caller leaves setuid, setgid and
    /// file capabilities in place (the kernel's `CAP_FSETID`, approximated by
    /// the caller's uid: a mount sees uids, not capabilities).
    pub fn may_keep_privileges(&self) -> bool {
        self.uid == 0
    }
}

/// An open file. When the backend serves the file from a descriptor on this
/// node, it may hand that descriptor over as `passthrough` so the kernel reads
/// and writes the file directly (FUSE passthrough); the backend handle stays
/// valid for everything else (fsync, setattr, release...).
#[derive(Debug, Clone)]
pub struct Opened {
    pub handle: HandleId,
    pub passthrough: Option<Arc<OwnedFd>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    /// Fragment size: the unit of `blocks`, `bfree` and `bavail`.
    pub frsize: u32,
    pub namelen: u32,
}

/// What a lock holds, or that it is to be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Read,
    Write,
    Unlock,
}

impl LockKind {
    /// From `fcntl`'s `l_type` (`F_RDLCK`, `F_WRLCK`, `F_UNLCK`).
    pub fn from_fcntl(typ: i32) -> Option<Self> {
        match typ {
            libc::F_RDLCK => Some(LockKind::Read),
            libc::F_WRLCK => Some(LockKind::Write),
            libc::F_UNLCK => Some(LockKind::Unlock),
            _ => None,
        }
    }

    pub fn to_fcntl(self) -> i32 {
        match self {
            LockKind::Read => libc::F_RDLCK,
            LockKind::Write => libc::F_WRLCK,
            LockKind::Unlock => libc::F_UNLCK,
        }
    }
}

/// The `end` of a lock that reaches past any end of file.
pub const LOCK_TO_END: u64 = i64::MAX as u64;

/// A byte range lock, `start..=end`. `pid`: the holder's process id as the
/// source's side sees it, in what `getlk` answers (0 when it has none to give).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLock {
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

/// Whose lock it is, which decides what it conflicts with and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockOwner {
    /// A POSIX record lock (`fcntl` `F_SETLK`): it belongs to a process (the
    /// kernel's lock owner, one per file table), whatever descriptor of the
    /// file it went through; it never conflicts with the same owner's.
    Process(u64),
    /// A `flock(2)` lock: it belongs to the open file (one handle).
    OpenFile,
}

/// What a share serves. The FUSE adapter owns inode numbering and kernel caches;
/// the backend owns the files and the rules (containment, readonly, availability).
///
/// References: every [`Attr`] returned by `lookup`, `create`, `mkdir`, `mknod`,
/// `symlink`, `link`, and every `readdirplus` entry other than `.` and `..`,
/// is one reference the kernel may keep to that node; `forget` hands references
/// back. A backend keeps what it needs to serve a node while references remain;
/// the root is never forgotten. Names passed in are single path components.
#[async_trait]
pub trait FsBackend: Send + Sync + 'static {
    /// The root of the share (takes no reference).
    async fn root(&self) -> FsResult<Attr>;
    async fn lookup(&self, parent: NodeId, name: &OsStr) -> FsResult<Attr>;
    /// The kernel dropped `count` references to `node`.
    async fn forget(&self, node: NodeId, count: u64);
    /// `handle` is set when the caller asks about an open file (`fstat`).
    async fn getattr(&self, node: NodeId, handle: Option<HandleId>) -> FsResult<Attr>;
    async fn setattr(&self, node: NodeId, handle: Option<HandleId>, changes: SetAttr) -> FsResult<Attr>;

    async fn opendir(&self, dir: NodeId) -> FsResult<HandleId>;
    /// Entries from cookie `offset` (0: the start), at most `max_entries` of
    /// them; an empty list ends the listing. `.` and `..`, when listed, carry the
    /// directory's own attributes.
    async fn readdirplus(&self, dir: NodeId, handle: HandleId, offset: u64, max_entries: usize) -> FsResult<Vec<DirEntry>>;
    async fn releasedir(&self, handle: HandleId) -> FsResult<()>;
    async fn fsyncdir(&self, handle: HandleId, datasync: bool) -> FsResult<()>;

    /// `flags` are the caller's `open(2)` flags, `O_APPEND` included (the FUSE
    /// adapter truncates with a `setattr` after the open, once the kernel has
    /// checked that it may: `O_TRUNC` reaches a backend only from other callers).
    /// An `O_TRUNC` by a caller who may not keep privileges drops them. Hand
    /// over every open of a file for passthrough alike: the kernel refuses to
    /// mix passthrough and cached opens of one file.
    async fn open(&self, node: NodeId, flags: i32, caller: Caller) -> FsResult<Opened>;
    /// `mode` as the caller asked, `umask` the caller's: applied unless the
    /// parent has a default ACL, which decides instead (as on a local filesystem).
    async fn create(&self, parent: NodeId, name: &OsStr, mode: u32, umask: u32, flags: i32, caller: Caller) -> FsResult<(Attr, Opened)>;
    async fn read(&self, handle: HandleId, offset: u64, size: u32) -> FsResult<Vec<u8>>;
    /// `data` is handed over so that no backend needs to copy it again.
    /// `drop_privileges`: the writer, when it may not keep them (see [`SetAttr::drop_privileges`]).
    async fn write(&self, handle: HandleId, offset: u64, data: Vec<u8>, drop_privileges: Option<Caller>) -> FsResult<u32>;
    /// Each `close(2)` of a descriptor of the handle; a chance to report late
    /// write errors. Not called when [`FsBackend::writes_land_at_once`].
    async fn flush(&self, handle: HandleId) -> FsResult<()>;
    async fn release(&self, handle: HandleId) -> FsResult<()>;
    async fn fsync(&self, handle: HandleId, datasync: bool) -> FsResult<()>;
    async fn fallocate(&self, handle: HandleId, offset: u64, length: u64, mode: i32) -> FsResult<()>;
    /// Only `SEEK_DATA` and `SEEK_HOLE` reach the backend; the kernel answers the others.
    async fn lseek(&self, handle: HandleId, offset: u64, whence: i32) -> FsResult<u64>;
    async fn copy_file_range(&self, from: HandleId, from_offset: u64, to: HandleId, to_offset: u64, length: u64) -> FsResult<u64>;

    /// `mode` and `umask` as for [`FsBackend::create`].
    async fn mkdir(&self, parent: NodeId, name: &OsStr, mode: u32, umask: u32, caller: Caller) -> FsResult<Attr>;
    /// `mode` includes the file type bits (`S_IFIFO`, `S_IFSOCK`...); `umask` as for [`FsBackend::create`].
    async fn mknod(&self, parent: NodeId, name: &OsStr, mode: u32, umask: u32, rdev: u32, caller: Caller) -> FsResult<Attr>;
    async fn symlink(&self, parent: NodeId, name: &OsStr, target: &Path, caller: Caller) -> FsResult<Attr>;
    async fn link(&self, node: NodeId, new_parent: NodeId, new_name: &OsStr) -> FsResult<Attr>;
    async fn unlink(&self, parent: NodeId, name: &OsStr) -> FsResult<()>;
    async fn rmdir(&self, parent: NodeId, name: &OsStr) -> FsResult<()>;
    /// `flags`: `RENAME_NOREPLACE`, `RENAME_EXCHANGE` as for `renameat2(2)`.
    async fn rename(&self, parent: NodeId, name: &OsStr, new_parent: NodeId, new_name: &OsStr, flags: u32) -> FsResult<()>;
    async fn readlink(&self, node: NodeId) -> FsResult<PathBuf>;
    async fn statfs(&self) -> FsResult<StatFs>;

    async fn getxattr(&self, node: NodeId, name: &OsStr) -> FsResult<Vec<u8>>;
    async fn setxattr(&self, node: NodeId, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()>;
    async fn listxattr(&self, node: NodeId) -> FsResult<Vec<OsString>>;
    async fn removexattr(&self, node: NodeId, name: &OsStr) -> FsResult<()>;

    /// The first lock, not `owner`'s, that `lock` would conflict with (`F_GETLK`),
    /// or `None` when it could be taken.
    async fn getlk(&self, handle: HandleId, owner: u64, lock: FileLock) -> FsResult<Option<FileLock>>;
    /// Takes, changes or drops ([`LockKind::Unlock`]) a lock of `owner` on the
    /// file of `handle`; the kernel has checked that the handle's access mode
    /// allows it. Held by another: [`FsError::WouldBlock`], or, with `wait`,
    /// waits until it can be taken (the adapter drops the future when the
    /// caller is interrupted, so a wait must be cancel-safe: never granted
    /// once dropped). A process's locks taken through a handle end with its
    /// `release` (or earlier, by unlocking); a `flock` lock ends with its handle.
    async fn setlk(&self, handle: HandleId, owner: LockOwner, lock: FileLock, wait: bool) -> FsResult<()>;

    /// Whether the mount hands locks to [`FsBackend::getlk`] and
    /// [`FsBackend::setlk`]; otherwise the target's kernel keeps them itself,
    /// excluding only the users of the mount. (Never over FUSE-over-io_uring,
    /// whose few queue entries waiting locks would hold: requests behind them
    /// could wait for a lock holder whose own requests wait for an entry.)
    fn takes_locks(&self) -> bool {
        false
    }

    /// Work the backend may do while the mount's reader waits for the kernel's
    /// next request in a burst (reading ahead of a walker): one short step, a
    /// few µs, since a request may be waiting meanwhile. False when there is
    /// nothing to do.
    fn idle_step(&self) -> bool {
        false
    }

    /// The burst ended: the reader blocks until the next request.
    fn idle_end(&self) {}

    /// Whether every write is in the file when it returns, so that `flush` has
    /// nothing to report: the kernel then skips the round trip of a flush on
    /// every `close(2)` (FUSE `FOPEN_NOFLUSH`).
    fn writes_land_at_once(&self) -> bool {
        false
    }

    /// Whether the backend invalidates the kernel's caches on every change made
    /// behind its back (a remote source pushes them): the kernel may then keep
    /// file data across opens (`FOPEN_KEEP_CACHE`) and directory listings
    /// (`FOPEN_CACHE_DIR`), so a second read or walk asks nothing.
    fn tells_every_change(&self) -> bool {
        false
    }

    /// Called once per mount, before the first request: a backend that learns
    /// of changes behind the kernel's back (another writer, the remote source)
    /// keeps `invalidator` to drop the kernel's stale caches.
    fn attach_invalidator(&self, _invalidator: CacheInvalidator) {}
}

//! The state of one mount shared by its request tasks: the backend, the
//! number and handle tables, kernel settings and counters, and the helpers that
//! turn backend answers into kernel replies (attributes, entries, errors).

use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;


use crate::inode_table::InodeTable;
use crate::lock_waits::LockWaits;
use crate::open_handles::{OpenFile, OpenHandles};
use crate::reply::{FileHandle, FopenFlags, INodeNo, ReplyEntry, ReplyError};
use crate::device::BackingId;
use crate::wire::FileAttr;
use crate::{Attr, FileKind, FsBackend, FsError, FsResult, HandleId, NodeId, Opened};

/// Inode generations are not used: node ids are stable, never recycled by us.
pub(crate) const GENERATION: u64 = 0;
/// `st_blksize` reported for every file.
const BLOCK_SIZE: u32 = 4096;

/// Kernel connection settings chosen at mount time.
pub(crate) struct Tuning {
    pub(crate) entry_ttl: Duration,
    pub(crate) attr_ttl: Duration,
    pub(crate) max_write: u32,
    pub(crate) max_readahead: u32,
    pub(crate) max_background: u16,
    pub(crate) passthrough: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) over_io_uring: AtomicU64,
}

/// State of one mount, shared by the request tasks.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn FsBackend>,
    pub(crate) inodes: Arc<InodeTable>,
    pub(crate) handles: OpenHandles,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) tuning: Tuning,
    /// Whether the kernel agreed to passthrough at init.
    pub(crate) passthrough_active: AtomicBool,
    /// Whether the kernel agreed to FUSE-over-io_uring for this mount.
    pub(crate) io_uring_active: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) lock_waits: LockWaits,
}

impl Shared {
    pub(crate) fn node(&self, ino: INodeNo) -> FsResult<NodeId> {
        self.inodes.node(ino.0).ok_or(FsError::Stale)
    }

    pub(crate) fn file_handle(&self, fh: FileHandle) -> FsResult<HandleId> {
        Ok(self.handles.file(fh.0)?.handle)
    }

    /// The backend handle of an open file, if `fh` names one (it may name a directory).
    pub(crate) fn optional_file_handle(&self, fh: Option<FileHandle>) -> Option<HandleId> {
        fh.and_then(|fh| self.handles.file(fh.0).ok()).map(|file| file.handle)
    }

    /// The one place where a failure becomes a reply: logged, counted, answered.
    pub(crate) fn fail(&self, op: &'static str, reply: impl ReplyError, err: FsError) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(op, error = %err, errno = err.to_errno(), "share request failed");
        reply.error(err.to_errno());
    }

    pub(crate) fn file_attr(&self, ino: u64, attr: &Attr) -> FileAttr {
        FileAttr {
            ino,
            size: attr.size,
            blocks: attr.blocks,
            atime: attr.atime,
            mtime: attr.mtime,
            ctime: attr.ctime,
            mode: file_mode(attr.kind) | u32::from(attr.perm),
            nlink: attr.nlink,
            uid: attr.uid,
            gid: attr.gid,
            rdev: attr.rdev,
            blksize: BLOCK_SIZE,
        }
    }

    /// Hands `attr`'s node to the kernel as a new reference, named `name` in `parent`.
    pub(crate) fn reply_entry(&self, reply: ReplyEntry, attr: &Attr, parent: u64, name: &OsStr) {
        let ino = self.inodes.remember_named(attr.node, parent, name);
        reply.entry(&self.tuning.entry_ttl, &self.file_attr(ino, attr), GENERATION);
    }

    /// The kernel (or the adapter, for entries it could not deliver) dropped
    /// `count` references to `ino`; the backend learns it at once where it can.
    pub(crate) fn forget(self: &Arc<Self>, ino: u64, count: u64) {
        if let Some(node) = self.inodes.forget(ino, count) {
            self.forget_node(node, count);
        }
    }

    pub(crate) fn forget_node(self: &Arc<Self>, node: NodeId, count: u64) {
        let backend = self.backend.clone();
        self.run_here_or_spawn(async move { backend.forget(node, count).await });
    }

    /// Runs `task` on this thread for as long as it goes without waiting, and
    /// as a task of the runtime from there. A local backend answers most
    /// requests (and takes forgets, which come by the thousand) at once: no
    /// hand-off to another thread, no wake-up.
    pub(crate) fn run_here_or_spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut task = Box::pin(task);
        let _runtime = self.runtime.enter();
        if task.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending() {
            self.runtime.spawn(task);
        }
    }

    /// The inode's passthrough backing when the kernel and backend both allow it.
    pub(crate) fn backing(
        &self,
        ino: u64,
        fd: Option<&OwnedFd>,
        open_backing: impl FnOnce(&OwnedFd) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let fd = fd.filter(|_| self.passthrough_active.load(Ordering::Relaxed))?;
        match self.handles.backing(ino, || open_backing(fd)) {
            Ok(backing) => Some(backing),
            Err(err) => {
                tracing::debug!(ino, error = %err, "passthrough refused, serving the file through the daemon");
                None
            }
        }
    }

    /// How the kernel should treat a file this mount opens.
    pub(crate) fn file_open_flags(&self) -> FopenFlags {
        let flags = if self.backend.writes_land_at_once() { FopenFlags::NOFLUSH } else { FopenFlags::empty() };
        if self.backend.tells_every_change() {
            flags.with(FopenFlags::KEEP_CACHE)
        } else {
            flags
        }
    }

    /// How the kernel should treat a directory this mount opens: listings
    /// kept in its cache when the backend tells every change.
    pub(crate) fn dir_open_flags(&self) -> FopenFlags {
        if self.backend.tells_every_change() {
            FopenFlags::CACHE_DIR.with(FopenFlags::KEEP_CACHE)
        } else {
            FopenFlags::empty()
        }
    }

    pub(crate) fn open_file(
        &self,
        ino: u64,
        opened: &Opened,
        open_backing: impl FnOnce(&OwnedFd) -> io::Result<BackingId>,
    ) -> (FileHandle, Option<Arc<BackingId>>) {
        let backing = self.backing(ino, opened.passthrough.as_deref(), open_backing);
        let fh = self.handles.insert_file(OpenFile { handle: opened.handle, ino, backing: backing.clone() });
        (FileHandle(fh), backing)
    }
}

/// The file type bits of `st_mode`.
pub(crate) fn file_mode(kind: FileKind) -> u32 {
    match kind {
        FileKind::File => libc::S_IFREG,
        FileKind::Directory => libc::S_IFDIR,
        FileKind::Symlink => libc::S_IFLNK,
        FileKind::Fifo => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
        FileKind::CharDevice => libc::S_IFCHR,
        FileKind::BlockDevice => libc::S_IFBLK,
    }
}

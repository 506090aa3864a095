//! Dropping the kernel's caches of a mount when files change behind its back
//! (the source writes directly, another target writes, a remote source pushes).
//!
//! Nodes the kernel does not know are not cached, so invalidating them is a
//! no-op. Never call these from inside the handling of a request of the same
//! mount: the kernel may hold the very lock the invalidation waits for.

use std::ffi::OsStr;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;


use crate::inode_table::InodeTable;
use crate::device::Notifier;
use crate::NodeId;

/// Where invalidations go: a mount's kernel, or (for a share whose source is
/// on another node) the target node that holds that kernel's mount.
pub trait InvalidationSink: Send + Sync + 'static {
    /// Attributes and the cached data in `offset..offset + len` of `node`
    /// (`len` 0: to the end; a negative `offset`: attributes only).
    fn invalidate_data(&self, node: NodeId, offset: i64, len: i64) -> io::Result<()>;
    /// The name `name` in directory `parent`.
    fn invalidate_entry(&self, parent: NodeId, name: &OsStr) -> io::Result<()>;
    /// Attributes and data of every file the kernel knows.
    fn invalidate_everything(&self) -> io::Result<()>;
    /// Asks the kernel to drop up to `count` of its oldest names.
    fn shed(&self, count: usize);
}

/// Cloneable handle that invalidates kernel caches of one mount.
#[derive(Clone)]
pub struct CacheInvalidator {
    sink: Arc<dyn InvalidationSink>,
}

impl std::fmt::Debug for CacheInvalidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheInvalidator").finish_non_exhaustive()
    }
}

impl CacheInvalidator {
    pub(crate) fn new(notifier: Notifier, inodes: Arc<InodeTable>) -> Self {
        CacheInvalidator { sink: Arc::new(KernelSink { notifier, inodes, shedding: Arc::default() }) }
    }

    /// Invalidations sent to `sink` instead of a kernel of this process.
    pub fn from_sink(sink: Arc<dyn InvalidationSink>) -> Self {
        CacheInvalidator { sink }
    }

    /// Attributes and all cached data of `node`.
    pub fn invalidate_node(&self, node: NodeId) -> io::Result<()> {
        self.invalidate_data(node, 0, 0)
    }

    /// Attributes only (size, times, mode...).
    pub fn invalidate_attrs(&self, node: NodeId) -> io::Result<()> {
        self.invalidate_data(node, -1, 0)
    }

    /// Attributes and the cached data in `offset..offset + len` (`len` 0: to the
    /// end of the file; a negative `offset`: attributes only).
    pub fn invalidate_data(&self, node: NodeId, offset: i64, len: i64) -> io::Result<()> {
        self.sink.invalidate_data(node, offset, len)
    }

    /// Attributes and data of every file the kernel knows, for when the
    /// backend lost track of what changed. Cached names stay until they expire.
    pub fn invalidate_everything(&self) -> io::Result<()> {
        self.sink.invalidate_everything()
    }

    /// Asks the kernel to drop up to `count` of the names it got longest ago,
    /// so that it forgets the files behind them it no longer uses (a backend
    /// holding too many files sheds some). Names in use are looked up again.
    /// May be called while serving a request; a call while one runs does nothing.
    pub fn shed(&self, count: usize) {
        self.sink.shed(count)
    }

    /// The name `name` in directory `parent`, whether it now names another file or none.
    pub fn invalidate_entry(&self, parent: NodeId, name: &OsStr) -> io::Result<()> {
        self.sink.invalidate_entry(parent, name)
    }
}

/// The kernel of a mount of this process.
struct KernelSink {
    notifier: Notifier,
    inodes: Arc<InodeTable>,
    shedding: Arc<AtomicBool>,
}

impl InvalidationSink for KernelSink {
    fn invalidate_data(&self, node: NodeId, offset: i64, len: i64) -> io::Result<()> {
        match self.inodes.ino(node) {
            Some(ino) => self.notifier.inval_inode(ino, offset, len),
            None => Ok(()),
        }
    }

    fn invalidate_everything(&self) -> io::Result<()> {
        for ino in self.inodes.inos() {
            match self.notifier.inval_inode(ino, 0, 0) {
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Runs on a thread of its own, so it may be called while serving a request.
    fn shed(&self, count: usize) {
        if self.shedding.swap(true, Ordering::AcqRel) {
            return;
        }
        let (notifier, inodes, shedding) = (self.notifier.clone(), self.inodes.clone(), self.shedding.clone());
        let spawned = std::thread::Builder::new().name("share-shed".into()).spawn(move || {
            for (parent, name) in inodes.take_oldest_names(count) {
                let _ = notifier.inval_entry(parent, &name);
            }
            shedding.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.shedding.store(false, Ordering::Release);
        }
    }

    fn invalidate_entry(&self, parent: NodeId, name: &OsStr) -> io::Result<()> {
        match self.inodes.ino(parent) {
            Some(ino) => self.notifier.inval_entry(ino, name),
            None => Ok(()),
        }
    }
}

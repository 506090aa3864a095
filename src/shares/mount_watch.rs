//! Keeps one mount's kernel caches true to its source: the directories the
//! kernel holds are watched (see [`SourceWatcher`]), and each change drops
//! the cached name, attributes or data it touches.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Weak};

use hoody_fuse::{CacheInvalidator, NodeId};

use super::node_table::{node_id, NodeTable};
use super::source_watch::{Change, ChangeListener, ListenerId, SourceWatcher};
use super::syscalls::cstring;

pub(super) struct MountWatch {
    watcher: &'static SourceWatcher,
    id: ListenerId,
}

impl MountWatch {
    /// `None` where the daemon cannot watch: caches then expire by timeout.
    pub(super) fn start(invalidator: CacheInvalidator, source_dev: u64, nodes: Weak<NodeTable>) -> Option<MountWatch> {
        let watcher = SourceWatcher::global()?;
        let id = watcher.add_listener(Arc::new(Invalidate { invalidator, source_dev, nodes }));
        Some(MountWatch { watcher, id })
    }

    /// The kernel took its first reference to directory `dir`; whether it is watched.
    pub(super) fn dir_referenced(&self, dir: NodeId, fd: Arc<OwnedFd>) -> bool {
        match self.watcher.watch(self.id, dir, fd) {
            Ok(()) => true,
            Err(err) => {
                // Out of watches: this directory's caches expire by timeout.
                tracing::warn!(error = %err, "share directory not watched");
                false
            }
        }
    }

    /// The kernel dropped its last reference to directory `dir`.
    pub(super) fn dir_forgotten(&self, dir: NodeId) {
        self.watcher.unwatch(self.id, dir);
    }
}

impl Drop for MountWatch {
    fn drop(&mut self) {
        self.watcher.remove_listener(self.id);
    }
}

struct Invalidate {
    invalidator: CacheInvalidator,
    source_dev: u64,
    /// The backend's nodes, whose kept xattr names a change drops.
    nodes: Weak<NodeTable>,
}

impl Invalidate {
    /// The node `name` in `dir` now names, if any.
    fn child(&self, dir_fd: &OwnedFd, name: &OsStr) -> Option<NodeId> {
        let name = cstring(name).ok()?;
        // SAFETY: `stat64` is plain data; fstatat fills it on success.
        let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, NUL-terminated single-component name, valid out pointer.
        let rc = unsafe { libc::fstatat64(dir_fd.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        (rc == 0).then(|| node_id(st.st_dev, st.st_ino, self.source_dev))
    }
}

impl ChangeListener for Invalidate {
    fn changed(&self, dir: NodeId, dir_fd: &OwnedFd, name: Option<&OsStr>, change: Change) {
        // Failures mean the mount is going away or the kernel dropped the node
        // meanwhile: nothing stale is left either way.
        let Some(name) = name else {
            self.attrs_changed(dir);
            return;
        };
        let child = || self.child(dir_fd, name);
        match change {
            Change::NewName => {
                let _ = self.invalidator.invalidate_attrs(dir);
            }
            Change::Entry => {
                let _ = self.invalidator.invalidate_entry(dir, name);
                let _ = self.invalidator.invalidate_attrs(dir);
                if let Some(child) = child() {
                    self.attrs_changed(child);
                }
            }
            Change::Data => {
                if let Some(child) = child() {
                    let _ = self.invalidator.invalidate_data(child, 0, 0);
                }
            }
            Change::Attrs => {
                if let Some(child) = child() {
                    self.attrs_changed(child);
                }
            }
        }
    }

    fn overflowed(&self) {
        if let Some(nodes) = self.nodes.upgrade() {
            nodes.forget_all_xattr_names();
        }
        let _ = self.invalidator.invalidate_everything();
    }
}

impl Invalidate {
    /// `node`'s attributes changed, which is also how an xattr change shows
    /// (IN_ATTRIB): the kernel's cached attributes and the backend's kept
    /// xattr names go together.
    fn attrs_changed(&self, node: NodeId) {
        if let Some(nodes) = self.nodes.upgrade() {
            nodes.forget_xattr_names(node);
        }
        let _ = self.invalidator.invalidate_attrs(node);
    }
}

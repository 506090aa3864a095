//! The files of a local share the kernel holds references to: node id → an
//! `O_PATH` descriptor of the file, counted as the FUSE adapter counts them.
//!
//! Node ids come from the file's device and inode numbers, so the same file
//! gets the same id after any restart. Holding a descriptor (rather than a
//! path) keeps a renamed or unlinked file reachable exactly as POSIX wants,
//! and keeps its inode number, which is the id the kernel knows it by, from
//! being given to a new file until the kernel forgets it (docs/DESIGN.md:
//! why a file unlinked through a share is not let go at once).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoody_fuse::{FileKind, FsError, FsResult, IdMap, NodeId};
use parking_lot::Mutex;

/// Ids of files on another device than the source (mounts inside it) have this
/// bit set, and ids on the source's device are their inode numbers below it.
const OTHER_DEVICE: u64 = 1 << 63;

pub(super) fn node_id(dev: u64, ino: u64, source_dev: u64) -> NodeId {
    if dev == source_dev && ino < OTHER_DEVICE {
        return NodeId(ino);
    }
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&dev.to_le_bytes());
    key[8..].copy_from_slice(&ino.to_le_bytes());
    let hash = blake3::hash(&key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&hash.as_bytes()[..8]);
    NodeId(u64::from_le_bytes(id) | OTHER_DEVICE)
}

/// Descriptors held by the node tables of every share of the daemon.
static HELD: AtomicUsize = AtomicUsize::new(0);

pub(super) fn held_descriptors() -> usize {
    HELD.load(Ordering::Relaxed)
}

#[derive(Clone)]
pub(super) struct Node {
    pub(super) fd: Arc<OwnedFd>,
    pub(super) kind: FileKind,
}

struct Entry {
    node: Node,
    references: u64,
    /// The file's xattr names (each followed by a NUL) as last listed, and
    /// when, so that the many asks for a name it has not (`ls -l` asks two per
    /// file) need no system call; `None` until listed or after a change.
    xattr_names: Option<(Arc<Vec<u8>>, Instant)>,
    /// Bumped by every change, so that a listing that raced one is not kept.
    xattr_generation: u64,
}

impl Entry {
    fn new(node: Node, references: u64) -> Self {
        Entry { node, references, xattr_names: None, xattr_generation: 0 }
    }
}

pub(super) struct NodeTable {
    root: NodeId,
    entries: Mutex<IdMap<NodeId, Entry>>,
    /// Whether xattr names may be kept: only while every change at the source
    /// is seen (the source watcher runs and watches every directory the
    /// kernel holds), since the watcher is what drops them.
    keep_xattr_names: AtomicBool,
}

impl NodeTable {
    pub(super) fn new(root: NodeId, root_node: Node) -> Self {
        let entries = IdMap::from_iter([(root, Entry::new(root_node, 1))]);
        HELD.fetch_add(1, Ordering::Relaxed);
        NodeTable { root, entries: Mutex::new(entries), keep_xattr_names: AtomicBool::new(false) }
    }

    pub(super) fn get(&self, id: NodeId) -> FsResult<Node> {
        self.entries.lock().get(&id).map(|entry| entry.node.clone()).ok_or(FsError::Stale)
    }

    /// One more kernel reference to `id`, reachable through `node`. The newest
    /// descriptor wins: it was just opened beneath the source. The root keeps
    /// its own. True for the first reference.
    pub(super) fn reference(&self, id: NodeId, node: Node) -> bool {
        if id == self.root {
            return false;
        }
        let mut entries = self.entries.lock();
        let entry = entries.entry(id).or_insert_with(|| {
            HELD.fetch_add(1, Ordering::Relaxed);
            Entry::new(node.clone(), 0)
        });
        entry.node = node;
        entry.references += 1;
        entry.references == 1
    }

    /// Returns the descriptor being dropped, if any, so it is closed outside the lock.
    pub(super) fn forget(&self, id: NodeId, count: u64) -> Option<Node> {
        if id == self.root {
            return None;
        }
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&id)?;
        entry.references = entry.references.saturating_sub(count);
        if entry.references == 0 {
            HELD.fetch_sub(1, Ordering::Relaxed);
            return entries.remove(&id).map(|entry| entry.node);
        }
        None
    }

    /// The directories held, with their descriptors.
    pub(super) fn held_directories(&self) -> Vec<(NodeId, Arc<OwnedFd>)> {
        let entries = self.entries.lock();
        entries.iter().filter(|(_, entry)| entry.node.kind == FileKind::Directory).map(|(id, entry)| (*id, entry.node.fd.clone())).collect()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Starts or stops keeping xattr names; stopping drops those kept.
    pub(super) fn keep_xattr_names(&self, keep: bool) {
        self.keep_xattr_names.store(keep, Ordering::Release);
        if !keep {
            self.forget_all_xattr_names();
        }
    }

    /// The kept xattr names of `id`, if any and fresh.
    pub(super) fn xattr_names(&self, id: NodeId) -> Option<Arc<Vec<u8>>> {
        if !self.keep_xattr_names.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock();
        let (names, listed) = entries.get(&id)?.xattr_names.as_ref()?;
        (listed.elapsed() < XATTR_NAMES_KEPT).then(|| names.clone())
    }

    /// Where a listing of `id`'s names starts: `None` when none may be kept.
    pub(super) fn xattr_generation(&self, id: NodeId) -> Option<u64> {
        if !self.keep_xattr_names.load(Ordering::Acquire) {
            return None;
        }
        Some(self.entries.lock().get(&id)?.xattr_generation)
    }

    /// Keeps `names`, listed from `generation` on, unless something changed since.
    pub(super) fn keep_xattr_names_of(&self, id: NodeId, generation: u64, names: Arc<Vec<u8>>) {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get_mut(&id) {
            if entry.xattr_generation == generation && self.keep_xattr_names.load(Ordering::Acquire) {
                entry.xattr_names = Some((names, Instant::now()));
            }
        }
    }

    /// `id`'s xattrs may have changed.
    pub(super) fn forget_xattr_names(&self, id: NodeId) {
        if let Some(entry) = self.entries.lock().get_mut(&id) {
            entry.xattr_names = None;
            entry.xattr_generation += 1;
        }
    }

    pub(super) fn forget_all_xattr_names(&self) {
        for entry in self.entries.lock().values_mut() {
            entry.xattr_names = None;
            entry.xattr_generation += 1;
        }
    }
}

/// How long kept xattr names are trusted without an event: as long as the
/// kernel trusts attributes, which bounds a change the watcher cannot see (made
/// through a hard link in a directory no target holds).
const XATTR_NAMES_KEPT: Duration = Duration::from_secs(1);

/// Whether `names` (each followed by a NUL, as `listxattr` gives them) holds `name`.
pub(super) fn names_hold(names: &[u8], name: &[u8]) -> bool {
    names.split(|&byte| byte == 0).any(|listed| listed == name)
}

impl Drop for NodeTable {
    fn drop(&mut self) {
        HELD.fetch_sub(self.entries.get_mut().len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_inode_numbers_on_the_source_device() {
        assert_eq!(node_id(7, 1234, 7), NodeId(1234));
        let other = node_id(8, 1234, 7);
        assert_ne!(other, NodeId(1234));
        assert!(other.0 & OTHER_DEVICE != 0);
        assert_eq!(other, node_id(8, 1234, 7), "stable");
        assert_ne!(node_id(8, 1234, 7), node_id(9, 1234, 7));
        assert!(node_id(7, u64::MAX, 7).0 & OTHER_DEVICE != 0);
    }

    fn node() -> Node {
        let fd = std::fs::File::open("/").unwrap();
        Node { fd: Arc::new(fd.into()), kind: FileKind::Directory }
    }

    #[test]
    fn xattr_names_are_kept_only_while_allowed_and_unchanged() {
        let table = NodeTable::new(NodeId(2), node());
        table.reference(NodeId(5), node());
        let names = Arc::new(b"user.a\0security.capability\0".to_vec());
        assert_eq!(table.xattr_generation(NodeId(5)), None, "not kept before the watcher runs");
        table.keep_xattr_names(true);
        let generation = table.xattr_generation(NodeId(5)).unwrap();
        table.keep_xattr_names_of(NodeId(5), generation, names.clone());
        assert_eq!(table.xattr_names(NodeId(5)), Some(names.clone()));
        // A change while listing: the listing is not kept.
        let generation = table.xattr_generation(NodeId(5)).unwrap();
        table.forget_xattr_names(NodeId(5));
        table.keep_xattr_names_of(NodeId(5), generation, names.clone());
        assert_eq!(table.xattr_names(NodeId(5)), None);
        let generation = table.xattr_generation(NodeId(5)).unwrap();
        table.keep_xattr_names_of(NodeId(5), generation, names);
        table.keep_xattr_names(false);
        assert_eq!(table.xattr_names(NodeId(5)), None, "stopping drops what was kept");
        assert!(names_hold(b"user.a\0security.capability\0", b"security.capability"));
        assert!(!names_hold(b"user.a\0security.capability\0", b"security.cap"));
        assert!(!names_hold(b"", b"user.a"));
    }

    #[test]
    fn references_are_counted_and_the_root_stays() {
        let table = NodeTable::new(NodeId(2), node());
        assert!(table.reference(NodeId(5), node()));
        assert!(!table.reference(NodeId(5), node()));
        assert!(table.forget(NodeId(5), 1).is_none());
        assert!(table.get(NodeId(5)).is_ok());
        assert!(table.forget(NodeId(5), 1).is_some());
        assert_eq!(table.get(NodeId(5)).err(), Some(FsError::Stale));
        assert!(!table.reference(NodeId(2), node()));
        assert!(table.forget(NodeId(2), 10).is_none());
        assert!(table.get(NodeId(2)).is_ok());
        assert_eq!(table.len(), 1);
    }
}

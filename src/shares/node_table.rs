//! The files of a local share the kernel holds references to: node id → an
//! `O_PATH` descriptor of the file, counted as the FUSE adapter counts them.
//!
//! Node ids come from the file's device and inode numbers, so the same file
//! gets the same id after any restart. Holding a descriptor (rather than a
//! path) keeps a renamed or unlinked file reachable exactly as POSIX wants.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
}

pub(super) struct NodeTable {
    root: NodeId,
    entries: Mutex<IdMap<NodeId, Entry>>,
}

impl NodeTable {
    pub(super) fn new(root: NodeId, root_node: Node) -> Self {
        let entries = IdMap::from_iter([(root, Entry { node: root_node, references: 1 })]);
        HELD.fetch_add(1, Ordering::Relaxed);
        NodeTable { root, entries: Mutex::new(entries) }
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
            Entry { node: node.clone(), references: 0 }
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

    pub(super) fn len(&self) -> usize {
        self.entries.lock().len()
    }
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

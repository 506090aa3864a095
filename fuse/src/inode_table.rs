//! Kernel inode numbers ↔ backend nodes, with the kernel's lookup counts.
//!
//! The kernel names files by inode number, the backend by [`NodeId`]. A node
//! gets a number when it is first handed to the kernel and keeps it until the
//! kernel has forgotten every reference. The number is the `NodeId` itself
//! whenever that is free, so `st_ino` stays the same across remounts in the
//! common case; the root is always 1, as FUSE requires. A number never names two
//! nodes at once, and the root is never forgotten.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::NodeId;

/// The inode number FUSE reserves for the root of a mount.
pub(crate) const ROOT_INO: u64 = 1;

pub(crate) struct InodeTable {
    root: NodeId,
    inner: Mutex<Inner>,
}

struct Inner {
    by_ino: HashMap<u64, Entry>,
    by_node: HashMap<NodeId, u64>,
    /// Next candidate for a node whose own number is taken; counts down from the
    /// top, far from the small numbers real filesystems hand out.
    next_fallback: u64,
}

struct Entry {
    node: NodeId,
    lookups: u64,
}

impl InodeTable {
    pub(crate) fn new(root: NodeId) -> Self {
        InodeTable { root, inner: Mutex::new(Inner { by_ino: HashMap::new(), by_node: HashMap::new(), next_fallback: u64::MAX }) }
    }

    pub(crate) fn node(&self, ino: u64) -> Option<NodeId> {
        if ino == ROOT_INO {
            return Some(self.root);
        }
        self.inner.lock().by_ino.get(&ino).map(|entry| entry.node)
    }

    /// The number the kernel knows `node` by, if it knows it at all.
    pub(crate) fn ino(&self, node: NodeId) -> Option<u64> {
        if node == self.root {
            return Some(ROOT_INO);
        }
        self.inner.lock().by_node.get(&node).copied()
    }

    /// One more kernel reference to `node`; returns its inode number.
    pub(crate) fn remember(&self, node: NodeId) -> u64 {
        if node == self.root {
            return ROOT_INO;
        }
        let mut inner = self.inner.lock();
        if let Some(&ino) = inner.by_node.get(&node) {
            if let Some(entry) = inner.by_ino.get_mut(&ino) {
                entry.lookups += 1;
            }
            return ino;
        }
        let ino = if node.0 > ROOT_INO && !inner.by_ino.contains_key(&node.0) { node.0 } else { inner.fallback_ino() };
        inner.by_ino.insert(ino, Entry { node, lookups: 1 });
        inner.by_node.insert(node, ino);
        ino
    }

    /// The kernel dropped `count` references to `ino`. Returns the node so the
    /// backend can drop them too; `None` for the root and for unknown numbers.
    pub(crate) fn forget(&self, ino: u64, count: u64) -> Option<NodeId> {
        if ino == ROOT_INO {
            return None;
        }
        let mut inner = self.inner.lock();
        let entry = inner.by_ino.get_mut(&ino)?;
        let node = entry.node;
        entry.lookups = entry.lookups.saturating_sub(count);
        if entry.lookups == 0 {
            inner.by_ino.remove(&ino);
            inner.by_node.remove(&node);
        }
        Some(node)
    }

    /// Every number the kernel knows, the root's included.
    pub(crate) fn inos(&self) -> Vec<u64> {
        let inner = self.inner.lock();
        std::iter::once(ROOT_INO).chain(inner.by_ino.keys().copied()).collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().by_ino.len()
    }
}

impl Inner {
    fn fallback_ino(&mut self) -> u64 {
        while self.by_ino.contains_key(&self.next_fallback) || self.next_fallback <= ROOT_INO {
            self.next_fallback = self.next_fallback.checked_sub(1).unwrap_or(u64::MAX);
        }
        let ino = self.next_fallback;
        self.next_fallback -= 1;
        ino
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_one_and_never_forgotten() {
        let table = InodeTable::new(NodeId(77));
        assert_eq!(table.node(ROOT_INO), Some(NodeId(77)));
        assert_eq!(table.remember(NodeId(77)), ROOT_INO);
        assert_eq!(table.forget(ROOT_INO, 5), None);
        assert_eq!(table.node(ROOT_INO), Some(NodeId(77)));
        assert_eq!(table.ino(NodeId(77)), Some(ROOT_INO));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn node_keeps_its_own_number_when_free() {
        let table = InodeTable::new(NodeId(2));
        assert_eq!(table.remember(NodeId(1234)), 1234);
        assert_eq!(table.node(1234), Some(NodeId(1234)));
        assert_eq!(table.ino(NodeId(1234)), Some(1234));
    }

    #[test]
    fn reserved_numbers_get_a_fallback() {
        let table = InodeTable::new(NodeId(500));
        let zero = table.remember(NodeId(0));
        let one = table.remember(NodeId(1));
        assert!(zero > ROOT_INO && one > ROOT_INO && zero != one);
        assert_eq!(table.node(zero), Some(NodeId(0)));
        assert_eq!(table.node(one), Some(NodeId(1)));
    }

    #[test]
    fn a_taken_number_is_not_reused_for_another_node() {
        let table = InodeTable::new(NodeId(500));
        let first = table.remember(NodeId(0));
        // A node whose own number is the fallback just handed out.
        let second = table.remember(NodeId(first));
        assert_ne!(first, second);
        assert_eq!(table.node(first), Some(NodeId(0)));
        assert_eq!(table.node(second), Some(NodeId(first)));
    }

    #[test]
    fn lookups_are_counted_until_the_last_forget() {
        let table = InodeTable::new(NodeId(2));
        let ino = table.remember(NodeId(10));
        assert_eq!(table.remember(NodeId(10)), ino);
        assert_eq!(table.remember(NodeId(10)), ino);
        assert_eq!(table.forget(ino, 2), Some(NodeId(10)));
        assert_eq!(table.node(ino), Some(NodeId(10)));
        assert_eq!(table.forget(ino, 1), Some(NodeId(10)));
        assert_eq!(table.node(ino), None);
        assert_eq!(table.ino(NodeId(10)), None);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn forgetting_more_than_remembered_removes_without_underflow() {
        let table = InodeTable::new(NodeId(2));
        let ino = table.remember(NodeId(10));
        assert_eq!(table.forget(ino, 9), Some(NodeId(10)));
        assert_eq!(table.node(ino), None);
        assert_eq!(table.forget(ino, 1), None);
    }

    #[test]
    fn forgotten_node_comes_back_with_the_same_number() {
        let table = InodeTable::new(NodeId(2));
        let ino = table.remember(NodeId(42));
        table.forget(ino, 1);
        assert_eq!(table.remember(NodeId(42)), ino);
    }

    #[test]
    fn concurrent_remember_and_forget_stay_balanced() {
        let table = std::sync::Arc::new(InodeTable::new(NodeId(2)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let table = table.clone();
                std::thread::spawn(move || {
                    for round in 0..1000u64 {
                        let node = NodeId(100 + round % 7);
                        let ino = table.remember(node);
                        assert_eq!(table.node(ino), Some(node));
                        table.forget(ino, 1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(table.len(), 0);
    }
}

//! Kernel inode numbers ↔ backend nodes, with the kernel's lookup counts.
//!
//! The kernel names files by inode number, the backend by [`NodeId`]. A node
//! gets a number when it is first handed to the kernel and keeps it until the
//! kernel has forgotten every reference. The number is the `NodeId` itself
//! whenever that is free, so `st_ino` stays the same across remounts in the
//! common case; the root is always 1, as FUSE requires. A number never names two
//! nodes at once, and the root is never forgotten.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};

use parking_lot::Mutex;

use crate::id_map::IdMap;
use crate::NodeId;

/// The inode number FUSE reserves for the root of a mount.
pub(crate) const ROOT_INO: u64 = 1;

pub(crate) struct InodeTable {
    root: NodeId,
    inner: Mutex<Inner>,
}

struct Inner {
    by_ino: IdMap<u64, Entry>,
    /// Names the kernel got nodes by, oldest first: what to ask it to drop
    /// when the backend holds too many files. May hold forgotten numbers and
    /// earlier namings; those are skipped.
    named: VecDeque<Named>,
    namings: u64,
    by_node: IdMap<NodeId, u64>,
    /// Next candidate for a node whose own number is taken; counts down from the
    /// top, far from the small numbers real filesystems hand out.
    next_fallback: u64,
}

struct Entry {
    node: NodeId,
    lookups: u64,
    /// When the kernel last got this node by name (see [`Named::when`]).
    named: u64,
}

struct Named {
    ino: u64,
    /// Only the latest naming of a node counts: the queue keeps it in the
    /// order of last use, and holds one live entry per node after compaction.
    when: u64,
    parent: u64,
    name: OsString,
}

impl InodeTable {
    pub(crate) fn new(root: NodeId) -> Self {
        InodeTable {
            root,
            inner: Mutex::new(Inner { by_ino: IdMap::default(), named: VecDeque::new(), namings: 0, by_node: IdMap::default(), next_fallback: u64::MAX }),
        }
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
        inner.by_ino.insert(ino, Entry { node, lookups: 1, named: 0 });
        inner.by_node.insert(node, ino);
        ino
    }

    /// [`InodeTable::remember`] of a node the kernel got as `name` in `parent`.
    pub(crate) fn remember_named(&self, node: NodeId, parent: u64, name: &OsStr) -> u64 {
        let ino = self.remember(node);
        if ino == ROOT_INO {
            return ino;
        }
        let mut inner = self.inner.lock();
        inner.namings += 1;
        let when = inner.namings;
        if let Some(entry) = inner.by_ino.get_mut(&ino) {
            entry.named = when;
        }
        inner.named.push_back(Named { ino, when, parent, name: name.to_owned() });
        if inner.named.len() > 2 * inner.by_ino.len() + 1024 {
            let Inner { named, by_ino, .. } = &mut *inner;
            named.retain(|n| n.is_latest(by_ino));
        }
        ino
    }

    /// Up to `count` of the oldest names of nodes the kernel still knows, as
    /// (parent number, name); they are not handed out again.
    pub(crate) fn take_oldest_names(&self, count: usize) -> Vec<(u64, OsString)> {
        let mut inner = self.inner.lock();
        let mut names = Vec::with_capacity(count.min(inner.named.len()));
        while names.len() < count {
            let Some(named) = inner.named.pop_front() else { break };
            if named.is_latest(&inner.by_ino) {
                names.push((named.parent, named.name));
            }
        }
        names
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

impl Named {
    fn is_latest(&self, by_ino: &IdMap<u64, Entry>) -> bool {
        by_ino.get(&self.ino).is_some_and(|entry| entry.named == self.when)
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
    fn oldest_names_of_known_nodes_come_first_and_once() {
        let table = InodeTable::new(NodeId(1));
        let a = table.remember_named(NodeId(10), ROOT_INO, OsStr::new("a"));
        let b = table.remember_named(NodeId(11), a, OsStr::new("b"));
        table.remember_named(NodeId(12), ROOT_INO, OsStr::new("c"));
        table.forget(b, 1);
        let names = table.take_oldest_names(2);
        assert_eq!(names, vec![(ROOT_INO, OsString::from("a")), (ROOT_INO, OsString::from("c"))], "b was forgotten");
        assert!(table.take_oldest_names(5).is_empty());
    }

    #[test]
    fn a_node_named_again_moves_to_the_back_and_the_queue_stays_small() {
        let table = InodeTable::new(NodeId(1));
        for _ in 0..10_000 {
            table.remember_named(NodeId(10), ROOT_INO, OsStr::new("a"));
            table.remember_named(NodeId(11), ROOT_INO, OsStr::new("b"));
        }
        assert!(table.inner.lock().named.len() <= 1024 + 4, "compacted to one naming per node");
        table.remember_named(NodeId(10), ROOT_INO, OsStr::new("a-again"));
        let names: Vec<_> = table.take_oldest_names(5).into_iter().map(|(_, name)| name).collect();
        assert_eq!(names, vec![OsString::from("b"), OsString::from("a-again")]);
    }

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

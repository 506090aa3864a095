//! A source node that restarts loses its sessions: the nodes and handles a
//! target's kernel holds mean nothing to the new session. This layer, on the
//! target's side of the channel, remembers how each node was reached (its
//! parent and name) and how each handle was opened, so that after the mount
//! attaches again it brings them back: a node by looking its path up again
//! from the root (node ids are derived from the source file's device and
//! inode, so the same file comes back under the same id), a handle by opening
//! its node again and translating the old handle to the new one from then on.
//! Open files keep working and names the kernel cached keep resolving, with
//! no remount and no `ESTALE` for files that still exist.
//!
//! What cannot come back: locks (the source's restart released them) and a
//! file renamed or removed while the source was away (`ESTALE`, as a local
//! filesystem answers for a file gone).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hoody_fuse::FsError;
use parking_lot::Mutex;

use super::backend::ShareChannel;
use super::wire::{Answer, FsOp, FsReply, WCaller};

/// The root's id on the source is whatever `Attach` answers; its entry is kept.
#[derive(Default)]
struct Memory {
    /// The session generation: bumped by every `Attach` that succeeds.
    generation: u64,
    root: u64,
    /// node → (parent, name, references the kernel holds, generation learned).
    nodes: HashMap<u64, NodeWay>,
    /// Handle as the kernel knows it (numbered here, so that handles of two
    /// sessions never collide) → the source's handle and how it was opened.
    handles: HashMap<u64, HandleWay>,
    next_handle: u64,
}

struct NodeWay {
    parent: u64,
    name: Vec<u8>,
    refs: u64,
    generation: u64,
}

#[derive(Clone)]
struct HandleWay {
    /// The handle in the source's current session.
    source: u64,
    node: u64,
    open: Reopen,
    generation: u64,
}

#[derive(Clone, Copy)]
enum Reopen {
    File { flags: i32, caller: WCaller },
    Dir,
}

pub struct RevivingChannel {
    inner: Arc<dyn ShareChannel>,
    memory: Mutex<Memory>,
}

impl RevivingChannel {
    pub fn new(inner: Arc<dyn ShareChannel>) -> Arc<Self> {
        Arc::new(RevivingChannel { inner, memory: Mutex::default() })
    }

    /// Rewrites the handles of `op` to the current session's.
    fn translate(&self, op: &mut FsOp) {
        let memory = self.memory.lock();
        let t = |h: &mut u64| {
            // A handle the kernel should not have: one the source never gave.
            *h = memory.handles.get(h).map_or(u64::MAX, |w| w.source);
        };
        match op {
            FsOp::Getattr { handle: Some(h), .. } | FsOp::Setattr { handle: Some(h), .. } => t(h),
            FsOp::Readdirplus { handle, .. }
            | FsOp::Releasedir { handle }
            | FsOp::Fsyncdir { handle, .. }
            | FsOp::Read { handle, .. }
            | FsOp::Write { handle, .. }
            | FsOp::Flush { handle }
            | FsOp::Release { handle }
            | FsOp::Fsync { handle, .. }
            | FsOp::Fallocate { handle, .. }
            | FsOp::Lseek { handle, .. }
            | FsOp::Getlk { handle, .. }
            | FsOp::Setlk { handle, .. } => t(handle),
            FsOp::CopyFileRange { from, to, .. } => {
                t(from);
                t(to);
            }
            _ => {}
        }
    }

    /// Numbers a handle the source gave for the kernel.
    fn adopt_handle(m: &mut Memory, way: HandleWay) -> u64 {
        m.next_handle += 1;
        let local = m.next_handle;
        m.handles.insert(local, way);
        local
    }

    /// Learns from a successful answer how nodes were reached and handles
    /// opened; handles in the answer become the kernel's numbers.
    fn learn(&self, op: &FsOp, reply: &mut FsReply) {
        let mut m = self.memory.lock();
        let generation = m.generation;
        let reached = |m: &mut Memory, parent: u64, name: &[u8], node: u64| {
            let way = m.nodes.entry(node).or_insert(NodeWay { parent, name: name.to_vec(), refs: 0, generation });
            way.refs += 1;
            (way.parent, way.name, way.generation) = (parent, name.to_vec(), generation);
        };
        match (op, reply) {
            (FsOp::Attach, FsReply::Attached { root, .. }) => {
                m.generation += 1;
                m.root = root.node;
            }
            (FsOp::Lookup { parent, name } | FsOp::Mkdir { parent, name, .. } | FsOp::Mknod { parent, name, .. } | FsOp::Symlink { parent, name, .. }, FsReply::Attr(a)) => {
                reached(&mut m, *parent, name, a.node)
            }
            (FsOp::Link { new_parent, new_name, .. }, FsReply::Attr(a)) => reached(&mut m, *new_parent, new_name, a.node),
            (FsOp::Create { parent, name, flags, caller, .. }, FsReply::Created { attr, handle }) => {
                reached(&mut m, *parent, name, attr.node);
                let reopen = Reopen::File { flags: *flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC), caller: *caller };
                *handle = Self::adopt_handle(&mut m, HandleWay { source: *handle, node: attr.node, open: reopen, generation });
            }
            (FsOp::Readdirplus { dir, .. }, FsReply::Entries(entries)) => {
                for e in entries.iter().filter(|e| e.name != b"." && e.name != b"..") {
                    reached(&mut m, *dir, &e.name, e.attr.node);
                }
            }
            (FsOp::Open { node, flags, caller }, FsReply::Handle(h)) => {
                let reopen = Reopen::File { flags: *flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC), caller: *caller };
                *h = Self::adopt_handle(&mut m, HandleWay { source: *h, node: *node, open: reopen, generation });
            }
            (FsOp::Opendir { dir }, FsReply::Handle(h)) => {
                *h = Self::adopt_handle(&mut m, HandleWay { source: *h, node: *dir, open: Reopen::Dir, generation });
            }
            (FsOp::Release { handle } | FsOp::Releasedir { handle }, _) => {
                m.handles.remove(handle);
            }
            (FsOp::Forget { node, count }, _) => {
                if let Some(way) = m.nodes.get_mut(node) {
                    way.refs = way.refs.saturating_sub(*count);
                    if way.refs == 0 {
                        m.nodes.remove(node);
                    }
                }
            }
            (FsOp::Rename { parent, name, new_parent, new_name, .. }, FsReply::Done) => {
                if let Some(way) = m.nodes.values_mut().find(|w| w.parent == *parent && w.name == *name) {
                    (way.parent, way.name) = (*new_parent, new_name.clone());
                }
            }
            _ => {}
        }
    }

    /// The kernel's handle of `op` and the node it names, if `op` names one.
    fn subject(op: &FsOp) -> (Option<u64>, Option<u64>) {
        match op {
            FsOp::Getattr { node, handle } | FsOp::Setattr { node, handle, .. } => (*handle, Some(*node)),
            FsOp::Readdirplus { dir, handle, .. } => (Some(*handle), Some(*dir)),
            FsOp::Read { handle, .. } | FsOp::Write { handle, .. } | FsOp::Flush { handle } | FsOp::Release { handle } | FsOp::Fsync { handle, .. } => (Some(*handle), None),
            FsOp::Fallocate { handle, .. } | FsOp::Lseek { handle, .. } | FsOp::Releasedir { handle } | FsOp::Fsyncdir { handle, .. } => (Some(*handle), None),
            FsOp::Lookup { parent, .. } | FsOp::Create { parent, .. } | FsOp::Mkdir { parent, .. } | FsOp::Mknod { parent, .. } | FsOp::Symlink { parent, .. } => (None, Some(*parent)),
            FsOp::Unlink { parent, .. } | FsOp::Rmdir { parent, .. } | FsOp::Rename { parent, .. } => (None, Some(*parent)),
            FsOp::Opendir { dir } => (None, Some(*dir)),
            FsOp::Open { node, .. } | FsOp::Readlink { node } | FsOp::Getxattr { node, .. } | FsOp::Setxattr { node, .. } | FsOp::Listxattr { node } | FsOp::Removexattr { node, .. } => {
                (None, Some(*node))
            }
            FsOp::Link { node, .. } => (None, Some(*node)),
            _ => (None, None),
        }
    }

    /// Brings `node` back into the current session by looking its path up
    /// again from the root. False when it cannot be (unknown, or the same
    /// path now names another file or none).
    async fn revive_node(&self, node: u64, deadline: Duration) -> bool {
        let path = {
            let m = self.memory.lock();
            let mut path = Vec::new();
            let mut at = node;
            while at != m.root {
                let Some(way) = m.nodes.get(&at) else { return false };
                if way.generation == m.generation || path.len() > 4096 {
                    break;
                }
                path.push((way.parent, way.name.clone(), at));
                at = way.parent;
            }
            path
        };
        for (parent, name, expected) in path.into_iter().rev() {
            match self.inner.call(FsOp::Lookup { parent, name }, deadline).await {
                Ok(Ok(FsReply::Attr(a))) if a.node == expected => {
                    let mut m = self.memory.lock();
                    let generation = m.generation;
                    if let Some(way) = m.nodes.get_mut(&expected) {
                        way.generation = generation;
                    }
                }
                _ => return false,
            }
        }
        true
    }

    fn memory_generation(&self) -> u64 {
        self.memory.lock().generation
    }

    /// Opens the file of the kernel's `handle` again in the current session.
    async fn revive_handle(&self, handle: u64, deadline: Duration) -> bool {
        let Some(way) = self.memory.lock().handles.get(&handle).cloned() else { return false };
        if way.generation == self.memory_generation() || !self.revive_node(way.node, deadline).await {
            return false;
        }
        let op = match way.open {
            Reopen::File { flags, caller } => FsOp::Open { node: way.node, flags, caller },
            Reopen::Dir => FsOp::Opendir { dir: way.node },
        };
        match self.inner.call(op, deadline).await {
            Ok(Ok(FsReply::Handle(new))) => {
                let mut m = self.memory.lock();
                let generation = m.generation;
                if let Some(w) = m.handles.get_mut(&handle) {
                    (w.source, w.generation) = (new, generation);
                }
                true
            }
            _ => false,
        }
    }

    /// Whether what `op` names was learned in an earlier session (so an
    /// `ESTALE`/`EBADF` may just mean the source restarted).
    fn learned_in_earlier_session(&self, handle: Option<u64>, node: Option<u64>) -> bool {
        let m = self.memory.lock();
        handle.and_then(|h| m.handles.get(&h)).is_some_and(|w| w.generation < m.generation)
            || node.and_then(|n| m.nodes.get(&n)).is_some_and(|w| w.generation < m.generation)
    }
}

#[async_trait]
impl ShareChannel for RevivingChannel {
    async fn call(&self, op: FsOp, deadline: Duration) -> Result<Answer, FsError> {
        let original = op.clone();
        let mut sent = op;
        self.translate(&mut sent);
        let mut answer = self.inner.call(sent, deadline).await?;
        if let Err(errno) = answer {
            let (handle, node) = Self::subject(&original);
            if (errno == libc::ESTALE || errno == libc::EBADF) && self.learned_in_earlier_session(handle, node) {
                let revived = match handle {
                    Some(h) if !matches!(original, FsOp::Release { .. } | FsOp::Releasedir { .. }) => self.revive_handle(h, deadline).await,
                    _ => match node {
                        Some(n) => self.revive_node(n, deadline).await,
                        None => false,
                    },
                };
                if revived {
                    let mut again = original.clone();
                    self.translate(&mut again);
                    answer = self.inner.call(again, deadline).await?;
                } else if matches!(original, FsOp::Release { .. } | FsOp::Releasedir { .. }) {
                    // Nothing to release in a session that never had it.
                    answer = Ok(FsReply::Done);
                }
            }
        }
        if let Ok(reply) = &mut answer {
            self.learn(&original, reply);
        } else if matches!(original, FsOp::Release { .. } | FsOp::Releasedir { .. }) {
            if let FsOp::Release { handle } | FsOp::Releasedir { handle } = original {
                self.memory.lock().handles.remove(&handle);
            }
        }
        Ok(answer)
    }
}

//! The source's side of remote shares: a session per (share, target) that a
//! member node opened with `Attach`, served by the same [`LocalBackend`] a
//! local mount uses, so containment, readonly and availability are decided
//! here, on the source's node, whatever the target's node asks.
//!
//! A session is opened only for the node that owns the target container (the
//! transport's verified peer identity), for a share that is enabled, unexpired,
//! accepted, whose source container lives on this node; every later call must
//! come from that node for that session. When the catalog changes (share
//! deleted, disabled, target moved...) every session is checked again and the
//! ones no longer allowed are dropped: their handles answer `ESTALE`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hoody_fuse::{CacheInvalidator, FsBackend, InvalidationSink, NodeId};
use hoody_transport::{Frame, Peer};
use parking_lot::Mutex;

use super::dispatch;
use super::wire::{self, kind, Answer, FsOp, FsReply, Invalidation, Pushed, ShareCall, WAttr};
use crate::catalog::{Catalog, ContainerRecord, ShareRecord};
use crate::containers::ContainerStatus;
use crate::shares::LocalBackend;

type Key = (String, String);

/// The answer to a call of a session this node does not hold.
pub const NO_SESSION: i32 = libc::ENOTCONN;

struct Session {
    /// The node that owns the target container: the only one served.
    node_id: String,
    backend: Arc<LocalBackend>,
}

pub struct ShareServer {
    catalog: Catalog,
    node_id: String,
    sessions: Mutex<HashMap<Key, Arc<Session>>>,
}

impl ShareServer {
    pub fn new(catalog: Catalog, node_id: String) -> Arc<Self> {
        Arc::new(ShareServer { catalog, node_id, sessions: Default::default() })
    }

    pub fn sessions(&self) -> usize {
        self.sessions.lock().len()
    }

    pub async fn handle(&self, peer: &Peer, call: ShareCall) -> Answer {
        let key = (call.share_id.clone(), call.target_id.clone());
        if call.op == FsOp::Attach {
            return self.attach(peer, key).await;
        }
        let session = self.sessions.lock().get(&key).cloned();
        match session {
            Some(s) if s.node_id == peer.node_id => dispatch::apply(s.backend.as_ref(), call.op).await,
            Some(_) => {
                tracing::warn!(peer = %peer.node_id, share = %key.0, target = %key.1, "a node asked for another node's share session");
                Err(libc::EACCES)
            }
            // Never attached (this node restarted), or dropped (share deleted,
            // disabled, moved): the target attaches again, which is refused
            // unless it is still allowed.
            None => Err(NO_SESSION),
        }
    }

    /// Opens (or reopens: a target's mount started again) the session of `key` for `peer`.
    async fn attach(&self, peer: &Peer, key: Key) -> Answer {
        let (share, source) = match authorize(&self.catalog, &self.node_id, &peer.node_id, &key.0, &key.1).await {
            Ok(found) => found,
            Err(reason) => {
                tracing::warn!(peer = %peer.node_id, share = %key.0, target = %key.1, %reason, "refused a remote share session");
                return Err(libc::EACCES);
            }
        };
        let rootfs = source.rootfs_path.clone();
        let opened = tokio::task::spawn_blocking(move || LocalBackend::open_in_container(Path::new(&rootfs), Path::new(&share.source_path), share.mode)).await;
        let backend = match opened {
            Ok(Ok(b)) => Arc::new(b),
            Ok(Err(e)) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
            Err(_) => return Err(libc::EIO),
        };
        backend.availability().store(source_running(&source), Ordering::Relaxed);
        backend.attach_invalidator(invalidations_to(peer, &key.0, &key.1));
        let root = match backend.root().await {
            Ok(a) => a,
            Err(e) => return Err(e.to_errno()),
        };
        let takes_locks = backend.takes_locks();
        self.sessions.lock().insert(key, Arc::new(Session { node_id: peer.node_id.clone(), backend }));
        Ok(FsReply::Attached { root: WAttr::from(&root), takes_locks })
    }

    /// Checks every session against the catalog: drops those no longer
    /// allowed, and makes the rest answer or fail fast as their source
    /// container runs or not.
    pub async fn revalidate(&self) {
        let sessions: Vec<(Key, Arc<Session>)> = self.sessions.lock().iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        for (key, session) in sessions {
            match authorize(&self.catalog, &self.node_id, &session.node_id, &key.0, &key.1).await {
                Ok((_, source)) => session.backend.availability().store(source_running(&source), Ordering::Relaxed),
                Err(reason) if reason.catalog_failed => {}
                Err(reason) => {
                    tracing::info!(share = %key.0, target = %key.1, reason = %reason, "remote share session closed");
                    let mut sessions = self.sessions.lock();
                    if sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, &session)) {
                        sessions.remove(&key);
                    }
                }
            }
        }
    }

    /// Drops every session (the daemon stops).
    pub fn close_all(&self) {
        self.sessions.lock().clear();
    }
}

fn source_running(c: &ContainerRecord) -> bool {
    !matches!(c.status, ContainerStatus::Stopped | ContainerStatus::Failed)
}

#[derive(Debug)]
struct Refusal {
    message: String,
    /// The catalog could not be read: keep what is open (etcd away must not break mounts).
    catalog_failed: bool,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn refuse(message: impl Into<String>) -> Refusal {
    Refusal { message: message.into(), catalog_failed: false }
}

/// Whether node `peer` may have a session of `share_id` for `target_id`
/// served by this node (`me`): the share and its source container on this
/// node, the target container owned by `peer` and named by the share.
async fn authorize(catalog: &Catalog, me: &str, peer: &str, share_id: &str, target_id: &str) -> Result<(ShareRecord, ContainerRecord), Refusal> {
    let failed = |e: crate::catalog::CatalogError| Refusal { message: format!("catalog: {e}"), catalog_failed: true };
    let share = catalog.share(share_id).await.map_err(failed)?.ok_or_else(|| refuse("no such share"))?;
    let source = catalog.container(&share.source_container_id).await.map_err(failed)?.ok_or_else(|| refuse("its source container is gone"))?;
    if source.server_id != me {
        return Err(refuse("its source container is not on this node"));
    }
    let target = catalog.container(target_id).await.map_err(failed)?.ok_or_else(|| refuse("no such target container"))?;
    if target.server_id != peer {
        return Err(refuse(format!("the target container is not on node {peer}")));
    }
    let named = match (&share.target_container_id, &share.target_project_id) {
        (Some(t), _) => t == target_id,
        (None, Some(p)) => *p == target.project_id,
        _ => false,
    };
    if !named || target.id == source.id || target.status == ContainerStatus::Deleting {
        return Err(refuse("the share does not target this container"));
    }
    if !share.enabled {
        return Err(refuse("the share is disabled"));
    }
    if share.expires_at.is_some_and(|e| e <= crate::ids::now_unix()) {
        return Err(refuse("the share has expired"));
    }
    // One key, not every choice of the cluster: this runs per session on every reconciliation.
    let choice = catalog.mount_choice(&share.id, &target.id).await.map_err(failed)?;
    let offer = share.account_id != target.account_id;
    match choice {
        Some(false) => return Err(refuse("the target chose not to mount it")),
        None if offer => return Err(refuse("another account's offer, not accepted")),
        _ => {}
    }
    Ok((share, source))
}

/// Where a session's backend sends its invalidations: to `peer` (the target's
/// node), on the connection it opened, as [`Pushed`] frames. Needs a tokio runtime.
pub fn invalidations_to(peer: &Peer, share_id: &str, target_id: &str) -> CacheInvalidator {
    let sink = PushSink { peer: peer.clone(), share_id: share_id.to_string(), target_id: target_id.to_string(), runtime: tokio::runtime::Handle::current() };
    CacheInvalidator::from_sink(Arc::new(sink))
}

/// Sends a session's invalidations to the target's node, on the connection
/// the target opened (a server-initiated stream).
struct PushSink {
    peer: Peer,
    share_id: String,
    target_id: String,
    runtime: tokio::runtime::Handle,
}

impl PushSink {
    fn push(&self, invalidation: Invalidation) {
        let pushed = Pushed { share_id: self.share_id.clone(), target_id: self.target_id.clone(), invalidation };
        let peer = self.peer.clone();
        self.runtime.spawn(async move {
            let frame = Frame::new(kind::SHARE_INVALIDATE, wire::encode(&pushed));
            if let Err(e) = peer.call(frame, super::backend::OP_DEADLINE).await {
                tracing::debug!(peer = %peer.node_id, error = %e, "an invalidation did not reach the target");
            }
        });
    }
}

impl InvalidationSink for PushSink {
    fn invalidate_data(&self, node: NodeId, offset: i64, len: i64) -> io::Result<()> {
        self.push(Invalidation::Data { node: node.0, offset, len });
        Ok(())
    }

    fn invalidate_entry(&self, parent: NodeId, name: &OsStr) -> io::Result<()> {
        self.push(Invalidation::Entry { parent: parent.0, name: name.as_bytes().to_vec() });
        Ok(())
    }

    fn invalidate_everything(&self) -> io::Result<()> {
        self.push(Invalidation::Everything);
        Ok(())
    }

    fn shed(&self, count: usize) {
        self.push(Invalidation::Shed { count: count as u64 });
    }
}

/// Applies an invalidation a source pushed to the kernel of the mount.
pub fn apply_pushed(kernel: &CacheInvalidator, invalidation: Invalidation) {
    let _ = match invalidation {
        Invalidation::Data { node, offset, len } => kernel.invalidate_data(NodeId(node), offset, len),
        Invalidation::Entry { parent, name } => kernel.invalidate_entry(NodeId(parent), OsStr::from_bytes(&name)),
        Invalidation::Everything => kernel.invalidate_everything(),
        Invalidation::Shed { count } => {
            kernel.shed(count as usize);
            Ok(())
        }
    };
}

//! Shares whose source lives on another node: the target's node mounts a
//! [`RemoteBackend`] whose calls travel over the cluster's QUIC transport to
//! the source's node, where a [`ShareServer`] serves them from the same
//! source-tree code a local share uses; the source's watcher pushes
//! invalidations back over the connection the target opened.

pub mod backend;
pub mod dispatch;
pub mod revive;
pub mod server;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use hoody_fuse::FsError;
use hoody_transport::{Endpoint, Frame, Peer, RemoteError};
use parking_lot::{Mutex, RwLock};

pub use backend::RemoteBackend;
pub use server::ShareServer;
use wire::{kind, Answer, FsOp, Pushed, ShareCall};

use crate::catalog::Catalog;

type Key = (String, String);

/// This node's remote shares, both ways: the sessions it serves as a source,
/// and the mounts it holds as a target (to apply what their sources push).
pub struct RemoteShares {
    pub server: Arc<ShareServer>,
    endpoint: Endpoint,
    catalog: Catalog,
    /// Each remote mount of this node, with the node of its source (the only one whose pushes it takes).
    mounted: Mutex<HashMap<Key, (String, Weak<RemoteBackend>)>>,
}

impl RemoteShares {
    pub fn new(catalog: Catalog, node_id: String, endpoint: Endpoint) -> Arc<Self> {
        Arc::new(RemoteShares { server: ShareServer::new(catalog.clone(), node_id), endpoint, catalog, mounted: Default::default() })
    }

    /// The channel to `source_node` for the mount of `share` in `target`.
    pub fn channel(&self, source_node: &str, share: &str, target: &str) -> Arc<dyn backend::ShareChannel> {
        revive::RevivingChannel::new(Arc::new(QuicChannel {
            endpoint: self.endpoint.clone(),
            catalog: self.catalog.clone(),
            source_node: source_node.to_string(),
            share_id: share.to_string(),
            target_id: target.to_string(),
            addr: RwLock::new(None),
        }))
    }

    /// Remembers a mount, for the invalidations its source pushes.
    pub fn register(&self, share: &str, target: &str, source_node: &str, backend: &Arc<RemoteBackend>) {
        let mut mounted = self.mounted.lock();
        mounted.retain(|_, (_, b)| b.strong_count() > 0);
        mounted.insert((share.to_string(), target.to_string()), (source_node.to_string(), Arc::downgrade(backend)));
    }

    /// Asks the source of every remote mount of this node whether it
    /// answers, all at once, within `deadline`: the mounts whose source does
    /// not, with why.
    pub async fn probe(&self, deadline: Duration) -> HashMap<Key, String> {
        let backends: Vec<(Key, Arc<RemoteBackend>)> = self.mounted.lock().iter().filter_map(|(k, (_, b))| Some((k.clone(), b.upgrade()?))).collect();
        let mut probes = tokio::task::JoinSet::new();
        for (key, backend) in backends {
            probes.spawn(async move { (key, backend.probe(deadline).await) });
        }
        let mut failing = HashMap::new();
        while let Some(done) = probes.join_next().await {
            if let Ok((key, Err(why))) = done {
                failing.insert(key, why);
            }
        }
        failing
    }

    /// A share call from a peer (this node is the source).
    pub async fn serve_call(&self, peer: &Peer, body: &[u8]) -> Result<Frame, RemoteError> {
        let call: ShareCall = wire::decode(body).map_err(RemoteError::bad_request)?;
        let answer = self.server.handle(peer, call).await;
        Ok(Frame::new(kind::SHARE_OP, wire::encode(&answer)))
    }

    /// An invalidation a source pushed (this node holds the target's mount).
    pub fn serve_push(&self, peer: &Peer, body: &[u8]) -> Result<Frame, RemoteError> {
        let pushed: Pushed = wire::decode(body).map_err(RemoteError::bad_request)?;
        let backend = match self.mounted.lock().get(&(pushed.share_id.clone(), pushed.target_id.clone())) {
            // Only the share's source may drop this mount's caches.
            Some((source, b)) if *source == peer.node_id => b.upgrade(),
            Some(_) => return Err(RemoteError::new(hoody_transport::codes::FORBIDDEN, "not the source of this share")),
            None => None,
        };
        if let Some(kernel) = backend.and_then(|b| b.kernel()) {
            tracing::trace!(from = %peer.node_id, share = %pushed.share_id, "pushed invalidation");
            // Off the transport's task: the kernel may take its time.
            std::thread::spawn(move || server::apply_pushed(&kernel, pushed.invalidation));
        }
        Ok(Frame::new(kind::SHARE_INVALIDATE, Vec::new()))
    }
}

/// Share calls over QUIC to the source's node, whose address is read from
/// the catalog (again after a failure: a restarted node may listen elsewhere).
struct QuicChannel {
    endpoint: Endpoint,
    catalog: Catalog,
    source_node: String,
    share_id: String,
    target_id: String,
    addr: RwLock<Option<SocketAddr>>,
}

impl QuicChannel {
    async fn address(&self) -> Result<SocketAddr, FsError> {
        if let Some(a) = *self.addr.read() {
            return Ok(a);
        }
        let record = self.catalog.server(&self.source_node).await.map_err(|_| FsError::Unavailable)?.ok_or(FsError::Unavailable)?;
        let addr: SocketAddr = record.quic.parse().map_err(|_| FsError::Unavailable)?;
        *self.addr.write() = Some(addr);
        Ok(addr)
    }
}

#[async_trait]
impl backend::ShareChannel for QuicChannel {
    async fn call(&self, op: FsOp, deadline: Duration) -> Result<Answer, FsError> {
        let started = std::time::Instant::now();
        let addr = tokio::time::timeout(deadline, self.address()).await.map_err(|_| FsError::Unavailable)??;
        let call = ShareCall { share_id: self.share_id.clone(), target_id: self.target_id.clone(), op };
        let left = deadline.saturating_sub(started.elapsed());
        match self.endpoint.call_with_deadline(addr, Frame::new(kind::SHARE_OP, wire::encode(&call)), left).await {
            Ok(frame) => wire::decode::<Answer>(&frame.body).map_err(|e| {
                tracing::warn!(source = %self.source_node, error = %e, "malformed answer from a share source");
                FsError::Os(libc::EPROTO)
            }),
            Err(e) => {
                tracing::debug!(source = %self.source_node, error = %e, "share source unreachable");
                *self.addr.write() = None;
                Err(FsError::Unavailable)
            }
        }
    }
}

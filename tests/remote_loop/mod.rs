//! A cross-server share inside one process: a `RemoteBackend` whose every
//! call is encoded as a postcard `FsOp` and sent over a real QUIC connection
//! (two `hoody_transport` endpoints with a test cluster CA) to a "source
//! node" endpoint that decodes it and applies it with `dispatch::apply` to a
//! `LocalBackend`, as the daemon's `ShareServer` does once a session is open
//! (only the catalog's session checks are left out: tests/share_remote.rs);
//! the source's invalidations come back as pushed frames.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use hoody_fuse::{FsBackend, FsError, MountHandle, MountOptions};
use hoody_transport::{Endpoint, EndpointConfig, Frame, Handler, Peer, RemoteError};
use hoodyd::shares::remote::backend::ShareChannel;
use hoodyd::shares::remote::wire::{self, kind, Answer, FsOp, FsReply, Pushed, ShareCall, WAttr};
use hoodyd::shares::remote::{dispatch, server, RemoteBackend};
use hoodyd::shares::{LocalBackend, ShareMode};

const SHARE: &str = "loop-share";
const TARGET: &str = "loop-target";

/// The source node: serves share calls from the backend of the source directory.
struct SourceNode {
    backend: Arc<LocalBackend>,
}

#[async_trait]
impl Handler for SourceNode {
    async fn call(&self, peer: &Peer, request: Frame) -> Result<Frame, RemoteError> {
        let call: ShareCall = wire::decode(&request.body).map_err(RemoteError::bad_request)?;
        let answer: Answer = match call.op {
            // As `ShareServer::attach`, without the catalog's checks.
            FsOp::Attach => {
                self.backend.attach_invalidator(server::invalidations_to(peer, &call.share_id, &call.target_id));
                match self.backend.root().await {
                    Ok(root) => Ok(FsReply::Attached { root: WAttr::from(&root), takes_locks: self.backend.takes_locks() }),
                    Err(e) => Err(e.to_errno()),
                }
            }
            op => dispatch::apply(self.backend.as_ref(), op).await,
        };
        Ok(Frame::new(kind::SHARE_OP, wire::encode(&answer)))
    }
}

/// The target node: applies what the source pushes to the mount's kernel.
#[derive(Default)]
struct TargetNode {
    mounted: OnceLock<Weak<RemoteBackend>>,
}

#[async_trait]
impl Handler for TargetNode {
    async fn call(&self, _peer: &Peer, request: Frame) -> Result<Frame, RemoteError> {
        let pushed: Pushed = wire::decode(&request.body).map_err(RemoteError::bad_request)?;
        if let Some(kernel) = self.mounted.get().and_then(Weak::upgrade).and_then(|b| b.kernel()) {
            std::thread::spawn(move || server::apply_pushed(&kernel, pushed.invalidation));
        }
        Ok(Frame::new(kind::SHARE_INVALIDATE, Vec::new()))
    }
}

/// Share calls over QUIC, as the daemon's channel sends them.
struct QuicChannel {
    endpoint: Endpoint,
    source: SocketAddr,
    calls: Arc<AtomicU64>,
}

#[async_trait]
impl ShareChannel for QuicChannel {
    async fn call(&self, op: FsOp, deadline: Duration) -> Result<Answer, FsError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let call = ShareCall { share_id: SHARE.into(), target_id: TARGET.into(), op };
        match self.endpoint.call_with_deadline(self.source, Frame::new(kind::SHARE_OP, wire::encode(&call)), deadline).await {
            Ok(frame) => wire::decode::<Answer>(&frame.body).map_err(|_| FsError::Os(libc::EPROTO)),
            Err(_) => Err(FsError::Unavailable),
        }
    }
}

/// A mounted cross-server share; unmounts (then closes its endpoints) when dropped.
pub struct RemoteMount {
    pub mount: Option<MountHandle>,
    pub backend: Arc<LocalBackend>,
    /// Share calls sent over QUIC so far.
    pub calls: Arc<AtomicU64>,
    _endpoints: (Endpoint, Endpoint),
}

impl Drop for RemoteMount {
    fn drop(&mut self) {
        self.mount.take();
    }
}

impl RemoteMount {
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Mounts at `mnt` a cross-server share of `source` in `mode`, with the
/// options of the daemon's remote mounts (src/shares/mounts.rs: the kernel
/// trusts names and attributes for long, the source pushes changes), on `rt`.
pub fn mount(rt: &tokio::runtime::Runtime, source: &Path, mnt: &Path, mode: ShareMode) -> RemoteMount {
    let (ca_cert, ca_key) = hoody_transport::tls::new_cluster_ca().unwrap();
    let source_id = hoody_transport::tls::issue_node_identity(&ca_cert, &ca_key, "source-node", "node1").unwrap();
    let target_id = hoody_transport::tls::issue_node_identity(&ca_cert, &ca_key, "target-node", "node2").unwrap();
    let _in_runtime = rt.enter();
    let backend = Arc::new(LocalBackend::open(source, mode).unwrap());
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let source_node = Endpoint::bind(localhost, &source_id, Arc::new(SourceNode { backend: backend.clone() }), None, EndpointConfig::default()).unwrap();
    let target_node = Arc::new(TargetNode::default());
    let target_endpoint = Endpoint::bind(localhost, &target_id, target_node.clone(), None, EndpointConfig::default()).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let channel = Arc::new(QuicChannel { endpoint: target_endpoint.clone(), source: source_node.local_addr().unwrap(), calls: calls.clone() });
    let remote = Arc::new(rt.block_on(RemoteBackend::attach(channel)).unwrap());
    let _ = target_node.mounted.set(Arc::downgrade(&remote));
    let ttl = hoodyd::shares::mounts::REMOTE_CACHE_TTL;
    let options = MountOptions {
        read_only: mode == ShareMode::ReadOnly,
        entry_ttl: ttl,
        attr_ttl: ttl,
        subtype: "hoody".into(),
        runtime: Some(rt.handle().clone()),
        ..MountOptions::default()
    };
    let mount = hoody_fuse::mount(remote, mnt, options).unwrap();
    RemoteMount { mount: Some(mount), backend, calls, _endpoints: (source_node, target_endpoint) }
}

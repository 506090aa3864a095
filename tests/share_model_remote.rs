//! The reference-model property test of shares (tests/share_model.rs) against
//! a cross-server share: the FUSE mount serves a `RemoteBackend` whose every
//! call is encoded as a postcard `FsOp` and sent over a real QUIC connection
//! (two `hoody_transport` endpoints in this process, with a test cluster CA)
//! to a "source node" endpoint that decodes it and applies it with
//! `dispatch::apply` to a `LocalBackend` of the source directory, as the
//! daemon's `ShareServer` does once a session is open; the source's
//! invalidations come back as pushed frames on the same connection. What this
//! leaves out of the daemon's path is only the catalog's session checks
//! (tests/share_remote.rs covers those with a real cluster).
//!
//! Failing sequences are shrunk and their seeds kept in
//! `tests/share_model_remote.proptest-regressions` (committed), which every
//! run replays first. 64 sequences of up to 40 operations; `HOODY_STRESS=1`
//! runs 2000 of up to 120. Skipped, saying so, without /dev/fuse.

mod common;
mod fs_model;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use fs_model::world::World;
use hoody_fuse::{FsBackend, FsError, MountHandle, MountOptions};
use hoody_transport::{Endpoint, EndpointConfig, Frame, Handler, Peer, RemoteError};
use hoodyd::shares::remote::backend::ShareChannel;
use hoodyd::shares::remote::wire::{self, kind, Answer, FsOp, FsReply, Pushed, ShareCall, WAttr};
use hoodyd::shares::remote::{dispatch, server, RemoteBackend};
use hoodyd::shares::{LocalBackend, ShareMode};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/share_model_remote.proptest-regressions");
const SHARE: &str = "model-share";
const TARGET: &str = "model-target";

fn stress() -> bool {
    std::env::var_os("HOODY_STRESS").is_some_and(|value| value != "0")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if stress() { 2000 } else { 64 },
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    }
}

fn max_ops() -> usize {
    if stress() {
        120
    } else {
        40
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

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

/// A cross-server share of `source` mounted at `mnt`, and the plain reference
/// directory beside them; every sequence gets a fresh subdirectory of both.
struct Mounted {
    _mount: MountHandle,
    _endpoints: (Endpoint, Endpoint),
    /// Share calls sent over QUIC so far.
    calls: Arc<AtomicU64>,
    mnt: PathBuf,
    reference: PathBuf,
    next_case: AtomicU64,
    _tmp: tempfile::TempDir,
}

impl Mounted {
    fn new() -> Option<Self> {
        if !Path::new("/dev/fuse").exists() {
            common::skip("/dev/fuse is absent, no share can be mounted");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (source, mnt, reference) = (tmp.path().join("source"), tmp.path().join("mnt"), tmp.path().join("reference"));
        for dir in [&source, &mnt, &reference] {
            std::fs::create_dir(dir).unwrap();
        }
        // Other users (`Op::AsUser`) reach both worlds.
        for dir in [tmp.path(), &source, &reference] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let (ca_cert, ca_key) = hoody_transport::tls::new_cluster_ca().unwrap();
        let source_id = hoody_transport::tls::issue_node_identity(&ca_cert, &ca_key, "source-node", "node1").unwrap();
        let target_id = hoody_transport::tls::issue_node_identity(&ca_cert, &ca_key, "target-node", "node2").unwrap();
        let rt = runtime();
        let _in_runtime = rt.enter();
        let backend = Arc::new(LocalBackend::open(&source, ShareMode::ReadWrite).unwrap());
        let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let source_node = Endpoint::bind(localhost, &source_id, Arc::new(SourceNode { backend }), None, EndpointConfig::default()).unwrap();
        let target_node = Arc::new(TargetNode::default());
        let target_endpoint = Endpoint::bind(localhost, &target_id, target_node.clone(), None, EndpointConfig::default()).unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let channel = Arc::new(QuicChannel { endpoint: target_endpoint.clone(), source: source_node.local_addr().unwrap(), calls: calls.clone() });
        let remote = Arc::new(rt.block_on(RemoteBackend::attach(channel)).unwrap());
        let _ = target_node.mounted.set(Arc::downgrade(&remote));
        // The options of the daemon's mounts (src/shares/mounts.rs).
        let options = MountOptions { subtype: "hoody".into(), runtime: Some(rt.handle().clone()), ..MountOptions::default() };
        let mount = hoody_fuse::mount(remote, &mnt, options).unwrap();
        Some(Mounted { _mount: mount, _endpoints: (source_node, target_endpoint), calls, mnt, reference, next_case: AtomicU64::new(0), _tmp: tmp })
    }

    /// Two empty directories, the reference and its twin inside the share
    /// (made through the mount, so the kernel learns of it as a user would).
    fn new_case(&self) -> (World, World) {
        let case = format!("case-{}", self.next_case.fetch_add(1, Ordering::Relaxed));
        let (reference, tested) = (self.reference.join(&case), self.mnt.join(&case));
        for root in [&reference, &tested] {
            std::fs::create_dir(root).unwrap();
            std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        }
        (World::new(reference), World::new(tested))
    }
}

fn check(mounted: &Mounted, ops: &[fs_model::ops::Op]) -> Result<(), TestCaseError> {
    let (mut reference, mut tested) = mounted.new_case();
    fs_model::check_sequence(&mut reference, &mut tested, ops).map_err(TestCaseError::fail)?;
    // Removed through the mount (the kernel forgets the files, the source's
    // backend closes their descriptors). Failed cases stay.
    for root in [reference.root(), tested.root()] {
        std::fs::remove_dir_all(root).map_err(|err| TestCaseError::fail(format!("removing {}: {err}", root.display())))?;
    }
    Ok(())
}

#[test]
fn a_cross_server_share_behaves_like_a_plain_directory() {
    let Some(mounted) = Mounted::new() else { return };
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let result = runner.run(&fs_model::ops::sequence(max_ops()), |ops| check(&mounted, &ops));
    println!("{} sequences, {} share calls over QUIC", mounted.next_case.load(Ordering::Relaxed), mounted.calls.load(Ordering::Relaxed));
    drop(mounted);
    if let Err(failure) = result {
        panic!("{failure}\n{runner}");
    }
}

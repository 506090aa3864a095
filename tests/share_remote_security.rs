//! Remote shares, the source's side, under attack: the protocol spoken
//! directly with a member's certificate, as a compromised member would.
//!
//! The test process binds its own QUIC endpoint with an identity signed by
//! the cluster's CA — a member of its own making, another real member's, or
//! the target's node's own (read from its data dir, the real daemon of that
//! node stopped first so that it cannot race us on the same session) — and
//! sends crafted `ShareCall`s to the source's node.

mod common;

use std::ffi::CString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{Cluster, Daemon};
use hoody_transport::tls::issue_node_identity;
use hoody_transport::{ClusterIdentity, Endpoint, EndpointConfig, Frame, Handler, Peer, RemoteError, TransportError};
use hoodyd::shares::remote::wire::{self, kind, Answer, FsOp, FsReply, ShareCall, WAttr, WCaller, WLock, WLockOwner, WSetAttr, WSetTime, WTime};
use serde_json::{json, Value};

const ROOT: WCaller = WCaller { uid: 0, gid: 0 };

fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists();
    if !ok {
        common::skip("/dev/fuse is absent");
    }
    ok
}

/// Answers what a source pushes to the node that attached (invalidations).
struct Quiet;

#[async_trait]
impl Handler for Quiet {
    async fn call(&self, _peer: &Peer, request: Frame) -> Result<Frame, RemoteError> {
        Ok(Frame::new(request.kind, Vec::new()))
    }
}

/// A member speaking the share protocol to one node, from this process.
struct Speaker {
    rt: tokio::runtime::Runtime,
    endpoint: Endpoint,
    to: SocketAddr,
}

impl Speaker {
    fn new(identity: &ClusterIdentity, to: &Daemon) -> Speaker {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let endpoint = {
            let _in = rt.enter();
            Endpoint::bind("127.0.0.1:0".parse().unwrap(), identity, Arc::new(Quiet), None, EndpointConfig::default()).unwrap()
        };
        Speaker { rt, endpoint, to: to.quic.parse().unwrap() }
    }

    /// One call, as the transport answers it.
    fn send(&self, share: &str, target: &str, op: FsOp) -> Result<Answer, TransportError> {
        let call = ShareCall { share_id: share.into(), target_id: target.into(), op };
        let frame = self.rt.block_on(self.endpoint.call_with_deadline(self.to, Frame::new(kind::SHARE_OP, wire::encode(&call)), Duration::from_secs(5)))?;
        Ok(wire::decode::<Answer>(&frame.body).expect("a well-formed answer"))
    }

    fn op(&self, share: &str, target: &str, op: FsOp) -> Answer {
        let shown = format!("{op:?}");
        self.send(share, target, op).unwrap_or_else(|e| panic!("{shown}: transport error {e}"))
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.rt.block_on(self.endpoint.shutdown());
    }
}

/// A speaker bound to one session (share, target).
struct Session<'a> {
    speaker: &'a Speaker,
    share: String,
    target: String,
}

impl Session<'_> {
    fn op(&self, op: FsOp) -> Answer {
        self.speaker.op(&self.share, &self.target, op)
    }

    /// The errno `op` is refused with (a panic naming it if it is not refused).
    #[track_caller]
    fn refused(&self, op: FsOp) -> i32 {
        let shown = format!("{op:?}");
        match self.op(op) {
            Err(e) => e,
            Ok(reply) => panic!("{shown} was answered {reply:?}"),
        }
    }

    fn attach(&self) -> Answer {
        self.op(FsOp::Attach)
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> Answer {
        self.op(FsOp::Lookup { parent, name: name.to_vec() })
    }

    fn attr(&self, op: FsOp) -> WAttr {
        let shown = format!("{op:?}");
        match self.op(op) {
            Ok(FsReply::Attr(a)) => a,
            Ok(FsReply::Attached { root, .. }) => root,
            other => panic!("{shown}: {other:?}"),
        }
    }

    fn handle(&self, op: FsOp) -> u64 {
        let shown = format!("{op:?}");
        match self.op(op) {
            Ok(FsReply::Handle(h)) => h,
            other => panic!("{shown}: {other:?}"),
        }
    }

    /// Every name a directory handle lists, from the start.
    fn list(&self, dir: u64, handle: u64) -> Answer {
        self.op(FsOp::Readdirplus { dir, handle, offset: 0, max_entries: 1000 })
    }
}

fn names(answer: &Answer) -> Vec<String> {
    match answer {
        Ok(FsReply::Entries(es)) => es.iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect(),
        _ => Vec::new(),
    }
}

/// Node `on` holds a new container of `project`.
fn container_on(cluster: &Cluster, project: &str, name: &str, on: usize) -> Value {
    let r = cluster.nodes[0].call("POST", "/containers", Some(json!({"name": name, "project_id": project, "server_id": cluster.id(on)})));
    assert_eq!(r.status, 201, "{r:?}");
    r.data().clone()
}

/// A share of `/data` of a container on node 1 with a container on node 2.
struct Remote {
    cluster: Cluster,
    source: Value,
    target_id: String,
    share: String,
}

impl Remote {
    fn source_rootfs(&self) -> PathBuf {
        common::path_of(&self.source)
    }
    fn source_dir(&self) -> PathBuf {
        self.source_rootfs().join("data")
    }
    /// Node `i`'s own identity, from its data dir.
    fn identity_of(&self, i: usize) -> ClusterIdentity {
        ClusterIdentity::load(&self.cluster.nodes[i].data_dir().join("tls")).unwrap()
    }
    /// A new member of the cluster as far as certificates go: signed by the
    /// CA (node 1 holds its key), under a node id of its own.
    fn minted_member(&self, node_id: &str) -> ClusterIdentity {
        let tls = self.cluster.nodes[0].data_dir().join("tls");
        let ca = std::fs::read_to_string(tls.join("ca.pem")).unwrap();
        let key = std::fs::read_to_string(tls.join("ca.key")).unwrap();
        issue_node_identity(&ca, &key, node_id, "rogue").unwrap()
    }
    fn session<'a>(&self, speaker: &'a Speaker) -> Session<'a> {
        Session { speaker, share: self.share.clone(), target: self.target_id.clone() }
    }
    /// Node 2's daemon stopped: from now on only this process speaks as node 2.
    fn stop_target_node(&mut self) {
        let status = self.cluster.nodes[1].stop_with(libc::SIGTERM, Duration::from_secs(10));
        assert!(status.success(), "node 2 exited with {status}");
    }
}

/// `nodes` nodes; a container on node 1 whose `/data` (made by `fill`) is
/// shared in `mode` with a container on node 2, mounted there.
fn remote_share(nodes: usize, mode: &str, fill: impl FnOnce(&Path)) -> Option<Remote> {
    if !fuse_available() {
        return None;
    }
    let cluster = Cluster::start(nodes)?;
    let project = cluster.nodes[0].project("p");
    let source = container_on(&cluster, &project, "source", 0);
    let target = container_on(&cluster, &project, "target", 1);
    let dir = common::path_of(&source).join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), b"hello").unwrap();
    fill(&dir);
    let r = cluster.nodes[0].call("POST", &format!("/containers/{}/storage/shares", source["id"].as_str().unwrap()), Some(json!({"source_path": "/data", "target_container_id": target["id"], "mode": mode, "alias": "data"})));
    assert_eq!(r.status, 201, "{r:?}");
    let share = r.data()["id"].as_str().unwrap().to_string();
    let mount = common::path_of(&target).join("hoody/shares/data");
    let started = Instant::now();
    while std::fs::read(mount.join("hello.txt")).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "the remote share was not mounted on node 2 within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let target_id = target["id"].as_str().unwrap().to_string();
    Some(Remote { cluster, source, target_id, share })
}

/// The node id the source's backend gives the file at `path` (see
/// `node_id` in src/shares/node_table.rs): its inode on the source's
/// device, a hash of device and inode with the top bit set elsewhere.
fn node_id_of(path: &Path, source_dev: u64) -> u64 {
    let st = std::fs::symlink_metadata(path).unwrap();
    const OTHER_DEVICE: u64 = 1 << 63;
    if st.dev() == source_dev && st.ino() < OTHER_DEVICE {
        return st.ino();
    }
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&st.dev().to_le_bytes());
    key[8..].copy_from_slice(&st.ino().to_le_bytes());
    let hash = blake3::hash(&key);
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap()) | OTHER_DEVICE
}

#[track_caller]
fn errno(answer: Answer) -> i32 {
    match answer {
        Err(e) => e,
        Ok(reply) => panic!("expected a refusal, got {reply:?}"),
    }
}

#[test]
fn a_member_that_does_not_own_the_target_can_neither_attach_nor_use_its_session_and_a_removed_node_is_refused_by_the_transport() {
    let Some(mut r) = remote_share(3, "readwrite", |_| {}) else { return };
    r.stop_target_node();
    let node2 = Speaker::new(&r.identity_of(1), &r.cluster.nodes[0]);
    let owner = r.session(&node2);
    let root = owner.attr(FsOp::Attach);
    let hello = owner.attr(FsOp::Lookup { parent: root.node, name: b"hello.txt".to_vec() });
    let handle = owner.handle(FsOp::Open { node: hello.node, flags: libc::O_RDWR, caller: ROOT });

    // A member of the CA's signing under an id of its own, and node 3, a real
    // member owning no container: both speak QUIC with node 1 fine, and both
    // are refused the session of node 2's target.
    let minted = Speaker::new(&r.minted_member("rogue-node-id"), &r.cluster.nodes[0]);
    let node3 = Speaker::new(&r.identity_of(2), &r.cluster.nodes[0]);
    for (who, speaker) in [("a minted member", &minted), ("node 3", &node3)] {
        let rogue = r.session(speaker);
        assert_eq!(errno(rogue.attach()), libc::EACCES, "{who} attached to node 2's target");
        let calls = [
            FsOp::Root,
            FsOp::Lookup { parent: root.node, name: b"hello.txt".to_vec() },
            FsOp::Getattr { node: hello.node, handle: None },
            FsOp::Read { handle, offset: 0, size: 5 },
            FsOp::Write { handle, offset: 0, data: b"owned".to_vec(), drop_privileges: None },
            FsOp::Opendir { dir: root.node },
            FsOp::Create { parent: root.node, name: b"planted".to_vec(), mode: 0o644, umask: 0, flags: libc::O_RDWR, caller: ROOT },
            FsOp::Unlink { parent: root.node, name: b"hello.txt".to_vec() },
            FsOp::Release { handle },
            FsOp::Forget { node: hello.node, count: 1 },
            FsOp::Statfs,
        ];
        for call in calls {
            let shown = format!("{call:?}");
            assert_eq!(rogue.refused(call), libc::EACCES, "{who} used node 2's session: {shown}");
        }
        // Another target id, or the source container itself as a target: no session either.
        let source_id = r.source["id"].as_str().unwrap();
        for target in [source_id, "no-such-container"] {
            assert_eq!(errno(speaker.op(&r.share, target, FsOp::Attach)), libc::EACCES, "{who} attached to {target}");
        }
    }
    // Node 2's session is untouched: its handle still reads, the file is as it was.
    assert_eq!(owner.op(FsOp::Read { handle, offset: 0, size: 64 }), Ok(FsReply::Data(b"hello".to_vec())));
    assert!(!r.source_dir().join("planted").exists());
    assert_eq!(owner.attr(FsOp::Getattr { node: hello.node, handle: None }).node, hello.node, "a rogue's forget dropped node 2's node");

    // Node 3 removed from the cluster: its next share call is refused by the
    // transport itself (FORBIDDEN), on the connection it already has and on a
    // new one; the minted member, still unrevoked, stays a mere EACCES.
    let removed = r.cluster.nodes[0].call("DELETE", &format!("/servers/{}", r.cluster.id(2)), None);
    assert_eq!(removed.status, 200, "{removed:?}");
    let started = Instant::now();
    let refusal = loop {
        match node3.send(&r.share, &r.target_id, FsOp::Attach) {
            Err(e) => break e,
            Ok(answer) => assert_eq!(answer, Err(libc::EACCES)),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "node 3 still reached the share server 5 s after its removal");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(refusal.is_forbidden(), "not a transport-level refusal: {refusal}");
    for call in [FsOp::Attach, FsOp::Read { handle, offset: 0, size: 5 }] {
        let e = node3.send(&r.share, &r.target_id, call).unwrap_err();
        assert!(e.is_forbidden(), "{e}");
    }
    // On a new connection the refusal is the connection's close with the
    // FORBIDDEN code, right after the handshake; the caller's transport
    // reports it as a lost connection (or, when the close beats its first
    // stream, as an unreachable node), so node 1's log says why.
    let fresh = Speaker::new(&r.identity_of(2), &r.cluster.nodes[0]);
    match fresh.send(&r.share, &r.target_id, FsOp::Statfs) {
        Err(e) => println!("node 3 on a new connection: {e}"),
        Ok(answer) => panic!("a removed node reached the share server on a new connection: {answer:?}"),
    }
    let log = std::fs::read_to_string(r.cluster.nodes[0].data_dir().join("hoodyd.log")).unwrap();
    assert!(log.lines().any(|l| l.contains("refused a node that is not a member") && l.contains(&r.cluster.id(2))), "node 1 did not log refusing node 3's new connection");
    assert_eq!(errno(minted.op(&r.share, &r.target_id, FsOp::Attach)), libc::EACCES);
    assert_eq!(owner.op(FsOp::Read { handle, offset: 0, size: 64 }), Ok(FsReply::Data(b"hello".to_vec())));
}

#[test]
fn the_target_nodes_own_session_reaches_nothing_outside_the_share_and_dies_with_the_share() {
    let Some(mut r) = remote_share(2, "readwrite", |dir| {
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("to_root")).unwrap();
        std::os::unix::fs::symlink("../..", dir.join("up")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("to_etc")).unwrap();
    }) else {
        return;
    };
    std::fs::write(r.source_rootfs().join("secret.txt"), b"the source container's, not the share's").unwrap();
    r.stop_target_node();
    let node2 = Speaker::new(&r.identity_of(1), &r.cluster.nodes[0]);
    let s = r.session(&node2);
    let root = s.attr(FsOp::Attach);
    let source_dev = std::fs::metadata(r.source_dir()).unwrap().dev();
    assert_eq!(root.node, node_id_of(&r.source_dir(), source_dev));

    // `..` of the root is the root; `.` is the directory itself; `..` of a
    // subdirectory is the root again.
    for answer in [s.lookup(root.node, b".."), s.lookup(root.node, b".")] {
        match answer {
            Ok(FsReply::Attr(a)) => assert_eq!(a.node, root.node, "`..` or `.` of the root left it"),
            Err(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let sub = s.attr(FsOp::Lookup { parent: root.node, name: b"sub".to_vec() });
    let hello = s.attr(FsOp::Lookup { parent: root.node, name: b"hello.txt".to_vec() });
    match s.lookup(sub.node, b"..") {
        Ok(FsReply::Attr(a)) => assert_eq!(a.node, root.node),
        other => panic!("`..` of sub: {other:?}"),
    }
    // A name is one component: no `/`, no NUL, not empty.
    for name in [&b"../secret.txt"[..], b"/etc", b"sub/../../secret.txt", b"sub/", b"", b"secret.txt\0", b"..\0"] {
        assert_eq!(errno(s.lookup(root.node, name)), libc::EINVAL, "lookup of {:?}", String::from_utf8_lossy(name));
    }
    for name in [&b"secret.txt"[..], b"etc", b"data"] {
        assert_eq!(errno(s.lookup(root.node, name)), libc::ENOENT, "{:?} found from the share's root", String::from_utf8_lossy(name));
    }

    // Symlinks inside the source pointing out: looked up as themselves, and
    // never a directory to list or look into.
    let host_root: Vec<String> = std::fs::read_dir("/").unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for (link, points_to) in [("to_root", "/"), ("up", "../.."), ("to_etc", "/etc")] {
        let l = s.attr(FsOp::Lookup { parent: root.node, name: link.as_bytes().to_vec() });
        assert_eq!(l.kind, 2, "{link} is not a symlink to the target");
        assert_eq!(s.op(FsOp::Readlink { node: l.node }), Ok(FsReply::Bytes(points_to.as_bytes().to_vec())));
        for name in [&b"etc"[..], b"passwd", b"secret.txt", b"data", b".."] {
            assert_eq!(errno(s.lookup(l.node, name)), libc::ENOTDIR, "lookup of {:?} through {link}", String::from_utf8_lossy(name));
        }
        assert_eq!(errno(s.op(FsOp::Opendir { dir: l.node })), libc::ENOTDIR, "opendir through {link}");
        assert_eq!(errno(s.op(FsOp::Open { node: l.node, flags: libc::O_RDONLY, caller: ROOT })), libc::ELOOP, "open through {link}");
        assert_eq!(errno(s.op(FsOp::Create { parent: l.node, name: b"x".to_vec(), mode: 0o644, umask: 0, flags: libc::O_RDWR, caller: ROOT })), libc::ENOTDIR);
    }
    // The share's listing is the share's: never the host's nor the rootfs's.
    let h = s.handle(FsOp::Opendir { dir: root.node });
    let mut listed = names(&s.list(root.node, h));
    listed.sort();
    assert_eq!(listed, [".", "..", "hello.txt", "sub", "to_etc", "to_root", "up"], "host's root is {host_root:?}");

    // Node ids of files outside the share, as the backend would number them:
    // the source container's rootfs, a file in it, the host's root and /etc.
    let outside = [r.source_rootfs(), r.source_rootfs().join("secret.txt"), PathBuf::from("/"), PathBuf::from("/etc"), PathBuf::from("/etc/passwd")];
    for path in &outside {
        let node = node_id_of(path, source_dev);
        let shown = path.display();
        let refusals = [
            FsOp::Getattr { node, handle: None },
            FsOp::Lookup { parent: node, name: b"etc".to_vec() },
            FsOp::Lookup { parent: node, name: b"secret.txt".to_vec() },
            FsOp::Lookup { parent: node, name: b"..".to_vec() },
            FsOp::Opendir { dir: node },
            FsOp::Open { node, flags: libc::O_RDONLY, caller: ROOT },
            FsOp::Readlink { node },
            FsOp::Getxattr { node, name: b"user.x".to_vec() },
            FsOp::Listxattr { node },
            FsOp::Setattr { node, handle: None, changes: WSetAttr { mode: Some(0o777), ..Default::default() } },
            FsOp::Setxattr { node, name: b"user.planted".to_vec(), value: b"1".to_vec(), flags: 0 },
            FsOp::Create { parent: node, name: b"planted".to_vec(), mode: 0o644, umask: 0, flags: libc::O_RDWR, caller: ROOT },
            FsOp::Mkdir { parent: node, name: b"planted_dir".to_vec(), mode: 0o755, umask: 0, caller: ROOT },
            FsOp::Symlink { parent: node, name: b"planted_link".to_vec(), target: b"/".to_vec(), caller: ROOT },
            FsOp::Link { node, new_parent: root.node, new_name: b"stolen".to_vec() },
            FsOp::Link { node: hello.node, new_parent: node, new_name: b"planted".to_vec() },
            FsOp::Unlink { parent: node, name: b"secret.txt".to_vec() },
            FsOp::Rename { parent: node, name: b"secret.txt".to_vec(), new_parent: root.node, new_name: b"stolen".to_vec(), flags: 0 },
            FsOp::Rename { parent: root.node, name: b"hello.txt".to_vec(), new_parent: node, new_name: b"exfiltrated".to_vec(), flags: 0 },
        ];
        for op in refusals {
            let what = format!("{op:?}");
            let e = s.refused(op);
            assert!(e == libc::ESTALE, "{shown}: {what} answered errno {e}, not ESTALE");
        }
    }
    assert!(!r.source_rootfs().join("planted").exists() && !r.source_dir().join("stolen").exists() && r.source_dir().join("hello.txt").exists());
    assert_eq!(std::fs::read(r.source_rootfs().join("secret.txt")).unwrap(), b"the source container's, not the share's");

    // Handles never opened (or of the other kind) are nobody's.
    let file = hello;
    let opened = s.handle(FsOp::Open { node: file.node, flags: libc::O_RDONLY, caller: ROOT });
    for bogus in [0, 999_999, u64::MAX, opened + 1000] {
        let refusals = [
            FsOp::Read { handle: bogus, offset: 0, size: 16 },
            FsOp::Write { handle: bogus, offset: 0, data: b"x".to_vec(), drop_privileges: None },
            FsOp::Getattr { node: file.node, handle: Some(bogus) },
            FsOp::Setattr { node: file.node, handle: Some(bogus), changes: WSetAttr { size: Some(0), ..Default::default() } },
            FsOp::Fsync { handle: bogus, datasync: false },
            FsOp::Fallocate { handle: bogus, offset: 0, length: 4096, mode: 0 },
            FsOp::Lseek { handle: bogus, offset: 0, whence: libc::SEEK_END },
            FsOp::CopyFileRange { from: bogus, from_offset: 0, to: opened, to_offset: 0, length: 5 },
            FsOp::Readdirplus { dir: root.node, handle: bogus, offset: 0, max_entries: 10 },
            FsOp::Fsyncdir { handle: bogus, datasync: false },
            FsOp::Getlk { handle: bogus, owner: 1, lock: WLock { kind: libc::F_WRLCK, start: 0, end: u64::MAX, pid: 1 } },
            FsOp::Setlk { handle: bogus, owner: WLockOwner::Process(1), lock: WLock { kind: libc::F_WRLCK, start: 0, end: u64::MAX, pid: 1 } },
            FsOp::Release { handle: bogus },
            FsOp::Releasedir { handle: bogus },
        ];
        for op in refusals {
            let what = format!("{op:?}");
            assert_eq!(s.refused(op), libc::EBADF, "{what}");
        }
    }
    // A directory handle is no file handle, and a file handle no directory's.
    assert_eq!(errno(s.op(FsOp::Read { handle: h, offset: 0, size: 16 })), libc::EBADF);
    assert_eq!(errno(s.list(root.node, opened)), libc::EBADF);
    assert_eq!(std::fs::read(r.source_dir().join("hello.txt")).unwrap(), b"hello");
    // A read larger than any answer can carry is refused, not allocated
    // (4 GiB of the source's memory per call otherwise).
    assert_eq!(errno(s.op(FsOp::Read { handle: opened, offset: 0, size: u32::MAX })), libc::EINVAL);
    assert_eq!(s.op(FsOp::Read { handle: opened, offset: 0, size: 1 << 20 }), Ok(FsReply::Data(b"hello".to_vec())));

    // The share deleted: the session's very next call fails, its handle
    // with it, and it cannot be opened again.
    let deleted = r.cluster.nodes[0].call("DELETE", &format!("/storage/shares/{}", r.share), None);
    assert!(deleted.status == 200 || deleted.status == 204, "{deleted:?}");
    let gone = [libc::ENOTCONN, libc::ESTALE, libc::EACCES];
    for op in [FsOp::Read { handle: opened, offset: 0, size: 16 }, FsOp::Lookup { parent: root.node, name: b"hello.txt".to_vec() }, FsOp::Getattr { node: root.node, handle: None }] {
        let what = format!("{op:?}");
        let e = s.refused(op);
        assert!(gone.contains(&e), "{what} after the share's deletion: errno {e}");
    }
    assert_eq!(errno(s.attach()), libc::EACCES);
    assert_eq!(errno(s.lookup(root.node, b"hello.txt")), libc::ENOTCONN, "a session survived its share");
}

#[test]
fn on_a_readonly_share_every_writing_op_answers_erofs_and_changes_nothing() {
    let Some(mut r) = remote_share(2, "readonly", |dir| {
        std::fs::create_dir_all(dir.join("d/inner")).unwrap();
        std::fs::write(dir.join("f"), b"0123456789").unwrap();
        std::os::unix::fs::symlink("f", dir.join("l")).unwrap();
    }) else {
        return;
    };
    let f_path = r.source_dir().join("f");
    let has_xattr = xattr_set(&f_path, "user.kept", b"v");
    r.stop_target_node();
    let node2 = Speaker::new(&r.identity_of(1), &r.cluster.nodes[0]);
    let s = r.session(&node2);
    let root = match s.attach() {
        Ok(FsReply::Attached { root, takes_locks }) => {
            assert!(!takes_locks, "a readonly share takes locks on the source");
            root
        }
        other => panic!("{other:?}"),
    };
    let f = s.attr(FsOp::Lookup { parent: root.node, name: b"f".to_vec() });
    let d = s.attr(FsOp::Lookup { parent: root.node, name: b"d".to_vec() });
    let before = common::tree_digest(&r.source_dir());

    // Opening for writing (or truncating) is refused; reading is fine.
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC, libc::O_WRONLY | libc::O_APPEND, libc::O_RDWR | libc::O_CREAT] {
        assert_eq!(errno(s.op(FsOp::Open { node: f.node, flags, caller: ROOT })), libc::EROFS, "open with flags {flags:#o}");
    }
    let h = s.handle(FsOp::Open { node: f.node, flags: libc::O_RDONLY, caller: ROOT });
    let dh = s.handle(FsOp::Opendir { dir: root.node });
    let now = WSetTime::At(WTime { secs: 1, nanos: 0 });
    let lock = |kind| WLock { kind, start: 0, end: u64::MAX, pid: 4242 };
    let writes = [
        FsOp::Create { parent: root.node, name: b"new".to_vec(), mode: 0o644, umask: 0, flags: libc::O_RDWR, caller: ROOT },
        FsOp::Create { parent: root.node, name: b"f".to_vec(), mode: 0o644, umask: 0, flags: libc::O_RDWR | libc::O_TRUNC, caller: ROOT },
        FsOp::Write { handle: h, offset: 0, data: b"XXXX".to_vec(), drop_privileges: None },
        FsOp::Write { handle: h, offset: 100, data: b"past the end".to_vec(), drop_privileges: Some(WCaller { uid: 1000, gid: 1000 }) },
        FsOp::Fallocate { handle: h, offset: 0, length: 1 << 20, mode: 0 },
        FsOp::Fallocate { handle: h, offset: 0, length: 4, mode: libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE },
        FsOp::CopyFileRange { from: h, from_offset: 0, to: h, to_offset: 5, length: 5 },
        FsOp::Setattr { node: f.node, handle: None, changes: WSetAttr { size: Some(0), ..Default::default() } },
        FsOp::Setattr { node: f.node, handle: Some(h), changes: WSetAttr { size: Some(3), ..Default::default() } },
        FsOp::Setattr { node: f.node, handle: None, changes: WSetAttr { mode: Some(0o4777), ..Default::default() } },
        FsOp::Setattr { node: root.node, handle: None, changes: WSetAttr { mode: Some(0o777), ..Default::default() } },
        FsOp::Setattr { node: f.node, handle: None, changes: WSetAttr { uid: Some(1000), gid: Some(1000), ..Default::default() } },
        FsOp::Setattr { node: f.node, handle: None, changes: WSetAttr { atime: Some(now), mtime: Some(now), ..Default::default() } },
        FsOp::Setattr { node: d.node, handle: None, changes: WSetAttr { mtime: Some(WSetTime::Now), ..Default::default() } },
        FsOp::Mkdir { parent: root.node, name: b"newdir".to_vec(), mode: 0o755, umask: 0, caller: ROOT },
        FsOp::Mknod { parent: root.node, name: b"fifo".to_vec(), mode: libc::S_IFIFO | 0o644, umask: 0, rdev: 0, caller: ROOT },
        FsOp::Mknod { parent: root.node, name: b"plain".to_vec(), mode: libc::S_IFREG | 0o644, umask: 0, rdev: 0, caller: ROOT },
        FsOp::Symlink { parent: root.node, name: b"newlink".to_vec(), target: b"/".to_vec(), caller: ROOT },
        FsOp::Link { node: f.node, new_parent: d.node, new_name: b"hardlink".to_vec() },
        FsOp::Unlink { parent: root.node, name: b"f".to_vec() },
        FsOp::Unlink { parent: root.node, name: b"l".to_vec() },
        FsOp::Rmdir { parent: d.node, name: b"inner".to_vec() },
        FsOp::Rename { parent: root.node, name: b"f".to_vec(), new_parent: d.node, new_name: b"moved".to_vec(), flags: 0 },
        FsOp::Rename { parent: root.node, name: b"f".to_vec(), new_parent: root.node, new_name: b"d".to_vec(), flags: libc::RENAME_EXCHANGE },
        FsOp::Rename { parent: root.node, name: b"hello.txt".to_vec(), new_parent: root.node, new_name: b"f".to_vec(), flags: 0 },
        FsOp::Setxattr { node: f.node, name: b"user.new".to_vec(), value: b"1".to_vec(), flags: 0 },
        FsOp::Setxattr { node: f.node, name: b"user.kept".to_vec(), value: b"changed".to_vec(), flags: libc::XATTR_REPLACE },
        FsOp::Setxattr { node: root.node, name: b"user.new".to_vec(), value: b"1".to_vec(), flags: 0 },
        FsOp::Removexattr { node: f.node, name: b"user.kept".to_vec() },
        // Locks of a readonly share's readers may not hold up the source's writers.
        FsOp::Setlk { handle: h, owner: WLockOwner::OpenFile, lock: lock(libc::F_WRLCK) },
        FsOp::Setlk { handle: h, owner: WLockOwner::OpenFile, lock: lock(libc::F_RDLCK) },
        FsOp::Setlk { handle: h, owner: WLockOwner::Process(7), lock: lock(libc::F_RDLCK) },
        FsOp::Setlk { handle: h, owner: WLockOwner::Process(7), lock: lock(libc::F_WRLCK) },
    ];
    for op in writes {
        let what = format!("{op:?}");
        assert_eq!(s.refused(op), libc::EROFS, "{what}");
    }
    // Reading still works, and nothing changed on disk.
    assert_eq!(s.op(FsOp::Read { handle: h, offset: 0, size: 64 }), Ok(FsReply::Data(b"0123456789".to_vec())));
    let mut listed = names(&s.list(root.node, dh));
    listed.sort();
    assert_eq!(listed, [".", "..", "d", "f", "hello.txt", "l"]);
    assert_eq!(common::tree_digest(&r.source_dir()), before, "a readonly share changed the source");
    if has_xattr {
        assert_eq!(xattr_get(&f_path, "user.kept").as_deref(), Some(&b"v"[..]));
        assert_eq!(xattr_get(&f_path, "user.new"), None);
    }
    // The source's own writers are held up by nothing the target asked for.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&f_path).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0, "an flock of the target holds up the source: {}", std::io::Error::last_os_error());
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    // SAFETY: a valid descriptor and lock description.
    assert_eq!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) }, 0, "a record lock of the target holds up the source: {}", std::io::Error::last_os_error());
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) -> bool {
    let (p, n) = (CString::new(path.as_os_str().as_bytes()).unwrap(), CString::new(name).unwrap());
    // SAFETY: valid strings and buffer.
    unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) == 0 }
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    let (p, n) = (CString::new(path.as_os_str().as_bytes()).unwrap(), CString::new(name).unwrap());
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and buffer.
    let got = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (got >= 0).then(|| {
        buf.truncate(got as usize);
        buf
    })
}

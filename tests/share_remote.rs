//! Shares across servers: the source container on one node, the target on
//! another, the mount served over QUIC by the source's node.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Cluster, Daemon};
use serde_json::{json, Value};

fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists();
    if !ok {
        common::skip("/dev/fuse is absent");
    }
    ok
}

/// Node `on` creates a container through node 0, placed on node `on`.
fn container_on(cluster: &Cluster, project: &str, name: &str, on: usize) -> Value {
    let r = cluster.nodes[0].call("POST", "/containers", Some(json!({"name": name, "project_id": project, "server_id": cluster.id(on)})));
    assert_eq!(r.status, 201, "{r:?}");
    r.data().clone()
}

struct RemotePair {
    cluster: Cluster,
    source: Value,
    target: Value,
    share: String,
}

impl RemotePair {
    fn source_dir(&self) -> PathBuf {
        common::path_of(&self.source).join("data")
    }
    fn mount(&self) -> PathBuf {
        common::path_of(&self.target).join("hoody/shares/data")
    }
    fn node(&self, i: usize) -> &Daemon {
        &self.cluster.nodes[i]
    }
}

/// A share of `/data` from a container on node 1 to a container on node 2.
fn remote_pair(mode: &str) -> Option<RemotePair> {
    if !fuse_available() {
        return None;
    }
    let cluster = Cluster::start(2)?;
    let project = cluster.nodes[0].project("p");
    let source = container_on(&cluster, &project, "source", 0);
    let target = container_on(&cluster, &project, "target", 1);
    let dir = common::path_of(&source).join("data");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("hello.txt"), b"hello").unwrap();
    let r = cluster.nodes[0].call("POST", &format!("/containers/{}/storage/shares", source["id"].as_str().unwrap()), Some(json!({"source_path": "/data", "target_container_id": target["id"], "mode": mode, "alias": "data"})));
    assert_eq!(r.status, 201, "{r:?}");
    let share = r.data()["id"].as_str().unwrap().to_string();
    let pair = RemotePair { cluster, source, target, share };
    let started = Instant::now();
    while std::fs::read(pair.mount().join("hello.txt")).is_err() {
        assert!(started.elapsed() < Duration::from_secs(5), "the remote share was not mounted on node 2 within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(pair)
}

#[test]
fn a_share_whose_source_is_on_another_node_is_read_and_written_through_quic() {
    let Some(p) = remote_pair("readwrite") else { return };
    let mnt = p.mount();
    assert_eq!(std::fs::read(mnt.join("hello.txt")).unwrap(), b"hello");
    // Write through the target: lands in the source's directory on node 1.
    std::fs::write(mnt.join("sub/new.txt"), b"from the target").unwrap();
    assert_eq!(std::fs::read(p.source_dir().join("sub/new.txt")).unwrap(), b"from the target");
    // Big file, both ways, content checked.
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(mnt.join("big.bin"), &big).unwrap();
    assert!(std::fs::read(p.source_dir().join("big.bin")).unwrap() == big);
    assert!(std::fs::read(mnt.join("big.bin")).unwrap() == big);
    // Metadata ops.
    std::fs::rename(mnt.join("sub/new.txt"), mnt.join("moved.txt")).unwrap();
    assert!(p.source_dir().join("moved.txt").exists());
    std::os::unix::fs::symlink("moved.txt", mnt.join("link")).unwrap();
    assert_eq!(std::fs::read_link(p.source_dir().join("link")).unwrap(), Path::new("moved.txt"));
    std::fs::remove_file(mnt.join("moved.txt")).unwrap();
    assert!(!p.source_dir().join("moved.txt").exists());
    let mut names: Vec<String> = std::fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["big.bin", "hello.txt", "link", "sub"]);
    // The share's status, as the target's node decided it, from either node.
    for via in [0, 1] {
        let incoming = p.node(via).call("GET", &format!("/containers/{}/storage/incoming/{}", p.target["id"].as_str().unwrap(), p.share), None);
        assert_eq!(incoming.data()["status"], "active", "via node {}: {incoming:?}", via + 1);
        let share = p.node(via).call("GET", &format!("/containers/{}/storage/shares/{}", p.source["id"].as_str().unwrap(), p.share), None);
        assert_eq!(share.data()["targets"][0]["status"], "active", "via node {}: {share:?}", via + 1);
    }
}

#[test]
fn a_readonly_remote_share_refuses_writes_on_the_source_side() {
    let Some(p) = remote_pair("readonly") else { return };
    let err = std::fs::write(p.mount().join("nope.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert!(!p.source_dir().join("nope.txt").exists());
}

#[test]
fn a_change_on_the_source_reaches_the_remote_target_within_1s() {
    let Some(p) = remote_pair("readwrite") else { return };
    let mnt = p.mount();
    // Cached on the target first.
    assert_eq!(std::fs::read(mnt.join("hello.txt")).unwrap(), b"hello");
    let _ = std::fs::metadata(mnt.join("later.txt"));
    std::fs::write(p.source_dir().join("hello.txt"), b"changed on the source").unwrap();
    std::fs::write(p.source_dir().join("later.txt"), b"new").unwrap();
    let started = Instant::now();
    loop {
        let seen = std::fs::read(mnt.join("hello.txt")).unwrap();
        if seen == b"changed on the source" && mnt.join("later.txt").exists() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "not seen on the target within 1 s: {:?}", String::from_utf8_lossy(&seen));
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn with_the_source_node_killed_every_access_fails_within_5s_and_resumes_when_it_is_back() {
    let Some(mut p) = remote_pair("readwrite") else { return };
    let mnt = p.mount();
    p.cluster.nodes[0].stop_with(libc::SIGKILL, Duration::from_secs(5));
    for probe in ["hello.txt", "absent.txt"] {
        let path = mnt.join(probe);
        let started = Instant::now();
        let worker = std::thread::spawn(move || std::fs::read(path).map(|_| ()));
        while !worker.is_finished() {
            assert!(started.elapsed() < Duration::from_secs(6), "an access to {probe} hung with the source node dead");
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("{probe}: {:?} after {:?}", worker.join().unwrap(), started.elapsed());
    }
    // The target's node says why.
    let status_of = |p: &RemotePair| {
        let r = p.node(1).call("GET", &format!("/containers/{}/storage/incoming/{}", p.target["id"].as_str().unwrap(), p.share), None);
        (r.data()["status"].as_str().unwrap_or("").to_string(), r.data()["status_message"].as_str().unwrap_or("").to_string())
    };
    let started = Instant::now();
    loop {
        let (status, message) = status_of(&p);
        if status == "failed" && message.contains("cannot be reached") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(6), "status with the source dead: {status} {message}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The source node comes back on its data dir: access resumes by itself.
    let dir = std::mem::replace(&mut p.cluster.nodes[0].dir, tempfile::tempdir().unwrap());
    p.cluster.nodes[0] = Daemon::start_in(dir, &["--node-name", "node1"]);
    let started = Instant::now();
    while std::fs::read(mnt.join("hello.txt")).ok().as_deref() != Some(&b"hello"[..]) {
        assert!(started.elapsed() < Duration::from_secs(10), "access did not resume after the source node came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("resumed {:?} after the restart", started.elapsed());
    let started = Instant::now();
    while status_of(&p).0 != "active" {
        assert!(started.elapsed() < Duration::from_secs(6), "status after the source came back: {:?}", status_of(&p));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Identity survives a restart of the source's node: a file held open on the
/// target and names its kernel cached keep working once the source is back,
/// with no remount and no ESTALE.
#[test]
fn open_files_and_cached_names_keep_working_across_a_source_restart() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let Some(mut p) = remote_pair("readwrite") else { return };
    let mnt = p.mount();
    std::fs::write(p.source_dir().join("sub/deep.txt"), b"deep").unwrap();
    let mut held = std::fs::OpenOptions::new().read(true).write(true).open(mnt.join("hello.txt")).unwrap();
    let dir = std::fs::File::open(mnt.join("sub")).unwrap();
    assert_eq!(std::fs::read(mnt.join("sub/deep.txt")).unwrap(), b"deep");
    p.cluster.nodes[0].stop_with(libc::SIGKILL, Duration::from_secs(5));
    let data_dir = std::mem::replace(&mut p.cluster.nodes[0].dir, tempfile::tempdir().unwrap());
    p.cluster.nodes[0] = Daemon::start_in(data_dir, &["--node-name", "node1"]);
    // The first access after the restart may wait for the session to come back; then all works.
    let started = Instant::now();
    let mut text = String::new();
    loop {
        held.seek(SeekFrom::Start(0)).unwrap();
        text.clear();
        match held.read_to_string(&mut text) {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "only EIO while the source is away: {e}");
                assert!(started.elapsed() < Duration::from_secs(10), "the held file never worked again");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert_eq!(text, "hello");
    held.seek(SeekFrom::End(0)).unwrap();
    held.write_all(b" again").unwrap();
    held.sync_all().unwrap();
    assert_eq!(std::fs::read(p.source_dir().join("hello.txt")).unwrap(), b"hello again");
    assert_eq!(std::fs::read(mnt.join("sub/deep.txt")).unwrap(), b"deep", "a cached name resolves");
    let meta = dir.metadata().unwrap();
    assert!(meta.is_dir());
}

/// Two targets on two other nodes share one source: what one writes reaches
/// the other within 1 s (pushed by the source), and files both write land.
#[test]
fn targets_on_two_nodes_see_each_others_writes_within_1s_and_both_land() {
    if !fuse_available() {
        return;
    }
    let Some(cluster) = Cluster::start(3) else { return };
    let project = cluster.nodes[0].project("p");
    let source = container_on(&cluster, &project, "source", 0);
    let t2 = container_on(&cluster, &project, "t2", 1);
    let t3 = container_on(&cluster, &project, "t3", 2);
    let dir = common::path_of(&source).join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("seed.txt"), b"seed").unwrap();
    let r = cluster.nodes[0].call("POST", &format!("/containers/{}/storage/shares", source["id"].as_str().unwrap()), Some(json!({"source_path": "/data", "target_project_id": project, "mode": "readwrite", "alias": "data"})));
    assert_eq!(r.status, 201, "{r:?}");
    let (m2, m3) = (common::path_of(&t2).join("hoody/shares/data"), common::path_of(&t3).join("hoody/shares/data"));
    let started = Instant::now();
    while !(m2.join("seed.txt").exists() && m3.join("seed.txt").exists()) {
        assert!(started.elapsed() < Duration::from_secs(5), "mounted on nodes 2 and 3");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Both cache the file and the absence of the new ones.
    assert_eq!(std::fs::read(m2.join("seed.txt")).unwrap(), b"seed");
    assert!(!m2.join("from3.txt").exists());
    assert!(!m3.join("from2.txt").exists());
    std::fs::write(m3.join("seed.txt"), b"rewritten on node 3").unwrap();
    std::fs::write(m3.join("from3.txt"), b"3").unwrap();
    std::fs::write(m2.join("from2.txt"), b"2").unwrap();
    let started = Instant::now();
    loop {
        let seen = std::fs::read(m2.join("seed.txt")).unwrap();
        if seen == b"rewritten on node 3" && m2.join("from3.txt").exists() && m3.join("from2.txt").exists() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "writes of one target not seen by the other within 1 s: {:?}", String::from_utf8_lossy(&seen));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(std::fs::read(dir.join("from2.txt")).unwrap(), b"2");
    assert_eq!(std::fs::read(dir.join("from3.txt")).unwrap(), b"3");
}

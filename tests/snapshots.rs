//! Snapshots through the real daemon: API, dedup across containers, expiry, GC,
//! verify, corruption, consistency of running containers.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{path_of, small_tree, tree_digest, Daemon};
use serde_json::json;

fn container(d: &Daemon) -> (String, PathBuf) {
    let p = d.project(&format!("p{}", rand_suffix()));
    let c = d.container(&p, "c");
    (c["id"].as_str().unwrap().to_string(), path_of(&c))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn create_list_get_restore_delete() {
    let d = Daemon::start();
    let (id, rootfs) = container(&d);
    small_tree(&rootfs, 1);
    let before = tree_digest(&rootfs);

    let s = d.snapshot(&id, "pre-migration");
    assert_eq!(s.status, 201, "{s:?}");
    for f in ["alias", "id", "mode", "created_at", "expires_at", "size_bytes", "new_bytes"] {
        assert!(s.data().get(f).is_some(), "snapshot lacks {f}");
    }
    assert_eq!(s.data()["mode"], "stateless");
    assert_eq!(s.data()["id"].as_str().unwrap().len(), 64);
    assert!(s.data()["size_bytes"].as_u64().unwrap() > 700_000);
    assert!(s.data()["new_bytes"].as_u64().unwrap() > 0);
    let dup = d.snapshot(&id, "pre-migration");
    assert_eq!((dup.status, dup.code()), (409, "conflict"));

    let auto = d.call("POST", &format!("/containers/{id}/snapshots"), Some(json!({"expiry": 30})));
    assert_eq!(auto.status, 201);
    let alias = auto.data()["alias"].as_str().unwrap();
    assert!(alias.starts_with("snap-") && alias.len() == "snap-YYYYMMDD-HHMMSS".len(), "{alias}");
    assert!(auto.data()["expires_at"].is_string());
    assert_eq!(auto.data()["id"], s.data()["id"], "same tree, same id");
    assert_eq!(auto.data()["new_bytes"].as_u64().unwrap(), 0, "nothing new");

    let list = d.call("GET", &format!("/containers/{id}/snapshots"), None);
    assert_eq!(list.body["total"], 2);
    assert_eq!(d.call("GET", &format!("/containers/{id}"), None).data()["snapshot_count"], 2);
    assert_eq!(d.call("GET", "/containers", None).data()[0]["snapshot_count"], 2);
    assert_eq!(d.call("GET", &format!("/containers/{id}/snapshots/pre-migration"), None).data()["alias"], "pre-migration");

    // Change everything, then restore in place.
    std::fs::remove_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("var/blob.bin"), b"overwritten").unwrap();
    std::fs::write(rootfs.join("new-file"), b"not in the snapshot").unwrap();
    let r = d.restore(&id, "pre-migration");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.data()["done"], true);
    assert_eq!(tree_digest(&rootfs), before);
    assert_eq!(d.call("GET", &format!("/containers/{id}"), None).data()["progress"], serde_json::Value::Null);

    assert_eq!(d.call("DELETE", &format!("/containers/{id}/snapshots/pre-migration"), None).status, 200);
    assert_eq!(d.call("GET", &format!("/containers/{id}/snapshots/pre-migration"), None).status, 404);
    assert_eq!(d.call("GET", &format!("/containers/{id}"), None).data()["snapshot_count"], 1);
}

/// A restore reported as failed is not done behind the user's back at the
/// next start: the work made after it stays.
#[test]
fn a_failed_restore_is_not_redone_at_the_next_start() {
    let d = Daemon::start();
    let (id, rootfs) = container(&d);
    small_tree(&rootfs, 1);
    assert_eq!(d.snapshot(&id, "a").status, 201);
    std::fs::write(rootfs.join("etc-new.conf"), b"written before the restore").unwrap();
    // An immutable rootfs takes no staging directory: the restore fails before changing anything.
    let chattr = |flag: &str| assert!(std::process::Command::new("chattr").arg(flag).arg(&rootfs).status().unwrap().success());
    chattr("+i");
    let r = d.restore(&id, "a");
    chattr("-i");
    assert_ne!(r.status, 200, "{r:?}");
    assert!(r.message().contains("restore failed"), "{r:?}");
    std::fs::write(rootfs.join("after.conf"), b"the user goes on working").unwrap();
    let d = Daemon::start_in(d.into_dir(), &[]);
    assert_eq!(std::fs::read(rootfs.join("after.conf")).unwrap(), b"the user goes on working");
    assert!(rootfs.join("etc-new.conf").exists());
    assert_eq!(d.call("GET", &format!("/containers/{id}"), None).data()["progress"], serde_json::Value::Null);
}

/// What a restore cut off by a kill still needs is kept by GC, the offline
/// `hoodyd gc` included, even where its snapshot was deleted meanwhile: the
/// next start finishes the restore.
#[test]
fn gc_keeps_what_an_interrupted_restore_needs() {
    let d = Daemon::start();
    let (id, rootfs) = container(&d);
    small_tree(&rootfs, 77);
    let s = d.snapshot(&id, "gone");
    assert_eq!(s.status, 201);
    let root = s.data()["id"].as_str().unwrap().to_string();
    let wanted = tree_digest(&rootfs);
    std::fs::remove_file(rootfs.join("var/blob.bin")).unwrap();
    std::fs::write(rootfs.join("changed"), b"after the snapshot").unwrap();
    assert_eq!(d.call("DELETE", &format!("/containers/{id}/snapshots/gone"), None).status, 200);
    let dir = d.into_dir();
    // What a kill in the middle of that restore leaves behind: its journal.
    let jobs = dir.path().join("state/jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join(format!("restore-{id}.json")), json!({"container_id": id, "alias": "gone", "root": root}).to_string()).unwrap();
    let gc = std::process::Command::new(common::HOODYD).arg("gc").arg("--data-dir").arg(dir.path()).output().unwrap();
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    let d = Daemon::start_in(dir, &[]);
    assert_eq!(tree_digest(&rootfs), wanted, "the next start finished the restore");
    assert_eq!(d.call("GET", &format!("/containers/{id}"), None).data()["status_message"], serde_json::Value::Null);
}

#[test]
fn bad_snapshot_input_is_refused_and_records_nothing() {
    let d = Daemon::start();
    let (id, rootfs) = container(&d);
    let post = |body: serde_json::Value| d.call("POST", &format!("/containers/{id}/snapshots"), Some(body));
    let r = post(json!({"alias": "a/b"}));
    assert_eq!((r.status, r.field()), (400, "alias"));
    let r = post(json!({"expiry": -1}));
    assert_eq!((r.status, r.field()), (400, "expiry"));
    let r = post(json!({"expiry": "soon"}));
    assert_eq!((r.status, r.field()), (400, "expiry"));
    let r = post(json!({"colour": "red"}));
    assert_eq!((r.status, r.field()), (400, "colour"));
    assert_eq!(d.call("POST", "/containers/nope/snapshots", Some(json!({}))).status, 404);
    assert_eq!(d.call("PATCH", &format!("/containers/{id}/snapshots/nope"), None).status, 404);
    assert_eq!(d.call("DELETE", &format!("/containers/{id}/snapshots/nope"), None).status, 404);
    let eve = d.token_for("eve");
    assert_eq!(d.call_as(&eve, "POST", &format!("/containers/{id}/snapshots"), Some(json!({}))).status, 404);

    std::fs::remove_dir_all(&rootfs).unwrap();
    let r = post(json!({"alias": "gone"}));
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.message().contains("root filesystem does not exist"), "says why: {r:?}");
    assert!(!r.message().contains(rootfs.to_str().unwrap()), "names no host path: {r:?}");
    assert_eq!(d.call("GET", &format!("/containers/{id}/snapshots"), None).body["total"], 0, "recorded nothing");
}

#[test]
fn identical_content_in_two_containers_is_stored_once() {
    let d = Daemon::start();
    let (a, ra) = container(&d);
    let (b, rb) = container(&d);
    let mut blob = vec![0u8; 100 << 20];
    blake3::Hasher::new().update(b"hundred mebibytes").finalize_xof().fill(&mut blob);
    std::fs::write(ra.join("data.bin"), &blob).unwrap();
    std::fs::write(rb.join("copy.bin"), &blob).unwrap();
    drop(blob);
    let store = d.data_dir().join("store");
    let sa = d.snapshot(&a, "s");
    let after_a = dir_size(&store);
    let sb = d.snapshot(&b, "s");
    let after_b = dir_size(&store);
    assert!(sa.data()["new_bytes"].as_u64().unwrap() >= 100 << 20);
    assert!(sb.data()["new_bytes"].as_u64().unwrap() < 1 << 20, "{sb:?}");
    assert!(after_b - after_a < 1 << 20, "the second 100 MiB cost {} bytes", after_b - after_a);
    assert!(after_a < (100 << 20) + (4 << 20), "store holds it once: {after_a}");
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { dir_size(&e.path()) } else { m.len() };
    }
    total
}

#[test]
fn expired_snapshots_disappear_by_themselves_and_gc_reclaims_their_space() {
    let d = Daemon::start();
    let (id, rootfs) = container(&d);
    let mut blob = vec![0u8; 20 << 20];
    blake3::Hasher::new().update(b"expiring").finalize_xof().fill(&mut blob);
    std::fs::write(rootfs.join("big.bin"), &blob).unwrap();
    // 0.0002 days is about 17 seconds.
    let s = d.call("POST", &format!("/containers/{id}/snapshots"), Some(json!({"alias": "short", "expiry": 0.0002})));
    assert_eq!(s.status, 201);
    std::fs::remove_file(rootfs.join("big.bin")).unwrap();
    small_tree(&rootfs, 2);
    assert_eq!(d.snapshot(&id, "keep").status, 201);
    let keep = tree_digest(&rootfs);
    let started = Instant::now();
    while d.call("GET", &format!("/containers/{id}/snapshots/short"), None).status != 404 {
        assert!(started.elapsed() < Duration::from_secs(60), "expired snapshot still there after a minute");
        std::thread::sleep(Duration::from_millis(500));
    }
    let before = dir_size(&d.data_dir().join("store"));
    let out = d.hoodyd(&["gc"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = dir_size(&d.data_dir().join("store"));
    assert!(before - after >= 19 << 20, "gc reclaimed {} bytes ({})", before - after, String::from_utf8_lossy(&out.stdout));
    std::fs::remove_dir_all(rootfs.join("etc")).unwrap();
    assert_eq!(d.restore(&id, "keep").status, 200);
    assert_eq!(tree_digest(&rootfs), keep, "GC kept every block of the live snapshot");
    let v = d.hoodyd(&["verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn corruption_is_reported_by_verify_and_a_restore_from_it_writes_nothing() {
    let d = Daemon::start();
    let (id, rootfs) = container(&d);
    std::fs::write(rootfs.join("precious.txt"), b"precious ".repeat(5000)).unwrap();
    std::fs::write(rootfs.join("fine.txt"), b"fine").unwrap();
    assert_eq!(d.snapshot(&id, "s").status, 201);
    let ok = d.hoodyd(&["verify"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));

    // Flip bytes in the middle of the pack's largest record: precious.txt's block.
    let pack = std::fs::read_dir(d.data_dir().join("store/packs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "pack")).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let needle = zstd_marker(&bytes);
    bytes[needle] ^= 0xff;
    bytes[needle + 1] ^= 0xff;
    std::fs::write(&pack, bytes).unwrap();

    let bad = d.hoodyd(&["verify"]);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("snapshot {id}/s path /precious.txt")), "{text}");

    std::fs::write(rootfs.join("precious.txt"), b"local change").unwrap();
    let before = tree_digest(&rootfs);
    let r = d.restore(&id, "s");
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.code(), "operation_failed");
    assert!(r.message().contains("precious.txt"), "{r:?}");
    assert_eq!(tree_digest(&rootfs), before, "a failed restore writes nothing");
}

/// Offset of a byte in the middle of the block record with the largest raw size.
fn zstd_marker(pack: &[u8]) -> usize {
    let (mut off, mut best) = (8, None);
    while off + 42 <= pack.len() {
        let stored = u32::from_le_bytes(pack[off + 2..off + 6].try_into().unwrap()) as usize;
        let raw = u32::from_le_bytes(pack[off + 6..off + 10].try_into().unwrap());
        if pack[off] == 1 && best.is_none_or(|(r, _)| raw > r) {
            best = Some((raw, off + 42 + stored / 2));
        }
        off += 42 + stored;
    }
    best.expect("a block record").1
}

#[test]
fn restore_while_copying_is_a_conflict() {
    let d = Daemon::start();
    let (id, rootfs) = container(&d);
    small_tree(&rootfs, 3);
    assert_eq!(d.snapshot(&id, "s").status, 201);
    let dir = d.into_dir();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let catalog = hoodyd::daemon::bootstrap::open_catalog(&hoodyd::layout::DataLayout::new(dir.path())).await.unwrap();
        let mut rec = catalog.container(&id).await.unwrap().unwrap();
        rec.status = hoodyd::containers::ContainerStatus::Copying;
        catalog.put_container(&rec).await.unwrap();
    });
    let d = Daemon::start_in(dir, &[]);
    let r = d.restore(&id, "s");
    assert_eq!((r.status, r.code()), (409, "conflict"));
}

/// A writer in a cgroup rewrites a file with uniform content (one byte value per
/// generation) as fast as it can; every snapshot must hold one generation, never a mix.
#[test]
fn snapshots_of_a_running_container_are_never_torn() {
    let Some(cgroup) = make_cgroup() else {
        common::skip("no writable cgroup freezer on this machine");
        return;
    };
    let d = Daemon::start_with_host_paths(&[], Some(std::path::Path::new("/sys/fs/cgroup")));
    let (id, rootfs) = container(&d);
    let r = d.call("PATCH", &format!("/containers/{id}"), Some(json!({"cgroup_path": cgroup.path})));
    assert_eq!(r.status, 200, "{r:?}");
    let target = rootfs.join("data.bin");
    std::fs::write(&target, vec![0u8; 8 << 20]).unwrap();
    let writer = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import os\nfd=os.open('{}', os.O_WRONLY)\ni=0\nwhile True:\n    i=(i+1)%250\n    os.pwrite(fd, bytes([i])*(8<<20), 0)\n",
            target.display()
        ))
        .spawn()
        .unwrap();
    std::fs::write(cgroup.path.join(&cgroup.procs_file), writer.id().to_string()).unwrap();
    let mut writer = KillOnDrop(writer);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..6 {
        let s = d.snapshot(&id, &format!("s{i}"));
        assert_eq!(s.status, 201, "{s:?}");
        assert_eq!(s.data()["mode"], "stateless", "process state is not captured, and says so");
    }
    let _ = writer.0.kill();
    let _ = writer.0.wait();
    for i in 0..6 {
        assert_eq!(d.restore(&id, &format!("s{i}")).status, 200);
        let data = std::fs::read(&target).unwrap();
        assert_eq!(data.len(), 8 << 20);
        assert!(data.iter().all(|b| *b == data[0]), "snapshot s{i} holds a torn file");
    }
}

/// A daemon killed while a running container is frozen for its snapshot
/// thaws it at its next start: a kill must not leave a container stopped.
#[test]
fn a_container_frozen_by_a_killed_daemon_runs_again_after_the_next_start() {
    let Some(cgroup) = make_cgroup() else {
        common::skip("no writable cgroup freezer on this machine");
        return;
    };
    let v2 = cgroup.path.join("cgroup.freeze").exists();
    let frozen = |path: &std::path::Path| {
        if v2 {
            std::fs::read_to_string(path.join("cgroup.events")).unwrap().lines().any(|l| l == "frozen 1")
        } else {
            std::fs::read_to_string(path.join("freezer.state")).unwrap().trim() == "FROZEN"
        }
    };
    let mut d = Daemon::start_with_host_paths(&[], Some(std::path::Path::new("/sys/fs/cgroup")));
    let (id, rootfs) = container(&d);
    assert_eq!(d.call("PATCH", &format!("/containers/{id}"), Some(json!({"cgroup_path": cgroup.path}))).status, 200);
    // Enough data that capturing it takes a while, the container frozen all along (not btrfs).
    common::incompressible_blobs(&rootfs, 24, 0x9e37_79b9_7f4a_7c15);
    let sleeper = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(cgroup.path.join(cgroup.procs_file), sleeper.id().to_string()).unwrap();
    let _sleeper = KillOnDrop(sleeper);
    let (url, token) = (d.url.clone(), d.token.clone());
    let request = std::thread::spawn(move || {
        let _ = ureq::post(&format!("{url}/api/v1/containers/{id}/snapshots")).set("Authorization", &format!("Bearer {token}")).send_string("{}");
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !frozen(&cgroup.path) {
        assert!(Instant::now() < deadline, "the snapshot never froze the container");
        std::thread::sleep(Duration::from_millis(2));
    }
    d.stop_with(libc::SIGKILL, Duration::from_secs(5));
    let _ = request.join();
    assert!(frozen(&cgroup.path), "killed while capturing: still frozen, as nothing thawed it");
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    let _d = Daemon::start_in(dir, &[]);
    assert!(!frozen(&cgroup.path), "the next start thawed the container");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TestCgroup {
    path: PathBuf,
    procs_file: &'static str,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.freeze"), "0");
        let _ = std::fs::write(self.path.join("freezer.state"), "THAWED");
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A fresh cgroup with a freezer: v2 (unified, alone or hybrid) or v1 freezer.
fn make_cgroup() -> Option<TestCgroup> {
    let name = format!("hoody-test-{}", rand_suffix());
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/freezer"] {
        let path = PathBuf::from(base).join(&name);
        if std::fs::create_dir(&path).is_err() {
            continue;
        }
        if path.join("cgroup.freeze").exists() {
            return Some(TestCgroup { path, procs_file: "cgroup.procs" });
        }
        if path.join("freezer.state").exists() {
            return Some(TestCgroup { path, procs_file: "cgroup.procs" });
        }
        let _ = std::fs::remove_dir(&path);
    }
    None
}

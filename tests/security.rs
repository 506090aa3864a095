//! The reports of issue 15, each as a test against the real daemon: a tenant
//! never points the daemon at the host, and one container's operation never
//! reaches through a share into another's data.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{path_of, Daemon};
use serde_json::json;

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what} within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_tenant_cannot_adopt_a_host_directory_or_name_a_cgroup() {
    let roots = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir_in(roots.path()).unwrap();
    std::fs::write(host.path().join("passwd"), b"root:x:0:0").unwrap();
    let d = Daemon::start_with_host_paths(&[roots.path()], Some(Path::new("/sys/fs/cgroup/hoody")));
    let mallory = d.token_for("mallory");
    let p = d.call_as(&mallory, "POST", "/projects", Some(json!({"name": "m"})));
    let p = p.data()["id"].as_str().unwrap().to_string();

    let r = d.call_as(&mallory, "POST", "/containers", Some(json!({"name": "x", "project_id": p, "rootfs_path": host.path()})));
    assert_eq!((r.status, r.code(), r.field()), (403, "forbidden", "rootfs_path"), "{r:?}");
    let r = d.call_as(&mallory, "POST", "/containers", Some(json!({"name": "x", "project_id": p, "cgroup_path": "/sys/fs/cgroup/hoody/x"})));
    assert_eq!((r.status, r.field()), (403, "cgroup_path"), "{r:?}");
    assert_eq!(d.call_as(&mallory, "GET", "/containers", None).body["total"], 0, "nothing was created");

    let own = d.call_as(&mallory, "POST", "/containers", Some(json!({"name": "own", "project_id": p})));
    let id = own.data()["id"].as_str().unwrap().to_string();
    let r = d.call_as(&mallory, "PATCH", &format!("/containers/{id}"), Some(json!({"cgroup_path": "/sys/fs/cgroup/system.slice"})));
    assert_eq!((r.status, r.field()), (403, "cgroup_path"), "{r:?}");
    assert_eq!(d.call_as(&mallory, "GET", &format!("/containers/{id}"), None).data()["cgroup_path"], serde_json::Value::Null);

    // The admin too, only beneath the operator's roots.
    let q = d.project("admin");
    let r = d.call("POST", "/containers", Some(json!({"name": "x", "project_id": q, "cgroup_path": "/sys/fs/cgroup/system.slice"})));
    assert_eq!((r.status, r.field()), (403, "cgroup_path"), "{r:?}");
    let r = d.call("POST", "/containers", Some(json!({"name": "x", "project_id": q, "rootfs_path": "/etc"})));
    assert_eq!((r.status, r.field()), (403, "rootfs_path"), "{r:?}");
    assert!(!r.message().contains(&*d.data_dir().to_string_lossy()), "{r:?}");

    // Deleting an adopted container releases the directory: its files stay.
    let adopted = d.call("POST", "/containers", Some(json!({"name": "legacy", "project_id": q, "rootfs_path": host.path()})));
    assert_eq!(adopted.status, 201, "{adopted:?}");
    let deleted = d.call("DELETE", &format!("/containers/{}", adopted.data()["id"].as_str().unwrap()), None);
    assert_eq!((deleted.status, &deleted.data()["rootfs_removed"]), (200, &json!(false)), "{deleted:?}");
    assert!(deleted.message().contains("left in place"), "{deleted:?}");
    assert_eq!(std::fs::read(host.path().join("passwd")).unwrap(), b"root:x:0:0");
}

#[test]
fn with_no_roots_configured_nobody_adopts_or_names_a_cgroup() {
    let d = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let p = d.project("p");
    let r = d.call("POST", "/containers", Some(json!({"name": "x", "project_id": p, "rootfs_path": dir.path()})));
    assert_eq!((r.status, r.field()), (403, "rootfs_path"), "{r:?}");
    assert!(r.message().contains("adopt_roots"), "says what the operator must configure: {r:?}");
    let r = d.call("POST", "/containers", Some(json!({"name": "x", "project_id": p, "cgroup_path": "/sys/fs/cgroup/x"})));
    assert_eq!((r.status, r.field()), (403, "cgroup_path"), "{r:?}");
    assert_eq!(d.call("GET", "/containers", None).body["total"], 0);
}

fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists();
    if !ok {
        common::skip("/dev/fuse is absent");
    }
    ok
}

/// Every file under `root`, with its content.
fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().strip_prefix(root).unwrap().to_path_buf(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Shares the source container's `/srv/data` read-write into `target` as
/// `data`; returns the share's id.
fn share_srv_data(d: &Daemon, source: &serde_json::Value, target: &str) -> String {
    let share = d.call(
        "POST",
        &format!("/containers/{}/storage/shares", source["id"].as_str().unwrap()),
        Some(json!({"source_path": "/srv/data", "mode": "readwrite", "target_container_id": target, "alias": "data"})),
    );
    assert_eq!(share.status, 201, "{share:?}");
    share.data()["id"].as_str().unwrap().to_string()
}

#[test]
fn restoring_a_target_never_reaches_through_its_share_into_the_source() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = d.project("app");
    let (source, target) = (d.container(&p, "source"), d.container(&p, "target"));
    let (source_root, target_root) = (path_of(&source), path_of(&target));
    let data = source_root.join("srv/data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("db.sqlite"), b"the source's database").unwrap();
    std::fs::write(data.join("sub/log"), b"a log").unwrap();
    std::fs::write(target_root.join("app.conf"), b"v1").unwrap();
    let target_id = target["id"].as_str().unwrap();
    // The snapshot is taken before the share is mounted: it has no /hoody.
    assert_eq!(d.snapshot(target_id, "before").status, 201);
    share_srv_data(&d, &source, target_id);
    let mounted = target_root.join("hoody/shares/data");
    wait_until("the share is mounted", || std::fs::read(mounted.join("db.sqlite")).is_ok());
    std::fs::write(target_root.join("app.conf"), b"v2").unwrap();
    let before = files(&data);

    let r = d.restore(target_id, "before");
    assert_eq!(r.status, 200, "the restore succeeds around the mount: {r:?}");
    assert_eq!(files(&data), before, "the restore changed the share's source");
    assert_eq!(std::fs::read(target_root.join("app.conf")).unwrap(), b"v1", "the target itself is restored");
    assert_eq!(std::fs::read(mounted.join("sub/log")).unwrap(), b"a log", "the share is still mounted and serving");

    // A snapshot of the target with the share mounted holds nothing of the source.
    let s = d.snapshot(target_id, "with-share");
    assert_eq!(s.status, 201, "{s:?}");
    std::fs::write(data.join("db.sqlite"), b"changed at the source").unwrap();
    assert_eq!(d.restore(target_id, "with-share").status, 200);
    assert_eq!(std::fs::read(data.join("db.sqlite")).unwrap(), b"changed at the source");

    // Deleting the target unmounts first and never descends into the share.
    assert_eq!(d.call("DELETE", &format!("/containers/{target_id}"), None).status, 200);
    assert!(!target_root.exists());
    assert_eq!(std::fs::read(data.join("sub/log")).unwrap(), b"a log");
}

#[test]
fn deleting_a_container_leaves_whatever_is_mounted_inside_untouched() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skip("not root: no bind mount possible");
        return;
    }
    let d = Daemon::start();
    let p = d.project("app");
    let c = d.container(&p, "c");
    let root = path_of(&c);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("host-file"), b"keep me").unwrap();
    std::fs::create_dir_all(root.join("mnt/host")).unwrap();
    let (src, dst) = (std::ffi::CString::new(outside.path().to_str().unwrap()).unwrap(), std::ffi::CString::new(root.join("mnt/host").to_str().unwrap()).unwrap());
    // SAFETY: valid paths.
    assert_eq!(unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) }, 0);
    let r = d.call("DELETE", &format!("/containers/{}", c["id"].as_str().unwrap()), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!root.exists(), "the container's directory is gone");
    assert_eq!(std::fs::read(outside.path().join("host-file")).unwrap(), b"keep me", "the delete reached into a mount");
    // The mount was detached, not left behind in the daemon's data dir.
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!table.contains(root.to_str().unwrap()), "{table}");
}

/// Mount points (from this process's mount table) at or beneath `dir`.
fn mounts_beneath(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| *p == dir || p.starts_with(&format!("{dir}/"))).map(String::from).collect()
}

#[test]
fn a_mount_point_swapped_for_a_symlink_never_sends_a_share_outside_the_rootfs() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = d.project("app");
    let (source, target) = (d.container(&p, "source"), d.container(&p, "target"));
    let (source_root, target_root) = (path_of(&source), path_of(&target));
    std::fs::create_dir_all(source_root.join("srv/data")).unwrap();
    std::fs::write(source_root.join("srv/data/f"), b"shared").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let outside_path = outside.path().canonicalize().unwrap();
    let target_id = target["id"].as_str().unwrap().to_string();
    let share_id = share_srv_data(&d, &source, &target_id);
    wait_until("the share is mounted", || std::fs::read(target_root.join("hoody/shares/data/f")).is_ok());

    // The container's side: `hoody/shares` is, by turns, its directory and a
    // symlink to a directory outside the rootfs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (shares, outside, stop) = (target_root.join("hoody/shares"), outside_path.clone(), stop.clone());
        std::thread::spawn(move || {
            let real = shares.with_file_name("shares.real");
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Each state held for a while, so that the daemon meets both.
                let hold = Duration::from_micros(20 + swaps % 7 * 30);
                if std::fs::rename(&shares, &real).is_ok() {
                    let _ = std::os::unix::fs::symlink(&outside, &shares);
                    std::thread::sleep(hold);
                    let _ = std::fs::remove_file(&shares);
                    let _ = std::fs::rename(&real, &shares);
                    std::thread::sleep(hold);
                    swaps += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            swaps
        })
    };
    // The daemon's side: the target turns the share off and on, again and again.
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut toggles = 0;
    let mut seen_outside = Vec::new();
    while Instant::now() < deadline {
        for mount in [false, true] {
            let r = d.call("PATCH", &format!("/containers/{target_id}/storage/incoming/{share_id}/mount"), Some(json!({"mount": mount})));
            assert_eq!(r.status, 200, "{r:?}");
            seen_outside.extend(mounts_beneath(&outside_path));
        }
        toggles += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    seen_outside.extend(mounts_beneath(&outside_path));
    assert!(seen_outside.is_empty(), "a share was mounted outside the rootfs: {seen_outside:?}");
    assert_eq!(std::fs::read_dir(&outside_path).unwrap().count(), 0, "the daemon made something outside the rootfs");
    assert!(swaps > 10 && toggles > 10, "swaps {swaps}, toggles {toggles}");
    // Once the container stops playing, the share mounts where it belongs.
    let _ = std::fs::remove_file(target_root.join("hoody/shares"));
    let _ = std::fs::rename(target_root.join("hoody/shares.real"), target_root.join("hoody/shares"));
    let r = d.call("PATCH", &format!("/containers/{}/storage/shares/{share_id}", source["id"].as_str().unwrap()), Some(json!({"enabled": true})));
    assert_eq!(r.status, 200, "{r:?}");
    wait_until("the share is mounted again", || std::fs::read(target_root.join("hoody/shares/data/f")).is_ok());
}

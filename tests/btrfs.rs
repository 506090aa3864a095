//! Snapshots of a container whose rootfs is a btrfs subvolume: an atomic
//! subvolume snapshot is taken (during the freeze) and captured, then removed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{tree_digest, Daemon};
use serde_json::json;

struct LoopBtrfs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn run(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// A btrfs filesystem in a loop file, or `None` where this machine cannot make one.
fn loop_btrfs() -> Option<LoopBtrfs> {
    let dir = tempfile::tempdir().ok()?;
    let image = dir.path().join("fs.img");
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).ok()?;
    std::fs::File::create(&image).ok()?.set_len(512 << 20).ok()?;
    if !run(Command::new("mkfs.btrfs").arg("-q").arg(&image)) || !run(Command::new("mount").arg("-o").arg("loop").arg(&image).arg(&mount)) {
        return None;
    }
    Some(LoopBtrfs { mount, _dir: dir })
}

fn subvolume(path: &Path) -> bool {
    run(Command::new("btrfs").args(["subvolume", "create"]).arg(path))
}

#[test]
fn a_btrfs_subvolume_rootfs_is_captured_through_a_subvolume_snapshot() {
    let Some(fs) = loop_btrfs() else {
        common::skip("cannot make a btrfs loop filesystem here (mkfs.btrfs or loop devices missing)");
        return;
    };
    let rootfs = fs.mount.join("rootfs");
    assert!(subvolume(&rootfs));
    common::small_tree(&rootfs, 4);
    let before = tree_digest(&rootfs);
    let d = Daemon::start_with_host_paths(&[&fs.mount], None);
    let p = d.project("b");
    let c = d.call("POST", "/containers", Some(json!({"name": "b", "project_id": p, "rootfs_path": rootfs})));
    assert_eq!(c.status, 201, "{c:?}");
    let id = c.data()["id"].as_str().unwrap().to_string();
    let s = d.snapshot(&id, "one");
    assert_eq!(s.status, 201, "{s:?}");
    assert!(!fs.mount.join(".hoody-snapshot-of-rootfs").exists(), "the temporary subvolume snapshot is removed");
    let list = Command::new("btrfs").args(["subvolume", "list"]).arg(&fs.mount).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains("hoody-snapshot"), "{}", String::from_utf8_lossy(&list.stdout));
    std::fs::remove_dir_all(rootfs.join("etc")).unwrap();
    assert_eq!(d.restore(&id, "one").status, 200);
    assert_eq!(tree_digest(&rootfs), before);
    // A second snapshot finds the leftovers of none before it.
    let again = d.snapshot(&id, "two");
    assert_eq!(again.status, 201, "{again:?}");
    assert!(again.data()["new_bytes"].as_u64().unwrap() < 64 << 10, "only trees are new: {again:?}");
}

/// A daemon killed while it captures a btrfs rootfs through its temporary
/// read-only subvolume snapshot removes that snapshot at its next start.
#[test]
fn a_temporary_subvolume_snapshot_left_by_a_kill_is_removed_at_the_next_start() {
    let Some(fs) = loop_btrfs() else {
        common::skip("cannot make a btrfs loop filesystem here (mkfs.btrfs or loop devices missing)");
        return;
    };
    let rootfs = fs.mount.join("rootfs");
    assert!(subvolume(&rootfs));
    // Enough data that capturing it takes a while.
    common::incompressible_blobs(&rootfs, 20, 0x2545_f491_4f6c_dd1d);
    let mut d = Daemon::start_with_host_paths(&[&fs.mount], None);
    let p = d.project("b");
    let c = d.call("POST", "/containers", Some(json!({"name": "b", "project_id": p, "rootfs_path": rootfs})));
    assert_eq!(c.status, 201, "{c:?}");
    let id = c.data()["id"].as_str().unwrap().to_string();
    let (url, token) = (d.url.clone(), d.token.clone());
    let request = std::thread::spawn(move || {
        let _ = ureq::post(&format!("{url}/api/v1/containers/{id}/snapshots")).set("Authorization", &format!("Bearer {token}")).send_string("{}");
    });
    let leftover = fs.mount.join(".hoody-snapshot-of-rootfs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !leftover.exists() {
        assert!(std::time::Instant::now() < deadline, "the snapshot never made its subvolume snapshot");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    d.stop_with(libc::SIGKILL, std::time::Duration::from_secs(5));
    let _ = request.join();
    assert!(leftover.exists(), "killed while capturing: the temporary snapshot is still there");
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    let _d = Daemon::start_in(dir, &[]);
    assert!(!leftover.exists(), "the next start removed it");
}

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
        eprintln!("SKIP: cannot make a btrfs loop filesystem here (mkfs.btrfs or loop devices missing)");
        return;
    };
    let rootfs = fs.mount.join("rootfs");
    assert!(subvolume(&rootfs));
    common::small_tree(&rootfs, 4);
    let before = tree_digest(&rootfs);
    let d = Daemon::start();
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

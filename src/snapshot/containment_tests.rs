//! Capture and restore never reach outside the rootfs: not through a mount
//! inside it (a share at `/hoody/shares/…`, a bind mount), and not through a
//! directory the container swaps for a symlink while they run.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capture::capture;
use super::fidelity_tests::manifest;
use super::restore::restore;
use super::statcache::StatCache;
use super::tree::{Content, Tree};
use crate::store::{BlockHash, BlockStore};

/// Mounting needs root: elsewhere the test says it did not run, and fails
/// when every test must run (`HOODY_REQUIRE_ALL=1`).
fn can_mount() -> bool {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var("HOODY_REQUIRE_ALL").as_deref() != Ok("1"), "HOODY_REQUIRE_ALL=1 but not root: cannot mount");
    println!("SKIP: not root, no bind mount possible");
    false
}

/// A bind mount of `source` at `target`, unmounted on drop.
struct BindMount(PathBuf);

impl BindMount {
    fn new(source: &Path, target: &Path) -> BindMount {
        let (s, t) = (CString::new(source.as_os_str().as_bytes()).unwrap(), CString::new(target.as_os_str().as_bytes()).unwrap());
        // SAFETY: valid paths.
        let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
        assert_eq!(rc, 0, "bind mount: {}", std::io::Error::last_os_error());
        BindMount(target.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let t = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path.
        unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    }
}

fn store() -> (tempfile::TempDir, BlockStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlockStore::open(dir.path()).unwrap();
    (dir, store)
}

/// Every name in a captured tree, as paths from the root.
fn captured_names(store: &BlockStore, root: &BlockHash) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![(PathBuf::new(), *root)];
    while let Some((at, hash)) = stack.pop() {
        let tree = Tree::decode(&store.get(&hash).unwrap()).unwrap();
        for e in tree.entries {
            let path = at.join(std::ffi::OsStr::from_bytes(&e.name));
            if let Content::Dir(sub) = e.content {
                stack.push((path.clone(), sub));
            }
            out.insert(path);
        }
    }
    out
}

/// A rootfs with a file, and a directory outside it with a secret.
fn rootfs_and_outside() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (root, outside) = (tmp.path().join("rootfs"), tmp.path().join("outside"));
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("data/own"), b"the container's").unwrap();
    std::fs::create_dir_all(outside.join("deep")).unwrap();
    std::fs::write(outside.join("secret"), b"another container's data").unwrap();
    std::fs::write(outside.join("deep/more"), b"more").unwrap();
    (tmp, root, outside)
}

#[test]
fn a_restore_leaves_a_mount_inside_and_what_it_shows_untouched() {
    if !can_mount() {
        return;
    }
    let (_s, store) = store();
    let (_tmp, root, outside) = rootfs_and_outside();
    // The snapshot is taken before the share is mounted: it has no /hoody.
    let snap = capture(&store, &root, StatCache::default()).unwrap();
    std::fs::create_dir_all(root.join("hoody/shares/data")).unwrap();
    let before = manifest(&outside);
    let mount = BindMount::new(&outside, &root.join("hoody/shares/data"));
    std::fs::write(root.join("data/own"), b"changed").unwrap();
    std::fs::write(root.join("extra"), b"x").unwrap();

    // Captured with the mount in place: nothing of what it shows is taken.
    let captured = capture(&store, &root, StatCache::default()).unwrap();
    let names = captured_names(&store, &captured.root);
    assert!(!names.iter().any(|n| n.ends_with("secret") || n.ends_with("more")), "captured through the mount: {names:?}");

    restore(&store, &snap.root, &root, &StatCache::default()).expect("a restore succeeds around a mount");
    assert_eq!(manifest(&outside), before, "the restore changed what the mount shows");
    assert_eq!(std::fs::read(root.join("hoody/shares/data/secret")).unwrap(), b"another container's data", "the mount is still there");
    assert_eq!(std::fs::read(root.join("data/own")).unwrap(), b"the container's");
    assert!(!root.join("extra").exists());
    drop(mount);
}

#[test]
fn a_directory_swapped_for_a_symlink_never_leads_capture_or_restore_outside() {
    let (_s, store) = store();
    let (_tmp, root, outside) = rootfs_and_outside();
    for i in 0..50 {
        std::fs::write(root.join(format!("data/f{i}")), vec![i as u8; 3000]).unwrap();
    }
    let snap = capture(&store, &root, StatCache::default()).unwrap();
    let before = manifest(&outside);
    // The container's side: `data` is, by turns, its directory and a symlink
    // to the directory outside.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (root, outside, stop) = (root.clone(), outside.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::rename(root.join("data"), root.join("data.real"));
                let _ = std::os::unix::fs::symlink(&outside, root.join("data"));
                std::thread::yield_now();
                let _ = std::fs::remove_file(root.join("data"));
                let _ = std::fs::rename(root.join("data.real"), root.join("data"));
                swaps += 1;
            }
            swaps
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut captures, mut restores) = (0, 0);
    while Instant::now() < deadline {
        if let Ok(c) = capture(&store, &root, StatCache::default()) {
            let names = captured_names(&store, &c.root);
            assert!(!names.iter().any(|n| n.ends_with("secret") || n.ends_with("more")), "captured outside the rootfs: {names:?}");
            captures += 1;
        }
        if restore(&store, &snap.root, &root, &StatCache::default()).is_ok() {
            restores += 1;
        }
        assert_eq!(manifest(&outside), before, "something outside the rootfs changed");
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100 && captures > 0 && restores > 0, "swaps {swaps}, captures {captures}, restores {restores}");
    assert_eq!(manifest(&outside), before);
}

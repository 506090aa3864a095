//! Capture and restore against real files, compared field by field.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::capture::capture;
use super::posix;
use super::restore::{restore, RestoreError};
use super::statcache::StatCache;
use super::tree::Timestamp;
use crate::store::BlockStore;

/// Everything a restore must reproduce about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    atime: (i64, i64),
    mtime: (i64, i64),
    rdev: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    target: Option<Vec<u8>>,
    content: Option<blake3::Hash>,
    regions: Vec<(u64, u64)>,
    /// The first path (in walk order) sharing this inode, for hardlinks.
    link_of: Option<PathBuf>,
}

/// Field-by-field description of a tree. Times are read before anything inside
/// is opened, and files are read with O_NOATIME, so describing changes nothing.
pub fn manifest(root: &Path) -> BTreeMap<PathBuf, Meta> {
    let mut out = BTreeMap::new();
    let mut inodes = std::collections::HashMap::new();
    walk(root, Path::new(""), &mut out, &mut inodes);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Meta>, inodes: &mut std::collections::HashMap<u64, PathBuf>) {
    let abs = root.join(rel);
    let st = std::fs::symlink_metadata(&abs).unwrap();
    let kind = st.mode() & libc::S_IFMT;
    let (mut content, mut regions, mut target) = (None, Vec::new(), None);
    if st.is_file() {
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(&abs).unwrap();
        regions = posix::data_regions(&f, st.size()).unwrap();
        let mut h = blake3::Hasher::new();
        for (off, len) in &regions {
            let mut buf = vec![0u8; *len as usize];
            f.read_exact_at(&mut buf, *off).unwrap();
            h.update(&off.to_le_bytes());
            h.update(&buf);
        }
        content = Some(h.finalize());
    }
    if st.file_type().is_symlink() {
        target = Some(std::fs::read_link(&abs).unwrap().as_os_str().as_bytes().to_vec());
        // readlink bumps a symlink's atime (relatime): put it back.
        posix::set_times(&abs, Timestamp { sec: st.atime(), nsec: st.atime_nsec() as u32 }, Timestamp { sec: st.mtime(), nsec: st.mtime_nsec() as u32 }).unwrap();
    }
    let link_of = (!st.is_dir() && st.nlink() > 1).then(|| inodes.entry(st.ino()).or_insert_with(|| rel.to_path_buf()).clone());
    let meta = Meta {
        kind,
        mode: st.mode() & 0o7777,
        uid: st.uid(),
        gid: st.gid(),
        size: if st.is_file() { st.size() } else { 0 },
        atime: (st.atime(), st.atime_nsec()),
        mtime: (st.mtime(), st.mtime_nsec()),
        rdev: st.rdev(),
        xattrs: posix::xattrs(&abs).unwrap(),
        target,
        content,
        regions,
        link_of,
    };
    out.insert(rel.to_path_buf(), meta);
    if st.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&abs).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            walk(root, &rel.join(n), out, inodes);
        }
        // Listing a directory may bump its atime (relatime): put it back.
        posix::set_times(&abs, Timestamp { sec: st.atime(), nsec: st.atime_nsec() as u32 }, Timestamp { sec: st.mtime(), nsec: st.mtime_nsec() as u32 }).unwrap();
    }
}

fn t(sec: i64, nsec: u32) -> Timestamp {
    Timestamp { sec, nsec }
}

/// A tree with every kind of thing a container holds.
pub fn populate(root: &Path) {
    std::fs::create_dir_all(root.join("etc/empty")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    std::fs::write(root.join("etc/zero"), b"").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect();
    std::fs::write(root.join("usr/bin/tool"), &big).unwrap();
    posix::chmod(&root.join("usr/bin/tool"), 0o4755).unwrap();
    std::fs::create_dir(root.join("tmp")).unwrap();
    posix::chmod(&root.join("tmp"), 0o1777).unwrap();
    std::fs::create_dir(root.join("shared")).unwrap();
    posix::chmod(&root.join("shared"), 0o2775).unwrap();
    posix::lchown(&root.join("shared"), 1000, 1000).unwrap();
    // Sparse, larger than 4 GiB, with a few data islands.
    let sparse = std::fs::File::create(root.join("disk.img")).unwrap();
    sparse.set_len(5 << 30).unwrap();
    sparse.write_all_at(b"head", 0).unwrap();
    sparse.write_all_at(&vec![7u8; 100_000], (4 << 30) + 12345).unwrap();
    std::os::unix::fs::symlink("../etc/hosts", root.join("usr/hosts-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::fs::hard_link(root.join("etc/hosts"), root.join("usr/hosts-hard")).unwrap();
    posix::mknod(&root.join("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
    posix::mknod(&root.join("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3)).unwrap();
    posix::mknod(&root.join("loop9"), libc::S_IFBLK | 0o660, libc::makedev(7, 9)).unwrap();
    drop(std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap());
    posix::lchown(&root.join("etc/hosts"), 33, 44).unwrap();
    posix::lchown(&root.join("dangling"), 5, 6).unwrap();
    posix::set_xattr(&root.join("etc/hosts"), b"user.note", b"hello").unwrap();
    posix::set_xattr(&root.join("etc"), b"user.dir", b"x").unwrap();
    // security.capability v2: cap_net_bind_service, effective.
    let cap: Vec<u8> = [0x0200_0001u32, 1 << 10, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    posix::set_xattr(&root.join("usr/bin/tool"), b"security.capability", &cap).unwrap();
    for (p, a, m) in [("etc/hosts", t(1_600_000_000, 123_456_789), t(1_500_000_000, 987_654_321)), ("dangling", t(1_400_000_000, 1), t(1_400_000_001, 2)), ("etc/empty", t(1_300_000_000, 5), t(1_300_000_000, 6))] {
        posix::set_times(&root.join(p), a, m).unwrap();
    }
    for p in ["etc", "usr/bin", "usr", ""] {
        posix::set_times(&root.join(p), t(1_700_000_000, 11), t(1_700_000_000, 22)).unwrap();
    }
}

fn store() -> (tempfile::TempDir, BlockStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = BlockStore::open(dir.path()).unwrap();
    (dir, s)
}

#[test]
fn restore_reproduces_every_field_and_removes_what_the_snapshot_lacks() {
    let (_s, store) = store();
    let root = tempfile::tempdir().unwrap();
    let rootfs = root.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    populate(&rootfs);
    let before = manifest(&rootfs);
    let snap = capture(&store, &rootfs, StatCache::default()).unwrap();
    assert!(snap.stats.new_bytes < 8 << 20, "a 5 GiB sparse file costs its data only: {:?}", snap.stats);

    // Wreck it: change contents, modes, owners, times, xattrs, kinds; add and remove.
    std::fs::write(rootfs.join("etc/hosts"), b"changed").unwrap();
    std::fs::remove_file(rootfs.join("usr/hosts-hard")).unwrap();
    std::fs::write(rootfs.join("usr/hosts-hard"), b"no longer a link").unwrap();
    posix::chmod(&rootfs.join("usr/bin/tool"), 0o755).unwrap();
    posix::lchown(&rootfs.join("shared"), 0, 0).unwrap();
    posix::remove_xattr(&rootfs.join("etc"), b"user.dir").unwrap();
    posix::set_xattr(&rootfs.join("etc"), b"user.extra", b"y").unwrap();
    std::fs::remove_dir(rootfs.join("etc/empty")).unwrap();
    std::fs::write(rootfs.join("etc/empty"), b"now a file").unwrap();
    std::fs::remove_file(rootfs.join("fifo")).unwrap();
    std::fs::create_dir_all(rootfs.join("new/deep/dir")).unwrap();
    std::fs::write(rootfs.join("new/deep/dir/file"), b"extra").unwrap();
    std::fs::remove_file(rootfs.join("dangling")).unwrap();
    std::os::unix::fs::symlink("elsewhere", rootfs.join("dangling")).unwrap();
    std::fs::File::options().write(true).open(rootfs.join("disk.img")).unwrap().write_all_at(b"scribble", 3 << 30).unwrap();

    let (stats, _) = restore(&store, &snap.root, &rootfs, &snap.cache).unwrap();
    let after = manifest(&rootfs);
    for (path, want) in &before {
        assert_eq!(after.get(path), Some(want), "{}", path.display());
    }
    assert_eq!(after.len(), before.len(), "extra paths: {:?}", after.keys().filter(|k| !before.contains_key(*k)).collect::<Vec<_>>());
    assert!(stats.files_written <= 4, "only differing files are written: {stats:?}");
    assert!(!rootfs.join(super::capture::STAGING_DIR).exists());
}

#[test]
fn incremental_capture_reads_only_changed_files_and_restore_writes_only_differences() {
    let (_s, store) = store();
    let root = tempfile::tempdir().unwrap();
    for i in 0..200 {
        std::fs::write(root.path().join(format!("f{i}")), format!("file {i}").repeat(100)).unwrap();
    }
    let first = capture(&store, root.path(), StatCache::default()).unwrap();
    assert_eq!(first.stats.files_read, 200);
    std::fs::write(root.path().join("f7"), b"changed").unwrap();
    let second = capture(&store, root.path(), first.cache.clone()).unwrap();
    assert_eq!(second.stats.files_read, 1, "{:?}", second.stats);
    assert_ne!(first.root, second.root);
    let (stats, cache) = restore(&store, &first.root, root.path(), &second.cache).unwrap();
    assert_eq!(stats.files_written, 1, "{stats:?}");
    // The restored state is described by the returned cache: nothing to read next time.
    let third = capture(&store, root.path(), cache.clone()).unwrap();
    assert_eq!(third.stats.files_read, 0, "{:?}", third.stats);
}

#[test]
fn the_same_tree_gives_the_same_id_and_identical_files_are_stored_once() {
    let (_s, store) = store();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut blob = vec![0u8; 6 << 20];
    blake3::Hasher::new().update(b"dedup").finalize_xof().fill(&mut blob);
    for d in [a.path(), b.path()] {
        std::fs::write(d.join("big.bin"), &blob).unwrap();
        posix::set_times(&d.join("big.bin"), t(1, 0), t(2, 0)).unwrap();
        posix::set_times(d, t(3, 0), t(4, 0)).unwrap();
        posix::chmod(d, 0o755).unwrap();
    }
    let first = capture(&store, a.path(), StatCache::default()).unwrap();
    let second = capture(&store, b.path(), StatCache::default()).unwrap();
    assert!(first.stats.new_bytes >= 6 << 20);
    assert!(second.stats.new_bytes < 4096, "stored once: {:?}", second.stats);
    assert_eq!(first.root, second.root, "same tree, same id");
}

#[test]
fn a_corrupt_block_fails_the_restore_naming_the_path_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("precious.txt"), b"precious bytes ".repeat(1000)).unwrap();
    std::fs::write(root.path().join("other.txt"), b"other").unwrap();
    let snap = {
        let store = BlockStore::open(dir.path()).unwrap();
        capture(&store, root.path(), StatCache::default()).unwrap()
    };
    // Corrupt the data of precious.txt inside its pack.
    let store = BlockStore::open(dir.path()).unwrap();
    let content_hash = crate::store::BlockHash::of(&b"precious bytes ".repeat(1000));
    let loc = store.location(&content_hash).unwrap();
    drop(store);
    let pack = dir.path().join(format!("packs/{:08}.pack", loc.pack));
    let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
    f.write_all_at(b"XX", loc.offset + 42 + 3).unwrap();
    let store = BlockStore::open(dir.path()).unwrap();

    std::fs::write(root.path().join("precious.txt"), b"changed").unwrap();
    std::fs::write(root.path().join("extra.txt"), b"extra").unwrap();
    let before = manifest(root.path());
    let err = restore(&store, &snap.root, root.path(), &snap.cache).unwrap_err();
    assert!(matches!(&err, RestoreError::Corrupt { path, .. } if path == "precious.txt"), "{err}");
    assert!(err.to_string().contains("precious.txt"));
    assert_eq!(manifest(root.path()), before, "nothing written");
    let mut s = String::new();
    std::fs::File::open(root.path().join("precious.txt")).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "changed");
    let _ = OsStr::new("");
}

#[test]
fn a_large_file_changed_in_a_few_places_is_patched_in_place() {
    let (_s, store) = store();
    let root = tempfile::tempdir().unwrap();
    let mut db = vec![0u8; 16 << 20];
    blake3::Hasher::new().update(b"db").finalize_xof().fill(&mut db);
    std::fs::write(root.path().join("main.db"), &db).unwrap();
    let want = manifest(root.path());
    let first = capture(&store, root.path(), StatCache::default()).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(root.path().join("main.db")).unwrap();
    for page in [3u64, 1000, 3000] {
        f.write_all_at(&[0xAB; 4096], page * 4096).unwrap();
    }
    f.set_len((16 << 20) + 5000).unwrap();
    drop(f);
    let second = capture(&store, root.path(), first.cache.clone()).unwrap();
    let ino = std::fs::metadata(root.path().join("main.db")).unwrap().ino();
    let (stats, _) = restore(&store, &first.root, root.path(), &second.cache).unwrap();
    assert!(stats.bytes_written < 2 << 20, "only the differing chunks are written: {stats:?}");
    assert_eq!(std::fs::metadata(root.path().join("main.db")).unwrap().ino(), ino, "patched in place");
    assert_eq!(manifest(root.path()), want);
}

//! Restore in place: make a root filesystem exactly a snapshot's tree, writing
//! only what differs.
//!
//! Two phases. *Stage*: walk the snapshot against the current files and write
//! the content of every file that differs into a staging directory inside the
//! rootfs (same filesystem, so a rename puts it in place); every block is
//! verified on the way, and any failure removes the staging area and leaves the
//! container untouched. *Apply*: remove what the snapshot lacks, rename staged
//! files into place, create directories, links and special files, then set
//! owners, modes, xattrs and times (directories after their contents).
//! Re-running a restore that was cut off converges to the same result.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::capture::{open_noatime, read_small, CHUNK_MIN, STAGING_DIR};
use super::chunker::{for_each_chunk, Buffers};
use super::posix;
use super::statcache::{CachedFile, StatCache};
use super::tree::{Content, Entry, EntryKind, Extent, Tree};
use crate::store::{BlockHash, BlockStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot data for {path} is unreadable: {source}")]
    Corrupt { path: String, source: StoreError },
    #[error("snapshot tree {0} is missing or corrupt")]
    BadTree(BlockHash),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreStats {
    pub files_written: u64,
    pub bytes_written: u64,
    pub entries_removed: u64,
    pub entries_created: u64,
}

/// What phase 1 prepared for one file.
enum Staged {
    /// The whole new content, renamed over the file in phase 2.
    Whole(PathBuf),
    /// Only the chunks that differ (a large file changed in a few places):
    /// `(file offset, offset in the patch file, length)`, written in place in
    /// phase 2, then the file is cut or extended to `size`.
    Patch { patch: PathBuf, pieces: Vec<(u64, u64, u32)> },
}

/// Above this many touched paths one `syncfs` replaces the individual fsyncs.
const SYNCFS_ABOVE: usize = 2000;

/// Files at least this large are patched in place when less than half of them differs.
const PATCH_MIN_SIZE: u64 = 1 << 20;

struct Restorer<'a> {
    store: &'a BlockStore,
    root: PathBuf,
    dev: u64,
    old: &'a StatCache,
    trees: HashMap<BlockHash, Tree>,
    staged: HashMap<Vec<u8>, Staged>,
    staging: PathBuf,
    stats: RestoreStats,
    new_cache: StatCache,
    /// Files written and directories whose entries changed: fsynced at the end
    /// (a `syncfs` would also flush everything else dirty on the filesystem).
    touched: std::collections::BTreeSet<PathBuf>,
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}

fn lstat(path: &Path) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(path).ok()
}

fn kind_of(st: &std::fs::Metadata) -> EntryKind {
    EntryKind::from_mode(st.mode())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(st) if st.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The extents a file's current content would have: capture's cutting,
/// hashing without storing.
fn current_extents(path: &Path, size: u64) -> io::Result<Vec<Extent>> {
    let file = open_noatime(path)?;
    if size <= CHUNK_MIN as u64 {
        let data = read_small(&file, size)?;
        return Ok(if data.is_empty() { Vec::new() } else { vec![Extent { offset: 0, chunks: vec![(BlockHash::of(&data), data.len() as u32)] }] });
    }
    let mut extents = Vec::new();
    let mut buffers = Buffers::default();
    for (offset, len) in posix::data_regions(&file, size)? {
        let mut chunks = Vec::new();
        for_each_chunk(&file, offset, len, None, &mut buffers, |data, _| {
            chunks.push((BlockHash::of(data), data.len() as u32));
            Ok::<_, io::Error>(())
        })?;
        if !chunks.is_empty() {
            extents.push(Extent { offset, chunks });
        }
    }
    Ok(extents)
}

impl Restorer<'_> {
    fn tree(&mut self, hash: &BlockHash) -> Result<Tree, RestoreError> {
        if let Some(t) = self.trees.get(hash) {
            return Ok(t.clone());
        }
        let bytes = self.store.get(hash).map_err(|_| RestoreError::BadTree(*hash))?;
        let tree = Tree::decode(&bytes).ok_or(RestoreError::BadTree(*hash))?;
        self.trees.insert(*hash, tree.clone());
        Ok(tree)
    }

    fn abs(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    /// Phase 1: stage the content of every file that differs.
    fn stage(&mut self, tree: &BlockHash, rel: &[u8]) -> Result<(), RestoreError> {
        for entry in self.tree(tree)?.entries {
            let child = join(rel, &entry.name);
            match &entry.content {
                Content::Dir(sub) => self.stage(sub, &child)?,
                Content::File(extents) => {
                    if entry.link_group.as_ref().is_some_and(|g| g != &child) {
                        continue; // linked to its group's first member in phase 2
                    }
                    if !self.content_matches(&child, &entry, extents) {
                        match self.patch_plan(&child, &entry, extents) {
                            Some(diffs) => self.stage_patch(&child, diffs)?,
                            None => self.stage_file(&child, &entry, extents)?,
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn content_matches(&self, rel: &[u8], entry: &Entry, extents: &[Extent]) -> bool {
        let path = self.abs(rel);
        let Some(st) = lstat(&path) else { return false };
        if !st.is_file() || st.dev() != self.dev || st.size() != entry.size {
            return false;
        }
        if st.nlink() > 1 && entry.link_group.is_none() {
            return false; // must become a file of its own: rewrite to break the link
        }
        match self.old.files.get(rel) {
            Some(c) if c.matches(&st) => c.extents == extents,
            _ => current_extents(&path, st.size()).is_ok_and(|cur| cur == extents),
        }
    }

    /// The chunks of the snapshot's version that the current file lacks at their
    /// offset, when patching is worth it: a snapshot version without holes, a
    /// file of its own, and less than half of it differing.
    fn patch_plan(&self, rel: &[u8], entry: &Entry, extents: &[Extent]) -> Option<Vec<(u64, BlockHash, u32)>> {
        if entry.size < PATCH_MIN_SIZE || entry.link_group.is_some() {
            return None;
        }
        let path = self.abs(rel);
        let st = lstat(&path)?;
        if !st.is_file() || st.dev() != self.dev || st.nlink() != 1 {
            return None;
        }
        let current = match self.old.files.get(rel) {
            Some(c) if c.matches(&st) => c.extents.clone(),
            _ => current_extents(&path, st.size()).ok()?,
        };
        // The snapshot's version must have no holes (every byte is then written or
        // already right); the current one may have any layout.
        if !(extents.len() == 1 && extents[0].offset == 0 && extents[0].len() == entry.size) {
            return None;
        }
        let mut have = HashMap::new();
        for x in &current {
            let mut off = x.offset;
            for (h, l) in &x.chunks {
                have.insert(off, *h);
                off += *l as u64;
            }
        }
        let mut diffs = Vec::new();
        let mut off = 0u64;
        for (h, l) in &extents[0].chunks {
            if have.get(&off) != Some(h) {
                diffs.push((off, *h, *l));
            }
            off += *l as u64;
        }
        let differing: u64 = diffs.iter().map(|(_, _, l)| *l as u64).sum();
        (differing * 2 < entry.size).then_some(diffs)
    }

    fn stage_patch(&mut self, rel: &[u8], diffs: Vec<(u64, BlockHash, u32)>) -> Result<(), RestoreError> {
        let path = self.staging.join(format!("{}", self.staged.len()));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(at(&path))?;
        let mut pieces = Vec::with_capacity(diffs.len());
        let mut patch_off = 0u64;
        for (file_off, hash, len) in diffs {
            let data = self.store.get(&hash).map_err(|source| RestoreError::Corrupt { path: String::from_utf8_lossy(rel).into_owned(), source })?;
            file.write_all_at(&data, patch_off).map_err(at(&path))?;
            pieces.push((file_off, patch_off, len));
            patch_off += len as u64;
            self.stats.bytes_written += len as u64;
        }
        self.stats.files_written += 1;
        self.staged.insert(rel.to_vec(), Staged::Patch { patch: path, pieces });
        Ok(())
    }

    fn stage_file(&mut self, rel: &[u8], entry: &Entry, extents: &[Extent]) -> Result<(), RestoreError> {
        let path = self.staging.join(format!("{}", self.staged.len()));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(at(&path))?;
        file.set_len(entry.size).map_err(at(&path))?;
        for extent in extents {
            let mut offset = extent.offset;
            for (hash, len) in &extent.chunks {
                let data = self.store.get(hash).map_err(|source| RestoreError::Corrupt { path: String::from_utf8_lossy(rel).into_owned(), source })?;
                file.write_all_at(&data, offset).map_err(at(&path))?;
                offset += *len as u64;
                self.stats.bytes_written += *len as u64;
            }
        }
        self.stats.files_written += 1;
        self.staged.insert(rel.to_vec(), Staged::Whole(path));
        Ok(())
    }

    /// Phase 2: make directory `rel` hold exactly the entries of `tree`.
    fn apply(&mut self, tree: &BlockHash, rel: &[u8]) -> Result<(), RestoreError> {
        let dir = self.abs(rel);
        let tree = self.tree(tree)?;
        let mut wanted: HashMap<&[u8], &Entry> = HashMap::with_capacity(tree.entries.len());
        for e in &tree.entries {
            wanted.insert(&e.name, e);
        }
        for name in std::fs::read_dir(&dir).map_err(at(&dir))? {
            let name = name.map_err(at(&dir))?.file_name();
            if rel.is_empty() && name == STAGING_DIR {
                continue;
            }
            let path = dir.join(&name);
            let Some(st) = lstat(&path) else { continue };
            if st.dev() != self.dev {
                continue; // a mount inside the container (a share): never touched
            }
            let keep = wanted.get(name.as_bytes()).is_some_and(|e| e.kind == kind_of(&st));
            if !keep {
                remove_any(&path).map_err(at(&path))?;
                self.stats.entries_removed += 1;
                self.touched.insert(dir.clone());
            }
        }
        for entry in &tree.entries {
            let child = join(rel, &entry.name);
            let path = self.abs(&child);
            let cur = lstat(&path);
            let created_before = self.stats.entries_created;
            if cur.as_ref().is_some_and(|st| st.dev() != self.dev) {
                continue;
            }
            match &entry.content {
                Content::Dir(sub) => {
                    if cur.is_none() {
                        std::fs::create_dir(&path).map_err(at(&path))?;
                        self.stats.entries_created += 1;
                    }
                    self.apply(sub, &child)?;
                }
                Content::File(extents) => {
                    match (&entry.link_group, self.staged.remove(&child)) {
                        (Some(group), _) if group != &child => {
                            let first = self.abs(group);
                            let first_ino = lstat(&first).map(|s| s.ino());
                            if cur.as_ref().map(|s| s.ino()) != first_ino || first_ino.is_none() {
                                remove_any(&path).map_err(at(&path))?;
                                std::fs::hard_link(&first, &path).map_err(at(&path))?;
                                self.stats.entries_created += 1;
                            }
                        }
                        (_, Some(Staged::Whole(staged))) => {
                            std::fs::rename(&staged, &path).map_err(at(&path))?;
                            self.touched.insert(path.clone());
                            self.touched.insert(dir.clone());
                            if cur.is_none() {
                                self.stats.entries_created += 1;
                            }
                        }
                        (_, Some(Staged::Patch { patch, pieces })) => {
                            let from = File::open(&patch).map_err(at(&patch))?;
                            let to = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&path).map_err(at(&path))?;
                            let mut buf = Vec::new();
                            for (file_off, patch_off, len) in pieces {
                                buf.resize(len as usize, 0);
                                from.read_exact_at(&mut buf, patch_off).map_err(at(&patch))?;
                                to.write_all_at(&buf, file_off).map_err(at(&path))?;
                            }
                            to.set_len(entry.size).map_err(at(&path))?;
                            self.touched.insert(path.clone());
                        }
                        _ => {}
                    }
                    if self.stats.entries_created != created_before {
                        self.touched.insert(dir.clone());
                    }
                    self.set_meta(&path, entry)?;
                    if let Some(st) = lstat(&path) {
                        self.new_cache.files.insert(child, CachedFile::from_stat(&st, extents.clone(), entry.xattrs.clone()));
                    }
                    continue;
                }
                Content::Symlink(target) => {
                    let same = cur.as_ref().is_some_and(|_| std::fs::read_link(&path).is_ok_and(|t| t.as_os_str().as_bytes() == target.as_slice()));
                    if !same {
                        remove_any(&path).map_err(at(&path))?;
                        std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).map_err(at(&path))?;
                        self.stats.entries_created += 1;
                    }
                }
                Content::Special => {
                    let same = cur.as_ref().is_some_and(|st| kind_of(st) == entry.kind && (st.rdev() == entry.rdev || !matches!(entry.kind, EntryKind::CharDev | EntryKind::BlockDev)));
                    if !same {
                        remove_any(&path).map_err(at(&path))?;
                        let fmt = match entry.kind {
                            EntryKind::Fifo => libc::S_IFIFO,
                            EntryKind::Socket => libc::S_IFSOCK,
                            EntryKind::CharDev => libc::S_IFCHR,
                            _ => libc::S_IFBLK,
                        };
                        posix::mknod(&path, fmt | (entry.mode & 0o777), entry.rdev).map_err(at(&path))?;
                        self.stats.entries_created += 1;
                    }
                }
            }
            if self.stats.entries_created != created_before {
                self.touched.insert(dir.clone());
            }
            self.set_meta(&path, entry)?;
        }
        Ok(())
    }

    /// Owner, then mode (a chown clears setuid), then xattrs, then times.
    fn set_meta(&self, path: &Path, e: &Entry) -> Result<(), RestoreError> {
        let st = lstat(path).ok_or_else(|| at(path)(io::Error::from(io::ErrorKind::NotFound)))?;
        if st.uid() != e.uid || st.gid() != e.gid {
            posix::lchown(path, e.uid, e.gid).map_err(at(path))?;
        }
        if e.kind != EntryKind::Symlink && (st.mode() & 0o7777 != e.mode || st.uid() != e.uid || st.gid() != e.gid) {
            posix::chmod(path, e.mode).map_err(at(path))?;
        }
        if e.kind != EntryKind::Symlink || !e.xattrs.is_empty() {
            posix::sync_xattrs(path, &e.xattrs).map_err(at(path))?;
        }
        let (atime, mtime) = (super::tree::Timestamp { sec: st.atime(), nsec: st.atime_nsec() as u32 }, super::tree::Timestamp { sec: st.mtime(), nsec: st.mtime_nsec() as u32 });
        if atime != e.atime || mtime != e.mtime {
            posix::set_times(path, e.atime, e.mtime).map_err(at(path))?;
        }
        Ok(())
    }
}

/// Makes `rootfs` exactly the snapshot `root` (as made by capture). Returns what
/// was done and the stat cache of the restored state.
pub fn restore(store: &BlockStore, root: &BlockHash, rootfs: &Path, old: &StatCache) -> Result<(RestoreStats, StatCache), RestoreError> {
    std::fs::create_dir_all(rootfs).map_err(at(rootfs))?;
    let root_st = std::fs::symlink_metadata(rootfs).map_err(at(rootfs))?;
    let dev = root_st.dev();
    let staging = rootfs.join(STAGING_DIR);
    remove_any(&staging).map_err(at(&staging))?;
    std::fs::create_dir(&staging).map_err(at(&staging))?;
    let mut r = Restorer {
        store,
        root: rootfs.to_path_buf(),
        dev,
        old,
        trees: HashMap::new(),
        staged: HashMap::new(),
        staging: staging.clone(),
        stats: RestoreStats::default(),
        new_cache: StatCache::default(),
        touched: Default::default(),
    };
    let wrapper = r.tree(root)?;
    let root_entry = wrapper.entries.first().cloned().ok_or(RestoreError::BadTree(*root))?;
    let Content::Dir(inner) = root_entry.content else { return Err(RestoreError::BadTree(*root)) };
    let started = std::time::Instant::now();
    if let Err(e) = r.stage(&inner, b"") {
        // Leave the container exactly as it was, the root's times included.
        let _ = std::fs::remove_dir_all(&staging);
        let _ = posix::set_times(rootfs, super::tree::Timestamp { sec: root_st.atime(), nsec: root_st.atime_nsec() as u32 }, super::tree::Timestamp { sec: root_st.mtime(), nsec: root_st.mtime_nsec() as u32 });
        return Err(e);
    }
    let staged = started.elapsed();
    r.apply(&inner, b"")?;
    std::fs::remove_dir_all(&staging).map_err(at(&staging))?;
    r.set_meta(rootfs, &root_entry)?;
    let applied = started.elapsed();
    r.touched.insert(rootfs.to_path_buf());
    if r.touched.len() > SYNCFS_ABOVE {
        // Thousands of fsyncs cost more than one flush of the whole filesystem.
        posix::syncfs(rootfs).map_err(at(rootfs))?;
    } else {
        for path in &r.touched {
            // A path replaced or removed later in the walk is simply gone: its parent is synced.
            if let Ok(f) = File::open(path) {
                f.sync_all().map_err(at(path))?;
            }
        }
    }
    tracing::info!(?staged, ?applied, synced = ?started.elapsed(), stats = ?r.stats, "restore phases");
    Ok((r.stats, r.new_cache))
}

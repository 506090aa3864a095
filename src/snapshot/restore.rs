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
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::capture::{read_small, STAGING_DIR};
use super::chunker::CHUNK_MIN;
use super::chunker::{for_each_chunk, Buffers};
use super::posix;
use super::statcache::{CachedFile, StatCache};
use super::tree::{Content, Entry, EntryKind, Extent, Tree};
use crate::beneath::{self, Dir, Meta, Stat};
use crate::progress::Reporter;
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

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreStats {
    pub files_written: u64,
    pub bytes_written: u64,
    pub entries_removed: u64,
    pub entries_created: u64,
}

/// What phase 1 prepared for one file: names in the staging directory.
enum Staged {
    /// The whole new content, renamed over the file in phase 2.
    Whole(OsString),
    /// Only the chunks that differ (a large file changed in a few places):
    /// `(file offset, offset in the patch file, length)`, written in place in
    /// phase 2, then the file is cut or extended to `size`.
    Patch { patch: OsString, pieces: Vec<(u64, u64, u32)> },
}

/// Above this many touched paths one `syncfs` replaces the individual fsyncs.
const SYNCFS_ABOVE: usize = 2000;

/// Files at least this large are patched in place when less than half of them differs.
const PATCH_MIN_SIZE: u64 = 1 << 20;

/// Every call on the rootfs goes through a [`Dir`] opened from the root down
/// (see [`crate::beneath`]): a name the container re-points while the
/// restore runs can never lead it outside the rootfs or into a mount.
struct Restorer<'a> {
    store: &'a BlockStore,
    root: Dir,
    dev: u64,
    old: &'a StatCache,
    trees: HashMap<BlockHash, Tree>,
    staged: HashMap<Vec<u8>, Staged>,
    staging: Dir,
    stats: RestoreStats,
    new_cache: StatCache,
    /// Files written and directories whose entries changed (paths relative to
    /// the root, "" the root itself): fsynced at the end (a `syncfs` would
    /// also flush everything else dirty on the filesystem).
    touched: std::collections::BTreeSet<Vec<u8>>,
    progress: &'a Reporter,
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}

fn kind_of(st: &Stat) -> EntryKind {
    EntryKind::from_mode(st.mode())
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

fn at(rel: &[u8]) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io { path: PathBuf::from(os(rel)), source }
}

/// `(parent, name)` of a relative path.
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

/// The extents a file's current content would have: capture's cutting,
/// hashing without storing.
fn current_extents(file: &File, size: u64) -> io::Result<Vec<Extent>> {
    if size <= CHUNK_MIN as u64 {
        let data = read_small(file, size)?;
        return Ok(if data.is_empty() { Vec::new() } else { vec![Extent { offset: 0, chunks: vec![(BlockHash::of(&data), data.len() as u32)] }] });
    }
    let mut extents = Vec::new();
    let mut buffers = Buffers::default();
    for (offset, len) in posix::data_regions(file, size)? {
        let mut chunks = Vec::new();
        for_each_chunk(file, offset, len, None, &mut buffers, |data, _| {
            chunks.push((BlockHash::of(data), data.len() as u32));
            Ok::<_, io::Error>(())
        })?;
        if !chunks.is_empty() {
            extents.push(Extent { offset, chunks });
        }
    }
    Ok(extents)
}

fn meta(e: &Entry) -> Meta<'_> {
    Meta { uid: e.uid, gid: e.gid, mode: e.mode, xattrs: &e.xattrs, atime: (e.atime.sec, e.atime.nsec), mtime: (e.mtime.sec, e.mtime.nsec) }
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

    /// The directory `rel` (a directory of the snapshot, made by now).
    fn dir(&self, rel: &[u8]) -> io::Result<Dir> {
        self.root.open_dir(if rel.is_empty() { OsStr::new(".") } else { os(rel) })
    }

    /// The attributes of `name` in `dir`, if it is the container's own (not
    /// gone, not a mount point, not on another file system).
    fn own(&self, dir: &Dir, name: &OsStr) -> Option<Stat> {
        dir.stat(name).ok().filter(|st| !dir.is_mount_point(st) && st.dev() == self.dev)
    }

    /// The files phase 1 looks at (a hardlink group once) and their bytes.
    fn count(&mut self, tree: &BlockHash, rel: &[u8], totals: &mut (u64, u64)) -> Result<(), RestoreError> {
        for entry in self.tree(tree)?.entries {
            let child = join(rel, &entry.name);
            match &entry.content {
                Content::Dir(sub) => self.count(sub, &child, totals)?,
                Content::File(_) if entry.link_group.as_ref().is_none_or(|g| g == &child) => {
                    totals.0 += 1;
                    totals.1 += entry.size;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Phase 1: stage the content of every file that differs. `dir` is the
    /// current directory at `rel`, if there is one of the container's own.
    fn stage(&mut self, tree: &BlockHash, rel: &[u8], dir: Option<&Dir>) -> Result<(), RestoreError> {
        for entry in self.tree(tree)?.entries {
            let child = join(rel, &entry.name);
            match &entry.content {
                Content::Dir(sub) => {
                    let subdir = dir.and_then(|d| d.open_dir(os(&entry.name)).ok());
                    self.stage(sub, &child, subdir.as_ref())?
                }
                Content::File(extents) => {
                    if entry.link_group.as_ref().is_some_and(|g| g != &child) {
                        continue; // linked to its group's first member in phase 2
                    }
                    let current = dir.and_then(|d| self.current_file(d, os(&entry.name)));
                    let mut counted = 0;
                    if !current.as_ref().is_some_and(|(file, st)| self.content_matches(&child, file, st, &entry, extents)) {
                        match current.and_then(|(file, st)| self.patch_plan(&child, &file, &st, &entry, extents)) {
                            Some(diffs) => self.stage_patch(&child, diffs, &mut counted)?,
                            None => self.stage_file(&child, &entry, extents, &mut counted)?,
                        }
                    }
                    self.progress.file_done(entry.size, counted);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The container's regular file `name` in `dir`, opened for reading.
    fn current_file(&self, dir: &Dir, name: &OsStr) -> Option<(File, Stat)> {
        self.own(dir, name).filter(Stat::is_file)?;
        let file = dir.open_read_noatime(name).ok()?;
        let st = beneath::stat_fd(file.as_fd()).ok()?;
        Some((file, st))
    }

    fn content_matches(&self, rel: &[u8], file: &File, st: &Stat, entry: &Entry, extents: &[Extent]) -> bool {
        if st.size() != entry.size {
            return false;
        }
        if st.nlink() > 1 && entry.link_group.is_none() {
            return false; // must become a file of its own: rewrite to break the link
        }
        match self.old.files.get(rel) {
            Some(c) if c.matches(st) => c.extents == extents,
            _ => current_extents(file, st.size()).is_ok_and(|cur| cur == extents),
        }
    }

    /// The chunks of the snapshot's version that the current file lacks at their
    /// offset, when patching is worth it: a snapshot version without holes, a
    /// file of its own, and less than half of it differing.
    fn patch_plan(&self, rel: &[u8], file: &File, st: &Stat, entry: &Entry, extents: &[Extent]) -> Option<Vec<(u64, BlockHash, u32)>> {
        if entry.size < PATCH_MIN_SIZE || entry.link_group.is_some() || st.nlink() != 1 {
            return None;
        }
        let current = match self.old.files.get(rel) {
            Some(c) if c.matches(st) => c.extents.clone(),
            _ => current_extents(file, st.size()).ok()?,
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

    fn staging_file(&self) -> Result<(OsString, File), RestoreError> {
        let name = OsString::from(format!("{}", self.staged.len()));
        let file = self.staging.create_file(&name, 0o600).map_err(|e| RestoreError::Io { path: PathBuf::from(STAGING_DIR).join(&name), source: e })?;
        Ok((name, file))
    }

    fn stage_patch(&mut self, rel: &[u8], diffs: Vec<(u64, BlockHash, u32)>, counted: &mut u64) -> Result<(), RestoreError> {
        let (name, file) = self.staging_file()?;
        let mut pieces = Vec::with_capacity(diffs.len());
        let mut patch_off = 0u64;
        for (file_off, hash, len) in diffs {
            let data = self.store.get(&hash).map_err(|source| RestoreError::Corrupt { path: String::from_utf8_lossy(rel).into_owned(), source })?;
            file.write_all_at(&data, patch_off).map_err(at(rel))?;
            pieces.push((file_off, patch_off, len));
            patch_off += len as u64;
            self.stats.bytes_written += len as u64;
            self.progress.add_bytes(len as u64);
            *counted += len as u64;
        }
        self.stats.files_written += 1;
        self.staged.insert(rel.to_vec(), Staged::Patch { patch: name, pieces });
        Ok(())
    }

    fn stage_file(&mut self, rel: &[u8], entry: &Entry, extents: &[Extent], counted: &mut u64) -> Result<(), RestoreError> {
        let (name, file) = self.staging_file()?;
        file.set_len(entry.size).map_err(at(rel))?;
        for extent in extents {
            let mut offset = extent.offset;
            for (hash, len) in &extent.chunks {
                let data = self.store.get(hash).map_err(|source| RestoreError::Corrupt { path: String::from_utf8_lossy(rel).into_owned(), source })?;
                file.write_all_at(&data, offset).map_err(at(rel))?;
                offset += *len as u64;
                self.stats.bytes_written += *len as u64;
                self.progress.add_bytes(*len as u64);
                *counted += *len as u64;
            }
        }
        self.stats.files_written += 1;
        self.staged.insert(rel.to_vec(), Staged::Whole(name));
        Ok(())
    }

    /// Removes `name` from `dir` (everything in it, never what is mounted).
    fn remove(&mut self, dir: &Dir, rel: &[u8], name: &OsStr) -> Result<(), RestoreError> {
        dir.remove(name).map_err(at(&join(rel, name.as_bytes())))?;
        self.stats.entries_removed += 1;
        self.touched.insert(rel.to_vec());
        Ok(())
    }

    /// The subdirectory `name` of `dir`, made if missing. A name the container
    /// turns into something else meanwhile is replaced, a few times at most.
    fn subdir(&mut self, dir: &Dir, rel: &[u8], name: &OsStr) -> Result<Option<Dir>, RestoreError> {
        let child = join(rel, name.as_bytes());
        for _ in 0..3 {
            match dir.open_dir(name) {
                Ok(sub) => return Ok(Some(sub)),
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => return Ok(None), // a mount point: left alone
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if beneath::is_moved(&e) => self.remove(dir, rel, name)?,
                Err(e) => return Err(at(&child)(e)),
            }
            // Made here, or by the container meanwhile: the next open tells.
            if dir.mkdir(name, 0o700).is_ok() {
                self.stats.entries_created += 1;
                self.touched.insert(rel.to_vec());
            }
        }
        dir.open_dir(name).map(Some).map_err(at(&child))
    }

    /// Phase 2: make directory `dir` (at `rel`) hold exactly the entries of `tree`.
    fn apply(&mut self, tree: &BlockHash, rel: &[u8], dir: &Dir) -> Result<(), RestoreError> {
        let tree = self.tree(tree)?;
        let mut wanted: HashMap<&[u8], &Entry> = HashMap::with_capacity(tree.entries.len());
        for e in &tree.entries {
            wanted.insert(&e.name, e);
        }
        for name in dir.names().map_err(at(rel))? {
            if rel.is_empty() && name == STAGING_DIR {
                continue;
            }
            let Some(st) = self.own(dir, &name) else { continue }; // a mount inside the container (a share): never touched
            let keep = wanted.get(name.as_bytes()).is_some_and(|e| e.kind == kind_of(&st));
            if !keep {
                self.remove(dir, rel, &name)?;
            }
        }
        for entry in &tree.entries {
            let name = os(&entry.name);
            let child = join(rel, &entry.name);
            let cur = match dir.stat(name) {
                Ok(st) if dir.is_mount_point(&st) || st.dev() != self.dev => continue,
                Ok(st) => Some(st),
                Err(_) => None,
            };
            match &entry.content {
                Content::Dir(sub) => {
                    let Some(subdir) = self.subdir(dir, rel, name)? else { continue };
                    self.apply(sub, &child, &subdir)?;
                    let st = subdir.stat_self().map_err(at(&child))?;
                    beneath::set_meta(subdir.as_fd(), &st, &meta(entry)).map_err(at(&child))?;
                    continue;
                }
                Content::File(extents) => {
                    match (&entry.link_group, self.staged.remove(&child)) {
                        (Some(group), _) if group != &child => {
                            let (first_rel, first_name) = split(group);
                            let first_dir = self.dir(first_rel).map_err(at(group))?;
                            let first_ino = first_dir.stat(os(first_name)).ok().map(|s| s.ino());
                            if cur.as_ref().map(|s| s.ino()) != first_ino || first_ino.is_none() {
                                self.remove(dir, rel, name)?;
                                first_dir.hard_link(os(first_name), dir, name).map_err(at(&child))?;
                                self.stats.entries_created += 1;
                                self.touched.insert(rel.to_vec());
                            }
                        }
                        (_, Some(Staged::Whole(staged))) => {
                            if cur.as_ref().is_some_and(|st| !st.is_file()) {
                                self.remove(dir, rel, name)?; // swapped for a directory meanwhile
                            }
                            self.staging.rename(&staged, dir, name).map_err(at(&child))?;
                            self.touched.insert(child.clone());
                            self.touched.insert(rel.to_vec());
                            if cur.is_none() {
                                self.stats.entries_created += 1;
                            }
                        }
                        (_, Some(Staged::Patch { patch, pieces })) => {
                            let from = self.staging.open_file(&patch, libc::O_RDONLY).map_err(at(&child))?;
                            let to = dir.open_file(name, libc::O_WRONLY).map_err(at(&child))?;
                            let mut buf = Vec::new();
                            for (file_off, patch_off, len) in pieces {
                                buf.resize(len as usize, 0);
                                from.read_exact_at(&mut buf, patch_off).map_err(at(&child))?;
                                to.write_all_at(&buf, file_off).map_err(at(&child))?;
                            }
                            to.set_len(entry.size).map_err(at(&child))?;
                            self.touched.insert(child.clone());
                        }
                        _ => {}
                    }
                    let st = self.set_meta(dir, &child, name, entry)?;
                    self.new_cache.files.insert(child, CachedFile::from_stat(&st, extents.clone(), entry.xattrs.clone()));
                    continue;
                }
                Content::Symlink(target) => {
                    let same = cur.as_ref().is_some_and(|st| st.is_symlink()) && dir.read_link(name).is_ok_and(|t| &t == target);
                    if !same {
                        self.remove(dir, rel, name)?;
                        dir.symlink(target, name).map_err(at(&child))?;
                        self.stats.entries_created += 1;
                    }
                }
                Content::Special => {
                    let same = cur.as_ref().is_some_and(|st| kind_of(st) == entry.kind && (st.rdev() == entry.rdev || !matches!(entry.kind, EntryKind::CharDev | EntryKind::BlockDev)));
                    if !same {
                        self.remove(dir, rel, name)?;
                        let fmt = match entry.kind {
                            EntryKind::Fifo => libc::S_IFIFO,
                            EntryKind::Socket => libc::S_IFSOCK,
                            EntryKind::CharDev => libc::S_IFCHR,
                            _ => libc::S_IFBLK,
                        };
                        dir.mknod(name, fmt | (entry.mode & 0o777), entry.rdev).map_err(at(&child))?;
                        self.stats.entries_created += 1;
                    }
                }
            }
            self.set_meta(dir, &child, name, entry)?;
        }
        Ok(())
    }

    /// Owner, then mode (a chown clears setuid), then xattrs, then times, on
    /// the file `name` itself (a symlink's own). Returns its attributes after.
    fn set_meta(&self, dir: &Dir, rel: &[u8], name: &OsStr, e: &Entry) -> Result<Stat, RestoreError> {
        let fd = dir.open_path(name).map_err(at(rel))?;
        let st = beneath::stat_fd(fd.as_fd()).map_err(at(rel))?;
        beneath::set_meta(fd.as_fd(), &st, &meta(e)).map_err(at(rel))?;
        beneath::stat_fd(fd.as_fd()).map_err(at(rel))
    }

    /// Flushes what the restore wrote.
    fn sync(&self) -> Result<(), RestoreError> {
        if self.touched.len() > SYNCFS_ABOVE {
            // Thousands of fsyncs cost more than one flush of the whole filesystem.
            // SAFETY: syncfs on a descriptor we own.
            if unsafe { libc::syncfs(self.root.as_fd().as_raw_fd()) } != 0 {
                return Err(at(b"")(io::Error::last_os_error()));
            }
            return Ok(());
        }
        for rel in &self.touched {
            // A path replaced or removed later in the walk is simply gone: its parent is synced.
            let synced = match self.dir(rel) {
                Ok(d) => d.sync(),
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => match self.root.open_file(os(rel), libc::O_RDONLY) {
                    Ok(f) => f.sync_all(),
                    Err(_) => Ok(()),
                },
                Err(_) => Ok(()),
            };
            synced.map_err(at(rel))?;
        }
        Ok(())
    }
}

/// Makes `rootfs` exactly the snapshot `root` (as made by capture). Returns what
/// was done and the stat cache of the restored state. Whatever is mounted
/// inside the rootfs, and the directories leading to it, stay as they are.
pub fn restore(store: &BlockStore, root: &BlockHash, rootfs: &Path, old: &StatCache) -> Result<(RestoreStats, StatCache), RestoreError> {
    restore_with(store, root, rootfs, old, &Reporter::default())
}

/// [`restore`], counting on `progress`: phases `scanning` (the snapshot's
/// trees read: the totals are then exact), `staging` (each file compared, and
/// written to the staging area when it differs: a file is done when found
/// equal or staged, its bytes as they are written, the rest when it ends),
/// `applying` (moved into place) and `syncing`.
pub fn restore_with(store: &BlockStore, root: &BlockHash, rootfs: &Path, old: &StatCache, progress: &Reporter) -> Result<(RestoreStats, StatCache), RestoreError> {
    progress.set_phase("scanning");
    std::fs::create_dir_all(rootfs).map_err(|source| RestoreError::Io { path: PathBuf::from("/"), source })?;
    let root_dir = Dir::open_root(rootfs).map_err(at(b""))?;
    let root_st = root_dir.stat_self().map_err(at(b""))?;
    let dev = root_st.dev();
    let staging_name = OsStr::new(STAGING_DIR);
    root_dir.remove(staging_name).map_err(at(STAGING_DIR.as_bytes()))?;
    root_dir.mkdir(staging_name, 0o700).map_err(at(STAGING_DIR.as_bytes()))?;
    let staging = root_dir.open_dir(staging_name).map_err(at(STAGING_DIR.as_bytes()))?;
    let mut r = Restorer {
        store,
        root: root_dir,
        dev,
        old,
        trees: HashMap::new(),
        staged: HashMap::new(),
        staging,
        stats: RestoreStats::default(),
        new_cache: StatCache::default(),
        touched: Default::default(),
        progress,
    };
    let wrapper = r.tree(root)?;
    let root_entry = wrapper.entries.first().cloned().ok_or(RestoreError::BadTree(*root))?;
    let Content::Dir(inner) = root_entry.content else { return Err(RestoreError::BadTree(*root)) };
    let started = std::time::Instant::now();
    let root_now = r.root.open_dir(OsStr::new(".")).map_err(at(b""))?;
    let mut totals = (0, 0);
    let staging = r.count(&inner, b"", &mut totals).and_then(|()| {
        progress.set_totals(totals.0, totals.1);
        progress.set_phase("staging");
        r.stage(&inner, b"", Some(&root_now))
    });
    if let Err(e) = staging {
        // Leave the container exactly as it was, the root's times included.
        let _ = r.root.remove(staging_name);
        let ts = |sec: i64, nsec: i64| libc::timespec { tv_sec: sec, tv_nsec: nsec };
        let times = [ts(root_st.atime(), root_st.atime_nsec()), ts(root_st.mtime(), root_st.mtime_nsec())];
        // SAFETY: valid descriptor, empty path and a two-element array.
        unsafe { libc::utimensat(r.root.as_fd().as_raw_fd(), c"".as_ptr(), times.as_ptr(), libc::AT_EMPTY_PATH) };
        return Err(e);
    }
    let staged = started.elapsed();
    progress.set_phase("applying");
    r.apply(&inner, b"", &root_now)?;
    r.root.remove(staging_name).map_err(at(STAGING_DIR.as_bytes()))?;
    let st = r.root.stat_self().map_err(at(b""))?;
    beneath::set_meta(r.root.as_fd(), &st, &meta(&root_entry)).map_err(at(b""))?;
    let applied = started.elapsed();
    r.touched.insert(Vec::new());
    progress.set_phase("syncing");
    r.sync()?;
    tracing::info!(?staged, ?applied, synced = ?started.elapsed(), stats = ?r.stats, "restore phases");
    Ok((r.stats, r.new_cache))
}

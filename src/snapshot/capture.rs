//! Snapshot capture: walk a root filesystem into content-addressed trees.
//!
//! Unchanged files (same inode, size, mtime, ctime as in the stat cache) reuse
//! their cached extents without being read; changed files are read by a few
//! worker threads, cut by FastCDC, hashed, compressed and packed. Trees are then
//! written bottom-up and the store committed: the caller records the snapshot
//! only after this returns (the record is the commit point).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::posix;
use super::statcache::{CachedFile, StatCache};
use super::tree::{Content, Entry, EntryKind, Extent, Timestamp, Tree};
use crate::store::{BlockHash, BlockStore, ObjectKind, StoreError};

/// FastCDC sizes: small enough that a rewritten 4 KiB page costs one 64 KiB
/// chunk, large enough to keep the index small.
pub const CHUNK_MIN: u32 = 16 * 1024;
pub const CHUNK_AVG: u32 = 64 * 1024;
pub const CHUNK_MAX: u32 = 256 * 1024;

/// Names never captured at a rootfs's top: the restore staging area.
pub const STAGING_DIR: &str = ".hoody-restore-staging";

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("root filesystem {0} does not exist")]
    RootMissing(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> CaptureError + '_ {
    move |source| CaptureError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CaptureStats {
    /// Logical size: the sum of the sizes of regular files.
    pub size_bytes: u64,
    /// Bytes this capture added to the store.
    pub new_bytes: u64,
    pub files: u64,
    /// Files actually read (not found unchanged in the stat cache).
    pub files_read: u64,
    pub bytes_read: u64,
}

pub struct Captured {
    pub root: BlockHash,
    pub stats: CaptureStats,
    /// The stat cache describing the captured state.
    pub cache: StatCache,
}

enum Pending {
    Ready,
    File(usize),
    Dir(Box<DirNode>),
}

struct DirNode {
    entries: Vec<(Entry, Pending)>,
}

struct FileJob {
    abs: PathBuf,
    rel: Vec<u8>,
    size: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Walker<'a> {
    store: &'a BlockStore,
    dev: u64,
    old: &'a StatCache,
    new: StatCache,
    jobs: Vec<FileJob>,
    links: HashMap<u64, Vec<u8>>,
    stats: CaptureStats,
}

fn ts(sec: i64, nsec: i64) -> Timestamp {
    Timestamp { sec, nsec: nsec as u32 }
}

impl Walker<'_> {
    fn walk(&mut self, abs: &Path, rel: &[u8]) -> Result<DirNode, CaptureError> {
        let mut names: Vec<_> = std::fs::read_dir(abs).map_err(at(abs))?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>().map_err(at(abs))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            if rel.is_empty() && name == STAGING_DIR {
                continue;
            }
            let path = abs.join(&name);
            let st = match std::fs::symlink_metadata(&path) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // vanished while walking
                Err(e) => return Err(at(&path)(e)),
            };
            if st.dev() != self.dev {
                continue; // another filesystem mounted inside (shares): not the container's
            }
            let child_rel = if rel.is_empty() { name.as_bytes().to_vec() } else { [rel, b"/", name.as_bytes()].concat() };
            let kind = EntryKind::from_mode(st.mode());
            // An unchanged file (same stat, ctime included) has unchanged xattrs.
            let cached = (kind == EntryKind::File).then(|| self.old.files.get(&child_rel)).flatten().filter(|c| c.matches(&st));
            let xattrs = match cached {
                Some(c) => c.xattrs.clone(),
                None => posix::xattrs(&path).map_err(at(&path))?,
            };
            let link_group = if kind != EntryKind::Dir && st.nlink() > 1 {
                Some(self.links.entry(st.ino()).or_insert_with(|| child_rel.clone()).clone())
            } else {
                None
            };
            let mut entry = Entry {
                name: name.as_bytes().to_vec(),
                kind,
                mode: st.mode() & 0o7777,
                uid: st.uid(),
                gid: st.gid(),
                size: if kind == EntryKind::File { st.size() } else { 0 },
                atime: ts(st.atime(), st.atime_nsec()),
                mtime: ts(st.mtime(), st.mtime_nsec()),
                rdev: if matches!(kind, EntryKind::CharDev | EntryKind::BlockDev) { st.rdev() } else { 0 },
                xattrs,
                link_group,
                content: Content::Special,
            };
            let pending = match kind {
                EntryKind::Dir => Pending::Dir(Box::new(self.walk(&path, &child_rel)?)),
                EntryKind::Symlink => {
                    entry.content = Content::Symlink(std::fs::read_link(&path).map_err(at(&path))?.as_os_str().as_bytes().to_vec());
                    Pending::Ready
                }
                EntryKind::File => {
                    self.stats.files += 1;
                    self.stats.size_bytes += st.size();
                    match cached {
                        Some(c) if c.extents.iter().all(|e| e.chunks.iter().all(|(h, _)| self.store.contains(h))) => {
                            entry.content = Content::File(c.extents.clone());
                            self.new.files.insert(child_rel, c.clone());
                            Pending::Ready
                        }
                        _ => {
                            self.jobs.push(FileJob { abs: path, rel: child_rel, size: st.size(), xattrs: entry.xattrs.clone() });
                            Pending::File(self.jobs.len() - 1)
                        }
                    }
                }
                _ => Pending::Ready,
            };
            entries.push((entry, pending));
        }
        Ok(DirNode { entries })
    }
}

/// Reads one file into the store: `(extents, stat it was read at)`. Retried when
/// the file changes while being read, so a capture never holds a torn file
/// that it could have noticed.
fn read_file(store: &BlockStore, job: &FileJob, new_bytes: &AtomicU64) -> Result<(Vec<Extent>, std::fs::Metadata), CaptureError> {
    let mut attempt = 0;
    loop {
        let file = open_noatime(&job.abs).map_err(at(&job.abs))?;
        let before = file.metadata().map_err(at(&job.abs))?;
        let extents = chunk_file(store, &file, before.size(), new_bytes).map_err(|e| match e {
            ChunkError::Io(source) => CaptureError::Io { path: job.abs.clone(), source },
            ChunkError::Store(s) => CaptureError::Store(s),
        })?;
        let after = file.metadata().map_err(at(&job.abs))?;
        let stable = before.mtime() == after.mtime() && before.mtime_nsec() == after.mtime_nsec() && before.size() == after.size();
        attempt += 1;
        if stable || attempt >= 3 {
            return Ok((extents, after));
        }
    }
}

/// Opens a file for reading without following a symlink or touching its atime.
pub(super) fn open_noatime(path: &Path) -> io::Result<File> {
    let open = |flags| std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path);
    match open(libc::O_NOFOLLOW | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(libc::O_NOFOLLOW),
        other => other,
    }
}

enum ChunkError {
    Io(io::Error),
    Store(StoreError),
}

/// Stores a file's blocks, remembering whether they compress: after two blocks
/// in a row that did not (media, archives), the rest of the file is stored raw
/// without trying, probing again every 32 blocks.
struct BlockSink<'a> {
    store: &'a BlockStore,
    new_bytes: &'a AtomicU64,
    raw_streak: u32,
    seen: u32,
}

impl BlockSink<'_> {
    fn put(&mut self, data: &[u8], chunks: &mut Vec<(BlockHash, u32)>) -> Result<(), ChunkError> {
        self.seen += 1;
        let try_compress = self.raw_streak < 2 || self.seen % 32 == 0;
        let p = self.store.put_maybe_compressed(ObjectKind::Block, data, try_compress).map_err(ChunkError::Store)?;
        self.raw_streak = if p.codec == crate::store::Codec::Raw && data.len() >= CHUNK_MIN as usize { self.raw_streak + 1 } else { 0 };
        self.new_bytes.fetch_add(p.stored_bytes, Ordering::Relaxed);
        chunks.push((p.hash, data.len() as u32));
        Ok(())
    }
}

/// The whole content of a file no larger than [`CHUNK_MIN`]: always one block.
pub(super) fn read_small(file: &File, size: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(size as usize);
    (&*file).read_to_end(&mut data)?;
    Ok(data)
}

/// FastCDC over the data region `offset..offset + len` of `file`.
pub(super) fn cut(file: &File, offset: u64, len: u64) -> io::Result<fastcdc::v2020::StreamCDC<std::io::Take<&File>>> {
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    Ok(fastcdc::v2020::StreamCDC::new(f.take(len), CHUNK_MIN, CHUNK_AVG, CHUNK_MAX))
}

/// Regions at least this large are cut on one thread while another hashes,
/// compresses and stores, so one big file does not run on a single core.
const PIPELINE_ABOVE: u64 = 16 << 20;

fn chunk_file(store: &BlockStore, file: &File, size: u64, new_bytes: &AtomicU64) -> Result<Vec<Extent>, ChunkError> {
    let mut sink = BlockSink { store, new_bytes, raw_streak: 0, seen: 0 };
    if size <= CHUNK_MIN as u64 {
        let data = read_small(file, size).map_err(ChunkError::Io)?;
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let mut chunks = Vec::new();
        sink.put(&data, &mut chunks)?;
        return Ok(vec![Extent { offset: 0, chunks }]);
    }
    let mut extents = Vec::new();
    for (offset, len) in posix::data_regions(file, size).map_err(ChunkError::Io)? {
        let cdc = cut(file, offset, len).map_err(ChunkError::Io)?;
        let cut_error = |e: fastcdc::v2020::Error| ChunkError::Io(io::Error::other(e.to_string()));
        let chunks = if len < PIPELINE_ABOVE {
            let mut chunks = Vec::new();
            for chunk in cdc {
                sink.put(&chunk.map_err(cut_error)?.data, &mut chunks)?;
            }
            chunks
        } else {
            std::thread::scope(|s| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(32);
                let sink = &mut sink;
                let storing = s.spawn(move || -> Result<Vec<(BlockHash, u32)>, ChunkError> {
                    let mut chunks = Vec::new();
                    for data in rx {
                        sink.put(&data, &mut chunks)?;
                    }
                    Ok(chunks)
                });
                let mut cut_result = Ok(());
                for chunk in cdc {
                    match chunk {
                        Ok(c) => {
                            if tx.send(c.data).is_err() {
                                break; // the storing side failed; its error is reported below
                            }
                        }
                        Err(e) => {
                            cut_result = Err(cut_error(e));
                            break;
                        }
                    }
                }
                drop(tx);
                let chunks = storing.join().expect("block storing thread")?;
                cut_result?;
                Ok::<_, ChunkError>(chunks)
            })?
        };
        if !chunks.is_empty() {
            extents.push(Extent { offset, chunks });
        }
    }
    Ok(extents)
}

fn assemble(store: &BlockStore, node: DirNode, results: &[OnceLock<Vec<Extent>>], new_bytes: &mut u64) -> Result<BlockHash, CaptureError> {
    let mut tree = Tree { entries: Vec::with_capacity(node.entries.len()) };
    for (mut entry, pending) in node.entries {
        match pending {
            Pending::Ready => {}
            Pending::File(i) => entry.content = Content::File(results[i].get().cloned().unwrap_or_default()),
            Pending::Dir(sub) => entry.content = Content::Dir(assemble(store, *sub, results, new_bytes)?),
        }
        tree.entries.push(entry);
    }
    let put = store.put(ObjectKind::Tree, &tree.encode())?;
    *new_bytes += put.stored_bytes;
    Ok(put.hash)
}

fn dir_entry(path: &Path, st: &std::fs::Metadata) -> Result<Entry, CaptureError> {
    Ok(Entry {
        name: Vec::new(),
        kind: EntryKind::Dir,
        mode: st.mode() & 0o7777,
        uid: st.uid(),
        gid: st.gid(),
        size: 0,
        atime: ts(st.atime(), st.atime_nsec()),
        mtime: ts(st.mtime(), st.mtime_nsec()),
        rdev: 0,
        xattrs: posix::xattrs(path).map_err(at(path))?,
        link_group: None,
        content: Content::Special,
    })
}

/// Captures `root` into `store`, reading only what changed since `old`.
pub fn capture(store: &BlockStore, root: &Path, old: &StatCache) -> Result<Captured, CaptureError> {
    let root_st = match std::fs::symlink_metadata(root) {
        Ok(st) if st.is_dir() => st,
        Ok(_) => return Err(CaptureError::RootMissing(root.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CaptureError::RootMissing(root.to_path_buf())),
        Err(e) => return Err(at(root)(e)),
    };
    let started = std::time::Instant::now();
    let mut walker = Walker { store, dev: root_st.dev(), old, new: StatCache::default(), jobs: Vec::new(), links: HashMap::new(), stats: CaptureStats::default() };
    let tree = walker.walk(root, b"")?;
    let walked = started.elapsed();

    let results: Vec<OnceLock<Vec<Extent>>> = (0..walker.jobs.len()).map(|_| OnceLock::new()).collect();
    let stats_of_read: Vec<OnceLock<std::fs::Metadata>> = (0..walker.jobs.len()).map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    let new_bytes = AtomicU64::new(0);
    let first_error: OnceLock<CaptureError> = OnceLock::new();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= walker.jobs.len() || first_error.get().is_some() {
                    return;
                }
                match read_file(store, &walker.jobs[i], &new_bytes) {
                    Ok((extents, st)) => {
                        let _ = results[i].set(extents);
                        let _ = stats_of_read[i].set(st);
                    }
                    Err(e) if matches!(&e, CaptureError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound) => {
                        // Deleted after the walk saw it: captured as empty, like a file truncated to 0.
                        let _ = results[i].set(Vec::new());
                    }
                    Err(e) => {
                        let _ = first_error.set(e);
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner() {
        return Err(e);
    }
    let read = started.elapsed();
    let mut stats = walker.stats;
    for (i, job) in walker.jobs.iter().enumerate() {
        stats.files_read += 1;
        stats.bytes_read += job.size;
        if let (Some(extents), Some(st)) = (results[i].get(), stats_of_read[i].get()) {
            walker.new.files.insert(job.rel.clone(), CachedFile::from_stat(st, extents.clone(), job.xattrs.clone()));
        }
    }
    let mut new_total = new_bytes.load(Ordering::Relaxed);
    let inner = assemble(store, tree, &results, &mut new_total)?;
    // The snapshot's root is a one-entry tree holding the root directory itself,
    // so its owner, mode, times and xattrs are captured and restored too.
    let mut root_entry = dir_entry(root, &root_st)?;
    root_entry.content = Content::Dir(inner);
    let wrapper = store.put(ObjectKind::Tree, &Tree { entries: vec![root_entry] }.encode())?;
    new_total += wrapper.stored_bytes;
    let root_hash = wrapper.hash;
    let assembled = started.elapsed();
    store.commit()?;
    stats.new_bytes = new_total;
    tracing::info!(?walked, ?read, ?assembled, committed = ?started.elapsed(), files_read = stats.files_read, "capture phases");
    Ok(Captured { root: root_hash, stats, cache: walker.new })
}

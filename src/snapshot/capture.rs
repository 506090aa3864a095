//! Snapshot capture: walk a root filesystem into content-addressed trees.
//!
//! Unchanged files (same inode, size, mtime, ctime as in the stat cache) reuse
//! their cached extents without being read; changed files are read by a few
//! worker threads, cut by FastCDC, hashed, compressed and packed. Trees are then
//! written bottom-up and the store committed: the caller records the snapshot
//! only after this returns (the record is the commit point).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use super::chunker::{for_each_chunk, Batch, Buffers, Hints, RegionCutter, CHUNK_MIN};
use super::posix;
use crate::beneath::{self, Dir, Stat};
use crate::progress::Reporter;
use super::statcache::{CachedFile, StatCache};
use super::tree::{Content, Entry, EntryKind, Extent, Timestamp, Tree};
use crate::store::{BlockHash, BlockStore, ObjectKind, StoreError};

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
    /// The directory the file was found in, held open: the file is opened from
    /// it by name, never by a path the container could re-point.
    dir: Arc<Dir>,
    name: OsString,
    rel: Vec<u8>,
    size: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The extents the file had at the last capture: most of a changed big
    /// file is usually unchanged, and is then recognised without cutting.
    old: Vec<Extent>,
}

struct Walker<'a> {
    store: &'a BlockStore,
    dev: u64,
    /// Entries of unchanged files move from here to `new`.
    old: StatCache,
    new: StatCache,
    /// Files to read, numbered: read by workers while the walk goes on.
    /// `None` once the walk is over: the closed queue lets the workers finish.
    jobs: Option<Sender<(usize, FileJob)>>,
    queued: usize,
    links: HashMap<u64, Vec<u8>>,
    stats: CaptureStats,
    /// Files found and their bytes, for the totals the walk will know at its end.
    progress: &'a Reporter,
}

fn ts(sec: i64, nsec: i64) -> Timestamp {
    Timestamp { sec, nsec: nsec as u32 }
}

impl<'a> Walker<'a> {
    /// Walks the open directory `dir` (at `rel` in the rootfs) by descriptors:
    /// a subdirectory is opened from `dir`, never by a path, so a container
    /// that swaps a directory for a symlink while the walk runs cannot lead it
    /// outside the rootfs, and nothing mounted inside (shares) is captured.
    fn walk(&mut self, dir: &Arc<Dir>, rel: &[u8]) -> Result<DirNode, CaptureError> {
        let here = |e| CaptureError::Io { path: PathBuf::from(OsStr::from_bytes(rel)), source: e };
        let mut names = dir.names().map_err(here)?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            if rel.is_empty() && name == STAGING_DIR {
                continue;
            }
            let child_rel = if rel.is_empty() { name.as_bytes().to_vec() } else { [rel, b"/", name.as_bytes()].concat() };
            let at_child = |e| CaptureError::Io { path: PathBuf::from(OsStr::from_bytes(&child_rel)), source: e };
            let st = match dir.stat(&name) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // vanished while walking
                Err(e) => return Err(at_child(e)),
            };
            if dir.is_mount_point(&st) || st.dev() != self.dev {
                continue; // another filesystem mounted inside (shares): not the container's
            }
            let kind = EntryKind::from_mode(st.mode());
            // A directory is opened first and described by what was opened: the
            // name may have been swapped since the stat.
            let (sub, st) = if kind == EntryKind::Dir {
                match dir.open_dir(&name) {
                    Ok(sub) => {
                        let st = sub.stat_self().map_err(at_child)?;
                        (Some(Arc::new(sub)), st)
                    }
                    Err(e) if beneath::is_moved(&e) => continue, // replaced while walking
                    Err(e) => return Err(at_child(e)),
                }
            } else {
                (None, st)
            };
            // An unchanged file (same stat, ctime included) has unchanged xattrs.
            let previous = if kind == EntryKind::File { self.old.files.remove(&child_rel) } else { None };
            let unchanged = previous.as_ref().is_some_and(|c| c.matches(&st));
            let xattrs = match (&previous, &sub) {
                (Some(c), _) if unchanged => c.xattrs.clone(),
                (_, Some(sub)) => beneath::xattrs_of(sub.as_fd()).map_err(at_child)?,
                _ => match dir.open_path(&name) {
                    Ok(fd) => beneath::xattrs_of(fd.as_fd()).map_err(at_child)?,
                    Err(e) if beneath::is_moved(&e) && e.raw_os_error() != Some(libc::ELOOP) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::ELOOP) && kind != EntryKind::Symlink => continue,
                    Err(e) => return Err(at_child(e)),
                },
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
                EntryKind::Dir => {
                    let sub = sub.expect("a directory was opened");
                    Pending::Dir(Box::new(self.walk(&sub, &child_rel)?))
                }
                EntryKind::Symlink => match dir.read_link(&name) {
                    Ok(target) => {
                        entry.content = Content::Symlink(target);
                        Pending::Ready
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINVAL)) => continue,
                    Err(e) => return Err(at_child(e)),
                },
                EntryKind::File => {
                    self.stats.files += 1;
                    self.stats.size_bytes += st.size();
                    self.progress.found(st.size());
                    match previous {
                        Some(c) if unchanged && self.store.contains_all(c.extents.iter().flat_map(|e| e.chunks.iter().map(|(h, _)| h))) => {
                            self.progress.file_done(st.size(), 0);
                            entry.content = Content::File(c.extents.clone());
                            self.new.files.insert(child_rel, c);
                            Pending::Ready
                        }
                        previous => {
                            // A changed file's old extents go with it: most of its chunks may be unchanged.
                            let old = previous.map(|c| c.extents).unwrap_or_default();
                            let job = FileJob { dir: dir.clone(), name, rel: child_rel, size: st.size(), xattrs: entry.xattrs.clone(), old };
                            Pending::File(self.queue(job))
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

impl Walker<'_> {
    fn queue(&mut self, job: FileJob) -> usize {
        let i = self.queued;
        self.queued += 1;
        // Fails only if every worker is gone, which only a panic does (and the scope re-raises it).
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send((i, job));
        }
        i
    }
}

/// Reads one file into the store: `(extents, stat it was read at)`. Retried when
/// the file changes while being read, so a capture never holds a torn file
/// that it could have noticed. The bytes it counted on `progress` are added to `counted`.
fn read_file(store: &BlockStore, job: &FileJob, buffers: &mut Buffers, new_bytes: &AtomicU64, progress: &Reporter, counted: &mut u64) -> Result<(Vec<Extent>, Stat), CaptureError> {
    let at = |source| CaptureError::Io { path: PathBuf::from(OsStr::from_bytes(&job.rel)), source };
    let mut attempt = 0;
    loop {
        let file = job.dir.open_read_noatime(&job.name).map_err(|e| {
            // Replaced by a symlink, a directory or a FIFO since the walk saw
            // it: as good as deleted (captured empty), never followed.
            if beneath::is_moved(&e) || e.raw_os_error() == Some(libc::EINVAL) {
                at(io::Error::from(io::ErrorKind::NotFound))
            } else {
                at(e)
            }
        })?;
        let before = beneath::stat_fd(file.as_fd()).map_err(at)?;
        let mut sink = BlockSink { store, new_bytes, raw_streak: 0, seen: 0, progress, counted: 0 };
        let chunked = chunk_file(&mut sink, &file, before.size(), &job.old, buffers);
        *counted += sink.counted;
        let extents = chunked.map_err(|e| match e {
            ChunkError::Io(source) => at(source),
            ChunkError::Store(s) => CaptureError::Store(s),
        })?;
        let after = beneath::stat_fd(file.as_fd()).map_err(at)?;
        let stable = before.mtime() == after.mtime() && before.mtime_nsec() == after.mtime_nsec() && before.size() == after.size();
        attempt += 1;
        if stable || attempt >= 3 {
            return Ok((extents, after));
        }
    }
}

enum ChunkError {
    Io(io::Error),
    Store(StoreError),
}

impl From<io::Error> for ChunkError {
    fn from(e: io::Error) -> Self {
        ChunkError::Io(e)
    }
}

/// Stores a file's blocks, remembering whether they compress: after two blocks
/// in a row that did not (media, archives), the rest of the file is stored raw
/// without trying, probing again every 32 blocks.
struct BlockSink<'a> {
    store: &'a BlockStore,
    new_bytes: &'a AtomicU64,
    raw_streak: u32,
    seen: u32,
    progress: &'a Reporter,
    /// Bytes counted on `progress` so far.
    counted: u64,
}

impl BlockSink<'_> {
    /// Stores `data` (hashing it unless `hash` is already known) and appends it to `chunks`.
    fn put(&mut self, data: &[u8], hash: Option<BlockHash>, chunks: &mut Vec<(BlockHash, u32)>) -> Result<(), ChunkError> {
        self.seen += 1;
        let try_compress = self.raw_streak < 2 || self.seen % 32 == 0;
        let hash = hash.unwrap_or_else(|| BlockHash::of(data));
        let p = self.store.put_hashed(ObjectKind::Block, data, hash, try_compress).map_err(ChunkError::Store)?;
        self.raw_streak = if p.codec == crate::store::Codec::Raw && data.len() >= CHUNK_MIN as usize { self.raw_streak + 1 } else { 0 };
        self.new_bytes.fetch_add(p.stored_bytes, Ordering::Relaxed);
        self.progress.add_bytes(data.len() as u64);
        self.counted += data.len() as u64;
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

/// Regions at least this large are cut on one thread while another hashes,
/// compresses and stores, so one big file does not run on a single core.
const PIPELINE_ABOVE: u64 = 16 << 20;

/// Batches cut ahead of the storing thread (plus one each side in hand).
const PIPELINE_DEPTH: usize = 2;

fn chunk_file(sink: &mut BlockSink<'_>, file: &File, size: u64, old: &[Extent], buffers: &mut Buffers) -> Result<Vec<Extent>, ChunkError> {
    if size <= CHUNK_MIN as u64 {
        let data = read_small(file, size)?;
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let mut chunks = Vec::new();
        sink.put(&data, None, &mut chunks)?;
        return Ok(vec![Extent { offset: 0, chunks }]);
    }
    let mut extents = Vec::new();
    for (offset, len) in posix::data_regions(file, size)? {
        // The old chunks help only where the region starts where it did.
        let hints = old.iter().find(|e| e.offset == offset).map(Hints::new);
        let chunks = if len < PIPELINE_ABOVE {
            let mut chunks = Vec::new();
            for_each_chunk(file, offset, len, hints, buffers, |data, hash| sink.put(data, hash, &mut chunks))?;
            chunks
        } else {
            store_pipelined(sink, RegionCutter::new(file, offset, len, hints), buffers)?
        };
        if !chunks.is_empty() {
            extents.push(Extent { offset, chunks });
        }
    }
    Ok(extents)
}

/// Cuts (and recognises unchanged chunks) on this thread while another
/// stores; buffers go back to the cutter, and in the end to `buffers`.
fn store_pipelined(sink: &mut BlockSink<'_>, mut cutter: RegionCutter<'_>, buffers: &mut Buffers) -> Result<Vec<(BlockHash, u32)>, ChunkError> {
    std::thread::scope(|s| {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Batch>(PIPELINE_DEPTH);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let storing = s.spawn(move || -> Result<Vec<(BlockHash, u32)>, ChunkError> {
            let mut chunks = Vec::new();
            for batch in full_rx {
                for cut in &batch.cuts {
                    sink.put(batch.data(cut), cut.hash, &mut chunks)?;
                }
                let _ = empty_tx.send(batch.buf);
            }
            Ok(chunks)
        });
        let mut taken = 0;
        let mut cut_result = Ok(());
        loop {
            let buf = match empty_rx.try_recv() {
                Ok(buf) => buf,
                Err(_) if taken < PIPELINE_DEPTH + 2 => {
                    taken += 1;
                    buffers.take()
                }
                Err(_) => match empty_rx.recv() {
                    Ok(buf) => buf,
                    Err(_) => break, // the storing side failed; its error is reported below
                },
            };
            match cutter.next_batch(buf) {
                Ok(batch) if batch.cuts.is_empty() => {
                    buffers.give(batch.buf);
                    break;
                }
                Ok(batch) => {
                    if full_tx.send(batch).is_err() {
                        break; // the storing side failed
                    }
                }
                Err(e) => {
                    cut_result = Err(ChunkError::Io(e));
                    break;
                }
            }
        }
        drop(full_tx);
        let stored = storing.join().expect("block storing thread");
        empty_rx.try_iter().for_each(|buf| buffers.give(buf));
        let chunks = stored?;
        cut_result?;
        Ok(chunks)
    })
}

fn assemble(store: &BlockStore, node: DirNode, results: &mut [Vec<Extent>], new_bytes: &mut u64) -> Result<BlockHash, CaptureError> {
    let mut tree = Tree { entries: Vec::with_capacity(node.entries.len()) };
    for (mut entry, pending) in node.entries {
        match pending {
            Pending::Ready => {}
            Pending::File(i) => entry.content = Content::File(std::mem::take(&mut results[i])),
            Pending::Dir(sub) => entry.content = Content::Dir(assemble(store, *sub, results, new_bytes)?),
        }
        tree.entries.push(entry);
    }
    let put = store.put(ObjectKind::Tree, &tree.encode())?;
    *new_bytes += put.stored_bytes;
    Ok(put.hash)
}

fn dir_entry(dir: &Dir, st: &Stat) -> Result<Entry, CaptureError> {
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
        xattrs: beneath::xattrs_of(dir.as_fd()).map_err(|source| CaptureError::Io { path: PathBuf::from("/"), source })?,
        link_group: None,
        content: Content::Special,
    })
}

/// A file read: its number, its job, and its extents with the stat they were
/// read at (`None`: deleted after the walk saw it, captured as empty).
type FileRead = (usize, FileJob, Option<(Vec<Extent>, Stat)>);

/// Reads the queued files on a few worker threads until the queue closes.
fn read_files(store: &BlockStore, queue: Receiver<(usize, FileJob)>, new_bytes: &AtomicU64, progress: &Reporter) -> Result<Vec<FileRead>, CaptureError> {
    let queue = Mutex::new(queue);
    let first_error: OnceLock<CaptureError> = OnceLock::new();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8);
    let done: Vec<FileRead> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    let mut buffers = Buffers::default();
                    loop {
                        let Ok((i, job)) = queue.lock().expect("job queue").recv() else { return done };
                        if first_error.get().is_some() {
                            continue; // drain the queue so the walk is not held up
                        }
                        let mut counted = 0;
                        let read = read_file(store, &job, &mut buffers, new_bytes, progress, &mut counted);
                        progress.file_done(job.size, counted);
                        match read {
                            Ok(read) => done.push((i, job, Some(read))),
                            Err(CaptureError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => done.push((i, job, None)),
                            Err(e) => {
                                let _ = first_error.set(e);
                            }
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("file reading thread")).collect()
    });
    match first_error.into_inner() {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Captures `root` into `store`, reading only what changed since `old`. The old
/// cache is consumed: its entries move into the new one rather than being copied.
pub fn capture(store: &BlockStore, root: &Path, old: StatCache) -> Result<Captured, CaptureError> {
    capture_with(store, root, old, &Reporter::default())
}

/// [`capture`], counting on `progress`: phases `scanning` (the walk, files
/// read meanwhile), `reading` (the walk is over, files still being read) and
/// `storing` (trees written, store committed); a file is done when found
/// unchanged or read, its bytes as its blocks are stored. Until the walk ends
/// the totals are an estimate: the old stat cache's files and sizes when it
/// has any, else whatever the caller estimated (and at least what was found).
pub fn capture_with(store: &BlockStore, root: &Path, old: StatCache, progress: &Reporter) -> Result<Captured, CaptureError> {
    let dir = match Dir::open_root(root) {
        Ok(dir) => Arc::new(dir),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)) => return Err(CaptureError::RootMissing(root.to_path_buf())),
        Err(e) => return Err(at(root)(e)),
    };
    let root_st = dir.stat_self().map_err(at(root))?;
    // The walk holds a descriptor per directory with files still to read.
    let _ = crate::shares::syscalls::descriptor_budget();
    let started = std::time::Instant::now();
    if !old.files.is_empty() {
        progress.estimate(old.files.len() as u64, old.files.values().map(|c| c.size).sum());
    }
    progress.set_phase("scanning");
    let new_bytes = AtomicU64::new(0);
    let (jobs, queue) = std::sync::mpsc::channel();
    let mut walker = Walker { store, dev: root_st.dev(), new: StatCache::with_capacity(old.files.len()), old, jobs: Some(jobs), queued: 0, links: HashMap::new(), stats: CaptureStats::default(), progress };
    // Files are read while the walk goes on: the walk is mostly system calls on
    // one core, and the first files it finds (a big database) keep the others busy.
    let (tree, walked, read) = std::thread::scope(|s| {
        let reading = s.spawn(|| read_files(store, queue, &new_bytes, progress));
        let tree = walker.walk(&dir, b"");
        let walked = started.elapsed();
        walker.jobs = None;
        progress.set_totals(walker.stats.files, walker.stats.size_bytes);
        progress.set_phase("reading");
        (tree, walked, reading.join().expect("file reading threads"))
    });
    let tree = tree?;
    let mut results = vec![Vec::new(); walker.queued];
    let mut stats = walker.stats;
    for (i, job, outcome) in read? {
        stats.files_read += 1;
        stats.bytes_read += job.size;
        if let Some((extents, st)) = outcome {
            walker.new.files.insert(job.rel, CachedFile::from_stat(&st, extents.clone(), job.xattrs));
            results[i] = extents;
        }
    }
    let read = started.elapsed();
    progress.set_phase("storing");
    let mut new_total = new_bytes.load(Ordering::Relaxed);
    let inner = assemble(store, tree, &mut results, &mut new_total)?;
    // The snapshot's root is a one-entry tree holding the root directory itself,
    // so its owner, mode, times and xattrs are captured and restored too.
    let mut root_entry = dir_entry(&dir, &root_st)?;
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

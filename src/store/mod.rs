//! The node's content-addressed object store, shared by every container: file
//! blocks (cut by FastCDC) and trees, named by BLAKE3, zstd-compressed where that
//! helps, appended to large pack files. Millions of blocks are a few hundred
//! packs, not millions of files.
//!
//! Durability: `put` appends to the active pack (buffered) and makes the object
//! visible to this process at once; `commit` makes everything appended durable
//! (pack fsync, then index append and fsync). Callers reference objects from
//! catalog records only after `commit`: a block is referenced only once durable.

pub mod gc;
mod hash;
pub mod index;
pub mod pack;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use hash::{BlockHash, BlockHashState};
use index::Location;
pub use pack::{Codec, ObjectKind};
use pack::{PackWriter, RecordHeader, RECORD_HEADER};

/// Packs are sealed at this size so that GC rewrites stay granular.
pub const MAX_PACK_BYTES: u64 = 256 << 20;

/// zstd level for new objects: on 64 KiB blocks of the reference data, level 2
/// compresses nearly as well as 3 at the speed of 1, and keeps the store no
/// larger than restic's (level 1 was 0.5 % larger).
pub const ZSTD_LEVEL: i32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} is not in the store")]
    Missing(BlockHash),
    #[error("object {hash} is corrupt: {reason}")]
    Corrupt { hash: BlockHash, reason: String },
    #[error("store io: {0}")]
    Io(#[from] io::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

struct WriterState {
    pack: PackWriter,
    /// Appended but not yet in the on-disk index.
    pending: Vec<(BlockHash, Location)>,
    /// Bytes of the active pack known to be written to the file (not only buffered).
    flushed: u64,
}

pub struct BlockStore {
    packs: PathBuf,
    index: RwLock<HashMap<BlockHash, Location, BlockHashState>>,
    /// `None` in a read-only view (verify while the daemon runs).
    writer: Mutex<Option<WriterState>>,
    files: Mutex<HashMap<u32, Arc<File>>>,
    /// Writers (snapshot, restore, transfers) hold this shared; GC holds it
    /// exclusively, so it never removes a block an operation in flight relies
    /// on. Reached only through [`BlockStore::writing`] and [`BlockStore::collecting`].
    gate: Arc<tokio::sync::RwLock<()>>,
}

/// A writer's hold on the store (see [`BlockStore::writing`]); released on drop.
pub struct WritingGuard(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>);

/// GC's hold on the store (see [`BlockStore::collecting`]); released on drop.
pub struct CollectingGuard(#[allow(dead_code)] tokio::sync::OwnedRwLockWriteGuard<()>);

/// Cross-process exclusion between GC (exclusive) and `hoodyd verify` (shared),
/// held with `flock` on `<store>/gc.lock`.
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    fn take(dir: &Path, op: libc::c_int) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(crate::layout::PRIVATE_FILE).open(dir.join("gc.lock"))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(StoreLock { _file: file })
    }
    pub fn exclusive(dir: &Path) -> io::Result<Self> {
        Self::take(dir, libc::LOCK_EX)
    }
    pub fn shared(dir: &Path) -> io::Result<Self> {
        Self::take(dir, libc::LOCK_SH)
    }
}

fn pack_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.pack"))
}

fn index_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.idx"))
}

/// The ids of every pack in `dir`, ascending.
pub fn pack_ids(dir: &Path) -> io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name.strip_suffix(".pack").and_then(|n| n.parse::<u32>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// What `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Put {
    pub hash: BlockHash,
    /// Bytes added to the store (0 when the object was already there).
    pub stored_bytes: u64,
    /// How the object is stored (for a new object: whether compression paid).
    pub codec: Codec,
}

impl BlockStore {
    /// Opens the store in `dir` (`<data>/store`), loading every pack's index,
    /// rebuilding missing ones from their packs and recovering the active pack's
    /// tail (records made durable but not yet indexed; a torn record is cut).
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_mode(dir, false)
    }

    /// Opens a read-only view: indexes only, no recovery, no writes. Safe beside a
    /// running daemon (objects it has not committed yet are simply not visible).
    pub fn open_read_only(dir: &Path) -> io::Result<Self> {
        Self::open_mode(dir, true)
    }

    fn open_mode(dir: &Path, read_only: bool) -> io::Result<Self> {
        let packs = dir.join("packs");
        std::fs::create_dir_all(&packs)?;
        let ids = pack_ids(&packs)?;
        let mut map: HashMap<BlockHash, Location, BlockHashState> = HashMap::default();
        let mut active_end = None;
        for (i, &id) in ids.iter().enumerate() {
            let idx = index_path(&packs, id);
            let mut entries = match index::read_index(&idx, id) {
                Ok(e) => e,
                Err(_) if read_only => pack::scan(&pack_path(&packs, id), 0)?.0.iter().map(|(off, h)| (h.hash, location(id, *off, h))).collect(),
                Err(_) => {
                    let (found, _) = pack::scan(&pack_path(&packs, id), 0)?;
                    let entries: Vec<_> = found.iter().map(|(off, h)| (h.hash, location(id, *off, h))).collect();
                    index::write_index(&idx, &entries)?;
                    entries
                }
            };
            if i + 1 == ids.len() && !read_only {
                let indexed_end = entries.iter().map(|(_, l)| l.offset + RECORD_HEADER as u64 + l.stored_len as u64).max().unwrap_or(0);
                let (tail, end) = pack::scan(&pack_path(&packs, id), indexed_end)?;
                let recovered: Vec<_> = tail.iter().map(|(off, h)| (h.hash, location(id, *off, h))).collect();
                if !recovered.is_empty() {
                    index::append_index(&idx, &recovered)?;
                    entries.extend(recovered);
                }
                active_end = Some(end.max(indexed_end));
            }
            for (hash, loc) in entries {
                map.entry(hash).or_insert(loc);
            }
        }
        let writer = if read_only {
            None
        } else {
            let active = ids.last().copied().unwrap_or(1);
            let pack = PackWriter::open(&pack_path(&packs, active), active, active_end)?;
            let flushed = pack.size();
            Some(WriterState { pack, pending: Vec::new(), flushed })
        };
        Ok(BlockStore {
            packs,
            index: RwLock::new(map),
            writer: Mutex::new(writer),
            files: Mutex::new(HashMap::new()),
            gate: Default::default(),
        })
    }

    /// The right to add blocks and rely on the ones present while it is held
    /// (shared with other writers, excluding GC); it can move into a blocking job.
    pub async fn writing(&self) -> WritingGuard {
        WritingGuard(self.gate.clone().read_owned().await)
    }

    /// The right to delete what no live root reaches (GC): no writer runs while it is held.
    pub async fn collecting(&self) -> CollectingGuard {
        CollectingGuard(self.gate.clone().write_owned().await)
    }

    pub fn packs_dir(&self) -> &Path {
        &self.packs
    }

    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.index.read().expect("index lock").contains_key(hash)
    }

    /// Whether the store holds every one of `hashes` (one lock for them all).
    pub fn contains_all<'a>(&self, mut hashes: impl Iterator<Item = &'a BlockHash>) -> bool {
        let index = self.index.read().expect("index lock");
        hashes.all(|h| index.contains_key(h))
    }

    /// Which of `hashes` the store lacks (one lock, thousands of hashes).
    pub fn missing(&self, hashes: &[BlockHash]) -> Vec<BlockHash> {
        let index = self.index.read().expect("index lock");
        let mut seen = HashSet::new();
        hashes.iter().filter(|h| !index.contains_key(h) && seen.insert(**h)).copied().collect()
    }

    pub fn object_count(&self) -> usize {
        self.index.read().expect("index lock").len()
    }

    pub fn location(&self, hash: &BlockHash) -> Option<Location> {
        self.index.read().expect("index lock").get(hash).copied()
    }

    /// Every object and where it lives.
    pub fn objects(&self) -> Vec<(BlockHash, Location)> {
        self.index.read().expect("index lock").iter().map(|(h, l)| (*h, *l)).collect()
    }

    /// Stores `raw` (compressing it if that helps) unless already present.
    pub fn put(&self, kind: ObjectKind, raw: &[u8]) -> StoreResult<Put> {
        self.put_maybe_compressed(kind, raw, true)
    }

    /// `put`, skipping the compression attempt when the caller knows the data
    /// does not compress (the rest of a file whose blocks came out raw).
    pub fn put_maybe_compressed(&self, kind: ObjectKind, raw: &[u8], try_compress: bool) -> StoreResult<Put> {
        self.put_hashed(kind, raw, BlockHash::of(raw), try_compress)
    }

    /// `put_maybe_compressed` for a caller that hashed `raw` already (`hash`
    /// must be `BlockHash::of(raw)`): a present object costs one lookup.
    pub fn put_hashed(&self, kind: ObjectKind, raw: &[u8], hash: BlockHash, try_compress: bool) -> StoreResult<Put> {
        if let Some(loc) = self.location(&hash) {
            return Ok(Put { hash, stored_bytes: 0, codec: loc.codec });
        }
        let (codec, stored) = if try_compress { pack::encode_stored(raw, ZSTD_LEVEL) } else { (Codec::Raw, raw.to_vec()) };
        self.append(RecordHeader { kind, codec, stored_len: stored.len() as u32, raw_len: raw.len() as u32, hash }, &stored)
    }

    /// Accepts an object in its stored form (from a peer), verified before use.
    pub fn put_stored(&self, kind: ObjectKind, codec: Codec, stored: &[u8], raw_len: u32, hash: BlockHash) -> StoreResult<Put> {
        if let Some(loc) = self.location(&hash) {
            return Ok(Put { hash, stored_bytes: 0, codec: loc.codec });
        }
        pack::decode_stored(codec, stored, raw_len, &hash).map_err(|e| StoreError::Corrupt { hash, reason: e.to_string() })?;
        self.append(RecordHeader { kind, codec, stored_len: stored.len() as u32, raw_len, hash }, stored)
    }

    /// The writer, or an error in a read-only view.
    fn writer(&self) -> StoreResult<std::sync::MutexGuard<'_, Option<WriterState>>> {
        let w = self.writer.lock().expect("writer lock");
        if w.is_none() {
            return Err(StoreError::Io(io::Error::new(io::ErrorKind::PermissionDenied, "the store is open read-only")));
        }
        Ok(w)
    }

    fn append(&self, header: RecordHeader, stored: &[u8]) -> StoreResult<Put> {
        let mut guard = self.writer()?;
        let w = guard.as_mut().expect("checked by writer()");
        // Another thread may have stored the same object while we compressed.
        if let Some(loc) = self.location(&header.hash) {
            return Ok(Put { hash: header.hash, stored_bytes: 0, codec: loc.codec });
        }
        if w.pack.size() >= MAX_PACK_BYTES {
            self.rotate(w)?;
        }
        let offset = w.pack.append(&header, stored)?;
        let loc = location(w.pack.id, offset, &header);
        w.pending.push((header.hash, loc));
        self.index.write().expect("index lock").insert(header.hash, loc);
        Ok(Put { hash: header.hash, stored_bytes: (RECORD_HEADER + stored.len()) as u64, codec: header.codec })
    }

    fn commit_locked(&self, w: &mut WriterState) -> io::Result<()> {
        w.pack.sync()?;
        w.flushed = w.pack.size();
        if !w.pending.is_empty() {
            index::append_index(&index_path(&self.packs, w.pack.id), &w.pending)?;
            w.pending.clear();
        }
        Ok(())
    }

    fn rotate(&self, w: &mut WriterState) -> io::Result<()> {
        self.commit_locked(w)?;
        let next = w.pack.id + 1;
        w.pack = PackWriter::open(&pack_path(&self.packs, next), next, None)?;
        w.flushed = w.pack.size();
        Ok(())
    }

    /// Makes every object stored so far durable (pack first, then its index).
    pub fn commit(&self) -> StoreResult<()> {
        let mut guard = self.writer()?;
        Ok(self.commit_locked(guard.as_mut().expect("checked by writer()"))?)
    }

    /// Starts a new pack for what follows (GC writes survivors to fresh packs).
    pub fn start_new_pack(&self) -> StoreResult<u32> {
        let mut guard = self.writer()?;
        let w = guard.as_mut().expect("checked by writer()");
        self.rotate(w)?;
        Ok(w.pack.id)
    }

    /// The pack being appended to (`u32::MAX` in a read-only view: none).
    pub fn active_pack(&self) -> u32 {
        self.writer.lock().expect("writer lock").as_ref().map_or(u32::MAX, |w| w.pack.id)
    }

    fn file(&self, pack: u32) -> io::Result<Arc<File>> {
        let mut files = self.files.lock().expect("files lock");
        if let Some(f) = files.get(&pack) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(pack_path(&self.packs, pack))?);
        files.insert(pack, f.clone());
        Ok(f)
    }

    /// The object's stored form, its header checked against the index.
    pub fn get_stored(&self, hash: &BlockHash) -> StoreResult<(Location, Vec<u8>)> {
        let loc = self.location(hash).ok_or(StoreError::Missing(*hash))?;
        {
            let mut guard = self.writer.lock().expect("writer lock");
            if let Some(w) = guard.as_mut() {
                if loc.pack == w.pack.id && loc.offset + RECORD_HEADER as u64 + loc.stored_len as u64 > w.flushed {
                    w.pack.sync()?;
                    w.flushed = w.pack.size();
                }
            }
        }
        let file = self.file(loc.pack)?;
        let corrupt = |reason: String| StoreError::Corrupt { hash: *hash, reason };
        let (header, stored) = pack::read_record(&file, loc.offset).map_err(|e| corrupt(e.to_string()))?;
        if header.hash != *hash || header.stored_len != loc.stored_len {
            return Err(corrupt(format!("pack {} offset {} holds another record", loc.pack, loc.offset)));
        }
        Ok((loc, stored))
    }

    /// The object's raw bytes, verified against its hash.
    pub fn get(&self, hash: &BlockHash) -> StoreResult<Vec<u8>> {
        let (loc, stored) = self.get_stored(hash)?;
        pack::decode_stored(loc.codec, &stored, loc.raw_len, hash).map_err(|e| StoreError::Corrupt { hash: *hash, reason: e.to_string() })
    }

    /// Forgets cached pack handles (after GC replaced packs).
    fn drop_files(&self, packs: &[u32]) {
        let mut files = self.files.lock().expect("files lock");
        for p in packs {
            files.remove(p);
        }
    }

    /// Whether the store answers (for `/healthz`): its writer is usable, the
    /// active pack opens and starts with its magic, and the filesystem of the
    /// packs is not read-only. Blocking (a few syscalls).
    pub fn check(&self) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let active = {
            let guard = self.writer.lock().map_err(|_| io::Error::other("the store's writer panicked"))?;
            match guard.as_ref() {
                Some(w) => w.pack.id,
                None => return Err(io::Error::other("the store is open read-only")),
            }
        };
        let mut magic = [0u8; 8];
        File::open(pack_path(&self.packs, active))?.read_exact_at(&mut magic, 0)?;
        if &magic != pack::PACK_MAGIC {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("pack {active} does not start with the pack magic")));
        }
        let dir = std::ffi::CString::new(self.packs.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a valid path and a zeroed out-parameter of the right type.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(dir.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if st.f_flag & libc::ST_RDONLY != 0 {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        Ok(())
    }

    /// Total bytes of pack files.
    pub fn disk_bytes(&self) -> io::Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(&self.packs)? {
            total += entry?.metadata()?.len();
        }
        Ok(total)
    }
}

fn location(pack: u32, offset: u64, h: &RecordHeader) -> Location {
    Location { pack, offset, stored_len: h.stored_len, raw_len: h.raw_len, kind: h.kind, codec: h.codec }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_dedup_and_compression() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        let text = b"hello hoody ".repeat(1000);
        let first = store.put(ObjectKind::Block, &text).unwrap();
        assert!(first.stored_bytes > 0 && first.stored_bytes < text.len() as u64 / 4, "compressed: {first:?}");
        assert_eq!(store.put(ObjectKind::Block, &text).unwrap().stored_bytes, 0, "stored once");
        let mut random = vec![0u8; 10_000];
        blake3::Hasher::new().update(b"seed").finalize_xof().fill(&mut random);
        let r = store.put(ObjectKind::Block, &random).unwrap();
        assert_eq!(store.location(&r.hash).unwrap().codec, Codec::Raw, "incompressible kept raw");
        assert_eq!(store.get(&first.hash).unwrap(), text);
        assert_eq!(store.get(&r.hash).unwrap(), random);
        assert_eq!(store.missing(&[first.hash, BlockHash::of(b"nope"), BlockHash::of(b"nope")]), vec![BlockHash::of(b"nope")]);
    }

    #[test]
    fn survives_reopen_and_rebuilds_a_lost_index_from_packs() {
        let dir = tempfile::tempdir().unwrap();
        let hashes: Vec<_> = {
            let store = BlockStore::open(dir.path()).unwrap();
            let h = (0..100u32).map(|i| store.put(ObjectKind::Block, format!("block {i}").as_bytes()).unwrap().hash).collect();
            store.commit().unwrap();
            h
        };
        std::fs::remove_file(dir.path().join("packs/00000001.idx")).unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(store.get(h).unwrap(), format!("block {i}").as_bytes());
        }
    }

    #[test]
    fn durable_but_unindexed_records_are_recovered_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, torn) = {
            let store = BlockStore::open(dir.path()).unwrap();
            let kept = store.put(ObjectKind::Block, b"committed").unwrap().hash;
            store.commit().unwrap();
            let unindexed = store.put(ObjectKind::Block, b"synced but not indexed").unwrap().hash;
            // Make the pack durable without appending to the index: a crash between the two.
            let mut w = store.writer.lock().unwrap();
            w.as_mut().unwrap().pack.sync().unwrap();
            (kept, unindexed)
        };
        let pack = dir.path().join("packs/00000001.pack");
        let len = std::fs::metadata(&pack).unwrap().len();
        std::fs::OpenOptions::new().append(true).open(&pack).unwrap().set_len(len + 17).unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&kept).unwrap(), b"committed");
        assert_eq!(store.get(&torn).unwrap(), b"synced but not indexed");
        let after = store.put(ObjectKind::Block, b"after recovery").unwrap().hash;
        store.commit().unwrap();
        drop(store);
        let store = BlockStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&after).unwrap(), b"after recovery", "appends after the cut tail are readable");
    }

    #[test]
    fn stored_form_round_trips_and_bad_objects_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), dir);
        let src = BlockStore::open(a.path()).unwrap();
        let dst = BlockStore::open(b.path()).unwrap();
        let data = b"transfer me ".repeat(100);
        let h = src.put(ObjectKind::Block, &data).unwrap().hash;
        let (loc, stored) = src.get_stored(&h).unwrap();
        assert!(dst.put_stored(ObjectKind::Block, loc.codec, &stored, loc.raw_len, BlockHash::of(b"other")).is_err());
        assert!(!dst.contains(&BlockHash::of(b"other")));
        dst.put_stored(ObjectKind::Block, loc.codec, &stored, loc.raw_len, h).unwrap();
        assert_eq!(dst.get(&h).unwrap(), data);
    }

    #[test]
    fn a_flipped_byte_is_reported_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let h = {
            let store = BlockStore::open(dir.path()).unwrap();
            let h = store.put(ObjectKind::Block, &b"precious ".repeat(50)).unwrap().hash;
            store.commit().unwrap();
            h
        };
        let pack = dir.path().join("packs/00000001.pack");
        let mut bytes = std::fs::read(&pack).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        std::fs::write(&pack, bytes).unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        assert!(matches!(store.get(&h), Err(StoreError::Corrupt { .. })));
    }
}

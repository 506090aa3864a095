//! Garbage collection of the store: given the set of live objects (marked by the
//! caller from every snapshot root, under the store's exclusive gate), deletes
//! packs that hold nothing live and rewrites packs that are mostly garbage.
//!
//! Safe to kill at any point: survivors are written and committed to a new pack
//! before an old pack's index and then the pack itself are removed; a crash in
//! between leaves duplicates, which the next run removes.

use std::collections::{HashMap, HashSet};

use super::index::{self, Location};
use super::{pack_path, BlockHash, BlockStore, StoreResult, RECORD_HEADER};
use crate::progress::Reporter;

/// Packs whose live bytes are below this share of their size are rewritten.
pub const REWRITE_BELOW_LIVE_RATIO: f64 = 0.5;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub objects_removed: u64,
    pub bytes_freed: u64,
}

/// Reclaims every object not in `live`. The caller must hold [`super::CollectingGuard`] (`store.collecting()`).
pub fn collect(store: &BlockStore, live: &HashSet<BlockHash>) -> StoreResult<GcReport> {
    collect_with(store, live, &Reporter::default())
}

/// [`collect`], counting on `progress` (phase `sweeping`): files are the
/// sealed packs examined, bytes their sizes.
pub fn collect_with(store: &BlockStore, live: &HashSet<BlockHash>, progress: &Reporter) -> StoreResult<GcReport> {
    progress.set_phase("sweeping");
    progress.reset_done();
    // Seal the active pack so every pack examined is immutable from here on.
    store.start_new_pack()?;
    let active = store.active_pack();
    let mut by_pack: HashMap<u32, Vec<(BlockHash, Location)>> = HashMap::new();
    for (h, loc) in store.objects() {
        by_pack.entry(loc.pack).or_default().push((h, loc));
    }
    let mut report = GcReport::default();
    let mut sealed = Vec::new();
    for pack in super::pack_ids(store.packs_dir())? {
        if pack < active {
            let path = pack_path(store.packs_dir(), pack);
            sealed.push((pack, std::fs::metadata(&path)?.len(), path));
        }
    }
    progress.set_totals(sealed.len() as u64, sealed.iter().map(|(_, size, _)| size).sum());
    for (pack, size, path) in sealed {
        let entries = by_pack.remove(&pack).unwrap_or_default();
        let (keep, drop): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(h, _)| live.contains(h));
        let live_bytes: u64 = keep.iter().map(|(_, l)| RECORD_HEADER as u64 + l.stored_len as u64).sum();
        if !keep.is_empty() && (live_bytes as f64) >= size as f64 * REWRITE_BELOW_LIVE_RATIO {
            progress.file_done(size, 0);
            continue;
        }
        // Copy survivors to the active pack and make them durable first.
        let mut counted = 0;
        for (hash, _) in &keep {
            let (loc, stored) = store.get_stored(hash)?;
            store.relocate(*hash, loc, &stored)?;
            progress.add_bytes(stored.len() as u64);
            counted += stored.len() as u64;
        }
        store.commit()?;
        store.forget(&drop.iter().map(|(h, _)| *h).collect::<Vec<_>>(), pack);
        let _ = std::fs::remove_file(super::index_path(store.packs_dir(), pack));
        std::fs::remove_file(&path)?;
        store.drop_files(&[pack]);
        progress.file_done(size, counted);
        report.objects_removed += drop.len() as u64;
        report.bytes_freed += size.saturating_sub(live_bytes);
        if keep.is_empty() {
            report.packs_deleted += 1;
        } else {
            report.packs_rewritten += 1;
        }
    }
    Ok(report)
}

impl BlockStore {
    /// Appends an existing object again (GC survivors) and points the index at the copy.
    fn relocate(&self, hash: BlockHash, old: Location, stored: &[u8]) -> StoreResult<()> {
        let mut guard = self.writer()?;
        let w = guard.as_mut().expect("checked by writer()");
        let header = super::pack::RecordHeader { kind: old.kind, codec: old.codec, stored_len: old.stored_len, raw_len: old.raw_len, hash };
        let offset = w.pack.append(&header, stored)?;
        let loc = super::location(w.pack.id, offset, &header);
        w.pending.push((hash, loc));
        self.index.write().expect("index lock").insert(hash, loc);
        Ok(())
    }

    /// Drops index entries of `hashes` that still point into `pack`.
    fn forget(&self, hashes: &[BlockHash], pack: u32) {
        let mut index = self.index.write().expect("index lock");
        for h in hashes {
            if index.get(h).is_some_and(|l| l.pack == pack) {
                index.remove(h);
            }
        }
    }
}

/// Rewrites `pack`'s index from its pack (used by `verify --repair` and tests).
pub fn rebuild_index(store: &BlockStore, pack: u32) -> StoreResult<usize> {
    let (found, _) = super::pack::scan(&pack_path(store.packs_dir(), pack), 0)?;
    let entries: Vec<_> = found.iter().map(|(off, h)| (h.hash, super::location(pack, *off, h))).collect();
    index::write_index(&super::index_path(store.packs_dir(), pack), &entries)?;
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ObjectKind;

    #[test]
    fn reclaims_dead_objects_and_keeps_live_ones_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path()).unwrap();
        let blob = |i: u32| -> Vec<u8> { (0..20_000u32).map(|j| (j.wrapping_mul(31).wrapping_add(i * 7919) >> 3) as u8).collect() };
        let hashes: Vec<_> = (0..20).map(|i| store.put(ObjectKind::Block, &blob(i)).unwrap().hash).collect();
        store.commit().unwrap();
        let live: HashSet<_> = hashes[..3].iter().copied().collect();
        let before = store.disk_bytes().unwrap();
        let report = collect(&store, &live).unwrap();
        assert_eq!(report.objects_removed, 17);
        assert!(store.disk_bytes().unwrap() < before / 2, "space reclaimed: {report:?}");
        for h in &hashes[3..] {
            assert!(!store.contains(h));
        }
        drop(store);
        let store = BlockStore::open(dir.path()).unwrap();
        for (i, h) in hashes[..3].iter().enumerate() {
            assert_eq!(store.get(h).unwrap(), blob(i as u32));
        }
        assert!(!store.contains(&hashes[5]));
    }
}

//! Snapshots of containers on this node: create (frozen, incremental), restore
//! in place as a job, delete, expiry, garbage collection, and finishing
//! restores a crash interrupted.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hoody_api::model::*;
use hoody_api::io_reason;
use serde::{Deserialize, Serialize};

use super::jobs::{self, Handoff, JobInfo, Ticker};
use super::{Engine, EngineError};
use crate::catalog::{CatalogError, ContainerRecord, SnapshotRecord};
use crate::containers::ContainerStatus;
use crate::progress::Reporter;
use crate::snapshot::capture::{capture_with, CaptureError};
use crate::snapshot::freeze::{is_btrfs_subvolume, Frozen, SubvolumeSnapshot};
use crate::snapshot::restore::{restore, restore_with, RestoreError};
use crate::snapshot::statcache::StatCache;
use crate::ids::{now_unix, validate_alias};
use crate::layout::in_container;
use crate::store::{gc, BlockHash, BlockStore, StoreError};

/// How often expired snapshots are looked for.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(10);
/// How often garbage collection runs when snapshots went away.
pub const GC_INTERVAL: Duration = Duration::from_secs(60);

pub fn to_api(s: SnapshotRecord) -> Snapshot {
    Snapshot {
        alias: s.alias,
        id: s.id,
        container_id: s.container_id,
        mode: s.mode.as_str().to_string(),
        created_at: s.created_at,
        expires_at: s.expires_at,
        size_bytes: s.size_bytes,
        new_bytes: s.new_bytes,
    }
}

/// A restore in progress, journaled so a crash is finished at the next start.
#[derive(Debug, Serialize, Deserialize)]
struct RestoreJournal {
    container_id: String,
    alias: String,
    root: String,
}

/// An I/O failure at `path` as a client may read it: the path as the container
/// sees it (`/hoody/shares/x`), none when it is not in the container's `rootfs`.
fn public_io_error(rootfs: &Path, path: &Path, source: &std::io::Error) -> String {
    match in_container(rootfs, path) {
        Some(inside) => format!("{inside}: {}", io_reason(source)),
        None => io_reason(source),
    }
}

fn public_store_error(e: &StoreError) -> String {
    match e {
        StoreError::Io(io) => format!("store io: {}", io_reason(io)),
        other => other.to_string(),
    }
}

/// A capture failure for the client: no host path (the full error is logged).
fn public_capture_error(e: &CaptureError, rootfs: &Path) -> String {
    match e {
        CaptureError::RootMissing(_) => "the container's root filesystem does not exist".into(),
        CaptureError::Io { path, source } => public_io_error(rootfs, path, source),
        CaptureError::Store(e) => public_store_error(e),
    }
}

/// A restore failure for the client: no host path (the full error is logged).
fn public_restore_error(e: &RestoreError, rootfs: &Path) -> String {
    match e {
        RestoreError::Corrupt { path, source } => format!("snapshot data for {path} is unreadable: {}", public_store_error(source)),
        RestoreError::BadTree(hash) => format!("snapshot tree {hash} is missing or corrupt"),
        RestoreError::Io { path, source } => public_io_error(rootfs, path, source),
    }
}

impl Engine {
    fn statcache_path(&self, container: &str) -> PathBuf {
        self.layout.state().join("statcache").join(format!("{container}.bin"))
    }

    /// Where a snapshot marks the cgroup it froze, for a start after a kill to thaw it.
    pub(super) fn frozen_marks(&self) -> PathBuf {
        self.layout.state().join("frozen")
    }

    fn journal_path(&self, container: &str) -> PathBuf {
        self.layout.state().join("jobs").join(format!("restore-{container}.json"))
    }

    pub(super) async fn owned_snapshot(&self, container: &str, alias: &str) -> Result<SnapshotRecord, EngineError> {
        self.catalog.snapshot(container, alias).await?.ok_or_else(|| EngineError::not_found(format!("snapshot `{alias}` not found in container `{container}`")))
    }

    /// Removes a deleted container's snapshot records and stat cache.
    pub(super) async fn forget_snapshots(&self, container: &str) -> Result<(), CatalogError> {
        for s in self.catalog.snapshots_of(container).await? {
            self.catalog.delete_snapshot(container, &s.alias).await?;
        }
        let _ = std::fs::remove_file(self.statcache_path(container));
        self.gc_dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn unique_alias(&self, container: &str) -> Result<String, EngineError> {
        let f = time::macros::format_description!("snap-[year][month][day]-[hour][minute][second]");
        let base = time::OffsetDateTime::now_utc().format(&f).map_err(EngineError::internal)?;
        let mut alias = base.clone();
        let mut n = 2;
        while self.catalog.snapshot(container, &alias).await?.is_some() {
            alias = format!("{base}-{n}");
            n += 1;
        }
        Ok(alias)
    }

    pub(super) async fn snapshot_create(&self, who: &Principal, id: &str, req: CreateSnapshot) -> Result<SnapshotCreated, EngineError> {
        let c = self.owned_container(who, id).await?;
        if let Some(alias) = &req.alias {
            validate_alias(alias)?;
        }
        let expires = match req.expiry {
            Some(days) if !(days > 0.0 && days <= 36500.0) => return Err(EngineError::invalid("expiry", "`expiry` must be a number of days greater than 0")),
            Some(days) => Some(time::OffsetDateTime::now_utc() + time::Duration::seconds_f64(days * 86400.0)),
            None => None,
        };
        if c.status == ContainerStatus::Copying {
            return Err(EngineError::Conflict(format!("container `{id}` is copying")));
        }
        let lock = self.op_lock(id);
        let busy = lock.try_lock_owned().map_err(|_| EngineError::Conflict(format!("container `{id}` is busy with another snapshot or restore")))?;
        let alias = match req.alias {
            Some(a) => {
                if self.catalog.snapshot(id, &a).await?.is_some() {
                    return Err(EngineError::Conflict(format!("snapshot alias `{a}` already exists in this container")));
                }
                a
            }
            None => self.unique_alias(id).await?,
        };
        let cgroup = (c.status == ContainerStatus::Running).then(|| c.cgroup_path.clone()).flatten().map(PathBuf::from);
        // Until the walk has counted, the last snapshot's size is the best guess
        // of the total (capture improves it from the stat cache when it has one).
        let reporter = Arc::new(Reporter::new("waiting"));
        reporter.estimate(0, self.catalog.snapshots_of(id).await?.last().map_or(0, |s| s.size_bytes));
        let ticker = Ticker::spawn(self.catalog.clone(), id.to_string(), reporter.clone(), JobInfo::new("snapshot", Some(alias.clone())));
        let handoff = Handoff::default();
        let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
        let job = SnapshotJobParts {
            catalog: self.catalog.clone(),
            store: self.store.clone(),
            container: c,
            alias: alias.clone(),
            expires,
            server_id: self.node.id.clone(),
            cgroup,
            cache_path: self.statcache_path(id),
            mark: self.frozen_marks().join(id),
        };
        {
            let (handoff, ticker) = (handoff.clone(), ticker.clone());
            tokio::spawn(async move {
                let _busy = busy;
                let (catalog, container_id) = (job.catalog.clone(), job.container.id.clone());
                let result = job.run(reporter).await;
                ticker.stop().await;
                let waited = handoff.ending();
                // Answered by the request that still waits; else (a 202 went
                // out) the failure is the container's status message.
                let message = match &result {
                    Err(e) if !waited => Some(jobs::failure_message("snapshot", e)),
                    _ => None,
                };
                if let Err(e) = jobs::finish(&catalog, &container_id, message.clone()).await {
                    tracing::warn!(container = %container_id, error = %e, "could not clear a snapshot's progress");
                }
                if waited {
                    if let Err(Err(e)) = outcome_tx.send(result) {
                        // The request went away meanwhile (a client that hung up).
                        let _ = jobs::finish(&catalog, &container_id, Some(jobs::failure_message("snapshot", &e))).await;
                    }
                }
            });
        }
        match jobs::wait(&handoff, outcome_rx).await {
            Some(result) => result.map(SnapshotCreated::Done),
            None => {
                ticker.publish_now().await;
                let container = self.with_count(self.owned_container(who, id).await?).await?;
                Ok(SnapshotCreated::Running(Box::new(SnapshotJob { alias, done: false, container })))
            }
        }
    }

    pub(super) async fn snapshot_restore(&self, who: &Principal, id: &str, alias: &str) -> Result<RestoreOutcome, EngineError> {
        let c = self.owned_container(who, id).await?;
        let snap = self.owned_snapshot(id, alias).await?;
        if c.status == ContainerStatus::Copying {
            return Err(EngineError::Conflict(format!("container `{id}` is copying; restore it when the copy is done")));
        }
        let lock = self.op_lock(id);
        let busy = lock.clone().try_lock_owned().map_err(|_| EngineError::Conflict(format!("container `{id}` is busy with another snapshot or restore")))?;
        let root = BlockHash::from_hex(&snap.id).ok_or_else(|| EngineError::internal(format!("snapshot {alias} has a malformed id")))?;
        let journal = RestoreJournal { container_id: id.into(), alias: alias.into(), root: snap.id.clone() };
        let journal_path = self.journal_path(id);
        std::fs::create_dir_all(journal_path.parent().expect("jobs dir")).map_err(EngineError::internal)?;
        crate::durable::write_atomic(&journal_path, &serde_json::to_vec(&journal).map_err(EngineError::internal)?, 0o600).map_err(EngineError::internal)?;
        let reporter = Arc::new(Reporter::new("waiting"));
        reporter.estimate(0, snap.size_bytes);
        let ticker = Ticker::spawn(self.catalog.clone(), id.to_string(), reporter.clone(), JobInfo::new("restore", Some(alias.to_string())));
        let handoff = Handoff::default();

        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let store = self.store.clone();
        let rootfs = PathBuf::from(&c.rootfs_path);
        let public_root = rootfs.clone();
        let cache_path = self.statcache_path(id);
        let job = async move {
            // Waits for a garbage collection that runs (phase `waiting`).
            let gate = store.writing().await;
            tokio::task::spawn_blocking(move || {
                let _gate = gate;
                let result = restore_with(&store, &root, &rootfs, &StatCache::load(&cache_path), &reporter);
                if let Ok((_, cache)) = &result {
                    if let Err(e) = cache.save(&cache_path) {
                        tracing::warn!(error = %e, "could not save the stat cache after a restore");
                    }
                }
                result.map(|(stats, _)| stats)
            })
            .await
        };
        let engine_catalog = self.catalog.clone();
        let container_id = id.to_string();
        {
            let (handoff, ticker) = (handoff.clone(), ticker.clone());
            tokio::spawn(async move {
                let _busy = busy;
                let result = job.await.map_err(|e| RestoreError::Io { path: PathBuf::new(), source: std::io::Error::other(e.to_string()) }).and_then(|r| r);
                let message = match &result {
                    Ok(stats) => {
                        tracing::info!(container = %container_id, files_written = stats.files_written, removed = stats.entries_removed, "restore finished");
                        let _ = std::fs::remove_file(&journal_path);
                        None
                    }
                    Err(e) => {
                        tracing::error!(container = %container_id, error = %e, "restore failed");
                        // The journal is for a restore a crash cut off. This one is
                        // reported as failed and the user goes on working: redone
                        // at the next start, it would undo that work. A failure
                        // while applying leaves part of each tree, and says so.
                        let _ = std::fs::remove_file(&journal_path);
                        Some(format!("restore failed: {}", public_restore_error(e, &public_root)))
                    }
                };
                ticker.stop().await;
                let waited = handoff.ending();
                if let Err(e) = jobs::finish(&engine_catalog, &container_id, message.clone()).await {
                    tracing::warn!(container = %container_id, error = %e, "could not clear a restore's progress");
                }
                if waited {
                    let _ = done_tx.send(match message {
                        None => Ok(()),
                        Some(message) => Err(EngineError::Failed(message)),
                    });
                }
            });
        }
        let done = match jobs::wait(&handoff, done_rx).await {
            Some(result) => {
                result?;
                true
            }
            None => {
                ticker.publish_now().await;
                false
            }
        };
        let container = self.with_count(self.owned_container(who, id).await?).await?;
        Ok(RestoreOutcome { done, container, snapshot: to_api(snap) })
    }

    /// The restore journals, each with its path (`None`: a file that does
    /// not read as one, such as a journal whose writing a crash cut off).
    /// Outside recovery a restore may be writing or removing its own
    /// meanwhile: one that vanishes is not listed.
    fn restore_journals(&self) -> std::io::Result<Vec<(PathBuf, Option<RestoreJournal>)>> {
        let Ok(entries) = std::fs::read_dir(self.layout.state().join("jobs")) else { return Ok(Vec::new()) };
        let mut journals = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let bytes = match std::fs::read(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                read => read?,
            };
            journals.push((path, serde_json::from_slice::<RestoreJournal>(&bytes).ok()));
        }
        Ok(journals)
    }

    /// Re-runs restores that a crash cut off; a restore converges, so running it
    /// again completes it.
    pub(super) async fn finish_interrupted_restores(&self) -> anyhow::Result<()> {
        for (path, journal) in self.restore_journals()? {
            let Some(journal) = journal else {
                std::fs::remove_file(&path)?;
                continue;
            };
            let Some(c) = self.catalog.container(&journal.container_id).await? else {
                std::fs::remove_file(&path)?;
                continue;
            };
            let Some(root) = BlockHash::from_hex(&journal.root) else { continue };
            tracing::info!(container = %c.id, alias = %journal.alias, "finishing a restore interrupted by a restart");
            let store = self.store.clone();
            let cache_path = self.statcache_path(&c.id);
            let rootfs = PathBuf::from(&c.rootfs_path);
            let result = tokio::task::spawn_blocking(move || {
                let (_, cache) = restore(&store, &root, &rootfs, &StatCache::load(&cache_path))?;
                let _ = cache.save(&cache_path);
                Ok::<_, RestoreError>(())
            })
            .await?;
            let message = result.as_ref().err().map(|e| format!("restore failed: {e}"));
            if let Err(e) = &result {
                tracing::error!(container = %c.id, error = %e, "could not finish the interrupted restore");
            }
            std::fs::remove_file(&path)?;
            jobs::finish(&self.catalog, &c.id, message).await?;
        }
        Ok(())
    }

    /// Clears the progress a job a crash cut off left on this node's
    /// containers (after the interrupted restores were finished): a snapshot
    /// is simply not there, and the status message says so.
    pub(super) async fn clear_interrupted_jobs(&self) -> anyhow::Result<()> {
        for c in self.catalog.containers_on(&self.node.id).await? {
            if let Some(p) = &c.progress {
                let job = if p.job.is_empty() { "job" } else { p.job.as_str() };
                tracing::info!(container = %c.id, job, "clearing the progress of a job a restart cut off");
                jobs::finish(&self.catalog, &c.id, Some(format!("{job} interrupted by a restart of the daemon; nothing was recorded"))).await?;
            }
        }
        Ok(())
    }

    /// Deletes expired snapshots of this node's containers; returns how many.
    pub async fn expire_snapshots(&self) -> Result<u64, CatalogError> {
        let now = now_unix();
        let mut n = 0;
        for s in self.catalog.all_snapshots().await? {
            if s.server_id == self.node.id && s.expires_unix.is_some_and(|t| t <= now) && self.catalog.delete_snapshot(&s.container_id, &s.alias).await? {
                tracing::info!(container = %s.container_id, alias = %s.alias, "snapshot expired");
                n += 1;
            }
        }
        if n > 0 {
            self.gc_dirty.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// Expires snapshots, then marks from every snapshot root and sweeps, with the
    /// store's gate held exclusively so no operation in flight loses a block.
    /// Its progress shows in [`Engine::gc_state`] (`GET /admin/gc`).
    pub async fn gc_now(&self) -> anyhow::Result<GcSummary> {
        let expired = self.expire_snapshots().await?;
        let _gate = self.store.collecting().await;
        let reporter = Arc::new(Reporter::new("marking"));
        let info = JobInfo::new("gc", None);
        let started = std::time::Instant::now();
        self.gc_state.lock().expect("gc state").running = Some((reporter.clone(), info.clone(), Default::default()));
        let result = self.collect_garbage_now(expired, reporter.clone()).await;
        let mut state = self.gc_state.lock().expect("gc state");
        state.running = None;
        state.last = Some(GcRun {
            started_at: info.started_at.clone(),
            finished_at: crate::ids::now(),
            seconds: started.elapsed().as_secs_f64(),
            summary: result.as_ref().ok().cloned(),
            error: result.as_ref().err().map(|e| format!("{e:#}")),
            progress: jobs::progress_of(&reporter.sample(), 0, &info).into(),
        });
        result
    }

    /// The garbage collection running now, and the last one.
    pub(super) fn gc_status(&self) -> GcStatus {
        let mut state = self.gc_state.lock().expect("gc state");
        let last = state.last.clone();
        let progress = state.running.as_mut().map(|(reporter, info, meter)| {
            let sample = reporter.sample();
            jobs::progress_of(&sample, meter.rate(sample.bytes_done), info).into()
        });
        GcStatus { running: progress.is_some(), progress, last }
    }

    async fn collect_garbage_now(&self, expired: u64, reporter: Arc<Reporter>) -> anyhow::Result<GcSummary> {
        self.gc_dirty.store(false, Ordering::Relaxed);
        let mut roots: Vec<BlockHash> = self.catalog.all_snapshots().await?.iter().filter(|s| s.server_id == self.node.id).filter_map(|s| BlockHash::from_hex(&s.id)).collect();
        // A restore a kill cut off is finished at the next start, from its
        // tree, whose snapshot may be gone since: that tree is live too.
        // GC must never delete what it could not see: an unreadable journal stops it.
        roots.extend(self.restore_journals()?.into_iter().filter_map(|(_, journal)| BlockHash::from_hex(&journal?.root)));
        let store = self.store.clone();
        let lock_dir = self.layout.store();
        let report = tokio::task::spawn_blocking(move || -> anyhow::Result<gc::GcReport> {
            let _lock = crate::store::StoreLock::exclusive(&lock_dir)?;
            let live = crate::snapshot::reachable::reachable(&store, &roots, &reporter)?;
            Ok(gc::collect_with(&store, &live, &reporter)?)
        })
        .await??;
        tracing::info!(?report, expired, "garbage collected");
        Ok(GcSummary {
            snapshots_expired: expired,
            objects_removed: report.objects_removed,
            packs_deleted: report.packs_deleted,
            packs_rewritten: report.packs_rewritten,
            bytes_freed: report.bytes_freed,
        })
    }

    /// Expiry every [`EXPIRY_INTERVAL`], GC every [`GC_INTERVAL`] when there is garbage.
    pub fn spawn_housekeeping(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut ticks: u64 = 0;
            loop {
                tokio::time::sleep(EXPIRY_INTERVAL).await;
                ticks += 1;
                if let Err(e) = engine.expire_snapshots().await {
                    tracing::warn!(error = %e, "snapshot expiry failed");
                }
                if ticks % (GC_INTERVAL.as_secs() / EXPIRY_INTERVAL.as_secs()).max(1) == 0 && engine.gc_dirty.load(Ordering::Relaxed) {
                    if let Err(e) = engine.gc_now().await {
                        tracing::warn!(error = %e, "garbage collection failed");
                    }
                }
            }
        })
    }
}

/// Garbage collection on this node: the run going on (its counters, what it
/// is, a rate meter for `GET /admin/gc`) and the last one that ended.
#[derive(Default)]
pub(super) struct GcState {
    running: Option<(Arc<Reporter>, JobInfo, crate::progress::RateMeter)>,
    last: Option<GcRun>,
}

/// What a snapshot job needs, moved into its task.
struct SnapshotJobParts {
    catalog: crate::catalog::Catalog,
    store: Arc<BlockStore>,
    container: ContainerRecord,
    alias: String,
    expires: Option<time::OffsetDateTime>,
    server_id: String,
    cgroup: Option<PathBuf>,
    cache_path: PathBuf,
    mark: PathBuf,
}

impl SnapshotJobParts {
    /// Captures, then records the snapshot (the commit point), then saves the
    /// stat cache. Waits first for a garbage collection that runs (phase `waiting`).
    async fn run(self, reporter: Arc<Reporter>) -> Result<Snapshot, EngineError> {
        let c = &self.container;
        let id = c.id.as_str();
        // Held until the record is committed: GC never sees these blocks unreferenced.
        let gate = self.store.writing().await;
        reporter.set_phase(if self.cgroup.is_some() { "freezing" } else { "scanning" });
        let captured = {
            let store = self.store.clone();
            let rootfs = PathBuf::from(&c.rootfs_path);
            let (cgroup, cache_path, mark) = (self.cgroup.clone(), self.cache_path.clone(), self.mark.clone());
            tokio::task::spawn_blocking(move || consistent_capture(&store, &rootfs, cgroup.as_deref(), &mark, StatCache::load(&cache_path), &reporter))
                .await
                .map_err(EngineError::internal)?
        };
        let captured = captured.map_err(|e| match e {
            SnapshotFailure::Capture(CaptureError::RootMissing(p)) => {
                tracing::warn!(container = %id, rootfs = %p.display(), "snapshot of a container whose root filesystem is missing");
                EngineError::Conflict("the container's root filesystem does not exist".into())
            }
            SnapshotFailure::Capture(e) => EngineError::failed(format!("snapshot failed: {}", public_capture_error(&e, Path::new(&c.rootfs_path))), &e),
            SnapshotFailure::Freeze(e) => EngineError::failed(format!("could not freeze the container's processes: {}", io_reason(&e)), &e),
        })?;
        let created = time::OffsetDateTime::now_utc();
        let record = SnapshotRecord {
            alias: self.alias.clone(),
            id: captured.root.to_hex(),
            container_id: id.to_string(),
            account_id: c.account_id.clone(),
            server_id: self.server_id.clone(),
            mode: crate::catalog::SnapshotMode::Stateless,
            created_at: crate::ids::format_time(created),
            expires_at: self.expires.map(crate::ids::format_time),
            expires_unix: self.expires.map(|t| t.unix_timestamp()),
            size_bytes: captured.stats.size_bytes,
            new_bytes: captured.stats.new_bytes,
            record_version: crate::catalog::RECORD_VERSION,
        };
        self.catalog.create_snapshot(&record).await?;
        drop(gate);
        let path = self.cache_path.clone();
        let cache = captured.cache;
        tokio::task::spawn_blocking(move || {
            let saved = cache.save(&path);
            cache.drop_in_background();
            saved
        })
        .await.map_err(EngineError::internal)?.map_err(EngineError::internal)?;
        tracing::info!(container = %id, alias = %record.alias, files_read = captured.stats.files_read, new_bytes = record.new_bytes, "snapshot created");
        Ok(to_api(record))
    }
}

enum SnapshotFailure {
    Capture(CaptureError),
    Freeze(std::io::Error),
}

/// Captures a consistent image: processes frozen for as short a time as possible
/// (only around a btrfs subvolume snapshot when the rootfs is one).
fn consistent_capture(store: &BlockStore, rootfs: &std::path::Path, cgroup: Option<&std::path::Path>, mark: &std::path::Path, cache: StatCache, progress: &Reporter) -> Result<crate::snapshot::capture::Captured, SnapshotFailure> {
    if !rootfs.is_dir() {
        return Err(SnapshotFailure::Capture(CaptureError::RootMissing(rootfs.to_path_buf())));
    }
    let frozen = match cgroup {
        Some(cg) if cg.is_dir() => Some(Frozen::freeze(cg, mark).map_err(SnapshotFailure::Freeze)?),
        _ => None,
    };
    if is_btrfs_subvolume(rootfs) {
        let sub = SubvolumeSnapshot::create(rootfs).map_err(|e| SnapshotFailure::Capture(CaptureError::Io { path: rootfs.to_path_buf(), source: e }))?;
        drop(frozen);
        return capture_with(store, &sub.path, cache, progress).map_err(SnapshotFailure::Capture);
    }
    let captured = capture_with(store, rootfs, cache, progress).map_err(SnapshotFailure::Capture);
    drop(frozen);
    captured
}


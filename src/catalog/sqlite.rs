//! The embedded catalog: one SQLite table of keys and values in WAL mode.
//!
//! SQLite rather than redb because administrative verbs (`hoodyd token create`,
//! `hoodyd verify`) must read and write the catalog while the daemon runs, and
//! SQLite arbitrates several processes safely; see docs/DESIGN.md.
//!
//! Revisions live in the file (a store-wide counter in `meta`, each key's
//! `revision`). Watches and leases live in this process: a watch replays from
//! a bounded in-memory history of this process's writes (older → `Resync`;
//! another process's writes, such as an admin verb's, reach no watcher), and
//! leases die with the process, so keys left from a previous run's leases are
//! deleted at open.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::broadcast;

use super::kv::{prefix_end, Compare, KvError, KvResult, KvStore, LeaseId, Op, Ranged, Txn, TxnOutcome, Versioned, Watch, WatchEvent, WatchItem};

/// Versions of the table layout (`PRAGMA user_version`); catalog-level data
/// migrations live above the seam in `catalog::migrations`.
const SCHEMA: &[&str] = &[
    "CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
     INSERT INTO meta VALUES ('revision', 0);",
    // 2: keys may belong to a lease (0: none); existing keys keep their revisions.
    "ALTER TABLE kv ADD COLUMN lease INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX kv_lease ON kv (lease) WHERE lease != 0;",
];

const READERS: usize = 4;
/// Changes kept for watches from a past revision.
const HISTORY: usize = 4096;
/// How often expired leases are looked for.
const LEASE_SWEEP: Duration = Duration::from_millis(200);

pub struct SqliteKv {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    feed: Mutex<Feed>,
    leases: Mutex<Leases>,
}

/// This process's recent changes, and their fan-out to live watchers. Written
/// under the writer lock, so history and broadcast follow revision order.
struct Feed {
    history: VecDeque<WatchEvent>,
    /// Every change above this revision made by this process is in `history`.
    floor: u64,
    events: broadcast::Sender<WatchEvent>,
}

#[derive(Default)]
struct Leases {
    live: HashMap<LeaseId, (Duration, Instant)>,
    sweeper: bool,
}

fn storage(e: impl std::fmt::Display) -> KvError {
    KvError::Storage(e.to_string())
}

fn open_connection(path: &Path) -> KvResult<Connection> {
    let conn = Connection::open(path).map_err(storage)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(storage)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(storage)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(storage)?;
    Ok(conn)
}

fn current_revision(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| r.get(0))
}

impl SqliteKv {
    /// Opens (creating and migrating if needed) the catalog at `path`.
    pub fn open(path: &Path) -> KvResult<Self> {
        let mut writer = open_connection(path)?;
        migrate(&mut writer)?;
        drop_orphaned_leased_keys(&mut writer)?;
        let floor = current_revision(&writer).map_err(storage)?;
        let readers = (0..READERS).map(|_| open_connection(path).map(Mutex::new)).collect::<KvResult<Vec<_>>>()?;
        let (events, _) = broadcast::channel(HISTORY);
        let feed = Feed { history: VecDeque::new(), floor, events };
        Ok(SqliteKv { inner: Arc::new(Inner { writer: Mutex::new(writer), readers, feed: Mutex::new(feed), leases: Default::default() }) })
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static) -> KvResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let readers = &inner.readers;
            // Any free reader will do; fall back to waiting on one chosen by thread.
            let conn = readers.iter().find_map(|r| r.try_lock().ok());
            let result = match conn {
                Some(c) => f(&c),
                None => {
                    let i = thread_index() % readers.len();
                    f(&readers[i].lock().expect("reader connection"))
                }
            };
            result.map_err(storage)
        })
        .await
        .map_err(storage)?
    }

    async fn write(&self, txn: Txn) -> KvResult<TxnOutcome> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.apply(txn)).await.map_err(storage)?
    }

    /// Expires leases in the background while any exist; the task ends with the store.
    fn start_sweeper(&self) {
        let mut leases = self.inner.leases.lock().expect("leases");
        if leases.sweeper {
            return;
        }
        leases.sweeper = true;
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_SWEEP).await;
                let Some(inner) = weak.upgrade() else { return };
                let now = Instant::now();
                let expired: Vec<LeaseId> = inner.leases.lock().expect("leases").live.iter().filter(|(_, (_, deadline))| *deadline <= now).map(|(id, _)| *id).collect();
                if !expired.is_empty() {
                    let result = tokio::task::spawn_blocking(move || inner.end_leases(&expired, Some(now))).await;
                    if let Ok(Err(e)) = result {
                        tracing::warn!(error = %e, "expiring catalog leases failed; retrying");
                    }
                }
            }
        });
    }
}

fn thread_index() -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish() as usize
}

fn migrate(conn: &mut Connection) -> KvResult<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(storage)?;
    for (i, step) in SCHEMA.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage)?;
        tx.execute_batch(step).map_err(storage)?;
        tx.pragma_update(None, "user_version", i + 1).map_err(storage)?;
        tx.commit().map_err(storage)?;
    }
    Ok(())
}

/// A new process holds no lease: keys put under a previous run's leases go
/// (as etcd deletes them when their lease expires), in one new revision.
fn drop_orphaned_leased_keys(conn: &mut Connection) -> KvResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage)?;
    if tx.execute("DELETE FROM kv WHERE lease != 0", []).map_err(storage)? > 0 {
        tx.execute("UPDATE meta SET value = value + 1 WHERE name = 'revision'", []).map_err(storage)?;
    }
    tx.commit().map_err(storage)
}

fn get_versioned(conn: &Connection, key: &[u8]) -> rusqlite::Result<Option<Versioned>> {
    conn.query_row("SELECT value, revision FROM kv WHERE key = ?1", params![key], |r| Ok(Versioned { value: r.get(0)?, mod_revision: r.get(1)? })).optional()
}

impl Inner {
    /// Applies `txn` in one SQLite transaction and publishes its changes, all
    /// under the writer lock.
    fn apply(&self, txn: Txn) -> KvResult<TxnOutcome> {
        let mut conn = self.writer.lock().expect("writer connection");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage)?;
        let mut ok = true;
        for c in &txn.compares {
            let holds = match c {
                Compare::Equals(k, v) => get_versioned(&tx, k).map_err(storage)?.is_some_and(|cur| cur.value == *v),
                Compare::Absent(k) => get_versioned(&tx, k).map_err(storage)?.is_none(),
                Compare::Present(k) => get_versioned(&tx, k).map_err(storage)?.is_some(),
                Compare::ModRevision(k, rev) => get_versioned(&tx, k).map_err(storage)?.map_or(0, |cur| cur.mod_revision) == *rev,
            };
            if !holds {
                ok = false;
                break;
            }
        }
        let ops = if ok { txn.success } else { txn.failure };
        let current = current_revision(&tx).map_err(storage)?;
        let revision = current + 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    tx.execute("INSERT INTO kv (key, value, revision, lease) VALUES (?1, ?2, ?3, 0) ON CONFLICT(key) DO UPDATE SET value = ?2, revision = ?3, lease = 0", params![k, v, revision])
                        .map_err(storage)?;
                    events.push(WatchEvent { key: k, value: Some(v), revision });
                }
                Op::PutLeased(k, v, lease) => {
                    if self.leases.lock().expect("leases").live.get(&lease).is_none_or(|(_, deadline)| *deadline <= Instant::now()) {
                        return Err(KvError::Storage(format!("lease {lease:x} not found (expired or revoked)")));
                    }
                    tx.execute("INSERT INTO kv (key, value, revision, lease) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(key) DO UPDATE SET value = ?2, revision = ?3, lease = ?4", params![k, v, revision, lease])
                        .map_err(storage)?;
                    events.push(WatchEvent { key: k, value: Some(v), revision });
                }
                Op::Delete(k) => {
                    if tx.execute("DELETE FROM kv WHERE key = ?1", params![k]).map_err(storage)? > 0 {
                        events.push(WatchEvent { key: k, value: None, revision });
                    }
                }
                Op::DeletePrefix(p) => {
                    let mut keys: Vec<Vec<u8>> = match prefix_end(&p) {
                        Some(end) => tx.prepare_cached("DELETE FROM kv WHERE key >= ?1 AND key < ?2 RETURNING key").and_then(|mut st| st.query_map(params![p, end], |r| r.get(0))?.collect()),
                        None => tx.prepare_cached("DELETE FROM kv WHERE key >= ?1 RETURNING key").and_then(|mut st| st.query_map(params![p], |r| r.get(0))?.collect()),
                    }
                    .map_err(storage)?;
                    keys.sort();
                    events.extend(keys.into_iter().map(|key| WatchEvent { key, value: None, revision }));
                }
            }
        }
        let changed = !events.is_empty();
        if changed {
            tx.execute("UPDATE meta SET value = ?1 WHERE name = 'revision'", params![revision]).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        self.publish(events);
        Ok(TxnOutcome { succeeded: ok, revision: if changed { revision } else { current } })
    }

    fn publish(&self, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        let mut feed = self.feed.lock().expect("watch feed");
        for ev in events {
            if feed.history.len() == HISTORY {
                if let Some(old) = feed.history.pop_front() {
                    feed.floor = feed.floor.max(old.revision);
                }
            }
            feed.history.push_back(ev.clone());
            let _ = feed.events.send(ev);
        }
    }

    /// Ends `leases` (those expired by `expired_at`, or all when `None`) and
    /// deletes their keys in one revision.
    fn end_leases(&self, leases: &[LeaseId], expired_at: Option<Instant>) -> KvResult<()> {
        let mut conn = self.writer.lock().expect("writer connection");
        let ending: Vec<LeaseId> = {
            let mut table = self.leases.lock().expect("leases");
            let ending = leases.iter().copied().filter(|id| table.live.get(id).is_some_and(|(_, deadline)| expired_at.is_none_or(|at| *deadline <= at))).collect::<Vec<_>>();
            for id in &ending {
                table.live.remove(id);
            }
            ending
        };
        if ending.is_empty() {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage)?;
        let revision = current_revision(&tx).map_err(storage)? + 1;
        let mut keys = Vec::new();
        for id in ending {
            let mut st = tx.prepare_cached("DELETE FROM kv WHERE lease = ?1 RETURNING key").map_err(storage)?;
            let gone: Vec<Vec<u8>> = st.query_map(params![id], |r| r.get(0)).and_then(|rows| rows.collect()).map_err(storage)?;
            keys.extend(gone);
        }
        if !keys.is_empty() {
            tx.execute("UPDATE meta SET value = ?1 WHERE name = 'revision'", params![revision]).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        keys.sort();
        self.publish(keys.into_iter().map(|key| WatchEvent { key, value: None, revision }).collect());
        Ok(())
    }
}

#[async_trait]
impl KvStore for SqliteKv {
    async fn get(&self, key: &[u8]) -> KvResult<Option<Versioned>> {
        let key = key.to_vec();
        self.read(move |c| get_versioned(c, &key)).await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> KvResult<u64> {
        Ok(self.write(Txn::default().then(vec![Op::Put(key.to_vec(), value.to_vec())])).await?.revision)
    }

    async fn delete(&self, key: &[u8]) -> KvResult<bool> {
        let key = key.to_vec();
        let existed = Txn::when(vec![Compare::Present(key.clone())]).then(vec![Op::Delete(key)]);
        Ok(self.write(existed).await?.succeeded)
    }

    async fn range(&self, prefix: &[u8]) -> KvResult<Ranged> {
        let start = prefix.to_vec();
        self.read(move |c| {
            // One read transaction: the rows and the revision agree.
            let tx = c.unchecked_transaction()?;
            let revision = current_revision(&tx)?;
            let row = |r: &rusqlite::Row| Ok((r.get(0)?, Versioned { value: r.get(1)?, mod_revision: r.get(2)? }));
            let items = match prefix_end(&start) {
                Some(end) => tx.prepare_cached("SELECT key, value, revision FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key")?.query_map(params![start, end], row)?.collect::<rusqlite::Result<Vec<_>>>()?,
                None => tx.prepare_cached("SELECT key, value, revision FROM kv WHERE key >= ?1 ORDER BY key")?.query_map(params![start], row)?.collect::<rusqlite::Result<Vec<_>>>()?,
            };
            tx.finish()?;
            Ok(Ranged { items, revision })
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> KvResult<TxnOutcome> {
        self.write(txn).await
    }

    fn watch(&self, prefix: &[u8], from: Option<u64>) -> Watch {
        let feed = self.inner.feed.lock().expect("watch feed");
        // Subscribed under the feed's lock: the backlog and the live changes neither overlap nor leave a gap.
        let rx = feed.events.subscribe();
        let mut backlog = VecDeque::new();
        if let Some(from) = from {
            if from < feed.floor {
                backlog.push_back(WatchItem::Resync);
            } else {
                backlog.extend(feed.history.iter().filter(|ev| ev.revision > from && ev.key.starts_with(prefix)).cloned().map(WatchItem::Event));
            }
        }
        Watch::local(prefix.to_vec(), backlog, rx, from.unwrap_or(0))
    }

    async fn compact(&self, revision: u64) -> KvResult<()> {
        let mut feed = self.inner.feed.lock().expect("watch feed");
        while feed.history.front().is_some_and(|ev| ev.revision <= revision) {
            feed.history.pop_front();
        }
        feed.floor = feed.floor.max(revision);
        Ok(())
    }

    async fn grant_lease(&self, ttl: Duration) -> KvResult<LeaseId> {
        let ttl = Duration::from_secs(ttl.as_secs_f64().ceil().max(1.0) as u64);
        let id = loop {
            let id = rand::random::<i64>() & i64::MAX;
            if id != 0 {
                break id;
            }
        };
        self.inner.leases.lock().expect("leases").live.insert(id, (ttl, Instant::now() + ttl));
        self.start_sweeper();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> KvResult<bool> {
        let now = Instant::now();
        let mut table = self.inner.leases.lock().expect("leases");
        match table.live.get_mut(&lease) {
            Some((ttl, deadline)) if *deadline > now => {
                *deadline = now + *ttl;
                Ok(true)
            }
            // Expired, not swept yet: the sweeper deletes its keys.
            _ => Ok(false),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> KvResult<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.end_leases(&[lease], None)).await.map_err(storage)?
    }

    async fn health(&self) -> KvResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> Option<(tempfile::TempDir, SqliteKv)> {
        let dir = tempfile::tempdir().unwrap();
        let kv = SqliteKv::open(&dir.path().join("catalog.db")).unwrap();
        Some((dir, kv))
    }

    crate::catalog::kv::suite::seam_suite!(store());

    #[tokio::test]
    async fn watch_sees_changes_under_its_prefix_only() {
        let (_d, kv) = store().await.unwrap();
        let mut w = kv.watch(b"containers/", None);
        kv.put(b"projects/p", b"x").await.unwrap();
        kv.put(b"containers/c", b"y").await.unwrap();
        kv.delete(b"containers/c").await.unwrap();
        let Some(WatchItem::Event(put)) = w.next().await else { panic!("a put") };
        assert_eq!((put.key.as_slice(), put.value.as_deref()), (&b"containers/c"[..], Some(&b"y"[..])));
        let Some(WatchItem::Event(del)) = w.try_next() else { panic!("a delete, pending") };
        assert_eq!(del.value, None);
        assert!(del.revision > put.revision);
        assert_eq!(w.try_next(), None);
    }

    #[tokio::test]
    async fn survives_reopen_and_concurrent_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            let kv = Arc::new(SqliteKv::open(&path).unwrap());
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let kv = kv.clone();
                    tokio::spawn(async move { kv.put(format!("k/{i:02}").as_bytes(), b"v").await.unwrap() })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
        let kv = SqliteKv::open(&path).unwrap();
        let ranged = kv.range(b"k/").await.unwrap();
        assert_eq!((ranged.items.len(), ranged.revision), (32, 32));
    }

    /// Leases die with the process: a reopened store has none, nor their keys.
    #[tokio::test]
    async fn leased_keys_of_an_earlier_process_are_gone_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let before = {
            let kv = SqliteKv::open(&path).unwrap();
            let lease = kv.grant_lease(Duration::from_secs(60)).await.unwrap();
            kv.put(b"plain", b"1").await.unwrap();
            kv.txn(Txn::default().then(vec![Op::PutLeased(b"leased".to_vec(), b"1".to_vec(), lease)])).await.unwrap().revision
        };
        let kv = SqliteKv::open(&path).unwrap();
        assert_eq!(kv.get(b"leased").await.unwrap(), None);
        assert!(kv.get(b"plain").await.unwrap().is_some());
        assert!(kv.range(b"").await.unwrap().revision > before, "the deletion is a change");
    }

    /// A catalog file of the first layout (no lease column) opens with its
    /// keys and their revisions as they were.
    #[tokio::test]
    async fn a_first_layout_file_keeps_its_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA[0]).unwrap();
            conn.execute_batch("INSERT INTO kv VALUES (x'612f31', x'31', 7); UPDATE meta SET value = 7; PRAGMA user_version = 1;").unwrap();
        }
        let kv = SqliteKv::open(&path).unwrap();
        assert_eq!(kv.get(b"a/1").await.unwrap(), Some(Versioned { value: b"1".to_vec(), mod_revision: 7 }));
        assert_eq!(kv.put(b"a/2", b"2").await.unwrap(), 8);
    }

    /// A watcher from before the bounded history resyncs instead of missing changes.
    #[tokio::test]
    async fn a_watch_older_than_the_history_resyncs() {
        let (_d, kv) = store().await.unwrap();
        let first = kv.put(b"h/0", b"0").await.unwrap();
        let writes: Vec<Op> = (0..HISTORY + 1).map(|i| Op::Put(format!("h/{i}").into_bytes(), b"1".to_vec())).collect();
        kv.txn(Txn::default().then(writes)).await.unwrap();
        assert_eq!(kv.watch(b"h/", Some(first)).try_next(), Some(WatchItem::Resync));
        assert_eq!(kv.watch(b"h/", Some(first + 1)).try_next(), None, "nothing after the latest revision");
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(&[0x61, 0xff]), Some(vec![0x62]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}

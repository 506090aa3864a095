//! The embedded catalog: one SQLite table of keys and values in WAL mode.
//!
//! SQLite rather than redb because administrative verbs (`hoodyd token create`,
//! `hoodyd verify`) must read and write the catalog while the daemon runs, and
//! SQLite arbitrates several processes safely; see docs/DESIGN.md.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::broadcast;

use super::kv::{Compare, KvError, KvResult, KvStore, Op, Txn, Watch, WatchEvent};

/// Versions of the table layout (`PRAGMA user_version`); catalog-level data
/// migrations live above the seam in `catalog::migrations`.
const SCHEMA: &[&str] = &["CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
     INSERT INTO meta VALUES ('revision', 0);"];

const READERS: usize = 4;

pub struct SqliteKv {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    events: broadcast::Sender<WatchEvent>,
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

impl SqliteKv {
    /// Opens (creating and migrating if needed) the catalog at `path`.
    pub fn open(path: &Path) -> KvResult<Self> {
        let mut writer = open_connection(path)?;
        migrate(&mut writer)?;
        let readers = (0..READERS).map(|_| open_connection(path).map(Mutex::new)).collect::<KvResult<Vec<_>>>()?;
        let (events, _) = broadcast::channel(4096);
        Ok(SqliteKv { writer: Arc::new(Mutex::new(writer)), readers: Arc::new(readers), events })
    }

    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static) -> KvResult<T> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
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

    async fn write(&self, txn: Txn) -> KvResult<bool> {
        let writer = self.writer.clone();
        let (ok, events) = tokio::task::spawn_blocking(move || apply(&mut writer.lock().expect("writer connection"), txn))
            .await
            .map_err(storage)??;
        for ev in events {
            let _ = self.events.send(ev);
        }
        Ok(ok)
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

fn get_value(conn: &Connection, key: &[u8]) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| r.get(0)).optional()
}

fn apply(conn: &mut Connection, txn: Txn) -> KvResult<(bool, Vec<WatchEvent>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage)?;
    let mut ok = true;
    for c in &txn.compares {
        let holds = match c {
            Compare::Equals(k, v) => get_value(&tx, k).map_err(storage)?.as_deref() == Some(v.as_slice()),
            Compare::Absent(k) => get_value(&tx, k).map_err(storage)?.is_none(),
            Compare::Present(k) => get_value(&tx, k).map_err(storage)?.is_some(),
        };
        if !holds {
            ok = false;
            break;
        }
    }
    let ops = if ok { txn.success } else { txn.failure };
    let mut events = Vec::new();
    if !ops.is_empty() {
        let revision: u64 = tx.query_row("UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value", [], |r| r.get(0)).map_err(storage)?;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    tx.execute("INSERT INTO kv (key, value, revision) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO UPDATE SET value = ?2, revision = ?3", params![k, v, revision])
                        .map_err(storage)?;
                    events.push(WatchEvent { key: k, value: Some(v), revision });
                }
                Op::Delete(k) => {
                    if tx.execute("DELETE FROM kv WHERE key = ?1", params![k]).map_err(storage)? > 0 {
                        events.push(WatchEvent { key: k, value: None, revision });
                    }
                }
            }
        }
    }
    tx.commit().map_err(storage)?;
    Ok((ok, events))
}

/// The smallest key greater than every key starting with `prefix` (None: no bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[async_trait]
impl KvStore for SqliteKv {
    async fn get(&self, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        let key = key.to_vec();
        self.read(move |c| get_value(c, &key)).await
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> KvResult<()> {
        self.write(Txn::default().then(vec![Op::Put(key.to_vec(), value.to_vec())])).await.map(|_| ())
    }

    async fn delete(&self, key: &[u8]) -> KvResult<bool> {
        let key = key.to_vec();
        let existed = Txn::when(vec![Compare::Present(key.clone())]).then(vec![Op::Delete(key)]);
        self.write(existed).await
    }

    async fn range(&self, prefix: &[u8]) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = prefix.to_vec();
        self.read(move |c| {
            let mut rows = Vec::new();
            match prefix_end(&start) {
                Some(end) => {
                    let mut st = c.prepare_cached("SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key")?;
                    for row in st.query_map(params![start, end], |r| Ok((r.get(0)?, r.get(1)?)))? {
                        rows.push(row?);
                    }
                }
                None => {
                    let mut st = c.prepare_cached("SELECT key, value FROM kv WHERE key >= ?1 ORDER BY key")?;
                    for row in st.query_map(params![start], |r| Ok((r.get(0)?, r.get(1)?)))? {
                        rows.push(row?);
                    }
                }
            }
            Ok(rows)
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> KvResult<bool> {
        self.write(txn).await
    }

    fn watch(&self, prefix: &[u8]) -> Watch {
        Watch::new(prefix.to_vec(), self.events.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteKv) {
        let dir = tempfile::tempdir().unwrap();
        let kv = SqliteKv::open(&dir.path().join("catalog.db")).unwrap();
        (dir, kv)
    }

    #[tokio::test]
    async fn get_put_delete_range() {
        let (_d, kv) = store();
        kv.put(b"a/1", b"one").await.unwrap();
        kv.put(b"a/2", b"two").await.unwrap();
        kv.put(b"b/1", b"other").await.unwrap();
        assert_eq!(kv.get(b"a/1").await.unwrap().as_deref(), Some(&b"one"[..]));
        let keys: Vec<_> = kv.range(b"a/").await.unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
        assert!(kv.delete(b"a/1").await.unwrap());
        assert!(!kv.delete(b"a/1").await.unwrap());
        assert_eq!(kv.get(b"a/1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn compare_and_swap_applies_one_branch_atomically() {
        let (_d, kv) = store();
        let claim = |v: &[u8]| Txn::when(vec![Compare::Absent(b"name/x".to_vec())]).then(vec![Op::Put(b"name/x".to_vec(), v.to_vec()), Op::Put(v.to_vec(), b"1".to_vec())]);
        assert!(kv.txn(claim(b"first")).await.unwrap());
        assert!(!kv.txn(claim(b"second")).await.unwrap());
        assert_eq!(kv.get(b"second").await.unwrap(), None, "failed branch wrote nothing");
        assert!(kv.txn(Txn::when(vec![Compare::Equals(b"name/x".to_vec(), b"first".to_vec())]).then(vec![Op::Delete(b"name/x".to_vec())])).await.unwrap());
    }

    #[tokio::test]
    async fn watch_sees_changes_under_its_prefix_only() {
        let (_d, kv) = store();
        let mut w = kv.watch(b"containers/");
        kv.put(b"projects/p", b"x").await.unwrap();
        kv.put(b"containers/c", b"y").await.unwrap();
        kv.delete(b"containers/c").await.unwrap();
        let put = w.next().await.unwrap().unwrap();
        assert_eq!((put.key.as_slice(), put.value.as_deref()), (&b"containers/c"[..], Some(&b"y"[..])));
        let del = w.next().await.unwrap().unwrap();
        assert_eq!(del.value, None);
        assert!(del.revision > put.revision);
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
        assert_eq!(kv.range(b"k/").await.unwrap().len(), 32);
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(&[0x61, 0xff]), Some(vec![0x62]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}

//! The catalog's seam: a small transactional key-value store with revisions,
//! watches and leases.
//!
//! Deliberately etcd-shaped (get, put, delete, range by prefix, compare-and-swap
//! transactions, watch a prefix from a revision, leases) so the embedded
//! default (`sqlite`) and the cluster backend (`etcd`) serve the same trait,
//! and nothing above it depends on an engine.
//!
//! Revisions: every write that changes something gets the store's next
//! revision (one per transaction); each key remembers the revision that last
//! changed it (`mod_revision`). A watch from revision `r` yields every change
//! after `r` in order, or [`WatchItem::Resync`] when that history is gone.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc};

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The store answered but the operation failed (a retry will not help).
    #[error("catalog storage: {0}")]
    Storage(String),
    /// The store cannot be reached now (it names the cause); a retry later may help.
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
}

impl KvError {
    /// Whether trying again later can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, KvError::Unavailable(_))
    }
}

pub type KvResult<T> = Result<T, KvError>;

/// A value and the revision that last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub mod_revision: u64,
}

/// The keys under a prefix, in key order, as of the store's `revision`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranged {
    pub items: Vec<(Vec<u8>, Versioned)>,
    /// The store's revision at the read: a watch from it misses nothing.
    pub revision: u64,
}

impl Ranged {
    /// The keys and values without their revisions.
    pub fn into_pairs(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.items.into_iter().map(|(k, v)| (k, v.value)).collect()
    }
}

/// A lease: keys put with it vanish when it expires or is revoked.
pub type LeaseId = i64;

/// A condition of a transaction on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key holds exactly this value.
    Equals(Vec<u8>, Vec<u8>),
    /// The key is absent.
    Absent(Vec<u8>),
    /// The key is present, whatever its value.
    Present(Vec<u8>),
    /// The key was last changed at this revision (`0`: the key is absent).
    ModRevision(Vec<u8>, u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    /// A put whose key is deleted when the lease ends.
    PutLeased(Vec<u8>, Vec<u8>, LeaseId),
    Delete(Vec<u8>),
    /// Deletes every key starting with the prefix.
    DeletePrefix(Vec<u8>),
}

/// All `compares` hold → `success` applied atomically; else `failure` is.
/// etcd refuses more than 128 operations in one transaction by default
/// (`--max-txn-ops`); bulk writers chunk (see [`MAX_TXN_OPS`]).
#[derive(Debug, Clone, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

/// The most operations a caller puts in one transaction (etcd's default limit).
pub const MAX_TXN_OPS: usize = 128;

impl Txn {
    pub fn when(compares: Vec<Compare>) -> Self {
        Txn { compares, ..Default::default() }
    }
    pub fn then(mut self, ops: Vec<Op>) -> Self {
        self.success = ops;
        self
    }
    pub fn otherwise(mut self, ops: Vec<Op>) -> Self {
        self.failure = ops;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether the compares held (and so `success` rather than `failure` was applied).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: u64,
}

/// One committed change, as seen by watchers. `value` is `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Event(WatchEvent),
    /// Changes were lost (history compacted, the watcher fell behind, or the
    /// store could not resume the stream): re-read by range. The watch goes on
    /// with later changes, some of which the fresh range may already show
    /// (apply them by `mod_revision`, idempotently).
    Resync,
}

/// A stream of changes under one prefix.
pub struct Watch {
    source: Source,
}

enum Source {
    /// Changes fanned out in-process: `backlog` (history replayed at creation)
    /// first, then live changes after `after`.
    Local { prefix: Vec<u8>, backlog: VecDeque<WatchItem>, rx: broadcast::Receiver<WatchEvent>, after: u64 },
    /// Changes fed by a task (a remote stream).
    Channel(mpsc::Receiver<WatchItem>),
}

impl Watch {
    /// An in-process watch: `backlog` first, then the events of `rx` under
    /// `prefix` with a revision above `after`.
    pub fn local(prefix: Vec<u8>, backlog: VecDeque<WatchItem>, rx: broadcast::Receiver<WatchEvent>, after: u64) -> Self {
        Watch { source: Source::Local { prefix, backlog, rx, after } }
    }

    /// A watch fed by a task through `rx`; it ends when the sender is dropped.
    pub fn channel(rx: mpsc::Receiver<WatchItem>) -> Self {
        Watch { source: Source::Channel(rx) }
    }

    /// The next change under the prefix; `None` when the store is gone.
    pub async fn next(&mut self) -> Option<WatchItem> {
        match &mut self.source {
            Source::Local { prefix, backlog, rx, after } => {
                if let Some(item) = backlog.pop_front() {
                    return Some(item);
                }
                loop {
                    match rx.recv().await {
                        Ok(ev) if ev.revision > *after && ev.key.starts_with(prefix) => return Some(WatchItem::Event(ev)),
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => return Some(WatchItem::Resync),
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
            Source::Channel(rx) => rx.recv().await,
        }
    }

    /// Like [`Watch::next`] without waiting: `None` when nothing is pending (or
    /// the store is gone).
    pub fn try_next(&mut self) -> Option<WatchItem> {
        match &mut self.source {
            Source::Local { prefix, backlog, rx, after } => {
                if let Some(item) = backlog.pop_front() {
                    return Some(item);
                }
                loop {
                    match rx.try_recv() {
                        Ok(ev) if ev.revision > *after && ev.key.starts_with(prefix) => return Some(WatchItem::Event(ev)),
                        Ok(_) => continue,
                        Err(broadcast::error::TryRecvError::Lagged(_)) => return Some(WatchItem::Resync),
                        Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => return None,
                    }
                }
            }
            Source::Channel(rx) => rx.try_recv().ok(),
        }
    }
}

#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    async fn get(&self, key: &[u8]) -> KvResult<Option<Versioned>>;
    /// The revision of the write.
    async fn put(&self, key: &[u8], value: &[u8]) -> KvResult<u64>;
    /// Whether the key existed.
    async fn delete(&self, key: &[u8]) -> KvResult<bool>;
    /// Every key starting with `prefix`, in key order, read at one revision.
    async fn range(&self, prefix: &[u8]) -> KvResult<Ranged>;
    async fn txn(&self, txn: Txn) -> KvResult<TxnOutcome>;
    /// Changes under `prefix` with a revision above `from` (`None`: from now).
    /// No gap: when the history from `from` is gone (compacted, the watcher
    /// lagged, a broken stream that cannot resume) the watch yields
    /// [`WatchItem::Resync`]; a remote watch whose connection breaks resumes
    /// by itself from the last revision it delivered. With `None`, a remote
    /// watch starts when the store registers it, shortly after the call: a
    /// caller that must not miss a change passes the revision of its read.
    fn watch(&self, prefix: &[u8], from: Option<u64>) -> Watch;
    /// Forgets the history up to `revision`: watches from before it resync.
    async fn compact(&self, revision: u64) -> KvResult<()>;
    /// A lease of `ttl` (rounded up to whole seconds).
    async fn grant_lease(&self, ttl: Duration) -> KvResult<LeaseId>;
    /// Renews the lease for its TTL; `false` when it has expired already
    /// (the caller grants a new one and puts its keys again).
    async fn keep_alive(&self, lease: LeaseId) -> KvResult<bool>;
    /// Ends the lease now, deleting its keys (an unknown lease is no error).
    async fn revoke_lease(&self, lease: LeaseId) -> KvResult<()>;
    /// A cheap liveness probe (for `/healthz`, and to name the cause of failures).
    async fn health(&self) -> KvResult<()>;
}

/// The smallest key greater than every key starting with `prefix` (None: no bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The same tests on every backend: `seam_suite!(make)` where `make()` is an
/// async expression giving `Option<(guard, impl KvStore)>` (`None`: skip).
#[cfg(test)]
pub(crate) mod suite {
    use std::time::Duration;

    use super::*;

    pub async fn get_put_delete_range_with_revisions(kv: &dyn KvStore) {
        let r1 = kv.put(b"a/1", b"one").await.unwrap();
        let r2 = kv.put(b"a/2", b"two").await.unwrap();
        let r3 = kv.put(b"b/1", b"other").await.unwrap();
        assert!(r1 < r2 && r2 < r3, "{r1} {r2} {r3}");
        assert_eq!(kv.get(b"a/1").await.unwrap(), Some(Versioned { value: b"one".to_vec(), mod_revision: r1 }));
        let ranged = kv.range(b"a/").await.unwrap();
        assert_eq!(ranged.revision, r3);
        let keys: Vec<_> = ranged.items.iter().map(|(k, v)| (k.clone(), v.mod_revision)).collect();
        assert_eq!(keys, vec![(b"a/1".to_vec(), r1), (b"a/2".to_vec(), r2)]);
        let r4 = kv.put(b"a/1", b"uno").await.unwrap();
        assert_eq!(kv.get(b"a/1").await.unwrap().unwrap().mod_revision, r4);
        assert!(kv.delete(b"a/1").await.unwrap());
        assert!(!kv.delete(b"a/1").await.unwrap());
        assert_eq!(kv.get(b"a/1").await.unwrap(), None);
        assert_eq!(kv.range(b"").await.unwrap().items.len(), 2, "an empty prefix ranges everything");
        let gone = kv.txn(Txn::default().then(vec![Op::DeletePrefix(b"a/".to_vec())])).await.unwrap();
        assert!(gone.succeeded && gone.revision > r4);
        assert!(kv.range(b"a/").await.unwrap().items.is_empty());
        assert!(kv.get(b"b/1").await.unwrap().is_some(), "outside the prefix");
    }

    pub async fn compare_and_swap_on_revisions(kv: &dyn KvStore) {
        let claim = |v: &[u8]| Txn::when(vec![Compare::Absent(b"name/x".to_vec())]).then(vec![Op::Put(b"name/x".to_vec(), v.to_vec()), Op::Put(v.to_vec(), b"1".to_vec())]);
        assert!(kv.txn(claim(b"first")).await.unwrap().succeeded);
        let lost = kv.txn(claim(b"second").otherwise(vec![Op::Put(b"lost".to_vec(), b"1".to_vec())])).await.unwrap();
        assert!(!lost.succeeded);
        assert_eq!(kv.get(b"second").await.unwrap(), None, "failed branch wrote nothing");
        assert!(kv.get(b"lost").await.unwrap().is_some(), "the failure branch ran");
        assert!(kv.txn(Txn::when(vec![Compare::Present(b"name/x".to_vec()), Compare::Equals(b"name/x".to_vec(), b"first".to_vec())])).await.unwrap().succeeded);

        let rev = kv.get(b"name/x").await.unwrap().unwrap().mod_revision;
        let swap = |at: u64, v: &[u8]| Txn::when(vec![Compare::ModRevision(b"name/x".to_vec(), at)]).then(vec![Op::Put(b"name/x".to_vec(), v.to_vec())]);
        let won = kv.txn(swap(rev, b"second")).await.unwrap();
        assert!(won.succeeded);
        assert_eq!(kv.get(b"name/x").await.unwrap().unwrap().mod_revision, won.revision);
        assert!(!kv.txn(swap(rev, b"third")).await.unwrap().succeeded, "a stale revision loses");
        assert_eq!(kv.get(b"name/x").await.unwrap().unwrap().value, b"second");
        assert!(kv.txn(Txn::when(vec![Compare::ModRevision(b"nothing".to_vec(), 0)])).await.unwrap().succeeded, "0 means absent");
        assert!(!kv.txn(Txn::when(vec![Compare::ModRevision(b"name/x".to_vec(), 0)])).await.unwrap().succeeded);
    }

    async fn next_event(w: &mut Watch) -> WatchItem {
        tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("a change within 10 s").expect("the watch goes on")
    }

    pub async fn watch_from_a_past_revision_replays_in_order(kv: &dyn KvStore) {
        kv.put(b"w/before", b"0").await.unwrap();
        let from = kv.put(b"other/x", b"x").await.unwrap();
        let r1 = kv.put(b"w/a", b"1").await.unwrap();
        let r2 = kv.put(b"other/y", b"y").await.unwrap();
        assert!(kv.delete(b"w/a").await.unwrap());
        let mut w = kv.watch(b"w/", Some(from));
        let r4 = kv.put(b"w/b", b"2").await.unwrap();
        let seen: Vec<_> = [next_event(&mut w).await, next_event(&mut w).await, next_event(&mut w).await].into_iter().collect();
        let expect = vec![
            WatchItem::Event(WatchEvent { key: b"w/a".to_vec(), value: Some(b"1".to_vec()), revision: r1 }),
            WatchItem::Event(WatchEvent { key: b"w/a".to_vec(), value: None, revision: r2 + 1 }),
            WatchItem::Event(WatchEvent { key: b"w/b".to_vec(), value: Some(b"2".to_vec()), revision: r4 }),
        ];
        assert_eq!(seen, expect);
        assert!(tokio::time::timeout(Duration::from_millis(300), w.next()).await.is_err(), "nothing else");
    }

    pub async fn watch_from_a_compacted_revision_resyncs(kv: &dyn KvStore) {
        let old = kv.put(b"c/1", b"1").await.unwrap();
        kv.put(b"c/1", b"2").await.unwrap();
        let now = kv.put(b"c/2", b"3").await.unwrap();
        kv.compact(now).await.unwrap();
        let mut w = kv.watch(b"c/", Some(old));
        assert_eq!(next_event(&mut w).await, WatchItem::Resync);
        let later = kv.put(b"c/3", b"4").await.unwrap();
        match next_event(&mut w).await {
            WatchItem::Event(ev) => assert_eq!((ev.key.as_slice(), ev.revision), (&b"c/3"[..], later)),
            other => panic!("after a resync, later changes: {other:?}"),
        }
    }

    pub async fn leased_keys_live_while_kept_alive(kv: &dyn KvStore) {
        let ttl = Duration::from_secs(2);
        let kept = kv.grant_lease(ttl).await.unwrap();
        let dropped = kv.grant_lease(ttl).await.unwrap();
        let revoked = kv.grant_lease(Duration::from_secs(60)).await.unwrap();
        let written = kv
            .txn(Txn::default().then(vec![
                Op::PutLeased(b"l/kept".to_vec(), b"1".to_vec(), kept),
                Op::PutLeased(b"l/dropped".to_vec(), b"1".to_vec(), dropped),
                Op::PutLeased(b"l/revoked".to_vec(), b"1".to_vec(), revoked),
            ]))
            .await
            .unwrap();
        // From the write's revision: a watch "from now" on etcd starts only once
        // etcd registers it, and the revoke below could come first.
        let mut w = kv.watch(b"l/revoked", Some(written.revision));
        kv.revoke_lease(revoked).await.unwrap();
        assert_eq!(kv.get(b"l/revoked").await.unwrap(), None, "revoke deletes at once");
        match next_event(&mut w).await {
            WatchItem::Event(ev) => assert_eq!(ev.value, None, "watchers see the delete"),
            other => panic!("{other:?}"),
        }
        kv.revoke_lease(revoked).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
        while tokio::time::Instant::now() < deadline {
            assert!(kv.keep_alive(kept).await.unwrap());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(kv.get(b"l/kept").await.unwrap().is_some(), "kept alive");
        assert_eq!(kv.get(b"l/dropped").await.unwrap(), None, "expired without keep-alive");
        assert!(!kv.keep_alive(dropped).await.unwrap(), "an expired lease says so");
        kv.revoke_lease(kept).await.unwrap();
        assert_eq!(kv.get(b"l/kept").await.unwrap(), None);
        assert!(kv.txn(Txn::default().then(vec![Op::PutLeased(b"l/late".to_vec(), b"1".to_vec(), dropped)])).await.is_err(), "no put on a dead lease");
    }

    /// Runs every test of the suite on a fresh store made by `$make`.
    macro_rules! seam_suite {
        ($make:expr) => {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn get_put_delete_range_with_revisions() {
                let Some((_guard, kv)) = $make.await else { return };
                $crate::catalog::kv::suite::get_put_delete_range_with_revisions(&kv).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn compare_and_swap_on_revisions() {
                let Some((_guard, kv)) = $make.await else { return };
                $crate::catalog::kv::suite::compare_and_swap_on_revisions(&kv).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_from_a_past_revision_replays_in_order() {
                let Some((_guard, kv)) = $make.await else { return };
                $crate::catalog::kv::suite::watch_from_a_past_revision_replays_in_order(&kv).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_from_a_compacted_revision_resyncs() {
                let Some((_guard, kv)) = $make.await else { return };
                $crate::catalog::kv::suite::watch_from_a_compacted_revision_resyncs(&kv).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn leased_keys_live_while_kept_alive() {
                let Some((_guard, kv)) = $make.await else { return };
                $crate::catalog::kv::suite::leased_keys_live_while_kept_alive(&kv).await;
            }
        };
    }
    pub(crate) use seam_suite;
}

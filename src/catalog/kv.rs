//! The catalog's seam: a small transactional key-value store with watches.
//!
//! Deliberately etcd-shaped (get, put, delete, range by prefix, compare-and-swap
//! transactions, watch a prefix) so the embedded default and a cluster backend
//! serve the same trait, and nothing above it depends on an engine.

use async_trait::async_trait;
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("catalog storage: {0}")]
    Storage(String),
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
}

pub type KvResult<T> = Result<T, KvError>;

/// A condition of a transaction on one key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key holds exactly this value.
    Equals(Vec<u8>, Vec<u8>),
    /// The key is absent.
    Absent(Vec<u8>),
    /// The key is present, whatever its value.
    Present(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// All `compares` hold → `success` applied atomically; else `failure` is.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn when(compares: Vec<Compare>) -> Self {
        Txn { compares, ..Default::default() }
    }
    pub fn then(mut self, ops: Vec<Op>) -> Self {
        self.success = ops;
        self
    }
}

/// One committed change, as seen by watchers. `value` is `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub revision: u64,
}

/// A stream of changes under one prefix.
pub struct Watch {
    prefix: Vec<u8>,
    rx: broadcast::Receiver<WatchEvent>,
}

impl Watch {
    pub fn new(prefix: Vec<u8>, rx: broadcast::Receiver<WatchEvent>) -> Self {
        Watch { prefix, rx }
    }

    /// The next change under the prefix; `None` when the store is gone. A watcher
    /// that fell behind gets `Some(Err(lagged count))` and should re-read by range.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, u64>> {
        loop {
            match self.rx.recv().await {
                Ok(ev) if ev.key.starts_with(&self.prefix) => return Some(Ok(ev)),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Err(n)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Like [`Watch::next`] without waiting: `None` when nothing is pending (or
    /// the store is gone).
    pub fn try_next(&mut self) -> Option<Result<WatchEvent, u64>> {
        loop {
            match self.rx.try_recv() {
                Ok(ev) if ev.key.starts_with(&self.prefix) => return Some(Ok(ev)),
                Ok(_) => continue,
                Err(broadcast::error::TryRecvError::Lagged(n)) => return Some(Err(n)),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => return None,
            }
        }
    }
}

#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    async fn get(&self, key: &[u8]) -> KvResult<Option<Vec<u8>>>;
    async fn put(&self, key: &[u8], value: &[u8]) -> KvResult<()>;
    /// Whether the key existed.
    async fn delete(&self, key: &[u8]) -> KvResult<bool>;
    /// Every key starting with `prefix`, in key order.
    async fn range(&self, prefix: &[u8]) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Whether the compares held (and so `success` rather than `failure` was applied).
    async fn txn(&self, txn: Txn) -> KvResult<bool>;
    /// Changes committed under `prefix` from now on.
    fn watch(&self, prefix: &[u8]) -> Watch;
}

//! The catalog store a running daemon holds: the embedded one, until
//! `hoodyd cluster init` moves the catalog into etcd while the daemon runs.
//! The move waits for calls in flight, holds new ones back, copies every
//! record, and from then on every call goes to etcd. Watches carry on across
//! the move with a `Resync` (revisions of the two stores do not compare), so
//! their users re-read from the new store; leases of the old store are
//! unknown to the new one, which their holders see as expired and replace.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;

use super::kv::{KvResult, KvStore, LeaseId, Ranged, Txn, TxnOutcome, Versioned, Watch, WatchItem};

pub struct SwitchableKv {
    current: Arc<RwLock<Arc<dyn KvStore>>>,
    /// Calls hold it shared; a switch holds it exclusively.
    gate: tokio::sync::RwLock<()>,
    /// Bumped by every switch, for watches to move along.
    generation: tokio::sync::watch::Sender<u64>,
}

impl SwitchableKv {
    pub fn new(inner: Arc<dyn KvStore>) -> Arc<Self> {
        Arc::new(SwitchableKv { current: Arc::new(RwLock::new(inner)), gate: tokio::sync::RwLock::new(()), generation: tokio::sync::watch::channel(0).0 })
    }

    fn inner(&self) -> Arc<dyn KvStore> {
        self.current.read().clone()
    }

    /// Moves every call to `next` once `prepare` (given the current store and
    /// `next`, with no call in flight and none starting) succeeds; on its
    /// failure nothing changes.
    pub async fn switch_to<F, Fut, T>(&self, next: Arc<dyn KvStore>, prepare: F) -> anyhow::Result<T>
    where
        F: FnOnce(Arc<dyn KvStore>, Arc<dyn KvStore>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let _exclusive = self.gate.write().await;
        let outcome = prepare(self.inner(), next.clone()).await?;
        *self.current.write() = next;
        self.generation.send_modify(|g| *g += 1);
        Ok(outcome)
    }
}

#[async_trait]
impl KvStore for SwitchableKv {
    async fn get(&self, key: &[u8]) -> KvResult<Option<Versioned>> {
        let _call = self.gate.read().await;
        self.inner().get(key).await
    }
    async fn put(&self, key: &[u8], value: &[u8]) -> KvResult<u64> {
        let _call = self.gate.read().await;
        self.inner().put(key, value).await
    }
    async fn delete(&self, key: &[u8]) -> KvResult<bool> {
        let _call = self.gate.read().await;
        self.inner().delete(key).await
    }
    async fn range(&self, prefix: &[u8]) -> KvResult<Ranged> {
        let _call = self.gate.read().await;
        self.inner().range(prefix).await
    }
    async fn txn(&self, txn: Txn) -> KvResult<TxnOutcome> {
        let _call = self.gate.read().await;
        self.inner().txn(txn).await
    }
    async fn compact(&self, revision: u64) -> KvResult<()> {
        let _call = self.gate.read().await;
        self.inner().compact(revision).await
    }
    async fn grant_lease(&self, ttl: Duration) -> KvResult<LeaseId> {
        let _call = self.gate.read().await;
        self.inner().grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> KvResult<bool> {
        let _call = self.gate.read().await;
        self.inner().keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> KvResult<()> {
        let _call = self.gate.read().await;
        self.inner().revoke_lease(lease).await
    }
    async fn health(&self) -> KvResult<()> {
        let _call = self.gate.read().await;
        self.inner().health().await
    }

    fn watch(&self, prefix: &[u8], from: Option<u64>) -> Watch {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let prefix = prefix.to_vec();
        let mut generations = self.generation.subscribe();
        let current = self.current.clone();
        let mut from = from;
        tokio::spawn(async move {
            loop {
                generations.mark_unchanged();
                let store = current.read().clone();
                let mut watch = store.watch(&prefix, from);
                loop {
                    tokio::select! {
                        item = watch.next() => match item {
                            Some(item) => if tx.send(item).await.is_err() { return },
                            None => return,
                        },
                        changed = generations.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                    }
                }
                // The store was switched: its revisions mean nothing to the new one.
                if tx.send(WatchItem::Resync).await.is_err() {
                    return;
                }
                from = None;
            }
        });
        Watch::channel(rx)
    }
}

//! This node's standing in the cluster: it reports itself alive under a lease
//! (so a dead or cut-off node turns `unreachable` within the lease's TTL), and
//! it keeps the set of removed nodes current from a watch, so the transport
//! refuses a removed node's next request.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::catalog::cluster::{Liveness, REVOKED_PREFIX};
use crate::catalog::kv::WatchItem;
use crate::catalog::Catalog;

/// A node that stops renewing is `unreachable` after this (at most, plus one
/// renewal period): under the 10 s the platform promises.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often the free space in the report is refreshed.
const REPORT_EVERY: u32 = 5;

pub struct Membership {
    catalog: Catalog,
    node_id: String,
    data_dir: PathBuf,
    revoked: RwLock<HashSet<String>>,
}

impl Membership {
    pub fn new(catalog: Catalog, node_id: String, data_dir: PathBuf) -> Arc<Self> {
        Arc::new(Membership { catalog, node_id, data_dir, revoked: Default::default() })
    }

    /// Whether `node` may still talk to this one.
    pub fn is_member(&self, node: &str) -> bool {
        !self.revoked.read().contains(node)
    }

    fn report(&self) -> Liveness {
        let (capacity_bytes, free_bytes) = crate::engine::disk_space(&self.data_dir).unwrap_or((0, 0));
        Liveness { capacity_bytes, free_bytes, at: crate::ids::now() }
    }

    /// Reports this node alive until the task is aborted. When the catalog
    /// fails (etcd down) it retries every second; a lease that expired
    /// meanwhile is replaced by a new one, so the node rejoins by itself.
    pub fn spawn_heartbeat(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.hold_lease().await {
                    tracing::warn!(error = %e, "cannot report this node alive; retrying");
                }
                tokio::time::sleep(RENEW_EVERY).await;
            }
        })
    }

    /// One lease's life: grant, report, renew until it is lost.
    async fn hold_lease(&self) -> anyhow::Result<()> {
        let kv = self.catalog.kv();
        let lease = kv.grant_lease(LEASE_TTL).await?;
        self.catalog.put_liveness(&self.node_id, lease, &self.report()).await?;
        let mut ticks = 0u32;
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            if !kv.keep_alive(lease).await? {
                anyhow::bail!("the registration lease expired");
            }
            ticks += 1;
            if ticks % REPORT_EVERY == 0 {
                self.catalog.put_liveness(&self.node_id, lease, &self.report()).await?;
            }
        }
    }

    /// Keeps the revoked set current: read once, then follow the watch; when
    /// the watch lost history, read again.
    pub fn spawn_revocation_watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match me.follow_revocations().await {
                    Ok(()) => {}
                    Err(e) => tracing::warn!(error = %e, "following removed nodes; retrying"),
                }
                tokio::time::sleep(RENEW_EVERY).await;
            }
        })
    }

    async fn follow_revocations(&self) -> anyhow::Result<()> {
        let snapshot = self.catalog.kv().range(REVOKED_PREFIX).await?;
        let ids: HashSet<String> = snapshot.items.iter().map(|(k, _)| String::from_utf8_lossy(&k[REVOKED_PREFIX.len()..]).into_owned()).collect();
        if ids.contains(&self.node_id) {
            tracing::error!("this node was removed from its cluster: members refuse its requests");
        }
        *self.revoked.write() = ids;
        let mut watch = self.catalog.kv().watch(REVOKED_PREFIX, Some(snapshot.revision));
        while let Some(item) = watch.next().await {
            match item {
                WatchItem::Event(ev) => {
                    let id = String::from_utf8_lossy(&ev.key[REVOKED_PREFIX.len()..]).into_owned();
                    if ev.value.is_some() {
                        tracing::info!(node = %id, "node removed from the cluster: refusing it from now on");
                        self.revoked.write().insert(id);
                    } else {
                        self.revoked.write().remove(&id);
                    }
                }
                WatchItem::Resync => return Ok(()),
            }
        }
        Ok(())
    }
}

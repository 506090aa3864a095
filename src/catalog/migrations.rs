//! Versioned migrations of the catalog's records, above the KV seam so they run
//! the same on every backend. Each step runs once, in order; the version is
//! advanced with a compare-and-swap so two nodes never run a step twice.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::kv::{Compare, KvStore, Op, Txn};
use super::{container_index, decode, encode, share_index, AccountRecord, CatalogResult, ContainerRecord, ProjectRecord, ServerRecord, ShareRecord, SnapshotRecord, TokenRecord, CATALOG_ID_KEY};

const VERSION_KEY: &[u8] = b"meta/schema_version";

/// A migration step: reads and rewrites records to the layout of its version.
type Step = fn(&Arc<dyn KvStore>) -> std::pin::Pin<Box<dyn std::future::Future<Output = CatalogResult<()>> + Send + '_>>;

/// Index `i` brings the catalog from version `i` to `i + 1`.
const STEPS: &[Step] = &[
    // 1: the initial layout; nothing to rewrite.
    |_| Box::pin(async { Ok(()) }),
    // 2: every record carries the version of its layout (`record_version`).
    |kv| Box::pin(stamp_record_versions(kv)),
    // 3: the catalog has an id (`meta/catalog_id`), containers and shares their index keys.
    |kv| Box::pin(name_and_index(kv)),
];

pub const CURRENT_VERSION: u64 = STEPS.len() as u64;

pub async fn run(kv: &Arc<dyn KvStore>) -> CatalogResult<()> {
    loop {
        let stored = kv.get(VERSION_KEY).await?.map(|v| v.value);
        let version: u64 = stored.as_deref().and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        if version >= CURRENT_VERSION {
            return Ok(());
        }
        STEPS[version as usize](kv).await?;
        let expected = match &stored {
            Some(v) => Compare::Equals(VERSION_KEY.to_vec(), v.clone()),
            None => Compare::Absent(VERSION_KEY.to_vec()),
        };
        kv.txn(Txn::when(vec![expected]).then(vec![Op::Put(VERSION_KEY.to_vec(), (version + 1).to_string().into_bytes())])).await?;
    }
}

/// Rewrites every record that does not carry its `record_version` yet as the
/// catalog writes it now: decoded (a missing version reads as 1) and encoded.
/// Besides the stamp, this leaves each record in the encoding the catalog's
/// compare-and-swaps expect. A record that does not decode is left as it is
/// (reading it reports it, as before).
async fn stamp_record_versions(kv: &Arc<dyn KvStore>) -> CatalogResult<()> {
    restamp::<AccountRecord>(kv, "accounts/").await?;
    restamp::<TokenRecord>(kv, "tokens/").await?;
    restamp::<ProjectRecord>(kv, "projects/").await?;
    restamp::<ContainerRecord>(kv, "containers/").await?;
    restamp::<SnapshotRecord>(kv, "snapshots/").await?;
    restamp::<ShareRecord>(kv, "shares/").await?;
    restamp::<ServerRecord>(kv, "servers/").await
}

async fn restamp<T: Serialize + DeserializeOwned>(kv: &Arc<dyn KvStore>, prefix: &str) -> CatalogResult<()> {
    for (key, old) in kv.range(prefix.as_bytes()).await?.items {
        let Ok(record) = decode::<T>(&key, &old.value) else { continue };
        let new = encode(&record);
        if new != old.value {
            // Changed meanwhile by another node: then it was written stamped.
            kv.txn(Txn::when(vec![Compare::ModRevision(key.clone(), old.mod_revision)]).then(vec![Op::Put(key, new)])).await?;
        }
    }
    Ok(())
}

/// Names the catalog (so a copy can tell it from another, see
/// [`super::copy_all`]) and writes the index keys of every container and
/// share that decodes. Idempotent: index keys are empty and put again as they are.
async fn name_and_index(kv: &Arc<dyn KvStore>) -> CatalogResult<()> {
    let id = crate::ids::new_id().into_bytes();
    kv.txn(Txn::when(vec![Compare::Absent(CATALOG_ID_KEY.to_vec())]).then(vec![Op::Put(CATALOG_ID_KEY.to_vec(), id)])).await?;
    let mut index = Vec::new();
    for (key, v) in kv.range(b"containers/").await?.items {
        if let Ok(record) = decode::<ContainerRecord>(&key, &v.value) {
            index.extend(container_index(&record));
        }
    }
    for (key, v) in kv.range(b"shares/").await?.items {
        if let Ok(record) = decode::<ShareRecord>(&key, &v.value) {
            index.extend(share_index(&record));
        }
    }
    for chunk in index.chunks(super::kv::MAX_TXN_OPS) {
        kv.txn(Txn::default().then(chunk.iter().map(|k| Op::Put(k.clone(), Vec::new())).collect())).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::sqlite::SqliteKv;

    #[tokio::test]
    async fn brings_a_new_catalog_to_the_current_version_once() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(SqliteKv::open(&dir.path().join("c.db")).unwrap());
        run(&kv).await.unwrap();
        run(&kv).await.unwrap();
        assert_eq!(kv.get(VERSION_KEY).await.unwrap().map(|v| v.value), Some(CURRENT_VERSION.to_string().into_bytes()));
    }

    /// A data dir of schema version 1 (records without `record_version`) is
    /// stamped at open, and its records then swap as any other.
    #[tokio::test]
    async fn an_earlier_data_dir_gets_its_records_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(SqliteKv::open(&dir.path().join("c.db")).unwrap());
        kv.put(VERSION_KEY, b"1").await.unwrap();
        let account = serde_json::json!({"id": "a1", "name": "alice", "is_admin": false, "created_at": "2025-01-01T00:00:00.000Z"});
        let container = serde_json::json!({
            "id": "c1", "account_id": "a1", "project_id": "p1", "name": "c", "server_id": "n1",
            "status": "running", "status_message": null, "source_container_id": null, "ssh_public_key": null,
            "rootfs_path": "/r", "rootfs_adopted": false, "cgroup_path": null, "env": {}, "resources": {},
            "firewall_rules": [], "network_rules": [], "created_at": "t", "updated_at": "t", "progress": null,
        });
        kv.put(b"accounts/a1", &serde_json::to_vec(&account).unwrap()).await.unwrap();
        kv.put(b"containers/c1", &serde_json::to_vec(&container).unwrap()).await.unwrap();
        kv.put(b"containers/bad", b"not json").await.unwrap();
        let catalog = crate::catalog::Catalog::open(kv.clone()).await.unwrap();
        assert_eq!(kv.get(VERSION_KEY).await.unwrap().map(|v| v.value), Some(CURRENT_VERSION.to_string().into_bytes()));
        for key in [&b"accounts/a1"[..], b"containers/c1"] {
            let stored: serde_json::Value = serde_json::from_slice(&kv.get(key).await.unwrap().unwrap().value).unwrap();
            assert_eq!(stored["record_version"], 1, "{}", String::from_utf8_lossy(key));
        }
        assert_eq!(kv.get(b"containers/bad").await.unwrap().map(|v| v.value), Some(b"not json".to_vec()), "left as it was");
        let (old, rev) = catalog.container_at("c1").await.unwrap().unwrap();
        let mut new = old.clone();
        new.status_message = Some("swapped".into());
        assert!(catalog.swap_container(rev, &old, &new).await.unwrap());
        assert_eq!(kv.get(b"container-by-server/n1/c1").await.unwrap().map(|v| v.value), Some(Vec::new()), "indexed by migration 3");
        assert!(kv.get(b"meta/catalog_id").await.unwrap().is_some());
    }
}

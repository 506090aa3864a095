//! Versioned migrations of the catalog's records, above the KV seam so they run
//! the same on every backend. Each step runs once, in order; the version is
//! advanced with a compare-and-swap so two nodes never run a step twice.

use std::sync::Arc;

use super::kv::{Compare, KvStore, Op, Txn};
use super::CatalogResult;

const VERSION_KEY: &[u8] = b"meta/schema_version";

/// A migration step: reads and rewrites records to the layout of its version.
type Step = fn(&Arc<dyn KvStore>) -> std::pin::Pin<Box<dyn std::future::Future<Output = CatalogResult<()>> + Send + '_>>;

/// Index `i` brings the catalog from version `i` to `i + 1`.
const STEPS: &[Step] = &[
    // 1: the initial layout; nothing to rewrite.
    |_| Box::pin(async { Ok(()) }),
];

pub const CURRENT_VERSION: u64 = STEPS.len() as u64;

pub async fn run(kv: &Arc<dyn KvStore>) -> CatalogResult<()> {
    loop {
        let stored = kv.get(VERSION_KEY).await?;
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
        assert_eq!(kv.get(VERSION_KEY).await.unwrap(), Some(CURRENT_VERSION.to_string().into_bytes()));
    }
}

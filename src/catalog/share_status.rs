//! Where each share stands in each target, as the node owning the target
//! decided: published so that every node answers a share's status, whichever
//! node mounts it. Key `share-status/<share>/<target>` → [`ShareStatusRecord`],
//! written by the target's node when the status changes, removed with it.

use serde::{Deserialize, Serialize};

use super::kv::Op;
use super::{decode, encode, Catalog, CatalogResult, Txn};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareStatusRecord {
    pub status: crate::shares::ShareStatus,
    pub message: Option<String>,
    /// The node that decided it.
    pub node: String,
}

pub const PREFIX: &[u8] = b"share-status/";

fn key(share: &str, target: &str) -> Vec<u8> {
    format!("share-status/{share}/{target}").into_bytes()
}

impl Catalog {
    /// Puts the given statuses and removes `gone`, in transactions.
    pub async fn publish_share_statuses(&self, changed: &[((String, String), ShareStatusRecord)], gone: &[(String, String)]) -> CatalogResult<()> {
        let ops: Vec<Op> =
            changed.iter().map(|((s, t), r)| Op::Put(key(s, t), encode(r))).chain(gone.iter().map(|(s, t)| Op::Delete(key(s, t)))).collect();
        for chunk in ops.chunks(super::kv::MAX_TXN_OPS) {
            self.kv.txn(Txn::default().then(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// Every published status, by (share, target), and the revision read at.
    pub async fn share_statuses(&self) -> CatalogResult<(Vec<((String, String), ShareStatusRecord)>, u64)> {
        let ranged = self.kv.range(PREFIX).await?;
        let mut out = Vec::new();
        for (k, v) in &ranged.items {
            if let Some(pair) = parse_key(k) {
                out.push((pair, decode(k, &v.value)?));
            }
        }
        Ok((out, ranged.revision))
    }
}

/// `(share, target)` of a status key.
pub fn parse_key(k: &[u8]) -> Option<(String, String)> {
    let rest = std::str::from_utf8(k.strip_prefix(PREFIX)?).ok()?;
    let (share, target) = rest.split_once('/')?;
    Some((share.to_string(), target.to_string()))
}

//! The cluster's own records: who is alive (leased), who was removed, and the
//! one-time join tokens.
//!
//! Keys: `server-alive/<id>` → [`Liveness`] under the node's lease (it
//! vanishes within the lease's TTL of the node's death), `revoked-nodes/<id>` →
//! [`Revocation`], `join-tokens/<id>` → [`JoinTokenRecord`].

use serde::{Deserialize, Serialize};

use super::kv::{Compare, LeaseId, Op, Txn};
use super::{decode, encode, server_key, Catalog, CatalogError, CatalogResult, ServerRecord};

/// What a live node reports under its lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Liveness {
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    /// RFC 3339 time of the report.
    pub at: String,
}

/// A node taken out of the cluster: its certificate is refused from then on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revocation {
    pub node_id: String,
    pub node_name: String,
    pub revoked_at: String,
}

/// A join token, stored as the hash of its secret; deleted when used.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JoinTokenRecord {
    pub id: String,
    pub secret_hash: String,
    /// Unix seconds from which the token is refused.
    pub expires_unix: i64,
    /// The node that holds the CA key and answers this token's join.
    pub signer_node: String,
    pub created_at: String,
}

fn alive_key(id: &str) -> Vec<u8> {
    format!("server-alive/{id}").into_bytes()
}
fn revoked_key(id: &str) -> Vec<u8> {
    format!("revoked-nodes/{id}").into_bytes()
}
fn join_token_key(id: &str) -> Vec<u8> {
    format!("join-tokens/{id}").into_bytes()
}

pub const REVOKED_PREFIX: &[u8] = b"revoked-nodes/";

impl Catalog {
    /// Reports this node alive under `lease`.
    pub async fn put_liveness(&self, node: &str, lease: LeaseId, report: &Liveness) -> CatalogResult<()> {
        self.kv.txn(Txn::when(vec![]).then(vec![Op::PutLeased(alive_key(node), encode(report), lease)])).await?;
        Ok(())
    }

    /// Every live node's last report, by node id.
    pub async fn liveness(&self) -> CatalogResult<std::collections::HashMap<String, Liveness>> {
        let mut out = std::collections::HashMap::new();
        for (k, v) in self.kv.range(b"server-alive/").await?.items {
            let id = String::from_utf8_lossy(&k["server-alive/".len()..]).into_owned();
            out.insert(id, decode(&k, &v.value)?);
        }
        Ok(out)
    }

    /// Every removed node's id.
    pub async fn revoked_nodes(&self) -> CatalogResult<Vec<Revocation>> {
        let mut out = Vec::new();
        for (k, v) in self.kv.range(REVOKED_PREFIX).await?.items {
            out.push(decode(&k, &v.value)?);
        }
        Ok(out)
    }

    pub async fn is_revoked(&self, node: &str) -> CatalogResult<bool> {
        Ok(self.kv.get(&revoked_key(node)).await?.is_some())
    }

    /// Takes `server` out: revoked, and no longer listed. One transaction, so
    /// a node is never listed and revoked at once.
    pub async fn revoke_server(&self, server: &ServerRecord, at: &str) -> CatalogResult<()> {
        let revocation = Revocation { node_id: server.id.clone(), node_name: server.name.clone(), revoked_at: at.to_string() };
        let ops = vec![Op::Put(revoked_key(&server.id), encode(&revocation)), Op::Delete(server_key(&server.id)), Op::Delete(alive_key(&server.id))];
        self.kv.txn(Txn::when(vec![]).then(ops)).await?;
        Ok(())
    }

    pub async fn put_join_token(&self, token: &JoinTokenRecord) -> CatalogResult<()> {
        let created = self.kv.txn(Txn::when(vec![Compare::Absent(join_token_key(&token.id))]).then(vec![Op::Put(join_token_key(&token.id), encode(token))])).await?;
        if !created.succeeded {
            return Err(CatalogError::Conflict(format!("join token {} exists", token.id)));
        }
        Ok(())
    }

    /// Takes the join token `id` out of the catalog if `check` accepts it,
    /// in one compare-and-swap, so that of two joins racing with one token
    /// exactly one gets it. `None`: no such token (or another join took it);
    /// `Some(Err)`: `check` refused it, and it stays.
    pub async fn redeem_join_token(&self, id: &str, check: impl FnOnce(&JoinTokenRecord) -> Result<(), String>) -> CatalogResult<Option<Result<JoinTokenRecord, String>>> {
        let key = join_token_key(id);
        let Some(current) = self.kv.get(&key).await? else { return Ok(None) };
        let record: JoinTokenRecord = decode(&key, &current.value)?;
        if let Err(reason) = check(&record) {
            return Ok(Some(Err(reason)));
        }
        let taken = self.kv.txn(Txn::when(vec![Compare::ModRevision(key.clone(), current.mod_revision)]).then(vec![Op::Delete(key)])).await?;
        Ok(taken.succeeded.then_some(Ok(record)))
    }
}

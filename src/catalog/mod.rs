//! The catalog: accounts, tokens, projects, containers and servers, as typed
//! records over the [`KvStore`] seam. In a cluster the same records live in etcd;
//! nothing here knows which engine serves the seam.
//!
//! Key layout (values are JSON; each record carries its `record_version`):
//! `accounts/<id>`, `account-names/<name>` → id, `tokens/<id>`, `projects/<id>`,
//! `project-names/<account>/<name>` → id, `containers/<id>`, `servers/<id>`,
//! `shares/<id>`, `share-mounts/<share>/<container>` → `1` (the target
//! accepted) or `0` (declined), `meta/schema_version`, `meta/catalog_id`.
//!
//! Indexes (empty values), written in the same transaction as their record so
//! hot paths range a prefix instead of scanning every record:
//! `container-by-server/<server>/<container>`,
//! `shares-by-source/<container>/<share>`, `shares-by-target/<container>/<share>`.
//! Writers of indexed records compare-and-swap on the record's revision.

pub mod cluster;
pub mod etcd;
pub mod kv;
mod migrations;
pub mod share_status;
pub mod sqlite;
pub mod switchable;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::containers::ContainerStatus;
use crate::progress::JobProgress;
pub use kv::{Compare, KvError, KvStore, Op, Txn, TxnOutcome, Versioned};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("{0}")]
    Conflict(String),
    #[error("corrupt catalog record {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

pub type CatalogResult<T> = Result<T, CatalogError>;

/// The layout of the records this daemon writes, carried in each (`record_version`)
/// so a later node knows an earlier node's records by it. Records written
/// before they carried it are version 1: the same layout, stamped by the
/// catalog's migration 2.
pub const RECORD_VERSION: u32 = 1;

fn first_record_version() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccountRecord {
    pub id: String,
    pub name: String,
    pub is_admin: bool,
    pub created_at: String,
    /// The record layout that wrote it ([`RECORD_VERSION`]).
    #[serde(default = "first_record_version")]
    pub record_version: u32,
}

/// A token is stored as the BLAKE3 hash of its secret, never the secret itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub account_id: String,
    pub secret_hash: String,
    pub created_at: String,
    /// RFC 3339; the token is refused from then on. Records written before
    /// tokens could expire have none (and never expire).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The record layout that wrote it ([`RECORD_VERSION`]).
    #[serde(default = "first_record_version")]
    pub record_version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProjectRecord {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: String,
    /// The record layout that wrote it ([`RECORD_VERSION`]).
    #[serde(default = "first_record_version")]
    pub record_version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    pub id: String,
    pub account_id: String,
    pub project_id: String,
    pub name: String,
    pub server_id: String,
    pub status: ContainerStatus,
    pub status_message: Option<String>,
    pub source_container_id: Option<String>,
    pub ssh_public_key: Option<String>,
    pub rootfs_path: String,
    /// Whether the daemon created the rootfs (under the data dir) or adopted it.
    pub rootfs_adopted: bool,
    pub cgroup_path: Option<String>,
    pub env: BTreeMap<String, String>,
    pub resources: serde_json::Map<String, Value>,
    pub firewall_rules: Vec<Value>,
    pub network_rules: Vec<Value>,
    pub created_at: String,
    pub updated_at: String,
    pub progress: Option<JobProgress>,
    /// The record layout that wrote it ([`RECORD_VERSION`]).
    #[serde(default = "first_record_version")]
    pub record_version: u32,
}

/// What a snapshot captured: the file system only (`stateless`), or process
/// state too (`stateful`, never claimed until really captured: SPEC).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    Stateless,
    Stateful,
}

impl SnapshotMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Stateless => "stateless",
            SnapshotMode::Stateful => "stateful",
        }
    }
}

/// A snapshot: its root tree hash (the id) and what the API shows of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotRecord {
    pub alias: String,
    pub id: String,
    pub container_id: String,
    pub account_id: String,
    pub server_id: String,
    pub mode: SnapshotMode,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// `expires_at` as Unix seconds, for the expiry sweep.
    pub expires_unix: Option<i64>,
    pub size_bytes: u64,
    pub new_bytes: u64,
    /// The record layout that wrote it ([`RECORD_VERSION`]).
    #[serde(default = "first_record_version")]
    pub record_version: u32,
}

/// A share: the source decides what (path, mode, who, until when, enabled).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShareRecord {
    pub id: String,
    pub account_id: String,
    pub source_container_id: String,
    pub source_path: String,
    pub mode: crate::shares::ShareMode,
    pub target_container_id: Option<String>,
    pub target_project_id: Option<String>,
    pub alias: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub expires_at: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    /// The record layout that wrote it ([`RECORD_VERSION`]).
    #[serde(default = "first_record_version")]
    pub record_version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerRecord {
    pub id: String,
    pub name: String,
    pub http: String,
    pub quic: String,
    pub version: String,
    pub started_at: String,
    /// The record layout that wrote it ([`RECORD_VERSION`]).
    #[serde(default = "first_record_version")]
    pub record_version: u32,
}

fn account_key(id: &str) -> Vec<u8> {
    format!("accounts/{id}").into_bytes()
}
fn account_name_key(name: &str) -> Vec<u8> {
    format!("account-names/{name}").into_bytes()
}
fn token_key(id: &str) -> Vec<u8> {
    format!("tokens/{id}").into_bytes()
}
fn project_key(id: &str) -> Vec<u8> {
    format!("projects/{id}").into_bytes()
}
fn project_name_key(account: &str, name: &str) -> Vec<u8> {
    format!("project-names/{account}/{name}").into_bytes()
}
fn container_key(id: &str) -> Vec<u8> {
    format!("containers/{id}").into_bytes()
}
fn snapshot_key(container: &str, alias: &str) -> Vec<u8> {
    format!("snapshots/{container}/{alias}").into_bytes()
}
fn share_key(id: &str) -> Vec<u8> {
    format!("shares/{id}").into_bytes()
}
fn mount_choice_key(share: &str, container: &str) -> Vec<u8> {
    format!("share-mounts/{share}/{container}").into_bytes()
}
fn server_key(id: &str) -> Vec<u8> {
    format!("servers/{id}").into_bytes()
}
fn container_by_server_key(server: &str, container: &str) -> Vec<u8> {
    format!("container-by-server/{server}/{container}").into_bytes()
}
fn shares_by_source_key(container: &str, share: &str) -> Vec<u8> {
    format!("shares-by-source/{container}/{share}").into_bytes()
}
fn shares_by_target_key(container: &str, share: &str) -> Vec<u8> {
    format!("shares-by-target/{container}/{share}").into_bytes()
}

/// The index keys of a container record.
fn container_index(c: &ContainerRecord) -> Vec<Vec<u8>> {
    vec![container_by_server_key(&c.server_id, &c.id)]
}

/// The index keys of a share record.
fn share_index(s: &ShareRecord) -> Vec<Vec<u8>> {
    let mut keys = vec![shares_by_source_key(&s.source_container_id, &s.id)];
    if let Some(target) = &s.target_container_id {
        keys.push(shares_by_target_key(target, &s.id));
    }
    keys
}

/// The operations that replace a record's index `old` by `new`: stale keys
/// deleted, missing ones put (unchanged keys are left alone, so a record's
/// frequent updates do not rewrite its index).
fn reindex(old: &[Vec<u8>], new: &[Vec<u8>]) -> Vec<Op> {
    let gone = old.iter().filter(|k| !new.contains(k)).map(|k| Op::Delete(k.clone()));
    let added = new.iter().filter(|k| !old.contains(k)).map(|k| Op::Put(k.clone(), Vec::new()));
    gone.chain(added).collect()
}

/// The last path segment of each key under `prefix` (the ids an index names).
fn index_ids(ranged: kv::Ranged) -> Vec<String> {
    ranged.items.into_iter().filter_map(|(k, _)| String::from_utf8(k).ok()?.rsplit('/').next().map(str::to_string)).collect()
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("catalog records always serialize")
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> CatalogResult<T> {
    serde_json::from_slice(bytes).map_err(|e| CatalogError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() })
}

/// Typed access to the catalog.
#[derive(Clone)]
pub struct Catalog {
    kv: Arc<dyn KvStore>,
}

impl Catalog {
    /// Wraps `kv` and brings its records to the current schema version.
    pub async fn open(kv: Arc<dyn KvStore>) -> CatalogResult<Self> {
        let catalog = Catalog { kv };
        migrations::run(&catalog.kv).await?;
        Ok(catalog)
    }

    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    /// Whether the catalog's store answers (names the cause when not).
    pub async fn health(&self) -> CatalogResult<()> {
        Ok(self.kv.health().await?)
    }

    async fn get_record<T: DeserializeOwned>(&self, key: Vec<u8>) -> CatalogResult<Option<T>> {
        Ok(self.get_versioned(key).await?.map(|(record, _)| record))
    }

    /// A record and the revision that last changed it.
    async fn get_versioned<T: DeserializeOwned>(&self, key: Vec<u8>) -> CatalogResult<Option<(T, u64)>> {
        match self.kv.get(&key).await? {
            Some(v) => Ok(Some((decode(&key, &v.value)?, v.mod_revision))),
            None => Ok(None),
        }
    }

    async fn list_records<T: DeserializeOwned>(&self, prefix: &str) -> CatalogResult<Vec<T>> {
        self.kv.range(prefix.as_bytes()).await?.items.iter().map(|(k, v)| decode(k, &v.value)).collect()
    }

    /// The records an index names (those deleted since the index was read are left out).
    async fn indexed_records<T: DeserializeOwned>(&self, index_prefix: String, key: fn(&str) -> Vec<u8>) -> CatalogResult<Vec<T>> {
        let mut out = Vec::new();
        for id in index_ids(self.kv.range(index_prefix.as_bytes()).await?) {
            if let Some(record) = self.get_record(key(&id)).await? {
                out.push(record);
            }
        }
        Ok(out)
    }

    // --- accounts and tokens

    pub async fn account(&self, id: &str) -> CatalogResult<Option<AccountRecord>> {
        self.get_record(account_key(id)).await
    }

    pub async fn account_by_name(&self, name: &str) -> CatalogResult<Option<AccountRecord>> {
        match self.kv.get(&account_name_key(name)).await? {
            Some(id) => self.account(&String::from_utf8_lossy(&id.value)).await,
            None => Ok(None),
        }
    }

    /// The account named `name`, created if it does not exist (one winner under races).
    pub async fn ensure_account(&self, name: &str, is_admin: bool) -> CatalogResult<AccountRecord> {
        loop {
            if let Some(existing) = self.account_by_name(name).await? {
                return Ok(existing);
            }
            let record = AccountRecord { id: crate::ids::new_id(), name: name.to_string(), is_admin, created_at: crate::ids::now(), record_version: RECORD_VERSION };
            let created = self
                .kv
                .txn(Txn::when(vec![Compare::Absent(account_name_key(name))]).then(vec![
                    Op::Put(account_name_key(name), record.id.clone().into_bytes()),
                    Op::Put(account_key(&record.id), encode(&record)),
                ]))
                .await?
                .succeeded;
            if created {
                return Ok(record);
            }
        }
    }

    pub async fn put_token(&self, token: &TokenRecord) -> CatalogResult<()> {
        self.kv.put(&token_key(&token.id), &encode(token)).await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> CatalogResult<Option<TokenRecord>> {
        self.get_record(token_key(id)).await
    }

    pub async fn tokens(&self) -> CatalogResult<Vec<TokenRecord>> {
        self.list_records("tokens/").await
    }

    /// Whether the token existed.
    pub async fn delete_token(&self, id: &str) -> CatalogResult<bool> {
        Ok(self.kv.delete(&token_key(id)).await?)
    }

    // --- projects

    /// Creates `project`; a name already used by the same account is a conflict.
    pub async fn create_project(&self, project: &ProjectRecord) -> CatalogResult<()> {
        let name_key = project_name_key(&project.account_id, &project.name);
        let created = self
            .kv
            .txn(Txn::when(vec![Compare::Absent(name_key.clone())]).then(vec![
                Op::Put(name_key, project.id.clone().into_bytes()),
                Op::Put(project_key(&project.id), encode(project)),
            ]))
            .await?
            .succeeded;
        if created {
            Ok(())
        } else {
            Err(CatalogError::Conflict(format!("a project named `{}` already exists", project.name)))
        }
    }

    pub async fn project(&self, id: &str) -> CatalogResult<Option<ProjectRecord>> {
        self.get_record(project_key(id)).await
    }

    pub async fn projects(&self) -> CatalogResult<Vec<ProjectRecord>> {
        self.list_records("projects/").await
    }

    // --- containers

    pub async fn container(&self, id: &str) -> CatalogResult<Option<ContainerRecord>> {
        self.get_record(container_key(id)).await
    }

    pub async fn containers(&self) -> CatalogResult<Vec<ContainerRecord>> {
        self.list_records("containers/").await
    }

    /// The container and the revision that last changed it, for [`Catalog::swap_container`].
    pub async fn container_at(&self, id: &str) -> CatalogResult<Option<(ContainerRecord, u64)>> {
        self.get_versioned(container_key(id)).await
    }

    /// The containers placed on `server` (by index, not a scan).
    pub async fn containers_on(&self, server: &str) -> CatalogResult<Vec<ContainerRecord>> {
        self.indexed_records(format!("container-by-server/{server}/"), container_key).await
    }

    /// Writes `c` (created or replaced, whatever is stored) with its index.
    pub async fn put_container(&self, c: &ContainerRecord) -> CatalogResult<()> {
        loop {
            let current = self.container_at(&c.id).await?;
            let (old_index, revision) = current.map_or((Vec::new(), 0), |(old, rev)| (container_index(&old), rev));
            let key = container_key(&c.id);
            let mut ops = vec![Op::Put(key.clone(), encode(c))];
            ops.extend(reindex(&old_index, &container_index(c)));
            if self.kv.txn(Txn::when(vec![Compare::ModRevision(key, revision)]).then(ops)).await?.succeeded {
                return Ok(());
            }
        }
    }

    /// Replaces `old`, read at `revision` (see [`Catalog::container_at`]), by
    /// `new` only if nobody changed the record since, so two concurrent
    /// transitions of one container cannot both win. `false`: changed meanwhile.
    pub async fn swap_container(&self, revision: u64, old: &ContainerRecord, new: &ContainerRecord) -> CatalogResult<bool> {
        let key = container_key(&new.id);
        let mut ops = vec![Op::Put(key.clone(), encode(new))];
        ops.extend(reindex(&container_index(old), &container_index(new)));
        Ok(self.kv.txn(Txn::when(vec![Compare::ModRevision(key, revision)]).then(ops)).await?.succeeded)
    }

    /// Deletes the container's record and its index; whether it existed.
    pub async fn delete_container(&self, id: &str) -> CatalogResult<bool> {
        loop {
            let Some((old, revision)) = self.container_at(id).await? else { return Ok(false) };
            let key = container_key(id);
            let mut ops = vec![Op::Delete(key.clone())];
            ops.extend(reindex(&container_index(&old), &[]));
            if self.kv.txn(Txn::when(vec![Compare::ModRevision(key, revision)]).then(ops)).await?.succeeded {
                return Ok(true);
            }
        }
    }

    // --- snapshots

    /// Records a snapshot; an alias already used in the container is a conflict.
    pub async fn create_snapshot(&self, s: &SnapshotRecord) -> CatalogResult<()> {
        let key = snapshot_key(&s.container_id, &s.alias);
        if self.kv.txn(Txn::when(vec![Compare::Absent(key.clone())]).then(vec![Op::Put(key, encode(s))])).await?.succeeded {
            Ok(())
        } else {
            Err(CatalogError::Conflict(format!("snapshot alias `{}` already exists in this container", s.alias)))
        }
    }

    pub async fn snapshot(&self, container: &str, alias: &str) -> CatalogResult<Option<SnapshotRecord>> {
        self.get_record(snapshot_key(container, alias)).await
    }

    /// The container's snapshots, oldest first.
    pub async fn snapshots_of(&self, container: &str) -> CatalogResult<Vec<SnapshotRecord>> {
        let mut all: Vec<SnapshotRecord> = self.list_records(&format!("snapshots/{container}/")).await?;
        all.sort_by(|a, b| (&a.created_at, &a.alias).cmp(&(&b.created_at, &b.alias)));
        Ok(all)
    }

    pub async fn all_snapshots(&self) -> CatalogResult<Vec<SnapshotRecord>> {
        self.list_records("snapshots/").await
    }

    pub async fn delete_snapshot(&self, container: &str, alias: &str) -> CatalogResult<bool> {
        Ok(self.kv.delete(&snapshot_key(container, alias)).await?)
    }

    // --- shares

    /// Writes `s` (created or replaced) with its index.
    pub async fn put_share(&self, s: &ShareRecord) -> CatalogResult<()> {
        loop {
            let current: Option<(ShareRecord, u64)> = self.get_versioned(share_key(&s.id)).await?;
            let (old_index, revision) = current.map_or((Vec::new(), 0), |(old, rev)| (share_index(&old), rev));
            let key = share_key(&s.id);
            let mut ops = vec![Op::Put(key.clone(), encode(s))];
            ops.extend(reindex(&old_index, &share_index(s)));
            if self.kv.txn(Txn::when(vec![Compare::ModRevision(key, revision)]).then(ops)).await?.succeeded {
                return Ok(());
            }
        }
    }

    /// The shares whose target is the container `container` (not those
    /// offered to its whole project), by index.
    pub async fn shares_targeting(&self, container: &str) -> CatalogResult<Vec<ShareRecord>> {
        self.indexed_records(format!("shares-by-target/{container}/"), share_key).await
    }

    /// The shares whose source is the container `container`, by index.
    pub async fn shares_from(&self, container: &str) -> CatalogResult<Vec<ShareRecord>> {
        self.indexed_records(format!("shares-by-source/{container}/"), share_key).await
    }

    pub async fn share(&self, id: &str) -> CatalogResult<Option<ShareRecord>> {
        self.get_record(share_key(id)).await
    }

    /// Every share, oldest first (the order that decides alias conflicts).
    pub async fn shares(&self) -> CatalogResult<Vec<ShareRecord>> {
        let mut all: Vec<ShareRecord> = self.list_records("shares/").await?;
        all.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(all)
    }

    /// Deletes a share, its index and every target's mount choice for it, at once.
    pub async fn delete_share(&self, id: &str) -> CatalogResult<bool> {
        loop {
            let key = share_key(id);
            let current: Option<(ShareRecord, u64)> = self.get_versioned(key.clone()).await?;
            let (old_index, revision) = current.as_ref().map_or((Vec::new(), 0), |(old, rev)| (share_index(old), *rev));
            let mut ops = vec![Op::Delete(key.clone()), Op::DeletePrefix(format!("share-mounts/{id}/").into_bytes())];
            ops.extend(reindex(&old_index, &[]));
            if self.kv.txn(Txn::when(vec![Compare::ModRevision(key, revision)]).then(ops)).await?.succeeded {
                return Ok(current.is_some());
            }
        }
    }

    /// The target's choice for a share: `true` accepts (needed for another
    /// account's share), `false` declines (any share).
    pub async fn set_mount_choice(&self, share: &str, container: &str, mount: bool) -> CatalogResult<()> {
        self.kv.put(&mount_choice_key(share, container), if mount { b"1" } else { b"0" }).await?;
        Ok(())
    }

    /// The target's recorded choice for one share, if it made one.
    pub async fn mount_choice(&self, share: &str, container: &str) -> CatalogResult<Option<bool>> {
        Ok(self.kv.get(&mount_choice_key(share, container)).await?.map(|v| v.value == b"1"))
    }

    /// Every recorded choice: `(share, container)` → whether the target said "mount".
    /// A pair with no record has made no choice.
    pub async fn mount_choices(&self) -> CatalogResult<std::collections::HashMap<(String, String), bool>> {
        let mut out = std::collections::HashMap::new();
        for (k, v) in self.kv.range(b"share-mounts/").await?.into_pairs() {
            let key = String::from_utf8_lossy(&k).into_owned();
            let mut parts = key.trim_start_matches("share-mounts/").splitn(2, '/');
            if let (Some(s), Some(c)) = (parts.next(), parts.next()) {
                out.insert((s.to_string(), c.to_string()), v == b"1");
            }
        }
        Ok(out)
    }

    /// Forgets every choice `container` made (it is being deleted).
    pub async fn forget_mount_choices_of(&self, container: &str) -> CatalogResult<()> {
        for (k, _) in self.kv.range(b"share-mounts/").await?.items {
            if k.ends_with(format!("/{container}").as_bytes()) {
                self.kv.delete(&k).await?;
            }
        }
        Ok(())
    }

    // --- servers

    pub async fn put_server(&self, s: &ServerRecord) -> CatalogResult<()> {
        self.kv.put(&server_key(&s.id), &encode(s)).await?;
        Ok(())
    }

    pub async fn servers(&self) -> CatalogResult<Vec<ServerRecord>> {
        self.list_records("servers/").await
    }

    pub async fn server(&self, id: &str) -> CatalogResult<Option<ServerRecord>> {
        self.get_record(server_key(id)).await
    }
}

/// The key naming a catalog: written once (migration 3), copied with it.
pub const CATALOG_ID_KEY: &[u8] = b"meta/catalog_id";

/// Makes `to` an exact copy of `from` as of one revision of `from` (for
/// `hoodyd cluster init`, moving the embedded catalog into etcd): every key
/// put, in transactions of at most [`kv::MAX_TXN_OPS`] operations, and keys
/// `to` holds that `from` lacks deleted. Idempotent: run again after a
/// failure midway, it finishes the copy. Refuses (`Conflict`) when `to`
/// already holds another catalog (a different `meta/catalog_id`), so it
/// never overwrites a live cluster's records with another node's. Keys are
/// copied without their leases (a lease belongs to its process); the number
/// of keys copied is returned. Writers of `from` must be stopped meanwhile:
/// what they write after the read is not copied.
pub async fn copy_all(from: &dyn KvStore, to: &dyn KvStore) -> CatalogResult<usize> {
    let source = from.range(b"").await?;
    let source_id = source.items.iter().find(|(k, _)| k == CATALOG_ID_KEY).map(|(_, v)| v.value.clone());
    if let (Some(theirs), Some(ours)) = (to.get(CATALOG_ID_KEY).await?, &source_id) {
        if &theirs.value != ours {
            return Err(CatalogError::Conflict(format!(
                "the destination holds another catalog ({}), not this one ({})",
                String::from_utf8_lossy(&theirs.value),
                String::from_utf8_lossy(ours)
            )));
        }
    }
    let wanted: std::collections::HashSet<&[u8]> = source.items.iter().map(|(k, _)| k.as_slice()).collect();
    let stale: Vec<Op> = to.range(b"").await?.items.into_iter().filter(|(k, _)| !wanted.contains(k.as_slice())).map(|(k, _)| Op::Delete(k)).collect();
    // The catalog id goes last: a destination that has it holds the whole copy
    // but for what a rerun finishes.
    let (id, rest): (Vec<_>, Vec<_>) = source.items.into_iter().partition(|(k, _)| k == CATALOG_ID_KEY);
    let puts: Vec<Op> = rest.into_iter().chain(id).map(|(k, v)| Op::Put(k, v.value)).collect();
    let copied = puts.len();
    for chunk in stale.chunks(kv::MAX_TXN_OPS).chain(puts.chunks(kv::MAX_TXN_OPS)) {
        to.txn(Txn::default().then(chunk.to_vec())).await?;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite_catalog(dir: &tempfile::TempDir) -> (Arc<dyn KvStore>, Catalog) {
        let kv: Arc<dyn KvStore> = Arc::new(sqlite::SqliteKv::open(&dir.path().join("c.db")).unwrap());
        (kv.clone(), Catalog::open(kv).await.unwrap())
    }

    fn container(id: &str, server: &str) -> ContainerRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "account_id": "a1", "project_id": "p1", "name": id, "server_id": server,
            "status": "running", "status_message": null, "source_container_id": null, "ssh_public_key": null,
            "rootfs_path": "/r", "rootfs_adopted": false, "cgroup_path": null, "env": {}, "resources": {},
            "firewall_rules": [], "network_rules": [], "created_at": "t", "updated_at": "t", "progress": null,
        }))
        .unwrap()
    }

    fn share(id: &str, source: &str, target: Option<&str>) -> ShareRecord {
        serde_json::from_value(serde_json::json!({
            "id": id, "account_id": "a1", "source_container_id": source, "source_path": "/data", "mode": "readonly",
            "target_container_id": target, "target_project_id": null, "alias": id, "description": null,
            "enabled": true, "expires_at": null, "created_at": "t", "updated_at": "t",
        }))
        .unwrap()
    }

    async fn keys(kv: &Arc<dyn KvStore>, prefix: &str) -> Vec<String> {
        kv.range(prefix.as_bytes()).await.unwrap().items.into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect()
    }

    #[tokio::test]
    async fn index_keys_follow_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let (kv, catalog) = sqlite_catalog(&dir).await;
        catalog.put_container(&container("c1", "n1")).await.unwrap();
        catalog.put_container(&container("c2", "n1")).await.unwrap();
        catalog.put_container(&container("c3", "n2")).await.unwrap();
        assert_eq!(keys(&kv, "container-by-server/").await, ["container-by-server/n1/c1", "container-by-server/n1/c2", "container-by-server/n2/c3"]);
        let on_n1: Vec<_> = catalog.containers_on("n1").await.unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(on_n1, ["c1", "c2"]);

        // Moved to another server by a swap: the index moves with it.
        let (old, rev) = catalog.container_at("c2").await.unwrap().unwrap();
        let moved = ContainerRecord { server_id: "n2".into(), ..old.clone() };
        assert!(catalog.swap_container(rev, &old, &moved).await.unwrap());
        assert_eq!(catalog.containers_on("n2").await.unwrap().len(), 2);
        assert!(catalog.delete_container("c2").await.unwrap());
        assert!(!catalog.delete_container("c2").await.unwrap());
        assert_eq!(keys(&kv, "container-by-server/").await, ["container-by-server/n1/c1", "container-by-server/n2/c3"]);

        catalog.put_share(&share("s1", "c1", Some("c3"))).await.unwrap();
        catalog.put_share(&share("s2", "c1", None)).await.unwrap();
        catalog.set_mount_choice("s1", "c3", true).await.unwrap();
        assert_eq!(keys(&kv, "shares-by-").await, ["shares-by-source/c1/s1", "shares-by-source/c1/s2", "shares-by-target/c3/s1"]);
        assert_eq!(catalog.shares_from("c1").await.unwrap().len(), 2);
        assert_eq!(catalog.shares_targeting("c3").await.unwrap()[0].id, "s1");
        // Retargeted: the old target's index goes.
        catalog.put_share(&share("s1", "c1", Some("c1"))).await.unwrap();
        assert!(catalog.shares_targeting("c3").await.unwrap().is_empty());
        assert!(catalog.delete_share("s1").await.unwrap());
        assert_eq!(keys(&kv, "shares-by-").await, ["shares-by-source/c1/s2"]);
        assert!(keys(&kv, "share-mounts/").await.is_empty(), "its mount choices went with it");
        assert!(!catalog.delete_share("s1").await.unwrap());
    }

    /// Two transitions of one container read at the same revision: the
    /// second loses, even when it would write the same bytes as the record had.
    #[tokio::test]
    async fn a_swap_fails_when_another_writer_changed_the_record_in_between() {
        let dir = tempfile::tempdir().unwrap();
        let (_kv, catalog) = sqlite_catalog(&dir).await;
        catalog.put_container(&container("c1", "n1")).await.unwrap();
        let (old, rev) = catalog.container_at("c1").await.unwrap().unwrap();
        let stopped = ContainerRecord { status: ContainerStatus::Stopped, ..old.clone() };
        assert!(catalog.swap_container(rev, &old, &stopped).await.unwrap());
        // Another writer puts the original record back (an ABA the old byte compare missed).
        let (now, rev2) = catalog.container_at("c1").await.unwrap().unwrap();
        assert!(catalog.swap_container(rev2, &now, &old).await.unwrap());
        let paused = ContainerRecord { status: ContainerStatus::Paused, ..old.clone() };
        assert!(!catalog.swap_container(rev, &old, &paused).await.unwrap(), "a stale revision loses");
        assert_eq!(catalog.container("c1").await.unwrap().unwrap().status, ContainerStatus::Running);
    }

    /// The embedded catalog copied into etcd: every key, again without harm,
    /// and never over another catalog.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copy_all_moves_a_catalog_into_etcd_once() {
        let Some((etcd, remote)) = etcd::test_store().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let (local, catalog) = sqlite_catalog(&dir).await;
        for i in 0..300 {
            catalog.put_container(&container(&format!("c{i:03}"), "n1")).await.unwrap();
        }
        let total = local.range(b"").await.unwrap().items.len();
        remote.put(b"stale", b"from a failed attempt").await.unwrap();
        assert_eq!(copy_all(local.as_ref(), &remote).await.unwrap(), total);
        assert_eq!(copy_all(local.as_ref(), &remote).await.unwrap(), total, "idempotent");
        let copied = remote.range(b"").await.unwrap().into_pairs();
        assert_eq!(copied, local.range(b"").await.unwrap().into_pairs());
        let remote: Arc<dyn KvStore> = Arc::new(remote);
        let in_etcd = Catalog::open(remote.clone()).await.unwrap();
        assert_eq!(in_etcd.containers_on("n1").await.unwrap().len(), 300);

        let other_dir = tempfile::tempdir().unwrap();
        let (other, _) = sqlite_catalog(&other_dir).await;
        assert!(matches!(copy_all(other.as_ref(), remote.as_ref()).await, Err(CatalogError::Conflict(_))), "another catalog is refused");
        drop(etcd);
    }

    #[test]
    fn a_snapshot_mode_is_the_word_earlier_daemons_wrote() {
        assert_eq!(serde_json::to_string(&SnapshotMode::Stateless).unwrap(), "\"stateless\"");
        assert_eq!(serde_json::from_str::<SnapshotMode>("\"stateful\"").unwrap(), SnapshotMode::Stateful);
        assert!(serde_json::from_str::<SnapshotMode>("\"frozen\"").is_err());
    }

    /// A share record as written when it held the API's `ShareMode` (and
    /// carried no version) reads into the domain's, and is written back byte
    /// for byte but for the version stamp.
    #[test]
    fn a_share_record_of_an_earlier_daemon_reads_unchanged() {
        for (wire, mode) in [("readonly", crate::shares::ShareMode::ReadOnly), ("readwrite", crate::shares::ShareMode::ReadWrite)] {
            let old = format!(
                r#"{{"id":"s1","account_id":"a1","source_container_id":"c1","source_path":"/data","mode":"{wire}","target_container_id":"c2","target_project_id":null,"alias":"data","description":null,"enabled":true,"expires_at":null,"created_at":"2025-11-09T15:00:00.000Z","updated_at":"2025-11-09T15:00:00.000Z"}}"#
            );
            let record: ShareRecord = decode(b"shares/s1", old.as_bytes()).unwrap();
            assert_eq!((record.mode, record.record_version), (mode, 1));
            let stamped = format!("{},\"record_version\":1}}", old.strip_suffix('}').unwrap());
            assert_eq!(String::from_utf8(encode(&record)).unwrap(), stamped);
        }
    }

    /// A container record as written when it held the API's `ContainerStatus`
    /// and `Progress` reads into the catalog's own types and is written back
    /// the same but for the version stamp; so does a job's progress that
    /// predates its later fields.
    #[test]
    fn a_container_record_of_an_earlier_daemon_reads_unchanged() {
        use hoody_api::model as wire;
        let progress = wire::Progress {
            phase: "storing".into(),
            bytes_done: 1,
            bytes_total: 2,
            files_done: 3,
            files_total: 4,
            rate: 5,
            totals_exact: true,
            job: "snapshot".into(),
            snapshot: Some("s".into()),
            started_at: Some("2025-11-09T15:00:00.000Z".into()),
        };
        let statuses = [wire::ContainerStatus::Running, wire::ContainerStatus::Stopped, wire::ContainerStatus::Paused, wire::ContainerStatus::Copying, wire::ContainerStatus::Failed, wire::ContainerStatus::Deleting];
        for status in statuses {
            let old = serde_json::json!({
                "id": "c1", "account_id": "a1", "project_id": "p1", "name": "c", "server_id": "n1",
                "status": status, "status_message": null, "source_container_id": null, "ssh_public_key": null,
                "rootfs_path": "/r", "rootfs_adopted": false, "cgroup_path": null, "env": {}, "resources": {},
                "firewall_rules": [], "network_rules": [], "created_at": "t", "updated_at": "t", "progress": progress,
            });
            let record: ContainerRecord = decode(b"containers/c1", &serde_json::to_vec(&old).unwrap()).unwrap();
            assert_eq!(record.status.as_str(), status.as_str());
            let mut stamped = old.clone();
            stamped["record_version"] = 1.into();
            assert_eq!(serde_json::from_slice::<Value>(&encode(&record)).unwrap(), stamped);
        }
        let earliest = serde_json::json!({"phase": "scanning", "bytes_done": 0, "bytes_total": 0, "files_done": 0, "files_total": 0});
        let p: JobProgress = serde_json::from_value(earliest).unwrap();
        assert_eq!((p.rate, p.totals_exact, p.job.as_str(), p.snapshot, p.started_at), (0, false, "", None, None));
    }
}

//! The catalog: accounts, tokens, projects, containers and servers, as typed
//! records over the [`KvStore`] seam. In a cluster the same records live in etcd;
//! nothing here knows which engine serves the seam.
//!
//! Key layout (values are JSON; each record carries its `record_version`):
//! `accounts/<id>`, `account-names/<name>` → id, `tokens/<id>`, `projects/<id>`,
//! `project-names/<account>/<name>` → id, `containers/<id>`, `servers/<id>`,
//! `shares/<id>`, `share-mounts/<share>/<container>` → `1` (the target
//! accepted) or `0` (declined), `meta/schema_version`.

pub mod kv;
mod migrations;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::containers::ContainerStatus;
use crate::progress::JobProgress;
pub use kv::{Compare, KvError, KvStore, Op, Txn};

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

    async fn get_record<T: DeserializeOwned>(&self, key: Vec<u8>) -> CatalogResult<Option<T>> {
        match self.kv.get(&key).await? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn list_records<T: DeserializeOwned>(&self, prefix: &str) -> CatalogResult<Vec<T>> {
        self.kv.range(prefix.as_bytes()).await?.iter().map(|(k, v)| decode(k, v)).collect()
    }

    // --- accounts and tokens

    pub async fn account(&self, id: &str) -> CatalogResult<Option<AccountRecord>> {
        self.get_record(account_key(id)).await
    }

    pub async fn account_by_name(&self, name: &str) -> CatalogResult<Option<AccountRecord>> {
        match self.kv.get(&account_name_key(name)).await? {
            Some(id) => self.account(&String::from_utf8_lossy(&id)).await,
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
                .await?;
            if created {
                return Ok(record);
            }
        }
    }

    pub async fn put_token(&self, token: &TokenRecord) -> CatalogResult<()> {
        Ok(self.kv.put(&token_key(&token.id), &encode(token)).await?)
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
            .await?;
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

    pub async fn put_container(&self, c: &ContainerRecord) -> CatalogResult<()> {
        Ok(self.kv.put(&container_key(&c.id), &encode(c)).await?)
    }

    /// Replaces `old` by `new` only if the stored record is still `old`, so two
    /// concurrent transitions of one container cannot both win.
    pub async fn swap_container(&self, old: &ContainerRecord, new: &ContainerRecord) -> CatalogResult<bool> {
        let key = container_key(&old.id);
        Ok(self.kv.txn(Txn::when(vec![Compare::Equals(key.clone(), encode(old))]).then(vec![Op::Put(key, encode(new))])).await?)
    }

    pub async fn delete_container(&self, id: &str) -> CatalogResult<bool> {
        Ok(self.kv.delete(&container_key(id)).await?)
    }

    // --- snapshots

    /// Records a snapshot; an alias already used in the container is a conflict.
    pub async fn create_snapshot(&self, s: &SnapshotRecord) -> CatalogResult<()> {
        let key = snapshot_key(&s.container_id, &s.alias);
        if self.kv.txn(Txn::when(vec![Compare::Absent(key.clone())]).then(vec![Op::Put(key, encode(s))])).await? {
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

    pub async fn put_share(&self, s: &ShareRecord) -> CatalogResult<()> {
        Ok(self.kv.put(&share_key(&s.id), &encode(s)).await?)
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

    /// Deletes a share and every target's mount choice for it.
    pub async fn delete_share(&self, id: &str) -> CatalogResult<bool> {
        for (k, _) in self.kv.range(format!("share-mounts/{id}/").as_bytes()).await? {
            self.kv.delete(&k).await?;
        }
        Ok(self.kv.delete(&share_key(id)).await?)
    }

    /// The target's choice for a share: `true` accepts (needed for another
    /// account's share), `false` declines (any share).
    pub async fn set_mount_choice(&self, share: &str, container: &str, mount: bool) -> CatalogResult<()> {
        Ok(self.kv.put(&mount_choice_key(share, container), if mount { b"1" } else { b"0" }).await?)
    }

    /// Every recorded choice: `(share, container)` → whether the target said "mount".
    /// A pair with no record has made no choice.
    pub async fn mount_choices(&self) -> CatalogResult<std::collections::HashMap<(String, String), bool>> {
        let mut out = std::collections::HashMap::new();
        for (k, v) in self.kv.range(b"share-mounts/").await? {
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
        for (k, _) in self.kv.range(b"share-mounts/").await? {
            if k.ends_with(format!("/{container}").as_bytes()) {
                self.kv.delete(&k).await?;
            }
        }
        Ok(())
    }

    // --- servers

    pub async fn put_server(&self, s: &ServerRecord) -> CatalogResult<()> {
        Ok(self.kv.put(&server_key(&s.id), &encode(s)).await?)
    }

    pub async fn servers(&self) -> CatalogResult<Vec<ServerRecord>> {
        self.list_records("servers/").await
    }

    pub async fn server(&self, id: &str) -> CatalogResult<Option<ServerRecord>> {
        self.get_record(server_key(id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

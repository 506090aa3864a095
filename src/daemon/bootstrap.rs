//! First start and every start: the data dir's layout, the node's identity and
//! cluster certificate, the catalog, and the admin account with its token.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hoody_transport::tls::{issue_node_identity, new_cluster_ca};
use hoody_transport::ClusterIdentity;

use crate::catalog::sqlite::SqliteKv;
use crate::catalog::switchable::SwitchableKv;
use crate::catalog::Catalog;
use crate::cluster::config::ClusterConfig;
use crate::durable::write_atomic;
use crate::layout::{DataLayout, NodeIdentity};

pub const ADMIN_ACCOUNT: &str = "admin";

/// Everything `serve` needs from the data dir.
pub struct Bootstrapped {
    pub node: NodeIdentity,
    pub tls: ClusterIdentity,
    pub catalog: Catalog,
    /// The store under `catalog`, which `cluster init` may move into etcd.
    pub catalog_store: Arc<SwitchableKv>,
    /// The node's cluster; `None` on its own.
    pub cluster: Option<ClusterConfig>,
}

/// Creates what is missing (idempotent): directories, node identity, cluster CA
/// and node certificate, catalog, admin account and `admin.token` (mode 0600).
pub async fn init(layout: &DataLayout, node_name: &str) -> anyhow::Result<Bootstrapped> {
    layout.create_dirs().with_context(|| format!("creating data dir {}", layout.root().display()))?;
    let node = node_identity(layout, node_name)?;
    let tls = tls_identity(layout, &node)?;
    let catalog_store = SwitchableKv::new(open_store(layout).await?);
    let catalog = Catalog::open(catalog_store.clone()).await?;
    let admin = catalog.ensure_account(ADMIN_ACCOUNT, true).await?;
    if !layout.admin_token().exists() {
        let token = crate::tokens::issue(&catalog, &admin).await?;
        write_atomic(&layout.admin_token(), format!("{token}\n").as_bytes(), 0o600).context("writing admin.token")?;
    }
    let cluster = crate::cluster::config::load(layout.root())?;
    Ok(Bootstrapped { node, tls, catalog, catalog_store, cluster })
}

/// Opens the node's catalog: in etcd for a node of a cluster, else the
/// embedded one of `layout` (usable while the daemon runs).
pub async fn open_catalog(layout: &DataLayout) -> anyhow::Result<Catalog> {
    Ok(Catalog::open(open_store(layout).await?).await?)
}

/// The store under the node's catalog: etcd in a cluster, else embedded.
async fn open_store(layout: &DataLayout) -> anyhow::Result<Arc<dyn crate::catalog::KvStore>> {
    std::fs::create_dir_all(layout.root()).with_context(|| format!("creating {}", layout.root().display()))?;
    if let Some(cluster) = crate::cluster::config::load(layout.root())? {
        return connect_etcd(&cluster).await;
    }
    let path = layout.catalog();
    Ok(Arc::new(tokio::task::spawn_blocking(move || SqliteKv::open(&path)).await??))
}

/// The cluster's catalog store in etcd.
pub async fn connect_etcd(cluster: &ClusterConfig) -> anyhow::Result<Arc<dyn crate::catalog::KvStore>> {
    let kv = crate::catalog::etcd::EtcdKv::connect(&cluster.etcd).await.with_context(|| format!("connecting to etcd at {}", cluster.etcd.join(",")))?;
    Ok(Arc::new(kv.with_namespace(cluster.prefix.as_bytes())))
}

pub(crate) fn node_identity(layout: &DataLayout, node_name: &str) -> anyhow::Result<NodeIdentity> {
    let path = layout.node_file();
    let mut node = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<NodeIdentity>(&bytes).with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NodeIdentity { id: crate::ids::new_id(), name: node_name.to_string() },
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // The id is forever; the name follows the configuration.
    node.name = node_name.to_string();
    write_atomic(&path, &serde_json::to_vec_pretty(&node)?, 0o644)?;
    Ok(node)
}

/// A single node is its own cluster: it makes a CA when none was installed
/// (`hoodyd cert` verbs of the cluster issue replace these files on joining).
fn tls_identity(layout: &DataLayout, node: &NodeIdentity) -> anyhow::Result<ClusterIdentity> {
    let dir = layout.tls();
    if dir.join("node.pem").exists() {
        return Ok(ClusterIdentity::load(&dir)?);
    }
    let (ca_cert, ca_key) = if dir.join("ca.key").exists() {
        (std::fs::read_to_string(dir.join("ca.pem"))?, std::fs::read_to_string(dir.join("ca.key"))?)
    } else {
        let (cert, key) = new_cluster_ca()?;
        write_atomic(&dir.join("ca.key"), key.as_bytes(), 0o600)?;
        (cert, key)
    };
    let identity = issue_node_identity(&ca_cert, &ca_key, &node.id, &node.name)?;
    identity.save(&dir)?;
    Ok(identity)
}

/// `hoodyd token create`: a new token for `account` (created if new), refused
/// from `lifetime` on when given. Writes the catalog directly, daemon or not: a
/// new token has nothing cached anywhere.
pub async fn create_token(data_dir: &Path, account: &str, lifetime: Option<std::time::Duration>) -> anyhow::Result<String> {
    crate::containers::validate_name("account", account).map_err(|e| anyhow::anyhow!("{e}"))?;
    let layout = DataLayout::new(data_dir);
    let catalog = open_catalog(&layout).await?;
    let account = catalog.ensure_account(account, account == ADMIN_ACCOUNT).await?;
    Ok(crate::tokens::issue_expiring(&catalog, &account, lifetime).await?.1)
}

/// `hoodyd token list`: every token (of `account` when given) with its account's
/// name, oldest first; read from the catalog, daemon or not. Never secrets.
pub async fn list_tokens(data_dir: &Path, account: Option<&str>) -> anyhow::Result<Vec<(hoody_api::model::Token, String)>> {
    let catalog = open_catalog(&DataLayout::new(data_dir)).await?;
    let wanted = match account {
        Some(name) => Some(catalog.account_by_name(name).await?.ok_or_else(|| anyhow::anyhow!("no account named `{name}`"))?.id),
        None => None,
    };
    let now = time::OffsetDateTime::now_utc();
    let mut records: Vec<_> = catalog.tokens().await?.into_iter().filter(|t| wanted.as_ref().is_none_or(|w| *w == t.account_id)).collect();
    records.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
    let mut out = Vec::new();
    for t in &records {
        let name = catalog.account(&t.account_id).await?.map(|a| a.name).unwrap_or_else(|| "?".into());
        out.push((crate::tokens::listed(t, now), name));
    }
    Ok(out)
}

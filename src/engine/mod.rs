//! The node's engine behind the HTTP API: accounts, projects, containers and
//! servers over the catalog, and the container root filesystems on this node.

// The API face of each domain: the HoodyService calls, over the mechanisms
// in crate::snapshot, crate::shares and crate::tokens.
mod cluster_api;
mod errors;
mod jobs;
mod share_api;
mod snapshot_api;
mod token_api;
mod wire;

pub use errors::EngineError;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use hoody_api::model::*;
use hoody_api::{ApiError, HoodyService};

use crate::catalog::{Catalog, CatalogError, ContainerRecord, ProjectRecord, ServerRecord};
use crate::containers::{transition, ContainerStatus, validate_cgroup_path, validate_env, validate_name, validate_ssh_key};
use crate::layout::{DataLayout, NodeIdentity};
use crate::store::BlockStore;


pub struct Engine {
    catalog: Catalog,
    layout: DataLayout,
    /// Canonical data dir, for the "not inside the data dir" rule of adoption.
    data_dir: PathBuf,
    node: NodeIdentity,
    started: Instant,
    started_at: String,
    /// Serializes the decisions that compare one container's rootfs with the others'.
    rootfs_claims: tokio::sync::Mutex<()>,
    store: Arc<BlockStore>,
    /// One filesystem operation (snapshot, restore) at a time per container.
    op_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set when snapshots went away: the next GC round has work.
    gc_dirty: AtomicBool,
    /// The garbage collection running and the last one, for `GET /admin/gc`.
    gc_state: std::sync::Mutex<snapshot_api::GcState>,
    tokens: crate::tokens::TokenCache,
    mounts: Arc<crate::shares::mounts::MountManager>,
    /// Per (share, target): `active`, `failed`, … and why.
    share_status: std::sync::Mutex<share_api::ShareStatuses>,
    /// Every node's published statuses (`share-status/`), for targets on other nodes.
    published_status: std::sync::Mutex<share_api::ShareStatuses>,
    /// What this node last published of its own targets.
    own_published: tokio::sync::Mutex<share_api::ShareStatuses>,
    share_reconcile: tokio::sync::Mutex<()>,
    /// Failed mounts to try again (`enabled: true`, a new alias or mode, a
    /// target's choice): (share, one target or all).
    share_retry: std::sync::Mutex<std::collections::HashSet<(String, Option<String>)>>,
    /// Where an admin may point the daemon at the host (adoption, cgroups).
    host_paths: crate::daemon::config::HostPaths,
    /// The link to the other servers, set once the QUIC endpoint is bound.
    cluster: std::sync::OnceLock<Arc<crate::cluster::ClusterLink>>,
    /// Container id → the node that owns it (containers never move), for forwarding.
    owners: std::sync::Mutex<HashMap<String, String>>,
    /// Node id → its QUIC address as last read (read again after a failure).
    server_addrs: std::sync::Mutex<HashMap<String, std::net::SocketAddr>>,
    /// Shares across nodes (as a source and as a target), set with the link.
    remote_shares: std::sync::OnceLock<Arc<crate::shares::remote::RemoteShares>>,
}

impl Engine {
    pub fn new(catalog: Catalog, layout: DataLayout, node: NodeIdentity, host_paths: crate::daemon::config::HostPaths) -> std::io::Result<Arc<Self>> {
        let data_dir = layout.root().canonicalize()?;
        let store = Arc::new(BlockStore::open(&layout.store())?);
        let tokens = crate::tokens::TokenCache::new(&catalog);
        Ok(Arc::new(Engine {
            catalog,
            layout,
            data_dir,
            node,
            started: Instant::now(),
            started_at: crate::ids::now(),
            rootfs_claims: Default::default(),
            store,
            op_locks: Default::default(),
            gc_dirty: AtomicBool::new(false),
            gc_state: Default::default(),
            tokens,
            mounts: Default::default(),
            share_status: Default::default(),
            published_status: Default::default(),
            own_published: Default::default(),
            share_reconcile: Default::default(),
            share_retry: Default::default(),
            host_paths,
            cluster: std::sync::OnceLock::new(),
            remote_shares: std::sync::OnceLock::new(),
            owners: Default::default(),
            server_addrs: Default::default(),
        }))
    }

    /// Gives the engine its link to the other servers (once, at start).
    pub fn set_cluster(&self, link: Arc<crate::cluster::ClusterLink>) {
        let _ = self.cluster.set(link);
    }

    /// Shares across nodes: mounts of sources elsewhere, and sessions served
    /// to other nodes' mounts (kept in step by the share reconciler).
    pub fn set_remote_shares(&self, remote: Arc<crate::shares::remote::RemoteShares>) {
        self.mounts.set_remote(remote.clone());
        let _ = self.remote_shares.set(remote);
    }

    pub fn node(&self) -> &NodeIdentity {
        &self.node
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Registers this node in the catalog with its bound addresses.
    pub async fn register(&self, http: &str, quic: &str) -> Result<(), CatalogError> {
        self.catalog
            .put_server(&ServerRecord {
                id: self.node.id.clone(),
                name: self.node.name.clone(),
                http: http.into(),
                quic: quic.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                started_at: self.started_at.clone(),
                record_version: crate::catalog::RECORD_VERSION,
            })
            .await
    }

    /// Finishes or undoes what a crash interrupted: deletions of containers that
    /// were under way, and rootfs directories whose creation never got a record.
    pub async fn recover(&self) -> anyhow::Result<()> {
        // First of all: a container a killed daemon left frozen runs again.
        crate::snapshot::freeze::thaw_marked(&self.frozen_marks())?;
        let records = self.catalog.containers_on(&self.node.id).await?;
        for c in records.iter().filter(|c| c.server_id == self.node.id) {
            match crate::snapshot::freeze::remove_leftover_snapshot(std::path::Path::new(&c.rootfs_path)) {
                Ok(true) => tracing::info!(container = %c.id, "removed the temporary subvolume snapshot of a snapshot a restart cut off"),
                Ok(false) => {}
                Err(e) => tracing::warn!(container = %c.id, error = %e, "could not remove the temporary subvolume snapshot a restart left"),
            }
        }
        for c in records.iter().filter(|c| c.server_id == self.node.id && c.status == ContainerStatus::Deleting) {
            tracing::info!(container = %c.id, "finishing a deletion interrupted by a restart");
            self.remove_rootfs(c).await?;
            self.forget_snapshots(&c.id).await?;
            self.catalog.delete_container(&c.id).await?;
        }
        self.finish_interrupted_restores().await?;
        self.clear_interrupted_jobs().await?;
        let known: std::collections::HashSet<_> = records.iter().map(|c| c.id.as_str()).collect();
        for entry in std::fs::read_dir(self.layout.containers())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(name.as_str()) {
                tracing::info!(dir = %entry.path().display(), "removing a container directory that has no record");
                remove_tree_blocking(entry.path()).await?;
            }
        }
        Ok(())
    }

    /// Removes the directory of a container the daemon created, by
    /// descriptors, after detaching whatever is mounted inside (never
    /// descending into a mount). An adopted rootfs is the operator's: it is
    /// released and its files stay. True if the files were removed.
    async fn remove_rootfs(&self, c: &ContainerRecord) -> std::io::Result<bool> {
        if c.rootfs_adopted {
            return Ok(false);
        }
        remove_tree_blocking(self.layout.container_dir(&c.id)).await.map(|()| true)
    }

    async fn with_count(&self, c: ContainerRecord) -> Result<Container, EngineError> {
        let n = self.catalog.snapshots_of(&c.id).await?.len() as u64;
        Ok(self.to_api(c, n))
    }

    fn op_lock(&self, container: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.op_locks.lock().expect("op locks").entry(container.to_string()).or_default().clone()
    }

    fn server_name(&self, server_id: &str) -> String {
        if server_id == self.node.id {
            self.node.name.clone()
        } else {
            server_id.to_string()
        }
    }

    fn to_api(&self, c: ContainerRecord, snapshot_count: u64) -> Container {
        Container {
            server_name: self.server_name(&c.server_id),
            id: c.id,
            name: c.name,
            project_id: c.project_id,
            server_id: c.server_id,
            status: c.status.into(),
            status_message: c.status_message,
            source_container_id: c.source_container_id,
            snapshot_count,
            ssh_public_key: c.ssh_public_key,
            rootfs_path: c.rootfs_path,
            cgroup_path: c.cgroup_path,
            env: c.env,
            resources: c.resources,
            firewall_rules: c.firewall_rules,
            network_rules: c.network_rules,
            created_at: c.created_at,
            updated_at: c.updated_at,
            progress: c.progress.map(Into::into),
        }
    }

    /// [`Self::owned_container`] and the revision it was read at, for a swap.
    async fn owned_container_at(&self, who: &Principal, id: &str) -> Result<(ContainerRecord, u64), EngineError> {
        match self.catalog.container_at(id).await? {
            Some((c, rev)) if c.account_id == who.account_id && c.status != ContainerStatus::Deleting => Ok((c, rev)),
            _ => Err(EngineError::not_found(format!("container `{id}` not found"))),
        }
    }

    /// The caller's container `id`; another account's or a vanishing one is "not found".
    async fn owned_container(&self, who: &Principal, id: &str) -> Result<ContainerRecord, EngineError> {
        match self.catalog.container(id).await? {
            Some(c) if c.account_id == who.account_id && c.status != ContainerStatus::Deleting => Ok(c),
            _ => Err(EngineError::not_found(format!("container `{id}` not found"))),
        }
    }

    async fn owned_project(&self, who: &Principal, id: &str, field: Option<&str>) -> Result<ProjectRecord, EngineError> {
        match self.catalog.project(id).await? {
            Some(p) if p.account_id == who.account_id => Ok(p),
            _ => {
                let msg = format!("project `{id}` not found");
                Err(match field {
                    Some(f) => EngineError::not_found_field(f, msg),
                    None => EngineError::not_found(msg),
                })
            }
        }
    }

    /// Checks an existing directory offered as a rootfs: from the admin only,
    /// beneath the operator's `adopt_roots`, a directory, not in the data dir,
    /// and overlapping no other container's rootfs.
    async fn adoptable_rootfs(&self, who: &Principal, requested: &str) -> Result<PathBuf, EngineError> {
        let field = "rootfs_path";
        if !who.is_admin {
            return Err(EngineError::forbidden_field(field, "`rootfs_path` (adopting a host directory) is for the admin account only"));
        }
        let path = Path::new(requested);
        if !path.is_absolute() {
            return Err(EngineError::invalid(field, format!("`rootfs_path` must be absolute, got `{requested}`")));
        }
        let canonical = self.host_paths.adoptable(path).map_err(|e| match e {
            crate::daemon::config::HostPathError::Unreadable(why) => EngineError::invalid(field, format!("`rootfs_path` {requested}: {why}")),
            refused => EngineError::forbidden_field(field, format!("`rootfs_path` {requested}: {refused}")),
        })?;
        if !canonical.is_dir() {
            return Err(EngineError::invalid(field, format!("`rootfs_path` {requested} is not a directory")));
        }
        if canonical.starts_with(&self.data_dir) || self.data_dir.starts_with(&canonical) {
            return Err(EngineError::invalid(field, format!("`rootfs_path` {requested} overlaps the daemon's data dir")));
        }
        // Host paths are this node's: only its own containers can overlap.
        for other in self.catalog.containers_on(&self.node.id).await? {
            let theirs = Path::new(&other.rootfs_path);
            if canonical.starts_with(theirs) || theirs.starts_with(&canonical) {
                return Err(EngineError::invalid(field, format!("`rootfs_path` {requested} overlaps the rootfs of container `{}`", other.id)));
            }
        }
        Ok(canonical)
    }

    /// A cgroup to freeze for snapshots: from the admin only, beneath the
    /// operator's `cgroup_root`.
    fn allowed_cgroup(&self, who: &Principal, requested: &str) -> Result<(), EngineError> {
        let field = "cgroup_path";
        if !who.is_admin {
            return Err(EngineError::forbidden_field(field, "`cgroup_path` (a host cgroup) is for the admin account only"));
        }
        validate_cgroup_path(requested)?;
        self.host_paths.cgroup_allowed(Path::new(requested)).map_err(|e| EngineError::forbidden_field(field, format!("`cgroup_path` {requested}: {e}")))
    }
}

/// [`crate::beneath::remove_dir_tree`] off the runtime's workers.
async fn remove_tree_blocking(dir: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || crate::beneath::remove_dir_tree(&dir)).await.map_err(std::io::Error::other)?
}

/// `(capacity, free)` bytes of the filesystem holding `path`.
pub(crate) fn disk_space(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

fn json_objects(rules: Vec<serde_json::Map<String, serde_json::Value>>) -> Vec<serde_json::Value> {
    rules.into_iter().map(serde_json::Value::Object).collect()
}

#[async_trait]
impl HoodyService for Engine {
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        match self.tokens.verify(&self.catalog, token).await? {
            Some(account) => Ok(Principal { account_id: account.id, account_name: account.name, is_admin: account.is_admin }),
            None => Err(EngineError::Unauthenticated("invalid token".into()).into()),
        }
    }

    async fn create_project(&self, who: &Principal, req: CreateProject) -> Result<Project, ApiError> {
        validate_name("name", &req.name)?;
        let record = ProjectRecord { id: crate::ids::new_id(), account_id: who.account_id.clone(), name: req.name, description: req.description, created_at: crate::ids::now(), record_version: crate::catalog::RECORD_VERSION };
        self.catalog.create_project(&record).await?;
        Ok(Project { id: record.id, name: record.name, description: record.description, created_at: record.created_at })
    }

    async fn list_projects(&self, who: &Principal) -> Result<Vec<Project>, ApiError> {
        let mut projects: Vec<_> = self.catalog.projects().await?.into_iter().filter(|p| p.account_id == who.account_id).collect();
        projects.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(projects.into_iter().map(|p| Project { id: p.id, name: p.name, description: p.description, created_at: p.created_at }).collect())
    }

    async fn get_project(&self, who: &Principal, id: &str) -> Result<Project, ApiError> {
        let p = self.owned_project(who, id, None).await?;
        Ok(Project { id: p.id, name: p.name, description: p.description, created_at: p.created_at })
    }

    async fn create_container(&self, who: &Principal, req: CreateContainer) -> Result<Container, ApiError> {
        validate_name("name", &req.name)?;
        if let Some(server) = &req.server_id {
            if server != &self.node.id {
                return Err(EngineError::not_found_field("server_id", format!("server `{server}` not found")).into());
            }
        }
        if let Some(key) = &req.ssh_public_key {
            validate_ssh_key(key)?;
        }
        if let Some(cg) = &req.cgroup_path {
            self.allowed_cgroup(who, cg)?;
        }
        let env = req.env.unwrap_or_default();
        validate_env(&env)?;
        self.owned_project(who, &req.project_id, Some("project_id")).await?;

        let _claims = self.rootfs_claims.lock().await;
        let id = crate::ids::new_id();
        let (rootfs, adopted) = match &req.rootfs_path {
            Some(requested) => (self.adoptable_rootfs(who, requested).await?, true),
            None => {
                let rootfs = self.layout.container_dir(&id).join("rootfs");
                std::fs::create_dir_all(&rootfs).map_err(EngineError::internal)?;
                (rootfs, false)
            }
        };
        let now = crate::ids::now();
        let record = ContainerRecord {
            id,
            account_id: who.account_id.clone(),
            project_id: req.project_id,
            name: req.name,
            server_id: self.node.id.clone(),
            status: ContainerStatus::Running,
            status_message: None,
            source_container_id: None,
            ssh_public_key: req.ssh_public_key,
            rootfs_path: rootfs.to_string_lossy().into_owned(),
            rootfs_adopted: adopted,
            cgroup_path: req.cgroup_path,
            env,
            resources: req.resources.unwrap_or_default(),
            firewall_rules: json_objects(req.firewall_rules.unwrap_or_default()),
            network_rules: json_objects(req.network_rules.unwrap_or_default()),
            created_at: now.clone(),
            updated_at: now,
            progress: None,
            record_version: crate::catalog::RECORD_VERSION,
        };
        // The record is the commit point: a crash before it leaves only a
        // directory without a record, which `recover` removes.
        self.catalog.put_container(&record).await?;
        drop(_claims);
        if self.shares_concern(&record).await {
            self.reconcile_shares().await; // a project-wide share reaches the new container
        }
        Ok(self.to_api(record, 0))
    }

    async fn list_containers(&self, who: &Principal, f: ContainerFilter) -> Result<Vec<Container>, ApiError> {
        let mut mine: Vec<_> = self
            .catalog
            .containers()
            .await?
            .into_iter()
            .filter(|c| c.account_id == who.account_id && c.status != ContainerStatus::Deleting)
            .filter(|c| f.project_id.as_ref().is_none_or(|p| &c.project_id == p))
            .filter(|c| f.server_id.as_ref().is_none_or(|s| &c.server_id == s))
            .filter(|c| f.source_container_id.as_ref().is_none_or(|s| c.source_container_id.as_ref() == Some(s)))
            .collect();
        mine.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        let mut counts: HashMap<String, u64> = HashMap::new();
        for s in self.catalog.all_snapshots().await? {
            *counts.entry(s.container_id).or_default() += 1;
        }
        Ok(mine.into_iter().map(|c| {
            let n = counts.get(&c.id).copied().unwrap_or(0);
            self.to_api(c, n)
        }).collect())
    }

    async fn get_container(&self, who: &Principal, id: &str) -> Result<Container, ApiError> {
        let c = self.owned_container(who, id).await?;
        Ok(self.with_count(c).await?)
    }

    async fn update_container(&self, who: &Principal, id: &str, req: UpdateContainer) -> Result<Container, ApiError> {
        if let Some(name) = &req.name {
            validate_name("name", name)?;
        }
        if let Some(Some(key)) = &req.ssh_public_key {
            validate_ssh_key(key)?;
        }
        if let Some(Some(cg)) = &req.cgroup_path {
            self.allowed_cgroup(who, cg)?;
        }
        if let Some(env) = &req.env {
            validate_env(env)?;
        }
        loop {
            let (old, rev) = self.owned_container_at(who, id).await?;
            let mut new = old.clone();
            if let Some(name) = &req.name {
                new.name = name.clone();
            }
            if let Some(cg) = &req.cgroup_path {
                new.cgroup_path = cg.clone();
            }
            if let Some(env) = &req.env {
                new.env = env.clone();
            }
            if let Some(r) = &req.resources {
                new.resources = r.clone();
            }
            if let Some(key) = &req.ssh_public_key {
                new.ssh_public_key = key.clone();
            }
            if let Some(rules) = &req.firewall_rules {
                new.firewall_rules = json_objects(rules.clone());
            }
            if let Some(rules) = &req.network_rules {
                new.network_rules = json_objects(rules.clone());
            }
            new.updated_at = crate::ids::now();
            if self.catalog.swap_container(rev, &old, &new).await? {
                return Ok(self.with_count(new).await?);
            }
        }
    }

    async fn delete_container(&self, who: &Principal, id: &str) -> Result<ContainerDeleted, ApiError> {
        let (old, rev) = self.owned_container_at(who, id).await?;
        if old.status == ContainerStatus::Copying {
            return Err(EngineError::Conflict(format!("container `{id}` is copying; wait for the copy to finish")).into());
        }
        let lock = self.op_lock(id);
        let _busy = lock.try_lock().map_err(|_| EngineError::Conflict(format!("container `{id}` is busy with a snapshot or restore")))?;
        let mut deleting = old.clone();
        deleting.status = ContainerStatus::Deleting;
        deleting.updated_at = crate::ids::now();
        if !self.catalog.swap_container(rev, &old, &deleting).await? {
            return Err(EngineError::Conflict(format!("container `{id}` changed during the request; retry")).into());
        }
        // Marked first, removed second: a crash in between is finished by `recover`.
        // Shares come off first, so removing the rootfs never reaches into a mount.
        self.detach_container_shares(id).await?;
        let removed = self.remove_rootfs(&deleting).await.map_err(|e| EngineError::failed(format!("removing the root filesystem of container `{id}` failed: {}", hoody_api::io_reason(&e)), e))?;
        self.forget_snapshots(id).await?;
        self.catalog.delete_container(id).await?;
        Ok(ContainerDeleted { id: id.to_string(), rootfs_removed: removed })
    }

    async fn container_operation(&self, who: &Principal, id: &str, op: ContainerOperation) -> Result<Container, ApiError> {
        loop {
            let (old, rev) = self.owned_container_at(who, id).await?;
            let status = transition(old.status, op).map_err(EngineError::Conflict)?;
            let mut new = old.clone();
            new.status = status;
            new.status_message = None;
            new.updated_at = crate::ids::now();
            if self.catalog.swap_container(rev, &old, &new).await? {
                // A stopped source makes its shares fail fast; a started one serves again.
                if self.shares_concern(&new).await {
                    self.reconcile_shares().await;
                }
                return Ok(self.with_count(new).await?);
            }
        }
    }

    async fn create_snapshot(&self, who: &Principal, container: &str, req: CreateSnapshot) -> Result<SnapshotCreated, ApiError> {
        self.snapshot_create(who, container, req).await.map_err(Into::into)
    }

    async fn list_snapshots(&self, who: &Principal, container: &str) -> Result<Vec<Snapshot>, ApiError> {
        self.owned_container(who, container).await?;
        Ok(self.catalog.snapshots_of(container).await?.into_iter().map(snapshot_api::to_api).collect())
    }

    async fn get_snapshot(&self, who: &Principal, container: &str, alias: &str) -> Result<Snapshot, ApiError> {
        self.owned_container(who, container).await?;
        Ok(snapshot_api::to_api(self.owned_snapshot(container, alias).await?))
    }

    async fn restore_snapshot(&self, who: &Principal, container: &str, alias: &str) -> Result<RestoreOutcome, ApiError> {
        self.snapshot_restore(who, container, alias).await.map_err(Into::into)
    }

    async fn delete_snapshot(&self, who: &Principal, container: &str, alias: &str) -> Result<(), ApiError> {
        self.owned_container(who, container).await?;
        self.owned_snapshot(container, alias).await?;
        self.catalog.delete_snapshot(container, alias).await?;
        self.gc_dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn list_tokens(&self, who: &Principal) -> Result<Vec<Token>, ApiError> {
        self.list_account_tokens(who).await.map_err(Into::into)
    }
    async fn create_token(&self, who: &Principal, req: CreateToken) -> Result<NewToken, ApiError> {
        self.create_account_token(who, req).await.map_err(Into::into)
    }
    async fn revoke_token(&self, who: &Principal, id: &str) -> Result<(), ApiError> {
        self.revoke_some_token(who, id, false).await.map_err(Into::into)
    }
    async fn admin_revoke_token(&self, who: &Principal, id: &str) -> Result<(), ApiError> {
        self.revoke_some_token(who, id, true).await.map_err(Into::into)
    }

    async fn collect_garbage(&self, who: &Principal) -> Result<GcSummary, ApiError> {
        if !who.is_admin {
            return Err(EngineError::Forbidden("garbage collection needs an admin token".into()).into());
        }
        Ok(self.gc_now().await.map_err(|e| EngineError::failed("garbage collection failed; see the daemon's log", format!("{e:#}")))?)
    }

    async fn gc_status(&self, who: &Principal) -> Result<GcStatus, ApiError> {
        if !who.is_admin {
            return Err(EngineError::Forbidden("garbage collection needs an admin token".into()).into());
        }
        Ok(self.gc_status())
    }

    async fn create_share(&self, who: &Principal, container: &str, req: CreateShare) -> Result<Share, ApiError> {
        self.share_create(who, container, req).await.map_err(Into::into)
    }

    async fn list_shares(&self, who: &Principal, container: Option<&str>) -> Result<Vec<Share>, ApiError> {
        self.share_list(who, container).await.map_err(Into::into)
    }

    async fn get_share(&self, who: &Principal, container: Option<&str>, share: &str) -> Result<Share, ApiError> {
        self.share_get(who, container, share).await.map_err(Into::into)
    }

    async fn update_share(&self, who: &Principal, container: Option<&str>, share: &str, req: UpdateShare) -> Result<Share, ApiError> {
        self.share_update(who, container, share, req).await.map_err(Into::into)
    }

    async fn delete_share(&self, who: &Principal, share: &str) -> Result<(), ApiError> {
        self.share_delete(who, share).await.map_err(Into::into)
    }

    async fn list_incoming(&self, who: &Principal, container: Option<&str>) -> Result<Vec<IncomingShare>, ApiError> {
        self.incoming(who, container).await.map_err(Into::into)
    }

    async fn get_incoming(&self, who: &Principal, container: Option<&str>, share: &str) -> Result<IncomingShare, ApiError> {
        self.incoming_one(who, container, share).await.map_err(Into::into)
    }

    async fn set_mount(&self, who: &Principal, container: Option<&str>, share: &str, mount: bool) -> Result<IncomingShare, ApiError> {
        self.mount_choice(who, container, share, mount).await.map_err(Into::into)
    }

    async fn list_servers(&self, _who: &Principal) -> Result<Vec<Server>, ApiError> {
        Ok(self.servers_with_state().await?)
    }

    async fn get_server(&self, who: &Principal, id: &str) -> Result<Server, ApiError> {
        Ok(self.list_servers(who).await?.into_iter().find(|s| s.id == id).ok_or_else(|| EngineError::not_found(format!("server `{id}` not found")))?)
    }

    async fn remove_server(&self, who: &Principal, id: &str) -> Result<ServerRemoved, ApiError> {
        Ok(self.remove_server_now(who, id).await?)
    }

    async fn init_cluster(&self, who: &Principal, req: InitCluster) -> Result<ClusterInitialized, ApiError> {
        Ok(self.move_catalog_to_etcd(who, req).await?)
    }

    async fn create_join_token(&self, who: &Principal, req: CreateJoinToken) -> Result<JoinToken, ApiError> {
        Ok(self.new_join_token(who, req).await?)
    }

    async fn owner_of(&self, _who: &Principal, target: &RequestTarget) -> Result<Option<String>, ApiError> {
        Ok(self.owner(target).await?)
    }

    async fn forward(&self, node: &str, request: ForwardedRequest) -> Result<ForwardedResponse, ApiError> {
        Ok(self.forward_to(node, request).await?)
    }

    /// `ok` only when the catalog answers a read and the store a check, each
    /// within a few seconds; else names what failed (the error is logged).
    async fn health(&self) -> Health {
        const WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
        let mut failed = Vec::new();
        match tokio::time::timeout(WITHIN, self.catalog.server(&self.node.id)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "health check: the catalog failed a read");
                failed.push("catalog");
            }
            Err(_) => {
                tracing::error!("health check: the catalog did not answer within {WITHIN:?}");
                failed.push("catalog");
            }
        }
        let store = self.store.clone();
        match tokio::time::timeout(WITHIN, tokio::task::spawn_blocking(move || store.check())).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "health check: the store failed its check");
                failed.push("store");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "health check: the store check did not finish");
                failed.push("store");
            }
            Err(_) => {
                tracing::error!("health check: the store did not answer within {WITHIN:?}");
                failed.push("store");
            }
        }
        let status = if failed.is_empty() { "ok".to_string() } else { format!("unavailable: {} failing", failed.join(" and ")) };
        Health { status, version: env!("CARGO_PKG_VERSION").into() }
    }

    fn metrics_text(&self) -> String {
        let shares = self.mounts.totals();
        format!(
            "# HELP hoody_build_info Version of this hoodyd.\n# TYPE hoody_build_info gauge\nhoody_build_info{{version=\"{}\"}} 1\n\
             # HELP hoody_uptime_seconds Seconds since this hoodyd started.\n# TYPE hoody_uptime_seconds gauge\nhoody_uptime_seconds {}\n\
             # HELP hoody_store_objects Blocks and trees in the node's store.\n# TYPE hoody_store_objects gauge\nhoody_store_objects {}\n\
             # HELP hoody_store_bytes Bytes of the store's pack files.\n# TYPE hoody_store_bytes gauge\nhoody_store_bytes {}\n\
             # HELP hoody_share_mounts Share mounts on this node.\n# TYPE hoody_share_mounts gauge\nhoody_share_mounts {}\n\
             # HELP hoody_share_requests_total Kernel requests answered by share mounts.\n# TYPE hoody_share_requests_total counter\nhoody_share_requests_total {}\n\
             # HELP hoody_share_errors_total Kernel requests of share mounts answered with an error.\n# TYPE hoody_share_errors_total counter\nhoody_share_errors_total {}\n\
             # HELP hoody_share_requests_in_flight Kernel requests of share mounts being served.\n# TYPE hoody_share_requests_in_flight gauge\nhoody_share_requests_in_flight {}\n\
             # HELP hoody_share_held_files Files known to targets' kernels, one open descriptor each.\n# TYPE hoody_share_held_files gauge\nhoody_share_held_files {}\n\
             # HELP hoody_share_directories_read_ahead_total Directory listings served from what a share mount read ahead of a walker.\n# TYPE hoody_share_directories_read_ahead_total counter\nhoody_share_directories_read_ahead_total {}\n",
            env!("CARGO_PKG_VERSION"),
            self.started.elapsed().as_secs(),
            self.store.object_count(),
            self.store.disk_bytes().unwrap_or(0),
            shares.mounts,
            shares.requests,
            shares.errors,
            shares.in_flight,
            shares.held_files,
            shares.directories_read_ahead
        )
    }
}

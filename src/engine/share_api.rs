//! Shares between containers of this node: the registry (over the catalog),
//! the target's choice to mount, and reconciliation of the mounts with it.
//! The source decides WHAT (path, mode, who, until when, enabled); the target
//! decides IF. A share into another account's container is an offer: it mounts
//! there only once that container accepted it (`mount: true`), and in an alias
//! conflict a container's own account's shares win over another account's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hoody_api::model::*;

use super::{Engine, EngineError};
use crate::catalog::{ContainerRecord, ShareRecord};
use crate::containers::ContainerStatus;
use crate::ids::{now_unix, validate_alias};
use crate::shares::mounts::DesiredMount;
use crate::shares::{ShareMode, ShareStatus};

/// How often expiry and fixed sources are noticed without an API call.
pub const SHARE_RECONCILE_INTERVAL: Duration = Duration::from_secs(2);

/// How long a reconciliation waits for the sources of remote mounts to answer.
const REMOTE_PROBE_DEADLINE: Duration = Duration::from_millis(1500);

type Key = (String, String);

/// Per (share, target): status and why.
pub(super) type ShareStatuses = HashMap<Key, (ShareStatus, Option<String>)>;

/// Per (share, target): the target's recorded choice (`mount: true|false`).
type MountChoices = HashMap<Key, bool>;

/// Whether a share comes from another account than its target's: an offer.
fn is_offer(share: &ShareRecord, target: &ContainerRecord) -> bool {
    share.account_id != target.account_id
}

/// Whether `target` wants `share` mounted: its recorded choice, else yes for its
/// own account's share and no for another account's offer.
fn wants_mount(share: &ShareRecord, target: &ContainerRecord, choices: &MountChoices) -> bool {
    choices.get(&(share.id.clone(), target.id.clone())).copied().unwrap_or(!is_offer(share, target))
}

fn validate_expiry(expires_at: TimeInput) -> Result<i64, EngineError> {
    let t = expires_at.unix();
    if time::OffsetDateTime::from_unix_timestamp(t).is_err() {
        return Err(EngineError::invalid("expires_at", format!("`expires_at` {t} is out of range (Unix seconds or RFC 3339, before the year 10000)")));
    }
    if t <= now_unix() {
        return Err(EngineError::invalid("expires_at", format!("`expires_at` must be in the future, got {}", format_unix(t))));
    }
    Ok(t)
}

/// Unix seconds as the API answers times: RFC 3339 in UTC.
fn format_unix(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t).map(crate::ids::format_time).unwrap_or_else(|_| t.to_string())
}

/// One target of a share as the engine sees it: the container, its status and why.
struct TargetState<'a> {
    container: &'a ContainerRecord,
    status: ShareStatus,
    message: Option<String>,
}

/// A share's status summed up over its targets (documented on [`Share::status`]).
fn summary_status(share: &ShareRecord, targets: &[TargetState]) -> (ShareStatus, Option<String>) {
    if !share.enabled {
        return (ShareStatus::Disabled, Some("the share is disabled by its source".into()));
    }
    if share.expires_at.is_some_and(|e| e <= now_unix()) {
        return (ShareStatus::Expired, Some("the share has expired".into()));
    }
    let failed: Vec<&TargetState> = targets.iter().filter(|t| t.status == ShareStatus::Failed).collect();
    if let Some(first) = failed.first() {
        let others = match failed.len() {
            1 => String::new(),
            n => format!(" (and {} more failed target{})", n - 1, if n == 2 { "" } else { "s" }),
        };
        return (ShareStatus::Failed, Some(format!("container {}: {}{others}", first.container.id, first.message.as_deref().unwrap_or("failed"))));
    }
    if targets.iter().any(|t| t.status == ShareStatus::Active) {
        return (ShareStatus::Active, None);
    }
    if targets.is_empty() {
        return (ShareStatus::Pending, Some("no target container yet".into()));
    }
    if let Some(t) = targets.iter().find(|t| t.status != ShareStatus::Unmounted) {
        return (ShareStatus::Pending, Some(format!("container {}: {}", t.container.id, t.message.as_deref().unwrap_or("not mounted yet"))));
    }
    (ShareStatus::Unmounted, Some("every target chose not to mount it".into()))
}

fn mount_path(alias: &str) -> String {
    format!("/hoody/shares/{alias}")
}

/// Whether `source_path` is a directory of the container whose root is
/// `rootfs`, found as a share's source is served (by descriptors, no symlink).
fn source_dir_exists(rootfs: &Path, source_path: &str) -> bool {
    crate::shares::local_backend::open_source_dir(rootfs, Path::new(source_path)).is_ok()
}

impl Engine {
    async fn owned_share(&self, who: &Principal, id: &str) -> Result<ShareRecord, EngineError> {
        match self.catalog.share(id).await? {
            Some(s) if s.account_id == who.account_id => Ok(s),
            _ => Err(EngineError::not_found(format!("share `{id}` not found"))),
        }
    }

    /// The caller's share `id`, created from `container` when one is named.
    async fn owned_share_in(&self, who: &Principal, container: Option<&str>, id: &str) -> Result<ShareRecord, EngineError> {
        let s = self.owned_share(who, id).await?;
        if let Some(container) = container.filter(|c| *c != s.source_container_id) {
            return Err(EngineError::not_found(format!("share `{id}` not found in container `{container}`")));
        }
        Ok(s)
    }

    /// The containers a share is offered to (on this node), its source excluded.
    fn targets_of<'a>(share: &ShareRecord, containers: &'a [ContainerRecord]) -> Vec<&'a ContainerRecord> {
        containers
            .iter()
            .filter(|c| c.status != ContainerStatus::Deleting && c.id != share.source_container_id)
            .filter(|c| match (&share.target_container_id, &share.target_project_id) {
                (Some(t), _) => &c.id == t,
                (None, Some(p)) => &c.project_id == p,
                _ => false,
            })
            .collect()
    }

    /// `target`'s status for `share` as the last reconciliation recorded it.
    fn target_state<'a>(&self, share: &ShareRecord, target: &'a ContainerRecord) -> TargetState<'a> {
        let key = (share.id.clone(), target.id.clone());
        // A target on another node: as its node published it.
        let table = if target.server_id == self.node.id { &self.share_status } else { &self.published_status };
        let (status, message) = table.lock().expect("share status").get(&key).cloned().unwrap_or((ShareStatus::Pending, None));
        TargetState { container: target, status, message }
    }

    fn target_view(share: &ShareRecord, state: TargetState, choices: &MountChoices) -> ShareTarget {
        ShareTarget {
            container_id: state.container.id.clone(),
            mount: wants_mount(share, state.container, choices),
            status: state.status.into(),
            status_message: state.message,
            mount_path: mount_path(&share.alias),
        }
    }

    async fn share_view(&self, share: ShareRecord) -> Result<Share, EngineError> {
        let containers = self.catalog.containers().await?;
        let choices = self.catalog.mount_choices().await?;
        let states: Vec<TargetState> = Self::targets_of(&share, &containers).into_iter().map(|c| self.target_state(&share, c)).collect();
        let (status, status_message) = summary_status(&share, &states);
        let targets: Vec<ShareTarget> = states.into_iter().map(|t| Self::target_view(&share, t, &choices)).collect();
        Ok(Share {
            id: share.id,
            source_container_id: share.source_container_id,
            source_path: share.source_path,
            mode: share.mode.into(),
            target_container_id: share.target_container_id,
            target_project_id: share.target_project_id,
            alias: share.alias,
            description: share.description,
            enabled: share.enabled,
            expires_at: share.expires_at.map(format_unix),
            created_at: share.created_at,
            updated_at: share.updated_at,
            status: status.into(),
            status_message,
            targets,
        })
    }

    pub(super) async fn share_create(&self, who: &Principal, container: &str, req: CreateShare) -> Result<Share, EngineError> {
        let source = self.owned_container(who, container).await?;
        if !req.source_path.starts_with('/') || req.source_path.split('/').any(|p| p == "..") {
            return Err(EngineError::invalid("source_path", format!("`source_path` must be an absolute path inside the container without `..`, got `{}`", req.source_path)));
        }
        match (&req.target_container_id, &req.target_project_id) {
            (None, None) => return Err(EngineError::Missing { field: "target_container_id".into(), message: "one of `target_container_id` or `target_project_id` is required".into() }),
            (Some(_), Some(_)) => return Err(EngineError::invalid("target_project_id", "give `target_container_id` or `target_project_id`, not both")),
            _ => {}
        }
        let alias = match &req.alias {
            Some(a) => a.clone(),
            None => Path::new(&req.source_path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        validate_alias(&alias)?;
        let expires_at = req.expires_at.map(validate_expiry).transpose()?;
        if !source_dir_exists(Path::new(&source.rootfs_path), &req.source_path) {
            return Err(EngineError::invalid("source_path", format!("`source_path` {} is not a directory in container `{container}`", req.source_path)));
        }
        if let Some(t) = &req.target_container_id {
            if self.catalog.container(t).await?.is_none_or(|c| c.status == ContainerStatus::Deleting) {
                return Err(EngineError::not_found_field("target_container_id", format!("container `{t}` not found")));
            }
            if t == container {
                return Err(EngineError::invalid("target_container_id", "a container cannot share with itself"));
            }
        }
        if let Some(p) = &req.target_project_id {
            if self.catalog.project(p).await?.is_none() {
                return Err(EngineError::not_found_field("target_project_id", format!("project `{p}` not found")));
            }
        }
        let now = crate::ids::now();
        let record = ShareRecord {
            id: crate::ids::new_id(),
            account_id: who.account_id.clone(),
            source_container_id: container.to_string(),
            source_path: req.source_path,
            mode: req.mode.into(),
            target_container_id: req.target_container_id,
            target_project_id: req.target_project_id,
            alias,
            description: req.description,
            enabled: true,
            expires_at,
            created_at: now.clone(),
            updated_at: now,
            record_version: crate::catalog::RECORD_VERSION,
        };
        self.catalog.put_share(&record).await?;
        self.reconcile_shares().await;
        self.share_view(record).await
    }

    pub(super) async fn share_list(&self, who: &Principal, container: Option<&str>) -> Result<Vec<Share>, EngineError> {
        if let Some(c) = container {
            self.owned_container(who, c).await?;
        }
        let mut out = Vec::new();
        for s in self.catalog.shares().await? {
            if s.account_id == who.account_id && container.is_none_or(|c| c == s.source_container_id) {
                out.push(self.share_view(s).await?);
            }
        }
        Ok(out)
    }

    pub(super) async fn share_get(&self, who: &Principal, container: Option<&str>, id: &str) -> Result<Share, EngineError> {
        let s = self.owned_share_in(who, container, id).await?;
        self.share_view(s).await
    }

    pub(super) async fn share_update(&self, who: &Principal, container: Option<&str>, id: &str, req: UpdateShare) -> Result<Share, EngineError> {
        let mut s = self.owned_share_in(who, container, id).await?;
        if let Some(a) = &req.alias {
            validate_alias(a)?;
        }
        let expires_at = match req.expires_at {
            Some(Some(t)) => Some(Some(validate_expiry(t)?)),
            Some(None) => Some(None),
            None => None,
        };
        // Re-enabling retries every failed target; so does a new alias or mode
        // (every mount is remade with it).
        let renamed = req.alias.as_ref().is_some_and(|a| *a != s.alias) || req.mode.is_some_and(|m| ShareMode::from(m) != s.mode);
        if req.enabled == Some(true) || renamed {
            self.share_status.lock().expect("share status").retain(|(share, _), _| share != id);
            self.share_retry.lock().expect("share retry").insert((id.to_string(), None));
        }
        if let Some(e) = req.enabled {
            s.enabled = e;
        }
        if let Some(m) = req.mode {
            s.mode = m.into();
        }
        if let Some(a) = req.alias {
            s.alias = a;
        }
        if let Some(d) = req.description {
            s.description = d;
        }
        if let Some(t) = expires_at {
            s.expires_at = t;
        }
        s.updated_at = crate::ids::now();
        self.catalog.put_share(&s).await?;
        self.reconcile_shares().await;
        self.share_view(s).await
    }

    pub(super) async fn share_delete(&self, who: &Principal, id: &str) -> Result<(), EngineError> {
        self.owned_share(who, id).await?;
        self.catalog.delete_share(id).await?;
        self.reconcile_shares().await;
        Ok(())
    }

    /// Incoming shares of the caller's containers (or of one of them).
    pub(super) async fn incoming(&self, who: &Principal, container: Option<&str>) -> Result<Vec<IncomingShare>, EngineError> {
        if let Some(c) = container {
            self.owned_container(who, c).await?;
        }
        let containers = self.catalog.containers().await?;
        let choices = self.catalog.mount_choices().await?;
        let mut out = Vec::new();
        for s in self.catalog.shares().await? {
            for t in Self::targets_of(&s, &containers) {
                if t.account_id != who.account_id || container.is_some_and(|c| c != t.id) {
                    continue;
                }
                let v = Self::target_view(&s, self.target_state(&s, t), &choices);
                out.push(IncomingShare {
                    share_id: s.id.clone(),
                    container_id: t.id.clone(),
                    source_container_id: s.source_container_id.clone(),
                    alias: s.alias.clone(),
                    mode: s.mode.into(),
                    description: s.description.clone(),
                    enabled: s.enabled,
                    expires_at: s.expires_at.map(format_unix),
                    mount: v.mount,
                    status: v.status,
                    status_message: v.status_message,
                    mount_path: v.mount_path,
                });
            }
        }
        Ok(out)
    }

    /// The share `share` as offered to `container`, or, when `None`, to the one
    /// container of the caller it is offered to: offered to several, a 400
    /// naming `container_id` that lists them (the container form decides).
    pub(super) async fn incoming_one(&self, who: &Principal, container: Option<&str>, share: &str) -> Result<IncomingShare, EngineError> {
        let mut found: Vec<IncomingShare> = self.incoming(who, container).await?.into_iter().filter(|i| i.share_id == share).collect();
        match (found.len(), container) {
            (1, _) => Ok(found.remove(0)),
            (0, Some(c)) => Err(EngineError::not_found(format!("share `{share}` is not offered to container `{c}`"))),
            (0, None) => Err(EngineError::not_found(format!("share `{share}` is not offered to any of your containers"))),
            (_, _) => {
                let ids: Vec<&str> = found.iter().map(|i| i.container_id.as_str()).collect();
                Err(EngineError::Ambiguous {
                    field: "container_id".into(),
                    message: format!(
                        "share `{share}` is offered to {} of your containers ({}): name one, /api/v1/containers/{{id}}/storage/incoming/{share}",
                        ids.len(),
                        ids.join(", ")
                    ),
                })
            }
        }
    }

    pub(super) async fn mount_choice(&self, who: &Principal, container: Option<&str>, share: &str, mount: bool) -> Result<IncomingShare, EngineError> {
        let container = self.incoming_one(who, container, share).await?.container_id;
        self.catalog.set_mount_choice(share, &container, mount).await?;
        self.share_status.lock().expect("share status").remove(&(share.to_string(), container.clone()));
        self.share_retry.lock().expect("share retry").insert((share.to_string(), Some(container.clone())));
        self.reconcile_shares().await;
        self.incoming_one(who, Some(&container), share).await.map_err(|_| EngineError::Internal("share vanished".into()))
    }

    /// Makes the mounts of this node match the catalog and records each target's status.
    pub async fn reconcile_shares(&self) {
        let _one_at_a_time = self.share_reconcile.lock().await;
        let (shares, containers, choices) = match (self.catalog.shares().await, self.catalog.containers_on(&self.node.id).await, self.catalog.mount_choices().await) {
            (Ok(s), Ok(c), Ok(d)) => (s, c, d),
            _ => return,
        };
        let local: Vec<ContainerRecord> = containers.into_iter().filter(|c| c.server_id == self.node.id).collect();
        // Sources on other nodes, of shares that target a container here.
        let mut remote_sources: Vec<ContainerRecord> = Vec::new();
        for s in shares.iter().filter(|s| !local.iter().any(|c| c.id == s.source_container_id) && !Self::targets_of(s, &local).is_empty()) {
            if remote_sources.iter().any(|c| c.id == s.source_container_id) {
                continue;
            }
            match self.catalog.container(&s.source_container_id).await {
                Ok(Some(c)) => remote_sources.push(c),
                Ok(None) => {}
                Err(_) => return,
            }
        }
        let by_id: HashMap<&str, &ContainerRecord> = local.iter().chain(remote_sources.iter()).map(|c| (c.id.as_str(), c)).collect();
        let now = now_unix();
        let mut status = ShareStatuses::new();
        let mut desired = Vec::new();
        // (target, alias) → the share that holds it there, and whether that is an offer.
        let mut aliases: HashMap<(String, String), (String, bool)> = HashMap::new();
        let previous = self.share_status.lock().expect("share status").clone();
        // Retries asked for before this round began (a round already running
        // when one is asked keeps its own view; the next round honours it).
        let retry = self.share_retry.lock().expect("share retry").clone();
        let retried = |key: &Key| retry.contains(&(key.0.clone(), None)) || retry.contains(&(key.0.clone(), Some(key.1.clone())));
        // Aliases go first to a container's own account's shares, then to other
        // accounts' offers, whatever the creation order; within each, a share
        // mounted under that alias now keeps it (a rename cannot take a name
        // another share has mounted), then the older wins.
        let mut pairs: Vec<(&ShareRecord, &ContainerRecord)> = shares.iter().flat_map(|s| Self::targets_of(s, &local).into_iter().map(move |t| (s, t))).collect();
        pairs.sort_by_key(|(s, t)| (is_offer(s, t), self.mounts.mounted_alias(&(s.id.clone(), t.id.clone())).as_deref() != Some(s.alias.as_str())));
        for (s, t) in pairs {
            let key = (s.id.clone(), t.id.clone());
            let offer = is_offer(s, t);
            let verdict: Result<(), (ShareStatus, String)> = (|| {
                match choices.get(&key) {
                    Some(false) => return Err((ShareStatus::Unmounted, "the target chose not to mount it".to_string())),
                    None if offer => {
                        let how = format!("PATCH /api/v1/containers/{}/storage/incoming/{}/mount with {{\"mount\": true}}", t.id, s.id);
                        return Err((ShareStatus::Pending, format!("offered by another account: waits for the target account's acceptance ({how})")));
                    }
                    _ => {}
                }
                if !s.enabled {
                    return Err((ShareStatus::Disabled, "the share is disabled by its source".to_string()));
                }
                if s.expires_at.is_some_and(|e| e <= now) {
                    return Err((ShareStatus::Expired, "the share has expired".to_string()));
                }
                // A failure stays failed until the source PATCHes `enabled: true` (or the target remounts).
                if let Some((st, msg)) = previous.get(&key) {
                    if *st == ShareStatus::Failed && !self.mounts.is_mounted(&key) && !retried(&key) {
                        return Err((ShareStatus::Failed, msg.clone().unwrap_or_default()));
                    }
                }
                let Some(src) = by_id.get(s.source_container_id.as_str()) else {
                    return Err((ShareStatus::Failed, "the source container no longer exists".to_string()));
                };
                // A source on another node is checked there, when the mount attaches.
                if src.server_id == self.node.id && !source_dir_exists(Path::new(&src.rootfs_path), &s.source_path) {
                    return Err((ShareStatus::Failed, format!("source path {} does not exist in the source container", s.source_path)));
                }
                if let Some((other, other_offer)) = aliases.get(&(t.id.clone(), s.alias.clone())) {
                    let precedence = if offer && !other_offer { " of the container's own account, whose shares take precedence over another account's" } else { "" };
                    return Err((ShareStatus::Failed, format!("alias conflict: alias `{}` is already used in this container by share {other}{precedence}", s.alias)));
                }
                Ok(())
            })();
            match verdict {
                Ok(()) => {
                    aliases.insert((t.id.clone(), s.alias.clone()), (s.id.clone(), offer));
                    let src = by_id[s.source_container_id.as_str()];
                    desired.push(DesiredMount {
                        share_id: s.id.clone(),
                        target_id: t.id.clone(),
                        target_rootfs: PathBuf::from(&t.rootfs_path),
                        alias: s.alias.clone(),
                        source_rootfs: PathBuf::from(&src.rootfs_path),
                        source_path: PathBuf::from(&s.source_path),
                        source_available: !matches!(src.status, ContainerStatus::Stopped | ContainerStatus::Failed),
                        source_node: (src.server_id != self.node.id).then(|| src.server_id.clone()),
                        mode: s.mode,
                    });
                    status.insert(key, (ShareStatus::Active, None));
                }
                Err((st, msg)) => {
                    status.insert(key, (st, Some(msg)));
                }
            }
        }
        let mounts = self.mounts.clone();
        let runtime = tokio::runtime::Handle::current();
        let apply = desired.clone();
        let failures = tokio::task::spawn_blocking(move || mounts.apply(&apply, &runtime)).await.unwrap_or_default();
        for (key, message) in failures {
            tracing::warn!(share = %key.0, target = %key.1, %message, "share mount failed");
            status.insert(key, (ShareStatus::Failed, Some(message)));
        }
        if let Some(remote) = self.remote_shares.get() {
            // Mounted, but its source does not answer: say so (the mount stays,
            // and access resumes by itself when the source is back).
            for (key, why) in remote.probe(REMOTE_PROBE_DEADLINE).await {
                if status.get(&key).is_some_and(|(s, _)| *s == ShareStatus::Active) {
                    status.insert(key, (ShareStatus::Failed, Some(why)));
                }
            }
        }
        // In memory first: what this node answers follows its mounts at once.
        *self.share_status.lock().expect("share status") = status.clone();
        self.publish_statuses(&status).await;
        self.share_retry.lock().expect("share retry").retain(|r| !retry.contains(r));
        if let Some(remote) = self.remote_shares.get() {
            remote.server.revalidate().await;
        }
    }

    /// Publishes what changed of this node's statuses (`share-status/`), so
    /// every node answers them; kept for the next round only once written.
    async fn publish_statuses(&self, now: &ShareStatuses) {
        let mut own = self.own_published.lock().await;
        let record = |(st, msg): &(ShareStatus, Option<String>)| crate::catalog::share_status::ShareStatusRecord { status: *st, message: msg.clone(), node: self.node.id.clone() };
        let changed: Vec<_> = now.iter().filter(|(k, v)| own.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), record(v))).collect();
        let gone: Vec<_> = own.keys().filter(|k| !now.contains_key(*k)).cloned().collect();
        if changed.is_empty() && gone.is_empty() {
            return;
        }
        match self.catalog.publish_share_statuses(&changed, &gone).await {
            Ok(()) => *own = now.clone(),
            Err(e) => tracing::debug!(error = %e, "share statuses not published; next round"),
        }
    }

    /// Keeps [`Engine::published_status`] current: read, then follow the watch.
    async fn follow_published_statuses(&self) -> anyhow::Result<()> {
        let (all, revision) = self.catalog.share_statuses().await?;
        let parse = |r: &crate::catalog::share_status::ShareStatusRecord| (r.status, r.message.clone());
        *self.published_status.lock().expect("share status") = all.iter().map(|(k, r)| (k.clone(), parse(r))).collect();
        let mut watch = self.catalog.kv().watch(crate::catalog::share_status::PREFIX, Some(revision));
        while let Some(item) = watch.next().await {
            match item {
                crate::catalog::kv::WatchItem::Event(ev) => {
                    let Some(key) = crate::catalog::share_status::parse_key(&ev.key) else { continue };
                    let record = ev.value.as_deref().and_then(|v| serde_json::from_slice::<crate::catalog::share_status::ShareStatusRecord>(v).ok());
                    let mut table = self.published_status.lock().expect("share status");
                    match record {
                        Some(r) => table.insert(key, parse(&r)),
                        None => table.remove(&key),
                    };
                }
                crate::catalog::kv::WatchItem::Resync => return Ok(()),
            }
        }
        Ok(())
    }

    /// Whether any share names `c` as its source or target (directly or through
    /// its project): only then do its changes need a reconciliation.
    pub(super) async fn shares_concern(&self, c: &ContainerRecord) -> bool {
        self.catalog.shares().await.is_ok_and(|all| {
            all.iter().any(|s| s.source_container_id == c.id || s.target_container_id.as_deref() == Some(&c.id) || s.target_project_id.as_deref() == Some(&c.project_id))
        })
    }

    /// Reconciles mounts whenever the catalog's shares, mount choices or
    /// containers change (a watch on each: a change made through any node
    /// takes effect here at once), and every [`SHARE_RECONCILE_INTERVAL`] as
    /// a safety net and for what no catalog change announces (expiry, source
    /// directories that appeared).
    pub fn spawn_share_reconciler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let (changed, mut wake) = tokio::sync::mpsc::channel::<()>(1);
            // Dropped with this task (when the daemon stops), which ends the watchers.
            let mut watchers = tokio::task::JoinSet::new();
            let follower = engine.clone();
            watchers.spawn(async move {
                loop {
                    if let Err(e) = follower.follow_published_statuses().await {
                        tracing::debug!(error = %e, "following published share statuses; retrying");
                    }
                    tokio::time::sleep(SHARE_RECONCILE_INTERVAL).await;
                }
            });
            for prefix in [&b"shares/"[..], b"share-mounts/", b"containers/"] {
                let mut watch = engine.catalog.kv().watch(prefix, None);
                let changed = changed.clone();
                watchers.spawn(async move {
                    while watch.next().await.is_some() {
                        // A wake-up pending already covers this change too.
                        let _ = changed.try_send(());
                    }
                });
            }
            loop {
                engine.reconcile_shares().await;
                tokio::select! {
                    _ = wake.recv() => {}
                    _ = tokio::time::sleep(SHARE_RECONCILE_INTERVAL) => {}
                }
            }
        })
    }

    /// Unmounts every share (shutdown).
    pub async fn unmount_all_shares(&self) {
        let mounts = self.mounts.clone();
        let _ = tokio::task::spawn_blocking(move || mounts.unmount_all()).await;
    }

    /// Before anything else at start: mounts a crashed daemon left in containers.
    pub async fn clean_stale_share_mounts(&self) -> anyhow::Result<()> {
        let roots: Vec<PathBuf> = self.catalog.containers_on(&self.node.id).await?.into_iter().map(|c| PathBuf::from(c.rootfs_path)).collect();
        tokio::task::spawn_blocking(move || crate::shares::mounts::clean_stale_mounts(&roots)).await?;
        Ok(())
    }

    /// Deletes the shares whose source is `container`, and the shares of its
    /// own account that target it alone, forgets its mount choices and unmounts
    /// everything of it, as a source and as a target, before its rootfs goes away.
    /// Another account's share that targets it is never deleted: it stays its
    /// owner's, with no target (ids are never reused, so it mounts nowhere).
    pub(super) async fn detach_container_shares(&self, container: &str) -> Result<(), EngineError> {
        let owner = self.catalog.container(container).await?.map(|c| c.account_id);
        let mut related = self.catalog.shares_from(container).await?;
        related.extend(self.catalog.shares_targeting(container).await?);
        for s in related {
            let own_target = s.target_container_id.as_deref() == Some(container) && owner.as_deref() == Some(s.account_id.as_str());
            if s.source_container_id == container || own_target {
                self.catalog.delete_share(&s.id).await?;
            }
        }
        self.catalog.forget_mount_choices_of(container).await?;
        self.reconcile_shares().await;
        Ok(())
    }
}

//! Request and response bodies of the HTTP API. Requests deny unknown fields so
//! that a typo is a 400 naming it rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// `?limit=&offset=` of every list.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: usize,
    pub offset: usize,
}

impl Default for Page {
    fn default() -> Self {
        Page { limit: usize::MAX, offset: 0 }
    }
}

/// Query strings arrive as strings; numbers are parsed here so the error names the parameter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Largest number of items to return.
    pub limit: Option<String>,
    /// Number of items to skip.
    pub offset: Option<String>,
}

/// The query of a route that takes no query parameter: any one is a 400 naming it.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

impl PageQuery {
    pub fn page(&self) -> Result<Page, crate::ApiError> {
        let num = |name: &str, v: &Option<String>| -> Result<Option<usize>, crate::ApiError> {
            v.as_deref()
                .map(|s| {
                    s.parse::<usize>().map_err(|_| {
                        crate::ApiError::invalid(name, format!("query parameter `{name}` must be a non-negative integer, got `{s}`"))
                    })
                })
                .transpose()
        };
        Ok(Page {
            limit: num("limit", &self.limit)?.unwrap_or(usize::MAX),
            offset: num("offset", &self.offset)?.unwrap_or(0),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
    pub description: Option<String>,
}

/// Lifecycle state of a container. The daemon does not run processes; it tracks
/// the state because shares, snapshots and sync depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerStatus {
    Running,
    Stopped,
    Paused,
    Copying,
    Failed,
    Deleting,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Running => "running",
            ContainerStatus::Stopped => "stopped",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Copying => "copying",
            ContainerStatus::Failed => "failed",
            ContainerStatus::Deleting => "deleting",
        }
    }
}

/// Progress of a long job running on a container (a snapshot being taken, a
/// restore), or of garbage collection (`GET /admin/gc`); `null` when none
/// runs. Published every ~0.4 s while the job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// What the job does now: `waiting` (for a garbage collection), then for a snapshot `freezing`, `scanning` (walking the
    /// tree, files read meanwhile), `reading`, `storing`; for a restore `scanning`,
    /// `staging` (files compared, those that differ written aside), `applying`,
    /// `syncing`; for GC `marking`, `sweeping`.
    pub phase: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    /// Bytes per second over the last few seconds.
    #[serde(default)]
    pub rate: u64,
    /// False while the totals are an estimate (a snapshot's walk has not
    /// ended: the previous capture's files and sizes, or what was found so far).
    #[serde(default)]
    pub totals_exact: bool,
    /// `snapshot`, `restore` or `gc`.
    #[serde(default)]
    pub job: String,
    /// The snapshot's alias (snapshot and restore jobs).
    #[serde(default)]
    pub snapshot: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub server_id: String,
    pub server_name: String,
    pub status: ContainerStatus,
    pub status_message: Option<String>,
    pub source_container_id: Option<String>,
    pub snapshot_count: u64,
    pub ssh_public_key: Option<String>,
    /// The container's root filesystem on its server.
    pub rootfs_path: String,
    /// The container's cgroup (v2) directory, used to freeze it for consistent snapshots.
    pub cgroup_path: Option<String>,
    pub env: BTreeMap<String, String>,
    #[schema(value_type = Object)]
    pub resources: serde_json::Map<String, Value>,
    #[schema(value_type = Vec<Object>)]
    pub firewall_rules: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub network_rules: Vec<Value>,
    pub created_at: String,
    pub updated_at: String,
    pub progress: Option<Progress>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    pub name: String,
    pub project_id: String,
    /// Defaults to the server that received the request.
    pub server_id: Option<String>,
    /// Adopt this existing directory as the rootfs instead of creating an empty one.
    pub rootfs_path: Option<String>,
    pub cgroup_path: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<Object>)]
    pub resources: Option<serde_json::Map<String, Value>>,
    pub ssh_public_key: Option<String>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub firewall_rules: Option<Vec<serde_json::Map<String, Value>>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub network_rules: Option<Vec<serde_json::Map<String, Value>>>,
}

/// Rename or change settings. Absent fields stay as they are; `cgroup_path: null` clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContainer {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub cgroup_path: Option<Option<String>>,
    pub env: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<Object>)]
    pub resources: Option<serde_json::Map<String, Value>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub ssh_public_key: Option<Option<String>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub firewall_rules: Option<Vec<serde_json::Map<String, Value>>>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub network_rules: Option<Vec<serde_json::Map<String, Value>>>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ContainerQuery {
    pub project_id: Option<String>,
    pub source_container_id: Option<String>,
    pub server_id: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

impl ContainerQuery {
    pub fn page(&self) -> Result<Page, crate::ApiError> {
        PageQuery { limit: self.limit.clone(), offset: self.offset.clone() }.page()
    }
    pub fn filter(&self) -> ContainerFilter {
        ContainerFilter {
            project_id: self.project_id.clone(),
            source_container_id: self.source_container_id.clone(),
            server_id: self.server_id.clone(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    pub project_id: Option<String>,
    pub source_container_id: Option<String>,
    pub server_id: Option<String>,
}

/// `POST /containers/{id}/{operation}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerOperation {
    Start,
    Stop,
    ForceStop,
    Restart,
    Pause,
    Resume,
}

impl ContainerOperation {
    pub const ALL: [ContainerOperation; 6] = [
        ContainerOperation::Start,
        ContainerOperation::Stop,
        ContainerOperation::ForceStop,
        ContainerOperation::Restart,
        ContainerOperation::Pause,
        ContainerOperation::Resume,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ContainerOperation::Start => "start",
            ContainerOperation::Stop => "stop",
            ContainerOperation::ForceStop => "force-stop",
            ContainerOperation::Restart => "restart",
            ContainerOperation::Pause => "pause",
            ContainerOperation::Resume => "resume",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerAddresses {
    pub http: String,
    pub quic: String,
}

/// Whether a member answers: `online` while it holds its registration lease,
/// `unreachable` within seconds of its death or partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    Online,
    Unreachable,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub addresses: ServerAddresses,
    pub version: String,
    pub state: ServerState,
    /// Bytes of the filesystem holding the data dir (as last reported).
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub started_at: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// Lifetime: a whole number and a unit s, m, h or d; default `1h`.
    pub expires_in: Option<String>,
}

/// A one-time token admitting one new server: `hoodyd serve --join <token>`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JoinToken {
    pub token: String,
    pub id: String,
    pub expires_at: String,
    /// SHA-256 of the cluster CA certificate the joining server will check.
    pub ca_fingerprint: String,
}

/// Make this server the first node of a cluster whose catalog lives in etcd.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitCluster {
    /// etcd client URLs (`http://host:port`).
    pub etcd: Vec<String>,
    /// Key prefix of this cluster in etcd; default `hoody/`.
    pub prefix: Option<String>,
}

/// The catalog now lives in etcd.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterInitialized {
    pub etcd: Vec<String>,
    pub prefix: String,
    /// Catalog records copied into etcd.
    pub records: u64,
}

/// A server taken out of the cluster: its certificate is revoked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerRemoved {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// Who is calling, as established by the bearer token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: String,
    pub account_name: String,
    pub is_admin: bool,
}

/// A named point in a container's life. `id` is the content hash of its root tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub alias: String,
    pub id: String,
    pub container_id: String,
    /// `stateless`: the filesystem only (process state is not captured).
    pub mode: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Logical size: the sum of the sizes of the container's regular files.
    pub size_bytes: u64,
    /// Bytes this snapshot added to the node's store.
    pub new_bytes: u64,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Defaults to `snap-YYYYMMDD-HHMMSS`.
    pub alias: Option<String>,
    /// Days until the snapshot is removed by the daemon (fractions allowed).
    pub expiry: Option<f64>,
}

/// What a restore in place did: finished, or still running as a job whose
/// progress shows on the container.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RestoreOutcome {
    pub done: bool,
    pub container: Container,
    pub snapshot: Snapshot,
}

/// A snapshot still being taken (`202`): its alias, and the container whose
/// `progress` shows the job. `GET /containers/{id}/snapshots/{alias}` answers
/// `200` once it is recorded; a failure ends in the container's `status_message`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnapshotJob {
    pub alias: String,
    pub done: bool,
    pub container: Container,
}

/// What a snapshot request got: the snapshot (`201`), or a job still running (`202`).
#[derive(Debug, Clone)]
pub enum SnapshotCreated {
    Done(Snapshot),
    Running(Box<SnapshotJob>),
}

/// What deleting a container did with its root filesystem.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContainerDeleted {
    pub id: String,
    /// True when the daemon had created the rootfs and removed it; false for
    /// an adopted one, released with its files left in place.
    pub rootfs_removed: bool,
}

/// What a garbage collection reclaimed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GcSummary {
    pub snapshots_expired: u64,
    pub objects_removed: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub bytes_freed: u64,
}

/// Garbage collection on this node (`GET /admin/gc`): the run going on, if
/// any (asked for or housekeeping's), and the last one that ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GcStatus {
    pub running: bool,
    pub progress: Option<Progress>,
    pub last: Option<GcRun>,
}

/// One garbage collection that ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GcRun {
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    /// What it reclaimed; `null` when it failed.
    pub summary: Option<GcSummary>,
    pub error: Option<String>,
    /// Packs (`files_total`) and their bytes it examined.
    pub progress: Progress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShareMode {
    Readonly,
    Readwrite,
}

/// Where a share stands, in one target (`targets[].status`, an incoming
/// share's `status`) or summed up over all of them (a share's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ShareStatus {
    /// Mounted at `/hoody/shares/<alias>` in the target.
    Active,
    /// Could not be mounted: `status_message` says why (source path missing,
    /// alias conflict, …). Retried when the source PATCHes `enabled: true` or
    /// the alias, or the target PATCHes `mount: true`.
    Failed,
    /// Not mounted yet: another account's share waiting for the target's
    /// `mount: true`, or a target the daemon has not reached yet; for a whole
    /// share, also one with no target container at all.
    Pending,
    /// The target chose `mount: false`.
    Unmounted,
    /// The source set `enabled: false`.
    Disabled,
    /// `expires_at` has passed.
    Expired,
}

impl ShareStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareStatus::Active => "active",
            ShareStatus::Failed => "failed",
            ShareStatus::Pending => "pending",
            ShareStatus::Unmounted => "unmounted",
            ShareStatus::Disabled => "disabled",
            ShareStatus::Expired => "expired",
        }
    }
}

/// A point in time as a request gives it: Unix seconds (`1735689600`, as the
/// platform's docs send it) or an RFC 3339 string (`2025-01-01T00:00:00Z`).
/// Answers always carry times as RFC 3339 strings in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeInput(pub i64);

impl TimeInput {
    /// Unix seconds.
    pub fn unix(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for TimeInput {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        const EXPECTED: &str = "Unix seconds (an integer) or an RFC 3339 time such as `2030-01-01T00:00:00Z`";
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TimeInput;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<TimeInput, E> {
                Ok(TimeInput(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<TimeInput, E> {
                i64::try_from(v).map(TimeInput).map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &EXPECTED))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<TimeInput, E> {
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    Ok(TimeInput(v as i64))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &EXPECTED))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TimeInput, E> {
                if let Ok(n) = v.trim().parse::<i64>() {
                    return Ok(TimeInput(n));
                }
                time::OffsetDateTime::parse(v.trim(), &time::format_description::well_known::Rfc3339)
                    .map(|t| TimeInput(t.unix_timestamp()))
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &EXPECTED))
            }
        }
        de.deserialize_any(Visitor)
    }
}

impl utoipa::PartialSchema for TimeInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaFormat, KnownFormat, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))).description(Some("Unix seconds")))
            .item(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))).description(Some("RFC 3339")))
            .description(Some("Unix seconds or an RFC 3339 time"))
            .into()
    }
}

impl ToSchema for TimeInput {}

/// How one target sees a share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShareTarget {
    pub container_id: String,
    /// The target's choice (`PATCH …/incoming/{share_id}/mount`); default true
    /// for a share of the target's own account, false for another account's.
    pub mount: bool,
    pub status: ShareStatus,
    pub status_message: Option<String>,
    /// Where the share appears inside the target: `/hoody/shares/<alias>`.
    pub mount_path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Share {
    pub id: String,
    pub source_container_id: String,
    pub source_path: String,
    pub mode: ShareMode,
    pub target_container_id: Option<String>,
    pub target_project_id: Option<String>,
    pub alias: String,
    pub description: Option<String>,
    pub enabled: bool,
    /// RFC 3339 (UTC), like every time the API answers; `null`: never expires.
    pub expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The share as a whole, summed up from its targets: `disabled` or
    /// `expired` when so; else `failed` when any target failed (its
    /// `status_message` naming that container and why); else `active` when
    /// it is mounted in at least one target; else `pending` when a target
    /// has yet to accept it, or there is no target; else `unmounted` (every
    /// target said `mount: false`).
    pub status: ShareStatus,
    pub status_message: Option<String>,
    /// Every target of the share on this node, with its mount state.
    pub targets: Vec<ShareTarget>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShare {
    /// The source container: required on `POST /storage/shares`; on
    /// `POST /containers/{id}/storage/shares` it may be omitted, and if given
    /// must be `{id}`.
    pub source_container_id: Option<String>,
    /// Absolute path inside the source container.
    pub source_path: String,
    pub mode: ShareMode,
    pub target_container_id: Option<String>,
    pub target_project_id: Option<String>,
    /// Defaults to the last component of `source_path`.
    pub alias: Option<String>,
    pub description: Option<String>,
    /// Unix seconds or RFC 3339; must be in the future.
    pub expires_at: Option<TimeInput>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateShare {
    pub enabled: Option<bool>,
    pub mode: Option<ShareMode>,
    pub alias: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// Unix seconds or RFC 3339, in the future; `null` removes the expiry.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<TimeInput>)]
    pub expires_at: Option<Option<TimeInput>>,
}

/// A share offered to one of the caller's containers.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct IncomingShare {
    pub share_id: String,
    pub container_id: String,
    pub source_container_id: String,
    pub alias: String,
    pub mode: ShareMode,
    pub description: Option<String>,
    pub enabled: bool,
    /// RFC 3339 (UTC); `null`: never expires.
    pub expires_at: Option<String>,
    pub mount: bool,
    pub status: ShareStatus,
    pub status_message: Option<String>,
    pub mount_path: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMount {
    pub mount: bool,
}

/// An API token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: String,
    pub account_id: String,
    pub created_at: String,
    /// RFC 3339; `null`: never expires.
    pub expires_at: Option<String>,
    /// Whether `expires_at` has passed (the token is refused).
    pub expired: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Lifetime: a whole number and a unit s, m, h or d (`30d`); none: never expires.
    pub expires_in: Option<String>,
}

/// A new token: `token` is the bearer secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    pub token: String,
    pub id: String,
    pub account_id: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// What a request changes, for finding the node that must answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestTarget {
    /// Anything that changes this container or works on its files.
    Container(String),
    /// A new container, on `server_id` when named.
    NewContainer { server_id: Option<String> },
}

/// An API request sent on to the node that must answer it, as the client made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedRequest {
    pub method: String,
    pub path_and_query: String,
    /// The caller's `Authorization` header: the answering node authenticates the caller itself.
    pub authorization: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// The answering node's reply, passed back to the client unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

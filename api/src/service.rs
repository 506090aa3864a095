//! The seam between HTTP and the engine: everything the routes need, nothing of how.

use async_trait::async_trait;

use crate::model::*;
use crate::ApiError;

/// Implemented by the daemon. Every call gets the authenticated caller; objects of
/// another account must be answered as `NotFound`.
#[async_trait]
pub trait HoodyService: Send + Sync + 'static {
    /// Resolves a bearer token to its account; `Unauthorized` when unknown.
    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError>;

    async fn create_project(&self, who: &Principal, req: CreateProject) -> Result<Project, ApiError>;
    async fn list_projects(&self, who: &Principal) -> Result<Vec<Project>, ApiError>;
    async fn get_project(&self, who: &Principal, id: &str) -> Result<Project, ApiError>;

    async fn create_container(&self, who: &Principal, req: CreateContainer) -> Result<Container, ApiError>;
    async fn list_containers(&self, who: &Principal, filter: ContainerFilter) -> Result<Vec<Container>, ApiError>;
    async fn get_container(&self, who: &Principal, id: &str) -> Result<Container, ApiError>;
    async fn update_container(&self, who: &Principal, id: &str, req: UpdateContainer) -> Result<Container, ApiError>;
    async fn delete_container(&self, who: &Principal, id: &str) -> Result<ContainerDeleted, ApiError>;
    async fn container_operation(&self, who: &Principal, id: &str, op: ContainerOperation) -> Result<Container, ApiError>;

    /// Take a snapshot; one that takes more than a moment goes on as a job (`Running`).
    async fn create_snapshot(&self, who: &Principal, container: &str, req: CreateSnapshot) -> Result<SnapshotCreated, ApiError>;
    async fn list_snapshots(&self, who: &Principal, container: &str) -> Result<Vec<Snapshot>, ApiError>;
    async fn get_snapshot(&self, who: &Principal, container: &str, alias: &str) -> Result<Snapshot, ApiError>;
    /// Restore in place; may finish in the background (`done: false`).
    async fn restore_snapshot(&self, who: &Principal, container: &str, alias: &str) -> Result<RestoreOutcome, ApiError>;
    async fn delete_snapshot(&self, who: &Principal, container: &str, alias: &str) -> Result<(), ApiError>;
    /// Expire snapshots and collect garbage now (admin only).
    async fn collect_garbage(&self, who: &Principal) -> Result<GcSummary, ApiError>;
    /// The garbage collection running now, if any, and the last one (admin only).
    async fn gc_status(&self, who: &Principal) -> Result<GcStatus, ApiError>;

    async fn create_share(&self, who: &Principal, container: &str, req: CreateShare) -> Result<Share, ApiError>;
    /// Shares created from `container`, or from every container of the caller when `None`.
    async fn list_shares(&self, who: &Principal, container: Option<&str>) -> Result<Vec<Share>, ApiError>;
    /// The caller's share, from `container` when named (else `NotFound`).
    async fn get_share(&self, who: &Principal, container: Option<&str>, share: &str) -> Result<Share, ApiError>;
    async fn update_share(&self, who: &Principal, container: Option<&str>, share: &str, req: UpdateShare) -> Result<Share, ApiError>;
    async fn delete_share(&self, who: &Principal, share: &str) -> Result<(), ApiError>;
    /// Shares offered to `container`, or to every container of the caller when `None`.
    async fn list_incoming(&self, who: &Principal, container: Option<&str>) -> Result<Vec<IncomingShare>, ApiError>;
    /// One share offered to `container`, or, when `None`, to the one container
    /// of the caller it is offered to (a 400 naming `container_id` when several).
    async fn get_incoming(&self, who: &Principal, container: Option<&str>, share: &str) -> Result<IncomingShare, ApiError>;
    /// The target's choice, in `container` or, when `None`, as [`Self::get_incoming`] finds it.
    async fn set_mount(&self, who: &Principal, container: Option<&str>, share: &str, mount: bool) -> Result<IncomingShare, ApiError>;

    async fn list_servers(&self, who: &Principal) -> Result<Vec<Server>, ApiError>;
    async fn get_server(&self, who: &Principal, id: &str) -> Result<Server, ApiError>;
    /// Takes a server out of the cluster and revokes its certificate (admin only).
    async fn remove_server(&self, who: &Principal, id: &str) -> Result<ServerRemoved, ApiError>;
    /// Moves this server's catalog into etcd while it runs (admin only): `hoodyd cluster init`.
    async fn init_cluster(&self, who: &Principal, req: InitCluster) -> Result<ClusterInitialized, ApiError>;
    /// A one-time, expiring token admitting a new server (admin only).
    async fn create_join_token(&self, who: &Principal, req: CreateJoinToken) -> Result<JoinToken, ApiError>;

    /// The node that must answer a request about `target`: `None` for this
    /// one. A single node always answers itself.
    async fn owner_of(&self, _who: &Principal, _target: &RequestTarget) -> Result<Option<String>, ApiError> {
        Ok(None)
    }
    /// Sends a request to the node `node` and gives back its answer as it is.
    async fn forward(&self, node: &str, _request: ForwardedRequest) -> Result<ForwardedResponse, ApiError> {
        Err(ApiError::Unavailable(format!("server {node} cannot be reached from a single node")))
    }

    /// The caller's own tokens (never their secrets).
    async fn list_tokens(&self, who: &Principal) -> Result<Vec<Token>, ApiError>;
    async fn create_token(&self, who: &Principal, req: CreateToken) -> Result<NewToken, ApiError>;
    /// Revokes one of the caller's tokens; another account's is `NotFound`.
    async fn revoke_token(&self, who: &Principal, id: &str) -> Result<(), ApiError>;
    /// Revokes any account's token (admin only): `hoodyd token revoke` on a running daemon.
    async fn admin_revoke_token(&self, who: &Principal, id: &str) -> Result<(), ApiError>;

    /// Liveness without tenant data.
    async fn health(&self) -> Health;
    /// Engine metrics in Prometheus text format, appended to the HTTP ones.
    fn metrics_text(&self) -> String;
}

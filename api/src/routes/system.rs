use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Extension;

use super::AppState;
use crate::model::{ClusterInitialized, CreateJoinToken, GcStatus, InitCluster, GcSummary, Health, JoinToken, NoQuery, PageQuery, Principal, Server, ServerRemoved};
use crate::{ApiError, ListReply, Reply, StrictJson, StrictQuery};

/// Health: `ok` only when the catalog and the store answer, else `503` whose
/// message names what fails; needs no token and reveals no tenant data.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses((status = 200, description = "Healthy", body = Health), (status = 503, description = "The catalog or the store fails")))]
pub(super) async fn healthz(State(s): State<AppState>, StrictQuery(NoQuery {}): StrictQuery<NoQuery>) -> Result<Reply<Health>, ApiError> {
    let health = s.service.health().await;
    if health.status != "ok" {
        return Err(ApiError::Unavailable(health.status));
    }
    Ok(Reply::ok("ok", health))
}

/// Prometheus text format; needs no token and reveals no tenant data.
#[utoipa::path(get, path = "/metrics", tag = "system", security(()), responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub(super) async fn metrics(State(s): State<AppState>, StrictQuery(NoQuery {}): StrictQuery<NoQuery>) -> impl IntoResponse {
    let mut text = s.metrics.render();
    text.push_str(&s.service.metrics_text());
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The servers of the cluster (this node alone when it runs on its own).
#[utoipa::path(get, path = "/servers", tag = "servers", params(PageQuery), responses((status = 200, description = "Servers", body = [Server])))]
pub(super) async fn list_servers(State(s): State<AppState>, Extension(who): Extension<Principal>, StrictQuery(q): StrictQuery<PageQuery>) -> Result<ListReply<Server>, ApiError> {
    let page = q.page()?;
    let servers = s.service.list_servers(&who).await?;
    Ok(ListReply::page("servers", servers, page))
}

/// One server.
#[utoipa::path(get, path = "/servers/{id}", tag = "servers", params(("id" = String, Path, description = "Server id")),
    responses((status = 200, description = "The server", body = Server), (status = 404, description = "Unknown")))]
pub(super) async fn get_server(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<Server>, ApiError> {
    Ok(Reply::ok("server", s.service.get_server(&who, &id).await?))
}

/// Expire snapshots and collect the store's garbage now (admin token only).
#[utoipa::path(post, path = "/admin/gc", tag = "system", responses((status = 200, description = "What was reclaimed", body = GcSummary), (status = 403, description = "Not an admin")))]
pub(super) async fn collect_garbage(State(s): State<AppState>, Extension(who): Extension<Principal>, StrictQuery(NoQuery {}): StrictQuery<NoQuery>) -> Result<Reply<GcSummary>, ApiError> {
    Ok(Reply::ok("garbage collected", s.service.collect_garbage(&who).await?))
}

/// Garbage collection on this node: the run going on (asked for or
/// housekeeping's) with its progress, and the last one that ended (admin token only).
#[utoipa::path(get, path = "/admin/gc", tag = "system", responses((status = 200, description = "The running and the last collection", body = GcStatus), (status = 403, description = "Not an admin")))]
pub(super) async fn gc_status(State(s): State<AppState>, Extension(who): Extension<Principal>, StrictQuery(NoQuery {}): StrictQuery<NoQuery>) -> Result<Reply<GcStatus>, ApiError> {
    Ok(Reply::ok("garbage collection", s.service.gc_status(&who).await?))
}

/// Take a server out of the cluster (admin token only): its certificate is
/// revoked, so its next request to any member is refused.
#[utoipa::path(delete, path = "/servers/{id}", tag = "servers", params(("id" = String, Path, description = "Server id")),
    responses((status = 200, description = "Removed", body = ServerRemoved), (status = 403, description = "Not an admin"), (status = 404, description = "Unknown"),
        (status = 409, description = "The server still owns containers, or it is the one answering")))]
pub(super) async fn remove_server(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<ServerRemoved>, ApiError> {
    Ok(Reply::ok("server removed", s.service.remove_server(&who, &id).await?))
}

/// A one-time, expiring token that admits one new server (admin token only):
/// `hoodyd serve --join <token>` on the new server.
#[utoipa::path(post, path = "/cluster/join-tokens", tag = "servers", request_body = CreateJoinToken,
    responses((status = 201, description = "Created", body = JoinToken), (status = 400, description = "Bad input"), (status = 403, description = "Not an admin"),
        (status = 409, description = "This node cannot sign certificates")))]
pub(super) async fn create_join_token(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<CreateJoinToken>,
) -> Result<Reply<JoinToken>, ApiError> {
    Ok(Reply::created("join token created", s.service.create_join_token(&who, req).await?))
}

/// Make this server the first node of a cluster (admin token only): its
/// catalog is copied into etcd and served from there, while it runs.
#[utoipa::path(post, path = "/admin/cluster", tag = "servers", request_body = InitCluster,
    responses((status = 201, description = "The catalog is in etcd", body = ClusterInitialized), (status = 400, description = "Bad input"), (status = 403, description = "Not an admin"),
        (status = 409, description = "Already in a cluster, or etcd holds another catalog"), (status = 503, description = "etcd cannot be reached")))]
pub(super) async fn init_cluster(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<InitCluster>,
) -> Result<Reply<ClusterInitialized>, ApiError> {
    Ok(Reply::created("cluster initialized", s.service.init_cluster(&who, req).await?))
}

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::AppState;
use crate::model::{CreateSnapshot, NoQuery, PageQuery, Principal, RestoreOutcome, Snapshot, SnapshotCreated, SnapshotJob};
use crate::{ApiError, ListReply, Reply, StrictJson, StrictQuery};

/// Snapshot the container (alias auto-generated when omitted). `201` with the
/// snapshot when done within a moment; else `202`: the job goes on, its
/// progress on the container, and the snapshot appears under its alias when done.
#[utoipa::path(post, path = "/containers/{id}/snapshots", tag = "snapshots", request_body = CreateSnapshot,
    params(("id" = String, Path, description = "Container id")),
    responses((status = 201, description = "Created", body = Snapshot), (status = 202, description = "Being taken in the background", body = SnapshotJob),
              (status = 400, description = "Bad input"),
              (status = 404, description = "Unknown container"), (status = 409, description = "Alias taken, container busy or rootfs missing")))]
pub(super) async fn create_snapshot(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<CreateSnapshot>,
) -> Result<Response, ApiError> {
    Ok(match s.service.create_snapshot(&who, &id, req).await? {
        SnapshotCreated::Done(snapshot) => Reply::created("snapshot created", snapshot).into_response(),
        SnapshotCreated::Running(job) => Reply::accepted("snapshot being taken; see the container's progress", job).into_response(),
    })
}

/// The container's snapshots, oldest first.
#[utoipa::path(get, path = "/containers/{id}/snapshots", tag = "snapshots", params(("id" = String, Path, description = "Container id"), PageQuery),
    responses((status = 200, description = "Snapshots", body = [Snapshot]), (status = 404, description = "Unknown container")))]
pub(super) async fn list_snapshots(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<ListReply<Snapshot>, ApiError> {
    let page = q.page()?;
    Ok(ListReply::page("snapshots", s.service.list_snapshots(&who, &id).await?, page))
}

/// One snapshot.
#[utoipa::path(get, path = "/containers/{id}/snapshots/{alias}", tag = "snapshots",
    params(("id" = String, Path, description = "Container id"), ("alias" = String, Path, description = "Snapshot alias")),
    responses((status = 200, description = "The snapshot", body = Snapshot), (status = 404, description = "Unknown container or alias")))]
pub(super) async fn get_snapshot(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, alias)): Path<(String, String)>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<Snapshot>, ApiError> {
    Ok(Reply::ok("snapshot", s.service.get_snapshot(&who, &id, &alias).await?))
}

/// Restore in place: the container's filesystem becomes exactly the snapshot's.
/// `200` when done; `202` when it continues as a job (progress on the container).
#[utoipa::path(patch, path = "/containers/{id}/snapshots/{alias}", tag = "snapshots",
    params(("id" = String, Path, description = "Container id"), ("alias" = String, Path, description = "Snapshot alias")),
    responses((status = 200, description = "Restored", body = RestoreOutcome), (status = 202, description = "Restoring in the background", body = RestoreOutcome),
              (status = 404, description = "Unknown container or alias"), (status = 409, description = "Container busy (copying, restoring)")))]
pub(super) async fn restore_snapshot(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, alias)): Path<(String, String)>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Response, ApiError> {
    let outcome = s.service.restore_snapshot(&who, &id, &alias).await?;
    Ok(if outcome.done {
        Reply::ok("snapshot restored", outcome).into_response()
    } else {
        Reply::accepted("restore running; see the container's progress", outcome).into_response()
    })
}

/// Delete a snapshot; its blocks become reclaimable.
#[utoipa::path(delete, path = "/containers/{id}/snapshots/{alias}", tag = "snapshots",
    params(("id" = String, Path, description = "Container id"), ("alias" = String, Path, description = "Snapshot alias")),
    responses((status = 200, description = "Deleted"), (status = 404, description = "Unknown container or alias")))]
pub(super) async fn delete_snapshot(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, alias)): Path<(String, String)>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<()>, ApiError> {
    s.service.delete_snapshot(&who, &id, &alias).await?;
    Ok(Reply::ok("snapshot deleted", ()))
}

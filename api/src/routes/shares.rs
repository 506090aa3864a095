use axum::extract::{Path, State};
use axum::Extension;

use super::AppState;
use crate::model::{CreateShare, IncomingShare, Principal, SetMount, Share, UpdateShare};
use crate::{ApiError, ListReply, Reply, StrictJson};

/// Share a directory of this container with one container or a whole project.
#[utoipa::path(post, path = "/containers/{id}/storage/shares", tag = "shares", request_body = CreateShare,
    params(("id" = String, Path, description = "Source container id")),
    responses((status = 201, description = "Created", body = Share), (status = 400, description = "Bad input"), (status = 404, description = "Unknown container, target or project")))]
pub(super) async fn create_share(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictJson(req): StrictJson<CreateShare>,
) -> Result<Reply<Share>, ApiError> {
    Ok(Reply::created("share created", s.service.create_share(&who, &id, req).await?))
}

/// Shares created from this container.
#[utoipa::path(get, path = "/containers/{id}/storage/shares", tag = "shares", params(("id" = String, Path, description = "Source container id")),
    responses((status = 200, description = "Shares", body = [Share])))]
pub(super) async fn list_container_shares(State(s): State<AppState>, Extension(who): Extension<Principal>, Path(id): Path<String>) -> Result<ListReply<Share>, ApiError> {
    Ok(ListReply::page("shares", s.service.list_shares(&who, Some(&id)).await?, Default::default()))
}

/// Every share the caller created.
#[utoipa::path(get, path = "/storage/shares", tag = "shares", responses((status = 200, description = "Shares", body = [Share])))]
pub(super) async fn list_shares(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<ListReply<Share>, ApiError> {
    Ok(ListReply::page("shares", s.service.list_shares(&who, None).await?, Default::default()))
}

/// One share, with the mount state of each target.
#[utoipa::path(get, path = "/containers/{id}/storage/shares/{share_id}", tag = "shares",
    params(("id" = String, Path, description = "Source container id"), ("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "The share", body = Share), (status = 404, description = "Unknown")))]
pub(super) async fn get_share(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, share)): Path<(String, String)>,
) -> Result<Reply<Share>, ApiError> {
    Ok(Reply::ok("share", s.service.get_share(&who, &id, &share).await?))
}

/// Change `enabled`, `mode`, `alias`, `description`, `expires_at` (mode and alias apply at the next mount).
#[utoipa::path(patch, path = "/containers/{id}/storage/shares/{share_id}", tag = "shares", request_body = UpdateShare,
    params(("id" = String, Path, description = "Source container id"), ("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "Updated", body = Share), (status = 400, description = "Bad input"), (status = 404, description = "Unknown")))]
pub(super) async fn update_share(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, share)): Path<(String, String)>,
    StrictJson(req): StrictJson<UpdateShare>,
) -> Result<Reply<Share>, ApiError> {
    Ok(Reply::ok("share updated", s.service.update_share(&who, &id, &share, req).await?))
}

/// Delete a share; it is unmounted from every target.
#[utoipa::path(delete, path = "/storage/shares/{share_id}", tag = "shares", params(("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "Deleted"), (status = 404, description = "Unknown")))]
pub(super) async fn delete_share(State(s): State<AppState>, Extension(who): Extension<Principal>, Path(share): Path<String>) -> Result<Reply<()>, ApiError> {
    s.service.delete_share(&who, &share).await?;
    Ok(Reply::ok("share deleted", ()))
}

/// Shares offered to this container, with its mount state.
#[utoipa::path(get, path = "/containers/{id}/storage/incoming", tag = "shares", params(("id" = String, Path, description = "Target container id")),
    responses((status = 200, description = "Incoming shares", body = [IncomingShare])))]
pub(super) async fn list_container_incoming(State(s): State<AppState>, Extension(who): Extension<Principal>, Path(id): Path<String>) -> Result<ListReply<IncomingShare>, ApiError> {
    Ok(ListReply::page("incoming shares", s.service.list_incoming(&who, Some(&id)).await?, Default::default()))
}

/// Shares offered to any of the caller's containers.
#[utoipa::path(get, path = "/storage/incoming", tag = "shares", responses((status = 200, description = "Incoming shares", body = [IncomingShare])))]
pub(super) async fn list_incoming(State(s): State<AppState>, Extension(who): Extension<Principal>) -> Result<ListReply<IncomingShare>, ApiError> {
    Ok(ListReply::page("incoming shares", s.service.list_incoming(&who, None).await?, Default::default()))
}

/// The target decides IF: mount or unmount an incoming share.
#[utoipa::path(patch, path = "/containers/{id}/storage/incoming/{share_id}/mount", tag = "shares", request_body = SetMount,
    params(("id" = String, Path, description = "Target container id"), ("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "New mount state", body = IncomingShare), (status = 404, description = "Unknown")))]
pub(super) async fn set_mount(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, share)): Path<(String, String)>,
    StrictJson(req): StrictJson<SetMount>,
) -> Result<Reply<IncomingShare>, ApiError> {
    Ok(Reply::ok("mount state updated", s.service.set_mount(&who, &id, &share, req.mount).await?))
}

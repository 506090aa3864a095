//! Storage shares. Every route of the container form
//! (`/containers/{id}/storage/…`) has a container-less twin (`/storage/…`)
//! that finds the container from the share: its source for the share routes,
//! the caller's target container for the incoming ones.

use axum::extract::{Path, State};
use axum::Extension;

use super::AppState;
use crate::model::{CreateShare, IncomingShare, NoQuery, PageQuery, Principal, SetMount, Share, UpdateShare};
use crate::{ApiError, ListReply, Reply, StrictJson, StrictQuery};

/// Share a directory of this container with one container or a whole project.
#[utoipa::path(post, path = "/containers/{id}/storage/shares", tag = "shares", request_body = CreateShare,
    params(("id" = String, Path, description = "Source container id")),
    responses((status = 201, description = "Created", body = Share), (status = 400, description = "Bad input"), (status = 404, description = "Unknown container, target or project")))]
pub(super) async fn create_share(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<CreateShare>,
) -> Result<Reply<Share>, ApiError> {
    if req.source_container_id.as_deref().is_some_and(|c| c != id) {
        return Err(ApiError::invalid("source_container_id", format!("`source_container_id` must be the container of the path, `{id}`, or be left out")));
    }
    Ok(Reply::created("share created", s.service.create_share(&who, &id, req).await?))
}

/// Share a directory of the container named by `source_container_id` (required here).
#[utoipa::path(post, path = "/storage/shares", tag = "shares", request_body = CreateShare,
    responses((status = 201, description = "Created", body = Share), (status = 400, description = "Bad input"), (status = 404, description = "Unknown container, target or project")))]
pub(super) async fn create_share_anywhere(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<CreateShare>,
) -> Result<Reply<Share>, ApiError> {
    let Some(id) = req.source_container_id.clone() else {
        return Err(ApiError::bad_field(
            "missing_field",
            "source_container_id",
            "missing required field `source_container_id` (or POST /api/v1/containers/{id}/storage/shares)",
        ));
    };
    Ok(Reply::created("share created", s.service.create_share(&who, &id, req).await?))
}

/// Shares created from this container.
#[utoipa::path(get, path = "/containers/{id}/storage/shares", tag = "shares", params(("id" = String, Path, description = "Source container id"), PageQuery),
    responses((status = 200, description = "Shares", body = [Share]), (status = 404, description = "Unknown container")))]
pub(super) async fn list_container_shares(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<ListReply<Share>, ApiError> {
    let page = q.page()?;
    Ok(ListReply::page("shares", s.service.list_shares(&who, Some(&id)).await?, page))
}

/// Every share the caller created, from all of its containers.
#[utoipa::path(get, path = "/storage/shares", tag = "shares", params(PageQuery), responses((status = 200, description = "Shares", body = [Share])))]
pub(super) async fn list_shares(State(s): State<AppState>, Extension(who): Extension<Principal>, StrictQuery(q): StrictQuery<PageQuery>) -> Result<ListReply<Share>, ApiError> {
    let page = q.page()?;
    Ok(ListReply::page("shares", s.service.list_shares(&who, None).await?, page))
}

/// One share, with its status and the mount state of each target.
#[utoipa::path(get, path = "/containers/{id}/storage/shares/{share_id}", tag = "shares",
    params(("id" = String, Path, description = "Source container id"), ("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "The share", body = Share), (status = 404, description = "Unknown")))]
pub(super) async fn get_share(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, share)): Path<(String, String)>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<Share>, ApiError> {
    Ok(Reply::ok("share", s.service.get_share(&who, Some(&id), &share).await?))
}

/// One share, without naming its source container.
#[utoipa::path(get, path = "/storage/shares/{share_id}", tag = "shares", params(("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "The share", body = Share), (status = 404, description = "Unknown")))]
pub(super) async fn get_share_anywhere(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(share): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<Share>, ApiError> {
    Ok(Reply::ok("share", s.service.get_share(&who, None, &share).await?))
}

/// Change `enabled`, `mode`, `alias`, `description`, `expires_at`. A new alias
/// or mode is applied at once: every target's mount is remade (the old
/// `/hoody/shares/<alias>` goes away).
#[utoipa::path(patch, path = "/containers/{id}/storage/shares/{share_id}", tag = "shares", request_body = UpdateShare,
    params(("id" = String, Path, description = "Source container id"), ("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "Updated", body = Share), (status = 400, description = "Bad input"), (status = 404, description = "Unknown")))]
pub(super) async fn update_share(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, share)): Path<(String, String)>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<UpdateShare>,
) -> Result<Reply<Share>, ApiError> {
    Ok(Reply::ok("share updated", s.service.update_share(&who, Some(&id), &share, req).await?))
}

/// The same change, without naming the source container.
#[utoipa::path(patch, path = "/storage/shares/{share_id}", tag = "shares", request_body = UpdateShare,
    params(("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "Updated", body = Share), (status = 400, description = "Bad input"), (status = 404, description = "Unknown")))]
pub(super) async fn update_share_anywhere(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(share): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<UpdateShare>,
) -> Result<Reply<Share>, ApiError> {
    Ok(Reply::ok("share updated", s.service.update_share(&who, None, &share, req).await?))
}

/// Delete a share; it is unmounted from every target.
#[utoipa::path(delete, path = "/storage/shares/{share_id}", tag = "shares", params(("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "Deleted"), (status = 404, description = "Unknown")))]
pub(super) async fn delete_share(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(share): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<()>, ApiError> {
    s.service.delete_share(&who, &share).await?;
    Ok(Reply::ok("share deleted", ()))
}

/// Shares offered to this container, with its mount state.
#[utoipa::path(get, path = "/containers/{id}/storage/incoming", tag = "shares", params(("id" = String, Path, description = "Target container id"), PageQuery),
    responses((status = 200, description = "Incoming shares", body = [IncomingShare]), (status = 404, description = "Unknown container")))]
pub(super) async fn list_container_incoming(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<ListReply<IncomingShare>, ApiError> {
    let page = q.page()?;
    Ok(ListReply::page("incoming shares", s.service.list_incoming(&who, Some(&id)).await?, page))
}

/// Shares offered to any of the caller's containers: one item per (share, target container).
#[utoipa::path(get, path = "/storage/incoming", tag = "shares", params(PageQuery), responses((status = 200, description = "Incoming shares", body = [IncomingShare])))]
pub(super) async fn list_incoming(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<ListReply<IncomingShare>, ApiError> {
    let page = q.page()?;
    Ok(ListReply::page("incoming shares", s.service.list_incoming(&who, None).await?, page))
}

/// One share offered to this container.
#[utoipa::path(get, path = "/containers/{id}/storage/incoming/{share_id}", tag = "shares",
    params(("id" = String, Path, description = "Target container id"), ("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "The incoming share", body = IncomingShare), (status = 404, description = "Not offered to this container")))]
pub(super) async fn get_container_incoming(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, share)): Path<(String, String)>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<IncomingShare>, ApiError> {
    Ok(Reply::ok("incoming share", s.service.get_incoming(&who, Some(&id), &share).await?))
}

/// One incoming share, without naming the container: the one of the caller's
/// containers it is offered to. Offered to several of them (a project-wide
/// share), it is a 400 naming `container_id` and listing them: use the
/// container form.
#[utoipa::path(get, path = "/storage/incoming/{share_id}", tag = "shares", params(("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "The incoming share", body = IncomingShare),
              (status = 400, description = "Offered to several of the caller's containers: name one"), (status = 404, description = "Not offered to the caller")))]
pub(super) async fn get_incoming(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(share): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<IncomingShare>, ApiError> {
    Ok(Reply::ok("incoming share", s.service.get_incoming(&who, None, &share).await?))
}

/// The target decides IF: mount or unmount an incoming share.
#[utoipa::path(patch, path = "/containers/{id}/storage/incoming/{share_id}/mount", tag = "shares", request_body = SetMount,
    params(("id" = String, Path, description = "Target container id"), ("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "New mount state", body = IncomingShare), (status = 404, description = "Unknown")))]
pub(super) async fn set_mount(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, share)): Path<(String, String)>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<SetMount>,
) -> Result<Reply<IncomingShare>, ApiError> {
    Ok(Reply::ok("mount state updated", s.service.set_mount(&who, Some(&id), &share, req.mount).await?))
}

/// The same choice without naming the container: the one of the caller's
/// containers the share is offered to (several: a 400 naming `container_id`).
#[utoipa::path(patch, path = "/storage/incoming/{share_id}/mount", tag = "shares", request_body = SetMount,
    params(("share_id" = String, Path, description = "Share id")),
    responses((status = 200, description = "New mount state", body = IncomingShare),
              (status = 400, description = "Bad input, or offered to several of the caller's containers: name one"), (status = 404, description = "Not offered to the caller")))]
pub(super) async fn set_mount_anywhere(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(share): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<SetMount>,
) -> Result<Reply<IncomingShare>, ApiError> {
    Ok(Reply::ok("mount state updated", s.service.set_mount(&who, None, &share, req.mount).await?))
}

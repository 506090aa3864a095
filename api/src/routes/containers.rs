use axum::extract::{Path, State};
use axum::Extension;

use super::AppState;
use crate::model::{Container, ContainerDeleted, ContainerOperation, ContainerQuery, CreateContainer, NoQuery, Principal, UpdateContainer};
use crate::{ApiError, ListReply, Reply, StrictJson, StrictQuery};

/// Create a container: an empty rootfs, or adopt an existing directory (`rootfs_path`).
#[utoipa::path(post, path = "/containers", tag = "containers", request_body = CreateContainer,
    responses((status = 201, description = "Created", body = Container), (status = 400, description = "Bad input"),
              (status = 404, description = "Unknown project or server")))]
pub(super) async fn create_container(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<CreateContainer>,
) -> Result<Reply<Container>, ApiError> {
    Ok(Reply::created("container created", s.service.create_container(&who, req).await?))
}

/// List the caller's containers, optionally filtered.
#[utoipa::path(get, path = "/containers", tag = "containers", params(ContainerQuery),
    responses((status = 200, description = "Containers", body = [Container])))]
pub(super) async fn list_containers(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    StrictQuery(q): StrictQuery<ContainerQuery>,
) -> Result<ListReply<Container>, ApiError> {
    let page = q.page()?;
    Ok(ListReply::page("containers", s.service.list_containers(&who, q.filter()).await?, page))
}

/// One container.
#[utoipa::path(get, path = "/containers/{id}", tag = "containers", params(("id" = String, Path, description = "Container id")),
    responses((status = 200, description = "The container", body = Container), (status = 404, description = "Unknown")))]
pub(super) async fn get_container(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<Container>, ApiError> {
    Ok(Reply::ok("container", s.service.get_container(&who, &id).await?))
}

/// Rename a container or change its settings.
#[utoipa::path(patch, path = "/containers/{id}", tag = "containers", request_body = UpdateContainer,
    params(("id" = String, Path, description = "Container id")),
    responses((status = 200, description = "Updated", body = Container), (status = 400, description = "Bad input"), (status = 404, description = "Unknown")))]
pub(super) async fn update_container(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<UpdateContainer>,
) -> Result<Reply<Container>, ApiError> {
    Ok(Reply::ok("container updated", s.service.update_container(&who, &id, req).await?))
}

/// Delete a container and its rootfs.
#[utoipa::path(delete, path = "/containers/{id}", tag = "containers", params(("id" = String, Path, description = "Container id")),
    responses((status = 200, description = "Deleted; `rootfs_removed` false for an adopted rootfs, whose files stay", body = ContainerDeleted), (status = 404, description = "Unknown"), (status = 409, description = "Busy")))]
pub(super) async fn delete_container(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<ContainerDeleted>, ApiError> {
    let deleted = s.service.delete_container(&who, &id).await?;
    let message = if deleted.rootfs_removed {
        "container deleted with its root filesystem"
    } else {
        "container deleted; its adopted root filesystem was released and its files left in place"
    };
    Ok(Reply::ok(message, deleted))
}

/// Lifecycle operation: `start`, `stop`, `force-stop`, `restart`, `pause`, `resume`.
#[utoipa::path(post, path = "/containers/{id}/{operation}", tag = "containers",
    params(("id" = String, Path, description = "Container id"), ("operation" = ContainerOperation, Path, description = "Operation")),
    responses((status = 200, description = "New state", body = Container), (status = 404, description = "Unknown container or operation"),
              (status = 409, description = "Not allowed in the current status")))]
pub(super) async fn container_operation(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, operation)): Path<(String, String)>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<Container>, ApiError> {
    let op = ContainerOperation::parse(&operation).ok_or_else(|| {
        let known: Vec<_> = ContainerOperation::ALL.iter().map(|o| o.as_str()).collect();
        ApiError::not_found_field("operation", format!("unknown operation `{operation}`; expected one of {}", known.join(", ")))
    })?;
    let container = s.service.container_operation(&who, &id, op).await?;
    Ok(Reply::ok(format!("container {}", op.as_str()), container))
}

use axum::extract::{Path, State};
use axum::Extension;

use super::AppState;
use crate::model::{CreateProject, NoQuery, PageQuery, Principal, Project};
use crate::{ApiError, ListReply, Reply, StrictJson, StrictQuery};

/// Create a project.
#[utoipa::path(post, path = "/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, description = "Created", body = Project), (status = 400, description = "Bad input"), (status = 409, description = "Name taken")))]
pub(super) async fn create_project(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
    StrictJson(req): StrictJson<CreateProject>,
) -> Result<Reply<Project>, ApiError> {
    let project = s.service.create_project(&who, req).await?;
    Ok(Reply::created("project created", project))
}

/// List the caller's projects.
#[utoipa::path(get, path = "/projects", tag = "projects", params(PageQuery),
    responses((status = 200, description = "Projects", body = [Project])))]
pub(super) async fn list_projects(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    StrictQuery(q): StrictQuery<PageQuery>,
) -> Result<ListReply<Project>, ApiError> {
    let page = q.page()?;
    Ok(ListReply::page("projects", s.service.list_projects(&who).await?, page))
}

/// One project.
#[utoipa::path(get, path = "/projects/{id}", tag = "projects", params(("id" = String, Path, description = "Project id")),
    responses((status = 200, description = "The project", body = Project), (status = 404, description = "Unknown")))]
pub(super) async fn get_project(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    StrictQuery(NoQuery {}): StrictQuery<NoQuery>,
) -> Result<Reply<Project>, ApiError> {
    Ok(Reply::ok("project", s.service.get_project(&who, &id).await?))
}

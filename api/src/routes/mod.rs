//! The router: public routes (`/healthz`, `/metrics`, `/openapi.json`), the
//! token-protected `/api/v1` tree, and envelope answers for 404 and 405.
//!
//! Routes are registered through `utoipa_axum` from the same annotated handlers
//! that make `/openapi.json`, so the document cannot drift from the code.

mod containers;
mod forward;
mod projects;
mod shares;
mod snapshots;
mod system;
mod tokens;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::metrics::{self as http_metrics, HttpMetrics};
use crate::{ApiError, HoodyService, MAX_BODY_BYTES};
pub use forward::{answer_forwarded, Forwarded};

#[derive(Clone)]
pub(crate) struct AppState {
    pub service: Arc<dyn HoodyService>,
    pub metrics: HttpMetrics,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hoodyd", description = "Storage daemon of the container platform: containers, projects, servers. \
        Every response is the envelope {statusCode, message, data}; errors add error.code and error.details; \
        lists add total. Everything under /api/v1 needs `Authorization: Bearer <token>`."),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

fn api_v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(projects::create_project, projects::list_projects))
        .routes(routes!(projects::get_project))
        .routes(routes!(containers::create_container, containers::list_containers))
        .routes(routes!(containers::get_container, containers::update_container, containers::delete_container))
        .routes(routes!(containers::container_operation))
        .routes(routes!(snapshots::create_snapshot, snapshots::list_snapshots))
        .routes(routes!(snapshots::get_snapshot, snapshots::restore_snapshot, snapshots::delete_snapshot))
        .routes(routes!(shares::create_share, shares::list_container_shares))
        .routes(routes!(shares::create_share_anywhere, shares::list_shares))
        .routes(routes!(shares::get_share, shares::update_share))
        .routes(routes!(shares::get_share_anywhere, shares::update_share_anywhere, shares::delete_share))
        .routes(routes!(shares::list_container_incoming))
        .routes(routes!(shares::list_incoming))
        .routes(routes!(shares::get_container_incoming))
        .routes(routes!(shares::get_incoming))
        .routes(routes!(shares::set_mount))
        .routes(routes!(shares::set_mount_anywhere))
        .routes(routes!(system::collect_garbage, system::gc_status))
        .routes(routes!(system::list_servers))
        .routes(routes!(system::get_server, system::remove_server))
        .routes(routes!(system::create_join_token))
        .routes(routes!(system::init_cluster))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(tokens::admin_revoke_token))
}

fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(system::healthz)).routes(routes!(system::metrics))
}

fn assemble() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    let (api, api_doc) = OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", api_v1()).split_for_parts();
    let (public, public_doc) = public().split_for_parts();
    let mut doc = api_doc;
    doc.merge(public_doc);
    (api, public, doc)
}

/// The OpenAPI document of every route this crate serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, _, mut doc) = assemble();
    doc.paths.paths.insert(
        "/openapi.json".into(),
        utoipa::openapi::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .summary(Some("This document"))
                .response("200", utoipa::openapi::Response::new("The OpenAPI document"))
                .build(),
        ),
    );
    doc
}

/// The whole HTTP application over `service`.
pub fn router(service: Arc<dyn HoodyService>) -> Router {
    let state = AppState { service, metrics: HttpMetrics::new() };
    let (api, public, _) = assemble();
    let document = openapi();
    // Outermost last: the token is checked first, then the owner of what changes answers.
    let api = api.layer(middleware::from_fn_with_state(state.clone(), forward::route_to_owner)).layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(api)
        .merge(public)
        .route(
            "/openapi.json",
            axum::routing::get(move |crate::StrictQuery(crate::model::NoQuery {}): crate::StrictQuery<crate::model::NoQuery>| async move { axum::Json(document.clone()) }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.metrics.clone(), http_metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route for {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {} is not allowed on {}", req.method(), req.uri().path()))
}

/// Resolves `Authorization: Bearer <token>` to a [`Principal`](crate::model::Principal)
/// placed in the request's extensions; anything else is a 401.
async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = match req.headers().get(AUTHORIZATION) {
        Some(h) => h,
        None => return ApiError::Unauthorized("missing `Authorization: Bearer <token>` header".into()).into_response(),
    };
    let token = match header.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) {
        Some(t) if !t.is_empty() => t,
        _ => return ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()).into_response(),
    };
    match state.service.authenticate(token).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

//! Any node answers any call: a request that changes a container, or works on
//! its files, is answered by the node that owns the container, and a new
//! container by the node that will own it. This layer asks the service which
//! node that is and, when it is another, sends the request on unchanged and
//! passes the answer back (status, body, errors). Reads are served from the
//! shared catalog by whichever node received them.
//!
//! The answering node authenticates the caller again from the forwarded
//! `Authorization` header, so forwarding grants nothing; a forwarded request
//! is never forwarded again (it carries [`Forwarded`]).

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tower::ServiceExt;

use super::AppState;
use crate::model::{ForwardedRequest, ForwardedResponse, Principal, RequestTarget};
use crate::{ApiError, MAX_BODY_BYTES};

/// Marks a request that another node sent on: answer it here, whatever the catalog says.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub from_node: String,
}

/// What `path` (under `/api/v1`) with `method` changes, if anything owned by a node.
fn target_of(method: &Method, path: &str) -> Option<TargetKind> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let rest = path.strip_prefix("/api/v1/containers")?;
    if rest.is_empty() || rest == "/" {
        return (method == Method::POST).then_some(TargetKind::NewContainer);
    }
    let id = rest.strip_prefix('/')?.split('/').next().filter(|s| !s.is_empty())?;
    // Shares are catalog records: the target's node mounts them by watching.
    let after = &rest[1 + id.len()..];
    if after.starts_with("/storage") {
        return None;
    }
    Some(TargetKind::Container(id.to_string()))
}

enum TargetKind {
    Container(String),
    NewContainer,
}

/// `server_id` of a container creation body, when it names one.
fn requested_server(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("server_id")?.as_str().map(str::to_string)
}

pub(super) async fn route_to_owner(State(state): State<AppState>, Extension(who): Extension<Principal>, req: Request, next: Next) -> Response {
    if req.extensions().get::<Forwarded>().is_some() {
        return next.run(req).await;
    }
    let Some(kind) = target_of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let body = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge(format!("the request body is over {MAX_BODY_BYTES} bytes")).into_response(),
    };
    let target = match kind {
        TargetKind::Container(id) => RequestTarget::Container(id),
        TargetKind::NewContainer => RequestTarget::NewContainer { server_id: requested_server(&body) },
    };
    let owner = match state.service.owner_of(&who, &target).await {
        Ok(owner) => owner,
        Err(e) => return e.into_response(),
    };
    let Some(node) = owner else {
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    };
    let header = |name| parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_string);
    let forwarded = ForwardedRequest {
        method: parts.method.to_string(),
        path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| parts.uri.path().to_string()),
        authorization: header(AUTHORIZATION).unwrap_or_default(),
        content_type: header(CONTENT_TYPE),
        body: body.to_vec(),
    };
    match state.service.forward(&node, forwarded).await {
        Ok(answer) => into_response(answer),
        Err(e) => e.into_response(),
    }
}

fn into_response(answer: ForwardedResponse) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body).into_response();
    if let Some(ct) = answer.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(CONTENT_TYPE, ct);
    }
    response
}

/// Answers a request another node forwarded here through `router` (this
/// node's own [`crate::router`]), exactly as if its client had asked here.
pub async fn answer_forwarded(router: axum::Router, from_node: &str, request: ForwardedRequest) -> ForwardedResponse {
    let built = Request::builder().method(request.method.as_str()).uri(request.path_and_query.as_str()).header(AUTHORIZATION, request.authorization.as_str());
    let built = match &request.content_type {
        Some(ct) => built.header(CONTENT_TYPE, ct.as_str()),
        None => built,
    };
    let mut req = match built.body(Body::from(request.body)) {
        Ok(r) => r,
        Err(e) => return error_answer(ApiError::invalid("request", format!("a forwarded request that is not HTTP: {e}"))).await,
    };
    req.extensions_mut().insert(Forwarded { from_node: from_node.to_string() });
    let response = match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    match to_bytes(response.into_body(), usize::MAX).await {
        Ok(body) => ForwardedResponse { status, content_type, body: body.to_vec() },
        Err(e) => error_answer(ApiError::internal(e)).await,
    }
}

async fn error_answer(e: ApiError) -> ForwardedResponse {
    let response = e.into_response();
    let status = response.status().as_u16();
    let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = to_bytes(response.into_body(), MAX_BODY_BYTES).await.map(|b| b.to_vec()).unwrap_or_default();
    ForwardedResponse { status, content_type, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(method: Method, path: &str) -> Option<String> {
        target_of(&method, path).map(|k| match k {
            TargetKind::Container(id) => id,
            TargetKind::NewContainer => "<new>".into(),
        })
    }

    #[test]
    fn changes_to_a_container_go_to_its_owner_and_reads_and_shares_stay_here() {
        assert_eq!(kind(Method::POST, "/api/v1/containers"), Some("<new>".into()));
        assert_eq!(kind(Method::GET, "/api/v1/containers"), None);
        assert_eq!(kind(Method::GET, "/api/v1/containers/c1"), None);
        assert_eq!(kind(Method::DELETE, "/api/v1/containers/c1"), Some("c1".into()));
        assert_eq!(kind(Method::PATCH, "/api/v1/containers/c1"), Some("c1".into()));
        assert_eq!(kind(Method::POST, "/api/v1/containers/c1/snapshots"), Some("c1".into()));
        assert_eq!(kind(Method::POST, "/api/v1/containers/c1/snapshots/a/restore"), Some("c1".into()));
        assert_eq!(kind(Method::POST, "/api/v1/containers/c1/storage/shares"), None);
        assert_eq!(kind(Method::PATCH, "/api/v1/containers/c1/storage/incoming/s/mount"), None);
        assert_eq!(kind(Method::POST, "/api/v1/projects"), None);
        assert_eq!(kind(Method::POST, "/api/v1/containers/"), Some("<new>".into()));
    }

    #[test]
    fn the_requested_server_is_read_from_the_body() {
        assert_eq!(requested_server(br#"{"name":"a","server_id":"n2"}"#), Some("n2".into()));
        assert_eq!(requested_server(br#"{"name":"a"}"#), None);
        assert_eq!(requested_server(b"not json"), None);
    }
}

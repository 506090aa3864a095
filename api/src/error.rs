//! The one place where an API failure becomes an HTTP status and a JSON envelope.
//!
//! Internal details are logged, never sent: `Internal` answers with a generic message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Every way an API call can fail, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: `code` is machine-readable (`malformed_json`, `unknown_field`,
    /// `missing_field`, `invalid_type`, `invalid_value`), `field` names the culprit.
    #[error("{message}")]
    BadRequest { code: &'static str, field: Option<String>, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Refused for who the caller is, because of one field (a host path from
    /// a tenant): 403 naming the field.
    #[error("{message}")]
    ForbiddenField { message: String, field: String },
    /// An unknown id, or an object of another account (indistinguishable on purpose).
    #[error("{message}")]
    NotFound { message: String, field: Option<String> },
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request is valid but the object's state does not allow it.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// An operation that failed for a reason the caller should read (a corrupt
    /// snapshot block, a filesystem error in the container).
    #[error("{0}")]
    Failed(String),
    /// The daemon cannot serve now (`/healthz` when the catalog or the store fails).
    #[error("{0}")]
    Unavailable(String),
    /// A failure of the daemon itself; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_field(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, field: Some(field.into()), message: message.into() }
    }

    /// `invalid_value` for `field`, the usual validation failure.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::bad_field("invalid_value", field, message)
    }

    pub fn forbidden_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::ForbiddenField { message: message.into(), field: field.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound { message: message.into(), field: None }
    }

    pub fn not_found_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::NotFound { message: message.into(), field: Some(field.into()) }
    }

    /// A failure of the daemon: `err` (which may name host paths) goes to the
    /// log when answered; the client reads only a generic message.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::Internal(err.to_string())
    }

    /// `Failed` with a message for the client, `detail` (which may name host
    /// paths) logged now instead of sent.
    pub fn failed(public: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        let public = public.into();
        tracing::error!(%detail, message = %public, "operation failed");
        ApiError::Failed(public)
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ForbiddenField { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Failed(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) | ApiError::ForbiddenField { .. } => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Failed(_) => "operation_failed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::BadRequest { field: Some(f), .. } | ApiError::NotFound { field: Some(f), .. } | ApiError::ForbiddenField { field: f, .. } => {
                json!({ "field": f })
            }
            _ => Value::Null,
        }
    }

    fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error; see the daemon's log".to_string(),
            other => other.to_string(),
        }
    }
}

/// What went wrong in an I/O error, safe to show a client: the system's text
/// for an OS error (`Device or resource busy (os error 16)`), else only the
/// error's kind. The error's own message is left out: it may name a host path.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => e.kind().to_string(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error answering a request");
        }
        let body = json!({
            "statusCode": status.as_u16(),
            "message": self.public_message(),
            "data": Value::Null,
            "error": { "code": self.code(), "details": self.details() },
        });
        (status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: ApiError) -> (StatusCode, Value) {
        let response = e.into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    const HOST_PATH: &str = "/var/lib/hoody/containers/c1/rootfs/hoody/shares/x";

    #[tokio::test]
    async fn an_internal_error_names_no_path_to_the_client() {
        let io = std::io::Error::new(std::io::ErrorKind::ResourceBusy, format!("{HOST_PATH}: Device or resource busy"));
        let (status, body) = answer(ApiError::internal(format!("removing {HOST_PATH}: {io}"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let text = body.to_string();
        assert!(!text.contains("/var/lib") && !text.contains("rootfs"), "the answer names a host path: {text}");
        assert_eq!(body["error"]["code"], "internal");
    }

    #[tokio::test]
    async fn a_failed_operation_sends_its_public_message_only() {
        let detail = format!("{HOST_PATH}: Device or resource busy (os error 16)");
        let (status, body) = answer(ApiError::failed("restore failed: /hoody/shares/x: Device or resource busy (os error 16)", detail)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["message"], "restore failed: /hoody/shares/x: Device or resource busy (os error 16)");
        assert!(!body.to_string().contains("/var/lib"));
    }

    #[test]
    fn an_io_reason_keeps_the_os_text_and_drops_the_message() {
        const EBUSY: i32 = 16;
        assert_eq!(io_reason(&std::io::Error::from_raw_os_error(EBUSY)), "Device or resource busy (os error 16)");
        let custom = std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{HOST_PATH} is a symlink"));
        let reason = io_reason(&custom);
        assert!(!reason.contains('/'), "{reason}");
        assert!(!reason.is_empty());
    }
}

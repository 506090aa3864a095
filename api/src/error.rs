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

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound { message: message.into(), field: None }
    }

    pub fn not_found_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::NotFound { message: message.into(), field: Some(field.into()) }
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::Internal(err.to_string())
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Failed(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Failed(_) => "operation_failed",
            ApiError::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::BadRequest { field: Some(f), .. } | ApiError::NotFound { field: Some(f), .. } => {
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

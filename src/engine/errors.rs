//! What went wrong, in the engine's words, and the one place it becomes an
//! [`ApiError`] at the HTTP edge (as `FsError::to_errno` is the one errno
//! mapping). The engine's modules and the domain rules they call return
//! [`EngineError`]; the `HoodyService` methods answer `ApiError` through
//! `From` (`?`).

use hoody_api::ApiError;

use crate::catalog::{CatalogError, KvError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A request's `field` has a value the engine does not accept.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// A request lacks `field`, or one of the fields `field` names.
    #[error("{message}")]
    Missing { field: String, message: String },
    /// What the request names fits several objects: `field` would tell which.
    #[error("{message}")]
    Ambiguous { field: String, message: String },
    /// No such object, or another account's (indistinguishable on purpose);
    /// `field` when a request field named it.
    #[error("{message}")]
    NotFound { message: String, field: Option<String> },
    /// The request is valid but the object's state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// The caller's credentials no longer name anyone (its account is gone).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (an admin's power).
    #[error("{0}")]
    Forbidden(String),
    /// The caller may not give `field` (a host path from a tenant).
    #[error("{message}")]
    ForbiddenField { field: String, message: String },
    /// An operation failed for a reason the caller should read; the detail
    /// (which may name host paths) was logged when it was made.
    #[error("{0}")]
    Failed(String),
    /// Something the call needs cannot be reached now (another server); may
    /// succeed later.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A failure of the engine itself (a broken invariant).
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::Invalid { field: field.into(), message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        EngineError::NotFound { message: message.into(), field: None }
    }

    /// A failure of the engine itself: `err` goes to the log when answered.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        EngineError::Internal(err.to_string())
    }

    /// `Failed` with a message for the client, `detail` logged now instead.
    pub fn failed(public: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        let public = public.into();
        tracing::error!(%detail, message = %public, "operation failed");
        EngineError::Failed(public)
    }

    /// Whether this is a failure of the daemon itself, whose detail is not the
    /// client's (answered as a generic internal error).
    pub fn is_internal(&self) -> bool {
        matches!(self, EngineError::Internal(_)) || matches!(self, EngineError::Catalog(c) if !matches!(c, CatalogError::Conflict(_) | CatalogError::Kv(KvError::Unavailable(_))))
    }

    pub fn forbidden_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::ForbiddenField { field: field.into(), message: message.into() }
    }

    pub fn not_found_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::NotFound { message: message.into(), field: Some(field.into()) }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid { field, message } => ApiError::invalid(field, message),
            EngineError::Missing { field, message } => ApiError::bad_field("missing_field", field, message),
            EngineError::Ambiguous { field, message } => ApiError::bad_field("ambiguous", field, message),
            EngineError::NotFound { message, field } => ApiError::NotFound { message, field },
            EngineError::Conflict(message) => ApiError::Conflict(message),
            EngineError::Unauthenticated(message) => ApiError::Unauthorized(message),
            EngineError::Forbidden(message) => ApiError::Forbidden(message),
            EngineError::ForbiddenField { field, message } => ApiError::forbidden_field(field, message),
            EngineError::Failed(message) => ApiError::Failed(message),
            EngineError::Unavailable(message) => ApiError::Unavailable(message),
            EngineError::Catalog(CatalogError::Conflict(message)) => ApiError::Conflict(message),
            // The client may retry; the message names what cannot be reached.
            EngineError::Catalog(CatalogError::Kv(e @ KvError::Unavailable(_))) => ApiError::Unavailable(e.to_string()),
            EngineError::Catalog(other) => ApiError::internal(other),
            EngineError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

/// The catalog's failures reach the API as the engine's.
impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        EngineError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of the engine's errors answers as the `ApiError` the engine built
    /// itself before it had its own type.
    #[test]
    fn each_engine_error_answers_as_before() {
        let cases: Vec<(EngineError, u16, &str)> = vec![
            (EngineError::invalid("alias", "bad"), 400, "invalid_value"),
            (EngineError::Missing { field: "f".into(), message: "m".into() }, 400, "missing_field"),
            (EngineError::Ambiguous { field: "container_id".into(), message: "m".into() }, 400, "ambiguous"),
            (EngineError::not_found("m"), 404, "not_found"),
            (EngineError::not_found_field("f", "m"), 404, "not_found"),
            (EngineError::Conflict("m".into()), 409, "conflict"),
            (EngineError::Unauthenticated("m".into()), 401, "unauthorized"),
            (EngineError::Forbidden("m".into()), 403, "forbidden"),
            (EngineError::forbidden_field("rootfs_path", "m"), 403, "forbidden"),
            (EngineError::Catalog(CatalogError::Conflict("m".into())), 409, "conflict"),
            (EngineError::Catalog(CatalogError::Corrupt { key: "k".into(), reason: "r".into() }), 500, "internal"),
            (EngineError::Failed("m".into()), 500, "operation_failed"),
            (EngineError::Unavailable("m".into()), 503, "unavailable"),
            (EngineError::Internal("m".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let shown = e.to_string();
            let api = ApiError::from(e);
            assert_eq!((api.status_code().as_u16(), api.code()), (status, code), "{shown}");
            if code != "internal" {
                assert_eq!(api.to_string(), shown);
            }
        }
    }

    /// A catalog that cannot be reached (etcd down) answers 503 naming it,
    /// not a generic 500.
    #[test]
    fn an_unreachable_catalog_answers_503_naming_it() {
        let e = EngineError::Catalog(CatalogError::Kv(KvError::Unavailable("etcd at http://10.0.0.1:2379: tcp connect error: Connection refused".into())));
        assert!(!e.is_internal());
        let api = ApiError::from(e);
        assert_eq!((api.status_code().as_u16(), api.code()), (503, "unavailable"));
        assert_eq!(api.to_string(), "catalog unavailable: etcd at http://10.0.0.1:2379: tcp connect error: Connection refused");
        let storage = ApiError::from(CatalogError::Kv(KvError::Storage("disk I/O error".into())));
        assert_eq!(storage.status_code().as_u16(), 500);
    }
}

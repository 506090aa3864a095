//! The success side of the `{statusCode, message, data}` envelope.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

/// One object (or `null`) in the envelope.
pub struct Reply<T> {
    status: StatusCode,
    message: String,
    data: T,
}

impl<T: Serialize> Reply<T> {
    pub fn ok(message: impl Into<String>, data: T) -> Self {
        Reply { status: StatusCode::OK, message: message.into(), data }
    }
    pub fn created(message: impl Into<String>, data: T) -> Self {
        Reply { status: StatusCode::CREATED, message: message.into(), data }
    }
    pub fn accepted(message: impl Into<String>, data: T) -> Self {
        Reply { status: StatusCode::ACCEPTED, message: message.into(), data }
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        let body = json!({
            "statusCode": self.status.as_u16(),
            "message": self.message,
            "data": self.data,
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// A page of a list plus the size of the whole list (`total`).
pub struct ListReply<T> {
    pub message: String,
    pub items: Vec<T>,
    pub total: usize,
}

impl<T: Serialize> ListReply<T> {
    /// Applies `limit`/`offset` to the whole list.
    pub fn page(message: impl Into<String>, all: Vec<T>, page: crate::model::Page) -> Self {
        let total = all.len();
        let items = all.into_iter().skip(page.offset).take(page.limit).collect();
        ListReply { message: message.into(), items, total }
    }
}

impl<T: Serialize> IntoResponse for ListReply<T> {
    fn into_response(self) -> Response {
        let body = json!({
            "statusCode": 200,
            "message": self.message,
            "data": self.items,
            "total": self.total,
        });
        (StatusCode::OK, axum::Json(body)).into_response()
    }
}

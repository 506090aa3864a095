//! The HTTP API of hoodyd: routes, the JSON envelope, bearer-token auth, the
//! error→status mapping, Prometheus HTTP metrics and the OpenAPI document.
//!
//! This crate knows HTTP and the [`HoodyService`] trait, nothing of the store:
//! the daemon implements the trait and hands it to [`router`].

mod envelope;
mod error;
mod extract;
mod metrics;
pub mod model;
mod routes;
mod service;

pub use envelope::{ListReply, Reply};
pub use error::{io_reason, ApiError};
pub use extract::{decode_json, StrictJson, StrictQuery};
pub use routes::{answer_forwarded, openapi, router, Forwarded};
pub use service::HoodyService;

/// Largest request body accepted; larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Serves the API over `service` on `listener` until `shutdown` resolves, then
/// lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: std::sync::Arc<dyn HoodyService>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(service)).with_graceful_shutdown(shutdown).await
}
pub use axum::Router as HttpRouter;

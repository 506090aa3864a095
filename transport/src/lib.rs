//! QUIC between hoodyd nodes: mutually authenticated endpoints (every peer shows
//! a certificate signed by the cluster CA), the wire protocol, a client with typed
//! calls and deadlines, and a server that hands each request to a [`RequestHandler`].
//!
//! This crate knows QUIC, TLS and the wire format; it knows nothing of FUSE, HTTP
//! or the block store.

pub mod endpoint;
pub mod protocol;
pub mod tls;

pub use endpoint::{Endpoint, Peer, RequestHandler};
pub use protocol::{Request, Response};
pub use tls::ClusterIdentity;

/// Failures of the transport, with whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("tls setup: {0}")]
    Tls(String),
    #[error("could not reach {addr}: {reason}")]
    Unreachable { addr: std::net::SocketAddr, reason: String },
    #[error("{addr} did not answer within {seconds} s")]
    Timeout { addr: std::net::SocketAddr, seconds: u64 },
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl TransportError {
    /// Whether the same call may succeed later (the peer may come back).
    pub fn is_retryable(&self) -> bool {
        matches!(self, TransportError::Unreachable { .. } | TransportError::Timeout { .. })
    }
}

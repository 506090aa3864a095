//! Errors of the transport: what failed locally ([`TransportError`]) and what a
//! peer's handler refused with ([`RemoteError`]), plus the error codes on the wire.

use std::net::SocketAddr;
use std::time::Duration;

/// Error codes of [`RemoteError`] and of QUIC stream resets and connection
/// closes. Stable: never reuse a retired number.
pub mod codes {
    /// Unspecified (a graceful close).
    pub const NONE: u16 = 0;
    /// The request is malformed or its kind is unknown to the handler.
    pub const BAD_REQUEST: u16 = 1;
    /// The peer does not offer this operation (e.g. streaming calls).
    pub const UNSUPPORTED: u16 = 2;
    /// The handler failed for a reason of its own.
    pub const INTERNAL: u16 = 3;
    /// The caller is not (or no longer) a member, or the connection may not do this.
    pub const FORBIDDEN: u16 = 4;
    /// The thing asked for does not exist.
    pub const NOT_FOUND: u16 = 5;
    /// A frame exceeded the receiver's size limit.
    pub const FRAME_TOO_LARGE: u16 = 6;
    /// The peer is busy or shutting down; retrying later can help.
    pub const UNAVAILABLE: u16 = 7;
    /// The peer gave up waiting (e.g. for the request of a join connection).
    pub const TIMEOUT: u16 = 8;
    /// The sender abandoned a stream (dropped it without finishing).
    pub const CANCELLED: u16 = 9;
}

/// What a handler refuses a request with. Travels as an error frame (see
/// [`crate::frame`]) and arrives at the caller as [`TransportError::Remote`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remote error {code}: {message}")]
pub struct RemoteError {
    pub code: u16,
    pub message: String,
}

impl RemoteError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        RemoteError { code, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(codes::BAD_REQUEST, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(codes::UNSUPPORTED, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(codes::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(codes::NOT_FOUND, message)
    }
}

/// Failures of the transport, with whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("tls setup: {0}")]
    Tls(String),
    #[error("could not reach {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("{addr} did not answer within {deadline:?}")]
    Timeout { addr: SocketAddr, deadline: Duration },
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The peer's handler (or the peer's transport) refused the request.
    #[error("peer refused (code {code}): {message}")]
    Remote { code: u16, message: String },
    /// This side refuses: the peer is not a member, or the connection may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge { size: usize, limit: usize },
    /// The peer stopped or reset a stream before it ended.
    #[error("stream closed by the peer (code {code})")]
    StreamClosed { code: u64 },
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the endpoint is shut down")]
    Shutdown,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl TransportError {
    /// Whether the same call may succeed later (the peer may come back, or was busy).
    pub fn is_retryable(&self) -> bool {
        match self {
            TransportError::Unreachable { .. } | TransportError::Timeout { .. } | TransportError::ConnectionLost(_) => true,
            TransportError::Remote { code, .. } => *code == codes::UNAVAILABLE,
            _ => false,
        }
    }

    /// Whether membership (or the kind of connection) was the reason, on either side.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, TransportError::Forbidden(_) | TransportError::Remote { code: codes::FORBIDDEN, .. })
    }

    /// The error code of a remote refusal, if this is one.
    pub fn remote_code(&self) -> Option<u16> {
        match self {
            TransportError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<RemoteError> for TransportError {
    fn from(e: RemoteError) -> Self {
        TransportError::Remote { code: e.code, message: e.message }
    }
}

/// A connection that ended: refused as no member of the cluster (the peer
/// closed it with [`codes::FORBIDDEN`]) is `Forbidden`, never worth retrying;
/// anything else is `ConnectionLost`.
pub(crate) fn connection_lost(e: &quinn::ConnectionError) -> TransportError {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) if close.error_code == quinn::VarInt::from_u32(u32::from(codes::FORBIDDEN)) => {
            TransportError::Forbidden(format!("refused by the peer: {}", String::from_utf8_lossy(&close.reason)))
        }
        other => TransportError::ConnectionLost(other.to_string()),
    }
}

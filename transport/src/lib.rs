//! QUIC between hoodyd nodes: mutually authenticated endpoints that carry opaque
//! frames (a `u16` kind and bytes) between cluster members.
//!
//! What this crate owns: connection setup and reuse, mTLS against the cluster CA,
//! the verified identity of the peer, reconnection, keep-alive, deadlines, size
//! limits, request/response and streaming calls in both directions, and the
//! token-based join handshake for nodes that have no certificate yet.
//!
//! What it must never do: know a message set. The daemon defines its messages
//! (remote shares, block transfer, cluster control) in `src/` and encodes them
//! into [`Frame`] bodies; this crate never looks inside a body. It knows nothing
//! of FUSE, the store or HTTP. The wire format is documented in [`frame`].

pub mod endpoint;
pub mod frame;
pub mod join;
pub mod tls;

mod connection;
mod error;
mod pool;
mod stream;

pub use connection::Peer;
pub use endpoint::{Endpoint, EndpointConfig, Handler};
pub use error::{codes, RemoteError, TransportError};
pub use frame::Frame;
pub use join::{join_call, JoinHandler};
pub use stream::{BodyReceiver, BodySender};
pub use tls::{ca_fingerprint, ClusterIdentity};

//! Servers working as one: `config` (where the cluster's catalog lives),
//! `join` (admitting servers), `membership` (liveness leases and removed
//! nodes), `messages` (the control messages on the QUIC transport) and
//! `peer_service` (what a node answers its peers). The runtime link a node
//! keeps to its cluster is [`ClusterLink`].

pub mod config;
pub mod join;
pub mod membership;
pub mod messages;
pub mod peer_service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hoody_transport::{Endpoint, Frame};

use crate::cluster::messages::{kind, ForwardedRequest, ForwardedResponse};

/// How long a forwarded API call may take at the owner (a job answers 202 long before).
pub const FORWARD_DEADLINE: Duration = Duration::from_secs(120);

/// The node's cluster as it is now (it changes once, at `cluster init`).
pub type SharedClusterConfig = Arc<parking_lot::RwLock<Option<config::ClusterConfig>>>;

/// A node's live link to its peers.
pub struct ClusterLink {
    pub endpoint: Endpoint,
    pub membership: Arc<membership::Membership>,
    /// `None` on a node on its own (embedded catalog); set by `cluster init`.
    pub config: SharedClusterConfig,
    /// The catalog store, which `cluster init` moves into etcd.
    pub catalog_store: Arc<crate::catalog::switchable::SwitchableKv>,
    /// Where peers reach this node.
    pub quic_addr: SocketAddr,
}

impl ClusterLink {
    /// Sends an API call to the node at `addr` and gives back its answer.
    pub async fn forward(&self, addr: SocketAddr, request: &ForwardedRequest) -> Result<ForwardedResponse, hoody_transport::TransportError> {
        let frame = Frame { kind: kind::FORWARD, body: messages::encode(request).into() };
        let answer = self.endpoint.call_with_deadline(addr, frame, FORWARD_DEADLINE).await?;
        messages::decode(answer.kind, &answer.body).map_err(hoody_transport::TransportError::Protocol)
    }
}

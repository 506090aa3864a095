//! Connections this endpoint dialed, one per address, shared by all calls to it.
//! A closed connection is replaced by the next call that needs it; dials to one
//! address are serialized so a burst of calls opens one connection, not hundreds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use crate::connection::{serve_connection, Peer};
use crate::endpoint::Shared;
use crate::error::{codes, TransportError};
use crate::tls::CLUSTER_SERVER_NAME;

pub(crate) struct Pool {
    endpoint: quinn::Endpoint,
    client: RwLock<quinn::ClientConfig>,
    peers: Mutex<HashMap<SocketAddr, Peer>>,
    dialing: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
}

impl Pool {
    pub(crate) fn new(endpoint: quinn::Endpoint, client: quinn::ClientConfig) -> Self {
        Pool {
            endpoint,
            client: RwLock::new(client),
            peers: Default::default(),
            dialing: Default::default(),
        }
    }

    pub(crate) fn set_client_config(&self, client: quinn::ClientConfig) {
        *self.client.write().expect("client config") = client;
    }

    fn cached(&self, addr: SocketAddr) -> Option<Peer> {
        let mut peers = self.peers.lock().expect("peer table");
        match peers.get(&addr) {
            Some(peer) if peer.is_connected() => Some(peer.clone()),
            Some(_) => {
                peers.remove(&addr);
                None
            }
            None => None,
        }
    }

    /// Forgets `peer`'s connection if it is still the pooled one, closing it.
    pub(crate) fn discard(&self, peer: &Peer, reason: &str) {
        let mut peers = self.peers.lock().expect("peer table");
        if peers.get(&peer.addr).is_some_and(|p| p.connection().stable_id() == peer.connection().stable_id()) {
            peers.remove(&peer.addr);
        }
        peer.connection().close(codes::UNAVAILABLE.into(), reason.as_bytes());
    }

    /// The connection to `addr`, dialing it if there is none (the caller bounds the wait).
    pub(crate) async fn get(&self, addr: SocketAddr, shared: &Arc<Shared>) -> Result<Peer, TransportError> {
        if let Some(peer) = self.cached(addr) {
            return Ok(peer);
        }
        let gate = self.dialing.lock().expect("dial table").entry(addr).or_default().clone();
        let _dialing = gate.lock().await;
        if let Some(peer) = self.cached(addr) {
            return Ok(peer);
        }
        if shared.is_shut_down() {
            return Err(TransportError::Shutdown);
        }
        let unreachable = |e: &dyn std::fmt::Display| TransportError::Unreachable { addr, reason: e.to_string() };
        let config = self.client.read().expect("client config").clone();
        let conn = self
            .endpoint
            .connect_with(config, addr, CLUSTER_SERVER_NAME)
            .map_err(|e| unreachable(&e))?
            .await
            .map_err(|e| unreachable(&e))?;
        let peer = match Peer::new(conn.clone(), shared.config.max_frame) {
            Ok(peer) => peer,
            Err(e) => {
                conn.close(codes::FORBIDDEN.into(), b"no verified identity");
                return Err(e);
            }
        };
        if !shared.handler.is_member(&peer.node_id) {
            conn.close(codes::FORBIDDEN.into(), b"not a member");
            return Err(TransportError::Forbidden(format!("node {} at {addr} is not a member", peer.node_id)));
        }
        tokio::spawn(serve_connection(peer.clone(), shared.clone()));
        self.peers.lock().expect("peer table").insert(addr, peer.clone());
        Ok(peer)
    }
}

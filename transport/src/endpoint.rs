//! A node's QUIC endpoint: serves peers' requests and calls peers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use crate::protocol::{error_code, read_frame, Request, Response};
use crate::tls::{ClusterIdentity, CLUSTER_SERVER_NAME};
use crate::TransportError;

/// Deadline of one call, connection setup included: a dead peer becomes an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The calling node, as seen by the handler.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
}

/// What a node does with its peers' requests.
#[async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    async fn handle(&self, peer: &Peer, request: Request) -> Response;
}

/// A bound QUIC endpoint with the node's cluster identity.
#[derive(Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    connections: Arc<Mutex<HashMap<SocketAddr, quinn::Connection>>>,
}

impl Endpoint {
    /// Binds `addr` (port 0 allowed) and starts serving `handler`.
    pub fn bind(addr: SocketAddr, identity: &ClusterIdentity, handler: Arc<dyn RequestHandler>) -> Result<Self, TransportError> {
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(identity.server_config()?).map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(Arc::new(transport_config()));
        let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(identity.client_config()?).map_err(|e| TransportError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(Arc::new(transport_config()));
        let mut inner = quinn::Endpoint::server(server, addr)?;
        inner.set_default_client_config(client);
        let endpoint = Endpoint { inner, connections: Default::default() };
        tokio::spawn(accept_loop(endpoint.inner.clone(), handler));
        Ok(endpoint)
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.inner.local_addr()?)
    }

    /// Sends `request` to the node at `addr` and waits for its answer, at most [`CALL_TIMEOUT`].
    pub async fn call(&self, addr: SocketAddr, request: &Request) -> Result<Response, TransportError> {
        match tokio::time::timeout(CALL_TIMEOUT, self.call_inner(addr, request)).await {
            Ok(result) => result,
            Err(_) => {
                self.connections.lock().expect("connection table").remove(&addr);
                Err(TransportError::Timeout { addr, seconds: CALL_TIMEOUT.as_secs() })
            }
        }
    }

    async fn call_inner(&self, addr: SocketAddr, request: &Request) -> Result<Response, TransportError> {
        let conn = self.connection(addr).await?;
        let unreachable = |e: &dyn std::fmt::Display| TransportError::Unreachable { addr, reason: e.to_string() };
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                self.connections.lock().expect("connection table").remove(&addr);
                return Err(unreachable(&e));
            }
        };
        send.write_all(&request.encode()).await.map_err(|e| unreachable(&e))?;
        send.finish().map_err(|e| unreachable(&e))?;
        let (kind, payload) = read_frame(&mut recv).await?;
        Response::decode(kind, &payload)
    }

    async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, TransportError> {
        if let Some(c) = self.connections.lock().expect("connection table").get(&addr) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let unreachable = |e: &dyn std::fmt::Display| TransportError::Unreachable { addr, reason: e.to_string() };
        let conn = self.inner.connect(addr, CLUSTER_SERVER_NAME).map_err(|e| unreachable(&e))?.await.map_err(|e| unreachable(&e))?;
        self.connections.lock().expect("connection table").insert(addr, conn.clone());
        Ok(conn)
    }

    /// Closes every connection and stops accepting.
    pub async fn shutdown(&self) {
        self.inner.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.wait_idle()).await;
    }
}

fn transport_config() -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("valid idle timeout")));
    config.keep_alive_interval(Some(Duration::from_secs(5)));
    config
}

async fn accept_loop(endpoint: quinn::Endpoint, handler: Arc<dyn RequestHandler>) {
    while let Some(incoming) = endpoint.accept().await {
        let handler = handler.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(conn, Peer { addr }, handler).await,
                Err(e) => tracing::warn!(%addr, error = %e, "refused QUIC peer"),
            }
        });
    }
}

async fn serve_connection(conn: quinn::Connection, peer: Peer, handler: Arc<dyn RequestHandler>) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let handler = handler.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let response = match read_frame(&mut recv).await.and_then(|(k, p)| Request::decode(k, &p)) {
                Ok(request) => handler.handle(&peer, request).await,
                Err(e) => Response::Error { code: error_code::BAD_REQUEST, message: e.to_string() },
            };
            if send.write_all(&response.encode()).await.is_ok() {
                let _ = send.finish();
                let _ = send.stopped().await;
            }
            let _ = send.shutdown().await;
        });
    }
}

//! Helpers shared by the transport's integration tests: a fresh cluster CA,
//! node identities, endpoints on loopback, and raw QUIC clients that can send
//! what a well-behaved endpoint never would.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hoody_transport::tls::{issue_node_identity, new_cluster_ca, CLUSTER_SERVER_NAME};
use hoody_transport::{ClusterIdentity, Endpoint, EndpointConfig, Frame, Handler, JoinHandler, Peer, RemoteError};

pub struct Cluster {
    pub ca_pem: String,
    pub ca_key: String,
}

impl Cluster {
    pub fn new() -> Self {
        let (ca_pem, ca_key) = new_cluster_ca().unwrap();
        Cluster { ca_pem, ca_key }
    }

    pub fn identity(&self, name: &str) -> ClusterIdentity {
        issue_node_identity(&self.ca_pem, &self.ca_key, &format!("id-{name}"), name).unwrap()
    }

    pub fn node(&self, name: &str, handler: Arc<dyn Handler>) -> Endpoint {
        Endpoint::bind(loopback(), &self.identity(name), handler, None, EndpointConfig::default()).unwrap()
    }
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Answers kind `k` with kind `k + 1` and the same body; remembers who called.
#[derive(Default)]
pub struct Echo {
    pub calls: AtomicUsize,
    pub callers: Mutex<Vec<(String, String, SocketAddr)>>,
    pub revoked: AtomicBool,
}

#[async_trait]
impl Handler for Echo {
    async fn call(&self, peer: &Peer, request: Frame) -> Result<Frame, RemoteError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.callers.lock().unwrap().push((peer.node_id.clone(), peer.node_name.clone(), peer.addr));
        if request.kind == 999 {
            return Err(RemoteError::not_found("nothing of kind 999"));
        }
        Ok(Frame::new(request.kind + 1, request.body))
    }

    fn is_member(&self, _node_id: &str) -> bool {
        !self.revoked.load(Ordering::SeqCst)
    }
}

/// Admits whoever shows the token "let me in".
pub struct TokenJoin;

#[async_trait]
impl JoinHandler for TokenJoin {
    async fn join(&self, _addr: SocketAddr, request: Frame) -> Result<Frame, RemoteError> {
        if &request.body[..] == b"let me in" {
            Ok(Frame::new(request.kind, &b"welcome"[..]))
        } else {
            Err(RemoteError::forbidden("bad token"))
        }
    }
}

/// A bare QUIC client using `tls`, for handshakes and bytes the endpoint would never produce.
pub async fn raw_connect(tls: rustls::ClientConfig, addr: SocketAddr) -> Result<(quinn::Endpoint, quinn::Connection), quinn::ConnectionError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let conn = endpoint
        .connect_with(quinn::ClientConfig::new(Arc::new(crypto)), addr, CLUSTER_SERVER_NAME)
        .unwrap()
        .await?;
    Ok((endpoint, conn))
}

/// TLS of a client that trusts `ca_pem` but shows no certificate, under the member ALPN.
pub fn certless_client_tls(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![hoody_transport::tls::ALPN.to_vec()];
    tls
}

/// Deterministic bytes for chunk `i` of a transfer, so the receiver can check them.
pub fn pattern(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

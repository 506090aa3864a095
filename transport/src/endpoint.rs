//! A node's QUIC endpoint: accepts members (and, if asked, joining nodes), serves
//! their streams with the [`Handler`], and calls members over pooled connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::connection::{serve_connection, Peer};
use crate::error::{codes, RemoteError, TransportError};
use crate::frame::{check_outgoing, Frame, DEFAULT_MAX_FRAME};
use crate::join::{serve_join, JoinHandler};
use crate::pool::Pool;
use crate::stream::{BodyReceiver, BodySender};
use crate::tls::{ClusterIdentity, ALPN, JOIN_ALPN};

/// What a node does with the streams its peers open.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Request/response on one stream.
    async fn call(&self, peer: &Peer, request: Frame) -> Result<Frame, RemoteError>;

    /// A streaming call: the request frame, then bodies both ways (block
    /// transfers, large reads). The answer body ends when this returns; an error
    /// is appended to it as an error frame.
    async fn stream(&self, peer: &Peer, request: Frame, rx: BodyReceiver, tx: BodySender) -> Result<(), RemoteError> {
        let _ = (peer, request, rx, tx);
        Err(RemoteError::unsupported("this node does not accept streaming calls"))
    }

    /// Whether a node id is still a member. Checked when a connection is set up
    /// and before each incoming stream, so a revoked node is refused at once.
    fn is_member(&self, node_id: &str) -> bool {
        let _ = node_id;
        true
    }
}

/// Limits and timers of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Largest frame body accepted or sent.
    pub max_frame: usize,
    /// Deadline of [`Endpoint::call`], connection setup included; also how long a
    /// peer may take to send a request after opening a stream.
    pub call_deadline: Duration,
    /// How often an idle connection is probed, keeping it (and NAT state) alive.
    pub keep_alive: Duration,
    /// A connection that hears nothing for this long is dead.
    pub idle_timeout: Duration,
    /// Streams a peer may have open at once on one connection (at least 1024).
    pub max_concurrent_streams: u32,
    /// Handshakes in progress at once; more are refused (cheaply) until some end.
    pub max_concurrent_handshakes: usize,
    /// Bytes one stream may have in flight towards us (flow control window).
    pub stream_receive_window: u32,
    /// Bytes all streams of a connection may have in flight towards us.
    pub connection_receive_window: u32,
    /// Bytes we keep in flight per connection before waiting for acknowledgements:
    /// one connection carries at most this much per round trip (4 MiB: 4 GB/s at
    /// 1 ms, 400 MB/s at 10 ms). Larger windows measured slower on a CPU-bound
    /// loopback (32 MiB: ~20% more CPU per byte, and losses once the receiver's
    /// socket buffer overflows), since the data in flight no longer fits in cache.
    pub send_window: u64,
    /// Largest UDP payload to use where path MTU discovery finds the path allows
    /// it (jumbo frames, loopback); 1472 keeps to Ethernet's 1500.
    pub max_udp_payload: u16,
    /// Kernel buffer asked for the UDP socket, each way. The default (about 200 KiB
    /// on Linux) overflows in a bulk transfer and every drop halves the congestion
    /// window; Linux caps the request at `net.core.rmem_max`/`wmem_max`.
    pub udp_socket_buffer: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            max_frame: DEFAULT_MAX_FRAME,
            call_deadline: Duration::from_secs(10),
            keep_alive: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(15),
            max_concurrent_streams: 1024,
            max_concurrent_handshakes: 64,
            stream_receive_window: 16 * 1024 * 1024,
            connection_receive_window: 32 * 1024 * 1024,
            send_window: 4 * 1024 * 1024,
            max_udp_payload: MAX_UDP_PAYLOAD,
            udp_socket_buffer: 8 * 1024 * 1024,
        }
    }
}

impl EndpointConfig {
    fn transport(&self) -> Result<quinn::TransportConfig, TransportError> {
        let invalid = |what: &str| TransportError::Protocol(format!("endpoint config: {what}"));
        let mut t = quinn::TransportConfig::default();
        t.max_idle_timeout(Some(self.idle_timeout.try_into().map_err(|_| invalid("idle_timeout too large"))?));
        t.keep_alive_interval(Some(self.keep_alive));
        t.max_concurrent_bidi_streams(self.max_concurrent_streams.max(1024).into());
        t.max_concurrent_uni_streams(0u32.into());
        t.stream_receive_window(self.stream_receive_window.into());
        t.receive_window(self.connection_receive_window.into());
        t.send_window(self.send_window);
        // Probe up to the largest payload we accept; a path that drops big packets
        // is detected and quinn falls back to what works.
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.max_udp_payload.clamp(1200, 65527));
        t.mtu_discovery_config(Some(mtu));
        Ok(t)
    }
}

/// Asks for `bytes` of kernel buffer each way, keeping the default where the
/// system refuses or grants less than it already had.
fn size_socket_buffers(socket: &std::net::UdpSocket, bytes: usize) {
    let Ok(state) = quinn::udp::UdpSocketState::new(socket.into()) else { return };
    if state.recv_buffer_size(socket.into()).is_ok_and(|have| have < bytes) {
        if let Err(e) = state.set_recv_buffer_size(socket.into(), bytes) {
            tracing::debug!(error = %e, "could not enlarge the UDP receive buffer");
        }
    }
    if state.send_buffer_size(socket.into()).is_ok_and(|have| have < bytes) {
        if let Err(e) = state.set_send_buffer_size(socket.into(), bytes) {
            tracing::debug!(error = %e, "could not enlarge the UDP send buffer");
        }
    }
    tracing::debug!(
        receive = ?state.recv_buffer_size(socket.into()).ok(),
        send = ?state.send_buffer_size(socket.into()).ok(),
        "UDP socket buffers"
    );
}

/// Ethernet's 1500-byte MTU less the IPv4 and UDP headers. Larger payloads measured
/// slower on loopback (transport_bench), so raising this is left to configuration.
const MAX_UDP_PAYLOAD: u16 = 1472;

/// State shared by the endpoint, its connections and their tasks.
pub(crate) struct Shared {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) join: Option<Arc<dyn JoinHandler>>,
    pub(crate) config: EndpointConfig,
    transport: Arc<quinn::TransportConfig>,
    shut_down: AtomicBool,
}

impl Shared {
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Relaxed)
    }
}

/// A bound QUIC endpoint with the node's cluster identity. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    accept_task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Endpoint {
    /// Binds `addr` (port 0 allowed) and starts serving `handler` (and `join`, for
    /// certificate-less nodes under [`JOIN_ALPN`], if given). Needs a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: &ClusterIdentity,
        handler: Arc<dyn Handler>,
        join: Option<Arc<dyn JoinHandler>>,
        config: EndpointConfig,
    ) -> Result<Self, TransportError> {
        let transport = Arc::new(config.transport()?);
        let shared = Arc::new(Shared {
            handler,
            join,
            config,
            transport,
            shut_down: AtomicBool::new(false),
        });
        let server = server_config(identity, &shared)?;
        let client = client_config(identity, &shared)?;
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(shared.config.max_udp_payload.clamp(1200, 65527))
            .map_err(|e| TransportError::Protocol(format!("endpoint config: {e}")))?;
        let socket = std::net::UdpSocket::bind(addr)?;
        size_socket_buffers(&socket, shared.config.udp_socket_buffer);
        let inner = quinn::Endpoint::new(endpoint_config, Some(server), socket, Arc::new(quinn::TokioRuntime))?;
        let pool = Arc::new(Pool::new(inner.clone(), client));
        let accept_task = tokio::spawn(accept_loop(inner.clone(), shared.clone()));
        Ok(Endpoint {
            inner,
            shared,
            pool,
            accept_task: Arc::new(Mutex::new(Some(accept_task))),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.inner.local_addr()?)
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.shared.config
    }

    /// Replaces the identity (after joining a cluster, or a renewal); connections
    /// set up from now on use it, open ones keep theirs.
    pub fn set_identity(&self, identity: &ClusterIdentity) -> Result<(), TransportError> {
        self.inner.set_server_config(Some(server_config(identity, &self.shared)?));
        self.pool.set_client_config(client_config(identity, &self.shared)?);
        Ok(())
    }

    /// The member at `addr`, connecting if needed: which node it is, and a handle to call it.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Peer, TransportError> {
        let deadline = self.shared.config.call_deadline;
        match tokio::time::timeout(deadline, self.pool.get(addr, &self.shared)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout { addr, deadline }),
        }
    }

    /// Sends `frame` to the member at `addr` and waits for its answer, at most the
    /// configured call deadline.
    pub async fn call(&self, addr: SocketAddr, frame: Frame) -> Result<Frame, TransportError> {
        self.call_with_deadline(addr, frame, self.shared.config.call_deadline).await
    }

    /// As [`Self::call`], with its own deadline (connection setup included).
    pub async fn call_with_deadline(&self, addr: SocketAddr, frame: Frame, deadline: Duration) -> Result<Frame, TransportError> {
        check_outgoing(&frame, self.shared.config.max_frame)?;
        let mut used: Option<(Peer, u64)> = None;
        let attempt = async {
            for _ in 0..2 {
                let peer = self.pool.get(addr, &self.shared).await?;
                used = Some((peer.clone(), peer.connection().stats().udp_rx.datagrams));
                match peer.open().await {
                    Ok(streams) => return peer.call_on(streams, frame).await,
                    // Refused as no member: dialing again changes nothing.
                    Err(e @ TransportError::Forbidden(_)) => {
                        self.pool.discard(&peer, "refused");
                        return Err(e);
                    }
                    // Nothing was sent: the pooled connection had died; dial again once.
                    Err(_) => self.pool.discard(&peer, "connection lost"),
                }
            }
            Err(TransportError::Unreachable {
                addr,
                reason: "connection lost twice while opening a stream".into(),
            })
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => {
                // Not a single packet from the peer while we waited: it is gone (a
                // crashed peer's connection would otherwise linger until the idle
                // timeout), so the next call dials afresh.
                if let Some((peer, received)) = used {
                    if peer.connection().stats().udp_rx.datagrams == received {
                        self.pool.discard(&peer, "peer unresponsive");
                    }
                }
                Err(TransportError::Timeout { addr, deadline })
            }
        }
    }

    /// Opens a streaming call to the member at `addr` (connecting within the call deadline).
    pub async fn open_stream(&self, addr: SocketAddr, frame: Frame) -> Result<(BodySender, BodyReceiver), TransportError> {
        self.connect(addr).await?.open_stream(frame).await
    }

    /// Closes every connection and stops accepting; later calls fail.
    pub async fn shutdown(&self) {
        self.shared.shut_down.store(true, Ordering::Relaxed);
        self.inner.close(codes::NONE.into(), b"shutdown");
        if let Some(task) = self.accept_task.lock().expect("accept task").take() {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.wait_idle()).await;
    }
}

fn server_config(identity: &ClusterIdentity, shared: &Shared) -> Result<quinn::ServerConfig, TransportError> {
    let tls = identity.server_config_with_join(shared.join.is_some())?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(shared.transport.clone());
    // Peers of a cluster do not roam; refusing migration keeps address validation simple.
    server.migration(false);
    Ok(server)
}

fn client_config(identity: &ClusterIdentity, shared: &Shared) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(identity.client_config()?).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(shared.transport.clone());
    Ok(client)
}

/// Handshakes of strangers must not starve members: at most
/// `max_concurrent_handshakes` run at once, each bounded in time; past half of
/// that, unvalidated addresses must first echo a retry token (one packet, no
/// crypto), and past the limit new attempts are refused outright. Members whose
/// connections are already up are not affected at all.
async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let limit = shared.config.max_concurrent_handshakes.max(1);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(limit));
    while let Some(incoming) = endpoint.accept().await {
        if shared.is_shut_down() {
            incoming.refuse();
            continue;
        }
        if handshakes.available_permits() < limit / 2 && !incoming.remote_address_validated() && incoming.may_retry() {
            let _ = incoming.retry();
            continue;
        }
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address();
            let handshake = async { incoming.accept()?.await };
            let conn = match tokio::time::timeout(shared.config.call_deadline, handshake).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "refused QUIC handshake");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "QUIC handshake timed out");
                    return;
                }
            };
            drop(permit);
            serve_accepted(conn, shared).await;
        });
    }
}

async fn serve_accepted(conn: quinn::Connection, shared: Arc<Shared>) {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    match alpn.as_deref() {
        Some(p) if p == JOIN_ALPN => match shared.join.clone() {
            Some(join) => serve_join(conn, join).await,
            None => conn.close(codes::FORBIDDEN.into(), b"not accepting joins"),
        },
        Some(p) if p == ALPN => match Peer::new(conn.clone(), shared.config.max_frame) {
            Ok(peer) if shared.handler.is_member(&peer.node_id) => serve_connection(peer, shared).await,
            Ok(peer) => {
                tracing::info!(node = %peer.node_id, addr = %peer.addr, "refused a node that is not a member");
                conn.close(codes::FORBIDDEN.into(), b"not a member");
            }
            Err(_) => conn.close(codes::FORBIDDEN.into(), b"a certificate is required"),
        },
        _ => conn.close(codes::FORBIDDEN.into(), b"unknown protocol"),
    }
}

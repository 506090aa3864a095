//! Joining a cluster: a node without a certificate connects under [`JOIN_ALPN`]
//! with a one-time token in its request, and trusts the server only through the
//! CA fingerprint it was given out of band.
//!
//! A join connection is deliberately narrow: one request, frames of at most
//! [`JOIN_MAX_FRAME`], [`JOIN_DEADLINE`] for the whole exchange, then it is
//! closed. Further streams on it are refused with `FORBIDDEN`, and it never
//! reaches the member [`crate::Handler`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{codes, RemoteError, TransportError};
use crate::frame::{check_outgoing, read_frame, read_item, read_open, write_frame, Frame, OPEN_CALL};
use crate::tls::{join_client_config, CLUSTER_SERVER_NAME};

pub use crate::tls::JOIN_ALPN;

/// Largest frame either side of a join connection accepts.
pub const JOIN_MAX_FRAME: usize = 64 * 1024;
/// The whole join exchange, handshake to answer, on the server's side.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(10);

/// What a node does with a join request (checking the token, issuing a certificate).
#[async_trait]
pub trait JoinHandler: Send + Sync + 'static {
    async fn join(&self, addr: SocketAddr, request: Frame) -> Result<Frame, RemoteError>;
}

/// Serves the one request of a join connection, refusing anything more.
pub(crate) async fn serve_join(conn: quinn::Connection, handler: Arc<dyn JoinHandler>) {
    let addr = conn.remote_address();
    let exchange = async {
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
        tokio::spawn(refuse_further_streams(conn.clone()));
        let request = async {
            if read_open(&mut recv).await? != OPEN_CALL {
                return Err(TransportError::Protocol("a join connection carries one call".into()));
            }
            match read_frame(&mut recv, JOIN_MAX_FRAME).await? {
                Some(frame) if !frame.is_error() => Ok(frame),
                _ => Err(TransportError::Protocol("no join request".into())),
            }
        };
        let answer = match request.await {
            Ok(frame) => match handler.join(addr, frame).await {
                Ok(answer) if answer.is_error() || answer.body.len() > JOIN_MAX_FRAME => RemoteError::internal("join answer too large or of the reserved kind").to_frame(),
                Ok(answer) => answer,
                Err(refusal) => refusal.to_frame(),
            },
            Err(e @ TransportError::FrameTooLarge { .. }) => RemoteError::new(codes::FRAME_TOO_LARGE, e.to_string()).to_frame(),
            Err(e) => RemoteError::bad_request(e.to_string()).to_frame(),
        };
        let _ = recv.stop(codes::NONE.into());
        write_frame(&mut send, &[], &answer).await?;
        let _ = send.finish();
        // Close only once the answer is acknowledged, so closing cannot cut it off.
        let _ = send.stopped().await;
        Ok::<(), TransportError>(())
    };
    match tokio::time::timeout(JOIN_DEADLINE, exchange).await {
        Ok(Ok(())) => conn.close(codes::NONE.into(), b"done"),
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "join exchange failed");
            conn.close(codes::BAD_REQUEST.into(), b"join failed");
        }
        Err(_) => conn.close(codes::TIMEOUT.into(), b"join deadline"),
    }
}

async fn refuse_further_streams(conn: quinn::Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let _ = recv.stop(codes::FORBIDDEN.into());
        let refusal = RemoteError::forbidden("a join connection carries one request").to_frame();
        if write_frame(&mut send, &[], &refusal).await.is_ok() {
            let _ = send.finish();
        }
    }
}

/// Connects to a join endpoint as a joining node would, trusting the server only
/// if its chain holds the CA with this fingerprint. Returns the connection and
/// the cell that holds that CA once verified.
async fn join_connect(addr: SocketAddr, ca_fingerprint: &str) -> Result<(quinn::Endpoint, quinn::Connection, String), TransportError> {
    let (tls, found) = join_client_config(ca_fingerprint)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let client = quinn::ClientConfig::new(Arc::new(crypto));
    let bind: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = quinn::Endpoint::client(bind)?;
    let unreachable = |e: &dyn std::fmt::Display| TransportError::Unreachable { addr, reason: e.to_string() };
    let connecting = endpoint.connect_with(client, addr, CLUSTER_SERVER_NAME).map_err(|e| unreachable(&e))?;
    let conn = match connecting.await {
        Ok(conn) => conn,
        // A server we cannot trust is not something retrying fixes.
        Err(quinn::ConnectionError::TransportError(e)) if e.code.to_string().contains("CRYPTO") || e.reason.contains("fingerprint") => {
            return Err(TransportError::Tls(e.to_string()))
        }
        Err(e) => return Err(unreachable(&e)),
    };
    let ca = found
        .lock()
        .expect("join CA cell")
        .take()
        .ok_or_else(|| TransportError::Tls("the server's CA was not verified".into()))?;
    let ca_pem = pem::encode(&pem::Pem::new("CERTIFICATE", ca.to_vec()));
    Ok((endpoint, conn, ca_pem))
}

/// Asks the node at `addr` to admit us: no client certificate; the server's chain
/// must contain a CA certificate whose SHA-256 (of its DER, hex) is
/// `ca_fingerprint`, and the server's certificate must chain to it. Returns the
/// answer and the PEM of the CA that was verified.
pub async fn join_call(addr: SocketAddr, ca_fingerprint: &str, frame: Frame, deadline: Duration) -> Result<(Frame, String), TransportError> {
    check_outgoing(&frame, JOIN_MAX_FRAME)?;
    let exchange = async {
        let (endpoint, conn, ca_pem) = join_connect(addr, ca_fingerprint).await?;
        let answer = call_once(&conn, &frame).await;
        conn.close(codes::NONE.into(), b"done");
        endpoint.close(codes::NONE.into(), b"done");
        Ok((answer?, ca_pem))
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(result) => result,
        Err(_) => Err(TransportError::Timeout { addr, deadline }),
    }
}

async fn call_once(conn: &quinn::Connection, frame: &Frame) -> Result<Frame, TransportError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
    write_frame(&mut send, &[OPEN_CALL], frame).await?;
    let _ = send.finish();
    match read_item(&mut recv, JOIN_MAX_FRAME).await? {
        Some(answer) => Ok(answer),
        None => Err(TransportError::Protocol("the join stream ended without an answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{ca_fingerprint, issue_node_identity, new_cluster_ca};
    use crate::{Endpoint, EndpointConfig, Handler, Peer};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct NoCalls;
    #[async_trait]
    impl Handler for NoCalls {
        async fn call(&self, _peer: &Peer, _request: Frame) -> Result<Frame, RemoteError> {
            Err(RemoteError::unsupported("none"))
        }
    }

    struct SlowJoin(AtomicUsize);
    #[async_trait]
    impl JoinHandler for SlowJoin {
        async fn join(&self, _addr: SocketAddr, request: Frame) -> Result<Frame, RemoteError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Frame::new(request.kind + 1, request.body))
        }
    }

    #[tokio::test]
    async fn a_second_request_on_a_join_connection_is_refused() {
        let (ca, key) = new_cluster_ca().unwrap();
        let id = issue_node_identity(&ca, &key, "server", "s").unwrap();
        let join = Arc::new(SlowJoin(AtomicUsize::new(0)));
        let server = Endpoint::bind("127.0.0.1:0".parse().unwrap(), &id, Arc::new(NoCalls), Some(join.clone()), EndpointConfig::default()).unwrap();
        let (_endpoint, conn, ca_pem) = join_connect(server.local_addr().unwrap(), &ca_fingerprint(&ca).unwrap()).await.unwrap();
        assert_eq!(ca_fingerprint(&ca_pem).unwrap(), ca_fingerprint(&ca).unwrap());
        let first = Frame::new(1, &b"token"[..]);
        let (a, b) = tokio::join!(call_once(&conn, &first), async {
            // Opened while the first is being answered: the server must refuse it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            call_once(&conn, &Frame::new(1, &b"again"[..])).await
        });
        assert_eq!(a.unwrap(), Frame::new(2, &b"token"[..]));
        let err = b.unwrap_err();
        assert_eq!(err.remote_code(), Some(codes::FORBIDDEN), "{err}");
        assert_eq!(join.0.load(Ordering::SeqCst), 1);
        // A request over the join frame limit is refused without reaching the handler.
        let (_endpoint, conn, _) = join_connect(server.local_addr().unwrap(), &ca_fingerprint(&ca).unwrap()).await.unwrap();
        let err = call_once(&conn, &Frame::new(1, vec![0u8; JOIN_MAX_FRAME + 1])).await.unwrap_err();
        assert_eq!(err.remote_code(), Some(codes::FRAME_TOO_LARGE), "{err}");
        assert_eq!(join.0.load(Ordering::SeqCst), 1);
        server.shutdown().await;
    }
}

//! Joining: a node without a certificate asks to be admitted, trusting the server
//! only through the CA fingerprint; the join door leads nowhere else.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{certless_client_tls, loopback, raw_connect, Cluster, Echo, TokenJoin};
use hoody_transport::frame::{read_item, OPEN_CALL};
use hoody_transport::{ca_fingerprint, codes, join_call, Endpoint, EndpointConfig, Frame, TransportError};

fn join_server(cluster: &Cluster, handler: Arc<Echo>) -> Endpoint {
    Endpoint::bind(loopback(), &cluster.identity("server"), handler, Some(Arc::new(TokenJoin)), EndpointConfig::default()).unwrap()
}

#[tokio::test]
async fn join_with_the_right_fingerprint_returns_the_answer_and_the_verified_ca() {
    let cluster = Cluster::new();
    let server = join_server(&cluster, Arc::new(Echo::default()));
    let fingerprint = ca_fingerprint(&cluster.ca_pem).unwrap();
    let (answer, ca_pem) = join_call(server.local_addr().unwrap(), &fingerprint, Frame::new(3, &b"let me in"[..]), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer, Frame::new(3, &b"welcome"[..]));
    assert_eq!(ca_fingerprint(&ca_pem).unwrap(), fingerprint);
    // The handler's refusal arrives with its code.
    let err = join_call(
        server.local_addr().unwrap(),
        &fingerprint.to_uppercase(),
        Frame::new(3, &b"wrong"[..]),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(err.remote_code(), Some(codes::FORBIDDEN), "{err}");
}

#[tokio::test]
async fn join_with_a_wrong_fingerprint_fails() {
    let (cluster, other) = (Cluster::new(), Cluster::new());
    let server = join_server(&cluster, Arc::new(Echo::default()));
    let wrong = ca_fingerprint(&other.ca_pem).unwrap();
    let err = join_call(server.local_addr().unwrap(), &wrong, Frame::new(3, &b"let me in"[..]), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls(_)), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_endpoint_without_a_join_handler_refuses_joins() {
    let cluster = Cluster::new();
    let server = cluster.node("server", Arc::new(Echo::default()));
    let fingerprint = ca_fingerprint(&cluster.ca_pem).unwrap();
    assert!(
        join_call(server.local_addr().unwrap(), &fingerprint, Frame::new(3, &b"let me in"[..]), Duration::from_secs(2))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_under_the_member_protocol() {
    let cluster = Cluster::new();
    let handler = Arc::new(Echo::default());
    // With and without a join handler (which lets certificate-less handshakes finish).
    for server in [join_server(&cluster, handler.clone()), cluster.node("plain", handler.clone())] {
        let refused = match raw_connect(certless_client_tls(&cluster.ca_pem), server.local_addr().unwrap()).await {
            Err(_) => true,
            Ok((_endpoint, conn)) => match conn.open_bi().await {
                Err(_) => true,
                Ok((mut send, mut recv)) => {
                    let _ = send.write_all(&[&[OPEN_CALL][..], &Frame::new(1, Bytes::new()).encode()].concat()).await;
                    let _ = send.finish();
                    read_item(&mut recv, 1024).await.is_err()
                }
            },
        };
        assert!(refused);
    }
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
}

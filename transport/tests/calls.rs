//! Request/response between real endpoints on loopback: identity, refusals,
//! concurrency, malformed input, revocation, dead and restarted peers, and
//! calls the server makes back to the node that connected.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use common::{loopback, raw_connect, Cluster, Echo};
use hoody_transport::frame::{read_item, OPEN_CALL};
use hoody_transport::{codes, Endpoint, EndpointConfig, Frame, Handler, Peer, RemoteError, TransportError};

#[tokio::test]
async fn members_talk_and_each_side_knows_the_other_by_its_certificate() {
    let cluster = Cluster::new();
    let (ha, hb) = (Arc::new(Echo::default()), Arc::new(Echo::default()));
    let (a, b) = (cluster.node("alpha", ha.clone()), cluster.node("beta", hb.clone()));
    let answer = a.call(b.local_addr().unwrap(), Frame::new(1, &b"ping"[..])).await.unwrap();
    assert_eq!(answer, Frame::new(2, &b"ping"[..]));
    let (id, name, _) = hb.callers.lock().unwrap()[0].clone();
    assert_eq!((id.as_str(), name.as_str()), ("id-alpha", "alpha"));
    let peer = a.connect(b.local_addr().unwrap()).await.unwrap();
    assert_eq!((peer.node_id.as_str(), peer.node_name.as_str()), ("id-beta", "beta"));
    // The other direction, and a refusal arriving as a remote error with its code.
    assert_eq!(b.call(a.local_addr().unwrap(), Frame::new(5, Bytes::new())).await.unwrap().kind, 6);
    let err = a.call(b.local_addr().unwrap(), Frame::new(999, Bytes::new())).await.unwrap_err();
    assert!(
        matches!(&err, TransportError::Remote { code: codes::NOT_FOUND, message } if message.contains("999")),
        "{err}"
    );
    assert!(!err.is_retryable());
    // The reserved kind is refused before anything is sent.
    assert!(matches!(
        a.call(b.local_addr().unwrap(), Frame::new(0xFFFF, Bytes::new())).await,
        Err(TransportError::Protocol(_))
    ));
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused_both_ways() {
    let (ours, theirs) = (Cluster::new(), Cluster::new());
    let (hm, hs) = (Arc::new(Echo::default()), Arc::new(Echo::default()));
    let (member, stranger) = (ours.node("member", hm.clone()), theirs.node("stranger", hs.clone()));
    let err = stranger.call(member.local_addr().unwrap(), Frame::new(1, Bytes::new())).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    let err = member.call(stranger.local_addr().unwrap(), Frame::new(1, Bytes::new())).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
    assert_eq!(hm.calls.load(Ordering::SeqCst) + hs.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn calls_256_in_flight_share_one_connection_and_all_complete() {
    let cluster = Cluster::new();
    let hb = Arc::new(Echo::default());
    let (a, b) = (cluster.node("a", Arc::new(Echo::default())), cluster.node("b", hb.clone()));
    let addr = b.local_addr().unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..256u16 {
        let a = a.clone();
        calls.spawn(async move { (i, a.call(addr, Frame::new(i, i.to_be_bytes().to_vec())).await) });
    }
    let mut done = 0;
    while let Some(joined) = calls.join_next().await {
        let (i, answer) = joined.unwrap();
        assert_eq!(answer.unwrap(), Frame::new(i + 1, i.to_be_bytes().to_vec()));
        done += 1;
    }
    assert_eq!(done, 256);
    let ports: std::collections::HashSet<u16> = hb.callers.lock().unwrap().iter().map(|c| c.2.port()).collect();
    assert_eq!(ports.len(), 1, "one connection carries every call");
}

#[tokio::test]
async fn a_malformed_frame_ends_only_its_stream() {
    let cluster = Cluster::new();
    let hb = Arc::new(Echo::default());
    let b = cluster.node("b", hb.clone());
    let addr = b.local_addr().unwrap();
    let (_client, conn) = raw_connect(cluster.identity("raw").client_config().unwrap(), addr).await.unwrap();
    async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) -> Result<Option<Frame>, TransportError> {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
        read_item(&mut recv, 1 << 20).await
    }
    let cases: [(&[u8], u16); 5] = [
        (b"\x01\x00\x00\x00\x01\x00", codes::BAD_REQUEST),             // length shorter than the kind
        (b"\x01\xff\xff\xff\xff\x00\x01", codes::FRAME_TOO_LARGE),     // 4 GiB announced
        (b"\x01\x00\x00\x00\x10\x00\x01abc", codes::BAD_REQUEST),      // ends inside the body
        (b"\x09\x00\x00\x00\x02\x00\x01", codes::BAD_REQUEST),         // unknown stream type
        (b"\x01\x00\x00\x00\x04\xff\xff\x00\x01", codes::BAD_REQUEST), // an error frame as request
    ];
    // In parallel with a good call each, on the same connection.
    for (bytes, code) in cases {
        let good = [&[OPEN_CALL][..], &Frame::new(3, &b"ok"[..]).encode()].concat();
        let (bad, good) = tokio::join!(send_raw(&conn, bytes), send_raw(&conn, &good));
        assert_eq!(bad.unwrap_err().remote_code(), Some(code), "{bytes:?}");
        assert_eq!(good.unwrap(), Some(Frame::new(4, &b"ok"[..])));
    }
    assert_eq!(hb.calls.load(Ordering::SeqCst), 5, "malformed requests never reach the handler");

    // An oversize frame from a peer with a larger limit: refused, the connection carries on.
    let big = EndpointConfig {
        max_frame: 32 << 20,
        ..EndpointConfig::default()
    };
    let a = Endpoint::bind(loopback(), &cluster.identity("a"), Arc::new(Echo::default()), None, big).unwrap();
    let err = a.call(addr, Frame::new(1, vec![0u8; (16 << 20) + 1])).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(codes::FRAME_TOO_LARGE), "{err}");
    assert_eq!(a.call(addr, Frame::new(1, vec![7u8; 16 << 20])).await.unwrap().body.len(), 16 << 20);
}

#[tokio::test]
async fn a_revoked_node_is_refused_on_its_open_connection() {
    let cluster = Cluster::new();
    let hb = Arc::new(Echo::default());
    let (a, b) = (cluster.node("a", Arc::new(Echo::default())), cluster.node("b", hb.clone()));
    let addr = b.local_addr().unwrap();
    let peer = a.connect(addr).await.unwrap();
    assert!(a.call(addr, Frame::new(1, Bytes::new())).await.is_ok());
    hb.revoked.store(true, Ordering::SeqCst);
    let err = a.call(addr, Frame::new(1, Bytes::new())).await.unwrap_err();
    assert!(matches!(err, TransportError::Remote { code: codes::FORBIDDEN, .. }), "{err}");
    assert!(err.is_forbidden());
    assert!(peer.is_connected(), "the refusal came on the connection that was already open");
    let err = match peer.open_stream(Frame::new(1, Bytes::new())).await {
        Ok((_tx, mut rx)) => rx.recv().await.unwrap().unwrap_err(),
        Err(e) => e,
    };
    assert!(err.is_forbidden(), "{err}");
    assert_eq!(hb.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_gone_peer_is_an_error_within_the_deadline_and_a_restarted_one_is_reached_again() {
    let cluster = Cluster::new();
    let a = cluster.node("a", Arc::new(Echo::default()));
    // Long enough for a handshake and a call on a loaded 2-core machine (800 ms
    // lost a second attempt there now and then); the dead connection still
    // costs exactly one call.
    let deadline = Duration::from_secs(2);

    // Nothing listens here: a UDP socket bound and dropped.
    let nothing = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let started = Instant::now();
    let err = a.call_with_deadline(nothing, Frame::new(1, Bytes::new()), deadline).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(started.elapsed() < deadline + Duration::from_millis(500), "{:?}", started.elapsed());

    let b = cluster.node("b", Arc::new(Echo::default()));
    let addr = b.local_addr().unwrap();
    assert!(a.call(addr, Frame::new(1, Bytes::new())).await.is_ok());
    b.shutdown().await;
    drop(b);
    let started = Instant::now();
    assert!(a.call_with_deadline(addr, Frame::new(1, Bytes::new()), deadline).await.is_err());
    assert!(started.elapsed() < deadline + Duration::from_millis(500), "{:?}", started.elapsed());

    let b = rebind(&cluster, addr).await;
    let answer = a.call_with_deadline(addr, Frame::new(1, Bytes::new()), deadline).await;
    assert_eq!(answer.unwrap().kind, 2, "the call after the restart dials again");
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_peer_costs_one_timeout_then_the_restarted_one_is_reached() {
    let cluster = Cluster::new();
    let a = cluster.node("a", Arc::new(Echo::default()));
    // b runs on a runtime of its own, so that it can die without a word.
    let doomed = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let b = {
        let _inside = doomed.enter();
        cluster.node("b", Arc::new(Echo::default()))
    };
    let addr = b.local_addr().unwrap();
    assert!(a.call(addr, Frame::new(1, Bytes::new())).await.is_ok());
    // A crash sends no close: the pooled connection looks alive until it is found silent.
    doomed.shutdown_background();
    drop(b);
    let b = rebind(&cluster, addr).await;
    // Long enough for a handshake and a call on a loaded 2-core machine (800 ms
    // lost a second attempt there now and then); the dead connection still
    // costs exactly one call.
    let deadline = Duration::from_secs(2);
    let mut answered = None;
    for attempt in 0..4 {
        if let Ok(answer) = a.call_with_deadline(addr, Frame::new(1, Bytes::new()), deadline).await {
            answered = Some((attempt, answer));
            break;
        }
    }
    let (attempt, answer) = answered.expect("the restarted peer answers");
    // Usually one call is lost to the dead connection; a stray packet from the
    // restarted peer (which knows nothing of the old connection) can make the
    // pool keep it for one more (seen about 1 run in 15 on a loaded machine).
    assert!(attempt <= 2, "at most two calls are lost to the dead connection");
    assert_eq!(answer.kind, 2);
    b.shutdown().await;
}

async fn rebind(cluster: &Cluster, addr: SocketAddr) -> Endpoint {
    for _ in 0..50 {
        match Endpoint::bind(addr, &cluster.identity("b"), Arc::new(Echo::default()), None, EndpointConfig::default()) {
            Ok(e) => return e,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("could not bind {addr} again");
}

/// On kind 1, asks the calling node (over the connection it opened) for kind 10,
/// and answers with what it said.
struct CallsBack;

#[async_trait]
impl Handler for CallsBack {
    async fn call(&self, peer: &Peer, request: Frame) -> Result<Frame, RemoteError> {
        let answer = peer
            .call(Frame::new(10, request.body), Duration::from_secs(5))
            .await
            .map_err(|e| RemoteError::internal(e.to_string()))?;
        Ok(Frame::new(answer.kind, [&b"via "[..], &answer.body].concat()))
    }
}

#[tokio::test]
async fn a_handler_calls_back_the_node_that_connected() {
    let cluster = Cluster::new();
    let client_handler = Arc::new(Echo::default());
    let client = cluster.node("client", client_handler.clone());
    let server = cluster.node("server", Arc::new(CallsBack));
    let answer = client.call(server.local_addr().unwrap(), Frame::new(1, &b"hello"[..])).await.unwrap();
    assert_eq!(answer, Frame::new(11, &b"via hello"[..]));
    let (id, _, addr) = client_handler.callers.lock().unwrap()[0].clone();
    assert_eq!(id, "id-server");
    assert_eq!(addr, server.local_addr().unwrap(), "the call back came over the client's own connection");
}

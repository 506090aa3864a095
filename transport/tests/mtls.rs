//! Real QUIC endpoints on loopback: members talk, strangers are refused.

use std::sync::Arc;

use async_trait::async_trait;
use hoody_transport::tls::{issue_node_identity, new_cluster_ca};
use hoody_transport::{Endpoint, Peer, Request, RequestHandler, Response};

struct Named(&'static str);

#[async_trait]
impl RequestHandler for Named {
    async fn handle(&self, _peer: &Peer, request: Request) -> Response {
        match request {
            Request::Ping { .. } => Response::Pong { node_id: self.0.into(), node_name: self.0.into() },
        }
    }
}

fn node(ca: &(String, String), name: &'static str) -> Endpoint {
    let id = issue_node_identity(&ca.0, &ca.1, name, name).unwrap();
    Endpoint::bind("127.0.0.1:0".parse().unwrap(), &id, Arc::new(Named(name))).unwrap()
}

#[tokio::test]
async fn members_of_one_cluster_talk() {
    let ca = new_cluster_ca().unwrap();
    let (a, b) = (node(&ca, "a"), node(&ca, "b"));
    let answer = a.call(b.local_addr().unwrap(), &Request::Ping { from_node: "a".into() }).await.unwrap();
    assert_eq!(answer, Response::Pong { node_id: "b".into(), node_name: "b".into() });
    // A second call reuses the connection and still works.
    let again = b.call(a.local_addr().unwrap(), &Request::Ping { from_node: "b".into() }).await.unwrap();
    assert_eq!(again, Response::Pong { node_id: "a".into(), node_name: "a".into() });
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused_both_ways() {
    let (ours, theirs) = (new_cluster_ca().unwrap(), new_cluster_ca().unwrap());
    let (member, stranger) = (node(&ours, "member"), node(&theirs, "stranger"));
    let err = stranger.call(member.local_addr().unwrap(), &Request::Ping { from_node: "s".into() }).await.unwrap_err();
    assert!(err.to_string().contains("could not reach"), "{err}");
    let err = member.call(stranger.local_addr().unwrap(), &Request::Ping { from_node: "m".into() }).await.unwrap_err();
    assert!(err.to_string().contains("could not reach"), "{err}");
}

#[tokio::test]
async fn a_dead_peer_is_an_error_in_bounded_time() {
    let ca = new_cluster_ca().unwrap();
    let a = node(&ca, "a");
    // Nothing listens here: a UDP socket bound and dropped.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let started = std::time::Instant::now();
    assert!(a.call(dead, &Request::Ping { from_node: "a".into() }).await.is_err());
    assert!(started.elapsed() <= hoody_transport::endpoint::CALL_TIMEOUT + std::time::Duration::from_secs(2));
}

//! A member keeps being served while strangers hammer the endpoint with
//! handshakes: certificates of another CA, and no certificate at all.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{certless_client_tls, loopback, raw_connect, Cluster, Echo, TokenJoin};
use hoody_transport::{Endpoint, EndpointConfig, Frame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_strangers_does_not_slow_a_member() {
    let (ours, theirs) = (Cluster::new(), Cluster::new());
    let handler = Arc::new(Echo::default());
    // With a join handler, certificate-less handshakes complete and must be refused after.
    let server = Endpoint::bind(loopback(), &ours.identity("server"), handler.clone(), Some(Arc::new(TokenJoin)), EndpointConfig::default()).unwrap();
    let addr = server.local_addr().unwrap();
    let member = ours.node("member", Arc::new(Echo::default()));
    member.call(addr, Frame::new(1, Bytes::new())).await.unwrap();

    let stranger_tls = theirs.identity("stranger").client_config().unwrap();
    let certless_tls = certless_client_tls(&ours.ca_pem);
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..360 {
        let tls = if i % 4 == 3 { certless_tls.clone() } else { stranger_tls.clone() };
        flood.spawn(async move {
            // A stranger gets nowhere: the handshake fails, or the connection is closed before any call.
            match raw_connect(tls, addr).await {
                Err(_) => true,
                Ok((_endpoint, conn)) => match conn.open_bi().await {
                    Err(_) => true,
                    Ok((mut send, mut recv)) => {
                        let _ = send.write_all(&[1, 0, 0, 0, 2, 0, 1]).await;
                        let _ = send.finish();
                        recv.read_to_end(1024).await.map(|answer| answer.is_empty()).unwrap_or(true)
                    }
                },
            }
        });
    }

    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until || !flood.is_empty() {
        let started = Instant::now();
        let answer = member.call_with_deadline(addr, Frame::new(1, Bytes::new()), Duration::from_secs(2)).await;
        assert_eq!(answer.expect("the member's call succeeds during the flood").kind, 2);
        latencies.push(started.elapsed());
        while let Some(joined) = flood.try_join_next() {
            assert!(joined.unwrap(), "a stranger got an answer");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if Instant::now() > until + Duration::from_secs(30) {
            panic!("the flood did not end");
        }
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = *latencies.last().unwrap();
    eprintln!(
        "{} member calls during the flood: p50 {:?}, p99 {p99:?}, max {max:?}",
        latencies.len(),
        latencies[latencies.len() / 2]
    );
    assert!(max < Duration::from_secs(2), "max {max:?}");
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    // Only the member's calls reached the handler; a new member connection still works.
    assert_eq!(handler.calls.load(Ordering::SeqCst), latencies.len() + 1);
    let late = ours.node("late", Arc::new(Echo::default()));
    late.call(addr, Frame::new(1, Bytes::new())).await.unwrap();
}

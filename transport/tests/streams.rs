//! Streaming calls: large bodies both ways at once, under flow control, checked
//! byte for byte; refusals and cut-off bodies are errors, never truncated data.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::{pattern, Cluster, Echo};
use hoody_transport::{codes, BodyReceiver, BodySender, Frame, Handler, Peer, RemoteError, TransportError};

const CHUNK: usize = 1 << 20;
const CHUNKS: u64 = 64;

/// Receives `CHUNKS` chunks and checks them, while sending as many back.
struct Mirror;

async fn receive_checked(rx: &mut BodyReceiver) -> Result<u64, String> {
    let mut i = 0;
    while let Some(frame) = rx.recv().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if frame.kind != 7 || frame.body[..] != pattern(i, CHUNK)[..] {
            return Err(format!("chunk {i} differs"));
        }
        i += 1;
    }
    Ok(i)
}

async fn send_all(tx: &mut BodySender, seed: u64) -> Result<(), TransportError> {
    for i in 0..CHUNKS {
        tx.send(Frame::new(7, pattern(i + seed, CHUNK))).await?;
    }
    Ok(())
}

#[async_trait]
impl Handler for Mirror {
    async fn call(&self, _peer: &Peer, _request: Frame) -> Result<Frame, RemoteError> {
        Err(RemoteError::unsupported("streams only"))
    }

    async fn stream(&self, _peer: &Peer, request: Frame, mut rx: BodyReceiver, mut tx: BodySender) -> Result<(), RemoteError> {
        if request.kind == 2 {
            return Err(RemoteError::not_found("no such transfer"));
        }
        let (received, sent) = tokio::join!(receive_checked(&mut rx), send_all(&mut tx, 0));
        sent.map_err(|e| RemoteError::internal(e.to_string()))?;
        let received = received.map_err(RemoteError::bad_request)?;
        if received != CHUNKS {
            return Err(RemoteError::bad_request(format!("{received} chunks")));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_stream_each_way_with_content_checked() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a", Arc::new(Echo::default())), cluster.node("b", Arc::new(Mirror)));
    let (mut tx, mut rx) = a.open_stream(b.local_addr().unwrap(), Frame::new(1, Bytes::new())).await.unwrap();
    let (received, sent) = tokio::join!(receive_checked(&mut rx), async {
        send_all(&mut tx, 0).await?;
        tx.finish().await
    });
    sent.unwrap();
    assert_eq!(received.unwrap(), CHUNKS);
}

#[tokio::test]
async fn a_refused_or_unsupported_stream_is_an_error_and_a_dropped_sender_is_no_clean_end() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("a", Arc::new(Echo::default())), cluster.node("b", Arc::new(Mirror)));
    let (_tx, mut rx) = a.open_stream(b.local_addr().unwrap(), Frame::new(2, Bytes::new())).await.unwrap();
    let err = rx.recv().await.unwrap().unwrap_err();
    assert_eq!(err.remote_code(), Some(codes::NOT_FOUND), "{err}");
    assert!(rx.recv().await.is_none());

    // Echo keeps the default: streaming calls are refused as unsupported.
    let (_tx, mut rx) = b.open_stream(a.local_addr().unwrap(), Frame::new(1, Bytes::new())).await.unwrap();
    assert_eq!(rx.recv().await.unwrap().unwrap_err().remote_code(), Some(codes::UNSUPPORTED));

    // A sender dropped mid-body: the handler sees an error, not a short body, and says so.
    let (mut tx, mut rx) = a.open_stream(b.local_addr().unwrap(), Frame::new(1, Bytes::new())).await.unwrap();
    tx.send(Frame::new(7, pattern(0, CHUNK))).await.unwrap();
    drop(tx);
    let mut answer_error = None;
    while let Some(item) = rx.recv().await {
        if let Err(e) = item {
            answer_error = Some(e);
        }
    }
    let err = answer_error.expect("the handler reports the cut-off body");
    assert_eq!(err.remote_code(), Some(codes::BAD_REQUEST), "{err}");
}

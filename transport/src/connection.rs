//! One QUIC connection to a member, either side: the [`Peer`] handed to handlers
//! and callers, the calls made on it, and the loop that serves the streams the
//! other side opens (the same for connections we accepted and ones we dialed, so
//! either side may call the other).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::endpoint::Shared;
use crate::error::{codes, RemoteError, TransportError};
use crate::frame::{check_outgoing, read_frame, read_item, read_open, write_frame, Frame, OPEN_CALL, OPEN_STREAM};
use crate::stream::{BodyReceiver, BodySender};

/// A member at the other end of a connection, identified by its verified
/// certificate (CN = node id, OU = node name).
#[derive(Clone)]
pub struct Peer {
    pub node_id: String,
    pub node_name: String,
    pub addr: SocketAddr,
    conn: quinn::Connection,
    max_frame: usize,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("node_id", &self.node_id)
            .field("node_name", &self.node_name)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Peer {
    pub(crate) fn new(conn: quinn::Connection, max_frame: usize) -> Result<Self, TransportError> {
        let (node_id, node_name) = verified_names(&conn)?;
        Ok(Peer {
            node_id,
            node_name,
            addr: conn.remote_address(),
            conn,
            max_frame,
        })
    }

    pub(crate) fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Counters of the connection (packets, losses, congestion window, round-trip time).
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.conn.stats()
    }

    /// Whether the connection is still open (it may still be dead without knowing yet).
    pub fn is_connected(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    /// Calls the node on this connection (also from a handler: a server-initiated
    /// call to the node that connected); an error if no answer within `deadline`.
    pub async fn call(&self, frame: Frame, deadline: Duration) -> Result<Frame, TransportError> {
        match tokio::time::timeout(deadline, self.call_now(frame)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout { addr: self.addr, deadline }),
        }
    }

    /// Opens a streaming call on this connection: `frame` is the request, then
    /// bodies go both ways.
    pub async fn open_stream(&self, frame: Frame) -> Result<(BodySender, BodyReceiver), TransportError> {
        check_outgoing(&frame, self.max_frame)?;
        let (mut send, recv) = self.open().await?;
        write_frame(&mut send, &[OPEN_STREAM], &frame).await?;
        Ok((BodySender::new(send, self.max_frame), BodyReceiver::new(recv, self.max_frame)))
    }

    /// Opens a stream; failing here means nothing was sent, so a caller may retry
    /// on a new connection.
    pub(crate) async fn open(&self) -> Result<(quinn::SendStream, quinn::RecvStream), TransportError> {
        self.conn.open_bi().await.map_err(|e| crate::error::connection_lost(&e))
    }

    pub(crate) async fn call_now(&self, frame: Frame) -> Result<Frame, TransportError> {
        check_outgoing(&frame, self.max_frame)?;
        let streams = self.open().await?;
        self.call_on(streams, frame).await
    }

    pub(crate) async fn call_on(&self, (mut send, mut recv): (quinn::SendStream, quinn::RecvStream), frame: Frame) -> Result<Frame, TransportError> {
        let written = write_frame(&mut send, &[OPEN_CALL], &frame)
            .await
            .and_then(|()| send.finish().map_err(|e| TransportError::Protocol(e.to_string())));
        // A peer that refuses stops reading and answers with an error frame: that
        // answer says more than our failed write.
        match (written, read_item(&mut recv, self.max_frame).await) {
            (_, Ok(Some(answer))) => Ok(answer),
            (_, Err(remote @ TransportError::Remote { .. })) => Err(remote),
            (Err(write), _) => Err(write),
            (Ok(()), Err(read)) => Err(read),
            (Ok(()), Ok(None)) => Err(TransportError::Protocol("the stream ended without an answer".into())),
        }
    }
}

/// `(node id, node name)` from the certificate the other side showed.
fn verified_names(conn: &quinn::Connection) -> Result<(String, String), TransportError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .ok_or_else(|| TransportError::Forbidden("the peer showed no certificate".into()))?;
    let leaf = certs.first().ok_or_else(|| TransportError::Forbidden("the peer showed no certificate".into()))?;
    crate::tls::node_names(leaf)
}

/// Serves the streams the other side opens, until the connection ends.
pub(crate) async fn serve_connection(peer: Peer, shared: Arc<Shared>) {
    loop {
        match peer.conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(peer.clone(), shared.clone(), send, recv));
            }
            Err(e) => {
                tracing::debug!(node = %peer.node_id, addr = %peer.addr, reason = %e, "connection ended");
                return;
            }
        }
    }
}

async fn serve_stream(peer: Peer, shared: Arc<Shared>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    // Membership is checked per stream, so a revoked node is refused on the
    // connection it already has.
    if !shared.handler.is_member(&peer.node_id) {
        refuse(
            &mut send,
            &mut recv,
            RemoteError::forbidden(format!("node {} is not a member of this cluster", peer.node_id)),
        )
        .await;
        return;
    }
    let max_frame = shared.config.max_frame;
    // A stream that never sends its request must not hold a task forever.
    let request = tokio::time::timeout(shared.config.call_deadline, async {
        let open = read_open(&mut recv).await?;
        match read_frame(&mut recv, max_frame).await? {
            Some(frame) if !frame.is_error() => Ok((open, frame)),
            Some(_) => Err(TransportError::Protocol("a request cannot be an error frame".into())),
            None => Err(TransportError::Protocol("the stream ended before its request".into())),
        }
    })
    .await;
    let (open, request) = match request {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            tracing::debug!(node = %peer.node_id, error = %e, "malformed request");
            refuse(&mut send, &mut recv, refusal_for(&e)).await;
            return;
        }
        Err(_) => {
            refuse(&mut send, &mut recv, RemoteError::new(codes::TIMEOUT, "no request within the deadline")).await;
            return;
        }
    };
    if open == OPEN_CALL {
        let answer = match shared.handler.call(&peer, request).await {
            Ok(answer) if answer.is_error() => RemoteError::internal("the handler answered with the reserved error kind").to_frame(),
            Ok(answer) if answer.body.len() > max_frame => RemoteError::internal(format!("answer of {} bytes exceeds the frame limit", answer.body.len())).to_frame(),
            Ok(answer) => answer,
            Err(refusal) => refusal.to_frame(),
        };
        if write_frame(&mut send, &[], &answer).await.is_ok() {
            let _ = send.finish();
        }
        return;
    }
    let tx = BodySender::new(send, max_frame);
    let half = tx.shared_half();
    let result = shared.handler.stream(&peer, request, BodyReceiver::new(recv, max_frame), tx).await;
    // The answer ends when the handler returns, with its error if it failed.
    let mut half = half.lock().await;
    if let Err(refusal) = result {
        if !half.is_ended() && half.write(&refusal.to_frame()).await.is_err() {
            return;
        }
    }
    let _ = half.finish();
}

/// What the caller is told about a request that could not be read.
fn refusal_for(e: &TransportError) -> RemoteError {
    match e {
        TransportError::FrameTooLarge { .. } => RemoteError::new(codes::FRAME_TOO_LARGE, e.to_string()),
        _ => RemoteError::bad_request(e.to_string()),
    }
}

/// Answers with an error frame and stops reading the rest of the stream.
async fn refuse(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream, refusal: RemoteError) {
    let _ = recv.stop(refusal.code.into());
    if write_frame(send, &[], &refusal.to_frame()).await.is_ok() {
        let _ = send.finish();
    }
}

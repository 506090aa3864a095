//! The wire protocol between nodes.
//!
//! Goals: one request per bidirectional QUIC stream (no head-of-line blocking
//! between requests), a versioned ALPN so incompatible nodes refuse each other at
//! the handshake, an explicit maximum message size, and stable discriminants so a
//! message's meaning never changes between releases.
//!
//! Non-goals: streaming of large payloads inside one frame (block transfer will
//! use several frames on one stream), compatibility across ALPN versions.
//!
//! Frame: `u32` big-endian length of what follows, `u16` big-endian kind, then a
//! JSON payload. The golden test at the bottom pins the bytes.

use serde::{Deserialize, Serialize};

use crate::TransportError;

/// Versioned application protocol; bump on any incompatible change.
pub const ALPN: &[u8] = b"hoody/1";

/// Largest frame body (kind + payload) accepted from a peer.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Stable discriminants of the messages. Never reuse a retired number.
pub mod kind {
    pub const PING: u16 = 1;
    pub const PONG: u16 = 2;
    pub const ERROR: u16 = 0xFFFF;
}

/// Error codes a node answers with.
pub mod error_code {
    pub const BAD_REQUEST: u16 = 1;
    pub const UNSUPPORTED: u16 = 2;
    pub const INTERNAL: u16 = 3;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and identity of the peer.
    Ping { from_node: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Pong { node_id: String, node_name: String },
    Error { code: u16, message: String },
}

#[derive(Serialize, Deserialize)]
struct PingBody {
    from_node: String,
}

#[derive(Serialize, Deserialize)]
struct PongBody {
    node_id: String,
    node_name: String,
}

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    code: u16,
    message: String,
}

fn frame(kind: u16, payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + payload.len());
    out.extend_from_slice(&((payload.len() + 2) as u32).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("protocol bodies always serialize")
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Ping { from_node } => frame(kind::PING, json(&PingBody { from_node: from_node.clone() })),
        }
    }

    pub fn decode(kind: u16, payload: &[u8]) -> Result<Self, TransportError> {
        let bad = |e: serde_json::Error| TransportError::Protocol(format!("request kind {kind}: {e}"));
        match kind {
            kind::PING => {
                let b: PingBody = serde_json::from_slice(payload).map_err(bad)?;
                Ok(Request::Ping { from_node: b.from_node })
            }
            other => Err(TransportError::Protocol(format!("unknown request kind {other}"))),
        }
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Pong { node_id, node_name } => {
                frame(kind::PONG, json(&PongBody { node_id: node_id.clone(), node_name: node_name.clone() }))
            }
            Response::Error { code, message } => frame(kind::ERROR, json(&ErrorBody { code: *code, message: message.clone() })),
        }
    }

    pub fn decode(kind: u16, payload: &[u8]) -> Result<Self, TransportError> {
        let bad = |e: serde_json::Error| TransportError::Protocol(format!("response kind {kind}: {e}"));
        match kind {
            kind::PONG => {
                let b: PongBody = serde_json::from_slice(payload).map_err(bad)?;
                Ok(Response::Pong { node_id: b.node_id, node_name: b.node_name })
            }
            kind::ERROR => {
                let b: ErrorBody = serde_json::from_slice(payload).map_err(bad)?;
                Ok(Response::Error { code: b.code, message: b.message })
            }
            other => Err(TransportError::Protocol(format!("unknown response kind {other}"))),
        }
    }
}

/// Reads one frame: `(kind, payload)`, refusing frames over [`MAX_MESSAGE_SIZE`].
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<(u16, Vec<u8>), TransportError> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if !(2..=MAX_MESSAGE_SIZE).contains(&len) {
        return Err(TransportError::Protocol(format!("frame of {len} bytes (limit {MAX_MESSAGE_SIZE})")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    let kind = u16::from_be_bytes([body[0], body[1]]);
    body.drain(..2);
    Ok((kind, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_of_ping_and_pong() {
        let ping = Request::Ping { from_node: "n1".into() }.encode();
        assert_eq!(ping, b"\x00\x00\x00\x14\x00\x01{\"from_node\":\"n1\"}".to_vec());
        let err = Response::Error { code: error_code::INTERNAL, message: "x".into() }.encode();
        assert_eq!(err, b"\x00\x00\x00\x1a\xff\xff{\"code\":3,\"message\":\"x\"}".to_vec());
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let pong = Response::Pong { node_id: "id".into(), node_name: "name".into() };
        let bytes = pong.encode();
        let (k, p) = read_frame(&mut &bytes[..]).await.unwrap();
        assert_eq!(Response::decode(k, &p).unwrap(), pong);

        let mut huge = ((MAX_MESSAGE_SIZE + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0, 1]);
        assert!(matches!(read_frame(&mut &huge[..]).await, Err(TransportError::Protocol(_))));
        assert!(Request::decode(999, b"{}").is_err());
    }
}

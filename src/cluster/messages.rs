//! The cluster's control messages on the QUIC transport: liveness, API calls
//! forwarded to the node that must answer them, and joining.
//!
//! Each message is a frame `kind` (below; never reuse a retired number) and a
//! postcard body: compact, with no field names on the wire, so a field is
//! added only at the end of a message and only with a new ALPN or kind. The
//! golden tests pin the bytes of each.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use hoody_api::model::{ForwardedRequest, ForwardedResponse};

/// Frame kinds of the control messages. Requests and their answers share a kind.
pub mod kind {
    pub const PING: u16 = 1;
    pub const FORWARD: u16 = 16;
    pub const JOIN: u16 = 32;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub from_node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub node_id: String,
    pub node_name: String,
    pub version: String,
}

/// A new server asks to be admitted: the token's id and secret authorize it
/// once; the CA signs `csr_pem`'s key for `node_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token_id: String,
    pub secret: String,
    pub node_id: String,
    pub node_name: String,
    pub csr_pem: String,
}

/// The admitted server's certificate and where the cluster's catalog lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_cert_pem: String,
    pub etcd: Vec<String>,
    pub prefix: String,
}

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    postcard::to_stdvec(message).expect("control messages always serialize")
}

pub fn decode<T: DeserializeOwned>(kind: u16, body: &[u8]) -> Result<T, String> {
    postcard::from_bytes(body).map_err(|e| format!("malformed message of kind {kind}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes_of_every_control_message() {
        assert_eq!(encode(&Ping { from_node: "n1".into() }), b"\x02n1");
        assert_eq!(encode(&Pong { node_id: "a".into(), node_name: "b".into(), version: "0.1".into() }), b"\x01a\x01b\x030.1");
        let fwd = ForwardedRequest { method: "POST".into(), path_and_query: "/x".into(), authorization: "Bearer t".into(), content_type: None, body: b"{}".to_vec() };
        assert_eq!(encode(&fwd), b"\x04POST\x02/x\x08Bearer t\x00\x02{}");
        let answer = ForwardedResponse { status: 201, content_type: Some("a/b".into()), body: vec![1] };
        // 201 as a varint: 0xC9 0x01.
        assert_eq!(encode(&answer), b"\xc9\x01\x01\x03a/b\x01\x01");
        let join = JoinRequest { token_id: "i".into(), secret: "s".into(), node_id: "n".into(), node_name: "m".into(), csr_pem: "c".into() };
        assert_eq!(encode(&join), b"\x01i\x01s\x01n\x01m\x01c");
        let joined = JoinResponse { node_cert_pem: "p".into(), etcd: vec!["u".into()], prefix: "h/".into() };
        assert_eq!(encode(&joined), b"\x01p\x01\x01u\x02h/");
    }

    proptest! {
        /// Whatever a peer sends, decoding answers an error or a message, never panics.
        #[test]
        fn decoders_survive_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Ping>(kind::PING, &bytes);
            let _ = decode::<Pong>(kind::PING, &bytes);
            let _ = decode::<ForwardedRequest>(kind::FORWARD, &bytes);
            let _ = decode::<ForwardedResponse>(kind::FORWARD, &bytes);
            let _ = decode::<JoinRequest>(kind::JOIN, &bytes);
            let _ = decode::<JoinResponse>(kind::JOIN, &bytes);
        }

        #[test]
        fn forwarded_requests_round_trip(method in "[A-Z]{3,6}", path in "/[a-z0-9/?=&]{0,40}", body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let req = ForwardedRequest { method, path_and_query: path, authorization: "Bearer x".into(), content_type: Some("application/json".into()), body };
            prop_assert_eq!(decode::<ForwardedRequest>(kind::FORWARD, &encode(&req)).unwrap(), req);
        }
    }
}

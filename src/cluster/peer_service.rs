//! What a node answers its peers on the QUIC transport: liveness and API calls
//! forwarded to it as the owner of what they change. Every stream's peer is a
//! verified member (its certificate); removed nodes are refused by
//! [`Membership::is_member`] before any handler runs.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use hoody_transport::{codes as error_code, Frame, Handler, Peer, RemoteError};

use crate::cluster::membership::Membership;
use crate::cluster::messages::{self, kind, ForwardedRequest, Ping, Pong};
use crate::layout::NodeIdentity;

pub struct PeerService {
    node: NodeIdentity,
    membership: Arc<Membership>,
    /// This node's own HTTP application, which answers forwarded calls; set
    /// once the engine it serves exists.
    router: OnceLock<hoody_api::HttpRouter>,
    /// Remote shares: this node as a source (calls) and as a target (pushes).
    shares: OnceLock<Arc<crate::shares::remote::RemoteShares>>,
}

impl PeerService {
    pub fn new(node: NodeIdentity, membership: Arc<Membership>) -> Arc<Self> {
        Arc::new(PeerService { node, membership, router: OnceLock::new(), shares: OnceLock::new() })
    }

    pub fn serve_api(&self, router: hoody_api::HttpRouter) {
        let _ = self.router.set(router);
    }

    pub fn serve_shares(&self, shares: Arc<crate::shares::remote::RemoteShares>) {
        let _ = self.shares.set(shares);
    }

    fn shares(&self) -> Result<&Arc<crate::shares::remote::RemoteShares>, RemoteError> {
        self.shares.get().ok_or_else(|| RemoteError { code: error_code::UNAVAILABLE, message: "this node is still starting".into() })
    }
}

fn bad(e: String) -> RemoteError {
    RemoteError { code: error_code::BAD_REQUEST, message: e }
}

#[async_trait]
impl Handler for PeerService {
    async fn call(&self, peer: &Peer, request: Frame) -> Result<Frame, RemoteError> {
        match request.kind {
            kind::PING => {
                let ping: Ping = messages::decode(request.kind, &request.body).map_err(bad)?;
                tracing::debug!(from = %ping.from_node, peer = %peer.node_id, "ping");
                let pong = Pong { node_id: self.node.id.clone(), node_name: self.node.name.clone(), version: env!("CARGO_PKG_VERSION").into() };
                Ok(Frame { kind: kind::PING, body: messages::encode(&pong).into() })
            }
            kind::FORWARD => {
                let req: ForwardedRequest = messages::decode(request.kind, &request.body).map_err(bad)?;
                let Some(router) = self.router.get() else {
                    return Err(RemoteError { code: error_code::UNAVAILABLE, message: "this node is still starting".into() });
                };
                let answer = hoody_api::answer_forwarded(router.clone(), &peer.node_id, req).await;
                Ok(Frame { kind: kind::FORWARD, body: messages::encode(&answer).into() })
            }
            crate::shares::remote::wire::kind::SHARE_OP => self.shares()?.serve_call(peer, &request.body).await,
            crate::shares::remote::wire::kind::SHARE_INVALIDATE => self.shares()?.serve_push(peer, &request.body),
            other => Err(RemoteError { code: error_code::UNSUPPORTED, message: format!("unknown message kind {other}") }),
        }
    }

    fn is_member(&self, node_id: &str) -> bool {
        self.membership.is_member(node_id)
    }
}

//! Admitting a server: one-time join tokens, the signing of a joining node's
//! key by the cluster CA over the network, and its offline twin
//! (`hoodyd cluster add-node`).
//!
//! A token names the signer's QUIC addresses, the SHA-256 of the cluster CA
//! certificate, and a one-time secret. The joining node connects without a
//! certificate (the transport's join handler), accepts the signer only if its
//! chain holds the CA with that fingerprint, and sends its CSR with the
//! secret; the signer takes the token out of the catalog in one compare-and-
//! swap (two joins with one token: one wins) and signs. The node's private key
//! never leaves it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use hoody_transport::{Frame, JoinHandler, RemoteError};

use crate::catalog::cluster::JoinTokenRecord;
use crate::catalog::Catalog;
use crate::cluster::config::{self, ClusterConfig};
use crate::cluster::messages::{self, kind, JoinRequest, JoinResponse};
use crate::layout::{DataLayout, NodeIdentity};

const TOKEN_PREFIX: &str = "hoodyjoin1";
/// A join token's lifetime when none is asked for.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a joining node waits for the signer.
const JOIN_DEADLINE: Duration = Duration::from_secs(10);

/// What a join token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: String,
    pub secret: String,
    pub ca_fingerprint: String,
    pub signers: Vec<SocketAddr>,
}

impl Ticket {
    /// `hoodyjoin1:<id>:<secret>:<ca sha256>:<addr>[,<addr>…]`: every part but
    /// the addresses is hex, so the addresses (IPv6 too) are simply the rest.
    pub fn encode(&self) -> String {
        let addrs: Vec<String> = self.signers.iter().map(|a| a.to_string()).collect();
        format!("{TOKEN_PREFIX}:{}:{}:{}:{}", self.id, self.secret, self.ca_fingerprint, addrs.join(","))
    }

    pub fn parse(text: &str) -> anyhow::Result<Ticket> {
        let bad = || anyhow::anyhow!("not a join token (expected `{TOKEN_PREFIX}:…` as `hoody cluster join-token` prints it)");
        let mut parts = text.trim().splitn(5, ':');
        if parts.next() != Some(TOKEN_PREFIX) {
            return Err(bad());
        }
        let (id, secret, fp, addrs) = (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(id) || !hex(secret) || fp.len() != 64 || !hex(fp) {
            return Err(bad());
        }
        let signers = addrs.split(',').map(|a| a.parse::<SocketAddr>().map_err(|e| anyhow::anyhow!("join token address `{a}`: {e}"))).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Ticket { id: id.into(), secret: secret.into(), ca_fingerprint: fp.to_ascii_lowercase(), signers })
    }
}

/// Makes a token that `signer` (a node holding the CA key, reachable at
/// `signer_addrs`) will honour once, until `lifetime` from now.
pub async fn create_token(catalog: &Catalog, signer: &NodeIdentity, signer_addrs: Vec<SocketAddr>, ca_cert_pem: &str, lifetime: Duration) -> anyhow::Result<(Ticket, JoinTokenRecord)> {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let ticket = Ticket { id: crate::ids::new_id(), secret: hex::encode(secret), ca_fingerprint: hoody_transport::ca_fingerprint(ca_cert_pem)?, signers: signer_addrs };
    let record = JoinTokenRecord {
        id: ticket.id.clone(),
        secret_hash: crate::tokens::hash_secret(&ticket.secret),
        expires_unix: crate::ids::now_unix() + lifetime.as_secs() as i64,
        signer_node: signer.id.clone(),
        created_at: crate::ids::now(),
    };
    catalog.put_join_token(&record).await?;
    Ok((ticket, record))
}

/// The signer's side: answers joins on a node that holds the CA key.
pub struct JoinService {
    pub catalog: Catalog,
    pub node: NodeIdentity,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// Joins are refused until the node is in a cluster.
    pub cluster: crate::cluster::SharedClusterConfig,
}

fn refuse(code: u16, message: impl Into<String>) -> RemoteError {
    RemoteError { code, message: message.into() }
}

impl JoinService {
    async fn admit(&self, req: JoinRequest) -> Result<JoinResponse, RemoteError> {
        use hoody_transport::codes::{BAD_REQUEST, FORBIDDEN, INTERNAL, UNAVAILABLE};
        let Some(cluster) = self.cluster.read().clone() else {
            return Err(refuse(UNAVAILABLE, "this server is not in a cluster yet (`hoodyd cluster init`)"));
        };
        if req.node_id.len() != 24 || !req.node_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refuse(BAD_REQUEST, "node_id must be 24 hex digits"));
        }
        crate::containers::validate_name("node_name", &req.node_name).map_err(|e| refuse(BAD_REQUEST, e.to_string()))?;
        let now = crate::ids::now_unix();
        let signer = self.node.id.clone();
        let secret = req.secret.clone();
        let redeemed = self
            .catalog
            .redeem_join_token(&req.token_id, move |t| {
                if !crate::tokens::secret_matches(&secret, &t.secret_hash) {
                    Err("the join token is not valid".to_string())
                } else if t.expires_unix <= now {
                    Err("the join token has expired".to_string())
                } else if t.signer_node != signer {
                    Err("the join token was made for another signer".to_string())
                } else {
                    Ok(())
                }
            })
            .await
            .map_err(|e| refuse(INTERNAL, format!("catalog: {e}")))?;
        match redeemed {
            None => return Err(refuse(FORBIDDEN, "the join token is not valid (unknown, or already used)")),
            Some(Err(reason)) => return Err(refuse(FORBIDDEN, reason)),
            Some(Ok(_)) => {}
        }
        if self.catalog.is_revoked(&req.node_id).await.map_err(|e| refuse(INTERNAL, format!("catalog: {e}")))? {
            return Err(refuse(FORBIDDEN, format!("node {} was removed from this cluster", req.node_id)));
        }
        let cert = hoody_transport::tls::sign_node_csr(&self.ca_key_pem, &req.csr_pem, &req.node_id, &req.node_name).map_err(|e| refuse(BAD_REQUEST, format!("csr: {e}")))?;
        tracing::info!(node = %req.node_id, name = %req.node_name, "admitted a new server");
        Ok(JoinResponse { node_cert_pem: cert, etcd: cluster.etcd, prefix: cluster.prefix })
    }
}

#[async_trait]
impl JoinHandler for JoinService {
    async fn join(&self, addr: SocketAddr, request: Frame) -> Result<Frame, RemoteError> {
        if request.kind != kind::JOIN {
            return Err(refuse(hoody_transport::codes::UNSUPPORTED, format!("kind {} is not a join", request.kind)));
        }
        let req: JoinRequest = messages::decode(request.kind, &request.body).map_err(|e| refuse(hoody_transport::codes::BAD_REQUEST, e))?;
        tracing::info!(%addr, node = %req.node_id, "join request");
        let answer = self.admit(req).await?;
        Ok(Frame { kind: kind::JOIN, body: messages::encode(&answer).into() })
    }
}

/// The joining side (`hoodyd serve --join`): gets this node's key signed and
/// writes the cluster's CA, the node certificate and `cluster.json`. A node
/// already in a cluster ignores the token, so the same command restarts it.
pub async fn join(layout: &DataLayout, node_name: &str, token: &str) -> anyhow::Result<()> {
    if config::load(layout.root())?.is_some() {
        tracing::info!("already a member of a cluster; --join ignored");
        return Ok(());
    }
    let ticket = Ticket::parse(token)?;
    refuse_if_holding_containers(layout).await?;
    let node = crate::daemon::bootstrap::node_identity(layout, node_name)?;
    let (key_pem, csr_pem) = hoody_transport::tls::new_node_key_and_csr(&node.id, &node.name)?;
    let request = JoinRequest { token_id: ticket.id.clone(), secret: ticket.secret.clone(), node_id: node.id.clone(), node_name: node.name.clone(), csr_pem };
    let frame = Frame { kind: kind::JOIN, body: messages::encode(&request).into() };
    let mut last = None;
    for addr in &ticket.signers {
        match hoody_transport::join_call(*addr, &ticket.ca_fingerprint, frame.clone(), JOIN_DEADLINE).await {
            Ok((answer, ca_pem)) => {
                let answer: JoinResponse = messages::decode(answer.kind, &answer.body).map_err(|e| anyhow::anyhow!("{addr}: {e}"))?;
                let identity = hoody_transport::ClusterIdentity { ca_cert_pem: ca_pem, node_cert_pem: answer.node_cert_pem, node_key_pem: key_pem };
                install(layout, &identity, &ClusterConfig { etcd: answer.etcd, prefix: answer.prefix })?;
                tracing::info!(node = %node.id, signer = %addr, "joined the cluster");
                return Ok(());
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    anyhow::bail!("joining the cluster failed: {}", last.unwrap_or_else(|| "the token names no signer".into()))
}

/// A node's embedded catalog is left behind when it joins: refuse if it holds
/// containers (they would be lost to the cluster).
async fn refuse_if_holding_containers(layout: &DataLayout) -> anyhow::Result<()> {
    if !layout.catalog().exists() {
        return Ok(());
    }
    let catalog = crate::daemon::bootstrap::open_catalog(layout).await?;
    let n = catalog.containers().await?.len();
    if n > 0 {
        anyhow::bail!("{} holds {n} containers of its own; a joining server must start empty (or make it the first node: `hoodyd cluster init`)", layout.root().display());
    }
    Ok(())
}

/// Replaces the node's TLS files and writes `cluster.json`: the node's own
/// single-node CA (if it ever started alone) is no longer its cluster's.
fn install(layout: &DataLayout, identity: &hoody_transport::ClusterIdentity, cluster: &ClusterConfig) -> anyhow::Result<()> {
    let tls = layout.tls();
    let _ = std::fs::remove_file(tls.join("ca.key"));
    identity.save(&tls).with_context(|| format!("writing {}", tls.display()))?;
    config::save(layout.root(), cluster)
}

/// `hoodyd cluster add-node NAME --out DIR`: on a node holding the CA key,
/// makes a new node's data dir (identity, certificate, `cluster.json`) offline.
pub fn add_node(layout: &DataLayout, name: &str, out: &Path) -> anyhow::Result<NodeIdentity> {
    crate::containers::validate_name("name", name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cluster = config::load(layout.root())?.ok_or_else(|| anyhow::anyhow!("{} is not in a cluster: run `hoodyd cluster init --etcd URL` first", layout.root().display()))?;
    let tls = layout.tls();
    let ca_key = std::fs::read_to_string(tls.join("ca.key")).with_context(|| format!("this node holds no CA key ({}): add nodes from the cluster's first node", tls.join("ca.key").display()))?;
    let ca_cert = std::fs::read_to_string(tls.join("ca.pem"))?;
    let out_layout = DataLayout::new(out);
    if config::load(out)?.is_some() || out_layout.node_file().exists() {
        anyhow::bail!("{} already holds a node", out.display());
    }
    out_layout.create_dirs()?;
    let node = NodeIdentity { id: crate::ids::new_id(), name: name.to_string() };
    crate::durable::write_atomic(&out_layout.node_file(), &serde_json::to_vec_pretty(&node)?, 0o644)?;
    let identity = hoody_transport::tls::issue_node_identity(&ca_cert, &ca_key, &node.id, &node.name)?;
    install(&out_layout, &identity, &cluster)?;
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_round_trips_with_ipv4_and_ipv6_signers() {
        let t = Ticket { id: "0a1b".into(), secret: "ff00".into(), ca_fingerprint: "a".repeat(64), signers: vec!["10.0.0.1:7701".parse().unwrap(), "[::1]:7701".parse().unwrap()] };
        assert_eq!(Ticket::parse(&t.encode()).unwrap(), t);
    }

    #[test]
    fn malformed_tickets_are_refused_with_a_reason() {
        for bad in ["", "hoodyjoin1", "hoodyjoin2:a:b:c:1.2.3.4:1", "hoodyjoin1:zz:ff:aa:1.2.3.4:5", &format!("hoodyjoin1:ab:cd:{}:nowhere", "a".repeat(64))] {
            assert!(Ticket::parse(bad).is_err(), "{bad}");
        }
    }
}

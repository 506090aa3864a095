//! The cluster's face of the API: servers with their state, removing one,
//! join tokens, and which node answers a call (owner of a container, or the
//! server a new container goes to) with the forwarding to it.

use hoody_api::model::{ClusterInitialized, CreateJoinToken, InitCluster, ForwardedRequest, ForwardedResponse, JoinToken, Principal, RequestTarget, Server, ServerAddresses, ServerRemoved, ServerState};

use super::{Engine, EngineError};

/// Containers whose owner is remembered at most (then forgotten all at once).
const OWNER_CACHE_LIMIT: usize = 100_000;
use crate::catalog::ServerRecord;

impl Engine {
    fn require_admin(who: &Principal, what: &str) -> Result<(), EngineError> {
        if who.is_admin {
            Ok(())
        } else {
            Err(EngineError::Forbidden(format!("{what} is for the admin account only")))
        }
    }

    /// Every member, `online` while it holds its lease.
    pub(super) async fn servers_with_state(&self) -> Result<Vec<Server>, EngineError> {
        let alive = self.catalog.liveness().await?;
        let mut servers: Vec<Server> = self
            .catalog
            .servers()
            .await?
            .into_iter()
            .map(|record| {
                let report = alive.get(&record.id);
                let (capacity_bytes, free_bytes) = if record.id == self.node.id {
                    super::disk_space(self.layout.root()).unwrap_or((0, 0))
                } else {
                    report.map(|r| (r.capacity_bytes, r.free_bytes)).unwrap_or((0, 0))
                };
                // This node answers, so it is online whatever its lease says this instant.
                let online = record.id == self.node.id || report.is_some();
                Server {
                    id: record.id,
                    name: record.name,
                    addresses: ServerAddresses { http: record.http, quic: record.quic },
                    version: record.version,
                    state: if online { ServerState::Online } else { ServerState::Unreachable },
                    capacity_bytes,
                    free_bytes,
                    started_at: record.started_at,
                }
            })
            .collect();
        servers.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(servers)
    }

    pub(super) async fn remove_server_now(&self, who: &Principal, id: &str) -> Result<ServerRemoved, EngineError> {
        Self::require_admin(who, "removing a server")?;
        let record = self.catalog.server(id).await?.ok_or_else(|| EngineError::not_found(format!("server `{id}` not found")))?;
        if record.id == self.node.id {
            return Err(EngineError::Conflict(format!("server `{}` is the one answering this call; remove it from another member", record.name)));
        }
        let owned = self.catalog.containers_on(&record.id).await?.len();
        if owned > 0 {
            return Err(EngineError::Conflict(format!("server `{}` still owns {owned} containers; delete or move them first", record.name)));
        }
        self.catalog.revoke_server(&record, &crate::ids::now()).await?;
        tracing::info!(node = %record.id, name = %record.name, "server removed; its certificate is refused from now on");
        Ok(ServerRemoved { id: record.id, name: record.name })
    }

    pub(super) async fn new_join_token(&self, who: &Principal, req: CreateJoinToken) -> Result<JoinToken, EngineError> {
        Self::require_admin(who, "admitting a server")?;
        let lifetime = match req.expires_in.as_deref() {
            Some(text) => crate::tokens::parse_lifetime(text).map_err(|e| EngineError::invalid("expires_in", e))?,
            None => crate::cluster::join::DEFAULT_LIFETIME,
        };
        let link = self.cluster.get().ok_or_else(|| EngineError::Conflict("this node is still starting".into()))?;
        if link.config.read().is_none() {
            return Err(EngineError::Conflict("this server is on its own: make it a cluster first (`hoodyd cluster init --etcd URL`)".into()));
        }
        let tls = self.layout.tls();
        if !tls.join("ca.key").exists() {
            return Err(EngineError::Conflict("this server holds no CA key and cannot admit servers; ask the cluster's first server".into()));
        }
        let ca = std::fs::read_to_string(tls.join("ca.pem")).map_err(|e| EngineError::failed("reading the cluster CA failed", e))?;
        let (ticket, record) = crate::cluster::join::create_token(&self.catalog, &self.node, vec![link.quic_addr], &ca, lifetime).await.map_err(EngineError::internal)?;
        let expires = time::OffsetDateTime::from_unix_timestamp(record.expires_unix).map(crate::ids::format_time).unwrap_or_default();
        Ok(JoinToken { token: ticket.encode(), id: ticket.id, expires_at: expires, ca_fingerprint: ticket.ca_fingerprint })
    }

    /// Moves the catalog into etcd while the daemon runs: calls wait for the
    /// copy, then go to etcd; `cluster.json` makes every later start do so.
    pub(super) async fn move_catalog_to_etcd(&self, who: &Principal, req: InitCluster) -> Result<ClusterInitialized, EngineError> {
        Self::require_admin(who, "making a cluster")?;
        let etcd = crate::cluster::config::parse_etcd_urls(&req.etcd.join(",")).map_err(|e| EngineError::invalid("etcd", e.to_string()))?;
        let prefix = req.prefix.unwrap_or_else(|| crate::cluster::config::DEFAULT_PREFIX.to_string());
        if prefix.is_empty() || !prefix.ends_with('/') {
            return Err(EngineError::invalid("prefix", "`prefix` must end with `/` (e.g. hoody/)"));
        }
        let link = self.cluster.get().ok_or_else(|| EngineError::Unavailable("this node is still starting".into()))?.clone();
        if link.config.read().is_some() {
            return Err(EngineError::Conflict("this server is already a node of a cluster".into()));
        }
        let cluster = crate::cluster::config::ClusterConfig { etcd, prefix };
        let remote = crate::daemon::bootstrap::connect_etcd(&cluster).await.map_err(|e| EngineError::Unavailable(format!("{e:#}")))?;
        let data_dir = self.layout.root().to_path_buf();
        let saved = cluster.clone();
        let records = link
            .catalog_store
            .switch_to(remote, |local, remote| async move {
                let records = crate::catalog::copy_all(local.as_ref(), remote.as_ref()).await?;
                crate::cluster::config::save(&data_dir, &saved)?;
                Ok(records)
            })
            .await
            .map_err(|e| match e.downcast::<crate::catalog::CatalogError>() {
                Ok(c) => EngineError::from(c),
                Err(e) => EngineError::failed("moving the catalog into etcd failed", format!("{e:#}")),
            })?;
        *link.config.write() = Some(cluster.clone());
        tracing::info!(records, etcd = %cluster.etcd.join(","), "this server is now the first node of a cluster");
        Ok(ClusterInitialized { etcd: cluster.etcd, prefix: cluster.prefix, records: records as u64 })
    }

    /// The node that must answer a call about `target`; `None`: this one.
    pub(super) async fn owner(&self, target: &RequestTarget) -> Result<Option<String>, EngineError> {
        let owner = match target {
            RequestTarget::Container(id) => {
                // A container never changes servers: its owner, once read, is remembered.
                let known = self.owners.lock().expect("owner cache").get(id).cloned();
                match known {
                    Some(owner) => owner,
                    None => match self.catalog.container(id).await? {
                        Some(c) => {
                            let mut owners = self.owners.lock().expect("owner cache");
                            if owners.len() >= OWNER_CACHE_LIMIT {
                                owners.clear();
                            }
                            owners.insert(id.clone(), c.server_id.clone());
                            c.server_id
                        }
                        // Unknown here: answered here (404).
                        None => return Ok(None),
                    },
                }
            }
            RequestTarget::NewContainer { server_id: Some(server) } => {
                if self.catalog.server(server).await?.is_none() {
                    return Err(EngineError::not_found_field("server_id", format!("server `{server}` not found")));
                }
                server.clone()
            }
            RequestTarget::NewContainer { server_id: None } => self.roomiest_server().await?,
        };
        Ok((owner != self.node.id).then_some(owner))
    }

    /// The online server with the most free space (this one on its own).
    async fn roomiest_server(&self) -> Result<String, EngineError> {
        let best = self.servers_with_state().await?.into_iter().filter(|s| s.state == ServerState::Online).max_by_key(|s| (s.free_bytes, s.id == self.node.id));
        Ok(best.map(|s| s.id).unwrap_or_else(|| self.node.id.clone()))
    }

    pub(super) async fn forward_to(&self, node: &str, request: ForwardedRequest) -> Result<ForwardedResponse, EngineError> {
        let link = self.cluster.get().ok_or_else(|| EngineError::Unavailable("this node is still starting".into()))?.clone();
        // The address last read for the node, else the catalog's; a node that
        // restarted may listen elsewhere, so a failure reads it again once.
        let remembered = self.server_addrs.lock().expect("server addresses").get(node).copied();
        if let Some(addr) = remembered {
            match link.forward(addr, &request).await {
                Ok(answer) => return Ok(answer),
                // Nothing reached anyone there: read the address again and retry.
                Err(hoody_transport::TransportError::Unreachable { .. }) => {
                    self.server_addrs.lock().expect("server addresses").remove(node);
                }
                // The request may have been delivered: never sent twice.
                Err(e) => {
                    self.server_addrs.lock().expect("server addresses").remove(node);
                    return Err(EngineError::Unavailable(format!("server `{node}` cannot be reached: {e}")));
                }
            }
        }
        let record: ServerRecord = self.catalog.server(node).await?.ok_or_else(|| EngineError::Unavailable(format!("server `{node}` is not a member of this cluster")))?;
        let addr: std::net::SocketAddr = record.quic.parse().map_err(|e| EngineError::internal(format!("server {} has QUIC address {}: {e}", record.id, record.quic)))?;
        let started = std::time::Instant::now();
        let answer = link.forward(addr, &request).await.map_err(|e| EngineError::Unavailable(format!("server `{}` ({}) cannot be reached: {e}", record.name, record.id)))?;
        self.server_addrs.lock().expect("server addresses").insert(node.to_string(), addr);
        tracing::debug!(to = %record.name, path = %request.path_and_query, status = answer.status, elapsed = ?started.elapsed(), "forwarded");
        Ok(answer)
    }
}

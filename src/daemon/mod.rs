//! The wiring of a node, apart from the domain code it wires: `config` (the
//! settings' layers), `bootstrap` (data dir, identity, catalog, admin token),
//! and `hoodyd serve` itself: bootstrap, recover, listen (HTTP and QUIC),
//! publish the bound addresses, serve until shutdown, then leave nothing behind.

pub mod bootstrap;
pub mod config;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hoody_transport::{Endpoint, EndpointConfig};

use crate::cluster::join::JoinService;
use crate::cluster::membership::Membership;
use crate::cluster::peer_service::PeerService;
use crate::cluster::ClusterLink;

use crate::daemon::config::Config;
use crate::engine::Engine;
use crate::durable::write_atomic;
use crate::layout::{DataLayout, Endpoints};

/// How long in-flight HTTP requests get to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(3);

/// Holds an exclusive lock on the data dir for the daemon's lifetime, so two
/// daemons never serve one data dir.
struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// `None` when a daemon holds the lock.
    fn try_acquire(layout: &DataLayout) -> anyhow::Result<Option<Self>> {
        match Self::acquire(layout) {
            Ok(l) => Ok(Some(l)),
            Err(_) => Ok(None),
        }
    }

    fn acquire(layout: &DataLayout) -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(crate::layout::PRIVATE_FILE).open(layout.lock_file())?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            anyhow::bail!("another hoodyd is already serving {}", layout.root().display());
        }
        Ok(DataDirLock { _file: file })
    }
}

pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let layout = DataLayout::new(&config.data_dir);
    layout.create_dirs().with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let _lock = DataDirLock::acquire(&layout)?;
    if let Some(token) = &config.join {
        crate::cluster::join::join(&layout, &config.node_name, token).await?;
    }
    let boot = crate::daemon::bootstrap::init(&layout, &config.node_name).await?;
    // After init: the catalog's files exist by now.
    let rootfs_dirs: Vec<std::path::PathBuf> = boot.catalog.containers_on(&boot.node.id).await?.into_iter().map(|c| c.rootfs_path.into()).collect();
    let fixed = layout.make_private(&rootfs_dirs).with_context(|| format!("making the data dir {} private", config.data_dir.display()))?;
    if fixed > 0 {
        tracing::warn!(files = fixed, "made files of the data dir private (0600, directories 0700)");
    }
    let engine = Engine::new(boot.catalog.clone(), layout.clone(), boot.node.clone(), config.host_paths.clone())?;
    engine.clean_stale_share_mounts().await.context("removing stale share mounts")?;
    engine.recover().await.context("recovering interrupted work")?;
    let housekeeping = engine.spawn_housekeeping();
    let share_reconciler = engine.spawn_share_reconciler();

    let http = tokio::net::TcpListener::bind(config.http).await.with_context(|| format!("binding HTTP on {}", config.http))?;
    let http_addr = http.local_addr()?;
    let membership = Membership::new(boot.catalog.clone(), boot.node.id.clone(), config.data_dir.clone());
    let peers = PeerService::new(boot.node.clone(), membership.clone());
    let cluster_config: crate::cluster::SharedClusterConfig = Arc::new(parking_lot::RwLock::new(boot.cluster.clone()));
    let joins = join_service(&layout, &boot, &cluster_config);
    let quic = Endpoint::bind(config.quic, &boot.tls, peers.clone(), joins, EndpointConfig::default()).with_context(|| format!("binding QUIC on {}", config.quic))?;
    let quic_addr = quic.local_addr()?;
    engine.set_cluster(Arc::new(ClusterLink { endpoint: quic.clone(), membership: membership.clone(), config: cluster_config, catalog_store: boot.catalog_store.clone(), quic_addr }));
    peers.serve_api(hoody_api::router(engine.clone()));
    let remote_shares = crate::shares::remote::RemoteShares::new(boot.catalog.clone(), boot.node.id.clone(), quic.clone());
    engine.set_remote_shares(remote_shares.clone());
    peers.serve_shares(remote_shares.clone());
    let heartbeat = membership.spawn_heartbeat();
    let revocations = membership.spawn_revocation_watch();

    // The QUIC address other nodes are told to reach this one at: the bound one, unless
    // HOODY_QUIC_ADVERTISE names another (a NAT, a proxy, or a relay in front of it).
    let advertised_quic = match std::env::var("HOODY_QUIC_ADVERTISE") {
        Ok(a) if !a.trim().is_empty() => {
            let a: std::net::SocketAddr = a.trim().parse().with_context(|| format!("HOODY_QUIC_ADVERTISE={a:?} is not an IP:port"))?;
            tracing::info!(bound = %quic_addr, advertised = %a, "advertising another QUIC address than the bound one (HOODY_QUIC_ADVERTISE)");
            a.to_string()
        }
        _ => quic_addr.to_string(),
    };
    engine.register(&http_addr.to_string(), &advertised_quic).await?;
    let endpoints = Endpoints { http: http_addr.to_string(), quic: quic_addr.to_string() };
    write_atomic(&layout.endpoints(), &serde_json::to_vec(&endpoints)?, crate::layout::PRIVATE_FILE)?;
    tracing::info!(http = %http_addr, quic = %quic_addr, data_dir = %config.data_dir.display(), node = %boot.node.name, "hoodyd listening");
    println!("{}", serde_json::to_string(&endpoints)?);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serving = engine.clone();
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        hoody_api::serve(http, serving, async move {
            let _ = server_stop.wait_for(|s| *s).await;
        })
        .await
    });

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN, server).await {
        Ok(result) => result??,
        Err(_) => tracing::warn!("HTTP connections still open after {DRAIN:?}; closing them"),
    }
    housekeeping.abort();
    share_reconciler.abort();
    heartbeat.abort();
    revocations.abort();
    engine.unmount_all_shares().await;
    remote_shares.server.close_all();
    quic.shutdown().await;
    let _ = std::fs::remove_file(layout.endpoints());
    tracing::info!("stopped");
    Ok(())
}

/// A node holding the CA key admits new servers (once it is in a cluster).
fn join_service(layout: &DataLayout, boot: &crate::daemon::bootstrap::Bootstrapped, cluster: &crate::cluster::SharedClusterConfig) -> Option<Arc<dyn hoody_transport::JoinHandler>> {
    let ca_key_pem = std::fs::read_to_string(layout.tls().join("ca.key")).ok()?;
    Some(Arc::new(JoinService { catalog: boot.catalog.clone(), node: boot.node.clone(), ca_cert_pem: boot.tls.ca_cert_pem.clone(), ca_key_pem, cluster: cluster.clone() }))
}

/// `hoodyd cluster init`: makes this node the first of a cluster whose catalog
/// is in etcd. Every record of the embedded catalog is copied into etcd, then
/// `cluster.json` makes every later start serve from there. The embedded
/// catalog stays on disk, untouched, as it was at the switch.
pub async fn cluster_init(data_dir: &std::path::Path, etcd: Vec<String>, prefix: String) -> anyhow::Result<usize> {
    let layout = DataLayout::new(data_dir);
    layout.create_dirs()?;
    let Some(_lock) = DataDirLock::try_acquire(&layout)? else {
        // The daemon runs: it moves its catalog itself, without stopping.
        let body = serde_json::json!({"etcd": etcd, "prefix": prefix});
        let reply = admin_call(&layout, "POST", "/api/v1/admin/cluster", Some(body), Duration::from_secs(600)).await?;
        return Ok(reply["data"]["records"].as_u64().unwrap_or(0) as usize);
    };
    if crate::cluster::config::load(data_dir)?.is_some() {
        anyhow::bail!("{} is already a node of a cluster", data_dir.display());
    }
    let local = crate::daemon::bootstrap::open_catalog(&layout).await?;
    let cluster = crate::cluster::config::ClusterConfig { etcd, prefix };
    let remote = crate::daemon::bootstrap::connect_etcd(&cluster).await?;
    let copied = crate::catalog::copy_all(local.kv().as_ref(), remote.as_ref()).await?;
    crate::cluster::config::save(data_dir, &cluster)?;
    Ok(copied)
}

/// A call to the daemon serving `layout`, with its admin token; the error
/// is the daemon's message.
async fn admin_call(layout: &DataLayout, method: &str, path: &str, body: Option<serde_json::Value>, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let endpoints: Endpoints = serde_json::from_slice(&std::fs::read(layout.endpoints()).context("the daemon runs but endpoints.json is missing")?)?;
    let token = std::fs::read_to_string(layout.admin_token())?.trim().to_string();
    let url = format!("http://{}{path}", endpoints.http);
    let method = method.to_string();
    tokio::task::spawn_blocking(move || {
        let req = ureq::request(&method, &url).set("Authorization", &format!("Bearer {token}")).timeout(timeout);
        let answer = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match answer {
            Ok(reply) => Ok(reply.into_json::<serde_json::Value>()?),
            Err(ureq::Error::Status(_, reply)) => {
                let body: serde_json::Value = reply.into_json().unwrap_or_default();
                anyhow::bail!("{}", body["message"].as_str().unwrap_or("the daemon refused"))
            }
            Err(e) => anyhow::bail!("reaching the daemon: {e}"),
        }
    })
    .await?
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `hoodyd gc`: through the running daemon when there is one (it owns the
/// store), else in this process with the data dir locked.
pub async fn gc(data_dir: &std::path::Path) -> anyhow::Result<hoody_api::model::GcSummary> {
    let layout = DataLayout::new(data_dir);
    layout.create_dirs()?;
    match DataDirLock::try_acquire(&layout)? {
        Some(_lock) => {
            // Keep the node's configured name: read it rather than defaulting to the host name.
            let name = std::fs::read(layout.node_file())
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::layout::NodeIdentity>(&b).ok())
                .map(|n| n.name)
                .unwrap_or_else(|| crate::daemon::config::ConfigLayer::default().resolve().node_name);
            let boot = crate::daemon::bootstrap::init(&layout, &name).await?;
            // GC never adopts nor freezes: no host paths.
            let engine = Engine::new(boot.catalog, layout.clone(), boot.node, Default::default())?;
            engine.gc_now().await
        }
        None => {
            let endpoints: Endpoints = serde_json::from_slice(&std::fs::read(layout.endpoints()).context("the daemon runs but endpoints.json is missing")?)?;
            let token = std::fs::read_to_string(layout.admin_token())?.trim().to_string();
            let url = format!("http://{}/api/v1/admin/gc", endpoints.http);
            let reply: serde_json::Value = tokio::task::spawn_blocking(move || {
                ureq::post(&url).set("Authorization", &format!("Bearer {token}")).timeout(Duration::from_secs(3600)).call().map_err(|e| anyhow::anyhow!("{e}"))?.into_json::<serde_json::Value>().map_err(anyhow::Error::from)
            })
            .await??;
            Ok(serde_json::from_value(reply["data"].clone())?)
        }
    }
}

/// `hoodyd token revoke`: through the running daemon when there is one, so
/// that its token cache forgets the token before the verb returns (a catalog
/// write from this process would not reach the daemon's cache); else in the
/// catalog, with the data dir locked so that no daemon starts and caches the
/// token meanwhile. See `tokens::TokenCache`.
pub async fn revoke_token(data_dir: &std::path::Path, id: &str) -> anyhow::Result<()> {
    let layout = DataLayout::new(data_dir);
    layout.create_dirs()?;
    match DataDirLock::try_acquire(&layout)? {
        Some(_lock) => {
            if crate::tokens::admin_token_id(&layout).as_deref() == Some(id) {
                anyhow::bail!("token {id} is the data dir's admin.token, which `hoodyd` verbs use to reach the daemon; it cannot be revoked");
            }
            let catalog = crate::daemon::bootstrap::open_catalog(&layout).await?;
            if !catalog.delete_token(id).await? {
                anyhow::bail!("no token {id}");
            }
            Ok(())
        }
        None => {
            let endpoints: Endpoints = serde_json::from_slice(&std::fs::read(layout.endpoints()).context("the daemon runs but endpoints.json is missing")?)?;
            let token = std::fs::read_to_string(layout.admin_token())?.trim().to_string();
            let url = format!("http://{}/api/v1/admin/tokens/{id}", endpoints.http);
            tokio::task::spawn_blocking(move || match ureq::delete(&url).set("Authorization", &format!("Bearer {token}")).timeout(Duration::from_secs(60)).call() {
                Ok(_) => Ok(()),
                Err(ureq::Error::Status(_, reply)) => {
                    let body: serde_json::Value = reply.into_json().unwrap_or_default();
                    anyhow::bail!("{}", body["message"].as_str().unwrap_or("the daemon refused"))
                }
                Err(e) => anyhow::bail!("reaching the daemon: {e}"),
            })
            .await?
        }
    }
}

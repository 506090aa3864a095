use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hoodyd::daemon::config::{default_data_dir, Config, ConfigLayer, LogFormat};

#[derive(Parser)]
#[command(name = "hoodyd", version, about = "The hoody storage daemon: shares, snapshots, copies and syncs of containers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (embedded defaults work on a fresh machine).
    Serve(ServeArgs),
    /// Create the data dir, node identity, certificates, catalog and admin token, then exit.
    Init {
        #[command(flatten)]
        dir: DataDirArg,
        #[arg(long, env = "HOODY_NODE_NAME")]
        node_name: Option<String>,
    },
    /// Re-read every block and tree of the store and report corruption by snapshot and path
    /// (read-only; usable while the daemon runs). Exit code 1 when anything is wrong.
    Verify {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Expire snapshots and reclaim store space no snapshot references (through the
    /// running daemon when there is one).
    Gc {
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Form a cluster of servers: its catalog in etcd, its members talking QUIC with mutual TLS.
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Make this server the first node of a cluster whose catalog lives in etcd: everything
    /// its catalog holds is copied into etcd, then served from there.
    Init {
        /// etcd client URLs, comma-separated (http://host:port).
        #[arg(long)]
        etcd: String,
        /// Key prefix of this cluster in etcd.
        #[arg(long, default_value = hoodyd::cluster::config::DEFAULT_PREFIX)]
        prefix: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Make a new member's data dir offline (identity, certificate signed by this node's CA,
    /// cluster.json): then `hoodyd serve --data-dir DIR` on the new server.
    AddNode {
        /// The new server's name.
        name: String,
        /// Its data dir (must not hold a node yet).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a new token for ACCOUNT (created if new); works whether or not the daemon runs.
    Create {
        #[arg(long)]
        account: String,
        /// Refuse the token after this long: a whole number and s, m, h or d (e.g. 30d) [default: never].
        #[arg(long, value_parser = parse_lifetime)]
        expires_in: Option<std::time::Duration>,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// List tokens (id, account, created, expires), never their secrets.
    List {
        /// Only this account's tokens.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        dir: DataDirArg,
    },
    /// Revoke token ID: refused from the next request on (through the running daemon when there is one).
    Revoke {
        id: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    hoodyd::tokens::parse_lifetime(text)
}

#[derive(Args)]
struct DataDirArg {
    /// Data dir [default: /var/lib/hoody as root, else $XDG_DATA_HOME/hoody].
    #[arg(long, env = "HOODY_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    fn resolve(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Data dir [default: /var/lib/hoody as root, else $XDG_DATA_HOME/hoody].
    #[arg(long, env = "HOODY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address (port 0: any free port) [default: 127.0.0.1:7700].
    #[arg(long, env = "HOODY_HTTP")]
    http: Option<SocketAddr>,
    /// QUIC listen address for peers (port 0: any free port) [default: 127.0.0.1:7701].
    #[arg(long, env = "HOODY_QUIC")]
    quic: Option<SocketAddr>,
    /// TOML file with the same settings (data_dir, http, quic, node_name, log_format, log_level),
    /// and the host paths an admin may use (adopt_roots, cgroup_root).
    #[arg(long, env = "HOODY_CONFIG")]
    config: Option<PathBuf>,
    /// Human name of this node [default: the host name].
    #[arg(long, env = "HOODY_NODE_NAME")]
    node_name: Option<String>,
    /// Log format.
    #[arg(long, env = "HOODY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `hoodyd=debug` [default: info].
    #[arg(long, env = "HOODY_LOG")]
    log_level: Option<String>,
    /// Join a cluster with a token from `hoody cluster join-token` (ignored once joined).
    #[arg(long, env = "HOODY_JOIN")]
    join: Option<String>,
}

impl ServeArgs {
    fn config(mut self) -> anyhow::Result<Config> {
        let join = self.join.take();
        let file = match &self.config {
            Some(path) => ConfigLayer::from_file(path)?,
            None => ConfigLayer::default(),
        };
        let cli = ConfigLayer {
            data_dir: self.data_dir,
            http: self.http,
            quic: self.quic,
            node_name: self.node_name,
            log_format: self.log_format,
            log_level: self.log_level,
            // Host paths come from the operator's config file only.
            adopt_roots: None,
            cgroup_root: None,
        };
        let mut config = cli.over(file).resolve();
        config.join = join;
        Ok(config)
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Blocking work (filesystem calls of shares, snapshot capture) is bounded so
    // that a burst on hundreds of mounts queues instead of spawning hundreds of threads.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(128).build()?;
    match cli.command {
        Command::Serve(args) => {
            let config = args.config()?;
            init_logging(config.log_format, &config.log_level);
            runtime.block_on(hoodyd::daemon::run(config, hoodyd::daemon::termination_signal()))
        }
        Command::Init { dir, node_name } => {
            let layout = hoodyd::layout::DataLayout::new(dir.resolve());
            let name = ConfigLayer { node_name, ..Default::default() }.resolve().node_name;
            let boot = runtime.block_on(hoodyd::daemon::bootstrap::init(&layout, &name))?;
            println!("initialized {} as node {} ({})", layout.root().display(), boot.node.name, boot.node.id);
            Ok(())
        }
        Command::Verify { dir } => {
            let report = runtime.block_on(hoodyd::verify::verify(&dir.resolve()))?;
            for p in &report.problems {
                match (&p.snapshot, &p.path) {
                    (Some(s), Some(path)) => println!("CORRUPT snapshot {s} path {path}: object {} {}", p.object, p.reason),
                    _ => println!("CORRUPT unreferenced object {}: {}", p.object, p.reason),
                }
            }
            println!(
                "verified {} objects ({} bytes stored) and {} snapshots: {}",
                report.objects,
                report.bytes,
                report.snapshots,
                if report.problems.is_empty() { "ok".to_string() } else { format!("{} problems", report.problems.len()) }
            );
            if !report.problems.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Gc { dir } => {
            let summary = runtime.block_on(hoodyd::daemon::gc(&dir.resolve()))?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Cluster(ClusterCmd::Init { etcd, prefix, dir }) => {
            let urls = hoodyd::cluster::config::parse_etcd_urls(&etcd)?;
            let copied = runtime.block_on(hoodyd::daemon::cluster_init(&dir.resolve(), urls, prefix))?;
            println!("{} is now the first node of a cluster; {copied} catalog records copied into etcd", dir.resolve().display());
            Ok(())
        }
        Command::Cluster(ClusterCmd::AddNode { name, out, dir }) => {
            let layout = hoodyd::layout::DataLayout::new(dir.resolve());
            let node = hoodyd::cluster::join::add_node(&layout, &name, &out)?;
            println!("made {} for node {} ({}): start it with `hoodyd serve --data-dir {}`", out.display(), node.name, node.id, out.display());
            Ok(())
        }
        Command::Token(TokenCmd::Create { account, expires_in, dir }) => {
            let token = runtime.block_on(hoodyd::daemon::bootstrap::create_token(&dir.resolve(), &account, expires_in))?;
            println!("{token}");
            Ok(())
        }
        Command::Token(TokenCmd::List { account, dir }) => {
            let tokens = runtime.block_on(hoodyd::daemon::bootstrap::list_tokens(&dir.resolve(), account.as_deref()))?;
            println!("{:<24}  {:<20}  {:<24}  EXPIRES", "ID", "ACCOUNT", "CREATED");
            for (t, name) in tokens {
                let expires = match (&t.expires_at, t.expired) {
                    (None, _) => "never".to_string(),
                    (Some(at), true) => format!("{at} (expired)"),
                    (Some(at), false) => at.clone(),
                };
                println!("{:<24}  {:<20}  {:<24}  {expires}", t.id, name, t.created_at);
            }
            Ok(())
        }
        Command::Token(TokenCmd::Revoke { id, dir }) => {
            runtime.block_on(hoodyd::daemon::revoke_token(&dir.resolve(), &id))?;
            println!("revoked {id}");
            Ok(())
        }
    }
}

//! The `hoody` command line: a client of the HTTP API that prints tables for
//! people and JSON for scripts.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(name = "hoody", version, about = "Command line client of hoodyd", long_about = "Command line client of hoodyd.\n\n\
Finds the daemon through HOODY_URL and HOODY_TOKEN; without them it uses the local node's \
<data-dir>/run/endpoints.json and <data-dir>/admin.token.")]
pub struct Cli {
    /// Base URL of the API, e.g. http://127.0.0.1:7700.
    #[arg(long, env = "HOODY_URL", global = true)]
    pub url: Option<String>,
    /// Bearer token.
    #[arg(long, env = "HOODY_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Data dir of the local node, for the fallbacks.
    #[arg(long, env = "HOODY_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Print the response's data as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for one answer. A long operation (snapshot, restore,
    /// delete) not answered in time is waited on through the container's
    /// progress instead of failing.
    #[arg(long, env = "HOODY_TIMEOUT", global = true, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Containers: create, list, get, delete, and lifecycle operations.
    #[command(subcommand)]
    Containers(ContainersCmd),
    /// Projects: create, list, get.
    #[command(subcommand)]
    Projects(ProjectsCmd),
    /// Snapshots of a container: create, list, get, restore (in place), delete.
    #[command(subcommand)]
    Snapshots(SnapshotsCmd),
    /// Storage shares: the source decides what, the target decides if.
    #[command(subcommand)]
    Storage(StorageCmd),
    /// Servers of the cluster: list (with state and free space), get, remove.
    #[command(subcommand)]
    Servers(ServersCmd),
    /// The cluster: tokens that admit new servers.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The caller's own API tokens: list (never secrets), create, revoke.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Print a shell completion script, e.g. `hoody completions bash > /etc/bash_completion.d/hoody`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff, for `man -l -`), or write one page per command into --out.
    Man {
        /// Directory to write hoody.1, hoody-storage.1, ... into.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// `--limit`/`--offset` of every list: the API pages every list.
#[derive(Args, Debug, Clone, Default)]
pub struct Paging {
    /// Show at most this many items.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Skip this many items first.
    #[arg(long)]
    pub offset: Option<u64>,
}

impl Paging {
    fn pairs(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("limit", self.limit.map(|n| n.to_string())), ("offset", self.offset.map(|n| n.to_string()))]
    }
}

/// How a long operation (a job on the container) is waited on.
#[derive(Args, Debug, Clone, Default)]
pub struct Waiting {
    /// Wait for the job showing its progress: a bar on a terminal, else a last line on stderr.
    #[arg(long, conflicts_with = "no_wait")]
    pub wait: bool,
    /// Return as soon as the daemon has accepted the job (its progress shows on the container).
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    List {
        #[command(flatten)]
        page: Paging,
    },
    /// Print a new token of the caller's account (the secret is shown this once).
    Create {
        /// Lifetime: a whole number and s, m, h or d (e.g. 30d) [default: never expires].
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Revoke one of the caller's tokens by id.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
pub enum ContainersCmd {
    /// Create a container (empty rootfs, or adopt --rootfs-path).
    Create(CreateContainerArgs),
    /// List containers.
    List {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        server: Option<String>,
        #[arg(long = "source")]
        source_container: Option<String>,
        #[command(flatten)]
        page: Paging,
    },
    /// Show one container.
    Get { id: String },
    /// Rename a container or change its environment and resources.
    Update(UpdateContainerArgs),
    /// Delete a container and its rootfs.
    Delete { id: String },
    Start { id: String },
    Stop { id: String },
    ForceStop { id: String },
    Restart { id: String },
    Pause { id: String },
    Resume { id: String },
}

#[derive(Args, Debug)]
pub struct CreateContainerArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long = "project")]
    pub project_id: String,
    #[arg(long = "server")]
    pub server_id: Option<String>,
    #[arg(long)]
    pub rootfs_path: Option<String>,
    #[arg(long)]
    pub cgroup_path: Option<String>,
    #[arg(long)]
    pub ssh_public_key: Option<String>,
    /// KEY=VALUE, repeatable.
    #[arg(long = "env")]
    pub env: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateContainerArgs {
    pub id: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// Set KEY=VALUE in the environment (the other variables stay), repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Remove KEY from the environment, repeatable.
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,
    /// CPUs (resources.cpu), e.g. 2 or 0.5.
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory (resources.memory), e.g. 512MiB, 2GiB, or bytes.
    #[arg(long)]
    pub memory: Option<String>,
    /// Set any resource KEY=VALUE (a number or true/false stays one); KEY= removes it. Repeatable.
    #[arg(long = "resource", value_name = "KEY=VALUE")]
    pub resources: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ProjectsCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    List {
        #[command(flatten)]
        page: Paging,
    },
    Get { id: String },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotsCmd {
    /// Snapshot the container now.
    Create {
        #[arg(long)]
        container: String,
        /// Name of the snapshot [default: snap-YYYYMMDD-HHMMSS].
        #[arg(long)]
        alias: Option<String>,
        /// Days until the daemon removes it.
        #[arg(long)]
        expiry: Option<f64>,
        #[command(flatten)]
        waiting: Waiting,
    },
    List {
        #[arg(long)]
        container: String,
        #[command(flatten)]
        page: Paging,
    },
    Get {
        #[arg(long)]
        container: String,
        alias: String,
    },
    /// Restore the container in place to the snapshot (its files become exactly the snapshot's).
    Restore {
        #[arg(long)]
        container: String,
        alias: String,
        #[command(flatten)]
        waiting: Waiting,
    },
    Delete {
        #[arg(long)]
        container: String,
        alias: String,
    },
}

/// What `storage list` and `storage list-all` show.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Shares you created (the default).
    Shares,
    /// Shares offered to your containers, with their mount status.
    Incoming,
}

#[derive(Subcommand, Debug)]
pub enum StorageCmd {
    /// Share a directory of --container with one container or a whole project.
    Create {
        #[arg(long)]
        container: String,
        #[arg(long)]
        source_path: String,
        #[arg(long)]
        target_container_id: Option<String>,
        #[arg(long)]
        target_project_id: Option<String>,
        /// readonly or readwrite.
        #[arg(long, default_value = "readonly")]
        mode: String,
        #[arg(long)]
        alias: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Unix seconds or RFC 3339.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Shares created from --container (all of yours without it); `list incoming`: shares offered to --container.
    List {
        #[arg(value_enum)]
        what: Option<Listing>,
        #[arg(long)]
        container: Option<String>,
        #[command(flatten)]
        page: Paging,
    },
    /// All shares you created, across your containers; `list-all incoming`: all offered to any of them.
    ListAll {
        #[arg(value_enum)]
        what: Option<Listing>,
        #[command(flatten)]
        page: Paging,
    },
    /// Show one share (--container: the source container, optional).
    Get {
        #[arg(long)]
        container: Option<String>,
        share_id: String,
    },
    /// Change enabled, mode, alias, description, expires-at.
    Update {
        /// The source container (optional).
        #[arg(long)]
        container: Option<String>,
        #[arg(long)]
        share_id: String,
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        alias: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Unix seconds or RFC 3339.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Delete a share: unmounted from every target, its configuration gone.
    Delete {
        share_id: String,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Shares offered to --container, or to all of yours (same as `list incoming`).
    Incoming {
        #[arg(long)]
        container: Option<String>,
        #[command(flatten)]
        page: Paging,
    },
    /// Mount an incoming share in --container (or wherever it is offered to you).
    Mount {
        #[arg(long)]
        container: Option<String>,
        share_id: String,
    },
    /// Unmount an incoming share from --container (it stays off until mounted again).
    Unmount {
        #[arg(long)]
        container: Option<String>,
        share_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServersCmd {
    List {
        #[command(flatten)]
        page: Paging,
    },
    Get { id: String },
    /// Take a server out of the cluster (admin): its certificate is refused from then on.
    Remove { id: String },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Print a one-time token admitting one new server (admin): `hoodyd serve --join <token>`.
    JoinToken {
        /// Lifetime: a whole number and s, m, h or d [default: 1h].
        #[arg(long)]
        expires_in: Option<String>,
    },
}

/// A failed command: what to print and the exit code.
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { message: e.to_string(), code: 1 }
    }
}

struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
    /// How long one request may take before its answer is given up on.
    timeout: Duration,
}

/// What one request came to, short of a failure to reach the daemon.
enum Answer {
    /// The daemon answered: HTTP status and envelope (errors included).
    Got(u16, Value),
    /// Connected, but no answer in time (or the connection broke before it):
    /// the daemon may well still be working on it.
    NoAnswer(String),
}

/// How often a job's progress is polled.
const POLL: Duration = Duration::from_millis(250);

impl Api {
    fn connect(cli: &Cli) -> Result<Self, Failure> {
        let data_dir = cli.data_dir.clone().unwrap_or_else(hoodyd::daemon::config::default_data_dir);
        let layout = hoodyd::layout::DataLayout::new(&data_dir);
        let base = match &cli.url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let text = std::fs::read(layout.endpoints()).map_err(|e| Failure {
                    message: format!("no HOODY_URL and no running local hoodyd ({}: {e})", layout.endpoints().display()),
                    code: 2,
                })?;
                let eps: hoodyd::layout::Endpoints = serde_json::from_slice(&text)?;
                format!("http://{}", eps.http)
            }
        };
        let token = match &cli.token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(layout.admin_token())
                .map_err(|e| Failure { message: format!("no HOODY_TOKEN and no readable {} ({e})", layout.admin_token().display()), code: 2 })?
                .trim()
                .to_string(),
        };
        if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
            return Err(Failure { message: format!("--timeout {}: expected a positive number of seconds", cli.timeout), code: 2 });
        }
        let timeout = Duration::from_secs_f64(cli.timeout.min(1e9));
        let agent = ureq::AgentBuilder::new().timeout_connect(timeout.min(Duration::from_secs(10))).build();
        Ok(Api { base, token, agent, timeout })
    }

    /// Sends one request; a failure only when the daemon cannot be reached at all.
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, Failure> {
        let url = format!("{}/api/v1{path}", self.base);
        let req = self.agent.request(method, &url).timeout(self.timeout).set("Authorization", &format!("Bearer {}", self.token));
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(&b.to_string()),
            None => req.call(),
        };
        let resp = match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::Io => return Ok(Answer::NoAnswer(t.to_string())),
            Err(e) => return Err(Failure { message: format!("cannot reach hoodyd at {}: {e}", self.base), code: 2 }),
        };
        let status = resp.status();
        match resp.into_json::<Value>() {
            Ok(envelope) => Ok(Answer::Got(status, envelope)),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData && status < 400 => Err(Failure { message: format!("unreadable answer from hoodyd: {e}"), code: 1 }),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(Answer::Got(status, Value::Null)),
            Err(e) => Ok(Answer::NoAnswer(e.to_string())),
        }
    }

    /// Calls the API and returns the whole envelope, or the server's message as the failure.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        match self.send(method, path, body.as_ref())? {
            Answer::Got(status, envelope) if status >= 400 => Err(refusal(status, &envelope)),
            Answer::Got(_, envelope) => Ok(envelope),
            Answer::NoAnswer(e) => Err(Failure { message: format!("no answer from hoodyd at {} within {:?}: {e}", self.base, self.timeout), code: 2 }),
        }
    }
}

/// The server's message of an error answer, as the failure.
fn refusal(status: u16, envelope: &Value) -> Failure {
    let message = envelope["message"].as_str().unwrap_or("request failed").to_string();
    let code = envelope["error"]["code"].as_str().unwrap_or("error");
    Failure { message: format!("{message} (HTTP {status}, {code})"), code: 1 }
}

const CONTAINER_COLUMNS: &[&str] = &["id", "name", "status", "project_id", "server_name", "created_at"];
const PROJECT_COLUMNS: &[&str] = &["id", "name", "created_at"];
const SNAPSHOT_COLUMNS: &[&str] = &["alias", "id", "mode", "created_at", "expires_at", "size_bytes", "new_bytes"];
const SHARE_COLUMNS: &[&str] = &["id", "alias", "source_container_id", "source_path", "mode", "enabled", "target_container_id", "target_project_id"];
const INCOMING_COLUMNS: &[&str] = &["share_id", "container_id", "alias", "mode", "mount", "status", "status_message"];
const SERVER_COLUMNS: &[&str] = &["id", "name", "state", "addresses.http", "addresses.quic", "free_bytes"];
const JOIN_TOKEN_COLUMNS: &[&str] = &["token", "expires_at"];
const TOKEN_COLUMNS: &[&str] = &["id", "created_at", "expires_at", "expired"];

/// Runs one command, printing its output; the error carries the exit code.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "hoody", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man { out } => return man(out.as_deref()),
        _ => {}
    }
    let api = Api::connect(&cli)?;
    let (envelope, columns) = match &cli.command {
        Command::Containers(cmd) => (containers(&api, cmd)?, CONTAINER_COLUMNS),
        Command::Projects(cmd) => {
            let env = match cmd {
                ProjectsCmd::Create { name, description } => api.call("POST", "/projects", Some(json!({"name": name, "description": description})))?,
                ProjectsCmd::List { page } => api.call("GET", &with_query("/projects", page.pairs()), None)?,
                ProjectsCmd::Get { id } => api.call("GET", &format!("/projects/{}", encode(id)), None)?,
            };
            (env, PROJECT_COLUMNS)
        }
        Command::Snapshots(cmd) => (snapshots(&api, cmd)?, SNAPSHOT_COLUMNS),
        Command::Storage(cmd) => storage(&api, cmd)?,
        Command::Servers(cmd) => {
            let env = match cmd {
                ServersCmd::List { page } => api.call("GET", &with_query("/servers", page.pairs()), None)?,
                ServersCmd::Get { id } => api.call("GET", &format!("/servers/{}", encode(id)), None)?,
                ServersCmd::Remove { id } => api.call("DELETE", &format!("/servers/{}", encode(id)), None)?,
            };
            (env, SERVER_COLUMNS)
        }
        Command::Cluster(ClusterCmd::JoinToken { expires_in }) => (api.call("POST", "/cluster/join-tokens", Some(json!({"expires_in": expires_in})))?, JOIN_TOKEN_COLUMNS),
        Command::Tokens(cmd) => {
            let env = match cmd {
                TokensCmd::List { page } => api.call("GET", &with_query("/tokens", page.pairs()), None)?,
                TokensCmd::Create { expires_in } => api.call("POST", "/tokens", Some(json!({"expires_in": expires_in})))?,
                TokensCmd::Revoke { id } => api.call("DELETE", &format!("/tokens/{}", encode(id)), None)?,
            };
            (env, TOKEN_COLUMNS)
        }
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled without the daemon"),
    };
    print_data(&envelope, columns, cli.json);
    Ok(())
}

/// The manual page of `hoody` on stdout, or every command's page written into `out`.
fn man(out: Option<&std::path::Path>) -> Result<(), Failure> {
    let cmd = Cli::command();
    match out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::stdout().write_all(&page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    Ok(())
}

fn snapshots(api: &Api, cmd: &SnapshotsCmd) -> Result<Value, Failure> {
    let base = |c: &str| format!("/containers/{}/snapshots", encode(c));
    match cmd {
        SnapshotsCmd::Create { container, alias, expiry, waiting } => {
            let mut meter = Meter::new(format!("snapshot {}", alias.as_deref().unwrap_or("")).trim_end().to_string(), waiting.wait);
            // Made although its answer was lost: the snapshot exists.
            let made = || match alias {
                Some(a) => match api.send("GET", &format!("{}/{}", base(container), encode(a)), None)? {
                    Answer::Got(200, envelope) => Ok(Some(envelope)),
                    _ => Ok(None),
                },
                None => Ok(None),
            };
            let body = json!({"alias": alias, "expiry": expiry});
            let ended = run_job(api, ("POST", &base(container), Some(body)), container, &mut meter, waiting.no_wait, &made);
            let (data, after, refused) = match ended.inspect_err(|_| meter.finish("failed"))? {
                Ended::Answered(envelope) => {
                    meter.finish("done");
                    return Ok(envelope);
                }
                Ended::Accepted(data) => return Ok(accepted(data, container, "the snapshot is being taken")),
                Ended::Job { data, after, refused } => (data, after, refused),
            };
            // The alias made: as the 202 or the job's progress said, else as asked, else the newest.
            let said = [&data["alias"], &data["snapshot"]["alias"], &meter.last["snapshot"]].into_iter().find_map(|v| v.as_str().map(String::from));
            let alias = match said.or_else(|| alias.clone()) {
                Some(a) => Some(a),
                None => newest_snapshot(api, container)?,
            };
            let got = match &alias {
                Some(a) => get_patiently(api, &format!("{}/{}", base(container), encode(a))),
                None => Err(Failure { message: "no snapshot was made".into(), code: 1 }),
            };
            got.inspect(|_| meter.finish("done")).map_err(|f| {
                meter.finish("failed");
                after["status_message"].as_str().map(|m| Failure { message: m.to_string(), code: 1 }).or(refused).unwrap_or(f)
            })
        }
        SnapshotsCmd::List { container, page } => api.call("GET", &with_query(&base(container), page.pairs()), None),
        SnapshotsCmd::Get { container, alias } => api.call("GET", &format!("{}/{}", base(container), encode(alias)), None),
        SnapshotsCmd::Restore { container, alias, waiting } => {
            let path = format!("{}/{}", base(container), encode(alias));
            let mut meter = Meter::new(format!("restore {alias}"), waiting.wait);
            // A restore is sent again when its answer was lost and no job of it showed: doing it twice is harmless.
            let ended = run_job(api, ("PATCH", &path, None), container, &mut meter, waiting.no_wait, &|| Ok(None));
            let snapshot = match ended.inspect_err(|_| meter.finish("failed"))? {
                Ended::Answered(envelope) => envelope["data"]["snapshot"].clone(),
                Ended::Accepted(data) => return Ok(accepted(data, container, "the restore is running")),
                Ended::Job { data, after, refused } => {
                    let failed = after["status_message"].as_str().filter(|m| m.contains("failed")).map(|m| Failure { message: m.to_string(), code: 1 });
                    // Sent again and refused, with no job seen since: the refusal stands.
                    let failed = failed.or(refused.filter(|_| meter.last.is_null()));
                    if let Some(f) = failed {
                        meter.finish("failed");
                        return Err(f);
                    }
                    match &data["snapshot"] {
                        s @ Value::Object(_) => s.clone(),
                        _ => get_patiently(api, &path)?["data"].take(),
                    }
                }
            };
            meter.finish("done");
            Ok(json!({"statusCode": 200, "message": "restored", "data": snapshot}))
        }
        SnapshotsCmd::Delete { container, alias } => api.call("DELETE", &format!("{}/{}", base(container), encode(alias)), None),
    }
}

/// How a long operation on a container (snapshot, restore) ended, as the client saw it.
enum Ended {
    /// Answered with its result: the envelope.
    Answered(Value),
    /// Left running (`--no-wait`): what the 202 said, `null` after no answer.
    Accepted(Value),
    /// Ran as a job, over now: what the 202 said (`null` if nothing), the
    /// container after it, and the refusal of a request sent again that found
    /// the first one's work going on (or done).
    Job { data: Value, after: Value, refused: Option<Failure> },
}

/// How many times a long request is sent when no answer comes and no job of it shows.
const TRIES: usize = 3;
/// How long a job may take to show on the container after its request went
/// unanswered (the daemon publishes a job's first progress after ~0.2 s).
const GRACE: Duration = Duration::from_secs(2);

/// Runs a long operation of `container` to its end: a 202 or a request not
/// answered within the timeout is followed on the container's `progress`
/// until it clears. After no answer, until a job shows, `done_already` says
/// whether it happened anyway (done before any progress showed); when
/// neither within [`GRACE`], the request is sent again (at most [`TRIES`]
/// times), and a 409 then means the first one is at work.
fn run_job(api: &Api, (method, path, body): (&str, &str, Option<Value>), container: &str, meter: &mut Meter, no_wait: bool, done_already: &dyn Fn() -> Result<Option<Value>, Failure>) -> Result<Ended, Failure> {
    let mut why = String::new();
    for attempt in 0..TRIES {
        match api.send(method, path, body.as_ref())? {
            Answer::Got(409, envelope) if attempt > 0 => {
                let after = wait_for_job(api, container, meter)?;
                return Ok(Ended::Job { data: Value::Null, after, refused: Some(refusal(409, &envelope)) });
            }
            Answer::Got(status, envelope) if status >= 400 => return Err(refusal(status, &envelope)),
            Answer::Got(status, envelope) if status == 202 || envelope["data"]["done"] == json!(false) => {
                let data = envelope["data"].clone();
                if no_wait {
                    return Ok(Ended::Accepted(data));
                }
                let after = wait_for_job(api, container, meter)?;
                return Ok(Ended::Job { data, after, refused: None });
            }
            Answer::Got(_, envelope) => return Ok(Ended::Answered(envelope)),
            Answer::NoAnswer(e) => {
                if no_wait {
                    return Ok(Ended::Accepted(Value::Null));
                }
                // Its job shows, or it is done already, or it is sent again.
                let container_path = format!("/containers/{}", encode(container));
                let started = Instant::now();
                loop {
                    match api.send("GET", &container_path, None)? {
                        Answer::Got(status, envelope) if status >= 400 => return Err(refusal(status, &envelope)),
                        Answer::Got(_, envelope) if !envelope["data"]["progress"].is_null() => {
                            meter.update(&envelope["data"]["progress"]);
                            let after = wait_for_job(api, container, meter)?;
                            return Ok(Ended::Job { data: Value::Null, after, refused: None });
                        }
                        Answer::Got(..) => {
                            if let Some(envelope) = done_already()? {
                                return Ok(Ended::Answered(envelope));
                            }
                            if started.elapsed() > GRACE {
                                break;
                            }
                        }
                        Answer::NoAnswer(_) => {}
                    }
                    std::thread::sleep(POLL);
                }
                why = e;
            }
        }
    }
    Err(Failure { message: format!("no answer from hoodyd at {} within {:?}, {TRIES} times, and no job showed on container {container}: {why}", api.base, api.timeout), code: 2 })
}

/// GETs the result of a long operation, asking again while the daemon is too
/// busy to answer in time.
fn get_patiently(api: &Api, path: &str) -> Result<Value, Failure> {
    for _ in 0..TRIES * 4 {
        match api.send("GET", path, None)? {
            Answer::Got(status, envelope) if status >= 400 => return Err(refusal(status, &envelope)),
            Answer::Got(_, envelope) => return Ok(envelope),
            Answer::NoAnswer(_) => std::thread::sleep(POLL),
        }
    }
    api.call("GET", path, None)
}

/// The envelope printed by `--no-wait` for a job left running.
fn accepted(data: Value, container: &str, what: &str) -> Value {
    let message = format!("{what}; its progress shows in `hoody containers get {container}`");
    json!({"statusCode": 202, "message": message, "data": data})
}

/// The alias of the container's newest snapshot.
fn newest_snapshot(api: &Api, container: &str) -> Result<Option<String>, Failure> {
    let list = get_patiently(api, &format!("/containers/{}/snapshots", encode(container)))?;
    let newest = list["data"].as_array().and_then(|items| items.iter().max_by_key(|s| s["created_at"].as_str().unwrap_or("").to_string()).cloned());
    Ok(newest.and_then(|s| s["alias"].as_str().map(String::from)))
}

/// Shows a job's progress: a bar on a terminal when asked (`--wait`), else
/// a last line on stderr when asked, else nothing.
struct Meter {
    what: String,
    bar: Option<indicatif::ProgressBar>,
    line: bool,
    started: Instant,
    last: Value,
    finished: bool,
}

impl Meter {
    fn new(what: String, watch: bool) -> Meter {
        let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let bar = (watch && tty).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
            let style = indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {msg}, eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(what.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Meter { what, line: watch && bar.is_none(), bar, started: Instant::now(), last: Value::Null, finished: false }
    }

    /// Shows one reading of the container's `progress`.
    fn update(&mut self, p: &Value) {
        if let Some(bar) = &self.bar {
            let total = p["bytes_total"].as_u64().unwrap_or(0);
            if total > 0 {
                bar.set_length(total);
            }
            bar.set_position(p["bytes_done"].as_u64().unwrap_or(0));
            bar.set_message(describe_progress(p));
        }
        self.last = p.clone();
    }

    /// Ends the display with one line saying how it went.
    fn finish(&mut self, outcome: &str) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let mut summary = format!("{} {outcome} in {:.1}s", self.what, self.started.elapsed().as_secs_f64());
        if let (Some(files), Some(bytes)) = (self.last["files_total"].as_u64(), self.last["bytes_total"].as_u64()) {
            summary.push_str(&format!(" ({files} files, {})", indicatif::HumanBytes(bytes)));
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.bar.is_some() || self.line {
            eprintln!("{summary}");
        }
    }
}

/// `phase files_done/files_total files rate/s` of a `progress`.
fn describe_progress(p: &Value) -> String {
    let mut s = format!("{} {}/{} files", p["phase"].as_str().unwrap_or("working"), p["files_done"].as_u64().unwrap_or(0), p["files_total"].as_u64().unwrap_or(0));
    if let Some(rate) = p["rate"].as_f64().filter(|r| *r > 0.0) {
        s.push_str(&format!(" {}/s", indicatif::HumanBytes(rate as u64)));
    }
    s
}

/// Waits until the container's job is over (its `progress` cleared), showing
/// it on `meter`; returns the container as it is then. A poll left
/// unanswered in time is asked again: the daemon is busy, not gone.
fn wait_for_job(api: &Api, container: &str, meter: &mut Meter) -> Result<Value, Failure> {
    let path = format!("/containers/{}", encode(container));
    loop {
        match api.send("GET", &path, None)? {
            Answer::Got(status, envelope) if status >= 400 => return Err(refusal(status, &envelope)),
            Answer::Got(_, envelope) => {
                let c = &envelope["data"];
                if c["progress"].is_null() {
                    return Ok(c.clone());
                }
                meter.update(&c["progress"]);
            }
            Answer::NoAnswer(_) => {}
        }
        std::thread::sleep(POLL);
    }
}

fn storage(api: &Api, cmd: &StorageCmd) -> Result<(Value, &'static [&'static str]), Failure> {
    let c = |id: &str| format!("/containers/{}", encode(id));
    let shares_of = |container: &Option<String>| match container {
        Some(id) => format!("{}/storage/shares", c(id)),
        None => "/storage/shares".to_string(),
    };
    let incoming_of = |container: &Option<String>| match container {
        Some(id) => format!("{}/storage/incoming", c(id)),
        None => "/storage/incoming".to_string(),
    };
    let list = |what: &Option<Listing>, container: &Option<String>, page: &Paging| -> Result<(Value, &'static [&'static str]), Failure> {
        Ok(match what {
            Some(Listing::Incoming) => (api.call("GET", &with_query(&incoming_of(container), page.pairs()), None)?, INCOMING_COLUMNS),
            Some(Listing::Shares) | None => (api.call("GET", &with_query(&shares_of(container), page.pairs()), None)?, SHARE_COLUMNS),
        })
    };
    Ok(match cmd {
        StorageCmd::Create { container, source_path, target_container_id, target_project_id, mode, alias, description, expires_at } => {
            let body = without_nulls(json!({"source_path": source_path, "target_container_id": target_container_id, "target_project_id": target_project_id,
                "mode": mode, "alias": alias, "description": description, "expires_at": expires_at.as_deref().map(time_value)}));
            (api.call("POST", &format!("{}/storage/shares", c(container)), Some(body))?, SHARE_COLUMNS)
        }
        StorageCmd::List { what, container, page } => list(what, container, page)?,
        StorageCmd::ListAll { what, page } => list(what, &None, page)?,
        StorageCmd::Incoming { container, page } => list(&Some(Listing::Incoming), container, page)?,
        StorageCmd::Get { container, share_id } => (api.call("GET", &format!("{}/{}", shares_of(container), encode(share_id)), None)?, SHARE_COLUMNS),
        StorageCmd::Update { container, share_id, enabled, mode, alias, description, expires_at } => {
            let body = without_nulls(json!({"enabled": enabled, "mode": mode, "alias": alias, "description": description, "expires_at": expires_at.as_deref().map(time_value)}));
            (api.call("PATCH", &format!("{}/{}", shares_of(container), encode(share_id)), Some(body))?, SHARE_COLUMNS)
        }
        StorageCmd::Delete { share_id, yes } => {
            confirm(*yes, &format!("Delete share {share_id}? It is unmounted from every target and its configuration is gone."))?;
            (api.call("DELETE", &format!("/storage/shares/{}", encode(share_id)), None)?, SHARE_COLUMNS)
        }
        StorageCmd::Mount { container, share_id } | StorageCmd::Unmount { container, share_id } => {
            let mount = matches!(cmd, StorageCmd::Mount { .. });
            (api.call("PATCH", &format!("{}/{}/mount", incoming_of(container), encode(share_id)), Some(json!({"mount": mount})))?, INCOMING_COLUMNS)
        }
    })
}

/// Goes on only with `--yes`, or when the person at the terminal says yes.
fn confirm(yes: bool, question: &str) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure { message: "refusing to delete without --yes: stdin is not a terminal to confirm on".into(), code: 2 });
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Failure { message: "not deleted".into(), code: 1 }),
    }
}

/// A time given on the command line: Unix seconds stay a number, anything else (RFC 3339) a string.
fn time_value(s: &str) -> Value {
    s.trim().parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(s.to_string()))
}

fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

/// `path?k=v&...` of the pairs that have a value.
fn with_query(path: &str, pairs: Vec<(&str, Option<String>)>) -> String {
    let query: Vec<String> = pairs.into_iter().filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(&v)))).collect();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// KEY=VALUE of `--env` and `--resource`.
fn key_value<'a>(flag: &str, pair: &'a str) -> Result<(&'a str, &'a str), Failure> {
    match pair.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(Failure { message: format!("--{flag} {pair}: expected KEY=VALUE"), code: 2 }),
    }
}

/// A resource value: a number or boolean stays one, anything else is a string.
fn resource_value(s: &str) -> Value {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(s.to_string()),
    }
}

fn containers(api: &Api, cmd: &ContainersCmd) -> Result<Value, Failure> {
    let op = |id: &str, op: &str| api.call("POST", &format!("/containers/{}/{op}", encode(id)), None);
    match cmd {
        ContainersCmd::Create(a) => {
            let mut env = serde_json::Map::new();
            for pair in &a.env {
                let (k, v) = key_value("env", pair)?;
                env.insert(k.to_string(), Value::String(v.to_string()));
            }
            let mut body = json!({"name": a.name, "project_id": a.project_id});
            let fields = [("server_id", &a.server_id), ("rootfs_path", &a.rootfs_path), ("cgroup_path", &a.cgroup_path), ("ssh_public_key", &a.ssh_public_key)];
            for (k, v) in fields {
                if let Some(v) = v {
                    body[k] = Value::String(v.clone());
                }
            }
            if !env.is_empty() {
                body["env"] = Value::Object(env);
            }
            api.call("POST", "/containers", Some(body))
        }
        ContainersCmd::List { project, server, source_container, page } => {
            let mut pairs = vec![("project_id", project.clone()), ("server_id", server.clone()), ("source_container_id", source_container.clone())];
            pairs.extend(page.pairs());
            api.call("GET", &with_query("/containers", pairs), None)
        }
        ContainersCmd::Get { id } => api.call("GET", &format!("/containers/{}", encode(id)), None),
        ContainersCmd::Update(a) => update_container(api, a),
        ContainersCmd::Delete { id } => delete_container(api, id),
        ContainersCmd::Start { id } => op(id, "start"),
        ContainersCmd::Stop { id } => op(id, "stop"),
        ContainersCmd::ForceStop { id } => op(id, "force-stop"),
        ContainersCmd::Restart { id } => op(id, "restart"),
        ContainersCmd::Pause { id } => op(id, "pause"),
        ContainersCmd::Resume { id } => op(id, "resume"),
    }
}

/// Deletes a container, however long its files take to remove: a 202 or no
/// answer in time is followed until the container is gone (404); a request
/// left unanswered whose container is not `deleting` after a while is sent again.
fn delete_container(api: &Api, id: &str) -> Result<Value, Failure> {
    let path = format!("/containers/{}", encode(id));
    let gone = json!({"statusCode": 200, "message": "deleted", "data": {"id": id}});
    let mut why = String::new();
    for attempt in 0..TRIES {
        match api.send("DELETE", &path, None)? {
            Answer::Got(404, _) if attempt > 0 => return Ok(gone),
            Answer::Got(status, envelope) if status >= 400 => return Err(refusal(status, &envelope)),
            Answer::Got(202, _) => {}
            Answer::Got(_, envelope) => return Ok(envelope),
            Answer::NoAnswer(e) => why = e,
        }
        let started = Instant::now();
        loop {
            match api.send("GET", &path, None)? {
                Answer::Got(404, _) => return Ok(gone),
                Answer::Got(status, envelope) if status >= 400 => return Err(refusal(status, &envelope)),
                Answer::Got(_, envelope) if envelope["data"]["status"] != "deleting" && started.elapsed() > GRACE => break,
                _ => {}
            }
            std::thread::sleep(POLL);
        }
    }
    Err(Failure { message: format!("container {id} is still there: no answer from hoodyd at {} within {:?}, {TRIES} times: {why}", api.base, api.timeout), code: 2 })
}

/// PATCHes what was asked; env and resources are merged into the container's
/// current ones (the API replaces them whole).
fn update_container(api: &Api, a: &UpdateContainerArgs) -> Result<Value, Failure> {
    let path = format!("/containers/{}", encode(&a.id));
    let mut body = serde_json::Map::new();
    if let Some(name) = &a.name {
        body.insert("name".into(), Value::String(name.clone()));
    }
    let env_changes = !a.env.is_empty() || !a.unset_env.is_empty();
    let resource_changes = a.cpu.is_some() || a.memory.is_some() || !a.resources.is_empty();
    if env_changes || resource_changes {
        let current = api.call("GET", &path, None)?["data"].take();
        if env_changes {
            let mut env = current["env"].as_object().cloned().unwrap_or_default();
            for pair in &a.env {
                let (k, v) = key_value("env", pair)?;
                env.insert(k.to_string(), Value::String(v.to_string()));
            }
            for k in &a.unset_env {
                env.remove(k);
            }
            body.insert("env".into(), Value::Object(env));
        }
        if resource_changes {
            let mut resources = current["resources"].as_object().cloned().unwrap_or_default();
            if let Some(cpu) = a.cpu {
                resources.insert("cpu".into(), resource_value(&cpu.to_string()));
            }
            if let Some(memory) = &a.memory {
                resources.insert("memory".into(), resource_value(memory));
            }
            for pair in &a.resources {
                match key_value("resource", pair)? {
                    (k, "") => resources.remove(k),
                    (k, v) => resources.insert(k.to_string(), resource_value(v)),
                };
            }
            body.insert("resources".into(), Value::Object(resources));
        }
    }
    if body.is_empty() {
        return Err(Failure { message: "nothing to update: give --name, --env, --unset-env, --cpu, --memory or --resource".into(), code: 2 });
    }
    api.call("PATCH", &path, Some(Value::Object(body)))
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn field(v: &Value, path: &str) -> String {
    let mut cur = v;
    for part in path.split('.') {
        cur = &cur[part];
    }
    match cur {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_data(envelope: &Value, columns: &[&str], as_json: bool) {
    let data = &envelope["data"];
    if as_json {
        println!("{}", serde_json::to_string_pretty(data).unwrap_or_default());
        return;
    }
    match data {
        Value::Array(items) => print!("{}", table(items, columns)),
        Value::Object(map) => {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in map {
                let shown = match v {
                    Value::Null => "-".to_string(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                println!("{k:<width$}  {shown}");
            }
        }
        _ => println!("{}", envelope["message"].as_str().unwrap_or("ok")),
    }
}

/// An aligned text table of `columns` of `items`.
pub fn table(items: &[Value], columns: &[&str]) -> String {
    let header: Vec<String> = columns.iter().map(|c| c.rsplit('.').next().unwrap_or(c).to_uppercase()).collect();
    let rows: Vec<Vec<String>> = items.iter().map(|item| columns.iter().map(|c| field(item, c)).collect()).collect();
    let widths: Vec<usize> = (0..columns.len()).map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header);
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_show_missing_as_dash() {
        let items = vec![json!({"id": "a", "name": "web", "addresses": {"http": "x"}}), json!({"id": "bbbb", "name": null})];
        let t = table(&items, &["id", "name", "addresses.http"]);
        assert_eq!(t, "ID    NAME  HTTP\na     web   x\nbbbb  -     -\n");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}

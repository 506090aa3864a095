//! The `hoody` command line: a client of the HTTP API that prints tables for
//! people and JSON for scripts.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
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
    /// Servers of the cluster.
    #[command(subcommand)]
    Servers(ServersCmd),
    /// The caller's own API tokens: list (never secrets), create, revoke.
    #[command(subcommand)]
    Tokens(TokensCmd),
}

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    List,
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
    },
    /// Show one container.
    Get { id: String },
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

#[derive(Subcommand, Debug)]
pub enum ProjectsCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    List,
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
    },
    List {
        #[arg(long)]
        container: String,
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
    },
    Delete {
        #[arg(long)]
        container: String,
        alias: String,
    },
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
        /// Unix seconds.
        #[arg(long)]
        expires_at: Option<i64>,
    },
    /// Shares created from --container, or all of yours.
    List {
        #[arg(long)]
        container: Option<String>,
    },
    Get {
        #[arg(long)]
        container: String,
        share_id: String,
    },
    /// Change enabled, mode, alias, description, expires-at.
    Update {
        #[arg(long)]
        container: String,
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
        #[arg(long)]
        expires_at: Option<i64>,
    },
    Delete { share_id: String },
    /// Shares offered to --container, or to all of yours.
    Incoming {
        #[arg(long)]
        container: Option<String>,
    },
    /// Mount an incoming share in --container.
    Mount {
        #[arg(long)]
        container: String,
        share_id: String,
    },
    /// Unmount an incoming share from --container (it stays off until mounted again).
    Unmount {
        #[arg(long)]
        container: String,
        share_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServersCmd {
    List,
    Get { id: String },
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
}

impl Api {
    fn connect(cli: &Cli) -> Result<Self, Failure> {
        let data_dir = cli.data_dir.clone().unwrap_or_else(crate::config::default_data_dir);
        let layout = crate::layout::DataLayout::new(&data_dir);
        let base = match &cli.url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let text = std::fs::read(layout.endpoints()).map_err(|e| Failure {
                    message: format!("no HOODY_URL and no running local hoodyd ({}: {e})", layout.endpoints().display()),
                    code: 2,
                })?;
                let eps: crate::layout::Endpoints = serde_json::from_slice(&text)?;
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
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        Ok(Api { base, token, agent })
    }

    /// Calls the API and returns the whole envelope, or the server's message as the failure.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let url = format!("{}/api/v1{path}", self.base);
        let req = self.agent.request(method, &url).set("Authorization", &format!("Bearer {}", self.token));
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(&b.to_string()),
            None => req.call(),
        };
        match result {
            Ok(resp) => Ok(resp.into_json()?),
            Err(ureq::Error::Status(status, resp)) => {
                let envelope: Value = resp.into_json().unwrap_or(Value::Null);
                let message = envelope["message"].as_str().unwrap_or("request failed").to_string();
                let code = envelope["error"]["code"].as_str().unwrap_or("error");
                Err(Failure { message: format!("{message} (HTTP {status}, {code})"), code: 1 })
            }
            Err(e) => Err(Failure { message: format!("cannot reach hoodyd at {}: {e}", self.base), code: 2 }),
        }
    }
}

const CONTAINER_COLUMNS: &[&str] = &["id", "name", "status", "project_id", "server_name", "created_at"];
const PROJECT_COLUMNS: &[&str] = &["id", "name", "created_at"];
const SNAPSHOT_COLUMNS: &[&str] = &["alias", "id", "mode", "created_at", "expires_at", "size_bytes", "new_bytes"];
const SHARE_COLUMNS: &[&str] = &["id", "alias", "source_container_id", "source_path", "mode", "enabled", "target_container_id", "target_project_id"];
const INCOMING_COLUMNS: &[&str] = &["share_id", "container_id", "alias", "mode", "mount", "status", "status_message"];
const SERVER_COLUMNS: &[&str] = &["id", "name", "addresses.http", "addresses.quic", "free_bytes"];
const TOKEN_COLUMNS: &[&str] = &["id", "created_at", "expires_at", "expired"];

/// Runs one command, printing its output; the error carries the exit code.
pub fn run(cli: Cli) -> Result<(), Failure> {
    let api = Api::connect(&cli)?;
    let (envelope, columns) = match &cli.command {
        Command::Containers(cmd) => (containers(&api, cmd)?, CONTAINER_COLUMNS),
        Command::Projects(cmd) => {
            let env = match cmd {
                ProjectsCmd::Create { name, description } => api.call("POST", "/projects", Some(json!({"name": name, "description": description})))?,
                ProjectsCmd::List => api.call("GET", "/projects", None)?,
                ProjectsCmd::Get { id } => api.call("GET", &format!("/projects/{}", encode(id)), None)?,
            };
            (env, PROJECT_COLUMNS)
        }
        Command::Snapshots(cmd) => {
            let base = |c: &str| format!("/containers/{}/snapshots", encode(c));
            let env = match cmd {
                SnapshotsCmd::Create { container, alias, expiry } => api.call("POST", &base(container), Some(json!({"alias": alias, "expiry": expiry})))?,
                SnapshotsCmd::List { container } => api.call("GET", &base(container), None)?,
                SnapshotsCmd::Get { container, alias } => api.call("GET", &format!("{}/{}", base(container), encode(alias)), None)?,
                SnapshotsCmd::Restore { container, alias } => {
                    let env = api.call("PATCH", &format!("{}/{}", base(container), encode(alias)), None)?;
                    if env["data"]["done"] == json!(false) {
                        wait_for_job(&api, container)?;
                    }
                    json!({"statusCode": 200, "message": "restored", "data": env["data"]["snapshot"]})
                }
                SnapshotsCmd::Delete { container, alias } => api.call("DELETE", &format!("{}/{}", base(container), encode(alias)), None)?,
            };
            (env, SNAPSHOT_COLUMNS)
        }
        Command::Storage(cmd) => storage(&api, cmd)?,
        Command::Servers(cmd) => {
            let env = match cmd {
                ServersCmd::List => api.call("GET", "/servers", None)?,
                ServersCmd::Get { id } => api.call("GET", &format!("/servers/{}", encode(id)), None)?,
            };
            (env, SERVER_COLUMNS)
        }
        Command::Tokens(cmd) => {
            let env = match cmd {
                TokensCmd::List => api.call("GET", "/tokens", None)?,
                TokensCmd::Create { expires_in } => api.call("POST", "/tokens", Some(json!({"expires_in": expires_in})))?,
                TokensCmd::Revoke { id } => api.call("DELETE", &format!("/tokens/{}", encode(id)), None)?,
            };
            (env, TOKEN_COLUMNS)
        }
    };
    print_data(&envelope, columns, cli.json);
    Ok(())
}

fn storage(api: &Api, cmd: &StorageCmd) -> Result<(Value, &'static [&'static str]), Failure> {
    let c = |id: &str| format!("/containers/{}", encode(id));
    let without_nulls = |v: Value| -> Value {
        match v {
            Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
            other => other,
        }
    };
    Ok(match cmd {
        StorageCmd::Create { container, source_path, target_container_id, target_project_id, mode, alias, description, expires_at } => {
            let body = without_nulls(json!({"source_path": source_path, "target_container_id": target_container_id, "target_project_id": target_project_id,
                "mode": mode, "alias": alias, "description": description, "expires_at": expires_at}));
            (api.call("POST", &format!("{}/storage/shares", c(container)), Some(body))?, SHARE_COLUMNS)
        }
        StorageCmd::List { container: Some(id) } => (api.call("GET", &format!("{}/storage/shares", c(id)), None)?, SHARE_COLUMNS),
        StorageCmd::List { container: None } => (api.call("GET", "/storage/shares", None)?, SHARE_COLUMNS),
        StorageCmd::Get { container, share_id } => (api.call("GET", &format!("{}/storage/shares/{}", c(container), encode(share_id)), None)?, SHARE_COLUMNS),
        StorageCmd::Update { container, share_id, enabled, mode, alias, description, expires_at } => {
            let body = without_nulls(json!({"enabled": enabled, "mode": mode, "alias": alias, "description": description, "expires_at": expires_at}));
            (api.call("PATCH", &format!("{}/storage/shares/{}", c(container), encode(share_id)), Some(body))?, SHARE_COLUMNS)
        }
        StorageCmd::Delete { share_id } => (api.call("DELETE", &format!("/storage/shares/{}", encode(share_id)), None)?, SHARE_COLUMNS),
        StorageCmd::Incoming { container: Some(id) } => (api.call("GET", &format!("{}/storage/incoming", c(id)), None)?, INCOMING_COLUMNS),
        StorageCmd::Incoming { container: None } => (api.call("GET", "/storage/incoming", None)?, INCOMING_COLUMNS),
        StorageCmd::Mount { container, share_id } | StorageCmd::Unmount { container, share_id } => {
            let mount = matches!(cmd, StorageCmd::Mount { .. });
            (api.call("PATCH", &format!("{}/storage/incoming/{}/mount", c(container), encode(share_id)), Some(json!({"mount": mount})))?, INCOMING_COLUMNS)
        }
    })
}

fn containers(api: &Api, cmd: &ContainersCmd) -> Result<Value, Failure> {
    let op = |id: &str, op: &str| api.call("POST", &format!("/containers/{}/{op}", encode(id)), None);
    match cmd {
        ContainersCmd::Create(a) => {
            let mut env = serde_json::Map::new();
            for pair in &a.env {
                let (k, v) = pair.split_once('=').ok_or_else(|| Failure { message: format!("--env {pair}: expected KEY=VALUE"), code: 2 })?;
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
        ContainersCmd::List { project, server, source_container } => {
            let mut query = Vec::new();
            for (k, v) in [("project_id", project), ("server_id", server), ("source_container_id", source_container)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", encode(v)));
                }
            }
            let q = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            api.call("GET", &format!("/containers{q}"), None)
        }
        ContainersCmd::Get { id } => api.call("GET", &format!("/containers/{}", encode(id)), None),
        ContainersCmd::Delete { id } => api.call("DELETE", &format!("/containers/{}", encode(id)), None),
        ContainersCmd::Start { id } => op(id, "start"),
        ContainersCmd::Stop { id } => op(id, "stop"),
        ContainersCmd::ForceStop { id } => op(id, "force-stop"),
        ContainersCmd::Restart { id } => op(id, "restart"),
        ContainersCmd::Pause { id } => op(id, "pause"),
        ContainersCmd::Resume { id } => op(id, "resume"),
    }
}

/// Waits for a container's background job to end, printing its progress on stderr.
fn wait_for_job(api: &Api, container: &str) -> Result<(), Failure> {
    loop {
        let env = api.call("GET", &format!("/containers/{}", encode(container)), None)?;
        let c = &env["data"];
        match &c["progress"] {
            Value::Null => {
                return match c["status_message"].as_str() {
                    Some(m) if m.contains("failed") => Err(Failure { message: m.to_string(), code: 1 }),
                    _ => Ok(()),
                };
            }
            p => eprint!("\r{} {}/{} bytes", p["phase"].as_str().unwrap_or(""), p["bytes_done"], p["bytes_total"]),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
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

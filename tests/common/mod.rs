//! Starts the real `hoodyd` binary on port 0 in a temp dir and drives it over HTTP.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const HOODYD: &str = env!("CARGO_BIN_EXE_hoodyd");
pub const HOODY: &str = env!("CARGO_BIN_EXE_hoody");

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub url: String,
    pub quic: String,
    pub token: String,
}

/// A response: status and the JSON envelope.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn field(&self) -> &str {
        self.body["error"]["details"]["field"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
    /// Asserts the envelope's shape and that `statusCode` matches the HTTP status.
    pub fn enveloped(self) -> Self {
        assert_eq!(self.body["statusCode"].as_u64(), Some(self.status as u64), "envelope of {self:?}");
        assert!(self.body["message"].is_string(), "message in {self:?}");
        assert!(self.body.get("data").is_some(), "data in {self:?}");
        if self.status >= 400 {
            assert!(self.body["error"]["code"].is_string(), "error.code in {self:?}");
        }
        self
    }
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_in(tempfile::tempdir().expect("tempdir"), &[])
    }

    pub fn start_with(extra: &[&str]) -> Daemon {
        Self::start_in(tempfile::tempdir().expect("tempdir"), extra)
    }

    /// A daemon whose operator lets the admin adopt directories beneath
    /// `adopt_roots` and name cgroups beneath `cgroup_root` (its config file).
    pub fn start_with_host_paths(adopt_roots: &[&Path], cgroup_root: Option<&Path>) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("hoodyd.toml");
        let mut text = format!("adopt_roots = {}\n", serde_json::to_string(&adopt_roots).unwrap());
        if let Some(root) = cgroup_root {
            text.push_str(&format!("cgroup_root = {}\n", serde_json::to_string(root).unwrap()));
        }
        std::fs::write(&config, text).expect("config file");
        let config = config.to_str().expect("a UTF-8 path").to_string();
        Self::start_in(dir, &["--config", &config])
    }

    /// Starts a daemon on an existing data dir (kept by the returned Daemon).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Daemon {
        Self::start_in_with_env(dir, extra, &[])
    }

    /// [`Daemon::start_in`] with environment variables of its own for the daemon.
    pub fn start_in_with_env(dir: tempfile::TempDir, extra: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let endpoints = dir.path().join("run/endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let mut cmd = Command::new(HOODYD);
        cmd.args(["serve", "--data-dir"]).arg(dir.path());
        for (flag, default) in [("--http", "127.0.0.1:0"), ("--quic", "127.0.0.1:0"), ("--node-name", "test-node")] {
            if !extra.contains(&flag) {
                cmd.args([flag, default]);
            }
        }
        // A file, not a pipe: nobody reads a pipe, and a daemon that logs more
        // than a pipe holds would block in its next log line.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("hoodyd.log")).expect("daemon log");
        cmd.args(extra).stdout(Stdio::null()).stderr(log).env_remove("HOODY_URL").env_remove("HOODY_TOKEN");
        cmd.envs(envs.iter().copied());
        let child = cmd.spawn().expect("spawn hoodyd");
        let (http, quic) = wait_for_endpoints(&endpoints, Duration::from_secs(30));
        let token = std::fs::read_to_string(dir.path().join("admin.token")).expect("admin.token").trim().to_string();
        Daemon { dir, child: Some(child), url: format!("http://{http}"), quic, token }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&[u8]>) -> Reply {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        let mut req = agent.request(method, &format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    /// A call with the admin token.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.request(method, &format!("/api/v1{path}"), Some(&self.token), bytes.as_deref()).enveloped()
    }

    pub fn call_as(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.request(method, &format!("/api/v1{path}"), Some(token), bytes.as_deref()).enveloped()
    }

    pub fn project(&self, name: &str) -> String {
        let r = self.call("POST", "/projects", Some(serde_json::json!({ "name": name })));
        assert_eq!(r.status, 201, "{r:?}");
        r.data()["id"].as_str().unwrap().to_string()
    }

    pub fn container(&self, project: &str, name: &str) -> Value {
        let r = self.call("POST", "/containers", Some(serde_json::json!({ "name": name, "project_id": project })));
        assert_eq!(r.status, 201, "{r:?}");
        r.data().clone()
    }

    /// A token of a new account, made with `hoodyd token create` while the daemon runs.
    pub fn token_for(&self, account: &str) -> String {
        let out = Command::new(HOODYD).args(["token", "create", "--account", account, "--data-dir"]).arg(self.data_dir()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends `signal` and waits for the exit status, at most `within`.
    pub fn stop_with(&mut self, signal: i32, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal_and_wait(&mut child, signal, within).unwrap_or_else(|| panic!("hoodyd did not exit within {within:?} of signal {signal}"))
    }

    /// Stops the daemon gracefully and hands back its data dir.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        let status = self.stop_with(libc::SIGTERM, Duration::from_secs(5));
        assert!(status.success(), "hoodyd exited with {status}");
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Gracefully, so that the daemon unmounts its shares: a killed daemon
        // would leave them behind, one per test, for the life of the machine.
        if let Some(mut child) = self.child.take() {
            let _ = signal_and_wait(&mut child, libc::SIGTERM, Duration::from_secs(10));
        }
        if std::thread::panicking() {
            let log = std::fs::read(self.dir.path().join("hoodyd.log")).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(8192)..];
            eprintln!("--- end of the daemon's log ---\n{}", String::from_utf8_lossy(tail));
        }
    }
}

/// Sends `signal` and waits for the exit status; kills the process (and
/// returns `None`) if it has not exited within `within`.
fn signal_and_wait(child: &mut Child, signal: i32, within: Duration) -> Option<std::process::ExitStatus> {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_for_endpoints(path: &Path, within: Duration) -> (String, String) {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                return (v["http"].as_str().unwrap().to_string(), v["quic"].as_str().unwrap().to_string());
            }
        }
        assert!(started.elapsed() < within, "hoodyd did not write {} within {within:?}", path.display());
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn path_of(v: &Value) -> PathBuf {
    PathBuf::from(v["rootfs_path"].as_str().unwrap())
}

/// A digest of a tree for comparisons: per path, kind, mode, owner, size, mtime,
/// content hash or link target.
pub fn tree_digest(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let st = std::fs::symlink_metadata(&abs).unwrap();
        let what = if st.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&abs).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            for n in names {
                if rel.as_os_str().is_empty() && n == ".hoody-restore-staging" {
                    continue;
                }
                stack.push(rel.join(n));
            }
            "dir".to_string()
        } else if st.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&abs).unwrap().display())
        } else if st.is_file() {
            format!("file {}", blake3::hash(&std::fs::read(&abs).unwrap()).to_hex())
        } else {
            format!("special {:o}", st.mode() & libc::S_IFMT)
        };
        let key = if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel.clone() };
        out.insert(key, format!("{what} mode={:o} uid={} gid={} size={} mtime={}.{}", st.mode() & 0o7777, st.uid(), st.gid(), if st.is_file() { st.size() } else { 0 }, st.mtime(), st.mtime_nsec()));
    }
    out
}

/// Fills `dir` with a small but varied tree.
/// `count` files of 8 MiB that do not compress (`blob0`...), so that a
/// snapshot of them takes a while: for tests that act in the middle of one.
pub fn incompressible_blobs(dir: &Path, count: usize, seed: u64) {
    let mut x = seed | 1;
    for f in 0..count {
        let data: Vec<u8> = (0..(8 << 20) / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        std::fs::write(dir.join(format!("blob{f}")), data).unwrap();
    }
}

pub fn small_tree(dir: &Path, seed: u32) {
    std::fs::create_dir_all(dir.join("etc/app")).unwrap();
    std::fs::create_dir_all(dir.join("var/empty")).unwrap();
    for i in 0..30 {
        std::fs::write(dir.join(format!("etc/app/f{i}.conf")), format!("seed {seed} file {i}\n").repeat(50 + i as usize)).unwrap();
    }
    let mut big = vec![0u8; 700_000];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut big);
    std::fs::write(dir.join("var/blob.bin"), &big).unwrap();
    let _ = std::os::unix::fs::symlink("app/f1.conf", dir.join("etc/link"));
}

impl Daemon {
    pub fn snapshot(&self, container: &str, alias: &str) -> Reply {
        self.call("POST", &format!("/containers/{container}/snapshots"), Some(serde_json::json!({ "alias": alias })))
    }

    pub fn restore(&self, container: &str, alias: &str) -> Reply {
        self.call("PATCH", &format!("/containers/{container}/snapshots/{alias}"), None)
    }

    pub fn hoodyd(&self, args: &[&str]) -> std::process::Output {
        Command::new(HOODYD).args(args).arg("--data-dir").arg(self.data_dir()).output().unwrap()
    }
}

/// The environment variable that turns every skip into a failure: CI sets it
/// (`.ci/run`), so a test that cannot run there fails instead of passing unseen.
pub const REQUIRE_ALL: &str = "HOODY_REQUIRE_ALL";

/// A test that cannot run on this machine (no `/dev/fuse`, not root, no cgroup
/// freezer, no loop device...): says why in the test's own output (`println!`,
/// which libtest shows with the test) and returns, for `return` after it; with
/// `HOODY_REQUIRE_ALL=1`, fails the test instead. Every environment skip of the
/// tests goes through here.
pub fn skip(reason: &str) {
    if std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1") {
        panic!("cannot run on this machine ({reason}), and {REQUIRE_ALL}=1 forbids skipping");
    }
    println!("SKIP: {reason}");
}

/// Several daemons on this machine, each with its own data dir, ports and
/// identity, started in parallel: the seam for cluster tests (issue 18 points
/// them at one catalog). Dropped, each stops and its mounts go.
pub struct Nodes {
    pub nodes: Vec<Daemon>,
}

impl Nodes {
    pub fn start(n: usize) -> Nodes {
        let starting: Vec<_> = (0..n).map(|_| std::thread::spawn(Daemon::start)).collect();
        Nodes { nodes: starting.into_iter().map(|t| t.join().expect("a node started")).collect() }
    }
}

impl std::ops::Index<usize> for Nodes {
    type Output = Daemon;
    fn index(&self, i: usize) -> &Daemon {
        &self.nodes[i]
    }
}

/// A cluster on this machine: a real etcd and `n` real daemons, the first
/// made a cluster by `hoodyd cluster init`, the others admitted by join
/// tokens (`hoodyd serve --join`), each named `node<k>`.
pub struct Cluster {
    pub etcd: hoodyd::catalog::etcd::LocalEtcd,
    pub nodes: Vec<Daemon>,
}

impl Cluster {
    /// `None` (after [`skip`]) where etcd cannot run.
    pub fn start(n: usize) -> Option<Cluster> {
        let etcd = match hoodyd::catalog::etcd::LocalEtcd::new() {
            Ok(e) => e,
            Err(reason) => {
                skip(&reason);
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let init = Command::new(HOODYD).args(["init", "--node-name", "node1", "--data-dir"]).arg(dir.path()).output().unwrap();
        assert!(init.status.success(), "hoodyd init: {}", String::from_utf8_lossy(&init.stderr));
        let made = Command::new(HOODYD).args(["cluster", "init", "--etcd", &etcd.url(), "--data-dir"]).arg(dir.path()).output().unwrap();
        assert!(made.status.success(), "hoodyd cluster init: {}", String::from_utf8_lossy(&made.stderr));
        let first = Daemon::start_in(dir, &["--node-name", "node1"]);
        let mut cluster = Cluster { etcd, nodes: vec![first] };
        for _ in 1..n {
            cluster.add();
        }
        cluster.wait_online(n, Duration::from_secs(20));
        Some(cluster)
    }

    /// A one-time join token from node 1 (which holds the CA key).
    pub fn join_token(&self) -> String {
        let r = self.nodes[0].call("POST", "/cluster/join-tokens", Some(serde_json::json!({})));
        assert_eq!(r.status, 201, "{r:?}");
        r.data()["token"].as_str().unwrap().to_string()
    }

    /// Admits one more node; its index.
    pub fn add(&mut self) -> usize {
        let token = self.join_token();
        let name = format!("node{}", self.nodes.len() + 1);
        let node = Daemon::start_in(tempfile::tempdir().expect("tempdir"), &["--node-name", &name, "--join", &token]);
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The node id of node `i` (from its data dir).
    pub fn id(&self, i: usize) -> String {
        let node: Value = serde_json::from_slice(&std::fs::read(self.nodes[i].data_dir().join("state/node.json")).unwrap()).unwrap();
        node["id"].as_str().unwrap().to_string()
    }

    /// `(name, state)` of every server, as node `via` lists them.
    pub fn states(&self, via: usize) -> Vec<(String, String)> {
        let r = self.nodes[via].call("GET", "/servers", None);
        assert_eq!(r.status, 200, "{r:?}");
        r.data().as_array().unwrap().iter().map(|s| (s["name"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string())).collect()
    }

    pub fn wait_online(&self, count: usize, within: Duration) {
        let started = Instant::now();
        loop {
            let states = self.states(0);
            if states.iter().filter(|(_, s)| s == "online").count() >= count {
                return;
            }
            assert!(started.elapsed() < within, "not {count} servers online within {within:?}: {states:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

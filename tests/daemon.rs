//! The daemon as a process: first start, restart, signals, configuration, tokens,
//! and recovery of work a crash interrupted.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{path_of, wait_for_endpoints, Daemon, HOODYD};
use serde_json::json;

#[test]
fn first_start_writes_endpoints_and_a_private_admin_token() {
    let d = Daemon::start();
    let mode = std::fs::metadata(d.data_dir().join("admin.token")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(d.token.starts_with("hoody_"));
    let eps: serde_json::Value = serde_json::from_slice(&std::fs::read(d.data_dir().join("run/endpoints.json")).unwrap()).unwrap();
    assert_eq!(format!("http://{}", eps["http"].as_str().unwrap()), d.url);
    assert!(eps["quic"].as_str().unwrap().starts_with("127.0.0.1:"));
    for dir in ["containers", "store", "state", "tls"] {
        assert!(d.data_dir().join(dir).is_dir(), "{dir}");
    }
    let catalog = std::fs::read(d.data_dir().join("catalog.db")).unwrap();
    let secret = d.token.rsplit('_').next().unwrap();
    assert!(!String::from_utf8_lossy(&catalog).contains(secret), "token secret stored in clear");
}

#[test]
fn data_survives_a_restart_and_the_token_stays_valid() {
    let d = Daemon::start();
    let p = d.project("p");
    let c = d.container(&p, "keep-me");
    let id = c["id"].as_str().unwrap().to_string();
    d.call("POST", &format!("/containers/{id}/stop"), None);
    let token = d.token.clone();
    let dir = d.into_dir();
    assert!(!dir.path().join("run/endpoints.json").exists(), "a clean stop removes endpoints.json");

    let d = Daemon::start_in(dir, &[]);
    assert_eq!(d.token, token, "admin.token is written once");
    let got = d.call("GET", &format!("/containers/{id}"), None);
    assert_eq!(got.status, 200);
    assert_eq!(got.data()["name"], "keep-me");
    assert_eq!(got.data()["status"], "stopped");
    assert!(path_of(got.data()).is_dir());
    assert_eq!(d.call("GET", &format!("/projects/{p}"), None).status, 200);
}

#[test]
fn sigterm_and_sigint_stop_the_daemon_with_exit_0_within_5_s() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut d = Daemon::start();
        let p = d.project("p");
        d.container(&p, "c");
        let started = Instant::now();
        let status = d.stop_with(signal, Duration::from_secs(5));
        assert!(status.success(), "signal {signal}: {status}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let d = Daemon::start();
    let out = Command::new(HOODYD)
        .args(["serve", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--data-dir"])
        .arg(d.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another hoodyd"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.call("GET", "/containers", None).status, 200, "the first keeps serving");
}

#[test]
fn token_create_works_with_and_without_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let offline = Command::new(HOODYD).args(["token", "create", "--account", "carol", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
    let carol = String::from_utf8(offline.stdout).unwrap().trim().to_string();
    let d = Daemon::start_in(dir, &[]);
    assert_eq!(d.call_as(&carol, "GET", "/containers", None).status, 200);
    let online = d.token_for("dave");
    assert_eq!(d.call_as(&online, "POST", "/projects", Some(json!({"name": "x"}))).status, 201);
    assert_eq!(d.call_as(&carol, "GET", "/projects", None).body["total"], 0, "accounts are separate");
    let bad = Command::new(HOODYD).args(["token", "create", "--account", "", "--data-dir"]).arg(d.data_dir()).output().unwrap();
    assert!(!bad.status.success());
}

#[test]
fn config_file_env_and_flags_layer_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoodyd.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, format!("data_dir = {:?}\nhttp = \"127.0.0.1:0\"\nquic = \"127.0.0.1:0\"\nnode_name = \"from-file\"\n", data)).unwrap();
    let child = Command::new(HOODYD)
        .args(["serve", "--config"])
        .arg(&config)
        .env("HOODY_NODE_NAME", "from-env")
        .env("HOODY_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (http, _) = wait_for_endpoints(&data.join("run/endpoints.json"), Duration::from_secs(30));
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let resp: serde_json::Value = ureq::get(&format!("http://{http}/api/v1/servers")).set("Authorization", &format!("Bearer {}", token.trim())).call().unwrap().into_json().unwrap();
    assert_eq!(resp["data"][0]["name"], "from-env", "env wins over the file");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("\"http\":\"{http}\"")), "prints its endpoints: {stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().expect("a log line");
    let line: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert!(line["level"].is_string() && line["fields"]["message"].is_string(), "{line}");

    let bad = Command::new(HOODYD).args(["serve", "--config"]).arg(dir.path().join("missing.toml")).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("missing.toml"));
}

#[test]
fn a_start_after_a_crash_finishes_deletions_and_removes_orphan_rootfs() {
    let d = Daemon::start();
    let p = d.project("p");
    let doomed = d.container(&p, "doomed");
    let kept = d.container(&p, "kept");
    let doomed_id = doomed["id"].as_str().unwrap().to_string();
    let mut d = d;
    d.stop_with(libc::SIGKILL, Duration::from_secs(5));
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);

    // What a crash can leave: a deletion marked but not done, a rootfs without record.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let catalog = hoodyd::daemon::bootstrap::open_catalog(&hoodyd::layout::DataLayout::new(dir.path())).await.unwrap();
        let mut rec = catalog.container(&doomed_id).await.unwrap().unwrap();
        rec.status = hoodyd::containers::ContainerStatus::Deleting;
        catalog.put_container(&rec).await.unwrap();
    });
    let orphan = dir.path().join("containers/0123456789abcdef01234567/rootfs");
    std::fs::create_dir_all(&orphan).unwrap();

    let d = Daemon::start_in(dir, &[]);
    assert!(!orphan.parent().unwrap().exists(), "orphan rootfs removed at start");
    assert!(!path_of(&doomed).exists(), "interrupted deletion finished");
    assert_eq!(d.call("GET", &format!("/containers/{doomed_id}"), None).status, 404);
    assert_eq!(d.call("GET", &format!("/containers/{}", kept["id"].as_str().unwrap()), None).status, 200);
    assert!(path_of(&kept).is_dir());
}

#[test]
fn concurrent_requests_are_safe() {
    let d = Daemon::start();
    let p = d.project("p");
    std::thread::scope(|s| {
        for t in 0..8 {
            let (d, p) = (&d, &p);
            s.spawn(move || {
                for i in 0..10 {
                    d.container(p, &format!("c-{t}-{i}"));
                }
            });
        }
    });
    let list = d.call("GET", "/containers", None);
    assert_eq!(list.body["total"], 80);
    let id = list.data()[0]["id"].as_str().unwrap().to_string();
    // Racing transitions: exactly one `pause` wins from `running`.
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| d.call("POST", &format!("/containers/{id}/pause"), None).status)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).filter(|s| *s == 200).count()
    });
    assert_eq!(wins, 1);
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

fn set_mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every regular file and directory of the data dir, containers/ not entered.
fn daemon_files(root: &std::path::Path) -> Vec<(std::path::PathBuf, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let st = std::fs::symlink_metadata(&path).unwrap();
            if st.is_dir() {
                out.push((path.clone(), true));
                if path != root.join("containers") {
                    stack.push(path);
                }
            } else if st.is_file() {
                out.push((path, false));
            }
        }
    }
    out
}

/// At rest: the data dir is 0700 and the daemon's files 0600 (its directories
/// 0700), fixed at start when found otherwise; a container's files keep theirs.
#[test]
fn the_data_dir_is_private_and_a_start_makes_loose_files_private_again() {
    let d = Daemon::start();
    let p = d.project("p");
    let c = d.container(&p, "c");
    let id = c["id"].as_str().unwrap().to_string();
    let rootfs = path_of(&c);
    std::fs::write(rootfs.join("public.txt"), b"the container's own file").unwrap();
    set_mode(&rootfs.join("public.txt"), 0o644);
    set_mode(&rootfs, 0o755);
    assert_eq!(d.snapshot(&id, "s").status, 201);
    let root = d.data_dir().to_path_buf();
    assert_eq!(mode_of(&root), 0o700, "the data dir");
    let packs = root.join("store/packs");
    let store_files: Vec<_> = std::fs::read_dir(&packs).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(store_files.iter().any(|f| f.extension().is_some_and(|e| e == "pack")) && store_files.iter().any(|f| f.extension().is_some_and(|e| e == "idx")), "{store_files:?}");
    for file in store_files.iter().chain([&root.join("catalog.db"), &root.join("admin.token"), &root.join("tls/ca.key"), &root.join("run/endpoints.json")]) {
        assert_eq!(mode_of(file), 0o600, "{}", file.display());
    }
    for file in ["catalog.db-wal", "catalog.db-shm"] {
        if root.join(file).exists() {
            assert_eq!(mode_of(&root.join(file)), 0o600, "{file}");
        }
    }

    // Loosened while stopped (an older version, an operator): the next start fixes them.
    let dir = d.into_dir();
    let root = dir.path().to_path_buf();
    set_mode(&root, 0o755);
    set_mode(&root.join("catalog.db"), 0o644);
    set_mode(&packs, 0o755);
    for f in &store_files {
        set_mode(f, 0o644);
    }
    let stat_caches: Vec<_> = std::fs::read_dir(root.join("state/statcache")).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    for f in &stat_caches {
        set_mode(f, 0o644);
    }
    std::fs::write(root.join("state/left-by-someone"), b"x").unwrap();
    set_mode(&root.join("state/left-by-someone"), 0o666);

    let d = Daemon::start_in(dir, &[]);
    assert_eq!(mode_of(&root), 0o700, "the data dir");
    let files = daemon_files(&root);
    assert!(files.len() > 10, "{files:?}");
    for (path, is_dir) in &files {
        assert_eq!(mode_of(path), if *is_dir { 0o700 } else { 0o600 }, "{}", path.display());
    }
    assert_eq!(mode_of(&rootfs.join("public.txt")), 0o644, "a file in a container is the container's");
    assert_eq!(mode_of(&rootfs), 0o755, "a rootfs is the container's");
    assert_eq!(d.call("GET", &format!("/containers/{id}"), None).status, 200);
}

/// `/healthz` is `ok` only while the store (and the catalog) answer: without
/// its packs it is `503`, naming the store and no host path.
#[test]
fn healthz_is_503_naming_the_store_while_the_store_fails() {
    let d = Daemon::start();
    let health = d.request("GET", "/healthz", None, None).enveloped();
    assert_eq!((health.status, health.data()["status"].as_str()), (200, Some("ok")), "{health:?}");
    let packs = d.data_dir().join("store/packs");
    let away = d.data_dir().join("store/packs-away");
    std::fs::rename(&packs, &away).unwrap();
    let sick = d.request("GET", "/healthz", None, None).enveloped();
    std::fs::rename(&away, &packs).unwrap();
    assert_eq!((sick.status, sick.code()), (503, "unavailable"), "{sick:?}");
    assert!(sick.message().contains("store") && !sick.message().contains("catalog"), "{sick:?}");
    assert!(!sick.body.to_string().contains(d.data_dir().to_str().unwrap()), "names a host path: {sick:?}");
    let again = d.request("GET", "/healthz", None, None).enveloped();
    assert_eq!(again.status, 200, "{again:?}");
}

/// A restore that fails on a file of the container (here an immutable one)
/// says which, as the container sees it, and never the host's path; the log
/// has the whole error.
#[test]
fn a_failed_restore_names_the_path_in_the_container_not_on_the_host() {
    let d = Daemon::start();
    let p = d.project("p");
    let c = d.container(&p, "c");
    let id = c["id"].as_str().unwrap().to_string();
    let rootfs = path_of(&c);
    d.call("POST", &format!("/containers/{id}/stop"), None);
    let locked = rootfs.join("locked.txt");
    std::fs::write(&locked, b"before").unwrap();
    assert_eq!(d.snapshot(&id, "before").status, 201);
    std::fs::write(&locked, b"after").unwrap();
    struct Mutable(std::path::PathBuf);
    impl Drop for Mutable {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
    }
    let immutable = Command::new("chattr").arg("+i").arg(&locked).output();
    if !immutable.is_ok_and(|out| out.status.success()) {
        common::skip("chattr +i (root, e2fsprogs, a filesystem with the immutable flag) is needed to make a restore fail");
        return;
    }
    let _mutable = Mutable(locked.clone());
    let r = d.restore(&id, "before");
    let host = d.data_dir().to_str().unwrap().to_string();
    assert_eq!(r.status, 500, "{r:?}");
    assert!(!r.body.to_string().contains(&host), "the answer names a host path: {r:?}");
    assert!(r.message().starts_with("restore failed: /locked.txt") && r.message().contains("Operation not permitted"), "{r:?}");
    let after = d.call("GET", &format!("/containers/{id}"), None);
    let status_message = after.data()["status_message"].as_str().unwrap_or("");
    assert!(status_message.starts_with("restore failed: /") && !status_message.contains(&host), "{after:?}");
    let log = std::fs::read_to_string(d.data_dir().join("hoodyd.log")).unwrap();
    assert!(log.contains("restore failed") && log.contains("locked.txt"), "the whole error is logged");
    drop(_mutable);

    // Failing on the rootfs itself (a file now): still no host path.
    let away = rootfs.with_file_name("rootfs-away");
    std::fs::rename(&rootfs, &away).unwrap();
    std::fs::write(&rootfs, b"not a directory").unwrap();
    let r = d.restore(&id, "before");
    std::fs::remove_file(&rootfs).unwrap();
    std::fs::rename(&away, &rootfs).unwrap();
    assert!(r.status >= 400, "{r:?}");
    assert!(!r.body.to_string().contains(&host), "the answer names a host path: {r:?}");
    assert_eq!(d.restore(&id, "before").status, 200);
    assert_eq!(std::fs::read(&locked).unwrap(), b"before");
}

#[test]
fn several_nodes_run_side_by_side_each_on_its_own_data_dir() {
    let nodes = common::Nodes::start(3);
    let mut ids = std::collections::BTreeSet::new();
    for node in &nodes.nodes {
        let servers = node.call("GET", "/servers", None);
        assert_eq!(servers.status, 200, "{servers:?}");
        ids.insert(servers.data()[0]["id"].as_str().unwrap().to_string());
        assert_eq!(node.call("POST", "/projects", Some(serde_json::json!({"name": "p"}))).status, 201);
    }
    assert_eq!(ids.len(), 3, "each node has an identity of its own");
    let urls: std::collections::BTreeSet<_> = nodes.nodes.iter().map(|n| n.url.clone()).collect();
    assert_eq!(urls.len(), 3);
}

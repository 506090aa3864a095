//! The `hoody` command line against a real daemon.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Daemon, HOODY};

fn hoody(d: &Daemon, args: &[&str]) -> Output {
    Command::new(HOODY).args(args).env("HOODY_URL", &d.url).env("HOODY_TOKEN", &d.token).output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

#[test]
fn projects_and_containers_through_the_cli() {
    let d = Daemon::start();
    let project = json(hoody(&d, &["--json", "projects", "create", "--name", "web"]));
    let p = project["id"].as_str().unwrap();
    assert_eq!(json(hoody(&d, &["--json", "projects", "get", p]))["name"], "web");
    let table = ok(hoody(&d, &["projects", "list"]));
    assert!(table.starts_with("ID") && table.contains("web"), "{table}");

    let c = json(hoody(&d, &["--json", "containers", "create", "--name", "api", "--project", p, "--env", "A=1"]));
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["env"]["A"], "1");
    let table = ok(hoody(&d, &["containers", "list", "--project", p]));
    assert!(table.lines().next().unwrap().contains("STATUS") && table.contains(id) && table.contains("running"), "{table}");
    for (verb, status) in [("stop", "stopped"), ("start", "running"), ("restart", "running"), ("pause", "paused"), ("resume", "running"), ("force-stop", "stopped")] {
        assert_eq!(json(hoody(&d, &["--json", "containers", verb, id]))["status"], status, "{verb}");
    }
    let shown = ok(hoody(&d, &["containers", "get", id]));
    assert!(shown.contains("rootfs_path") && shown.contains("stopped"), "{shown}");
    ok(hoody(&d, &["containers", "delete", id]));
    assert_eq!(json(hoody(&d, &["--json", "containers", "list"])).as_array().unwrap().len(), 0);
    assert!(ok(hoody(&d, &["servers", "list"])).contains("test-node"));
}

#[test]
fn errors_exit_non_zero_with_the_servers_message() {
    let d = Daemon::start();
    let out = hoody(&d, &["containers", "get", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("container `nope` not found") && err.contains("404"), "{err}");
    let out = hoody(&d, &["containers", "start", "nope"]);
    assert!(!out.status.success());
    let out = Command::new(HOODY).args(["containers", "list"]).env("HOODY_URL", &d.url).env("HOODY_TOKEN", "hoody_x_y").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = Command::new(HOODY).args(["containers", "list"]).env("HOODY_URL", "http://127.0.0.1:1").env("HOODY_TOKEN", "t").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "unreachable daemon");
}

#[test]
fn falls_back_to_the_local_nodes_endpoints_and_admin_token() {
    let d = Daemon::start();
    let out = Command::new(HOODY)
        .args(["--json", "projects", "create", "--name", "local"])
        .env_remove("HOODY_URL")
        .env_remove("HOODY_TOKEN")
        .env("HOODY_DATA_DIR", d.data_dir())
        .output()
        .unwrap();
    assert_eq!(json(out)["name"], "local");
    assert_eq!(d.call("GET", "/projects", None).body["total"], 1);
}

#[test]
fn snapshots_through_the_cli() {
    let d = Daemon::start();
    let p = json(hoody(&d, &["--json", "projects", "create", "--name", "s"]))["id"].as_str().unwrap().to_string();
    let c = json(hoody(&d, &["--json", "containers", "create", "--name", "c", "--project", &p]));
    let (id, rootfs) = (c["id"].as_str().unwrap().to_string(), std::path::PathBuf::from(c["rootfs_path"].as_str().unwrap()));
    std::fs::write(rootfs.join("a.txt"), b"version 1").unwrap();
    let s = json(hoody(&d, &["--json", "snapshots", "create", "--container", &id, "--alias", "v1", "--expiry", "7"]));
    assert_eq!(s["alias"], "v1");
    assert!(s["expires_at"].is_string());
    let table = ok(hoody(&d, &["snapshots", "list", "--container", &id]));
    assert!(table.starts_with("ALIAS") && table.contains("v1") && table.contains("stateless"), "{table}");
    assert_eq!(json(hoody(&d, &["--json", "snapshots", "get", "--container", &id, "v1"]))["id"], s["id"]);
    std::fs::write(rootfs.join("a.txt"), b"version 2").unwrap();
    ok(hoody(&d, &["snapshots", "restore", "--container", &id, "v1"]));
    assert_eq!(std::fs::read(rootfs.join("a.txt")).unwrap(), b"version 1");
    ok(hoody(&d, &["snapshots", "delete", "--container", &id, "v1"]));
    let out = hoody(&d, &["snapshots", "get", "--container", &id, "v1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[test]
fn storage_shares_through_the_cli() {
    if !std::path::Path::new("/dev/fuse").exists() {
        common::skip("/dev/fuse is absent");
        return;
    }
    let d = Daemon::start();
    let p = json(hoody(&d, &["--json", "projects", "create", "--name", "s"]))["id"].as_str().unwrap().to_string();
    let src = json(hoody(&d, &["--json", "containers", "create", "--name", "src", "--project", &p]));
    let dst = json(hoody(&d, &["--json", "containers", "create", "--name", "dst", "--project", &p]));
    let (s, t) = (src["id"].as_str().unwrap(), dst["id"].as_str().unwrap());
    std::fs::create_dir_all(std::path::Path::new(src["rootfs_path"].as_str().unwrap()).join("data")).unwrap();
    let share = json(hoody(&d, &["--json", "storage", "create", "--container", s, "--source-path", "/data", "--target-container-id", t, "--mode", "readwrite"]));
    let id = share["id"].as_str().unwrap();
    assert!(ok(hoody(&d, &["storage", "list", "--container", s])).contains(id));
    assert!(ok(hoody(&d, &["storage", "list"])).contains(id));
    assert_eq!(json(hoody(&d, &["--json", "storage", "get", "--container", s, id]))["alias"], "data");
    let incoming = ok(hoody(&d, &["storage", "incoming", "--container", t]));
    assert!(incoming.contains(id) && incoming.contains("active"), "{incoming}");
    assert_eq!(json(hoody(&d, &["--json", "storage", "unmount", "--container", t, id]))["status"], "unmounted");
    assert_eq!(json(hoody(&d, &["--json", "storage", "mount", "--container", t, id]))["status"], "active");
    assert_eq!(json(hoody(&d, &["--json", "storage", "update", "--container", s, "--share-id", id, "--enabled", "false"]))["enabled"], false);
    ok(hoody(&d, &["storage", "delete", id, "--yes"]));
    assert_eq!(json(hoody(&d, &["--json", "storage", "list"])).as_array().unwrap().len(), 0);
}

/// `hoody` without a daemon (completions, man).
fn hoody_alone(args: &[&str]) -> Output {
    Command::new(HOODY).args(args).env_remove("HOODY_URL").env_remove("HOODY_TOKEN").env("HOODY_DATA_DIR", "/nonexistent").output().unwrap()
}

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn storage_speaks_the_docs_verbs() {
    if !std::path::Path::new("/dev/fuse").exists() {
        common::skip("/dev/fuse is absent");
        return;
    }
    let d = Daemon::start();
    let p = json(hoody(&d, &["--json", "projects", "create", "--name", "s"]))["id"].as_str().unwrap().to_string();
    let src = json(hoody(&d, &["--json", "containers", "create", "--name", "src", "--project", &p]));
    let dst = json(hoody(&d, &["--json", "containers", "create", "--name", "dst", "--project", &p]));
    let other = json(hoody(&d, &["--json", "containers", "create", "--name", "other", "--project", &p]));
    let (s, t, o) = (src["id"].as_str().unwrap(), dst["id"].as_str().unwrap(), other["id"].as_str().unwrap());
    for dir in ["data", "logs"] {
        std::fs::create_dir_all(std::path::Path::new(src["rootfs_path"].as_str().unwrap()).join(dir)).unwrap();
    }
    let one = json(hoody(&d, &["--json", "storage", "create", "--container", s, "--source-path", "/data", "--target-container-id", t]));
    let two = json(hoody(&d, &["--json", "storage", "create", "--container", s, "--source-path", "/logs", "--target-container-id", o]));
    let (one, two) = (one["id"].as_str().unwrap(), two["id"].as_str().unwrap());

    // `storage list incoming --container ID`: what is offered to that container only.
    let incoming = ok(hoody(&d, &["storage", "list", "incoming", "--container", t]));
    assert!(incoming.starts_with("SHARE_ID") && incoming.contains(one) && !incoming.contains(two), "{incoming}");
    // `storage list-all` and `storage list-all incoming`: across all of the caller's containers.
    let all = ok(hoody(&d, &["storage", "list-all"]));
    assert!(all.starts_with("ID") && all.contains(one) && all.contains(two), "{all}");
    let all_incoming = json(hoody(&d, &["--json", "storage", "list-all", "incoming"]));
    let ids: Vec<&str> = all_incoming.as_array().unwrap().iter().map(|i| i["share_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&one) && ids.contains(&two), "{all_incoming}");
    // --limit/--offset on them.
    let page = json(hoody(&d, &["--json", "storage", "list-all", "--limit", "1"]));
    assert_eq!(page.as_array().unwrap().len(), 1, "{page}");
    let rest = json(hoody(&d, &["--json", "storage", "list-all", "--offset", "1"]));
    assert_eq!(rest.as_array().unwrap().len(), 1, "{rest}");
    assert_ne!(page[0]["id"], rest[0]["id"]);
    assert_eq!(json(hoody(&d, &["--json", "storage", "list-all", "incoming", "--limit", "1", "--offset", "1"])).as_array().unwrap().len(), 1);
    assert_eq!(json(hoody(&d, &["--json", "storage", "list", "--container", s, "--offset", "2"])).as_array().unwrap().len(), 0);

    // Today's spellings still work.
    assert!(ok(hoody(&d, &["storage", "incoming", "--container", t])).contains(one));
    assert_eq!(json(hoody(&d, &["--json", "storage", "list"])).as_array().unwrap().len(), 2);

    // Delete asks: without --yes and without a terminal it refuses, and nothing is deleted.
    let out = Command::new(HOODY).args(["storage", "delete", one]).env("HOODY_URL", &d.url).env("HOODY_TOKEN", &d.token).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(err(&out).contains("--yes") && err(&out).contains("terminal"), "{}", err(&out));
    assert_eq!(json(hoody(&d, &["--json", "storage", "list-all"])).as_array().unwrap().len(), 2);
    ok(hoody(&d, &["storage", "delete", one, "--yes"]));
    ok(hoody(&d, &["storage", "delete", "-y", two]));
    assert_eq!(json(hoody(&d, &["--json", "storage", "list-all"])).as_array().unwrap().len(), 0);
}

#[test]
fn every_list_takes_limit_and_offset() {
    let d = Daemon::start();
    let p = json(hoody(&d, &["--json", "projects", "create", "--name", "a"]))["id"].as_str().unwrap().to_string();
    ok(hoody(&d, &["projects", "create", "--name", "b"]));
    ok(hoody(&d, &["projects", "create", "--name", "c"]));
    let names = |out: Output| -> Vec<String> { json(out).as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect() };
    assert_eq!(names(hoody(&d, &["--json", "projects", "list", "--limit", "2"])).len(), 2);
    assert_eq!(names(hoody(&d, &["--json", "projects", "list", "--offset", "2"])).len(), 1);
    assert_eq!(names(hoody(&d, &["--json", "projects", "list", "--limit", "1", "--offset", "1"])).len(), 1);
    let table = ok(hoody(&d, &["projects", "list", "--limit", "1"]));
    assert_eq!(table.lines().count(), 2, "{table}");
    for name in ["x", "y"] {
        ok(hoody(&d, &["containers", "create", "--name", name, "--project", &p]));
    }
    assert_eq!(names(hoody(&d, &["--json", "containers", "list", "--project", &p, "--limit", "1"])).len(), 1);
    assert_eq!(names(hoody(&d, &["--json", "containers", "list", "--offset", "1"])).len(), 1);
    let c = json(hoody(&d, &["--json", "containers", "list", "--limit", "1"]))[0]["id"].as_str().unwrap().to_string();
    for alias in ["s1", "s2", "s3"] {
        ok(hoody(&d, &["snapshots", "create", "--container", &c, "--alias", alias]));
    }
    let snaps = json(hoody(&d, &["--json", "snapshots", "list", "--container", &c, "--limit", "2", "--offset", "1"]));
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    assert_eq!(json(hoody(&d, &["--json", "servers", "list", "--limit", "1"])).as_array().unwrap().len(), 1);
    assert_eq!(json(hoody(&d, &["--json", "servers", "list", "--offset", "1"])).as_array().unwrap().len(), 0);
    assert_eq!(json(hoody(&d, &["--json", "tokens", "list", "--limit", "0"])).as_array().unwrap().len(), 0);
    let out = hoody(&d, &["projects", "list", "--limit", "many"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses a non-number");
}

#[test]
fn containers_update_renames_and_sets_env_and_resources() {
    let d = Daemon::start();
    let p = json(hoody(&d, &["--json", "projects", "create", "--name", "u"]))["id"].as_str().unwrap().to_string();
    let c = json(hoody(&d, &["--json", "containers", "create", "--name", "api", "--project", &p, "--env", "A=1", "--env", "B=2"]));
    let id = c["id"].as_str().unwrap();
    let u = json(hoody(&d, &["--json", "containers", "update", id, "--name", "api-v2", "--env", "B=3", "--env", "C=x=y", "--cpu", "2", "--memory", "512MiB"]));
    assert_eq!(u["name"], "api-v2");
    assert_eq!(u["env"], serde_json::json!({"A": "1", "B": "3", "C": "x=y"}), "env is merged into the container's");
    assert_eq!(u["resources"], serde_json::json!({"cpu": 2, "memory": "512MiB"}));
    let u = json(hoody(&d, &["--json", "containers", "update", id, "--unset-env", "A", "--resource", "disk=10", "--resource", "memory="]));
    assert_eq!(u["name"], "api-v2");
    assert_eq!(u["env"], serde_json::json!({"B": "3", "C": "x=y"}));
    assert_eq!(u["resources"], serde_json::json!({"cpu": 2, "disk": 10}));
    assert_eq!(json(hoody(&d, &["--json", "containers", "get", id]))["name"], "api-v2");
    let table = ok(hoody(&d, &["containers", "update", id, "--name", "api-v3"]));
    assert!(table.contains("api-v3"), "{table}");
    let out = hoody(&d, &["containers", "update", id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("nothing to update"), "{}", err(&out));
    let out = hoody(&d, &["containers", "update", id, "--env", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("KEY=VALUE"), "{}", err(&out));
}

#[test]
fn completions_and_man_page_come_from_the_same_definitions() {
    let bash = ok(hoody_alone(&["completions", "bash"]));
    assert!(bash.contains("hoody") && bash.contains("complete") && bash.contains("list-all"), "{bash}");
    let zsh = ok(hoody_alone(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef hoody"), "{zsh}");
    let fish = ok(hoody_alone(&["completions", "fish"]));
    assert!(fish.contains("complete -c hoody"), "{fish}");
    assert!(!hoody_alone(&["completions", "tcsh"]).status.success());

    let man = ok(hoody_alone(&["man"]));
    assert!(man.contains(".TH hoody") && man.contains(".SH NAME") && man.contains("storage"), "{man}");
    let dir = tempfile::tempdir().unwrap();
    ok(hoody_alone(&["man", "--out", dir.path().to_str().unwrap()]));
    for page in ["hoody.1", "hoody-storage.1", "hoody-storage-list-all.1", "hoody-containers-update.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}

#[test]
fn snapshots_create_and_restore_wait_on_the_job() {
    let d = Daemon::start();
    let p = json(hoody(&d, &["--json", "projects", "create", "--name", "w"]))["id"].as_str().unwrap().to_string();
    let c = json(hoody(&d, &["--json", "containers", "create", "--name", "c", "--project", &p]));
    let (id, rootfs) = (c["id"].as_str().unwrap().to_string(), common::path_of(&c));
    common::small_tree(&rootfs, 1);

    let out = hoody(&d, &["snapshots", "create", "--container", &id, "--alias", "small", "--wait"]);
    let table = ok(out.clone());
    assert!(table.contains("alias") && table.contains("small"), "{table}");
    let last = err(&out);
    assert!(last.contains("snapshot small done"), "a last line instead of a bar off a terminal: {last}");

    // A bigger one, which the daemon may well answer 202 for: the CLI waits and prints the snapshot.
    common::incompressible_blobs(&rootfs, 4, 7);
    let s = json(hoody(&d, &["--json", "snapshots", "create", "--container", &id, "--alias", "big", "--wait"]));
    assert_eq!(s["alias"], "big");
    assert!(s["size_bytes"].as_u64().unwrap() > 32 << 20, "{s}");
    assert_eq!(json(hoody(&d, &["--json", "snapshots", "get", "--container", &id, "big"]))["id"], s["id"]);

    // A client timeout shorter than the job: the CLI waits on the container's progress, not on the answer.
    common::incompressible_blobs(&rootfs.join("var"), 8, 8);
    let impatient = |args: &[&str]| Command::new(HOODY).args(args).env("HOODY_URL", &d.url).env("HOODY_TOKEN", &d.token).env("HOODY_TIMEOUT", "0.02").output().unwrap();
    let out = impatient(&["--json", "snapshots", "create", "--container", &id, "--alias", "bigger", "--wait"]);
    assert_eq!(json(out.clone())["alias"], "bigger", "{}", err(&out));
    assert!(err(&out).contains("snapshot bigger done"), "{}", err(&out));
    std::fs::remove_file(rootfs.join("var/blob1")).unwrap();
    let out = impatient(&["--json", "snapshots", "restore", "--container", &id, "bigger"]);
    assert_eq!(json(out.clone())["alias"], "bigger", "{}", err(&out));
    assert!(rootfs.join("var/blob1").exists());
    for b in 0..8 {
        std::fs::remove_file(rootfs.join(format!("var/blob{b}"))).unwrap();
    }

    // Without an alias the daemon names it; the CLI still prints the snapshot.
    let unnamed = json(hoody(&d, &["--json", "snapshots", "create", "--container", &id]));
    assert!(unnamed["alias"].as_str().unwrap().starts_with("snap-"), "{unnamed}");

    std::fs::remove_file(rootfs.join("blob0")).unwrap();
    std::fs::write(rootfs.join("var/blob.bin"), b"changed").unwrap();
    let out = hoody(&d, &["--json", "snapshots", "restore", "--container", &id, "big", "--wait"]);
    assert_eq!(json(out.clone())["alias"], "big");
    assert!(err(&out).contains("restore big done"), "{}", err(&out));
    assert!(rootfs.join("blob0").exists());
    assert_eq!(std::fs::read(rootfs.join("var/blob.bin")).unwrap().len(), 700_000);
}

/// What the fake daemon answers: status, envelope, and how long it takes.
type FakeAnswer = (u16, serde_json::Value, Duration);

/// A scripted stand-in for hoodyd: answers each request with what `answer`
/// returns for (method, path, how many times this method and path came before).
/// Every connection is served on its own thread and closed after one answer.
fn fake_daemon(answer: impl Fn(&str, &str, usize) -> FakeAnswer + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer = Arc::new(answer);
    let seen = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (answer, seen) = (answer.clone(), seen.clone());
            std::thread::spawn(move || serve_one(conn, &*answer, &seen));
        }
    });
    url
}

fn serve_one(mut conn: TcpStream, answer: &dyn Fn(&str, &str, usize) -> FakeAnswer, seen: &Mutex<std::collections::HashMap<String, usize>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let n = {
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(format!("{method} {path}")).or_default();
        *n += 1;
        *n - 1
    };
    let (status, envelope, delay) = answer(&method, &path, n);
    std::thread::sleep(delay);
    let text = envelope.to_string();
    let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
}

fn envelope(status: u16, data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"statusCode": status, "message": "m", "data": data})
}

/// The container `id` as a poll sees it: working for its first `busy` polls, then done with `message`.
fn polled(id: &str, n: usize, busy: usize, message: Option<&str>) -> serde_json::Value {
    let progress = (n < busy).then(|| serde_json::json!({"phase": "reading", "bytes_done": n * 100, "bytes_total": 1000, "files_done": n, "files_total": 10, "rate": 4096, "job": "snapshot"}));
    envelope(200, serde_json::json!({"id": id, "name": id, "status": "running", "status_message": message, "progress": progress}))
}

#[test]
fn a_job_answered_202_or_not_answered_in_time_is_waited_on() {
    let no_wait = Duration::ZERO;
    let url = fake_daemon(move |method, path, n| {
        let snapshot = |alias: &str| envelope(200, serde_json::json!({"id": format!("id-{alias}"), "alias": alias, "mode": "stateless", "created_at": if alias == "old" { "2024-01-01T00:00:00Z" } else { "2025-01-01T00:00:00Z" }}));
        match (method, path) {
            // 202 naming the alias.
            ("POST", "/api/v1/containers/c1/snapshots") => (202, envelope(202, serde_json::json!({"alias": "v1", "done": false, "container": {"id": "c1"}})), no_wait),
            ("GET", "/api/v1/containers/c1") => (200, polled("c1", n, 3, None), no_wait),
            ("GET", "/api/v1/containers/c1/snapshots/v1") => (200, snapshot("v1"), no_wait),
            // No answer within the client's timeout.
            ("POST", "/api/v1/containers/c2/snapshots") => (201, snapshot("late"), Duration::from_secs(4)),
            ("GET", "/api/v1/containers/c2") => (200, polled("c2", n, 2, None), no_wait),
            ("GET", "/api/v1/containers/c2/snapshots/late") => (200, snapshot("late"), no_wait),
            // 202 without the alias, none asked: the newest snapshot once done.
            ("POST", "/api/v1/containers/c3/snapshots") => (202, envelope(202, serde_json::json!({})), no_wait),
            ("GET", "/api/v1/containers/c3") => (200, polled("c3", n, 1, None), no_wait),
            ("GET", "/api/v1/containers/c3/snapshots") => (200, envelope(200, serde_json::json!([snapshot("old")["data"], snapshot("snap-newest")["data"]])), no_wait),
            ("GET", "/api/v1/containers/c3/snapshots/snap-newest") => (200, snapshot("snap-newest"), no_wait),
            // A restore that runs on and fails.
            ("PATCH", "/api/v1/containers/c4/snapshots/v1") => (202, envelope(202, serde_json::json!({"done": false, "container": {"id": "c4"}, "snapshot": snapshot("v1")["data"]})), no_wait),
            ("GET", "/api/v1/containers/c4") => (200, polled("c4", n, 2, Some("restore failed: no space left on device")), no_wait),
            // A restore that runs on and succeeds.
            ("PATCH", "/api/v1/containers/c5/snapshots/v1") => (202, envelope(202, serde_json::json!({"done": false, "container": {"id": "c5"}, "snapshot": snapshot("v1")["data"]})), no_wait),
            ("GET", "/api/v1/containers/c5") => (200, polled("c5", n, 2, None), no_wait),
            // No answer, and done before any progress showed: found by its alias.
            ("POST", "/api/v1/containers/c6/snapshots") => (201, snapshot("quick"), Duration::from_secs(5)),
            ("GET", "/api/v1/containers/c6") => (200, polled("c6", n, 0, None), no_wait),
            ("GET", "/api/v1/containers/c6/snapshots/quick") => (200, snapshot("quick"), no_wait),
            // No answer and no job showing: the restore is sent again.
            ("PATCH", "/api/v1/containers/c7/snapshots/v1") if n == 0 => (200, envelope(200, serde_json::json!({"done": true, "snapshot": snapshot("v1")["data"]})), Duration::from_secs(5)),
            ("PATCH", "/api/v1/containers/c7/snapshots/v1") => (200, envelope(200, serde_json::json!({"done": true, "snapshot": snapshot("again")["data"]})), no_wait),
            ("GET", "/api/v1/containers/c7") => (200, polled("c7", n, 0, None), no_wait),
            // Never answered, no job: the CLI gives up after its tries, saying so.
            ("POST", "/api/v1/containers/c8/snapshots") => (201, snapshot("never"), Duration::from_secs(30)),
            ("GET", "/api/v1/containers/c8") => (200, polled("c8", n, 0, None), no_wait),
            _ => (404, serde_json::json!({"statusCode": 404, "message": format!("no {method} {path}"), "data": null, "error": {"code": "not_found"}}), no_wait),
        }
    });
    let run = |args: &[&str]| Command::new(HOODY).args(args).env("HOODY_URL", &url).env("HOODY_TOKEN", "t").env("HOODY_TIMEOUT", "1").output().unwrap();

    let out = run(&["--json", "snapshots", "create", "--container", "c1", "--alias", "v1", "--wait"]);
    assert_eq!(json(out.clone())["id"], "id-v1");
    assert!(err(&out).contains("snapshot v1 done") && err(&out).contains("10 files"), "{}", err(&out));
    let started = std::time::Instant::now();
    assert_eq!(json(run(&["--json", "snapshots", "create", "--container", "c2", "--alias", "late"]))["id"], "id-late");
    assert!(started.elapsed() < Duration::from_secs(4), "waited on the job, not on the answer");
    assert_eq!(json(run(&["--json", "snapshots", "create", "--container", "c3"]))["alias"], "snap-newest");
    let accepted = json(run(&["--json", "snapshots", "create", "--container", "c1", "--alias", "v1", "--no-wait"]));
    assert_eq!(accepted["alias"], "v1");

    let out = run(&["snapshots", "restore", "--container", "c4", "v1", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("restore failed: no space left on device"), "{}", err(&out));
    assert_eq!(json(run(&["--json", "snapshots", "restore", "--container", "c5", "v1"]))["alias"], "v1");

    assert_eq!(json(run(&["--json", "snapshots", "create", "--container", "c6", "--alias", "quick"]))["id"], "id-quick");
    assert_eq!(json(run(&["--json", "snapshots", "restore", "--container", "c7", "v1"]))["alias"], "again", "sent again");
    let out = run(&["snapshots", "create", "--container", "c8", "--alias", "never"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(err(&out).contains("no answer") && err(&out).contains("3 times"), "{}", err(&out));
}

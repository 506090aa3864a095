//! The `hoody` command line against a real daemon.

mod common;

use std::process::{Command, Output};

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
    ok(hoody(&d, &["storage", "delete", id]));
    assert_eq!(json(hoody(&d, &["--json", "storage", "list"])).as_array().unwrap().len(), 0);
}

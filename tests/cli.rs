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

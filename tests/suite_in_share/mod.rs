//! Runs one of the `scripts/*-share` suites (a crates.io tool inside a share
//! mounted by the real daemon) and hands back what it printed. Its includer
//! also includes `common` (for the skip helper and the cluster).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `None` (saying why) where no share can be mounted: without /dev/fuse or root.
pub fn run(script: &str, args: &[&str]) -> Option<Output> {
    if !Path::new("/dev/fuse").exists() {
        crate::common::skip("/dev/fuse is absent, no share can be mounted");
        return None;
    }
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        crate::common::skip("the suite mounts a share (and may switch users): it needs root");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script);
    Some(Command::new(&script).args(args).env("HOODYD_BIN", env!("CARGO_BIN_EXE_hoodyd")).output().unwrap_or_else(|e| panic!("run {}: {e}", script.display())))
}

/// [`run`] in a cross-server share: a cluster of two real daemons (real
/// etcd), a container on node 1 sharing its `/srv/<alias>` (mode 0777) with
/// a container on node 2, whose node mounts it with the remote backend (every
/// call over QUIC to node 1); the script runs in that mount
/// (`HOODY_SHARE_MOUNT`) instead of starting a daemon of its own.
pub fn run_remote(script: &str, alias: &str, args: &[&str]) -> Option<Output> {
    use std::time::{Duration, Instant};
    if !Path::new("/dev/fuse").exists() {
        crate::common::skip("/dev/fuse is absent, no share can be mounted");
        return None;
    }
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        crate::common::skip("the suite mounts a share (and may switch users): it needs root");
        return None;
    }
    let cluster = crate::common::Cluster::start(2)?;
    let project = cluster.nodes[0].project(alias);
    let container_on = |name: &str, on: usize| {
        let body = serde_json::json!({"name": name, "project_id": project, "server_id": cluster.id(on)});
        let r = cluster.nodes[0].call("POST", "/containers", Some(body));
        assert_eq!(r.status, 201, "{r:?}");
        r.data().clone()
    };
    let (source, target) = (container_on("source", 0), container_on("target", 1));
    let dir = crate::common::path_of(&source).join("srv").join(alias);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(dir.join(".ready"), b"").unwrap();
    let share = serde_json::json!({"source_path": format!("/srv/{alias}"), "target_container_id": target["id"], "mode": "readwrite", "alias": alias});
    let r = cluster.nodes[0].call("POST", &format!("/containers/{}/storage/shares", source["id"].as_str().unwrap()), Some(share));
    assert_eq!(r.status, 201, "{r:?}");
    let mnt = crate::common::path_of(&target).join("hoody/shares").join(alias);
    let started = Instant::now();
    while !mnt.join(".ready").exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "the cross-server share was not mounted on node 2 within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(dir.join(".ready")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script);
    let output = Command::new(&script)
        .args(args)
        .env("HOODYD_BIN", env!("CARGO_BIN_EXE_hoodyd"))
        .env("HOODY_SHARE_MOUNT", &mnt)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    drop(cluster);
    Some(output)
}

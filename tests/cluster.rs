//! A cluster of real daemons on one real etcd: joining, membership, any node
//! answering any call, and failures of etcd and of nodes.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Daemon, HOODYD};
use serde_json::json;

fn state_of(cluster: &Cluster, via: usize, name: &str) -> String {
    cluster.states(via).into_iter().find(|(n, _)| n == name).map(|(_, s)| s).unwrap_or_else(|| "absent".into())
}

fn wait_state(cluster: &Cluster, via: usize, name: &str, state: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if state_of(cluster, via, name) == state {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{name} not {state} within {within:?}: {:?}", cluster.states(via));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn joined_servers_are_listed_online_and_a_killed_one_is_unreachable_within_10s_then_back_by_itself() {
    let Some(mut cluster) = Cluster::start(3) else { return };
    let listed = cluster.nodes[1].call("GET", "/servers", None);
    let names: Vec<&str> = listed.data().as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["node1", "node2", "node3"], "{listed:?}");
    for s in listed.data().as_array().unwrap() {
        assert_eq!(s["state"], "online", "{s}");
        assert!(s["capacity_bytes"].as_u64().unwrap() > 0 && s["free_bytes"].as_u64().unwrap() > 0, "{s}");
        assert!(s["addresses"]["quic"].as_str().unwrap().contains(':'), "{s}");
    }

    cluster.nodes[2].stop_with(libc::SIGKILL, Duration::from_secs(5));
    let took = wait_state(&cluster, 0, "node3", "unreachable", Duration::from_secs(10));
    println!("node3 unreachable after {took:?}");

    // Restarted on its data dir alone (no token): a member again by itself.
    let dir = std::mem::replace(&mut cluster.nodes[2].dir, tempfile::tempdir().unwrap());
    cluster.nodes[2] = Daemon::start_in(dir, &["--node-name", "node3"]);
    wait_state(&cluster, 0, "node3", "online", Duration::from_secs(10));
}

#[test]
fn a_join_token_admits_one_server_once() {
    let Some(cluster) = Cluster::start(1) else { return };
    let token = cluster.join_token();
    let first = Daemon::start_in(tempfile::tempdir().unwrap(), &["--node-name", "second", "--join", &token]);
    assert_eq!(state_of(&cluster, 0, "second"), "online");
    // The same token again: refused, and the daemon does not start.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(HOODYD)
        .args(["serve", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--node-name", "third", "--join", &token, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not valid"), "{err}");
    assert_eq!(state_of(&cluster, 0, "third"), "absent");
    drop(first);
}

#[test]
fn a_join_token_naming_another_ca_is_refused_before_anything_is_sent() {
    let Some(cluster) = Cluster::start(1) else { return };
    let token = cluster.join_token();
    // Same token with another CA fingerprint: the joining node refuses the signer.
    let mut parts: Vec<&str> = token.splitn(5, ':').collect();
    let other = "0".repeat(64);
    parts[3] = &other;
    let forged = parts.join(":");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(HOODYD).args(["serve", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--join", &forged, "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    // The real token still works: the forged attempt never reached the signer's check.
    let ok = Daemon::start_in(tempfile::tempdir().unwrap(), &["--node-name", "late", "--join", &token]);
    assert_eq!(state_of(&cluster, 0, "late"), "online");
    drop(ok);
}

#[test]
fn tenants_cannot_make_join_tokens_nor_remove_servers() {
    let Some(cluster) = Cluster::start(2) else { return };
    let tenant = cluster.nodes[0].token_for("tenant");
    let r = cluster.nodes[0].call_as(&tenant, "POST", "/cluster/join-tokens", Some(json!({})));
    assert_eq!(r.status, 403, "{r:?}");
    let r = cluster.nodes[0].call_as(&tenant, "DELETE", &format!("/servers/{}", cluster.id(1)), None);
    assert_eq!(r.status, 403, "{r:?}");
}

#[test]
fn add_node_offline_makes_a_member() {
    let Some(cluster) = Cluster::start(1) else { return };
    let out_dir = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("n2");
    let made = std::process::Command::new(HOODYD).args(["cluster", "add-node", "offline2", "--out"]).arg(&target).arg("--data-dir").arg(cluster.nodes[0].data_dir()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let moved = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&target).unwrap() {
        let entry = entry.unwrap();
        std::fs::rename(entry.path(), moved.path().join(entry.file_name())).unwrap();
    }
    let node = Daemon::start_in(moved, &["--node-name", "offline2"]);
    wait_state(&cluster, 0, "offline2", "online", Duration::from_secs(10));
    drop(node);
}

#[test]
fn cluster_init_turns_a_running_node_into_a_cluster_keeping_everything_it_held() {
    let Some(etcd) = hoodyd::catalog::etcd::LocalEtcd::new().map_err(|e| common::skip(&e)).ok() else { return };
    let single = Daemon::start_with(&["--node-name", "solo"]);
    let project = single.project("kept");
    let container = single.container(&project, "box");
    let id = container["id"].as_str().unwrap().to_string();
    let tenant = single.token_for("tenant");
    // While it runs: the verb goes through the daemon, which keeps serving.
    let made = single.hoodyd(&["cluster", "init", "--etcd", &etcd.url()]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let r = single.call("GET", &format!("/containers/{id}"), None);
    assert_eq!((r.status, r.data()["name"].as_str()), (200, Some("box")), "{r:?}");
    // Writes now land in etcd: a server that joins sees them.
    let p2 = single.call_as(&tenant, "POST", "/projects", Some(json!({"name": "after"})));
    assert_eq!(p2.status, 201, "{p2:?}");
    let token = {
        let r = single.call("POST", "/cluster/join-tokens", Some(json!({})));
        assert_eq!(r.status, 201, "{r:?}");
        r.data()["token"].as_str().unwrap().to_string()
    };
    let second = Daemon::start_in(tempfile::tempdir().unwrap(), &["--node-name", "second", "--join", &token]);
    let r = second.call_as(&tenant, "GET", "/projects", None);
    let names: Vec<&str> = r.data().as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 1, "the tenant's project, made after the move: {r:?}");
    assert!(names.contains(&"after"));
    let r = second.call("GET", &format!("/containers/{id}"), None);
    assert_eq!(r.status, 200, "the container, made before the move: {r:?}");
    // A second init is refused; a restart serves from etcd.
    let again = single.hoodyd(&["cluster", "init", "--etcd", &etcd.url()]);
    assert!(!again.status.success());
    let node = Daemon::start_in(single.into_dir(), &["--node-name", "solo"]);
    assert_eq!(node.call("GET", &format!("/containers/{id}"), None).status, 200);
    assert!(node.data_dir().join("cluster.json").exists());
    drop(second);
}

#[test]
fn any_node_answers_calls_about_a_container_owned_by_another() {
    let Some(cluster) = Cluster::start(2) else { return };
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let project = n2.project("p");
    // Created through node 2, placed on node 1.
    let r = n2.call("POST", "/containers", Some(json!({"name": "c", "project_id": project, "server_id": cluster.id(0)})));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.data()["server_id"], cluster.id(0).as_str());
    let id = r.data()["id"].as_str().unwrap().to_string();
    assert!(n1.data_dir().join("containers").join(&id).exists(), "the rootfs lives on node 1");
    assert!(!n2.data_dir().join("containers").join(&id).exists());
    // A snapshot asked of node 2 is taken by node 1; errors come back as node 1 answered them.
    let r = n2.call("POST", &format!("/containers/{id}/snapshots"), Some(json!({"alias": "s1"})));
    assert!(r.status == 201 || r.status == 202, "{r:?}");
    let r = n2.call("POST", &format!("/containers/{id}/snapshots"), Some(json!({"alias": "s1"})));
    assert_eq!(r.status, 409, "{r:?}");
    let r = n2.call("POST", &format!("/containers/{id}/snapshots"), Some(json!({"alias": "x".repeat(101)})));
    assert_eq!((r.status, r.field()), (400, "alias"), "{r:?}");
    // Reads are answered from the shared catalog by either.
    assert_eq!(n2.call("GET", &format!("/containers/{id}/snapshots"), None).data().as_array().unwrap().len(), 1);
    // An unknown server is named.
    let r = n2.call("POST", "/containers", Some(json!({"name": "d", "project_id": project, "server_id": "nope"})));
    assert_eq!((r.status, r.field()), (404, "server_id"), "{r:?}");
    let r = n2.call("DELETE", &format!("/containers/{id}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!n1.data_dir().join("containers").join(&id).exists());
}

#[test]
fn a_removed_server_is_refused_from_its_next_request() {
    let Some(cluster) = Cluster::start(2) else { return };
    let project = cluster.nodes[1].project("p");
    // Node 2 forwards to node 1 fine while a member.
    let r = cluster.nodes[1].call("POST", "/containers", Some(json!({"name": "a", "project_id": project, "server_id": cluster.id(0)})));
    assert_eq!(r.status, 201, "{r:?}");
    let r = cluster.nodes[0].call("DELETE", &format!("/servers/{}", cluster.id(1)), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(state_of(&cluster, 0, "node2"), "absent");
    // Its next call to node 1, on the connection it already has, is refused.
    let started = Instant::now();
    loop {
        let r = cluster.nodes[1].call("POST", "/containers", Some(json!({"name": "b", "project_id": project, "server_id": cluster.id(0)})));
        if r.status == 503 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "node 2 still served after removal: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Removing the node answering, or an unknown one, is refused.
    assert_eq!(cluster.nodes[0].call("DELETE", &format!("/servers/{}", cluster.id(0)), None).status, 409);
    assert_eq!(cluster.nodes[0].call("DELETE", "/servers/nope", None).status, 404);
}

#[test]
fn with_etcd_down_catalog_calls_fail_within_2s_naming_it_and_resume_when_it_is_back() {
    let Some(mut cluster) = Cluster::start(2) else { return };
    cluster.etcd.stop();
    let started = Instant::now();
    let r = cluster.nodes[1].call("GET", "/projects", None);
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.message().contains("etcd"), "{r:?}");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    cluster.etcd.start().unwrap();
    let started = Instant::now();
    loop {
        let r = cluster.nodes[1].call("GET", "/projects", None);
        if r.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.wait_online(2, Duration::from_secs(15));
}

/// A share made through one node between containers of another is mounted by
/// the other within 1 s: its reconciler follows the catalog's watch.
#[test]
fn a_share_made_through_one_node_is_mounted_by_the_owner_of_its_target_within_1s() {
    if !std::path::Path::new("/dev/fuse").exists() {
        return common::skip("/dev/fuse is absent");
    }
    let Some(cluster) = Cluster::start(2) else { return };
    let n1 = &cluster.nodes[0];
    let project = n1.project("p");
    let make = |name: &str| {
        let r = n1.call("POST", "/containers", Some(json!({"name": name, "project_id": project, "server_id": cluster.id(1)})));
        assert_eq!(r.status, 201, "{r:?}");
        r.data().clone()
    };
    let (source, target) = (make("source"), make("target"));
    let source_root = common::path_of(&source);
    std::fs::create_dir_all(source_root.join("data")).unwrap();
    std::fs::write(source_root.join("data/hello.txt"), b"hello").unwrap();
    let started = Instant::now();
    let r = n1.call("POST", &format!("/containers/{}/storage/shares", source["id"].as_str().unwrap()), Some(json!({"source_path": "/data", "target_container_id": target["id"], "mode": "readonly", "alias": "data"})));
    assert_eq!(r.status, 201, "{r:?}");
    let seen = common::path_of(&target).join("hoody/shares/data/hello.txt");
    loop {
        if std::fs::read(&seen).is_ok_and(|b| b == b"hello") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "not mounted on node 2 within 1 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("mounted on node 2 {:?} after the call to node 1", started.elapsed());
}

/// With etcd away, what is mounted keeps working (reads and writes through a
/// share), and the share stays mounted across the reconciler's passes.
#[test]
fn with_etcd_down_a_mounted_share_keeps_working() {
    if !std::path::Path::new("/dev/fuse").exists() {
        return common::skip("/dev/fuse is absent");
    }
    let Some(mut cluster) = Cluster::start(2) else { return };
    let n2 = &cluster.nodes[1];
    let project = n2.project("p");
    let source = n2.container(&project, "source");
    let target = n2.container(&project, "target");
    let source_root = common::path_of(&source);
    std::fs::create_dir_all(source_root.join("data")).unwrap();
    std::fs::write(source_root.join("data/a.txt"), b"a").unwrap();
    let r = n2.call("POST", &format!("/containers/{}/storage/shares", source["id"].as_str().unwrap()), Some(json!({"source_path": "/data", "target_container_id": target["id"], "mode": "readwrite"})));
    assert_eq!(r.status, 201, "{r:?}");
    let mnt = common::path_of(&target).join("hoody/shares/data");
    let started = Instant::now();
    while std::fs::read(mnt.join("a.txt")).is_err() {
        assert!(started.elapsed() < Duration::from_secs(5), "mounted");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.etcd.stop();
    // Several reconciler passes (2 s each) while the catalog cannot be read.
    for round in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(std::fs::read(mnt.join("a.txt")).unwrap(), b"a");
        std::fs::write(mnt.join(format!("w{round}.txt")), b"w").unwrap();
        assert_eq!(std::fs::read(source_root.join(format!("data/w{round}.txt"))).unwrap(), b"w");
    }
    cluster.etcd.start().unwrap();
    assert_eq!(std::fs::read(mnt.join("a.txt")).unwrap(), b"a");
}

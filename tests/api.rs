//! Every route and every error of the HTTP API, against the real daemon.

mod common;

use common::{path_of, Daemon};
use serde_json::json;

#[test]
fn projects_create_list_get() {
    let d = Daemon::start();
    let a = d.project("alpha");
    let b = d.project("beta");
    let list = d.call("GET", "/projects", None);
    assert_eq!(list.status, 200);
    assert_eq!(list.body["total"], 2);
    let names: Vec<_> = list.data().as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let one = d.call("GET", &format!("/projects/{b}"), None);
    assert_eq!((one.status, one.data()["id"].as_str()), (200, Some(b.as_str())));
    let page = d.call("GET", "/projects?limit=1&offset=1", None);
    assert_eq!(page.body["total"], 2);
    assert_eq!(page.data()[0]["id"].as_str(), Some(b.as_str()));
    let dup = d.call("POST", "/projects", Some(json!({"name": "alpha"})));
    assert_eq!((dup.status, dup.code()), (409, "conflict"));
    assert_ne!(a, b);
    let missing = d.call("GET", "/projects/nope", None);
    assert_eq!((missing.status, missing.code()), (404, "not_found"));
}

#[test]
fn container_create_get_list_patch_delete() {
    let d = Daemon::start_with_host_paths(&[], Some(std::path::Path::new("/sys/fs/cgroup")));
    let p = d.project("p");
    let q = d.project("q");
    let c = d.container(&p, "web");
    for field in ["id", "name", "project_id", "server_id", "server_name", "status", "source_container_id", "snapshot_count", "ssh_public_key", "created_at", "updated_at", "progress", "rootfs_path"] {
        assert!(c.get(field).is_some(), "container JSON lacks {field}: {c}");
    }
    assert_eq!(c["status"], "running");
    assert_eq!(c["server_name"], "test-node");
    assert_eq!(c["snapshot_count"], 0);
    let rootfs = path_of(&c);
    assert!(rootfs.is_dir() && rootfs.starts_with(d.data_dir()), "{rootfs:?}");
    let id = c["id"].as_str().unwrap();

    let other = d.container(&q, "db");
    let got = d.call("GET", &format!("/containers/{id}"), None);
    assert_eq!(got.data(), &c);
    assert_eq!(d.call("GET", "/containers", None).body["total"], 2);
    let filtered = d.call("GET", &format!("/containers?project_id={q}"), None);
    assert_eq!(filtered.body["total"], 1);
    assert_eq!(filtered.data()[0]["id"], other["id"]);
    let server = c["server_id"].as_str().unwrap();
    assert_eq!(d.call("GET", &format!("/containers?server_id={server}"), None).body["total"], 2);
    assert_eq!(d.call("GET", "/containers?source_container_id=x", None).body["total"], 0);
    assert_eq!(d.call("GET", "/containers?limit=1", None).data().as_array().unwrap().len(), 1);

    let patched = d.call("PATCH", &format!("/containers/{id}"), Some(json!({
        "name": "web-2", "env": {"A": "1"}, "resources": {"cpu": 2}, "cgroup_path": "/sys/fs/cgroup/web",
        "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host"
    })));
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.data()["name"], "web-2");
    assert_eq!(patched.data()["env"]["A"], "1");
    assert_eq!(patched.data()["cgroup_path"], "/sys/fs/cgroup/web");
    let cleared = d.call("PATCH", &format!("/containers/{id}"), Some(json!({"cgroup_path": null})));
    assert_eq!(cleared.data()["cgroup_path"], serde_json::Value::Null);
    assert_eq!(cleared.data()["name"], "web-2", "absent fields stay");

    let deleted = d.call("DELETE", &format!("/containers/{id}"), None);
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.data()["rootfs_removed"], true, "{deleted:?}");
    assert!(!rootfs.exists(), "rootfs removed");
    assert_eq!(d.call("GET", &format!("/containers/{id}"), None).status, 404);
    assert_eq!(d.call("DELETE", &format!("/containers/{id}"), None).status, 404);
}

#[test]
fn lifecycle_operations_follow_valid_transitions_only() {
    let d = Daemon::start();
    let p = d.project("p");
    let id = d.container(&p, "c")["id"].as_str().unwrap().to_string();
    let op = |name: &str| d.call("POST", &format!("/containers/{id}/{name}"), None);
    let conflict = op("start");
    assert_eq!((conflict.status, conflict.code()), (409, "conflict"));
    assert!(conflict.message().contains("running"), "{conflict:?}");
    for (name, status) in [("pause", "paused"), ("resume", "running"), ("stop", "stopped"), ("start", "running"), ("restart", "running"), ("force-stop", "stopped")] {
        let r = op(name);
        assert_eq!((r.status, r.data()["status"].as_str()), (200, Some(status)), "{name}: {r:?}");
    }
    assert_eq!(op("pause").status, 409);
    assert_eq!(op("resume").status, 409);
    let unknown = op("explode");
    assert_eq!((unknown.status, unknown.field()), (404, "operation"));
    assert_eq!(d.call("POST", "/containers/nope/start", None).status, 404);
    assert_eq!(d.call("GET", &format!("/containers/{id}"), None).data()["status"], "stopped");
}

#[test]
fn adopting_an_existing_rootfs_and_its_refusals() {
    let roots = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_host_paths(&[roots.path()], None);
    let p = d.project("p");
    let outside = tempfile::tempdir_in(roots.path()).unwrap();
    std::fs::write(outside.path().join("keep.txt"), b"mine").unwrap();
    let adopted = d.call("POST", "/containers", Some(json!({"name": "a", "project_id": p, "rootfs_path": outside.path()})));
    assert_eq!(adopted.status, 201, "{adopted:?}");
    assert_eq!(path_of(adopted.data()), outside.path().canonicalize().unwrap());
    assert!(outside.path().join("keep.txt").exists(), "adoption keeps the contents");

    let refuse_as = |status: u16, rootfs: serde_json::Value, why: &str| {
        let r = d.call("POST", "/containers", Some(json!({"name": "b", "project_id": p, "rootfs_path": rootfs})));
        assert_eq!((r.status, r.field()), (status, "rootfs_path"), "{why}: {r:?}");
    };
    let refuse = |rootfs: serde_json::Value, why: &str| refuse_as(400, rootfs, why);
    refuse_as(403, json!(d.data_dir().join("containers")), "inside the data dir, outside the adopt roots");
    refuse(json!(outside.path().join("sub")), "does not exist");
    std::fs::create_dir(outside.path().join("sub")).unwrap();
    refuse(json!(outside.path().join("sub")), "inside another container's rootfs");
    let own = path_of(&d.container(&p, "owned"));
    refuse_as(403, json!(own), "another container's daemon-made rootfs, outside the adopt roots");
    refuse(json!("relative/dir"), "relative");
    refuse(json!(outside.path().join("keep.txt")), "not a directory");
    refuse_as(403, json!(roots.path()), "the adopt root itself");
    assert_eq!(d.call("GET", "/containers", None).body["total"], 2, "refusals created nothing");
}

#[test]
fn every_bad_input_is_answered_precisely_in_the_envelope() {
    let d = Daemon::start();
    let p = d.project("p");
    let t = Some(d.token.as_str());
    let post = |body: &[u8]| d.request("POST", "/api/v1/containers", t, Some(body)).enveloped();

    let r = post(br#"{"name": "x", "project_id": "#);
    assert_eq!((r.status, r.code()), (400, "malformed_json"));
    assert!(r.message().contains("line 1 column"), "{r:?}");
    let r = post(format!(r#"{{"name":"x","project_id":"{p}","colour":"red"}}"#).as_bytes());
    assert_eq!((r.status, r.code(), r.field()), (400, "unknown_field", "colour"));
    let r = post(br#"{"name":"x"}"#);
    assert_eq!((r.status, r.code(), r.field()), (400, "missing_field", "project_id"));
    let r = post(format!(r#"{{"name":7,"project_id":"{p}"}}"#).as_bytes());
    assert_eq!((r.status, r.code(), r.field()), (400, "invalid_type", "name"));
    let r = post(format!(r#"{{"name":"x","project_id":"{p}","env":{{"A":1}}}}"#).as_bytes());
    assert_eq!((r.status, r.code(), r.field()), (400, "invalid_type", "env.A"));
    let r = post(format!(r#"{{"name":"","project_id":"{p}"}}"#).as_bytes());
    assert_eq!((r.status, r.code(), r.field()), (400, "invalid_value", "name"));
    let r = post(br#"{"name":"x","project_id":"nope"}"#);
    assert_eq!((r.status, r.field()), (404, "project_id"));
    let r = post(format!(r#"{{"name":"x","project_id":"{p}","ssh_public_key":"hello"}}"#).as_bytes());
    assert_eq!((r.status, r.field()), (400, "ssh_public_key"));
    let r = post(&vec![b' '; 1024 * 1024 + 10]);
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
    let r = d.request("GET", "/api/v1/containers?limit=lots", t, None).enveloped();
    assert_eq!((r.status, r.field()), (400, "limit"));
    let r = d.request("GET", "/api/v1/containers?colour=red", t, None).enveloped();
    assert_eq!((r.status, r.code(), r.field()), (400, "unknown_field", "colour"));

    let r = d.request("GET", "/api/v1/containers", None, None).enveloped();
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = d.request("GET", "/api/v1/containers", Some("hoody_0123_bad"), None).enveloped();
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = d.request("GET", "/api/v1/containers/nope", t, None).enveloped();
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = d.request("PUT", "/api/v1/containers", t, Some(b"{}")).enveloped();
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    let r = d.request("GET", "/api/v1/no/such/route", t, None).enveloped();
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = d.request("GET", "/nowhere", None, None).enveloped();
    assert_eq!(r.status, 404);

    assert_eq!(d.call("GET", "/containers", None).body["total"], 0, "no bad request changed anything");
}

#[test]
fn another_accounts_objects_are_not_found() {
    let d = Daemon::start();
    let p = d.project("p");
    let c = d.container(&p, "c");
    let id = c["id"].as_str().unwrap();
    let eve = d.token_for("eve");
    assert_eq!(d.call_as(&eve, "GET", "/containers", None).body["total"], 0);
    assert_eq!(d.call_as(&eve, "GET", "/projects", None).body["total"], 0);
    for (method, path) in [("GET", format!("/containers/{id}")), ("DELETE", format!("/containers/{id}")), ("POST", format!("/containers/{id}/stop")), ("GET", format!("/projects/{p}"))] {
        let r = d.call_as(&eve, method, &path, None);
        assert_eq!(r.status, 404, "{method} {path}: {r:?}");
    }
    let r = d.call_as(&eve, "PATCH", &format!("/containers/{id}"), Some(json!({"name": "stolen"})));
    assert_eq!(r.status, 404);
    let r = d.call_as(&eve, "POST", "/containers", Some(json!({"name": "x", "project_id": p})));
    assert_eq!((r.status, r.field()), (404, "project_id"), "cannot create in another's project");
    // Eve's own project of the same name is fine: names are per account.
    assert_eq!(d.call_as(&eve, "POST", "/projects", Some(json!({"name": "p"}))).status, 201);
    assert_eq!(d.call("GET", &format!("/containers/{id}"), None).data()["name"], "c", "untouched");
}

#[test]
fn servers_health_metrics_and_openapi() {
    let d = Daemon::start();
    let servers = d.call("GET", "/servers", None);
    assert_eq!(servers.body["total"], 1);
    let me = &servers.data()[0];
    assert_eq!(me["name"], "test-node");
    assert_eq!(me["addresses"]["http"].as_str().unwrap(), d.url.trim_start_matches("http://"));
    assert_eq!(me["addresses"]["quic"].as_str().unwrap(), d.quic);
    assert!(me["free_bytes"].as_u64().unwrap() > 0);
    let id = me["id"].as_str().unwrap();
    assert_eq!(d.call("GET", &format!("/servers/{id}"), None).data()["id"], me["id"]);
    assert_eq!(d.call("GET", "/servers/nope", None).status, 404);

    let health = d.request("GET", "/healthz", None, None).enveloped();
    assert_eq!((health.status, health.data()["status"].as_str()), (200, Some("ok")));

    let p = d.project("secret-project-name");
    d.container(&p, "secret-container-name");
    d.call("GET", "/containers", None);
    let metrics = d.request("GET", "/metrics", None, None);
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("hoody_http_requests_total{method=\"GET\",route=\"/api/v1/containers\",status=\"200\"}"), "{text}");
    assert!(text.contains("hoody_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/containers\""), "{text}");
    assert!(text.contains("\nhoody_store_objects ") && text.contains("\nhoody_store_bytes "), "store gauges of docs/METRICS.md: {text}");
    assert!(!text.contains("secret") && !text.contains(&p), "metrics reveal no tenant data");

    let doc = d.request("GET", "/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().unwrap();
    for path in ["/api/v1/containers", "/api/v1/containers/{id}", "/api/v1/containers/{id}/{operation}", "/api/v1/projects", "/api/v1/projects/{id}", "/api/v1/servers", "/api/v1/servers/{id}", "/healthz", "/metrics", "/openapi.json"] {
        assert!(paths.contains_key(path), "openapi lacks {path}");
    }
    assert!(doc.body["components"]["schemas"]["Container"]["properties"]["rootfs_path"].is_object());
}

/// Issue 16 item 2: a query parameter a route does not know is a 400 naming
/// it on every route, with or without a query of its own, and nothing is done.
#[test]
fn an_unknown_query_parameter_is_a_400_naming_it_on_every_route() {
    let d = Daemon::start();
    let p = d.project("p");
    let c = d.container(&p, "c");
    let id = c["id"].as_str().unwrap();
    std::fs::create_dir_all(path_of(&c).join("srv/data")).unwrap();
    assert_eq!(d.snapshot(id, "snap").status, 201);
    let target = d.container(&p, "t");
    let t = target["id"].as_str().unwrap();
    let share = d.call("POST", &format!("/containers/{id}/storage/shares"), Some(json!({"source_path": "/srv/data", "target_container_id": t, "mode": "readonly"})));
    assert_eq!(share.status, 201, "{share:?}");
    let s = share.data()["id"].as_str().unwrap();
    let server = d.call("GET", "/servers", None).data()[0]["id"].as_str().unwrap().to_string();
    let token_id = d.call("POST", "/tokens", Some(json!({}))).data()["id"].as_str().unwrap().to_string();
    let routes: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        ("GET", "/projects".into(), None),
        ("POST", "/projects".into(), Some(json!({"name": "q"}))),
        ("GET", format!("/projects/{p}"), None),
        ("GET", "/containers".into(), None),
        ("POST", "/containers".into(), Some(json!({"name": "x", "project_id": p}))),
        ("GET", format!("/containers/{id}"), None),
        ("PATCH", format!("/containers/{id}"), Some(json!({"name": "renamed"}))),
        ("POST", format!("/containers/{id}/stop"), None),
        ("POST", format!("/containers/{id}/snapshots"), Some(json!({"alias": "another"}))),
        ("GET", format!("/containers/{id}/snapshots"), None),
        ("GET", format!("/containers/{id}/snapshots/snap"), None),
        ("PATCH", format!("/containers/{id}/snapshots/snap"), None),
        ("DELETE", format!("/containers/{id}/snapshots/snap"), None),
        ("POST", format!("/containers/{id}/storage/shares"), Some(json!({"source_path": "/srv/data", "target_container_id": t, "mode": "readonly", "alias": "b"}))),
        ("GET", format!("/containers/{id}/storage/shares"), None),
        ("GET", format!("/containers/{id}/storage/shares/{s}"), None),
        ("PATCH", format!("/containers/{id}/storage/shares/{s}"), Some(json!({"enabled": false}))),
        ("POST", "/storage/shares".into(), Some(json!({"source_container_id": id, "source_path": "/srv/data", "target_container_id": t, "mode": "readonly", "alias": "c"}))),
        ("GET", "/storage/shares".into(), None),
        ("GET", format!("/storage/shares/{s}"), None),
        ("PATCH", format!("/storage/shares/{s}"), Some(json!({"enabled": false}))),
        ("GET", format!("/containers/{t}/storage/incoming"), None),
        ("GET", format!("/containers/{t}/storage/incoming/{s}"), None),
        ("PATCH", format!("/containers/{t}/storage/incoming/{s}/mount"), Some(json!({"mount": false}))),
        ("GET", "/storage/incoming".into(), None),
        ("GET", format!("/storage/incoming/{s}"), None),
        ("PATCH", format!("/storage/incoming/{s}/mount"), Some(json!({"mount": false}))),
        ("GET", "/servers".into(), None),
        ("GET", format!("/servers/{server}"), None),
        ("GET", "/tokens".into(), None),
        ("POST", "/tokens".into(), Some(json!({}))),
        ("DELETE", format!("/tokens/{token_id}"), None),
        ("DELETE", format!("/admin/tokens/{token_id}"), None),
        ("POST", "/admin/gc".into(), None),
        ("DELETE", format!("/storage/shares/{s}"), None),
        ("DELETE", format!("/containers/{t}"), None),
    ];
    for (method, path, body) in routes {
        let r = d.call(method, &format!("{path}?foo=1"), body.clone());
        assert_eq!((r.status, r.code(), r.field()), (400, "unknown_field", "foo"), "{method} {path}?foo=1: {r:?}");
        assert!(r.message().contains("foo"), "{r:?}");
        // The same call without it is not refused for its query.
        let r = d.call(method, &format!("{path}?"), body);
        assert_ne!(r.status, 400, "{method} {path}: {r:?}");
    }
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        let r = d.request("GET", &format!("{path}?foo=1"), None, None).enveloped();
        assert_eq!((r.status, r.field()), (400, "foo"), "{path}: {r:?}");
    }
}

/// Issue 16 item 2: every list pages with `limit` and `offset` and says `total`.
#[test]
fn every_list_pages() {
    let d = Daemon::start();
    let p = d.project("p");
    let c = d.container(&p, "c");
    let id = c["id"].as_str().unwrap();
    let targets: Vec<String> = (0..2).map(|i| d.container(&p, &format!("t{i}"))["id"].as_str().unwrap().to_string()).collect();
    for dir in ["a", "b", "c"] {
        std::fs::create_dir_all(path_of(&c).join("srv").join(dir)).unwrap();
        assert_eq!(d.snapshot(id, dir).status, 201);
        let r = d.call("POST", &format!("/containers/{id}/storage/shares"), Some(json!({"source_path": format!("/srv/{dir}"), "target_container_id": targets[0], "mode": "readonly"})));
        assert_eq!(r.status, 201, "{r:?}");
    }
    d.call("POST", &format!("/containers/{id}/storage/shares"), Some(json!({"source_path": "/srv/a", "target_container_id": targets[1], "mode": "readonly"})));
    d.call("POST", "/tokens", Some(json!({})));
    d.call("POST", "/tokens", Some(json!({})));
    let t0 = &targets[0];
    let tokens = d.call("GET", "/tokens", None).body["total"].as_u64().unwrap();
    assert!(tokens >= 2);
    for (path, total) in [
        (format!("/containers/{id}/snapshots"), 3),
        (format!("/containers/{id}/storage/shares"), 4),
        ("/storage/shares".to_string(), 4),
        (format!("/containers/{t0}/storage/incoming"), 3),
        ("/storage/incoming".to_string(), 4),
        ("/servers".to_string(), 1),
        ("/tokens".to_string(), tokens),
        ("/projects".to_string(), 1),
        ("/containers".to_string(), 3),
    ] {
        let all = d.call("GET", &path, None);
        assert_eq!((all.status, all.body["total"].as_u64(), all.data().as_array().map(Vec::len)), (200, Some(total), Some(total as usize)), "{path}: {all:?}");
        let page = d.call("GET", &format!("{path}?limit=1&offset={}", total - 1), None);
        assert_eq!(page.body["total"].as_u64(), Some(total), "{path}: {page:?}");
        // Items by what names them (free space and such move between calls).
        let key = |v: &serde_json::Value| format!("{} {} {}", v["id"], v["share_id"], v["container_id"]);
        let keys = |r: &common::Reply| r.data().as_array().unwrap().iter().map(key).collect::<Vec<_>>();
        assert_eq!(keys(&page), keys(&all)[total as usize - 1..], "{path}: the last one");
        let none = d.call("GET", &format!("{path}?offset={total}"), None);
        assert_eq!((none.body["total"].as_u64(), none.data().as_array().map(Vec::len)), (Some(total), Some(0)), "{path}: {none:?}");
        let bad = d.call("GET", &format!("{path}?limit=lots"), None);
        assert_eq!((bad.status, bad.field()), (400, "limit"), "{path}: {bad:?}");
        let bad = d.call("GET", &format!("{path}?offset=-1"), None);
        assert_eq!((bad.status, bad.field()), (400, "offset"), "{path}: {bad:?}");
    }
}

//! The platform's docs as a contract (issue 16 item 7): every example request
//! of the seeds' storage-shares and snapshots pages
//! (`../shared/seeds/storage-shares.txt`, `snapshots-and-forks.txt`), in the
//! order the pages give them, made against the real daemon with real
//! containers, shares and mounts, and each answer's shape checked: status
//! code, envelope, fields present with their JSON types, state words from
//! their documented sets, times as RFC 3339. An example the docs abbreviate
//! (`POST /storage/shares` without a source or a mode) is sent as written
//! first, and must be a 400 naming what is missing, then completed.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{path_of, Daemon, Reply};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug)]
enum Ty {
    Str,
    OptStr,
    Time,
    OptTime,
    Bool,
    Int,
    Arr,
    OptObj,
}

use Ty::*;

const SHARE: &[(&str, Ty)] = &[
    ("id", Str),
    ("source_container_id", Str),
    ("source_path", Str),
    ("mode", Str),
    ("target_container_id", OptStr),
    ("target_project_id", OptStr),
    ("alias", Str),
    ("description", OptStr),
    ("enabled", Bool),
    ("expires_at", OptTime),
    ("created_at", Time),
    ("updated_at", Time),
    ("status", Str),
    ("status_message", OptStr),
    ("targets", Arr),
];
const TARGET: &[(&str, Ty)] = &[("container_id", Str), ("mount", Bool), ("status", Str), ("status_message", OptStr), ("mount_path", Str)];
const INCOMING: &[(&str, Ty)] = &[
    ("share_id", Str),
    ("container_id", Str),
    ("source_container_id", Str),
    ("alias", Str),
    ("mode", Str),
    ("description", OptStr),
    ("enabled", Bool),
    ("expires_at", OptTime),
    ("mount", Bool),
    ("status", Str),
    ("status_message", OptStr),
    ("mount_path", Str),
];
const SNAPSHOT: &[(&str, Ty)] = &[
    ("alias", Str),
    ("id", Str),
    ("container_id", Str),
    ("mode", Str),
    ("created_at", Time),
    ("expires_at", OptTime),
    ("size_bytes", Int),
    ("new_bytes", Int),
];
const CONTAINER: &[(&str, Ty)] = &[
    ("id", Str),
    ("name", Str),
    ("project_id", Str),
    ("server_id", Str),
    ("server_name", Str),
    ("status", Str),
    ("source_container_id", OptStr),
    ("snapshot_count", Int),
    ("ssh_public_key", OptStr),
    ("created_at", Time),
    ("updated_at", Time),
    ("progress", OptObj),
];
const SHARE_STATES: &[&str] = &["active", "failed", "pending", "unmounted", "disabled", "expired"];

fn is_time(v: &Value) -> bool {
    v.as_str().is_some_and(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok())
}

fn shape(v: &Value, fields: &[(&str, Ty)], what: &str) {
    for (name, ty) in fields {
        let f = v.get(*name).unwrap_or_else(|| panic!("{what}: no `{name}` in {v}"));
        let ok = match ty {
            Str => f.is_string(),
            OptStr => f.is_string() || f.is_null(),
            Time => is_time(f),
            OptTime => f.is_null() || is_time(f),
            Bool => f.is_boolean(),
            Int => f.is_u64(),
            Arr => f.is_array(),
            OptObj => f.is_object() || f.is_null(),
        };
        assert!(ok, "{what}: `{name}` is not {ty:?}: {v}");
    }
}

fn share_shape(v: &Value, what: &str) {
    shape(v, SHARE, what);
    assert!(["readonly", "readwrite"].contains(&v["mode"].as_str().unwrap()), "{what}: mode {v}");
    assert!(SHARE_STATES.contains(&v["status"].as_str().unwrap()), "{what}: status {v}");
    for t in v["targets"].as_array().unwrap() {
        shape(t, TARGET, what);
        assert!(SHARE_STATES.contains(&t["status"].as_str().unwrap()), "{what}: target status {t}");
    }
}

fn incoming_shape(v: &Value, what: &str) {
    shape(v, INCOMING, what);
    assert!(SHARE_STATES.contains(&v["status"].as_str().unwrap()), "{what}: status {v}");
}

/// A list: `data` an array of `total` items (no paging asked), each checked.
fn list(r: &Reply, what: &str, each: impl Fn(&Value, &str)) -> usize {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    let items = r.data().as_array().unwrap_or_else(|| panic!("{what}: data is not an array: {r:?}"));
    assert_eq!(r.body["total"].as_u64(), Some(items.len() as u64), "{what}: total {r:?}");
    for i in items {
        each(i, what);
    }
    items.len()
}

/// The seeds' paths carry `/api/v1` or not; the call is the same.
fn call(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> Reply {
    d.call(method, path.strip_prefix("/api/v1").unwrap_or(path), body)
}

/// A body as the docs write it, sent byte for byte.
fn call_raw(d: &Daemon, method: &str, path: &str, body: &str) -> Reply {
    d.request(method, &format!("/api/v1{}", path.strip_prefix("/api/v1").unwrap_or(path)), Some(&d.token), Some(body.as_bytes())).enveloped()
}

fn created_share(r: &Reply, what: &str) -> String {
    assert_eq!(r.status, 201, "{what}: {r:?}");
    share_shape(r.data(), what);
    r.data()["id"].as_str().unwrap().to_string()
}

fn bad(r: &Reply, field: &str, what: &str) {
    assert_eq!((r.status, r.field()), (400, field), "{what}: {r:?}");
    assert!(r.data().is_null(), "{what}: {r:?}");
}

fn is_mountpoint(p: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
}

struct C {
    id: String,
    root: PathBuf,
}

fn container(d: &Daemon, project: &str, name: &str) -> C {
    let v = d.container(project, name);
    shape(&v, CONTAINER, "POST /containers");
    C { id: v["id"].as_str().unwrap().to_string(), root: path_of(&v) }
}

fn files(c: &C, dir: &str, names: &[&str]) {
    let at = c.root.join(dir.trim_start_matches('/'));
    std::fs::create_dir_all(&at).unwrap();
    for n in names {
        std::fs::write(at.join(n), format!("{n} of {dir}")).unwrap();
    }
}

/// What `ls` shows inside the container at `dir`.
fn ls(c: &C, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(c.root.join(dir.trim_start_matches('/'))) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => return Vec::new(),
    };
    names.sort();
    names
}

fn mounted(c: &C, alias: &str) -> bool {
    is_mountpoint(&c.root.join("hoody/shares").join(alias))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn the_storage_shares_page_example_by_example() {
    if !Path::new("/dev/fuse").exists() {
        common::skip("/dev/fuse is absent");
        return;
    }
    let d = Daemon::start();
    let project = d.project("app");
    let source = container(&d, &project, "source");
    let target = container(&d, &project, "frontend");
    files(&source, "/hoody/storage/shared-assets", &["logo.png", "styles.css"]);
    files(&source, "/hoody/storage/config", &["app.yaml"]);

    // Share specific directory with ONE container (curl form; the SDK and CLI send the same).
    let r = call_raw(
        &d,
        "POST",
        &format!("/api/v1/containers/{}/storage/shares", source.id),
        &format!(r#"{{ "source_path": "/hoody/storage/shared-assets", "target_container_id": "{}", "mode": "readonly", "description": "Static assets for frontend container" }}"#, target.id),
    );
    let assets = created_share(&r, "1-to-1 share");
    assert_eq!((r.data()["status"].as_str(), r.data()["alias"].as_str()), (Some("active"), Some("shared-assets")), "{r:?}");
    assert_eq!(r.data()["targets"][0]["mount_path"], "/hoody/shares/shared-assets");
    // ls /hoody/shares/shared-assets/ in the target: logo.png styles.css; cat styles.css.
    assert_eq!(ls(&target, "/hoody/shares/shared-assets"), ["logo.png", "styles.css"]);
    assert_eq!(std::fs::read_to_string(target.root.join("hoody/shares/shared-assets/styles.css")).unwrap(), "styles.css of /hoody/storage/shared-assets");

    // Share directory with ALL containers in a project: every container mounts it by default.
    let r = call(
        &d,
        "POST",
        &format!("/api/v1/containers/{}/storage/shares", source.id),
        Some(json!({"source_path": "/hoody/storage/config", "target_project_id": project, "mode": "readonly", "description": "Shared configuration for all services"})),
    );
    created_share(&r, "project-wide share");
    let later = container(&d, &project, "later");
    for c in [&target, &later] {
        assert!(mounted(c, "config"), "every container of the project, later ones too");
    }

    // "Source creates share with alias config": POST /storage/shares as the docs abbreviate it.
    let other_project = d.project("other");
    let reader = container(&d, &other_project, "reader");
    files(&source, "/hoody/storage/app-config", &["app.yaml", "database.json", "secrets.env"]);
    let r = call(&d, "POST", "/storage/shares", Some(json!({"source_path": "/hoody/storage/app-config", "alias": "config"})));
    assert_eq!((r.status, r.code()), (400, "missing_field"), "{r:?}");
    let r = call(&d, "POST", "/storage/shares", Some(json!({"source_path": "/hoody/storage/app-config", "alias": "config", "mode": "readonly", "target_container_id": reader.id})));
    bad(&r, "source_container_id", "POST /storage/shares without its source");
    let r = call(
        &d,
        "POST",
        "/storage/shares",
        Some(json!({"source_container_id": source.id, "source_path": "/hoody/storage/app-config", "alias": "config", "mode": "readonly", "target_container_id": reader.id})),
    );
    let app_config = created_share(&r, "POST /storage/shares");
    // "Target mounts share": PATCH /storage/incoming/{share_id}/mount {"mount": true}.
    let r = call(&d, "PATCH", &format!("/storage/incoming/{app_config}/mount"), Some(json!({"mount": true})));
    assert_eq!(r.status, 200, "{r:?}");
    incoming_shape(r.data(), "PATCH /storage/incoming/{share_id}/mount");
    assert_eq!((r.data()["mount"].as_bool(), r.data()["status"].as_str(), r.data()["mount_path"].as_str()), (Some(true), Some("active"), Some("/hoody/shares/config")));
    assert_eq!(ls(&reader, "/hoody/shares/config"), ["app.yaml", "database.json", "secrets.env"]);

    // Backend shares its upload directory with every frontend; each accepts.
    let team = d.project("team");
    let backend = container(&d, &team, "backend");
    let fronts = [container(&d, &team, "frontend-1"), container(&d, &team, "frontend-2")];
    files(&backend, "/hoody/storage/user-uploads", &["first.jpg"]);
    let r = call(
        &d,
        "POST",
        &format!("/containers/{}/storage/shares", backend.id),
        Some(json!({"source_path": "/hoody/storage/user-uploads", "target_project_id": team, "mode": "readwrite", "alias": "uploads"})),
    );
    let uploads = created_share(&r, "uploads");
    for f in &fronts {
        let r = call(&d, "PATCH", &format!("/containers/{}/storage/incoming/{uploads}/mount", f.id), Some(json!({"mount": true})));
        assert_eq!((r.status, r.data()["status"].as_str()), (200, Some("active")), "{r:?}");
        incoming_shape(r.data(), "PATCH /containers/{id}/storage/incoming/{share_id}/mount");
    }
    // Upload from any frontend: visible to the backend and to the other frontend.
    std::fs::write(fronts[0].root.join("hoody/shares/uploads/from-1.jpg"), b"jpg").unwrap();
    assert_eq!(std::fs::read(backend.root.join("hoody/storage/user-uploads/from-1.jpg")).unwrap(), b"jpg");
    assert_eq!(std::fs::read(fronts[1].root.join("hoody/shares/uploads/from-1.jpg")).unwrap(), b"jpg");
    // The same share, seen without naming a container, is offered to two: the container form decides.
    let r = call(&d, "GET", &format!("/storage/incoming/{uploads}"), None);
    bad(&r, "container_id", "GET /storage/incoming/{id} offered to two containers");

    // Config container shares settings with all services (readonly): only it can update.
    let services = d.project("services");
    let config = container(&d, &services, "config");
    let svc = container(&d, &services, "svc");
    files(&config, "/hoody/storage/production-config", &["prod.yaml"]);
    let r = call(
        &d,
        "POST",
        &format!("/containers/{}/storage/shares", config.id),
        Some(json!({"source_path": "/hoody/storage/production-config", "target_project_id": services, "mode": "readonly", "alias": "config"})),
    );
    created_share(&r, "production config");
    assert_eq!(ls(&svc, "/hoody/shares/config"), ["prod.yaml"]);
    let err = std::fs::write(svc.root.join("hoody/shares/config/prod.yaml"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    // Developers share a workspace: both edit in real time.
    let dev = d.project("dev");
    let (dev_a, dev_b) = (container(&d, &dev, "dev-a"), container(&d, &dev, "dev-b"));
    files(&dev_a, "/home/user/project", &["main.rs"]);
    let r = call(
        &d,
        "POST",
        &format!("/containers/{}/storage/shares", dev_a.id),
        Some(json!({"source_path": "/home/user/project", "target_container_id": dev_b.id, "mode": "readwrite", "alias": "shared-project"})),
    );
    created_share(&r, "shared-project");
    std::fs::write(dev_b.root.join("hoody/shares/shared-project/main.rs"), b"fn main() {}").unwrap();
    assert_eq!(std::fs::read(dev_a.root.join("home/user/project/main.rs")).unwrap(), b"fn main() {}");

    // Services share logs with a monitoring container: POST /storage/shares twice.
    let ops = d.project("ops");
    let monitor = container(&d, &ops, "monitor");
    let (s1, s2) = (container(&d, &ops, "service1"), container(&d, &ops, "service2"));
    files(&s1, "/hoody/storage/service1/logs", &["s1.log"]);
    files(&s2, "/hoody/storage/service2/logs", &["s2.log"]);
    let r = call(&d, "POST", "/storage/shares", Some(json!({"source_path": "/hoody/storage/service1/logs", "target_container_id": monitor.id, "mode": "readonly"})));
    bad(&r, "source_container_id", "logs share without its source");
    // Both default to the alias `logs` (the last component): the later one fails, naming the conflict.
    let r1 = call(&d, "POST", "/storage/shares", Some(json!({"source_container_id": s1.id, "source_path": "/hoody/storage/service1/logs", "target_container_id": monitor.id, "mode": "readonly"})));
    let first = created_share(&r1, "service1 logs");
    let r2 = call(&d, "POST", "/storage/shares", Some(json!({"source_container_id": s2.id, "source_path": "/hoody/storage/service2/logs", "target_container_id": monitor.id, "mode": "readonly"})));
    let second = created_share(&r2, "service2 logs");
    assert_eq!(r2.data()["status"], "failed", "{r2:?}");
    assert!(r2.data()["status_message"].as_str().unwrap().contains(&first), "names the conflict: {r2:?}");
    // With the aliases the docs show, the monitor sees both.
    for (id, alias) in [(&first, "service1-logs"), (&second, "service2-logs")] {
        let r = call(&d, "PATCH", &format!("/storage/shares/{id}"), Some(json!({"alias": alias})));
        assert_eq!((r.status, r.data()["status"].as_str()), (200, Some("active")), "{r:?}");
        share_shape(r.data(), "PATCH /storage/shares/{id}");
    }
    assert_eq!(ls(&monitor, "/hoody/shares"), ["service1-logs", "service2-logs"]);
    assert_eq!(ls(&monitor, "/hoody/shares/service2-logs"), ["s2.log"]);

    // Check status: GET /api/v1/containers/{id}/storage/shares/{share_id} → "status": "active".
    let r = call(&d, "GET", &format!("/api/v1/containers/{}/storage/shares/{assets}", source.id), None);
    assert_eq!((r.status, r.data()["status"].as_str()), (200, Some("active")), "{r:?}");
    share_shape(r.data(), "GET share");
    let r = call(&d, "GET", &format!("/storage/shares/{assets}"), None);
    assert_eq!((r.status, r.data()["id"].as_str()), (200, Some(assets.as_str())), "{r:?}");
    share_shape(r.data(), "GET /storage/shares/{id}");

    // Disable for maintenance, then re-enable.
    let r = call(
        &d,
        "PATCH",
        &format!("/api/v1/containers/{}/storage/shares/{assets}", source.id),
        Some(json!({"enabled": false, "description": "Temporarily disabled for maintenance"})),
    );
    assert_eq!((r.status, r.data()["enabled"].as_bool(), r.data()["status"].as_str()), (200, Some(false), Some("disabled")), "{r:?}");
    share_shape(r.data(), "disable");
    assert!(!mounted(&target, "shared-assets"), "files unmount from targets");
    let r = call(&d, "PATCH", &format!("/api/v1/containers/{}/storage/shares/{assets}", source.id), Some(json!({"enabled": true})));
    assert_eq!((r.status, r.data()["status"].as_str()), (200, Some("active")), "{r:?}");
    assert_eq!(r.data()["description"], "Temporarily disabled for maintenance", "configuration preserved");
    assert!(mounted(&target, "shared-assets"));

    // Automatic expiration: the docs' 1735689600 (2025-01-01) is in the past now.
    files(&source, "/hoody/storage/temp-files", &["t"]);
    let expiring = |at: Value| {
        call(
            &d,
            "POST",
            &format!("/api/v1/containers/{}/storage/shares", source.id),
            Some(json!({"source_path": "/hoody/storage/temp-files", "target_container_id": target.id, "mode": "readonly", "expires_at": at})),
        )
    };
    bad(&expiring(json!(1735689600)), "expires_at", "an expiry in the past");
    let r = expiring(json!(now_unix() + 3600));
    let temp = created_share(&r, "expiring share");
    assert!(is_time(&r.data()["expires_at"]), "answered as RFC 3339: {r:?}");

    // Lists, per container and across all containers.
    let n = list(&call(&d, "GET", &format!("/containers/{}/storage/shares", source.id), None), "GET /containers/{id}/storage/shares", share_shape);
    assert_eq!(n, 4, "shared-assets, config, app-config, temp-files");
    let n = list(&call(&d, "GET", "/storage/shares", None), "GET /storage/shares", share_shape);
    assert_eq!(n, 9);
    let n = list(&call(&d, "GET", &format!("/containers/{}/storage/incoming", target.id), None), "GET /containers/{id}/storage/incoming", incoming_shape);
    assert_eq!(n, 3, "shared-assets, config, temp-files");
    let all = list(&call(&d, "GET", "/storage/incoming", None), "GET /storage/incoming", incoming_shape);
    assert!(all > n);

    // Update mode: readonly to readwrite.
    let r = call(&d, "PATCH", &format!("/containers/{}/storage/shares/{assets}", source.id), Some(json!({"mode": "readwrite", "description": "Now allows writes"})));
    assert_eq!((r.status, r.data()["mode"].as_str(), r.data()["description"].as_str()), (200, Some("readwrite"), Some("Now allows writes")), "{r:?}");
    std::fs::write(target.root.join("hoody/shares/shared-assets/new.css"), b"css").unwrap();

    // Delete: unmounts from all targets.
    let r = call(&d, "DELETE", &format!("/storage/shares/{temp}"), None);
    assert_eq!((r.status, r.data().is_null()), (200, true), "{r:?}");
    assert!(!mounted(&target, "temp-files"));
    assert_eq!(call(&d, "GET", &format!("/storage/shares/{temp}"), None).status, 404);

    // One source_path shared with three containers, then with the whole project.
    let (a, b, c) = (container(&d, &other_project, "A"), container(&d, &other_project, "B"), container(&d, &other_project, "C"));
    files(&source, "/hoody/storage/assets", &["a.png"]);
    for t in [&a, &b, &c] {
        bad(&call(&d, "POST", "/storage/shares", Some(json!({"source_path": "/hoody/storage/assets", "target_container_id": t.id, "mode": "readonly"}))), "source_container_id", "as written");
        let r = call(&d, "POST", "/storage/shares", Some(json!({"source_container_id": source.id, "source_path": "/hoody/storage/assets", "target_container_id": t.id, "mode": "readonly"})));
        created_share(&r, "one of three");
        assert_eq!(ls(t, "/hoody/shares/assets"), ["a.png"]);
    }
    let r = call(&d, "POST", "/storage/shares", Some(json!({"source_container_id": source.id, "source_path": "/hoody/storage/assets", "target_project_id": project, "mode": "readonly"})));
    created_share(&r, "once to the project");
    // Sharing /hoody/databases as written names no target: a 400, nothing created.
    let r = call(&d, "POST", "/storage/shares", Some(json!({"source_container_id": source.id, "source_path": "/hoody/databases", "mode": "readwrite"})));
    assert_eq!(r.status, 400, "{r:?}");

    // Reject, then accept later (a 1-to-1 share: the container-less form finds its one target).
    let r = call(&d, "PATCH", &format!("/storage/incoming/{assets}/mount"), Some(json!({"mount": false})));
    assert_eq!((r.status, r.data()["mount"].as_bool(), r.data()["status"].as_str()), (200, Some(false), Some("unmounted")), "{r:?}");
    assert!(!mounted(&target, "shared-assets"));
    let r = call(&d, "PATCH", &format!("/storage/incoming/{assets}/mount"), Some(json!({"mount": true})));
    assert_eq!((r.status, r.data()["status"].as_str()), (200, Some("active")), "{r:?}");
    assert!(ls(&target, "/hoody/shares/shared-assets").contains(&"logo.png".to_string()), "files appear");

    // Rename the alias: the old mount point becomes invalid, the new one is there.
    let r = call(&d, "PATCH", &format!("/api/v1/containers/{}/storage/shares/{assets}", source.id), Some(json!({"alias": "new-alias"})));
    assert_eq!((r.status, r.data()["alias"].as_str(), r.data()["status"].as_str()), (200, Some("new-alias"), Some("active")), "{r:?}");
    assert!(!mounted(&target, "shared-assets") && !target.root.join("hoody/shares/shared-assets").exists());
    assert!(ls(&target, "/hoody/shares/new-alias").contains(&"logo.png".to_string()));

    // Troubleshooting, source path doesn't exist: failed with a message; mkdir, enabled: true.
    let r = call(&d, "PATCH", &format!("/storage/shares/{assets}"), Some(json!({"enabled": false})));
    assert_eq!(r.status, 200);
    std::fs::rename(source.root.join("hoody/storage/shared-assets"), source.root.join("hoody/storage/elsewhere")).unwrap();
    let r = call(&d, "PATCH", &format!("/storage/shares/{assets}"), Some(json!({"enabled": true})));
    assert_eq!((r.status, r.data()["status"].as_str()), (200, Some("failed")), "{r:?}");
    assert!(r.data()["status_message"].as_str().unwrap().contains("/hoody/storage/shared-assets"), "{r:?}");
    std::fs::create_dir_all(source.root.join("hoody/storage/shared-assets")).unwrap();
    let r = call(&d, "PATCH", &format!("/storage/shares/{assets}"), Some(json!({"enabled": true})));
    assert_eq!((r.status, r.data()["status"].as_str()), (200, Some("active")), "{r:?}");

    // Verify share is active: GET /api/v1/containers/{target_id}/storage/incoming; the source runs.
    let r = call(&d, "GET", &format!("/api/v1/containers/{}/storage/incoming", target.id), None);
    list(&r, "incoming of the target", incoming_shape);
    let mine = r.data().as_array().unwrap().iter().find(|i| i["share_id"] == assets.as_str()).unwrap().clone();
    assert_eq!((mine["status"].as_str(), mine["mount"].as_bool()), (Some("active"), Some(true)), "{mine}");
    let r = call(&d, "GET", &format!("/api/v1/containers/{}", source.id), None);
    assert_eq!((r.status, r.data()["status"].as_str()), (200, Some("running")));
    shape(r.data(), CONTAINER, "GET /containers/{id}");
    // Unmount and remount.
    for mount in [false, true] {
        let r = call(&d, "PATCH", &format!("/storage/incoming/{assets}/mount"), Some(json!({"mount": mount})));
        assert_eq!((r.status, r.data()["mount"].as_bool()), (200, Some(mount)), "{r:?}");
    }
    // Or restart the target container.
    let r = call(&d, "POST", &format!("/api/v1/containers/{}/restart", target.id), None);
    assert_eq!((r.status, r.data()["status"].as_str()), (200, Some("running")), "{r:?}");
    shape(r.data(), CONTAINER, "POST /containers/{id}/restart");
    assert!(mounted(&target, "new-alias"));
    // Share is enabled: GET /storage/incoming/{share_id}.
    let r = call(&d, "GET", &format!("/storage/incoming/{assets}"), None);
    assert_eq!((r.status, r.data()["enabled"].as_bool()), (200, Some(true)), "{r:?}");
    incoming_shape(r.data(), "GET /storage/incoming/{id}");

    // Snapshot the source first, then delete the share.
    let r = call(&d, "POST", &format!("/api/v1/containers/{}/snapshots", source.id), Some(json!({"alias": "before-share-deletion"})));
    assert!(r.status == 201 || r.status == 202, "{r:?}");
    let r = call(&d, "DELETE", &format!("/api/v1/storage/shares/{assets}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!mounted(&target, "new-alias"));
}

/// A snapshot by its alias, once it is recorded (a long one answers 202 first).
fn snapshot_when_done(d: &Daemon, container: &str, alias: &str) -> Value {
    let started = Instant::now();
    loop {
        let r = call(d, "GET", &format!("/containers/{container}/snapshots/{alias}"), None);
        if r.status == 200 {
            return r.data().clone();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "snapshot {alias}: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_snapshots_page_example_by_example() {
    let d = Daemon::start();
    let prod = d.project("prod");
    let c = container(&d, &prod, "app");
    files(&c, "/srv/app", &["schema.sql"]);

    // 1) Mark the branch point, with the body as the page writes it (brackets), then as JSON.
    let raw = call_raw(&d, "POST", &format!("/api/v1/containers/{}/snapshots", c.id), r#"["alias": "pre-migration", "expiry": 30]"#);
    assert_eq!((raw.status, raw.code()), (400, "malformed_json"), "{raw:?}");
    assert!(raw.message().contains("line 1 column"), "{raw:?}");
    let r = call(&d, "POST", &format!("/api/v1/containers/{}/snapshots", c.id), Some(json!({"alias": "pre-migration", "expiry": 30})));
    assert!(r.status == 201 || r.status == 202, "{r:?}");
    let snap = if r.status == 201 { r.data().clone() } else { snapshot_when_done(&d, &c.id, "pre-migration") };
    shape(&snap, SNAPSHOT, "POST /containers/{id}/snapshots");
    let created = time::OffsetDateTime::parse(snap["created_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    let expires = time::OffsetDateTime::parse(snap["expires_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    assert!(((expires - created).whole_hours() - 30 * 24).abs() <= 1, "expiry in days: {snap}");
    let listed = call(&d, "GET", &format!("/containers/{}/snapshots", c.id), None);
    assert_eq!(list(&listed, "GET /containers/{id}/snapshots", |v, w| shape(v, SNAPSHOT, w)), 1);
    // snapshot_count is in the container API.
    let r = call(&d, "GET", &format!("/containers/{}", c.id), None);
    assert_eq!(r.data()["snapshot_count"], 1, "{r:?}");

    // 2) Restore in place.
    std::fs::write(c.root.join("srv/app/schema.sql"), b"DROP TABLE users;").unwrap();
    let r = call(&d, "PATCH", &format!("/containers/{}/snapshots/pre-migration", c.id), None);
    assert!(r.status == 200 || r.status == 202, "{r:?}");
    shape(&r.data()["container"], CONTAINER, "restore's container");
    let started = Instant::now();
    while std::fs::read_to_string(c.root.join("srv/app/schema.sql")).unwrap() != "schema.sql of /srv/app" {
        assert!(started.elapsed() < Duration::from_secs(60), "restored");
        std::thread::sleep(Duration::from_millis(100));
    }

    // 3) Fork: the body as written (brackets) is refused precisely; as JSON it
    // must answer in the envelope. Copy is SPEC's "Copy and sync", not served
    // by this daemon yet: an enveloped 404 naming the route until it is.
    let raw = call_raw(&d, "POST", &format!("/api/v1/containers/{}/copy", c.id), r#"["target_project_id":"prod","name":"experiment-a","source_snapshot":"pre-migration"]"#);
    assert!(raw.status == 400 || raw.status == 404, "{raw:?}");
    let r = call(&d, "POST", &format!("/api/v1/containers/{}/copy", c.id), Some(json!({"target_project_id": prod, "name": "experiment-a", "source_snapshot": "pre-migration"})));
    match r.status {
        201 => shape(r.data(), CONTAINER, "POST /containers/{id}/copy"),
        404 => assert!(r.message().contains("copy"), "{r:?}"),
        other => panic!("copy answered {other}: {r:?}"),
    }
}

/// Every route of the seeds and SPEC is in `/openapi.json`, and the share
/// state words are an enum there.
#[test]
fn the_openapi_document_shows_every_documented_route() {
    let d = Daemon::start();
    let doc = d.request("GET", "/openapi.json", None, None);
    assert_eq!(doc.status, 200);
    let paths = doc.body["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/containers/{id}/storage/shares", &["post", "get"][..]),
        ("/api/v1/storage/shares", &["post", "get"]),
        ("/api/v1/containers/{id}/storage/shares/{share_id}", &["get", "patch"]),
        ("/api/v1/storage/shares/{share_id}", &["get", "patch", "delete"]),
        ("/api/v1/containers/{id}/storage/incoming", &["get"]),
        ("/api/v1/storage/incoming", &["get"]),
        ("/api/v1/containers/{id}/storage/incoming/{share_id}", &["get"]),
        ("/api/v1/storage/incoming/{share_id}", &["get"]),
        ("/api/v1/containers/{id}/storage/incoming/{share_id}/mount", &["patch"]),
        ("/api/v1/storage/incoming/{share_id}/mount", &["patch"]),
        ("/api/v1/containers/{id}/snapshots", &["post", "get"]),
        ("/api/v1/containers/{id}/snapshots/{alias}", &["get", "patch", "delete"]),
        ("/api/v1/containers/{id}/{operation}", &["post"]),
        ("/api/v1/containers/{id}", &["get", "patch", "delete"]),
        ("/api/v1/servers", &["get"]),
        ("/api/v1/tokens", &["get", "post"]),
    ] {
        let item = paths.get(path).unwrap_or_else(|| panic!("openapi lacks {path}"));
        for m in methods {
            assert!(item.get(*m).is_some(), "openapi lacks {m} {path}");
        }
    }
    // Lists document limit and offset.
    for path in ["/api/v1/containers/{id}/snapshots", "/api/v1/storage/shares", "/api/v1/storage/incoming", "/api/v1/containers/{id}/storage/incoming", "/api/v1/servers"] {
        let params: Vec<&str> = paths[path]["get"]["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert!(params.contains(&"limit") && params.contains(&"offset"), "{path}: {params:?}");
    }
    let status = &doc.body["components"]["schemas"]["ShareStatus"];
    let mut words: Vec<&str> = status["enum"].as_array().unwrap_or_else(|| panic!("ShareStatus enum: {status}")).iter().map(|v| v.as_str().unwrap()).collect();
    words.sort();
    assert_eq!(words, ["active", "disabled", "expired", "failed", "pending", "unmounted"]);
    let share = &doc.body["components"]["schemas"]["Share"]["properties"];
    assert!(share["status"].is_object() && share["status_message"].is_object(), "{share}");
}

//! The engine tested in-process, against a temp data dir: no binary, no
//! socket, no HTTP. The calls are the `HoodyService` the HTTP layer makes, so
//! what holds here holds behind the API; the HTTP shape itself is tested in
//! tests/api.rs against the real daemon.

use std::path::Path;
use std::sync::Arc;

use hoody_api::model::{CreateContainer, CreateProject, CreateSnapshot, Principal};
use hoody_api::{ApiError, HoodyService};
use hoodyd::daemon::config::HostPaths;
use hoodyd::engine::Engine;
use hoodyd::layout::DataLayout;

/// An engine on a data dir of its own, with the admin's principal.
struct InProcess {
    engine: Arc<Engine>,
    admin: Principal,
    _dir: tempfile::TempDir,
}

impl InProcess {
    async fn open(host_paths: HostPaths) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let layout = DataLayout::new(dir.path());
        let boot = hoodyd::daemon::bootstrap::init(&layout, "in-process").await.unwrap();
        let engine = Engine::new(boot.catalog, layout.clone(), boot.node, host_paths).unwrap();
        let token = std::fs::read_to_string(layout.admin_token()).unwrap();
        let admin = engine.authenticate(token.trim()).await.unwrap();
        InProcess { engine, admin, _dir: dir }
    }

    async fn container(&self, who: &Principal, name: &str) -> hoody_api::model::Container {
        let project = self.engine.create_project(who, CreateProject { name: format!("p-{name}"), description: None }).await.unwrap();
        self.engine.create_container(who, create(name, &project.id)).await.unwrap()
    }
}

fn create(name: &str, project: &str) -> CreateContainer {
    serde_json::from_value(serde_json::json!({"name": name, "project_id": project})).unwrap()
}

#[tokio::test]
async fn a_snapshot_restores_the_files_it_captured() {
    let node = InProcess::open(HostPaths::default()).await;
    let c = node.container(&node.admin, "web").await;
    let rootfs = Path::new(&c.rootfs_path);
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/app.conf"), b"v1").unwrap();
    let snap = node.engine.create_snapshot(&node.admin, &c.id, CreateSnapshot { alias: Some("one".into()), expiry: None }).await;
    assert!(snap.is_ok(), "{snap:?}");
    std::fs::write(rootfs.join("etc/app.conf"), b"v2").unwrap();
    std::fs::write(rootfs.join("new"), b"x").unwrap();
    node.engine.restore_snapshot(&node.admin, &c.id, "one").await.unwrap();
    assert_eq!(std::fs::read(rootfs.join("etc/app.conf")).unwrap(), b"v1");
    assert!(!rootfs.join("new").exists());
}

#[tokio::test]
async fn host_paths_are_refused_to_tenants_in_process_too() {
    let roots = tempfile::tempdir().unwrap();
    let legacy = tempfile::tempdir_in(roots.path()).unwrap();
    let node = InProcess::open(HostPaths { adopt_roots: vec![roots.path().to_path_buf()], cgroup_root: None }).await;
    let token = hoodyd::tokens::issue(node.engine.catalog(), &node.engine.catalog().ensure_account("mallory", false).await.unwrap()).await.unwrap();
    let mallory = node.engine.authenticate(&token).await.unwrap();
    let project = node.engine.create_project(&mallory, CreateProject { name: "m".into(), description: None }).await.unwrap();
    let mut req = create("x", &project.id);
    req.rootfs_path = Some(legacy.path().to_string_lossy().into_owned());
    match node.engine.create_container(&mallory, req).await {
        Err(ApiError::ForbiddenField { field, .. }) => assert_eq!(field, "rootfs_path"),
        other => panic!("{other:?}"),
    }
    let admin_project = node.engine.create_project(&node.admin, CreateProject { name: "a".into(), description: None }).await.unwrap();
    let mut req = create("legacy", &admin_project.id);
    req.rootfs_path = Some(legacy.path().to_string_lossy().into_owned());
    let adopted = node.engine.create_container(&node.admin, req).await.unwrap();
    let deleted = node.engine.delete_container(&node.admin, &adopted.id).await.unwrap();
    assert!(!deleted.rootfs_removed);
    assert!(legacy.path().exists(), "an adopted rootfs stays");
}

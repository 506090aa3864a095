//! Shares between containers of one node through the real daemon: registry,
//! mounts at `<target rootfs>/hoody/shares/<alias>`, lifecycle, restart.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{path_of, Daemon};
use serde_json::{json, Value};

fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists();
    if !ok {
        common::skip("/dev/fuse is absent");
    }
    ok
}

fn is_mountpoint(p: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < Duration::from_secs(5), "{what} within 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Pair {
    source: String,
    source_root: PathBuf,
    target: String,
    target_root: PathBuf,
    project: String,
}

fn pair(d: &Daemon) -> Pair {
    let project = d.project("app");
    let s = d.container(&project, "source");
    let t = d.container(&project, "target");
    let source_root = path_of(&s);
    std::fs::create_dir_all(source_root.join("hoody/storage/assets")).unwrap();
    std::fs::write(source_root.join("hoody/storage/assets/logo.txt"), b"logo").unwrap();
    Pair { source: s["id"].as_str().unwrap().into(), source_root, target: t["id"].as_str().unwrap().into(), target_root: path_of(&t), project }
}

fn share(d: &Daemon, p: &Pair, body: Value) -> common::Reply {
    d.call("POST", &format!("/containers/{}/storage/shares", p.source), Some(body))
}

/// Reads `path` as a process chrooted into `root` sees it.
fn read_in_chroot(root: &Path, path: &str) -> Option<Vec<u8>> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let (root, path, out_path) = (root.to_path_buf(), path.to_string(), out.path().to_path_buf());
    let dump = std::fs::File::create(&out_path).unwrap();
    let mut cmd = std::process::Command::new("/bin/true");
    // SAFETY: only chroot, read and write happen between fork and exit.
    unsafe {
        cmd.pre_exec(move || {
            use std::io::Write;
            std::os::unix::fs::chroot(&root)?;
            std::env::set_current_dir("/")?;
            let code = match std::fs::read(&path) {
                Ok(data) => {
                    let mut f = &dump;
                    f.write_all(&data)?;
                    0
                }
                Err(_) => 3,
            };
            libc::_exit(code)
        });
    }
    let status = cmd.status().unwrap();
    status.success().then(|| std::fs::read(out_path).unwrap())
}

#[test]
fn a_share_appears_in_the_target_and_follows_its_lifecycle() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": p.target, "mode": "readwrite", "description": "assets"}));
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.data()["id"].as_str().unwrap().to_string();
    assert_eq!(r.data()["alias"], "assets", "alias defaults to the last component");
    assert_eq!(r.data()["targets"][0]["status"], "active", "{r:?}");
    let mnt = p.target_root.join("hoody/shares/assets");
    assert!(is_mountpoint(&mnt));
    assert_eq!(read_in_chroot(&p.target_root, "/hoody/shares/assets/logo.txt").as_deref(), Some(&b"logo"[..]), "seen at /hoody/shares/<alias> from inside");
    std::fs::write(mnt.join("from-target.txt"), b"hi").unwrap();
    assert_eq!(std::fs::read(p.source_root.join("hoody/storage/assets/from-target.txt")).unwrap(), b"hi");
    let metrics = d.request("GET", "/metrics", None, None);
    let metric = |name: &str| -> u64 {
        let text = metrics.body.as_str().unwrap();
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {text}"));
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(metric("hoody_share_mounts"), 1);
    assert!(metric("hoody_share_requests_total") > 0);
    assert!(metric("hoody_share_held_files") >= 1);
    // Present and a number (how many depends on the reader's idle time).
    let _ = metric("hoody_share_directories_read_ahead_total");

    let incoming = d.call("GET", &format!("/containers/{}/storage/incoming", p.target), None);
    assert_eq!(incoming.body["total"], 1);
    assert_eq!(incoming.data()[0]["status"], "active");
    assert_eq!(incoming.data()[0]["mount_path"], "/hoody/shares/assets");
    assert_eq!(d.call("GET", "/storage/incoming", None).body["total"], 1);
    assert_eq!(d.call("GET", &format!("/containers/{}/storage/shares", p.source), None).body["total"], 1);
    assert_eq!(d.call("GET", "/storage/shares", None).body["total"], 1);
    assert_eq!(d.call("GET", &format!("/containers/{}/storage/shares/{id}", p.source), None).data()["description"], "assets");

    // Disable: unmounted within seconds, configuration kept; enable: back.
    let off = d.call("PATCH", &format!("/containers/{}/storage/shares/{id}", p.source), Some(json!({"enabled": false})));
    assert_eq!(off.data()["targets"][0]["status"], "disabled");
    wait_until("unmount after disable", || !is_mountpoint(&mnt));
    d.call("PATCH", &format!("/containers/{}/storage/shares/{id}", p.source), Some(json!({"enabled": true})));
    wait_until("remount after enable", || is_mountpoint(&mnt));

    // The target decides IF.
    let no = d.call("PATCH", &format!("/containers/{}/storage/incoming/{id}/mount", p.target), Some(json!({"mount": false})));
    assert_eq!((no.data()["mount"].as_bool(), no.data()["status"].as_str()), (Some(false), Some("unmounted")));
    assert!(!is_mountpoint(&mnt));
    d.call("PATCH", &format!("/containers/{}/storage/shares/{id}", p.source), Some(json!({"description": "still off"})));
    assert!(!is_mountpoint(&mnt), "stays off until the target says yes");
    let yes = d.call("PATCH", &format!("/containers/{}/storage/incoming/{id}/mount", p.target), Some(json!({"mount": true})));
    assert_eq!(yes.data()["status"], "active");
    assert!(is_mountpoint(&mnt));

    // Readonly applies at the next mount, and is enforced.
    d.call("PATCH", &format!("/containers/{}/storage/shares/{id}", p.source), Some(json!({"mode": "readonly"})));
    d.call("PATCH", &format!("/containers/{}/storage/incoming/{id}/mount", p.target), Some(json!({"mount": false})));
    d.call("PATCH", &format!("/containers/{}/storage/incoming/{id}/mount", p.target), Some(json!({"mount": true})));
    let err = std::fs::write(mnt.join("nope.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    // Delete: unmounted and gone.
    assert_eq!(d.call("DELETE", &format!("/storage/shares/{id}"), None).status, 200);
    assert!(!is_mountpoint(&mnt));
    assert_eq!(d.call("GET", &format!("/containers/{}/storage/incoming", p.target), None).body["total"], 0);
}

#[test]
fn bad_share_input_is_a_400_naming_the_field() {
    let d = Daemon::start();
    let p = pair(&d);
    let cases = [
        (json!({"source_path": "/hoody/storage/assets", "mode": "readonly"}), "target_container_id"),
        (json!({"source_path": "/hoody/storage/assets", "mode": "readonly", "target_container_id": p.target, "target_project_id": p.project}), "target_project_id"),
        (json!({"source_path": "relative/dir", "mode": "readonly", "target_container_id": p.target}), "source_path"),
        (json!({"source_path": "/does/not/exist", "mode": "readonly", "target_container_id": p.target}), "source_path"),
        (json!({"source_path": "/hoody/storage/assets", "mode": "sideways", "target_container_id": p.target}), "mode"),
        (json!({"source_path": "/hoody/storage/assets", "mode": "readonly", "target_container_id": p.target, "alias": "a/b"}), "alias"),
        (json!({"source_path": "/hoody/storage/assets", "mode": "readonly", "target_container_id": p.target, "expires_at": 1000}), "expires_at"),
    ];
    for (body, field) in cases {
        let r = share(&d, &p, body.clone());
        assert_eq!((r.status, r.field()), (400, field), "{body}: {r:?}");
    }
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "mode": "readonly", "target_container_id": "nope"}));
    assert_eq!((r.status, r.field()), (404, "target_container_id"));
    assert_eq!(d.call("GET", "/storage/shares", None).body["total"], 0, "nothing created");
}

#[test]
fn project_wide_shares_reach_later_containers_and_alias_conflicts_fail_the_later() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    std::fs::create_dir_all(p.source_root.join("srv/other/assets")).unwrap();
    let first = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_project_id": p.project, "mode": "readonly"}));
    assert_eq!(first.status, 201);
    let later = d.container(&p.project, "later");
    let later_root = path_of(&later);
    assert!(is_mountpoint(&later_root.join("hoody/shares/assets")), "a container created later mounts it");
    assert!(is_mountpoint(&p.target_root.join("hoody/shares/assets")));
    assert!(!p.source_root.join("hoody/shares/assets").exists(), "not mounted in its own source");

    let second = share(&d, &p, json!({"source_path": "/srv/other/assets", "target_container_id": p.target, "mode": "readonly"}));
    assert_eq!(second.status, 201);
    let t = &second.data()["targets"][0];
    assert_eq!(t["status"], "failed", "{second:?}");
    assert!(t["status_message"].as_str().unwrap().contains(first.data()["id"].as_str().unwrap()), "names the other share: {t}");
}

#[test]
fn a_missing_source_fails_and_enabling_after_the_fix_retries() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": p.target, "mode": "readwrite"}));
    let id = r.data()["id"].as_str().unwrap().to_string();
    d.call("PATCH", &format!("/containers/{}/storage/shares/{id}", p.source), Some(json!({"enabled": false})));
    std::fs::rename(p.source_root.join("hoody/storage/assets"), p.source_root.join("hoody/storage/moved")).unwrap();
    let r = d.call("PATCH", &format!("/containers/{}/storage/shares/{id}", p.source), Some(json!({"enabled": true})));
    let t = &r.data()["targets"][0];
    assert_eq!(t["status"], "failed", "{r:?}");
    assert!(t["status_message"].as_str().unwrap().contains("/hoody/storage/assets"), "{t}");
    std::fs::rename(p.source_root.join("hoody/storage/moved"), p.source_root.join("hoody/storage/assets")).unwrap();
    let r = d.call("PATCH", &format!("/containers/{}/storage/shares/{id}", p.source), Some(json!({"enabled": true})));
    assert_eq!(r.data()["targets"][0]["status"], "active", "{r:?}");
}

#[test]
fn mounts_come_back_after_a_restart_and_a_crash_leaves_nothing_stale() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": p.target, "mode": "readwrite"}));
    assert_eq!(r.status, 201);
    let mnt = p.target_root.join("hoody/shares/assets");
    assert!(is_mountpoint(&mnt));
    let dir = d.into_dir();
    assert!(!is_mountpoint(&mnt), "a clean shutdown leaves no mount behind");
    let mut d = Daemon::start_in(dir, &[]);
    wait_until("remount after restart", || is_mountpoint(&mnt));
    d.stop_with(libc::SIGKILL, Duration::from_secs(5));
    assert!(is_mountpoint(&mnt), "a killed daemon leaves its mount");
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    let d = Daemon::start_in(dir, &[]);
    wait_until("a working mount after the crash", || std::fs::read(mnt.join("logo.txt")).is_ok_and(|b| b == b"logo"));
    let count = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap())).count();
    assert_eq!(count, 1, "the stale mount was removed before remounting");
    drop(d);
}

#[test]
fn another_accounts_target_sees_the_share_as_incoming_only() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    let bob = d.token_for("bob");
    let bp = d.call_as(&bob, "POST", "/projects", Some(json!({"name": "bob"}))).data()["id"].as_str().unwrap().to_string();
    let bc = d.call_as(&bob, "POST", "/containers", Some(json!({"name": "b", "project_id": bp}))).data().clone();
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": bc["id"], "mode": "readonly"}));
    assert_eq!(r.status, 201, "{r:?}");
    let inc = d.call_as(&bob, "GET", "/storage/incoming", None);
    assert_eq!(inc.body["total"], 1);
    assert_eq!(d.call_as(&bob, "GET", "/storage/shares", None).body["total"], 0, "not bob's share");
    assert_eq!(d.call("GET", "/storage/incoming", None).body["total"], 0, "not the admin's container");
    assert!(!is_mountpoint(&path_of(&bc).join("hoody/shares/assets")), "an offer, not mounted before bob accepts it");
}

/// A second account, `mallory`, with a project and a container in it.
struct Other {
    token: String,
    project: String,
    container: Value,
}

fn mallory(d: &Daemon) -> Other {
    let token = d.token_for("mallory");
    let project = d.call_as(&token, "POST", "/projects", Some(json!({"name": "mallory"}))).data()["id"].as_str().unwrap().to_string();
    let container = mallorys_container(d, &token, &project, "m");
    Other { token, project, container }
}

fn mallorys_container(d: &Daemon, token: &str, project: &str, name: &str) -> Value {
    let r = d.call_as(token, "POST", "/containers", Some(json!({"name": name, "project_id": project})));
    assert_eq!(r.status, 201, "{r:?}");
    r.data().clone()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// Mallory's incoming view of `share` in `container`.
fn incoming_of(d: &Daemon, m: &Other, container: &str, share: &str) -> Value {
    let all = d.call_as(&m.token, "GET", &format!("/containers/{container}/storage/incoming"), None);
    all.data().as_array().unwrap().iter().find(|i| i["share_id"] == share).unwrap_or_else(|| panic!("{share} offered to {container}: {all:?}")).clone()
}

/// Issue 15 item 4: a share into another account's container (or project) is
/// an offer: `pending` there, mounted nowhere, until that container says
/// `mount: true`; for a project each container accepts for itself; an
/// acceptance survives a restart.
#[test]
fn another_accounts_share_is_pending_until_its_target_accepts_it() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    let m = mallory(&d);
    let mc = id_of(&m.container);
    let mc_root = path_of(&m.container);
    let mnt = mc_root.join("hoody/shares/assets");
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": mc, "mode": "readonly"}));
    assert_eq!(r.status, 201, "{r:?}");
    let id = id_of(r.data());
    assert_eq!((r.data()["targets"][0]["status"].as_str(), r.data()["targets"][0]["mount"].as_bool()), (Some("pending"), Some(false)), "{r:?}");
    assert!(!is_mountpoint(&mnt), "nothing mounted before mallory accepts");
    assert_eq!(read_in_chroot(&mc_root, "/hoody/shares/assets/logo.txt"), None);
    let inc = incoming_of(&d, &m, &mc, &id);
    assert_eq!((inc["status"].as_str(), inc["mount"].as_bool()), (Some("pending"), Some(false)), "{inc}");
    assert!(inc["status_message"].as_str().unwrap().contains("acceptance"), "says it waits for the target account: {inc}");
    // The source's account cannot accept on mallory's behalf.
    let r = d.call("PATCH", &format!("/containers/{mc}/storage/incoming/{id}/mount"), Some(json!({"mount": true})));
    assert_eq!(r.status, 404, "{r:?}");
    assert!(!is_mountpoint(&mnt));

    // A project-wide offer: each of mallory's containers accepts for itself.
    let other = mallorys_container(&d, &m.token, &m.project, "m2");
    let (other_id, other_root) = (id_of(&other), path_of(&other));
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_project_id": m.project, "mode": "readonly", "alias": "project"}));
    assert_eq!(r.status, 201, "{r:?}");
    let project_share = id_of(r.data());
    assert!(r.data()["targets"].as_array().unwrap().iter().all(|t| t["status"] == "pending"), "{r:?}");
    let r = d.call_as(&m.token, "PATCH", &format!("/containers/{other_id}/storage/incoming/{project_share}/mount"), Some(json!({"mount": true})));
    assert_eq!(r.data()["status"], "active", "{r:?}");
    assert!(is_mountpoint(&other_root.join("hoody/shares/project")));
    assert!(!is_mountpoint(&mc_root.join("hoody/shares/project")), "the other container has not accepted");
    assert_eq!(incoming_of(&d, &m, &mc, &project_share)["status"], "pending");

    // Mallory accepts the 1-to-1 share: mounted, the file seen from inside.
    let r = d.call_as(&m.token, "PATCH", &format!("/containers/{mc}/storage/incoming/{id}/mount"), Some(json!({"mount": true})));
    assert_eq!((r.data()["status"].as_str(), r.data()["mount"].as_bool()), (Some("active"), Some(true)), "{r:?}");
    assert!(is_mountpoint(&mnt));
    assert_eq!(read_in_chroot(&mc_root, "/hoody/shares/assets/logo.txt").as_deref(), Some(&b"logo"[..]));

    // The acceptances are in the catalog: after a restart the same mounts come back.
    let dir = d.into_dir();
    assert!(!is_mountpoint(&mnt));
    let d = Daemon::start_in(dir, &[]);
    wait_until("the accepted share remounted after a restart", || is_mountpoint(&mnt));
    wait_until("the accepted project share remounted after a restart", || is_mountpoint(&other_root.join("hoody/shares/project")));
    assert_eq!(read_in_chroot(&mc_root, "/hoody/shares/assets/logo.txt").as_deref(), Some(&b"logo"[..]));
    assert!(!is_mountpoint(&mc_root.join("hoody/shares/project")), "still not accepted there");
    assert_eq!(incoming_of(&d, &m, &mc, &id)["status"], "active");
    assert_eq!(incoming_of(&d, &m, &mc, &project_share)["status"], "pending");
}

/// Issue 15 item 4: in an alias conflict a container's own account's share wins
/// over another account's, even one created earlier and already accepted.
#[test]
fn a_containers_own_share_wins_an_alias_conflict_over_another_accounts() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    let m = mallory(&d);
    let (mc, mc_root) = (id_of(&m.container), path_of(&m.container));
    let theirs = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": mc, "mode": "readonly", "alias": "data"}));
    assert_eq!(theirs.status, 201, "{theirs:?}");
    let theirs = id_of(theirs.data());
    let r = d.call_as(&m.token, "PATCH", &format!("/containers/{mc}/storage/incoming/{theirs}/mount"), Some(json!({"mount": true})));
    assert_eq!(r.data()["status"], "active", "{r:?}");
    assert_eq!(read_in_chroot(&mc_root, "/hoody/shares/data/logo.txt").as_deref(), Some(&b"logo"[..]));

    // Mallory shares her own directory into the same container under the same alias, later.
    let ms = mallorys_container(&d, &m.token, &m.project, "mine");
    std::fs::create_dir_all(path_of(&ms).join("srv/data")).unwrap();
    std::fs::write(path_of(&ms).join("srv/data/own.txt"), b"mine").unwrap();
    let r = d.call_as(&m.token, "POST", &format!("/containers/{}/storage/shares", id_of(&ms)), Some(json!({"source_path": "/srv/data", "target_container_id": mc, "mode": "readonly", "alias": "data"})));
    assert_eq!(r.status, 201, "{r:?}");
    let own = id_of(r.data());
    assert_eq!(r.data()["targets"][0]["status"], "active", "mallory's own share wins: {r:?}");
    assert_eq!(read_in_chroot(&mc_root, "/hoody/shares/data/own.txt").as_deref(), Some(&b"mine"[..]), "mallory's own share is what is mounted");
    assert_eq!(read_in_chroot(&mc_root, "/hoody/shares/data/logo.txt"), None);
    let lost = incoming_of(&d, &m, &mc, &theirs);
    assert_eq!(lost["status"], "failed", "{lost}");
    let msg = lost["status_message"].as_str().unwrap();
    assert!(msg.contains("alias") && msg.contains(&own), "names the conflict and the winner: {msg}");
    let seen_by_source = d.call("GET", &format!("/containers/{}/storage/shares/{theirs}", p.source), None);
    assert_eq!(seen_by_source.data()["targets"][0]["status"], "failed", "{seen_by_source:?}");

    // Accepting it again changes nothing: the container's own share keeps the alias.
    let r = d.call_as(&m.token, "PATCH", &format!("/containers/{mc}/storage/incoming/{theirs}/mount"), Some(json!({"mount": true})));
    assert_eq!(r.data()["status"], "failed", "{r:?}");
    assert_eq!(incoming_of(&d, &m, &mc, &own)["status"], "active");
    assert_eq!(read_in_chroot(&mc_root, "/hoody/shares/data/own.txt").as_deref(), Some(&b"mine"[..]));
}

/// Issue 15 item 4: deleting a target container never deletes another
/// account's share into it; the share stays its owner's, without that target.
#[test]
fn deleting_a_target_container_keeps_another_accounts_share_without_it() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    let m = mallory(&d);
    let (mc, mc_root) = (id_of(&m.container), path_of(&m.container));
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": mc, "mode": "readwrite"}));
    let id = id_of(r.data());
    d.call_as(&m.token, "PATCH", &format!("/containers/{mc}/storage/incoming/{id}/mount"), Some(json!({"mount": true})));
    assert!(is_mountpoint(&mc_root.join("hoody/shares/assets")));
    // Mallory's own share into the same container goes with it, as before.
    let ms = mallorys_container(&d, &m.token, &m.project, "mine");
    std::fs::create_dir_all(path_of(&ms).join("srv/own")).unwrap();
    let r = d.call_as(&m.token, "POST", &format!("/containers/{}/storage/shares", id_of(&ms)), Some(json!({"source_path": "/srv/own", "target_container_id": mc, "mode": "readonly"})));
    assert_eq!(r.status, 201, "{r:?}");

    assert_eq!(d.call_as(&m.token, "DELETE", &format!("/containers/{mc}"), None).status, 200);
    assert!(!mc_root.exists());
    let kept = d.call("GET", &format!("/containers/{}/storage/shares/{id}", p.source), None);
    assert_eq!(kept.status, 200, "the other account's share is not deleted: {kept:?}");
    assert_eq!(kept.data()["targets"], json!([]), "without the deleted target: {kept:?}");
    assert_eq!(d.call("GET", "/storage/shares", None).body["total"], 1);
    assert_eq!(d.call_as(&m.token, "GET", "/storage/shares", None).body["total"], 0, "mallory's own share into it is deleted");
    assert_eq!(std::fs::read(p.source_root.join("hoody/storage/assets/logo.txt")).unwrap(), b"logo");
}

#[test]
fn deleting_a_target_container_with_a_mounted_share_never_touches_the_source() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": p.target, "mode": "readwrite"}));
    assert_eq!(d.call("DELETE", &format!("/containers/{}", p.target), None).status, 200);
    assert!(!p.target_root.exists());
    assert_eq!(std::fs::read(p.source_root.join("hoody/storage/assets/logo.txt")).unwrap(), b"logo");
}

#[test]
fn an_expired_share_is_unmounted_by_itself() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 2;
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": p.target, "mode": "readonly", "expires_at": expires}));
    let id = r.data()["id"].as_str().unwrap().to_string();
    let mnt = p.target_root.join("hoody/shares/assets");
    assert!(is_mountpoint(&mnt));
    std::thread::sleep(Duration::from_secs(2));
    wait_until("unmount after expiry", || !is_mountpoint(&mnt));
    let s = d.call("GET", &format!("/containers/{}/storage/shares/{id}", p.source), None);
    assert_eq!(s.data()["targets"][0]["status"], "expired");
}

#[test]
fn a_stopped_source_fails_fast_and_serves_again_when_started() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": p.target, "mode": "readwrite"}));
    let mnt = p.target_root.join("hoody/shares/assets");
    assert_eq!(std::fs::read(mnt.join("logo.txt")).unwrap(), b"logo");
    assert_eq!(d.call("POST", &format!("/containers/{}/stop", p.source), None).status, 200);
    let started = Instant::now();
    let err = std::fs::read(mnt.join("logo.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(std::fs::write(mnt.join("new.txt"), b"x").is_err());
    assert!(started.elapsed() < Duration::from_secs(1), "fails at once");
    assert!(is_mountpoint(&mnt), "stays mounted");
    assert_eq!(d.call("POST", &format!("/containers/{}/start", p.source), None).status, 200);
    assert_eq!(std::fs::read(mnt.join("logo.txt")).unwrap(), b"logo", "works again without a remount");
}

/// Resident memory (KiB) and threads of a process.
fn footprint(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|line| line.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Issue 4 item 9: 100 targets × 2 shares = 200 mounts on one daemon. Each
/// mount costs a small constant: its thread and a little memory.
#[test]
fn two_hundred_mounts_cost_a_small_constant_each() {
    if !fuse_available() {
        return;
    }
    const TARGETS: usize = 100;
    let d = Daemon::start();
    let sources = d.project("sources");
    let source = d.container(&sources, "source");
    let source_id = source["id"].as_str().unwrap().to_string();
    for dir in ["data/a", "data/b"] {
        std::fs::create_dir_all(path_of(&source).join(dir)).unwrap();
        std::fs::write(path_of(&source).join(dir).join("f"), dir).unwrap();
    }
    let targets = d.project("targets");
    let roots: Vec<PathBuf> = (0..TARGETS).map(|i| path_of(&d.container(&targets, &format!("t{i}")))).collect();
    let mut footprints = vec![footprint(d.pid())];
    for (n, alias) in ["a", "b"].iter().enumerate() {
        let started = Instant::now();
        let body = json!({"source_path": format!("/data/{alias}"), "target_project_id": targets, "mode": "readwrite"});
        let r = d.call("POST", &format!("/containers/{source_id}/storage/shares"), Some(body));
        assert_eq!(r.status, 201, "{r:?}");
        let active = r.data()["targets"].as_array().unwrap().iter().filter(|t| t["status"] == "active").count();
        assert_eq!(active, TARGETS, "{r:?}");
        // Every mount answers: the kernel has initialised each connection.
        for root in &roots {
            assert_eq!(std::fs::read(root.join("hoody/shares").join(alias).join("f")).unwrap(), format!("data/{alias}").as_bytes());
        }
        footprints.push(footprint(d.pid()));
        eprintln!("{} mounts made and read in {:?}", (n + 1) * TARGETS, started.elapsed());
    }
    let incoming = d.call("GET", "/storage/incoming?limit=1000", None);
    assert_eq!(incoming.body["total"], 2 * TARGETS as u64, "{incoming:?}");

    let per_mount = |from: usize, to: usize| {
        let (rss, threads) = (footprints[to].0 as f64 - footprints[from].0 as f64, footprints[to].1 as f64 - footprints[from].1 as f64);
        (rss / TARGETS as f64, threads / TARGETS as f64)
    };
    let (first_rss, first_threads) = per_mount(0, 1);
    let (second_rss, second_threads) = per_mount(1, 2);
    eprintln!(
        "daemon: {:?} (RSS KiB, threads) with no mounts, {:?} with 100, {:?} with 200; per mount: {first_rss:.0} KiB and {first_threads:.2} threads for the first 100, {second_rss:.0} KiB and {second_threads:.2} threads for the next 100",
        footprints[0], footprints[1], footprints[2]
    );
    assert!(second_threads <= 1.1, "threads per mount: {second_threads}");
    assert!(second_rss <= 256.0, "resident KiB per mount: {second_rss}");
    // A constant: the second hundred costs what the first did.
    assert!((second_threads - first_threads).abs() <= 0.1, "{first_threads} then {second_threads}");
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Issue 16 item 3: a new alias is mounted at once in every target and the old
/// `/hoody/shares/<alias>` goes (the seeds: it "becomes invalid"); a new mode
/// is applied at once too; a rename cannot take a name another share has
/// mounted in a target, and a later rename to a free name retries.
#[test]
fn renaming_a_shares_alias_remounts_it_at_once_in_every_target() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    let later = d.container(&p.project, "later");
    let roots = [p.target_root.clone(), path_of(&later)];
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_project_id": p.project, "mode": "readwrite"}));
    assert_eq!(r.status, 201, "{r:?}");
    let id = id_of(r.data());
    for root in &roots {
        assert!(is_mountpoint(&root.join("hoody/shares/assets")));
    }

    let r = d.call("PATCH", &format!("/containers/{}/storage/shares/{id}", p.source), Some(json!({"alias": "renamed"})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((r.data()["alias"].as_str(), r.data()["status"].as_str()), (Some("renamed"), Some("active")), "{r:?}");
    for t in r.data()["targets"].as_array().unwrap() {
        assert_eq!((t["status"].as_str(), t["mount_path"].as_str()), (Some("active"), Some("/hoody/shares/renamed")), "{t}");
    }
    for root in &roots {
        assert!(!is_mountpoint(&root.join("hoody/shares/assets")), "the old path is no mount any more");
        assert!(!root.join("hoody/shares/assets").exists(), "and its mount point is gone");
        assert!(is_mountpoint(&root.join("hoody/shares/renamed")));
        assert_eq!(read_in_chroot(root, "/hoody/shares/renamed/logo.txt").as_deref(), Some(&b"logo"[..]));
        assert_eq!(read_in_chroot(root, "/hoody/shares/assets/logo.txt"), None);
    }

    // A new mode applies at once, without the target remounting (the container-less form).
    let r = d.call("PATCH", &format!("/storage/shares/{id}"), Some(json!({"mode": "readonly"})));
    assert_eq!((r.status, r.data()["mode"].as_str()), (200, Some("readonly")), "{r:?}");
    for root in &roots {
        let err = std::fs::write(root.join("hoody/shares/renamed/new.txt"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }
    d.call("PATCH", &format!("/storage/shares/{id}"), Some(json!({"mode": "readwrite"})));
    std::fs::write(roots[0].join("hoody/shares/renamed/new.txt"), b"x").unwrap();
    assert_eq!(std::fs::read(p.source_root.join("hoody/storage/assets/new.txt")).unwrap(), b"x");

    // Another share holds `other` in the first target: the rename fails there
    // (naming it) and leaves that mount alone; the second target takes it.
    std::fs::create_dir_all(p.source_root.join("srv/other")).unwrap();
    std::fs::write(p.source_root.join("srv/other/other.txt"), b"other").unwrap();
    let other = share(&d, &p, json!({"source_path": "/srv/other", "target_container_id": p.target, "mode": "readonly"}));
    assert_eq!(other.data()["status"], "active", "{other:?}");
    let other = id_of(other.data());
    let r = d.call("PATCH", &format!("/containers/{}/storage/shares/{id}", p.source), Some(json!({"alias": "other"})));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.data()["status"], "failed", "{r:?}");
    let message = r.data()["status_message"].as_str().unwrap();
    assert!(message.contains(&p.target) && message.contains(&other) && message.contains("alias"), "names the target and the holder: {message}");
    let in_first = r.data()["targets"].as_array().unwrap().iter().find(|t| t["container_id"] == p.target.as_str()).unwrap().clone();
    assert_eq!(in_first["status"], "failed", "{r:?}");
    assert_eq!(read_in_chroot(&roots[0], "/hoody/shares/other/other.txt").as_deref(), Some(&b"other"[..]), "the holder stays mounted");
    assert!(!is_mountpoint(&roots[0].join("hoody/shares/renamed")), "the old name is gone there too");
    assert_eq!(read_in_chroot(&roots[1], "/hoody/shares/other/logo.txt").as_deref(), Some(&b"logo"[..]));
    assert!(!is_mountpoint(&roots[1].join("hoody/shares/renamed")));

    // Renamed to a free name: retried, mounted in both.
    let r = d.call("PATCH", &format!("/containers/{}/storage/shares/{id}", p.source), Some(json!({"alias": "free"})));
    assert_eq!(r.data()["status"], "active", "{r:?}");
    for root in &roots {
        assert_eq!(read_in_chroot(root, "/hoody/shares/free/logo.txt").as_deref(), Some(&b"logo"[..]));
    }
    assert_eq!(read_in_chroot(&roots[0], "/hoody/shares/other/other.txt").as_deref(), Some(&b"other"[..]));
    assert!(!roots[1].join("hoody/shares/other").exists());
}

/// Issue 16 item 4: `expires_at` goes in as Unix seconds or RFC 3339 and
/// comes out as RFC 3339, like every other time; a bad one is a 400 naming it.
#[test]
fn share_expiry_is_taken_as_unix_seconds_or_rfc3339_and_answered_as_rfc3339() {
    let d = Daemon::start();
    let p = pair(&d);
    let base = json!({"source_path": "/hoody/storage/assets", "target_container_id": p.target, "mode": "readonly"});
    let with = |expires: Value| {
        let mut body = base.clone();
        body["expires_at"] = expires;
        share(&d, &p, body)
    };
    // 2100-01-01T00:00:00Z
    let r = with(json!(4102444800u64));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.data()["expires_at"], "2100-01-01T00:00:00.000Z", "{r:?}");
    let id = id_of(r.data());
    let r = with(json!("2100-01-01T01:00:00+01:00"));
    assert_eq!((r.status, r.data()["expires_at"].as_str()), (201, Some("2100-01-01T00:00:00.000Z")), "{r:?}");
    let second = id_of(r.data());
    let incoming = d.call("GET", &format!("/containers/{}/storage/incoming", p.target), None);
    assert!(incoming.data().as_array().unwrap().iter().all(|i| i["expires_at"] == "2100-01-01T00:00:00.000Z"), "{incoming:?}");
    for (bad, code) in [(json!("tomorrow"), "invalid_value"), (json!(true), "invalid_type"), (json!(1.5), "invalid_value"), (json!(now_unix() - 10), "invalid_value"), (json!("2001-01-01T00:00:00Z"), "invalid_value"), (json!(i64::MAX), "invalid_value")] {
        let r = with(bad.clone());
        assert_eq!((r.status, r.code(), r.field()), (400, code, "expires_at"), "{bad}: {r:?}");
    }
    let r = d.call("PATCH", &format!("/storage/shares/{id}"), Some(json!({"expires_at": "2099-12-31T23:00:00Z"})));
    assert_eq!(r.data()["expires_at"], "2099-12-31T23:00:00.000Z", "{r:?}");
    let r = d.call("PATCH", &format!("/storage/shares/{id}"), Some(json!({"expires_at": "soon"})));
    assert_eq!((r.status, r.field()), (400, "expires_at"), "{r:?}");
    let r = d.call("PATCH", &format!("/containers/{}/storage/shares/{second}", p.source), Some(json!({"expires_at": null})));
    assert!(r.data()["expires_at"].is_null(), "{r:?}");
}

/// Issue 16 item 1: the container-less forms answer; a share's top-level
/// `status` sums up its targets; a share offered to several of the caller's
/// containers needs the container form (400 naming `container_id`).
#[test]
fn container_less_forms_answer_and_a_share_sums_up_its_targets() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start();
    let p = pair(&d);
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_container_id": p.target, "mode": "readonly", "alias": "one"}));
    let one = id_of(r.data());
    assert_eq!((r.data()["status"].as_str(), r.data()["status_message"].as_str()), (Some("active"), None), "{r:?}");

    let got = d.call("GET", &format!("/storage/shares/{one}"), None);
    assert_eq!((got.status, got.data()["id"].as_str()), (200, Some(one.as_str())), "{got:?}");
    let inc = d.call("GET", &format!("/storage/incoming/{one}"), None);
    assert_eq!((inc.status, inc.data()["container_id"].as_str(), inc.data()["status"].as_str()), (200, Some(p.target.as_str()), Some("active")), "{inc:?}");
    let inc = d.call("GET", &format!("/containers/{}/storage/incoming/{one}", p.target), None);
    assert_eq!((inc.status, inc.data()["share_id"].as_str()), (200, Some(one.as_str())), "{inc:?}");
    let off = d.call("PATCH", &format!("/storage/incoming/{one}/mount"), Some(json!({"mount": false})));
    assert_eq!((off.status, off.data()["status"].as_str()), (200, Some("unmounted")), "{off:?}");
    assert!(!is_mountpoint(&p.target_root.join("hoody/shares/one")));
    let s = d.call("GET", &format!("/storage/shares/{one}"), None);
    assert_eq!(s.data()["status"], "unmounted", "{s:?}");
    let on = d.call("PATCH", &format!("/storage/incoming/{one}/mount"), Some(json!({"mount": true})));
    assert_eq!(on.data()["status"], "active", "{on:?}");
    assert!(is_mountpoint(&p.target_root.join("hoody/shares/one")));
    let s = d.call("PATCH", &format!("/storage/shares/{one}"), Some(json!({"enabled": false})));
    assert_eq!((s.data()["status"].as_str(), s.data()["targets"][0]["status"].as_str()), (Some("disabled"), Some("disabled")), "{s:?}");
    // The source's id in the container form must be the share's source.
    assert_eq!(d.call("GET", &format!("/containers/{}/storage/shares/{one}", p.target), None).status, 404);
    assert_eq!(d.call("GET", "/storage/shares/nope", None).status, 404);
    assert_eq!(d.call("GET", "/storage/incoming/nope", None).status, 404);

    // Project-wide: two of the caller's containers are targets.
    let r = share(&d, &p, json!({"source_path": "/hoody/storage/assets", "target_project_id": p.project, "mode": "readonly", "alias": "all"}));
    let all = id_of(r.data());
    let later = d.container(&p.project, "later");
    let r = d.call("GET", &format!("/storage/incoming/{all}"), None);
    assert_eq!((r.status, r.code(), r.field()), (400, "ambiguous", "container_id"), "{r:?}");
    assert!(r.message().contains(&p.target) && r.message().contains(later["id"].as_str().unwrap()), "lists them: {r:?}");
    let r = d.call("PATCH", &format!("/storage/incoming/{all}/mount"), Some(json!({"mount": false})));
    assert_eq!((r.status, r.field()), (400, "container_id"), "{r:?}");
    assert!(is_mountpoint(&p.target_root.join("hoody/shares/all")), "an ambiguous call changes nothing");
    // One target's failure makes the share failed, naming that container.
    std::fs::create_dir_all(p.source_root.join("srv/all")).unwrap();
    let r = d.call("POST", "/storage/shares", Some(json!({"source_container_id": p.source, "source_path": "/srv/all", "target_container_id": later["id"], "mode": "readonly"})));
    assert_eq!((r.status, r.data()["status"].as_str()), (201, Some("failed")), "a later share with a taken alias: {r:?}");
    let s = d.call("GET", &format!("/storage/shares/{all}"), None);
    assert_eq!(s.data()["status"], "active", "still mounted in both: {s:?}");
    let msg = r.data()["status_message"].as_str().unwrap();
    assert!(msg.contains(later["id"].as_str().unwrap()) && msg.contains(&all), "{msg}");
    let r = d.call("POST", "/storage/shares", Some(json!({"source_path": "/srv/all", "target_container_id": later["id"], "mode": "readonly"})));
    assert_eq!((r.status, r.field()), (400, "source_container_id"), "{r:?}");
    let r = d.call("POST", &format!("/containers/{}/storage/shares", p.source), Some(json!({"source_container_id": p.target, "source_path": "/srv/all", "target_container_id": later["id"], "mode": "readonly"})));
    assert_eq!((r.status, r.field()), (400, "source_container_id"), "{r:?}");
}

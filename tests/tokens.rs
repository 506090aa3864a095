//! Tokens expire and are revoked at once on a running daemon, from its own API
//! and from `hoodyd token revoke` run as another process.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::json;

/// Runs `hoodyd ARGS --data-dir …`, asserting success; its stdout.
fn hoodyd_ok(d: &Daemon, args: &[&str]) -> String {
    let out = d.hoodyd(args);
    assert!(out.status.success(), "hoodyd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn id_of(token: &str) -> String {
    token.strip_prefix("hoody_").unwrap().split('_').next().unwrap().to_string()
}

fn status_as(d: &Daemon, token: &str) -> u16 {
    d.request("GET", "/api/v1/projects", Some(token), None).status
}

#[test]
fn an_expiring_token_is_refused_from_its_expiry_on() {
    let d = Daemon::start();
    let token = hoodyd_ok(&d, &["token", "create", "--account", "mallory", "--expires-in", "2s"]).trim().to_string();
    // The expiry is at most 2 s after the verb returned.
    let created = Instant::now();
    for _ in 0..3 {
        assert_eq!(status_as(&d, &token), 200, "valid (and now cached)");
    }
    assert!(created.elapsed() < Duration::from_millis(1500), "the machine is too slow for this test's 2 s token");
    let listed = hoodyd_ok(&d, &["token", "list", "--account", "mallory"]);
    let line = listed.lines().find(|l| l.starts_with(&id_of(&token))).unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains("mallory") && !line.contains("never") && !line.contains("expired"), "{line}");
    std::thread::sleep((created + Duration::from_millis(2050)).saturating_duration_since(Instant::now()));
    let refused = d.request("GET", "/api/v1/projects", Some(&token), None).enveloped();
    assert_eq!((refused.status, refused.code()), (401, "unauthorized"), "{refused:?}");
    assert!(hoodyd_ok(&d, &["token", "list", "--account", "mallory"]).contains("(expired)"));
    for bad in ["0s", "2w", "soon"] {
        let out = d.hoodyd(&["token", "create", "--account", "mallory", "--expires-in", bad]);
        assert!(!out.status.success(), "--expires-in {bad} accepted");
    }
}

#[test]
fn hoodyd_token_revoke_from_another_process_takes_effect_on_the_next_request() {
    let d = Daemon::start();
    let keep = d.token_for("mallory");
    let token = d.token_for("mallory");
    let id = id_of(&token);
    assert_eq!(status_as(&d, &token), 200, "valid (and now cached)");
    assert_eq!(status_as(&d, &token), 200);
    let listed = hoodyd_ok(&d, &["token", "list"]);
    assert!(listed.contains(&id) && listed.contains(&id_of(&keep)), "{listed}");
    assert!(!listed.contains(token.rsplit('_').next().unwrap()), "the list shows a secret: {listed}");
    hoodyd_ok(&d, &["token", "revoke", &id]);
    assert_eq!(status_as(&d, &token), 401, "revoked, yet accepted on the next request");
    assert_eq!(status_as(&d, &keep), 200, "another token of the account still works");
    assert!(!hoodyd_ok(&d, &["token", "list", "--account", "mallory"]).contains(&id));
    let again = d.hoodyd(&["token", "revoke", &id]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("no token"), "{again:?}");
    let admin = d.hoodyd(&["token", "revoke", &id_of(&d.token)]);
    assert!(!admin.status.success(), "revoked the admin.token the verbs need");
    assert_eq!(status_as(&d, &d.token), 200);

    // With no daemon running the verb writes the catalog; the next daemon refuses the token.
    let dir = d.into_dir();
    let out = std::process::Command::new(common::HOODYD).args(["token", "revoke", &id_of(&keep), "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = Daemon::start_in(dir, &[]);
    assert_eq!(status_as(&d, &keep), 401);
    assert_eq!(status_as(&d, &d.token), 200);
}

#[test]
fn an_account_lists_creates_and_revokes_its_own_tokens_only() {
    let d = Daemon::start();
    let alice = d.token_for("alice");
    let bob = d.token_for("bob");

    let created = d.call_as(&alice, "POST", "/tokens", Some(json!({"expires_in": "1h"})));
    assert_eq!(created.status, 201, "{created:?}");
    let new = created.data()["token"].as_str().unwrap().to_string();
    let new_id = created.data()["id"].as_str().unwrap().to_string();
    assert_eq!(id_of(&new), new_id);
    assert!(created.data()["expires_at"].is_string());
    let forever = d.call_as(&alice, "POST", "/tokens", Some(json!({})));
    assert_eq!((forever.status, forever.data()["expires_at"].is_null()), (201, true));
    let bad = d.call_as(&alice, "POST", "/tokens", Some(json!({"expires_in": "soon"})));
    assert_eq!((bad.status, bad.field()), (400, "expires_in"), "{bad:?}");
    assert_eq!(status_as(&d, &new), 200, "the new token works (and is now cached)");

    let listed = d.call_as(&alice, "GET", "/tokens", None);
    assert_eq!((listed.status, listed.body["total"].as_u64()), (200, Some(3)), "{listed:?}");
    let ids: Vec<_> = listed.data().as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    assert!(ids.contains(&id_of(&alice)) && ids.contains(&new_id) && !ids.contains(&id_of(&bob)), "{ids:?}");
    let text = listed.body.to_string();
    for secret in [&alice, &new, &bob] {
        assert!(!text.contains(secret.rsplit('_').next().unwrap()), "a secret in {text}");
    }
    assert!(!text.contains("secret") && !text.contains("hash"), "{text}");
    let bobs = d.call_as(&bob, "GET", "/tokens", None);
    assert_eq!(bobs.body["total"].as_u64(), Some(1), "{bobs:?}");

    let foreign = d.call_as(&bob, "DELETE", &format!("/tokens/{new_id}"), None);
    assert_eq!((foreign.status, foreign.code()), (404, "not_found"), "{foreign:?}");
    assert_eq!(status_as(&d, &new), 200, "another account cannot revoke it");
    assert_eq!(d.call_as(&bob, "DELETE", &format!("/admin/tokens/{new_id}"), None).status, 403);

    let revoked = d.call_as(&alice, "DELETE", &format!("/tokens/{new_id}"), None);
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_eq!(status_as(&d, &new), 401, "revoked, yet accepted on the next request");
    assert_eq!(status_as(&d, &alice), 200);
    assert_eq!(d.call_as(&alice, "DELETE", &format!("/tokens/{new_id}"), None).status, 404);
    assert_eq!(d.call_as(&alice, "GET", "/tokens", None).body["total"].as_u64(), Some(2));

    // The admin route revokes anyone's; the admin.token itself is kept.
    assert_eq!(status_as(&d, &bob), 200);
    assert_eq!(d.call("DELETE", &format!("/admin/tokens/{}", id_of(&bob)), None).status, 200);
    assert_eq!(status_as(&d, &bob), 401);
    assert_eq!(d.call("DELETE", &format!("/tokens/{}", id_of(&d.token)), None).status, 409);

    let doc = d.request("GET", "/openapi.json", None, None);
    for path in ["/api/v1/tokens", "/api/v1/tokens/{id}", "/api/v1/admin/tokens/{id}"] {
        assert!(doc.body["paths"].get(path).is_some(), "openapi lacks {path}");
    }
}

#[test]
fn hoody_tokens_list_create_revoke() {
    let d = Daemon::start();
    let alice = d.token_for("alice");
    let hoody = |args: &[&str]| {
        let out = std::process::Command::new(common::HOODY).args(args).env("HOODY_URL", &d.url).env("HOODY_TOKEN", &alice).output().unwrap();
        assert!(out.status.success(), "hoody {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let created: serde_json::Value = serde_json::from_str(&hoody(&["--json", "tokens", "create", "--expires-in", "1h"])).unwrap();
    let new = created["token"].as_str().unwrap().to_string();
    assert_eq!(status_as(&d, &new), 200);
    let table = hoody(&["tokens", "list"]);
    assert!(table.starts_with("ID") && table.contains(&id_of(&new)) && table.contains(&id_of(&alice)), "{table}");
    assert!(!table.contains(new.rsplit('_').next().unwrap()), "{table}");
    hoody(&["tokens", "revoke", &id_of(&new)]);
    assert_eq!(status_as(&d, &new), 401);
}

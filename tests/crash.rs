//! SIGKILL at random points during snapshot, restore, delete and GC, many times:
//! afterwards `hoodyd verify` is clean, every committed snapshot restores
//! exactly, and a restore that was cut off completes when run again.
//! `HOODY_STRESS=1` runs many more rounds.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{path_of, small_tree, tree_digest, Daemon};

type Digest = BTreeMap<PathBuf, String>;

/// A tiny deterministic PRNG (xorshift) so failing seeds can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mutate(root: &Path, rng: &mut Rng) {
    for _ in 0..4 {
        let i = rng.below(30);
        let mut data = vec![0u8; 200_000 + rng.below(800_000) as usize];
        blake3::Hasher::new().update(&rng.next().to_le_bytes()).finalize_xof().fill(&mut data);
        std::fs::write(root.join(format!("etc/app/f{i}.conf")), data).unwrap();
    }
    let _ = std::fs::remove_file(root.join(format!("etc/app/f{}.conf", rng.below(30))));
}

/// Fires a request without caring whether the daemon survives to answer it.
fn fire(url: String, token: String, method: &'static str, path: String, body: String) -> std::thread::JoinHandle<Option<u16>> {
    std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        match agent.request(method, &format!("{url}/api/v1{path}")).set("Authorization", &format!("Bearer {token}")).send_string(&body) {
            Ok(r) => Some(r.status()),
            Err(ureq::Error::Status(s, _)) => Some(s),
            Err(_) => None,
        }
    })
}

#[test]
fn sigkill_at_random_points_loses_nothing() {
    let rounds = if std::env::var_os("HOODY_STRESS").is_some() { 60 } else { 10 };
    let seed = std::env::var("HOODY_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234_u64);
    eprintln!("crash test seed {seed} (HOODY_CRASH_SEED to replay), {rounds} rounds");
    let mut rng = Rng(seed);

    let mut d = Daemon::start();
    let p = d.project("crash");
    let c = d.container(&p, "victim");
    let id = c["id"].as_str().unwrap().to_string();
    let rootfs = path_of(&c);
    small_tree(&rootfs, 9);
    let mut expected: BTreeMap<String, Digest> = BTreeMap::new();
    assert_eq!(d.snapshot(&id, "base").status, 201);
    expected.insert("base".into(), tree_digest(&rootfs));

    for round in 0..rounds {
        mutate(&rootfs, &mut rng);
        let before = tree_digest(&rootfs);
        let alias = format!("r{round}");
        let fire_at = |method, path: String, body: String| fire(d.url.clone(), d.token.clone(), method, path, body);
        let victim = expected.keys().filter(|k| *k != "base").nth(rng.below(expected.len() as u64) as usize).cloned();
        let (what, request) = match (rng.below(4), victim) {
            (0, _) => ("snapshot", fire_at("POST", format!("/containers/{id}/snapshots"), format!("{{\"alias\":\"{alias}\"}}"))),
            (1, _) => ("restore", fire_at("PATCH", format!("/containers/{id}/snapshots/base"), String::new())),
            (2, Some(v)) => ("delete", fire_at("DELETE", format!("/containers/{id}/snapshots/{v}"), String::new())),
            _ => ("gc", fire_at("POST", "/admin/gc".into(), String::new())),
        };
        std::thread::sleep(Duration::from_millis(rng.below(120)));
        d.stop_with(libc::SIGKILL, Duration::from_secs(5));
        let _ = request.join();
        let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
        drop(d);
        d = Daemon::start_in(dir, &[]);

        let v = d.hoodyd(&["verify"]);
        assert!(v.status.success(), "round {round} ({what}): verify failed:\n{}", String::from_utf8_lossy(&v.stdout));
        let now = tree_digest(&rootfs);
        match what {
            "restore" => assert!(now == before || now == expected["base"], "round {round}: a cut-off restore left a mixed state"),
            _ => assert_eq!(now, before, "round {round} ({what}) changed the container"),
        }
        let listed: Vec<String> = d.call("GET", &format!("/containers/{id}/snapshots"), None).data().as_array().unwrap().iter().map(|s| s["alias"].as_str().unwrap().to_string()).collect();
        if what == "snapshot" && listed.contains(&alias) {
            expected.insert(alias.clone(), before.clone());
        }
        expected.retain(|k, _| listed.contains(k));
        assert!(expected.contains_key("base"), "round {round}: the base snapshot vanished");
        // Every committed snapshot restores exactly; restore "base" last so the
        // next round starts from a known tree.
        let mut aliases: Vec<_> = expected.keys().cloned().collect();
        aliases.retain(|a| a != "base");
        if let Some(a) = aliases.get(rng.below(aliases.len().max(1) as u64) as usize) {
            let r = d.restore(&id, a);
            assert_eq!(r.status, 200, "round {round}: {r:?}");
            assert_eq!(tree_digest(&rootfs), expected[a], "round {round}: snapshot {a} did not restore exactly");
        }
        let r = d.restore(&id, "base");
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        assert_eq!(tree_digest(&rootfs), expected["base"], "round {round}: base did not restore exactly");
    }
    let gc = d.call("POST", "/admin/gc", None);
    assert_eq!(gc.status, 200, "{gc:?}");
    let v = d.hoodyd(&["verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    for (alias, digest) in &expected {
        assert_eq!(d.restore(&id, alias).status, 200);
        assert_eq!(&tree_digest(&rootfs), digest, "{alias} after the final GC");
    }
}

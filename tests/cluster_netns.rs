//! A cluster whose nodes do not share a loopback: three daemons, each in a
//! network namespace of its own, joined by a Linux bridge in the root
//! namespace, with etcd on the bridge's address. Joining, membership, a call
//! forwarded over QUIC between namespaces and a crashed node all go over the
//! bridge; nothing binds to 127.0.0.1.
//!
//! Needs root (network namespaces) and etcd; skips otherwise (a failure under
//! `HOODY_REQUIRE_ALL=1`). Everything it creates — processes, namespaces,
//! veths, the bridge — is removed by `Drop`, also when an assertion fails.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, HOODYD};
use serde_json::{json, Value};

/// Runs `ip ARGS`; the error names the command and what it printed.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The namespaces, veths and bridge this test made; dropped, they go (after
/// every process still inside a namespace is killed).
struct Net {
    /// The third octet of 10.231.<subnet>.0/24.
    subnet: u8,
    bridge: String,
    namespaces: Vec<String>,
    /// Root-namespace ends of the veth pairs.
    veths: Vec<String>,
    made_bridge: bool,
}

impl Net {
    /// `10.231.<subnet>.<host>`.
    fn addr(&self, host: u8) -> String {
        format!("10.231.{}.{host}", self.subnet)
    }

    /// A bridge `hbr<pid>` with 10.231.<x>.1/24 and `n` namespaces
    /// `hoody-<pid>-<k>`, each with `lo` up and a veth on the bridge holding
    /// 10.231.<x>.<10+k>/24. `Err` when namespaces cannot be made here.
    fn build(n: usize) -> Result<Net, String> {
        let pid = std::process::id();
        // A /24 no interface of this machine uses yet (another run of this test
        // picks another, from its pid).
        let used = ip(&["-4", "-o", "addr", "show"])? + &ip(&["-4", "route", "show"])?;
        let subnet = (0..200u32).map(|i| (20 + (pid + i) % 200) as u8).find(|x| !used.contains(&format!("10.231.{x}."))).ok_or("no free 10.231.x.0/24")?;
        let mut net = Net { subnet, bridge: format!("hbr{pid}"), namespaces: Vec::new(), veths: Vec::new(), made_bridge: false };
        // The first namespace doubles as the probe: not root, no `ip`, no netns support.
        for k in 1..=n {
            let ns = format!("hoody-{pid}-{k}");
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        net.made_bridge = true;
        ip(&["addr", "add", &format!("{}/24", net.addr(1)), "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for (k, ns) in net.namespaces.clone().iter().enumerate() {
            let (outer, inner) = (format!("hv{pid}n{}", k + 1), format!("hp{pid}n{}", k + 1));
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
            net.veths.push(outer.clone());
            ip(&["link", "set", &inner, "netns", ns])?;
            ip(&["link", "set", &outer, "master", &net.bridge])?;
            ip(&["link", "set", &outer, "up"])?;
            let host = net.addr(10 + k as u8 + 1);
            ip(&["netns", "exec", ns, "ip", "addr", "add", &format!("{host}/24"), "dev", &inner])?;
            ip(&["netns", "exec", ns, "ip", "link", "set", &inner, "up"])?;
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            // Anything still running in there (a node a failed assertion left behind).
            if let Ok(pids) = ip(&["netns", "pids", ns]) {
                for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                    // SAFETY: kill(2) has no memory effects; these are processes this test started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        for veth in &self.veths {
            let _ = ip(&["link", "del", veth]);
        }
        if self.made_bridge {
            let _ = ip(&["link", "del", &self.bridge]);
        }
    }
}

/// etcd on the bridge's address, killed on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start(host: &str) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let free_port = || std::net::TcpListener::bind((host, 0)).unwrap().local_addr().unwrap().port();
        let (client, peer) = (format!("http://{host}:{}", free_port()), format!("http://{host}:{}", free_port()));
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "netns", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("netns={peer}")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let mut etcd = Etcd { child, url: client, _dir: dir };
        let started = Instant::now();
        loop {
            let healthy = ureq::get(&format!("{}/health", etcd.url)).timeout(Duration::from_millis(500)).call().ok().and_then(|r| r.into_string().ok()).is_some_and(|b| b.contains("true"));
            if healthy {
                return etcd;
            }
            if let Ok(Some(status)) = etcd.child.try_wait() {
                panic!("etcd exited ({status}): {}", std::fs::read_to_string(etcd._dir.path().join("etcd.log")).unwrap_or_default());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "etcd on {} not healthy in 30 s", etcd.url);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Field order is drop order: the nodes stop (gracefully), then etcd, then
/// the network goes.
struct Testbed {
    nodes: Vec<Daemon>,
    etcd: Option<Etcd>,
    net: Net,
}

/// `hoodyd serve` inside namespace `ns` (`ip netns exec` execs it: the child
/// is the daemon itself), HTTP on `host:7700`, QUIC on `host:7701`.
fn serve_in(ns: &str, host: &str, dir: tempfile::TempDir, name: &str, extra: &[&str]) -> Daemon {
    let endpoints = dir.path().join("run/endpoints.json");
    let _ = std::fs::remove_file(&endpoints);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("hoodyd.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, HOODYD, "serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http", &format!("{host}:7700"), "--quic", &format!("{host}:7701"), "--node-name", name])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .env_remove("HOODY_URL")
        .env_remove("HOODY_TOKEN")
        .spawn()
        .expect("spawn ip netns exec hoodyd");
    let (http, quic) = common::wait_for_endpoints(&endpoints, Duration::from_secs(30));
    let token = std::fs::read_to_string(dir.path().join("admin.token")).expect("admin.token").trim().to_string();
    Daemon { dir, child: Some(child), url: format!("http://{http}"), quic, token }
}

fn node_id(dir: &Path) -> String {
    let node: Value = serde_json::from_slice(&std::fs::read(dir.join("state/node.json")).unwrap()).unwrap();
    node["id"].as_str().unwrap().to_string()
}

/// `name -> state` as `node` lists the servers.
fn states(node: &Daemon) -> Vec<(String, String)> {
    let r = node.call("GET", "/servers", None);
    assert_eq!(r.status, 200, "{r:?}");
    r.data().as_array().unwrap().iter().map(|s| (s["name"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string())).collect()
}

fn wait_until(what: &str, within: Duration, done: impl FnMut() -> Result<(), String>) -> Duration {
    wait_until_from(Instant::now(), what, within, done)
}

/// [`wait_until`] with the clock started at `started`.
fn wait_until_from(started: Instant, what: &str, within: Duration, mut done: impl FnMut() -> Result<(), String>) -> Duration {
    loop {
        match done() {
            Ok(()) => return started.elapsed(),
            Err(now) => assert!(started.elapsed() < within, "{what}: not within {within:?}; last seen: {now}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_in_three_network_namespaces_join_forward_and_see_a_killed_one_unreachable() {
    if unsafe { libc::geteuid() } != 0 {
        common::skip("network namespaces need root");
        return;
    }
    match Command::new("etcd").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => {
            common::skip("etcd is not installed (Debian: apt-get install etcd-server)");
            return;
        }
    }
    let net = match Net::build(3) {
        Ok(net) => net,
        Err(why) => {
            common::skip(&format!("cannot make network namespaces and a bridge: {why}"));
            return;
        }
    };
    let mut bed = Testbed { nodes: Vec::new(), etcd: None, net };
    let hosts: Vec<String> = (1..=3).map(|k| bed.net.addr(10 + k)).collect();
    let etcd = Etcd::start(&bed.net.addr(1));
    let etcd_url = etcd.url.clone();
    bed.etcd = Some(etcd);

    // Node 1: made a cluster (its catalog copied into etcd over the bridge), then served in ns 1.
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(HOODYD).args(["init", "--node-name", "node1", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(init.status.success(), "hoodyd init: {}", String::from_utf8_lossy(&init.stderr));
    let made = Command::new(HOODYD).args(["cluster", "init", "--etcd", &etcd_url, "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(made.status.success(), "hoodyd cluster init: {}", String::from_utf8_lossy(&made.stderr));
    let ns = bed.net.namespaces.clone();
    bed.nodes.push(serve_in(&ns[0], &hosts[0], dir, "node1", &[]));
    // Nodes 2 and 3 join with one-time tokens, reaching node 1 and etcd only over the bridge.
    for k in 1..3 {
        let r = bed.nodes[0].call("POST", "/cluster/join-tokens", Some(json!({})));
        assert_eq!(r.status, 201, "{r:?}");
        let token = r.data()["token"].as_str().unwrap().to_string();
        let name = format!("node{}", k + 1);
        bed.nodes.push(serve_in(&ns[k], &hosts[k], tempfile::tempdir().unwrap(), &name, &["--join", &token]));
    }
    let ids: Vec<String> = bed.nodes.iter().map(|n| node_id(n.data_dir())).collect();

    // Every node lists all three online, at their namespace addresses.
    for (via, node) in bed.nodes.iter().enumerate() {
        let took = wait_until(&format!("3 online as node{} lists them", via + 1), Duration::from_secs(20), || {
            let now = states(node);
            if now.iter().filter(|(_, s)| s == "online").count() == 3 {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        });
        println!("node{} lists 3 online after {took:?}", via + 1);
        let listed = node.call("GET", "/servers", None);
        let mut names: Vec<&str> = listed.data().as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["node1", "node2", "node3"], "{listed:?}");
        for s in listed.data().as_array().unwrap() {
            let k = ids.iter().position(|id| s["id"] == id.as_str()).unwrap_or_else(|| panic!("unknown server {s}"));
            assert_eq!(s["addresses"]["quic"], format!("{}:7701", hosts[k]).as_str(), "{s}");
            assert_eq!(s["addresses"]["http"], format!("{}:7700", hosts[k]).as_str(), "{s}");
        }
    }

    // Created through node 3 with node 1's id: forwarded over QUIC, the rootfs lives on node 1.
    let (n1, n2, n3) = (&bed.nodes[0], &bed.nodes[1], &bed.nodes[2]);
    let project = n3.project("netns");
    let r = n3.call("POST", "/containers", Some(json!({"name": "c", "project_id": project, "server_id": ids[0]})));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.data()["server_id"], ids[0].as_str(), "{r:?}");
    let id = r.data()["id"].as_str().unwrap().to_string();
    let rootfs = common::path_of(r.data());
    assert!(rootfs.is_dir() && rootfs.starts_with(n1.data_dir()), "the rootfs lives on node 1: {rootfs:?}");
    assert!(n1.data_dir().join("containers").join(&id).is_dir(), "the rootfs lives on node 1");
    assert!(!n3.data_dir().join("containers").join(&id).exists(), "nothing of it on node 3");
    // A snapshot asked of node 2 is taken by node 1 and seen by all.
    std::fs::write(rootfs.join("hello"), b"over the bridge").unwrap();
    let r = n2.call("POST", &format!("/containers/{id}/snapshots"), Some(json!({"alias": "s1"})));
    assert!(r.status == 201 || r.status == 202, "{r:?}");
    for node in [n1, n2, n3] {
        wait_until("the snapshot listed", Duration::from_secs(10), || {
            let r = node.call("GET", &format!("/containers/{id}/snapshots"), None);
            let aliases: Vec<&str> = r.data().as_array().map(|a| a.iter().filter_map(|s| s["alias"].as_str()).collect()).unwrap_or_default();
            if aliases == ["s1"] {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        });
    }

    // Node 2 crashes: nodes 1 and 3 list it unreachable within 10 s.
    bed.nodes[1].stop_with(libc::SIGKILL, Duration::from_secs(5));
    let killed = Instant::now();
    for via in [0, 2] {
        let took = wait_until_from(killed, &format!("node2 unreachable as node{} lists it", via + 1), Duration::from_secs(10), || {
            let now = states(&bed.nodes[via]);
            if now.iter().any(|(n, s)| n == "node2" && s == "unreachable") {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        });
        println!("node{} lists node2 unreachable after {took:?}", via + 1);
    }
    let still: Vec<_> = states(&bed.nodes[0]).into_iter().filter(|(n, _)| n != "node2").collect();
    assert!(still.iter().all(|(_, s)| s == "online"), "{still:?}");
}

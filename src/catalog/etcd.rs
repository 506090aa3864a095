//! The cluster catalog: the [`KvStore`] seam served by etcd (3.4 or later).
//!
//! It speaks etcd's v3 JSON gateway over HTTP/1.1 (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/watch`, `/v3/lease/*`, …: keys and values in base64, 64-bit integers as
//! JSON strings) rather than gRPC, so the daemon builds without `protoc` and
//! starts on a fresh machine. One keep-alive connection pool serves every call;
//! each watch holds one streaming connection.
//!
//! Failures: every call has a deadline of [`CALL_DEADLINE`]; an etcd that
//! cannot be reached (refused, hung, no leader) gives
//! [`KvError::Unavailable`] naming each endpoint tried and why. Calls go to the
//! endpoint that answered last, then to the others in turn; nothing needs a
//! restart when etcd comes back. A call that timed out may still have been
//! applied (as with any etcd client): writers compare-and-swap.
//!
//! Keys live under an optional namespace (`hoody/`) so one etcd can serve
//! several uses; prefixes range up to prefix+1 as `etcdctl --prefix` does.
//!
//! Never: hold a lock across a call, or retry forever inside a call; watches
//! alone retry (with backoff) until their user drops them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::kv::{prefix_end, Compare, KvError, KvResult, KvStore, LeaseId, Op, Ranged, Txn, TxnOutcome, Versioned, Watch, WatchEvent, WatchItem};

/// The longest any call waits for etcd.
pub const CALL_DEADLINE: Duration = Duration::from_secs(2);
/// Keys per page of a range (each page read at the first page's revision).
const RANGE_PAGE: usize = 1000;
/// Changes a watch buffers for a slow reader before it stops reading etcd.
const WATCH_BUFFER: usize = 1024;
const WATCH_RETRY_MAX: Duration = Duration::from_secs(1);

/// gRPC status codes etcd answers with that mean "not now" rather than "no".
const GRPC_DEADLINE_EXCEEDED: i64 = 4;
const GRPC_NOT_FOUND: i64 = 5;
const GRPC_OUT_OF_RANGE: i64 = 11;
const GRPC_UNAVAILABLE: i64 = 14;

/// A [`KvStore`] in etcd. Cheap to clone.
#[derive(Clone)]
pub struct EtcdKv {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    namespace: Vec<u8>,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// Why a call got no answer from etcd: Unavailable, or an answer that says no.
enum CallError {
    Unreachable(String),
    Refused { code: i64, message: String },
}

impl EtcdKv {
    /// A client of the etcd members at `endpoints` (`http://host:port`), not
    /// contacted yet.
    pub fn new(endpoints: &[String]) -> KvResult<EtcdKv> {
        if endpoints.is_empty() {
            return Err(KvError::Storage("no etcd endpoint given".into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CALL_DEADLINE));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        let endpoints = endpoints.iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        Ok(EtcdKv { inner: Arc::new(Inner { endpoints, preferred: AtomicUsize::new(0), namespace: Vec::new(), http }) })
    }

    /// A client of `endpoints` once one of them answers ([`KvError::Unavailable`] otherwise).
    pub async fn connect(endpoints: &[String]) -> KvResult<EtcdKv> {
        let kv = EtcdKv::new(endpoints)?;
        kv.health().await?;
        Ok(kv)
    }

    /// The same etcd with every key under `namespace` (such as `hoody/`).
    pub fn with_namespace(self, namespace: &[u8]) -> EtcdKv {
        let inner = &self.inner;
        let endpoints = inner.endpoints.clone();
        let preferred = AtomicUsize::new(inner.preferred.load(Ordering::Relaxed));
        EtcdKv { inner: Arc::new(Inner { endpoints, preferred, namespace: namespace.to_vec(), http: inner.http.clone() }) }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }
}

impl Inner {
    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        [self.namespace.as_slice(), key].concat()
    }

    /// `key` and `range_end` covering every key starting with `prefix`.
    fn prefix_range(&self, prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let start = self.full_key(prefix);
        match prefix_end(&start) {
            Some(end) => (start, end),
            // etcd's "every key from `start`": range_end "\0" (and key "\0" for all).
            None if start.is_empty() => (vec![0], vec![0]),
            None => (start, vec![0]),
        }
    }

    fn strip(&self, key: Vec<u8>) -> Vec<u8> {
        match key.strip_prefix(self.namespace.as_slice()) {
            Some(rest) => rest.to_vec(),
            None => key,
        }
    }

    /// POSTs `body` to `path` on the first endpoint that answers within the
    /// deadline, and returns the endpoint's URL and its JSON answer.
    async fn post(&self, path: &str, body: &Value) -> Result<(String, Value), CallError> {
        let body = Bytes::from(serde_json::to_vec(body).expect("a JSON value serializes"));
        let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for i in 0..n {
            let index = (first + i) % n;
            let url = &self.endpoints[index];
            // The time left, shared among the endpoints not tried yet.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now()) / (n - i) as u32;
            match tokio::time::timeout(left, self.exchange(url, path, body.clone())).await {
                Ok(Ok((status, answer))) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    let json: Value = serde_json::from_slice(&answer).map_err(|e| CallError::Unreachable(format!("etcd at {url}: {path} answered {status} with no JSON: {e}")))?;
                    if status.is_success() {
                        return Ok((url.clone(), json));
                    }
                    let code = json.get("code").and_then(Value::as_i64).unwrap_or(0);
                    let message = json.get("message").or_else(|| json.get("error")).and_then(Value::as_str).unwrap_or("no message").to_string();
                    if code == GRPC_UNAVAILABLE || code == GRPC_DEADLINE_EXCEEDED {
                        failures.push(format!("etcd at {url}: {message}"));
                        continue;
                    }
                    return Err(CallError::Refused { code, message: format!("etcd at {url}: {message}") });
                }
                Ok(Err(reason)) => failures.push(format!("etcd at {url}: {reason}")),
                Err(_) => failures.push(format!("etcd at {url}: no answer within {} s", CALL_DEADLINE.as_secs())),
            }
        }
        Err(CallError::Unreachable(failures.join("; ")))
    }

    async fn exchange(&self, url: &str, path: &str, body: Bytes) -> Result<(hyper::StatusCode, Bytes), String> {
        let response = self.open(url, path, body).await?;
        let status = response.status();
        let answer = response.into_body().collect().await.map_err(|e| chain(&e))?.to_bytes();
        Ok((status, answer))
    }

    async fn open(&self, url: &str, path: &str, body: Bytes) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let request = hyper::Request::post(format!("{url}{path}")).header("content-type", "application/json").body(Full::new(body)).map_err(|e| e.to_string())?;
        self.http.request(request).await.map_err(|e| chain(&e))
    }

    async fn call<T: DeserializeOwned>(&self, path: &str, body: Value) -> KvResult<T> {
        let (url, json) = self.post(path, &body).await.map_err(KvError::from)?;
        serde_json::from_value(json).map_err(|e| KvError::Storage(format!("etcd at {url}: unexpected answer to {path}: {e}")))
    }
}

impl From<CallError> for KvError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(why) => KvError::Unavailable(why),
            CallError::Refused { message, .. } => KvError::Storage(message),
        }
    }
}

/// An error and its causes, as one line ("tcp connect error: Connection refused").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// An int64 of the gateway: a JSON string (or number), absent when zero.
#[derive(Debug, Default, Clone, Copy)]
struct Num(i64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => s.parse().map(Num).map_err(serde::de::Error::custom),
            Value::Number(n) => n.as_i64().map(Num).ok_or_else(|| serde::de::Error::custom("not an int64")),
            Value::Null => Ok(Num(0)),
            other => Err(serde::de::Error::custom(format!("not an int64: {other}"))),
        }
    }
}

/// Bytes of the gateway: base64, absent when empty.
#[derive(Debug, Default, Clone)]
struct Data(Vec<u8>);

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        B64.decode(s.as_bytes()).map(Data).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Header {
    revision: Num,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyValue {
    key: Data,
    value: Data,
    mod_revision: Num,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RangeAnswer {
    header: Header,
    kvs: Vec<KeyValue>,
    more: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WriteAnswer {
    header: Header,
    deleted: Num,
    succeeded: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LeaseAnswer {
    #[serde(rename = "ID")]
    id: Num,
    #[serde(rename = "TTL")]
    ttl: Num,
    error: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchLine {
    result: Option<WatchAnswer>,
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WatchAnswer {
    header: Header,
    created: bool,
    canceled: bool,
    compact_revision: Num,
    cancel_reason: String,
    events: Vec<EventAnswer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EventAnswer {
    /// `PUT` (the default, so absent) or `DELETE`.
    #[serde(rename = "type")]
    kind: String,
    kv: KeyValue,
}

fn revision(n: Num) -> u64 {
    n.0.max(0) as u64
}

impl Inner {
    fn compare_json(&self, c: &Compare) -> Value {
        match c {
            Compare::Equals(k, v) => json!({"key": b64(&self.full_key(k)), "target": "VALUE", "result": "EQUAL", "value": b64(v)}),
            Compare::Absent(k) => json!({"key": b64(&self.full_key(k)), "target": "VERSION", "result": "EQUAL", "version": "0"}),
            Compare::Present(k) => json!({"key": b64(&self.full_key(k)), "target": "VERSION", "result": "GREATER", "version": "0"}),
            Compare::ModRevision(k, rev) => json!({"key": b64(&self.full_key(k)), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()}),
        }
    }

    fn op_json(&self, op: &Op) -> Value {
        match op {
            Op::Put(k, v) => json!({"request_put": {"key": b64(&self.full_key(k)), "value": b64(v)}}),
            Op::PutLeased(k, v, lease) => json!({"request_put": {"key": b64(&self.full_key(k)), "value": b64(v), "lease": lease.to_string()}}),
            Op::Delete(k) => json!({"request_delete_range": {"key": b64(&self.full_key(k))}}),
            Op::DeletePrefix(p) => {
                let (key, end) = self.prefix_range(p);
                json!({"request_delete_range": {"key": b64(&key), "range_end": b64(&end)}})
            }
        }
    }
}

#[async_trait]
impl KvStore for EtcdKv {
    async fn get(&self, key: &[u8]) -> KvResult<Option<Versioned>> {
        let answer: RangeAnswer = self.inner.call("/v3/kv/range", json!({"key": b64(&self.inner.full_key(key))})).await?;
        Ok(answer.kvs.into_iter().next().map(|kv| Versioned { value: kv.value.0, mod_revision: revision(kv.mod_revision) }))
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> KvResult<u64> {
        let answer: WriteAnswer = self.inner.call("/v3/kv/put", json!({"key": b64(&self.inner.full_key(key)), "value": b64(value)})).await?;
        Ok(revision(answer.header.revision))
    }

    async fn delete(&self, key: &[u8]) -> KvResult<bool> {
        let answer: WriteAnswer = self.inner.call("/v3/kv/deleterange", json!({"key": b64(&self.inner.full_key(key))})).await?;
        Ok(answer.deleted.0 > 0)
    }

    async fn range(&self, prefix: &[u8]) -> KvResult<Ranged> {
        let (mut start, end) = self.inner.prefix_range(prefix);
        let mut out = Ranged::default();
        loop {
            let mut request = json!({"key": b64(&start), "range_end": b64(&end), "limit": RANGE_PAGE.to_string()});
            if out.revision > 0 {
                request["revision"] = out.revision.to_string().into();
            }
            let page: RangeAnswer = self.inner.call("/v3/kv/range", request).await?;
            if out.revision == 0 {
                out.revision = revision(page.header.revision);
            }
            let last = page.kvs.last().map(|kv| kv.key.0.clone());
            out.items.extend(page.kvs.into_iter().map(|kv| (self.inner.strip(kv.key.0), Versioned { value: kv.value.0, mod_revision: revision(kv.mod_revision) })));
            match last {
                Some(mut last) if page.more => {
                    last.push(0);
                    start = last;
                }
                _ => return Ok(out),
            }
        }
    }

    async fn txn(&self, txn: Txn) -> KvResult<TxnOutcome> {
        let request = json!({
            "compare": txn.compares.iter().map(|c| self.inner.compare_json(c)).collect::<Vec<_>>(),
            "success": txn.success.iter().map(|o| self.inner.op_json(o)).collect::<Vec<_>>(),
            "failure": txn.failure.iter().map(|o| self.inner.op_json(o)).collect::<Vec<_>>(),
        });
        let answer: WriteAnswer = self.inner.call("/v3/kv/txn", request).await?;
        Ok(TxnOutcome { succeeded: answer.succeeded, revision: revision(answer.header.revision) })
    }

    fn watch(&self, prefix: &[u8], from: Option<u64>) -> Watch {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let (key, end) = self.inner.prefix_range(prefix);
        tokio::spawn(follow(self.inner.clone(), key, end, from, tx));
        Watch::channel(rx)
    }

    async fn compact(&self, revision: u64) -> KvResult<()> {
        match self.inner.post("/v3/kv/compaction", &json!({"revision": revision.to_string(), "physical": true})).await {
            Ok(_) => Ok(()),
            // Compacted at or past it already.
            Err(CallError::Refused { code: GRPC_OUT_OF_RANGE, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> KvResult<LeaseId> {
        let seconds = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let answer: LeaseAnswer = self.inner.call("/v3/lease/grant", json!({"TTL": seconds.to_string()})).await?;
        if !answer.error.is_empty() || answer.id.0 == 0 {
            return Err(KvError::Storage(format!("etcd granted no lease: {}", answer.error)));
        }
        Ok(answer.id.0)
    }

    async fn keep_alive(&self, lease: LeaseId) -> KvResult<bool> {
        // A stream of one request: the gateway answers one line and ends.
        let (_, line) = self.inner.post("/v3/lease/keepalive", &json!({"ID": lease.to_string()})).await.map_err(KvError::from)?;
        let answer: LeaseAnswer = serde_json::from_value(line.get("result").cloned().unwrap_or(Value::Null)).unwrap_or_default();
        Ok(answer.ttl.0 > 0)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> KvResult<()> {
        match self.inner.post("/v3/lease/revoke", &json!({"ID": lease.to_string()})).await {
            Ok(_) => Ok(()),
            Err(CallError::Refused { code: GRPC_NOT_FOUND, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn health(&self) -> KvResult<()> {
        self.inner.post("/v3/maintenance/status", &json!({})).await.map(|_| ()).map_err(KvError::from)
    }
}

/// Feeds one watch until its user drops it: opens the stream at the revision
/// after the last delivered, reopens it when it breaks (with backoff while
/// etcd is away), and turns a compacted start into `Resync`.
async fn follow(inner: Arc<Inner>, key: Vec<u8>, end: Vec<u8>, from: Option<u64>, tx: mpsc::Sender<WatchItem>) {
    // Every change up to `seen` was delivered (or skipped by a Resync).
    let mut seen: Option<u64> = from;
    let mut backoff = Duration::from_millis(50);
    let mut complained = false;
    loop {
        let mut create = json!({"key": b64(&key), "range_end": b64(&end)});
        if let Some(seen) = seen {
            create["start_revision"] = (seen + 1).to_string().into();
        }
        let body = Bytes::from(serde_json::to_vec(&json!({"create_request": create})).expect("JSON"));
        let n = inner.endpoints.len();
        let index = inner.preferred.load(Ordering::Relaxed) % n;
        let url = inner.endpoints[index].clone();
        let opened = tokio::select! {
            _ = tx.closed() => return,
            opened = tokio::time::timeout(CALL_DEADLINE, inner.open(&url, "/v3/watch", body)) => opened,
        };
        let failure = match opened {
            Ok(Ok(response)) if response.status().is_success() => {
                complained = false;
                backoff = Duration::from_millis(50);
                match read_stream(&inner, response.into_body(), &mut seen, &tx).await {
                    Ok(()) => return,
                    Err(why) => why,
                }
            }
            Ok(Ok(response)) => format!("answered {}", response.status()),
            Ok(Err(why)) => why,
            Err(_) => format!("no answer within {} s", CALL_DEADLINE.as_secs()),
        };
        if !complained {
            tracing::warn!(etcd = %url, reason = %failure, "catalog watch interrupted; resuming");
            complained = true;
        }
        // The next attempt goes to the next endpoint.
        inner.preferred.compare_exchange(index, (index + 1) % n, Ordering::Relaxed, Ordering::Relaxed).ok();
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(WATCH_RETRY_MAX);
    }
}

/// Reads one watch stream: `Ok` when the user is gone, `Err` (why) when the
/// stream broke and must be reopened from `seen`.
async fn read_stream(inner: &Inner, mut body: hyper::body::Incoming, seen: &mut Option<u64>, tx: &mpsc::Sender<WatchItem>) -> Result<(), String> {
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::select! {
            _ = tx.closed() => return Ok(()),
            frame = body.frame() => frame,
        };
        let data = match frame {
            None => return Err("the watch stream ended".into()),
            Some(Err(e)) => return Err(chain(&e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        buffer.extend_from_slice(&data);
        while let Some(newline) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=newline).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed: WatchLine = serde_json::from_slice(&line).map_err(|e| format!("unreadable watch answer: {e}"))?;
            if let Some(error) = parsed.error {
                return Err(format!("watch error: {error}"));
            }
            let Some(answer) = parsed.result else { continue };
            let now = revision(answer.header.revision);
            if answer.compact_revision.0 > 0 {
                // The history from `seen` is gone: the user re-reads; the watch
                // goes on after the revision etcd is at now (no gap, as the
                // user's range comes later).
                let compacted = revision(answer.compact_revision).saturating_sub(1);
                *seen = Some(current_revision(inner).await.unwrap_or(now).max(compacted));
                if tx.send(WatchItem::Resync).await.is_err() {
                    return Ok(());
                }
                return Err("resuming after compaction".into());
            }
            if answer.created && seen.is_none() {
                *seen = Some(now);
            }
            for event in answer.events {
                let rev = revision(event.kv.mod_revision);
                if seen.is_some_and(|s| rev <= s) {
                    continue;
                }
                let value = (event.kind != "DELETE").then_some(event.kv.value.0);
                let item = WatchItem::Event(WatchEvent { key: inner.strip(event.kv.key.0), value, revision: rev });
                if tx.send(item).await.is_err() {
                    return Ok(());
                }
                *seen = Some(rev);
            }
            if answer.canceled {
                return Err(format!("etcd cancelled the watch: {}", answer.cancel_reason));
            }
        }
    }
}

/// The store's revision now (what a range would be read at).
async fn current_revision(inner: &Inner) -> Option<u64> {
    let (_, answer) = inner.post("/v3/kv/range", &json!({"key": b64(b"\0"), "count_only": true})).await.ok()?;
    let answer: RangeAnswer = serde_json::from_value(answer).ok()?;
    Some(revision(answer.header.revision))
}

/// A real etcd for tests and development: the `etcd` binary on free
/// 127.0.0.1 ports with its data in a temporary directory, killed (and the
/// directory removed) on drop. [`LocalEtcd::stop`] and [`LocalEtcd::start`]
/// kill and restart it on the same ports and data, to test unavailability.
pub struct LocalEtcd {
    dir: std::path::PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<std::process::Child>,
}

impl LocalEtcd {
    /// Starts one; an error (such as "etcd is not installed") lets a test skip.
    pub fn new() -> Result<LocalEtcd, String> {
        match std::process::Command::new("etcd").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("etcd --version failed: {}", String::from_utf8_lossy(&out.stderr))),
            Err(e) => return Err(format!("etcd is not installed ({e}); Debian: apt-get install etcd-server")),
        }
        let dir = std::env::temp_dir().join(format!("hoody-etcd-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let free_port = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string());
        let mut etcd = LocalEtcd { dir, client_port: free_port()?, peer_port: free_port()?, child: None };
        etcd.start()?;
        Ok(etcd)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts it again (after [`LocalEtcd::stop`]) and waits until it is healthy.
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("etcd.log")).map_err(|e| e.to_string())?;
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = std::process::Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.url(), "--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting etcd: {e}"))?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let health = format!("{}/health", self.url());
        loop {
            if let Ok(answer) = ureq::get(&health).timeout(Duration::from_millis(500)).call() {
                if answer.into_string().is_ok_and(|body| body.contains("true")) {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("etcd exited ({status}); see {}", self.dir.join("etcd.log").display()));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("etcd not healthy within 30 s; see {}", self.dir.join("etcd.log").display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws it after [`LocalEtcd::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.resume();
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// For tests: a [`LocalEtcd`] and a client of it under namespace `hoody/`;
/// `None` (skip) when etcd is not installed, unless `CI` is set (then it panics).
#[cfg(test)]
pub(crate) async fn test_store() -> Option<(LocalEtcd, EtcdKv)> {
    let etcd = match tokio::task::spawn_blocking(LocalEtcd::new).await.expect("starting etcd") {
        Ok(etcd) => etcd,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {why}");
            return None;
        }
        Err(why) => panic!("{why}"),
    };
    let kv = EtcdKv::connect(&[etcd.url()]).await.expect("etcd answers").with_namespace(b"hoody/");
    Some((etcd, kv))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    crate::catalog::kv::suite::seam_suite!(test_store());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_namespace_hides_other_keys() {
        let Some((etcd, kv)) = test_store().await else { return };
        let bare = EtcdKv::connect(&[etcd.url()]).await.unwrap();
        bare.put(b"elsewhere", b"x").await.unwrap();
        kv.put(b"mine", b"y").await.unwrap();
        let keys: Vec<_> = kv.range(b"").await.unwrap().items.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"mine".to_vec()]);
        assert!(bare.get(b"hoody/mine").await.unwrap().is_some());
        kv.txn(Txn::default().then(vec![Op::DeletePrefix(Vec::new())])).await.unwrap();
        assert!(bare.get(b"elsewhere").await.unwrap().is_some(), "a namespace's delete-all stays inside it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_larger_than_a_page_reads_at_one_revision() {
        let Some((_etcd, kv)) = test_store().await else { return };
        for chunk in (0..RANGE_PAGE + 10).collect::<Vec<_>>().chunks(super::super::kv::MAX_TXN_OPS) {
            kv.txn(Txn::default().then(chunk.iter().map(|i| Op::Put(format!("p/{i:05}").into_bytes(), b"v".to_vec())).collect())).await.unwrap();
        }
        let ranged = kv.range(b"p/").await.unwrap();
        assert_eq!(ranged.items.len(), RANGE_PAGE + 10);
        assert!(ranged.items.windows(2).all(|w| w[0].0 < w[1].0));
    }

    fn assert_unavailable_naming(err: KvError, url: &str) {
        match err {
            KvError::Unavailable(why) => assert!(why.contains(url), "{why}"),
            other => panic!("expected Unavailable, got {other}"),
        }
    }

    /// etcd killed: calls fail at once, naming it; frozen: within the
    /// deadline; back: the same client works again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_fail_fast_while_etcd_is_away_and_work_when_it_is_back() {
        let Some((mut etcd, kv)) = test_store().await else { return };
        kv.put(b"k", b"1").await.unwrap();

        etcd.pause();
        let started = Instant::now();
        let err = kv.get(b"k").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
        assert_unavailable_naming(err, &etcd.url());
        etcd.resume();
        assert_eq!(kv.get(b"k").await.unwrap().unwrap().value, b"1");

        etcd.stop();
        for _ in 0..3 {
            let started = Instant::now();
            let err = kv.put(b"k", b"2").await.unwrap_err();
            assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
            assert_unavailable_naming(err, &etcd.url());
        }
        assert_unavailable_naming(kv.health().await.unwrap_err(), &etcd.url());
        let _etcd = tokio::task::spawn_blocking(move || {
            etcd.start().unwrap();
            etcd
        })
        .await
        .unwrap();
        kv.health().await.unwrap();
        assert_eq!(kv.get(b"k").await.unwrap().unwrap().value, b"1", "etcd kept its data");
        kv.put(b"k", b"3").await.unwrap();
    }

    /// A second endpoint that refuses does not keep calls from the live one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_fail_over_to_an_endpoint_that_answers() {
        let Some((etcd, _)) = test_store().await else { return };
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let kv = EtcdKv::new(&[dead.clone(), etcd.url()]).unwrap();
        kv.put(b"k", b"v").await.unwrap();
        assert_eq!(kv.get(b"k").await.unwrap().unwrap().value, b"v");
        let alone = EtcdKv::new(std::slice::from_ref(&dead)).unwrap();
        assert_unavailable_naming(alone.get(b"k").await.unwrap_err(), &dead);
    }

    async fn next(w: &mut Watch) -> WatchItem {
        tokio::time::timeout(Duration::from_secs(15), w.next()).await.expect("a change within 15 s").expect("the watch goes on")
    }

    fn put_event(key: &[u8], value: &[u8], revision: u64) -> WatchItem {
        WatchItem::Event(WatchEvent { key: key.to_vec(), value: Some(value.to_vec()), revision })
    }

    async fn restart(mut etcd: LocalEtcd, away: Duration) -> LocalEtcd {
        etcd.stop();
        tokio::time::sleep(away).await;
        tokio::task::spawn_blocking(move || {
            etcd.start().unwrap();
            etcd
        })
        .await
        .unwrap()
    }

    /// A watch goes on across an etcd restart and misses nothing written
    /// while it was reconnecting; when what it missed was compacted
    /// meanwhile, it says Resync instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_survives_an_etcd_restart() {
        let Some((etcd, kv)) = test_store().await else { return };
        let from = kv.put(b"other", b"0").await.unwrap();
        let mut w = kv.watch(b"w/", Some(from));
        let r1 = kv.put(b"w/1", b"1").await.unwrap();
        assert_eq!(next(&mut w).await, put_event(b"w/1", b"1", r1));

        let etcd = restart(etcd, Duration::from_millis(300)).await;
        // Written at once, before the watch (in backoff) is back.
        let r2 = kv.put(b"w/2", b"2").await.unwrap();
        let r3 = kv.put(b"w/3", b"3").await.unwrap();
        assert_eq!(next(&mut w).await, put_event(b"w/2", b"2", r2));
        assert_eq!(next(&mut w).await, put_event(b"w/3", b"3", r3));

        let _etcd = restart(etcd, Duration::from_millis(1500)).await;
        let r4 = kv.put(b"w/4", b"4").await.unwrap();
        kv.compact(r4).await.unwrap();
        let r5 = kv.put(b"w/5", b"5").await.unwrap();
        match next(&mut w).await {
            // Back before the compaction.
            WatchItem::Event(ev) => {
                assert_eq!(WatchItem::Event(ev), put_event(b"w/4", b"4", r4));
                assert_eq!(next(&mut w).await, put_event(b"w/5", b"5", r5));
            }
            // Then it goes on from where etcd was when it resumed: w/5 or, past it, w/6.
            WatchItem::Resync => {
                let r6 = kv.put(b"w/6", b"6").await.unwrap();
                match next(&mut w).await {
                    WatchItem::Event(ev) => assert!(ev.revision == r5 || ev.revision == r6, "{ev:?}"),
                    WatchItem::Resync => panic!("one resync"),
                }
            }
        }
    }

    #[test]
    fn gateway_numbers_and_bytes_decode() {
        let line: WatchLine = serde_json::from_str(r#"{"result":{"header":{"revision":"42"},"events":[{"kv":{"key":"YQ==","mod_revision":"41"}},{"type":"DELETE","kv":{"key":"Yg==","mod_revision":"42"}}]}}"#).unwrap();
        let answer = line.result.unwrap();
        assert_eq!(revision(answer.header.revision), 42);
        assert_eq!((answer.events[0].kv.key.0.as_slice(), answer.events[0].kv.value.0.len(), answer.events[0].kind.as_str()), (&b"a"[..], 0, ""));
        assert_eq!(answer.events[1].kind, "DELETE");
    }
}

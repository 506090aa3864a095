#!/bin/bash
# Scenario "cluster": what being a cluster costs, on a 3-node cluster on this machine
# (bench/cluster.sh up: etcd and three hoodyd on 127.0.0.1):
#  (a) an API call forwarded over QUIC to the container's owner against the same call sent to
#      the owner itself: PATCH /api/v1/containers/{id} (a new env), BENCH_CALLS (default 300)
#      sequential calls on keep-alive connections, forwarded and direct taking turns call by
#      call; p50/p99 and the difference (the target: forwarded <= direct + 1 ms at p50);
#  (b) wrk -t2 -c64 GET one container and POST new containers (placed on node 1) against node 1
#      of the cluster (catalog in etcd) and against a single node (embedded catalog), as in
#      scenario "api";
#  (c) the transport: `transport_bench --bulk-mib BENCH_BULK_MIB` (default 1024; QUIC against
#      TCP+TLS, one process on loopback: bulk MB/s, small calls with 1 and 64 in flight) and
#      iperf3 (one TCP stream on loopback, the same bytes) as the ceiling of the machine.
# Env: BENCH_SECONDS (wrk, default 10), BENCH_CALLS, BENCH_BULK_MIB, HOODYD_BIN.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SECS=${BENCH_SECONDS:-10}
CALLS=${BENCH_CALLS:-300}
BULK_MIB=${BENCH_BULK_MIB:-1024}
BIN=${HOODYD_BIN:-$ROOT/target/release/hoodyd}
TBENCH=$ROOT/target/release/examples/transport_bench
# identical for the cluster and the single node; --timeout 10s: wrk's default 2 s cuts off the
# cluster's POSTs on a loaded machine, and a cut-off request is no latency figure
WRK=(wrk -t2 -c64 -d"${SECS}s" --timeout 10s --latency)
log() { echo "cluster: $*" >&2; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "please install: ${missing[*]}"; exit 1; }
  apt-get install -y "${missing[@]}" >&2
fi
if [ ! -x "$BIN" ]; then
  [ -z "${HOODYD_BIN:-}" ] || { log "HOODYD_BIN=$BIN is not an executable"; exit 1; }
  log "building hoodyd (cargo build --release)"
  (cd "$ROOT" && cargo build --release --bin hoodyd >&2)
fi
if [ ! -x "$TBENCH" ]; then
  log "building the transport benchmark"
  (cd "$ROOT" && cargo build --release -p hoody-transport --example transport_bench >&2)
fi

TMP=$(mktemp -d /tmp/hoody-bench-cluster.XXXXXX)
SPID="" IPID=""
cleanup() {
  HOODYD_BIN=$BIN "$ROOT/bench/cluster.sh" down "$TMP/cluster" >&2 || true
  for p in $SPID $IPID; do kill "$p" 2>/dev/null || true; done
  for p in $SPID $IPID; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

read -r load1 _ < /proc/loadavg
log "load average at start: $(cat /proc/loadavg) on $(nproc) CPUs"

# --- the cluster -------------------------------------------------------------------------
HOODYD_BIN=$BIN "$ROOT/bench/cluster.sh" up "$TMP/cluster" 3 >&2
C=$TMP/cluster
TOKEN=$(tr -d '\n' <"$C/admin.token")
http_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$1/run/endpoints.json"; }
id_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$1/state/node.json"; }
N1=$(http_of "$C/node1") N2=$(http_of "$C/node2")
ID1=$(id_of "$C/node1")

# api HOST METHOD PATH [BODY] -> the response body; fails on a non-2xx answer.
api() {
  python3 - "$TOKEN" "$@" <<'PY'
import sys, urllib.request
token, host, method, path = sys.argv[1:5]
body = sys.argv[5].encode() if len(sys.argv) > 5 else None
req = urllib.request.Request("http://%s%s" % (host, path), data=body, method=method,
                             headers={"Authorization": "Bearer " + token,
                                      "Content-Type": "application/json"})
sys.stdout.write(urllib.request.urlopen(req, timeout=30).read().decode())
PY
}
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][sys.argv[1]])' "$1"; }
PROJECT=$(api "$N1" POST /api/v1/projects '{"name":"bench"}' | field id)
made=$(api "$N1" POST /api/v1/containers "{\"name\":\"c0\",\"project_id\":\"$PROJECT\",\"server_id\":\"$ID1\"}")
CONTAINER=$(field id <<<"$made")
[ "$(field server_id <<<"$made")" = "$ID1" ] || { log "c0 is not on node 1: $made"; exit 1; }

# --- (a) forwarded against direct ------------------------------------------------------------
log "(a) $CALLS PATCH calls to the owner (node 1) and through node 2, taking turns"
python3 - "$N1" "$N2" "$TOKEN" "$CONTAINER" "$CALLS" >"$TMP/patch.out" <<'PY'
import http.client, json, sys, time
owner, other, token, cid, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
def connect(hostport):
    host, port = hostport.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=30)
conns = {"direct": connect(owner), "forwarded": connect(other)}
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def call(kind, i):
    body = json.dumps({"env": {"BENCH": str(i)}})
    c = conns[kind]
    t = time.perf_counter()
    c.request("PATCH", "/api/v1/containers/" + cid, body, headers)
    r = c.getresponse()
    data = r.read()
    dt = time.perf_counter() - t
    if r.status != 200:
        sys.exit("PATCH %s answered %d: %s" % (kind, r.status, data[:300]))
    if json.loads(data)["data"]["env"].get("BENCH") != str(i):
        sys.exit("PATCH %s did not change the env: %s" % (kind, data[:300]))
    return dt
for i in range(20):  # warm-up: connections, the QUIC link between node 2 and node 1, caches
    call("direct", i); call("forwarded", i)
times = {"direct": [], "forwarded": []}
for i in range(n):
    order = ("direct", "forwarded") if i % 2 == 0 else ("forwarded", "direct")
    for kind in order:
        times[kind].append(call(kind, 1000 + i) * 1000)
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, len(v) * p // 100)]
for kind, v in times.items():
    print(kind, "%.3f %.3f" % (pct(v, 50), pct(v, 99)))
PY
read -r _ d50 d99 < <(grep '^direct' "$TMP/patch.out")
read -r _ f50 f99 < <(grep '^forwarded' "$TMP/patch.out")
log "PATCH direct p50 $d50 ms p99 $d99 ms; forwarded p50 $f50 ms p99 $f99 ms"

# --- (b) wrk against node 1 of the cluster, then against a single node -------------------------
"$BIN" serve --data-dir "$TMP/single" --node-name single --http 127.0.0.1:0 --quic 127.0.0.1:0 >"$TMP/single.log" 2>&1 &
SPID=$!
S=""
for _ in $(seq 1 300); do
  kill -0 "$SPID" 2>/dev/null || { log "the single node exited:"; cat "$TMP/single.log" >&2; exit 1; }
  S=$(http_of "$TMP/single" 2>/dev/null) && [ -s "$TMP/single/admin.token" ] && break
  S=""; sleep 0.1
done
[ -n "$S" ] || { log "the single node published no endpoints in 30 s"; exit 1; }
STOKEN=$(tr -d '\n' <"$TMP/single/admin.token")
SID=$(id_of "$TMP/single")
SPROJECT=$(TOKEN=$STOKEN api "$S" POST /api/v1/projects '{"name":"bench"}' | field id)
SCONTAINER=$(TOKEN=$STOKEN api "$S" POST /api/v1/containers "{\"name\":\"c0\",\"project_id\":\"$SPROJECT\",\"server_id\":\"$SID\"}" | field id)

wrk_run() { # wrk_run NAME URL [wrk args]
  local name=$1 url=$2; shift 2
  log "wrk $name ($SECS s)"
  "${WRK[@]}" "$@" "$url" >"$TMP/$name.wrk"
  cat "$TMP/$name.wrk" >&2
  if grep -q "Non-2xx or 3xx responses\|Socket errors" "$TMP/$name.wrk"; then
    log "$name: errors or non-2xx answers; see above"; exit 1
  fi
}
rps() { awk '/^Requests\/sec:/ {print $2}' "$TMP/$1.wrk"; }
p99_ms() { # wrk prints 812.00us, 1.23ms, 1.02s or 1.50m
  awk '$1=="99%" { v=$2
    if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) }
    else if (v ~ /m$/) { sub(/m$/,"",v); v*=60000 } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 }
    printf "%.3f\n", v }' "$TMP/$1.wrk"
}
# Taking turns, so that a build starting on this shared machine hits both alike.
wrk_run cluster-get "http://$N1/api/v1/containers/$CONTAINER" -H "Authorization: Bearer $TOKEN"
wrk_run single-get "http://$S/api/v1/containers/$SCONTAINER" -H "Authorization: Bearer $STOKEN"
BENCH_TOKEN=$TOKEN BENCH_POST_BODY="{\"name\":\"load\",\"project_id\":\"$PROJECT\",\"server_id\":\"$ID1\"}" \
  wrk_run cluster-post "http://$N1/api/v1/containers" -s "$HERE/post.lua"
BENCH_TOKEN=$STOKEN BENCH_POST_BODY="{\"name\":\"load\",\"project_id\":\"$SPROJECT\",\"server_id\":\"$SID\"}" \
  wrk_run single-post "http://$S/api/v1/containers" -s "$HERE/post.lua"
kill "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=""
HOODYD_BIN=$BIN "$ROOT/bench/cluster.sh" down "$C" >&2

# --- (c) the transport, and iperf3 ------------------------------------------------------------
log "transport_bench --bulk-mib $BULK_MIB"
"$TBENCH" --bulk-mib "$BULK_MIB" | tee "$TMP/transport.out" >&2
row() { # row LABEL COLUMN: the figure of a transport_bench line ("1 in flight p50 (us)" ...)
  awk -v label="$1" -v col="$2" 'index($0, label) == 1 { n = split(substr($0, length(label) + 1), f, " "); print f[col] }' "$TMP/transport.out"
}
IPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
iperf3 -s -B 127.0.0.1 -p "$IPORT" >"$TMP/iperf3-server.log" 2>&1 &
IPID=$!
for _ in $(seq 1 100); do
  python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' "$IPORT" 2>/dev/null && break
  sleep 0.1
done
log "iperf3 -c 127.0.0.1 -n ${BULK_MIB}M"
iperf3 -c 127.0.0.1 -p "$IPORT" -n "${BULK_MIB}M" -J >"$TMP/iperf3.json"
IPERF=$(python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 8e6))' "$TMP/iperf3.json")
log "iperf3: $IPERF MB/s"

echo "REFERENCE direct (the same PATCH sent to the container's owner itself; hoodyd = forwarded through another node)"
echo "REFERENCE single-node (one hoodyd with its embedded catalog; hoodyd = node 1 of 3, catalog in etcd)"
echo "REFERENCE tcp-tls (transport_bench's TCP+TLS baseline, same frames and certificates; hoodyd = its QUIC transport)"
echo "REFERENCE iperf3 (one TCP stream on loopback, no TLS: the ceiling of this machine)"
echo "RESULT patch_p50_ms hoodyd $f50 ms"
echo "RESULT patch_p50_ms direct $d50 ms"
echo "RESULT patch_p99_ms hoodyd $f99 ms"
echo "RESULT patch_p99_ms direct $d99 ms"
echo "RESULT forward_extra_p50_ms hoodyd $(python3 -c "print('%.3f' % ($f50 - $d50))") ms"
echo "RESULT forward_extra_p99_ms hoodyd $(python3 -c "print('%.3f' % ($f99 - $d99))") ms"
echo "RESULT get_rps hoodyd $(rps cluster-get) req/s"
echo "RESULT get_rps single-node $(rps single-get) req/s"
echo "RESULT get_p99_ms hoodyd $(p99_ms cluster-get) ms"
echo "RESULT get_p99_ms single-node $(p99_ms single-get) ms"
echo "RESULT post_rps hoodyd $(rps cluster-post) req/s"
echo "RESULT post_rps single-node $(rps single-post) req/s"
echo "RESULT post_p99_ms hoodyd $(p99_ms cluster-post) ms"
echo "RESULT post_p99_ms single-node $(p99_ms single-post) ms"
echo "RESULT bulk_mbps hoodyd $(row 'bulk MB/s median' 1) MB/s"
echo "RESULT bulk_mbps tcp-tls $(row 'bulk MB/s median' 2) MB/s"
echo "RESULT bulk_mbps iperf3 $IPERF MB/s"
echo "RESULT call1_p50_us hoodyd $(row '1 in flight p50 (us)' 1) us"
echo "RESULT call1_p50_us tcp-tls $(row '1 in flight p50 (us)' 2) us"
echo "RESULT call1_p99_us hoodyd $(row '1 in flight p99 (us)' 1) us"
echo "RESULT call1_p99_us tcp-tls $(row '1 in flight p99 (us)' 2) us"
echo "RESULT call64_p50_us hoodyd $(row '64 in flight p50 (us)' 1) us"
echo "RESULT call64_p99_us hoodyd $(row '64 in flight p99 (us)' 1) us"
# The machine is shared (builds, other tests): its load when the run began, for judging the figures.
echo "RESULT loadavg_1m_at_start hoodyd $load1 load"

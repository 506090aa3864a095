#!/bin/bash
# Scenario "api": throughput and p99 latency of hoodyd's HTTP API under wrk (GET one container,
# POST a new container), next to nginx answering a static JSON of the same size with the same
# wrk parameters — the HTTP ceiling of this machine, so the ratio shows what hoodyd's own work
# (auth, catalog, JSON) costs. Env: BENCH_SECONDS (default 10), HOODYD_BIN, NGINX_BIN.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SECS=${BENCH_SECONDS:-10}
BIN=${HOODYD_BIN:-$ROOT/target/release/hoodyd}
NGINX=${NGINX_BIN:-/usr/sbin/nginx}
WRK=(wrk -t2 -c64 -d"${SECS}s" --latency)   # identical for both servers
log() { echo "api: $*" >&2; }

# Tools: installed from Debian when missing and we are root; otherwise say what is needed.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -x "$NGINX" ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "please install: ${missing[*]}"; exit 1; }
  apt-get install -y "${missing[@]}" >&2
fi
if [ ! -x "$BIN" ]; then
  [ -z "${HOODYD_BIN:-}" ] || { log "HOODYD_BIN=$BIN is not an executable"; exit 1; }
  log "building hoodyd (cargo build --release)"
  (cd "$ROOT" && cargo build --release --bin hoodyd >&2)
fi

# Everything temporary lives in one dir on /tmp; the trap stops both servers and removes it.
TMP=$(mktemp -d /tmp/hoody-bench-api.XXXXXX)
HPID="" NPID=""
cleanup() {
  for p in $HPID $NPID; do kill "$p" 2>/dev/null || true; done
  for p in $HPID $NPID; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# --- hoodyd -----------------------------------------------------------------------------
"$BIN" serve --data-dir "$TMP/data" --http 127.0.0.1:0 --quic 127.0.0.1:0 >"$TMP/hoodyd.log" 2>&1 &
HPID=$!
# Port 0 means the daemon picks the ports and publishes them in run/endpoints.json.
HTTP=""
for _ in $(seq 1 300); do
  kill -0 "$HPID" 2>/dev/null || { log "hoodyd exited:"; cat "$TMP/hoodyd.log" >&2; exit 1; }
  HTTP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' \
    "$TMP/data/run/endpoints.json" 2>/dev/null) && [ -s "$TMP/data/admin.token" ] && break
  HTTP=""; sleep 0.1
done
[ -n "$HTTP" ] || { log "hoodyd published no endpoints in 30 s"; exit 1; }
TOKEN=$(tr -d '\n' <"$TMP/data/admin.token")

# api METHOD PATH [BODY] -> response body; python instead of curl so nothing else is needed.
api() {
  python3 - "$HTTP" "$TOKEN" "$@" <<'PY'
import sys, urllib.request
host, token, method, path = sys.argv[1:5]
body = sys.argv[5].encode() if len(sys.argv) > 5 else None
req = urllib.request.Request("http://%s%s" % (host, path), data=body, method=method,
                             headers={"Authorization": "Bearer " + token,
                                      "Content-Type": "application/json"})
sys.stdout.write(urllib.request.urlopen(req, timeout=10).read().decode())
PY
}
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])'; }
PROJECT=$(api POST /api/v1/projects '{"name":"bench"}' | field)
CONTAINER=$(api POST /api/v1/containers "{\"name\":\"c0\",\"project_id\":\"$PROJECT\"}" | field)
GET_PATH=/api/v1/containers/$CONTAINER
api GET "$GET_PATH" >"$TMP/get.json"
export BENCH_TOKEN=$TOKEN BENCH_POST_BODY="{\"name\":\"load\",\"project_id\":\"$PROJECT\"}"

# --- nginx: the same bytes hoodyd returns for the GET, for every request of any method ----
mkdir -p "$TMP/nginx"
NPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# nginx string literal: escape \ and ', and neutralise $ (variables) without changing the size.
BODY=$(python3 - "$TMP/get.json" <<'PY'
import sys
s = open(sys.argv[1]).read()
print(s.replace("\\", "\\\\").replace("'", "\\'").replace("$", "_"))
PY
)
N=$TMP/nginx
cat >"$N/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $N/nginx.pid;
error_log $N/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    # every temp path inside the temp dir (the defaults point to /var/lib/nginx)
    client_body_temp_path $N/body;
    proxy_temp_path $N/proxy;
    fastcgi_temp_path $N/fastcgi;
    uwsgi_temp_path $N/uwsgi;
    scgi_temp_path $N/scgi;
    # wrk keeps its 64 connections open, as it does with hoodyd (no per-connection cap there)
    keepalive_requests 1000000;
    default_type application/json;
    server {
        listen 127.0.0.1:$NPORT;
        location / { return 200 '$BODY'; }
    }
}
CONF
# -e: the error log before the config is read, so nothing is written to /var/log/nginx
"$NGINX" -p "$N" -e "$N/error.log" -c "$N/nginx.conf" &
NPID=$!
for _ in $(seq 1 100); do
  python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' "$NPORT" 2>/dev/null && break
  kill -0 "$NPID" 2>/dev/null || { log "nginx exited:"; cat "$N/error.log" >&2; exit 1; }
  sleep 0.1
done

# --- load --------------------------------------------------------------------------------
# wrk_run NAME URL [wrk args]: keeps the output in $TMP/NAME.wrk; a run with non-2xx answers
# or socket errors measured something else than the intended request, so it fails loudly.
wrk_run() {
  local name=$1 url=$2; shift 2
  log "wrk $name ($SECS s)"
  "${WRK[@]}" "$@" "$url" >"$TMP/$name.wrk"
  cat "$TMP/$name.wrk" >&2
  if grep -q "Non-2xx or 3xx responses" "$TMP/$name.wrk"; then
    log "$name: some answers were not 2xx; see above"; exit 1
  fi
}
rps() { awk '/^Requests\/sec:/ {print $2}' "$TMP/$1.wrk"; }
p99_ms() { # wrk prints 812.00us, 1.23ms, 1.02s or 1.50m
  awk '$1=="99%" { v=$2
    if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) }
    else if (v ~ /m$/) { sub(/m$/,"",v); v*=60000 } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 }
    printf "%.3f\n", v }' "$TMP/$1.wrk"
}

echo "REFERENCE nginx (static JSON, the HTTP ceiling of this machine)"
for tool in hoodyd nginx; do
  if [ $tool = hoodyd ]; then base=http://$HTTP; else base=http://127.0.0.1:$NPORT; fi
  wrk_run $tool-get "$base$GET_PATH" -H "Authorization: Bearer $TOKEN"
  wrk_run $tool-post "$base/api/v1/containers" -s "$HERE/post.lua"
  echo "RESULT get_rps $tool $(rps $tool-get) req/s"
  echo "RESULT get_p99_ms $tool $(p99_ms $tool-get) ms"
  echo "RESULT post_rps $tool $(rps $tool-post) req/s"
  echo "RESULT post_p99_ms $tool $(p99_ms $tool-post) ms"
done

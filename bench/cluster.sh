#!/bin/bash
# A cluster of hoodyd nodes on this machine, for benchmarks and by hand:
#   bench/cluster.sh up DIR [N]        etcd and N nodes (default 2) under DIR/node1..N; returns when
#                                      all are online; the admin token is in DIR/admin.token
#   bench/cluster.sh stop-node DIR K   SIGKILL node K (as a crash would)
#   bench/cluster.sh start-node DIR K  start node K again on its data dir (it rejoins by itself, on
#                                      new ports: read them from DIR/nodeK/run/endpoints.json)
#   bench/cluster.sh status DIR        the servers as the first running node lists them
#   bench/cluster.sh down DIR          stop every node and etcd; no process or mount left behind
#                                      (the data dirs and logs stay: rm -rf DIR before the next up)
# Each node has its own data dir, ports (HTTP and QUIC on free 127.0.0.1 ports), certificate,
# run/endpoints.json and run/hoodyd.pid. Node 1 is made a cluster by `hoodyd cluster init`, the
# others join with one-time tokens (`hoodyd serve --join`), exactly as on separate servers.
# HOODYD_BIN picks the binary (default: target/release/hoodyd, built when missing).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOODYD=${HOODYD_BIN:-$ROOT/target/release/hoodyd}

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

need_binary() {
  if [ ! -x "$HOODYD" ]; then
    (cd "$ROOT" && cargo build --release --bin hoodyd >&2)
  fi
  command -v etcd >/dev/null || die "etcd is not installed (Debian: apt-get install etcd-server)"
}

http_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$1/run/endpoints.json"; }

# gone PID SECONDS: waits until PID has exited (a zombie counts as exited); 1 if it still runs.
gone() {
  local i=0
  while kill -0 "$1" 2>/dev/null; do
    case "$(ps -o stat= -p "$1" 2>/dev/null)" in Z*) return 0 ;; esac
    i=$((i + 1)); [ $i -le $(($2 * 20)) ] || return 1; sleep 0.05
  done
}

alive() { [ -f "$1/run/hoodyd.pid" ] && kill -0 "$(cat "$1/run/hoodyd.pid")" 2>/dev/null; }

api() { # api DIR METHOD PATH [BODY]   (through node 1, or through NODE=K)
  local dir=$1 method=$2 path=$3 body=${4:-}
  local url; url="http://$(http_of "$dir/node${NODE:-1}")/api/v1$path"
  if [ -n "$body" ]; then
    curl -sS -X "$method" -H "Authorization: Bearer $(cat "$dir/admin.token")" -H 'Content-Type: application/json' -d "$body" "$url"
  else
    curl -sS -X "$method" -H "Authorization: Bearer $(cat "$dir/admin.token")" "$url"
  fi
}

start_etcd() {
  local dir=$1
  mkdir -p "$dir/etcd"
  local client peer
  if [ -f "$dir/etcd/ports" ]; then read -r client peer < "$dir/etcd/ports"; else client=$(free_port); peer=$(free_port); echo "$client $peer" > "$dir/etcd/ports"; fi
  etcd --name bench --data-dir "$dir/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" > "$dir/etcd/etcd.log" 2>&1 < /dev/null &
  echo $! > "$dir/etcd/etcd.pid"; disown
  echo "http://127.0.0.1:$client" > "$dir/etcd/url"
  local i=0
  until curl -sf "http://127.0.0.1:$client/health" | grep -q true; do
    i=$((i + 1)); [ $i -le 300 ] || die "etcd did not become healthy (see $dir/etcd/etcd.log)"; sleep 0.1
  done
}

start_node() { # start_node DIR K [extra serve args...]
  local dir=$1 k=$2; shift 2
  local node="$dir/node$k"
  mkdir -p "$node/run"
  rm -f "$node/run/endpoints.json"
  "$HOODYD" serve --data-dir "$node" --node-name "node$k" --http 127.0.0.1:0 --quic 127.0.0.1:0 "$@" >> "$node/hoodyd.log" 2>&1 < /dev/null &
  local pid=$!; disown
  # The pid first, so that `down` finds a node that fails to come up too.
  echo "$pid" > "$node/run/hoodyd.pid"
  local i=0
  until [ -s "$node/run/endpoints.json" ]; do
    kill -0 "$pid" 2>/dev/null || { rm -f "$node/run/hoodyd.pid"; die "node$k exited: $(tail -n 5 "$node/hoodyd.log")"; }
    i=$((i + 1)); [ $i -le 300 ] || die "node$k did not start in 30 s (see $node/hoodyd.log)"; sleep 0.1
  done
}

wait_online() { # wait_online DIR N
  local dir=$1 n=$2 i=0
  until [ "$(api "$dir" GET /servers | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin)["data"] if s["state"]=="online"))')" -ge "$n" ]; do
    i=$((i + 1)); [ $i -le 300 ] || die "not $n nodes online: $(api "$dir" GET /servers)"; sleep 0.1
  done
}

up() {
  local dir=$1 n=${2:-2}
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number"
  [ ! -e "$dir/node1" ] || die "$dir already holds a cluster (bench/cluster.sh down $dir, then rm -rf $dir)"
  need_binary
  mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
  # A failure half-way takes down what was started (etcd, the first nodes).
  trap "rc=\$?; [ \$rc -eq 0 ] || down $(printf %q "$dir"); exit \$rc" EXIT
  start_etcd "$dir"
  "$HOODYD" init --data-dir "$dir/node1" --node-name node1 > /dev/null
  "$HOODYD" cluster init --etcd "$(cat "$dir/etcd/url")" --data-dir "$dir/node1" > /dev/null
  start_node "$dir" 1
  cp "$dir/node1/admin.token" "$dir/admin.token"
  for k in $(seq 2 "$n"); do
    local token
    token=$(api "$dir" POST /cluster/join-tokens '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["token"])')
    start_node "$dir" "$k" --join "$token"
  done
  wait_online "$dir" "$n"
  trap - EXIT
  echo "cluster of $n nodes up under $dir (admin token: $dir/admin.token)"
}

stop_node() { # SIGKILL
  local node="$1/node$2"
  alive "$node" || die "node$2 is not running"
  local pid; pid=$(cat "$node/run/hoodyd.pid")
  kill -9 "$pid" 2>/dev/null || true
  # Gone (and its lock on the data dir released) before this returns, so start-node can follow.
  gone "$pid" 10 || die "node$2 (pid $pid) survived SIGKILL"
  rm -f "$node/run/hoodyd.pid"
}

start_node_again() {
  local dir=$1 k=$2
  [ -d "$dir/node$k" ] || die "no node$k under $dir"
  ! alive "$dir/node$k" || die "node$k runs already"
  need_binary
  start_node "$dir" "$k"
}

down() {
  local dir=$1
  for pidfile in "$dir"/node*/run/hoodyd.pid; do
    [ -f "$pidfile" ] || continue
    local pid; pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    gone "$pid" 10 || { kill -9 "$pid" 2>/dev/null || true; gone "$pid" 5 || true; }
    rm -f "$pidfile"
  done
  # A killed node leaves its share mounts: take down whatever is mounted beneath DIR (none is
  # not an error: `|| true`, or pipefail would end the script here and leave etcd running).
  local abs; abs=$(cd "$dir" && pwd)
  { grep -F " $abs/" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [ -f "$dir/etcd/etcd.pid" ]; then
    local pid; pid=$(cat "$dir/etcd/etcd.pid")
    kill -9 "$pid" 2>/dev/null || true
    gone "$pid" 5 || true
    rm -f "$dir/etcd/etcd.pid"
  fi
}

status() { # through the first node that runs (node 1 may be the one stopped)
  local dir=$1 node
  for node in "$dir"/node*; do
    if alive "$node"; then NODE=${node##*/node} api "$dir" GET /servers; echo; return; fi
  done
  die "no node of $dir runs"
}

[ $# -ge 2 ] || usage
cmd=$1 dir=$2
case "$cmd" in
  up) up "$dir" "${3:-2}" ;;
  stop-node) [ $# -eq 3 ] || usage; stop_node "$dir" "$3" ;;
  start-node) [ $# -eq 3 ] || usage; start_node_again "$dir" "$3"; echo "node$3 started" ;;
  status) status "$dir" ;;
  down) down "$dir" ;;
  *) usage ;;
esac

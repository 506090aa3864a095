#!/bin/bash
# Scenario "remote_shares" (issue 19): one source directory on node 1 of a 2-node cluster
# (bench/cluster.sh), seen from a target container on node 2 through a remote share (FUSE on
# node 2, served over QUIC by node 1), side by side in the same run with
#   sshfs      the same source directory through a private sshd on 127.0.0.1 (its own host key,
#              an authorized key, root by key only; the system's sshd is left alone), default
#              sshfs options;
#   glusterfs  a one-brick GlusterFS volume (the brick a directory on the same local fs) mounted
#              with its FUSE client, the same data copied in through the mount;
#   native     the source directory itself (ext4).
# Workloads (as in shares.sh where they overlap): fio sequential write of 1 GiB (1 MiB blocks,
# direct=0, end_fsync=1) and warm sequential read (5 s), random 4 KiB reads for BENCH_SECONDS
# (default 20), a cold sequential read of the GiB (all page cache dropped first); on the tree:
# `ls -lR` cold (dentries/inodes dropped) then warm (right after), a stat of every entry (cold),
# reading every file (all caches dropped), untar of a tarball. The views take turns within each
# of BENCH_ROUNDS rounds (default 1 here), each view's median reported.
# Twice: at 0 ms added delay, then at 20 ms added round trip: bench/lib/delay_relay.rs (built
# with rustc) holds every UDP datagram and TCP chunk 10 ms each way. hoodyd: node 1 is restarted
# with HOODY_QUIC_ADVERTISE naming the relay's UDP port, so node 2 reaches node 1 only through
# the relay; sshfs connects to the relay's TCP port for the sshd; the GlusterFS client is started
# with its volfile server and its brick (xlator-option remote-host/remote-port) on relay ports.
# At 20 ms every serial metadata workload costs round trips: the tree is BENCH_DELAY_TREE
# (default rootfs/usr/share/doc of the reference data set, 556 entries) and the untar is a tarball
# of that tree, instead of the 27k-entry tree and the rootfs; sequential transfers are cut at
# BENCH_SEQ_CAP seconds (default 30; fio --runtime: throughput over what was moved).
# Metric names end in _0ms / _20ms. Env: HOODY_BENCH_DATA, HOODYD_BIN, BENCH_SECONDS,
# BENCH_ROUNDS, BENCH_SETTLE (default 5), BENCH_DELAY_MS (the added round trip, default 20;
# 0 skips the delayed half), BENCH_DELAY_TREE, BENCH_SEQ_CAP.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA=${HOODY_BENCH_DATA:-/tmp/hoody-bench}
export HOODYD_BIN=${HOODYD_BIN:-$ROOT/target/release/hoodyd}
SHARED=${HOODY_SHARED_BENCH:-$ROOT/../shared/bench}
SECONDS_RANDOM=${BENCH_SECONDS:-20}
SETTLE=${BENCH_SETTLE:-5}
ROUNDS=${BENCH_ROUNDS:-1}
DELAY_MS=${BENCH_DELAY_MS:-20}
DELAY_TREE=${BENCH_DELAY_TREE:-rootfs/usr/share/doc}
SEQ_CAP=${BENCH_SEQ_CAP:-30}
TOUCH_MIB=$(awk '/^MemAvailable:/ { m = int($2 / 1024 / 4); print (m < 4096 ? m : 4096) }' /proc/meminfo)
VIEWS="native hoodyd sshfs glusterfs"
log() { echo "remote_shares: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root (mounts, sshd, glusterd, dropping kernel caches)"; exit 1; }
missing=()
for t in fio:fio sshfs:sshfs /usr/sbin/sshd:openssh-server gluster:glusterfs-server glusterfs:glusterfs-client curl:curl python3:python3 etcd:etcd-server rustc:rustc; do
  command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
[ ${#missing[@]} -eq 0 ] || apt-get install -y "${missing[@]}" >&2
[ -f "$DATA/.data-mut.done" ] || "$SHARED/make-data.sh" "$DATA" >&2
[ -x "$HOODYD_BIN" ] || (cd "$ROOT" && cargo build --release --bin hoodyd >&2)

TMP=$(mktemp -d /tmp/hoody-bench-rshares.XXXXXX)
CL=$TMP/cluster
RELAY_PID="" SSHD_PID="" GLUSTERD_STARTED="" VOL="hoodybench$$"
cleanup() {
  set +e
  for m in "$TMP/sshfs" "$TMP/gluster/mnt"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  [ -z "$SSHD_PID" ] || kill "$SSHD_PID" 2>/dev/null
  if gluster --mode=script volume info "$VOL" >/dev/null 2>&1; then
    gluster --mode=script volume stop "$VOL" force >/dev/null 2>&1
    gluster --mode=script volume delete "$VOL" >/dev/null 2>&1
  fi
  [ -z "$GLUSTERD_STARTED" ] || kill "$(cat "$TMP/glusterd.pid" 2>/dev/null)" 2>/dev/null
  [ -z "$RELAY_PID" ] || kill "$RELAY_PID" 2>/dev/null
  [ ! -d "$CL" ] || "$ROOT/bench/cluster.sh" down "$CL" >&2
  rm -rf "$TMP"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { python3 -c "print(round($2-$1,3))"; }
drop_dentries() { sync; echo 2 >/proc/sys/vm/drop_caches; }
drop_all() { sync; echo 3 >/proc/sys/vm/drop_caches; }
median() { python3 -c 'import statistics,sys; print(statistics.median(float(v) for v in sys.argv[1:]))' $1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

log "building the delay relay"
rustc -O --edition 2021 -o "$TMP/delay_relay" "$ROOT/bench/lib/delay_relay.rs" >&2

echo "REFERENCE native the source directory itself (ext4 on node 1's disk), no network, no FUSE"
echo "REFERENCE sshfs sshfs $(sshfs --version 2>&1 | awk '/SSHFS version/ {print $3}') default options, through a private OpenSSH sshd on 127.0.0.1 (root, key only)"
echo "REFERENCE glusterfs GlusterFS $(glusterfs --version | awk 'NR==1 {print $2}'): one brick (a directory on the same ext4), FUSE client"

# --- The cluster: a source container on node 1 sharing /bench with a target container on node 2.
log "starting etcd and 2 nodes"
"$ROOT/bench/cluster.sh" up "$CL" 2 >&2
api() { local url; url="http://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$CL/node1/run/endpoints.json")/api/v1$2"
  curl -sf -X "$1" -H "Authorization: Bearer $(cat "$CL/admin.token")" -H 'Content-Type: application/json' "$url" ${3:+-d "$3"}; }
jget() { python3 -c "import json,sys; print(json.load(sys.stdin)['data']$1)"; }
server_id() { api GET /servers | python3 -c "import json,sys; print([s['id'] for s in json.load(sys.stdin)['data'] if s['name']=='$1'][0])"; }
N1=$(server_id node1); N2=$(server_id node2)
P=$(api POST /projects '{"name":"bench"}' | jget "['id']")
SRC_JSON=$(api POST /containers "{\"name\":\"source\",\"project_id\":\"$P\",\"server_id\":\"$N1\"}")
SRC=$(echo "$SRC_JSON" | jget "['rootfs_path']"); SID=$(echo "$SRC_JSON" | jget "['id']")
TGT_JSON=$(api POST /containers "{\"name\":\"target\",\"project_id\":\"$P\",\"server_id\":\"$N2\"}")
TGT=$(echo "$TGT_JSON" | jget "['rootfs_path']"); TID=$(echo "$TGT_JSON" | jget "['id']")
case "$SRC" in "$CL/node1/"*) ;; *) log "the source is not on node 1: $SRC"; exit 1 ;; esac
case "$TGT" in "$CL/node2/"*) ;; *) log "the target is not on node 2: $TGT"; exit 1 ;; esac
mkdir -p "$SRC/bench/tree"
log "copying the tree into the source"
cp -a "$DATA/data/small" "$DATA/data/rootfs" "$SRC/bench/tree/"
sync
SHARE=$(api POST "/containers/$SID/storage/shares" "{\"source_path\":\"/bench\",\"target_container_id\":\"$TID\",\"mode\":\"readwrite\",\"alias\":\"bench\"}" | jget "['id']")
HMNT=$TGT/hoody/shares/bench
wait_share() { # the share answers on node 2 (after a start or a restart of node 1)
  local i=0
  until [ "$(api GET "/containers/$TID/storage/incoming/$SHARE" | jget "['status']" 2>/dev/null)" = active ] && ls "$HMNT/tree" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -le 600 ] || { log "the remote share did not become active: $(api GET "/containers/$TID/storage/incoming/$SHARE")"; exit 1; }
    sleep 0.1
  done
}
wait_share

# --- sshd of our own and sshfs.
SSHP=$(free_port)
mkdir -p "$TMP/ssh" /run/sshd
chmod 700 "$TMP/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$TMP/ssh/client_key"
cp "$TMP/ssh/client_key.pub" "$TMP/ssh/authorized_keys"
cat >"$TMP/ssh/sshd_config" <<EOF
Port $SSHP
ListenAddress 127.0.0.1
HostKey $TMP/ssh/host_key
AuthorizedKeysFile $TMP/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $TMP/ssh/sshd.pid
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -D -e -f "$TMP/ssh/sshd_config" 2>"$TMP/ssh/sshd.log" &
SSHD_PID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$SSHP") 2>/dev/null && break; sleep 0.1; done
mkdir -p "$TMP/sshfs"
mount_sshfs() { # mount_sshfs PORT
  sshfs -p "$1" -o IdentityFile="$TMP/ssh/client_key",StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes \
    "root@127.0.0.1:$SRC/bench" "$TMP/sshfs" >&2
}
mount_sshfs "$SSHP"

# --- GlusterFS: glusterd (ours unless one runs), a one-brick volume, its FUSE client.
if ! pgrep -x glusterd >/dev/null; then
  glusterd -p "$TMP/glusterd.pid" --log-file="$TMP/glusterd.log"
  GLUSTERD_STARTED=1
  for _ in $(seq 1 100); do gluster --mode=script volume list >/dev/null 2>&1 && break; sleep 0.1; done
fi
# Bricks on a loopback address are refused: the host's first address (still this machine).
GHOST=$(hostname -I | awk '{print $1}')
mkdir -p "$TMP/gluster/brick" "$TMP/gluster/mnt"
gluster --mode=script volume create "$VOL" "$GHOST:$TMP/gluster/brick" force >&2
gluster --mode=script volume start "$VOL" >&2
BRICKP=$(gluster volume status "$VOL" --xml | python3 -c 'import sys, xml.etree.ElementTree as E; print(E.parse(sys.stdin).find(".//node/port").text)')
[[ "$BRICKP" =~ ^[0-9]+$ ]] || { log "no brick port: $(gluster volume status "$VOL")"; exit 1; }
mount -t glusterfs "$GHOST:/$VOL" "$TMP/gluster/mnt"
mkdir -p "$TMP/gluster/mnt/tree"
log "copying the tree into GlusterFS (through its mount)"
cp -a "$DATA/data/small" "$DATA/data/rootfs" "$TMP/gluster/mnt/tree/"
sync

declare -A VIEW=([native]="$SRC/bench" [hoodyd]="$HMNT" [sshfs]="$TMP/sshfs" [glusterfs]="$TMP/gluster/mnt")
for v in $VIEWS; do
  [ -d "${VIEW[$v]}/tree/rootfs/usr/share/doc" ] || { log "$v does not show the tree"; exit 1; }
done
# The delayed half's untar: a tarball of its tree.
tar -cf "$TMP/delay_tree.tar" -C "$DATA/data" "$DELAY_TREE"

fio_run() { # fio_run FILE RW [extra...]: prints "<MiB/s> <IOPS>" of one fio job
  local file=$1 rw=$2; shift 2
  fio --name=job --filename="$file" --rw="$rw" --ioengine=psync --output-format=json "$@" |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; s=j["write"] if j["write"]["io_bytes"] else j["read"]; print(round(s["bw_bytes"]/1048576,1), round(s["iops"]))'
}
turn() { # the views' order turns from round to round
  case $(( $1 % 4 )) in 1) echo native hoodyd sshfs glusterfs ;; 2) echo hoodyd sshfs glusterfs native ;;
    3) echo sshfs glusterfs native hoodyd ;; 0) echo glusterfs native hoodyd sshfs ;; esac
}
probe_rtt() { # probe_rtt DIR: ms of 5 stats of absent names (each one lookup round trip), the median
  python3 - "$1" <<'EOF'
import os, random, statistics, sys, time
t = []
for i in range(5):
    p = os.path.join(sys.argv[1], "absent-%d-%d" % (os.getpid(), random.randrange(1 << 30)))
    t0 = time.perf_counter()
    try: os.stat(p)
    except FileNotFoundError: pass
    t.append((time.perf_counter() - t0) * 1000)
print(round(statistics.median(t), 2))
EOF
}

# failed TOOL WHAT: a workload reported errors (its stderr in $TMP/err). Fatal for hoodyd and native;
# for a reference it is logged (sshfs here cannot read symlinks below the top directory: EPERM
# for 232 of the tree's) and its time kept: it did the same walk.
failed() {
  log "$1: $2 reported errors ($(wc -l <"$TMP/err") lines, first: $(head -n 2 "$TMP/err" | tr '\n' ' '))"
  case "$1" in hoodyd|native) exit 1 ;; esac
}

# run_workloads SUFFIX TREE UNTAR_TAR TREE_LABEL UNTAR_LABEL
run_workloads() {
  local sfx=$1 tree=$2 tarball=$3 tl=$4 ul=$5 round tool dir mibs iops t0 t1 rc
  for tool in $VIEWS; do log "$tool: a lookup of an absent name takes $(probe_rtt "${VIEW[$tool]}") ms ($sfx)"; done
  local -A SW SR
  for round in $(seq 1 "$ROUNDS"); do
    for tool in $(turn "$round"); do
      dir=${VIEW[$tool]}
      log "$tool: sequential write ($sfx, round $round)"
      rm -f "$dir/seq-$tool"; sync; sleep "$SETTLE"; sync
      python3 -c "bytearray($TOUCH_MIB << 20)"   # see shares.sh: memory the host handed back
      read -r mibs _ < <(fio_run "$dir/seq-$tool" write --bs=1M --size=1G --end_fsync=1 --runtime="$SEQ_CAP")
      [ -n "$mibs" ] || { log "$tool: fio write failed"; exit 1; }
      SW[$tool]+="$mibs "
    done
    for tool in $(turn "$round"); do
      log "$tool: sequential read, warm ($sfx, round $round)"
      read -r mibs _ < <(fio_run "${VIEW[$tool]}/seq-$tool" read --bs=1M --size=1G --invalidate=0 --time_based --runtime=5)
      [ -n "$mibs" ] || { log "$tool: fio read failed"; exit 1; }
      SR[$tool]+="$mibs "
    done
  done
  for tool in $VIEWS; do
    echo "RESULT seq_write_1MiB_$sfx $tool $(median "${SW[$tool]}") MiB/s"
    echo "RESULT seq_read_warm_1MiB_$sfx $tool $(median "${SR[$tool]}") MiB/s"
  done
  for tool in $VIEWS; do
    log "$tool: random 4 KiB reads for ${SECONDS_RANDOM} s ($sfx)"
    read -r _ iops < <(fio_run "${VIEW[$tool]}/seq-$tool" randread --bs=4k --size=1G --invalidate=0 --time_based --runtime="$SECONDS_RANDOM")
    [ -n "$iops" ] || { log "$tool: fio random read failed"; exit 1; }
    echo "RESULT rand_read_4KiB_$sfx $tool $iops ops/s"
  done
  for tool in $VIEWS; do
    log "$tool: sequential read, cold ($sfx)"
    drop_all
    read -r mibs _ < <(fio_run "${VIEW[$tool]}/seq-$tool" read --bs=1M --size=1G --invalidate=0 --runtime="$SEQ_CAP")
    [ -n "$mibs" ] || { log "$tool: fio cold read failed"; exit 1; }
    echo "RESULT seq_read_cold_1MiB_$sfx $tool $mibs MiB/s"
  done
  for tool in $VIEWS; do rm -f "${VIEW[$tool]}/seq-$tool"; done

  local -A LSC LSW ST RD UT
  for round in $(seq 1 "$ROUNDS"); do
    for tool in $(turn "$round"); do
      dir=${VIEW[$tool]}
      log "$tool: ls -lR cold and warm, stat, read every file, untar ($sfx, round $round)"
      drop_dentries; t0=$(now); ls -lR "$dir/$tree" >/dev/null 2>"$TMP/err" || failed "$tool" "ls -lR (cold)"; t1=$(now)
      LSC[$tool]+="$(elapsed "$t0" "$t1") "
      t0=$(now); ls -lR "$dir/$tree" >/dev/null 2>"$TMP/err" || failed "$tool" "ls -lR (warm)"; t1=$(now)
      LSW[$tool]+="$(elapsed "$t0" "$t1") "
      drop_dentries; t0=$(now); find "$dir/$tree" -printf '%s %m %u\n' >/dev/null 2>"$TMP/err" || failed "$tool" "find"; t1=$(now)
      ST[$tool]+="$(elapsed "$t0" "$t1") "
      drop_all; t0=$(now); { find "$dir/$tree" -type f -print0 | xargs -0 cat >/dev/null; } 2>"$TMP/err" || failed "$tool" "reading every file"; t1=$(now)
      RD[$tool]+="$(elapsed "$t0" "$t1") "
      mkdir "$dir/untar-$tool-$sfx-$round"
      # Device nodes are left out (a share refuses them: nodev).
      sync; t0=$(now)
      tar -xf "$tarball" --exclude="./dev/*" -C "$dir/untar-$tool-$sfx-$round" 2>"$TMP/err" || failed "$tool" "untar"
      t1=$(now)
      UT[$tool]+="$(elapsed "$t0" "$t1") "
    done
  done
  for tool in $VIEWS; do rm -rf "${VIEW[$tool]}"/untar-*; done
  for tool in $VIEWS; do
    echo "RESULT ls_lR_cold_${tl}_$sfx $tool $(median "${LSC[$tool]}") s"
    echo "RESULT ls_lR_warm_${tl}_$sfx $tool $(median "${LSW[$tool]}") s"
    echo "RESULT stat_every_file_${tl}_$sfx $tool $(median "${ST[$tool]}") s"
    echo "RESULT read_every_file_${tl}_$sfx $tool $(median "${RD[$tool]}") s"
    echo "RESULT untar_${ul}_$sfx $tool $(median "${UT[$tool]}") s"
  done
}

run_workloads 0ms tree "$DATA/rootfs.tar" 27k rootfs

[ "$DELAY_MS" != 0 ] || exit 0
# --- The same through the relay: DELAY_MS/2 each way.
ONE_WAY=$(python3 -c "print($DELAY_MS / 2)")
RQ=$(free_udp_port) RS=$(free_port) RGV=$(free_port) RGB=$(free_port)
log "restarting node 1 to advertise the relay's port 127.0.0.1:$RQ as its QUIC address"
"$ROOT/bench/cluster.sh" stop-node "$CL" 1 >&2
HOODY_QUIC_ADVERTISE=127.0.0.1:$RQ "$ROOT/bench/cluster.sh" start-node "$CL" 1 >&2
Q1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["quic"])' "$CL/node1/run/endpoints.json")
"$TMP/delay_relay" --delay-ms "$ONE_WAY" --udp "127.0.0.1:$RQ=$Q1" --tcp "127.0.0.1:$RS=127.0.0.1:$SSHP" \
  --tcp "127.0.0.1:$RGV=$GHOST:24007" --tcp "127.0.0.1:$RGB=$GHOST:$BRICKP" 2>"$TMP/relay.log" &
RELAY_PID=$!
wait_share
# The kernel on node 2 may answer from its caches for 30 s: wait until a lookup of an absent name
# (which it must ask node 1) answers ENOENT again, not EIO.
python3 - "$HMNT" <<'EOF'
import os, sys, time
deadline = time.time() + 60
while True:
    try:
        os.stat(os.path.join(sys.argv[1], "absent-%d-%f" % (os.getpid(), time.time())))
    except FileNotFoundError:
        break
    except OSError as e:
        if time.time() > deadline:
            sys.exit("remote_shares: the share still fails after node 1 restarted: %s" % e)
        time.sleep(0.2)
EOF
advertised=$(api GET /servers | python3 -c "import json,sys; print([s['addresses']['quic'] for s in json.load(sys.stdin)['data'] if s['name']=='node1'][0])")
[ "$advertised" = "127.0.0.1:$RQ" ] || { log "node 1 registered $advertised, not the relay"; exit 1; }
umount "$TMP/sshfs"; mount_sshfs "$RS"
umount "$TMP/gluster/mnt"
# The FUSE client `mount -t glusterfs` runs, started by hand: both its volfile server and its
# brick connection on relay ports (mount.glusterfs passes one xlator-option only).
glusterfs --volfile-server=127.0.0.1 --volfile-server-port="$RGV" --volfile-id="$VOL" \
  --xlator-option="$VOL-client-0.remote-host=127.0.0.1" --xlator-option="$VOL-client-0.remote-port=$RGB" \
  --log-file="$TMP/gluster-client.log" "$TMP/gluster/mnt"
for _ in $(seq 1 100); do [ -d "$TMP/gluster/mnt/tree" ] && break; sleep 0.1; done
for v in hoodyd sshfs glusterfs; do
  ms=$(probe_rtt "${VIEW[$v]}")
  python3 -c "import sys; sys.exit(0 if $ms >= 0.75 * $DELAY_MS else 1)" || { log "$v: a lookup takes $ms ms: not through the relay"; exit 1; }
done
# Which connections go through the relay (for the log).
ss -tnp 2>/dev/null | grep -E "127.0.0.1:($RS|$RGV|$RGB)\b" | awk '{print "remote_shares: relay tcp " $4 " <- " $5}' >&2 || true
d=${DELAY_TREE//\//_}
run_workloads "${DELAY_MS}ms" "tree/$DELAY_TREE" "$TMP/delay_tree.tar" "${d##*_}" "${d##*_}"

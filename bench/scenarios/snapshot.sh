#!/bin/bash
# Scenario "snapshot": hoodyd snapshots on the reference data set (../shared/bench), next to
# restic and borg on the same tree in the same run: full snapshot, incremental snapshot after
# mutate.sh, restore in place from the mutated state back to the first snapshot (reference:
# rsync -a --delete from a pristine copy), full restore into an empty directory (references:
# restic restore, borg extract, cp -a), and the store's size after both snapshots.
# Env: HOODY_BENCH_DATA (default /tmp/hoody-bench, made by make-data.sh when missing), HOODYD_BIN.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA=${HOODY_BENCH_DATA:-/tmp/hoody-bench}
BIN=${HOODYD_BIN:-$ROOT/target/release/hoodyd}
SHARED=${HOODY_SHARED_BENCH:-$ROOT/../shared/bench}
log() { echo "snapshot: $*" >&2; }

missing=()
for t in restic borg rsync curl; do command -v $t >/dev/null || missing+=($t); done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "please install: ${missing[*]}"; exit 1; }
  apt-get install -y $(printf '%s\n' "${missing[@]}" | sed 's/^borg$/borgbackup/') >&2
fi
[ -f "$DATA/.data-mut.done" ] || "$SHARED/make-data.sh" "$DATA" >&2
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --bin hoodyd >&2)

TMP=$(mktemp -d /tmp/hoody-bench-snap.XXXXXX)
HPID=""
cleanup() { [ -z "$HPID" ] || { kill "$HPID" 2>/dev/null; wait "$HPID" 2>/dev/null || true; }; rm -rf "$TMP"; }
trap cleanup EXIT

now() { date +%s.%N; }
# timed NAME TOOL CMD...: runs CMD and prints its wall time as a RESULT line.
timed() {
  local metric=$1 tool=$2; shift 2
  local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now)
  echo "RESULT $metric $tool $(python3 -c "print(round($t1-$t0,3))") s"
}
bytes() { du -sb "$1" | cut -f1; }

echo "REFERENCE restic restic $(restic version | cut -d' ' -f2) (backup, restore; zstd auto)"
echo "REFERENCE borg borg $(borg --version | cut -d' ' -f2) (create with lz4, extract)"
echo "REFERENCE rsync rsync -a --delete from a pristine copy (restore in place)"
echo "REFERENCE cp cp -a of the same tree (full restore: writing new files)"

# --- hoodyd: the container's rootfs is a copy of the data set, adopted.
W=$TMP/container
cp -a "$DATA/data" "$W"
# Adopting a directory is the operator's: allowed beneath $TMP by the config file.
printf 'adopt_roots = ["%s"]\n' "$TMP" >"$TMP/hoodyd.toml"
# Each timed call waits for its job to end (no 202): the time is the operation's.
HOODY_JOB_WAIT_MS=3600000 "$BIN" serve --data-dir "$TMP/hoody" --config "$TMP/hoodyd.toml" --http 127.0.0.1:0 --quic 127.0.0.1:0 >"$TMP/hoodyd.log" 2>&1 &
HPID=$!
for _ in $(seq 1 300); do [ -s "$TMP/hoody/run/endpoints.json" ] && [ -s "$TMP/hoody/admin.token" ] && break; sleep 0.1; done
HTTP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$TMP/hoody/run/endpoints.json")
TOKEN=$(tr -d '\n' <"$TMP/hoody/admin.token")
api() { curl -sf -X "$1" -H "Authorization: Bearer $TOKEN" "http://$HTTP/api/v1$2" ${3:+-d "$3"}; }
jget() { python3 -c "import json,sys; print(json.load(sys.stdin)['data']$1)"; }
P=$(api POST /projects '{"name":"bench"}' | jget "['id']")
C=$(api POST /containers "{\"name\":\"bench\",\"project_id\":\"$P\",\"rootfs_path\":\"$W\"}" | jget "['id']")
timed full_snapshot hoodyd api POST "/containers/$C/snapshots" '{"alias":"s1"}'
S1=$(bytes "$TMP/hoody/store")
"$SHARED/mutate.sh" "$W" >&2
sync  # the mutation's writeback is not the snapshot's work (same for every tool)
timed incremental_snapshot hoodyd api POST "/containers/$C/snapshots" '{"alias":"s2"}'
S2=$(bytes "$TMP/hoody/store")
echo "RESULT store_bytes hoodyd $S2 bytes"
echo "RESULT mutation_growth_bytes hoodyd $((S2 - S1)) bytes"
timed restore_in_place hoodyd api PATCH "/containers/$C/snapshots/s1"
find "$W" -mindepth 1 -delete
sync
timed full_restore hoodyd api PATCH "/containers/$C/snapshots/s1"
kill "$HPID"; wait "$HPID" 2>/dev/null || true; HPID=""
rm -rf "$TMP/hoody" "$W"

# --- restic, on the same path so the second backup finds its parent.
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$TMP/restic
restic init -q >/dev/null
cp -a "$DATA/data" "$W"
timed full_snapshot restic restic backup -q "$W"
R1=$(bytes "$RESTIC_REPOSITORY")
"$SHARED/mutate.sh" "$W" >&2
sync  # the mutation's writeback is not the snapshot's work (same for every tool)
timed incremental_snapshot restic restic backup -q "$W"
R2=$(bytes "$RESTIC_REPOSITORY")
echo "RESULT store_bytes restic $R2 bytes"
echo "RESULT mutation_growth_bytes restic $((R2 - R1)) bytes"
FIRST=$(restic snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["short_id"])')
sync
timed full_restore restic restic restore -q "$FIRST" --target "$TMP/restic-out"
rm -rf "$TMP/restic-out" "$W" "$RESTIC_REPOSITORY"

# --- borg (lz4, no encryption).
export BORG_REPO=$TMP/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
borg init -e none
cp -a "$DATA/data" "$W"
timed full_snapshot borg borg create -C lz4 ::s1 "$W"
B1=$(bytes "$BORG_REPO")
"$SHARED/mutate.sh" "$W" >&2
sync  # the mutation's writeback is not the snapshot's work (same for every tool)
timed incremental_snapshot borg borg create -C lz4 ::s2 "$W"
B2=$(bytes "$BORG_REPO")
echo "RESULT store_bytes borg $B2 bytes"
echo "RESULT mutation_growth_bytes borg $((B2 - B1)) bytes"
mkdir "$TMP/borg-out"
sync
timed full_restore borg sh -c "cd '$TMP/borg-out' && borg extract ::s1"
rm -rf "$TMP/borg-out" "$W" "$BORG_REPO"

# --- the plain references: rsync back in place, cp -a into an empty directory.
cp -a "$DATA/data-mut" "$W"
timed restore_in_place rsync rsync -a --delete "$DATA/data/" "$W/"
rm -rf "$W"
sync
timed full_restore cp cp -a "$DATA/data" "$W"

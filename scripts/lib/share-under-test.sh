# Sourced by the scripts that run a file system suite inside a share: starts a
# real hoodyd with its embedded defaults in a temp dir, creates a source and a
# target container, shares the source's /srv/$SHARE_NAME (mode 0777) with the
# target, and bind-mounts the target's mount at a short, world-searchable path.
# Sets: T (temp dir; the daemon's log is $T/log), SRC (the source container's
# rootfs), MNT (the share's mount in the target), RUN (the bind mount).
# Cleans all of it up on exit. Needs root (mounts); HOODYD_BIN names the daemon.
#
# HOODY_SHARE_MOUNT=<dir>: a share someone else mounted (a cross-server share
# of a test cluster: tests/pjdfstest_remote.rs, tests/fsx_remote.rs): no daemon
# is started here, the suite runs in a bind mount of <dir>, whose source
# directory must be 0777.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${HOODYD_BIN:-$REPO/target/release/hoodyd}
[ -x "$BIN" ] || (cd "$REPO" && cargo build --release --bin hoodyd)
T=$(mktemp -d /tmp/hoody-suite.XXXXXX)
RUN=$(mktemp -d /tmp/suite.XXXXXX)
chmod 0755 "$RUN"
PID=""
cleanup() {
  cd /
  if mountpoint -q "$RUN"; then umount "$RUN" || umount -l "$RUN" || true; fi
  rmdir "$RUN" || true
  if [ -n "$PID" ]; then kill "$PID" || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$T"
}
trap cleanup EXIT
if [ -n "${HOODY_SHARE_MOUNT:-}" ]; then
  MNT=$HOODY_SHARE_MOUNT
  SRC=""
  mountpoint -q "$MNT" || { echo "$MNT is not a mount"; exit 1; }
else
  "$BIN" serve --data-dir "$T/data" --http 127.0.0.1:0 --quic 127.0.0.1:0 >"$T/log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do [ -s "$T/data/run/endpoints.json" ] && break; sleep 0.1; done
  HTTP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$T/data/run/endpoints.json")
  TOKEN=$(tr -d '\n' <"$T/data/admin.token")
  api() { curl -sf -X "$1" -H "Authorization: Bearer $TOKEN" "http://$HTTP/api/v1$2" ${3:+-d "$3"}; }
  id() { python3 -c "import json,sys; print(json.load(sys.stdin)['data']['$1'])"; }
  P=$(api POST /projects "{\"name\":\"$SHARE_NAME\"}" | id id)
  S=$(api POST /containers "{\"name\":\"source\",\"project_id\":\"$P\"}")
  SRC=$(echo "$S" | id rootfs_path); SID=$(echo "$S" | id id)
  DST=$(api POST /containers "{\"name\":\"target\",\"project_id\":\"$P\"}" | id rootfs_path)
  DID=$(basename "$(dirname "$DST")")
  mkdir -p "$SRC/srv/$SHARE_NAME"
  chmod 0777 "$SRC/srv/$SHARE_NAME"
  api POST "/containers/$SID/storage/shares" "{\"source_path\":\"/srv/$SHARE_NAME\",\"target_container_id\":\"$DID\",\"mode\":\"readwrite\"}" >/dev/null
  MNT="$DST/hoody/shares/$SHARE_NAME"
  mountpoint -q "$MNT" || { echo "share not mounted"; cat "$T/log"; exit 1; }
fi
mount --bind "$MNT" "$RUN"

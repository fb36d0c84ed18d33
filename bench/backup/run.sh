#!/usr/bin/env bash
# Backup (and restore) benchmark of rtx.dr: rtx.dr.pg_basebackup vs pgBackRest vs plain
# pg_basebackup, and rtx.dr.backup_restore vs `pgbackrest restore` of those backups, on the same
# database, the same S3 endpoint (moto) and in the same run.
#
# Usage: bench/backup/run.sh            (or: make bench; the restore set: make bench-restore,
#                                        i.e. bench/restore/run.sh, which runs this script)
#   BENCH_RUNS=N        repetitions of every variant (default 1); the report shows medians
#   BENCH_SCALE=N       pgbench scale (default 70, ~1 GB)
#   BENCH_RANDOM_MB=N   MB of incompressible random bytea added to the database (default 300)
#   BENCH_VARIANTS="…"  subset of the backup variants raw-disk raw-disk-zstd ours-zstd ours-zstd-tls
#                       ours-lz4 ours-gzip6 pgbr-lz4 pgbr-gz6 pgbr-lz4-bundle (default: all of these)
#                       and the restore variants ours-restore-zstd ours-restore-zstd-tls
#                       ours-restore-zstd-noverify ours-restore-lz4 pgbr-restore-lz4 (default: none).
#                       A restore variant restores the backup its backup variant just made (ours-zstd,
#                       ours-lz4, pgbr-lz4), which is added to the list when missing.
#   BENCH_OUT=FILE      report file (default bench/backup/results-<UTC date>.md)
#
# Needs: root (docker, nginx on the host), a running Docker engine, the lab image
# (lab/image.sh), the venv (make setup: moto_server, boto3, ansible), nginx and openssl.
#
# What it does:
#   1. network rtx-bench (172.30.79.0/24) + container rtx-bench-db from the lab image, both
#      labelled rtx.dr.bench=1; PostgreSQL 15 cluster; database bench = pgbench -i -s 70 plus
#      BENCH_RANDOM_MB of random bytea (pgbench data compresses ~20x and would hide the
#      transfer path); CHECKPOINT.
#   2. moto_server on the network gateway (http://172.30.79.1:5099) and nginx TLS in front of
#      it (https://172.30.79.1:5443, self-signed, no request/response buffering); bucket
#      rtx-bench and KMS key alias/rtx-bench.
#   3. each variant BENCH_RUNS times, fast checkpoint everywhere; wall time measured from
#      outside (host), peak RSS sampled inside the container (rss_sampler.py, VmHWM).
#   4. restore variants, right after the backup they restore (its objects are deleted after its last
#      restore): into an empty /var/lib/postgresql/bench-restore, no server start, `sync` before
#      (untimed) and after (timed separately: what the restore left unflushed); then checked
#      (pg_controldata system identifier, backup_label, recovery.signal, recovery_target, base/ file
#      count and bytes against the source, ours: restore_command run against the archive) and deleted.
#   5. markdown tables + targets to stdout and to the report file.
#   6. trap: removes the container, the network, moto, nginx and the temp dir.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=/dev/null
source "$ROOT/lab/common.sh"   # LAB_IMAGE

RUNS="${BENCH_RUNS:-1}"
SCALE="${BENCH_SCALE:-70}"
RANDOM_MB="${BENCH_RANDOM_MB:-300}"
BACKUP_VARIANTS="raw-disk raw-disk-zstd ours-zstd ours-zstd-tls ours-lz4 ours-gzip6 pgbr-lz4 pgbr-gz6 pgbr-lz4-bundle"
RESTORE_VARIANTS="ours-restore-zstd ours-restore-zstd-tls ours-restore-zstd-noverify ours-restore-lz4 pgbr-restore-lz4"
VARIANTS="${BENCH_VARIANTS:-$BACKUP_VARIANTS}"
OUT="${BENCH_OUT:-$HERE/results-$(date -u +%Y-%m-%d).md}"

NAME=rtx-bench
CTR=rtx-bench-db
LABEL=rtx.dr.bench=1
SUBNET=172.30.79.0/24
GW=172.30.79.1
MOTO_PORT=5099
TLS_PORT=5443
BUCKET=rtx-bench
KMS_ALIAS=alias/rtx-bench
HTTP_EP="http://$GW:$MOTO_PORT"
TLS_EP="https://$GW:$TLS_PORT"
VENV="$ROOT/.venv/bin"
COLLECTIONS="$ROOT/.lab/collections"
STATE=/tmp/rtx-bench-state         # pid files, so a later run can stop what an aborted one left
PG_BIN=/usr/lib/postgresql/15/bin

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }  # secs T1 T0
in_ctr() { docker exec "$CTR" "$@"; }
in_ctr_i() { docker exec -i "$CTR" "$@"; }  # with stdin (heredocs)
as_pg() { docker exec -u postgres -w /var/lib/postgresql "$CTR" "$@"; }

# -- cleanup ------------------------------------------------------------------------------
stop_pidfile() {  # stop_pidfile FILE PATTERN: kill the pid in FILE if its cmdline matches
  local file="$1" pattern="$2" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}
cleanup() {
  local rc=$?
  set +e
  say "cleaning up"
  stop_pidfile "$STATE/nginx.pid" "rtx-bench"
  stop_pidfile "$STATE/moto.pid" "moto_server -H $GW -p $MOTO_PORT"
  if docker inspect -f '{{index .Config.Labels "rtx.dr.bench"}}' "$CTR" 2>/dev/null | grep -qx 1; then
    docker rm -f "$CTR" >/dev/null
  fi
  if docker network inspect -f '{{index .Labels "rtx.dr.bench"}}' "$NAME" 2>/dev/null | grep -qx 1; then
    docker network rm "$NAME" >/dev/null
  fi
  [ -n "${TMP:-}" ] && rm -rf "$TMP"
  exit "$rc"
}

# -- preflight ----------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (docker, nginx)"
docker info >/dev/null 2>&1 || die "Docker engine not running (lab/engine.sh)"
docker image inspect "$LAB_IMAGE" >/dev/null 2>&1 || die "image $LAB_IMAGE missing (make image)"
[ -x "$VENV/moto_server" ] && [ -x "$VENV/ansible" ] || die "venv missing (make setup)"
command -v nginx >/dev/null || die "nginx missing (apt-get install nginx-light)"
command -v openssl >/dev/null || die "openssl missing"
if [ ! -e "$COLLECTIONS/ansible_collections/rtx/dr" ]; then
  mkdir -p "$COLLECTIONS/ansible_collections/rtx"
  ln -sfn "$ROOT" "$COLLECTIONS/ansible_collections/rtx/dr"
fi
for v in $VARIANTS; do
  [[ " $BACKUP_VARIANTS $RESTORE_VARIANTS " == *" $v "* ]] \
    || die "unknown variant '$v' (known: $BACKUP_VARIANTS $RESTORE_VARIANTS)"
done
backup_of() {  # backup_of RESTORE_VARIANT -> the backup variant whose backup it restores
  case "$1" in
    ours-restore-zstd|ours-restore-zstd-tls|ours-restore-zstd-noverify) echo ours-zstd ;;
    ours-restore-lz4) echo ours-lz4 ;;
    pgbr-restore-lz4) echo pgbr-lz4 ;;
  esac
}
for v in $VARIANTS; do
  src="$(backup_of "$v")"
  if [ -n "$src" ] && [[ " $VARIANTS " != *" $src "* ]]; then
    VARIANTS+=" $src"
    say "$v restores the backup of $src: $src added to the variants"
  fi
done
mkdir -p "$STATE"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
TMP="$(mktemp -d /tmp/rtx-bench.XXXXXX)"
RESULTS="$TMP/results.tsv"
RESTORE_RESULTS="$TMP/restore-results.tsv"
: >"$RESULTS"
: >"$RESTORE_RESULTS"
T_START="$(now)"

# Leftovers of an aborted earlier run (only ours: by name AND label).
stop_pidfile "$STATE/nginx.pid" "rtx-bench"
stop_pidfile "$STATE/moto.pid" "moto_server -H $GW -p $MOTO_PORT"
for c in $(docker ps -a --filter "label=$LABEL" --format '{{.Names}}'); do
  if [ "$c" = "$CTR" ]; then docker rm -f "$c" >/dev/null; fi
done
for n in $(docker network ls --filter "label=$LABEL" --format '{{.Name}}'); do
  if [ "$n" = "$NAME" ]; then docker network rm "$n" >/dev/null; fi
done

# -- 1. network, container, database ------------------------------------------------------
say "network $NAME ($SUBNET) and container $CTR from $LAB_IMAGE"
docker network create --subnet "$SUBNET" --gateway "$GW" --label "$LABEL" "$NAME" >/dev/null
docker run -d --name "$CTR" --hostname "$CTR" --label "$LABEL" --network "$NAME" \
  --tmpfs /run --tmpfs /run/lock --tmpfs /tmp -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
  --stop-signal SIGRTMIN+3 "$LAB_IMAGE" /lib/systemd/systemd >/dev/null
for _ in $(seq 1 60); do
  state="$(in_ctr systemctl is-system-running 2>/dev/null || true)"
  case "$state" in running|degraded) break ;; esac
  sleep 0.5
done
case "$state" in running|degraded) ;; *) die "systemd in $CTR is '$state'" ;; esac
in_ctr pg_createcluster 15 main --start >/dev/null
# Bulk-load friendly; does not change what a backup has to read.
as_pg psql -qX -c "ALTER SYSTEM SET max_wal_size = '4GB'" -c "SELECT pg_reload_conf()" >/dev/null

say "loading: pgbench -i -s $SCALE + $RANDOM_MB MB random bytea"
t0="$(now)"
as_pg createdb bench
as_pg pgbench -i -s "$SCALE" -q bench 2>&1 | tail -n 1 >&2
docker exec -i -u postgres -w /var/lib/postgresql "$CTR" psql -qX -v ON_ERROR_STOP=1 -d bench <<SQL
CREATE EXTENSION pgcrypto;
CREATE TABLE blobs (id int PRIMARY KEY, b bytea);
ALTER TABLE blobs ALTER COLUMN b SET STORAGE EXTERNAL;  -- no pglz attempt on random bytes
INSERT INTO blobs
SELECT i, (SELECT string_agg(gen_random_bytes(1024), ''::bytea) FROM generate_series(1, 1024) WHERE i > 0)
FROM generate_series(1, $RANDOM_MB) AS i;
CHECKPOINT;
SQL
DB_BYTES="$(as_pg psql -AtqX -c "SELECT sum(pg_database_size(oid)) FROM pg_database")"
say "loaded in $(secs "$(now)" "$t0") s; databases: $((DB_BYTES / 1000000)) MB"

# -- 2. S3 endpoint: moto + nginx TLS ------------------------------------------------------
say "moto_server on $HTTP_EP, nginx TLS on $TLS_EP"
nohup "$VENV/moto_server" -H "$GW" -p "$MOTO_PORT" >"$TMP/moto.log" 2>&1 &
echo $! >"$STATE/moto.pid"
mkdir -p "$TMP/nginx/logs"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$GW" \
  -keyout "$TMP/nginx/key.pem" -out "$TMP/nginx/cert.pem" >/dev/null 2>&1
cat >"$TMP/nginx/rtx-bench.conf" <<NGINX
# rtx-bench TLS terminator in front of moto
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/client_body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  server {
    listen $GW:$TLS_PORT ssl;
    ssl_certificate $TMP/nginx/cert.pem;
    ssl_certificate_key $TMP/nginx/key.pem;
    client_max_body_size 0;
    location / {
      proxy_pass http://$GW:$MOTO_PORT;
      proxy_http_version 1.1;
      proxy_set_header Host \$http_host;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_read_timeout 600s;
      proxy_send_timeout 600s;
    }
  }
}
NGINX
nginx -p "$TMP/nginx" -c "$TMP/nginx/rtx-bench.conf" -g 'daemon off;' >"$TMP/nginx/logs/stdout.log" 2>&1 &
echo $! >"$STATE/nginx.pid"
for _ in $(seq 1 60); do
  curl -fsS "$HTTP_EP/moto-api/" >/dev/null 2>&1 && curl -kfsS "$TLS_EP/moto-api/" >/dev/null 2>&1 && break
  kill -0 "$(cat "$STATE/moto.pid")" 2>/dev/null || die "moto exited: $(tail -n 5 "$TMP/moto.log")"
  kill -0 "$(cat "$STATE/nginx.pid")" 2>/dev/null || die "nginx exited: $(cat "$TMP/nginx/logs/"*)"
  sleep 0.5
done
curl -kfsS "$TLS_EP/moto-api/" >/dev/null || die "S3 endpoint not answering"
s3ctl() { "$VENV/python" "$HERE/s3ctl.py" "$HTTP_EP" "$1" "$BUCKET" "${@:2}"; }
KMS_ARN="$(s3ctl setup "$KMS_ALIAS")"
say "bucket $BUCKET, KMS key $KMS_ALIAS = $KMS_ARN"

# -- 3. measurements ----------------------------------------------------------------------
docker cp "$HERE/rss_sampler.py" "$CTR:/usr/local/bin/rss_sampler.py" >/dev/null
PG_UID="$(in_ctr id -u postgres)"
sampler_start() {  # sampler_start SPEC...
  in_ctr rm -f /tmp/rss.json /tmp/rss.json.pid
  docker exec -d "$CTR" /usr/bin/python3 /usr/local/bin/rss_sampler.py /tmp/rss.json "$@"
  for _ in $(seq 1 50); do in_ctr test -s /tmp/rss.json.pid && return 0; sleep 0.1; done
  die "RSS sampler did not start"
}
sampler_stop() {  # prints "<sum_hwm_kb>\t<detail>"
  in_ctr sh -c 'kill -TERM "$(cat /tmp/rss.json.pid)"'
  for _ in $(seq 1 50); do in_ctr test -s /tmp/rss.json && break; sleep 0.1; done
  in_ctr cat /tmp/rss.json | "$VENV/python" -c '
import json, sys
r = json.load(sys.stdin)
parts = ["%s %dx max %.0f MB" % (c, a["processes"], a["max_hwm_kb"] / 1024.0) for c, a in sorted(r["by_comm"].items())]
print("%d\t%s" % (r["sum_hwm_kb"], "; ".join(parts) or "-"))'
}
record() {  # record VARIANT RUN WALL STORED RSSLINE INTERNAL
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$RESULTS"
  say "$(printf '%-14s run %s: %6.2f s, stored %s MB, peak RSS %s MB' "$1" "$2" "$3" \
    "$(($4 / 1000000))" "$(($(cut -f1 <<<"$5") / 1024))")"
}

ansible_adhoc() {  # ansible_adhoc MODULE ARGS -> one-line result on stdout
  (cd "$ROOT" && ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$COLLECTIONS" \
    ANSIBLE_LOAD_CALLBACK_PLUGINS=1 ANSIBLE_STDOUT_CALLBACK=ansible.posix.json \
    "$VENV/ansible" all -i "$CTR," -c community.docker.docker \
    -e ansible_python_interpreter=/usr/bin/python3 --become --become-user postgres \
    -m "$1" ${2:+-a "$2"})
}

raw_disk() {  # raw_disk VARIANT RUN [pg_basebackup options]
  local variant="$1" run="$2" dir=/var/lib/postgresql/bench-raw t0 t1 rss stored
  shift 2
  as_pg rm -rf "$dir"
  sampler_start pg_basebackup
  t0="$(now)"
  as_pg "$PG_BIN/pg_basebackup" -Ft -X fetch -c fast -D "$dir" "$@"
  t1="$(now)"
  rss="$(sampler_stop)"
  stored="$(as_pg du -sb "$dir" | cut -f1)"
  if [ "$variant" = raw-disk ] && [ -z "${RAW_BYTES:-}" ]; then
    RAW_BYTES="$(as_pg stat -c %s "$dir/base.tar")"
  fi
  as_pg rm -rf "$dir"
  record "$variant" "$run" "$(secs "$t1" "$t0")" "$stored" "$rss" ""
}

ours() {  # ours VARIANT RUN ENDPOINT [module args]
  local variant="$1" run="$2" ep="$3" prefix="bench/$1-r$2" t0 t1 rss out json
  shift 3
  local args="bucket=$BUCKET prefix=$prefix cluster_name=bench kms_key_id=$KMS_ALIAS region=us-east-1"
  args+=" endpoint_url=$ep access_key=testing secret_key=testing progress_interval=0 $*"
  if [[ "$ep" == https://* ]]; then args+=" validate_certs=false"; fi
  sampler_start "python3@$PG_UID" pg_basebackup
  t0="$(now)"
  out="$(ansible_adhoc rtx.dr.pg_basebackup "$args")" || { printf '%s\n' "$out" >&2; die "$variant failed"; }
  t1="$(now)"
  rss="$(sampler_stop)"
  # Stored size and the tool's own duration from the S3 catalog record of this backup.
  read -r backup_id status stored dur < <("$VENV/python" -c '
import json, sys
r = json.loads(sys.argv[1])["plays"][0]["tasks"][0]["hosts"][sys.argv[2]]
print(r["backup_id"], r["status"], r["size_compressed_bytes"], r["duration_seconds"])' "$out" "$CTR")
  read -r cstatus cstored < <(s3ctl catalog "$prefix" "$backup_id" | "$VENV/python" -c '
import json, sys
r = json.load(sys.stdin)
print(r["status"], r["size_compressed_bytes"])')
  [ "$status" = complete ] && [ "$cstatus" = complete ] || die "$variant: status $status / catalog $cstatus"
  [ "$stored" = "$cstored" ] || say "WARNING: module says $stored bytes, catalog $cstored"
  # The objects stay for the restore variants; the caller deletes them (drop_ours), untimed.
  OURS_PREFIX="$prefix" OURS_BACKUP_ID="$backup_id" OURS_STORED="$cstored"
  record "$variant" "$run" "$(secs "$t1" "$t0")" "$cstored" "$rss" "$dur"
}
drop_ours() { s3ctl rm "$OURS_PREFIX"; }

PGBR=(pgbackrest --config=/etc/pgbackrest/rtx-bench.conf --stanza=bench)
in_ctr mkdir -p /etc/pgbackrest
in_ctr_i sh -c "cat >/etc/pgbackrest/rtx-bench.conf" <<CONF
[global]
repo1-type=s3
repo1-s3-bucket=$BUCKET
repo1-s3-endpoint=$GW
repo1-storage-port=$TLS_PORT
repo1-storage-verify-tls=n
repo1-s3-uri-style=path
repo1-s3-region=us-east-1
repo1-s3-key=testing
repo1-s3-key-secret=testing
repo1-cipher-type=none
repo1-retention-full=9999999
process-max=2
start-fast=y
archive-check=n
log-level-console=${BENCH_PGBR_LOG_LEVEL:-warn}
log-level-file=off
lock-path=/tmp/pgbackrest

[bench]
pg1-path=/var/lib/postgresql/15/main
pg1-socket-path=/var/run/postgresql
pg1-port=5432
CONF
pgbr() {  # pgbr VARIANT RUN [pgbackrest options]
  local variant="$1" run="$2" path="/pgbackrest/$1-r$2" t0 t1 rss stored dur
  shift 2
  as_pg "${PGBR[@]}" --repo1-path="$path" stanza-create >/dev/null
  sampler_start pgbackrest
  t0="$(now)"
  as_pg "${PGBR[@]}" --repo1-path="$path" "$@" --type=full backup
  t1="$(now)"
  rss="$(sampler_stop)"
  read -r stored dur < <(as_pg "${PGBR[@]}" --repo1-path="$path" --output=json info | "$VENV/python" -c '
import json, sys
b = json.load(sys.stdin)[0]["backup"][-1]
print(b["info"]["repository"]["size"], b["timestamp"]["stop"] - b["timestamp"]["start"])')
  PGBR_PATH="$path" PGBR_STORED="$stored"  # kept for the restore variants; drop_pgbr deletes it
  record "$variant" "$run" "$(secs "$t1" "$t0")" "$stored" "$rss" "$dur"
}
drop_pgbr() { s3ctl rm "${PGBR_PATH#/}/"; }

# -- restore variants -----------------------------------------------------------------------
# Both tools restore into the same empty directory on the container's disk, without starting a
# server: ours with target=backup (recovery_target = 'immediate'), pgBackRest with --type=immediate
# (the same setting), both with the options of the backup they restore (endpoint, process-max 2).
SRC_DIR=/var/lib/postgresql/15/main
RESTORE_DIR=/var/lib/postgresql/bench-restore
AGENT_DIR=/usr/local/lib/rtx-dr
AGENT_CONFIG=/etc/rtx-dr/agent.json
controldata_sysid() { as_pg env LC_ALL=C "$PG_BIN/pg_controldata" -D "$1" | sed -n 's/^Database system identifier: *//p'; }
base_stats() {  # base_stats DATADIR -> "<files> <bytes>" of DATADIR/base
  in_ctr find "$1/base" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { printf "%d %d\n", n, b }'
}
install_agent() {  # the WAL agent as role rtx.dr.agent_install puts it: module_utils under $AGENT_DIR
  local pkg="$AGENT_DIR/ansible_collections/rtx/dr/plugins/module_utils" d
  in_ctr mkdir -p "$pkg" /etc/rtx-dr
  for d in ansible_collections ansible_collections/rtx ansible_collections/rtx/dr \
    ansible_collections/rtx/dr/plugins ansible_collections/rtx/dr/plugins/module_utils; do
    in_ctr touch "$AGENT_DIR/$d/__init__.py"
  done
  (cd "$ROOT/plugins/module_utils" && tar -cf - ./*.py) | in_ctr_i tar -C "$pkg" -xf -
  in_ctr chown root:postgres /etc/rtx-dr
  in_ctr chmod 0750 /etc/rtx-dr
}
write_agent_config() {  # write_agent_config PREFIX ENDPOINT: what role rtx.dr.backup_schedule would write
  local extra="" err
  if [[ "$2" == https://* ]]; then extra=', "validate_certs": false'; fi
  in_ctr_i sh -c "cat >$AGENT_CONFIG && chown root:postgres $AGENT_CONFIG && chmod 0640 $AGENT_CONFIG" <<JSON
{"bucket": "$BUCKET", "prefix": "$1", "cluster_name": "bench", "kms_key_id": "$KMS_ALIAS",
 "endpoint_url": "$2", "region": "us-east-1", "access_key": "testing", "secret_key": "testing"$extra}
JSON
  err="$(as_pg env PYTHONPATH="$AGENT_DIR" /usr/bin/python3 -m ansible_collections.rtx.dr.plugins.module_utils.wal_agent \
    --config "$AGENT_CONFIG" check-config 2>&1)" || die "WAL agent check-config of $AGENT_CONFIG failed: $err"
}
prepare_restore() {  # empty destination; nothing dirty from earlier steps may be flushed inside the timing
  as_pg rm -rf "$RESTORE_DIR" "$RESTORE_DIR.rtx-dr-partial"
  as_pg mkdir -m 0700 "$RESTORE_DIR"
  in_ctr sync -f /var/lib/postgresql
}
timed_sync() {  # seconds `sync -f` needs right after a restore (measured inside the container)
  in_ctr sh -c 'a=$(date +%s%N); sync -f "$1"; b=$(date +%s%N); echo $(( (b - a) / 1000000 ))' sh "$RESTORE_DIR" \
    | awk '{ printf "%.2f", $1 / 1000 }'
}
check_restored() {  # check_restored VARIANT -> one-line summary; dies when the directory is not complete
  local variant="$1" d="$RESTORE_DIR" sysid f sn sb dn db
  sysid="$(controldata_sysid "$d")"
  [ "$sysid" = "$SOURCE_SYSID" ] || die "$variant: pg_controldata -D $d: system identifier '$sysid', source $SOURCE_SYSID"
  for f in global/pg_control backup_label postgresql.auto.conf; do
    in_ctr test -s "$d/$f" || die "$variant: $d/$f missing or empty"
  done
  in_ctr test -f "$d/recovery.signal" || die "$variant: $d/recovery.signal missing"
  in_ctr grep -q "^recovery_target = 'immediate'" "$d/postgresql.auto.conf" \
    || die "$variant: no recovery_target = 'immediate' in $d/postgresql.auto.conf"
  in_ctr grep -q "^restore_command = " "$d/postgresql.auto.conf" || die "$variant: no restore_command"
  read -r sn sb < <(base_stats "$SRC_DIR")
  read -r dn db < <(base_stats "$d")
  # The source keeps running (autovacuum may add a visibility map) and has files a backup leaves out
  # (pg_internal.init): a few files and < 1 % of the bytes may differ.
  awk -v sn="$sn" -v sb="$sb" -v dn="$dn" -v db="$db" 'BEGIN {
    dfiles = dn - sn; if (dfiles < 0) dfiles = -dfiles; dbytes = db - sb; if (dbytes < 0) dbytes = -dbytes
    exit !(dfiles <= (sn / 100 > 10 ? sn / 100 : 10) && dbytes <= sb / 100) }' \
    || die "$variant: restored base/ has $dn files / $db bytes, the source $sn files / $sb bytes"
  printf 'system id ok; base/ %s files %.1f MB (source %s, %.1f MB)' "$dn" "$(awk -v b="$db" 'BEGIN { print b / 1e6 }')" \
    "$sn" "$(awk -v b="$sb" 'BEGIN { print b / 1e6 }')"
}
check_restore_command() {  # the agent's restore_command of the restored directory, for a segment not archived
  local variant="$1" cmd err
  cmd="$(in_ctr sed -n "s/^restore_command = '\(.*\)'\$/\1/p" "$RESTORE_DIR/postgresql.auto.conf" | tail -n 1)"
  [[ "$cmd" == *" fetch %f %p" ]] || die "$variant: unexpected restore_command: $cmd"
  cmd="${cmd% fetch %f %p} --verbose fetch 0000000100000000000000FF /tmp/rtx-bench-wal-probe"
  if err="$(as_pg sh -c "$cmd" 2>&1)"; then die "$variant: restore_command fetched a segment that is not archived"; fi
  [[ "$err" == *"not found in the archive"* ]] || die "$variant: restore_command does not work: $err"
}
record_restore() {  # record_restore VARIANT RUN WALL READ_BYTES RSSLINE INTERNAL SYNC CHECK
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESTORE_RESULTS"
  say "$(printf '%-26s run %s: %6.2f s (+ sync %s s), read %s MB, peak RSS %s MB; %s' "$1" "$2" "$3" "$7" \
    "$(($4 / 1000000))" "$(($(cut -f1 <<<"$5") / 1024))" "$8")"
}

ours_restore() {  # ours_restore VARIANT RUN ENDPOINT [module args]: restores the backup of the last ours()
  local variant="$1" run="$2" ep="$3" t0 t1 rss out sync_s check backup_id read dur checks
  shift 3
  prepare_restore
  write_agent_config "$OURS_PREFIX" "$ep"
  local args="bucket=$BUCKET prefix=$OURS_PREFIX cluster_name=bench backup_id=$OURS_BACKUP_ID mode=restore"
  args+=" target=backup data_directory=$RESTORE_DIR agent_config=$AGENT_CONFIG region=us-east-1"
  args+=" endpoint_url=$ep access_key=testing secret_key=testing $*"
  if [[ "$ep" == https://* ]]; then args+=" validate_certs=false"; fi
  sampler_start "python3@$PG_UID" pg_verifybackup pg_waldump
  t0="$(now)"
  out="$(ansible_adhoc rtx.dr.backup_restore "$args")" || { printf '%s\n' "$out" >&2; die "$variant failed"; }
  t1="$(now)"
  rss="$(sampler_stop)"
  sync_s="$(timed_sync)"
  read -r backup_id read dur checks < <("$VENV/python" -c '
import json, sys
r = json.loads(sys.argv[1])["plays"][0]["tasks"][0]["hosts"][sys.argv[2]]
print(r["backup_id"], sum(o["bytes"] for o in r["download"]["objects"]), r["seconds"],
      ",".join(c["name"] for c in r["checks"] if c.get("ok")) or "-")' "$out" "$CTR")
  [ "$backup_id" = "$OURS_BACKUP_ID" ] || die "$variant restored $backup_id, not $OURS_BACKUP_ID"
  if [[ " $* " == *" verify_checksums=false "* ]]; then
    [[ ",$checks," != *",pg_verifybackup,"* ]] || die "$variant: pg_verifybackup ran although verify_checksums=false"
  else
    [[ ",$checks," == *",pg_verifybackup,"* ]] || die "$variant: no successful pg_verifybackup (checks: $checks)"
  fi
  check="$(check_restored "$variant")"
  check_restore_command "$variant"
  check+="; pg_verifybackup: $([[ ",$checks," == *",pg_verifybackup,"* ]] && echo ok || echo skipped)"
  check+="; restore_command ok"
  as_pg rm -rf "$RESTORE_DIR"
  record_restore "$variant" "$run" "$(secs "$t1" "$t0")" "$read" "$rss" "$dur" "$sync_s" "$check"
}

pgbr_restore() {  # pgbr_restore VARIANT RUN: restores the backup of the last pgbr()
  local variant="$1" run="$2" t0 t1 rss out sync_s check dur files
  prepare_restore
  sampler_start pgbackrest
  t0="$(now)"
  out="$(as_pg "${PGBR[@]}" --repo1-path="$PGBR_PATH" --pg1-path="$RESTORE_DIR" --type=immediate \
    --log-level-console=info restore 2>&1)" || { printf '%s\n' "$out" >&2; die "$variant failed"; }
  t1="$(now)"
  rss="$(sampler_stop)"
  sync_s="$(timed_sync)"
  dur="$(sed -n 's/.*restore command end: completed successfully (\([0-9]*\)ms).*/\1/p' <<<"$out" \
    | awk '{ printf "%.2f", $1 / 1000 }')"
  files="$(sed -n 's/.*restore size = \(.*\)$/\1/p' <<<"$out")"
  check="$(check_restored "$variant")"
  check+="; pgBackRest: ${files:-?}"
  as_pg rm -rf "$RESTORE_DIR"
  record_restore "$variant" "$run" "$(secs "$t1" "$t0")" "$PGBR_STORED" "$rss" "${dur:--}" "$sync_s" "$check"
}

has() { [[ " $VARIANTS " == *" $1 "* ]]; }
has_restore() { local v; for v in $RESTORE_VARIANTS; do if has "$v"; then return 0; fi; done; return 1; }
if has_restore; then
  SOURCE_SYSID="$(controldata_sysid "$SRC_DIR")"
  [ -n "$SOURCE_SYSID" ] || die "no system identifier from pg_controldata -D $SRC_DIR"
  if has ours-restore-zstd || has ours-restore-zstd-tls || has ours-restore-zstd-noverify || has ours-restore-lz4; then
    install_agent
  fi
fi
RAW_BYTES=""
for run in $(seq 1 "$RUNS"); do
  say "=== run $run of $RUNS"
  # raw-disk first: it also warms the page cache for everything after it
  raw_disk raw-disk "$run"
  if has raw-disk-zstd; then raw_disk raw-disk-zstd "$run" -Z client-zstd:3; fi
  if [ "$run" = 1 ]; then  # fixed cost of one ansible ad-hoc call with this connection
    t0="$(now)"; ansible_adhoc ansible.builtin.ping "" >/dev/null; t1="$(now)"
    printf 'ansible-ping\t1\t%s\t0\t0\t-\t\n' "$(secs "$t1" "$t0")" >>"$RESULTS"
  fi
  # A restore variant runs right after the backup it restores; the objects are deleted after it.
  if has ours-zstd; then
    ours ours-zstd "$run" "$HTTP_EP" compression=zstd
    if has ours-restore-zstd; then ours_restore ours-restore-zstd "$run" "$HTTP_EP"; fi
    if has ours-restore-zstd-tls; then ours_restore ours-restore-zstd-tls "$run" "$TLS_EP"; fi
    if has ours-restore-zstd-noverify; then
      ours_restore ours-restore-zstd-noverify "$run" "$HTTP_EP" verify_checksums=false
    fi
    drop_ours
  fi
  if has ours-zstd-tls; then ours ours-zstd-tls "$run" "$TLS_EP" compression=zstd; drop_ours; fi
  if has ours-lz4; then
    ours ours-lz4 "$run" "$HTTP_EP" compression=lz4
    if has ours-restore-lz4; then ours_restore ours-restore-lz4 "$run" "$HTTP_EP"; fi
    drop_ours
  fi
  if has ours-gzip6; then ours ours-gzip6 "$run" "$HTTP_EP" compression=gzip compression_level=6; drop_ours; fi
  if has pgbr-lz4; then
    pgbr pgbr-lz4 "$run" --compress-type=lz4
    if has pgbr-restore-lz4; then pgbr_restore pgbr-restore-lz4 "$run"; fi
    drop_pgbr
  fi
  if has pgbr-gz6; then pgbr pgbr-gz6 "$run" --compress-type=gz --compress-level=6; drop_pgbr; fi
  # Informational: pgBackRest's file bundling (off by default in 2.45) packs small files into
  # few objects; without it every relation file is one S3 PUT (~1300 here).
  if has pgbr-lz4-bundle; then pgbr pgbr-lz4-bundle "$run" --compress-type=lz4 --repo1-bundle; drop_pgbr; fi
done

# -- 5. report ----------------------------------------------------------------------------
MOTO_VERSION="$("$VENV/python" -c 'import moto; print(moto.__version__)')"
{
  if has_restore; then title="Backup and restore benchmark"; else title="Backup benchmark"; fi
  echo "# $title, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- host: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, $(uname -sr), Docker $(docker version -f '{{.Server.Version}}')"
  echo "- database: pgbench -i -s $SCALE + $RANDOM_MB MB random bytea; sum(pg_database_size) $((DB_BYTES / 1000000)) MB; PostgreSQL $(as_pg psql -AtqX -c 'SHOW server_version')"
  echo "- S3: moto $MOTO_VERSION ($HTTP_EP), nginx TLS in front ($TLS_EP); $(as_pg pgbackrest version); runs per variant: $RUNS"
  echo
  "$VENV/python" "$HERE/report.py" "$RESULTS" "$RAW_BYTES" "$RESTORE_RESULTS"
  echo
  echo "Total benchmark time: $(secs "$(now)" "$T_START") s."
} >"$TMP/report.md"
cp "$TMP/report.md" "$OUT"
cat "$TMP/report.md"
say "report written to $OUT"

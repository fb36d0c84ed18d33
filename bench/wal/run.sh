#!/usr/bin/env bash
# WAL archiving benchmark of rtx.dr: the rtx.dr WAL agent (`wal_agent push %p` as archive_command, set up as
# role rtx.dr.backup_schedule sets it up) vs pgBackRest `archive-push` (synchronous, and asynchronous with
# archive-async=y + process-max=2), under the same steady pgbench write load, on the same cluster and S3
# endpoint (moto), in the same run. Issue 5: "the archive command must keep up with sustained write load
# (measure segments/s under pgbench)"; target "archive lag <= archive_timeout always".
#
# Usage: bench/wal/run.sh                (as root; make bench-wal)
#   BENCH_VARIANTS="…"        subset/order of: ours ours-batch pgbr-sync pgbr-async (default: these four, in this order)
#                             and ours-stream (opt-in): ours-batch's archive_command (own prefix) + streaming mode
#                             (walstream.py): `wal_agent stream-receive` and `stream-upload` running in the container as
#                             rtx-dr-wal-receive/-stream.service run them, stream_interval BENCH_STREAM_INTERVAL (default 1)
#                             s; the host samples the newest <prefix>/wal-stream/ object + its covers-lsn every 0.5 s
#                             (streamwatch.py) and the primary's LSN every 0.1 s: report.py's "streaming exposure" table
#   BENCH_PUSH_BATCH=N / BENCH_PUSH_PARALLEL=P  ours-batch: the wal section's push_batch / push_parallel (default 8 / 2,
#                             the role's defaults): one archive_command call pushes up to N ready files, P at a time
#   BENCH_SCALE=N             pgbench scale (default 30, ~450 MB: random updates over many pages, so that full-page
#                             writes after each checkpoint produce a lot of WAL)
#   BENCH_DURATION=S          seconds of pgbench load per variant (default 150: >= 100 segments here)
#   BENCH_BULK_WEIGHT=N       pgbench script mix: tpcb-like@9 + a bulk insert script @N (default 1; 0 = TPC-B only).
#   BENCH_RATE=TPS            pgbench -R TPS: the same transaction (and WAL) rate for every variant (default 400, ~0.7
#                             segments/s here). 0: closed loop, as fast as the machine lets pgbench go; then the WAL rate
#                             of a variant also depends on how much CPU its archive command takes from pgbench.
#   BENCH_BULK_ROWS=N         rows of ~1.9 kB (md5 text, stored inline and uncompressed) per bulk transaction (default
#                             100, ~200 kB of WAL). TPC-B alone made only ~5 MB/s of WAL (0.3 segments/s) on this busy
#                             2-core machine: 150 s would give ~50 segments; the bulk script brings it to ~1 segment/s.
#   BENCH_CLIENTS / BENCH_JOBS  pgbench -c / -j (default 4 / 2)
#   BENCH_ARCHIVE_TIMEOUT=S   archive_timeout of the benchmark cluster (default 10; the collection's default is 60 s:
#                             10 s keeps the idle phase, 2 x archive_timeout, short)
#   BENCH_CHECKPOINT_TIMEOUT=S checkpoint_timeout during the runs (default 30: full-page writes after every checkpoint keep
#                             the WAL rate high and steady instead of one burst after the variant's start checkpoint)
#   BENCH_DRAIN_MAX=S         give up waiting for the backlog to drain after S seconds (default 600)
#   BENCH_OUT=FILE            report file (default bench/wal/results-<UTC date>-<HHMM>.md); the raw data (1-second
#                             samples, records, archive listings, PostgreSQL log) go to <report without .md>-raw/, and
#                             `python bench/wal/report.py <raw>/results.jsonl ARCHIVE_TIMEOUT 16777216` prints the tables again
#
# Needs what bench/backup/run.sh needs: root, a running Docker engine, the lab image (lab/image.sh), the venv
# (make setup: moto_server, boto3), nginx, openssl, curl.
#
# What it does (everything it starts is named rtx-bench-wal*, labelled rtx.dr.bench=wal and removed by the EXIT trap;
# its own names, subnet and pid files, so that it can run while bench/backup/run.sh runs):
#   1. network rtx-bench-wal (172.30.80.0/24), container rtx-bench-wal-db from the lab image (systemd, no
#      --privileged); PostgreSQL 15 cluster; database bench = pgbench -i -s SCALE (archive_mode off while loading),
#      then archive_mode=on, archive_timeout=BENCH_ARCHIVE_TIMEOUT, archive_command='' and a restart.
#   2. moto_server on the gateway (http://172.30.80.1:5099) and nginx TLS in front of it (https://172.30.80.1:5443,
#      what pgBackRest needs), bucket rtx-bench + KMS alias/rtx-bench (bench/backup/s3ctl.py setup).
#   3. per variant: archive_command set (ALTER SYSTEM + reload); VACUUM, CHECKPOINT and pg_switch_wal(), wait until
#      that segment is archived (the warm-up push); a sampler inside the container (psql \watch 1) records every second
#      pg_current_wal_lsn(), pg_stat_archiver and the number of .ready files; pgbench -c -j -T; then wait for the
#      backlog to drain and for the segment holding the last commit to be archived (archive_timeout switch); then
#      2 x archive_timeout more with no writes (idle phase); sampler stopped.
#   4. completeness: every segment the variant had to archive is listed in S3 (ours: <prefix>/wal/00000001/;
#      pgBackRest: its repo's archive/ directory) and the last one is fetched back (wal_agent fetch /
#      pgbackrest archive-get); pgbackrest info for the pgBackRest repos.
#   5. bench/wal/report.py: comparison table + per-variant details, to stdout and to the report file.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=/dev/null
source "$ROOT/lab/common.sh"   # LAB_IMAGE

ALL_VARIANTS="ours ours-batch pgbr-sync pgbr-async ours-stream"
VARIANTS="${BENCH_VARIANTS:-ours ours-batch pgbr-sync pgbr-async}"
SCALE="${BENCH_SCALE:-30}"
DURATION="${BENCH_DURATION:-150}"
BULK_WEIGHT="${BENCH_BULK_WEIGHT:-1}"
BULK_ROWS="${BENCH_BULK_ROWS:-100}"
RATE="${BENCH_RATE:-400}"
CLIENTS="${BENCH_CLIENTS:-4}"
JOBS="${BENCH_JOBS:-2}"
ARCHIVE_TIMEOUT="${BENCH_ARCHIVE_TIMEOUT:-10}"
CHECKPOINT_TIMEOUT="${BENCH_CHECKPOINT_TIMEOUT:-30}"
DRAIN_MAX="${BENCH_DRAIN_MAX:-600}"
PUSH_BATCH="${BENCH_PUSH_BATCH:-8}"
PUSH_PARALLEL="${BENCH_PUSH_PARALLEL:-2}"
OUT="${BENCH_OUT:-$HERE/results-$(date -u +%Y-%m-%d-%H%M).md}"

NAME=rtx-bench-wal
CTR=rtx-bench-wal-db
LABEL_KEY=rtx.dr.bench
LABEL_VALUE=wal
LABEL="$LABEL_KEY=$LABEL_VALUE"
SUBNET=172.30.80.0/24
GW=172.30.80.1
MOTO_PORT=5099
TLS_PORT=5443
BUCKET=rtx-bench
KMS_ALIAS=alias/rtx-bench
HTTP_EP="http://$GW:$MOTO_PORT"
TLS_EP="https://$GW:$TLS_PORT"
VENV="$ROOT/.venv/bin"
STATE=/tmp/rtx-bench-wal-state     # pid files, so a later run can stop what an aborted one left
SEG=16777216
# The agent as roles rtx.dr.agent_install + rtx.dr.backup_schedule install it (defaults/main.yml, vars/main.yml).
AGENT_DIR=/usr/local/lib/rtx-dr
AGENT_CONFIG=/etc/rtx-dr/agent.json
WAL_MODULE=ansible_collections.rtx.dr.plugins.module_utils.wal_agent
OURS_PREFIX=pgbackup/bench
OURS_ARCHIVE_COMMAND="PYTHONPATH=$AGENT_DIR PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m $WAL_MODULE --config $AGENT_CONFIG push %p"
# ours-batch: the same agent with the wal section's batching options (module_utils/walspool.py), own prefix.
BATCH_CONFIG=/etc/rtx-dr/agent-batch.json
BATCH_PREFIX=pgbackup/bench-batch
SPOOL_DIR=/var/lib/rtx-dr/wal-spool
BATCH_ARCHIVE_COMMAND="PYTHONPATH=$AGENT_DIR PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m $WAL_MODULE --config $BATCH_CONFIG push %p"
# ours-stream: ours-batch's wal section + the streaming options as backup_schedule writes them with
# backup_schedule_wal_stream: true (vars/main.yml _backup_schedule_wal_stream: stream_dir, stream_interval | float,
# receivewal_path), own prefix and spool. The two services' command line: _backup_schedule_wal_command stream-receive /
# stream-upload, User=postgres, Environment=PYTHONPATH=<install dir> PYTHONDONTWRITEBYTECODE=1.
STREAM_CONFIG=/etc/rtx-dr/agent-stream.json
STREAM_PREFIX=pgbackup/bench-stream
STREAM_SPOOL_DIR=/var/lib/rtx-dr/wal-spool-stream
STREAM_DIR=/var/lib/rtx-dr/wal-stream
STREAM_INTERVAL="${BENCH_STREAM_INTERVAL:-1}"
RECEIVEWAL=/usr/lib/postgresql/15/bin/pg_receivewal
STREAM_ARCHIVE_COMMAND="PYTHONPATH=$AGENT_DIR PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m $WAL_MODULE --config $STREAM_CONFIG push %p"
STREAM_AGENT_COMMAND="/usr/bin/python3 -m $WAL_MODULE --config $STREAM_CONFIG"

say() { printf '[bench-wal %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }  # secs T1 T0
in_ctr() { docker exec "$CTR" "$@"; }
in_ctr_i() { docker exec -i "$CTR" "$@"; }
as_pg() { docker exec -u postgres -w /var/lib/postgresql "$CTR" "$@"; }
sql() { as_pg psql -AtqX -v ON_ERROR_STOP=1 -d bench -c "$1"; }

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
ours_ctr() { docker inspect -f "{{index .Config.Labels \"$LABEL_KEY\"}}" "$CTR" 2>/dev/null | grep -qx "$LABEL_VALUE"; }
ours_net() { docker network inspect -f "{{index .Labels \"$LABEL_KEY\"}}" "$NAME" 2>/dev/null | grep -qx "$LABEL_VALUE"; }
remove_all() {
  stop_pidfile "$STATE/nginx.pid" "$NAME"
  stop_pidfile "$STATE/moto.pid" "moto_server -H $GW -p $MOTO_PORT"
  stop_pidfile "$STATE/watch.pid" "streamwatch.py"
  if ours_ctr; then docker rm -f "$CTR" >/dev/null; fi
  if ours_net; then docker network rm "$NAME" >/dev/null; fi
}
cleanup() {
  local rc=$?
  set +e
  stream_stop_all
  if [ "$rc" != 0 ] && ours_ctr; then
    say "failed (exit $rc): last lines of the PostgreSQL log"
    in_ctr sh -c 'tail -n 25 /var/log/postgresql/postgresql-15-main.log' >&2 2>/dev/null
  fi
  say "cleaning up"
  remove_all
  if [ -n "${TMP:-}" ]; then
    if [ "$rc" != 0 ]; then say "kept $TMP for inspection"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}

# -- ours-stream: the two stream services, the fast LSN sampler (in the container) and the S3 watcher (host) ------
stream_start() {  # the role's units' ExecStart, as postgres with their Environment; pid files in the container's /tmp
  local sub
  for sub in receive upload; do
    docker exec -d -u postgres -w /var/lib/postgresql "$CTR" sh -c "echo \$\$ >/tmp/stream-$sub.pid; exec env \
      PYTHONPATH=$AGENT_DIR PYTHONDONTWRITEBYTECODE=1 $STREAM_AGENT_COMMAND stream-$sub >>/tmp/stream-$sub.log 2>&1"
  done
}
stream_stop() {  # SIGTERM to the agents (the receiver stops pg_receivewal with SIGINT itself: the unit's KillMode=mixed)
  local sub pid
  ours_ctr || return 0
  for sub in receive upload; do
    pid="$(in_ctr cat "/tmp/stream-$sub.pid" 2>/dev/null)" || continue
    in_ctr kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do in_ctr kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    in_ctr kill -KILL "$pid" 2>/dev/null || true
    in_ctr rm -f "/tmp/stream-$sub.pid"
  done
}
fast_sampler_start() {  # pg_current_wal_lsn() every 0.1 s
  in_ctr_i sh -c "cat >/tmp/fast.sql" <<<"SELECT round(extract(epoch FROM clock_timestamp())::numeric, 3),
  pg_current_wal_lsn() - '0/0'::pg_lsn, pg_current_wal_insert_lsn() - '0/0'::pg_lsn \\watch 0.1"
  in_ctr chmod 0644 /tmp/fast.sql
  docker exec -d -u postgres "$CTR" sh -c \
    "echo \$\$ >/tmp/fast.pid; exec psql -AtqX -F '	' -d bench -f /tmp/fast.sql >/tmp/fast-$1.tsv 2>&1"
}
fast_sampler_stop() {
  in_ctr sh -c 'kill -TERM "$(cat /tmp/fast.pid)"; rm -f /tmp/fast.pid' || true
  sleep 0.3
  in_ctr cat "/tmp/fast-$1.tsv" >"$TMP/fast-$1.tsv"
}
watch_start() {  # watch_start VARIANT PREFIX
  "$VENV/python" "$HERE/streamwatch.py" "$HTTP_EP" "$BUCKET" "$2" "$TMP/watch-$1.tsv" 0.5 >"$TMP/watch-$1.log" 2>&1 &
  echo $! >"$STATE/watch.pid"
}
watch_stop() {
  stop_pidfile "$STATE/watch.pid" "streamwatch.py"
  rm -f "$STATE/watch.pid"
}
stream_stop_all() {  # cleanup trap: whatever of the above is still running
  watch_stop
  if ours_ctr; then
    stream_stop
    in_ctr sh -c 'test -f /tmp/fast.pid && kill -TERM "$(cat /tmp/fast.pid)"; rm -f /tmp/fast.pid' 2>/dev/null || true
  fi
}

# -- preflight ----------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (docker, nginx)"
docker info >/dev/null 2>&1 || die "Docker engine not running (lab/engine.sh)"
docker image inspect "$LAB_IMAGE" >/dev/null 2>&1 || die "image $LAB_IMAGE missing (make image)"
[ -x "$VENV/moto_server" ] && [ -x "$VENV/python" ] || die "venv missing (make setup)"
command -v nginx >/dev/null || die "nginx missing (apt-get install nginx-light)"
command -v openssl >/dev/null || die "openssl missing"
for v in $VARIANTS; do
  [[ " $ALL_VARIANTS " == *" $v "* ]] || die "unknown variant '$v' (known: $ALL_VARIANTS)"
done
mkdir -p "$STATE"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
TMP="$(mktemp -d /tmp/rtx-bench-wal.XXXXXX)"
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
T_START="$(now)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
say "host: $(nproc) cores, load average $LOAD_START (shared machine: $(docker ps --format '{{.Names}}' | grep -c . ) containers running)"

# Leftovers of an aborted earlier run (only ours: by name AND label).
remove_all

# -- 1. network, container, database ------------------------------------------------------
say "network $NAME ($SUBNET) and container $CTR from $LAB_IMAGE"
docker network create --subnet "$SUBNET" --gateway "$GW" --label "$LABEL" "$NAME" >/dev/null
docker run -d --name "$CTR" --hostname "$CTR" --label "$LABEL" --network "$NAME" \
  --tmpfs /run --tmpfs /run/lock --tmpfs /tmp -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
  --stop-signal SIGRTMIN+3 "$LAB_IMAGE" /lib/systemd/systemd >/dev/null
for _ in $(seq 1 120); do
  state="$(in_ctr systemctl is-system-running 2>/dev/null || true)"
  case "$state" in running|degraded) break ;; esac
  sleep 0.5
done
case "$state" in running|degraded) ;; *) die "systemd in $CTR is '$state'" ;; esac
in_ctr pg_createcluster 15 main --start >/dev/null
sql_pg() { as_pg psql -AtqX -v ON_ERROR_STOP=1 -c "$1"; }
sql_pg "ALTER SYSTEM SET max_wal_size = '4GB'" >/dev/null
sql_pg "SELECT pg_reload_conf()" >/dev/null
say "loading: pgbench -i -s $SCALE (archive_mode off)"
t0="$(now)"
as_pg createdb bench
as_pg pgbench -i -s "$SCALE" -q bench 2>&1 | tail -n 1 >&2
sql "CREATE TABLE wal_load (id bigserial PRIMARY KEY, b text)" >/dev/null
in_ctr_i sh -c "cat >/var/lib/postgresql/wal-bulk.sql && chmod 0644 /var/lib/postgresql/wal-bulk.sql" <<SQL
INSERT INTO wal_load (b) SELECT repeat(md5(random()::text), 60) FROM generate_series(1, $BULK_ROWS);
SQL
PGBENCH_SCRIPTS=(-b tpcb-like@9)
if [ "$BULK_WEIGHT" -gt 0 ]; then PGBENCH_SCRIPTS+=(-f "/var/lib/postgresql/wal-bulk.sql@$BULK_WEIGHT"); fi
if [ -n "$RATE" ] && [ "$RATE" != 0 ]; then PGBENCH_SCRIPTS+=(-R "$RATE"); fi
sql "CHECKPOINT" >/dev/null
say "loaded in $(secs "$(now)" "$t0") s; database $(( $(sql "SELECT pg_database_size('bench')") / 1000000 )) MB"
# The benchmark's WAL settings: archive_mode on (restart), archive_timeout short, max_wal_size back to the default.
sql_pg "ALTER SYSTEM RESET max_wal_size" >/dev/null
sql_pg "ALTER SYSTEM SET archive_mode = on" >/dev/null
sql_pg "ALTER SYSTEM SET archive_timeout = '${ARCHIVE_TIMEOUT}s'" >/dev/null
sql_pg "ALTER SYSTEM SET archive_command = ''" >/dev/null
sql_pg "ALTER SYSTEM SET checkpoint_timeout = '${CHECKPOINT_TIMEOUT}s'" >/dev/null
in_ctr pg_ctlcluster 15 main restart
PG_SETTINGS="$(sql "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
  WHERE name IN ('archive_mode', 'archive_timeout', 'max_wal_size', 'checkpoint_timeout', 'shared_buffers',
                 'full_page_writes', 'wal_compression', 'wal_level', 'synchronous_commit', 'wal_segment_size')")"
say "settings: $PG_SETTINGS"

# -- 2. S3 endpoint: moto + nginx TLS (as bench/backup/run.sh) -------------------------------
say "moto_server on $HTTP_EP, nginx TLS on $TLS_EP"
nohup "$VENV/moto_server" -H "$GW" -p "$MOTO_PORT" >"$TMP/moto.log" 2>&1 &
echo $! >"$STATE/moto.pid"
mkdir -p "$TMP/nginx/logs"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$GW" \
  -keyout "$TMP/nginx/key.pem" -out "$TMP/nginx/cert.pem" >/dev/null 2>&1
cat >"$TMP/nginx/$NAME.conf" <<NGINX
# $NAME TLS terminator in front of moto
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
nginx -p "$TMP/nginx" -c "$TMP/nginx/$NAME.conf" -g 'daemon off;' >"$TMP/nginx/logs/stdout.log" 2>&1 &
echo $! >"$STATE/nginx.pid"
for _ in $(seq 1 60); do
  curl -fsS "$HTTP_EP/moto-api/" >/dev/null 2>&1 && curl -kfsS "$TLS_EP/moto-api/" >/dev/null 2>&1 && break
  kill -0 "$(cat "$STATE/moto.pid")" 2>/dev/null || die "moto exited: $(tail -n 5 "$TMP/moto.log")"
  kill -0 "$(cat "$STATE/nginx.pid")" 2>/dev/null || die "nginx exited: $(cat "$TMP/nginx/logs/"*)"
  sleep 0.5
done
curl -kfsS "$TLS_EP/moto-api/" >/dev/null || die "S3 endpoint not answering"
KMS_ARN="$("$VENV/python" "$ROOT/bench/backup/s3ctl.py" "$HTTP_EP" setup "$BUCKET" "$KMS_ALIAS")"
say "bucket $BUCKET, KMS key $KMS_ALIAS = $KMS_ARN"
s3list() { "$VENV/python" "$HERE/s3list.py" "$HTTP_EP" "$BUCKET" "$1"; }

# -- 3a. ours: the agent and its configuration as rtx.dr.backup_schedule writes them -----------
install_agent() {  # what rtx.dr.agent_install does: module_utils under $AGENT_DIR (a snapshot of the working tree)
  local pkg="$AGENT_DIR/ansible_collections/rtx/dr/plugins/module_utils" d
  in_ctr mkdir -p "$pkg" /etc/rtx-dr
  for d in ansible_collections ansible_collections/rtx ansible_collections/rtx/dr \
    ansible_collections/rtx/dr/plugins ansible_collections/rtx/dr/plugins/module_utils; do
    in_ctr touch "$AGENT_DIR/$d/__init__.py"
  done
  (cd "$ROOT/plugins/module_utils" && tar -cf - ./*.py) | in_ctr_i tar -C "$pkg" --no-same-owner -xf -
  in_ctr chmod -R go+rX "$AGENT_DIR"
  in_ctr chown root:postgres /etc/rtx-dr
  in_ctr chmod 0750 /etc/rtx-dr
}
agent_json() {  # agent_json PREFIX WAL_SECTION: the configuration file's content
  cat <<JSON
{
  "access_key": "testing",
  "audit_db": "rtx",
  "audit_schema": "dr",
  "backup": {
    "timeout": 14400
  },
  "bucket": "$BUCKET",
  "cluster_name": "bench",
  "compression": "zstd",
  "encryption": "aws:kms",
  "endpoint_url": "$HTTP_EP",
  "kms_key_id": "$KMS_ALIAS",
  "login_port": 5432,
  "login_unix_socket": "/var/run/postgresql",
  "login_user": "postgres",
  "prefix": "$1",
  "region": "us-east-1",
  "secret_key": "testing",
  "verify": {},
  "wal": $2
}
JSON
}
write_agent_config() {
  # templates/agent.json.j2 = _backup_schedule_config | to_nice_json(indent=2, sort_keys=true), with the role's
  # defaults (encryption aws:kms, compression zstd = the lab's rtx_dr_backup_compression, local PostgreSQL over the
  # socket, audit db/schema, backup timeout 14400; no replica bucket, so the WAL compression is the wal section's
  # default 'auto' = zstd when python3-zstandard is installed, as it is here). ours: push_batch 1 (the agent's
  # default); ours-batch: its own prefix and the batching options in the wal section.
  local config out
  agent_json "$OURS_PREFIX" '{}' | in_ctr_i sh -c "cat >$AGENT_CONFIG"
  agent_json "$BATCH_PREFIX" "{\"push_batch\": $PUSH_BATCH, \"push_parallel\": $PUSH_PARALLEL, \"spool_dir\": \"$SPOOL_DIR\"}" \
    | in_ctr_i sh -c "cat >$BATCH_CONFIG"
  in_ctr sh -c "mkdir -p $SPOOL_DIR && chown postgres:postgres $SPOOL_DIR && chmod 0700 $SPOOL_DIR"
  local configs=("$AGENT_CONFIG" "$BATCH_CONFIG")
  if [[ " $VARIANTS " == *" ours-stream "* ]]; then
    # to_nice_json(sort_keys=true) of the wal section: push_batch, push_parallel, receivewal_path, spool_dir,
    # stream_dir, stream_interval (| float)
    agent_json "$STREAM_PREFIX" "{\"push_batch\": $PUSH_BATCH, \"push_parallel\": $PUSH_PARALLEL, \"receivewal_path\": \"$RECEIVEWAL\", \"spool_dir\": \"$STREAM_SPOOL_DIR\", \"stream_dir\": \"$STREAM_DIR\", \"stream_interval\": $(awk -v i="$STREAM_INTERVAL" 'BEGIN { printf "%.1f", i }')}" \
      | in_ctr_i sh -c "cat >$STREAM_CONFIG"
    in_ctr sh -c "mkdir -p $STREAM_SPOOL_DIR $STREAM_DIR && chown postgres:postgres $STREAM_SPOOL_DIR $STREAM_DIR && chmod 0700 $STREAM_SPOOL_DIR $STREAM_DIR"
    configs+=("$STREAM_CONFIG")
  fi
  for config in "${configs[@]}"; do
    in_ctr sh -c "chown root:postgres $config && chmod 0640 $config"
    # the role's "Check the WAL archive settings of the configuration" task
    out="$(as_pg env PYTHONPATH="$AGENT_DIR" /usr/bin/python3 -m "$WAL_MODULE" --config "$config" check-config 2>&1)" \
      || die "wal_agent check-config of $config failed: $out"
    say "ours: $out"
  done
}

# -- 3b. pgBackRest: one configuration file per variant ------------------------------------------
pgbr_conf() {  # pgbr_conf VARIANT -> path
  echo "/etc/pgbackrest/$NAME-$1.conf"
}
write_pgbr_conf() {  # write_pgbr_conf VARIANT ASYNC(y|n)
  local variant="$1" async="$2" extra=""
  if [ "$async" = y ]; then
    # pgBackRest's advice for high WAL rates: asynchronous archiving with more than one process.
    extra=$'archive-async=y\nprocess-max=2\nspool-path=/var/spool/pgbackrest'
  fi
  in_ctr mkdir -p /etc/pgbackrest /var/spool/pgbackrest
  in_ctr chown postgres:postgres /var/spool/pgbackrest
  in_ctr_i sh -c "cat >$(pgbr_conf "$variant")" <<CONF
[global]
repo1-type=s3
repo1-path=/pgbackrest/$variant
repo1-s3-bucket=$BUCKET
repo1-s3-endpoint=$GW
repo1-storage-port=$TLS_PORT
repo1-storage-verify-tls=n
repo1-s3-uri-style=path
repo1-s3-region=us-east-1
repo1-s3-key=testing
repo1-s3-key-secret=testing
repo1-cipher-type=none
compress-type=zst
log-level-console=warn
log-level-stderr=warn
log-level-file=off
lock-path=/tmp/pgbackrest
$extra

[bench]
pg1-path=/var/lib/postgresql/15/main
pg1-socket-path=/var/run/postgresql
pg1-port=5432
CONF
  as_pg pgbackrest --config="$(pgbr_conf "$variant")" --stanza=bench stanza-create >/dev/null
}

# -- 3c. one variant ------------------------------------------------------------------------------
SAMPLER_SQL="SELECT round(extract(epoch FROM clock_timestamp())::numeric, 3),
  pg_current_wal_lsn() - '0/0'::pg_lsn,
  a.archived_count, coalesce(a.last_archived_wal, '-'),
  coalesce(round(extract(epoch FROM a.last_archived_time)::numeric, 3)::text, '-'),
  a.failed_count, coalesce(a.last_failed_wal, '-'),
  (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')
FROM pg_stat_archiver a"
sampler_start() {  # sampler_start VARIANT: psql \watch 1 inside the container, one tab-separated row per second
  in_ctr_i sh -c "cat >/tmp/sampler.sql" <<<"$SAMPLER_SQL \\watch 1"
  in_ctr chmod 0644 /tmp/sampler.sql
  docker exec -d -u postgres "$CTR" sh -c \
    "echo \$\$ >/tmp/sampler.pid; exec psql -AtqX -F '	' -d bench -f /tmp/sampler.sql >/tmp/samples-$1.tsv 2>&1"
  for _ in $(seq 1 50); do in_ctr test -s "/tmp/samples-$1.tsv" && return 0; sleep 0.1; done
  die "sampler did not start: $(in_ctr cat "/tmp/samples-$1.tsv" 2>&1)"
}
sampler_stop() {  # sampler_stop VARIANT -> copies the samples to $TMP
  in_ctr sh -c 'kill -TERM "$(cat /tmp/sampler.pid)"; rm -f /tmp/sampler.pid' || true
  sleep 0.3
  in_ctr cat "/tmp/samples-$1.tsv" >"$TMP/samples-$1.tsv"
}
# Segment number (decimal) of a WAL file name on timeline 1, or of an LSN (bytes).
segno_of_name() { local n="$1"; echo $(( 16#${n:8:8} * 256 + 16#${n:16:8} )); }
archiver_state() {  # -> "<ready> <last_archived_wal or -> <archived_count> <failed_count>"
  sql "SELECT (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),
              coalesce(last_archived_wal, '-'), archived_count, failed_count FROM pg_stat_archiver" | tr '|' ' '
}
last_archived_segno() {  # -> segment number of the last archived WAL segment, -1 when none
  local name
  read -r _ name _ _ < <(archiver_state)
  if [[ "$name" =~ ^[0-9A-F]{24}$ ]]; then segno_of_name "$name"; else echo -1; fi
}
wait_archived() {  # wait_archived SEGNO MAX_SECONDS -> 0 when the archiver reached SEGNO and nothing is .ready
  local target="$1" max="$2" t0 ready name
  t0="$(now)"
  while :; do
    read -r ready name _ _ < <(archiver_state)
    if [ "$ready" = 0 ] && [[ "$name" =~ ^[0-9A-F]{24}$ ]] && [ "$(segno_of_name "$name")" -ge "$target" ]; then
      return 0
    fi
    awk -v a="$(now)" -v b="$t0" -v m="$max" 'BEGIN { exit !(a - b > m) }' && return 1
    sleep 0.25
  done
}
wait_segment_archived() {  # wait_segment_archived SEGNO MAX_SECONDS: the archiver passed SEGNO (ignores later .ready)
  local target="$1" max="$2" t0 name
  t0="$(now)"
  while :; do
    read -r _ name _ _ < <(archiver_state)
    if [[ "$name" =~ ^[0-9A-F]{24}$ ]] && [ "$(segno_of_name "$name")" -ge "$target" ]; then return 0; fi
    awk -v a="$(now)" -v b="$t0" -v m="$max" 'BEGIN { exit !(a - b > m) }' && return 1
    sleep 0.25
  done
}
lsn_bytes() { sql "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"; }

run_variant() {  # run_variant VARIANT
  local v="$1" cmd t_ready t_load0 t_load1 t_drain t_last t_idle_end lsn0 lsn1 first_seg last_seg0 seg_end
  local drained=true last_ok=true a0 f0 a1 f1 ready name pgbench_out tps load0 load1 end_completed
  case "$v" in
    ours) cmd="$OURS_ARCHIVE_COMMAND" ;;
    ours-batch) cmd="$BATCH_ARCHIVE_COMMAND" ;;
    ours-stream) cmd="$STREAM_ARCHIVE_COMMAND" ;;
    pgbr-sync) write_pgbr_conf "$v" n; cmd="pgbackrest --config=$(pgbr_conf "$v") --stanza=bench archive-push %p" ;;
    pgbr-async) write_pgbr_conf "$v" y; cmd="pgbackrest --config=$(pgbr_conf "$v") --stanza=bench archive-push %p" ;;
  esac
  say "=== $v: archive_command = $cmd"
  # archive_command is '' here: nothing is archived until it is set, so last_seg0 is stable; what is .ready now
  # (archive_timeout switches since the previous variant) is archived by this variant and counted in its range.
  last_seg0="$(last_archived_segno)"
  if [ "$last_seg0" -ge 0 ]; then first_seg=$((last_seg0 + 1)); else first_seg=$(( $(lsn_bytes) / SEG )); fi
  sql "ALTER SYSTEM SET archive_command = '$cmd'" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  sleep 1
  [ "$(sql 'SHOW archive_command')" = "$cmd" ] || die "$v: archive_command not applied"
  if [ "$v" = ours-stream ]; then
    say "$v: starting stream-receive + stream-upload (stream_interval $STREAM_INTERVAL s)"
    stream_start
    local i
    for i in $(seq 1 60); do
      [ "$(sql "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'rtx_dr_stream' AND state = 'streaming'")" = 1 ] && break
      sleep 0.5
    done
    [ "$i" -lt 60 ] || die "$v: pg_receivewal not streaming after 30 s: $(in_ctr cat /tmp/stream-receive.log /tmp/stream-upload.log 2>&1 | tail -n 20)"
    say "$v: $(in_ctr cat /tmp/stream-receive.log | tail -n 1)"
  fi
  # Same start for every variant: vacuumed tables, a fresh checkpoint (the same full-page-write burst), a new segment.
  sql "VACUUM pgbench_branches, pgbench_tellers" >/dev/null
  sql "TRUNCATE pgbench_history, wal_load" >/dev/null
  sql "CHECKPOINT" >/dev/null
  seg_end="$(segno_of_name "$(sql "SELECT pg_walfile_name(pg_switch_wal())")")"
  wait_archived "$seg_end" 120 || die "$v: the warm-up segment was not archived in 120 s (failed pushes? see the log)"
  read -r _ _ a0 f0 < <(archiver_state)
  sampler_start "$v"
  if [ "$v" = ours-stream ]; then fast_sampler_start "$v"; watch_start "$v" "$STREAM_PREFIX"; fi
  sleep 2
  load0="$(cut -d' ' -f1-3 /proc/loadavg)"
  lsn0="$(lsn_bytes)"
  say "$v: pgbench -n -c $CLIENTS -j $JOBS -T $DURATION ${PGBENCH_SCRIPTS[*]} (load average $load0)"
  t_load0="$(now)"
  pgbench_out="$(as_pg pgbench -n -c "$CLIENTS" -j "$JOBS" -T "$DURATION" -P 30 "${PGBENCH_SCRIPTS[@]}" bench 2>&1)" \
    || { printf '%s\n' "$pgbench_out" >&2; die "$v: pgbench failed"; }
  t_load1="$(now)"
  lsn1="$(lsn_bytes)"
  load1="$(cut -d' ' -f1-3 /proc/loadavg)"
  tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$pgbench_out" | head -n 1)"
  # Completed segments at the end of the load: all before the one holding lsn1 (lsn1 exactly on a boundary: all before it).
  end_completed=$(( (lsn1 - 1) / SEG - 1 ))
  read -r ready name _ _ < <(archiver_state)
  say "$v: load done, $(( (lsn1 - lsn0) / 1048576 )) MiB WAL, tps $tps; backlog $ready .ready, last archived $name"
  # Drain: everything completed during the load archived, nothing .ready.
  if wait_archived "$end_completed" "$DRAIN_MAX"; then t_drain="$(now)"; else drained=false; t_drain="$(now)"; fi
  say "$v: drained=$drained after $(secs "$t_drain" "$t_load1") s"
  # The segment holding the last commit (switched by archive_timeout, then archived).
  if wait_segment_archived "$(( (lsn1 - 1) / SEG ))" "$((ARCHIVE_TIMEOUT * 6))"; then t_last="$(now)"; else last_ok=false; t_last="$(now)"; fi
  say "$v: segment of the last commit archived=$last_ok $(secs "$t_last" "$t_load1") s after the load ended"
  # Idle phase: 2 x archive_timeout without writes after the drain.
  t_idle_end="$(awk -v t="$t_drain" -v a="$ARCHIVE_TIMEOUT" 'BEGIN { printf "%.3f", t + 2 * a }')"
  while awk -v a="$(now)" -v b="$t_idle_end" 'BEGIN { exit !(a < b) }'; do sleep 0.5; done
  sleep 1.2
  sampler_stop "$v"
  local stream_json=null
  if [ "$v" = ours-stream ]; then
    watch_stop
    fast_sampler_stop "$v"
    stream_stop
    in_ctr sh -c 'cat /tmp/stream-receive.log' >"$TMP/stream-receive.log" 2>&1 || true
    in_ctr sh -c 'cat /tmp/stream-upload.log' >"$TMP/stream-upload.log" 2>&1 || true
    say "$v: stream-upload: $(tail -n 1 "$TMP/stream-upload.log")"
    stream_json="{\"watch\": \"$TMP/watch-$v.tsv\", \"fast\": \"$TMP/fast-$v.tsv\", \"interval\": $STREAM_INTERVAL, \"receive_log\": \"$TMP/stream-receive.log\", \"upload_log\": \"$TMP/stream-upload.log\"}"
  fi
  read -r ready name a1 f1 < <(archiver_state)
  wait_archived "$(last_archived_segno)" 60 || say "WARNING: $v: .ready files left after the idle phase"
  last_seg="$(last_archived_segno)"
  say "$v: archived segments $first_seg..$last_seg ($(( last_seg - first_seg + 1 ))), archived_count +$((a1 - a0)) during the measurement, failed_count +$((f1 - f0))"
  # Completeness: every segment from first_seg to last_seg is in the archive.
  local listing="$TMP/listing-$v.tsv" prefix fetched
  case "$v" in
    ours) prefix="$OURS_PREFIX/wal/00000001/" ;;
    ours-batch) prefix="$BATCH_PREFIX/wal/00000001/" ;;
    ours-stream) prefix="$STREAM_PREFIX/wal/00000001/" ;;
    *) prefix="pgbackrest/$v/archive/bench/" ;;
  esac
  s3list "$prefix" >"$listing"
  local last_name
  last_name="$(printf '00000001%08X%08X' $((last_seg / 256)) $((last_seg % 256)))"
  if [ "${v%-batch}" = ours ] || [ "$v" = ours-stream ]; then
    local config="$AGENT_CONFIG"
    [ "$v" = ours ] || config="$BATCH_CONFIG"
    [ "$v" != ours-stream ] || config="$STREAM_CONFIG"
    fetched="$(as_pg sh -c "PYTHONPATH=$AGENT_DIR /usr/bin/python3 -m $WAL_MODULE --config $config fetch $last_name /tmp/fetched-$v \
      && stat -c %s /tmp/fetched-$v && rm -f /tmp/fetched-$v" 2>&1 | tail -n 1)" || fetched="failed: $fetched"
  else
    fetched="$(as_pg sh -c "pgbackrest --config=$(pgbr_conf "$v") --stanza=bench archive-get $last_name /tmp/fetched-$v \
      && stat -c %s /tmp/fetched-$v && rm -f /tmp/fetched-$v" 2>&1 | tail -n 1)" || fetched="failed: $fetched"
    as_pg pgbackrest --config="$(pgbr_conf "$v")" --stanza=bench --output=json info >"$TMP/pgbr-info-$v.json" || true
  fi
  R_VARIANT="$v" R_CMD="$cmd" R_TPS="$tps" R_LOAD0="$load0" R_LOAD1="$load1" R_FETCHED="$last_name: $fetched" \
  R_PGBENCH="$pgbench_out" R_SAMPLES="$TMP/samples-$v.tsv" R_LISTING="$listing" R_INFO="$TMP/pgbr-info-$v.json" \
  R_DRAINED="$drained" R_LAST_OK="$last_ok" R_STREAM="$stream_json" \
  "$VENV/python" - "$RESULTS" "$t_load0" "$t_load1" "$t_drain" "$t_last" "$t_idle_end" "$lsn0" "$lsn1" \
    "$first_seg" "$last_seg" "$end_completed" "$((a1 - a0))" "$((f1 - f0))" <<'PY'
import json, os, sys
e = os.environ
keys = ("t_load0", "t_load1", "t_drain", "t_last", "t_idle_end", "lsn0", "lsn1", "first_seg", "last_seg",
        "end_completed", "archived_delta", "failed_delta")
rec = {k: (float(v) if k.startswith("t_") else int(v)) for k, v in zip(keys, sys.argv[2:])}
rec.update(variant=e["R_VARIANT"], archive_command=e["R_CMD"], tps=e["R_TPS"], load0=e["R_LOAD0"], load1=e["R_LOAD1"],
           fetched_last=e["R_FETCHED"], pgbench=e["R_PGBENCH"], samples=e["R_SAMPLES"], listing=e["R_LISTING"],
           pgbr_info=None if e["R_VARIANT"].startswith("ours") else e["R_INFO"],
           drained=e["R_DRAINED"] == "true", last_ok=e["R_LAST_OK"] == "true", stream=json.loads(e["R_STREAM"]))
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(rec) + "\n")
PY
  # Nothing archived by the next variant may land here: archive_command back to '' (WAL kept, .ready accumulates).
  sql "ALTER SYSTEM SET archive_command = ''" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  # A push still running (an archive_timeout switch after the listing above) finishes into THIS variant's archive:
  # wait for it, so that the next variant's first segment (last archived + 1) is really the next one.
  local i
  for i in $(seq 1 120); do
    in_ctr pgrep -f 'wal_agent .*push|archive-push' >/dev/null || break
    sleep 0.5
  done
}

install_agent
write_agent_config
for v in $VARIANTS; do run_variant "$v"; done

# -- 4. ours: cost of one push on its own (explains the per-segment start-up cost) -------------------------------
# A bare Python start, the agent's start + imports + configuration (check-config contacts nothing), and the import of
# botocore alone, timed inside the container: the fixed cost every archive_command call pays before its first request.
MICRO=""
if [[ " $VARIANTS " == *" ours "* ]]; then
  MICRO="$(as_pg sh -c "cd /var/lib/postgresql/15/main
    t() { a=\$(date +%s%N); \"\$@\" >/dev/null 2>&1; r=\$?; b=\$(date +%s%N); echo \$(( (b - a) / 1000000 )):\$r; }
    s=''; for i in 1 2 3 4 5; do s=\"\$s \$(t env PYTHONPATH=$AGENT_DIR PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -c pass)\"; done; echo \"python3 -c pass ms:\$s\"
    s=''; for i in 1 2 3 4 5; do s=\"\$s \$(t env PYTHONPATH=$AGENT_DIR PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m $WAL_MODULE --config $AGENT_CONFIG check-config)\"; done; echo \"wal_agent check-config ms:\$s\"
    s=''; for i in 1 2 3 4 5; do s=\"\$s \$(t env PYTHONPATH=$AGENT_DIR PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -c 'import botocore.session')\"; done; echo \"python3 -c 'import botocore.session' ms:\$s\"
    " 2>&1)"
  say "micro: $MICRO"
fi

# -- 5. report ----------------------------------------------------------------------------
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
{
  echo "# WAL archiving benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- host: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, $(uname -sr), Docker $(docker version -f '{{.Server.Version}}')"
  echo "- **shared machine**: load average (1/5/15 min) at start $LOAD_START, at end $LOAD_END; other containers running at the end: $(docker ps --format '{{.Names}}' | grep -vc "^$CTR\$")"
  echo "- PostgreSQL $(sql 'SHOW server_version'); $PG_SETTINGS"
  echo "- load: pgbench -n -c $CLIENTS -j $JOBS -T $DURATION ${PGBENCH_SCRIPTS[*]} on scale $SCALE, inside the container (bulk script: \`$(in_ctr cat /var/lib/postgresql/wal-bulk.sql)\`); archive_timeout=${ARCHIVE_TIMEOUT}s (benchmark setting, collection default 60 s)"
  echo "- S3: moto $("$VENV/python" -c 'import moto; print(moto.__version__)') ($HTTP_EP; ours, as the lab's endpoint), nginx TLS in front ($TLS_EP; pgBackRest needs TLS); $(as_pg pgbackrest version)"
  if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    code_at="the working tree at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- plugins/module_utils/wal_agent.py plugins/module_utils/walarchive.py plugins/module_utils/walspool.py plugins/module_utils/walstream.py || echo ' + uncommitted changes to wal_agent.py/walarchive.py/walspool.py/walstream.py')"
  else  # a copy of the tree without .git (BENCH_GIT_REV: the commit it was taken from)
    code_at="a snapshot of the working tree ($ROOT, no .git; taken at ${BENCH_GIT_REV:-an unknown commit} + uncommitted changes)"
  fi
  echo "- agent code: plugins/module_utils of $code_at; sha256 wal_agent.py $(sha256sum "$ROOT/plugins/module_utils/wal_agent.py" | cut -c1-12), walarchive.py $(sha256sum "$ROOT/plugins/module_utils/walarchive.py" | cut -c1-12), walstream.py $(sha256sum "$ROOT/plugins/module_utils/walstream.py" | cut -c1-12)"
  echo
  "$VENV/python" "$HERE/report.py" "$RESULTS" "$ARCHIVE_TIMEOUT" "$SEG"
  if [ -n "$MICRO" ]; then
    echo
    echo "Cost of one start of the agent's Python, inside the container, right after the runs (ms:exit code, 5 runs each):"
    echo
    printf '%s\n' "$MICRO" | grep ' ms:' | sed 's/^/    /'
  fi
  echo
  echo "Total benchmark time: $(secs "$(now)" "$T_START") s."
} >"$TMP/report.md"
cp "$TMP/report.md" "$OUT"
RAW="${OUT%.md}-raw"
mkdir -p "$RAW"
in_ctr cat /var/log/postgresql/postgresql-15-main.log >"$TMP/postgresql.log" 2>/dev/null || true
cp "$TMP"/results.jsonl "$TMP"/samples-*.tsv "$TMP"/listing-*.tsv "$TMP"/postgresql.log "$RAW"/ 2>/dev/null || true
cp "$TMP"/fast-*.tsv "$TMP"/watch-*.tsv "$TMP"/stream-*.log "$RAW"/ 2>/dev/null || true
cp "$TMP"/pgbr-info-*.json "$RAW"/ 2>/dev/null || true
cat "$TMP/report.md"
say "report written to $OUT, raw data in $RAW"

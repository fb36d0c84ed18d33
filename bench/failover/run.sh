#!/usr/bin/env bash
# Failover benchmark of rtx.dr: RTO of playbooks/failover.yml vs a manual pg_promote(), on the
# running lab (make lab), the same cluster and the same write probe, in the same run.
#
# Usage: bench/failover/run.sh            (or: make bench-failover)
#   BENCH_ROUNDS=N        rounds of each variant, alternating ours / reference (default 5)
#   BENCH_TARGET_S=S      RTO target for the median of ours (default 10)
#   BENCH_ACK_TIMEOUT=S   after the action returned, how long to wait for the first acknowledged
#                         probe write before the round counts as "no ack" (default 30)
#   BENCH_OUT=FILE        report file (default bench/failover/results-<UTC date>.md)
#
# Needs: the lab up and healthy (one primary, 3 standbys streaming from it), the venv (make setup),
# the Docker CLI. It kills the lab's primary 2*N times and brings the cluster back after each round.
#
# What it does:
#   1. role bench_probe + table bench_probe.writes in db rtx on the current primary (probe.py setup).
#   2. per round and variant: checks the cluster is healthy; starts the probe (probe.py write: an
#      INSERT every 50 ms through the libpq multi-host string of all four servers with
#      target_session_attrs=read-write, reconnecting on error, logging the CLOCK_MONOTONIC time of
#      every acknowledged commit); waits for 5 acks; `docker kill` of the primary (t_kill = when it
#      returned); then at once
#        ours:      ansible-playbook playbooks/failover.yml -e failover_reason=bench
#        reference: docker exec <standby with the highest pg_last_wal_receive_lsn() before the kill>
#                   runuser -u postgres -- psql -c 'SELECT pg_promote()'   (no checks, fencing, repointing)
#      RTO = first acknowledged probe write after t_kill − t_kill. ours: also the playbook's wall time
#      and the per-step seconds of its JSON report (~/.rtx-dr/reports, newest failover-*.json).
#   3. restore: stop the probe; docker start the old primary, wait for systemd; playbooks/rejoin.yml
#      -e rejoin_host=<old primary>, and for the reference also every standby that does not stream
#      from the new primary yet.
#   4. markdown tables to stdout and to the report file.
#   5. trap: stops the probe; starts a lab container left stopped and prints the cluster's state.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/.venv/bin"
export PATH="$VENV:$PATH"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"

ROUNDS="${BENCH_ROUNDS:-5}"
TARGET="${BENCH_TARGET_S:-10}"
ACK_TIMEOUT="${BENCH_ACK_TIMEOUT:-30}"
OUT="${BENCH_OUT:-$HERE/results-$(date -u +%Y-%m-%d).md}"
INVENTORY="$ROOT/inventories/lab/hosts.yml"
REPORT_DIR="$HOME/.rtx-dr/reports"   # failover.yml's default rtx_dr_report_dir
DB_HOSTS=(db-east-1 db-east-2 db-east-3 db-west-1)
LAB_CONTAINERS=(db-east-1 db-east-2 db-east-3 db-west-1 app-east-1 app-west-1)

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }  # secs T1 T0
probe() { "$VENV/python" "$HERE/probe.py" "$@"; }
as_pg() { local h="$1"; shift; docker exec "$h" runuser -u postgres -- psql -XAtq "$@"; }
running() { [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
molecule_busy() { [ -n "$(docker ps --filter name=mol- -q)" ]; }

wait_systemd() {  # wait_systemd CONTAINER: systemd up (running or degraded), 120 s at most
  local state="" i
  # Right after `docker start` systemctl cannot reach systemd yet ("offline"): ask again.
  for i in $(seq 1 60); do
    state="$(timeout 60 docker exec "$1" systemctl is-system-running --wait 2>/dev/null || true)"
    case "$state" in running|degraded) return 0 ;; esac
    sleep 1
  done
  say "systemd in $1 is '$state'"
  return 1
}

# -- the probe ------------------------------------------------------------------------------------
PROBE_PID=""
start_probe() {  # start_probe LOG
  probe write "$1" &
  PROBE_PID=$!
  probe wait-acks "$1" 5 30 || die "the probe cannot write through the client endpoint"
}
stop_probe() {
  [ -n "$PROBE_PID" ] || return 0
  kill -TERM "$PROBE_PID" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$PROBE_PID" 2>/dev/null || break; sleep 0.25; done  # a connect may take 8 s
  kill -KILL "$PROBE_PID" 2>/dev/null || true
  wait "$PROBE_PID" 2>/dev/null || true
  PROBE_PID=""
}

# -- cleanup --------------------------------------------------------------------------------------
cleanup() {
  local rc=$? c started=()
  set +e
  stop_probe
  for c in "${LAB_CONTAINERS[@]}"; do
    if docker inspect "$c" >/dev/null 2>&1 && ! running "$c"; then
      say "container $c was left stopped: starting it"
      docker start "$c" >/dev/null && wait_systemd "$c"
      started+=("$c")
    fi
  done
  if [ "${#started[@]}" -gt 0 ] || [ "$rc" -ne 0 ]; then
    say "cluster state now (not healed; bring members back with playbooks/rejoin.yml -e rejoin_host=...):"
    probe state >&2
    [ "${#started[@]}" -gt 0 ] && say "started again: ${started[*]} (a killed primary comes back as a primary on its old timeline)"
  fi
  if [ "$rc" -ne 0 ] && [ -n "${TMP:-}" ]; then
    say "logs kept in $TMP"
  elif [ -n "${TMP:-}" ]; then
    rm -rf "$TMP"
  fi
  exit "$rc"
}

# -- healthy cluster, rejoin ----------------------------------------------------------------------
HEALTH=()
wait_healthy() {  # sets HEALTH=(primary standby standby standby) or dies
  local out err
  for _ in $(seq 1 30); do
    if out="$(probe health 2>"$TMP/health.err")"; then
      read -r -a HEALTH <<<"$out"
      return 0
    fi
    sleep 2
  done
  err="$(cat "$TMP/health.err")"
  die "the cluster is not healthy, stopping: $err"
}

rejoin() {  # rejoin HOST LOG
  local host="$1" log="$2"
  say "  rejoin $host"
  if ! (cd "$ROOT" && timeout 900 ansible-playbook -i "$INVENTORY" playbooks/rejoin.yml -e rejoin_host="$host") \
      >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    die "playbooks/rejoin.yml -e rejoin_host=$host failed (last 60 lines above; full log $log)"
  fi
  grep -qE 'REJOIN COMPLETE|nothing to do' "$log" || {
    tail -n 60 "$log" >&2
    die "playbooks/rejoin.yml -e rejoin_host=$host reported neither REJOIN COMPLETE nor nothing to do"
  }
  say "    $(grep -oE "REJOIN COMPLETE[^\"']*|already streams from [^\"']*nothing to do" "$log" | head -n 1)"
}

restore() {  # restore VARIANT ROUND OLD NEW
  local variant="$1" round="$2" old="$3" new="$4" h streaming
  say "  restore: docker start $old"
  docker start "$old" >/dev/null
  wait_systemd "$old" || die "systemd in $old did not come up"
  rejoin "$old" "$TMP/$variant-$round-rejoin-$old.log"
  if [ "$variant" = reference ]; then
    for h in "${DB_HOSTS[@]}"; do
      [ "$h" = "$old" ] || [ "$h" = "$new" ] && continue
      streaming="$(as_pg "$new" -c "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'" || true)"
      grep -qx "$h" <<<"$streaming" || rejoin "$h" "$TMP/$variant-$round-rejoin-$h.log"
    done
  fi
}

# -- one round ------------------------------------------------------------------------------------
round_ours() {  # round_ours ROUND
  local round="$1" log="$TMP/ours-$round" primary t_mono t_real kill_s launch end rc ack report new
  wait_healthy
  primary="${HEALTH[0]}"
  say "ours round $round: primary $primary"
  start_probe "$log.probe"
  touch "$log.marker"
  read -r t_mono t_real kill_s <<<"$(probe kill "$primary")"
  launch="$(now)"
  [ -n "$t_mono" ] || die "docker kill $primary failed"
  set +e
  (cd "$ROOT" && ansible-playbook -i "$INVENTORY" playbooks/failover.yml -e failover_reason=bench) >"$log.ansible" 2>&1
  rc=$?
  set -e
  end="$(now)"
  if [ "$rc" -ne 0 ]; then
    stop_probe
    tail -n 60 "$log.ansible" >&2
    die "playbooks/failover.yml failed (rc $rc; last 60 lines above; full log $log.ansible)"
  fi
  ack="$(probe wait-ack "$log.probe" "$t_mono" "$primary" "$ACK_TIMEOUT")"
  stop_probe
  report="$(find "$REPORT_DIR" -maxdepth 1 -name 'failover-*.json' -newer "$log.marker" -printf '%T@ %p\n' \
            | sort -n | tail -n 1 | cut -d' ' -f2-)"
  [ -n "$report" ] || die "failover.yml wrote no new report in $REPORT_DIR"
  new="$("$VENV/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["new_primary"])' "$report")"
  probe record "$TMP/rounds.jsonl" variant=ours round="$round" old="$primary" new="$new" \
    t_kill_real="$t_real" kill_cmd_s="$kill_s" launch_real="$launch" action_wall="$(secs "$end" "$launch")" \
    ack="$ack" report="$(cat "$report")" report_file="$report" notes=""
  say "  RTO $("$VENV/python" -c 'import json,sys; print(json.loads(sys.argv[1])["rto"])' "$ack") s," \
      "playbook $(secs "$end" "$launch") s, promoted $new"
  restore ours "$round" "$primary" "$new"
}

round_reference() {  # round_reference ROUND
  local round="$1" log="$TMP/reference-$round" primary best positions t_mono t_real kill_s launch end ack sync notes
  wait_healthy
  primary="${HEALTH[0]}"
  start_probe "$log.probe"
  read -r best positions <<<"$(probe best-standby "$primary")"
  [ -n "$best" ] || die "no standby reported its receive LSN"
  say "reference round $round: primary $primary, most advanced standby $best ($positions)"
  read -r t_mono t_real kill_s <<<"$(probe kill "$primary")"
  launch="$(now)"
  [ -n "$t_mono" ] || die "docker kill $primary failed"
  docker exec "$best" runuser -u postgres -- psql -XAtq -c 'SELECT pg_promote()' >"$log.promote" 2>&1 \
    || say "  pg_promote on $best failed: $(cat "$log.promote")"
  end="$(now)"
  ack="$(probe wait-ack "$log.probe" "$t_mono" "$primary" "$ACK_TIMEOUT")"
  stop_probe
  sync="$(as_pg "$best" -c 'SHOW synchronous_standby_names' 2>/dev/null || echo '?')"
  notes="pg_promote() returned $(tr -d '\n' <"$log.promote"); LSN before the kill: $positions"
  [ -n "$sync" ] && notes+="; synchronous_standby_names on $best: $sync"
  probe record "$TMP/rounds.jsonl" variant=reference round="$round" old="$primary" new="$best" \
    t_kill_real="$t_real" kill_cmd_s="$kill_s" launch_real="$launch" action_wall="$(secs "$end" "$launch")" \
    ack="$ack" notes="$notes"
  say "  RTO $("$VENV/python" -c 'import json,sys; print(json.loads(sys.argv[1])["rto"])' "$ack") s," \
      "pg_promote $(secs "$end" "$launch") s${sync:+ (synchronous_standby_names: $sync)}"
  restore reference "$round" "$primary" "$best"
}

# -- main -----------------------------------------------------------------------------------------
[ -x "$VENV/ansible-playbook" ] && [ -x "$VENV/python" ] || die "venv missing (make setup)"
"$VENV/python" -c 'import psycopg2' 2>/dev/null || die "psycopg2 missing in the venv (make setup)"
docker info >/dev/null 2>&1 || die "Docker engine not running"
for c in "${DB_HOSTS[@]}"; do running "$c" || die "lab container $c is not running (make lab)"; done
[ -e "$ROOT/.lab/collections/ansible_collections/rtx/dr" ] || die "collection link missing (make setup)"
case "$ROUNDS" in ''|*[!0-9]*|0) die "BENCH_ROUNDS must be a positive integer" ;; esac
TMP="$(mktemp -d /tmp/rtx-bench-failover.XXXXXX)"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
T_START="$(now)"
MOL_AT_START="$(molecule_busy && echo busy || echo idle)"
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"

wait_healthy
say "cluster healthy: primary ${HEALTH[0]}, standbys ${HEALTH[*]:1}; $ROUNDS round(s) per variant"
probe setup >/dev/null || die "cannot create the probe's role and table"

for round in $(seq 1 "$ROUNDS"); do
  round_ours "$round"
  round_reference "$round"
done
wait_healthy
say "cluster healthy again: primary ${HEALTH[0]}"

# -- report ---------------------------------------------------------------------------------------
MOL_AT_END="$(molecule_busy && echo busy || echo idle)"
{
  echo "# Failover benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- host: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, $(uname -sr), Docker $(docker version -f '{{.Server.Version}}')"
  echo "- Molecule containers (mol-*) at start: $MOL_AT_START, at end: $MOL_AT_END; load average at start: $LOAD_AT_START"
  echo "- PostgreSQL $(as_pg "${HEALTH[0]}" -c 'SHOW server_version'), $(ansible --version | head -n 1), ansible.cfg: pipelining=$(ansible-config dump 2>/dev/null | awk -F'= ' '/^ANSIBLE_PIPELINING/{print $2}'), forks=$(ansible-config dump 2>/dev/null | awk -F'= ' '/^DEFAULT_FORKS/{print $2}'); rounds per variant: $ROUNDS, alternating ours / reference"
  echo
  probe report "$TMP/rounds.jsonl" "$TARGET"
  echo
  echo "Total benchmark time: $(secs "$(now)" "$T_START") s."
} >"$TMP/report.md"
cp "$TMP/report.md" "$OUT"
cp "$TMP/rounds.jsonl" "${OUT%.md}.jsonl"
cat "$TMP/report.md"
say "report written to $OUT (raw rounds: ${OUT%.md}.jsonl)"

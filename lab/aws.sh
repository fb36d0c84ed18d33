#!/usr/bin/env bash
# The lab's offline AWS endpoint: moto in server mode (S3, KMS, SNS, Route53,
# ...) listening on the lab network's gateway address so the control node and
# every container reach it at the same URL (rtx_dr_aws_endpoint_url).
# Usage: lab/aws.sh start|stop|status [HOST] [PORT]
source "$(dirname "$0")/common.sh"
action="${1:-status}"
host="${2:-${LAB_AWS_HOST:-172.30.77.1}}"
port="${3:-${LAB_AWS_PORT:-5000}}"
pidfile="$LAB_STATE/moto-$port.pid"
mkdir -p "$LAB_STATE"
venv_bin="$LAB_ROOT/.venv/bin"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "$action" in
  start)
    if running; then log "AWS endpoint already running (pid $(cat "$pidfile"))"; exit 0; fi
    log "starting moto server on http://$host:$port"
    nohup "$venv_bin/moto_server" -H "$host" -p "$port" >"$LAB_STATE/moto-$port.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 60); do
      if curl -fsS "http://$host:$port/moto-api/" >/dev/null 2>&1; then log "AWS endpoint is up"; exit 0; fi
      kill -0 "$(cat "$pidfile")" 2>/dev/null || die "moto server exited; see $LAB_STATE/moto-$port.log"
      sleep 0.5
    done
    die "moto server did not answer in 30 s; see $LAB_STATE/moto-$port.log"
    ;;
  stop)
    if running; then
      pid="$(cat "$pidfile")"
      log "stopping AWS endpoint (pid $pid)"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    ;;
  status)
    if running; then echo "running pid $(cat "$pidfile")"; else echo "stopped"; exit 1; fi
    ;;
  *) die "usage: $0 start|stop|status" ;;
esac

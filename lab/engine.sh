#!/usr/bin/env bash
# Make sure a Docker engine is available: use a running one, otherwise
# install Debian's docker.io (if missing) and start dockerd ourselves.
# The PID of an engine we started is recorded so lab-down/CI can stop it.
source "$(dirname "$0")/common.sh"
mkdir -p "$LAB_STATE"

if docker info >/dev/null 2>&1; then
  log "Docker engine already running"
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  log "installing docker.io and debootstrap from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io debootstrap >/dev/null
fi
log "starting dockerd"
nohup dockerd >"$LAB_STATE/dockerd.log" 2>&1 &
echo $! >"$LAB_STATE/dockerd.pid"
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && { log "Docker engine is up"; exit 0; }
  sleep 1
done
die "dockerd did not come up in 60 s; see $LAB_STATE/dockerd.log"

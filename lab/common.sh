# shellcheck shell=bash
# Shared settings of the rtx.dr lab. Sourced by the other lab/ scripts.
# Everything the lab creates carries the label rtx.dr.lab=<name> so cleanup
# removes only what the lab made, never anything else on the engine.
set -euo pipefail

LAB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB_STATE="${LAB_STATE:-$LAB_ROOT/.lab}"
LAB_IMAGE_REPO="${LAB_IMAGE_REPO:-rtx-dr-lab}"
LAB_SUITE="${LAB_SUITE:-bookworm}"
# Packages baked into the image. Changing this list changes the image tag,
# so a stale image is never reused.
LAB_PACKAGES="python3,python3-apt,python3-psycopg2,python3-boto3,postgresql-15,postgresql-client-15,sudo,procps,iproute2,systemd,systemd-sysv,dbus,acl,redis-server,curl,ca-certificates,openssl,less,iputils-ping"
# Installed with apt inside the new root after debootstrap: their maintainer
# scripts need a configured python3, which debootstrap's own ordering of the
# base set does not guarantee.
LAB_PACKAGES_EXTRA="python3-zstandard python3-lz4 pgbackrest zstd"
LAB_IMAGE_TAG="$(printf '%s|%s|%s' "$LAB_SUITE" "$LAB_PACKAGES $LAB_PACKAGES_EXTRA" "$(cat "$LAB_ROOT/lab/image.sh" 2>/dev/null | sha256sum)" | sha256sum | cut -c1-12)"
LAB_IMAGE="$LAB_IMAGE_REPO:$LAB_IMAGE_TAG"

log() { printf '[lab] %s\n' "$*" >&2; }
die() { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }

# The Debian mirror apt is configured with (deb822 or one-line format).
debian_mirror() {
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  fi
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

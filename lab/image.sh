#!/usr/bin/env bash
# Build the lab image locally (no registry is reachable): debootstrap of
# Debian bookworm from the configured mirror, then `docker import`.
# Cached by tag: a second run does nothing.
source "$(dirname "$0")/common.sh"

if docker image inspect "$LAB_IMAGE" >/dev/null 2>&1; then
  log "image $LAB_IMAGE is cached"
  exit 0
fi
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: run lab/engine.sh first"
rootfs="$(mktemp -d /var/tmp/rtx-dr-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
mirror="$(debian_mirror)"
log "debootstrap $LAB_SUITE from $mirror (about a minute)"
debootstrap --variant=minbase --include="$LAB_PACKAGES" "$LAB_SUITE" "$rootfs" "$mirror" >"$LAB_STATE/debootstrap.log" 2>&1 \
  || die "debootstrap failed; see $LAB_STATE/debootstrap.log"

log "installing $LAB_PACKAGES_EXTRA in the new root"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mount -t proc proc "$rootfs/proc"
trap 'umount "$rootfs/proc" 2>/dev/null || true; rm -rf "$rootfs"' EXIT
# shellcheck disable=SC2086
chroot "$rootfs" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $LAB_PACKAGES_EXTRA" \
  >>"$LAB_STATE/debootstrap.log" 2>&1 || die "installing $LAB_PACKAGES_EXTRA failed; see $LAB_STATE/debootstrap.log"
umount "$rootfs/proc"
: >"$rootfs/etc/resolv.conf"

# Container hygiene: no getty, no hostname file baked in, apt lists dropped,
# the Debian default cluster stays (the postgresql role configures it).
chroot "$rootfs" systemctl mask getty@tty1.service console-getty.service systemd-logind.service >/dev/null 2>&1 || true
# Services are enabled by the roles that own them (redis only on app hosts).
chroot "$rootfs" systemctl disable redis-server.service >/dev/null 2>&1 || true
rm -f "$rootfs/etc/hostname"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
log "importing as $LAB_IMAGE"
tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=docker' \
  --change "LABEL rtx.dr.lab=image" \
  - "$LAB_IMAGE" >/dev/null
docker tag "$LAB_IMAGE" "$LAB_IMAGE_REPO:latest"
log "image $LAB_IMAGE built"

#!/usr/bin/env bash
# Restore benchmark of rtx.dr: rtx.dr.backup_restore (mode=restore, target=backup) vs
# `pgbackrest restore --type=immediate`, each restoring a backup it made of the same database, from
# the same S3 endpoint, in the same run. It is bench/backup/run.sh with the restore variants (and the
# backup variants they restore): same container, data, moto + nginx endpoint, timing, RSS sampling,
# cleanup trap; see that script's header for all settings.
#
# Usage: bench/restore/run.sh          (or: make bench-restore)
#   BENCH_VARIANTS="…"  default: ours-zstd ours-lz4 pgbr-lz4 (the backups) and ours-restore-zstd
#                       ours-restore-zstd-tls ours-restore-zstd-noverify ours-restore-lz4 pgbr-restore-lz4
#   BENCH_OUT=FILE      report file (default bench/restore/results-<UTC date>.md)
#   BENCH_RUNS, BENCH_SCALE, BENCH_RANDOM_MB: as for bench/backup/run.sh (defaults 1, 70, 300)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export BENCH_VARIANTS="${BENCH_VARIANTS:-ours-zstd ours-lz4 pgbr-lz4 ours-restore-zstd ours-restore-zstd-tls ours-restore-zstd-noverify ours-restore-lz4 pgbr-restore-lz4}"
export BENCH_OUT="${BENCH_OUT:-$HERE/results-$(date -u +%Y-%m-%d).md}"
exec "$HERE/../backup/run.sh"

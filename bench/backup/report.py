"""Markdown report of bench/backup/run.sh.

Usage: python report.py RESULTS_TSV RAW_BYTES [RESTORE_TSV]
RESULTS_TSV columns: variant run wall_s stored_bytes rss_kb rss_detail internal_s
RESTORE_TSV columns: variant run wall_s read_bytes rss_kb rss_detail internal_s sync_s check
Per variant the median wall time and stored size of the runs and the highest peak RSS are shown.
Throughput is RAW_BYTES (the uncompressed pg_basebackup tar of the same database) / wall time,
for every row, so all rows share one denominator. The restore table (only when RESTORE_TSV has
rows) follows the backup table and its targets.
"""
import statistics
import sys

LABELS = [
    ("raw-disk", "pg_basebackup -Ft -X fetch -c fast, local disk, uncompressed (reference)"),
    ("raw-disk-zstd", "pg_basebackup -Ft -X fetch -c fast -Z client-zstd:3, local disk"),
    ("ours-zstd", "rtx.dr.pg_basebackup zstd:3, S3 plain HTTP, SSE-KMS"),
    ("ours-zstd-tls", "rtx.dr.pg_basebackup zstd:3, S3 via nginx TLS, SSE-KMS"),
    ("ours-lz4", "rtx.dr.pg_basebackup lz4, S3 plain HTTP, SSE-KMS"),
    ("ours-gzip6", "rtx.dr.pg_basebackup gzip:6, S3 plain HTTP, SSE-KMS"),
    ("pgbr-lz4", "pgBackRest 2.45 full, lz4, process-max 2, S3 via nginx TLS"),
    ("pgbr-gz6", "pgBackRest 2.45 full, gz level 6, process-max 2, S3 via nginx TLS"),
    ("pgbr-lz4-bundle", "pgBackRest 2.45 full, lz4, process-max 2, repo1-bundle=y (informational)"),
]
RESTORE_LABELS = [
    ("ours-restore-zstd", "rtx.dr.backup_restore of ours-zstd, S3 plain HTTP, SHA256 + pg_verifybackup"),
    ("ours-restore-zstd-tls", "rtx.dr.backup_restore of ours-zstd, S3 via nginx TLS, SHA256 + pg_verifybackup"),
    ("ours-restore-zstd-noverify", "rtx.dr.backup_restore of ours-zstd, S3 plain HTTP, verify_checksums=false "
                                   "(no pg_verifybackup)"),
    ("ours-restore-lz4", "rtx.dr.backup_restore of ours-lz4, S3 plain HTTP, SHA256 + pg_verifybackup"),
    ("pgbr-restore-lz4", "pgbackrest restore --type=immediate of pgbr-lz4, process-max 2, S3 via nginx TLS"),
]
MB = 1e6

path, raw_bytes = sys.argv[1], int(sys.argv[2])
rows = {}
ping = []
with open(path) as fh:
    for line in fh:
        if not line.strip():
            continue
        variant, run, wall, stored, rss, detail, internal = line.rstrip("\n").split("\t")
        if variant == "ansible-ping":
            ping.append(float(wall))
            continue
        rows.setdefault(variant, []).append(dict(
            run=int(run), wall=float(wall), stored=int(stored), rss=int(rss), detail=detail,
            internal=float(internal) if internal not in ("", "-") else None))

summary = {}
print("| tool / variant | runs | wall time s (median) | throughput MB/s (raw DB bytes / wall) "
      "| stored size MB | peak RSS MB | tool's own duration s | peak RSS by process |")
print("|---|---|---|---|---|---|---|---|")
for key, label in LABELS:
    if key not in rows:
        continue
    runs = rows[key]
    wall = statistics.median(r["wall"] for r in runs)
    stored = statistics.median(r["stored"] for r in runs)
    rss = max(r["rss"] for r in runs)
    internals = [r["internal"] for r in runs if r["internal"] is not None]
    internal = "%.2f" % statistics.median(internals) if internals else "-"
    detail = max(runs, key=lambda r: r["rss"])["detail"]
    summary[key] = dict(wall=wall, thr=raw_bytes / wall)
    walls = ", ".join("%.2f" % r["wall"] for r in runs)
    print("| %s | %d | %.2f%s | %.1f | %.1f | %.1f | %s | %s |" % (
        label, len(runs), wall, " (%s)" % walls if len(runs) > 1 else "", raw_bytes / wall / MB,
        stored / MB, rss / 1024.0, internal, detail))
print()
print("Raw DB bytes (uncompressed base.tar of the reference run): %.1f MB." % (raw_bytes / MB))
if ping:
    print("Fixed cost of one `ansible` ad-hoc call through community.docker.docker with become "
          "(`-m ansible.builtin.ping`, median of %d): %.2f s; it is included in every "
          "rtx.dr.pg_basebackup wall time above." % (len(ping), statistics.median(ping)))
print()
print("### Targets")
print()
print("| target | ours | reference | ratio | met? |")
print("|---|---|---|---|---|")


def wall_target(ours, theirs):
    if ours in summary and theirs in summary:
        a, b = summary[ours]["wall"], summary[theirs]["wall"]
        print("| wall time %s <= %s | %.2f s | %.2f s | %.2f | %s |" % (
            ours, theirs, a, b, a / b, "yes" if a <= b else "**no**"))


def thr_target(ours, ref="raw-disk"):
    if ours in summary and ref in summary:
        a, b = summary[ours]["thr"], summary[ref]["thr"]
        print("| throughput %s >= 90%% of %s | %.1f MB/s | %.1f MB/s | %.0f%% | %s |" % (
            ours, ref, a / MB, b / MB, 100.0 * a / b, "yes" if a >= 0.9 * b else "**no**"))


wall_target("ours-zstd", "pgbr-lz4")
wall_target("ours-zstd-tls", "pgbr-lz4")
wall_target("ours-gzip6", "pgbr-gz6")
wall_target("ours-lz4", "pgbr-lz4")
wall_target("ours-zstd", "pgbr-lz4-bundle")
for variant in ("ours-zstd", "ours-zstd-tls", "ours-lz4", "ours-gzip6"):
    thr_target(variant)


restore_path = sys.argv[3] if len(sys.argv) > 3 else None
restores = {}
if restore_path:
    with open(restore_path) as fh:
        for line in fh:
            if not line.strip():
                continue
            variant, run, wall, read, rss, detail, internal, sync, check = line.rstrip("\n").split("\t")
            restores.setdefault(variant, []).append(dict(
                run=int(run), wall=float(wall), read=int(read), rss=int(rss), detail=detail,
                internal=float(internal) if internal not in ("", "-") else None, sync=float(sync), check=check))
if restores:
    rsum = {}
    print()
    print("## Restore")
    print()
    print("Each restore variant restores the backup its backup variant made just before, in the same run, "
          "into an empty directory on the container's disk, without starting a server (recovery only to the "
          "end of the backup: `recovery_target = 'immediate'`). Wall time from the host around the whole "
          "command; \"sync after\" is a `sync -f` of the file system right after it (not in the wall time): "
          "what the tool left unflushed.")
    print()
    print("| tool / variant | runs | wall time s (median) | throughput MB/s (raw DB bytes / wall) "
          "| read from S3 MB | peak RSS MB | tool's own duration s | sync after s | wall + sync s "
          "| peak RSS by process | check of the restored directory |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, label in RESTORE_LABELS:
        if key not in restores:
            continue
        runs = restores[key]
        wall = statistics.median(r["wall"] for r in runs)
        sync = statistics.median(r["sync"] for r in runs)
        total = statistics.median(r["wall"] + r["sync"] for r in runs)
        read = statistics.median(r["read"] for r in runs)
        rss = max(r["rss"] for r in runs)
        internals = [r["internal"] for r in runs if r["internal"] is not None]
        internal = "%.2f" % statistics.median(internals) if internals else "-"
        worst = max(runs, key=lambda r: r["rss"])
        rsum[key] = dict(wall=wall, total=total)
        walls = ", ".join("%.2f" % r["wall"] for r in runs)
        print("| %s | %d | %.2f%s | %.1f | %.1f | %.1f | %s | %.2f | %.2f | %s | %s |" % (
            label, len(runs), wall, " (%s)" % walls if len(runs) > 1 else "", raw_bytes / wall / MB,
            read / MB, rss / 1024.0, internal, sync, total, worst["detail"], runs[-1]["check"]))
    print()
    if ping:
        print("The fixed cost of one `ansible` ad-hoc call (%.2f s, above) is in every rtx.dr.backup_restore "
              "wall time too." % statistics.median(ping))
        print()
    print("### Restore targets")
    print()
    print("| target | ours | reference | ratio | met? |")
    print("|---|---|---|---|---|")

    def restore_target(ours, theirs, field="wall", what="wall time", note=""):
        if ours in rsum and theirs in rsum:
            a, b = rsum[ours][field], rsum[theirs][field]
            print("| %s %s <= %s%s | %.2f s | %.2f s | %.2f | %s |" % (
                what, ours, theirs, note, a, b, a / b, "yes" if a <= b else "**no**"))

    restore_target("ours-restore-zstd", "pgbr-restore-lz4")
    restore_target("ours-restore-zstd-tls", "pgbr-restore-lz4")
    restore_target("ours-restore-lz4", "pgbr-restore-lz4")
    for variant in ("ours-restore-zstd", "ours-restore-zstd-tls", "ours-restore-lz4"):
        restore_target(variant, "pgbr-restore-lz4", "total", "wall + sync", " (informational)")

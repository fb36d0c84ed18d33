"""Report of bench/wal/run.sh: markdown tables from the per-variant records and the 1-second samples.

Usage: python report.py RESULTS.jsonl ARCHIVE_TIMEOUT_S SEGMENT_BYTES

Definitions (t = sample time; one sample per second from psql \\watch 1 inside the container):
- completed(t): segments entirely written = floor(pg_current_wal_lsn / seg) - 1 and below;
  archived(t): the segment number of pg_stat_archiver.last_archived_wal.
- backlog (segments): the .ready files in pg_wal/archive_status (pg_ls_archive_statusdir()), what
  rtx.dr.wal_archive_status reports as lag segments.
- queue wait (s): age of the oldest complete segment not yet archived = t - the first sample at which it was
  complete (0 when archived(t) >= completed(t)).
- WAL exposure (s): age of the oldest WAL not yet in the archive = t - the last sample before the first byte of segment
  archived(t)+1 was written (an upper bound, <= 1 s high); this is the data a loss of the server at t would lose
  (the RPO at t), and what "archive lag <= archive_timeout" has to bound.
- module lag (s): rtx.dr.wal_archive_status's "seconds" = t - last_archived_time while anything is pending.

Streaming exposure (ours-stream; streamwatch.py on the host every 0.5 s, pg_current_wal_lsn() every 0.1 s in the
container): at each watcher sample t (the time its last S3 response arrived), covered(t) = max(covers-lsn of the
newest object under <prefix>/wal-stream/, end of the highest segment under <prefix>/wal/). exposure(t) = 0 when the
primary's LSN at t (last 0.1 s sample) is <= covered(t), else t - the last 0.1 s sample whose LSN was <= covered(t):
the age of the oldest WAL not in S3 (an upper bound, <= 0.1 s high). Under load (WAL written continuously) this is
"t - the time the primary's LSN reached covers-lsn"; idle it is 0 instead of growing while nothing is missing.
"""
import json
import os
import sys

results_path, archive_timeout, seg = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
NAMES = {
    "ours": "rtx.dr WAL agent `push` (archive_command of backup_schedule), push_batch 1, zstd, S3 plain HTTP",
    "ours-batch": "rtx.dr WAL agent `push` with push_batch/push_parallel (walspool.py), zstd, S3 plain HTTP",
    "pgbr-sync": "pgBackRest 2.45 `archive-push`, synchronous, zst, S3 via nginx TLS",
    "pgbr-async": "pgBackRest 2.45 `archive-push`, archive-async=y process-max=2, zst, S3 via nginx TLS",
    "ours-stream": "rtx.dr WAL agent `push` as ours-batch + streaming mode (pg_receivewal + stream-upload), zstd, "
                   "S3 plain HTTP",
}


def local(path):
    """A path of the record; when it is gone (the run's temp dir), the same file next to the results file."""
    if path and not os.path.exists(path):
        return os.path.join(os.path.dirname(os.path.abspath(results_path)), os.path.basename(path))
    return path


def segno(name):
    if len(name) == 24 and all(c in "0123456789ABCDEF" for c in name):
        return int(name[8:16], 16) * 256 + int(name[16:24], 16)
    return None


def load_samples(path):
    rows = []
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 8:
            continue
        try:
            t, lsn = float(parts[0]), int(parts[1])
        except ValueError:
            continue
        rows.append(dict(t=t, lsn=lsn, count=int(parts[2]), last=parts[3],
                         last_time=None if parts[4] == "-" else float(parts[4]),
                         failed=int(parts[5]), ready=int(parts[7])))
    return rows


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def fmt(x, d=1):
    return "-" if x is None else ("%.*f" % (d, x))


def analyse(rec):
    rows = load_samples(local(rec["samples"]))
    complete_seen = {}   # segno -> first sample time at which it was complete
    started_before = {}  # segno -> last sample time before its first byte was seen
    archived = None
    prev = None
    for r in rows:
        completed = r["lsn"] // seg - 1
        s = segno(r["last"])
        if s is not None:
            archived = s
        r["archived"] = archived
        r["completed"] = completed
        for k in range(completed - 3, completed + 1):
            complete_seen.setdefault(k, r["t"])
        current = (r["lsn"] - 1) // seg if r["lsn"] % seg else None  # segment holding data being written
        if current is not None:
            for k in range(current - 3, current + 1):
                started_before.setdefault(k, prev["t"] if prev else r["t"])
        prev = r
    for r in rows:
        a = r["archived"]
        if a is None:
            r["wait"] = r["exposure"] = r["module"] = None
            continue
        r["wait"] = (r["t"] - complete_seen.get(a + 1, r["t"])) if r["completed"] > a else 0.0
        data_after = r["lsn"] > (a + 1) * seg
        r["exposure"] = (r["t"] - started_before.get(a + 1, r["t"])) if data_after else 0.0
        pending = r["ready"] > 0 or ((r["lsn"] - 1) // seg > a)
        r["module"] = (r["t"] - r["last_time"]) if pending and r["last_time"] else 0.0

    def phase(t0, t1):
        return [r for r in rows if t0 <= r["t"] <= t1]

    load = phase(rec["t_load0"], rec["t_load1"])
    drain = phase(rec["t_load1"], rec["t_drain"])
    idle = phase(rec["t_drain"], rec["t_idle_end"])
    everything = phase(rec["t_load0"], rec["t_idle_end"])
    # Client data: from the load's start until the segment with the last commit is archived. After that, what is not
    # archived is WAL no client wrote (e.g. a running-xacts record of ~100 bytes after the last switch, which PostgreSQL
    # deliberately does not switch out for archive_timeout): not counted as exposure.
    client = phase(rec["t_load0"], rec["t_last"])
    dur = rec["t_load1"] - rec["t_load0"]
    gen_segments = rec["lsn1"] // seg - rec["lsn0"] // seg
    arch_load = (load[-1]["archived"] - load[0]["archived"]) if len(load) > 1 else None
    # Archive throughput while the archiver had work queued (backlog >= 1 at the start of the interval).
    busy_t = busy_n = 0.0
    for a, b in zip(everything, everything[1:]):
        if a["ready"] >= 1 and a["archived"] is not None and b["archived"] is not None:
            busy_t += b["t"] - a["t"]
            busy_n += b["archived"] - a["archived"]
    end = min(rows, key=lambda r: abs(r["t"] - rec["t_load1"])) if rows else None
    # Completeness against the archive listing.
    found = set()
    for line in open(local(rec["listing"])):
        s = segno(line.split("\t")[0])
        if s is not None and line.startswith("00000001"):
            found.add(s)
    expected = set(range(rec["first_seg"], rec["last_seg"] + 1))
    missing = sorted(expected - found)
    info = None
    if rec.get("pgbr_info"):
        try:
            st = json.load(open(local(rec["pgbr_info"])))[0]
            arch = st["archive"][0]
            info = "info: archive %s..%s" % (arch.get("min"), arch.get("max"))
        except Exception as exc:  # pylint: disable=broad-exception-caught
            info = "info unreadable: %s" % exc
    return dict(
        rows=len(rows), tps=("%.0f" % float(rec["tps"])) if rec.get("tps") else "-", dur=dur, gen=gen_segments,
        wal_mib=(rec["lsn1"] - rec["lsn0"]) / 1048576.0,
        gen_rate=gen_segments / dur if dur else None,
        arch_rate=(arch_load / dur) if arch_load is not None and dur else None,
        busy_rate=(busy_n / busy_t) if busy_t >= 5 else None, busy_t=busy_t,
        backlog_max=max((r["ready"] for r in load), default=None),
        backlog_p95=pct([r["ready"] for r in load], 95), backlog_end=end["ready"] if end else None,
        wait_max=max((r["wait"] for r in load if r["wait"] is not None), default=None),
        wait_p95=pct([r["wait"] for r in load if r["wait"] is not None], 95),
        wait_end=end["wait"] if end else None,
        exp_max=max((r["exposure"] for r in load if r["exposure"] is not None), default=None),
        exp_p95=pct([r["exposure"] for r in load if r["exposure"] is not None], 95),
        exp_end=end["exposure"] if end else None,
        mod_max=max((r["module"] for r in load if r["module"] is not None), default=None),
        exp_all_max=max((r["exposure"] for r in client if r["exposure"] is not None), default=None),
        wait_all_max=max((r["wait"] for r in everything if r["wait"] is not None), default=None),
        drain_exp_max=max((r["exposure"] for r in drain if r["exposure"] is not None), default=None),
        idle_exp_max=max((r["exposure"] for r in idle if r["exposure"] is not None and r["t"] <= rec["t_last"]),
                         default=0.0),
        idle_wait_max=max((r["wait"] for r in idle if r["wait"] is not None), default=None),
        idle_mod_max=max((r["module"] for r in idle if r["module"] is not None), default=None),
        idle_backlog_max=max((r["ready"] for r in idle), default=None),
        idle_s=rec["t_idle_end"] - rec["t_drain"],
        drain=(rec["t_drain"] - rec["t_load1"]) if rec["drained"] else None,
        last=(rec["t_last"] - rec["t_load1"]) if rec["last_ok"] else None,
        failed=rec["failed_delta"], expected=len(expected), found=len(expected & found), missing=missing,
        fetched=rec["fetched_last"], info=info, load0=rec["load0"], load1=rec["load1"],
        segs="%08X..%08X" % (rec["first_seg"], rec["last_seg"]),
    )


def stream_analyse(rec):
    """Streaming exposure of a record with "stream" (see the module docstring)."""
    import bisect  # pylint: disable=import-outside-toplevel
    st = rec["stream"]
    fast = []
    for line in open(local(st["fast"])):
        parts = line.rstrip("\n").split("\t")
        try:
            fast.append((float(parts[0]), int(parts[1])))
        except (ValueError, IndexError):
            continue
    fast.sort()
    times = [f[0] for f in fast]
    lsns = [f[1] for f in fast]
    for i in range(1, len(lsns)):  # monotonic (it is; guards bisect)
        lsns[i] = max(lsns[i], lsns[i - 1])
    samples = []
    errors = 0
    best = {}  # segment number -> newest covers-lsn seen of its partial
    for line in open(local(st["watch"])):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 6:
            continue
        t0, t1, covers, archived = float(parts[0]), float(parts[1]), int(parts[2]), int(parts[4])
        if parts[5] != "-":
            errors += 1
            continue
        # A partial of a segment beyond the first one not archived yet does not cover that segment's tail: count
        # only the newest covers-lsn seen of a segment up to archived + 1 (the uploader pushes a completed segment
        # while it uploads the next partial, so the next partial can land first).
        name = parts[3]
        pseg = int(name[8:16], 16) * (0x100000000 // seg) + int(name[16:24], 16) if len(name) >= 24 else None
        if covers >= 0 and pseg is not None:
            best[pseg] = max(best.get(pseg, -1), covers)
            covers = max((c for s_, c in best.items() if s_ <= archived + 1), default=-1)
        covered = max(covers, (archived + 1) * seg if archived >= 0 else -1)
        k = bisect.bisect_right(times, t1) - 1  # last fast sample at or before t1
        if k < 0 or covered < 0:
            continue
        if lsns[k] <= covered:
            exp = 0.0
        else:
            j = bisect.bisect_right(lsns, covered) - 1  # last fast sample with LSN <= covered
            exp = t1 - times[j] if j >= 0 else None
        samples.append(dict(t=t1, query=t1 - t0, covers=covers, covered=covered, exposure=exp,
                            behind=max(0, lsns[k] - covered)))
    # Age of each new covers-lsn value when the watcher first saw it, and the period between new values.
    first_seen = []
    seen = set()
    for smp in samples:
        if smp["covers"] >= 0 and smp["covers"] not in seen:
            seen.add(smp["covers"])
            j = bisect.bisect_left(lsns, smp["covers"])  # first fast sample with LSN >= covers
            if j < len(lsns):
                first_seen.append((smp["t"], smp["t"] - times[j]))

    def stats(rows):
        vals = [r["exposure"] for r in rows if r["exposure"] is not None]
        return (max(vals) if vals else None, pct(vals, 95), pct(vals, 50), len(vals))

    load = [x for x in samples if rec["t_load0"] <= x["t"] <= rec["t_load1"]]
    after = [x for x in samples if rec["t_load1"] < x["t"] <= rec["t_idle_end"]]
    in_load = [f for f in first_seen if rec["t_load0"] <= f[0] <= rec["t_load1"]]
    periods = [b[0] - a[0] for a, b in zip(in_load, in_load[1:])]
    return dict(load=stats(load), after=stats(after), errors=errors,
                behind_max=max((x["behind"] for x in load), default=None),
                query=pct([x["query"] for x in samples], 50), query_max=max((x["query"] for x in samples), default=None),
                age_med=pct([f[1] for f in in_load], 50), age_max=max((f[1] for f in in_load), default=None),
                period_med=pct(periods, 50), period_p95=pct(periods, 95), uploads=len(in_load),
                interval=st.get("interval"))


recs = [json.loads(line) for line in open(results_path) if line.strip()]
res = [(r, analyse(r)) for r in recs]

print("| variant | pgbench tps | WAL during load: segments (MiB/s) | generated seg/s | archived seg/s during load "
      "| archive seg/s while backlogged | backlog segments max / p95 / at load end | queue wait s max / p95 / at load end "
      "| WAL exposure s max / p95 / at load end | drain after load s | last commit archived after s "
      "| idle: max queue wait / backlog / wal_archive_status lag s | failed_count | segments in the archive |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for rec, a in res:
    print("| %s | %s | %d (%.1f) | %s | %s | %s | %s / %s / %s | %s / %s / %s | %s / %s / %s | %s | %s | %s / %s / %s | %d | %d of %d%s |" % (
        NAMES.get(rec["variant"], rec["variant"]), a["tps"], a["gen"], a["wal_mib"] / a["dur"],
        fmt(a["gen_rate"], 2), fmt(a["arch_rate"], 2),
        fmt(a["busy_rate"], 2) + ("" if a["busy_rate"] is not None else " (never backlogged %.0f s)" % a["busy_t"]),
        a["backlog_max"], fmt(a["backlog_p95"], 0), a["backlog_end"],
        fmt(a["wait_max"]), fmt(a["wait_p95"]), fmt(a["wait_end"]),
        fmt(a["exp_max"]), fmt(a["exp_p95"]), fmt(a["exp_end"]),
        fmt(a["drain"]) if a["drain"] is not None else "**not drained**",
        fmt(a["last"]) if a["last"] is not None else "**not archived**",
        fmt(a["idle_wait_max"]), a["idle_backlog_max"], fmt(a["idle_mod_max"]),
        a["failed"], a["found"], a["expected"], "" if not a["missing"] else " **missing %d**" % len(a["missing"])))
print()
print("Target: archive lag <= archive_timeout (%.0f s) always. Checked on the WAL exposure (age of the oldest client WAL "
      "not yet in the archive, from the load's start until its last commit is archived) and on the queue wait of complete "
      "segments (load, drain and idle):" % archive_timeout)
print()
print("| variant | max WAL exposure s | max queue wait s | last commit archived after s | idle max exposure s | "
      "exposure <= %.0f s always? | queue wait <= %.0f s always? |" % (archive_timeout, archive_timeout))
print("|---|---|---|---|---|---|---|")
for rec, a in res:
    def met(x):
        if x is None:
            return "-"
        if x <= archive_timeout:
            return "met"
        if x <= archive_timeout + 1:
            return "within the 1 s sampling"
        return "**no** (+%.1f s)" % (x - archive_timeout)
    print("| %s | %s | %s | %s | %s | %s | %s |" % (
        rec["variant"], fmt(a["exp_all_max"]), fmt(a["wait_all_max"]), fmt(a["last"]), fmt(a["idle_exp_max"]),
        met(a["exp_all_max"]), met(a["wait_all_max"])))
streamed = [(rec, a, stream_analyse(rec)) for rec, a in res if rec.get("stream")]
if streamed:
    print()
    print("Streaming exposure (target: archive lag <= 2 s in streaming mode): age of the oldest WAL not in S3 "
          "(neither in the newest <prefix>/wal-stream/ partial's covers-lsn nor in a segment under <prefix>/wal/), "
          "sampled from the host every 0.5 s against the primary's LSN every 0.1 s:")
    print()
    print("| variant | stream_interval s | pgbench tps | exposure during load s max / p95 / median (samples) "
          "| after the load (drain + idle) s max / p95 / median (samples) | new covers-lsn seen during load: count, "
          "period s median / p95 | age of a covers-lsn when first seen s median / max | max WAL not in S3 during load "
          "KiB | watcher query s median / max | <= 2 s always? |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rec, a, sa in streamed:
        worst = max([x for x in (sa["load"][0], sa["after"][0]) if x is not None], default=None)
        verdict = "-" if worst is None else ("met" if worst <= 2.0 else "**no** (max %.1f s)" % worst)
        print("| %s | %s | %s | %s / %s / %s (%d) | %s / %s / %s (%d) | %d, %s / %s | %s / %s | %s | %s / %s | %s |" % (
            rec["variant"], sa["interval"], a["tps"],
            fmt(sa["load"][0], 2), fmt(sa["load"][1], 2), fmt(sa["load"][2], 2), sa["load"][3],
            fmt(sa["after"][0], 2), fmt(sa["after"][1], 2), fmt(sa["after"][2], 2), sa["after"][3],
            sa["uploads"], fmt(sa["period_med"], 2), fmt(sa["period_p95"], 2),
            fmt(sa["age_med"], 2), fmt(sa["age_max"], 2),
            "-" if sa["behind_max"] is None else "%.0f" % (sa["behind_max"] / 1024.0),
            fmt(sa["query"], 3), fmt(sa["query_max"], 3), verdict))
    for rec, a, sa in streamed:
        if sa["errors"]:
            print()
            print("(%s: %d watcher samples failed and are left out)" % (rec["variant"], sa["errors"]))
print()
print("Per variant:")
print()
for rec, a in res:
    print("- **%s**: `archive_command = '%s'`; segments %s (%d expected, %d listed in the archive%s); last one fetched "
          "back: %s%s; %d samples; load average %s at the start of the load, %s at its end; "
          "rtx.dr.wal_archive_status-style lag (now - last_archived_time while pending) max %s s during the load, "
          "%s s idle (%.0f s idle window)."
          % (rec["variant"], rec["archive_command"], a["segs"], a["expected"], a["found"],
             "" if not a["missing"] else ", missing: " + ", ".join("%08X" % m for m in a["missing"][:20]),
             a["fetched"], "; " + a["info"] if a["info"] else "", a["rows"], a["load0"], a["load1"],
             fmt(a["mod_max"]), fmt(a["idle_mod_max"]), a["idle_s"]))

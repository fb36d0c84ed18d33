# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The weekly and monthly DR reports, from the DR schema (read-only).

Used by ``rtx.dr.dr_report``. Plain Python in three steps:

1. :func:`fetch` reads the period's rows of the DR schema (``backup_history``, ``verification_history``,
   ``restore_history``, ``failover_history``) and the health checks aggregated by the server
   (``health_check_history`` can hold millions of rows: only counts come back).
2. :func:`aggregate` turns them into one JSON-serialisable dict: backup success rate, backups per day and
   sizes, verification results, restore drills with RTO/RPO, failovers/switchovers/region failovers with RTO
   and data loss, health-check uptime, and every objective met, missed or not measured
   (:func:`evaluate_objectives` against ``rtx_dr_objectives``).
3. :func:`render_markdown` and :func:`render_html` (with :func:`render_svg`, a small inline SVG chart of
   backup duration and size over time: no JavaScript, nothing fetched) render it. Every value that comes from
   the database is escaped (HTML/XML entities; in Markdown also table pipes and line breaks).

Definitions (also in docs/runbooks/dr_report.md):

- Backup success rate = complete / (complete + failed) of the physical and logical backups STARTED in the
  period, as in the ``backup_metrics`` view; running and aborted runs are counted but not rated. No rated
  backup = no rate = the objective is missed ("no backups in this period").
- Uptime of a host's check = samples with status ok or warn / all samples of that host and check.
  Service uptime of a check = minutes in which at least one host passed it / minutes with a sample.
- RTO of a restore = ``restore_history.rto_seconds``; of a failover or switchover = ``duration_seconds``
  (start to the new primary recorded as accepting writes); of a region failover = the region RTO recorded in
  ``details.region.rto_seconds`` (applications healthy in the target region), else ``duration_seconds``.
- Data loss (RPO) of a restore = ``achieved_rpo_seconds``; of a failover = 0 s when ``data_loss_bytes`` is 0,
  the region estimate ``details.region.estimated_loss_seconds`` when recorded, else unknown (bytes shown).
"""

from __future__ import annotations

import datetime
import html
import json
import os
import re
from decimal import Decimal

from ansible_collections.rtx.dr.plugins.module_utils.catalog import parse_time
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import close_quietly
from ansible_collections.rtx.dr.plugins.module_utils.postgres import postgres_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_all
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_one
from ansible_collections.rtx.dr.plugins.module_utils.postgres import quote_ident

UTC = datetime.timezone.utc
PERIODS = ("weekly", "monthly")
BACKUP_KINDS = ("physical", "logical")
FAILOVER_KINDS = ("failover", "switchover", "region")
EVENT_KINDS = ("restore",) + FAILOVER_KINDS
MET, MISSED, NOT_MEASURED = "met", "missed", "not measured"
#: Longest error or message text kept from a row.
TEXT_LIMIT = 300

# The seed's recovery objectives (DR_IMPLEMENTATION_SUMMARY.md, "Recovery Objectives"), in the layout of the
# inventory variable rtx_dr_objectives (also read by the drills, module_utils/drill.py): component ->
# {rto, rpo, availability}; rto/rpo in seconds or as durations ('15m', '30s'), availability in percent.
DEFAULT_OBJECTIVES = {
    "trading_engine": {"rto": "5m", "rpo": "30s", "availability": 99.95},
    "market_data_feed": {"rto": "10m", "rpo": "1m", "availability": 99.95},
    "order_routing": {"rto": "5m", "rpo": "30s", "availability": 99.95},
    "database": {"rto": "15m", "rpo": "1m", "availability": 99.9},
    "websocket": {"rto": "10m", "rpo": "5m", "availability": 99.9},
    "admin_panel": {"rto": "1h", "rpo": "15m", "availability": 99.0},
}
# What measures a component when its objectives do not say (keys measured_by, health_checks): the DR events
# whose RTO and data loss count for it, and the health checks whose service uptime is its availability. As for
# the drills: a restore measures the database, a failover, switchover or region failover the database and the
# application writing again (the trading engine).
DEFAULT_MEASURED_BY = {
    "database": ["restore", "failover", "switchover", "region"],
    "trading_engine": ["failover", "switchover", "region"],
}
DEFAULT_HEALTH_CHECKS = {"database": ["postgresql"], "trading_engine": ["api"], "websocket": ["websocket"]}
# The seed's success metrics ("Backup success rate > 99 %", "Restore test success 100 %", "Health check uptime
# > 99.9 %"); met when the measured percentage is at least the target.
DEFAULT_TARGETS = {
    "backup_success_rate_percent": 99.0,
    "verification_pass_percent": 100.0,
    "restore_drill_success_percent": 100.0,
    "drill_pass_percent": 100.0,
    "health_check_uptime_percent": 99.9,
}

# The options of rtx.dr.dr_report beyond the postgres common ones.
REPORT_OPTIONS = dict(
    period=dict(type="str", default="weekly", choices=list(PERIODS)),
    end=dict(type="str"),
    schema=dict(type="str", default="dr"),
    objectives=dict(type="dict"),
    targets=dict(type="dict"),
    cluster_name=dict(type="str"),
    output_dir=dict(type="path"),
    max_rows=dict(type="int", default=200),
)

#: Keys of the report dict (:func:`aggregate`).
REPORT_KEYS = ("title", "cluster", "period", "generated_at", "backups", "verifications", "restores", "failovers",
               "health", "drills", "objectives", "objectives_config", "summary", "warnings")


def report_argument_spec():
    """argument_spec of rtx.dr.dr_report: the postgres common options plus :data:`REPORT_OPTIONS`."""
    spec = postgres_common_argument_spec()
    spec.update(REPORT_OPTIONS)
    return spec


# --------------------------------------------------------------------------
# Period
# --------------------------------------------------------------------------

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_end(value, now=None):
    """The exclusive end of the period (aware UTC datetime) from ``end``.

    Empty: ``now``. A date (``2026-11-29``): the end of that day (the next midnight UTC), so the period
    includes it. A date and time (ISO 8601, ``Z`` or an offset; without one UTC is assumed): that instant.
    """
    now = now or datetime.datetime.now(UTC)
    if value is None or str(value).strip() == "":
        return now.astimezone(UTC)
    text = str(value).strip()
    try:
        if _DATE_RE.match(text):
            day = datetime.date.fromisoformat(text)
            return datetime.datetime(day.year, day.month, day.day, tzinfo=UTC) + datetime.timedelta(days=1)
        return parse_time(text)
    except ValueError:
        raise InvalidValueError(
            "Invalid end %r: expected an ISO 8601 date (2026-11-29) or date and time (2026-11-29T06:00:00Z)"
            % (value,), hint="Leave it empty for a report that ends now.") from None


def _month_before(moment):
    year, month = (moment.year, moment.month - 1) if moment.month > 1 else (moment.year - 1, 12)
    next_first = datetime.date(moment.year, moment.month, 1)
    days_in_month = (next_first - datetime.date(year, month, 1)).days
    return moment.replace(year=year, month=month, day=min(moment.day, days_in_month))


def period_window(period, end=None, now=None):
    """``(start, end)``: the 7 days (weekly) or the calendar month (monthly) before ``end`` (:func:`parse_end`)."""
    if period not in PERIODS:
        raise InvalidValueError("Invalid period %r: expected one of %s" % (period, ", ".join(PERIODS)))
    stop = parse_end(end, now)
    start = stop - datetime.timedelta(days=7) if period == "weekly" else _month_before(stop)
    return start, stop


# --------------------------------------------------------------------------
# Reading the DR schema
# --------------------------------------------------------------------------

TABLES = ("backup_history", "verification_history", "restore_history", "failover_history", "health_check_history",
          "drill_history")

SQL_TABLES = ("SELECT " + ", ".join(
    "pg_catalog.to_regclass(%%(schema)s || '.%s') IS NOT NULL AS %s" % (table, table) for table in TABLES))

SQL_BACKUPS = """
SELECT backup_id, kind, status, host, started_at, finished_at, duration_seconds, size_raw_bytes,
       size_compressed_bytes, compression, left(error, {limit}) AS error
  FROM {schema}.backup_history
 WHERE started_at >= %(start)s AND started_at < %(end)s
 ORDER BY started_at, backup_id
"""

SQL_VERIFICATIONS = """
SELECT backup_id, kind, verified_at, status, findings, objects_checked, bytes_read, duration_seconds, host
  FROM {schema}.verification_history
 WHERE verified_at >= %(start)s AND verified_at < %(end)s
 ORDER BY verified_at, id
"""

SQL_RESTORES = """
SELECT restore_id, backup_id, target_type, left(target_value, {limit}) AS target_value, destination_host,
       verify_only, started_at, finished_at, status, rto_seconds, achieved_rpo_seconds, left(error, {limit}) AS error
  FROM {schema}.restore_history
 WHERE started_at >= %(start)s AND started_at < %(end)s
 ORDER BY started_at, restore_id
"""

SQL_FAILOVERS = """
SELECT failover_id, kind, old_primary, new_primary, old_timeline, new_timeline, data_loss_bytes, started_at,
       finished_at, duration_seconds, status, operator, left(reason, {limit}) AS reason,
       details #>> '{{region,rto_seconds}}' AS region_rto_seconds,
       details #>> '{{region,estimated_loss_seconds}}' AS region_loss_seconds,
       coalesce(details #>> '{{region,loss_is_lower_bound}}', details ->> 'loss_is_lower_bound') AS loss_is_lower_bound
  FROM {schema}.failover_history
 WHERE started_at >= %(start)s AND started_at < %(end)s
 ORDER BY started_at, failover_id
"""

SQL_DRILLS = """
SELECT drill_id, kind, started_at, finished_at, status, rto_seconds, rpo_seconds, lost_commits, objectives_met,
       operator, left(error, {limit}) AS error
  FROM {schema}.drill_history
 WHERE started_at >= %(start)s AND started_at < %(end)s
 ORDER BY started_at, drill_id
"""

SQL_HEALTH_HOSTS = """
SELECT host, check_name, count(*) AS samples,
       count(*) FILTER (WHERE status = 'ok') AS ok,
       count(*) FILTER (WHERE status = 'warn') AS warn,
       count(*) FILTER (WHERE status = 'critical') AS critical,
       count(*) FILTER (WHERE status NOT IN ('ok', 'warn', 'critical')) AS unknown,
       min("time") AS first_seen, max("time") AS last_seen
  FROM {schema}.health_check_history
 WHERE "time" >= %(start)s AND "time" < %(end)s
 GROUP BY host, check_name
 ORDER BY host, check_name
"""

SQL_HEALTH_SERVICE = """
SELECT check_name, count(*) AS minutes, count(*) FILTER (WHERE up) AS minutes_up
  FROM (SELECT check_name, pg_catalog.date_trunc('minute', "time") AS minute,
               bool_or(status IN ('ok', 'warn')) AS up
          FROM {schema}.health_check_history
         WHERE "time" >= %(start)s AND "time" < %(end)s
         GROUP BY check_name, pg_catalog.date_trunc('minute', "time")) AS per_minute
 GROUP BY check_name
 ORDER BY check_name
"""


def fetch(conn, schema, start, end):
    """Every row :func:`aggregate` needs for ``[start, end)``, plus warnings for missing tables.

    Returns ``({'backups': [...], 'verifications': [...], 'restores': [...], 'failovers': [...],
    'drills': [...], 'health_hosts': [...], 'health_service': [...]}, warnings)``. Only reads.
    ``drill_history`` (written by playbooks/dr_drill.yml) is optional.
    """
    name = quote_ident(schema, "schema")
    present = query_one(conn, SQL_TABLES, {"schema": name}) or {}
    if not present.get("backup_history"):
        raise InvalidValueError(
            "The DR schema %s has no backup_history table in this database" % schema,
            hint="Connect to the database that holds the DR schema (login_db, rtx by default in the playbooks) "
                 "on the current primary, or create the schema with the rtx.dr.dr_schema role (site.yml).")
    args = {"start": start, "end": end}
    raw, warnings = {}, []
    plan = (("backups", "backup_history", (SQL_BACKUPS,)),
            ("verifications", "verification_history", (SQL_VERIFICATIONS,)),
            ("restores", "restore_history", (SQL_RESTORES,)),
            ("failovers", "failover_history", (SQL_FAILOVERS,)),
            ("drills", "drill_history", (SQL_DRILLS,)),
            ("health", "health_check_history", (SQL_HEALTH_HOSTS, SQL_HEALTH_SERVICE)))
    for key, table, statements in plan:
        if not present.get(table):
            if table != "drill_history":
                warnings.append("%s.%s does not exist (older DR schema?): its section is empty" % (schema, table))
            rows = [[] for dummy in statements]
        else:
            rows = [query_all(conn, sql.format(schema=name, limit=TEXT_LIMIT), args) for sql in statements]
        if key == "health":
            raw["health_hosts"], raw["health_service"] = rows
        else:
            raw[key] = rows[0]
    return raw, warnings


# --------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------


def _num(value):
    """int/float for numbers from the driver (Decimal, str of a number); None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def iso(value):
    """``2026-11-27T03:15:00Z`` (seconds precision) or None."""
    moment = parse_time(value)
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value, limit=TEXT_LIMIT):
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _pct(part, whole):
    return None if not whole else round(100.0 * part / whole, 3)


def _round(value, digits=3):
    return None if value is None else round(float(value), digits)


def _duration(row):
    seconds = _num(row.get("duration_seconds"))
    if seconds is None and row.get("finished_at") is not None and row.get("started_at") is not None:
        seconds = (parse_time(row["finished_at"]) - parse_time(row["started_at"])).total_seconds()
    return _round(seconds)


def _days(start, end):
    day = start.date()
    last = (end - datetime.timedelta(microseconds=1)).date()
    days = []
    while day <= last:
        days.append(day.isoformat())
        day += datetime.timedelta(days=1)
    return days


def aggregate_backups(rows, start, end, max_rows):
    counted = [r for r in rows if r.get("kind") in BACKUP_KINDS]
    out = {"total": len(counted), "rated": 0, "success_rate": None, "wal_batches": len(rows) - len(counted)}
    for status in ("complete", "failed", "aborted", "running"):
        out[status] = sum(1 for r in counted if r.get("status") == status)
    out["rated"] = out["complete"] + out["failed"]
    out["success_rate"] = _pct(out["complete"], out["rated"])
    complete = [r for r in counted if r.get("status") == "complete"]
    out["bytes_raw"] = sum(_num(r.get("size_raw_bytes")) or 0 for r in complete)
    out["bytes_stored"] = sum(_num(r.get("size_compressed_bytes")) or 0 for r in complete)
    durations = [d for d in (_duration(r) for r in complete) if d is not None]
    out["duration_seconds_max"] = max(durations) if durations else None
    out["duration_seconds_avg"] = _round(sum(durations) / len(durations)) if durations else None
    out["by_kind"] = {}
    for kind in BACKUP_KINDS:
        of_kind = [r for r in counted if r.get("kind") == kind]
        ok = sum(1 for r in of_kind if r.get("status") == "complete")
        failed = sum(1 for r in of_kind if r.get("status") == "failed")
        out["by_kind"][kind] = {"total": len(of_kind), "complete": ok, "failed": failed,
                                "success_rate": _pct(ok, ok + failed)}
    per_day = dict((day, {"date": day, "total": 0, "complete": 0, "failed": 0, "other": 0, "bytes_stored": 0,
                          "bytes_raw": 0}) for day in _days(start, end))
    for row in counted:
        day = per_day.get(parse_time(row["started_at"]).date().isoformat())
        if day is None:
            continue
        day["total"] += 1
        status = row.get("status")
        key = status if status in ("complete", "failed") else "other"
        day[key] += 1
        if status == "complete":
            day["bytes_stored"] += _num(row.get("size_compressed_bytes")) or 0
            day["bytes_raw"] += _num(row.get("size_raw_bytes")) or 0
    out["per_day"] = list(per_day.values())
    items = [{"backup_id": _text(r.get("backup_id")), "kind": r.get("kind"), "status": r.get("status"),
              "host": _text(r.get("host")), "started_at": iso(r.get("started_at")),
              "finished_at": iso(r.get("finished_at")), "duration_seconds": _duration(r),
              "size_raw_bytes": _num(r.get("size_raw_bytes")), "size_compressed_bytes": _num(r.get("size_compressed_bytes")),
              "compression": _text(r.get("compression")), "error": _text(r.get("error"))} for r in counted]
    out["chart"] = [{"started_at": i["started_at"], "kind": i["kind"], "status": i["status"],
                     "duration_seconds": i["duration_seconds"], "size_compressed_bytes": i["size_compressed_bytes"],
                     "backup_id": i["backup_id"]} for i in items if i["status"] in ("complete", "failed")]
    out["failures"] = [i for i in items if i["status"] in ("failed", "aborted")]
    out["items"], out["items_omitted"] = _limit(items, max_rows)
    return out


def _limit(items, max_rows):
    """The newest ``max_rows`` items (all when max_rows <= 0) and how many were left out."""
    if max_rows is None or max_rows <= 0 or len(items) <= max_rows:
        return items, 0
    return items[-max_rows:], len(items) - max_rows


def aggregate_verifications(rows, max_rows):
    items = [{"backup_id": _text(r.get("backup_id")), "kind": r.get("kind"), "verified_at": iso(r.get("verified_at")),
              "status": r.get("status"), "findings": _num(r.get("findings")) or 0,
              "objects_checked": _num(r.get("objects_checked")), "bytes_read": _num(r.get("bytes_read")),
              "duration_seconds": _round(_num(r.get("duration_seconds"))), "host": _text(r.get("host"))} for r in rows]
    passed = sum(1 for i in items if i["status"] == "passed")
    latest = {}
    for item in items:
        latest[item["backup_id"]] = item["status"]
    out = {"total": len(items), "passed": passed, "failed": len(items) - passed, "pass_rate": _pct(passed, len(items)),
           "backups_verified": len(latest),
           "backups_failing_last": sorted(b for b, status in latest.items() if status != "passed"),
           "failures": [i for i in items if i["status"] != "passed"]}
    out["items"], out["items_omitted"] = _limit(items, max_rows)
    return out


def aggregate_restores(rows, max_rows):
    items = [{"restore_id": _text(r.get("restore_id")), "backup_id": _text(r.get("backup_id")),
              "target": _text("%s %s" % (r.get("target_type"), r.get("target_value") or "")).strip(),
              "host": _text(r.get("destination_host")), "verify_only": bool(r.get("verify_only")),
              "started_at": iso(r.get("started_at")), "finished_at": iso(r.get("finished_at")),
              "status": r.get("status"), "rto_seconds": _round(_num(r.get("rto_seconds"))),
              "rpo_seconds": _round(_num(r.get("achieved_rpo_seconds"))), "error": _text(r.get("error"))}
             for r in rows]
    done = [i for i in items if i["status"] in ("complete", "failed", "aborted")]
    complete = [i for i in done if i["status"] == "complete"]
    rtos = [i["rto_seconds"] for i in complete if i["rto_seconds"] is not None]
    out = {"total": len(items), "drills": sum(1 for i in items if i["verify_only"]), "complete": len(complete),
           "failed": len(done) - len(complete), "running": len(items) - len(done),
           "success_rate": _pct(len(complete), len(done)),
           "rto_seconds_max": max(rtos) if rtos else None,
           "rto_seconds_avg": _round(sum(rtos) / len(rtos)) if rtos else None}
    out["items"], out["items_omitted"] = _limit(items, max_rows)
    out["all"] = items
    return out


def _bool_text(value):
    return str(value).strip().lower() in ("true", "1", "yes")


def aggregate_failovers(rows, max_rows):
    items = []
    for r in rows:
        kind = r.get("kind")
        rto = _num(r.get("region_rto_seconds")) if kind == "region" else None
        loss_bytes = _num(r.get("data_loss_bytes"))
        loss_seconds = _num(r.get("region_loss_seconds")) if kind == "region" else None
        if loss_seconds is None and loss_bytes == 0 and not _bool_text(r.get("loss_is_lower_bound")):
            loss_seconds = 0
        items.append({"failover_id": _text(r.get("failover_id")), "kind": kind, "status": r.get("status"),
                      "old_primary": _text(r.get("old_primary")), "new_primary": _text(r.get("new_primary")),
                      "timelines": "%s -> %s" % (r.get("old_timeline"), r.get("new_timeline")),
                      "started_at": iso(r.get("started_at")), "finished_at": iso(r.get("finished_at")),
                      "rto_seconds": _round(rto if rto is not None else _duration(r)),
                      "data_loss_bytes": loss_bytes, "data_loss_seconds": _round(loss_seconds),
                      "operator": _text(r.get("operator")), "reason": _text(r.get("reason"))})
    out = {"total": sum(1 for i in items if i["kind"] in FAILOVER_KINDS),
           "rejoins": sum(1 for i in items if i["kind"] == "rejoin"), "by_kind": {}}
    for kind in FAILOVER_KINDS:
        of_kind = [i for i in items if i["kind"] == kind]
        rtos = [i["rto_seconds"] for i in of_kind if i["status"] == "complete" and i["rto_seconds"] is not None]
        out["by_kind"][kind] = {"total": len(of_kind), "complete": sum(1 for i in of_kind if i["status"] == "complete"),
                                "failed": sum(1 for i in of_kind if i["status"] in ("failed", "aborted")),
                                "rto_seconds_max": max(rtos) if rtos else None,
                                "data_loss_bytes": sum(i["data_loss_bytes"] or 0 for i in of_kind)}
    out["items"], out["items_omitted"] = _limit(items, max_rows)
    out["all"] = items
    return out


def aggregate_drills(rows, max_rows):
    """DR drills (drill_history): an aborted drill counts as failed; running ones are not rated."""
    items = [{"drill_id": _text(r.get("drill_id")), "kind": r.get("kind"), "status": r.get("status"),
              "started_at": iso(r.get("started_at")), "finished_at": iso(r.get("finished_at")),
              "rto_seconds": _round(_num(r.get("rto_seconds"))), "rpo_seconds": _round(_num(r.get("rpo_seconds"))),
              "lost_commits": _num(r.get("lost_commits")), "objectives_met": r.get("objectives_met"),
              "operator": _text(r.get("operator")), "error": _text(r.get("error"))} for r in rows]
    passed = sum(1 for i in items if i["status"] == "passed")
    failed = sum(1 for i in items if i["status"] in ("failed", "aborted"))
    out = {"total": len(items), "passed": passed, "failed": failed, "running": len(items) - passed - failed,
           "pass_rate": _pct(passed, passed + failed),
           "lost_commits": sum(i["lost_commits"] or 0 for i in items)}
    out["items"], out["items_omitted"] = _limit(items, max_rows)
    return out


def aggregate_health(host_rows, service_rows):
    hosts = []
    for r in host_rows:
        samples = int(_num(r.get("samples")) or 0)
        up = int(_num(r.get("ok")) or 0) + int(_num(r.get("warn")) or 0)
        hosts.append({"host": _text(r.get("host")), "check": _text(r.get("check_name")), "samples": samples,
                      "ok": int(_num(r.get("ok")) or 0), "warn": int(_num(r.get("warn")) or 0),
                      "critical": int(_num(r.get("critical")) or 0), "unknown": int(_num(r.get("unknown")) or 0),
                      "uptime_percent": _pct(up, samples), "first_seen": iso(r.get("first_seen")),
                      "last_seen": iso(r.get("last_seen"))})
    checks = []
    for r in service_rows:
        minutes = int(_num(r.get("minutes")) or 0)
        minutes_up = int(_num(r.get("minutes_up")) or 0)
        checks.append({"check": _text(r.get("check_name")), "minutes": minutes, "minutes_up": minutes_up,
                       "uptime_percent": _pct(minutes_up, minutes)})
    samples = sum(h["samples"] for h in hosts)
    up = sum(h["ok"] + h["warn"] for h in hosts)
    return {"samples": samples, "uptime_percent": _pct(up, samples), "hosts": hosts, "checks": checks,
            "host_count": len({h["host"] for h in hosts})}


# --------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|secs?|seconds?|m|mins?|minutes?|h|hours?)?\s*$", re.I)
_DURATION_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_OBJECTIVES_HINT = "See rtx_dr_objectives in inventories/lab/group_vars/all.yml for the expected layout."


def parse_duration(text):
    """Seconds (float) of a duration text: '15m', '30 s', '1h', '500ms', '2.5min', '45' (seconds); else None.

    The one reader of the durations of ``rtx_dr_objectives`` (the drills' ``drill.seconds`` uses it too).
    """
    match = _DURATION_RE.match(text)
    if not match:
        return None
    unit = (match.group(2) or "s").lower()
    return float(match.group(1)) * _DURATION_UNIT["ms" if unit == "ms" else unit[0]]


def _objective_number(value, what, percent=False, duration=False):
    """A number >= 0 (a percentage up to 100; with ``duration`` also '15m', '30 s', '1h')."""
    number = _num(value) if not isinstance(value, str) or not duration else None
    if number is None and duration and isinstance(value, str):
        number = parse_duration(value)
    if number is None or number < 0 or (percent and number > 100):
        raise InvalidValueError(
            "Invalid objectives: %s must be %s (got %r)" % (
                what, "a percentage from 0 to 100" if percent else
                "seconds or a duration like '15m'" if duration else "a number >= 0", value),
            hint=_OBJECTIVES_HINT)
    return number


def normalise_targets(targets):
    """The percentage targets with defaults filled in (:data:`DEFAULT_TARGETS`), validated."""
    given = dict(targets or {})
    unknown = set(given) - set(DEFAULT_TARGETS)
    if unknown:
        raise InvalidValueError("Invalid targets: unknown key(s) %s" % ", ".join(sorted(unknown)),
                                hint="Known keys: %s." % ", ".join(sorted(DEFAULT_TARGETS)))
    return dict((key, _objective_number(given.get(key, default), key, percent=True))
                for key, default in DEFAULT_TARGETS.items())


def normalise_objectives(objectives):
    """``[{name, rto_seconds, rpo_seconds, availability_percent, measured_by, health_checks}]``, validated.

    ``objectives`` is the inventory's ``rtx_dr_objectives``: component -> ``{rto, rpo, availability}`` (or
    ``rto_seconds``, ``rpo_seconds``, ``availability_percent``), optionally ``measured_by`` and
    ``health_checks`` (defaults :data:`DEFAULT_MEASURED_BY`, :data:`DEFAULT_HEALTH_CHECKS`); other keys are
    ignored. Empty: :data:`DEFAULT_OBJECTIVES`. A list of such dicts with a ``name`` is accepted too.
    """
    objectives = objectives or DEFAULT_OBJECTIVES
    if isinstance(objectives, list):
        items = []
        for index, spec in enumerate(objectives):
            if not isinstance(spec, dict) or not spec.get("name"):
                raise InvalidValueError("Invalid objectives: item %d needs a name" % index, hint=_OBJECTIVES_HINT)
            items.append((str(spec["name"]), spec))
    elif isinstance(objectives, dict):
        items = [(str(name), spec) for name, spec in objectives.items()]
    else:
        raise InvalidValueError("Invalid objectives: expected a mapping component -> {rto, rpo, availability}"
                                " (got %r)" % (objectives,), hint=_OBJECTIVES_HINT)
    out = []
    for name, spec in items:
        if not isinstance(spec, dict):
            raise InvalidValueError("Invalid objectives: %s must be a mapping with rto, rpo, availability (got %r)"
                                    % (name, spec), hint=_OBJECTIVES_HINT)
        item = {"name": name}
        for key, long_key, kwargs in (("rto", "rto_seconds", {"duration": True}),
                                      ("rpo", "rpo_seconds", {"duration": True}),
                                      ("availability", "availability_percent", {"percent": True})):
            value = spec.get(long_key, spec.get(key))
            item[long_key] = None if value is None else _objective_number(value, "%s.%s" % (name, key), **kwargs)
        for key, allowed, default in (("measured_by", EVENT_KINDS, DEFAULT_MEASURED_BY),
                                      ("health_checks", None, DEFAULT_HEALTH_CHECKS)):
            values = spec.get(key, default.get(name, []))
            if isinstance(values, str):
                values = [values]
            values = [str(v) for v in values or []]
            bad = [v for v in values if allowed is not None and v not in allowed]
            if bad:
                raise InvalidValueError("Invalid objectives: %s.%s has %s; allowed: %s"
                                        % (name, key, ", ".join(bad), ", ".join(allowed)), hint=_OBJECTIVES_HINT)
            item[key] = values
        out.append(item)
    return out


def _objective(name, target, measured, status, detail, unit=""):
    return {"name": name, "target": target, "measured": measured, "status": status, "detail": detail, "unit": unit}


def _rate_objective(name, target, rate, when_none, none_detail, detail):
    """A percentage objective: met at or above ``target``; without a rate, ``when_none`` with ``none_detail``."""
    if rate is None:
        return _objective(name, target, None, when_none, none_detail, "%")
    return _objective(name, target, rate, MET if rate >= target else MISSED, detail, "%")


def _fmt_seconds(value):
    if value is None:
        return "-"
    if value < 120:
        return "%g s" % round(value, 3)
    return "%.1f min" % (value / 60.0) if value < 7200 else "%.1f h" % (value / 3600.0)


def evaluate_objectives(report, objectives, targets):
    """Every objective as ``{name, target, measured, status, detail, unit}``; status met, missed or not measured.

    ``objectives``: :func:`normalise_objectives`; ``targets``: :func:`normalise_targets`.
    """
    backups, verifications, restores = report["backups"], report["verifications"], report["restores"]
    out = [
        _rate_objective("backup success rate", targets["backup_success_rate_percent"],
                        backups["success_rate"] if backups["rated"] else None, MISSED, "no backups in this period",
                        "%d complete, %d failed" % (backups["complete"], backups["failed"])),
        _rate_objective("backup verification", targets["verification_pass_percent"],
                        verifications["pass_rate"] if verifications["total"] else None, MISSED,
                        "no verification in this period",
                        "%d passed, %d failed" % (verifications["passed"], verifications["failed"])),
        _rate_objective("restore drill success", targets["restore_drill_success_percent"], restores["success_rate"],
                        MISSED, "no restore drill in this period",
                        "%d complete, %d failed" % (restores["complete"], restores["failed"])),
    ]
    health = report["health"]
    target = targets["health_check_uptime_percent"]
    if not health["checks"]:
        out.append(_objective("health-check uptime", target, None, NOT_MEASURED, "no health check in this period", "%"))
    else:
        worst = min(health["checks"], key=lambda c: (c["uptime_percent"] is None, c["uptime_percent"]))
        below = [c["check"] for c in health["checks"] if (c["uptime_percent"] or 0) < target]
        out.append(_objective("health-check uptime", target, worst["uptime_percent"], MISSED if below else MET,
                              ("below target: %s" % ", ".join(below)) if below else
                              "every check's service uptime (lowest: %s)" % worst["check"], "%"))
    events = [dict(e, event="restore") for e in report["restores"]["all"]]
    events += [dict(e, event=e["kind"]) for e in report["failovers"]["all"] if e["kind"] in FAILOVER_KINDS]
    drills = report["drills"]
    out.append(_rate_objective("DR drills passed", targets["drill_pass_percent"], drills["pass_rate"], NOT_MEASURED,
                               "no DR drill in this period",
                               "%d passed, %d failed or aborted" % (drills["passed"], drills["failed"])))
    for component in objectives:
        out.extend(_component_objectives(component, events, health))
    return out


def _component_objectives(component, events, health):
    name = component["name"]
    if not component["measured_by"] and not component["health_checks"]:
        targets = [("RTO %s" % _fmt_seconds(component["rto_seconds"])) if component["rto_seconds"] is not None else "",
                   ("RPO %s" % _fmt_seconds(component["rpo_seconds"])) if component["rpo_seconds"] is not None else "",
                   _fmt_pct(component["availability_percent"]) if component["availability_percent"] is not None
                   else ""]
        return [_objective("%s RTO / RPO / availability" % name, ", ".join(t for t in targets if t), None,
                           NOT_MEASURED, "no DR event or health check measures it (measured_by, health_checks)",
                           "text")]
    mine = [e for e in events if e["event"] in component["measured_by"] and e["status"] != "running"]
    out = []
    for what, key in (("RTO", "rto_seconds"), ("RPO", "rpo_seconds")):
        target = component[key]
        if target is None:
            continue
        label = "%s %s" % (name, what)
        if not component["measured_by"]:
            out.append(_objective(label, target, None, NOT_MEASURED, "no DR event measures it", "s"))
            continue
        if not mine:
            out.append(_objective(label, target, None, NOT_MEASURED, "no %s in this period"
                                  % " / ".join(component["measured_by"]), "s"))
            continue
        failed = [e for e in mine if e["status"] != "complete"]
        values = []
        for event in mine:
            if event["status"] != "complete":
                continue
            if what == "RTO":
                value = event.get("rto_seconds")
            else:
                value = event.get("rpo_seconds") if event["event"] == "restore" else event.get("data_loss_seconds")
            if value is not None:
                values.append((value, event))
        worst = max(values, key=lambda pair: pair[0]) if values else None
        unknown = sum(1 for e in mine if e["status"] == "complete") - len(values)
        notes = []
        if failed:
            ids = [e.get("restore_id") or e.get("failover_id") for e in failed[:3]]
            notes.append("%d run(s) failed: %s%s" % (len(failed), ", ".join(ids), ", ..." if len(failed) > 3 else ""))
        if unknown:
            notes.append("%d not measured" % unknown)
        if worst is not None:
            worst_id = worst[1].get("restore_id") or worst[1].get("failover_id")
            # A failed run is the reason for a miss: it comes first.
            notes.insert(1 if failed else 0, "worst measured %s (%s)" % (_fmt_seconds(worst[0]), worst_id))
        if failed or (worst is not None and worst[0] > target):
            status = MISSED
        elif worst is None:
            status = NOT_MEASURED
        else:
            status = MET
        out.append(_objective(label, target, None if worst is None else worst[0], status, "; ".join(notes), "s"))
    target = component["availability_percent"]
    if target is not None:
        label = "%s availability" % name
        checks = [c for c in health["checks"] if c["check"] in component["health_checks"]]
        if not checks:
            detail = ("no health check measures it" if not component["health_checks"] else
                      "no %s check in this period" % " / ".join(component["health_checks"]))
            out.append(_objective(label, target, None, NOT_MEASURED, detail, "%"))
        else:
            minutes = sum(c["minutes"] for c in checks)
            up = sum(c["minutes_up"] for c in checks)
            value = _pct(up, minutes)
            detail = "service uptime of %s over %d minute(s)" % (", ".join(c["check"] for c in checks),
                                                                 minutes // max(len(checks), 1))
            out.append(_objective(label, target, value, MET if value >= target else MISSED, detail, "%"))
    return out


def aggregate(raw, period, start, end, objectives=None, targets=None, cluster=None, now=None, max_rows=200,
              warnings=None):
    """The report dict (see :data:`REPORT_KEYS`) from :func:`fetch`'s rows."""
    now = now or datetime.datetime.now(UTC)
    objectives = normalise_objectives(objectives)
    targets = normalise_targets(targets)
    report = {
        "title": "%s DR report%s: %s to %s" % (
            period.capitalize(), " of %s" % cluster if cluster else "", iso(start), iso(end)),
        "cluster": cluster,
        "period": {"kind": period, "start": iso(start), "end": iso(end),
                   "days": round((end - start).total_seconds() / 86400.0, 3)},
        "generated_at": iso(now),
        "backups": aggregate_backups(raw.get("backups") or [], start, end, max_rows),
        "verifications": aggregate_verifications(raw.get("verifications") or [], max_rows),
        "restores": aggregate_restores(raw.get("restores") or [], max_rows),
        "failovers": aggregate_failovers(raw.get("failovers") or [], max_rows),
        "health": aggregate_health(raw.get("health_hosts") or [], raw.get("health_service") or []),
        "drills": aggregate_drills(raw.get("drills") or [], max_rows),
        "warnings": list(warnings or []),
    }
    report["objectives"] = evaluate_objectives(report, objectives, targets)
    report["objectives_config"] = {"components": objectives, "targets": targets}
    counts = dict((status, sum(1 for o in report["objectives"] if o["status"] == status))
                  for status in (MET, MISSED, NOT_MEASURED))
    report["summary"] = {"met": counts[MET], "missed": counts[MISSED], "not_measured": counts[NOT_MEASURED],
                         "ok": counts[MISSED] == 0,
                         "missed_objectives": [o["name"] for o in report["objectives"] if o["status"] == MISSED]}
    report["summary"]["lines"] = summary_lines(report)
    # Internal lists used for the objectives only.
    del report["restores"]["all"]
    del report["failovers"]["all"]
    return report


def summary_lines(report):
    """A few lines of plain text: the headline numbers and the missed objectives (for SNS and the playbook)."""
    b, v, r, f, h, s = (report["backups"], report["verifications"], report["restores"], report["failovers"],
                        report["health"], report["summary"])
    lines = [report["title"],
             "Objectives: %d met, %d missed, %d not measured" % (s["met"], s["missed"], s["not_measured"]),
             "Backups: %s" % ("no backups in this period" if not b["total"] else
                              "%d (%d complete, %d failed), success rate %s" % (
                                  b["total"], b["complete"], b["failed"], _fmt_pct(b["success_rate"]))),
             "Verifications: %d (%d passed, %d failed)" % (v["total"], v["passed"], v["failed"]),
             "Restores: %d (%d complete, %d failed), worst RTO %s" % (
                 r["total"], r["complete"], r["failed"], _fmt_seconds(r["rto_seconds_max"])),
             "Failovers/switchovers/region failovers: %s" % ", ".join(
                 "%d %s" % (f["by_kind"][k]["total"], k) for k in FAILOVER_KINDS),
             "Health-check uptime: %s over %d sample(s)" % (_fmt_pct(h["uptime_percent"]), h["samples"])]
    if s["missed_objectives"]:
        lines.append("MISSED: %s" % ", ".join(s["missed_objectives"]))
    return lines


def _fmt_pct(value):
    return "-" if value is None else "%s %%" % ("%.3f" % value).rstrip("0").rstrip(".")


# --------------------------------------------------------------------------
# Rendering helpers
# --------------------------------------------------------------------------


def _fmt_bytes(value):
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024.0
    return "-"  # pragma: no cover


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return ("%.3f" % value).rstrip("0").rstrip(".")
    return str(value)


def _objective_value(objective, key):
    value = objective[key]
    if value is None:
        return "-"
    if objective["unit"] == "text":
        return _fmt(value)
    return _fmt_pct(value) if objective["unit"] == "%" else _fmt_seconds(value)


def _tables(report):
    """The report's tables as ``(section title, empty text, headers, rows)`` with plain text cells."""
    b, v, r, f, h = report["backups"], report["verifications"], report["restores"], report["failovers"], report["health"]
    objectives = [[o["name"], _objective_value(o, "target"), _objective_value(o, "measured"), o["status"].upper(),
                   o["detail"]] for o in report["objectives"]]
    per_day = [[d["date"], d["total"], d["complete"], d["failed"], _fmt_bytes(d["bytes_stored"]),
                _fmt_bytes(d["bytes_raw"])] for d in b["per_day"]]
    backups = [[i["backup_id"], i["kind"], i["status"], i["host"], i["started_at"], _fmt_seconds(i["duration_seconds"]),
                _fmt_bytes(i["size_raw_bytes"]), _fmt_bytes(i["size_compressed_bytes"]), i["error"]] for i in b["items"]]
    verifications = [[i["verified_at"], i["backup_id"], i["kind"], i["status"], i["findings"], i["objects_checked"],
                      _fmt_seconds(i["duration_seconds"]), i["host"]] for i in v["items"]]
    restores = [[i["restore_id"], i["backup_id"], "drill" if i["verify_only"] else "restore", i["target"], i["host"],
                 i["started_at"], i["status"], _fmt_seconds(i["rto_seconds"]), _fmt_seconds(i["rpo_seconds"]),
                 i["error"]] for i in r["items"]]
    failovers = [[i["failover_id"], i["kind"], i["status"], "%s -> %s" % (i["old_primary"], i["new_primary"]),
                  i["timelines"], i["started_at"], _fmt_seconds(i["rto_seconds"]),
                  _fmt_bytes(i["data_loss_bytes"]), _fmt_seconds(i["data_loss_seconds"]), i["reason"]]
                 for i in f["items"]]
    d = report["drills"]
    drills = [[i["drill_id"], i["kind"], i["status"], i["started_at"], _fmt_seconds(i["rto_seconds"]),
               _fmt_seconds(i["rpo_seconds"]), i["lost_commits"], i["objectives_met"], i["error"]] for i in d["items"]]
    checks = [[c["check"], c["minutes"], c["minutes_up"], _fmt_pct(c["uptime_percent"])] for c in h["checks"]]
    hosts = [[x["host"], x["check"], x["samples"], x["ok"], x["warn"], x["critical"], x["unknown"],
              _fmt_pct(x["uptime_percent"]), x["last_seen"]] for x in h["hosts"]]
    return [
        ("Objectives", "no objectives", ["objective", "target", "measured", "status", "detail"], objectives, 0),
        ("Backups per day (UTC)", "no backups in this period",
         ["date", "backups", "complete", "failed", "stored", "raw"], per_day if b["total"] else [], 0),
        ("Backups", "no backups in this period",
         ["backup id", "kind", "status", "host", "started", "duration", "raw size", "stored size", "error"],
         backups, b["items_omitted"]),
        ("Backup verifications", "no verification in this period",
         ["verified", "backup id", "kind", "status", "findings", "objects", "duration", "host"], verifications,
         v["items_omitted"]),
        ("Restores and restore drills", "no restore or restore drill in this period",
         ["restore id", "backup id", "type", "target", "host", "started", "status", "RTO", "RPO", "error"], restores,
         r["items_omitted"]),
        ("Failovers, switchovers and region failovers", "no failover, switchover or region failover in this period",
         ["id", "kind", "status", "old -> new primary", "timelines", "started", "RTO", "data loss", "loss (time)",
          "reason"], failovers, f["items_omitted"]),
        ("DR drills", "no DR drill in this period",
         ["drill id", "kind", "status", "started", "RTO", "RPO", "lost commits", "objectives met", "error"], drills,
         d["items_omitted"]),
        ("Health-check service uptime (minutes with at least one host passing)", "no health check in this period",
         ["check", "minutes", "minutes up", "uptime"], checks, 0),
        ("Health-check uptime per host", "no health check in this period",
         ["host", "check", "samples", "ok", "warn", "critical", "unknown", "uptime", "last sample"], hosts, 0),
    ]


def _headline(report):
    b, v, r, f, h = report["backups"], report["verifications"], report["restores"], report["failovers"], report["health"]
    return [
        ("Backups", "no backups in this period" if not b["total"] else
         "%d (%d complete, %d failed, %d aborted, %d running); success rate %s; stored %s (raw %s); longest %s"
         % (b["total"], b["complete"], b["failed"], b["aborted"], b["running"], _fmt_pct(b["success_rate"]),
            _fmt_bytes(b["bytes_stored"]), _fmt_bytes(b["bytes_raw"]), _fmt_seconds(b["duration_seconds_max"]))),
        ("Verifications", "%d (%d passed, %d failed) of %d backup(s)%s"
         % (v["total"], v["passed"], v["failed"], v["backups_verified"],
            ("; failing at their last verification: %s" % ", ".join(v["backups_failing_last"]))
            if v["backups_failing_last"] else "")),
        ("Restores", "%d (%d drills; %d complete, %d failed); RTO worst %s, average %s"
         % (r["total"], r["drills"], r["complete"], r["failed"], _fmt_seconds(r["rto_seconds_max"]),
            _fmt_seconds(r["rto_seconds_avg"]))),
        ("Failovers", "; ".join("%s: %d (worst RTO %s, data loss %s)" % (
            kind, f["by_kind"][kind]["total"], _fmt_seconds(f["by_kind"][kind]["rto_seconds_max"]),
            _fmt_bytes(f["by_kind"][kind]["data_loss_bytes"])) for kind in FAILOVER_KINDS)
         + ("; rejoins: %d" % f["rejoins"] if f["rejoins"] else "")),
        ("DR drills", "no DR drill in this period" if not report["drills"]["total"] else
         "%d (%d passed, %d failed or aborted); acknowledged commits lost: %d" % (
             report["drills"]["total"], report["drills"]["passed"], report["drills"]["failed"],
             report["drills"]["lost_commits"])),
        ("Health checks", "no health check in this period" if not h["samples"] else
         "%d sample(s) from %d host(s); uptime %s" % (h["samples"], h["host_count"], _fmt_pct(h["uptime_percent"]))),
    ]


# --------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------


def md_escape(value):
    """A table cell / inline text: no line breaks, ``|`` and Markdown/HTML specials escaped."""
    text = _fmt(value)
    text = re.sub(r"[\r\n\t]+", " ", text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", text)


def render_markdown(report):
    s = report["summary"]
    lines = ["# %s" % md_escape(report["title"]), "",
             "Generated %s. Period %s to %s (UTC, end excluded)." % (
                 md_escape(report["generated_at"]), md_escape(report["period"]["start"]),
                 md_escape(report["period"]["end"])), "",
             "**Objectives: %d met, %d missed, %d not measured.**%s" % (
                 s["met"], s["missed"], s["not_measured"],
                 (" Missed: %s." % md_escape(", ".join(s["missed_objectives"]))) if s["missed_objectives"] else ""),
             ""]
    for name, text in _headline(report):
        lines.append("- **%s:** %s" % (name, md_escape(text)))
    lines.append("")
    for warning in report["warnings"]:
        lines.append("> Warning: %s" % md_escape(warning))
    if report["warnings"]:
        lines.append("")
    for title, empty, headers, rows, omitted in _tables(report):
        lines += ["## %s" % md_escape(title), ""]
        if not rows:
            lines += ["_%s_" % md_escape(empty), ""]
            continue
        if omitted:
            lines += ["_%d older row(s) not shown; the JSON report has the counts._" % omitted, ""]
        lines.append("| %s |" % " | ".join(md_escape(h) for h in headers))
        lines.append("|%s|" % "|".join("---" for dummy in headers))
        for row in rows:
            lines.append("| %s |" % " | ".join(md_escape(cell) for cell in row))
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# SVG chart and HTML
# --------------------------------------------------------------------------


def esc(value):
    """Escape text for HTML and XML (text and attribute values)."""
    return html.escape(_fmt(value), quote=True)


def _axis_max(values):
    top = max([v for v in values if v is not None] or [0])
    return top if top > 0 else 1


def render_svg(points, start, end, width=720, height=260):
    """Inline SVG: backup duration (top) and stored size (bottom) against start time; failed runs in red.

    ``points``: :func:`aggregate_backups`'s ``chart`` list. ``start``/``end``: the period (datetimes).
    Well-formed XML (the ``xmlns`` is set), every text escaped.
    """
    left, right, gap, top_pad = 70, 20, 30, 30
    panel = (height - top_pad - gap - 30) / 2.0
    span = max((end - start).total_seconds(), 1.0)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" '
           'aria-labelledby="chart-title">' % (width, height, width, height),
           '<title id="chart-title">Backup duration and stored size, %s to %s</title>' % (
               esc(iso(start)), esc(iso(end))),
           '<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>' % (width, height)]
    if not points:
        out.append('<text x="%d" y="%d" text-anchor="middle" font-size="14" fill="#555">no backups in this '
                   'period</text>' % (width // 2, height // 2))
        out.append("</svg>")
        return "\n".join(out)
    series = (("duration", "duration_seconds", _fmt_seconds, top_pad),
              ("stored size", "size_compressed_bytes", _fmt_bytes, top_pad + panel + gap))
    for label, key, fmt, y0 in series:
        values = [p.get(key) for p in points]
        top = _axis_max(values)
        out.append('<text x="%d" y="%.1f" font-size="12" fill="#333">%s (max %s)</text>' % (
            left, y0 - 8, esc(label), esc(fmt(top))))
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#999"/>' % (
            left, y0 + panel, width - right, y0 + panel))
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#999"/>' % (left, y0, left, y0 + panel))
        out.append('<text x="%d" y="%.1f" font-size="10" text-anchor="end" fill="#555">%s</text>' % (
            left - 4, y0 + 10, esc(fmt(top))))
        out.append('<text x="%d" y="%.1f" font-size="10" text-anchor="end" fill="#555">0</text>' % (
            left - 4, y0 + panel))
        coords, first_circle = [], len(out)
        for point, value in zip(points, values):
            moment = parse_time(point.get("started_at"))
            if moment is None:
                continue
            cx = left + (width - left - right) * min(max((moment - start).total_seconds() / span, 0.0), 1.0)
            cy = y0 + panel - (panel * (value or 0) / top)
            failed = point.get("status") != "complete"
            if not failed and value is not None:
                coords.append("%.1f,%.1f" % (cx, cy))
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s %s %s: %s</title></circle>' % (
                cx, cy, "#c0392b" if failed else "#2471a3", esc(point.get("backup_id")), esc(point.get("kind")),
                esc(point.get("status")), esc(fmt(value))))
        if len(coords) > 1:
            out.insert(first_circle, '<polyline fill="none" stroke="#2471a3" stroke-width="1.5" points="%s"/>'
                       % " ".join(coords))
    axis_y = height - 10
    out.append('<text x="%d" y="%d" font-size="10" fill="#555">%s</text>' % (left, axis_y, esc(iso(start))))
    out.append('<text x="%d" y="%d" font-size="10" text-anchor="end" fill="#555">%s</text>' % (
        width - right, axis_y, esc(iso(end))))
    out.append("</svg>")
    return "\n".join(out)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.met{background:#e7f6e7}.missed{background:#fbe3e1;font-weight:bold}
.not-measured{background:#f4f4f4;color:#666}.empty{color:#666;font-style:italic}.warn{color:#a05a00}
"""


def render_html(report):
    """A self-contained HTML page (inline CSS and SVG, no script, nothing fetched); DB values escaped."""
    s = report["summary"]
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           "<title>%s</title>" % esc(report["title"]), "<style>%s</style>" % _CSS, "</head>", "<body>",
           "<h1>%s</h1>" % esc(report["title"]),
           "<p>Generated %s. Period %s to %s (UTC, end excluded).</p>" % (
               esc(report["generated_at"]), esc(report["period"]["start"]), esc(report["period"]["end"])),
           '<p class="%s"><strong>Objectives: %d met, %d missed, %d not measured.</strong>%s</p>' % (
               "missed" if s["missed"] else "met", s["met"], s["missed"], s["not_measured"],
               (" Missed: %s." % esc(", ".join(s["missed_objectives"]))) if s["missed_objectives"] else ""),
           "<ul>"]
    for name, text in _headline(report):
        out.append("<li><strong>%s:</strong> %s</li>" % (esc(name), esc(text)))
    out.append("</ul>")
    for warning in report["warnings"]:
        out.append('<p class="warn">Warning: %s</p>' % esc(warning))
    start, end = parse_time(report["period"]["start"]), parse_time(report["period"]["end"])
    for index, (title, empty, headers, rows, omitted) in enumerate(_tables(report)):
        out.append("<h2>%s</h2>" % esc(title))
        if index == 2:
            out.append('<figure>%s<figcaption>Complete backups in blue, failed in red.</figcaption></figure>'
                       % render_svg(report["backups"]["chart"], start, end))
        if not rows:
            out.append('<p class="empty">%s</p>' % esc(empty))
            continue
        if omitted:
            out.append('<p class="empty">%d older row(s) not shown.</p>' % omitted)
        out.append("<table><thead><tr>%s</tr></thead><tbody>" % "".join("<th>%s</th>" % esc(h) for h in headers))
        for row in rows:
            css = ""
            if index == 0:
                css = ' class="%s"' % row[3].lower().replace(" ", "-")
            out.append("<tr%s>%s</tr>" % (css, "".join("<td>%s</td>" % esc(cell) for cell in row)))
        out.append("</tbody></table>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------
# Files and the whole run
# --------------------------------------------------------------------------


def basename(report):
    """``dr-report-weekly-20261129T000000Z``: the name of the report's files without extension."""
    return "dr-report-%s-%s" % (report["period"]["kind"], re.sub(r"[^0-9TZ]", "", report["period"]["end"]))


def write_files(output_dir, report, markdown, html_text):
    """Write ``<basename>.md``, ``.html`` and ``.json`` into ``output_dir`` (created, mode 0750); return the paths."""
    os.makedirs(output_dir, mode=0o750, exist_ok=True)
    name = basename(report)
    paths = {"markdown": os.path.join(output_dir, name + ".md"), "html": os.path.join(output_dir, name + ".html"),
             "json": os.path.join(output_dir, name + ".json")}
    contents = {"markdown": markdown, "html": html_text,
                "json": json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"}
    for key, path in paths.items():
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(contents[key])
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    return paths


def build_report(params, connect, now=None):
    """Read, aggregate and render: ``(report, markdown, html)``. Only reads the database."""
    now = now or datetime.datetime.now(UTC)
    start, end = period_window(params.get("period") or "weekly", params.get("end"), now)
    objectives = normalise_objectives(params.get("objectives"))  # option errors before any connection
    targets = normalise_targets(params.get("targets"))
    max_rows = params.get("max_rows")
    conn = connect(params)
    try:
        raw, warnings = fetch(conn, params.get("schema") or "dr", start, end)
    finally:
        close_quietly(conn)
    report = aggregate(raw, params.get("period") or "weekly", start, end, objectives, targets,
                       cluster=params.get("cluster_name"), now=now,
                       max_rows=200 if max_rows is None else max_rows, warnings=warnings)
    return report, render_markdown(report), render_html(report)

# -*- coding: utf-8 -*-

# Copyright: (c) 2026, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Host agent of the health checks: the seed's ``health-check.sh`` every 60 s, with the module's code.

The systemd timer installed by the ``rtx.dr.health_agent`` role runs::

    PYTHONPATH=/usr/local/lib/rtx-dr \\
        python3 -m ansible_collections.rtx.dr.plugins.module_utils.health_agent [--config FILE] run
    ... health_agent [--config FILE] check-config

``run`` executes the checks of ``rtx.dr.health_check`` (same :func:`health.run_checks`,
same option names; the configuration file is a JSON object of them plus the
agent options below), then:

* on a database host (``dr_metrics: true``) reads the DR metrics from the local
  server: WAL archiver state (primary), per-standby replication lag and number of
  synchronous standbys (primary), and from the replicated DR schema the last
  complete and last finished base/logical backup, the last backup verification,
  the last successful restore (drill) and the last failover of each kind;
* with ``wal_stream: true`` (streaming mode, primary only) reads the newest
  streamed partial segment under ``<prefix>/wal-stream/`` in S3 as
  ``rtx.dr.wal_archive_status`` does (:func:`walstatus.read_stream`): the bucket,
  prefix and AWS settings come from the backup agent's configuration
  ``wal_stream_config`` (``/etc/rtx-dr/agent.json``, the file the stream
  uploader itself reads), so they are never repeated here;
* appends one row per check to ``<history_schema>.health_check_history`` on the
  current primary (libpq ``target_session_attrs=read-write`` over
  ``history_hosts``), when ``history`` is on;
* writes ``output_json`` (default ``/var/lib/rtx/metrics/health.json``, the
  seed's path) and the Prometheus textfile-collector file ``textfile`` (metric
  names in :data:`METRICS`), both atomically (temporary file + rename).

A check that fails or hangs is critical and never stops the others
(:func:`health.run_checks`); the DR metrics and the history write are bounded by
``connect_timeout``/``history_connect_timeout`` and a 5 s statement timeout, and
their failures are reported in the outputs, not raised.

Exit codes: 0 outputs written (whatever the health status: it is in the
outputs), 1 an output file could not be written, 2 bad configuration (nothing
was checked).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import tempfile
import time

from ansible_collections.rtx.dr.plugins.module_utils.agent import DEFAULT_CONFIG as BACKUP_AGENT_CONFIG
from ansible_collections.rtx.dr.plugins.module_utils.agent import EXIT_CONFIG
from ansible_collections.rtx.dr.plugins.module_utils.agent import EXIT_FAILED
from ansible_collections.rtx.dr.plugins.module_utils.agent import EXIT_OK
from ansible_collections.rtx.dr.plugins.module_utils.agent import Log
from ansible_collections.rtx.dr.plugins.module_utils.agent import build_params
from ansible_collections.rtx.dr.plugins.module_utils.agent import ensure_ansible_basic
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

DEFAULT_CONFIG = "/etc/rtx-dr/health.json"
APPLICATION_NAME = "rtx.dr health agent"
STATUS_VALUES = {"ok": 0, "warn": 1, "critical": 2}
SECRET_OPTIONS = frozenset(("login_password", "redis_password", "history_password"))

# Options of the agent on top of the health_check module's.
AGENT_OPTIONS = dict(
    host_name=dict(type="str"),
    output_json=dict(type="path", default="/var/lib/rtx/metrics/health.json"),
    textfile=dict(type="path", default="/var/lib/prometheus/node-exporter/rtx_dr_health.prom"),
    dr_metrics=dict(type="bool", default=False),
    dr_db=dict(type="str", default="rtx"),
    dr_schema=dict(type="str", default="dr"),
    history=dict(type="bool", default=False),
    history_hosts=dict(type="list", elements="str", default=[]),
    history_port=dict(type="int", default=5432),
    history_db=dict(type="str", default="rtx"),
    history_schema=dict(type="str", default="dr"),
    history_user=dict(type="str"),
    history_password=dict(type="str", no_log=True),
    history_ssl_mode=dict(type="str", default="require",
                          choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
    history_ca_cert=dict(type="path"),
    history_connect_timeout=dict(type="int", default=5),
    wal_stream=dict(type="bool", default=False),
    wal_stream_config=dict(type="path", default=BACKUP_AGENT_CONFIG),
)
#: S3 client settings of the stream read: a run must stay short (the next one comes in 60 s).
STREAM_CLIENT = {"retries": {"mode": "standard", "total_max_attempts": 2}, "connect_timeout": 3, "read_timeout": 10}

# name: (help, labels). All gauges; timestamps are Unix seconds, 0 = never.
METRICS = {
    "rtx_dr_health_last_run_timestamp_seconds": ("End of the last run of the rtx.dr health agent.", ()),
    "rtx_dr_health_run_duration_seconds": ("Duration of the last health agent run.", ()),
    "rtx_dr_health_status": ("Worst status of the last run: 0 ok, 1 warn, 2 critical.", ()),
    "rtx_dr_health_check_status": ("Health check status: 0 ok, 1 warn, 2 critical.", ("check", "target")),
    "rtx_dr_health_check_value": ("Measured value of the health check (unit in health.json).", ("check", "target")),
    "rtx_dr_health_check_duration_seconds": ("Time the health check took.", ("check", "target")),
    "rtx_dr_health_history_write_success": ("1 when the last run's rows reached health_check_history.", ()),
    "rtx_dr_pg_up": ("1 when the local PostgreSQL server answered the DR metrics queries.", ()),
    "rtx_dr_pg_is_primary": ("1 when the local PostgreSQL server is the primary (not in recovery).", ()),
    "rtx_dr_dr_schema_readable": ("1 when the DR schema could be read on the local server.", ()),
    "rtx_dr_wal_archive_enabled": ("1 when archive_mode is on (primary only).", ()),
    "rtx_dr_wal_archive_last_archived_timestamp_seconds": ("Time of the last archived WAL file (primary only).", ()),
    "rtx_dr_wal_archive_archived_total": ("pg_stat_archiver.archived_count (primary only).", ()),
    "rtx_dr_wal_archive_failed_total": ("pg_stat_archiver.failed_count (primary only).", ()),
    "rtx_dr_wal_archive_last_failed_timestamp_seconds": ("Time of the last failed archive attempt (primary only).", ()),
    "rtx_dr_wal_archive_ready_segments": ("WAL files waiting to be archived (.ready in archive_status).", ()),
    "rtx_dr_wal_archive_oldest_ready_timestamp_seconds": (
        "Since when the oldest WAL file waiting to be archived waits (its .ready file); 0 = none waits.", ()),
    "rtx_dr_wal_stream_read_success": (
        "1 when the agent could read the streamed WAL under <prefix>/wal-stream/ in S3 (primary, streaming mode).", ()),
    "rtx_dr_wal_stream_checked_timestamp_seconds": (
        "When the agent looked at the streamed WAL in S3 (primary, streaming mode).", ()),
    "rtx_dr_wal_stream_newest_timestamp_seconds": (
        "Upload time (S3 LastModified) of the newest streamed partial WAL segment; 0 = none in S3.", ()),
    "rtx_dr_wal_stream_covers_bytes_behind": (
        "WAL the primary has written that no streamed partial nor archived segment holds (0 when idle).", ()),
    "rtx_dr_replication_lag_bytes": ("Replay lag of a standby in bytes (exported by the primary).", ("standby",)),
    "rtx_dr_replication_lag_seconds": ("Replay lag of a standby in seconds (exported by the primary).", ("standby",)),
    "rtx_dr_sync_standbys": ("Standbys with sync_state sync or quorum (exported by the primary).", ()),
    "rtx_dr_backup_last_success_timestamp_seconds": ("Finish time of the last complete backup.", ("kind",)),
    "rtx_dr_backup_last_run_success": ("1 when the most recent finished backup run completed, 0 when it failed.",
                                       ("kind",)),
    "rtx_dr_backup_last_verified_timestamp_seconds": ("Time of the last backup verification without finding.", ()),
    "rtx_dr_backup_last_verify_success": ("1 when the most recent backup verification found nothing.", ()),
    "rtx_dr_restore_drill_last_success_timestamp_seconds": ("Finish time of the last complete restore or drill.",
                                                            ()),
    "rtx_dr_last_failover_timestamp_seconds": ("Finish time of the last complete failover of this kind.", ("kind",)),
}
BACKUP_KINDS = ("physical", "logical")
FAILOVER_KINDS = ("failover", "switchover", "region")


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


def agent_argument_spec():
    """The options of ``rtx.dr.health_check`` plus :data:`AGENT_OPTIONS`."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.health import health_argument_spec  # pylint: disable=import-outside-toplevel

    spec = health_argument_spec()
    spec.update({k: dict(v) for k, v in AGENT_OPTIONS.items()})
    return spec


def read_config(path):
    """Params of the agent from the JSON object in ``path`` (module option names, aliases accepted)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise InvalidValueError("Cannot read the health agent configuration %s: %s" % (path, exc.strerror or exc),
                                hint="Deploy it with the rtx.dr.health_agent role, or pass --config FILE.",
                                details={"config": path}) from None
    except ValueError as exc:
        raise InvalidValueError("Health agent configuration %s is not valid JSON: %s" % (path, exc),
                                details={"config": path}) from None
    if not isinstance(data, dict):
        raise InvalidValueError("Health agent configuration %s must be a JSON object of options" % path,
                                details={"config": path})
    return check_params(build_params(agent_argument_spec(), data, path), path)


def check_params(params, where="health agent configuration"):
    """Refuse settings the checks would only trip over later; returns ``params``."""
    from ansible_collections.rtx.dr.plugins.module_utils.health import specs_from_params  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.health import validate_thresholds  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.postgres import quote_ident  # pylint: disable=import-outside-toplevel

    try:
        validate_thresholds(params.get("thresholds"))
    except InvalidValueError as exc:
        raise InvalidValueError("%s: %s" % (where, exc), hint=exc.hint) from None
    if not params.get("output_json") and not params.get("textfile"):
        raise InvalidValueError("%s: output_json and textfile are both empty: the results would go nowhere" % where,
                                hint="Set at least one of them.")
    if params.get("history"):
        if not params.get("history_hosts") and not (params.get("login_host") or params.get("login_unix_socket")):
            raise InvalidValueError("%s: history is on but neither history_hosts nor a local login_* is set" % where,
                                    hint="List the database hosts in history_hosts (the primary is found among them).")
        quote_ident(params["history_schema"], "history_schema")
        split_hosts(params.get("history_hosts") or [], params["history_port"])
    if params.get("dr_metrics"):
        quote_ident(params["dr_schema"], "dr_schema")
    if params.get("wal_stream") and not params.get("dr_metrics"):
        raise InvalidValueError("%s: wal_stream is on but dr_metrics is off: the stream is read by the primary's "
                                "DR metrics" % where, hint="Set dr_metrics: true (a database host), or wal_stream: false.")
    if not params.get("checks") and not params.get("dr_metrics"):
        raise InvalidValueError("%s: no checks and no dr_metrics: nothing to do" % where,
                                hint="Name the checks, e.g. [disk, cpu_load, memory].")
    try:
        specs_from_params(params)  # api without api_url and the like; connects to nothing
    except InvalidValueError as exc:
        raise InvalidValueError("%s: %s" % (where, exc), hint=exc.hint) from None
    return params


# --------------------------------------------------------------------------
# DR metrics from the local PostgreSQL server
# --------------------------------------------------------------------------


def _epoch(value):
    return float(value) if value is not None else 0.0


def collect_dr_metrics(params, replication=None, connect=None, s3_factory=None):
    """DR facts of the local server (see the module docstring). Never raises: failures are in ``error``.

    ``replication`` is the result of the ``replication_lag`` check when it ran
    (its per-standby details are reused, not queried twice). ``s3_factory(params)``
    builds the S3 client of the stream read (default: the WAL agent's botocore client).
    """
    from ansible_collections.rtx.dr.plugins.module_utils import postgres  # pylint: disable=import-outside-toplevel

    connect = connect or postgres.connect
    facts = {"pg_up": 0, "error": None}
    conn = None
    try:
        conn = connect(dict(params, login_db=params["dr_db"], target_session_attrs=None),
                       application_name=APPLICATION_NAME)
        postgres.execute(conn, "SET statement_timeout = '5s'")
        base = postgres.query_one(conn, "SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,"
                                        " pg_catalog.current_setting('archive_mode') AS archive_mode")
        facts.update(pg_up=1, pg_is_primary=0 if base["in_recovery"] else 1)
        if not base["in_recovery"]:
            facts["wal_archive"] = _archiver(postgres, conn, base["archive_mode"])
            facts["replication"] = _replication(replication)
            if params.get("wal_stream"):
                facts["wal_stream"] = _wal_stream(postgres, conn, params["wal_stream_config"], s3_factory)
        facts["dr_schema"] = _dr_schema(postgres, conn, params["dr_schema"])
    except RtxDrError as exc:
        facts["error"] = str(exc)
    finally:
        postgres.close_quietly(conn)
    return facts


def _archiver(postgres, conn, archive_mode):
    # The .ready files are read as rtx.dr.wal_archive_status reads them: the archive lag is the age of the
    # oldest one (oldest_ready, its modification time), not the time since last_archived (old on an idle server).
    from ansible_collections.rtx.dr.plugins.module_utils.walstatus import read_ready  # pylint: disable=import-outside-toplevel

    row = postgres.query_one(conn, "SELECT archived_count, failed_count,"
                                   " extract(epoch FROM last_archived_time)::float8 AS last_archived,"
                                   " extract(epoch FROM last_failed_time)::float8 AS last_failed"
                                   " FROM pg_catalog.pg_stat_archiver")
    ready = read_ready(conn)
    oldest = ready["oldest_ready_time"]
    return {"enabled": 1 if archive_mode in ("on", "always") else 0, "archived_total": int(row["archived_count"]),
            "failed_total": int(row["failed_count"]), "last_archived": _epoch(row["last_archived"]),
            "last_failed": _epoch(row["last_failed"]), "ready_segments": ready["ready_count"],
            "oldest_ready": ready["oldest_ready"], "oldest_ready_time": oldest.timestamp() if oldest else 0.0}


def _stream_client(wal_params):
    from ansible_collections.rtx.dr.plugins.module_utils.wal_agent import make_client  # pylint: disable=import-outside-toplevel

    return make_client(wal_params, "s3", **STREAM_CLIENT)


def _wal_stream(postgres, conn, config_path, s3_factory=None):
    """The newest streamed partial segment (:func:`walstatus.read_stream`) against this primary's position.

    ``{read_success, checked, newest, bytes_behind, where, stream, error}``: ``checked`` when S3 was looked at and
    ``newest`` the partial's upload time (Unix seconds, 0 = none in S3); ``read_success`` 0 with ``error`` when the
    backup agent's configuration or S3 could not be read (never raised: the other metrics still go out).
    """
    # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils import catalog
    from ansible_collections.rtx.dr.plugins.module_utils import walstream
    from ansible_collections.rtx.dr.plugins.module_utils.verify import read_only_s3
    from ansible_collections.rtx.dr.plugins.module_utils.wal_agent import params_from_config
    from ansible_collections.rtx.dr.plugins.module_utils.walstatus import read_stream

    out = {"read_success": 0, "checked": None, "newest": None, "bytes_behind": None, "where": None, "stream": None,
           "error": None}
    try:
        # The position first (as rtx.dr.wal_archive_status): WAL written while S3 is read is not counted.
        row = postgres.query_one(conn, "SELECT pg_catalog.pg_current_wal_lsn()::text AS lsn, (SELECT setting::bigint"
                                       " FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size') AS wal_segment_size")
        wal = params_from_config(config_path)
        if not wal.get("bucket"):
            raise InvalidValueError("the backup agent's configuration %s (wal_stream_config) has no bucket"
                                    % config_path)
        prefix = catalog.resolve_prefix(wal)
        out["where"] = "s3://%s/%s" % (wal["bucket"], walstream.stream_prefix(prefix))
        checked = catalog.utc_now()
        stream = read_stream(read_only_s3((s3_factory or _stream_client)(wal)), wal["bucket"], prefix,
                             int(row["wal_segment_size"]), row["lsn"], checked)
    except RtxDrError as exc:
        out["error"] = "reading the WAL stream%s: %s" % (" " + out["where"] if out["where"] else "", exc)
        return out
    uploaded = catalog.parse_time(stream.get("uploaded_at"))
    out.update(read_success=1, checked=round(checked.timestamp(), 3), stream=stream,
               newest=uploaded.timestamp() if uploaded else 0.0, bytes_behind=stream.get("bytes_behind"))
    return out


def _replication(result):
    details = (result or {}).get("details") or {}
    if not result or details.get("in_recovery") or "standbys" not in details:
        return None
    standbys = details["standbys"]
    return {"standbys": dict((name, {"lag_bytes": item["lag_bytes"], "lag_seconds": item["lag_seconds"]})
                             for name, item in standbys.items()),
            "sync_standbys": sum(1 for item in standbys.values() if item.get("sync_state") in ("sync", "quorum"))}


def _dr_schema(postgres, conn, schema):
    tables = postgres.query_one(
        conn, "SELECT pg_catalog.to_regclass(%(s)s || '.backup_history') IS NOT NULL AS backup,"
              " pg_catalog.to_regclass(%(s)s || '.restore_history') IS NOT NULL AS restore,"
              " pg_catalog.to_regclass(%(s)s || '.failover_history') IS NOT NULL AS failover,"
              " pg_catalog.to_regclass(%(s)s || '.verification_history') IS NOT NULL AS verification",
        {"s": postgres.quote_ident(schema, "dr_schema")})
    if not tables["backup"]:
        return None
    name = postgres.quote_ident(schema, "dr_schema")
    out = {"backups": dict((kind, {"last_success": 0.0, "last_run_success": None}) for kind in BACKUP_KINDS),
           "verification": None, "restore_last_success": 0.0,
           "failovers": dict((kind, 0.0) for kind in FAILOVER_KINDS)}
    for row in postgres.query_all(
            conn, "SELECT kind, extract(epoch FROM max(finished_at) FILTER (WHERE status = 'complete'))::float8"
                  " AS last_success, (array_agg(status ORDER BY finished_at DESC)"
                  " FILTER (WHERE status IN ('complete', 'failed')))[1] AS last_status"
                  " FROM %s.backup_history WHERE kind IN ('physical', 'logical') GROUP BY kind" % name):
        out["backups"][row["kind"]] = {"last_success": _epoch(row["last_success"]),
                                       "last_run_success": None if row["last_status"] is None
                                       else int(row["last_status"] == "complete")}
    if tables["restore"]:
        row = postgres.query_one(conn, "SELECT extract(epoch FROM max(finished_at))::float8 AS t"
                                       " FROM %s.restore_history WHERE status = 'complete'" % name)
        out["restore_last_success"] = _epoch(row["t"])
    if tables["failover"]:
        for row in postgres.query_all(conn, "SELECT kind, extract(epoch FROM max(finished_at))::float8 AS t"
                                            " FROM %s.failover_history WHERE status = 'complete'"
                                            " GROUP BY kind" % name):
            if row["kind"] in out["failovers"]:
                out["failovers"][row["kind"]] = _epoch(row["t"])
    if tables["verification"]:
        row = postgres.query_one(conn, "SELECT extract(epoch FROM max(verified_at) FILTER (WHERE status = 'passed'))"
                                       "::float8 AS last_passed, (array_agg(status ORDER BY verified_at DESC))[1]"
                                       " AS last_status FROM %s.verification_history" % name)
        out["verification"] = {"last_passed": _epoch(row["last_passed"]),
                               "last_success": None if row["last_status"] is None
                               else int(row["last_status"] == "passed")}
    return out


# --------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------


def metric_samples(document):
    """``[(name, {label: value}, number)]`` for the textfile, from a run's document."""
    samples = [("rtx_dr_health_last_run_timestamp_seconds", {}, document["timestamp"]),
               ("rtx_dr_health_run_duration_seconds", {}, document["duration_seconds"]),
               ("rtx_dr_health_status", {}, STATUS_VALUES[document["status"]])]
    for result in document["checks"]:
        labels = {"check": result["check"], "target": str(result["target"])}
        samples.append(("rtx_dr_health_check_status", labels, STATUS_VALUES[result["status"]]))
        if isinstance(result.get("value"), (int, float)) and not isinstance(result["value"], bool):
            samples.append(("rtx_dr_health_check_value", labels, result["value"]))
        if result.get("seconds") is not None:
            samples.append(("rtx_dr_health_check_duration_seconds", labels, result["seconds"]))
    history = document.get("history") or {}
    if history.get("enabled"):
        samples.append(("rtx_dr_health_history_write_success", {}, 1 if history.get("written") else 0))
    dr = document.get("dr")
    if dr is None:
        return samples
    samples.append(("rtx_dr_pg_up", {}, dr["pg_up"]))
    if not dr["pg_up"]:
        return samples
    samples.append(("rtx_dr_pg_is_primary", {}, dr["pg_is_primary"]))
    archive = dr.get("wal_archive")
    if archive:
        samples += [("rtx_dr_wal_archive_enabled", {}, archive["enabled"]),
                    ("rtx_dr_wal_archive_last_archived_timestamp_seconds", {}, archive["last_archived"]),
                    ("rtx_dr_wal_archive_archived_total", {}, archive["archived_total"]),
                    ("rtx_dr_wal_archive_failed_total", {}, archive["failed_total"]),
                    ("rtx_dr_wal_archive_last_failed_timestamp_seconds", {}, archive["last_failed"]),
                    ("rtx_dr_wal_archive_ready_segments", {}, archive["ready_segments"]),
                    ("rtx_dr_wal_archive_oldest_ready_timestamp_seconds", {}, archive["oldest_ready_time"])]
    stream = dr.get("wal_stream")
    if stream:
        samples.append(("rtx_dr_wal_stream_read_success", {}, stream["read_success"]))
        if stream["read_success"]:
            samples += [("rtx_dr_wal_stream_checked_timestamp_seconds", {}, stream["checked"]),
                        ("rtx_dr_wal_stream_newest_timestamp_seconds", {}, stream["newest"])]
            if stream["bytes_behind"] is not None:
                samples.append(("rtx_dr_wal_stream_covers_bytes_behind", {}, stream["bytes_behind"]))
    replication = dr.get("replication")
    if replication:
        samples.append(("rtx_dr_sync_standbys", {}, replication["sync_standbys"]))
        for name, item in sorted(replication["standbys"].items()):
            samples.append(("rtx_dr_replication_lag_bytes", {"standby": name}, item["lag_bytes"]))
            samples.append(("rtx_dr_replication_lag_seconds", {"standby": name}, item["lag_seconds"]))
    schema = dr.get("dr_schema")
    samples.append(("rtx_dr_dr_schema_readable", {}, 1 if schema else 0))
    if schema:
        for kind, item in sorted(schema["backups"].items()):
            samples.append(("rtx_dr_backup_last_success_timestamp_seconds", {"kind": kind}, item["last_success"]))
            if item["last_run_success"] is not None:
                samples.append(("rtx_dr_backup_last_run_success", {"kind": kind}, item["last_run_success"]))
        verification = schema.get("verification")
        if verification:
            samples.append(("rtx_dr_backup_last_verified_timestamp_seconds", {}, verification["last_passed"]))
            if verification["last_success"] is not None:
                samples.append(("rtx_dr_backup_last_verify_success", {}, verification["last_success"]))
        samples.append(("rtx_dr_restore_drill_last_success_timestamp_seconds", {}, schema["restore_last_success"]))
        for kind, when in sorted(schema["failovers"].items()):
            samples.append(("rtx_dr_last_failover_timestamp_seconds", {"kind": kind}, when))
    return samples


def _label_value(value):
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value):
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def format_textfile(samples):
    """Prometheus text exposition format (0.0.4): HELP/TYPE once per metric, samples grouped by metric."""
    lines = []
    by_name = {}
    for name, labels, value in samples:
        if name not in METRICS:
            raise ValueError("metric %s is not declared in METRICS" % name)
        by_name.setdefault(name, []).append((labels, value))
    for name in METRICS:
        if name not in by_name:
            continue
        lines.append("# HELP %s %s" % (name, METRICS[name][0]))
        lines.append("# TYPE %s gauge" % name)
        for labels, value in by_name[name]:
            text = ",".join('%s="%s"' % (k, _label_value(str(v))) for k, v in sorted(labels.items()))
            lines.append("%s%s %s" % (name, "{%s}" % text if text else "", _number(value)))
    return "\n".join(lines) + "\n"


def write_atomic(path, text, mode=0o644):
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------
# health_check_history
# --------------------------------------------------------------------------

HISTORY_INSERT = (
    'INSERT INTO {schema}.health_check_history ("time", host, check_name, status, value, threshold, message, details)'
    " VALUES (%(time)s, %(host)s, %(check)s, %(status)s, %(value)s, %(threshold)s, %(message)s, %(details)s::jsonb)")


def history_rows(document):
    """One row per check result for ``health_check_history``."""
    rows = []
    for result in document["checks"]:
        threshold = result.get("threshold") or {}
        value = result.get("value")
        rows.append({
            "time": document["time"], "host": document["host"], "check": result["check"],
            "status": result["status"],
            "value": float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
            "threshold": threshold.get("critical" if result["status"] == "critical" else "warn"),
            "message": result.get("message"),
            "details": json.dumps({"target": result.get("target"), "unit": result.get("unit"),
                                   "seconds": result.get("seconds"), "threshold": threshold,
                                   "details": result.get("details") or {}}, default=str),
        })
    return rows


def split_hosts(entries, default_port):
    """``(hosts, ports)`` for libpq's multi-host lists from ``host`` or ``host:port`` entries."""
    hosts, ports = [], []
    for entry in entries:
        host, sep, port = str(entry).rpartition(":") if str(entry).count(":") == 1 else (entry, "", "")
        if sep and not port.isdigit():
            raise InvalidValueError("history_hosts: %r is not host or host:port" % entry)
        hosts.append(host if sep else str(entry))
        ports.append(port if sep else str(default_port))
    return hosts, ports


def history_params(params):
    """Connection options for the history write: the primary among ``history_hosts`` (or the local server)."""
    if params.get("history_hosts"):
        hosts, ports = split_hosts(params["history_hosts"], params["history_port"])
        return {"login_host": ",".join(hosts), "login_port": ",".join(ports),
                "login_user": params.get("history_user") or "postgres", "login_password": params.get("history_password"),
                "login_db": params["history_db"], "ssl_mode": params["history_ssl_mode"],
                "ca_cert": params.get("history_ca_cert"), "connect_timeout": params["history_connect_timeout"],
                "target_session_attrs": "read-write"}
    return dict(params, login_db=params["history_db"], connect_timeout=params["history_connect_timeout"],
                target_session_attrs="read-write")


def write_history(params, document, connect=None):
    """Insert the rows in one transaction; ``{'enabled', 'written', 'rows', 'server', 'reason'}``. Never raises."""
    from ansible_collections.rtx.dr.plugins.module_utils import postgres  # pylint: disable=import-outside-toplevel

    connect = connect or postgres.connect
    try:
        sql = HISTORY_INSERT.format(schema=postgres.quote_ident(params["history_schema"], "history_schema"))
    except RtxDrError as exc:
        return {"enabled": True, "written": False, "rows": 0, "server": None, "reason": str(exc)}
    outcome = postgres.insert_rows(connect, history_params(params), sql, history_rows(document),
                                   application_name=APPLICATION_NAME)
    outcome["enabled"] = True
    return outcome


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------


def run(params, log=None, now=None):
    """Run the checks, collect the DR metrics, write the history; return the document (outputs not written)."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils import health  # pylint: disable=import-outside-toplevel

    started = time.monotonic()
    now = now or datetime.datetime.now(datetime.timezone.utc)
    results = health.run_checks(health.specs_from_params(params), params.get("thresholds"),
                                params.get("total_timeout") or 20.0) if params.get("checks") else []
    status, counts = health.summarize(results)
    document = {"host": params.get("host_name") or socket.gethostname(), "time": now.isoformat(),
                "timestamp": round(now.timestamp(), 3), "status": status, "counts": counts, "checks": results,
                "dr": None, "history": {"enabled": False}}
    if params.get("dr_metrics"):
        replication = next((r for r in results if r["check"] == "replication_lag"), None)
        document["dr"] = collect_dr_metrics(params, replication)
        if document["dr"]["error"] and log:
            log.warning("DR metrics not collected: %s" % document["dr"]["error"])
        stream_error = (document["dr"].get("wal_stream") or {}).get("error")
        if stream_error and log:
            log.warning("WAL stream metrics not collected: %s" % stream_error)
    if params.get("history") and results:
        document["history"] = write_history(params, document)
        if not document["history"]["written"] and log:
            log.warning("health_check_history not written: %s" % document["history"]["reason"])
    document["duration_seconds"] = round(time.monotonic() - started, 3)
    return document


def write_outputs(params, document):
    """Write ``output_json`` and ``textfile``; returns the paths written."""
    written = []
    if params.get("output_json"):
        write_atomic(params["output_json"], json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
        written.append(params["output_json"])
    if params.get("textfile"):
        write_atomic(params["textfile"], format_textfile(metric_samples(document)))
        written.append(params["textfile"])
    return written


def summary_line(document):
    bad = ["%s %s: %s" % (r["check"], r["target"], r["message"]) for r in document["checks"] if r["status"] != "ok"]
    history = document["history"]
    return "%d check(s) %s (%s)%s; history %s" % (
        len(document["checks"]), document["status"],
        ", ".join("%d %s" % (n, s) for s, n in document["counts"].items() if n) or "none",
        (": " + "; ".join(bad)) if bad else "",
        ("%d row(s) to %s" % (history["rows"], history["server"]) if history.get("written")
         else "not written" if history.get("enabled") else "off"))


def _masked(params):
    return dict((k, "********" if k in SECRET_OPTIONS and v else v) for k, v in params.items())


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="rtx-dr-health",
        description="rtx.dr health agent: the health checks of rtx.dr.health_check, DR metrics, "
                    "health.json, a Prometheus textfile and health_check_history rows.",
        epilog="Exit codes: 0 outputs written, 1 an output could not be written, 2 bad configuration.")
    parser.add_argument("--config", "-c", default=os.environ.get("RTX_DR_HEALTH_CONFIG") or DEFAULT_CONFIG,
                        help="JSON object of options (default %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("run", help="run the checks once and write the outputs")
    sub.add_parser("check-config", help="validate the configuration and print it (secrets masked); checks nothing")
    return parser.parse_args(argv)


def main(argv=None, stdout=None, stderr=None):
    """Entry point; returns the exit code."""
    stdout = stdout or sys.stdout
    args = parse_args(argv)
    log = Log(args.command, stderr)
    try:
        params = read_config(args.config)
    except RtxDrError as exc:
        log.error(str(exc))
        return EXIT_CONFIG
    if args.command == "check-config":
        stdout.write(json.dumps(_masked(params), indent=2, sort_keys=True, default=str) + "\n")
        log("configuration %s is valid (%d check(s)%s%s%s)" % (
            args.config, len(params.get("checks") or []), ", DR metrics" if params.get("dr_metrics") else "",
            ", WAL stream (%s)" % params["wal_stream_config"] if params.get("wal_stream") else "",
            ", history" if params.get("history") else ""))
        return EXIT_OK
    try:
        document = run(params, log)
    except RtxDrError as exc:
        log.error("health run failed: %s" % exc)
        return EXIT_CONFIG
    try:
        write_outputs(params, document)
    except OSError as exc:
        log.error("cannot write the health outputs: %s" % exc)
        return EXIT_FAILED
    (log.warning if document["status"] != "ok" else log)(summary_line(document))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Status of the continuous WAL archiving: the archiver of the server and the archive in S3 (read-only).

Used by ``rtx.dr.wal_archive_status``. Plain Python: :func:`wal_status` gathers, :func:`failure`
applies the thresholds.

From PostgreSQL (optional): ``pg_stat_archiver``, the role, the timeline, the current WAL
position and segment, the ``pg_wal/archive_status/*.ready`` files (:func:`read_ready`: how many,
the oldest and since when it waits), and from them the archive lag (:func:`archive_lag`): the age
of the oldest file waiting to be archived - never the time since the last archived file, which
grows on an idle server although nothing waits.

From S3 (catalog.py, walchain.py): the complete physical backups, the archive listing, the
timeline path to the latest timeline (history files) and the chain of segments recovery
needs from the backup selected by ``since`` to the newest archived segment: the gaps, and
the recoverable window (from that backup's stop to the end of the last segment before the
first gap).

The server is read before S3, so that anything ``pg_stat_archiver`` says was archived must
already be in the listing.

Streaming mode (walstream.py, opt-in): :func:`read_stream` finds the newest streamed partial segment under
``<prefix>/wal-stream/`` (highest timeline, then highest segment), its ``covers-lsn`` and age, and how much WAL
the primary has written beyond what S3 holds; :func:`stream_breach` applies ``max_stream_age_seconds``. Shared
with the health agent (``health_agent.py``).
"""

from __future__ import annotations

import datetime

from ansible_collections.rtx.dr.plugins.module_utils import catalog
from ansible_collections.rtx.dr.plugins.module_utils import postgres
from ansible_collections.rtx.dr.plugins.module_utils import walarchive
from ansible_collections.rtx.dr.plugins.module_utils import walchain
from ansible_collections.rtx.dr.plugins.module_utils import walstream
from ansible_collections.rtx.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.aws import list_pages
from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import QueryFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import DEFAULT_WAL_SEGMENT_SIZE
from ansible_collections.rtx.dr.plugins.module_utils.postgres import close_quietly
from ansible_collections.rtx.dr.plugins.module_utils.postgres import format_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import is_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.postgres import postgres_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_all
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_one
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_optional
from ansible_collections.rtx.dr.plugins.module_utils.verify import read_only_s3

SINCE_KEYWORDS = ("oldest_backup", "latest_backup")

# The options of rtx.dr.wal_archive_status beyond the aws and postgres common ones.
WAL_STATUS_OPTIONS = dict(
    bucket=dict(type="str", required=True),
    prefix=dict(type="str"),
    cluster_name=dict(type="str"),
    wal_segment_size=dict(type="int", default=DEFAULT_WAL_SEGMENT_SIZE),
    query_server=dict(type="bool", default=True),
    fail_on_unreachable=dict(type="bool", default=True),
    since=dict(type="str", default="oldest_backup"),
    max_lag_seconds=dict(type="int"),
    fail_on_gap=dict(type="bool", default=True),
    max_stream_age_seconds=dict(type="int"),
)

#: Keys of every result of :func:`wal_status` (the module adds ``changed``).
RESULT_KEYS = ("bucket", "prefix", "role", "server", "archiver", "lag", "archive", "backups", "since_backup",
               "timeline_path", "chain", "gaps", "backup_after_gap", "recoverable_window", "stream", "findings", "ok")
SERVER_KEYS = ("queried", "reachable", "error", "in_recovery", "timeline", "current_lsn", "current_wal",
               "archive_mode", "archive_timeout", "wal_segment_size", "now")
ARCHIVER_KEYS = ("archived_count", "last_archived_wal", "last_archived_time", "failed_count", "last_failed_wal",
                 "last_failed_time", "stats_reset", "ready_count", "oldest_ready", "oldest_ready_time",
                 "oldest_ready_age_seconds")
LAG_KEYS = ("seconds", "segments", "bytes", "pending", "oldest_ready", "data_at_risk_bytes", "error")
#: Keys of ``stream`` when a streamed partial segment was found (else only ``found: false``).
STREAM_KEYS = ("found", "key", "segment", "timeline", "covers_lsn", "uploaded_at", "age_seconds", "host",
               "segment_archived", "bytes_behind")
#: Findings that are WAL missing from the archive (``fail_on_gap``).
GAP_CHECKS = ("gap", "history", "last_archived_missing")
#: Most names quoted in one message.
MESSAGE_NAMES = 5
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

GAP_HINT = (
    "If the server still has the missing segments in pg_wal, archive them again with "
    "playbooks/backup_incremental.yml (it re-pushes from pg_wal); otherwise take a new full backup "
    "(playbooks/backup_full.yml): point-in-time recovery across a gap is impossible.")
HISTORY_HINT = (
    "A missing timeline history file is archived from the server that created the timeline (pg_wal/<TLI>.history) "
    "with the WAL agent's push command.")
LAG_HINT = (
    "Check the PostgreSQL log for archive_command errors (the WAL agent logs one line per failed push), that the "
    "S3 endpoint (endpoint_url/region) is reachable from the database host, and that its credentials and KMS key "
    "work; pg_stat_archiver counts the failures. Without failures the archive_command is slower than the server "
    "writes WAL (the .ready files pile up): see docs/benchmarks.md for the push rate.")
STREAM_HINT = (
    "Streaming mode (backup_schedule_wal_stream) uploads the partial segment from the primary every second: on the "
    "primary check systemctl status rtx-dr-wal-receive rtx-dr-wal-stream, journalctl -u rtx-dr-wal-stream (S3 "
    "errors of the uploader) and journalctl -u rtx-dr-wal-receive (pg_receivewal; it must be in pg_stat_replication "
    "as application_name rtx_dr_stream). archive_command still archives every complete segment: the RPO falls back "
    "to archive_timeout meanwhile. Where streaming mode is off, leave max_stream_age_seconds unset.")
PERMISSION_HINT = (
    "pg_ls_archive_statusdir() is only allowed to superusers and members of pg_monitor: connect as postgres "
    "(login_unix_socket with become_user postgres, as the playbooks do) or run GRANT pg_monitor TO <login_user>.")

# The .ready files of pg_wal/archive_status (PostgreSQL 12+; superuser or pg_monitor): how many, how many are WAL
# segments (24 hex digits, not .history/.partial/.backup), the oldest (by modification time: when PostgreSQL
# created the .ready file, i.e. when the file was complete and started to wait) and its time.
READY_SQL = (
    "SELECT count(*) AS ready_count,"
    " count(*) FILTER (WHERE name ~ '^[0-9A-F]{24}[.]ready$') AS ready_segments,"
    " (array_agg(pg_catalog.left(name, -6) ORDER BY modification, name))[1] AS oldest_ready,"
    " min(modification) AS oldest_ready_time"
    " FROM pg_catalog.pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
)


def wal_status_argument_spec():
    """aws common options + postgres common options + :data:`WAL_STATUS_OPTIONS`."""
    spec = aws_common_argument_spec()
    spec.update(postgres_common_argument_spec())
    spec.update({name: dict(option) for name, option in WAL_STATUS_OPTIONS.items()})
    return spec


def check_options(params):
    """Option checks that need no network.

    ``{bucket, prefix, wal_segment_size, since, max_lag_seconds, fail_on_gap, max_stream_age_seconds}``.
    """
    bucket = params.get("bucket")
    if not bucket:
        raise InvalidValueError("Option bucket is required: the bucket the WAL is archived to",
                                hint="Set bucket (the backups' bucket).")
    prefix = catalog.resolve_prefix(params)
    size = params.get("wal_segment_size")
    size = DEFAULT_WAL_SEGMENT_SIZE if size is None else size
    parse_wal_segment_name("000000010000000000000001", size)  # validates the size
    since = params.get("since") or "oldest_backup"
    if since not in SINCE_KEYWORDS:
        if not catalog.is_backup_id(since):
            raise InvalidValueError(
                "Invalid since %r: expected oldest_backup, latest_backup or a backup id such as "
                "20261127T031500.123Z-F" % (since,),
                hint="Use a backup_id from the catalog (<prefix>/catalog/<backup_id>.json).")
        if catalog.parse_backup_id(since)[1] != "physical":
            raise InvalidValueError(
                "since %s is a logical backup: WAL is only replayed on top of a physical backup" % since,
                hint="Give the id of a physical backup (ending in -F), or oldest_backup/latest_backup.")
    max_lag = params.get("max_lag_seconds")
    if max_lag is not None and max_lag < 0:
        raise InvalidValueError("Invalid max_lag_seconds %d: must be 0 or more" % max_lag)
    max_stream_age = params.get("max_stream_age_seconds")
    if max_stream_age is not None and max_stream_age < 0:
        raise InvalidValueError("Invalid max_stream_age_seconds %d: must be 0 or more" % max_stream_age)
    return {
        "bucket": bucket,
        "prefix": prefix,
        "wal_segment_size": size,
        "since": since,
        "max_lag_seconds": max_lag,
        "fail_on_gap": params.get("fail_on_gap", True) is not False,
        "max_stream_age_seconds": max_stream_age,
    }


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def finding(check, message):
    return {"check": check, "message": message}


def _iso(value):
    """ISO 8601 UTC text (``...Z``) of a datetime; text and None unchanged."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return catalog.isoformat(value)
    return value


def _int(value):
    return None if value is None else int(value)


def _quote(names, limit=MESSAGE_NAMES):
    names = list(names)
    text = ", ".join(names[:limit])
    if len(names) > limit:
        text += " and %d more" % (len(names) - limit)
    return text


def _segment_part(name, wal_segment_size):
    """The segment a WAL file name starts with (segment, ``.partial``, ``.backup``), or None."""
    if not isinstance(name, str) or len(name) < 24 or name.endswith(".history"):
        return None
    try:
        return parse_wal_segment_name(name[:24], wal_segment_size)
    except InvalidValueError:
        return None


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def empty_server(queried):
    server = dict.fromkeys(SERVER_KEYS)
    server["queried"] = queried
    return server


def read_ready(conn):
    """The ``.ready`` files of ``pg_wal/archive_status`` (:data:`READY_SQL`).

    ``{ready_count, ready_segments, oldest_ready, oldest_ready_time}``: every ``.ready`` file, those of WAL
    segments, the name of the oldest waiting file (by the modification time of its ``.ready`` file, written when
    the file was complete) and that time (the driver's datetime); both None when nothing waits.
    Shared with the health agent (``health_agent.py``).

    :raises QueryFailedError: the login role may not call ``pg_ls_archive_statusdir()`` (superuser or pg_monitor).
    """
    row = query_one(conn, READY_SQL) or {}
    return {"ready_count": _int(row.get("ready_count")) or 0, "ready_segments": _int(row.get("ready_segments")) or 0,
            "oldest_ready": row.get("oldest_ready"), "oldest_ready_time": row.get("oldest_ready_time")}


def read_server(conn, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """Facts of an open connection: ``(server, archiver, warnings)`` (raw values, datetimes kept).

    ``archiver`` also holds ``ready_segments`` and ``ready_error`` (why the ``.ready`` files could not be
    listed; then every ``.ready`` fact is None), used by :func:`archive_lag` and not returned.
    """
    warnings = []
    server = empty_server(True)
    server["reachable"] = True
    rows = query_all(conn, "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
                     (["archive_mode", "archive_timeout", "wal_segment_size"],))
    settings = dict((row["name"], row["setting"]) for row in rows)
    server["archive_mode"] = settings.get("archive_mode")
    server["archive_timeout"] = _int(settings.get("archive_timeout"))
    server["wal_segment_size"] = _int(settings.get("wal_segment_size"))
    size = server["wal_segment_size"] or wal_segment_size
    server["in_recovery"] = bool(query_one(conn, "SELECT pg_catalog.pg_is_in_recovery() AS r")["r"])

    row = query_one(
        conn,
        "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal,"
        " last_failed_time, stats_reset, pg_catalog.now() AS now FROM pg_catalog.pg_stat_archiver",
    ) or {}
    server["now"] = row.get("now")
    archiver = dict((key, row.get(key)) for key in ARCHIVER_KEYS)
    archiver["archived_count"] = _int(archiver["archived_count"])
    archiver["failed_count"] = _int(archiver["failed_count"])
    archiver.update(ready_segments=None, ready_error=None)
    try:
        archiver.update(read_ready(conn))
    except QueryFailedError as exc:
        archiver["ready_error"] = exc.msg
        warnings.append(
            "Could not list the .ready files of pg_wal/archive_status with pg_ls_archive_statusdir() (superuser or "
            "pg_monitor only): %s. The archive lag is not measured: archiver.ready_count, archiver.oldest_ready*, "
            "lag.seconds, lag.segments and lag.bytes are reported as null. %s" % (exc.msg, PERMISSION_HINT))
    oldest_time = archiver.get("oldest_ready_time")
    if oldest_time is not None and server["now"] is not None:
        # Both clocks are the database host's: now() and the file system's modification time.
        archiver["oldest_ready_age_seconds"] = round(max(0.0, (server["now"] - oldest_time).total_seconds()), 1)

    row = query_optional(conn, "SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()", warnings,
                         "pg_control_checkpoint()")
    checkpoint_timeline = _int(row["timeline_id"]) if row else None
    server["timeline"] = checkpoint_timeline
    if not server["in_recovery"]:
        row = query_one(
            conn,
            "SELECT pg_catalog.pg_current_wal_lsn()::text AS lsn,"
            " pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) AS walfile",
        )
        server["current_lsn"] = row["lsn"]
        server["current_wal"] = row["walfile"]
        # The WAL file being written carries the timeline the server inserts on now; the
        # checkpoint's timeline lags right after a promotion until the next checkpoint.
        current = _segment_part(row["walfile"], size)
        if current is not None:
            server["timeline"] = current.timeline
    return server, archiver, warnings


def query_server(params, connect, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """Connect with the postgres options and :func:`read_server`; ``(server, archiver, warnings)``.

    A server that is down is reported (``reachable: false``) instead of raised when
    ``fail_on_unreachable`` is false; a refused login always raises.
    """
    server = empty_server(True)
    try:
        conn = connect(params)
    except ConnectionFailedError as exc:
        if params.get("fail_on_unreachable", True) is not False or not exc.server_down:
            raise
        server.update(reachable=False, error=exc.msg)
        return server, None, []
    try:
        return read_server(conn, wal_segment_size)
    finally:
        close_quietly(conn)


def archives(server):
    """Whether the server read runs an archiver: a primary, or a standby with ``archive_mode = always``.

    A standby with ``archive_mode = on`` marks the WAL it receives as archived (``.done``) without archiving it:
    the primary archives.
    """
    in_recovery = (server or {}).get("in_recovery")
    return in_recovery is False or (in_recovery is True and server.get("archive_mode") == "always")


def archive_lag(server, archiver, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """The archive lag (:data:`LAG_KEYS`) of a server that archives (:func:`archives`), else None.

    Measured on the ``.ready`` files (files complete and waiting for the archive_command), never on
    ``last_archived_time`` (old on an idle server where nothing waits):

    - ``seconds``: age of the oldest ``.ready`` file (``oldest_ready``), 0 when none waits;
    - ``segments``: the ``.ready`` WAL segments (history, ``.partial`` and ``.backup`` files not counted);
    - ``bytes``: ``segments * wal_segment_size``;
    - ``pending``: whether any ``.ready`` file waits;
    - these are None, with ``error`` saying why, when the ``.ready`` files could not be listed.

    ``data_at_risk_bytes`` (a primary only): WAL written after the last archived segment, in no archived segment -
    the current position minus the end of ``last_archived_wal`` (its start for a ``.partial``, which recovery does
    not use); includes the segment being written. None when the last archived file is not a segment.
    """
    if archiver is None or not archives(server):
        return None
    lag = dict.fromkeys(LAG_KEYS)
    ready = archiver.get("ready_count")
    if ready is None:
        lag["error"] = archiver.get("ready_error") or "the .ready files of pg_wal/archive_status were not listed"
    else:
        lag["pending"] = ready > 0
        lag["seconds"] = archiver.get("oldest_ready_age_seconds") if ready else 0.0
        lag["segments"] = archiver.get("ready_segments") or 0
        lag["bytes"] = lag["segments"] * wal_segment_size
        lag["oldest_ready"] = archiver.get("oldest_ready") if ready else None
        if lag["seconds"] is None:
            lag["error"] = "the modification time of the oldest .ready file (%s) is unknown" % lag["oldest_ready"]
    last = archiver.get("last_archived_wal")
    last_seg = _segment_part(last, wal_segment_size)
    if server.get("in_recovery") is False and server.get("current_lsn") and last_seg is not None \
            and (len(last) == 24 or last.endswith(".partial")):
        archived_until = last_seg.start_lsn if last.endswith(".partial") else last_seg.end_lsn
        lag["data_at_risk_bytes"] = max(0, parse_lsn(server["current_lsn"]) - archived_until)
    return lag


def archiver_result(archiver):
    if archiver is None:
        return None
    return dict((key, _iso(archiver.get(key))) for key in ARCHIVER_KEYS)


def server_result(server):
    result = dict(server)
    result["now"] = _iso(result.get("now"))
    return result


# --------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------


def backup_summary(record):
    """What the status reports of a catalog record (``stop_time``: the record's, else its ``finished_at``)."""
    return {
        "backup_id": record.get("backup_id"),
        "timeline": record.get("timeline"),
        "start_lsn": record.get("start_lsn"),
        "stop_lsn": record.get("stop_lsn"),
        "start_wal": record.get("start_wal"),
        "stop_wal": record.get("stop_wal"),
        "stop_time": record.get("stop_time") or record.get("finished_at"),
        "wal_included": bool(record.get("wal_included")),
    }


def select_backup(s3, bucket, prefix, records, since):
    """The record the gap check starts from (None when there is no complete physical backup)."""
    if since == "oldest_backup":
        return records[-1] if records else None
    if since == "latest_backup":
        return records[0] if records else None
    for record in records:
        if record.get("backup_id") == since:
            return record
    record = catalog.read_record(s3, bucket, prefix, since)
    where = "s3://%s/%s" % (bucket, catalog.catalog_key(prefix, since))
    if record is None:
        raise RtxDrError("since: backup %s has no catalog record at %s" % (since, where),
                         hint="List the catalog (<prefix>/catalog/) for the ids there; check prefix/cluster_name "
                         "and bucket, or use since=oldest_backup.",
                         details={"bucket": bucket, "prefix": prefix, "since": since})
    raise RtxDrError("since: backup %s is %s, not complete: WAL cannot be replayed on it (%s)"
                     % (since, record.get("status"), where),
                     hint="Give a complete physical backup, or use since=oldest_backup.",
                     details={"bucket": bucket, "prefix": prefix, "since": since})


def chain_start(record):
    """Where the WAL a backup needs from the archive starts: its stop (WAL in the tar), else its start."""
    return record.get("stop_lsn") if record.get("wal_included") else record.get("start_lsn")


def backup_on_path(record, path):
    """True when recovery along ``path`` can start from ``record`` (its timeline holds its start and stop)."""
    timeline = record.get("timeline")
    start, stop = record.get("start_lsn"), record.get("stop_lsn")
    if not (timeline and start and stop):
        return False
    stop_int = parse_lsn(stop)
    return (walchain.timeline_at(path, start) == timeline
            and walchain.timeline_at(path, stop_int - 1 if stop_int else 0) == timeline)


def follow_timelines(s3, listing, target, findings, gaps):
    """``(timeline, path)`` to ``target``, or to the newest timeline whose history can be read.

    A missing or damaged history file is a finding and a gap (named ``<TLI>.history``).
    """
    candidates = [target] + sorted((t for t in listing.histories if t < target), reverse=True) + [1]
    where = "s3://%s/%s" % (listing.bucket, catalog.wal_prefix(listing.prefix))
    seen = set()
    for timeline in candidates:
        if timeline in seen:
            continue
        seen.add(timeline)
        history = "%08X.history" % timeline
        try:
            return timeline, walchain.timeline_path(timeline, walchain.read_history(s3, listing, timeline))
        except walchain.WalGapError as exc:
            findings.append(finding("history", exc.msg))
        except InvalidValueError as exc:
            findings.append(finding("history", "Timeline history file %s in the WAL archive %s is damaged: %s; "
                                    "recovery cannot follow timeline %d" % (history, where, exc.msg, timeline)))
        gaps.append(history)
    return 1, walchain.timeline_path(1, [])  # not reached: timeline 1 needs no history


def _archived(listing, name):
    """Whether WAL file ``name`` (any kind) is in the listing."""
    if name.endswith(".history"):
        try:
            return int(name[:8], 16) in listing.histories
        except ValueError:
            return False
    if name.endswith(".partial"):
        return name in listing.partials
    if name.endswith(".backup"):
        return name in listing.backup_files
    return name in listing.segments


def _path_result(path):
    return [{"timeline": p["timeline"], "begin_lsn": format_lsn(p["begin_lsn"]),
             "end_lsn": walchain.lsn_text(p["end_lsn"])} for p in path]


def _backup_after_gap(records, path, last_missing_segno, size):
    """Id of the oldest complete backup recovery can start from after the last missing segment."""
    for record in reversed(records):
        start = chain_start(record)
        if start and backup_on_path(record, path) and walchain.segno_of(start, size) > last_missing_segno:
            return record.get("backup_id")
    return None


def read_archive(s3, settings, server=None, archiver=None, now=None):
    """The S3 part of the status: a partial result (archive, backups, chain, gaps, window, findings)."""
    bucket, prefix, size = settings["bucket"], settings["prefix"], settings["wal_segment_size"]
    now = now or catalog.utc_now()
    findings = []
    gaps = []
    records = catalog.list_records(s3, bucket, prefix, kind="physical", status="complete")
    record = select_backup(s3, bucket, prefix, records, settings["since"])
    listing = walchain.list_archive(s3, bucket, prefix, size)

    newest = listing.newest_segment()
    newest_time = listing.segments[newest]["last_modified"] if newest else None
    archive = {
        "newest_segment": newest,
        "newest_segment_time": _iso(newest_time),
        "newest_segment_age_seconds": round(max(0.0, (now - newest_time).total_seconds()), 1)
        if newest_time is not None else None,
        "latest_timeline": listing.latest_timeline(),
        "timelines": listing.timelines(),
        "segments": len(listing.segments),
        "partials": len(listing.partials),
        "history_files": ["%08X.history" % t for t in sorted(listing.histories)],
        "last_archived_wal_in_s3": None,
    }
    result = {
        "archive": archive,
        "backups": {"complete": len(records), "oldest": records[-1]["backup_id"] if records else None,
                    "latest": records[0]["backup_id"] if records else None},
        "since_backup": backup_summary(record) if record else None,
        "timeline_path": None, "chain": None, "gaps": gaps, "backup_after_gap": None, "recoverable_window": None,
        "findings": findings,
    }

    primary = bool(server and server.get("in_recovery") is False)
    # Target: the newest timeline known (the archive's, a primary's, the backup's).
    candidates = [t for t in (listing.latest_timeline(), server.get("timeline") if primary else None,
                              record.get("timeline") if record else None) if t]
    target = max(candidates) if candidates else 1
    if primary and server.get("timeline") and listing.latest_timeline() \
            and listing.latest_timeline() > server["timeline"]:
        findings.append(finding(
            "timeline", "The WAL archive has timeline %d but this primary is on timeline %d: another server was "
            "promoted since; this server's new WAL does not continue the archive's history"
            % (listing.latest_timeline(), server["timeline"])))
    timeline, path = follow_timelines(s3, listing, target, findings, gaps)
    result["timeline_path"] = _path_result(path)

    last = (archiver or {}).get("last_archived_wal")
    if primary and last:
        present = _archived(listing, last)
        oldest_start = _segment_part((records[-1].get("start_wal") if records else None), size)
        last_seg = _segment_part(last, size)
        pruned = oldest_start is not None and last_seg is not None and last_seg.segno < oldest_start.segno
        archive["last_archived_wal_in_s3"] = present
        if not present and not pruned:
            findings.append(finding(
                "last_archived_missing", "pg_stat_archiver says %s was archived (at %s) but it is not in the WAL "
                "archive s3://%s/%s" % (last, _iso(archiver.get("last_archived_time")), bucket,
                                        catalog.wal_prefix(prefix))))
            gaps.append(last)

    if record is None:
        findings.append(finding(
            "no_backup", "No complete physical backup in the catalog s3://%s/%s: there is nothing to replay the "
            "archived WAL on" % (bucket, catalog.catalog_prefix(prefix))))
        return result
    if not backup_on_path(record, path):
        findings.append(finding(
            "backup_timeline", "Backup %s (timeline %s, %s..%s) is not on the history of timeline %d: recovery "
            "from it cannot follow the archive's latest timeline"
            % (record.get("backup_id"), record.get("timeline"), record.get("start_lsn"), record.get("stop_lsn"),
               timeline)))
        return result

    start = chain_start(record)
    chain = walchain.check_chain(listing, path, start)
    result["chain"] = {
        "start_lsn": start, "first": chain["first"], "last": chain["last"], "needed": chain["needed"],
        "present": chain["present"], "contiguous_until": chain["contiguous_until"],
        "contiguous_until_time": _iso(chain["contiguous_until_time"]),
    }
    if chain["missing"]:
        shown = dict(chain, contiguous_until_time=_iso(chain["contiguous_until_time"]))
        findings.append(finding("gap", walchain.describe_gap(shown, listing, MESSAGE_NAMES)))
        gaps[:0] = [n for n in chain["missing"] if n not in gaps]
        last_missing = parse_wal_segment_name(chain["missing"][-1], size).segno
        result["backup_after_gap"] = _backup_after_gap(records, path, last_missing, size)

    summary = result["since_backup"]
    window = {"backup_id": summary["backup_id"], "earliest_time": summary["stop_time"],
              "earliest_lsn": summary["stop_lsn"], "latest_time": summary["stop_time"],
              "latest_lsn": summary["stop_lsn"], "latest_segment": None, "timeline": summary["timeline"]}
    contiguous = chain["contiguous_until"]
    if contiguous:
        segment = parse_wal_segment_name(contiguous, size)
        if not record.get("wal_included") and segment.end_lsn < parse_lsn(summary["stop_lsn"]):
            contiguous = None  # the backup's own WAL is not all there
        else:
            window.update(latest_time=_iso(chain["contiguous_until_time"]), latest_lsn=format_lsn(segment.end_lsn),
                          latest_segment=contiguous, timeline=segment.timeline)
    if contiguous is None and not record.get("wal_included"):
        findings.append(finding(
            "backup_wal", "Backup %s was taken without its WAL and the archive lacks WAL it needs to become "
            "consistent: it cannot be restored" % summary["backup_id"]))
        window = None
    result["recoverable_window"] = window
    return result


# --------------------------------------------------------------------------
# Streaming mode: the newest partial segment under <prefix>/wal-stream/
# --------------------------------------------------------------------------


def newest_stream_object(s3, bucket, prefix, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """``(segment, listing item)`` of the newest streamed partial segment, or None when there is none.

    Newest: the highest timeline (``<prefix>/wal-stream/<TLI>/``), then in it the highest segment; among the keys
    of one segment (compression suffixes, see :func:`walstream.stream_base_key`) the last modified. Keys that
    are no streamed partial of their directory's timeline are ignored. Only the newest timeline directory holding
    one is listed in full.
    """
    top = walstream.stream_prefix(prefix)
    directories = [item["Prefix"] for page in list_pages(s3, bucket, top, Delimiter="/")
                   for item in page.get("CommonPrefixes") or ()]
    # <TLI>/ is 8 upper case hex digits: the text order is the timeline order.
    for directory in sorted(directories, reverse=True):
        timeline = directory[len(top):].rstrip("/")
        best = None
        for page in list_pages(s3, bucket, directory):
            for item in page.get("Contents") or ():
                name = item["Key"][len(directory):][:24]
                if not is_wal_segment_name(name) or name[:8] != timeline or walarchive.method_of_key(
                        walstream.stream_base_key(prefix, name), item["Key"]) is None:
                    continue
                rank = (name, catalog.parse_time(item.get("LastModified")) or _EPOCH)
                if best is None or rank > best[0]:
                    best = (rank, item)
        if best is None:
            continue
        try:
            return parse_wal_segment_name(best[0][0], wal_segment_size), best[1]
        except InvalidValueError:
            continue  # not a segment of this wal_segment_size
    return None


def read_stream(s3, bucket, prefix, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE, current_lsn=None, now=None):
    """What streaming mode holds in S3: ``{"found": False}``, or every key of :data:`STREAM_KEYS`.

    - ``key``, ``segment``, ``timeline``: the newest streamed partial (:func:`newest_stream_object`);
    - ``covers_lsn``: its metadata ``covers-lsn`` (the object holds the WAL up to there at least), ``host``: the
      uploader's host (None when the metadata lacks them);
    - ``uploaded_at`` (ISO 8601 UTC) and ``age_seconds`` (``now`` minus it): its S3 LastModified;
    - ``bytes_behind`` (``current_lsn`` given, the primary's ``pg_current_wal_lsn()``, else None): WAL the primary
      has written that is neither in that partial nor archived - ``current_lsn`` minus ``covers_lsn``, or minus the
      end of the partial's segment when that segment is archived complete under ``<prefix>/wal/`` (pg_receivewal
      completed it; on an idle primary after a segment switch nothing is missing although ``covers_lsn`` stays
      before the switch); never below 0. An idle primary, where nothing was written since the last upload, has 0
      however old the partial is;
    - ``segment_archived``: whether that segment is archived complete; only looked up when the primary is beyond
      ``covers_lsn`` (else None).

    :raises RtxDrError: S3 could not be listed or the object read.
    """
    found = newest_stream_object(s3, bucket, prefix, wal_segment_size)
    if found is None:
        return {"found": False}
    segment, item = found
    key = item["Key"]
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "reading s3://%s/%s" % (bucket, key)) from None
    metadata = head.get("Metadata") or {}
    try:
        covers = parse_lsn(metadata.get("covers-lsn")) if metadata.get("covers-lsn") else None
    except InvalidValueError:
        covers = None
    uploaded = catalog.parse_time(head.get("LastModified") or item.get("LastModified"))
    now = now or catalog.utc_now()
    stream = {
        "found": True, "key": key, "segment": segment.name, "timeline": segment.timeline,
        "covers_lsn": format_lsn(covers) if covers is not None else None, "uploaded_at": _iso(uploaded),
        "age_seconds": round(max(0.0, (now - uploaded).total_seconds()), 1) if uploaded is not None else None,
        "host": metadata.get("host"), "segment_archived": None, "bytes_behind": None,
    }
    if current_lsn is None:
        return stream
    current = parse_lsn(current_lsn)
    in_s3 = covers
    if covers is None or current > covers:
        base = walarchive.wal_base_key(prefix, segment.name, wal_segment_size)
        stream["segment_archived"] = bool(walarchive.archived_variants(s3, bucket, base))
        if stream["segment_archived"]:
            in_s3 = segment.end_lsn
    if in_s3 is not None:
        stream["bytes_behind"] = max(0, current - in_s3)
    return stream


def stream_breach(stream, bucket, prefix, max_stream_age_seconds):
    """The sentence why the stream fails ``max_stream_age_seconds``, or None (also when it is not set).

    Fails: no streamed partial at all, or the newest one is older than the threshold - unless ``bytes_behind`` is
    0 (an idle primary: nothing written since, the stream is complete).
    """
    if max_stream_age_seconds is None:
        return None
    where = "s3://%s/%s" % (bucket, walstream.stream_prefix(prefix))
    if not stream.get("found"):
        return ("no streamed partial segment under %s (max_stream_age_seconds=%d): streaming mode never uploaded "
                "one there, or it is off" % (where, max_stream_age_seconds))
    age = stream.get("age_seconds")
    if age is not None and age <= max_stream_age_seconds:
        return None
    behind = stream.get("bytes_behind")
    if behind == 0:
        return None
    text = ("the newest streamed partial segment under %s, %s (timeline %d, covers %s, uploaded by %s at %s), is "
            "%s, more than max_stream_age_seconds=%d"
            % (where, stream["segment"], stream["timeline"], stream.get("covers_lsn") or "an unknown LSN",
               stream.get("host") or "an unknown host", stream.get("uploaded_at"),
               "of unknown age" if age is None else "%s s old" % age, max_stream_age_seconds))
    if behind is None:
        text += ("; the primary's WAL position was not read (not the primary, or query_server=false): an idle "
                 "primary, which uploads nothing new, cannot be told from a stopped stream")
    else:
        text += "; the primary has written %d bytes of WAL since that are in no streamed partial nor archived segment" \
            % behind
    return text


# --------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------


def wal_status(params, s3, connect=None, now=None):
    """The status of the WAL archiving (the module's result without ``changed``) and warnings.

    :param s3: a boto3 S3 client (wrapped read-only here).
    :param connect: ``connect(params)`` returning a PostgreSQL connection (``postgres.connect``);
        only used when ``query_server`` is not false.
    :returns: ``(result, warnings)``; ``result`` has every key of :data:`RESULT_KEYS`.
    :raises RtxDrError: bad options, unreachable server (unless tolerated) or S3 endpoint, missing bucket.
    """
    settings = check_options(params)
    now = now or catalog.utc_now()
    warnings = []
    findings = []
    server, archiver = empty_server(False), None
    if params.get("query_server", True) is not False:
        server, archiver, more = query_server(params, connect or postgres.connect, settings["wal_segment_size"])
        warnings.extend(more)
        if server["reachable"] is False:
            findings.append(finding("server", "PostgreSQL was not reachable; only S3 was read: %s" % server["error"]))
    size = server.get("wal_segment_size")
    if size and size != settings["wal_segment_size"]:
        warnings.append("wal_segment_size %d differs from the server's %d; the server's is used"
                        % (settings["wal_segment_size"], size))
        settings["wal_segment_size"] = size

    role = None if server.get("in_recovery") is None else ("standby" if server["in_recovery"] else "primary")
    lag = archive_lag(server, archiver, settings["wal_segment_size"])
    if role == "primary" and server.get("archive_mode") == "off":
        findings.append(finding("archive_mode", "archive_mode is off on the primary: no WAL is archived"))
    if archives(server):
        failed_at, archived_at = archiver.get("last_failed_time"), archiver.get("last_archived_time")
        if archiver.get("failed_count") and failed_at is not None and (archived_at is None or failed_at > archived_at):
            findings.append(finding(
                "archive_failing", "archive_command is failing: last failure %s at %s (failed_count %d since %s), "
                "last success %s at %s" % (archiver.get("last_failed_wal"), _iso(failed_at), archiver["failed_count"],
                                           _iso(archiver.get("stats_reset")), archiver.get("last_archived_wal"),
                                           _iso(archived_at))))
    if settings["max_lag_seconds"] is not None and lag is None:
        warnings.append("max_lag_seconds was not checked: %s" % (
            "archiving happens on the primary and this server is a standby (archive_mode %s; only a standby with "
            "archive_mode=always archives)" % server.get("archive_mode") if role == "standby"
            else "the server was not read (query_server=false or unreachable)"))

    catalog.check_bucket(read_only_s3(s3), settings["bucket"], params.get("endpoint_url"),
                         missing_note=": the WAL archive cannot be read")
    s3_part = read_archive(read_only_s3(s3), settings, server if role else None, archiver, now)
    findings.extend(s3_part.pop("findings"))
    # The primary's position was read before S3: bytes_behind never counts WAL written during the listing.
    stream = read_stream(read_only_s3(s3), settings["bucket"], settings["prefix"], settings["wal_segment_size"],
                         server.get("current_lsn") if role == "primary" else None, now)

    result = {"bucket": settings["bucket"], "prefix": settings["prefix"], "role": role,
              "server": server_result(server), "archiver": archiver_result(archiver), "lag": lag}
    result.update(s3_part)
    result["stream"] = stream
    lag_problem = lag_breach(result, settings["max_lag_seconds"])
    if lag_problem:
        findings.append(finding(*lag_problem))
    stream_problem = stream_breach(stream, settings["bucket"], settings["prefix"], settings["max_stream_age_seconds"])
    if stream_problem:
        findings.append(finding("stream", stream_problem))
    result["findings"] = findings
    result["ok"] = not findings
    return result, warnings


def lag_breach(result, max_lag_seconds):
    """``(check, sentence)`` when the archiving is over ``max_lag_seconds`` or cannot be measured, else None.

    ``check`` is ``lag`` (archive_mode off on the primary, or the oldest ``.ready`` file is older than the
    threshold) or ``lag_unmeasured`` (the ``.ready`` files could not be listed).
    """
    lag = result.get("lag")
    if max_lag_seconds is None or lag is None:
        return None
    server, archiver = result["server"], result["archiver"] or {}
    if result.get("role") == "primary" and server.get("archive_mode") == "off":
        return "lag", "archive_mode is off on the primary: no WAL is archived (max_lag_seconds=%d)" % max_lag_seconds
    if lag.get("seconds") is None:
        return "lag_unmeasured", (
            "max_lag_seconds=%d could not be checked: the .ready files of pg_wal/archive_status (the WAL waiting to "
            "be archived) could not be listed: %s" % (max_lag_seconds, lag.get("error")))
    if lag["seconds"] <= max_lag_seconds:
        return None
    oldest = lag.get("oldest_ready")
    parts = ["the oldest WAL file waiting to be archived, %s, has waited %s s (pg_wal/archive_status/%s.ready since "
             "%s), more than max_lag_seconds=%d"
             % (oldest, lag["seconds"], oldest, archiver.get("oldest_ready_time"), max_lag_seconds)]
    parts.append("%d file(s) wait to be archived, %d of them WAL segments (%d bytes)"
                 % (archiver.get("ready_count") or 0, lag.get("segments") or 0, lag.get("bytes") or 0))
    if archiver.get("last_archived_wal"):
        parts.append("last archived %s at %s" % (archiver["last_archived_wal"], archiver.get("last_archived_time")))
    else:
        parts.append("nothing archived since %s" % (archiver.get("stats_reset") or "the statistics were reset"))
    if archiver.get("failed_count"):
        parts.append("last failure: %s at %s (failed_count %d since %s)" % (
            archiver.get("last_failed_wal"), archiver.get("last_failed_time"), archiver["failed_count"],
            archiver.get("stats_reset")))
    else:
        parts.append("no failed attempt since %s: the archive_command succeeds but does not keep up, or hangs"
                     % (archiver.get("stats_reset") or "the statistics were reset"))
    return "lag", "; ".join(parts)


def failure(result, params):
    """The :class:`RtxDrError` the module fails with (details: the whole result), or None."""
    settings_gap = params.get("fail_on_gap", True) is not False
    messages = []
    hints = []
    by_check = {}
    for item in result["findings"]:
        by_check.setdefault(item["check"], []).append(item["message"])
    if settings_gap and result["gaps"]:
        parts = [m for check in GAP_CHECKS for m in by_check.get(check, ())]
        text = "WAL archive gap (fail_on_gap): %s" % "; ".join(parts)
        window = result.get("recoverable_window")
        if window:
            text += ". Point-in-time recovery from backup %s reaches %s (%s) at most" % (
                window["backup_id"], window["latest_time"], window["latest_lsn"])
        if result.get("backup_after_gap"):
            text += "; backup %s starts after the gap" % result["backup_after_gap"]
        messages.append(text)
        hints.append(GAP_HINT)
        if "history" in by_check:
            hints.append(HISTORY_HINT)
    if "lag" in by_check:
        messages.append("WAL archiving lag: %s" % by_check["lag"][0])
        hints.append(LAG_HINT)
    if "lag_unmeasured" in by_check:
        messages.append("WAL archiving lag: %s" % by_check["lag_unmeasured"][0])
        hints.append(PERMISSION_HINT + " Or leave max_lag_seconds unset to only report the other facts.")
    if "stream" in by_check:
        messages.append("WAL stream is stale: %s" % by_check["stream"][0])
        hints.append(STREAM_HINT)
    if not messages:
        return None
    return RtxDrError(". ".join(messages), hint=" ".join(hints), details=result)

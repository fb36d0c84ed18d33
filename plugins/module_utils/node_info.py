# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Read-only facts about one PostgreSQL server: role, timeline, LSNs, replication.

Used by the ``rtx.dr.pg_node_info`` module. Everything here only reads
(``SELECT``), so it is safe in check mode and on any node at any time.
"""

from __future__ import annotations

import datetime
import decimal

from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import lsn_diff
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_all
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_one
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_optional

MIN_SERVER_VERSION_NUM = 100000

# Server settings reported as-is (text) by pg_node_info.
SETTINGS = (
    "synchronous_standby_names",
    "synchronous_commit",
    "primary_slot_name",
    "data_directory",
    "wal_level",
    "archive_mode",
)

# Every key pg_node_info returns besides changed/reachable/error, so a result
# always has the same shape (None when unknown or not applicable).
NODE_INFO_KEYS = (
    "in_recovery",
    "role",
    "server_version",
    "server_version_num",
    "system_identifier",
    "timeline",
    "current_lsn",
    "receive_lsn",
    "replay_lsn",
    "replay_lag_bytes",
    "last_replay_time",
    "replay_paused",
    "wal_receiver",
    "replication",
    "wal_segment_size",
    "upstream_host",
) + SETTINGS

WAL_RECEIVER_KEYS = (
    "status",
    "sender_host",
    "sender_port",
    "slot_name",
    "received_tli",
    "written_lsn",
    "flushed_lsn",
    "latest_end_lsn",
    "last_msg_receipt_time",
)

REPLICATION_KEYS = (
    "pid",
    "application_name",
    "client_addr",
    "state",
    "sync_state",
    "sync_priority",
    "sent_lsn",
    "write_lsn",
    "flush_lsn",
    "replay_lsn",
    "write_lag",
    "flush_lag",
    "replay_lag",
    "reply_time",
)


def empty_node_info():
    """A result with every key of :data:`NODE_INFO_KEYS` set to None (``replication`` to [])."""
    info = dict.fromkeys(NODE_INFO_KEYS)
    info["replication"] = []
    return info


def to_jsonable(value):
    """Convert a value from either driver into something ``exit_json`` prints the same way.

    Timestamps become ISO 8601 text, intervals seconds (float), numerics int or
    float, addresses (psycopg 3 returns ``ipaddress`` objects for ``inet``) and
    any other type text.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict):
        return dict((str(k), to_jsonable(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return str(value)


def _lag(ahead, behind):
    if ahead is None or behind is None:
        return None
    try:
        return lsn_diff(ahead, behind)
    except InvalidValueError:
        return None


def conninfo_host(conninfo):
    """The ``host`` of a libpq key/value connection string, or None.

    Only the host is ever returned: a ``primary_conninfo`` may hold a password,
    which must not reach a module result. Quoted values (``host='a b'``) and
    backslash escapes are handled as libpq does; URIs are not parsed.
    """
    if not conninfo:
        return None
    text = conninfo
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        key_start = i
        while i < n and text[i] not in "= \t\n":
            i += 1
        key = text[key_start:i]
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=":
            return None
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value = []
        if i < n and text[i] == "'":
            i += 1
            while i < n and text[i] != "'":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
        if key == "host":
            return "".join(value) or None
    return None


def _settings(conn):
    rows = query_all(
        conn,
        "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
        (["server_version", "server_version_num", "wal_segment_size", "primary_conninfo"] + list(SETTINGS),),
    )
    return dict((row["name"], row["setting"]) for row in rows)


def _wal_receiver(conn, warnings):
    row = query_optional(conn, "SELECT * FROM pg_catalog.pg_stat_wal_receiver", warnings, "pg_stat_wal_receiver")
    if not row:
        return None
    if "flushed_lsn" not in row and "received_lsn" in row:
        # PostgreSQL < 13 named it received_lsn.
        row["flushed_lsn"] = row["received_lsn"]
    return dict((key, to_jsonable(row.get(key))) for key in WAL_RECEIVER_KEYS)


def _replication(conn, reference_lsn):
    rows = query_all(conn, "SELECT * FROM pg_catalog.pg_stat_replication ORDER BY application_name, pid")
    result = []
    for row in rows:
        item = dict((key, to_jsonable(row.get(key))) for key in REPLICATION_KEYS)
        item["flush_lag_bytes"] = _lag(reference_lsn, item["flush_lsn"])
        item["replay_lag_bytes"] = _lag(reference_lsn, item["replay_lsn"])
        result.append(item)
    return result


def gather_node_info(conn):
    """Read the facts pg_node_info reports from an open connection.

    :returns: ``(info, warnings)``: ``info`` has every key of :data:`NODE_INFO_KEYS`;
        ``warnings`` lists facts that could not be read (e.g. for lack of
        privileges) and were reported as None.
    :raises QueryFailedError: a query every supported server answers failed.
    :raises RtxDrError: the server is older than PostgreSQL 10.
    """
    warnings = []
    info = empty_node_info()

    settings = _settings(conn)
    version_num = int(settings.get("server_version_num") or 0)
    if version_num < MIN_SERVER_VERSION_NUM:
        raise RtxDrError(
            "PostgreSQL server version %s is not supported (10 or newer is needed)"
            % settings.get("server_version", version_num),
            hint="Point the task at a PostgreSQL 10+ server.",
            details={"server_version_num": version_num},
        )
    info["server_version"] = settings.get("server_version")
    info["server_version_num"] = version_num
    if settings.get("wal_segment_size"):
        info["wal_segment_size"] = int(settings["wal_segment_size"])
    for name in SETTINGS:
        # Absent when the login role may not read it (e.g. data_directory
        # without pg_read_all_settings) or the server is too old for it.
        info[name] = settings.get(name)
    if info["data_directory"] is None:
        warnings.append(
            "data_directory is not visible to this login role; grant it pg_read_all_settings "
            "or connect as a superuser to see it."
        )

    info["in_recovery"] = bool(query_one(conn, "SELECT pg_catalog.pg_is_in_recovery() AS r")["r"])
    info["role"] = "standby" if info["in_recovery"] else "primary"

    row = query_optional(
        conn,
        "SELECT system_identifier::text AS system_identifier FROM pg_catalog.pg_control_system()",
        warnings,
        "pg_control_system()",
    )
    info["system_identifier"] = row["system_identifier"] if row else None

    row = query_optional(
        conn,
        "SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()",
        warnings,
        "pg_control_checkpoint()",
    )
    checkpoint_timeline = row["timeline_id"] if row else None

    row = query_one(
        conn,
        "SELECT pg_catalog.pg_last_wal_receive_lsn()::text AS receive_lsn,"
        " pg_catalog.pg_last_wal_replay_lsn()::text AS replay_lsn,"
        " pg_catalog.pg_last_xact_replay_timestamp() AS last_replay_time",
    )
    info["receive_lsn"] = row["receive_lsn"]
    info["replay_lsn"] = row["replay_lsn"]

    if info["in_recovery"]:
        info["last_replay_time"] = to_jsonable(row["last_replay_time"])
        info["replay_lag_bytes"] = _lag(info["receive_lsn"], info["replay_lsn"])
        row = query_optional(conn, "SELECT pg_catalog.pg_is_wal_replay_paused() AS p", warnings, "replay pause state")
        info["replay_paused"] = bool(row["p"]) if row else None
        info["wal_receiver"] = _wal_receiver(conn, warnings)
        info["upstream_host"] = conninfo_host(settings.get("primary_conninfo"))
        received_tli = (info["wal_receiver"] or {}).get("received_tli")
        info["timeline"] = received_tli or checkpoint_timeline
        reference_lsn = info["receive_lsn"] or info["replay_lsn"]
    else:
        row = query_one(
            conn,
            "SELECT pg_catalog.pg_current_wal_lsn()::text AS lsn,"
            " pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) AS walfile",
        )
        info["current_lsn"] = row["lsn"]
        # The WAL file being written carries the timeline the server inserts
        # on now; pg_control_checkpoint() lags right after a promotion until
        # the next checkpoint.
        try:
            info["timeline"] = parse_wal_segment_name(
                row["walfile"], info["wal_segment_size"] or 16 * 1024 * 1024
            ).timeline
        except InvalidValueError:
            info["timeline"] = checkpoint_timeline
        reference_lsn = info["current_lsn"]

    info["replication"] = _replication(conn, reference_lsn)
    return info, warnings

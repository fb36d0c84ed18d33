# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Unit tests of module_utils/walstatus.py: a scripted fake PostgreSQL connection and a moto S3 archive."""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position
from scripted_db import PermissionDenied, ScriptedConnection  # noqa: E402 pylint: disable=wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import walstatus  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import wal_segment_name  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.walchain import segment_name  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024
SEG = 16 * MIB
PREFIX = "pgbackup/statustest"
WAL = PREFIX + "/wal/"
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 27, 3, 20, tzinfo=UTC)
T0 = datetime.datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def name(timeline, segno):
    return segment_name(timeline, segno)


def archiver_row(last=None, last_time=None, failed=0, last_failed=None, failed_time=None, now=NOW):
    return {"archived_count": 10 if last else 0, "last_archived_wal": last, "last_archived_time": last_time,
            "failed_count": failed, "last_failed_wal": last_failed, "last_failed_time": failed_time,
            "stats_reset": T0, "now": now}


def ready_row(files=()):
    """The answer to walstatus.READY_SQL for ``.ready`` files ``[(name, seconds_waiting)]`` at NOW."""
    files = list(files)
    oldest = max(files, key=lambda item: (item[1], item[0])) if files else (None, None)
    return [{"ready_count": len(files), "ready_segments": sum(1 for n, _age in files if len(n) == 24),
             "oldest_ready": oldest[0],
             "oldest_ready_time": NOW - datetime.timedelta(seconds=oldest[1]) if files else None}]


def waiting(first_segno, count, oldest_age, timeline=1):
    """``count`` .ready segments from ``first_segno``, the first waiting ``oldest_age`` s, each next 1 s less."""
    return [(name(timeline, first_segno + i), oldest_age - i) for i in range(count)]


def server_script(in_recovery=False, archiver=None, ready=(), lsn="0/7000100", walfile=None, timeline=1,
                  archive_mode="on", segment_size=SEG):
    """Answers of a primary (or standby) for read_server(); ``ready``: .ready files (:func:`ready_row`) or an error."""
    settings = [{"name": "archive_mode", "setting": archive_mode}, {"name": "archive_timeout", "setting": "60"},
                {"name": "wal_segment_size", "setting": str(segment_size)}]
    script = [
        ("pg_catalog.pg_settings", settings),
        ("pg_is_in_recovery", [{"r": in_recovery}]),
        ("pg_stat_archiver", [archiver or archiver_row()]),
        ("pg_ls_archive_statusdir", ready if isinstance(ready, Exception) else ready_row(ready)),
        ("pg_control_checkpoint", [{"timeline_id": timeline}]),
    ]
    if not in_recovery:
        walfile = walfile or wal_segment_name(timeline, lsn, end_position=True)
        script.append(("pg_current_wal_lsn", [{"lsn": lsn, "walfile": walfile}]))
    return script


def connector(script, seen=None):
    def connect(params):
        conn = ScriptedConnection(script)
        if seen is not None:
            seen.append(conn)
        return conn

    return connect


def refuse(server_down):
    def connect(params):
        raise ConnectionFailedError("Cannot connect to PostgreSQL at db9 port 5432: boom", hint="Check it",
                                    details={"reason": "unreachable"}, server_down=server_down)

    return connect


# --------------------------------------------------------------------------
# The archive in S3
# --------------------------------------------------------------------------


def put_backup(s3, bucket_name, day, start_lsn, stop_lsn, timeline=1, status="complete", wal_included=True):
    started = T0 + datetime.timedelta(days=day)
    backup_id = catalog.new_backup_id("physical", started)
    record = {
        "format_version": 1, "backup_id": backup_id, "kind": "physical", "status": status, "timeline": timeline,
        "start_lsn": start_lsn, "stop_lsn": stop_lsn, "start_wal": wal_segment_name(timeline, start_lsn),
        "stop_wal": wal_segment_name(timeline, stop_lsn), "started_at": catalog.isoformat(started),
        "finished_at": catalog.isoformat(started + datetime.timedelta(minutes=3)), "wal_included": wal_included,
        "objects": [], "encryption": "none",
    }
    catalog.write_record(s3, bucket_name, PREFIX, record)
    return record


def put_wal(s3, bucket_name, names, suffix=".zst"):
    for item in names:
        if item.endswith(".history"):
            raise AssertionError("use put_history")
        extra = "" if item.endswith((".partial", ".backup")) else suffix
        s3.put_object(Bucket=bucket_name, Key="%s%s/%s%s" % (WAL, item[:8], item, extra), Body=b"w")


def put_history(s3, bucket_name, timeline, text):
    s3.put_object(Bucket=bucket_name, Key="%s%08X.history" % (WAL, timeline), Body=text.encode())


def params_for(aws, bucket_name, **overrides):
    params = dict(aws)
    params.update(bucket=bucket_name, prefix=PREFIX, cluster_name=None, wal_segment_size=SEG, query_server=True,
                  fail_on_unreachable=True, since="oldest_backup", max_lag_seconds=None, fail_on_gap=True,
                  max_stream_age_seconds=None)
    params.update(overrides)
    return params


@pytest.fixture
def archive(s3_client, bucket):
    """Two complete backups (segments 2 and 5), a running one, and timeline 1 segments 2..7 archived."""
    old = put_backup(s3_client, bucket, 0, "0/2000028", "0/2000138")
    new = put_backup(s3_client, bucket, 1, "0/5000028", "0/5000138")
    put_backup(s3_client, bucket, 2, "0/7000028", "0/7000138", status="running")
    put_wal(s3_client, bucket, [name(1, n) for n in range(2, 8)])
    put_wal(s3_client, bucket, [name(1, 2) + ".00000028.backup"])
    return {"old": old, "new": new}


def status(s3, aws, bucket_name, script=None, connect=None, now=NOW, **overrides):
    params = params_for(aws, bucket_name, **overrides)
    if connect is None and script is not None:
        connect = connector(script)
    if connect is None:
        params["query_server"] = False
    result, warnings = walstatus.wal_status(params, s3, connect=connect, now=now)
    return result, warnings, walstatus.failure(result, params)


def checks(result):
    return [f["check"] for f in result["findings"]]


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def test_argument_spec_has_every_option():
    spec = walstatus.wal_status_argument_spec()
    for option in ("bucket", "prefix", "cluster_name", "wal_segment_size", "query_server", "fail_on_unreachable",
                   "since", "max_lag_seconds", "fail_on_gap", "login_host", "login_password", "region",
                   "endpoint_url", "secret_key"):
        assert option in spec
    assert spec["since"]["default"] == "oldest_backup"
    assert spec["fail_on_gap"]["default"] is True
    assert spec["max_lag_seconds"].get("default") is None
    assert spec["max_stream_age_seconds"]["type"] == "int" and spec["max_stream_age_seconds"].get("default") is None


def test_check_options():
    base = {"bucket": "b", "cluster_name": "main"}
    assert walstatus.check_options(base) == {"bucket": "b", "prefix": "pgbackup/main", "wal_segment_size": SEG,
                                             "since": "oldest_backup", "max_lag_seconds": None, "fail_on_gap": True,
                                             "max_stream_age_seconds": None}
    assert walstatus.check_options(dict(base, max_stream_age_seconds=0))["max_stream_age_seconds"] == 0
    settings = walstatus.check_options(dict(base, since="20261127T031500.123Z-F", max_lag_seconds=0,
                                            fail_on_gap=False, wal_segment_size=MIB))
    assert settings["since"] == "20261127T031500.123Z-F" and settings["max_lag_seconds"] == 0
    assert settings["fail_on_gap"] is False and settings["wal_segment_size"] == MIB
    assert walstatus.check_options(dict(base, since="latest_backup"))["since"] == "latest_backup"


@pytest.mark.parametrize("overrides,words", [
    ({"bucket": None}, "Option bucket is required"),
    ({"cluster_name": None}, "Neither prefix nor cluster_name"),
    ({"since": "newest"}, "Invalid since 'newest'"),
    ({"since": "20261127T031500.123Z-L"}, "is a logical backup"),
    ({"max_lag_seconds": -1}, "Invalid max_lag_seconds -1"),
    ({"max_stream_age_seconds": -1}, "Invalid max_stream_age_seconds -1"),
    ({"wal_segment_size": 1000}, "Invalid wal_segment_size"),
])
def test_check_options_errors(overrides, words):
    params = {"bucket": "b", "cluster_name": "main"}
    params.update(overrides)
    with pytest.raises(InvalidValueError, match=words):
        walstatus.check_options(params)


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


def test_read_server_primary():
    archiver = archiver_row(name(1, 6), NOW - datetime.timedelta(seconds=30))
    ready = [(name(1, 5), 40.0), ("00000002.history", 12.5)]
    conn = ScriptedConnection(server_script(archiver=archiver, ready=ready, lsn="0/7000100", timeline=1))
    server, facts, warnings = walstatus.read_server(conn)
    assert warnings == []
    assert server == {"queried": True, "reachable": True, "error": None, "in_recovery": False, "timeline": 1,
                      "current_lsn": "0/7000100", "current_wal": name(1, 7), "archive_mode": "on",
                      "archive_timeout": 60, "wal_segment_size": SEG, "now": NOW}
    assert facts["last_archived_wal"] == name(1, 6) and facts["ready_count"] == 2 and facts["ready_segments"] == 1
    assert facts["oldest_ready"] == name(1, 5) and facts["oldest_ready_age_seconds"] == 40.0
    assert facts["archived_count"] == 10 and facts["failed_count"] == 0
    assert facts["stats_reset"] == T0 and facts["ready_error"] is None
    assert any("pg_ls_archive_statusdir() WHERE name LIKE '%.ready'" in q for q in conn.queries)
    shown = walstatus.archiver_result(facts)
    assert set(shown) == set(walstatus.ARCHIVER_KEYS)
    assert shown["last_archived_time"] == "2026-11-27T03:19:30.000000Z"
    assert shown["oldest_ready_time"] == "2026-11-27T03:19:20.000000Z"
    assert walstatus.server_result(server)["now"] == "2026-11-27T03:20:00.000000Z"


def test_read_server_timeline_of_a_fresh_promotion():
    # pg_control_checkpoint() still says 1 right after the promotion; the WAL file being written says 2.
    conn = ScriptedConnection(server_script(timeline=1, walfile=name(2, 7)))
    server, _facts, _warnings = walstatus.read_server(conn)
    assert server["timeline"] == 2


def test_read_server_standby_and_missing_privilege():
    conn = ScriptedConnection(server_script(in_recovery=True, timeline=3, ready=PermissionDenied("denied")))
    server, facts, warnings = walstatus.read_server(conn)
    assert server["in_recovery"] is True and server["timeline"] == 3
    assert server["current_lsn"] is None and server["current_wal"] is None
    assert facts["ready_count"] is None and facts["oldest_ready"] is None and facts["oldest_ready_age_seconds"] is None
    assert "denied" in facts["ready_error"]
    assert len(warnings) == 1
    assert warnings[0].startswith("Could not list the .ready files of pg_wal/archive_status with "
                                  "pg_ls_archive_statusdir() (superuser or pg_monitor only): PostgreSQL query failed: "
                                  "denied. The archive lag is not measured")
    assert "GRANT pg_monitor TO <login_user>" in warnings[0]
    assert not any("pg_current_wal_lsn" in q for q in conn.queries)


def test_query_server_closes_the_connection():
    seen = []
    server, facts, _warnings = walstatus.query_server({}, connector(server_script(), seen))
    assert server["reachable"] is True and facts is not None
    assert seen[0].closed


def test_query_server_unreachable():
    server, facts, warnings = walstatus.query_server({"fail_on_unreachable": False}, refuse(True))
    assert server["reachable"] is False and "boom" in server["error"] and facts is None and warnings == []
    with pytest.raises(ConnectionFailedError):
        walstatus.query_server({"fail_on_unreachable": True}, refuse(True))
    with pytest.raises(ConnectionFailedError):  # a refused login is never tolerated
        walstatus.query_server({"fail_on_unreachable": False}, refuse(False))


# --------------------------------------------------------------------------
# archive_lag
# --------------------------------------------------------------------------


def lag_of(last, ready=(), lsn="0/7000100", in_recovery=False, archive_mode="on", listed=True):
    """archive_lag() of facts as read_server() returns them (``ready``: ``[(name, seconds_waiting)]``)."""
    server = {"in_recovery": in_recovery, "current_lsn": None if in_recovery else lsn, "now": NOW,
              "archive_mode": archive_mode}
    archiver = {"last_archived_wal": last, "last_archived_time": NOW - datetime.timedelta(seconds=90) if last else None,
                "ready_error": None if listed else "PostgreSQL query failed: permission denied",
                "oldest_ready_age_seconds": None}
    if listed:
        row = ready_row(ready)[0]
        archiver.update(row)
        if row["oldest_ready_time"] is not None:
            archiver["oldest_ready_age_seconds"] = (NOW - row["oldest_ready_time"]).total_seconds()
    else:
        archiver.update(ready_count=None, ready_segments=None, oldest_ready=None, oldest_ready_time=None)
    return walstatus.archive_lag(server, archiver, SEG)


def test_lag_idle_primary():
    # Nothing written since segment 6 was archived 90 s ago (or 3 h ago: the age of the last archived file does
    # not matter): nothing waits, no lag.
    lag = lag_of(name(1, 6), lsn="0/7000000")
    assert lag == {"seconds": 0.0, "segments": 0, "bytes": 0, "pending": False, "oldest_ready": None,
                   "data_at_risk_bytes": 0, "error": None}


def test_lag_busy_primary_that_keeps_up():
    # Segment 7 is being written: its data is at risk, but nothing waits for the archiver.
    lag = lag_of(name(1, 6), lsn="0/7000100")
    assert lag["seconds"] == 0.0 and lag["pending"] is False and lag["segments"] == 0
    assert lag["data_at_risk_bytes"] == 0x100


def test_lag_is_the_age_of_the_oldest_ready_file():
    lag = lag_of(name(1, 6), ready=waiting(7, 2, 300.0), lsn="0/9800000")
    assert lag == {"seconds": 300.0, "segments": 2, "bytes": 2 * SEG, "pending": True, "oldest_ready": name(1, 7),
                   "data_at_risk_bytes": 0x9800000 - 0x7000000, "error": None}
    # archived a second ago does not make the oldest waiting file younger
    assert lag_of(name(1, 8), ready=waiting(9, 40, 308.0), lsn="0/32000000")["seconds"] == 308.0


def test_lag_counts_only_segments_in_segments_and_bytes():
    # a waiting timeline history or backup history file is a waiting file (seconds, pending), not a segment
    lag = lag_of(name(1, 6), ready=[("00000002.history", 20.0), (name(1, 3) + ".00000028.backup", 5.0)],
                 lsn="0/7000000")
    assert lag["pending"] is True and lag["seconds"] == 20.0 and lag["oldest_ready"] == "00000002.history"
    assert lag["segments"] == 0 and lag["bytes"] == 0


def test_lag_never_archived():
    lag = lag_of(None, ready=waiting(1, 2, 50.0), lsn="0/3000100")
    assert lag["seconds"] == 50.0 and lag["segments"] == 2 and lag["pending"] is True
    assert lag["data_at_risk_bytes"] is None  # no last archived segment to count from
    # a fresh cluster whose first segment is not complete yet does not lag
    assert lag_of(None, lsn="0/1000100")["seconds"] == 0.0


def test_data_at_risk_after_history_partial_and_backup_files():
    # a history file says nothing about segments
    assert lag_of("00000002.history", lsn="0/5000200")["data_at_risk_bytes"] is None
    # the old timeline's .partial of segment 5 does not hold the new timeline's segment 5: counted from its start
    assert lag_of(name(1, 5) + ".partial", lsn="0/5000200")["data_at_risk_bytes"] == 0x200
    # a backup history file names the backup's start segment: no byte count from it
    assert lag_of(name(1, 3) + ".00000028.backup", lsn="0/4000100")["data_at_risk_bytes"] is None
    # never negative
    assert lag_of(name(1, 6), lsn="0/6000100")["data_at_risk_bytes"] == 0


def test_lag_without_permission_is_unknown_not_guessed():
    lag = lag_of(name(1, 6), lsn="0/9000000", listed=False)
    assert lag["seconds"] is None and lag["segments"] is None and lag["bytes"] is None and lag["pending"] is None
    assert lag["error"] == "PostgreSQL query failed: permission denied"
    assert lag["data_at_risk_bytes"] == 0x2000000  # pg_current_wal_lsn() needs no privilege


def test_lag_on_standbys():
    # archive_mode=on: the standby does not archive (the primary does)
    assert lag_of(name(1, 6), in_recovery=True) is None
    assert lag_of(name(1, 6), in_recovery=True, archive_mode="off") is None
    # archive_mode=always: it archives what it receives; its .ready files are its lag
    lag = lag_of(name(1, 6), ready=waiting(7, 1, 75.0), in_recovery=True, archive_mode="always")
    assert lag["seconds"] == 75.0 and lag["oldest_ready"] == name(1, 7) and lag["data_at_risk_bytes"] is None
    assert walstatus.archive_lag({"in_recovery": False}, None) is None
    assert walstatus.archive_lag(None, {}) is None


# --------------------------------------------------------------------------
# wal_status: S3 and server together
# --------------------------------------------------------------------------


def test_healthy_primary(s3_client, aws_params, bucket, archive):
    archiver = archiver_row(name(1, 7), NOW - datetime.timedelta(seconds=20))
    calls = []
    s3_client.meta.events.register("before-call.s3.*", lambda model, **kw: calls.append(model.name))
    result, warnings, error = status(s3_client, aws_params, bucket, server_script(archiver=archiver, lsn="0/8000100"))
    assert error is None and warnings == []
    assert set(result) == set(walstatus.RESULT_KEYS)
    assert result["ok"] is True and result["findings"] == [] and result["gaps"] == []
    assert result["role"] == "primary"
    assert result["lag"] == {"seconds": 0.0, "segments": 0, "bytes": 0, "pending": False, "oldest_ready": None,
                             "data_at_risk_bytes": 0x100, "error": None}
    assert result["archiver"]["ready_count"] == 0 and result["archiver"]["oldest_ready"] is None
    assert result["archiver"]["last_archived_wal"] == name(1, 7)
    assert result["backups"] == {"complete": 2, "oldest": archive["old"]["backup_id"],
                                 "latest": archive["new"]["backup_id"]}
    assert result["since_backup"]["backup_id"] == archive["old"]["backup_id"]
    assert result["since_backup"]["stop_time"] == archive["old"]["finished_at"]
    assert result["timeline_path"] == [{"timeline": 1, "begin_lsn": "0/0", "end_lsn": None}]
    chain = result["chain"]
    assert chain["start_lsn"] == "0/2000138" and chain["first"] == name(1, 2) and chain["last"] == name(1, 7)
    assert chain["needed"] == chain["present"] == 6
    archived = result["archive"]
    assert archived["newest_segment"] == name(1, 7) and archived["segments"] == 6
    assert archived["latest_timeline"] == 1 and archived["timelines"] == [1]
    assert archived["last_archived_wal_in_s3"] is True
    assert archived["newest_segment_time"].endswith("Z")
    window = result["recoverable_window"]
    assert window == {"backup_id": archive["old"]["backup_id"], "earliest_time": archive["old"]["finished_at"],
                      "earliest_lsn": "0/2000138", "latest_time": chain["contiguous_until_time"],
                      "latest_lsn": "0/8000000", "latest_segment": name(1, 7), "timeline": 1}
    assert result["backup_after_gap"] is None
    assert result["stream"] == {"found": False}  # streaming mode is off: nothing under wal-stream/
    # read-only: only read calls reached S3
    assert calls and set(calls) <= {"HeadBucket", "GetObject", "ListObjectsV2"}


def test_gap_fails_with_names_and_what_to_do(s3_client, aws_params, bucket, archive):
    s3_client.delete_object(Bucket=bucket, Key="%s00000001/%s.zst" % (WAL, name(1, 3)))
    archiver = archiver_row(name(1, 7), NOW - datetime.timedelta(seconds=20))
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(archiver=archiver))
    assert result["gaps"] == [name(1, 3)]
    assert checks(result) == ["gap"] and result["ok"] is False
    assert result["chain"]["contiguous_until"] == name(1, 2)
    window = result["recoverable_window"]
    assert window["latest_segment"] == name(1, 2) and window["latest_lsn"] == "0/3000000"
    # the newer backup (segment 5) starts after the gap
    assert result["backup_after_gap"] == archive["new"]["backup_id"]
    assert isinstance(error, RtxDrError)
    assert error.msg.startswith("WAL archive gap (fail_on_gap): 1 WAL segment(s) missing from the archive "
                                "s3://%s/%s: %s (contiguous up to %s, archived " % (bucket, WAL, name(1, 3),
                                                                                    name(1, 2)))
    assert "reaches %s (0/3000000) at most" % window["latest_time"] in error.msg
    assert "backup %s starts after the gap" % archive["new"]["backup_id"] in error.msg
    assert "playbooks/backup_incremental.yml" in error.hint and "new full backup" in error.hint
    assert "history" not in error.hint
    assert error.details["gaps"] == [name(1, 3)] and error.details["recoverable_window"] == window
    # the same without fail_on_gap: facts only
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(archiver=archiver),
                                      fail_on_gap=False)
    assert error is None and result["gaps"] == [name(1, 3)]
    # since the latest backup there is no gap
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(archiver=archiver),
                                      since="latest_backup")
    assert error is None and result["gaps"] == [] and result["chain"]["first"] == name(1, 5)
    assert result["recoverable_window"]["earliest_lsn"] == "0/5000138"


def test_since_a_backup_id(s3_client, aws_params, bucket, archive):
    result, _warnings, _error = status(s3_client, aws_params, bucket, since=archive["new"]["backup_id"])
    assert result["since_backup"]["backup_id"] == archive["new"]["backup_id"]
    with pytest.raises(RtxDrError, match="has no catalog record") as info:
        status(s3_client, aws_params, bucket, since="20200101T000000.000Z-F")
    assert info.value.hint
    running = catalog.list_records(s3_client, bucket, PREFIX, status="running")[0]["backup_id"]
    with pytest.raises(RtxDrError, match="is running, not complete"):
        status(s3_client, aws_params, bucket, since=running)


def test_s3_only(s3_client, aws_params, bucket, archive):
    result, warnings, error = status(s3_client, aws_params, bucket, max_lag_seconds=10)
    assert error is None
    assert result["role"] is None and result["archiver"] is None and result["lag"] is None
    assert result["server"]["queried"] is False and result["server"]["reachable"] is None
    assert result["archive"]["last_archived_wal_in_s3"] is None
    assert result["ok"] is True and result["recoverable_window"]["latest_segment"] == name(1, 7)
    assert warnings == ["max_lag_seconds was not checked: the server was not read (query_server=false or "
                        "unreachable)"]


def test_unreachable_server_tolerated(s3_client, aws_params, bucket, archive):
    result, _warnings, error = status(s3_client, aws_params, bucket, connect=refuse(True), fail_on_unreachable=False)
    assert error is None
    assert result["server"]["reachable"] is False and "boom" in result["server"]["error"]
    assert checks(result) == ["server"] and result["role"] is None
    assert result["recoverable_window"] is not None
    with pytest.raises(ConnectionFailedError):
        status(s3_client, aws_params, bucket, connect=refuse(True))


def test_standby(s3_client, aws_params, bucket, archive):
    result, warnings, error = status(s3_client, aws_params, bucket, server_script(in_recovery=True),
                                     max_lag_seconds=1)
    assert error is None and result["role"] == "standby" and result["lag"] is None
    assert result["archive"]["last_archived_wal_in_s3"] is None
    assert warnings == ["max_lag_seconds was not checked: archiving happens on the primary and this server is a "
                        "standby (archive_mode on; only a standby with archive_mode=always archives)"]


def test_idle_primary_never_fails_the_lag_threshold(s3_client, aws_params, bucket, archive):
    # Segment 7 was archived 3 hours ago and nothing was written since: nothing waits, nothing to alarm about.
    archiver = archiver_row(name(1, 7), NOW - datetime.timedelta(hours=3))
    result, warnings, error = status(s3_client, aws_params, bucket, server_script(archiver=archiver, lsn="0/8000000"),
                                     max_lag_seconds=60)
    assert error is None and warnings == [] and result["ok"] is True
    assert result["lag"]["seconds"] == 0.0 and result["lag"]["pending"] is False
    assert result["lag"]["data_at_risk_bytes"] == 0
    # a few records written since (e.g. a checkpoint's): at risk until the next switch, but still nothing waits
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(archiver=archiver, lsn="0/8000060"),
                                      max_lag_seconds=60)
    assert error is None and result["lag"]["seconds"] == 0.0 and result["lag"]["data_at_risk_bytes"] == 0x60


def test_one_old_ready_file_fails_the_threshold_naming_it(s3_client, aws_params, bucket, archive):
    archiver = archiver_row(name(1, 7), NOW - datetime.timedelta(seconds=700))
    script = server_script(archiver=archiver, ready=[(name(1, 8), 425.0)], lsn="0/9000100")
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=300)
    assert result["lag"] == {"seconds": 425.0, "segments": 1, "bytes": SEG, "pending": True,
                             "oldest_ready": name(1, 8), "data_at_risk_bytes": 0x1000100, "error": None}
    assert result["archiver"]["oldest_ready"] == name(1, 8)
    assert result["archiver"]["oldest_ready_time"] == "2026-11-27T03:12:55.000000Z"
    assert result["archiver"]["oldest_ready_age_seconds"] == 425.0
    assert checks(result) == ["lag"]
    assert error.msg == (
        "WAL archiving lag: the oldest WAL file waiting to be archived, %s, has waited 425.0 s "
        "(pg_wal/archive_status/%s.ready since 2026-11-27T03:12:55.000000Z), more than max_lag_seconds=300; "
        "1 file(s) wait to be archived, 1 of them WAL segments (16777216 bytes); last archived %s at "
        "2026-11-27T03:08:20.000000Z; no failed attempt since 2026-11-20T02:00:00.000000Z: the archive_command "
        "succeeds but does not keep up, or hangs" % (name(1, 8), name(1, 8), name(1, 7)))
    assert "archive_command" in error.hint and "endpoint" in error.hint
    assert error.details["lag"]["seconds"] == 425.0
    # under the threshold: reported, not failed; no threshold: no lag finding
    for overrides in ({"max_lag_seconds": 500}, {}):
        result, _warnings, error = status(s3_client, aws_params, bucket, script, **overrides)
        assert error is None and checks(result) == [] and result["lag"]["seconds"] == 425.0


def test_lag_threshold_with_a_failing_archive_command(s3_client, aws_params, bucket, archive):
    archiver = archiver_row(name(1, 7), NOW - datetime.timedelta(seconds=425), failed=12, last_failed=name(1, 8),
                            failed_time=NOW - datetime.timedelta(seconds=5))
    script = server_script(archiver=archiver, ready=waiting(8, 3, 420.0), lsn="0/A800000")
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=300)
    assert result["lag"]["seconds"] == 420.0 and result["lag"]["segments"] == 3 and result["lag"]["bytes"] == 3 * SEG
    assert result["lag"]["data_at_risk_bytes"] == 0xA800000 - 0x8000000
    assert checks(result) == ["archive_failing", "lag"]
    assert error.msg.startswith("WAL archiving lag: the oldest WAL file waiting to be archived, %s, has waited "
                                "420.0 s" % name(1, 8))
    assert error.msg.endswith("3 file(s) wait to be archived, 3 of them WAL segments (%d bytes); last archived %s at "
                              "2026-11-27T03:12:55.000000Z; last failure: %s at 2026-11-27T03:19:55.000000Z "
                              "(failed_count 12 since 2026-11-20T02:00:00.000000Z)"
                              % (3 * SEG, name(1, 7), name(1, 8)))
    failing = result["findings"][0]["message"]
    assert failing.startswith("archive_command is failing: last failure %s at 2026-11-27T03:19:55.000000Z "
                              "(failed_count 12 since 2026-11-20T02:00:00.000000Z)" % name(1, 8))
    # under the threshold: reported, not failed
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=500)
    assert error is None and checks(result) == ["archive_failing"]


def test_archiving_that_falls_behind_while_succeeding_fails(s3_client, aws_params, bucket, archive):
    # The benchmark's case: a segment is archived every second, but 40 wait and the oldest for 308 s.
    archiver = archiver_row(name(1, 7), NOW - datetime.timedelta(seconds=1))
    script = server_script(archiver=archiver, ready=waiting(8, 40, 308.0), lsn="0/30000100")
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=120)
    assert result["lag"]["seconds"] == 308.0 and result["lag"]["segments"] == 40
    assert checks(result) == ["lag"] and "%s, has waited 308.0 s" % name(1, 8) in error.msg


def test_lag_and_gap_fail_together(s3_client, aws_params, bucket, archive):
    s3_client.delete_object(Bucket=bucket, Key="%s00000001/%s.zst" % (WAL, name(1, 6)))
    archiver = archiver_row(name(1, 7), NOW - datetime.timedelta(seconds=1000))
    script = server_script(archiver=archiver, ready=[(name(1, 8), 1000.0)], lsn="0/9000000")
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=60)
    assert checks(result) == ["gap", "lag"]
    assert error.msg.startswith("WAL archive gap (fail_on_gap): ")
    assert ". WAL archiving lag: the oldest WAL file waiting to be archived, %s, has waited 1000.0 s" % name(1, 8) \
        in error.msg
    assert "backup_incremental.yml" in error.hint and "archive_command" in error.hint


def test_never_archived_with_waiting_wal_fails_the_lag_threshold(s3_client, aws_params, bucket, archive):
    script = server_script(archiver=archiver_row(), ready=waiting(2, 4, 90.0), lsn="0/8000100")
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=60)
    assert result["lag"]["seconds"] == 90.0 and result["lag"]["pending"] is True
    assert "; nothing archived since 2026-11-20T02:00:00.000000Z;" in error.msg


def test_no_permission_to_list_the_ready_files(s3_client, aws_params, bucket, archive):
    archiver = archiver_row(name(1, 7), NOW - datetime.timedelta(hours=2))
    script = server_script(archiver=archiver, ready=PermissionDenied(
        "permission denied for function pg_ls_archive_statusdir"), lsn="0/9000000")
    # reported only: a warning, the lag is null (not guessed from last_archived_time)
    result, warnings, error = status(s3_client, aws_params, bucket, script)
    assert error is None and result["ok"] is True
    assert result["lag"]["seconds"] is None and result["lag"]["pending"] is None
    assert result["lag"]["error"] == ("PostgreSQL query failed: permission denied for function "
                                      "pg_ls_archive_statusdir")
    assert result["lag"]["data_at_risk_bytes"] == 0x1000000
    assert result["archiver"]["ready_count"] is None
    assert len(warnings) == 1 and "GRANT pg_monitor" in warnings[0]
    # a threshold that cannot be checked fails and says why and what to do
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=300)
    assert checks(result) == ["lag_unmeasured"]
    assert error.msg == ("WAL archiving lag: max_lag_seconds=300 could not be checked: the .ready files of "
                         "pg_wal/archive_status (the WAL waiting to be archived) could not be listed: PostgreSQL "
                         "query failed: permission denied for function pg_ls_archive_statusdir")
    assert "superusers and members of pg_monitor" in error.hint and "GRANT pg_monitor TO <login_user>" in error.hint


def test_standby_with_archive_mode_always_is_checked(s3_client, aws_params, bucket, archive):
    archiver = archiver_row(name(1, 6), NOW - datetime.timedelta(seconds=400))
    script = server_script(in_recovery=True, archive_mode="always", archiver=archiver,
                           ready=[(name(1, 7), 400.0)])
    result, warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=300)
    assert result["role"] == "standby" and warnings == []
    assert result["lag"]["seconds"] == 400.0 and result["lag"]["data_at_risk_bytes"] is None
    assert checks(result) == ["lag"] and name(1, 7) in error.msg
    # the S3 side stays the primary's business
    assert result["archive"]["last_archived_wal_in_s3"] is None


def test_archive_mode_off(s3_client, aws_params, bucket, archive):
    script = server_script(archive_mode="off")
    result, _warnings, error = status(s3_client, aws_params, bucket, script)
    assert error is None and checks(result) == ["archive_mode"]
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=600)
    assert "archive_mode is off on the primary" in error.msg


def test_last_archived_wal_missing_from_s3(s3_client, aws_params, bucket, archive):
    archiver = archiver_row(name(1, 8), NOW - datetime.timedelta(seconds=10))
    script = server_script(archiver=archiver, lsn="0/9000000")
    result, _warnings, error = status(s3_client, aws_params, bucket, script)
    assert result["archive"]["last_archived_wal_in_s3"] is False
    assert result["gaps"] == [name(1, 8)] and checks(result) == ["last_archived_missing"]
    assert "pg_stat_archiver says %s was archived (at 2026-11-27T03:19:50.000000Z) but it is not in the WAL " \
           "archive s3://%s/%s" % (name(1, 8), bucket, WAL) in error.msg
    # a history, .partial or .backup file is looked up among its kind
    for last in ("00000001.history", name(1, 7) + ".partial", name(1, 2) + ".00000028.backup"):
        archiver = archiver_row(last, NOW - datetime.timedelta(seconds=10))
        result, _warnings, _error = status(s3_client, aws_params, bucket, server_script(archiver=archiver))
        assert result["archive"]["last_archived_wal_in_s3"] is (last.endswith(".backup")), last


def test_last_archived_wal_pruned_by_retention_is_no_finding(s3_client, aws_params, bucket, archive):
    archiver = archiver_row(name(1, 1), NOW - datetime.timedelta(days=9))
    result, _warnings, _error = status(s3_client, aws_params, bucket,
                                       server_script(archiver=archiver, lsn="0/2000000"))
    assert result["archive"]["last_archived_wal_in_s3"] is False
    assert result["gaps"] == [] and "last_archived_missing" not in checks(result)


def test_no_backup(s3_client, aws_params, bucket):
    put_wal(s3_client, bucket, [name(1, 2), name(1, 3)])
    result, _warnings, error = status(s3_client, aws_params, bucket)
    assert error is None
    assert checks(result) == ["no_backup"]
    assert "No complete physical backup in the catalog s3://%s/%s/catalog/" % (bucket, PREFIX) in \
        result["findings"][0]["message"]
    assert result["since_backup"] is None and result["chain"] is None and result["recoverable_window"] is None
    assert result["backups"] == {"complete": 0, "oldest": None, "latest": None}


def test_nothing_archived_since_the_backup(s3_client, aws_params, bucket):
    backup = put_backup(s3_client, bucket, 0, "0/2000028", "0/2000138")
    result, _warnings, error = status(s3_client, aws_params, bucket)
    assert error is None and result["ok"] is True
    assert result["chain"]["needed"] == 0
    window = result["recoverable_window"]
    assert window["latest_lsn"] == window["earliest_lsn"] == "0/2000138"
    assert window["latest_time"] == backup["finished_at"] and window["latest_segment"] is None


def test_across_a_promotion(s3_client, aws_params, bucket):
    put_backup(s3_client, bucket, 0, "0/2000028", "0/2000138")
    put_wal(s3_client, bucket, [name(1, 2), name(1, 3), name(1, 4), name(1, 5) + ".partial", name(2, 5), name(2, 6)])
    put_history(s3_client, bucket, 2, "1\t0/5000060\tno recovery target specified\n")
    archiver = archiver_row(name(2, 6), NOW - datetime.timedelta(seconds=3))
    script = server_script(archiver=archiver, timeline=2, lsn="0/7000000")
    result, _warnings, error = status(s3_client, aws_params, bucket, script)
    assert error is None, error
    assert result["ok"] is True and result["gaps"] == []
    assert result["timeline_path"] == [{"timeline": 1, "begin_lsn": "0/0", "end_lsn": "0/5000060"},
                                       {"timeline": 2, "begin_lsn": "0/5000060", "end_lsn": None}]
    assert result["chain"]["last"] == name(2, 6) and result["chain"]["needed"] == 5
    assert result["recoverable_window"]["timeline"] == 2
    assert result["archive"]["partials"] == 1 and result["archive"]["history_files"] == ["00000002.history"]
    # the new timeline's copy of the switch segment is required: the .partial does not replace it
    s3_client.delete_object(Bucket=bucket, Key="%s00000002/%s.zst" % (WAL, name(2, 5)))
    result, _warnings, error = status(s3_client, aws_params, bucket, script)
    assert result["gaps"] == [name(2, 5)] and result["recoverable_window"]["latest_segment"] == name(1, 4)


def test_missing_history_file(s3_client, aws_params, bucket):
    put_backup(s3_client, bucket, 0, "0/2000028", "0/2000138")
    put_wal(s3_client, bucket, [name(1, 2), name(1, 3), name(1, 4), name(1, 5) + ".partial", name(2, 5), name(2, 6)])
    result, _warnings, error = status(s3_client, aws_params, bucket)
    assert result["gaps"] == ["00000002.history"]
    assert checks(result) == ["history"]
    assert "Timeline history file 00000002.history is not in the WAL archive" in result["findings"][0]["message"]
    # recovery can still follow timeline 1 up to the fork
    assert result["timeline_path"] == [{"timeline": 1, "begin_lsn": "0/0", "end_lsn": None}]
    assert result["recoverable_window"]["latest_segment"] == name(1, 4)
    assert "recovery cannot follow timeline 2" in error.msg
    assert "pg_wal/<TLI>.history" in error.hint


def test_history_of_the_servers_timeline_not_archived_yet(s3_client, aws_params, bucket, archive):
    # The primary is on timeline 2 but nothing of it (not even its history file) is archived.
    script = server_script(archiver=archiver_row(name(1, 7), NOW), timeline=2, walfile=name(2, 8))
    result, _warnings, error = status(s3_client, aws_params, bucket, script)
    assert result["gaps"][-1] == "00000002.history"
    assert error is not None and "00000002.history" in error.msg


def test_damaged_history_file(s3_client, aws_params, bucket):
    put_backup(s3_client, bucket, 0, "0/2000028", "0/2000138")
    put_wal(s3_client, bucket, [name(1, 2), name(2, 3)])
    put_history(s3_client, bucket, 2, "garbage\n")
    result, _warnings, _error = status(s3_client, aws_params, bucket)
    assert result["gaps"] == ["00000002.history"]
    assert "00000002.history in the WAL archive s3://%s/%s is damaged" % (bucket, WAL) in result["findings"][0]["message"]


def test_stale_primary_on_an_older_timeline(s3_client, aws_params, bucket):
    put_backup(s3_client, bucket, 0, "0/2000028", "0/2000138")
    put_wal(s3_client, bucket, [name(1, 2), name(1, 3), name(2, 3), name(2, 4)])
    put_history(s3_client, bucket, 2, "1\t0/3000000\tx\n")
    script = server_script(archiver=archiver_row(name(1, 3), NOW), timeline=1, lsn="0/4000100")
    result, _warnings, error = status(s3_client, aws_params, bucket, script)
    assert error is None
    assert checks(result) == ["timeline"]
    assert "The WAL archive has timeline 2 but this primary is on timeline 1" in result["findings"][0]["message"]


def test_backup_not_on_the_timeline_path(s3_client, aws_params, bucket):
    # Backup of the old primary on timeline 1 taken after timeline 2 forked off at segment 3.
    put_backup(s3_client, bucket, 0, "0/4000028", "0/4000138", timeline=1)
    put_wal(s3_client, bucket, [name(1, 4), name(2, 3), name(2, 4), name(2, 5)])
    put_history(s3_client, bucket, 2, "1\t0/3000000\tx\n")
    result, _warnings, error = status(s3_client, aws_params, bucket)
    assert error is None
    assert checks(result) == ["backup_timeline"]
    assert result["chain"] is None and result["recoverable_window"] is None


def test_backup_without_its_wal(s3_client, aws_params, bucket):
    put_backup(s3_client, bucket, 0, "0/2000028", "0/4000138", wal_included=False)
    put_wal(s3_client, bucket, [name(1, 2), name(1, 3), name(1, 4), name(1, 5)])
    result, _warnings, error = status(s3_client, aws_params, bucket)
    assert error is None and result["ok"] is True
    assert result["chain"]["start_lsn"] == "0/2000028" and result["chain"]["needed"] == 4
    s3_client.delete_object(Bucket=bucket, Key="%s00000001/%s.zst" % (WAL, name(1, 3)))
    result, _warnings, error = status(s3_client, aws_params, bucket)
    assert checks(result) == ["gap", "backup_wal"]
    assert result["recoverable_window"] is None and result["gaps"] == [name(1, 3)]
    assert error is not None


def test_server_segment_size_wins(s3_client, aws_params, bucket, archive):
    script = server_script(segment_size=SEG, archiver=archiver_row(name(1, 7), NOW))
    result, warnings, _error = status(s3_client, aws_params, bucket, script, wal_segment_size=MIB)
    assert warnings == ["wal_segment_size 1048576 differs from the server's 16777216; the server's is used"]
    assert result["gaps"] == []


def test_missing_bucket(s3_client, aws_params):
    with pytest.raises(RtxDrError, match="Bucket rtx-test-missing-bucket .* does not exist.*cannot be read"):
        status(s3_client, aws_params, "rtx-test-missing-bucket")


# --------------------------------------------------------------------------
# Streaming mode: the newest partial segment under <prefix>/wal-stream/
# --------------------------------------------------------------------------

STREAM = PREFIX + "/wal-stream/"


def put_stream(s3, bucket_name, timeline, segno, covers, host="db-east-1", suffix=".zst", key=None):
    """A streamed partial as the uploader writes it (metadata covers-lsn and host); returns its key."""
    segment = name(timeline, segno)
    key = key or "%s%s/%s.partial%s" % (STREAM, segment[:8], segment, suffix)
    s3.put_object(Bucket=bucket_name, Key=key, Body=b"partial", Metadata={"covers-lsn": covers, "host": host})
    return key


def uploaded(s3, bucket_name, key):
    """The S3 LastModified of ``key`` (moto stamps the real time: ages are measured from it)."""
    return s3.head_object(Bucket=bucket_name, Key=key)["LastModified"]


@pytest.fixture
def streamed(s3_client, bucket):
    """Partials of two timelines: timeline 2 segment 7 is the newest (timeline 1 has a higher segment)."""
    put_stream(s3_client, bucket, 1, 6, "0/6FFF000", host="db-east-2")
    put_stream(s3_client, bucket, 1, 9, "0/9000800", host="db-east-2")  # higher segment, older timeline
    put_stream(s3_client, bucket, 2, 3, "0/3000100")
    newest = put_stream(s3_client, bucket, 2, 7, "0/7000100")
    # not streamed partials of their directory: ignored
    s3_client.put_object(Bucket=bucket, Key=STREAM + "00000002/notes.txt", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key=STREAM + "00000003/%s.partial.zst" % name(2, 8), Body=b"x")
    s3_client.put_object(Bucket=bucket, Key=STREAM + "00000002/%s.partial.bak" % name(2, 8), Body=b"x")
    return newest


def test_read_stream_none(s3_client, bucket, archive):
    assert walstatus.read_stream(s3_client, bucket, PREFIX) == {"found": False}
    assert walstatus.stream_breach({"found": False}, bucket, PREFIX, None) is None
    assert walstatus.stream_breach({"found": False}, bucket, PREFIX, 30) == (
        "no streamed partial segment under s3://%s/%s (max_stream_age_seconds=30): streaming mode never uploaded "
        "one there, or it is off" % (bucket, STREAM))


def test_read_stream_picks_the_highest_timeline_then_segment(s3_client, bucket, streamed):
    now = uploaded(s3_client, bucket, streamed) + datetime.timedelta(seconds=95)
    stream = walstatus.read_stream(s3_client, bucket, PREFIX, SEG, current_lsn="0/7000300", now=now)
    assert set(stream) == set(walstatus.STREAM_KEYS)
    assert stream["key"] == streamed == STREAM + "00000002/%s.partial.zst" % name(2, 7)
    assert stream["segment"] == name(2, 7) and stream["timeline"] == 2 and stream["found"] is True
    assert stream["covers_lsn"] == "0/7000100" and stream["host"] == "db-east-1"
    assert stream["age_seconds"] == 95.0 and stream["uploaded_at"].endswith("Z")
    assert catalog.parse_time(stream["uploaded_at"]) == uploaded(s3_client, bucket, streamed)
    assert stream["bytes_behind"] == 0x200 and stream["segment_archived"] is False
    # without the primary's position: no bytes_behind, no archive lookup
    stream = walstatus.read_stream(s3_client, bucket, PREFIX, SEG, now=now)
    assert stream["bytes_behind"] is None and stream["segment_archived"] is None
    # never below 0 (the position was read before the upload)
    assert walstatus.read_stream(s3_client, bucket, PREFIX, SEG, "0/7000000", now)["bytes_behind"] == 0


def test_read_stream_a_newer_upload_of_the_same_segment_wins(s3_client, bucket):
    put_stream(s3_client, bucket, 1, 5, "0/5000100", suffix=".zst")
    # LastModified has whole seconds: make the .lz4 object (compression changed) the later one for sure
    time.sleep(1.1)
    newer = put_stream(s3_client, bucket, 1, 5, "0/5000300", suffix=".lz4")
    stream = walstatus.read_stream(s3_client, bucket, PREFIX, SEG)
    assert stream["key"] == newer and stream["covers_lsn"] == "0/5000300"


def test_stream_in_the_status_and_a_stale_stream_fails(s3_client, aws_params, bucket, archive, streamed):
    now = uploaded(s3_client, bucket, streamed) + datetime.timedelta(seconds=95)
    script = server_script(lsn="0/7000300", archiver=archiver_row(name(1, 6), now))
    result, _warnings, error = status(s3_client, aws_params, bucket, script, now=now)
    assert error is None and result["ok"] is True  # no threshold: reported only
    assert result["stream"]["segment"] == name(2, 7) and result["stream"]["bytes_behind"] == 0x200
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(lsn="0/7000300"), now=now,
                                      max_stream_age_seconds=30)
    assert checks(result) == ["stream"] and result["ok"] is False
    assert isinstance(error, RtxDrError)
    assert error.msg == (
        "WAL stream is stale: the newest streamed partial segment under s3://%s/%s, %s (timeline 2, covers "
        "0/7000100, uploaded by db-east-1 at %s), is 95.0 s old, more than max_stream_age_seconds=30; the primary "
        "has written 512 bytes of WAL since that are in no streamed partial nor archived segment"
        % (bucket, STREAM, name(2, 7), result["stream"]["uploaded_at"]))
    assert "systemctl status rtx-dr-wal-receive rtx-dr-wal-stream" in error.hint
    assert "journalctl -u rtx-dr-wal-stream" in error.hint
    assert error.details["stream"] == result["stream"]
    # a fresh stream passes the same threshold
    fresh = uploaded(s3_client, bucket, streamed) + datetime.timedelta(seconds=2)
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(lsn="0/7000300"), now=fresh,
                                      max_stream_age_seconds=30)
    assert error is None and result["stream"]["age_seconds"] == 2.0 and result["ok"] is True


def test_no_stream_fails_the_threshold_naming_the_prefix(s3_client, aws_params, bucket, archive):
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(lsn="0/7000300"),
                                      max_stream_age_seconds=30)
    assert result["stream"] == {"found": False} and checks(result) == ["stream"]
    assert error.msg.startswith("WAL stream is stale: no streamed partial segment under s3://%s/%s" % (bucket, STREAM))
    assert "backup_schedule_wal_stream" in error.hint


def test_an_idle_primary_is_not_stale(s3_client, aws_params, bucket, archive, streamed):
    """Nothing written since the last upload: the partial is old but holds everything."""
    now = uploaded(s3_client, bucket, streamed) + datetime.timedelta(hours=3)
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(lsn="0/7000100"), now=now,
                                      max_stream_age_seconds=30)
    assert error is None and result["ok"] is True
    assert result["stream"]["age_seconds"] == 3 * 3600.0 and result["stream"]["bytes_behind"] == 0


def test_after_a_segment_switch_the_archived_segment_counts(s3_client, aws_params, bucket, archive):
    """The partial of segment 6 stops before the switch; segment 6 is archived complete: nothing is missing."""
    key = put_stream(s3_client, bucket, 1, 6, "0/6FFF000")
    now = uploaded(s3_client, bucket, key) + datetime.timedelta(seconds=600)
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(lsn="0/7000000"), now=now,
                                      max_stream_age_seconds=30)
    assert error is None, error
    assert result["stream"]["segment_archived"] is True and result["stream"]["bytes_behind"] == 0
    # WAL written in segment 7 that no partial holds: stale
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(lsn="0/7000100"), now=now,
                                      max_stream_age_seconds=30)
    assert result["stream"]["bytes_behind"] == 0x100 and "is 600.0 s old" in error.msg


def test_stream_age_alone_on_a_standby(s3_client, aws_params, bucket, archive, streamed):
    now = uploaded(s3_client, bucket, streamed) + datetime.timedelta(seconds=45)
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(in_recovery=True), now=now,
                                      max_stream_age_seconds=30)
    assert result["stream"]["bytes_behind"] is None
    assert "is 45.0 s old" in error.msg and "the primary's WAL position was not read" in error.msg

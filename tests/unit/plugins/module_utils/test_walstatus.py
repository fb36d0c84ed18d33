# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Unit tests of module_utils/walstatus.py: a scripted fake PostgreSQL connection and a moto S3 archive."""

from __future__ import annotations

import datetime
import sys
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


def server_script(in_recovery=False, archiver=None, ready=0, lsn="0/7000100", walfile=None, timeline=1,
                  archive_mode="on", segment_size=SEG):
    """Answers of a primary (or standby) for read_server()."""
    settings = [{"name": "archive_mode", "setting": archive_mode}, {"name": "archive_timeout", "setting": "60"},
                {"name": "wal_segment_size", "setting": str(segment_size)}]
    script = [
        ("pg_catalog.pg_settings", settings),
        ("pg_is_in_recovery", [{"r": in_recovery}]),
        ("pg_stat_archiver", [archiver or archiver_row()]),
        ("pg_ls_archive_statusdir", ready if isinstance(ready, Exception) else [{"ready": ready}]),
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
                  fail_on_unreachable=True, since="oldest_backup", max_lag_seconds=None, fail_on_gap=True)
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


def status(s3, aws, bucket_name, script=None, connect=None, **overrides):
    params = params_for(aws, bucket_name, **overrides)
    if connect is None and script is not None:
        connect = connector(script)
    if connect is None:
        params["query_server"] = False
    result, warnings = walstatus.wal_status(params, s3, connect=connect, now=NOW)
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


def test_check_options():
    base = {"bucket": "b", "cluster_name": "main"}
    assert walstatus.check_options(base) == {"bucket": "b", "prefix": "pgbackup/main", "wal_segment_size": SEG,
                                             "since": "oldest_backup", "max_lag_seconds": None, "fail_on_gap": True}
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
    conn = ScriptedConnection(server_script(archiver=archiver, ready=2, lsn="0/7000100", timeline=1))
    server, facts, warnings = walstatus.read_server(conn)
    assert warnings == []
    assert server == {"queried": True, "reachable": True, "error": None, "in_recovery": False, "timeline": 1,
                      "current_lsn": "0/7000100", "current_wal": name(1, 7), "archive_mode": "on",
                      "archive_timeout": 60, "wal_segment_size": SEG, "now": NOW}
    assert facts["last_archived_wal"] == name(1, 6) and facts["ready_count"] == 2
    assert facts["archived_count"] == 10 and facts["failed_count"] == 0
    assert facts["stats_reset"] == T0
    assert any("WHERE name LIKE '%.ready'" in q for q in conn.queries)
    assert walstatus.archiver_result(facts)["last_archived_time"] == "2026-11-27T03:19:30.000000Z"
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
    assert facts["ready_count"] is None
    assert len(warnings) == 1 and "pg_ls_archive_statusdir() needs PostgreSQL 12+ and pg_monitor" in warnings[0]
    assert "it is reported as null" in warnings[0]
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


def lag_of(current_wal, last, ready=0, lsn=None, last_time=NOW - datetime.timedelta(seconds=90), in_recovery=False):
    server = {"in_recovery": in_recovery, "current_wal": current_wal, "current_lsn": lsn, "now": NOW}
    archiver = {"last_archived_wal": last, "last_archived_time": last_time if last else None, "ready_count": ready}
    return walstatus.archive_lag(server, archiver, SEG)


def test_lag_idle_primary_after_a_switch():
    # pg_current_wal_lsn() at the start of segment 7 names segment 6, which is archived: nothing waits.
    lag = lag_of(name(1, 6), name(1, 6), lsn="0/7000000")
    assert lag == {"seconds": 0.0, "segments": 0, "bytes": 0, "pending": False}


def test_lag_busy_primary():
    lag = lag_of(name(1, 7), name(1, 6), lsn="0/7000100")
    assert lag == {"seconds": 90.0, "segments": 0, "bytes": 0x100, "pending": True}


def test_lag_ready_files_waiting():
    lag = lag_of(name(1, 9), name(1, 6), ready=2, lsn="0/9800000")
    assert lag["pending"] is True and lag["segments"] == 2 and lag["seconds"] == 90.0
    assert lag["bytes"] == 0x9800000 - 0x7000000
    # .ready files alone (e.g. a .backup file waits) are enough
    assert lag_of(name(1, 6), name(1, 6), ready=1, lsn="0/7000000")["pending"] is True


def test_lag_never_archived():
    lag = lag_of(name(1, 3), None, ready=2, lsn="0/3000100")
    assert lag == {"seconds": None, "segments": 2, "bytes": None, "pending": True}
    # a fresh cluster whose first segment is not complete yet does not lag
    assert lag_of(name(1, 1), None, ready=0, lsn="0/1000100")["seconds"] == 0.0


def test_lag_after_history_partial_and_backup_files():
    # a history file says nothing about segments: the .ready count decides; unknown without it
    assert lag_of(name(2, 5), "00000002.history", ready=0, lsn="0/5000200")["pending"] is False
    lag = lag_of(name(2, 5), "00000002.history", ready=None, lsn="0/5000200")
    assert lag["pending"] is None and lag["seconds"] == 90.0 and lag["bytes"] is None
    # the old timeline's .partial of segment 5: the new timeline's segment 5 is newer
    lag = lag_of(name(2, 5), name(1, 5) + ".partial", ready=0, lsn="0/5000200")
    assert lag["pending"] is True and lag["bytes"] == 0
    # a backup history file names the backup's start segment: no byte count from it
    lag = lag_of(name(1, 4), name(1, 3) + ".00000028.backup", ready=0, lsn="0/4000100")
    assert lag["pending"] is True and lag["bytes"] is None


def test_lag_never_negative_and_not_on_a_standby():
    lag = lag_of(name(1, 6), name(1, 6), lsn="0/6000100", last_time=NOW + datetime.timedelta(seconds=5), ready=1)
    assert lag["seconds"] == 0.0 and lag["bytes"] == 0
    assert lag_of(None, name(1, 6), in_recovery=True) is None
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
    assert result["lag"] == {"seconds": 20.0, "segments": 0, "bytes": 0x100, "pending": True}
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
                        "standby"]


def test_lag_over_the_threshold_fails(s3_client, aws_params, bucket, archive):
    archiver = archiver_row(name(1, 7), NOW - datetime.timedelta(seconds=425), failed=12, last_failed=name(1, 8),
                            failed_time=NOW - datetime.timedelta(seconds=5))
    script = server_script(archiver=archiver, ready=3, lsn="0/A800000")
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=300)
    assert result["lag"] == {"seconds": 425.0, "segments": 3, "bytes": 0xA800000 - 0x8000000, "pending": True}
    assert checks(result) == ["archive_failing", "lag"]
    assert error.msg.startswith("WAL archiving lag: WAL archiving lags by 425.0 s (max_lag_seconds=300); "
                                "3 file(s) waiting in pg_wal/archive_status (.ready); %d bytes of WAL not archived; "
                                "last archived %s at 2026-11-27T03:12:55.000000Z; failed_count 12, last failed %s "
                                "at 2026-11-27T03:19:55.000000Z" % (0xA800000 - 0x8000000, name(1, 7), name(1, 8)))
    assert "archive_command" in error.hint and "endpoint" in error.hint
    assert error.details["lag"]["seconds"] == 425.0
    failing = result["findings"][0]["message"]
    assert failing.startswith("archive_command is failing: last failure %s at 2026-11-27T03:19:55.000000Z "
                              "(failed_count 12 since 2026-11-20T02:00:00.000000Z)" % name(1, 8))
    # under the threshold: reported, not failed
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=500)
    assert error is None and checks(result) == ["archive_failing"]
    # no threshold: no lag finding
    result, _warnings, error = status(s3_client, aws_params, bucket, script)
    assert error is None and checks(result) == ["archive_failing"]


def test_lag_and_gap_fail_together(s3_client, aws_params, bucket, archive):
    s3_client.delete_object(Bucket=bucket, Key="%s00000001/%s.zst" % (WAL, name(1, 6)))
    archiver = archiver_row(name(1, 7), NOW - datetime.timedelta(seconds=1000))
    result, _warnings, error = status(s3_client, aws_params, bucket, server_script(archiver=archiver, ready=1),
                                      max_lag_seconds=60)
    assert checks(result) == ["gap", "lag"]
    assert error.msg.startswith("WAL archive gap (fail_on_gap): ")
    assert ". WAL archiving lag: WAL archiving lags by 1000.0 s" in error.msg
    assert "backup_incremental.yml" in error.hint and "archive_command" in error.hint


def test_never_archived_with_waiting_wal_fails_the_lag_threshold(s3_client, aws_params, bucket, archive):
    script = server_script(archiver=archiver_row(), ready=4, lsn="0/8000100")
    result, _warnings, error = status(s3_client, aws_params, bucket, script, max_lag_seconds=60)
    assert result["lag"]["seconds"] is None and result["lag"]["pending"] is True
    assert "no WAL file was archived since 2026-11-20T02:00:00.000000Z while WAL waits to be archived" in error.msg


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

# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""rtx.dr.wal_archive_status: a synthetic archive in a moto server, a scripted or the throwaway PostgreSQL."""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from ansible.module_utils import basic

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position
from scripted_db import ScriptedConnection  # noqa: E402 pylint: disable=wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import wal_segment_name  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.walchain import segment_name  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.walstatus import RESULT_KEYS  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.modules import wal_archive_status  # noqa: E402 pylint: disable=wrong-import-position

PREFIX = "pgbackup/statusmodule"
WAL = PREFIX + "/wal/"
UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def name(timeline, segno):
    return segment_name(timeline, segno)


def primary(last, seconds_ago, ready=0, ready_age=0, lsn="0/8000100", in_recovery=False, failed=0):
    """A scripted server: ``ready`` .ready segments after ``last``, the oldest waiting ``ready_age`` s."""
    now = datetime.datetime.now(UTC)
    archiver = {"archived_count": 5, "last_archived_wal": last,
                "last_archived_time": now - datetime.timedelta(seconds=seconds_ago), "failed_count": failed,
                "last_failed_wal": name(1, 8) if failed else None,
                "last_failed_time": now - datetime.timedelta(seconds=3) if failed else None,
                "stats_reset": T0, "now": now}
    ready_row = {"ready_count": ready, "ready_segments": ready, "oldest_ready": name(1, 8) if ready else None,
                 "oldest_ready_time": now - datetime.timedelta(seconds=ready_age) if ready else None}
    script = [
        ("pg_catalog.pg_settings", [{"name": "archive_mode", "setting": "on"},
                                    {"name": "archive_timeout", "setting": "60"},
                                    {"name": "wal_segment_size", "setting": "16777216"}]),
        ("pg_is_in_recovery", [{"r": in_recovery}]),
        ("pg_stat_archiver", [archiver]),
        ("pg_ls_archive_statusdir", [ready_row]),
        ("pg_control_checkpoint", [{"timeline_id": 1}]),
        ("pg_current_wal_lsn", [{"lsn": lsn, "walfile": wal_segment_name(1, lsn, end_position=True)}]),
    ]

    def connect(params):
        return ScriptedConnection(script)

    return connect


def no_connection(params):
    raise AssertionError("the server must not be contacted")


def put_backup(s3, bucket_name, day, start_lsn, stop_lsn):
    started = T0 + datetime.timedelta(days=day)
    record = {
        "format_version": 1, "backup_id": catalog.new_backup_id("physical", started), "kind": "physical",
        "status": "complete", "timeline": 1, "start_lsn": start_lsn, "stop_lsn": stop_lsn,
        "start_wal": wal_segment_name(1, start_lsn), "stop_wal": wal_segment_name(1, stop_lsn),
        "started_at": catalog.isoformat(started), "finished_at": catalog.isoformat(started + datetime.timedelta(minutes=3)),
        "wal_included": True, "objects": [], "encryption": "none",
    }
    catalog.write_record(s3, bucket_name, PREFIX, record)
    return record


def put_wal(s3, bucket_name, segnos):
    for segno in segnos:
        s3.put_object(Bucket=bucket_name, Key="%s00000001/%s.zst" % (WAL, name(1, segno)), Body=b"w")


@pytest.fixture
def archive(s3_client, bucket):
    record = put_backup(s3_client, bucket, 0, "0/2000028", "0/2000138")
    put_wal(s3_client, bucket, range(2, 8))
    return record


def module_args(aws, bucket_name, **overrides):
    args = {k: v for k, v in aws.items() if v is not None}
    args.update(bucket=bucket_name, prefix=PREFIX)
    args.update(overrides)
    return args


@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: seen.append(msg))
    return seen


# --------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------


def test_documentation_matches_argument_spec(doc_matches_spec):
    doc = doc_matches_spec(wal_archive_status)
    assert {"rtx.dr.aws", "rtx.dr.postgres"} <= set(doc["extends_documentation_fragment"])
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert set(yaml.safe_load(wal_archive_status.RETURN)) == set(RESULT_KEYS)
    for example in yaml.safe_load(wal_archive_status.EXAMPLES):
        options = example["rtx.dr.wal_archive_status"]
        assert set(options) <= set(wal_archive_status.argument_spec())


# --------------------------------------------------------------------------
# Scripted server, moto archive
# --------------------------------------------------------------------------


def test_healthy_archive_in_check_mode(run_module, monkeypatch, aws_params, bucket, archive, warnings):
    # segment 7 archived 3 hours ago, segment 8 being written: an idle primary, no lag
    monkeypatch.setattr(wal_archive_status, "connect", primary(name(1, 7), 3 * 3600))
    args = module_args(aws_params, bucket, max_lag_seconds=300, _ansible_check_mode=True)
    failed, result = run_module(wal_archive_status.main, args)
    assert not failed, result
    assert set(result) == set(RESULT_KEYS) | {"changed"}
    assert result["changed"] is False and result["ok"] is True and result["gaps"] == []
    assert result["role"] == "primary" and result["lag"]["seconds"] == 0.0 and result["lag"]["pending"] is False
    assert result["lag"]["data_at_risk_bytes"] == 0x100
    assert result["archive"]["last_archived_wal_in_s3"] is True
    assert result["recoverable_window"]["earliest_lsn"] == "0/2000138"
    assert result["recoverable_window"]["latest_lsn"] == "0/8000000"
    assert warnings == []


def test_gap_fails_and_keeps_the_facts(run_module, monkeypatch, s3_client, aws_params, bucket, archive):
    s3_client.delete_object(Bucket=bucket, Key="%s00000001/%s.zst" % (WAL, name(1, 4)))
    monkeypatch.setattr(wal_archive_status, "connect", primary(name(1, 7), 12))
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket))
    assert failed
    assert name(1, 4) in result["msg"] and "s3://%s/%s" % (bucket, WAL) in result["msg"]
    assert "backup_incremental.yml" in result["hint"] and "full backup" in result["hint"]
    assert result["gaps"] == [name(1, 4)]
    assert result["recoverable_window"]["latest_segment"] == name(1, 3)
    assert result["findings"][0]["check"] == "gap"
    assert "changed" not in result and "detail_changed" not in result
    # reported only
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket, fail_on_gap=False))
    assert not failed and result["gaps"] == [name(1, 4)] and result["ok"] is False


def test_lag_fails(run_module, monkeypatch, aws_params, bucket, archive):
    server = primary(name(1, 7), 900, ready=5, ready_age=600, failed=3, lsn="0/D000100")
    monkeypatch.setattr(wal_archive_status, "connect", server)
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket, max_lag_seconds=120))
    assert failed
    assert result["msg"].startswith("WAL archiving lag: the oldest WAL file waiting to be archived, %s, has waited "
                                    "600.0 s (pg_wal/archive_status/%s.ready since " % (name(1, 8), name(1, 8)))
    assert "more than max_lag_seconds=120; 5 file(s) wait to be archived" in result["msg"]
    assert "last failure: %s at " % name(1, 8) in result["msg"] and "(failed_count 3 since" in result["msg"]
    assert "archive_command" in result["hint"]
    assert result["lag"]["segments"] == 5 and result["lag"]["bytes"] == 5 * 16 * 1024 * 1024
    assert result["archiver"]["oldest_ready"] == name(1, 8) and result["archiver"]["oldest_ready_age_seconds"] == 600


def test_standby_warns_that_the_lag_is_not_measured(run_module, monkeypatch, aws_params, bucket, archive,
                                                    warnings):
    monkeypatch.setattr(wal_archive_status, "connect", primary(None, 0, in_recovery=True))
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket, max_lag_seconds=1))
    assert not failed, result
    assert result["role"] == "standby" and result["lag"] is None
    assert warnings and "standby" in warnings[0]


def test_s3_only_never_contacts_the_server(run_module, monkeypatch, aws_params, bucket, archive):
    monkeypatch.setattr(wal_archive_status, "connect", no_connection)
    args = module_args(aws_params, bucket, query_server=False, since="latest_backup")
    failed, result = run_module(wal_archive_status.main, args)
    assert not failed, result
    assert result["server"]["queried"] is False and result["role"] is None
    assert result["since_backup"]["backup_id"] == archive["backup_id"]
    assert result["archive"]["newest_segment"] == name(1, 7)


def test_unreachable_server(run_module, monkeypatch, aws_params, bucket, archive):
    def down(params):
        raise ConnectionFailedError("Cannot connect to PostgreSQL at db9 port 5432: refused", hint="Is it up?",
                                    details={"reason": "unreachable"}, server_down=True)

    monkeypatch.setattr(wal_archive_status, "connect", down)
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket))
    assert failed and result["reason"] == "unreachable" and result["hint"] == "Is it up?"
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket, fail_on_unreachable=False))
    assert not failed
    assert result["server"]["reachable"] is False and result["findings"][0]["check"] == "server"
    assert result["recoverable_window"]["latest_segment"] == name(1, 7)


def test_stale_stream_fails_naming_the_prefix_and_what_to_check(run_module, monkeypatch, s3_client, aws_params,
                                                                bucket, archive):
    # the scripted primary is at 0/8000100; the partial of segment 8 holds WAL up to 0/8000040 only
    key = "%s/wal-stream/00000001/%s.partial.zst" % (PREFIX, name(1, 8))
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"p", Metadata={"covers-lsn": "0/8000040", "host": "db-east-1"})
    monkeypatch.setattr(wal_archive_status, "connect", primary(name(1, 7), 30))
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket))
    assert not failed, result  # reported only
    stream = result["stream"]
    assert stream["found"] is True and stream["key"] == key and stream["segment"] == name(1, 8)
    assert stream["timeline"] == 1 and stream["covers_lsn"] == "0/8000040" and stream["host"] == "db-east-1"
    assert stream["bytes_behind"] == 0xC0 and 0 <= stream["age_seconds"] < 60
    # the object was just written: a threshold of 0 s makes it stale (the primary wrote more since)
    time.sleep(0.3)  # an age that rounds to more than 0.0 s
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket, max_stream_age_seconds=0))
    assert failed
    assert result["msg"].startswith("WAL stream is stale: the newest streamed partial segment under s3://%s/%s/"
                                    "wal-stream/, %s (timeline 1, covers 0/8000040, uploaded by db-east-1 at "
                                    % (bucket, PREFIX, name(1, 8)))
    assert "more than max_stream_age_seconds=0; the primary has written 192 bytes of WAL since" in result["msg"]
    assert "systemctl status rtx-dr-wal-receive rtx-dr-wal-stream" in result["hint"]
    assert [f["check"] for f in result["findings"]] == ["stream"] and result["stream"]["key"] == key


def test_no_stream_fails_a_stream_threshold(run_module, monkeypatch, aws_params, bucket, archive):
    monkeypatch.setattr(wal_archive_status, "connect", primary(name(1, 7), 30))
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket))
    assert not failed and result["stream"] == {"found": False}
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket, max_stream_age_seconds=30))
    assert failed and result["stream"] == {"found": False}
    assert result["msg"] == ("WAL stream is stale: no streamed partial segment under s3://%s/%s/wal-stream/ "
                             "(max_stream_age_seconds=30): streaming mode never uploaded one there, or it is off"
                             % (bucket, PREFIX))


@pytest.mark.parametrize("overrides,words", [
    ({"prefix": None}, "one of the following is required: prefix, cluster_name"),
    ({"since": "yesterday"}, "Invalid since 'yesterday'"),
    ({"max_lag_seconds": -5}, "Invalid max_lag_seconds -5"),
    ({"max_stream_age_seconds": -1}, "Invalid max_stream_age_seconds -1"),
])
def test_option_errors_before_any_connection(run_module, monkeypatch, aws_params, overrides, words):
    monkeypatch.setattr(wal_archive_status, "connect", no_connection)
    args = module_args(aws_params, "rtx-test-unused")
    args.update(overrides)
    args = {k: v for k, v in args.items() if v is not None}
    failed, result = run_module(wal_archive_status.main, args)
    assert failed and words in result["msg"]


# --------------------------------------------------------------------------
# The throwaway PostgreSQL (archive_mode off there)
# --------------------------------------------------------------------------


def test_real_primary(run_module, pg_cluster, aws_params, bucket, archive, warnings):
    args = dict(pg_cluster.module_args(), **module_args(aws_params, bucket))
    failed, result = run_module(wal_archive_status.main, args)
    assert not failed, result
    assert warnings == []
    assert result["role"] == "primary"
    server = result["server"]
    assert server["reachable"] is True and server["in_recovery"] is False and server["timeline"] == 1
    assert parse_lsn(server["current_lsn"]) > 0 and server["current_wal"].startswith("00000001")
    assert server["archive_mode"] == "off" and server["wal_segment_size"] == 16 * 1024 * 1024
    assert server["now"].endswith("Z")
    assert result["archiver"]["ready_count"] == 0 and result["archiver"]["failed_count"] == 0
    assert result["archiver"]["oldest_ready"] is None and result["archiver"]["oldest_ready_age_seconds"] is None
    assert [f["check"] for f in result["findings"]] == ["archive_mode"]
    lag = result["lag"]
    assert lag["segments"] == 0 and lag["seconds"] == 0.0 and lag["pending"] is False and lag["error"] is None
    assert lag["data_at_risk_bytes"] is None  # archive_mode off: nothing was ever archived
    assert result["stream"] == {"found": False}
    # archive_mode off fails a lag threshold
    failed, result = run_module(wal_archive_status.main, dict(args, max_lag_seconds=600))
    assert failed and "archive_mode is off on the primary" in result["msg"]


def test_real_standby(run_module, pg_cluster, aws_params, bucket, archive):
    args = dict(pg_cluster.module_args(port=pg_cluster.standby_port), **module_args(aws_params, bucket))
    failed, result = run_module(wal_archive_status.main, args)
    assert not failed, result
    assert result["role"] == "standby" and result["lag"] is None
    assert result["server"]["current_lsn"] is None and result["server"]["timeline"] == 1
    assert result["findings"] == []


def test_real_server_down_is_tolerated_when_asked(run_module, pg_cluster, unused_port, aws_params, bucket, archive):
    args = dict(pg_cluster.module_args(port=unused_port, connect_timeout=2),
                **module_args(aws_params, bucket, fail_on_unreachable=False))
    failed, result = run_module(wal_archive_status.main, args)
    assert not failed, result
    assert result["server"]["reachable"] is False and result["role"] is None
    assert "Cannot connect to PostgreSQL at 127.0.0.1 port %d" % unused_port in result["server"]["error"]


def test_real_primary_old_ready_file(run_module, pg_cluster, aws_params, bucket, archive, warnings):
    """A .ready file planted an hour old: the server's pg_ls_archive_statusdir() reports it and the lag is its age.

    (archive_mode is off on the throwaway server: nothing archives nor removes it; a threshold fails on
    archive_mode there, the message naming the file is tested with the scripted server.)
    """
    status_dir = os.path.join(pg_cluster.primary_dir, "pg_wal", "archive_status")
    planted = "0000007F00000000000000A1"  # no such segment in pg_wal: no checkpoint touches it
    path = os.path.join(status_dir, planted + ".ready")
    other = os.path.join(status_dir, "0000007F00000000000000A2.ready")
    try:
        for item, age in ((path, 3600), (other, 60)):
            with open(item, "w", encoding="utf-8"):
                pass
            if pg_cluster.user is not None:
                os.chown(item, pg_cluster.user.pw_uid, pg_cluster.user.pw_gid)
            when = datetime.datetime.now(UTC).timestamp() - age
            os.utime(item, (when, when))
        args = dict(pg_cluster.module_args(), **module_args(aws_params, bucket))
        failed, result = run_module(wal_archive_status.main, args)
        assert not failed, result
        assert warnings == []
        lag = result["lag"]
        assert lag["oldest_ready"] == planted and lag["segments"] == 2 and lag["pending"] is True
        assert 3595 <= lag["seconds"] <= 3700, lag
        assert lag["bytes"] == 2 * 16 * 1024 * 1024
        assert result["archiver"]["ready_count"] == 2 and result["archiver"]["oldest_ready"] == planted
        assert result["archiver"]["oldest_ready_time"].endswith("Z")
    finally:
        for item in (path, other):
            if os.path.exists(item):
                os.unlink(item)


def test_real_primary_without_pg_monitor(run_module, pg_cluster, aws_params, bucket, archive, warnings):
    """A login role that may not call pg_ls_archive_statusdir(): the lag is null, the warning says how to fix it."""
    role = "rtxtest_nomonitor"
    password = "rtx-nomonitor-secret"
    pg_cluster.sql(pg_cluster.primary_port, "DROP ROLE IF EXISTS %s" % role)
    pg_cluster.sql(pg_cluster.primary_port, "CREATE ROLE %s LOGIN PASSWORD '%s'" % (role, password))
    try:
        args = dict(pg_cluster.module_args(login_user=role, login_password=password),
                    **module_args(aws_params, bucket))
        failed, result = run_module(wal_archive_status.main, args)
        assert not failed, result
        assert result["role"] == "primary"
        lag = result["lag"]
        assert lag["seconds"] is None and lag["segments"] is None and lag["pending"] is None
        assert "permission denied" in lag["error"] and "pg_ls_archive_statusdir" in lag["error"]
        assert result["archiver"]["ready_count"] is None
        ready_warnings = [w for w in warnings if "pg_ls_archive_statusdir()" in w]
        assert len(ready_warnings) == 1 and "GRANT pg_monitor TO <login_user>" in ready_warnings[0]
    finally:
        pg_cluster.sql(pg_cluster.primary_port, "DROP ROLE IF EXISTS %s" % role)

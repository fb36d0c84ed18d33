# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""rtx.dr.wal_archive_status: a synthetic archive in a moto server, a scripted or the throwaway PostgreSQL."""

from __future__ import annotations

import datetime
import sys
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


def primary(last, seconds_ago, ready=0, lsn="0/8000100", in_recovery=False, failed=0):
    now = datetime.datetime.now(UTC)
    archiver = {"archived_count": 5, "last_archived_wal": last,
                "last_archived_time": now - datetime.timedelta(seconds=seconds_ago), "failed_count": failed,
                "last_failed_wal": None, "last_failed_time": None, "stats_reset": T0, "now": now}
    script = [
        ("pg_catalog.pg_settings", [{"name": "archive_mode", "setting": "on"},
                                    {"name": "archive_timeout", "setting": "60"},
                                    {"name": "wal_segment_size", "setting": "16777216"}]),
        ("pg_is_in_recovery", [{"r": in_recovery}]),
        ("pg_stat_archiver", [archiver]),
        ("pg_ls_archive_statusdir", [{"ready": ready}]),
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
    monkeypatch.setattr(wal_archive_status, "connect", primary(name(1, 7), 12))
    args = module_args(aws_params, bucket, max_lag_seconds=300, _ansible_check_mode=True)
    failed, result = run_module(wal_archive_status.main, args)
    assert not failed, result
    assert set(result) == set(RESULT_KEYS) | {"changed"}
    assert result["changed"] is False and result["ok"] is True and result["gaps"] == []
    assert result["role"] == "primary" and 12 <= result["lag"]["seconds"] < 60
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
    monkeypatch.setattr(wal_archive_status, "connect", primary(name(1, 7), 900, ready=5, failed=3))
    failed, result = run_module(wal_archive_status.main, module_args(aws_params, bucket, max_lag_seconds=120))
    assert failed
    assert result["msg"].startswith("WAL archiving lag: WAL archiving lags by 9")
    assert "(max_lag_seconds=120); 5 file(s) waiting" in result["msg"] and "failed_count 3" in result["msg"]
    assert "archive_command" in result["hint"]
    assert result["lag"]["segments"] == 5


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


@pytest.mark.parametrize("overrides,words", [
    ({"prefix": None}, "one of the following is required: prefix, cluster_name"),
    ({"since": "yesterday"}, "Invalid since 'yesterday'"),
    ({"max_lag_seconds": -5}, "Invalid max_lag_seconds -5"),
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
    assert [f["check"] for f in result["findings"]] == ["archive_mode"]
    assert result["lag"] is not None and result["lag"]["segments"] == 0
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

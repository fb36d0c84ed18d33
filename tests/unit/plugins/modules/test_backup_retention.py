# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""rtx.dr.backup_retention against synthetic catalog records and objects in a moto server."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, kms_client, kms_key, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import retention  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.modules import backup_retention  # noqa: E402 pylint: disable=wrong-import-position

PREFIX = "pgbackup/rettest"
WAL = PREFIX + "/wal/"


def test_documentation_matches_argument_spec(doc_matches_spec):
    doc = doc_matches_spec(backup_retention)
    assert "rtx.dr.aws" in doc["extends_documentation_fragment"]
    returned = yaml.safe_load(backup_retention.RETURN)
    assert {"keep", "delete", "wal_keep_from", "wal_delete_keys", "deleted_objects"} <= set(returned)


def put_backup(s3, bucket_name, days_ago, kind="physical", status="complete", start_wal=None, extra=0, sse=None,
               timeline=1):
    """A synthetic backup started ``days_ago`` days ago: its data objects and catalog record; returns the record."""
    started = catalog.utc_now() - datetime.timedelta(days=days_ago)
    backup_id = catalog.new_backup_id(kind, started)
    area = catalog.data_prefix(PREFIX, kind, backup_id)
    names = ["base.tar.zst", "backup_manifest"] if kind == "physical" else ["rtx.dump", "postgres.dump"]
    objects = []
    for name in names:
        s3.put_object(Bucket=bucket_name, Key=area + name, Body=b"x" * 10, **(sse or {}))
        objects.append({"key": area + name, "size": 10, "sha256": "0" * 64})
    for index in range(extra):  # objects not in the record (e.g. left by a crash)
        s3.put_object(Bucket=bucket_name, Key=area + "stray-%d" % index, Body=b"y")
    record = {
        "format_version": 1, "backup_id": backup_id, "kind": kind, "status": status,
        "started_at": catalog.isoformat(started),
        "finished_at": None if status == "running" else catalog.isoformat(started + datetime.timedelta(minutes=3)),
        "timeline": timeline if kind == "physical" else None, "start_wal": start_wal, "stop_wal": start_wal,
        "objects": [] if status == "failed" else objects, "bucket": bucket_name, "prefix": PREFIX,
        "encryption": "aws:kms" if sse else "none",
        "kms_key_arn": (sse or {}).get("SSEKMSKeyId"),
    }
    catalog.write_record(s3, bucket_name, PREFIX, record, sse)
    return record


def put_wal(s3, bucket_name, names):
    for name in names:
        s3.put_object(Bucket=bucket_name, Key=WAL + name, Body=b"w")
    return [WAL + n for n in names]


def keys(s3, bucket_name):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket_name).get("Contents") or ())


def backup_keys(s3, bucket_name, record):
    area = catalog.data_prefix(PREFIX, record["kind"], record["backup_id"])
    return [k for k in keys(s3, bucket_name) if k.startswith(area)] + (
        [catalog.catalog_key(PREFIX, record["backup_id"])]
        if catalog.catalog_key(PREFIX, record["backup_id"]) in keys(s3, bucket_name) else [])


def args(aws, bucket_name, **overrides):
    result = {k: v for k, v in aws.items() if v is not None}
    result.update(bucket=bucket_name, prefix=PREFIX)
    result.update(overrides)
    return result


def ids(items):
    return [i["backup_id"] for i in items]


@pytest.fixture
def estate(s3_client, bucket):
    """10 daily physical backups (0..9 days old), 3 logical (0, 400, 3000 days), an old failed one, WAL."""
    physical = [put_backup(s3_client, bucket, d, start_wal="0000000100000000000000%02X" % (0x50 - d), extra=d % 2)
                for d in range(10)]
    logical = [put_backup(s3_client, bucket, d, kind="logical") for d in (0, 400, 3000)]
    failed = put_backup(s3_client, bucket, 30, status="failed", extra=1)
    wal = put_wal(s3_client, bucket, ["000000010000000000000040", "000000010000000000000048.zst",
                                      "000000010000000000000049.zst", "00000001000000000000004A", "00000002.history"])
    return {"physical": physical, "logical": logical, "failed": failed, "wal": wal}


def test_check_mode_deletes_nothing_and_real_run_deletes_the_plan(estate, aws_params, s3_client, bucket, run_module):
    before = keys(s3_client, bucket)
    physical = estate["physical"]
    policy = dict(physical_keep_last=3, physical_keep_days=2, pitr_window_days=5, logical_keep_last=2)

    failed, planned = run_module(backup_retention.main, args(aws_params, bucket, _ansible_check_mode=True, **policy))
    assert not failed, planned
    assert keys(s3_client, bucket) == before
    assert planned["changed"] and planned["deleted_objects"] == 0 and planned["deleted_backups"] == 0
    # kept: 0,1,2 (keep_last / keep_days) and the PITR base: 6 days old, the newest that finished at or before
    # now - 5 days (the 5-day-old one finished 3 minutes after that); logical: the 2 newest
    kept = set(ids(planned["keep"]))
    assert kept == set(ids(physical[:3])) | {physical[6]["backup_id"]} | set(ids(estate["logical"][:2]))
    doomed = set(ids(physical[3:6] + physical[7:])) | {estate["logical"][2]["backup_id"], estate["failed"]["backup_id"]}
    assert set(ids(planned["delete"])) == doomed
    assert all(d["done"] is False and d["objects"] >= 1 for d in planned["delete"])
    assert planned["wal_keep_from"] == {"backup_id": physical[6]["backup_id"], "segment": "00000001000000000000004A",
                                        "timeline": 1}
    assert planned["wal_delete_keys"] == sorted(estate["wal"][:3])

    failed, result = run_module(backup_retention.main, args(aws_params, bucket, **policy))
    assert not failed, result
    assert result["changed"] and ids(result["delete"]) == ids(planned["delete"])
    assert ids(result["keep"]) == ids(planned["keep"])
    doomed_records = [r for r in physical + estate["logical"] + [estate["failed"]] if r["backup_id"] in doomed]
    expected_gone = set()
    for record in doomed_records:
        expected_gone.update(k for k in before if k.startswith(catalog.data_prefix(PREFIX, record["kind"],
                                                                                   record["backup_id"])))
        expected_gone.add(catalog.catalog_key(PREFIX, record["backup_id"]))
    expected_gone.update(estate["wal"][:3])
    assert set(before) - set(keys(s3_client, bucket)) == expected_gone
    assert set(keys(s3_client, bucket)) == set(before) - expected_gone
    assert result["deleted_backups"] == len(doomed)
    assert result["deleted_objects"] == sum(d["objects"] for d in result["delete"]) == \
        len(expected_gone) - len(doomed) - 3
    assert result["wal_deleted"] == 3 and WAL + "00000002.history" in keys(s3_client, bucket)

    # idempotent: a second run has nothing to do
    failed, again = run_module(backup_retention.main, args(aws_params, bucket, **policy))
    assert not failed and not again["changed"] and again["delete"] == [] and again["wal_delete_keys"] == []


def test_newest_backup_survives_keep_last_1_keep_days_0(s3_client, bucket, aws_params, run_module):
    records = [put_backup(s3_client, bucket, d, start_wal="00000001000000000000001%d" % (9 - d)) for d in (3, 4, 5)]
    logical = put_backup(s3_client, bucket, 100, kind="logical")
    failed, result = run_module(backup_retention.main, args(
        aws_params, bucket, physical_keep_last=1, physical_keep_days=0, pitr_window_days=0, logical_keep_last=0,
        logical_keep_days=0))
    assert not failed, result
    assert ids(result["keep"]) == [records[0]["backup_id"], logical["backup_id"]]
    assert "always kept" in result["keep"][0]["reason"]
    assert len(backup_keys(s3_client, bucket, records[0])) == 3
    assert backup_keys(s3_client, bucket, records[1]) == [] and backup_keys(s3_client, bucket, records[2]) == []


def test_backup_needed_for_the_pitr_window_survives(s3_client, bucket, aws_params, run_module):
    base = put_backup(s3_client, bucket, 8, start_wal="000000010000000000000010")
    older = put_backup(s3_client, bucket, 9, start_wal="00000001000000000000000F")
    newer = put_backup(s3_client, bucket, 1, start_wal="000000020000000000000020", timeline=2)
    wal = put_wal(s3_client, bucket, ["00000001000000000000000F", "000000010000000000000010", "00000002.history"])
    failed, result = run_module(backup_retention.main, args(
        aws_params, bucket, physical_keep_last=1, physical_keep_days=0, pitr_window_days=7))
    assert not failed, result
    assert ids(result["keep"]) == [newer["backup_id"], base["backup_id"]]
    assert result["keep"][1]["reason"].startswith("PITR base")
    assert ids(result["delete"]) == [older["backup_id"]]
    assert result["wal_delete_keys"] == [wal[0]]
    assert len(backup_keys(s3_client, bucket, base)) == 3
    assert set(wal[1:]) <= set(keys(s3_client, bucket))


def test_interrupted_run_is_finished_by_the_next(s3_client, bucket, aws_params, kms_key, run_module, monkeypatch):
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key["arn"]}
    newest = put_backup(s3_client, bucket, 0, start_wal="000000010000000000000020", sse=sse)
    old = put_backup(s3_client, bucket, 20, start_wal="000000010000000000000010", sse=sse, extra=2)
    real_delete = retention.delete_keys

    def dying_delete(*a, **kw):
        raise RtxDrError("simulated crash while deleting")

    monkeypatch.setattr(retention, "delete_keys", dying_delete)
    policy = dict(physical_keep_last=1, physical_keep_days=0, pitr_window_days=0)
    failed, result = run_module(backup_retention.main, args(aws_params, bucket, **policy))
    assert failed and "simulated crash" in result["msg"]
    key = catalog.catalog_key(PREFIX, old["backup_id"])
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["status"] == "deleting" and head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == kms_key["arn"]
    record = json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert record["status"] == "deleting" and record["deleting_since"]
    assert len(backup_keys(s3_client, bucket, old)) == 5
    # a half-deleted backup is never taken for complete
    assert catalog.latest_complete(s3_client, bucket, PREFIX)["backup_id"] == newest["backup_id"]

    monkeypatch.setattr(retention, "delete_keys", real_delete)
    # even with a policy that would keep it, a 'deleting' record is finished
    failed, result = run_module(backup_retention.main, args(aws_params, bucket))
    assert not failed, result
    assert ids(result["delete"]) == [old["backup_id"]] and "interrupted" in result["delete"][0]["reason"]
    assert result["delete"][0]["objects"] == 4
    assert backup_keys(s3_client, bucket, old) == []
    assert len(backup_keys(s3_client, bucket, newest)) == 3


def test_running_backups_are_not_touched(s3_client, bucket, aws_params, run_module):
    newest = put_backup(s3_client, bucket, 1)
    running = put_backup(s3_client, bucket, 0.01, status="running")
    dead = put_backup(s3_client, bucket, 50, status="running", extra=1)
    failed, result = run_module(backup_retention.main, args(aws_params, bucket, physical_keep_days=0))
    assert not failed, result
    assert set(ids(result["keep"])) == {newest["backup_id"], running["backup_id"]}
    assert ids(result["delete"]) == [dead["backup_id"]]
    assert result["wal_keep_from"] is None and result["wal_delete_keys"] == []  # no start_wal: no WAL deleted


def test_unreadable_record_left_alone(s3_client, bucket, aws_params, run_module):
    put_backup(s3_client, bucket, 0)
    bad_id = catalog.new_backup_id("physical", catalog.utc_now() - datetime.timedelta(days=500))
    s3_client.put_object(Bucket=bucket, Key=catalog.catalog_key(PREFIX, bad_id), Body=b"{not json")
    failed, result = run_module(backup_retention.main, args(aws_params, bucket))
    assert not failed, result
    assert bad_id in ids(result["keep"]) and result["delete"] == []
    assert any(bad_id in w for w in result["retention_warnings"])


def test_errors(aws_params, bucket, run_module):
    failed, result = run_module(backup_retention.main, args(aws_params, bucket, physical_keep_last=0))
    assert failed and "physical_keep_last 0" in result["msg"] and "at least one" in result["hint"]
    failed, result = run_module(backup_retention.main, args(aws_params, bucket, stale_running_hours=0))
    assert failed and "stale_running_hours" in result["msg"]
    failed, result = run_module(backup_retention.main, args(aws_params, "rtx-no-such-bucket"))
    assert failed and "does not exist" in result["msg"] and "nothing was deleted" in result["msg"]
    failed, result = run_module(backup_retention.main, args(dict(aws_params, endpoint_url="http://127.0.0.1:9"), bucket))
    assert failed and "Cannot reach the S3 endpoint" in result["msg"] and "127.0.0.1:9" in result["msg"]
    failed, result = run_module(backup_retention.main, {"bucket": bucket})
    assert failed and "prefix" in result["msg"]


def test_empty_bucket_with_cluster_name(aws_params, bucket, run_module):
    failed, result = run_module(backup_retention.main, args(aws_params, bucket, prefix=None, cluster_name="nothing"))
    assert not failed, result
    assert result["prefix"] == "pgbackup/nothing" and not result["changed"] and result["keep"] == []

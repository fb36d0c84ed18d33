# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""rtx.dr.s3_backup_verify against real backups of the throwaway PostgreSQL in a moto server."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, kms_client, kms_key, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import backup  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import verify  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.modules import s3_backup_verify  # noqa: E402 pylint: disable=wrong-import-position

PREFIX = "pgbackup/verifytest"


def make_backup(pg_cluster, aws, s3, kms, bucket_name, kms_key_id, **overrides):
    """A real backup of the test cluster into the moto bucket; returns its complete record."""
    params = pg_cluster.params()
    params.update(aws)
    params.update(
        kind="physical", bucket=bucket_name, prefix=PREFIX, cluster_name=None, label=None, compression="zstd",
        compression_level=None, compression_workers=0, encryption="aws:kms", kms_key_id=kms_key_id,
        part_size_mb=5, databases=None, audit_db="rtx", audit_schema="dr", pg_bin_dir=pg_cluster.bindir,
        stale_upload_seconds=3600, progress_interval=0, timeout=120,
    )
    params.update(overrides)
    run = backup.BackupRun(params, s3=s3, kms=kms)
    run.preflight()
    return run.run()


def verify_args(aws, bucket_name, **overrides):
    args = {k: v for k, v in aws.items() if v is not None}
    args.update(bucket=bucket_name, prefix=PREFIX)
    args.update(overrides)
    return args


def role(record, name):
    return next(o for o in record["objects"] if o["role"] == name)


def reput(s3, bucket_name, key, body, kms_key_id):
    """Overwrite ``key`` with ``body`` keeping its metadata and tags (only the data changes), SSE-KMS with ``kms_key_id``."""
    head = s3.head_object(Bucket=bucket_name, Key=key)
    tags = s3.get_object_tagging(Bucket=bucket_name, Key=key)["TagSet"]
    s3.put_object(Bucket=bucket_name, Key=key, Body=body, Metadata=head["Metadata"], ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=kms_key_id, Tagging="&".join("%s=%s" % (t["Key"], t["Value"]) for t in tags))


@pytest.fixture
def physical(pg_cluster, aws_params, s3_client, kms_client, bucket, kms_key):
    return make_backup(pg_cluster, aws_params, s3_client, kms_client, bucket, kms_key["alias"])


def test_documentation_matches_argument_spec(doc_matches_spec):
    doc = doc_matches_spec(s3_backup_verify)
    assert "rtx.dr.aws" in doc["extends_documentation_fragment"]


def test_physical_backup_verifies(physical, aws_params, s3_client, kms_client, bucket, kms_key, run_module):
    calls = []
    s3_client.meta.events.register("before-call.s3.*", lambda model, **kw: calls.append(model.name))
    args = verify_args(aws_params, bucket, expected_kms_key_id=kms_key["alias"], _ansible_check_mode=True)
    failed, result = run_module(s3_backup_verify.main, args)
    assert not failed, result
    assert result["changed"] is False and result["verified"] == 1 and result["failed_count"] == 0
    assert result["expected_kms_key_arn"] == kms_key["arn"]
    (entry,) = result["backups"]
    assert entry["backup_id"] == physical["backup_id"] and entry["ok"] and entry["findings"] == []
    assert entry["objects_checked"] == 2
    # everything was read back: both objects and the catalog record
    assert entry["bytes_read"] > physical["size_compressed_bytes"]
    assert {"checksum", "contents", "wal", "manifest", "encryption", "metadata_sha256"} <= set(entry["checks"])
    assert entry["wal"]["needed"] >= 1 and entry["wal"]["found"] == entry["wal"]["needed"]
    assert entry["wal"]["start_wal"] == physical["start_wal"]
    returned = set(yaml.safe_load(s3_backup_verify.RETURN))
    assert set(result) - {"changed"} <= returned

    # the same through verify_backups with the test's client: only read calls reach S3
    out = verify.verify_backups(dict(args, cluster_name=None), s3_client, kms_client)
    assert out["verified"] == 1
    assert calls and set(calls) <= {"HeadBucket", "HeadObject", "GetObject", "GetObjectTagging", "ListObjectsV2"}


def test_corrupt_base_object_is_caught(physical, aws_params, s3_client, bucket, kms_key, run_module):
    base = role(physical, "base")
    body = s3_client.get_object(Bucket=bucket, Key=base["key"])["Body"].read()
    middle = len(body) // 2
    corrupt = body[:middle] + bytes(b ^ 0xFF for b in body[middle:middle + 64]) + body[middle + 64:]
    assert len(corrupt) == len(body)
    reput(s3_client, bucket, base["key"], corrupt, kms_key["arn"])

    failed, result = run_module(s3_backup_verify.main, verify_args(aws_params, bucket))
    assert failed
    (entry,) = result["backups"]
    assert not entry["ok"] and result["failed_count"] == 1 and result["verified"] == 0
    checksum = [f for f in entry["findings"] if f["check"] == "checksum"]
    assert len(checksum) == 1 and checksum[0]["object"] == base["key"]
    assert "checksum mismatch" in checksum[0]["message"]
    # size and metadata were kept: only the recomputed checksum (and the contents) can tell
    assert {f["check"] for f in entry["findings"]} <= {"checksum", "contents"}
    assert physical["backup_id"] in result["msg"] and base["key"] in result["msg"]
    assert "checksum mismatch" in result["msg"] and result["hint"]


def test_missing_manifest_object_is_caught(physical, aws_params, s3_client, bucket, run_module):
    manifest = role(physical, "manifest")
    s3_client.delete_object(Bucket=bucket, Key=manifest["key"])
    failed, result = run_module(s3_backup_verify.main, verify_args(aws_params, bucket, backup_id=physical["backup_id"]))
    assert failed
    (entry,) = result["backups"]
    assert entry["findings"] == [{"object": manifest["key"], "check": "exists",
                                  "message": "object is missing (recorded size %d)" % manifest["size"]}]
    assert manifest["key"] in result["msg"] and "missing" in result["msg"]
    # the contents were still compared, with the manifest inside the tar
    assert "contents" in entry["checks"] and entry["wal"]["found"] == entry["wal"]["needed"]


def test_object_under_another_kms_key(physical, aws_params, s3_client, kms_client, bucket, run_module):
    other = kms_client.create_key(Description="not the backup key")["KeyMetadata"]
    manifest = role(physical, "manifest")
    body = s3_client.get_object(Bucket=bucket, Key=manifest["key"])["Body"].read()
    reput(s3_client, bucket, manifest["key"], body, other["KeyId"])
    failed, result = run_module(s3_backup_verify.main, verify_args(aws_params, bucket))
    assert failed
    (entry,) = result["backups"]
    (wrong,) = entry["findings"]
    assert wrong["object"] == manifest["key"] and wrong["check"] == "kms_key"
    assert "wrong KMS key" in wrong["message"] and other["Arn"] in wrong["message"]
    assert physical["kms_key_arn"] in wrong["message"] and "wrong KMS key" in result["msg"]


def test_running_record_not_selected(physical, aws_params, s3_client, kms_client, bucket, kms_key, run_module):
    record = dict(physical)
    for extra in ("progress", "command"):
        record.pop(extra)
    record["backup_id"] = catalog.new_backup_id("physical")  # newer than the complete one
    record["status"] = "running"
    catalog.write_record(s3_client, bucket, PREFIX, record,
                         {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key["arn"]})

    failed, result = run_module(s3_backup_verify.main, verify_args(aws_params, bucket))
    assert not failed, result
    assert [b["backup_id"] for b in result["backups"]] == [physical["backup_id"]]
    assert result["skipped"] == [{"backup_id": record["backup_id"], "status": "running"}]

    failed, result = run_module(s3_backup_verify.main, verify_args(aws_params, bucket, backup_id=record["backup_id"]))
    assert failed
    (entry,) = result["backups"]
    assert [f["check"] for f in entry["findings"]] == ["record_status"]
    assert "is running, not complete" in result["msg"] and record["backup_id"] in result["msg"]


def test_logical_backup_and_truncated_dump(pg_cluster, aws_params, s3_client, kms_client, bucket, kms_key,
                                           run_module):
    record = make_backup(pg_cluster, aws_params, s3_client, kms_client, bucket, kms_key["key_id"], kind="logical",
                         databases=["postgres"], compression="gzip")
    args = verify_args(aws_params, bucket, kind="logical", expected_kms_key_id=kms_key["arn"])
    failed, result = run_module(s3_backup_verify.main, args)
    assert not failed, result
    (entry,) = result["backups"]
    assert entry["kind"] == "logical" and entry["ok"] and "dump_format" in entry["checks"]
    assert "checksum" in entry["checks"]

    (dump,) = record["objects"]
    body = s3_client.get_object(Bucket=bucket, Key=dump["key"])["Body"].read()
    reput(s3_client, bucket, dump["key"], body[:len(body) // 2], kms_key["arn"])
    failed, result = run_module(s3_backup_verify.main, args)
    assert failed
    checks = {f["check"]: f for f in result["backups"][0]["findings"]}
    assert set(checks) == {"size", "checksum"}
    assert checks["size"]["object"] == dump["key"] and "%d bytes" % (len(body) // 2) in checks["size"]["message"]

    # not a dump at all (e.g. a plain SQL file uploaded in its place): the header check says so
    reput(s3_client, bucket, dump["key"], b"-- PostgreSQL database dump\n", kms_key["arn"])
    failed, result = run_module(s3_backup_verify.main, dict(args, checksums=False))
    assert failed
    checks = {f["check"]: f for f in result["backups"][0]["findings"]}
    assert "PGDMP" in checks["dump_format"]["message"] and "checksum" not in checks


def test_select_all_and_metadata_only(physical, aws_params, bucket, run_module):
    args = verify_args(aws_params, bucket, select="all", checksums=False, check_contents=False)
    failed, result = run_module(s3_backup_verify.main, args)
    assert not failed, result
    (entry,) = result["backups"]
    assert entry["ok"] and "checksum" not in entry["checks"] and "contents" not in entry["checks"]
    # only the manifest (needed for its own checks) and the record were read, not the base tar
    assert entry["bytes_read"] < role(physical, "base")["size"]


def test_no_backups_missing_bucket_unreachable_endpoint(aws_params, bucket, run_module):
    failed, result = run_module(s3_backup_verify.main, verify_args(aws_params, bucket))
    assert failed and "No complete physical backup found" in result["msg"] and PREFIX in result["msg"]
    assert "pg_basebackup" in result["hint"]

    failed, result = run_module(s3_backup_verify.main, verify_args(aws_params, "rtx-no-such-bucket"))
    assert failed and "rtx-no-such-bucket" in result["msg"] and "does not exist" in result["msg"]

    with_dead_endpoint = dict(aws_params, endpoint_url="http://127.0.0.1:9")
    started = time.monotonic()
    failed, result = run_module(s3_backup_verify.main, verify_args(with_dead_endpoint, bucket))
    assert failed and "Cannot reach the S3 endpoint" in result["msg"] and "127.0.0.1:9" in result["msg"]
    assert "endpoint_url" in result["hint"]
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("overrides,needle", [
    ({"deep": True}, "run by the restore feature"),
    ({"select": "id"}, "backup_id"),
    ({"backup_id": "nope"}, "Invalid backup id"),
    ({"backup_id": "20261127T031500.123Z-F", "select": "all"}, "select=all"),
    ({"backup_id": "20261127T031500.123Z-F", "kind": "logical"}, "physical backup but kind=logical"),
    ({"prefix": None}, "prefix, cluster_name"),
])
def test_option_errors(run_module, overrides, needle):
    args = {"bucket": "b", "prefix": "p"}
    args.update(overrides)
    args = {k: v for k, v in args.items() if v is not None}
    failed, result = run_module(s3_backup_verify.main, args)
    assert failed and needle in result["msg"], result

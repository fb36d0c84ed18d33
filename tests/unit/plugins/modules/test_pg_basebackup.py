# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, kms_client, kms_key, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.modules import pg_basebackup  # noqa: E402 pylint: disable=wrong-import-position


def test_documentation_matches_argument_spec(doc_matches_spec):
    doc = doc_matches_spec(pg_basebackup)
    assert {"rtx.dr.postgres", "rtx.dr.aws"} <= set(doc["extends_documentation_fragment"])


def module_args(pg_cluster, aws, bucket_name, **overrides):
    args = pg_cluster.module_args()
    args.update({k: v for k, v in aws.items() if v is not None})
    args.update(bucket=bucket_name, pg_bin_dir=pg_cluster.bindir, part_size_mb=5, progress_interval=1,
                audit_db="postgres")
    args.update(overrides)
    return args


def test_refuses_without_kms_key(run_module):
    failed, result = run_module(pg_basebackup.main, {"bucket": "b"})
    assert failed
    assert "kms_key_id" in result["msg"] and "encryption: none" in result["hint"]


def test_check_mode_moves_no_data(pg_cluster, aws_params, s3_client, bucket, kms_key, run_module):
    args = module_args(pg_cluster, aws_params, bucket, kms_key_id=kms_key["alias"], _ansible_check_mode=True)
    failed, result = run_module(pg_basebackup.main, args)
    assert not failed, result
    assert result["status"] == "planned" and result["kind"] == "physical"
    assert result["kms_key_arn"] == kms_key["arn"]
    assert [o["key"] for o in result["objects"]] == [
        "pgbackup/rtxtest_primary/base/<backup_id>/base.tar.zst",
        "pgbackup/rtxtest_primary/base/<backup_id>/backup_manifest",
        "pgbackup/rtxtest_primary/catalog/<backup_id>.json",
    ]
    assert result["command"][0].endswith("pg_basebackup")
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)


def test_backup_through_the_module(pg_cluster, aws_params, s3_client, bucket, kms_key, run_module):
    args = module_args(pg_cluster, aws_params, bucket, kms_key_id=kms_key["alias"], cluster_name="prod",
                       label="nightly")
    failed, result = run_module(pg_basebackup.main, args)
    assert not failed, result
    assert result["changed"] and result["status"] == "complete" and result["label"] == "nightly"
    assert result["prefix"] == "pgbackup/prod" and result["reaped_uploads"] == []
    # the audit table does not exist in 'postgres': reported, not fatal
    assert result["audit"]["written"] is False and "backup_history" in result["audit"]["reason"]
    assert result["progress"] and result["progress"][-1]["bytes"] == result["size_raw_bytes"]
    assert pg_cluster.params()["login_password"] not in " ".join(result["command"])
    stored = catalog.latest_complete(s3_client, bucket, "pgbackup/prod")
    assert stored["backup_id"] == result["backup_id"]
    for obj in stored["objects"]:
        body = s3_client.get_object(Bucket=bucket, Key=obj["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj["sha256"]
    returned = set(yaml.safe_load(pg_basebackup.RETURN))
    assert set(result) - {"changed"} <= returned


def test_unknown_kms_key_fails_cleanly(pg_cluster, aws_params, s3_client, bucket, run_module):
    args = module_args(pg_cluster, aws_params, bucket, kms_key_id="alias/missing")
    failed, result = run_module(pg_basebackup.main, args)
    assert failed
    assert "alias/missing" in result["msg"] and "hint" in result
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)


def test_bucket_without_sse_kms_is_refused_before_data_moves(pg_cluster, aws_params, s3_client, kms_key,
                                                             run_module):
    plain = "rtx-plain-%s" % kms_key["key_id"][:8]
    s3_client.create_bucket(Bucket=plain)
    args = module_args(pg_cluster, aws_params, plain, kms_key_id=kms_key["alias"])
    failed, result = run_module(pg_basebackup.main, args)
    assert failed
    assert "Bucket %s (option bucket) has no default SSE-KMS encryption" % plain in result["msg"]
    assert "nothing was backed up" in result["msg"] and "s3_storage" in result["hint"]
    assert "Contents" not in s3_client.list_objects_v2(Bucket=plain)
    assert not s3_client.list_multipart_uploads(Bucket=plain).get("Uploads")


@pytest.mark.parametrize("overrides,needle", [
    ({"compression": "gzip", "compression_level": 12}, "compression_level"),
    ({"part_size_mb": 2}, "part_size_mb"),
])
def test_option_errors(run_module, overrides, needle):
    args = {"bucket": "b", "encryption": "none"}
    args.update(overrides)
    failed, result = run_module(pg_basebackup.main, args)
    assert failed and needle in result["msg"]

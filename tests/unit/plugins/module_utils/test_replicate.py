# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""module_utils/replicate.py against a moto server with two regions (us-east-1 primary, us-west-2 replica),
each bucket with its own KMS key under the same alias, as rtx.dr.s3_storage creates them."""

from __future__ import annotations

import datetime
import hashlib
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import moto_url  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import replicate  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import s3stream  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import walarchive  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError  # noqa: E402 pylint: disable=wrong-import-position

PREFIX = "pgbackup/replica-test"
MIB = 1024 * 1024
EAST, WEST = "us-east-1", "us-west-2"


def two_regions(url, name="rtx-xr"):
    """Primary bucket + key in us-east-1, replica bucket + key (same alias) in us-west-2, on the moto server."""
    import boto3  # pylint: disable=import-outside-toplevel

    out = {"url": url, "alias": "alias/%s-%s" % (name, uuid.uuid4().hex[:8])}
    for label, region in (("east", EAST), ("west", WEST)):
        kwargs = dict(endpoint_url=url, region_name=region, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
        s3 = boto3.client("s3", **kwargs)
        kms = boto3.client("kms", **kwargs)
        bucket = "%s-%s-%s" % (name, label, uuid.uuid4().hex[:8])
        if region == EAST:
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
        key = kms.create_key(Description="rtx.dr %s" % label)["KeyMetadata"]
        kms.create_alias(AliasName=out["alias"], TargetKeyId=key["KeyId"])
        out[label] = {"s3": s3, "kms": kms, "bucket": bucket, "arn": key["Arn"], "region": region}
    return out


def params_for(xr, **overrides):
    params = {"region": EAST, "endpoint_url": xr["url"], "access_key": "testing", "secret_key": "testing",
              "session_token": None, "profile": None, "validate_certs": True, "aws_ca_bundle": None,
              "bucket": xr["east"]["bucket"], "prefix": PREFIX, "cluster_name": None,
              "replica_bucket": xr["west"]["bucket"], "replica_region": WEST, "replica_endpoint_url": None,
              "replica_kms_key_id": xr["alias"], "encryption": "aws:kms", "backup_id": None, "backups": True,
              "wal": True, "wal_segment_size": MIB}
    params.update(overrides)
    return params


def put_object(s3, bucket, key, body, arn, content_type="application/octet-stream"):
    sha = hashlib.sha256(body).hexdigest()
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"sha256": sha}, ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=arn, ContentType=content_type)
    return {"key": key, "size": len(body), "sha256": sha}


def put_backup(xr, minutes_ago, start_wal, status="complete", size=64 * 1024):
    """A synthetic physical backup in the primary bucket: base tar + manifest objects, then its record."""
    east = xr["east"]
    started = catalog.utc_now() - datetime.timedelta(minutes=minutes_ago)
    backup_id = catalog.new_backup_id("physical", started)
    area = catalog.data_prefix(PREFIX, "physical", backup_id)
    objects = [
        dict(put_object(east["s3"], east["bucket"], area + "base.tar.zst", uuid.uuid4().bytes * (size // 16),
                        east["arn"]), role="base"),
        dict(put_object(east["s3"], east["bucket"], area + "backup_manifest", b'{"manifest": 1}', east["arn"],
                        "application/json"), role="manifest"),
    ]
    record = {"format_version": 1, "backup_id": backup_id, "kind": "physical", "status": status,
              "started_at": catalog.isoformat(started), "finished_at": catalog.isoformat(started),
              "timeline": 1, "start_wal": start_wal, "stop_wal": start_wal, "start_lsn": "0/0", "stop_lsn": "0/0",
              "objects": objects, "bucket": east["bucket"], "prefix": PREFIX, "encryption": "aws:kms",
              "kms_key_id": xr["alias"], "kms_key_arn": east["arn"], "wal_included": True}
    catalog.write_record(east["s3"], east["bucket"], PREFIX, record,
                         {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": east["arn"]})
    return record


def push_wal(xr, tmp_path, names):
    """Archive WAL files into the primary bucket with the agent's own push."""
    params = params_for(xr, compression="gzip", compression_level=None, kms_key_id=xr["east"]["arn"],
                        replica_bucket=None)
    for name in names:
        path = tmp_path / name
        path.write_bytes((name.encode() * MIB)[:MIB] if not name.endswith(".history") else b"1\t0/3000000\tno\n")
        walarchive.push(xr["east"]["s3"], params, str(path))


def keys(s3, bucket):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents") or ())


@pytest.fixture
def xr(moto_url):  # noqa: F811 pylint: disable=redefined-outer-name
    return two_regions(moto_url)


@pytest.fixture
def estate(xr, tmp_path):  # pylint: disable=redefined-outer-name
    """Two complete backups, a failed one, and WAL from before the oldest backup to after the newest."""
    old = put_backup(xr, 60, "000000010000000000000003")
    new = put_backup(xr, 10, "000000010000000000000005")
    failed = put_backup(xr, 5, "000000010000000000000006", status="failed")
    push_wal(xr, tmp_path, ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004",
                            "000000010000000000000005", "000000010000000000000006", "00000002.history"])
    return {"old": old, "new": new, "failed": failed}


def run(xr, check_mode=False, **overrides):  # pylint: disable=redefined-outer-name
    params = params_for(xr, **overrides)
    return replicate.replicate(params, xr["east"]["s3"], xr["west"]["s3"], kms=xr["west"]["kms"],
                               check_mode=check_mode)


def test_copies_backups_and_wal_and_is_idempotent(xr, estate):  # pylint: disable=redefined-outer-name
    west = xr["west"]
    result = run(xr)
    assert result["changed"] is True
    assert result["copied_backups"] == [estate["old"]["backup_id"], estate["new"]["backup_id"]]
    assert result["copied_objects"] == 4
    # WAL from the oldest complete backup's start_wal on (002 is older), the history file too
    assert result["wal_from"] == "000000010000000000000003"
    assert result["copied_segments"] == ["00000002.history", "000000010000000000000003",
                                         "000000010000000000000004", "000000010000000000000005",
                                         "000000010000000000000006"]
    assert result["copied_bytes"] > sum(o["size"] for r in (estate["old"], estate["new"]) for o in r["objects"])
    for record in (estate["old"], estate["new"]):
        for obj in record["objects"]:
            copied = west["s3"].get_object(Bucket=west["bucket"], Key=obj["key"])
            body = copied["Body"].read()
            assert hashlib.sha256(body).hexdigest() == obj["sha256"] == copied["Metadata"]["sha256"]
            assert copied["Metadata"]["sha256"] == s3stream.stored_sha256(west["s3"], west["bucket"], obj["key"], copied)
            assert copied["ServerSideEncryption"] == "aws:kms" and copied["SSEKMSKeyId"] == west["arn"]
        replica = catalog.read_record(west["s3"], west["bucket"], PREFIX, record["backup_id"])
        assert replica["status"] == "complete" and replica["objects"] == record["objects"]
        assert replica["bucket"] == west["bucket"] and replica["kms_key_arn"] == west["arn"]
        assert replica["replica_of"] == {"bucket": xr["east"]["bucket"], "region": EAST,
                                         "kms_key_arn": xr["east"]["arn"]}
    assert catalog.read_record(west["s3"], west["bucket"], PREFIX, estate["failed"]["backup_id"]) is None
    assert not [k for k in keys(west["s3"], west["bucket"]) if "000000010000000000000002" in k]
    seg = "%s/wal/00000001/000000010000000000000004.gz" % PREFIX
    source = xr["east"]["s3"].head_object(Bucket=xr["east"]["bucket"], Key=seg)
    copied = west["s3"].head_object(Bucket=west["bucket"], Key=seg)
    assert copied["Metadata"] == source["Metadata"] and copied["SSEKMSKeyId"] == west["arn"]

    before = keys(west["s3"], west["bucket"])
    again = run(xr)
    assert again["changed"] is False and again["copied_backups"] == [] and again["copied_segments"] == []
    assert [b["action"] for b in again["backups"]] == ["up_to_date", "up_to_date"]
    assert keys(west["s3"], west["bucket"]) == before


def test_a_replica_copy_is_a_restorable_archive(xr, estate, tmp_path):  # pylint: disable=redefined-outer-name
    run(xr)
    params = params_for(xr, bucket=xr["west"]["bucket"], region=WEST, replica_bucket=None, compression="gzip",
                        compression_level=None, kms_key_id=None)
    got = walarchive.fetch(xr["west"]["s3"], params, "000000010000000000000004", str(tmp_path / "RECOVERYXLOG"))
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == (b"000000010000000000000004" * MIB)[:MIB]
    assert got["key"].endswith(".gz")
    latest = catalog.latest_complete(xr["west"]["s3"], xr["west"]["bucket"], PREFIX)
    assert latest["backup_id"] == estate["new"]["backup_id"]


def test_check_mode_lists_and_writes_nothing(xr, estate):  # pylint: disable=redefined-outer-name
    result = run(xr, check_mode=True)
    assert result["changed"] is True
    assert result["copied_backups"] == [estate["old"]["backup_id"], estate["new"]["backup_id"]]
    assert "000000010000000000000005" in result["copied_segments"]
    assert keys(xr["west"]["s3"], xr["west"]["bucket"]) == []


def test_one_backup_only(xr, estate):  # pylint: disable=redefined-outer-name
    result = run(xr, backup_id=estate["new"]["backup_id"], wal=False)
    assert result["copied_backups"] == [estate["new"]["backup_id"]] and result["copied_segments"] == []
    assert catalog.list_backup_ids(xr["west"]["s3"], xr["west"]["bucket"], PREFIX) == [estate["new"]["backup_id"]]
    with pytest.raises(RtxDrError, match="no complete record"):
        run(xr, backup_id=estate["failed"]["backup_id"])


def test_corrupted_replica_object_is_an_error_naming_the_key(xr, estate):  # pylint: disable=redefined-outer-name
    run(xr)
    west = xr["west"]
    key = estate["new"]["objects"][0]["key"]
    damaged = west["s3"].get_object(Bucket=west["bucket"], Key=key)
    west["s3"].put_object(Bucket=west["bucket"], Key=key, Body=damaged["Body"].read()[:-1],
                          Metadata=damaged["Metadata"], ServerSideEncryption="aws:kms", SSEKMSKeyId=west["arn"])
    with pytest.raises(replicate.ReplicaConflictError) as info:
        run(xr)
    assert key in info.value.msg and "NOT overwritten" in info.value.msg
    assert west["s3"].head_object(Bucket=west["bucket"], Key=key)["ContentLength"] == \
        estate["new"]["objects"][0]["size"] - 1


def test_a_different_object_already_in_the_replica_blocks_the_backup(xr, estate):  # pylint: disable=redefined-outer-name
    west = xr["west"]
    key = estate["old"]["objects"][1]["key"]
    put_object(west["s3"], west["bucket"], key, b"something else", west["arn"])
    with pytest.raises(replicate.ReplicaConflictError, match=key):
        run(xr)
    assert catalog.list_backup_ids(west["s3"], west["bucket"], PREFIX) == []
    assert west["s3"].get_object(Bucket=west["bucket"], Key=key)["Body"].read() == b"something else"


def test_record_is_written_last(xr, estate, monkeypatch):  # pylint: disable=redefined-outer-name
    west = xr["west"]
    real = replicate.Replicator._copy
    calls = []

    def failing(self, key, source_head, sha256):
        calls.append(key)
        if len(calls) == 2:
            raise RtxDrError("simulated failure copying %s" % key)
        return real(self, key, source_head, sha256)

    monkeypatch.setattr(replicate.Replicator, "_copy", failing)
    with pytest.raises(RtxDrError, match="simulated failure"):
        run(xr)
    # the first object is there, the record is not: the replica shows no backup
    assert calls[0] in keys(west["s3"], west["bucket"])
    assert catalog.list_backup_ids(west["s3"], west["bucket"], PREFIX) == []
    monkeypatch.setattr(replicate.Replicator, "_copy", real)
    result = run(xr)
    assert result["copied_backups"] == [estate["old"]["backup_id"], estate["new"]["backup_id"]]
    assert result["backups"][0]["objects"] == 1  # only the missing one was copied
    assert len(catalog.list_backup_ids(west["s3"], west["bucket"], PREFIX)) == 2


def test_missing_object_under_an_existing_record_is_copied_again(xr, estate):  # pylint: disable=redefined-outer-name
    run(xr)
    west = xr["west"]
    key = estate["old"]["objects"][0]["key"]
    west["s3"].delete_object(Bucket=west["bucket"], Key=key)
    result = run(xr)
    assert result["changed"] is True and result["copied_backups"] == [estate["old"]["backup_id"]]
    assert key in keys(west["s3"], west["bucket"])


def test_replica_record_with_other_objects_is_a_conflict(xr, estate):  # pylint: disable=redefined-outer-name
    run(xr)
    west = xr["west"]
    record = catalog.read_record(west["s3"], west["bucket"], PREFIX, estate["new"]["backup_id"])
    record["objects"][0]["sha256"] = "0" * 64
    catalog.write_record(west["s3"], west["bucket"], PREFIX, record)
    with pytest.raises(replicate.ReplicaConflictError, match=catalog.catalog_key(PREFIX, estate["new"]["backup_id"])):
        run(xr)


def test_replica_record_being_deleted_is_left_alone(xr, estate):  # pylint: disable=redefined-outer-name
    run(xr)
    west = xr["west"]
    record = catalog.read_record(west["s3"], west["bucket"], PREFIX, estate["old"]["backup_id"])
    record["status"] = "deleting"
    catalog.write_record(west["s3"], west["bucket"], PREFIX, record)
    result = run(xr)
    assert result["changed"] is False
    assert "left alone" in result["replicate_warnings"][0]


@pytest.mark.parametrize("overrides,needle", [
    ({"replica_kms_key_id": None}, "replica_kms_key_id is not set"),
    ({"replica_bucket": "same", "bucket": "same", "replica_region": None}, "is the primary bucket itself"),
    ({"prefix": None}, "Neither prefix nor cluster_name"),
    ({"backup_id": "nonsense"}, "Invalid backup id"),
])
def test_option_errors(overrides, needle):
    params = {"region": EAST, "endpoint_url": None, "bucket": "a", "prefix": PREFIX, "replica_bucket": "b",
              "replica_region": WEST, "replica_kms_key_id": "alias/k", "encryption": "aws:kms"}
    params.update(overrides)
    with pytest.raises(InvalidValueError, match=needle):
        replicate.check_options(params)


def test_missing_replica_bucket_is_named(xr):  # pylint: disable=redefined-outer-name
    with pytest.raises(RtxDrError, match="does not exist.*s3_storage_replica_bucket"):
        run(xr, replica_bucket="rtx-xr-nowhere-%s" % uuid.uuid4().hex[:6])


@pytest.mark.parametrize("managed_copy", [False, True], ids=["copy_object", "multipart_copy"])
def test_the_sha256_tag_of_a_multipart_backup_object_is_copied_and_checked(
        xr, tmp_path, monkeypatch, managed_copy):  # pylint: disable=redefined-outer-name
    """A base tar sent as a multipart upload carries its sha256 as a tag: CopyObject copies it, the multipart copy
    of objects over 4 GiB (made to run on 11 MiB here) does not, so the replica tags it; the copy is checked."""
    if managed_copy:
        monkeypatch.setattr(replicate, "COPY_THRESHOLD", 5 * MIB)
        monkeypatch.setattr(replicate, "COPY_PART_SIZE", 5 * MIB)
    record = put_backup(xr, 30, "000000010000000000000003")
    east, west = xr["east"], xr["west"]
    base = record["objects"][0]
    up = s3stream.StreamUploader(east["s3"], east["bucket"], base["key"], part_size=5 * MIB,
                                 extra_args={"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": east["arn"]})
    data = uuid.uuid4().bytes * (11 * MIB // 16)
    up.write(data)
    facts = up.close()
    assert facts["parts"] == 3
    assert "sha256" not in east["s3"].head_object(Bucket=east["bucket"], Key=base["key"])["Metadata"]
    base.update(size=facts["size"], sha256=facts["sha256"])
    catalog.write_record(east["s3"], east["bucket"], PREFIX, record,
                         {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": east["arn"]})
    push_wal(xr, tmp_path, ["000000010000000000000003"])

    result = run(xr, wal=False)
    assert result["copied_backups"] == [record["backup_id"]]
    head = west["s3"].head_object(Bucket=west["bucket"], Key=base["key"])
    assert s3stream.stored_sha256(west["s3"], west["bucket"], base["key"], head) == facts["sha256"]
    assert head["ContentLength"] == facts["size"] and head["SSEKMSKeyId"] == west["arn"]
    assert west["s3"].get_object(Bucket=west["bucket"], Key=base["key"])["Body"].read() == data

# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Unit tests of module_utils/walarchive.py (WAL push/fetch) against a moto server."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, kms_client, kms_key, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import retention  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import verify  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import walarchive  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.compress import decompress_bytes  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.walarchive import WalChecksumError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.walarchive import WalConflictError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.walarchive import WalNotFoundError  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024
PREFIX = "pgbackup/waltest"
SEG = "000000010000000000000003"
SMALL = MIB  # the smallest valid wal_segment_size keeps most tests fast


def wal_bytes(size, seed=b"rtx", random_part=64 * 1024):
    """Segment-like content: a pseudo-random head (incompressible) and zero padding, like a switched segment."""
    head = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(random_part // 32))
    return (head + bytes(size))[:size]


def write(directory, name, data):
    path = Path(directory) / name
    path.write_bytes(data)
    return str(path)


def make_params(bucket_name, key, **overrides):  # pylint: disable=redefined-outer-name
    params = {"bucket": bucket_name, "prefix": PREFIX, "cluster_name": None, "compression": "zstd",
              "compression_level": None, "encryption": "aws:kms", "kms_key_id": key["arn"], "wal_segment_size": SMALL}
    params.update(overrides)
    return params


def sha(data):
    return hashlib.sha256(data).hexdigest()


def leftovers(directory):
    return [n for n in os.listdir(directory) if n.endswith(".rtxdr-tmp")]


# --------------------------------------------------------------------------
# names and keys (pure)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name,kind,key", [
    (SEG, "segment", PREFIX + "/wal/00000001/" + SEG),
    ("0000000A00000001000000FE", "segment", PREFIX + "/wal/0000000A/0000000A00000001000000FE"),
    (SEG + ".partial", "partial", PREFIX + "/wal/00000001/" + SEG + ".partial"),
    (SEG + ".00000028.backup", "backup", PREFIX + "/wal/00000001/" + SEG + ".00000028.backup"),
    ("00000002.history", "history", PREFIX + "/wal/00000002.history"),
])
def test_names_and_keys(name, kind, key):
    assert walarchive.wal_file_kind(name) == kind
    assert walarchive.wal_base_key(PREFIX + "/", name) == key


@pytest.mark.parametrize("name", ["RECOVERYXLOG", "000000010000000000000003.zst", "00000001000000000000000g",
                                  "000000000000000000000003", "00000000.history", "archive_status",
                                  "000000010000000000000100"])
def test_invalid_names(name):
    with pytest.raises(InvalidValueError):
        walarchive.wal_file_kind(name)


def test_layout_is_what_verify_and_retention_read(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    params = make_params(bucket, kms_key)
    segs = ["000000010000000000000002", "000000010000000000000003", "000000020000000000000004"]
    keys = [walarchive.push(s3_client, params, write(tmp_path, s, wal_bytes(SMALL, s.encode())))["key"]
            for s in segs]
    history = walarchive.push(s3_client, params, write(tmp_path, "00000002.history", b"1\t0/4000000\tno reason\n"))
    found = verify.find_archived_wal(s3_client, bucket, PREFIX, segs)
    assert found == dict(zip(segs, keys))
    assert retention.wal_key_deletable(keys[0], segs[1]) and not retention.wal_key_deletable(keys[1], segs[1])
    assert not retention.wal_key_deletable(history["key"], segs[2])


def test_a_partial_segment_or_backup_file_is_not_the_segment(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    params = make_params(bucket, kms_key)
    walarchive.push(s3_client, params, write(tmp_path, "000000010000000000000005.partial",
                                             wal_bytes(SMALL, b"partial")))
    walarchive.push(s3_client, params, write(tmp_path, "000000010000000000000006.00000028.backup",
                                             b"START WAL LOCATION: 0/6000028\n"))
    wanted = ["000000010000000000000005", "000000010000000000000006"]
    assert verify.find_archived_wal(s3_client, bucket, PREFIX, wanted) == {}


# --------------------------------------------------------------------------
# push and fetch
# --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["zstd", "lz4", "gzip", "none"])
def test_round_trip_sse_kms_and_checksums(s3_client, bucket, kms_key, tmp_path, method):  # noqa: F811
    data = wal_bytes(SMALL)
    params = make_params(bucket, kms_key, compression=method)
    pushed = walarchive.push(s3_client, params, write(tmp_path, SEG, data))
    ext = {"zstd": ".zst", "lz4": ".lz4", "gzip": ".gz", "none": ""}[method]
    assert pushed["key"] == "%s/wal/00000001/%s%s" % (PREFIX, SEG, ext)
    assert pushed["bytes"] == SMALL and pushed["sha256"] == sha(data) and pushed["skipped_existing"] is False
    assert pushed["compression"] == method and pushed["seconds"] >= 0
    if method != "none":
        assert pushed["compressed_bytes"] < SMALL // 4

    obj = s3_client.get_object(Bucket=bucket, Key=pushed["key"])
    stored = obj["Body"].read()
    assert obj["ServerSideEncryption"] == "aws:kms" and obj["SSEKMSKeyId"] == kms_key["arn"]
    assert obj["Metadata"]["sha256"] == sha(stored) == pushed["stored_sha256"]
    assert obj["Metadata"]["raw-sha256"] == sha(data) and obj["Metadata"]["raw-size"] == str(SMALL)
    assert decompress_bytes(method, stored) == data

    dest = tmp_path / "restore" / "RECOVERYXLOG"
    dest.parent.mkdir()
    fetched = walarchive.fetch(s3_client, params, SEG, str(dest))
    assert dest.read_bytes() == data
    assert fetched["key"] == pushed["key"] and fetched["sha256"] == sha(data) and fetched["bytes"] == SMALL
    assert fetched["compressed_bytes"] == len(stored)
    assert not leftovers(dest.parent)


def test_default_16mib_segment_auto_compression(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    data = wal_bytes(16 * MIB, random_part=4 * MIB)
    params = make_params(bucket, kms_key, compression="auto", wal_segment_size=16 * MIB)
    pushed = walarchive.push(s3_client, params, write(tmp_path, SEG, data))
    assert pushed["key"].endswith(SEG + ".zst") and pushed["compression"] == "zstd"
    dest = tmp_path / "out"
    walarchive.fetch(s3_client, params, SEG, str(dest))
    assert sha(dest.read_bytes()) == sha(data)


def test_wrong_size_is_refused_before_any_upload(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    params = make_params(bucket, kms_key, wal_segment_size=16 * MIB)
    with pytest.raises(InvalidValueError, match="is 1048576 bytes but a WAL segment is 16777216"):
        walarchive.push(s3_client, params, write(tmp_path, SEG, wal_bytes(SMALL)))
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)


def test_encryption_needs_a_key_unless_none_explicitly(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    path = write(tmp_path, SEG, wal_bytes(SMALL))
    with pytest.raises(InvalidValueError, match="kms_key_id is not set"):
        walarchive.push(s3_client, make_params(bucket, kms_key, kms_key_id=None), path)
    with pytest.raises(InvalidValueError, match="kms_key_id is not set"):
        walarchive.push(s3_client, make_params(bucket, kms_key, kms_key_id=None, encryption=None), path)
    pushed = walarchive.push(s3_client, make_params(bucket, kms_key, kms_key_id=None, encryption="none"), path)
    assert pushed["skipped_existing"] is False
    # a restore host needs no key
    walarchive.fetch(s3_client, make_params(bucket, kms_key, kms_key_id=None), SEG, str(tmp_path / "out"))


def test_kms_alias_is_resolved_to_the_arn(s3_client, kms_client, bucket, kms_key, tmp_path):  # noqa: F811
    params = make_params(bucket, kms_key, kms_key_id=kms_key["alias"])
    pushed = walarchive.push(s3_client, params, write(tmp_path, SEG, wal_bytes(SMALL)), kms=lambda: kms_client)
    assert s3_client.head_object(Bucket=bucket, Key=pushed["key"])["SSEKMSKeyId"] == kms_key["arn"]


def test_same_content_twice_is_skipped(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    params = make_params(bucket, kms_key)
    path = write(tmp_path, SEG, wal_bytes(SMALL))
    first = walarchive.push(s3_client, params, path)
    before = s3_client.head_object(Bucket=bucket, Key=first["key"])
    lines = []
    second = walarchive.push(s3_client, params, path, log=lines.append)
    assert second["skipped_existing"] is True and second["key"] == first["key"] and second["sha256"] == first["sha256"]
    assert "already archived with the same content" in lines[0]
    after = s3_client.head_object(Bucket=bucket, Key=first["key"])
    assert after["LastModified"] == before["LastModified"] and after["ETag"] == before["ETag"]
    # another compression setting finds the archived copy: no second object under another suffix
    third = walarchive.push(s3_client, make_params(bucket, kms_key, compression="gzip"), path)
    assert third["skipped_existing"] is True and third["key"] == first["key"] and third["compression"] == "zstd"
    assert len(s3_client.list_objects_v2(Bucket=bucket)["Contents"]) == 1


@pytest.mark.parametrize("second_method", ["zstd", "none"])
def test_different_content_is_an_error_and_never_overwrites(s3_client, bucket, kms_key, tmp_path,  # noqa: F811
                                                            second_method):
    params = make_params(bucket, kms_key)
    original = wal_bytes(SMALL, b"one")
    first = walarchive.push(s3_client, params, write(tmp_path, SEG, original))
    stored = s3_client.get_object(Bucket=bucket, Key=first["key"])["Body"].read()
    other = tmp_path / "other"
    other.mkdir()
    changed = wal_bytes(SMALL, b"two")
    with pytest.raises(WalConflictError) as info:
        walarchive.push(s3_client, make_params(bucket, kms_key, compression=second_method),
                        write(other, SEG, changed))
    msg = info.value.msg
    assert first["key"] in msg and sha(original) in msg and sha(changed) in msg and "NOT overwritten" in msg
    assert info.value.hint and info.value.details["key"] == first["key"]
    assert s3_client.get_object(Bucket=bucket, Key=first["key"])["Body"].read() == stored
    assert len(s3_client.list_objects_v2(Bucket=bucket)["Contents"]) == 1


def test_concurrent_push_loses_the_conditional_put(s3_client, bucket, kms_key, tmp_path, monkeypatch):  # noqa: F811
    """The listing says 'absent' but another pusher got there first: the If-None-Match PUT is refused."""
    params = make_params(bucket, kms_key)
    original = wal_bytes(SMALL, b"one")
    first = walarchive.push(s3_client, params, write(tmp_path, SEG, original))
    real = walarchive.archived_variants
    calls = []

    def stale_listing(*args):
        calls.append(args)
        return {} if len(calls) == 1 else real(*args)

    monkeypatch.setattr(walarchive, "archived_variants", stale_listing)
    again = walarchive.push(s3_client, params, write(tmp_path, SEG, original))
    assert again["skipped_existing"] is True and again["key"] == first["key"] and len(calls) == 2
    calls.clear()
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(WalConflictError):
        walarchive.push(s3_client, params, write(other, SEG, wal_bytes(SMALL, b"two")))
    assert decompress_bytes("zstd", s3_client.get_object(Bucket=bucket, Key=first["key"])["Body"].read()) == original


def test_fetch_missing_is_not_found(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    params = make_params(bucket, kms_key)
    dest = tmp_path / "RECOVERYXLOG"
    for name in (SEG, "00000005.history"):
        with pytest.raises(WalNotFoundError) as info:
            walarchive.fetch(s3_client, params, name, str(dest))
        assert name in info.value.msg
    assert not dest.exists() and not leftovers(tmp_path)


def test_fetch_finds_another_suffix(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    data = wal_bytes(SMALL)
    walarchive.push(s3_client, make_params(bucket, kms_key, compression="lz4"), write(tmp_path, SEG, data))
    fetched = walarchive.fetch(s3_client, make_params(bucket, kms_key), SEG, str(tmp_path / "out"))
    assert fetched["compression"] == "lz4" and (tmp_path / "out").read_bytes() == data


def _replace_body(s3, bucket_name, key, body):
    obj = s3.get_object(Bucket=bucket_name, Key=key)
    s3.put_object(Bucket=bucket_name, Key=key, Body=body, Metadata=obj["Metadata"],
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=obj["SSEKMSKeyId"])
    return obj["Metadata"]


@pytest.mark.parametrize("method", ["zstd", "none"])
def test_fetch_of_a_corrupted_object_fails_and_writes_nothing(s3_client, bucket, kms_key, tmp_path, method):  # noqa: F811
    params = make_params(bucket, kms_key, compression=method)
    data = wal_bytes(SMALL)
    key = walarchive.push(s3_client, params, write(tmp_path, SEG, data))["key"]
    damaged = bytearray(data)
    damaged[100] ^= 0xFF
    comp = walarchive.new_compressor(method)
    metadata = _replace_body(s3_client, bucket, key, comp.compress(bytes(damaged)) + comp.flush())
    restore = tmp_path / "pg_wal"
    restore.mkdir()
    dest = restore / "RECOVERYXLOG"
    with pytest.raises(WalChecksumError) as info:
        walarchive.fetch(s3_client, params, SEG, str(dest))
    assert key in info.value.msg and metadata["sha256"] in info.value.msg and "damaged" in info.value.msg
    assert not dest.exists() and not leftovers(restore)


def test_fetch_of_garbage_in_a_compressed_object(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    params = make_params(bucket, kms_key)
    key = walarchive.push(s3_client, params, write(tmp_path, SEG, wal_bytes(SMALL)))["key"]
    _replace_body(s3_client, bucket, key, b"not zstd at all" * 100)
    with pytest.raises(WalChecksumError, match=key):
        walarchive.fetch(s3_client, params, SEG, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_fetch_refuses_an_object_without_checksums(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    key = "%s/wal/00000001/%s" % (PREFIX, SEG)
    s3_client.put_object(Bucket=bucket, Key=key, Body=wal_bytes(SMALL))
    with pytest.raises(WalChecksumError, match="no sha256/raw-sha256 metadata"):
        walarchive.fetch(s3_client, make_params(bucket, kms_key), SEG, str(tmp_path / "out"))
    # but a push of the same content recognises it by content
    pushed = walarchive.push(s3_client, make_params(bucket, kms_key), write(tmp_path, SEG, wal_bytes(SMALL)))
    assert pushed["skipped_existing"] is True and pushed["key"] == key


def test_history_partial_and_backup_files(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    params = make_params(bucket, kms_key)
    history = b"1\t0/3000000\tno recovery target specified\n"
    pushed = walarchive.push(s3_client, params, write(tmp_path, "00000002.history", history))
    assert pushed["key"] == PREFIX + "/wal/00000002.history" and pushed["compression"] == "none"
    obj = s3_client.get_object(Bucket=bucket, Key=pushed["key"])
    assert obj["Body"].read() == history and obj["SSEKMSKeyId"] == kms_key["arn"]
    assert obj["Metadata"]["sha256"] == obj["Metadata"]["raw-sha256"] == sha(history)
    dest = tmp_path / "pg_wal"
    dest.mkdir()
    walarchive.fetch(s3_client, params, "00000002.history", str(dest / "RECOVERYHISTORY"))
    assert (dest / "RECOVERYHISTORY").read_bytes() == history

    label = b"START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n"
    pushed = walarchive.push(s3_client, params, write(tmp_path, SEG + ".00000028.backup", label))
    assert pushed["key"] == "%s/wal/00000001/%s.00000028.backup" % (PREFIX, SEG)
    partial = wal_bytes(SMALL, b"partial")
    pushed = walarchive.push(s3_client, params, write(tmp_path, SEG + ".partial", partial))
    assert pushed["key"] == "%s/wal/00000001/%s.partial.zst" % (PREFIX, SEG)
    walarchive.fetch(s3_client, params, SEG + ".partial", str(dest / "p"))
    assert (dest / "p").read_bytes() == partial


def test_streamed_upload_of_big_files(s3_client, bucket, kms_key, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(walarchive, "SINGLE_PUT_MAX", 0)
    params = make_params(bucket, kms_key)
    data = wal_bytes(SMALL)
    pushed = walarchive.push(s3_client, params, write(tmp_path, SEG, data))
    head = s3_client.head_object(Bucket=bucket, Key=pushed["key"])
    assert head["Metadata"]["raw-sha256"] == sha(data) and head["Metadata"]["sha256"] == pushed["stored_sha256"]
    assert head["SSEKMSKeyId"] == kms_key["arn"]
    walarchive.fetch(s3_client, params, SEG, str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == data


def test_missing_bucket_is_a_clear_error(s3_client, kms_key, tmp_path):  # noqa: F811
    params = make_params("rtx-wal-no-such-bucket", kms_key)
    with pytest.raises(walarchive.RtxDrError, match="NoSuchBucket"):
        walarchive.push(s3_client, params, write(tmp_path, SEG, wal_bytes(SMALL)))


class _OldBotocore:
    """The S3 client as Debian bookworm's python3-botocore (1.29) builds it: PutObject has no IfNoneMatch."""

    class _Operation:
        def __init__(self, members):
            self.input_shape = type("Shape", (), {"members": members})()

    def __init__(self, client):
        self._client = client
        shape = client.meta.service_model.operation_model("PutObject").input_shape
        members = dict((k, v) for k, v in shape.members.items() if k != "IfNoneMatch")
        model = type("Model", (), {"operation_model": lambda _self, _name: _OldBotocore._Operation(members)})()
        self.meta = type("Meta", (), {"service_model": model})()

    def put_object(self, **kwargs):
        assert "IfNoneMatch" not in kwargs, "botocore 1.29 refuses IfNoneMatch before sending anything"
        return self._client.put_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_an_old_botocore_without_conditional_put_still_never_overwrites(s3_client, bucket, kms_key, tmp_path):  # noqa: F811
    old = _OldBotocore(s3_client)
    assert walarchive.client_knows_if_none_match(s3_client) is True
    assert walarchive.client_knows_if_none_match(old) is False
    params = make_params(bucket, kms_key)
    name = "000000010000000000000021"
    first = walarchive.push(old, params, write(tmp_path, name, wal_bytes(SMALL, b"first")))
    assert first["skipped_existing"] is False
    assert walarchive.push(old, params, write(tmp_path, name, wal_bytes(SMALL, b"first")))["skipped_existing"] is True
    with pytest.raises(walarchive.WalConflictError):
        walarchive.push(old, params, write(tmp_path, name, wal_bytes(SMALL, b"other")))

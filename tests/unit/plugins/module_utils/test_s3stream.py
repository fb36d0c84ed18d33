# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import hashlib
import os
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, kms_client, kms_key, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import s3stream  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024


def feed(uploader, data, chunk=1000003):
    for pos in range(0, len(data), chunk):
        uploader.write(data[pos:pos + chunk])


def test_sse_args():
    assert s3stream.sse_args("none") == {}
    assert s3stream.sse_args("aws:kms", "alias/x") == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/x"}
    with pytest.raises(InvalidValueError) as info:
        s3stream.sse_args("aws:kms", None)
    assert "kms_key_id" in str(info.value) and "encryption: none" in str(info.value)
    with pytest.raises(InvalidValueError):
        s3stream.StreamUploader(None, "b", "k", part_size=MIB)


@pytest.mark.parametrize("size", [0, 1000, 5 * MIB, 12 * MIB + 123])
def test_upload_content_sha256_metadata_and_sse(s3_client, bucket, kms_key, size):
    data = os.urandom(size)
    sse = s3stream.sse_args("aws:kms", kms_key["alias"])
    parts = []
    up = s3stream.StreamUploader(s3_client, bucket, "a/obj", extra_args=dict(sse, ContentType="application/x-tar"),
                                 metadata={"backup-id": "X"}, part_size=5 * MIB,
                                 on_part=lambda n, s: parts.append((n, s)))
    with up:
        feed(up, data)
        facts = up.close()
    digest = hashlib.sha256(data).hexdigest()
    assert facts["sha256"] == digest and facts["size"] == size
    assert facts["parts"] == (0 if size < 5 * MIB else (size + 5 * MIB - 1) // (5 * MIB))
    assert [s for _n, s in parts][:-1] == [5 * MIB] * (len(parts) - 1) if parts else True
    head = s3_client.head_object(Bucket=bucket, Key="a/obj")
    tags = s3_client.get_object_tagging(Bucket=bucket, Key="a/obj")["TagSet"]
    if facts["parts"]:  # a multipart upload: the sha256 is a tag (its metadata was fixed when it started)
        assert head["Metadata"] == {"backup-id": "X"} and tags == [{"Key": "sha256", "Value": digest}]
    else:  # one PUT: the sha256 is metadata
        assert head["Metadata"] == {"sha256": digest, "backup-id": "X"} and tags == []
    assert s3stream.stored_sha256(s3_client, bucket, "a/obj", head) == digest
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] in (kms_key["alias"], kms_key["key_id"], kms_key["arn"])
    assert head["ContentLength"] == size
    assert head["ContentType"] == "application/x-tar"
    assert s3stream.sha256_of_object(s3_client, bucket, "a/obj") == (digest, size)
    assert not s3stream.list_multipart_uploads(s3_client, bucket, "a/")


def test_a_multipart_upload_leaves_one_version_in_a_versioned_bucket(s3_client, kms_key):
    """The backup bucket is versioned: storing the sha256 must not copy the object onto itself (that kept every
    byte twice, the first upload as a noncurrent version for 30 days or for the Object Lock retention)."""
    name = "rtx-versioned-%s" % os.urandom(4).hex()
    s3_client.create_bucket(Bucket=name)
    s3_client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    data = os.urandom(11 * MIB)
    up = s3stream.StreamUploader(s3_client, name, "big", extra_args=s3stream.sse_args("aws:kms", kms_key["alias"]),
                                 metadata={"backup-id": "B"}, part_size=5 * MIB)
    feed(up, data)
    facts = up.close()
    assert facts["parts"] == 3
    versions = s3_client.list_object_versions(Bucket=name, Prefix="big")
    assert len(versions.get("Versions") or []) == 1, versions.get("Versions")
    assert not versions.get("DeleteMarkers")
    head = s3_client.head_object(Bucket=name, Key="big")
    assert head["Metadata"] == {"backup-id": "B"} and head["ServerSideEncryption"] == "aws:kms"
    assert s3stream.stored_sha256(s3_client, name, "big", head) == facts["sha256"] == hashlib.sha256(data).hexdigest()
    assert s3_client.get_object(Bucket=name, Key="big")["Body"].read() == data


def test_stored_sha256_of_an_object_without_one_and_a_read_error(s3_client, bucket):
    s3_client.put_object(Bucket=bucket, Key="plain", Body=b"x")
    head = s3_client.head_object(Bucket=bucket, Key="plain")
    assert s3stream.stored_sha256(s3_client, bucket, "plain", head) is None
    with pytest.raises(RtxDrError) as info:
        s3stream.stored_sha256(s3_client, bucket, "gone", {"Metadata": {}})
    assert "reading the tags of s3://%s/gone" % bucket in info.value.msg and "NoSuchKey" in info.value.msg


def test_exception_mid_stream_aborts(s3_client, bucket):
    with pytest.raises(RuntimeError):
        with s3stream.StreamUploader(s3_client, bucket, "x/obj", part_size=5 * MIB) as up:
            feed(up, os.urandom(12 * MIB))
            assert up.upload_id is not None
            assert s3stream.list_multipart_uploads(s3_client, bucket, "x/")
            raise RuntimeError("database went away")
    assert s3stream.list_multipart_uploads(s3_client, bucket, "x/") == []
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket, Prefix="x/")


def test_failing_part_upload_is_reported_and_aborted(s3_client, bucket, monkeypatch):
    real = s3_client.upload_part
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == 2:
            raise ValueError("network down")
        return real(**kwargs)

    monkeypatch.setattr(s3_client, "upload_part", flaky)
    up = s3stream.StreamUploader(s3_client, bucket, "y/obj", part_size=5 * MIB)
    with pytest.raises(RtxDrError) as info:
        with up:
            feed(up, os.urandom(16 * MIB))
            up.close()
    assert "part 2" in str(info.value)
    assert s3stream.list_multipart_uploads(s3_client, bucket, "y/") == []


def test_missing_bucket_is_an_rtxdr_error(s3_client):
    up = s3stream.StreamUploader(s3_client, "no-such-bucket-rtx", "k")
    up.write(b"x")
    with pytest.raises(RtxDrError) as info:
        up.close()
    assert "NoSuchBucket" in str(info.value)


def test_memory_bounded_200mb(s3_client, bucket):
    block = os.urandom(MIB)
    total = 200 * MIB
    tracemalloc.start()
    try:
        up = s3stream.StreamUploader(s3_client, bucket, "mem/obj", part_size=16 * MIB)
        for _block_number in range(total // MIB):
            up.write(block)
        facts = up.close()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert facts["size"] == total
    assert facts["sha256"] == hashlib.sha256(block * 200).hexdigest()
    assert peak < 100 * MIB, "peak %d MiB" % (peak // MIB)
    head = s3_client.head_object(Bucket=bucket, Key="mem/obj")
    assert head["ContentLength"] == total and s3stream.stored_sha256(s3_client, bucket, "mem/obj", head) == facts["sha256"]
    s3_client.delete_object(Bucket=bucket, Key="mem/obj")


def test_list_and_abort_uploads(s3_client, bucket):
    ids = [s3_client.create_multipart_upload(Bucket=bucket, Key="p/%d" % i)["UploadId"] for i in range(3)]
    uploads = s3stream.list_multipart_uploads(s3_client, bucket, "p/")
    assert sorted(u["upload_id"] for u in uploads) == sorted(ids)
    assert all(u["initiated"] is not None for u in uploads)
    for u in uploads:
        s3stream.abort_upload(s3_client, bucket, u["key"], u["upload_id"])
    s3stream.abort_upload(s3_client, bucket, uploads[0]["key"], uploads[0]["upload_id"])  # already gone: fine
    assert s3stream.list_multipart_uploads(s3_client, bucket, "p/") == []


class SlowClient:
    """Accepts parts slower than they are written, so that write() has to wait for the part in flight."""

    def __init__(self, delay=0.05):
        self.delay = delay
        self.sizes = []
        self.digest = hashlib.sha256()

    def create_multipart_upload(self, **kwargs):
        return {"UploadId": "u"}

    def upload_part(self, **kwargs):
        time.sleep(self.delay)
        self.sizes.append(len(kwargs["Body"]))
        self.digest.update(kwargs["Body"])
        return {"ETag": "e"}

    def complete_multipart_upload(self, **kwargs):
        return {}

    def put_object_tagging(self, **kwargs):
        return {}


@pytest.mark.parametrize("piece", [1000003, 7 * MIB + 5])
def test_at_most_two_parts_in_memory_with_a_slow_upload(piece):
    client = SlowClient()
    part = 5 * MIB
    data = os.urandom(MIB)
    total = 0
    tracemalloc.start()
    try:
        up = s3stream.StreamUploader(client, "b", "k", part_size=part)
        while total < 40 * MIB:
            block = (data * (piece // MIB + 1))[:piece]
            tracemalloc.reset_peak()
            up.write(block)
            _current, peak = tracemalloc.get_traced_memory()
            # The buffer (one part, reused) + the part in flight or its copy, + the block written.
            assert peak < 2 * part + 2 * len(block) + MIB, "peak %.1f MiB" % (peak / MIB)
            total += len(block)
        facts = up.close()
    finally:
        tracemalloc.stop()
    assert facts["size"] == total and client.sizes[:-1] == [part] * (len(client.sizes) - 1)
    assert sum(client.sizes) == total and facts["sha256"] == client.digest.hexdigest()


class RecordingClient(SlowClient):
    """Keeps a copy of every part and the identity and type of the body botocore was given."""

    def __init__(self):
        super().__init__(delay=0)
        self.bodies = []
        self.copies = []

    def upload_part(self, **kwargs):
        self.bodies.append((id(kwargs["Body"]), type(kwargs["Body"])))
        self.copies.append(bytes(kwargs["Body"]))
        return super().upload_part(**kwargs)


def test_full_parts_are_sent_from_two_alternating_buffers_without_a_copy():
    client = RecordingClient()
    part = 5 * MIB
    data = os.urandom(4 * part + 12345)
    up = s3stream.StreamUploader(client, "b", "k", part_size=part)
    feed(up, data)
    facts = up.close()
    assert b"".join(client.copies) == data and facts["sha256"] == hashlib.sha256(data).hexdigest()
    full, last = client.bodies[:-1], client.bodies[-1]
    # Every full part is a bytearray (botocore hashes and sends it in place); two buffers take turns.
    assert [kind for _id, kind in full] == [bytearray] * 4
    assert len({ident for ident, _kind in full}) == 2
    assert full[0][0] == full[2][0] and full[1][0] == full[3][0]
    assert last[1] is bytes and len(client.copies[-1]) == 12345


def test_plain_http_parts_are_signed_without_a_second_checksum(s3_client, bucket):
    # Over http:// botocore signs the SHA256 of each body: no CRC32 pass on top (aws.boto3_client).
    seen = []

    def record(request, **kwargs):  # pylint: disable=unused-argument
        seen.append({k.lower(): v for k, v in request.headers.items()})

    s3_client.meta.events.register("before-send.s3.UploadPart", record)
    data = os.urandom(11 * MIB)
    up = s3stream.StreamUploader(s3_client, bucket, "http/obj", part_size=5 * MIB)
    feed(up, data)
    facts = up.close()
    assert len(seen) == 3
    for headers in seen:
        assert not any(name.startswith("x-amz-checksum-") for name in headers), headers
        sha = headers["x-amz-content-sha256"]
        sha = sha.decode() if isinstance(sha, bytes) else sha
        assert len(sha) == 64 and "UNSIGNED" not in sha
    assert s3stream.sha256_of_object(s3_client, bucket, "http/obj") == (facts["sha256"], len(data))

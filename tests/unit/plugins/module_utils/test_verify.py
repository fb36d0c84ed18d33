# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Unit tests of module_utils/verify.py: pure helpers and small synthetic backups in a moto server."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, kms_client, kms_key, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import verify  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.compress import new_compressor  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024
PREFIX = "pgbackup/synth"
BACKUP_ID = "20261127T031500.123Z-F"
SEG_A = "000000010000000000000002"
SEG_B = "000000010000000000000003"
LABEL = ("START WAL LOCATION: 0/200028 (file %s)\nCHECKPOINT LOCATION: 0/200060\nBACKUP METHOD: streamed\n"
         "BACKUP FROM: primary\nSTART TIME: 2026-11-27 03:15:00 UTC\nLABEL: synth\nSTART TIMELINE: 1\n" % SEG_A).encode()


# --------------------------------------------------------------------------
# Synthetic backups
# --------------------------------------------------------------------------


def make_manifest(files, corrupt=False):
    """A backup_manifest with a valid (or, with ``corrupt``, wrong) Manifest-Checksum."""
    entries = ",\n".join(
        '{ "Path": "%s", "Size": %d, "Last-Modified": "2026-11-27 03:15:00 GMT" }' % (p, s) for p, s in files.items())
    body = ('{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n%s ],\n"WAL-Ranges": [\n'
            '{ "Timeline": 1, "Start-LSN": "0/200028", "End-LSN": "0/300100" }\n],\n' % entries).encode()
    digest = hashlib.sha256(body + (b" " if corrupt else b"")).hexdigest()
    return body + ('"Manifest-Checksum": "%s"}\n' % digest).encode()


def make_tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compress(method, data):
    comp = new_compressor(method)
    return comp.compress(data) + comp.flush()


def put(s3, bucket_name, key, body, sse, sha=None):
    s3.put_object(Bucket=bucket_name, Key=key, Body=body,
                  Metadata={"sha256": sha or hashlib.sha256(body).hexdigest(), "backup-id": BACKUP_ID}, **sse)
    return {"key": key, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def synth_physical(s3, bucket_name, kms_arn=None, data_files=None, manifest_files=None, tar_extra=None,
                   wal=(SEG_A, SEG_B), wal_included=True, corrupt_manifest=False, method="gzip", record_overrides=None):
    """Write a small physical backup like pg_basebackup's (tar with 1 MiB WAL segments) and its record."""
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_arn} if kms_arn else {}
    data_files = {"backup_label": LABEL, "base/1/1259": b"x" * 3000, "global/pg_control": b"c" * 8192} \
        if data_files is None else data_files
    manifest_files = {p: len(d) for p, d in data_files.items()} if manifest_files is None else manifest_files
    manifest = make_manifest(manifest_files, corrupt=corrupt_manifest)
    members = dict(data_files)
    if wal_included:
        members.update({"pg_wal/%s" % seg: b"\0" * MIB for seg in wal})
    members.update(tar_extra or {})
    members["backup_manifest"] = manifest
    base_prefix = catalog.data_prefix(PREFIX, "physical", BACKUP_ID)
    base = put(s3, bucket_name, base_prefix + "base.tar.gz", compress(method, make_tar(members)), sse)
    base["role"] = "base"
    mobj = put(s3, bucket_name, base_prefix + "backup_manifest", manifest, sse)
    mobj["role"] = "manifest"
    record = {
        "format_version": 1, "backup_id": BACKUP_ID, "kind": "physical", "status": "complete",
        "timeline": 1, "start_wal": SEG_A, "stop_wal": SEG_B, "wal_included": wal_included,
        "compression": {"method": method, "level": 6, "workers": None},
        "encryption": "aws:kms" if kms_arn else "none", "kms_key_id": kms_arn, "kms_key_arn": kms_arn,
        "objects": [base, mobj],
        "manifest": {"files": len(manifest_files), "total_size": sum(manifest_files.values()),
                     "checksum_algorithm": None, "manifest_sha256": json.loads(manifest)["Manifest-Checksum"],
                     "wal_ranges": []},
    }
    record.update(record_overrides or {})
    catalog.write_record(s3, bucket_name, PREFIX, record, sse)
    return record


def run_verify(s3, bucket_name, kms=None, **params):
    options = {"bucket": bucket_name, "prefix": PREFIX}
    options.update(params)
    return verify.verify_backups(options, s3, kms)


def checks_of(result):
    (entry,) = result["backups"]
    return {f["check"]: f for f in entry["findings"]}, entry


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def test_resolve_prefix():
    assert verify.resolve_prefix({"prefix": "/a/b/"}) == "a/b"
    assert verify.resolve_prefix({"prefix": None, "cluster_name": "main"}) == "pgbackup/main"
    with pytest.raises(InvalidValueError) as info:
        verify.resolve_prefix({})
    assert "cluster_name" in info.value.hint


def test_check_options_defaults_and_errors():
    base = {"bucket": "b", "prefix": "p"}
    assert verify.check_options(base) == ("latest", None, "physical")
    assert verify.check_options(dict(base, select="all")) == ("all", None, "any")
    assert verify.check_options(dict(base, backup_id=BACKUP_ID)) == ("id", BACKUP_ID, "any")
    assert verify.check_options(dict(base, kind="logical")) == ("latest", None, "logical")
    with pytest.raises(InvalidValueError, match="restore feature"):
        verify.check_options(dict(base, deep=True))
    with pytest.raises(InvalidValueError, match="logical backup but kind=physical"):
        verify.check_options(dict(base, backup_id="20261127T031500.123Z-L", kind="physical"))


def test_manifest_files():
    data = make_manifest({"base/1/1": 10, "PG_VERSION": 3})
    assert verify.manifest_files(data) == {"base/1/1": 10, "PG_VERSION": 3}
    encoded = json.dumps({"Files": [{"Encoded-Path": "62617365", "Size": 1}]}).encode()
    assert verify.manifest_files(encoded) == {"base": 1}
    with pytest.raises(InvalidValueError, match="not valid JSON"):
        verify.manifest_files(b"{")
    with pytest.raises(InvalidValueError, match="no Files"):
        verify.manifest_files(b"{}")


def test_wal_segments():
    assert verify.wal_segments(SEG_A, SEG_A) == [SEG_A]
    # across a log id boundary (256 segments of 16 MiB per log id)
    assert verify.wal_segments("0000000100000000000000FE", "000000010000000100000001") == [
        "0000000100000000000000FE", "0000000100000000000000FF",
        "000000010000000100000000", "000000010000000100000001"]
    # 1 MiB segments: 4096 per log id
    assert verify.wal_segments("000000010000000000000FFF", "000000010000000100000000", MIB) == [
        "000000010000000000000FFF", "000000010000000100000000"]
    # timeline switch inside the range: later names on the stop timeline
    assert verify.wal_segments(SEG_A, "000000020000000000000003") == [SEG_A, "000000020000000000000003"]
    with pytest.raises(InvalidValueError, match="before"):
        verify.wal_segments(SEG_B, SEG_A)


def test_compare_tar_to_manifest():
    expected = {"a": 1, "b": 2, "c": 3}
    tar = {"a": 1, "b": 5, "extra": 1, "pg_wal/000000010000000000000001": 16, "backup_manifest": 9,
           "standby.signal": 0}
    assert verify.compare_tar_to_manifest(tar, expected) == (["c"], [("b", 2, 5)], ["extra"])


def test_check_dump_header():
    assert verify.check_dump_header(b"PGDMP\x01\x0e\x00\x04\x08\x01rest") is None
    assert "PGDMP" in verify.check_dump_header(b"-- PostgreSQL database dump")
    assert "too short" in verify.check_dump_header(b"PG")
    assert "not in custom format" in verify.check_dump_header(b"PGDMP\x01\x0e\x00\x04\x08\x03")


def test_failure_message_names_backup_object_and_problem():
    results = [
        {"backup_id": "A", "ok": True, "findings": []},
        {"backup_id": "B", "ok": False, "findings": [verify.finding("k%d" % i, "size", "bad %d" % i) for i in range(7)]},
    ]
    msg = verify.failure_message(results, "bkt")
    assert msg.startswith("Backup verification failed for 1 of 2 backup(s): backup B: s3://bkt/k0: size: bad 0")
    assert "k4" in msg and "k5" not in msg and "and 2 more finding(s)" in msg


def test_read_only_client_refuses_writes():
    class Fake:
        def put_object(self, **kwargs):  # pragma: no cover - must not be reachable
            raise AssertionError("written")

        def get_object(self, **kwargs):
            return kwargs

        def get_paginator(self, name):
            return name

    client = verify.read_only_s3(Fake())
    assert client.get_object(Key="k") == {"Key": "k"}
    assert client.get_paginator("list_objects_v2") == "list_objects_v2"
    for name in ("put_object", "delete_object", "copy_object", "put_object_tagging", "delete_objects"):
        with pytest.raises(AttributeError, match="read-only"):
            getattr(client, name)
    with pytest.raises(AttributeError):
        client.get_paginator("list_object_versions")
    assert verify.read_only_s3(client) is client


@pytest.mark.parametrize("method", ["gzip", "zstd", "lz4", "none"])
def test_tar_contents_streams_in_small_chunks(method):
    tar = make_tar({"backup_label": LABEL, "base/1/1": b"a" * 1000, "backup_manifest": b"{}"})
    data = compress(method, tar)
    contents = verify.TarContents(method)
    for pos in range(0, len(data), 7):
        contents.feed(data[pos:pos + 7])
    facts = contents.close()
    assert facts["error"] is None
    assert facts["files"] == {"backup_label": len(LABEL), "base/1/1": 1000, "backup_manifest": 2}
    assert facts["captured"]["backup_label"] == LABEL

    truncated = verify.TarContents("none")
    truncated.feed(tar[:1500])
    assert "incomplete" in truncated.close()["error"]
    garbage = verify.TarContents(method)
    garbage.feed(b"\x01" * 4096)
    assert garbage.close()["error"]


# --------------------------------------------------------------------------
# Synthetic backups in moto
# --------------------------------------------------------------------------


def test_synthetic_backup_verifies(s3_client, kms_client, bucket, kms_key):
    synth_physical(s3_client, bucket, kms_key["arn"])
    result = run_verify(s3_client, bucket, kms_client, expected_kms_key_id=kms_key["alias"])
    findings, entry = checks_of(result)
    assert findings == {} and entry["ok"] and result["verified"] == 1
    assert entry["wal"] == {"needed": 2, "found": 2, "where": "pg_wal/ of the tar", "start_wal": SEG_A,
                            "stop_wal": SEG_B}


def test_contents_differ_from_manifest(s3_client, bucket):
    files = {"backup_label": LABEL, "base/1/1259": b"x" * 3000, "global/pg_control": b"c" * 8192}
    manifest = {"backup_label": len(LABEL), "base/1/1259": 2999, "global/pg_control": 8192, "base/1/2600": 10}
    record = synth_physical(s3_client, bucket, data_files=files, manifest_files=manifest,
                            tar_extra={"base/1/9999": b"?"}, wal=(SEG_A,))
    result = run_verify(s3_client, bucket, require_encryption=False)
    (entry,) = result["backups"]
    messages = [f["message"] for f in entry["findings"] if f["check"] == "contents"]
    base_key = record["objects"][0]["key"]
    assert all(f["object"] == base_key for f in entry["findings"])
    assert any("missing from the tar: base/1/2600" in m for m in messages)
    assert any("another size" in m and "base/1/1259 (2999 != 3000)" in m for m in messages)
    assert any("not in the backup_manifest object: base/1/9999" in m for m in messages)
    (wal,) = [f for f in entry["findings"] if f["check"] == "wal"]
    assert SEG_B in wal["message"] and "pg_wal/ of the tar" in wal["message"]
    assert result["failed_count"] == 1


def test_wal_from_archive(s3_client, bucket):
    synth_physical(s3_client, bucket, wal_included=False)
    s3_client.put_object(Bucket=bucket, Key="%s/wal/00000001/%s.zst" % (PREFIX, SEG_A), Body=b"w")
    findings, entry = checks_of(run_verify(s3_client, bucket, require_encryption=False))
    assert set(findings) == {"wal"} and findings["wal"]["object"] is None
    assert SEG_B in findings["wal"]["message"] and "WAL archive" in findings["wal"]["message"]
    assert entry["wal"]["found"] == 1
    s3_client.put_object(Bucket=bucket, Key="%s/wal/%s" % (PREFIX, SEG_B), Body=b"w")
    findings, entry = checks_of(run_verify(s3_client, bucket, require_encryption=False))
    assert findings == {} and entry["wal"]["found"] == 2


def test_damaged_manifest_and_summary(s3_client, bucket):
    synth_physical(s3_client, bucket, corrupt_manifest=True,
                   record_overrides={"manifest": {"files": 9, "total_size": 1, "manifest_sha256": "0" * 64}})
    findings, entry = checks_of(run_verify(s3_client, bucket, require_encryption=False))
    manifest = [f["message"] for f in entry["findings"] if f["check"] == "manifest"]
    assert any("Manifest-Checksum" in m and "damaged" in m for m in manifest)
    assert any("lists 3 files but the record says 9" in m for m in manifest)
    assert any("differs from the record's manifest_sha256" in m for m in manifest)
    assert any("totals" in m for m in manifest)
    assert "contents" not in findings  # the tar matches the (damaged) manifest file list


def test_record_level_findings(s3_client, bucket):
    synth_physical(s3_client, bucket, record_overrides={"format_version": 7})
    findings, _entry = checks_of(run_verify(s3_client, bucket, require_encryption=False))
    assert list(findings) == ["record_format"] and "7" in findings["record_format"]["message"]

    synth_physical(s3_client, bucket)
    findings, _entry = checks_of(run_verify(s3_client, bucket))
    assert list(findings) == ["encryption"] and findings["encryption"]["object"] is None
    assert "require_encryption" in findings["encryption"]["message"]

    # a record edited after it was written: its sha256 metadata no longer matches
    key = catalog.catalog_key(PREFIX, BACKUP_ID)
    head = s3_client.head_object(Bucket=bucket, Key=key)
    record = json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    record["label"] = "edited"
    s3_client.put_object(Bucket=bucket, Key=key, Body=catalog.encode_record(record), Metadata=head["Metadata"])
    findings, _entry = checks_of(run_verify(s3_client, bucket, require_encryption=False))
    assert list(findings) == ["record_checksum"] and findings["record_checksum"]["object"] == key


def test_metadata_and_plain_objects(s3_client, kms_client, bucket, kms_key):
    record = synth_physical(s3_client, bucket, kms_key["arn"])
    base = record["objects"][0]
    body = s3_client.get_object(Bucket=bucket, Key=base["key"])["Body"].read()
    # same bytes, no SSE-KMS (a bucket without default encryption), wrong sha256 metadata
    s3_client.delete_bucket_encryption(Bucket=bucket)
    put(s3_client, bucket, base["key"], body, {}, sha="f" * 64)
    findings, entry = checks_of(run_verify(s3_client, bucket, kms_client))
    assert set(findings) == {"encryption", "metadata_sha256"}
    assert findings["encryption"]["object"] == base["key"] and "f" * 64 in findings["metadata_sha256"]["message"]
    assert "checksum" in entry["checks"]


def test_missing_bucket_and_unknown_expected_key(s3_client, kms_client, bucket):
    with pytest.raises(RtxDrError, match="does not exist"):
        run_verify(s3_client, "rtx-missing-bucket-x")
    with pytest.raises(RtxDrError, match="alias/nope.*expected_kms_key_id"):
        run_verify(s3_client, bucket, kms_client, expected_kms_key_id="alias/nope")
    with pytest.raises(RtxDrError, match="has no catalog record"):
        run_verify(s3_client, bucket, backup_id=BACKUP_ID)

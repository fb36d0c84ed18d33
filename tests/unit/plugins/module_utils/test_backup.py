# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""End-to-end tests of the backup pipeline against a real PostgreSQL and a moto server."""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, kms_client, kms_key, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import backup  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import compress  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import s3stream  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.compress import decompress_bytes  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.compress import new_compressor  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import execute  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_one  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import StreamUploader  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.tarstream import TarObserver  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.tarstream import TarStreamError  # noqa: E402 pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parents[4]
MIB = 1024 * 1024

LABEL = (b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
         b"CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n"
         b"START TIME: 2026-11-27 03:15:00 UTC\nLABEL: nightly\nSTART TIMELINE: 1\n")


def make_manifest(end_lsn="0/2000100"):
    body = ('{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n'
            '{ "Path": "backup_label", "Size": 225, "Last-Modified": "2026-11-27 03:15:00 GMT", '
            '"Checksum-Algorithm": "SHA256", "Checksum": "ab" },\n'
            '{ "Path": "global/pg_control", "Size": 8192, "Last-Modified": "2026-11-27 03:15:00 GMT", '
            '"Checksum-Algorithm": "SHA256", "Checksum": "cd" }\n],\n'
            '"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "%s" }\n],\n' % end_lsn).encode()
    return body + b'"Manifest-Checksum": "' + hashlib.sha256(body).hexdigest().encode() + b'"}\n'


# --------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------


def test_parse_label_manifest_positions():
    label = backup.parse_backup_label(LABEL)
    assert label["start_lsn"] == "0/2000028" and label["start_wal"] == "000000010000000000000002"
    assert label["timeline"] == 1 and label["label"] == "nightly"
    manifest = backup.parse_manifest(make_manifest())
    assert manifest["files"] == 2 and manifest["total_size"] == 8417
    assert manifest["checksum_algorithm"] == "SHA256"
    assert manifest["wal_ranges"] == [{"timeline": 1, "start_lsn": "0/2000028", "end_lsn": "0/2000100"}]
    assert backup.backup_positions(label, manifest) == {
        "timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/2000100",
        "start_wal": "000000010000000000000002", "stop_wal": "000000010000000000000002",
    }
    pos = backup.backup_positions(label, backup.parse_manifest(make_manifest("0/3000000")))
    assert pos["stop_wal"] == "000000010000000000000003"
    with pytest.raises(RtxDrError):
        backup.parse_manifest(make_manifest().replace(b"8192", b"8193"))
    with pytest.raises(RtxDrError):
        backup.parse_backup_label(b"garbage")


def test_commands_have_no_password():
    params = {"login_host": "db1", "login_port": 5433, "login_user": "backup", "login_password": "s3cret",
              "login_unix_socket": None, "ssl_mode": "require", "ca_cert": "/etc/ca.pem", "connect_timeout": 7}
    argv = backup.pg_basebackup_command("/x/pg_basebackup", params, "my label")
    assert argv[:9] == ["/x/pg_basebackup", "-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast",
                        "--manifest-checksums=CRC32C", "--label"]
    assert argv[9] == "my label" and "-v" in argv
    assert "--manifest-checksums=SHA256" in backup.pg_basebackup_command("/x/pg_basebackup", dict(
        params, manifest_checksums="SHA256"), "l")
    assert argv[-6:] == ["-h", "db1", "-p", "5433", "-U", "backup"]
    dump = backup.pg_dump_command("/x/pg_dump", params, "we'ird db", 6)
    assert dump[-2:] == ["-d", "dbname='we\\'ird db'"] and dump[1:4] == ["-Fc", "-Z", "6"]
    assert not any("s3cret" in a for a in argv + dump)
    env = backup.libpq_environment(params, base={"PATH": "/bin"})
    assert env["PGPASSWORD"] == "s3cret" and env["PGSSLMODE"] == "require"
    assert env["PGSSLROOTCERT"] == "/etc/ca.pem" and env["PGCONNECT_TIMEOUT"] == "7"
    sock = dict(params, login_host=None, login_unix_socket="/run/postgresql")
    assert backup.pg_basebackup_command("pb", sock, "l")[-6:-4] == ["-h", "/run/postgresql"]


def test_progress_samples():
    ticks = iter([0.0, 0.5, 1.2, 1.3, 3.5, 4.0])
    seen = []
    progress = backup.Progress(1, seen.append, clock=lambda: next(ticks))
    for done in (10, 20, 30, 40):
        progress.update(done)
    progress.update(50, force=True)
    assert progress.samples == [{"bytes": 20, "seconds": 1.2}, {"bytes": 40, "seconds": 3.5},
                                {"bytes": 50, "seconds": 4.0}]
    assert len(seen) == 3


# --------------------------------------------------------------------------
# The stream pipeline (fake child and S3 client)
# --------------------------------------------------------------------------


class FakeChild:
    """``ChildProcess`` stand-in: reads from bytes, counts the reads."""

    def __init__(self, data):
        self.stream = io.BytesIO(data)
        self.reads = 0

    def read(self, size=backup.CHUNK_SIZE):
        self.reads += 1
        return self.stream.read(size)


class FakeS3:
    """Records the calls of ``StreamUploader``; ``fail_part`` makes that part's upload fail."""

    def __init__(self, fail_part=None):
        self.fail_part = fail_part
        self.parts = {}
        self.calls = []

    def create_multipart_upload(self, **kwargs):
        self.calls.append("create")
        return {"UploadId": "u1"}

    def upload_part(self, **kwargs):
        if kwargs["PartNumber"] == self.fail_part:
            raise ConnectionResetError("network cut")
        self.parts[kwargs["PartNumber"]] = bytes(kwargs["Body"])
        return {"ETag": "e%d" % kwargs["PartNumber"]}

    def complete_multipart_upload(self, **kwargs):
        self.calls.append("complete")
        return {}

    def abort_multipart_upload(self, **kwargs):
        self.calls.append("abort")
        return {}

    def put_object_tagging(self, **kwargs):
        self.calls.append("tag")
        return {}

    def put_object(self, **kwargs):
        self.calls.append("put")
        self.parts[1] = bytes(kwargs["Body"])
        return {"ETag": "p"}

    def body(self):
        return b"".join(self.parts[n] for n in sorted(self.parts))


def _tar_stream(size):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("backup_label", LABEL), ("base/1/1", os.urandom(size // 2)),
                           ("base/1/2", b"pgbench row\n" * (size // 24)), ("backup_manifest", make_manifest())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("method", ["zstd", "gzip", "none"])
def test_stream_command_pipeline_output_in_order(method):
    data = _tar_stream(13 * MIB)
    s3 = FakeS3()
    uploader = StreamUploader(s3, "b", "k", part_size=5 * MIB)
    observer = TarObserver(keep_members=False)
    progress = backup.Progress(0)
    workers = 2 if method == "zstd" else None
    raw = backup.stream_command(FakeChild(data), uploader, new_compressor(method, None, workers), observer,
                                progress, chunk_size=100000, queue_chunks=2)
    facts = uploader.close()
    assert raw == len(data) and progress.samples[-1]["bytes"] == len(data)
    observer.close()
    assert observer.captured["backup_label"] == LABEL
    stored = s3.body()
    assert facts["sha256"] == hashlib.sha256(stored).hexdigest() and facts["size"] == len(stored)
    assert decompress_bytes(method, stored) == data
    assert s3.calls[-2:] == ["complete", "tag"] and facts["parts"] >= 2


def test_stream_command_compressor_error_propagates_and_stops_reading():
    class Broken:
        def __init__(self):
            self.calls = 0

        def compress(self, data):
            self.calls += 1
            if self.calls == 3:
                raise MemoryError("zstd: out of memory")
            return bytes(data)

        def flush(self):
            raise AssertionError("a failed stream is never flushed")

    s3 = FakeS3()
    child = FakeChild(os.urandom(64 * MIB))
    uploader = StreamUploader(s3, "b", "k", part_size=5 * MIB)
    with pytest.raises(MemoryError, match="out of memory"):
        backup.stream_command(child, uploader, Broken(), chunk_size=MIB, queue_chunks=2)
    # The reader stopped within a few chunks (the queue and the chunk in hand), not at the end of the input.
    assert child.reads <= 3 + 2 + 2
    uploader.abort()
    assert "complete" not in s3.calls and "put" not in s3.calls


def test_stream_command_upload_error_propagates_and_aborts():
    s3 = FakeS3(fail_part=3)
    child = FakeChild(os.urandom(64 * MIB))
    uploader = StreamUploader(s3, "b", "k", part_size=5 * MIB)
    with pytest.raises(RtxDrError, match="part 3"):
        with uploader:
            backup.stream_command(child, uploader, new_compressor("none"), chunk_size=MIB)
            uploader.close()
    assert child.reads < 64
    assert s3.calls[0] == "create" and s3.calls[-1] == "abort" and "complete" not in s3.calls


def test_stream_command_reader_error_stops_the_compressor_thread(monkeypatch):
    threads = []
    real = backup.CompressorThread

    def spy(*args, **kwargs):
        stage = real(*args, **kwargs)
        threads.append(stage._thread)  # pylint: disable=protected-access
        return stage

    monkeypatch.setattr(backup, "CompressorThread", spy)
    written = []
    uploader = type("Sink", (), {"write": lambda self, data: written.append(len(data))})()
    garbage = b"not a tar" * 100000
    with pytest.raises(TarStreamError):
        backup.stream_command(FakeChild(garbage), uploader, new_compressor("gzip"),
                              TarObserver(), chunk_size=65536)
    assert threads and not threads[0].is_alive()
    count = len(written)
    time.sleep(0.05)
    assert len(written) == count  # nothing is written once stream_command has raised


def test_child_pipe_holds_one_chunk():
    # One read takes a whole chunk: pg_basebackup and the reader no longer take turns every 64 KiB.
    child = backup.ChildProcess([sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'x' * 3000000)"],
                                dict(os.environ))
    try:
        if sys.platform.startswith("linux"):
            assert child.pipe_size == backup.CHUNK_SIZE
        data = b""
        while True:
            chunk = child.read()
            if not chunk:
                break
            data += chunk
        child.finish()
    finally:
        child.close()
    assert data == b"x" * 3000000


def test_grow_pipe_is_best_effort(tmp_path):
    # Not a pipe (or a closed one): nothing happens, no error.
    with open(tmp_path / "f", "wb") as handle:
        assert backup.grow_pipe(handle, backup.CHUNK_SIZE) is None
    assert backup.grow_pipe(handle, backup.CHUNK_SIZE) is None
    assert backup.grow_pipe(object(), backup.CHUNK_SIZE) is None


def test_unset_compression_workers_are_chosen_by_cores(monkeypatch):
    params = dict(kind="physical", bucket="b", compression="zstd", compression_level=None, compression_workers=None,
                  encryption="none", kms_key_id=None, part_size_mb=16, stale_upload_seconds=3600,
                  audit_schema="dr")
    monkeypatch.setattr(compress, "usable_cpus", lambda: 2)
    run = backup.BackupRun(dict(params), s3=None)
    run.validate()
    assert run.settings == {"method": "zstd", "level": 3, "workers": 2}
    run = backup.BackupRun(dict(params, compression_workers=0), s3=None)
    run.validate()
    assert run.settings["workers"] == 0
    run = backup.BackupRun(dict(params, compression_level=19), s3=None)
    run.validate()
    assert run.settings["workers"] == 0
    monkeypatch.setattr(compress, "usable_cpus", lambda: 1)
    run = backup.BackupRun(dict(params), s3=None)
    run.validate()
    assert run.settings["workers"] == 0
    run = backup.BackupRun(dict(params, compression="lz4"), s3=None)
    run.validate()
    assert run.settings == {"method": "lz4", "level": 0, "workers": None}


# --------------------------------------------------------------------------
# Against PostgreSQL and moto
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg(pg_cluster):
    """The primary, with a database 'appdb' holding a few MB and a marker row."""
    conn = connect(pg_cluster.params())
    try:
        if not query_one(conn, "SELECT 1 AS x FROM pg_database WHERE datname = 'appdb'"):
            execute(conn, "CREATE DATABASE appdb")
    finally:
        conn.close()
    conn = connect(pg_cluster.params(login_db="appdb"))
    try:
        execute(conn, "CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, note text)")
        execute(conn, "INSERT INTO orders SELECT g, md5(g::text) || repeat('x', 100) FROM generate_series(1, 30000) g"
                      " ON CONFLICT DO NOTHING")
        execute(conn, "CREATE TABLE IF NOT EXISTS marker (v text)")
        execute(conn, "INSERT INTO marker VALUES ('before-backup')")
    finally:
        conn.close()
    return pg_cluster


def make_run(pg_cluster, aws, bucket_name, s3, kms, **overrides):
    params = pg_cluster.params()
    params.update(aws)
    params.update(
        kind="physical", bucket=bucket_name, prefix=None, cluster_name=None, label=None, compression="zstd",
        compression_level=None, compression_workers=0, encryption="aws:kms", kms_key_id=None, part_size_mb=5,
        databases=None, audit_db="rtx", audit_schema="dr", pg_bin_dir=pg_cluster.bindir, stale_upload_seconds=3600,
        progress_interval=0, timeout=120,
    )
    params.update(overrides)
    return backup.BackupRun(params, s3=s3, kms=kms)


def bucket_keys(s3, bucket_name, prefix=""):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket_name, Prefix=prefix).get("Contents") or ())


def all_uploads(s3, bucket_name):
    return s3.list_multipart_uploads(Bucket=bucket_name).get("Uploads") or []


def test_physical_backup_restores_and_verifies(pg, aws_params, s3_client, kms_client, bucket, kms_key, tmp_path):
    run = make_run(pg, aws_params, bucket, s3_client, kms_client, kms_key_id=kms_key["alias"])
    server = run.preflight()
    assert server["server_version_num"] >= 100000
    assert run.reap() == []
    record = run.run()

    assert record["status"] == "complete" and record["error"] is None
    assert record["kind"] == "physical" and record["backup_id"].endswith("-F")
    assert record["cluster_name"] == "rtxtest_primary" and record["prefix"] == "pgbackup/rtxtest_primary"
    assert record["kms_key_id"] == kms_key["alias"] and record["kms_key_arn"] == kms_key["arn"]
    assert record["system_identifier"].isdigit()
    assert record["compression"] == {"method": "zstd", "level": 3, "workers": 0}
    assert record["timeline"] == 1 and record["wal_included"] is True
    assert record["start_wal"] <= record["stop_wal"]
    assert parse_lsn(record["stop_lsn"]) >= parse_lsn(record["start_lsn"])
    assert record["manifest"]["checksum_algorithm"] == "CRC32C" and record["manifest"]["files"] > 500
    assert record["size_raw_bytes"] > record["size_compressed_bytes"] > 0
    assert record["throughput_bytes_per_s"] > 0 and record["duration_seconds"] > 0
    assert "--checkpoint=fast" in record["command"] and pg.params()["login_password"] not in record["command"]

    # the catalog says the same
    stored = catalog.read_record(s3_client, bucket, record["prefix"], record["backup_id"])
    assert stored["status"] == "complete" and stored["objects"] == record["objects"]
    assert catalog.latest_complete(s3_client, bucket, record["prefix"])["backup_id"] == record["backup_id"]

    roles = {o["role"]: o for o in record["objects"]}
    base_key = "pgbackup/rtxtest_primary/base/%s/base.tar.zst" % record["backup_id"]
    assert roles["base"]["key"] == base_key
    for obj in record["objects"]:
        head = s3_client.head_object(Bucket=bucket, Key=obj["key"])
        body = s3_client.get_object(Bucket=bucket, Key=obj["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj["sha256"] == s3stream.stored_sha256(
            s3_client, bucket, obj["key"], head)
        assert len(body) == obj["size"]
        assert head["Metadata"]["backup-id"] == record["backup_id"]
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] in (kms_key["alias"], kms_key["key_id"], kms_key["arn"])
        if obj["role"] == "base":
            tar_bytes = decompress_bytes("zstd", body)
        else:
            manifest_bytes = body
    assert len(tar_bytes) == record["size_raw_bytes"]
    assert hashlib.sha256(manifest_bytes[:manifest_bytes.rstrip(b"\n").rfind(b"\n") + 1]).hexdigest() == \
        record["manifest"]["manifest_sha256"]

    datadir = tmp_path / "restore"
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        tar.extractall(datadir, filter="tar")
    assert (datadir / "backup_manifest").read_bytes() == manifest_bytes
    assert any((datadir / "pg_wal").iterdir())
    verify = subprocess.run([os.path.join(pg.bindir, "pg_verifybackup"), str(datadir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, timeout=60)
    assert verify.returncode == 0, verify.stdout.decode()
    assert b"successfully verified" in verify.stdout
    # the audit database does not exist in this cluster: the backup still succeeded
    audit = run.write_audit(record)
    assert audit["written"] is False and "rtx" in audit["reason"]


def test_physical_gzip_none_encryption(pg, aws_params, s3_client, kms_client):
    # a bucket without default encryption (in one with it, S3 encrypts what arrives without SSE headers)
    plain = "rtx-plain-%s" % uuid.uuid4().hex[:12]
    s3_client.create_bucket(Bucket=plain)
    run = make_run(pg, aws_params, plain, s3_client, None, encryption="none", compression="gzip",
                   compression_level=1, prefix="/custom/", cluster_name="c1")
    run.preflight()
    record = run.run()
    assert record["status"] == "complete" and record["encryption"] == "none" and record["kms_key_arn"] is None
    assert record["objects"][0]["key"] == "custom/base/%s/base.tar.gz" % record["backup_id"]
    for obj in record["objects"]:
        head = s3_client.head_object(Bucket=plain, Key=obj["key"])
        assert "ServerSideEncryption" not in head and "SSEKMSKeyId" not in head, obj["key"]


def test_physical_zstd_with_automatic_workers_verifies(pg, aws_params, s3_client, kms_client, bucket, tmp_path,
                                                       monkeypatch):
    monkeypatch.setattr(compress, "usable_cpus", lambda: 4)
    run = make_run(pg, aws_params, bucket, s3_client, None, encryption="none", compression_workers=None,
                   prefix="autoworkers")
    run.preflight()
    record = run.run()
    assert record["status"] == "complete" and record["compression"] == {"method": "zstd", "level": 3, "workers": 2}
    base = [o for o in record["objects"] if o["role"] == "base"][0]
    body = s3_client.get_object(Bucket=bucket, Key=base["key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == base["sha256"]
    tar_bytes = decompress_bytes("zstd", body)
    assert len(tar_bytes) == record["size_raw_bytes"]
    datadir = tmp_path / "restore"
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        tar.extractall(datadir, filter="tar")
    verify = subprocess.run([os.path.join(pg.bindir, "pg_verifybackup"), str(datadir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, timeout=60)
    assert verify.returncode == 0, verify.stdout.decode()


def _assert_failed_cleanly(s3, bucket_name, prefix):
    records = catalog.list_records(s3, bucket_name, prefix)
    assert len(records) == 1
    assert records[0]["status"] == "failed" and records[0]["error"]
    assert catalog.latest_complete(s3, bucket_name, prefix) is None
    assert all_uploads(s3, bucket_name) == []
    assert bucket_keys(s3, bucket_name, prefix + "/base/") == []
    return records[0]


def test_failure_mid_upload_leaves_no_complete_record(pg, aws_params, s3_client, kms_client, bucket, kms_key,
                                                      monkeypatch):
    real = s3_client.upload_part

    def upload_part(**kwargs):
        if kwargs["PartNumber"] >= 3:
            raise ConnectionResetError("network cut")
        return real(**kwargs)

    monkeypatch.setattr(s3_client, "upload_part", upload_part)
    run = make_run(pg, aws_params, bucket, s3_client, kms_client, kms_key_id=kms_key["alias"], compression="none")
    run.preflight()
    with pytest.raises(RtxDrError) as info:
        run.run()
    assert "part 3" in str(info.value)
    record = _assert_failed_cleanly(s3_client, bucket, run.prefix)
    assert "part 3" in record["error"]


def test_compressor_failure_mid_backup_leaves_no_complete_record(pg, aws_params, s3_client, kms_client, bucket,
                                                                 kms_key, monkeypatch):
    class Failing:
        def __init__(self, inner):
            self.inner = inner
            self.calls = 0

        def compress(self, data):
            self.calls += 1
            if self.calls == 12:
                raise RtxDrError("compressor thread broke at chunk 12")
            return self.inner.compress(data)

        def flush(self):
            return self.inner.flush()

    real = backup.new_compressor
    monkeypatch.setattr(backup, "new_compressor", lambda *args: Failing(real(*args)))
    run = make_run(pg, aws_params, bucket, s3_client, kms_client, kms_key_id=kms_key["alias"], compression="none")
    run.preflight()
    with pytest.raises(RtxDrError, match="chunk 12"):
        run.run()
    record = _assert_failed_cleanly(s3_client, bucket, run.prefix)
    assert "chunk 12" in record["error"]


def test_sigterm_mid_backup_aborts(pg, aws_params, s3_client, kms_client, bucket, kms_key, monkeypatch):
    real = s3_client.upload_part

    def upload_part(**kwargs):
        response = real(**kwargs)
        if kwargs["PartNumber"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return response

    monkeypatch.setattr(s3_client, "upload_part", upload_part)
    before = signal.getsignal(signal.SIGTERM)
    run = make_run(pg, aws_params, bucket, s3_client, kms_client, kms_key_id=kms_key["alias"], compression="none")
    run.preflight()
    with pytest.raises(backup.BackupInterrupted):
        run.run()
    assert signal.getsignal(signal.SIGTERM) == before
    record = _assert_failed_cleanly(s3_client, bucket, run.prefix)
    assert "signal 15" in record["error"]


def test_missing_kms_key_fails_before_any_write(pg, aws_params, s3_client, kms_client, bucket):
    run = make_run(pg, aws_params, bucket, s3_client, kms_client, kms_key_id="alias/does-not-exist")
    with pytest.raises(RtxDrError) as info:
        run.preflight()
    assert "alias/does-not-exist" in info.value.msg and "kms_key_id" in info.value.msg
    assert bucket_keys(s3_client, bucket) == []


def test_no_kms_key_refused_before_anything(pg, aws_params):
    run = backup.BackupRun(dict(pg.params(), bucket="whatever", encryption="aws:kms", kms_key_id=None), s3=None)
    with pytest.raises(InvalidValueError) as info:
        run.validate()
    assert "kms_key_id" in str(info.value) and "encryption: none" in str(info.value)


def test_missing_bucket_is_clear(pg, aws_params, s3_client, kms_client):
    run = make_run(pg, aws_params, "rtx-no-such-bucket", s3_client, kms_client, encryption="none")
    with pytest.raises(RtxDrError) as info:
        run.preflight()
    assert "rtx-no-such-bucket" in info.value.msg and "does not exist" in info.value.msg


def test_logical_backup_restorable_listing(pg, aws_params, s3_client, kms_client, bucket, kms_key, tmp_path):
    run = make_run(pg, aws_params, bucket, s3_client, kms_client, kind="logical", databases=["appdb"],
                   kms_key_id=kms_key["key_id"], compression="gzip", compression_level=4)
    run.preflight()
    record = run.run()
    assert record["status"] == "complete" and record["backup_id"].endswith("-L")
    assert record["compression"] == {"method": "gzip", "level": 4, "workers": None, "by": "pg_dump"}
    assert record["databases"] == ["appdb"] and record["start_lsn"] is None
    (obj,) = record["objects"]
    assert obj["role"] == "dump" and obj["database"] == "appdb"
    assert obj["key"] == "pgbackup/rtxtest_primary/logical/%s/appdb.dump" % record["backup_id"]
    body = s3_client.get_object(Bucket=bucket, Key=obj["key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == obj["sha256"]
    assert s3_client.head_object(Bucket=bucket, Key=obj["key"])["ServerSideEncryption"] == "aws:kms"
    dump = tmp_path / "appdb.dump"
    dump.write_bytes(body)
    listing = subprocess.run([os.path.join(pg.bindir, "pg_restore"), "--list", str(dump)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True, timeout=60)
    assert b"TABLE public orders" in listing.stdout and b"TABLE DATA public marker" in listing.stdout
    assert ["-Fc", "-Z", "4"] == record["command"][0][1:4]


def test_unknown_database_refused(pg, aws_params, s3_client, bucket):
    run = make_run(pg, aws_params, bucket, s3_client, None, kind="logical", databases=["nope"], encryption="none")
    with pytest.raises(InvalidValueError) as info:
        run.preflight()
    assert "nope" in info.value.msg


def test_reap(pg, aws_params, s3_client, bucket, kms_key, monkeypatch):
    # moto reports one fixed 'Initiated' time for every upload: use the times this test chose.
    initiated = {}
    real_list = backup.list_multipart_uploads

    def list_uploads(client, bucket_name, prefix):
        uploads = real_list(client, bucket_name, prefix)
        for upload in uploads:
            upload["initiated"] = initiated[upload["upload_id"]]
        return uploads

    monkeypatch.setattr(backup, "list_multipart_uploads", list_uploads)
    run = make_run(pg, aws_params, bucket, s3_client, None, encryption="none", prefix="r")
    run.preflight()
    now = catalog.utc_now()
    old = now - datetime.timedelta(hours=3)
    ids = {name: catalog.new_backup_id("physical", now - datetime.timedelta(seconds=n))
           for n, name in enumerate(["failed", "running", "norecord", "oldrunning"])}
    for name, status, started in (("failed", "failed", now), ("running", "running", now),
                                  ("oldrunning", "running", old)):
        catalog.write_record(s3_client, bucket, "r", {"backup_id": ids[name], "status": status,
                                                      "started_at": catalog.isoformat(started)})
    for name, bid in ids.items():
        upload_id = s3_client.create_multipart_upload(Bucket=bucket, Key="r/base/%s/base.tar.zst" % bid)["UploadId"]
        initiated[upload_id] = now
    upload_id = s3_client.create_multipart_upload(Bucket=bucket, Key="r/logical/junk/x.dump")["UploadId"]
    initiated[upload_id] = old
    reaped = run.reap()
    assert sorted(r["backup_id"] or "-" for r in reaped) == sorted(
        ["-", ids["failed"], ids["norecord"], ids["oldrunning"]])
    left = all_uploads(s3_client, bucket)
    assert [u["Key"] for u in left] == ["r/base/%s/base.tar.zst" % ids["running"]]
    assert catalog.read_record(s3_client, bucket, "r", ids["oldrunning"])["status"] == "failed"
    assert catalog.read_record(s3_client, bucket, "r", ids["running"])["status"] == "running"
    # with stale_upload_seconds=0 even the fresh one goes
    run.params["stale_upload_seconds"] = 0
    assert len(run.reap(now + datetime.timedelta(seconds=5))) == 1
    assert all_uploads(s3_client, bucket) == []


def test_audit_row_written(pg, aws_params, s3_client, bucket):
    conn = connect(pg.params())
    try:
        if not query_one(conn, "SELECT 1 AS x FROM pg_database WHERE datname = 'rtxaudit'"):
            execute(conn, "CREATE DATABASE rtxaudit")
    finally:
        conn.close()
    sql = (REPO / "roles/dr_schema/files/migrations/V001__base.sql").read_text()
    conn = connect(pg.params(login_db="rtxaudit"), autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS drx CASCADE; CREATE SCHEMA drx; SET search_path = drx, pg_temp")
            cur.execute(sql)
        conn.commit()
    finally:
        conn.close()
    run = make_run(pg, aws_params, bucket, s3_client, None, encryption="none", audit_db="rtxaudit",
                   audit_schema="drx", compression="lz4")
    run.preflight()
    record = run.run()
    assert record["objects"][0]["key"].endswith("/base.tar.lz4")
    assert run.write_audit(record) == {"written": True, "reason": None, "database": "rtxaudit", "schema": "drx"}
    conn = connect(pg.params(login_db="rtxaudit"))
    try:
        row = query_one(conn, "SELECT status, kind, start_lsn::text AS start_lsn, stop_wal, compression,"
                              " system_identifier::text AS sysid, storage_uri, catalog_key,"
                              " details->'objects'->0->>'sha256' AS sha FROM drx.backup_history"
                              " WHERE backup_id = %s", (record["backup_id"],))
    finally:
        conn.close()
    assert row["status"] == "complete" and row["kind"] == "physical"
    assert row["start_lsn"] == record["start_lsn"] and row["stop_wal"] == record["stop_wal"]
    assert row["compression"] == "lz4:0" and row["sysid"] == record["system_identifier"]
    assert row["storage_uri"] == "s3://%s/%s/base/%s/" % (bucket, record["prefix"], record["backup_id"])
    assert row["catalog_key"] == "%s/catalog/%s.json" % (record["prefix"], record["backup_id"])
    assert row["sha"] == record["objects"][0]["sha256"]
    again = run.write_audit(record)
    assert again["written"] is False and "already exists" in again["reason"]


def test_a_failed_backup_is_mirrored_as_failed_in_the_audit_table(pg, aws_params, s3_client, bucket, monkeypatch):
    """Without failed rows backup_history's success rate (reports, backup_metrics, the BackupFailed alert) is 100 %."""
    test_audit_row_written(pg, aws_params, s3_client, bucket)  # creates rtxaudit.drx.backup_history
    real = s3_client.upload_part

    def upload_part(**kwargs):
        if kwargs["PartNumber"] >= 2:
            raise ConnectionResetError("network cut")
        return real(**kwargs)

    monkeypatch.setattr(s3_client, "upload_part", upload_part)
    run = make_run(pg, aws_params, bucket, s3_client, None, encryption="none", audit_db="rtxaudit",
                   audit_schema="drx", compression="none")
    run.preflight()
    with pytest.raises(RtxDrError, match="part 2"):
        run.run_and_audit()
    assert run.failed_audit == {"written": True, "reason": None, "database": "rtxaudit", "schema": "drx"}
    conn = connect(pg.params(login_db="rtxaudit"))
    try:
        row = query_one(conn, "SELECT status, error, finished_at IS NOT NULL AS finished FROM drx.backup_history"
                              " WHERE backup_id = %s", (run.record["backup_id"],))
    finally:
        conn.close()
    assert row["status"] == "failed" and "part 2" in row["error"] and row["finished"]


def test_the_audit_write_of_a_failed_backup_never_hides_its_error(pg, aws_params, s3_client, bucket, monkeypatch):
    run = make_run(pg, aws_params, bucket, s3_client, None, encryption="none", compression="none")
    run.preflight()

    def cut(**kwargs):
        raise ConnectionResetError("cut")

    def broken(record):
        raise RuntimeError("audit broken")

    monkeypatch.setattr(s3_client, "upload_part", cut)
    monkeypatch.setattr(run, "write_audit", broken)
    with pytest.raises(RtxDrError, match="cut"):
        run.run_and_audit()
    assert run.failed_audit == {"written": False, "reason": "RuntimeError: audit broken"}

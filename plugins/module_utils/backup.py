# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Encrypted, checksummed backups of PostgreSQL to S3 (physical and logical).

:class:`BackupRun` holds one run: option checks, read-only preflight (S3 bucket,
KMS key, PostgreSQL), reaping of abandoned multipart uploads, the backup itself
and the audit row. Physical and logical backups share one pipeline,
:func:`stream_command`: a child process (``pg_basebackup``/``pg_dump``, argv list,
no shell, password only in its environment) writes to a pipe that is read in
chunks, observed (tar headers, for ``pg_basebackup``), compressed and streamed
into :class:`~.s3stream.StreamUploader` (SSE-KMS, SHA256 metadata). The catalog
record in S3 is written ``running`` first and ``complete`` only after every
object is uploaded with its checksum; any failure or SIGTERM/SIGINT kills the
child, aborts the uploads and writes ``failed``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from urllib.parse import quote

from ansible_collections.rtx.dr.plugins.module_utils import catalog
from ansible_collections.rtx.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.aws import describe_kms_key
from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.compress import EXTENSIONS
from ansible_collections.rtx.dr.plugins.module_utils.compress import QUEUE_CHUNKS
from ansible_collections.rtx.dr.plugins.module_utils.compress import CompressorThread
from ansible_collections.rtx.dr.plugins.module_utils.compress import auto_workers
from ansible_collections.rtx.dr.plugins.module_utils.compress import check_compression
from ansible_collections.rtx.dr.plugins.module_utils.compress import describe as describe_compression
from ansible_collections.rtx.dr.plugins.module_utils.compress import load_library
from ansible_collections.rtx.dr.plugins.module_utils.compress import new_compressor
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import close_quietly
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connection_kwargs
from ansible_collections.rtx.dr.plugins.module_utils.postgres import execute
from ansible_collections.rtx.dr.plugins.module_utils.postgres import format_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import postgres_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_all
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_one
from ansible_collections.rtx.dr.plugins.module_utils.postgres import quote_ident
from ansible_collections.rtx.dr.plugins.module_utils.postgres import wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import MIB
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import StreamUploader
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import abort_upload
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import list_multipart_uploads
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import sse_args as make_sse_args
from ansible_collections.rtx.dr.plugins.module_utils.tarstream import TarObserver

# The options of rtx.dr.pg_basebackup beyond the postgres/aws common ones; the
# module and the host agent (agent.py) both build their spec from here.
BACKUP_OPTIONS = dict(
    kind=dict(type="str", default="physical", choices=["physical", "logical"]),
    bucket=dict(type="str", required=True),
    prefix=dict(type="str"),
    cluster_name=dict(type="str"),
    label=dict(type="str"),
    compression=dict(type="str", default="zstd", choices=["zstd", "gzip", "lz4", "none"]),
    compression_level=dict(type="int"),
    compression_workers=dict(type="int"),
    manifest_checksums=dict(type="str", default="CRC32C", choices=["CRC32C", "SHA224", "SHA256", "SHA384", "SHA512",
                                                                   "NONE"]),
    encryption=dict(type="str", default="aws:kms", choices=["aws:kms", "none"]),
    kms_key_id=dict(type="str"),
    part_size_mb=dict(type="int", default=16),
    databases=dict(type="list", elements="str"),
    audit_db=dict(type="str", default="rtx"),
    audit_schema=dict(type="str", default="dr"),
    pg_bin_dir=dict(type="path"),
    stale_upload_seconds=dict(type="int", default=3600),
    progress_interval=dict(type="int", default=30),
    timeout=dict(type="int", default=0),
    require_bucket_encryption=dict(type="bool", default=True),
)


def backup_argument_spec():
    """The argument spec of rtx.dr.pg_basebackup: postgres + aws common options + BACKUP_OPTIONS."""
    spec = postgres_common_argument_spec()
    spec.update(aws_common_argument_spec())
    spec.update({name: dict(option) for name, option in BACKUP_OPTIONS.items()})
    return spec


CHUNK_SIZE = MIB
#: Linux fcntl F_SETPIPE_SZ (not in Python's fcntl before 3.10).
F_SETPIPE_SZ = 1031
KINDS = ("physical", "logical")
ENCRYPTIONS = ("aws:kms", "none")
DEFAULT_STALE_UPLOAD_SECONDS = 3600
MAX_PROGRESS_SAMPLES = 1000
_STDERR_TAIL = 4000


class BackupInterrupted(RtxDrError):
    """The run got SIGTERM/SIGINT."""


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def libpq_environment(params, base=None):
    """Environment for a libpq client tool: the password and TLS settings travel here, never in argv."""
    env = dict(os.environ if base is None else base)
    env["PGAPPNAME"] = "rtx.dr"
    env.setdefault("LC_MESSAGES", "C")
    password = params.get("login_password")
    if password:
        env["PGPASSWORD"] = password
    if params.get("ssl_mode"):
        env["PGSSLMODE"] = params["ssl_mode"]
    if params.get("ca_cert"):
        env["PGSSLROOTCERT"] = params["ca_cert"]
    if params.get("connect_timeout") is not None:
        env["PGCONNECT_TIMEOUT"] = str(params["connect_timeout"])
    return env


def _connection_args(params):
    kwargs = connection_kwargs(params, application_name=None)
    argv = []
    if kwargs.get("host"):
        argv += ["-h", str(kwargs["host"])]
    if kwargs.get("port"):
        argv += ["-p", str(kwargs["port"])]
    if kwargs.get("user"):
        argv += ["-U", str(kwargs["user"])]
    return argv


def pg_basebackup_command(binary, params, label):
    """argv of ``pg_basebackup`` writing an uncompressed tar (WAL and manifest included) to stdout."""
    return [
        binary, "-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast",
        "--manifest-checksums=%s" % (params.get("manifest_checksums") or "CRC32C"),
        "--label", label, "-v", "-w",
    ] + _connection_args(params)


def _conninfo_quote(value):
    return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "\\'")


def pg_dump_command(binary, params, database, level):
    """argv of ``pg_dump -Fc -Z <level>`` of ``database`` to stdout."""
    return [binary, "-Fc", "-Z", str(level), "-w"] + _connection_args(params) + [
        "-d", "dbname=%s" % _conninfo_quote(database),
    ]


def find_pg_binary(name, pg_bin_dir=None, server_version_num=None, get_bin_path=None):
    """Path of PostgreSQL client tool ``name``.

    Looks in ``pg_bin_dir`` (only there when given), then in
    ``/usr/lib/postgresql/<server major>/bin`` (Debian/Ubuntu), then on PATH
    (``get_bin_path``, e.g. ``module.get_bin_path``).
    """
    if pg_bin_dir:
        path = os.path.join(pg_bin_dir, name)
        if os.access(path, os.X_OK):
            return path
        raise InvalidValueError(
            "pg_bin_dir %s has no executable %s" % (pg_bin_dir, name),
            hint="Set pg_bin_dir to the directory of the PostgreSQL client tools matching the server version.",
        )
    if server_version_num:
        path = "/usr/lib/postgresql/%d/bin/%s" % (int(server_version_num) // 10000, name)
        if os.access(path, os.X_OK):
            return path
    if get_bin_path is not None:
        path = get_bin_path(name)
        if path:
            return path
    raise InvalidValueError(
        "%s not found in /usr/lib/postgresql/<major>/bin nor on PATH of the target host" % name,
        hint="Install the PostgreSQL client package matching the server (e.g. postgresql-client-15) "
        "or set pg_bin_dir.",
    )


# --------------------------------------------------------------------------
# backup_label and backup_manifest
# --------------------------------------------------------------------------

_LABEL_START_RE = re.compile(r"^START WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)$", re.M)
_LABEL_FIELD_RE = re.compile(r"^([A-Z ]+): (.*)$", re.M)


def parse_backup_label(data):
    """Parse ``backup_label``: start LSN and WAL file, timeline, checkpoint, start time, label."""
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data
    fields = dict(_LABEL_FIELD_RE.findall(text))
    match = _LABEL_START_RE.search(text)
    if not match:
        raise RtxDrError("backup_label has no START WAL LOCATION line: %r" % text[:200])
    timeline = fields.get("START TIMELINE")
    start_wal = match.group(2)
    return {
        "start_lsn": format_lsn(match.group(1)),
        "start_wal": start_wal,
        "timeline": int(timeline) if timeline else int(start_wal[:8], 16),
        "checkpoint_lsn": fields.get("CHECKPOINT LOCATION"),
        "backup_method": fields.get("BACKUP METHOD"),
        "backup_from": fields.get("BACKUP FROM"),
        "start_time": fields.get("START TIME"),
        "label": fields.get("LABEL"),
    }


def manifest_checksum_ok(data):
    """``(ok, expected, actual)``: PostgreSQL's Manifest-Checksum is the SHA256 of the bytes
    up to the newline before the ``"Manifest-Checksum"`` line."""
    body = bytes(data)
    end = body.rstrip(b"\n").rfind(b"\n")
    if end == -1:
        return False, None, None
    actual = hashlib.sha256(body[:end + 1]).hexdigest()
    expected = json.loads(body.decode("utf-8")).get("Manifest-Checksum")
    return actual == expected, expected, actual


def parse_manifest(data):
    """Summary of a ``backup_manifest``: files, total size, checksum algorithm, WAL ranges, own checksum.

    :raises RtxDrError: not JSON, or its Manifest-Checksum does not match its content.
    """
    try:
        manifest = json.loads(bytes(data).decode("utf-8"))
    except ValueError as exc:
        raise RtxDrError("backup_manifest from pg_basebackup is not valid JSON: %s" % exc) from None
    ok, expected, actual = manifest_checksum_ok(data)
    if not ok:
        raise RtxDrError(
            "backup_manifest checksum mismatch (Manifest-Checksum %s, computed %s): the stream was damaged"
            % (expected, actual)
        )
    files = manifest.get("Files") or []
    algorithms = sorted({f.get("Checksum-Algorithm") for f in files if f.get("Checksum-Algorithm")})
    ranges = [
        {"timeline": int(r["Timeline"]), "start_lsn": r["Start-LSN"], "end_lsn": r["End-LSN"]}
        for r in manifest.get("WAL-Ranges") or []
    ]
    return {
        "version": manifest.get("PostgreSQL-Backup-Manifest-Version"),
        "files": len(files),
        "total_size": sum(int(f.get("Size") or 0) for f in files),
        "checksum_algorithm": ",".join(algorithms) if algorithms else None,
        "manifest_sha256": expected,
        "wal_ranges": ranges,
    }


def backup_positions(label_info, manifest_info):
    """timeline, start/stop LSN and WAL segment names from backup_label and the manifest's WAL-Ranges."""
    ranges = manifest_info.get("wal_ranges") or []
    if not ranges:
        raise RtxDrError("backup_manifest has no WAL-Ranges: cannot tell the backup's stop LSN")
    last = ranges[-1]
    timeline = last["timeline"]
    start_lsn = label_info["start_lsn"]
    stop_lsn = format_lsn(last["end_lsn"])
    return {
        "timeline": timeline,
        "start_lsn": start_lsn,
        "stop_lsn": stop_lsn,
        "start_wal": label_info["start_wal"],
        # Like PostgreSQL's STOP WAL LOCATION in the backup history file (XLByteToSeg of the stop point).
        "stop_wal": wal_segment_name(timeline, stop_lsn),
    }


# --------------------------------------------------------------------------
# Shared pipeline
# --------------------------------------------------------------------------


class Progress:
    """Periodic ``{"bytes", "seconds"}`` samples, each also logged with ``log``."""

    def __init__(self, interval, log=None, what="backup", clock=time.monotonic):
        self.interval = interval
        self.log = log
        self.what = what
        self.clock = clock
        self.start = clock()
        self.next = self.start + interval if interval and interval > 0 else None
        self.samples = []

    def update(self, done, force=False):
        now = self.clock()
        if not force and (self.next is None or now < self.next):
            return
        seconds = round(now - self.start, 3)
        if len(self.samples) < MAX_PROGRESS_SAMPLES:
            self.samples.append({"bytes": done, "seconds": seconds})
        if self.log is not None:
            self.log("%s: %d bytes in %.1f s" % (self.what, done, seconds))
        if self.next is not None:
            while self.next <= now:
                self.next += self.interval


def grow_pipe(handle, size):
    """Best effort: make the pipe behind ``handle`` hold ``size`` bytes (Linux; default 64 KiB).

    With a pipe as large as one read, the child writes and this process reads a chunk at a time instead of
    taking turns every 64 KiB: fewer wake-ups and system calls on both sides (a small gain: on 463 MB of
    ``pg_basebackup`` output, ~0.03 CPU s less in the reading thread and in ``pg_basebackup`` each). Returns the
    pipe's size, or None where it cannot be set (not Linux, above ``/proc/sys/fs/pipe-max-size``, the
    user's pipe quota exhausted): nothing else changes then.
    """
    try:
        import fcntl  # pylint: disable=import-outside-toplevel

        return fcntl.fcntl(handle.fileno(), F_SETPIPE_SZ, size)
    except (ImportError, OSError, ValueError, AttributeError):
        return None


class ChildProcess:
    """A child whose stdout is read in chunks; stderr goes to a temp file (no pipe deadlock)."""

    def __init__(self, argv, env):
        self.argv = argv
        self._stderr = tempfile.TemporaryFile()  # pylint: disable=consider-using-with
        try:
            self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
                bufsize=CHUNK_SIZE, close_fds=True, start_new_session=True,
            )
        except OSError as exc:
            self._stderr.close()
            raise RtxDrError("Cannot run %s: %s" % (argv[0], exc)) from None
        self.pipe_size = grow_pipe(self.proc.stdout, CHUNK_SIZE)

    def read(self, size=CHUNK_SIZE):
        return self.proc.stdout.read(size)

    def stderr_tail(self):
        try:
            self._stderr.seek(0, os.SEEK_END)
            length = self._stderr.tell()
            self._stderr.seek(max(0, length - _STDERR_TAIL))
            return self._stderr.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def kill(self):
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def finish(self):
        """Wait for the exit; raise with the stderr tail when it failed."""
        rc = self.proc.wait()
        if rc != 0:
            tail = self.stderr_tail()
            raise RtxDrError(
                "%s exited with status %d: %s" % (os.path.basename(self.argv[0]), rc, tail or "(no message)"),
                hint="See the message of the PostgreSQL tool above; check the connection options, that the "
                "login role may take backups (REPLICATION for pg_basebackup), and free space/limits.",
                details={"rc": rc, "stderr": tail},
            )
        return self.stderr_tail()

    def close(self):
        self.kill()
        for handle in (self.proc.stdout, self._stderr):
            try:
                handle.close()
            except (OSError, ValueError):
                pass


def stream_command(child, uploader, compressor, observer=None, progress=None, chunk_size=CHUNK_SIZE,
                   queue_chunks=QUEUE_CHUNKS):
    """The shared pipeline: read ``child``'s stdout, observe, compress, upload.

    Two stages overlap: this (the calling, main) thread reads the pipe, feeds the
    tar observer and counts progress; a :class:`~.compress.CompressorThread`
    compresses the chunks in order and writes the output into ``uploader``
    (SHA256, part buffer), whose own thread sends part N while part N+1 fills.
    Signals (SIGTERM/SIGINT) keep being handled in this thread.

    Worst-case memory with the defaults (1 MiB chunks, ``queue_chunks`` 4, 16 MiB
    parts, zstd:3): 4 queued chunks + 1 being read + 1 being compressed (6 MiB);
    one compressed piece on its way into the uploader (~1 MiB; up to the
    unfinished jobs' output, ~2 MiB, with zstd workers); the part being filled +
    the part in flight (2 x 16 MiB: ``StreamUploader`` waits for the part in
    flight before it hands over the next one, and swaps the two buffers instead
    of copying); the compressor's state (~5 MB in one thread, 6-16 MB with 2
    workers and 512 KiB jobs): ~45 MiB in one thread, ~56 MiB with 2 workers;
    plus the pipe from the child (1 MiB, kernel memory). Before the compressor
    thread: 1 + 1 + 3 x 16 (the part was copied before the wait) + 5 = ~55 MiB.

    Any error of the compressor thread (compression, SHA256, a part upload) is
    re-raised here as is; on any error the compressor thread is stopped and
    waited for before this function raises, so the caller may abort the
    uploader. Returns the number of raw (uncompressed) bytes read. Does not
    close the uploader nor check the child's exit status: the caller does, in
    that order only when the child succeeded.
    """
    raw = 0
    stage = CompressorThread(compressor, uploader.write, max_chunks=queue_chunks)
    try:
        while True:
            chunk = child.read(chunk_size)
            if not chunk:
                break
            raw += len(chunk)
            if observer is not None:
                observer.feed(chunk)
            stage.put(chunk)
            chunk = None
            if progress is not None:
                progress.update(raw)
        stage.finish()
    finally:
        stage.close()
    if progress is not None:
        progress.update(raw, force=True)
    return raw


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------


AUDIT_INSERT = """
INSERT INTO {schema}.backup_history (
    backup_id, label, kind, cluster_name, system_identifier, timeline, start_lsn, stop_lsn,
    start_wal, stop_wal, started_at, finished_at, status, size_raw_bytes, size_compressed_bytes,
    duration_seconds, throughput_bytes_per_s, compression, kms_key, storage_uri, catalog_key,
    pg_version, host, error, details)
VALUES (
    %(backup_id)s, %(label)s, %(kind)s, %(cluster_name)s, %(system_identifier)s::numeric, %(timeline)s,
    %(start_lsn)s::pg_lsn, %(stop_lsn)s::pg_lsn, %(start_wal)s, %(stop_wal)s, %(started_at)s::timestamptz,
    %(finished_at)s::timestamptz, %(status)s, %(size_raw_bytes)s, %(size_compressed_bytes)s,
    %(duration_seconds)s, %(throughput_bytes_per_s)s, %(compression)s, %(kms_key)s, %(storage_uri)s,
    %(catalog_key)s, %(pg_version)s, %(host)s, %(error)s, %(details)s::jsonb)
ON CONFLICT (backup_id) DO NOTHING
"""


class BackupRun:
    """One backup run.

    :param params: the module options (``postgres_common_argument_spec()`` +
        ``aws_common_argument_spec()`` + the module's own).
    :param s3: boto3 S3 client; ``kms``: boto3 KMS client (or None with ``encryption: none``).
    :param get_bin_path: ``module.get_bin_path`` (PATH lookup of client tools).
    :param log: callable taking a message (``module.log``).
    :param connect_func: ``postgres.connect`` (tests may wrap it).
    """

    def __init__(self, params, s3, kms=None, get_bin_path=None, log=None, connect_func=connect):
        self.params = params
        self.s3 = s3
        self.kms = kms
        self.get_bin_path = get_bin_path
        self.log = log or (lambda msg: None)
        self.connect = connect_func
        self.kind = params.get("kind") or "physical"
        self.bucket = params["bucket"]
        self.settings = None
        self.sse = None
        self.server = None
        self.kms_key_arn = None
        self.databases = None
        self.binary = None
        self.cluster_name = None
        self.prefix = None
        self.record = None
        self.failed_audit = None
        self.progress = None
        self.commands = []
        self._child = None
        self._uploaders = []
        self._interrupted = None
        self._cleaning = False
        self._timed_out = False

    # -- checks --------------------------------------------------------------
    def validate(self):
        """Option checks that need no network; run before anything else."""
        params = self.params
        if self.kind not in KINDS:
            raise InvalidValueError("Invalid kind %r: expected physical or logical" % (self.kind,))
        encryption = params.get("encryption") or "aws:kms"
        if encryption not in ENCRYPTIONS:
            raise InvalidValueError("Invalid encryption %r: expected aws:kms or none" % (encryption,))
        self.sse = make_sse_args(encryption, params.get("kms_key_id"))
        method = params.get("compression") or "zstd"
        if self.kind == "logical":
            # pg_dump compresses its custom format itself (PostgreSQL 15: gzip levels only).
            if method == "none":
                self.settings = {"method": "none", "level": 0, "workers": None}
            else:
                level = params.get("compression_level")
                level = 6 if level is None or method != "gzip" else level
                self.settings = check_compression("gzip", level)
                self.settings["by"] = "pg_dump"
        else:
            workers = params.get("compression_workers")
            if workers is None:
                # Not set: zstd threads when the host has 2+ cores (compress.auto_workers).
                workers = auto_workers(method, params.get("compression_level"))
            self.settings = check_compression(method, params.get("compression_level"), workers)
            load_library(method)
        part_size_mb = params.get("part_size_mb") or 16
        if part_size_mb < 5 or part_size_mb > 5 * 1024:
            raise InvalidValueError(
                "Invalid part_size_mb %r: must be from 5 to 5120" % (part_size_mb,),
                hint="S3 parts must be at least 5 MiB; 16 is a good default.",
            )
        if (params.get("stale_upload_seconds") or 0) < 0:
            raise InvalidValueError("stale_upload_seconds must not be negative")
        quote_ident(params.get("audit_schema") or "dr", "audit_schema")

    def _check_bucket(self):
        catalog.check_bucket(self.s3, self.bucket, self.params.get("endpoint_url"),
                             missing_note=": nothing was backed up",
                             permissions="s3:ListBucket, s3:PutObject, s3:GetObject, s3:AbortMultipartUpload "
                             "and s3:ListBucketMultipartUploads")
        if self.sse and self.params.get("require_bucket_encryption", True):
            self._check_bucket_encryption()

    def _check_bucket_encryption(self):
        """Refuse a bucket without default SSE-KMS: it is not a bucket set up for backups."""
        try:
            config = self.s3.get_bucket_encryption(Bucket=self.bucket)
            rules = (config.get("ServerSideEncryptionConfiguration") or {}).get("Rules") or []
        except Exception as exc:  # pylint: disable=broad-exception-caught
            code = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code")
            if code != "ServerSideEncryptionConfigurationNotFoundError":
                raise error_from_boto(exc, "reading the default encryption of bucket %s (option bucket)" % self.bucket,
                                      {"bucket": self.bucket}) from None
            rules = []
        algorithms = [(r.get("ApplyServerSideEncryptionByDefault") or {}).get("SSEAlgorithm") for r in rules]
        if not any(a in ("aws:kms", "aws:kms:dsse") for a in algorithms):
            raise RtxDrError(
                "Bucket %s (option bucket) has no default SSE-KMS encryption (found: %s): nothing was backed up"
                % (self.bucket, ", ".join(a for a in algorithms if a) or "none"),
                hint="Set the bucket up with the rtx.dr.s3_storage role (site.yml), or, if another control already "
                "enforces encryption, set require_bucket_encryption: false.",
                details={"bucket": self.bucket, "bucket_encryption": algorithms},
            )

    def _check_kms(self):
        key_id = self.params.get("kms_key_id")
        if not self.sse:
            return
        meta = describe_kms_key(self.kms, key_id, "KMS key %s (option kms_key_id)" % key_id,
                                "Check kms_key_id (alias/<name>, key id or ARN) and region, or create the key first.")
        state = meta.get("KeyState")
        if state and state != "Enabled" or meta.get("Enabled") is False:
            raise RtxDrError(
                "KMS key %s (option kms_key_id) is not usable: its state is %s" % (key_id, state),
                hint="Enable the key (or cancel its deletion), or use another kms_key_id.",
                details={"kms_key_id": key_id, "key_state": state},
            )
        self.kms_key_arn = meta.get("Arn")
        if self.kms_key_arn:
            # Send the key ARN, not the alias: bucket policies that pin the
            # key (s3:x-amz-server-side-encryption-aws-kms-key-id) compare the
            # header as sent, and an alias never matches the ARN.
            self.sse = make_sse_args("aws:kms", self.kms_key_arn)

    def _check_postgres(self):
        conn = self.connect(self.params)
        try:
            server = query_one(
                conn,
                "SELECT current_setting('server_version_num')::int AS server_version_num,"
                " current_setting('server_version') AS server_version,"
                " current_setting('cluster_name') AS cluster_name,"
                " pg_is_in_recovery() AS in_recovery",
            )
            try:
                row = query_one(conn, "SELECT system_identifier::text AS system_identifier FROM pg_control_system()")
                server["system_identifier"] = row["system_identifier"]
            except RtxDrError:
                server["system_identifier"] = None
            rows = query_all(
                conn,
                "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname",
            )
            server["databases"] = [r["datname"] for r in rows]
        finally:
            close_quietly(conn)
        self.server = server

    def preflight(self):
        """Read-only checks before any data moves: options, S3 bucket, KMS key, PostgreSQL, tools."""
        self.validate()
        self._check_bucket()
        self._check_kms()
        self._check_postgres()
        params = self.params
        self.cluster_name = params.get("cluster_name") or self.server.get("cluster_name") or socket.gethostname()
        self.prefix = catalog.normalize_prefix(params.get("prefix") or "pgbackup/%s" % self.cluster_name)
        if self.kind == "logical":
            wanted = params.get("databases") or self.server["databases"]
            missing = [d for d in wanted if d not in self.server["databases"]]
            if missing:
                raise InvalidValueError(
                    "databases: %s not found on the server (or not connectable)" % ", ".join(missing),
                    hint="Existing databases: %s." % ", ".join(self.server["databases"]),
                )
            self.databases = list(wanted)
        tool = "pg_basebackup" if self.kind == "physical" else "pg_dump"
        self.binary = find_pg_binary(tool, params.get("pg_bin_dir"), self.server.get("server_version_num"),
                                     self.get_bin_path)
        return self.server

    # -- naming ----------------------------------------------------------------
    def object_key(self, backup_id, database=None):
        base = catalog.data_prefix(self.prefix, self.kind, backup_id)
        if self.kind == "physical":
            return base + "base.tar" + EXTENSIONS[self.settings["method"]]
        return base + "%s.dump" % quote(database, safe="")

    def key_patterns(self):
        if self.kind == "physical":
            return [
                self.object_key("<backup_id>"),
                catalog.data_prefix(self.prefix, self.kind, "<backup_id>") + "backup_manifest",
                catalog.catalog_key(self.prefix, "<backup_id>"),
            ]
        return [self.object_key("<backup_id>", "<database>"), catalog.catalog_key(self.prefix, "<backup_id>")]

    # -- reaping ---------------------------------------------------------------
    def reap(self, now=None):
        """Abort multipart uploads left by runs that died; mark their stale ``running`` records failed."""
        now = now or catalog.utc_now()
        stale = self.params.get("stale_upload_seconds")
        stale = DEFAULT_STALE_UPLOAD_SECONDS if stale is None else stale
        records = {}
        reaped = []
        for kind in KINDS:
            for upload in list_multipart_uploads(self.s3, self.bucket, catalog.data_prefix(self.prefix, kind)):
                backup_id = catalog.backup_id_from_key(self.prefix, upload["key"])
                initiated = upload.get("initiated")
                age = (now - initiated).total_seconds() if initiated is not None else None
                reason = None
                if age is not None and age > stale:
                    reason = "initiated %d s ago (stale_upload_seconds=%d)" % (age, stale)
                elif backup_id is None:
                    reason = "not under a backup id"
                else:
                    if backup_id not in records:
                        records[backup_id] = catalog.read_record(self.s3, self.bucket, self.prefix, backup_id)
                    record = records[backup_id]
                    if record is None:
                        reason = "backup %s has no catalog record" % backup_id
                    elif record.get("status") != "running":
                        reason = "backup %s is %s" % (backup_id, record.get("status"))
                    else:
                        started = catalog.parse_isoformat(record.get("started_at"))
                        if started is None or (now - started).total_seconds() > stale:
                            reason = "backup %s has been running since %s: its run died" % (
                                backup_id, record.get("started_at"))
                if reason is None:
                    continue
                abort_upload(self.s3, self.bucket, upload["key"], upload["upload_id"])
                reaped.append({"key": upload["key"], "upload_id": upload["upload_id"], "backup_id": backup_id,
                               "reason": reason})
                self.log("aborted multipart upload of %s: %s" % (upload["key"], reason))
        for backup_id in {r["backup_id"] for r in reaped if r["backup_id"]}:
            record = records.get(backup_id)
            if record is None and backup_id not in records:
                record = catalog.read_record(self.s3, self.bucket, self.prefix, backup_id)
            if record is not None and record.get("status") == "running":
                record["status"] = "failed"
                record["finished_at"] = catalog.isoformat(now)
                record["error"] = "run abandoned (killed?): its unfinished uploads were aborted by a later run"
                catalog.write_record(self.s3, self.bucket, self.prefix, record, self.sse)
        return reaped

    # -- records ---------------------------------------------------------------
    def new_record(self, backup_id, started):
        params = self.params
        compression = {k: self.settings.get(k) for k in ("method", "level", "workers")}
        if self.settings.get("by"):
            compression["by"] = self.settings["by"]
        return {
            "format_version": catalog.FORMAT_VERSION,
            "backup_id": backup_id,
            "label": params.get("label") or "rtx.dr %s" % backup_id,
            "kind": self.kind,
            "cluster_name": self.cluster_name,
            "system_identifier": self.server.get("system_identifier"),
            "timeline": None,
            "start_lsn": None,
            "stop_lsn": None,
            "start_wal": None,
            "stop_wal": None,
            "started_at": catalog.isoformat(started),
            "finished_at": None,
            "size_raw_bytes": 0,
            "size_compressed_bytes": 0,
            "duration_seconds": None,
            "throughput_bytes_per_s": None,
            "compression": compression,
            "encryption": "aws:kms" if self.sse else "none",
            "kms_key_id": params.get("kms_key_id") if self.sse else None,
            "kms_key_arn": self.kms_key_arn if self.sse else None,
            "objects": [],
            "manifest": None,
            "wal_included": self.kind == "physical",
            "databases": list(self.databases) if self.kind == "logical" else None,
            "pg_version": {
                "server_version_num": self.server.get("server_version_num"),
                "server_version": self.server.get("server_version"),
            },
            "host": socket.gethostname(),
            "bucket": self.bucket,
            "prefix": self.prefix,
            "status": "running",
            "error": None,
        }

    def plan(self):
        """What a run would do (check mode): a record skeleton with status ``planned``, nothing written."""
        record = self.new_record("<backup_id>", catalog.utc_now())
        record["status"] = "planned"
        record["objects"] = [{"key": k} for k in self.key_patterns()]
        record["command"] = self._planned_command()
        return record

    def _planned_command(self):
        if self.kind == "physical":
            return pg_basebackup_command(self.binary, self.params, self.params.get("label") or "rtx.dr <backup_id>")
        return pg_dump_command(self.binary, self.params, "<database>", self.settings["level"] or 0)

    # -- signals -----------------------------------------------------------------
    def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
        self._interrupted = signum
        if self._child is not None:
            self._child.kill()
        if not self._cleaning:
            raise BackupInterrupted(
                "Backup interrupted by signal %d: the child was killed and the uploads aborted" % signum,
                hint="Rerun the task; this backup is marked failed in the catalog.",
            )

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        saved = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            saved[signum] = signal.signal(signum, self._on_signal)
        return saved

    @staticmethod
    def _restore_signals(saved):
        for signum, handler in saved.items():
            signal.signal(signum, handler)

    def _on_timeout(self):
        self._timed_out = True
        if self._child is not None:
            self._child.kill()

    # -- running -------------------------------------------------------------------
    def _uploader(self, key, backup_id, extra_metadata=None, content_type="application/octet-stream"):
        extra = dict(self.sse)
        extra["ContentType"] = content_type
        metadata = {"backup-id": backup_id}
        metadata.update(extra_metadata or {})
        uploader = StreamUploader(self.s3, self.bucket, key, extra_args=extra, metadata=metadata,
                                  part_size=(self.params.get("part_size_mb") or 16) * MIB)
        self._uploaders.append(uploader)
        return uploader

    def _stream(self, argv, key, backup_id, compressor, observer=None, extra_metadata=None):
        """Run ``argv`` through the shared pipeline into ``key``; return ``(raw_bytes, object facts)``."""
        env = libpq_environment(self.params)
        self.commands.append(list(argv))
        self.log("running %s" % " ".join(argv))
        uploader = self._uploader(key, backup_id, extra_metadata)
        self._child = ChildProcess(argv, env)
        try:
            raw = stream_command(self._child, uploader, compressor, observer, self.progress)
            if self._timed_out:
                raise RtxDrError(
                    "%s did not finish within timeout=%s s and was killed" % (argv[0], self.params.get("timeout")),
                    hint="Raise timeout (0 = no limit) or find what slows the backup down.",
                )
            self._child.finish()
        finally:
            self._child.close()
            self._child = None
        if observer is not None:
            observer.close()
        facts = uploader.close()
        return raw, facts

    def _physical(self, record):
        backup_id = record["backup_id"]
        argv = pg_basebackup_command(self.binary, self.params, record["label"])
        compressor = new_compressor(self.settings["method"], self.settings["level"], self.settings["workers"])
        observer = TarObserver(keep_members=False)
        key = self.object_key(backup_id)
        raw, facts = self._stream(argv, key, backup_id, compressor, observer)
        for name in ("backup_label", "backup_manifest"):
            if name not in observer.captured:
                raise RtxDrError("the tar stream of pg_basebackup has no %s member" % name)
        manifest_bytes = observer.captured["backup_manifest"]
        label_info = parse_backup_label(observer.captured["backup_label"])
        manifest_info = parse_manifest(manifest_bytes)
        record["objects"].append({"key": key, "role": "base", "size": facts["size"], "sha256": facts["sha256"]})
        manifest_key = catalog.data_prefix(self.prefix, self.kind, backup_id) + "backup_manifest"
        uploader = self._uploader(manifest_key, backup_id, content_type="application/json")
        uploader.write(manifest_bytes)
        mfacts = uploader.close()
        record["objects"].append(
            {"key": manifest_key, "role": "manifest", "size": mfacts["size"], "sha256": mfacts["sha256"]})
        record.update(backup_positions(label_info, manifest_info))
        record["manifest"] = {
            "files": manifest_info["files"],
            "total_size": manifest_info["total_size"],
            "checksum_algorithm": manifest_info["checksum_algorithm"],
            "manifest_sha256": manifest_info["manifest_sha256"],
            "wal_ranges": manifest_info["wal_ranges"],
        }
        record["tar"] = observer.summary()
        return raw

    def _logical(self, record):
        backup_id = record["backup_id"]
        raw_total = 0
        for database in self.databases:
            argv = pg_dump_command(self.binary, self.params, database, self.settings["level"] or 0)
            key = self.object_key(backup_id, database)
            raw, facts = self._stream(argv, key, backup_id, new_compressor("none"),
                                      extra_metadata={"database": quote(database, safe="")})
            raw_total += raw
            record["objects"].append({"key": key, "role": "dump", "size": facts["size"], "sha256": facts["sha256"],
                                      "database": database})
        return raw_total

    def _cleanup_failed(self, record, error):
        self._cleaning = True
        if self._child is not None:
            self._child.close()
            self._child = None
        for uploader in self._uploaders:
            uploader.abort()
        # Completed objects of a failed backup are deleted: only complete backups keep data.
        for obj in record.get("objects") or ():
            try:
                self.s3.delete_object(Bucket=self.bucket, Key=obj["key"])
            except Exception:  # pylint: disable=broad-exception-caught
                pass
        for uploader in self._uploaders:
            if uploader.closed:
                try:
                    self.s3.delete_object(Bucket=self.bucket, Key=uploader.key)
                except Exception:  # pylint: disable=broad-exception-caught
                    pass
        record["objects"] = []
        record["status"] = "failed"
        record["finished_at"] = catalog.isoformat(catalog.utc_now())
        record["error"] = str(error)
        try:
            catalog.write_record(self.s3, self.bucket, self.prefix, record, self.sse)
        except Exception:  # pylint: disable=broad-exception-caught
            pass

    def run(self, now=None):
        """Take the backup (after :meth:`preflight`); return the complete catalog record.

        The record gains ``progress`` (samples) and ``command`` (argv of the last child, no secrets)
        in the returned dict only, not in the catalog.
        """
        started = now or catalog.utc_now()
        backup_id = catalog.new_backup_id(self.kind, started)
        record = self.new_record(backup_id, started)
        self.record = record
        interval = self.params.get("progress_interval")
        self.progress = Progress(30 if interval is None else interval, self.log, "backup %s" % backup_id)
        saved = self._install_signals()
        timer = None
        if self.params.get("timeout"):
            timer = threading.Timer(self.params["timeout"], self._on_timeout)
            timer.daemon = True
            timer.start()
        t0 = time.monotonic()
        try:
            catalog.write_record(self.s3, self.bucket, self.prefix, record, self.sse)
            raw = self._physical(record) if self.kind == "physical" else self._logical(record)
            if self._interrupted:
                raise BackupInterrupted("Backup interrupted by signal %d" % self._interrupted)
            duration = max(time.monotonic() - t0, 1e-6)
            record["size_raw_bytes"] = raw
            record["size_compressed_bytes"] = sum(o["size"] for o in record["objects"])
            record["duration_seconds"] = round(duration, 3)
            record["throughput_bytes_per_s"] = round(raw / duration, 2)
            record["finished_at"] = catalog.isoformat(catalog.utc_now())
            record["status"] = "complete"
            catalog.write_record(self.s3, self.bucket, self.prefix, record, self.sse)
        except BaseException as exc:
            self._cleanup_failed(record, exc)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._restore_signals(saved)
        result = dict(record)
        result["progress"] = self.progress.samples
        result["command"] = self.commands[-1] if self.kind == "physical" else self.commands
        return result

    def run_and_audit(self, now=None):
        """:meth:`run`, then mirror the outcome into the audit table: the complete record on success (its
        result is ``record['audit']``), the failed record when the backup failed (then the original error is
        raised; the audit write is best effort and can never hide it). Without the failed rows the success rate
        of ``backup_history`` (reports, the ``backup_metrics`` view, the BackupFailed alert) could never drop.
        """
        try:
            result = self.run(now)
        except BaseException:
            if self.record is not None and self.record.get("status") == "failed":
                try:
                    self.failed_audit = self.write_audit(self.record)
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    self.failed_audit = {"written": False, "reason": "%s: %s" % (type(exc).__name__, exc)}
            raise
        result["audit"] = self.write_audit(result)
        return result

    # -- audit -------------------------------------------------------------------
    def write_audit(self, record):
        """Mirror a complete or failed record into ``<audit_schema>.backup_history``; never fails the backup."""
        params = self.params
        audit_db = params.get("audit_db") or "rtx"
        schema = params.get("audit_schema") or "dr"
        row = {k: record.get(k) for k in (
            "backup_id", "label", "kind", "cluster_name", "system_identifier", "timeline", "start_lsn", "stop_lsn",
            "start_wal", "stop_wal", "started_at", "finished_at", "status", "size_raw_bytes",
            "size_compressed_bytes", "duration_seconds", "throughput_bytes_per_s", "error", "host")}
        row["compression"] = describe_compression(record["compression"])
        row["kms_key"] = record.get("kms_key_arn") or record.get("kms_key_id")
        data_prefix = catalog.data_prefix(record["prefix"], record["kind"], record["backup_id"])
        row["storage_uri"] = "s3://%s/%s" % (record["bucket"], data_prefix)
        row["catalog_key"] = catalog.catalog_key(record["prefix"], record["backup_id"])
        row["pg_version"] = (record.get("pg_version") or {}).get("server_version")
        row["details"] = json.dumps({k: record.get(k) for k in ("objects", "manifest", "compression", "encryption",
                                                                "databases", "wal_included", "format_version")})
        conn = None
        try:
            conn = self.connect(dict(params, login_db=audit_db))
            sql = AUDIT_INSERT.format(schema=quote_ident(schema, "audit_schema"))
            count = execute(conn, sql, row)
        except RtxDrError as exc:
            return {"written": False, "reason": str(exc), "database": audit_db, "schema": schema}
        finally:
            close_quietly(conn)
        if not count:
            return {"written": False, "reason": "a row for backup_id %s already exists" % record["backup_id"],
                    "database": audit_db, "schema": schema}
        return {"written": True, "reason": None, "database": audit_db, "schema": schema}

# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Read-only verification of the backups written by ``rtx.dr.pg_basebackup``, from S3 alone.

Nothing here needs the database: the catalog record (``<prefix>/catalog/<id>.json``)
says what was written, and every check compares S3 with it.

Per backup (:meth:`Verifier.verify`):

- the record: status ``complete``, known ``format_version``, its own ``sha256``
  metadata and encryption;
- every object of ``record["objects"]``: exists with the recorded size
  (``head_object``), SSE-KMS with the expected key, ``sha256`` metadata equal to
  the record, and (``checksums``) the SHA256 recomputed by streaming the object
  back in chunks;
- physical backups: the ``backup_manifest`` object's own Manifest-Checksum, its
  file count / total size / checksum against ``record["manifest"]``; with
  ``check_contents`` the base tar is decompressed and observed as it streams
  (no file content is kept): every manifest file is in the tar with its size, no
  extra data file, the WAL from ``start_wal`` to ``stop_wal`` is in ``pg_wal/``
  (or, when ``wal_included`` is false, in the WAL archive under ``<prefix>/wal/``);
- logical backups: each dump starts with the ``pg_dump`` custom-format magic ``PGDMP``.

Problems are *findings* (``{"object", "check", "message"}``), not exceptions:
every backup is checked completely. Exceptions (:class:`RtxDrError`) are kept for
inputs that make verification impossible (unreachable endpoint, missing bucket,
no backup found).

Read-only by construction: the clients are wrapped in :class:`ReadOnlyClient`,
which only lets ``head_*``, ``get_object``, ``list_objects_v2`` and KMS
``describe_key`` through.
"""

from __future__ import annotations

import hashlib
import json
import time

from ansible_collections.rtx.dr.plugins.module_utils import catalog
from ansible_collections.rtx.dr.plugins.module_utils.catalog import resolve_prefix
from ansible_collections.rtx.dr.plugins.module_utils.catalog import wal_prefix
from ansible_collections.rtx.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.aws import describe_kms_key
from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.aws import list_objects
from ansible_collections.rtx.dr.plugins.module_utils.backup import manifest_checksum_ok
from ansible_collections.rtx.dr.plugins.module_utils.backup import parse_backup_label
from ansible_collections.rtx.dr.plugins.module_utils.compress import EXTENSIONS
from ansible_collections.rtx.dr.plugins.module_utils.compress import METHODS
from ansible_collections.rtx.dr.plugins.module_utils.compress import new_decompressor
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import DEFAULT_WAL_SEGMENT_SIZE
from ansible_collections.rtx.dr.plugins.module_utils.postgres import is_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import MIB
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import stored_sha256
from ansible_collections.rtx.dr.plugins.module_utils.tarstream import TarObserver
from ansible_collections.rtx.dr.plugins.module_utils.tarstream import TarStreamError

# The options of rtx.dr.s3_backup_verify beyond the aws common ones; the module
# and the host agent (agent.py) both build their spec from here.
VERIFY_OPTIONS = dict(
    bucket=dict(type="str", required=True),
    prefix=dict(type="str"),
    cluster_name=dict(type="str"),
    select=dict(type="str", choices=["latest", "all", "id"]),
    backup_id=dict(type="str"),
    kind=dict(type="str", choices=["physical", "logical", "any"]),
    expected_kms_key_id=dict(type="str"),
    checksums=dict(type="bool", default=True),
    check_contents=dict(type="bool", default=True),
    require_encryption=dict(type="bool", default=True),
    deep=dict(type="bool", default=False),
)


def verify_argument_spec():
    """The argument spec of rtx.dr.s3_backup_verify: aws common options + VERIFY_OPTIONS."""
    spec = aws_common_argument_spec()
    spec.update({name: dict(option) for name, option in VERIFY_OPTIONS.items()})
    return spec


SELECTS = ("latest", "all", "id")
KINDS = ("physical", "logical", "any")
KNOWN_FORMAT_VERSIONS = (1,)
CHUNK_SIZE = MIB
#: Compressed bytes handed to the decompressor at a time: bounds its output per call.
DECOMPRESS_PIECE = 16 * 1024
#: The pg_dump custom-format magic (the file starts with it; pg_dump compresses inside).
DUMP_MAGIC = b"PGDMP"
#: Largest backup_manifest read into memory.
MAX_MANIFEST_BYTES = 512 * MIB
#: Names in the tar that the manifest never lists (as pg_verifybackup ignores them).
MANIFEST_EXEMPT = ("backup_manifest", "postgresql.auto.conf", "standby.signal", "recovery.signal")
#: Most file names quoted in one finding.
MAX_NAMES = 10
#: Most WAL segments one backup may need before the range is called implausible.
MAX_WAL_SEGMENTS = 100000
#: Findings quoted in the failure message.
MESSAGE_FINDINGS = 5

DEEP_UNAVAILABLE = (
    "deep verification is a restore, which a module that only reads S3 cannot do: it is run by the restore feature "
    "(playbooks/verify_backups.yml -e verify_deep=true, which hands over to playbooks/restore.yml verify_only)"
)

_S3_READ_METHODS = frozenset(("head_bucket", "head_object", "get_object", "get_object_tagging", "list_objects_v2"))
_KMS_READ_METHODS = frozenset(("describe_key",))


# --------------------------------------------------------------------------
# Read-only clients
# --------------------------------------------------------------------------


class ReadOnlyClient:
    """Wrap a boto3 client so that only read calls exist on it.

    Anything else (``put_object``, ``delete_object``, ``copy_object``, tagging...)
    raises :class:`AttributeError`: verification cannot change the bucket even by
    mistake. ``get_paginator`` only hands out paginators of allowed operations.
    """

    def __init__(self, client, allowed):
        self._client = client
        self._allowed = frozenset(allowed)

    def __getattr__(self, name):
        if name in self._allowed:
            return getattr(self._client, name)
        raise AttributeError("%s is not a read-only call: verification never writes" % name)

    def get_paginator(self, operation):
        if operation not in self._allowed:
            raise AttributeError("paginator %s is not a read-only call: verification never writes" % operation)
        return self._client.get_paginator(operation)

    @property
    def meta(self):
        return self._client.meta


def read_only_s3(client):
    if client is None or isinstance(client, ReadOnlyClient):
        return client
    return ReadOnlyClient(client, _S3_READ_METHODS)


def read_only_kms(client):
    if client is None or isinstance(client, ReadOnlyClient):
        return client
    return ReadOnlyClient(client, _KMS_READ_METHODS)


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def check_options(params):
    """Option checks that need no network. Returns ``(select, backup_id, kind)`` with defaults filled in.

    ``select`` defaults to ``id`` when ``backup_id`` is set, else ``latest``; ``kind``
    defaults to ``physical`` for ``latest`` and ``any`` otherwise.
    """
    if params.get("deep"):
        raise InvalidValueError(
            "deep=true: %s" % DEEP_UNAVAILABLE,
            hint="Run this module without deep (the S3-only checks); for the restore-based check run "
            "playbooks/verify_backups.yml -e verify_deep=true (or playbooks/dr_drill.yml -e drill=restore).",
        )
    backup_id = params.get("backup_id")
    select = params.get("select") or ("id" if backup_id else "latest")
    if select not in SELECTS:
        raise InvalidValueError("Invalid select %r: expected one of %s" % (select, ", ".join(SELECTS)))
    if select == "id":
        if not backup_id:
            raise InvalidValueError("select=id but backup_id is not set",
                                    hint="Set backup_id (e.g. 20261127T031500.123Z-F), or select latest/all.")
        catalog.parse_backup_id(backup_id)
    elif backup_id:
        raise InvalidValueError(
            "backup_id %s is set but select=%s verifies other backups" % (backup_id, select),
            hint="Drop select (or set select=id) to verify that backup, or drop backup_id.",
        )
    kind = params.get("kind") or ("physical" if select == "latest" else "any")
    if kind not in KINDS:
        raise InvalidValueError("Invalid kind %r: expected one of %s" % (kind, ", ".join(KINDS)))
    if select == "id" and kind != "any" and catalog.parse_backup_id(backup_id)[1] != kind:
        raise InvalidValueError(
            "backup_id %s is a %s backup but kind=%s" % (backup_id, catalog.parse_backup_id(backup_id)[1], kind),
            hint="Drop kind, or fix backup_id (-F ids are physical, -L logical).",
        )
    resolve_prefix(params)
    return select, backup_id, kind


# --------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------


def finding(obj, check, message):
    """One problem: ``obj`` is the S3 key concerned (or None), ``check`` the name of the check."""
    return {"object": obj, "check": check, "message": message}


def _error_code(exc):
    return ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code")


def _not_found(exc):
    return _error_code(exc) in ("404", "NoSuchKey", "NotFound")


def _quote_names(names):
    names = sorted(names)
    text = ", ".join(names[:MAX_NAMES])
    if len(names) > MAX_NAMES:
        text += " and %d more" % (len(names) - MAX_NAMES)
    return text


def _valid_segment_size(size):
    return MIB <= size <= 1024 * MIB and not size & (size - 1)


def manifest_files(data):
    """``{path: size}`` of the ``Files`` of a ``backup_manifest`` (bytes); raises :class:`InvalidValueError`."""
    try:
        manifest = json.loads(bytes(data).decode("utf-8"))
    except ValueError as exc:
        raise InvalidValueError("backup_manifest is not valid JSON: %s" % exc) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("Files"), list):
        raise InvalidValueError("backup_manifest has no Files list")
    files = {}
    for entry in manifest["Files"]:
        path = entry.get("Path") if isinstance(entry, dict) else None
        if path is None and isinstance(entry, dict) and entry.get("Encoded-Path"):
            try:
                path = bytes.fromhex(entry["Encoded-Path"]).decode("utf-8", "surrogateescape")
            except ValueError:
                path = None
        if path is None:
            raise InvalidValueError("backup_manifest has a Files entry without Path: %r" % (entry,))
        files[path] = int(entry.get("Size") or 0)
    return files


def wal_segments(start_wal, stop_wal, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """WAL segment names from ``start_wal`` to ``stop_wal`` inclusive.

    The names after the first are on the timeline of ``stop_wal`` (the backup's timeline).
    """
    start = parse_wal_segment_name(start_wal, wal_segment_size)
    stop = parse_wal_segment_name(stop_wal, wal_segment_size)
    if stop.segno < start.segno:
        raise InvalidValueError("stop_wal %s is before start_wal %s" % (stop_wal, start_wal))
    if stop.segno - start.segno >= MAX_WAL_SEGMENTS:
        raise InvalidValueError("WAL range %s..%s spans more than %d segments" % (start_wal, stop_wal, MAX_WAL_SEGMENTS))
    per_id = 0x100000000 // wal_segment_size
    names = [start_wal]
    for segno in range(start.segno + 1, stop.segno + 1):
        names.append("%08X%08X%08X" % (stop.timeline, segno // per_id, segno % per_id))
    return names


def compare_tar_to_manifest(tar_files, expected):
    """Findings-free comparison: ``(missing, wrong_size, extra)``.

    :param tar_files: ``{name: size}`` of the regular files in the tar (names without ``./``).
    :param expected: ``{path: size}`` from :func:`manifest_files`.
    ``missing``: manifest paths not in the tar; ``wrong_size``: ``[(path, manifest size, tar size)]``;
    ``extra``: tar files neither in the manifest nor exempt (``pg_wal/``, ``backup_manifest``...).
    """
    missing = sorted(p for p in expected if p not in tar_files)
    wrong_size = sorted((p, expected[p], tar_files[p]) for p in expected if p in tar_files and tar_files[p] != expected[p])
    extra = sorted(
        n for n in tar_files
        if n not in expected and n not in MANIFEST_EXEMPT and not n.startswith("pg_wal/")
    )
    return missing, wrong_size, extra


def check_dump_header(data):
    """None when ``data`` (the first bytes of a dump) starts like a ``pg_dump -Fc`` archive, else why not."""
    if len(data) < len(DUMP_MAGIC):
        return "the object is %d bytes long: too short to be a pg_dump archive" % len(data)
    if not data.startswith(DUMP_MAGIC):
        return "does not start with the pg_dump custom-format magic PGDMP (starts with %r)" % bytes(data[:8])
    if len(data) >= 11 and data[10:11] != b"\x01":
        # header: magic, vmaj, vmin, vrev, intSize, offSize, format (1 = custom)
        return "is a pg_dump archive but not in custom format (format byte %d)" % data[10]
    return None


def failure_message(results, bucket):
    """One line naming the failed backups, the objects and what is wrong (first few findings)."""
    failed = [r for r in results if not r["ok"]]
    parts = []
    shown = 0
    for result in failed:
        for item in result["findings"]:
            if shown >= MESSAGE_FINDINGS:
                break
            where = "s3://%s/%s" % (bucket, item["object"]) if item["object"] else "catalog record"
            parts.append("backup %s: %s: %s: %s" % (result["backup_id"], where, item["check"], item["message"]))
            shown += 1
    total = sum(len(r["findings"]) for r in failed)
    more = "; and %d more finding(s)" % (total - shown) if total > shown else ""
    return "Backup verification failed for %d of %d backup(s): %s%s" % (
        len(failed), len(results), "; ".join(parts), more)


# --------------------------------------------------------------------------
# S3 reads
# --------------------------------------------------------------------------


class ObjectReader:
    """Stream one object with ``get_object`` in chunks of ``chunk_size`` bytes.

    ``read(consumer)`` calls ``consumer(chunk)`` for each chunk and returns
    ``(sha256 hex, size)``; errors become :class:`RtxDrError`. Only one chunk is in memory.
    """

    def __init__(self, s3, bucket, key, chunk_size=CHUNK_SIZE):
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.chunk_size = chunk_size

    def read(self, consumer=None, byte_range=None):
        digest = hashlib.sha256()
        size = 0
        args = {"Bucket": self.bucket, "Key": self.key}
        if byte_range:
            args["Range"] = "bytes=%d-%d" % byte_range
        try:
            body = self.s3.get_object(**args)["Body"]
            try:
                while True:
                    chunk = body.read(self.chunk_size)
                    if not chunk:
                        break
                    digest.update(chunk)
                    size += len(chunk)
                    if consumer is not None:
                        consumer(chunk)
            finally:
                body.close()
        except RtxDrError:
            raise
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise error_from_boto(exc, "reading s3://%s/%s" % (self.bucket, self.key)) from None
        return digest.hexdigest(), size


class TarContents:
    """Decompress and observe a base tar as it streams by; keeps member names and sizes only.

    ``feed(compressed_chunk)``, then ``close()`` returns the findings-free facts:
    ``{"files": {name: size}, "captured": {...}, "error": str or None, "summary": {...}}``.
    """

    def __init__(self, method):
        self.decompressor = new_decompressor(method)
        self.observer = TarObserver(keep_members=True)
        self.files = {}
        self.error = None

    def _observe(self, data):
        if data:
            self.observer.feed(data)
            for member in self.observer.members:
                if member["type"] == "file":
                    name = member["name"][2:] if member["name"].startswith("./") else member["name"]
                    self.files[name] = member["size"]
            del self.observer.members[:]

    def feed(self, chunk):
        if self.error is not None:
            return
        view = memoryview(chunk)
        try:
            for pos in range(0, len(view), DECOMPRESS_PIECE):
                self._observe(self.decompressor.decompress(view[pos:pos + DECOMPRESS_PIECE]))
        except TarStreamError as exc:
            self.error = "the decompressed stream is not a valid tar: %s" % exc
        except Exception as exc:  # pylint: disable=broad-exception-caught
            self.error = "cannot decompress: %s: %s" % (type(exc).__name__, exc)

    def close(self):
        if self.error is None:
            try:
                self._observe(self.decompressor.flush())
                self.observer.close()
            except TarStreamError as exc:
                self.error = "the tar stream is incomplete: %s" % exc
            except Exception as exc:  # pylint: disable=broad-exception-caught
                self.error = "cannot decompress: %s: %s" % (type(exc).__name__, exc)
        return {"files": self.files, "captured": dict(self.observer.captured), "error": self.error,
                "summary": self.observer.summary()}


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


class Verifier:
    """Verify backups under ``s3://bucket/prefix`` (read-only).

    :param s3: boto3 S3 client (wrapped in :class:`ReadOnlyClient`).
    :param kms: boto3 KMS client, or a callable returning one (created only when needed), or None.
    :param expected_kms_key_id: alias, key id or ARN every object must be encrypted with; None: the
        record's ``kms_key_arn``.
    :param checksums: recompute the SHA256 of every object.
    :param check_contents: decompress and inspect physical backups, check dump headers.
    :param require_encryption: a record saying ``encryption: none`` is a finding.
    """

    def __init__(self, s3, bucket, prefix, kms=None, expected_kms_key_id=None, checksums=True,
                 check_contents=True, require_encryption=True, chunk_size=CHUNK_SIZE, log=None):
        self.s3 = read_only_s3(s3)
        self.bucket = bucket
        self.prefix = catalog.normalize_prefix(prefix)
        self._kms = kms
        self.expected_kms_key_id = expected_kms_key_id
        self.expected_kms_arn = None
        self.checksums = checksums
        self.check_contents = check_contents
        self.require_encryption = require_encryption
        self.chunk_size = chunk_size
        self.log = log or (lambda msg: None)
        self._arns = {}

    # -- KMS ---------------------------------------------------------------------
    @property
    def kms(self):
        if self._kms is not None and not hasattr(self._kms, "describe_key"):
            self._kms = self._kms()  # a factory
        self._kms = read_only_kms(self._kms)
        return self._kms

    def key_arn(self, key_id, option=None):
        """ARN of KMS key ``key_id`` (alias, id or ARN) via ``describe_key``; cached."""
        if key_id in self._arns:
            return self._arns[key_id]
        if self.kms is None:
            raise RtxDrError("Cannot resolve KMS key %s to its ARN: no KMS client was given" % key_id)
        what = "KMS key %s%s" % (key_id, " (option %s)" % option if option else "")
        arn = describe_kms_key(self.kms, key_id, what, "Check the key (alias/<name>, key id or ARN) and region.")["Arn"]
        self._arns[key_id] = arn
        self._arns[arn] = arn
        return arn

    def resolve_expected_key(self):
        """Resolve ``expected_kms_key_id`` to its ARN (once, before any backup is read)."""
        if self.expected_kms_key_id:
            self.expected_kms_arn = self.key_arn(self.expected_kms_key_id, "expected_kms_key_id")
        return self.expected_kms_arn

    def _same_key(self, actual, expected_arn):
        """``(same, actual ARN or None, error or None)``."""
        if actual == expected_arn:
            return True, actual, None
        if actual.startswith("arn:") and ":key/" in actual:
            return False, actual, None
        try:
            arn = self.key_arn(actual)
        except RtxDrError as exc:
            return False, None, str(exc)
        return arn == expected_arn, arn, None

    # -- selection ---------------------------------------------------------------
    def read_record(self, backup_id):
        """``(record or None, findings, bytes read)`` of ``<prefix>/catalog/<backup_id>.json``."""
        key = catalog.catalog_key(self.prefix, backup_id)
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=key)
            body = response["Body"].read()
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if _not_found(exc):
                return None, [], 0
            raise error_from_boto(exc, "reading the catalog record s3://%s/%s" % (self.bucket, key)) from None
        findings = []
        try:
            record = json.loads(body.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            return {"backup_id": backup_id, "_invalid": True}, [
                finding(key, "record", "the catalog record is not valid JSON: %s" % exc)], len(body)
        stored = (response.get("Metadata") or {}).get("sha256")
        actual = hashlib.sha256(body).hexdigest()
        if stored and stored != actual:
            findings.append(finding(key, "record_checksum", "the catalog record's sha256 metadata %s does not match "
                                    "its content (%s): the record was changed after it was written" % (stored, actual)))
        if record.get("backup_id") != backup_id:
            findings.append(finding(key, "record", "the record says backup_id %r but is stored as %s"
                                    % (record.get("backup_id"), backup_id)))
        if record.get("encryption") == "aws:kms" and response.get("ServerSideEncryption") != "aws:kms":
            findings.append(finding(key, "encryption", "the catalog record is not encrypted with SSE-KMS "
                                    "(ServerSideEncryption %s)" % response.get("ServerSideEncryption")))
        return record, findings, len(body)

    def select(self, select="latest", backup_id=None, kind=None):
        """Backups to verify: list of ``(backup_id, record, findings, bytes)``; also returns the skipped ones.

        Returns ``(selected, skipped)``; ``skipped`` lists ``{"backup_id", "status"}`` of records
        that ``latest``/``all`` passed over because they are not complete.
        :raises RtxDrError: nothing to verify.
        """
        where = "s3://%s/%s" % (self.bucket, catalog.catalog_prefix(self.prefix))
        if select == "id":
            record, findings, size = self.read_record(backup_id)
            if record is None:
                raise RtxDrError(
                    "backup_id %s has no catalog record at %s%s.json" % (backup_id, where, backup_id),
                    hint="List the catalog (<prefix>/catalog/) for the ids there; check prefix/cluster_name and bucket.",
                    details={"backup_id": backup_id, "bucket": self.bucket, "prefix": self.prefix},
                )
            return [(backup_id, record, findings, size)], []
        wanted = None if kind in (None, "any") else kind
        ids = catalog.list_backup_ids(self.s3, self.bucket, self.prefix, kind=wanted)
        selected = []
        skipped = []
        for candidate in ids:
            record, findings, size = self.read_record(candidate)
            if record is None:
                continue
            if record.get("status") != "complete":
                skipped.append({"backup_id": candidate, "status": record.get("status")})
                continue
            selected.append((candidate, record, findings, size))
            if select == "latest":
                break
        if not selected:
            raise RtxDrError(
                "No complete %sbackup found under %s (%d record(s) there, %d not complete)"
                % ("" if wanted is None else wanted + " ", where, len(ids), len(skipped)),
                hint="Check bucket and prefix (or cluster_name: the default prefix is pgbackup/<cluster_name>) "
                "and kind; take a backup with rtx.dr.pg_basebackup first.",
                details={"bucket": self.bucket, "prefix": self.prefix, "skipped": skipped},
            )
        return selected, skipped

    # -- one backup ----------------------------------------------------------------
    def verify(self, backup_id, record, findings=None, bytes_read=0):
        """Check one backup; returns ``{backup_id, kind, status, ok, findings, objects_checked, bytes_read,
        seconds, checks, wal}``."""
        started = time.monotonic()
        state = {
            "backup_id": backup_id,
            "kind": record.get("kind") or catalog.parse_backup_id(backup_id)[1],
            "status": record.get("status"),
            "findings": list(findings or ()),
            "objects_checked": 0,
            "bytes_read": bytes_read,
            "checks": [],
            "wal": None,
        }
        self.log("verifying backup %s" % backup_id)
        if self._check_record(state, record):
            if state["kind"] == "physical":
                self._verify_physical(state, record)
            else:
                self._verify_logical(state, record)
        state["ok"] = not state["findings"]
        state["seconds"] = round(time.monotonic() - started, 3)
        return state

    def _add(self, state, obj, check, message):
        state["findings"].append(finding(obj, check, message))

    def _mark(self, state, check):
        if check not in state["checks"]:
            state["checks"].append(check)

    def _check_record(self, state, record):
        """Record-level checks; False when the objects cannot be checked against it."""
        key = catalog.catalog_key(self.prefix, state["backup_id"])
        self._mark(state, "record")
        if record.get("_invalid"):
            return False
        if record.get("status") != "complete":
            self._add(state, key, "record_status", "backup %s is %s, not complete: it cannot be used for a restore"
                      % (state["backup_id"], record.get("status")))
            return False
        if record.get("format_version") not in KNOWN_FORMAT_VERSIONS:
            self._add(state, key, "record_format", "unknown catalog format_version %r (this collection reads %s)"
                      % (record.get("format_version"), ", ".join(str(v) for v in KNOWN_FORMAT_VERSIONS)))
            return False
        if not record.get("objects"):
            self._add(state, key, "record", "the complete record lists no objects")
            return False
        encryption = record.get("encryption")
        if encryption == "none" and self.require_encryption:
            self._add(state, None, "encryption", "backup %s was stored without SSE-KMS (encryption none) and "
                      "require_encryption is true" % state["backup_id"])
        if encryption == "aws:kms" and not (self.expected_kms_arn or record.get("kms_key_arn")):
            self._add(state, key, "kms_key", "the record has no kms_key_arn to compare the objects' key with; "
                      "set expected_kms_key_id")
        return True

    def _expected_arn(self, record):
        if self.expected_kms_arn:
            return self.expected_kms_arn, "option expected_kms_key_id"
        return record.get("kms_key_arn"), "the catalog record"

    def _head(self, state, record, obj):
        """Existence, size, encryption and metadata checks of one object; its head or None when missing."""
        key = obj.get("key")
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if _not_found(exc):
                self._add(state, key, "exists", "object is missing (recorded size %s)" % obj.get("size"))
                return None
            if _error_code(exc) in ("403", "AccessDenied"):
                self._add(state, key, "read", "access to the object is denied: %s" % exc)
                return None
            raise error_from_boto(exc, "reading the metadata of s3://%s/%s" % (self.bucket, key)) from None
        state["objects_checked"] += 1
        self._mark(state, "exists")
        self._mark(state, "size")
        if head.get("ContentLength") != obj.get("size"):
            self._add(state, key, "size", "object is %s bytes but the record says %s"
                      % (head.get("ContentLength"), obj.get("size")))
        if record.get("encryption") == "aws:kms":
            self._mark(state, "encryption")
            if head.get("ServerSideEncryption") != "aws:kms":
                self._add(state, key, "encryption", "object is not encrypted with SSE-KMS (ServerSideEncryption %s)"
                          % head.get("ServerSideEncryption"))
            else:
                expected, source = self._expected_arn(record)
                actual = head.get("SSEKMSKeyId")
                if expected and actual:
                    same, actual_arn, error = self._same_key(actual, expected)
                    if error:
                        self._add(state, key, "kms_key", "cannot resolve the object's KMS key %s: %s" % (actual, error))
                    elif not same:
                        self._add(state, key, "kms_key", "object is encrypted with the wrong KMS key %s; expected %s "
                                  "(from %s)" % (actual_arn or actual, expected, source))
                elif expected:
                    self._add(state, key, "kms_key", "object reports no SSEKMSKeyId; expected %s" % expected)
        self._mark(state, "metadata_sha256")
        try:
            stored = stored_sha256(self.s3, self.bucket, key, head)
        except RtxDrError as exc:
            self._add(state, key, "metadata_sha256", "cannot read the object's sha256 tag: %s" % exc.msg)
        else:
            if stored != obj.get("sha256"):
                self._add(state, key, "metadata_sha256", "the object's sha256 (metadata or tag) %s does not match "
                          "the record's %s" % (stored, obj.get("sha256")))
        return head

    def _read(self, state, obj, consumer=None, byte_range=None, check_digest=True):
        """Stream an object; check its recomputed SHA256 (whole reads, ``check_digest``). Returns the size read,
        or None when it could not be read."""
        key = obj["key"]
        try:
            digest, size = ObjectReader(self.s3, self.bucket, key, self.chunk_size).read(consumer, byte_range)
        except RtxDrError as exc:
            self._add(state, key, "read", "cannot read the object: %s" % exc.msg)
            return None
        state["bytes_read"] += size
        if byte_range is None and check_digest:
            self._mark(state, "checksum")
            if digest != obj.get("sha256"):
                self._add(state, key, "checksum", "checksum mismatch: recomputed SHA256 %s, the record says %s "
                          "(%d bytes read)" % (digest, obj.get("sha256"), size))
        return size

    def _verify_logical(self, state, record):
        for obj in record["objects"]:
            if self._head(state, record, obj) is None:
                continue
            first = bytearray()

            def keep_head(chunk, first=first):
                if len(first) < 16:
                    first.extend(chunk[:16 - len(first)])

            if self.checksums:
                if self._read(state, obj, keep_head) is None:
                    continue
            elif self.check_contents:
                if self._read(state, obj, keep_head, byte_range=(0, 15)) is None:
                    continue
            if self.check_contents:
                self._mark(state, "dump_format")
                problem = check_dump_header(bytes(first))
                if problem:
                    self._add(state, obj["key"], "dump_format", "dump of database %s %s"
                              % (obj.get("database"), problem))

    def _verify_physical(self, state, record):
        objects = {o.get("role"): o for o in record["objects"]}
        base = objects.get("base")
        manifest_obj = objects.get("manifest")
        record_key = catalog.catalog_key(self.prefix, state["backup_id"])
        for role, obj in (("base", base), ("manifest", manifest_obj)):
            if obj is None:
                self._add(state, record_key, "record", "the record lists no %s object" % role)
        manifest_bytes = None
        if manifest_obj is not None and self._head(state, record, manifest_obj) is not None:
            manifest_bytes = self._read_manifest(state, manifest_obj)
            if manifest_bytes is not None:
                self._check_manifest(state, record, manifest_obj["key"], manifest_bytes)
        if base is None or self._head(state, record, base) is None:
            return
        method = (record.get("compression") or {}).get("method") or "none"
        contents = None
        if self.check_contents:
            if method not in METHODS:
                self._add(state, base["key"], "contents", "unknown compression %r in the record" % method)
            else:
                try:
                    contents = TarContents(method)
                except RtxDrError as exc:
                    self._add(state, base["key"], "contents", "cannot decompress %s: %s" % (method, exc.msg))
        if not self.checksums and contents is None:
            return
        if self._read(state, base, contents.feed if contents else None, check_digest=self.checksums) is None \
                or contents is None:
            return
        self._check_contents(state, record, base["key"], contents.close(), manifest_bytes)

    def _read_manifest(self, state, obj):
        if (obj.get("size") or 0) > MAX_MANIFEST_BYTES:
            self._add(state, obj["key"], "manifest", "backup_manifest is %s bytes, more than this module reads"
                      % obj.get("size"))
            return None
        parts = []
        if self._read(state, obj, parts.append, check_digest=self.checksums) is None:
            return None
        return b"".join(parts)

    def _check_manifest(self, state, record, key, data):
        self._mark(state, "manifest")
        try:
            ok, expected, actual = manifest_checksum_ok(data)
        except (ValueError, UnicodeDecodeError) as exc:
            self._add(state, key, "manifest", "backup_manifest is not valid JSON: %s" % exc)
            return
        if not ok:
            self._add(state, key, "manifest", "backup_manifest's own Manifest-Checksum %s does not match its content "
                      "(%s): the manifest is damaged" % (expected, actual))
        summary = record.get("manifest") or {}
        if summary.get("manifest_sha256") and summary["manifest_sha256"] != expected:
            self._add(state, key, "manifest", "Manifest-Checksum %s differs from the record's manifest_sha256 %s"
                      % (expected, summary["manifest_sha256"]))
        try:
            files = manifest_files(data)
        except InvalidValueError as exc:
            self._add(state, key, "manifest", str(exc))
            return
        total = sum(files.values())
        if summary.get("files") is not None and summary["files"] != len(files):
            self._add(state, key, "manifest", "backup_manifest lists %d files but the record says %s"
                      % (len(files), summary["files"]))
        if summary.get("total_size") is not None and summary["total_size"] != total:
            self._add(state, key, "manifest", "backup_manifest totals %d bytes but the record says %s"
                      % (total, summary["total_size"]))

    def _check_contents(self, state, record, key, facts, manifest_bytes):
        self._mark(state, "contents")
        if facts["error"]:
            self._add(state, key, "contents", facts["error"])
            return
        captured = facts["captured"]
        tar_manifest = captured.get("backup_manifest")
        source = "the backup_manifest object"
        if tar_manifest is None:
            self._add(state, key, "contents", "the tar has no backup_manifest member")
        elif manifest_bytes is not None and hashlib.sha256(tar_manifest).digest() != hashlib.sha256(
                manifest_bytes).digest():
            self._add(state, key, "contents", "the backup_manifest inside the tar differs from the backup_manifest "
                      "object")
        if manifest_bytes is None:
            manifest_bytes, source = tar_manifest, "the backup_manifest inside the tar"
        if "backup_label" in captured:
            try:
                label = parse_backup_label(captured["backup_label"])
                if record.get("start_wal") and label["start_wal"] != record["start_wal"]:
                    self._add(state, key, "contents", "backup_label says start WAL %s but the record says %s"
                              % (label["start_wal"], record["start_wal"]))
            except RtxDrError as exc:
                self._add(state, key, "contents", "backup_label is not readable: %s" % exc.msg)
        else:
            self._add(state, key, "contents", "the tar has no backup_label member")
        files = facts["files"]
        if manifest_bytes is not None:
            try:
                expected = manifest_files(manifest_bytes)
            except InvalidValueError:
                expected = None  # reported by the manifest check
            if expected is not None:
                missing, wrong, extra = compare_tar_to_manifest(files, expected)
                if missing:
                    self._add(state, key, "contents", "%d file(s) listed in %s are missing from the tar: %s"
                              % (len(missing), source, _quote_names(missing)))
                if wrong:
                    self._add(state, key, "contents", "%d file(s) have another size in the tar than in %s: %s"
                              % (len(wrong), source, _quote_names("%s (%d != %d)" % (p, m, t) for p, m, t in wrong)))
                if extra:
                    self._add(state, key, "contents", "%d data file(s) in the tar are not in %s: %s"
                              % (len(extra), source, _quote_names(extra)))
        self._check_wal(state, record, key, files)

    def _check_wal(self, state, record, key, tar_files):
        start, stop = record.get("start_wal"), record.get("stop_wal")
        if not (start and stop):
            self._add(state, catalog.catalog_key(self.prefix, state["backup_id"]), "wal",
                      "the record has no start_wal/stop_wal: cannot tell which WAL the backup needs")
            return
        self._mark(state, "wal")
        in_tar = {n[len("pg_wal/"):]: s for n, s in tar_files.items() if n.startswith("pg_wal/")}
        segment_size = next((s for n, s in sorted(in_tar.items()) if is_wal_segment_name(n) and _valid_segment_size(s)),
                            None)
        try:
            needed = wal_segments(start, stop, segment_size or DEFAULT_WAL_SEGMENT_SIZE)
        except InvalidValueError as exc:
            self._add(state, key, "wal", "cannot compute the WAL range of the backup: %s" % exc)
            return
        if record.get("wal_included"):
            missing = [s for s in needed if s not in in_tar]
            where, obj = "pg_wal/ of the tar", key
        else:
            found = find_archived_wal(self.s3, self.bucket, self.prefix, needed)
            missing = [s for s in needed if s not in found]
            where, obj = "the WAL archive s3://%s/%s" % (self.bucket, wal_prefix(self.prefix)), None
        state["wal"] = {"needed": len(needed), "found": len(needed) - len(missing), "where": where,
                        "start_wal": start, "stop_wal": stop}
        if missing:
            self._add(state, obj, "wal", "%d WAL segment(s) the backup needs (%s..%s, timeline %s) are missing from "
                      "%s: %s" % (len(missing), start, stop, record.get("timeline"), where, _quote_names(missing)))


_WAL_SEGMENT_SUFFIXES = frozenset(EXTENSIONS.values())


def find_archived_wal(s3, bucket, prefix, segments):
    """Which of ``segments`` are in the WAL archive: ``{segment: key}``.

    A segment is found as ``<prefix>/wal/<timeline>/<segment>[.ext]``: the base name is the
    segment name alone or followed by a compression extension (``.zst``, ``.lz4``, ``.gz``).
    A ``.partial`` segment or a ``.backup`` history file of the same name does not count.
    One listing of the archive prefix; only matches are kept.
    """
    wanted = set(segments)
    found = {}
    start = wal_prefix(prefix)
    for item in list_objects(s3, bucket, start, "listing the WAL archive"):
        name = item["Key"].rsplit("/", 1)[-1]
        base, suffix = name[:24], name[24:]
        if base in wanted and base not in found and suffix in _WAL_SEGMENT_SUFFIXES:
            found[base] = item["Key"]
    return found


def verify_backups(params, s3, kms=None, log=None):
    """Select and verify backups according to the module options; the module's result (without ``changed``).

    ``failed_count`` > 0 means findings: the caller reports them (see :func:`failure_message`).
    :raises RtxDrError: bad options, unreachable endpoint, missing bucket, nothing to verify.
    """
    select, backup_id, kind = check_options(params)
    prefix = resolve_prefix(params)
    bucket = params["bucket"]
    verifier = Verifier(
        s3, bucket, prefix, kms=kms, expected_kms_key_id=params.get("expected_kms_key_id"),
        checksums=params.get("checksums", True) is not False,
        check_contents=params.get("check_contents", True) is not False,
        require_encryption=params.get("require_encryption", True) is not False,
        log=log,
    )
    catalog.check_bucket(verifier.s3, bucket, params.get("endpoint_url"), missing_note=": there is nothing to verify")
    verifier.resolve_expected_key()
    selected, skipped = verifier.select(select, backup_id, kind)
    results = [verifier.verify(*item) for item in selected]
    failed = sum(1 for r in results if not r["ok"])
    return {
        "bucket": bucket,
        "prefix": prefix,
        "select": select,
        "kind": kind,
        "expected_kms_key_arn": verifier.expected_kms_arn,
        "backups": results,
        "skipped": skipped,
        "verified": len(results) - failed,
        "failed_count": failed,
    }


VERIFICATION_INSERT = (
    "INSERT INTO {schema}.verification_history (backup_id, kind, verified_at, status, findings, objects_checked,"
    " bytes_read, duration_seconds, deep, storage_uri, host, details) VALUES (%(backup_id)s, %(kind)s, now(),"
    " %(status)s, %(findings)s, %(objects_checked)s, %(bytes_read)s, %(duration_seconds)s, %(deep)s,"
    " %(storage_uri)s, %(host)s, %(details)s::jsonb)")


def verification_rows(result, host=None):
    """Rows for ``verification_history`` from the result of :func:`verify_backups`."""
    rows = []
    for item in result.get("backups") or []:
        rows.append({
            "backup_id": item["backup_id"], "kind": item.get("kind"),
            "status": "passed" if item.get("ok") else "failed", "findings": len(item.get("findings") or []),
            "objects_checked": item.get("objects_checked"), "bytes_read": item.get("bytes_read"),
            "duration_seconds": item.get("seconds"), "deep": False,
            "storage_uri": "s3://%s/%s" % (result.get("bucket"), result.get("prefix")), "host": host,
            "details": json.dumps({"findings": item.get("findings") or [], "checks": item.get("checks") or [],
                                   "wal": item.get("wal")}, default=str),
        })
    return rows


def record_verifications(params, result, host=None, connect=None):
    """Write :func:`verification_rows` to ``<audit_schema>.verification_history``; never fails the verification.

    Returns ``{'written', 'rows', 'reason', 'database', 'schema'}``.
    """
    from ansible_collections.rtx.dr.plugins.module_utils import postgres  # pylint: disable=import-outside-toplevel

    connect = connect or postgres.connect
    database = params.get("audit_db") or "rtx"
    schema = params.get("audit_schema") or "dr"
    outcome = {"written": False, "rows": 0, "reason": None, "database": database, "schema": schema}
    rows = verification_rows(result, host)
    if not rows:
        outcome["reason"] = "no backup was verified"
        return outcome
    try:
        sql = VERIFICATION_INSERT.format(schema=postgres.quote_ident(schema, "audit_schema"))
    except RtxDrError as exc:
        outcome["reason"] = str(exc)
        return outcome
    written = postgres.insert_rows(connect, dict(params, login_db=database), sql, rows)
    outcome.update(written=written["written"], rows=written["rows"], reason=written["reason"])
    return outcome

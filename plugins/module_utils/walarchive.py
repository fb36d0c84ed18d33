# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Continuous WAL archiving to S3: push one WAL file (``archive_command``), fetch one (``restore_command``).

:func:`push` uploads the file PostgreSQL names with ``%p``; :func:`fetch` downloads
the file named ``%f`` to ``%p``. The host-side command line is ``wal_agent.py``;
modules and playbooks call these functions directly.

Key layout under a backup prefix (the same ``<prefix>`` as the backups, see
``catalog.py``)::

    <prefix>/wal/<TLI>/<segment><ext>                 000000010000000A000000FE.zst
    <prefix>/wal/<TLI>/<segment>.partial<ext>         last, partial segment of a timeline left by a promotion
    <prefix>/wal/<TLI>/<segment>.<offset>.backup      backup history file (never compressed)
    <prefix>/wal/<TLI>.history                        timeline history file (never compressed)

``<TLI>`` is the timeline as PostgreSQL writes it in file names (8 upper case hex
digits, the first 8 of the file name); ``<ext>`` is the compression's suffix
(``.zst``, ``.lz4``, ``.gz``, or nothing for ``none``). Segments are grouped by
timeline so that one timeline can be listed on its own; the history files sit
directly under ``wal/`` so that one delimited listing of ``<prefix>/wal/`` returns
every history file and every timeline. This is what the existing readers expect:
``verify.find_archived_wal`` finds ``<prefix>/wal/<timeline>/<segment>[.ext]``, and
``retention.wal_key_deletable`` deletes by base name (segment name + ``.`` suffix)
and keeps ``*.history``. History and backup history files are small text files
and stay uncompressed, so that their base names end in ``.history``/``.backup``.

Object metadata (every object is SSE-KMS encrypted with ``kms_key_id`` unless
``encryption: none`` is given explicitly, as for the backups):

- ``sha256``: SHA256 of the stored object bytes, the same meaning as on the backup
  objects (``s3stream.StreamUploader``), so any object of the bucket can be checked
  without knowing its format;
- ``raw-sha256`` and ``raw-size``: SHA256 and size of the file as PostgreSQL wrote
  it (before compression); this is what makes two pushes "the same content";
- ``compression``: the method (also told by the key's suffix).

A push is idempotent: when the name is already archived (under any compression
suffix) with the same ``raw-sha256``, nothing is uploaded and the push succeeds;
with a different content a :class:`WalConflictError` is raised and the archived
object is never overwritten (where the client's botocore supports it the upload
itself is a conditional ``If-None-Match: *`` PUT, so a concurrent push of the same
name cannot overwrite either; with an older botocore, e.g. Debian bookworm's 1.29,
the listing before the upload is the guard, see :func:`client_knows_if_none_match`). A fetch checks
both checksums and writes the file atomically; a name that is not archived raises
:class:`WalNotFoundError`, which PostgreSQL's ``restore_command`` must turn into a
quiet non-zero exit (it asks for files that do not exist, e.g. the next timeline's
history file).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time

from ansible_collections.rtx.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.aws import describe_kms_key
from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.aws import list_objects
from ansible_collections.rtx.dr.plugins.module_utils.catalog import resolve_prefix
from ansible_collections.rtx.dr.plugins.module_utils.catalog import wal_prefix
from ansible_collections.rtx.dr.plugins.module_utils.compress import EXTENSIONS
from ansible_collections.rtx.dr.plugins.module_utils.compress import check_compression
from ansible_collections.rtx.dr.plugins.module_utils.compress import load_library
from ansible_collections.rtx.dr.plugins.module_utils.compress import new_compressor
from ansible_collections.rtx.dr.plugins.module_utils.compress import new_decompressor
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import DEFAULT_WAL_SEGMENT_SIZE
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import MIB
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import StreamUploader
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import sse_args as make_sse_args
from ansible_collections.rtx.dr.plugins.module_utils.walspool import file_sha256

#: Where a fetch looks, in order (``fetch_order``); the ``*_first`` orders fall back to the other bucket.
FETCH_ORDERS = {
    "primary_first": ("primary", "replica"),
    "replica_first": ("replica", "primary"),
    "primary_only": ("primary",),
    "replica_only": ("replica",),
}
#: The options that describe the replica (not used by the primary push/fetch themselves).
REPLICA_OPTIONS = ("replica_bucket", "replica_region", "replica_endpoint_url", "replica_kms_key_id", "replica_mode",
                   "fetch_order")

# The options of WAL archiving beyond the aws common ones (module and wal_agent.py).
WAL_OPTIONS = dict(
    bucket=dict(type="str", required=True),
    prefix=dict(type="str"),
    cluster_name=dict(type="str"),
    compression=dict(type="str", default="auto", choices=["auto", "zstd", "gzip", "lz4", "none"]),
    compression_level=dict(type="int"),
    encryption=dict(type="str", default="aws:kms", choices=["aws:kms", "none"]),
    kms_key_id=dict(type="str"),
    wal_segment_size=dict(type="int", default=DEFAULT_WAL_SEGMENT_SIZE),
    # Cross-region copy (docs/cross_region.md): every push also goes to the replica bucket.
    replica_bucket=dict(type="str"),
    replica_region=dict(type="str"),
    replica_endpoint_url=dict(type="str"),
    replica_kms_key_id=dict(type="str"),
    replica_mode=dict(type="str", default="sync", choices=["sync", "async"]),
    fetch_order=dict(type="str", default="primary_first", choices=list(FETCH_ORDERS)),
)


def wal_argument_spec():
    """aws common options + :data:`WAL_OPTIONS`."""
    spec = aws_common_argument_spec()
    spec.update({name: dict(option) for name, option in WAL_OPTIONS.items()})
    return spec


CHUNK_SIZE = MIB
#: Files up to this size are compressed in memory and sent with one conditional PUT;
#: bigger ones (only with wal_segment_size >= 128 MiB) are streamed in parts.
SINGLE_PUT_MAX = 64 * MIB
#: Order in which ``compression: auto`` picks a method.
AUTO_ORDER = ("zstd", "lz4", "gzip")

SEGMENT = "segment"
PARTIAL = "partial"
BACKUP = "backup"
HISTORY = "history"

_NAME_RES = (
    (SEGMENT, re.compile(r"^([0-9A-F]{8})[0-9A-F]{16}$")),
    (PARTIAL, re.compile(r"^([0-9A-F]{8})[0-9A-F]{16}\.partial$")),
    (BACKUP, re.compile(r"^([0-9A-F]{8})[0-9A-F]{16}\.[0-9A-F]{8}\.backup$")),
    (HISTORY, re.compile(r"^([0-9A-F]{8})\.history$")),
)

_MISSING_CODES = ("NoSuchKey", "404", "NotFound")
_CONDITION_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
_UNSUPPORTED_CODES = ("NotImplemented", "501")


class WalNotFoundError(RtxDrError):
    """The WAL file asked for is not in the archive (normal for a restore_command: see :func:`fetch`)."""


class WalConflictError(RtxDrError):
    """The name is already archived with a different content; nothing was overwritten."""


class WalChecksumError(RtxDrError):
    """An archived object does not match its checksums (damaged or replaced object)."""


# --------------------------------------------------------------------------
# Names and keys
# --------------------------------------------------------------------------


def wal_file_kind(name, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """``segment``, ``partial``, ``backup`` or ``history`` for a file name PostgreSQL archives.

    :raises InvalidValueError: anything else (including timeline 0 and, for segment
        names, a segment number too large for ``wal_segment_size``).
    """
    for kind, regex in _NAME_RES:
        match = regex.match(name) if isinstance(name, str) else None
        if match:
            if int(match.group(1), 16) == 0:
                raise InvalidValueError("Invalid WAL file name %r: timeline 0 does not exist" % (name,))
            if kind != HISTORY:
                parse_wal_segment_name(name[:24], wal_segment_size)
            return kind
    raise InvalidValueError(
        "Invalid WAL file name %r: expected a WAL segment (24 upper case hex digits), <segment>.partial, "
        "<segment>.<offset>.backup or <timeline>.history" % (name,),
        hint="Pass PostgreSQL's %p (archive_command) or %f (restore_command) unchanged.",
    )


def wal_base_key(prefix, name, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """Key of WAL file ``name`` without the compression suffix (see the module docstring)."""
    if wal_file_kind(name, wal_segment_size) == HISTORY:
        return wal_prefix(prefix) + name
    return wal_prefix(prefix) + name[:8] + "/" + name


def compressible(kind):
    """Segments and partial segments are compressed; history and backup history files never."""
    return kind in (SEGMENT, PARTIAL)


def method_of_key(base_key, key):
    """The compression method told by ``key``'s suffix after ``base_key``, or None when not a variant."""
    if not key.startswith(base_key):
        return None
    suffix = key[len(base_key):]
    for method, ext in EXTENSIONS.items():
        if suffix == ext:
            return method
    return None


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def resolve_compression(method, level=None):
    """``check_compression()`` settings; ``auto`` is the first of zstd, lz4, gzip whose library loads."""
    if method in (None, "auto"):
        for candidate in AUTO_ORDER:
            try:
                load_library(candidate)
            except MissingLibraryError:
                continue
            return check_compression(candidate, level if candidate == AUTO_ORDER[0] else None)
    settings = check_compression(method, level)
    load_library(settings["method"])
    return settings


def check_options(params, upload=True):
    """Validate the options before anything is contacted; return the settings used by push/fetch.

    ``{"bucket", "prefix", "compression": {...}, "encryption", "kms_key_id", "sse", "wal_segment_size"}``.
    The encryption options are only checked for an ``upload`` (a fetch needs no key).
    """
    bucket = params.get("bucket")
    if not bucket:
        raise InvalidValueError("Option bucket is required: the bucket the WAL is archived to",
                                hint="Set bucket (the backups' bucket).")
    prefix = resolve_prefix(params)
    size = params.get("wal_segment_size")
    size = DEFAULT_WAL_SEGMENT_SIZE if size is None else size
    parse_wal_segment_name("000000010000000000000001", size)  # validates the size
    encryption = params.get("encryption") or "aws:kms"
    # Refuses aws:kms without a key: storing WAL unencrypted takes an explicit 'encryption: none'.
    sse = make_sse_args(encryption, params.get("kms_key_id")) if upload else {}
    replica_params(params, upload=upload)  # replica errors before anything is contacted too
    return {
        "bucket": bucket,
        "prefix": prefix,
        "compression": resolve_compression(params.get("compression"), params.get("compression_level")),
        "encryption": encryption,
        "kms_key_id": params.get("kms_key_id") if sse else None,
        "sse": sse,
        "wal_segment_size": size,
    }


def replica_params(params, upload=True):
    """The options of the replica archive (the same options with the replica's bucket, region, endpoint and key),
    or None when ``replica_bucket`` is not set.

    ``replica_region`` defaults to ``region``, ``replica_endpoint_url`` to ``endpoint_url``; with
    ``encryption: aws:kms`` an ``upload`` needs ``replica_kms_key_id`` (the key of the replica's region: a KMS key
    never leaves its region).
    """
    bucket = params.get("replica_bucket")
    if not bucket:
        return None
    region = params.get("replica_region") or params.get("region")
    endpoint = params.get("replica_endpoint_url") or params.get("endpoint_url")
    if bucket == params.get("bucket") and region == params.get("region") and endpoint == params.get("endpoint_url"):
        raise InvalidValueError(
            "replica_bucket %s is the primary bucket itself (same region and endpoint): the replica would hold "
            "nothing the primary does not" % bucket,
            hint="Set replica_bucket to the bucket in the second region (rtx_dr_backup_replica_bucket), or leave "
            "it unset.")
    encryption = params.get("encryption") or "aws:kms"
    if upload and encryption == "aws:kms" and not params.get("replica_kms_key_id"):
        raise InvalidValueError(
            "replica_bucket is set but replica_kms_key_id is not: the copies in %s must be encrypted with the KMS "
            "key of the replica's region" % bucket,
            hint="Set replica_kms_key_id (alias/<name>, key id or ARN of the key in replica_region; the "
            "rtx.dr.s3_storage role creates it with the same alias in every region).")
    replica = dict(params)
    replica.update(bucket=bucket, region=region, endpoint_url=endpoint, kms_key_id=params.get("replica_kms_key_id"))
    for name in REPLICA_OPTIONS:
        replica[name] = None
    return replica


_KMS_ARNS = {}


def kms_key_arn(kms, key_id, scope=None):
    """The ARN of KMS key ``key_id``: itself when it is an ARN, else ``describe_key`` (cached per process).

    The bucket policy of ``rtx.dr.s3_storage`` compares the SSE-KMS header with the key ARN,
    so an alias must be resolved first. ``kms`` is a client or a factory returning one.
    """
    if key_id.startswith("arn:") and ":key/" in key_id:
        return key_id
    # The same alias names another key in every region: the cache is per (region/endpoint) scope.
    cached = (scope, key_id)
    if cached in _KMS_ARNS:
        return _KMS_ARNS[cached]
    if kms is not None and not hasattr(kms, "describe_key"):
        kms = kms()
    if kms is None:
        return key_id  # no KMS client: S3 resolves the alias itself (fine without a pinned-key policy)
    arn = describe_kms_key(kms, key_id, "KMS key %s (option kms_key_id)" % key_id,
                           "Check kms_key_id (alias/<name>, key id or ARN) and region.")["Arn"]
    _KMS_ARNS[cached] = arn
    return arn


# --------------------------------------------------------------------------
# S3 helpers
# --------------------------------------------------------------------------


def _code(exc):
    return ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code")


def _url(bucket, key):
    return "s3://%s/%s" % (bucket, key)


def archived_variants(s3, bucket, base_key):
    """Keys of ``base_key`` with any compression suffix that exist, as ``{key: method}`` (one listing)."""
    found = {}
    for item in list_objects(s3, bucket, base_key, "listing the WAL archive at"):
        method = method_of_key(base_key, item["Key"])
        if method is not None:
            found[item["Key"]] = method
    return found


class _Sink:
    """Hashes what is downloaded (stored bytes), decompresses it, hashes and optionally writes the result."""

    def __init__(self, method, handle=None):
        self.stored = hashlib.sha256()
        self.raw = hashlib.sha256()
        self.stored_size = 0
        self.raw_size = 0
        self.handle = handle
        self.decompressor = new_decompressor(method)

    def _out(self, data):
        if data:
            self.raw.update(data)
            self.raw_size += len(data)
            if self.handle is not None:
                self.handle.write(data)

    def write(self, chunk):
        self.stored.update(chunk)
        self.stored_size += len(chunk)
        self._out(self.decompressor.decompress(chunk))

    def close(self):
        self._out(self.decompressor.flush())


def _download(s3, bucket, key, method, handle=None, response=None):
    """Stream ``key`` through a :class:`_Sink`; return ``(sink, metadata)``.

    ``response`` is an already made ``get_object`` response. A missing key raises
    :class:`WalNotFoundError`; undecodable data :class:`WalChecksumError`.
    """
    where = _url(bucket, key)
    try:
        if response is None:
            response = s3.get_object(Bucket=bucket, Key=key)
        body = response["Body"]
    except Exception as exc:  # pylint: disable=broad-exception-caught
        if _code(exc) in _MISSING_CODES:
            raise WalNotFoundError("%s does not exist" % where, details={"key": key}) from None
        raise error_from_boto(exc, "downloading %s" % where) from None
    sink = _Sink(method, handle)
    try:
        while True:
            try:
                chunk = body.read(CHUNK_SIZE)
            except Exception as exc:  # pylint: disable=broad-exception-caught
                raise error_from_boto(exc, "downloading %s" % where) from None
            if not chunk:
                break
            sink.write(chunk)
        sink.close()
    except RtxDrError:
        raise
    except OSError as exc:
        raise RtxDrError("Cannot write the WAL file restored from %s: %s" % (where, exc.strerror or exc),
                         hint="Check the free space and permissions of the destination directory.",
                         details={"key": key}) from None
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # zlib.error, zstd.ZstdError, lz4's RuntimeError: the stored bytes are not valid <method> data.
        raise WalChecksumError(
            "Archived WAL object %s cannot be decompressed as %s: %s: %s" % (where, method, type(exc).__name__, exc),
            hint="The object is damaged or was replaced: restore an earlier version of it (the bucket is "
            "versioned) or push the file again from a server that still has it.",
            details={"key": key},
        ) from None
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return sink, dict(response.get("Metadata") or {})


def check_object(bucket, key, sink, metadata):
    """Raise :class:`WalChecksumError` unless the downloaded ``sink`` matches the object's metadata.

    ``sha256`` is checked against the stored bytes, ``raw-sha256``/``raw-size`` against the
    decompressed ones; at least one checksum must be there.
    """
    where = _url(bucket, key)
    stored, raw = sink.stored.hexdigest(), sink.raw.hexdigest()
    expected_stored, expected_raw = metadata.get("sha256"), metadata.get("raw-sha256")
    hint = ("The object is damaged or was replaced: restore an earlier version of it (the bucket is versioned) "
            "or push the file again from a server that still has it. It was not used.")
    details = {"key": key, "sha256": stored, "raw_sha256": raw,
               "expected_sha256": expected_stored, "expected_raw_sha256": expected_raw}
    if not expected_stored and not expected_raw:
        raise WalChecksumError(
            "Archived WAL object %s has no sha256/raw-sha256 metadata: its content cannot be checked" % where,
            hint="Objects written by the rtx.dr WAL agent always carry them; push the file again with it.",
            details=details,
        )
    if expected_stored and expected_stored != stored:
        raise WalChecksumError(
            "Archived WAL object %s is damaged: sha256 of the stored bytes is %s but its sha256 metadata says %s "
            "(%d bytes read)" % (where, stored, expected_stored, sink.stored_size),
            hint=hint, details=details)
    if expected_raw and expected_raw != raw:
        raise WalChecksumError(
            "Archived WAL object %s is damaged: sha256 after decompression is %s but its raw-sha256 metadata says "
            "%s (%d bytes)" % (where, raw, expected_raw, sink.raw_size),
            hint=hint, details=details)
    size = metadata.get("raw-size")
    if size is not None and str(sink.raw_size) != str(size):
        raise WalChecksumError(
            "Archived WAL object %s is damaged: %d bytes after decompression but its raw-size metadata says %s"
            % (where, sink.raw_size, size), hint=hint, details=details)


# --------------------------------------------------------------------------
# push (archive_command)
# --------------------------------------------------------------------------


def _read_file(path, compressor, expected_size):
    """Read ``path`` whole: ``(stored bytes, raw sha256 hex, raw size)``."""
    raw = hashlib.sha256()
    out = []
    size = 0
    try:
        with open(path, "rb") as handle:
            while True:
                chunk = handle.read(CHUNK_SIZE)
                if not chunk:
                    break
                raw.update(chunk)
                size += len(chunk)
                out.append(compressor.compress(chunk))
    except OSError as exc:
        raise RtxDrError("Cannot read WAL file %s: %s" % (path, exc.strerror or exc),
                         hint="archive_command runs in the data directory as the server's user; pass %p unchanged.",
                         details={"path": path}) from None
    out.append(compressor.flush())
    _check_read_size(path, size, expected_size)
    return b"".join(out), raw.hexdigest(), size


def _check_read_size(path, size, expected_size):
    if size != expected_size:
        raise RtxDrError("WAL file %s changed while it was read: %d bytes read, %d expected" % (path, size, expected_size),
                         hint="Retry; PostgreSQL never changes a file it hands to archive_command.",
                         details={"path": path})


def _raw_sha256_of_file(path):
    try:
        return file_sha256(path)[1]
    except OSError as exc:
        raise RtxDrError("Cannot read WAL file %s: %s" % (path, exc.strerror or exc), details={"path": path}) from None


def _archived_raw_sha256(s3, bucket, key, method):
    """``(raw sha256, raw size)`` of an archived object: from its metadata, else by downloading it."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "reading the metadata of %s" % _url(bucket, key)) from None
    metadata = head.get("Metadata") or {}
    if metadata.get("raw-sha256"):
        return metadata["raw-sha256"], metadata.get("raw-size")
    if metadata.get("sha256") and method == "none":
        return metadata["sha256"], head.get("ContentLength")
    # An object written by something else: compare its content.
    sink, dummy = _download(s3, bucket, key, method)
    return sink.raw.hexdigest(), sink.raw_size


def _compare_existing(s3, bucket, variants, path, name, raw_sha=None):
    """``(key, raw sha256)``: an archived copy equal to ``path``; :class:`WalConflictError` on any difference."""
    if raw_sha is None:
        raw_sha = _raw_sha256_of_file(path)
    same = None
    for key in sorted(variants):
        archived, dummy = _archived_raw_sha256(s3, bucket, key, variants[key])
        if archived != raw_sha:
            raise WalConflictError(
                "WAL file %s is already archived at %s with a different content: archived sha256 %s, local file "
                "%s sha256 %s; the archived object was NOT overwritten"
                % (name, _url(bucket, key), archived, path, raw_sha),
                hint="Two servers are archiving the same timeline into one prefix (split brain, or two clusters "
                "sharing a prefix/cluster_name?). Fence the server that should not be primary, check prefix and "
                "cluster_name, and compare both files before deleting anything from the archive.",
                details={"key": key, "archived_sha256": archived, "local_sha256": raw_sha, "name": name},
            )
        same = same or key
    return same, raw_sha


def push(s3, params, path, log=None, kms=None):
    """Archive the WAL file at ``path`` (PostgreSQL's ``%p``) into the bucket; see the module docstring.

    :param s3: a boto3/botocore S3 client.
    :param params: options of :func:`wal_argument_spec` (a module's ``params``).
    :param kms: optional KMS client (or factory) to resolve a ``kms_key_id`` that is not an ARN.
    :returns: ``{"key", "name", "bytes", "sha256", "compressed_bytes", "stored_sha256", "compression",
        "seconds", "skipped_existing"}``; ``sha256`` is that of the file as PostgreSQL wrote it.
    :raises WalConflictError: the name is archived with another content (nothing overwritten).
    :raises RtxDrError: bad options or name, unreadable file, wrong size, S3 errors.
    """
    started = time.monotonic()
    settings = check_options(params)
    bucket = settings["bucket"]
    name = os.path.basename(path)
    kind = wal_file_kind(name, settings["wal_segment_size"])
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise RtxDrError("Cannot read WAL file %s: %s" % (path, exc.strerror or exc),
                         hint="archive_command runs in the data directory as the server's user; pass %p unchanged.",
                         details={"path": path}) from None
    if kind in (SEGMENT, PARTIAL) and size != settings["wal_segment_size"]:
        raise InvalidValueError(
            "WAL file %s is %d bytes but a WAL segment is %d bytes (option wal_segment_size)"
            % (path, size, settings["wal_segment_size"]),
            hint="Set wal_segment_size to the server's 'SHOW wal_segment_size' in bytes; if it is right, the file "
            "is damaged and must not be archived.",
            details={"path": path, "size": size},
        )
    method = settings["compression"]["method"] if compressible(kind) else "none"
    base_key = wal_base_key(settings["prefix"], name, settings["wal_segment_size"])
    key = base_key + EXTENSIONS[method]

    def result(stored_key, raw_sha, stored_bytes, stored_sha, stored_method, skipped):
        return {"key": stored_key, "name": name, "bytes": size, "sha256": raw_sha, "compressed_bytes": stored_bytes,
                "stored_sha256": stored_sha, "compression": stored_method,
                "seconds": round(time.monotonic() - started, 3), "skipped_existing": skipped}

    variants = archived_variants(s3, bucket, base_key)
    if variants:
        existing, raw_sha = _compare_existing(s3, bucket, variants, path, name)
        if log is not None:
            log("%s is already archived with the same content at %s: nothing uploaded" % (name, _url(bucket, existing)))
        return result(existing, raw_sha, None, None, variants[existing], True)

    extra = upload_args(settings, params, kms)
    if size <= SINGLE_PUT_MAX:
        body, metadata = encode_file(path, settings, method, size)
        raw_sha, stored_sha = metadata["raw-sha256"], metadata["sha256"]
        if not _conditional_put(s3, bucket, key, body, metadata, extra):
            # Someone archived the same name between our listing and our PUT.
            variants = archived_variants(s3, bucket, base_key)
            if not variants:
                raise RtxDrError("Uploading %s was refused as if it existed, but it is not listed" % _url(bucket, key),
                                 hint="Retry; if it persists, check the endpoint's conditional write support.",
                                 details={"key": key})
            existing, dummy = _compare_existing(s3, bucket, variants, path, name, raw_sha)
            return result(existing, raw_sha, None, None, variants.get(existing, method), True)
        stored_bytes = len(body)
    else:
        facts, raw_sha = _stream_upload(s3, bucket, key, path, _compressor(settings, method), size, method, extra)
        stored_bytes, stored_sha = facts["size"], facts["sha256"]
    if log is not None:
        log("archived %s to %s (%d bytes, %d stored)" % (name, _url(bucket, key), size, stored_bytes))
    return result(key, raw_sha, stored_bytes, stored_sha, method, False)


def upload_args(settings, params, kms=None):
    """The ``put_object`` arguments of every WAL object besides its body and metadata: SSE-KMS with the key's
    ARN (:func:`kms_key_arn`; none with ``encryption: none``) and the content type."""
    extra = dict(settings["sse"])
    if extra:
        extra["SSEKMSKeyId"] = kms_key_arn(kms, extra["SSEKMSKeyId"], (params.get("endpoint_url"), params.get("region")))
    extra["ContentType"] = "application/octet-stream"
    return extra


def _compressor(settings, method):
    comp = settings["compression"]
    return new_compressor(method, comp["level"] if method == comp["method"] else None,
                          comp["workers"] if method == comp["method"] else None)


def encode_file(path, settings, method, size):
    """``(stored bytes, metadata)`` of the ``size`` bytes long file at ``path`` compressed in memory with ``method``.

    The metadata every WAL object carries: ``sha256`` (stored bytes), ``raw-sha256``, ``raw-size`` and
    ``compression``. Raises :class:`RtxDrError` when the file cannot be read or its size changed while read.
    """
    body, raw_sha, dummy = _read_file(path, _compressor(settings, method), size)
    return body, {"sha256": hashlib.sha256(body).hexdigest(), "raw-sha256": raw_sha, "raw-size": str(size),
                  "compression": method}


def _conditional_put(s3, bucket, key, body, metadata, extra):
    """PUT ``key`` only if it does not exist; False when it does (412/409). Endpoints without
    conditional writes (501 NotImplemented) get a plain PUT after the listing done by the caller."""
    args = dict(extra)
    args.update(Bucket=bucket, Key=key, Body=body, Metadata=metadata)
    if client_knows_if_none_match(s3):
        try:
            s3.put_object(IfNoneMatch="*", **args)
            return True
        except Exception as exc:  # pylint: disable=broad-exception-caught
            code = _code(exc)
            if code in _CONDITION_CODES:
                return False
            if code not in _UNSUPPORTED_CODES:
                raise error_from_boto(exc, "uploading %s" % _url(bucket, key)) from None
    try:
        s3.put_object(**args)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "uploading %s" % _url(bucket, key)) from None
    return True


def client_knows_if_none_match(s3):
    """True when the client's botocore can send ``IfNoneMatch`` on PutObject (botocore >= 1.35).

    Debian bookworm's python3-botocore (1.29) cannot: it refuses the parameter before
    sending anything. Then the listing done by :func:`push` before the upload is the only
    guard against overwriting (a concurrent push of the same name between the two calls is
    the remaining window; PostgreSQL never archives one name twice at the same time).
    """
    try:
        members = s3.meta.service_model.operation_model("PutObject").input_shape.members
    except Exception:  # pylint: disable=broad-exception-caught
        return True  # not a botocore client (a test double): try it
    return "IfNoneMatch" in members


def _stream_upload(s3, bucket, key, path, compressor, size, method, extra):
    """Multipart upload of a big file (no conditional PUT); ``(uploader facts, raw sha256)``."""
    raw = hashlib.sha256()
    read = 0
    with StreamUploader(s3, bucket, key, extra_args=extra,
                        metadata={"raw-size": str(size), "compression": method}) as uploader:
        try:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
                    raw.update(chunk)
                    read += len(chunk)
                    uploader.write(compressor.compress(chunk))
        except OSError as exc:
            raise RtxDrError("Cannot read WAL file %s: %s" % (path, exc.strerror or exc),
                             details={"path": path}) from None
        uploader.write(compressor.flush())
        _check_read_size(path, read, size)
        uploader.metadata["raw-sha256"] = raw.hexdigest()  # stored by close() with sha256
        facts = uploader.close()
    return facts, raw.hexdigest()


# --------------------------------------------------------------------------
# fetch (restore_command)
# --------------------------------------------------------------------------


def fetch(s3, params, name, dest_path, log=None, base_key=None):
    """Download archived WAL file ``name`` (``%f``) to ``dest_path`` (``%p``), checked and atomically.

    The file is written to a temporary file in the directory of ``dest_path`` and
    renamed only after both checksums matched; on any failure nothing is left there.
    ``base_key`` reads another object than ``name``'s archived one (the streamed partial
    segment of ``walstream.py``), with the same checks.

    :returns: ``{"key", "name", "bytes", "sha256", "compressed_bytes", "compression", "seconds"}``.
    :raises WalNotFoundError: ``name`` is not archived (a restore_command exits non-zero, quietly).
    :raises WalChecksumError: the object does not match its checksums (``dest_path`` untouched).
    """
    started = time.monotonic()
    settings = check_options(params, upload=False)
    bucket = settings["bucket"]
    kind = wal_file_kind(name, settings["wal_segment_size"])
    base_key = base_key or wal_base_key(settings["prefix"], name, settings["wal_segment_size"])
    preferred = settings["compression"]["method"] if compressible(kind) else "none"

    # One GET in the usual case; a listing only when the object has another suffix (or is missing).
    key, method, response = base_key + EXTENSIONS[preferred], preferred, None
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        if _code(exc) not in _MISSING_CODES:
            raise error_from_boto(exc, "downloading %s" % _url(bucket, key)) from None
        variants = archived_variants(s3, bucket, base_key)
        if not variants:
            raise WalNotFoundError(
                "WAL file %s is not in the archive %s" % (name, _url(bucket, wal_prefix(settings["prefix"]))),
                hint="Normal when PostgreSQL probes for a file that does not exist (e.g. a future timeline's "
                "history file); otherwise check bucket/prefix and the archiver (pg_stat_archiver) of the primary.",
                details={"key": base_key, "name": name},
            ) from None
        key = sorted(variants)[0]
        method = variants[key]

    directory = os.path.dirname(os.path.abspath(dest_path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(dest_path), suffix=".rtxdr-tmp", dir=directory)
    except OSError as exc:
        raise RtxDrError("Cannot create a file in %s for %s: %s" % (directory, name, exc.strerror or exc),
                         hint="restore_command runs as the server's user in the data directory; pass %p unchanged.",
                         details={"path": dest_path}) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            sink, metadata = _download(s3, bucket, key, method, handle, response)
        check_object(bucket, key, sink, metadata)
        if kind in (SEGMENT, PARTIAL) and sink.raw_size != settings["wal_segment_size"]:
            raise WalChecksumError(
                "Archived WAL segment %s is %d bytes, not %d (option wal_segment_size)"
                % (_url(bucket, key), sink.raw_size, settings["wal_segment_size"]),
                hint="Set wal_segment_size to the archived cluster's segment size in bytes.",
                details={"key": key})
        os.replace(tmp, dest_path)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    if log is not None:
        log("restored %s from %s (%d bytes)" % (name, _url(bucket, key), sink.raw_size))
    return {"key": key, "name": name, "bytes": sink.raw_size, "sha256": sink.raw.hexdigest(),
            "compressed_bytes": sink.stored_size, "compression": method,
            "seconds": round(time.monotonic() - started, 3)}


def fetch_any(sources, name, dest_path, log=None):
    """:func:`fetch` from the first of ``sources`` that has ``name``: ``[(label, client or factory, params)]``.

    A client is only built (``factory()``) when its source is tried. Any failure of one source (not archived
    there, unreachable, damaged object) moves on to the next; when every source failed, the error of a source
    that had a real problem is raised (so that it reaches PostgreSQL's log), else :class:`WalNotFoundError`.
    The result gains ``source`` (the label) and ``tried`` (labels that failed before, with their error).
    """
    tried = []
    problem = None
    not_found = None
    for label, client, params in sources:
        try:
            if not hasattr(client, "get_object"):
                client = client()
            result = fetch(client, params, name, dest_path, log=log)
        except WalNotFoundError as exc:
            not_found = not_found or exc
            tried.append({"source": label, "error": "not archived"})
            continue
        except RtxDrError as exc:
            problem = problem or exc
            tried.append({"source": label, "error": exc.msg})
            if log is not None:
                log("%s: %s archive failed, trying the next: %s" % (name, label, exc.msg))
            continue
        result["source"] = label
        result["tried"] = tried
        return result
    if problem is not None:
        if len(tried) > 1:
            problem.msg = "%s (every archive failed: %s)" % (problem.msg, "; ".join(
                "%s: %s" % (t["source"], t["error"]) for t in tried))
        raise problem
    raise not_found or WalNotFoundError("WAL file %s is not in any archive" % name, details={"name": name})

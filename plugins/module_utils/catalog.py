# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The backup catalog in S3: one JSON record per backup, the source of truth.

Layout under a prefix (e.g. ``pgbackup/main``)::

    <prefix>/catalog/<backup_id>.json          the record (format_version 1)
    <prefix>/base/<backup_id>/base.tar.zst     physical backup objects
    <prefix>/base/<backup_id>/backup_manifest
    <prefix>/logical/<backup_id>/<db>.dump     logical backup objects

Backup ids sort in time order: ``20261127T031500.123Z-F`` (physical) or
``...-L`` (logical): UTC time to the millisecond, then the kind.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re

from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.aws import list_objects
from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

FORMAT_VERSION = 1
KIND_SUFFIX = {"physical": "F", "logical": "L"}
SUFFIX_KIND = {v: k for k, v in KIND_SUFFIX.items()}
# "deleting": rtx.dr.backup_retention is removing the backup (never usable).
STATUSES = ("running", "complete", "failed", "deleting")

_ID_RE = re.compile(r"^(\d{8}T\d{6})(?:\.(\d{3}))?Z-([FL])$")


def new_backup_id(kind, now=None):
    """A new backup id for ``kind`` (``physical``/``logical``) at ``now`` (aware or UTC naive datetime).

    ``new_backup_id("physical", datetime(2026, 11, 27, 3, 15, 0, 123000, tzinfo=utc)) ==
    "20261127T031500.123Z-F"``. Ids of one kind sort in time order; two runs would have to
    start in the same millisecond to collide.
    """
    if kind not in KIND_SUFFIX:
        raise InvalidValueError("Invalid backup kind %r: expected physical or logical" % (kind,))
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    elif now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc)
    return "%s.%03dZ-%s" % (now.strftime("%Y%m%dT%H%M%S"), now.microsecond // 1000, KIND_SUFFIX[kind])


def parse_backup_id(backup_id):
    """``(datetime (UTC aware), kind)`` of a backup id; also accepts ids without milliseconds."""
    match = _ID_RE.match(backup_id or "")
    if not match:
        raise InvalidValueError(
            "Invalid backup id %r: expected e.g. 20261127T031500.123Z-F" % (backup_id,),
            hint="Use a backup_id from the catalog (<prefix>/catalog/<backup_id>.json).",
        )
    when = datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=datetime.timezone.utc)
    if match.group(2):
        when = when.replace(microsecond=int(match.group(2)) * 1000)
    return when, SUFFIX_KIND[match.group(3)]


def is_backup_id(value):
    return isinstance(value, str) and bool(_ID_RE.match(value))


def normalize_prefix(prefix):
    """Strip slashes at both ends: ``"/pgbackup/main/" -> "pgbackup/main"``."""
    return (prefix or "").strip("/")


def _join(prefix, *parts):
    prefix = normalize_prefix(prefix)
    return "/".join(([prefix] if prefix else []) + list(parts))


def catalog_prefix(prefix):
    return _join(prefix, "catalog") + "/"


def catalog_key(prefix, backup_id):
    """``<prefix>/catalog/<backup_id>.json``."""
    return _join(prefix, "catalog", "%s.json" % backup_id)


def data_prefix(prefix, kind, backup_id=None):
    """``<prefix>/base/`` or ``<prefix>/logical/`` (and ``<backup_id>/`` when given)."""
    area = "base" if kind == "physical" else "logical"
    if backup_id is None:
        return _join(prefix, area) + "/"
    return _join(prefix, area, backup_id) + "/"


def backup_id_from_key(prefix, key):
    """The backup id in a data object key ``<prefix>/{base,logical}/<id>/...``, or None."""
    for kind in KIND_SUFFIX:
        area = data_prefix(prefix, kind)
        if key.startswith(area):
            candidate = key[len(area):].split("/", 1)[0]
            return candidate if is_backup_id(candidate) else None
    return None


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def isoformat(when):
    """ISO 8601 UTC with a ``Z``: ``2026-11-27T03:15:00.123456Z``."""
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A time of day that ends in an offset of hours alone ("+00", as PostgreSQL writes it); a bare date such as
# "2026-11-27" ends like one but is not.
_HOURS_OFFSET_RE = re.compile(r"\d[T ]\d.*[+-]\d{2}$")


def parse_iso_time(text):
    """A datetime from ISO 8601 ``text`` as written: aware with the offset it gives, naive when it names no zone.

    Lenient about the spellings met in practice: a ``Z``/``z`` or `` UTC`` suffix, an offset of hours alone
    (``+00``, PostgreSQL's), a space between date and time, white space around. Not a time: ValueError.
    """
    text = str(text).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    elif text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    elif _HOURS_OFFSET_RE.search(text):
        text += ":00"
    return datetime.datetime.fromisoformat(text.replace(" ", "T", 1))


def parse_time(value, keep_offset=False):
    """The instant ``value`` names as an aware datetime, in UTC; None when ``value`` is None or empty text.

    ``value``: a datetime or text for :func:`parse_iso_time`; without a zone it is taken as UTC. With
    ``keep_offset`` an aware value keeps the offset it was given in (same instant, as the caller shows it).
    Text that is not a time: ValueError.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    when = value if isinstance(value, datetime.datetime) else parse_iso_time(value)
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.timezone.utc)
    return when if keep_offset else when.astimezone(datetime.timezone.utc)


def parse_isoformat(text):
    """:func:`parse_iso_time` (naive when ``text`` names no zone); None for None."""
    if text is None:
        return None
    return parse_iso_time(text)


def encode_record(record):
    return json.dumps(record, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def write_record(client, bucket, prefix, record, sse_args=None):
    """Write (create or overwrite) the record of ``record["backup_id"]``; returns its key.

    The object carries metadata ``sha256`` (of the JSON body), ``backup-id`` and
    ``status``, and is encrypted with ``sse_args`` (see ``s3stream.sse_args``).
    """
    if record.get("status") not in STATUSES:
        raise InvalidValueError("catalog record status %r is not one of %s" % (record.get("status"), STATUSES))
    key = catalog_key(prefix, record["backup_id"])
    body = encode_record(record)
    metadata = {
        "sha256": hashlib.sha256(body).hexdigest(),
        "backup-id": record["backup_id"],
        "status": record["status"],
    }
    try:
        client.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType="application/json", Metadata=metadata, **(sse_args or {})
        )
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "writing the catalog record s3://%s/%s" % (bucket, key)) from None
    return key


def _error_code(exc):
    return ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code")


def read_record(client, bucket, prefix, backup_id):
    """The record of ``backup_id`` as a dict, or None when there is none."""
    key = catalog_key(prefix, backup_id)
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:  # pylint: disable=broad-exception-caught
        if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise error_from_boto(exc, "reading the catalog record s3://%s/%s" % (bucket, key)) from None
    try:
        return json.loads(body.decode("utf-8"))
    except ValueError as exc:
        raise InvalidValueError(
            "Catalog record s3://%s/%s is not valid JSON: %s" % (bucket, key, exc),
            hint="Inspect the object; restore it from a bucket version if it was damaged.",
        ) from None


def list_backup_ids(client, bucket, prefix, kind=None):
    """Backup ids with a record under ``<prefix>/catalog/``, newest first."""
    ids = []
    start = catalog_prefix(prefix)
    for item in list_objects(client, bucket, start, "listing the catalog"):
        name = item["Key"][len(start):]
        if not name.endswith(".json"):
            continue
        backup_id = name[:-5]
        if not is_backup_id(backup_id):
            continue
        if kind is not None and parse_backup_id(backup_id)[1] != kind:
            continue
        ids.append(backup_id)
    ids.sort(key=lambda i: parse_backup_id(i)[0], reverse=True)
    return ids


def list_records(client, bucket, prefix, kind=None, status=None):
    """Records (dicts) under ``prefix``, newest first, optionally only of ``kind`` / ``status``."""
    records = []
    for backup_id in list_backup_ids(client, bucket, prefix, kind=kind):
        record = read_record(client, bucket, prefix, backup_id)
        if record is None:
            continue
        if status is not None and record.get("status") != status:
            continue
        records.append(record)
    return records


def latest_complete(client, bucket, prefix, kind="physical"):
    """The newest ``complete`` record of ``kind``, or None. Reads records newest first and stops early."""
    for backup_id in list_backup_ids(client, bucket, prefix, kind=kind):
        record = read_record(client, bucket, prefix, backup_id)
        if record is not None and record.get("status") == "complete":
            return record
    return None


def resolve_prefix(params):
    """``prefix``, else ``pgbackup/<cluster_name>`` (the rule of ``rtx.dr.pg_basebackup``), normalized.

    Tools that read a bucket cannot ask the server for its ``cluster_name``:
    one of the two options is required.
    """
    if params.get("prefix"):
        return normalize_prefix(params["prefix"])
    if params.get("cluster_name"):
        return normalize_prefix("pgbackup/%s" % params["cluster_name"])
    raise InvalidValueError(
        "Neither prefix nor cluster_name is set: cannot tell where the backups are in the bucket",
        hint="Set prefix to the backups' key prefix, or cluster_name when pg_basebackup used its default "
        "prefix pgbackup/<cluster_name>.",
    )


def wal_prefix(prefix):
    """``<prefix>/wal/``."""
    prefix = normalize_prefix(prefix)
    return (prefix + "/wal/") if prefix else "wal/"


def check_bucket(s3, bucket, endpoint=None, missing_note="", permissions="s3:ListBucket and s3:GetObject"):
    """Raise a clear error when ``bucket`` is missing, denied or the endpoint does not answer.

    ``missing_note`` ends the message of a missing or denied bucket (what did
    not happen, e.g. ": nothing was deleted"); ``permissions`` names what the
    credentials need.
    """
    where = " at %s" % endpoint if endpoint else ""
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        error = error_from_boto(exc, "checking bucket %s (option bucket)%s" % (bucket, where), {"bucket": bucket})
        code = error.details.get("error_code")
        if code in ("404", "NoSuchBucket", "NotFound"):
            error = RtxDrError(
                "Bucket %s (option bucket) does not exist%s%s" % (bucket, where, missing_note),
                hint="Check the bucket, region and endpoint_url options (the bucket pg_basebackup writes to).",
                details={"bucket": bucket},
            )
        elif code in ("403", "AccessDenied"):
            error.msg = "Access to bucket %s (option bucket) is denied%s%s" % (bucket, where, missing_note)
            error.hint = "Grant the credentials in use %s on the bucket (and the KMS permissions on the backup key)." \
                % permissions
        elif isinstance(error, ConnectionFailedError):
            error.msg = "Cannot reach the S3 endpoint%s (options endpoint_url/region) to read bucket %s: %s" % (
                where, bucket, error.msg)
        raise error from None

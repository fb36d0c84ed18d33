# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Copy the complete backups and the archived WAL into the replica bucket of the second region.

Used by ``rtx.dr.backup_replicate`` (decision and trade-offs: ``docs/cross_region.md``). The
collection copies itself instead of relying on S3 Cross-Region Replication: every copy is checked
here, and the replica's catalog never shows a backup before its objects are there.

Per complete backup of the primary catalog (oldest first):

1. every object of its record: missing in the replica -> server-side ``CopyObject`` issued to the
   replica region (SSE-KMS with the replica region's key, the object's metadata - ``sha256`` - kept);
   present -> its size and ``sha256`` metadata must be the recorded ones, else
   :class:`ReplicaConflictError` naming the key (a replica object is never overwritten);
2. each copy is checked (``head_object``: size, ``sha256`` metadata, SSE-KMS);
3. the catalog record is written LAST, with ``bucket``/``kms_key_id``/``kms_key_arn`` of the replica
   and ``replica_of`` (the primary bucket, region and key), so a record in the replica means its
   objects are there. A replica record that lists other objects (size/SHA256) is a conflict.

Then the archived WAL: every segment and timeline history file of the primary archive (one listing,
:func:`walchain.list_archive`) from the ``start_wal`` of the oldest complete physical backup on
(everything when there is none) that the replica lacks is copied the same way and checked against
the source's ``sha256`` metadata. Nothing is ever deleted; retention of the replica is
``rtx.dr.backup_retention`` run against the replica bucket.
"""

from __future__ import annotations

from ansible_collections.rtx.dr.plugins.module_utils import catalog
from ansible_collections.rtx.dr.plugins.module_utils import walchain
from ansible_collections.rtx.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import DEFAULT_WAL_SEGMENT_SIZE
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import MIB
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import SHA256_TAG
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import sse_args as make_sse_args
from ansible_collections.rtx.dr.plugins.module_utils.s3stream import stored_sha256
from ansible_collections.rtx.dr.plugins.module_utils.walarchive import kms_key_arn

#: Largest object copied with one CopyObject; bigger ones use boto3's multipart copy.
COPY_THRESHOLD = 4 * 1024 * MIB
COPY_PART_SIZE = 256 * MIB

# The options of rtx.dr.backup_replicate beyond the aws common ones.
REPLICATE_OPTIONS = dict(
    bucket=dict(type="str", required=True),
    prefix=dict(type="str"),
    cluster_name=dict(type="str"),
    replica_bucket=dict(type="str", required=True),
    replica_region=dict(type="str"),
    replica_endpoint_url=dict(type="str"),
    replica_kms_key_id=dict(type="str"),
    encryption=dict(type="str", default="aws:kms", choices=["aws:kms", "none"]),
    backup_id=dict(type="str"),
    backups=dict(type="bool", default=True),
    wal=dict(type="bool", default=True),
    wal_segment_size=dict(type="int", default=DEFAULT_WAL_SEGMENT_SIZE),
)

#: Record fields that differ between the primary's record and the replica's on purpose.
REPLICA_FIELDS = ("bucket", "kms_key_id", "kms_key_arn", "replica_of")

_MISSING_CODES = ("NoSuchKey", "404", "NotFound")


class ReplicaConflictError(RtxDrError):
    """The replica holds another object (or record) under a key the primary uses; nothing was overwritten."""


def replicate_argument_spec():
    """aws common options + :data:`REPLICATE_OPTIONS`."""
    spec = aws_common_argument_spec()
    spec.update({name: dict(option) for name, option in REPLICATE_OPTIONS.items()})
    return spec


def check_options(params):
    """Option checks without any network; ``{bucket, prefix, replica_bucket, sse_key, backup_id, wal_segment_size}``."""
    bucket, replica = params.get("bucket"), params.get("replica_bucket")
    if not bucket or not replica:
        raise InvalidValueError("Options bucket and replica_bucket are required",
                                hint="bucket = the primary backups' bucket, replica_bucket = its copy in the "
                                "second region (rtx_dr_backup_replica_bucket).")
    prefix = catalog.resolve_prefix(params)
    same_place = ((params.get("replica_region") or params.get("region")) == params.get("region")
                  and (params.get("replica_endpoint_url") or params.get("endpoint_url")) == params.get("endpoint_url"))
    if replica == bucket and same_place:
        raise InvalidValueError("replica_bucket %s is the primary bucket itself" % replica,
                                hint="Set replica_bucket to the bucket in the second region.")
    encryption = params.get("encryption") or "aws:kms"
    if encryption == "aws:kms" and not params.get("replica_kms_key_id"):
        raise InvalidValueError(
            "encryption is aws:kms but replica_kms_key_id is not set: the copies must be encrypted with the KMS "
            "key of the replica's region",
            hint="Set replica_kms_key_id (alias/<name>, key id or ARN in replica_region), or encryption: none "
            "explicitly.")
    backup_id = params.get("backup_id")
    if backup_id:
        catalog.parse_backup_id(backup_id)
    size = params.get("wal_segment_size") or DEFAULT_WAL_SEGMENT_SIZE
    parse_wal_segment_name("000000010000000000000001", size)  # validates the size
    return {"bucket": bucket, "prefix": prefix, "replica_bucket": replica, "encryption": encryption,
            "backup_id": backup_id, "wal_segment_size": size}


def replica_client_params(params):
    """The aws options of the replica region: ``replica_region``/``replica_endpoint_url`` over ``region``/``endpoint_url``."""
    replica = dict(params)
    replica["region"] = params.get("replica_region") or params.get("region")
    replica["endpoint_url"] = params.get("replica_endpoint_url") or params.get("endpoint_url")
    return replica


def _code(exc):
    return ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code")


def _url(bucket, key):
    return "s3://%s/%s" % (bucket, key)


def head(s3, bucket, key):
    """``head_object`` of ``key``, or None when it does not exist."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        if _code(exc) in _MISSING_CODES:
            return None
        raise error_from_boto(exc, "reading the metadata of %s" % _url(bucket, key)) from None


def replica_record(record, settings, replica_arn, region):
    """The record as the replica stores it (deterministic: a second run compares equal)."""
    out = dict(record)
    out["bucket"] = settings["replica_bucket"]
    out["kms_key_id"] = settings.get("replica_kms_key_id") if replica_arn else None
    out["kms_key_arn"] = replica_arn
    out["replica_of"] = {"bucket": record.get("bucket") or settings["bucket"], "region": region,
                         "kms_key_arn": record.get("kms_key_arn")}
    return out


def _objects_signature(record):
    return sorted((o.get("key"), o.get("size"), o.get("sha256")) for o in record.get("objects") or ()
                  if isinstance(o, dict))


class Replicator:
    """One run. ``src``/``dst``: S3 clients of the primary and the replica region; ``kms``: KMS client (or
    factory) of the replica region (to resolve ``replica_kms_key_id`` to the ARN the bucket policy pins)."""

    def __init__(self, params, src, dst, kms=None, check_mode=False, log=None):
        self.params = params
        self.settings = check_options(params)
        self.settings["replica_kms_key_id"] = params.get("replica_kms_key_id")
        self.src = src
        self.dst = dst
        self.kms = kms
        self.check_mode = check_mode
        self.log = log or (lambda _msg: None)
        self.bucket = self.settings["bucket"]
        self.replica = self.settings["replica_bucket"]
        self.prefix = self.settings["prefix"]
        self.arn = None
        self.sse = {}
        self.result = {"changed": False, "bucket": self.bucket, "replica_bucket": self.replica, "prefix": self.prefix,
                       "replica_region": replica_client_params(params).get("region"), "backups": [],
                       "copied_backups": [], "copied_segments": [], "copied_objects": 0, "copied_bytes": 0,
                       "wal_from": None, "replicate_warnings": []}

    # -- setup ----------------------------------------------------------------

    def prepare(self):
        catalog.check_bucket(self.src, self.bucket, self.params.get("endpoint_url"))
        catalog.check_bucket(self.dst, self.replica, replica_client_params(self.params).get("endpoint_url"),
                             missing_note=": create it with the rtx.dr.s3_storage role (s3_storage_replica_bucket)",
                             permissions="s3:ListBucket, s3:GetObject and s3:PutObject")
        if self.settings["encryption"] == "aws:kms":
            replica = replica_client_params(self.params)
            self.arn = kms_key_arn(self.kms, self.params["replica_kms_key_id"],
                                   (replica.get("endpoint_url"), replica.get("region")))
            self.sse = make_sse_args("aws:kms", self.arn)

    # -- copying ----------------------------------------------------------------

    def _copy(self, key, source_head, sha256):
        """Server-side copy of ``key`` into the replica (issued to the replica region), metadata and the sha256
        tag kept (CopyObject copies the tags; the multipart copy of big objects does not: it is tagged after it
        with ``sha256``, the source's, which the caller has read already)."""
        args = dict(self.sse)
        args["Metadata"] = dict(source_head.get("Metadata") or {})
        args["MetadataDirective"] = "REPLACE"
        if source_head.get("ContentType"):
            args["ContentType"] = source_head["ContentType"]
        source = {"Bucket": self.bucket, "Key": key}
        size = source_head.get("ContentLength") or 0
        try:
            if size <= COPY_THRESHOLD:
                self.dst.copy_object(Bucket=self.replica, Key=key, CopySource=source, **args)
            else:
                from boto3.s3.transfer import TransferConfig  # pylint: disable=import-outside-toplevel

                args.pop("MetadataDirective")
                config = TransferConfig(multipart_threshold=COPY_THRESHOLD, multipart_chunksize=COPY_PART_SIZE,
                                        max_concurrency=4)
                self.dst.copy(source, self.replica, key, ExtraArgs=args, SourceClient=self.src, Config=config)
                if sha256 and not args["Metadata"].get("sha256"):
                    self.dst.put_object_tagging(Bucket=self.replica, Key=key, Tagging={
                        "TagSet": [{"Key": SHA256_TAG, "Value": sha256}]})
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise error_from_boto(exc, "copying %s to %s" % (_url(self.bucket, key), _url(self.replica, key))) from None

    def _check_copy(self, key, size, sha256):
        copied = head(self.dst, self.replica, key)
        problem = None
        stored = stored_sha256(self.dst, self.replica, key, copied) if copied is not None and sha256 else sha256
        if copied is None:
            problem = "is missing after the copy"
        elif copied.get("ContentLength") != size:
            problem = "is %s bytes, expected %s" % (copied.get("ContentLength"), size)
        elif stored != sha256:
            problem = "has the sha256 %s (metadata or tag), expected %s" % (stored, sha256)
        elif self.sse and copied.get("ServerSideEncryption") != "aws:kms":
            problem = "is not SSE-KMS encrypted"
        if problem:
            raise RtxDrError("The copy %s %s" % (_url(self.replica, key), problem),
                             hint="Rerun the replication; if it persists check the replica endpoint and bucket.",
                             details={"key": key})

    def _conflict(self, key, what):
        return ReplicaConflictError(
            "%s already exists in the replica with a different content (%s); it was NOT overwritten"
            % (_url(self.replica, key), what),
            hint="Something else writes into the replica prefix (another cluster with the same prefix, or a "
            "damaged copy). Compare it with %s; move the wrong object away (the bucket is versioned) and rerun."
            % _url(self.bucket, key),
            details={"key": key})

    def _object(self, obj):
        """Copy one recorded object when missing; its size when copied (or to copy), None when already there."""
        key, size, sha256 = obj.get("key"), obj.get("size"), obj.get("sha256")
        existing = head(self.dst, self.replica, key)
        if existing is not None:
            stored = stored_sha256(self.dst, self.replica, key, existing)
            if existing.get("ContentLength") != size or stored != sha256:
                raise self._conflict(key, "%s bytes, sha256 %s; the record says %s bytes, sha256 %s"
                                     % (existing.get("ContentLength"), stored, size, sha256))
            return None
        if self.check_mode:
            return size or 0
        source_head = head(self.src, self.bucket, key)
        if source_head is None:
            raise RtxDrError("%s is listed by its catalog record but does not exist in the primary bucket"
                             % _url(self.bucket, key),
                             hint="Run rtx.dr.s3_backup_verify on the primary: the backup is damaged.",
                             details={"key": key})
        if source_head.get("ContentLength") != size or stored_sha256(self.src, self.bucket, key, source_head) != sha256:
            raise RtxDrError("%s does not match its catalog record (size/sha256): not copied"
                             % _url(self.bucket, key),
                             hint="Run rtx.dr.s3_backup_verify on the primary: the backup is damaged.",
                             details={"key": key})
        self._copy(key, source_head, sha256)
        self._check_copy(key, size, sha256)
        return size or 0

    def backup(self, record):
        """Replicate one complete backup; its entry of ``result["backups"]``."""
        backup_id = record["backup_id"]
        key = catalog.catalog_key(self.prefix, backup_id)
        wanted = replica_record(record, self.settings, self.arn, self.params.get("region"))
        current = catalog.read_record(self.dst, self.replica, self.prefix, backup_id)
        entry = {"backup_id": backup_id, "kind": record.get("kind"), "objects": 0, "bytes": 0}
        if current is not None:
            if current.get("status") != "complete":
                self.result["replicate_warnings"].append(
                    "backup %s left alone: its replica record is %s (rtx.dr.backup_retention of the replica?)"
                    % (backup_id, current.get("status")))
                entry["action"] = "skipped"
                return entry
            if _objects_signature(current) != _objects_signature(record):
                raise self._conflict(key, "its record lists other objects (key, size, sha256) than the primary's")
        for obj in record.get("objects") or ():
            copied = self._object(obj)
            if copied is not None:
                entry["objects"] += 1
                entry["bytes"] += copied
        if current is None:
            if not self.check_mode:
                catalog.write_record(self.dst, self.replica, self.prefix, wanted, self.sse)  # LAST
            entry["action"] = "copied"
        else:
            entry["action"] = "copied" if entry["objects"] else "up_to_date"
        return entry

    def backups(self):
        records = catalog.list_records(self.src, self.bucket, self.prefix, status="complete")
        if self.settings["backup_id"]:
            records = [r for r in records if r.get("backup_id") == self.settings["backup_id"]]
            if not records:
                raise RtxDrError("backup_id %s has no complete record in %s" % (
                    self.settings["backup_id"], _url(self.bucket, catalog.catalog_prefix(self.prefix))),
                    hint="Give the id of a complete backup, or leave backup_id unset to replicate every one.")
        for record in reversed(records):  # oldest first
            entry = self.backup(record)
            self.result["backups"].append(entry)
            if entry["action"] == "copied":
                self.result["copied_backups"].append(entry["backup_id"])
                self.result["copied_objects"] += entry["objects"]
                self.result["copied_bytes"] += entry["bytes"]
                self.log("replicate: backup %s -> s3://%s (%d object(s), %d bytes)" % (
                    entry["backup_id"], self.replica, entry["objects"], entry["bytes"]))

    def wal(self, records):
        """Copy the archived segments and history files the replica lacks (from the oldest complete backup)."""
        size = self.settings["wal_segment_size"]
        physical = [r for r in records if r.get("kind") == "physical" and r.get("start_wal")]
        start = None
        if physical:
            start = parse_wal_segment_name(physical[-1]["start_wal"][:24], size).segno
            self.result["wal_from"] = physical[-1]["start_wal"][:24]
        primary = walchain.list_archive(self.src, self.bucket, self.prefix, size)
        replica = walchain.list_archive(self.dst, self.replica, self.prefix, size)
        todo = []
        for timeline in sorted(primary.histories):
            if timeline not in replica.histories:
                todo.append(("%08X.history" % timeline, primary.histories[timeline]))
        for name in sorted(primary.segments, key=lambda n: (parse_wal_segment_name(n, size).segno, n)):
            if start is not None and parse_wal_segment_name(name, size).segno < start:
                continue
            if name not in replica.segments:
                todo.append((name, primary.segments[name]["key"]))
        for name, key in todo:
            if self.check_mode:
                self.result["copied_segments"].append(name)
                continue
            if head(self.dst, self.replica, key) is not None:
                raise self._conflict(key, "an object the WAL listing did not classify")
            source_head = head(self.src, self.bucket, key)
            if source_head is None:
                continue  # deleted by retention meanwhile
            sha256 = stored_sha256(self.src, self.bucket, key, source_head)
            self._copy(key, source_head, sha256)
            self._check_copy(key, source_head.get("ContentLength"), sha256)
            self.result["copied_segments"].append(name)
            self.result["copied_bytes"] += source_head.get("ContentLength") or 0
        if todo:
            self.log("replicate: %d WAL file(s) -> s3://%s" % (len(todo), self.replica))

    def run(self):
        self.prepare()
        if self.params.get("backups", True) is not False:
            self.backups()
        if self.params.get("wal", True) is not False:
            # The range starts at the oldest complete physical backup of the primary (as wal_archive_status).
            self.wal(catalog.list_records(self.src, self.bucket, self.prefix, kind="physical", status="complete"))
        self.result["changed"] = bool(self.result["copied_backups"] or self.result["copied_segments"]
                                      or self.result["copied_objects"])
        return self.result


def replicate(params, src, dst, kms=None, check_mode=False, log=None):
    """The module's work; returns its result (see ``rtx.dr.backup_replicate``'s RETURN)."""
    return Replicator(params, src, dst, kms=kms, check_mode=check_mode, log=log).run()

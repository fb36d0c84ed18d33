# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Point-in-time restore of a physical base backup from S3 (``rtx.dr.backup_restore``).

Order of work, so that nothing is touched before everything needed is known to exist:

1. options and target (:func:`parse_target`);
2. the catalog, the timeline history and the WAL archive: the base backup is picked
   (:func:`select_backup`, the newest complete physical backup before the target on the
   target's timeline path) and every WAL segment from the backup's stop position to the
   target must be archived (:func:`plan_restore`): a gap is an error naming the segment;
3. the destination: no running server, no data unless ``force`` (then the old directory is
   moved aside, never deleted), enough free space;
4. the base tar streams from S3 (SHA256 computed on the way, compared with the catalog),
   is decompressed and unpacked into ``<data_directory>.rtx-dr-partial`` which becomes the
   data directory only when complete and ``pg_verifybackup`` agrees with the manifest;
5. recovery settings appended to ``postgresql.auto.conf`` (later lines win):
   ``restore_command`` (the WAL agent's ``fetch``), the target, ``recovery_target_timeline``,
   ``recovery_target_action``; ``archive_mode`` off unless asked (a drill must never push
   WAL into the production archive), no synchronous standbys (a lone restored server would
   wait for them at every commit), no ``primary_conninfo``; ``recovery.signal``.
6. ``mode=verify``: a scratch server on a private socket is started, recovery is followed
   until the target state, checks run (``pg_amcheck``, SQL checks), and the scratch server
   and its directory are removed whatever happened.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import queue
import re
import shutil
import tarfile
import threading
import time

from ansible_collections.rtx.dr.plugins.module_utils import catalog
from ansible_collections.rtx.dr.plugins.module_utils import walchain
from ansible_collections.rtx.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.compress import new_decompressor
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import DEFAULT_WAL_SEGMENT_SIZE
from ansible_collections.rtx.dr.plugins.module_utils.postgres import format_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_controldata
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name

TARGET_TYPES = ("latest", "backup", "time", "lsn", "xid", "name")
ACTIONS = ("promote", "pause", "shutdown")
MODES = ("restore", "verify")
CHUNK = 1024 * 1024
# Download pipeline of the base tar: compressed pieces read from S3, and the bound of each queue between the
# download, decompression and unpacking stages (memory ~ 2 x QUEUE_DEPTH x piece, decompressed pieces larger by
# the compression ratio).
READ_CHUNK = 128 * 1024
QUEUE_DEPTH = 16
PARTIAL_SUFFIX = ".rtx-dr-partial"
DEFAULT_AGENT_CONFIG = "/etc/rtx-dr/agent.json"
DEFAULT_AGENT_PATH = "/usr/local/lib/rtx-dr"
DEFAULT_SCRATCH_PORT = 5499
#: Files of a base backup that must not survive into a restored data directory.
_STALE_FILES = ("postmaster.pid", "postmaster.opts", "standby.signal", "recovery.signal", "backup_label.old")
#: pg_controldata lines giving the minimum of settings a hot standby needs.
_CONTROL_MINIMUMS = {
    "max_connections setting": "max_connections",
    "max_worker_processes setting": "max_worker_processes",
    "max_wal_senders setting": "max_wal_senders",
    "max_prepared_xacts setting": "max_prepared_transactions",
    "max_locks_per_xact setting": "max_locks_per_transaction",
}


class RestoreError(RtxDrError):
    """The restore cannot be done (or failed); the message says whether anything was touched."""


def restore_argument_spec():
    spec = aws_common_argument_spec()
    spec.update(
        bucket=dict(type="str", required=True),
        prefix=dict(type="str"),
        cluster_name=dict(type="str"),
        backup_id=dict(type="str"),
        target=dict(type="str", default="latest", choices=list(TARGET_TYPES)),
        target_value=dict(type="str"),
        target_inclusive=dict(type="bool", default=True),
        target_timeline=dict(type="str", default="latest"),
        target_action=dict(type="str", default="promote", choices=list(ACTIONS)),
        data_directory=dict(type="path", required=True),
        mode=dict(type="str", default="restore", choices=list(MODES)),
        force=dict(type="bool", default=False),
        archive_mode=dict(type="str", choices=["keep", "off"]),
        port=dict(type="int", default=DEFAULT_SCRATCH_PORT),
        pg_bin_dir=dict(type="path"),
        agent_config=dict(type="path", default=DEFAULT_AGENT_CONFIG),
        agent_path=dict(type="path", default=DEFAULT_AGENT_PATH),
        agent_python=dict(type="path", default="/usr/bin/python3"),
        wal_fetch_order=dict(type="str", choices=["primary_first", "replica_first", "primary_only", "replica_only"]),
        wal_segment_size=dict(type="int", default=DEFAULT_WAL_SEGMENT_SIZE),
        amcheck=dict(type="bool", default=True),
        sql_checks=dict(type="list", elements="dict", default=[], options=dict(
            name=dict(type="str", required=True),
            sql=dict(type="str", required=True),
            database=dict(type="str", default="postgres"),
            expect=dict(type="str"),
        )),
        keep_scratch=dict(type="bool", default=False),
        timeout=dict(type="int", default=1800),
        verify_checksums=dict(type="bool", default=True),
        plan_only=dict(type="bool", default=False),
        restore_id=dict(type="str"),
    )
    return spec


# --------------------------------------------------------------------------
# Target
# --------------------------------------------------------------------------

_XID_RE = re.compile(r"^[0-9]+$")
_TZ_RE = re.compile(r"(Z|[+-]\d{2}(:?\d{2})?)$")


def parse_time(value):
    """An aware datetime from ``value``; a time without an explicit zone is refused (ambiguous under stress)."""
    text = (value or "").strip()
    if not _TZ_RE.search(text):
        raise InvalidValueError(
            "target_value %r has no time zone" % (value,),
            hint="Give the zone explicitly, e.g. '2026-11-27 03:15:00+00' or '2026-11-27T03:15:00Z'.")
    try:
        when = catalog.parse_iso_time(text)
    except ValueError:
        raise InvalidValueError(
            "target_value %r is not a time" % (value,),
            hint="Use ISO 8601 with a zone, e.g. '2026-11-27 03:15:00.250+00'.") from None
    if when.tzinfo is None or not re.search(r"\d[T ]\d", text):
        # "2026-11-27" ends like a zone ("-27") but is a date: midnight in which zone?
        raise InvalidValueError(
            "target_value %r has no time of day with a time zone" % (value,),
            hint="Give date, time and zone, e.g. '2026-11-27 03:15:00+00' (quote it: it contains a space).")
    return when


def parse_target(params):
    """``{'type', 'value', 'inclusive', 'time', 'lsn'}`` with the value checked for its type."""
    kind = params.get("target") or "latest"
    value = params.get("target_value")
    value = None if value is None else str(value).strip()
    target = {"type": kind, "value": value, "inclusive": params.get("target_inclusive", True) is not False,
              "time": None, "lsn": None}
    if kind in ("latest", "backup"):
        if value:
            raise InvalidValueError(
                "target_value %r is given but target=%s takes none" % (value, kind),
                hint="target=backup restores to the end of the backup named by backup_id (or the latest backup).")
        return target
    if not value:
        raise InvalidValueError(
            "target=%s needs target_value" % kind,
            hint={"time": "e.g. target_value='2026-11-27 03:15:00+00'", "lsn": "e.g. target_value='0/5000060'",
                  "xid": "e.g. target_value=745123", "name": "a restore point created with pg_create_restore_point()"
                  }[kind])
    if kind == "time":
        target["time"] = parse_time(value)
        target["value"] = target["time"].isoformat()
    elif kind == "lsn":
        target["lsn"] = parse_lsn(value)
        target["value"] = format_lsn(target["lsn"])
    elif kind == "xid":
        if not _XID_RE.match(value) or int(value) < 3:
            raise InvalidValueError("target_value %r is not a transaction id (an integer >= 3)" % (value,))
    return target


def parse_target_timeline(value):
    text = str(value or "latest").strip().lower()
    if text in ("latest", "current"):
        return text
    if not text.isdigit() or int(text) < 1:
        raise InvalidValueError("target_timeline %r: expected latest, current or a timeline number" % (value,))
    return int(text)


def recovery_settings(target, timeline, action, restore_command):
    """The recovery settings (ordered list of ``(name, value)``)."""
    settings = [("restore_command", restore_command)]
    kind = target["type"]
    if kind == "backup":
        settings.append(("recovery_target", "immediate"))
    elif kind == "time":
        settings.append(("recovery_target_time", target["time"].isoformat(sep=" ")))
    elif kind == "lsn":
        settings.append(("recovery_target_lsn", target["value"]))
    elif kind == "xid":
        settings.append(("recovery_target_xid", target["value"]))
    elif kind == "name":
        settings.append(("recovery_target_name", target["value"]))
    if kind in ("time", "lsn", "xid"):
        settings.append(("recovery_target_inclusive", "on" if target["inclusive"] else "off"))
    settings.append(("recovery_target_timeline", str(timeline)))
    if kind != "latest":
        settings.append(("recovery_target_action", action))
    return settings


def quote_setting(value):
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


# --------------------------------------------------------------------------
# Choosing the backup and checking the WAL
# --------------------------------------------------------------------------


def _finished(record):
    return catalog.parse_time(record.get("finished_at") or None)


def select_backup(records, target, path, backup_id=None):
    """The base backup to restore for ``target`` along timeline ``path`` (list of complete physical records)."""
    usable = [r for r in records if r.get("status") == "complete" and r.get("kind") == "physical"
              and r.get("stop_lsn") and r.get("timeline")]
    if backup_id:
        match = [r for r in records if r.get("backup_id") == backup_id]
        if not match:
            raise RestoreError("Backup %s is not in the catalog" % backup_id,
                               hint="List the backups with rtx.dr.s3_backup_verify select=all, or leave backup_id "
                                    "unset to pick the latest one before the target.")
        record = match[0]
        if record not in usable:
            raise RestoreError("Backup %s cannot be restored: status %s, kind %s" % (
                backup_id, record.get("status"), record.get("kind")),
                hint="Only complete physical backups can be restored with PITR.")
        candidates = [record]
    else:
        candidates = sorted(usable, key=lambda r: r["backup_id"], reverse=True)
    on_path = [r for r in candidates
               if path is None or walchain.timeline_at(path, r["stop_lsn"]) == int(r["timeline"])]
    if not on_path and path is None:
        raise RestoreError("No complete physical backup in the catalog",
                           hint="Take a full backup first (playbooks/backup_full.yml).")
    if not on_path:
        raise RestoreError(
            "No complete physical backup lies on the path to timeline %d (backups: %s)"
            % (path[-1]["timeline"], ", ".join("%s on timeline %s" % (r["backup_id"], r.get("timeline"))
                                               for r in candidates) or "none"),
            hint="Take a full backup (playbooks/backup_full.yml) or choose target_timeline.")
    if target["type"] == "time":
        before = [r for r in on_path if _finished(r) and _finished(r) <= target["time"]]
        if not before:
            raise RestoreError(
                "No backup finished before the target time %s (oldest usable backup %s finished %s)"
                % (target["value"], on_path[-1]["backup_id"], on_path[-1].get("finished_at")),
                hint="A point in time can only be reached from a backup taken before it: pick a later time.")
        return before[0]
    if target["type"] == "lsn":
        before = [r for r in on_path if parse_lsn(r["stop_lsn"]) <= target["lsn"]]
        if not before:
            raise RestoreError(
                "No backup reaches consistency before the target LSN %s (oldest usable backup %s stops at %s)"
                % (target["value"], on_path[-1]["backup_id"], on_path[-1]["stop_lsn"]),
                hint="Pick a later LSN or an older backup.")
        return before[0]
    return on_path[0]


def plan_restore(s3, params, target, log=None):
    """Catalog + archive checks: the backup and the WAL chain; raises before anything is touched."""
    bucket = params["bucket"]
    prefix = catalog.resolve_prefix(params)
    size = params.get("wal_segment_size") or DEFAULT_WAL_SEGMENT_SIZE
    catalog.check_bucket(s3, bucket, params.get("endpoint_url"), missing_note=": there is nothing to restore")
    records = catalog.list_records(s3, bucket, prefix, kind="physical")
    listing = walchain.list_archive(s3, bucket, prefix, size)
    wanted_tli = parse_target_timeline(params.get("target_timeline"))
    if wanted_tli == "latest":
        tli = max([listing.latest_timeline() or 1] + [int(r["timeline"]) for r in records if r.get("timeline")])
    elif wanted_tli == "current":
        tli = None
    else:
        tli = wanted_tli
    if tli is None:
        # "current": stay on the chosen backup's own timeline.
        tli = int(select_backup(records, target, None, params.get("backup_id"))["timeline"])
    history_note = None
    try:
        history = walchain.read_history(s3, listing, tli)
    except walchain.WalGapError as exc:
        # A backup taken on this timeline carries the history file in its pg_wal/, and needs no
        # ancestor: only backups of timeline ``tli`` itself remain possible.
        history = []
        history_note = ("Timeline history file %08X.history is not in the WAL archive (%s); only backups taken on "
                        "timeline %d can be used" % (tli, exc.__class__.__name__, tli))
    path = walchain.timeline_path(tli, history)
    if history_note:
        path = [{"timeline": tli, "begin_lsn": 0, "end_lsn": None}]
    record = select_backup(records, target, path, params.get("backup_id"))
    end_lsn = target["lsn"] if target["type"] == "lsn" else None
    end_time = target["time"] if target["type"] == "time" else None
    chain = walchain.check_chain(listing, path, record["stop_lsn"], end_lsn=end_lsn, end_time=end_time)
    plan = {
        "bucket": bucket, "prefix": prefix, "backup_id": record["backup_id"], "backup": _backup_summary(record),
        "target": {k: v for k, v in target.items() if k != "time"}, "timeline": tli,
        "timeline_path": [{"timeline": p["timeline"], "begin_lsn": walchain.lsn_text(p["begin_lsn"]),
                           "end_lsn": walchain.lsn_text(p["end_lsn"])} for p in path],
        "wal": {k: (v.isoformat() if isinstance(v, datetime.datetime) else v) for k, v in chain.items()},
        "warnings": [history_note] if history_note else [],
    }
    problem = None
    if target["type"] == "backup":
        pass  # the backup's own WAL is in its tar
    elif chain["missing"]:
        problem = walchain.describe_gap(chain, listing)
        if target["type"] in ("xid", "name"):
            plan["warnings"].append(problem + ": recovery stops at the gap; PostgreSQL refuses to finish if the "
                                    "target lies after it")
            problem = None
    elif not chain["end_reached"]:
        if target["type"] == "time":
            problem = ("The target time %s is after the newest archived WAL (%s, archived %s): the next segment "
                       "needed, %s, is not in the archive" % (
                           target["value"], chain["latest_archived"], plan["wal"]["latest_archived_time"],
                           _next_segment(chain["latest_archived"] or chain["first"], path, size)))
        elif target["type"] == "lsn":
            problem = "The target LSN %s is after the newest archived WAL segment %s: %s is not in the archive" % (
                target["value"], chain["latest_archived"],
                _next_segment(chain["latest_archived"] or chain["first"], path, size))
    if problem:
        raise RestoreError(
            problem + ". Nothing was touched.",
            hint="PITR cannot cross missing WAL. Choose a target before the gap (the recoverable window ends at the "
                 "last contiguous segment), re-push the segments with playbooks/backup_incremental.yml if a server "
                 "still has them in pg_wal, or wait for archive_timeout if the target is very recent.",
            details=plan)
    if log:
        log("restore plan: backup %s, timeline %d, WAL %s..%s" % (record["backup_id"], tli, chain["first"],
                                                                  chain["last"]))
    return record, plan


def _next_segment(name, path, wal_segment_size):
    """The segment recovery reads after ``name`` along ``path``."""
    if not name:
        return "(none)"
    segno = parse_wal_segment_name(name, wal_segment_size).segno + 1
    return walchain.segment_name(walchain.timeline_for_segno(path, segno, wal_segment_size), segno, wal_segment_size)


def _backup_summary(record):
    keys = ("backup_id", "timeline", "start_lsn", "stop_lsn", "start_wal", "stop_wal", "started_at", "finished_at",
            "size_raw_bytes", "size_compressed_bytes", "compression", "kms_key_arn", "system_identifier", "pg_version")
    return {k: record.get(k) for k in keys}


# --------------------------------------------------------------------------
# Destination
# --------------------------------------------------------------------------


def postmaster_running(data_directory):
    """PID of a live postmaster owning ``data_directory`` (from postmaster.pid), or None."""
    pid_file = os.path.join(data_directory, "postmaster.pid")
    try:
        with open(pid_file, encoding="utf-8", errors="replace") as handle:
            pid = int(handle.readline().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def check_destination(data_directory, force, needed_bytes=0):
    """Refusals before the destination is touched; returns ``{'exists', 'empty', 'move_aside'}``."""
    if not os.path.isabs(data_directory) or os.path.normpath(data_directory) in ("/", "/var", "/var/lib", "/home"):
        raise InvalidValueError("data_directory %r must be an absolute path of a data directory" % data_directory)
    pid = postmaster_running(data_directory)
    if pid:
        raise RestoreError(
            "A PostgreSQL server (pid %d) is running on %s: refusing to restore over it. Nothing was touched."
            % (pid, data_directory),
            hint="Stop it first (playbooks/restore.yml does so only with restore_force and the confirmation), "
                 "or restore into another data_directory.")
    exists = os.path.isdir(data_directory)
    empty = not exists or not os.listdir(data_directory)
    if not empty and not force:
        raise RestoreError(
            "%s is not empty: refusing to restore over existing data. Nothing was touched." % data_directory,
            hint="Restore into an empty or new directory, or set force=true: the old directory is then moved "
                 "aside to %s.rtx-dr-before-<restore_id> (never deleted)." % data_directory)
    parent = os.path.dirname(os.path.normpath(data_directory))
    if not os.path.isdir(parent):
        raise InvalidValueError("The parent directory %s of data_directory does not exist" % parent)
    if not os.access(parent, os.W_OK):
        raise RestoreError("Cannot write in %s (running as uid %d)" % (parent, os.getuid()),
                           hint="Run the restore as the PostgreSQL OS user (become_user: postgres).")
    if needed_bytes:
        stat = os.statvfs(parent)
        free = stat.f_bavail * stat.f_frsize
        if free < needed_bytes * 1.1:
            raise RestoreError(
                "Not enough free space in %s: %d bytes free, the backup needs %d (+10%%). Nothing was touched."
                % (parent, free, needed_bytes),
                hint="Free space or restore into a data_directory on a larger file system.")
    return {"exists": exists, "empty": empty, "move_aside": not empty}


# --------------------------------------------------------------------------
# Download and unpack
# --------------------------------------------------------------------------


class _HashingStream:
    """File-like reader over an S3 body: SHA256 and size of the stored bytes, decompressed on read.

    Three stages overlap, so the network, the decompressor and the file writes of the caller each keep a core
    busy: a thread reads the body in :data:`READ_CHUNK` pieces and hashes them, a second thread decompresses,
    and :meth:`read` hands the result to the caller (tarfile). The queues between them are bounded
    (:data:`QUEUE_DEPTH` pieces each; a small compressed piece keeps a highly compressible one small once
    decompressed), so memory stays bounded whatever the size of the object. An error in a thread is raised by
    the next :meth:`read`; :meth:`close` stops both threads.
    """

    _EOF = object()

    def __init__(self, body, method, progress=None, read_chunk=None, depth=None):
        self.body = body
        self.sha = hashlib.sha256()
        self.stored = 0
        self.raw = 0
        self.decompressor = new_decompressor(method)
        self.buffer = bytearray()
        self.eof = False
        self.progress = progress
        self.read_chunk = read_chunk or READ_CHUNK
        depth = depth or QUEUE_DEPTH
        self._compressed = queue.Queue(maxsize=depth)
        self._plain = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._guard, args=(self._download, self._compressed),
                                          name="rtx-dr-restore-download", daemon=True),
                         threading.Thread(target=self._guard, args=(self._decompress, self._plain),
                                          name="rtx-dr-restore-decompress", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _put(self, target, item):
        while not self._stop.is_set():
            try:
                target.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, source):
        while True:
            try:
                return source.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return self._EOF

    def _guard(self, work, out):
        try:
            work()
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            # Handed to the consumer, who raises it in the caller's thread.
            self._put(out, exc)

    def _download(self):
        while not self._stop.is_set():
            chunk = self.body.read(self.read_chunk)
            if not chunk:
                self._put(self._compressed, self._EOF)
                return
            self.sha.update(chunk)
            self.stored += len(chunk)
            if self.progress:
                self.progress(self.stored)
            if not self._put(self._compressed, chunk):
                return

    def _decompress(self):
        while not self._stop.is_set():
            item = self._get(self._compressed)
            if isinstance(item, BaseException):
                self._put(self._plain, item)
                return
            if item is self._EOF:
                tail = self.decompressor.flush()
                if tail:
                    self._put(self._plain, tail)
                self._put(self._plain, self._EOF)
                return
            data = self.decompressor.decompress(item)
            if data and not self._put(self._plain, data):
                return

    def _fill(self, size):
        while len(self.buffer) < size and not self.eof:
            item = self._get(self._plain)
            if isinstance(item, BaseException):
                self.close()
                raise item
            if item is self._EOF:
                self.eof = True
                break
            self.buffer += item

    def read(self, size=-1):
        if size is None or size < 0:
            while not self.eof:
                self._fill(len(self.buffer) + CHUNK)
            size = len(self.buffer)
        self._fill(size)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        self.raw += len(data)
        return data

    def drain(self):
        while not self.eof:
            self._fill(len(self.buffer) + CHUNK)
            self.buffer.clear()

    def close(self):
        """Stop the threads (after an error or a complete read); idempotent."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


def _safe_member(member, root):
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise RestoreError("The backup tar holds an unsafe path %r: refusing to unpack it" % name)
    if member.issym() or member.islnk():
        raise RestoreError(
            "The backup tar holds a link %r (tablespaces are not supported by the S3 base backup)" % name)
    return os.path.join(root, name)


def unpack_tar(stream, root):
    """Unpack a pg_basebackup tar stream into ``root``; returns ``{'files', 'bytes'}``."""
    files = 0
    total = 0
    # Stream mode reads the tar in records of bufsize bytes: 1 MiB instead of tarfile's 10 KiB saves
    # ~100 Python calls per MiB.
    with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as archive:
        for member in archive:
            dest = _safe_member(member, root)
            if member.isdir():
                os.makedirs(dest, mode=0o700, exist_ok=True)
                continue
            if not member.isfile():
                continue
            os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
            source = archive.extractfile(member)
            with open(dest, "wb") as handle:
                while True:
                    chunk = source.read(CHUNK)
                    if not chunk:
                        break
                    handle.write(chunk)
            os.chmod(dest, 0o600)
            files += 1
            total += member.size
    return {"files": files, "bytes": total}


def download_backup(s3, record, root, verify_checksums=True, log=None, bucket=None):
    """Stream the base tar of ``record`` into ``root`` and the manifest next to it; checks SHA256 of both.

    ``bucket``: where the objects are read (the module's ``bucket``, whose catalog named them); the record's own
    ``bucket`` (where the backup was written) only when not given.
    """
    bucket = bucket or record["bucket"]
    method = (record.get("compression") or {}).get("method") or "none"
    facts = {"objects": []}
    for obj in record.get("objects") or ():
        role = obj.get("role")
        if role not in ("base", "manifest"):
            continue
        key = obj["key"]
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise error_from_boto(exc, "downloading s3://%s/%s" % (bucket, key)) from None
        started = time.monotonic()
        if role == "base":
            last = [0]

            def progress(done, total=obj.get("size") or 0):
                if log and done - last[0] >= 256 * CHUNK:
                    last[0] = done
                    log("restore: %d of %d bytes downloaded" % (done, total))

            stream = _HashingStream(body, method, progress)
            try:
                unpacked = unpack_tar(stream, root)
                stream.drain()
            except RtxDrError:
                raise
            except Exception as exc:  # pylint: disable=broad-exception-caught
                # tar errors, zlib.error, zstd's ZstdError, lz4's RuntimeError (not valid <method> data), a broken
                # S3 stream: all of them are about this object.
                raise RestoreError("Unpacking s3://%s/%s failed: %s: %s" % (bucket, key, type(exc).__name__, exc),
                                   hint="Verify the backup with rtx.dr.s3_backup_verify; restore another one.") from None
            finally:
                stream.close()
            sha, stored = stream.sha.hexdigest(), stream.stored
        else:
            data = body.read()
            sha, stored = hashlib.sha256(data).hexdigest(), len(data)
            with open(os.path.join(root, "backup_manifest"), "wb") as handle:
                handle.write(data)
            unpacked = {"files": 1, "bytes": len(data)}
        if verify_checksums and obj.get("sha256") and sha != obj["sha256"]:
            raise RestoreError(
                "Checksum mismatch for s3://%s/%s: SHA256 of the %d bytes read is %s, the catalog says %s"
                % (bucket, key, stored, sha, obj["sha256"]),
                hint="The object was damaged or replaced. Restore another backup (backup_id) or an older S3 version.")
        if obj.get("size") is not None and stored != obj["size"]:
            raise RestoreError("s3://%s/%s has %d bytes, the catalog says %d" % (bucket, key, stored,
                                                                                 obj["size"]))
        facts["objects"].append({"key": key, "role": role, "bytes": stored, "sha256": sha,
                                 "seconds": round(time.monotonic() - started, 3), "unpacked": unpacked})
    if not any(o["role"] == "base" for o in facts["objects"]):
        raise RestoreError("Backup %s has no base object in its catalog record" % record.get("backup_id"))
    return facts


def auto_conf_block(restore_id, backup_id, settings):
    header = "# --- rtx.dr restore %s of backup %s (later lines override earlier ones) ---" % (restore_id, backup_id)
    lines = ["", header]
    lines += ["%s = %s" % (name, quote_setting(value)) for name, value in settings]
    return "\n".join(lines) + "\n"


def scratch_conf(port, socket_dir, minimums):
    lines = [
        "# rtx.dr scratch server of a restore drill: private socket, no TCP, trust on the socket only.",
        "port = %d" % port,
        "listen_addresses = ''",
        "unix_socket_directories = %s" % quote_setting(socket_dir),
        "shared_buffers = '64MB'",
        "hot_standby = on",
        "logging_collector = off",
        "ssl = off",
        "hba_file = %s" % quote_setting(os.path.join(socket_dir, "pg_hba.conf")),
        "ident_file = %s" % quote_setting(os.path.join(socket_dir, "pg_ident.conf")),
    ]
    for name, value in sorted(minimums.items()):
        lines.append("%s = %s" % (name, value))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Recovery log
# --------------------------------------------------------------------------

_LOG_FACTS = (
    ("consistent", re.compile(r"consistent recovery state reached at ([0-9A-F]+/[0-9A-F]+)")),
    ("stopping", re.compile(r"recovery stopping (.*)")),
    ("paused", re.compile(r"(pausing at the end of recovery|recovery has paused)")),
    ("redo_done", re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")),
    ("last_transaction", re.compile(r"last completed transaction was at log time (.*)")),
    ("new_timeline", re.compile(r"selected new timeline ID: (\d+)")),
    ("archive_recovery_complete", re.compile(r"(archive recovery complete)")),
    ("ready", re.compile(r"database system is ready to accept (?:read-only )?connections")),
    ("fatal", re.compile(r"(?:FATAL|PANIC):\s+(.*)")),
)


def recovery_facts(log_text):
    facts = {}
    for line in log_text.splitlines():
        for name, regex in _LOG_FACTS:
            match = regex.search(line)
            if match:
                if name == "fatal":
                    message = match.group(1).strip()
                    # Our own connection attempts while the server starts are not failures.
                    if not message.startswith("the database system is"):
                        facts.setdefault("fatal", []).append(message)
                else:
                    facts[name] = match.group(1).strip() if match.groups() else True
    return facts


def json_default(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


def dumps(value):
    return json.dumps(value, default=json_default, sort_keys=True)


def remove_tree(path):
    if path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def new_restore_id(now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return "R%s.%03dZ" % (now.strftime("%Y%m%dT%H%M%S"), now.microsecond // 1000)


def restore_command(params):
    """``restore_command`` running the WAL agent's fetch with the agent configuration on the host.

    ``wal_fetch_order`` (cross-region, see ``docs/cross_region.md``) overrides the configuration's ``fetch_order``.
    """
    order = params.get("wal_fetch_order")
    return "PYTHONPATH=%s %s -m ansible_collections.rtx.dr.plugins.module_utils.wal_agent --config %s fetch %s%%f %%p" % (
        params.get("agent_path") or DEFAULT_AGENT_PATH, params.get("agent_python") or "/usr/bin/python3",
        params.get("agent_config") or DEFAULT_AGENT_CONFIG, "--order %s " % order if order else "")


class Restore:
    """One restore (or verify-only drill). ``run(argv, env=None) -> (rc, stdout, stderr)`` runs programs;
    ``find_binary(name, server_version_num)`` finds PostgreSQL tools; ``connect(params)`` opens a connection."""

    def __init__(self, params, s3, run, find_binary, connect, log=None, clock=time.monotonic):
        self.params = params
        self.s3 = s3
        self.run = run
        self.find_binary = find_binary
        self.connect = connect
        self.log = log or (lambda _msg: None)
        self.clock = clock
        self.mode = params.get("mode") or "restore"
        self.target = parse_target(params)
        self.data_directory = os.path.normpath(params["data_directory"])
        self.restore_id = params.get("restore_id") or new_restore_id()
        archive_mode = params.get("archive_mode")
        if self.mode == "verify" and archive_mode == "keep":
            raise InvalidValueError(
                "archive_mode=keep with mode=verify: a drill must never archive into the production WAL archive",
                hint="Leave archive_mode unset (off) for verify-only restores.")
        self.archive_mode = archive_mode or ("off" if self.mode == "verify" else "keep")
        if self.mode == "verify" and (params.get("target_action") or "promote") == "shutdown":
            raise InvalidValueError(
                "target_action=shutdown with mode=verify: the drill must inspect a running server",
                hint="Use target_action=promote (default) or pause for a verify-only restore.")
        self.result = {"restore_id": self.restore_id, "mode": self.mode, "data_directory": self.data_directory,
                       "changed": False, "commands": [], "checks": [], "restore_warnings": []}

    # -- helpers --------------------------------------------------------------

    def _run(self, argv, env=None, check=True, what=None):
        rc, out, err = self.run(argv, env)
        self.result["commands"].append(" ".join(argv))
        if check and rc != 0:
            raise RestoreError("%s failed (exit %d): %s" % (what or argv[0], rc, (err or out or "").strip()[-2000:]))
        return rc, out, err

    def _agent_config_ok(self):
        path = self.params.get("agent_config") or DEFAULT_AGENT_CONFIG
        if not os.access(path, os.R_OK):
            raise RestoreError(
                "The WAL agent configuration %s is missing or unreadable on this host: restore_command could not "
                "fetch WAL. Nothing was touched." % path,
                hint="Apply the rtx.dr.backup_schedule role to this host (it installs the agent and its "
                     "configuration), or set agent_config.")

    # -- plan -----------------------------------------------------------------

    def plan(self):
        record, plan = plan_restore(self.s3, self.params, self.target, self.log)
        self.record = record
        plan["restore_id"] = self.restore_id
        plan["mode"] = self.mode
        plan["archive_mode"] = self.archive_mode
        plan["target_action"] = self.params.get("target_action") or "promote"
        self.result["plan"] = plan
        self.result["backup_id"] = record["backup_id"]
        self.result["restore_warnings"].extend(plan.pop("warnings"))
        return plan

    def preflight(self, check_mode=False):
        """Destination checks; nothing is touched (verify mode creates its drill directory, not in check mode)."""
        checked = self.data_directory
        if self.mode == "verify":
            base = self.data_directory
            self.data_directory = os.path.join(base, self.restore_id)
            self.result["data_directory"] = self.data_directory
            if os.path.isdir(base) or not check_mode:
                # A scratch directory of its own under data_directory (created 0700 if missing).
                os.makedirs(base, mode=0o700, exist_ok=True)
                checked = self.data_directory
        dest = check_destination(checked, self.params.get("force"), int(self.record.get("size_raw_bytes") or 0))
        self._agent_config_ok()
        version = (self.record.get("pg_version") or {}).get("server_version_num")
        self.binaries = {name: self.find_binary(name, version)
                         for name in ("pg_ctl", "pg_controldata", "pg_verifybackup", "pg_amcheck")}
        self.result["destination"] = dest
        return dest

    # -- restore --------------------------------------------------------------

    def restore_files(self):
        """Download, unpack, verify and configure; the data directory appears only when all of it worked."""
        partial = self.data_directory + PARTIAL_SUFFIX
        remove_tree(partial)
        os.makedirs(partial, mode=0o700)
        self.result["changed"] = True
        try:
            self.result["download"] = download_backup(self.s3, self.record, partial,
                                                      self.params.get("verify_checksums", True), self.log,
                                                      bucket=self.params["bucket"])
            self._verify_backup(partial)
            self._configure(partial)
        except BaseException:
            remove_tree(partial)
            raise
        aside = None
        try:
            if os.path.isdir(self.data_directory):
                if os.listdir(self.data_directory):
                    aside = "%s.rtx-dr-before-%s" % (self.data_directory, self.restore_id)
                    os.rename(self.data_directory, aside)
                    self.result["moved_aside"] = aside
                else:
                    os.rmdir(self.data_directory)
            os.rename(partial, self.data_directory)
        except OSError as exc:
            # Put the old data back where it was; drop the restored copy.
            if aside and not os.path.exists(self.data_directory):
                os.rename(aside, self.data_directory)
                self.result.pop("moved_aside", None)
            remove_tree(partial)
            raise RestoreError(
                "Could not put the restored data directory in place at %s: %s. The previous content (if any) is "
                "back in place; the restored copy was removed." % (self.data_directory, exc),
                hint="data_directory must be a plain directory (not a mount point or a symlink) on a file system "
                     "where its parent is writable; restore into a sub-directory of the mount point instead.") from None
        os.chmod(self.data_directory, 0o700)

    def _verify_backup(self, root):
        if self.params.get("verify_checksums", True) is False:
            return
        rc, out, err = self._run([self.binaries["pg_verifybackup"], root], check=False)
        if rc != 0:
            raise RestoreError(
                "pg_verifybackup found the restored files different from the backup manifest of %s: %s"
                % (self.record["backup_id"], (err or out).strip()[-1500:]),
                hint="The backup is damaged: restore another backup_id. The data directory was not created.")
        self.result["checks"].append({"name": "pg_verifybackup", "ok": True, "output": (out or err).strip()[-300:]})

    def _configure(self, root):
        for name in _STALE_FILES:
            path = os.path.join(root, name)
            if os.path.exists(path):
                os.unlink(path)
        tli = parse_target_timeline(self.params.get("target_timeline"))
        settings = recovery_settings(self.target, tli, self.params.get("target_action") or "promote",
                                     restore_command(self.params))
        settings += [("synchronous_standby_names", ""), ("primary_conninfo", ""), ("primary_slot_name", "")]
        if self.archive_mode == "off":
            settings += [("archive_mode", "off"), ("archive_command", "")]
        if self.mode == "verify":
            controldata = self._controldata(root)
            minimums = {setting: controldata[line] for line, setting in _CONTROL_MINIMUMS.items()
                        if controldata.get(line, "").isdigit()}
            with open(os.path.join(root, "postgresql.conf"), "w", encoding="utf-8") as handle:
                handle.write(scratch_conf(int(self.params.get("port") or DEFAULT_SCRATCH_PORT), self.data_directory,
                                          minimums))
            with open(os.path.join(root, "pg_hba.conf"), "w", encoding="utf-8") as handle:
                handle.write("local all all trust\n")
            with open(os.path.join(root, "pg_ident.conf"), "w", encoding="utf-8") as handle:
                handle.write("")
            # later lines of postgresql.auto.conf win: the socket and port must not be the production ones.
            settings += [("port", str(int(self.params.get("port") or DEFAULT_SCRATCH_PORT))),
                         ("listen_addresses", ""), ("unix_socket_directories", self.data_directory),
                         ("hba_file", os.path.join(self.data_directory, "pg_hba.conf")),
                         ("ident_file", os.path.join(self.data_directory, "pg_ident.conf")),
                         ("ssl", "off"), ("logging_collector", "off"), ("cluster_name", "rtx-dr-drill")]
        with open(os.path.join(root, "postgresql.auto.conf"), "a", encoding="utf-8") as handle:
            handle.write(auto_conf_block(self.restore_id, self.record["backup_id"], settings))
        with open(os.path.join(root, "recovery.signal"), "w", encoding="utf-8"):
            pass
        self.result["recovery_settings"] = dict(settings)

    def _controldata(self, root):
        _rc, out, _err = self._run([self.binaries["pg_controldata"], "-D", root], what="pg_controldata")
        return parse_controldata(out)

    # -- verify-only drill ----------------------------------------------------

    def verify(self):
        """Start the scratch server, follow recovery to the target, run the checks; always tear down."""
        log_file = self.data_directory + ".log"
        started = self.clock()
        try:
            self._run([self.binaries["pg_ctl"], "-D", self.data_directory, "-l", log_file, "-W", "start"],
                      what="pg_ctl start")
            state = self.wait_for_target(log_file, started)
            self.result["rto_seconds"] = round(self.clock() - self.started, 3)
            self.run_checks(state)
        finally:
            self.result["recovery_log"] = _tail(log_file, 40)
            if self.params.get("keep_scratch"):
                self.result["restore_warnings"].append(
                    "keep_scratch: the scratch server is still running on %s" % self.data_directory)
            else:
                self.teardown(log_file)
        failed = [c for c in self.result["checks"] if not c.get("ok")]
        if failed:
            raise RestoreError(
                "Restore verification of backup %s failed: %s" % (
                    self.record["backup_id"], "; ".join("%s: %s" % (c["name"], c.get("error") or c.get("output"))
                                                        for c in failed)),
                hint="The scratch server was removed. Investigate with keep_scratch=true on a drill host.",
                details=self.result)
        return state

    def teardown(self, log_file):
        if postmaster_running(self.data_directory):
            self.run([self.binaries["pg_ctl"], "-D", self.data_directory, "-m", "immediate", "-w", "-t", "60", "stop"],
                     None)
        remove_tree(self.data_directory)
        remove_tree(self.data_directory + PARTIAL_SUFFIX)
        if os.path.exists(log_file):
            os.unlink(log_file)
        self.result["scratch_removed"] = not os.path.exists(self.data_directory)

    def _conn_params(self, database="postgres"):
        return {"login_unix_socket": self.data_directory, "login_host": None,
                "login_port": int(self.params.get("port") or DEFAULT_SCRATCH_PORT),
                "login_user": "postgres", "login_db": database, "connect_timeout": 5}

    def wait_for_target(self, log_file, started):
        action = self.params.get("target_action") or "promote"
        deadline = started + int(self.params.get("timeout") or 1800)
        while True:
            facts = recovery_facts(_read(log_file))
            if not postmaster_running(self.data_directory) and self.clock() - started > 2:
                raise RestoreError(
                    "The restored server stopped during recovery: %s" % "; ".join(facts.get("fatal") or ["see log"]),
                    hint="See recovery_log. 'recovery ended before configured recovery target was reached' means the "
                         "WAL up to the target is not archived.", details=dict(self.result, recovery=facts))
            state = self._state()
            if state:
                if action == "promote" and not state["in_recovery"]:
                    break
                if action == "pause" and state["in_recovery"] and state.get("pause_state") == "paused":
                    break
                if self.target["type"] == "latest" and not state["in_recovery"]:
                    break
            if self.clock() > deadline:
                raise RestoreError("Recovery did not reach the target within %s s" % self.params.get("timeout"),
                                   details=dict(self.result, recovery=facts))
            time.sleep(0.5)
        state["recovery"] = recovery_facts(_read(log_file))
        self.result["state"] = state
        return state

    def _state(self):
        try:
            conn = self.connect(self._conn_params())
        except RtxDrError:
            return None
        try:
            from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_one  # pylint: disable=import-outside-toplevel

            row = query_one(conn, "SELECT pg_is_in_recovery() AS in_recovery,"
                                  " (SELECT timeline_id FROM pg_control_checkpoint()) AS timeline,"
                                  " pg_last_xact_replay_timestamp() AS last_replay_time,"
                                  " CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END"
                                  " AS pause_state,"
                                  " CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text"
                                  " ELSE pg_current_wal_lsn()::text END AS lsn")
            return dict(row)
        except RtxDrError:
            return None
        finally:
            try:
                conn.close()
            except Exception:  # pylint: disable=broad-exception-caught
                pass

    def run_checks(self, state):
        facts = state.get("recovery") or {}
        self.result["checks"].append({
            "name": "consistent", "ok": bool(facts.get("consistent")) or self.target["type"] == "backup",
            "output": facts.get("consistent"), "error": None if facts.get("consistent") else
            "the log does not show 'consistent recovery state reached'"})
        if self.target["type"] not in ("latest",):
            reached = bool(facts.get("stopping")) or self.target["type"] == "backup"
            self.result["checks"].append({"name": "target_reached", "ok": reached, "output": facts.get("stopping"),
                                          "error": None if reached else "the log has no 'recovery stopping' line"})
        if self.params.get("amcheck", True) is not False:
            self._amcheck(state)
        for check in self.params.get("sql_checks") or []:
            self._sql_check(check)

    def _amcheck(self, state):
        argv = [self.binaries["pg_amcheck"], "-h", self.data_directory, "-p",
                str(int(self.params.get("port") or DEFAULT_SCRATCH_PORT)), "-U", "postgres", "--all",
                "--heapallindexed"]
        if not state.get("in_recovery"):
            argv.append("--install-missing")
        rc, out, err = self._run(argv, check=False)
        self.result["checks"].append({"name": "pg_amcheck", "ok": rc == 0, "output": (out or "").strip()[-1000:],
                                      "error": None if rc == 0 else (err or out).strip()[-1000:]})

    def _sql_check(self, check):
        from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_all  # pylint: disable=import-outside-toplevel

        item = {"name": check["name"], "sql": check["sql"], "database": check.get("database") or "postgres"}
        try:
            conn = self.connect(self._conn_params(item["database"]))
            try:
                rows = query_all(conn, check["sql"])
            finally:
                conn.close()
        except RtxDrError as exc:
            item.update(ok=False, error=str(exc))
            self.result["checks"].append(item)
            return
        value = None
        if rows:
            first = list(rows[0].values())
            value = None if not first else first[0]
        item["output"] = None if value is None else str(value)
        expect = check.get("expect")
        item["ok"] = expect is None or item["output"] == str(expect)
        if not item["ok"]:
            item["error"] = "returned %r, expected %r" % (item["output"], expect)
        self.result["checks"].append(item)

    # -- all of it -------------------------------------------------------------

    def execute(self, check_mode=False):
        self.started = self.clock()
        self.plan()
        if self.params.get("plan_only"):
            self.result["msg"] = "plan only: backup %s, WAL chain checked; the destination was not looked at" % (
                self.record["backup_id"])
            return self.result
        self.preflight(check_mode)
        if check_mode:
            self.result["msg"] = "check mode: would restore backup %s into %s" % (
                self.record["backup_id"], self.data_directory)
            return self.result
        self.restore_files()
        self.result["restore_seconds"] = round(self.clock() - self.started, 3)
        if self.mode == "verify":
            self.verify()
        self.result["seconds"] = round(self.clock() - self.started, 3)
        return self.result


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _tail(path, lines):
    return _read(path).splitlines()[-lines:]

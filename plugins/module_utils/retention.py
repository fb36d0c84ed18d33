# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Backup retention: which backups (and archived WAL) may go, and deleting them safely.

:func:`plan_retention` is pure (no I/O, deterministic): catalog records, ``now``
and a policy in, a plan out. A complete backup is kept when any of these holds:

- it is the newest complete backup of its kind (always, whatever the settings);
- it is among the ``keep_last`` newest complete backups of its kind;
- it finished within ``keep_days`` days;
- (physical) it is the PITR base: the newest complete physical backup that finished
  at or before ``now - pitr_window_days`` (needed to restore to the start of the
  window). When no backup is that old, the oldest complete physical backup is the
  base (the window reaches back as far as the backups do).

``failed`` records (and ``running`` ones older than ``stale_running_hours``, treated
as failed) are deleted once older than the kind's retention horizon: the earlier of
``now - keep_days`` and the oldest kept backup of the kind. Records in status
``deleting`` (left by an interrupted retention run) are always deleted; records with
any other status are never touched.

WAL: ``wal_keep_from`` is the ``start_wal`` of the oldest kept complete physical
backup. An archived WAL key under ``<prefix>/wal/`` is deletable when its base name
starts with a segment name on the same or an older timeline and an earlier position;
``*.history`` files, keys that are not WAL, and anything when ``wal_keep_from`` is
unknown are kept.

:func:`apply_plan` carries out a plan against S3: for each doomed backup its record
is rewritten with status ``deleting`` first, then its objects are deleted, and the
record last, so that a half-deleted backup is never taken for complete and a later
run finishes the job.
"""

from __future__ import annotations

import datetime

from ansible_collections.rtx.dr.plugins.module_utils import catalog
from ansible_collections.rtx.dr.plugins.module_utils.catalog import resolve_prefix
from ansible_collections.rtx.dr.plugins.module_utils.catalog import wal_prefix
from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.aws import list_objects
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

KINDS = ("physical", "logical")
DELETING = "deleting"
DELETE_BATCH = 1000

#: Defaults of the module options (seed: 7 days hot for physical, 7 years (MiFID II) for logical).
DEFAULT_POLICY = {
    "physical": {"keep_last": 7, "keep_days": 7, "pitr_window_days": 7},
    "logical": {"keep_last": 7, "keep_days": 2555},
    "stale_running_hours": 24,
}

# (kind, key, minimum, hint)
_POLICY_FIELDS = (
    ("physical", "keep_last", 1, "Keep at least one physical backup: set physical_keep_last to 1 or more."),
    ("physical", "keep_days", 0, "Set physical_keep_days to 0 or more days."),
    ("physical", "pitr_window_days", 0, "Set pitr_window_days to 0 (no PITR window) or more days."),
    ("logical", "keep_last", 0, "Set logical_keep_last to 0 or more (the newest logical backup is always kept)."),
    ("logical", "keep_days", 0, "Set logical_keep_days to 0 or more days (2555 = 7 years, MiFID II)."),
)

_HEX = frozenset("0123456789ABCDEF")


# --------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------


def _check_int(name, value, minimum, hint):
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValueError("Invalid %s %r: expected a whole number" % (name, value), hint=hint,
                                details={"option": name})
    if value < minimum:
        raise InvalidValueError("Invalid %s %d: must be %d or more" % (name, value, minimum), hint=hint,
                                details={"option": name})
    return value


def normalize_policy(policy=None):
    """The policy with defaults filled in and every value checked.

    ``policy``: ``{"physical": {"keep_last", "keep_days", "pitr_window_days"}, "logical": {"keep_last",
    "keep_days"}, "stale_running_hours"}``, any part missing or None meaning the default.
    Errors name the module option (``physical_keep_last``, ``pitr_window_days``...).
    :raises InvalidValueError: a value is not a whole number or is out of range.
    """
    policy = policy or {}
    result = {}
    for kind in KINDS:
        given = policy.get(kind) or {}
        result[kind] = {}
        for key, default in DEFAULT_POLICY[kind].items():
            value = given.get(key)
            result[kind][key] = default if value is None else value
    for kind, key, minimum, hint in _POLICY_FIELDS:
        name = key if key == "pitr_window_days" else "%s_%s" % (kind, key)
        _check_int(name, result[kind][key], minimum, hint)
    stale = policy.get("stale_running_hours")
    result["stale_running_hours"] = _check_int(
        "stale_running_hours", DEFAULT_POLICY["stale_running_hours"] if stale is None else stale, 1,
        "Set stale_running_hours to 1 or more: a running backup younger than that is never touched.")
    return result


def policy_from_params(params):
    """The policy from the module options (see :func:`normalize_policy`)."""
    return normalize_policy({
        "physical": {
            "keep_last": params.get("physical_keep_last"),
            "keep_days": params.get("physical_keep_days"),
            "pitr_window_days": params.get("pitr_window_days"),
        },
        "logical": {
            "keep_last": params.get("logical_keep_last"),
            "keep_days": params.get("logical_keep_days"),
        },
        "stale_running_hours": params.get("stale_running_hours"),
    })


# --------------------------------------------------------------------------
# Planning (pure)
# --------------------------------------------------------------------------


def _utc(when):
    if when.tzinfo is None:
        return when.replace(tzinfo=datetime.timezone.utc)
    return when.astimezone(datetime.timezone.utc)


def _parse_time(text):
    try:
        when = catalog.parse_isoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return _utc(when) if when is not None else None


def _entry(record, now):
    backup_id = record["backup_id"]
    id_time, id_kind = catalog.parse_backup_id(backup_id)
    started = _parse_time(record.get("started_at")) or id_time
    finished = _parse_time(record.get("finished_at"))
    return {
        "backup_id": backup_id,
        "kind": record.get("kind") if record.get("kind") in KINDS else id_kind,
        "status": record.get("status"),
        "started": started,
        "finished": finished,
        # when the backup became usable (complete) or ended; a running one: when it started
        "when": finished or started,
        "age_days": round(((now - (finished or started)).total_seconds()) / 86400.0, 2),
        "record": record,
        "reasons": [],
    }


def _fmt(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _segment_parts(name):
    """``(timeline, position)`` of a 24 hex digit WAL segment name (upper case), or None."""
    if not isinstance(name, str) or len(name) < 24:
        return None
    head = name[:24].upper()
    if not set(head) <= _HEX:
        return None
    return int(head[:8], 16), head[8:]


def wal_key_deletable(key, keep_from):
    """True when archived WAL ``key`` is not needed from segment ``keep_from`` on.

    The base name must start with a WAL segment name on the timeline of ``keep_from`` or an
    older one, at an earlier position. Timeline history files (``*.history``) and anything
    else are kept.
    """
    keep = _segment_parts(keep_from)
    base = key.rsplit("/", 1)[-1]
    if keep is None or base.endswith(".history"):
        return False
    parts = _segment_parts(base)
    if parts is None:
        return False
    rest = base[24:]
    if rest and not rest.startswith("."):
        return False
    return parts[0] <= keep[0] and parts[1] < keep[1]


def plan_retention(records, now, policy=None, wal_keys=None):
    """Which backups to keep and delete, and which archived WAL keys may go.

    :param records: catalog records (dicts with at least ``backup_id``; see catalog.py).
    :param now: the reference time (aware, or naive UTC).
    :param policy: see :func:`normalize_policy`.
    :param wal_keys: keys under ``<prefix>/wal/`` (optional).
    :returns: ``{"keep": [...], "delete": [...], "wal_keep_from", "wal_delete_keys", "policy"}``; ``keep``
        and ``delete`` list ``{backup_id, kind, status, finished_at, age_days, reason, reasons}``
        newest first; ``wal_keep_from`` is ``{backup_id, segment, timeline}`` or None.
    """
    policy = normalize_policy(policy)
    now = _utc(now)
    entries = []
    seen = set()
    for record in records:
        backup_id = record.get("backup_id") if isinstance(record, dict) else None
        if not catalog.is_backup_id(backup_id) or backup_id in seen:
            continue
        seen.add(backup_id)
        entries.append(_entry(record, now))
    entries.sort(key=lambda e: (e["started"], e["backup_id"]), reverse=True)

    keep, delete = [], []
    kept_ids = set()
    stale_before = now - datetime.timedelta(hours=policy["stale_running_hours"])

    for kind in KINDS:
        settings = policy[kind]
        mine = [e for e in entries if e["kind"] == kind]
        complete = [e for e in mine if e["status"] == "complete"]
        recent_since = now - datetime.timedelta(days=settings["keep_days"])
        for index, entry in enumerate(complete):
            reasons = entry["reasons"]
            if index == 0:
                reasons.append("newest complete %s backup (always kept)" % kind)
            elif index < settings["keep_last"]:
                reasons.append("among the %d newest complete (keep_last)" % settings["keep_last"])
            if entry["when"] >= recent_since:
                reasons.append("finished within %d day(s) (keep_days)" % settings["keep_days"])
        if kind == "physical" and settings["pitr_window_days"] > 0 and complete:
            window_start = now - datetime.timedelta(days=settings["pitr_window_days"])
            base = next((e for e in complete if e["when"] <= window_start), None)
            if base is not None:
                base["reasons"].append("PITR base: newest complete backup finished at or before the start of the "
                                       "%d-day PITR window (%s)" % (settings["pitr_window_days"], _fmt(window_start)))
            else:
                base = min(complete, key=lambda e: (e["when"], e["backup_id"]))
                base["reasons"].append("PITR base: oldest complete backup; none finished before the start of the "
                                       "%d-day PITR window (%s)" % (settings["pitr_window_days"], _fmt(window_start)))
        kept_complete = [e for e in complete if e["reasons"]]
        horizon = recent_since
        if kept_complete:
            horizon = min(horizon, min(e["when"] for e in kept_complete))
        for entry in mine:
            status = entry["status"]
            if status == "complete":
                if not entry["reasons"]:
                    entry["reasons"].append("complete, older than every keep rule (%d newest, %d day(s)%s)" % (
                        settings["keep_last"], settings["keep_days"],
                        ", PITR window %d day(s)" % settings["pitr_window_days"] if kind == "physical" else ""))
                    delete.append(entry)
                else:
                    keep.append(entry)
            elif status == DELETING:
                entry["reasons"].append("left in status deleting by an interrupted retention run: finishing it")
                delete.append(entry)
            elif status in ("failed", "running"):
                what = "failed"
                if status == "running":
                    if entry["started"] > stale_before:
                        entry["reasons"].append("running (started %s, within stale_running_hours=%d): never "
                                                "touched" % (_fmt(entry["started"]), policy["stale_running_hours"]))
                        keep.append(entry)
                        continue
                    what = "running since %s (over stale_running_hours=%d: abandoned)" % (
                        _fmt(entry["started"]), policy["stale_running_hours"])
                if entry["when"] < horizon:
                    entry["reasons"].append("%s, older than the retention horizon %s" % (what, _fmt(horizon)))
                    delete.append(entry)
                else:
                    entry["reasons"].append("%s, within the retention horizon %s: kept for the record"
                                            % (what, _fmt(horizon)))
                    keep.append(entry)
            else:
                entry["reasons"].append("status %r is unknown to retention: never touched" % (status,))
                keep.append(entry)
        kept_ids.update(e["backup_id"] for e in kept_complete)

    wal_keep_from = None
    kept_physical = [e for e in entries if e["kind"] == "physical" and e["status"] == "complete"
                     and e["backup_id"] in kept_ids]
    if kept_physical:
        oldest = min(kept_physical, key=lambda e: (e["started"], e["backup_id"]))
        start_wal = oldest["record"].get("start_wal")
        parts = _segment_parts(start_wal)
        if parts is not None and len(start_wal) == 24:
            wal_keep_from = {"backup_id": oldest["backup_id"], "segment": start_wal.upper(),
                             "timeline": oldest["record"].get("timeline") or parts[0]}
    wal_delete_keys = []
    if wal_keep_from is not None:
        wal_delete_keys = sorted(k for k in (wal_keys or ()) if wal_key_deletable(k, wal_keep_from["segment"]))

    def out(entry):
        return {
            "backup_id": entry["backup_id"],
            "kind": entry["kind"],
            "status": entry["status"],
            "finished_at": _fmt(entry["finished"]) if entry["finished"] else None,
            "age_days": entry["age_days"],
            "reason": "; ".join(entry["reasons"]),
            "reasons": list(entry["reasons"]),
        }

    order = {e["backup_id"]: i for i, e in enumerate(entries)}
    return {
        "keep": [out(e) for e in sorted(keep, key=lambda e: order[e["backup_id"]])],
        "delete": [out(e) for e in sorted(delete, key=lambda e: order[e["backup_id"]])],
        "wal_keep_from": wal_keep_from,
        "wal_delete_keys": wal_delete_keys,
        "policy": policy,
    }


# --------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------


def list_keys(s3, bucket, prefix):
    """Every current object key under ``prefix``, sorted."""
    return sorted(item["Key"] for item in list_objects(s3, bucket, prefix))


def read_records(s3, bucket, prefix):
    """``(records, warnings)``: every catalog record, newest first; unreadable records become
    ``{"backup_id", "status": "unreadable"}`` (never touched) with a warning."""
    records, warnings = [], []
    for backup_id in catalog.list_backup_ids(s3, bucket, prefix):
        try:
            record = catalog.read_record(s3, bucket, prefix, backup_id)
        except InvalidValueError as exc:
            warnings.append("backup %s left alone: %s" % (backup_id, exc.msg))
            records.append({"backup_id": backup_id, "status": "unreadable"})
            continue
        if record is None:
            continue
        if not isinstance(record, dict) or record.get("backup_id") != backup_id:
            warnings.append("backup %s left alone: its catalog record does not describe it" % backup_id)
            records.append({"backup_id": backup_id, "status": "unreadable"})
            continue
        records.append(record)
    return records, warnings


def record_sse_args(record):
    """The SSE arguments a record was written with (SSE-KMS with its key, or none)."""
    if record.get("encryption") == "aws:kms":
        key = record.get("kms_key_arn") or record.get("kms_key_id")
        if key:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key}
        return {"ServerSideEncryption": "aws:kms"}
    return {}


def mark_deleting(s3, bucket, prefix, record, now):
    """Rewrite the catalog record of a doomed backup with status ``deleting`` (same encryption)."""
    record = dict(record)
    record["status"] = DELETING
    record["deleting_since"] = catalog.isoformat(now)
    record["deleted_by"] = "rtx.dr.backup_retention"
    catalog.write_record(s3, bucket, prefix, record, record_sse_args(record))
    return record


def delete_keys(s3, bucket, keys, what):
    """Delete current ``keys`` with DeleteObjects, 1000 at a time; returns how many."""
    keys = list(keys)
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start:start + DELETE_BATCH]
        try:
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch],
                                                                "Quiet": True})
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise error_from_boto(exc, "deleting %s in s3://%s" % (what, bucket)) from None
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise RtxDrError(
                "Could not delete %d object(s) of %s in s3://%s, e.g. %s: %s: %s" % (
                    len(errors), what, bucket, first.get("Key"), first.get("Code"), first.get("Message")),
                hint="Grant s3:DeleteObject on the bucket (check Object Lock / bucket policy), then rerun: "
                "the run resumes where it stopped.",
                details={"errors": errors[:20]},
            )
    return len(keys)


def backup_keys(s3, bucket, prefix, record):
    """``(keys, ignored)``: the data objects of a backup - those its record lists under its data prefix
    plus whatever is listed there; ``ignored`` are record keys outside it (never deleted)."""
    backup_id = record["backup_id"]
    kind = record.get("kind") if record.get("kind") in KINDS else catalog.parse_backup_id(backup_id)[1]
    area = catalog.data_prefix(prefix, kind, backup_id)
    keys = set(list_keys(s3, bucket, area))
    ignored = []
    for obj in record.get("objects") or ():
        key = obj.get("key") if isinstance(obj, dict) else None
        if not key:
            continue
        if key.startswith(area):
            keys.add(key)
        else:
            ignored.append(key)
    return sorted(keys), ignored


def apply_plan(s3, bucket, prefix, plan, records, check_mode=False, now=None, log=None):
    """Delete the planned backups and WAL (or, in check mode, only count what would go).

    Each doomed backup: record re-read (skipped if its status changed since the plan), rewritten
    ``deleting``, objects deleted, record deleted. Returns ``{"delete": [... with objects, done],
    "skipped": [...], "deleted_objects", "wal_deleted", "warnings"}``.
    """
    now = now or catalog.utc_now()
    log = log or (lambda msg: None)
    by_id = {r.get("backup_id"): r for r in records if isinstance(r, dict)}
    done, skipped, warnings = [], [], []
    total = 0
    for item in reversed(plan["delete"]):  # oldest first
        item = dict(item)
        backup_id = item["backup_id"]
        record = by_id.get(backup_id) or {"backup_id": backup_id}
        if not check_mode:
            current = catalog.read_record(s3, bucket, prefix, backup_id)
            if current is None:
                skipped.append({"backup_id": backup_id, "reason": "its catalog record is already gone"})
                continue
            if current.get("status") != item["status"]:
                skipped.append({"backup_id": backup_id, "reason": "status changed from %s to %s since the plan: "
                                "left for the next run" % (item["status"], current.get("status"))})
                continue
            record = current
        keys, ignored = backup_keys(s3, bucket, prefix, record)
        for key in ignored:
            warnings.append("backup %s: its record lists %s, outside its data prefix: not deleted" % (backup_id, key))
        item["objects"] = len(keys)
        if not check_mode:
            if record.get("status") != DELETING:
                mark_deleting(s3, bucket, prefix, record, now)
            delete_keys(s3, bucket, keys, "backup %s" % backup_id)
            delete_keys(s3, bucket, [catalog.catalog_key(prefix, backup_id)], "the catalog record of %s" % backup_id)
            log("retention: deleted backup %s (%d object(s)): %s" % (backup_id, len(keys), item["reason"]))
        item["done"] = not check_mode
        total += len(keys)
        done.append(item)
    wal_deleted = 0
    if plan["wal_delete_keys"] and not check_mode:
        wal_deleted = delete_keys(s3, bucket, plan["wal_delete_keys"], "archived WAL before %s"
                                  % plan["wal_keep_from"]["segment"])
        log("retention: deleted %d archived WAL object(s)" % wal_deleted)
    order = {item["backup_id"]: i for i, item in enumerate(plan["delete"])}
    done.sort(key=lambda i: order[i["backup_id"]])
    return {"delete": done, "skipped": skipped, "deleted_objects": total, "wal_deleted": wal_deleted,
            "warnings": warnings}


def run_retention(params, s3, check_mode=False, now=None, log=None):
    """The module's work: check options, read the catalog, plan, apply. Returns the module result."""
    policy = policy_from_params(params)  # option errors before any connection
    prefix = resolve_prefix(params)
    bucket = params["bucket"]
    now = _utc(now or catalog.utc_now())
    catalog.check_bucket(s3, bucket, params.get("endpoint_url"), missing_note=": nothing was deleted",
                         permissions="s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject")
    records, warnings = read_records(s3, bucket, prefix)
    wal_keys = list_keys(s3, bucket, wal_prefix(prefix))
    plan = plan_retention(records, now, policy, wal_keys)
    applied = apply_plan(s3, bucket, prefix, plan, records, check_mode=check_mode, now=now, log=log)
    warnings.extend(applied["warnings"])
    changed = bool(applied["delete"] or plan["wal_delete_keys"])
    return {
        "changed": changed,
        "bucket": bucket,
        "prefix": prefix,
        "now": catalog.isoformat(now),
        "policy": plan["policy"],
        "keep": plan["keep"],
        "delete": applied["delete"],
        "skipped": applied["skipped"],
        "deleted_backups": 0 if check_mode else len(applied["delete"]),
        "deleted_objects": 0 if check_mode else applied["deleted_objects"],
        "wal_keep_from": plan["wal_keep_from"],
        "wal_delete_keys": plan["wal_delete_keys"],
        "wal_deleted": applied["wal_deleted"],
        "retention_warnings": warnings,
    }

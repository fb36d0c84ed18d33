#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_retention
short_description: Delete the PostgreSQL backups in S3 (and archived WAL) that the retention policy no longer needs
version_added: 0.1.0
description:
  - "Applies a retention policy to the backups written by M(rtx.dr.pg_basebackup): reads the catalog
    C(<prefix>/catalog/*.json), plans which backups to keep and which to delete, and deletes the latter.
    It needs only S3, normally from the control node (C(delegate_to: localhost))."
  - "A complete backup is kept when it is among the O(physical_keep_last) / O(logical_keep_last) newest complete
    backups of its kind, or finished within O(physical_keep_days) / O(logical_keep_days) days, or (physical) it is
    the PITR base - the newest complete physical backup that finished at or before now minus O(pitr_window_days),
    needed to restore to the start of the PITR window (when none is that old, the oldest complete physical backup)."
  - The newest complete backup of each kind is always kept, whatever the settings.
  - "C(failed) records, and C(running) records older than O(stale_running_hours) (runs that died), are deleted with
    their leftover objects once older than the retention horizon of their kind (the earlier of now minus the
    C(keep_days) of the kind and the oldest kept backup of the kind). C(running) records younger than
    O(stale_running_hours) and records with any other status are never touched."
  - "Archived WAL under C(<prefix>/wal/) older than the C(start_wal) of the oldest kept physical backup (same or older
    timeline) is deleted too; timeline history files (C(*.history)) are always kept. Nothing is deleted from the WAL
    archive when that backup has no C(start_wal)."
  - "Each doomed backup: its catalog record is first rewritten with status C(deleting) (so a half-deleted backup is
    never taken for complete), then every current object under C(<prefix>/base/<backup_id>/) or
    C(<prefix>/logical/<backup_id>/) (listed, plus the objects of the record) is deleted with C(DeleteObjects) in
    batches of 1000, then the record. A record left C(deleting) by an interrupted run is finished by the next run."
  - In versioned buckets the deletes add delete markers; noncurrent versions go by the bucket's lifecycle rules.
options:
  bucket:
    description:
      - The S3 bucket the backups and their catalog are in.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the backups in O(bucket), as used by M(rtx.dr.pg_basebackup).
      - Defaults to C(pgbackup/<cluster_name>). One of O(prefix) and O(cluster_name) is required.
    type: str
  cluster_name:
    description:
      - Cluster name giving the default O(prefix) C(pgbackup/<cluster_name>).
    type: str
  physical_keep_last:
    description:
      - Number of newest complete physical backups always kept. At least 1.
    type: int
    default: 7
  physical_keep_days:
    description:
      - Complete physical backups that finished within this many days are kept (seed - 7 days hot).
    type: int
    default: 7
  pitr_window_days:
    description:
      - Point-in-time recovery window in days. The newest complete physical backup that finished at or before the
        start of the window is kept, and with it the archived WAL from its C(start_wal) on.
      - V(0) keeps no extra base for PITR.
    type: int
    default: 7
  logical_keep_last:
    description:
      - Number of newest complete logical backups always kept (the newest one is kept even with V(0)).
    type: int
    default: 7
  logical_keep_days:
    description:
      - Complete logical backups that finished within this many days are kept (2555 days - 7 years, MiFID II).
    type: int
    default: 2555
  stale_running_hours:
    description:
      - A C(running) record older than this many hours belongs to a run that died and is treated like a C(failed)
        one. Younger C(running) records are never touched. At least 1.
    type: int
    default: 24
attributes:
  check_mode:
    support: full
    details: Check mode reads the catalog, plans and lists the objects of the doomed backups; nothing is modified.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The credentials need C(s3:ListBucket), C(s3:GetObject), C(s3:PutObject) and C(s3:DeleteObject) on the bucket,
    and C(kms:GenerateDataKey)/C(kms:Decrypt) on the backup key (the C(deleting) record is re-encrypted with the key
    of the backup).
  - Objects under a backup's data prefix without any catalog record are never touched.
  - A catalog record that cannot be read (not JSON) is never touched; it is reported in RV(retention_warnings).
seealso:
  - module: rtx.dr.pg_basebackup
  - module: rtx.dr.s3_backup_verify
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rtx.dr.aws
"""

EXAMPLES = r"""
- name: Show what the default policy would delete
  rtx.dr.backup_retention:
    bucket: rtx-dr-backups
    cluster_name: main
    region: eu-west-1
  check_mode: true
  delegate_to: localhost
  run_once: true

- name: Keep 14 physical backups / 14 days, a 7-day PITR window and 30 days of logical dumps
  rtx.dr.backup_retention:
    bucket: rtx-dr-backups
    prefix: pgbackup/main
    physical_keep_last: 14
    physical_keep_days: 14
    pitr_window_days: 7
    logical_keep_days: 30
  delegate_to: localhost
  register: retention
"""

RETURN = r"""
bucket:
  description: The bucket.
  returned: success
  type: str
  sample: rtx-dr-backups
prefix:
  description: The key prefix the backups were looked up under.
  returned: success
  type: str
  sample: pgbackup/main
now:
  description: The reference time of the plan (UTC).
  returned: success
  type: str
  sample: "2026-11-27T03:15:00.000000Z"
policy:
  description: The policy applied, C({physical, logical, stale_running_hours}).
  returned: success
  type: dict
  sample: {"physical": {"keep_last": 7, "keep_days": 7, "pitr_window_days": 7},
           "logical": {"keep_last": 7, "keep_days": 2555}, "stale_running_hours": 24}
keep:
  description:
    - The backups kept, newest first - C(backup_id), C(kind), C(status), C(finished_at), C(age_days), C(reason) (all
      reasons joined) and C(reasons).
  returned: success
  type: list
  elements: dict
  sample:
    - backup_id: "20261127T020000.000Z-F"
      kind: physical
      status: complete
      finished_at: "2026-11-27T02:04:10Z"
      age_days: 0.05
      reason: "newest complete physical backup (always kept); finished within 7 day(s) (keep_days)"
      reasons: ["newest complete physical backup (always kept)", "finished within 7 day(s) (keep_days)"]
delete:
  description:
    - The backups deleted (in check mode - that would be deleted), newest first; the keys of RV(keep) plus
      C(objects) (number of data objects) and C(done) (V(false) in check mode).
  returned: success
  type: list
  elements: dict
  sample:
    - backup_id: "20261110T020000.000Z-F"
      kind: physical
      status: complete
      finished_at: "2026-11-10T02:03:55Z"
      age_days: 17.05
      reason: "complete, older than every keep rule (7 newest, 7 day(s), PITR window 7 day(s))"
      reasons: ["complete, older than every keep rule (7 newest, 7 day(s), PITR window 7 day(s))"]
      objects: 2
      done: true
skipped:
  description: Planned deletions not done because the record changed or vanished meanwhile (C(backup_id), C(reason)).
  returned: success
  type: list
  elements: dict
  sample: []
deleted_backups:
  description: Number of backups deleted (0 in check mode).
  returned: success
  type: int
  sample: 1
deleted_objects:
  description: Number of backup data objects deleted, catalog records not counted (0 in check mode).
  returned: success
  type: int
  sample: 2
wal_keep_from:
  description:
    - The first archived WAL segment kept - C(segment), C(timeline) and C(backup_id) (the oldest kept physical
      backup). V(null) when there is no kept physical backup with a C(start_wal) (then no WAL is deleted).
  returned: success
  type: dict
  sample: {"segment": "000000010000000000000042", "timeline": 1, "backup_id": "20261120T020000.000Z-F"}
wal_delete_keys:
  description: Archived WAL keys deleted (in check mode - that would be deleted), sorted.
  returned: success
  type: list
  elements: str
  sample: ["pgbackup/main/wal/000000010000000000000041.zst"]
wal_deleted:
  description: Number of archived WAL objects deleted (0 in check mode).
  returned: success
  type: int
  sample: 1
retention_warnings:
  description: Things left alone and why (unreadable records, record keys outside the backup's prefix); also
    emitted as warnings.
  returned: success
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.aws import aws_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module
from ansible_collections.rtx.dr.plugins.module_utils.retention import policy_from_params
from ansible_collections.rtx.dr.plugins.module_utils.retention import run_retention


def argument_spec():
    spec = aws_common_argument_spec()
    spec.update(
        bucket=dict(type="str", required=True),
        prefix=dict(type="str"),
        cluster_name=dict(type="str"),
        physical_keep_last=dict(type="int", default=7),
        physical_keep_days=dict(type="int", default=7),
        pitr_window_days=dict(type="int", default=7),
        logical_keep_last=dict(type="int", default=7),
        logical_keep_days=dict(type="int", default=2555),
        stale_running_hours=dict(type="int", default=24),
    )
    return spec


def retain(module, client_factory=boto3_client):
    params = module.params
    policy_from_params(params)  # option errors before any connection
    s3 = client_factory(params, "s3")
    result = run_retention(params, s3, check_mode=module.check_mode, log=module.log)
    for warning in result["retention_warnings"]:
        module.warn(warning)
    return result


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[["prefix", "cluster_name"]],
        supports_check_mode=True,
    )
    run_module(module, retain)


if __name__ == "__main__":
    main()

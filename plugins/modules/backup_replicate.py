#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_replicate
short_description: Copy the complete PostgreSQL backups and the archived WAL into the replica bucket of a second region
version_added: 0.1.0
description:
  - "Makes the backups of M(rtx.dr.pg_basebackup) and the WAL archive of the WAL agent reachable from the second
    region: every complete backup of the primary catalog (C(<prefix>/catalog/*.json)) that is missing or incomplete
    in O(replica_bucket) is copied there, then the archived WAL segments and timeline history files the replica
    lacks. The collection copies itself instead of using S3 Cross-Region Replication (see C(docs/cross_region.md)) so
    that every copy is checked."
  - "Objects are copied server-side (C(CopyObject) issued to the replica region), encrypted with SSE-KMS with
    O(replica_kms_key_id) (a KMS key never leaves its region), with their metadata and C(sha256) tag kept. Each
    copy is checked - size and C(sha256) (metadata or tag) equal to the catalog record (WAL - to the source object)."
  - "The catalog record of a backup is written LAST, with C(bucket), C(kms_key_id) and C(kms_key_arn) of the
    replica and C(replica_of) (the primary bucket, region and key): a record in the replica means every object of
    the backup is there. An interrupted run leaves no record, and the next run completes the copy."
  - "WAL is copied from the C(start_wal) of the oldest complete physical backup of the primary (everything when
    there is none), the range of M(rtx.dr.wal_archive_status)."
  - "Idempotent - a second run copies nothing (C(changed=false)). Nothing is ever deleted or overwritten: an object
    of the replica with the same key but another size or C(sha256) (or a replica record listing other objects) fails
    the task naming the key. Retention of the replica is M(rtx.dr.backup_retention) run against the replica bucket."
options:
  bucket:
    description:
      - The primary bucket (the one M(rtx.dr.pg_basebackup) and the WAL agent write to), in O(region).
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the backups, the same in both buckets. Defaults to C(pgbackup/<cluster_name>).
      - One of O(prefix) and O(cluster_name) is required.
    type: str
  cluster_name:
    description:
      - Cluster name giving the default O(prefix) C(pgbackup/<cluster_name>).
    type: str
  replica_bucket:
    description:
      - The bucket of the second region that receives the copies (C(s3_storage_replica_bucket) of the
        M(rtx.dr.s3_storage) role).
    type: str
    required: true
  replica_region:
    description:
      - Region of O(replica_bucket) and of O(replica_kms_key_id). Defaults to O(region).
    type: str
  replica_endpoint_url:
    description:
      - Endpoint URL of the replica region (S3-compatible stores, the lab). Defaults to O(endpoint_url).
    type: str
  replica_kms_key_id:
    description:
      - KMS key of the replica region (alias, key id or ARN) that encrypts the copies. An alias is resolved to the
        key ARN in O(replica_region).
      - Required unless O(encryption=none).
    type: str
  encryption:
    description:
      - V(aws:kms) encrypts every copy with O(replica_kms_key_id); V(none) lets the bucket's default encryption apply.
    type: str
    default: aws:kms
    choices: [aws:kms, none]
  backup_id:
    description:
      - Copy only this backup (e.g. the one just taken). Default - every complete backup.
    type: str
  backups:
    description:
      - Copy the backups (catalog records and their objects).
    type: bool
    default: true
  wal:
    description:
      - Copy the archived WAL segments and timeline history files the replica lacks.
    type: bool
    default: true
  wal_segment_size:
    description:
      - WAL segment size of the cluster in bytes (C(SHOW wal_segment_size)).
    type: int
    default: 16777216
attributes:
  check_mode:
    support: full
    details: Check mode lists what would be copied (RV(copied_backups), RV(copied_segments)); nothing is written.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - "The credentials need C(s3:ListBucket) and C(s3:GetObject) on O(bucket), C(s3:ListBucket), C(s3:GetObject) and
    C(s3:PutObject) on O(replica_bucket), C(kms:Decrypt) on the primary key and C(kms:GenerateDataKey) and
    C(kms:DescribeKey) on the replica key."
  - The copies are made by S3 itself; no backup data passes through the host running the module.
seealso:
  - module: rtx.dr.pg_basebackup
  - module: rtx.dr.backup_retention
  - module: rtx.dr.wal_archive_status
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rtx.dr.aws
"""

EXAMPLES = r"""
- name: Copy the backup just taken, and the WAL the replica lacks, to us-west-2
  rtx.dr.backup_replicate:
    bucket: rtx-dr-backups-main
    cluster_name: main
    region: us-east-1
    replica_bucket: rtx-dr-backups-main-west
    replica_region: us-west-2
    replica_kms_key_id: alias/rtx-dr-backups
    backup_id: "{{ backup_result.backup_id }}"
  delegate_to: localhost

- name: Show what the replica lacks
  rtx.dr.backup_replicate:
    bucket: rtx-dr-backups-main
    prefix: pgbackup/main
    replica_bucket: rtx-dr-backups-main-west
    replica_region: us-west-2
    replica_kms_key_id: alias/rtx-dr-backups
  check_mode: true
  delegate_to: localhost
  register: replica_plan
"""

RETURN = r"""
bucket:
  description: The primary bucket.
  returned: success
  type: str
  sample: rtx-dr-backups-main
replica_bucket:
  description: The replica bucket.
  returned: success
  type: str
  sample: rtx-dr-backups-main-west
replica_region:
  description: The region of the replica bucket.
  returned: success
  type: str
  sample: us-west-2
prefix:
  description: The key prefix, the same in both buckets.
  returned: success
  type: str
  sample: pgbackup/main
backups:
  description:
    - One entry per complete backup of the primary considered, oldest first - C(backup_id), C(kind), C(action)
      (V(copied), V(up_to_date) or V(skipped)), C(objects) and C(bytes) copied (in check mode - to copy).
  returned: success
  type: list
  elements: dict
  sample:
    - {backup_id: "20261127T020000.000Z-F", kind: physical, action: copied, objects: 2, bytes: 52428800}
copied_backups:
  description: Ids of the backups copied (in check mode - that would be copied).
  returned: success
  type: list
  elements: str
  sample: ["20261127T020000.000Z-F"]
copied_segments:
  description: Names of the WAL segments and timeline history files copied (in check mode - that would be copied).
  returned: success
  type: list
  elements: str
  sample: ["00000002.history", "000000020000000000000042"]
copied_objects:
  description: Number of backup objects copied (catalog records not counted).
  returned: success
  type: int
  sample: 2
copied_bytes:
  description: Bytes copied - backup objects and WAL (in check mode - backup objects only).
  returned: success
  type: int
  sample: 69206016
wal_from:
  description: First WAL segment of the range copied (C(start_wal) of the oldest complete physical backup), or null.
  returned: success
  type: str
  sample: "000000010000000000000040"
replicate_warnings:
  description: Backups left alone and why (a replica record that is not complete); also emitted as warnings.
  returned: success
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module
from ansible_collections.rtx.dr.plugins.module_utils.replicate import check_options
from ansible_collections.rtx.dr.plugins.module_utils.replicate import replica_client_params
from ansible_collections.rtx.dr.plugins.module_utils.replicate import replicate
from ansible_collections.rtx.dr.plugins.module_utils.replicate import replicate_argument_spec


def argument_spec():
    return replicate_argument_spec()


def copy(module, client_factory=boto3_client):
    params = module.params
    check_options(params)  # option errors before any connection
    replica = replica_client_params(params)
    result = replicate(params, client_factory(params, "s3"), client_factory(replica, "s3"),
                       kms=lambda: client_factory(replica, "kms"), check_mode=module.check_mode, log=module.log)
    for warning in result["replicate_warnings"]:
        module.warn(warning)
    return result


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[["prefix", "cluster_name"]],
        supports_check_mode=True,
    )
    run_module(module, copy)


if __name__ == "__main__":
    main()

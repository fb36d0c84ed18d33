#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: s3_backup_verify
short_description: Verify the PostgreSQL backups in S3 written by rtx.dr.pg_basebackup, reading only S3
version_added: 0.1.0
description:
  - "Checks one, the latest or all complete backups written by M(rtx.dr.pg_basebackup) using nothing but the
    S3 bucket (and KMS to resolve key ARNs), so it works after the database is lost. It runs wherever boto3
    is installed, normally the control node (C(delegate_to: localhost))."
  - "Catalog record C(<prefix>/catalog/<backup_id>.json): status C(complete), a known C(format_version), its
    own C(sha256) metadata."
  - "Every object of the record: exists with the recorded size, SSE-KMS with the expected key (O(expected_kms_key_id),
    else the record's C(kms_key_arn)), C(sha256) metadata (or tag, on multipart uploads) equal to the record
    and, with O(checksums), the SHA256 recomputed by streaming the object back in chunks (memory stays bounded)."
  - "Physical backups: the C(backup_manifest) object's own Manifest-Checksum, its file count, total size and checksum
    against the record; with O(check_contents) the base tar is decompressed as it streams and every file of the
    manifest must be in it with the same size, with no extra data file, and the WAL segments from the record's
    C(start_wal) to C(stop_wal) must be in C(pg_wal/) of the tar (or, for a backup without WAL, in the WAL archive
    C(<prefix>/wal/))."
  - "Logical backups: with O(check_contents), each dump must start with the C(pg_dump) custom-format magic C(PGDMP)."
  - The module never writes, deletes or tags anything; its S3 client only allows C(HeadBucket), C(HeadObject),
    C(GetObject) and C(ListObjectsV2), its KMS client only C(DescribeKey). It always reports C(changed=false).
  - Any finding fails the task with a message naming the backup, the object and what is wrong; RV(backups) still
    holds every finding.
options:
  bucket:
    description:
      - The S3 bucket the backups and their catalog are in.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the backups in O(bucket), as used by M(rtx.dr.pg_basebackup).
      - Defaults to C(pgbackup/<cluster_name>). One of O(prefix) and O(cluster_name) is required, as the server
        cannot be asked for its C(cluster_name).
    type: str
  cluster_name:
    description:
      - Cluster name giving the default O(prefix) C(pgbackup/<cluster_name>).
    type: str
  select:
    description:
      - V(latest) verifies the newest complete backup of O(kind).
      - V(all) verifies every complete backup of O(kind); records that are not complete are listed in RV(skipped).
      - V(id) verifies O(backup_id), whatever its status (a backup that is not complete is a finding).
      - Defaults to V(id) when O(backup_id) is set, else V(latest).
    type: str
    choices: [ latest, all, id ]
  backup_id:
    description:
      - The backup to verify with O(select=id), for example C(20261127T031500.123Z-F).
    type: str
  kind:
    description:
      - Kind of backups O(select=latest) and O(select=all) consider.
      - Defaults to V(physical) for O(select=latest) and V(any) otherwise.
    type: str
    choices: [ physical, logical, any ]
  expected_kms_key_id:
    description:
      - The KMS key (C(alias/<name>), key id or ARN) every object must be encrypted with. It is resolved to its
        ARN with C(kms:DescribeKey).
      - Defaults to the C(kms_key_arn) stored in each backup's catalog record.
    type: str
  checksums:
    description:
      - Recompute the SHA256 of every object by reading it back from S3 and compare it with the catalog record.
      - This reads every byte of the backups (and costs S3 GET traffic).
    type: bool
    default: true
  check_contents:
    description:
      - Physical backups - decompress the base tar as it streams and compare it with the C(backup_manifest)
        (files and sizes) and check the WAL the backup needs.
      - Logical backups - check the C(pg_dump) custom-format header of every dump.
    type: bool
    default: true
  require_encryption:
    description:
      - A backup whose record says C(encryption=none) is a finding.
    type: bool
    default: true
  deep:
    description:
      - The hook of the restore-based check. The module only reads S3, so it cannot restore; V(true) fails with a
        message pointing to C(playbooks/verify_backups.yml -e verify_deep=true), which runs these S3 checks and then
        hands the verified backup over to C(playbooks/restore.yml) C(restore_verify_only=true) (restore into a
        scratch server, consistency, C(pg_amcheck) / SQL checks, teardown).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: The module only reads; check mode performs the same reads and checks.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Memory stays bounded whatever the backup size - objects are read in 1 MiB chunks and the tar is observed
    without keeping file contents (only member names and sizes, and the small C(backup_manifest)/C(backup_label)).
  - The C(pg_wal/) check assumes the WAL segment size found in the tar (16 MiB when no segment is there); the WAL
    archive check assumes 16 MiB segments.
  - The WAL archive is searched as C(<prefix>/wal/<timeline>/<segment>[.ext]) or any key under C(<prefix>/wal/)
    whose base name starts with the segment name.
  - The credentials need C(s3:ListBucket) and C(s3:GetObject) on the bucket and C(kms:Decrypt) and
    C(kms:DescribeKey) on the backup key.
seealso:
  - module: rtx.dr.pg_basebackup
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rtx.dr.aws
"""

EXAMPLES = r"""
- name: Verify the latest physical backup from the control node
  rtx.dr.s3_backup_verify:
    bucket: rtx-dr-backups
    cluster_name: main
    expected_kms_key_id: alias/rtx-dr-backups
    region: eu-west-1
  delegate_to: localhost
  run_once: true

- name: Verify every complete backup, without reading the data back (metadata checks only)
  rtx.dr.s3_backup_verify:
    bucket: rtx-dr-backups
    prefix: pgbackup/main
    select: all
    checksums: false
    check_contents: false
  delegate_to: localhost
  run_once: true

- name: Verify one logical backup in a lab S3 endpoint
  rtx.dr.s3_backup_verify:
    bucket: lab-backups
    prefix: pgbackup/main
    backup_id: "20261127T031500.123Z-L"
    endpoint_url: http://moto:5000
  delegate_to: localhost
  register: verification
"""

RETURN = r"""
bucket:
  description: The bucket.
  returned: success or findings
  type: str
  sample: rtx-dr-backups
prefix:
  description: The key prefix the backups were looked up under.
  returned: success or findings
  type: str
  sample: pgbackup/main
select:
  description: The selection used (V(latest), V(all) or V(id)).
  returned: success or findings
  type: str
  sample: latest
kind:
  description: The kind of backups considered (V(physical), V(logical) or V(any)).
  returned: success or findings
  type: str
  sample: physical
expected_kms_key_arn:
  description: ARN of O(expected_kms_key_id); V(null) when the records' keys were used.
  returned: success or findings
  type: str
  sample: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
backups:
  description:
    - One entry per backup verified.
    - C(backup_id), C(kind), C(status) (of its record), C(ok) (no finding), C(findings) (list of
      C({object, check, message}), C(object) being the S3 key concerned or V(null)), C(objects_checked),
      C(bytes_read) (bytes downloaded), C(seconds), C(checks) (names of the checks that ran) and C(wal)
      (C(needed), C(found), C(where), C(start_wal), C(stop_wal); V(null) when the WAL was not checked).
    - "Check names: C(record), C(record_status), C(record_format), C(record_checksum), C(exists), C(size),
      C(encryption), C(kms_key), C(metadata_sha256), C(read), C(checksum), C(manifest), C(contents), C(wal),
      C(dump_format)."
  returned: success or findings
  type: list
  elements: dict
  sample:
    - backup_id: "20261127T031500.123Z-F"
      kind: physical
      status: complete
      ok: false
      findings:
        - object: pgbackup/main/base/20261127T031500.123Z-F/base.tar.zst
          check: checksum
          message: "checksum mismatch: recomputed SHA256 5e88..., the record says 9f86... (52000000 bytes read)"
      objects_checked: 2
      bytes_read: 52140000
      seconds: 1.9
      checks: [record, exists, size, encryption, metadata_sha256, manifest, checksum, contents, wal]
      wal: {needed: 1, found: 1, where: "pg_wal/ of the tar", start_wal: "000000010000000000000002",
            stop_wal: "000000010000000000000002"}
skipped:
  description: Records passed over by O(select=latest)/O(select=all) because they are not complete (C(backup_id), C(status)).
  returned: success or findings
  type: list
  elements: dict
  sample: [{"backup_id": "20261127T041500.000Z-F", "status": "running"}]
verified:
  description: Number of backups verified without any finding.
  returned: success or findings
  type: int
  sample: 1
failed_count:
  description: Number of backups with at least one finding (then the task fails).
  returned: success or findings
  type: int
  sample: 0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module
from ansible_collections.rtx.dr.plugins.module_utils.verify import check_options
from ansible_collections.rtx.dr.plugins.module_utils.verify import failure_message
from ansible_collections.rtx.dr.plugins.module_utils.verify import verify_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.verify import verify_backups


def argument_spec():
    return verify_argument_spec()


def verify(module, client_factory=boto3_client):
    params = module.params
    check_options(params)  # option errors before any connection
    s3 = client_factory(params, "s3")

    def kms_factory():
        return client_factory(params, "kms")

    result = verify_backups(params, s3, kms=kms_factory, log=module.log)
    if result["failed_count"]:
        raise RtxDrError(
            failure_message(result["backups"], params["bucket"]),
            hint="Do not rely on the failed backup(s) for a restore: see backups[].findings, restore damaged "
            "objects from a bucket version if versioning is on, and take a new backup.",
            details=result,
        )
    result["changed"] = False
    return result


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[["prefix", "cluster_name"]],
        required_if=[["select", "id", ["backup_id"]]],
        supports_check_mode=True,
    )
    run_module(module, verify)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_basebackup
short_description: Take an encrypted, checksummed PostgreSQL backup straight into S3
version_added: 0.1.0
description:
  - Runs on the database host (normally the current primary) and streams a backup into S3 without
    writing it to local disk.
  - With O(kind=physical), runs C(pg_basebackup -D - -Ft -X fetch --checkpoint=fast --manifest-checksums=CRC32C)
    and streams its tar output through a compressor into an S3 multipart upload as
    C(<prefix>/base/<backup_id>/base.tar[.gz|.lz4|.zst]); the C(backup_manifest) is also stored as
    C(<prefix>/base/<backup_id>/backup_manifest). The WAL needed to make the backup consistent is inside
    the tar (C(pg_wal/)).
  - With O(kind=logical), runs C(pg_dump -Fc) for each database of O(databases) into
    C(<prefix>/logical/<backup_id>/<database>.dump).
  - "Every object is encrypted with SSE-KMS (unless O(encryption=none)) and carries its SHA256 - in the
    object metadata (C(sha256), next to C(backup-id)) when it is sent in one PUT, as the object tag C(sha256)
    when it is a multipart upload (the big C(base.tar)): S3 fixes an object's metadata when a multipart upload
    starts, and changing it later is a self-copy that, in the versioned backup bucket, keeps every byte twice
    (a noncurrent version for 30 days, or for the Object Lock retention). Needs C(s3:PutObjectTagging)."
  - The catalog record C(<prefix>/catalog/<backup_id>.json) is the source of truth. It is written with
    status C(running) first and C(complete) only after every object is uploaded and checksummed.
    On any failure, or SIGTERM/SIGINT, the child process is killed, unfinished uploads are aborted,
    objects already written are deleted and the record says C(failed) with the error.
  - Before any data moves, the bucket, the KMS key and PostgreSQL are checked (read-only). Then multipart
    uploads left behind by runs that died are aborted (see O(stale_upload_seconds)).
  - After the catalog says complete, a row is added to C(<audit_schema>.backup_history) in O(audit_db).
    If that fails the backup still succeeds and RV(audit) says C(written=false) and why.
options:
  kind:
    description:
      - V(physical) takes a base backup of the whole cluster with C(pg_basebackup).
      - V(logical) takes C(pg_dump) custom-format dumps of O(databases).
    type: str
    choices: [ physical, logical ]
    default: physical
  bucket:
    description:
      - The S3 bucket the backup and its catalog record are written to. It must exist.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the backups of this cluster in O(bucket).
      - Defaults to C(pgbackup/<cluster_name>).
    type: str
  cluster_name:
    description:
      - Name of the cluster in the catalog and the default O(prefix).
      - Defaults to the server's C(cluster_name) setting, else the host name.
    type: str
  label:
    description:
      - Backup label passed to C(pg_basebackup --label) and stored in the catalog.
      - Defaults to C(rtx.dr <backup_id>).
    type: str
  compression:
    description:
      - Client-side compression of physical backups.
      - V(zstd) (the default) needs the C(zstandard) Python module, V(lz4) the C(lz4) module, on the target host.
      - Logical backups are compressed by C(pg_dump) itself with gzip (PostgreSQL 15 C(pg_dump) supports no
        other method); V(none) dumps uncompressed (C(-Z 0)), any other value uses gzip.
    type: str
    choices: [ zstd, gzip, lz4, none ]
    default: zstd
  compression_level:
    description:
      - Compression level. Defaults to 3 for V(zstd) (1-22), 6 for V(gzip) (0-9), 0 for V(lz4) (0-16).
      - For logical backups only used with O(compression=gzip); else level 6.
    type: int
  compression_workers:
    description:
      - Number of zstd worker threads; V(0) compresses in one thread (the module's compressor thread, next to
        the thread reading C(pg_basebackup)).
      - When not set, 2 workers on a host with 2 or more usable CPU cores and O(compression_level) at most 6,
        else V(0). Higher levels are not threaded by default because every worker holds its own, larger,
        compression context (about 90 MB each at level 19).
      - With workers, zstd compresses 512 KiB jobs (its minimum, which bounds their buffers). The stored stream
        is one zstd frame whatever the number of workers.
      - Only used with O(compression=zstd). RV(compression) says how many were used (C(workers)).
    type: int
  manifest_checksums:
    description:
      - Algorithm of the per-file checksums in the C(backup_manifest) (C(pg_basebackup --manifest-checksums)),
        checked by C(pg_verifybackup) after a restore.
      - V(CRC32C), PostgreSQL's own default, detects damage as well as a SHA for this purpose. The manifest lies
        next to the backup in the same bucket, so a SHA gives no protection against tampering that the object
        SHA256 (catalog, metadata or tag) does not give already. A SHA costs the server CPU on every backed-up byte
        (benchmark in docs/benchmarks.md, about 0.3 CPU s per 460 MB on the lab's cores).
      - The manifest's own C(Manifest-Checksum) is SHA256 whatever this is, and is checked by the module.
    type: str
    default: CRC32C
    choices: [CRC32C, SHA224, SHA256, SHA384, SHA512, NONE]
  encryption:
    description:
      - V(aws:kms) encrypts every object with SSE-KMS under O(kms_key_id).
      - V(none) stores the objects without SSE-KMS (the bucket's default encryption still applies);
        it must be chosen explicitly.
    type: str
    choices: [ "aws:kms", none ]
    default: "aws:kms"
  kms_key_id:
    description:
      - The KMS key for SSE-KMS, as C(alias/<name>), key id or key ARN.
      - Required when O(encryption=aws:kms); the module refuses to run without it.
    type: str
  require_bucket_encryption:
    description:
      - With O(encryption=aws:kms), refuse (before any data moves) a bucket whose default encryption is not
        SSE-KMS, because such a bucket was not set up for backups (see the role C(rtx.dr.s3_storage)).
    type: bool
    default: true
  part_size_mb:
    description:
      - Size of each S3 multipart upload part in MiB (at least 5). At most two parts are held in memory.
      - S3 allows 10000 parts, so the largest object is 10000 times this size (156 GiB with the default).
    type: int
    default: 16
  databases:
    description:
      - Databases to dump with O(kind=logical). Defaults to every database that is not a template
        and allows connections.
    type: list
    elements: str
  audit_db:
    description:
      - Database holding the DR audit schema (see the C(rtx.dr.dr_schema) role).
    type: str
    default: rtx
  audit_schema:
    description:
      - Schema of the C(backup_history) table in O(audit_db).
    type: str
    default: dr
  pg_bin_dir:
    description:
      - Directory of C(pg_basebackup) and C(pg_dump).
      - Defaults to C(/usr/lib/postgresql/<server major version>/bin), then the C(PATH).
    type: path
  stale_upload_seconds:
    description:
      - Unfinished multipart uploads under O(prefix) started more than this many seconds ago, or belonging to
        a backup whose record is not C(running), or is C(running) but started more than this many seconds ago
        (a run that was killed), are aborted at the start of each run.
    type: int
    default: 3600
  progress_interval:
    description:
      - Seconds between progress samples (logged and returned in RV(progress)); V(0) disables them.
    type: int
    default: 30
  timeout:
    description:
      - Seconds after which the C(pg_basebackup)/C(pg_dump) child is killed and the backup fails; V(0) means no limit.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    details: Runs the read-only preflight (bucket, KMS key, PostgreSQL) and reports what would be backed up and where.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Server-side compression (C(-Z server-zstd)) is not used because PostgreSQL refuses to inject the backup
    manifest into a server-compressed tar written to standard output; the module compresses on the client side.
  - O(compression=zstd) is the default because, measured on 1 GB of pgbench data streamed to S3, client zstd
    level 3 took 3.35 s for 50 MB, against 12.9 s for 62 MB with gzip level 6 and 3.26 s for 125 MB with lz4.
  - Backups run as a pipeline of three threads. The main thread reads the child's pipe in 1 MiB chunks and
    watches the tar headers; a compressor thread compresses them in order (zlib, zstandard and lz4 release the
    GIL while compressing), computes the SHA256 and fills the S3 part; a third thread uploads part N while part
    N+1 fills. Memory stays bounded. At most 4 chunks wait between the reader and the compressor (6 MiB with
    the chunk being read and the one being compressed), the part being filled and the part in flight take
    2 x O(part_size_mb), and the zstd level 3 state is about 5 MB in one thread, 6 to 16 MB with 2 workers
    (512 KiB jobs). That is about 45 MiB (one thread) or 56 MiB (2 workers) with the defaults, on top of the
    Python runtime.
  - CPU is spent once per byte where it can be. The pipe from C(pg_basebackup) is widened to one chunk (1 MiB, Linux),
    so that both sides take turns once per chunk instead of every 64 KiB. The two part buffers take turns and a
    full part goes to botocore without a copy. Over a plain C(http://) O(endpoint_url) botocore signs the SHA256
    of every request body, so its default extra CRC32 (botocore 1.36 and later) is turned off there; over HTTPS
    the CRC32 stays, as it is what replaces the signed body hash. The object's own SHA256 (catalog and
    C(sha256) metadata or tag) is computed once, on the compressed stream; no SHA256 of the uncompressed stream is
    computed besides PostgreSQL's per-file manifest checksums (O(manifest_checksums)).
  - C(pg_basebackup -D -) only works for clusters without additional tablespaces.
  - The login role needs the C(REPLICATION) attribute (physical) or read access to the databases (logical),
    and C(pg_hba.conf) must allow a replication connection for physical backups.
  - Passwords are passed to C(pg_basebackup)/C(pg_dump) only through their environment (C(PGPASSWORD)), never
    on the command line.
  - Missing C(lz4)/C(zstandard) modules are reported with the Debian (C(python3-lz4), C(python3-zstandard))
    and pip package names.
seealso:
  - module: rtx.dr.pg_node_info
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rtx.dr.postgres
  - rtx.dr.aws
requirements:
  - zstandard (for O(compression=zstd))
  - lz4 (for O(compression=lz4))
"""

EXAMPLES = r"""
- name: Nightly physical backup of the current primary, SSE-KMS encrypted
  rtx.dr.pg_basebackup:
    bucket: rtx-dr-backups
    kms_key_id: alias/rtx-dr-backups
    region: eu-west-1
  become: true
  become_user: postgres
  register: backup

- name: Show where it went
  ansible.builtin.debug:
    msg: "{{ backup.backup_id }}: {{ backup.size_compressed_bytes }} bytes in {{ backup.duration_seconds }} s"

- name: Logical dump of one database with gzip
  rtx.dr.pg_basebackup:
    kind: logical
    databases: [trading]
    bucket: rtx-dr-backups
    prefix: pgbackup/main
    kms_key_id: arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
    compression: gzip
  become: true
  become_user: postgres

- name: Backup into a lab S3 endpoint without SSE-KMS (explicit)
  rtx.dr.pg_basebackup:
    bucket: lab-backups
    endpoint_url: http://moto:5000
    encryption: none
    compression: lz4
  become: true
  become_user: postgres
"""

RETURN = r"""
format_version:
  description: Version of the catalog record format.
  returned: always
  type: int
  sample: 1
backup_id:
  description: Id of the backup, sortable by time; C(-F) physical, C(-L) logical. C(<backup_id>) in check mode.
  returned: always
  type: str
  sample: "20261127T031500.123Z-F"
label:
  description: The backup label.
  returned: always
  type: str
  sample: "rtx.dr 20261127T031500.123Z-F"
kind:
  description: V(physical) or V(logical).
  returned: always
  type: str
  sample: physical
cluster_name:
  description: Cluster name used in the catalog.
  returned: always
  type: str
  sample: main
system_identifier:
  description: The cluster's system identifier (text), V(null) when the login role may not read it.
  returned: always
  type: str
  sample: "7301486431285467349"
timeline:
  description: Timeline of the backup (physical); V(null) for logical backups.
  returned: always
  type: int
  sample: 1
start_lsn:
  description: Backup start LSN (physical).
  returned: always
  type: str
  sample: "0/2000028"
stop_lsn:
  description: Backup stop LSN (physical).
  returned: always
  type: str
  sample: "0/2000100"
start_wal:
  description: First WAL segment the backup needs (physical).
  returned: always
  type: str
  sample: "000000010000000000000002"
stop_wal:
  description: WAL segment holding the stop LSN (physical).
  returned: always
  type: str
  sample: "000000010000000000000002"
started_at:
  description: Start time, ISO 8601 UTC.
  returned: always
  type: str
  sample: "2026-11-27T03:15:00.123000Z"
finished_at:
  description: End time, ISO 8601 UTC.
  returned: success
  type: str
  sample: "2026-11-27T03:15:04.456000Z"
size_raw_bytes:
  description: Bytes produced by C(pg_basebackup)/C(pg_dump) before client compression.
  returned: always
  type: int
  sample: 1100000000
size_compressed_bytes:
  description: Bytes stored in S3 (sum of the sizes in RV(objects)).
  returned: always
  type: int
  sample: 52000000
duration_seconds:
  description: Wall clock duration of the backup.
  returned: success
  type: float
  sample: 3.4
throughput_bytes_per_s:
  description: RV(size_raw_bytes) / RV(duration_seconds).
  returned: success
  type: float
  sample: 323529411.76
compression:
  description: Compression used, C(by=pg_dump) for logical backups compressed by C(pg_dump).
  returned: always
  type: dict
  sample: {"method": "zstd", "level": 3, "workers": 2}
encryption:
  description: V(aws:kms) or V(none).
  returned: always
  type: str
  sample: "aws:kms"
kms_key_id:
  description: The KMS key as given in O(kms_key_id).
  returned: always
  type: str
  sample: alias/rtx-dr-backups
kms_key_arn:
  description: ARN of the KMS key, resolved with C(kms:DescribeKey).
  returned: always
  type: str
  sample: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
objects:
  description:
    - Objects written. Each has C(key), C(role) (C(base), C(manifest) or C(dump)), C(size), C(sha256)
      and, for dumps, C(database).
    - In check mode, only C(key) patterns.
  returned: always
  type: list
  elements: dict
  sample: [{"key": "pgbackup/main/base/20261127T031500.123Z-F/base.tar.zst", "role": "base", "size": 52000000,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}]
manifest:
  description:
    - Summary of the backup manifest (physical) - C(files), C(total_size), C(checksum_algorithm),
      C(manifest_sha256) (its own Manifest-Checksum) and C(wal_ranges).
  returned: success
  type: dict
tar:
  description: Counters of the tar stream (physical) - C(members), C(files), C(file_bytes), C(bytes), C(finished).
  returned: success and kind is physical
  type: dict
wal_included:
  description: Whether the WAL needed for consistency is inside the backup (V(true) for physical).
  returned: always
  type: bool
  sample: true
databases:
  description: Databases dumped (logical); V(null) for physical backups.
  returned: always
  type: list
  elements: str
  sample: [trading]
pg_version:
  description: C(server_version_num) and C(server_version) of the server.
  returned: always
  type: dict
  sample: {"server_version_num": 150008, "server_version": "15.8 (Debian 15.8-0+deb12u1)"}
host:
  description: Host name the backup was taken on.
  returned: always
  type: str
  sample: db1
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: rtx-dr-backups
prefix:
  description: The key prefix.
  returned: always
  type: str
  sample: pgbackup/main
status:
  description: V(complete) after a backup; V(planned) in check mode.
  returned: always
  type: str
  sample: complete
error:
  description: Always V(null) on success (failures fail the task).
  returned: always
  type: str
  sample: null
audit:
  description:
    - Whether the row in C(<audit_schema>.backup_history) was written (C(written)), why not (C(reason)),
      and where (C(database), C(schema)).
  returned: always
  type: dict
  sample: {"written": true, "reason": null, "database": "rtx", "schema": "dr"}
reaped_uploads:
  description: Abandoned multipart uploads aborted at the start of the run (C(key), C(upload_id), C(backup_id), C(reason)).
  returned: always
  type: list
  elements: dict
  sample: []
command:
  description:
    - The argv that was run (physical), or the list of argvs (logical). No secrets are on it.
    - In check mode, the command that would run.
  returned: always
  type: list
  sample: ["/usr/lib/postgresql/15/bin/pg_basebackup", "-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast"]
progress:
  description: Periodic samples C({bytes, seconds}) of raw bytes read, every O(progress_interval) seconds, plus the last.
  returned: always
  type: list
  elements: dict
  sample: [{"bytes": 1048576000, "seconds": 30.0}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client
from ansible_collections.rtx.dr.plugins.module_utils.backup import BackupRun
from ansible_collections.rtx.dr.plugins.module_utils.backup import backup_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module


def argument_spec():
    return backup_argument_spec()


def backup(module, run_factory=BackupRun, client_factory=boto3_client):
    params = module.params
    probe = run_factory(params, s3=None, get_bin_path=module.get_bin_path, log=module.log)
    probe.validate()  # option errors (e.g. aws:kms without kms_key_id) before any connection
    s3 = client_factory(params, "s3")
    kms = client_factory(params, "kms") if params["encryption"] == "aws:kms" else None
    run = run_factory(params, s3=s3, kms=kms, get_bin_path=module.get_bin_path, log=module.log)
    run.preflight()
    if module.check_mode:
        result = run.plan()
        result.update(
            audit={"written": False, "reason": "check mode", "database": params["audit_db"],
                   "schema": params["audit_schema"]},
            reaped_uploads=[],
            progress=[],
            changed=True,
        )
        return result
    reaped = run.reap()
    result = run.run_and_audit()
    result["reaped_uploads"] = reaped
    result["changed"] = True
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, backup)


if __name__ == "__main__":
    main()

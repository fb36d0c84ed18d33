#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_restore
short_description: Restore a physical base backup from S3 to a point in time, or verify it in a scratch server
version_added: 0.1.0
description:
  - "Restores a complete physical backup written by M(rtx.dr.pg_basebackup) into a data directory on the target host
    and configures recovery from the WAL archive (C(restore_command) = the WAL agent's C(fetch)) to the requested
    target. Runs on the database host as the PostgreSQL OS user (C(become_user: postgres))."
  - "Before anything is touched: the base backup is picked from the S3 catalog (the newest complete physical backup
    that finished before the target and lies on the path to the target timeline, or O(backup_id)); the timeline
    history is read from the archive and every WAL segment from the backup's stop position to the target must be
    archived. A gap fails with the missing segment's name. The destination must not hold a running server and must be
    empty unless O(force) (the old directory is then moved aside, never deleted); free space must suffice."
  - "The base tar streams from S3, its SHA256 is computed on the way and compared with the catalog; it is unpacked
    into C(<data_directory>.rtx-dr-partial), checked with C(pg_verifybackup) against the backup manifest, and only
    then renamed to O(data_directory). A failure removes the partial directory."
  - "Recovery settings are appended to C(postgresql.auto.conf) with C(recovery.signal). C(synchronous_standby_names)
    and C(primary_conninfo) are emptied (a lone restored server would otherwise wait for standbys at every commit),
    and with O(archive_mode=off) archiving is turned off so that the restored server never writes to the production
    archive."
  - "O(mode=verify) is the verify-only drill: restore into a new directory under O(data_directory), start a scratch
    server on a private Unix socket and port O(port) (no TCP), follow recovery until the target state, run the checks
    (consistency and target reached from the server log, C(pg_amcheck), O(sql_checks)), then stop the scratch
    server and remove its directory whatever happened (unless O(keep_scratch))."
  - In check mode everything up to the destination checks runs (the plan, the WAL chain, the refusals); nothing is
    written.
extends_documentation_fragment:
  - rtx.dr.aws
options:
  bucket:
    description: The S3 bucket of the backups, their catalog and the WAL archive.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the backups in O(bucket). Defaults to C(pgbackup/<cluster_name>).
    type: str
  cluster_name:
    description: Cluster name giving the default O(prefix).
    type: str
  backup_id:
    description:
      - Restore this backup. Default is the newest complete physical backup before the target.
    type: str
  target:
    description:
      - V(latest) replays all archived WAL (a gap anywhere after the backup is an error, because PostgreSQL would
        silently stop at it).
      - V(backup) stops as soon as the backup is consistent (C(recovery_target=immediate)).
      - V(time), V(lsn), V(xid), V(name) stop at O(target_value).
    type: str
    default: latest
    choices: [ latest, backup, time, lsn, xid, name ]
  target_value:
    description:
      - The target for V(time) (ISO 8601 with an explicit time zone), V(lsn) (C(0/5000060)), V(xid) or V(name)
        (a restore point created with C(pg_create_restore_point())).
    type: str
  target_inclusive:
    description: Whether recovery stops just after (V(true)) or just before the target (time, LSN, xid).
    type: bool
    default: true
  target_timeline:
    description: V(latest) (follow timeline switches in the archive), V(current) (the backup's timeline) or a number.
    type: str
    default: latest
  target_action:
    description:
      - What the server does at the target; V(pause) keeps it read-only in recovery for inspection.
      - Not used with O(target=latest) (the server is promoted at the end of the archive).
    type: str
    default: promote
    choices: [ promote, pause, shutdown ]
  data_directory:
    description:
      - O(mode=restore) the data directory to create.
      - O(mode=verify) the directory under which a scratch directory C(<restore_id>) is created and removed.
    type: path
    required: true
  mode:
    description: V(restore) restores and configures the data directory; V(verify) runs the verify-only drill.
    type: str
    default: restore
    choices: [ restore, verify ]
  force:
    description:
      - Restore although O(data_directory) is not empty; the old directory is moved aside to
        C(<data_directory>.rtx-dr-before-<restore_id>). A running server is refused even with V(true).
    type: bool
    default: false
  archive_mode:
    description:
      - V(keep) leaves the backup's archiving settings (a restore replacing production keeps archiving; PostgreSQL
        picks a new timeline that is unused in the archive). V(off) turns archiving off.
      - Defaults to V(off) with O(mode=verify) (V(keep) is refused there) and V(keep) otherwise.
    type: str
    choices: [ keep, "off" ]
  port:
    description: Port of the scratch server (O(mode=verify)); it only listens on its private Unix socket.
    type: int
    default: 5499
  pg_bin_dir:
    description: Directory of C(pg_ctl), C(pg_controldata), C(pg_verifybackup) and C(pg_amcheck).
    type: path
  agent_config:
    description: The WAL agent's configuration on the host (written by role M(rtx.dr.backup_schedule)).
    type: path
    default: /etc/rtx-dr/agent.json
  agent_path:
    description: Where role M(rtx.dr.agent_install) put the collection's module_utils for the host agents.
    type: path
    default: /usr/local/lib/rtx-dr
  agent_python:
    description: The Python interpreter of the WAL agent on the host.
    type: path
    default: /usr/bin/python3
  wal_fetch_order:
    description:
      - Which WAL archive the C(restore_command) reads first when the agent configuration has a replica bucket
        (C(docs/cross_region.md)) - V(primary_first), V(replica_first) (the C(_first) orders fall back to the other
        archive), V(primary_only) or V(replica_only).
      - Default - the C(fetch_order) of O(agent_config) (V(replica_first) on hosts of the replica's region).
      - To restore from the replica bucket alone, set O(bucket) and O(region) to the replica's and this to
        V(replica_only).
    type: str
    choices: [primary_first, replica_first, primary_only, replica_only]
  wal_segment_size:
    description: WAL segment size of the cluster in bytes.
    type: int
    default: 16777216
  amcheck:
    description: Run C(pg_amcheck --heapallindexed) on every database of the scratch server (O(mode=verify)).
    type: bool
    default: true
  sql_checks:
    description:
      - SQL checks on the scratch server (O(mode=verify)); the first column of the first row is compared with
        O(sql_checks[].expect) as text when given.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the check in the report.
        type: str
        required: true
      sql:
        description: The query.
        type: str
        required: true
      database:
        description: Database to run it in.
        type: str
        default: postgres
      expect:
        description: Expected value of the first column of the first row, as text.
        type: str
  keep_scratch:
    description: Leave the scratch server running after O(mode=verify) for investigation (reported as a warning).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for recovery to reach the target (O(mode=verify)).
    type: int
    default: 1800
  verify_checksums:
    description: Compare the SHA256 of the downloaded objects with the catalog and run C(pg_verifybackup).
    type: bool
    default: true
  plan_only:
    description:
      - Only pick the backup and check the WAL chain in the archive (no destination checks, nothing written); for
        a plan shown before the destination's server is stopped.
    type: bool
    default: false
  restore_id:
    description:
      - Id of this restore (reports, C(restore_history), the scratch directory's name). Generated when not given.
    type: str
notes:
  - "Requires boto3 and a PostgreSQL driver on the host, and the WAL agent (role M(rtx.dr.backup_schedule))."
  - "Tablespaces are not supported (the S3 base backup holds one tar)."
seealso:
  - module: rtx.dr.pg_basebackup
  - module: rtx.dr.wal_archive_status
author:
  - rtx.dr maintainers (@rtx-dr)
"""

EXAMPLES = r"""
- name: Restore to a point in time into a new data directory
  rtx.dr.backup_restore:
    bucket: rtx-dr-backups-main
    cluster_name: main
    target: time
    target_value: "2026-11-27 03:15:00+00"
    data_directory: /var/lib/postgresql/15/main
  become: true
  become_user: postgres

- name: Weekly restore drill of the latest backup (scratch server, torn down afterwards)
  rtx.dr.backup_restore:
    bucket: rtx-dr-backups-main
    cluster_name: main
    mode: verify
    target: latest
    data_directory: /var/lib/postgresql/rtx-dr-drills
    sql_checks:
      - name: open positions
        database: trading
        sql: SELECT count(*) FROM positions WHERE status = 'open'
  become: true
  become_user: postgres
"""

RETURN = r"""
restore_id:
  description: Id of this restore (also the scratch directory's name in verify mode).
  returned: always
  type: str
  sample: R20261127T120000.000Z
backup_id:
  description: The backup restored.
  returned: success
  type: str
  sample: 20261127T031500.123Z-F
plan:
  description: Backup, target, timeline path and the WAL chain checked in the archive.
  returned: success
  type: dict
  sample: {"backup_id": "20261127T031500.123Z-F", "timeline": 2, "wal": {"needed": 12, "missing": []}}
data_directory:
  description: The restored data directory (the scratch directory in verify mode).
  returned: always
  type: str
  sample: /var/lib/postgresql/15/main
moved_aside:
  description: Where the previous content of O(data_directory) was moved (O(force)).
  returned: when something was moved
  type: str
  sample: /var/lib/postgresql/15/main.rtx-dr-before-R20261127T120000.000Z
download:
  description: Objects downloaded with bytes, SHA256 and seconds.
  returned: when restored
  type: dict
  sample: {"objects": [{"key": "pgbackup/main/base/20261127T031500.123Z-F/base.tar.zst", "bytes": 1000}]}
recovery_settings:
  description: The settings appended to postgresql.auto.conf.
  returned: when restored
  type: dict
  sample: {"recovery_target_time": "2026-11-27 03:15:00+00:00", "recovery_target_action": "promote"}
state:
  description: The scratch server's state at the target (verify mode), with the recovery facts from its log.
  returned: verify mode
  type: dict
  sample: {"in_recovery": false, "timeline": 3, "recovery": {"stopping": "before commit of transaction 812"}}
checks:
  description: Checks run (pg_verifybackup, consistent, target_reached, pg_amcheck, SQL checks) with C(ok).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "pg_amcheck", "ok": true}]
rto_seconds:
  description: Seconds from the start of the module to the scratch server at the target (verify mode).
  returned: verify mode
  type: float
  sample: 41.2
seconds:
  description: Duration of the module.
  returned: success
  type: float
  sample: 45.0
scratch_removed:
  description: Whether the scratch server's directory is gone (verify mode).
  returned: verify mode
  type: bool
  sample: true
commands:
  description: The commands run.
  returned: always
  type: list
  elements: str
  sample: ["/usr/lib/postgresql/15/bin/pg_verifybackup /var/lib/postgresql/15/main.rtx-dr-partial"]
restore_warnings:
  description: Warnings (for example a WAL gap after an xid or name target), also shown as task warnings.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils import postgres
from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client
from ansible_collections.rtx.dr.plugins.module_utils.backup import find_pg_binary
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module
from ansible_collections.rtx.dr.plugins.module_utils.restore import Restore
from ansible_collections.rtx.dr.plugins.module_utils.restore import restore_argument_spec


def argument_spec():
    return restore_argument_spec()


def restore(module, client_factory=boto3_client, connect=postgres.connect):
    params = module.params

    def run(argv, env=None):
        return module.run_command(argv, environ_update=env or {})

    def find_binary(name, version):
        return find_pg_binary(name, params.get("pg_bin_dir"), version, module.get_bin_path)

    job = Restore(params, client_factory(params, "s3"), run, find_binary, connect, log=module.log)
    result = job.execute(check_mode=module.check_mode)
    for warning in result.get("restore_warnings") or []:
        module.warn(warning)
    return result


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[["prefix", "cluster_name"]],
        supports_check_mode=True,
    )
    run_module(module, restore)


if __name__ == "__main__":
    main()

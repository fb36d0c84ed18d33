#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: wal_archive_status
short_description: Report the health of the continuous WAL archiving to S3 - lag, gaps and the recoverable window
version_added: 0.1.0
description:
  - "Reads the archiver of the PostgreSQL server (C(pg_stat_archiver), the C(.ready) files of
    C(pg_wal/archive_status)) and the WAL archive in S3 (C(<prefix>/wal/), written by the WAL agent's C(push)), and
    returns facts for alerting - the last archived segment and time, the archive lag (how long the oldest WAL file
    waiting to be archived has waited, how many segments and bytes wait), the WAL not yet in any archived segment,
    the failed count and last failure, the gaps in the archived WAL and the resulting recoverable window."
  - "The archive lag is measured on the C(.ready) files of C(pg_wal/archive_status) (files complete and waiting
    for the C(archive_command)), not on C(pg_stat_archiver.last_archived_time): on an idle server the last archived
    file gets old although nothing waits, and while archiving falls behind files may be archived every second
    although the oldest waiting one is minutes old."
  - "Gaps are looked for as PostgreSQL's recovery would read the archive: along the timeline path to the latest
    timeline (timeline history files C(<prefix>/wal/<TLI>.history)), the segment holding a switch point read from
    the new timeline, a C(.partial) segment never counting. The check runs from the backup chosen by O(since) (its
    stop LSN, or its start LSN when its WAL is not in the backup) to the newest archived segment."
  - "The recoverable window runs from the stop of that backup to the end of the last archived segment before the
    first gap."
  - "The server is read first, then S3, so that a file C(pg_stat_archiver) reports as archived must be in the
    listing; when it is not, that is a gap."
  - "Thresholds fail the task with a message naming what is wrong and what to do; every fact is still returned.
    A gap fails with O(fail_on_gap); an archive lag above O(max_lag_seconds) on a primary fails."
  - "On a standby, the role is reported and the lag is not measured (the primary archives), unless the standby runs
    with C(archive_mode=always): then it archives the WAL it receives and its own lag is measured and checked."
  - "Streaming mode (C(backup_schedule_wal_stream) of M(rtx.dr.backup_schedule)): the newest streamed partial
    segment under C(<prefix>/wal-stream/) is reported in RV(stream) - which segment, up to which LSN it holds WAL,
    when and by which host it was uploaded, and on a primary how much WAL is in no streamed partial nor archived
    segment. O(max_stream_age_seconds) fails when it is missing or stale."
  - With O(query_server=false), or when the server is down and O(fail_on_unreachable=false), only S3 is read.
  - "The module never writes, deletes or tags anything: its S3 client only allows C(HeadBucket), C(HeadObject),
    C(GetObject) and C(ListObjectsV2) and its SQL only reads. It always reports C(changed=false)."
options:
  bucket:
    description:
      - The S3 bucket the backups and the WAL archive are in.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the backups and the WAL archive in O(bucket), as used by M(rtx.dr.pg_basebackup) and the
        WAL agent (the archive is C(<prefix>/wal/), the catalog C(<prefix>/catalog/)).
      - Defaults to C(pgbackup/<cluster_name>). One of O(prefix) and O(cluster_name) is required.
    type: str
  cluster_name:
    description:
      - Cluster name giving the default O(prefix) C(pgbackup/<cluster_name>).
    type: str
  wal_segment_size:
    description:
      - WAL segment size of the cluster in bytes, needed to read segment names.
      - When the server is read, its C(wal_segment_size) is used instead (with a warning if they differ).
    type: int
    default: 16777216
  query_server:
    description:
      - Read the archiver facts from the PostgreSQL server given by the login options.
      - V(false) reads S3 only (for example from the control node); then RV(lag) and RV(archiver) are V(null)
        and O(max_lag_seconds) is not checked.
    type: bool
    default: true
  fail_on_unreachable:
    description:
      - Whether a server that cannot be reached (down, starting, no route) fails the task.
      - With V(false) such a server is reported in RV(server) and RV(findings) and only S3 is read. A refused
        login (password, C(pg_hba.conf), unknown database) always fails.
    type: bool
    default: true
  since:
    description:
      - Where the gap check starts and the recoverable window begins.
      - V(oldest_backup) is the oldest complete physical backup of the catalog, V(latest_backup) the newest one;
        anything else is the id of a complete physical backup, for example C(20261127T031500.123Z-F).
    type: str
    default: oldest_backup
  max_lag_seconds:
    description:
      - Fail when the oldest WAL file waiting to be archived (the oldest C(.ready) file, RV(lag.oldest_ready)) has
        waited more than this many seconds (RV(lag.seconds)), or when C(archive_mode) is off on a primary.
        Nothing waiting (an idle server, or archiving that keeps up) never fails, however old the last archived
        file is.
      - A healthy server archives a completed segment within seconds; C(archive_timeout) does not add to this lag
        (the segment being written is not waiting yet, see RV(lag.data_at_risk_bytes)).
      - Also fails when the C(.ready) files cannot be listed (the login role is neither a superuser nor a member of
        C(pg_monitor)), since the threshold cannot be checked; the message says so.
      - Checked on a primary, and on a standby with C(archive_mode=always); elsewhere a warning says it was not.
      - Not set (the default), the lag is only reported.
    type: int
  fail_on_gap:
    description:
      - Fail when WAL files recovery needs are missing from the archive (RV(gaps) not empty) - segments, a
        timeline history file, or the file C(pg_stat_archiver) reports as last archived.
    type: bool
    default: true
  max_stream_age_seconds:
    description:
      - "Streaming mode only: fail when no streamed partial segment is under C(<prefix>/wal-stream/), or when the
        newest one (RV(stream.age_seconds)) was uploaded more than this many seconds ago - unless the primary has
        written nothing since (RV(stream.bytes_behind) is V(0): an idle primary uploads nothing new, its stream is
        complete however old)."
      - The uploader sends the partial segment every second while WAL is written, so a few seconds (the lab uses
        30) are enough.
      - Run it on the primary, so that an idle primary is told from a stopped stream; elsewhere (a standby,
        O(query_server=false)) the age alone is checked.
      - The message names the bucket and prefix, the segment, its age and what to check on the primary
        (C(systemctl status rtx-dr-wal-receive rtx-dr-wal-stream), C(journalctl -u rtx-dr-wal-stream)).
      - Not set (the default), the stream is only reported. Leave it unset where streaming mode is off.
    type: int
attributes:
  check_mode:
    support: full
    details: The module only reads; check mode performs the same reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - It runs where both boto3 and a PostgreSQL driver are installed, normally the database host (the WAL agent
    needs boto3 there anyway). With O(query_server=false) no driver is needed.
  - Listing the C(.ready) files uses C(pg_ls_archive_statusdir()) (PostgreSQL 12+), which needs a superuser or
    the C(pg_monitor) role; without it the lag (RV(lag.seconds), RV(lag.segments), RV(lag.bytes)),
    RV(archiver.ready_count) and RV(archiver.oldest_ready) are V(null), RV(lag.error) says why, a warning tells
    how to grant it, and O(max_lag_seconds) fails.
  - The age of a waiting file is the server's C(now()) minus the modification time of its C(.ready) file, which
    PostgreSQL writes once when the file is complete; both come from the database host's clock.
  - "How old the oldest WAL not yet archived is cannot be known exactly: PostgreSQL does not record when a record
    was written. RV(lag.seconds) is a lower bound for the data in the waiting files (their first records are older
    than their completion); the data of the segment being written (RV(lag.data_at_risk_bytes)) is at most about
    C(archive_timeout) old when that is set, as PostgreSQL then switches to a new segment."
  - The credentials need C(s3:ListBucket) and C(s3:GetObject) on the bucket and C(kms:Decrypt) on the key of the
    catalog records and history files.
  - The time of an archived segment is the C(LastModified) time of its S3 object; so is the time of a streamed
    partial segment (RV(stream.uploaded_at)), compared with the clock of the host running the module.
  - A backup's stop time is the C(stop_time) of its catalog record, else its C(finished_at) (a little after the
    stop point).
seealso:
  - module: rtx.dr.s3_backup_verify
  - module: rtx.dr.pg_node_info
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rtx.dr.aws
  - rtx.dr.postgres
"""

EXAMPLES = r"""
- name: Check the WAL archiving of the primary; fail on a gap or a lag over 5 minutes
  rtx.dr.wal_archive_status:
    bucket: rtx-dr-backups
    cluster_name: main
    region: eu-west-1
    max_lag_seconds: 300
  become: true
  become_user: postgres

- name: Report only (for an alerting job), tolerating a server that is down
  rtx.dr.wal_archive_status:
    bucket: rtx-dr-backups
    prefix: pgbackup/main
    fail_on_gap: false
    fail_on_unreachable: false
  become: true
  become_user: postgres
  register: wal_status

- name: Streaming mode - fail when the streamed WAL in S3 is more than 30 s behind the primary
  rtx.dr.wal_archive_status:
    bucket: rtx-dr-backups
    cluster_name: main
    max_stream_age_seconds: 30
  become: true
  become_user: postgres
  register: wal_stream

- name: The recoverable window from the S3 archive alone, on the control node
  rtx.dr.wal_archive_status:
    bucket: rtx-dr-backups
    prefix: pgbackup/main
    query_server: false
    since: latest_backup
  delegate_to: localhost
  run_once: true
  register: wal_window
"""

RETURN = r"""
bucket:
  description: The bucket.
  returned: success or failure of a threshold
  type: str
  sample: rtx-dr-backups
prefix:
  description: The key prefix of the backups and the WAL archive.
  returned: success or failure of a threshold
  type: str
  sample: pgbackup/main
role:
  description: V(primary) or V(standby); V(null) when the server was not read.
  returned: success or failure of a threshold
  type: str
  sample: primary
server:
  description: What was read from the PostgreSQL server (values V(null) when not read).
  returned: success or failure of a threshold
  type: dict
  contains:
    queried:
      description: Whether the server was to be read (O(query_server)).
      type: bool
      sample: true
    reachable:
      description: Whether it could be connected to; V(null) when not queried.
      type: bool
      sample: true
    error:
      description: Why it could not be reached.
      type: str
      sample: null
    in_recovery:
      description: Result of C(pg_is_in_recovery()).
      type: bool
      sample: false
    timeline:
      description: Current timeline (of the WAL file being written on a primary, else C(pg_control_checkpoint())).
      type: int
      sample: 2
    current_lsn:
      description: C(pg_current_wal_lsn()) on a primary.
      type: str
      sample: "0/7000148"
    current_wal:
      description: C(pg_walfile_name(pg_current_wal_lsn())) on a primary.
      type: str
      sample: "000000020000000000000007"
    archive_mode:
      description: The C(archive_mode) setting.
      type: str
      sample: "on"
    archive_timeout:
      description: The C(archive_timeout) setting in seconds.
      type: int
      sample: 60
    wal_segment_size:
      description: The C(wal_segment_size) setting in bytes.
      type: int
      sample: 16777216
    now:
      description: The server's C(now()) the lag is measured at (ISO 8601 UTC).
      type: str
      sample: "2026-11-27T03:20:00.000000Z"
archiver:
  description: The row of C(pg_stat_archiver) (times in ISO 8601 UTC) and the count of C(.ready) files; V(null) when
    the server was not read.
  returned: success or failure of a threshold
  type: dict
  contains:
    archived_count:
      description: Files archived since C(stats_reset).
      type: int
      sample: 1234
    last_archived_wal:
      description: The last file archived.
      type: str
      sample: "000000020000000000000006"
    last_archived_time:
      description: When it was archived.
      type: str
      sample: "2026-11-27T03:19:10.123456Z"
    failed_count:
      description: Failed archive attempts since C(stats_reset).
      type: int
      sample: 0
    last_failed_wal:
      description: The file of the last failed attempt.
      type: str
      sample: null
    last_failed_time:
      description: When it failed.
      type: str
      sample: null
    stats_reset:
      description: When these statistics were reset.
      type: str
      sample: "2026-11-01T00:00:00.000000Z"
    ready_count:
      description: Files waiting to be archived (C(pg_wal/archive_status/*.ready)) - segments, C(.partial), C(.backup)
        and timeline history files; V(null) when they could not be listed.
      type: int
      sample: 0
    oldest_ready:
      description: The file that has waited longest (oldest C(.ready) file); V(null) when none waits or they could
        not be listed.
      type: str
      sample: null
    oldest_ready_time:
      description: Since when it waits (modification time of its C(.ready) file, ISO 8601 UTC).
      type: str
      sample: null
    oldest_ready_age_seconds:
      description: How long it has waited (the server's C(now()) minus RV(archiver.oldest_ready_time)).
      type: float
      sample: null
lag:
  description:
    - The archive lag of a primary (or of a standby with C(archive_mode=always)), from the C(.ready) files of
      C(pg_wal/archive_status).
    - V(null) on other standbys and when the server was not read.
  returned: success or failure of a threshold
  type: dict
  contains:
    seconds:
      description:
        - How long the oldest file waiting to be archived (RV(lag.oldest_ready)) has waited; V(0) when none waits,
          however long ago the last file was archived.
        - V(null) when the C(.ready) files could not be listed (RV(lag.error)).
        - Formerly the time since the last archived file whenever WAL was written after it, which
          grew on an idle server and stayed small while archiving fell behind.
      type: float
      sample: 0.0
    segments:
      description:
        - WAL segments waiting to be archived (C(.ready) segment files; history, C(.partial) and C(.backup) files
          not counted, see RV(archiver.ready_count)). V(null) when they could not be listed.
      type: int
      sample: 0
    bytes:
      description:
        - RV(lag.segments) times the segment size - the WAL complete but not archived. V(null) when the C(.ready)
          files could not be listed.
        - Formerly the bytes from the end of the last archived segment to the current position, now
          RV(lag.data_at_risk_bytes).
      type: int
      sample: 0
    pending:
      description:
        - Whether a file waits to be archived (any C(.ready) file); V(null) when they could not be listed.
        - Formerly also true whenever the segment being written was newer than the last archived one,
          i.e. almost always.
      type: bool
      sample: false
    oldest_ready:
      description: The file that has waited longest; V(null) when none waits.
      type: str
      sample: null
    data_at_risk_bytes:
      description:
        - WAL written after the last archived segment, in no archived segment yet - the waiting segments and the
          segment being written (C(pg_current_wal_lsn()) minus the end of RV(archiver.last_archived_wal), or minus
          its start for a C(.partial) file). What losing the server now would lose from the archive.
        - A primary only; V(null) when the last archived file is not a segment (a history or backup history file,
          or nothing since C(stats_reset)).
        - How old that data is cannot be known exactly (see the notes).
      type: int
      sample: 1048576
    error:
      description: Why the lag could not be measured (the C(.ready) files could not be listed); V(null) when it was.
      type: str
      sample: null
archive:
  description: The WAL archive in S3.
  returned: success or failure of a threshold
  type: dict
  contains:
    newest_segment:
      description: The archived segment with the highest position (any timeline).
      type: str
      sample: "000000020000000000000006"
    newest_segment_time:
      description: When it was archived (its S3 LastModified, ISO 8601 UTC).
      type: str
      sample: "2026-11-27T03:19:10.000000Z"
    newest_segment_age_seconds:
      description: Seconds since then (by the clock of the host running the module).
      type: float
      sample: 50.0
    latest_timeline:
      description: The newest timeline with a segment or history file in the archive.
      type: int
      sample: 2
    timelines:
      description: Every timeline in the archive.
      type: list
      elements: int
      sample: [1, 2]
    segments:
      description: Number of archived segments (C(.partial) files not included).
      type: int
      sample: 431
    partials:
      description: Number of C(.partial) segments.
      type: int
      sample: 1
    history_files:
      description: The timeline history files in the archive.
      type: list
      elements: str
      sample: ["00000002.history"]
    last_archived_wal_in_s3:
      description: Whether the file C(pg_stat_archiver) reports as last archived is in the archive; V(null)
        when not checked (no primary read).
      type: bool
      sample: true
backups:
  description: The complete physical backups of the catalog.
  returned: success or failure of a threshold
  type: dict
  contains:
    complete:
      description: How many there are.
      type: int
      sample: 7
    oldest:
      description: Id of the oldest.
      type: str
      sample: "20261120T020000.000Z-F"
    latest:
      description: Id of the newest.
      type: str
      sample: "20261127T020000.000Z-F"
since_backup:
  description:
    - The backup the gap check starts from (O(since)) - C(backup_id), C(timeline), C(start_lsn), C(stop_lsn),
      C(start_wal), C(stop_wal), C(stop_time), C(wal_included).
    - V(null) when the catalog has no complete physical backup.
  returned: success or failure of a threshold
  type: dict
  sample: {"backup_id": "20261120T020000.000Z-F", "timeline": 1, "start_lsn": "0/2000028",
           "stop_lsn": "0/2000138", "start_wal": "000000010000000000000002", "stop_wal": "000000010000000000000002",
           "stop_time": "2026-11-20T02:03:00.000000Z", "wal_included": true}
timeline_path:
  description: The timelines recovery follows to the latest timeline, oldest first (C(end_lsn) V(null) for the last).
  returned: success or failure of a threshold
  type: list
  elements: dict
  sample: [{"timeline": 1, "begin_lsn": "0/0", "end_lsn": "0/5000060"},
           {"timeline": 2, "begin_lsn": "0/5000060", "end_lsn": null}]
chain:
  description:
    - The segments recovery needs from RV(since_backup) to the newest archived segment on RV(timeline_path) -
      C(start_lsn), C(first), C(last), C(needed) (count), C(present) (count), C(contiguous_until) (last segment
      before the first gap) and C(contiguous_until_time).
    - V(null) when there is no backup to start from, or it is not on the timeline path.
  returned: success or failure of a threshold
  type: dict
  sample: {"start_lsn": "0/2000138", "first": "000000010000000000000002", "last": "000000020000000000000006",
           "needed": 5, "present": 5, "contiguous_until": "000000020000000000000006",
           "contiguous_until_time": "2026-11-27T03:19:10.000000Z"}
gaps:
  description: WAL files recovery needs that are not in the archive - missing segments first, then timeline history
    files and the last file C(pg_stat_archiver) reports as archived, when missing.
  returned: success or failure of a threshold
  type: list
  elements: str
  sample: ["000000010000000000000004"]
backup_after_gap:
  description: The oldest complete backup that starts after the last missing segment (recovery from it is not
    affected by the gaps); V(null) when there is no gap or no such backup.
  returned: success or failure of a threshold
  type: str
  sample: null
recoverable_window:
  description: What can be restored from RV(since_backup); V(null) when nothing can.
  returned: success or failure of a threshold
  type: dict
  contains:
    backup_id:
      description: The backup it starts from.
      type: str
      sample: "20261120T020000.000Z-F"
    earliest_time:
      description: The backup's stop time, the earliest point it can be restored to.
      type: str
      sample: "2026-11-20T02:03:00.000000Z"
    earliest_lsn:
      description: The backup's stop LSN.
      type: str
      sample: "0/2000138"
    latest_time:
      description: When the last segment before the first gap was archived (the backup's stop when no segment is).
      type: str
      sample: "2026-11-27T03:19:10.000000Z"
    latest_lsn:
      description: The end of that segment (the backup's stop LSN when no segment is).
      type: str
      sample: "0/7000000"
    latest_segment:
      description: That segment.
      type: str
      sample: "000000020000000000000006"
    timeline:
      description: Its timeline.
      type: int
      sample: 2
stream:
  description:
    - The newest partial segment streaming mode uploaded under C(<prefix>/wal-stream/<TLI>/) (the highest timeline,
      then the highest segment).
    - Only C(found=false) when there is none (streaming mode off, or never uploaded).
  returned: success or failure of a threshold
  type: dict
  contains:
    found:
      description: Whether a streamed partial segment is there.
      type: bool
      sample: true
    key:
      description: Its S3 key.
      type: str
      sample: "pgbackup/main/wal-stream/00000002/000000020000000000000007.partial.zst"
    segment:
      description: The WAL segment it is the partial of.
      type: str
      sample: "000000020000000000000007"
    timeline:
      description: Its timeline.
      type: int
      sample: 2
    covers_lsn:
      description: The object holds the WAL up to this LSN at least (its metadata C(covers-lsn), the receiver's
        write position read before the upload); V(null) when the metadata lacks it.
      type: str
      sample: "0/7000148"
    uploaded_at:
      description: When it was uploaded (its S3 LastModified, ISO 8601 UTC).
      type: str
      sample: "2026-11-27T03:19:59.000000Z"
    age_seconds:
      description: Seconds since then (by the clock of the host running the module).
      type: float
      sample: 1.0
    host:
      description: The host whose uploader wrote it (metadata C(host)).
      type: str
      sample: db-east-1
    segment_archived:
      description: Whether its segment is archived complete under C(<prefix>/wal/); only looked up when the primary
        is beyond RV(stream.covers_lsn), else V(null).
      type: bool
      sample: null
    bytes_behind:
      description:
        - On a primary, the WAL it has written that S3 does not hold yet - C(pg_current_wal_lsn()) minus
          RV(stream.covers_lsn), or minus the end of RV(stream.segment) when that is archived complete (after a
          segment switch); never below V(0). V(0) on an idle primary however old the partial is.
        - V(null) when the server was not read or is a standby.
      type: int
      sample: 0
findings:
  description:
    - Every problem seen, as C({check, message}). Only gaps (with O(fail_on_gap)), the lag (with
      O(max_lag_seconds), checks C(lag) and C(lag_unmeasured)) and the stream (with O(max_stream_age_seconds), check
      C(stream)) fail the task.
    - "Checks: C(gap), C(history) (missing or damaged timeline history file), C(last_archived_missing),
      C(no_backup), C(backup_timeline) (the backup is not on the timeline path), C(backup_wal), C(timeline)
      (the archive has a newer timeline than this primary), C(archive_mode), C(archive_failing) (the last
      attempt failed), C(lag) (the oldest waiting file is older than O(max_lag_seconds), or C(archive_mode) is off),
      C(lag_unmeasured) (O(max_lag_seconds) is set but the C(.ready) files could not be listed), C(stream) (no
      streamed partial segment, or older than O(max_stream_age_seconds) while the primary wrote more), C(server) (not
      reachable)."
  returned: success or failure of a threshold
  type: list
  elements: dict
  sample: [{"check": "archive_failing", "message": "archive_command is failing: ..."}]
ok:
  description: Whether there is no finding.
  returned: success or failure of a threshold
  type: bool
  sample: true
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect
from ansible_collections.rtx.dr.plugins.module_utils.walstatus import check_options
from ansible_collections.rtx.dr.plugins.module_utils.walstatus import failure
from ansible_collections.rtx.dr.plugins.module_utils.walstatus import wal_status
from ansible_collections.rtx.dr.plugins.module_utils.walstatus import wal_status_argument_spec


def argument_spec():
    return wal_status_argument_spec()


def status(module, client_factory=boto3_client):
    params = module.params
    check_options(params)  # option errors before any connection
    result, warnings = wal_status(params, client_factory(params, "s3"), connect=connect)
    for warning in warnings:
        module.warn(warning)
    error = failure(result, params)
    if error is not None:
        raise error
    result["changed"] = False
    return result


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[["prefix", "cluster_name"]],
        supports_check_mode=True,
    )
    run_module(module, status)


if __name__ == "__main__":
    main()

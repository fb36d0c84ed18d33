#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_node_info
short_description: Read the replication role, timeline and WAL positions of one PostgreSQL server
version_added: 0.1.0
description:
  - Connects to one PostgreSQL server and reports whether it is a primary or a standby, its timeline,
    WAL positions, WAL receiver state and the standbys streaming from it.
  - Playbooks use it to discover the current primary and standbys at run time instead of trusting the inventory.
  - Only reads; never changes anything. Check mode runs the same reads.
  - Facts the login role may not read (for example C(pg_control_system()) or C(data_directory) without
    superuser or C(pg_monitor)/C(pg_read_all_settings)) are returned as V(null) with a warning.
options:
  fail_on_unreachable:
    description:
      - When V(true), the task fails if the server cannot be reached.
      - When V(false), a server that is down, not listening, or not yet accepting connections gives
        RV(reachable=false) and RV(error) instead, so a play can survey every node of a cluster
        while one is down.
      - Refused logins (bad credentials, C(pg_hba.conf), unknown database) and a missing driver
        fail the task either way, because they are configuration errors, not outages.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: community.postgresql.postgresql_info
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rtx.dr.postgres
"""

EXAMPLES = r"""
- name: Read the state of the local server as the postgres OS user
  rtx.dr.pg_node_info:
  become: true
  become_user: postgres
  register: pg_node

- name: Survey every database node, tolerating nodes that are down
  rtx.dr.pg_node_info:
    login_host: "{{ ansible_host }}"
    login_user: rtx_monitor
    login_password: "{{ vault_rtx_monitor_password }}"
    fail_on_unreachable: false
  register: pg_node

- name: Group the hosts by the role they have right now
  ansible.builtin.group_by:
    key: "pg_{{ pg_node.role if pg_node.reachable else 'unreachable' }}"

- name: Stop if standbys are far behind the primary
  ansible.builtin.assert:
    that:
      - item.replay_lag_bytes is none or item.replay_lag_bytes < 16777216
    fail_msg: "{{ item.application_name }} is {{ item.replay_lag_bytes }} bytes behind"
  loop: "{{ pg_node.replication }}"
  loop_control:
    label: "{{ item.application_name }}"
  when: pg_node.role == 'primary'
"""

RETURN = r"""
reachable:
  description: Whether the server could be connected to.
  returned: always
  type: bool
  sample: true
error:
  description: Why the server could not be reached; V(null) when it was.
  returned: always
  type: str
  sample: "Cannot connect to PostgreSQL at 10.0.0.5 port 5432 (login_db=postgres, login_user=postgres): Connection refused"
in_recovery:
  description: Result of C(pg_is_in_recovery()).
  returned: always
  type: bool
  sample: false
role:
  description: V(primary) when the server is not in recovery, else V(standby).
  returned: always
  type: str
  sample: primary
server_version:
  description: The C(server_version) setting.
  returned: always
  type: str
  sample: "15.8 (Debian 15.8-0+deb12u1)"
server_version_num:
  description: The C(server_version_num) setting.
  returned: always
  type: int
  sample: 150008
system_identifier:
  description:
    - The cluster's system identifier from C(pg_control_system()), as text.
    - A primary and its physical standbys share it; a cluster created by another C(initdb) does not.
  returned: always
  type: str
  sample: "7301486431285467349"
timeline:
  description:
    - Current timeline.
    - On a primary, the timeline of the WAL file being written (from C(pg_walfile_name(pg_current_wal_lsn()))),
      falling back to C(pg_control_checkpoint().timeline_id).
    - On a standby, C(received_tli) of the WAL receiver, falling back to C(pg_control_checkpoint().timeline_id).
  returned: always
  type: int
  sample: 1
current_lsn:
  description: C(pg_current_wal_lsn()) on a primary; V(null) on a standby.
  returned: always
  type: str
  sample: "0/3000148"
receive_lsn:
  description: C(pg_last_wal_receive_lsn()); V(null) on a primary.
  returned: always
  type: str
  sample: "0/3000148"
replay_lsn:
  description:
    - C(pg_last_wal_replay_lsn()).
    - V(null) on a primary that never was in recovery; on a promoted primary, the last position replayed before promotion.
  returned: always
  type: str
  sample: "0/3000148"
replay_lag_bytes:
  description: On a standby, bytes received but not yet replayed (RV(receive_lsn) - RV(replay_lsn)); V(null) on a primary.
  returned: always
  type: int
  sample: 0
last_replay_time:
  description: On a standby, commit time (ISO 8601) of the last transaction replayed (C(pg_last_xact_replay_timestamp())).
  returned: always
  type: str
  sample: "2025-01-31T10:15:02.123456+00:00"
replay_paused:
  description: On a standby, C(pg_is_wal_replay_paused()); V(null) on a primary.
  returned: always
  type: bool
  sample: false
upstream_host:
  description:
    - On a standby, the C(host) of its C(primary_conninfo) (the server it is configured to stream from); V(null)
      on a primary or when not set. Only the host is returned, never the connection string (it may hold a password).
  returned: always
  type: str
  sample: db-east-1
wal_receiver:
  description: On a standby with a running WAL receiver, its row of C(pg_stat_wal_receiver); else V(null).
  returned: always
  type: dict
  contains:
    status:
      description: Receiver status.
      type: str
      sample: streaming
    sender_host:
      description: Host of the server this standby streams from.
      type: str
      sample: 10.0.0.5
    sender_port:
      description: Port of the server this standby streams from.
      type: int
      sample: 5432
    slot_name:
      description: Replication slot used, if any.
      type: str
      sample: standby1
    received_tli:
      description: Timeline of the last WAL received.
      type: int
      sample: 1
    written_lsn:
      description: Last WAL position written to disk (not flushed).
      type: str
      sample: "0/3000148"
    flushed_lsn:
      description: Last WAL position flushed to disk.
      type: str
      sample: "0/3000148"
    latest_end_lsn:
      description: Last WAL position reported to the sender.
      type: str
      sample: "0/3000148"
    last_msg_receipt_time:
      description: When the last message from the sender was received (ISO 8601).
      type: str
      sample: "2025-01-31T10:15:02.123456+00:00"
replication:
  description:
    - One item per row of C(pg_stat_replication), that is the standbys (and backup or WAL receiving clients) streaming from this server.
    - Lag in bytes is measured from RV(current_lsn) on a primary, from RV(receive_lsn) on a cascading standby.
  returned: always
  type: list
  elements: dict
  contains:
    pid:
      description: Process ID of the WAL sender.
      type: int
    application_name:
      description: C(application_name) of the client, usually the standby's C(cluster_name).
      type: str
      sample: standby1
    client_addr:
      description: Client IP address; V(null) over a Unix socket.
      type: str
      sample: 10.0.0.6
    state:
      description: WAL sender state (V(startup), V(catchup), V(streaming), V(backup), V(stopping)).
      type: str
      sample: streaming
    sync_state:
      description: V(async), V(potential), V(sync) or V(quorum).
      type: str
      sample: async
    sync_priority:
      description: Priority for being chosen as synchronous standby.
      type: int
      sample: 0
    sent_lsn:
      description: Last WAL position sent.
      type: str
    write_lsn:
      description: Last WAL position written by the standby.
      type: str
    flush_lsn:
      description: Last WAL position flushed by the standby.
      type: str
    replay_lsn:
      description: Last WAL position replayed by the standby.
      type: str
    write_lag:
      description: Seconds of C(write_lag), V(null) when idle.
      type: float
    flush_lag:
      description: Seconds of C(flush_lag), V(null) when idle.
      type: float
    replay_lag:
      description: Seconds of C(replay_lag), V(null) when idle.
      type: float
    reply_time:
      description: When the last reply from the standby arrived (ISO 8601).
      type: str
    flush_lag_bytes:
      description: Bytes between this server's position and C(flush_lsn).
      type: int
      sample: 0
    replay_lag_bytes:
      description: Bytes between this server's position and C(replay_lsn).
      type: int
      sample: 0
wal_segment_size:
  description: WAL segment size in bytes.
  returned: always
  type: int
  sample: 16777216
synchronous_standby_names:
  description: The C(synchronous_standby_names) setting.
  returned: always
  type: str
  sample: "ANY 1 (standby1, standby2)"
synchronous_commit:
  description: The C(synchronous_commit) setting.
  returned: always
  type: str
  sample: "on"
primary_slot_name:
  description: The C(primary_slot_name) setting (empty on a primary).
  returned: always
  type: str
  sample: standby1
data_directory:
  description: The C(data_directory) setting; V(null) when the login role may not read it.
  returned: always
  type: str
  sample: /var/lib/postgresql/15/main
wal_level:
  description: The C(wal_level) setting.
  returned: always
  type: str
  sample: replica
archive_mode:
  description: The C(archive_mode) setting.
  returned: always
  type: str
  sample: "on"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module
from ansible_collections.rtx.dr.plugins.module_utils.node_info import empty_node_info
from ansible_collections.rtx.dr.plugins.module_utils.node_info import gather_node_info
from ansible_collections.rtx.dr.plugins.module_utils.postgres import close_quietly
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect
from ansible_collections.rtx.dr.plugins.module_utils.postgres import postgres_common_argument_spec


def argument_spec():
    spec = postgres_common_argument_spec()
    spec.update(fail_on_unreachable=dict(type="bool", default=True))
    return spec


def gather(module):
    result = empty_node_info()
    try:
        conn = connect(module.params)
    except ConnectionFailedError as exc:
        if module.params["fail_on_unreachable"] or not exc.server_down:
            raise
        result.update(changed=False, reachable=False, error=exc.msg)
        return result
    try:
        info, warnings = gather_node_info(conn)
    finally:
        close_quietly(conn)
    for warning in warnings:
        module.warn(warning)
    result.update(info)
    result.update(changed=False, reachable=True, error=None)
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, gather)


if __name__ == "__main__":
    main()

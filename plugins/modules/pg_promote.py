#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_promote
short_description: Promote a PostgreSQL standby to primary
version_added: 0.1.0
description:
  - Connects to one PostgreSQL server, checks that it is a standby (in recovery), optionally waits until
    everything it received is replayed, promotes it, and waits until it accepts writes.
  - Returns the timeline before and after, the replay position at promotion and how long each step took.
  - A server that already is a primary gives C(changed=false) and RV(already_primary=true) with the same
    facts, so the task can be rerun safely; set O(expect_primary_ok=false) to make that an error.
  - Writability is verified by a real write test (C(txid_current()) assigns a transaction ID), not only by
    C(pg_is_in_recovery()).
options:
  wait_replay:
    description:
      - Before promoting, wait until C(pg_last_wal_replay_lsn()) reaches C(pg_last_wal_receive_lsn()),
        that is until everything received from the old primary is replayed, for at most O(replay_timeout) seconds.
      - The task fails, without promoting, if replay does not catch up in time; the message shows both positions
        and the gap in bytes.
    type: bool
    default: true
  replay_timeout:
    description:
      - Seconds to wait for replay to catch up when O(wait_replay=true).
    type: int
    default: 60
  timeout:
    description:
      - Seconds for the promotion to finish and the server to accept writes.
      - Passed to C(pg_promote(true, timeout)) or C(pg_ctl promote -t timeout).
    type: int
    default: 60
  method:
    description:
      - V(sql) runs C(SELECT pg_promote(true, timeout)) (PostgreSQL 12+); the login role must be a superuser
        or have been granted EXECUTE on C(pg_promote).
      - V(pg_ctl) runs C(pg_ctl promote -D <data_directory> -w -t timeout) on the target host. The task must run as
        the operating system user owning the data directory (C(become_user=postgres)), and the login role must
        be able to read C(data_directory) (superuser or C(pg_read_all_settings)).
    type: str
    default: sql
    choices: [ sql, pg_ctl ]
  pg_bin_dir:
    description:
      - Directory holding C(pg_ctl), for O(method=pg_ctl).
      - When not set, C(/usr/lib/postgresql/<major>/bin) of the server's major version is used, else C(pg_ctl) in E(PATH).
    type: path
  expect_primary_ok:
    description:
      - When V(true), a server that already is a primary is accepted (C(changed=false), RV(already_primary=true)).
      - When V(false), it fails the task with "not a standby".
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details:
      - Connects and reads only; reports RV(would_promote) and the replay lag, and C(changed=true) when the server
        would be promoted.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Fails with a clear message when the server is down, is not a standby (with O(expect_primary_ok=false)), or
    replay or promotion does not finish within O(replay_timeout) / O(timeout).
  - Promoting a standby while its old primary still runs creates a split brain; fence the old primary first.
seealso:
  - module: rtx.dr.pg_node_info
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rtx.dr.postgres
"""

EXAMPLES = r"""
- name: Promote the local standby as the postgres OS user
  rtx.dr.pg_promote:
  become: true
  become_user: postgres
  register: promotion

- name: Show the new timeline
  ansible.builtin.debug:
    msg: "Promoted from timeline {{ promotion.old_timeline }} to {{ promotion.new_timeline }} at {{ promotion.promote_lsn }}"
  when: promotion.changed

- name: Promote with pg_ctl, without waiting for replay, failing if it already is a primary
  rtx.dr.pg_promote:
    method: pg_ctl
    pg_bin_dir: /usr/lib/postgresql/15/bin
    wait_replay: false
    timeout: 120
    expect_primary_ok: false
  become: true
  become_user: postgres

- name: See what would happen
  rtx.dr.pg_promote:
    login_host: "{{ ansible_host }}"
    login_password: "{{ vault_postgres_password }}"
  check_mode: true
  register: would
"""

RETURN = r"""
already_primary:
  description: Whether the server was already a primary (nothing was done).
  returned: always
  type: bool
  sample: false
would_promote:
  description: Whether the server is (in check mode) or was promoted.
  returned: always
  type: bool
  sample: true
old_timeline:
  description:
    - Timeline before promotion (C(received_tli) of the WAL receiver, else C(pg_control_checkpoint().timeline_id)).
    - When the server already was a primary, its current timeline.
  returned: always
  type: int
  sample: 1
new_timeline:
  description:
    - Timeline after promotion, from C(pg_walfile_name(pg_current_wal_lsn())).
    - When the server already was a primary, its current timeline; V(null) in check mode on a standby.
  returned: always
  type: int
  sample: 2
promote_lsn:
  description: C(pg_last_wal_replay_lsn()) just before promotion (end of replayed WAL); V(null) when not promoted.
  returned: always
  type: str
  sample: "0/3000148"
receive_lsn:
  description: C(pg_last_wal_receive_lsn()) just before promotion (in check mode, now); V(null) on a primary.
  returned: always
  type: str
  sample: "0/3000148"
replay_lsn:
  description: C(pg_last_wal_replay_lsn()) just before promotion (in check mode, now).
  returned: always
  type: str
  sample: "0/3000148"
replay_lag_bytes:
  description: RV(receive_lsn) - RV(replay_lsn) in bytes; V(null) when either is unknown.
  returned: always
  type: int
  sample: 0
replay_wait_seconds:
  description: Seconds spent waiting for replay to catch up; V(null) when not waited.
  returned: always
  type: float
  sample: 0.012
promote_seconds:
  description: Seconds from the promotion request until the server accepted writes; V(null) when not promoted.
  returned: always
  type: float
  sample: 0.734
total_seconds:
  description: Seconds the whole task took on the target host.
  returned: always
  type: float
  sample: 0.802
writable:
  description:
    - Whether the server accepts writes (not in recovery and C(txid_current()) succeeds).
    - In check mode on a primary, only C(pg_is_in_recovery()) is checked.
  returned: always
  type: bool
  sample: true
method:
  description: The O(method) used.
  returned: always
  type: str
  sample: sql
server_version:
  description: The C(server_version) setting.
  returned: always
  type: str
  sample: "15.8 (Debian 15.8-0+deb12u1)"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect
from ansible_collections.rtx.dr.plugins.module_utils.postgres import postgres_common_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.promote import METHODS
from ansible_collections.rtx.dr.plugins.module_utils.promote import promote


def argument_spec():
    spec = postgres_common_argument_spec()
    spec.update(
        wait_replay=dict(type="bool", default=True),
        replay_timeout=dict(type="int", default=60),
        timeout=dict(type="int", default=60),
        method=dict(type="str", default="sql", choices=list(METHODS)),
        pg_bin_dir=dict(type="path"),
        expect_primary_ok=dict(type="bool", default=True),
    )
    return spec


def run(module):
    return promote(
        lambda: connect(module.params),
        module.params,
        check_mode=module.check_mode,
        run_command=lambda argv: module.run_command(argv, check_rc=False),
        find_pg_ctl=lambda: module.get_bin_path("pg_ctl"),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()

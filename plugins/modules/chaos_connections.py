#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2026, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: chaos_connections
short_description: Exhaust the connections of a PostgreSQL server (chaos test), and release them
version_added: 0.1.0
description:
  - With O(state=held), opens connections with the C(login_*) options (a non-superuser role, so the
    C(superuser_reserved_connections) stay free for the health checks and the cleanup) until the server refuses
    one or O(max_open) are open, writes O(state_file), and holds them until O(stop_file) appears or
    O(hold_seconds) pass. The connections are always closed before the module returns. Run it as an async task
    (C(async) with C(poll=0)).
  - With O(state=absent), creates O(stop_file), waits for the holder to close its connections, then terminates
    (C(pg_terminate_backend)) any backend still using O(application_name), with the C(login_*) options of a
    superuser, and removes both files.
options:
  state:
    description: V(held) opens and holds the connections, V(absent) releases them.
    type: str
    choices: [held, absent]
    default: held
  max_open:
    description: Most connections opened.
    type: int
    default: 1000
  hold_seconds:
    description: Safety timeout; the connections are closed after this even without O(stop_file).
    type: int
    default: 900
  stop_file:
    description: File whose existence tells the holder to close its connections.
    type: path
    default: /tmp/rtx-dr-chaos-connections.stop
  state_file:
    description: JSON state of the holder (V(holding) with the number opened, then V(released)).
    type: path
    default: /tmp/rtx-dr-chaos-connections.json
  application_name:
    description: C(application_name) of the held connections; O(state=absent) terminates what is left of them.
    type: str
    default: rtx.dr chaos
  wait_seconds:
    description: With O(state=absent), seconds to wait for the holder before terminating its backends.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    details: O(state=held) opens nothing; O(state=absent) only reports whether connections are held.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rtx.dr.postgres
"""

EXAMPLES = r"""
- name: Hold connections as the health role until the server refuses
  rtx.dr.chaos_connections:
    login_host: 10.0.1.12
    login_user: rtx_dr_health
    login_password: "{{ rtx_dr_health_db_password }}"
    ssl_mode: require
    hold_seconds: 600
  async: 660
  poll: 0

- name: Release them (superuser over the Unix socket)
  rtx.dr.chaos_connections:
    state: absent
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
"""

RETURN = r"""
opened:
  description: Connections opened and held (O(state=held)).
  returned: when O(state=held)
  type: int
  sample: 93
refused:
  description: The error of the connection the server refused (V(null) when O(max_open) was reached).
  returned: when O(state=held)
  type: str
  sample: "remaining connection slots are reserved for non-replication superuser connections"
stopped_by:
  description: V(stop_file) or V(timeout).
  returned: when O(state=held)
  type: str
  sample: stop_file
held_seconds:
  description: Seconds the connections were held.
  returned: when O(state=held)
  type: float
  sample: 42.1
holder:
  description: Last state of the holder (O(state=absent)).
  returned: when O(state=absent)
  type: dict
  sample: {status: released, opened: 93}
terminated:
  description: Backends of O(application_name) terminated because the holder left them (O(state=absent)).
  returned: when O(state=absent)
  type: int
  sample: 0
leftover:
  description: Backends of O(application_name) still there at the end (O(state=absent)); 0 when released.
  returned: when O(state=absent)
  type: int
  sample: 0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils import postgres
from ansible_collections.rtx.dr.plugins.module_utils.chaos import hold_connections
from ansible_collections.rtx.dr.plugins.module_utils.chaos import release_connections
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module

COUNT_SQL = "SELECT count(*) AS n FROM pg_catalog.pg_stat_activity WHERE application_name = %(a)s"
TERMINATE_SQL = ("SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) AS n"
                 " FROM pg_catalog.pg_stat_activity WHERE application_name = %(a)s AND pid <> pg_catalog.pg_backend_pid()")


def argument_spec():
    spec = postgres.postgres_common_argument_spec()
    spec.update(
        state=dict(type="str", choices=["held", "absent"], default="held"),
        max_open=dict(type="int", default=1000),
        hold_seconds=dict(type="int", default=900),
        stop_file=dict(type="path", default="/tmp/rtx-dr-chaos-connections.stop"),
        state_file=dict(type="path", default="/tmp/rtx-dr-chaos-connections.json"),
        application_name=dict(type="str", default="rtx.dr chaos"),
        wait_seconds=dict(type="int", default=30),
    )
    return spec


def _held(module):
    params = module.params
    if module.check_mode:
        return dict(changed=True, opened=0, refused=None, stopped_by=None, held_seconds=0.0)
    state = hold_connections(
        lambda: postgres.connect(params, application_name=params["application_name"]),
        postgres.close_quietly, params["max_open"], params["hold_seconds"], params["stop_file"], params["state_file"])
    return dict(changed=True, opened=state["opened"], refused=state["refused"], stopped_by=state["stopped_by"],
                held_seconds=state["held_seconds"])


def _absent(module):
    params = module.params
    conn = postgres.connect(params)
    try:
        args = {"a": params["application_name"]}
        return release_connections(
            params["stop_file"], params["state_file"],
            lambda: int(postgres.query_one(conn, COUNT_SQL, args)["n"]),
            lambda: int(postgres.query_one(conn, TERMINATE_SQL, args)["n"]),
            wait_seconds=float(params["wait_seconds"]), check_mode=module.check_mode)
    finally:
        postgres.close_quietly(conn)


def apply(module):
    return _held(module) if module.params["state"] == "held" else _absent(module)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, apply)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: health_check
short_description: Check the health of PostgreSQL, the API, WebSocket, Redis, disks, replication lag, CPU and memory
version_added: 0.1.0
description:
  - Runs the seed's health checks on the target host, concurrently, and returns one result per check with
    C(status) (V(ok), V(warn) or V(critical)), C(value), C(unit), C(threshold) and C(message).
  - A check that fails or hangs is reported V(critical) with the reason; it never stops the other checks, and the
    whole run is bounded by O(total_timeout).
  - "Only the checks named in O(checks) run. V(postgresql) and V(replication_lag) use the C(login_*) options,
    V(api) needs O(api_url), V(websocket) needs O(websocket_url), V(redis) uses O(redis_host) and O(redis_port),
    V(disk) runs once per path of O(disk_paths)."
  - The same code (C(module_utils/health.py)) is used by the host agent.
options:
  checks:
    description: Checks to run.
    type: list
    elements: str
    choices: [postgresql, api, websocket, redis, disk, replication_lag, cpu_load, memory]
    default: [disk, cpu_load, memory]
  thresholds:
    description:
      - Per check, C(warn) and C(critical) thresholds (a value at or above is warn / critical); replication_lag also
        takes C(warn_seconds) and C(critical_seconds). Defaults in C(module_utils/health.py).
      - Unknown checks or keys, values that are not numbers >= 0 and warn above critical are refused.
    type: dict
    default: {}
  expected_role:
    description: For V(postgresql), the role the server must have (V(primary) or V(standby)); another role is critical.
    type: str
    choices: [primary, standby]
  target_session_attrs:
    description:
      - libpq C(target_session_attrs) for V(postgresql) and V(replication_lag). With several hosts in O(login_host)
        (comma separated), V(read-write) checks whichever of them is the primary now, e.g. from an application host.
    type: str
    choices: [any, read-write, read-only, primary, standby, prefer-standby]
  api_url:
    description: URL of the API health endpoint (V(api)).
    type: str
  api_expect_status:
    description: HTTP status the API must answer.
    type: int
    default: 200
  websocket_url:
    description: C(ws://) URL of the WebSocket endpoint (V(websocket)); the upgrade handshake is checked.
    type: str
  redis_host:
    description: Redis host (V(redis)).
    type: str
    default: 127.0.0.1
  redis_port:
    description: Redis port (V(redis)).
    type: int
    default: 6379
  redis_password:
    description: Redis password (C(AUTH)); empty for none.
    type: str
    default: ""
  redis_expected_role:
    description: Role Redis must report in C(INFO replication) (V(master) or V(slave)).
    type: str
    choices: [master, slave]
  disk_paths:
    description: Mount points checked by V(disk).
    type: list
    elements: path
    default: [/]
  total_timeout:
    description: Seconds after which a check still running is reported critical (timed out).
    type: float
    default: 20
  fail_on:
    description:
      - V(none) reports only; V(warn) or V(critical) fail the task when any check reaches that status (all results
        are still returned).
    type: str
    choices: [none, warn, critical]
    default: none
attributes:
  check_mode:
    support: full
    details: Every check only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: rtx.dr.pg_node_info
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rtx.dr.postgres
"""

EXAMPLES = r"""
- name: Check the database host
  rtx.dr.health_check:
    checks: [postgresql, replication_lag, disk, cpu_load, memory]
    login_unix_socket: /var/run/postgresql
    disk_paths: [/, /var/lib/postgresql]
  become: true
  become_user: postgres

- name: Check the application host and fail on anything critical
  rtx.dr.health_check:
    checks: [api, websocket, redis, disk, cpu_load, memory]
    api_url: http://127.0.0.1:8080/health
    websocket_url: ws://127.0.0.1:8080/ws
    thresholds:
      api: {warn: 0.2, critical: 1.0}
    fail_on: critical
"""

RETURN = r"""
status:
  description: The worst status of all checks.
  returned: always
  type: str
  sample: ok
counts:
  description: Number of checks per status.
  returned: always
  type: dict
  sample: {ok: 5, warn: 0, critical: 0}
health:
  description: One result per check (per path for V(disk)), in the order run.
  returned: always
  type: list
  elements: dict
  contains:
    check:
      description: Check name.
      type: str
      sample: disk
    target:
      description: What was checked (URL, path, host:port).
      type: str
      sample: /
    status:
      description: V(ok), V(warn) or V(critical).
      type: str
      sample: ok
    value:
      description: Measured value in RV(health[].unit); V(null) when the check failed.
      type: float
      sample: 42.5
    unit:
      description: Unit of the value (V(s), V(%), V(bytes), V(load/core)).
      type: str
      sample: "%"
    threshold:
      description: The thresholds applied.
      type: dict
      sample: {warn: 80.0, critical: 90.0}
    message:
      description: Human readable outcome.
      type: str
      sample: "/ 42.5% used, 120.3 GiB free"
    seconds:
      description: How long the check took.
      type: float
      sample: 0.002
    details:
      description: Check specific facts (role, HTTP status, per standby lag...).
      type: dict
      sample: {}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module
from ansible_collections.rtx.dr.plugins.module_utils.health import STATUSES
from ansible_collections.rtx.dr.plugins.module_utils.health import health_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.health import run_checks
from ansible_collections.rtx.dr.plugins.module_utils.health import specs_from_params
from ansible_collections.rtx.dr.plugins.module_utils.health import summarize


def argument_spec():
    spec = health_argument_spec()
    spec.update(fail_on=dict(type="str", choices=["none", "warn", "critical"], default="none"))
    return spec


def check(module):
    results = run_checks(specs_from_params(module.params), module.params["thresholds"],
                         module.params["total_timeout"])
    worst, counts = summarize(results)
    outcome = dict(changed=False, status=worst, counts=counts, health=results)
    fail_on = module.params["fail_on"]
    if fail_on != "none" and STATUSES.index(worst) >= STATUSES.index(fail_on):
        bad = ["%s %s: %s" % (r["check"], r["target"], r["message"]) for r in results
               if STATUSES.index(r["status"]) >= STATUSES.index(fail_on)]
        raise RtxDrError("Health check %s (fail_on=%s): %s" % (worst, fail_on, "; ".join(bad)),
                         hint="The health list shows every check; fix the ones named, or raise fail_on.",
                         details=outcome)
    return outcome


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, check)


if __name__ == "__main__":
    main()

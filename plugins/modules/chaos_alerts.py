#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2026, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: chaos_alerts
short_description: Evaluate the real Prometheus alert rules on what the health checks measured
version_added: 0.1.0
description:
  - Turns the results of M(rtx.dr.health_check) of each instance into the health agent's Prometheus textfile (the
    agent's own code; written to O(work_dir)), adds the series the seed's exporter based rules read, named as
    postgres_exporter and node_exporter name them (C(pg_up), C(pg_replication_lag_seconds),
    C(node_filesystem_*), C(pg_stat_database_numbackends), C(pg_settings_max_connections)), holds every value
    constant for O(minutes) and asks C(promtool test rules) whether each alert of O(expect) is firing at the end.
  - Used by C(playbooks/chaos.yml) to check that a fault raises the alert it must raise. Reads and writes only
    O(work_dir).
options:
  rules_file:
    description: The rendered Prometheus rule file (role rtx.dr.alerting).
    type: path
    required: true
  promtool:
    description: Path of promtool.
    type: path
    default: promtool
  sources:
    description:
      - "One entry per instance: C(instance) becomes the C(instance) label, C(health) is the C(health) list returned
        by M(rtx.dr.health_check), C(connections) (optional) is C({numbackends: {datname: n}, max_connections: n}),
        C(filesystems) (optional) maps a disk path to its C(mountpoint), C(fstype) and C(device) (C(findmnt))."
    type: list
    elements: dict
    required: true
  expect:
    description: Alerts to check. C(alert) is the alert name, C(labels) label matchers, C(firing) (default true).
    type: list
    elements: dict
    required: true
  common_labels:
    description: Labels added to every series, e.g. the cluster label.
    type: dict
    default: {}
  postgres_labels:
    description: Labels of the postgres_exporter series (what C(alerting_selector_postgres) selects).
    type: dict
    default: {job: postgres}
  node_labels:
    description: Labels of the node_exporter series (what C(alerting_selector_node) selects).
    type: dict
    default: {job: node}
  minutes:
    description: Minutes the measured values are held; must exceed the longest C(for) of the expected alerts.
    type: int
    default: 30
  work_dir:
    description: Directory for the textfiles and the promtool test files.
    type: path
    required: true
attributes:
  check_mode:
    support: full
    details: Only evaluates; writes the evaluation files into O(work_dir) also in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Does DRHealthCheckCritical fire for the killed standby?
  rtx.dr.chaos_alerts:
    rules_file: /tmp/chaos/rules/prometheus-rules.yml
    promtool: /usr/bin/promtool
    sources:
      - instance: db-east-3
        health: "{{ chaos_victim_health.health }}"
    expect:
      - alert: DRHealthCheckCritical
        labels: {instance: db-east-3, check: postgresql}
      - alert: PostgresDown
        labels: {instance: db-east-3}
    common_labels: {cluster: rtx-lab}
    work_dir: /tmp/chaos/kill_instance
"""

RETURN = r"""
detected:
  description: True when every alert of O(expect) is as expected (firing, or quiet with C(firing=false)).
  returned: always
  type: bool
  sample: true
missing:
  description: Names of the alerts that were not as expected.
  returned: always
  type: list
  elements: str
  sample: []
alerts:
  description: One entry per alert of O(expect).
  returned: always
  type: list
  elements: dict
  contains:
    alert:
      description: Alert name.
      type: str
      sample: DRHealthCheckCritical
    labels:
      description: Label matchers.
      type: dict
      sample: {check: postgresql, instance: db-east-3}
    expected_firing:
      description: Whether it had to fire.
      type: bool
      sample: true
    fired:
      description: Whether it fired.
      type: bool
      sample: true
    as_expected:
      description: fired == expected_firing.
      type: bool
      sample: true
    test:
      description: The promtool test file.
      type: str
      sample: /tmp/chaos/kill_instance/test-00-DRHealthCheckCritical.json
    promtool:
      description: promtool's output when not as expected.
      type: str
      sample: ""
textfiles:
  description: The health agent textfile of each instance, as the agent would write it.
  returned: always
  type: dict
  sample: {db-east-3: /tmp/chaos/kill_instance/db-east-3.prom}
series:
  description: Number of input series given to promtool.
  returned: always
  type: int
  sample: 42
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.chaos import evaluate_alerts
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module


def argument_spec():
    return dict(
        rules_file=dict(type="path", required=True),
        promtool=dict(type="path", default="promtool"),
        sources=dict(type="list", elements="dict", required=True),
        expect=dict(type="list", elements="dict", required=True),
        common_labels=dict(type="dict", default={}),
        postgres_labels=dict(type="dict", default={"job": "postgres"}),
        node_labels=dict(type="dict", default={"job": "node"}),
        minutes=dict(type="int", default=30),
        work_dir=dict(type="path", required=True),
    )


def evaluate(module):
    params = module.params
    for item in params["expect"]:
        if not item.get("alert"):
            module.fail_json(msg="every entry of expect needs an alert name, got %r" % (item,))
    for source in params["sources"]:
        if not source.get("instance"):
            module.fail_json(msg="every entry of sources needs an instance, got %r" % (sorted(source),))
    result = evaluate_alerts(params["rules_file"], params["sources"], params["expect"], params["work_dir"],
                             promtool=params["promtool"], common_labels=params["common_labels"],
                             minutes=params["minutes"], postgres_labels=params["postgres_labels"],
                             node_labels=params["node_labels"])
    result["changed"] = False
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, evaluate)


if __name__ == "__main__":
    main()

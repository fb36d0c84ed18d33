#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dr_report
short_description: Weekly or monthly DR report from the DR schema - Markdown, HTML with a chart, JSON
version_added: 0.1.0
description:
  - "Reads the DR schema (C(backup_history), C(verification_history), C(restore_history), C(failover_history),
    C(health_check_history), created by the M(rtx.dr.dr_schema) role) for one period and returns the aggregates:
    backup success rate, backups per day and sizes, verification results, restore drills with RTO and RPO,
    failovers, switchovers and region failovers with RTO and data loss, health-check uptime per host and check,
    and every recovery objective met, missed or not measured."
  - "The backup success rate is complete / (complete + failed) of the physical and logical backups started in the
    period, as in the C(backup_metrics) view. A period without any such backup has no rate and the objective is
    reported missed (no backups in this period)."
  - "With O(output_dir), writes the report as Markdown, HTML (self-contained - inline CSS and an inline SVG chart of
    backup duration and stored size over time, no script, nothing fetched) and JSON. Every value that comes from
    the database is escaped in both renderings."
  - "The SQL only reads; large tables are aggregated by the server. Only the files are written, never the
    database."
options:
  period:
    description:
      - V(weekly) is the 7 days before O(end); V(monthly) the month before O(end) (same day and time one
        calendar month earlier, so O(end=2026-10-31) gives the whole of October).
    type: str
    default: weekly
    choices: [ weekly, monthly ]
  end:
    description:
      - End of the period (excluded), in UTC unless an offset is given.
      - A date such as C(2026-11-29) means the end of that day (the next midnight UTC), a date and time such as
        C(2026-11-29T06:00:00Z) that instant.
      - Not set, the period ends now.
    type: str
  schema:
    description:
      - Name of the DR schema in O(login_db).
    type: str
    default: dr
  objectives:
    description:
      - The recovery objectives per component the measurements are compared with, normally the inventory
        variable C(rtx_dr_objectives) (also used by the drills).
      - "A mapping component -> C({rto, rpo, availability}): C(rto) and C(rpo) in seconds or as a duration
        (C(15m), C(30s), C(1h)), C(availability) in percent (C(rto_seconds), C(rpo_seconds),
        C(availability_percent) are accepted too). Optional C(measured_by) names the DR events whose RTO and data
        loss count for the component (C(restore), C(failover), C(switchover), C(region); default for C(database)
        all four, for C(trading_engine) the last three, else none) and C(health_checks) the checks whose service
        uptime is its availability (default C(postgresql) for C(database), C(api) for C(trading_engine),
        C(websocket) for C(websocket))."
      - Not set, the seed's table is used (database RTO 15 min / RPO 1 min, trading engine 5 min / 30 s, ...).
    type: dict
  targets:
    description:
      - Percentage targets beyond the components, met when the measured percentage is at least the target.
      - "Keys (defaults from the seed's success metrics): C(backup_success_rate_percent) (V(99)),
        C(verification_pass_percent) (V(100)), C(restore_drill_success_percent) (V(100)),
        C(drill_pass_percent) (V(100)), C(health_check_uptime_percent) (V(99.9))."
    type: dict
  cluster_name:
    description:
      - Cluster name shown in the title.
    type: str
  output_dir:
    description:
      - Directory to write C(dr-report-<period>-<end>.md), C(.html) and C(.json) into (created when missing).
      - Not set, nothing is written and only the aggregates are returned.
    type: path
  max_rows:
    description:
      - Most rows listed per table of backups, verifications, restores and failovers (the newest are kept; the
        counts always cover the whole period). V(0) lists every row.
    type: int
    default: 200
attributes:
  check_mode:
    support: full
    details: The database is read as usual; no file is written.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run it against the current primary, where the DR schema is written (for example with C(become_user=postgres)
    over the Unix socket); a standby's copy may lag behind.
  - The login role needs C(SELECT) on the DR tables (the C(rtx_dr_writer) role of M(rtx.dr.dr_schema) has it).
seealso:
  - module: rtx.dr.s3_backup_verify
  - module: rtx.dr.backup_restore
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - rtx.dr.postgres
"""

EXAMPLES = r"""
- name: Weekly DR report of the primary into /var/tmp/dr-reports
  rtx.dr.dr_report:
    period: weekly
    login_db: rtx
    login_unix_socket: /var/run/postgresql
    output_dir: /var/tmp/dr-reports
    objectives: "{{ rtx_dr_objectives }}"
  become: true
  become_user: postgres
  register: dr_report

- name: October's report, aggregates only
  rtx.dr.dr_report:
    period: monthly
    end: "2026-10-31"
    login_db: rtx
    cluster_name: main
  become: true
  become_user: postgres
  register: october
"""

RETURN = r"""
report:
  description: The aggregates of the period.
  returned: success
  type: dict
  contains:
    title:
      description: Title of the report.
      type: str
      sample: "DR report weekly of main: 2026-11-22T00:00:00Z to 2026-11-29T00:00:00Z"
    cluster:
      description: O(cluster_name).
      type: str
      sample: main
    period:
      description: C(kind) (weekly or monthly), C(start) and C(end) (ISO 8601 UTC, end excluded), C(days).
      type: dict
      sample: {"kind": "weekly", "start": "2026-11-22T00:00:00Z", "end": "2026-11-29T00:00:00Z", "days": 7.0}
    generated_at:
      description: When the report was made (ISO 8601 UTC).
      type: str
      sample: "2026-11-29T06:00:03Z"
    backups:
      description:
        - Physical and logical backups started in the period - C(total), C(complete), C(failed), C(aborted),
          C(running), C(rated) (complete + failed), C(success_rate) (percent, V(null) when nothing is rated),
          C(by_kind), C(bytes_raw), C(bytes_stored), C(duration_seconds_max), C(duration_seconds_avg),
          C(per_day) (every UTC day of the period), C(failures), C(chart), C(items) (newest O(max_rows)),
          C(items_omitted), C(wal_batches).
      type: dict
      sample: {"total": 7, "complete": 7, "failed": 0, "success_rate": 100.0}
    verifications:
      description: Verifications of backups in the period - C(total), C(passed), C(failed), C(pass_rate),
        C(backups_verified), C(backups_failing_last), C(failures), C(items), C(items_omitted).
      type: dict
      sample: {"total": 7, "passed": 7, "failed": 0, "pass_rate": 100.0}
    restores:
      description: Restores and verify-only drills started in the period - C(total), C(drills), C(complete),
        C(failed), C(running), C(success_rate), C(rto_seconds_max), C(rto_seconds_avg), C(items),
        C(items_omitted).
      type: dict
      sample: {"total": 1, "drills": 1, "complete": 1, "failed": 0, "rto_seconds_max": 41.2}
    failovers:
      description: Failovers, switchovers and region failovers started in the period - C(total), C(rejoins),
        C(by_kind) (total, complete, failed, worst RTO, data loss bytes per kind), C(items), C(items_omitted).
      type: dict
      sample: {"total": 2, "rejoins": 0, "by_kind": {"switchover": {"total": 2, "rto_seconds_max": 9.8}}}
    health:
      description: Health checks of the period - C(samples), C(uptime_percent) (ok or warn samples / samples),
        C(host_count), C(hosts) (per host and check), C(checks) (service uptime per check - minutes with at least
        one host passing / minutes with a sample).
      type: dict
      sample: {"samples": 60480, "uptime_percent": 99.97, "host_count": 6}
    drills:
      description: DR drills (C(drill_history), written by C(playbooks/dr_drill.yml); empty when the table does
        not exist) started in the period - C(total), C(passed), C(failed) (failed or aborted), C(running),
        C(pass_rate), C(lost_commits), C(items), C(items_omitted).
      type: dict
      sample: {"total": 1, "passed": 1, "failed": 0, "pass_rate": 100.0}
    objectives:
      description: Every objective as C({name, target, measured, status, detail, unit}); status V(met),
        V(missed) or V(not measured).
      type: list
      elements: dict
      sample: [{"name": "backup success rate", "target": 99.0, "measured": 100.0, "status": "met",
                "detail": "7 complete, 0 failed", "unit": "%"}]
    objectives_config:
      description: The objectives used, defaults filled in.
      type: dict
      sample: {"backup_success_rate_percent": 99.0}
    summary:
      description: C(met), C(missed), C(not_measured) (counts), C(ok) (nothing missed), C(missed_objectives)
        and C(lines) (a plain text summary).
      type: dict
      sample: {"met": 9, "missed": 0, "not_measured": 8, "ok": true}
    warnings:
      description: What could not be read (for example a table missing from an older DR schema).
      type: list
      elements: str
      sample: []
files:
  description: Paths of the files written (C(markdown), C(html), C(json)); V(null) when nothing was written
    (no O(output_dir), or check mode).
  returned: success
  type: dict
  sample: {"markdown": "/var/tmp/dr-reports/dr-report-weekly-20261129T000000Z.md",
           "html": "/var/tmp/dr-reports/dr-report-weekly-20261129T000000Z.html",
           "json": "/var/tmp/dr-reports/dr-report-weekly-20261129T000000Z.json"}
basename:
  description: Name of the files without extension.
  returned: success
  type: str
  sample: dr-report-weekly-20261129T000000Z
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect
from ansible_collections.rtx.dr.plugins.module_utils.report import basename
from ansible_collections.rtx.dr.plugins.module_utils.report import build_report
from ansible_collections.rtx.dr.plugins.module_utils.report import report_argument_spec
from ansible_collections.rtx.dr.plugins.module_utils.report import write_files


def argument_spec():
    return report_argument_spec()


def make_report(module):
    report, markdown, html_text = build_report(module.params, connect)
    for warning in report["warnings"]:
        module.warn(warning)
    files = None
    if module.params["output_dir"] and not module.check_mode:
        files = write_files(module.params["output_dir"], report, markdown, html_text)
    return {"changed": files is not None, "report": report, "files": files, "basename": basename(report)}


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, make_report)


if __name__ == "__main__":
    main()

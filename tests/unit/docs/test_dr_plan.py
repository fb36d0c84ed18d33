# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""docs/dr_plan.md and docs/setup.md stay true to the repository (no network).

- every relative Markdown link points at a file that exists;
- the "Playbook -> runbook" table lists every playbook of playbooks/ with an existing runbook;
- the RTO/RPO table has a row per objective of the lab inventory (rtx_dr_objectives) with its RTO and RPO;
- the architecture has a Mermaid diagram and an ASCII fallback;
- the drill calendar names the AWX schedules' times of awx/controller.yml.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"
PLAN = DOCS / "dr_plan.md"
SETUP = DOCS / "setup.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _section(text, title):
    start = text.index("\n## %s" % title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


@pytest.mark.parametrize("doc", [PLAN, SETUP], ids=lambda p: p.name)
def test_relative_links_exist(doc):
    missing = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, "%s links to missing files: %s" % (doc.name, missing)


def test_every_playbook_has_a_runbook_row():
    table = _section(PLAN.read_text(encoding="utf-8"), "Playbook")
    rows = {}
    for line in table.splitlines():
        match = re.match(r"^\| `playbooks/([a-z_]+\.yml)` \|.*\|(.*)\|$", line)
        if match:
            rows[match.group(1)] = LINK.findall(match.group(2))
    playbooks = sorted(p.name for p in (ROOT / "playbooks").glob("*.yml"))
    assert playbooks, "no playbooks found"
    missing = [p for p in playbooks if p not in rows]
    assert not missing, "docs/dr_plan.md 'Playbook -> runbook' lacks %s" % missing
    for playbook, links in rows.items():
        assert links, "%s has no runbook link" % playbook
        assert (ROOT / "playbooks" / playbook).exists(), "the table lists %s, which does not exist" % playbook


def _seconds(value):
    value = str(value)
    units = {"s": 1, "m": 60, "h": 3600}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def _text_seconds(text):
    match = re.match(r"^\s*(\d+)\s*(s|min|h)\s*$", text)
    assert match, "not a duration: %r" % text
    return int(match.group(1)) * {"s": 1, "min": 60, "h": 3600}[match.group(2)]


def test_objectives_table_matches_the_inventory():
    objectives = yaml.safe_load((ROOT / "inventories/lab/group_vars/all.yml").read_text())["rtx_dr_objectives"]
    table = _section(PLAN.read_text(encoding="utf-8"), "Recovery objectives")
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[1] and cells[1][0].isdigit():
            name = re.sub(r"[^a-z ]", "", cells[0].lower()).strip().replace(" ", "_")
            rows[name] = cells
    for component, objective in objectives.items():
        row = rows.get(component)
        assert row, "docs/dr_plan.md RTO/RPO table has no row for %s (rows: %s)" % (component, sorted(rows))
        assert _text_seconds(row[1]) == _seconds(objective["rto"]), (component, row[1], objective)
        assert _text_seconds(row[2]) == _seconds(objective["rpo"]), (component, row[2], objective)
        assert float(row[3].rstrip(" %")) == float(objective["availability"]), (component, row[3], objective)


def test_architecture_has_mermaid_and_ascii():
    section = _section(PLAN.read_text(encoding="utf-8"), "Architecture")
    assert "```mermaid\n" in section
    assert section.count("```") >= 4, "a Mermaid block and an ASCII fallback block"
    for word in ("sync", "async", "replica", "Route53", "Alertmanager", "SNS", "HAProxy", "PgBouncer", "AWX"):
        assert word in section, word


def test_drill_calendar_matches_awx_schedules():
    controller = ROOT / "awx" / "controller.yml"
    if not controller.exists():
        pytest.skip("awx/controller.yml not there yet")
    text = controller.read_text(encoding="utf-8")
    calendar = _section(PLAN.read_text(encoding="utf-8"), "Drill calendar")
    for hhmm in re.findall(r"DTSTART:\d{8}T(\d{2})(\d{2})00Z", text):
        assert "%s:%s" % hhmm in calendar, "schedule time %s:%s of awx/controller.yml missing in the calendar" % hhmm

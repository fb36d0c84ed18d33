# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""rtx.dr.dr_report: documentation, check mode, files, errors; against a scripted DR schema."""

from __future__ import annotations

import datetime
import json
import sys
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from ansible.module_utils import basic

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripted_db import PermissionDenied, ScriptedConnection  # noqa: E402 pylint: disable=wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import report  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.modules import dr_report  # noqa: E402 pylint: disable=wrong-import-position

UTC = datetime.timezone.utc
NOW = datetime.datetime.now(UTC)


def backup_row(backup_id, hours_ago, status="complete"):
    started = NOW - datetime.timedelta(hours=hours_ago)
    return {"backup_id": backup_id, "kind": "physical", "status": status, "host": "db-east-1", "started_at": started,
            "finished_at": started + datetime.timedelta(seconds=42), "duration_seconds": Decimal("42.125"),
            "size_raw_bytes": 3 * 2 ** 30 if status == "complete" else None,
            "size_compressed_bytes": 2 ** 30 if status == "complete" else None, "compression": "zstd",
            "error": None if status == "complete" else "pg_basebackup: <error> & more"}


def scripted(backups=None, tables=None, fail=None):
    present = dict((table, True) for table in report.TABLES)
    present.update(tables or {})
    steps = [("to_regclass", [present]),
             ("size_compressed_bytes", fail or backups or []),
             ("verified_at", []), ("achieved_rpo_seconds", []), ("failover_id", []), ("drill_id", []),
             ("bool_or", [{"check_name": "postgresql", "minutes": 60, "minutes_up": 60}]),
             ("first_seen", [{"host": "db-east-1", "check_name": "postgresql", "samples": 60, "ok": 60, "warn": 0,
                              "critical": 0, "unknown": 0, "first_seen": NOW, "last_seen": NOW}])]
    connections = []

    def connect(params):
        assert params["login_db"] == "rtx"
        conn = ScriptedConnection(steps)
        connections.append(conn)
        return conn

    connect.connections = connections
    return connect


@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: seen.append(msg))
    return seen


def test_documentation_matches_argument_spec(doc_matches_spec):
    doc = doc_matches_spec(dr_report)
    assert "rtx.dr.postgres" in doc["extends_documentation_fragment"]
    assert doc["attributes"]["check_mode"]["support"] == "full"
    returned = yaml.safe_load(dr_report.RETURN)
    assert set(returned) == {"report", "files", "basename"}
    assert set(returned["report"]["contains"]) == set(report.REPORT_KEYS)
    for example in yaml.safe_load(dr_report.EXAMPLES):
        assert set(example["rtx.dr.dr_report"]) <= set(dr_report.argument_spec())
    # The source order the collection uses: DOCUMENTATION, EXAMPLES, RETURN.
    source = Path(dr_report.__file__).read_text()
    assert source.index("DOCUMENTATION =") < source.index("EXAMPLES =") < source.index("RETURN =")


def test_writes_the_three_files(run_module, monkeypatch, tmp_path, warnings):
    connect = scripted([backup_row("20261127T020000.000Z-F", 30), backup_row("20261126T020000.000Z-F", 54, "failed")])
    monkeypatch.setattr(dr_report, "connect", connect)
    out = tmp_path / "reports"
    failed, result = run_module(dr_report.main, {"login_db": "rtx", "output_dir": str(out), "cluster_name": "lab",
                                                 "objectives": {"database": {"rto": "15m", "rpo": "1m",
                                                                             "availability": 99.9}}})
    assert not failed, result
    assert result["changed"] is True and warnings == []
    assert connect.connections[0].closed
    rep = result["report"]
    assert rep["backups"]["success_rate"] == 50.0 and rep["summary"]["missed"] >= 1
    assert [o["name"] for o in rep["objectives"] if o["name"].startswith("database")] == [
        "database RTO", "database RPO", "database availability"]
    assert rep["objectives_config"]["components"][0]["rto_seconds"] == 900
    files = result["files"]
    assert set(files) == {"markdown", "html", "json"}
    assert all(Path(p).parent == out and Path(p).name.startswith(result["basename"]) for p in files.values())
    page = Path(files["html"]).read_text()
    assert "20261127T020000.000Z-F" in page and "&lt;error&gt; &amp; more" in page and "<error>" not in page
    ET.fromstring(page[page.index("<svg"):page.index("</svg>") + 6])
    assert "| 20261127T020000.000Z-F |" in Path(files["markdown"]).read_text()
    assert json.loads(Path(files["json"]).read_text())["backups"]["complete"] == 1


def test_check_mode_reads_but_writes_nothing(run_module, monkeypatch, tmp_path):
    monkeypatch.setattr(dr_report, "connect", scripted([backup_row("B1", 2)]))
    args = {"login_db": "rtx", "output_dir": str(tmp_path / "out"), "period": "monthly", "_ansible_check_mode": True}
    failed, result = run_module(dr_report.main, args)
    assert not failed, result
    assert result["changed"] is False and result["files"] is None
    assert result["report"]["backups"]["total"] == 1 and result["report"]["period"]["kind"] == "monthly"
    assert not (tmp_path / "out").exists()


def test_no_output_dir_returns_aggregates_only(run_module, monkeypatch):
    monkeypatch.setattr(dr_report, "connect", scripted([]))
    failed, result = run_module(dr_report.main, {"login_db": "rtx", "end": "2026-11-29"})
    assert not failed, result
    assert result["files"] is None and result["changed"] is False
    assert result["basename"] == "dr-report-weekly-20261130T000000Z"
    assert result["report"]["backups"]["success_rate"] is None
    assert "backup success rate" in result["report"]["summary"]["missed_objectives"]


def test_missing_table_is_a_warning(run_module, monkeypatch, warnings):
    monkeypatch.setattr(dr_report, "connect", scripted([], tables={"restore_history": False}))
    failed, result = run_module(dr_report.main, {"login_db": "rtx"})
    assert not failed, result
    assert warnings == ["dr.restore_history does not exist (older DR schema?): its section is empty"]
    assert result["report"]["warnings"] == warnings


@pytest.mark.parametrize("args,words", [
    ({"end": "next tuesday"}, "Invalid end"),
    ({"objectives": {"database": {"rto": "soon"}}}, "database.rto"),
    ({"targets": {"backup_success_rate_percent": 101}}, "percentage"),
    ({"schema": "dr;drop"}, "Invalid schema"),
])
def test_invalid_options(run_module, monkeypatch, args, words):
    monkeypatch.setattr(dr_report, "connect", scripted([]))
    failed, result = run_module(dr_report.main, dict({"login_db": "rtx"}, **args))
    assert failed and words in result["msg"], result


def test_invalid_period_is_refused_by_the_argument_spec(run_module, monkeypatch):
    monkeypatch.setattr(dr_report, "connect", scripted([]))
    failed, result = run_module(dr_report.main, {"login_db": "rtx", "period": "daily"})
    assert failed and "period" in result["msg"]


def test_errors_are_reported_with_a_hint(run_module, monkeypatch):
    def down(params):
        raise ConnectionFailedError("Cannot connect to PostgreSQL at the default unix socket: refused",
                                    hint="Is it up?", details={"reason": "unreachable"}, server_down=True)

    monkeypatch.setattr(dr_report, "connect", down)
    failed, result = run_module(dr_report.main, {"login_db": "rtx"})
    assert failed and result["reason"] == "unreachable" and result["hint"] == "Is it up?"
    monkeypatch.setattr(dr_report, "connect", scripted(fail=PermissionDenied("permission denied for table")))
    failed, result = run_module(dr_report.main, {"login_db": "rtx"})
    assert failed and "permission denied" in result["msg"] and "privilege" in result["hint"]
    monkeypatch.setattr(dr_report, "connect", scripted([], tables={"backup_history": False}))
    failed, result = run_module(dr_report.main, {"login_db": "rtx"})
    assert failed and "no backup_history" in result["msg"] and "login_db" in result["hint"]

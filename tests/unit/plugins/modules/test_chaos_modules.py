# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Modules rtx.dr.chaos_disk_fill, rtx.dr.chaos_connections and rtx.dr.chaos_alerts (thin: logic in module_utils/chaos.py)."""

from __future__ import annotations

import yaml

from ansible_collections.rtx.dr.plugins.module_utils import chaos
from ansible_collections.rtx.dr.plugins.modules import chaos_alerts
from ansible_collections.rtx.dr.plugins.modules import chaos_connections
from ansible_collections.rtx.dr.plugins.modules import chaos_disk_fill

MIB = 1024 * 1024


def test_documentation_matches_argument_spec(doc_matches_spec):
    for module in (chaos_disk_fill, chaos_connections, chaos_alerts):
        doc = doc_matches_spec(module)
        assert doc["attributes"]["check_mode"]["support"] == "full"
        yaml.safe_load(module.EXAMPLES)
        yaml.safe_load(module.RETURN)
    assert "rtx.dr.postgres" in doc_matches_spec(chaos_connections)["extends_documentation_fragment"]


def test_disk_fill_check_mode_then_real_then_absent(run_module, tmp_path, monkeypatch):
    monkeypatch.setattr(chaos, "_statvfs", lambda p: (100 * MIB, 60 * MIB))
    monkeypatch.setattr(chaos, "_allocate", lambda path, size: open(path, "wb").close())
    failed, result = run_module(chaos_disk_fill.main, {"path": str(tmp_path), "percent": 90, "min_free_mb": 1,
                                                       "_ansible_check_mode": True})
    assert not failed and result["changed"] and result["bytes"] > 0
    assert not (tmp_path / ".rtx-dr-chaos-fill").exists()
    failed, result = run_module(chaos_disk_fill.main, {"path": str(tmp_path), "percent": 90, "min_free_mb": 1})
    assert not failed and result["changed"] and (tmp_path / ".rtx-dr-chaos-fill").exists()
    failed, result = run_module(chaos_disk_fill.main, {"path": str(tmp_path), "state": "absent"})
    assert not failed and result["changed"] and not (tmp_path / ".rtx-dr-chaos-fill").exists()
    failed, result = run_module(chaos_disk_fill.main, {"path": str(tmp_path), "state": "absent"})
    assert not failed and not result["changed"]


def test_disk_fill_refuses_a_full_disk(run_module, tmp_path, monkeypatch):
    monkeypatch.setattr(chaos, "_statvfs", lambda p: (100 * MIB, 5 * MIB))
    failed, result = run_module(chaos_disk_fill.main, {"path": str(tmp_path), "percent": 90})
    assert failed and "already 95.0% used" in result["msg"]


def test_disk_fill_refuses_a_path_in_file_name(run_module, tmp_path):
    failed, result = run_module(chaos_disk_fill.main, {"path": str(tmp_path), "file_name": "../x"})
    assert failed and "plain file name" in result["msg"]


def test_connections_check_mode_opens_nothing(run_module, tmp_path):
    failed, result = run_module(chaos_connections.main, {"login_host": "192.0.2.1", "_ansible_check_mode": True,
                                                         "state_file": str(tmp_path / "s"), "stop_file": str(tmp_path / "x")})
    assert not failed and result["opened"] == 0
    assert not (tmp_path / "s").exists()


def test_connections_hold_and_release_on_a_real_server(run_module, pg_cluster, tmp_path):
    import threading

    args = dict(pg_cluster.module_args(login_user="postgres"), max_open=3, hold_seconds=60,
                application_name="rtx.dr chaos unit", state_file=str(tmp_path / "state.json"),
                stop_file=str(tmp_path / "stop"))
    outcome = {}
    holder = threading.Thread(target=lambda: outcome.update(zip(("failed", "result"),
                                                                run_module(chaos_connections.main, dict(args)))))
    holder.start()
    for _attempt in range(100):
        if (tmp_path / "state.json").exists():
            break
        threading.Event().wait(0.1)
    failed, result = run_module(chaos_connections.main, dict(args, state="absent"))
    holder.join(30)
    assert not failed, result
    assert result["changed"] and result["leftover"] == 0
    assert outcome["result"]["opened"] == 3 and outcome["result"]["stopped_by"] == "stop_file"


def test_alerts_needs_names(run_module, tmp_path):
    failed, result = run_module(chaos_alerts.main, {"rules_file": str(tmp_path / "r"), "sources": [{"instance": "h"}],
                                                    "expect": [{"labels": {}}], "work_dir": str(tmp_path)})
    assert failed and "alert name" in result["msg"]
    failed, result = run_module(chaos_alerts.main, {"rules_file": str(tmp_path / "r"), "sources": [{"health": []}],
                                                    "expect": [{"alert": "A"}], "work_dir": str(tmp_path)})
    assert failed and "instance" in result["msg"]

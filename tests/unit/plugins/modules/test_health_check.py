# -*- coding: utf-8 -*-
# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module rtx.dr.health_check, run in-process against a real PostgreSQL primary + standby."""

from __future__ import annotations

import yaml

from ansible_collections.rtx.dr.plugins.modules import health_check


def test_documentation_matches_argument_spec(doc_matches_spec):
    doc = doc_matches_spec(health_check)
    assert "rtx.dr.postgres" in doc["extends_documentation_fragment"]
    assert doc["attributes"]["check_mode"]["support"] == "full"
    yaml.safe_load(health_check.EXAMPLES)
    assert set(yaml.safe_load(health_check.RETURN)) == {"status", "counts", "health"}


def test_database_host_checks(run_module, pg_cluster):
    args = dict(pg_cluster.module_args(login_user="postgres"),
                checks=["postgresql", "replication_lag", "disk", "cpu_load", "memory"],
                expected_role="primary", disk_paths=["/", "/tmp"])
    failed, result = run_module(health_check.main, args)
    assert not failed, result
    expected = ["postgresql", "replication_lag", "disk", "disk", "cpu_load", "memory"]
    assert [r["check"] for r in result["health"]] == expected
    by_check = dict((r["check"], r) for r in result["health"])
    assert by_check["postgresql"]["details"]["role"] == "primary"
    assert "rtxtest_standby" in by_check["replication_lag"]["details"]["standbys"]
    assert sum(result["counts"].values()) == 6
    assert result["changed"] is False


def test_fail_on_critical_names_the_check(run_module, pg_cluster):
    args = dict(pg_cluster.module_args(port=pg_cluster.standby_port, login_user="postgres"),
                checks=["postgresql", "memory"], expected_role="primary", fail_on="critical")
    failed, result = run_module(health_check.main, args)
    assert failed
    assert "postgresql" in result["msg"] and "role is standby, expected primary" in result["msg"]
    assert result["status"] == "critical" and len(result["health"]) == 2


def test_bad_thresholds_fail_with_a_clear_message(run_module):
    failed, result = run_module(health_check.main, {"checks": ["disk"], "thresholds": {"disk": {"warn": 95,
                                                                                                "critical": 90}}})
    assert failed and "health_thresholds.disk: warn (95.0) is above critical (90.0)" in result["msg"]
    failed, result = run_module(health_check.main, {"checks": ["api"]})
    assert failed and "check api needs api_url" in result["msg"]


def test_password_is_not_echoed(run_module):
    failed, result = run_module(health_check.main, {"checks": ["redis"], "redis_port": 1,
                                                    "redis_password": "s3cr3t-redis"})
    assert not failed
    assert "s3cr3t-redis" not in repr(result)
    assert result["health"][0]["status"] == "critical"

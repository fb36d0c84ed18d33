# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""rtx.dr.pg_promote against the real throwaway cluster; promotions use a fresh standby of their own."""

from __future__ import annotations

import time

import pytest
import yaml

from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn
from ansible_collections.rtx.dr.plugins.module_utils.promote import RESULT_KEYS
from ansible_collections.rtx.dr.plugins.modules import pg_promote


def in_recovery(pg_cluster, port):
    return pg_cluster.sql(port, "SELECT pg_is_in_recovery()")[0]


# --------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------


def test_documentation_matches_argument_spec(doc_matches_spec):
    doc = doc_matches_spec(pg_promote)
    assert "rtx.dr.postgres" in doc["extends_documentation_fragment"]
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert list(doc["options"]) == ["wait_replay", "replay_timeout", "timeout", "method", "pg_bin_dir",
                                    "expect_primary_ok"]


def test_return_documents_every_key():
    assert set(yaml.safe_load(pg_promote.RETURN)) == set(RESULT_KEYS)
    yaml.safe_load(pg_promote.EXAMPLES)


# --------------------------------------------------------------------------
# Against the shared cluster (read only)
# --------------------------------------------------------------------------


def test_check_mode_on_standby_changes_nothing(run_module, pg_cluster):
    args = dict(pg_cluster.module_args(port=pg_cluster.standby_port), _ansible_check_mode=True)
    failed, result = run_module(pg_promote.main, args)
    assert not failed, result
    assert result["would_promote"] is True
    assert result["changed"] is True  # would change
    assert result["already_primary"] is False
    assert result["old_timeline"] == 1 and result["new_timeline"] is None
    assert result["promote_lsn"] is None and result["promote_seconds"] is None
    assert result["replay_lag_bytes"] >= 0
    assert in_recovery(pg_cluster, pg_cluster.standby_port) is True


def test_primary_is_accepted_as_already_primary(run_module, pg_cluster):
    failed, result = run_module(pg_promote.main, pg_cluster.module_args())
    assert not failed, result
    assert result["changed"] is False and result["already_primary"] is True
    assert result["old_timeline"] == result["new_timeline"] == 1
    assert result["writable"] is True


def test_primary_with_expect_primary_ok_false_is_not_a_standby(run_module, pg_cluster):
    failed, result = run_module(pg_promote.main, pg_cluster.module_args(expect_primary_ok=False))
    assert failed
    assert "not a standby" in result["msg"]
    assert "expect_primary_ok" in result["hint"]


def test_server_down_is_a_clear_error(run_module, pg_cluster, unused_port):
    port = unused_port
    failed, result = run_module(pg_promote.main, pg_cluster.module_args(port=port, connect_timeout=2))
    assert failed
    assert result["msg"].startswith("Cannot connect to PostgreSQL at 127.0.0.1 port %d" % port)
    assert "Is PostgreSQL running on 127.0.0.1" in result["msg"]
    assert result["reason"] == "unreachable"


# --------------------------------------------------------------------------
# Promotion of a fresh standby
# --------------------------------------------------------------------------


def wait_until(predicate, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met within %ss" % timeout)


def test_promote_fresh_standby_then_rerun(run_module, pg_cluster, fresh_standby):
    port, _datadir = fresh_standby
    args = pg_cluster.module_args(port=port, replay_timeout=1)

    # Paused replay: wait_replay times out with both positions and the gap, and nothing is promoted.
    pg_cluster.sql(port, "SELECT pg_wal_replay_pause()")
    pg_cluster.sql(pg_cluster.primary_port, "SELECT pg_logical_emit_message(false, 'rtx_promote_test', 'x')")
    pg_cluster.sql(pg_cluster.primary_port, "SELECT pg_switch_wal()")
    wait_until(lambda: pg_cluster.sql(port, "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()")[0])
    failed, result = run_module(pg_promote.main, args)
    assert failed
    assert "replay_timeout=1" in result["msg"] and "bytes not replayed" in result["msg"]
    assert result["replay_lag_bytes"] > 0
    assert result["receive_lsn"] in result["msg"] and result["replay_lsn"] in result["msg"]
    assert in_recovery(pg_cluster, port) is True
    pg_cluster.sql(port, "SELECT pg_wal_replay_resume()")

    failed, result = run_module(pg_promote.main, dict(args, replay_timeout=30))
    assert not failed, result
    assert set(result) == set(RESULT_KEYS) | {"changed"}
    assert result["changed"] is True and result["already_primary"] is False
    assert result["old_timeline"] == 1
    assert result["new_timeline"] == result["old_timeline"] + 1
    assert result["writable"] is True
    assert result["method"] == "sql"
    assert parse_lsn(result["promote_lsn"]) > 0
    assert parse_lsn(result["promote_lsn"]) >= parse_lsn(result["receive_lsn"])
    assert result["replay_lag_bytes"] == 0
    assert result["replay_wait_seconds"] >= 0
    assert 0 <= result["promote_seconds"] <= result["total_seconds"]
    assert result["server_version"].startswith("1")
    assert in_recovery(pg_cluster, port) is False

    failed, again = run_module(pg_promote.main, args)
    assert not failed, again
    assert again["changed"] is False and again["already_primary"] is True
    assert again["new_timeline"] == result["new_timeline"]
    assert again["writable"] is True
    assert again["promote_lsn"] is None

    failed, strict = run_module(pg_promote.main, dict(args, expect_primary_ok=False))
    assert failed and "not a standby" in strict["msg"]
    # The shared standby still follows the shared primary.
    assert in_recovery(pg_cluster, pg_cluster.standby_port) is True


@pytest.mark.parametrize("option", ["timeout", "replay_timeout"])
def test_negative_timeouts_are_rejected(run_module, pg_cluster, option):
    failed, result = run_module(pg_promote.main, pg_cluster.module_args(**{option: -1}))
    assert failed and option in result["msg"]

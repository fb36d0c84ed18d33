# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os
import re
import socket

import pytest
import yaml

from ansible.module_utils import basic

from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError
from ansible_collections.rtx.dr.plugins.module_utils.node_info import NODE_INFO_KEYS
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn
from ansible_collections.rtx.dr.plugins.modules import pg_node_info

RESULT_KEYS = set(NODE_INFO_KEYS) | {"changed", "reachable", "error"}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: seen.append(msg))
    return seen


# --------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------


def test_documentation_matches_argument_spec(doc_matches_spec):
    doc = doc_matches_spec(pg_node_info)
    assert "rtx.dr.postgres" in doc["extends_documentation_fragment"]
    assert doc["attributes"]["check_mode"]["support"] == "full"


def test_return_documents_every_key():
    returned = yaml.safe_load(pg_node_info.RETURN)
    assert set(returned) == RESULT_KEYS - {"changed"}
    yaml.safe_load(pg_node_info.EXAMPLES)


# --------------------------------------------------------------------------
# Without a server
# --------------------------------------------------------------------------


def refuse(server_down):
    def connect(params):
        raise ConnectionFailedError(
            "Cannot connect to PostgreSQL at %s port %s (login_db=postgres, login_user=postgres): boom"
            % (params["login_host"], params["login_port"]),
            hint="Check that PostgreSQL is running",
            details={"reason": "unreachable" if server_down else "authentication"},
            server_down=server_down,
        )

    return connect


def test_unreachable_fails_by_default(run_module, monkeypatch):
    monkeypatch.setattr(pg_node_info, "connect", refuse(True))
    failed, result = run_module(pg_node_info.main, {"login_host": "db9"})
    assert failed
    assert result["msg"].startswith("Cannot connect to PostgreSQL at db9 port 5432")
    assert result["hint"] == "Check that PostgreSQL is running"
    assert result["reason"] == "unreachable"


def test_unreachable_tolerated_when_asked(run_module, monkeypatch):
    monkeypatch.setattr(pg_node_info, "connect", refuse(True))
    failed, result = run_module(pg_node_info.main, {"login_host": "db9", "fail_on_unreachable": False})
    assert not failed
    assert result["reachable"] is False
    assert result["changed"] is False
    assert "boom" in result["error"]
    assert set(result) == RESULT_KEYS
    assert result["role"] is None and result["replication"] == []


def test_refused_login_fails_even_when_unreachable_is_tolerated(run_module, monkeypatch):
    monkeypatch.setattr(pg_node_info, "connect", refuse(False))
    failed, result = run_module(pg_node_info.main, {"login_host": "db9", "fail_on_unreachable": False})
    assert failed
    assert result["reason"] == "authentication"


def test_missing_driver_fails_with_install_hint(run_module, monkeypatch):
    def connect(params):
        raise MissingLibraryError("psycopg2 (or psycopg 3)", hint="apt-get install python3-psycopg2")

    monkeypatch.setattr(pg_node_info, "connect", connect)
    failed, result = run_module(pg_node_info.main, {"fail_on_unreachable": False})
    assert failed
    assert "psycopg2" in result["msg"]
    assert result["hint"] == "apt-get install python3-psycopg2"


def test_password_is_not_echoed(run_module, monkeypatch):
    monkeypatch.setattr(pg_node_info, "connect", refuse(True))
    failed, result = run_module(pg_node_info.main, {"login_host": "db9", "login_password": "hunter2-secret"})
    assert failed
    assert "hunter2-secret" not in repr(result)


def test_real_unreachable_port(run_module):
    pytest.importorskip("psycopg2")
    args = {"login_host": "127.0.0.1", "login_port": free_port(), "fail_on_unreachable": False, "ssl_mode": "disable"}
    failed, result = run_module(pg_node_info.main, args)
    assert not failed
    assert result["reachable"] is False
    assert "Cannot connect to PostgreSQL at 127.0.0.1 port %d" % args["login_port"] in result["error"]
    failed, result = run_module(pg_node_info.main, dict(args, fail_on_unreachable=True))
    assert failed
    assert "running" in result["hint"]


# --------------------------------------------------------------------------
# Against a real primary + standby
# --------------------------------------------------------------------------


def test_primary(run_module, pg_cluster, warnings):
    failed, result = run_module(pg_node_info.main, pg_cluster.module_args())
    assert not failed, result
    assert set(result) == RESULT_KEYS
    assert result["changed"] is False
    assert result["reachable"] is True and result["error"] is None
    assert result["in_recovery"] is False
    assert result["role"] == "primary"
    assert result["server_version_num"] >= 100000
    assert result["server_version"].split(".")[0] == str(result["server_version_num"] // 10000)
    assert re.match(r"^\d+$", result["system_identifier"])
    assert result["timeline"] == 1
    assert parse_lsn(result["current_lsn"]) > 0
    assert result["receive_lsn"] is None
    assert result["replay_lsn"] is None
    assert result["replay_lag_bytes"] is None
    assert result["last_replay_time"] is None
    assert result["replay_paused"] is None
    assert result["wal_receiver"] is None
    assert result["wal_segment_size"] == 16 * 1024 * 1024
    assert result["wal_level"] == "replica"
    assert result["archive_mode"] == "off"
    assert result["synchronous_commit"] == "off"
    assert result["synchronous_standby_names"] == ""
    assert result["primary_slot_name"] == ""
    assert result["upstream_host"] is None
    assert os.path.realpath(result["data_directory"]) == os.path.realpath(pg_cluster.primary_dir)
    standbys = [r for r in result["replication"] if r["application_name"] == "rtxtest_standby"]
    assert len(standbys) == 1
    standby = standbys[0]
    assert standby["state"] == "streaming"
    assert standby["sync_state"] == "async"
    assert standby["client_addr"] == "127.0.0.1"
    assert isinstance(standby["pid"], int)
    assert standby["replay_lag_bytes"] >= 0
    assert standby["flush_lag_bytes"] >= 0
    assert standby["replay_lag_bytes"] == parse_lsn(result["current_lsn"]) - parse_lsn(standby["replay_lsn"])
    assert warnings == []


def test_standby(run_module, pg_cluster, warnings):
    failed, primary = run_module(pg_node_info.main, pg_cluster.module_args())
    assert not failed
    failed, result = run_module(pg_node_info.main, pg_cluster.module_args(port=pg_cluster.standby_port))
    assert not failed, result
    assert set(result) == RESULT_KEYS
    assert result["in_recovery"] is True
    assert result["role"] == "standby"
    assert result["system_identifier"] == primary["system_identifier"]
    assert result["timeline"] == 1
    assert result["current_lsn"] is None
    assert parse_lsn(result["receive_lsn"]) > 0
    assert parse_lsn(result["replay_lsn"]) > 0
    assert result["replay_lag_bytes"] == parse_lsn(result["receive_lsn"]) - parse_lsn(result["replay_lsn"])
    assert result["replay_lag_bytes"] >= 0
    assert result["replay_paused"] is False
    assert result["primary_slot_name"] == "rtxtest_slot"
    # Only the host of primary_conninfo, never the connection string.
    assert result["upstream_host"] == "127.0.0.1"
    receiver = result["wal_receiver"]
    assert receiver["status"] == "streaming"
    assert receiver["slot_name"] == "rtxtest_slot"
    assert receiver["sender_host"] == "127.0.0.1"
    assert receiver["sender_port"] == pg_cluster.primary_port
    assert receiver["received_tli"] == 1
    assert parse_lsn(receiver["flushed_lsn"]) > 0
    assert receiver["last_msg_receipt_time"] is None or "T" in receiver["last_msg_receipt_time"]
    assert result["replication"] == []
    assert warnings == []


def test_check_mode_does_the_same_reads(run_module, pg_cluster):
    failed, result = run_module(pg_node_info.main, dict(pg_cluster.module_args(), _ansible_check_mode=True))
    assert not failed
    assert result["role"] == "primary"
    assert result["changed"] is False
    assert result["replication"]


def test_unix_socket_and_db_alias(run_module, pg_cluster):
    args = {"login_unix_socket": pg_cluster.base, "login_port": pg_cluster.standby_port, "db": "template1"}
    failed, result = run_module(pg_node_info.main, args)
    assert not failed, result
    assert result["role"] == "standby"


def test_wrong_password_fails_even_when_unreachable_is_tolerated(run_module, pg_cluster):
    failed, result = run_module(
        pg_node_info.main, pg_cluster.module_args(login_password="wrong", fail_on_unreachable=False)
    )
    assert failed
    assert result["reason"] == "authentication"
    assert "login_password" in result["hint"]


def test_unprivileged_role_gets_nulls_and_warnings(run_module, pg_cluster, warnings):
    import psycopg2  # pylint: disable=import-outside-toplevel

    conn = psycopg2.connect(host="127.0.0.1", port=pg_cluster.primary_port, user="postgres",
                            password=pg_cluster.params()["login_password"], dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS rtx_nopriv")
        cur.execute("CREATE ROLE rtx_nopriv LOGIN PASSWORD 'nopriv-pw'")
    conn.close()
    failed, result = run_module(
        pg_node_info.main, pg_cluster.module_args(login_user="rtx_nopriv", login_password="nopriv-pw")
    )
    assert not failed, result
    assert result["role"] == "primary"
    assert result["data_directory"] is None
    assert any("data_directory" in w for w in warnings)
    # Columns of other users' WAL senders are hidden without pg_read_all_stats.
    assert all(r["replay_lsn"] is None and r["replay_lag_bytes"] is None for r in result["replication"])


def test_promoted_standby_reports_new_timeline_at_once(run_module, pg_cluster):
    datadir = os.path.join(pg_cluster.base, "promoted")
    port = free_port()
    pg_cluster.create_standby(datadir, port, "rtxtest_promoted", "rtxtest_promoted_slot")
    try:
        pg_cluster.wait_streaming("rtxtest_promoted")
        failed, before = run_module(pg_node_info.main, pg_cluster.module_args(port=port))
        assert not failed and before["role"] == "standby" and before["timeline"] == 1
        pg_cluster.run("pg_ctl", "-D", datadir, "-w", "-t", "60", "promote")
        failed, after = run_module(pg_node_info.main, pg_cluster.module_args(port=port))
        assert not failed, after
        assert after["role"] == "primary"
        assert after["in_recovery"] is False
        assert after["timeline"] == 2
        assert after["system_identifier"] == before["system_identifier"]
        # A promoted server keeps the last replayed position of its standby days.
        assert after["replay_lsn"] is not None
        assert parse_lsn(after["current_lsn"]) >= parse_lsn(after["replay_lsn"])
        assert after["primary_slot_name"] == "rtxtest_promoted_slot"
    finally:
        pg_cluster.stop(datadir)

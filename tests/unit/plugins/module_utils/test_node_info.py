# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""gather_node_info() against a scripted fake connection (no server needed)."""

from __future__ import annotations

import datetime
import decimal
import ipaddress
import json
import sys
from pathlib import Path

import pytest

from ansible_collections.rtx.dr.plugins.module_utils.errors import QueryFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.node_info import NODE_INFO_KEYS
from ansible_collections.rtx.dr.plugins.module_utils.node_info import conninfo_host
from ansible_collections.rtx.dr.plugins.module_utils.node_info import empty_node_info
from ansible_collections.rtx.dr.plugins.module_utils.node_info import gather_node_info
from ansible_collections.rtx.dr.plugins.module_utils.node_info import to_jsonable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripted_db import PermissionDenied, ScriptedConnection  # noqa: E402 pylint: disable=wrong-import-position


SETTINGS_ROWS = [
    {"name": "server_version", "setting": "15.8 (Debian 15.8-0+deb12u1)"},
    {"name": "server_version_num", "setting": "150008"},
    {"name": "wal_segment_size", "setting": "16777216"},
    {"name": "synchronous_standby_names", "setting": "ANY 1 (s1, s2)"},
    {"name": "synchronous_commit", "setting": "on"},
    {"name": "primary_slot_name", "setting": ""},
    {"name": "data_directory", "setting": "/var/lib/postgresql/15/main"},
    {"name": "wal_level", "setting": "replica"},
    {"name": "archive_mode", "setting": "on"},
]

REPLAY_TIME = datetime.datetime(2025, 1, 31, 10, 15, 2, 123456, tzinfo=datetime.timezone.utc)


def primary_script(**overrides):
    script = {
        "pg_settings": SETTINGS_ROWS,
        "pg_is_in_recovery": [{"r": False}],
        "pg_control_system": [{"system_identifier": "7301486431285467349"}],
        "pg_control_checkpoint": [{"timeline_id": 2}],
        "pg_last_wal_receive_lsn": [{"receive_lsn": None, "replay_lsn": None, "last_replay_time": None}],
        "pg_current_wal_lsn": [{"lsn": "0/5000148", "walfile": "000000030000000000000005"}],
        "pg_stat_replication": [
            {"pid": 101, "application_name": "s1", "client_addr": ipaddress.ip_address("10.0.0.6"),
             "state": "streaming", "sync_state": "quorum", "sync_priority": 1, "sent_lsn": "0/5000148",
             "write_lsn": "0/5000148", "flush_lsn": "0/5000100", "replay_lsn": "0/5000000",
             "write_lag": datetime.timedelta(microseconds=1500), "flush_lag": None, "replay_lag": None,
             "reply_time": REPLAY_TIME, "backend_start": REPLAY_TIME},
        ],
    }
    script.update(overrides)
    return list(script.items())


def test_primary_facts():
    conn = ScriptedConnection(primary_script())
    info, warnings = gather_node_info(conn)
    assert warnings == []
    assert set(info) == set(NODE_INFO_KEYS)
    assert info["role"] == "primary" and info["in_recovery"] is False
    assert info["server_version_num"] == 150008
    assert info["wal_segment_size"] == 16777216
    # Timeline of the WAL file being written (3), not the last checkpoint's (2).
    assert info["timeline"] == 3
    assert info["current_lsn"] == "0/5000148"
    assert info["synchronous_standby_names"] == "ANY 1 (s1, s2)"
    assert info["archive_mode"] == "on"
    standby = info["replication"][0]
    assert standby["client_addr"] == "10.0.0.6"
    assert standby["write_lag"] == 0.0015
    assert standby["reply_time"] == "2025-01-31T10:15:02.123456+00:00"
    assert standby["flush_lag_bytes"] == 0x48
    assert standby["replay_lag_bytes"] == 0x148
    assert "backend_start" not in standby
    json.dumps(info)
    assert all("pg_is_wal_replay_paused" not in q and "pg_stat_wal_receiver" not in q for q in conn.queries)


def test_standby_facts():
    script = primary_script(**{
        "pg_is_in_recovery": [{"r": True}],
        "pg_last_wal_receive_lsn": [{"receive_lsn": "0/5000148", "replay_lsn": "0/5000100", "last_replay_time": REPLAY_TIME}],
        "pg_is_wal_replay_paused": [{"p": True}],
        "pg_stat_wal_receiver": [{"pid": 7, "status": "streaming", "sender_host": "10.0.0.5", "sender_port": 5432,
                                  "slot_name": "s1", "received_tli": 4, "written_lsn": "0/5000148",
                                  "flushed_lsn": "0/5000148", "latest_end_lsn": "0/5000148",
                                  "last_msg_receipt_time": REPLAY_TIME, "conninfo": "user=rep password=********"}],
        "pg_stat_replication": [],
    })
    conn = ScriptedConnection(script)
    info, warnings = gather_node_info(conn)
    assert warnings == []
    assert info["role"] == "standby"
    assert info["timeline"] == 4
    assert info["current_lsn"] is None
    assert info["replay_lag_bytes"] == 0x48
    assert info["last_replay_time"] == "2025-01-31T10:15:02.123456+00:00"
    assert info["replay_paused"] is True
    assert info["wal_receiver"]["sender_host"] == "10.0.0.5"
    assert "conninfo" not in info["wal_receiver"]
    assert info["replication"] == []
    assert not any("pg_current_wal_lsn" in q for q in conn.queries)


def test_standby_without_wal_receiver_uses_checkpoint_timeline():
    script = primary_script(**{
        "pg_is_in_recovery": [{"r": True}],
        "pg_last_wal_receive_lsn": [{"receive_lsn": None, "replay_lsn": "0/5000100", "last_replay_time": None}],
        "pg_is_wal_replay_paused": [{"p": False}],
        "pg_stat_wal_receiver": [],
        "pg_stat_replication": [],
    })
    info, warnings = gather_node_info(ScriptedConnection(script))
    assert warnings == []
    assert info["wal_receiver"] is None
    assert info["timeline"] == 2
    assert info["replay_lag_bytes"] is None


def test_privilege_errors_become_warnings_and_nulls():
    settings = [row for row in SETTINGS_ROWS if row["name"] != "data_directory"]
    script = primary_script(**{
        "pg_settings": settings,
        "pg_control_system": PermissionDenied("permission denied for function pg_control_system"),
        "pg_control_checkpoint": PermissionDenied("permission denied for function pg_control_checkpoint"),
    })
    info, warnings = gather_node_info(ScriptedConnection(script))
    assert info["system_identifier"] is None
    assert info["data_directory"] is None
    assert info["timeline"] == 3
    assert len(warnings) == 3
    assert any("pg_control_system()" in w and "pg_monitor" in w for w in warnings)


def test_required_query_failure_raises():
    script = primary_script(pg_is_in_recovery=QueryFailedError("boom"))
    with pytest.raises(QueryFailedError):
        gather_node_info(ScriptedConnection(script))


def test_old_server_is_refused():
    settings = [{"name": "server_version", "setting": "9.6.24"}, {"name": "server_version_num", "setting": "90624"}]
    with pytest.raises(RtxDrError) as info:
        gather_node_info(ScriptedConnection(primary_script(pg_settings=settings)))
    assert "9.6.24" in info.value.msg
    assert info.value.details == {"server_version_num": 90624}


def test_empty_node_info_shape():
    info = empty_node_info()
    assert set(info) == set(NODE_INFO_KEYS)
    assert info["replication"] == []
    assert all(v is None for k, v in info.items() if k != "replication")


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        (True, True),
        (3, 3),
        ("x", "x"),
        (decimal.Decimal("12"), 12),
        (decimal.Decimal("1.5"), 1.5),
        (datetime.timedelta(seconds=2, milliseconds=250), 2.25),
        (datetime.date(2025, 1, 2), "2025-01-02"),
        (ipaddress.ip_address("::1"), "::1"),
        (memoryview(b"ab"), "ab"),
        ({"a": decimal.Decimal("2")}, {"a": 2}),
        ([decimal.Decimal("2"), None], [2, None]),
    ],
)
def test_to_jsonable(value, expected):
    assert to_jsonable(value) == expected


@pytest.mark.parametrize(
    "conninfo, expected",
    [
        ("host=db-east-1 port=5432 user=replicator", "db-east-1"),
        ("port=5432 host=10.0.0.5 application_name=db-east-2", "10.0.0.5"),
        ("host='db east 1' port=5432", "db east 1"),
        (r"host='it\'s-db' port=5432", "it's-db"),
        (r"host=back\ slash port=1", "back slash"),
        ("host = db-east-1 port = 5432", "db-east-1"),
        ("host =db-east-1", "db-east-1"),
        ("  host=  db-east-1  ", "db-east-1"),
        ("host=db-east-1\nport=5432", "db-east-1"),
        ("user=rep\thost=db-east-1", "db-east-1"),
        ("port=5432 user=replicator", None),
        ("hostaddr=10.0.0.5 port=5432", None),
        ("hostaddr=10.0.0.5 host=db-east-1", "db-east-1"),
        # As libpq: blanks after "=" are skipped, so the next word is the value.
        ("host= port=5432", "port=5432"),
        ("host='' port=5432", None),
        ("host=", None),
        ("", None),
        (None, None),
        ("host", None),
        ("garbage", None),
    ],
)
def test_conninfo_host(conninfo, expected):
    assert conninfo_host(conninfo) == expected


@pytest.mark.parametrize(
    "conninfo",
    [
        "user=rep password=s3cret host=db-east-1 sslmode=require",
        "password='s3cret host=evil' host=db-east-1",
        r"password='s3\'cret host=evil' host=db-east-1",
    ],
)
def test_conninfo_host_returns_only_the_host(conninfo):
    assert conninfo_host(conninfo) == "db-east-1"


@pytest.mark.parametrize(
    "conninfo",
    [
        "postgresql://rep:s3cret@db-east-1:5432/postgres",
        "postgresql://rep:s3cret@db-east-1/postgres?host=other",
        "password=s3cret port",
    ],
)
def test_conninfo_host_never_returns_other_text(conninfo):
    # URIs are not parsed and broken strings give None: never a piece holding the password.
    assert conninfo_host(conninfo) is None


def test_standby_upstream_host_comes_from_primary_conninfo_without_the_password():
    conninfo = "host=db-east-1 port=5432 user=rep password=s3cret application_name=db-east-2"
    script = primary_script(**{
        "pg_settings": SETTINGS_ROWS + [{"name": "primary_conninfo", "setting": conninfo}],
        "pg_is_in_recovery": [{"r": True}],
        "pg_last_wal_receive_lsn": [{"receive_lsn": "0/5000148", "replay_lsn": "0/5000100", "last_replay_time": None}],
        "pg_is_wal_replay_paused": [{"p": False}],
        "pg_stat_wal_receiver": [],
        "pg_stat_replication": [],
    })
    info, warnings = gather_node_info(ScriptedConnection(script))
    assert warnings == []
    assert info["upstream_host"] == "db-east-1"
    assert "s3cret" not in json.dumps(info)
    assert "primary_conninfo" not in info


def test_primary_has_no_upstream_host():
    script = primary_script(**{
        "pg_settings": SETTINGS_ROWS + [{"name": "primary_conninfo", "setting": "host=db-old password=s3cret"}],
    })
    info, _warnings = gather_node_info(ScriptedConnection(script))
    assert info["upstream_host"] is None
    assert "s3cret" not in json.dumps(info)

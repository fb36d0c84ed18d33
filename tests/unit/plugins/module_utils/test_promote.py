# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""module_utils.promote: pure helpers, timeouts against a scripted connection, pg_ctl against a real standby."""

from __future__ import annotations

import os

import pytest

from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn
from ansible_collections.rtx.dr.plugins.module_utils.promote import RESULT_KEYS
from ansible_collections.rtx.dr.plugins.module_utils.promote import NotAStandbyError
from ansible_collections.rtx.dr.plugins.module_utils.promote import PromotionTimeoutError
from ansible_collections.rtx.dr.plugins.module_utils.promote import pg_ctl_candidates
from ansible_collections.rtx.dr.plugins.module_utils.promote import pg_ctl_promote_argv
from ansible_collections.rtx.dr.plugins.module_utils.promote import promote
from ansible_collections.rtx.dr.plugins.module_utils.promote import replay_caught_up
from ansible_collections.rtx.dr.plugins.module_utils.promote import replay_gap
from ansible_collections.rtx.dr.plugins.module_utils.promote import timeline_of_walfile

# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def test_timeline_of_walfile():
    assert timeline_of_walfile("000000010000000000000003") == 1
    assert timeline_of_walfile("0000000A00000001000000FF") == 10
    assert timeline_of_walfile("000000020000000000000003", None) == 2
    with pytest.raises(InvalidValueError):
        timeline_of_walfile("00000002.history")


def test_replay_gap_and_caught_up():
    assert replay_gap("0/3000100", "0/3000000") == 256
    assert replay_gap("1/0", "0/FFFFFFFF") == 1
    assert replay_gap("0/3000000", "0/3000100") == 0  # replay ahead of receive (archive recovery)
    assert replay_gap(None, "0/3000000") is None
    assert replay_gap("0/3000000", None) is None
    assert replay_caught_up("0/3000000", "0/3000000")
    assert replay_caught_up("0/3000000", "0/3000008")
    assert not replay_caught_up("0/3000008", "0/3000000")
    assert replay_caught_up(None, "0/3000000")  # nothing received by streaming
    assert not replay_caught_up("0/3000000", None)


def test_pg_ctl_helpers():
    assert pg_ctl_candidates(150008) == ["/usr/lib/postgresql/15/bin/pg_ctl"]
    assert pg_ctl_candidates(150008, "/opt/pg/bin") == ["/opt/pg/bin/pg_ctl"]
    assert pg_ctl_candidates(0) == []
    assert pg_ctl_promote_argv("/x/pg_ctl", "/data dir", 30) == ["/x/pg_ctl", "promote", "-D", "/data dir", "-w", "-t", "30"]


# --------------------------------------------------------------------------
# Scripted connection
# --------------------------------------------------------------------------


class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.description = None
        self.row = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        self.conn.queries.append(sql)
        row = self.conn.answer(sql, params)
        self.description = [(name,) for name in row]
        self.row = tuple(row.values())

    def fetchone(self):
        return self.row


class FakeConn:
    """A standby that never finishes recovery, or whose replay never catches up."""

    def __init__(self, in_recovery=True, receive="0/5000000", replay="0/4000000", promote_returns=False):
        self.in_recovery = in_recovery
        self.receive = receive
        self.replay = replay
        self.promote_returns = promote_returns
        self.queries = []
        self.closed = False

    def cursor(self):
        return FakeCursor(self)

    def close(self):
        self.closed = True

    def answer(self, sql, params):  # pylint: disable=unused-argument
        if "server_version_num" in sql:
            return {"server_version": "15.8", "server_version_num": 150008,
                    "wal_segment_size": "16777216", "data_directory": "/var/lib/postgresql/15/main"}
        if "pg_is_in_recovery" in sql:
            return {"r": self.in_recovery}
        if "pg_last_wal_receive_lsn" in sql:
            return {"receive_lsn": self.receive, "replay_lsn": self.replay}
        if "received_tli" in sql:
            return {"received_tli": 3}
        if "pg_is_wal_replay_paused" in sql:
            return {"p": True}
        if "pg_promote" in sql:
            return {"promoted": self.promote_returns}
        if "pg_walfile_name" in sql:
            return {"walfile": "000000030000000000000005"}
        raise AssertionError("unexpected query %s" % sql)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


PARAMS = {"login_host": "db1", "login_port": 5432, "wait_replay": True, "replay_timeout": 5, "timeout": 7,
          "method": "sql", "pg_bin_dir": None, "expect_primary_ok": True}


def run_fake(conn, **overrides):
    clock = FakeClock()
    params = dict(PARAMS, **overrides)
    return promote(lambda: conn, params, clock=clock, sleep=clock.sleep)


def test_replay_timeout_shows_both_lsns_and_gap_and_does_not_promote():
    conn = FakeConn()
    with pytest.raises(PromotionTimeoutError) as exc:
        run_fake(conn)
    msg = exc.value.msg
    assert "replay_timeout=5" in msg and "0/5000000" in msg and "0/4000000" in msg
    assert "16777216 bytes not replayed" in msg and "paused" in msg
    assert "pg_wal_replay_resume" in exc.value.hint
    assert exc.value.details["replay_lag_bytes"] == 16777216
    assert not any("pg_promote" in q for q in conn.queries)
    assert conn.closed


def test_promotion_timeout_names_option_and_state():
    conn = FakeConn(replay="0/5000000")
    with pytest.raises(PromotionTimeoutError) as exc:
        run_fake(conn)
    assert "timeout=7" in exc.value.msg
    assert "still in recovery" in exc.value.msg
    assert exc.value.details["in_recovery"] is True


def test_promotion_reported_but_never_writable_times_out():
    conn = FakeConn(replay="0/5000000", promote_returns=True)
    with pytest.raises(PromotionTimeoutError) as exc:
        run_fake(conn)
    assert "accept writes" in exc.value.msg


def test_check_mode_reads_only():
    conn = FakeConn()
    clock = FakeClock()
    result = promote(lambda: conn, PARAMS, check_mode=True, clock=clock, sleep=clock.sleep)
    assert set(result) == set(RESULT_KEYS) | {"changed"}
    assert result["changed"] is True and result["would_promote"] is True
    assert result["old_timeline"] == 3 and result["new_timeline"] is None
    assert result["replay_lag_bytes"] == 16777216
    assert not any("pg_promote" in q or "txid_current" in q for q in conn.queries)


def test_invalid_timeout():
    with pytest.raises(InvalidValueError, match="timeout=0"):
        run_fake(FakeConn(), timeout=0)


def test_not_a_standby_on_fake_primary():
    with pytest.raises(NotAStandbyError, match="not a standby"):
        run_fake(FakeConn(in_recovery=False), expect_primary_ok=False)


def test_pg_ctl_not_found_is_clear(tmp_path):
    with pytest.raises(RtxDrError, match="pg_ctl not found") as exc:
        run_fake(FakeConn(), method="pg_ctl", pg_bin_dir=str(tmp_path))
    assert "pg_bin_dir" in exc.value.hint


def test_server_down_message():
    def refuse():
        raise ConnectionFailedError("Cannot connect to PostgreSQL at db1 port 5432: refused", hint="h",
                                    details={"reason": "unreachable"}, server_down=True)

    with pytest.raises(ConnectionFailedError) as exc:
        promote(refuse, PARAMS)
    assert "Is PostgreSQL running on db1" in exc.value.msg
    assert exc.value.server_down and exc.value.details["reason"] == "unreachable"


# --------------------------------------------------------------------------
# pg_ctl promote on a real throwaway standby
# --------------------------------------------------------------------------


def test_pg_ctl_method_promotes_real_standby(pg_cluster, fresh_standby):
    port, datadir = fresh_standby
    params = dict(pg_cluster.params(port=port), wait_replay=True, replay_timeout=30, timeout=30,
                  method="pg_ctl", pg_bin_dir=pg_cluster.bindir, expect_primary_ok=True)
    commands = []

    def run_as_server_owner(argv):
        # The module runs pg_ctl as the task's (become) user; here the servers run as the fixture's user.
        commands.append(argv)
        proc = pg_cluster.run(os.path.basename(argv[0]), *argv[1:], check=False)
        return proc.returncode, proc.stdout.decode(), ""

    result = promote(lambda: connect(params), params, run_command=run_as_server_owner)
    assert len(commands) == 1
    assert commands[0][:3] == [os.path.join(pg_cluster.bindir, "pg_ctl"), "promote", "-D"]
    assert os.path.realpath(commands[0][3]) == os.path.realpath(datadir)
    assert commands[0][4:] == ["-w", "-t", "30"]
    assert result["changed"] is True and result["method"] == "pg_ctl"
    assert result["new_timeline"] == result["old_timeline"] + 1
    assert result["writable"] is True
    assert parse_lsn(result["promote_lsn"]) > 0

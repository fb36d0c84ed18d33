# -*- coding: utf-8 -*-

# Copyright: (c) 2026, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The boot-time fence guard (module_utils/fence_guard.py): the decision, the leader record in S3 (moto),
the data directory, the peers and the command line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import encrypted_bucket_and_key  # noqa: E402 pylint: disable=wrong-import-position
from moto_server import moto_url  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import fence_guard  # noqa: E402 pylint: disable=wrong-import-position

SYSID = "7300000000000000001"
CONTROLDATA = """pg_control version number:            1300
Database system identifier:           %s
Database cluster state:               shut down
Latest checkpoint's TimeLineID:       %d
Latest checkpoint's PrevTimeLineID:   %d
"""


def local(timeline=2, signals=(), override=False, initialized=True, error=None, sysid=SYSID):
    return {"data_dir": "/data", "signals": list(signals), "override": override, "initialized": initialized,
            "system_identifier": sysid, "timeline": timeline, "state": "shut down", "error": error}


def record(host="db1", timeline=2, sysid=SYSID):
    return {"status": "ok", "where": "s3://b/p/topology/leader.json",
            "record": {"host": host, "timeline": timeline, "system_identifier": sysid, "since": "t", "by": "site"}}


def peer(host, status="standby", timeline=2, sysid=SYSID):
    return {"host": host, "status": status, "timeline": timeline, "system_identifier": sysid, "error": None}


def down(host):
    return {"host": host, "status": "error", "error": "connection timed out"}


MISSING = {"status": "missing", "where": "s3://b/p/topology/leader.json"}
S3_DOWN = {"status": "error", "where": "s3://b/p/topology/leader.json", "error": "Cannot reach the AWS endpoint"}


# --------------------------------------------------------------------------
# decide
# --------------------------------------------------------------------------


@pytest.mark.parametrize("signals", [["standby.signal"], ["recovery.signal"], ["standby.signal", "recovery.signal"]])
def test_a_server_with_a_signal_file_starts_whatever_else_says(signals):
    decision = fence_guard.decide("db1", local(signals=signals), record(host="db2", timeline=9),
                                  [peer("db2", "primary", 9)])
    assert decision["start"] is True
    assert "starts as a standby" in decision["reason"]


def test_an_empty_data_directory_starts():
    assert fence_guard.decide("db1", local(initialized=False), S3_DOWN, [])["start"] is True


def test_the_override_file_allows_one_start():
    decision = fence_guard.decide("db1", local(override=True), record(host="db2", timeline=3), [])
    assert decision["start"] is True and fence_guard.OVERRIDE_FILE in decision["reason"]


def test_an_unreadable_control_file_refuses():
    decision = fence_guard.decide("db1", local(timeline=None, error="pg_controldata failed: x"), record(), [])
    assert decision["start"] is False and "control file cannot be read" in decision["reason"]


def test_plain_reboot_of_the_recorded_leader_starts():
    decision = fence_guard.decide("db1", local(), record(), [peer("db2"), peer("db3", timeline=1), down("dbw")])
    assert decision["start"] is True
    assert "names this server" in decision["reason"]
    assert any("dbw did not answer" in w for w in decision["warnings"])


def test_plain_reboot_of_the_leader_starts_even_when_no_peer_answers():
    decision = fence_guard.decide("db1", local(), record(), [down("db2"), down("dbw")])
    assert decision["start"] is True


def test_returning_old_primary_is_refused_by_the_leader_record():
    decision = fence_guard.decide("db1", local(timeline=2), record(host="dbw", timeline=3), [down("dbw")])
    assert decision["start"] is False
    assert "names dbw (timeline 3" in decision["reason"] and "second primary" in decision["reason"]


def test_leader_record_naming_another_host_refuses_even_on_the_same_timeline():
    assert fence_guard.decide("db1", local(timeline=2), record(host="db2", timeline=2), [])["start"] is False


@pytest.mark.parametrize("leader", [record(), MISSING, S3_DOWN])
def test_a_writable_peer_on_a_newer_timeline_refuses_whatever_the_record_says(leader):
    decision = fence_guard.decide("db1", local(timeline=2), leader, [peer("dbw", "primary", 3)])
    assert decision["start"] is False
    assert "dbw accepts writes (timeline 3" in decision["reason"]


def test_a_refusal_on_the_peers_word_names_the_recorded_leader_too():
    decision = fence_guard.decide("db1", local(timeline=2), record(host="dbw", timeline=3), [peer("dbw", "primary", 3)])
    assert decision["start"] is False
    assert decision["reason"].startswith("dbw accepts writes (timeline 3")
    assert decision["reason"].endswith("; the leader record names dbw (timeline 3, since t, by site)")


def test_a_writable_peer_on_the_same_timeline_refuses():
    assert fence_guard.decide("db1", local(timeline=2), record(), [peer("db2", "primary", 2)])["start"] is False


def test_a_stale_writable_peer_on_an_older_timeline_is_only_a_warning():
    decision = fence_guard.decide("dbw", local(timeline=3), record(host="dbw", timeline=3),
                                  [peer("db1", "primary", 2)])
    assert decision["start"] is True
    assert any("db1 accepts writes on the older timeline 2" in w for w in decision["warnings"])


def test_a_standby_on_a_newer_timeline_refuses():
    decision = fence_guard.decide("db1", local(timeline=2), S3_DOWN, [peer("db3", "standby", 3)])
    assert decision["start"] is False
    assert "timeline 3, newer than this server's timeline 2" in decision["reason"]


def test_peers_of_another_cluster_are_ignored():
    decision = fence_guard.decide("db1", local(), record(), [peer("x", "primary", 9, sysid="42")])
    assert decision["start"] is True
    assert any("another cluster" in w for w in decision["warnings"])


def test_no_record_yet_starts():
    decision = fence_guard.decide("db1", local(), MISSING, [down("db2")])
    assert decision["start"] is True and "no leader record yet" in decision["reason"]


def test_a_record_of_another_cluster_is_ignored():
    decision = fence_guard.decide("db1", local(), record(host="db2", sysid="42"), [])
    assert decision["start"] is True
    assert any("of another cluster" in w for w in decision["warnings"])


def test_s3_unreachable_but_standby_peers_answer_starts():
    decision = fence_guard.decide("db1", local(timeline=2), S3_DOWN, [peer("db2"), down("dbw")])
    assert decision["start"] is True
    assert "db2 answered" in decision["reason"]
    assert any("cannot be read" in w for w in decision["warnings"])


def test_nothing_can_be_asked_refuses_by_default():
    decision = fence_guard.decide("db1", local(), S3_DOWN, [down("db2"), down("dbw")])
    assert decision["start"] is False
    assert "cannot be shown that this server is the primary" in decision["reason"]


def test_nothing_can_be_asked_starts_with_the_start_policy():
    decision = fence_guard.decide("db1", local(), S3_DOWN, [down("db2")], unknown="start")
    assert decision["start"] is True
    assert any("neither the leader record" in w for w in decision["warnings"])


# --------------------------------------------------------------------------
# may_replace
# --------------------------------------------------------------------------


def new(host="db2", timeline=3, sysid=SYSID):
    return {"host": host, "timeline": timeline, "system_identifier": sysid}


@pytest.mark.parametrize("current, expected", [
    (MISSING, True),
    (S3_DOWN, True),
    (record(host="db1", timeline=2), True),      # newer timeline
    (record(host="db2", timeline=3), True),      # same server
    (record(host="db1", timeline=1, sysid="42"), True),  # another cluster
    (record(host="db1", timeline=3), False),     # same timeline, another server
    (record(host="db1", timeline=4), False),     # a stale primary cannot claim it back
])
def test_may_replace(current, expected):
    allowed, why = fence_guard.may_replace(current, new())
    assert allowed is expected, why


# --------------------------------------------------------------------------
# Data directory and control data
# --------------------------------------------------------------------------


def test_parse_controldata():
    assert fence_guard.parse_controldata(CONTROLDATA % (SYSID, 27, 26)) == {
        "system_identifier": SYSID, "timeline": 27, "state": "shut down"}
    assert fence_guard.parse_controldata("garbage")["timeline"] is None


def fake_run(stdout, returncode=0, stderr=""):
    calls = []

    def run(argv, **kwargs):
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)

    run.calls = calls
    return run


def datadir(tmp_path, *files):
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(b"x")
    for name in files:
        (tmp_path / name).write_text("")
    return str(tmp_path)


def test_local_state_reads_the_control_file(tmp_path):
    run = fake_run(CONTROLDATA % (SYSID, 5, 4))
    state = fence_guard.local_state(datadir(tmp_path), "/usr/lib/postgresql/15/bin", run=run)
    assert state["timeline"] == 5 and state["system_identifier"] == SYSID and state["signals"] == []
    assert run.calls[0][0] == ["/usr/lib/postgresql/15/bin/pg_controldata", "-D", str(tmp_path)]
    assert run.calls[0][1]["env"]["LC_ALL"] == "C"


def test_local_state_with_standby_signal_does_not_run_pg_controldata(tmp_path):
    run = fake_run("")
    state = fence_guard.local_state(datadir(tmp_path, "standby.signal"), "/bin", run=run)
    assert state["signals"] == ["standby.signal"] and run.calls == []


def test_local_state_pg_controldata_failure(tmp_path):
    state = fence_guard.local_state(datadir(tmp_path), "/bin", run=fake_run("", 1, "could not open file"))
    assert state["error"] == "pg_controldata failed: could not open file"
    assert fence_guard.decide("db1", state, record(), [])["start"] is False


def test_local_state_of_an_empty_directory(tmp_path):
    state = fence_guard.local_state(str(tmp_path), "/bin", run=fake_run(""))
    assert state["initialized"] is False


# --------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------


class FakeConn:
    def __init__(self, row):
        self.row = row

    def cursor(self):
        return FakeCursor(self.row)

    def close(self):
        pass


class FakeCursor:
    def __init__(self, row):
        self.row = row
        self.description = [(name,) for name in row]

    def execute(self, sql, params=None):
        self.sql = sql

    def fetchone(self):
        return tuple(self.row.values())

    def fetchall(self):
        return [tuple(self.row.values())]

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_connect(rows):
    seen = []

    def connect(params, application_name=None):
        seen.append(params)
        row = rows[params["login_host"]]
        if isinstance(row, Exception):
            raise row
        return FakeConn(row)

    connect.seen = seen
    return connect


def test_ask_peers(monkeypatch):
    from ansible_collections.rtx.dr.plugins.module_utils import postgres

    monkeypatch.setattr(postgres, "query_one", lambda conn, sql, params=None: conn.row)
    connect = fake_connect({
        "db2": {"in_recovery": True, "system_identifier": int(SYSID), "timeline": 2, "lsn": None},
        "dbw": {"in_recovery": False, "system_identifier": int(SYSID), "timeline": 3, "lsn": "0/5000000"},
        "db3": OSError("connection timed out"),
    })
    options = {"port": 5433, "user": "replicator", "ssl_mode": "verify-full", "ca_cert": "/ca", "connect_timeout": 2}
    peers = fence_guard.ask_peers(["db2", "dbw", "db3"], options, connect)
    assert peers[0] == {"host": "db2", "status": "standby", "system_identifier": SYSID, "timeline": 2, "lsn": None,
                        "error": None}
    assert peers[1]["status"] == "primary" and peers[1]["timeline"] == 3
    assert peers[2] == {"host": "db3", "status": "error", "error": "connection timed out"}
    params = [p for p in connect.seen if p["login_host"] == "dbw"][0]
    assert params["login_port"] == 5433 and params["login_user"] == "replicator" and params["connect_timeout"] == 2
    assert params["ssl_mode"] == "verify-full" and params["ca_cert"] == "/ca"
    assert fence_guard.ask_peers([], options, connect) == []


# --------------------------------------------------------------------------
# Leader record in S3 (moto) and the commands
# --------------------------------------------------------------------------


@pytest.fixture
def aws(moto_url):  # noqa: F811 pylint: disable=redefined-outer-name
    return encrypted_bucket_and_key(moto_url, "rtx-guard")


@pytest.fixture
def config(aws, tmp_path):  # pylint: disable=redefined-outer-name
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({
        "bucket": aws["bucket"], "prefix": "pgbackup/guard", "cluster_name": "guard", "kms_key_id": aws["alias"],
        "encryption": "aws:kms", "endpoint_url": aws["url"], "region": "us-east-1", "access_key": "testing",
        "secret_key": "testing", "login_unix_socket": "/var/run/postgresql", "backup": {"timeout": 10},
        "wal": {"compression": "zstd"}}))
    return str(path)


KEY = "pgbackup/guard/topology/leader.json"


def primary_state(timeline=3, in_recovery=False):
    row = {"in_recovery": in_recovery, "system_identifier": SYSID, "timeline": timeline, "lsn": "0/7000000"}
    return lambda params, application_name=None: FakeConn(row)


def run_main(argv, monkeypatch, connect=None):
    from ansible_collections.rtx.dr.plugins.module_utils import postgres

    monkeypatch.setattr(postgres, "query_one", lambda conn, sql, params=None: conn.row)
    out, err = io.StringIO(), io.StringIO()
    code = fence_guard.main(argv, stdout=out, stderr=err, connect=connect)
    return code, out.getvalue(), err.getvalue()


def test_params_from_config_reads_the_shared_options_only(config):  # pylint: disable=redefined-outer-name
    params = fence_guard.params_from_config(config)
    assert params["prefix"] == "pgbackup/guard" and params["encryption"] == "aws:kms"
    assert "backup" not in params and "login_unix_socket" not in params
    assert fence_guard.leader_key(params) == KEY


def test_record_writes_an_encrypted_record_and_check_reads_it(aws, config, monkeypatch, tmp_path):  # pylint: disable=redefined-outer-name
    code, out, err = run_main(["--config", config, "record", "--host", "dbw", "--by", "failover:f1"], monkeypatch,
                              primary_state(3))
    assert code == 0, err
    assert json.loads(out)["changed"] is True
    head = aws["s3"].head_object(Bucket=aws["bucket"], Key=KEY)
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == aws["arn"]
    stored = json.loads(aws["s3"].get_object(Bucket=aws["bucket"], Key=KEY)["Body"].read())
    assert stored["host"] == "dbw" and stored["timeline"] == 3 and stored["system_identifier"] == SYSID
    assert stored["by"] == "failover:f1" and stored["cluster"] == "guard" and stored["since"]

    # Unchanged on a rerun.
    code, out, err = run_main(["--config", config, "record", "--host", "dbw"], monkeypatch, primary_state(3))
    assert code == 0 and json.loads(out)["changed"] is False

    # A stale primary on an older timeline cannot take the record.
    code, out, err = run_main(["--config", config, "record", "--host", "db1"], monkeypatch, primary_state(2))
    assert code == 1 and "not recorded" in err
    assert json.loads(aws["s3"].get_object(Bucket=aws["bucket"], Key=KEY)["Body"].read())["host"] == "dbw"

    # show
    code, out, err = run_main(["--config", config, "show"], monkeypatch)
    assert code == 0 and json.loads(out)["record"]["host"] == "dbw"

    # The old primary db1 (timeline 2, no standby.signal) is refused at start.
    data = tmp_path / "data"
    data.mkdir()
    datadir(data)
    monkeypatch.setattr(fence_guard.subprocess, "run", fake_run(CONTROLDATA % (SYSID, 2, 1)))
    down_peers = fake_connect({"dbw": OSError("timeout")})
    code, out, err = run_main(["--config", config, "check", "--host", "db1", "--data-dir", str(data),
                               "--peer", "dbw", "--peer", "db1"], monkeypatch, down_peers)
    assert code == 1, err
    assert "REFUSED to start PostgreSQL on db1 as a primary" in err and "names dbw (timeline 3" in err
    assert "region_failback.yml" in err and "rejoin.yml -e rejoin_host=db1" in err
    assert [p["login_host"] for p in down_peers.seen] == ["dbw"]  # never itself

    # With standby.signal it starts (rejoin/region_failback start it that way).
    (data / "standby.signal").write_text("")
    code, out, err = run_main(["--config", config, "check", "--host", "db1", "--data-dir", str(data)], monkeypatch)
    assert code == 0 and "start allowed on db1" in err

    # The override file allows one start and is removed.
    (data / "standby.signal").unlink()
    (data / fence_guard.OVERRIDE_FILE).write_text("")
    code, out, err = run_main(["--config", config, "check", "--host", "db1", "--data-dir", str(data)], monkeypatch)
    assert code == 0 and not (data / fence_guard.OVERRIDE_FILE).exists()

    # The recorded leader itself starts.
    monkeypatch.setattr(fence_guard.subprocess, "run", fake_run(CONTROLDATA % (SYSID, 3, 2)))
    code, out, err = run_main(["--config", config, "check", "--host", "dbw", "--data-dir", str(data)], monkeypatch)
    assert code == 0 and "names this server" in err


def test_record_on_a_standby(config, monkeypatch):  # pylint: disable=redefined-outer-name
    code, out, err = run_main(["--config", config, "record", "--host", "db2", "--if-primary"], monkeypatch,
                              primary_state(3, in_recovery=True))
    assert code == 0 and json.loads(out)["skipped"] is True
    code, out, err = run_main(["--config", config, "record", "--host", "db2"], monkeypatch,
                              primary_state(3, in_recovery=True))
    assert code == 1 and "only the primary is recorded" in err


def test_check_when_s3_and_peers_are_unreachable(tmp_path, monkeypatch):
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"bucket": "b", "prefix": "p", "endpoint_url": "http://127.0.0.1:9",
                                "region": "us-east-1", "access_key": "a", "secret_key": "s", "kms_key_id": "k"}))
    data = tmp_path / "data"
    data.mkdir()
    datadir(data)
    monkeypatch.setattr(fence_guard.subprocess, "run", fake_run(CONTROLDATA % (SYSID, 2, 1)))
    argv = ["--config", str(path), "check", "--host", "db1", "--data-dir", str(data), "--peer", "db2"]
    code, out, err = run_main(argv, monkeypatch, fake_connect({"db2": OSError("no route to host")}))
    assert code == 1 and "neither the leader record nor any other database server can be asked" in err
    code, out, err = run_main(argv + ["--unknown", "start"], monkeypatch, fake_connect({"db2": OSError("x")}))
    assert code == 0


def test_check_with_a_missing_configuration_falls_back_on_the_peers(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    datadir(data)
    monkeypatch.setattr(fence_guard.subprocess, "run", fake_run(CONTROLDATA % (SYSID, 2, 1)))
    row = {"in_recovery": True, "system_identifier": SYSID, "timeline": 2, "lsn": None}
    code, out, err = run_main(["--config", str(tmp_path / "nope.json"), "check", "--host", "db1", "--data-dir",
                               str(data), "--peer", "db2"], monkeypatch, fake_connect({"db2": row}))
    assert code == 0 and "db2 answered" in err
    assert "Cannot read the agent configuration" in err


def test_an_unexpected_error_refuses(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyError("bug")

    monkeypatch.setattr(fence_guard, "run_check", boom)
    code, out, err = run_main(["check", "--host", "db1", "--data-dir", str(tmp_path)], monkeypatch)
    assert code == 1 and "unexpected error KeyError" in err


def test_parse_controldata_empty_values_are_none():
    text = "Database system identifier:\nDatabase cluster state:    \nLatest checkpoint's TimeLineID:   x\n"
    assert fence_guard.parse_controldata(text) == {"system_identifier": None, "timeline": None, "state": None}
    assert fence_guard.parse_controldata("") == {"system_identifier": None, "timeline": None, "state": None}


def test_local_state_runs_with_the_system_python_alone(tmp_path):
    """At boot the guard has neither ansible nor a database driver nor boto3: reading the control file needs none."""
    repo = Path(__file__).resolve().parents[4]
    lib = tmp_path / "lib"
    package = lib / "ansible_collections" / "rtx" / "dr" / "plugins" / "module_utils"
    package.mkdir(parents=True)
    for source in sorted((repo / "plugins" / "module_utils").glob("*.py")):
        (package / source.name).write_bytes(source.read_bytes())
    for name in ("ansible", "psycopg", "psycopg2", "boto3", "botocore"):
        (lib / name).mkdir()
        (lib / name / "__init__.py").write_text("raise ImportError('no %s on the database host')\n" % name)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pg_controldata").write_text("#!/bin/sh\ncat <<'END'\n%sEND\n" % (CONTROLDATA % (SYSID, 4, 3)))
    (bindir / "pg_controldata").chmod(0o755)
    (tmp_path / "data").mkdir()
    code = ("import json, sys\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from ansible_collections.rtx.dr.plugins.module_utils import fence_guard\n"
            "state = fence_guard.local_state(sys.argv[2], sys.argv[3])\n"
            "print(json.dumps([state, sorted(m for m in sys.modules\n"
            "                                if m.split('.')[0] in ('psycopg', 'psycopg2', 'boto3', 'botocore'))]))\n")
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(lib), datadir(tmp_path / "data"), str(bindir)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    state, drivers = json.loads(proc.stdout)
    assert state["system_identifier"] == SYSID and state["timeline"] == 4 and state["error"] is None
    assert drivers == []

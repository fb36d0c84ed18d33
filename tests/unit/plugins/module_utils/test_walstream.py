# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Streaming mode of the WAL archive (module_utils/walstream.py, ``wal_agent stream-receive|stream-upload``).

1. Decisions, in process: the spool rules (what pg_receivewal resumes from, what is moved aside), the
   receiver's supervision (fake server probe and fake pg_receivewal), the uploader's ticks (fake probe, real
   S3 = moto, a client that can be switched off), the restore of a streamed partial and its refusals.
2. A real PostgreSQL server (binaries of the ``pg_cluster`` fixture) whose archive_command is the agent, with
   ``stream-receive`` (running the real pg_receivewal) and ``stream-upload`` as subprocesses, as the server's
   user, without ansible, the uploader talking to S3 through a proxy the test can switch off: a commit is
   covered by the streamed partial within seconds (the delays are printed: ``-s``), a segment switch lands in
   the archive, an S3 outage is survived and caught up, a point-in-time restore with ``fetch --partial`` gets
   the last commit that was only in the partial; a standby is not streamed from until it is promoted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from moto_server import encrypted_bucket_and_key  # noqa: E402 pylint: disable=wrong-import-position
from moto_server import moto_url  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position
from test_wal_agent import make_layout  # noqa: E402 pylint: disable=wrong-import-position
from test_wal_agent import wal_bytes  # noqa: E402 pylint: disable=wrong-import-position
from test_wal_agent import write_config  # noqa: E402 pylint: disable=wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import wal_agent  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import walarchive  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import walstream  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.agent import Log  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.compress import decompress_bytes  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import format_lsn  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import wal_segment_name  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024
MODULE = "ansible_collections.rtx.dr.plugins.module_utils.wal_agent"


def seg(tli, segno):
    return "%08X%08X%08X" % (tli, segno // 256, segno % 256)


# --------------------------------------------------------------------------
# 1. decisions in process
# --------------------------------------------------------------------------


def test_scan_spool_orders_history_then_wal(tmp_path):
    for name in (seg(1, 5), seg(2, 4), "00000002.history", seg(1, 6) + ".partial", seg(2, 6) + ".partial",
                 ".tmp-x", "00000002.history.tmp", "junk"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / walstream.STALE_DIR).mkdir()
    spool = walstream.scan_spool(str(tmp_path))
    assert spool["complete"] == ["00000002.history", seg(2, 4), seg(1, 5)]
    assert spool["partials"] == [seg(1, 6) + ".partial", seg(2, 6) + ".partial"]  # the last one is written
    assert walstream.scan_spool(str(tmp_path / "missing")) == {"complete": [], "partials": []}


@pytest.mark.parametrize("names, tli, segno, stale", [
    ([], 1, 9, []),
    ([seg(1, 9) + ".partial", seg(1, 8), seg(1, 7)], 1, 9, []),            # resumes its partial
    ([seg(1, 8) + ".partial"], 1, 9, []),                                    # the server just switched
    ([seg(1, 8)], 1, 9, []),                                                 # starts at 9
    ([seg(1, 9) + ".partial"], 2, 9, [seg(1, 9) + ".partial"]),             # another timeline (failover)
    ([seg(1, 12) + ".partial", seg(1, 11)], 1, 9, [seg(1, 12) + ".partial", seg(1, 11)]),  # ahead of the server
    ([seg(1, 3) + ".partial", seg(1, 2)], 1, 9, [seg(1, 3) + ".partial", seg(1, 2)]),       # too old
    ([seg(1, 5) + ".partial", seg(1, 9) + ".partial", seg(1, 8)], 1, 9, [seg(1, 5) + ".partial"]),  # old partial
    ([seg(2, 9) + ".partial", seg(1, 9) + ".partial", "00000002.history"], 2, 9, [seg(1, 9) + ".partial"]),
])
def test_stale_files_leave_pg_receivewal_a_good_start(names, tli, segno, stale):
    assert sorted(walstream.stale_files(names, tli, segno, MIB)) == sorted(stale)
    left = [n for n in names if n not in stale]
    start = walstream.start_point(left, MIB)
    assert start is None or (start[0] == tli and segno - 1 <= start[1] <= segno)


def test_start_point_is_pg_receivewals():
    assert walstream.start_point([seg(1, 9) + ".partial", seg(1, 8)], MIB) == (1, 9)
    assert walstream.start_point([seg(1, 9) + ".partial", seg(1, 9)], MIB) == (1, 10)  # complete beats partial
    assert walstream.start_point([seg(2, 8), seg(1, 8)], MIB) == (2, 9)
    assert walstream.start_point(["00000002.history"], MIB) is None


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_problems_are_logged_once_when_they_start_and_once_when_they_end():
    out = io.StringIO()
    clock = Clock()
    problems = walstream.Problems(Log("t", out), clock)
    for dummy in range(5):
        problems.report("s3", "error", "S3 is down")
        clock.now += 1
    problems.report("slow", "warning", "slow", grace=30)
    problems.clear("slow", "slow is over")  # never reported: nothing said about its end either
    problems.clear("s3", "S3 works again after %(seconds)d s")
    problems.clear("s3", "twice")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "ERROR" in lines[0] and "S3 is down" in lines[0]
    assert "S3 works again after 5 s" in lines[1]


def test_check_stream_options():
    good = {"stream_dir": "/var/lib/rtx-dr/wal-stream", "stream_interval": 1.0, "wal_segment_size": 16 * MIB}
    assert walstream.check_stream_options(good) == ("/var/lib/rtx-dr/wal-stream", 1.0)
    for change, needle in (({"stream_dir": None}, "stream_dir is not set"),
                           ({"stream_dir": "spool"}, "absolute"),
                           ({"stream_interval": 0}, "stream_interval"),
                           ({"stream_interval": 600}, "stream_interval"),
                           ({"wal_segment_size": 128 * MIB}, "one PUT")):
        with pytest.raises(InvalidValueError, match=needle):
            walstream.check_stream_options(dict(good, **change))


def test_config_keys_in_the_wal_section(tmp_path):
    path = write_config(tmp_path, {"bucket": "b", "cluster_name": "main", "kms_key_id": "alias/k",
                                   "login_unix_socket": "/run/pg", "login_port": 5433, "login_user": "postgres",
                                   "wal": {"stream_dir": "/srv/stream", "stream_interval": "0.5",
                                           "fetch_streamed_partial": "yes", "receivewal_path": "/x/pg_receivewal"}})
    params = wal_agent.params_from_config(str(path), wal_agent.stream_spec())
    assert params["stream_dir"] == "/srv/stream" and params["stream_interval"] == 0.5
    assert params["fetch_streamed_partial"] is True and params["receivewal_path"] == "/x/pg_receivewal"
    assert params["login_unix_socket"] == "/run/pg" and params["login_port"] == 5433
    assert "login_port" not in wal_agent.params_from_config(str(path))  # push/fetch do not connect
    err = io.StringIO()
    assert wal_agent.main(["--config", str(path), "check-config"], stderr=err) == 0, err.getvalue()
    bad = write_config(tmp_path, {"bucket": "b", "cluster_name": "main", "kms_key_id": "k",
                                  "wal": {"stream_dir": "/srv/stream", "stream_interval": 0}})
    err = io.StringIO()
    assert wal_agent.main(["--config", str(bad), "check-config"], stderr=err) == 1
    assert "stream_interval" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1


def test_receiver_conninfo_and_command():
    params = {"login_unix_socket": "/var/run/postgresql", "login_port": 5432, "login_user": "postgres",
              "login_password": "s'cr\\et", "login_db": "postgres", "ssl_mode": "prefer", "connect_timeout": 10,
              "stream_dir": "/var/lib/rtx-dr/wal-stream", "receivewal_path": "/usr/lib/postgresql/15/bin/pg_receivewal"}
    conninfo = walstream.receiver_conninfo(params)
    assert "application_name='rtx_dr_stream'" in conninfo and "host='/var/run/postgresql'" in conninfo
    assert "port='5432'" in conninfo and "password" not in conninfo and "dbname" not in conninfo
    receiver = walstream.Receiver(params, Log("t", io.StringIO()), probe=None)
    argv = receiver.command({"version_num": 150004})
    assert argv[:5] == ["/usr/lib/postgresql/15/bin/pg_receivewal", "--directory", "/var/lib/rtx-dr/wal-stream",
                        "--synchronous", "--no-password"]
    assert not [a for a in argv if a.startswith(("--slot", "-S", "--no-loop", "-n", "--create-slot"))]
    assert receiver._environment()["PGPASSWORD"] == "s'cr\\et"  # pylint: disable=protected-access
    assert walstream._conninfo_value("a'b\\c") == "'a\\'b\\\\c'"  # pylint: disable=protected-access


class FakeProbe:
    """The server as the stream commands see it; ``state`` None = unreachable."""

    def __init__(self, state):
        self.state = dict(state)
        self.closed = 0

    def _answer(self):
        if self.state is None:
            raise ConnectionFailedError("connection to server on socket failed: No such file or directory")
        return dict(self.state)

    def receiver_state(self):
        return self._answer()

    def uploader_state(self):
        return self._answer()

    def close(self):
        self.closed += 1


class FakeChild:
    count = 0

    def __init__(self, argv, **kwargs):
        FakeChild.count += 1
        self.pid = 40000 + FakeChild.count
        self.argv = argv
        self.kwargs = kwargs
        self.returncode = None
        self.signals = []

    def poll(self):
        return self.returncode

    def send_signal(self, signum):
        self.signals.append(signum)
        self.returncode = 0

    def wait(self, timeout=None):  # pylint: disable=unused-argument
        return self.returncode

    def kill(self):
        self.returncode = -9


def _receiver(tmp_path, probe, clock):
    spool = tmp_path / "stream"
    spool.mkdir(exist_ok=True)
    params = {"stream_dir": str(spool), "stream_interval": 1.0, "wal_segment_size": MIB,
              "receivewal_path": "/bin/true", "login_unix_socket": "/tmp", "login_port": 5432}
    children = []

    def popen(argv, **kwargs):
        children.append(FakeChild(argv, **kwargs))
        return children[-1]

    out = io.StringIO()
    receiver = walstream.Receiver(params, Log("rx", out), probe, popen=popen, clock=clock)
    return receiver, children, out, spool


PRIMARY = dict(in_recovery=False, timeline=2, lsn=9 * MIB + 100, data_directory="/var/lib/postgresql/15/main",
               version_num=150004, wal_segment_size=MIB, receivers=0)
STANDBY = dict(PRIMARY, in_recovery=True, lsn=None, timeline=None)


def test_receiver_streams_only_on_the_primary(tmp_path):
    clock = Clock()
    probe = FakeProbe(STANDBY)
    receiver, children, out, spool = _receiver(tmp_path, probe, clock)
    assert [receiver.step() for dummy in range(3)] == ["standby"] * 3
    assert children == [] and out.getvalue().count("standby: not streaming") == 1

    # promoted: a leftover partial of the old timeline is moved aside, pg_receivewal starts
    (spool / (seg(1, 9) + ".partial")).write_bytes(b"old")
    probe.state = dict(PRIMARY)
    assert receiver.step() == "streaming" and len(children) == 1
    assert (spool / "stale" / (seg(1, 9) + ".partial")).exists() and not (spool / (seg(1, 9) + ".partial")).exists()
    assert "primary now" in out.getvalue() and "moved 1 file(s)" in out.getvalue()
    assert "started pg_receivewal (pid %d" % children[0].pid in out.getvalue()
    assert receiver.step() == "streaming" and len(children) == 1

    # the server unreachable: pg_receivewal keeps running (it reconnects by itself), one warning
    probe.state = None
    assert [receiver.step() for dummy in range(3)] == ["unreachable"] * 3
    assert children[0].returncode is None and out.getvalue().count("cannot ask the local server") == 1

    # demoted: pg_receivewal is stopped (SIGINT) and not started again
    probe.state = dict(STANDBY)
    assert receiver.step() == "standby"
    assert children[0].signals == [signal.SIGINT] and "standby now: stopped pg_receivewal" in out.getvalue()
    assert receiver.step() == "standby" and len(children) == 1

    # primary again; pg_receivewal dies: restarted after the delay, not before
    probe.state = dict(PRIMARY)
    assert receiver.step() == "streaming" and len(children) == 2
    children[1].returncode = 1
    assert receiver.step() == "waiting" and "exited with status 1" in out.getvalue()
    clock.now += walstream.RESTART_DELAY + 1
    assert receiver.step() == "streaming" and len(children) == 3

    stop = threading.Event()
    stop.set()
    receiver.run(stop)
    assert children[2].signals == [signal.SIGINT] and probe.closed == 1


@pytest.mark.parametrize("change, needle", [
    ({"wal_segment_size": 16 * MIB}, "wal_segment_size is 16777216"),
    ({"receivers": 1}, "streams from the local server"),
    ({"data_directory": "DATA"}, "inside the data directory"),
])
def test_receiver_refuses(tmp_path, change, needle):
    if change.get("data_directory") == "DATA":
        change = {"data_directory": str(tmp_path)}
    clock = Clock()
    receiver, children, out, dummy = _receiver(tmp_path, FakeProbe(dict(PRIMARY, **change)), clock)
    assert receiver.step() == "refused"
    clock.now += walstream.RECEIVER_GRACE  # a second receiver is only said after a grace period
    assert receiver.step() == "refused" and receiver.step() == "refused"
    assert children == [] and out.getvalue().count(needle) == 1


def test_receiver_that_cannot_start_pg_receivewal_says_so_once(tmp_path):
    clock = Clock()
    receiver, dummy, out, dummy = _receiver(tmp_path, FakeProbe(PRIMARY), clock)

    def popen(argv, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    receiver.popen = popen
    assert receiver.step() == "waiting" and receiver.step() == "waiting"
    clock.now += walstream.RESTART_DELAY + 1
    assert receiver.step() == "waiting"
    assert out.getvalue().count("cannot start pg_receivewal") == 1 and "/bin/true" in out.getvalue()


# -- the uploader, against moto ----------------------------------------------


@pytest.fixture(scope="module")
def aws(moto_url):  # noqa: F811 pylint: disable=redefined-outer-name
    return encrypted_bucket_and_key(moto_url, "rtx-stream")


def stream_config(aws, prefix, **wal):  # pylint: disable=redefined-outer-name
    section = {"wal_segment_size": MIB, "compression": "zstd"}
    section.update(wal)
    return {"bucket": aws["bucket"], "prefix": prefix, "kms_key_id": aws["arn"], "endpoint_url": aws["url"],
            "region": "us-east-1", "access_key": "testing", "secret_key": "testing", "login_host": "",
            "wal": section}


class Flaky:
    """An S3 client that can be switched off (every call then fails as an unreachable endpoint)."""

    def __init__(self, real):
        self.real = real
        self.down = False

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if name == "meta" or not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                import botocore.exceptions  # pylint: disable=import-outside-toplevel

                raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3.invalid")
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def uploader_env(aws, tmp_path):  # pylint: disable=redefined-outer-name
    prefix = "pgbackup/stream-unit-%s" % uuid.uuid4().hex[:8]
    spool = tmp_path / "stream"
    spool.mkdir()
    path = write_config(tmp_path, stream_config(aws, prefix, stream_dir=str(spool)))
    params = wal_agent.params_from_config(str(path), wal_agent.stream_spec())
    s3 = Flaky(aws["s3"])
    probe = FakeProbe({"in_recovery": False, "write_lsn": None})
    out = io.StringIO()
    clock = Clock()
    uploader = walstream.Uploader(params, s3, Log("up", out), probe, clock=clock, host="db-test")
    return {"uploader": uploader, "s3": s3, "probe": probe, "out": out, "spool": spool, "prefix": prefix,
            "clock": clock, "config": path, "params": params}


def _partial_key(prefix, name):
    return walstream.stream_base_key(prefix, name) + ".zst"


def _write_partial(spool, name, used, seed=b"p"):
    """A pg_receivewal partial file: ``used`` bytes of WAL, zero padded to the segment size."""
    data = wal_bytes(MIB, seed + name.encode())[:used] + bytes(MIB - used)
    (spool / (name + ".partial")).write_bytes(data)
    return data


def test_uploader_uploads_the_partial_when_the_receiver_moved(uploader_env, aws):  # pylint: disable=redefined-outer-name
    env = uploader_env
    up, probe, spool, prefix = env["uploader"], env["probe"], env["spool"], env["prefix"]
    name = seg(1, 5)
    start = 5 * MIB
    data = _write_partial(spool, name, 4000)

    assert up.tick()["partial"] == "receiver not streaming"
    probe.state["write_lsn"] = start  # the receiver has not written into this segment yet
    assert up.tick()["partial"] == "nothing of %s received yet" % (name + ".partial")
    probe.state["write_lsn"] = start + 4000
    outcome = up.tick()
    assert outcome["uploaded"] == {"name": name + ".partial", "key": _partial_key(prefix, name),
                                   "covers_lsn": format_lsn(start + 4000)}
    obj = aws["s3"].get_object(Bucket=aws["bucket"], Key=_partial_key(prefix, name))
    stored = obj["Body"].read()
    assert decompress_bytes("zstd", stored) == data and obj["SSEKMSKeyId"] == aws["arn"]
    meta = obj["Metadata"]
    assert meta["covers-lsn"] == "0/500FA0" and meta["host"] == "db-test" and meta["raw-size"] == str(MIB)
    assert meta["raw-sha256"] == hashlib.sha256(data).hexdigest() and meta["sha256"] == hashlib.sha256(stored).hexdigest()

    assert up.tick()["partial"] == "unchanged"  # same position: the file is not even read
    data = _write_partial(spool, name, 9000)
    probe.state["write_lsn"] = start + 9000
    assert up.tick()["uploaded"]["covers_lsn"] == format_lsn(start + 9000)
    probe.state["write_lsn"] = 7 * MIB + 10  # already in a later segment: the partial covers its whole segment
    assert up.tick()["uploaded"]["covers_lsn"] == format_lsn(6 * MIB)

    probe.state["in_recovery"] = True
    probe.state["write_lsn"] = 8 * MIB
    assert up.tick()["partial"] == "standby" and up.tick()["partial"] == "standby"
    assert env["out"].getvalue().count("standby: no partial segment") == 1
    assert not [line for line in env["out"].getvalue().splitlines() if "ERROR" in line or "WARNING" in line]


def test_uploader_reports_a_missing_receiver_after_a_grace_period(uploader_env):  # pylint: disable=redefined-outer-name
    env = uploader_env
    _write_partial(env["spool"], seg(1, 5), 100)
    assert env["uploader"].tick()["partial"] == "receiver not streaming"
    assert env["out"].getvalue() == ""
    env["clock"].now += walstream.RECEIVER_GRACE + 1
    env["uploader"].tick()
    env["uploader"].tick()
    assert env["out"].getvalue().count("pg_receivewal is not streaming") == 1
    env["probe"].state["write_lsn"] = 5 * MIB + 100
    assert env["uploader"].tick()["uploaded"] and "pg_receivewal streams again" in env["out"].getvalue()


def test_uploader_pushes_completed_files_idempotently(uploader_env, aws):  # pylint: disable=redefined-outer-name
    env = uploader_env
    up, spool, prefix, params = env["uploader"], env["spool"], env["prefix"], env["params"]
    done, already, history = seg(2, 5), seg(2, 6), "00000002.history"
    for name in (done, already):
        (spool / name).write_bytes(wal_bytes(MIB, name.encode()))
    (spool / history).write_bytes(b"1\t0/5000000\tno recovery target specified\n")
    walarchive.push(aws["s3"], params, str(spool / already))  # archive_command was first
    env["probe"].state["write_lsn"] = 7 * MIB
    outcome = up.tick()
    assert outcome["pushed"] == [history, done, already] and not os.listdir(spool)
    listed = aws["s3"].list_objects_v2(Bucket=aws["bucket"], Prefix=prefix + "/wal/")["Contents"]
    assert sorted(o["Key"][len(prefix) + 5:] for o in listed) == sorted(
        ["00000002.history", "00000002/%s.zst" % done, "00000002/%s.zst" % already])

    # a different content under an archived name, a truncated file: an error line each, once; the files are kept
    # and not retried, the others go on
    (spool / done).write_bytes(wal_bytes(MIB, b"other"))
    (spool / seg(2, 7)).write_bytes(b"short")
    (spool / seg(2, 8)).write_bytes(wal_bytes(MIB, b"eight"))
    assert up.tick()["pushed"] == [seg(2, 8)]
    for dummy in range(3):
        assert up.tick()["pushed"] == []
    assert (spool / done).exists() and (spool / seg(2, 7)).exists()
    errors = [line for line in env["out"].getvalue().splitlines() if "ERROR" in line]
    assert len(errors) == 2 and "different content" in errors[0] and done in errors[0]
    assert seg(2, 7) in errors[1] and "wal_segment_size" in errors[1]


def test_uploader_survives_s3_going_away_and_catches_up(uploader_env, aws):  # pylint: disable=redefined-outer-name
    env = uploader_env
    up, spool, probe = env["uploader"], env["spool"], env["probe"]
    env["s3"].down = True
    (spool / seg(1, 4)).write_bytes(wal_bytes(MIB, b"four"))
    _write_partial(spool, seg(1, 5), 5000)
    probe.state["write_lsn"] = 5 * MIB + 5000
    for dummy in range(5):
        outcome = up.tick()
        assert outcome["pushed"] == [] and outcome["uploaded"] is None
        env["clock"].now += 1
    assert (spool / seg(1, 4)).exists()
    lines = env["out"].getvalue().splitlines()
    # the segment push and the partial upload fail side by side (two threads): whichever reports first is the one
    # line of this one S3 problem
    assert len(lines) == 1 and "ERROR" in lines[0] and "s3.invalid" in lines[0], lines
    assert ("pushing %s failed" % seg(1, 4) in lines[0]
            or "uploading the partial segment %s.partial failed" % seg(1, 5) in lines[0]), lines

    env["s3"].down = False
    outcome = up.tick()
    assert outcome["pushed"] == [seg(1, 4)] and outcome["uploaded"]["covers_lsn"] == format_lsn(5 * MIB + 5000)
    assert "S3 uploads work again (after 5 s)" in env["out"].getvalue()
    # the partial alone failing (S3 down after the segments went) is the same one problem
    env["s3"].down = True
    probe.state["write_lsn"] += 1000
    assert up.tick()["partial"] == "S3 failed" and up.tick()["partial"] == "S3 failed"
    assert env["out"].getvalue().count("ERROR") == 2
    # 5 ticks with the segment push and the partial upload failing side by side, then 2 partial uploads
    assert up.summary().startswith("streamed: 1 partial uploads, 1 completed files pushed, 12 S3 errors")


class Recording:
    """An S3 client whose put_object records ``(key, start, end)`` and is slow for keys containing ``slow``."""

    def __init__(self, real, slow="", delay=0.0):
        self.real, self.slow, self.delay = real, slow, delay
        self.puts = []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def put_object(self, **kwargs):
        start = time.monotonic()
        if self.slow and self.slow in kwargs["Key"]:
            time.sleep(self.delay)
        try:
            return self.real.put_object(**kwargs)
        finally:
            self.puts.append((kwargs["Key"], start, time.monotonic()))


def test_uploader_uploads_the_partial_while_it_pushes_a_completed_segment(uploader_env):  # pylint: disable=redefined-outer-name
    env = uploader_env
    up, spool, probe = env["uploader"], env["spool"], env["probe"]
    up.s3 = Recording(env["s3"], slow="/wal/", delay=0.6)  # the archive's PUT of the completed segment is slow
    (spool / seg(1, 6)).write_bytes(wal_bytes(MIB, b"six"))
    _write_partial(spool, seg(1, 7), 3000)
    probe.state["write_lsn"] = 7 * MIB + 3000
    outcome = up.tick()
    assert outcome["pushed"] == [seg(1, 6)] and outcome["uploaded"]["covers_lsn"] == format_lsn(7 * MIB + 3000)
    assert len(up.s3.puts) == 2, up.s3.puts
    segment = [p for p in up.s3.puts if "/wal/" in p[0]][0]
    partial = [p for p in up.s3.puts if "/wal-stream/" in p[0]][0]
    # side by side: the partial's PUT started before the segment's (slow) PUT ended and ended before it
    assert partial[1] < segment[2] and partial[2] < segment[2], up.s3.puts
    assert not (spool / seg(1, 6)).exists()


@pytest.fixture(scope="module")
def west(moto_url):  # noqa: F811 pylint: disable=redefined-outer-name
    return encrypted_bucket_and_key(moto_url, "rtx-stream-west")


def test_uploader_copies_the_partial_to_the_replica_bucket(uploader_env, aws, west, tmp_path):  # pylint: disable=redefined-outer-name
    env = uploader_env
    config = stream_config(aws, env["prefix"], stream_dir=str(env["spool"]), replica_bucket=west["bucket"],
                           replica_kms_key_id=west["alias"])
    params = wal_agent.params_from_config(str(write_config(tmp_path, config)), wal_agent.stream_spec())
    replica = walarchive.replica_params(params)
    west_s3 = Flaky(west["s3"])
    out = io.StringIO()
    import boto3  # pylint: disable=import-outside-toplevel

    kms = boto3.client("kms", endpoint_url=aws["url"], region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    up = walstream.Uploader(params, env["s3"], Log("up", out), env["probe"], clock=env["clock"], host="db-test",
                            replica=(west_s3, replica), replica_kms=kms)
    name = seg(1, 9)
    _write_partial(env["spool"], name, 2000)
    env["probe"].state["write_lsn"] = 9 * MIB + 2000
    outcome = up.tick()
    assert outcome["uploaded"]["replica"] is True
    key = _partial_key(env["prefix"], name)
    east_head = aws["s3"].head_object(Bucket=aws["bucket"], Key=key)
    west_head = west["s3"].head_object(Bucket=west["bucket"], Key=key)
    assert west_head["SSEKMSKeyId"] == west["arn"] and east_head["SSEKMSKeyId"] == aws["arn"]
    assert west_head["Metadata"] == east_head["Metadata"]
    assert west_head["Metadata"]["covers-lsn"] == format_lsn(9 * MIB + 2000)

    # The replica unreachable: a warning once, the primary's upload still counts.
    west_s3.down = True
    for step in (1000, 2000):
        env["probe"].state["write_lsn"] = 9 * MIB + 2000 + step
        outcome = up.tick()
        assert outcome["uploaded"]["replica"] is False
        assert outcome["uploaded"]["covers_lsn"] == format_lsn(9 * MIB + 2000 + step)
    assert out.getvalue().count("WARNING") == 1 and "replica bucket %s" % west["bucket"] in out.getvalue()
    assert aws["s3"].head_object(Bucket=aws["bucket"], Key=key)["Metadata"]["covers-lsn"] == format_lsn(9 * MIB + 4000)
    west_s3.down = False
    env["probe"].state["write_lsn"] = 9 * MIB + 5000
    assert up.tick()["uploaded"]["replica"] is True
    assert "S3 uploads to the replica bucket work again" in out.getvalue()
    assert west["s3"].head_object(Bucket=west["bucket"], Key=key)["Metadata"]["covers-lsn"] == format_lsn(9 * MIB + 5000)


def test_uploader_wakes_up_for_a_completed_segment_but_not_for_one_it_could_not_push(uploader_env):  # pylint: disable=redefined-outer-name
    env = uploader_env
    up, spool = env["uploader"], env["spool"]
    up.tick()  # the spool is empty: nothing seen
    stop = threading.Event()
    guard = threading.Timer(20, stop.set)  # the fake clock never reaches the deadline: only the file ends the wait
    guard.start()
    try:
        threading.Timer(0.3, lambda: (spool / seg(1, 11)).write_bytes(wal_bytes(MIB, b"eleven"))).start()
        up.wait(stop, env["clock"].now + 60)
        assert not stop.is_set(), "wait() did not return for the completed segment"
    finally:
        guard.cancel()
    # S3 down: the segment stays in the spool; the next wait must not return at once for it (no busy loop).
    env["s3"].down = True
    assert up.tick()["pushed"] == []
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    up.wait(stop, env["clock"].now + 60)
    assert stop.is_set(), "wait() returned early for a file it had already tried"


# -- the restore side --------------------------------------------------------


def _stream_state(aws, prefix, partial_of, archived=(), uploaded_by="db-test"):  # pylint: disable=redefined-outer-name
    """Objects as the stream leaves them: ``archived`` names in wal/, the partial of ``partial_of`` in wal-stream/."""
    s3 = aws["s3"]
    for name in archived:
        body = b"history" if name.endswith(".history") else wal_bytes(MIB, name.encode())
        key = walarchive.wal_base_key(prefix, name, MIB) + ("" if name.endswith(".history") else ".gz")
        s3.put_object(Bucket=aws["bucket"], Key=key, Body=body if key.endswith("history") else gzip.compress(body),
                      Metadata={"raw-sha256": hashlib.sha256(body).hexdigest()})
    data = wal_bytes(3000, b"stream") + bytes(MIB - 3000)
    tmp = Path(tempfile.mkdtemp()) / (partial_of + ".partial")
    tmp.write_bytes(data)
    settings = walarchive.check_options({"bucket": aws["bucket"], "prefix": prefix, "kms_key_id": aws["arn"],
                                         "compression": "zstd", "wal_segment_size": MIB})
    body, metadata = walarchive.encode_file(str(tmp), settings, "zstd", MIB)
    metadata.update({"covers-lsn": "0/5000BB8", "host": uploaded_by})
    s3.put_object(Bucket=aws["bucket"], Key=_partial_key(prefix, partial_of), Body=body, Metadata=metadata,
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=aws["arn"])
    shutil.rmtree(tmp.parent)
    return data


def _fetch(path, *argv):
    err = io.StringIO()
    rc = wal_agent.main(["--config", str(path)] + list(argv), stderr=err)
    return rc, err.getvalue()


def test_fetch_restores_the_streamed_partial_only_when_asked(aws, tmp_path):  # pylint: disable=redefined-outer-name
    prefix = "pgbackup/stream-fetch-%s" % uuid.uuid4().hex[:8]
    name = seg(1, 5)
    data = _stream_state(aws, prefix, name, archived=[seg(1, 3), seg(1, 4)])
    plain = write_config(tmp_path, stream_config(aws, prefix))
    dest = tmp_path / "RECOVERYXLOG"
    assert _fetch(plain, "fetch", name, str(dest)) == (1, "")  # not archived: as before, quietly
    assert not dest.exists()
    rc, err = _fetch(plain, "fetch", "--partial", name, str(dest))
    assert rc == 0 and dest.read_bytes() == data
    assert "restored %s from the streamed partial segment" % name in err and "0/5000BB8" in err
    assert "recovery replays up to the last complete record in it and ends there" in err
    assert len(err.strip().splitlines()) == 1
    dest.unlink()
    opted_in = write_config(tmp_path, stream_config(aws, prefix, fetch_streamed_partial=True))
    assert _fetch(opted_in, "fetch", name, str(dest))[0] == 0 and dest.read_bytes() == data
    # an archived segment always comes from the archive; names without a partial are not found
    assert _fetch(opted_in, "fetch", seg(1, 4), str(dest))[0] == 0 and dest.read_bytes() == wal_bytes(
        MIB, seg(1, 4).encode())
    assert _fetch(opted_in, "fetch", seg(1, 6), str(tmp_path / "x")) == (1, "")
    assert _fetch(opted_in, "fetch", "00000002.history", str(tmp_path / "x")) == (1, "")


@pytest.mark.parametrize("archived, why", [
    ([seg(1, 4), seg(1, 6)], "later WAL %s" % seg(1, 6)),
    ([seg(1, 4), "00000002.history"], "history file of the newer timeline 2"),
    ([seg(1, 4), seg(2, 5)], "newer timeline 2"),
])
def test_fetch_refuses_a_partial_that_is_not_the_newest_wal(aws, tmp_path, archived, why):  # pylint: disable=redefined-outer-name
    prefix = "pgbackup/stream-refuse-%s" % uuid.uuid4().hex[:8]
    name = seg(1, 5)
    _stream_state(aws, prefix, name, archived=archived)
    config = write_config(tmp_path, stream_config(aws, prefix, fetch_streamed_partial=True))
    rc, err = _fetch(config, "fetch", name, str(tmp_path / "RECOVERYXLOG"))
    assert rc == 1 and "is NOT restored" in err and why in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "RECOVERYXLOG").exists()


def test_fetch_of_a_damaged_partial_fails_loudly(aws, tmp_path):  # pylint: disable=redefined-outer-name
    prefix = "pgbackup/stream-damaged-%s" % uuid.uuid4().hex[:8]
    name = seg(1, 5)
    _stream_state(aws, prefix, name)
    key = _partial_key(prefix, name)
    obj = aws["s3"].get_object(Bucket=aws["bucket"], Key=key)
    aws["s3"].put_object(Bucket=aws["bucket"], Key=key, Body=obj["Body"].read()[:-4] + b"\0\0\0\0",
                         Metadata=obj["Metadata"])
    config = write_config(tmp_path, stream_config(aws, prefix))
    rc, err = _fetch(config, "fetch", "--partial", name, str(tmp_path / "RECOVERYXLOG"))
    assert rc == 1 and key in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "RECOVERYXLOG").exists()


# --------------------------------------------------------------------------
# 2. a real server, pg_receivewal and the two services as subprocesses
# --------------------------------------------------------------------------


class Proxy:
    """A TCP forwarder to the S3 endpoint that the test can switch off (connections refused and cut)."""

    def __init__(self, target_url):
        self.target = ("127.0.0.1", int(target_url.rsplit(":", 1)[1]))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.conns = []
        self.server = None
        self.up()

    def up(self):
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        server.settimeout(0.2)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server):
        while self.server is server:
            try:
                client, dummy = server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns.extend([client, upstream])
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self):
        server, self.server = self.server, None
        if server is not None:
            server.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _as_user(user):
    return {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _host_python(user, layout):
    """``(python, PYTHONPATH)`` the server's user runs the agent with (botocore, zstandard, psycopg2), or None.

    The test interpreter, else Debian's /usr/bin/python3 (what the DB hosts use) with this interpreter's
    site-packages when both are the same Python version (as test_wal_agent does).
    """
    candidates = [(sys.executable, str(layout))]
    if os.path.exists("/usr/bin/python3"):
        candidates.append(("/usr/bin/python3", "%s:%s" % (layout, sysconfig.get_paths()["purelib"])))
    for python, path in candidates:
        try:
            proc = subprocess.run([python, "-c", "import sys, botocore, zstandard, psycopg2; "
                                   "assert sys.version_info[:2] == %r" % (tuple(sys.version_info[:2]),)],
                                  env={"PYTHONPATH": path}, cwd="/", stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=60, check=False, **_as_user(user))
        except OSError:
            continue
        if proc.returncode == 0:
            return python, path
    return None


def _wait(predicate, timeout, what, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    tails = []
    for log in logs:
        if os.path.exists(log):
            with open(log, encoding="utf-8", errors="replace") as handle:
                tails.append("--- %s ---\n%s" % (log, handle.read()[-3000:]))
    raise AssertionError("%s within %ss\n%s" % (what, timeout, "\n".join(tails)))


class StreamLab:
    """A primary archiving with the agent, a base backup of it, and the two stream services running against it."""

    def __init__(self, pg, aws, moto):  # pylint: disable=redefined-outer-name
        self.pg = pg
        self.aws = aws
        self.user = pg.user
        self.base = tempfile.mkdtemp(prefix="rtxdr-stream-")
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.layout = make_layout(os.path.join(self.base, "lib"))
        self.python, self.pythonpath = _host_python(self.user, self.layout) or (None, None)
        self.datadir = os.path.join(self.base, "data")
        self.spool = os.path.join(self.base, "stream")
        self.port = _free_port()
        self.prefix = "pgbackup/stream-%s" % uuid.uuid4().hex[:8]
        self.proxy = Proxy(moto)
        self.procs = {}
        self.logs = {}
        self.started = False

    def config(self, endpoint, port=None, spool=None, prefix=None, **wal):
        section = {"stream_dir": spool or self.spool, "stream_interval": 1.0,
                   "receivewal_path": os.path.join(self.pg.bindir, "pg_receivewal")}
        section.update(wal)
        config = {"bucket": self.aws["bucket"], "prefix": prefix or self.prefix, "kms_key_id": self.aws["alias"],
                  "endpoint_url": endpoint, "region": "us-east-1", "access_key": "testing", "secret_key": "testing",
                  "login_unix_socket": self.pg.base, "login_port": port or self.port, "login_user": "postgres",
                  "wal": section}
        path = os.path.join(self.base, "agent-%s.json" % uuid.uuid4().hex[:6])
        self.write(path, json.dumps(config))
        return path

    def write(self, path, text):
        Path(path).write_text(text)
        os.chmod(path, 0o600)
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def agent_argv(self, config, *args):
        return [self.python, "-m", MODULE, "--config", config] + list(args)

    def env(self):
        return {"PATH": "/usr/bin:/bin", "PYTHONPATH": self.pythonpath, "HOME": self.base, "LC_ALL": "C.UTF-8",
                "AWS_CONFIG_FILE": os.path.join(self.base, "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.base, "aws-credentials")}

    def spawn(self, label, argv):
        log = os.path.join(self.base, label + ".log")
        handle = open(log, "ab")  # pylint: disable=consider-using-with
        self.logs[label] = log
        self.procs[label] = subprocess.Popen(argv, env=self.env(), cwd=self.base, stdout=handle,  # pylint: disable=consider-using-with
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             **_as_user(self.user))
        handle.close()
        return self.procs[label]

    def run(self, argv, timeout=120):
        return subprocess.run(argv, env=self.env(), cwd=self.base, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, check=False, **_as_user(self.user))

    def log_text(self, label):
        with open(self.logs[label], encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def start(self):
        os.mkdir(self.spool, 0o700)
        if self.user is not None:
            os.chown(self.spool, self.user.pw_uid, self.user.pw_gid)
        self.direct = self.config(self.aws["url"])
        self.via_proxy = self.config(self.proxy.url)
        self.pg.run("initdb", "-D", self.datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        command = "PYTHONPATH=%s %s -m %s --config %s push %%p" % (self.pythonpath, self.python, MODULE, self.direct)
        with open(os.path.join(self.datadir, "postgresql.conf"), "a", encoding="utf-8") as handle:
            handle.write("archive_mode = on\narchive_command = '%s'\n" % command.replace("'", "''"))
        self.pg.start(self.datadir, self.port, "-c synchronous_commit=on -c wal_writer_delay=200ms")
        self.started = True
        self.sql("CREATE TABLE t (i int, note text)")
        self.backup = os.path.join(self.base, "backup")
        self.pg.run("pg_basebackup", "-D", self.backup, "-h", self.pg.base, "-p", str(self.port), "-U", "postgres",
                    "-X", "none", "-c", "fast", "--no-sync")
        self.spawn("receive", self.agent_argv(self.direct, "stream-receive"))
        self.spawn("upload", self.agent_argv(self.via_proxy, "stream-upload"))
        _wait(self.receivers, 30, "pg_receivewal did not start streaming", self.logs.values())

    def sql(self, statement, port=None):
        return self.pg.sql(port or self.port, statement)

    def receivers(self, port=None):
        return self.sql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'rtx_dr_stream'",
                        port)[0]

    def commit(self, note):
        """Commit one row; ``(flush LSN after the commit, its segment, monotonic time the commit returned)``."""
        self.sql("INSERT INTO t VALUES (1, '%s')" % note)
        now = time.monotonic()
        lsn = parse_lsn(self.sql("SELECT pg_current_wal_flush_lsn()::text")[0])
        return lsn, wal_segment_name(1, lsn, end_position=True), now

    def covers(self, name):
        try:
            head = self.aws["s3"].head_object(Bucket=self.aws["bucket"], Key=_partial_key(self.prefix, name))
        except Exception:  # pylint: disable=broad-exception-caught
            return None
        return parse_lsn(head["Metadata"]["covers-lsn"])

    def archived(self, name):
        try:
            return self.aws["s3"].head_object(Bucket=self.aws["bucket"],
                                              Key=walarchive.wal_base_key(self.prefix, name) + ".zst")
        except Exception:  # pylint: disable=broad-exception-caught
            return None

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.started:
            self.pg.stop(self.datadir)
        self.proxy.down()
        shutil.rmtree(self.base, ignore_errors=True)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(pg_cluster, aws, moto_url):  # noqa: F811 pylint: disable=redefined-outer-name
    stream_lab = StreamLab(pg_cluster, aws, moto_url)
    try:
        if stream_lab.python is None:
            pytest.skip("no Python the server's user can run with botocore, zstandard and psycopg2 importable")
        stream_lab.start()
        yield stream_lab
    finally:
        stream_lab.stop()


def test_a_commit_is_in_s3_within_seconds(lab):  # pylint: disable=redefined-outer-name
    delays = []
    for number in range(6):
        lsn, name, committed = lab.commit("delay-%d" % number)
        _wait(lambda: (lab.covers(name) or 0) >= lsn, 30, "the streamed partial did not cover %s" % format_lsn(lsn),
              lab.logs.values())
        delays.append(time.monotonic() - committed)
        time.sleep(0.3 + 0.1 * number)
    print("\ncommit -> streamed partial in S3 covering it (stream_interval 1 s): %s s; median %.2f s, max %.2f s"
          % (", ".join("%.2f" % d for d in delays), statistics.median(delays), max(delays)))
    head = lab.aws["s3"].head_object(Bucket=lab.aws["bucket"], Key=_partial_key(lab.prefix, name))
    assert head["SSEKMSKeyId"] == lab.aws["arn"] and head["ContentLength"] < MIB
    assert set(head["Metadata"]) >= {"sha256", "raw-sha256", "raw-size", "compression", "covers-lsn", "host"}
    # the uploader is quiet while all is well
    assert "ERROR" not in lab.log_text("upload") and "WARNING" not in lab.log_text("upload")


def test_a_segment_switch_lands_in_the_archive(lab):  # pylint: disable=redefined-outer-name
    lsn, name, dummy = lab.commit("switch")
    lab.sql("SELECT pg_switch_wal()")
    _wait(lambda: lab.archived(name), 30, "%s was not archived" % name, lab.logs.values())
    _wait(lambda: not os.path.exists(os.path.join(lab.spool, name)) and not os.path.exists(
        os.path.join(lab.spool, name + ".partial")), 30, "%s stayed in the spool" % name, lab.logs.values())
    _wait(lambda: (lab.sql("SELECT last_archived_wal FROM pg_stat_archiver")[0] or "") >= name, 60,
          "the archiver did not archive %s" % name, lab.logs.values())
    # archive_command and the stream pushed the same bytes: whoever came second succeeded
    assert lab.sql("SELECT failed_count FROM pg_stat_archiver")[0] == 0
    local = os.path.join(lab.datadir, "pg_wal", name)
    if os.path.exists(local):
        with open(local, "rb") as handle:
            assert lab.archived(name)["Metadata"]["raw-sha256"] == hashlib.sha256(handle.read()).hexdigest()
    # its last streamed partial (if the segment lived through an upload) stays: the DB hosts never delete; it is
    # never restored now that the segment is archived
    assert (lab.covers(name) or 0) <= parse_wal_segment_name(name).end_lsn and lsn < parse_wal_segment_name(name).end_lsn


def test_an_s3_outage_is_survived_and_caught_up(lab):  # pylint: disable=redefined-outer-name
    lab.proxy.down()
    try:
        dummy, first, dummy = lab.commit("outage-1")
        lab.sql("SELECT pg_switch_wal()")
        lsn, name, dummy = lab.commit("outage-2")
        _wait(lambda: os.path.exists(os.path.join(lab.spool, first)), 30, "%s was not completed" % first)
        time.sleep(4)
        assert lab.procs["upload"].poll() is None
        assert os.path.exists(os.path.join(lab.spool, first))  # kept until it is pushed
        assert (lab.covers(name) or 0) < lsn
    finally:
        lab.proxy.up()
    _wait(lambda: not os.path.exists(os.path.join(lab.spool, first)) and (lab.covers(name) or 0) >= lsn, 60,
          "the uploader did not catch up", lab.logs.values())
    text = lab.log_text("upload")
    assert text.count("ERROR") == 1 and "failed" in text and "S3 uploads work again" in text, text


def test_fetch_partial_of_the_current_segment(lab):  # pylint: disable=redefined-outer-name
    lsn, name, dummy = lab.commit("fetch")
    _wait(lambda: (lab.covers(name) or 0) >= lsn, 30, "not covered", lab.logs.values())
    covers = lab.covers(name)
    dest = os.path.join(lab.base, "fetched")
    proc = lab.run(lab.agent_argv(lab.direct, "fetch", name, dest))
    assert proc.returncode == 1 and proc.stderr == b"" and not os.path.exists(dest)
    proc = lab.run(lab.agent_argv(lab.direct, "fetch", "--partial", name, dest))
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"from the streamed partial segment" in proc.stderr
    used = covers - parse_wal_segment_name(name).start_lsn
    with open(dest, "rb") as fetched, open(os.path.join(lab.datadir, "pg_wal", name), "rb") as server:
        assert fetched.read(used) == server.read(used)  # the server's own WAL, up to covers-lsn


def _server_from_backup(lab, name, signal_file, settings=""):  # pylint: disable=redefined-outer-name
    """A data directory from the lab's base backup whose restore_command is ``wal_agent fetch --partial``,
    with ``signal_file`` (recovery.signal / standby.signal) and ``settings`` appended to postgresql.auto.conf."""
    datadir = os.path.join(lab.base, name)
    shutil.copytree(lab.backup, datadir, symlinks=True)
    command = "PYTHONPATH=%s %s -m %s --config %s fetch --partial %%f %%p" % (lab.pythonpath, lab.python, MODULE,
                                                                              lab.direct)
    with open(os.path.join(datadir, "postgresql.auto.conf"), "a", encoding="utf-8") as handle:
        handle.write("restore_command = '%s'\narchive_mode = off\n%s" % (command.replace("'", "''"), settings))
    Path(datadir, signal_file).write_text("")
    if lab.user is not None:
        for root, dirs, files in os.walk(datadir):
            for entry in dirs + files + [""]:
                os.lchown(os.path.join(root, entry), lab.user.pw_uid, lab.user.pw_gid)
    os.chmod(datadir, 0o700)
    return datadir


def test_point_in_time_restore_gets_the_commit_only_the_partial_has(lab):  # pylint: disable=redefined-outer-name
    lsn, name, dummy = lab.commit("only-in-the-partial")
    _wait(lambda: (lab.covers(name) or 0) >= lsn, 30, "not covered", lab.logs.values())
    assert not lab.archived(name)
    restored = _server_from_backup(lab, "restored", "recovery.signal")
    port = _free_port()
    try:
        lab.pg.start(restored, port)
        _wait(lambda: lab.sql("SELECT NOT pg_is_in_recovery()", port)[0], 120, "the restore did not end",
              [restored + ".log"])
        assert lab.sql("SELECT count(*) FROM t WHERE note = 'only-in-the-partial'", port)[0] == 1
        assert lab.sql("SELECT count(*) FROM t WHERE note LIKE 'delay-%'", port)[0] >= 0
        with open(restored + ".log", encoding="utf-8", errors="replace") as handle:
            log = handle.read()
        assert "from the streamed partial segment" in log and "restored log file \"%s\" from archive" % name in log
    finally:
        lab.pg.stop(restored)
        shutil.rmtree(restored, ignore_errors=True)


def test_a_standby_ahead_of_the_partial_keeps_its_wal_and_promotes(lab):  # pylint: disable=redefined-outer-name
    """The lab's region drill: a standby streamed WAL beyond the newest partial in S3, lost its primary, and
    PANICked at promotion ("invalid magic number") because restore_command had replaced its own copy of the
    segment with the shorter partial. The partial is never served when pg_wal holds the segment."""
    lsn, name, dummy = lab.commit("before-the-outage")
    _wait(lambda: (lab.covers(name) or 0) >= lsn, 30, "not covered", lab.logs.values())
    standby = _server_from_backup(lab, "standby-ahead", "standby.signal", "primary_conninfo = 'host=%s port=%d "
                                  "user=postgres application_name=ahead'\n" % (lab.pg.base, lab.port))
    port = _free_port()
    lab.proxy.down()  # the stream uploader cannot upload: the partial in S3 stays where it is
    try:
        lab.pg.start(standby, port)
        ahead, name, dummy = lab.commit("after-the-partial")
        for number in range(20):  # more WAL of the same segment than the partial holds
            lab.commit("after-%d" % number)
        ahead = parse_lsn(lab.sql("SELECT pg_current_wal_flush_lsn()::text")[0])
        _wait(lambda: parse_lsn(lab.sql("SELECT pg_last_wal_replay_lsn()::text", port)[0] or "0/0") >= ahead, 60,
              "the standby did not replay the new commits", [standby + ".log"])
        assert (lab.covers(name) or 0) < ahead and not lab.archived(name)
        # The primary goes away for the standby: it falls back to restore_command for the current segment.
        with open(standby + ".log", encoding="utf-8", errors="replace") as handle:
            seen = len(handle.read())  # the start may restore the backup's own segment from a partial: fine
        lab.sql("ALTER SYSTEM SET primary_conninfo = 'host=%s port=1 user=postgres'" % lab.pg.base, port)
        lab.sql("SELECT pg_reload_conf()", port)
        time.sleep(8)  # a few restore_command rounds (wal_retrieve_retry_interval 5 s)
        lab.pg.run("pg_ctl", "promote", "-D", standby, "-w", "-t", "60")
        _wait(lambda: lab.sql("SELECT NOT pg_is_in_recovery()", port)[0], 60, "the promotion did not end",
              [standby + ".log"])
        assert lab.sql("SELECT count(*) FROM t WHERE note LIKE 'after-%'", port)[0] == 21
        with open(standby + ".log", encoding="utf-8", errors="replace") as handle:
            log = handle.read()[seen:]
        assert "PANIC" not in log and "from the streamed partial segment" not in log, log[-3000:]
    finally:
        lab.proxy.up()
        lab.pg.stop(standby)
        shutil.rmtree(standby, ignore_errors=True)


def test_a_standby_is_not_streamed_from_until_promoted(lab, fresh_standby):  # pylint: disable=redefined-outer-name
    port, datadir = fresh_standby
    spool = os.path.join(lab.base, "stream-standby")
    os.mkdir(spool, 0o700)
    if lab.user is not None:
        os.chown(spool, lab.user.pw_uid, lab.user.pw_gid)
    prefix = "pgbackup/stream-promoted-%s" % uuid.uuid4().hex[:8]  # another cluster's archive (a new system)
    config = lab.config(lab.aws["url"], port=port, spool=spool, prefix=prefix)
    receiver = lab.spawn("receive-standby", lab.agent_argv(config, "stream-receive"))
    try:
        _wait(lambda: "standby: not streaming" in lab.log_text("receive-standby"), 30, "no standby line",
              [lab.logs["receive-standby"]])
        time.sleep(2)
        assert lab.receivers(port) == 0 and os.listdir(spool) == []
        lab.pg.run("pg_ctl", "promote", "-D", datadir, "-w")
        _wait(lambda: lab.receivers(port) == 1, 30, "pg_receivewal did not start after the promotion",
              [lab.logs["receive-standby"]])
        _wait(lambda: "00000002.history" in os.listdir(spool) and [n for n in os.listdir(spool)
                                                                   if n.startswith("00000002") and
                                                                   n.endswith(".partial")], 30, "no new timeline")
        proc = lab.run(lab.agent_argv(config, "stream-upload", "--once"))
        assert proc.returncode == 0, proc.stderr.decode()
        assert lab.aws["s3"].head_object(Bucket=lab.aws["bucket"], Key="%s/wal/00000002.history" % prefix)
        listed = lab.aws["s3"].list_objects_v2(Bucket=lab.aws["bucket"],
                                               Prefix="%s/wal-stream/00000002/" % prefix).get("Contents") or []
        assert listed, proc.stderr.decode()
    finally:
        receiver.send_signal(signal.SIGTERM)
        assert receiver.wait(timeout=30) == 0
    _wait(lambda: lab.receivers(port) == 0, 20, "pg_receivewal still streams after the service stopped")
    assert "stopping: stopped pg_receivewal" in lab.log_text("receive-standby")

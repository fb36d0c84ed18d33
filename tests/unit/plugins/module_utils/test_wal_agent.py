# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of the WAL archive/restore commands (module_utils/wal_agent.py), run as PostgreSQL runs them.

The command runs as a subprocess with ``PYTHONPATH`` pointing at a directory laid
out as the ``rtx.dr.agent_install`` role installs it (copies of
``plugins/module_utils/*.py`` plus ``__init__.py`` files) in which a stub ``ansible``
package refuses to import: the DB hosts have no ansible. S3/KMS is a moto server;
the last test is a real PostgreSQL server (binaries of the ``pg_cluster`` fixture)
whose ``archive_command`` is the agent.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import encrypted_bucket_and_key  # noqa: E402 pylint: disable=wrong-import-position
from moto_server import moto_url  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import wal_agent  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import walarchive  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.compress import decompress_bytes  # noqa: E402 pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parents[4]
MODULE = "ansible_collections.rtx.dr.plugins.module_utils.wal_agent"
PACKAGE_DIRS = ("ansible_collections", "ansible_collections/rtx", "ansible_collections/rtx/dr",
                "ansible_collections/rtx/dr/plugins", "ansible_collections/rtx/dr/plugins/module_utils")
MIB = 1024 * 1024
PREFIX = "pgbackup/wal-agent-test"
SEG = "000000010000000000000003"


def make_layout(root):
    """The installed layout under ``root`` (module_utils copies, ``import ansible`` fails); returns ``root``."""
    root = Path(root)
    for name in PACKAGE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").write_text("")
    for source in sorted((REPO / "plugins" / "module_utils").glob("*.py")):
        shutil.copy(source, root / PACKAGE_DIRS[-1] / source.name)
    (root / "ansible").mkdir(exist_ok=True)
    (root / "ansible" / "__init__.py").write_text("raise ImportError('no ansible on the database host')\n")
    return root


def wal_bytes(size, seed=b"rtx"):
    head = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(2048))
    return (head + bytes(size))[:size]


@pytest.fixture(scope="module")
def host_layout(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("rtx-dr-lib"))


@pytest.fixture(scope="module")
def aws(moto_url):  # noqa: F811 pylint: disable=redefined-outer-name
    return encrypted_bucket_and_key(moto_url, "rtx-wal")


def config_dict(aws, prefix=PREFIX, **overrides):  # pylint: disable=redefined-outer-name
    """An agent configuration as the backup agent has it (its own keys included), plus the wal section."""
    config = {
        "bucket": aws["bucket"], "prefix": prefix, "cluster_name": "wal-agent-test", "kms_key_id": aws["arn"],
        "endpoint_url": aws["url"], "region": "us-east-1", "access_key": "testing", "secret_key": "testing",
        "login_host": "127.0.0.1", "compression": "gzip", "backup": {"part_size_mb": 5},
        "wal": {"wal_segment_size": MIB},
    }
    config.update(overrides)
    return config


def write_config(directory, config):
    path = Path(directory) / ("agent-%s.json" % uuid.uuid4().hex[:6])
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def agent_env(layout, home):
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(layout),
        "HOME": str(home),
        "LC_ALL": "C.UTF-8",
        "AWS_CONFIG_FILE": str(Path(home) / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(Path(home) / "aws-credentials"),
    }


def run_agent(layout, config, *args, cwd=None):
    home = config.parent
    proc = subprocess.run(
        [sys.executable, "-m", MODULE, "--config", str(config)] + list(args),
        env=agent_env(layout, home), cwd=str(cwd or home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=120, check=False,
    )
    assert proc.stdout == b""  # nothing on stdout, ever
    return proc.returncode, proc.stderr.decode()


# --------------------------------------------------------------------------
# configuration, in process
# --------------------------------------------------------------------------


def test_config_shared_keys_top_level_wal_keys_in_their_section(tmp_path, monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    path = write_config(tmp_path, {"bucket": "b", "prefix": "/p/", "kms_key_id": "alias/k", "compression": "gzip",
                                   "part_size_mb": 5, "aws_access_key": "ak", "secret_key": "sk",
                                   "backup": {"x": 1}, "verify": {"y": 2},
                                   "wal": {"compression_level": 1, "wal_segment_size": "2097152",
                                           "bucket": "wal-bucket"}})
    params = wal_agent.params_from_config(str(path))
    assert params["bucket"] == "wal-bucket" and params["prefix"] == "/p/" and params["kms_key_id"] == "alias/k"
    assert params["compression"] == "auto"  # the top-level compression is the backup's
    assert params["compression_level"] == 1 and params["wal_segment_size"] == 2 * MIB
    assert params["access_key"] == "ak" and params["region"] == "eu-west-3" and params["encryption"] == "aws:kms"


def test_ini_config(tmp_path):
    path = tmp_path / "agent.ini"
    path.write_text("[agent]\nbucket = b\ncluster_name = main\nkms_key_id = alias/k\n"
                    "[backup]\ncompression = gzip\n[wal]\ncompression = lz4\n")
    params = wal_agent.params_from_config(str(path))
    assert params["bucket"] == "b" and params["compression"] == "lz4" and params["cluster_name"] == "main"
    assert walarchive.check_options(params)["prefix"] == "pgbackup/main"


@pytest.mark.parametrize("config,needle", [
    ({"bucket": "b", "prefix": "p", "kms_key_id": "k", "wal": {"compresion": "zstd"}}, "unknown option compresion"),
    ({"bucket": "b", "prefix": "p", "kms_key_id": "k", "wal": {"compression": "brotli"}}, "option compression"),
    ({"prefix": "p", "kms_key_id": "k"}, "option bucket is required"),
    ({"bucket": "b", "kms_key_id": "k"}, "Neither prefix nor cluster_name"),
    ({"bucket": "b", "prefix": "p"}, "kms_key_id is not set"),
    ({"bucket": "b", "prefix": "p", "kms_key_id": "k", "wal": {"wal_segment_size": 1000}}, "wal_segment_size"),
])
def test_config_errors_are_one_line(tmp_path, config, needle):
    path = write_config(tmp_path, config)
    err = io.StringIO()
    assert wal_agent.main(["--config", str(path), "push", str(tmp_path / SEG)], stderr=err) == 1
    assert needle in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1


def test_missing_config_file(tmp_path):
    err = io.StringIO()
    assert wal_agent.main(["--config", str(tmp_path / "nope.json"), "fetch", SEG, "x"], stderr=err) == 1
    assert "Cannot read the agent configuration" in err.getvalue()


# --------------------------------------------------------------------------
# as PostgreSQL runs it
# --------------------------------------------------------------------------


def test_cli_push_fetch_and_exit_codes(host_layout, aws, tmp_path):  # pylint: disable=redefined-outer-name
    config = write_config(tmp_path, config_dict(aws))
    datadir = tmp_path / "data"
    (datadir / "pg_wal").mkdir(parents=True)
    data = wal_bytes(MIB)
    (datadir / "pg_wal" / SEG).write_bytes(data)

    rc, err = run_agent(host_layout, config, "push", "pg_wal/" + SEG, cwd=datadir)
    assert (rc, err) == (0, "")
    key = "%s/wal/00000001/%s.zst" % (PREFIX, SEG)  # compression auto (top-level gzip is the backup's)
    obj = aws["s3"].get_object(Bucket=aws["bucket"], Key=key)
    assert obj["SSEKMSKeyId"] == aws["arn"] and decompress_bytes("zstd", obj["Body"].read()) == data
    assert obj["Metadata"]["raw-sha256"] == hashlib.sha256(data).hexdigest()

    rc, err = run_agent(host_layout, config, "-v", "push", "pg_wal/" + SEG, cwd=datadir)
    assert rc == 0 and "already archived with the same content" in err and len(err.splitlines()) == 1

    rc, err = run_agent(host_layout, config, "fetch", SEG, "pg_wal/RECOVERYXLOG", cwd=datadir)
    assert (rc, err) == (0, "")
    assert (datadir / "pg_wal" / "RECOVERYXLOG").read_bytes() == data

    # not archived: exit 1 quietly (a line only with --verbose)
    rc, err = run_agent(host_layout, config, "fetch", "00000002.history", "pg_wal/RECOVERYHISTORY", cwd=datadir)
    assert (rc, err) == (1, "")
    rc, err = run_agent(host_layout, config, "--verbose", "fetch", "00000002.history", "pg_wal/RECOVERYHISTORY",
                        cwd=datadir)
    assert rc == 1 and "00000002.history: not found" in err and len(err.splitlines()) == 1
    assert not (datadir / "pg_wal" / "RECOVERYHISTORY").exists()

    # different content under an archived name: exit 1, one line naming the key, nothing overwritten
    (datadir / "pg_wal" / SEG).write_bytes(wal_bytes(MIB, b"other"))
    rc, err = run_agent(host_layout, config, "push", "pg_wal/" + SEG, cwd=datadir)
    assert rc == 1 and key in err and "different content" in err and len(err.strip().splitlines()) == 1
    assert "testing" not in err
    assert decompress_bytes("zstd", aws["s3"].get_object(Bucket=aws["bucket"], Key=key)["Body"].read()) == data

    # a damaged object: exit 1 naming the key, the destination is not created
    stored = aws["s3"].get_object(Bucket=aws["bucket"], Key=key)
    aws["s3"].put_object(Bucket=aws["bucket"], Key=key, Body=stored["Body"].read()[:-10] + bytes(10),
                         Metadata=stored["Metadata"], ServerSideEncryption="aws:kms", SSEKMSKeyId=aws["arn"])
    rc, err = run_agent(host_layout, config, "fetch", SEG, "pg_wal/RECOVERYXLOG2", cwd=datadir)
    assert rc == 1 and key in err and "damaged" in err and len(err.strip().splitlines()) == 1
    assert not (datadir / "pg_wal" / "RECOVERYXLOG2").exists()
    assert not [n for n in os.listdir(datadir / "pg_wal") if n.endswith(".rtxdr-tmp")]


def test_cli_endpoint_down_fails_visibly(host_layout, aws, tmp_path, unused_port):  # pylint: disable=redefined-outer-name
    config = write_config(tmp_path, config_dict(aws, endpoint_url="http://127.0.0.1:%d" % unused_port))
    (tmp_path / SEG).write_bytes(wal_bytes(MIB))
    rc, err = run_agent(host_layout, config, "push", str(tmp_path / SEG))
    assert rc == 1 and "Cannot reach the AWS endpoint" in err and len(err.strip().splitlines()) == 1


def _timed_pushes(layout, config, directory, count):
    """Seconds of each CLI push of a new 16 MiB segment."""
    times = []
    for number in range(count):
        name = "0000000100000002%08X" % number
        (Path(directory) / name).write_bytes(wal_bytes(16 * MIB, name.encode()))
        started = time.monotonic()
        rc, err = run_agent(layout, config, "push", str(Path(directory) / name))
        times.append(time.monotonic() - started)
        assert (rc, err) == (0, "")
    return times


def test_cli_push_16mib_timing(host_layout, aws, tmp_path):  # pylint: disable=redefined-outer-name
    """Not a benchmark (no threshold): prints the per-call wall time of archive_command (-s to see it)."""
    config = write_config(tmp_path, config_dict(aws, wal={}))
    times = _timed_pushes(host_layout, config, tmp_path, 3)
    print("\nwal_agent push of a 16 MiB segment: %s s" % ", ".join("%.2f" % t for t in times))


# --------------------------------------------------------------------------
# a real PostgreSQL server archiving with the agent
# --------------------------------------------------------------------------


def _runs_as_server_user(pg_cluster, python, pythonpath):
    """True when ``python`` can import botocore and zstandard as the user the servers run as."""
    kwargs = {}
    if pg_cluster.user is not None:
        kwargs.update(user=pg_cluster.user.pw_uid, group=pg_cluster.user.pw_gid, extra_groups=[])
    try:
        proc = subprocess.run([python, "-c", "import botocore, zstandard"], env={"PYTHONPATH": pythonpath},
                              cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False,
                              **kwargs)
    except OSError:
        return False
    return proc.returncode == 0


def _server_python(pg_cluster, layout):
    """``(python, PYTHONPATH)`` the server's user can run the agent with, or None.

    The test interpreter, else Debian's /usr/bin/python3 (what the DB hosts use) with this
    interpreter's site-packages for botocore/zstandard when both are the same Python version.
    """
    if _runs_as_server_user(pg_cluster, sys.executable, str(layout)):
        return sys.executable, str(layout)
    system = "/usr/bin/python3"
    if os.path.exists(system):
        version = subprocess.run([system, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 stdout=subprocess.PIPE, check=False).stdout.decode().strip()
        if version == "%d.%d" % sys.version_info[:2]:
            path = "%s:%s" % (layout, sysconfig.get_paths()["purelib"])
            if _runs_as_server_user(pg_cluster, system, path):
                return system, path
    return None


def _wait(predicate, timeout, what, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tail = ""
    if log and os.path.exists(log):
        with open(log, encoding="utf-8", errors="replace") as handle:
            tail = handle.read()[-3000:]
    raise AssertionError("%s within %ss; server log:\n%s" % (what, timeout, tail))


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_owned(path, config, user):
    Path(path).write_text(json.dumps(config))
    os.chmod(path, 0o600)
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


def _archiver(pg_cluster, port):
    row = pg_cluster.sql(port, "SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver")
    return {"archived": row[0], "failed": row[1], "last": row[2]}


def _write_and_switch(pg_cluster, port):
    pg_cluster.sql(port, "INSERT INTO t SELECT generate_series(1, 2000)")
    pg_cluster.sql(port, "SELECT pg_switch_wal()")


def test_archive_command_of_a_real_server(pg_cluster, aws, unused_port):  # pylint: disable=redefined-outer-name
    """A new server with archive_mode=on archives through the agent; the segments land in S3 with their SHA256.

    Then the endpoint goes away: archiving fails visibly (failed_count, the agent's line in the server
    log), and resumes without a gap once the endpoint is back.
    """
    user = pg_cluster.user
    base = tempfile.mkdtemp(prefix="rtxdr-walpg-")
    datadir = os.path.join(base, "data")
    log = datadir + ".log"
    port = unused_port
    started = False
    try:
        if user is not None:
            os.chown(base, user.pw_uid, user.pw_gid)
        layout = make_layout(os.path.join(base, "lib"))
        chosen = _server_python(pg_cluster, layout)
        if chosen is None:
            pytest.skip("no Python the server's user can run with botocore and zstandard importable")
        python, pythonpath = chosen
        prefix = "pgbackup/walpg-%s" % uuid.uuid4().hex[:8]
        good = config_dict(aws, prefix=prefix, wal={})  # default 16 MiB segments, compression auto
        config = os.path.join(base, "agent.json")
        _write_owned(config, good, user)

        pg_cluster.run("initdb", "-D", datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        command = "PYTHONPATH=%s %s -m %s --config %s push %%p" % (pythonpath, python, MODULE, config)
        with open(os.path.join(datadir, "postgresql.conf"), "a", encoding="utf-8") as handle:
            handle.write("archive_mode = on\narchive_command = '%s'\n" % command.replace("'", "''"))
        pg_cluster.start(datadir, port)
        started = True

        pg_cluster.sql(port, "CREATE TABLE t (i int)")
        for dummy in range(3):
            _write_and_switch(pg_cluster, port)
        _wait(lambda: _archiver(pg_cluster, port)["archived"] >= 3, 90, "3 segments were not archived", log)
        state = _archiver(pg_cluster, port)
        assert state["failed"] == 0

        s3 = aws["s3"]
        timeline_dir = "%s/wal/00000001/" % prefix
        listed = s3.list_objects_v2(Bucket=aws["bucket"], Prefix=timeline_dir).get("Contents") or []
        names = sorted(item["Key"][len(timeline_dir):-len(".zst")] for item in listed)
        assert len(names) == state["archived"] and state["last"] in names
        compared = 0
        for name in names:
            obj = s3.get_object(Bucket=aws["bucket"], Key=timeline_dir + name + ".zst")
            stored = obj["Body"].read()
            raw = decompress_bytes("zstd", stored)
            assert obj["SSEKMSKeyId"] == aws["arn"] and len(raw) == 16 * MIB
            assert obj["Metadata"]["sha256"] == hashlib.sha256(stored).hexdigest()
            assert obj["Metadata"]["raw-sha256"] == hashlib.sha256(raw).hexdigest()
            local = os.path.join(datadir, "pg_wal", name)
            if os.path.exists(local):  # not yet recycled by a checkpoint
                with open(local, "rb") as handle:
                    assert hashlib.sha256(handle.read()).hexdigest() == obj["Metadata"]["raw-sha256"], name
                compared += 1
        assert compared >= 1

        # endpoint down: PostgreSQL keeps the segment and retries; the failure is in its log
        _write_owned(config, dict(good, endpoint_url="http://127.0.0.1:%d" % _free_port()), user)
        before = _archiver(pg_cluster, port)
        _write_and_switch(pg_cluster, port)
        _wait(lambda: _archiver(pg_cluster, port)["failed"] > before["failed"], 120,
              "archiving to an unreachable endpoint did not fail", log)
        with open(log, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        assert "Cannot reach the AWS endpoint" in text and "archive command failed" in text

        # endpoint back: everything archived, no gap
        _write_owned(config, good, user)
        _write_and_switch(pg_cluster, port)
        _wait(lambda: _archiver(pg_cluster, port)["archived"] >= before["archived"] + 2, 120,
              "archiving did not resume", log)
        listed = s3.list_objects_v2(Bucket=aws["bucket"], Prefix=timeline_dir).get("Contents") or []
        numbers = sorted(int(item["Key"][len(timeline_dir) + 8:len(timeline_dir) + 24], 16) for item in listed)
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert len(numbers) == _archiver(pg_cluster, port)["archived"]
    finally:
        if started:
            pg_cluster.stop(datadir)
        shutil.rmtree(base, ignore_errors=True)


def test_check_config_validates_without_contacting_anything(tmp_path):
    good = tmp_path / "agent.json"
    good.write_text(json.dumps({"bucket": "b", "cluster_name": "main", "kms_key_id": "alias/k",
                                "endpoint_url": "http://127.0.0.1:9", "wal": {"compression": "lz4"}}))
    err = io.StringIO()
    assert wal_agent.main(["--config", str(good), "check-config"], stderr=err) == 0
    assert "s3://b/pgbackup/main/wal" in err.getvalue() and "lz4" in err.getvalue()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bucket": "b", "cluster_name": "main", "wal": {"compression": "brotli"}}))
    err = io.StringIO()
    assert wal_agent.main(["--config", str(bad), "check-config"], stderr=err) == 1
    assert "compression" in err.getvalue()


# --------------------------------------------------------------------------
# batching: push_batch / push_parallel / spool_dir (module_utils/walspool.py)
# --------------------------------------------------------------------------


def _ready_datadir(root, names, seed=b"batch"):
    """A data directory whose pg_wal holds ``names`` (1 MiB segments or history files) marked ``.ready``."""
    wal = Path(root) / "data" / "pg_wal"
    (wal / "archive_status").mkdir(parents=True)
    contents = {}
    for name in names:
        data = b"1\t0/3000000\tno recovery target specified\n" if name.endswith(".history") else wal_bytes(MIB, seed + name.encode())
        (wal / name).write_bytes(data)
        (wal / "archive_status" / (name + ".ready")).write_bytes(b"")
        contents[name] = data
    return wal.parent, contents


def _done(datadir, name):
    """What PostgreSQL does after archive_command exits 0: .ready -> .done."""
    status = datadir / "pg_wal" / "archive_status"
    (status / (name + ".ready")).rename(status / (name + ".done"))


def test_cli_push_batch_pushes_ready_files_ahead_and_answers_from_markers(host_layout, aws, tmp_path):  # pylint: disable=redefined-outer-name
    prefix = PREFIX + "-batch-" + uuid.uuid4().hex[:6]
    spool = tmp_path / "spool"
    spool.mkdir()
    config = write_config(tmp_path, config_dict(aws, prefix=prefix, wal={
        "wal_segment_size": MIB, "push_batch": 4, "push_parallel": 2, "spool_dir": str(spool)}))
    names = ["0000000100000000000000%02X" % n for n in range(0x10, 0x16)] + ["00000002.history"]
    datadir, contents = _ready_datadir(tmp_path, names)

    def archived():
        listed = aws["s3"].list_objects_v2(Bucket=aws["bucket"], Prefix=prefix + "/wal/").get("Contents", [])
        return sorted(obj["Key"].rsplit("/", 1)[1].split(".zst")[0] for obj in listed)

    # PostgreSQL asks for the oldest segment: it and 3 more go (the history file first among the others).
    rc, err = run_agent(host_layout, config, "-v", "push", "pg_wal/" + names[0], cwd=datadir)
    assert rc == 0, err
    assert archived() == sorted(["00000002.history"] + names[:3])
    assert "pushed ahead of PostgreSQL: 00000002.history, %s, %s" % (names[1], names[2]) in err
    assert sorted(os.listdir(spool)) == sorted(n + ".pushed" for n in ["00000002.history"] + names[1:3])
    _done(datadir, names[0])

    # The next call for a pushed-ahead file is answered from its marker: no S3 request (endpoint unreachable here).
    offline = write_config(tmp_path, dict(json.loads(config.read_text()), endpoint_url="http://127.0.0.1:9"))
    rc, err = run_agent(host_layout, offline, "-v", "push", "pg_wal/" + names[1], cwd=datadir)
    assert rc == 0 and "was pushed ahead" in err, err
    assert not (spool / (names[1] + ".pushed")).exists()  # answered once
    _done(datadir, names[1])

    # A marker that does not match the local file (other bytes under that name) is not trusted: normal push,
    # which finds the archived object with a different content and fails without overwriting it (push_batch 1
    # here, the same spool: markers are still consumed, nothing is pushed ahead).
    single = write_config(tmp_path, config_dict(aws, prefix=prefix, wal={
        "wal_segment_size": MIB, "push_batch": 1, "spool_dir": str(spool)}))
    (datadir / "pg_wal" / names[2]).write_bytes(wal_bytes(MIB, b"rebuilt"))
    rc, err = run_agent(host_layout, single, "push", "pg_wal/" + names[2], cwd=datadir)
    assert rc == 1 and "different content" in err and names[2] in err
    assert not (spool / (names[2] + ".pushed")).exists()
    (datadir / "pg_wal" / names[2]).write_bytes(contents[names[2]])
    rc, err = run_agent(host_layout, single, "push", "pg_wal/" + names[2], cwd=datadir)
    assert rc == 0, err  # same content again: already archived, success
    _done(datadir, names[2])

    # A file that cannot be pushed ahead (unreadable) is a warning, gets no marker, and the asked file succeeds.
    (datadir / "pg_wal" / names[5]).write_bytes(b"short")
    rc, err = run_agent(host_layout, config, "push", "pg_wal/" + names[3], cwd=datadir)
    assert rc == 0, err
    assert "push pg_wal/%s ahead of PostgreSQL failed" % names[5] in err and "WARNING" in err
    assert not (spool / (names[5] + ".pushed")).exists() and (spool / (names[4] + ".pushed")).exists()
    assert names[4] in archived() and names[5] not in archived()

    # Every object pushed ahead is the file's content, SSE-KMS with the configured key.
    key = "%s/wal/00000001/%s.zst" % (prefix, names[4])
    obj = aws["s3"].get_object(Bucket=aws["bucket"], Key=key)
    assert obj["SSEKMSKeyId"] == aws["arn"] and decompress_bytes("zstd", obj["Body"].read()) == contents[names[4]]


@pytest.mark.parametrize("wal, needle", [
    ({"push_batch": 4}, "push_batch 4 in the wal section of"),
    ({"push_batch": 0, "spool_dir": "/tmp"}, "push_batch 0 in the wal section of"),
    ({"push_parallel": 99, "push_batch": 2, "spool_dir": "/tmp"}, "push_parallel 99"),
])
def test_cli_push_batch_option_errors(host_layout, aws, tmp_path, wal, needle):  # pylint: disable=redefined-outer-name
    config = write_config(tmp_path, config_dict(aws, wal=dict(wal, wal_segment_size=MIB)))
    datadir, dummy = _ready_datadir(tmp_path, [SEG])
    rc, err = run_agent(host_layout, config, "push", "pg_wal/" + SEG, cwd=datadir)
    assert rc == 1 and needle in err and len(err.strip().splitlines()) == 1, err

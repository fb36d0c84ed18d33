# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tests of the host-side agent (module_utils/agent.py), run for real as a subprocess.

The agent is run as the systemd units run it: ``python -m
ansible_collections.rtx.dr.plugins.module_utils.agent`` with ``PYTHONPATH``
pointing at a directory laid out as the ``rtx.dr.backup_schedule`` role installs
it (copies of ``plugins/module_utils/*.py`` plus ``__init__.py`` files), in which
a stub ``ansible`` package refuses to import: the DB hosts have no ansible.
PostgreSQL is the ``pg_cluster`` fixture (primary + streaming standby), S3/KMS a
moto server.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import encrypted_bucket_and_key  # noqa: E402 pylint: disable=wrong-import-position
from moto_server import moto_url  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import agent  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.modules import pg_basebackup  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.modules import s3_backup_verify  # noqa: E402 pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parents[4]
MODULE = "ansible_collections.rtx.dr.plugins.module_utils.agent"
PACKAGE_DIRS = ("ansible_collections", "ansible_collections/rtx", "ansible_collections/rtx/dr",
                "ansible_collections/rtx/dr/plugins", "ansible_collections/rtx/dr/plugins/module_utils")


# --------------------------------------------------------------------------
# pure parts, in process
# --------------------------------------------------------------------------


def test_backup_spec_is_the_modules():
    assert agent.backup_argument_spec() == pg_basebackup.argument_spec()


def test_verify_spec_is_the_modules_plus_postgres():
    spec = agent.verify_argument_spec()
    module_spec = s3_backup_verify.argument_spec()
    assert {k: v for k, v in spec.items() if k in module_spec} == module_spec
    assert set(spec) - set(module_spec) == {"login_host", "login_port", "login_user", "login_password", "login_db",
                                            "login_unix_socket", "ssl_mode", "ca_cert", "connect_timeout",
                                            "audit_db", "audit_schema"}


def test_build_params_applies_defaults_aliases_and_types(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    params = agent.build_params(agent.backup_argument_spec(),
                                {"bucket": "b", "aws_access_key": "ak", "login_port": "6432", "databases": "a, b",
                                 "validate_certs": "no"})
    assert params["access_key"] == "ak" and params["login_port"] == 6432 and params["databases"] == ["a", "b"]
    assert params["validate_certs"] is False and params["region"] == "eu-west-3"
    assert params["compression"] == "zstd" and params["part_size_mb"] == 16 and params["label"] is None


@pytest.mark.parametrize("config,needle", [
    ({"bucket": "b", "bukket": "c"}, "unknown option bukket"),
    ({"bucket": "b", "compression": "brotli"}, "option compression"),
    ({"bucket": "b", "part_size_mb": True}, "option part_size_mb"),
    ({"prefix": "p"}, "option bucket is required"),
    ({"bucket": "b", "verify": {"kms_key_id": "k"}}, "[verify]: unknown option kms_key_id"),
])
def test_config_errors_name_the_key(tmp_path, config, needle):
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config))
    out, err = io.StringIO(), io.StringIO()
    assert agent.main(["--config", str(path), "backup"], stdout=out, stderr=err) == 2
    assert needle in json.loads(out.getvalue())["msg"] and needle in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1


def test_ini_config_and_verify_expects_the_backup_key(tmp_path):
    path = tmp_path / "agent.ini"
    path.write_text("[agent]\nbucket = b\nkms_key_id = alias/k\ncluster_name = main\n[verify]\nchecksums = no\n")
    sections = agent.read_config(str(path))
    verify = agent.params_for("verify", sections)
    assert verify["expected_kms_key_id"] == "alias/k" and verify["checksums"] is False
    assert agent.params_for("backup", sections)["kms_key_id"] == "alias/k"


@pytest.mark.parametrize("name, text", [
    ("agent.json", json.dumps({"bucket": "b", "kms_key_id": "alias/k", "cluster_name": "main",
                               "wal": {"compression": "lz4"}})),
    ("agent.ini", "[agent]\nbucket = b\nkms_key_id = alias/k\ncluster_name = main\n[wal]\ncompression = lz4\n"),
])
def test_the_wal_section_belongs_to_the_wal_agent_and_is_ignored_here(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    sections = agent.read_config(str(path))
    assert sections["wal"] == {"compression": "lz4"}
    # the backup's compression is not the WAL's
    assert agent.params_for("backup", sections)["compression"] != "lz4"


def test_shim_only_when_ansible_is_missing():
    assert agent.ensure_ansible_basic() is False  # ansible is installed here: nothing replaced
    with pytest.raises(agent.AnsibleFallbackNotFound):
        agent.env_fallback("RTX_DR_SURELY_NOT_SET_%s" % uuid.uuid4().hex)


# --------------------------------------------------------------------------
# the real thing, as a subprocess
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_layout(tmp_path_factory):
    """PYTHONPATH directory as the role installs it, where ``import ansible`` fails."""
    root = tmp_path_factory.mktemp("rtx-dr-lib")
    for name in PACKAGE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").write_text("")
    for source in sorted((REPO / "plugins" / "module_utils").glob("*.py")):
        shutil.copy(source, root / PACKAGE_DIRS[-1] / source.name)
    (root / "ansible").mkdir()
    (root / "ansible" / "__init__.py").write_text("raise ImportError('no ansible on the database host')\n")
    return root


@pytest.fixture(scope="module")
def aws(moto_url):  # noqa: F811 pylint: disable=redefined-outer-name
    return encrypted_bucket_and_key(moto_url, "rtx-agent")


PREFIX = "pgbackup/agent-test"


def write_config(tmp_path, pg_cluster, aws, port=None, **overrides):  # pylint: disable=redefined-outer-name
    config = {
        "bucket": aws["bucket"], "prefix": PREFIX, "cluster_name": "agent-test", "kms_key_id": aws["alias"],
        "endpoint_url": aws["url"], "region": "us-east-1", "access_key": "testing", "secret_key": "testing",
        "login_host": "127.0.0.1", "login_port": port or pg_cluster.primary_port,
        "login_password": pg_cluster.params()["login_password"], "ssl_mode": "disable", "connect_timeout": 5,
        "audit_db": "postgres",
        "backup": {"pg_bin_dir": pg_cluster.bindir, "part_size_mb": 5, "progress_interval": 1, "timeout": 120},
    }
    config.update(overrides)
    path = tmp_path / ("agent-%s.json" % uuid.uuid4().hex[:6])
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def run_agent(host_layout, config, *args):  # pylint: disable=redefined-outer-name
    home = config.parent
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(host_layout),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(home),
        "LC_ALL": "C.UTF-8",
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", MODULE, "--config", str(config)] + list(args),
        env=env, cwd=str(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False,
    )
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, (proc.returncode, stdout, stderr)
    return proc.returncode, json.loads(lines[0]), stderr


@pytest.fixture(scope="module")
def backup_done(pg_cluster, aws, host_layout, tmp_path_factory):  # pylint: disable=redefined-outer-name
    """One backup taken by the agent on the primary: ``(rc, result, stderr, config)``."""
    tmp = tmp_path_factory.mktemp("agent")
    config = write_config(tmp, pg_cluster, aws)
    return run_agent(host_layout, config, "backup") + (config,)


def test_backup_on_the_primary(backup_done, aws):  # pylint: disable=redefined-outer-name
    rc, result, stderr, dummy = backup_done
    assert rc == 0, (result, stderr)
    assert result["status"] == "complete" and result["prefix"] == PREFIX
    stored = catalog.latest_complete(aws["s3"], aws["bucket"], PREFIX)
    assert stored["backup_id"] == result["backup_id"] and stored["status"] == "complete"
    assert "backup %s complete" % result["backup_id"] in stderr
    assert all(" rtx-dr-agent[" in line for line in stderr.splitlines())
    assert "testing" not in stderr  # no secret in the logs


def test_backup_on_the_standby_does_nothing(backup_done, pg_cluster, aws, host_layout, tmp_path):  # pylint: disable=redefined-outer-name
    before = catalog.list_backup_ids(aws["s3"], aws["bucket"], PREFIX)
    config = write_config(tmp_path, pg_cluster, aws, port=pg_cluster.standby_port)
    rc, result, stderr = run_agent(host_layout, config, "backup")
    assert rc == 0, (result, stderr)
    assert agent.STANDBY_MESSAGE in stderr and result["skipped"] is True
    assert catalog.list_backup_ids(aws["s3"], aws["bucket"], PREFIX) == before


def test_bad_config_exits_2(pg_cluster, aws, host_layout, tmp_path):  # pylint: disable=redefined-outer-name
    config = write_config(tmp_path, pg_cluster, aws, compression="brotli")
    rc, result, stderr = run_agent(host_layout, config, "backup")
    assert rc == 2 and "compression" in result["msg"] and "compression" in stderr
    config = write_config(tmp_path, pg_cluster, aws, kms_key_id=None)
    rc, result, stderr = run_agent(host_layout, config, "backup")
    assert rc == 2 and "kms_key_id" in result["msg"], (result, stderr)


def test_backup_failure_exits_1(pg_cluster, aws, host_layout, tmp_path):  # pylint: disable=redefined-outer-name
    config = write_config(tmp_path, pg_cluster, aws, bucket="rtx-agent-missing-bucket")
    rc, result, stderr = run_agent(host_layout, config, "backup")
    assert rc == 1 and result["failed"] and "rtx-agent-missing-bucket" in result["msg"]
    assert "rtx-agent-missing-bucket" in stderr


def test_verify_then_corruption(backup_done, pg_cluster, aws, host_layout, tmp_path):  # pylint: disable=redefined-outer-name
    rc, result, stderr = run_agent(host_layout, backup_done[3], "verify")
    assert rc == 0, (result, stderr)
    assert result["failed_count"] == 0 and result["backups"][0]["backup_id"] == backup_done[1]["backup_id"]

    standby = write_config(tmp_path, pg_cluster, aws, port=pg_cluster.standby_port)
    rc, result, stderr = run_agent(host_layout, standby, "verify")
    assert rc == 0 and agent.STANDBY_MESSAGE in stderr

    base = next(o for o in backup_done[1]["objects"] if o["role"] == "base")
    s3 = aws["s3"]
    original = s3.get_object(Bucket=aws["bucket"], Key=base["key"])
    body = original["Body"].read()
    damaged = body[:-16] + bytes(16)
    s3.put_object(Bucket=aws["bucket"], Key=base["key"], Body=damaged, Metadata=original["Metadata"],
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=original["SSEKMSKeyId"])
    try:
        rc, result, stderr = run_agent(host_layout, standby, "verify", "--any-host")
        assert rc == 1, (result, stderr)
        assert base["key"] in result["msg"] and base["key"] in stderr and "checksum" in result["msg"]
    finally:
        s3.put_object(Bucket=aws["bucket"], Key=base["key"], Body=body, Metadata=original["Metadata"],
                      ServerSideEncryption="aws:kms", SSEKMSKeyId=original["SSEKMSKeyId"])

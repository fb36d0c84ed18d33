# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The WAL agent's cross-region copy: dual push (sync/async) into the replica bucket and fetch with fallback.

One moto server plays both regions (us-east-1 primary, us-west-2 replica), each bucket with its own KMS key
under the same alias. The agent runs in process (``wal_agent.main``) except one run as PostgreSQL runs it
(a subprocess without ansible).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from moto_server import moto_url  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position
from test_replicate import two_regions  # noqa: E402 pylint: disable=wrong-import-position
from test_wal_agent import make_layout  # noqa: E402 pylint: disable=wrong-import-position
from test_wal_agent import run_agent  # noqa: E402 pylint: disable=wrong-import-position
from test_wal_agent import wal_bytes  # noqa: E402 pylint: disable=wrong-import-position
from test_wal_agent import write_config  # noqa: E402 pylint: disable=wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import wal_agent  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import walarchive  # noqa: E402 pylint: disable=wrong-import-position

MIB = 1024 * 1024
PREFIX = "pgbackup/wal-replica-test"
SEG = "000000010000000000000007"


@pytest.fixture
def xr(moto_url, monkeypatch):  # noqa: F811 pylint: disable=redefined-outer-name
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return two_regions(moto_url, "rtx-walxr")


def config(xr, **wal):  # pylint: disable=redefined-outer-name
    section = {"wal_segment_size": MIB, "compression": "gzip", "replica_bucket": xr["west"]["bucket"],
               "replica_region": "us-west-2", "replica_kms_key_id": xr["alias"]}
    section.update(wal)
    return {"bucket": xr["east"]["bucket"], "prefix": PREFIX, "kms_key_id": xr["alias"], "region": "us-east-1",
            "endpoint_url": xr["url"], "access_key": "testing", "secret_key": "testing",
            "login_host": "127.0.0.1", "backup": {"part_size_mb": 5},
            "wal": {k: v for k, v in section.items() if v is not None}}


def agent(path, *argv):
    err = io.StringIO()
    rc = wal_agent.main(["--config", str(path)] + list(argv), stderr=err)
    return rc, err.getvalue()


def segment_key(name=SEG):
    return "%s/wal/%s/%s.gz" % (PREFIX, name[:8], name)


def heads(xr, name=SEG):  # pylint: disable=redefined-outer-name
    out = {}
    for label in ("east", "west"):
        try:
            out[label] = xr[label]["s3"].head_object(Bucket=xr[label]["bucket"], Key=segment_key(name))
        except Exception:  # pylint: disable=broad-exception-caught
            out[label] = None
    return out


def test_dual_push_sync_stores_in_both_regions(xr, tmp_path):  # pylint: disable=redefined-outer-name
    path = write_config(tmp_path, config(xr))
    (tmp_path / SEG).write_bytes(wal_bytes(MIB))
    assert agent(path, "push", str(tmp_path / SEG)) == (0, "")
    found = heads(xr)
    assert found["east"]["SSEKMSKeyId"] == xr["east"]["arn"]
    assert found["west"]["SSEKMSKeyId"] == xr["west"]["arn"]  # the replica region's own key
    assert found["west"]["Metadata"]["raw-sha256"] == found["east"]["Metadata"]["raw-sha256"]
    # idempotent in both buckets
    rc, err = agent(path, "-v", "push", str(tmp_path / SEG))
    assert rc == 0 and err.count("already archived with the same content") == 2


def test_sync_replica_unreachable_fails_and_retry_repairs(xr, tmp_path, unused_port):  # pylint: disable=redefined-outer-name
    down = write_config(tmp_path, config(xr, replica_endpoint_url="http://127.0.0.1:%d" % unused_port))
    (tmp_path / SEG).write_bytes(wal_bytes(MIB))
    rc, err = agent(down, "push", str(tmp_path / SEG))
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "archived in the primary bucket, but the push to the replica" in err and "Cannot reach" in err
    assert xr["west"]["bucket"] in err and "testing" not in err
    assert heads(xr)["east"] is not None and heads(xr)["west"] is None
    # PostgreSQL retries once the replica is back: primary is a no-op, the replica gets the file
    up = write_config(tmp_path, config(xr))
    assert agent(up, "push", str(tmp_path / SEG)) == (0, "")
    assert heads(xr)["west"] is not None


def test_async_replica_unreachable_is_a_warning(xr, tmp_path, unused_port):  # pylint: disable=redefined-outer-name
    path = write_config(tmp_path, config(xr, replica_mode="async",
                                         replica_endpoint_url="http://127.0.0.1:%d" % unused_port))
    (tmp_path / SEG).write_bytes(wal_bytes(MIB))
    rc, err = agent(path, "push", str(tmp_path / SEG))
    assert rc == 0 and "WARNING" in err and "NOT in the replica" in err and "backup_incremental.yml" in err
    assert heads(xr)["east"] is not None and heads(xr)["west"] is None


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_conflict_in_replica_is_an_error_in_both_modes(xr, tmp_path, mode):  # pylint: disable=redefined-outer-name
    path = write_config(tmp_path, config(xr, replica_mode=mode))
    other = tmp_path / "other"
    other.mkdir()
    (other / SEG).write_bytes(wal_bytes(MIB, b"other"))
    replica = walarchive.replica_params(wal_agent.params_from_config(str(path)))
    walarchive.push(xr["west"]["s3"], replica, str(other / SEG))  # someone else's segment in the replica
    before = heads(xr)["west"]
    (tmp_path / SEG).write_bytes(wal_bytes(MIB))
    rc, err = agent(path, "push", str(tmp_path / SEG))
    assert rc == 1 and "replica archive" in err and "different content" in err and segment_key() in err
    assert heads(xr)["west"]["ETag"] == before["ETag"]  # not overwritten
    assert heads(xr)["east"] is not None


def test_fetch_falls_back_to_the_other_region(xr, tmp_path, unused_port):  # pylint: disable=redefined-outer-name
    east_only, west_only = "000000010000000000000008", "000000010000000000000009"
    base = config(xr)
    params = wal_agent.params_from_config(str(write_config(tmp_path, base)))
    (tmp_path / east_only).write_bytes(wal_bytes(MIB, b"east"))
    (tmp_path / west_only).write_bytes(wal_bytes(MIB, b"west"))
    walarchive.push(xr["east"]["s3"], params, str(tmp_path / east_only))
    walarchive.push(xr["west"]["s3"], walarchive.replica_params(params), str(tmp_path / west_only))

    west_host = write_config(tmp_path, config(xr, fetch_order="replica_first"))
    assert agent(west_host, "fetch", east_only, str(tmp_path / "a")) == (0, "")
    assert (tmp_path / "a").read_bytes() == wal_bytes(MIB, b"east")
    assert agent(west_host, "fetch", west_only, str(tmp_path / "b")) == (0, "")
    assert (tmp_path / "b").read_bytes() == wal_bytes(MIB, b"west")
    east_host = write_config(tmp_path, base)
    assert agent(east_host, "fetch", west_only, str(tmp_path / "c")) == (0, "")
    # *_only orders never read the other bucket; --order overrides the configuration
    assert agent(west_host, "fetch", "--order", "replica_only", east_only, str(tmp_path / "d")) == (1, "")
    assert agent(east_host, "fetch", "--order", "primary_only", west_only, str(tmp_path / "e")) == (1, "")
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
    # not archived anywhere: exit 1 quietly
    assert agent(west_host, "fetch", "00000005.history", str(tmp_path / "f")) == (1, "")
    # the first archive unreachable: read from the other one
    down = write_config(tmp_path, config(xr, fetch_order="replica_first",
                                         replica_endpoint_url="http://127.0.0.1:%d" % unused_port))
    rc, err = agent(down, "-v", "fetch", east_only, str(tmp_path / "g"))
    assert rc == 0 and "replica archive failed, trying the next" in err
    assert (tmp_path / "g").read_bytes() == wal_bytes(MIB, b"east")


def test_replica_settings_are_checked_before_anything(xr, tmp_path):  # pylint: disable=redefined-outer-name
    path = write_config(tmp_path, config(xr, replica_kms_key_id=None))
    rc, err = agent(path, "check-config")
    assert rc == 1 and "replica_kms_key_id" in err
    path = write_config(tmp_path, dict(config(xr), wal={"wal_segment_size": MIB, "fetch_order": "replica_only"}))
    rc, err = agent(path, "fetch", SEG, str(tmp_path / "x"))
    assert rc == 1 and "replica_bucket is not set" in err
    path = write_config(tmp_path, dict(config(xr), replica_bucket="top-level"))
    rc, err = agent(path, "check-config")  # top-level replica keys are not the WAL agent's (wal section only)
    assert rc == 0


def test_dual_push_as_postgresql_runs_it(xr, tmp_path):  # pylint: disable=redefined-outer-name
    layout = make_layout(tmp_path / "lib")
    path = write_config(tmp_path, config(xr))
    data = tmp_path / "data"
    (data / "pg_wal").mkdir(parents=True)
    (data / "pg_wal" / SEG).write_bytes(wal_bytes(MIB))
    assert run_agent(layout, path, "push", "pg_wal/" + SEG, cwd=data) == (0, "")
    found = heads(xr)
    assert found["west"]["SSEKMSKeyId"] == xr["west"]["arn"] and found["east"] is not None
    assert run_agent(layout, path, "fetch", "--order", "replica_only", SEG, "pg_wal/RECOVERYXLOG", cwd=data) == (0, "")
    assert (data / "pg_wal" / "RECOVERYXLOG").read_bytes() == wal_bytes(MIB)

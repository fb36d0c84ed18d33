# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""rtx.dr.backup_replicate run as a module against a moto server with two regions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils"))

from moto_server import moto_url  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position
from test_replicate import PREFIX  # noqa: E402 pylint: disable=wrong-import-position
from test_replicate import keys  # noqa: E402 pylint: disable=wrong-import-position
from test_replicate import push_wal  # noqa: E402 pylint: disable=wrong-import-position
from test_replicate import put_backup  # noqa: E402 pylint: disable=wrong-import-position
from test_replicate import put_object  # noqa: E402 pylint: disable=wrong-import-position
from test_replicate import two_regions  # noqa: E402 pylint: disable=wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import catalog  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.modules import backup_replicate  # noqa: E402 pylint: disable=wrong-import-position


def test_documentation_matches_argument_spec(doc_matches_spec):
    doc = doc_matches_spec(backup_replicate)
    assert "rtx.dr.aws" in doc["extends_documentation_fragment"]
    returned = yaml.safe_load(backup_replicate.RETURN)
    assert {"copied_backups", "copied_segments", "copied_bytes", "backups"} <= set(returned)
    assert backup_replicate.argument_spec()["secret_key"]["no_log"] is True


@pytest.fixture
def xr(moto_url, tmp_path, monkeypatch):  # noqa: F811 pylint: disable=redefined-outer-name
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    estate = two_regions(moto_url, "rtx-xrm")
    estate["backup"] = put_backup(estate, 30, "000000010000000000000003")
    push_wal(estate, tmp_path, ["000000010000000000000003", "000000010000000000000004"])
    return estate


def args(xr, **overrides):  # pylint: disable=redefined-outer-name
    result = {"bucket": xr["east"]["bucket"], "prefix": PREFIX, "region": "us-east-1", "endpoint_url": xr["url"],
              "access_key": "testing", "secret_key": "testing", "replica_bucket": xr["west"]["bucket"],
              "replica_region": "us-west-2", "replica_kms_key_id": xr["alias"], "wal_segment_size": 1024 * 1024}
    result.update(overrides)
    return result


def test_check_mode_then_copy_then_nothing(xr, run_module):  # pylint: disable=redefined-outer-name
    west = xr["west"]
    failed, planned = run_module(backup_replicate.main, args(xr, _ansible_check_mode=True))
    assert not failed and planned["changed"] is True
    assert planned["copied_backups"] == [xr["backup"]["backup_id"]]
    assert planned["copied_segments"] == ["000000010000000000000003", "000000010000000000000004"]
    assert keys(west["s3"], west["bucket"]) == []

    failed, result = run_module(backup_replicate.main, args(xr))
    assert not failed and result["changed"] is True, result
    assert result["copied_backups"] == [xr["backup"]["backup_id"]] and result["copied_objects"] == 2
    assert result["replica_region"] == "us-west-2" and result["copied_bytes"] > 0
    record = catalog.read_record(west["s3"], west["bucket"], PREFIX, xr["backup"]["backup_id"])
    assert record["status"] == "complete" and record["kms_key_arn"] == west["arn"]

    failed, again = run_module(backup_replicate.main, args(xr))
    assert not failed and again["changed"] is False and again["copied_segments"] == []


def test_conflict_fails_naming_the_key(xr, run_module):  # pylint: disable=redefined-outer-name
    west = xr["west"]
    key = xr["backup"]["objects"][0]["key"]
    put_object(west["s3"], west["bucket"], key, b"not the backup", west["arn"])
    failed, result = run_module(backup_replicate.main, args(xr))
    assert failed and key in result["msg"] and "NOT overwritten" in result["msg"]
    assert "testing" not in str(result)
    assert catalog.list_backup_ids(west["s3"], west["bucket"], PREFIX) == []


def test_option_error_before_any_connection(xr, run_module):  # pylint: disable=redefined-outer-name
    failed, result = run_module(backup_replicate.main,
                                args(xr, replica_kms_key_id=None, endpoint_url="http://127.0.0.1:1"))
    assert failed and "replica_kms_key_id" in result["msg"]

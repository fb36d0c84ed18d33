"""Helpers for the testinfra tests of the lab topology (Molecule scenario default)."""

import os
import sys
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from labtest import INVENTORY, get_host, psql, wait_for  # noqa: E402,F401  (re-exported to the tests)

__all__ = ["INVENTORY", "get_host", "psql", "wait_for"]

PRIMARY = "mol-db-east-1"
SYNC_STANDBY = "mol-db-east-2"
ASYNC_STANDBY = "mol-db-east-3"
WEST_STANDBY = "mol-db-west-1"
STANDBYS = [SYNC_STANDBY, ASYNC_STANDBY, WEST_STANDBY]

# The AWS endpoint and the archive of the scenario (environment: the lab's own when run against `make lab`).
ENDPOINT = os.environ.get("RTX_DR_MOLECULE_AWS", "http://172.30.78.1:5001")
BUCKET = os.environ.get("RTX_DR_TEST_BUCKET", "rtx-dr-backups-rtx-molecule")
REPLICA = os.environ.get("RTX_DR_TEST_REPLICA_BUCKET", "rtx-dr-backups-rtx-molecule-west")
PREFIX = os.environ.get("RTX_DR_TEST_PREFIX", "pgbackup/rtx-molecule")
ACCESS = os.environ.get("RTX_DR_TEST_ACCESS_KEY", "molecule-access-key")
SECRET = "molecule-secret-key"  # the lab's endpoint (moto) accepts any secret key
# The WAL agent as archive_command / restore_command run it on a database host.
AGENT = ("PYTHONPATH=/usr/local/lib/rtx-dr python3 -m ansible_collections.rtx.dr.plugins.module_utils.wal_agent "
         "--config /etc/rtx-dr/agent.json")


def aws_client(service="s3", region="us-east-1"):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name=region,
                        aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)


def s3(region="us-east-1"):
    return aws_client("s3", region)


def object_sha256(client, bucket, key, head):
    """The SHA256 an object carries: its ``sha256`` metadata (one PUT) or its ``sha256`` tag (multipart upload)."""
    if (head.get("Metadata") or {}).get("sha256"):
        return head["Metadata"]["sha256"]
    tags = client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {tag["Key"]: tag["Value"] for tag in tags}.get("sha256")


@pytest.fixture(scope="session")
def primary():
    return get_host(PRIMARY)


@pytest.fixture(scope="session")
def standbys():
    return {name: get_host(name) for name in STANDBYS}

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures shared by the role tests that run a throwaway playbook against a moto server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moto_server import start_moto_server, stop_moto_server  # noqa: E402 pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parents[3]
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url():
    """A moto server of the test module's own: every test module starts from an empty endpoint."""
    try:
        proc, url = start_moto_server()
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.fail("moto_server could not start: %s" % exc)
    try:
        yield url
    finally:
        stop_moto_server(proc)


@pytest.fixture(scope="module")
def collections_dir(tmp_path_factory):
    """A collections path with ansible_collections/rtx/dr -> this checkout."""
    root = tmp_path_factory.mktemp("collections")
    namespace = root / "ansible_collections" / "rtx"
    namespace.mkdir(parents=True)
    (namespace / "dr").symlink_to(REPO, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def aws(moto_url):
    """``aws(service, region=REGION)``: a boto3 client on the moto server."""
    import boto3  # pylint: disable=import-outside-toplevel

    def client(service, region=REGION):
        return boto3.client(
            service, endpoint_url=moto_url, region_name=region,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )
    return client

# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A throwaway moto server (offline S3/KMS/...) for tests, as explicit fixtures.

Import the fixtures in a test module (this file is not a pytest plugin)::

    sys.path.insert(0, str(Path(__file__).resolve().parents[N]))  # tests/unit
    from moto_server import moto_url, aws_env, s3_client, kms_client  # noqa: F401

``moto_url`` (session scope) starts ``moto_server`` from the interpreter's own
bin directory on 127.0.0.1 and a free port, waits until it answers, yields its
URL and kills it at the end. It skips when moto_server is not installed.
``aws_params`` gives the rtx.dr AWS options pointing at it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

AWS_TEST_PARAMS = {
    "region": "us-east-1",
    "access_key": "testing",
    "secret_key": "testing",
    "session_token": None,
    "profile": None,
    "validate_certs": True,
    "aws_ca_bundle": None,
}


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto_server(timeout=30):
    """Start moto_server; return ``(process, url)``. Raise RuntimeError when it does not come up."""
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        raise FileNotFoundError(str(binary))
    port = _free_port()
    env = dict(os.environ)
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True,
    )
    url = "http://127.0.0.1:%d" % port
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("moto_server exited with status %s" % proc.returncode)
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError("moto_server did not answer on %s within %ss" % (url, timeout))


def stop_moto_server(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def moto_url():
    """URL of a moto server running for the whole test session."""
    try:
        proc, url = start_moto_server()
    except FileNotFoundError:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    try:
        yield url
    finally:
        stop_moto_server(proc)


@pytest.fixture
def aws_params(moto_url, monkeypatch, tmp_path):
    """rtx.dr AWS module options pointing at the moto server; no AWS setting of the machine leaks in."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    params = dict(AWS_TEST_PARAMS)
    params["endpoint_url"] = moto_url
    return params


@pytest.fixture
def s3_client(aws_params):
    from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client  # pylint: disable=import-outside-toplevel

    return boto3_client(aws_params, "s3")


@pytest.fixture
def kms_client(aws_params):
    from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client  # pylint: disable=import-outside-toplevel

    return boto3_client(aws_params, "kms")


@pytest.fixture
def bucket(s3_client):
    """A new, empty bucket for one test, with default SSE-KMS encryption (as rtx.dr.s3_storage sets up)."""
    name = "rtx-test-%s" % uuid.uuid4().hex[:12]
    s3_client.create_bucket(Bucket=name)
    s3_client.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    return name


@pytest.fixture
def kms_key(kms_client):
    """A new KMS key with an alias: ``{"alias", "key_id", "arn"}``."""
    meta = kms_client.create_key(Description="rtx.dr test")["KeyMetadata"]
    alias = "alias/rtx-test-%s" % uuid.uuid4().hex[:8]
    kms_client.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    return {"alias": alias, "key_id": meta["KeyId"], "arn": meta["Arn"]}


def encrypted_bucket_and_key(moto_url, name):
    """A bucket with default SSE-KMS and a KMS key with an alias on the moto server at ``moto_url``.

    Returns ``{"url", "s3", "bucket", "alias", "arn"}`` (``s3`` a boto3 client); names start with ``name``.
    """
    import boto3  # pylint: disable=import-outside-toplevel

    kwargs = dict(endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                  aws_secret_access_key="testing")
    s3 = boto3.client("s3", **kwargs)
    kms = boto3.client("kms", **kwargs)
    bucket = "%s-%s" % (name, uuid.uuid4().hex[:10])
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]})
    key = kms.create_key(Description="rtx.dr %s test" % name)["KeyMetadata"]
    alias = "alias/%s-%s" % (name, uuid.uuid4().hex[:8])
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    return {"url": moto_url, "s3": s3, "bucket": bucket, "alias": alias, "arn": key["Arn"]}

# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import os
import socket
import sys

import pytest
import yaml

from ansible_collections.rtx.dr.plugins.doc_fragments.aws import ModuleDocFragment
from ansible_collections.rtx.dr.plugins.module_utils import aws
from ansible_collections.rtx.dr.plugins.module_utils import backup
from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.verify import Verifier
from ansible_collections.rtx.dr.plugins.module_utils.walarchive import kms_key_arn

boto3 = pytest.importorskip("boto3")
botocore = pytest.importorskip("botocore")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def clean_aws_env(monkeypatch, tmp_path):
    """No AWS setting of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def params(**overrides):
    base = dict.fromkeys(aws.aws_common_argument_spec())
    base["validate_certs"] = True
    base.update(overrides)
    return base


# --------------------------------------------------------------------------
# Argument spec and its documentation
# --------------------------------------------------------------------------


def test_argument_spec_follows_amazon_aws_names():
    spec = aws.aws_common_argument_spec()
    assert set(spec) == {
        "region", "endpoint_url", "access_key", "secret_key", "session_token", "profile", "validate_certs", "aws_ca_bundle",
    }
    assert spec["region"]["aliases"] == ["aws_region", "ec2_region"]
    assert spec["endpoint_url"]["aliases"] == ["aws_endpoint_url", "endpoint"]
    assert spec["access_key"]["aliases"] == ["aws_access_key_id", "aws_access_key", "ec2_access_key"]
    assert spec["secret_key"]["aliases"] == ["aws_secret_access_key", "aws_secret_key"]
    assert spec["profile"]["aliases"] == ["aws_profile"]
    assert spec["secret_key"]["no_log"] is True
    assert spec["session_token"]["no_log"] is True
    assert spec["access_key"]["no_log"] is False
    assert spec["validate_certs"] == {"type": "bool", "default": True}
    assert spec["aws_ca_bundle"]["type"] == "path"


def test_argument_spec_environment_fallbacks(make_module, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    monkeypatch.setenv("AWS_PROFILE", "envprofile")
    module = make_module(aws.aws_common_argument_spec(), {})
    assert module.params["region"] == "eu-central-1"
    assert module.params["endpoint_url"] == "http://minio:9000"
    assert module.params["access_key"] == "AKIAENV"
    assert module.params["secret_key"] == "env-secret"
    assert module.params["session_token"] == "env-token"
    assert module.params["profile"] == "envprofile"
    assert {"env-secret", "env-token"} <= module.no_log_values
    # AWS_REGION and AWS_URL come first, as in amazon.aws.
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_URL", "http://s3.local")
    module = make_module(aws.aws_common_argument_spec(), {})
    assert module.params["region"] == "eu-west-3"
    assert module.params["endpoint_url"] == "http://s3.local"


def test_argument_spec_aliases(make_module):
    module = make_module(
        aws.aws_common_argument_spec(),
        {"ec2_region": "us-west-2", "endpoint": "http://x:1", "aws_access_key_id": "AK", "aws_secret_key": "SK",
         "aws_session_token": "ST", "aws_profile": "p", "validate_certs": "no"},
    )
    assert module.params["region"] == "us-west-2"
    assert module.params["endpoint_url"] == "http://x:1"
    assert module.params["access_key"] == "AK"
    assert module.params["secret_key"] == "SK"
    assert module.params["session_token"] == "ST"
    assert module.params["profile"] == "p"
    assert module.params["validate_certs"] is False


def test_doc_fragment_matches_argument_spec():
    options = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    spec = aws.aws_common_argument_spec()
    assert set(options) == set(spec)
    for name, arg in spec.items():
        doc = options[name]
        assert doc.get("type", "str") == arg.get("type", "str"), name
        assert doc.get("default") == arg.get("default"), name
        assert sorted(doc.get("aliases", [])) == sorted(arg.get("aliases", [])), name
        assert doc.get("description"), name
        for env in (arg.get("fallback") or (None, []))[1]:
            assert env in " ".join(doc["description"]), (name, env)


# --------------------------------------------------------------------------
# boto3_client
# --------------------------------------------------------------------------


def test_client_receives_endpoint_region_and_credentials():
    client = aws.boto3_client(
        params(region="eu-west-1", endpoint_url="http://127.0.0.1:9000", access_key="AKIDEXAMPLE",
               secret_key="wJalrXUtnFEMI", session_token="tok"),
        "s3",
    )
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert client.meta.region_name == "eu-west-1"
    credentials = client._request_signer._credentials  # pylint: disable=protected-access
    assert credentials.access_key == "AKIDEXAMPLE"
    assert credentials.secret_key == "wJalrXUtnFEMI"
    assert credentials.token == "tok"
    assert client.meta.config.s3 == {"addressing_style": "path"}
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert "rtx.dr" in client.meta.config.user_agent_extra


def test_client_without_endpoint_uses_aws_and_virtual_addressing():
    client = aws.boto3_client(params(region="eu-west-1", access_key="AK", secret_key="SK"), "s3")
    assert client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
    assert not client.meta.config.s3


def test_client_session_and_client_arguments(monkeypatch):
    seen = {}
    real_client = boto3.session.Session.client

    def spy(self, *args, **kwargs):
        seen["session"] = dict(
            region=self.region_name,
            profile=self.profile_name,
        )
        seen["args"] = args
        seen["kwargs"] = kwargs
        return real_client(self, *args, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "client", spy)
    aws.boto3_client(params(region="ap-south-1", access_key="AK", secret_key="SK", aws_ca_bundle="/etc/ca.pem"), "sts",
                     config={"connect_timeout": 3})
    assert seen["args"] == ("sts",)
    assert seen["session"]["region"] == "ap-south-1"
    assert seen["kwargs"]["verify"] == "/etc/ca.pem"
    assert seen["kwargs"]["endpoint_url"] is None
    assert seen["kwargs"]["config"].connect_timeout == 3
    assert seen["kwargs"]["config"].retries == {"mode": "standard", "total_max_attempts": 5}


@pytest.mark.parametrize(
    "validate_certs, ca_bundle, expected",
    [(True, None, True), (False, None, False), (True, "/ca.pem", "/ca.pem"), (False, "/ca.pem", False), (None, "", True)],
)
def test_client_verify(validate_certs, ca_bundle, expected):
    assert aws.client_verify({"validate_certs": validate_certs, "aws_ca_bundle": ca_bundle}) == expected


def test_session_kwargs_empty_strings_mean_unset():
    kwargs = aws.session_kwargs(params(access_key="", secret_key="", profile="", region=""))
    assert kwargs == {"aws_access_key_id": None, "aws_secret_access_key": None, "aws_session_token": None}


def test_profile_and_keys_are_mutually_exclusive():
    with pytest.raises(InvalidValueError) as info:
        aws.session_kwargs(params(profile="prod", access_key="AK", secret_key="SK"))
    assert "mutually exclusive" in info.value.msg
    assert info.value.details == {"profile": "prod"}


def test_access_key_needs_secret_key():
    with pytest.raises(InvalidValueError) as info:
        aws.session_kwargs(params(access_key="AK"))
    assert "only access_key was set" in info.value.msg


def test_profile_from_credentials_file(tmp_path):
    (tmp_path / "credentials").write_text("[rtx]\naws_access_key_id = AKPROFILE\naws_secret_access_key = SKPROFILE\n")
    (tmp_path / "config").write_text("[profile rtx]\nregion = sa-east-1\n")
    client = aws.boto3_client(params(profile="rtx"), "s3")
    assert client.meta.region_name == "sa-east-1"
    credentials = client._request_signer._credentials  # pylint: disable=protected-access
    assert credentials.access_key == "AKPROFILE"
    assert credentials.secret_key == "SKPROFILE"


def test_unknown_profile_is_reported():
    with pytest.raises(InvalidValueError) as info:
        aws.boto3_client(params(profile="nope"), "s3")
    assert "'nope'" in info.value.msg
    assert "~/.aws/config" in info.value.hint


def test_missing_region_for_regional_service():
    with pytest.raises(InvalidValueError) as info:
        aws.boto3_client(params(access_key="AK", secret_key="SK"), "ec2")
    assert "No AWS region" in info.value.msg
    assert "AWS_REGION" in info.value.hint


def test_bad_endpoint_url():
    with pytest.raises(InvalidValueError) as info:
        aws.boto3_client(params(region="eu-west-1", endpoint_url="not a url"), "s3")
    assert "endpoint_url" in info.value.msg


def test_missing_boto3(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingLibraryError) as info:
        aws.boto3_client(params(region="eu-west-1"), "s3")
    assert "boto3" in info.value.msg
    assert "python3-boto3" in info.value.hint and "pip install boto3" in info.value.hint
    assert info.value.details["missing_library"] == "boto3"


# --------------------------------------------------------------------------
# error_from_boto
# --------------------------------------------------------------------------


def client_error(code, message="Something", status=403):
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message},
         "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "REQ1"}},
        "PutObject",
    )


def test_error_from_client_error():
    err = aws.error_from_boto(client_error("AccessDenied", "Access Denied"), "uploading s3://b/k", details={"bucket": "b"})
    assert isinstance(err, RtxDrError) and not isinstance(err, ConnectionFailedError)
    assert err.msg == "AWS error while uploading s3://b/k: AccessDenied: Access Denied"
    assert "IAM policy" in err.hint
    assert err.details == {"bucket": "b", "error_code": "AccessDenied", "http_status": 403, "request_id": "REQ1"}


def test_error_from_unknown_client_error_code():
    err = aws.error_from_boto(client_error("Weird", status=500), "listing")
    assert err.details["error_code"] == "Weird"
    assert err.hint


def test_error_from_no_credentials():
    err = aws.error_from_boto(botocore.exceptions.NoCredentialsError(), "listing bucket b")
    assert "No usable AWS credentials" in err.msg
    assert "access_key" in err.hint
    assert err.details["error_type"] == "NoCredentialsError"


def test_error_from_endpoint_connection_error():
    err = aws.error_from_boto(botocore.exceptions.EndpointConnectionError(endpoint_url="http://x:1"), "listing")
    assert isinstance(err, ConnectionFailedError)
    assert err.server_down is True
    assert "http://x:1" in err.msg


def test_error_from_other_exception():
    err = aws.error_from_boto(RuntimeError("boom"), "doing x")
    assert err.msg == "Error while doing x: RuntimeError: boom"


# --------------------------------------------------------------------------
# Against a real S3-compatible endpoint on 127.0.0.1 (moto server)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint():
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield "http://%s:%d" % (host, port)
    server.stop()


def test_s3_round_trip_through_endpoint(moto_endpoint):
    client = aws.boto3_client(
        params(region="eu-west-1", endpoint_url=moto_endpoint, access_key="testing", secret_key="testing"), "s3"
    )
    client.create_bucket(Bucket="rtx-wal", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    client.put_object(Bucket="rtx-wal", Key="wal/000000010000000000000003", Body=b"x" * 10)
    listed = client.list_objects_v2(Bucket="rtx-wal", Prefix="wal/")
    assert [o["Key"] for o in listed["Contents"]] == ["wal/000000010000000000000003"]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.head_bucket(Bucket="no-such-bucket")
    err = aws.error_from_boto(info.value, "checking bucket no-such-bucket")
    assert err.details["http_status"] == 404


def test_no_such_bucket_from_real_endpoint(moto_endpoint):
    client = aws.boto3_client(
        params(region="eu-west-1", endpoint_url=moto_endpoint, access_key="testing", secret_key="testing"), "s3"
    )
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.list_objects_v2(Bucket="missing-bucket")
    err = aws.error_from_boto(info.value, "listing s3://missing-bucket")
    assert err.details["error_code"] == "NoSuchBucket"
    assert "bucket name" in err.hint


def test_unreachable_endpoint_is_connection_failed():
    client = aws.boto3_client(
        params(region="eu-west-1", endpoint_url="http://127.0.0.1:%d" % free_port(), access_key="a", secret_key="b"),
        "s3",
        config={"retries": {"total_max_attempts": 1, "mode": "standard"}, "connect_timeout": 2},
    )
    with pytest.raises(botocore.exceptions.BotoCoreError) as info:
        client.list_buckets()
    err = aws.error_from_boto(info.value, "listing buckets")
    assert isinstance(err, ConnectionFailedError)
    assert err.server_down is True
    assert "endpoint_url" in err.hint


# --------------------------------------------------------------------------
# describe_kms_key
# --------------------------------------------------------------------------


class _FakeKms:
    def __init__(self, meta=None, error=None):
        self.meta, self.error, self.calls = meta, error, []

    def describe_key(self, **kwargs):
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        return {"KeyMetadata": self.meta}


def _client_error(code):
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "DescribeKey")


def test_describe_kms_key_returns_the_metadata():
    meta = {"Arn": "arn:aws:kms:us-east-1:111122223333:key/k", "KeyState": "Enabled"}
    kms = _FakeKms(meta)
    assert aws.describe_kms_key(kms, "alias/x", "KMS key alias/x", "hint") is meta
    assert kms.calls == [{"KeyId": "alias/x"}]


@pytest.mark.parametrize("code", ["NotFoundException", "NotFound"])
def test_describe_kms_key_names_a_missing_key(code):
    with pytest.raises(RtxDrError) as info:
        aws.describe_kms_key(_FakeKms(error=_client_error(code)), "alias/x", "KMS key alias/x (option kms_key_id)",
                             "Check kms_key_id.")
    assert info.value.msg == "KMS key alias/x (option kms_key_id) does not exist in this account/region"
    assert info.value.hint == "Check kms_key_id."
    assert info.value.details == {"kms_key_id": "alias/x"}


def test_describe_kms_key_other_errors_say_what_was_looked_up():
    with pytest.raises(RtxDrError) as info:
        aws.describe_kms_key(_FakeKms(error=_client_error("AccessDeniedException")), "alias/x", "KMS key alias/x",
                             "unused")
    assert "looking up KMS key alias/x" in info.value.msg and "AccessDeniedException" in info.value.msg
    assert info.value.details["error_code"] == "AccessDeniedException"
    assert info.value.details["kms_key_id"] == "alias/x"


ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_the_three_key_lookups_share_the_not_found_message():
    missing = _client_error("NotFoundException")
    with pytest.raises(RtxDrError) as info:
        kms_key_arn(_FakeKms(error=missing), "alias/gone", scope=("test-missing", None))
    assert info.value.msg == "KMS key alias/gone (option kms_key_id) does not exist in this account/region"
    assert info.value.hint == "Check kms_key_id (alias/<name>, key id or ARN) and region."
    with pytest.raises(RtxDrError) as info:
        Verifier(None, "bkt", "p", kms=_FakeKms(error=missing)).key_arn("alias/gone", "expected_kms_key_id")
    assert info.value.msg == "KMS key alias/gone (option expected_kms_key_id) does not exist in this account/region"
    assert info.value.hint == "Check the key (alias/<name>, key id or ARN) and region."
    run = backup.BackupRun({"bucket": "bkt", "kms_key_id": "alias/gone"}, None, kms=_FakeKms(error=missing))
    run.sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/gone"}
    with pytest.raises(RtxDrError) as info:
        run._check_kms()  # pylint: disable=protected-access
    assert info.value.msg == "KMS key alias/gone (option kms_key_id) does not exist in this account/region"
    assert info.value.hint.endswith("or create the key first.")


def test_the_key_lookups_keep_their_own_caches_and_state_checks():
    kms = _FakeKms({"Arn": ARN, "KeyState": "Enabled", "Enabled": True})
    scope = ("test-cache", None)
    assert kms_key_arn(kms, "alias/k", scope=scope) == ARN and kms_key_arn(kms, "alias/k", scope=scope) == ARN
    assert kms_key_arn(kms, ARN, scope=scope) == ARN and len(kms.calls) == 1  # cached; an ARN is not looked up
    verifier = Verifier(None, "bkt", "p", kms=lambda: kms)  # a factory, called when first needed
    assert verifier.key_arn("alias/k") == ARN and verifier.key_arn(ARN) == ARN and len(kms.calls) == 2
    run = backup.BackupRun({"bucket": "bkt", "kms_key_id": "alias/k"}, None, kms=kms)
    run.sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/k"}
    run._check_kms()  # pylint: disable=protected-access
    assert run.kms_key_arn == ARN and run.sse["SSEKMSKeyId"] == ARN
    kms.meta = {"Arn": ARN, "KeyState": "PendingDeletion", "Enabled": False}
    with pytest.raises(RtxDrError, match="not usable: its state is PendingDeletion"):
        run._check_kms()  # pylint: disable=protected-access

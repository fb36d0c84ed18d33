# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the role rtx.dr.s3_storage, for real, against a moto server.

A module fixture starts the venv's ``moto_server`` on 127.0.0.1 and a free port
(killed at the end). Each test runs the venv's ``ansible-playbook`` on a
throwaway playbook that applies the role to localhost (connection local), with
``ANSIBLE_COLLECTIONS_PATH`` pointing at a temporary directory holding
``ansible_collections/rtx/dr`` -> this checkout, and then inspects the result
with boto3:

* KMS key with alias and rotation, exported as ``s3_storage_kms_key_arn``;
* bucket versioning, SSE-KMS with the key + bucket key, public access block,
  BucketOwnerEnforced, tags; the replica bucket in its own region with the key
  of that region;
* bucket policy content (moto stores policies but does not enforce them);
* lifecycle rules (days, prefixes, transitions, multipart abort, noncurrent);
* a second run reports changed=0; drift (versioning, policy, public access,
  encryption, lifecycle days) is put back;
* ``--check`` on new names creates nothing;
* an invalid bucket name fails with the naming-rules message before any AWS
  call;
* Object Lock on a new bucket (idempotent), and a clear failure, changing
  nothing, when the setting disagrees with an existing bucket.

Ansible's home and temporary directories are redirected into tmp directories so
that nothing is written to ~/.ansible.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from playbook_runner import ANSIBLE_PLAYBOOK, recap, run_playbook


boto3 = pytest.importorskip("boto3")

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
MOTO_SERVER = BIN / "moto_server"

CLUSTER = "rtx-test"
REGION = "us-east-1"
REPLICA_REGION = "eu-west-1"
BUCKET = f"rtx-dr-backups-{CLUSTER}"
REPLICA = "rtx-dr-replica-test"
ALIAS = "alias/rtx-dr-backups"
PREFIX = f"pgbackup/{CLUSTER}"
RULE_PREFIX = f"rtx-dr-pgbackup-{CLUSTER}-"
INVALID_NAME_MESSAGE = "invalid S3 bucket name"

pytestmark = pytest.mark.skipif(
    not (MOTO_SERVER.exists() and ANSIBLE_PLAYBOOK.exists()),
    reason="moto_server or ansible-playbook is not installed next to the test interpreter",
)


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------

class Runner:
    """Writes a playbook + inventory into a fresh directory and runs ansible-playbook."""

    def __init__(self, moto_url, collections_dir, tmp_path_factory):
        self.moto_url = moto_url
        self.collections_dir = collections_dir
        self.tmp_path_factory = tmp_path_factory

    def run(self, extra_vars=None, check=False):
        work = self.tmp_path_factory.mktemp("play")
        home = work / "ansible-home"
        (home / "tmp").mkdir(parents=True)
        (work / "ansible.cfg").write_text(
            "[defaults]\nretry_files_enabled = False\nstdout_callback = ansible.builtin.default\n"
        )
        inventory = {
            "all": {
                "hosts": {
                    "localhost": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": sys.executable,
                    },
                },
                "vars": {
                    "rtx_dr_aws_endpoint_url": self.moto_url,
                    "rtx_dr_aws_region": REGION,
                    "rtx_dr_cluster_name": CLUSTER,
                },
            },
        }
        (work / "inventory.json").write_text(json.dumps(inventory))
        playbook = [{
            "name": "Apply rtx.dr.s3_storage",
            "hosts": "localhost",
            "gather_facts": False,
            "roles": [{"role": "rtx.dr.s3_storage"}],
            "post_tasks": [{
                "name": "Show the exported key ARN",
                "ansible.builtin.debug": {"msg": "EXPORTED_KMS_ARN={{ s3_storage_kms_key_arn }}="},
            }],
        }]
        (work / "site.yml").write_text(json.dumps(playbook))
        (work / "extra.json").write_text(json.dumps(extra_vars or {}))
        return run_playbook(work, home, self.collections_dir, {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}, check=check)


@pytest.fixture(scope="module")
def runner(moto_url, collections_dir, tmp_path_factory):
    return Runner(moto_url, collections_dir, tmp_path_factory)


REPLICA_VARS = {"s3_storage_replica_bucket": REPLICA, "s3_storage_replica_region": REPLICA_REGION}


@pytest.fixture(scope="module")
def applied(runner):
    """The role with its defaults (+ a replica bucket), applied twice."""
    first = runner.run(REPLICA_VARS)
    assert first.returncode == 0, first.output
    second = runner.run(REPLICA_VARS)
    return first, second


def alias_target(kms, alias):
    for entry in kms.list_aliases()["Aliases"]:
        if entry["AliasName"] == alias:
            return entry["TargetKeyId"]
    return None


def bucket_names(s3):
    return {b["Name"] for b in s3.list_buckets()["Buckets"]}


# --------------------------------------------------------------------------
# default configuration
# --------------------------------------------------------------------------

def test_first_run_changes_things(applied):
    first = applied[0]
    assert recap(first)["changed"] > 0
    assert recap(first)["failed"] == 0


def test_second_run_changes_nothing(applied):
    second = applied[1]
    assert second.returncode == 0, second.output
    counts = recap(second)
    assert counts["changed"] == 0, second.output
    assert counts["failed"] == 0


def test_kms_key_alias_rotation_and_exported_fact(applied, aws):
    first, second = applied
    kms = aws("kms")
    key_id = alias_target(kms, ALIAS)
    assert key_id, "the KMS alias was not created"
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled"
    assert meta["KeyManager"] == "CUSTOMER"
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    for run in (first, second):
        assert f"EXPORTED_KMS_ARN={meta['Arn']}=" in run.stdout


def test_bucket_versioning_encryption_and_access(applied, aws):
    s3 = aws("s3")
    key_arn = aws("kms").describe_key(KeyId=ALIAS)["KeyMetadata"]["Arn"]
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn,
    }
    assert rule["BucketKeyEnabled"] is True
    assert s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "IgnorePublicAcls": True,
        "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
    }
    ownership = s3.get_bucket_ownership_controls(Bucket=BUCKET)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    assert tags == {"application": "rtx-dr", "cluster": CLUSTER}


def _policy(s3, bucket):
    return json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])


def test_bucket_policy_denies_plain_http(applied, aws):
    statements = {s["Sid"]: s for s in _policy(aws("s3"), BUCKET)["Statement"]}
    tls = statements["DenyInsecureTransport"]
    assert tls["Effect"] == "Deny"
    assert tls["Principal"] == "*"
    assert tls["Action"] == "s3:*"
    assert sorted(tls["Resource"]) == [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_bucket_policy_denies_non_kms_uploads(applied, aws):
    key_arn = aws("kms").describe_key(KeyId=ALIAS)["KeyMetadata"]["Arn"]
    policy = _policy(aws("s3"), BUCKET)
    statements = {s["Sid"]: s for s in policy["Statement"]}

    unencrypted = statements["DenyUnencryptedObjectUploads"]
    assert unencrypted["Effect"] == "Deny"
    assert unencrypted["Action"] == "s3:PutObject"
    assert unencrypted["Resource"] == f"arn:aws:s3:::{BUCKET}/*"
    assert unencrypted["Condition"]["StringNotEquals"] == {"s3:x-amz-server-side-encryption": "aws:kms"}

    other_key = statements["DenyOtherKmsKeys"]
    assert other_key["Action"] == "s3:PutObject"
    assert other_key["Condition"]["StringNotEquals"] == {
        "s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn,
    }
    assert statements["DenyCustomerProvidedKeys"]["Action"] == "s3:PutObject"


def test_bucket_policy_does_not_block_multipart_upload_parts(applied, aws):
    """UploadPart and CompleteMultipartUpload are authorised as s3:PutObject and
    never carry the encryption headers. Every PutObject deny must therefore only
    match when an encryption header is present (Null: false), else multipart
    uploads of base backups would get AccessDenied on UploadPart."""
    policy = _policy(aws("s3"), BUCKET)
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if "s3:PutObject" not in actions:
            continue
        condition = statement["Condition"]
        assert "Null" in condition, statement
        assert set(condition["Null"].values()) == {"false"}, statement
        for operator, keys in condition.items():
            if operator != "Null":
                assert set(keys) <= set(condition["Null"]), statement
            assert "IfExists" not in operator, statement


def test_lifecycle_rules(applied, aws):
    rules = {r["ID"]: r for r in aws("s3").get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert set(rules) == {
        f"{RULE_PREFIX}base", f"{RULE_PREFIX}wal", f"{RULE_PREFIX}logical", f"{RULE_PREFIX}wal-stream",
        "rtx-dr-bucket-housekeeping",
    }  # catalog: never expires by default, so no rule
    stream = rules[f"{RULE_PREFIX}wal-stream"]
    assert stream["Filter"] == {"Prefix": f"{PREFIX}/wal-stream/"} and stream["Expiration"] == {"Days": 2}
    assert stream["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1 and "Transitions" not in stream
    for name, expiration in (("base", 365), ("wal", 365), ("logical", 2555)):
        rule = rules[f"{RULE_PREFIX}{name}"]
        assert rule["Status"] == "Enabled"
        assert rule["Filter"] == {"Prefix": f"{PREFIX}/{name}/"}
        assert rule["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER"}]
        assert rule["Expiration"] == {"Days": expiration}
    housekeeping = rules["rtx-dr-bucket-housekeeping"]
    assert housekeeping["Status"] == "Enabled"
    assert housekeeping["Filter"].get("Prefix", "") == ""
    assert housekeeping["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert housekeeping["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert housekeeping["Expiration"] == {"ExpiredObjectDeleteMarker": True}


def test_replica_bucket_in_its_region_with_its_own_key(applied, aws):
    s3 = aws("s3", REPLICA_REGION)
    kms = aws("kms", REPLICA_REGION)
    assert s3.get_bucket_location(Bucket=REPLICA)["LocationConstraint"] == REPLICA_REGION
    key = kms.describe_key(KeyId=ALIAS)["KeyMetadata"]
    assert key["Arn"].startswith(f"arn:aws:kms:{REPLICA_REGION}:")
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    rule = s3.get_bucket_encryption(Bucket=REPLICA)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == key["Arn"]
    assert s3.get_bucket_versioning(Bucket=REPLICA)["Status"] == "Enabled"
    statements = {s["Sid"] for s in _policy(s3, REPLICA)["Statement"]}
    assert {"DenyInsecureTransport", "DenyUnencryptedObjectUploads"} <= statements
    rules = {r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=REPLICA)["Rules"]}
    assert f"{RULE_PREFIX}wal" in rules


def test_drift_is_put_back(applied, runner, aws):
    s3 = aws("s3")
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})
    s3.delete_bucket_policy(Bucket=BUCKET)
    s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
        "BlockPublicAcls": False, "IgnorePublicAcls": False,
        "BlockPublicPolicy": False, "RestrictPublicBuckets": False,
    })
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}],
    })
    rules = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    for rule in rules:
        if rule["ID"] == f"{RULE_PREFIX}base":
            rule["Expiration"] = {"Days": 3}
            rule.pop("Transitions")
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": rules})

    proc = runner.run(REPLICA_VARS)
    assert proc.returncode == 0, proc.output
    assert recap(proc)["changed"] > 0

    key_arn = aws("kms").describe_key(KeyId=ALIAS)["KeyMetadata"]["Arn"]
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    assert "DenyInsecureTransport" in {s["Sid"] for s in _policy(s3, BUCKET)["Statement"]}
    assert all(s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"].values())
    default = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert default["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert rules[f"{RULE_PREFIX}base"]["Expiration"] == {"Days": 365}
    assert rules[f"{RULE_PREFIX}base"]["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER"}]
    assert len(rules) == 5

    again = runner.run(REPLICA_VARS)
    assert recap(again)["changed"] == 0, again.output


# --------------------------------------------------------------------------
# check mode, validation, object lock, non-default lifecycle
# --------------------------------------------------------------------------

def test_check_mode_creates_nothing(runner, aws):
    bucket, alias = "rtx-dr-check-mode", "alias/rtx-dr-check-mode"
    proc = runner.run({"s3_storage_buckets": [{"name": bucket}], "s3_storage_kms_key_alias": alias},
                      check=True)
    assert proc.returncode == 0, proc.output
    assert recap(proc)["failed"] == 0
    assert "would be created" in proc.stdout
    assert bucket not in bucket_names(aws("s3"))
    assert alias_target(aws("kms"), alias) is None


@pytest.mark.parametrize("name", ["Rtx-Dr-Backups", "ab", "rtx_dr_backups", "rtx..dr", "192.168.0.1",
                                  "xn--rtx-dr", "rtx-dr-", "a" * 64, "rtx-dr-s3alias-x-s3alias"])
def test_invalid_bucket_name_fails_before_any_aws_call(runner, aws, name):
    alias = "alias/rtx-dr-never-created"
    before = bucket_names(aws("s3"))
    proc = runner.run({"s3_storage_buckets": [{"name": name}], "s3_storage_kms_key_alias": alias})
    assert proc.returncode != 0
    assert INVALID_NAME_MESSAGE in proc.output
    assert f"'{name}'" in proc.output
    assert recap(proc)["changed"] == 0
    assert bucket_names(aws("s3")) == before
    assert alias_target(aws("kms"), alias) is None


def test_replica_without_region_fails_clearly(runner, aws):
    proc = runner.run({"s3_storage_replica_bucket": "rtx-dr-replica-no-region"})
    assert proc.returncode != 0
    assert "s3_storage_replica_region" in proc.output
    assert "rtx-dr-replica-no-region" not in bucket_names(aws("s3"))


def test_object_lock_and_custom_lifecycle(runner, aws):
    bucket = "rtx-dr-locked-test"
    extra = {
        "s3_storage_buckets": [{"name": bucket}],
        "s3_storage_object_lock": True,
        "s3_storage_object_lock_retention_days": 35,
        "s3_storage_logical_deep_archive_days": 180,
        "s3_storage_catalog_expiration_days": 2555,
        "s3_storage_noncurrent_version_expiration_days": 14,
        "s3_storage_base_expiration_days": 400,
    }
    first = runner.run(extra)
    assert first.returncode == 0, first.output
    s3 = aws("s3")
    lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    assert lock["Rule"]["DefaultRetention"]["Days"] == 35
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules[f"{RULE_PREFIX}logical"]["Transitions"] == [
        {"Days": 30, "StorageClass": "GLACIER"}, {"Days": 180, "StorageClass": "DEEP_ARCHIVE"},
    ]
    assert rules[f"{RULE_PREFIX}catalog"]["Filter"] == {"Prefix": f"{PREFIX}/catalog/"}
    assert rules[f"{RULE_PREFIX}catalog"]["Expiration"] == {"Days": 2555}
    assert "Transitions" not in rules[f"{RULE_PREFIX}catalog"]
    # WAL follows the base backups unless told otherwise.
    assert rules[f"{RULE_PREFIX}base"]["Expiration"] == {"Days": 400}
    assert rules[f"{RULE_PREFIX}wal"]["Expiration"] == {"Days": 400}
    assert rules["rtx-dr-bucket-housekeeping"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 14}

    second = runner.run(extra)
    assert second.returncode == 0, second.output
    assert recap(second)["changed"] == 0, second.output

    # The catalog rule goes away again when it is switched off.
    third = runner.run(dict(extra, s3_storage_catalog_expiration_days=0))
    assert third.returncode == 0, third.output
    rules = {r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert f"{RULE_PREFIX}catalog" not in rules
    assert f"{RULE_PREFIX}logical" in rules

    # Object Lock cannot be turned off: clear failure, nothing changed.
    policy_before = s3.get_bucket_policy(Bucket=bucket)["Policy"]
    mismatch = runner.run(dict(extra, s3_storage_object_lock=False,
                               s3_storage_policy_deny_insecure_transport=False))
    assert mismatch.returncode != 0
    assert f"bucket {bucket} has Object Lock ENABLED" in mismatch.output
    assert recap(mismatch)["changed"] == 0
    assert s3.get_bucket_policy(Bucket=bucket)["Policy"] == policy_before


def test_object_lock_cannot_be_added_to_an_existing_bucket(applied, runner, aws):
    proc = runner.run(dict(REPLICA_VARS, s3_storage_object_lock=True))
    assert proc.returncode != 0
    assert f"bucket {BUCKET} has Object Lock DISABLED" in proc.output
    assert "put-object-lock-configuration" in proc.output
    assert recap(proc)["changed"] == 0
    assert "ObjectLockConfiguration" not in _object_lock_or_empty(aws("s3"), BUCKET)


def _object_lock_or_empty(s3, bucket):
    try:
        return s3.get_object_lock_configuration(Bucket=bucket)
    except s3.exceptions.ClientError:
        return {}

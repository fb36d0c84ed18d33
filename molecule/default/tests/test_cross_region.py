"""Cross-region copies on the lab (docs/cross_region.md): the replica bucket in us-west-2 receives every backup taken
by backup_full.yml (objects with their SHA256, catalog record last) and every WAL segment the primary archives (dual
push by the WAL agent, the west region's KMS key); a verify-only restore drill on the west standby reads the replica
bucket alone."""

import hashlib
import json

import pytest

from conftest import (BUCKET, PREFIX, PRIMARY, REPLICA, SYNC_STANDBY, WEST_STANDBY, aws_client, get_host,
                      object_sha256, psql, wait_for)
from labtest import playbook

AGENT_CONFIG = "/etc/rtx-dr/agent.json"


def said(result):
    """The playbook's output with every run of whitespace made one space (the callback wraps long lines)."""
    return " ".join(result.stdout.split())


def east():
    return aws_client("s3", "us-east-1")


def west():
    return aws_client("s3", "us-west-2")


def key_arn(region):
    return aws_client("kms", region).describe_key(KeyId="alias/rtx-dr-backups")["KeyMetadata"]["Arn"]


def record(s3, bucket, backup_id):
    return json.loads(s3.get_object(Bucket=bucket, Key="%s/catalog/%s.json" % (PREFIX, backup_id))["Body"].read())


def newest_complete(s3, bucket):
    ids = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX + "/catalog/"):
        ids.extend(o["Key"].rsplit("/", 1)[-1][:-5] for o in page.get("Contents", []))
    for backup_id in sorted(ids, reverse=True):
        rec = record(s3, bucket, backup_id)
        if rec["status"] == "complete" and rec["kind"] == "physical":
            return rec
    return None


def archived(primary):
    return psql(primary, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")


@pytest.fixture(scope="module")
def replicated(primary):
    result = playbook("backup_full.yml")
    assert result.returncode == 0, result.stdout[-4000:]
    rec = newest_complete(east(), BUCKET)
    assert rec is not None
    # The callback wraps long lines: compare with every run of whitespace made one space.
    return {"record": rec, "output": said(result)}


def test_agent_configuration_names_the_replica_and_the_read_order():
    for name, order in ((PRIMARY, "primary_first"), (SYNC_STANDBY, "primary_first"), (WEST_STANDBY, "replica_first")):
        config = json.loads(get_host(name).file(AGENT_CONFIG).content_string)
        assert config["wal"]["replica_bucket"] == REPLICA and config["wal"]["replica_region"] == "us-west-2", name
        assert config["wal"]["replica_mode"] == "sync" and config["wal"]["fetch_order"] == order, name
        assert not [k for k in config if k.startswith("replica")], name


def test_backup_full_copies_the_backup_to_the_replica(replicated):
    rec = replicated["record"]
    assert "Copy the backup to the replica region" in replicated["output"]
    assert "Replica: s3://%s (us-west-2): %s copied" % (REPLICA, rec["backup_id"]) in replicated["output"], \
        replicated["output"][-3000:]
    copy = record(west(), REPLICA, rec["backup_id"])
    assert copy["status"] == "complete" and copy["objects"] == rec["objects"]
    assert copy["bucket"] == REPLICA and copy["replica_of"]["bucket"] == BUCKET
    west_arn = key_arn("us-west-2")
    assert copy["kms_key_arn"] == west_arn != key_arn("us-east-1")
    for obj in rec["objects"]:
        got = west().get_object(Bucket=REPLICA, Key=obj["key"])
        assert got["ServerSideEncryption"] == "aws:kms" and got["SSEKMSKeyId"] == west_arn, obj["key"]
        assert object_sha256(west(), REPLICA, obj["key"], got) == obj["sha256"], obj["key"]
        digest = hashlib.sha256()
        for chunk in iter(lambda body=got["Body"]: body.read(1 << 20), b""):
            digest.update(chunk)
        assert digest.hexdigest() == obj["sha256"] and got["ContentLength"] == obj["size"], obj["key"]


def test_a_segment_archived_by_the_primary_is_in_the_replica(primary):
    psql(primary, "CREATE TABLE IF NOT EXISTS public.xr_probe (t timestamptz); INSERT INTO public.xr_probe VALUES (now())",
         db="rtx")
    segment = psql(primary, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    failed_before = psql(primary, "SELECT failed_count FROM pg_stat_archiver")
    psql(primary, "SELECT pg_switch_wal()")
    assert wait_for(lambda: archived(primary) >= segment, timeout=120), archived(primary)
    # sync mode: archived means stored in both regions
    assert psql(primary, "SELECT failed_count FROM pg_stat_archiver") == failed_before
    key = "%s/wal/%s/%s.zst" % (PREFIX, segment[:8], segment)
    source = east().head_object(Bucket=BUCKET, Key=key)
    copy = west().head_object(Bucket=REPLICA, Key=key)
    assert copy["Metadata"]["raw-sha256"] == source["Metadata"]["raw-sha256"]
    assert copy["Metadata"]["sha256"] == source["Metadata"]["sha256"]
    assert copy["SSEKMSKeyId"] == key_arn("us-west-2") and source["SSEKMSKeyId"] == key_arn("us-east-1")


def test_backup_incremental_finds_nothing_missing_in_the_replica(replicated):  # pylint: disable=unused-argument
    result = playbook("backup_incremental.yml")
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Repair the replica region" in said(result)
    assert "Replica: s3://%s: copied" % REPLICA in said(result), result.stdout[-3000:]


def test_restore_drill_on_the_west_host_reads_only_the_replica(replicated):  # pylint: disable=unused-argument
    result = playbook("restore.yml", "-e", "restore_host=%s" % WEST_STANDBY, "-e", "restore_verify_only=true",
                      "-e", "restore_wal_fetch_order=replica_only")
    assert result.returncode == 0, result.stdout[-5000:]
    assert "Read from: s3://%s (us-west-2); WAL fetch order replica_only" % REPLICA in said(result), \
        result.stdout[-4000:]
    assert "pg_verifybackup=True" in said(result) and "pg_amcheck=True" in said(result), result.stdout[-3000:]
    latest = newest_complete(west(), REPLICA)
    assert "Restore" in said(result) and latest["backup_id"] in said(result)
    row = psql(get_host(PRIMARY), "SELECT status || '|' || verify_only || '|' || (details -> 'plan' ->> 'bucket')"
               " FROM dr.restore_history WHERE destination_host = '%s' ORDER BY id DESC LIMIT 1" % WEST_STANDBY,
               db="rtx")
    assert row == "complete|true|%s" % REPLICA, row

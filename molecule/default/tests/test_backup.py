"""Base backups to the lab's S3 endpoint, verified, restored by hand, and the failure cases.

These tests run the collection's playbooks against the Molecule inventory and
inspect S3 directly with boto3 (the same endpoint the modules use).
"""

import json
import subprocess
import tempfile

import pytest
import zstandard

from conftest import BUCKET, PREFIX, PRIMARY, get_host, object_sha256, psql, s3
from labtest import playbook

SCRATCH = "mol-app-west-1"
PGBENCH_SCALE = 10


def records():
    client = s3()
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/catalog/"):
        for obj in page.get("Contents", []):
            out.append(json.loads(client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()))
    return sorted(out, key=lambda r: r["backup_id"])


@pytest.fixture(scope="module")
def backup(primary):
    # A database of a few hundred MB: pgbench data (compressible) plus random bytes (not).
    db = primary.run("runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -i -q -s %s rtx", str(PGBENCH_SCALE))
    assert db.rc == 0, db.stderr
    psql(primary, "DROP TABLE IF EXISTS public.backup_probe; "
                  "CREATE TABLE public.backup_probe AS SELECT g AS id, decode(string_agg(md5(random()::text), ''), 'hex') AS blob "
                  "FROM generate_series(1, 2000) g, generate_series(1, 2000) h GROUP BY g", db="rtx")
    probe = psql(primary, "SELECT sum(length(blob)) FROM public.backup_probe", db="rtx")
    result = playbook("backup_full.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    complete = [r for r in records() if r["status"] == "complete" and r["kind"] == "physical"]
    assert complete, "no complete physical backup in the catalog"
    return {"record": complete[-1], "probe": probe, "output": result.stdout}


def test_backup_is_complete_encrypted_and_checksummed(backup):
    record = backup["record"]
    assert record["size_raw_bytes"] > 200 * 1024 * 1024
    assert record["system_identifier"] and record["timeline"] == 1
    assert record["start_wal"] and record["stop_wal"] and record["wal_included"] is True
    client = s3()
    for obj in record["objects"]:
        head = client.head_object(Bucket=BUCKET, Key=obj["key"])
        assert head["ContentLength"] == obj["size"]
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == record["kms_key_arn"]
        assert object_sha256(client, BUCKET, obj["key"], head) == obj["sha256"], obj["key"]
    # the base tar is a multipart upload: its sha256 is a tag, and it was not copied onto itself to put it in the
    # metadata (the versioned bucket would keep the upload as a second, noncurrent version)
    base = next(obj for obj in record["objects"] if obj["role"] == "base")
    versions = client.list_object_versions(Bucket=BUCKET, Prefix=base["key"]).get("Versions") or []
    assert len(versions) == 1, versions
    assert "Verified from S3: True" in backup["output"]
    # The audit mirror on the primary.
    assert psql(get_host(PRIMARY), "SELECT status FROM dr.backup_history WHERE backup_id = '%s'"
                % record["backup_id"], db="rtx") == "complete"


def test_backup_restores_by_hand_into_a_scratch_container(backup):
    record = backup["record"]
    base = next(o for o in record["objects"] if o["role"] == "base")
    body = s3().get_object(Bucket=BUCKET, Key=base["key"])["Body"]
    with tempfile.NamedTemporaryFile(suffix=".tar") as tar:
        zstandard.ZstdDecompressor().copy_stream(body, tar)
        tar.flush()
        copied = subprocess.run(["docker", "cp", tar.name, "%s:/var/tmp/base.tar" % SCRATCH],
                                capture_output=True, text=True, check=False)
        assert copied.returncode == 0, copied.stderr
    scratch = get_host(SCRATCH)
    steps = [
        "rm -rf /var/tmp/restore && mkdir -p /var/tmp/restore",
        "tar -C /var/tmp/restore -xf /var/tmp/base.tar && rm /var/tmp/base.tar",
        # Config lives in /etc on Debian: give the restored copy a minimal one.
        "printf '' > /var/tmp/restore/postgresql.conf",
        "printf 'local all all trust\\n' > /var/tmp/restore/pg_hba.conf",
        "printf '' > /var/tmp/restore/postgresql.auto.conf",
        "chown -R postgres:postgres /var/tmp/restore && chmod 700 /var/tmp/restore",
        "runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D /var/tmp/restore -w -t 120 -l /var/tmp/restore.log "
        "-o \"-p 5499 -c listen_addresses='' -c unix_socket_directories=/tmp\" start",
    ]
    for step in steps:
        cmd = scratch.run(step)
        assert cmd.rc == 0, "%s: %s %s" % (step, cmd.stdout, cmd.stderr)
    try:
        count = scratch.run("runuser -u postgres -- psql -h /tmp -p 5499 -XAtq -d rtx -c "
                            "'SELECT count(*) FROM pgbench_accounts'")
        probe = scratch.run("runuser -u postgres -- psql -h /tmp -p 5499 -XAtq -d rtx -c "
                            "'SELECT sum(length(blob)) FROM public.backup_probe'")
        assert count.stdout.strip() == str(PGBENCH_SCALE * 100000), count.stderr
        assert probe.stdout.strip() == backup["probe"], probe.stderr
    finally:
        scratch.run("runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D /var/tmp/restore -m fast stop")
        scratch.run("rm -rf /var/tmp/restore")


def test_wrong_kms_key_fails_before_data_moves(backup):
    before = [r["backup_id"] for r in records()]
    keys_before = {o["Key"] for o in s3().list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/base/").get("Contents", [])}
    result = playbook("backup_full.yml", "-e", "rtx_dr_backup_kms_key_id=alias/rtx-dr-no-such-key")
    assert result.returncode != 0
    assert "alias/rtx-dr-no-such-key" in result.stdout and "kms_key_id" in result.stdout
    keys_after = {o["Key"] for o in s3().list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/base/").get("Contents", [])}
    assert keys_after == keys_before
    assert [r["backup_id"] for r in records()] == before
    assert not s3().list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_corrupted_object_is_named_by_verification(backup):
    record = backup["record"]
    manifest = next(o for o in record["objects"] if o["role"] == "manifest")
    client = s3()
    head = client.head_object(Bucket=BUCKET, Key=manifest["key"])
    data = bytearray(client.get_object(Bucket=BUCKET, Key=manifest["key"])["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=BUCKET, Key=manifest["key"], Body=bytes(data), Metadata=head["Metadata"],
                      ServerSideEncryption="aws:kms", SSEKMSKeyId=record["kms_key_arn"])
    result = playbook("verify_backups.yml", "-e", "verify_backup_id=%s" % record["backup_id"])
    assert result.returncode != 0
    assert manifest["key"] in result.stdout
    assert "checksum" in result.stdout

"""Point-in-time restore (playbooks/restore.yml, rtx.dr.backup_restore) on the lab: exact targets, latest with table
checksums, a WAL gap found before anything is touched, and a corrupted backup failing a verify-only drill without
leaving a scratch server behind.

Rows are committed one transaction at a time with the client's clock read before each insert and after each commit,
so that a time target between two commits is exact, not "to the minute".
"""

import json
from urllib.parse import urlencode

import pytest

from conftest import (ACCESS, BUCKET, ENDPOINT, PREFIX, PRIMARY, SECRET, WEST_STANDBY, get_host, psql, s3,
                      wait_for)
from labtest import ansible_module, playbook

DRILL_HOST = WEST_STANDBY
DRILLS = "/var/lib/postgresql/rtx-dr-drills"
ROWS = "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM public.pitr_probe"


def drill(*extra, checks=None):
    # These tests damage the PRIMARY bucket on purpose: read it alone (a west host would read the replica bucket
    # first by default, see test_cross_region.py).
    args = ["-e", "restore_host=%s" % DRILL_HOST, "-e", "restore_verify_only=true", "-e", "restore_bucket=%s" % BUCKET,
            "-e", "restore_wal_fetch_order=primary_only"]
    if checks is not None:
        args += ["-e", json.dumps({"restore_sql_checks": checks})]
    return playbook("restore.yml", *(args + list(extra)))


def rows_check(expect):
    return [{"name": "pitr rows", "database": "rtx", "sql": ROWS, "expect": expect}]


def restore_row(restore_like):
    return psql(get_host(PRIMARY), "SELECT status || '|' || verify_only || '|' || coalesce(rto_seconds::text, '')"
                " || '|' || target_type FROM dr.restore_history WHERE restore_id LIKE '%s' ORDER BY id DESC LIMIT 1"
                % restore_like, db="rtx")


def no_scratch_left():
    host = get_host(DRILL_HOST)
    listing = host.run("ls -A %s 2>/dev/null" % DRILLS).stdout.split()
    procs = host.run("pgrep -f 'rtx-dr-dril[l]s' || true").stdout.strip()
    return listing == [] and procs == ""


def archived(primary):
    return psql(primary, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")


def switch_and_wait(primary):
    segment = psql(primary, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    psql(primary, "SELECT pg_switch_wal()")
    assert wait_for(lambda: archived(primary) >= segment, timeout=120), (archived(primary), segment)
    return segment


@pytest.fixture(scope="module")
def pitr(primary):
    psql(primary, "DROP TABLE IF EXISTS public.pitr_probe; CREATE TABLE public.pitr_probe (id int PRIMARY KEY, "
                  "xid xid8 DEFAULT pg_current_xact_id())", db="rtx")
    result = playbook("backup_full.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    marks = {}
    for i in range(1, 7):
        before = psql(primary, "SELECT clock_timestamp()")
        xid = psql(primary, "INSERT INTO public.pitr_probe (id) VALUES (%d) RETURNING xid" % i, db="rtx")
        after = psql(primary, "SELECT clock_timestamp() || '|' || pg_current_wal_lsn()")
        marks[i] = {"before": before, "after": after.split("|")[0], "lsn": after.split("|")[1], "xid": xid}
    segment = switch_and_wait(primary)
    return {"marks": marks, "segment": segment, "backup_output": result.stdout}


def midpoint(a, b):
    return psql(get_host(PRIMARY), "SELECT ('%s'::timestamptz + ('%s'::timestamptz - '%s'::timestamptz) / 2)::text"
                % (a, b, a))


def test_time_target_is_exact(pitr):
    marks = pitr["marks"]
    target = midpoint(marks[3]["after"], marks[4]["before"])
    result = drill("-e", "restore_target=time", "-e", json.dumps({"restore_target_value": target}), checks=rows_check("1,2,3"))
    assert result.returncode == 0, result.stdout[-5000:]
    assert "pitr rows=True" in result.stdout and "target_reached=True" in result.stdout
    assert restore_row("R%%-" + DRILL_HOST).startswith("complete|true|")
    assert no_scratch_left()


def test_lsn_target_is_exact(pitr):
    marks = pitr["marks"]
    result = drill("-e", "restore_target=lsn", "-e", "restore_target_value=%s" % marks[4]["lsn"],
                   checks=rows_check("1,2,3,4"))
    assert result.returncode == 0, result.stdout[-5000:]
    assert "pitr rows=True" in result.stdout


def test_xid_target_exclusive(pitr):
    marks = pitr["marks"]
    result = drill("-e", "restore_target=xid", "-e", "restore_target_value=%s" % marks[3]["xid"],
                   "-e", "restore_target_inclusive=false", checks=rows_check("1,2"))
    assert result.returncode == 0, result.stdout[-5000:]
    assert "before commit of transaction %s" % marks[3]["xid"] in result.stdout


def test_latest_has_the_primarys_table_checksums(pitr, primary):
    bench = primary.run("runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -i -q -s 2 rtx"
                        " && runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -n -c 4 -T 20 rtx")
    assert bench.rc == 0, bench.stderr
    checksum = ("SELECT md5(string_agg(a.aid || ':' || a.abalance, ',' ORDER BY a.aid)) || '/' || "
                "(SELECT count(*) FROM pgbench_history) FROM pgbench_accounts a")
    expected = psql(primary, checksum, db="rtx")
    switch_and_wait(primary)
    result = drill("-e", "restore_target=latest",
                   checks=[{"name": "accounts checksum", "database": "rtx", "sql": checksum, "expect": expected}])
    assert result.returncode == 0, result.stdout[-5000:]
    assert "accounts checksum=True" in result.stdout
    assert no_scratch_left()


def test_a_missing_segment_is_named_and_nothing_is_touched(pitr, primary):
    client = s3()
    segment = pitr["segment"]
    key = "%s/wal/%s/%s.zst" % (PREFIX, segment[:8], segment)
    head = client.head_object(Bucket=BUCKET, Key=key)
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client.delete_object(Bucket=BUCKET, Key=key)
    try:
        switch_and_wait(primary)  # a later segment exists: a gap, not just the end of the archive
        status = ansible_module(PRIMARY, "rtx.dr.wal_archive_status", {
            "bucket": BUCKET, "prefix": PREFIX, "endpoint_url": ENDPOINT, "region": "us-east-1",
            "access_key": ACCESS, "secret_key": SECRET, "login_unix_socket": "/var/run/postgresql"})
        assert status.returncode != 0 and segment in status.stdout, status.stdout[-3000:]
        later = psql(primary, "SELECT (now() - interval '1 second')::text")
        result = drill("-e", "restore_target=time", "-e", json.dumps({"restore_target_value": later}))
        assert result.returncode != 0
        assert segment in result.stdout and "Nothing was touched" in result.stdout, result.stdout[-4000:]
        assert no_scratch_left()

        # The 6-hourly WAL sync re-pushes it from pg_wal while the primary still has it.
        in_pg_wal = primary.file("/var/lib/postgresql/15/main/pg_wal/%s" % segment).exists
        sync = playbook("backup_incremental.yml")
        if in_pg_wal:
            assert sync.returncode == 0, sync.stdout[-4000:]
            assert "Pushed from pg_wal: %s" % segment in sync.stdout and "Missing now: nothing" in sync.stdout
            again = client.head_object(Bucket=BUCKET, Key=key)
            assert again["Metadata"]["raw-sha256"] == head["Metadata"]["raw-sha256"]
        else:  # recycled by a checkpoint meanwhile: the playbook must say so
            assert sync.returncode != 0 and "take a new full backup" in sync.stdout, sync.stdout[-4000:]
    finally:
        if not client.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount"):
            client.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=head["Metadata"],
                              ServerSideEncryption="aws:kms", SSEKMSKeyId=head["SSEKMSKeyId"])


def test_restore_over_a_running_server_is_refused(pitr):
    data_before = get_host(DRILL_HOST).run("stat -c %Y /var/lib/postgresql/15/main/PG_VERSION").stdout
    result = playbook("restore.yml", "-e", "restore_host=%s" % DRILL_HOST)
    assert result.returncode != 0
    assert "runs PostgreSQL" in result.stdout and "restore_confirm=%s" % DRILL_HOST in result.stdout
    assert psql(get_host(DRILL_HOST), "SELECT pg_is_in_recovery()") == "t"
    assert get_host(DRILL_HOST).run("stat -c %Y /var/lib/postgresql/15/main/PG_VERSION").stdout == data_before


def test_verify_only_of_a_corrupted_backup_fails_and_leaves_nothing_running(pitr):
    client = s3()
    records = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/catalog/"):
        for obj in page.get("Contents", []):
            records.append(json.loads(client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()))
    record = sorted((r for r in records if r["status"] == "complete" and r["kind"] == "physical"),
                    key=lambda r: r["backup_id"])[-1]
    base = next(o for o in record["objects"] if o["role"] == "base")
    head = client.head_object(Bucket=BUCKET, Key=base["key"])
    # metadata and tags (the sha256 of a multipart upload is a tag) kept: only the bytes change
    tags = client.get_object_tagging(Bucket=BUCKET, Key=base["key"])["TagSet"]
    tagging = urlencode({tag["Key"]: tag["Value"] for tag in tags})
    original = client.get_object(Bucket=BUCKET, Key=base["key"])["Body"].read()
    damaged = bytearray(original)
    damaged[len(damaged) - 4096] ^= 0xFF
    client.put_object(Bucket=BUCKET, Key=base["key"], Body=bytes(damaged), Metadata=head["Metadata"],
                      ServerSideEncryption="aws:kms", SSEKMSKeyId=head["SSEKMSKeyId"], Tagging=tagging)
    try:
        result = drill("-e", "restore_backup_id=%s" % record["backup_id"], "-e", "restore_target=backup")
        assert result.returncode != 0
        assert base["key"] in result.stdout, result.stdout[-4000:]
        assert no_scratch_left()
        assert restore_row("R%%-" + DRILL_HOST).startswith("failed|true|")
    finally:
        client.put_object(Bucket=BUCKET, Key=base["key"], Body=original, Metadata=head["Metadata"],
                          ServerSideEncryption="aws:kms", SSEKMSKeyId=head["SSEKMSKeyId"], Tagging=tagging)


def test_verify_backups_deep_restores_the_verified_backup(pitr):
    # verify_backups.yml verify_deep=true: the S3 checks, then the newest verified physical backup is restored into
    # a scratch server by restore.yml (verify_only, target = that backup), recorded, and torn down.
    before = psql(get_host(PRIMARY), "SELECT count(*) FROM dr.restore_history", db="rtx")
    result = playbook("verify_backups.yml", "-e", "verify_deep=true", "-e", "verify_deep_host=%s" % DRILL_HOST,
                      "-e", "restore_bucket=%s" % BUCKET, "-e", "restore_wal_fetch_order=primary_only")
    said = " ".join(result.stdout.split())
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Deep verification next: verify-only restore of " in said
    backup_id = said.split("Deep verification next: verify-only restore of ", 1)[1].split()[0]
    assert int(psql(get_host(PRIMARY), "SELECT count(*) FROM dr.restore_history", db="rtx")) == int(before) + 1
    row = psql(get_host(PRIMARY), "SELECT status || '|' || verify_only || '|' || target_type || '|' || destination_host || '|' || "
               "backup_id FROM dr.restore_history ORDER BY id DESC LIMIT 1", db="rtx")
    assert row == "complete|true|backup|%s|%s" % (DRILL_HOST, backup_id), row
    assert no_scratch_left()

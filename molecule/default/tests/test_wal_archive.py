"""Continuous WAL archiving on the lab: archive_command (rtx.dr.backup_schedule) pushes every segment of the primary
to S3 with SSE-KMS and SHA256; the restore side (wal_agent fetch) gets back the same bytes on another host."""

import base64
import hashlib
import json
import re

from conftest import ACCESS, AGENT, BUCKET, ENDPOINT, PREFIX, PRIMARY, STANDBYS, get_host, psql, s3, wait_for
from labtest import ansible_module


def archiver(host):
    row = psql(host, "SELECT archived_count || '|' || failed_count || '|' || coalesce(last_archived_wal, '')"
                     " FROM pg_stat_archiver")
    archived, failed, last = row.split("|")
    return int(archived), int(failed), last


def test_archive_settings_on_every_database_host():
    for name in [PRIMARY] + STANDBYS:
        host = get_host(name)
        assert psql(host, "SHOW archive_mode") == "on", name
        assert "wal_agent" in psql(host, "SHOW archive_command") and "push %p" in psql(host, "SHOW archive_command")
        assert psql(host, "SHOW archive_timeout") == "1min", name


def test_a_switched_segment_reaches_s3_encrypted_and_checksummed():
    primary = get_host(PRIMARY)
    _archived, failed_before, _last = archiver(primary)
    psql(primary, "CREATE TABLE IF NOT EXISTS public.wal_probe (t timestamptz); INSERT INTO public.wal_probe VALUES (now())")
    segment = psql(primary, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    psql(primary, "SELECT pg_switch_wal()")
    assert wait_for(lambda: archiver(primary)[2] >= segment, timeout=90), archiver(primary)
    assert archiver(primary)[1] == failed_before, "archive_command failed meanwhile: %s" % (archiver(primary),)
    key = "%s/wal/%s/%s.zst" % (PREFIX, segment[:8], segment)
    head = s3().head_object(Bucket=BUCKET, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].startswith("arn:aws:kms:")
    local = primary.run("sha256sum /var/lib/postgresql/15/main/pg_wal/%s" % segment)
    assert local.rc == 0, local.stderr
    assert head["Metadata"]["raw-sha256"] == local.stdout.split()[0]
    stored = s3().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert head["Metadata"]["sha256"] == hashlib.sha256(stored).hexdigest()

    # The restore side on another host: the same bytes, checked against the archive's checksums.
    standby = get_host(STANDBYS[0])
    fetched = standby.run("runuser -u postgres -- sh -c '%s fetch %s /tmp/%s && sha256sum /tmp/%s; rm -f /tmp/%s'"
                          % (AGENT, segment, segment, segment, segment))
    assert fetched.rc == 0, fetched.stderr
    assert fetched.stdout.split()[0] == head["Metadata"]["raw-sha256"]
    missing = standby.run("runuser -u postgres -- sh -c '%s fetch 0000000100000000FFFFFFFF /tmp/none'" % AGENT)
    assert missing.rc == 1 and not standby.file("/tmp/none").exists


def test_the_health_agent_reports_the_archiver():
    primary = get_host(PRIMARY)
    assert primary.run("systemctl start rtx-dr-health.service").rc == 0
    text = primary.file("/var/lib/rtx/metrics/rtx_dr_health.prom").content_string
    assert "rtx_dr_wal_archive_enabled 1" in text
    assert "rtx_dr_wal_archive_failed_total" in text and "rtx_dr_wal_archive_last_archived_timestamp_seconds 0\n" not in text


def test_endpoint_down_under_writes_then_archiving_resumes_without_gap():
    """The AWS endpoint unreachable for the archive command (its configuration points at a closed port): PostgreSQL
    keeps the segments (.ready), the failures are counted in pg_stat_archiver; once the endpoint is back every
    segment reaches S3 and wal_archive_status finds no gap."""
    primary = get_host(PRIMARY)
    config = "/etc/rtx-dr/agent.json"
    original = primary.file(config).content_string
    broken = json.loads(original)
    broken["endpoint_url"] = ENDPOINT.rsplit(":", 1)[0] + ":1"  # nothing listens on port 1

    def write(text):
        encoded = base64.b64encode(text.encode()).decode()
        cmd = primary.run("echo %s | base64 -d > %s" % (encoded, config))  # keeps owner and mode
        assert cmd.rc == 0, cmd.stderr

    _archived, failed_before, _last = archiver(primary)
    written = []
    write(json.dumps(broken))
    try:
        psql(primary, "CREATE TABLE IF NOT EXISTS public.wal_outage (id int, t timestamptz DEFAULT now())", db="rtx")
        for i in range(3):
            psql(primary, "INSERT INTO public.wal_outage (id) SELECT g FROM generate_series(1, 2000) g", db="rtx")
            written.append(psql(primary, "SELECT pg_walfile_name(pg_current_wal_lsn())"))
            psql(primary, "SELECT pg_switch_wal()")
        assert wait_for(lambda: archiver(primary)[1] > failed_before, timeout=120), archiver(primary)
        ready = int(psql(primary, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"))
        assert ready >= 1, "PostgreSQL must keep the unarchived segments"
        assert psql(primary, "SELECT last_failed_wal IS NOT NULL FROM pg_stat_archiver") == "t"
    finally:
        write(original)
    psql(primary, "SELECT pg_switch_wal()")  # wakes the archiver up at once
    assert wait_for(lambda: archiver(primary)[2] >= written[-1], timeout=180), archiver(primary)
    keys = {o["Key"].rsplit("/", 1)[-1][:24]
            for page in s3().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/wal/")
            for o in page.get("Contents", [])}
    assert set(written) <= keys, set(written) - keys
    status = ansible_module(PRIMARY, "rtx.dr.wal_archive_status", {
        "bucket": BUCKET, "prefix": PREFIX, "endpoint_url": ENDPOINT, "region": "us-east-1",
        "access_key": ACCESS, "secret_key": "molecule-secret-key", "since": "latest_backup",
        "login_unix_socket": "/var/run/postgresql"})
    assert status.returncode == 0, status.stdout[-3000:]
    assert re.search(r'(^|\s)"?gaps"?: \[\]', status.stdout, re.M), status.stdout[-3000:]

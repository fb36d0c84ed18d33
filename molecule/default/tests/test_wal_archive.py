"""Continuous WAL archiving on the lab: archive_command (rtx.dr.backup_schedule) pushes every segment of the primary
to S3 with SSE-KMS and SHA256; the restore side (wal_agent fetch) gets back the same bytes on another host."""

import hashlib
import os

import boto3

from conftest import PRIMARY, STANDBYS, get_host, psql, wait_for

ENDPOINT = os.environ.get("RTX_DR_MOLECULE_AWS", "http://172.30.78.1:5001")
BUCKET = "rtx-dr-backups-rtx-molecule"
PREFIX = "pgbackup/rtx-molecule"
AGENT = ("PYTHONPATH=/usr/local/lib/rtx-dr python3 -m ansible_collections.rtx.dr.plugins.module_utils.wal_agent "
         "--config /etc/rtx-dr/agent.json")


def s3():
    return boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                        aws_access_key_id="molecule-access-key", aws_secret_access_key="molecule-secret-key")


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

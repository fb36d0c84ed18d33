"""Streaming mode on the lab (backup_schedule_wal_stream: true in this scenario, molecule/default/molecule.yml):
pg_receivewal runs only next to the primary, the stream uploader puts the partial segment into the primary and the
replica bucket every second, and the restore side on a standby gets a commit that is in no archived segment yet."""

import os
import re
import textwrap
import uuid

import yaml

from conftest import (ACCESS, AGENT, BUCKET, ENDPOINT, PREFIX, PRIMARY, STANDBYS, WEST_STANDBY, get_host, psql, s3,
                      wait_for)
from labtest import ansible_module

REPLICA_BUCKET = os.environ.get("RTX_DR_TEST_REPLICA_BUCKET", BUCKET + "-west")
UNITS = ("rtx-dr-wal-receive.service", "rtx-dr-wal-stream.service")


def lsn_value(text):
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def covers(client, bucket, segment):
    """covers-lsn of the streamed partial of ``segment`` in ``bucket`` (0 when there is none)."""
    key = "%s/wal-stream/%s/%s.partial.zst" % (PREFIX, segment[:8], segment)
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError:
        return 0
    return lsn_value(head["Metadata"]["covers-lsn"])


def test_the_receiver_streams_from_the_primary_only():
    for name in [PRIMARY] + STANDBYS:
        host = get_host(name)
        for unit in UNITS:
            assert host.service(unit).is_running, "%s not running on %s" % (unit, name)
        receiving = host.run("pgrep -f '^[^ ]*pg_receivewal'")
        assert (receiving.rc == 0) == (name == PRIMARY), "pg_receivewal on %s: %s" % (name, receiving.stdout)
    primary = get_host(PRIMARY)
    assert psql(primary, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'rtx_dr_stream'") == "1"
    # The receiver uses no replication slot: a stopped receiver never makes the primary keep WAL.
    assert psql(primary, "SELECT count(*) FROM pg_replication_slots WHERE active_pid IN (SELECT pid FROM"
                         " pg_stat_replication WHERE application_name = 'rtx_dr_stream')") == "0"


def test_a_commit_reaches_both_buckets_before_its_segment_is_archived():
    primary = get_host(PRIMARY)
    marker = "rtx-stream-%s" % uuid.uuid4().hex
    psql(primary, "CREATE TABLE IF NOT EXISTS public.stream_probe (note text, at timestamptz DEFAULT now());"
                  " INSERT INTO public.stream_probe (note) VALUES ('%s')" % marker)
    lsn, segment = psql(primary, "SELECT pg_current_wal_lsn() || '|' || pg_walfile_name(pg_current_wal_lsn())"
                        ).split("|")
    east, west = s3(), s3("us-west-2")
    assert wait_for(lambda: covers(east, BUCKET, segment) >= lsn_value(lsn), timeout=30), \
        "the streamed partial of %s in %s does not cover %s" % (segment, BUCKET, lsn)
    assert wait_for(lambda: covers(west, REPLICA_BUCKET, segment) >= lsn_value(lsn), timeout=30), \
        "the streamed partial of %s in the replica %s does not cover %s" % (segment, REPLICA_BUCKET, lsn)
    key = "%s/wal-stream/%s/%s.partial.zst" % (PREFIX, segment[:8], segment)
    head = west.head_object(Bucket=REPLICA_BUCKET, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms" and ":us-west-2:" in head["SSEKMSKeyId"]

    # The restore side in the other region: the segment comes from the streamed partial (or from the archive,
    # if archive_timeout switched it meanwhile) and holds the commit.
    standby = get_host(WEST_STANDBY)
    fetched = standby.run("runuser -u postgres -- sh -c '%s fetch --partial %s /tmp/%s && grep -c %s /tmp/%s; "
                          "rm -f /tmp/%s'" % (AGENT, segment, segment, marker, segment, segment))
    assert fetched.rc == 0, fetched.stdout + fetched.stderr
    assert int(fetched.stdout.split()[-1]) >= 1, "the fetched segment does not hold the commit %s" % marker
    archived = psql(primary, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    if not (re.match(r"^[0-9A-F]{24}$", archived) and archived >= segment):
        assert "streamed partial" in fetched.stderr, fetched.stderr


def test_wal_archive_status_reports_a_fresh_stream():
    primary = get_host(PRIMARY)
    psql(primary, "INSERT INTO public.stream_probe (note) VALUES ('status')")
    args = {"bucket": BUCKET, "prefix": PREFIX, "endpoint_url": ENDPOINT, "region": "us-east-1",
            "access_key": ACCESS, "secret_key": "molecule-secret-key", "login_unix_socket": "/var/run/postgresql",
            "max_stream_age_seconds": 30}
    result = ansible_module(PRIMARY, "rtx.dr.wal_archive_status", args)
    assert result.returncode == 0, result.stdout[-3000:]
    stream = yaml.safe_load(textwrap.dedent(result.stdout.split("=>", 1)[1]))["stream"]  # the yaml callback format
    assert stream["found"] and stream["host"] == PRIMARY and stream["age_seconds"] < 30, stream
    assert stream["bytes_behind"] < 16 * 1024 * 1024, stream
    # Another prefix has no stream: the threshold fails and says where it looked.
    missing = ansible_module(PRIMARY, "rtx.dr.wal_archive_status", dict(args, prefix=PREFIX + "-nostream"))
    assert missing.returncode != 0 and "%s-nostream/wal-stream/" % PREFIX in missing.stdout, missing.stdout[-3000:]

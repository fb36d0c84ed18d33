"""Helpers for the failover scenario: a writer that records acknowledged commits, server state probes."""

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from labtest import get_host, psql, wait_for  # noqa: E402

IPS = {
    "mol-db-east-1": "172.30.78.11",
    "mol-db-east-2": "172.30.78.12",
    "mol-db-east-3": "172.30.78.13",
    "mol-db-west-1": "172.30.78.21",
}
DB_HOSTS = sorted(IPS)
AWS = dict(endpoint_url=os.environ.get("RTX_DR_MOLECULE_AWS", "http://172.30.78.1:5001"), region_name="us-east-1",
           aws_access_key_id="molecule-access-key", aws_secret_access_key="molecule-secret-key")
WRITER_PASSWORD = "failover-writer-secret"
# How every client of the lab finds the primary: all servers, the writable one wins.
WRITER_DSN = ("host=%s port=5432 dbname=rtx user=failover_writer password=%s sslmode=require "
              "target_session_attrs=read-write connect_timeout=2" % (",".join(IPS[h] for h in DB_HOSTS), WRITER_PASSWORD))
# The same client through the endpoint proxies on mol-app-east-1 (role rtx.dr.endpoint, methods haproxy and
# pgbouncer): one address, the proxy follows the primary. HAProxy passes TLS through; PgBouncer has no client TLS.
APP_EAST_IP = "172.30.78.31"
HAPROXY_DSN = ("host=%s port=5433 dbname=rtx user=failover_writer password=%s sslmode=require connect_timeout=2"
               % (APP_EAST_IP, WRITER_PASSWORD))
PGBOUNCER_DSN = ("host=%s port=6432 dbname=rtx user=failover_writer password=%s sslmode=disable connect_timeout=2"
                 % (APP_EAST_IP, WRITER_PASSWORD))


def server_behind(dsn):
    """(address, in_recovery) of the server a connection with ``dsn`` reaches."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT host(inet_server_addr()), pg_is_in_recovery()")
            return cur.fetchone()
    finally:
        conn.close()


def docker(*args):
    return subprocess.run(["docker"] + list(args), capture_output=True, text=True, check=False, timeout=120)


def role(name):
    """'primary', 'standby' or 'down' as PostgreSQL on that container says."""
    if docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
        return "down"
    cmd = get_host(name).run("runuser -u postgres -- psql -X -Atqc 'SELECT pg_is_in_recovery()'")
    if cmd.rc != 0:
        return "down"
    return "standby" if cmd.stdout.strip() == "t" else "primary"


def streaming_from(primary):
    """application_name -> sync_state of the standbys streaming from ``primary``."""
    out = psql(get_host(primary), "SELECT application_name || ' ' || sync_state FROM pg_stat_replication "
                                  "WHERE state = 'streaming'")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def timeline(name):
    """The timeline the server writes (primary) or receives (standby) now.

    pg_control_checkpoint() lags until the next checkpoint after a promotion,
    so it is not used.
    """
    host = get_host(name)
    if psql(host, "SELECT pg_is_in_recovery()") == "f":
        return int(psql(host, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
    return int(psql(host, "SELECT coalesce(max(received_tli), 0) FROM pg_stat_wal_receiver") or 0)


def start_container(name):
    docker("start", name)
    host = get_host(name)
    assert wait_for(lambda: host.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded"),
                    timeout=60)


# Row ids of every Writer (next() on itertools.count is atomic in CPython).
_IDS = itertools.count(int(time.time() * 1000) * 1000)


class Writer(threading.Thread):
    """Inserts one row per transaction through ``dsn`` (default: the libpq multi-host string).

    A row id goes into ``acked`` only after COMMIT returned (autocommit:
    execute() returns when the server acknowledged the commit, after the
    synchronous standby confirmed it). Connection errors are counted and the
    writer reconnects, as an application would.
    """

    def __init__(self, dsn=WRITER_DSN):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.acked = []
        self.errors = 0
        self.first_error_at = None
        self.first_ok_after_error = None
        self.hosts = set()
        self._stop_event = threading.Event()
        self._ids = _IDS  # one id sequence for every writer: writers started together must not collide

    def run(self):
        conn = None
        while not self._stop_event.is_set():
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn)
                    conn.autocommit = True
                    with conn.cursor() as cur:
                        cur.execute("SELECT host(inet_server_addr())")
                        self.hosts.add(cur.fetchone()[0])
                row_id = next(self._ids)
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO failover_probe.acks (id) VALUES (%s)", (row_id,))
                self.acked.append(row_id)
                if self.first_error_at and not self.first_ok_after_error:
                    self.first_ok_after_error = time.monotonic()
            except psycopg2.Error:
                self.errors += 1
                if not self.first_error_at:
                    self.first_error_at = time.monotonic()
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg2.Error:
                        pass
                conn = None
                time.sleep(0.2)
            time.sleep(0.01)
        if conn is not None:
            conn.close()

    def stop(self):
        self._stop_event.set()
        self.join(timeout=30)

    def wait_acked(self, count, timeout=60):
        target = len(self.acked) + count
        return wait_for(lambda: len(self.acked) >= target, timeout=timeout)


def rows_on(name):
    """Every row id of failover_probe.acks on that server."""
    conn = psycopg2.connect("host=%s port=5432 dbname=rtx user=failover_writer password=%s sslmode=require"
                            % (IPS[name], WRITER_PASSWORD))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM failover_probe.acks")
            return set(r[0] for r in cur.fetchall())
    finally:
        conn.close()


@pytest.fixture(scope="session")
def probe_table():
    """The writer's role and table, created on the initial primary."""
    primary = get_host("mol-db-east-1")
    psql(primary, "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'failover_writer') THEN "
                  "CREATE ROLE failover_writer LOGIN PASSWORD '%s'; END IF; END$$" % WRITER_PASSWORD)
    psql(primary, "CREATE SCHEMA IF NOT EXISTS failover_probe AUTHORIZATION failover_writer; "
                  "CREATE TABLE IF NOT EXISTS failover_probe.acks (id bigint PRIMARY KEY, at timestamptz DEFAULT now()); "
                  "ALTER TABLE failover_probe.acks OWNER TO failover_writer", db="rtx")
    return "failover_probe.acks"


@pytest.fixture(scope="session")
def sns_queue():
    """An SQS queue subscribed to the DR topic, to read what the playbooks published."""
    sns = boto3.client("sns", **AWS)
    sqs = boto3.client("sqs", **AWS)
    topic = [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(":rtx-dr-events")]
    assert topic, "site.yml did not create the SNS topic rtx-dr-events"
    url = sqs.create_queue(QueueName="rtx-dr-events-test")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic[0], Protocol="sqs", Endpoint=arn)

    def messages():
        out = []
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if not got:
                return out
            out.extend(m["Body"] for m in got)
    return messages


def route53_value(record="db.rtx-molecule.internal."):
    r53 = boto3.client("route53", **AWS)
    zones = [z for z in r53.list_hosted_zones()["HostedZones"] if z["Name"] == "rtx-molecule.internal."]
    assert zones, "site.yml did not create the zone rtx-molecule.internal"
    sets = r53.list_resource_record_sets(HostedZoneId=zones[0]["Id"])["ResourceRecordSets"]
    values = [rr["Value"] for s in sets if s["Name"] == record for rr in s.get("ResourceRecords", [])]
    return values[0] if values else None

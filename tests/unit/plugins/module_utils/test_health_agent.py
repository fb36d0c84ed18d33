# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the health agent (module_utils/health_agent.py).

Pure parts in process; the DR metrics and the health_check_history write
against the real test cluster (primary + streaming standby from conftest.py)
with the DR schema's own migrations applied in a scratch database.
"""

from __future__ import annotations

import datetime
import http.server
import io
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from urllib.error import HTTPError

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moto_server import aws_params, bucket, moto_url, s3_client  # noqa: E402,F401 pylint: disable=unused-import,wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import agent  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils import health_agent  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import close_quietly  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import execute  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import format_lsn  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_all  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_one  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.postgres import wal_segment_name  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.verify import record_verifications  # noqa: E402 pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parents[4]
MIGRATIONS = sorted((REPO / "roles/dr_schema/files/migrations").glob("V*.sql"))
DB = "rtxhealth"


def epoch(*parts):
    return datetime.datetime(*parts, tzinfo=datetime.timezone.utc).timestamp()


def write_config(tmp_path, **options):
    options.setdefault("output_json", str(tmp_path / "health.json"))
    options.setdefault("textfile", str(tmp_path / "rtx_dr_health.prom"))
    path = tmp_path / "health-agent.json"
    path.write_text(json.dumps(options))
    return str(path)


def run_main(args):
    out, err = io.StringIO(), io.StringIO()
    code = health_agent.main(args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def parse_textfile(text):
    """{(name, frozenset(labels)): value} from the exposition format; checks HELP/TYPE precede each metric."""
    samples, declared = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        match = re.match(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$', line)
        assert match, line
        name, labels, value = match.groups()
        assert name in declared, "sample of %s before its TYPE line" % name
        pairs = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


# --------------------------------------------------------------------------
# configuration: bad input is refused with the option named
# --------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"checks": ["disk", "cpus"]}, "option checks: 'cpus' is not one of"),
    ({"checks": ["disk"], "thresholds": {"disk": {"warn": 95, "critical": 90}}}, "disk: warn (95.0) is above critical"),
    ({"checks": ["disk"], "thresholds": {"dsk": {"warn": 1}}}, "unknown check 'dsk'"),
    ({"checks": ["api"]}, "check api needs api_url"),
    ({"checks": ["disk"], "output_json": "", "textfile": ""}, "results would go nowhere"),
    ({"checks": ["disk"], "history": True}, "neither history_hosts nor a local login"),
    ({"checks": ["disk"], "history": True, "history_hosts": ["db1:x5432"]}, "'db1:x5432' is not host or host:port"),
    ({"checks": ["disk"], "frequency": 60}, "unknown option frequency"),
    ({"checks": ["disk"], "total_timeout": "soon"}, "option total_timeout: 'soon' is not a number"),
    ({"checks": ["disk"], "wal_stream": True}, "wal_stream is on but dr_metrics is off"),
])
def test_bad_configuration_is_refused_with_exit_2(tmp_path, options, message):
    code, out, err = run_main(["--config", write_config(tmp_path, **options), "check-config"])
    assert code == agent.EXIT_CONFIG and out == ""
    assert message in err
    assert not (tmp_path / "health.json").exists()


def test_check_config_prints_the_options_with_secrets_masked(tmp_path):
    path = write_config(tmp_path, checks=["disk", "redis"], redis_password="s3cret", history=True,
                        history_hosts=["db1", "db2:5433"], history_password="pw", thresholds={"disk": {"warn": 70}})
    code, out, err = run_main(["--config", path, "check-config"])
    assert code == agent.EXIT_OK, err
    shown = json.loads(out)
    assert shown["redis_password"] == "********" and shown["history_password"] == "********"
    assert shown["thresholds"] == {"disk": {"warn": 70}} and shown["total_timeout"] == 20.0
    assert "s3cret" not in out + err and "valid" in err


def test_split_hosts_builds_libpq_lists():
    assert health_agent.split_hosts(["db1", "db2:5433", "10.0.0.1"], 5432) == (
        ["db1", "db2", "10.0.0.1"], ["5432", "5433", "5432"])


# --------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------


def test_textfile_escapes_labels_and_declares_every_metric():
    document = {"timestamp": 1700000000.5, "duration_seconds": 0.2, "status": "warn", "history": {"enabled": False},
                "checks": [{"check": "disk", "target": '/data "x"\\y', "status": "warn", "value": 81.5, "seconds": 0.01},
                           {"check": "api", "target": "http://h/health", "status": "critical", "value": None,
                            "seconds": 5.0}],
                "dr": None}
    text = health_agent.format_textfile(health_agent.metric_samples(document))
    assert 'rtx_dr_health_check_status{check="disk",target="/data \\"x\\"\\\\y"} 1' in text
    samples = parse_textfile(text)
    assert samples[("rtx_dr_health_status", frozenset())] == 1
    assert samples[("rtx_dr_health_check_status", frozenset({("check", "api"), ("target", "http://h/health")}))] == 2
    # a failed check has no value sample (not a fake 0)
    assert not any(name == "rtx_dr_health_check_value" and ("check", "api") in labels for name, labels in samples)
    assert text.count("# TYPE rtx_dr_health_check_status gauge") == 1
    with pytest.raises(ValueError, match="not declared"):
        health_agent.format_textfile([("rtx_dr_made_up", {}, 1)])


def test_history_rows_carry_the_threshold_of_the_status_reached():
    document = {"time": "2026-11-27T10:00:00+00:00", "host": "h1", "checks": [
        {"check": "disk", "target": "/", "status": "critical", "value": 95.0, "unit": "%", "seconds": 0.1,
         "threshold": {"warn": 80.0, "critical": 90.0}, "message": "/ 95% used", "details": {}},
        {"check": "memory", "target": "host", "status": "ok", "value": 10, "unit": "%", "seconds": 0.1,
         "threshold": {"warn": 85.0, "critical": 95.0}, "message": "ok", "details": {}}]}
    rows = health_agent.history_rows(document)
    assert [(r["check"], r["status"], r["threshold"]) for r in rows] == [("disk", "critical", 90.0),
                                                                         ("memory", "ok", 85.0)]
    assert json.loads(rows[0]["details"])["target"] == "/"


def test_write_atomic_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "health.json"
    target.write_text("old")

    def boom(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(health_agent.os, "replace", boom)
    with pytest.raises(OSError):
        health_agent.write_atomic(str(target), "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["health.json"]


def test_run_exits_1_when_the_output_cannot_be_written(tmp_path):
    path = write_config(tmp_path, checks=["memory"], output_json=str(tmp_path / "missing" / "health.json"),
                        textfile="")
    code, _out, err = run_main(["--config", path, "run"])
    assert code == agent.EXIT_FAILED and "cannot write the health outputs" in err


# --------------------------------------------------------------------------
# open_url stand-in (hosts without ansible)
# --------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 pylint: disable=invalid-name
        if self.path == "/old":
            self.send_response(302)
            self.send_header("Location", "/health")
        else:
            self.send_response(200 if self.path == "/health" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args):
        pass


def test_open_url_stand_in_follows_redirects_and_raises_http_errors():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = "http://127.0.0.1:%d" % server.server_address[1]
    try:
        response = agent.open_url(base + "/old", timeout=5)
        assert response.getcode() == 200
        response.close()
        with pytest.raises(HTTPError) as info:
            agent.open_url(base + "/down", timeout=5)
        assert info.value.code == 503
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------
# real PostgreSQL: DR metrics and health_check_history
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dr_database(pg_cluster):
    """Database DB on the test primary with the DR schema (all migrations, partitioned health table)."""
    conn = connect(pg_cluster.params())
    try:
        if not query_one(conn, "SELECT 1 AS x FROM pg_database WHERE datname = %s", (DB,)):
            execute(conn, "CREATE DATABASE %s" % DB)
    finally:
        close_quietly(conn)
    conn = connect(pg_cluster.params(login_db=DB), autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS dr CASCADE; CREATE SCHEMA dr; SET search_path = dr, pg_temp")
            for migration in MIGRATIONS:
                cur.execute(migration.read_text())
        conn.commit()
    finally:
        close_quietly(conn)
    return pg_cluster


def _sql(cluster, statement, params=None, port=None):
    conn = connect(cluster.params(port=port, login_db=DB))
    try:
        return query_all(conn, statement, params) if statement.lstrip().upper().startswith("SELECT") \
            else execute(conn, statement, params)
    finally:
        close_quietly(conn)


def test_the_migrations_include_verification_history():
    assert [m.name for m in MIGRATIONS][:3] == ["V001__base.sql", "V002__health_check_history.sql",
                                                "V003__verification_history.sql"]


def test_run_on_the_primary_exports_dr_metrics_and_writes_history(dr_database, tmp_path):
    cluster = dr_database
    for statement in (
            "INSERT INTO dr.backup_history (backup_id, kind, status, started_at, finished_at)"
            " VALUES ('b-phys-1', 'physical', 'complete', '2026-11-20 02:00Z', '2026-11-20 02:10Z'),"
            " ('b-phys-2', 'physical', 'failed', '2026-11-21 02:00Z', '2026-11-21 02:01Z'),"
            " ('b-log-1', 'logical', 'complete', '2026-11-21 03:00Z', '2026-11-21 03:05Z')",
            "INSERT INTO dr.restore_history (restore_id, verify_only, status, started_at, finished_at)"
            " VALUES ('r-1', true, 'complete', '2026-11-22 04:00Z', '2026-11-22 04:09Z')",
            "INSERT INTO dr.failover_history (failover_id, kind, old_timeline, new_timeline, status, started_at,"
            " finished_at) VALUES ('f-1', 'switchover', 1, 2, 'complete', '2026-11-23 05:00Z', '2026-11-23 05:00:07Z')"):
        _sql(cluster, statement)
    verified = {"bucket": "bk", "prefix": "pgbackup/x", "backups": [
        {"backup_id": "b-phys-1", "kind": "physical", "ok": True, "findings": [], "objects_checked": 3,
         "bytes_read": 10, "seconds": 0.5, "checks": ["record"]}]}
    assert record_verifications(cluster.params(), dict(verified), "h1")["written"] is False  # no table in postgres
    outcome = record_verifications(dict(cluster.params(), audit_db=DB), verified, "h1")
    assert outcome == {"written": True, "rows": 1, "reason": None, "database": DB, "schema": "dr"}

    before = _sql(cluster, "SELECT count(*) AS n FROM dr.health_check_history")[0]["n"]
    path = write_config(
        tmp_path, checks=["postgresql", "replication_lag", "disk"], host_name="db-test-1",
        login_host="127.0.0.1", login_port=cluster.primary_port, login_user="postgres",
        login_password=cluster.params()["login_password"], ssl_mode="disable", dr_metrics=True, dr_db=DB,
        history=True, history_db=DB, history_user="postgres", history_password=cluster.params()["login_password"],
        history_ssl_mode="disable",
        # the standby first: target_session_attrs=read-write must skip it and write on the primary
        history_hosts=["127.0.0.1:%d" % cluster.standby_port, "127.0.0.1:%d" % cluster.primary_port])
    code, _out, err = run_main(["--config", path, "run"])
    assert code == agent.EXIT_OK, err
    document = json.loads((tmp_path / "health.json").read_text())
    assert [c["check"] for c in document["checks"]] == ["postgresql", "replication_lag", "disk"]
    assert document["checks"][0]["details"]["role"] == "primary"
    assert document["history"]["written"] is True and document["history"]["rows"] == 3
    rows = _sql(cluster, "SELECT check_name, status, host FROM dr.health_check_history WHERE host = 'db-test-1'"
                         " ORDER BY check_name")
    assert len(rows) >= 3 and {r["check_name"] for r in rows} == {"postgresql", "replication_lag", "disk"}
    assert _sql(cluster, "SELECT count(*) AS n FROM dr.health_check_history")[0]["n"] == before + 3

    metrics = parse_textfile((tmp_path / "rtx_dr_health.prom").read_text())

    def value(name, **labels):
        return metrics[(name, frozenset(labels.items()))]

    assert value("rtx_dr_pg_up") == 1 and value("rtx_dr_pg_is_primary") == 1
    assert value("rtx_dr_backup_last_success_timestamp_seconds", kind="physical") == epoch(2026, 11, 20, 2, 10)
    assert value("rtx_dr_backup_last_run_success", kind="physical") == 0  # the latest physical run failed
    assert value("rtx_dr_backup_last_run_success", kind="logical") == 1
    assert value("rtx_dr_backup_last_verify_success") == 1 and value("rtx_dr_backup_last_verified_timestamp_seconds") > 0
    assert value("rtx_dr_restore_drill_last_success_timestamp_seconds") == epoch(2026, 11, 22, 4, 9)
    assert value("rtx_dr_last_failover_timestamp_seconds", kind="switchover") == epoch(2026, 11, 23, 5, 0, 7)
    assert value("rtx_dr_last_failover_timestamp_seconds", kind="region") == 0
    assert value("rtx_dr_replication_lag_bytes", standby="rtxtest_standby") >= 0
    assert value("rtx_dr_wal_archive_enabled") == 0 and value("rtx_dr_wal_archive_ready_segments") == 0
    assert value("rtx_dr_wal_archive_oldest_ready_timestamp_seconds") == 0  # nothing waits
    assert document["dr"]["wal_archive"]["oldest_ready"] is None
    assert value("rtx_dr_health_history_write_success") == 1


def test_dr_metrics_export_since_when_the_oldest_ready_file_waits(pg_cluster):
    """The archive lag metric is the oldest .ready file's time (walstatus.read_ready), not last_archived_time."""
    status_dir = os.path.join(pg_cluster.primary_dir, "pg_wal", "archive_status")
    planted = {"0000007F00000000000000B1": 7200, "0000007F00000000000000B2": 30}  # no such segments in pg_wal
    try:
        for name, age in planted.items():
            path = os.path.join(status_dir, name + ".ready")
            with open(path, "w", encoding="utf-8"):
                pass
            when = time.time() - age
            os.utime(path, (when, when))
        params = dict(pg_cluster.params(), dr_db="postgres", dr_schema="dr")
        facts = health_agent.collect_dr_metrics(params)
        assert facts["error"] is None, facts
        archive = facts["wal_archive"]
        assert archive["ready_segments"] == 2 and archive["oldest_ready"] == "0000007F00000000000000B1"
        assert abs(archive["oldest_ready_time"] - (time.time() - 7200)) < 60
        document = {"timestamp": time.time(), "duration_seconds": 0.1, "status": "ok", "checks": [], "dr": facts}
        metrics = parse_textfile(health_agent.format_textfile(health_agent.metric_samples(document)))
        assert metrics[("rtx_dr_wal_archive_oldest_ready_timestamp_seconds", frozenset())] == \
            archive["oldest_ready_time"]
    finally:
        for name in planted:
            path = os.path.join(status_dir, name + ".ready")
            if os.path.exists(path):
                os.unlink(path)


def test_run_on_the_standby_reports_it_and_exports_no_primary_metrics(dr_database, tmp_path):
    cluster = dr_database
    _sql(cluster, "INSERT INTO dr.failover_history (failover_id, kind, old_timeline, new_timeline, status, started_at,"
                  " finished_at) VALUES ('f-standby', 'switchover', 2, 3, 'complete', now(), now())")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the standby has replayed it
        try:
            if _sql(cluster, "SELECT count(*) AS n FROM dr.failover_history WHERE failover_id = 'f-standby'",
                    port=cluster.standby_port)[0]["n"]:
                break
        except Exception:  # pylint: disable=broad-exception-caught
            pass
        time.sleep(0.2)
    path = write_config(
        tmp_path, checks=["postgresql"], login_host="127.0.0.1", login_port=cluster.standby_port,
        login_password=cluster.params()["login_password"], ssl_mode="disable", dr_metrics=True, dr_db=DB,
        history=True, history_db=DB, history_user="postgres", history_password="wrong", history_ssl_mode="disable",
        history_hosts=["127.0.0.1:%d" % cluster.primary_port],
        # streaming mode: only the primary's agent reads the stream (this file is never opened on a standby)
        wal_stream=True, wal_stream_config=str(tmp_path / "no-such-agent.json"))
    code, _out, err = run_main(["--config", path, "run"])
    assert code == agent.EXIT_OK, err
    document = json.loads((tmp_path / "health.json").read_text())
    assert document["dr"]["pg_is_primary"] == 0 and "wal_archive" not in document["dr"]
    assert "wal_stream" not in document["dr"] and "WAL stream" not in err
    # the DR schema is replicated: the standby reads it too
    assert document["dr"]["dr_schema"]["failovers"]["switchover"] > 0
    # a failed history write is reported, never fatal
    assert document["history"]["written"] is False and "password" in document["history"]["reason"]
    assert "health_check_history not written" in err
    metrics = parse_textfile((tmp_path / "rtx_dr_health.prom").read_text())
    assert metrics[("rtx_dr_health_history_write_success", frozenset())] == 0
    assert not any(name.startswith(("rtx_dr_wal_archive", "rtx_dr_wal_stream")) or name == "rtx_dr_replication_lag_bytes"
                   for name, _labels in metrics)


def test_dr_metrics_of_a_server_that_is_down_say_so(tmp_path, unused_port):
    path = write_config(tmp_path, checks=["postgresql"], login_host="127.0.0.1", login_port=unused_port,
                        ssl_mode="disable", connect_timeout=2, dr_metrics=True, total_timeout=5)
    code, _out, err = run_main(["--config", path, "run"])
    assert code == agent.EXIT_OK, err
    document = json.loads((tmp_path / "health.json").read_text())
    assert document["status"] == "critical" and document["dr"]["pg_up"] == 0 and document["dr"]["error"]
    metrics = parse_textfile((tmp_path / "rtx_dr_health.prom").read_text())
    assert metrics[("rtx_dr_pg_up", frozenset())] == 0


# --------------------------------------------------------------------------
# streaming mode: the newest streamed partial in S3 (moto), against the real primary's position
# --------------------------------------------------------------------------

STREAM_PREFIX = "pgbackup/healthstream"


def backup_agent_config(tmp_path, aws, bucket_name):
    """The backup agent's configuration (agent.json of rtx.dr.backup_schedule): where the stream is, AWS settings."""
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({
        "bucket": bucket_name, "prefix": STREAM_PREFIX, "region": aws["region"], "endpoint_url": aws["endpoint_url"],
        "access_key": aws["access_key"], "secret_key": aws["secret_key"], "login_user": "postgres",
        "backup": {"timeout": 60}, "wal": {"stream_dir": "/var/lib/rtx-dr/wal-stream"}}))
    return str(path)


def put_partial(s3, bucket_name, timeline, covers, host="db-east-1"):
    """A streamed partial of the segment holding ``covers`` (as the uploader writes it); returns its key."""
    segment = wal_segment_name(timeline, covers)
    key = "%s/wal-stream/%s/%s.partial.zst" % (STREAM_PREFIX, segment[:8], segment)
    s3.put_object(Bucket=bucket_name, Key=key, Body=b"partial", Metadata={"covers-lsn": covers, "host": host})
    return key


def current_lsn(cluster):
    conn = connect(cluster.params())
    try:
        return parse_lsn(query_one(conn, "SELECT pg_catalog.pg_current_wal_lsn()::text AS lsn")["lsn"])
    finally:
        close_quietly(conn)


def stream_run(cluster, tmp_path, config):
    path = write_config(tmp_path, checks=["memory"], host_name="db-stream-1", dr_metrics=True, dr_db="postgres",
                        wal_stream=True, wal_stream_config=config, **cluster.params(login_unix_socket=None))
    code, _out, err = run_main(["--config", path, "run"])
    assert code == agent.EXIT_OK, err
    document = json.loads((tmp_path / "health.json").read_text())
    metrics = parse_textfile((tmp_path / "rtx_dr_health.prom").read_text())
    return document, {name: value for (name, _labels), value in metrics.items()}, err


def test_wal_stream_metrics_of_the_primary(pg_cluster, s3_client, aws_params, bucket, tmp_path):
    before = current_lsn(pg_cluster)
    covers = before - 0x100  # the receiver is 256 bytes behind the primary's position
    # timeline 1 has a higher segment, timeline 2 is newer: the newest partial is timeline 2's
    put_partial(s3_client, bucket, 1, format_lsn(covers + 0x3000000), host="db-east-2")
    newest = put_partial(s3_client, bucket, 2, format_lsn(covers))
    uploaded = s3_client.head_object(Bucket=bucket, Key=newest)["LastModified"].timestamp()
    document, metrics, err = stream_run(pg_cluster, tmp_path, backup_agent_config(tmp_path, aws_params, bucket))
    after = current_lsn(pg_cluster)
    facts = document["dr"]["wal_stream"]
    assert facts["error"] is None and "WAL stream" not in err
    assert facts["where"] == "s3://%s/%s/wal-stream/" % (bucket, STREAM_PREFIX)
    assert facts["stream"]["key"] == newest and facts["stream"]["timeline"] == 2
    assert facts["stream"]["covers_lsn"] == format_lsn(covers) and facts["stream"]["host"] == "db-east-1"
    assert metrics["rtx_dr_wal_stream_read_success"] == 1
    assert metrics["rtx_dr_wal_stream_newest_timestamp_seconds"] == uploaded
    assert uploaded <= metrics["rtx_dr_wal_stream_checked_timestamp_seconds"] <= time.time()
    assert 0x100 <= metrics["rtx_dr_wal_stream_covers_bytes_behind"] <= after - covers
    # the archive metrics are still there (the stream is an addition)
    assert "rtx_dr_wal_archive_enabled" in metrics


def test_wal_stream_metrics_without_a_partial_or_without_the_configuration(pg_cluster, s3_client, aws_params,
                                                                           bucket, tmp_path):
    # nothing streamed yet: read, newest 0 (never), nothing behind can be told
    document, metrics, _err = stream_run(pg_cluster, tmp_path, backup_agent_config(tmp_path, aws_params, bucket))
    assert document["dr"]["wal_stream"]["stream"] == {"found": False}
    assert metrics["rtx_dr_wal_stream_read_success"] == 1 and metrics["rtx_dr_wal_stream_newest_timestamp_seconds"] == 0
    assert "rtx_dr_wal_stream_covers_bytes_behind" not in metrics
    # the backup agent's configuration cannot be read: reported, the rest of the run goes on
    missing = str(tmp_path / "missing" / "agent.json")
    document, metrics, err = stream_run(pg_cluster, tmp_path, missing)
    assert metrics["rtx_dr_wal_stream_read_success"] == 0 and metrics["rtx_dr_pg_up"] == 1
    assert "rtx_dr_wal_stream_newest_timestamp_seconds" not in metrics
    assert missing in document["dr"]["wal_stream"]["error"]
    assert "WAL stream metrics not collected" in err and missing in err

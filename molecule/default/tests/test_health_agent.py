"""The health agent (rtx.dr.health_agent) on the lab: timer on every host, health.json with all 8 checks on the
application host, a stopped Redis turns exactly that check critical in health.json and in the Prometheus textfile,
and every run lands in dr.health_check_history on the primary."""

import json
import sys
from pathlib import Path

from conftest import get_host

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from labtest import psql  # noqa: E402 pylint: disable=wrong-import-position

HOSTS = ("mol-db-east-1", "mol-db-east-2", "mol-db-east-3", "mol-db-west-1", "mol-app-east-1", "mol-app-west-1")
ALL_CHECKS = {"postgresql", "replication_lag", "api", "websocket", "redis", "disk", "cpu_load", "memory"}
HEALTH_JSON = "/var/lib/rtx/metrics/health.json"
TEXTFILE = "/var/lib/rtx/metrics/rtx_dr_health.prom"


def run_agent(host):
    """One run now (the oneshot service the timer starts); returns the document it wrote."""
    result = host.run("systemctl start rtx-dr-health.service")
    assert result.rc == 0, result.stderr
    return json.loads(host.file(HEALTH_JSON).content_string)


def statuses(document):
    return dict((c["check"], c["status"]) for c in document["checks"] if c["check"] != "disk")


def test_timer_is_active_on_every_host():
    for name in HOSTS:
        host = get_host(name)
        assert host.run("systemctl is-active rtx-dr-health.timer").stdout.strip() == "active", name
        assert host.run("systemctl is-enabled rtx-dr-health.timer").stdout.strip() == "enabled", name


def test_application_host_runs_all_eight_checks_and_writes_history():
    app = get_host("mol-app-east-1")
    document = run_agent(app)
    assert {c["check"] for c in document["checks"]} == ALL_CHECKS
    checks = statuses(document)
    assert checks["postgresql"] == "ok" and checks["redis"] == "ok" and checks["api"] == "ok"
    # the application host reaches the primary among all database hosts
    postgresql = next(c for c in document["checks"] if c["check"] == "postgresql")
    assert postgresql["details"]["role"] == "primary"
    assert document["history"]["written"] is True and document["history"]["rows"] == len(document["checks"])
    primary = get_host("mol-db-east-1")
    rows = psql(primary, "SELECT check_name FROM dr.health_check_history WHERE host = 'mol-app-east-1'"
                         " AND \"time\" = '%s'::timestamptz ORDER BY 1" % document["time"], db="rtx").split()
    assert set(rows) == ALL_CHECKS and len(rows) == len(document["checks"])


def test_database_hosts_export_dr_metrics():
    primary = run_agent(get_host("mol-db-east-1"))
    assert primary["dr"]["pg_is_primary"] == 1 and primary["dr"]["replication"]["sync_standbys"] >= 1
    assert set(primary["dr"]["replication"]["standbys"]) >= {"mol-db-east-2", "mol-db-east-3", "mol-db-west-1"}
    standby = run_agent(get_host("mol-db-east-2"))
    assert standby["dr"]["pg_is_primary"] == 0 and standby["dr"]["dr_schema"] is not None
    # the standby's rows also reach the primary (read-write host among the list)
    assert standby["history"]["written"] is True
    text = get_host("mol-db-east-1").file(TEXTFILE).content_string
    assert "rtx_dr_pg_is_primary 1" in text and 'rtx_dr_replication_lag_bytes{standby="mol-db-east-2"}' in text


def test_stopped_redis_turns_exactly_that_check_critical_in_the_agent():
    app = get_host("mol-app-east-1")
    before = statuses(run_agent(app))
    assert app.run("systemctl stop redis-server").rc == 0
    try:
        after = run_agent(app)
        checks = statuses(after)
        assert before["redis"] == "ok" and checks["redis"] == "critical"
        # cpu_load is the shared load of the machine running the lab: it is left out of the comparison.
        critical_before = {n for n, s in before.items() if s == "critical"} - {"cpu_load"}
        critical_after = {n for n, s in checks.items() if s == "critical"} - {"cpu_load"}
        assert critical_after == critical_before | {"redis"}, (before, checks)
        assert 'rtx_dr_health_check_status{check="redis",target="127.0.0.1:6379"} 2' in \
            app.file(TEXTFILE).content_string
        primary = get_host("mol-db-east-1")
        assert psql(primary, "SELECT status FROM dr.health_check_history WHERE host = 'mol-app-east-1'"
                             " AND check_name = 'redis' AND \"time\" = '%s'::timestamptz" % after["time"],
                    db="rtx") == "critical"
    finally:
        app.run("systemctl start redis-server")

"""playbooks/health_check.yml on the lab: every check reported, a stopped Redis turns exactly that check critical."""

import re
import sys
from pathlib import Path

from conftest import get_host

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from labtest import playbook  # noqa: E402 pylint: disable=wrong-import-position

DB_CHECKS = ["postgresql", "replication_lag", "disk", "disk", "cpu_load", "memory"]
APP_CHECKS = ["api", "websocket", "redis", "disk", "cpu_load", "memory"]


def table(result):
    """host -> [(check, status, message)] from the printed health table."""
    text = " ".join(result.stdout.split())
    rows = {}
    for host, check, status, message in re.findall(
            r"(mol-[a-z0-9-]+) (postgresql|replication_lag|disk|cpu_load|memory|api|websocket|redis) "
            r"(ok|warn|critical) (.*?)(?= - |'? - |$)", text):
        rows.setdefault(host, []).append((check, status, message))
    return rows


def test_every_check_is_reported():
    result = playbook("health_check.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    rows = table(result)
    for host in ("mol-db-east-1", "mol-db-east-2", "mol-db-east-3", "mol-db-west-1"):
        assert [c for c, _s, _m in rows[host]] == DB_CHECKS, rows.get(host)
    assert [c for c, _s, _m in rows["mol-app-east-1"]] == APP_CHECKS
    primary = dict((c, s) for c, s, _m in rows["mol-db-east-1"])
    assert primary["postgresql"] == "ok" and primary["replication_lag"] == "ok"
    app = dict((c, s) for c, s, _m in rows["mol-app-east-1"])
    assert app == {"api": "ok", "websocket": "ok", "redis": "ok", "disk": app["disk"],
                   "cpu_load": app["cpu_load"], "memory": app["memory"]}
    # The second region's demo service is stopped until a region failover: reported, not hidden.
    west = dict((c, s) for c, s, _m in rows["mol-app-west-1"])
    assert west["api"] == "critical" and west["websocket"] == "critical"


def test_stopped_redis_turns_exactly_that_check_critical():
    app = get_host("mol-app-east-1")
    assert app.run("systemctl stop redis-server").rc == 0
    try:
        result = playbook("health_check.yml", "--limit", "mol-app-east-1,localhost")
        assert result.returncode == 0, result.stdout[-3000:]
        statuses = dict((c, s) for c, s, _m in table(result)["mol-app-east-1"])
        assert statuses["redis"] == "critical"
        assert statuses["api"] == "ok" and statuses["websocket"] == "ok"
        failing = playbook("health_check.yml", "--limit", "mol-app-east-1,localhost", "-e", "health_fail_on=critical")
        assert failing.returncode != 0 and "redis" in " ".join(failing.stdout.split())
    finally:
        app.run("systemctl start redis-server")

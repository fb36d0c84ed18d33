# -*- coding: utf-8 -*-
# Copyright: (c) 2026, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/chaos.py: disk fill plan, connection holding, alert evaluation with the real rules and promtool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from ansible_collections.rtx.dr.plugins.module_utils import chaos
from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

REPO = Path(__file__).resolve().parents[4]
GIB = 1024 ** 3
MIB = 1024 ** 2


# -- faults -------------------------------------------------------------------

def test_validate_faults_orders_and_dedupes():
    assert chaos.validate_faults(["connections", "latency", "latency"]) == ["latency", "connections"]
    with pytest.raises(InvalidValueError, match="unknown fault"):
        chaos.validate_faults(["latency", "meteor"])
    with pytest.raises(InvalidValueError, match="empty"):
        chaos.validate_faults([])


# -- disk fill ------------------------------------------------------------------

def test_disk_fill_plan_reaches_the_percentage():
    plan = chaos.disk_fill_plan(100 * GIB, 50 * GIB, 92, 2048 * MIB)
    assert plan["refused"] is None and not plan["capped"]
    assert plan["used_before"] == 50.0
    assert abs(plan["used_after"] - 92.0) < 0.01
    assert plan["bytes"] == pytest.approx(42 * GIB, abs=MIB)


def test_disk_fill_plan_never_goes_under_the_minimum_free():
    plan = chaos.disk_fill_plan(100 * GIB, 10 * GIB, 99.5, 2048 * MIB)
    assert plan["capped"]
    assert plan["bytes"] == 8 * GIB
    assert plan["used_after"] == 98.0


def test_disk_fill_plan_refuses_when_already_above():
    plan = chaos.disk_fill_plan(100 * GIB, 5 * GIB, 92, 0)
    assert plan["bytes"] == 0 and "already 95.0% used" in plan["refused"]


def test_disk_fill_plan_refuses_without_room():
    plan = chaos.disk_fill_plan(100 * GIB, 10 * GIB, 95, 20 * GIB)
    assert "nothing can be filled" in plan["refused"]


def test_disk_fill_plan_ignores_its_own_file():
    first = chaos.disk_fill_plan(100 * GIB, 50 * GIB, 92, 0)
    again = chaos.disk_fill_plan(100 * GIB, 50 * GIB - first["bytes"], 92, 0, existing_fill=first["bytes"])
    assert again["bytes"] == first["bytes"] and again["used_before"] == 50.0


def test_disk_fill_plan_checks_its_inputs():
    with pytest.raises(InvalidValueError):
        chaos.disk_fill_plan(1, 1, 100, 0)
    with pytest.raises(InvalidValueError):
        chaos.disk_fill_plan(1, 1, 50, -1)


def test_fill_and_remove(tmp_path):
    sizes = {}

    def statvfs(_path):
        used = sum(sizes.values())
        return 100 * MIB, 60 * MIB - used

    def allocate(path, size):
        sizes[path] = size
        Path(path).write_bytes(b"x")

    result = chaos.fill_disk(str(tmp_path), 90, 1, allocate=allocate, statvfs=statvfs)
    assert result["changed"] and result["bytes"] == pytest.approx(50 * MIB, abs=2)
    assert result["used_after"] == pytest.approx(90.0, abs=0.01)
    path = tmp_path / chaos.FILL_FILE_NAME
    assert path.exists()
    check = chaos.remove_fill(str(tmp_path), check_mode=True)
    assert check["changed"] and path.exists()
    assert chaos.remove_fill(str(tmp_path))["changed"]
    assert not path.exists()
    assert not chaos.remove_fill(str(tmp_path))["changed"]


def test_fill_check_mode_allocates_nothing(tmp_path):
    result = chaos.fill_disk(str(tmp_path), 90, 1, check_mode=True, statvfs=lambda p: (100 * MIB, 60 * MIB),
                             allocate=lambda p, s: pytest.fail("allocated in check mode"))
    assert result["changed"] and result["bytes"] > 0
    assert not (tmp_path / chaos.FILL_FILE_NAME).exists()


def test_fill_refused_raises_with_the_reason(tmp_path):
    with pytest.raises(RtxDrError, match="already 95.0% used"):
        chaos.fill_disk(str(tmp_path), 90, 1, statvfs=lambda p: (100 * MIB, 5 * MIB))


def test_fill_real_file_system(tmp_path):
    """posix_fallocate on the real file system, to a percentage just above the current one."""
    total, available = chaos._statvfs(str(tmp_path))  # pylint: disable=protected-access
    used = chaos.used_percent(total, available)
    if available < 64 * MIB or used > 99:
        pytest.skip("not enough room")
    target = used + min(0.5, 16.0 * MIB * 100 / total)
    result = chaos.fill_disk(str(tmp_path), target, 1)
    try:
        assert result["changed"] and result["bytes"] > 0
        assert os.path.getsize(result["path"]) == result["bytes"]
    finally:
        chaos.remove_fill(str(tmp_path))


# -- connections -----------------------------------------------------------------

class FakeServer:
    def __init__(self, slots):
        self.slots = slots
        self.open = 0

    def connect(self):
        if self.open >= self.slots:
            raise ConnectionFailedError("remaining connection slots are reserved for superusers")
        self.open += 1
        return object()

    def close(self, _conn):
        self.open -= 1


def test_hold_until_refused_then_stop_file(tmp_path):
    server = FakeServer(5)
    stop = tmp_path / "stop"
    state_file = tmp_path / "state.json"
    stop.write_text("stale")  # a stale stop file of an earlier run is removed first
    ticks = []

    def sleep(_seconds):
        ticks.append(1)
        state = json.loads(state_file.read_text())
        assert state["status"] == "holding" and state["opened"] == 5 and server.open == 5
        if len(ticks) == 3:
            stop.write_text("stop")

    state = chaos.hold_connections(server.connect, server.close, 100, 60, str(stop), str(state_file), sleep=sleep)
    assert state["opened"] == 5 and "reserved" in state["refused"]
    assert state["stopped_by"] == "stop_file" and server.open == 0
    assert json.loads(state_file.read_text())["status"] == "released"


def test_hold_times_out_and_closes(tmp_path):
    server = FakeServer(100)
    now = [0.0]

    def clock():
        now[0] += 10.0
        return now[0]

    state = chaos.hold_connections(server.connect, server.close, 3, 30, str(tmp_path / "stop"),
                                   str(tmp_path / "state.json"), clock=clock, sleep=lambda s: None)
    assert state["opened"] == 3 and state["refused"] is None
    assert state["stopped_by"] == "timeout" and server.open == 0


def test_hold_closes_even_when_interrupted(tmp_path):
    server = FakeServer(4)

    def sleep(_seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        chaos.hold_connections(server.connect, server.close, 10, 60, str(tmp_path / "stop"),
                               str(tmp_path / "state.json"), sleep=sleep)
    assert server.open == 0
    assert json.loads((tmp_path / "state.json").read_text())["status"] == "released"


def test_hold_fails_when_nothing_opens(tmp_path):
    with pytest.raises(RtxDrError, match="no connection could be opened"):
        chaos.hold_connections(FakeServer(0).connect, lambda c: None, 10, 60, str(tmp_path / "stop"),
                               str(tmp_path / "state.json"))


def test_release_stops_the_holder_and_terminates_leftovers(tmp_path):
    stop = tmp_path / "stop"
    state_file = tmp_path / "state.json"
    server = FakeServer(10)
    holder = threading.Thread(target=chaos.hold_connections,
                              args=(server.connect, server.close, 10, 60, str(stop), str(state_file)),
                              kwargs={"interval": 0.05})
    holder.start()
    for _attempt in range(100):
        if state_file.exists():
            break
        threading.Event().wait(0.05)
    leftovers = [2]
    result = chaos.release_connections(str(stop), str(state_file), lambda: leftovers[0],
                                       lambda: leftovers.pop() and leftovers.append(0) or 2, wait_seconds=10)
    holder.join(10)
    assert not holder.is_alive() and server.open == 0
    assert result["changed"] and result["holder"]["status"] == "released"
    assert result["terminated"] == 2 and result["leftover"] == 0
    assert not stop.exists() and not state_file.exists()


def test_release_without_holder_is_a_no_op(tmp_path):
    result = chaos.release_connections(str(tmp_path / "stop"), str(tmp_path / "state"), lambda: 0, lambda: 0)
    assert result == {"changed": False, "holder": None, "terminated": 0, "leftover": 0}


def test_hold_against_a_real_server(pg_cluster, tmp_path):
    """Connections really open and are really closed (pg_stat_activity)."""
    from ansible_collections.rtx.dr.plugins.module_utils import postgres

    params = pg_cluster.module_args(login_user="postgres")
    count_sql = "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'rtx.dr chaos test'"
    stop = tmp_path / "stop"
    seen = []

    def sleep(_seconds):
        seen.append(int(pg_cluster.sql(pg_cluster.primary_port, count_sql)[0]))
        stop.write_text("stop")

    state = chaos.hold_connections(lambda: postgres.connect(params, application_name="rtx.dr chaos test"),
                                   postgres.close_quietly, 4, 60, str(stop), str(tmp_path / "s.json"), sleep=sleep)
    assert state["opened"] == 4 and seen == [4]
    for _attempt in range(50):
        if int(pg_cluster.sql(pg_cluster.primary_port, count_sql)[0]) == 0:
            break
        threading.Event().wait(0.1)
    assert int(pg_cluster.sql(pg_cluster.primary_port, count_sql)[0]) == 0


# -- alert evaluation -------------------------------------------------------------

def _check(check, target, status, value, details=None):
    return {"check": check, "target": target, "status": status, "value": value, "unit": "",
            "threshold": {"warn": 1, "critical": 2}, "message": "m", "seconds": 0.01, "details": details or {}}


def test_series_lines_escape_and_hold_values():
    series = chaos.input_series([("m", {"target": 'a"b\\c'}, 2), ("m", {"target": 'a"b\\c'}, 3)], {"instance": "h"}, 5)
    assert series == [{"series": 'm{instance="h",target="a\\"b\\\\c"}', "values": "2.000000+0x5"}]


def test_exporter_samples_from_the_checks():
    health = [
        _check("postgresql", "/var/run/postgresql", "critical", None),
        _check("replication_lag", "/s", "ok", 10, {"standbys": {"s1": {"lag_seconds": 1.5, "lag_bytes": 10}}}),
        _check("disk", "/var/lib/postgresql", "critical", 92.0, {"total_bytes": 100, "available_bytes": 8}),
    ]
    samples = chaos.exporter_samples(health, {"job": "postgres"}, {"job": "node"},
                                     {"numbackends": {"rtx": 90, "postgres": 7}, "max_connections": 100},
                                     {"/var/lib/postgresql": {"mountpoint": "/", "fstype": "ext4", "device": "/dev/vda"}})
    by_name = dict(((name, tuple(sorted(labels.items()))), value) for name, labels, value in samples)
    assert by_name[("pg_up", (("job", "postgres"),))] == 0
    assert by_name[("pg_replication_lag_seconds", (("job", "postgres"), ("standby", "s1")))] == 1.5
    fs = (("device", "/dev/vda"), ("fstype", "ext4"), ("job", "node"), ("mountpoint", "/"))
    assert by_name[("node_filesystem_avail_bytes", fs)] == 8
    assert by_name[("node_filesystem_size_bytes", fs)] == 100
    assert by_name[("pg_settings_max_connections", (("job", "postgres"),))] == 100
    assert by_name[("pg_stat_database_numbackends", (("datname", "rtx"), ("job", "postgres")))] == 90


def test_agent_samples_are_the_agents():
    samples = chaos.agent_samples([_check("disk", "/", "critical", 95.0)], timestamp=1000.0)
    assert ("rtx_dr_health_check_status", {"check": "disk", "target": "/"}, 2) in samples
    assert ("rtx_dr_health_status", {}, 2) in samples


def test_promtool_document_shape(tmp_path):
    doc = chaos.promtool_test(str(tmp_path / "r.yml"), [], "A", {"check": "disk"}, True, 30)
    test = doc["tests"][0]["promql_expr_test"][0]
    assert test["expr"] == 'clamp_max(count(ALERTS{alertname="A",alertstate="firing",check="disk"}), 1)'
    assert test["exp_samples"] == [{"labels": "{}", "value": 1}] and test["eval_time"] == "30m"
    quiet = chaos.promtool_test(str(tmp_path / "r.yml"), [], "A", {}, False, 30)
    assert quiet["tests"][0]["promql_expr_test"][0]["exp_samples"] == []


def test_evaluate_refuses_broken_rules(tmp_path):
    rules = tmp_path / "r.yml"
    rules.write_text("groups: [")

    def runner(argv, **_kwargs):
        return subprocess.CompletedProcess(argv, 1, "", "yaml: line 1: did not find expected node content")

    with pytest.raises(RtxDrError, match="check rules"):
        chaos.evaluate_alerts(str(rules), [{"instance": "h", "health": []}], [{"alert": "A"}], str(tmp_path),
                              runner=runner)


def test_evaluate_refuses_without_rules(tmp_path):
    with pytest.raises(InvalidValueError, match="does not exist"):
        chaos.evaluate_alerts(str(tmp_path / "none.yml"), [], [{"alert": "A"}], str(tmp_path))


def test_evaluate_reports_a_promtool_error(tmp_path):
    rules = tmp_path / "r.yml"
    rules.write_text("groups: []\n")

    def runner(argv, **_kwargs):
        if argv[1] == "check":
            return subprocess.CompletedProcess(argv, 0, "SUCCESS", "")
        return subprocess.CompletedProcess(argv, 1, "", "error parsing the test file")

    with pytest.raises(RtxDrError, match="could not evaluate"):
        chaos.evaluate_alerts(str(rules), [{"instance": "h", "health": []}], [{"alert": "A"}], str(tmp_path),
                              runner=runner)


def _promtool():
    path = REPO / ".lab" / "tools" / "bin" / "promtool"
    return str(path) if path.is_file() else shutil.which("promtool")


def _rendered_rules(tmp_path):
    """The real rule template rendered with the role's defaults (Jinja2 with Ansible's core filters)."""
    import jinja2
    from ansible.plugins.filter.core import FilterModule

    role = REPO / "roles" / "alerting"
    variables = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    groups = yaml.safe_load((role / "vars" / "main.yml").read_text())["__alerting_groups"]
    variables["__alerting_severities"] = dict((name, sev) for alerts in groups.values() for name, sev in alerts.items())
    variables["ansible_managed"] = "test"
    env = jinja2.Environment(variable_start_string="[[", variable_end_string="]]", undefined=jinja2.StrictUndefined)
    env.filters.update(FilterModule().filters())
    text = env.from_string((role / "templates" / "prometheus-rules.yml.j2").read_text()).render(**variables)
    path = tmp_path / "rules.yml"
    path.write_text(text)
    subprocess.run([_promtool(), "check", "rules", str(path)], check=True, capture_output=True)
    return str(path)


@pytest.fixture
def real_rules(tmp_path):
    if not _promtool():
        pytest.skip("promtool not installed (make tools)")
    try:
        return _rendered_rules(tmp_path)
    except Exception as exc:  # pylint: disable=broad-except
        pytest.skip("cannot render the rule template here: %s" % exc)


def test_real_rules_fire_for_a_killed_standby(real_rules, tmp_path):
    health = [_check("postgresql", "/var/run/postgresql", "critical", None), _check("disk", "/", "ok", 50.0)]
    out = chaos.evaluate_alerts(real_rules, [{"instance": "db-2", "health": health}],
                                [{"alert": "DRHealthCheckCritical", "labels": {"instance": "db-2", "check": "postgresql"}},
                                 {"alert": "PostgresDown", "labels": {"instance": "db-2"}},
                                 {"alert": "HostDiskSpaceLow", "labels": {"instance": "db-2"}, "firing": False}],
                                str(tmp_path / "work"), promtool=_promtool(), common_labels={"cluster": "c"},
                                postgres_labels={"job": "postgres"}, node_labels={"job": "node"})
    assert out["detected"], out
    assert [a["fired"] for a in out["alerts"]] == [True, True, False]
    assert "rtx_dr_health_check_status" in Path(out["textfiles"]["db-2"]).read_text()


def test_real_rules_stay_quiet_on_a_healthy_host(real_rules, tmp_path):
    health = [_check("postgresql", "/var/run/postgresql", "ok", 0.01), _check("disk", "/", "ok", 50.0,
                                                                              {"total_bytes": 100, "available_bytes": 50})]
    out = chaos.evaluate_alerts(real_rules, [{"instance": "db-2", "health": health,
                                              "connections": {"numbackends": {"rtx": 5}, "max_connections": 100}}],
                                [{"alert": "DRHealthCheckCritical"}, {"alert": "PostgresDown"},
                                 {"alert": "PostgresTooManyConnections"}, {"alert": "HostDiskSpaceLow"}],
                                str(tmp_path / "work"), promtool=_promtool(), postgres_labels={"job": "postgres"},
                                node_labels={"job": "node"})
    assert not out["detected"]
    assert out["missing"] == ["DRHealthCheckCritical", "PostgresDown", "PostgresTooManyConnections", "HostDiskSpaceLow"]
    assert all(a["fired"] is False for a in out["alerts"])


def test_real_rules_connections_and_disk(real_rules, tmp_path):
    health = [_check("disk", "/data", "critical", 92.0, {"total_bytes": 100 * GIB, "available_bytes": 8 * GIB})]
    out = chaos.evaluate_alerts(real_rules, [{"instance": "db-3", "health": health,
                                              "connections": {"numbackends": {"rtx": 90, "postgres": 7},
                                                              "max_connections": 100},
                                              "filesystems": {"/data": {"mountpoint": "/data", "fstype": "ext4",
                                                                        "device": "/dev/sdb"}}}],
                                [{"alert": "PostgresTooManyConnections", "labels": {"instance": "db-3"}},
                                 {"alert": "HostDiskSpaceLow", "labels": {"instance": "db-3", "mountpoint": "/data"}},
                                 {"alert": "DRHealthCheckCritical", "labels": {"check": "disk"}}],
                                str(tmp_path / "work"), promtool=_promtool(), postgres_labels={"job": "postgres"},
                                node_labels={"job": "node"})
    assert out["detected"], out

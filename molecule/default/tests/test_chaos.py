"""playbooks/chaos.yml on the lab: each fault is injected, detected by the real alert rules and always removed.

Refused (nothing changed) without chaos_enabled, the drill-target inventory flag and chaos_confirm=<cluster>; each
fault (kill a standby, netem latency, disk fill, connection exhaustion) raises the alerts the report names and leaves
nothing behind: no netem qdisc, no fill file, every standby streaming, no chaos connection. A fault whose alert does
not appear fails the run after its cleanup, naming the fault.
"""

import glob
import json
import os
import re

import pytest

from conftest import PRIMARY, STANDBYS, get_host, psql, wait_for
from labtest import playbook

REPORTS = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "reports")
CLUSTER = "rtx-molecule"
DB_HOSTS = [PRIMARY] + STANDBYS
FILL_FILE = "/var/lib/postgresql/.rtx-dr-chaos-fill"
EXPECTED_ALERTS = {
    "kill_instance": {"DRHealthCheckCritical", "PostgresDown"},
    "latency": {"DRHealthCheckCritical"},
    # The containers' file system is overlay, which HostDiskSpaceLow excludes (alerting_host_fstype_exclude).
    "disk_fill": {"DRHealthCheckCritical"},
    "connections": {"PostgresTooManyConnections", "DRHealthCheckCritical"},
}


def said(result):
    return " ".join((result.stdout + result.stderr).split())


def chaos_reports():
    return sorted(glob.glob(os.path.join(REPORTS, "chaos-*.json")))


def latest_report():
    files = chaos_reports()
    assert files, "no chaos report in %s" % REPORTS
    with open(files[-1], encoding="utf-8") as handle:
        return json.load(handle)


def run_chaos(*extra):
    return playbook("chaos.yml", "-e", "chaos_enabled=true", "-e", "chaos_confirm=%s" % CLUSTER, *extra, timeout=1200)


def streaming_standbys():
    # by name: other WAL receivers (pg_receivewal of the streaming mode, application_name rtx_dr_stream) do not count
    return int(psql(get_host(PRIMARY), "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND "
                                       "application_name IN (%s)" % ", ".join("'%s'" % s for s in STANDBYS)))


def leftovers():
    """What a chaos run could leave behind, on every database host."""
    found = []
    qdisc = get_host(PRIMARY).run("tc qdisc show")
    if qdisc.rc != 0 or "netem" in qdisc.stdout:
        found.append("netem on %s: %s" % (PRIMARY, qdisc.stdout.strip()))
    for name in DB_HOSTS:
        host = get_host(name)
        if host.file(FILL_FILE).exists:
            found.append("fill file on %s" % name)
        if host.run("systemctl is-active postgresql@15-main").stdout.strip() != "active":
            found.append("PostgreSQL not active on %s" % name)
            continue
        count = psql(host, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rtx.dr chaos'")
        if count != "0":
            found.append("%s chaos connections on %s" % (count, name))
    if streaming_standbys() != len(STANDBYS):
        found.append("only %d standbys streaming" % streaming_standbys())
    return found


def assert_nothing_left():
    assert wait_for(lambda: streaming_standbys() == len(STANDBYS), timeout=60)
    assert leftovers() == []


@pytest.mark.parametrize("extra", [
    [],
    ["-e", "chaos_enabled=true"],
    ["-e", "chaos_enabled=true", "-e", "chaos_confirm=not-%s" % CLUSTER],
    ["-e", "chaos_enabled=true", "-e", "chaos_confirm=%s" % CLUSTER, "-e", "rtx_dr_drill_target=false"],
], ids=["nothing", "no-confirm", "wrong-confirm", "not-a-drill-target"])
def test_refused_without_the_guard_variables(extra):
    before = chaos_reports()
    result = playbook("chaos.yml", *extra)
    assert result.returncode != 0
    assert "chaos.yml refused, nothing was changed" in said(result)
    # only the input validation ran (ok on localhost); nothing changed anywhere
    assert "changed=0" in said(result) and not re.search(r"changed=[1-9]", said(result))
    assert chaos_reports() == before
    assert leftovers() == []


def test_check_mode_shows_the_plan_and_injects_nothing():
    before = chaos_reports()
    result = run_chaos("--check")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "check mode: nothing is injected" in said(result)
    assert "SIGKILL of the postmaster of mol-db-" in said(result)
    assert "SIGKILL of the postmaster of %s" % PRIMARY not in said(result)  # a standby, never the primary
    assert chaos_reports() == before
    assert leftovers() == []


FAULTS = ["kill_instance", "latency", "disk_fill", "connections"]


@pytest.fixture(scope="module")
def all_faults_run():
    """One chaos.yml run with every fault, in order (one playbook start instead of four)."""
    before = chaos_reports()
    result = run_chaos("-e", json.dumps({"chaos_faults": FAULTS}))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert len(chaos_reports()) == len(before) + 1
    report = latest_report()
    assert report["passed"] is True and report["cluster"] == CLUSTER
    assert [r["fault"] for r in report["results"]] == FAULTS
    return report


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_raises_its_alerts_and_is_removed(all_faults_run, fault):  # pylint: disable=redefined-outer-name
    outcome = all_faults_run["results"][FAULTS.index(fault)]
    assert outcome["injected"] and outcome["quiet_before"] and outcome["detected"], outcome
    assert outcome["healthy_after"] and outcome["problems_after"] == [] and outcome["error"] == ""
    fired = {a["alert"] for a in outcome["alerts"] if a["fired"]}
    assert fired == EXPECTED_ALERTS[fault], outcome["alerts"]
    if fault in ("kill_instance", "disk_fill", "connections"):
        assert outcome["target"].split(":")[0] in STANDBYS  # never the primary by default
    if fault == "connections":
        assert outcome["holder"]["opened"] > 0 and "reserved" in (outcome["holder"]["refused"] or "")
        assert outcome["released"]["leftover"] == 0
    if fault == "disk_fill":
        assert outcome["fill"]["used_after"] >= 90
    assert_nothing_left()


def test_an_alert_that_does_not_appear_fails_after_the_cleanup():
    # Thresholds the injected 1 s delay cannot reach: the replication_lag check never turns critical.
    loose = json.dumps({"chaos_faults": ["latency"], "chaos_detect_retries": 1,
                        "chaos_latency_thresholds": {"replication_lag": {"warn_seconds": 3000, "critical_seconds": 3600}}})
    result = run_chaos("-e", loose)
    assert result.returncode != 0
    assert "chaos FAILED on %s: latency" % CLUSTER in said(result)
    assert "alert not raised: DRHealthCheckCritical" in said(result)
    report = latest_report()
    assert report["passed"] is False and report["failed_faults"] == ["latency"]
    assert report["results"][0]["injected"] and report["results"][0]["healthy_after"]
    assert_nothing_left()

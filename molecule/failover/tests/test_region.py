"""region_failover.yml and region_failback.yml on the real lab, after test_failover.py (the primary is in east).

The whole east region (three database containers and the east application host) is stopped under write load
through the west proxy; the region failover needs the confirmation, promotes mol-db-west-1, moves both Route53
records west and starts the west demo service, which must write to the new primary. Then east comes back and the
failback rebuilds it, switches back with zero data loss and moves the records back.
"""

import glob
import json
import os

from conftest import IPS, WRITER_PASSWORD, Writer, docker, get_host, psql, role, route53_value, rows_on, \
    start_container, streaming_from, wait_for
from labtest import playbook
from test_failover import guard_journal, out, said

EAST = ["mol-db-east-1", "mol-db-east-2", "mol-db-east-3", "mol-app-east-1"]
WEST_DB = "mol-db-west-1"
APP_WEST_IP = "172.30.78.41"
APP_EAST_IP = "172.30.78.31"
APP_RECORD = "app.rtx-molecule.internal."
# The client goes through the west proxy (HAProxy on mol-app-west-1), which both playbooks repoint.
WEST_HAPROXY_DSN = ("host=%s port=5433 dbname=rtx user=failover_writer password=%s sslmode=require connect_timeout=2"
                    % (APP_WEST_IP, WRITER_PASSWORD))
REPORTS = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "reports")
# The east primary before the region failover (set by the first test).
STATE = {"east_primary": "mol-db-east-1"}


def demo_health(host):
    body = get_host(host).run("curl -s http://127.0.0.1:8080/health").stdout
    return json.loads(body) if body.startswith("{") else {}


def primary_now():
    return [h for h in sorted(IPS) if role(h) == "primary"]


def test_region_failover_needs_the_confirmation_and_moves_everything_west(probe_table):
    (east_primary,) = primary_now()
    assert east_primary.startswith("mol-db-east")
    STATE["east_primary"] = east_primary
    writer = Writer(WEST_HAPROXY_DSN)
    writer.start()
    try:
        assert writer.wait_acked(50), "no commit through the west proxy before the region failure"
        for name in EAST:
            assert docker("stop", "--time", "1", name).returncode == 0

        # --check: the plan with the data-loss estimate, nothing changes.
        check = playbook("region_failover.yml", "-e", "region_target=west", "--check")
        assert check.returncode == 0, out(check)
        assert "Region failover to west: promote %s" % WEST_DB in said(check)
        assert "Estimated data loss:" in said(check)
        # Without the confirmation: refused, nothing changes.
        refused = playbook("region_failover.yml", "-e", "region_target=west")
        assert refused.returncode != 0
        assert "Rerun with -e region_confirm=west" in said(refused)
        assert role(WEST_DB) == "standby"

        result = playbook("region_failover.yml", "-e", "region_target=west", "-e", "region_confirm=west")
        assert result.returncode == 0, out(result)
        assert writer.wait_acked(50, timeout=60), "the writer did not reach the new primary through the west proxy"
    finally:
        writer.stop()

    assert "REGION FAILOVER COMPLETE: %s in west is the primary" % WEST_DB in said(result)
    assert role(WEST_DB) == "primary"
    missing = set(writer.acked) - rows_on(WEST_DB)
    assert not missing, "%d acknowledged commits are missing on %s" % (len(missing), WEST_DB)
    # Both records point west.
    assert route53_value() == IPS[WEST_DB]
    assert route53_value(APP_RECORD) == APP_WEST_IP
    # The west demo service runs and writes to the new primary.
    health = wait_for(lambda: (demo_health("mol-app-west-1").get("db") or {}).get("host") == WEST_DB
                      and demo_health("mol-app-west-1"), timeout=60)
    assert health and health["status"] == "ok", health
    seq = health["db"]["last_acked_seq"]
    assert psql(get_host(WEST_DB), "SELECT count(*) FROM demo.orders WHERE host = 'mol-app-west-1' AND seq = %d"
                % seq, db="rtx") == "1"
    # The record, the report: kind region, estimate and RTO.
    row = psql(get_host(WEST_DB), "SELECT kind || '|' || status || '|' || ((details->'region'->>'rto_seconds')::numeric"
                                  " > 0) FROM dr.failover_history ORDER BY started_at DESC LIMIT 1", db="rtx")
    assert row == "region|complete|true", row
    reports = sorted(glob.glob(os.path.join(REPORTS, "region-failover-*.json")))
    assert reports, "no region report in %s" % REPORTS
    report = json.load(open(reports[-1]))
    assert report["new_primary"] == WEST_DB and report["target_region"] == "west"
    assert report["estimated_loss_bytes"] is not None and float(report["rto_seconds"]) > 0


def test_the_fence_guard_keeps_the_returning_east_primary_down():
    for name in EAST:
        start_container(name)
    old = STATE["east_primary"]
    # It has no standby.signal (it was stopped with its region), but the leader record in S3 names mol-db-west-1:
    # its PostgreSQL unit fails to start instead of coming up writable on the old timeline.
    assert role(old) == "down"
    assert get_host(old).run("systemctl is-failed postgresql@15-main").stdout.strip() == "failed"
    journal = " ".join(guard_journal(old).split())
    assert "REFUSED to start PostgreSQL on %s as a primary" % old in journal
    assert "%s accepts writes" % WEST_DB in journal and "the leader record names %s" % WEST_DB in journal
    assert "region_failback.yml" in journal
    # The region's standbys start (standby.signal: read-only); nothing in east accepts writes.
    for name in [h for h in EAST if h.startswith("mol-db-east") and h != old]:
        assert wait_for(lambda n=name: role(n) == "standby", timeout=30), name
    assert primary_now() == [WEST_DB]


def test_region_failback_rebuilds_east_and_switches_back_without_loss(probe_table):
    for name in EAST:
        start_container(name)
    writer = Writer(WEST_HAPROXY_DSN)
    writer.start()
    try:
        assert writer.wait_acked(50), "no commit through the west proxy before the failback"
        refused = playbook("region_failback.yml", "-e", "region_target=east")
        assert refused.returncode != 0 and "Rerun with -e region_confirm=east" in said(refused)
        result = playbook("region_failback.yml", "-e", "region_target=east", "-e", "region_confirm=east")
        assert result.returncode == 0, out(result)
        assert writer.wait_acked(50, timeout=60), "the writer did not reach the primary after the failback"
    finally:
        writer.stop()
    assert "REGION FAILBACK COMPLETE: mol-db-east-1 in east is the primary" in said(result)
    # The guard kept the old primary down: it is rebuilt from "postgres down", in one rejoin run with the others.
    assert "plan: rejoin %s (postgres down) as a standby of %s" % (STATE["east_primary"], WEST_DB) in said(result)
    assert "Rejoin 3/3:" in said(result)
    assert primary_now() == ["mol-db-east-1"]
    missing = set(writer.acked) - rows_on("mol-db-east-1")
    assert not missing, "%d acknowledged commits lost in the failback" % len(missing)
    followers = wait_for(lambda: streaming_from("mol-db-east-1"), timeout=60)
    assert set(followers) >= {"mol-db-east-2", "mol-db-east-3", WEST_DB}, followers
    assert route53_value() == IPS["mol-db-east-1"]
    assert route53_value(APP_RECORD) == APP_EAST_IP
    # The west demo service is back to its standby state (stopped), the east one writes.
    assert get_host("mol-app-west-1").run("systemctl is-active rtx-demo-app").stdout.strip() != "active"
    assert wait_for(lambda: demo_health("mol-app-east-1").get("status") == "ok", timeout=60)

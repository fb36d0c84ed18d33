"""playbooks/dr_drill.yml drill=failover on the lab: a planned switchover to the synchronous standby and back under
the demo service's writes. Runs after test_failover.py and test_region.py (which count timelines from the converged
state): the region failback has made mol-db-east-1 the primary again.

The drill itself checks every sequence number the demo service was acknowledged against demo.orders on the final
primary; the test checks the drill's record, its report and the cluster it left.
"""

import glob
import json
import os

from conftest import get_host, psql, role
from labtest import playbook

REPORTS = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "reports")
PRIMARY = "mol-db-east-1"


def test_region_drill_in_check_mode_shows_its_plan_and_changes_nothing():
    """The region stage (region_failover.yml then region_failback.yml) runs for real on the lab (docs/runbooks/
    dr_drill.md); here its --check: every stage's plan, nothing moved, nothing recorded."""
    assert role(PRIMARY) == "primary"
    primary = get_host(PRIMARY)
    drills = "SELECT count(*) FROM dr.drill_history"
    before = psql(primary, drills, db="rtx")
    timeline = psql(primary, "SELECT timeline_id FROM pg_control_checkpoint()")
    result = playbook("dr_drill.yml", "-e", "drill=region", "-e", "drill_confirm=rtx-molecule", "--check",
                      timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-5000:] + result.stderr[-2000:]
    assert "region drill: region failover to west, then failback to east" in out, out[-5000:]
    assert "REGION FAILOVER PLANNED (check mode): mol-db-west-1 in west is the primary" in out, out[-5000:]
    assert "stages region planned; nothing" in out, out[-3000:]
    assert role(PRIMARY) == "primary" and role("mol-db-west-1") == "standby"
    assert psql(primary, drills, db="rtx") == before
    assert psql(primary, "SELECT timeline_id FROM pg_control_checkpoint()") == timeline


def test_failover_drill_switches_over_and_back_without_losing_a_commit():
    assert role(PRIMARY) == "primary"
    result = playbook("dr_drill.yml", "-e", "drill=failover", "-e", "drill_confirm=rtx-molecule", timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    files = sorted(glob.glob(os.path.join(REPORTS, "drill-failover-*.json")))
    assert files
    with open(files[-1], encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["status"] == "passed", report["verdict"]["reasons"]
    measured = report["verdict"]["stages"][0]["measured"]
    out_to = measured["path"][1]
    assert measured["path"] == [PRIMARY, out_to, PRIMARY] and out_to != PRIMARY
    assert measured["lost_commits"] == []
    # The loss check really compared commits: the demo service wrote during the drill.
    assert int(measured["acked_checked"]) > 10
    assert 0 < float(measured["rto_seconds"]) < 300
    assert report["end_primary"] == PRIMARY
    assert role(PRIMARY) == "primary" and role(out_to) == "standby"
    primary = get_host(PRIMARY)
    assert psql(primary, "SELECT status || '|' || lost_commits || '|' || objectives_met FROM dr.drill_history"
                " WHERE drill_id = '%s'" % report["drill_id"], db="rtx") == "passed|0|true"
    # Both switchovers are recorded as such, with the drill's id in their reason.
    assert psql(primary, "SELECT count(*) FROM dr.failover_history WHERE kind = 'switchover' AND status = 'complete'"
                " AND reason LIKE '%%%s%%'" % report["drill_id"], db="rtx") == "2"

"""playbooks/dr_drill.yml drill=restore on the lab (after test_backup.py: a complete physical backup exists).

The restore drill restores the latest backup + WAL into a scratch server on the west standby, is judged against
rtx_dr_objectives and recorded in dr.drill_history and a JSON report. A drill that misses an objective fails and says
which; drills that move the primary are refused without the cluster's name as confirmation.
"""

import glob
import json
import os

from conftest import PRIMARY, WEST_STANDBY, get_host, psql
from labtest import playbook

REPORTS = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "reports")
CLUSTER = "rtx-molecule"


def said(result):
    return " ".join((result.stdout + result.stderr).split())


def latest_report(kind):
    files = sorted(glob.glob(os.path.join(REPORTS, "drill-%s-*.json" % kind)))
    assert files, "no drill-%s report in %s" % (kind, REPORTS)
    with open(files[-1], encoding="utf-8") as handle:
        return json.load(handle)


def drill_row(drill_id):
    return psql(get_host(PRIMARY), "SELECT status || '|' || coalesce(objectives_met::text, '') || '|' || coalesce(error, '')"
                " FROM dr.drill_history WHERE drill_id = '%s'" % drill_id, db="rtx")


def drill_count():
    return int(psql(get_host(PRIMARY), "SELECT count(*) FROM dr.drill_history", db="rtx"))


def test_restore_drill_is_measured_judged_and_recorded():
    result = playbook("dr_drill.yml", "-e", "drill=restore")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "DR DRILL restore: PASSED" in said(result)
    report = latest_report("restore")
    assert report["status"] == "passed"
    stage = report["verdict"]["stages"][0]
    measured = stage["measured"]
    assert measured["host"] == WEST_STANDBY
    assert float(measured["rto_seconds"]) > 0
    # The demo app commits 5 times a second and archive_timeout is 60 s: the restorable end is recent.
    assert measured["rpo_seconds"] is not None and float(measured["rpo_seconds"]) < 300
    assert {(c["component"], c["objective"]) for c in stage["checks"]} == {("database", "RTO"), ("database", "RPO")}
    assert drill_row(report["drill_id"]) == "passed|true|"
    # The restore it ran is in restore_history, verify-only and complete.
    assert psql(get_host(PRIMARY), "SELECT status || '|' || verify_only FROM dr.restore_history WHERE restore_id = '%s'"
                % measured["restore_id"], db="rtx") == "complete|true"


def test_a_missed_objective_fails_the_drill_and_names_it():
    tight = json.dumps({"rtx_dr_objectives": {"database": {"rto": "1s", "rpo": "1h"}}})
    result = playbook("dr_drill.yml", "-e", "drill=restore", "-e", tight)
    assert result.returncode != 0
    assert "DR DRILL restore: FAILED" in said(result)
    assert "MISSED" in said(result)
    report = latest_report("restore")
    assert report["status"] == "failed"
    assert any(r.startswith("restore RTO") and r.endswith("> database objective 1 s") for r in report["verdict"]["reasons"])
    status, met, error = drill_row(report["drill_id"]).split("|", 2)
    assert (status, met) == ("failed", "false")
    assert "database objective 1 s" in error


def test_drills_that_move_the_primary_need_the_cluster_name():
    before = drill_count()
    result = playbook("dr_drill.yml", "-e", "drill=failover", "-e", "drill_confirm=not-%s" % CLUSTER)
    assert result.returncode != 0
    assert "need drill_confirm=%s" % CLUSTER in said(result)
    assert "Nothing was changed" in said(result)
    assert drill_count() == before
    assert psql(get_host(PRIMARY), "SELECT pg_is_in_recovery()") == "f"

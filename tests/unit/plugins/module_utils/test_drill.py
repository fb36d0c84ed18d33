# -*- coding: utf-8 -*-
# Copyright: rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DR drill rules: stages, objectives, acknowledged-commit loss, verdict."""

import datetime

import pytest

from ansible_collections.rtx.dr.plugins.module_utils import drill
from ansible_collections.rtx.dr.plugins.module_utils import report
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError

SEED = {
    "database": {"rto": "15m", "rpo": "1m", "availability": 99.9},
    "trading_engine": {"rto_seconds": 300, "rpo_seconds": 30},
}


def test_full_drill_runs_restore_then_failover_then_region():
    assert drill.drill_stages("full") == ["restore", "failover", "region"]
    assert drill.drill_stages("failover") == ["failover"]


def test_unknown_drill_is_named():
    with pytest.raises(InvalidValueError, match="drill must be one of restore, failover, region, full.*'chaos'"):
        drill.drill_stages("chaos")


@pytest.mark.parametrize("value, expected", [
    (900, 900.0), ("15m", 900.0), ("30 s", 30.0), ("1h", 3600.0), ("2.5min", 150.0), ("500ms", 0.5), ("45", 45.0)])
def test_durations(value, expected):
    assert drill.seconds(value) == expected


@pytest.mark.parametrize("value", ["soon", "-5s", None, True, "15 fortnights"])
def test_bad_durations_say_what_is_expected(value):
    with pytest.raises(InvalidValueError, match="rpo"):
        drill.seconds(value, "rpo")


def test_objectives_normalised_and_extra_keys_kept():
    table = drill.normalize_objectives(SEED)
    assert table["database"]["rto_seconds"] == 900.0
    assert table["database"]["rpo_seconds"] == 60.0
    assert table["database"]["availability"] == 99.9
    assert table["trading_engine"]["rpo_seconds"] == 30.0


def test_objective_without_rpo_is_refused_by_name():
    with pytest.raises(InvalidValueError, match=r"rtx_dr_objectives.database has no rpo"):
        drill.normalize_objectives({"database": {"rto": "15m"}})
    with pytest.raises(InvalidValueError, match="mapping"):
        drill.normalize_objectives([])


def test_acked_log_parsing_ignores_a_torn_last_line_only():
    assert drill.parse_acked("5\n6\n7\n8", after=6) == [7, 8]
    assert drill.parse_acked("5\n6\n7", after=None) == [5, 6, 7]
    assert drill.parse_acked("5\n6\n7\n12a") == [5, 6, 7]
    with pytest.raises(InvalidValueError, match="line 2"):
        drill.parse_acked("5\nxx\n7\n")
    assert drill.parse_acked("") == []


def test_lost_commits_are_the_acked_ones_missing():
    assert drill.lost_commits([1, 2, 3, 4], [1, 2, 4, 9]) == [3]
    assert drill.lost_commits([1, 2], ["1", "2"]) == []


def _failover(rto=12.0, lost=()):
    return {"status": "complete", "rto_seconds": rto, "rpo_seconds": 0.0 if not lost else None,
            "lost_commits": list(lost), "required_zero_loss": True}


def test_failover_drill_passes_within_objectives_and_without_loss():
    verdict = drill.drill_verdict("failover", {"failover": _failover()}, SEED)
    assert verdict["passed"] and verdict["status"] == "passed"
    assert verdict["rto_seconds"] == 12.0 and verdict["lost_commits"] == 0
    checks = verdict["stages"][0]["checks"]
    assert {(c["component"], c["objective"]) for c in checks} == {
        ("database", "RTO"), ("database", "RPO"), ("trading_engine", "RTO"), ("trading_engine", "RPO")}


def test_a_lost_acknowledged_commit_fails_the_drill_and_is_named():
    verdict = drill.drill_verdict("failover", {"failover": _failover(lost=[41, 42])}, SEED)
    assert not verdict["passed"]
    assert any("lost 2 acknowledged commit(s), e.g. 41, 42" in r for r in verdict["reasons"])
    assert verdict["lost_commits"] == 2


def test_rto_over_the_tighter_objective_is_missed():
    verdict = drill.drill_verdict("failover", {"failover": _failover(rto=400.0)}, SEED)
    assert not verdict["passed"]
    assert verdict["reasons"] == ["failover RTO 400.0 s > trading_engine objective 300 s"]


def test_a_stage_that_did_not_run_fails_the_full_drill():
    results = {"restore": {"status": "complete", "rto_seconds": 40.0, "rpo_seconds": 20.0},
               "failover": _failover()}
    verdict = drill.drill_verdict("full", results, SEED)
    assert not verdict["passed"]
    assert "region did not complete: the stage did not run" in verdict["reasons"]
    assert [s["stage"] for s in verdict["stages"]] == ["restore", "failover", "region"]
    assert verdict["rto_seconds"] == 40.0


def test_restore_rpo_not_measured_is_a_miss_not_a_pass():
    verdict = drill.drill_verdict("restore", {"restore": {"status": "complete", "rto_seconds": 40.0}}, SEED)
    assert not verdict["passed"]
    assert verdict["reasons"] == ["restore RPO of database not measured"]


def test_components_must_exist_in_the_objectives():
    with pytest.raises(InvalidValueError, match="judged against websocket, which rtx_dr_objectives does not define"):
        drill.drill_verdict("restore", {"restore": {"status": "complete"}}, SEED, {"restore": ["websocket"]})


def test_restore_rpo_from_the_log_time():
    started = datetime.datetime(2026, 11, 27, 15, 41, 0, tzinfo=datetime.timezone.utc).timestamp()
    assert drill.restore_rpo("2026-11-27 15:40:01.5+00", started) == 58.5
    assert drill.restore_rpo("2026-11-27 15:42:00+00", started) == 0.0
    assert drill.restore_rpo("", started) is None
    assert drill.restore_rpo("2026-11-27 15:40:01", started) is None
    assert drill.restore_rpo("2026-11-27 15:40:01+00", None) is None


def test_lines_say_passed_or_failed_and_show_each_check():
    lines = drill.verdict_lines(drill.drill_verdict("failover", {"failover": _failover(rto=400.0)}, SEED))
    assert lines[0] == "DR DRILL failover: FAILED"
    assert any("trading_engine RTO: 400.0 s (objective <= 300 s) MISSED" in line for line in lines)
    assert lines[-1].startswith("reason: failover RTO 400.0 s")


def test_zero_loss_needs_checked_commits_when_writers_are_required():
    measured = dict(_failover(), acked_checked=0)
    verdict = drill.drill_verdict("failover", {"failover": measured}, SEED)
    assert verdict["reasons"] == [
        "failover: no acknowledged commit of a synthetic writer was checked, so zero loss is not proven"]
    measured["require_writers"] = "False"
    assert drill.drill_verdict("failover", {"failover": measured}, SEED)["passed"]
    assert drill.drill_verdict("failover", {"failover": dict(_failover(), acked_checked=250)}, SEED)["passed"]


def test_measurements_as_text_from_templates_are_numbers():
    """A full drill mixes numbers and their text (found in the lab: max() of '4.5' and 50.9 failed)."""
    results = {"restore": {"status": "complete", "rto_seconds": "4.5", "rpo_seconds": "13.2"},
               "failover": dict(_failover(rto=7.0), acked_checked="388"),
               "region": {"status": "complete", "rto_seconds": 50.9, "rpo_seconds": "None",
                          "lost_commits": [], "acked_checked": 1082, "required_zero_loss": "True"}}
    verdict = drill.drill_verdict("full", results, SEED)
    assert verdict["rto_seconds"] == 50.9 and verdict["rpo_seconds"] == 13.2
    assert verdict["reasons"] == ["region RPO of database not measured", "region RPO of trading_engine not measured"]
    with pytest.raises(InvalidValueError, match="restore rto_seconds: 'fast' is not a number"):
        drill.drill_verdict("restore", {"restore": {"status": "complete", "rto_seconds": "fast"}}, SEED)


def test_objectives_are_read_as_the_dr_report_reads_them():
    """One parser of rtx_dr_objectives: the drills take the report's values, in their own shape."""
    table = drill.normalize_objectives(report.DEFAULT_OBJECTIVES)
    for item in report.normalise_objectives(report.DEFAULT_OBJECTIVES):
        assert table[item["name"]]["rto_seconds"] == item["rto_seconds"]
        assert table[item["name"]]["rpo_seconds"] == item["rpo_seconds"]
    assert table["admin_panel"]["rto_seconds"] == 3600.0 and table["trading_engine"]["rpo_seconds"] == 30.0
    assert isinstance(drill.normalize_objectives({"db": {"rto": 900, "rpo": 60}})["db"]["rto_seconds"], float)
    # Already normalised (the playbook passes the table on to drill_verdict): unchanged.
    assert drill.normalize_objectives(table) == table


@pytest.mark.parametrize("spec, words", [
    ({"rto": "soon", "rpo": "1m"}, "database.rto"),
    ({"rto": "15m", "rpo": -5}, "database.rpo"),
    ({"rto": "15m", "rpo": True}, "database.rpo"),
    ({"rto": "15m", "rpo": "1m", "availability": 120}, "percentage"),
    ({"rto": "15m", "rpo": "1m", "measured_by": ["reboot"]}, "reboot"),
])
def test_objectives_the_report_refuses_are_refused_by_the_drills_too(spec, words):
    with pytest.raises(InvalidValueError, match=words):
        drill.normalize_objectives({"database": spec})


def test_seconds_and_the_report_agree_on_durations():
    for text in ("15m", "30 s", "1h", "2.5min", "500ms", "45", "3 hours", "10 secs"):
        assert drill.seconds(text) == report.parse_duration(text)
    assert report.parse_duration("15 fortnights") is None


def test_log_time_of_postgresql_spellings():
    utc = datetime.timezone.utc
    expected = datetime.datetime(2026, 11, 27, 15, 40, 1, 123456, tzinfo=utc)
    for text in ("2026-11-27 15:40:01.123456+00", "2026-11-27 15:40:01.123456 UTC", "2026-11-27T15:40:01.123456Z",
                 "2026-11-27 16:40:01.123456+01"):
        assert drill._log_time(text) == expected, text  # pylint: disable=protected-access
    for text in ("", None, "2026-11-27 15:40:01", "yesterday"):
        assert drill._log_time(text) is None, text  # pylint: disable=protected-access

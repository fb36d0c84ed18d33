# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""module_utils/report.py: period, aggregation (edge cases), objectives, Markdown/HTML/SVG rendering and escaping."""

from __future__ import annotations

import datetime
import json
import sys
import xml.etree.ElementTree as ET
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripted_db import ScriptedConnection  # noqa: E402 pylint: disable=wrong-import-position

from ansible_collections.rtx.dr.plugins.module_utils import report  # noqa: E402 pylint: disable=wrong-import-position
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError  # noqa: E402 pylint: disable=wrong-import-position

UTC = datetime.timezone.utc
END = datetime.datetime(2026, 11, 30, tzinfo=UTC)
START = END - datetime.timedelta(days=7)
NOW = datetime.datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
EVIL = '<script>alert("x")</script> & | `*_[x](javascript:1)'


def at(day, hour=2, minute=0):
    return datetime.datetime(2026, 11, 23 + day, hour, minute, tzinfo=UTC)


def backup(backup_id, day, status="complete", kind="physical", seconds=60, stored=300 * 2 ** 20, error=None):
    started = at(day)
    return {"backup_id": backup_id, "kind": kind, "status": status, "host": "db-east-1", "started_at": started,
            "finished_at": None if status == "running" else started + datetime.timedelta(seconds=seconds),
            "duration_seconds": None if status == "running" else Decimal("%d.250" % seconds),
            "size_raw_bytes": None if status != "complete" else stored * 3,
            "size_compressed_bytes": None if status != "complete" else stored, "compression": "zstd", "error": error}


def restore(restore_id, day, status="complete", rto="41.5", rpo="12", verify_only=True):
    return {"restore_id": restore_id, "backup_id": "B1", "target_type": "latest", "target_value": None,
            "destination_host": "db-west-1", "verify_only": verify_only, "started_at": at(day, 4),
            "finished_at": at(day, 4, 5), "status": status, "rto_seconds": None if rto is None else Decimal(rto),
            "achieved_rpo_seconds": None if rpo is None else Decimal(rpo), "error": None}


def failover(failover_id, kind, day, seconds="9.8", loss=0, region_rto=None, region_loss=None, status="complete"):
    return {"failover_id": failover_id, "kind": kind, "old_primary": "db-east-1", "new_primary": "db-east-2",
            "old_timeline": 1, "new_timeline": 2, "data_loss_bytes": loss, "started_at": at(day, 10),
            "finished_at": at(day, 10, 1), "duration_seconds": Decimal(seconds), "status": status,
            "operator": "oncall", "reason": "drill", "region_rto_seconds": region_rto,
            "region_loss_seconds": region_loss, "loss_is_lower_bound": None}


def health_host(host, check, samples, ok, warn=0, critical=0):
    return {"host": host, "check_name": check, "samples": samples, "ok": ok, "warn": warn, "critical": critical,
            "unknown": samples - ok - warn - critical, "first_seen": START, "last_seen": END}


def raw(**overrides):
    data = {"backups": [], "verifications": [], "restores": [], "failovers": [], "drills": [],
            "health_hosts": [], "health_service": []}
    data.update(overrides)
    return data


def build(data, **kwargs):
    return report.aggregate(data, "weekly", START, END, now=NOW, **kwargs)


def objective(rep, name):
    return next(o for o in rep["objectives"] if o["name"] == name)


# --------------------------------------------------------------------------
# Period
# --------------------------------------------------------------------------


def test_period_window_weekly_and_monthly():
    assert report.period_window("weekly", "2026-11-29", NOW) == (START, END)
    assert report.period_window("weekly", None, NOW) == (NOW - datetime.timedelta(days=7), NOW)
    assert report.period_window("monthly", "2026-10-31", NOW) == (
        datetime.datetime(2026, 10, 1, tzinfo=UTC), datetime.datetime(2026, 11, 1, tzinfo=UTC))
    # 31 March -> the last day of February; January -> December of the year before.
    start, end = report.period_window("monthly", "2026-03-31T12:00:00Z", NOW)
    assert (start, end) == (datetime.datetime(2026, 2, 28, 12, tzinfo=UTC), datetime.datetime(2026, 3, 31, 12, tzinfo=UTC))
    assert report.period_window("monthly", "2026-01-15T00:00:00+01:00", NOW)[0] == datetime.datetime(
        2025, 12, 14, 23, tzinfo=UTC)


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "2026-11-29T25:00"])
def test_invalid_end_is_refused(value):
    with pytest.raises(InvalidValueError, match="Invalid end"):
        report.parse_end(value, NOW)


def test_invalid_period_is_refused():
    with pytest.raises(InvalidValueError, match="daily"):
        report.period_window("daily", None, NOW)


# --------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------


def test_empty_period_renders_and_misses_the_backup_objective():
    rep = build(raw())
    b = rep["backups"]
    assert b["total"] == 0 and b["success_rate"] is None and b["rated"] == 0
    assert len(b["per_day"]) == 7 and all(d["total"] == 0 for d in b["per_day"])
    rate = objective(rep, "backup success rate")
    assert rate["status"] == "missed" and rate["measured"] is None and "no backups in this period" in rate["detail"]
    assert objective(rep, "database RTO")["status"] == "not measured"
    assert objective(rep, "health-check uptime")["status"] == "not measured"
    assert rep["summary"]["ok"] is False and "backup success rate" in rep["summary"]["missed_objectives"]
    markdown, page = report.render_markdown(rep), report.render_html(rep)
    assert "no backups in this period" in markdown and "no backups in this period" in page
    ET.fromstring(report.render_svg([], START, END))
    json.dumps(rep)


def test_backup_success_rate_per_day_and_sizes():
    rows = [backup("B%d" % i, i) for i in range(6)]
    rows += [backup("BF", 6, status="failed", error="disk full"), backup("BA", 6, status="aborted"),
             backup("BR", 6, status="running"), backup("BL", 2, kind="logical", seconds=30),
             backup("W1", 3, kind="wal")]
    rep = build(raw(backups=rows))
    b = rep["backups"]
    assert (b["total"], b["complete"], b["failed"], b["aborted"], b["running"]) == (10, 7, 1, 1, 1)
    assert b["rated"] == 8 and b["success_rate"] == 87.5 and b["wal_batches"] == 1
    assert b["by_kind"]["logical"] == {"total": 1, "complete": 1, "failed": 0, "success_rate": 100.0}
    assert b["bytes_stored"] == 7 * 300 * 2 ** 20 and b["bytes_raw"] == 3 * b["bytes_stored"]
    assert b["duration_seconds_max"] == 60.25
    day2 = b["per_day"][2]
    assert day2["date"] == "2026-11-25" and day2["total"] == 2 and day2["complete"] == 2
    last = b["per_day"][6]
    assert (last["total"], last["complete"], last["failed"], last["other"]) == (3, 0, 1, 2)
    assert [f["backup_id"] for f in b["failures"]] == ["BF", "BA"]
    assert len(b["chart"]) == 8  # complete and failed, not running/aborted
    assert objective(rep, "backup success rate")["status"] == "missed"
    good = build(raw(backups=[backup("B%d" % i, i % 7) for i in range(100)]))
    assert objective(good, "backup success rate")["status"] == "met"


def test_backup_rows_are_limited_but_counted():
    rep = build(raw(backups=[backup("B%03d" % i, i % 7) for i in range(30)]), max_rows=10)
    assert rep["backups"]["total"] == 30 and len(rep["backups"]["items"]) == 10
    assert rep["backups"]["items_omitted"] == 20 and rep["backups"]["items"][-1]["backup_id"] == "B029"
    assert "20 older row(s) not shown" in report.render_markdown(rep)


def test_verifications_restores_failovers_and_drills():
    verifications = [
        {"backup_id": "B1", "kind": "physical", "verified_at": at(1, 6), "status": "failed", "findings": 2,
         "objects_checked": 3, "bytes_read": 10, "duration_seconds": Decimal("1.5"), "host": "ctl"},
        {"backup_id": "B1", "kind": "physical", "verified_at": at(2, 6), "status": "passed", "findings": 0,
         "objects_checked": 3, "bytes_read": 10, "duration_seconds": Decimal("1.5"), "host": "ctl"},
        {"backup_id": "B2", "kind": "physical", "verified_at": at(3, 6), "status": "failed", "findings": 1,
         "objects_checked": 3, "bytes_read": 10, "duration_seconds": Decimal("1.5"), "host": "ctl"}]
    restores = [restore("R1", 1), restore("R2", 2, rto="1200.5", rpo="30"), restore("R3", 3, status="failed", rto=None)]
    failovers = [failover("S1", "switchover", 1), failover("F1", "failover", 2, seconds="20", loss=4096),
                 failover("G1", "region", 3, seconds="30", loss=8192, region_rto="95.5", region_loss="2.5"),
                 failover("J1", "rejoin", 4)]
    drills = [{"drill_id": "D1", "kind": "restore", "started_at": at(1, 3), "finished_at": at(1, 4), "status": "passed",
               "rto_seconds": Decimal("41"), "rpo_seconds": Decimal("5"), "lost_commits": 0, "objectives_met": True,
               "operator": "awx", "error": None},
              {"drill_id": "D2", "kind": "full", "started_at": at(2, 3), "finished_at": at(2, 4), "status": "aborted",
               "rto_seconds": None, "rpo_seconds": None, "lost_commits": None, "objectives_met": None,
               "operator": "awx", "error": "died"}]
    rep = build(raw(verifications=verifications, restores=restores, failovers=failovers, drills=drills))
    v = rep["verifications"]
    assert (v["total"], v["passed"], v["failed"], v["backups_verified"]) == (3, 1, 2, 2)
    assert v["backups_failing_last"] == ["B2"]
    r = rep["restores"]
    assert (r["total"], r["drills"], r["complete"], r["failed"]) == (3, 3, 2, 1)
    assert r["rto_seconds_max"] == 1200.5 and r["rto_seconds_avg"] == 621.0
    f = rep["failovers"]
    assert f["total"] == 3 and f["rejoins"] == 1
    region = next(i for i in f["items"] if i["kind"] == "region")
    assert region["rto_seconds"] == 95.5 and region["data_loss_seconds"] == 2.5 and region["data_loss_bytes"] == 8192
    unplanned = next(i for i in f["items"] if i["kind"] == "failover")
    assert unplanned["rto_seconds"] == 20 and unplanned["data_loss_seconds"] is None  # bytes lost, time unknown
    assert next(i for i in f["items"] if i["kind"] == "switchover")["data_loss_seconds"] == 0
    assert rep["drills"]["pass_rate"] == 50.0 and rep["drills"]["failed"] == 1
    assert objective(rep, "DR drills passed")["status"] == "missed"
    assert objective(rep, "backup verification")["status"] == "missed"
    assert objective(rep, "restore drill success")["status"] == "missed"
    database_rto = objective(rep, "database RTO")
    assert database_rto["status"] == "missed" and database_rto["measured"] == 1200.5
    assert "R3" in database_rto["detail"] and "R2" in database_rto["detail"]
    trading_rto = objective(rep, "trading_engine RTO")
    assert trading_rto["status"] == "met" and trading_rto["measured"] == 95.5
    trading_rpo = objective(rep, "trading_engine RPO")
    assert trading_rpo["status"] == "met" and trading_rpo["measured"] == 2.5 and "1 not measured" in trading_rpo["detail"]


def test_objectives_met_when_everything_is_fine():
    service = [{"check_name": "postgresql", "minutes": 10080, "minutes_up": 10080},
               {"check_name": "api", "minutes": 10080, "minutes_up": 10079}]
    hosts = [health_host("db-east-1", "postgresql", 10080, 10080), health_host("app-east-1", "api", 10080, 10079, 0, 1),
             health_host("app-west-1", "api", 10080, 0, 0, 10080)]
    rep = build(raw(backups=[backup("B%d" % i, i) for i in range(7)],
                    verifications=[{"backup_id": "B1", "kind": "physical", "verified_at": at(1, 6), "status": "passed",
                                    "findings": 0, "objects_checked": 1, "bytes_read": 1, "duration_seconds": 1,
                                    "host": "x"}],
                    restores=[restore("R1", 1)], failovers=[failover("S1", "switchover", 2)],
                    health_hosts=hosts, health_service=service))
    statuses = dict((o["name"], o["status"]) for o in rep["objectives"])
    for name in ("backup success rate", "backup verification", "restore drill success", "health-check uptime",
                 "database RTO", "database RPO", "database availability", "trading_engine RTO",
                 "trading_engine RPO"):
        assert statuses[name] == "met", (name, rep["objectives"])
    # One minute of 10080 down is 99.99 % >= 99.95 %: met; app-west-1 (always down) only shows per host.
    assert statuses["trading_engine availability"] == "met"
    assert statuses["websocket availability"] == "not measured"
    assert statuses["market_data_feed RTO / RPO / availability"] == "not measured"
    assert rep["health"]["hosts"][2]["uptime_percent"] == 0.0
    assert rep["summary"]["missed"] == 0 and rep["summary"]["ok"] is True
    assert rep["summary"]["lines"][1].startswith("Objectives: ")


def test_health_uptime_below_target_is_missed():
    service = [{"check_name": "postgresql", "minutes": 1000, "minutes_up": 990}]
    rep = build(raw(health_hosts=[health_host("db", "postgresql", 1000, 980, warn=10, critical=10)],
                    health_service=service))
    assert rep["health"]["uptime_percent"] == 99.0
    uptime = objective(rep, "health-check uptime")
    assert uptime["status"] == "missed" and uptime["measured"] == 99.0 and "postgresql" in uptime["detail"]
    assert objective(rep, "database availability")["status"] == "missed"


# --------------------------------------------------------------------------
# Objectives configuration
# --------------------------------------------------------------------------


def test_inventory_objectives_layout():
    objectives = report.normalise_objectives({
        "database": {"rto": "15m", "rpo": "1m", "availability": 99.9},
        "trading_engine": {"rto_seconds": 300, "rpo": "30 s", "availability_percent": 99.95, "note": "kept out"},
        "batch": {"rto": "2h", "measured_by": "restore", "health_checks": ["api"]}})
    by_name = dict((o["name"], o) for o in objectives)
    assert by_name["database"]["rto_seconds"] == 900 and by_name["database"]["rpo_seconds"] == 60
    assert by_name["database"]["measured_by"] == ["restore", "failover", "switchover", "region"]
    assert by_name["trading_engine"]["rpo_seconds"] == 30 and by_name["trading_engine"]["health_checks"] == ["api"]
    assert by_name["batch"]["rto_seconds"] == 7200 and by_name["batch"]["rpo_seconds"] is None
    assert by_name["batch"]["measured_by"] == ["restore"]
    # Idempotent (the module normalises before aggregate() does again).
    assert report.normalise_objectives(objectives) == objectives
    assert [o["name"] for o in report.normalise_objectives(None)] == list(report.DEFAULT_OBJECTIVES)
    assert report.normalise_targets({"backup_success_rate_percent": 95})["backup_success_rate_percent"] == 95


@pytest.mark.parametrize("objectives,words", [
    ({"database": {"rto": "soon"}}, "database.rto"),
    ({"database": {"availability": 120}}, "percentage"),
    ({"database": {"rto": 1, "measured_by": ["reboot"]}}, "reboot"),
    ({"database": "15m"}, "must be a mapping"),
    ("database", "expected a mapping"),
])
def test_invalid_objectives_are_refused(objectives, words):
    with pytest.raises(InvalidValueError, match=words):
        report.normalise_objectives(objectives)


def test_invalid_targets_are_refused():
    with pytest.raises(InvalidValueError, match="unknown key"):
        report.normalise_targets({"uptime": 1})


# --------------------------------------------------------------------------
# Rendering and escaping
# --------------------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def evil_report():
    rows = [backup(EVIL, 1, status="failed", error=EVIL), backup("B2", 2)]
    failovers = [dict(failover("F<1>", "failover", 3), reason=EVIL, operator=EVIL)]
    hosts = [health_host(EVIL, "api", 10, 10)]
    service = [{"check_name": EVIL, "minutes": 10, "minutes_up": 10}]
    return build(raw(backups=rows, failovers=failovers, health_hosts=hosts, health_service=service),
                 cluster="c<l>&\"uster\"")


def test_html_escapes_everything_from_the_database():
    page = report.render_html(evil_report())
    assert "<script>" not in page and "javascript:1)" in page  # as text only
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; |" in page
    assert "c&lt;l&gt;&amp;&quot;uster&quot;" in page
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert "script" not in parser.tags and "a" not in parser.tags
    assert set(parser.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "strong", "ul", "li",
                                "table", "thead", "tbody", "tr", "th", "td", "figure", "figcaption", "svg", "rect",
                                "text", "line", "circle", "polyline"}
    assert any(EVIL in text for text in parser.text)


def test_markdown_escapes_tables_and_html():
    markdown = report.render_markdown(evil_report())
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    # the pipe in the value is escaped: the row keeps its column count
    backups_header = "| backup id | kind | status | host | started | duration | raw size | stored size | error |"
    lines = markdown.splitlines()
    row = lines[lines.index(backups_header) + 2]
    assert row.count("|") - row.count("\\|") == backups_header.count("|")
    assert "\\`" in row and "\\*" in row and "\\_" in row and "\\[" in row


def test_svg_chart_is_well_formed_xml_with_escaped_titles():
    rep = evil_report()
    svg = report.render_svg(rep["backups"]["chart"], START, END)
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    ns = {"s": "http://www.w3.org/2000/svg"}
    circles = root.findall("s:circle", ns)
    assert len(circles) == 2 * 2  # two backups, two panels
    titles = [c.find("s:title", ns).text for c in circles]
    assert any(EVIL in t for t in titles)
    assert {c.get("fill") for c in circles} == {"#c0392b", "#2471a3"}
    # the chart sits in the HTML page and the whole page's SVG parses too
    page = report.render_html(rep)
    ET.fromstring(page[page.index("<svg"):page.index("</svg>") + len("</svg>")])


def test_svg_with_many_points_draws_lines():
    points = [{"started_at": report.iso(at(i % 7, i % 24)), "kind": "physical", "status": "complete",
               "duration_seconds": 10 + i, "size_compressed_bytes": 2 ** 20 * i, "backup_id": "B%d" % i}
              for i in range(20)]
    root = ET.fromstring(report.render_svg(points, START, END))
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    for circle in root.iter("{http://www.w3.org/2000/svg}circle"):
        assert 0 <= float(circle.get("cx")) <= 720 and 0 <= float(circle.get("cy")) <= 260


# --------------------------------------------------------------------------
# fetch / build_report / files
# --------------------------------------------------------------------------


def script(tables=None, **rows):
    present = dict((table, True) for table in report.TABLES)
    present.update(tables or {})
    return [("to_regclass", [present]),
            ("size_compressed_bytes", rows.get("backups", [])),
            ("verified_at", rows.get("verifications", [])),
            ("achieved_rpo_seconds", rows.get("restores", [])),
            ("failover_id", rows.get("failovers", [])),
            ("drill_id", rows.get("drills", [])),
            ("bool_or", rows.get("health_service", [])),
            ("first_seen", rows.get("health_hosts", []))]


def test_build_report_reads_only_with_the_period_as_parameters():
    conn = ScriptedConnection(script(backups=[backup("B1", 1)]))
    rep, markdown, page = report.build_report({"period": "weekly", "end": "2026-11-29", "schema": "dr",
                                               "cluster_name": "lab"}, lambda params: conn, now=NOW)
    assert conn.closed
    assert all(q.lstrip().upper().startswith("SELECT") for q in conn.queries)
    assert all('"dr".' in q for q in conn.queries[1:])
    assert rep["period"] == {"kind": "weekly", "start": "2026-11-23T00:00:00Z", "end": "2026-11-30T00:00:00Z",
                             "days": 7.0}
    assert rep["backups"]["success_rate"] == 100.0 and "B1" in markdown and "B1" in page
    assert rep["title"].startswith("Weekly DR report of lab")
    assert set(rep) == set(report.REPORT_KEYS)


def test_missing_tables():
    conn = ScriptedConnection(script(tables={"drill_history": False, "verification_history": False}))
    rep = report.build_report({"period": "monthly"}, lambda params: conn, now=NOW)[0]
    assert rep["warnings"] == ["dr.verification_history does not exist (older DR schema?): its section is empty"]
    assert not any("drill_id" in q or "verified_at" in q for q in conn.queries)
    conn = ScriptedConnection(script(tables={"backup_history": False}))
    with pytest.raises(InvalidValueError, match="no backup_history"):
        report.build_report({"period": "weekly"}, lambda params: conn, now=NOW)


def test_bad_schema_name_is_refused_before_any_query():
    conn = ScriptedConnection(script())
    with pytest.raises(InvalidValueError, match="schema"):
        report.build_report({"period": "weekly", "schema": "dr; drop"}, lambda params: conn, now=NOW)
    assert conn.queries == []


def test_write_files(tmp_path):
    rep = build(raw(backups=[backup("B1", 1)]))
    paths = report.write_files(str(tmp_path / "out"), rep, report.render_markdown(rep), report.render_html(rep))
    assert sorted(paths) == ["html", "json", "markdown"]
    assert Path(paths["markdown"]).name == "dr-report-weekly-20261130T000000Z.md"
    assert json.loads(Path(paths["json"]).read_text())["backups"]["items"][0]["backup_id"] == "B1"
    assert (Path(paths["html"]).stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(Path(p).name for p in paths.values())


@pytest.mark.parametrize("value, expected", [
    ("2026-11-29T06:00:00Z", datetime.datetime(2026, 11, 29, 6, tzinfo=UTC)),
    ("2026-11-29T06:00:00 CET", None),
    ("2026-11-29 06:00:00", datetime.datetime(2026, 11, 29, 6, tzinfo=UTC)),
    ("2026-11-29 06:00:00+00", datetime.datetime(2026, 11, 29, 6, tzinfo=UTC)),
    ("2026-11-29T07:00:00+01:00", datetime.datetime(2026, 11, 29, 6, tzinfo=UTC)),
    ("2026-11-29", datetime.datetime(2026, 11, 30, tzinfo=UTC)),
    ("", NOW),
])
def test_end_spellings(value, expected):
    if expected is None:
        with pytest.raises(InvalidValueError, match="Invalid end"):
            report.parse_end(value, NOW)
        return
    end = report.parse_end(value, NOW)
    assert end == expected and end.utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize("text, seconds", [
    ("15m", 900.0), ("30 s", 30.0), ("1h", 3600.0), ("2.5min", 150.0), ("500ms", 0.5), ("45", 45.0),
    (" 2 Hours ", 7200.0), ("10 secs", 10.0), ("soon", None), ("-5s", None), ("15 fortnights", None)])
def test_parse_duration(text, seconds):
    assert report.parse_duration(text) == seconds

"""The weekly DR report (playbooks/dr_report.yml, rtx.dr.dr_report) on the scenario's cluster, after its backups.

The report is compared with what is really there: every backup of the S3 catalog started in the period is listed,
the success rate is the one the rows of dr.backup_history give, the restores of dr.restore_history are listed, the
HTML parses (no script, a well-formed SVG chart) and --check writes nothing.
"""

import datetime
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import BUCKET, PREFIX, PRIMARY, STANDBYS, get_host, psql, s3
from labtest import playbook

UTC = datetime.timezone.utc


def catalog():
    client = s3()
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/catalog/"):
        for obj in page.get("Contents", []):
            out.append(json.loads(client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()))
    return out


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def current_primary():
    """The scenario may have switched over before: the DR schema is written on whichever server is primary."""
    for name in [PRIMARY] + STANDBYS:
        host = get_host(name)
        if host.run("runuser -u postgres -- psql -XAtq -c 'SELECT pg_is_in_recovery()'").stdout.strip() == "f":
            return host
    return get_host(PRIMARY)


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def weekly(tmp_path_factory):
    out = tmp_path_factory.mktemp("dr-report")
    end = datetime.datetime.now(UTC).replace(microsecond=0)
    result = playbook("dr_report.yml", "-e", "report_end=%s" % end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "-e", "report_dir=%s" % out, "-e", "report_max_rows=0")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    files = {path.suffix: path for path in out.iterdir()}
    assert set(files) == {".md", ".html", ".json"}, files
    return {"end": end, "start": end - datetime.timedelta(days=7), "dir": out, "output": result.stdout,
            "json": json.loads(files[".json"].read_text()), "html": files[".html"].read_text(),
            "markdown": files[".md"].read_text()}


def window_sql(weekly, column):
    return "%s >= '%s' AND %s < '%s'" % (column, weekly["start"].isoformat(), column, weekly["end"].isoformat())


def test_every_backup_of_the_catalog_in_the_period_is_in_the_report(weekly):
    # Complete ones: only those are mirrored into dr.backup_history (a failed run is recorded in the catalog only).
    in_period = [r for r in catalog()
                 if r.get("kind") in ("physical", "logical") and r.get("status") == "complete"
                 and weekly["start"] <= parse_time(r["started_at"]) < weekly["end"]]
    assert in_period, "the scenario's backups (test_backup.py) should be in the catalog"
    listed = {item["backup_id"] for item in weekly["json"]["backups"]["items"]}
    for record in in_period:
        assert record["backup_id"] in listed
        assert record["backup_id"] in weekly["html"] and record["backup_id"] in weekly["markdown"]


def test_success_rate_matches_backup_history(weekly):
    counts = psql(current_primary(), "SELECT count(*) FILTER (WHERE status = 'complete') || '|' || "
                  "count(*) FILTER (WHERE status = 'failed') || '|' || count(*) FROM dr.backup_history "
                  "WHERE kind IN ('physical', 'logical') AND %s" % window_sql(weekly, "started_at"), db="rtx")
    complete, failed, total = (int(n) for n in counts.split("|"))
    backups = weekly["json"]["backups"]
    assert (backups["complete"], backups["failed"], backups["total"]) == (complete, failed, total)
    rate = next(o for o in weekly["json"]["objectives"] if o["name"] == "backup success rate")
    if complete + failed:
        assert backups["success_rate"] == round(100.0 * complete / (complete + failed), 3)
        assert rate["measured"] == backups["success_rate"]
        assert rate["status"] == ("met" if backups["success_rate"] >= 99 else "missed")
    else:
        assert backups["success_rate"] is None and rate["status"] == "missed"
    assert "Backups: " in weekly["output"] and "Objectives: " in weekly["output"]


def test_restores_and_failovers_of_the_period_are_listed(weekly):
    primary = current_primary()
    restores = psql(primary, "SELECT coalesce(string_agg(restore_id, ',' ORDER BY restore_id), '') "
                    "FROM dr.restore_history WHERE %s" % window_sql(weekly, "started_at"), db="rtx")
    listed = {item["restore_id"] for item in weekly["json"]["restores"]["items"]}
    assert listed == set(filter(None, restores.split(",")))
    failovers = psql(primary, "SELECT count(*) FROM dr.failover_history WHERE kind <> 'rejoin' AND %s"
                     % window_sql(weekly, "started_at"), db="rtx")
    assert weekly["json"]["failovers"]["total"] == int(failovers)


def test_html_parses_without_script_and_the_chart_is_svg(weekly):
    page = Page()
    page.feed(weekly["html"])
    page.close()
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert "svg" in page.tags and "table" in page.tags
    html = weekly["html"]
    chart = ET.fromstring(html[html.index("<svg"):html.index("</svg>") + len("</svg>")])
    assert chart.tag == "{http://www.w3.org/2000/svg}svg"
    circles = chart.findall("{http://www.w3.org/2000/svg}circle")
    assert len(circles) == 2 * len(weekly["json"]["backups"]["chart"])
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")


def test_objectives_come_from_the_inventory(weekly):
    names = {o["name"] for o in weekly["json"]["objectives"]}
    assert {"database RTO", "database RPO", "trading_engine RTO", "backup success rate"} <= names
    components = {c["name"]: c for c in weekly["json"]["objectives_config"]["components"]}
    assert components["database"]["rto_seconds"] == 900 and components["database"]["rpo_seconds"] == 60
    assert components["trading_engine"]["rto_seconds"] == 300 and components["trading_engine"]["rpo_seconds"] == 30


def test_health_uptime_per_host_and_check(weekly):
    health = weekly["json"]["health"]
    rows = int(psql(current_primary(), "SELECT count(*) FROM dr.health_check_history WHERE %s"
                    % window_sql(weekly, '"time"'), db="rtx"))
    if rows:
        assert 0 < health["samples"] <= rows
        assert all(0 <= h["uptime_percent"] <= 100 for h in health["hosts"])
    else:
        assert health["samples"] == 0


def test_check_mode_writes_nothing(tmp_path):
    result = playbook("dr_report.yml", "--check", "-e", "report_dir=%s" % (tmp_path / "none"))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Files: none written (check mode)" in result.stdout
    assert not (tmp_path / "none").exists()


def test_monthly_report_for_an_empty_month_renders(tmp_path):
    result = playbook("dr_report.yml", "-e", "report_period=monthly", "-e", "report_end=2020-01-31",
                      "-e", "report_dir=%s" % tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert data["period"] == {"kind": "monthly", "start": "2020-01-01T00:00:00Z", "end": "2020-02-01T00:00:00Z",
                              "days": 31.0}
    assert data["backups"]["total"] == 0 and data["backups"]["success_rate"] is None
    assert "backup success rate" in data["summary"]["missed_objectives"]
    assert "no backups in this period" in next(tmp_path.glob("*.html")).read_text()
    assert Path(next(tmp_path.glob("*.md"))).read_text().count("no backups in this period") >= 2

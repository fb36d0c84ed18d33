# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the role rtx.dr.alerting, for real: a moto server, promtool, amtool and alertmanager.

A module fixture starts the venv's ``moto_server`` on 127.0.0.1 and a free port.
The role is applied to localhost by a throwaway playbook (the same harness as
test_s3_storage.py) with its defaults, except where the files go, where
promtool/amtool are, and a short group_wait/group_interval for the delivery
test. Then:

* the three SNS topics exist on moto; a second run changes nothing; ``--check``
  creates nothing, writes nothing and never shows the secret key;
* ``promtool check rules`` and ``amtool check-config`` pass on the rendered
  files; the rules hold exactly 42 alerts (database 6, application 7,
  infrastructure 6, backup 4, redis 4, business 5, security 3, dr 7), each with
  a severity, summary, description and a runbook_url whose anchor exists in
  docs/runbooks/alerts.md; the DR metrics are the health agent's names;
* ``promtool test rules`` passes with roles/alerting/files/tests/*.yml, and those
  files have, for every alert, a case where it fires (severity and annotations
  checked) and one where it stays quiet;
* with streaming mode (``backup_schedule_wal_stream: true``, which
  ``alerting_wal_stream`` follows) the rules hold 43 alerts, WalStreamStale in
  the backup group, and files/tests/wal_stream/*.yml pass on them with all the
  others;
* a wrong severity route and a missing topic name fail with a clear message
  before anything is created;
* Alertmanager itself (Debian's build) runs with the rendered configuration,
  pointed at moto: alerts POSTed to /api/v2/alerts arrive through SNS in SQS
  queues subscribed to the topics, each severity in its own topic only.

promtool, amtool and alertmanager come from ``make tools`` (.lab/tools/bin) or
the PATH; without them the tests fail and say so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playbook_runner import ANSIBLE_PLAYBOOK, recap, run_playbook
import yaml


boto3 = pytest.importorskip("boto3")

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
MOTO_SERVER = BIN / "moto_server"
TOOLS_BIN = REPO / ".lab" / "tools" / "bin"
ROLE = REPO / "roles" / "alerting"
UNIT_TESTS = ROLE / "files" / "tests"
# promtool tests of the alerts rendered only in streaming mode (alerting_wal_stream).
STREAM_UNIT_TESTS = UNIT_TESTS / "wal_stream"
ALERTS_RUNBOOK = REPO / "docs" / "runbooks" / "alerts.md"
# Debian's alertmanager reads its default notification templates from here.
ALERTMANAGER_SHARE = Path("/usr/share/prometheus/alertmanager/default.tmpl")

REGION = "us-east-1"
SECRET_KEY = "test-secret-key-not-to-be-shown"
TOPICS = {"pagerduty": "rtx-dr-alerts-pagerduty", "slack": "rtx-dr-alerts-slack", "email": "rtx-dr-alerts-email"}
EXPECTED_GROUPS = {
    "database": 6, "application": 7, "infrastructure": 6, "backup": 4,
    "redis": 4, "business": 5, "security": 3, "dr": 7,
}
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_BASE = "https://example.invalid/rtx/dr/docs/runbooks"
# What the rtx.dr health agent exports (the only rtx_dr_* names the rules may use).
DR_METRICS = {
    "rtx_dr_health_last_run_timestamp_seconds", "rtx_dr_health_check_status", "rtx_dr_health_check_value",
    "rtx_dr_backup_last_success_timestamp_seconds", "rtx_dr_backup_last_run_success",
    "rtx_dr_backup_last_verified_timestamp_seconds", "rtx_dr_backup_last_verify_success",
    "rtx_dr_wal_archive_last_archived_timestamp_seconds", "rtx_dr_wal_archive_failed_total",
    "rtx_dr_wal_archive_last_failed_timestamp_seconds", "rtx_dr_wal_archive_ready_segments",
    "rtx_dr_wal_archive_oldest_ready_timestamp_seconds",
    "rtx_dr_wal_archive_enabled", "rtx_dr_restore_drill_last_success_timestamp_seconds",
    "rtx_dr_replication_lag_bytes", "rtx_dr_replication_lag_seconds", "rtx_dr_sync_standbys",
    "rtx_dr_pg_is_primary", "rtx_dr_pg_up", "rtx_dr_last_failover_timestamp_seconds",
    "rtx_dr_wal_stream_read_success", "rtx_dr_wal_stream_checked_timestamp_seconds",
    "rtx_dr_wal_stream_newest_timestamp_seconds", "rtx_dr_wal_stream_covers_bytes_behind",
}

pytestmark = pytest.mark.skipif(
    not (MOTO_SERVER.exists() and ANSIBLE_PLAYBOOK.exists()),
    reason="moto_server or ansible-playbook is not installed next to the test interpreter",
)


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------

def find_tool(name, *aliases):
    """``make tools``'s copy in .lab/tools/bin, else the PATH's."""
    if os.access(TOOLS_BIN / name, os.X_OK):
        return str(TOOLS_BIN / name)
    for alias in (name,) + aliases:
        found = shutil.which(alias)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def tools():
    """Paths of promtool, amtool and alertmanager; fails (not skips) when one is missing."""
    found = {
        "promtool": find_tool("promtool"),
        "amtool": find_tool("amtool"),
        "alertmanager": find_tool("alertmanager", "prometheus-alertmanager"),
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.fail("%s not found in %s nor on the PATH: run make tools" % (", ".join(missing), TOOLS_BIN))
    return found


class Runner:
    """Writes a playbook + inventory into a fresh directory and runs ansible-playbook on localhost."""

    def __init__(self, moto_url, collections_dir, tmp_path_factory):
        self.moto_url = moto_url
        self.collections_dir = collections_dir
        self.tmp_path_factory = tmp_path_factory

    def run(self, extra_vars, check=False):
        work = self.tmp_path_factory.mktemp("play")
        home = work / "ansible-home"
        (home / "tmp").mkdir(parents=True)
        (work / "ansible.cfg").write_text(
            "[defaults]\nretry_files_enabled = False\nstdout_callback = ansible.builtin.default\n"
        )
        inventory = {"all": {
            "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
            "vars": {
                "rtx_dr_aws_endpoint_url": self.moto_url,
                "rtx_dr_aws_region": REGION,
                "rtx_dr_aws_access_key": "testing",
                "rtx_dr_aws_secret_key": SECRET_KEY,
            },
        }}
        (work / "inventory.json").write_text(json.dumps(inventory))
        playbook = [{
            "name": "Apply rtx.dr.alerting",
            "hosts": "localhost",
            "gather_facts": False,
            "roles": [{"role": "rtx.dr.alerting"}],
        }]
        (work / "site.yml").write_text(json.dumps(playbook))
        (work / "extra.json").write_text(json.dumps(extra_vars))
        return run_playbook(work, home, self.collections_dir, {
            "AWS_CONFIG_FILE": str(work / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(work / "aws-credentials"),
        }, check=check)


@pytest.fixture(scope="module")
def runner(moto_url, collections_dir, tmp_path_factory):
    return Runner(moto_url, collections_dir, tmp_path_factory)


def role_vars(out_dir, tools, **extra):
    """The role's defaults, but files into out_dir, the tools found, and fast notification groups."""
    values = {
        "alerting_rules_dir": str(out_dir),
        "alerting_alertmanager_dir": str(out_dir),
        "alerting_promtool": tools["promtool"],
        "alerting_amtool": tools["amtool"],
        "alerting_group_wait": "1s",
        "alerting_group_interval": "1s",
    }
    values.update(extra)
    return values


@pytest.fixture(scope="module")
def applied(runner, tools, tmp_path_factory):
    """The role applied twice with its defaults: (first run, second run, output directory)."""
    out = tmp_path_factory.mktemp("monitoring")
    first = runner.run(role_vars(out, tools))
    assert first.returncode == 0, first.output
    second = runner.run(role_vars(out, tools))
    return first, second, out


@pytest.fixture(scope="module")
def rules(applied):
    return yaml.safe_load((applied[2] / "prometheus-rules.yml").read_text())


def alerts_of(rules):
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}


@pytest.fixture(scope="module")
def all_alerts(rules):
    return alerts_of(rules)


@pytest.fixture(scope="module")
def stream_applied(runner, tools, tmp_path_factory, applied):  # pylint: disable=unused-argument
    """The role applied with streaming mode on (the inventory's backup_schedule_wal_stream): output directory."""
    out = tmp_path_factory.mktemp("monitoring-stream")
    run = runner.run(role_vars(out, tools, backup_schedule_wal_stream=True))
    assert run.returncode == 0, run.output
    return out


@pytest.fixture(scope="module")
def stream_rules(stream_applied):
    return yaml.safe_load((stream_applied / "prometheus-rules.yml").read_text())


def github_anchors(markdown):
    """Anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def topic_arns(aws):
    return {arn.rsplit(":", 1)[1]: arn for arn in
            (t["TopicArn"] for t in aws("sns").list_topics()["Topics"])}


# --------------------------------------------------------------------------
# (a) the role with its defaults
# --------------------------------------------------------------------------

def test_run_creates_the_topics_and_the_files(applied, aws):
    first, out = applied[0], applied[2]
    assert recap(first)["failed"] == 0
    arns = topic_arns(aws)
    for name in TOPICS.values():
        assert name in arns, "topic %s was not created: %s" % (name, sorted(arns))
    assert (out / "prometheus-rules.yml").is_file()
    assert (out / "alertmanager.yml").is_file()


def test_second_run_changes_nothing(applied):
    second = applied[1]
    assert second.returncode == 0, second.output
    assert recap(second)["changed"] == 0, second.output


def test_secret_is_never_printed(applied):
    for run in applied[:2]:
        assert SECRET_KEY not in run.output


def test_promtool_check_rules(applied, tools):
    proc = subprocess.run([tools["promtool"], "check", "rules", str(applied[2] / "prometheus-rules.yml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 42 rules found" in proc.stdout


def test_amtool_check_config(applied, tools):
    proc = subprocess.run([tools["amtool"], "check-config", str(applied[2] / "alertmanager.yml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_42_alerts_in_the_expected_groups(rules, all_alerts):
    counts = {group["name"]: len(group["rules"]) for group in rules["groups"]}
    assert counts == EXPECTED_GROUPS
    assert sum(counts.values()) == 42
    assert len(all_alerts) == 42, "alert names must be unique"
    for group in rules["groups"]:
        assert all("alert" in rule for rule in group["rules"]), "recording rules are not expected"


def check_alert_annotations(alerts):
    anchors = github_anchors(ALERTS_RUNBOOK.read_text(encoding="utf-8"))
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), "%s has no %s" % (name, key)
        assert annotations["runbook_url"] == "%s/alerts.md#%s" % (RUNBOOK_BASE, name.lower())
        assert name.lower() in anchors, "docs/runbooks/alerts.md has no section for %s" % name


def test_every_alert_has_severity_annotations_and_a_runbook_section(all_alerts):
    check_alert_annotations(all_alerts)


def check_dr_metrics(rules):
    for group in rules["groups"]:
        used = set()
        for rule in group["rules"]:
            used |= set(re.findall(r"\brtx_dr_\w+", rule["expr"]))
        assert used <= DR_METRICS, used - DR_METRICS
        if group["name"] in ("backup", "dr"):
            assert used, "group %s must use the DR metrics" % group["name"]


def test_rules_use_only_the_health_agents_dr_metrics(rules):
    check_dr_metrics(rules)


def test_alertmanager_routes_by_severity_to_the_topics(applied, aws, moto_url):
    out = applied[2]
    path = out / "alertmanager.yml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    config = yaml.safe_load(path.read_text())
    arns = topic_arns(aws)
    receivers = {r["name"]: r["sns_configs"][0] for r in config["receivers"]}
    routes = {r["matchers"][0]: r["receiver"] for r in config["route"]["routes"]}
    assert routes == {'severity="critical"': "sns-pagerduty", 'severity="warning"': "sns-slack",
                      'severity="info"': "sns-email"}
    for key, name in TOPICS.items():
        sns = receivers["sns-" + key]
        assert sns["topic_arn"] == arns[name]
        assert sns["api_url"] == moto_url
        assert sns["sigv4"] == {"region": REGION, "access_key": "testing", "secret_key": SECRET_KEY}
    assert config["route"]["group_wait"] == "1s"


def run_promtool_tests(tools, rules_dir, tmp_path, test_dirs):
    """``promtool test rules`` with the files of ``test_dirs`` next to the rules rendered into ``rules_dir``."""
    sources = [p for directory in test_dirs for p in sorted(directory.glob("*.yml"))]
    for source in sources:
        shutil.copy(source, tmp_path / source.name)
    shutil.copy(rules_dir / "prometheus-rules.yml", tmp_path / "prometheus-rules.yml")
    files = [p.name for p in sources]
    assert files, "no promtool test files in %s" % ", ".join(str(d) for d in test_dirs)
    proc = subprocess.run([tools["promtool"], "test", "rules"] + files, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(files), proc.stdout


def test_promtool_unit_tests_pass(applied, tools, tmp_path):
    run_promtool_tests(tools, applied[2], tmp_path, [UNIT_TESTS])


def promtool_cases(paths, alerts):
    """``(firing, quiet)``: the alerts with a case where they fire (severity and annotations checked) and with
    one where they stay quiet, in the promtool test files ``paths``."""
    firing, quiet = set(), set()
    for path in paths:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["prometheus-rules.yml"], path.name
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                name = case["alertname"]
                assert name in alerts, "%s: unknown alert %s" % (path.name, name)
                expected = case.get("exp_alerts") or []
                if not expected:
                    quiet.add(name)
                    continue
                severity = alerts[name]["labels"]["severity"]
                for alert in expected:
                    assert alert["exp_labels"]["severity"] == severity, "%s: %s" % (path.name, name)
                    assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}, name
                firing.add(name)
    return firing, quiet


def test_every_alert_has_a_firing_and_a_quiet_unit_test(all_alerts):
    firing, quiet = promtool_cases(sorted(UNIT_TESTS.glob("*.yml")), all_alerts)
    assert set(all_alerts) - firing == set(), "alerts without a firing promtool case"
    assert set(all_alerts) - quiet == set(), "alerts without a quiet promtool case"


# --------------------------------------------------------------------------
# (a') streaming mode: WalStreamStale
# --------------------------------------------------------------------------

def test_wal_stream_stale_only_with_streaming_mode(all_alerts, stream_rules, stream_applied, tools):
    assert "WalStreamStale" not in all_alerts
    counts = {group["name"]: len(group["rules"]) for group in stream_rules["groups"]}
    assert counts == dict(EXPECTED_GROUPS, backup=EXPECTED_GROUPS["backup"] + 1)
    alerts = alerts_of(stream_rules)
    assert len(alerts) == 43 and set(alerts) - set(all_alerts) == {"WalStreamStale"}
    backup = [rule["alert"] for group in stream_rules["groups"] if group["name"] == "backup" for rule in group["rules"]]
    assert backup == ["BackupFailed", "BackupOverdue", "WalArchiveLag", "WalStreamStale", "RestoreDrillOverdue"]
    rule = alerts["WalStreamStale"]
    assert rule["labels"] == {"severity": "warning"} and rule["for"] == "2m"
    assert "> 30\n" in rule["expr"] and "rtx_dr_wal_stream_covers_bytes_behind" in rule["expr"]
    check_alert_annotations(alerts)
    check_dr_metrics(stream_rules)
    proc = subprocess.run([tools["promtool"], "check", "rules", str(stream_applied / "prometheus-rules.yml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "SUCCESS: 43 rules found" in proc.stdout, proc.stdout + proc.stderr


def test_wal_stream_promtool_unit_tests_pass(stream_applied, stream_rules, tools, tmp_path):
    run_promtool_tests(tools, stream_applied, tmp_path, [UNIT_TESTS, STREAM_UNIT_TESTS])
    firing, quiet = promtool_cases(sorted(STREAM_UNIT_TESTS.glob("*.yml")), alerts_of(stream_rules))
    assert firing == quiet == {"WalStreamStale"}


def test_check_mode_creates_and_writes_nothing(runner, tools, aws, tmp_path):
    out = tmp_path / "not-created"
    before = set(topic_arns(aws))
    proc = runner.run(role_vars(out, tools, alerting_topic_slack="rtx-dr-alerts-check-mode"), check=True)
    assert proc.returncode == 0, proc.output
    assert set(topic_arns(aws)) == before
    assert not out.exists()
    assert "Would create the SNS topic rtx-dr-alerts-check-mode" in proc.output
    assert "<redacted>" in proc.output
    assert SECRET_KEY not in proc.output


# --------------------------------------------------------------------------
# (b) bad input fails clearly, before anything is created
# --------------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    ({"alerting_severity_routes": {"critical": "pagerduty", "warning": "slack", "info": "email",
                                   "crit": "pagerduty"}},
     "Unknown severity: crit."),
    ({"alerting_severity_routes": {"critical": "pager", "warning": "slack", "info": "email"}},
     "Routed to no known topic: critical -> pager."),
    ({"alerting_severity_routes": {"critical": "pagerduty", "warning": "slack"}},
     "No route for severity: info."),
    ({"alerting_topic_slack": "", "alerting_topic_pagerduty": "rtx-dr-never-created"},
     "severity warning is routed to the slack topic, but alerting_topic_slack is empty"),
])
def test_bad_routes_and_topics_fail_clearly(runner, tools, aws, tmp_path, extra, message):
    out = tmp_path / "out"
    proc = runner.run(role_vars(out, tools, **extra))
    assert proc.returncode != 0, proc.output
    assert message in " ".join(proc.output.split()), proc.output
    assert "Nothing was changed" in proc.output
    assert not out.exists()
    assert "rtx-dr-never-created" not in topic_arns(aws)


# --------------------------------------------------------------------------
# (c) Alertmanager delivers through SNS, each severity to its own topic
# --------------------------------------------------------------------------

def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def alertmanager(applied, tools, tmp_path):
    """Debian's alertmanager with the rendered configuration, on 127.0.0.1; yields its URL."""
    if tools["alertmanager"].startswith(str(TOOLS_BIN)) and not ALERTMANAGER_SHARE.is_file():
        pytest.fail("%s is missing (Debian's alertmanager reads its templates there): run make tools as root"
                    % ALERTMANAGER_SHARE)
    port = _free_port()
    log = tmp_path / "alertmanager.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [tools["alertmanager"], "--config.file=%s" % (applied[2] / "alertmanager.yml"),
             "--storage.path=%s" % (tmp_path / "data"), "--web.listen-address=127.0.0.1:%d" % port,
             "--cluster.listen-address=", "--log.level=debug"],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    url = "http://127.0.0.1:%d" % port
    try:
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail("alertmanager exited (%s):\n%s" % (proc.returncode, log.read_text()))
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1):
                    break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("alertmanager did not become ready:\n%s" % log.read_text())
                time.sleep(0.2)
        yield url, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _subscribe_queues(aws):
    """An SQS queue subscribed to each topic: {route key: queue url}."""
    sns, sqs = aws("sns"), aws("sqs")
    arns = topic_arns(aws)
    queues = {}
    for key, name in TOPICS.items():
        queue_url = sqs.create_queue(QueueName="alerts-%s-%d" % (key, os.getpid()))["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=arns[name], Protocol="sqs", Endpoint=queue_arn)
        queues[key] = queue_url
    return queues


def _post_alerts(url, alerts):
    request = urllib.request.Request(url + "/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_alertmanager_delivers_each_severity_to_its_topic(alertmanager, aws):
    url, log = alertmanager
    queues = _subscribe_queues(aws)
    arns = topic_arns(aws)
    _post_alerts(url, [
        {"labels": {"alertname": "PostgresDown", "severity": "critical", "instance": "db-east-1:9187"},
         "annotations": {"summary": "PostgreSQL is down on db-east-1:9187"}},
        {"labels": {"alertname": "HostHighCpu", "severity": "warning", "instance": "db-east-2:9100"},
         "annotations": {"summary": "CPU of db-east-2:9100 is 95% busy"}},
        {"labels": {"alertname": "DRFailoverOccurred", "severity": "info", "kind": "switchover"},
         "annotations": {"summary": "A switchover happened 1m 0s ago"}},
    ])
    sqs = aws("sqs")
    received = {key: [] for key in queues}
    wanted = {"pagerduty": "PostgresDown", "slack": "HostHighCpu", "email": "DRFailoverOccurred"}
    deadline = time.time() + 60
    while time.time() < deadline:
        for key, queue_url in queues.items():
            for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=0).get("Messages", []):
                received[key].append(json.loads(message["Body"]))
        if all(any(wanted[k] in m["Message"] for m in received[k]) for k in queues):
            break
        time.sleep(0.5)
    time.sleep(2)  # anything sent to a wrong topic would have arrived by now
    for key, queue_url in queues.items():
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=0).get("Messages", []):
            received[key].append(json.loads(message["Body"]))
    debug = "received: %s\nalertmanager log:\n%s" % (json.dumps(received, indent=1), log.read_text()[-4000:])
    for key, alertname in wanted.items():
        bodies = [m["Message"] for m in received[key]]
        assert any(alertname in body for body in bodies), "%s did not reach the %s topic\n%s" % (alertname, key, debug)
        assert all(m["TopicArn"] == arns[TOPICS[key]] for m in received[key]), debug
        others = [name for other, name in wanted.items() if other != key]
        assert not any(name in body for body in bodies for name in others), \
            "the %s topic got another severity's alert\n%s" % (key, debug)
    pagerduty = [m for m in received["pagerduty"] if "PostgresDown" in m["Message"]][0]
    assert pagerduty["Subject"].startswith("[FIRING:1] critical PostgresDown"), pagerduty["Subject"]

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWX / AAP as code (awx/, playbooks/awx_configure.yml, playbooks/vars_specs/), tested without an AWX server.

* every job template points at a playbook of the project, that playbook validates its inputs first
  (playbooks/tasks/validate_inputs.yml) against playbooks/vars_specs/<playbook>.yml, and every survey answer,
  template extra var and schedule extra_data value is accepted by that spec (Ansible's own
  ArgumentSpecValidator, as ansible.builtin.validate_argument_spec runs it) while a wrong one is refused;
  the same checked for real with ansible-playbook (only the validation runs: --tags rtx_dr_validate_inputs);
* surveys are well formed the way AWX checks them;
* schedules parse as RRULEs (python-dateutil, as AWX does), follow AWX's restrictions and fall on the
  intended UTC times and weekdays;
* the execution environment lists every third-party Python module imported under plugins/, every
  PostgreSQL tool the modules look up with get_bin_path, and the collections the playbooks and roles use;
* awx/controller.yml holds credential types only, never a secret;
* playbooks/awx_configure.yml passes ansible-playbook --syntax-check.
"""

from __future__ import annotations

import ast
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

REPO = Path(__file__).resolve().parents[3]
AWX = REPO / "awx"
PLAYBOOKS = REPO / "playbooks"
SPECS = PLAYBOOKS / "vars_specs"
BIN = Path(sys.executable).parent
UTC = datetime.timezone.utc

# Playbooks run by a template whose first play does not validate the inputs yet (issue 9: the incident and chaos
# templates came before the playbooks' validation play). Their spec files are here already: every survey answer,
# extra var and schedule answer is checked against them in process; the first-play check and the real
# ansible-playbook run start by themselves as soon as the playbook imports tasks/validate_inputs.yml.
PENDING_PLAYBOOKS = {"playbooks/chaos.yml", "playbooks/failover.yml", "playbooks/switchover.yml",
                     "playbooks/rejoin.yml", "playbooks/region_failback.yml"}

# A value an operator could type into a text question without a default (checked against the spec).
TEXT_SAMPLES = {"drill_confirm": "rtx-prod", "region_target": "west", "region_confirm": "west",
                "chaos_confirm": "rtx-lab", "failover_reason": "INC-1234 db-east-1 lost", "rejoin_host": "db-east-1"}

# The on-demand incident templates: job type asked at launch (check = the plan), never scheduled, no limit.
INCIDENT_TEMPLATES = ("rtx.dr - region failover", "rtx.dr - failover", "rtx.dr - switchover", "rtx.dr - rejoin",
                      "rtx.dr - region failback")
CHAOS = "rtx.dr - chaos tests"
CHAOS_SCHEDULE = "rtx.dr - chaos tests weekly Wednesday 10:00 UTC"

# Import name -> the PyPI distributions that provide it (any one will do).
PYPI_NAMES = {
    "boto3": {"boto3"},
    "botocore": {"botocore"},
    "lz4": {"lz4"},
    "zstandard": {"zstandard"},
    "psycopg": {"psycopg", "psycopg-binary"},
    "psycopg2": {"psycopg2", "psycopg2-binary"},
}
# Alternatives: module_utils/postgres.py uses psycopg (3) or psycopg2, one is enough.
ALTERNATIVES = [{"psycopg", "psycopg2"}]

# PostgreSQL tools -> (Debian package, RPM package): Debian's split checked with dpkg -S when it is there;
# on RHEL / CentOS Stream the tools are in postgresql and postgresql-server (both listed).
BINARY_PACKAGES = {
    "pg_basebackup": ("postgresql-client-15", "postgresql"),
    "pg_dump": ("postgresql-client-15", "postgresql"),
    "pg_verifybackup": ("postgresql-client-15", "postgresql"),
    "pg_amcheck": ("postgresql-client-15", "postgresql"),
    "pg_ctl": ("postgresql-15", "postgresql-server"),
    "pg_controldata": ("postgresql-15", "postgresql-server"),
}
# Functions of plugins/ that look binaries up on PATH (module.get_bin_path and the wrappers around it).
LOOKUP_FUNCTIONS = {"get_bin_path", "find_pg_binary", "find_binary"}

SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}


# --------------------------------------------------------------------------- loading


def _load_controller(**site):
    """awx/controller.yml rendered as awx_configure.yml renders it, with site parameters overridden by ``site``."""
    from ansible.parsing.dataloader import DataLoader  # pylint: disable=import-outside-toplevel
    from ansible.template import Templar  # pylint: disable=import-outside-toplevel

    loader = DataLoader()
    data = loader.load_from_file(str(AWX / "controller.yml"), trusted_as_template=True)
    rendered = Templar(loader=loader, variables=dict(data, **site)).template(data["rtx_dr_awx"])
    return json.loads(json.dumps(rendered)), data


CONTROLLER, SITE = _load_controller()
TEMPLATES = {t["name"]: dict(CONTROLLER["job_template_defaults"], **t) for t in CONTROLLER["job_templates"]}


def load_spec(playbook):
    path = SPECS / ("%s.yml" % Path(playbook).stem)
    assert path.is_file(), "%s has no input spec %s" % (playbook, path.relative_to(REPO))
    data = yaml.safe_load(path.read_text())
    assert isinstance(data.get("argument_spec"), dict), path
    return data["argument_spec"]


def validate(spec, values):
    """Error messages of Ansible's validation of ``values`` (as validate_argument_spec does it)."""
    return ArgumentSpecValidator(spec).validate(dict(values), validate_role_argument_spec=True).error_messages


def questions(template):
    return (template.get("survey_spec") or {}).get("spec", [])


def has_default(question):
    return question.get("default") not in ("", None)


def survey_value(question, value):
    """What AWX passes for an answer: a multiselect's answer (or its newline-separated default) is a list."""
    if question["type"] == "multiselect" and isinstance(value, str):
        return [line for line in value.splitlines() if line.strip()]
    return value


def awx_survey_errors(template, data, validate_required=True):
    """AWX's own check of launch answers / schedule extra_data against a survey
    (awx/main/models/mixins.py: SurveyJobTemplateMixin._survey_element_validation; a schedule's extra_data is
    checked with the required answers, LaunchConfigurationBaseSerializer.exclude_errors = ())."""
    errors = []
    for q in questions(template):
        var = q["variable"]
        if var not in data:
            if q["required"] and validate_required:
                errors.append("'%s' value missing" % var)
            continue
        value = data[var]
        if q["type"] in ("text", "textarea", "password"):
            if not isinstance(value, str):
                errors.append("%s: expected a string" % var)
            elif len(value) < int(q.get("min") or 0) or ("max" in q and len(value) > int(q["max"])):
                errors.append("%s: length %d outside %s..%s" % (var, len(value), q.get("min"), q.get("max")))
        elif q["type"] == "integer":
            if not isinstance(value, int) or isinstance(value, bool) or not q.get("min", value) <= value <= q.get("max", value):
                errors.append("%s: %r is not an integer within the bounds" % (var, value))
        elif q["type"] == "multiselect":
            if not isinstance(value, list) or any(v not in q["choices"] for v in value):
                errors.append("%s: %r is not a list of %s" % (var, value, q["choices"]))
        elif q["type"] == "multiplechoice" and value not in q["choices"]:
            errors.append("%s: %r is not one of %s" % (var, value, q["choices"]))
    return errors


def answer_sets(template):
    """Launch answers: the survey's defaults, then each choice / bound of each question in turn."""
    base = dict(template.get("extra_vars") or {})
    for q in questions(template):
        if has_default(q):
            base[q["variable"]] = survey_value(q, q["default"])
        elif q["variable"] in TEXT_SAMPLES:
            base[q["variable"]] = TEXT_SAMPLES[q["variable"]]
    sets = [dict(base)]
    for q in questions(template):
        values = list(q.get("choices") or [])
        if q["type"] == "multiselect":
            values = [[choice] for choice in values] + [list(q["choices"])]
        if q["type"] == "integer":
            values += [q.get("min", 0), q.get("max", 0)]
        if q["type"] in ("text", "textarea") and not q.get("required"):
            values.append("")
        for value in values:
            sets.append(dict(base, **{q["variable"]: value}))
    return sets


def playbook_ids():
    return sorted(TEMPLATES)


# --------------------------------------------------------------------------- job templates and specs


@pytest.mark.parametrize("name", playbook_ids())
def test_template_playbook_exists_and_validates_its_inputs_first(name):
    playbook = TEMPLATES[name]["playbook"]
    path = REPO / playbook
    if playbook in PENDING_PLAYBOOKS and (not path.exists() or "tasks/validate_inputs.yml" not in path.read_text()):
        pytest.skip("%s does not validate its inputs yet (issue 9): its first play must import "
                    "tasks/validate_inputs.yml with validate_inputs_spec: %s" % (playbook, path.stem))
    assert path.is_file(), "job template %r runs %s, which is not in the project" % (name, playbook)
    plays = yaml.safe_load(path.read_text())
    first = plays[0]
    assert "all" in first["hosts"].split(":"), first["hosts"]
    task = first["tasks"][0]
    assert task.get("ansible.builtin.import_tasks") == "tasks/validate_inputs.yml", (playbook, task)
    assert task["vars"]["validate_inputs_spec"] == path.stem
    load_spec(playbook)


def test_every_spec_is_well_formed_and_its_defaults_pass():
    names = sorted(p.stem for p in SPECS.glob("*.yml"))
    assert {"backup_full", "verify_backups", "backup_incremental", "restore", "health_check", "region_failover",
            "dr_drill", "dr_report", "chaos", "failover", "switchover", "rejoin", "region_failback"} <= set(names)
    for stem in names:
        spec = load_spec(stem + ".yml")
        for option, attrs in spec.items():
            assert attrs.get("type") in ("str", "bool", "int", "list", "dict", "path", "float"), (stem, option)
            assert attrs.get("description"), (stem, option)
        required = {o: "x" for o, a in spec.items() if a.get("required")}
        assert validate(spec, required) == [], stem
        defaults = {o: a["default"] for o, a in spec.items() if "default" in a}
        assert validate(spec, dict(defaults, **required)) == [], stem


@pytest.mark.parametrize("name", playbook_ids())
def test_survey_answers_and_extra_vars_are_accepted_by_the_playbook_spec(name):
    template = TEMPLATES[name]
    spec = load_spec(template["playbook"])
    variables = [q["variable"] for q in questions(template)] + list(template.get("extra_vars") or {})
    unknown = [v for v in variables if v not in spec]
    assert not unknown, "%s: %s not in the spec of %s" % (name, unknown, template["playbook"])
    for answers in answer_sets(template):
        assert validate(spec, answers) == [], (name, answers)


@pytest.mark.parametrize("name", playbook_ids())
def test_wrong_answers_are_refused(name):
    template = TEMPLATES[name]
    spec = load_spec(template["playbook"])
    base = answer_sets(template)[0]
    refused = 0
    for variable in list(base):
        attrs = spec[variable]
        if attrs.get("choices") or attrs["type"] in ("bool", "int"):
            errors = validate(spec, dict(base, **{variable: "not-a-valid-%s" % variable}))
            assert errors and variable in " ".join(errors), (name, variable, errors)
            refused += 1
    required = [o for o, a in spec.items() if a.get("required")]
    for option in required:
        errors = validate(spec, {k: v for k, v in base.items() if k != option})
        assert any("missing required" in e for e in errors), (name, option, errors)
        refused += 1
    if not refused:
        # Only free text: the playbook's own asserts check it (e.g. the confirmation equals the cluster name).
        assert all(spec[v]["type"] == "str" and not spec[v].get("choices") for v in base), name


def test_survey_choices_are_the_spec_choices():
    for name, template in TEMPLATES.items():
        spec = load_spec(template["playbook"])
        for q in questions(template):
            attrs = spec[q["variable"]]
            if q["type"] == "multiplechoice" and attrs["type"] == "bool":
                assert sorted(q["choices"]) == ["false", "true"], (name, q["variable"])
            elif q["type"] == "multiplechoice":
                assert set(q["choices"]) <= set(attrs["choices"]), (name, q["variable"])
            elif q["type"] == "multiselect":
                assert attrs["type"] == "list" and attrs.get("elements") == "str", (name, q["variable"])
                assert set(q["choices"]) <= set(attrs["choices"]), (name, q["variable"])
            elif q["type"] == "integer":
                assert attrs["type"] == "int", (name, q["variable"])
            else:
                assert attrs["type"] == "str", (name, q["variable"])


def test_surveys_are_valid_for_awx():
    """The checks AWX makes when a survey is saved (awx/api/views: JobTemplateSurveySpec)."""
    for name, template in TEMPLATES.items():
        survey = template.get("survey_spec")
        assert survey and template["survey_enabled"], name
        assert isinstance(survey.get("name"), str) and isinstance(survey.get("description"), str), name
        variables = [q["variable"] for q in survey["spec"]]
        assert len(variables) == len(set(variables)), name
        for q in survey["spec"]:
            assert q["type"] in SURVEY_TYPES and q["question_name"] and isinstance(q["required"], bool), (name, q)
            assert re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", q["variable"]), (name, q)
            if q["type"] == "multiplechoice":
                assert q["choices"] and all(isinstance(c, str) for c in q["choices"]), (name, q)
                assert q.get("default", q["choices"][0]) in q["choices"], (name, q)
            if q["type"] == "multiselect":
                # JobTemplateSurveySpec: the default is a string, one choice a line, each one of the choices.
                assert q["choices"] and all(isinstance(c, str) for c in q["choices"]), (name, q)
                assert isinstance(q.get("default", ""), str), (name, q)
                assert set(survey_value(q, q.get("default", ""))) <= set(q["choices"]), (name, q)
            if q["type"] == "integer":
                assert isinstance(q["default"], int) and q["min"] <= q["default"] <= q["max"], (name, q)
            if q["type"] == "text" and q.get("default"):
                assert q.get("min", 0) <= len(q["default"]) <= q.get("max", 1024), (name, q)
            if q["required"] and not has_default(q):
                assert q["variable"] in TEXT_SAMPLES, "%s: %s needs a default or a schedule answer" % (name, q)


def test_region_failover_asks_for_the_confirmation():
    template = TEMPLATES["rtx.dr - region failover"]
    fields = {q["variable"]: q for q in questions(template)}
    assert fields["region_target"]["required"] and "region_confirm" in fields
    assert "default" not in fields["region_target"] and fields["region_confirm"].get("default", "") == ""
    for drill in ("rtx.dr - failover drill", "rtx.dr - region drill", "rtx.dr - full DR drill"):
        fields = {q["variable"]: q for q in questions(TEMPLATES[drill])}
        assert fields["drill_confirm"]["required"] and not fields["drill_confirm"].get("default"), drill
    # The weekly restore drill is judged and recorded by dr_drill.yml; restore.yml stays for on-demand restores,
    # where replacing data needs both the force flag and the host's name.
    assert TEMPLATES["rtx.dr - restore drill"]["extra_vars"] == {"drill": "restore"}
    fields = {q["variable"]: q for q in questions(TEMPLATES["rtx.dr - restore"])}
    assert fields["restore_force"]["default"] == "false" and fields["restore_confirm"].get("default", "") == ""


def test_templates_cover_the_issue():
    runs = {(t["playbook"], (t.get("extra_vars") or {}).get("drill")) for t in TEMPLATES.values()}
    assert {("playbooks/backup_full.yml", None), ("playbooks/verify_backups.yml", None),
            ("playbooks/backup_incremental.yml", None), ("playbooks/restore.yml", None),
            ("playbooks/dr_drill.yml", "restore"),
            ("playbooks/dr_drill.yml", "failover"), ("playbooks/dr_drill.yml", "region"),
            ("playbooks/dr_drill.yml", "full"), ("playbooks/dr_report.yml", None),
            ("playbooks/health_check.yml", None), ("playbooks/region_failover.yml", None),
            ("playbooks/region_failback.yml", None), ("playbooks/failover.yml", None),
            ("playbooks/switchover.yml", None), ("playbooks/rejoin.yml", None), ("playbooks/chaos.yml", None)} <= runs
    # Every playbook an operator runs in an incident or a drill has a template.
    assert set(PENDING_PLAYBOOKS) <= {t["playbook"] for t in TEMPLATES.values()}


def _required_without_default(template, variable):
    question = {q["variable"]: q for q in questions(template)}[variable]
    return question["required"] and "default" not in question and question.get("min", 0) >= 1


def test_incident_templates_ask_for_the_confirmations():
    """On demand only, job type asked (check = the plan), the confirmations typed: required, no default."""
    scheduled = {s["job_template"] for s in CONTROLLER["schedules"]}
    for name in INCIDENT_TEMPLATES:
        template = TEMPLATES[name]
        assert template["ask_job_type_on_launch"] is True and template["job_type"] == "run", name
        assert name not in scheduled, "%s must never run unattended" % name
        # A limit would hide the primary from the plan; the cluster's own inventory only.
        assert not template.get("ask_limit_on_launch") and not template.get("ask_inventory_on_launch"), name
    failback = TEMPLATES["rtx.dr - region failback"]
    assert _required_without_default(failback, "region_target") and _required_without_default(failback, "region_confirm")
    assert _required_without_default(TEMPLATES["rtx.dr - rejoin"], "rejoin_host")
    failover = {q["variable"]: q for q in questions(TEMPLATES["rtx.dr - failover"])}
    assert _required_without_default(TEMPLATES["rtx.dr - failover"], "failover_reason")
    # Needed only for an unreachable primary without STONITH, and it skips the STONITH of that host: never preset.
    assert not failover["failover_confirm_primary_down"]["required"]
    assert failover["failover_confirm_primary_down"]["default"] == ""
    assert failover["failover_force"]["default"] == "false" and failover["failover_allow_lag"]["default"] == "false"
    # The failover and switchover templates leave the choice of the standby to the ranking unless one is typed.
    for name in ("rtx.dr - failover", "rtx.dr - switchover"):
        assert {q["variable"]: q for q in questions(TEMPLATES[name])}["candidate"]["default"] == "", name


def _chaos_fault_names():
    """The faults playbooks/chaos.yml supports: its default list, the guard's list and the order it runs them in."""
    text = (PLAYBOOKS / "chaos.yml").read_text()
    play = next(p for p in yaml.safe_load(text) if p["name"] == "Chaos tests of the database cluster")
    guard = next(t for t in play["tasks"] if t["name"].startswith("Guard | Check the fault list"))
    order = re.search(r"chaos_fault_list: \"\{\{ (\[[^]]*\]) \| select\('in', chaos_faults\)", text)
    assert order, "chaos.yml no longer orders its faults the way this test reads them"
    ordered = yaml.safe_load(order.group(1))
    assert play["vars"]["chaos_faults"] == guard["vars"]["chaos_fault_names"] == ordered
    return ordered


def test_chaos_template_offers_exactly_the_faults_of_chaos_yml():
    faults = _chaos_fault_names()
    fields = {q["variable"]: q for q in questions(TEMPLATES[CHAOS])}
    assert fields["chaos_faults"]["type"] == "multiselect" and fields["chaos_faults"]["required"]
    assert fields["chaos_faults"]["choices"] == faults
    assert survey_value(fields["chaos_faults"], fields["chaos_faults"]["default"]) == faults
    assert load_spec("chaos.yml")["chaos_faults"]["choices"] == faults
    assert load_spec("chaos.yml")["chaos_faults"]["default"] == faults
    # The guards: off unless switched on, the cluster name typed (required, no default).
    assert fields["chaos_enabled"]["default"] == "false"
    assert _required_without_default(TEMPLATES[CHAOS], "chaos_confirm")
    assert TEMPLATES[CHAOS]["ask_job_type_on_launch"] and TEMPLATES[CHAOS]["ask_inventory_on_launch"]


def test_chaos_schedule_is_disabled_and_confirms_nothing_until_the_operator_sets_it():
    schedule = _schedule(CHAOS_SCHEDULE)
    assert SITE["rtx_dr_awx_chaos_confirm"] == "" and SITE["rtx_dr_awx_chaos_inventory"] == ""
    assert schedule["enabled"] is False
    data = schedule["extra_data"]
    assert data["chaos_enabled"] == "false"
    # AWX saves a schedule only with every required answer: the placeholder names no cluster, so chaos.yml's guard
    # (chaos_confirm == rtx_dr_cluster_name) refuses even if someone enables the schedule by hand.
    assert data["chaos_confirm"] and data["chaos_confirm"] not in (SITE["rtx_dr_awx_cluster_name"], TEXT_SAMPLES["chaos_confirm"])
    assert not re.match(r"^[A-Za-z0-9._-]+$", data["chaos_confirm"]), "the placeholder must not look like a cluster name"
    assert awx_survey_errors(TEMPLATES[CHAOS], data) == []
    # Never the production cluster's name by default, whatever it is.
    controller, _site = _load_controller(rtx_dr_awx_cluster_name="rtx-lab")
    chaos = next(s for s in controller["schedules"] if s["name"] == CHAOS_SCHEDULE)
    assert chaos["enabled"] is False and chaos["extra_data"]["chaos_confirm"] != "rtx-lab"

    # Set by the operator: enabled, chaos_enabled=true and that confirmation, on the inventory named.
    controller, _site = _load_controller(rtx_dr_awx_chaos_confirm="rtx-lab", rtx_dr_awx_chaos_inventory="rtx.dr lab")
    chaos = next(s for s in controller["schedules"] if s["name"] == CHAOS_SCHEDULE)
    assert chaos["enabled"] is True and chaos["inventory"] == "rtx.dr lab"
    assert chaos["extra_data"] == {"chaos_enabled": "true", "chaos_confirm": "rtx-lab", "chaos_faults": _chaos_fault_names()}
    spec = load_spec("chaos.yml")
    assert validate(spec, chaos["extra_data"]) == [] and awx_survey_errors(TEMPLATES[CHAOS], chaos["extra_data"]) == []
    # The other schedules do not depend on it.
    others = [s for s in controller["schedules"] if s["name"] != CHAOS_SCHEDULE]
    assert others == [s for s in CONTROLLER["schedules"] if s["name"] != CHAOS_SCHEDULE]
    assert all("enabled" not in s for s in others)


# --------------------------------------------------------------------------- the validation, for real


@pytest.fixture(scope="module")
def ansible_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("awx")
    namespace = root / "collections" / "ansible_collections" / "rtx"
    namespace.mkdir(parents=True)
    (namespace / "dr").symlink_to(REPO, target_is_directory=True)
    inventory = root / "inventory.json"
    localhost = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": localhost}, "children": {"postgres": {}, "app": {}}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update({"ANSIBLE_HOME": str(root / "home"), "ANSIBLE_LOCAL_TEMP": str(root / "tmp"),
                "ANSIBLE_COLLECTIONS_PATH": str(root / "collections"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")})
    return env, inventory


def run_validation(ansible_env, playbook, extra):
    env, inventory = ansible_env
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / playbook),
           "--tags", "rtx_dr_validate_inputs", "-e", json.dumps(extra)]
    return subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300, check=False)


def _real_runs():
    runs = {}
    for template in TEMPLATES.values():
        path = REPO / template["playbook"]
        if path.exists() and "tasks/validate_inputs.yml" in path.read_text():
            runs.setdefault(template["playbook"], answer_sets(template)[0])
    return sorted(runs.items())


@pytest.mark.parametrize("playbook,answers", _real_runs(), ids=[run[0] for run in _real_runs()])
def test_ansible_playbook_validates_the_survey_answers(ansible_env, playbook, answers):
    spec = load_spec(playbook)
    good = run_validation(ansible_env, playbook, answers)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-2000:]
    assert "Validate the inputs | %s" % Path(playbook).stem in good.stdout
    wrong = next((v for v in answers if spec[v].get("choices") or spec[v]["type"] in ("bool", "int")), None)
    bad_value = {wrong: "not-a-valid-value"} if wrong else {}
    if not bad_value:
        typed = next((o for o, a in spec.items() if a["type"] == "int"), None)
        if typed is None:  # only free-text options (region_failback): any text is a valid answer
            return
        bad_value = {typed: "many"}
    bad = run_validation(ansible_env, playbook, dict(answers, **bad_value))
    assert bad.returncode != 0 and "Validation of arguments failed" in bad.stdout + bad.stderr, bad.stdout[-3000:]


# --------------------------------------------------------------------------- schedules


def _schedule(name):
    return next(s for s in CONTROLLER["schedules"] if s["name"] == name)


def _next(name, after, count=5):
    from dateutil.rrule import rrulestr  # pylint: disable=import-outside-toplevel

    rule = rrulestr(_schedule(name)["rrule"], forceset=True)
    out, when = [], after
    while len(out) < count:
        when = rule.after(when)
        out.append(when)
    return out


def at(text):
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def test_schedules_follow_awx_rules_and_parse():
    from dateutil.rrule import rrulestr  # pylint: disable=import-outside-toplevel

    templates = set(TEMPLATES)
    for schedule in CONTROLLER["schedules"]:
        rule = schedule["rrule"]
        # AWX (awx/api/serializers.py, SchedulePreviewSerializer.validate_rrule).
        assert len(re.findall(r"DTSTART(;[^:]+)?:[0-9]+T[0-9]+Z?", rule)) == 1, rule
        assert re.match(r"^DTSTART:\d{8}T\d{6}Z RRULE:", rule), "UTC DTSTART first: %s" % rule
        assert "FREQ=" in rule and "SECONDLY" not in rule and "COUNT=" not in rule, rule
        assert not re.match(r".*?BYDAY[:=][0-9]+[a-zA-Z]{2}", rule), "BYDAY with a numeric prefix: %s" % rule
        assert schedule["job_template"] in templates, schedule
        parsed = rrulestr(rule, forceset=True)
        first = parsed.after(datetime.datetime(2026, 1, 1, tzinfo=UTC), inc=True)
        assert first is not None and first.utcoffset() == datetime.timedelta(0), rule
        template = TEMPLATES[schedule["job_template"]]
        spec = load_spec(template["playbook"])
        answers = dict(answer_sets(template)[0], **(schedule.get("extra_data") or {}))
        survey = {q["variable"] for q in questions(template)}
        assert set(schedule.get("extra_data") or {}) <= survey, schedule["name"]
        assert validate(spec, answers) == [], schedule["name"]
        for q in questions(template):
            if q["required"] and not has_default(q):
                assert q["variable"] in (schedule.get("extra_data") or {}), (schedule["name"], q["variable"])
        # What AWX checks when the schedule is saved (every required answer, types, bounds, choices).
        assert awx_survey_errors(template, schedule.get("extra_data") or {}, validate_required=False) == [], schedule["name"]
        assert schedule.get("enabled", True) in (True, False), schedule["name"]
        if schedule.get("inventory"):
            assert template.get("ask_inventory_on_launch"), schedule["name"]


def test_schedule_times():
    start = at("2026-12-01 00:00")
    assert _next("rtx.dr - full backup daily 02:00 UTC", start, 3) == [
        at("2026-12-01 02:00"), at("2026-12-02 02:00"), at("2026-12-03 02:00")]
    assert _next("rtx.dr - WAL sync every 6 h", start, 5) == [
        at("2026-12-01 06:00"), at("2026-12-01 12:00"), at("2026-12-01 18:00"), at("2026-12-02 00:00"),
        at("2026-12-02 06:00")]
    assert _next("rtx.dr - verification daily 04:00 UTC", start, 2) == [at("2026-12-01 04:00"), at("2026-12-02 04:00")]
    weekly = _next("rtx.dr - restore drill weekly Sunday 03:00 UTC", start, 3)
    assert weekly == [at("2026-12-06 03:00"), at("2026-12-13 03:00"), at("2026-12-20 03:00")]
    assert {d.weekday() for d in weekly} == {6}
    # First Saturday of the month, none in the full drill's months (January, April, July, October).
    partial = _next("rtx.dr - partial DR drill monthly first Saturday 04:00 UTC", start, 9)
    assert partial == [at("2026-12-05 04:00"), at("2027-02-06 04:00"), at("2027-03-06 04:00"), at("2027-05-01 04:00"),
                       at("2027-06-05 04:00"), at("2027-08-07 04:00"), at("2027-09-04 04:00"), at("2027-11-06 04:00"),
                       at("2027-12-04 04:00")]
    assert all(d.weekday() == 5 and d.day <= 7 for d in partial)
    assert _next("rtx.dr - full DR drill quarterly 05:00 UTC", start, 5) == [
        at("2027-01-01 05:00"), at("2027-04-01 05:00"), at("2027-07-01 05:00"), at("2027-10-01 05:00"),
        at("2028-01-01 05:00")]
    monday = _next("rtx.dr - weekly DR report Monday 06:00 UTC", start, 2)
    assert monday == [at("2026-12-07 06:00"), at("2026-12-14 06:00")] and {d.weekday() for d in monday} == {0}
    assert _next("rtx.dr - monthly DR report 1st 07:00 UTC", start, 3) == [
        at("2026-12-01 07:00"), at("2027-01-01 07:00"), at("2027-02-01 07:00")]
    reports = {s["name"]: s["extra_data"] for s in CONTROLLER["schedules"] if "report" in s["name"]}
    assert sorted(d["report_period"] for d in reports.values()) == ["monthly", "weekly"]
    chaos = _next(CHAOS_SCHEDULE, start, 3)
    assert chaos == [at("2026-12-02 10:00"), at("2026-12-09 10:00"), at("2026-12-16 10:00")]
    # Weekly on Wednesdays, except a Wednesday 1st (1 September 2027): the quarterly full drill's day.
    assert _next(CHAOS_SCHEDULE, at("2027-08-20 00:00"), 2) == [at("2027-08-25 10:00"), at("2027-09-08 10:00")]
    assert all(d.weekday() == 2 and d.day != 1 for d in _next(CHAOS_SCHEDULE, start, 60))


def test_drills_never_share_a_day_with_another_drill():
    start = at("2026-01-01 00:00")
    partial = {d.date() for d in _next("rtx.dr - partial DR drill monthly first Saturday 04:00 UTC", start, 40)}
    full = {d.date() for d in _next("rtx.dr - full DR drill quarterly 05:00 UTC", start, 20)}
    assert not partial & full
    assert not {(d.year, d.month) for d in partial} & {(d.year, d.month) for d in full}
    # Chaos never on a drill's day (the cluster is in the middle of a drill, or must be healthy for it).
    chaos = {d.date() for d in _next(CHAOS_SCHEDULE, start, 200)}
    restore = {d.date() for d in _next("rtx.dr - restore drill weekly Sunday 03:00 UTC", start, 200)}
    assert not chaos & (partial | full | restore)


# --------------------------------------------------------------------------- execution environment


def _ee():
    return yaml.safe_load((AWX / "execution-environment.yml").read_text())


def _requirement_names(path):
    names = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.match(r"^([A-Za-z0-9_.\-\[\]]+?)(\[.*\])?\s*(==|>=|<=|~=|>|<|$)\s*(.*)$", line)
            names[match.group(1).lower()] = match.group(4)
    return names


def _third_party_imports():
    found = {}
    for path in sorted((REPO / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("ansible", "ansible_collections"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_ee_definition():
    ee = _ee()
    assert ee["version"] == 3
    deps = ee["dependencies"]
    for key in ("galaxy", "python", "system"):
        assert (AWX / deps[key]).is_file(), deps[key]
    pins = _requirement_names(REPO / "requirements.txt")
    assert deps["ansible_core"]["package_pip"] == "ansible-core==%s" % pins["ansible-core"]
    assert re.match(r"^ansible-runner==\d+\.\d+\.\d+$", deps["ansible_runner"]["package_pip"])
    assert ee["images"]["base_image"]["name"]
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    tags = ee["options"]["tags"]
    assert any(tag.endswith(":" + galaxy["version"]) for tag in tags), tags


def test_ee_lists_every_python_module_the_plugins_import():
    imports = _third_party_imports()
    assert {"boto3", "botocore", "psycopg2", "lz4", "zstandard"} <= set(imports), imports
    unmapped = sorted(set(imports) - set(PYPI_NAMES))
    assert not unmapped, "imported under plugins/ but not mapped to a PyPI package here: %s (%s)" % (
        unmapped, {m: imports[m] for m in unmapped})
    listed = _requirement_names(AWX / "requirements.txt")
    repo_pins = _requirement_names(REPO / "requirements.txt")
    for module in imports:
        group = next((g for g in ALTERNATIVES if module in g), {module})
        provided = [m for m in group if PYPI_NAMES[m] & set(listed)]
        assert provided, "%s (imported by %s) is not in awx/requirements.txt" % (module, sorted(imports[module]))
    for name, version in listed.items():
        if name in repo_pins:
            assert version == repo_pins[name], "awx/requirements.txt pins %s %s, requirements.txt %s" % (
                name, version, repo_pins[name])


def _string_values(node, assignments):
    """String constants a call argument can take: literals, conditional expressions, names bound to them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _string_values(node.body, assignments) | _string_values(node.orelse, assignments)
    if isinstance(node, ast.Name):
        values = set()
        for value in assignments.get(node.id, []):
            values |= _string_values(value, assignments)
        return values
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        values = set()
        for element in node.elts:
            values |= _string_values(element, assignments)
        return values
    return set()


def _assignments(scope):
    """Values bound to each name in a function (assignments, for loops, comprehensions)."""
    bound = {}
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    bound.setdefault(target.id, []).append(node.value)
        elif isinstance(node, (ast.comprehension, ast.For)) and isinstance(node.target, ast.Name):
            bound.setdefault(node.target.id, []).append(node.iter)
    return bound


def _looked_up_binaries():
    binaries = {}
    for path in sorted((REPO / "plugins").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        scopes = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for scope in [tree] + scopes:
            # Calls of this scope only, not of the functions nested in it (they are scopes of their own).
            nested = {id(n) for s in ast.walk(scope) if s is not scope and isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
                      for n in ast.walk(s)}
            bound = _assignments(scope) if scope is not tree else {}
            for node in ast.walk(scope):
                if id(node) in nested or not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if func in LOOKUP_FUNCTIONS:
                    for value in _string_values(node.args[0], bound):
                        binaries.setdefault(value, set()).add(str(path.relative_to(REPO)))
    return binaries


def _bindep():
    packages = {"dpkg": set(), "rpm": set()}
    for line in (AWX / "bindep.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split()[0]
        profiles = re.findall(r"platform:(\w+)", line) or ["dpkg", "rpm"]
        for profile in profiles:
            packages.setdefault(profile, set()).add(name)
    return packages


def test_ee_provides_every_binary_the_modules_look_up():
    binaries = _looked_up_binaries()
    assert {"pg_basebackup", "pg_dump", "pg_ctl", "pg_controldata", "pg_verifybackup", "pg_amcheck"} <= set(binaries), \
        binaries
    unknown = sorted(set(binaries) - set(BINARY_PACKAGES))
    assert not unknown, "looked up with get_bin_path but not mapped to a package here: %s" % unknown
    packages = _bindep()
    for binary in binaries:
        deb, rpm = BINARY_PACKAGES[binary]
        assert deb in packages["dpkg"], "%s: %s missing from awx/bindep.txt" % (binary, deb)
        assert rpm in packages["rpm"], "%s: %s missing from awx/bindep.txt" % (binary, rpm)
    assert "postgresql:15" in json.dumps(_ee()["additional_build_steps"]), "the RPM packages must be PostgreSQL 15"


def test_debian_package_map_matches_dpkg_when_available():
    dpkg = shutil.which("dpkg")
    checked = 0
    for binary, (deb, _rpm) in BINARY_PACKAGES.items():
        path = Path("/usr/lib/postgresql/15/bin") / binary
        if dpkg and path.exists():
            owner = subprocess.run([dpkg, "-S", str(path)], capture_output=True, text=True, check=False)
            if owner.returncode == 0:
                assert owner.stdout.split(":")[0] == deb, (binary, owner.stdout)
                checked += 1
    if not checked:
        pytest.skip("no dpkg or no PostgreSQL 15 installed here")


def test_ee_collections():
    requirements = yaml.safe_load((AWX / "requirements.yml").read_text())["collections"]
    names = {c["name"] for c in requirements}
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    tarball = "collections/rtx-dr-%s.tar.gz" % galaxy["version"]
    assert {"name": tarball, "type": "file"} in requirements
    assert Path(_ee()["additional_build_files"][0]["src"]).name == "rtx-dr-*.tar.gz"
    assert set(galaxy["dependencies"]) <= names
    used = set()
    for path in list((REPO / "playbooks").rglob("*.yml")) + list((REPO / "roles").rglob("*.yml")):
        used |= set(re.findall(r"\b((?:amazon|community|ansible)\.[a-z_]+)\.[a-z_0-9]+:", path.read_text()))
    used -= {"ansible.builtin"}
    assert used <= names, "used by the playbooks and roles, missing from awx/requirements.yml: %s" % (used - names)
    for collection in requirements:
        if collection.get("type") != "file":
            assert re.match(r"^==\d+\.\d+\.\d+$", collection["version"]), collection


# --------------------------------------------------------------------------- no secrets


SECRET_PATTERNS = [r"AKIA[0-9A-Z]{16}", r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"(?i)(password|passwd|token)\s*:\s*\S+",
                   r"(?i)aws_secret_access_key"]


def test_controller_data_holds_credential_types_only():
    assert set(CONTROLLER) == {"organization", "execution_environment", "project", "credential_types", "inventories",
                               "job_template_defaults", "job_templates", "schedules"}
    text = (AWX / "controller.yml").read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text), pattern
    for ctype in CONTROLLER["credential_types"]:
        fields = {f["id"]: f for f in ctype["inputs"]["fields"]}
        assert ctype["kind"] in ("cloud", "net")
        for section in ctype["injectors"].values():
            for key, value in section.items():
                # Each injector is a reference to one input of the type, rendered by AWX at launch.
                match = re.match(r"^\{\{ (\w+) \}\}$", value)
                assert match and match.group(1) in fields, (ctype["name"], key, value)
        assert any(f.get("secret") for f in fields.values()), "the secret inputs must be marked secret"
    # Credentials are referenced by name only.
    assert all(isinstance(c, str) for c in CONTROLLER["job_template_defaults"]["credentials"])
    for name in CONTROLLER["job_template_defaults"]["credentials"]:
        assert not re.search(r"\s(key|password|secret)\s*=", name)
    assert SITE["rtx_dr_awx_disabled_schedules"] == []


def test_injected_variables_are_the_ones_the_playbooks_read():
    injected = set()
    for ctype in CONTROLLER["credential_types"]:
        injected |= set(ctype["injectors"].get("extra_vars", {}))
    sources = "".join(p.read_text() for p in (REPO / "playbooks").glob("*.yml"))
    for variable in injected:
        assert variable in sources, variable


# --------------------------------------------------------------------------- awx_configure.yml


def test_awx_configure_syntax_check(ansible_env):
    env, inventory = ansible_env
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOKS / "awx_configure.yml"),
                           "--syntax-check"], cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_awx_configure_applies_every_object_kind():
    plays = yaml.safe_load((PLAYBOOKS / "awx_configure.yml").read_text())
    modules = {key for task in plays[0]["tasks"] for key in task if key.startswith("awx.awx.")}
    assert {"awx.awx.organization", "awx.awx.execution_environment", "awx.awx.credential_type", "awx.awx.project",
            "awx.awx.inventory", "awx.awx.inventory_source", "awx.awx.job_template", "awx.awx.schedule"} <= modules
    assert "awx.awx.credential" not in modules, "credentials hold secrets: referenced by name, never created here"
    assert plays[0]["vars_files"] == ["../awx/controller.yml"]
    defaults = plays[0]["module_defaults"]["group/awx.awx.controller"]
    assert "controller_validate_certs | default(true)" in defaults["validate_certs"]


# --------------------------------------------------------------------------- against a stand-in controller


def _seed(names):
    return {"credentials": [{"name": name, "credential_type": 1} for name in names]}


def run_configure(ansible_env, url, *extra):
    env, inventory = ansible_env
    env = {k: v for k, v in env.items() if not k.startswith(("CONTROLLER_", "TOWER_"))}
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOKS / "awx_configure.yml"),
           "-e", "controller_host=%s" % url, "-e", "controller_oauthtoken=fake-token-for-tests",
           "-e", "controller_validate_certs=false"] + list(extra)
    return subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600, check=False)


def test_awx_configure_applies_the_data_idempotently(ansible_env):
    """The awx.awx modules accept every argument the playbook gives them, create each object once with the data
    of awx/controller.yml (on a stand-in of the AWX API on 127.0.0.1), and a second run with --check changes nothing."""
    from fake_awx import FakeAWX  # pylint: disable=import-outside-toplevel

    with FakeAWX(_seed(SITE["rtx_dr_awx_credentials"])) as fake:
        applied = run_configure(ansible_env, fake.url)
        assert applied.returncode == 0, applied.stdout[-4000:] + applied.stderr[-2000:]
        counts = {endpoint: len(objects) for endpoint, objects in fake.objects.items()}
        assert counts == {"credentials": 3, "organizations": 1, "execution_environments": 1, "credential_types": 1,
                          "projects": 1, "inventories": 1, "inventory_sources": 1,
                          "job_templates": len(TEMPLATES), "schedules": len(CONTROLLER["schedules"])}, counts
        assert not any(method == "POST" and path.rstrip("/").endswith("/credentials") and "id" not in body
                       for method, path, _query, body in fake.requests), "a credential was created"

        ctype = fake.named("credential_types", "rtx.dr AWS endpoint")
        assert ctype["injectors"]["extra_vars"]["rtx_dr_aws_secret_key"] == "{{ secret_key }}"
        credentials = sorted(o["id"] for o in fake.objects["credentials"].values())
        for name, template in TEMPLATES.items():
            stored = fake.named("job_templates", name)
            assert stored["playbook"] == template["playbook"], name
            assert json.loads(stored.get("extra_vars") or "{}") == (template.get("extra_vars") or {}), name
            assert fake.surveys[("job_templates", stored["id"])] == template["survey_spec"], name
            assert sorted(fake.links[("job_templates", stored["id"], "credentials")]) == credentials, name
        drill = fake.named("schedules", "rtx.dr - full DR drill quarterly 05:00 UTC")
        assert drill["extra_data"] == {"drill_confirm": SITE["rtx_dr_awx_cluster_name"], "drill_region_target": "west"}
        assert drill["unified_job_template"] == fake.named("job_templates", "rtx.dr - full DR drill")["id"]
        enabled = {s["name"]: s["enabled"] for s in fake.objects["schedules"].values()}
        assert enabled.pop(CHAOS_SCHEDULE) is False and all(enabled.values()), enabled
        chaos = fake.named("schedules", CHAOS_SCHEDULE)
        assert chaos["extra_data"]["chaos_enabled"] == "false" and "inventory" not in chaos
        assert chaos["unified_job_template"] == fake.named("job_templates", CHAOS)["id"]
        assert fake.named("job_templates", CHAOS)["ask_inventory_on_launch"] is True
        assert all(fake.named("job_templates", name)["ask_job_type_on_launch"] is True for name in INCIDENT_TEMPLATES)
        assert "Disabled schedules: %s" % CHAOS_SCHEDULE in applied.stdout, applied.stdout[-3000:]
        project = fake.named("projects", "rtx.dr")
        assert project["scm_url"] == SITE["rtx_dr_awx_scm_url"] and project["scm_type"] == "git"

        again = run_configure(ansible_env, fake.url, "--check", "-e",
                              json.dumps({"rtx_dr_awx_disabled_schedules": ["rtx.dr - full backup daily 02:00 UTC"]}))
        assert again.returncode == 0, again.stdout[-4000:]
        changed = re.findall(r"^changed: \[localhost\] => \(item=(.*)\)$", again.stdout, re.M)
        assert changed == ["rtx.dr - full backup daily 02:00 UTC"], again.stdout[-4000:]
        assert fake.named("schedules", "rtx.dr - full backup daily 02:00 UTC")["enabled"] is True

        # Turning the chaos tests on is one site parameter: only that schedule changes.
        enable = run_configure(ansible_env, fake.url, "-e", json.dumps(
            {"rtx_dr_awx_chaos_confirm": "rtx-lab", "rtx_dr_awx_chaos_inventory": "rtx.dr"}))
        assert enable.returncode == 0, enable.stdout[-4000:]
        changed = re.findall(r"^changed: \[localhost\] => \(item=(.*)\)$", enable.stdout, re.M)
        assert changed == [CHAOS_SCHEDULE], enable.stdout[-4000:]
        chaos = fake.named("schedules", CHAOS_SCHEDULE)
        assert chaos["enabled"] is True and chaos["inventory"] == fake.named("inventories", "rtx.dr")["id"]
        assert chaos["extra_data"] == {"chaos_enabled": "true", "chaos_confirm": "rtx-lab",
                                       "chaos_faults": _chaos_fault_names()}


def test_awx_configure_refuses_a_missing_credential(ansible_env):
    from fake_awx import FakeAWX  # pylint: disable=import-outside-toplevel

    with FakeAWX(_seed(SITE["rtx_dr_awx_credentials"][:2])) as fake:
        proc = run_configure(ansible_env, fake.url)
        assert proc.returncode != 0
        assert "The credential '%s' does not exist" % SITE["rtx_dr_awx_credentials"][2] in proc.stdout, proc.stdout[-3000:]
        # Stopped before the project, the inventory, the templates and the schedules.
        assert not {"projects", "inventories", "job_templates", "schedules"} & set(fake.objects), fake.objects.keys()

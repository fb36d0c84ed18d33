# -*- coding: utf-8 -*-
# Copyright: rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DR drills: which stages a drill runs, the recovery objectives it is judged
against, the acknowledged commits it lost, and the verdict.

Plain Python used by the ``rtx.dr.drill`` filters (``playbooks/dr_drill.yml``).
Nothing here talks to a server: the playbook collects the measurements
(restore RTO, switchover/region RTO, acknowledged sequence numbers of the
synthetic writers) and this module turns them into a record that says, per
stage and in total, which objective was met or missed and why.
"""

from __future__ import annotations

from ansible_collections.rtx.dr.plugins.module_utils import report
from ansible_collections.rtx.dr.plugins.module_utils.catalog import parse_iso_time
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError

DRILLS = ("restore", "failover", "region", "full")
# The order a full drill runs its stages in: the least intrusive first, so a
# broken backup chain is found before the cluster is moved around.
FULL_ORDER = ("restore", "failover", "region")
# Drills that move the primary: they need an inventory marked as a drill
# target and the cluster's name as confirmation.
INTRUSIVE = ("failover", "region")

# Which objectives (rtx_dr_objectives components) each stage is judged
# against when the inventory does not say otherwise: a restore drill measures
# the database (seed: RTO 15 min, RPO 1 min); a switchover and a region
# failover also measure the application writing again (trading engine: RTO
# 5 min, RPO 30 s).
DEFAULT_COMPONENTS = {
    "restore": ["database"],
    "failover": ["database", "trading_engine"],
    "region": ["database", "trading_engine"],
}


def drill_stages(drill):
    """The stages a drill runs, in order. Unknown drill -> InvalidValueError."""
    if drill not in DRILLS:
        raise InvalidValueError(
            "drill must be one of %s (got %r)" % (", ".join(DRILLS), drill))
    return list(FULL_ORDER) if drill == "full" else [drill]


def seconds(value, what="duration"):
    """A duration as seconds: a number (seconds) or a string such as '15m', '30 s', '1h'."""
    if value is None or isinstance(value, bool):
        raise InvalidValueError("%s: a number of seconds or a duration like '15m' is needed (got %r)" % (what, value))
    result = float(value) if isinstance(value, (int, float)) else report.parse_duration(str(value))
    if result is None:
        raise InvalidValueError(
            "%s: %r is not a duration; use seconds (e.g. 900) or a number with a unit s, m or h (e.g. '15m')"
            % (what, value))
    if result < 0:
        raise InvalidValueError("%s must not be negative (got %r)" % (what, value))
    return result


def normalize_objectives(objectives):
    """``{component: {rto_seconds, rpo_seconds}}`` from the inventory's objectives.

    Each component must give ``rto``/``rpo`` (durations like '15m') or
    ``rto_seconds``/``rpo_seconds``; other keys (availability, ...) are kept.
    The values are read and checked by the DR report's parser of the same
    variable (:func:`report.normalise_objectives`), so both judge alike.
    """
    if not isinstance(objectives, dict) or not objectives:
        raise InvalidValueError(
            "rtx_dr_objectives must be a mapping of component -> {rto, rpo} "
            "(e.g. database: {rto: 15m, rpo: 1m}); got %r" % (objectives,))
    for name, spec in objectives.items():
        if not isinstance(spec, dict):
            raise InvalidValueError("rtx_dr_objectives.%s must be a mapping with rto and rpo (got %r)" % (name, spec))
        for key in ("rto", "rpo"):
            if spec.get(key + "_seconds", spec.get(key)) is None:
                raise InvalidValueError("rtx_dr_objectives.%s has no %s (give %s or %s_seconds)" % (name, key, key, key))
    parsed = report.normalise_objectives(objectives)  # same order as objectives.items()
    return dict((name, dict(spec, rto_seconds=float(item["rto_seconds"]), rpo_seconds=float(item["rpo_seconds"])))
                for (name, spec), item in zip(objectives.items(), parsed))


def parse_acked(text, after=None):
    """Sequence numbers from a demo writer's acknowledged log (one integer per line), > ``after``.

    A torn last line (the writer was killed mid-write) is ignored; any other
    line that is not an integer is an error, since the loss check would be
    meaningless on a log it cannot read.
    """
    lines = (text or "").splitlines()
    seqs = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            seq = int(line)
        except ValueError as exc:
            if number == len(lines):
                continue
            raise InvalidValueError("acknowledged log line %d is not a sequence number: %r" % (number, line)) from exc
        if after is None or seq > int(after):
            seqs.append(seq)
    return seqs


def lost_commits(acked, present):
    """Acknowledged sequence numbers missing from the rows found on the final primary (sorted)."""
    found = {int(value) for value in present or []}
    return sorted({int(value) for value in acked or []} - found)


def _number(value, what):
    """A measurement as float, or None when it was not measured."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None", "none", "null")):
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError("%s: %r is not a number of seconds" % (what, value)) from exc


def _truthy(value):
    """Booleans as Ansible may hand them over (True, 'true', 'True', 'yes', 1)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _judge(measured, limit):
    if measured is None:
        return None
    return float(measured) <= float(limit)


def stage_verdict(stage, measured, objectives, components=None):
    """Judge one stage. ``measured``: {status, rto_seconds, rpo_seconds, lost_commits, required_zero_loss, error}.

    The stage passes when it completed, every objective of its components is
    met (a missing measurement counts as missed) and, where zero loss is
    required (a planned switchover), no acknowledged commit is missing.
    """
    objectives = normalize_objectives(objectives)
    names = list(components or DEFAULT_COMPONENTS.get(stage, ["database"]))
    unknown = [name for name in names if name not in objectives]
    if unknown:
        raise InvalidValueError(
            "drill stage %s is judged against %s, which rtx_dr_objectives does not define (it has %s)"
            % (stage, ", ".join(unknown), ", ".join(sorted(objectives))))
    measured = dict(measured or {})
    for key in ("rto_seconds", "rpo_seconds"):
        # Templated values arrive as numbers or as their text ('4.5', 'None', '').
        measured[key] = _number(measured.get(key), "%s %s" % (stage, key))
    checks = []
    reasons = []
    if measured.get("status") != "complete":
        reasons.append("%s did not complete: %s" % (stage, measured.get("error") or measured.get("status") or "no result"))
    for name in names:
        for key in ("rto", "rpo"):
            value = measured.get(key + "_seconds")
            limit = objectives[name][key + "_seconds"]
            ok = _judge(value, limit)
            checks.append({"component": name, "objective": key.upper(), "limit_seconds": limit,
                           "measured_seconds": value, "met": bool(ok)})
            if ok is None:
                reasons.append("%s %s of %s not measured" % (stage, key.upper(), name))
            elif not ok:
                reasons.append("%s %s %.1f s > %s objective %.0f s" % (stage, key.upper(), float(value), name, limit))
    lost = list(measured.get("lost_commits") or [])
    if (_truthy(measured.get("required_zero_loss")) and _truthy(measured.get("require_writers", True))
            and "acked_checked" in measured and not int(measured["acked_checked"] or 0)):
        reasons.append("%s: no acknowledged commit of a synthetic writer was checked, so zero loss is not proven"
                       % stage)
    if _truthy(measured.get("required_zero_loss")) and lost:
        reasons.append("%s lost %d acknowledged commit(s), e.g. %s" % (stage, len(lost), ", ".join(str(s) for s in lost[:5])))
    return {"stage": stage, "passed": not reasons, "reasons": reasons, "checks": checks,
            "measured": measured}


def drill_verdict(drill, results, objectives, components=None):
    """The drill's verdict from ``results`` (stage -> measured dict, see :func:`stage_verdict`).

    A stage of the drill without a result counts as failed ("did not run").
    """
    components = components or {}
    stages = []
    for stage in drill_stages(drill):
        measured = (results or {}).get(stage) or {"status": "not run", "error": "the stage did not run"}
        stages.append(stage_verdict(stage, measured, objectives, components.get(stage)))
    reasons = [reason for stage in stages for reason in stage["reasons"]]
    worst = {}
    for key in ("rto_seconds", "rpo_seconds"):
        values = [s["measured"].get(key) for s in stages if s["measured"].get(key) is not None]
        worst[key] = max(values) if values else None
    lost = sum(len(s["measured"].get("lost_commits") or []) for s in stages)
    return {"drill": drill, "passed": not reasons, "status": "passed" if not reasons else "failed",
            "reasons": reasons, "stages": stages, "rto_seconds": worst["rto_seconds"],
            "rpo_seconds": worst["rpo_seconds"], "lost_commits": lost}


def verdict_lines(verdict):
    """Human summary lines of a verdict (the playbook's last debug)."""
    lines = ["DR DRILL %s: %s" % (verdict["drill"], "PASSED" if verdict["passed"] else "FAILED")]
    for stage in verdict["stages"]:
        measured = stage["measured"]
        lines.append("%-8s %-6s RTO %s s, RPO %s s, acknowledged commits lost %s" % (
            stage["stage"], "ok" if stage["passed"] else "FAILED",
            _fmt(measured.get("rto_seconds")), _fmt(measured.get("rpo_seconds")),
            len(measured.get("lost_commits") or []) if "lost_commits" in measured else "n/a"))
        for check in stage["checks"]:
            lines.append("         %s %s: %s s (objective <= %.0f s) %s" % (
                check["component"], check["objective"], _fmt(check["measured_seconds"]),
                check["limit_seconds"], "met" if check["met"] else "MISSED"))
    lines.extend("reason: " + reason for reason in verdict["reasons"])
    return lines


def _fmt(value):
    return "-" if value is None else "%.1f" % float(value)


def _log_time(text):
    """A PostgreSQL log timestamp ('2026-11-27 15:40:01.123456+00') as an aware datetime, or None."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = parse_iso_time(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def restore_rpo(last_transaction, restore_started):
    """Achieved RPO of a restore drill in seconds, or None when it cannot be told.

    ``restore_started`` (epoch seconds) is when the drill began reading the
    archive; ``last_transaction`` is PostgreSQL's "last completed transaction
    was at log time ..." of the restored server: the commits between the two
    were not restorable from S3 at that moment. On an idle cluster this is an
    upper bound (there may have been no commit in between).
    """
    when = _log_time(last_transaction)
    if when is None or restore_started in (None, ""):
        return None
    return round(max(0.0, float(restore_started) - when.timestamp()), 3)

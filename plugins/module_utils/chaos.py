# -*- coding: utf-8 -*-

# Copyright: (c) 2026, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Chaos tests of ``playbooks/chaos.yml``, in plain Python.

* disk fill: how many bytes to allocate so the file system of a directory
  reaches a used percentage, never leaving less than a minimum free
  (:func:`disk_fill_plan`, :func:`fill_disk`, :func:`remove_fill`);
* connection exhaustion: open connections as a non-superuser until the server
  refuses (the superuser-reserved slots stay free), hold them until a stop file
  appears or a safety timeout passes, always close them
  (:func:`hold_connections`, :func:`release_connections`);
* alert evaluation: the health checks' results turned into the health agent's
  Prometheus textfile (the agent's own :func:`health_agent.metric_samples` and
  :func:`health_agent.format_textfile`), plus the exporter-named series the
  seed's rules read, evaluated against the real rule file with
  ``promtool test rules`` (:func:`evaluate_alerts`).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time

from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

FAULTS = ("kill_instance", "latency", "disk_fill", "connections")
FILL_FILE_NAME = ".rtx-dr-chaos-fill"
APPLICATION_NAME = "rtx.dr chaos"
MIB = 1024 * 1024


def validate_faults(faults):
    """The faults in run order (:data:`FAULTS`), duplicates removed; unknown names are refused."""
    names = [str(f) for f in (faults or [])]
    unknown = sorted(set(names) - set(FAULTS))
    if unknown:
        raise InvalidValueError("chaos_faults: unknown fault(s) %s" % ", ".join(unknown),
                                hint="Use some of: %s." % ", ".join(FAULTS))
    if not names:
        raise InvalidValueError("chaos_faults is empty: nothing to do", hint="Name at least one of: %s." % ", ".join(FAULTS))
    return [f for f in FAULTS if f in names]


# --------------------------------------------------------------------------
# Disk fill
# --------------------------------------------------------------------------


def used_percent(total, available):
    return 100.0 * (total - available) / total if total else 100.0


def disk_fill_plan(total, available, percent, min_free_bytes, existing_fill=0):
    """How many bytes the fill file must have so the file system is ``percent`` used.

    ``total`` and ``available`` are statvfs bytes (as the disk health check
    computes them) *with* an existing fill file of ``existing_fill`` bytes; the
    plan is made as if it were absent. Never leaves less than ``min_free_bytes``
    available: the target is lowered to that, and when even that needs no
    allocation the plan is refused.

    :returns: ``{'bytes', 'used_before', 'used_after', 'capped', 'refused'}``;
        ``refused`` is None or the reason (already above the threshold, or too
        little room to fill without going under the minimum free space).
    """
    if not 0 < percent < 100:
        raise InvalidValueError("chaos_disk_fill_percent must be between 0 and 100, got %s" % percent)
    if min_free_bytes < 0:
        raise InvalidValueError("chaos_disk_min_free_mb must be >= 0")
    free = available + existing_fill
    used_before = used_percent(total, free)
    plan = {"bytes": 0, "used_before": round(used_before, 2), "used_after": round(used_before, 2),
            "capped": False, "refused": None}
    if used_before >= percent:
        plan["refused"] = ("the file system is already %.1f%% used, at or above the fill target %s%%: "
                           "chaos would only make a full disk fuller" % (used_before, percent))
        return plan
    wanted = int(free - total * (100.0 - percent) / 100.0) + 1
    room = int(free - min_free_bytes)
    if wanted > room:
        wanted = room
        plan["capped"] = True
    if wanted <= 0:
        plan["refused"] = ("only %d MiB are available, not more than the minimum free %d MiB: nothing can be filled"
                           % (free // MIB, min_free_bytes // MIB))
        return plan
    plan["bytes"] = wanted
    plan["used_after"] = round(used_percent(total, free - wanted), 2)
    return plan


def _statvfs(path):
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize


def fill_disk(directory, percent, min_free_mb, check_mode=False, file_name=FILL_FILE_NAME,
              statvfs=None, allocate=None):
    """Allocate ``directory/file_name`` so the file system reaches ``percent`` used (see :func:`disk_fill_plan`)."""
    if not os.path.isdir(directory):
        raise InvalidValueError("%s is not a directory" % directory)
    statvfs = statvfs or _statvfs
    path = os.path.join(directory, file_name)
    existing = os.path.getsize(path) if os.path.exists(path) else 0
    total, available = statvfs(directory)
    plan = disk_fill_plan(total, available, float(percent), int(min_free_mb) * MIB, existing)
    result = dict(plan, path=path, total_bytes=total, changed=False)
    if plan["refused"]:
        raise RtxDrError("disk fill refused on %s: %s" % (directory, plan["refused"]),
                         hint="Lower chaos_disk_min_free_mb or raise chaos_disk_fill_percent, or free space first.",
                         details=result)
    if existing == plan["bytes"]:
        return result
    result["changed"] = True
    if check_mode:
        return result
    allocate = allocate or _allocate
    try:
        allocate(path, plan["bytes"])
    except OSError as exc:
        remove_fill(directory, file_name=file_name)
        raise RtxDrError("cannot allocate %d bytes in %s: %s" % (plan["bytes"], path, exc.strerror or exc),
                         details=result) from None
    total, available = statvfs(directory)
    result["used_after"] = round(used_percent(total, available), 2)
    return result


def _allocate(path, size):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def remove_fill(directory, check_mode=False, file_name=FILL_FILE_NAME):
    """Remove the fill file; ``{'changed', 'path', 'bytes'}``."""
    path = os.path.join(directory, file_name)
    if not os.path.lexists(path):
        return {"changed": False, "path": path, "bytes": 0}
    size = os.path.getsize(path)
    if not check_mode:
        os.unlink(path)
    return {"changed": True, "path": path, "bytes": size}


# --------------------------------------------------------------------------
# Connection exhaustion
# --------------------------------------------------------------------------


def write_state(path, state):
    """Write the holder's state JSON atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=".chaos.", dir=directory)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(state, out, sort_keys=True)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def open_connections(connect, limit):
    """Open connections with ``connect()`` until it raises :class:`RtxDrError` or ``limit`` are open.

    :returns: ``(connections, reason)``; ``reason`` is the refusal message, or None when ``limit`` was reached.
    """
    conns = []
    reason = None
    while len(conns) < limit:
        try:
            conns.append(connect())
        except RtxDrError as exc:
            reason = str(exc)
            break
    return conns, reason


def hold_connections(connect, close, limit, hold_seconds, stop_file, state_file, interval=0.5,
                     clock=time.monotonic, sleep=time.sleep, pid=None):
    """Open up to ``limit`` connections, hold them until ``stop_file`` exists or ``hold_seconds`` pass, close them.

    The connections are always closed, whatever happens while holding them.
    ``state_file`` says ``holding`` (with the count and the refusal) while they
    are open and ``released`` afterwards.
    """
    if os.path.exists(stop_file):
        os.unlink(stop_file)
    started = clock()
    conns, reason = open_connections(connect, limit)
    state = {"status": "holding", "opened": len(conns), "refused": reason, "pid": pid or os.getpid(),
             "limit": limit, "hold_seconds": hold_seconds}
    stopped_by = "timeout"
    try:
        if not conns:
            raise RtxDrError("no connection could be opened: %s" % reason, details=state)
        write_state(state_file, state)
        deadline = started + hold_seconds
        while clock() < deadline:
            if os.path.exists(stop_file):
                stopped_by = "stop_file"
                break
            sleep(interval)
    finally:
        for conn in conns:
            close(conn)
        state.update(status="released", stopped_by=stopped_by, held_seconds=round(clock() - started, 1))
        write_state(state_file, state)
    return state


def release_connections(stop_file, state_file, count_leftovers, terminate_leftovers, wait_seconds=30.0,
                        clock=time.monotonic, sleep=time.sleep, check_mode=False):
    """Tell the holder to stop (stop file), wait for it, then terminate any backend it left.

    ``count_leftovers()`` returns the number of backends of the chaos
    application_name; ``terminate_leftovers()`` ends them and returns how many.
    """
    result = {"changed": False, "holder": None, "terminated": 0, "leftover": 0}
    if os.path.exists(state_file):
        with open(state_file, encoding="utf-8") as handle:
            try:
                result["holder"] = json.load(handle)
            except ValueError:
                result["holder"] = None
    holding = bool(result["holder"]) and result["holder"].get("status") == "holding"
    if check_mode:
        result["changed"] = holding or count_leftovers() > 0
        return result
    if holding:
        with open(stop_file, "w", encoding="utf-8") as handle:
            handle.write("stop\n")
        result["changed"] = True
        deadline = clock() + wait_seconds
        while clock() < deadline:
            with open(state_file, encoding="utf-8") as handle:
                try:
                    state = json.load(handle)
                except ValueError:
                    state = {}
            if state.get("status") == "released":
                result["holder"] = state
                break
            sleep(0.5)
    leftovers = count_leftovers()
    if leftovers:
        result["terminated"] = terminate_leftovers()
        result["changed"] = True
        deadline = clock() + 10.0
        while clock() < deadline and count_leftovers():
            sleep(0.5)
    result["leftover"] = count_leftovers()
    for path in (stop_file, state_file):
        if os.path.exists(path):
            os.unlink(path)
    return result


# --------------------------------------------------------------------------
# Alert evaluation
# --------------------------------------------------------------------------


def agent_samples(health, timestamp=None):
    """The health agent's textfile samples for a list of health check results (its own code)."""
    from ansible_collections.rtx.dr.plugins.module_utils import health as health_mod  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.health_agent import metric_samples  # pylint: disable=import-outside-toplevel

    status, counts = health_mod.summarize(health)
    document = {"timestamp": round(timestamp if timestamp is not None else time.time(), 3), "duration_seconds": 0.0,
                "status": status, "counts": counts, "checks": list(health), "history": {"enabled": False}, "dr": None}
    return metric_samples(document)


def exporter_samples(health, postgres_labels=None, node_labels=None, connections=None, filesystems=None):
    """Series named as postgres_exporter and node_exporter name them, from the same measurements.

    * ``pg_up``: 0 when the ``postgresql`` check could not connect (no value), else 1;
    * ``pg_replication_lag_seconds``: per standby of a primary's ``replication_lag`` check (label ``standby``);
    * ``node_filesystem_{size,avail}_bytes`` and ``node_filesystem_readonly`` of each ``disk`` check
      (statvfs blocks and blocks available to unprivileged users, as node_exporter reads them), labelled with
      the ``mountpoint``, ``fstype`` and ``device`` of ``filesystems[path]`` (``findmnt``; ``unknown`` without);
    * ``pg_stat_database_numbackends`` and ``pg_settings_max_connections`` from ``connections``
      (``{'numbackends': {datname: n}, 'max_connections': n}``).
    """
    postgres_labels = dict(postgres_labels or {})
    node_labels = dict(node_labels or {})
    samples = []
    for result in health:
        check = result.get("check")
        if check == "postgresql":
            samples.append(("pg_up", dict(postgres_labels), 0 if result.get("value") is None else 1))
        elif check == "replication_lag":
            standbys = (result.get("details") or {}).get("standbys") or {}
            for name, item in sorted(standbys.items()):
                samples.append(("pg_replication_lag_seconds", dict(postgres_labels, standby=name),
                                float(item.get("lag_seconds") or 0.0)))
        elif check == "disk":
            details = result.get("details") or {}
            if "total_bytes" in details:
                mount = (filesystems or {}).get(str(result["target"])) or {}
                labels = dict(node_labels, mountpoint=str(mount.get("mountpoint") or result["target"]),
                              fstype=str(mount.get("fstype") or "unknown"), device=str(mount.get("device") or "unknown"))
                samples.append(("node_filesystem_size_bytes", dict(labels), details["total_bytes"]))
                samples.append(("node_filesystem_avail_bytes", dict(labels), details["available_bytes"]))
                samples.append(("node_filesystem_readonly", dict(labels), 0))
    if connections:
        for datname, count in sorted((connections.get("numbackends") or {}).items()):
            samples.append(("pg_stat_database_numbackends", dict(postgres_labels, datname=str(datname)), int(count)))
        samples.append(("pg_settings_max_connections", dict(postgres_labels), int(connections["max_connections"])))
    return samples


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def series_line(name, labels):
    """``name{a="b",...}`` in PromQL selector syntax (labels sorted)."""
    text = ",".join('%s="%s"' % (k, _escape(v)) for k, v in sorted(labels.items()))
    return "%s{%s}" % (name, text) if text else name


def input_series(samples, labels, minutes):
    """promtool ``input_series``: every sample constant for ``minutes`` (one value a minute)."""
    out = []
    seen = set()
    for name, sample_labels, value in samples:
        line = series_line(name, dict(sample_labels, **labels))
        if line in seen:
            continue
        seen.add(line)
        out.append({"series": line, "values": "%.6f+0x%d" % (float(value), int(minutes))})
    return out


def alert_selector(alert, labels):
    matchers = dict(labels or {}, alertname=alert, alertstate="firing")
    return "ALERTS{%s}" % ",".join('%s="%s"' % (k, _escape(v)) for k, v in sorted(matchers.items()))


def promtool_test(rules_file, series, alert, labels, firing, minutes):
    """One ``promtool test rules`` document: does ``alert`` (with ``labels``) fire at the end of the series?"""
    expr = "clamp_max(count(%s), 1)" % alert_selector(alert, labels)
    return {"rule_files": [os.path.abspath(rules_file)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series,
                       "promql_expr_test": [{"expr": expr, "eval_time": "%dm" % int(minutes),
                                             "exp_samples": [{"labels": "{}", "value": 1}] if firing else []}]}]}


def evaluate_alerts(rules_file, sources, expect, work_dir, promtool="promtool", common_labels=None, minutes=30,
                    runner=subprocess.run, postgres_labels=None, node_labels=None, timestamp=None):
    """Evaluate the real alert rules on what the health checks measured.

    :param sources: ``[{'instance', 'health': [results], 'connections': {...} or None,
        'filesystems': {path: {'mountpoint', 'fstype', 'device'}} or None}]``
    :param expect: ``[{'alert', 'labels': {...}, 'firing': bool (default True)}]``
    :returns: ``{'alerts': [...], 'detected': bool, 'missing': [...], 'textfiles': {instance: path}, 'tests': [...]}``
    """
    from ansible_collections.rtx.dr.plugins.module_utils.health_agent import format_textfile  # pylint: disable=import-outside-toplevel

    if not os.path.isfile(rules_file):
        raise InvalidValueError("rules file %s does not exist" % rules_file,
                                hint="Render it with playbooks/monitoring.yml or let chaos.yml render it.")
    if not expect:
        raise InvalidValueError("no expected alert given")
    os.makedirs(work_dir, exist_ok=True)
    try:
        proc = runner([promtool, "check", "rules", rules_file], capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        raise RtxDrError("cannot run %s: %s" % (promtool, exc.strerror or exc),
                         hint="Install promtool (in the lab: make tools) or set chaos_promtool.") from None
    if proc.returncode != 0:
        raise RtxDrError("promtool check rules %s failed: %s" % (rules_file, ((proc.stdout or "") + (proc.stderr or ""))[-2000:]))
    series = []
    textfiles = {}
    for source in sources:
        instance = str(source["instance"])
        labels = dict(common_labels or {}, instance=instance)
        health = source.get("health") or []
        samples = agent_samples(health, timestamp)
        path = os.path.join(work_dir, "%s.prom" % instance)
        with open(path, "w", encoding="utf-8") as out:
            out.write(format_textfile(samples))
        textfiles[instance] = path
        samples = samples + exporter_samples(health, postgres_labels, node_labels, source.get("connections"),
                                             source.get("filesystems"))
        series += input_series(samples, labels, minutes)
    alerts = []
    for index, item in enumerate(expect):
        firing = bool(item.get("firing", True))
        document = promtool_test(rules_file, series, item["alert"], item.get("labels") or {}, firing, minutes)
        test_path = os.path.join(work_dir, "test-%02d-%s.json" % (index, item["alert"]))
        with open(test_path, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1, sort_keys=True)
        proc = runner([promtool, "test", "rules", test_path], capture_output=True, text=True, timeout=120, check=False)
        output = ((proc.stdout or "") + (proc.stderr or "")).strip()
        if proc.returncode != 0 and "FAILED" not in output:
            raise RtxDrError("promtool could not evaluate %s: %s" % (test_path, output[-2000:]))
        ok = proc.returncode == 0
        alerts.append({"alert": item["alert"], "labels": item.get("labels") or {}, "expected_firing": firing,
                       "as_expected": ok, "fired": firing if ok else not firing, "test": test_path,
                       "promtool": output[-2000:] if not ok else ""})
    missing = [a["alert"] for a in alerts if not a["as_expected"]]
    return {"alerts": alerts, "detected": not missing, "missing": missing, "textfiles": textfiles,
            "series": len(series)}

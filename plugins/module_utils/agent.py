# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Host-side agent: scheduled backups and verification with the modules' own code.

The systemd timers installed by the ``rtx.dr.backup_schedule`` role run::

    PYTHONPATH=/usr/local/lib/rtx-dr \\
        python3 -m ansible_collections.rtx.dr.plugins.module_utils.agent [--config FILE] backup
    ... agent [--config FILE] verify [--any-host]
    ... agent [--config FILE] check-config

``backup`` does what ``rtx.dr.pg_basebackup`` does (same :class:`BackupRun`,
same option names and defaults), but only on the primary: on a server in
recovery it exits 0 with :data:`STANDBY_MESSAGE`, so the same timer can be on
every database host and the backups follow the primary after a failover.
``verify`` does what ``rtx.dr.s3_backup_verify`` does for the latest backup
(also only on the primary, unless ``--any-host``).

The configuration file (default :data:`DEFAULT_CONFIG`) is JSON or INI. Keys
are the modules' option names (aliases accepted). JSON::

    {"bucket": "b", "prefix": "pgbackup/main", "kms_key_id": "alias/k", ...,
     "backup": {"compression_level": 5}, "verify": {"checksums": true}}

INI: the same keys in ``[agent]``, per-command keys in ``[backup]``/``[verify]``.
Top-level keys must be options of backup or verify; a command ignores the
top-level keys it does not know (``kms_key_id`` also sets verify's
``expected_kms_key_id`` when that is not set). Options not in the file get their
environment fallback (e.g. ``AWS_REGION``), then the module default.

Exit codes: 0 done (or standby: nothing to do), 1 the backup/verification
failed (one-line message on stderr, JSON result on stdout), 2 the agent cannot
run as configured (file, option or library problem; nothing was contacted).

Runs on the database host with the distribution's python3 and python3-psycopg2,
python3-boto3, python3-zstandard, python3-lz4; ansible is not needed there (see
:func:`ensure_ansible_basic`).
"""

from __future__ import annotations

import argparse
import configparser
import http.client
import json
import os
import shutil
import socket
import sys
import time
import traceback
import types
from urllib.error import HTTPError
from urllib.parse import urljoin
from urllib.parse import urlsplit

from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

DEFAULT_CONFIG = "/etc/rtx-dr/agent.json"
PROG = "rtx-dr-agent"
APPLICATION_NAME = "rtx.dr agent"
STANDBY_MESSAGE = "standby: not the primary, nothing to do"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

COMMANDS = ("backup", "verify")
# Sections of the configuration: one per command, and "wal" for the archive/restore commands
# (wal_agent.py reads it; the backup agent accepts and ignores it).
SECTIONS = COMMANDS + ("wal",)
SECRET_OPTIONS = frozenset(("login_password", "secret_key", "session_token"))

_TRUE = frozenset(("1", "true", "yes", "on", "y", "t"))
_FALSE = frozenset(("0", "false", "no", "off", "n", "f", ""))


# --------------------------------------------------------------------------
# Running without ansible
# --------------------------------------------------------------------------


class AnsibleFallbackNotFound(Exception):
    """Raised by the stand-in :func:`env_fallback` (same contract as ansible's)."""


def env_fallback(*args, **kwargs):  # pylint: disable=unused-argument
    """Stand-in for ``ansible.module_utils.basic.env_fallback``: first set environment variable."""
    for name in args:
        if name in os.environ:
            return os.environ[name]
    raise AnsibleFallbackNotFound


def open_url(url, timeout=10, follow_redirects="urllib2", **_ignored):
    """Stand-in for ``ansible.module_utils.urls.open_url`` (GET only), used by the health checks on a host
    without ansible: ``http``/``https`` with :mod:`http.client`, up to 5 redirects followed (unless
    ``follow_redirects`` is false/``none``); an answer >= 400 raises :class:`urllib.error.HTTPError` like
    the original. Returns the response (``getcode()``, ``read()``, ``close()``).
    """
    for _hop in range(6):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError("unsupported URL scheme in %r" % url)
        factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = factory(parts.hostname, parts.port, timeout=timeout)
        conn.request("GET", (parts.path or "/") + ("?" + parts.query if parts.query else ""),
                     headers={"User-Agent": PROG})
        response = conn.getresponse()
        location = response.getheader("Location")
        if response.status in (301, 302, 303, 307, 308) and location and follow_redirects not in (False, "none"):
            response.close()
            conn.close()
            url = urljoin(url, location)
            continue
        if response.status >= 400:
            raise HTTPError(url, response.status, response.reason, response.headers, response)
        return response
    raise HTTPError(url, 310, "too many redirects", None, None)


def ensure_ansible_basic():
    """Make ``from ansible.module_utils.basic import env_fallback`` work on a host without ansible.

    ``aws.py`` and ``postgres.py`` import only ``env_fallback`` from ansible (for
    their argument specs), ``health.py`` only ``open_url`` (see :func:`open_url`).
    When ansible is importable nothing is done and False is returned; otherwise minimal stand-in modules are registered in
    ``sys.modules`` for this process only (nothing is written to disk, an
    ansible installed later is never shadowed) and True is returned.
    """
    try:
        import ansible.module_utils.basic  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import

        return False
    except ImportError:
        pass
    for name in ("ansible", "ansible.module_utils"):
        if not isinstance(sys.modules.get(name), types.ModuleType):
            package = types.ModuleType(name)
            package.__path__ = []
            sys.modules[name] = package
    basic = types.ModuleType("ansible.module_utils.basic")
    basic.env_fallback = env_fallback
    basic.AnsibleFallbackNotFound = AnsibleFallbackNotFound
    urls = types.ModuleType("ansible.module_utils.urls")
    urls.open_url = open_url
    sys.modules["ansible.module_utils.basic"] = basic
    sys.modules["ansible.module_utils.urls"] = urls
    sys.modules["ansible"].module_utils = sys.modules["ansible.module_utils"]
    sys.modules["ansible.module_utils"].basic = basic
    sys.modules["ansible.module_utils"].urls = urls
    return True


def _common_specs():
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.aws import aws_common_argument_spec  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.postgres import postgres_common_argument_spec  # pylint: disable=import-outside-toplevel

    return postgres_common_argument_spec(), aws_common_argument_spec()


def backup_argument_spec():
    """The argument spec of ``rtx.dr.pg_basebackup`` (the module's own, from backup.py)."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.backup import backup_argument_spec as spec  # pylint: disable=import-outside-toplevel

    return spec()


def verify_argument_spec():
    """The argument spec of ``rtx.dr.s3_backup_verify`` plus the postgres options (for the standby check)."""
    pg_spec, aws_spec = _common_specs()
    spec = dict(pg_spec)
    spec.update(aws_spec)
    from ansible_collections.rtx.dr.plugins.module_utils.verify import VERIFY_OPTIONS  # pylint: disable=import-outside-toplevel

    spec.update({k: dict(v) for k, v in VERIFY_OPTIONS.items()})
    # Agent only: where the verification is recorded (verification_history), like the backup's audit row.
    spec.update(audit_db=dict(type="str", default="rtx"), audit_schema=dict(type="str", default="dr"))
    return spec


def argument_spec(command):
    return backup_argument_spec() if command == "backup" else verify_argument_spec()


# --------------------------------------------------------------------------
# Logging: one line per message on stderr
# --------------------------------------------------------------------------


def _stderr_is_journal(stream):
    """True when stderr is connected to journald (systemd sets JOURNAL_STREAM=<dev>:<inode>)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":", 1))
        status = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return status.st_dev == device and status.st_ino == inode


class Log:
    """``log(msg)``/``log.warning(msg)``/``log.error(msg)``: one line each on stderr.

    Under systemd the line carries a ``<N>`` syslog priority prefix that journald
    turns into the entry's priority; elsewhere it starts with the UTC time and level.
    """

    PRIORITIES = {"error": 3, "warning": 4, "info": 6}

    def __init__(self, command, stream=None):
        self.command = command
        self.stream = stream or sys.stderr
        self.journal = _stderr_is_journal(self.stream)

    def emit(self, level, msg):
        text = " ".join(str(msg).split("\n")).strip()
        if self.journal:
            line = "<%d>%s: %s" % (self.PRIORITIES[level], self.command, text)
        else:
            line = "%s %s[%d] %s %s: %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), PROG, os.getpid(),
                                            level.upper(), self.command, text)
        self.stream.write(line + "\n")
        self.stream.flush()

    def __call__(self, msg):
        self.emit("info", msg)

    def warning(self, msg):
        self.emit("warning", msg)

    def error(self, msg):
        self.emit("error", msg)


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


def read_config(path):
    """Return ``{"common": {...}, "backup": {...}, "verify": {...}, "wal": {...}}`` from a JSON or INI file."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise InvalidValueError(
            "Cannot read the agent configuration %s: %s" % (path, exc.strerror or exc),
            hint="Deploy it with the rtx.dr.backup_schedule role, or pass --config FILE.",
            details={"config": path},
        ) from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidValueError("Agent configuration %s is not valid JSON: %s" % (path, exc),
                                    details={"config": path}) from None
        sections = dict((name, {}) for name in ("common",) + SECTIONS)
        for key, value in data.items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise InvalidValueError(
                        "Agent configuration %s: key %s must be an object of %s options" % (path, key, key),
                        details={"config": path})
                sections[key] = dict(value)
            else:
                sections["common"][key] = value
        return sections
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise InvalidValueError(
            "Agent configuration %s is neither JSON nor INI: %s" % (path, " ".join(str(exc).split())),
            hint="Use a JSON object, or INI with an [agent] section (and optional [backup]/[verify]).",
            details={"config": path},
        ) from None
    unknown = [s for s in parser.sections() if s not in ("agent",) + SECTIONS]
    if unknown:
        raise InvalidValueError(
            "Agent configuration %s: unknown section [%s]; expected [agent], [backup], [verify], [wal]"
            % (path, unknown[0]), details={"config": path})
    sections = {"common": dict(parser["agent"]) if parser.has_section("agent") else {}}
    for name in SECTIONS:
        sections[name] = dict(parser[name]) if parser.has_section(name) else {}
    return sections


def _aliases(spec):
    names = {}
    for name, arg in spec.items():
        names[name] = name
        for alias in arg.get("aliases") or ():
            names[alias] = name
    return names


def _convert(name, value, arg, where):
    kind = arg.get("type", "str")

    def bad(expected):
        return InvalidValueError(
            "%s: option %s: %r is not %s" % (where, name, value, expected),
            hint="Fix %s in the agent configuration (same meaning as the module option)." % name,
            details={"option": name},
        )

    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise bad("a boolean")
    if kind == "int":
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad("an integer")
    if kind == "float":
        if isinstance(value, bool):
            raise bad("a number")
        try:
            return float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise bad("a number") from None
    if kind == "dict":
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                raise bad("a JSON object") from None
        if not isinstance(value, dict):
            raise bad("a mapping")
        return dict(value)
    if kind == "list":
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list) or not all(isinstance(item, (str, int, float)) for item in value):
            raise bad("a list of strings")
        return [str(item) for item in value]
    if isinstance(value, (dict, list)):
        raise bad("a string")
    value = value if isinstance(value, str) else str(value)
    if kind == "path":
        value = os.path.expanduser(os.path.expandvars(value))
    return value


def _fallback(arg):
    fallback = arg.get("fallback")
    if not fallback or len(fallback) < 2:
        return None
    for name in fallback[1] or ():
        if name in os.environ:
            return os.environ[name]
    return None


def build_params(spec, given, where="agent configuration", ignore=()):
    """The params dict AnsibleModule would build from ``given`` for ``spec``.

    Aliases are mapped to option names, values converted to the option's type
    and checked against its choices; missing options get their environment
    fallback, then their default (else None). Unknown keys raise
    :class:`InvalidValueError` naming the key, except those in ``ignore``.
    """
    names = _aliases(spec)
    values = {}
    for key, value in given.items():
        if key not in names:
            if key in ignore:
                continue
            raise InvalidValueError(
                "%s: unknown option %s" % (where, key),
                hint="Valid options: %s." % ", ".join(sorted(spec)),
                details={"option": key},
            )
        name = names[key]
        if name in values and value is not None:
            raise InvalidValueError("%s: option %s is given twice (as %s and an alias)" % (where, name, key),
                                    details={"option": name})
        if value is not None:
            values[name] = value
    params = {}
    for name, arg in spec.items():
        if name in values:
            value = _convert(name, values[name], arg, where)
        else:
            value = _fallback(arg)
            if value is not None:
                value = _convert(name, value, arg, "environment fallback")
            else:
                value = arg.get("default")
                value = list(value) if isinstance(value, list) else value
        choices = arg.get("choices")
        for item in (value if isinstance(value, list) else [value]) if value is not None and choices else ():
            if item not in choices:
                raise InvalidValueError(
                    "%s: option %s: %r is not one of %s" % (where, name, item, ", ".join(map(str, choices))),
                    details={"option": name},
                )
        if arg.get("required") and value in (None, ""):
            raise InvalidValueError(
                "%s: option %s is required" % (where, name),
                hint="Set %s in the agent configuration." % name,
                details={"option": name},
            )
        params[name] = value
    return params


def params_for(command, sections, where="agent configuration"):
    """Module params for ``command`` from the sections of :func:`read_config`."""
    backup_names = _aliases(backup_argument_spec())
    verify_names = _aliases(verify_argument_spec())
    known = set(backup_names) | set(verify_names)
    common = dict(sections.get("common") or {})
    for key in common:
        if key not in known:
            raise InvalidValueError(
                "%s: unknown option %s" % (where, key),
                hint="Valid options: %s." % ", ".join(sorted(set(backup_names.values()) | set(verify_names.values()))),
                details={"option": key},
            )
    # Typos in either command's section are reported whichever command runs.
    for name, names in (("backup", backup_names), ("verify", verify_names)):
        for key in sections.get(name) or {}:
            if key not in names:
                raise InvalidValueError("%s [%s]: unknown option %s" % (where, name, key),
                                        hint="Valid %s options: %s." % (name, ", ".join(sorted(set(names.values())))),
                                        details={"option": key})
    spec = argument_spec(command)
    own = _aliases(spec)
    given = {k: v for k, v in common.items() if k in own}
    if command == "verify" and common.get("kms_key_id") and "expected_kms_key_id" not in sections.get("verify", {}):
        given.setdefault("expected_kms_key_id", common["kms_key_id"])
    given.update(sections.get(command) or {})
    return build_params(spec, given, where)


def check_permissions(path, params, log):
    """Warn when the file holding secrets is readable by every user."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o004 and any(params.get(name) for name in SECRET_OPTIONS):
        log.warning("%s holds secrets and is readable by every user (mode %04o): chmod 0640" % (path, mode & 0o7777))


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def in_recovery(params):
    """True when the local PostgreSQL server is a standby (``pg_is_in_recovery()``)."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.postgres import close_quietly  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_one  # pylint: disable=import-outside-toplevel

    conn = connect(params, application_name=APPLICATION_NAME)
    try:
        return bool(query_one(conn, "SELECT pg_is_in_recovery() AS in_recovery")["in_recovery"])
    finally:
        close_quietly(conn)


class ConfigStageError(Exception):
    """Wraps an error raised before anything was contacted (exit code 2)."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def run_backup(params, log, client_factory=None):
    """Mirror of ``pg_basebackup.backup()`` (no check mode); the module's result, or None on a standby."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.backup import BackupRun  # pylint: disable=import-outside-toplevel

    client_factory = client_factory or boto3_client
    probe = BackupRun(params, s3=None, get_bin_path=shutil.which, log=log)
    try:
        probe.validate()  # option errors (e.g. aws:kms without kms_key_id) before any connection
    except RtxDrError as exc:
        raise ConfigStageError(exc) from None
    if in_recovery(params):
        return None
    s3 = client_factory(params, "s3")
    kms = client_factory(params, "kms") if params["encryption"] == "aws:kms" else None
    run = BackupRun(params, s3=s3, kms=kms, get_bin_path=shutil.which, log=log)
    run.preflight()
    reaped = run.reap()
    for item in reaped:
        log.warning("aborted abandoned multipart upload %s (%s)" % (item.get("key"), item.get("reason")))
    log("starting %s backup of %s to s3://%s/%s" % (run.kind, run.cluster_name, run.bucket, run.prefix))
    result = run.run_and_audit()
    result["reaped_uploads"] = reaped
    result["changed"] = True
    return result


def run_verify(params, log, any_host=False, client_factory=None):
    """Mirror of ``s3_backup_verify.verify()``; the module's result (``failed_count`` > 0: findings), or None."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.verify import check_options  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.verify import record_verifications  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.verify import verify_backups  # pylint: disable=import-outside-toplevel

    client_factory = client_factory or boto3_client
    try:
        check_options(params)  # option errors before any connection
    except RtxDrError as exc:
        raise ConfigStageError(exc) from None
    if not any_host and in_recovery(params):
        return None
    s3 = client_factory(params, "s3")

    def kms_factory():
        return client_factory(params, "kms")

    result = verify_backups(params, s3, kms=kms_factory, log=log)
    result["changed"] = False
    # On a standby (--any-host) the DR schema is read-only: nothing to record there.
    result["audit"] = (record_verifications(params, result, socket.gethostname()) if not any_host
                       else {"written": False, "rows": 0, "reason": "--any-host: not recorded"})
    if not result["audit"]["written"]:
        log.warning("verification not recorded in %s.verification_history: %s"
                    % (result["audit"].get("schema", "dr"), result["audit"]["reason"]))
    return result


def _emit_result(result, stdout):
    stdout.write(json.dumps(result, sort_keys=True, default=str) + "\n")
    stdout.flush()


def _failure(exc):
    if isinstance(exc, RtxDrError):
        result = exc.to_result()
    else:
        result = {
            "msg": "Unexpected error: %s: %s" % (type(exc).__name__, exc),
            "hint": "This is probably a bug in the rtx.dr collection; report it with the traceback (exception).",
            "exception": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        }
    result["failed"] = True
    return result


def _describe(params):
    where = params.get("prefix") or ("pgbackup/%s" % params["cluster_name"] if params.get("cluster_name") else
                                     "pgbackup/<server cluster_name>")
    return "s3://%s/%s" % (params.get("bucket"), where)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="rtx.dr host agent: take or verify a backup with the collection's module_utils "
        "(run by the rtx-dr-backup/rtx-dr-verify systemd timers).",
        epilog="Exit codes: 0 done or standby (nothing to do), 1 failed, 2 bad configuration.",
    )
    parser.add_argument("--config", "-c", default=os.environ.get("RTX_DR_AGENT_CONFIG") or DEFAULT_CONFIG,
                        help="JSON or INI file with the module options (default %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("backup", help="take a backup when this host is the primary (rtx.dr.pg_basebackup)")
    verify = sub.add_parser("verify", help="verify the latest backup when this host is the primary "
                            "(rtx.dr.s3_backup_verify)")
    verify.add_argument("--any-host", action="store_true",
                        help="verify even when this host is a standby (no PostgreSQL connection is made)")
    sub.add_parser("check-config", help="validate the configuration for both commands and print it "
                   "(secrets masked); contacts nothing")
    return parser.parse_args(argv)


def _masked(params):
    return {k: ("********" if k in SECRET_OPTIONS and v else v) for k, v in params.items()}


def _check_config(sections, path, log, stdout):
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.backup import BackupRun  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.verify import check_options  # pylint: disable=import-outside-toplevel

    backup = params_for("backup", sections, path)
    verify = params_for("verify", sections, path)
    BackupRun(backup, s3=None, get_bin_path=shutil.which, log=log).validate()
    check_options(verify)
    _emit_result({"config": path, "backup": _masked(backup), "verify": _masked(verify)}, stdout)
    log("configuration %s is valid (backups in %s)" % (path, _describe(backup)))
    return EXIT_OK


def main(argv=None, stdout=None, stderr=None):
    """Entry point; returns the exit code (0 done/standby, 1 failed, 2 bad configuration)."""
    stdout = stdout or sys.stdout
    args = parse_args(argv)
    log = Log(args.command, stderr)
    path = args.config
    try:
        sections = read_config(path)
        if args.command == "check-config":
            return _check_config(sections, path, log, stdout)
        params = params_for(args.command, sections, path)
        check_permissions(path, params, log)
    except RtxDrError as exc:
        log.error(str(exc))
        _emit_result(_failure(exc), stdout)
        return EXIT_CONFIG

    host = socket.gethostname()
    try:
        if args.command == "backup":
            result = run_backup(params, log)
        else:
            result = run_verify(params, log, any_host=args.any_host)
    except ConfigStageError as exc:
        log.error(str(exc.error))
        _emit_result(_failure(exc.error), stdout)
        return EXIT_CONFIG
    except Exception as exc:  # pylint: disable=broad-exception-caught
        failure = _failure(exc)
        log.error("%s failed on %s: %s" % (args.command, host, exc if isinstance(exc, RtxDrError) else failure["msg"]))
        _emit_result(failure, stdout)
        return EXIT_FAILED

    if result is None:
        log(STANDBY_MESSAGE)
        _emit_result({"changed": False, "skipped": True, "msg": STANDBY_MESSAGE, "host": host}, stdout)
        return EXIT_OK
    if args.command == "verify" and result["failed_count"]:
        from ansible_collections.rtx.dr.plugins.module_utils.verify import failure_message  # pylint: disable=import-outside-toplevel

        result["msg"] = failure_message(result["backups"], params["bucket"])
        result["failed"] = True
        log.error(result["msg"])
        _emit_result(result, stdout)
        return EXIT_FAILED
    if args.command == "backup":
        log("backup %s complete: %s bytes raw, %s bytes stored in %s s; audit row written: %s" % (
            result.get("backup_id"), result.get("size_raw_bytes"), result.get("size_compressed_bytes"),
            result.get("duration_seconds"), (result.get("audit") or {}).get("written")))
    else:
        log("verified %d backup(s) in %s: no finding" % (result["verified"], _describe(params)))
    _emit_result(result, stdout)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

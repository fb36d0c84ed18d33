# -*- coding: utf-8 -*-

# Copyright: (c) 2026, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Boot-time fence guard of PostgreSQL, and the cluster's leader record in S3.

A server that comes back after a failover (a whole region returning, an old primary
powered on again) has no ``standby.signal``: PostgreSQL would start it as a writable
primary on the old timeline next to the real primary. The guard runs before every start
of ``postgresql@<version>-main`` (systemd ``ExecStartPre=``, drop-in installed by the
``rtx.dr.backup_schedule`` role)::

    runuser -u postgres -- env PYTHONPATH=/usr/local/lib/rtx-dr python3 -m \\
        ansible_collections.rtx.dr.plugins.module_utils.fence_guard --config /etc/rtx-dr/agent.json \\
        check --host db-east-1 --data-dir /var/lib/postgresql/15/main --peer db-east-2 --peer db-west-1 ...

and the playbooks keep the **leader record** ``s3://<bucket>/<prefix>/topology/leader.json``
(``{cluster, system_identifier, host, timeline, lsn, since, by}``, SSE-KMS like every object
of the bucket) up to date on the new primary after each promotion (``playbooks/tasks/promoted.yml``)
and at setup (the role)::

    ... fence_guard --config /etc/rtx-dr/agent.json record --host db-west-1 --by failover:<id>
    ... fence_guard --config /etc/rtx-dr/agent.json show

``check`` decides with :func:`decide` (policy in its docstring, documented in
``docs/runbooks/region_failover.md``). The evidence: the data directory (signal files,
``pg_controldata``: system identifier and timeline), the leader record (S3 is reachable
from every region, unlike the peers), and the other database servers asked over libpq
(as the replication role, password from the postgres user's ``.pgpass``).

Exit codes of ``check``: 0 start, 1 refused (the unit fails to start; the reason and what to
run are in the journal). ``record``: 0 written or already current (or ``--if-primary`` on a
standby), 1 failed or refused (a record of a newer timeline names another server).
``show``: 0, 1 when the record cannot be read. 2: bad command line or configuration.

The S3 settings are the top-level options of the backup agent's configuration
(``bucket``, ``prefix`` or ``cluster_name``, ``encryption``, ``kms_key_id`` and the AWS options);
its other keys are ignored. Runs with the distribution's python3, python3-boto3 and
python3-psycopg2; ansible is not needed on the host.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys

from ansible_collections.rtx.dr.plugins.module_utils.agent import DEFAULT_CONFIG
from ansible_collections.rtx.dr.plugins.module_utils.agent import Log
from ansible_collections.rtx.dr.plugins.module_utils.agent import build_params
from ansible_collections.rtx.dr.plugins.module_utils.agent import ensure_ansible_basic
from ansible_collections.rtx.dr.plugins.module_utils.agent import read_config
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

PROG = "rtx-dr-fence-guard"
APPLICATION_NAME = "rtx.dr fence guard"
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_CONFIG = 2

#: Key of the leader record under the backup prefix.
LEADER_KEY = "topology/leader.json"
#: Files that make PostgreSQL start in recovery (read-only): the guard lets such a server start.
SIGNAL_FILES = ("standby.signal", "recovery.signal")
#: One-shot override in the data directory: the next start is allowed (and the file removed).
OVERRIDE_FILE = "rtx-dr-start-anyway"
#: What to do when neither the leader record nor any peer can be asked.
UNKNOWN_POLICIES = ("refuse", "start")

#: Short timeouts: the guard runs before PostgreSQL starts and must not hold the boot.
S3_CLIENT_CONFIG = {"connect_timeout": 3, "read_timeout": 5, "retries": {"mode": "standard", "total_max_attempts": 2}}

S3_OPTIONS = dict(
    bucket=dict(type="str"),
    prefix=dict(type="str"),
    cluster_name=dict(type="str"),
    encryption=dict(type="str", default="aws:kms", choices=["aws:kms", "none"]),
    kms_key_id=dict(type="str"),
)

PEER_QUERY = """
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
       CASE WHEN pg_is_in_recovery()
            THEN GREATEST((SELECT timeline_id FROM pg_control_checkpoint()),
                          COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), 0))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS lsn
"""

HINT_TEMPLATE = (
    "It must come back as a standby of the current primary: run ansible-playbook playbooks/region_failback.yml "
    "-e region_target=<its region> -e region_confirm=<its region> (a whole region returning) or "
    "playbooks/rejoin.yml -e rejoin_host=%(host)s (this server). If you are sure no other server accepts writes, "
    "create %(override)s (as postgres) and start it again: the next start is allowed once."
)


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------


def s3_argument_spec():
    """The AWS options of ``aws.aws_common_argument_spec`` plus the location of the backups."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.aws import aws_common_argument_spec  # pylint: disable=import-outside-toplevel

    spec = aws_common_argument_spec()
    spec.update({name: dict(option) for name, option in S3_OPTIONS.items()})
    return spec


def params_from_config(path):
    """The S3 options from the top level of the agent configuration (other keys and sections are ignored)."""
    spec = s3_argument_spec()
    names = {}
    for name, arg in spec.items():
        for key in (name,) + tuple(arg.get("aliases") or ()):
            names[key] = name
    common = read_config(path)["common"]
    given = dict((k, v) for k, v in common.items() if k in names and not isinstance(v, dict))
    return build_params(spec, given, "agent configuration %s" % path)


def leader_key(params):
    """``<prefix>/topology/leader.json`` (prefix: ``prefix``, else ``pgbackup/<cluster_name>``)."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.catalog import resolve_prefix  # pylint: disable=import-outside-toplevel

    return "%s/%s" % (resolve_prefix(params), LEADER_KEY)


def make_s3(params, service="s3"):
    """A boto3 client (``aws.boto3_client``) with the guard's short timeouts."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.aws import boto3_client  # pylint: disable=import-outside-toplevel

    return boto3_client(params, service, config=dict(S3_CLIENT_CONFIG))


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------
# The leader record
# --------------------------------------------------------------------------


def read_leader(s3, bucket, key):
    """``{"status": "ok", "record": {...}}``, ``{"status": "missing"}`` or ``{"status": "error", "error": text}``.

    Never raises: an unreadable record is evidence the guard weighs, not a crash.
    """
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto  # pylint: disable=import-outside-toplevel

    where = "s3://%s/%s" % (bucket, key)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:  # pylint: disable=broad-exception-caught
        code = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Code")
        if code in ("NoSuchKey", "404", "NotFound"):
            return {"status": "missing", "where": where}
        return {"status": "error", "where": where, "error": str(error_from_boto(exc, "reading %s" % where))}
    try:
        record = json.loads(body.decode("utf-8"))
        if not isinstance(record, dict) or not record.get("host"):
            raise ValueError("not an object with a host")
    except (ValueError, UnicodeDecodeError) as exc:
        return {"status": "error", "where": where, "error": "%s is not a leader record: %s" % (where, exc)}
    return {"status": "ok", "where": where, "record": record}


def make_record(params, host, state, by):
    """The leader record for ``host`` from the local server's ``state`` (see :func:`local_server_state`)."""
    return {
        "cluster": params.get("cluster_name") or params.get("prefix"),
        "system_identifier": str(state["system_identifier"]),
        "host": host,
        "timeline": int(state["timeline"]),
        "lsn": state.get("lsn"),
        "since": _now(),
        "by": by,
    }


def may_replace(current, record):
    """``(True, why)`` when ``record`` may replace the ``current`` record (a :func:`read_leader` result).

    The record only moves forward: a record of the same cluster that names another server
    on the same or a newer timeline is never replaced (a stale primary cannot claim it back).
    """
    if current["status"] == "missing":
        return True, "no record yet"
    if current["status"] != "ok":
        return True, "the current record cannot be read (%s)" % current.get("error")
    old = current["record"]
    if str(old.get("system_identifier")) != str(record["system_identifier"]):
        return True, "the current record is of another cluster (system identifier %s)" % old.get("system_identifier")
    if old.get("host") == record["host"]:
        return True, "same server"
    if int(old.get("timeline") or 0) < int(record["timeline"]):
        return True, "newer timeline (%s > %s)" % (record["timeline"], old.get("timeline"))
    return False, ("the record names %s on timeline %s, not older than this server's timeline %s: this server is "
                   "not the newest primary" % (old.get("host"), old.get("timeline"), record["timeline"]))


def write_leader(s3, params, key, record, kms=None):
    """PUT the record (SSE-KMS unless ``encryption: none``, the key resolved to its ARN as the bucket policy wants)."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.s3stream import sse_args  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils.walarchive import kms_key_arn  # pylint: disable=import-outside-toplevel

    extra = sse_args(params.get("encryption") or "aws:kms", params.get("kms_key_id"))
    if extra:
        extra["SSEKMSKeyId"] = kms_key_arn(kms, extra["SSEKMSKeyId"], (params.get("endpoint_url"), params.get("region")))
    body = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")
    try:
        s3.put_object(Bucket=params["bucket"], Key=key, Body=body, ContentType="application/json", **extra)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "writing the leader record s3://%s/%s" % (params["bucket"], key)) from None


# --------------------------------------------------------------------------
# Local data directory and peers
# --------------------------------------------------------------------------


def parse_controldata(text):
    """``{"system_identifier", "timeline", "state"}`` from ``pg_controldata`` output (LC_ALL=C)."""
    ensure_ansible_basic()  # postgres.py imports env_fallback from ansible; its database driver only when connecting
    from ansible_collections.rtx.dr.plugins.module_utils import postgres  # pylint: disable=import-outside-toplevel

    fields = postgres.parse_controldata(text)
    timeline = fields.get("Latest checkpoint's TimeLineID")
    return {"system_identifier": fields.get("Database system identifier") or None,
            "timeline": int(timeline) if timeline and timeline.isdigit() else None,
            "state": fields.get("Database cluster state") or None}


def local_state(data_dir, bin_dir, run=None):
    """What the data directory says: signal files, override, and the control file (``pg_controldata``)."""
    run = run or subprocess.run
    state = {"data_dir": data_dir,
             "signals": [name for name in SIGNAL_FILES if os.path.exists(os.path.join(data_dir, name))],
             "override": os.path.exists(os.path.join(data_dir, OVERRIDE_FILE)),
             "initialized": os.path.exists(os.path.join(data_dir, "global", "pg_control")),
             "system_identifier": None, "timeline": None, "state": None, "error": None}
    if not state["initialized"] or state["signals"]:
        return state
    try:
        done = run([os.path.join(bin_dir, "pg_controldata"), "-D", data_dir], capture_output=True, text=True,
                   env=dict(os.environ, LC_ALL="C"), timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        state["error"] = "pg_controldata could not run: %s" % exc
        return state
    if done.returncode != 0:
        state["error"] = "pg_controldata failed: %s" % " ".join((done.stderr or "").split())
        return state
    state.update(parse_controldata(done.stdout))
    return state


def ask_peer(host, options, connect=None):
    """``{"host", "status": "primary"|"standby"|"error", "system_identifier", "timeline", "lsn", "error"}``."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils import postgres  # pylint: disable=import-outside-toplevel

    connect = connect or postgres.connect
    params = {"login_host": host, "login_port": options.get("port", 5432), "login_user": options.get("user"),
              "login_db": options.get("db", "postgres"), "ssl_mode": options.get("ssl_mode"),
              "ca_cert": options.get("ca_cert"), "connect_timeout": options.get("connect_timeout", 3)}
    conn = None
    try:
        conn = connect(params, application_name=APPLICATION_NAME)
        row = postgres.query_one(conn, PEER_QUERY)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return {"host": host, "status": "error", "error": " ".join(str(exc).split())}
    finally:
        if conn is not None:
            postgres.close_quietly(conn)
    return {"host": host, "status": "standby" if row["in_recovery"] else "primary",
            "system_identifier": str(row["system_identifier"]), "timeline": int(row["timeline"] or 0),
            "lsn": row.get("lsn"), "error": None}


def ask_peers(hosts, options, connect=None):
    """:func:`ask_peer` for every host, in parallel (the slowest bounds the wait: ``connect_timeout``)."""
    if not hosts:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        return list(pool.map(lambda h: ask_peer(h, options, connect), hosts))


# --------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------


def _describe_record(record):
    return "%s (timeline %s, since %s, by %s)" % (
        record.get("host"), record.get("timeline"), record.get("since"), record.get("by"))


def decide(host, local, leader, peers, unknown="refuse"):
    """Whether the server of ``host`` may start: ``{"start": bool, "reason": text, "warnings": [...]}``.

    Policy, in this order (a server that cannot show it is the primary does not take writes;
    a plain reboot of the primary still comes up):

    1. ``standby.signal`` or ``recovery.signal`` present: start (it comes up read-only, as a standby).
    2. Data directory not initialized, or :data:`OVERRIDE_FILE` present (one-shot): start.
    3. The control file cannot be read: refuse (nothing shows which timeline it would serve).
    4. A peer of the same cluster accepts writes on this server's timeline or a newer one, or is a
       standby on a **newer** timeline: refuse (a newer history exists, or a second writable server
       would split the brain). A writable peer on an older timeline is a stale primary: only a warning.
    5. Leader record of this cluster readable: start if it names this server, else refuse.
    6. No leader record, or one of another cluster (never recorded, or the cluster was re-created):
       start (no peer contradicted it in 4).
    7. The record cannot be read (S3 unreachable): start if at least one peer of the cluster answered
       (all were standbys on this timeline or older: this server is the newest primary they know);
       otherwise ``unknown`` decides: ``refuse`` (default) or ``start``.
    """
    warnings = []

    def result(start, reason):
        return {"start": start, "reason": reason, "warnings": warnings}

    def with_record(reason):
        # A refusal on the peers' word also says what the leader record says.
        record = leader.get("record") or {}
        if leader.get("status") == "ok" and str(record.get("system_identifier")) == str(local.get("system_identifier")):
            return "%s; the leader record names %s" % (reason, _describe_record(record))
        return reason

    if local.get("signals"):
        return result(True, "%s present: it starts as a standby (read-only)" % " and ".join(local["signals"]))
    if not local.get("initialized"):
        return result(True, "the data directory %s holds no cluster yet" % local.get("data_dir"))
    if local.get("override"):
        return result(True, "%s present in the data directory: the operator allowed this start once" % OVERRIDE_FILE)
    if local.get("error") or local.get("timeline") is None:
        return result(False, "the control file cannot be read (%s), so it cannot be shown that this server is the "
                             "primary" % (local.get("error") or "no timeline"))
    sysid = str(local.get("system_identifier"))
    timeline = int(local["timeline"])
    ours = [p for p in peers if p.get("status") != "error" and str(p.get("system_identifier")) == sysid]
    for peer in peers:
        if peer.get("status") == "error":
            warnings.append("peer %s did not answer: %s" % (peer["host"], peer.get("error")))
        elif peer not in ours:
            warnings.append("peer %s belongs to another cluster (system identifier %s)"
                            % (peer["host"], peer.get("system_identifier")))
    writable = [p for p in ours if p["status"] == "primary" and p["timeline"] >= timeline]
    for peer in ours:
        if peer["status"] == "primary" and peer not in writable:
            warnings.append("%s accepts writes on the older timeline %s: a stale primary (rejoin it)"
                            % (peer["host"], peer["timeline"]))
    if writable:
        peer = sorted(writable, key=lambda p: -p["timeline"])[0]
        return result(False, with_record("%s accepts writes (timeline %s; this server's data is on timeline %s): this "
                                         "server would be a second primary" % (peer["host"], peer["timeline"], timeline)))
    newer = [p for p in ours if p["timeline"] > timeline]
    if newer:
        peer = sorted(newer, key=lambda p: -p["timeline"])[0]
        return result(False, with_record("the standby %s is on timeline %s, newer than this server's timeline %s: a "
                                         "failover happened after this server stopped"
                                         % (peer["host"], peer["timeline"], timeline)))
    status = leader.get("status")
    if status == "ok":
        record = leader["record"]
        if str(record.get("system_identifier")) == sysid:
            if record.get("host") == host:
                if int(record.get("timeline") or 0) > timeline:
                    warnings.append("the leader record says timeline %s, this server's data is on timeline %s"
                                    % (record.get("timeline"), timeline))
                return result(True, "the leader record %s names this server" % leader.get("where"))
            return result(False, "the leader record %s names %s: this server (timeline %s, no standby.signal) would "
                                 "be a second primary" % (leader.get("where"), _describe_record(record), timeline))
        warnings.append("the leader record %s is of another cluster (system identifier %s, this server %s): ignored"
                        % (leader.get("where"), record.get("system_identifier"), sysid))
        return result(True, "no leader record of this cluster, and no peer is a newer primary")
    if status == "missing":
        return result(True, "no leader record yet (%s), and no peer is a newer primary" % leader.get("where"))
    warnings.append("the leader record cannot be read: %s" % leader.get("error"))
    if ours:
        return result(True, "the leader record cannot be read, but %s answered: none accepts writes or is on a "
                            "newer timeline than %s" % (", ".join(p["host"] for p in ours), timeline))
    reason = ("neither the leader record nor any other database server can be asked, so it cannot be shown that "
              "this server is the primary")
    if unknown == "start":
        warnings.append(reason)
        return result(True, "policy when nothing can be asked: start (--unknown start)")
    return result(False, reason)


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def _leader(args, log):
    """``(params, key, s3, read_leader result)``; S3/configuration problems become an error result."""
    try:
        params = params_from_config(args.config)
        key = leader_key(params)
        if not params.get("bucket"):
            raise RtxDrError("bucket is not set in %s" % args.config)
        s3 = make_s3(params)
    except RtxDrError as exc:
        log.warning("leader record: %s" % exc)
        return None, None, None, {"status": "error", "where": "(not configured)", "error": str(exc)}
    return params, key, s3, read_leader(s3, params["bucket"], key)


def run_check(args, log, connect=None, run=None):
    """The ``check`` command; the exit code."""
    local = local_state(args.data_dir, args.bin_dir, run=run)
    if local["signals"] or not local["initialized"] or local["override"]:
        leader, peers = {"status": "skipped"}, []
    else:
        leader = _leader(args, log)[3]
        if args.passfile and "PGPASSFILE" not in os.environ:
            os.environ["PGPASSFILE"] = args.passfile
        options = {"port": args.port, "user": args.peer_user, "ssl_mode": args.ssl_mode, "ca_cert": args.ca_cert,
                   "connect_timeout": args.connect_timeout}
        peers = ask_peers([p for p in args.peer if p and p != args.host], options, connect)
    decision = decide(args.host, local, leader, peers, args.unknown)
    for warning in decision["warnings"]:
        log.warning(warning)
    if decision["start"]:
        if local["override"] and not local["signals"]:
            try:
                os.remove(os.path.join(args.data_dir, OVERRIDE_FILE))
            except OSError as exc:
                log.warning("cannot remove %s: %s" % (OVERRIDE_FILE, exc))
        log("start allowed on %s: %s" % (args.host, decision["reason"]))
        return EXIT_OK
    log.error("REFUSED to start PostgreSQL on %s as a primary: %s. %s" % (
        args.host, decision["reason"],
        HINT_TEMPLATE % {"host": args.host, "override": os.path.join(args.data_dir, OVERRIDE_FILE)}))
    return EXIT_REFUSED


def local_server_state(args, connect=None):
    """Role, system identifier, timeline and LSN of the local running server (socket, as postgres)."""
    ensure_ansible_basic()
    from ansible_collections.rtx.dr.plugins.module_utils import postgres  # pylint: disable=import-outside-toplevel

    connect = connect or postgres.connect
    conn = connect({"login_unix_socket": args.socket, "login_port": args.port, "login_user": "postgres",
                    "login_db": "postgres", "connect_timeout": 5}, application_name=APPLICATION_NAME)
    try:
        row = postgres.query_one(conn, PEER_QUERY)
    finally:
        postgres.close_quietly(conn)
    return {"in_recovery": bool(row["in_recovery"]), "system_identifier": str(row["system_identifier"]),
            "timeline": int(row["timeline"] or 0), "lsn": row.get("lsn")}


def run_record(args, log, stdout, connect=None, s3=None, kms=None):
    """The ``record`` command; the exit code."""
    params = params_from_config(args.config)
    key = leader_key(params)
    state = local_server_state(args, connect)
    if state["in_recovery"]:
        if args.if_primary:
            log("standby: not the primary, nothing recorded")
            _emit(stdout, {"changed": False, "skipped": True, "host": args.host})
            return EXIT_OK
        log.error("%s is in recovery (a standby): only the primary is recorded as the leader" % args.host)
        return EXIT_REFUSED
    s3 = s3 or make_s3(params)
    current = read_leader(s3, params["bucket"], key)
    record = make_record(params, args.host, state, args.by)
    old = current.get("record") or {}
    if (current["status"] == "ok" and old.get("host") == args.host
            and str(old.get("system_identifier")) == record["system_identifier"]
            and int(old.get("timeline") or 0) == record["timeline"]):
        log("the leader record s3://%s/%s already names %s on timeline %s"
            % (params["bucket"], key, args.host, record["timeline"]))
        _emit(stdout, {"changed": False, "record": old, "key": key})
        return EXIT_OK
    allowed, why = may_replace(current, record)
    if not allowed:
        log.error("not recorded: %s" % why)
        _emit(stdout, {"changed": False, "failed": True, "msg": why, "record": old, "key": key})
        return EXIT_REFUSED
    write_leader(s3, params, key, record, kms=kms if kms is not None else (lambda: make_s3(params, "kms")))
    log("leader record s3://%s/%s: %s (%s)" % (params["bucket"], key, _describe_record(record), why))
    _emit(stdout, {"changed": True, "record": record, "key": key, "previous": old or None})
    return EXIT_OK


def _emit(stdout, data):
    stdout.write(json.dumps(data, sort_keys=True) + "\n")
    stdout.flush()


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="rtx.dr fence guard: refuse to start PostgreSQL as a second primary (ExecStartPre), and keep "
        "the cluster's leader record in S3.",
        epilog="Exit codes: 0 start allowed / done, 1 refused / failed, 2 bad command line or configuration.",
    )
    parser.add_argument("--config", "-c", default=os.environ.get("RTX_DR_AGENT_CONFIG") or DEFAULT_CONFIG,
                        help="the backup agent's configuration (S3 settings; default %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    check = sub.add_parser("check", help="may PostgreSQL start here? (exit 0 yes, 1 no)")
    check.add_argument("--host", required=True, help="this server's inventory name (as in the leader record)")
    check.add_argument("--data-dir", required=True)
    check.add_argument("--bin-dir", default="/usr/lib/postgresql/15/bin")
    check.add_argument("--peer", action="append", default=[], help="another database server (repeat)")
    check.add_argument("--port", type=int, default=5432)
    check.add_argument("--peer-user", default="replicator")
    check.add_argument("--ssl-mode", default="verify-full")
    check.add_argument("--ca-cert", default=None)
    check.add_argument("--passfile", default="/var/lib/postgresql/.pgpass")
    check.add_argument("--connect-timeout", type=int, default=3)
    check.add_argument("--unknown", choices=UNKNOWN_POLICIES, default="refuse",
                       help="when neither S3 nor any peer answers (default %(default)s)")
    record = sub.add_parser("record", help="record the local server (a primary) as the leader")
    record.add_argument("--host", required=True)
    record.add_argument("--by", default="manual", help="what made it the primary (kept in the record)")
    record.add_argument("--if-primary", action="store_true", help="on a standby: exit 0 without recording")
    record.add_argument("--socket", default="/var/run/postgresql")
    record.add_argument("--port", type=int, default=5432)
    sub.add_parser("show", help="print the leader record")
    return parser.parse_args(argv)


def main(argv=None, stdout=None, stderr=None, connect=None):
    """Entry point; returns the exit code."""
    stdout = stdout or sys.stdout
    args = parse_args(argv)
    log = Log("fence-guard-%s" % args.command, stderr)
    try:
        if args.command == "check":
            return run_check(args, log, connect)
        if args.command == "record":
            return run_record(args, log, stdout, connect)
        dummy, dummy_key, dummy_s3, leader = _leader(args, log)
        _emit(stdout, leader)
        return EXIT_OK if leader["status"] == "ok" else EXIT_REFUSED
    except RtxDrError as exc:
        log.error("%s failed: %s" % (args.command, exc))
        return EXIT_REFUSED if args.command != "show" else EXIT_CONFIG
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # A bug must not let a second primary start: check refuses too (exit 1).
        log.error("%s failed: unexpected error %s: %s (probably a bug in rtx.dr)" % (args.command, type(exc).__name__,
                                                                                     exc))
        return EXIT_REFUSED


if __name__ == "__main__":
    raise SystemExit(main())

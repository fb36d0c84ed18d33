# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Streaming mode of the WAL archive: ``pg_receivewal`` into a spool, uploaded every second (RPO of seconds).

``archive_command`` (``wal_agent push``) archives a segment only once it is complete, so
the newest WAL reaches S3 at the next segment switch (``archive_timeout``, 60 s on the
lab). Streaming mode adds, on every database host, two small services of the
``wal_agent`` command line:

- ``stream-receive`` (:class:`Receiver`): supervises ``pg_receivewal`` but only while the
  local server is the primary (``pg_is_in_recovery()`` asked every ``stream_interval``):
  started when the server is a primary, stopped as soon as it is a standby, restarted
  (after :data:`RESTART_DELAY`) when it exits. ``pg_receivewal`` connects as the agent's
  ``login_user`` (the server's unix socket, replication privilege) with
  ``application_name`` :data:`APPLICATION_NAME`, ``--synchronous`` (flush and report
  each write), NO replication slot (``archive_command`` still archives every segment; a
  stopped receiver never makes the primary keep WAL) into ``stream_dir``. Before each
  start the files that would make it start at a wrong place (another timeline, a segment
  ahead of the server, or an old one the server may have removed) are moved to
  ``<stream_dir>/stale/`` (:func:`stale_files`).
- ``stream-upload`` (:class:`Uploader`): every ``stream_interval`` seconds

  (a) each completed file in the spool (a segment ``pg_receivewal`` renamed from
      ``X.partial`` to ``X``, a timeline history file) is pushed with
      :func:`walarchive.push` (same key, SSE-KMS, checksums and never-overwrite rule as
      ``archive_command``; the same content already archived is success) and removed
      from the spool; a different content is an error, logged once, the file is kept;
  (b) the current ``X.partial``, when the receiver wrote more since the last upload, is
      uploaded to ``<prefix>/wal-stream/<TLI>/X.partial[.zst]`` (a separate key space
      where overwriting is the point; the archive under ``<prefix>/wal/`` is never
      touched by it), SSE-KMS, metadata ``sha256``/``raw-sha256``/``raw-size``/
      ``compression`` like the archive plus ``covers-lsn``: the receiver's
      ``write_lsn`` in ``pg_stat_replication`` read *before* the file was read, so the
      object holds at least the WAL up to that LSN, and ``host``.

  On a primary (a) runs in a worker thread while (b) uploads, so a segment switch does not delay the newest WAL
  by a whole segment push; between ticks the spool is looked at every :data:`COMPLETION_POLL` s and a newly
  completed segment starts the next tick at once. With a replica archive (``replica_bucket``, as
  ``archive_command``'s cross-region copy) every partial is also uploaded to the replica bucket, at the same
  time, with the replica's KMS key: region west restores the newest WAL too. A failing replica upload is a
  warning (logged once); the primary's upload counts.

  It uploads the partial only on a primary. S3 or PostgreSQL problems are logged once
  when they start and once when they end (journal), never per upload, and the loop
  keeps going (the next tick retries); one summary line per hour.

The DB hosts never delete from the bucket (``docs/iam``): the last streamed partial of
a segment stays under ``wal-stream/`` after the segment is archived. It is never used
then (below), and a lifecycle rule on ``<prefix>/wal-stream/`` should expire it (and
the noncurrent versions the per-second overwrites leave in a versioned bucket).

Restore side (:func:`fetch_streamed_partial`, ``wal_agent fetch --partial`` or
``fetch_streamed_partial: true``): when a segment PostgreSQL asks for is in no archive,
its streamed partial is written in its place (what ``barman-wal-restore --partial``
does): recovery replays up to the last complete record in it and ends there. Only the
newest segment of the newest timeline is ever partial: the partial is refused (one
warning line) when the archive holds a later segment of its timeline or a newer
timeline (:func:`newer_wal`), and it is never written when the server's ``pg_wal`` already
has a file of that name (a standby's walreceiver may have written more than the partial
holds; a standby keeps a restored file under the segment's name and would lose that WAL).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from concurrent.futures import ThreadPoolExecutor

from ansible_collections.rtx.dr.plugins.module_utils import walarchive
from ansible_collections.rtx.dr.plugins.module_utils.aws import error_from_boto
from ansible_collections.rtx.dr.plugins.module_utils.aws import list_pages
from ansible_collections.rtx.dr.plugins.module_utils.catalog import normalize_prefix
from ansible_collections.rtx.dr.plugins.module_utils.catalog import wal_prefix
from ansible_collections.rtx.dr.plugins.module_utils.compress import EXTENSIONS
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import DEFAULT_WAL_SEGMENT_SIZE
from ansible_collections.rtx.dr.plugins.module_utils.postgres import close_quietly
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connection_kwargs
from ansible_collections.rtx.dr.plugins.module_utils.postgres import format_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_one

#: The options of streaming mode (wal section of the agent configuration).
STREAM_OPTIONS = dict(
    stream_dir=dict(type="str"),
    stream_interval=dict(type="float", default=1.0),
    receivewal_path=dict(type="str"),
    fetch_streamed_partial=dict(type="bool", default=False),
)
#: application_name of pg_receivewal: how the uploader finds its write position in pg_stat_replication.
APPLICATION_NAME = "rtx_dr_stream"
#: application_name of the agent's own connections (role and position checks).
PROBE_APPLICATION_NAME = "rtx.dr wal stream"
#: Key space of the streamed partial segments, next to ``wal/`` under the backup prefix.
STREAM_KEY_DIR = "wal-stream"
#: Subdirectory of the spool receiving files that would make pg_receivewal start at a wrong place.
STALE_DIR = "stale"
#: Seconds between an exit of pg_receivewal and its restart (systemd's RestartSec of the other units).
RESTART_DELAY = 10.0
#: Seconds pg_receivewal gets to exit after SIGINT before it is killed.
STOP_TIMEOUT = 10.0
#: A receiver missing from pg_stat_replication is reported only after this many seconds (it reconnects).
RECEIVER_GRACE = 30.0
#: Seconds between two summary lines of the uploader.
SUMMARY_SECONDS = 3600.0
MIN_INTERVAL = 0.2
#: Seconds between two looks at the spool for a completed segment while the uploader waits for its next tick.
COMPLETION_POLL = 0.2
MAX_INTERVAL = 60.0

_SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
_PARTIAL_RE = re.compile(r"^([0-9A-F]{24})\.partial$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_TLI_RE = re.compile(r"^[0-9A-F]{8}$")

UPLOADER_QUERY = (
    "SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,"
    " (SELECT pg_catalog.min(write_lsn)::text FROM pg_catalog.pg_stat_replication"
    " WHERE application_name = '%s') AS write_lsn" % APPLICATION_NAME
)
RECEIVER_QUERY = (
    "SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,"
    " CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL"
    " ELSE pg_catalog.pg_current_wal_lsn()::text END AS lsn,"
    " CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL"
    " ELSE pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8) END AS timeline,"
    " pg_catalog.current_setting('data_directory') AS data_directory,"
    " pg_catalog.current_setting('server_version_num')::int AS version_num,"
    " (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size') AS wal_segment_size,"
    " (SELECT count(*) FROM pg_catalog.pg_stat_replication"
    " WHERE application_name = '%s')::int AS receivers" % APPLICATION_NAME
)


# --------------------------------------------------------------------------
# Options, keys, spool
# --------------------------------------------------------------------------


def check_stream_options(params, where="the wal section"):
    """``(stream_dir, interval)`` after checking the options of the stream commands."""
    stream_dir = params.get("stream_dir") or None
    interval = 1.0 if params.get("stream_interval") is None else float(params["stream_interval"])
    if not stream_dir:
        raise InvalidValueError(
            "stream_dir is not set in %s: streaming mode needs the directory pg_receivewal writes to" % where,
            hint="Set stream_dir to a directory the PostgreSQL server's user owns, outside the data directory "
            "(the rtx.dr.backup_schedule role creates /var/lib/rtx-dr/wal-stream with backup_schedule_wal_stream).")
    if not os.path.isabs(stream_dir):
        raise InvalidValueError("stream_dir %s in %s must be an absolute path" % (stream_dir, where))
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise InvalidValueError("stream_interval %s in %s is out of range %s..%s seconds"
                                % (params.get("stream_interval"), where, MIN_INTERVAL, MAX_INTERVAL),
                                hint="1 second gives WAL in S3 about 1-2 s behind the primary.")
    size = params.get("wal_segment_size") or DEFAULT_WAL_SEGMENT_SIZE
    if size > walarchive.SINGLE_PUT_MAX:
        raise InvalidValueError("streaming mode uploads a partial segment in one PUT: wal_segment_size %d is above "
                                "%d bytes" % (size, walarchive.SINGLE_PUT_MAX))
    return stream_dir, interval


def stream_prefix(prefix):
    """``<prefix>/wal-stream/``."""
    prefix = normalize_prefix(prefix)
    return "%s/%s/" % (prefix, STREAM_KEY_DIR) if prefix else STREAM_KEY_DIR + "/"


def stream_base_key(prefix, name):
    """Key of the streamed partial of segment ``name`` without the compression suffix."""
    return "%s%s/%s.partial" % (stream_prefix(prefix), name[:8], name)


def _wal_order(name):
    """pg_receivewal's order of segment names: segment number, then timeline."""
    return name[8:24], name[:8]


def scan_spool(directory):
    """``{"complete": [...], "partials": [...]}``: file names of the spool.

    ``complete``: timeline history files first, then segments in WAL order (the order they are pushed in);
    ``partials``: ``X.partial`` names in pg_receivewal's order (the last one is the one it writes).
    Other names (temporary files, ``stale/``) are left out.
    """
    complete, history, partials = [], [], []
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if _SEGMENT_RE.match(entry):
            complete.append(entry)
        elif _HISTORY_RE.match(entry):
            history.append(entry)
        elif _PARTIAL_RE.match(entry):
            partials.append(entry)
    return {"complete": sorted(history) + sorted(complete, key=_wal_order),
            "partials": sorted(partials, key=lambda n: _wal_order(n[:24]))}


def start_point(names, wal_segment_size):
    """``(timeline, segno)`` pg_receivewal resumes at with these spool files (its FindStreamingStart), or None.

    The highest (segment, timeline) wins, a complete file over a partial one of the same name; it restarts
    at the start of a partial segment, after a complete one.
    """
    best = None
    for name in names:
        match = _PARTIAL_RE.match(name)
        if not match and not _SEGMENT_RE.match(name):
            continue
        segment = parse_wal_segment_name(name[:24], wal_segment_size)
        rank = (segment.segno, segment.timeline, 0 if match else 1)
        if best is None or rank > best[0]:
            best = (rank, name)
    if best is None:
        return None
    (segno, timeline, complete), dummy = best
    return timeline, segno + complete


def stale_files(names, timeline, segno, wal_segment_size):
    """Spool files to move aside before pg_receivewal starts against a server at (``timeline``, ``segno``).

    pg_receivewal resumes where its newest file ends (:func:`start_point`). That must be the server's current
    segment or the one before (a slot-less receiver cannot ask for older WAL, which ``archive_command`` has
    anyway), on the server's timeline (another timeline's file is left from a time this host streamed before a
    failover). The file that decides a wrong start is moved, until the start is right or the spool empty; every
    partial file but the newest one left goes too (nothing resumes it). History files and older complete
    segments stay for the uploader.
    """
    remaining = [n for n in names if _SEGMENT_RE.match(n) or _PARTIAL_RE.match(n)]
    moved = []
    while remaining:
        start = start_point(remaining, wal_segment_size)
        if start[0] == timeline and segno - 1 <= start[1] <= segno:
            break
        top = max(remaining, key=lambda n: (_wal_order(n[:24]), 0 if n.endswith(".partial") else 1))
        moved.append(top)
        remaining.remove(top)
    partials = sorted((n for n in remaining if n.endswith(".partial")), key=lambda n: _wal_order(n[:24]))
    moved.extend(partials[:-1])
    return moved


def move_stale(directory, names):
    """Move ``names`` from the spool into ``<directory>/stale/`` (a name already there gets a time suffix)."""
    target = os.path.join(directory, STALE_DIR)
    os.makedirs(target, mode=0o700, exist_ok=True)
    for name in names:
        dest = os.path.join(target, name)
        if os.path.exists(dest):
            dest = "%s.%d" % (dest, int(time.time()))
        os.replace(os.path.join(directory, name), dest)


# --------------------------------------------------------------------------
# Logging: one line when a problem starts, one when it ends
# --------------------------------------------------------------------------


class Problems:
    """Problems by key: :meth:`report` logs a problem once (after ``grace`` seconds), :meth:`clear` once it ends."""

    def __init__(self, log, clock=time.monotonic):
        self.log = log
        self.clock = clock
        self.active = {}
        self.lock = threading.Lock()  # the uploader's threads report too

    def report(self, key, level, msg, grace=0.0):
        now = self.clock()
        with self.lock:
            entry = self.active.setdefault(key, {"since": now, "reported": False, "count": 0})
            entry["count"] += 1
            emit = not entry["reported"] and now - entry["since"] >= grace
            if emit:
                entry["reported"] = True
        if emit:
            (self.log if level == "info" else getattr(self.log, level))(msg)

    def clear(self, key, msg=None):
        """End problem ``key``; ``msg`` (``%(seconds)d`` for its duration) is logged when it had been reported."""
        with self.lock:
            entry = self.active.pop(key, None)
        if entry is not None and entry["reported"] and msg:
            self.log(msg % {"seconds": round(self.clock() - entry["since"])})

    def has(self, key):
        return key in self.active


# --------------------------------------------------------------------------
# The local server
# --------------------------------------------------------------------------


class ServerProbe:
    """One connection to the local server, reopened when it breaks; the queries of both stream commands."""

    def __init__(self, params, connect_fn=connect):
        self.params = params
        self.connect_fn = connect_fn
        self.conn = None

    def query(self, sql):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = self.connect_fn(self.params, application_name=PROBE_APPLICATION_NAME)
            try:
                return query_one(self.conn, sql)
            except RtxDrError:
                close_quietly(self.conn)
                self.conn = None
                if attempt == 2:
                    raise
        return None

    def uploader_state(self):
        """``{"in_recovery": bool, "write_lsn": int or None}`` (the receiver's write position, when it streams)."""
        row = self.query(UPLOADER_QUERY)
        lsn = row.get("write_lsn")
        return {"in_recovery": bool(row["in_recovery"]), "write_lsn": parse_lsn(lsn) if lsn else None}

    def receiver_state(self):
        """``{"in_recovery", "timeline", "lsn", "data_directory", "version_num", "wal_segment_size", "receivers"}``."""
        row = self.query(RECEIVER_QUERY)
        state = dict(row)
        state["in_recovery"] = bool(row["in_recovery"])
        state["lsn"] = parse_lsn(row["lsn"]) if row.get("lsn") else None
        state["timeline"] = int(row["timeline"], 16) if row.get("timeline") else None
        return state

    def close(self):
        close_quietly(self.conn)
        self.conn = None


# --------------------------------------------------------------------------
# stream-receive: pg_receivewal while the server is the primary
# --------------------------------------------------------------------------


def _conninfo_value(value):
    return "'%s'" % str(value).replace("\\", "\\\\").replace("'", "\\'")


def receiver_conninfo(params):
    """The libpq connection string of pg_receivewal (no password: that goes through ``PGPASSWORD``)."""
    kwargs = connection_kwargs(params, application_name=APPLICATION_NAME)
    kwargs.pop("password", None)
    kwargs.pop("dbname", None)  # a physical replication connection has no database
    return " ".join("%s=%s" % (key, _conninfo_value(value)) for key, value in sorted(kwargs.items()))


def find_receivewal(params, version_num=None):
    """Path of pg_receivewal: ``receivewal_path``, else the server's major version's Debian binary, else PATH."""
    if params.get("receivewal_path"):
        return params["receivewal_path"]
    if version_num:
        candidate = "/usr/lib/postgresql/%d/bin/pg_receivewal" % (int(version_num) // 10000)
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("pg_receivewal") or "pg_receivewal"


def _inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


class Receiver:
    """Runs pg_receivewal into ``stream_dir`` while the local server is the primary; see the module docstring."""

    def __init__(self, params, log, probe, popen=subprocess.Popen, clock=time.monotonic, restart_delay=RESTART_DELAY):
        self.params = params
        self.log = log
        self.probe = probe
        self.popen = popen
        self.clock = clock
        self.restart_delay = restart_delay
        self.directory, self.interval = check_stream_options(params)
        self.problems = Problems(log, clock)
        self.child = None
        self.next_start = 0.0
        self.role = None

    def command(self, state):
        return [find_receivewal(self.params, state.get("version_num")), "--directory", self.directory,
                "--synchronous", "--no-password", "--dbname", receiver_conninfo(self.params)]

    def _environment(self):
        env = dict(os.environ)
        if self.params.get("login_password"):
            env["PGPASSWORD"] = self.params["login_password"]
        env.pop("PGAPPNAME", None)
        return env

    def step(self):
        """One supervision step; returns the state: ``streaming``, ``standby``, ``unreachable``, ``waiting``,
        ``refused``."""
        if self.child is not None and self.child.poll() is not None:
            self.log.warning("pg_receivewal exited with status %s; restarting it in %d s if the server is still the "
                             "primary" % (self.child.returncode, self.restart_delay))
            self.child = None
            self.next_start = self.clock() + self.restart_delay
        try:
            state = self.probe.receiver_state()
        except RtxDrError as exc:
            self.problems.report("postgres", "warning", "cannot ask the local server whether it is the primary: %s "
                                 "(pg_receivewal %s; checking again every %s s)"
                                 % (exc.msg, "keeps running" if self.child else "is not started", self.interval))
            return "unreachable"
        self.problems.clear("postgres", "the local server answers again (after %(seconds)d s)")
        if state["in_recovery"]:
            if self.child is not None:
                self.stop_child("the local server is a standby now")
            if self.role != "standby":
                self.log("standby: not streaming WAL (pg_receivewal starts when this server is promoted)")
            self.role = "standby"
            return "standby"
        if self.role == "standby":
            self.log("the local server is the primary now: streaming WAL")
        self.role = "primary"
        if self.child is not None:
            return "streaming"
        problem, grace = self._refusal(state)
        if problem:
            self.problems.report("refused", "error", problem, grace=grace)
            return "refused"
        self.problems.clear("refused")
        if self.clock() < self.next_start:
            return "waiting"
        try:
            self.start_child(state)
        except OSError as exc:
            self.next_start = self.clock() + self.restart_delay
            self.problems.report("start", "error", "cannot start pg_receivewal: %s (receivewal_path %s; retrying every "
                                 "%d s)" % (exc, self.params.get("receivewal_path") or "not set", self.restart_delay))
            return "waiting"
        self.problems.clear("start")
        return "streaming"

    def _refusal(self, state):
        """``(why pg_receivewal must not start, seconds before saying so)``; ``(None, 0)`` when it may."""
        size = self.params.get("wal_segment_size") or DEFAULT_WAL_SEGMENT_SIZE
        if state.get("wal_segment_size") and int(state["wal_segment_size"]) != size:
            return ("the server's wal_segment_size is %s bytes but wal_segment_size is %s in the agent configuration: "
                    "not streaming" % (state["wal_segment_size"], size)), 0
        if state.get("data_directory") and _inside(self.directory, state["data_directory"]):
            return ("stream_dir %s is inside the data directory %s: not streaming (put it outside, e.g. "
                    "/var/lib/rtx-dr/wal-stream)" % (self.directory, state["data_directory"])), 0
        if not os.path.isdir(self.directory) or not os.access(self.directory, os.W_OK | os.X_OK):
            return ("stream_dir %s does not exist or is not writable by this user: not streaming (create it, owned by "
                    "the server's user, mode 0700)" % self.directory), 0
        if state.get("receivers"):
            # The walsender of a receiver that was just killed can stay listed a moment: said after a grace period.
            return ("another client with application_name %s streams from the local server: not starting a second "
                    "pg_receivewal" % APPLICATION_NAME), RECEIVER_GRACE
        return None, 0

    def start_child(self, state):
        size = self.params.get("wal_segment_size") or DEFAULT_WAL_SEGMENT_SIZE
        segno = state["lsn"] // size
        spool = scan_spool(self.directory)
        stale = stale_files(spool["complete"] + spool["partials"], state["timeline"], segno, size)
        if stale:
            move_stale(self.directory, stale)
            per_id = 0x100000000 // size
            current = "%08X%08X%08X" % (state["timeline"], segno // per_id, segno % per_id)
            self.log.warning("moved %d file(s) of %s into %s/ before starting pg_receivewal (another timeline, or too "
                             "far from the server's current segment %s; archive_command archives the server's own "
                             "segments): %s" % (len(stale), self.directory, STALE_DIR, current, ", ".join(stale)))
        argv = self.command(state)
        self.child = self.popen(argv, stdin=subprocess.DEVNULL, env=self._environment())  # pylint: disable=consider-using-with
        self.log("started pg_receivewal (pid %s, %s) into %s at timeline %d, LSN %s"
                 % (self.child.pid, argv[0], self.directory, state["timeline"], format_lsn(state["lsn"])))

    def stop_child(self, why):
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        self.log("%s: stopped pg_receivewal (pid %s)" % (why, child.pid))

    def run(self, stop):
        """Supervise until ``stop`` (a :class:`threading.Event`) is set; pg_receivewal is stopped then."""
        try:
            while not stop.is_set():
                self.step()
                stop.wait(self.interval)
        finally:
            self.stop_child("stopping")
            self.probe.close()


# --------------------------------------------------------------------------
# stream-upload
# --------------------------------------------------------------------------


class Uploader:
    """Pushes completed spool files and uploads the partial segment; see the module docstring.

    ``replica``: optional ``(client, params)`` of the replica archive (:func:`walarchive.replica_params`): every
    partial upload goes to both buckets at the same time (a replica failure is a warning, the primary's upload
    counts). Completed files are pushed to the primary bucket only (``archive_command`` pushes them to both).
    """

    def __init__(self, params, s3, log, probe, kms=None, clock=time.monotonic, host=None, replica=None,
                 replica_kms=None):
        self.params = params
        self.s3 = s3
        self.log = log
        self.probe = probe
        self.kms = kms
        self.clock = clock
        self.host = host or socket.gethostname()
        self.settings = walarchive.check_options(params)
        self.directory, self.interval = check_stream_options(params)
        self.replica = None  # {s3, params, kms, settings} of the replica archive, as :attr:`primary`
        if replica is not None:
            client, replica_params = replica
            self.replica = {"s3": client, "params": replica_params, "kms": replica_kms,
                            "settings": walarchive.check_options(replica_params)}
        self.problems = Problems(log, clock)
        self.last = None
        self.conflicts = set()
        self.seen = set()  # completed files in the spool at the last tick
        self.counts = {"pushed": 0, "uploads": 0, "errors": 0}
        self.lock = threading.Lock()
        self.role = None
        # Completed files are pushed while the partial is uploaded (a segment switch would otherwise delay the
        # newest WAL by a whole segment push); the replica's copy of the partial goes in parallel too.
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stream-upload")

    @property
    def primary(self):
        """``{s3, params, kms, settings}`` of the primary archive (where :meth:`_put` uploads)."""
        return {"s3": self.s3, "params": self.params, "kms": self.kms, "settings": self.settings}

    def close(self):
        self.pool.shutdown(wait=True)
        self.probe.close()

    def _count(self, name):
        with self.lock:
            self.counts[name] += 1

    def pending_completed(self):
        """True when a completed file appeared in the spool since the last tick (the uploader then ticks at once;
        a file that could not be pushed waits for the next regular tick, so an S3 outage is no busy loop)."""
        return any(name not in self.seen for name in scan_spool(self.directory)["complete"])

    def tick(self):
        """One pass. ``{"pushed": [names], "uploaded": {name, key, covers_lsn, replica} or None, "partial": why not}``.

        On a primary the completed files are pushed (one worker thread) while the partial segment is uploaded;
        otherwise only the completed files are pushed.
        """
        outcome = {"pushed": [], "uploaded": None, "partial": None}
        spool = scan_spool(self.directory)
        self.seen = set(spool["complete"])
        try:
            state = self.probe.uploader_state()  # BEFORE reading any file: covers-lsn is a lower bound
            self.problems.clear("postgres", "the local server answers again (after %(seconds)d s)")
        except RtxDrError as exc:
            state = None
            self.problems.report("postgres", "warning", "cannot ask the local server for its role and the receiver's "
                                 "position: %s (completed segments are still pushed, the partial one is not)" % exc.msg)
        if state is None or state["in_recovery"]:
            self._push_completed(spool["complete"], outcome)
            if state is None:
                outcome["partial"] = "server unreachable"
                return outcome
            if self.role != "standby":
                self.log("standby: no partial segment to upload (the primary's uploader does it)")
            self.role = "standby"
            outcome["partial"] = "standby"
            return outcome
        if self.role == "standby":
            self.log("the local server is the primary now: uploading its partial segment")
        self.role = "primary"
        pushing = self.pool.submit(self._push_completed, spool["complete"], outcome) if spool["complete"] else None
        try:
            self._upload_partial(spool["partials"], state, outcome)
        finally:
            if pushing is not None:
                pushing.result()
        if self.last is not None and self.last["name"][:24] in outcome["pushed"]:
            self.last = None  # that segment is archived now: its partial is history
        return outcome

    def _s3_failed(self, what, exc, key="s3", level="error"):
        self._count("errors")
        self.problems.report(key, level, "%s failed: %s (the stream uploader retries every %s s; logged once until "
                             "it works again)" % (what, exc.msg, self.interval))

    def _s3_ok(self, key="s3"):
        self.problems.clear(key, "S3 uploads %swork again (after %%(seconds)d s)"
                            % ("to the replica bucket " if key != "s3" else ""))

    def _push_completed(self, names, outcome):
        """Push every completed file; False when S3 failed (the rest waits for the next tick)."""
        for name in names:
            if name in self.conflicts:
                continue
            path = os.path.join(self.directory, name)
            try:
                walarchive.push(self.s3, self.params, path, kms=self.kms)
            except (walarchive.WalConflictError, InvalidValueError) as exc:
                # A different content archived under its name, or not a WAL file of this size: S3 is not the
                # problem, the other files go on.
                self.conflicts.add(name)
                self.log.error("%s: %s (kept in %s; the stream uploader does not retry it until restarted)"
                               % (name, exc.msg, self.directory))
                continue
            except RtxDrError as exc:
                if not os.path.exists(path):
                    continue  # gone meanwhile (moved to stale/ by the receiver)
                self._s3_failed("pushing %s" % name, exc)
                return False
            self._s3_ok()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            self._count("pushed")
            outcome["pushed"].append(name)
        return True

    @staticmethod
    def _put(target, key, body, metadata):
        """PUT the partial into one archive (:attr:`primary` or :attr:`replica`) with its SSE-KMS key; the
        RtxDrError of a failure."""
        extra = walarchive.upload_args(target["settings"], target["params"], target["kms"])
        try:
            target["s3"].put_object(Bucket=target["settings"]["bucket"], Key=key, Body=body, Metadata=metadata,
                                    **extra)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise error_from_boto(exc, "uploading s3://%s/%s" % (target["settings"]["bucket"], key)) from None

    def _put_replica(self, name, extension, body, metadata):
        replica = self.replica
        key = stream_base_key(replica["settings"]["prefix"], name[:24]) + extension
        try:
            self._put(replica, key, body, metadata)
        except RtxDrError as exc:
            self._s3_failed("uploading the partial segment %s to the replica bucket %s"
                            % (name, replica["settings"]["bucket"]), exc, key="replica-s3", level="warning")
            return False
        self._s3_ok("replica-s3")
        return True

    def _upload_partial(self, partials, state, outcome):
        if not partials:
            outcome["partial"] = "no partial segment in the spool"
            return
        name = partials[-1]
        size = self.settings["wal_segment_size"]
        segment = parse_wal_segment_name(name[:24], size)
        lsn = state["write_lsn"]
        if lsn is None:
            self.problems.report("receiver", "warning", "pg_receivewal is not streaming from the local primary (no %s "
                                 "in pg_stat_replication for %d s): the partial segment %s is not uploaded; see "
                                 "journalctl -u rtx-dr-wal-receive" % (APPLICATION_NAME, RECEIVER_GRACE, name),
                                 grace=RECEIVER_GRACE)
            outcome["partial"] = "receiver not streaming"
            return
        self.problems.clear("receiver", "pg_receivewal streams again (after %(seconds)d s)")
        if lsn <= segment.start_lsn:
            outcome["partial"] = "nothing of %s received yet" % name
            return
        covers = min(lsn, segment.end_lsn)
        if self.last is not None and self.last["name"] == name and covers <= self.last["covers"]:
            outcome["partial"] = "unchanged"
            return
        path = os.path.join(self.directory, name)
        try:
            file_size = os.stat(path).st_size
        except FileNotFoundError:
            outcome["partial"] = "completed meanwhile"
            return
        if file_size != size:
            self.problems.report("size:" + name, "error", "%s is %d bytes, not wal_segment_size %d: not uploaded "
                                 "(pg_receivewal pads its partial file; is it compressing?)" % (path, file_size, size))
            outcome["partial"] = "wrong size"
            return
        method = self.settings["compression"]["method"]
        key = stream_base_key(self.settings["prefix"], name[:24]) + EXTENSIONS[method]
        try:
            body, metadata = walarchive.encode_file(path, self.settings, method, size)
        except RtxDrError:
            if not os.path.exists(path):
                outcome["partial"] = "completed meanwhile"
                return
            raise
        if (self.last is not None and self.last["name"] == name and self.last["sha256"] == metadata["raw-sha256"]
                and self.last["covers"] >= covers):
            outcome["partial"] = "unchanged"
            return
        metadata.update({"covers-lsn": format_lsn(covers), "host": self.host})
        replica = (self.pool.submit(self._put_replica, name, EXTENSIONS[method], body, metadata)
                   if self.replica is not None else None)
        try:
            self._put(self.primary, key, body, metadata)
        except RtxDrError as exc:
            self._s3_failed("uploading the partial segment %s" % name, exc)
            outcome["partial"] = "S3 failed"
            return
        finally:
            replica_ok = replica.result() if replica is not None else None
        self._s3_ok()
        self._count("uploads")
        self.last = {"name": name, "covers": covers, "sha256": metadata["raw-sha256"], "key": key,
                     "at": time.time()}
        outcome["uploaded"] = {"name": name, "key": key, "covers_lsn": format_lsn(covers)}
        if replica is not None:
            outcome["uploaded"]["replica"] = replica_ok

    def summary(self):
        last = self.last
        return ("streamed: %d partial uploads, %d completed files pushed, %d S3 errors; newest partial %s"
                % (self.counts["uploads"], self.counts["pushed"], self.counts["errors"],
                   "%s covering %s" % (last["name"], format_lsn(last["covers"])) if last else "none"))

    def wait(self, stop, deadline):
        """Sleep until ``deadline`` (clock) or ``stop``, but return early when a completed file shows up in the
        spool: a segment switch is pushed within :data:`COMPLETION_POLL` s, not at the next tick."""
        while not stop.is_set():
            left = deadline - self.clock()
            if left <= 0:
                return
            stop.wait(min(COMPLETION_POLL, left))
            if self.pending_completed():
                return

    def run(self, stop, once=False):
        """Tick every ``stream_interval`` seconds until ``stop`` is set (one tick with ``once``)."""
        next_summary = self.clock() + SUMMARY_SECONDS
        for target in [self.primary] + ([self.replica] if self.replica else []):
            try:  # the KMS key's ARN now, not at the 1st upload
                walarchive.upload_args(target["settings"], target["params"], target["kms"])
            except RtxDrError:
                pass  # the first upload reports it
        try:
            while not stop.is_set():
                started = self.clock()
                try:
                    self.tick()
                except RtxDrError as exc:
                    self.problems.report("tick:" + exc.msg, "error", "stream upload: %s" % exc.msg)
                if once:
                    return
                if self.clock() >= next_summary:
                    self.log(self.summary())
                    with self.lock:
                        self.counts = {"pushed": 0, "uploads": 0, "errors": 0}
                    next_summary = self.clock() + SUMMARY_SECONDS
                if self.clock() - started < MIN_INTERVAL / 4:
                    stop.wait(MIN_INTERVAL / 4)  # never a busy loop, whatever the spool holds
                self.wait(stop, started + self.interval)
            self.log("stopping: %s" % self.summary())
        finally:
            self.close()


# --------------------------------------------------------------------------
# Restore: the streamed partial in place of a segment no archive has
# --------------------------------------------------------------------------


def newer_wal(s3, bucket, prefix, segment):
    """Why the streamed partial of ``segment`` (a :data:`postgres.WalSegment`) must not be restored, or None.

    It must be the newest WAL there is: refused when the archive holds a newer timeline (history file or
    segments) or a later segment of its own timeline.
    """
    wal = wal_prefix(prefix)
    for page in list_pages(s3, bucket, wal, Delimiter="/"):
        for item in page.get("CommonPrefixes") or ():
            tli = item["Prefix"][len(wal):].rstrip("/")
            if _TLI_RE.match(tli) and int(tli, 16) > segment.timeline:
                return "the archive has WAL of the newer timeline %d" % int(tli, 16)
        for item in page.get("Contents") or ():
            match = _HISTORY_RE.match(item["Key"][len(wal):])
            if match and int(match.group(1), 16) > segment.timeline:
                return "the archive has the history file of the newer timeline %d" % int(match.group(1), 16)
    directory = "%s%08X/" % (wal, segment.timeline)
    try:
        page = s3.list_objects_v2(Bucket=bucket, Prefix=directory, StartAfter=directory + segment.name + "~",
                                  MaxKeys=10)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise error_from_boto(exc, "listing s3://%s/%s" % (bucket, directory)) from None
    for item in page.get("Contents") or ():
        base = item["Key"][len(directory):]
        if len(base) >= 24 and _SEGMENT_RE.match(base[:24]) and base[:24] > segment.name:
            return "the later WAL %s of the same timeline is archived" % base
    return None


def fetch_streamed_partial(sources, name, dest_path, log, verbose=False):
    """Write the streamed partial of segment ``name`` to ``dest_path`` (after no archive had ``name``).

    ``sources``: as :func:`walarchive.fetch_any`. The partial must be the newest WAL (:func:`newer_wal`); it is
    checked like an archived object (both checksums, size) and written atomically. One line on ``log`` says that
    recovery ends in it. Returns fetch's result plus ``covers_lsn``, ``source``, ``streamed_partial``.

    :raises WalNotFoundError: no usable streamed partial.
    :raises RtxDrError: a source failed (unreachable, damaged object) and none had a usable partial.
    """
    try:
        kind = walarchive.wal_file_kind(name)
    except InvalidValueError:
        kind = None
    if kind != walarchive.SEGMENT:
        raise walarchive.WalNotFoundError("%s is not a WAL segment: no streamed partial" % name)
    local = os.path.join(os.path.dirname(dest_path) or ".", name)
    if os.path.exists(local):
        # restore_command's %p is pg_wal/RECOVERYXLOG: the server's pg_wal holds its own copy of the segment
        # (written by its walreceiver, or kept from an earlier restore). A standby keeps a restored file under the
        # segment's name, replacing its own: a partial shorter than what the walreceiver wrote would take WAL away
        # that the server has already replayed, and the promotion PANICs re-reading its last record ("invalid
        # magic number"; found by the lab's region drill). Not found here = PostgreSQL reads its pg_wal copy.
        if verbose:
            log("%s: %s exists, the streamed partial is not used (the server reads its own copy)" % (name, local))
        raise walarchive.WalNotFoundError("WAL file %s is in no archive; its streamed partial is not used because %s "
                                          "exists (the server's own copy)" % (name, local), details={"name": name})
    problem = None
    for label, client, params in sources:
        try:
            if not hasattr(client, "get_object"):
                client = client()
            settings = walarchive.check_options(params, upload=False)
            segment = parse_wal_segment_name(name, settings["wal_segment_size"])
            base = stream_base_key(settings["prefix"], name)
            bucket = settings["bucket"]
            if not walarchive.archived_variants(client, bucket, base):
                continue
            why = newer_wal(client, bucket, settings["prefix"], segment)
            if why:
                log.warning("%s: the streamed partial s3://%s/%s* is NOT restored: %s (only the newest segment of the "
                            "newest timeline may come from a streamed partial)" % (name, bucket, base, why))
                continue
            result = walarchive.fetch(client, params, name, dest_path, base_key=base)
            try:
                metadata = client.head_object(Bucket=bucket, Key=result["key"]).get("Metadata") or {}
            except Exception:  # pylint: disable=broad-exception-caught
                metadata = {}
        except walarchive.WalNotFoundError:
            continue
        except RtxDrError as exc:
            problem = problem or exc
            if verbose:
                log("%s: looking for a streamed partial in the %s archive failed: %s" % (name, label, exc.msg))
            continue
        log("restored %s from the streamed partial segment s3://%s/%s (covers up to LSN %s, uploaded by %s): "
            "recovery replays up to the last complete record in it and ends there"
            % (name, bucket, result["key"], metadata.get("covers-lsn", "?"), metadata.get("host", "?")))
        result.update(source=label, covers_lsn=metadata.get("covers-lsn"), streamed_partial=True)
        return result
    if problem is not None:
        raise problem
    raise walarchive.WalNotFoundError("WAL file %s is in no archive and has no usable streamed partial" % name,
                                      details={"name": name})

# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Promotion of a PostgreSQL standby to primary, used by the ``rtx.dr.pg_promote`` module.

:func:`promote` checks that the server is in recovery, optionally waits until
everything it received is replayed, promotes it (``pg_promote()`` or
``pg_ctl promote``), waits until it accepts writes and returns the facts of
the promotion. A server that already is a primary gives ``changed=False``
(or :class:`NotAStandbyError` when that is not expected). In check mode it only reads.
"""

from __future__ import annotations

import os
import time

from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import QueryFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import DEFAULT_WAL_SEGMENT_SIZE
from ansible_collections.rtx.dr.plugins.module_utils.postgres import close_quietly
from ansible_collections.rtx.dr.plugins.module_utils.postgres import describe_target
from ansible_collections.rtx.dr.plugins.module_utils.postgres import lsn_diff
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.postgres import query_one

METHODS = ("sql", "pg_ctl")
MIN_SERVER_VERSION_NUM = 100000
MIN_PG_PROMOTE_VERSION_NUM = 120000
POLL_INTERVAL = 0.2

# Every key a result has besides "changed", so a result always has the same shape.
RESULT_KEYS = (
    "already_primary",
    "would_promote",
    "old_timeline",
    "new_timeline",
    "promote_lsn",
    "receive_lsn",
    "replay_lsn",
    "replay_lag_bytes",
    "replay_wait_seconds",
    "promote_seconds",
    "total_seconds",
    "writable",
    "method",
    "server_version",
)


class NotAStandbyError(RtxDrError):
    """The server is not in recovery although a standby was expected."""


class PromotionTimeoutError(RtxDrError):
    """Replay or promotion did not finish within the allowed time."""


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def timeline_of_walfile(walfile, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """Timeline of a WAL segment file name (its first 8 hex digits): ``'000000020000000000000003' -> 2``."""
    return parse_wal_segment_name(walfile, wal_segment_size or DEFAULT_WAL_SEGMENT_SIZE).timeline


def replay_gap(receive_lsn, replay_lsn):
    """Bytes received but not yet replayed (``receive - replay``, never below 0); None when either is unknown."""
    if receive_lsn is None or replay_lsn is None:
        return None
    return max(0, lsn_diff(receive_lsn, replay_lsn))


def replay_caught_up(receive_lsn, replay_lsn):
    """True when everything received is replayed (or nothing was received by streaming)."""
    if receive_lsn is None:
        return True
    if replay_lsn is None:
        return False
    return lsn_diff(replay_lsn, receive_lsn) >= 0


def pg_ctl_candidates(server_version_num, pg_bin_dir=None):
    """Paths where ``pg_ctl`` is looked for, in order (``pg_bin_dir``, then Debian's versioned directory)."""
    if pg_bin_dir:
        return [os.path.join(pg_bin_dir, "pg_ctl")]
    major = server_version_num // 10000 if server_version_num else None
    if major:
        return ["/usr/lib/postgresql/%d/bin/pg_ctl" % major]
    return []


def pg_ctl_promote_argv(pg_ctl, data_directory, timeout):
    """The ``pg_ctl promote`` command line (a list: never run through a shell)."""
    return [pg_ctl, "promote", "-D", data_directory, "-w", "-t", str(int(timeout))]


def _rounded(seconds):
    return None if seconds is None else round(max(0.0, seconds), 3)


# --------------------------------------------------------------------------
# Promotion
# --------------------------------------------------------------------------


class Promoter:
    """One promotion run. See :func:`promote` for the parameters."""

    def __init__(self, conn_factory, params, check_mode=False, clock=time.monotonic, sleep=time.sleep,
                 run_command=None, find_pg_ctl=None):
        self.conn_factory = conn_factory
        self.params = params
        self.check_mode = check_mode
        self.clock = clock
        self.sleep = sleep
        self.run_command = run_command
        self.find_pg_ctl = find_pg_ctl
        self.target = describe_target(params)
        self.method = params.get("method") or "sql"
        self.conn = None
        self.settings = {}
        self.result = dict.fromkeys(RESULT_KEYS)
        self.result.update(already_primary=False, would_promote=False, writable=False, method=self.method)

    # -- reads ----------------------------------------------------------------
    def _connect(self):
        try:
            self.conn = self.conn_factory()
        except ConnectionFailedError as exc:
            if not exc.server_down:
                raise
            host = self.params.get("login_host") or self.params.get("login_unix_socket") or "the default unix socket"
            raise ConnectionFailedError(
                "%s Is PostgreSQL running on %s (port %s)? The server to promote must be up."
                % (exc.msg.rstrip("."), host, self.params.get("login_port") or 5432),
                hint=exc.hint,
                details=dict(exc.details, login_host=self.params.get("login_host"),
                             login_port=self.params.get("login_port")),
                server_down=True,
            ) from None

    def _read_settings(self):
        row = query_one(
            self.conn,
            "SELECT current_setting('server_version') AS server_version,"
            " current_setting('server_version_num')::int AS server_version_num,"
            " (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size') AS wal_segment_size,"
            " (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'data_directory') AS data_directory",
        )
        self.settings = row
        if int(row["server_version_num"] or 0) < MIN_SERVER_VERSION_NUM:
            raise RtxDrError(
                "PostgreSQL server version %s at %s is not supported (10 or newer is needed)"
                % (row["server_version"], self.target),
                hint="Point the task at a PostgreSQL 10+ server.",
            )
        self.result["server_version"] = row["server_version"]

    def _in_recovery(self):
        return bool(query_one(self.conn, "SELECT pg_catalog.pg_is_in_recovery() AS r")["r"])

    def _wal_segment_size(self):
        try:
            return int(self.settings.get("wal_segment_size") or DEFAULT_WAL_SEGMENT_SIZE)
        except (TypeError, ValueError):
            return DEFAULT_WAL_SEGMENT_SIZE

    def _lsns(self):
        row = query_one(
            self.conn,
            "SELECT pg_catalog.pg_last_wal_receive_lsn()::text AS receive_lsn,"
            " pg_catalog.pg_last_wal_replay_lsn()::text AS replay_lsn",
        )
        return row["receive_lsn"], row["replay_lsn"]

    def _standby_timeline(self):
        """received_tli of the WAL receiver, else the timeline of the last checkpoint (restartpoint)."""
        try:
            row = query_one(self.conn, "SELECT received_tli FROM pg_catalog.pg_stat_wal_receiver")
        except QueryFailedError:
            row = None
        if row and row.get("received_tli"):
            return int(row["received_tli"])
        row = query_one(self.conn, "SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()")
        return int(row["timeline_id"]) if row and row["timeline_id"] is not None else None

    def _primary_timeline(self):
        row = query_one(
            self.conn,
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()) AS walfile",
        )
        try:
            return timeline_of_walfile(row["walfile"], self._wal_segment_size())
        except InvalidValueError:
            row = query_one(self.conn, "SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()")
            return int(row["timeline_id"])

    def _replay_paused(self):
        try:
            return bool(query_one(self.conn, "SELECT pg_catalog.pg_is_wal_replay_paused() AS p")["p"])
        except QueryFailedError:
            return None

    def _write_test(self):
        """True when the server assigns a transaction ID (only possible when it may write WAL)."""
        try:
            row = query_one(
                self.conn,
                "SELECT pg_catalog.txid_current() AS xid, current_setting('transaction_read_only') AS ro",
            )
        except QueryFailedError:
            return False
        return row["xid"] is not None and row["ro"] == "off"

    # -- steps ------------------------------------------------------------------
    def _already_primary(self):
        timeline = self._primary_timeline()
        if not self.params.get("expect_primary_ok", True):
            raise NotAStandbyError(
                "%s is not a standby: pg_is_in_recovery() is false, it already is a primary on timeline %s"
                % (self.target, timeline),
                hint="Point the task at the standby to promote, or set expect_primary_ok=true to accept "
                "a server that is already a primary (changed=false).",
                details={"in_recovery": False, "timeline": timeline, "already_primary": True},
            )
        _receive, replay = self._lsns()
        self.result.update(
            already_primary=True,
            old_timeline=timeline,
            new_timeline=timeline,
            replay_lsn=replay,
            # A write test assigns (and commits) a transaction ID: not in check mode.
            writable=True if self.check_mode else self._write_test(),
        )

    def _wait_replay(self):
        timeout = self.params.get("replay_timeout", 60)
        start = self.clock()
        deadline = start + timeout
        while True:
            receive, replay = self._lsns()
            if replay_caught_up(receive, replay):
                break
            if self.clock() >= deadline:
                gap = replay_gap(receive, replay)
                paused = self._replay_paused()
                hint = ("Raise replay_timeout, or set wait_replay=false to promote without waiting "
                        "(PostgreSQL still replays the WAL already received before it finishes recovery).")
                if paused:
                    hint = "WAL replay is paused: run SELECT pg_wal_replay_resume() on the standby. " + hint
                raise PromotionTimeoutError(
                    "%s did not replay everything it received within replay_timeout=%s seconds: "
                    "receive_lsn %s, replay_lsn %s, %s bytes not replayed%s; nothing was promoted"
                    % (self.target, timeout, receive, replay, gap, " (replay is paused)" if paused else ""),
                    hint=hint,
                    details={"receive_lsn": receive, "replay_lsn": replay, "replay_lag_bytes": gap,
                             "replay_paused": paused, "in_recovery": True},
                )
            self.sleep(POLL_INTERVAL)
        self.result["replay_wait_seconds"] = _rounded(self.clock() - start)

    def _pg_ctl_path(self):
        version_num = int(self.settings.get("server_version_num") or 0)
        candidates = pg_ctl_candidates(version_num, self.params.get("pg_bin_dir"))
        for candidate in candidates:
            if os.access(candidate, os.X_OK):
                return candidate
        if not self.params.get("pg_bin_dir") and self.find_pg_ctl is not None:
            found = self.find_pg_ctl()
            if found:
                return found
        raise RtxDrError(
            "pg_ctl not found (looked in %s and PATH) for method=pg_ctl"
            % (", ".join(candidates) or "no versioned directory"),
            hint="Set pg_bin_dir to the directory holding pg_ctl of the server's major version, "
            "or use method=sql.",
            details={"pg_bin_dir": self.params.get("pg_bin_dir")},
        )

    def _check_method(self):
        """Fail early (also in check mode) when the chosen method cannot work."""
        if self.method == "sql":
            if int(self.settings["server_version_num"]) < MIN_PG_PROMOTE_VERSION_NUM:
                raise RtxDrError(
                    "method=sql needs pg_promote(), which PostgreSQL %s at %s does not have (12 or newer)"
                    % (self.settings["server_version"], self.target),
                    hint="Use method=pg_ctl on this server.",
                )
            return None
        if self.method != "pg_ctl":
            raise InvalidValueError("method must be one of %s, got %r" % (", ".join(METHODS), self.method))
        if not self.settings.get("data_directory"):
            raise RtxDrError(
                "method=pg_ctl needs the server's data_directory, which login_user %s may not read"
                % self.params.get("login_user"),
                hint="Connect as a superuser or a member of pg_read_all_settings, or use method=sql.",
            )
        return self._pg_ctl_path()

    def _request_promotion(self, pg_ctl, timeout):
        if self.method == "sql":
            row = query_one(self.conn, "SELECT pg_catalog.pg_promote(true, %s) AS promoted", (int(timeout),))
            return bool(row["promoted"]), None
        argv = pg_ctl_promote_argv(pg_ctl, self.settings["data_directory"], timeout)
        if self.run_command is None:
            raise RtxDrError("method=pg_ctl needs a command runner")  # programming error
        rc, out, err = self.run_command(argv)
        if rc != 0:
            text = ((err or "") + (out or "")).strip()
            if "timed out" in text or "did not promote in time" in text:
                return False, text
            raise RtxDrError(
                "pg_ctl promote failed on %s (rc=%s): %s" % (self.settings["data_directory"], rc, text),
                hint="pg_ctl must run as the operating system user owning the data directory "
                "(become: true, become_user: postgres), or use method=sql.",
                details={"rc": rc, "cmd": argv, "stdout": out, "stderr": err},
            )
        return True, None

    def _timeout_error(self, timeout, what, extra=None):
        try:
            in_recovery = self._in_recovery()
            receive, replay = self._lsns()
        except RtxDrError:
            in_recovery, receive, replay = None, None, None
        state = {True: "still in recovery (pg_is_in_recovery() = true)",
                 False: "out of recovery but not accepting writes",
                 None: "in an unknown state (it could not be queried)"}[in_recovery]
        msg = "Promotion of %s did not finish within timeout=%s seconds (%s): the server is %s, replay_lsn %s" % (
            self.target, timeout, what, state, replay)
        if extra:
            msg += ": %s" % extra
        return PromotionTimeoutError(
            msg,
            hint="The promotion was requested and may still complete: check the server log, then rerun the task "
            "(it returns changed=false once the server is a primary) or raise timeout.",
            details={"in_recovery": in_recovery, "receive_lsn": receive, "replay_lsn": replay},
        )

    def _promote(self):
        timeout = self.params.get("timeout", 60)
        self.result["old_timeline"] = self._standby_timeline()
        receive, replay = self._lsns()
        self.result.update(receive_lsn=receive, replay_lsn=replay, replay_lag_bytes=replay_gap(receive, replay))
        pg_ctl = self._check_method()
        if self.check_mode:
            self.result["would_promote"] = True
            return
        if self.params.get("wait_replay", True):
            self._wait_replay()
        receive, replay = self._lsns()
        self.result.update(receive_lsn=receive, replay_lsn=replay, replay_lag_bytes=replay_gap(receive, replay),
                           promote_lsn=replay)

        start = self.clock()
        deadline = start + timeout
        promoted, extra = self._request_promotion(pg_ctl, timeout)
        if not promoted:
            raise self._timeout_error(timeout, "%s did not report the promotion" % (
                "pg_promote()" if self.method == "sql" else "pg_ctl promote"), extra)
        writable = False
        while True:
            if not self._in_recovery() and self._write_test():
                writable = True
                break
            if self.clock() >= deadline:
                raise self._timeout_error(timeout, "waiting for the server to accept writes")
            self.sleep(POLL_INTERVAL)
        self.result.update(
            would_promote=True,
            writable=writable,
            new_timeline=self._primary_timeline(),
            promote_seconds=_rounded(self.clock() - start),
        )

    def _check_params(self):
        for name, minimum in (("timeout", 1), ("replay_timeout", 0)):
            value = self.params.get(name, 60)
            if value is None or value < minimum:
                raise InvalidValueError(
                    "%s=%r is invalid: it must be an integer of at least %d (seconds)" % (name, value, minimum)
                )

    def run(self):
        start = self.clock()
        self._check_params()
        self._connect()
        try:
            self._read_settings()
            if self._in_recovery():
                self._promote()
                changed = True
            else:
                self._already_primary()
                changed = False
        finally:
            close_quietly(self.conn)
            self.conn = None
        result = dict(self.result)
        result["changed"] = changed
        result["total_seconds"] = _rounded(self.clock() - start)
        return result


def promote(conn_factory, params, check_mode=False, clock=time.monotonic, sleep=time.sleep,
            run_command=None, find_pg_ctl=None):
    """Promote the standby reached by ``conn_factory`` and return the result dict of ``pg_promote``.

    :param conn_factory: ``() -> connection`` (e.g. ``lambda: connect(module.params)``).
    :param params: the module options: the connection options plus ``wait_replay``,
        ``replay_timeout``, ``timeout``, ``method``, ``pg_bin_dir``, ``expect_primary_ok``.
    :param check_mode: only read and report what would happen (``would_promote``).
    :param clock: monotonic seconds, for durations and timeouts.
    :param sleep: ``sleep(seconds)`` between polls.
    :param run_command: ``(argv) -> (rc, stdout, stderr)``, for ``method=pg_ctl``.
    :param find_pg_ctl: ``() -> path or None``, looks ``pg_ctl`` up in PATH.
    :raises ConnectionFailedError: the server is down or refused the login.
    :raises NotAStandbyError: the server is a primary and ``expect_primary_ok`` is false.
    :raises PromotionTimeoutError: replay or promotion did not finish in time.
    """
    return Promoter(conn_factory, params, check_mode=check_mode, clock=clock, sleep=sleep,
                    run_command=run_command, find_pg_ctl=find_pg_ctl).run()

# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""PostgreSQL connection helpers and pure-python LSN / WAL file name arithmetic.

Connection: :func:`postgres_common_argument_spec` (documented by the
``rtx.dr.postgres`` doc fragment), :func:`connect`, :func:`query_one`,
:func:`query_all`, :func:`execute`. The driver is psycopg (3) when importable,
else psycopg2; both are imported lazily so that modules load (and can report a
clear error) on hosts without either.

LSN / WAL names, matching PostgreSQL's own arithmetic (``pg_lsn``,
``pg_wal_lsn_diff()``, ``pg_walfile_name()``, ``pg_walfile_name_offset()``):
:func:`parse_lsn`, :func:`format_lsn`, :func:`lsn_diff`,
:func:`wal_segment_name`, :func:`parse_wal_segment_name`,
:func:`is_wal_segment_name`, :func:`timeline_history_file_name`.
"""

from __future__ import annotations

import re
from collections import namedtuple

from ansible.module_utils.basic import env_fallback

from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError
from ansible_collections.rtx.dr.plugins.module_utils.errors import QueryFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError

SSL_MODES = ("allow", "disable", "prefer", "require", "verify-ca", "verify-full")

DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024
DEFAULT_APPLICATION_NAME = "rtx.dr"

DRIVER_HINT = (
    "Install a PostgreSQL driver for the Python interpreter Ansible uses on the target host: "
    "'apt-get install python3-psycopg2' (Debian/Ubuntu) or 'pip install psycopg2-binary'."
)

# libpq keyword for each module option. login_unix_socket is handled apart.
_PARAM_TO_LIBPQ = (
    ("login_host", "host"),
    ("login_port", "port"),
    ("login_user", "user"),
    ("login_password", "password"),
    ("login_db", "dbname"),
    ("ssl_mode", "sslmode"),
    ("ca_cert", "sslrootcert"),
    ("connect_timeout", "connect_timeout"),
    # Not a common option: only modules that declare it (e.g. health_check) pass it.
    ("target_session_attrs", "target_session_attrs"),
)


_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def quote_ident(name, what):
    """``"name"`` for a plain SQL identifier; anything else is refused (``what`` names the option)."""
    if not _IDENT_RE.match(name or ""):
        raise InvalidValueError(
            "Invalid %s %r: expected a plain SQL identifier (letters, digits, _)" % (what, name),
        )
    return '"%s"' % name


def postgres_common_argument_spec():
    """Return the argument_spec shared by every rtx.dr module that talks to PostgreSQL.

    Documented by the ``rtx.dr.postgres`` doc fragment; keep both in step.
    """
    return dict(
        login_host=dict(type="str"),
        login_port=dict(type="int", default=5432),
        login_user=dict(type="str", default="postgres"),
        login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
        login_db=dict(type="str", default="postgres", aliases=["db"]),
        login_unix_socket=dict(type="str"),
        ssl_mode=dict(type="str", default="prefer", choices=list(SSL_MODES)),
        ca_cert=dict(type="path"),
        connect_timeout=dict(type="int", default=10),
    )


# --------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------


def load_driver():
    """Return ``(name, module)`` of the PostgreSQL driver to use.

    ``name`` is ``"psycopg"`` (psycopg 3, preferred) or ``"psycopg2"``.
    Raises :class:`MissingLibraryError` when neither can be imported.
    """
    errors = []
    try:
        import psycopg  # pylint: disable=import-outside-toplevel

        return "psycopg", psycopg
    except ImportError as exc:
        errors.append("psycopg: %s" % exc)
    try:
        import psycopg2  # pylint: disable=import-outside-toplevel

        return "psycopg2", psycopg2
    except ImportError as exc:
        errors.append("psycopg2: %s" % exc)
    raise MissingLibraryError(
        "psycopg2 (or psycopg 3)",
        hint=DRIVER_HINT,
        details={"import_errors": errors},
    )


def connection_kwargs(params, application_name=DEFAULT_APPLICATION_NAME):
    """Map module options (see :func:`postgres_common_argument_spec`) to libpq keywords.

    Empty options are left out so libpq applies its own defaults (``PGHOST``,
    ``~/.pgpass``...). ``login_unix_socket`` is used as the host when
    ``login_host`` is empty or ``localhost``. The password stays a separate
    keyword: it is never formatted into a DSN string.
    """
    kwargs = {}
    for option, keyword in _PARAM_TO_LIBPQ:
        value = params.get(option)
        if value is None or value == "":
            continue
        kwargs[keyword] = value
    socket_dir = params.get("login_unix_socket")
    if socket_dir and kwargs.get("host") in (None, "localhost"):
        kwargs["host"] = socket_dir
    if application_name:
        kwargs["application_name"] = application_name
    return kwargs


def describe_target(params):
    """Human readable ``where`` for messages: host/socket, port, database, user. No secrets."""
    host = params.get("login_host")
    socket_dir = params.get("login_unix_socket")
    if socket_dir and host in (None, "", "localhost"):
        where = "unix socket directory %s" % socket_dir
    elif host:
        where = "%s" % host
    else:
        where = "the default unix socket"
    return "PostgreSQL at %s port %s (login_db=%s, login_user=%s)" % (
        where,
        params.get("login_port") or 5432,
        params.get("login_db") or "postgres",
        params.get("login_user") or "postgres",
    )


# (substring of the libpq error, reason, server_down, hint). First match wins.
_CONNECT_ERROR_HINTS = (
    (
        "password authentication failed",
        "authentication",
        False,
        "Check login_user and login_password (or PGPASSWORD / ~/.pgpass on the target host).",
    ),
    (
        "no password supplied",
        "authentication",
        False,
        "The server requires a password: set login_password (or PGPASSWORD / ~/.pgpass on the target host).",
    ),
    (
        "peer authentication failed",
        "authentication",
        False,
        "Peer authentication needs the OS user to match login_user: run the task with "
        "'become: true' and 'become_user: postgres', or connect over TCP with login_host and a password.",
    ),
    (
        "no pg_hba.conf entry",
        "authentication",
        False,
        "Allow this client in pg_hba.conf on the server (and reload it), or connect from an allowed address.",
    ),
    (
        "does not exist",
        "configuration",
        False,
        "Check login_db and login_user: the database or role named in the error does not exist on the server.",
    ),
    (
        "certificate",
        "ssl",
        False,
        "Check ssl_mode and ca_cert: the server certificate could not be verified.",
    ),
    (
        "does not support ssl",
        "ssl",
        False,
        "Check ssl_mode: the server has SSL disabled; use ssl_mode=prefer/disable or enable ssl on the server.",
    ),
    (
        "the database system is",
        "unreachable",
        True,
        "The server is starting up, shutting down or in crash recovery; wait and retry.",
    ),
    (
        "too many clients",
        "unreachable",
        True,
        "The server has no free connection slot (max_connections); retry later or raise max_connections.",
    ),
    (
        "could not translate host name",
        "unreachable",
        True,
        "Check login_host: the name does not resolve on the target host.",
    ),
    (
        "timeout expired",
        "unreachable",
        True,
        "Check that the server is up and reachable at login_host:login_port (firewall?), or raise connect_timeout.",
    ),
    (
        "invalid",
        "configuration",
        False,
        "Check the connection options (login_port, ssl_mode, ca_cert, connect_timeout...) named in the error.",
    ),
)

_CONNECT_ERROR_DEFAULT = (
    "unreachable",
    True,
    "Check that PostgreSQL is running and listening on login_host:login_port "
    "(or login_unix_socket), and that no firewall blocks the connection.",
)


def _classify_connect_error(text):
    lowered = text.lower()
    for needle, reason, server_down, hint in _CONNECT_ERROR_HINTS:
        if needle in lowered:
            return reason, server_down, hint
    return _CONNECT_ERROR_DEFAULT


def _connect_error(params, exc):
    text = str(exc).strip()
    reason, server_down, hint = _classify_connect_error(text)
    return ConnectionFailedError(
        "Cannot connect to %s: %s" % (describe_target(params), text),
        hint=hint,
        details={"reason": reason},
        server_down=server_down,
    )


def connect(params, autocommit=True, application_name=DEFAULT_APPLICATION_NAME):
    """Open a connection with the options of :func:`postgres_common_argument_spec`.

    :param params: ``module.params`` or any dict with those keys.
    :param autocommit: every statement commits on its own (the default; read-only
        probes then never leave a transaction open nor get stuck after an error).
    :returns: a psycopg (3) or psycopg2 connection. Use :func:`query_one`,
        :func:`query_all` and :func:`execute` for driver-neutral access.
    :raises MissingLibraryError: neither driver is importable.
    :raises ConnectionFailedError: the server refused or could not be reached;
        ``details['reason']`` is one of ``unreachable``, ``authentication``,
        ``configuration``, ``ssl``, and the attribute ``server_down`` is True when
        the server itself is not (yet) able to take connections.
    """
    name, driver = load_driver()
    kwargs = connection_kwargs(params, application_name=application_name)
    try:
        if name == "psycopg":
            return driver.connect(autocommit=autocommit, **kwargs)
        conn = driver.connect(**kwargs)
        conn.autocommit = autocommit
        return conn
    except driver.Error as exc:
        raise _connect_error(params, exc) from None


def driver_name(conn):
    """``"psycopg"`` or ``"psycopg2"``, from a connection returned by :func:`connect`."""
    module = type(conn).__module__ or ""
    return "psycopg2" if module.split(".")[0] == "psycopg2" else "psycopg"


def _column_names(cursor):
    names = []
    for column in cursor.description or ():
        name = getattr(column, "name", None)
        names.append(name if name is not None else column[0])
    return names


def _query_error(sql, exc):
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    text = str(exc).strip()
    hint = "Check the statement and the PostgreSQL server log."
    if sqlstate == "42501":
        hint = (
            "The login role lacks a privilege: connect as a superuser (login_user=postgres) "
            "or grant it the needed role (e.g. pg_monitor)."
        )
    details = {"query": sql}
    if sqlstate:
        details["sqlstate"] = sqlstate
    return QueryFailedError("PostgreSQL query failed: %s" % text, hint=hint, details=details)


def _run(conn, sql, params, fetch):
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            if fetch == "none":
                return cursor.rowcount
            if cursor.description is None:
                return None if fetch == "one" else []
            names = _column_names(cursor)
            if fetch == "one":
                row = cursor.fetchone()
                return None if row is None else dict(zip(names, row))
            return [dict(zip(names, row)) for row in cursor.fetchall()]
    except QueryFailedError:
        raise
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # Both drivers derive their errors from their own Error class; anything
        # raised here comes from the driver or the server.
        raise _query_error(sql, exc) from None


def query_one(conn, sql, params=None):
    """Run ``sql`` (``%s`` / ``%(name)s`` placeholders) and return the first row as a dict, or None."""
    return _run(conn, sql, params, "one")


def query_optional(conn, sql, warnings, what):
    """:func:`query_one` that turns a privilege or similar error into a warning (appended to ``warnings``) and None."""
    try:
        return query_one(conn, sql)
    except QueryFailedError as exc:
        warnings.append("Could not read %s (%s); it is reported as null. %s" % (what, exc.msg, exc.hint or ""))
        return None


def query_all(conn, sql, params=None):
    """Run ``sql`` and return every row as a list of dicts (column name -> value)."""
    return _run(conn, sql, params, "all")


def execute(conn, sql, params=None):
    """Run a statement that returns no rows; return the driver's rowcount."""
    return _run(conn, sql, params, "none")


def insert_rows(connect_fn, params, sql, rows, statement_timeout="5s", **connect_kwargs):
    """Execute ``sql`` once per row in ONE transaction on ``connect_fn(params, autocommit=False, ...)``.

    For audit/history writes that must never fail the caller: returns
    ``{'written': bool, 'rows': n, 'server': address or None, 'reason': None or the error}``.
    """
    outcome = {"written": False, "rows": 0, "server": None, "reason": None}
    conn = None
    try:
        conn = connect_fn(params, autocommit=False, **connect_kwargs)
        execute(conn, "SET LOCAL statement_timeout = '%s'" % statement_timeout.replace("'", ""))
        outcome["server"] = query_one(conn, "SELECT pg_catalog.host(pg_catalog.inet_server_addr()) AS a")["a"]
        for row in rows:
            execute(conn, sql, row)
        conn.commit()
        outcome.update(written=True, rows=len(rows))
    except RtxDrError as exc:
        outcome["reason"] = str(exc)
    finally:
        close_quietly(conn)
    return outcome


def close_quietly(conn):
    """Close ``conn`` (may be None), ignoring errors: for ``finally`` blocks."""
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # pylint: disable=broad-exception-caught
        pass


# --------------------------------------------------------------------------
# LSN and WAL file names
# --------------------------------------------------------------------------

_LSN_RE = re.compile(r"^\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*$")
_WAL_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_MAX_LSN = 0xFFFFFFFFFFFFFFFF
_MAX_TIMELINE = 0xFFFFFFFF

WalSegment = namedtuple("WalSegment", ["name", "timeline", "segno", "start_lsn", "end_lsn"])
WalSegment.__doc__ = """A parsed WAL segment file name.

``segno`` is PostgreSQL's XLogSegNo; ``start_lsn`` (inclusive) and ``end_lsn``
(exclusive) are the byte positions (ints) the segment covers.
"""


def parse_lsn(value):
    """Parse a ``pg_lsn`` text such as ``'0/3000060'`` into an int (``50331744``).

    Accepts what PostgreSQL's ``pg_lsn`` input accepts: two groups of 1-8 hex
    digits, either case, with or without zero padding. An int is returned
    unchanged (after a range check).
    """
    if isinstance(value, bool):
        raise InvalidValueError("Invalid LSN %r: expected text like '0/3000060'" % (value,))
    if isinstance(value, int):
        if value < 0 or value > _MAX_LSN:
            raise InvalidValueError("Invalid LSN %d: must be between 0 and 2^64-1" % value)
        return value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    match = _LSN_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise InvalidValueError(
            "Invalid LSN %r: expected two hexadecimal numbers separated by '/', like '0/3000060'" % (value,),
            hint="Use the value returned by PostgreSQL (e.g. pg_current_wal_lsn()).",
        )
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value):
    """Format an int LSN as PostgreSQL prints it: ``50331744 -> '0/3000060'`` (upper case, no padding)."""
    value = parse_lsn(value)
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def lsn_diff(a, b):
    """Bytes from LSN ``b`` to LSN ``a`` (``a - b``), like ``pg_wal_lsn_diff(a, b)``.

    Both may be text or int; the result is negative when ``a`` is behind ``b``.
    """
    return parse_lsn(a) - parse_lsn(b)


def _check_wal_segment_size(wal_segment_size):
    # PostgreSQL's IsValidWalSegSize(): a power of two from 1 MiB to 1 GiB.
    if (
        isinstance(wal_segment_size, bool)
        or not isinstance(wal_segment_size, int)
        or wal_segment_size < 1024 * 1024
        or wal_segment_size > 1024 * 1024 * 1024
        or wal_segment_size & (wal_segment_size - 1)
    ):
        raise InvalidValueError(
            "Invalid wal_segment_size %r: must be a power of two between 1 MiB and 1 GiB (in bytes)"
            % (wal_segment_size,),
            hint="Use the server's 'SHOW wal_segment_size' value in bytes (16777216 by default).",
        )
    return 0x100000000 // wal_segment_size


def _check_timeline(timeline):
    if isinstance(timeline, bool) or not isinstance(timeline, int) or not 1 <= timeline <= _MAX_TIMELINE:
        raise InvalidValueError("Invalid timeline %r: must be an integer from 1 to 4294967295" % (timeline,))


def wal_segment_name(timeline, lsn, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE, end_position=False):
    """Name of the WAL segment file holding ``lsn`` on ``timeline``.

    ``wal_segment_name(1, '0/3000060') == '000000010000000000000003'``.

    By default the segment containing the byte at ``lsn`` is named (PostgreSQL's
    XLByteToSeg; the same as ``pg_walfile_name(lsn + 1)``), which is right for a
    start position such as a backup's start LSN. With ``end_position=True`` an
    LSN exactly on a segment boundary names the previous segment
    (XLByteToPrevSeg, exactly what ``pg_walfile_name()`` and
    ``pg_walfile_name_offset()`` return), which is right for an end position
    such as ``pg_current_wal_lsn()`` or a backup's stop LSN.
    """
    _check_timeline(timeline)
    segments_per_id = _check_wal_segment_size(wal_segment_size)
    position = parse_lsn(lsn)
    if end_position:
        if position == 0:
            raise InvalidValueError("LSN 0/0 has no previous WAL segment (end_position=True)")
        segno = (position - 1) // wal_segment_size
    else:
        segno = position // wal_segment_size
    return "%08X%08X%08X" % (timeline, segno // segments_per_id, segno % segments_per_id)


def is_wal_segment_name(name):
    """True when ``name`` is exactly a WAL segment file name (24 upper case hex digits)."""
    return isinstance(name, str) and bool(_WAL_SEGMENT_RE.match(name))


def parse_wal_segment_name(name, wal_segment_size=DEFAULT_WAL_SEGMENT_SIZE):
    """Parse ``'000000010000000000000003'`` into a :data:`WalSegment`.

    Raises :class:`InvalidValueError` for anything that is not a WAL segment
    name for that segment size (``.partial``/``.backup``/``.history`` names
    included: strip suffixes first).
    """
    segments_per_id = _check_wal_segment_size(wal_segment_size)
    match = _WAL_SEGMENT_RE.match(name) if isinstance(name, str) else None
    if not match:
        raise InvalidValueError(
            "Invalid WAL segment file name %r: expected 24 upper case hexadecimal digits "
            "like '000000010000000000000003'" % (name,)
        )
    timeline, log_id, seg_id = (int(group, 16) for group in match.groups())
    if timeline == 0:
        raise InvalidValueError("Invalid WAL segment file name %r: timeline 0 does not exist" % (name,))
    if seg_id >= segments_per_id:
        raise InvalidValueError(
            "Invalid WAL segment file name %r: segment part %08X is too large for wal_segment_size %d"
            % (name, seg_id, wal_segment_size),
            hint="Pass the server's wal_segment_size if it is not the default 16 MiB.",
        )
    segno = log_id * segments_per_id + seg_id
    start = segno * wal_segment_size
    return WalSegment(name, timeline, segno, start, start + wal_segment_size)


def timeline_history_file_name(timeline):
    """``timeline_history_file_name(2) == '00000002.history'``."""
    _check_timeline(timeline)
    return "%08X.history" % timeline


# --------------------------------------------------------------------------
# pg_controldata
# --------------------------------------------------------------------------


def parse_controldata(text):
    """``{label: value}`` of ``pg_controldata`` output (run it with LC_ALL=C), both stripped.

    E.g. ``"Database system identifier"``, ``"Latest checkpoint's TimeLineID"``, ``"Database cluster state"``.
    A label given twice keeps its last value. Plain Python: the fence guard (a host agent) uses it with
    neither ansible nor a database driver installed.
    """
    fields = {}
    for line in (text or "").splitlines():
        if ":" in line:
            key, _sep, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields

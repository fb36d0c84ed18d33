# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import socket
import sys
import types

import pytest
import yaml

from ansible_collections.rtx.dr.plugins.doc_fragments.postgres import ModuleDocFragment
from ansible_collections.rtx.dr.plugins.module_utils import postgres
from ansible_collections.rtx.dr.plugins.module_utils.errors import ConnectionFailedError
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.errors import MissingLibraryError
from ansible_collections.rtx.dr.plugins.module_utils.errors import QueryFailedError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import format_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import is_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.postgres import lsn_diff
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.postgres import timeline_history_file_name
from ansible_collections.rtx.dr.plugins.module_utils.postgres import wal_segment_name

MIB = 1024 * 1024


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# Argument spec and its documentation
# --------------------------------------------------------------------------


def test_argument_spec_defaults_and_secrets():
    spec = postgres.postgres_common_argument_spec()
    assert set(spec) == {
        "login_host", "login_port", "login_user", "login_password", "login_db",
        "login_unix_socket", "ssl_mode", "ca_cert", "connect_timeout",
    }
    assert spec["login_port"]["default"] == 5432
    assert spec["login_user"]["default"] == "postgres"
    assert spec["login_db"]["default"] == "postgres"
    assert spec["login_db"]["aliases"] == ["db"]
    assert spec["login_password"]["no_log"] is True
    assert spec["ssl_mode"]["default"] == "prefer"
    assert spec["ssl_mode"]["choices"] == ["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]
    assert spec["connect_timeout"]["default"] == 10
    # A fresh dict each call: modules may update it.
    assert postgres.postgres_common_argument_spec() is not spec


def test_argument_spec_parses_with_env_password_and_alias(make_module, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-env")
    module = make_module(postgres.postgres_common_argument_spec(), {"db": "appdb", "login_port": "6432"})
    assert module.params["login_password"] == "from-env"
    assert module.params["login_db"] == "appdb"
    assert module.params["login_port"] == 6432
    assert module.params["login_user"] == "postgres"
    assert "from-env" in module.no_log_values


def test_argument_spec_explicit_password_wins_over_env(make_module, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-env")
    module = make_module(postgres.postgres_common_argument_spec(), {"login_password": "explicit"})
    assert module.params["login_password"] == "explicit"


def _doc_options(doc):
    return yaml.safe_load(doc)["options"]


def _assert_doc_matches_spec(options, spec):
    assert set(options) == set(spec)
    for name, arg in spec.items():
        doc = options[name]
        assert doc.get("type", "str") == arg.get("type", "str"), name
        assert doc.get("default") == arg.get("default"), name
        assert sorted(doc.get("aliases", [])) == sorted(arg.get("aliases", [])), name
        assert doc.get("choices") == arg.get("choices"), name
        assert doc.get("description"), name


def test_doc_fragment_matches_argument_spec():
    _assert_doc_matches_spec(_doc_options(ModuleDocFragment.DOCUMENTATION), postgres.postgres_common_argument_spec())


# --------------------------------------------------------------------------
# Connection keywords: never a DSN string, socket handling
# --------------------------------------------------------------------------

FULL_PARAMS = {
    "login_host": "db1.example.org",
    "login_port": 5433,
    "login_user": "rtx",
    "login_password": "s3cr3t",
    "login_db": "appdb",
    "login_unix_socket": None,
    "ssl_mode": "verify-full",
    "ca_cert": "/etc/ssl/ca.pem",
    "connect_timeout": 7,
}


def test_connection_kwargs_maps_every_option():
    assert postgres.connection_kwargs(FULL_PARAMS) == {
        "host": "db1.example.org",
        "port": 5433,
        "user": "rtx",
        "password": "s3cr3t",
        "dbname": "appdb",
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ssl/ca.pem",
        "connect_timeout": 7,
        "application_name": "rtx.dr",
    }


def test_connection_kwargs_leaves_out_empty_options():
    kwargs = postgres.connection_kwargs({"login_host": "", "login_password": None, "login_port": 5432}, application_name=None)
    assert kwargs == {"port": 5432}


@pytest.mark.parametrize("host", [None, "", "localhost"])
def test_unix_socket_used_when_host_is_local(host):
    kwargs = postgres.connection_kwargs({"login_host": host, "login_unix_socket": "/run/pg"})
    assert kwargs["host"] == "/run/pg"


def test_explicit_host_wins_over_unix_socket():
    kwargs = postgres.connection_kwargs({"login_host": "10.0.0.5", "login_unix_socket": "/run/pg"})
    assert kwargs["host"] == "10.0.0.5"


def test_describe_target_has_no_secret():
    text = postgres.describe_target(FULL_PARAMS)
    assert text == "PostgreSQL at db1.example.org port 5433 (login_db=appdb, login_user=rtx)"
    assert "s3cr3t" not in text
    assert "unix socket directory /run/pg" in postgres.describe_target({"login_unix_socket": "/run/pg"})
    assert "default unix socket" in postgres.describe_target({})


# --------------------------------------------------------------------------
# Driver selection and connect() with fake drivers
# --------------------------------------------------------------------------


class FakeDriverError(Exception):
    pass


class FakeConnection:
    def __init__(self):
        self.autocommit = False
        self.closed = False

    def close(self):
        self.closed = True


def make_fake_driver(name, fail_with=None):
    module = types.ModuleType(name)
    module.calls = []
    module.Error = FakeDriverError

    def connect(*args, **kwargs):
        module.calls.append((args, kwargs))
        if fail_with is not None:
            raise FakeDriverError(fail_with)
        return FakeConnection()

    module.connect = connect
    return module


def test_load_driver_prefers_psycopg3(monkeypatch):
    fake3 = make_fake_driver("psycopg")
    monkeypatch.setitem(sys.modules, "psycopg", fake3)
    assert postgres.load_driver() == ("psycopg", fake3)


def test_load_driver_falls_back_to_psycopg2(monkeypatch):
    fake2 = make_fake_driver("psycopg2")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    monkeypatch.setitem(sys.modules, "psycopg2", fake2)
    assert postgres.load_driver() == ("psycopg2", fake2)


def test_load_driver_missing_both_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(MissingLibraryError) as info:
        postgres.load_driver()
    assert "psycopg2" in info.value.msg
    assert "python3-psycopg2" in info.value.hint
    assert "pip install psycopg2-binary" in info.value.hint
    assert len(info.value.details["import_errors"]) == 2


def test_connect_with_psycopg3_passes_password_as_keyword_only(monkeypatch):
    fake3 = make_fake_driver("psycopg")
    monkeypatch.setitem(sys.modules, "psycopg", fake3)
    conn = postgres.connect(FULL_PARAMS)
    assert isinstance(conn, FakeConnection)
    (args, kwargs), = fake3.calls
    assert args == ()  # no positional conninfo/DSN string at all
    assert kwargs["password"] == "s3cr3t"
    assert kwargs["autocommit"] is True
    assert kwargs["host"] == "db1.example.org"
    assert not any("s3cr3t" in v for k, v in kwargs.items() if isinstance(v, str) and k != "password")


def test_connect_with_psycopg2_sets_autocommit(monkeypatch):
    fake2 = make_fake_driver("psycopg2")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", fake2)
    conn = postgres.connect(FULL_PARAMS, autocommit=False)
    assert conn.autocommit is False
    conn = postgres.connect(FULL_PARAMS)
    assert conn.autocommit is True
    args, kwargs = fake2.calls[0]
    assert args == () and kwargs["password"] == "s3cr3t" and "autocommit" not in kwargs


@pytest.mark.parametrize(
    "error_text, reason, server_down, hint_word",
    [
        ('connection to server at "10.0.0.5", port 5432 failed: Connection refused', "unreachable", True, "running"),
        ('connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: No such file or directory',
         "unreachable", True, "running"),
        ("FATAL:  password authentication failed for user \"rtx\"", "authentication", False, "login_password"),
        ("fe_sendauth: no password supplied", "authentication", False, "login_password"),
        ("FATAL:  Peer authentication failed for user \"postgres\"", "authentication", False, "become_user"),
        ("FATAL:  no pg_hba.conf entry for host \"10.0.0.9\"", "authentication", False, "pg_hba.conf"),
        ("FATAL:  database \"nope\" does not exist", "configuration", False, "login_db"),
        ("FATAL:  the database system is starting up", "unreachable", True, "retry"),
        ("timeout expired", "unreachable", True, "connect_timeout"),
        ("server does not support SSL, but SSL was required", "ssl", False, "ssl_mode"),
        ("SSL SYSCALL error: EOF detected", "unreachable", True, "running"),
        ('could not translate host name "nohost" to address', "unreachable", True, "login_host"),
        ('invalid sslmode value: "bogus"', "configuration", False, "ssl_mode"),
    ],
)
def test_connect_errors_are_classified(monkeypatch, error_text, reason, server_down, hint_word):
    monkeypatch.setitem(sys.modules, "psycopg", make_fake_driver("psycopg", fail_with=error_text))
    with pytest.raises(ConnectionFailedError) as info:
        postgres.connect(FULL_PARAMS)
    exc = info.value
    assert exc.details["reason"] == reason
    assert exc.server_down is server_down
    assert hint_word in exc.hint
    assert exc.msg.startswith("Cannot connect to PostgreSQL at db1.example.org port 5433 (login_db=appdb, login_user=rtx): ")
    assert error_text in exc.msg
    assert "s3cr3t" not in exc.msg


def test_real_psycopg2_connection_refused_is_server_down(monkeypatch):
    pytest.importorskip("psycopg2")
    monkeypatch.setitem(sys.modules, "psycopg", None)
    params = dict(FULL_PARAMS, login_host="127.0.0.1", login_port=free_port(), ssl_mode="disable", ca_cert=None)
    with pytest.raises(ConnectionFailedError) as info:
        postgres.connect(params)
    assert info.value.server_down is True
    assert info.value.details["reason"] == "unreachable"
    assert "s3cr3t" not in str(info.value)


# --------------------------------------------------------------------------
# Query helpers with a fake DB-API connection
# --------------------------------------------------------------------------


class FakeColumn(tuple):
    """psycopg 3 style column: has .name."""

    @property
    def name(self):
        return self[0]


class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.description = None
        self.rowcount = -1
        self._rows = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.conn.closed_cursors += 1

    def execute(self, sql, params=None):
        self.conn.executed.append((sql, params))
        if self.conn.error is not None:
            raise self.conn.error
        self.description = self.conn.description
        self._rows = list(self.conn.rows)
        self.rowcount = len(self._rows) if self.description else 3

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def fetchall(self):
        return self._rows


class FakeDbConnection:
    def __init__(self, description=None, rows=(), error=None):
        self.description = description
        self.rows = rows
        self.error = error
        self.executed = []
        self.closed_cursors = 0

    def cursor(self):
        return FakeCursor(self)


def test_query_one_and_all_return_dicts_with_tuple_description():
    conn = FakeDbConnection(description=[("a", 23), ("b", 25)], rows=[(1, "x"), (2, "y")])
    assert postgres.query_one(conn, "SELECT %s", (1,)) == {"a": 1, "b": "x"}
    assert postgres.query_all(conn, "SELECT") == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert conn.executed == [("SELECT %s", (1,)), ("SELECT", None)]
    assert conn.closed_cursors == 2


def test_query_helpers_with_named_columns_and_no_rows():
    conn = FakeDbConnection(description=[FakeColumn(("lsn", 3220))], rows=[])
    assert postgres.query_one(conn, "SELECT") is None
    assert postgres.query_all(conn, "SELECT") == []


def test_execute_returns_rowcount_and_query_without_result():
    conn = FakeDbConnection(description=None)
    assert postgres.execute(conn, "CHECKPOINT") == 3
    assert postgres.query_one(conn, "CHECKPOINT") is None
    assert postgres.query_all(conn, "CHECKPOINT") == []


def test_query_error_is_wrapped_with_sqlstate_and_privilege_hint():
    err = FakeDriverError("permission denied for function pg_control_system")
    err.sqlstate = "42501"
    conn = FakeDbConnection(error=err)
    with pytest.raises(QueryFailedError) as info:
        postgres.query_one(conn, "SELECT * FROM pg_control_system()")
    assert info.value.details == {"query": "SELECT * FROM pg_control_system()", "sqlstate": "42501"}
    assert "pg_monitor" in info.value.hint
    assert "permission denied" in info.value.msg


def test_query_error_psycopg2_pgcode():
    err = FakeDriverError('relation "nope" does not exist')
    err.pgcode = "42P01"
    with pytest.raises(QueryFailedError) as info:
        postgres.query_all(FakeDbConnection(error=err), "SELECT * FROM nope")
    assert info.value.details["sqlstate"] == "42P01"


def test_close_quietly():
    postgres.close_quietly(None)
    conn = FakeConnection()
    postgres.close_quietly(conn)
    assert conn.closed

    class Broken:
        def close(self):
            raise RuntimeError("already closed")

    postgres.close_quietly(Broken())


# --------------------------------------------------------------------------
# LSN arithmetic
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("0/0", 0),
        ("0/3000060", 0x3000060),
        ("16/B374D848", 0x16B374D848),  # the example in PostgreSQL's pg_lsn documentation
        ("16/b374d848", 0x16B374D848),
        ("0/03000060", 0x3000060),  # PostgreSQL 18 prints the low part zero padded
        ("FFFFFFFF/FFFFFFFF", 2 ** 64 - 1),
        (" 1/0 ", 1 << 32),
    ],
)
def test_parse_lsn(text, value):
    assert parse_lsn(text) == value


@pytest.mark.parametrize("bad", ["", "0", "0/", "/0", "G/0", "0/1/2", "123456789/0", "0/123456789", "-1/0", None, -1, 2 ** 64, True, 1.5])
def test_parse_lsn_rejects_invalid(bad):
    with pytest.raises(InvalidValueError):
        parse_lsn(bad)
    with pytest.raises(ValueError):
        parse_lsn(bad)


def test_parse_lsn_accepts_int_and_bytes():
    assert parse_lsn(0x3000060) == 0x3000060
    assert parse_lsn(b"0/3000060") == 0x3000060


@pytest.mark.parametrize(
    "value, text",
    [(0, "0/0"), (0x3000060, "0/3000060"), (0x16B374D848, "16/B374D848"), (2 ** 64 - 1, "FFFFFFFF/FFFFFFFF"), (1 << 32, "1/0")],
)
def test_format_lsn(value, text):
    assert format_lsn(value) == text
    assert parse_lsn(format_lsn(value)) == value


def test_format_lsn_normalises_text():
    assert format_lsn("0/03000060") == "0/3000060"
    assert format_lsn("16/b374d848") == "16/B374D848"


def test_lsn_diff_like_pg_wal_lsn_diff():
    assert lsn_diff("0/3000060", "0/3000000") == 0x60
    assert lsn_diff("0/3000000", "0/3000060") == -0x60
    assert lsn_diff("1/0", "0/FFFFFFFF") == 1
    assert lsn_diff("16/B374D848", 0) == 0x16B374D848
    assert lsn_diff(0x100, "0/80") == 0x80


# --------------------------------------------------------------------------
# WAL segment names
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timeline, lsn, size, name",
    [
        (1, "0/3000060", 16 * MIB, "000000010000000000000003"),
        (1, "0/0", 16 * MIB, "000000010000000000000000"),
        (1, "16/B374D848", 16 * MIB, "0000000100000016000000B3"),
        (2, "0/FFFFFFFF", 16 * MIB, "0000000200000000000000FF"),
        (2, "1/0", 16 * MIB, "000000020000000100000000"),
        (0x1A, "0/3000000", 16 * MIB, "0000001A0000000000000003"),  # a boundary belongs to the segment it starts
        (1, "1/FC000000", 64 * MIB, "00000001000000010000003F"),
        (1, "0/1FFFFF", 1 * MIB, "000000010000000000000001"),
        (1, "5/40000000", 1024 * MIB, "000000010000000500000001"),
        (0xFFFFFFFF, "FFFFFFFF/FFFFFFFF", 16 * MIB, "FFFFFFFFFFFFFFFF000000FF"),
    ],
)
def test_wal_segment_name(timeline, lsn, size, name):
    assert wal_segment_name(timeline, lsn, wal_segment_size=size) == name
    segment = parse_wal_segment_name(name, wal_segment_size=size)
    assert segment.timeline == timeline
    assert segment.start_lsn <= parse_lsn(lsn) < segment.end_lsn


def test_wal_segment_name_end_position_like_pg_walfile_name():
    # pg_walfile_name('0/3000000') is ...02: an end position on a boundary is the previous segment.
    assert wal_segment_name(1, "0/3000000", end_position=True) == "000000010000000000000002"
    assert wal_segment_name(1, "0/3000001", end_position=True) == "000000010000000000000003"
    assert wal_segment_name(1, "1/0", end_position=True) == "0000000100000000000000FF"
    with pytest.raises(InvalidValueError):
        wal_segment_name(1, "0/0", end_position=True)


@pytest.mark.parametrize("timeline", [0, -1, 2 ** 32, "1", None, True])
def test_wal_segment_name_rejects_bad_timeline(timeline):
    with pytest.raises(InvalidValueError):
        wal_segment_name(timeline, "0/0")


@pytest.mark.parametrize("size", [0, 8 * 1024, 3 * MIB, 2048 * MIB, 16.0 * MIB, "16MB", None])
def test_wal_segment_name_rejects_bad_segment_size(size):
    with pytest.raises(InvalidValueError) as info:
        wal_segment_name(1, "0/0", wal_segment_size=size)
    assert "power of two" in info.value.msg


def test_parse_wal_segment_name():
    segment = parse_wal_segment_name("0000000200000016000000B3")
    assert segment == ("0000000200000016000000B3", 2, 0x16B3, 0x16B3000000, 0x16B4000000)
    assert segment.name == "0000000200000016000000B3"
    assert segment.timeline == 2
    assert segment.segno == 0x16B3
    assert format_lsn(segment.start_lsn) == "16/B3000000"
    assert format_lsn(segment.end_lsn) == "16/B4000000"
    big = parse_wal_segment_name("00000001000000010000003F", wal_segment_size=64 * MIB)
    assert big.segno == 64 + 0x3F
    assert format_lsn(big.start_lsn) == "1/FC000000"


@pytest.mark.parametrize(
    "name",
    [
        "00000001000000000000000",  # 23 characters
        "0000000100000000000000030",
        "0000000100000000000000b3",  # PostgreSQL names are upper case only
        "000000010000000000000003.partial",
        "000000010000000000000003.00000028.backup",
        "00000002.history",
        "000000000000000000000003",  # timeline 0
        "000000010000000000000100",  # segment part 0x100 > 0xFF for 16 MiB segments
        None,
    ],
)
def test_parse_wal_segment_name_rejects(name):
    with pytest.raises(InvalidValueError):
        parse_wal_segment_name(name)


def test_segment_part_limit_depends_on_segment_size():
    # 0x100 segments per 4 GiB of WAL with 16 MiB segments, 0x1000 with 1 MiB ones.
    assert parse_wal_segment_name("000000010000000000000100", wal_segment_size=MIB).segno == 0x100
    with pytest.raises(InvalidValueError):
        parse_wal_segment_name("000000010000000000000040", wal_segment_size=64 * MIB)


def test_is_wal_segment_name():
    assert is_wal_segment_name("000000010000000000000003")
    assert not is_wal_segment_name("000000010000000000000003.partial")
    assert not is_wal_segment_name("00000002.history")
    assert not is_wal_segment_name(None)


def test_timeline_history_file_name():
    assert timeline_history_file_name(2) == "00000002.history"
    assert timeline_history_file_name(0x1A) == "0000001A.history"
    with pytest.raises(InvalidValueError):
        timeline_history_file_name(0)


# --------------------------------------------------------------------------
# Against a real PostgreSQL server (skipped when the binaries are missing)
# --------------------------------------------------------------------------


@pytest.fixture(params=["psycopg", "psycopg2"])
def pg_driver(request, monkeypatch):
    """Run a test with each driver that is installed (psycopg 3 is preferred when both are)."""
    pytest.importorskip(request.param)
    if request.param == "psycopg2":
        monkeypatch.setitem(sys.modules, "psycopg", None)
    return request.param


def test_real_connect_and_query_helpers(pg_cluster, pg_driver):
    conn = postgres.connect(pg_cluster.params())
    try:
        assert postgres.driver_name(conn) == pg_driver
        assert conn.autocommit is True
        row = postgres.query_one(conn, "SELECT current_user AS who, %s::int AS n, %s::text AS x", (7, "y"))
        assert row == {"who": "postgres", "n": 7, "x": "y"}
        rows = postgres.query_all(conn, "SELECT g AS n FROM generate_series(1, 3) AS g")
        assert rows == [{"n": 1}, {"n": 2}, {"n": 3}]
        postgres.execute(conn, "CREATE TEMP TABLE t (n int)")
        assert postgres.execute(conn, "INSERT INTO t SELECT generate_series(1, 4)") == 4
        app = postgres.query_one(conn, "SELECT current_setting('application_name') AS a")["a"]
        assert app == "rtx.dr"
        with pytest.raises(QueryFailedError) as info:
            postgres.query_one(conn, "SELECT * FROM no_such_table")
        assert info.value.details["sqlstate"] == "42P01"
        # autocommit: the failed statement does not poison the connection
        assert postgres.query_one(conn, "SELECT 1 AS one") == {"one": 1}
    finally:
        postgres.close_quietly(conn)


def test_real_named_placeholders(pg_cluster, pg_driver):  # pylint: disable=unused-argument
    conn = postgres.connect(pg_cluster.params())
    try:
        assert postgres.query_one(conn, "SELECT %(a)s::int + %(b)s::int AS s", {"a": 2, "b": 3}) == {"s": 5}
    finally:
        conn.close()


def test_real_unix_socket(pg_cluster):
    conn = postgres.connect(pg_cluster.params(login_host=None, login_unix_socket=pg_cluster.base, login_password=None))
    try:
        assert postgres.query_one(conn, "SELECT inet_server_addr() IS NULL AS via_socket") == {"via_socket": True}
    finally:
        conn.close()


def test_real_wrong_password_is_authentication_error(pg_cluster, pg_driver):  # pylint: disable=unused-argument
    with pytest.raises(ConnectionFailedError) as info:
        postgres.connect(pg_cluster.params(login_password="wrong"))
    assert info.value.details["reason"] == "authentication"
    assert info.value.server_down is False
    assert "wrong" not in info.value.msg.replace("wrong password", "")


def test_real_unknown_database_is_configuration_error(pg_cluster):
    with pytest.raises(ConnectionFailedError) as info:
        postgres.connect(pg_cluster.params(login_db="no_such_db"))
    assert info.value.details["reason"] == "configuration"
    assert "login_db" in info.value.hint


def test_wal_names_match_pg_walfile_name(pg_cluster):
    lsns = [
        "0/1", "0/FFFFFF", "0/1000000", "0/1000001", "0/3000060", "0/FFFFFFFF", "1/0",
        "1/1", "16/B374D848", "16/B3000000", "FF/FF000000", "FFFFFFFF/FFFFFFFE",
    ]
    conn = postgres.connect(pg_cluster.params())
    try:
        for lsn in lsns:
            # pg_walfile_name() and pg_walfile_name_offset() treat the LSN as an end
            # position (XLByteToPrevSeg); for the segment holding the byte at lsn
            # (XLByteToSeg) ask for lsn + 1.
            row = postgres.query_one(
                conn,
                "SELECT pg_walfile_name(%(lsn)s::pg_lsn) AS end_name,"
                " (pg_walfile_name_offset(%(lsn)s::pg_lsn)).file_name AS end_name_offset,"
                " pg_walfile_name(%(lsn)s::pg_lsn + 1) AS start_name,"
                " pg_wal_lsn_diff(%(lsn)s::pg_lsn, '0/0')::text AS diff, %(lsn)s::pg_lsn::text AS canonical",
                {"lsn": lsn},
            )
            timeline = parse_wal_segment_name(row["end_name"]).timeline
            assert timeline == 1
            assert wal_segment_name(timeline, lsn) == row["start_name"], lsn
            assert wal_segment_name(timeline, lsn, end_position=True) == row["end_name"], lsn
            assert wal_segment_name(timeline, lsn, end_position=True) == row["end_name_offset"], lsn
            assert parse_lsn(lsn) == int(row["diff"]), lsn
            assert format_lsn(lsn) == row["canonical"], lsn
        row = postgres.query_one(
            conn,
            "SELECT pg_current_wal_lsn()::text AS lsn, pg_walfile_name(pg_current_wal_lsn()) AS name,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/3000060')::text AS diff",
        )
        assert wal_segment_name(1, row["lsn"], end_position=True) == row["name"]
        assert lsn_diff(row["lsn"], "0/3000060") == int(row["diff"])
    finally:
        conn.close()


# --------------------------------------------------------------------------
# pg_controldata
# --------------------------------------------------------------------------

CONTROLDATA_TEXT = """pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7312345678901234567
Database cluster state:               in production
pg_control last modified:             Fri 27 Nov 2026 03:15:00 AM UTC
Latest checkpoint location:           0/5000060
Latest checkpoint's TimeLineID:       3
Latest checkpoint's PrevTimeLineID:   2
Mock authentication nonce:
"""


def test_parse_controldata_labels_and_values():
    fields = postgres.parse_controldata(CONTROLDATA_TEXT)
    assert fields["Database system identifier"] == "7312345678901234567"
    assert fields["Database cluster state"] == "in production"
    assert fields["Latest checkpoint's TimeLineID"] == "3"
    assert fields["Latest checkpoint location"] == "0/5000060"
    assert fields["pg_control last modified"] == "Fri 27 Nov 2026 03:15:00 AM UTC"  # colons in the value kept
    assert fields["Mock authentication nonce"] == ""


def test_parse_controldata_of_nothing_and_garbage():
    assert postgres.parse_controldata(None) == {}
    assert postgres.parse_controldata("") == {}
    assert postgres.parse_controldata("garbage\nno labels here") == {}
    assert postgres.parse_controldata("A: 1\nA: 2\n") == {"A": "2"}

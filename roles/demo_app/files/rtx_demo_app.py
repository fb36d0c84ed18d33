# -*- coding: utf-8 -*-
# Copyright: (c) rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""rtx-demo-app: a tiny stand-in for the trading engine used in DR drills.

It writes one row per tick into ``demo.orders`` on whichever PostgreSQL server
is currently the read-write primary (libpq multi-host connection string with
``target_session_attrs=read-write``), records every acknowledged sequence
number in an append-only file, probes Redis, and exposes its state over HTTP
(``/health``, ``/metrics``) and a WebSocket (``/ws``).

Python 3.11 standard library only, plus psycopg2 (Debian: python3-psycopg2).

Configuration is read from environment variables only (systemd loads them from
EnvironmentFile=); secrets never appear on the command line.  See
``CONFIG_SPEC`` below or run ``rtx_demo_app.py --help-config``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

try:  # psycopg2 is imported lazily-tolerant so --version / --help-config work without it
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover - exercised only on broken hosts
    psycopg2 = None

__version__ = "1.0.0"

LOG = logging.getLogger("rtx-demo-app")

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

INSERT_SQL = "INSERT INTO demo.orders (host, seq, payload) VALUES (%s, %s, %s)"
PROBE_SQL = "SELECT pg_is_in_recovery(), inet_server_addr()::text, current_setting('cluster_name', true)"

# name, default, description -- the single source of truth for the config interface
CONFIG_SPEC = [
    ("RTX_DEMO_DB_HOSTS", "localhost", "Comma-separated PostgreSQL hosts, tried in order (libpq multi-host)."),
    ("RTX_DEMO_DB_PORTS", "5432", "Comma-separated ports: one for all hosts, or one per host."),
    ("RTX_DEMO_DB_NAME", "rtx", "Database name."),
    ("RTX_DEMO_DB_USER", "rtx_demo", "Login role."),
    ("RTX_DEMO_DB_PASSWORD", "", "Password (keep it in a root-only EnvironmentFile)."),
    ("RTX_DEMO_DB_PASSWORD_FILE", "", "Alternative: read the password from this file (e.g. a systemd credential)."),
    ("RTX_DEMO_DB_SSLMODE", "require", "libpq sslmode."),
    ("RTX_DEMO_DB_SSLROOTCERT", "", "libpq sslrootcert (CA bundle for sslmode verify-ca/verify-full)."),
    ("RTX_DEMO_DB_TARGET_SESSION_ATTRS", "read-write", "libpq target_session_attrs."),
    ("RTX_DEMO_DB_CONNECT_TIMEOUT", "3", "libpq connect_timeout per host, seconds (libpq minimum is 2)."),
    ("RTX_DEMO_DB_APPLICATION_NAME", "rtx-demo-app", "application_name shown in pg_stat_activity."),
    ("RTX_DEMO_DB_TCP_USER_TIMEOUT_MS", "10000", "libpq tcp_user_timeout (0 = kernel default)."),
    ("RTX_DEMO_WRITE_INTERVAL_MS", "200", "Interval between writes."),
    ("RTX_DEMO_RECONNECT_BACKOFF_MIN_MS", "200", "First reconnect delay after a failure."),
    ("RTX_DEMO_RECONNECT_BACKOFF_MAX_MS", "2000", "Reconnect delay cap (exponential backoff with jitter)."),
    ("RTX_DEMO_INSTANCE", "", "Value written to demo.orders.host (default: the machine's hostname)."),
    ("RTX_DEMO_REGION", "unknown", "Region reported in /health."),
    ("RTX_DEMO_STATE_DIR", "/var/lib/rtx-demo", "Directory of the acknowledged-seq log."),
    ("RTX_DEMO_ACKED_LOG", "", "Path of the acknowledged-seq log (default: STATE_DIR/acked.log)."),
    ("RTX_DEMO_ACKED_LOG_FSYNC", "false", "fsync() the acked log after every line."),
    ("RTX_DEMO_HTTP_BIND", "0.0.0.0", "HTTP listen address."),
    ("RTX_DEMO_HTTP_PORT", "8080", "HTTP listen port."),
    ("RTX_DEMO_HEALTH_MAX_AGE_S", "5", "/health is 200 only if the last write succeeded within this many seconds."),
    ("RTX_DEMO_WS_INTERVAL_MS", "1000", "Interval between WebSocket health frames."),
    ("RTX_DEMO_WS_MAX_CLIENTS", "32", "Maximum concurrent WebSocket clients."),
    ("RTX_DEMO_REDIS_ENABLED", "true", "Probe Redis with PING."),
    ("RTX_DEMO_REDIS_HOST", "127.0.0.1", "Redis host."),
    ("RTX_DEMO_REDIS_PORT", "6379", "Redis port."),
    ("RTX_DEMO_REDIS_PASSWORD", "", "Redis requirepass (AUTH), empty for none."),
    ("RTX_DEMO_REDIS_TIMEOUT_MS", "500", "Redis socket timeout."),
    ("RTX_DEMO_REDIS_INTERVAL_MS", "", "Redis PING interval (default: the write interval)."),
    ("RTX_DEMO_LOG_LEVEL", "INFO", "Python logging level."),
]


class ConfigError(ValueError):
    """Invalid configuration."""


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError("not a boolean: %r" % value)


def _int(name: str, value: str, minimum: int = 0) -> int:
    try:
        result = int(value.strip())
    except ValueError:
        raise ConfigError("%s must be an integer, got %r" % (name, value)) from None
    if result < minimum:
        raise ConfigError("%s must be >= %d, got %d" % (name, minimum, result))
    return result


def _split(value: str) -> list:
    return [item.strip() for item in value.split(",") if item.strip()]


class Config:
    """Validated configuration (attributes are lower-case, without the RTX_DEMO_ prefix)."""

    def __init__(self, environ):
        raw = {}
        for key, default, _doc in CONFIG_SPEC:
            raw[key] = environ.get(key, default)
        self.raw = raw

        self.db_hosts = _split(raw["RTX_DEMO_DB_HOSTS"])
        if not self.db_hosts:
            raise ConfigError("RTX_DEMO_DB_HOSTS is empty")
        ports = _split(raw["RTX_DEMO_DB_PORTS"])
        for port in ports:
            _int("RTX_DEMO_DB_PORTS", port, 1)
        if len(ports) == 1:
            ports = ports * len(self.db_hosts)
        if len(ports) != len(self.db_hosts):
            raise ConfigError("RTX_DEMO_DB_PORTS must list one port or one port per host")
        self.db_ports = ports
        self.db_name = raw["RTX_DEMO_DB_NAME"]
        self.db_user = raw["RTX_DEMO_DB_USER"]
        self.db_password = raw["RTX_DEMO_DB_PASSWORD"]
        if not self.db_password and raw["RTX_DEMO_DB_PASSWORD_FILE"]:
            try:
                with open(raw["RTX_DEMO_DB_PASSWORD_FILE"], encoding="utf-8") as handle:
                    self.db_password = handle.read().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError("cannot read RTX_DEMO_DB_PASSWORD_FILE: %s" % exc) from None
        self.db_sslmode = raw["RTX_DEMO_DB_SSLMODE"]
        self.db_sslrootcert = raw["RTX_DEMO_DB_SSLROOTCERT"]
        self.db_target_session_attrs = raw["RTX_DEMO_DB_TARGET_SESSION_ATTRS"]
        self.db_connect_timeout = _int("RTX_DEMO_DB_CONNECT_TIMEOUT", raw["RTX_DEMO_DB_CONNECT_TIMEOUT"], 0)
        self.db_application_name = raw["RTX_DEMO_DB_APPLICATION_NAME"]
        self.db_tcp_user_timeout_ms = _int(
            "RTX_DEMO_DB_TCP_USER_TIMEOUT_MS", raw["RTX_DEMO_DB_TCP_USER_TIMEOUT_MS"], 0)
        self.write_interval = _int("RTX_DEMO_WRITE_INTERVAL_MS", raw["RTX_DEMO_WRITE_INTERVAL_MS"], 1) / 1000.0
        self.backoff_min = _int(
            "RTX_DEMO_RECONNECT_BACKOFF_MIN_MS", raw["RTX_DEMO_RECONNECT_BACKOFF_MIN_MS"], 1) / 1000.0
        self.backoff_max = max(self.backoff_min, _int(
            "RTX_DEMO_RECONNECT_BACKOFF_MAX_MS", raw["RTX_DEMO_RECONNECT_BACKOFF_MAX_MS"], 1) / 1000.0)
        self.instance = raw["RTX_DEMO_INSTANCE"] or socket.gethostname()
        self.region = raw["RTX_DEMO_REGION"]
        self.state_dir = raw["RTX_DEMO_STATE_DIR"]
        self.acked_log = raw["RTX_DEMO_ACKED_LOG"] or os.path.join(self.state_dir, "acked.log")
        self.acked_log_fsync = _bool(raw["RTX_DEMO_ACKED_LOG_FSYNC"])
        self.http_bind = raw["RTX_DEMO_HTTP_BIND"]
        self.http_port = _int("RTX_DEMO_HTTP_PORT", raw["RTX_DEMO_HTTP_PORT"], 0)
        self.health_max_age = float(_int("RTX_DEMO_HEALTH_MAX_AGE_S", raw["RTX_DEMO_HEALTH_MAX_AGE_S"], 1))
        self.ws_interval = _int("RTX_DEMO_WS_INTERVAL_MS", raw["RTX_DEMO_WS_INTERVAL_MS"], 10) / 1000.0
        self.ws_max_clients = _int("RTX_DEMO_WS_MAX_CLIENTS", raw["RTX_DEMO_WS_MAX_CLIENTS"], 1)
        self.redis_enabled = _bool(raw["RTX_DEMO_REDIS_ENABLED"])
        self.redis_host = raw["RTX_DEMO_REDIS_HOST"]
        self.redis_port = _int("RTX_DEMO_REDIS_PORT", raw["RTX_DEMO_REDIS_PORT"], 1)
        self.redis_password = raw["RTX_DEMO_REDIS_PASSWORD"]
        self.redis_timeout = _int("RTX_DEMO_REDIS_TIMEOUT_MS", raw["RTX_DEMO_REDIS_TIMEOUT_MS"], 1) / 1000.0
        if raw["RTX_DEMO_REDIS_INTERVAL_MS"]:
            self.redis_interval = _int("RTX_DEMO_REDIS_INTERVAL_MS", raw["RTX_DEMO_REDIS_INTERVAL_MS"], 10) / 1000.0
        else:
            self.redis_interval = self.write_interval
        self.log_level = raw["RTX_DEMO_LOG_LEVEL"].upper()

    def dsn_params(self) -> dict:
        """libpq connection parameters, without the password."""
        params = {
            "host": ",".join(self.db_hosts),
            "port": ",".join(self.db_ports),
            "dbname": self.db_name,
            "user": self.db_user,
            "sslmode": self.db_sslmode,
            "target_session_attrs": self.db_target_session_attrs,
            "connect_timeout": str(self.db_connect_timeout),
            "application_name": self.db_application_name,
            "keepalives": "1",
            "keepalives_idle": "5",
            "keepalives_interval": "2",
            "keepalives_count": "3",
        }
        if self.db_tcp_user_timeout_ms:
            params["tcp_user_timeout"] = str(self.db_tcp_user_timeout_ms)
        if self.db_sslrootcert:
            params["sslrootcert"] = self.db_sslrootcert
        return params

    def dsn(self) -> str:
        """libpq conninfo string, without the password."""
        return make_conninfo(self.dsn_params())


def make_conninfo(params: dict) -> str:
    """Render a libpq key=value conninfo string with proper quoting."""
    parts = []
    for key, value in params.items():
        value = str(value)
        if value == "" or any(ch in value for ch in " '\\\t\n"):
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        parts.append("%s=%s" % (key, value))
    return " ".join(parts)


def ws_accept_key(key: str) -> str:
    """RFC 6455 section 4.2.2: base64(sha1(key + GUID))."""
    digest = hashlib.sha1((key.strip() + WS_GUID).encode("ascii")).digest()  # nosec - mandated by RFC 6455
    return base64.b64encode(digest).decode("ascii")


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """Encode one unmasked, unfragmented server-to-client frame."""
    header = bytearray([0x80 | (opcode & 0x0F)])
    length = len(payload)
    if length < 126:
        header.append(length)
    elif length < 65536:
        header.append(126)
        header += struct.pack("!H", length)
    else:
        header.append(127)
        header += struct.pack("!Q", length)
    return bytes(header) + payload


def _iso(ts):
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).isoformat(timespec="milliseconds")


def read_last_seq(path: str):
    """Return the last integer line of the acked log, or None."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            tail = handle.read().decode("ascii", "replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(tail):
        line = line.strip()
        if line.isdigit():
            return int(line)
    return None


class AckLog:
    """Append-only log of acknowledged sequence numbers, one per line."""

    def __init__(self, path: str, fsync: bool = False):
        self.path = path
        self.fsync = fsync
        self.fd = None
        self.errors = 0

    def open(self):
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def append(self, seq: int):
        try:
            if self.fd is None:
                self.open()
            os.write(self.fd, b"%d\n" % seq)  # single write(2) on an O_APPEND fd: nothing buffered in-process
            if self.fsync:
                os.fsync(self.fd)
        except OSError as exc:
            self.errors += 1
            LOG.error("cannot append seq %d to %s: %s", seq, self.path, exc)
            self.close()

    def close(self):
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


class State:
    """Thread-safe shared state for the writer, the Redis probe and HTTP."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.started_at = time.time()
        self.connected = False
        self.db_host = None
        self.db_port = None
        self.db_server_addr = None
        self.db_cluster_name = None
        self.db_ssl = None
        self.in_recovery = None
        self.last_write_at = None          # wall clock of the last acknowledged commit
        self.last_write_mono = None        # monotonic clock of the same
        self.last_error = None
        self.last_error_at = None
        self.writes_ok = 0
        self.writes_failed = 0
        self.connects = 0
        self.last_acked_seq = None
        self.redis_ok = False
        self.redis_error = None
        self.redis_checked_at = None
        self.ws_clients = 0

    def healthy(self) -> bool:
        with self.lock:
            return self._healthy()

    def _healthy(self) -> bool:
        return (self.last_write_mono is not None
                and time.monotonic() - self.last_write_mono <= self.cfg.health_max_age)

    def snapshot(self) -> dict:
        with self.lock:
            healthy = self._healthy()
            age = None if self.last_write_mono is None else round(time.monotonic() - self.last_write_mono, 3)
            return {
                "status": "ok" if healthy else "degraded",
                "db": {
                    "connected": self.connected,
                    "host": self.db_host,
                    "port": self.db_port,
                    "server_addr": self.db_server_addr,
                    "cluster_name": self.db_cluster_name,
                    "ssl": self.db_ssl,
                    "in_recovery": self.in_recovery,
                    "last_write_at": _iso(self.last_write_at),
                    "last_write_age_s": age,
                    "writes_ok": self.writes_ok,
                    "writes_failed": self.writes_failed,
                    "last_acked_seq": self.last_acked_seq,
                    "connects": self.connects,
                    "last_error": self.last_error,
                    "last_error_at": _iso(self.last_error_at),
                },
                "redis": {
                    "ok": self.redis_ok,
                    "enabled": self.cfg.redis_enabled,
                    "error": self.redis_error,
                    "checked_at": _iso(self.redis_checked_at),
                },
                "instance": self.cfg.instance,
                "region": self.cfg.region,
                "version": __version__,
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started_at, 3),
                "time": _iso(time.time()),
            }

    def metrics(self) -> str:
        with self.lock:
            healthy = self._healthy()
            lines = []

            def metric(name, mtype, help_text, samples):
                lines.append("# HELP %s %s" % (name, help_text))
                lines.append("# TYPE %s %s" % (name, mtype))
                for labels, value in samples:
                    lines.append("%s%s %s" % (name, labels, value))

            metric("rtx_demo_writes_total", "counter", "Demo order writes by result.",
                   [('{result="ok"}', self.writes_ok), ('{result="failed"}', self.writes_failed)])
            metric("rtx_demo_last_write_timestamp_seconds", "gauge",
                   "Unix time of the last acknowledged write (0 if none).",
                   [("", "%.3f" % (self.last_write_at or 0.0))])
            metric("rtx_demo_db_connected", "gauge", "1 if connected to a read-write PostgreSQL server.",
                   [("", 1 if self.connected else 0)])
            metric("rtx_demo_last_acked_seq", "gauge", "Last acknowledged sequence number (-1 if none).",
                   [("", -1 if self.last_acked_seq is None else self.last_acked_seq)])
            metric("rtx_demo_db_connects_total", "counter", "Successful PostgreSQL connections.",
                   [("", self.connects)])
            metric("rtx_demo_redis_up", "gauge", "1 if the last Redis PING succeeded.",
                   [("", 1 if self.redis_ok else 0)])
            metric("rtx_demo_healthy", "gauge", "1 if /health would return 200.", [("", 1 if healthy else 0)])
            metric("rtx_demo_websocket_clients", "gauge", "Connected WebSocket clients.", [("", self.ws_clients)])
            metric("rtx_demo_info", "gauge", "Static information.",
                   [('{version="%s",region="%s",instance="%s"}' % (
                       _label(__version__), _label(self.cfg.region), _label(self.cfg.instance)), 1)])
            return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Writer(threading.Thread):
    """Writes one row per tick to the current primary; reconnects with backoff."""

    def __init__(self, cfg: Config, state: State, acklog: AckLog, stop: threading.Event):
        super().__init__(name="db-writer", daemon=True)
        self.cfg = cfg
        self.state = state
        self.acklog = acklog
        self.stop = stop
        self.conn = None
        # seq is strictly increasing within this process and, as it starts from
        # the wall clock in microseconds, also across restarts of the service
        # (a process never does more than one write per microsecond).  The last
        # acknowledged seq from the log is a floor in case the clock went back.
        last = read_last_seq(acklog.path)
        self.state.last_acked_seq = last
        self.next_seq = max(time.time_ns() // 1000, (last or 0) + 1)
        self.pid = os.getpid()

    def _connect(self):
        if psycopg2 is None:
            raise RuntimeError("psycopg2 is not installed (Debian package python3-psycopg2)")
        conn = psycopg2.connect(self.cfg.dsn(), password=self.cfg.db_password or None)
        try:
            with conn.cursor() as cur:
                cur.execute(PROBE_SQL)
                in_recovery, server_addr, cluster_name = cur.fetchone()
            conn.commit()
            info = conn.info
            with self.state.lock:
                self.state.connected = True
                self.state.connects += 1
                self.state.db_host = info.host
                self.state.db_port = int(info.port) if str(info.port).isdigit() else info.port
                self.state.db_server_addr = server_addr
                self.state.db_cluster_name = cluster_name or None
                self.state.db_ssl = bool(getattr(info, "ssl_in_use", False))
                self.state.in_recovery = bool(in_recovery)
        except Exception:
            conn.close()
            raise
        LOG.info("connected to %s:%s (server %s, cluster %s, in_recovery=%s, ssl=%s)",
                 self.state.db_host, self.state.db_port, server_addr, cluster_name or "-",
                 in_recovery, self.state.db_ssl)
        self.conn = conn

    def _disconnect(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way it likes
                pass
            self.conn = None
        with self.state.lock:
            self.state.connected = False

    def _fail(self, exc: BaseException):
        message = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        with self.state.lock:
            self.state.writes_failed += 1
            first = self.state.last_error is None
            self.state.last_error = message
            self.state.last_error_at = time.time()
        if first:
            LOG.warning("write failed: %s", message)
        else:
            LOG.debug("write failed: %s", message)

    def write_once(self) -> bool:
        """One write attempt. Returns True if the commit was acknowledged."""
        if self.conn is None or self.conn.closed:
            try:
                self._connect()
            except Exception as exc:  # noqa: BLE001 - any failure means "not connected, retry later"
                self._disconnect()
                self._fail(exc)
                return False
        seq = self.next_seq
        self.next_seq += 1
        payload = json.dumps({"instance": self.cfg.instance, "region": self.cfg.region,
                              "pid": self.pid, "seq": seq, "ts": time.time()}, separators=(",", ":"))
        try:
            with self.conn.cursor() as cur:
                cur.execute(INSERT_SQL, (self.cfg.instance, seq, payload))
            self.conn.commit()
        except Exception as exc:  # noqa: BLE001 - outcome unknown: never count it as acknowledged
            self._disconnect()
            self._fail(exc)
            return False
        # COMMIT returned successfully: the write is acknowledged.
        self.acklog.append(seq)
        now = time.time()
        with self.state.lock:
            recovered = self.state.last_error is not None
            self.state.writes_ok += 1
            self.state.last_acked_seq = seq
            self.state.last_write_at = now
            self.state.last_write_mono = time.monotonic()
            self.state.in_recovery = False
            self.state.last_error = None
        if recovered:
            LOG.info("writes resumed on %s:%s (seq %d)", self.state.db_host, self.state.db_port, seq)
        return True

    def run(self):
        backoff = self.cfg.backoff_min
        next_tick = time.monotonic()
        while not self.stop.is_set():
            try:
                ok = self.write_once()
            except Exception:  # noqa: BLE001 - the writer must never die
                LOG.exception("unexpected error in writer loop")
                ok = False
            if ok:
                backoff = self.cfg.backoff_min
                next_tick += self.cfg.write_interval
                delay = next_tick - time.monotonic()
                if delay < 0:  # fell behind (slow commit): do not burst to catch up
                    next_tick = time.monotonic()
                    delay = 0
            else:
                delay = backoff * random.uniform(0.8, 1.2)  # nosec - jitter, not crypto
                backoff = min(self.cfg.backoff_max, backoff * 2)
                next_tick = time.monotonic() + delay
            self.stop.wait(delay)
        self._disconnect()


class RedisProbe(threading.Thread):
    """PINGs Redis with a minimal RESP client over a persistent socket."""

    def __init__(self, cfg: Config, state: State, stop: threading.Event):
        super().__init__(name="redis-probe", daemon=True)
        self.cfg = cfg
        self.state = state
        self.stop = stop
        self.sock = None
        self.buf = b""

    @staticmethod
    def encode(*args) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    def _readline(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed by Redis")
            self.buf += chunk
            if len(self.buf) > 65536:
                raise ConnectionError("oversized reply from Redis")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def command(self, *args) -> bytes:
        self.sock.sendall(self.encode(*args))
        line = self._readline()
        if line.startswith(b"-"):
            raise RuntimeError(line[1:].decode("utf-8", "replace"))
        if line.startswith(b"$"):  # bulk string reply (PING with an argument)
            length = int(line[1:])
            if length >= 0:
                while len(self.buf) < length + 2:
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("connection closed by Redis")
                    self.buf += chunk
                data, self.buf = self.buf[:length], self.buf[length + 2:]
                return data
            return b""
        return line[1:]

    def _close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def ping(self) -> bool:
        try:
            if self.sock is None:
                self.sock = socket.create_connection(
                    (self.cfg.redis_host, self.cfg.redis_port), timeout=self.cfg.redis_timeout)
                self.sock.settimeout(self.cfg.redis_timeout)
                if self.cfg.redis_password:
                    self.command("AUTH", self.cfg.redis_password)
            reply = self.command("PING")
            if reply != b"PONG":
                raise RuntimeError("unexpected PING reply %r" % reply[:50])
            error = None
        except Exception as exc:  # noqa: BLE001 - Redis is optional: report, never raise
            self._close()
            error = "%s: %s" % (type(exc).__name__, exc)
        with self.state.lock:
            changed = self.state.redis_ok != (error is None)
            self.state.redis_ok = error is None
            self.state.redis_error = error
            self.state.redis_checked_at = time.time()
        if changed:
            if error is None:
                LOG.info("redis %s:%s is up", self.cfg.redis_host, self.cfg.redis_port)
            else:
                LOG.warning("redis %s:%s is down: %s", self.cfg.redis_host, self.cfg.redis_port, error)
        return error is None

    def run(self):
        while not self.stop.is_set():
            try:
                self.ping()
            except Exception:  # noqa: BLE001 - the probe must never die
                LOG.exception("unexpected error in redis probe")
            self.stop.wait(self.cfg.redis_interval)
        self._close()


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler: /health, /metrics, /ws (WebSocket)."""

    protocol_version = "HTTP/1.1"
    server_version = "rtx-demo-app/" + __version__
    timeout = 30  # idle keep-alive connections do not pin a thread forever
    rbufsize = 0  # unbuffered: requests are tiny, and the WebSocket loop relies on select()

    # set by make_server()
    app_state: State = None
    app_stop: threading.Event = None

    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        LOG.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, extra_headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj):
        self._send(status, (json.dumps(obj, indent=None, sort_keys=True) + "\n").encode("utf-8"),
                   "application/json")

    def do_HEAD(self):  # noqa: N802 - http.server naming
        self.do_GET()

    def do_GET(self):  # noqa: N802 - http.server naming
        try:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            if path == "/health":
                snap = self.app_state.snapshot()
                self._send_json(200 if snap["status"] == "ok" else 503, snap)
            elif path == "/metrics":
                self._send(200, self.app_state.metrics().encode("utf-8"),
                           "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/ws":
                self._websocket()
            elif path == "/":
                self._send_json(200, {"service": "rtx-demo-app", "version": __version__,
                                      "endpoints": ["/health", "/metrics", "/ws"]})
            else:
                self._send_json(404, {"error": "not found"})
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - one bad request must never take the service down
            LOG.exception("error while handling %s %s", self.command, self.path)
            self.close_connection = True
            try:
                self._send_json(500, {"error": "internal error"})
            except Exception:  # noqa: BLE001 - headers may already be out; give up on this request
                pass

    # --- WebSocket (RFC 6455) -------------------------------------------------

    def _websocket(self):
        if self.command != "GET":
            self._send_json(405, {"error": "WebSocket upgrade needs GET"})
            return
        upgrade = self.headers.get("Upgrade", "").lower()
        connection = [t.strip().lower() for t in self.headers.get("Connection", "").split(",")]
        key = self.headers.get("Sec-WebSocket-Key", "").strip()
        if upgrade != "websocket" or "upgrade" not in connection or not key:
            self._send_json(400, {"error": "WebSocket upgrade required"})
            return
        try:
            if len(base64.b64decode(key, validate=True)) != 16:
                raise ValueError(key)
        except ValueError:
            self._send_json(400, {"error": "bad Sec-WebSocket-Key"})
            return
        if self.headers.get("Sec-WebSocket-Version", "").strip() != "13":
            self._send(426, b"", "text/plain", {"Sec-WebSocket-Version": "13"})
            return
        state = self.app_state
        with state.lock:
            if state.ws_clients >= state.cfg.ws_max_clients:
                full = True
            else:
                full = False
                state.ws_clients += 1
        if full:
            self._send_json(503, {"error": "too many WebSocket clients"})
            return
        try:
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", ws_accept_key(key))
            self.end_headers()
            self.close_connection = True
            self._ws_loop()
        finally:
            with state.lock:
                state.ws_clients -= 1

    def _ws_recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.connection.recv(n - len(data))
            if not chunk:
                raise ConnectionError("WebSocket peer went away")
            data += chunk
        return data

    def _ws_read_frame(self):
        b1, b2 = self._ws_recv_exact(2)
        opcode = b1 & 0x0F
        masked = b2 & 0x80
        length = b2 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._ws_recv_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._ws_recv_exact(8))[0]
        if length > 1 << 16:
            raise ConnectionError("WebSocket frame too large")
        mask = self._ws_recv_exact(4) if masked else b"\0\0\0\0"
        data = bytearray(self._ws_recv_exact(length))
        for i in range(length):
            data[i] ^= mask[i % 4]
        return opcode, bytes(data)

    def _ws_loop(self):
        # rfile is unbuffered (rbufsize = 0), so select() on the socket sees every pending byte.
        sock = self.connection
        sock.settimeout(10)  # bounds a single send/recv; idleness is handled by select below
        interval = self.app_state.cfg.ws_interval
        next_send = 0.0
        while not self.app_stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                frame = ws_frame(json.dumps(self.app_state.snapshot(), sort_keys=True).encode("utf-8"))
                self.wfile.write(frame)
                next_send = now + interval
            wait = max(0.0, min(next_send - time.monotonic(), 0.5))
            readable = select.select([sock], [], [], wait)[0]
            if not readable:
                continue
            opcode, payload = self._ws_read_frame()
            if opcode == 0x8:  # close: echo the status code and stop
                self.wfile.write(ws_frame(payload[:2], 0x8))
                return
            if opcode == 0x9:  # ping
                self.wfile.write(ws_frame(payload[:125], 0xA))
            # text/binary/pong/continuation frames from the client are ignored
        try:  # server shutting down: 1001 going away
            self.wfile.write(ws_frame(struct.pack("!H", 1001), 0x8))
        except OSError:
            pass


def make_server(cfg: Config, state: State, stop: threading.Event) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"app_state": state, "app_stop": stop})
    family = socket.AF_INET6 if ":" in cfg.http_bind else socket.AF_INET
    server_cls = type("Server", (ThreadingHTTPServer,), {
        "daemon_threads": True,
        "allow_reuse_address": True,
        "address_family": family,
        "handle_error": lambda self, request, client_address: LOG.exception(
            "unhandled error for client %s", client_address),
    })
    return server_cls((cfg.http_bind, cfg.http_port), handler)


def sd_notify(message: str) -> bool:
    """Minimal sd_notify(3): send a datagram to $NOTIFY_SOCKET if set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
        return True
    except OSError as exc:
        LOG.warning("sd_notify failed: %s", exc)
        return False


def help_config() -> str:
    width = max(len(k) for k, _d, _h in CONFIG_SPEC)
    lines = ["Environment variables (defaults in brackets):"]
    for key, default, doc in CONFIG_SPEC:
        lines.append("  %-*s  %s [%s]" % (width, key, doc, default))
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--version" in argv:
        print(__version__)
        return 0
    if "--help-config" in argv or "-h" in argv or "--help" in argv:
        print(__doc__)
        print(help_config())
        return 0
    try:
        cfg = Config(os.environ)
    except ConfigError as exc:
        print("rtx-demo-app: configuration error: %s" % exc, file=sys.stderr)
        return 2
    if "--check-config" in argv:
        print("dsn: %s" % cfg.dsn())
        return 0

    fmt = "%(levelname)s %(threadName)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, cfg.log_level, logging.INFO), format=fmt, stream=sys.stderr)
    if psycopg2 is None:
        LOG.error("psycopg2 is not installed (Debian package python3-psycopg2)")
        return 2

    stop = threading.Event()

    def _on_signal(signum, _frame):
        LOG.info("received signal %d, shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    state = State(cfg)
    acklog = AckLog(cfg.acked_log, cfg.acked_log_fsync)
    try:
        acklog.open()
    except OSError as exc:
        LOG.error("cannot open acked log %s: %s", cfg.acked_log, exc)
        return 1
    try:
        httpd = make_server(cfg, state, stop)
    except OSError as exc:
        LOG.error("cannot listen on %s:%s: %s", cfg.http_bind, cfg.http_port, exc)
        return 1

    writer = Writer(cfg, state, acklog, stop)
    threads = [writer]
    if cfg.redis_enabled:
        threads.append(RedisProbe(cfg, state, stop))
    http_thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                   name="http", daemon=True)
    threads.append(http_thread)
    for thread in threads:
        thread.start()
    LOG.info("rtx-demo-app %s started: instance=%s region=%s http=%s:%d dsn=%s acked_log=%s",
             __version__, cfg.instance, cfg.region, cfg.http_bind, httpd.server_address[1],
             cfg.dsn(), cfg.acked_log)
    sd_notify("READY=1\nSTATUS=writing every %dms\nMAINPID=%d" % (cfg.write_interval * 1000, os.getpid()))

    while not stop.wait(1.0):
        for thread in threads:
            if not thread.is_alive():  # cannot happen by design; let systemd restart us if it does
                LOG.error("thread %s died, exiting", thread.name)
                stop.set()
                return 1

    sd_notify("STOPPING=1")
    httpd.shutdown()
    httpd.server_close()
    writer.join(timeout=10)
    acklog.close()
    LOG.info("stopped: writes_ok=%d writes_failed=%d last_acked_seq=%s",
             state.writes_ok, state.writes_failed, state.last_acked_seq)
    return 0


if __name__ == "__main__":
    sys.exit(main())

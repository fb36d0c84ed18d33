# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of roles/demo_app/files/rtx_demo_app.py.

Unit tests import the service file as a module. The integration tests run the
real service as a subprocess against throwaway PostgreSQL 15 clusters (a
primary with TLS and scram-sha-256, plus a streaming standby cloned with
pg_basebackup) and a fake Redis that speaks just enough RESP:

* /health 200, rows in demo.orders, acked.log is a subset of the table;
* /metrics, the WebSocket handshake and frames, HTTP robustness;
* the primary stopped: 503 and writes_failed grows; restarted: writes resume;
* failover: primary stopped, standby promoted, the multi-host connection
  string finds the new primary by itself; no acknowledged seq lost;
* SIGTERM exits 0 and a restarted service continues with larger seqs.

The PostgreSQL binaries default to /usr/lib/postgresql/15/bin (override with
RTX_TEST_PG_BIN); the tests are skipped when they are missing. As root the
clusters run as the `postgres` user (created with useradd if missing).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_redis import FakeRedis  # noqa: E402 pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parents[3]
APP = REPO / "roles" / "demo_app" / "files" / "rtx_demo_app.py"
PG_BIN = Path(os.environ.get("RTX_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DB_PASSWORD = "s3cr3t 'quoted' \"pw\" $HOME \\"
REDIS_PASSWORD = "redis-pw"
INSTANCE = "pytest-app"

psycopg2 = pytest.importorskip("psycopg2")


def load_app_module():
    spec = importlib.util.spec_from_file_location("rtx_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app_mod = load_app_module()


# --------------------------------------------------------------------------
# unit tests
# --------------------------------------------------------------------------

def test_ws_accept_key_rfc6455_example():
    # The example from RFC 6455 section 1.3.
    assert app_mod.ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("length, header_len", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_ws_frame_lengths(length, header_len):
    frame = app_mod.ws_frame(b"x" * length)
    assert frame[0] == 0x81
    assert len(frame) == header_len + length
    assert not frame[1] & 0x80  # server frames are never masked


def test_config_multi_host_dsn():
    cfg = app_mod.Config({
        "RTX_DEMO_DB_HOSTS": "db-east-1, db-east-2,db-east-3,db-west-1",
        "RTX_DEMO_DB_PORTS": "5432",
        "RTX_DEMO_DB_PASSWORD": "never-in-dsn",
        "RTX_DEMO_DB_APPLICATION_NAME": "rtx demo's app",
    })
    dsn = cfg.dsn()
    assert "host=db-east-1,db-east-2,db-east-3,db-west-1 " in dsn
    assert "port=5432,5432,5432,5432 " in dsn
    assert "target_session_attrs=read-write" in dsn
    assert "sslmode=require" in dsn
    assert "dbname=rtx" in dsn and "user=rtx_demo" in dsn
    assert "never-in-dsn" not in dsn
    assert "application_name='rtx demo\\'s app'" in dsn
    parsed = psycopg2.extensions.parse_dsn(dsn)
    assert parsed["application_name"] == "rtx demo's app"
    assert parsed["host"] == "db-east-1,db-east-2,db-east-3,db-west-1"


@pytest.mark.parametrize("env", [
    {"RTX_DEMO_DB_HOSTS": ""},
    {"RTX_DEMO_DB_HOSTS": "a,b,c", "RTX_DEMO_DB_PORTS": "1,2"},
    {"RTX_DEMO_WRITE_INTERVAL_MS": "fast"},
    {"RTX_DEMO_REDIS_ENABLED": "maybe"},
])
def test_config_rejects_bad_values(env):
    with pytest.raises(app_mod.ConfigError):
        app_mod.Config(env)


def test_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    cfg = app_mod.Config({"RTX_DEMO_DB_PASSWORD_FILE": str(secret)})
    assert cfg.db_password == "from-file"


def test_read_last_seq(tmp_path):
    log = tmp_path / "acked.log"
    assert app_mod.read_last_seq(str(log)) is None
    log.write_text("1\n2\n" + "\n".join(str(i) for i in range(3, 5000)) + "\n")
    assert app_mod.read_last_seq(str(log)) == 4999
    with open(log, "a") as handle:
        handle.write("50")  # torn last line without newline still parses as a number
    assert app_mod.read_last_seq(str(log)) == 50


def test_metrics_and_snapshot_shape():
    cfg = app_mod.Config({"RTX_DEMO_REGION": "east", "RTX_DEMO_INSTANCE": 'app"1'})
    state = app_mod.State(cfg)
    snap = state.snapshot()
    assert snap["status"] == "degraded"
    assert set(snap["db"]) >= {"connected", "host", "in_recovery", "last_write_at", "writes_ok",
                               "writes_failed", "last_acked_seq"}
    assert snap["redis"]["ok"] is False
    assert snap["region"] == "east" and snap["version"] == app_mod.__version__
    state.writes_ok, state.last_write_at, state.last_write_mono = 3, time.time(), time.monotonic()
    assert state.snapshot()["status"] == "ok"
    text = state.metrics()
    assert 'rtx_demo_writes_total{result="ok"} 3\n' in text
    assert 'rtx_demo_writes_total{result="failed"} 0\n' in text
    assert "# TYPE rtx_demo_last_write_timestamp_seconds gauge" in text
    assert "rtx_demo_db_connected 0\n" in text
    assert 'instance="app\\"1"' in text


def test_cli_version_and_check_config():
    out = subprocess.run([sys.executable, str(APP), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == app_mod.__version__
    env = dict(os.environ, RTX_DEMO_DB_HOSTS="h1,h2", RTX_DEMO_DB_PASSWORD="top-secret")
    out = subprocess.run([sys.executable, str(APP), "--check-config"], env=env,
                         capture_output=True, text=True, check=True)
    assert "host=h1,h2" in out.stdout and "top-secret" not in out.stdout
    bad = subprocess.run([sys.executable, str(APP)], env=dict(env, RTX_DEMO_HTTP_PORT="x"),
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "RTX_DEMO_HTTP_PORT" in bad.stderr


# --------------------------------------------------------------------------
# helpers for the integration tests
# --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.0fs waiting for %s (last value: %r)" % (timeout, what, last))


def health_if(port, condition):
    """health(port) when condition(status, body) holds, else None (for wait_for)."""
    result = health(port)
    return result if condition(*result) else None


def http_get(port: int, path: str):
    """Return (status, body) without raising on 4xx/5xx."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def health(port: int):
    status, body = http_get(port, "/health")
    return status, json.loads(body)


class PgCluster:
    """A throwaway PostgreSQL cluster run as an unprivileged user."""

    def __init__(self, base: Path, name: str, user: pwd.struct_passwd):
        self.base = base
        self.datadir = base / name
        self.logfile = base / (name + ".log")
        self.sockdir = base / "sock"
        self.port = free_port()
        self.user = user

    def run(self, *args, check=True):
        kwargs = {}
        if os.geteuid() == 0:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = dict(os.environ, HOME=str(self.base), LC_ALL="C.UTF-8")
        env.pop("PGPASSWORD", None)
        return subprocess.run([str(a) for a in args], cwd=self.base, env=env, capture_output=True,
                              text=True, check=check, timeout=120, **kwargs)

    def initdb(self):
        self.run(PG_BIN / "initdb", "-D", self.datadir, "-U", "postgres", "--auth-local=trust",
                 "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")

    def configure(self, ssl: bool):
        conf = [
            "listen_addresses = '127.0.0.1'",
            "port = %d" % self.port,
            "unix_socket_directories = '%s'" % self.sockdir,
            "wal_level = replica",
            "max_wal_senders = 5",
            "hot_standby = on",
            "fsync = off",
            "shared_buffers = 16MB",
            "cluster_name = '%s'" % self.datadir.name,
            "wal_retrieve_retry_interval = '500ms'",
        ]
        if ssl:
            conf += ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"]
        with open(self.datadir / "postgresql.conf", "a") as handle:
            handle.write("\n".join(conf) + "\n")
        hba = [
            "local all all trust",
            "host replication postgres 127.0.0.1/32 trust",
            "%s all rtx_demo 127.0.0.1/32 scram-sha-256" % ("hostssl" if ssl else "host"),
        ]
        (self.datadir / "pg_hba.conf").write_text("\n".join(hba) + "\n")

    def start(self):
        self.run(PG_BIN / "pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", "60", "start")

    def stop(self, mode="fast"):
        self.run(PG_BIN / "pg_ctl", "-D", self.datadir, "-m", mode, "-w", "-t", "60", "stop", check=False)

    def promote(self):
        self.run(PG_BIN / "pg_ctl", "-D", self.datadir, "-w", "-t", "60", "promote")

    def is_running(self) -> bool:
        return self.run(PG_BIN / "pg_ctl", "-D", self.datadir, "status", check=False).returncode == 0

    def connect(self, dbname="rtx"):
        conn = psycopg2.connect(host=str(self.sockdir), port=self.port, user="postgres", dbname=dbname,
                                connect_timeout=10, options="-c statement_timeout=60000")
        conn.autocommit = True
        return conn

    def query(self, sql, params=None, dbname="rtx"):
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()


def pg_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
                       check=True)
        return pwd.getpwnam("postgres")


class DemoApp:
    """The service under test, run as a subprocess."""

    def __init__(self, base: Path, env: dict, name: str = "app"):
        self.base = base
        self.env = env
        self.name = name
        self.port = int(env["RTX_DEMO_HTTP_PORT"])
        self.logfile = base / (name + ".log")
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RTX_DEMO_", "PG", "NOTIFY_SOCKET"))}
        env.update(self.env)
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(APP)], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._listening, 15, what="%s to listen" % self.name)

    def _listening(self):
        assert self.proc.poll() is None, "service exited early:\n" + self.log()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self, timeout=15) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            return None

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def read_acked(path: Path) -> list:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().splitlines() if line.strip()]


def ws_connect(port: int, key: str = None):
    key = key or base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    request = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n") % (port, key)
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "connection closed during handshake: %r" % head
        head += chunk
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return sock, key, lines[0], headers


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def ws_read_frame(sock):
    b1, b2 = recv_exact(sock, 2)
    assert not b2 & 0x80, "server frames must not be masked"
    length = b2 & 0x7F
    if length == 126:
        length = struct.unpack("!H", recv_exact(sock, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", recv_exact(sock, 8))[0]
    return b1 & 0x80, b1 & 0x0F, recv_exact(sock, length)


def ws_send_masked(sock, opcode, payload=b""):
    mask = os.urandom(4)
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


# --------------------------------------------------------------------------
# integration fixtures
# --------------------------------------------------------------------------

needs_pg = pytest.mark.skipif(not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists(),
                              reason="PostgreSQL binaries not found in %s" % PG_BIN)


@pytest.fixture(scope="module")
def lab():
    """Primary + streaming standby + fake Redis + the service, torn down at the end."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL binaries not found in %s" % PG_BIN)
    user = pg_user()
    base = Path(tempfile.mkdtemp(prefix="rtx-demo-test-"))
    os.chmod(base, 0o755)
    os.chown(base, user.pw_uid, user.pw_gid)
    (base / "sock").mkdir()
    os.chown(base / "sock", user.pw_uid, user.pw_gid)
    state_dir = base / "state"  # written by the service (run as the test user)
    primary = PgCluster(base, "primary", user)
    standby = PgCluster(base, "standby", user)
    redis = None
    apps = []
    ssl = shutil.which("openssl") is not None

    def _interrupt(_signum, _frame):  # `timeout`/CI sending SIGTERM still runs the teardown below
        raise KeyboardInterrupt("SIGTERM")

    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        primary.initdb()
        if ssl:
            subprocess.run(["openssl", "req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=localhost",
                            "-newkey", "rsa:2048", "-keyout", str(primary.datadir / "server.key"),
                            "-out", str(primary.datadir / "server.crt")], check=True, capture_output=True)
            for name in ("server.key", "server.crt"):
                os.chown(primary.datadir / name, user.pw_uid, user.pw_gid)
                os.chmod(primary.datadir / name, 0o600)
        primary.configure(ssl)
        primary.start()
        primary.query("CREATE ROLE rtx_demo LOGIN PASSWORD %s", (DB_PASSWORD,), dbname="postgres")
        primary.query("CREATE DATABASE rtx", dbname="postgres")
        # The same objects the role creates (tasks/db.yml).
        primary.query("""
            CREATE SCHEMA demo;
            CREATE TABLE demo.orders (
                id bigserial PRIMARY KEY,
                created_at timestamptz NOT NULL DEFAULT now(),
                host text NOT NULL,
                seq bigint NOT NULL,
                payload text);
            CREATE INDEX orders_host_seq_idx ON demo.orders (host, seq);
            GRANT USAGE ON SCHEMA demo TO rtx_demo;
            GRANT SELECT, INSERT ON demo.orders TO rtx_demo;
            GRANT USAGE ON SEQUENCE demo.orders_id_seq TO rtx_demo;
        """)
        standby.run(PG_BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", primary.port, "-U", "postgres",
                    "-D", standby.datadir, "-R", "-X", "stream", "-c", "fast", "--no-sync")
        with open(standby.datadir / "postgresql.conf", "a") as handle:
            handle.write("port = %d\ncluster_name = 'standby'\n" % standby.port)
        standby.start()
        assert standby.query("SELECT pg_is_in_recovery()")[0][0] is True
        # Like db-east-2 in the lab: an acknowledged commit is on the standby too.
        # (Only now: with no standby connected, commits would wait forever.)
        primary.query("ALTER SYSTEM SET synchronous_standby_names = 'standby'", dbname="postgres")
        primary.query("SELECT pg_reload_conf()", dbname="postgres")
        wait_for(lambda: primary.query("SELECT sync_state FROM pg_stat_replication", dbname="postgres")
                 == [("sync",)], 30, what="the standby to stream synchronously")

        redis = FakeRedis(REDIS_PASSWORD)
        notify_path = base / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(15)
        dead_port = free_port()
        env = {
            # a dead host first, then the standby (read-only, skipped), then the primary
            "RTX_DEMO_DB_HOSTS": "127.0.0.1,127.0.0.1,127.0.0.1",
            "RTX_DEMO_DB_PORTS": "%d,%d,%d" % (dead_port, standby.port, primary.port),
            "RTX_DEMO_DB_PASSWORD": DB_PASSWORD,
            "RTX_DEMO_DB_SSLMODE": "require" if ssl else "disable",
            "RTX_DEMO_DB_CONNECT_TIMEOUT": "2",
            "RTX_DEMO_WRITE_INTERVAL_MS": "100",
            "RTX_DEMO_RECONNECT_BACKOFF_MAX_MS": "500",
            "RTX_DEMO_HEALTH_MAX_AGE_S": "3",
            "RTX_DEMO_INSTANCE": INSTANCE,
            "RTX_DEMO_REGION": "east",
            "RTX_DEMO_STATE_DIR": str(state_dir),
            "RTX_DEMO_HTTP_BIND": "127.0.0.1",
            "RTX_DEMO_HTTP_PORT": str(free_port()),
            "RTX_DEMO_REDIS_PORT": str(redis.port),
            "RTX_DEMO_REDIS_PASSWORD": REDIS_PASSWORD,
            "RTX_DEMO_WS_MAX_CLIENTS": "3",
            "NOTIFY_SOCKET": str(notify_path),
        }
        app = DemoApp(base, env)
        apps.append(app)
        app.start()
        ready = notify.recv(4096).decode()
        notify.close()
        yield {"base": base, "primary": primary, "standby": standby, "redis": redis, "app": app,
               "apps": apps, "acked": state_dir / "acked.log", "ready": ready, "ssl": ssl, "env": env}
    finally:
        failed_logs = []
        for app in apps:
            rc = app.stop()
            if rc not in (0, None):
                failed_logs.append(app.log())
        if redis is not None:
            redis.close()
        for cluster in (primary, standby):
            if cluster.datadir.exists():
                cluster.stop("immediate")
        if os.environ.get("RTX_TEST_KEEP"):
            print("keeping", base)
        else:
            shutil.rmtree(base, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous_handler)
        if failed_logs:
            print("\n".join(failed_logs))


def app_log_on_failure(lab):
    return "\n--- service log ---\n" + lab["app"].log()


# --------------------------------------------------------------------------
# integration tests (module order matters: they walk through one DR story)
# --------------------------------------------------------------------------

@needs_pg
def test_health_ok_and_connected_to_primary(lab):
    port = lab["app"].port
    assert "READY=1" in lab["ready"]
    status, body = wait_for(lambda: health_if(port, lambda st, b: st == 200 and b["db"]["writes_ok"] > 0), 20,
                            what="healthy service" + app_log_on_failure(lab))
    db = body["db"]
    assert body["status"] == "ok"
    assert db["connected"] is True
    assert db["host"] == "127.0.0.1"
    assert db["port"] == lab["primary"].port, "must skip the dead host and the read-only standby"
    assert db["in_recovery"] is False
    assert db["ssl"] is lab["ssl"]
    assert db["writes_ok"] > 0 and db["last_acked_seq"] is not None and db["last_write_at"]
    assert body["region"] == "east" and body["version"] == app_mod.__version__
    assert body["redis"]["ok"] is True, body["redis"]
    assert lab["redis"].pings > 0


@needs_pg
def test_rows_written_and_acked_log_is_subset(lab):
    time.sleep(1)
    acked = read_acked(lab["acked"])
    assert len(acked) >= 5
    assert acked == sorted(set(acked)), "acked seqs must be strictly increasing"
    rows = lab["primary"].query("SELECT seq, host, payload FROM demo.orders WHERE host = %s", (INSTANCE,))
    in_db = {r[0] for r in rows}
    missing = set(acked) - in_db
    assert not missing, "acknowledged seqs missing from demo.orders: %s" % sorted(missing)[:10]
    payload = json.loads(rows[0][2])
    assert payload["instance"] == INSTANCE
    body = health(lab["app"].port)[1]
    assert body["db"]["last_acked_seq"] >= acked[-1]
    # the server side sees the application_name and the TLS session
    apps = lab["primary"].query(
        "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
        "WHERE a.usename = 'rtx_demo'", dbname="postgres")
    assert apps and apps[0][0] == "rtx-demo-app"
    assert apps[0][1] is lab["ssl"]


@needs_pg
def test_metrics(lab):
    status, body = http_get(lab["app"].port, "/metrics")
    assert status == 200
    text = body.decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['rtx_demo_writes_total{result="ok"}'] > 0
    assert 'rtx_demo_writes_total{result="failed"}' in values
    assert values["rtx_demo_db_connected"] == 1
    assert abs(values["rtx_demo_last_write_timestamp_seconds"] - time.time()) < 5
    assert "# TYPE rtx_demo_writes_total counter" in text


@needs_pg
def test_websocket(lab):
    port = lab["app"].port
    sock, key, status_line, headers = ws_connect(port)
    try:
        assert status_line.split(" ", 2)[1] == "101", status_line
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers["sec-websocket-accept"] == expected
        assert headers["upgrade"].lower() == "websocket"
        fin, opcode, payload = ws_read_frame(sock)
        assert fin and opcode == 0x1
        first = json.loads(payload)
        assert first["status"] in ("ok", "degraded") and "db" in first and "redis" in first
        ws_send_masked(sock, 0x9, b"hi")  # ping -> pong
        t0 = time.monotonic()
        seen = {}
        while 0x1 not in seen or 0xA not in seen:
            fin, opcode, payload = ws_read_frame(sock)
            seen[opcode] = payload
        assert seen[0xA] == b"hi"
        assert json.loads(seen[0x1])["db"]["writes_ok"] >= first["db"]["writes_ok"]
        assert time.monotonic() - t0 < 3, "frames must come about once per second"
        ws_send_masked(sock, 0x8, struct.pack("!H", 1000))
        while True:  # drain data frames until the close echo
            fin, opcode, payload = ws_read_frame(sock)
            if opcode == 0x8:
                break
        assert payload == struct.pack("!H", 1000)
    finally:
        sock.close()
    # the client slot is released
    wait_for(lambda: b"rtx_demo_websocket_clients 0" in http_get(port, "/metrics")[1], 5, what="ws slot release")


@needs_pg
def test_websocket_rejections_and_http_robustness(lab):
    port = lab["app"].port
    status = http_get(port, "/ws")[0]  # plain GET, no upgrade
    assert status == 400
    assert http_get(port, "/nope")[0] == 404
    # version mismatch -> 426
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
        assert b" 426 " in sock.recv(1024)
    # garbage, half requests and abrupt disconnects must not hurt the service
    for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"GET /health HTTP/1.1\r\nHost", b"POST /health HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(junk)
    for _client in range(3):  # WebSocket clients that vanish without a close frame
        sock, *_rest = ws_connect(port)
        ws_read_frame(sock)
        sock.close()
    # more clients than RTX_DEMO_WS_MAX_CLIENTS (3) are refused with 503, then slots free up again
    socks = []
    try:
        for _attempt in range(3):
            sock, _key, status_line, _h = ws_connect(port)
            socks.append(sock)
            assert " 101 " in status_line
        sock, _key, status_line, _h = ws_connect(port)
        socks.append(sock)
        assert " 503 " in status_line
    finally:
        for sock in socks:
            sock.close()
    wait_for(lambda: b"rtx_demo_websocket_clients 0" in http_get(port, "/metrics")[1], 10, what="ws slots freed")
    assert health(port)[0] == 200
    assert lab["app"].proc.poll() is None


@needs_pg
def test_redis_outage_is_reported_not_fatal(lab):
    port = lab["app"].port
    lab["redis"].close()
    wait_for(lambda: health(port)[1]["redis"]["ok"] is False, 10, what="redis ok=false")
    status, body = health(port)
    assert status == 200 and body["status"] == "ok", "Redis is optional: the DB decides health"
    assert body["redis"]["error"]
    assert b"rtx_demo_redis_up 0" in http_get(port, "/metrics")[1]


@needs_pg
def test_db_outage_then_restart(lab):
    port, primary = lab["app"].port, lab["primary"]
    before = health(port)[1]["db"]
    primary.stop("fast")
    status, body = wait_for(lambda: health_if(port, lambda st, b: st == 503), 15,
                            what="503 after the primary stopped" + app_log_on_failure(lab))
    assert body["status"] == "degraded"
    wait_for(lambda: health(port)[1]["db"]["writes_failed"] > before["writes_failed"] + 2, 15,
             what="writes_failed to grow")
    failed_mid = health(port)[1]["db"]
    assert failed_mid["connected"] is False and failed_mid["last_error"]
    assert b"rtx_demo_db_connected 0" in http_get(port, "/metrics")[1]
    assert lab["app"].proc.poll() is None

    primary.start()
    status, body = wait_for(lambda: health_if(port, lambda st, b: st == 200), 20,
                            what="writes to resume after restart" + app_log_on_failure(lab))
    assert body["db"]["port"] == primary.port
    assert body["db"]["writes_ok"] > failed_mid["writes_ok"]
    acked = read_acked(lab["acked"])
    assert acked == sorted(set(acked))
    in_db = {r[0] for r in primary.query("SELECT seq FROM demo.orders WHERE host = %s", (INSTANCE,))}
    assert not set(acked) - in_db


@needs_pg
def test_failover_to_promoted_standby(lab):
    port, primary, standby = lab["app"].port, lab["primary"], lab["standby"]
    wait_for(lambda: health(port)[0] == 200, 10, what="healthy before failover")
    wait_for(lambda: primary.query("SELECT sync_state FROM pg_stat_replication", dbname="postgres")
             == [("sync",)], 30, what="the standby to stream synchronously again")
    primary.stop("fast")
    wait_for(lambda: health(port)[0] == 503, 15, what="503 after losing the primary")
    standby.promote()
    status, body = wait_for(lambda: health_if(port, lambda st, b: st == 200 and b["db"]["port"] == standby.port), 30,
                            what="writes on the promoted standby" + app_log_on_failure(lab))
    assert body["db"]["in_recovery"] is False
    assert body["db"]["cluster_name"] == "standby"
    time.sleep(0.5)
    acked = read_acked(lab["acked"])
    in_db = {r[0] for r in standby.query("SELECT seq FROM demo.orders WHERE host = %s", (INSTANCE,))}
    missing = set(acked) - in_db
    assert not missing, "acknowledged commits lost in failover: %s" % sorted(missing)[:10]
    assert acked[-1] > body["db"]["last_acked_seq"] - 1000, "writes continue on the new primary"


@needs_pg
def test_sigterm_and_restart_continue_seq(lab):
    app = lab["app"]
    last_before = read_acked(lab["acked"])[-1]
    assert app.stop() == 0, app.log()
    assert "stopped: writes_ok=" in app.log()
    app.start()
    wait_for(lambda: health(app.port)[0] == 200, 20, what="restarted service healthy" + app_log_on_failure(lab))
    acked = read_acked(lab["acked"])
    assert acked == sorted(set(acked)), "seqs must keep increasing across restarts"
    assert acked[-1] > last_before
    assert health(app.port)[1]["db"]["last_acked_seq"] >= acked[-1]


@needs_pg
def test_starts_without_db_or_redis(lab):
    """A service whose DB and Redis are both unreachable keeps running and reports 503."""
    env = dict(lab["env"])
    env.update({
        "RTX_DEMO_DB_HOSTS": "127.0.0.1",
        "RTX_DEMO_DB_PORTS": str(free_port()),
        "RTX_DEMO_REDIS_PORT": str(free_port()),
        "RTX_DEMO_REDIS_PASSWORD": "",
        "RTX_DEMO_HTTP_PORT": str(free_port()),
        "RTX_DEMO_STATE_DIR": str(lab["base"] / "state2"),
    })
    env.pop("NOTIFY_SOCKET")
    app = DemoApp(lab["base"], env, name="app-nodb")
    lab["apps"].append(app)
    app.start()
    wait_for(lambda: health(app.port)[1]["db"]["writes_failed"] >= 2, 15, what="failed writes counted")
    status, body = health(app.port)
    assert status == 503 and body["status"] == "degraded"
    assert body["db"]["connected"] is False and body["db"]["writes_ok"] == 0
    assert body["db"]["last_acked_seq"] is None
    assert body["redis"]["ok"] is False
    assert http_get(app.port, "/metrics")[0] == 200
    assert app.proc.poll() is None
    assert app.stop() == 0

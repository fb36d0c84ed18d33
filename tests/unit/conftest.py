# -*- coding: utf-8 -*-

# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Shared pytest setup for the rtx.dr unit tests.

1. Makes ``ansible_collections.rtx.dr`` importable when the repository is
   checked out at any path (plain ``pytest tests/unit`` from the repo root),
   while ``ansible_collections.*`` from site-packages (amazon.aws,
   community.postgresql...) stay importable: ``ansible_collections`` is a
   namespace package, so a second portion is added through ``sys.path``.
   Under ``ansible-test units`` (repo already at
   ``.../ansible_collections/rtx/dr``) nothing is changed.
2. ``run_module``: runs a module's ``main()`` with arguments and returns what it
   passed to ``exit_json``/``fail_json``.
3. ``pg_cluster``: a throwaway local PostgreSQL primary + streaming standby,
   skipped cleanly when the server binaries or psycopg2 are missing. It is
   started once per pytest process after collection (only when a collected
   test uses it) and stopped when pytest ends.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _make_collection_importable():
    parts = REPO_ROOT.parts
    if parts[-3:] == ("ansible_collections", "rtx", "dr"):
        root = str(REPO_ROOT.parents[2])
        if root not in sys.path:
            sys.path.append(root)
        return
    tmp = tempfile.mkdtemp(prefix="rtxdr-collections-")
    namespace = Path(tmp, "ansible_collections", "rtx")
    namespace.mkdir(parents=True)
    link = namespace / "dr"
    link.symlink_to(REPO_ROOT, target_is_directory=True)

    def _cleanup():
        # Remove the link itself first: never recurse into the repository.
        if link.is_symlink():
            link.unlink()
        shutil.rmtree(tmp, ignore_errors=True)

    atexit.register(_cleanup)
    # Appended: a namespace package recomputes its __path__ from sys.path, so
    # ansible_collections gets this portion next to the site-packages one.
    sys.path.append(tmp)
    try:
        import ansible_collections  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover - ansible not installed at all
        return
    portion = os.path.join(tmp, "ansible_collections")
    path = getattr(ansible_collections, "__path__", None)
    if path is not None and portion not in list(path) and isinstance(path, list):
        # A regular (non-namespace) ansible_collections package: extend it.
        path.append(portion)


_make_collection_importable()


# --------------------------------------------------------------------------
# Running modules
# --------------------------------------------------------------------------


class ModuleExit(Exception):
    """Raised instead of exiting by the patched exit_json/fail_json."""

    def __init__(self, failed, result):
        super().__init__(result.get("msg"))
        self.failed = failed
        self.result = result


@pytest.fixture
def run_module(monkeypatch):
    """``run_module(main, args) -> (failed, result)`` for an Ansible module's main()."""
    from ansible.module_utils import basic  # pylint: disable=import-outside-toplevel

    def exit_json(self, **kwargs):  # pylint: disable=unused-argument
        kwargs.setdefault("changed", False)
        json.dumps(kwargs)  # the real exit_json must be able to serialise it
        raise ModuleExit(False, kwargs)

    def fail_json(self, msg, **kwargs):  # pylint: disable=unused-argument
        kwargs["msg"] = msg
        kwargs["failed"] = True
        json.dumps(kwargs)
        raise ModuleExit(True, kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def _run(main, args):
        try:
            from ansible.module_utils.testing import patch_module_args  # pylint: disable=import-outside-toplevel
        except ImportError:  # ansible-core < 2.19
            patch_module_args = None
        try:
            if patch_module_args is not None:
                with patch_module_args(args):
                    main()
            else:
                monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
                main()
        except ModuleExit as exc:
            return exc.failed, exc.result
        raise AssertionError("module main() returned without calling exit_json/fail_json")

    return _run


@pytest.fixture
def make_module():
    """``make_module(argument_spec, args) -> AnsibleModule`` with ``args`` as its input."""
    from ansible.module_utils.basic import AnsibleModule  # pylint: disable=import-outside-toplevel
    from ansible.module_utils.testing import patch_module_args  # pylint: disable=import-outside-toplevel

    def _make(argument_spec, args, **kwargs):
        with patch_module_args(args):
            return AnsibleModule(argument_spec=argument_spec, **kwargs)

    return _make


# --------------------------------------------------------------------------
# Throwaway PostgreSQL primary + standby
# --------------------------------------------------------------------------

PG_VERSIONS = ("15", "16", "17", "14", "13")
PG_PASSWORD = "rtx-test-secret"
STANDBY_NAME = "rtxtest_standby"
STANDBY_SLOT = "rtxtest_slot"


def find_pg_bin():
    """Directory with initdb/pg_ctl/pg_basebackup, or None. RTX_TEST_PG_BIN overrides."""
    candidates = []
    if os.environ.get("RTX_TEST_PG_BIN"):
        candidates.append(os.environ["RTX_TEST_PG_BIN"])
    candidates.extend("/usr/lib/postgresql/%s/bin" % v for v in PG_VERSIONS)
    for candidate in candidates:
        if all(os.access(os.path.join(candidate, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return candidate
    return None


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgCluster:
    """A primary and a streaming standby under one temp dir, run as an unprivileged user."""

    def __init__(self, bindir, base, user):
        self.bindir = bindir
        self.base = base
        self.user = user  # pwd entry, or None when not root
        self.primary_port = free_port()
        self.standby_port = free_port()
        self.primary_dir = os.path.join(base, "primary")
        self.standby_dir = os.path.join(base, "standby")
        self.started = []
        self.owner_pid = os.getpid()

    # -- process helpers --------------------------------------------------
    def run(self, tool, *args, check=True, timeout=120):
        kwargs = {}
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": self.base, "PGPASSWORD": PG_PASSWORD}
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        proc = subprocess.run(
            [os.path.join(self.bindir, tool)] + list(args),
            cwd=self.base,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            **kwargs,
        )
        if check and proc.returncode != 0:
            raise RuntimeError("%s %s failed (%d):\n%s" % (tool, " ".join(args), proc.returncode, proc.stdout.decode()))
        return proc

    def server_options(self, port, extra=""):
        return (
            "-c port=%d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_senders=5 "
            "-c wal_level=replica -c hot_standby=on -c wal_receiver_status_interval=1 %s"
        ) % (port, self.base, extra)

    def start(self, datadir, port, extra=""):
        self.run(
            "pg_ctl", "-D", datadir, "-l", datadir + ".log", "-w", "-t", "60",
            "-o", self.server_options(port, extra), "start",
        )
        self.started.append(datadir)

    def stop(self, datadir):
        self.run("pg_ctl", "-D", datadir, "-m", "immediate", "-w", "stop", check=False, timeout=60)
        if datadir in self.started:
            self.started.remove(datadir)

    # -- connection parameters --------------------------------------------
    def params(self, port=None, **overrides):
        params = {
            "login_host": "127.0.0.1",
            "login_port": port or self.primary_port,
            "login_user": "postgres",
            "login_password": PG_PASSWORD,
            "login_db": "postgres",
            "login_unix_socket": None,
            "ssl_mode": "disable",
            "ca_cert": None,
            "connect_timeout": 5,
        }
        params.update(overrides)
        return params

    def module_args(self, port=None, **overrides):
        args = {
            "login_host": "127.0.0.1",
            "login_port": port or self.primary_port,
            "login_password": PG_PASSWORD,
            "ssl_mode": "disable",
            "connect_timeout": 5,
        }
        args.update(overrides)
        return args

    def sql(self, port, statement, params=None):
        """Run one statement as postgres on ``port`` (autocommit); return its first row or None."""
        import psycopg2  # pylint: disable=import-outside-toplevel

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=PG_PASSWORD,
                                dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchone() if cur.description else None
        finally:
            conn.close()

    # -- setup --------------------------------------------------------------
    def create_standby(self, datadir, port, name, slot):
        self.run(
            "pg_basebackup", "-D", datadir, "-h", "127.0.0.1", "-p", str(self.primary_port),
            # --checkpoint=fast: a spread checkpoint on the shared test server took > 120 s under load (CI)
            "-U", "postgres", "-X", "stream", "-R", "-C", "-S", slot, "--no-sync", "--checkpoint=fast",
        )
        os.chmod(datadir, 0o700)
        self.start(datadir, port, "-c cluster_name=%s" % name)

    def wait_streaming(self, name, timeout=60):
        import psycopg2  # pylint: disable=import-outside-toplevel

        deadline = time.time() + timeout
        while time.time() < deadline:
            conn = psycopg2.connect(host="127.0.0.1", port=self.primary_port, user="postgres",
                                    password=PG_PASSWORD, dbname="postgres")
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s"
                        " AND state = 'streaming' AND replay_lsn IS NOT NULL",
                        (name,),
                    )
                    if cur.fetchone()[0]:
                        return
            finally:
                conn.close()
            time.sleep(0.2)
        raise RuntimeError("standby %s did not start streaming within %ss" % (name, timeout))

    def setup(self):
        pwfile = os.path.join(self.base, "pwfile")
        with open(pwfile, "w", encoding="utf-8") as handle:
            handle.write(PG_PASSWORD + "\n")
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        self.run(
            "initdb", "-D", self.primary_dir, "-U", "postgres", "--pwfile", pwfile,
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
        )
        self.start(self.primary_dir, self.primary_port, "-c cluster_name=rtxtest_primary")
        self.create_standby(self.standby_dir, self.standby_port, STANDBY_NAME, STANDBY_SLOT)
        self.wait_streaming(STANDBY_NAME)

    def teardown(self):
        """Stop every server started and remove the temp dir; safe to call twice."""
        if os.getpid() != self.owner_pid:
            return
        for datadir in list(self.started):
            self.stop(datadir)
        if os.path.isdir(self.base):
            shutil.rmtree(self.base, ignore_errors=True)


def _exit_on_sigterm(signum, frame):  # pylint: disable=unused-argument
    raise SystemExit(128 + signum)


# One cluster per pytest process. It is started and stopped by the process that
# collected the tests, never inside a test: `ansible-test units` runs every test
# in a forked child (its ansible_forked plugin) that ends with os._exit(), so a
# server started there could never be stopped.
_CLUSTER_STATE = {"started": False, "cluster": None, "skip": None, "error": None}


def _start_pg_cluster():
    state = _CLUSTER_STATE
    if state["started"]:
        return
    state["started"] = True
    bindir = find_pg_bin()
    if bindir is None:
        state["skip"] = "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found"
        return
    try:
        import psycopg2  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        state["skip"] = "psycopg2 is not installed"
        return
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("nobody")
        except KeyError:
            state["skip"] = "running as root and no 'nobody' user to run PostgreSQL as"
            return
    base = tempfile.mkdtemp(prefix="rtxdr-pg-")
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    cluster = PgCluster(bindir, base, user)
    # Never leave servers behind: also stop them when pytest is ended by SIGTERM
    # (turned into SystemExit so that exit handlers run) or exits some other way.
    atexit.register(_stop_pg_cluster)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    state["cluster"] = cluster
    try:
        cluster.setup()
    except Exception as exc:  # pylint: disable=broad-exception-caught
        logs = ""
        for log in (cluster.primary_dir + ".log", cluster.standby_dir + ".log"):
            if os.path.exists(log):
                with open(log, encoding="utf-8", errors="replace") as handle:
                    logs += "\n--- %s ---\n%s" % (log, handle.read()[-3000:])
        state["error"] = "could not start the test PostgreSQL cluster: %s%s" % (exc, logs)
        _stop_pg_cluster()


def _stop_pg_cluster():
    cluster = _CLUSTER_STATE["cluster"]
    if cluster is not None and cluster.owner_pid == os.getpid():
        cluster.teardown()


def pytest_collection_modifyitems(session, config, items):  # pylint: disable=unused-argument
    """Start the cluster before any test runs when a collected test needs it."""
    if any("pg_cluster" in getattr(item, "fixturenames", ()) for item in items):
        _start_pg_cluster()


def pytest_unconfigure(config):  # pylint: disable=unused-argument
    _stop_pg_cluster()


@pytest.fixture(scope="session")
def pg_cluster():
    """A running primary (``primary_port``) with one streaming standby (``standby_port``).

    Skips when PostgreSQL server binaries or psycopg2 are not installed, or
    when running as root without a ``nobody`` user to run the servers as.
    """
    _start_pg_cluster()
    if _CLUSTER_STATE["skip"]:
        pytest.skip(_CLUSTER_STATE["skip"])
    if _CLUSTER_STATE["error"]:
        pytest.fail(_CLUSTER_STATE["error"])
    return _CLUSTER_STATE["cluster"]


# --------------------------------------------------------------------------
# Module documentation
# --------------------------------------------------------------------------

_FRAGMENTS = {
    "rtx.dr.postgres": "ansible_collections.rtx.dr.plugins.doc_fragments.postgres",
    "rtx.dr.aws": "ansible_collections.rtx.dr.plugins.doc_fragments.aws",
}


@pytest.fixture
def fresh_standby(pg_cluster):
    """``(port, datadir)`` of a new standby streaming from the shared primary; stopped and removed afterwards.

    For tests that change a standby (promotion) without touching the shared one.
    """
    import uuid  # pylint: disable=import-outside-toplevel

    name = "rtxtest_promote_%s" % uuid.uuid4().hex[:8]
    datadir = os.path.join(pg_cluster.base, name)
    port = free_port()
    try:
        pg_cluster.create_standby(datadir, port, name, name + "_slot")
        pg_cluster.wait_streaming(name)
        yield port, datadir
    finally:
        pg_cluster.stop(datadir)
        pg_cluster.sql(pg_cluster.primary_port,
                       "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                       (name + "_slot",))
        shutil.rmtree(datadir, ignore_errors=True)
        if os.path.exists(datadir + ".log"):
            os.unlink(datadir + ".log")


@pytest.fixture
def unused_port():
    """A TCP port on 127.0.0.1 that nothing listens on."""
    return free_port()


@pytest.fixture
def doc_matches_spec():
    """``doc_matches_spec(module) -> doc``: DOCUMENTATION (with its rtx.dr fragments) matches argument_spec().

    Every option is documented with the spec's type, default, choices and
    required flag, and nothing undocumented is accepted; EXAMPLES and RETURN
    are valid YAML. Returns the parsed DOCUMENTATION for further checks.
    """
    import importlib  # pylint: disable=import-outside-toplevel

    import yaml  # pylint: disable=import-outside-toplevel

    def check(module):
        doc = yaml.safe_load(module.DOCUMENTATION)
        options = {}
        for fragment in doc.get("extends_documentation_fragment") or []:
            if fragment in _FRAGMENTS:
                fragment_doc = importlib.import_module(_FRAGMENTS[fragment]).ModuleDocFragment.DOCUMENTATION
                options.update(yaml.safe_load(fragment_doc)["options"])
        options.update(doc["options"])
        spec = module.argument_spec()
        assert set(options) == set(spec)
        for name, arg in spec.items():
            assert options[name].get("type", "str") == arg.get("type", "str"), name
            assert options[name].get("default") == arg.get("default"), name
            assert options[name].get("choices") == arg.get("choices"), name
            assert bool(options[name].get("required")) == bool(arg.get("required")), name
        yaml.safe_load(module.EXAMPLES)
        yaml.safe_load(module.RETURN)
        return doc

    return check

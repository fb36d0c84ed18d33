"""Helpers for the testinfra tests of the lab topology (Molecule scenario default)."""

import os
import time

import pytest
import testinfra

INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE")
PRIMARY = "mol-db-east-1"
SYNC_STANDBY = "mol-db-east-2"
ASYNC_STANDBY = "mol-db-east-3"
WEST_STANDBY = "mol-db-west-1"
STANDBYS = [SYNC_STANDBY, ASYNC_STANDBY, WEST_STANDBY]


def get_host(name):
    return testinfra.get_host("ansible://%s?ansible_inventory=%s" % (name, INVENTORY))


def psql(host, sql, db="postgres"):
    """Run SQL as the postgres OS user over the unix socket; return stripped stdout."""
    cmd = host.run("runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -Atq -d %s -c %s",
                   db, sql)
    assert cmd.rc == 0, "psql on %s failed: %s" % (host.backend.host, cmd.stderr)
    return cmd.stdout.strip()


def wait_for(fn, timeout=30.0, interval=0.5):
    """Poll fn() until it returns a truthy value; return the last value."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value


@pytest.fixture(scope="session")
def primary():
    return get_host(PRIMARY)


@pytest.fixture(scope="session")
def standbys():
    return {name: get_host(name) for name in STANDBYS}

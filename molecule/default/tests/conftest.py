"""Helpers for the testinfra tests of the lab topology (Molecule scenario default)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

from labtest import INVENTORY, get_host, psql, wait_for  # noqa: E402,F401  (re-exported to the tests)

__all__ = ["INVENTORY", "get_host", "psql", "wait_for"]

PRIMARY = "mol-db-east-1"
SYNC_STANDBY = "mol-db-east-2"
ASYNC_STANDBY = "mol-db-east-3"
WEST_STANDBY = "mol-db-west-1"
STANDBYS = [SYNC_STANDBY, ASYNC_STANDBY, WEST_STANDBY]


@pytest.fixture(scope="session")
def primary():
    return get_host(PRIMARY)


@pytest.fixture(scope="session")
def standbys():
    return {name: get_host(name) for name in STANDBYS}

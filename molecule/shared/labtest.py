"""Helpers shared by the testinfra tests of every Molecule scenario of rtx.dr."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import testinfra

REPO = Path(os.environ.get("RTX_DR_REPO") or Path(__file__).resolve().parents[2])
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE")


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


def playbook(name, *extra, timeout=900):
    """Run one of the collection's playbooks against the Molecule inventory."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".lab" / "collections"), ANSIBLE_NOCOLOR="1")
    # Molecule forces colours for its own output; the tests read plain text.
    env.pop("ANSIBLE_FORCE_COLOR", None)
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(Path(INVENTORY).parent),
           str(REPO / "playbooks" / name)] + list(extra)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def ansible_module(host, module, args, become_user="postgres", timeout=300):
    """Run one module on an inventory host (ad hoc, as become_user); return the CompletedProcess."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".lab" / "collections"), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_FORCE_COLOR", None)
    cmd = [str(Path(sys.executable).with_name("ansible")), "-i", str(Path(INVENTORY).parent), host, "-b",
           "--become-user", become_user, "-m", module, "-a", json.dumps(args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the role rtx.dr.health_agent: its configuration ``health.json`` as the role renders it.

The role's template is rendered in process with Ansible's Templar from the role's
defaults/vars (as test_backup_schedule.py does), for a database host and an
application host, with and without streaming mode; the rendered file is checked
by the agent itself (``check-config``), run from the layout the role installs
(module_utils only, no ansible). The real systemd run is in Molecule.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roletest import trusted  # noqa: E402 pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parents[3]
ROLE = REPO / "roles" / "health_agent"
MODULE_UTILS = REPO / "plugins" / "module_utils"
PACKAGE_DIRS = ("ansible_collections", "ansible_collections/rtx", "ansible_collections/rtx/dr",
                "ansible_collections/rtx/dr/plugins", "ansible_collections/rtx/dr/plugins/module_utils")
STREAM_KEYS = {"wal_stream", "wal_stream_config"}


def templar_for(database_host=True, **overrides):
    """A Templar with the role's defaults/vars for a lab host (``db1`` in group postgres, or ``app1``)."""
    from ansible.parsing.dataloader import DataLoader  # pylint: disable=import-outside-toplevel
    from ansible.template import Templar  # pylint: disable=import-outside-toplevel

    variables = {}
    for name in ("defaults/main.yml", "vars/main.yml"):
        variables.update(trusted(yaml.safe_load((ROLE / name).read_text())))
    variables.update(inventory_hostname="db1" if database_host else "app1",
                     group_names=["postgres"] if database_host else ["app"],
                     groups={"postgres": ["db1", "db2"], "app": ["app1"]}, ansible_managed="Ansible managed",
                     rtx_dr_health_db_password="pw")
    variables.update(trusted(overrides))
    return Templar(loader=DataLoader(), variables=variables)


def render_config(database_host=True, **overrides):
    templar = templar_for(database_host, **overrides)
    return json.loads(templar.template(trusted((ROLE / "templates" / "health.json.j2").read_text())))


def check_config(tmp_path, config):
    """``health_agent check-config`` of ``config``, run as on a host (installed layout, no ansible)."""
    lib = tmp_path / "lib"
    for name in PACKAGE_DIRS:
        (lib / name).mkdir(parents=True, exist_ok=True)
        (lib / name / "__init__.py").write_text("")
    for source in MODULE_UTILS.glob("*.py"):
        (lib / PACKAGE_DIRS[-1] / source.name).write_text(source.read_text())
    path = tmp_path / "health.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-m", "ansible_collections.rtx.dr.plugins.module_utils.health_agent", "--config", str(path),
         "check-config"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(lib), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, check=False, cwd=str(tmp_path), timeout=60,
    )
    return proc


def test_streaming_mode_off_leaves_the_configuration_as_it_was(tmp_path):
    config = render_config()
    assert not STREAM_KEYS & set(config)
    assert config["dr_metrics"] is True
    packages = templar_for().template(trusted("{{ health_agent_packages }}"))
    assert packages == ["python3", "python3-psycopg2"]


@pytest.mark.parametrize("overrides", [
    {"health_agent_wal_stream": True},
    # the default follows rtx.dr.backup_schedule's switch (an inventory global in the lab)
    {"backup_schedule_wal_stream": True},
])
def test_streaming_mode_on_a_database_host(tmp_path, overrides):
    config = render_config(**overrides)
    assert config["wal_stream"] is True and config["wal_stream_config"] == "/etc/rtx-dr/agent.json"
    packages = templar_for(**overrides).template(trusted("{{ health_agent_packages }}"))
    assert packages == ["python3", "python3-psycopg2", "python3-botocore"]
    proc = check_config(tmp_path, config)
    assert proc.returncode == 0, proc.stderr
    assert "DR metrics, WAL stream (/etc/rtx-dr/agent.json)" in proc.stderr
    assert json.loads(proc.stdout)["wal_stream"] is True


def test_streaming_mode_follows_the_backup_agents_configuration_directory():
    config = render_config(health_agent_wal_stream=True, backup_schedule_config_dir="/srv/rtx-dr")
    assert config["wal_stream_config"] == "/srv/rtx-dr/agent.json"


def test_streaming_mode_never_on_an_application_host(tmp_path):
    config = render_config(database_host=False, health_agent_wal_stream=True)
    assert not STREAM_KEYS & set(config) and "dr_metrics" in config and config["dr_metrics"] is False
    packages = templar_for(False, health_agent_wal_stream=True).template(trusted("{{ health_agent_packages }}"))
    assert packages == ["python3", "python3-psycopg2"]
    # and the agent refuses it there: the stream is read by the primary's DR metrics
    proc = check_config(tmp_path, dict(config, wal_stream=True))
    assert proc.returncode == 2 and "wal_stream is on but dr_metrics is off" in proc.stderr

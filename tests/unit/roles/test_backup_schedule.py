# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the role rtx.dr.backup_schedule.

Always (a few seconds): the role's templates are rendered in process with
Ansible's Templar from the role's defaults/vars and the lab's inventory globals;
the rendered ``agent.json`` is checked by the agent itself (``check-config``,
run from the layout the role installs) and the units by ``systemd-analyze
verify`` when it works here.

With ``RTX_TEST_ROLE_RUN=1`` (each playbook run costs ~30 s of CPU, beyond the
unit-test budget) the role is also run for real on localhost: systemd is not
running here, so a fake ``systemctl`` (first on PATH) keeps the
enabled/active state of the units in a JSON file and answers the
``ansible.builtin.systemd_service`` module from it; every path of the role
(install dir, config dir, unit dir) points into a tmp directory. Checked:

* the module_utils copies + ``__init__.py`` files, and the installed agent runs
  from them (``check-config`` on the rendered configuration);
* ``agent.json`` content and mode 0640, secrets kept out of the output;
* the unit files (OnCalendar, Persistent, User, ExecStart, no PrivateUsers) and,
  when ``systemd-analyze`` works here, their syntax;
* timers enabled + started, daemon-reload done; second run changed=0;
  ``backup_schedule_enabled: false`` stops and disables them;
* ``--check`` on a fresh host writes nothing and fails nothing.

The real systemd run is in Molecule.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from roletest import playbook_env, trusted  # noqa: E402 pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = BIN / "ansible-playbook"
TIMERS = ("rtx-dr-backup.timer", "rtx-dr-verify.timer")
UNITS = ("rtx-dr-backup.service", "rtx-dr-verify.service") + TIMERS
SECRET = "s3cr3t-never-shown"

ROLE = REPO / "roles" / "backup_schedule"
MODULE_UTILS = REPO / "plugins" / "module_utils"
PACKAGE_DIRS = ("ansible_collections", "ansible_collections/rtx", "ansible_collections/rtx/dr",
                "ansible_collections/rtx/dr/plugins", "ansible_collections/rtx/dr/plugins/module_utils")

role_run = pytest.mark.skipif(
    os.environ.get("RTX_TEST_ROLE_RUN") != "1" or not ANSIBLE_PLAYBOOK.exists() or os.geteuid() != 0,
    reason="full role runs need RTX_TEST_ROLE_RUN=1, ansible-playbook next to the interpreter and root",
)

FAKE_SYSTEMCTL = r'''#!{python}
import json, os, sys
STATE = {state!r}
UNIT_DIR = {unit_dir!r}
args = [a for a in sys.argv[1:] if not a.startswith("-")]
try:
    with open(STATE) as handle:
        state = json.load(handle)
except FileNotFoundError:
    state = {{"calls": [], "units": {{}}}}
state["calls"].append(args)
rc = 0
if args and args[0] == "daemon-reload":
    pass
elif len(args) == 2:
    verb, unit = args
    exists = os.path.exists(os.path.join(UNIT_DIR, unit))
    unit_state = state["units"].setdefault(unit, {{"enabled": False, "active": False}})
    if verb == "show":
        print("Id=%s" % unit)
        print("LoadState=%s" % ("loaded" if exists else "not-found"))
        print("ActiveState=%s" % ("active" if unit_state["active"] else "inactive"))
        print("UnitFileState=%s" % ("enabled" if unit_state["enabled"] else "disabled"))
    elif verb == "is-enabled":
        print("enabled" if unit_state["enabled"] else "disabled")
        rc = 0 if unit_state["enabled"] else 1
    elif verb == "is-active":
        print("active" if unit_state["active"] else "inactive")
    elif not exists:
        print("Unit %s not found." % unit, file=sys.stderr)
        rc = 5
    elif verb in ("enable", "disable"):
        unit_state["enabled"] = verb == "enable"
    elif verb in ("start", "restart"):
        unit_state["active"] = True
    elif verb == "stop":
        unit_state["active"] = False
    else:
        rc = 1
with open(STATE, "w") as handle:
    json.dump(state, handle)
sys.exit(rc)
'''


@pytest.fixture
def lab(tmp_path):
    collections = tmp_path / "collections" / "ansible_collections" / "rtx"
    collections.mkdir(parents=True)
    (collections / "dr").symlink_to(REPO, target_is_directory=True)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    root = tmp_path / "host"
    for name in ("lib", "etc/rtx-dr", "systemd"):
        (root / name).mkdir(parents=True)
    (root / "etc/rtx-dr").rmdir()
    systemctl = fake_bin / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL.format(python=sys.executable, state=str(tmp_path / "systemd.json"),
                                               unit_dir=str(root / "systemd")))
    systemctl.chmod(0o755)
    yield {"tmp": tmp_path, "root": root, "bin": fake_bin, "collections": tmp_path / "collections"}
    (collections / "dr").unlink()


def role_vars(lab, **overrides):  # pylint: disable=redefined-outer-name
    root = lab["root"]
    values = {
        "ansible_python_interpreter": sys.executable,
        "backup_schedule_packages": [],
        "backup_schedule_python": sys.executable,
        "backup_schedule_install_dir": str(root / "lib"),
        "backup_schedule_config_dir": str(root / "etc/rtx-dr"),
        "backup_schedule_systemd_dir": str(root / "systemd"),
        "backup_schedule_group": "root",
        # the inventory globals the role defaults from
        "rtx_dr_backup_bucket": "rtx-dr-backups-lab",
        "rtx_dr_backup_prefix": "pgbackup/lab",
        "rtx_dr_backup_kms_key_id": "alias/rtx-dr-backups",
        "rtx_dr_backup_compression": "zstd",
        "rtx_dr_aws_endpoint_url": "http://172.30.77.1:5000",
        "rtx_dr_aws_region": "us-east-1",
        "rtx_dr_aws_access_key": "lab-access-key",
        "rtx_dr_aws_secret_key": SECRET,
        "rtx_dr_cluster_name": "lab",
        "rtx_dr_database": "rtx",
    }
    values.update(overrides)
    return values


def play(lab, check=False, **overrides):  # pylint: disable=redefined-outer-name
    tmp = lab["tmp"]
    playbook = tmp / "play.yml"
    playbook.write_text(json.dumps([{
        "name": "Schedule backups", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": role_vars(lab, **overrides),
        "roles": [{"role": "rtx.dr.backup_schedule"}],
    }]))
    env = playbook_env(tmp, lab["collections"], path_prefix=lab["bin"])
    argv = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(playbook), "--diff"] + (["--check"] if check else [])
    proc = subprocess.run(argv, cwd=str(tmp), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=300, check=False)
    out = proc.stdout.decode()
    match = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", out)
    return proc.returncode, int(match.group(1)) if match else None, out


def systemd_state(lab):  # pylint: disable=redefined-outer-name
    path = lab["tmp"] / "systemd.json"
    return json.loads(path.read_text()) if path.exists() else {"calls": [], "units": {}}


@role_run
def test_install_run_twice_then_disable(lab):  # pylint: disable=redefined-outer-name
    rc, changed, out = play(lab)
    assert rc == 0, out
    assert changed and SECRET not in out
    root = lab["root"]

    # the agent's code and its configuration
    package = root / "lib/ansible_collections/rtx/dr/plugins/module_utils"
    assert {p.name for p in package.glob("*.py")} == {p.name for p in (REPO / "plugins/module_utils").glob("*.py")} | {
        "__init__.py"}
    for parent in (package, package.parent, package.parents[1], package.parents[2], package.parents[3]):
        assert (parent / "__init__.py").exists(), parent
    config_path = root / "etc/rtx-dr/agent.json"
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o640
    assert stat.S_IMODE(config_path.parent.stat().st_mode) == 0o750
    config = json.loads(config_path.read_text())
    assert config["bucket"] == "rtx-dr-backups-lab" and config["prefix"] == "pgbackup/lab"
    assert config["kms_key_id"] == "alias/rtx-dr-backups" and config["secret_key"] == SECRET
    assert config["login_unix_socket"] == "/var/run/postgresql" and config["login_port"] == 5432
    assert config["audit_db"] == "rtx" and config["backup"] == {"timeout": 14400} and config["verify"] == {}
    proc = subprocess.run(
        [sys.executable, "-m", "ansible_collections.rtx.dr.plugins.module_utils.agent", "--config", str(config_path),
         "check-config"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "lib"), "PYTHONDONTWRITEBYTECODE": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, cwd="/",
    )
    assert proc.returncode == 0, proc.stderr.decode()
    checked = json.loads(proc.stdout)
    assert checked["verify"]["expected_kms_key_id"] == "alias/rtx-dr-backups"
    assert SECRET not in proc.stdout.decode()

    # the units
    units = {name: (root / "systemd" / name).read_text() for name in UNITS}
    backup = units["rtx-dr-backup.service"]
    assert "Type=oneshot" in backup and "User=postgres" in backup and "IOSchedulingClass=idle" in backup
    assert "Environment=PYTHONPATH=%s\n" % (root / "lib") in backup
    assert "ExecStart=%s -m ansible_collections.rtx.dr.plugins.module_utils.agent --config %s backup\n" % (
        sys.executable, config_path) in backup
    assert "TimeoutStartSec=14700" in backup
    assert "verify\n" in units["rtx-dr-verify.service"] and "--any-host" not in units["rtx-dr-verify.service"]
    assert all("PrivateUsers" not in text for text in units.values())
    assert "OnCalendar=*-*-* 02:00:00 UTC\n" in units["rtx-dr-backup.timer"]
    assert "OnCalendar=*-*-* 06:00:00 UTC\n" in units["rtx-dr-verify.timer"]
    for timer in TIMERS:
        assert "Persistent=true" in units[timer] and "RandomizedDelaySec=0" in units[timer]
    state = systemd_state(lab)
    assert ["daemon-reload"] in state["calls"]
    for timer in TIMERS:
        assert state["units"][timer] == {"enabled": True, "active": True}
    for service in ("rtx-dr-backup.service", "rtx-dr-verify.service"):
        assert ["start", service] not in state["calls"]  # deploying never takes a backup

    rc, changed, out = play(lab)
    assert rc == 0 and changed == 0, out

    rc, changed, out = play(lab, backup_schedule_enabled=False, backup_schedule_full_on_calendar="*-*-* 03:30:00 UTC")
    assert rc == 0, out
    assert "OnCalendar=*-*-* 03:30:00 UTC\n" in (root / "systemd/rtx-dr-backup.timer").read_text()
    for timer in TIMERS:
        assert systemd_state(lab)["units"][timer] == {"enabled": False, "active": False}


@role_run
def test_check_mode_on_a_fresh_host(lab):  # pylint: disable=redefined-outer-name
    rc, changed, out = play(lab, check=True)
    assert rc == 0, out
    assert changed and SECRET not in out
    assert not list((lab["root"] / "systemd").iterdir()) and not (lab["root"] / "etc/rtx-dr").exists()
    assert not list((lab["root"] / "lib").iterdir())
    assert systemd_state(lab)["units"] == {}


@role_run
def test_missing_bucket_is_refused(lab):  # pylint: disable=redefined-outer-name
    rc, dummy, out = play(lab, rtx_dr_backup_bucket="")
    assert rc != 0 and "backup_schedule_bucket" in out


# --------------------------------------------------------------------------
# rendering in process (always)
# --------------------------------------------------------------------------


def render(tmp_path, **overrides):
    """``{template name without .j2: text}`` rendered as the role would for a lab host."""
    import yaml  # pylint: disable=import-outside-toplevel
    from ansible.parsing.dataloader import DataLoader  # pylint: disable=import-outside-toplevel
    from ansible.template import Templar  # pylint: disable=import-outside-toplevel

    variables = {}
    for name in ("defaults/main.yml", "vars/main.yml"):
        variables.update(trusted(yaml.safe_load((ROLE / name).read_text())))
    lab_vars = {"root": tmp_path / "host"}
    values = role_vars(lab_vars)
    values.pop("ansible_python_interpreter")
    values.update(overrides)
    variables.update(trusted(values))
    variables.update(role_path=str(ROLE), ansible_managed="Ansible managed", inventory_hostname="db1",
                     ansible_check_mode=False)
    templar = Templar(loader=DataLoader(), variables=variables)
    return {path.name[:-3]: templar.template(trusted(path.read_text())) for path in (ROLE / "templates").glob("*.j2")}


def install_layout(root):
    """The files the role installs under backup_schedule_install_dir."""
    for name in PACKAGE_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").write_text("")
    for source in MODULE_UTILS.glob("*.py"):
        (root / PACKAGE_DIRS[-1] / source.name).write_text(source.read_text())


def check_config(tmp_path, rendered, module):
    """``<module> check-config`` of the rendered agent.json, run as on a host (installed layout, no ansible)."""
    lib = tmp_path / "lib"
    if not lib.exists():
        install_layout(lib)
    path = tmp_path / "agent.json"
    path.write_text(rendered["agent.json"])
    proc = subprocess.run(
        [sys.executable, "-m", "ansible_collections.rtx.dr.plugins.module_utils." + module, "--config", str(path),
         "check-config"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(lib), "PYTHONDONTWRITEBYTECODE": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, cwd=str(tmp_path), timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def analyze_units(tmp_path, rendered, names):
    """``systemd-analyze verify`` of the rendered units ``names`` (as root); no unknown key, section or parse error."""
    analyze = "/usr/bin/systemd-analyze"
    if not os.access(analyze, os.X_OK):
        return
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name in names:
        (unit_dir / name).write_text(rendered[name].replace("User=postgres", "User=root").replace(
            "Group=postgres", "Group=root"))
    proc = subprocess.run([analyze, "verify"] + [str(unit_dir / name) for name in names], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin"}, timeout=60, check=False,
                          cwd=str(tmp_path))
    text = proc.stdout.decode()
    problems = [line for line in text.splitlines()
                if "Unknown key" in line or "Unknown section" in line or "Failed to parse" in line]
    assert not problems, text


def test_rendered_configuration_is_valid_for_the_agent(tmp_path):
    rendered = render(tmp_path, backup_schedule_verify_options={"checksums": False})
    config = json.loads(rendered["agent.json"])
    assert config == {
        "access_key": "lab-access-key", "audit_db": "rtx", "audit_schema": "dr", "bucket": "rtx-dr-backups-lab",
        "cluster_name": "lab", "compression": "zstd", "encryption": "aws:kms", "endpoint_url": "http://172.30.77.1:5000",
        "kms_key_id": "alias/rtx-dr-backups", "login_port": 5432, "login_unix_socket": "/var/run/postgresql",
        "login_user": "postgres", "prefix": "pgbackup/lab", "region": "us-east-1", "secret_key": SECRET,
        "backup": {"timeout": 14400}, "verify": {"checksums": False},
        "wal": {"push_batch": 8, "push_parallel": 2, "spool_dir": "/var/lib/rtx-dr/wal-spool"},
    }
    proc = check_config(tmp_path, rendered, "agent")
    checked = json.loads(proc.stdout)
    assert checked["verify"]["expected_kms_key_id"] == "alias/rtx-dr-backups" and checked["verify"]["checksums"] is False
    assert checked["backup"]["timeout"] == 14400 and SECRET not in proc.stdout.decode()


@pytest.mark.parametrize("region,order", [("west", "replica_first"), ("east", "primary_first")])
def test_replica_settings_in_the_wal_section(tmp_path, region, order):
    rendered = render(tmp_path, rtx_dr_backup_replica_bucket="rtx-dr-backups-lab-west",
                      rtx_dr_backup_replica_region="us-west-2", rtx_dr_backup_replica_site="west", rtx_dr_region=region,
                      backup_schedule_wal_options={"compression": "lz4"})
    config = json.loads(rendered["agent.json"])
    assert config["wal"] == {"replica_bucket": "rtx-dr-backups-lab-west", "replica_region": "us-west-2",
                             "replica_kms_key_id": "alias/rtx-dr-backups", "replica_mode": "sync",
                             "fetch_order": order, "compression": "lz4", "push_batch": 8, "push_parallel": 2,
                             "spool_dir": "/var/lib/rtx-dr/wal-spool"}
    assert not {k for k in config if k.startswith("replica")}  # the backup agent refuses unknown top-level keys
    for module in ("agent", "wal_agent"):
        check_config(tmp_path, rendered, module)


def test_empty_globals_are_left_out(tmp_path):
    config = json.loads(render(tmp_path, rtx_dr_aws_endpoint_url="", rtx_dr_aws_access_key="",
                               rtx_dr_aws_secret_key="", rtx_dr_backup_prefix="")["agent.json"])
    assert not {"endpoint_url", "access_key", "secret_key", "prefix"} & set(config)


def test_rendered_units(tmp_path):
    units = render(tmp_path, backup_schedule_verify_any_host=True,
                   backup_schedule_verify_on_calendar="Mon *-*-* 07:00:00 UTC")
    root = tmp_path / "host"
    backup = units["rtx-dr-backup.service"]
    assert "Type=oneshot" in backup and "User=postgres\n" in backup and "IOSchedulingClass=idle" in backup
    assert "Environment=PYTHONPATH=%s\n" % (root / "lib") in backup
    assert "ExecStart=%s -m ansible_collections.rtx.dr.plugins.module_utils.agent --config %s backup\n" % (
        sys.executable, root / "etc/rtx-dr/agent.json") in backup
    assert "TimeoutStartSec=14700" in backup and "ProtectSystem=strict" in backup
    assert units["rtx-dr-verify.service"].count(" verify --any-host\n") == 1
    assert all("PrivateUsers" not in text for name, text in units.items() if name != "agent.json")
    assert "OnCalendar=*-*-* 02:00:00 UTC\n" in units["rtx-dr-backup.timer"]
    assert "OnCalendar=Mon *-*-* 07:00:00 UTC\n" in units["rtx-dr-verify.timer"]
    for timer in TIMERS:
        assert "Persistent=true" in units[timer] and "RandomizedDelaySec=0" in units[timer]
        assert "WantedBy=timers.target" in units[timer]

    analyze_units(tmp_path, units, UNITS)


STREAM_UNITS = ("rtx-dr-wal-receive.service", "rtx-dr-wal-stream.service")


def test_streaming_mode_settings_and_units(tmp_path):
    """backup_schedule_wal_stream: the wal section gets the stream keys, the two services run the WAL agent."""
    off = json.loads(render(tmp_path)["agent.json"])["wal"]
    assert not {"stream_dir", "stream_interval", "receivewal_path", "fetch_streamed_partial"} & set(off)
    rendered = render(tmp_path, backup_schedule_wal_stream=True, backup_schedule_wal_stream_interval=0.5,
                      backup_schedule_wal_fetch_streamed_partial=True, rtx_dr_pg_version=15)
    config = json.loads(rendered["agent.json"])
    assert config["wal"] == {"push_batch": 8, "push_parallel": 2, "spool_dir": "/var/lib/rtx-dr/wal-spool",
                             "stream_dir": "/var/lib/rtx-dr/wal-stream", "stream_interval": 0.5,
                             "receivewal_path": "/usr/lib/postgresql/15/bin/pg_receivewal",
                             "fetch_streamed_partial": True}
    root = tmp_path / "host"
    command = "%s -m ansible_collections.rtx.dr.plugins.module_utils.wal_agent --config %s" % (
        sys.executable, root / "etc/rtx-dr/agent.json")
    for name, sub in zip(STREAM_UNITS, ("stream-receive", "stream-upload")):
        unit = rendered[name]
        assert "ExecStart=%s %s\n" % (command, sub) in unit
        assert "Type=simple" in unit and "Restart=always" in unit and "RestartSec=10" in unit
        assert "User=postgres\n" in unit and "ProtectSystem=strict" in unit and "PrivateUsers" not in unit
        assert "ReadWritePaths=/var/lib/rtx-dr/wal-stream\n" in unit and "WantedBy=multi-user.target" in unit
    assert "KillMode=mixed" in rendered["rtx-dr-wal-receive.service"]

    # the WAL agent accepts the section (check-config validates the stream options)
    check_config(tmp_path, rendered, "wal_agent")

    analyze_units(tmp_path, rendered, STREAM_UNITS)

# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tests of the role rtx.dr.agent_install (atomic install of the agents' code).

The role is run for real with ``ansible-playbook -c local`` into a tmp directory
(``agent_install_dir`` there, ``agent_install_packages: []``: no apt), as root
(the role makes the files root's). The module_utils it installs come from a
source directory of the test's own, passed as the extra variable
``_agent_install_module_utils_src``: small made-up modules for most tests (fast,
and changed at will), a snapshot of the collection's module_utils for the test
that checks the real code. Checked:

* the install path is a link to ``<path>.releases/<16 hex digits>`` holding
  every module_utils file, the ``__init__.py`` files and the right modes; a
  second run changes nothing (changed=0, ``agent_install_changed`` false);
* a changed file makes a new release and switches the link; a process started
  before the switch keeps importing from its own release (the pin in the
  top-level ``__init__.py``), a new one gets the new code; releases beyond
  ``agent_install_keep_releases`` are pruned, never the current or previous one;
  switching back to a kept release copies nothing; the files that differ from
  the current release are named;
* ``--check`` changes nothing and fails nothing (fresh host, new code, and the
  one-time migration);
* the one-time migration of a real directory from an older version, with both
  mechanisms of its script (renameat2 exchange, two renames), and the removal
  of what an interrupted migration left;
* the link switch of ``ansible.builtin.file`` is a rename of a new link over
  the old one (what makes it atomic), and the callers' wiring.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roletest import playbook_env  # noqa: E402 pylint: disable=wrong-import-position

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = BIN / "ansible-playbook"
ROLE = REPO / "roles" / "agent_install"
MODULE_UTILS = REPO / "plugins" / "module_utils"
PACKAGE = "ansible_collections/rtx/dr/plugins/module_utils"
PACKAGE_DIRS = ("ansible_collections", "ansible_collections/rtx", "ansible_collections/rtx/dr",
                "ansible_collections/rtx/dr/plugins", PACKAGE)
RELEASE_NAME = re.compile(r"^[0-9a-f]{16}$")

role_run = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists() or os.geteuid() != 0,
    reason="role runs need ansible-playbook next to the interpreter and root (the files are made root's)",
)


def write_sources(src, version, extra=None):
    """Made-up module_utils: ``version.py`` (VERSION), ``helper.py`` and the optional ``extra`` files."""
    src.mkdir(parents=True, exist_ok=True)
    (src / "version.py").write_text('VERSION = "%s"\n' % version)
    (src / "helper.py").write_text("def answer():\n    return 42\n")
    for name, text in (extra or {}).items():
        (src / name).write_text(text)


@pytest.fixture
def lab(tmp_path):
    collections = tmp_path / "collections" / "ansible_collections" / "rtx"
    collections.mkdir(parents=True)
    (collections / "dr").symlink_to(REPO, target_is_directory=True)
    (tmp_path / "host").mkdir()
    src = tmp_path / "src"
    write_sources(src, "1")
    link = tmp_path / "host" / "rtx-dr"
    yield {"tmp": tmp_path, "collections": tmp_path / "collections", "src": src, "link": link,
           "releases": Path(str(link) + ".releases")}
    (collections / "dr").unlink()


def play(lab, check=False, src=None, **overrides):  # pylint: disable=redefined-outer-name
    """Run the role; ``(rc, changed count, output, agent_install_changed, agent_install_release)``."""
    tmp = lab["tmp"]
    values = {
        "ansible_python_interpreter": sys.executable,
        "agent_install_dir": str(lab["link"]),
        "agent_install_packages": [],
        "agent_install_python": sys.executable,
    }
    values.update(overrides)
    playbook = tmp / "play.yml"
    playbook.write_text(json.dumps([{
        "name": "Install the agent", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": values,
        "roles": [{"role": "rtx.dr.agent_install"}],
        "post_tasks": [{"name": "Result", "ansible.builtin.debug": {
            "msg": "AGENT_INSTALL changed={{ agent_install_changed }} release={{ agent_install_release }}"}}],
    }]))
    extra = tmp / "extra.json"
    extra.write_text(json.dumps({"_agent_install_module_utils_src": str(src or lab["src"])}))
    env = playbook_env(tmp, lab["collections"])
    argv = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(playbook), "-e", "@%s" % extra, "-v"]
    argv += ["--check", "--diff"] if check else []
    proc = subprocess.run(argv, cwd=str(tmp), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=600, check=False)
    out = proc.stdout.decode()
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", out)
    result = re.search(r"AGENT_INSTALL changed=(True|False) release=(\S+?)\"?$", out, re.MULTILINE)
    return (proc.returncode, int(recap.group(1)) if recap else None, out,
            result.group(1) == "True" if result else None, result.group(2) if result else None)


def releases(lab):  # pylint: disable=redefined-outer-name
    path = lab["releases"]
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def current(lab):  # pylint: disable=redefined-outer-name
    """The release the link points to (asserting it is a link to a release)."""
    link = lab["link"]
    assert link.is_symlink(), "%s is not a link" % link
    target = Path(os.readlink(link))
    assert target.parent == lab["releases"] and RELEASE_NAME.match(target.name), target
    return target


def check_release(release, src):
    """The release holds every source file (same bytes), the package files, root's modes."""
    package = release / PACKAGE
    assert sorted(p.name for p in package.iterdir()) == sorted(
        [p.name for p in src.glob("*.py")] + ["__init__.py"])
    for source in src.glob("*.py"):
        assert (package / source.name).read_bytes() == source.read_bytes(), source.name
        info = (package / source.name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o644 and info.st_uid == 0, source.name
    for name in PACKAGE_DIRS:
        info = (release / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o755 and info.st_uid == 0, name
        assert stat.S_IMODE((release / name / "__init__.py").stat().st_mode) == 0o644
    assert "__path__[:] = [_os.path.realpath(" in (release / "ansible_collections/__init__.py").read_text()
    for name in PACKAGE_DIRS[1:]:
        assert (release / name / "__init__.py").read_text() == ""


def run_python(lab, code):  # pylint: disable=redefined-outer-name
    """``code`` run as the agents run: PYTHONPATH=<the link>, no site-packages (no ansible there)."""
    env = {"PYTHONPATH": str(lab["link"]), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-S", "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=False, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().strip()


VERSION_CODE = ("from ansible_collections.rtx.dr.plugins.module_utils import version; "
                "print(version.VERSION, version.__file__)")


# --------------------------------------------------------------------------
# role runs
# --------------------------------------------------------------------------


@role_run
def test_install_is_a_link_to_a_complete_release_and_idempotent(lab):  # pylint: disable=redefined-outer-name
    rc, changed, out, code_changed, release = play(lab)
    assert rc == 0, out
    assert changed and code_changed is True, out
    target = current(lab)
    assert release == str(target) and releases(lab) == [target.name]
    check_release(target, lab["src"])
    version, path = run_python(lab, VERSION_CODE).split()
    assert version == "1" and path == str(target / PACKAGE / "version.py")

    rc, changed, out, code_changed, release = play(lab)
    assert rc == 0 and changed == 0 and code_changed is False, out
    assert current(lab) == target and release == str(target) and releases(lab) == [target.name]


@role_run
def test_new_code_switches_the_link_and_old_releases_are_pruned(lab):  # pylint: disable=redefined-outer-name
    rc, dummy, out, dummy, dummy = play(lab)
    assert rc == 0, out
    first = current(lab)

    # an agent started on the first release, importing lazily (as the agents do) after the switch
    agent = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-S", "-c",
         "import sys\nimport ansible_collections.rtx.dr.plugins.module_utils\nprint('ready', flush=True)\n"
         "sys.stdin.readline()\n" + VERSION_CODE],
        env={"PYTHONPATH": str(lab["link"]), "PYTHONDONTWRITEBYTECODE": "1"}, cwd="/",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert agent.stdout.readline().strip() == b"ready"

        write_sources(lab["src"], "2")
        rc, changed, out, code_changed, release = play(lab)
        assert rc == 0 and changed and code_changed is True, out
        second = current(lab)
        assert second != first and release == str(second)
        assert releases(lab) == sorted([first.name, second.name])  # the previous one is kept
        assert re.search(r'"modified": \[\s*"version.py"\s*\]', out) and '"current": "%s"' % first in out, out
        check_release(second, lab["src"])
        assert (first / PACKAGE / "version.py").read_text() == 'VERSION = "1"\n'

        stdout, stderr = agent.communicate(b"\n", timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, stderr.decode()
    assert stdout.decode().split() == ["1", str(first / PACKAGE / "version.py")]
    assert run_python(lab, VERSION_CODE).split() == ["2", str(second / PACKAGE / "version.py")]

    # a third release: the first goes (keep 2: the current and the previous one)
    write_sources(lab["src"], "3", extra={"added.py": "X = 1\n"})
    rc, changed, out, code_changed, dummy = play(lab)
    assert rc == 0 and changed and code_changed is True, out
    third = current(lab)
    assert releases(lab) == sorted([second.name, third.name]), out
    assert re.search(r'"added": \[\s*"added.py"\s*\]', out), out
    check_release(third, lab["src"])

    # back to the second release's code: the kept release is reused as it is, only the link changes
    (lab["src"] / "added.py").unlink()
    write_sources(lab["src"], "2")
    rc, changed, out, code_changed, dummy = play(lab)
    assert rc == 0 and changed == 1 and code_changed is True, out
    assert current(lab) == second and releases(lab) == sorted([second.name, third.name])

    # keep 1: the previous release goes; a file of the current release altered on the host is put back (and
    # reported as a change of the code) in the same run
    (second / PACKAGE / "helper.py").write_text("broken\n")
    rc, changed, out, code_changed, dummy = play(lab, agent_install_keep_releases=1)
    assert rc == 0 and changed == 2 and code_changed is True, out
    assert current(lab) == second and releases(lab) == [second.name]
    check_release(second, lab["src"])


@role_run
def test_check_mode_changes_nothing(lab):  # pylint: disable=redefined-outer-name
    rc, changed, out, code_changed, dummy = play(lab, check=True)
    assert rc == 0, out
    assert changed and code_changed is True, out
    assert not list((lab["tmp"] / "host").iterdir())

    rc, dummy, out, dummy, dummy = play(lab)
    assert rc == 0, out
    first = current(lab)
    write_sources(lab["src"], "2")
    rc, changed, out, code_changed, release = play(lab, check=True)
    assert rc == 0 and changed and code_changed is True, out
    assert current(lab) == first and releases(lab) == [first.name] and release != str(first)
    assert (first / PACKAGE / "version.py").read_text() == 'VERSION = "1"\n'


def old_layout(path, src):
    """The layout of the versions before the releases: a real directory, written file by file."""
    for name in PACKAGE_DIRS:
        (path / name).mkdir(parents=True, exist_ok=True)
        (path / name / "__init__.py").write_text("")
    for source in src.glob("*.py"):
        shutil.copyfile(source, path / PACKAGE / source.name)
    (path / PACKAGE / "removed_since.py").write_text("X = 1\n")


@role_run
def test_one_time_migration_of_an_older_directory(lab):  # pylint: disable=redefined-outer-name
    link = lab["link"]
    old_layout(link, lab["src"])
    write_sources(lab["src"], "2")

    rc, changed, out, code_changed, dummy = play(lab, check=True)
    assert rc == 0 and changed and code_changed is True, out
    assert "would be replaced by a link" in out
    assert not link.is_symlink() and (link / PACKAGE / "removed_since.py").exists()
    assert not lab["releases"].exists()

    rc, changed, out, code_changed, dummy = play(lab)
    assert rc == 0 and changed and code_changed is True, out
    assert re.search(r"migrated \((renameat2 exchange|two renames)\)", out), out
    target = current(lab)
    check_release(target, lab["src"])
    assert releases(lab) == [target.name]  # no .migrating leftovers
    assert sorted(p.name for p in link.parent.iterdir()) == sorted([link.name, lab["releases"].name])
    assert run_python(lab, VERSION_CODE).split()[0] == "2"

    # what an interrupted migration leaves (the staged link, the old directory) goes on the next run
    (lab["releases"] / ".migrating").symlink_to(target)
    (lab["releases"] / ".migrating-old" / "sub").mkdir(parents=True)
    rc, changed, out, code_changed, dummy = play(lab)
    assert rc == 0 and changed == 1 and code_changed is False, out
    assert releases(lab) == [target.name] and current(lab) == target


@role_run
def test_the_collections_module_utils(lab, tmp_path):  # pylint: disable=redefined-outer-name
    """The real code (a snapshot: the working tree may change meanwhile): installed whole, the agents import."""
    src = tmp_path / "snapshot"  # not "module_utils": beside the playbook that would shadow ansible's own
    src.mkdir()
    for source in MODULE_UTILS.glob("*.py"):
        shutil.copyfile(source, src / source.name)
    rc, changed, out, code_changed, dummy = play(lab, src=src)
    assert rc == 0 and changed and code_changed is True, out
    target = current(lab)
    check_release(target, src)
    agents = {"agent.py", "wal_agent.py", "health_agent.py", "fence_guard.py", "walstream.py"}
    assert agents <= {p.name for p in (target / PACKAGE).glob("*.py")}
    run_python(lab, "import ansible_collections.rtx.dr.plugins.module_utils.wal_agent, "
                    "ansible_collections.rtx.dr.plugins.module_utils.agent")


@role_run
def test_bad_settings_are_refused(lab):  # pylint: disable=redefined-outer-name
    rc, dummy, out, dummy, dummy = play(lab, agent_install_keep_releases=0)
    assert rc != 0 and "agent_install_keep_releases at least 1" in out
    rc, dummy, out, dummy, dummy = play(lab, src=lab["tmp"] / "empty")
    assert rc != 0 and "module_utils must be found" in out
    assert not lab["link"].exists() and not lab["releases"].exists()


# --------------------------------------------------------------------------
# without a role run
# --------------------------------------------------------------------------


def migrate_script():
    return yaml.safe_load((ROLE / "vars/main.yml").read_text())["_agent_install_migrate_script"]


@pytest.mark.parametrize("renameat2,mechanism", [(True, "renameat2 exchange"), (False, "two renames")])
def test_migration_script(tmp_path, renameat2, mechanism):
    path, release = tmp_path / "rtx-dr", tmp_path / "rtx-dr.releases" / "0123456789abcdef"
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "old.py").write_text("")
    release.mkdir(parents=True)
    staged, old = release.parent / ".migrating", release.parent / ".migrating-old"
    (old / "left").mkdir(parents=True)  # left by an interrupted run
    prelude = "" if renameat2 else (
        "import ctypes\n\ndef _unavailable(*args, **kwargs):\n    raise OSError('no renameat2 here')\n\n"
        "ctypes.CDLL = _unavailable\n")
    argv = [sys.executable, "-c", prelude + migrate_script(), str(path), str(release), str(staged), str(old)]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "migrated (%s)" % mechanism
    assert path.is_symlink() and os.readlink(path) == str(release)
    assert not os.path.lexists(staged) and not os.path.lexists(old)
    # nothing to do the second time (the path is a link): no output, no change
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, timeout=60)
    assert proc.returncode == 0 and proc.stdout == b"" and os.readlink(path) == str(release)


def test_the_file_module_replaces_a_link_with_a_rename():
    """ansible.builtin.file state=link force=true on an existing link: a new link, renamed over the old one."""
    from ansible.modules import file as file_module  # pylint: disable=import-outside-toplevel

    source = inspect.getsource(file_module.ensure_symlink)
    assert "os.symlink(b_src, b_tmppath)" in source and "os.rename(b_tmppath, b_path)" in source
    switch = [t for t in yaml.safe_load((ROLE / "tasks/main.yml").read_text()) if "Switch" in t["name"]]
    assert len(switch) == 1 and switch[0]["ansible.builtin.file"]["state"] == "link"
    assert switch[0]["ansible.builtin.file"]["force"] is True


def test_arguments_and_defaults_agree():
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    options = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    for name, value in defaults.items():
        assert options[name]["default"] == value, name
    assert defaults["agent_install_keep_releases"] == 2


@pytest.mark.parametrize("role,prefix", [("backup_schedule", "backup_schedule"), ("health_agent", "health_agent")])
def test_callers_pass_their_python(role, prefix):
    tasks = yaml.safe_load((REPO / "roles" / role / "tasks/main.yml").read_text())
    include = [t for t in tasks if t.get("ansible.builtin.include_role", {}).get("name") == "rtx.dr.agent_install"]
    assert len(include) == 1
    assert include[0]["vars"] == {"agent_install_dir": "{{ %s_install_dir }}" % prefix,
                                  "agent_install_packages": "{{ %s_packages }}" % prefix,
                                  "agent_install_python": "{{ %s_python }}" % prefix}


def test_backup_schedule_restarts_the_streaming_services_on_new_code():
    tasks = yaml.safe_load((REPO / "roles/backup_schedule/tasks/main.yml").read_text())
    names = [t["name"] for t in tasks]
    install = names.index("Install the agent's code (the collection's module_utils)")
    restart = tasks[install + 1]
    assert restart["when"] == "agent_install_changed | bool" and restart["changed_when"] is True
    handlers = yaml.safe_load((REPO / "roles/backup_schedule/handlers/main.yml").read_text())
    assert restart["notify"] in [h["name"] for h in handlers]
    assert restart["notify"] == "Restart the WAL streaming services"

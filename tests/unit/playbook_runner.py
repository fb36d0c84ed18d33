# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a throwaway playbook (``site.yml`` + ``inventory.json`` + ``extra.json`` in ``work``) for the role tests.

Ansible's home and temporary directories go to ``home`` and the collections
path to ``collections_dir``: nothing is written to ~/.ansible, and AWS_*/ANSIBLE_*
variables of the caller's environment never leak in.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def run_playbook(work, home, collections_dir, extra_env=None, check=False, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update({
        "ANSIBLE_CONFIG": str(Path(work) / "ansible.cfg"),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(Path(home) / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(Path(home) / "tmp"),
        "ANSIBLE_COLLECTIONS_PATH": str(collections_dir),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    })
    env.update(extra_env or {})
    cmd = [str(ANSIBLE_PLAYBOOK), "-i", "inventory.json", "site.yml", "-e", "@extra.json"]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    proc.output = proc.stdout + proc.stderr
    return proc


def recap(proc):
    """``{'ok': n, 'changed': n, ...}`` of localhost from the play recap."""
    match = re.search(r"^localhost\s+:\s+(.*)$", proc.stdout, re.MULTILINE)
    assert match, proc.output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}

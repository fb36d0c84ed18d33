# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the role tests: rendering a role's files in process, and the environment of a throwaway
ansible-playbook run against localhost."""

from __future__ import annotations

import os


def trusted(value):
    """``value`` with every string marked as a trusted template (ansible-core 2.19 renders only those)."""
    from ansible.template import trust_as_template  # pylint: disable=import-outside-toplevel

    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return trust_as_template(value) if isinstance(value, str) else value


def playbook_env(tmp, collections, path_prefix=None):
    """Environment of an ansible-playbook run whose state all lives below ``tmp`` (a pathlib.Path), with this
    checkout as rtx.dr (``collections``); ``path_prefix`` goes in front of the PATH (fake binaries)."""
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return {
        "PATH": "%s:%s" % (path_prefix, path) if path_prefix else path,
        "HOME": str(tmp),
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
    }

#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2026, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: chaos_disk_fill
short_description: Fill the file system of a directory to a used percentage (chaos test), or remove the fill
version_added: 0.1.0
description:
  - With O(state=present), allocates one file (C(posix_fallocate), no data written) in O(path) so that its file
    system reaches O(percent) used, computed like the C(disk) health check (statvfs blocks available to
    unprivileged users).
  - Never leaves less than O(min_free_mb) available; refuses when the file system is already at or above O(percent).
  - With O(state=absent), removes the file. Used by C(playbooks/chaos.yml), which always removes it again.
options:
  path:
    description: Directory on the file system to fill, e.g. the PostgreSQL data directory's parent.
    type: path
    required: true
  percent:
    description: Used percentage to reach.
    type: float
    default: 92
  min_free_mb:
    description: MiB that must stay available whatever O(percent) asks.
    type: int
    default: 2048
  file_name:
    description: Name of the fill file in O(path).
    type: str
    default: .rtx-dr-chaos-fill
  state:
    description: V(present) fills, V(absent) removes the fill file.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
    details: Reports the plan (bytes, used percentage before and after) without allocating or removing.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - rtx.dr maintainers (@rtx-dr)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
"""

EXAMPLES = r"""
- name: Fill the data file system of a standby to 92 %
  rtx.dr.chaos_disk_fill:
    path: /var/lib/postgresql
    percent: 92
    min_free_mb: 2048

- name: Remove the fill
  rtx.dr.chaos_disk_fill:
    path: /var/lib/postgresql
    state: absent
"""

RETURN = r"""
path:
  description: The fill file.
  returned: always
  type: str
  sample: /var/lib/postgresql/.rtx-dr-chaos-fill
bytes:
  description: Size of the fill file allocated (V(state=present)) or removed (V(state=absent)).
  returned: always
  type: int
  sample: 52613349376
used_before:
  description: Used percentage without the fill file.
  returned: when O(state=present)
  type: float
  sample: 72.6
used_after:
  description: Used percentage with the fill file (planned in check mode).
  returned: when O(state=present)
  type: float
  sample: 92.0
capped:
  description: True when O(min_free_mb) lowered the fill below O(percent).
  returned: when O(state=present)
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rtx.dr.plugins.module_utils.chaos import fill_disk
from ansible_collections.rtx.dr.plugins.module_utils.chaos import remove_fill
from ansible_collections.rtx.dr.plugins.module_utils.errors import run_module


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        percent=dict(type="float", default=92.0),
        min_free_mb=dict(type="int", default=2048),
        file_name=dict(type="str", default=".rtx-dr-chaos-fill"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )


def apply(module):
    params = module.params
    if "/" in params["file_name"] or params["file_name"] in ("", ".", ".."):
        module.fail_json(msg="file_name must be a plain file name, got %r" % params["file_name"])
    if params["state"] == "absent":
        return remove_fill(params["path"], module.check_mode, file_name=params["file_name"])
    result = fill_disk(params["path"], params["percent"], params["min_free_mb"], module.check_mode,
                       file_name=params["file_name"])
    result.pop("refused", None)
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run_module(module, apply)


if __name__ == "__main__":
    main()

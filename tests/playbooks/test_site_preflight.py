# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""site.yml refuses a broken inventory layout before it contacts or changes any host.

The hosts of these inventories do not exist: if the preflight let the run go
on, the next play would fail to connect instead of printing the layout error.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = Path(sys.executable).with_name('ansible-playbook')


def run_site(tmp_path, hosts_yaml):
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(hosts_yaml)
    env = dict(os.environ,
               ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'),
               ANSIBLE_COLLECTIONS_PATH=str(REPO / '.lab' / 'collections'),
               ANSIBLE_NOCOLOR='1')
    return subprocess.run([str(PLAYBOOK_BIN), '-i', str(inventory), str(REPO / 'playbooks' / 'site.yml')],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


BASE = """
all:
  vars:
    ansible_connection: community.docker.docker
    rtx_dr_replication_password: x
  children:
    postgres:
      hosts:
        ghost-1: {rtx_dr_pg_role: primary}
        ghost-2: %s
        ghost-3: {rtx_dr_pg_role: standby, rtx_dr_pg_upstream: ghost-1}
"""


@pytest.mark.skipif(not (REPO / '.lab' / 'collections' / 'ansible_collections' / 'rtx' / 'dr').exists(),
                    reason='run through `make unit`, which links the collection')
@pytest.mark.parametrize('ghost2, expected', [
    ('{rtx_dr_pg_role: primary}', 'ghost-1, ghost-2 are all marked rtx_dr_pg_role: primary'),
    ('{rtx_dr_pg_role: standby, rtx_dr_pg_upstream: ghost-2}', 'ghost-2: rtx_dr_pg_upstream points at itself'),
    ('{rtx_dr_pg_role: standby}', 'ghost-2: is a standby without rtx_dr_pg_upstream'),
])
def test_bad_layout_fails_in_preflight_naming_host_and_variable(tmp_path, ghost2, expected):
    result = run_site(tmp_path, BASE % ghost2)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'nothing was changed' in output
    assert expected in output, output[-3000:]
    # The run stopped in the preflight play: no later play was started.
    assert 'Configure PostgreSQL on every database host' not in output

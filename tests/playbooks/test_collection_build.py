# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection builds without lab/CI files, installs, and its content is found."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(args, **kwargs):
    env = {k: v for k, v in os.environ.items() if not k.startswith('ANSIBLE_')}
    env.update(kwargs.pop('env', {}))
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False, **kwargs)


def test_build_excludes_lab_files_and_installs(tmp_path):
    built = run([str(BIN / 'ansible-galaxy'), 'collection', 'build', '--output-path', str(tmp_path), str(REPO)],
                cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    tarball = tmp_path / 'rtx-dr-0.1.0.tar.gz'
    with tarfile.open(tarball) as tar:
        top = {name.split('/')[0] for name in tar.getnames()}
    assert {'plugins', 'roles', 'playbooks', 'meta', 'docs', 'MANIFEST.json'} <= top
    assert not top & {'lab', 'molecule', '.ci', '.venv', '.lab', 'bench', 'Makefile', 'ansible.cfg', 'build'}, top

    dest = tmp_path / 'collections'
    installed = run([str(BIN / 'ansible-galaxy'), 'collection', 'install', '--offline', '--force', '--no-deps',
                     '-p', str(dest), str(tarball)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    env = {'ANSIBLE_COLLECTIONS_PATH': str(dest)}
    for args in (['rtx.dr.pg_basebackup'], ['rtx.dr.s3_backup_verify'], ['rtx.dr.pg_node_info'],
                 ['-t', 'role', 'rtx.dr.replication']):
        doc = run([str(BIN / 'ansible-doc')] + args, cwd=tmp_path, env=env)
        assert doc.returncode == 0 and str(dest) in doc.stdout, (args, doc.stderr)

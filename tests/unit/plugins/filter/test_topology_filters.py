# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filters read inventory variables and registered results correctly."""

from ansible_collections.rtx.dr.plugins.filter.topology import (
    FilterModule, pg_layout, pg_node_facts, pg_replication_line)


def test_pg_layout_reads_inventory_variables():
    hostvars = {
        'a': {'rtx_dr_pg_role': 'primary'},
        'b': {'rtx_dr_pg_role': 'standby', 'rtx_dr_pg_upstream': 'a', 'rtx_dr_pg_sync': True},
    }
    assert pg_layout(hostvars, ['a', 'b']) == {
        'a': {'role': 'primary', 'upstream': None, 'sync': False},
        'b': {'role': 'standby', 'upstream': 'a', 'sync': True},
    }


def test_pg_node_facts_marks_unreachable_and_failed_hosts():
    hostvars = {
        'a': {'topology_node': {'reachable': True, 'in_recovery': False, 'system_identifier': '1'}},
        'b': {'topology_node': {'unreachable': True, 'msg': 'container not running'}},
        'c': {},
    }
    facts = pg_node_facts(hostvars, ['a', 'b', 'c'])
    assert facts['a']['system_identifier'] == '1'
    assert facts['b'] == {'reachable': False, 'error': 'container not running'}
    assert facts['c']['reachable'] is False


def test_replication_line_and_registration():
    line = pg_replication_line({'application_name': 'db-east-2', 'state': 'streaming', 'sync_state': 'sync',
                                'replay_lsn': '0/3000060', 'replay_lag_bytes': 0, 'replay_lag': 0.0015})
    assert 'db-east-2' in line and 'sync' in line and '0/3000060' in line and '(0.002 s)' in line
    assert set(FilterModule().filters()) >= {'pg_layout', 'pg_layout_errors', 'pg_assess_cluster',
                                             'pg_node_facts', 'pg_sync_standby_names', 'pg_slot_name'}

# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filters read inventory variables and registered results correctly."""

from ansible_collections.rtx.dr.plugins.filter.topology import (
    FilterModule, pg_failover_plan, pg_layout, pg_lsn_ge, pg_node_facts, pg_region_plan, pg_rejoin_done_lines,
    pg_rejoin_hosts, pg_rejoin_list_plan, pg_rejoin_plan, pg_rejoin_plan_line, pg_replication_line, pg_switchover_plan, pg_unreachable_hosts)


def test_pg_layout_reads_inventory_variables():
    hostvars = {
        'a': {'rtx_dr_pg_role': 'primary'},
        'b': {'rtx_dr_pg_role': 'standby', 'rtx_dr_pg_upstream': 'a', 'rtx_dr_pg_sync': True},
    }
    assert pg_layout(hostvars, ['a', 'b']) == {
        'a': {'role': 'primary', 'upstream': None, 'sync': False, 'region': None},
        'b': {'role': 'standby', 'upstream': 'a', 'sync': True, 'region': None},
    }


def test_pg_layout_reads_region():
    hostvars = {
        'a': {'rtx_dr_pg_role': 'primary', 'rtx_dr_region': 'east'},
        'b': {'rtx_dr_pg_role': 'standby', 'rtx_dr_pg_upstream': 'a', 'rtx_dr_region': 'west',
              'rtx_dr_pg_sync': 'yes'},
        'c': {'rtx_dr_pg_role': 'standby', 'rtx_dr_pg_upstream': 'a'},
    }
    layout = pg_layout(hostvars, ['a', 'b'])
    assert layout == {
        'a': {'role': 'primary', 'upstream': None, 'sync': False, 'region': 'east'},
        'b': {'role': 'standby', 'upstream': 'a', 'sync': True, 'region': 'west'},
    }
    assert pg_layout(hostvars, ['c'])['c']['region'] is None


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
    filters = FilterModule().filters()
    assert set(filters) >= {'pg_layout', 'pg_layout_errors', 'pg_assess_cluster',
                            'pg_node_facts', 'pg_sync_standby_names', 'pg_slot_name',
                            'pg_unreachable_hosts', 'pg_failover_plan', 'pg_switchover_plan', 'pg_rejoin_plan'}
    assert filters['pg_failover_plan'] is pg_failover_plan
    assert filters['pg_switchover_plan'] is pg_switchover_plan
    assert filters['pg_rejoin_plan'] is pg_rejoin_plan
    assert filters['pg_unreachable_hosts'] is pg_unreachable_hosts


LAYOUT = {
    'db1': {'role': 'primary', 'upstream': None, 'sync': False, 'region': 'east'},
    'db2': {'role': 'standby', 'upstream': 'db1', 'sync': True, 'region': 'east'},
    'db3': {'role': 'standby', 'upstream': 'db1', 'sync': False, 'region': 'east'},
    'dbw': {'role': 'standby', 'upstream': 'db1', 'sync': False, 'region': 'west'},
}


def _standby(lsn, upstream='db1', timeline=1):
    return {'reachable': True, 'in_recovery': True, 'system_identifier': '7300', 'timeline': timeline,
            'receive_lsn': lsn, 'replay_lsn': lsn, 'upstream_host': upstream,
            'wal_receiver': {'status': 'streaming', 'flushed_lsn': lsn, 'latest_end_lsn': lsn},
            'replay_paused': False}


def _primary(timeline=1, replication=()):
    return {'reachable': True, 'in_recovery': False, 'system_identifier': '7300', 'timeline': timeline,
            'current_lsn': '0/5000300', 'replication': list(replication)}


def _primary_down():
    return {'db1': {'reachable': False, 'error': 'connection refused'},
            'db2': _standby('0/5000000'), 'db3': _standby('0/5000400'), 'dbw': _standby('0/5000000')}


def test_pg_unreachable_hosts():
    hostvars = {
        'a': {'topology_node': {'reachable': True}},
        'b': {'topology_node': {'unreachable': True, 'msg': 'ssh: no route to host'}},
        'c': {'topology_node': {'failed': True, 'reachable': False, 'msg': 'connection refused'}},
        'd': {},
        'e': {'topology_node': None, 'other': {'unreachable': True}},
    }
    assert pg_unreachable_hosts(hostvars, ['a', 'b', 'c', 'd', 'e']) == ['b']
    assert pg_unreachable_hosts(hostvars, ['e', 'b'], var='other') == ['e']
    assert pg_unreachable_hosts(hostvars, []) == []


def test_pg_failover_plan_defaults_and_conversions():
    # The filter takes the values Jinja passes (None, '', strings) and normalises them.
    plan = pg_failover_plan(LAYOUT, _primary_down(), None, '', '16777216', None, None, None, None)
    assert plan['action'] == 'failover', plan['errors']
    assert plan['candidate'] == 'db3'
    assert plan['fence'] == ['db1'] and plan['stonith'] == []
    plan = pg_failover_plan(LAYOUT, _primary_down(), ['db1'])
    assert plan['stonith'] == ['db1'] and plan['fence'] == []


def test_pg_failover_plan_passes_every_option():
    facts = _primary_down()
    plan = pg_failover_plan(LAYOUT, facts, ['db1'], candidate='db2', max_lag_bytes='256')
    assert plan['action'] == 'refuse'
    assert 'db2 is 1024 bytes of WAL behind' in plan['errors'][0]
    plan = pg_failover_plan(LAYOUT, facts, ['db1'], candidate='db2', max_lag_bytes=256, allow_lag='yes')
    assert plan['action'] == 'failover' and plan['candidate'] == 'db2'
    plan = pg_failover_plan(LAYOUT, facts, ['db1'], candidate_regions=['west'], max_lag_bytes=1 << 30)
    assert plan['candidate'] == 'dbw'

    healthy = {'db1': _primary(), 'db2': _standby('0/5000300'), 'db3': _standby('0/5000300'),
               'dbw': _standby('0/5000300')}
    assert pg_failover_plan(LAYOUT, healthy)['action'] == 'refuse'
    plan = pg_failover_plan(LAYOUT, healthy, force=1)
    assert plan['action'] == 'failover' and plan['fence'] == ['db1']

    done = {'db1': {'reachable': False}, 'db2': _primary(timeline=2),
            'db3': _standby('0/6000000', 'db2', 2), 'dbw': _standby('0/6000000', 'db2', 2)}
    last = {'new_primary': 'db2', 'new_timeline': 2, 'finished_at': 'x'}
    assert pg_failover_plan(LAYOUT, done, last_failover=last)['action'] == 'none'
    assert pg_failover_plan(LAYOUT, done, last_failover={})['action'] == 'refuse'


def test_pg_switchover_plan():
    facts = {'db1': _primary(replication=[
        {'application_name': 'db2', 'state': 'streaming', 'sync_state': 'sync', 'replay_lag_bytes': 2048},
        {'application_name': 'db3', 'state': 'streaming', 'sync_state': 'async', 'replay_lag_bytes': 0}]),
        'db2': _standby('0/5000300'), 'db3': _standby('0/5000300'), 'dbw': {'reachable': False}}
    plan = pg_switchover_plan(LAYOUT, facts, None, None)
    assert plan['action'] == 'switchover' and plan['candidate'] == 'db2'
    plan = pg_switchover_plan(LAYOUT, facts, ['dbw'], '', '1024')
    assert plan['action'] == 'refuse' and 'db2 is 2048 bytes behind' in plan['errors'][0]
    plan = pg_switchover_plan(LAYOUT, facts, ['dbw'], 'dbw')
    assert plan['action'] == 'refuse' and 'candidate=dbw' in plan['errors'][0]
    plan = pg_switchover_plan(LAYOUT, facts, candidate='db3')
    assert plan['action'] == 'switchover' and plan['candidate'] == 'db3'


def test_pg_rejoin_plan():
    facts = {'db1': {'reachable': False}, 'db2': _primary(timeline=2),
             'db3': _standby('0/6000000', 'db2', 2), 'dbw': _standby('0/6000000', 'db2', 2)}
    assert pg_rejoin_plan(LAYOUT, facts, 'db1')['action'] == 'rejoin'
    assert pg_rejoin_plan(LAYOUT, facts, 'db1', None)['action'] == 'rejoin'
    plan = pg_rejoin_plan(LAYOUT, facts, 'db1', ['db1'])
    assert plan['action'] == 'refuse' and 'unreachable' in plan['errors'][0]
    assert pg_rejoin_plan(LAYOUT, facts, 'db3')['action'] == 'none'
    # A second stale primary that is rejoined in the same run is not taken for the primary.
    facts['db3'] = _primary(timeline=1)
    assert pg_rejoin_plan(LAYOUT, facts, 'db1')['action'] == 'refuse'
    plan = pg_rejoin_plan(LAYOUT, facts, 'db1', [], ['db3'])
    assert plan['action'] == 'rejoin' and plan['primary'] == 'db2'


def test_pg_rejoin_list_plan_and_hosts():
    filters = FilterModule().filters()
    assert filters['pg_rejoin_list_plan'] is pg_rejoin_list_plan
    assert filters['pg_rejoin_hosts'] is pg_rejoin_hosts
    assert pg_rejoin_hosts('db1') == ['db1']
    assert pg_rejoin_hosts(' db1, db3,,db1 ') == ['db1', 'db3']
    assert pg_rejoin_hosts(['db3', 'db1']) == ['db3', 'db1']
    assert pg_rejoin_hosts('') == [] and pg_rejoin_hosts(None) == []
    facts = {'db1': {'reachable': False}, 'db2': _primary(timeline=2),
             'db3': _standby('0/6000000', 'db1', 1), 'dbw': _standby('0/6000000', 'db2', 2)}
    plan = pg_rejoin_list_plan(LAYOUT, facts, 'db1,db3,dbw')
    assert plan['action'] == 'rejoin' and plan['primary'] == 'db2'
    assert plan['todo'] == ['db1', 'db3'] and plan['none'] == ['dbw']
    plan = pg_rejoin_list_plan(LAYOUT, facts, ['db1', 'db3'], None)
    assert plan['todo'] == ['db1', 'db3']
    plan = pg_rejoin_list_plan(LAYOUT, facts, ['db3', 'db1'], ['db1'])
    assert plan['action'] == 'refuse' and plan['todo'] == [] and 'db1 is unreachable' in plan['errors'][0]


def test_pg_lsn_ge_and_region_plan_filters():
    assert pg_lsn_ge('0/5000100', '0/5000100') and pg_lsn_ge('1/0', '0/FFFFFFFF')
    assert not pg_lsn_ge('0/50000FF', '0/5000100')
    assert not pg_lsn_ge(None, '0/1') and not pg_lsn_ge('0/1', '')
    filters = FilterModule().filters()
    assert filters['pg_lsn_ge'] is pg_lsn_ge and filters['pg_region_plan'] is pg_region_plan
    layout = {'a': {'role': 'primary', 'region': 'east'}, 'w': {'role': 'standby', 'upstream': 'a', 'region': 'west'}}
    standby = {'reachable': True, 'in_recovery': True, 'timeline': 1, 'receive_lsn': '0/3000000',
               'replay_lsn': '0/3000000'}
    facts = {'a': {'reachable': False}, 'w': standby}
    plan = pg_region_plan(layout, facts, 'west', {'latest_lsn': '0/3000100'})
    assert plan['candidate'] == 'w' and plan['loss_bytes'] == 0x100 and plan['catch_up_from_archive']


def test_pg_rejoin_plan_and_done_lines():
    filters = FilterModule().filters()
    assert filters['pg_rejoin_plan_line'] is pg_rejoin_plan_line
    assert filters['pg_rejoin_done_lines'] is pg_rejoin_done_lines
    plan = {'action': 'rejoin', 'host': 'db1', 'host_state': 'stale primary (timeline 1 < 2)', 'primary': 'db2'}
    assert pg_rejoin_plan_line(plan, 'rewind') == ('plan: rejoin db1 (stale primary (timeline 1 < 2)) as a standby '
                                                   'of db2 by rewind')
    assert pg_rejoin_plan_line({'action': 'refuse', 'host': 'db9', 'primary': None}) == 'plan: refuse db9 (-)'
    assert pg_rejoin_plan_line({'action': 'none', 'host': 'db3', 'host_state': 'standby streaming from db2',
                                'primary': 'db2'}) == 'plan: none db3 (standby streaming from db2) as a standby of db2'
    assert pg_rejoin_done_lines({'host': 'db1', 'primary': 'db2', 'sync_state': 'async', 'how': 'pg_rewind',
                                 'seconds': 12.5}) == ['REJOIN COMPLETE: db1 streams from db2 (async)',
                                                       'how: pg_rewind (12.5 s)']

# -*- coding: utf-8 -*-
# Copyright: rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of failover.yml, switchover.yml and rejoin.yml (module_utils.failover)."""

from __future__ import annotations

import copy
import datetime

import pytest

from ansible_collections.rtx.dr.plugins.module_utils.failover import (
    DEFAULT_MAX_LAG_BYTES, plan_failover, plan_region, plan_rejoin, plan_rejoin_list, plan_switchover,
    rejoin_host_list, standby_position, sync_names_for)

SYSID = '7300'

LAYOUT = {
    'db1': {'role': 'primary', 'upstream': None, 'sync': False, 'region': 'east'},
    'db2': {'role': 'standby', 'upstream': 'db1', 'sync': True, 'region': 'east'},
    'db3': {'role': 'standby', 'upstream': 'db1', 'sync': False, 'region': 'east'},
    'dbw': {'role': 'standby', 'upstream': 'db1', 'sync': False, 'region': 'west'},
}


def layout(**changes):
    """A copy of LAYOUT with some hosts changed (``None`` removes a host)."""
    result = copy.deepcopy(LAYOUT)
    for host, spec in changes.items():
        if spec is None:
            result.pop(host)
        else:
            result.setdefault(host, {}).update(spec)
    return result


def standby(receive='0/5000000', replay=None, timeline=1, upstream='db1', sysid=SYSID, status='streaming',
            flushed=None, latest_end=None, paused=False):
    """A normalised pg_node_info result of a standby."""
    return {
        'reachable': True,
        'in_recovery': True,
        'system_identifier': sysid,
        'timeline': timeline,
        'receive_lsn': receive,
        'replay_lsn': replay if replay is not None else receive,
        'upstream_host': upstream,
        'wal_receiver': None if status is None else {
            'status': status,
            'flushed_lsn': flushed if flushed is not None else receive,
            'latest_end_lsn': latest_end if latest_end is not None else receive,
        },
        'replay_paused': paused,
    }


def primary(lsn='0/5000300', timeline=1, sysid=SYSID, replication=None):
    """A normalised pg_node_info result of a writable server."""
    return {
        'reachable': True,
        'in_recovery': False,
        'system_identifier': sysid,
        'timeline': timeline,
        'current_lsn': lsn,
        'upstream_host': None,
        'replication': replication if replication is not None else [],
    }


def down(error='connection refused'):
    return {'reachable': False, 'error': error}


def rep(name, state='streaming', sync_state='async', lag=0):
    return {'application_name': name, 'state': state, 'sync_state': sync_state, 'replay_lag_bytes': lag}


def primary_down_facts(**changes):
    """db1 (primary) down, all three standbys streaming from it at the same position."""
    facts = {
        'db1': down(),
        'db2': standby('0/5000100'),
        'db3': standby('0/5000100'),
        'dbw': standby('0/5000100'),
    }
    facts.update(changes)
    return facts


def healthy_facts(**changes):
    """db1 primary streaming to db2 (sync), db3 and dbw."""
    facts = {
        'db1': primary(replication=[rep('db2', sync_state='sync', lag=200), rep('db3', lag=100), rep('dbw', lag=50)]),
        'db2': standby('0/5000300'),
        'db3': standby('0/5000200'),
        'dbw': standby('0/5000250'),
    }
    facts.update(changes)
    return facts


def lsn(value):
    return int(value.split('/')[0], 16) << 32 | int(value.split('/')[1], 16)


# ---------------------------------------------------------------------------
# standby_position
# ---------------------------------------------------------------------------


def test_standby_position_takes_most_advanced_of_receive_replay_and_flushed():
    fact = standby('0/5000100', replay='0/5000000', timeline=3, flushed='0/5000180', latest_end='0/9000000')
    # latest_end_lsn is what the sender has, not what the standby holds: not counted.
    assert standby_position(fact) == (3, lsn('0/5000180'))
    fact = standby('0/4000000', replay='0/4000010', timeline=2, status=None)
    assert standby_position(fact) == (2, lsn('0/4000010'))


def test_standby_position_without_any_lsn_or_with_garbage():
    assert standby_position({'timeline': None, 'receive_lsn': None, 'replay_lsn': ''}) == (0, 0)
    assert standby_position({'timeline': '4', 'receive_lsn': 'not-an-lsn', 'replay_lsn': '0/10'}) == (4, 16)
    assert standby_position({}) == (0, 0)


# ---------------------------------------------------------------------------
# plan_failover: choosing the standby
# ---------------------------------------------------------------------------


def test_primary_down_promotes_the_standby_with_most_wal():
    facts = primary_down_facts(db2=standby('0/5000100'), db3=standby('0/5000200'), dbw=standby('0/5000150'))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    assert plan['action'] == 'failover', plan['errors']
    assert plan['errors'] == []
    assert plan['candidate'] == 'db3'
    assert plan['old_primary'] == 'db1'
    assert plan['old_primary_why'] == 'the standbys stream from it'
    assert plan['old_primary_state'] == 'host unreachable'
    assert plan['system_identifier'] == SYSID
    assert 'most WAL' in plan['candidate_reason'] and '0/5000200' in plan['candidate_reason']
    assert plan['why'] == plan['candidate_reason']
    assert 'tied' not in plan['candidate_reason']
    assert [r['host'] for r in plan['ranking']] == ['db3', 'dbw', 'db2']
    assert plan['ranking'][0] == {'host': 'db3', 'timeline': 1, 'lsn': '0/5000200', 'sync': False, 'region': 'east'}
    assert plan['candidate_lsn'] == '0/5000200'
    assert plan['best_known_lsn'] == '0/5000200'
    assert plan['old_timeline'] == 1
    assert plan['estimated_loss_bytes'] == 0
    assert plan['loss_is_lower_bound'] is True


def test_equal_wal_prefers_the_sync_standby():
    plan = plan_failover(LAYOUT, primary_down_facts(), hosts_unreachable=['db1'])
    assert plan['action'] == 'failover'
    assert plan['candidate'] == 'db2'
    reason = plan['candidate_reason']
    assert 'tied with db3, dbw' in reason
    assert 'synchronous standby' in reason
    # Not just the first name: the sync standby wins over one that sorts before it.
    lay = layout(db2={'sync': False}, db3={'sync': True})
    plan = plan_failover(lay, primary_down_facts(), hosts_unreachable=['db1'])
    assert plan['candidate'] == 'db3'
    assert 'tied with db2, dbw' in plan['candidate_reason']
    assert 'synchronous standby' in plan['candidate_reason']


def test_sync_standby_with_more_wal_mentions_sync():
    facts = primary_down_facts(db2=standby('0/5000400'))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    assert plan['candidate'] == 'db2'
    assert 'tied' not in plan['candidate_reason']
    assert plan['candidate_reason'].endswith('and it is the synchronous standby')


def test_equal_wal_without_sync_prefers_old_primary_region():
    # Names chosen so that alphabetical order would pick the west standby.
    lay = {
        'prim': {'role': 'primary', 'upstream': None, 'sync': False, 'region': 'east'},
        'alpha-west': {'role': 'standby', 'upstream': 'prim', 'sync': False, 'region': 'west'},
        'zulu-east': {'role': 'standby', 'upstream': 'prim', 'sync': False, 'region': 'east'},
    }
    facts = {'prim': down(), 'alpha-west': standby('0/5000100', upstream='prim'),
             'zulu-east': standby('0/5000100', upstream='prim')}
    plan = plan_failover(lay, facts, hosts_unreachable=['prim'])
    assert plan['action'] == 'failover'
    assert plan['candidate'] == 'zulu-east'
    assert "old primary's region" in plan['candidate_reason']
    assert 'tied with alpha-west' in plan['candidate_reason']


def test_equal_wal_same_region_no_sync_falls_back_to_name():
    lay = layout(db2={'sync': False})
    lay['db4'] = {'role': 'standby', 'upstream': 'db1', 'sync': True, 'region': 'east'}  # sync, but down
    facts = primary_down_facts(dbw=down(), db4=down())
    plan = plan_failover(lay, facts, hosts_unreachable=['db1'])
    assert plan['candidate'] == 'db2'
    assert [r['host'] for r in plan['ranking']] == ['db2', 'db3']


def test_higher_timeline_beats_more_wal_on_lower_timeline():
    facts = primary_down_facts(db2=standby('0/5000100', timeline=1),
                               db3=standby('0/5000000', timeline=2),
                               dbw=standby('0/5000080', timeline=1))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    assert plan['action'] == 'failover', plan['errors']
    assert plan['candidate'] == 'db3'
    assert 'timeline 2' in plan['candidate_reason']
    assert plan['old_timeline'] == 2
    assert [r['host'] for r in plan['ranking']] == ['db3', 'db2', 'dbw']


def test_lower_timeline_wal_is_not_counted_as_loss():
    # Regression (_lag_of): the loss is computed against the highest LSN of any
    # standby whatever its timeline. WAL a standby holds on an older timeline past the
    # fork point was abandoned by the earlier promotion; it is not lost by this one.
    # Here db3 (timeline 2) is the right candidate and loses nothing, but db2's stale
    # timeline-1 position 0/9000000 makes the plan refuse with "48 MiB behind".
    facts = primary_down_facts(db2=standby('0/9000000', timeline=1),
                               db3=standby('0/6000000', timeline=2),
                               dbw=standby('0/6000000', timeline=2))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    assert plan['candidate'] == 'db3'
    assert plan['action'] == 'failover', plan['errors']
    assert plan['estimated_loss_bytes'] == 0


# ---------------------------------------------------------------------------
# plan_failover: fencing, repointing, loss, sync names
# ---------------------------------------------------------------------------


def test_unreachable_old_primary_host_is_stonithed_and_others_repointed():
    plan = plan_failover(LAYOUT, primary_down_facts(), hosts_unreachable=['db1'])
    assert plan['stonith'] == ['db1']
    assert plan['fence'] == []
    assert plan['repoint'] == ['db3', 'dbw']
    assert plan['not_repointed'] == []
    assert plan['sync_standby_names'] == 'FIRST 1 ("db3", "db1")'
    assert plan['sync_hosts'] == ['db3', 'db1']
    assert plan['nodes'][0]['host'] == 'db1' and plan['nodes'][0]['state'] == 'host unreachable'


def test_postgres_down_on_reachable_host_is_fenced():
    plan = plan_failover(LAYOUT, primary_down_facts(db1=down('connection refused')), hosts_unreachable=[])
    assert plan['action'] == 'failover'
    assert plan['old_primary_state'] == 'postgres down'
    assert plan['fence'] == ['db1']
    assert plan['stonith'] == []
    node = [n for n in plan['nodes'] if n['host'] == 'db1'][0]
    assert node['state'] == 'postgres down' and node['error'] == 'connection refused'
    assert node['timeline'] is None and node['lsn'] is None


def test_repoint_excludes_down_standbys_which_are_not_repointed():
    facts = primary_down_facts(db3=down('no route to host'))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1', 'db3'])
    assert plan['candidate'] == 'db2'
    assert plan['repoint'] == ['dbw']
    assert plan['not_repointed'] == ['db3']
    assert plan['stonith'] == ['db1']
    # db3 is down and dbw in another region: only the old primary would qualify, and
    # naming only a server that does not stream yet would block every commit.
    assert plan['sync_hosts'] == []
    assert plan['sync_standby_names'] == ''


def test_missing_facts_count_as_down():
    facts = primary_down_facts()
    del facts['db1']
    plan = plan_failover(LAYOUT, facts)
    assert plan['action'] == 'failover'
    assert plan['fence'] == ['db1']
    assert plan['old_primary_state'] == 'postgres down'


def test_estimated_loss_is_gap_to_most_advanced_known_position():
    facts = primary_down_facts(db2=standby('0/5000100'), db3=standby('0/5000400'), dbw=standby('0/5000000'))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'], candidate='db2')
    assert plan['action'] == 'failover'
    assert plan['candidate'] == 'db2'
    assert plan['estimated_loss_bytes'] == 0x300
    assert plan['best_known_lsn'] == '0/5000400'


def test_estimated_loss_includes_what_the_sender_reported():
    facts = primary_down_facts(db2=standby('0/5000100', latest_end='0/5000200'),
                               db3=standby('0/5000000'), dbw=standby('0/5000000', latest_end='0/5000180'))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    assert plan['candidate'] == 'db2'
    assert plan['candidate_lsn'] == '0/5000100'
    assert plan['best_known_lsn'] == '0/5000200'
    assert plan['estimated_loss_bytes'] == 0x100


def test_estimated_loss_counts_more_advanced_standbys_outside_candidate_regions():
    # Regression (_lag_of is given only the eligible standbys): with
    # candidate_regions=['west'] the east standbys' positions are ignored, so a
    # west candidate 64 MiB behind db2 is reported as losing 0 bytes and promoted
    # without the failover_max_lag_bytes check. The docstring says the limit is
    # against "the most advanced position any standby knows of".
    facts = primary_down_facts(db2=standby('0/9000000'), db3=standby('0/9000000'), dbw=standby('0/5000000'))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'], candidate_regions=['west'])
    assert plan['candidate'] == 'dbw'
    assert plan['estimated_loss_bytes'] == 0x4000000
    assert plan['action'] == 'refuse'
    assert 'failover_allow_lag' in plan['errors'][0]


def test_replay_paused_candidate_warns():
    facts = primary_down_facts(db2=standby('0/5000100', paused=True))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    assert plan['action'] == 'failover'
    assert any('db2' in w and 'replay paused' in w for w in plan['warnings'])


def test_node_table_describes_every_host():
    facts = primary_down_facts(db2=standby('0/5000100', replay='0/5000000', paused=True))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    nodes = dict((n['host'], n) for n in plan['nodes'])
    assert sorted(nodes) == ['db1', 'db2', 'db3', 'dbw']
    assert nodes['db2'] == {'host': 'db2', 'state': 'standby', 'region': 'east', 'sync': True, 'timeline': 1,
                            'lsn': '0/5000100', 'replay_lsn': '0/5000000', 'upstream': 'db1',
                            'replay_paused': True, 'error': None}
    assert nodes['dbw']['region'] == 'west'


# ---------------------------------------------------------------------------
# plan_failover: refusals
# ---------------------------------------------------------------------------


def test_old_primary_alive_and_writable_is_refused():
    facts = healthy_facts()
    plan = plan_failover(LAYOUT, facts)
    assert plan['action'] == 'refuse'
    assert plan['old_primary'] == 'db1'
    assert plan['old_primary_why'] == 'it accepts writes now'
    assert plan['old_primary_state'] == 'accepts writes'
    assert len(plan['errors']) == 1
    error = plan['errors'][0]
    assert error.startswith('db1 is up and accepts writes')
    assert 'switchover.yml' in error and 'failover_force' in error
    assert plan['fence'] == [] and plan['repoint'] == [] and plan['candidate'] is None


def test_force_fails_over_a_writable_primary_after_fencing_it():
    plan = plan_failover(LAYOUT, healthy_facts(), force=True)
    assert plan['action'] == 'failover', plan['errors']
    assert plan['fence'] == ['db1']
    assert plan['stonith'] == []
    assert plan['candidate'] == 'db2'
    assert 'db1' not in plan['repoint']
    assert plan['repoint'] == ['db3', 'dbw']
    assert any(w.startswith('failover_force: db1') for w in plan['warnings'])
    # The old primary's own position is known: the loss is not just a lower bound.
    assert plan['loss_is_lower_bound'] is False


def test_rerun_after_successful_failover_does_nothing():
    facts = {'db1': down(), 'db2': primary(timeline=2), 'db3': standby(timeline=2, upstream='db2'),
             'dbw': standby(timeline=2, upstream='db2')}
    last = {'new_primary': 'db2', 'new_timeline': 2, 'finished_at': '2025-02-01T10:00:00Z'}
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'], last_failover=last)
    assert plan['action'] == 'none'
    assert plan['errors'] == []
    assert plan['candidate'] == 'db2'
    assert '2025-02-01T10:00:00Z' in plan['candidate_reason'] and 'nothing to do' in plan['candidate_reason']
    assert plan['fence'] == [] and plan['stonith'] == [] and plan['repoint'] == []


def test_rerun_record_with_string_timeline_matches():
    facts = {'db1': down(), 'db2': primary(timeline=2), 'db3': standby(timeline=2, upstream='db2'),
             'dbw': standby(timeline=2, upstream='db2')}
    last = {'new_primary': 'db2', 'new_timeline': '2', 'finished_at': 'x'}
    assert plan_failover(LAYOUT, facts, last_failover=last)['action'] == 'none'


def test_rerun_after_a_run_that_stopped_after_promotion_resumes_it():
    # db2 was promoted and the 'running' record written, then the run stopped: db3 still
    # follows the dead db1 (upstream), dbw was already repointed.
    facts = {'db1': down(), 'db2': primary(timeline=2), 'db3': standby(timeline=1, upstream='db1'),
             'dbw': standby(timeline=2, upstream='db2')}
    last = {'failover_id': 'failover-1-db2', 'status': 'running', 'old_primary': 'db1', 'new_primary': 'db2',
            'new_timeline': 2, 'data_loss_bytes': 0}
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'], last_failover=last)
    assert plan['action'] == 'resume'
    assert plan['candidate'] == 'db2' and plan['old_primary'] == 'db1'
    assert plan['repoint'] == ['db3', 'dbw']
    assert plan['fence'] == [] and plan['stonith'] == []
    assert 'failover-1-db2' in plan['candidate_reason']
    assert plan['sync_standby_names'] == 'FIRST 1 ("db3", "db1")'
    assert plan['resume'] == last


def test_a_switchover_that_stopped_after_promotion_is_resumed_as_a_switchover():
    # switchover.yml promoted db2 and stopped (e.g. at the endpoint); db1 was shut down cleanly and does not run.
    facts = {'db1': down(), 'db2': primary(timeline=2), 'db3': standby(timeline=2, upstream='db2'),
             'dbw': standby(timeline=2, upstream='db2')}
    last = {'failover_id': 'switchover-1-db2', 'kind': 'switchover', 'status': 'running', 'old_primary': 'db1',
            'new_primary': 'db2', 'new_timeline': 2, 'data_loss_bytes': 0}
    plan = plan_failover(LAYOUT, facts, last_failover=last)
    assert plan['action'] == 'resume' and plan['resume']['kind'] == 'switchover'
    assert 'promoted by switchover switchover-1-db2' in plan['candidate_reason']
    # the old primary is neither fenced nor repointed here: rejoin.yml brings it back
    assert plan['fence'] == [] and plan['stonith'] == [] and 'db1' not in plan['repoint']
    done = dict(last, status='complete', finished_at='2026-11-27T10:00:00Z')
    again = plan_failover(LAYOUT, facts, last_failover=done)
    assert again['action'] == 'none' and 'the switchover finished at 2026-11-27T10:00:00Z' in again['candidate_reason']


def test_running_record_of_another_timeline_is_refused():
    facts = {'db1': down(), 'db2': primary(timeline=3), 'db3': standby(timeline=3, upstream='db2'),
             'dbw': standby(timeline=3, upstream='db2')}
    last = {'status': 'running', 'new_primary': 'db2', 'new_timeline': 2}
    assert plan_failover(LAYOUT, facts, last_failover=last)['action'] == 'refuse'


@pytest.mark.parametrize('last', [
    {'new_primary': 'db2', 'new_timeline': 3, 'finished_at': 'x'},
    {'new_primary': 'db3', 'new_timeline': 2, 'finished_at': 'x'},
    {},
])
def test_writable_primary_not_matching_the_last_failover_is_refused(last):
    facts = {'db1': down(), 'db2': primary(timeline=2), 'db3': standby(timeline=2, upstream='db2'),
             'dbw': standby(timeline=2, upstream='db2')}
    plan = plan_failover(LAYOUT, facts, last_failover=last)
    assert plan['action'] == 'refuse'
    assert plan['errors'][0].startswith('db2 is up and accepts writes')


def test_two_writable_members_is_split_brain():
    facts = primary_down_facts(db1=primary(timeline=1), db2=primary(timeline=2))
    plan = plan_failover(LAYOUT, facts, force=True)
    assert plan['action'] == 'refuse'
    assert len(plan['errors']) == 1
    assert 'db1, db2 all accept writes' in plan['errors'][0]
    assert 'split brain' in plan['errors'][0]
    assert plan['fence'] == [] and plan['stonith'] == []


def test_no_reachable_standby_is_refused():
    facts = {'db1': down(), 'db2': down(), 'db3': down('timeout'), 'dbw': down()}
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    assert plan['action'] == 'refuse'
    assert 'no reachable standby' in plan['errors'][0]
    assert 'db1, db2, db3, dbw' in plan['errors'][0]
    assert plan['candidate'] is None


def test_no_standby_in_candidate_regions_is_refused():
    plan = plan_failover(LAYOUT, primary_down_facts(dbw=down()), hosts_unreachable=['db1', 'dbw'],
                         candidate_regions=['west'])
    assert plan['action'] == 'refuse'
    assert 'allowed regions (west)' in plan['errors'][0]
    assert 'db2, db3' in plan['errors'][0]


def test_candidate_regions_restrict_the_choice():
    plan = plan_failover(LAYOUT, primary_down_facts(), hosts_unreachable=['db1'], candidate_regions=['west'])
    assert plan['action'] == 'failover', plan['errors']
    assert plan['candidate'] == 'dbw'
    assert [r['host'] for r in plan['ranking']] == ['dbw']
    # The east standbys are repointed to the new primary all the same.
    assert plan['repoint'] == ['db2', 'db3']


def test_other_cluster_members_are_ignored_with_a_warning():
    facts = primary_down_facts(dbw=standby('0/9000000', sysid='9999'))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    assert plan['action'] == 'failover'
    assert plan['candidate'] == 'db2'
    assert 'dbw' not in plan['repoint'] and 'dbw' not in plan['not_repointed']
    assert any(w.startswith('dbw: reachable but not a member') and '9999' in w for w in plan['warnings'])
    assert plan['estimated_loss_bytes'] == 0


# ---------------------------------------------------------------------------
# plan_failover: operator's candidate
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('candidate, facts_changes, kwargs, expected', [
    ('db9', {}, {}, "candidate=db9 is not a host of the cluster's inventory group"),
    ('db3', {'db3': down('no route to host')}, {'hosts_unreachable': ['db1', 'db3']},
     'candidate=db3 is not reachable'),
    ('db3', {'db3': down('connection refused')}, {}, 'candidate=db3 is not reachable (connection refused)'),
    ('dbw', {'dbw': standby('0/5000100', sysid='9999')}, {}, 'candidate=dbw is not a member of this cluster'),
    ('dbw', {}, {'candidate_regions': ['east']}, 'candidate=dbw is in region west, outside failover_candidate_regions'),
])
def test_invalid_candidate_is_refused(candidate, facts_changes, kwargs, expected):
    kwargs.setdefault('hosts_unreachable', ['db1'])
    plan = plan_failover(LAYOUT, primary_down_facts(**facts_changes), candidate=candidate, **kwargs)
    assert plan['action'] == 'refuse'
    assert len(plan['errors']) == 1
    assert plan['errors'][0].startswith(expected), plan['errors'][0]
    assert plan['candidate'] is None


def test_candidate_that_accepts_writes_is_refused():
    plan = plan_failover(LAYOUT, healthy_facts(), candidate='db1', force=True)
    assert plan['action'] == 'refuse'
    assert plan['errors'] == ['candidate=db1 is not a standby (it accepts writes)']


def test_operator_candidate_not_best_is_used_and_said_so():
    facts = primary_down_facts(db2=standby('0/5000100'), db3=standby('0/5000100'), dbw=standby('0/5000100'))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'], candidate='dbw')
    assert plan['action'] == 'failover', plan['errors']
    assert plan['candidate'] == 'dbw'
    assert plan['candidate_reason'].startswith('chosen by the operator (candidate=dbw)')
    assert 'db2 holds more WAL or ranks higher' in plan['candidate_reason']
    assert plan['repoint'] == ['db2', 'db3']


def test_operator_candidate_that_is_best_has_no_extra_remark():
    plan = plan_failover(LAYOUT, primary_down_facts(), hosts_unreachable=['db1'], candidate='db2')
    assert plan['candidate_reason'] == 'chosen by the operator (candidate=db2)'


# ---------------------------------------------------------------------------
# plan_failover: lag limit
# ---------------------------------------------------------------------------


def test_lag_over_limit_is_refused():
    facts = primary_down_facts(db2=standby('0/5000000'), db3=down(), dbw=down(), db1=down())
    facts['db2']['wal_receiver']['latest_end_lsn'] = '0/6000001'
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    assert plan['action'] == 'refuse'
    assert plan['candidate'] == 'db2'
    assert plan['estimated_loss_bytes'] == 0x1000001
    error = plan['errors'][0]
    assert '%d bytes' % 0x1000001 in error
    assert 'failover_max_lag_bytes=%d' % DEFAULT_MAX_LAG_BYTES in error
    assert 'failover_allow_lag' in error
    assert plan['repoint'] == []


def test_lag_exactly_at_limit_is_accepted():
    facts = primary_down_facts(db2=standby('0/5000000'), db3=down(), dbw=down())
    facts['db2']['wal_receiver']['latest_end_lsn'] = '0/6000000'
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'])
    assert plan['action'] == 'failover'
    assert plan['estimated_loss_bytes'] == DEFAULT_MAX_LAG_BYTES
    assert not any('failover_allow_lag' in w for w in plan['warnings'])


def test_operator_candidate_lagging_more_than_max_is_refused():
    facts = primary_down_facts(db2=standby('0/5000400'), db3=standby('0/5000000'), dbw=standby('0/5000000'))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'], candidate='db3', max_lag_bytes=0x100)
    assert plan['action'] == 'refuse'
    assert 'db3 is 1024 bytes of WAL behind' in plan['errors'][0]
    assert 'failover_max_lag_bytes=256' in plan['errors'][0]


def test_allow_lag_fails_over_with_a_warning():
    facts = primary_down_facts(db2=standby('0/5000400'), db3=standby('0/5000000'), dbw=standby('0/5000000'))
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1'], candidate='db3', max_lag_bytes=0x100,
                         allow_lag=True)
    assert plan['action'] == 'failover'
    assert plan['errors'] == []
    assert plan['estimated_loss_bytes'] == 1024
    assert any(w.startswith('failover_allow_lag: db3 is 1024 bytes behind') for w in plan['warnings'])


# ---------------------------------------------------------------------------
# plan_failover: who the old primary was
# ---------------------------------------------------------------------------


def test_old_primary_is_the_standbys_upstream_not_the_inventory_primary():
    # An earlier failover made db2 the primary; the inventory still says db1.
    facts = {'db1': standby('0/6000000', timeline=2, upstream='db2'), 'db2': down(),
             'db3': standby('0/6000100', timeline=2, upstream='db2'),
             'dbw': standby('0/6000000', timeline=2, upstream='db2')}
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db2'])
    assert plan['old_primary'] == 'db2'
    assert plan['stonith'] == ['db2']
    assert plan['fence'] == []
    assert plan['candidate'] == 'db3'
    assert plan['repoint'] == ['db1', 'dbw']


def test_old_primary_falls_back_to_the_inventory():
    facts = primary_down_facts(db2=standby(upstream=None), db3=standby(upstream='10.0.0.5'),
                               dbw=standby(upstream=None))
    plan = plan_failover(LAYOUT, facts)
    assert plan['old_primary'] == 'db1'
    assert 'rtx_dr_pg_role: primary' in plan['old_primary_why']


def test_cascading_standbys_do_not_make_their_upstream_the_old_primary():
    # Regression (_old_primary): the vote counts every upstream, including
    # upstreams that are themselves standbys. Layouts may cascade (rtx_dr_pg_upstream
    # "the primary or another standby"); with db3 and dbw cascading from db2, db2
    # gets 2 votes against db1's 1 and is taken for the old primary: the plan then
    # fences db2 (the standby it promotes!) and never STONITHs the real, unreachable
    # primary db1.
    lay = layout(db3={'upstream': 'db2'}, dbw={'upstream': 'db2'})
    facts = {'db1': down(), 'db2': standby('0/5000100', upstream='db1'),
             'db3': standby('0/5000100', upstream='db2'), 'dbw': standby('0/5000100', upstream='db2')}
    plan = plan_failover(lay, facts, hosts_unreachable=['db1'])
    assert plan['candidate'] == 'db2'
    assert plan['candidate'] not in plan['fence']
    assert plan['old_primary'] == 'db1'
    assert plan['stonith'] == ['db1']


# ---------------------------------------------------------------------------
# sync_names_for
# ---------------------------------------------------------------------------


def test_sync_names_sync_hosts_first_then_region_then_old_primary():
    lay = layout(db4={'role': 'standby', 'upstream': 'db1', 'sync': True, 'region': 'east'})
    names, hosts = sync_names_for(lay, 'db3', 'db1', ['db2', 'db4', 'dbw'])
    assert hosts == ['db2', 'db4', 'db1']
    assert names == 'FIRST 1 ("db2", "db4", "db1")'


def test_sync_names_region_standbys_after_sync_ones():
    lay = layout(db0={'role': 'standby', 'upstream': 'db1', 'sync': False, 'region': 'east'},
                 db4={'role': 'standby', 'upstream': 'db1', 'sync': True, 'region': 'east'})
    names, hosts = sync_names_for(lay, 'db2', 'db1', ['db0', 'db3', 'db4', 'dbw'])
    # db4 (sync) before db0 although db0 sorts first; cross-region dbw never.
    assert hosts == ['db4', 'db0', 'db3', 'db1']
    assert names == 'FIRST 1 ("db4", "db0", "db3", "db1")'


def test_sync_names_empty_when_only_the_old_primary_qualifies():
    # dbw is repointed but in another region; db1 does not stream yet: naming it
    # alone would block every commit on the new primary.
    assert sync_names_for(LAYOUT, 'db2', 'db1', ['dbw']) == ('', [])
    # db3 is not repointed (down): not named either.
    assert sync_names_for(LAYOUT, 'db2', 'db1', []) == ('', [])


def test_sync_names_old_primary_named_once_a_repointed_standby_qualifies():
    names, hosts = sync_names_for(LAYOUT, 'db2', 'db1', ['db3', 'dbw'])
    assert hosts == ['db3', 'db1']
    assert names == 'FIRST 1 ("db3", "db1")'


def test_sync_names_cross_region_never_included():
    lay = layout(dbw2={'role': 'standby', 'upstream': 'db1', 'sync': False, 'region': 'west'})
    names, hosts = sync_names_for(lay, 'dbw', 'db1', ['dbw2'])
    # dbw2 shares the new primary's region; the east old primary does not.
    assert hosts == ['dbw2']
    assert names == 'FIRST 1 ("dbw2")'


def test_sync_names_never_cross_region_even_for_sync_hosts():
    # Regression (sync_names_for): the first loop adds every repointed
    # rtx_dr_pg_sync host without checking its region, contrary to the docstring
    # ("Cross-region standbys are never made synchronous"). Promoting the west
    # standby (operator's candidate, or failover_candidate_regions=[west]) makes
    # the east sync standby db2 synchronous across regions: every commit waits
    # for a cross-region round trip.
    names, hosts = sync_names_for(LAYOUT, 'dbw', 'db1', ['db2', 'db3'])
    assert hosts == []
    assert names == ''


def test_sync_names_empty_without_any_sync_host_in_layout():
    lay = layout(db2={'sync': False})
    assert sync_names_for(lay, 'db2', 'db1', ['db3', 'dbw']) == ('', [])


def test_sync_names_empty_when_nothing_qualifies():
    assert sync_names_for(LAYOUT, 'dbw', None, []) == ('', [])
    assert sync_names_for(LAYOUT, 'db2', 'db2', []) == ('', [])


def test_sync_names_never_name_the_new_primary():
    names, hosts = sync_names_for(LAYOUT, 'db2', 'db1', ['db2', 'db3'])
    assert 'db2' not in hosts
    assert hosts == ['db3', 'db1']


def test_sync_names_quote_host_names():
    lay = {
        'old': {'role': 'primary', 'sync': False, 'region': None},
        'new': {'role': 'standby', 'sync': True, 'region': None},
        'we"ird-1.example.com': {'role': 'standby', 'sync': True, 'region': None},
    }
    names, hosts = sync_names_for(lay, 'new', 'old', ['we"ird-1.example.com'])
    assert hosts == ['we"ird-1.example.com', 'old']
    assert names == 'FIRST 1 ("weird-1.example.com", "old")'


# ---------------------------------------------------------------------------
# plan_switchover
# ---------------------------------------------------------------------------


def test_switchover_picks_the_sync_streaming_standby():
    plan = plan_switchover(LAYOUT, healthy_facts())
    assert plan['action'] == 'switchover', plan['errors']
    assert plan['errors'] == []
    assert plan['old_primary'] == 'db1'
    assert plan['candidate'] == 'db2'
    assert plan['candidate_reason'] == 'it is the synchronous standby'
    assert plan['repoint'] == ['db3', 'dbw']
    assert plan['not_repointed'] == []
    # The old primary comes back as a standby: a sync candidate of the same region.
    assert 'db1' in plan['sync_hosts']
    assert plan['sync_hosts'] == ['db1', 'db3']
    assert plan['sync_standby_names'] == 'FIRST 1 ("db1", "db3")'


def test_switchover_without_sync_picks_least_replay_lag():
    facts = healthy_facts(db1=primary(replication=[rep('db2', lag=300), rep('db3', lag=100), rep('dbw', lag=50)]))
    plan = plan_switchover(LAYOUT, facts)
    assert plan['candidate'] == 'dbw'
    assert 'least replay lag' in plan['candidate_reason']


def test_switchover_ignores_standbys_not_streaming():
    facts = healthy_facts(db1=primary(replication=[rep('db2', state='catchup', sync_state='sync'),
                                                   rep('db3', lag=100)]))
    plan = plan_switchover(LAYOUT, facts)
    assert plan['candidate'] == 'db3'


def test_switchover_operator_candidate_not_streaming_is_refused():
    facts = healthy_facts(db1=primary(replication=[rep('db2', sync_state='sync'), rep('db3', state='catchup')]))
    plan = plan_switchover(LAYOUT, facts, candidate='db3')
    assert plan['action'] == 'refuse'
    assert plan['errors'][0].startswith('candidate=db3 is not a standby streaming from db1 (state: not streaming)')
    plan = plan_switchover(LAYOUT, healthy_facts(dbw=down()), hosts_unreachable=['dbw'], candidate='dbw')
    assert plan['action'] == 'refuse'
    assert 'candidate=dbw' in plan['errors'][0] and 'host unreachable' in plan['errors'][0]


def test_switchover_operator_candidate_streaming():
    plan = plan_switchover(LAYOUT, healthy_facts(), candidate='dbw')
    assert plan['action'] == 'switchover'
    assert plan['candidate'] == 'dbw'
    assert plan['candidate_reason'] == 'chosen by the operator (candidate=dbw)'
    assert plan['repoint'] == ['db2', 'db3']


def test_switchover_candidate_is_the_primary():
    plan = plan_switchover(LAYOUT, healthy_facts(), candidate='db1')
    assert plan['action'] == 'refuse'
    assert plan['errors'] == ['candidate=db1 is already the primary: nothing to switch']


def test_switchover_unknown_candidate():
    plan = plan_switchover(LAYOUT, healthy_facts(), candidate='db9')
    assert plan['action'] == 'refuse'
    assert plan['errors'][0].startswith("candidate=db9 is not a host of the cluster's inventory group")


@pytest.mark.parametrize('changes, found', [
    ({'db1': down()}, 'found none'),
    ({'db1': down(), 'db2': primary(timeline=2)}, None),
    ({'db2': primary(timeline=2)}, 'found db1, db2'),
])
def test_switchover_needs_exactly_one_primary(changes, found):
    plan = plan_switchover(LAYOUT, healthy_facts(**changes))
    if found is None:
        # db2 is the only writable: a switchover away from it is possible.
        assert plan['old_primary'] == 'db2'
        return
    assert plan['action'] == 'refuse'
    assert plan['old_primary'] is None
    assert found in plan['errors'][0]
    assert 'failover.yml' in plan['errors'][0]


def test_switchover_no_streaming_standby():
    plan = plan_switchover(LAYOUT, healthy_facts(db1=primary(replication=[])))
    assert plan['action'] == 'refuse'
    assert plan['errors'] == ['no standby streams from db1: there is nothing to switch over to']


def test_switchover_replay_lag_over_limit_is_refused():
    facts = healthy_facts(db1=primary(replication=[rep('db2', sync_state='sync', lag=5000), rep('db3', lag=6000)]))
    plan = plan_switchover(LAYOUT, facts, max_lag_bytes=4096)
    assert plan['action'] == 'refuse'
    assert plan['errors'] == ['db2 is 5000 bytes behind db1 in replay (limit 4096): wait until it catches up']
    assert plan_switchover(LAYOUT, facts, max_lag_bytes=5000)['action'] == 'switchover'


def test_switchover_not_repointed_lists_hosts_outside_the_cluster():
    facts = healthy_facts(dbw=down(), db3=standby(sysid='9999'))
    plan = plan_switchover(LAYOUT, facts, hosts_unreachable=['dbw'])
    assert plan['action'] == 'switchover'
    assert plan['repoint'] == []
    assert plan['not_repointed'] == ['db3', 'dbw']
    assert plan['sync_hosts'] == ['db1']


# ---------------------------------------------------------------------------
# plan_rejoin
# ---------------------------------------------------------------------------


def after_failover_facts(**changes):
    """db2 promoted (timeline 2); db3 and dbw stream from it; db1 down."""
    facts = {
        'db1': down(),
        'db2': primary(timeline=2),
        'db3': standby(timeline=2, upstream='db2'),
        'dbw': standby(timeline=2, upstream='db2'),
    }
    facts.update(changes)
    return facts


@pytest.mark.parametrize('host', [None, ''])
def test_rejoin_without_host(host):
    plan = plan_rejoin(LAYOUT, after_failover_facts(), host)
    assert plan['action'] == 'refuse'
    assert 'rejoin_host is not set' in plan['errors'][0]


def test_rejoin_unknown_host():
    plan = plan_rejoin(LAYOUT, after_failover_facts(), 'db9')
    assert plan['action'] == 'refuse'
    assert plan['errors'][0].startswith("rejoin_host=db9 is not a host of the cluster's inventory group")
    assert 'db1, db2, db3, dbw' in plan['errors'][0]


def test_rejoin_unreachable_host():
    plan = plan_rejoin(LAYOUT, after_failover_facts(), 'db1', hosts_unreachable=['db1'])
    assert plan['action'] == 'refuse'
    assert plan['errors'][0].startswith('rejoin_host=db1 is unreachable')


def test_rejoin_the_only_writable_host_is_refused():
    plan = plan_rejoin(LAYOUT, healthy_facts(), 'db1')
    assert plan['action'] == 'refuse'
    assert 'rejoin_host=db1 is the current primary' in plan['errors'][0]
    assert 'switchover.yml' in plan['errors'][0]


def test_rejoin_without_any_primary_points_at_failover():
    facts = after_failover_facts()
    facts['db2'] = dict(facts['db2'], in_recovery=True)
    plan = plan_rejoin(LAYOUT, facts, 'db1')
    assert plan['action'] == 'refuse'
    assert 'no other server accepts writes' in plan['errors'][0] and 'failover.yml' in plan['errors'][0]


def test_rejoin_postgres_down_host():
    plan = plan_rejoin(LAYOUT, after_failover_facts(), 'db1')
    assert plan['action'] == 'rejoin'
    assert plan['primary'] == 'db2'
    assert plan['host_state'] == 'postgres down'
    assert plan['stale_primary'] is False
    assert plan['errors'] == []


def test_rejoin_stale_primary_on_lower_timeline():
    plan = plan_rejoin(LAYOUT, after_failover_facts(db1=primary(timeline=1)), 'db1')
    assert plan['action'] == 'rejoin'
    assert plan['primary'] == 'db2'
    assert plan['stale_primary'] is True
    assert plan['host_state'] == 'stale primary (timeline 1 < 2)'
    assert any('db1 accepts writes on the old timeline 1' in w for w in plan['warnings'])


@pytest.mark.parametrize('timeline', [2, 3])
def test_rejoin_writable_host_not_older_than_the_primary_is_refused(timeline):
    plan = plan_rejoin(LAYOUT, after_failover_facts(db1=primary(timeline=timeline)), 'db1')
    assert plan['action'] == 'refuse'
    assert plan['stale_primary'] is False
    assert plan['errors'][0].startswith('db1 accepts writes on timeline %d, not older than the primary db2'
                                        % timeline)


def test_rejoin_host_already_streaming_from_primary():
    plan = plan_rejoin(LAYOUT, after_failover_facts(), 'db3')
    assert plan['action'] == 'none'
    assert plan['host_state'] == 'standby streaming from db2'
    assert plan['errors'] == []


@pytest.mark.parametrize('fact, state', [
    (standby(timeline=1, upstream='db2'), 'standby of db2 (streaming)'),
    (standby(timeline=2, upstream='db1'), 'standby of db1 (streaming)'),
    (standby(timeline=2, upstream='db2', status='starting'), 'standby of db2 (starting)'),
    (standby(timeline=2, upstream='db2', status=None), 'standby of db2 (not streaming)'),
])
def test_rejoin_standby_not_following_the_primary(fact, state):
    plan = plan_rejoin(LAYOUT, after_failover_facts(db3=fact), 'db3')
    assert plan['action'] == 'rejoin'
    assert plan['host_state'] == state


def test_rejoin_host_of_another_cluster_is_refused():
    plan = plan_rejoin(LAYOUT, after_failover_facts(db1=primary(timeline=1, sysid='9999')), 'db1')
    assert plan['action'] == 'refuse'
    assert plan['errors'][0].startswith('db1 belongs to another cluster (system identifier 9999')
    assert 'replication_reclone_confirm' in plan['errors'][0]


def test_rejoin_with_two_other_writable_servers_is_refused():
    facts = after_failover_facts(db3=primary(timeline=2))
    plan = plan_rejoin(LAYOUT, facts, 'db1')
    assert plan['action'] == 'refuse'
    assert 'db2, db3 all accept writes' in plan['errors'][0]


# ---------------------------------------------------------------------------
# plan_rejoin_list (several hosts, one after the other)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('value, expected', [
    ('db1', ['db1']),
    ('db1,db3', ['db1', 'db3']),
    (' db3 , db1 ,, db3', ['db3', 'db1']),
    (['db3', 'db1', 'db3'], ['db3', 'db1']),
    (('db1',), ['db1']),
    ('', []),
    (None, []),
    ([], []),
])
def test_rejoin_host_list(value, expected):
    assert rejoin_host_list(value) == expected


@pytest.mark.parametrize('hosts', [None, '', [], ' , '])
def test_rejoin_list_without_hosts(hosts):
    plan = plan_rejoin_list(LAYOUT, after_failover_facts(), hosts)
    assert plan['action'] == 'refuse'
    assert plan['todo'] == [] and plan['plans'] == []
    assert 'rejoin_host is not set' in plan['errors'][0]


def test_rejoin_list_single_host_matches_plan_rejoin():
    facts = after_failover_facts()
    single = plan_rejoin(LAYOUT, facts, 'db1')
    plan = plan_rejoin_list(LAYOUT, facts, 'db1')
    assert plan['action'] == 'rejoin' and plan['primary'] == 'db2'
    assert plan['todo'] == ['db1'] and plan['none'] == []
    assert plan['plans'] == [dict((k, v) for k, v in single.items() if k != 'nodes')]
    assert plan['nodes'] == single['nodes']


def test_rejoin_list_keeps_the_order_and_skips_streaming_hosts():
    facts = after_failover_facts(db3=standby(timeline=1, upstream='db1', status=None))
    plan = plan_rejoin_list(LAYOUT, facts, ['db3', 'dbw', 'db1'])
    assert plan['action'] == 'rejoin'
    assert plan['todo'] == ['db3', 'db1']
    assert plan['none'] == ['dbw']
    assert [p['host'] for p in plan['plans']] == ['db3', 'dbw', 'db1']


def test_rejoin_list_nothing_to_do():
    plan = plan_rejoin_list(LAYOUT, after_failover_facts(), 'db3,dbw')
    assert plan['action'] == 'none'
    assert plan['todo'] == [] and plan['none'] == ['db3', 'dbw'] and plan['primary'] == 'db2'


def test_rejoin_list_two_stale_primaries_are_not_a_split_brain():
    # Both old-region servers came back writable on the old timeline: each is rewound, db2 stays the source.
    facts = after_failover_facts(db1=primary(timeline=1), db3=primary(timeline=1))
    assert plan_rejoin(LAYOUT, facts, 'db1')['action'] == 'refuse'  # alone: db2 and db3 both writable
    plan = plan_rejoin_list(LAYOUT, facts, 'db1,db3')
    assert plan['action'] == 'rejoin' and plan['primary'] == 'db2'
    assert plan['todo'] == ['db1', 'db3']
    assert all(p['stale_primary'] for p in plan['plans'])
    assert len(plan['warnings']) == 2


def test_rejoin_list_is_refused_when_one_host_is_refused():
    plan = plan_rejoin_list(LAYOUT, after_failover_facts(), ['db1', 'db9'], hosts_unreachable=[])
    assert plan['action'] == 'refuse'
    assert plan['todo'] == [] and plan['primary'] is None
    assert len(plan['errors']) == 1 and plan['errors'][0].startswith('rejoin_host=db9 is not a host')
    plan = plan_rejoin_list(LAYOUT, after_failover_facts(), 'db1,db3', hosts_unreachable=['db1'])
    assert plan['action'] == 'refuse' and plan['errors'][0].startswith('rejoin_host=db1 is unreachable')


def test_rejoin_list_with_the_primary_in_it_is_refused():
    plan = plan_rejoin_list(LAYOUT, after_failover_facts(), 'db1,db2')
    assert plan['action'] == 'refuse'
    assert any('no other server accepts writes' in e for e in plan['errors'])


def test_rejoin_list_writable_host_on_the_primary_timeline_is_refused():
    plan = plan_rejoin_list(LAYOUT, after_failover_facts(db1=primary(timeline=2)), 'db1,db3')
    assert plan['action'] == 'refuse'
    assert plan['errors'][0].startswith('db1 accepts writes on timeline 2, not older than the primary db2')


# --------------------------------------------------------------------------
# Region failover
# --------------------------------------------------------------------------

NOW = datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=datetime.timezone.utc)


def region_down_facts(**changes):
    """The east region lost: db1-db3 unreachable, dbw a standby that received up to 0/5000100."""
    facts = {'db1': down(), 'db2': down(), 'db3': down(), 'dbw': standby('0/5000100')}
    facts['dbw']['last_replay_time'] = '2026-11-27 11:59:50+00'
    facts.update(changes)
    return facts


def test_region_plan_counts_loss_against_the_archive_when_the_source_is_lost():
    archive = {'latest_lsn': '0/5000300', 'latest_time': '2026-11-27T11:59:58Z'}
    plan = plan_region(LAYOUT, region_down_facts(), 'west', archive, now=NOW)
    assert plan['candidate'] == 'dbw' and plan['errors'] == []
    assert plan['loss_bytes'] == 0x200 and plan['best_known_from'] == 'WAL archive'
    assert plan['loss_seconds'] == 8.0 and plan['loss_is_lower_bound'] is True
    assert plan['catch_up_from_archive'] is True
    assert any('lower bound' in w for w in plan['warnings'])


def test_region_plan_uses_the_source_primary_when_it_answers():
    facts = region_down_facts(db1=primary('0/5000500'))
    plan = plan_region(LAYOUT, facts, 'west', {'latest_lsn': '0/5000000'}, now=NOW)
    assert plan['source_primary'] == 'db1' and plan['best_known_lsn'] == '0/5000500'
    assert plan['loss_bytes'] == 0x400 and plan['loss_is_lower_bound'] is False
    assert plan['catch_up_from_archive'] is False and plan['loss_seconds'] == 10.0


def test_region_plan_no_loss_when_the_standby_is_ahead():
    plan = plan_region(LAYOUT, region_down_facts(), 'west', {'latest_lsn': '0/5000000'}, now=NOW)
    assert plan['loss_bytes'] == 0 and plan['loss_seconds'] == 0.0 and not plan['catch_up_from_archive']


def test_region_plan_refuses_an_unknown_or_dead_region():
    plan = plan_region(LAYOUT, region_down_facts(), 'north', {}, now=NOW)
    assert plan['candidate'] is None and 'no database host in region' in plan['errors'][0]
    assert 'east, west' in plan['errors'][0]
    plan = plan_region(LAYOUT, region_down_facts(dbw=down()), 'west', {}, now=NOW)
    assert plan['candidate'] is None and 'no database host of region west answers' in plan['errors'][0]


def test_region_plan_already_there():
    plan = plan_region(LAYOUT, region_down_facts(dbw=primary('0/6000000', timeline=2)), 'west', {}, now=NOW)
    assert plan['already_there'] and plan['candidate'] == 'dbw' and not plan['catch_up_from_archive']


def test_failover_with_candidate_regions_moves_a_healthy_primary_only_with_force():
    plan = plan_failover(LAYOUT, healthy_facts(), candidate_regions=['west'])
    assert plan['action'] == 'refuse' and 'failover_force' in ' '.join(plan['errors'])
    plan = plan_failover(LAYOUT, healthy_facts(), force=True, candidate_regions=['west'])
    assert plan['action'] == 'failover' and plan['candidate'] == 'dbw' and plan['fence'] == ['db1']


def test_failover_with_candidate_regions_ignores_a_recorded_failover_outside_them():
    last = {'new_primary': 'db1', 'new_timeline': 1, 'status': 'complete', 'kind': 'switchover'}
    plan = plan_failover(LAYOUT, healthy_facts(), force=True, last_failover=last, candidate_regions=['west'])
    assert plan['action'] == 'failover' and plan['candidate'] == 'dbw'
    # Once the primary is in the wanted region, a rerun has nothing to do.
    facts = {'db1': down(), 'db2': down(), 'db3': down(), 'dbw': primary('0/6000000', timeline=2)}
    done = {'new_primary': 'dbw', 'new_timeline': 2, 'status': 'complete', 'kind': 'region'}
    plan = plan_failover(LAYOUT, facts, hosts_unreachable=['db1', 'db2', 'db3'], force=True, last_failover=done,
                         candidate_regions='west')
    assert plan['action'] == 'none'


def test_region_plan_without_a_backup_uses_the_newest_archived_segment():
    archive = {'latest_lsn': None, 'newest_segment': '000000010000000000000005',
               'newest_segment_time': '2026-11-27T11:59:58Z'}
    plan = plan_region(LAYOUT, region_down_facts(), 'west', archive, now=NOW)
    assert plan['archive_lsn'] == '0/6000000' and plan['archive_time'] == '2026-11-27T11:59:58Z'
    assert plan['loss_bytes'] == 0x6000000 - 0x5000100 and plan['catch_up_from_archive']


@pytest.mark.parametrize('replay_time, shown', [
    ('2026-11-27 11:59:50+00', '2026-11-27T11:59:50+00:00'),
    ('2026-11-27T12:59:50+01:00', '2026-11-27T12:59:50+01:00'),  # the offset the fact gives is kept
    ('2026-11-27T11:59:50Z', '2026-11-27T11:59:50+00:00'),
    ('2026-11-27 11:59:50', '2026-11-27T11:59:50+00:00'),  # no zone: UTC
])
def test_region_plan_reads_the_replay_time_in_any_spelling(replay_time, shown):
    facts = region_down_facts()
    facts['dbw']['last_replay_time'] = replay_time
    plan = plan_region(LAYOUT, facts, 'west', {'latest_lsn': '0/5000300', 'latest_time': '2026-11-27T11:59:58Z'}, now=NOW)
    assert plan['candidate_replay_time'] == shown and plan['loss_seconds'] == 8.0


@pytest.mark.parametrize('replay_time', ['', None, 'not a time', 12])
def test_region_plan_without_a_readable_replay_time_has_no_loss_seconds(replay_time):
    facts = region_down_facts()
    facts['dbw']['last_replay_time'] = replay_time
    plan = plan_region(LAYOUT, facts, 'west', {'latest_lsn': '0/5000300', 'latest_time': '2026-11-27T11:59:58Z'}, now=NOW)
    assert plan['candidate_replay_time'] is None and plan['loss_seconds'] is None and plan['loss_bytes'] == 0x200

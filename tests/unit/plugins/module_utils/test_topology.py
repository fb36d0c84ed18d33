# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Layout validation and run-time cluster assessment."""

import pytest

from ansible_collections.rtx.dr.plugins.module_utils.topology import (
    assess_cluster, layout_errors, slot_name, synchronous_standby_names)

LAB = {
    'db-east-1': {'role': 'primary', 'upstream': None, 'sync': False},
    'db-east-2': {'role': 'standby', 'upstream': 'db-east-1', 'sync': True},
    'db-east-3': {'role': 'standby', 'upstream': 'db-east-1', 'sync': False},
    'db-west-1': {'role': 'standby', 'upstream': 'db-east-1', 'sync': False},
}


def with_changes(**changes):
    layout = {h: dict(v) for h, v in LAB.items()}
    for host, spec in changes.items():
        if spec is None:
            layout.pop(host)
        else:
            layout.setdefault(host, {}).update(spec)
    return layout


def test_lab_layout_is_valid():
    assert layout_errors(LAB) == []


@pytest.mark.parametrize('changes, expected', [
    ({'db-east-2': {'role': 'primary', 'upstream': None, 'sync': False}},
     'db-east-1, db-east-2 are all marked rtx_dr_pg_role: primary'),
    ({'db-east-1': {'role': 'standby', 'upstream': 'db-east-2'}},
     "no host of the group 'postgres' has rtx_dr_pg_role: primary"),
    ({'db-east-3': {'upstream': 'db-east-3'}},
     'db-east-3: rtx_dr_pg_upstream points at itself'),
    ({'db-east-3': {'upstream': 'db-nowhere'}},
     "db-east-3: rtx_dr_pg_upstream is 'db-nowhere', which is not a host of the group 'postgres'"),
    ({'db-east-3': {'upstream': None}},
     'db-east-3: is a standby without rtx_dr_pg_upstream'),
    ({'db-east-3': {'role': 'replica'}},
     "db-east-3: rtx_dr_pg_role is 'replica'; set it to 'primary' or 'standby'"),
    ({'db-east-3': {'role': None}},
     "db-east-3: rtx_dr_pg_role is None"),
    ({'db-east-1': {'sync': True}},
     'db-east-1: is marked primary but rtx_dr_pg_sync is true'),
    ({'db-east-1': {'upstream': 'db-east-2'}},
     'db-east-1: is marked primary but rtx_dr_pg_upstream is set'),
])
def test_bad_layouts_name_the_host_and_variable(changes, expected):
    errors = layout_errors(with_changes(**changes))
    assert any(expected in e for e in errors), errors


def test_upstream_loop_is_reported():
    layout = with_changes(**{'db-east-2': {'upstream': 'db-east-3'}, 'db-east-3': {'upstream': 'db-east-2'}})
    errors = layout_errors(layout)
    assert any('loops and never reaches the primary' in e and e.startswith('db-east-2') for e in errors), errors


def test_cascading_standby_is_valid():
    assert layout_errors(with_changes(**{'db-west-1': {'upstream': 'db-east-3'}})) == []


def test_empty_group():
    assert "group 'postgres' is empty" in layout_errors({})[0]


def test_synchronous_standby_names_and_slots():
    assert synchronous_standby_names(LAB, 'db-east-1') == 'FIRST 1 ("db-east-2")'
    assert synchronous_standby_names(LAB, 'db-east-2') == ''
    assert slot_name('db-East-2.example.com') == 'db_east_2_example_com'


def node(sysid='700', recovery=True, reachable=True):
    return {'reachable': reachable, 'in_recovery': recovery, 'system_identifier': sysid}


def test_fresh_lab_primary_declared_and_others_fresh():
    facts = {'db-east-1': node('1', False), 'db-east-2': node('2', False),
             'db-east-3': node('3', False), 'db-west-1': node('4', False)}
    result = assess_cluster(LAB, facts)
    assert result['primary'] == 'db-east-1'
    assert result['fresh'] == ['db-east-2', 'db-east-3', 'db-west-1']
    assert result['standbys'] == [] and result['errors'] == [] and not result['failed_over']


def test_healthy_cluster():
    facts = {'db-east-1': node(recovery=False), 'db-east-2': node(), 'db-east-3': node(), 'db-west-1': node()}
    result = assess_cluster(LAB, facts)
    assert result['primary'] == 'db-east-1'
    assert result['standbys'] == ['db-east-2', 'db-east-3', 'db-west-1']
    assert result['fresh'] == [] and result['errors'] == []


def test_failed_over_cluster_is_detected():
    facts = {'db-east-1': node(reachable=False), 'db-east-2': node(recovery=False),
             'db-east-3': node(), 'db-west-1': node()}
    result = assess_cluster(LAB, facts)
    assert result['primary'] == 'db-east-2'
    assert result['failed_over'] is True
    assert result['unreachable'] == ['db-east-1']
    assert result['standbys'] == ['db-east-3', 'db-west-1']


def test_two_writable_members_is_an_error_naming_both():
    facts = {'db-east-1': node(recovery=False), 'db-east-2': node(recovery=False),
             'db-east-3': node(), 'db-west-1': node()}
    result = assess_cluster(LAB, facts)
    assert result['primary'] is None
    assert 'two writable primaries' in result['errors'][0]
    assert 'db-east-1, db-east-2' in result['errors'][0]


def test_lost_primary_without_promotion_says_what_to_do():
    facts = {'db-east-1': node(reachable=False), 'db-east-2': node(), 'db-east-3': node(), 'db-west-1': node()}
    result = assess_cluster(LAB, facts)
    assert result['primary'] is None
    assert 'failover.yml' in result['errors'][0]

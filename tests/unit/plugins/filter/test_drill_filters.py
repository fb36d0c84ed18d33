# -*- coding: utf-8 -*-
# Copyright: rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drill filters expose module_utils.drill and turn its errors into filter errors."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.rtx.dr.plugins.filter.drill import FilterModule


def test_filters_are_registered():
    assert set(FilterModule().filters()) == {
        'drill_stages', 'drill_objectives', 'drill_acked', 'drill_lost', 'drill_verdict', 'drill_rpo', 'drill_lines'}


def test_bad_input_becomes_a_filter_error_with_the_message():
    filters = FilterModule().filters()
    with pytest.raises(AnsibleFilterError, match="drill must be one of"):
        filters['drill_stages']('everything')
    with pytest.raises(AnsibleFilterError, match="has no rto"):
        filters['drill_objectives']({'database': {'rpo': '1m'}})


def test_verdict_argument_order_matches_the_playbook():
    filters = FilterModule().filters()
    results = {'restore': {'status': 'complete', 'rto_seconds': 30, 'rpo_seconds': 10}}
    verdict = filters['drill_verdict'](results, 'restore', {'database': {'rto': '15m', 'rpo': '1m'}})
    assert verdict['passed']
    assert filters['drill_lost'](filters['drill_acked']('1\n2\n3\n', 1), [2]) == [3]

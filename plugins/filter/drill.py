# -*- coding: utf-8 -*-
# Copyright: rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters exposing the DR drill rules of module_utils.drill (playbooks/dr_drill.yml)."""

from __future__ import annotations

import functools

from ansible.errors import AnsibleFilterError

from ansible_collections.rtx.dr.plugins.module_utils import drill
from ansible_collections.rtx.dr.plugins.module_utils.errors import RtxDrError


def _clear_errors(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RtxDrError as exc:
            raise AnsibleFilterError(str(exc)) from exc
    return wrapper


@_clear_errors
def drill_stages(name):
    """['restore', 'failover', 'region'] for 'full', else [name]."""
    return drill.drill_stages(name)


@_clear_errors
def drill_objectives(objectives):
    """The inventory's objectives with rto_seconds/rpo_seconds per component."""
    return drill.normalize_objectives(objectives)


@_clear_errors
def drill_acked(text, after=None):
    """Acknowledged sequence numbers > after from a writer's log text."""
    return drill.parse_acked(text, after)


def drill_lost(acked, present):
    """Acknowledged sequence numbers not present on the final primary."""
    return drill.lost_commits(acked, present)


@_clear_errors
def drill_verdict(results, name, objectives, components=None):
    """Verdict of a drill from its stage results."""
    return drill.drill_verdict(name, results, objectives, components)


def drill_rpo(last_transaction, restore_started):
    """Achieved RPO of a restore drill (seconds) from the restored server's last transaction time."""
    return drill.restore_rpo(last_transaction, restore_started)


def drill_lines(verdict):
    """Summary lines of a verdict."""
    return drill.verdict_lines(verdict)


class FilterModule:
    """rtx.dr drill filters."""

    def filters(self):
        return {
            'drill_stages': drill_stages,
            'drill_objectives': drill_objectives,
            'drill_acked': drill_acked,
            'drill_lost': drill_lost,
            'drill_verdict': drill_verdict,
            'drill_rpo': drill_rpo,
            'drill_lines': drill_lines,
        }

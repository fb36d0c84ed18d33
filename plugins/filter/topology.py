# -*- coding: utf-8 -*-
# Copyright: rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters exposing the cluster layout rules of module_utils.topology."""

from __future__ import annotations

from ansible_collections.rtx.dr.plugins.module_utils.topology import (
    ROLE_VAR, SYNC_VAR, UPSTREAM_VAR, assess_cluster, layout_errors,
    slot_name, synchronous_standby_names)


def pg_layout(hostvars, hosts):
    """Build the layout dict (role/upstream/sync per host) from hostvars."""
    layout = {}
    for host in hosts:
        hv = hostvars[host]
        layout[host] = {
            'role': hv.get(ROLE_VAR),
            'upstream': hv.get(UPSTREAM_VAR),
            'sync': bool(hv.get(SYNC_VAR, False)),
        }
    return layout


def pg_node_facts(hostvars, hosts, var='topology_node'):
    """Normalise registered pg_node_info results (possibly unreachable) per host."""
    facts = {}
    for host in hosts:
        result = hostvars[host].get(var) or {}
        if result.get('unreachable') or result.get('failed') or not result:
            facts[host] = {'reachable': False,
                           'error': result.get('msg') or 'host not reached'}
        else:
            facts[host] = dict(result)
    return facts


def pg_replication_line(row):
    """One human readable line for a pg_stat_replication row of pg_node_info."""
    lag = row.get('replay_lag')
    return '  %-16s %-9s %-6s replay %-12s behind %s bytes%s' % (
        row.get('application_name'), row.get('state'), row.get('sync_state'),
        row.get('replay_lsn'), row.get('replay_lag_bytes'),
        '' if lag is None else ' (%.3f s)' % float(lag))


def pg_layout_errors(layout):
    return layout_errors(layout)


def pg_assess_cluster(layout, facts):
    return assess_cluster(layout, facts)


def pg_sync_standby_names(layout, upstream):
    return synchronous_standby_names(layout, upstream)


def pg_slot_name(host):
    return slot_name(host)


class FilterModule(object):
    def filters(self):
        return {
            'pg_layout': pg_layout,
            'pg_layout_errors': pg_layout_errors,
            'pg_node_facts': pg_node_facts,
            'pg_replication_line': pg_replication_line,
            'pg_assess_cluster': pg_assess_cluster,
            'pg_sync_standby_names': pg_sync_standby_names,
            'pg_slot_name': pg_slot_name,
        }

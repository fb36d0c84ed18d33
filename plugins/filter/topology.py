# -*- coding: utf-8 -*-
# Copyright: rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters exposing the cluster layout rules of module_utils.topology."""

from __future__ import annotations

from ansible_collections.rtx.dr.plugins.module_utils.failover import (
    plan_failover, plan_region, plan_rejoin, plan_rejoin_list, plan_switchover, rejoin_host_list)
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn
from ansible_collections.rtx.dr.plugins.module_utils.topology import (
    ROLE_VAR, SYNC_VAR, UPSTREAM_VAR, assess_cluster, format_sync_names, layout_errors,
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
            'region': hv.get('rtx_dr_region'),
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


def pg_failover_node_line(node):
    """One line of the cluster table printed by failover/switchover/rejoin."""
    return '%-14s %-26s tl %-3s lsn %-12s %s%s%s' % (
        node.get('host'), node.get('state'), node.get('timeline') if node.get('timeline') is not None else '-',
        node.get('lsn') or '-', 'sync ' if node.get('sync') else '',
        'region %s' % node.get('region') if node.get('region') else '',
        (' upstream %s' % node['upstream']) if node.get('upstream') else '')


def pg_step_durations(marks, t0):
    """[{step, at}] time marks (epoch seconds) to [{step, seconds}] durations, the first from t0."""
    out = []
    previous = float(t0)
    for mark in marks or []:
        at = float(mark['at'])
        out.append({'step': mark['step'], 'seconds': round(at - previous, 3)})
        previous = at
    return out


def health_lines(hostvars_of_host):
    """Table lines for one host's registered rtx.dr.health_check result."""
    result = hostvars_of_host.get('health_result') or {}
    host = hostvars_of_host.get('inventory_hostname')
    if result.get('unreachable'):
        return ['%-12s %-16s %-9s %s' % (host, '-', 'critical', 'host unreachable: %s' % result.get('msg'))]
    lines = []
    for item in result.get('health') or []:
        lines.append('%-12s %-16s %-9s %s' % (host, item.get('check'), item.get('status'), item.get('message')))
    if not lines:
        lines.append('%-12s %-16s %-9s %s' % (host, '-', 'critical', result.get('msg') or 'no result'))
    return lines


def pg_unreachable_hosts(hostvars, hosts, var='topology_node'):
    """Hosts whose registered result says Ansible could not reach the host at all."""
    return [h for h in hosts if (hostvars[h].get(var) or {}).get('unreachable')]


def pg_failover_plan(layout, facts, hosts_unreachable=None, candidate=None, max_lag_bytes=16777216,
                     allow_lag=False, force=False, last_failover=None, candidate_regions=None):
    return plan_failover(layout, facts, hosts_unreachable or [], candidate or None, int(max_lag_bytes),
                         bool(allow_lag), bool(force), last_failover or None, candidate_regions or [])


def pg_switchover_plan(layout, facts, hosts_unreachable=None, candidate=None, max_lag_bytes=16777216):
    return plan_switchover(layout, facts, hosts_unreachable or [], candidate or None, int(max_lag_bytes))


def pg_rejoin_plan(layout, facts, host, hosts_unreachable=None, also_rejoining=None):
    return plan_rejoin(layout, facts, host, hosts_unreachable or [], also_rejoining or [])


def pg_rejoin_list_plan(layout, facts, hosts, hosts_unreachable=None):
    """Plans of rejoin.yml for a host, a comma-separated string of hosts or a list (one after the other)."""
    return plan_rejoin_list(layout, facts, hosts, hosts_unreachable or [])


def pg_rejoin_hosts(value):
    """``rejoin_host`` (name, comma-separated string or list) as a list of host names."""
    return rejoin_host_list(value)


def pg_rejoin_plan_line(plan, method='auto'):
    """The ``plan: ...`` line of rejoin.yml for one host's plan."""
    line = 'plan: %s %s (%s)' % (plan.get('action'), plan.get('host'), plan.get('host_state') or '-')
    if plan.get('primary'):
        line += ' as a standby of %s' % plan['primary']
    if plan.get('action') == 'rejoin':
        line += ' by %s' % method
    return line


def pg_rejoin_done_lines(done):
    """Summary lines of rejoin.yml for one rebuilt host ({host, primary, sync_state, how, seconds})."""
    return ['REJOIN COMPLETE: %s streams from %s (%s)' % (done.get('host'), done.get('primary'), done.get('sync_state')),
            'how: %s (%s s)' % (done.get('how'), done.get('seconds'))]


def pg_lsn_ge(a, b):
    """True when LSN ``a`` is at or after LSN ``b`` (text or int); False when either is empty."""
    if a in (None, '') or b in (None, ''):
        return False
    return parse_lsn(a) >= parse_lsn(b)


def pg_region_plan(layout, facts, target_region, archive=None):
    return plan_region(layout, facts, target_region, archive)


def pg_format_sync_names(hosts):
    return format_sync_names(list(hosts or []))


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
            'pg_format_sync_names': pg_format_sync_names,
            'pg_unreachable_hosts': pg_unreachable_hosts,
            'pg_step_durations': pg_step_durations,
            'health_lines': health_lines,
            'pg_failover_node_line': pg_failover_node_line,
            'pg_failover_plan': pg_failover_plan,
            'pg_switchover_plan': pg_switchover_plan,
            'pg_rejoin_plan': pg_rejoin_plan,
            'pg_rejoin_list_plan': pg_rejoin_list_plan,
            'pg_rejoin_hosts': pg_rejoin_hosts,
            'pg_rejoin_plan_line': pg_rejoin_plan_line,
            'pg_rejoin_done_lines': pg_rejoin_done_lines,
            'pg_region_plan': pg_region_plan,
            'pg_lsn_ge': pg_lsn_ge,
        }

# -*- coding: utf-8 -*-
# Copyright: rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cluster layout rules shared by playbooks, filters and modules.

Two questions are answered here, in plain Python so that they are unit tested:

* ``layout_errors``: is the inventory's *initial* layout sane (exactly one
  primary, every standby has an upstream that exists, no cycles)?
* ``assess_cluster``: given what each server says at run time, which host is
  the primary *now*, which standbys are healthy members, which hosts are fresh
  servers to clone, and is anything dangerous (two writable primaries)?
"""

from __future__ import annotations

VALID_ROLES = ('primary', 'standby')
ROLE_VAR = 'rtx_dr_pg_role'
UPSTREAM_VAR = 'rtx_dr_pg_upstream'
SYNC_VAR = 'rtx_dr_pg_sync'


def layout_errors(layout):
    """Return a list of human readable errors for an inventory layout.

    ``layout`` maps host name to a dict with the keys ``role``, ``upstream``
    and ``sync`` (values taken from the inventory variables).
    """
    errors = []
    names = sorted(layout)
    if not names:
        return ["the inventory group 'postgres' is empty: add the database hosts to it"]
    primaries = [h for h in names if layout[h].get('role') == 'primary']
    for host in names:
        spec = layout[host]
        role = spec.get('role')
        upstream = spec.get('upstream')
        if role not in VALID_ROLES:
            errors.append("%s: %s is %r; set it to 'primary' or 'standby' in the inventory"
                          % (host, ROLE_VAR, role))
            continue
        if role == 'primary':
            if upstream:
                errors.append("%s: is marked primary but %s is set to %r; remove %s from the primary"
                              % (host, UPSTREAM_VAR, upstream, UPSTREAM_VAR))
            if spec.get('sync'):
                errors.append("%s: is marked primary but %s is true; only standbys can be synchronous"
                              % (host, SYNC_VAR))
            continue
        if not upstream:
            errors.append("%s: is a standby without %s; set it to the host it streams from"
                          % (host, UPSTREAM_VAR))
        elif upstream == host:
            errors.append("%s: %s points at itself; set it to the primary or another standby"
                          % (host, UPSTREAM_VAR))
        elif upstream not in layout:
            errors.append("%s: %s is %r, which is not a host of the group 'postgres'"
                          % (host, UPSTREAM_VAR, upstream))
    if not primaries:
        errors.append("no host of the group 'postgres' has %s: primary; mark exactly one" % ROLE_VAR)
    elif len(primaries) > 1:
        errors.append("%s are all marked %s: primary; exactly one host may be"
                      % (', '.join(primaries), ROLE_VAR))
    if errors:
        return errors
    # Every standby's upstream chain must end at the primary (no cycles).
    for host in names:
        seen = [host]
        current = host
        while layout[current].get('role') != 'primary':
            current = layout[current]['upstream']
            if current in seen:
                errors.append("%s: the %s chain %s loops and never reaches the primary"
                              % (host, UPSTREAM_VAR, ' -> '.join(seen + [current])))
                break
            seen.append(current)
    return errors


def format_sync_names(hosts):
    """``FIRST 1 ("a", "b")`` for hosts in priority order; '' for none."""
    if not hosts:
        return ''
    return 'FIRST 1 (%s)' % ', '.join('"%s"' % h.replace('"', '') for h in hosts)


def synchronous_standby_names(layout, upstream):
    """The synchronous_standby_names value for ``upstream`` (FIRST 1 over its sync standbys)."""
    return format_sync_names(sorted(h for h, s in layout.items() if s.get('sync') and s.get('upstream') == upstream))


def slot_name(host):
    """Physical replication slot name of a standby (lower case, [a-z0-9_])."""
    out = []
    for ch in host.lower():
        out.append(ch if (ch.isalnum() and ch.isascii()) or ch == '_' else '_')
    return ''.join(out)[:63]


def assess_cluster(layout, facts):
    """Decide the cluster's run-time state.

    ``facts`` maps host name to what the server reported: ``reachable``,
    ``in_recovery`` and ``system_identifier`` (see module pg_node_info).

    Returns a dict with ``primary`` (host), ``standbys`` (members streaming
    from this cluster), ``fresh`` (reachable servers of another system
    identifier, to be cloned), ``unreachable``, ``failed_over`` (bool),
    ``errors`` and ``warnings``.
    """
    errors = []
    warnings = []
    declared = [h for h in sorted(layout) if layout[h].get('role') == 'primary']
    declared_primary = declared[0] if declared else None
    unreachable = sorted(h for h in layout if not facts.get(h, {}).get('reachable'))
    up = {h: facts[h] for h in layout if h not in unreachable}
    writable = sorted(h for h, f in up.items() if not f.get('in_recovery'))

    # The cluster's identity is the system identifier of the declared primary
    # if it is up, otherwise the one most standbys share.
    sysid = None
    if declared_primary in up:
        sysid = str(up[declared_primary].get('system_identifier'))
    else:
        counts = {}
        for f in up.values():
            if f.get('in_recovery'):
                key = str(f.get('system_identifier'))
                counts[key] = counts.get(key, 0) + 1
        if counts:
            sysid = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]

    members = sorted(h for h, f in up.items() if str(f.get('system_identifier')) == sysid)
    fresh = sorted(h for h in up if h not in members)
    member_primaries = [h for h in members if h in writable]

    primary = None
    if len(member_primaries) > 1:
        errors.append('two writable primaries of the same cluster (system identifier %s): %s. '
                      'Stop writes and fence one of them before doing anything else'
                      % (sysid, ', '.join(member_primaries)))
    elif len(member_primaries) == 1:
        primary = member_primaries[0]
    elif declared_primary in unreachable:
        errors.append('%s (the inventory primary) is unreachable and no other member of the cluster '
                      'accepts writes: run playbooks/failover.yml to promote a standby' % declared_primary)
    else:
        errors.append('no reachable member of the cluster accepts writes (all are in recovery): '
                      'check %s and the standbys before going on' % (declared_primary or 'the primary'))

    failed_over = bool(primary and primary != declared_primary)
    if failed_over:
        warnings.append('%s is the primary now, not %s as the inventory says: the cluster has failed over '
                        'since it was set up' % (primary, declared_primary))
    for host in unreachable:
        warnings.append('%s: unreachable (%s)' % (host, facts.get(host, {}).get('error') or 'no answer'))
    standbys = sorted(h for h in members if h != primary and h not in writable)
    return {
        'primary': primary,
        'declared_primary': declared_primary,
        'system_identifier': sysid,
        'standbys': standbys,
        'fresh': fresh,
        'unreachable': unreachable,
        'failed_over': failed_over,
        'errors': errors,
        'warnings': warnings,
    }

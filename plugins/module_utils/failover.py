# -*- coding: utf-8 -*-
# Copyright: rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of failover.yml, switchover.yml and rejoin.yml, in plain Python.

The playbooks gather what every server says (module ``pg_node_info``) and
hand it here through filters; everything that decides *what* to do lives in
this file and is unit tested:

* :func:`plan_failover`: is a failover needed and allowed, which standby is
  promoted and why, which hosts are fenced and repointed, how much data may
  be lost, and the new ``synchronous_standby_names``.
* :func:`plan_switchover`: the same for a planned change of primary.
* :func:`plan_rejoin`: whether a host may be turned into a standby of the
  current primary and how (rewind or re-clone).

Nothing here connects anywhere. ``facts`` maps an inventory host name to the
normalised ``pg_node_info`` result (``reachable`` false when the host or its
server did not answer); ``layout`` maps host name to ``role``/``upstream``/
``sync``/``region`` from the inventory.
"""

from __future__ import annotations

import datetime

from ansible_collections.rtx.dr.plugins.module_utils.catalog import parse_time
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import format_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_lsn
from ansible_collections.rtx.dr.plugins.module_utils.postgres import parse_wal_segment_name
from ansible_collections.rtx.dr.plugins.module_utils.topology import format_sync_names

DEFAULT_MAX_LAG_BYTES = 16 * 1024 * 1024


def _lsn(value):
    """LSN text to int; None (or garbage) to None."""
    if value in (None, ''):
        return None
    try:
        return parse_lsn(value)
    except InvalidValueError:
        return None


def _fmt(value):
    return None if value is None else format_lsn(value)


def standby_position(fact):
    """(timeline, lsn) of the most advanced WAL a standby holds (received or replayed)."""
    receiver = fact.get('wal_receiver') or {}
    candidates = [_lsn(fact.get('receive_lsn')), _lsn(fact.get('replay_lsn')), _lsn(receiver.get('flushed_lsn'))]
    candidates = [c for c in candidates if c is not None]
    return (int(fact.get('timeline') or 0), max(candidates) if candidates else 0)


def _sender_position(fact):
    """The WAL end last reported by the sender to this standby (pg_stat_wal_receiver.latest_end_lsn)."""
    receiver = fact.get('wal_receiver') or {}
    return _lsn(receiver.get('latest_end_lsn'))


def _cluster_members(layout, facts):
    """System identifier of the cluster and its reachable members (the most common sysid, primary first)."""
    up = dict((h, f) for h, f in facts.items() if h in layout and f.get('reachable'))
    counts = {}
    for fact in up.values():
        key = str(fact.get('system_identifier'))
        # Every server is one vote; a writable one breaks ties (a lone fresh
        # server must not outvote the cluster's standbys).
        weight = 1.5 if not fact.get('in_recovery') else 1
        counts[key] = counts.get(key, 0) + weight
    if not counts:
        return None, []
    sysid = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    return sysid, sorted(h for h, f in up.items() if str(f.get('system_identifier')) == sysid)


def _old_primary(layout, facts, members):
    """The primary the standbys were following: their common upstream, else the inventory's primary."""
    votes = {}
    for host in members:
        if not facts[host].get('in_recovery'):
            continue
        # Follow cascading standbys up to the first server that is not a
        # reachable standby: that is the primary they all depended on.
        seen = [host]
        upstream = facts[host].get('upstream_host')
        while (upstream in members and facts[upstream].get('in_recovery') and upstream not in seen):
            seen.append(upstream)
            upstream = facts[upstream].get('upstream_host')
        if upstream in layout and upstream not in seen:
            votes[upstream] = votes.get(upstream, 0) + 1
    if votes:
        return sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0], 'the standbys stream from it'
    declared = [h for h in sorted(layout) if layout[h].get('role') == 'primary']
    if declared:
        return declared[0], 'the inventory marks it rtx_dr_pg_role: primary'
    return None, 'unknown'


def sync_names_for(layout, new_primary, old_primary, repointed):
    """``synchronous_standby_names`` of the new primary, and the hosts it names, in priority order.

    The hosts the inventory marks ``rtx_dr_pg_sync`` come first, then the other
    standbys of the new primary's region, then the old primary (a synchronous
    candidate again once it rejoins). Cross-region standbys are never made
    synchronous (commit latency). Empty when the cluster had no synchronous
    standby at all.
    """
    if not any(spec.get('sync') for spec in layout.values()):
        return '', []
    region = layout.get(new_primary, {}).get('region')
    ordered = []
    for host in sorted(layout):
        if (host != new_primary and layout[host].get('sync') and host in repointed
                and layout[host].get('region') == region):
            ordered.append(host)
    for host in sorted(layout):
        if (host not in ordered and host != new_primary and host != old_primary and host in repointed
                and layout[host].get('region') == region):
            ordered.append(host)
    if old_primary and old_primary != new_primary and layout.get(old_primary, {}).get('region') == region:
        ordered.append(old_primary)
    if not any(h in repointed for h in ordered):
        # Naming only servers that do not stream yet would block every commit.
        return '', []
    return format_sync_names(ordered), ordered


def _rank(layout, facts, standbys, old_primary):
    """Standbys ordered best first: highest timeline, most WAL, synchronous, the old primary's region, name."""
    region = layout.get(old_primary, {}).get('region') if old_primary else None

    def key(host):
        timeline, lsn = standby_position(facts[host])
        return (-timeline, -lsn, 0 if layout[host].get('sync') else 1,
                0 if region and layout[host].get('region') == region else 1, host)
    return sorted(standbys, key=key)


def _node_table(layout, facts, hosts_unreachable):
    table = []
    for host in sorted(layout):
        fact = facts.get(host) or {}
        if host in hosts_unreachable:
            state = 'host unreachable'
        elif not fact.get('reachable'):
            state = 'postgres down'
        elif fact.get('in_recovery'):
            state = 'standby'
        else:
            state = 'primary (accepts writes)'
        timeline, lsn = standby_position(fact) if fact.get('reachable') else (None, None)
        if fact.get('reachable') and not fact.get('in_recovery'):
            lsn = _lsn(fact.get('current_lsn'))
        table.append({
            'host': host,
            'state': state,
            'region': layout[host].get('region'),
            'sync': bool(layout[host].get('sync')),
            'timeline': timeline if fact.get('reachable') else None,
            'lsn': _fmt(lsn) if lsn else None,
            'replay_lsn': fact.get('replay_lsn') if fact.get('in_recovery') else None,
            'upstream': fact.get('upstream_host'),
            'replay_paused': fact.get('replay_paused'),
            'error': fact.get('error'),
        })
    return table


def _lag_of(facts, standbys, host):
    """Bytes of WAL ``host`` lacks against the most advanced position any standby knows of on its timeline.

    Positions on an older timeline were abandoned by an earlier promotion and
    are not loss.
    """
    timeline, own = standby_position(facts[host])
    best = own
    for other in standbys:
        other_timeline, lsn = standby_position(facts[other])
        if other_timeline == timeline:
            best = max(best, lsn, _sender_position(facts[other]) or 0)
    return max(0, best - own), best


def _set_followers(plan, layout, standbys, new_primary, old_primary, other_sysid):
    """Fill ``repoint``, ``not_repointed`` and the sync names of a plan whose new primary is ``new_primary``."""
    plan['repoint'] = [h for h in standbys if h != new_primary]
    plan['not_repointed'] = sorted(h for h in layout if h not in standbys and h != new_primary
                                   and h != old_primary and h not in other_sysid)
    names, hosts = sync_names_for(layout, new_primary, old_primary, plan['repoint'])
    plan['sync_standby_names'], plan['sync_hosts'] = names, hosts


def plan_failover(layout, facts, hosts_unreachable=(), candidate=None, max_lag_bytes=DEFAULT_MAX_LAG_BYTES,
                  allow_lag=False, force=False, last_failover=None, candidate_regions=()):
    """Decide a failover.

    :param hosts_unreachable: hosts Ansible could not reach at all (as opposed
        to reachable hosts whose PostgreSQL is down).
    :param candidate: operator's choice of host to promote (validated).
    :param max_lag_bytes: refuse a candidate further behind than this (bytes of
        WAL behind the most advanced position any standby knows of).
    :param allow_lag: promote even when the candidate lags more than max_lag_bytes.
    :param force: fail over even though the old primary still accepts writes;
        it is fenced first.
    :param last_failover: ``{'failover_id', 'kind', 'status', 'old_primary', 'new_primary',
        'new_timeline', 'finished_at', 'data_loss_bytes'}`` of the last failover
        recorded on the writable primary (status ``complete`` or ``running``), if
        any: rerunning after a successful failover is then a no-op, and after a
        run that stopped once the promotion was recorded it resumes that run.
    :param candidate_regions: only standbys of these regions may be promoted
        (empty: any).
    :returns: a dict; ``action`` is ``failover``, ``resume`` (finish the steps
        after an earlier promotion), ``none`` (nothing to do) or ``refuse``
        (``errors`` says why; nothing may be changed).
    """
    hosts_unreachable = set(hosts_unreachable or ())
    if isinstance(candidate_regions, str):
        candidate_regions = [r.strip() for r in candidate_regions.split(',') if r.strip()]
    errors = []
    warnings = []
    facts = dict((h, facts.get(h) or {'reachable': False}) for h in layout)
    sysid, members = _cluster_members(layout, facts)
    writable = [h for h in members if not facts[h].get('in_recovery')]
    standbys = [h for h in members if facts[h].get('in_recovery')]
    old_primary, old_primary_why = _old_primary(layout, facts, members)
    if writable and len(writable) == 1:
        old_primary, old_primary_why = writable[0], 'it accepts writes now'
    plan = {
        'action': 'refuse',
        'system_identifier': sysid,
        'old_primary': old_primary,
        'old_primary_why': old_primary_why,
        'old_primary_state': None,
        'candidate': None,
        'candidate_reason': None,
        'ranking': [],
        'fence': [],
        'stonith': [],
        'repoint': [],
        'not_repointed': [],
        'sync_standby_names': '',
        'sync_hosts': [],
        'old_timeline': None,
        'resume': None,
        'candidate_lsn': None,
        'best_known_lsn': None,
        'estimated_loss_bytes': None,
        'loss_is_lower_bound': True,
        'nodes': _node_table(layout, facts, hosts_unreachable),
        'errors': errors,
        'warnings': warnings,
    }
    if old_primary in hosts_unreachable:
        plan['old_primary_state'] = 'host unreachable'
    elif not old_primary:
        plan['old_primary_state'] = 'unknown'
    elif not facts.get(old_primary, {}).get('reachable'):
        plan['old_primary_state'] = 'postgres down'
    elif old_primary in writable:
        plan['old_primary_state'] = 'accepts writes'
    else:
        plan['old_primary_state'] = 'in recovery'
    other_sysid = sorted(h for h, f in facts.items() if f.get('reachable') and h not in members)
    for host in other_sysid:
        warnings.append('%s: reachable but not a member of this cluster (system identifier %s, cluster %s); '
                        'ignored' % (host, facts[host].get('system_identifier'), sysid))

    if len(writable) > 1:
        errors.append('%s all accept writes: the cluster already has two writable primaries (split brain). '
                      'Stop the applications writing to the wrong one, fence it, and rejoin it with '
                      'playbooks/rejoin.yml; failover.yml does not choose between them'
                      % ', '.join(writable))
        return plan
    if isinstance(candidate_regions, str):
        candidate_regions = [r.strip() for r in candidate_regions.split(',') if r.strip()]
    if writable:
        primary = writable[0]
        done = last_failover or {}
        # A primary outside the wanted regions (region failover) is not "done", whatever was recorded.
        in_wanted = not candidate_regions or layout.get(primary, {}).get('region') in candidate_regions
        if (in_wanted and done.get('new_primary') == primary
                and int(done.get('new_timeline') or -1) == int(facts[primary].get('timeline') or -2)):
            plan['candidate'] = primary
            if done.get('status') == 'running':
                # Promoted by a run that stopped before its end: finish its steps.
                plan['action'] = 'resume'
                plan['old_primary'] = done.get('old_primary') or old_primary
                plan['old_primary_state'] = 'replaced by %s' % primary
                plan['resume'] = done
                plan['candidate_reason'] = ('%s was promoted by %s %s, which stopped before its end: '
                                            'resuming it (repoint, endpoint, verify, record)'
                                            % (primary, done.get('kind') or 'failover', done.get('failover_id')))
                _set_followers(plan, layout, standbys, primary, plan['old_primary'], other_sysid)
                plan['estimated_loss_bytes'] = done.get('data_loss_bytes')
                return plan
            plan['action'] = 'none'
            plan['candidate_reason'] = ('%s was promoted by the %s finished at %s and is the primary '
                                        '(timeline %s): nothing to do' % (primary, done.get('kind') or 'failover',
                                                                          done.get('finished_at'),
                                                                          facts[primary].get('timeline')))
            return plan
        if candidate_regions and in_wanted:
            plan['action'] = 'none'
            plan['candidate'] = primary
            plan['candidate_reason'] = ('%s in region %s is the primary: nothing to do'
                                        % (primary, layout.get(primary, {}).get('region')))
            return plan
        if not force:
            errors.append('%s is up and accepts writes: promoting a standby now would create a second '
                          'primary. For a planned change run playbooks/switchover.yml; if %s must be '
                          'abandoned anyway, rerun with -e failover_force=true and it is fenced (stopped and '
                          'kept from starting as a primary) before the promotion' % (primary, primary))
            return plan
        warnings.append('failover_force: %s accepts writes and is fenced before the promotion; writes it '
                        'accepted that no standby received are lost' % primary)
    plan['fence'] = [old_primary] if old_primary and old_primary not in hosts_unreachable else []
    plan['stonith'] = [old_primary] if old_primary in hosts_unreachable else []

    eligible = [h for h in standbys if not candidate_regions or layout[h].get('region') in candidate_regions]
    if not standbys:
        errors.append('no reachable standby of the cluster: nothing can be promoted (unreachable: %s)'
                      % (', '.join(sorted(h for h in layout if not facts[h].get('reachable'))) or 'none'))
        return plan
    if not eligible:
        errors.append('no reachable standby in the allowed regions (%s); reachable standbys: %s'
                      % (', '.join(candidate_regions), ', '.join(standbys)))
        return plan
    ranked = _rank(layout, facts, eligible, old_primary)
    plan['ranking'] = [{'host': h, 'timeline': standby_position(facts[h])[0],
                        'lsn': _fmt(standby_position(facts[h])[1]), 'sync': bool(layout[h].get('sync')),
                        'region': layout[h].get('region')} for h in ranked]

    if candidate:
        if candidate not in layout:
            errors.append("candidate=%s is not a host of the cluster's inventory group; choose one of: %s"
                          % (candidate, ', '.join(ranked)))
            return plan
        if candidate in hosts_unreachable or not facts[candidate].get('reachable'):
            errors.append('candidate=%s is not reachable (%s); choose a reachable standby: %s'
                          % (candidate, facts[candidate].get('error') or 'host unreachable', ', '.join(ranked)))
            return plan
        if candidate not in members:
            errors.append('candidate=%s is not a member of this cluster (system identifier %s, expected %s)'
                          % (candidate, facts[candidate].get('system_identifier'), sysid))
            return plan
        if candidate not in standbys:
            errors.append('candidate=%s is not a standby (it accepts writes)' % candidate)
            return plan
        if candidate not in eligible:
            errors.append('candidate=%s is in region %s, outside failover_candidate_regions (%s)'
                          % (candidate, layout[candidate].get('region'), ', '.join(candidate_regions)))
            return plan
        chosen = candidate
        why = 'chosen by the operator (candidate=%s)' % candidate
        if chosen != ranked[0]:
            why += '; %s holds more WAL or ranks higher' % ranked[0]
    else:
        chosen = ranked[0]
        timeline, lsn = standby_position(facts[chosen])
        ties = [h for h in ranked if standby_position(facts[h]) == (timeline, lsn)]
        why = 'it has received the most WAL (timeline %s, %s)' % (timeline, _fmt(lsn))
        if len(ties) > 1:
            why += ', tied with %s; preferred because %s' % (
                ', '.join(h for h in ties if h != chosen),
                'it is the synchronous standby' if layout[chosen].get('sync') else
                "it is in the old primary's region" if old_primary and layout[chosen].get('region') and
                layout[chosen].get('region') == layout.get(old_primary, {}).get('region')
                else 'of its name (first in order)')
        elif layout[chosen].get('sync'):
            why += ' and it is the synchronous standby'
    lag, best = _lag_of(facts, standbys, chosen)
    plan['candidate'] = chosen
    plan['candidate_lsn'] = _fmt(standby_position(facts[chosen])[1])
    plan['best_known_lsn'] = _fmt(best)
    plan['old_timeline'] = standby_position(facts[chosen])[0]
    plan['estimated_loss_bytes'] = lag
    # The loss is exact only if the old primary's last position is known.
    plan['loss_is_lower_bound'] = plan['old_primary_state'] != 'accepts writes'
    if lag > max_lag_bytes and not allow_lag:
        errors.append('%s is %d bytes of WAL behind the most advanced known position %s (limit '
                      'failover_max_lag_bytes=%d): promoting it would lose those commits. Wait for it to '
                      'catch up, choose another candidate, or rerun with -e failover_allow_lag=true to '
                      'accept the loss' % (chosen, lag, _fmt(best), max_lag_bytes))
        return plan
    if lag > max_lag_bytes:
        warnings.append('failover_allow_lag: %s is %d bytes behind; that WAL is lost' % (chosen, lag))
    if facts[chosen].get('replay_paused'):
        warnings.append('%s has WAL replay paused; it is resumed by the promotion' % chosen)
    plan['why'] = why
    plan['candidate_reason'] = why
    _set_followers(plan, layout, standbys, chosen, old_primary, other_sysid)
    plan['action'] = 'failover'
    return plan


def plan_switchover(layout, facts, hosts_unreachable=(), candidate=None, max_lag_bytes=DEFAULT_MAX_LAG_BYTES):
    """Decide a planned switchover: the primary must be up, the candidate a streaming standby of it."""
    hosts_unreachable = set(hosts_unreachable or ())
    facts = dict((h, facts.get(h) or {'reachable': False}) for h in layout)
    sysid, members = _cluster_members(layout, facts)
    writable = [h for h in members if not facts[h].get('in_recovery')]
    standbys = [h for h in members if facts[h].get('in_recovery')]
    errors = []
    plan = {
        'action': 'refuse',
        'old_primary': writable[0] if len(writable) == 1 else None,
        'candidate': None,
        'candidate_reason': None,
        'repoint': [],
        'not_repointed': [],
        'sync_standby_names': '',
        'sync_hosts': [],
        'nodes': _node_table(layout, facts, hosts_unreachable),
        'errors': errors,
        'warnings': [],
    }
    if len(writable) != 1:
        errors.append('a switchover needs exactly one running primary; found %s. Use playbooks/failover.yml '
                      'when the primary is down' % (', '.join(writable) or 'none'))
        return plan
    primary = writable[0]
    streaming = dict((row.get('application_name'), row) for row in facts[primary].get('replication') or []
                     if row.get('state') == 'streaming')
    followers = [h for h in standbys if h in streaming]
    if candidate:
        if candidate == primary:
            errors.append('candidate=%s is already the primary: nothing to switch' % candidate)
            return plan
        if candidate not in layout:
            errors.append("candidate=%s is not a host of the cluster's inventory group; choose one of: %s"
                          % (candidate, ', '.join(followers) or 'none'))
            return plan
        if candidate not in followers:
            errors.append('candidate=%s is not a standby streaming from %s (state: %s); a switchover needs one '
                          'so that it receives the shutdown checkpoint' % (
                              candidate, primary, 'host unreachable' if candidate in hosts_unreachable else
                              facts[candidate].get('error') or (streaming.get(candidate) or {}).get('state')
                              or 'not streaming'))
            return plan
        chosen = candidate
        why = 'chosen by the operator (candidate=%s)' % candidate
    else:
        if not followers:
            errors.append('no standby streams from %s: there is nothing to switch over to' % primary)
            return plan
        ranked = sorted(followers, key=lambda h: (0 if streaming[h].get('sync_state') == 'sync' else 1,
                                                  streaming[h].get('replay_lag_bytes') or 0, h))
        chosen = ranked[0]
        why = ('it is the synchronous standby' if streaming[chosen].get('sync_state') == 'sync'
               else 'it is the streaming standby with the least replay lag')
    lag = streaming[chosen].get('replay_lag_bytes') or 0
    if lag > max_lag_bytes:
        errors.append('%s is %d bytes behind %s in replay (limit %d): wait until it catches up'
                      % (chosen, lag, primary, max_lag_bytes))
        return plan
    plan['candidate'] = chosen
    plan['candidate_reason'] = why
    plan['repoint'] = [h for h in standbys if h != chosen]
    plan['not_repointed'] = sorted(h for h in layout if h not in members)
    # The old primary comes back as a standby at once: a synchronous candidate like the others.
    names, hosts = sync_names_for(layout, chosen, None, plan['repoint'] + [primary])
    plan['sync_standby_names'], plan['sync_hosts'] = names, hosts
    plan['action'] = 'switchover'
    return plan


def plan_rejoin(layout, facts, host, hosts_unreachable=(), also_rejoining=()):
    """Decide how ``host`` becomes a standby of the current primary.

    The current primary is the writable member with the highest timeline. The
    host is refused when it is that primary, unreachable, or another cluster.
    ``action`` is ``none`` when it already streams from the primary,
    ``rejoin`` otherwise (``stale_primary`` true when it accepts writes on an
    older timeline and must be stopped first). ``also_rejoining``: other hosts
    rebuilt in the same run (:func:`plan_rejoin_list`); they are never taken for
    the primary (a second stale primary there is not a split brain).
    """
    hosts_unreachable = set(hosts_unreachable or ())
    also_rejoining = set(also_rejoining or ()) - set([host])
    facts = dict((h, facts.get(h) or {'reachable': False}) for h in layout)
    errors = []
    plan = {'action': 'refuse', 'host': host, 'primary': None, 'stale_primary': False,
            'host_state': None, 'errors': errors, 'warnings': [],
            'nodes': _node_table(layout, facts, hosts_unreachable)}
    if not host:
        errors.append('rejoin_host is not set: name the host to bring back, e.g. -e rejoin_host=db-east-1')
        return plan
    if host not in layout:
        errors.append("rejoin_host=%s is not a host of the cluster's inventory group (%s)"
                      % (host, ', '.join(sorted(layout))))
        return plan
    if host in hosts_unreachable:
        errors.append('rejoin_host=%s is unreachable: start the machine (or container) first; its PostgreSQL '
                      'may stay down' % host)
        return plan
    sysid, members = _cluster_members(dict((h, s) for h, s in layout.items() if h != host),
                                      dict((h, f) for h, f in facts.items() if h != host))
    up = dict((h, facts[h]) for h in members)
    writable = sorted((h for h, f in up.items() if not f.get('in_recovery') and h not in also_rejoining),
                      key=lambda h: (-int(up[h].get('timeline') or 0), h))
    if not writable:
        hfact = facts[host]
        if hfact.get('reachable') and not hfact.get('in_recovery'):
            errors.append('rejoin_host=%s is the current primary (it accepts writes and no other server does): '
                          'rejoin only brings back former members as standbys. For a planned change of primary '
                          'use playbooks/switchover.yml' % host)
        else:
            errors.append('no other server accepts writes: there is no primary for %s to follow. Run '
                          'playbooks/failover.yml first' % host)
        return plan
    if len(writable) > 1:
        errors.append('%s all accept writes: resolve that split brain before rejoining %s'
                      % (', '.join(writable), host))
        return plan
    primary = writable[0]
    plan['primary'] = primary
    pfact = facts[primary]
    hfact = facts[host]
    if hfact.get('reachable'):
        if str(hfact.get('system_identifier')) != str(pfact.get('system_identifier')):
            errors.append('%s belongs to another cluster (system identifier %s, the primary %s has %s): '
                          'rejoin only brings back former members; use site.yml with '
                          'replication_reclone_confirm to replace it' % (
                              host, hfact.get('system_identifier'), primary, pfact.get('system_identifier')))
            return plan
        if not hfact.get('in_recovery'):
            if int(hfact.get('timeline') or 0) >= int(pfact.get('timeline') or 0):
                errors.append('%s accepts writes on timeline %s, not older than the primary %s (timeline %s): '
                              'it may be the real primary. Refusing to rewind it; check which server the '
                              'applications write to' % (host, hfact.get('timeline'), primary,
                                                         pfact.get('timeline')))
                return plan
            plan['stale_primary'] = True
            plan['host_state'] = 'stale primary (timeline %s < %s)' % (hfact.get('timeline'), pfact.get('timeline'))
            plan['warnings'].append('%s accepts writes on the old timeline %s: it is stopped and rewound; '
                                    'writes it took after the failover are discarded' % (host, hfact.get('timeline')))
        else:
            receiver = hfact.get('wal_receiver') or {}
            if (hfact.get('upstream_host') == primary and receiver.get('status') == 'streaming'
                    and int(hfact.get('timeline') or 0) == int(pfact.get('timeline') or 0)):
                plan['action'] = 'none'
                plan['host_state'] = 'standby streaming from %s' % primary
                return plan
            plan['host_state'] = 'standby of %s (%s)' % (
                hfact.get('upstream_host'), receiver.get('status') or 'not streaming')
    else:
        plan['host_state'] = 'postgres down'
    plan['action'] = 'rejoin'
    return plan


def rejoin_host_list(hosts):
    """The hosts of ``rejoin_host``: a name, a comma-separated string or a list; order kept, duplicates dropped."""
    if hosts is None:
        return []
    items = hosts.split(',') if isinstance(hosts, str) else list(hosts)
    out = []
    for item in items:
        name = str(item if item is not None else '').strip()
        if name and name not in out:
            out.append(name)
    return out


def plan_rejoin_list(layout, facts, hosts, hosts_unreachable=()):
    """The plans of rejoin.yml for one or more hosts, rebuilt one after the other from one primary.

    ``hosts``: see :func:`rejoin_host_list`. Each host gets the plan of :func:`plan_rejoin` (the
    other listed hosts are never taken for the primary). The run is refused (``action``
    ``refuse``, ``errors`` name the host) as soon as one host is refused or the hosts would follow
    different primaries: nothing is changed then. ``todo`` lists the hosts to rebuild, in the
    given order; ``none`` lists those that already stream from the primary; ``action`` is
    ``none`` when ``todo`` is empty.
    """
    names = rejoin_host_list(hosts)
    hosts_unreachable = set(hosts_unreachable or ())
    facts = dict((h, facts.get(h) or {'reachable': False}) for h in layout)
    result = {'action': 'refuse', 'hosts': names, 'primary': None, 'todo': [], 'none': [], 'plans': [],
              'errors': [], 'warnings': [], 'nodes': _node_table(layout, facts, hosts_unreachable)}
    if not names:
        result['errors'].append('rejoin_host is not set: name the host(s) to bring back, e.g. '
                                '-e rejoin_host=db-east-1 or -e rejoin_host=db-east-1,db-east-2')
        return result
    for name in names:
        plan = plan_rejoin(layout, facts, name, hosts_unreachable, also_rejoining=names)
        plan.pop('nodes', None)
        result['plans'].append(plan)
        result['errors'].extend(plan['errors'])
        result['warnings'].extend(plan['warnings'])
    primaries = sorted(set(p['primary'] for p in result['plans'] if p['primary']))
    if len(primaries) > 1:
        result['errors'].append('the hosts would follow different primaries (%s): resolve that first'
                                % ', '.join(primaries))
    if result['errors']:
        return result
    result['primary'] = primaries[0] if primaries else None
    result['todo'] = [p['host'] for p in result['plans'] if p['action'] == 'rejoin']
    result['none'] = [p['host'] for p in result['plans'] if p['action'] == 'none']
    result['action'] = 'rejoin' if result['todo'] else 'none'
    return result


# --------------------------------------------------------------------------
# Region failover
# --------------------------------------------------------------------------


def _time(value):
    """An aware datetime (naive: UTC; the given offset kept) from a fact; None when empty or not a time."""
    try:
        return parse_time(value, keep_offset=True)
    except ValueError:
        return None


def plan_region(layout, facts, target_region, archive=None, now=None):
    """What a region failover to ``target_region`` would promote and lose.

    ``facts`` as for :func:`plan_failover`; ``archive`` is ``rtx.dr.wal_archive_status``'s
    ``recoverable_window`` (``latest_lsn``/``latest_time``/``timeline``) read from S3 alone.

    Returns ``{'target_region', 'target_hosts', 'source_hosts', 'candidate', 'candidate_lsn', 'candidate_replay_lsn',
    'candidate_replay_time', 'source_primary', 'source_primary_lsn', 'source_reachable', 'archive_lsn',
    'archive_time', 'best_known_lsn', 'best_known_from', 'loss_bytes', 'loss_seconds', 'catch_up_from_archive',
    'errors', 'warnings'}``. Data loss is counted from the best position the target standby holds to the most
    advanced position known anywhere else (the source primary if it answers, else the archive); it is a lower bound
    when the source primary cannot be asked (WAL it wrote that reached neither the archive nor a standby is unknown).
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    archive = archive or {}
    errors, warnings = [], []
    target_hosts = sorted(h for h, spec in layout.items() if spec.get('region') == target_region)
    source_hosts = sorted(h for h in layout if h not in target_hosts)
    if not target_hosts:
        regions = sorted({spec.get('region') for spec in layout.values() if spec.get('region')})
        errors.append('no database host in region %r (regions of the inventory: %s)'
                      % (target_region, ', '.join(regions) or 'none: set rtx_dr_region on the hosts'))
    reachable = [h for h in target_hosts if (facts.get(h) or {}).get('reachable')]
    primaries_in_target = [h for h in reachable if not (facts.get(h) or {}).get('in_recovery')]
    standbys = [h for h in reachable if (facts.get(h) or {}).get('in_recovery')]
    candidate = None
    if primaries_in_target:
        warnings.append('%s in region %s already accepts writes: the database is already there'
                        % (', '.join(primaries_in_target), target_region))
        candidate = primaries_in_target[0]
    elif standbys:
        candidate = sorted(standbys, key=lambda h: (-standby_position(facts[h])[0], -standby_position(facts[h])[1],
                                                    h))[0]
    elif target_hosts:
        errors.append('no database host of region %s answers (%s): nothing can be promoted there'
                      % (target_region, ', '.join(target_hosts)))
    source_primary = None
    source_lsn = None
    for host in source_hosts:
        fact = facts.get(host) or {}
        if fact.get('reachable') and not fact.get('in_recovery'):
            source_primary = host
            source_lsn = _lsn(fact.get('current_lsn'))
    cand_fact = facts.get(candidate) or {}
    cand_lsn = standby_position(cand_fact)[1] if candidate and candidate not in primaries_in_target else _lsn(
        cand_fact.get('current_lsn'))
    replay_lsn = _lsn(cand_fact.get('replay_lsn'))
    archive_lsn = _lsn(archive.get('latest_lsn'))
    archive_time = archive.get('latest_time')
    if archive_lsn is None and archive.get('newest_segment'):
        # No backup to anchor a recoverable window: the end of the newest archived segment.
        try:
            archive_lsn = parse_wal_segment_name(str(archive['newest_segment'])[:24]).end_lsn
            archive_time = archive.get('newest_segment_time')
        except InvalidValueError:
            archive_lsn = None
    known = [(source_lsn, 'source primary %s' % source_primary), (archive_lsn, 'WAL archive')]
    known = [k for k in known if k[0] is not None]
    best_lsn, best_from = max(known, key=lambda k: k[0]) if known else (None, None)
    loss = None
    if best_lsn is not None and cand_lsn is not None:
        loss = max(0, best_lsn - cand_lsn)
    replay_time = _time(cand_fact.get('last_replay_time'))
    best_time = now if source_primary else _time(archive_time)
    loss_seconds = None
    if loss is not None and loss > 0 and replay_time and best_time:
        loss_seconds = round(max(0.0, (best_time - replay_time).total_seconds()), 3)
    elif loss == 0:
        loss_seconds = 0.0
    catch_up = bool(candidate and candidate not in primaries_in_target and archive_lsn is not None
                    and cand_lsn is not None and archive_lsn > cand_lsn)
    if not source_primary:
        warnings.append('no primary answers in the source region: the loss estimate is a lower bound (WAL the old '
                        'primary wrote that reached neither the archive nor %s is unknown)' % (candidate or 'a standby'))
    return {
        'target_region': target_region, 'target_hosts': target_hosts, 'source_hosts': source_hosts,
        'candidate': candidate, 'candidate_lsn': _fmt(cand_lsn), 'candidate_replay_lsn': _fmt(replay_lsn),
        'candidate_replay_time': replay_time.isoformat() if replay_time else None,
        'source_primary': source_primary, 'source_primary_lsn': _fmt(source_lsn),
        'source_reachable': [h for h in source_hosts if (facts.get(h) or {}).get('reachable')],
        'archive_lsn': _fmt(archive_lsn), 'archive_time': archive_time,
        'best_known_lsn': _fmt(best_lsn), 'best_known_from': best_from, 'loss_bytes': loss,
        'loss_seconds': loss_seconds, 'loss_is_lower_bound': not source_primary,
        'catch_up_from_archive': catch_up, 'already_there': bool(primaries_in_target),
        'errors': errors, 'warnings': warnings,
    }

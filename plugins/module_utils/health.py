# -*- coding: utf-8 -*-
# Copyright: rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks of the seed's 8 systems, in plain Python.

One implementation for the ``rtx.dr.health_check`` module and the host agent:
PostgreSQL, API endpoint, WebSocket server, Redis, disk space, replication
lag, CPU load and memory. Every check returns the same shape::

    {'check', 'target', 'status': ok|warn|critical, 'value', 'unit',
     'threshold': {'warn', 'critical'}, 'message', 'seconds', 'details'}

:func:`run_checks` runs them in threads: one check failing or hanging never
stops the others, and the whole run is bounded by ``total_timeout``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from urllib import error as urlerror
from urllib import parse as urlparse

from ansible.module_utils.urls import open_url

from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError

CHECKS = ('postgresql', 'api', 'websocket', 'redis', 'disk', 'replication_lag', 'cpu_load', 'memory')
STATUSES = ('ok', 'warn', 'critical')
# libpq target_session_attrs (PostgreSQL 14+ client library): with a list of hosts in
# login_host, ``read-write`` checks whichever server is the primary now.
TARGET_SESSION_ATTRS = ('any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby')
_RANK = {'ok': 0, 'warn': 1, 'critical': 2}

# Thresholds: a value at or above ``warn`` is warn, at or above ``critical`` is critical.
DEFAULT_THRESHOLDS = {
    'postgresql': {'warn': 0.5, 'critical': 2.0},        # seconds: connect + SELECT
    'api': {'warn': 0.5, 'critical': 2.0},               # seconds: HTTP request
    'websocket': {'warn': 0.5, 'critical': 2.0},         # seconds: upgrade handshake
    'redis': {'warn': 0.2, 'critical': 1.0},             # seconds: AUTH + PING + INFO
    'disk': {'warn': 80.0, 'critical': 90.0},            # percent used
    'replication_lag': {'warn': 16 * 1024 * 1024, 'critical': 128 * 1024 * 1024,   # bytes behind
                        'warn_seconds': 10.0, 'critical_seconds': 60.0},          # replay lag
    'cpu_load': {'warn': 0.8, 'critical': 1.5},          # 1-minute load per core
    'memory': {'warn': 85.0, 'critical': 95.0},          # percent used (MemAvailable)
}
UNITS = {'postgresql': 's', 'api': 's', 'websocket': 's', 'redis': 's', 'disk': '%',
         'replication_lag': 'bytes', 'cpu_load': 'load/core', 'memory': '%'}
_PAIRS = {'replication_lag': (('warn', 'critical'), ('warn_seconds', 'critical_seconds'))}


def validate_thresholds(overrides=None):
    """Merge ``overrides`` ({check: {key: number}}) into the defaults and check them.

    :raises InvalidValueError: an unknown check or key, a value that is not a
        non-negative number, or warn above critical; the message names them.
    """
    merged = dict((name, dict(values)) for name, values in DEFAULT_THRESHOLDS.items())
    for name, values in (overrides or {}).items():
        if name not in DEFAULT_THRESHOLDS:
            raise InvalidValueError(
                'health_thresholds: unknown check %r' % name,
                hint='Use one of: %s.' % ', '.join(CHECKS))
        if not isinstance(values, dict):
            raise InvalidValueError('health_thresholds.%s must be a mapping like {warn: N, critical: N}' % name)
        for key, value in values.items():
            if key not in DEFAULT_THRESHOLDS[name]:
                raise InvalidValueError(
                    'health_thresholds.%s: unknown key %r' % (name, key),
                    hint='Keys of %s: %s.' % (name, ', '.join(sorted(DEFAULT_THRESHOLDS[name]))))
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = -1.0
            if isinstance(value, bool) or number < 0:
                raise InvalidValueError('health_thresholds.%s.%s is %r: give a number >= 0' % (name, key, value))
            merged[name][key] = number
    for name, values in merged.items():
        for warn_key, crit_key in _PAIRS.get(name, (('warn', 'critical'),)):
            if values[warn_key] > values[crit_key]:
                raise InvalidValueError(
                    'health_thresholds.%s: %s (%s) is above %s (%s)'
                    % (name, warn_key, values[warn_key], crit_key, values[crit_key]),
                    hint='The warn threshold must not exceed the critical one.')
    return merged


def classify(value, warn, critical):
    """ok / warn / critical for a value where higher is worse."""
    if value is None:
        return 'critical'
    if value >= critical:
        return 'critical'
    if value >= warn:
        return 'warn'
    return 'ok'


def worst(statuses):
    """The worst of several statuses ('ok' for none)."""
    return max(statuses or ['ok'], key=lambda s: _RANK[s])


def _result(check, target, status, value, threshold, message, details=None):
    return {'check': check, 'target': target, 'status': status, 'value': value, 'unit': UNITS[check],
            'threshold': dict(threshold), 'message': message, 'seconds': None, 'details': details or {}}


def _latency_result(check, target, seconds, threshold, what):
    status = classify(seconds, threshold['warn'], threshold['critical'])
    return _result(check, target, status, round(seconds, 4), threshold,
                   '%s in %.3f s%s' % (what, seconds, '' if status == 'ok' else
                                       ' (%s threshold %s s)' % (status, threshold[status])))


# -- the 8 checks -------------------------------------------------------------

def check_postgresql(threshold, connect, expected_role=None, target='postgresql'):
    """connect() returns an open connection; runs a trivial query and reads the role."""
    from ansible_collections.rtx.dr.plugins.module_utils.postgres import close_quietly, query_one
    start = time.monotonic()
    conn = connect()
    try:
        row = query_one(conn, 'SELECT pg_catalog.pg_is_in_recovery() AS r, pg_catalog.host(pg_catalog.inet_server_addr()) AS addr')
    finally:
        close_quietly(conn)
    seconds = time.monotonic() - start
    role = 'standby' if row['r'] else 'primary'
    result = _latency_result('postgresql', target, seconds, threshold, 'connected and queried, role %s,' % role)
    result['details'] = {'role': role, 'server_address': row['addr']}
    if expected_role and role != expected_role:
        result['status'] = 'critical'
        result['message'] = 'role is %s, expected %s' % (role, expected_role)
    return result


def check_api(threshold, url, expect_status=200, timeout=5.0):
    start = time.monotonic()
    try:
        response = open_url(url, timeout=timeout, follow_redirects='urllib2')
        try:
            code = response.getcode()
        finally:
            response.close()
    except urlerror.HTTPError as exc:
        code = exc.code
    seconds = time.monotonic() - start
    result = _latency_result('api', url, seconds, threshold, 'HTTP %s' % code)
    result['details'] = {'http_status': code}
    if code != expect_status:
        result['status'] = 'critical'
        result['message'] = 'HTTP %s, expected %s (%.3f s)' % (code, expect_status, seconds)
    return result


def websocket_accept(key):
    """The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1((key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode('ascii')).digest()
    return base64.b64encode(digest).decode('ascii')


def check_websocket(threshold, url, timeout=5.0):
    parts = urlparse.urlsplit(url)
    if parts.scheme != 'ws':
        raise InvalidValueError('websocket url %r: only ws:// is supported' % url)
    port = parts.port or 80
    key = base64.b64encode(os.urandom(16)).decode('ascii')
    start = time.monotonic()
    with socket.create_connection((parts.hostname, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(('GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                      'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n'
                      % (parts.path or '/', parts.hostname, port, key)).encode('ascii'))
        head = b''
        while b'\r\n\r\n' not in head and len(head) < 16384:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    seconds = time.monotonic() - start
    lines = head.split(b'\r\n\r\n')[0].decode('latin-1').split('\r\n')
    headers = dict((k.strip().lower(), v.strip()) for k, _sep, v in (line.partition(':') for line in lines[1:]))
    status_line = lines[0] if lines else ''
    result = _latency_result('websocket', url, seconds, threshold, 'handshake %s' % status_line)
    if ' 101 ' not in status_line + ' ' or headers.get('sec-websocket-accept') != websocket_accept(key):
        result['status'] = 'critical'
        result['message'] = 'no valid WebSocket upgrade: %r' % (status_line or 'no answer')
    return result


def _resp(sock_file, sock, *args):
    payload = b'*%d\r\n' % len(args) + b''.join(b'$%d\r\n%s\r\n' % (len(a), a) for a in args)
    sock.sendall(payload)
    line = sock_file.readline()
    if line.startswith(b'$'):
        length = int(line[1:])
        return sock_file.read(length + 2)[:-2] if length >= 0 else None
    if line.startswith(b'-'):
        raise RuntimeError(line[1:].strip().decode('utf-8', 'replace'))
    return line[1:].strip()


def check_redis(threshold, host='127.0.0.1', port=6379, password=None, expected_role=None, timeout=5.0):
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        reader = sock.makefile('rb')
        if password:
            _resp(reader, sock, b'AUTH', password.encode())
        pong = _resp(reader, sock, b'PING')
        info = _resp(reader, sock, b'INFO', b'replication') or b''
    seconds = time.monotonic() - start
    fields = dict(line.split(':', 1) for line in info.decode('utf-8', 'replace').splitlines() if ':' in line)
    role = fields.get('role', 'unknown')
    target = '%s:%s' % (host, port)
    result = _latency_result('redis', target, seconds, threshold, 'PING %s, role %s,' % (pong.decode(), role))
    result['details'] = {'role': role, 'connected_slaves': fields.get('connected_slaves'),
                         'master_link_status': fields.get('master_link_status')}
    if pong != b'PONG':
        result['status'] = 'critical'
        result['message'] = 'PING answered %r' % pong
    elif expected_role and role != expected_role:
        result['status'] = 'critical'
        result['message'] = 'role is %s, expected %s' % (role, expected_role)
    elif fields.get('master_link_status') == 'down':
        result['status'] = 'critical'
        result['message'] = 'replica whose link to the master is down'
    return result


def check_disk(threshold, path='/'):
    stat = os.statvfs(path)
    total = stat.f_blocks * stat.f_frsize
    available = stat.f_bavail * stat.f_frsize
    used_pct = 100.0 * (total - available) / total if total else 100.0
    status = classify(used_pct, threshold['warn'], threshold['critical'])
    return _result('disk', path, status, round(used_pct, 2), threshold,
                   '%s %.1f%% used, %.1f GiB free' % (path, used_pct, available / 1024.0 ** 3),
                   {'total_bytes': total, 'available_bytes': available})


def check_cpu_load(threshold, loadavg=None, cpus=None):
    load1 = (loadavg or os.getloadavg())[0]
    cpus = cpus or os.cpu_count() or 1
    per_core = load1 / cpus
    status = classify(per_core, threshold['warn'], threshold['critical'])
    return _result('cpu_load', 'host', status, round(per_core, 3), threshold,
                   'load %.2f on %d cores (%.2f per core)' % (load1, cpus, per_core),
                   {'load1': load1, 'cpus': cpus})


def read_meminfo(path='/proc/meminfo'):
    values = {}
    with open(path) as handle:
        for line in handle:
            key, _sep, rest = line.partition(':')
            parts = rest.split()
            if parts:
                values[key] = int(parts[0]) * 1024
    return values


def check_memory(threshold, meminfo=None):
    info = meminfo or read_meminfo()
    total = info['MemTotal']
    available = info.get('MemAvailable', info.get('MemFree', 0))
    used_pct = 100.0 * (total - available) / total
    status = classify(used_pct, threshold['warn'], threshold['critical'])
    return _result('memory', 'host', status, round(used_pct, 2), threshold,
                   '%.1f%% used, %.0f MiB available' % (used_pct, available / 1024.0 ** 2),
                   {'total_bytes': total, 'available_bytes': available})


def check_replication_lag(threshold, connect, target='postgresql'):
    """On a primary: the worst standby's replay lag in bytes and seconds; on a standby: its own."""
    from ansible_collections.rtx.dr.plugins.module_utils.postgres import close_quietly, query_all, query_one
    conn = connect()
    try:
        in_recovery = query_one(conn, 'SELECT pg_catalog.pg_is_in_recovery() AS r')['r']
        if in_recovery:
            rows = [query_one(conn, "SELECT 'self' AS application_name, 'standby' AS state, NULL AS sync_state,"
                                    " pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_receive_lsn(),"
                                    " pg_catalog.pg_last_wal_replay_lsn())::bigint AS lag_bytes,"
                                    " CASE WHEN pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn()"
                                    " THEN 0 ELSE extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp())"
                                    " END::float AS lag_seconds")]
        else:
            rows = query_all(conn, "SELECT application_name, state, sync_state,"
                                   " pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), replay_lsn)::bigint"
                                   " AS lag_bytes, coalesce(extract(epoch FROM replay_lag), 0)::float AS lag_seconds"
                                   " FROM pg_catalog.pg_stat_replication ORDER BY application_name")
    finally:
        close_quietly(conn)
    standbys = dict((r['application_name'], {'state': r['state'], 'sync_state': r['sync_state'],
                                             'lag_bytes': int(r['lag_bytes'] or 0),
                                             'lag_seconds': float(r['lag_seconds'] or 0.0)})
                    for r in rows if r['application_name'] not in NOT_STANDBYS)
    if not standbys:
        return _result('replication_lag', target, 'ok', 0, threshold, 'primary without standbys',
                       {'standbys': {}, 'in_recovery': False})
    statuses = []
    for item in standbys.values():
        item['status'] = worst([classify(item['lag_bytes'], threshold['warn'], threshold['critical']),
                                classify(item['lag_seconds'], threshold['warn_seconds'],
                                         threshold['critical_seconds'])])
        statuses.append(item['status'])
    name, top = max(standbys.items(), key=lambda kv: (_RANK[kv[1]['status']], kv[1]['lag_bytes']))
    return _result('replication_lag', target, worst(statuses), top['lag_bytes'], threshold,
                   '%s: %d bytes, %.1f s behind' % (name, top['lag_bytes'], top['lag_seconds']),
                   {'standbys': standbys, 'standby': name, 'in_recovery': bool(in_recovery)})


#: WAL receivers in pg_stat_replication that are not standbys and never replay (their replay_lag only grows):
#: the streaming mode's pg_receivewal (walstream.APPLICATION_NAME; a unit test keeps the two equal).
NOT_STANDBYS = ('rtx_dr_stream',)

CHECK_FUNCTIONS = {
    'postgresql': check_postgresql, 'api': check_api, 'websocket': check_websocket, 'redis': check_redis,
    'disk': check_disk, 'replication_lag': check_replication_lag, 'cpu_load': check_cpu_load,
    'memory': check_memory,
}


def spec_target(spec):
    """The ``target`` a check reports, also when it failed or timed out (so metric labels stay the same)."""
    if spec.get('check') == 'redis':
        return '%s:%s' % (spec.get('host') or '127.0.0.1', spec.get('port') or 6379)
    if spec.get('check') in ('cpu_load', 'memory'):
        return 'host'
    return str(spec.get('url') or spec.get('path') or spec.get('target') or spec.get('host') or spec.get('check'))


def run_checks(specs, thresholds=None, total_timeout=20.0):
    """Run ``specs`` ([{'check': name, ...kwargs}]) concurrently; return one result per spec, in order.

    A check that raises is critical with the error as message; one still
    running when ``total_timeout`` is up is critical ("timed out"); the others
    are unaffected.
    """
    merged = validate_thresholds(thresholds)
    for spec in specs:
        if spec.get('check') not in CHECK_FUNCTIONS:
            raise InvalidValueError('unknown health check %r' % spec.get('check'),
                                    hint='Use one of: %s.' % ', '.join(CHECKS))
    results = [None] * len(specs)
    threads = []

    def work(index, spec):
        name = spec['check']
        kwargs = dict((k, v) for k, v in spec.items() if k != 'check')
        started = time.monotonic()
        try:
            result = CHECK_FUNCTIONS[name](merged[name], **kwargs)
            if not isinstance(result, dict):
                raise RuntimeError('the check returned no result')
        # A check must never stop the others, whatever it raises.
        except Exception as exc:  # pylint: disable=broad-except
            result = _result(name, spec_target(spec), 'critical', None, merged[name],
                             '%s failed: %s' % (name, getattr(exc, 'msg', None) or exc or type(exc).__name__))
        result['seconds'] = round(time.monotonic() - started, 4)
        results[index] = result

    for index, spec in enumerate(specs):
        thread = threading.Thread(target=work, args=(index, spec), daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + total_timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for index, spec in enumerate(specs):
        if results[index] is None:
            name = spec['check']
            results[index] = _result(name, spec_target(spec), 'critical', None, merged[name],
                                     '%s timed out after %.1f s' % (name, total_timeout))
            results[index]['seconds'] = total_timeout
    return list(results)


def specs_from_params(params):
    """Check specs for :func:`run_checks` from module-style parameters (``checks``, ``api_url``, ``login_*`` ...).

    Shared by the module and the host agent so both run the same checks for
    the same settings.
    """
    from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect
    specs = []
    for name in params.get('checks') or []:
        if name in ('postgresql', 'replication_lag'):
            spec = {'check': name, 'connect': (lambda p=params: connect(p)),
                    'target': params.get('login_unix_socket') or params.get('login_host') or 'postgresql'}
            if name == 'postgresql' and params.get('expected_role'):
                spec['expected_role'] = params['expected_role']
            specs.append(spec)
        elif name == 'api':
            if not params.get('api_url'):
                raise InvalidValueError('check api needs api_url', hint='Set api_url, e.g. http://127.0.0.1:8080/health.')
            specs.append({'check': 'api', 'url': params['api_url'],
                          'expect_status': params.get('api_expect_status') or 200})
        elif name == 'websocket':
            if not params.get('websocket_url'):
                raise InvalidValueError('check websocket needs websocket_url',
                                        hint='Set websocket_url, e.g. ws://127.0.0.1:8080/ws.')
            specs.append({'check': 'websocket', 'url': params['websocket_url']})
        elif name == 'redis':
            specs.append({'check': 'redis', 'host': params.get('redis_host') or '127.0.0.1',
                          'port': int(params.get('redis_port') or 6379),
                          'password': params.get('redis_password') or None,
                          'expected_role': params.get('redis_expected_role')})
        elif name == 'disk':
            for path in params.get('disk_paths') or ['/']:
                specs.append({'check': 'disk', 'path': path})
        elif name in ('cpu_load', 'memory'):
            specs.append({'check': name})
        else:
            raise InvalidValueError('unknown health check %r' % name, hint='Use one of: %s.' % ', '.join(CHECKS))
    return specs


def health_argument_spec():
    """The options of ``rtx.dr.health_check`` (also the keys of the host agent's configuration)."""
    from ansible_collections.rtx.dr.plugins.module_utils.postgres import postgres_common_argument_spec
    spec = postgres_common_argument_spec()
    spec.update(
        checks=dict(type='list', elements='str', choices=list(CHECKS), default=['disk', 'cpu_load', 'memory']),
        thresholds=dict(type='dict', default={}),
        expected_role=dict(type='str', choices=['primary', 'standby']),
        target_session_attrs=dict(type='str', choices=list(TARGET_SESSION_ATTRS)),
        api_url=dict(type='str'),
        api_expect_status=dict(type='int', default=200),
        websocket_url=dict(type='str'),
        redis_host=dict(type='str', default='127.0.0.1'),
        redis_port=dict(type='int', default=6379),
        redis_password=dict(type='str', default='', no_log=True),
        redis_expected_role=dict(type='str', choices=['master', 'slave']),
        disk_paths=dict(type='list', elements='path', default=['/']),
        total_timeout=dict(type='float', default=20.0),
    )
    return spec


def summarize(results):
    """``(worst status, {status: count})`` of a list of check results."""
    counts = dict((status, sum(1 for r in results if r['status'] == status)) for status in STATUSES)
    return worst([r['status'] for r in results]), counts

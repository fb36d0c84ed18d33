# -*- coding: utf-8 -*-
# Copyright: (c) 2025, rtx.dr contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks against real local servers: PostgreSQL (pg_cluster), HTTP, WebSocket, Redis."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.rtx.dr.plugins.module_utils import health
from ansible_collections.rtx.dr.plugins.module_utils.errors import InvalidValueError
from ansible_collections.rtx.dr.plugins.module_utils.postgres import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fake_redis import FakeRedis  # noqa: E402 pylint: disable=wrong-import-position

RESULT_KEYS = {'check', 'target', 'status', 'value', 'unit', 'threshold', 'message', 'seconds', 'details'}


# -- thresholds ---------------------------------------------------------------

def test_defaults_cover_every_check():
    assert set(health.validate_thresholds()) == set(health.CHECKS)
    assert len(health.CHECKS) == 8


def test_overrides_are_merged_and_converted():
    merged = health.validate_thresholds({'disk': {'warn': 70, 'critical': '85'}})
    assert merged['disk'] == {'warn': 70.0, 'critical': 85.0}
    assert merged['memory'] == health.DEFAULT_THRESHOLDS['memory']


@pytest.mark.parametrize('overrides, words', [
    ({'disks': {'warn': 1}}, ["unknown check 'disks'"]),
    ({'disk': {'warning': 1}}, ["health_thresholds.disk: unknown key 'warning'"]),
    ({'disk': {'warn': 95, 'critical': 90}}, ['health_thresholds.disk: warn (95.0) is above critical (90.0)']),
    ({'replication_lag': {'warn_seconds': 100}}, ['warn_seconds (100.0) is above critical_seconds (60.0)']),
    ({'cpu_load': {'warn': 'high'}}, ["health_thresholds.cpu_load.warn is 'high'"]),
    ({'memory': {'warn': -1}}, ['health_thresholds.memory.warn is -1']),
    ({'memory': {'warn': True}}, ['health_thresholds.memory.warn is True']),
    ({'memory': 90}, ['health_thresholds.memory must be a mapping']),
])
def test_bad_thresholds_are_rejected_with_the_name(overrides, words):
    with pytest.raises(InvalidValueError) as info:
        health.validate_thresholds(overrides)
    for word in words:
        assert word in info.value.msg


@pytest.mark.parametrize('value, status', [(0, 'ok'), (79.9, 'ok'), (80, 'warn'), (89.9, 'warn'),
                                           (90, 'critical'), (None, 'critical')])
def test_classify(value, status):
    assert health.classify(value, 80, 90) == status


def test_worst():
    assert health.worst(['ok', 'critical', 'warn']) == 'critical'
    assert health.worst([]) == 'ok'


# -- host checks --------------------------------------------------------------

def test_disk_of_a_real_mount():
    result = health.run_checks([{'check': 'disk', 'path': '/'}])[0]
    assert set(result) == RESULT_KEYS
    stat = os.statvfs('/')
    expected = 100.0 * (stat.f_blocks - stat.f_bavail) / stat.f_blocks
    assert abs(result['value'] - expected) < 1.0
    assert result['unit'] == '%' and result['target'] == '/'


def test_disk_thresholds_turn_it_critical():
    result = health.run_checks([{'check': 'disk', 'path': '/'}], {'disk': {'warn': 0, 'critical': 0}})[0]
    assert result['status'] == 'critical'


def test_missing_mount_is_critical_not_an_exception():
    result = health.run_checks([{'check': 'disk', 'path': '/no/such/mount'}])[0]
    assert result['status'] == 'critical' and 'No such file' in result['message']


def test_cpu_load_per_core():
    threshold = health.DEFAULT_THRESHOLDS['cpu_load']
    assert health.check_cpu_load(threshold, loadavg=(1.0, 0, 0), cpus=4)['status'] == 'ok'
    assert health.check_cpu_load(threshold, loadavg=(3.6, 0, 0), cpus=4)['status'] == 'warn'
    result = health.check_cpu_load(threshold, loadavg=(8.0, 0, 0), cpus=4)
    assert result['status'] == 'critical' and result['value'] == 2.0


def test_memory_from_meminfo():
    threshold = health.DEFAULT_THRESHOLDS['memory']
    gib = 1024 ** 3
    assert health.check_memory(threshold, {'MemTotal': 10 * gib, 'MemAvailable': 5 * gib})['value'] == 50.0
    assert health.check_memory(threshold, {'MemTotal': 10 * gib, 'MemAvailable': gib})['status'] == 'warn'
    real = health.run_checks([{'check': 'memory'}])[0]
    assert 0 < real['value'] < 100 and real['details']['total_bytes'] > 0


# -- network checks -----------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == '/health':
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')
        elif self.path == '/slow':
            time.sleep(0.3)
            self.send_response(200)
            self.end_headers()
        elif self.path == '/ws' and self.headers.get('Upgrade', '').lower() == 'websocket':
            digest = hashlib.sha1((self.headers['Sec-WebSocket-Key'] +
                                   '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest()
            self.send_response(101)
            self.send_header('Upgrade', 'websocket')
            self.send_header('Connection', 'Upgrade')
            self.send_header('Sec-WebSocket-Accept', base64.b64encode(digest).decode())
            self.end_headers()
        else:
            self.send_response(503)
            self.end_headers()

    def log_message(self, *args):  # quiet
        return


@pytest.fixture(scope='module')
def http_server():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield 'http://127.0.0.1:%d' % server.server_address[1]
    server.shutdown()


def test_api_ok_and_latency(http_server):
    result = health.run_checks([{'check': 'api', 'url': http_server + '/health'}])[0]
    assert result['status'] == 'ok' and result['details']['http_status'] == 200
    slow = health.run_checks([{'check': 'api', 'url': http_server + '/slow'}], {'api': {'warn': 0.2}})[0]
    assert slow['status'] == 'warn' and slow['value'] >= 0.3


def test_api_wrong_status_is_critical(http_server):
    result = health.run_checks([{'check': 'api', 'url': http_server + '/nope'}])[0]
    assert result['status'] == 'critical' and 'HTTP 503, expected 200' in result['message']


def test_api_refused_connection_is_critical(unused_port):
    result = health.run_checks([{'check': 'api', 'url': 'http://127.0.0.1:%d/' % unused_port}])[0]
    assert result['status'] == 'critical' and 'refused' in result['message'].lower()


def test_websocket_handshake(http_server):
    url = http_server.replace('http://', 'ws://')
    assert health.run_checks([{'check': 'websocket', 'url': url + '/ws'}])[0]['status'] == 'ok'
    bad = health.run_checks([{'check': 'websocket', 'url': url + '/plain'}])[0]
    assert bad['status'] == 'critical' and 'no valid WebSocket upgrade' in bad['message']


def test_websocket_accept_rfc6455_example():
    assert health.websocket_accept('dGhlIHNhbXBsZSBub25jZQ==') == 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='


def test_redis_ping_role_and_outage():
    redis = FakeRedis('pw')
    try:
        result = health.run_checks([{'check': 'redis', 'port': redis.port, 'password': 'pw'}])[0]
        assert result['status'] == 'ok' and result['details']['role'] == 'master' and redis.pings == 1
        wrong = health.run_checks([{'check': 'redis', 'port': redis.port, 'password': 'pw',
                                    'expected_role': 'slave'}])[0]
        assert wrong['status'] == 'critical' and 'role is master, expected slave' in wrong['message']
        denied = health.run_checks([{'check': 'redis', 'port': redis.port, 'password': 'bad'}])[0]
        assert denied['status'] == 'critical' and 'WRONGPASS' in denied['message']
    finally:
        redis.close()
    down = health.run_checks([{'check': 'redis', 'port': redis.port, 'password': 'pw'}])[0]
    assert down['status'] == 'critical'


# -- PostgreSQL -----------------------------------------------------------------

def test_postgresql_primary_and_standby(pg_cluster):
    primary = health.run_checks([{'check': 'postgresql', 'connect': lambda: connect(pg_cluster.module_args(login_user='postgres')),
                                  'expected_role': 'primary'}])[0]
    assert primary['status'] == 'ok' and primary['details']['role'] == 'primary'
    standby = health.run_checks([{'check': 'postgresql', 'expected_role': 'primary',
                                  'connect': lambda: connect(pg_cluster.module_args(port=pg_cluster.standby_port, login_user='postgres'))}])[0]
    assert standby['status'] == 'critical' and standby['message'] == 'role is standby, expected primary'


def test_postgresql_down_is_critical(unused_port, pg_cluster):
    args = pg_cluster.module_args(port=unused_port, connect_timeout=2, login_user='postgres')
    result = health.run_checks([{'check': 'postgresql', 'connect': lambda: connect(args)}])[0]
    assert result['status'] == 'critical' and result['value'] is None


def test_replication_lag_on_primary_and_standby(pg_cluster):
    on_primary = health.run_checks([{'check': 'replication_lag',
                                     'connect': lambda: connect(pg_cluster.module_args(login_user='postgres'))}])[0]
    assert on_primary['status'] == 'ok'
    assert 'rtxtest_standby' in on_primary['details']['standbys']
    tight = health.run_checks([{'check': 'replication_lag', 'connect': lambda: connect(pg_cluster.module_args(login_user='postgres'))}],
                              {'replication_lag': {'warn': 0, 'critical': 0}})[0]
    assert tight['status'] == 'critical' and tight['details']['standby'] == 'rtxtest_standby'
    on_standby = health.run_checks([{'check': 'replication_lag', 'connect': lambda: connect(
        pg_cluster.module_args(port=pg_cluster.standby_port, login_user='postgres'))}])[0]
    assert on_standby['status'] == 'ok' and 'self' in on_standby['details']['standbys']


def test_replication_lag_ignores_the_streaming_receiver(monkeypatch):
    # pg_receivewal of the streaming mode is a walsender client that never replays: its replay_lag only grows
    # (found on the lab: 1126 s, the check and the chaos verification were critical forever).
    from ansible_collections.rtx.dr.plugins.module_utils import postgres  # pylint: disable=import-outside-toplevel
    from ansible_collections.rtx.dr.plugins.module_utils import walstream  # pylint: disable=import-outside-toplevel

    rows = [{'application_name': 'db-east-2', 'state': 'streaming', 'sync_state': 'sync', 'lag_bytes': 0, 'lag_seconds': 0.0},
            {'application_name': walstream.APPLICATION_NAME, 'state': 'streaming', 'sync_state': 'async',
             'lag_bytes': None, 'lag_seconds': 1126.0}]
    monkeypatch.setattr(postgres, 'query_one', lambda conn, sql: {'r': False})
    monkeypatch.setattr(postgres, 'query_all', lambda conn, sql: rows)
    monkeypatch.setattr(postgres, 'close_quietly', lambda conn: None)
    result = health.run_checks([{'check': 'replication_lag', 'connect': object}])[0]
    assert result['status'] == 'ok' and set(result['details']['standbys']) == {'db-east-2'}, result
    assert health.NOT_STANDBYS == (walstream.APPLICATION_NAME,)


# -- the runner -----------------------------------------------------------------

def test_a_hanging_check_times_out_and_the_others_still_report(monkeypatch):
    def hang(threshold, **_kwargs):
        time.sleep(30)
    monkeypatch.setitem(health.CHECK_FUNCTIONS, 'websocket', hang)
    started = time.monotonic()
    results = health.run_checks([{'check': 'websocket', 'url': 'ws://example.invalid/'},
                                 {'check': 'disk', 'path': '/'}, {'check': 'memory'}], total_timeout=1.0)
    assert time.monotonic() - started < 3
    assert results[0]['status'] == 'critical' and 'timed out after 1.0 s' in results[0]['message']
    assert results[0]['target'] == 'ws://example.invalid/'
    assert results[1]['status'] in health.STATUSES and results[1]['value'] is not None
    assert results[2]['value'] is not None


def test_unknown_check_name_is_rejected():
    with pytest.raises(InvalidValueError) as info:
        health.run_checks([{'check': 'kafka'}])
    assert "unknown health check 'kafka'" in info.value.msg


def test_a_failed_check_keeps_the_target_of_a_successful_one(unused_port):
    redis = FakeRedis('pw')
    try:
        ok = health.run_checks([{'check': 'redis', 'host': '127.0.0.1', 'port': redis.port, 'password': 'pw'}])[0]
    finally:
        redis.close()
    down = health.run_checks([{'check': 'redis', 'host': '127.0.0.1', 'port': unused_port, 'timeout': 1}])[0]
    assert ok['status'] == 'ok' and down['status'] == 'critical'
    assert ok['target'] == '127.0.0.1:%d' % redis.port and down['target'] == '127.0.0.1:%d' % unused_port


def test_a_check_that_returns_nothing_is_critical(monkeypatch):
    monkeypatch.setitem(health.CHECK_FUNCTIONS, 'memory', lambda threshold, **_kwargs: None)
    result = health.run_checks([{'check': 'memory'}])[0]
    assert result['status'] == 'critical' and 'returned no result' in result['message']

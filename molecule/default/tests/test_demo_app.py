"""The demo application writes to the current primary; the second region's copy waits stopped."""

import json

from conftest import PRIMARY, get_host, psql, wait_for

APP_EAST = "mol-app-east-1"
APP_WEST = "mol-app-west-1"


def health(host):
    cmd = host.run("curl -s -o /dev/stdout -w '\\n%{http_code}' http://127.0.0.1:8080/health")
    body, code = (["", ""] + cmd.stdout.rsplit("\n", 1))[-2:]
    return int(code or 0), (json.loads(body) if body.strip().startswith("{") else {})


def healthy(host):
    result = health(host)
    return result if result[0] == 200 else None


def test_demo_service_is_healthy_and_writes_to_the_primary(primary):
    app = get_host(APP_EAST)
    assert app.service("rtx-demo-app").is_running
    assert app.service("redis-server").is_running
    code, body = wait_for(lambda: healthy(app), timeout=30) or (0, {})
    assert code == 200, body
    assert body["db"]["host"] == PRIMARY and body["db"]["in_recovery"] is False and body["db"]["ssl"] is True
    assert body["redis"]["ok"] is True and body["region"] == "east"
    acked = body["db"]["last_acked_seq"]
    assert psql(primary, "SELECT count(*) FROM demo.orders WHERE seq = %d" % acked, db="rtx") == "1"


def test_websocket_handshake(primary):
    app = get_host(APP_EAST)
    cmd = app.run("curl -s -D - -o /dev/null -N --max-time 2 -H 'Connection: Upgrade' -H 'Upgrade: websocket' "
                  "-H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "
                  "http://127.0.0.1:8080/ws")
    assert "101 Switching Protocols" in cmd.stdout
    # RFC 6455 section 1.3 example key and accept value.
    assert "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in cmd.stdout


def test_second_region_app_is_installed_but_stopped():
    app = get_host(APP_WEST)
    service = app.service("rtx-demo-app")
    assert not service.is_running
    assert not service.is_enabled
    assert app.file("/opt/rtx/demo/rtx_demo_app.py").exists

"""failover.yml, rejoin.yml and switchover.yml on the real lab, under write load.

The tests run in file order and hand the cluster on from one to the next:

    east-1 primary --kill--> failover: east-2 (sync) promoted --> rejoin east-1 (pg_rewind of a stale primary)
    --> east-1 stops receiving, east-2 killed --> failover: east-3 (most WAL) promoted --> rejoin east-2
    --> switchover to the sync standby and back, writer running.
"""

import glob
import json
import os
import re

import boto3
from conftest import (AWS, HAPROXY_DSN, IPS, PGBOUNCER_DSN, Writer, docker, get_host, psql, role, route53_value, rows_on,
                      server_behind, start_container, streaming_from, timeline, wait_for)
from labtest import playbook

REPORTS = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"), "reports")


def out(result):
    return result.stdout[-6000:] + result.stderr[-2000:]


def said(result):
    """The playbook's output with every run of whitespace made one space (the callback wraps long lines)."""
    return " ".join(result.stdout.split())


def recap_changed(result):
    """host -> changed count from the PLAY RECAP."""
    return dict((h, int(c)) for h, c in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", result.stdout, re.M))


def test_failover_refuses_while_the_primary_accepts_writes(probe_table):
    result = playbook("failover.yml")
    assert result.returncode != 0
    assert "mol-db-east-1 is up and accepts writes" in said(result)
    assert "switchover.yml" in said(result)
    assert role("mol-db-east-1") == "primary"
    assert [role(h) for h in ("mol-db-east-2", "mol-db-east-3", "mol-db-west-1")] == ["standby"] * 3


def test_failover_under_write_load_loses_no_acknowledged_commit(probe_table, sns_queue):
    sns_queue()  # drain what site.yml may have published
    writer = Writer()
    # The same load through the endpoint proxies (HAProxy, PgBouncer) that failover.yml repoints.
    proxied = {"haproxy": Writer(HAPROXY_DSN), "pgbouncer": Writer(PGBOUNCER_DSN)}
    writer.start()
    for client in proxied.values():
        client.start()
    try:
        assert writer.wait_acked(100), "the writer could not commit on the initial primary"
        for name, client in proxied.items():
            assert client.wait_acked(20), "no commit through %s on the initial primary" % name
        assert docker("kill", "mol-db-east-1").returncode == 0

        # --check shows the plan (candidate and why) and changes nothing.
        check = playbook("failover.yml", "--check")
        assert check.returncode == 0, out(check)
        assert "promote: mol-db-east-2 because it has received the most WAL" in said(check)
        assert role("mol-db-east-2") == "standby"

        # Bad candidates are refused before anything changes.
        bad = playbook("failover.yml", "-e", "candidate=db-nowhere")
        assert bad.returncode != 0 and "candidate=db-nowhere is not a host" in said(bad)
        dead = playbook("failover.yml", "-e", "candidate=mol-db-east-1")
        assert dead.returncode != 0 and "candidate=mol-db-east-1 is not reachable" in said(dead)
        assert role("mol-db-east-2") == "standby"

        result = playbook("failover.yml", "-e", "failover_reason=molecule: primary container killed")
        assert result.returncode == 0, out(result)
        assert writer.wait_acked(100, timeout=60), "the writer did not reach the new primary"
        for name, client in proxied.items():
            assert client.wait_acked(20, timeout=60), "no commit through %s after the failover" % name
    finally:
        writer.stop()
        for client in proxied.values():
            client.stop()

    assert "FAILOVER COMPLETE: mol-db-east-2 is the primary" in said(result)
    assert role("mol-db-east-2") == "primary" and timeline("mol-db-east-2") == 2
    missing = set(writer.acked) - rows_on("mol-db-east-2")
    assert not missing, "%d acknowledged commits are missing on the new primary" % len(missing)
    assert IPS["mol-db-east-2"] in writer.hosts

    # The other standbys follow the new primary, east-3 synchronously; the west one too.
    senders = wait_for(lambda: streaming_from("mol-db-east-2"), timeout=30)
    assert senders.get("mol-db-east-3") == "sync" and "mol-db-west-1" in senders
    assert role("mol-db-east-3") == "standby"
    assert wait_for(lambda: timeline("mol-db-east-3") == 2, timeout=30)

    # The client endpoints, the audit row, the report and the notification.
    assert route53_value() == IPS["mol-db-east-2"]
    # WAL archiving follows the primary: the new timeline's history file reaches the archive.
    archive = boto3.client("s3", **AWS)
    assert wait_for(lambda: archive.list_objects_v2(Bucket="rtx-dr-backups-rtx-molecule",
                                                    Prefix="pgbackup/rtx-molecule/wal/00000002.history").get("Contents"),
                    timeout=90), "00000002.history was not archived by the new primary"
    for name, client in proxied.items():
        missing = set(client.acked) - rows_on("mol-db-east-2")
        assert not missing, "%d commits acknowledged through %s are missing" % (len(missing), name)
        assert server_behind(client.dsn) == (IPS["mol-db-east-2"], False), name
    row = psql(get_host("mol-db-east-2"), "SELECT kind, old_primary, new_primary, status, new_timeline "
                                          "FROM dr.failover_history WHERE kind = 'failover'", db="rtx")
    assert row == "failover|mol-db-east-1|mol-db-east-2|complete|2"
    reports = sorted(glob.glob(os.path.join(REPORTS, "failover-*.json")))
    assert reports, "no JSON report in %s" % REPORTS
    report = json.load(open(reports[-1]))
    assert report["new_primary"] == "mol-db-east-2" and report["stonith"] == ["mol-db-east-1"]
    assert report["estimated_loss_bytes"] == 0 and report["seconds_to_writable"] > 0
    assert any("mol-db-east-2 is the primary" in m for m in sns_queue())

    # The demo service kept writing through its multi-host connection string.
    app = get_host("mol-app-east-1")

    def demo_on_new_primary():
        body = app.run("curl -s http://127.0.0.1:8080/health").stdout
        health = json.loads(body) if body.startswith("{") else {}
        return health if (health.get("db") or {}).get("host") == "mol-db-east-2" else None
    health = wait_for(demo_on_new_primary, timeout=60)
    assert health, "the demo service did not reconnect to mol-db-east-2"
    seq = health["db"]["last_acked_seq"]
    assert psql(get_host("mol-db-east-2"), "SELECT count(*) FROM demo.orders WHERE seq = %d" % seq, db="rtx") == "1"


def test_second_failover_run_changes_nothing():
    result = playbook("failover.yml")
    assert result.returncode == 0, out(result)
    assert "nothing to do" in said(result)
    changed = recap_changed(result)
    assert changed and all(count == 0 for count in changed.values()), changed


def test_rejoin_refuses_the_current_primary():
    result = playbook("rejoin.yml", "-e", "rejoin_host=mol-db-east-2")
    assert result.returncode != 0
    assert "Rejoin refused, nothing was changed" in said(result)
    assert "rejoin_host=mol-db-east-2 is the current primary" in said(result)
    assert role("mol-db-east-2") == "primary"


def guard_journal(name):
    """The last lines of the PostgreSQL unit's journal (the fence guard logs there)."""
    return get_host(name).run("journalctl -u postgresql@15-main --no-pager -n 200").stdout


def test_the_fence_guard_keeps_the_returning_old_primary_down():
    start_container("mol-db-east-1")
    # No standby.signal (it was STONITHed), but the leader record names mol-db-east-2: the boot-time fence
    # guard refuses to start it as a second primary on the old timeline.
    assert role("mol-db-east-1") == "down"
    journal = " ".join(guard_journal("mol-db-east-1").split())
    assert "REFUSED to start PostgreSQL on mol-db-east-1 as a primary" in journal
    # Refused on the word of the leader record (written by failover.yml) or of the writable mol-db-east-2,
    # whichever the guard reads first; either way the refusal names the new primary.
    refusal = journal[journal.index("REFUSED to start PostgreSQL on mol-db-east-1"):]
    assert "mol-db-east-2" in refusal and ("accepts writes" in refusal or "leader record" in refusal), refusal
    assert "rejoin.yml -e rejoin_host=mol-db-east-1" in journal
    assert role("mol-db-east-2") == "primary"


def test_rejoin_rewinds_the_stale_old_primary():
    # The operator's one-shot override lets it past the guard: back from the dead it starts as a primary on the
    # old timeline, and the split brain rejoin must end.
    host = get_host("mol-db-east-1")
    assert host.run("runuser -u postgres -- touch /var/lib/postgresql/15/main/rtx-dr-start-anyway").rc == 0
    assert host.run("systemctl start postgresql@15-main").rc == 0
    assert wait_for(lambda: role("mol-db-east-1") == "primary", timeout=60)
    assert host.run("test -e /var/lib/postgresql/15/main/rtx-dr-start-anyway").rc != 0
    result = playbook("rejoin.yml", "-e", "rejoin_host=mol-db-east-1")
    assert result.returncode == 0, out(result)
    assert "stale primary (timeline 1 < 2)" in said(result)
    assert "how: pg_rewind" in said(result)
    assert role("mol-db-east-1") == "standby"
    assert wait_for(lambda: timeline("mol-db-east-1") == 2, timeout=30)
    assert "mol-db-east-1" in wait_for(lambda: streaming_from("mol-db-east-2"), timeout=30)
    psql(get_host("mol-db-east-2"), "INSERT INTO failover_probe.acks (id) VALUES (%d)" % os.getpid(), db="rtx")
    assert wait_for(lambda: psql(get_host("mol-db-east-1"), "SELECT count(*) FROM failover_probe.acks WHERE id = %d"
                                 % os.getpid(), db="rtx") == "1", timeout=30)
    again = playbook("rejoin.yml", "-e", "rejoin_host=mol-db-east-1")
    assert again.returncode == 0 and "nothing to do" in said(again)


def test_the_standby_with_the_most_wal_is_promoted():
    # mol-db-east-1 stops receiving; the others get more WAL. By name it would be chosen first.
    east1 = get_host("mol-db-east-1")
    psql(east1, "ALTER SYSTEM SET primary_conninfo = ''")
    psql(east1, "SELECT pg_reload_conf()")
    assert wait_for(lambda: psql(east1, "SELECT count(*) FROM pg_stat_wal_receiver") == "0", timeout=30)
    psql(get_host("mol-db-east-2"), "INSERT INTO failover_probe.acks (id) SELECT g FROM generate_series(1, 20000) g "
                                    "ON CONFLICT DO NOTHING", db="rtx")
    assert docker("kill", "mol-db-east-2").returncode == 0
    result = playbook("failover.yml")
    assert result.returncode == 0, out(result)
    assert "FAILOVER COMPLETE: mol-db-east-3 is the primary" in said(result)
    assert "it has received the most WAL" in said(result)
    assert role("mol-db-east-3") == "primary" and timeline("mol-db-east-3") == 3
    # The lagging standby was repointed and catches up on the new timeline.
    senders = wait_for(lambda: streaming_from("mol-db-east-3"), timeout=30)
    assert {"mol-db-east-1", "mol-db-west-1"} <= set(senders)
    assert wait_for(lambda: psql(east1, "SELECT count(*) FROM failover_probe.acks WHERE id <= 20000", db="rtx")
                    == "20000", timeout=60)

    start_container("mol-db-east-2")
    # Killed, not fenced: the fence guard keeps it down (the leader record names mol-db-east-3).
    assert role("mol-db-east-2") == "down"
    rejoin = playbook("rejoin.yml", "-e", "rejoin_host=mol-db-east-2")
    assert rejoin.returncode == 0, out(rejoin)
    assert "plan: rejoin mol-db-east-2 (postgres down) as a standby of mol-db-east-3" in said(rejoin)
    assert role("mol-db-east-2") == "standby"
    assert wait_for(lambda: timeline("mol-db-east-2") == 3, timeout=30)


def test_switchover_under_write_load_loses_nothing_and_switches_back():
    senders = streaming_from("mol-db-east-3")
    sync = [h for h, state in senders.items() if state == "sync"]
    assert sync, senders
    writer = Writer()
    writer.start()
    try:
        assert writer.wait_acked(100)
        result = playbook("switchover.yml")
        assert result.returncode == 0, out(result)
        assert writer.wait_acked(100, timeout=60)
        assert role(sync[0]) == "primary" and role("mol-db-east-3") == "standby"
        assert "mol-db-east-3" in wait_for(lambda: streaming_from(sync[0]), timeout=30)
        assert "no acknowledged commit lost" in said(result)

        back = playbook("switchover.yml", "-e", "candidate=mol-db-east-3")
        assert back.returncode == 0, out(back)
        assert writer.wait_acked(100, timeout=60)
    finally:
        writer.stop()
    assert role("mol-db-east-3") == "primary" and role(sync[0]) == "standby"
    missing = set(writer.acked) - rows_on("mol-db-east-3")
    assert not missing, "%d acknowledged commits lost in the switchovers" % len(missing)
    assert route53_value() == IPS["mol-db-east-3"]
    assert server_behind(HAPROXY_DSN) == (IPS["mol-db-east-3"], False)
    assert server_behind(PGBOUNCER_DSN) == (IPS["mol-db-east-3"], False)
    kinds = psql(get_host("mol-db-east-3"), "SELECT count(*) FROM dr.failover_history WHERE kind = 'switchover'",
                 db="rtx")
    assert kinds == "2"


def test_a_switchover_stopped_after_its_promotion_is_finished_by_failover_yml():
    old = "mol-db-east-3"
    assert role(old) == "primary"
    sync = [h for h, state in streaming_from(old).items() if state == "sync"]
    assert sync, streaming_from(old)
    new = sync[0]
    # The endpoint step (Step 7, after the promotion) fails: a hosted zone that does not exist.
    broken = playbook("switchover.yml", "-e", "rtx_dr_endpoint_route53_zone=missing.rtx-molecule.internal")
    assert broken.returncode != 0, out(broken)
    assert role(new) == "primary"
    assert psql(get_host(new), "SELECT kind || '|' || status FROM dr.failover_history ORDER BY started_at DESC LIMIT 1",
                db="rtx") == "switchover|running"
    # Another switchover is refused until that one is finished, and changes nothing.
    again = playbook("switchover.yml")
    assert again.returncode != 0 and "Finish it first: ansible-playbook playbooks/failover.yml" in said(again)
    assert role(new) == "primary" and role(old) == "standby"
    # failover.yml resumes it: endpoint, verify, record (the old primary already follows).
    resumed = playbook("failover.yml")
    assert resumed.returncode == 0, out(resumed)
    assert "promoted by switchover" in said(resumed)
    assert psql(get_host(new), "SELECT kind || '|' || status FROM dr.failover_history ORDER BY started_at DESC LIMIT 1",
                db="rtx") == "switchover|complete"
    assert route53_value() == IPS[new]
    assert server_behind(HAPROXY_DSN) == (IPS[new], False) and server_behind(PGBOUNCER_DSN) == (IPS[new], False)
    assert old in wait_for(lambda: streaming_from(new), timeout=30)

"""The scheduled backup agent runs on every database host and follows the primary."""

from conftest import PRIMARY, STANDBYS, get_host, psql


def test_timers_are_installed_and_active_on_every_database_host():
    for name in [PRIMARY] + STANDBYS:
        host = get_host(name)
        for timer in ("rtx-dr-backup.timer", "rtx-dr-verify.timer"):
            assert host.service(timer).is_enabled, (name, timer)
            assert host.service(timer).is_running, (name, timer)
        assert "02:00:00 UTC" in host.file("/etc/systemd/system/rtx-dr-backup.timer").content_string


def test_scheduled_backup_runs_on_the_primary_only():
    primary = get_host(PRIMARY)
    before = int(psql(primary, "SELECT count(*) FROM dr.backup_history WHERE status = 'complete'", db="rtx"))
    run = primary.run("systemctl start rtx-dr-backup.service")
    assert run.rc == 0, run.stderr + primary.run("journalctl -u rtx-dr-backup --no-pager -n 30").stdout
    after = int(psql(primary, "SELECT count(*) FROM dr.backup_history WHERE status = 'complete'", db="rtx"))
    assert after == before + 1
    standby = get_host(STANDBYS[0])
    run = standby.run("systemctl start rtx-dr-backup.service")
    assert run.rc == 0, run.stderr
    log = standby.run("journalctl -u rtx-dr-backup --no-pager -n 20").stdout
    assert "standby: not the primary, nothing to do" in log
    assert int(psql(primary, "SELECT count(*) FROM dr.backup_history WHERE status = 'complete'", db="rtx")) == after


def test_scheduled_verification_passes_on_the_primary():
    primary = get_host(PRIMARY)
    before = int(psql(primary, "SELECT count(*) FROM dr.verification_history WHERE status = 'passed'", db="rtx"))
    run = primary.run("systemctl start rtx-dr-verify.service")
    assert run.rc == 0, run.stderr + primary.run("journalctl -u rtx-dr-verify --no-pager -n 30").stdout
    # the verification is recorded (the health agent's rtx_dr_backup_last_verified_timestamp_seconds reads it)
    latest = psql(primary, "SELECT backup_id FROM dr.backup_history WHERE kind = 'physical' AND status = 'complete'"
                           " ORDER BY finished_at DESC LIMIT 1", db="rtx")
    rows = psql(primary, "SELECT backup_id || ' ' || status || ' ' || findings FROM dr.verification_history"
                         " ORDER BY id DESC LIMIT 1", db="rtx")
    assert rows == "%s passed 0" % latest
    assert int(psql(primary, "SELECT count(*) FROM dr.verification_history WHERE status = 'passed'",
                    db="rtx")) == before + 1

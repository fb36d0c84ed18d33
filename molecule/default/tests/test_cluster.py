"""The lab after site.yml: roles, replication, TLS and authentication are real."""

import uuid

from conftest import (ASYNC_STANDBY, PRIMARY, SYNC_STANDBY, WEST_STANDBY, get_host, psql,
                      wait_for)


def test_primary_accepts_writes(primary):
    assert psql(primary, "SELECT pg_is_in_recovery()") == "f"
    psql(primary, "CREATE TABLE IF NOT EXISTS public.molecule_probe (id text PRIMARY KEY)")
    token = uuid.uuid4().hex
    psql(primary, "INSERT INTO public.molecule_probe VALUES ('%s')" % token)
    assert psql(primary, "SELECT count(*) FROM public.molecule_probe WHERE id = '%s'" % token) == "1"


def test_replication_states_on_primary(primary):
    rows = psql(primary, "SELECT application_name || ':' || state || ':' || sync_state "
                         "FROM pg_stat_replication ORDER BY 1").splitlines()
    assert "%s:streaming:sync" % SYNC_STANDBY in rows
    assert "%s:streaming:async" % ASYNC_STANDBY in rows
    assert "%s:streaming:async" % WEST_STANDBY in rows
    assert psql(primary, "SHOW synchronous_standby_names") == 'FIRST 1 ("%s")' % SYNC_STANDBY


def test_every_standby_is_in_recovery_and_streams_from_primary(standbys):
    for name, host in standbys.items():
        assert psql(host, "SELECT pg_is_in_recovery()") == "t", name
        status = psql(host, "SELECT status || ':' || sender_host || ':' || slot_name FROM pg_stat_wal_receiver")
        assert status == "streaming:%s:%s" % (PRIMARY, name.replace("-", "_")), name
        assert host.file("/var/lib/postgresql/15/main/standby.signal").exists


def test_row_written_on_primary_is_visible_on_every_standby(primary, standbys):
    token = uuid.uuid4().hex
    psql(primary, "CREATE TABLE IF NOT EXISTS public.molecule_probe (id text PRIMARY KEY)")
    psql(primary, "INSERT INTO public.molecule_probe VALUES ('%s')" % token)
    for name, host in standbys.items():
        seen = wait_for(lambda h=host: psql(
            h, "SELECT count(*) FROM public.molecule_probe WHERE id = '%s'" % token) == "1")
        assert seen, "row %s never reached %s" % (token, name)


def test_all_members_share_the_primary_system_identifier(primary, standbys):
    sysid = psql(primary, "SELECT system_identifier FROM pg_control_system()")
    for name, host in standbys.items():
        assert psql(host, "SELECT system_identifier FROM pg_control_system()") == sysid, name


def test_tls_and_scram_are_enforced(primary):
    assert psql(primary, "SHOW ssl") == "on"
    assert psql(primary, "SHOW password_encryption") == "scram-sha-256"
    assert psql(primary, "SHOW wal_log_hints") == "on"
    assert psql(primary, "SHOW data_checksums") == "on"
    hba = psql(primary, "SELECT type || ' ' || auth_method FROM pg_hba_file_rules "
                        "WHERE address IS NOT NULL AND address NOT IN ('127.0.0.1', '::1')").splitlines()
    assert hba and all(r in ("hostssl scram-sha-256", "hostnossl reject") for r in hba), hba
    # A client without TLS is refused; with TLS and the CA it gets in.
    client = get_host(ASYNC_STANDBY)
    nossl = client.run("PGPASSFILE=/var/lib/postgresql/.pgpass psql -X -Atq "
                       "'host=%s user=replicator dbname=postgres sslmode=disable' -c 'SELECT 1'", PRIMARY)
    assert nossl.rc != 0 and "no encryption" in nossl.stderr, nossl.stderr
    ok = client.run("runuser -u postgres -- env PGPASSFILE=/var/lib/postgresql/.pgpass psql -X -Atq "
                    "'host=%s user=replicator dbname=postgres sslmode=verify-full "
                    "sslrootcert=/etc/postgresql/15/main/tls/ca.crt' -c 'SELECT ssl FROM pg_stat_ssl "
                    "WHERE pid = pg_backend_pid()'", PRIMARY)
    assert ok.rc == 0 and ok.stdout.strip() == "t", ok.stderr


def test_replication_password_is_not_in_server_configuration(standbys):
    for name, host in standbys.items():
        conninfo = psql(host, "SHOW primary_conninfo")
        assert "password" not in conninfo, name
        assert "passfile=/var/lib/postgresql/.pgpass" in conninfo, name
        pgpass = host.file("/var/lib/postgresql/.pgpass")
        assert pgpass.mode == 0o600 and pgpass.user == "postgres", name

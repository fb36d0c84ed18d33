"""The DR tracking schema is installed on the primary and replicated."""

from conftest import psql, wait_for

TABLES = ["backup_history", "restore_history", "failover_history", "health_check_history", "verification_history",
          "drill_history"]


def test_dr_tables_and_view_exist_on_primary(primary):
    rows = psql(primary, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                         "WHERE n.nspname = 'dr' AND c.relkind IN ('r', 'p', 'v') ORDER BY 1", db="rtx")
    names = rows.splitlines()
    for table in TABLES + ["backup_metrics", "schema_migrations"]:
        assert table in names, names


def test_migrations_are_recorded_with_checksums(primary):
    rows = psql(primary, "SELECT version || ':' || length(checksum) FROM dr.schema_migrations ORDER BY version",
                db="rtx").splitlines()
    assert rows[:4] == ["1:64", "2:64", "3:64", "4:64"], rows


def test_health_history_is_partitioned_and_accepts_any_time(primary):
    assert psql(primary, "SELECT relkind FROM pg_class WHERE oid = 'dr.health_check_history'::regclass",
                db="rtx") == "p"
    psql(primary, "INSERT INTO dr.health_check_history (time, host, check_name, status, value, threshold, message) "
                  "VALUES (now(), 'molecule', 'postgresql', 'ok', 1, 0, 'probe'), "
                  "(now() + interval '5 years', 'molecule', 'postgresql', 'ok', 1, 0, 'far future')", db="rtx")
    where = psql(primary, "SELECT tableoid::regclass FROM dr.health_check_history "
                          "WHERE host = 'molecule' ORDER BY time", db="rtx").splitlines()
    assert where[0].startswith("dr.health_check_history_p"), where
    assert where[-1] == "dr.health_check_history_default", where


def test_backup_metrics_success_rate_is_computed(primary):
    psql(primary, "DELETE FROM dr.backup_history WHERE label = 'molecule'", db="rtx")
    psql(primary, "INSERT INTO dr.backup_history (backup_id, label, kind, status, started_at, finished_at) VALUES "
                  "('mol-1', 'molecule', 'logical', 'complete', now(), now()), "
                  "('mol-2', 'molecule', 'logical', 'complete', now(), now()), "
                  "('mol-3', 'molecule', 'logical', 'complete', now(), now()), "
                  "('mol-4', 'molecule', 'logical', 'failed', now(), now())", db="rtx")
    rate = psql(primary, "SELECT success_rate FROM dr.backup_metrics WHERE kind = 'logical'", db="rtx")
    psql(primary, "DELETE FROM dr.backup_history WHERE label = 'molecule'", db="rtx")
    assert rate == "75.00"


def test_schema_reaches_the_standbys(standbys):
    for name, host in standbys.items():
        seen = wait_for(lambda h=host: psql(h, "SELECT to_regclass('dr.backup_history') IS NOT NULL", db="rtx") == "t")
        assert seen, name


def test_the_writer_role_may_record_drills(primary):
    assert psql(primary, "SELECT has_table_privilege('rtx_dr_writer', 'dr.drill_history', 'INSERT, UPDATE')"
                " AND NOT has_table_privilege('rtx_dr_writer', 'dr.drill_history', 'DELETE')", db="rtx") == "t"
    # A drill cannot be recorded as passed when its objectives were not met.
    out = primary.run("runuser -u postgres -- psql -X -Atq -d rtx -c %s",
                      "INSERT INTO dr.drill_history (drill_id, kind, status, finished_at, objectives_met)"
                      " VALUES ('mol-drill-check', 'restore', 'passed', now(), false)")
    assert out.rc != 0 and "drill_history_passed_check" in out.stderr

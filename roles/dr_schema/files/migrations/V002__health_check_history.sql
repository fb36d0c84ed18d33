-- V002__health_check_history: time-series table for DR health checks.
--
-- Storage is decided ONCE, when this migration is applied, from the
-- transaction-local setting rtx_dr.use_timescaledb that the dr_schema runner
-- sets (on when dr_schema_timescaledb resolves to true):
--   on  -> plain table converted to a TimescaleDB hypertable on "time"
--          (7 day chunks, TimescaleDB default indexes disabled: the indexes
--          below are created explicitly); the timescaledb extension must
--          already exist in the database (the runner creates it).
--   off -> declarative RANGE partitioning on "time": one partition per
--          calendar month (UTC) plus a DEFAULT partition so that inserts never
--          fail. ensure_health_partitions(months_ahead) creates the monthly
--          partitions and is safe to call as often as you like.
-- Executed in one transaction with search_path = <dr_schema_name>, pg_temp
-- and ROLE = <dr_schema_owner>. Never edit once applied; add V00N instead.

DO $migration$
DECLARE
    use_timescaledb boolean :=
        coalesce(nullif(current_setting('rtx_dr.use_timescaledb', true), ''), 'off')::boolean;
    ts_schema name;
    columns_sql constant text := $cols$
        "time"      timestamptz       NOT NULL,
        host        text              NOT NULL,
        check_name  text              NOT NULL,
        status      text              NOT NULL,
        value       double precision,
        threshold   double precision,
        message     text,
        details     jsonb             NOT NULL DEFAULT '{}'::jsonb,
        CONSTRAINT health_check_history_status_check
            CHECK (status IN ('ok', 'warn', 'critical', 'unknown')),
        CONSTRAINT health_check_history_check_name_check CHECK (btrim(check_name) <> ''),
        CONSTRAINT health_check_history_details_check
            CHECK (jsonb_typeof(details) = 'object')
    $cols$;
BEGIN
    IF use_timescaledb THEN
        SELECT n.nspname INTO ts_schema
          FROM pg_extension AS e
          JOIN pg_namespace AS n ON n.oid = e.extnamespace
         WHERE e.extname = 'timescaledb';
        IF ts_schema IS NULL THEN
            RAISE EXCEPTION 'rtx_dr.use_timescaledb is on but the timescaledb extension is not installed in database %',
                current_database();
        END IF;
        EXECUTE format('CREATE TABLE %I.health_check_history (%s)', current_schema(), columns_sql);
        EXECUTE format(
            'SELECT %I.create_hypertable(%L::regclass, %L::name, chunk_time_interval => %L::interval, '
            'create_default_indexes => false)',
            ts_schema, format('%I.health_check_history', current_schema()), 'time', '7 days');
    ELSE
        EXECUTE format('CREATE TABLE %I.health_check_history (%s) PARTITION BY RANGE ("time")',
                       current_schema(), columns_sql);
        EXECUTE format('CREATE TABLE %I.health_check_history_default PARTITION OF %I.health_check_history DEFAULT',
                       current_schema(), current_schema());
        EXECUTE format('COMMENT ON TABLE %I.health_check_history_default IS %L', current_schema(),
                       'Catch-all partition: rows outside every monthly partition land here so inserts never fail. '
                       'ensure_health_partitions() moves them out when it creates the matching month.');
    END IF;
END
$migration$;

-- Indexes are created on the parent and propagate to every partition / chunk.
CREATE INDEX health_check_history_time_idx
    ON health_check_history ("time" DESC);
CREATE INDEX health_check_history_host_check_time_idx
    ON health_check_history (host, check_name, "time" DESC);
CREATE INDEX health_check_history_not_ok_idx
    ON health_check_history ("time" DESC) WHERE status <> 'ok';

COMMENT ON TABLE health_check_history IS
    'Time series of DR health check results. TimescaleDB hypertable on "time" when available, otherwise RANGE partitioned by month (UTC) with a DEFAULT partition; see ensure_health_partitions().';
COMMENT ON COLUMN health_check_history."time" IS 'When the check was evaluated.';
COMMENT ON COLUMN health_check_history.host IS 'Host the check ran against.';
COMMENT ON COLUMN health_check_history.check_name IS 'Check identifier, e.g. replication_lag_bytes, wal_archive_age_s.';
COMMENT ON COLUMN health_check_history.status IS 'ok | warn | critical | unknown.';
COMMENT ON COLUMN health_check_history.value IS 'Measured value (unit depends on the check).';
COMMENT ON COLUMN health_check_history.threshold IS 'Threshold the value was compared against.';
COMMENT ON COLUMN health_check_history.message IS 'Human readable result.';
COMMENT ON COLUMN health_check_history.details IS 'Free-form check details (JSON object).';

-- ---------------------------------------------------------------------------
-- health_partition_plan(months_ahead): monthly partitions (UTC months) that
-- should exist for the current month and the next months_ahead months, and
-- whether each one is already attached. Empty when health_check_history is not
-- a partitioned table (TimescaleDB hypertable).
-- SET search_path FROM CURRENT pins the function to this schema.
-- ---------------------------------------------------------------------------
CREATE FUNCTION health_partition_plan(months_ahead integer DEFAULT 3)
RETURNS TABLE (partition_name text, range_start timestamptz, range_end timestamptz, is_present boolean)
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $fn$
    WITH parent AS (
        SELECT pt.partrelid AS relid
          FROM pg_catalog.pg_partitioned_table AS pt
         WHERE pt.partrelid = pg_catalog.to_regclass(
                   pg_catalog.format('%I.health_check_history', pg_catalog.current_schema()))
    ), months AS (
        SELECT pg_catalog.date_trunc('month', pg_catalog.now() AT TIME ZONE 'UTC')
               + pg_catalog.make_interval(months => g) AS month_start
          FROM pg_catalog.generate_series(0, months_ahead) AS g
    )
    SELECT 'health_check_history_p' || pg_catalog.to_char(m.month_start, 'YYYY_MM'),
           m.month_start AT TIME ZONE 'UTC',
           (m.month_start + interval '1 month') AT TIME ZONE 'UTC',
           EXISTS (SELECT 1
                     FROM pg_catalog.pg_inherits AS i
                     JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
                    WHERE i.inhparent = p.relid
                      AND c.relname = 'health_check_history_p' || pg_catalog.to_char(m.month_start, 'YYYY_MM'))
      FROM parent AS p
     CROSS JOIN months AS m
     ORDER BY 2
$fn$;

COMMENT ON FUNCTION health_partition_plan(integer) IS
    'Monthly (UTC) health_check_history partitions wanted for the current month and the next months_ahead months, with is_present = already attached. Read only.';

-- ---------------------------------------------------------------------------
-- ensure_health_partitions(months_ahead): create the missing monthly
-- partitions from health_partition_plan(). Idempotent; returns the number of
-- partitions created (0 when everything exists or when the table is a
-- hypertable). Rows that already landed in the DEFAULT partition for a month
-- being created are moved into the new partition before it is attached, so
-- the call never fails because of them. Serialised with an advisory lock.
-- SECURITY DEFINER (runs as the schema owner) so that least-privileged
-- health-check agents can call it; EXECUTE is revoked from PUBLIC below.
-- ---------------------------------------------------------------------------
CREATE FUNCTION ensure_health_partitions(months_ahead integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
DECLARE
    nsp     text := pg_catalog.current_schema();
    parent  regclass := pg_catalog.to_regclass(pg_catalog.format('%I.health_check_history', nsp));
    deflt   regclass;
    part    record;
    moved   bigint;
    created integer := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120, got %', months_ahead;
    END IF;
    IF parent IS NULL THEN
        RAISE EXCEPTION 'table %.health_check_history does not exist', nsp;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partitioned_table WHERE partrelid = parent) THEN
        RETURN 0;  -- TimescaleDB hypertable: chunks are managed by TimescaleDB
    END IF;

    -- One caller at a time (other callers wait, then find nothing to do).
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext(nsp || '.ensure_health_partitions'));

    SELECT pt.partdefid::regclass INTO deflt
      FROM pg_catalog.pg_partitioned_table AS pt
     WHERE pt.partrelid = parent AND pt.partdefid <> 0;

    FOR part IN
        SELECT * FROM health_partition_plan(months_ahead) AS pl WHERE NOT pl.is_present
    LOOP
        IF pg_catalog.to_regclass(pg_catalog.format('%I.%I', nsp, part.partition_name)) IS NOT NULL THEN
            RAISE EXCEPTION 'table %.% exists but is not a partition of %; attach or rename it',
                nsp, part.partition_name, parent;
        END IF;

        EXECUTE pg_catalog.format(
            'CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS)',
            nsp, part.partition_name, parent);

        IF deflt IS NOT NULL THEN
            EXECUTE pg_catalog.format(
                'WITH moved AS (DELETE FROM %s WHERE "time" >= %L AND "time" < %L RETURNING *) '
                'INSERT INTO %I.%I SELECT * FROM moved',
                deflt, part.range_start, part.range_end, nsp, part.partition_name);
            GET DIAGNOSTICS moved = ROW_COUNT;
            IF moved > 0 THEN
                RAISE NOTICE 'moved % row(s) from % into %.%', moved, deflt, nsp, part.partition_name;
            END IF;
        END IF;

        EXECUTE pg_catalog.format(
            'ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
            parent, nsp, part.partition_name, part.range_start, part.range_end);
        EXECUTE pg_catalog.format(
            'COMMENT ON TABLE %I.%I IS %L', nsp, part.partition_name,
            pg_catalog.format('health_check_history partition for [%s, %s)', part.range_start, part.range_end));
        created := created + 1;
    END LOOP;

    RETURN created;
END
$fn$;

REVOKE ALL ON FUNCTION ensure_health_partitions(integer) FROM PUBLIC;

COMMENT ON FUNCTION ensure_health_partitions(integer) IS
    'Idempotently create monthly (UTC) health_check_history partitions for the current month and the next months_ahead months; returns how many were created. No-op on a TimescaleDB hypertable.';

-- Create the initial partitions (no-op for a hypertable).
SELECT ensure_health_partitions(
    coalesce(nullif(current_setting('rtx_dr.health_partitions_ahead', true), ''), '3')::integer);

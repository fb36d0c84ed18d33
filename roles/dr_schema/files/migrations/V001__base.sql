-- V001__base: backup, restore and failover history plus the backup_metrics view.
--
-- Executed by the dr_schema migration runner inside ONE transaction with
--   search_path = <dr_schema_name>, pg_temp   and   ROLE = <dr_schema_owner>
-- so every object below lands in the DR schema and is owned by the schema owner.
-- Do not qualify object names with a schema and do not add BEGIN/COMMIT.
-- NEVER edit this file once it has been applied anywhere: add a new V00N file.

-- ---------------------------------------------------------------------------
-- backup_history: one row per backup run (physical base backup, logical dump,
-- WAL archive segment batch).
-- ---------------------------------------------------------------------------
CREATE TABLE backup_history (
    id                      bigint GENERATED ALWAYS AS IDENTITY,
    backup_id               text        NOT NULL,
    label                   text,
    kind                    text        NOT NULL,
    cluster_name            text,
    system_identifier       numeric(20, 0),
    timeline                integer,
    start_lsn               pg_lsn,
    stop_lsn                pg_lsn,
    start_wal               text,
    stop_wal                text,
    started_at              timestamptz NOT NULL DEFAULT now(),
    finished_at             timestamptz,
    status                  text        NOT NULL DEFAULT 'running',
    size_raw_bytes          bigint,
    size_compressed_bytes   bigint,
    duration_seconds        numeric(12, 3),
    throughput_bytes_per_s  numeric(20, 2),
    compression             text,
    kms_key                 text,
    storage_uri             text,
    catalog_key             text,
    pg_version              text,
    host                    text,
    error                   text,
    details                 jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT backup_history_pkey PRIMARY KEY (id),
    CONSTRAINT backup_history_backup_id_key UNIQUE (backup_id),
    CONSTRAINT backup_history_backup_id_check CHECK (btrim(backup_id) <> ''),
    CONSTRAINT backup_history_kind_check
        CHECK (kind IN ('physical', 'logical', 'wal')),
    CONSTRAINT backup_history_status_check
        CHECK (status IN ('running', 'complete', 'failed', 'aborted')),
    CONSTRAINT backup_history_system_identifier_check
        CHECK (system_identifier BETWEEN 0 AND 18446744073709551615),
    CONSTRAINT backup_history_timeline_check CHECK (timeline > 0),
    CONSTRAINT backup_history_lsn_order_check CHECK (stop_lsn >= start_lsn),
    CONSTRAINT backup_history_start_wal_check CHECK (start_wal ~ '^[0-9A-F]{24}$'),
    CONSTRAINT backup_history_stop_wal_check CHECK (stop_wal ~ '^[0-9A-F]{24}$'),
    CONSTRAINT backup_history_time_order_check CHECK (finished_at >= started_at),
    CONSTRAINT backup_history_finished_when_done_check
        CHECK (status = 'running' OR finished_at IS NOT NULL),
    CONSTRAINT backup_history_size_raw_check CHECK (size_raw_bytes >= 0),
    CONSTRAINT backup_history_size_compressed_check CHECK (size_compressed_bytes >= 0),
    CONSTRAINT backup_history_duration_check CHECK (duration_seconds >= 0),
    CONSTRAINT backup_history_throughput_check CHECK (throughput_bytes_per_s >= 0),
    CONSTRAINT backup_history_details_check CHECK (jsonb_typeof(details) = 'object')
);

CREATE INDEX backup_history_kind_started_idx
    ON backup_history (kind, started_at DESC);
CREATE INDEX backup_history_cluster_started_idx
    ON backup_history (cluster_name, started_at DESC);
CREATE INDEX backup_history_complete_idx
    ON backup_history (kind, finished_at DESC) WHERE status = 'complete';
CREATE INDEX backup_history_unfinished_idx
    ON backup_history (started_at) WHERE status = 'running';
CREATE INDEX backup_history_catalog_key_idx
    ON backup_history (catalog_key) WHERE catalog_key IS NOT NULL;

COMMENT ON TABLE backup_history IS
    'One row per backup run (physical base backup, logical dump, WAL archive batch). Written by the rtx.dr backup tooling.';
COMMENT ON COLUMN backup_history.id IS 'Surrogate key.';
COMMENT ON COLUMN backup_history.backup_id IS 'Stable external backup identifier (e.g. pgBackRest/WAL-G backup name); unique.';
COMMENT ON COLUMN backup_history.label IS 'Human readable label passed to pg_backup_start / the backup tool.';
COMMENT ON COLUMN backup_history.kind IS 'physical | logical | wal.';
COMMENT ON COLUMN backup_history.cluster_name IS 'Logical cluster name (cluster_name GUC or inventory group).';
COMMENT ON COLUMN backup_history.system_identifier IS 'pg_control_system().system_identifier; unsigned 64-bit so stored as numeric(20,0).';
COMMENT ON COLUMN backup_history.timeline IS 'Timeline ID the backup was taken on.';
COMMENT ON COLUMN backup_history.start_lsn IS 'Backup start LSN (checkpoint redo location).';
COMMENT ON COLUMN backup_history.stop_lsn IS 'Backup stop LSN; must be >= start_lsn.';
COMMENT ON COLUMN backup_history.start_wal IS 'First WAL segment file name (24 hex digits) needed by the backup.';
COMMENT ON COLUMN backup_history.stop_wal IS 'Last WAL segment file name (24 hex digits) needed for consistency.';
COMMENT ON COLUMN backup_history.started_at IS 'When the backup started.';
COMMENT ON COLUMN backup_history.finished_at IS 'When the backup ended (successfully or not); required unless status = running.';
COMMENT ON COLUMN backup_history.status IS 'running | complete | failed | aborted.';
COMMENT ON COLUMN backup_history.size_raw_bytes IS 'Uncompressed size in bytes.';
COMMENT ON COLUMN backup_history.size_compressed_bytes IS 'Stored (compressed, encrypted) size in bytes.';
COMMENT ON COLUMN backup_history.duration_seconds IS 'Wall clock duration in seconds.';
COMMENT ON COLUMN backup_history.throughput_bytes_per_s IS 'size_raw_bytes / duration_seconds as measured by the tool.';
COMMENT ON COLUMN backup_history.compression IS 'Compression algorithm and level, e.g. zstd:3.';
COMMENT ON COLUMN backup_history.kms_key IS 'KMS key id/ARN used for encryption at rest (never key material).';
COMMENT ON COLUMN backup_history.storage_uri IS 'Where the backup is stored, e.g. s3://bucket/prefix.';
COMMENT ON COLUMN backup_history.catalog_key IS 'Key of the backup in the external backup catalog.';
COMMENT ON COLUMN backup_history.pg_version IS 'server_version of the source cluster, e.g. 15.6.';
COMMENT ON COLUMN backup_history.host IS 'Host the backup was taken from.';
COMMENT ON COLUMN backup_history.error IS 'Error message when status is failed or aborted.';
COMMENT ON COLUMN backup_history.details IS 'Free-form tool specific details (JSON object).';

-- ---------------------------------------------------------------------------
-- restore_history: one row per restore or restore verification.
-- backup_id intentionally has no foreign key: restores may use backups that
-- were catalogued in another region / cluster.
-- ---------------------------------------------------------------------------
CREATE TABLE restore_history (
    id                      bigint GENERATED ALWAYS AS IDENTITY,
    restore_id              text        NOT NULL,
    backup_id               text,
    target_type             text        NOT NULL DEFAULT 'latest',
    target_value            text,
    destination_host        text,
    destination_data_dir    text,
    verify_only             boolean     NOT NULL DEFAULT false,
    started_at              timestamptz NOT NULL DEFAULT now(),
    finished_at             timestamptz,
    status                  text        NOT NULL DEFAULT 'running',
    rto_seconds             numeric(12, 3),
    achieved_rpo_seconds    numeric(12, 3),
    checks                  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    error                   text,
    details                 jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT restore_history_pkey PRIMARY KEY (id),
    CONSTRAINT restore_history_restore_id_key UNIQUE (restore_id),
    CONSTRAINT restore_history_restore_id_check CHECK (btrim(restore_id) <> ''),
    CONSTRAINT restore_history_target_type_check
        CHECK (target_type IN ('latest', 'backup', 'time', 'lsn', 'xid', 'name')),
    CONSTRAINT restore_history_target_value_check
        CHECK (target_type = 'latest' OR target_value IS NOT NULL),
    CONSTRAINT restore_history_status_check
        CHECK (status IN ('running', 'complete', 'failed', 'aborted')),
    CONSTRAINT restore_history_time_order_check CHECK (finished_at >= started_at),
    CONSTRAINT restore_history_finished_when_done_check
        CHECK (status = 'running' OR finished_at IS NOT NULL),
    CONSTRAINT restore_history_rto_check CHECK (rto_seconds >= 0),
    CONSTRAINT restore_history_rpo_check CHECK (achieved_rpo_seconds >= 0),
    CONSTRAINT restore_history_checks_check
        CHECK (jsonb_typeof(checks) IN ('object', 'array')),
    CONSTRAINT restore_history_details_check CHECK (jsonb_typeof(details) = 'object')
);

CREATE INDEX restore_history_started_idx ON restore_history (started_at DESC);
CREATE INDEX restore_history_backup_id_idx ON restore_history (backup_id);
CREATE INDEX restore_history_status_started_idx ON restore_history (status, started_at DESC);

COMMENT ON TABLE restore_history IS
    'One row per restore (or verify-only restore drill). Measures achieved RTO/RPO.';
COMMENT ON COLUMN restore_history.id IS 'Surrogate key.';
COMMENT ON COLUMN restore_history.restore_id IS 'Stable external restore run identifier; unique.';
COMMENT ON COLUMN restore_history.backup_id IS 'backup_history.backup_id restored from (no FK: may come from another catalog).';
COMMENT ON COLUMN restore_history.target_type IS 'Recovery target: latest | backup | time | lsn | xid | name.';
COMMENT ON COLUMN restore_history.target_value IS 'Recovery target value (timestamp, LSN, xid, restore point name, backup id); NULL only for latest.';
COMMENT ON COLUMN restore_history.destination_host IS 'Host restored onto.';
COMMENT ON COLUMN restore_history.destination_data_dir IS 'Data directory restored into.';
COMMENT ON COLUMN restore_history.verify_only IS 'True for restore drills whose result is thrown away after verification.';
COMMENT ON COLUMN restore_history.started_at IS 'When the restore started.';
COMMENT ON COLUMN restore_history.finished_at IS 'When the restore ended; required unless status = running.';
COMMENT ON COLUMN restore_history.status IS 'running | complete | failed | aborted.';
COMMENT ON COLUMN restore_history.rto_seconds IS 'Achieved recovery time objective: seconds until the restored cluster accepted connections.';
COMMENT ON COLUMN restore_history.achieved_rpo_seconds IS 'Achieved recovery point objective: seconds of data lost relative to the target.';
COMMENT ON COLUMN restore_history.checks IS 'Results of post-restore verification checks (JSON).';
COMMENT ON COLUMN restore_history.error IS 'Error message when status is failed or aborted.';
COMMENT ON COLUMN restore_history.details IS 'Free-form tool specific details (JSON object).';

-- ---------------------------------------------------------------------------
-- failover_history: failovers, planned switchovers, region failovers and
-- rejoins of former primaries.
-- ---------------------------------------------------------------------------
CREATE TABLE failover_history (
    id                      bigint GENERATED ALWAYS AS IDENTITY,
    failover_id             text        NOT NULL,
    kind                    text        NOT NULL,
    old_primary             text,
    new_primary             text,
    old_timeline            integer,
    new_timeline            integer,
    promote_lsn             pg_lsn,
    data_loss_bytes         bigint,
    started_at              timestamptz NOT NULL DEFAULT now(),
    finished_at             timestamptz,
    duration_seconds        numeric(12, 3),
    steps                   jsonb       NOT NULL DEFAULT '[]'::jsonb,
    operator                text,
    reason                  text,
    status                  text        NOT NULL DEFAULT 'running',
    details                 jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT failover_history_pkey PRIMARY KEY (id),
    CONSTRAINT failover_history_failover_id_key UNIQUE (failover_id),
    CONSTRAINT failover_history_failover_id_check CHECK (btrim(failover_id) <> ''),
    CONSTRAINT failover_history_kind_check
        CHECK (kind IN ('failover', 'switchover', 'region', 'rejoin')),
    CONSTRAINT failover_history_status_check
        CHECK (status IN ('running', 'complete', 'failed', 'aborted')),
    CONSTRAINT failover_history_timeline_check
        CHECK (old_timeline > 0 AND new_timeline >= old_timeline),
    CONSTRAINT failover_history_time_order_check CHECK (finished_at >= started_at),
    CONSTRAINT failover_history_finished_when_done_check
        CHECK (status = 'running' OR finished_at IS NOT NULL),
    CONSTRAINT failover_history_data_loss_check CHECK (data_loss_bytes >= 0),
    CONSTRAINT failover_history_duration_check CHECK (duration_seconds >= 0),
    CONSTRAINT failover_history_steps_check
        CHECK (jsonb_typeof(steps) IN ('array', 'object')),
    CONSTRAINT failover_history_details_check CHECK (jsonb_typeof(details) = 'object')
);

CREATE INDEX failover_history_started_idx ON failover_history (started_at DESC);
CREATE INDEX failover_history_kind_started_idx ON failover_history (kind, started_at DESC);

COMMENT ON TABLE failover_history IS
    'One row per failover, switchover, region failover or rejoin, with per-step timings.';
COMMENT ON COLUMN failover_history.id IS 'Surrogate key.';
COMMENT ON COLUMN failover_history.failover_id IS 'Stable external run identifier; unique.';
COMMENT ON COLUMN failover_history.kind IS 'failover (unplanned) | switchover (planned) | region (cross-region) | rejoin (old primary re-attached).';
COMMENT ON COLUMN failover_history.old_primary IS 'Host that was primary before the event.';
COMMENT ON COLUMN failover_history.new_primary IS 'Host that is primary after the event.';
COMMENT ON COLUMN failover_history.old_timeline IS 'Timeline before promotion.';
COMMENT ON COLUMN failover_history.new_timeline IS 'Timeline after promotion (>= old_timeline).';
COMMENT ON COLUMN failover_history.promote_lsn IS 'LSN at which the new primary was promoted (timeline switch point).';
COMMENT ON COLUMN failover_history.data_loss_bytes IS 'WAL bytes generated on the old primary but not received by the new one; NULL if unknown.';
COMMENT ON COLUMN failover_history.started_at IS 'When the event started (detection or operator command).';
COMMENT ON COLUMN failover_history.finished_at IS 'When the new primary accepted writes; required unless status = running.';
COMMENT ON COLUMN failover_history.duration_seconds IS 'Total duration in seconds.';
COMMENT ON COLUMN failover_history.steps IS 'Per-step timings, e.g. [{"step": "fence", "seconds": 1.2}, ...].';
COMMENT ON COLUMN failover_history.operator IS 'Person or automation that triggered the event.';
COMMENT ON COLUMN failover_history.reason IS 'Why the event happened (incident id, drill, maintenance).';
COMMENT ON COLUMN failover_history.status IS 'running | complete | failed | aborted.';
COMMENT ON COLUMN failover_history.details IS 'Free-form tool specific details (JSON object).';

-- ---------------------------------------------------------------------------
-- backup_metrics: one row per backup kind (always all three kinds).
-- Counters and success_rate cover backups STARTED in the last 30 days;
-- success_rate = complete / (complete + failed) * 100 (running and aborted
-- runs are excluded), NULL when there is nothing to rate.
-- last_complete_at / last_backup_age_seconds look at the whole history.
-- ---------------------------------------------------------------------------
CREATE VIEW backup_metrics AS
WITH kinds (kind) AS (
    VALUES ('physical'::text), ('logical'::text), ('wal'::text)
), recent AS (
    SELECT b.kind,
           count(*)                                        AS total,
           count(*) FILTER (WHERE b.status = 'complete')   AS complete,
           count(*) FILTER (WHERE b.status = 'failed')     AS failed,
           count(*) FILTER (WHERE b.status = 'aborted')    AS aborted,
           count(*) FILTER (WHERE b.status = 'running')    AS running
      FROM backup_history AS b
     WHERE b.started_at >= now() - interval '30 days'
     GROUP BY b.kind
), last_ok AS (
    SELECT b.kind, max(b.finished_at) AS last_complete_at
      FROM backup_history AS b
     WHERE b.status = 'complete'
     GROUP BY b.kind
)
SELECT k.kind,
       coalesce(r.total, 0)    AS total,
       coalesce(r.complete, 0) AS complete,
       coalesce(r.failed, 0)   AS failed,
       coalesce(r.aborted, 0)  AS aborted,
       coalesce(r.running, 0)  AS running,
       CASE WHEN coalesce(r.complete, 0) + coalesce(r.failed, 0) > 0
            THEN round(100.0 * r.complete / (r.complete + r.failed), 2)
       END                     AS success_rate,
       l.last_complete_at,
       floor(extract(epoch FROM now() - l.last_complete_at))::bigint
                               AS last_backup_age_seconds
  FROM kinds AS k
  LEFT JOIN recent AS r ON r.kind = k.kind
  LEFT JOIN last_ok AS l ON l.kind = k.kind;

COMMENT ON VIEW backup_metrics IS
    'Per backup kind: counts and success_rate (percent, complete/(complete+failed)) over backups started in the last 30 days, plus last complete backup time and its age in seconds.';
COMMENT ON COLUMN backup_metrics.total IS 'Backups started in the last 30 days (any status).';
COMMENT ON COLUMN backup_metrics.complete IS 'Completed backups started in the last 30 days.';
COMMENT ON COLUMN backup_metrics.failed IS 'Failed backups started in the last 30 days.';
COMMENT ON COLUMN backup_metrics.aborted IS 'Aborted backups started in the last 30 days (not counted in success_rate).';
COMMENT ON COLUMN backup_metrics.running IS 'Backups started in the last 30 days still running (not counted in success_rate).';
COMMENT ON COLUMN backup_metrics.success_rate IS 'Percentage 0-100 with 2 decimals: complete / (complete + failed) over the last 30 days; NULL if none.';
COMMENT ON COLUMN backup_metrics.last_complete_at IS 'finished_at of the most recent complete backup of this kind (all time).';
COMMENT ON COLUMN backup_metrics.last_backup_age_seconds IS 'Seconds since last_complete_at (current RPO exposure for this kind); NULL if never.';

-- V003__verification_history: one row per verification of a backup in S3.
--
-- Written by the rtx.dr agent's scheduled verification and by
-- playbooks/verify_backups.yml; read by the health agent (metric
-- rtx_dr_backup_last_verified_timestamp_seconds) and the DR reports.
-- Executed in one transaction with search_path = <dr_schema_name>, pg_temp
-- and ROLE = <dr_schema_owner>. Never edit once applied; add V00N instead.

CREATE TABLE verification_history (
    id                      bigint GENERATED ALWAYS AS IDENTITY,
    backup_id               text        NOT NULL,
    kind                    text,
    verified_at             timestamptz NOT NULL DEFAULT now(),
    status                  text        NOT NULL,
    findings                integer     NOT NULL DEFAULT 0,
    objects_checked         integer,
    bytes_read              bigint,
    duration_seconds        numeric(12, 3),
    deep                    boolean     NOT NULL DEFAULT false,
    storage_uri             text,
    host                    text,
    details                 jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT verification_history_pkey PRIMARY KEY (id),
    CONSTRAINT verification_history_backup_id_check CHECK (btrim(backup_id) <> ''),
    CONSTRAINT verification_history_kind_check CHECK (kind IN ('physical', 'logical', 'wal')),
    CONSTRAINT verification_history_status_check CHECK (status IN ('passed', 'failed')),
    CONSTRAINT verification_history_findings_check
        CHECK (findings >= 0 AND (status = 'passed') = (findings = 0)),
    CONSTRAINT verification_history_bytes_check CHECK (bytes_read >= 0),
    CONSTRAINT verification_history_duration_check CHECK (duration_seconds >= 0),
    CONSTRAINT verification_history_details_check CHECK (jsonb_typeof(details) = 'object')
);

CREATE INDEX verification_history_verified_idx ON verification_history (verified_at DESC);
CREATE INDEX verification_history_backup_id_idx ON verification_history (backup_id, verified_at DESC);

COMMENT ON TABLE verification_history IS
    'One row per verification of a backup in S3 (checksums, manifest, KMS key, WAL): passed when there was no finding.';
COMMENT ON COLUMN verification_history.findings IS 'Number of findings; 0 exactly when status = passed.';
COMMENT ON COLUMN verification_history.details IS 'The findings (backup, object, check, message) and the checks run.';

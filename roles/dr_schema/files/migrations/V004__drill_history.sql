-- V004__drill_history: one row per DR drill (restore, failover, region, full).
--
-- Written by playbooks/dr_drill.yml: a 'running' row when the drill starts,
-- updated to 'passed' or 'failed' with the measurements and the verdict when
-- it ends. A drill that died half-way leaves its row 'running'; the next drill
-- marks such rows 'aborted' (the report counts them as failed drills).
-- Executed in one transaction with search_path = <dr_schema_name>, pg_temp
-- and ROLE = <dr_schema_owner>. Never edit once applied; add V00N instead.

CREATE TABLE drill_history (
    id                      bigint GENERATED ALWAYS AS IDENTITY,
    drill_id                text        NOT NULL,
    kind                    text        NOT NULL,
    started_at              timestamptz NOT NULL DEFAULT now(),
    finished_at             timestamptz,
    status                  text        NOT NULL DEFAULT 'running',
    rto_seconds             numeric(12, 3),
    rpo_seconds             numeric(12, 3),
    lost_commits            integer,
    objectives_met          boolean,
    operator                text,
    error                   text,
    details                 jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT drill_history_pkey PRIMARY KEY (id),
    CONSTRAINT drill_history_drill_id_key UNIQUE (drill_id),
    CONSTRAINT drill_history_drill_id_check CHECK (btrim(drill_id) <> ''),
    CONSTRAINT drill_history_kind_check CHECK (kind IN ('restore', 'failover', 'region', 'full')),
    CONSTRAINT drill_history_status_check CHECK (status IN ('running', 'passed', 'failed', 'aborted')),
    CONSTRAINT drill_history_time_order_check CHECK (finished_at >= started_at),
    CONSTRAINT drill_history_finished_when_done_check CHECK (status = 'running' OR finished_at IS NOT NULL),
    CONSTRAINT drill_history_passed_check CHECK (status <> 'passed' OR objectives_met),
    CONSTRAINT drill_history_rto_check CHECK (rto_seconds >= 0),
    CONSTRAINT drill_history_rpo_check CHECK (rpo_seconds >= 0),
    CONSTRAINT drill_history_lost_check CHECK (lost_commits >= 0),
    CONSTRAINT drill_history_details_check CHECK (jsonb_typeof(details) = 'object')
);

CREATE INDEX drill_history_started_idx ON drill_history (started_at DESC);
CREATE INDEX drill_history_kind_started_idx ON drill_history (kind, started_at DESC);

COMMENT ON TABLE drill_history IS
    'One row per DR drill with measured RTO/RPO, acknowledged commits lost and the verdict against the objectives.';
COMMENT ON COLUMN drill_history.rto_seconds IS 'Worst RTO measured by the drill''s stages.';
COMMENT ON COLUMN drill_history.rpo_seconds IS 'Worst RPO achieved by the drill''s stages (restore: time not restorable).';
COMMENT ON COLUMN drill_history.lost_commits IS 'Acknowledged commits of the synthetic writers missing on the final primary.';
COMMENT ON COLUMN drill_history.details IS 'Per-stage measurements, objectives and the verdict''s reasons.';

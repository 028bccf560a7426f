-- Commands to meters (issue 9): what was asked, for which meters, who approved it, what each meter
-- did, and the audit trail. The scheduler (gxami_scheduler.command_store) is the only writer.
--
-- Per-meter states: requested -> approved -> queued -> sent -> succeeded | failed | expired, or
-- cancelled before it is queued. "approved" means waiting in the scheduler (for not_before, or for
-- the meter's previous command to finish); "queued" means published on ami.commands. A command's
-- own state summarises its meters' (gxami_scheduler.command_model.summary_state).

CREATE TABLE IF NOT EXISTS commands (
    command_id     text PRIMARY KEY CHECK (length(command_id) BETWEEN 1 AND 64),  -- the client's idempotency key
    kind           text NOT NULL,
    target         jsonb NOT NULL,           -- as asked: {"meters": [...]} or {"group": "..."}
    meter_count    integer NOT NULL CHECK (meter_count >= 1),
    point          text,
    value          jsonb,
    clock          timestamptz,
    options        jsonb NOT NULL DEFAULT '{}'::jsonb,
    body           jsonb,
    content_hash   bytea NOT NULL CHECK (length(content_hash) = 32),  -- SHA-256 of the request's content
    requested_by   text NOT NULL,            -- token name, or system:<what> for the scheduler's own
    requested_from text NOT NULL,            -- the client's address
    requested_at   timestamptz NOT NULL,
    not_before     timestamptz,
    expires_at     timestamptz NOT NULL,
    needs_approval boolean NOT NULL,         -- four eyes: a second operator must approve
    state          text NOT NULL CHECK (state IN
                       ('requested', 'approved', 'queued', 'sent', 'succeeded', 'failed', 'expired', 'cancelled')),
    updated_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_state ON commands (state, requested_at);

CREATE TABLE IF NOT EXISTS command_meters (
    command_id    text NOT NULL REFERENCES commands (command_id) ON DELETE CASCADE,
    meter_id      text NOT NULL,
    state         text NOT NULL CHECK (state IN
                      ('requested', 'approved', 'queued', 'sent', 'succeeded', 'failed', 'expired', 'cancelled')),
    attempt       integer NOT NULL DEFAULT 1,
    result_state  text,                      -- the relay state read back
    read_back     jsonb,                     -- what the collector read back (values, meter clock)
    error_kind    text,
    error_message text,
    collector     text,
    queued_at     timestamptz,
    sent_at       timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (command_id, meter_id)
);
CREATE INDEX IF NOT EXISTS command_meters_meter ON command_meters (meter_id, updated_at DESC);
-- One command at a time per meter: the queue looks for meters with one in flight.
CREATE INDEX IF NOT EXISTS command_meters_active ON command_meters (meter_id) WHERE state IN ('queued', 'sent');
CREATE INDEX IF NOT EXISTS command_meters_waiting ON command_meters (command_id) WHERE state IN ('requested', 'approved');

CREATE TABLE IF NOT EXISTS command_state_history (
    id         bigserial PRIMARY KEY,
    command_id text NOT NULL REFERENCES commands (command_id) ON DELETE CASCADE,
    meter_id   text NOT NULL,
    state      text NOT NULL,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,               -- a token name, system:<what>, or collector:<instance>
    detail     text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS command_state_history_command ON command_state_history (command_id, id);

CREATE TABLE IF NOT EXISTS command_approvals (
    command_id    text NOT NULL REFERENCES commands (command_id) ON DELETE CASCADE,
    approved_by   text NOT NULL,
    approved_from text NOT NULL,
    approved_at   timestamptz NOT NULL,
    PRIMARY KEY (command_id, approved_by)
);

-- The audit trail: one row per meter per final outcome. 0001 created command_audit with one row per
-- command and nothing ever wrote it; it is replaced by this shape (who, what, when, from where,
-- result, read-back).
DROP TABLE IF EXISTS command_audit;
CREATE TABLE command_audit (
    id             bigserial PRIMARY KEY,
    command_id     text NOT NULL,
    meter_id       text NOT NULL,
    kind           text NOT NULL,            -- what
    params         jsonb NOT NULL DEFAULT '{}'::jsonb,
    actor          text NOT NULL,            -- who asked (system:clock-sync for the scheduler itself)
    actor_from     text NOT NULL,            -- from where
    approved_by    text,
    requested_at   timestamptz NOT NULL,     -- when asked
    finished_at    timestamptz NOT NULL,     -- when it ended
    result         text NOT NULL CHECK (result IN ('succeeded', 'failed', 'expired', 'cancelled')),
    result_state   text,
    read_back      jsonb,
    error_kind     text,
    error_message  text,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (command_id, meter_id)
);
CREATE INDEX IF NOT EXISTS command_audit_meter ON command_audit (meter_id, finished_at DESC);
REVOKE ALL ON command_audit FROM PUBLIC;

-- The drift of the meter's clock seen by each read job: meter_time - collector_time.
ALTER TABLE job_results ADD COLUMN IF NOT EXISTS meter_time timestamptz;
ALTER TABLE job_results ADD COLUMN IF NOT EXISTS collector_time timestamptz;
ALTER TABLE job_results ADD COLUMN IF NOT EXISTS clock_drift_s double precision;

-- For BI: every meter's part of every command, with who asked, who approved and how it ended.
-- No content hash, no options: what was asked is kind, point and value.
CREATE OR REPLACE VIEW command_history AS
SELECT c.command_id, cm.meter_id, c.kind, c.point, c.value, c.clock,
       c.requested_by, c.requested_from, c.requested_at,
       (SELECT string_agg(a.approved_by, ',' ORDER BY a.approved_at) FROM command_approvals a
         WHERE a.command_id = c.command_id) AS approved_by,
       c.not_before, c.expires_at, cm.state, cm.result_state, cm.read_back, cm.error_kind, cm.error_message,
       cm.queued_at, cm.sent_at, cm.finished_at
  FROM commands c JOIN command_meters cm ON cm.command_id = c.command_id;
COMMENT ON VIEW command_history IS 'Each meter''s part of each command: who asked, who approved, the outcome and read-back.';

CREATE OR REPLACE FUNCTION gx_grant_bi_reader() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO bi_reader', current_schema());
    GRANT SELECT ON
        interval_consumption, daily_consumption, monthly_consumption, read_completeness, meter_last_seen,
        readings_15m, readings_1h, readings_1d, vee_flag_catalog,
        register_values_typed, meter_register_values,
        command_history
    TO bi_reader;
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bi_reader') THEN
        PERFORM gx_grant_bi_reader();
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'bi_reader not granted command_history (%): SELECT gx_grant_bi_reader() as its owner', SQLERRM;
END $$;

-- Core schema: meter registry, readings, revisions, job results, events, command audit.
-- {readings_storage} is filled in by the migrator: native range partitioning by time without
-- TimescaleDB (partitions are created ahead by the services), a hypertable with it.

CREATE TABLE IF NOT EXISTS meters (
    meter_id        text PRIMARY KEY,
    protocol        text NOT NULL,
    url             text NOT NULL,
    link_id         text NOT NULL,
    profile         text NOT NULL,
    meter_group     text NOT NULL DEFAULT '',
    interval_s      integer NOT NULL CHECK (interval_s >= 60),
    options         jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Scheduling state is kept apart from the registry so a fleet re-import never resets it.
CREATE TABLE IF NOT EXISTS meter_schedule (
    meter_id             text PRIMARY KEY REFERENCES meters(meter_id) ON DELETE CASCADE,
    next_due_at          timestamptz NOT NULL,
    in_flight_job        text,
    in_flight_until      timestamptz,
    in_flight_profile_to timestamptz,
    attempt              integer NOT NULL DEFAULT 0,
    last_success_at      timestamptz,
    last_error_at        timestamptz,
    last_error_kind      text,
    last_error           text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_profile_ts      timestamptz
);
CREATE INDEX IF NOT EXISTS meter_schedule_due ON meter_schedule (next_due_at);

CREATE TABLE IF NOT EXISTS readings (
    meter_id    text NOT NULL,
    quantity    text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    unit        text NOT NULL,
    quality     integer NOT NULL DEFAULT 0,  -- the meter's own status word (VEE flags: vee_flags)
    source_job  text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, quantity, ts)
) {readings_storage};

-- A reading that arrives again with a different value is kept here, never dropped or overwritten.
CREATE TABLE IF NOT EXISTS reading_revisions (
    meter_id    text NOT NULL,
    quantity    text NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    unit        text NOT NULL,
    source_job  text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, quantity, ts, value)
);

CREATE TABLE IF NOT EXISTS job_results (
    job_id         text NOT NULL,
    attempt        integer NOT NULL,
    meter_id       text NOT NULL,
    status         text NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL,
    readings_count integer NOT NULL,
    error_kind     text,
    error_message  text,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX IF NOT EXISTS job_results_meter ON job_results (meter_id, finished_at DESC);

CREATE TABLE IF NOT EXISTS events (
    event_id  text PRIMARY KEY,
    meter_id  text NOT NULL,
    ts        timestamptz NOT NULL,
    kind      text NOT NULL,
    severity  text NOT NULL,
    data      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS events_meter_ts ON events (meter_id, ts DESC);

CREATE TABLE IF NOT EXISTS command_audit (
    command_id    text PRIMARY KEY,
    meter_id      text NOT NULL,
    action        text NOT NULL,
    params        jsonb NOT NULL DEFAULT '{}'::jsonb,
    requested_by  text NOT NULL,
    requested_at  timestamptz NOT NULL,
    status        text NOT NULL DEFAULT 'pending',
    finished_at   timestamptz,
    error_kind    text,
    error_message text
);

-- Non-numeric register values: text (a logical device name, a serial number), bytes (other
-- octet-strings, stored as lowercase hex), bit-strings (status words, as 0/1 text, first bit
-- first) and booleans ('true'/'false'). Numbers stay in readings.value (double precision);
-- these never go there, so VEE rules and the consumption views never see them.
-- Same natural key and columns as readings (quality is the meter's own status word,
-- source_job the job that read it). A redelivered value is a no-op; a value that comes again
-- different is kept in register_value_revisions, never overwriting the first.

CREATE TABLE IF NOT EXISTS register_values (
    meter_id    text NOT NULL,
    quantity    text NOT NULL,
    ts          timestamptz NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('text', 'bytes', 'bits', 'bool')),
    value       text NOT NULL,
    unit        text NOT NULL DEFAULT '',
    quality     integer NOT NULL DEFAULT 0,
    source_job  text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, quantity, ts)
);

CREATE TABLE IF NOT EXISTS register_value_revisions (
    meter_id    text NOT NULL,
    quantity    text NOT NULL,
    ts          timestamptz NOT NULL,
    kind        text NOT NULL,
    value       text NOT NULL,
    source_job  text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, quantity, ts, value)
);

-- Every value of every register, numbers and the rest, typed for SQL: number_value for numbers,
-- text_value for everything (the canonical text), and bytes_value / bool_value / bits_value for
-- their kinds. Filter by meter_id where you can (pushed down to both primary keys).
CREATE OR REPLACE VIEW register_values_typed AS
SELECT r.meter_id, r.quantity, r.ts, 'number'::text AS kind,
       r.value AS number_value,
       r.value::text AS text_value,
       NULL::bytea AS bytes_value,
       NULL::boolean AS bool_value,
       NULL::bit varying AS bits_value,
       r.unit, r.quality
  FROM readings r
UNION ALL
SELECT v.meter_id, v.quantity, v.ts, v.kind,
       NULL::double precision,
       v.value,
       CASE WHEN v.kind = 'bytes' THEN decode(v.value, 'hex') END,
       CASE WHEN v.kind = 'bool' THEN v.value::boolean END,
       CASE WHEN v.kind = 'bits' THEN v.value::bit varying END,
       v.unit, v.quality
  FROM register_values v;

COMMENT ON VIEW register_values_typed IS
  'Every register value, numeric (readings) and not (register_values: text, bytes, bits, booleans), typed.';

-- The newest non-numeric value of each register of each meter: its logical device name, serial
-- number, firmware version, last status word.
CREATE OR REPLACE VIEW meter_register_values AS
SELECT DISTINCT ON (v.meter_id, v.quantity)
       v.meter_id, v.quantity, v.ts, v.kind, v.value AS text_value,
       CASE WHEN v.kind = 'bytes' THEN decode(v.value, 'hex') END AS bytes_value,
       CASE WHEN v.kind = 'bool' THEN v.value::boolean END AS bool_value,
       CASE WHEN v.kind = 'bits' THEN v.value::bit varying END AS bits_value,
       v.unit
  FROM register_values v
 ORDER BY v.meter_id, v.quantity, v.ts DESC;

COMMENT ON VIEW meter_register_values IS
  'The newest text, bytes, bit-string or boolean value of each register of each meter.';

CREATE OR REPLACE FUNCTION gx_grant_bi_reader() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO bi_reader', current_schema());
    GRANT SELECT ON
        interval_consumption, daily_consumption, monthly_consumption, read_completeness, meter_last_seen,
        readings_15m, readings_1h, readings_1d, vee_flag_catalog,
        register_values_typed, meter_register_values
    TO bi_reader;
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bi_reader') THEN
        PERFORM gx_grant_bi_reader();
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'bi_reader not granted the value views (%): SELECT gx_grant_bi_reader() as its owner', SQLERRM;
END $$;

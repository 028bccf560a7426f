-- VEE (validation, estimation, editing): per-reading flags, per-quantity rules, meter channels,
-- meter replacements, and the register arithmetic every view shares. Meaning of every flag and
-- column: docs/data-dictionary.md.
--
-- Flags live in their own column, readings.vee_flags, not in readings.quality: quality carries the
-- meter's own status word as delivered, vee_flags what gxami concluded about the value. Bits:
--      1 ESTIMATED              value made by estimation, not measured (replaced when the real one arrives)
--      2 GAP_BEFORE             interval data missing between the previous measured reading and this one
--      4 SPIKE                  consumption (or instantaneous value) far above recent history
--      8 NEGATIVE_CONSUMPTION   a cumulative register went down (not a rollover, no recorded replacement)
--     16 ROLLOVER               the register wrapped past its maximum; consumption counted across the wrap
--     32 METER_REPLACED         a meter replacement lies between the previous reading and this one
--     64 TIME_FUTURE            stamped later than it arrived (beyond the tolerance)
--    128 TIME_PAST              stamped long before it arrived
--    256 CLOCK_DRIFT            the meter's clock was off by more than allowed when this was recorded
--    512 CONFLICTING_DUPLICATE  the same meter, quantity and time arrived again with another value
-- Bit 15 is never used (smallint sign).

ALTER TABLE readings ADD COLUMN IF NOT EXISTS vee_flags smallint NOT NULL DEFAULT 0;

-- The VEE pass looks for readings received since its last run. Rows are appended in arrival
-- order, so a BRIN index on received_at is tiny and finds them without a second B-tree on the
-- hot write path.
CREATE INDEX IF NOT EXISTS readings_received_at_brin ON readings USING brin (received_at);
CREATE INDEX IF NOT EXISTS reading_revisions_received_at ON reading_revisions (received_at);

-- What each quantity is and how it is checked.
CREATE TABLE IF NOT EXISTS vee_rules (
    quantity         text PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('cumulative', 'instant', 'clock')),
    unit             text NOT NULL,
    interval_s       integer CHECK (interval_s IS NULL OR interval_s > 0),
    spike_factor     double precision CHECK (spike_factor IS NULL OR spike_factor > 1),
    spike_floor      double precision NOT NULL DEFAULT 0 CHECK (spike_floor >= 0),
    register_modulus double precision CHECK (register_modulus IS NULL OR register_modulus > 0),
    estimate         boolean NOT NULL DEFAULT true,
    description      text NOT NULL DEFAULT ''
);

INSERT INTO vee_rules (quantity, kind, unit, interval_s, spike_factor, spike_floor, estimate, description) VALUES
    ('1-0:1.8.0', 'cumulative', 'kWh', 900,  10, 1,  true,  'active energy import, total'),
    ('1-0:2.8.0', 'cumulative', 'kWh', 900,  10, 1,  true,  'active energy export, total'),
    ('1-0:1.8.1', 'cumulative', 'kWh', NULL, 10, 1,  false, 'active energy import, tariff 1'),
    ('1-0:1.8.2', 'cumulative', 'kWh', NULL, 10, 1,  false, 'active energy import, tariff 2'),
    ('1-0:1.8.3', 'cumulative', 'kWh', NULL, 10, 1,  false, 'active energy import, tariff 3'),
    ('1-0:1.8.4', 'cumulative', 'kWh', NULL, 10, 1,  false, 'active energy import, tariff 4'),
    ('1-0:2.8.1', 'cumulative', 'kWh', NULL, 10, 1,  false, 'active energy export, tariff 1'),
    ('1-0:2.8.2', 'cumulative', 'kWh', NULL, 10, 1,  false, 'active energy export, tariff 2'),
    ('1-0:1.7.0', 'instant',    'kW',  NULL, 10, 10, false, 'active power import'),
    ('1-0:2.7.0', 'instant',    'kW',  NULL, 10, 10, false, 'active power export'),
    ('7-0:3.0.0', 'cumulative', 'm3',  3600, 10, 1,  true,  'gas volume'),
    ('8-0:1.0.0', 'cumulative', 'm3',  NULL, 10, 1,  false, 'water volume'),
    ('6-0:1.0.0', 'cumulative', 'kWh', NULL, 10, 10, false, 'heat energy'),
    ('0-0:1.0.0', 'clock',      's',   NULL, NULL, 0, false, 'meter clock (value: offset in s, or unix_s)')
ON CONFLICT (quantity) DO NOTHING;

-- Per meter overrides of the rule: the load-profile period (0: this meter has no interval data for
-- the quantity) and the register's modulus (where it wraps, e.g. 1000000 for 6 integer digits).
CREATE TABLE IF NOT EXISTS meter_channels (
    meter_id         text NOT NULL,
    quantity         text NOT NULL,
    interval_s       integer CHECK (interval_s IS NULL OR interval_s >= 0),
    register_modulus double precision CHECK (register_modulus IS NULL OR register_modulus > 0),
    PRIMARY KEY (meter_id, quantity)
);

-- A meter exchanged at a service point: registers restart. quantity '*' means every register.
CREATE TABLE IF NOT EXISTS meter_replacements (
    meter_id     text NOT NULL,
    quantity     text NOT NULL DEFAULT '*',
    replaced_at  timestamptz NOT NULL,
    old_final    double precision,
    new_initial  double precision,
    note         text NOT NULL DEFAULT '',
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, quantity, replaced_at)
);

-- Where the periodic VEE pass got to (readings received before this are validated).
CREATE TABLE IF NOT EXISTS vee_state (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    validated_to  timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Register arithmetic. Pure SQL functions without table access: the planner inlines them, and a
-- role that may only read views can still call them.

-- Where a register wraps: the configured modulus, else the next power of ten above the value.
CREATE OR REPLACE FUNCTION register_modulus(prev double precision, configured double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(configured, CASE WHEN prev >= 1 THEN power(10::double precision, floor(log(prev)) + 1) END)
$$;

-- A fall from prev to cur is a rollover when counting on past the modulus explains it with at
-- most 1 % of the register's span: 999999.99 -> 0.50 (modulus 1e6) is 0.51 kWh, while
-- 6000 -> 3 (modulus 1e4) would be 4003 kWh and so is a negative step, not a wrap.
CREATE OR REPLACE FUNCTION register_wraps(prev double precision, cur double precision, modulus double precision)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(cur < prev AND cur >= 0
                    AND cur + register_modulus(prev, modulus) - prev >= 0
                    AND cur + register_modulus(prev, modulus) - prev <= 0.01 * register_modulus(prev, modulus),
                    false)
$$;

-- Consumption between two readings of one register, counted across a rollover.
CREATE OR REPLACE FUNCTION register_delta(prev double precision, cur double precision, modulus double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN register_wraps(prev, cur, modulus) THEN cur + register_modulus(prev, modulus) - prev
                ELSE cur - prev END
$$;

-- Consumption between two readings when a meter replacement may lie between them: what the old
-- meter counted after prev (old_final - prev; 0 when its final reading is unknown) plus what the
-- new one counted (cur - new_initial; its initial reading is 0 when unknown).
CREATE OR REPLACE FUNCTION register_consumption(
    prev double precision, cur double precision, modulus double precision,
    replaced boolean, old_final double precision, new_initial double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN replaced THEN (COALESCE(old_final, prev) - prev) + (cur - COALESCE(new_initial, 0))
                ELSE register_delta(prev, cur, modulus) END
$$;

-- The flag catalog, as a view so that BI can decode vee_flags without table access.
CREATE OR REPLACE VIEW vee_flag_catalog AS
SELECT bit::smallint AS bit, name, severity, meaning
  FROM (VALUES
    (1,   'ESTIMATED',             'estimate', 'value made by linear interpolation over a gap; replaced when the real value arrives'),
    (2,   'GAP_BEFORE',            'info',     'interval readings are missing between the previous measured reading and this one'),
    (4,   'SPIKE',                 'suspect',  'consumption rate (or instantaneous value) above spike_factor times the recent average and above spike_floor'),
    (8,   'NEGATIVE_CONSUMPTION',  'suspect',  'a cumulative register went down, and neither a rollover nor a recorded meter replacement explains it'),
    (16,  'ROLLOVER',              'info',     'the register wrapped past its modulus; consumption is counted across the wrap'),
    (32,  'METER_REPLACED',        'info',     'a meter replacement lies between the previous reading and this one; consumption uses old_final/new_initial'),
    (64,  'TIME_FUTURE',           'suspect',  'stamped later than the moment it was stored, beyond the tolerance'),
    (128, 'TIME_PAST',             'suspect',  'stamped long before the moment it was stored'),
    (256, 'CLOCK_DRIFT',           'suspect',  'the meter reported a clock deviation above the limit at or after this reading'),
    (512, 'CONFLICTING_DUPLICATE', 'suspect',  'the same meter, quantity and time arrived with another value (kept in reading_revisions)')
  ) AS f(bit, name, severity, meaning);

-- Names of the bits set in a flags value, e.g. {SPIKE,CLOCK_DRIFT}.
CREATE OR REPLACE FUNCTION vee_flag_names(flags integer)
RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(array_agg(name ORDER BY bit), '{}'::text[])
      FROM (VALUES (1, 'ESTIMATED'), (2, 'GAP_BEFORE'), (4, 'SPIKE'), (8, 'NEGATIVE_CONSUMPTION'),
                   (16, 'ROLLOVER'), (32, 'METER_REPLACED'), (64, 'TIME_FUTURE'), (128, 'TIME_PAST'),
                   (256, 'CLOCK_DRIFT'), (512, 'CONFLICTING_DUPLICATE')) AS f(bit, name)
     WHERE flags & bit <> 0
$$;

-- The quality word the BI views show for a set of flags.
CREATE OR REPLACE FUNCTION vee_quality(flags integer)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN flags & 1 <> 0 THEN 'estimated'
                WHEN flags & (4 | 8 | 64 | 128 | 256 | 512) <> 0 THEN 'suspect'
                ELSE 'measured' END
$$;

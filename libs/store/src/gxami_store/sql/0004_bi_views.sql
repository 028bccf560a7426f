-- Stable views for BI (documented column by column in docs/data-dictionary.md). The same SQL on
-- TimescaleDB and on plain PostgreSQL. They read the readings table directly, so they are never
-- stale; filter by meter_id where you can (it is pushed down to the primary key).
--
-- Conventions: times are UTC; a day or month is a UTC day or month; load-profile values are
-- cumulative registers stamped at the END of their interval, so a reading stamped exactly at
-- midnight (or at the first instant of a month) closes the previous day (month).
-- quality is 'estimated' when an estimate is involved, 'suspect' when a VEE rule flagged a
-- reading, else 'measured' (function vee_quality).

-- One row per load-profile interval of a cumulative register: two readings exactly one interval
-- apart, on the interval grid. Missing intervals have no row (see read_completeness).
CREATE OR REPLACE VIEW interval_consumption AS
SELECT r.meter_id,
       r.quantity,
       r.unit,
       p.ts AS interval_start,
       r.ts AS interval_end,
       register_consumption(p.value, r.value, COALESCE(c.register_modulus, q.register_modulus),
                            x.replaced_at IS NOT NULL, x.old_final, x.new_initial) AS consumption,
       vee_quality(r.vee_flags | (p.vee_flags & 1)) AS quality,
       (r.vee_flags | (p.vee_flags & 1))::smallint AS vee_flags
  FROM readings r
  JOIN vee_rules q ON q.quantity = r.quantity AND q.kind = 'cumulative'
  LEFT JOIN meter_channels c ON c.meter_id = r.meter_id AND c.quantity = r.quantity
  JOIN readings p ON p.meter_id = r.meter_id AND p.quantity = r.quantity
                 AND p.ts = r.ts - make_interval(secs => NULLIF(COALESCE(c.interval_s, q.interval_s), 0))
  LEFT JOIN LATERAL (
        SELECT m.replaced_at, m.old_final, m.new_initial
          FROM meter_replacements m
         WHERE m.meter_id = r.meter_id AND m.quantity IN (r.quantity, '*')
           AND m.replaced_at > p.ts AND m.replaced_at <= r.ts
         ORDER BY m.replaced_at
         LIMIT 1) x ON true
 WHERE mod(extract(epoch FROM r.ts), NULLIF(COALESCE(c.interval_s, q.interval_s), 0)) = 0;

COMMENT ON VIEW interval_consumption IS
  'Consumption per load-profile interval of each cumulative register (kWh, m3), with its quality.';

-- Same columns and meaning as in 0002 (meter_id, day, kwh, readings), now counted across
-- register rollovers and recorded meter replacements, with the UTC day independent of the
-- session time zone, and two columns added at the end.
DROP VIEW IF EXISTS daily_consumption;
CREATE VIEW daily_consumption AS
WITH days AS (
    SELECT meter_id,
           ((ts - interval '1 microsecond') AT TIME ZONE 'UTC')::date AS day,
           max(ts) AS end_ts,
           count(*) AS readings,
           count(*) FILTER (WHERE vee_flags & 1 <> 0) AS estimated,
           bit_or(vee_flags) AS flags
      FROM readings
     WHERE quantity = '1-0:1.8.0'
     GROUP BY 1, 2
), ends AS (
    SELECT d.meter_id, d.day, d.end_ts, d.readings, d.estimated, d.flags,
           e.value AS end_kwh,
           e.vee_flags AS end_flags,
           lag(d.day) OVER w AS prev_day,
           lag(d.end_ts) OVER w AS start_ts,
           lag(e.value) OVER w AS start_kwh,
           lag(e.vee_flags) OVER w AS start_flags
      FROM days d
      JOIN readings e ON e.meter_id = d.meter_id AND e.quantity = '1-0:1.8.0' AND e.ts = d.end_ts
    WINDOW w AS (PARTITION BY d.meter_id ORDER BY d.day)
)
SELECT e.meter_id,
       e.day,
       register_consumption(e.start_kwh, e.end_kwh, COALESCE(c.register_modulus, q.register_modulus),
                            x.replaced_at IS NOT NULL, x.old_final, x.new_initial) AS kwh,
       e.readings,
       e.estimated,
       vee_quality((e.flags & ~1) | ((e.start_flags | e.end_flags) & 1)) AS quality
  FROM ends e
  LEFT JOIN vee_rules q ON q.quantity = '1-0:1.8.0'
  LEFT JOIN meter_channels c ON c.meter_id = e.meter_id AND c.quantity = '1-0:1.8.0'
  LEFT JOIN LATERAL (
        SELECT m.replaced_at, m.old_final, m.new_initial
          FROM meter_replacements m
         WHERE m.meter_id = e.meter_id AND m.quantity IN ('1-0:1.8.0', '*')
           AND m.replaced_at > e.start_ts AND m.replaced_at <= e.end_ts
         ORDER BY m.replaced_at
         LIMIT 1) x ON true
 WHERE e.prev_day = e.day - 1;

COMMENT ON VIEW daily_consumption IS
  'Energy imported per meter and UTC day (kWh): register at the end of the day minus at its start.';

-- Billing determinants: every cumulative register (total and time-of-use tariff registers such as
-- 1-0:1.8.1 / 1-0:1.8.2, export, gas, water) per meter and UTC month, from the register the meter
-- itself reports: the last reading at or before the month's end minus the last one at or before
-- its start (or, for a meter's first month, its first reading in the month: partial = true).
CREATE OR REPLACE VIEW monthly_consumption AS
WITH months AS (
    SELECT r.meter_id,
           r.quantity,
           date_trunc('month', (r.ts - interval '1 microsecond') AT TIME ZONE 'UTC')::date AS month,
           min(r.ts) AS first_ts,
           max(r.ts) AS last_ts,
           count(*) AS readings,
           bit_or(r.vee_flags) AS flags
      FROM readings r
      JOIN vee_rules q ON q.quantity = r.quantity AND q.kind = 'cumulative'
     GROUP BY 1, 2, 3
), ends AS (
    SELECT m.meter_id, m.quantity, m.month, m.first_ts, m.last_ts, m.readings, m.flags,
           l.value AS end_value,
           l.unit,
           l.vee_flags AS end_flags,
           f.value AS first_value,
           f.vee_flags AS first_flags,
           lag(m.last_ts) OVER w AS prev_ts,
           lag(l.value) OVER w AS prev_value,
           lag(l.vee_flags) OVER w AS prev_flags
      FROM months m
      JOIN readings l ON l.meter_id = m.meter_id AND l.quantity = m.quantity AND l.ts = m.last_ts
      JOIN readings f ON f.meter_id = m.meter_id AND f.quantity = m.quantity AND f.ts = m.first_ts
    WINDOW w AS (PARTITION BY m.meter_id, m.quantity ORDER BY m.month)
), spans AS (
    SELECT e.*,
           COALESCE(e.prev_ts, e.first_ts) AS start_ts,
           COALESCE(e.prev_value, e.first_value) AS start_value,
           COALESCE(e.prev_flags, e.first_flags) AS start_flags
      FROM ends e
)
SELECT s.meter_id,
       s.month,
       s.quantity,
       CASE substring(s.quantity FROM '^1-[0-9]+:([0-9]+)\.') WHEN '1' THEN 'import' WHEN '2' THEN 'export' END
           AS direction,
       substring(s.quantity FROM '^[0-9]+-[0-9]+:[0-9]+\.[0-9]+\.([0-9]+)$')::integer AS tariff,
       s.unit,
       s.start_ts,
       s.start_value,
       s.last_ts AS end_ts,
       s.end_value,
       register_consumption(s.start_value, s.end_value, COALESCE(c.register_modulus, q.register_modulus),
                            x.replaced_at IS NOT NULL, x.old_final, x.new_initial) AS consumption,
       s.prev_ts IS NULL AS partial,
       s.readings,
       vee_quality((s.flags & ~1) | ((s.start_flags | s.end_flags) & 1)) AS quality
  FROM spans s
  LEFT JOIN vee_rules q ON q.quantity = s.quantity
  LEFT JOIN meter_channels c ON c.meter_id = s.meter_id AND c.quantity = s.quantity
  LEFT JOIN LATERAL (
        SELECT m.replaced_at, m.old_final, m.new_initial
          FROM meter_replacements m
         WHERE m.meter_id = s.meter_id AND m.quantity IN (s.quantity, '*')
           AND m.replaced_at > s.start_ts AND m.replaced_at <= s.last_ts
         ORDER BY m.replaced_at
         LIMIT 1) x ON true;

COMMENT ON VIEW monthly_consumption IS
  'Billing determinants per meter, UTC month and register (total and time-of-use tariffs).';

-- Per meter, interval-data register and UTC day: intervals expected vs received. Days run from the
-- meter's first reading to now (to its last reading for meters disabled or not in the registry),
-- so a day without any reading shows up with received = 0.
CREATE OR REPLACE VIEW read_completeness AS
WITH spans AS (
    SELECT meter_id, quantity, min(ts) AS first_ts, max(ts) AS last_ts
      FROM readings
     GROUP BY 1, 2
), channels AS (
    SELECT s.meter_id, s.quantity, s.first_ts,
           NULLIF(COALESCE(c.interval_s, q.interval_s), 0) AS interval_s,
           CASE WHEN COALESCE(m.enabled, false) THEN greatest(now(), s.last_ts) ELSE s.last_ts END AS until_ts
      FROM spans s
      JOIN vee_rules q ON q.quantity = s.quantity
      LEFT JOIN meter_channels c ON c.meter_id = s.meter_id AND c.quantity = s.quantity
      LEFT JOIN meters m ON m.meter_id = s.meter_id
), days AS (
    SELECT ch.meter_id, ch.quantity, ch.interval_s, ch.first_ts, ch.until_ts,
           g.day::date AS day,
           extract(epoch FROM g.day AT TIME ZONE 'UTC') AS day_s
      FROM channels ch
     CROSS JOIN LATERAL generate_series(
               ((ch.first_ts - interval '1 microsecond') AT TIME ZONE 'UTC')::date::timestamp,
               ((ch.until_ts - interval '1 microsecond') AT TIME ZONE 'UTC')::date::timestamp,
               interval '1 day') AS g(day)
     WHERE ch.interval_s IS NOT NULL
), counts AS (
    SELECT r.meter_id, r.quantity,
           ((r.ts - interval '1 microsecond') AT TIME ZONE 'UTC')::date AS day,
           count(*) FILTER (WHERE r.vee_flags & 1 = 0) AS received,
           count(*) FILTER (WHERE r.vee_flags & 1 <> 0) AS estimated
      FROM readings r
      JOIN channels ch ON ch.meter_id = r.meter_id AND ch.quantity = r.quantity
     WHERE ch.interval_s IS NOT NULL AND mod(extract(epoch FROM r.ts), ch.interval_s) = 0
     GROUP BY 1, 2, 3
), expected AS (
    -- interval ends t = day + k * interval_s (k = 1 .. 86400 / interval_s) with first_ts <= t <= until_ts
    SELECT d.meter_id, d.quantity, d.day, d.interval_s,
           greatest(0,
               floor((least(d.day_s + 86400, extract(epoch FROM d.until_ts)) - d.day_s) / d.interval_s)
               - greatest(1, ceil((extract(epoch FROM d.first_ts) - d.day_s) / d.interval_s)) + 1)::integer
               AS expected
      FROM days d
)
SELECT e.meter_id,
       e.quantity,
       e.day,
       e.interval_s,
       e.expected,
       COALESCE(n.received, 0)::integer AS received,
       COALESCE(n.estimated, 0)::integer AS estimated,
       greatest(e.expected - COALESCE(n.received, 0) - COALESCE(n.estimated, 0), 0)::integer AS missing,
       round(COALESCE(n.received, 0)::numeric / NULLIF(e.expected, 0), 4) AS completeness
  FROM expected e
  LEFT JOIN counts n ON n.meter_id = e.meter_id AND n.quantity = e.quantity AND n.day = e.day;

COMMENT ON VIEW read_completeness IS
  'Per meter, interval-data register and UTC day: load-profile intervals expected, received, estimated, missing.';

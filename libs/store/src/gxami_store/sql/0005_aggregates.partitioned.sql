-- Roll-ups of readings at 15 minutes, 1 hour and 1 day: materialized views on plain PostgreSQL,
-- refreshed on a schedule by gxami_store.aggregates.refresh_aggregates. The TimescaleDB twin
-- (0005_aggregates.timescaledb.sql) builds continuous aggregates with the same names and columns.
-- Buckets follow the interval-ending convention: a bucket covers (interval_start, interval_end],
-- so the reading stamped at 10:15 falls in 10:00-10:15 (the origin 1 microsecond past midnight).

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_15m AS
SELECT meter_id,
       quantity,
       b - interval '1 microsecond' AS interval_start,
       b - interval '1 microsecond' + interval '15 minutes' AS interval_end,
       count(*) AS readings,
       min(ts) AS first_ts,
       (array_agg(value ORDER BY ts))[1] AS first_value,
       max(ts) AS last_ts,
       (array_agg(value ORDER BY ts DESC))[1] AS last_value,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*) FILTER (WHERE vee_flags & 1 <> 0) AS estimated,
       bit_or(vee_flags) AS vee_flags
  FROM readings
 CROSS JOIN LATERAL (SELECT date_bin(interval '15 minutes', ts, timestamptz '2000-01-01 00:00:00.000001+00') AS b) x
 GROUP BY meter_id, quantity, b;

-- REFRESH ... CONCURRENTLY needs a unique index; readers are never blocked by a refresh.
CREATE UNIQUE INDEX IF NOT EXISTS readings_15m_key ON readings_15m (meter_id, quantity, interval_start);

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1h AS
SELECT meter_id,
       quantity,
       b - interval '1 microsecond' AS interval_start,
       b - interval '1 microsecond' + interval '1 hour' AS interval_end,
       count(*) AS readings,
       min(ts) AS first_ts,
       (array_agg(value ORDER BY ts))[1] AS first_value,
       max(ts) AS last_ts,
       (array_agg(value ORDER BY ts DESC))[1] AS last_value,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*) FILTER (WHERE vee_flags & 1 <> 0) AS estimated,
       bit_or(vee_flags) AS vee_flags
  FROM readings
 CROSS JOIN LATERAL (SELECT date_bin(interval '1 hour', ts, timestamptz '2000-01-01 00:00:00.000001+00') AS b) x
 GROUP BY meter_id, quantity, b;

-- REFRESH ... CONCURRENTLY needs a unique index; readers are never blocked by a refresh.
CREATE UNIQUE INDEX IF NOT EXISTS readings_1h_key ON readings_1h (meter_id, quantity, interval_start);

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1d AS
SELECT meter_id,
       quantity,
       b - interval '1 microsecond' AS interval_start,
       b - interval '1 microsecond' + interval '1 day' AS interval_end,
       count(*) AS readings,
       min(ts) AS first_ts,
       (array_agg(value ORDER BY ts))[1] AS first_value,
       max(ts) AS last_ts,
       (array_agg(value ORDER BY ts DESC))[1] AS last_value,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*) FILTER (WHERE vee_flags & 1 <> 0) AS estimated,
       bit_or(vee_flags) AS vee_flags
  FROM readings
 CROSS JOIN LATERAL (SELECT date_bin(interval '1 day', ts, timestamptz '2000-01-01 00:00:00.000001+00') AS b) x
 GROUP BY meter_id, quantity, b;

-- REFRESH ... CONCURRENTLY needs a unique index; readers are never blocked by a refresh.
CREATE UNIQUE INDEX IF NOT EXISTS readings_1d_key ON readings_1d (meter_id, quantity, interval_start);

-- Roll-ups of readings at 15 minutes, 1 hour and 1 day: TimescaleDB continuous aggregates.
-- The plain-PostgreSQL twin (0005_aggregates.partitioned.sql) builds materialized views with the
-- same names and columns. Buckets follow the interval-ending convention: a bucket covers
-- (interval_start, interval_end], so the reading stamped at 10:15 falls in 10:00-10:15. That is
-- what the 1-microsecond offset does.
--
-- Also here: compression of the readings hypertable, segmented by meter. The policy created here
-- compresses chunks older than 60 days; gxami_store.timescale.apply_storage_policy moves it to the
-- configured back-fill horizon (inserts into compressed chunks are slow: TimescaleDB #6063, #8400)
-- and adds the retention policy.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                    WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'
                      AND compression_enabled) THEN
        ALTER TABLE readings SET (timescaledb.compress,
                                  timescaledb.compress_segmentby = 'meter_id',
                                  timescaledb.compress_orderby = 'quantity, ts');
    END IF;
END $$;

SELECT add_compression_policy('readings', compress_after => interval '60 days', if_not_exists => true);

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_15m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT meter_id,
       quantity,
       time_bucket(interval '15 minutes', ts, "offset" => interval '1 microsecond') - interval '1 microsecond' AS interval_start,
       time_bucket(interval '15 minutes', ts, "offset" => interval '1 microsecond') - interval '1 microsecond' + interval '15 minutes' AS interval_end,
       count(*) AS readings,
       min(ts) AS first_ts,
       first(value, ts) AS first_value,
       max(ts) AS last_ts,
       last(value, ts) AS last_value,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*) FILTER (WHERE vee_flags & 1 <> 0) AS estimated,
       bit_or(vee_flags) AS vee_flags
  FROM readings
 GROUP BY meter_id, quantity, time_bucket(interval '15 minutes', ts, "offset" => interval '1 microsecond')
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_15m',
    start_offset => interval '60 days', end_offset => interval '15 minutes',
    schedule_interval => interval '15 minutes', if_not_exists => true);

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT meter_id,
       quantity,
       time_bucket(interval '1 hour', ts, "offset" => interval '1 microsecond') - interval '1 microsecond' AS interval_start,
       time_bucket(interval '1 hour', ts, "offset" => interval '1 microsecond') - interval '1 microsecond' + interval '1 hour' AS interval_end,
       count(*) AS readings,
       min(ts) AS first_ts,
       first(value, ts) AS first_value,
       max(ts) AS last_ts,
       last(value, ts) AS last_value,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*) FILTER (WHERE vee_flags & 1 <> 0) AS estimated,
       bit_or(vee_flags) AS vee_flags
  FROM readings
 GROUP BY meter_id, quantity, time_bucket(interval '1 hour', ts, "offset" => interval '1 microsecond')
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_1h',
    start_offset => interval '60 days', end_offset => interval '1 hour',
    schedule_interval => interval '15 minutes', if_not_exists => true);

CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT meter_id,
       quantity,
       time_bucket(interval '1 day', ts, "offset" => interval '1 microsecond') - interval '1 microsecond' AS interval_start,
       time_bucket(interval '1 day', ts, "offset" => interval '1 microsecond') - interval '1 microsecond' + interval '1 day' AS interval_end,
       count(*) AS readings,
       min(ts) AS first_ts,
       first(value, ts) AS first_value,
       max(ts) AS last_ts,
       last(value, ts) AS last_value,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*) FILTER (WHERE vee_flags & 1 <> 0) AS estimated,
       bit_or(vee_flags) AS vee_flags
  FROM readings
 GROUP BY meter_id, quantity, time_bucket(interval '1 day', ts, "offset" => interval '1 microsecond')
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_1d',
    start_offset => interval '60 days', end_offset => interval '1 day',
    schedule_interval => interval '1 hour', if_not_exists => true);

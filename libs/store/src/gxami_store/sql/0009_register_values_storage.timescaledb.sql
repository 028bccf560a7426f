-- On TimescaleDB register_values is a hypertable like readings (chunks by time), so that its
-- index stays small as years of values pile up. Created empty just before (0008).
SELECT create_hypertable('register_values', 'ts', chunk_time_interval => interval '30 days',
                         if_not_exists => true, migrate_data => true);

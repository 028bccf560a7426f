-- One spelling of each field from the driver to the row: the meter's status word is `status` and
-- the read job is `job_id`, as in gxcore's Reading and the Kafka contract (the instant was `ts`
-- already). Until now the database said `quality` and `source_job`.
--
-- The same SQL on both storages:
-- * plain PostgreSQL: RENAME COLUMN on the partitioned readings table renames the column of
--   every partition with it (a partition cannot rename an inherited column on its own);
-- * TimescaleDB: RENAME COLUMN on a hypertable renames it in every chunk, compressed ones
--   included. The roll-ups (materialized views, continuous aggregates) read neither column.
-- A rename changes only the catalog: no row is rewritten, whatever the table's size.
--
-- Safe to run twice: each rename happens only while the old name is still there (migrate()
-- also runs each migration once, under its advisory lock). The ingest staging table is a
-- temporary table created by each session with the new names; nothing persistent to rename.

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT * FROM (VALUES
            ('readings',                 'quality',    'status'),
            ('readings',                 'source_job', 'job_id'),
            ('reading_revisions',        'source_job', 'job_id'),
            ('register_values',          'quality',    'status'),
            ('register_values',          'source_job', 'job_id'),
            ('register_value_revisions', 'source_job', 'job_id')
        ) AS t(tab, old_name, new_name)
    LOOP
        IF EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = to_regclass(r.tab) AND attname = r.old_name AND NOT attisdropped) THEN
            EXECUTE format('ALTER TABLE %I RENAME COLUMN %I TO %I', r.tab, r.old_name, r.new_name);
        END IF;
    END LOOP;

    -- A view keeps its output names when a base column is renamed. register_values_typed showed
    -- the meter's status word as `quality`; it now shows `status`. ALTER VIEW ... RENAME COLUMN
    -- keeps the view itself, so bi_reader's grant on it and anything built on it stay.
    -- (The `quality` of interval_consumption, daily_consumption and monthly_consumption is another
    -- thing, gxami's VEE verdict measured/estimated/suspect, and keeps its name.)
    IF EXISTS (SELECT 1 FROM pg_attribute
                WHERE attrelid = to_regclass('register_values_typed') AND attname = 'quality'
                  AND NOT attisdropped) THEN
        ALTER VIEW register_values_typed RENAME COLUMN quality TO status;
    END IF;
END $$;

COMMENT ON COLUMN readings.status IS
  'The meter''s own status word as delivered (0 when it sends none); VEE conclusions are in vee_flags.';
COMMENT ON COLUMN readings.job_id IS
  'The read job that delivered this reading, or ''vee:estimate'' for an estimate.';
COMMENT ON COLUMN register_values.status IS 'The meter''s own status word as delivered (0 when it sends none).';
COMMENT ON COLUMN register_values.job_id IS 'The read job that delivered this value.';

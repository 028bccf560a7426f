-- bi_reader: a read-only group role for BI tools. It may SELECT the documented views and nothing
-- else: no table, not readings, not meters. The views run with their owner's rights, so they
-- still read the tables. Give people access with GRANT bi_reader TO <login role>.
--
-- Roles belong to the whole cluster, so creating it must tolerate other databases of the same
-- cluster doing the same at the same moment, and a migrating role without CREATEROLE (managed
-- PostgreSQL): then a DBA creates bi_reader and runs SELECT gx_grant_bi_reader() once.

CREATE OR REPLACE FUNCTION gx_grant_bi_reader() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO bi_reader', current_schema());
    GRANT SELECT ON
        interval_consumption, daily_consumption, monthly_consumption, read_completeness, meter_last_seen,
        readings_15m, readings_1h, readings_1d, vee_flag_catalog
    TO bi_reader;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bi_reader') THEN
        BEGIN
            CREATE ROLE bi_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created by a migration of another database of this cluster just now
        END;
    END IF;
    PERFORM gx_grant_bi_reader();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'bi_reader not created or not granted (%): create the role, then SELECT gx_grant_bi_reader()',
        SQLERRM;
END $$;

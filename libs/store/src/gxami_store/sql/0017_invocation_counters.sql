-- DLMS invocation counters for collectors on many pods (gxami_collector.counter_store).
--
-- One row per (meter, client address, client system title, key generation): next_counter is
-- the next counter never handed out. A collector reserves a window with one atomic
-- INSERT ... ON CONFLICT DO UPDATE ... RETURNING (the row lock orders concurrent reservations),
-- so two pods never get one window and a crash only wastes the rest of its window. The key
-- generation is a fingerprint of the meter's keys, never a key: new keys start a new row.
-- window_start is the start of the last window handed out (what RETURNING gives back).

CREATE TABLE IF NOT EXISTS invocation_counters (
    meter          text        NOT NULL,
    client_address integer     NOT NULL CHECK (client_address BETWEEN 0 AND 65535),
    system_title   text        NOT NULL CHECK (system_title ~ '^[0-9a-f]{16}$'),
    key_generation text        NOT NULL CHECK (key_generation ~ '^[0-9a-f]{16}$'),
    next_counter   bigint      NOT NULL CHECK (next_counter BETWEEN 0 AND 4294967296),
    window_start   bigint      NOT NULL CHECK (window_start BETWEEN 0 AND 4294967295),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter, client_address, system_title, key_generation),
    CHECK (window_start < next_counter)
);

-- gxami_collector: the collector's own least-privilege group role. It may read and reserve
-- counters and nothing else (no readings, no meters, no tokens). Give a login role to the
-- collector with GRANT gxami_collector TO <login role>. Created the way 0006 creates bi_reader:
-- tolerant of other databases of the cluster doing the same, and of a role without CREATEROLE
-- (then a DBA creates it and runs SELECT gx_grant_collector() once).

CREATE OR REPLACE FUNCTION gx_grant_collector() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO gxami_collector', current_schema());
    GRANT SELECT, INSERT, UPDATE ON invocation_counters TO gxami_collector;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gxami_collector') THEN
        BEGIN
            CREATE ROLE gxami_collector NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created by a migration of another database of this cluster just now
        END;
    END IF;
    PERFORM gx_grant_collector();
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'gxami_collector not created or not granted (%): create the role, then SELECT gx_grant_collector()',
        SQLERRM;
END $$;

-- Device profiles in use, as imported with the fleet: which points a meter's readings come from.
-- The files stay the source of truth (they are edited, reviewed and versioned); this table lets
-- SQL users see what a meter is read with, and keeps the definition a reading was taken under.
CREATE TABLE IF NOT EXISTS device_profiles (
    name        text PRIMARY KEY,
    protocol    text NOT NULL,
    description text NOT NULL DEFAULT '',
    definition  jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Firmware images and fleet rollouts (issue 9 item 5; scheduler module gxami_scheduler.firmware).
--
-- An image is stored once, keyed by the SHA-256 of its bytes: uploading the same bytes again is a
-- no-op, and a collector fetches it by that hash and checks it before it sends one block.
-- A rollout sends one image to a group's meters in waves (cumulative percentages, e.g. {1,10,100});
-- the next wave starts when every meter of the current one has finished, and the rollout halts when
-- a wave's failure rate passes its threshold. Per-meter progress is what the meters' command
-- results report (blocks on the meter of blocks in all).
--
-- No grant to bi_reader: image bytes are not BI data; progress is exposed through the API.

CREATE TABLE IF NOT EXISTS firmware_images (
    sha256         bytea PRIMARY KEY CHECK (length(sha256) = 32),
    image          bytea NOT NULL,
    size           integer NOT NULL CHECK (size > 0 AND size = length(image)),
    identification text NOT NULL CHECK (length(identification) BETWEEN 1 AND 255),
    uploaded_by    text NOT NULL,
    uploaded_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS firmware_rollouts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    image        bytea NOT NULL REFERENCES firmware_images(sha256),
    meter_group  text NOT NULL,
    waves        integer[] NOT NULL CHECK (cardinality(waves) BETWEEN 1 AND 20),
    threshold    double precision NOT NULL CHECK (threshold >= 0 AND threshold <= 1),
    state        text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'halted', 'finished', 'cancelled')),
    current_wave integer NOT NULL DEFAULT 0 CHECK (current_wave >= 0),
    activate_at  timestamptz,
    reason       text,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS firmware_rollout_meters (
    rollout      bigint NOT NULL REFERENCES firmware_rollouts(id) ON DELETE CASCADE,
    meter_id     text NOT NULL,
    wave         integer NOT NULL CHECK (wave >= 0),
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'queued', 'transferring', 'verified', 'activated', 'failed')),
    blocks_done  integer NOT NULL DEFAULT 0 CHECK (blocks_done >= 0),
    blocks_total integer CHECK (blocks_total IS NULL OR blocks_total >= 0),
    detail       text NOT NULL DEFAULT '',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rollout, meter_id)
);
CREATE INDEX IF NOT EXISTS firmware_rollout_meters_wave ON firmware_rollout_meters (rollout, wave, state);

REVOKE ALL ON firmware_images, firmware_rollouts, firmware_rollout_meters FROM PUBLIC;

COMMENT ON TABLE firmware_images IS 'Firmware images, each stored once by the SHA-256 of its bytes.';
COMMENT ON COLUMN firmware_rollouts.waves IS 'Cumulative percentages of the group per wave, the last 100.';
COMMENT ON COLUMN firmware_rollouts.threshold IS 'Failure rate of a wave (0..1) above which the rollout halts.';

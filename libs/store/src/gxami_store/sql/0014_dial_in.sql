-- Dial-in meters (issue 8, item 3): a meter that calls us has no poll schedule (no meter_schedule
-- row, so no job of its is ever "lost" while it is offline). Its state is kept here instead:
--
-- * next_due_at: when its next read becomes due (its interval after the last good one);
-- * pending_job / pending_attempt / pending_since / pending_profile_to: the job published on
--   ami.dial-in-work and waiting for the meter to call; it stays pending, however long the meter
--   is away, until a job result answers it (a failed session gets a new job, attempt + 1);
-- * last_contact_at: the last time the meter called and a session with it ended (with or
--   without success), shown by GET /meters/{id};
-- * the rest as in meter_schedule: failures, last success and error, the load profile's watermark
--   (last_profile_ts; before the first good read, the start of the history its first job asked
--   for, so that a job planned anew for a meter that stayed away keeps the whole window).
--
-- Rows are made and removed by the scheduler (gxami_scheduler.dialin) from the meters that the
-- fleet marks `connection: dial-in`; a meter that leaves the registry takes its row with it.
CREATE TABLE IF NOT EXISTS dial_in_schedule (
    meter_id             text PRIMARY KEY REFERENCES meters(meter_id) ON DELETE CASCADE,
    next_due_at          timestamptz NOT NULL,
    pending_job          text,
    pending_attempt      integer NOT NULL DEFAULT 0,
    pending_since        timestamptz,
    pending_profile_to   timestamptz,
    last_profile_ts      timestamptz,
    last_success_at      timestamptz,
    last_error_at        timestamptz,
    last_error_kind      text,
    last_error           text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_contact_at      timestamptz
);

CREATE INDEX IF NOT EXISTS dial_in_schedule_due ON dial_in_schedule (next_due_at) WHERE pending_job IS NULL;

COMMENT ON COLUMN dial_in_schedule.last_contact_at IS
  'When the dial-in meter last called and a session with it ended (any outcome).';

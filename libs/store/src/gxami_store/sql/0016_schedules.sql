-- Named schedules and network segments (issue 10, items 1 and 2).
--
-- * meter_schedule.priority: the claim class of the meter's next run (gxami_scheduler.schedules.
--   PriorityClass: 50 command, 40 on-demand, 30 billing, 20 interval, 10 back-fill). Claims order by
--   it, highest first, so when the claim limit binds a higher class takes the slots.
-- * meter_schedule.due_purposes: what the next run reads, when the meter's named schedules say
--   (NULL: the meter's own purposes). A failed run is retried with the same class and purposes.
-- * segment_buckets: one row per network segment (APN, cell, concentrator, head-end) named in the
--   fleet file. A claim locks the rows of the segments it admits work for, so scheduler replicas
--   admit one after another per segment: the count of in-flight jobs they check against
--   max_sessions is then exact, and tokens/refilled_at is the token bucket of max_new_per_s.
--   The segment and its limits of each meter are kept in meters.options (_plan), from the file.
ALTER TABLE meter_schedule ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 20;
ALTER TABLE meter_schedule ADD COLUMN IF NOT EXISTS due_purposes text[];
CREATE INDEX IF NOT EXISTS meter_schedule_priority_due ON meter_schedule (priority DESC, next_due_at);

CREATE TABLE IF NOT EXISTS segment_buckets (
    segment     text PRIMARY KEY,
    tokens      double precision NOT NULL,
    refilled_at timestamptz NOT NULL
);

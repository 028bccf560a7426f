"""The SQL of one VEE pass (run by gxami_ingest.vee.run_vee, in this order, in one transaction).

Every statement works on ``vee_touched``: the (meter, quantity) channels with readings received
since the last pass, each with ``lo``, its earliest new reading, and ``ctx_lo``, where the history
the rules look at begins. Flags are recomputed for readings at or after ``lo`` from measured
readings only (estimates never count as evidence), so running a pass twice changes nothing.
Bits: see migration 0003_vee.sql and docs/data-dictionary.md.
"""

from __future__ import annotations

ESTIMATED = 1
GAP_BEFORE = 2
SPIKE = 4
NEGATIVE_CONSUMPTION = 8
ROLLOVER = 16
METER_REPLACED = 32
TIME_FUTURE = 64
TIME_PAST = 128
CLOCK_DRIFT = 256
CONFLICTING_DUPLICATE = 512

FLAG_NAMES = {
    ESTIMATED: "ESTIMATED",
    GAP_BEFORE: "GAP_BEFORE",
    SPIKE: "SPIKE",
    NEGATIVE_CONSUMPTION: "NEGATIVE_CONSUMPTION",
    ROLLOVER: "ROLLOVER",
    METER_REPLACED: "METER_REPLACED",
    TIME_FUTURE: "TIME_FUTURE",
    TIME_PAST: "TIME_PAST",
    CLOCK_DRIFT: "CLOCK_DRIFT",
    CONFLICTING_DUPLICATE: "CONFLICTING_DUPLICATE",
}

# The tag estimated rows carry in readings.job_id.
ESTIMATE_SOURCE = "vee:estimate"

CREATE_TOUCHED = """
CREATE TEMP TABLE vee_touched (
    meter_id text NOT NULL, quantity text NOT NULL, lo timestamptz NOT NULL,
    kind text, interval_s integer, spike_factor double precision, spike_floor double precision,
    modulus double precision, estimate boolean NOT NULL DEFAULT false,
    ctx_lo timestamptz, est_from timestamptz,
    PRIMARY KEY (meter_id, quantity)
) ON COMMIT DROP
"""

# $1 received since, $2 oldest timestamp looked at (keeps compressed chunks out of the scan).
FILL_TOUCHED = """
INSERT INTO vee_touched (meter_id, quantity, lo, kind, interval_s, spike_factor, spike_floor, modulus, estimate)
SELECT n.meter_id, n.quantity, min(n.ts), q.kind,
       NULLIF(COALESCE(c.interval_s, q.interval_s), 0), q.spike_factor, COALESCE(q.spike_floor, 0),
       COALESCE(c.register_modulus, q.register_modulus), COALESCE(q.estimate, false)
  FROM (SELECT meter_id, quantity, ts FROM readings
         WHERE received_at >= $1 AND ts >= $2 AND vee_flags & 1 = 0
        UNION ALL
        SELECT meter_id, quantity, ts FROM reading_revisions
         WHERE received_at >= $1 AND ts >= $2
        UNION ALL
        SELECT x.meter_id, q.quantity, x.replaced_at FROM meter_replacements x
          JOIN vee_rules q ON q.kind = 'cumulative' AND x.quantity IN (q.quantity, '*')
         WHERE x.recorded_at >= $1) n
  LEFT JOIN vee_rules q ON q.quantity = n.quantity
  LEFT JOIN meter_channels c ON c.meter_id = n.meter_id AND c.quantity = n.quantity
 GROUP BY n.meter_id, n.quantity, q.kind, c.interval_s, q.interval_s, q.spike_factor, q.spike_floor,
          c.register_modulus, q.register_modulus, q.estimate
"""

# History reaches back far enough for the spike baseline ($1 readings of the channel's interval)
# and always includes the measured reading before lo, whatever its age.
SET_CONTEXT = """
UPDATE vee_touched t
   SET ctx_lo = least(t.lo - make_interval(secs => COALESCE(t.interval_s, 900)::double precision * $1::integer),
                      (SELECT max(r.ts) FROM readings r
                        WHERE r.meter_id = t.meter_id AND r.quantity = t.quantity
                          AND r.ts < t.lo AND r.vee_flags & 1 = 0))
"""

# {history} and {min_history} are integers from VeeSettings (a window frame takes no parameters).
# $1 tolerance into the future, $2 age beyond which a reading is TIME_PAST.
FLAG_READINGS = """
WITH ctx AS (
    SELECT r.meter_id, r.quantity, r.ts, r.value, r.received_at, r.vee_flags,
           t.lo, t.kind, t.interval_s, t.spike_factor, t.spike_floor, t.modulus,
           lag(r.ts) OVER w AS prev_ts,
           lag(r.value) OVER w AS prev_value
      FROM vee_touched t
      JOIN readings r ON r.meter_id = t.meter_id AND r.quantity = t.quantity AND r.ts >= t.ctx_lo
     WHERE r.vee_flags & 1 = 0
    WINDOW w AS (PARTITION BY r.meter_id, r.quantity ORDER BY r.ts)
), steps AS (
    SELECT c.*,
           x.replaced_at,
           CASE WHEN c.kind = 'cumulative' AND c.prev_ts IS NOT NULL THEN
               register_consumption(c.prev_value, c.value, c.modulus,
                                    x.replaced_at IS NOT NULL, x.old_final, x.new_initial)
           END AS delta
      FROM ctx c
      LEFT JOIN LATERAL (
            SELECT m.replaced_at, m.old_final, m.new_initial
              FROM meter_replacements m
             WHERE c.kind = 'cumulative' AND m.meter_id = c.meter_id AND m.quantity IN (c.quantity, '*')
               AND m.replaced_at > c.prev_ts AND m.replaced_at <= c.ts
             ORDER BY m.replaced_at
             LIMIT 1) x ON true
), levels AS (
    -- what a spike is measured on: consumption per hour for registers, the value for instantaneous ones
    SELECT s.*,
           CASE WHEN s.kind = 'cumulative' AND s.delta >= 0 AND s.ts > s.prev_ts
                    THEN s.delta * 3600 / extract(epoch FROM s.ts - s.prev_ts)::double precision
                WHEN s.kind = 'instant' THEN abs(s.value)
           END AS level
      FROM steps s
), judged AS (
    SELECT l.*,
           avg(l.level) OVER h AS base_level,
           count(l.level) OVER h AS base_n
      FROM levels l
    WINDOW h AS (PARTITION BY l.meter_id, l.quantity ORDER BY l.ts
                 ROWS BETWEEN {history} PRECEDING AND 1 PRECEDING)
), flagged AS (
    SELECT j.meter_id, j.quantity, j.ts,
           (j.vee_flags & 256)
           | CASE WHEN j.interval_s IS NOT NULL AND j.prev_ts IS NOT NULL
                   AND ceil(extract(epoch FROM j.ts) / j.interval_s)
                       - floor(extract(epoch FROM j.prev_ts) / j.interval_s) > 1
                  THEN 2 ELSE 0 END
           | CASE WHEN j.spike_factor IS NOT NULL AND j.base_n >= {min_history}
                   AND j.level > j.spike_factor * j.base_level
                   AND CASE WHEN j.kind = 'cumulative' THEN j.delta ELSE abs(j.value) END > j.spike_floor
                  THEN 4 ELSE 0 END
           | CASE WHEN j.delta < 0 THEN 8 ELSE 0 END
           | CASE WHEN j.kind = 'cumulative' AND j.replaced_at IS NULL AND j.prev_ts IS NOT NULL
                   AND register_wraps(j.prev_value, j.value, j.modulus) THEN 16 ELSE 0 END
           | CASE WHEN j.replaced_at IS NOT NULL THEN 32 ELSE 0 END
           | CASE WHEN j.ts > j.received_at + $1::interval THEN 64 ELSE 0 END
           | CASE WHEN j.ts < j.received_at - $2::interval THEN 128 ELSE 0 END
           | CASE WHEN EXISTS (SELECT 1 FROM reading_revisions v
                                WHERE v.meter_id = j.meter_id AND v.quantity = j.quantity AND v.ts = j.ts)
                  THEN 512 ELSE 0 END
           AS new_flags
      FROM judged j
     WHERE j.ts >= j.lo
)
UPDATE readings r
   SET vee_flags = f.new_flags
  FROM flagged f
 WHERE r.meter_id = f.meter_id AND r.quantity = f.quantity AND r.ts = f.ts
   AND r.vee_flags & 1 = 0 AND r.vee_flags <> f.new_flags
"""

# A clock reading (kind 'clock': value = offset in s, or the meter's clock in unix seconds when the
# unit is 'unix_s') whose deviation exceeds $2 flags every reading of that meter since the previous
# clock reading (or within $1 before it, for the first one); one within limits clears them.
FLAG_CLOCK_DRIFT = """
WITH touched_meters AS (
    SELECT meter_id, min(lo) AS lo FROM vee_touched GROUP BY meter_id
), clocks AS (
    SELECT r.meter_id, r.ts,
           lag(r.ts) OVER w AS prev_ts,
           CASE WHEN r.unit = 'unix_s' THEN r.value - extract(epoch FROM r.ts)::double precision
                ELSE r.value END AS drift_s
      FROM touched_meters m
      JOIN readings r ON r.meter_id = m.meter_id AND r.ts >= m.lo - $1::interval
      JOIN vee_rules q ON q.quantity = r.quantity AND q.kind = 'clock'
    WINDOW w AS (PARTITION BY r.meter_id, r.quantity ORDER BY r.ts)
), spans AS (
    SELECT c.meter_id, COALESCE(c.prev_ts, c.ts - $1::interval) AS span_lo, c.ts AS span_hi,
           abs(c.drift_s) > $2 AS drifted
      FROM clocks c
      JOIN touched_meters m ON m.meter_id = c.meter_id
     WHERE c.ts >= m.lo
)
UPDATE readings r
   SET vee_flags = (r.vee_flags & ~256) | CASE WHEN s.drifted THEN 256 ELSE 0 END
  FROM spans s
 WHERE r.meter_id = s.meter_id AND r.ts > s.span_lo AND r.ts <= s.span_hi
   AND r.vee_flags & 1 = 0
   AND (r.vee_flags & 256 <> 0) <> s.drifted
"""

# Estimates are regenerated after the first measured reading of the context.
SET_ESTIMATE_FROM = """
UPDATE vee_touched t
   SET est_from = (SELECT min(r.ts) FROM readings r
                    WHERE r.meter_id = t.meter_id AND r.quantity = t.quantity
                      AND r.ts >= t.ctx_lo AND r.vee_flags & 1 = 0)
 WHERE t.kind = 'cumulative' AND t.estimate AND t.interval_s IS NOT NULL
"""

# Linear interpolation of the register over every gap between consecutive measured readings of
# at most $1, on the interval grid, across a rollover; never across a meter replacement or a
# negative step. Exact: v0 + (v1 - v0) * (t - t0) / (t1 - t0).
WANTED_ESTIMATES = """
CREATE TEMP TABLE vee_wanted ON COMMIT DROP AS
WITH reals AS (
    SELECT r.meter_id, r.quantity, r.ts, r.value, r.unit, t.interval_s, t.modulus,
           lead(r.ts) OVER w AS next_ts,
           lead(r.value) OVER w AS next_value
      FROM vee_touched t
      JOIN readings r ON r.meter_id = t.meter_id AND r.quantity = t.quantity AND r.ts >= t.est_from
     WHERE t.est_from IS NOT NULL AND r.vee_flags & 1 = 0
    WINDOW w AS (PARTITION BY r.meter_id, r.quantity ORDER BY r.ts)
), gaps AS (
    SELECT g.*,
           register_delta(g.value, g.next_value, g.modulus) AS delta,
           register_modulus(g.value, g.modulus) AS wrap_at,
           floor(extract(epoch FROM g.ts) / g.interval_s)::bigint + 1 AS k_first,
           ceil(extract(epoch FROM g.next_ts) / g.interval_s)::bigint - 1 AS k_last
      FROM reals g
     WHERE g.next_ts IS NOT NULL
       AND g.next_ts - g.ts <= $1::interval
       AND NOT EXISTS (SELECT 1 FROM meter_replacements m
                        WHERE m.meter_id = g.meter_id AND m.quantity IN (g.quantity, '*')
                          AND m.replaced_at > g.ts AND m.replaced_at <= g.next_ts)
)
SELECT g.meter_id, g.quantity, s.ts, g.unit,
       CASE WHEN e.v >= g.wrap_at THEN e.v - g.wrap_at ELSE e.v END AS value
  FROM gaps g
 CROSS JOIN LATERAL generate_series(g.k_first, g.k_last) AS k(n)
 CROSS JOIN LATERAL (SELECT to_timestamp((k.n * g.interval_s)::double precision) AS ts) s
 CROSS JOIN LATERAL (
       SELECT g.value + g.delta * (extract(epoch FROM s.ts) - extract(epoch FROM g.ts))::double precision
                                / extract(epoch FROM g.next_ts - g.ts)::double precision AS v) e
 WHERE g.delta >= 0
"""

# Estimates the measured data no longer asks for (a real value arrived inside their gap, or a
# meter replacement was recorded) go; a measured row is never touched.
DROP_STALE_ESTIMATES = """
DELETE FROM readings r
 USING vee_touched t
 WHERE r.meter_id = t.meter_id AND r.quantity = t.quantity AND t.est_from IS NOT NULL
   AND r.ts > t.est_from AND r.vee_flags & 1 <> 0
   AND NOT EXISTS (SELECT 1 FROM vee_wanted w
                    WHERE w.meter_id = r.meter_id AND w.quantity = r.quantity AND w.ts = r.ts)
"""

# RETURNING xmax does not work on partitioned tables: rows that existed before the statement (its
# snapshot) were updates, the others inserts. $1 is ESTIMATE_SOURCE.
WRITE_ESTIMATES = """
WITH before AS (
    SELECT w.meter_id, w.quantity, w.ts
      FROM vee_wanted w JOIN readings r USING (meter_id, quantity, ts)
), up AS (
    INSERT INTO readings AS r (meter_id, quantity, ts, value, unit, status, job_id, vee_flags)
    SELECT meter_id, quantity, ts, value, unit, 0, $1::text, 1 FROM vee_wanted
     ORDER BY meter_id, quantity, ts  -- the ingest merge takes row locks in the same order
    ON CONFLICT (meter_id, quantity, ts) DO UPDATE
       SET value = EXCLUDED.value, unit = EXCLUDED.unit
     WHERE r.vee_flags & 1 <> 0 AND r.value IS DISTINCT FROM EXCLUDED.value
    RETURNING r.meter_id, r.quantity, r.ts
)
SELECT count(*) FILTER (WHERE b.ts IS NULL) AS inserted, count(*) FILTER (WHERE b.ts IS NOT NULL) AS updated
  FROM up LEFT JOIN before b USING (meter_id, quantity, ts)
"""

SAVE_WATERMARK = """
INSERT INTO vee_state (id, validated_to) VALUES (true, $1)
ON CONFLICT (id) DO UPDATE SET validated_to = greatest(vee_state.validated_to, EXCLUDED.validated_to),
                               updated_at = now()
"""

# Gaps of one channel: consecutive measured readings with at least one grid instant between them.
FIND_GAPS = """
WITH cfg AS (
    SELECT NULLIF(COALESCE(c.interval_s, q.interval_s), 0) AS interval_s
      FROM vee_rules q
      LEFT JOIN meter_channels c ON c.meter_id = $1 AND c.quantity = q.quantity
     WHERE q.quantity = $2
), reals AS (
    SELECT r.ts, lead(r.ts) OVER (ORDER BY r.ts) AS next_ts
      FROM readings r
     WHERE r.meter_id = $1 AND r.quantity = $2 AND r.ts >= $3 AND r.ts <= $4 AND r.vee_flags & 1 = 0
)
SELECT r.ts AS after_ts, r.next_ts AS before_ts,
       (ceil(extract(epoch FROM r.next_ts) / cfg.interval_s)
        - floor(extract(epoch FROM r.ts) / cfg.interval_s) - 1)::integer AS missing
  FROM reals r, cfg
 WHERE r.next_ts IS NOT NULL
   AND ceil(extract(epoch FROM r.next_ts) / cfg.interval_s) - floor(extract(epoch FROM r.ts) / cfg.interval_s) > 1
 ORDER BY r.ts
"""

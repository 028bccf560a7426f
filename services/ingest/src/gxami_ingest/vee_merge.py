"""The ingest merge that lets a measured value replace an estimate (drop-in for writer._MERGE).

Same input (the ``ingest_staging`` temp table) and the same rules as today's merge: a redelivered
reading is a no-op, and a measured reading that arrives again with another value is kept in
``reading_revisions`` without overwriting the stored one. One change: when the stored row is an
estimate (``vee_flags`` bit 1, ESTIMATED), the arriving measured value overwrites it, clears the
flags and stamps ``received_at = now()`` so that the next VEE pass validates it and re-derives the
estimates around it. The replaced estimate is not a revision (it was never measured).

Result columns: distinct_rows, inserted, replaced_estimates, revisions; duplicates are
``offered - inserted - replaced_estimates - revisions``.
"""

from __future__ import annotations

MERGE_REPLACING_ESTIMATES = """
WITH src AS (
    SELECT DISTINCT ON (meter_id, quantity, ts) meter_id, quantity, ts, value, unit, status, job_id
      FROM ingest_staging
     ORDER BY meter_id, quantity, ts
), up AS (
    INSERT INTO readings AS r (meter_id, quantity, ts, value, unit, status, job_id)
    SELECT meter_id, quantity, ts, value, unit, status, job_id FROM src
    ON CONFLICT (meter_id, quantity, ts) DO UPDATE
       SET value = EXCLUDED.value, unit = EXCLUDED.unit, status = EXCLUDED.status,
           job_id = EXCLUDED.job_id, received_at = now(), vee_flags = 0
     WHERE r.vee_flags & 1 <> 0
    RETURNING r.meter_id, r.quantity, r.ts
), estimates AS (
    -- what was stored before this statement (its snapshot): an upserted row found here replaced an
    -- estimate, the others are new (RETURNING xmax does not work on partitioned tables)
    SELECT s.meter_id, s.quantity, s.ts
      FROM src s JOIN readings r USING (meter_id, quantity, ts)
     WHERE r.vee_flags & 1 <> 0
), rev AS (
    INSERT INTO reading_revisions (meter_id, quantity, ts, value, unit, job_id)
    SELECT s.meter_id, s.quantity, s.ts, s.value, s.unit, s.job_id
      FROM src s JOIN readings r USING (meter_id, quantity, ts)
     WHERE r.value IS DISTINCT FROM s.value AND r.vee_flags & 1 = 0
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM src) AS distinct_rows,
       (SELECT count(*) FROM up LEFT JOIN estimates e USING (meter_id, quantity, ts) WHERE e.ts IS NULL) AS inserted,
       (SELECT count(*) FROM up JOIN estimates e USING (meter_id, quantity, ts)) AS replaced_estimates,
       (SELECT count(*) FROM rev) AS revisions
"""

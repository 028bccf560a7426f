-- Views for BI. Energy is the cumulative import register 1-0:1.8.0 in kWh; a day is a UTC day and
-- a reading stamped exactly at midnight closes the previous day (interval-ending convention).

CREATE OR REPLACE VIEW daily_consumption AS
WITH day_end AS (
    SELECT meter_id,
           (date_trunc('day', ts - interval '1 microsecond'))::date AS day,
           max(value) AS end_kwh,
           count(*)   AS readings
      FROM readings
     WHERE quantity = '1-0:1.8.0'
     GROUP BY 1, 2
), paired AS (
    SELECT meter_id, day, end_kwh, readings,
           lag(end_kwh) OVER w AS start_kwh,
           lag(day) OVER w     AS prev_day
      FROM day_end
    WINDOW w AS (PARTITION BY meter_id ORDER BY day)
)
SELECT meter_id,
       day,
       end_kwh - start_kwh AS kwh,
       readings
  FROM paired
 WHERE prev_day = day - 1;

COMMENT ON VIEW daily_consumption IS
  'Energy imported per meter and UTC day (kWh): register at the end of the day minus at its start.';

CREATE OR REPLACE VIEW meter_last_seen AS
SELECT m.meter_id, m.meter_group, m.protocol, s.last_success_at, s.last_error_at, s.last_error_kind,
       s.consecutive_failures
  FROM meters m LEFT JOIN meter_schedule s USING (meter_id);

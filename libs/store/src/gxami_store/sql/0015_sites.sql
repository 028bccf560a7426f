-- Edge sites (issue 8): the site whose edge collector reads a meter. The scheduler publishes a
-- site meter's read jobs to `<ami.read-jobs>.<site>` (one topic per site, so that one site's
-- outage never holds another's jobs); NULL: the central topic, as before. The pattern is that of
-- a part of a Kafka topic name (and of GXAMI_SITE).

ALTER TABLE meters ADD COLUMN IF NOT EXISTS site text
    CONSTRAINT meters_site_name CHECK (site ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$');

COMMENT ON COLUMN meters.site IS 'Edge site reading the meter (jobs on ami.read-jobs.<site>); NULL: central collectors.';

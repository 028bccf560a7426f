-- On plain PostgreSQL register_values stays one table: a few values per meter and read (names,
-- serial numbers, status words) against thousands of interval readings, so it does not need the
-- partitions readings has. (TimescaleDB: a hypertable, see the other file of this pair.)
SELECT 1;

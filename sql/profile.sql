-- Data profile of the materialized splits: rows, clicks, buys, CTR and CVR (among clicks).
-- Tables (see `esmm sql --help`; `esmm sql --duckdb-views --run DIR` prints them for DuckDB):
--   train, valid, test   DIR/split/<split>/samples.parquet
-- Runs unchanged in polars SQL (`esmm sql sql/profile.sql --run data/demo`) and DuckDB; every
-- branch of the UNION names its columns (polars would otherwise name two of them `click`).
SELECT 'train' AS split, CAST(count(*) AS BIGINT) AS rows, CAST(sum(click) AS BIGINT) AS clicks,
       CAST(sum(buy) AS BIGINT) AS buys, avg(CAST(click AS DOUBLE)) AS ctr,
       sum(CAST(click * buy AS DOUBLE)) / nullif(sum(CAST(click AS DOUBLE)), 0) AS cvr
FROM train
UNION ALL
SELECT 'valid' AS split, CAST(count(*) AS BIGINT) AS rows, CAST(sum(click) AS BIGINT) AS clicks,
       CAST(sum(buy) AS BIGINT) AS buys, avg(CAST(click AS DOUBLE)) AS ctr,
       sum(CAST(click * buy AS DOUBLE)) / nullif(sum(CAST(click AS DOUBLE)), 0) AS cvr
FROM valid
UNION ALL
SELECT 'test' AS split, CAST(count(*) AS BIGINT) AS rows, CAST(sum(click) AS BIGINT) AS clicks,
       CAST(sum(buy) AS BIGINT) AS buys, avg(CAST(click AS DOUBLE)) AS ctr,
       sum(CAST(click * buy AS DOUBLE)) / nullif(sum(CAST(click AS DOUBLE)), 0) AS cvr
FROM test
ORDER BY split;

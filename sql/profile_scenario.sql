-- Data profile by split and scenario (field 301, the raw id in column `scenario`; 0 = absent):
-- rows, share of the split's rows, clicks, buys, CTR, CVR among clicks.
-- Tables: train, valid, test = DIR/split/<split>/samples.parquet.
-- Runs unchanged in polars SQL (`esmm sql sql/profile_scenario.sql --run data/demo`) and DuckDB.
WITH s AS (
    SELECT 'train' AS split, scenario, click, buy FROM train
    UNION ALL SELECT 'valid' AS split, scenario, click, buy FROM valid
    UNION ALL SELECT 'test' AS split, scenario, click, buy FROM test
),
totals AS (SELECT split, CAST(count(*) AS DOUBLE) AS split_rows FROM s GROUP BY split),
g AS (
    SELECT split, scenario, CAST(count(*) AS BIGINT) AS rows, CAST(sum(click) AS BIGINT) AS clicks,
           CAST(sum(buy) AS BIGINT) AS buys, sum(CAST(click AS DOUBLE)) AS clicks_f,
           sum(CAST(click * buy AS DOUBLE)) AS click_buys
    FROM s
    GROUP BY split, scenario
)
SELECT g.split AS split, g.scenario AS scenario, g.rows AS rows, g.rows / totals.split_rows AS share,
       g.clicks AS clicks, g.buys AS buys, g.clicks_f / g.rows AS ctr, g.click_buys / nullif(g.clicks_f, 0) AS cvr
FROM g JOIN totals ON g.split = totals.split
ORDER BY split, scenario;

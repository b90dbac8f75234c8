-- Feature coverage per field and split: the share of impressions whose field has at least one
-- id (`coverage`) and the mean number of ids per impression (`mean_len`, empty lists count as 0).
-- Item-side fields come from the samples table; user-side fields (side = 'user') from the common
-- table, weighted by the number of impressions of each session (md5), so both sides are
-- measured per impression. Field names are Ali-CCP's (`101` user id, `301` scenario, ...).
-- Tables: train, valid, test             = DIR/split/<split>/samples.parquet
--         train_common, valid_common, test_common = DIR/split/<split>/common.parquet
-- Runs unchanged in polars SQL (`esmm sql sql/feature_coverage.sql --run data/demo`) and DuckDB.
WITH s AS (
    SELECT 'train' AS split, md5, f_205, f_206, f_207, f_210, f_216, f_508, f_509, f_702, f_853, f_301 FROM train
    UNION ALL
    SELECT 'valid' AS split, md5, f_205, f_206, f_207, f_210, f_216, f_508, f_509, f_702, f_853, f_301 FROM valid
    UNION ALL
    SELECT 'test' AS split, md5, f_205, f_206, f_207, f_210, f_216, f_508, f_509, f_702, f_853, f_301 FROM test
),
sessions AS (SELECT split, md5, CAST(count(*) AS DOUBLE) AS n FROM s GROUP BY split, md5),
c AS (
    SELECT 'train' AS split, md5, f_101, f_109_14, f_110_14, f_127_14, f_150_14, f_121, f_122, f_124, f_125, f_126, f_127, f_128, f_129 FROM train_common
    UNION ALL
    SELECT 'valid' AS split, md5, f_101, f_109_14, f_110_14, f_127_14, f_150_14, f_121, f_122, f_124, f_125, f_126, f_127, f_128, f_129 FROM valid_common
    UNION ALL
    SELECT 'test' AS split, md5, f_101, f_109_14, f_110_14, f_127_14, f_150_14, f_121, f_122, f_124, f_125, f_126, f_127, f_128, f_129 FROM test_common
),
u AS (
    SELECT sessions.split AS split, sessions.n AS n, c.f_101 AS f_101, c.f_109_14 AS f_109_14, c.f_110_14 AS f_110_14, c.f_127_14 AS f_127_14, c.f_150_14 AS f_150_14, c.f_121 AS f_121, c.f_122 AS f_122, c.f_124 AS f_124, c.f_125 AS f_125, c.f_126 AS f_126, c.f_127 AS f_127, c.f_128 AS f_128, c.f_129 AS f_129
    FROM sessions JOIN c ON sessions.split = c.split AND sessions.md5 = c.md5
)
SELECT split, '101' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_101) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_101) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '109_14' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_109_14) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_109_14) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '110_14' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_110_14) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_110_14) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '127_14' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_127_14) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_127_14) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '150_14' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_150_14) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_150_14) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '121' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_121) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_121) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '122' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_122) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_122) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '124' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_124) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_124) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '125' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_125) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_125) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '126' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_126) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_126) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '127' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_127) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_127) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '128' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_128) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_128) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '129' AS field, 'user' AS side, CAST(sum(n) AS BIGINT) AS impressions,
       sum(CASE WHEN array_length(f_129) > 0 THEN n ELSE 0.0 END) / sum(n) AS coverage,
       sum(n * CAST(array_length(f_129) AS DOUBLE)) / sum(n) AS mean_len
FROM u GROUP BY split
UNION ALL
SELECT split, '205' AS field, 'item' AS side, CAST(count(*) AS BIGINT) AS impressions,
       avg(CASE WHEN array_length(f_205) > 0 THEN 1.0 ELSE 0.0 END) AS coverage,
       avg(CAST(array_length(f_205) AS DOUBLE)) AS mean_len
FROM s GROUP BY split
UNION ALL
SELECT split, '206' AS field, 'item' AS side, CAST(count(*) AS BIGINT) AS impressions,
       avg(CASE WHEN array_length(f_206) > 0 THEN 1.0 ELSE 0.0 END) AS coverage,
       avg(CAST(array_length(f_206) AS DOUBLE)) AS mean_len
FROM s GROUP BY split
UNION ALL
SELECT split, '207' AS field, 'item' AS side, CAST(count(*) AS BIGINT) AS impressions,
       avg(CASE WHEN array_length(f_207) > 0 THEN 1.0 ELSE 0.0 END) AS coverage,
       avg(CAST(array_length(f_207) AS DOUBLE)) AS mean_len
FROM s GROUP BY split
UNION ALL
SELECT split, '210' AS field, 'item' AS side, CAST(count(*) AS BIGINT) AS impressions,
       avg(CASE WHEN array_length(f_210) > 0 THEN 1.0 ELSE 0.0 END) AS coverage,
       avg(CAST(array_length(f_210) AS DOUBLE)) AS mean_len
FROM s GROUP BY split
UNION ALL
SELECT split, '216' AS field, 'item' AS side, CAST(count(*) AS BIGINT) AS impressions,
       avg(CASE WHEN array_length(f_216) > 0 THEN 1.0 ELSE 0.0 END) AS coverage,
       avg(CAST(array_length(f_216) AS DOUBLE)) AS mean_len
FROM s GROUP BY split
UNION ALL
SELECT split, '508' AS field, 'item' AS side, CAST(count(*) AS BIGINT) AS impressions,
       avg(CASE WHEN array_length(f_508) > 0 THEN 1.0 ELSE 0.0 END) AS coverage,
       avg(CAST(array_length(f_508) AS DOUBLE)) AS mean_len
FROM s GROUP BY split
UNION ALL
SELECT split, '509' AS field, 'item' AS side, CAST(count(*) AS BIGINT) AS impressions,
       avg(CASE WHEN array_length(f_509) > 0 THEN 1.0 ELSE 0.0 END) AS coverage,
       avg(CAST(array_length(f_509) AS DOUBLE)) AS mean_len
FROM s GROUP BY split
UNION ALL
SELECT split, '702' AS field, 'item' AS side, CAST(count(*) AS BIGINT) AS impressions,
       avg(CASE WHEN array_length(f_702) > 0 THEN 1.0 ELSE 0.0 END) AS coverage,
       avg(CAST(array_length(f_702) AS DOUBLE)) AS mean_len
FROM s GROUP BY split
UNION ALL
SELECT split, '853' AS field, 'item' AS side, CAST(count(*) AS BIGINT) AS impressions,
       avg(CASE WHEN array_length(f_853) > 0 THEN 1.0 ELSE 0.0 END) AS coverage,
       avg(CAST(array_length(f_853) AS DOUBLE)) AS mean_len
FROM s GROUP BY split
UNION ALL
SELECT split, '301' AS field, 'item' AS side, CAST(count(*) AS BIGINT) AS impressions,
       avg(CASE WHEN array_length(f_301) > 0 THEN 1.0 ELSE 0.0 END) AS coverage,
       avg(CAST(array_length(f_301) AS DOUBLE)) AS mean_len
FROM s GROUP BY split
ORDER BY split, field;

-- Data profile of the materialized splits: rows, clicks, buys, CTR and CVR (among clicks).
-- Tables `train`, `valid`, `test` are the split's samples.parquet files, e.g. in DuckDB:
--   CREATE VIEW train AS SELECT * FROM read_parquet('data/demo/split/train/samples.parquet'); (same for valid, test)
SELECT 'train' AS split, count(*) AS rows, sum(click) AS clicks, sum(buy) AS buys,
       avg(click) AS ctr, sum(click * buy) / nullif(sum(click), 0) AS cvr
FROM train
UNION ALL
SELECT 'valid', count(*), sum(click), sum(buy), avg(click), sum(click * buy) / nullif(sum(click), 0) FROM valid
UNION ALL
SELECT 'test', count(*), sum(click), sum(buy), avg(click), sum(click * buy) / nullif(sum(click), 0) FROM test
ORDER BY split;

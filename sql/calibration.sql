-- Calibration by predicted decile: per task, rows sorted by the predicted probability and cut
-- into ten equal-count bins; mean prediction next to the observed rate. A calibrated model has
-- observed_rate ≈ mean_predicted in every bin (the reliability diagram of `esmm report`).
--   ctr:   every row,         p_ctr   vs click
--   cvr:   clicked rows only, p_cvr   vs buy      (the space the paper evaluates CVR on)
--   ctcvr: every row,         p_ctcvr vs click AND buy
-- Ties are broken by sample_id, so both engines cut the bins at the same rows.
-- Tables: predictions = DIR/predictions/test.parquet (or `--table predictions=FILE`).
-- Runs unchanged in polars SQL (`esmm sql sql/calibration.sql --run data/demo`) and DuckDB.
WITH scored AS (
    SELECT 'ctr' AS task, CAST(p_ctr AS DOUBLE) AS p, CAST(click AS DOUBLE) AS y, sample_id FROM predictions
    UNION ALL
    SELECT 'cvr' AS task, CAST(p_cvr AS DOUBLE) AS p, CAST(buy AS DOUBLE) AS y, sample_id FROM predictions
    WHERE click = 1
    UNION ALL
    SELECT 'ctcvr' AS task, CAST(p_ctcvr AS DOUBLE) AS p, CAST(click * buy AS DOUBLE) AS y, sample_id
    FROM predictions
),
ranked AS (
    SELECT task, p, y, ROW_NUMBER() OVER (PARTITION BY task ORDER BY p, sample_id) AS r FROM scored
),
sizes AS (SELECT task, CAST(count(*) AS DOUBLE) AS n FROM scored GROUP BY task),
binned AS (
    SELECT ranked.task AS task, CAST(floor((ranked.r - 1) * 10.0 / sizes.n) AS BIGINT) + 1 AS decile,
           ranked.p AS p, ranked.y AS y
    FROM ranked JOIN sizes ON ranked.task = sizes.task
)
SELECT task, decile, CAST(count(*) AS BIGINT) AS rows, avg(p) AS mean_predicted, avg(y) AS observed_rate,
       min(p) AS min_predicted, max(p) AS max_predicted, sum(y) AS positives
FROM binned
GROUP BY task, decile
ORDER BY task, decile;

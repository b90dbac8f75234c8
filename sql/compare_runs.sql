-- Run-vs-run comparison from the metrics tables: every run's AUC, logloss and calibration next
-- to the mean of the `esmm` runs on the same split, slice and task, and the difference.
-- Tables: metrics = every DIR/metrics*/metrics.parquet stacked (columns run_id, split, slice,
-- model, task, metric, value, n, positives; one file per `esmm evaluate`).
-- Runs unchanged in polars SQL (`esmm sql sql/compare_runs.sql --run data/demo`) and DuckDB.
WITH ref AS (
    SELECT split, slice, task, metric, avg(value) AS esmm_value
    FROM metrics
    WHERE model = 'esmm'
    GROUP BY split, slice, task, metric
)
SELECT m.split AS split, m.slice AS slice, m.task AS task, m.metric AS metric, m.model AS model,
       m.run_id AS run_id, m.value AS value, ref.esmm_value AS esmm_value, m.value - ref.esmm_value AS delta_vs_esmm
FROM metrics AS m
LEFT JOIN ref ON m.split = ref.split AND m.slice = ref.slice AND m.task = ref.task AND m.metric = ref.metric
WHERE m.metric IN ('auc', 'logloss', 'calibration')
ORDER BY split, slice, task, metric, model, run_id;

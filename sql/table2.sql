-- The paper's Table 2 (ESMM, SIGIR 2018) from the metrics tables: AUC per task for each model
-- kind (mean over runs, e.g. seeds; the conversion models after ESMM too), the number of model runs (the planted rows excluded), the planted group oracle
-- (group-level effects only: no id's own effect), semi-oracle (without the items' own effects) and oracle, and ESMM's
-- gain over the naive CVR model. `esmm report` prints the same table with ± standard deviations.
-- Tables: metrics = every DIR/metrics*/metrics.parquet stacked.
-- Runs unchanged in polars SQL (`esmm sql sql/table2.sql --run data/demo`) and DuckDB.
SELECT split, slice, task,
       CAST(sum(CASE WHEN model NOT IN ('oracle', 'semi_oracle', 'group_oracle') THEN 1 ELSE 0 END) AS BIGINT) AS runs,
       avg(CASE WHEN model = 'naive_cvr' THEN value END) AS naive_cvr,
       avg(CASE WHEN model = 'esmm_ns' THEN value END) AS esmm_ns,
       avg(CASE WHEN model = 'esmm' THEN value END) AS esmm,
       avg(CASE WHEN model = 'escm2_ips' THEN value END) AS escm2_ips,
       avg(CASE WHEN model = 'escm2_dr' THEN value END) AS escm2_dr,
       avg(CASE WHEN model = 'dcmt' THEN value END) AS dcmt,
       avg(CASE WHEN model = 'group_oracle' THEN value END) AS group_oracle,
       avg(CASE WHEN model = 'semi_oracle' THEN value END) AS semi_oracle,
       avg(CASE WHEN model = 'oracle' THEN value END) AS oracle,
       avg(CASE WHEN model = 'esmm' THEN value END) - avg(CASE WHEN model = 'naive_cvr' THEN value END)
           AS esmm_minus_naive
FROM metrics
WHERE metric = 'auc'
GROUP BY split, slice, task
ORDER BY split, slice, task;

"""Airflow DAG for the esmm pipeline on the real Ali-CCP files: one task per stage, each a call
of the esmm CLI with the pipeline file and JSON logs (one event object per stderr line).

    ingest_0 .. ingest_{N-1}  (sharded by session; run in parallel, on any workers)
            \\     |     /
              split -> train -> predict -> evaluate

Why this is safe to retry and to rerun daily:
  * every stage skips itself when its inputs and config are unchanged (exit 0, seconds), so a
    cleared or retried task that has nothing new to do is cheap;
  * a task killed at any moment (worker lost, timeout, OOM) leaves no manifest, and the retry
    redoes that stage from scratch to the same bytes;
  * a second process on the same outputs fails at once (exit 1, naming the lock and the holder's
    pid) instead of interleaving writes, so max_active_runs=1 plus retries is enough;
  * exit 2 is a usage or configuration error: retrying does not help.

Copy to your dags/ folder and set ESMM_BIN / ESMM_PIPELINE (and ESMM_INGEST_SHARDS) in the
worker environment. ESMM_WORKDIR (default /srv/esmm) is the directory the tasks run in, against
which the pipeline's relative paths resolve, like `cd /srv/esmm` in pipeline/crontab.example
(without it Airflow runs each task in a fresh temporary directory). ESMM_RETRIES overrides the
two retries (the test sets 0, so that a failing stage fails the run at once instead of waiting
out the retry delay). With the KubernetesPodOperator the same commands run in pods (see
docs/operations.md, "Sharded fan-out"); the shards need a shared file system for the ingest
directory.

Works on Airflow 3 and 2 (BashOperator from the standard provider, or from its Airflow 2 place).
tests/it/ops.rs runs it with `airflow dags test` on the Airflow pinned in
tests/requirements-airflow.txt and parses it with Airflow's DagBag.
"""

import os
from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
try:  # Airflow 3, and Airflow 2 with apache-airflow-providers-standard
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

ESMM = os.environ.get("ESMM_BIN", "esmm")
PIPELINE = os.environ.get("ESMM_PIPELINE", "/srv/esmm/pipeline/aliccp.yaml")
INGEST_SHARDS = int(os.environ.get("ESMM_INGEST_SHARDS", "4"))
WORKDIR = os.environ.get("ESMM_WORKDIR", "/srv/esmm")
RETRIES = int(os.environ.get("ESMM_RETRIES", "2"))


def esmm(*args):
    """The shell command of one esmm call (stage subcommand, then its flags)."""
    return " ".join([ESMM, *args, "--config", PIPELINE, "--log-format", "json"])


def stage(task_id, *args):
    """The task running one esmm call in WORKDIR."""
    return BashOperator(task_id=task_id, bash_command=esmm(*args), cwd=WORKDIR)


default_args = {
    "owner": "esmm",
    "retries": RETRIES,
    "retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=12),
}

with DAG(
    dag_id="esmm_aliccp",
    description="Ali-CCP raw CSV -> Parquet -> splits -> ESMM -> predictions -> metrics",
    start_date=datetime(2026, 1, 1),
    schedule="0 3 * * *",
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["esmm"],
) as dag:
    ingest = [stage(f"ingest_{i}", "ingest", "--shard", f"{i}/{INGEST_SHARDS}") for i in range(INGEST_SHARDS)]
    split = stage("split", "split")
    train = stage("train", "train")
    predict = stage("predict", "predict", "--split", "test")
    evaluate = stage("evaluate", "evaluate")

    ingest >> split
    split >> train >> predict >> evaluate

#!/usr/bin/env python3
"""Looks at pipeline/airflow_dag.py through Airflow itself, for tests/it/ops.rs: parses the DAGs
folder with Airflow's DagBag and reads the runs that `airflow dags test` recorded in the metadata
DB ($AIRFLOW_HOME). Run it with the Python of the Airflow venv.

usage: airflow_check.py DAGS_FOLDER DAG_ID
Prints one line `AIRFLOW_CHECK {json}` (Airflow may log other lines to stdout):
  import_errors  {file: message}
  dags           the DAG ids found
  tasks          {task_id: [upstream task ids]}
  retries        {task_id: retries}
  runs           [{"run_id", "state", "tasks": {task_id: state}}], oldest first
"""
import json
import sys

try:  # Airflow >= 3.1
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session


def plain(state):
    """A state enum (or None) as its string value."""
    return None if state is None else getattr(state, "value", str(state))


def main(folder, dag_id):
    bag = DagBag(folder)  # no examples: the caller sets AIRFLOW__CORE__LOAD_EXAMPLES=False
    out = {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dags": sorted(bag.dags),
    }
    dag = bag.dags.get(dag_id)
    if dag is not None:
        out["tasks"] = {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
        out["retries"] = {t.task_id: t.retries for t in dag.tasks}
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id).all()
        out["runs"] = [
            {
                "run_id": r.run_id,
                "state": plain(r.state),
                "tasks": {ti.task_id: plain(ti.state) for ti in r.get_task_instances(session=session)},
            }
            for r in runs
        ]
    print("AIRFLOW_CHECK " + json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:3])

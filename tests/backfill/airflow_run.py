"""Runs the repository's DAGs with ``dag.test()`` — no scheduler — in Airflow's own virtual
environment (``./dev`` makes ``.venv-airflow``); tests/backfill/test_airflow_dag.py starts it.

``python airflow_run.py DAG_ID RUN_CONF_JSON [LOGICAL_DATE]`` prints one JSON line: the run's
state and each task instance's state (mapped ones as ``task[index]``).  It imports nothing
of the platform: the DAG reaches it through the registry API, as on a real worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path


def main() -> int:
    dag_id, conf = sys.argv[1], json.loads(sys.argv[2])
    logical_date = datetime.fromisoformat(sys.argv[3]) if len(sys.argv) > 3 else None
    airflow = str(Path(sys.executable).parent / "airflow")
    database = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    if not database.exists():
        subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)
    subprocess.run([airflow, "dags", "reserialize"], check=True, capture_output=True)

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        print(json.dumps({"import_errors": {k: str(v) for k, v in bag.import_errors.items()}}))
        return 1
    dag = bag.get_dag(dag_id)
    try:
        run = dag.test(run_conf=conf, logical_date=logical_date)
    except Exception as error:  # a param the DAG refuses: reported, not a crash
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 0
    tasks = {f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id:
             str(ti.state) for ti in run.get_task_instances()}
    print(json.dumps({"state": str(run.state), "tasks": tasks}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

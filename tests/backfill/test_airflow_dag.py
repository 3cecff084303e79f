"""The Airflow DAGs, run with ``dag.test()`` in Airflow's own environment against the real
platform: the registry API (with its backfill endpoints), the archive, a Flink cluster.

The daily variant first keeps one day materialised; then the range DAG backfills three days
of archived events, mapping one task per chunk it has to run — the two days the daily run
left — and records the outcome; the table then covers the range once, with no duplicates."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog import Catalog

from fp.local.base import answers_ok, free_port, wait_until
from fp.local.flink import LocalFlink
from offline import iceberg
from registry.store.postgres import PostgresRegistryStore
from tests.backfill.support import DAY_MS, fresh_catalog
from tests.offline.support import (
    BASE_MS,
    apply,
    archive_directly,
    definitions,
    payloads,
    source_spec,
    with_offsets,
)

pytestmark = pytest.mark.flink

ROOT = Path(__file__).resolve().parents[2]
FIRST_DAY = BASE_MS - BASE_MS % DAY_MS
TOKEN = "airflow:dag-secret"


def airflow_python() -> Path:
    """``./dev test`` names the environment it made; elsewhere the repository's is used."""
    named = os.environ.get("FP_TEST_AIRFLOW_PYTHON")
    if named:
        return Path(named)
    local = ROOT / ".venv-airflow" / "bin" / "python"
    if not local.exists():
        pytest.skip("no Airflow environment: `./dev test` makes .venv-airflow")
    return local


@pytest.fixture
def platform(store: PostgresRegistryStore, database_url: str, flink_cluster: LocalFlink,
             tmp_path: Path) -> Iterator[tuple[str, Catalog]]:
    """Three days of archived payments and `fp registry serve` able to run backfills."""
    apply(store, definitions("payments_dag", view="stats_dag"))
    catalog = fresh_catalog(database_url, tmp_path / "warehouse")
    events = payloads(random.Random(9), 500, first_ms=FIRST_DAY + 60_000, spacing_ms=500_000)
    archive_directly(catalog, source_spec("payments_dag"), 1, with_offsets(events))
    port = free_port()
    env = {**os.environ, "FP_DATABASE_URL": database_url, "FP_FLINK_URL": flink_cluster.url,
           "FP_WAREHOUSE": str(tmp_path / "warehouse"), "FP_API_TOKENS": TOKEN,
           "FP_BACKFILL_STAGING": str(tmp_path / "staging")}
    log = (tmp_path / "registry.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "fp.cli", "registry", "serve", "--port",
                               str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(partial(answers_ok, f"http://127.0.0.1:{port}/healthz"), 60, "the registry")
        yield f"http://127.0.0.1:{port}", catalog
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def run_dag(registry: str, home: Path, dag_id: str, conf: dict[str, Any],
            logical_date: str | None = None) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "FP_REGISTRY_URL": registry,
           "FP_API_TOKEN": TOKEN, "FP_BACKFILL_DAILY_VIEW": "stats_dag"}
    done = subprocess.run([str(airflow_python()), str(ROOT / "tests" / "backfill" /
                                                      "airflow_run.py"), dag_id,
                           json.dumps(conf), *([logical_date] if logical_date else [])],
                          env=env, capture_output=True, text=True, timeout=1200, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_the_dags_backfill_several_days_through_the_api(
        platform: tuple[str, Catalog], tmp_path: Path) -> None:
    registry, catalog = platform
    home = tmp_path / "airflow"
    home.mkdir()
    refused = run_dag(registry, home, "fp_backfill", {"view": "Stats DAG", "start": "2026-09-21",
                                                      "end": "2026-09-24"})
    assert "error" in refused and "view" in refused["error"], refused

    daily = run_dag(registry, home, "fp_backfill_daily", {},
                    logical_date="2026-09-22T00:00:00+00:00")
    assert daily["state"] == "success", daily
    assert daily["tasks"]["run_chunk[0]"] == "success" and "run_chunk[1]" not in daily["tasks"]

    ranged = run_dag(registry, home, "fp_backfill", {"view": "stats_dag@1",
                                                     "start": "2026-09-21",
                                                     "end": "2026-09-24"})
    assert ranged["state"] == "success", ranged
    mapped = sorted(k for k in ranged["tasks"] if k.startswith("run_chunk["))
    assert mapped == ["run_chunk[0]", "run_chunk[1]"], "the day the daily run did is skipped"

    table = catalog.load_table(iceberg.feature_table_name("stats_dag", 1))
    assert iceberg.feature_coverage(table.metadata) == [(FIRST_DAY, FIRST_DAY + 3 * DAY_MS)]
    rows = table.scan().to_arrow()
    keys = ("account_id", "region", "window_start", "event_time")
    assert len({tuple(r[k] for k in keys) for r in rows.to_pylist()}) == rows.num_rows
    from registry.client import RegistryClient
    history = RegistryClient(registry).get("/v1/feature-views/stats_dag/backfills")
    assert [b["state"] for b in history["backfills"]] == ["completed", "completed"]
    assert sum(b["rows"] for b in history["backfills"]) == rows.num_rows
    assert history["backfills"][0]["requested_by"] == "airflow"

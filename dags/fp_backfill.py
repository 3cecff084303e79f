"""Airflow 3 DAGs that backfill feature views through the platform's registry API.

``fp_backfill`` (triggered with params) backfills one view version over a range;
``fp_backfill_daily`` keeps yesterday materialised, every day.  Both:

1. **plan** — ``POST /v1/feature-views/{view}/backfills`` records the request and answers the
   chunks to run (those not in the feature table yet, or as ``reprocess`` says);
2. **run_chunk**, mapped once per chunk (``.expand``) — ``POST …/backfills/{n}/chunks``
   computes and commits one chunk (Flink batch job, one Iceberg snapshot), retried with
   exponential backoff; a retry of a chunk that did commit finds it done;
3. **record** — whatever happened to the chunks, ``POST …/backfills/{n}/finish`` records
   ``BackfillCompleted``, or ``BackfillFailed`` with the chunks not done; the run then fails.

Only the Python standard library and Airflow are imported: the workers need no platform
install and no access to its database, just the registry's URL and a write token —
Airflow Variables ``fp_registry_url`` and ``fp_api_token``, else the environment variables
``FP_REGISTRY_URL`` and ``FP_API_TOKEN``.  docs/backfill.md says how to install it.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, Variable, dag, get_current_context, task

VIEW_PATTERN = r"^[a-z][a-z0-9_]{0,62}(@[1-9][0-9]{0,9})?$"
INSTANT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+(Z|[+-][0-9]{2}:?[0-9]{2})?)?$"
DURATION_PATTERN = r"^[1-9][0-9]{0,9}(ms|s|m|h|d)$"
CHUNK_TIMEOUT_S = 3 * 3600
"""A chunk's request may take long (a large day through Flink); the registry answers when
it is committed."""
CHUNK_RETRY = {"retries": 3, "retry_delay": timedelta(seconds=30),
               "retry_exponential_backoff": True, "max_retry_delay": timedelta(minutes=10)}


class PlatformError(Exception):
    """The registry refused or failed a request (its problem detail is the message)."""


def _setting(variable: str, environment: str, default: str | None = None) -> str | None:
    return Variable.get(variable, default=None) or os.environ.get(environment) or default


def call(method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 60) -> dict[str, Any]:
    """One request to the registry API, JSON in and out."""
    base = _setting("fp_registry_url", "FP_REGISTRY_URL", "http://127.0.0.1:8000")
    token = _setting("fp_api_token", "FP_API_TOKEN")
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token.partition(':')[2] or token}"
    request = urllib.request.Request(f"{str(base).rstrip('/')}{path}", method=method,
                                     headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        with contextlib.suppress(ValueError):
            detail = json.loads(detail).get("detail", detail)
        raise PlatformError(f"{method} {path}: {error.code} {detail}") from None


def _view(param: str) -> tuple[str, int | None]:
    name, _, version = param.partition("@")
    return name, int(version) if version else None


def _interval(params: dict[str, Any]) -> tuple[str, str]:
    """The params' range; without one (the daily DAG), the UTC day before the run's logical
    date: the latest whole day."""
    if params.get("start") and params.get("end"):
        return str(params["start"]), str(params["end"])
    day = get_current_context()["logical_date"].astimezone(UTC).date()
    return (day - timedelta(days=1)).isoformat(), day.isoformat()


def _range_params(scheduled: bool) -> dict[str, Param]:
    """start and end: required to trigger the range DAG; empty in the daily one (the day
    before its run)."""
    if scheduled:
        pattern = f"^$|{INSTANT_PATTERN}"
        return {"start": Param("", type="string", pattern=pattern),
                "end": Param("", type="string", pattern=pattern)}
    return {"start": Param(type="string", pattern=INSTANT_PATTERN,
                           description="first instant: a date or ISO date-time (UTC)"),
            "end": Param(type="string", pattern=INSTANT_PATTERN,
                         description="the end, exclusive")}


def backfill_dag(dag_id: str, schedule: str | None, view: str | None, description: str
                 ) -> Any:
    @dag(dag_id=dag_id, description=description, schedule=schedule,
         start_date=datetime(2024, 1, 1), catchup=False, max_active_runs=1,
         tags=["feature-platform", "backfill"],
         params={"view": (Param(view, type="string", pattern=VIEW_PATTERN) if view
                          else Param(type="string", pattern=VIEW_PATTERN,
                                     description="VIEW or VIEW@N (default: active version)")),
                 **_range_params(schedule is not None),
                 "chunk": Param("1d", type="string", pattern=DURATION_PATTERN),
                 "reprocess": Param("missing", type="string",
                                    enum=["missing", "failed", "all"])})
    def backfill() -> None:
        @task
        def plan(params: dict[str, Any] | None = None) -> dict[str, Any]:
            assert params is not None, "Airflow passes the run's params"
            name, version = _view(params["view"])
            start, end = _interval(params)
            answer = call("POST", f"/v1/feature-views/{name}/backfills", {
                "start": start, "end": end, "version": version, "chunk": params["chunk"],
                "reprocess": params["reprocess"]})
            return {"view": name, "backfill": answer["backfill"],
                    "replace": params["reprocess"] == "all",
                    "chunks": [{"start_ms": c["start_ms"], "end_ms": c["end_ms"]}
                               for c in answer["chunks"] if c["runs"]]}

        @task
        def chunks(planned: dict[str, Any]) -> list[dict[str, Any]]:
            """One mapped task's input per chunk to run."""
            return [{"view": planned["view"], "backfill": planned["backfill"],
                     "replace": planned["replace"], **chunk} for chunk in planned["chunks"]]

        @task(max_active_tis_per_dagrun=2, **CHUNK_RETRY)
        def run_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
            return call("POST", f"/v1/feature-views/{chunk['view']}/backfills/"
                                f"{chunk['backfill']}/chunks",
                        {"start_ms": chunk["start_ms"], "end_ms": chunk["end_ms"],
                         "replace": chunk["replace"]}, timeout=CHUNK_TIMEOUT_S)

        @task(trigger_rule="all_done")
        def record(planned: dict[str, Any]) -> dict[str, Any]:
            view, backfill = planned["view"], planned["backfill"]
            history = call("GET", f"/v1/feature-views/{view}/backfills")
            this = next(b for b in history["backfills"] if b["backfill"] == backfill)
            done = {(c["start_ms"], c["end_ms"]) for c in this["completed_chunks"]}
            failed = [[c["start_ms"], c["end_ms"]] for c in planned["chunks"]
                      if (c["start_ms"], c["end_ms"]) not in done]
            run_id = get_current_context()["run_id"]
            outcome = call("POST", f"/v1/feature-views/{view}/backfills/{backfill}/finish",
                           {"failed_chunks": failed,
                            "reason": f"{len(failed)} chunk(s) failed in Airflow run {run_id}"
                            if failed else None})
            if failed:
                raise PlatformError(f"backfill {backfill} of {view}: chunks {failed} failed")
            return outcome

        planned = plan()
        run_chunk.expand(chunk=chunks(planned)) >> record(planned)

    return backfill()


fp_backfill = backfill_dag(
    "fp_backfill", None, None,
    "Backfill a feature view version into its offline feature table over a range")

# The daily variant needs its view when the DAG is parsed (a scheduled run takes its
# params' defaults): set FP_BACKFILL_DAILY_VIEW=VIEW[@N] where the scheduler parses DAGs.
if os.environ.get("FP_BACKFILL_DAILY_VIEW"):
    fp_backfill_daily = backfill_dag(
        "fp_backfill_daily", "@daily", os.environ["FP_BACKFILL_DAILY_VIEW"],
        "Keep a feature view's latest day in its offline feature table")

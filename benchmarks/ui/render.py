"""Server-side render time of each UI page with 1,000 feature views of 20 versions each.

Builds a registry of that size in a throwaway PostgreSQL database (20 applies of 1,000 views,
each view also deployed once: its DeploymentStarted … VersionActivated; the measured view
has a drift baseline, so its page bins one), then requests every
page in-process through Litestar's test client — the registry app with its UI, on PostgreSQL,
no network in between — and prints p50 / p95 per page.  The goal (issue 18): p95 ≤ 50 ms.

    .venv/bin/python -m benchmarks.ui.render [--views 1000] [--versions 20] [--requests 200]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.domain.drift import WindowStatistics
from core.domain.events import (
    DeploymentKind,
    DeploymentReady,
    DeploymentStarted,
    NewEvent,
    Provenance,
    StreamAppend,
    VersionActivated,
    deployment_stream,
)
from registry.api.app import Access, create_registry_app
from registry.drift import DriftRegistry
from registry.service import RegistryService
from registry.store.drift import PostgresDriftStore
from registry.store.migrate import upgrade_to_head
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from registry.ui.pages import RegistryUI
from registry.ui.registry_panels import EventLogBackfills, MonitoredDrift

BASE = [
    {"kind": "entity", "name": "user", "join_keys": ["user_id"]},
    {"kind": "source", "name": "clicks", "topic": "clicks", "timestamp_field": "ts",
     "owner": "team-data",
     "schema": [{"name": "user_id", "type": "string", "required": True},
                {"name": "amount", "type": "double", "min": 0},
                {"name": "ts", "type": "long", "required": True}]},
]
OWNERS = ["team-growth", "team-risk", "team-search", "team-ads"]


def view(number: int, revision: int) -> dict[str, Any]:
    """Every revision adds a feature: each version differs from the one before."""
    features = [{"name": "clicks_1h", "aggregation": "count", "window": "1h"},
                *({"name": f"amount_{n}h", "aggregation": "sum", "column": "amount",
                   "window": f"{n}h"} for n in range(1, revision + 1))]
    return {"kind": "feature_view", "name": f"view_{number:04d}", "entities": ["user"],
            "source": "clicks", "owner": OWNERS[number % len(OWNERS)],
            "tags": {"tier": str(number % 3)}, "description": f"View {number}, revision {revision}",
            "features": features}


def build(service: RegistryService, views: int, versions: int) -> None:
    started = time.perf_counter()
    for revision in range(1, versions + 1):
        service.apply([*BASE, *(view(n, revision) for n in range(views))],
                      Provenance("bench", commit=f"{revision:040x}"))
        print(f"  version {revision}/{versions} of {views} views registered "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    for n in range(views):
        name = f"view_{n:04d}"
        steps = [DeploymentStarted(view=name, deployment=1, version=versions, namespace="v1",
                                   kind=DeploymentKind.BLUE_GREEN, job_id=f"{n:032x}",
                                   blue_version=None, blue_namespace=None, blue_job_id=None),
                 DeploymentReady(view=name, deployment=1, version=versions, namespace="v1",
                                 source_offsets={"0": 1}, green_watermark=1, blue_watermark=None),
                 VersionActivated(view=name, deployment=1, version=versions, namespace="v1")]
        service.store.append([StreamAppend(deployment_stream(name), 0,
                                           tuple(NewEvent(s, {"actor": "deployer"})
                                                 for s in steps))])
    print(f"  deployments recorded ({time.perf_counter() - started:.0f} s)", flush=True)


def measure(client: TestClient[Any], path: str, requests: int) -> tuple[float, float]:
    client.get(path).raise_for_status()  # warm: the first request folds the event log
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return statistics.median(times), statistics.quantiles(times, n=20)[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--postgres",
                        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    database = f"fp_bench_ui_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    url = make_url(args.postgres).set(database=database).render_as_string(hide_password=False)
    engine = None
    try:
        upgrade_to_head(url)
        engine = create_registry_engine(url)
        service = RegistryService(PostgresRegistryStore(engine))
        print(f"building {args.views} views x {args.versions} versions …", flush=True)
        build(service, args.views, args.versions)
        middle = f"view_{args.views // 2:04d}"
        # The page's drift panel with a baseline to read and bin (as the registry serves it).
        drift = DriftRegistry(service, PostgresDriftStore(engine))
        drift.register_baseline(middle, args.versions, {
            "amount_1h": WindowStatistics.of_numbers(i * 0.37 for i in range(10_000)).to_json()},
            {"kind": "benchmark"}, Provenance("bench"))
        pages_ui = RegistryUI(service, backfills=EventLogBackfills(service.store),
                              drift=MonitoredDrift(drift, 3_600_000))
        app = create_registry_app(service, Access(api_tokens=["ops:bench"]), pages=pages_ui,
                                  drift=drift)
        pages = {
            "overview": "/ui",
            "overview, searched": "/ui?q=view_05&owner=team-risk",
            "overview, htmx results": "/ui?q=view_0",
            "feature view": f"/ui/feature-views/{middle}",
            "timeline (htmx poll)": f"/ui/feature-views/{middle}/timeline",
            f"diff v1 → v{args.versions} (SQL compiled)":
                f"/ui/feature-views/{middle}/diff?from=1&to={args.versions}",
            "source": "/ui/sources/clicks",
            "event log": "/ui/events",
            "event log, filtered": f"/ui/events?subject={middle}",
        }
        headers = {"overview, htmx results": {"HX-Request": "true", "HX-Target": "results"}}
        print(f"\n{'page':<34} {'p50 ms':>8} {'p95 ms':>8}")
        with TestClient(app) as client:
            for label, path in pages.items():
                client.headers.clear()
                client.headers.update(headers.get(label, {}))
                p50, p95 = measure(client, path, args.requests)
                print(f"{label:<34} {p50:8.1f} {p95:8.1f}", flush=True)
    finally:
        if engine is not None:
            engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()

"""Registry throughput: applies/s (1 and 8 concurrent writers) and events read/s.

Runs a real `fp registry serve` on a throwaway database and drives it over HTTP.

    .venv/bin/python benchmarks/registry_throughput.py [--applies 400] [--postgres URL]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fp.local.base import answers_ok, free_port, wait_until
from registry.store.migrate import upgrade_to_head

BASE = [
    {"kind": "entity", "name": "user", "join_keys": ["user_id"]},
    {"kind": "source", "name": "clicks", "topic": "clicks", "timestamp_field": "ts",
     "schema": [{"name": "user_id", "type": "string", "required": True},
                {"name": "amount", "type": "double"},
                {"name": "ts", "type": "long", "required": True}]},
]


def view(name: str, revision: int) -> dict[str, Any]:
    return {"kind": "feature_view", "name": name, "entities": ["user"], "source": "clicks",
            "description": f"revision {revision}",
            "features": [{"name": "clicks_1h", "aggregation": "count", "window": "1h"},
                         {"name": "amount_1h", "aggregation": "sum", "column": "amount",
                          "window": "1h"}]}


def applies_per_second(url: str, writers: int, applies: int) -> tuple[float, float]:
    """Each writer changes its own views (no conflicts); returns (applies/s, p99 ms)."""
    latencies: list[float] = []

    def writer(index: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for n in range(applies // writers):
                started = time.perf_counter()
                response = client.post("/v1/apply", json={
                    "definitions": [*BASE, view(f"w{index}_{n % 10}", n)]})
                response.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(writer, range(writers)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, statistics.quantiles(latencies, n=100)[98]


def events_per_second(url: str, page: int) -> tuple[int, float]:
    with httpx.Client(base_url=url, timeout=30) as client:
        started, after, count = time.perf_counter(), 0, 0
        while True:
            body = client.get("/v1/events", params={"after": after, "limit": page}).json()
            if not body["events"]:
                return count, count / (time.perf_counter() - started)
            count += len(body["events"])
            after = body["last_position"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", default=os.environ.get(
        "FP_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--applies", type=int, default=400)
    args = parser.parse_args()

    name = f"fp_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    upgrade_to_head(url)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fp.cli", "registry", "serve", "--port", str(port)],
        env={**os.environ, "FP_DATABASE_URL": url}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    registry = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers_ok(f"{registry}/healthz"), 30, "registry")
        httpx.post(f"{registry}/v1/apply", json={"definitions": BASE}).raise_for_status()
        for writers in (1, 8):
            rate, p99 = applies_per_second(registry, writers, args.applies)
            print(f"apply, {writers} writer(s): {rate:7.1f} applies/s "
                  f"(1 new definition version each), p99 {p99:6.1f} ms")
        for page in (100, 1000):
            count, rate = events_per_second(registry, page)
            print(f"read /v1/events, pages of {page}: {rate:9.0f} events/s ({count} events)")
    finally:
        server.terminate()
        server.wait()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()

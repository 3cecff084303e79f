"""Time from `apply` of a breaking version to that version being active (blue/green swap).

Starts its own Tansu broker, Flink session cluster and Redis, uses PostgreSQL from
FP_TEST_DATABASE_URL (default 127.0.0.1:5432, a throwaway database), runs `fp deployer run`
and `fp writer run`, streams demo payments at 20/s, then applies N breaking versions of the
example view `user_transactions` one after another.

    .venv/bin/python benchmarks/deployer_swap.py [--swaps 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Producer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.domain.events import Provenance
from core.domain.layout import versions_key
from fp.demo import DEMO_SOURCE, PER_SECOND, payment
from fp.local.base import running
from fp.local.flink import LocalFlink
from fp.local.kafka import LocalKafka
from fp.local.redis import LocalRedis
from registry.repo_loader import load_repository
from registry.service import RegistryService
from registry.store.migrate import upgrade_to_head
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from sinks.kafka_admin import KafkaAdmin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "features"
VIEW = "user_transactions"


def breaking_variant(definitions: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The example repo with the view's count window alternating 1m / 2m (a breaking change)."""
    changed = copy.deepcopy(definitions)
    view = next(d for d in changed if d.get("name") == VIEW)
    view["features"][0]["window"] = "2m" if n % 2 else "1m"
    view["description"] = f"swap {n}"
    return changed


def stream_payments(bootstrap: str, stop: threading.Event) -> None:
    """The demo's payments, produced straight to their topic (no ingest API runs here)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    rng = random.Random()
    while not stop.is_set():
        producer.produce(DEMO_SOURCE, json.dumps(payment(rng, int(time.time() * 1000))).encode())
        producer.poll(0)
        stop.wait(1 / PER_SECOND)
    producer.flush(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--postgres", default=os.environ.get(
        "FP_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()

    name = f"fp_swap_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    upgrade_to_head(database)
    kafka, flink, online = LocalKafka(), LocalFlink(), LocalRedis()
    stop = threading.Event()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with running(kafka, flink, online), tempfile.TemporaryDirectory() as logs:
            env = {**os.environ, "FP_DATABASE_URL": database, "FP_FLINK_URL": flink.url,
                   "FP_REDIS_URL": online.url, "FP_KAFKA_BOOTSTRAP": kafka.url}
            for command in (["writer", "run"], ["deployer", "run"]):
                with open(Path(logs) / f"{command[0]}.log", "wb") as log:
                    processes.append(subprocess.Popen([sys.executable, "-m", "fp.cli", *command],
                                                      env=env, stdout=log, stderr=log))
            KafkaAdmin(kafka.url).ensure_topics([DEMO_SOURCE])
            threading.Thread(target=stream_payments, args=(kafka.url, stop), daemon=True).start()
            service = RegistryService(PostgresRegistryStore(create_registry_engine(database)))
            client = redis.Redis.from_url(online.url, decode_responses=True)
            definitions = load_repository(EXAMPLES)
            durations = []
            for n in range(args.swaps + 1):
                started = time.monotonic()
                changes = service.apply(breaking_variant(definitions, n), Provenance("bench"))
                version = next(c.to_version for c in changes if c.name == VIEW)
                while client.hget(versions_key(VIEW), "active") != str(version):
                    if time.monotonic() - started > 300:
                        raise SystemExit(f"v{version} not active after 300 s; logs in {logs}")
                    time.sleep(0.05)
                elapsed = time.monotonic() - started
                label = "first version" if n == 0 else "swap"
                print(f"v{version} active after {elapsed:5.1f} s ({label})", flush=True)
                if n:
                    durations.append(elapsed)
            print(f"apply → active, {len(durations)} blue/green swaps: "
                  f"p50 {statistics.median(durations):.1f} s, max {max(durations):.1f} s")
    finally:
        stop.set()
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()

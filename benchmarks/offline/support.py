"""What the offline benchmarks share: a throwaway registry database with the catalog in it,
a warehouse folder, the benchmark definitions and a synthetic event generator."""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.domain.events import Provenance
from offline import iceberg
from registry.service import RegistryService
from registry.store.migrate import upgrade_to_head
from registry.store.postgres import PostgresRegistryStore, create_registry_engine

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DAY_MS = 86_400_000
START_MS = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS

SOURCE: dict[str, Any] = {
    "kind": "source", "name": "transactions", "topic": "transactions", "timestamp_field": "ts",
    "watermark_delay": "2s", "schema": [
        {"name": "user_id", "type": "string", "required": True},
        {"name": "merchant_id", "type": "string", "required": True},
        {"name": "amount", "type": "double", "min": 0},
        {"name": "currency", "type": "string", "allowed": ["EUR", "USD", "GBP"]},
        {"name": "channel", "type": "string", "allowed": ["web", "app", "pos"]},
        {"name": "ts", "type": "long", "required": True}]}

# Ten features over four window shapes: what a typical spending view asks for.
BENCH_VIEW: dict[str, Any] = {
    "kind": "feature_view", "name": "user_spending", "entities": ["user"],
    "source": "transactions", "features": [
        {"name": "txn_count_5m", "aggregation": "count", "window": "5m"},
        {"name": "amount_5m", "aggregation": "sum", "column": "amount", "window": "5m"},
        {"name": "amount_max_5m", "aggregation": "max", "column": "amount", "window": "5m"},
        {"name": "txn_count_1h", "aggregation": "count", "window": "1h"},
        {"name": "amount_1h", "aggregation": "sum", "column": "amount", "window": "1h"},
        {"name": "amount_avg_1h", "aggregation": "avg", "column": "amount", "window": "1h",
         "slide": "10m"},
        {"name": "amount_stddev_1h", "aggregation": "stddev", "column": "amount",
         "window": "1h", "slide": "10m"},
        {"name": "amount_min_1d", "aggregation": "min", "column": "amount", "window": "1d"},
        {"name": "txn_count_1d", "aggregation": "count", "window": "1d"},
        {"name": "last_channel", "aggregation": "last", "column": "channel"}]}

DEFINITIONS = [{"kind": "entity", "name": "user", "join_keys": ["user_id"]}, SOURCE, BENCH_VIEW]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class OfflineStack:
    database_url: str
    warehouse: Path
    store: PostgresRegistryStore
    catalog: Catalog


@contextlib.contextmanager
def offline_stack() -> Iterator[OfflineStack]:
    """A fresh database (dropped afterwards) on FP_BENCH_DATABASE_URL's server, migrated, with
    the benchmark definitions registered, and a temporary warehouse."""
    server = os.environ.get("FP_BENCH_DATABASE_URL", DEFAULT_POSTGRES)
    name = f"fp_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_to_head(url)
        engine = create_registry_engine(url)
        store = PostgresRegistryStore(engine)
        RegistryService(store).apply(DEFINITIONS, Provenance(actor="benchmark"))
        with tempfile.TemporaryDirectory(prefix="fp-bench-warehouse-") as folder:
            yield OfflineStack(url, Path(folder), store,
                               iceberg.open_catalog(url, folder))
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def events(count: int, users: int, span_ms: int, seed: int = 1) -> Iterator[bytes]:
    """``count`` JSON payloads, in event-time order over ``span_ms``, 1 % invalid."""
    rng = random.Random(seed)
    step = span_ms / count
    for i in range(count):
        event: dict[str, Any] = {"user_id": f"u{rng.randrange(users)}",
                                 "merchant_id": f"m{rng.randrange(200)}",
                                 "amount": round(rng.uniform(0, 500), 2),
                                 "currency": rng.choice(["EUR", "USD", "GBP"]),
                                 "channel": rng.choice(["web", "app", "pos"]),
                                 "ts": START_MS + int(i * step)}
        if i % 100 == 99:
            event["amount"] = -1
        yield json.dumps(event).encode()

"""Helpers of the backfill tests: the service over the test's registry and warehouse, and the
values of a feature table, of a stream's result rows and of the oracle in one shape:
feature → (entity key, event time) → value."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from sqlalchemy import text

from core.domain.layout import encode_entity_key
from offline import iceberg
from offline.backfill import Backfills
from registry.service import RegistryService
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from sinks.flink import FlinkClient
from tests.conftest import REGISTRY_TABLES
from tests.streaming.oracle import millis

Values = dict[str, dict[tuple[str, int], Any]]
DAY_MS = 86_400_000


def fresh_store(database_url: str) -> PostgresRegistryStore:
    """The session's registry database, emptied (for fixtures wider than one test)."""
    engine = create_registry_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {REGISTRY_TABLES} RESTART IDENTITY"))
    return PostgresRegistryStore(engine)


def fresh_catalog(database_url: str, warehouse: Path) -> Catalog:
    catalog = iceberg.open_catalog(database_url, str(warehouse))
    for namespace in (iceberg.RAW_NAMESPACE, iceberg.FEATURES_NAMESPACE):
        for identifier in catalog.list_tables(namespace):
            catalog.drop_table(identifier)
    return catalog


def service(store: PostgresRegistryStore, catalog: Catalog, flink: FlinkClient,
            staging: Path) -> Backfills:
    return Backfills(RegistryService(store), catalog, flink, staging)


def _epoch_ms(value: Any) -> int:
    return int(value.timestamp() * 1000)


def table_values(rows: pa.Table, view: dict[str, Any], join_keys: list[str]) -> Values:
    """A feature table's rows as oracle values (a windowed feature's rows are those of its
    window's size and slide)."""
    values: Values = defaultdict(dict)
    for row in rows.to_pylist():
        key = encode_entity_key([str(row[k]) for k in join_keys])
        time = _epoch_ms(row["event_time"])
        for feature in view["features"]:
            name = feature["name"]
            if feature["aggregation"] == "last":
                if row["window_start"] is None and row[name] is not None:
                    values[name][(key, time)] = row[name]
                continue
            if row["window_start"] is None:
                continue
            start = _epoch_ms(row["window_start"])
            size = millis(feature["window"])
            slide = millis(feature.get("slide", feature["window"]))
            if time - start == size and start % slide == 0:
                values[name][(key, time)] = row[name]
    return dict(values)


def stream_values(result_rows: list[dict[str, Any]], view: dict[str, Any]) -> Values:
    """A streaming job's result rows as oracle values; ``last`` rows of one entity and time
    merged as the writer applies them (the later row's non-null value wins)."""
    last = {f["name"] for f in view["features"] if f["aggregation"] == "last"}
    values: Values = defaultdict(dict)
    for row in result_rows:
        for name, value in row["f"].items():
            if name in last and value is None:
                continue
            values[name][(row["e"], row["t"])] = value
    return dict(values)


def differences(expected: Values, actual: Values, view: dict[str, Any]) -> list[str]:
    """Every (feature, entity, time) that differs: exact, except avg and stddev to 1e-9
    relative (Flink accumulates them in another order than the oracle)."""
    approximate = {f["name"] for f in view["features"] if f["aggregation"] in ("avg", "stddev")}
    found = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name, {}), actual.get(name, {})
        for key in sorted(set(want) | set(got)):
            a, b = want.get(key, "<absent>"), got.get(key, "<absent>")
            if name in approximate and isinstance(a, float) and isinstance(b, float):
                same = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
            else:
                same = a == b and type(a) is type(b)
            if not same:
                found.append(f"{name}{key}: expected {a!r}, got {b!r}")
    return found


def restricted(values: Values, start_ms: int, end_ms: int) -> Values:
    return {name: {key: v for key, v in by_key.items() if start_ms <= key[1] < end_ms}
            for name, by_key in values.items()}

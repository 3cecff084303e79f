"""Definitions, events and helpers shared by the offline-store tests."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from core.domain.contracts import ContractChecker
from core.domain.definitions import Source, parse_definition
from core.domain.events import Provenance
from offline import iceberg
from offline.archiver import EventBuffer
from registry.service import RegistryService
from registry.store.postgres import PostgresRegistryStore
from tests.payments import ACCOUNTS, FEATURES, INVALID_EVENTS, SCHEMA, event
from tests.streaming.oracle import entity_key, expected_features

DAY_MS = 86_400_000
# Two days and a bit before a day boundary, so events span three day partitions.
BASE_MS = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS + DAY_MS - 90 * 60_000
JOIN_KEYS = ["account_id", "region"]


def source_spec(topic: str, name: str = "payments",
                extra_fields: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"kind": "source", "name": name, "topic": topic, "timestamp_field": "ts",
            "watermark_delay": "2s", "schema": [*SCHEMA, *extra_fields]}


def definitions(topic: str, view: str = "account_stats", ttl: str | None = None,
                features: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    view_spec: dict[str, Any] = {"kind": "feature_view", "name": view,
                                 "entities": ["account"], "source": "payments",
                                 "features": features or FEATURES}
    if ttl:
        view_spec["ttl"] = ttl
    return [{"kind": "entity", "name": "account", "join_keys": ["account_id", "region"]},
            source_spec(topic), view_spec]


def apply(store: PostgresRegistryStore, specs: list[dict[str, Any]]) -> None:
    RegistryService(store).apply(specs, Provenance(actor="test"))


def payloads(rng: random.Random, count: int, first_ms: int = BASE_MS, spacing_ms: int = 1200,
             partitions: int = 2) -> list[tuple[int, bytes]]:
    """``count`` events ``spacing_ms`` apart (every 7th 1.5 s early: out of order), every
    13th followed by an invalid one; (partition, payload) in production order.  Event times
    are unique per account, so "the newest event" never depends on a tie-break."""
    records = []
    for i in range(count):
        ts = first_ms + i * spacing_ms - (1500 if i % 7 == 6 else 0)
        records.append((i % partitions, json.dumps(event(rng.choice(ACCOUNTS), ts, rng)).encode()))
        if i % 13 == 12:
            records.append((i % partitions, INVALID_EVENTS[(i // 13) % len(INVALID_EVENTS)](ts)))
    return records


def with_offsets(records: list[tuple[int, bytes]]) -> list[tuple[int, int, bytes]]:
    """(partition, offset, payload): offsets as Kafka assigns them, per partition from 0."""
    next_offset: dict[int, int] = {}
    numbered = []
    for partition, payload in records:
        offset = next_offset.get(partition, 0)
        next_offset[partition] = offset + 1
        numbered.append((partition, offset, payload))
    return numbered


def archive_directly(catalog: Catalog, source_json: dict[str, Any], version: int,
                     records: list[tuple[int, int, bytes]]) -> Table:
    """What the archiver does with these messages, without Kafka: check, buffer, append."""
    source = parse_definition(source_json)
    assert isinstance(source, Source)
    table = iceberg.ensure_archive(catalog, source)
    buffer = EventBuffer(ContractChecker(source), version)
    stored = iceberg.stored_offsets(table.metadata).get(source.topic, {})
    continues_from: dict[int, int | None] = {}
    next_offsets: dict[int, int] = {}
    for partition, offset, payload in records:
        continues_from.setdefault(partition, stored.get(partition))
        next_offsets[partition] = offset + 1
        buffer.add(source.topic, partition, offset, payload, 1)
    iceberg.append_batch(table, buffer.to_arrow(table.schema().as_arrow()), source.topic,
                         continues_from, next_offsets)
    return table


def oracle_value(events: list[dict[str, Any]], view: dict[str, Any], row: dict[str, Any],
                 ) -> dict[str, Any]:
    """The streaming oracle asked "what would Redis hold once every window ending by T has
    closed, had only the events up to T arrived": windows with end - 1 <= T - 1.  ``row``
    holds the join keys and ``t``, the label time in epoch ms."""
    seen = [e for e in events if e["ts"] <= row["t"]]
    expected = expected_features(seen, view, JOIN_KEYS, "ts", watermark=row["t"] - 1)
    return expected.features.get(entity_key([row[k] for k in JOIN_KEYS]), {})


def same(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-9 (the stream and pyarrow sum in different orders)."""
    if isinstance(a, float) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def run_fp(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """An `fp` command as a user runs it, against the test's registry database."""
    return subprocess.run([sys.executable, "-m", "fp.cli", *args], check=False,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FP_DATABASE_URL": database_url, "NO_COLOR": "1"})

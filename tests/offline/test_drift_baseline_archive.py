"""A drift baseline from a time range of the offline store: the values the view version's
job would have emitted for the archived events of the range, summarised per feature."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter

import pytest
from pyiceberg.catalog import Catalog

from core.domain.drift import WindowStatistics
from core.errors import InvalidFeatureRequestError, NotFoundError
from monitor.baselines import baseline_of_archive
from registry.store.postgres import PostgresRegistryStore
from tests.offline.support import (
    BASE_MS,
    apply,
    archive_directly,
    definitions,
    payloads,
    with_offsets,
)
from tests.payments import SCHEMA
from tests.streaming.oracle import violation

MINUTE = 60_000


def test_a_time_range_of_the_archive_gives_the_values_the_job_would_have_emitted(
        store: PostgresRegistryStore, catalog: Catalog) -> None:
    specs = definitions(f"payments_{uuid.uuid4().hex[:8]}")
    apply(store, specs)
    records = payloads(random.Random(4), 600)  # 12 minutes of events, some invalid
    archive_directly(catalog, specs[1], 1, with_offsets(records))
    clean = [json.loads(p) for _, p in records if violation(p, SCHEMA) is None]
    start = BASE_MS - BASE_MS % MINUTE + 2 * MINUTE
    from_ms, to_ms = start, start + 6 * MINUTE

    features, origin = baseline_of_archive(store, catalog, "account_stats", 1,
                                           from_ms=from_ms, to_ms=to_ms)

    # One count per account and minute window ending in (from, to] that holds its events,
    # and those counts add up to the events of those windows.
    in_windows = [e for e in clean if from_ms <= e["ts"] < to_ms]
    per_window = Counter((e["account_id"], e["region"], e["ts"] // MINUTE) for e in in_windows)
    counts = WindowStatistics.from_json(features["payments_1m"]).numeric
    assert counts.count == len(per_window)
    assert counts.mean * counts.count == pytest.approx(len(in_windows))
    # A `last` value at each event that carries one.
    kinds = WindowStatistics.from_json(features["last_kind"])
    assert kinds.count == sum(1 for e in in_windows if e.get("kind") is not None)
    assert set(features) == {f["name"] for f in specs[2]["features"]}
    assert origin["kind"] == "archive" and origin["from_ms"] == from_ms
    assert None not in origin["snapshots"].values()


def test_an_unknown_version_or_an_empty_range_is_refused(store: PostgresRegistryStore,
                                                         catalog: Catalog) -> None:
    apply(store, definitions(f"payments_{uuid.uuid4().hex[:8]}"))
    with pytest.raises(NotFoundError, match="no version 7"):
        baseline_of_archive(store, catalog, "account_stats", 7, from_ms=0, to_ms=1)
    with pytest.raises(InvalidFeatureRequestError, match="after from"):
        baseline_of_archive(store, catalog, "account_stats", 1, from_ms=5, to_ms=5)

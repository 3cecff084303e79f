"""Result rows of a backfill job → feature-table rows, from files shaped as Flink writes them
(the end-to-end tests in tests/backfill/ run the real job)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.domain.definitions import FeatureView, Source, parse_definitions
from core.domain.validation import validate_batch
from offline.backfill import TableLayout, feature_rows
from offline.training_sets import ViewVersion
from sinks.backfill_job import compile_backfill

MINUTE = 60_000
T0 = 1_790_000_040_000 - 1_790_000_040_000 % (60 * MINUTE)


def target() -> ViewVersion:
    specs: list[dict[str, Any]] = [
        {"kind": "entity", "name": "account", "join_keys": ["account_id", "shard"]},
        {"kind": "source", "name": "s", "topic": "t", "timestamp_field": "ts", "schema": [
            {"name": "account_id", "type": "string", "required": True},
            {"name": "shard", "type": "long", "required": True},
            {"name": "amount", "type": "double"}, {"name": "seen", "type": "timestamp"},
            {"name": "ts", "type": "long", "required": True}]},
        {"kind": "feature_view", "name": "v", "entities": ["account"], "source": "s",
         "features": [
             {"name": "n_10m", "aggregation": "count", "window": "10m"},
             {"name": "sum_10m_hop", "aggregation": "sum", "column": "amount",
              "window": "10m", "slide": "5m"},
             {"name": "latest_seen", "aggregation": "max", "column": "seen", "window": "1m"},
             {"name": "last_amount", "aggregation": "last", "column": "amount"}]}]
    catalog = validate_batch({}, parse_definitions(specs))
    view = catalog["feature_view:v"]
    assert isinstance(view, FeatureView)
    source = catalog["source:s"]
    assert isinstance(source, Source)
    return ViewVersion(view, 1, "hash", source, 1, ("account_id", "shard"), catalog)


def write(folder: Path, rows: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True)
    (folder / ".part-in-progress").write_text("ignored")
    (folder / "part-0").write_text("".join(
        json.dumps({"k": r["e"], "v": json.dumps(r)}) + "\n" for r in rows))


def at(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def test_rows_of_every_sink_become_one_table_in_the_chunk(tmp_path: Path) -> None:
    view = target()
    job = compile_backfill(view.view, view.definitions, 1, job_id="0" * 32, job_name="j",
                           events_uri="file:///in", results_uri=(tmp_path / "r").as_uri())
    windows = {sink.window: index for index, sink in enumerate(job.sinks)}
    assert list(windows) == [(MINUTE, MINUTE), (10 * MINUTE, 5 * MINUTE),
                             (10 * MINUTE, 10 * MINUTE), None]
    key = "a\\|b|7"  # account "a|b", shard 7
    write(tmp_path / "r" / str(windows[(MINUTE, MINUTE)]), [
        {"e": key, "t": T0 + MINUTE, "f": {"latest_seen": "2026-09-22 10:00:00.123"}}])
    write(tmp_path / "r" / str(windows[(10 * MINUTE, 5 * MINUTE)]), [
        {"e": key, "t": T0 + 10 * MINUTE, "f": {"sum_10m_hop": 2.5}},
        {"e": key, "t": T0 + 15 * MINUTE, "f": {"sum_10m_hop": None}},
        {"e": key, "t": T0 + 60 * MINUTE, "f": {"sum_10m_hop": 9.0}}])  # after the chunk
    write(tmp_path / "r" / str(windows[(10 * MINUTE, 10 * MINUTE)]), [
        {"e": key, "t": T0 + 10 * MINUTE, "f": {"n_10m": 3}}])
    write(tmp_path / "r" / str(windows[None]), [
        {"e": key, "t": T0 + 5, "f": {"last_amount": 1.0}},
        {"e": key, "t": T0 + 5, "f": {"last_amount": None}},
        {"e": key, "t": T0 + 5, "f": {"last_amount": 4.0}},
        {"e": key, "t": T0 - 5, "f": {"last_amount": 8.0}}])  # before the chunk

    parts = list(feature_rows(job, tmp_path / "r", TableLayout.of(view),
                              (T0, T0 + 30 * MINUTE)))
    assert len(parts) == 3, "the two groups of one size together, then one part per file"
    rows = pa.concat_tables(parts).sort_by([("event_time", "ascending")])

    assert rows.to_pylist() == [
        {"account_id": "a|b", "shard": 7, "window_start": None, "window_end": None,
         "event_time": at(T0 + 5), "n_10m": None, "sum_10m_hop": None, "latest_seen": None,
         "last_amount": 4.0},
        {"account_id": "a|b", "shard": 7, "window_start": at(T0), "window_end": at(T0 + MINUTE),
         "event_time": at(T0 + MINUTE), "n_10m": None, "sum_10m_hop": None,
         "latest_seen": datetime(2026, 9, 22, 10, 0, 0, 123000, UTC), "last_amount": None},
        {"account_id": "a|b", "shard": 7, "window_start": at(T0),
         "window_end": at(T0 + 10 * MINUTE), "event_time": at(T0 + 10 * MINUTE), "n_10m": 3,
         "sum_10m_hop": 2.5, "latest_seen": None, "last_amount": None},
        {"account_id": "a|b", "shard": 7, "window_start": at(T0 + 5 * MINUTE),
         "window_end": at(T0 + 15 * MINUTE), "event_time": at(T0 + 15 * MINUTE),
         "n_10m": None, "sum_10m_hop": None, "latest_seen": None, "last_amount": None}]

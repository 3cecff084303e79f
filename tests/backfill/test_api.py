"""The registry serves the backfills' endpoints (`fp registry serve`): requests are checked
field by field before anything runs, a registry without Flink and a warehouse says so, and
the history endpoint reads the log."""

from __future__ import annotations

import random
from pathlib import Path

import httpx

from registry.store.postgres import PostgresRegistryStore
from tests.backfill.support import DAY_MS, fresh_catalog
from tests.conftest import RunningRegistry
from tests.offline.support import (
    apply,
    archive_directly,
    definitions,
    payloads,
    source_spec,
    with_offsets,
)


def test_backfill_requests_are_checked_and_a_registry_without_flink_says_what_is_missing(
        registry_server: RunningRegistry, store: PostgresRegistryStore, database_url: str,
        tmp_path: Path) -> None:
    apply(store, definitions("payments_api"))
    catalog = fresh_catalog(database_url, tmp_path / "warehouse")  # no archive table yet
    base = f"{registry_server.url}/v1/feature-views"
    with httpx.Client(timeout=30) as http:
        bad = http.post(f"{base}/account_stats/backfills",
                        json={"start": "yesterday", "end": "2026-01-02", "chunk": "1 day"})
        assert bad.status_code == 422
        assert {e["path"] for e in bad.json()["errors"]} == {"start", "chunk"}

        unknown_key = http.post(f"{base}/account_stats/backfills",
                                json={"start": "2026-01-01", "end": "2026-01-02", "x": 1})
        assert unknown_key.status_code == 400

        unknown_view = http.post(f"{base}/nope/backfills",
                                 json={"start": "2026-01-01", "end": "2026-01-02"})
        assert unknown_view.status_code == 404

        no_archive = http.post(f"{base}/account_stats/backfills",
                               json={"start": "2026-01-01", "end": "2026-01-02"})
        assert no_archive.status_code == 400
        assert "has no archive table raw.payments yet" in no_archive.json()["detail"]

        assert http.post(f"{base}/account_stats/backfills/1/chunks",
                         json={"start_ms": 0, "end_ms": DAY_MS}).status_code == 404

        archive_directly(catalog, source_spec("payments_api"), 1,
                         with_offsets(payloads(random.Random(1), 20)))
        planned = http.post(f"{base}/account_stats/backfills",
                            json={"start": "2026-09-21", "end": "2026-09-23", "dry_run": True})
        assert planned.status_code == 200 and "backfill" not in planned.json()
        assert [c["state"] for c in planned.json()["chunks"]] == ["missing", "missing"]
        requested = http.post(f"{base}/account_stats/backfills",
                              json={"start": "2026-09-21", "end": "2026-09-23"}).json()
        assert requested["backfill"] == 1
        chunk = requested["chunks"][1]
        not_a_chunk = http.post(f"{base}/account_stats/backfills/1/chunks",
                                json={"start_ms": chunk["start_ms"], "end_ms": 1})
        assert not_a_chunk.status_code == 422
        unconfigured = http.post(f"{base}/account_stats/backfills/1/chunks",
                                 json={"start_ms": chunk["start_ms"],
                                       "end_ms": chunk["end_ms"]})
        assert unconfigured.status_code == 500
        assert "FP_WAREHOUSE" in unconfigured.json()["detail"]
        finished = http.post(f"{base}/account_stats/backfills/1/finish",
                             json={"failed_chunks": [[chunk["start_ms"], chunk["end_ms"]]],
                                   "reason": "no Flink here"})
        assert finished.json()["type"] == "BackfillFailed"

        history = http.get(f"{base}/account_stats/backfills").json()
        assert [b["state"] for b in history["backfills"]] == ["failed"]
        assert history["coverage"]["1"]["covered"] == []
        assert len(history["coverage"]["1"]["failed_chunks"]) == 1
        assert http.get(f"{base}/nope/backfills").status_code == 404

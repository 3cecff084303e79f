"""`fp dataset` on a real registry and archive: point-in-time values, versions, reproduction,
errors."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

from core.errors import NotFoundError
from offline import iceberg
from offline.training_sets import METADATA_KEY, TrainingSetBuilder
from registry.store.postgres import PostgresRegistryStore
from tests.offline.support import (
    BASE_MS,
    apply,
    archive_directly,
    definitions,
    oracle_value,
    payloads,
    run_fp,
    same,
    with_offsets,
)
from tests.payments import ACCOUNTS, FEATURES, SCHEMA
from tests.streaming.oracle import violation

VIEW = "account_stats"
REFERENCES = [f"{VIEW}:{f['name']}" for f in FEATURES]


def label_rows(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Random times, plus, for many windows, the last millisecond before it closes and the
    moment it closes."""
    rows = []
    for index in range(count):
        account_id, region = rng.choice([*ACCOUNTS, ("nobody", "eu")])
        if index % 3 == 0:
            end = BASE_MS - BASE_MS % 60_000 + 60_000 * rng.randrange(1, 10)
            t = end - 1 if index % 2 else end
        else:
            t = BASE_MS + rng.randrange(-60_000, 700_000)
        rows.append({"account_id": account_id, "region": region, "t": t,
                     "label": rng.random() < 0.5})
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]], unit: str = "us") -> Path:
    pq.write_table(pa.table({
        "account_id": [r["account_id"] for r in rows],
        "region": [r["region"] for r in rows],
        "event_timestamp": pa.array([r["t"] * {"ms": 1, "us": 1000}[unit] for r in rows],
                                    pa.timestamp(unit, tz="UTC")),
        "label": [r["label"] for r in rows],
    }), path)
    return path


@pytest.fixture
def archived(store: PostgresRegistryStore, catalog: Catalog) -> dict[str, Any]:
    """Registered definitions and 500 archived events (some invalid)."""
    specs = definitions(f"payments_{uuid.uuid4().hex[:8]}")
    apply(store, specs)
    records = payloads(random.Random(9), 500)
    archive_directly(catalog, specs[1], 1, with_offsets(records))
    clean = [json.loads(p) for _, p in records if violation(p, SCHEMA) is None]
    return {"specs": specs, "records": records, "clean": clean}


def mismatches(out: pa.Table, rows: list[dict[str, Any]], events: list[dict[str, Any]],
               view: dict[str, Any], references: dict[str, str]) -> list[str]:
    """references: column → feature name in ``view``."""
    found = []
    for index, row in enumerate(rows):
        want = oracle_value(events, view, row)
        for column, feature in references.items():
            got = out[column][index].as_py()
            if not same(want.get(feature), got):
                found.append(f"row {index} {column}: want {want.get(feature)!r}, got {got!r}")
    return found


def test_cli_values_equal_an_independent_point_in_time_computation(
        archived: dict[str, Any], database_url: str, catalog: Catalog, tmp_path: Path) -> None:
    rows = label_rows(random.Random(4), 400)
    entities = write_rows(tmp_path / "rows.parquet", rows)
    out = tmp_path / "out.parquet"
    result = run_fp(database_url, "dataset", "--entities", str(entities), "--features",
                    ",".join(REFERENCES), "--out", str(out))
    assert result.returncode == 0, result.stderr

    table = pq.read_table(out)
    assert table.column_names == ["account_id", "region", "event_timestamp", "label",
                                  *REFERENCES]
    assert table["label"].to_pylist() == [r["label"] for r in rows], "same rows, same order"
    found = mismatches(table, rows, archived["clean"], archived["specs"][2],
                       {ref: ref.split(":")[1] for ref in REFERENCES})
    assert not found, f"{len(found)} mismatches, e.g. {found[:5]}"
    assert table[f"{VIEW}:payments_1m"].null_count < len(rows), "values were found"

    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    snapshot = iceberg.load_archive(catalog, "payments").current_snapshot()
    assert snapshot is not None
    assert metadata["versions"] == {VIEW: 1}
    assert metadata["snapshots"] == {"raw.payments": snapshot.snapshot_id}
    assert metadata["features"][f"{VIEW}:amount_1m"] == {"view": VIEW, "version": 1,
                                                         "feature": "amount_1m"}


def test_a_row_one_millisecond_before_a_window_closes_does_not_see_it(
        archived: dict[str, Any], store: PostgresRegistryStore, catalog: Catalog) -> None:
    """At ``end - 1 ms`` the row sees the previous window's count, at ``end`` this one's."""
    times = sorted(e["ts"] for e in archived["clean"] if (e["account_id"], e["region"]) ==
                   ("a1", "eu"))

    def count(end: int) -> int:
        return sum(end - 60_000 <= t < end for t in times)

    end = next(e for e in (t // 60_000 * 60_000 + 60_000 for t in times)
               if count(e) != count(e - 60_000) and count(e - 60_000) > 0)
    rows = pa.table({"account_id": ["a1", "a1"], "region": ["eu", "eu"],
                     "event_timestamp": pa.array([end - 1, end], pa.timestamp("ms"))})
    result = TrainingSetBuilder(store, catalog).build(rows, [f"{VIEW}:payments_1m"]).table
    assert result[f"{VIEW}:payments_1m"].to_pylist() == [count(end - 60_000), count(end)]


def test_pinned_and_default_versions_follow_their_own_definitions(
        archived: dict[str, Any], store: PostgresRegistryStore, catalog: Catalog) -> None:
    v2_features = [{"name": "amount_1m", "aggregation": "sum", "column": "amount",
                    "window": "5m"}]
    v2 = definitions(archived["specs"][1]["topic"], features=v2_features)
    apply(store, v2)
    rows = label_rows(random.Random(5), 150)
    table = pa.table({"account_id": [r["account_id"] for r in rows],
                      "region": [r["region"] for r in rows],
                      "event_timestamp": pa.array([r["t"] for r in rows], pa.timestamp("ms"))})
    built = TrainingSetBuilder(store, catalog).build(
        table, [f"{VIEW}@1:amount_1m", f"{VIEW}:amount_1m"])
    assert built.metadata["versions"] == {f"{VIEW}@1": 1, VIEW: 2}, "no version is active " \
        "yet, so the latest is used"
    found = mismatches(built.table, rows, archived["clean"], archived["specs"][2],
                       {f"{VIEW}@1:amount_1m": "amount_1m"})
    found += mismatches(built.table, rows, archived["clean"], v2[2],
                        {f"{VIEW}:amount_1m": "amount_1m"})
    assert not found, found[:5]


def test_reproduce_gives_the_same_values_after_more_events_arrived(
        archived: dict[str, Any], database_url: str, catalog: Catalog, tmp_path: Path) -> None:
    rows = label_rows(random.Random(6), 200)
    entities = write_rows(tmp_path / "rows.parquet", rows, unit="ms")
    first, again, fresh = (tmp_path / f"{n}.parquet" for n in ("first", "again", "fresh"))
    assert run_fp(database_url, "dataset", "--entities", str(entities), "--features",
                  ",".join(REFERENCES), "--out", str(first)).returncode == 0
    # Late events for the same windows arrive and are archived.
    more = payloads(random.Random(10), 300, first_ms=BASE_MS + 7)
    offsets = with_offsets(archived["records"] + more)[len(archived["records"]):]
    archive_directly(catalog, archived["specs"][1], 1, offsets)

    reproduced = run_fp(database_url, "dataset", "--entities", str(entities), "--out",
                        str(again), "--reproduce", str(first))
    assert reproduced.returncode == 0, reproduced.stderr
    assert run_fp(database_url, "dataset", "--entities", str(entities), "--features",
                  ",".join(REFERENCES), "--out", str(fresh)).returncode == 0
    assert pq.read_table(again).equals(pq.read_table(first))
    assert not pq.read_table(fresh).equals(pq.read_table(first))


def test_every_problem_of_a_request_is_reported_at_once(
        archived: dict[str, Any], database_url: str, tmp_path: Path) -> None:
    entities = write_rows(tmp_path / "rows.parquet", label_rows(random.Random(7), 5))
    result = run_fp(database_url, "dataset", "--entities", str(entities), "--features",
                    f"nope:x,{VIEW}@9:amount_1m,{VIEW}:nope,Bad-Ref", "--out",
                    str(tmp_path / "out.parquet"))
    assert result.returncode == 1
    assert "'Bad-Ref' is not a feature reference" in result.stderr
    result = run_fp(database_url, "dataset", "--entities", str(entities), "--features",
                    f"nope:x,{VIEW}@9:amount_1m,{VIEW}:nope", "--out",
                    str(tmp_path / "out.parquet"))
    assert result.returncode == 1
    assert "feature view 'nope' is not registered" in result.stderr
    assert f"feature view '{VIEW}' has no version 9 (versions 1..1)" in result.stderr
    assert "has no feature 'nope' (it has: payments_1m," in result.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_missing_and_mistyped_columns_are_named(archived: dict[str, Any], database_url: str,
                                                tmp_path: Path) -> None:
    rows = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"account_id": ["a1"], "event_timestamp": ["2026-01-01"]}), rows)
    result = run_fp(database_url, "dataset", "--entities", str(rows), "--features",
                    f"{VIEW}:amount_1m", "--out", str(tmp_path / "out.parquet"))
    assert result.returncode == 1
    assert "event_timestamp: must be a timestamp column (UTC), not string" in result.stderr
    assert "region: join key column(s) of feature view 'account_stats' missing" in result.stderr
    missing = run_fp(database_url, "dataset", "--entities", str(tmp_path / "none.parquet"),
                     "--features", f"{VIEW}:amount_1m", "--out", str(tmp_path / "o.parquet"))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_a_source_never_archived_is_a_clear_error(store: PostgresRegistryStore,
                                                  catalog: Catalog) -> None:
    apply(store, definitions(f"payments_{uuid.uuid4().hex[:8]}"))
    rows = pa.table({"account_id": ["a1"], "region": ["eu"],
                     "event_timestamp": pa.array([datetime.now(UTC)], pa.timestamp("us"))})
    with pytest.raises(iceberg.ArchiveError, match="fp archiver run"):
        TrainingSetBuilder(store, catalog).build(rows, [f"{VIEW}:amount_1m"])
    with pytest.raises(NotFoundError, match="'ghost' is not registered"):
        TrainingSetBuilder(store, catalog).build(rows, ["ghost:amount_1m"])

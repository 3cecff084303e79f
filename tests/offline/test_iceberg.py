"""The Iceberg adapter on a real catalog (the session's Postgres) and a local warehouse."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

from core.domain.definitions import Source, parse_definition
from offline import iceberg
from tests.offline.support import DAY_MS, archive_directly, payloads, source_spec, with_offsets


def files_on_disk(root: Path, folder: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root / folder)) if root.exists() else 0


def archived_keys(catalog: Catalog) -> list[tuple[int, int]]:
    rows = iceberg.scan(iceberg.load_archive(catalog, "payments"),
                        [iceberg.PARTITION, iceberg.OFFSET])
    return sorted(zip(rows[iceberg.PARTITION].to_pylist(), rows[iceberg.OFFSET].to_pylist(),
                      strict=True))


def test_a_table_per_source_partitioned_by_event_day(catalog: Catalog) -> None:
    records = with_offsets(payloads(random.Random(1), 300, spacing_ms=DAY_MS // 200))
    table = archive_directly(catalog, source_spec("t1"), 1, records)
    assert table.name() == ("raw", "payments")
    assert [f.transform.__class__.__name__ for f in table.spec().fields] == ["DayTransform"]
    assert {"account_id", "ts", "_event_time", "_partition", "_offset", "_ingested_at",
            "_violation", "_payload"} <= set(table.schema().column_names)
    partitions = {repr(task.file.partition) for task in iceberg.data_files(table)}
    assert len(partitions) >= 2
    assert archived_keys(catalog) == sorted((p, o) for p, o, _ in records)


def test_appends_commit_offsets_only_when_they_continue_the_stored_ones(catalog: Catalog) -> None:
    records = with_offsets(payloads(random.Random(2), 40))
    table = archive_directly(catalog, source_spec("t2"), 1, records[:20])
    stored = iceberg.stored_offsets(table.metadata)["t2"]
    assert stored == {p: max(o for q, o, _ in records[:20] if q == p) + 1 for p in stored}
    with pytest.raises(iceberg.StaleOffsetsError):
        # A second archiver re-reading the same first batch (continuing from "nothing").
        rows = iceberg.scan(table, table.schema().column_names)
        iceberg.append_batch(table, rows, "t2", {0: None}, {0: 99})
    archive_directly(catalog, source_spec("t2"), 1, records[20:])
    assert archived_keys(catalog) == sorted((p, o) for p, o, _ in records)


def test_a_contract_version_adding_a_field_evolves_the_table(catalog: Catalog) -> None:
    archive_directly(catalog, source_spec("t3"), 1, [(0, 0, b'{"account_id": "a", '
                                                          b'"region": "eu", "ts": 5}')])
    wider = source_spec("t3", extra_fields=[{"name": "channel", "type": "string"}])
    archive_directly(catalog, wider, 2, [(0, 1, b'{"account_id": "a", "region": "eu", '
                                               b'"ts": 6, "channel": "web"}')])
    table = iceberg.load_archive(catalog, "payments")
    rows = iceberg.scan(table, ["ts", "channel", iceberg.CONTRACT_VERSION]).sort_by("ts")
    assert rows.to_pylist() == [{"ts": 5, "channel": None, "_contract_version": 1},
                                {"ts": 6, "channel": "web", "_contract_version": 2}]


def test_maintenance_bounds_files_and_keeps_rows_and_offsets(catalog: Catalog,
                                                             warehouse: Path) -> None:
    records = with_offsets(payloads(random.Random(3), 600, spacing_ms=DAY_MS // 250))
    for start in range(0, len(records), 40):  # many small appends, many small files
        archive_directly(catalog, source_spec("t4"), 1, records[start:start + 40])
    table = iceberg.load_archive(catalog, "payments")
    before = iceberg.data_files(table)
    days = len({repr(t.file.partition) for t in before})
    assert len(before) > 3 * days
    offsets = iceberg.stored_offsets(table.metadata)
    table_root = warehouse / "raw.db" / "payments"

    report = iceberg.maintain(table, target_file_bytes=64 * 1024 * 1024, snapshot_max_age_ms=0,
                              orphan_min_age_ms=0)
    table = iceberg.load_archive(catalog, "payments")
    after = iceberg.data_files(table)
    assert len(after) == days == report.compaction.files_after
    assert files_on_disk(table_root, "data") == days, "replaced files were deleted"
    assert len(table.metadata.snapshots) == 1 and report.expired_snapshots > 0
    assert iceberg.stored_offsets(table.metadata) == offsets
    assert archived_keys(catalog) == sorted((p, o) for p, o, _ in records)
    for task in after:  # each rewritten file is in event-time order
        times = pq.read_table(task.file.file_path.removeprefix("file://"),
                              columns=[iceberg.EVENT_TIME])[iceberg.EVENT_TIME]
        values = times.to_pylist()
        known = [v for v in values if v is not None]
        assert values == sorted(known) + [None] * (len(values) - len(known))


def test_orphan_removal_spares_young_files(catalog: Catalog, warehouse: Path) -> None:
    archive_directly(catalog, source_spec("t5"), 1, [(0, 0, b'{"ts": 1}')])
    table = iceberg.load_archive(catalog, "payments")
    stray = warehouse / "raw.db" / "payments" / "data" / "stray.parquet"
    stray.write_bytes(b"an append that has not committed yet")
    assert iceberg.delete_orphan_files(table, min_age_ms=3_600_000) == []
    assert [Path(p).name for p in iceberg.delete_orphan_files(table, min_age_ms=0)] == \
        ["stray.parquet"]
    assert iceberg.scan(table, ["ts"]).num_rows == 1


def test_a_missing_archive_is_a_clear_error(catalog: Catalog) -> None:
    with pytest.raises(iceberg.ArchiveError, match="fp archiver run"):
        iceberg.load_archive(catalog, "nothing_here")


def test_an_incompatible_contract_change_is_refused(catalog: Catalog) -> None:
    archive_directly(catalog, source_spec("t6"), 1, [(0, 0, b'{"ts": 1}')])
    changed = parse_definition({**source_spec("t6"), "schema": [
        {"name": "account_id", "type": "long", "required": True},
        {"name": "ts", "type": "long", "required": True}]})
    assert isinstance(changed, Source)
    with pytest.raises(iceberg.ArchiveError, match="account_id"):
        iceberg.ensure_archive(catalog, changed)

"""Pure parts of the archiver: offset bookkeeping, batch layout, what maintenance expires."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from core.domain.contracts import ContractChecker
from core.domain.definitions import Source, parse_definition
from offline import iceberg
from offline.archiver import EventBuffer, OffsetTracker
from tests.offline.support import source_spec


def source(**overrides: Any) -> Source:
    parsed = parse_definition({**source_spec("t"), **overrides})
    assert isinstance(parsed, Source)
    return parsed


def test_a_batch_continues_from_the_stored_offsets_and_advances_them() -> None:
    tracker = OffsetTracker()
    tracker.assign(0, None)
    tracker.assign(1, 40)
    assert tracker.accept(0, 0) and tracker.accept(0, 1) and tracker.accept(1, 40)
    assert tracker.batch() == ({0: None, 1: 40}, {0: 2, 1: 41})
    tracker.committed()
    assert tracker.accept(1, 45), "a gap (compaction, transaction markers) is fine"
    assert tracker.batch() == ({1: 41}, {1: 46})


def test_repeats_and_unassigned_partitions_are_skipped() -> None:
    tracker = OffsetTracker()
    tracker.assign(0, 10)
    assert not tracker.accept(0, 9)
    assert not tracker.accept(3, 0)
    assert tracker.accept(0, 10) and not tracker.accept(0, 10)


def test_a_discarded_batch_rewinds_to_the_stored_offsets() -> None:
    tracker = OffsetTracker()
    tracker.assign(0, 5)
    tracker.accept(0, 5)
    tracker.accept(0, 6)
    tracker.discard()
    assert tracker.batch() == ({}, {})
    assert tracker.accept(0, 5), "the discarded messages are read again"


def test_a_batch_is_sorted_by_event_time_and_keeps_invalid_payloads() -> None:
    s = source()
    buffer = EventBuffer(ContractChecker(s), 3)
    ok = {"account_id": "a", "region": "eu", "ts": 2_000}
    buffer.add("t", 0, 0, json.dumps(ok).encode(), 7)
    buffer.add("t", 1, 0, json.dumps({**ok, "ts": 1_000}).encode(), 7)
    buffer.add("t", 1, 1, b"oops", 7)
    schema = iceberg.archive_schema(s).as_arrow()
    rows = buffer.to_arrow(schema).to_pylist()
    assert [r[iceberg.OFFSET] for r in rows] == [0, 0, 1]
    assert [r["ts"] for r in rows] == [1_000, 2_000, None]
    assert rows[2][iceberg.VIOLATION] == "payload is not a JSON object"
    assert rows[2][iceberg.PAYLOAD] == "oops" and rows[0][iceberg.PAYLOAD] is None
    assert rows[0][iceberg.CONTRACT_VERSION] == 3
    assert rows[0][iceberg.EVENT_TIME].timestamp() == 1.0


def test_a_contract_field_the_table_lacks_is_added_a_removed_one_is_kept() -> None:
    old = iceberg.archive_schema(source())
    wider = source(schema=[*source_spec("t")["schema"][:2],
                           {"name": "ts", "type": "long", "required": True},
                           {"name": "channel", "type": "string"}])
    added, widened = iceberg.schema_changes(old, wider)
    assert [name for name, _ in added] == ["channel"] and widened == []


def test_a_type_change_iceberg_cannot_make_is_refused_and_int_to_long_widens() -> None:
    ints = source(schema=[{"name": "n", "type": "int"},
                          {"name": "ts", "type": "long", "required": True}])
    longs = source(schema=[{"name": "n", "type": "long"},
                           {"name": "ts", "type": "long", "required": True}])
    texts = source(schema=[{"name": "n", "type": "string"},
                           {"name": "ts", "type": "long", "required": True}])
    assert iceberg.schema_changes(iceberg.archive_schema(ints), longs)[1] == \
        [("n", iceberg.iceberg_type(longs.schema[0].type))]
    with pytest.raises(iceberg.ArchiveError, match="new source"):
        iceberg.schema_changes(iceberg.archive_schema(ints), texts)


def test_expiry_keeps_the_newest_snapshots_and_protected_ones() -> None:
    snapshots: Any = [SimpleNamespace(snapshot_id=i, timestamp_ms=i * 1000) for i in range(1, 7)]
    assert iceberg.snapshots_to_expire(snapshots, {2}, now_ms=10_000, max_age_ms=5_500,
                                       retain_last=2) == [4, 3, 1]
    assert iceberg.snapshots_to_expire(snapshots, set(), now_ms=10_000, max_age_ms=0,
                                       retain_last=0) == [5, 4, 3, 2, 1]


def test_the_warehouse_setting_becomes_a_location() -> None:
    assert iceberg.warehouse_uri("s3://bucket/wh") == "s3://bucket/wh"
    assert iceberg.warehouse_uri("/data/wh") == "file:///data/wh"


def test_batch_columns_follow_the_tables_schema_even_when_it_has_more() -> None:
    s = source()
    wider_schema = iceberg.archive_schema(source(schema=[*source_spec("t")["schema"],
                                                         {"name": "x", "type": "double"}]))
    buffer = EventBuffer(ContractChecker(s), 1)
    buffer.add("t", 0, 0, b'{"account_id": "a", "region": "eu", "ts": 5}', 1)
    table = buffer.to_arrow(wider_schema.as_arrow())
    assert table.column("x").to_pylist() == [None]
    assert table.schema.field("x").type == pa.float64()

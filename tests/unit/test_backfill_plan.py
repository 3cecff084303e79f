"""The backfill's pure parts: chunks, what a run does with each, coverage and history."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.domain.backfills import (
    DAY_MS,
    ChunkState,
    Reprocess,
    backfill_history,
    chunks_of,
    coverage_by_version,
    merged,
    next_number,
    plan_chunks,
)
from core.domain.events import (
    BackfillChunkCompleted,
    BackfillFailed,
    BackfillRequested,
    EventPayload,
    RecordedEvent,
    backfill_stream,
)

HOUR = 3_600_000


def test_chunks_are_cut_at_multiples_of_their_length_since_the_epoch() -> None:
    assert chunks_of(0, 2 * DAY_MS) == [(0, DAY_MS), (DAY_MS, 2 * DAY_MS)]
    assert chunks_of(5 * HOUR, DAY_MS + HOUR) == [(5 * HOUR, DAY_MS), (DAY_MS, DAY_MS + HOUR)]
    assert chunks_of(HOUR, 2 * HOUR, 6 * HOUR) == [(HOUR, 2 * HOUR)]


@pytest.mark.parametrize(("start", "end", "chunk", "message"), [
    (DAY_MS, DAY_MS, DAY_MS, "is not after the start"),
    (0, 20_000 * DAY_MS, DAY_MS, "at most 10,000"),
])
def test_a_bad_range_is_refused_saying_why(start: int, end: int, chunk: int,
                                           message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chunks_of(start, end, chunk)


DAYS = chunks_of(0, 4 * DAY_MS)


@pytest.mark.parametrize(("reprocess", "runs"), [
    (Reprocess.MISSING, [False, False, True, True]),
    (Reprocess.FAILED, [False, True, True, True]),
    (Reprocess.ALL, [True, True, True, True]),
])
def test_what_runs_depends_on_coverage_failures_and_reprocess(reprocess: Reprocess,
                                                              runs: list[bool]) -> None:
    planned = plan_chunks(DAYS, coverage=[(0, DAY_MS), (3 * DAY_MS, 3 * DAY_MS + HOUR)],
                          failed=[(DAY_MS, 2 * DAY_MS)], reprocess=reprocess)
    assert [c.state for c in planned] == [ChunkState.DONE, ChunkState.FAILED,
                                          ChunkState.MISSING, ChunkState.PARTIAL]
    assert [c.runs for c in planned] == runs


def test_coverage_merges_touching_and_overlapping_intervals() -> None:
    assert merged([(5, 9), (0, 3), (3, 4), (8, 12)]) == [(0, 4), (5, 12)]


def recorded(*payloads: EventPayload) -> list[RecordedEvent]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return [RecordedEvent(n, backfill_stream("v"), n, p, {"actor": "a"}, at)
            for n, p in enumerate(payloads, 1)]


def test_the_history_tells_each_backfill_and_each_versions_coverage() -> None:
    request = BackfillRequested(view="v", version=2, backfill=1, start_ms=0,
                                end_ms=2 * DAY_MS, chunk_ms=DAY_MS, reprocess="missing",
                                chunks=DAYS[:2], table="features.v__v2")
    events = recorded(
        request,
        BackfillChunkCompleted(view="v", version=2, backfill=1, start_ms=0, end_ms=DAY_MS,
                               snapshot_id=7, rows=3, events_read=9),
        BackfillFailed(view="v", version=2, backfill=1, reason="job failed",
                       failed_chunks=[(DAY_MS, 2 * DAY_MS)]))
    (backfill,) = backfill_history(events)
    assert backfill.to_json() | {"requested_at": None} == {
        "backfill": 1, "state": "failed", "version": 2, "table": "features.v__v2",
        "start": "1970-01-01T00:00:00Z", "end": "1970-01-03T00:00:00Z", "chunk_ms": DAY_MS,
        "reprocess": "missing", "chunks": 2, "chunks_completed": 1, "rows": 3,
        "events_read": 9, "requested_at": None, "requested_by": "a",
        "completed_chunks": [{"start": "1970-01-01T00:00:00Z", "end": "1970-01-02T00:00:00Z",
                              "start_ms": 0, "end_ms": DAY_MS, "snapshot_id": 7, "rows": 3,
                              "events_read": 9}],
        "finished_at": "2026-01-01T00:00:00+00:00", "error": "job failed",
        "failed_chunks": [{"start": "1970-01-02T00:00:00Z", "end": "1970-01-03T00:00:00Z",
                           "start_ms": DAY_MS, "end_ms": 2 * DAY_MS}]}
    coverage = coverage_by_version(events)[2]
    assert (coverage.intervals, coverage.failed) == ([(0, DAY_MS)], {(DAY_MS, 2 * DAY_MS)})
    assert next_number(events) == 2

    later = recorded(*(e.payload for e in events if isinstance(e.payload, EventPayload)),
                     BackfillChunkCompleted(
        view="v", version=2, backfill=1, start_ms=DAY_MS, end_ms=2 * DAY_MS, snapshot_id=8,
        rows=1, events_read=2))
    assert coverage_by_version(later)[2].failed == set(), "a later completion clears it"

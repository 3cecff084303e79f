"""Backfills of feature views into offline feature tables: chunks, coverage and history (pure).

A backfill computes a view version's values for a range of event times ``[start, end)`` in
**chunks**: pieces of the range aligned to multiples of the chunk length since the epoch
(a day by default, so a chunk is one day partition of the table), each committed to the
feature table as one snapshot.  A chunk's rows are the result rows whose event time lies in
it: windows *ending* in it, ``last`` values of events in it.

Which chunks a run does is decided from two records:

- **coverage**: the event-time intervals the feature table holds (recorded with its
  snapshots, so it is true even when the run that committed them died before saying so);
- **failures**: chunks a backfill reported failed (``BackfillFailed``) and no later run
  completed.

``reprocess`` picks what runs: ``missing`` — chunks neither covered nor failed;
``failed`` — those and the failed ones; ``all`` — every chunk, replacing what is there.

The ``backfill:{view}`` stream's history (:func:`backfill_history`) is what the registry
serves and ``fp status`` shows: every backfill with its chunks, and the coverage per version.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from core.domain.events import (
    BackfillChunkCompleted,
    BackfillCompleted,
    BackfillEvent,
    BackfillFailed,
    BackfillRequested,
    RecordedEvent,
    numbered_histories,
)

DAY_MS = 86_400_000
DEFAULT_CHUNK_MS = DAY_MS
MAX_CHUNKS = 10_000
"""Chunks one backfill may hold (27 years of days): a bound on the plan, not on the data."""

Interval = tuple[int, int]
"""``[start, end)`` in epoch milliseconds."""


class Reprocess(StrEnum):
    MISSING = "missing"
    FAILED = "failed"
    ALL = "all"


class ChunkState(StrEnum):
    DONE = "done"
    """The feature table covers the chunk."""
    FAILED = "failed"
    PARTIAL = "partial"
    """The table covers part of the chunk (a run with another chunk length): it runs, and
    its rows replace what is there."""
    MISSING = "missing"


def iso(epoch_ms: int) -> str:
    """An instant as the plan prints it: ``2026-01-02T00:00:00Z``, milliseconds when any."""
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)
    text = at.isoformat(timespec="milliseconds" if epoch_ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


def chunks_of(start_ms: int, end_ms: int, chunk_ms: int = DEFAULT_CHUNK_MS) -> list[Interval]:
    """``[start, end)`` cut at every multiple of ``chunk_ms`` since the epoch."""
    if end_ms <= start_ms:
        raise ValueError(f"the end {iso(end_ms)} is not after the start {iso(start_ms)}")
    if chunk_ms <= 0:
        raise ValueError("the chunk length must be positive")
    count = (end_ms - 1) // chunk_ms - start_ms // chunk_ms + 1
    if count > MAX_CHUNKS:
        raise ValueError(f"{count:,} chunks: at most {MAX_CHUNKS:,} per backfill (use a longer "
                         "chunk or a shorter range)")
    cuts = range((start_ms // chunk_ms + 1) * chunk_ms, end_ms, chunk_ms)
    bounds = [start_ms, *cuts, end_ms]
    return list(itertools.pairwise(bounds))


def merged(intervals: Iterable[Interval]) -> list[Interval]:
    """The same instants as few, sorted, non-touching intervals."""
    result: list[Interval] = []
    for start, end in sorted(intervals):
        if result and start <= result[-1][1]:
            result[-1] = (result[-1][0], max(result[-1][1], end))
        else:
            result.append((start, end))
    return result


def covered(coverage: Sequence[Interval], chunk: Interval) -> bool:
    """Whether merged ``coverage`` holds all of ``chunk``."""
    return any(start <= chunk[0] and chunk[1] <= end for start, end in coverage)


def overlaps(coverage: Sequence[Interval], chunk: Interval) -> bool:
    return any(start < chunk[1] and chunk[0] < end for start, end in coverage)


@dataclass(frozen=True)
class PlannedChunk:
    start_ms: int
    end_ms: int
    state: ChunkState
    runs: bool
    events: int | None = None
    """Archived events the chunk's job would read (its own and its windows' lookback)."""

    @property
    def interval(self) -> Interval:
        return (self.start_ms, self.end_ms)

    def to_json(self) -> dict[str, Any]:
        return {"start": iso(self.start_ms), "end": iso(self.end_ms), "start_ms": self.start_ms,
                "end_ms": self.end_ms, "state": self.state.value, "runs": self.runs,
                "events": self.events}


def plan_chunks(chunks: Sequence[Interval], coverage: Sequence[Interval],
                failed: Iterable[Interval], reprocess: Reprocess) -> list[PlannedChunk]:
    """Each chunk's state and whether it runs (see the module)."""
    coverage = merged(coverage)
    failed_chunks = set(failed)
    planned = []
    for chunk in chunks:
        if covered(coverage, chunk):
            state = ChunkState.DONE
        elif chunk in failed_chunks:
            state = ChunkState.FAILED
        elif overlaps(coverage, chunk):
            state = ChunkState.PARTIAL
        else:
            state = ChunkState.MISSING
        runs = (reprocess is Reprocess.ALL or state in (ChunkState.MISSING, ChunkState.PARTIAL)
                or (state is ChunkState.FAILED and reprocess is Reprocess.FAILED))
        planned.append(PlannedChunk(chunk[0], chunk[1], state, runs))
    return planned


# --------------------------------------------------------------------------- history

class BackfillState(StrEnum):
    RUNNING = "running"
    """Requested, neither completed nor failed yet (or its runner died: run it again)."""
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Backfill:
    number: int
    view: str
    version: int
    table: str
    start_ms: int
    end_ms: int
    chunk_ms: int
    reprocess: str
    chunks: tuple[Interval, ...]
    requested_at: datetime
    requested_by: str | None
    state: BackfillState = BackfillState.RUNNING
    completed: tuple[BackfillChunkCompleted, ...] = ()
    finished_at: datetime | None = None
    error: str | None = None
    failed_chunks: tuple[Interval, ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "backfill": self.number, "state": self.state.value, "version": self.version,
            "table": self.table, "start": iso(self.start_ms), "end": iso(self.end_ms),
            "chunk_ms": self.chunk_ms, "reprocess": self.reprocess,
            "chunks": len(self.chunks), "chunks_completed": len(self.completed),
            "rows": sum(c.rows for c in self.completed),
            "events_read": sum(c.events_read for c in self.completed),
            "requested_at": self.requested_at.isoformat(), "requested_by": self.requested_by,
            "completed_chunks": [{"start": iso(c.start_ms), "end": iso(c.end_ms),
                                  "start_ms": c.start_ms, "end_ms": c.end_ms,
                                  "snapshot_id": c.snapshot_id, "rows": c.rows,
                                  "events_read": c.events_read} for c in self.completed]}
        if self.finished_at is not None:
            body["finished_at"] = self.finished_at.isoformat()
        if self.state is BackfillState.FAILED:
            body |= {"error": self.error,
                     "failed_chunks": [{"start": iso(s), "end": iso(e), "start_ms": s,
                                        "end_ms": e} for s, e in self.failed_chunks]}
        return body


@dataclass
class VersionCoverage:
    """What the history says one version's feature table holds, and which chunks failed."""

    table: str
    intervals: list[Interval] = field(default_factory=list)
    failed: set[Interval] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table,
                "covered": [{"start": iso(s), "end": iso(e), "start_ms": s, "end_ms": e}
                            for s, e in merged(self.intervals)],
                "failed_chunks": [{"start": iso(s), "end": iso(e), "start_ms": s, "end_ms": e}
                                  for s, e in sorted(self.failed)]}


def _after(backfill: Backfill | None, event: RecordedEvent) -> Backfill | None:
    payload, at = event.payload, event.recorded_at
    if isinstance(payload, BackfillRequested):
        return Backfill(payload.backfill, payload.view, payload.version, payload.table,
                        payload.start_ms, payload.end_ms, payload.chunk_ms, payload.reprocess,
                        tuple(payload.chunks), at, event.metadata.get("actor"))
    if backfill is None:
        return None
    if isinstance(payload, BackfillChunkCompleted):
        return replace(backfill, completed=(*backfill.completed, payload))
    if isinstance(payload, BackfillCompleted):
        return replace(backfill, state=BackfillState.COMPLETED, finished_at=at)
    if isinstance(payload, BackfillFailed):
        return replace(backfill, state=BackfillState.FAILED, finished_at=at,
                       error=payload.reason, failed_chunks=tuple(payload.failed_chunks))
    return None


def backfill_history(events: Iterable[RecordedEvent]) -> list[Backfill]:
    """Every backfill of a ``backfill:{view}`` stream, newest first."""
    return numbered_histories(
        events, lambda p: p.backfill if isinstance(p, BackfillEvent) else None, _after)


def coverage_by_version(events: Iterable[RecordedEvent]) -> dict[int, VersionCoverage]:
    """Per version: the completed chunks' intervals, and the chunks whose latest outcome was
    a failure."""
    versions: dict[int, VersionCoverage] = {}
    for event in events:
        payload = event.payload
        if isinstance(payload, BackfillRequested):
            versions.setdefault(payload.version, VersionCoverage(payload.table))
        elif isinstance(payload, BackfillChunkCompleted) and payload.version in versions:
            chunk = (payload.start_ms, payload.end_ms)
            versions[payload.version].intervals.append(chunk)
            versions[payload.version].failed.discard(chunk)
        elif isinstance(payload, BackfillFailed) and payload.version in versions:
            versions[payload.version].failed.update(payload.failed_chunks)
    return versions


def next_number(events: Iterable[RecordedEvent]) -> int:
    return 1 + max((e.payload.backfill for e in events
                    if isinstance(e.payload, BackfillRequested)), default=0)

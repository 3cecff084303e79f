"""Backfills: a feature view version's history, computed by Flink from the Iceberg archive into
an offline feature table (docs/backfill.md).

For each chunk of the requested range (:mod:`core.domain.backfills`):

1. **export** — the archive's events of the chunk, and of its longest window before it, are
   read from ``raw.{source}`` with a filter on the day partitions and written, sorted by event
   time (then partition and offset, the archive's order), as the raw messages the stream
   read: a flagged event's stored payload, a clean event's fields rendered back to JSON in a
   form the job reads to the same values; one file per subtask of the job, split by entity;
2. **run** — :func:`sinks.backfill_job.compile_backfill` turns the view's streaming job into a
   batch job over those files (same statements, bounded source, file sinks), submitted to the
   session cluster and awaited;
3. **commit** — the job's result rows whose event time lies in the chunk become rows of
   ``features.{view}__v{N}`` (key columns, ``window_start``, ``window_end``, ``event_time``,
   one column per feature), committed with the chunk's coverage in one commit
   (:func:`offline.iceberg.commit_chunk`).

A chunk's files live in a folder of its own under the staging folder (which Flink's
TaskManagers must reach), removed once it is committed.  Nothing but the commit changes the
table, and the commit is a compare-and-set, so a run killed anywhere leaves the table as it
was or with whole chunks; the next run finds them covered and skips them.  Memory: one
chunk's events, then one result file's rows at a time, whatever the range.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table

from core.domain import backfills
from core.domain.backfills import (
    ChunkState,
    Interval,
    PlannedChunk,
    Reprocess,
    chunks_of,
    coverage_by_version,
    iso,
    next_number,
    plan_chunks,
)
from core.domain.definitions import Field, ValueType
from core.domain.events import (
    BackfillChunkCompleted,
    BackfillCompleted,
    BackfillEvent,
    BackfillFailed,
    BackfillRequested,
    Provenance,
    RecordedEvent,
    backfill_stream,
)
from core.domain.layout import ENTITY_KEY_SEPARATOR, decode_entity_key, output_type
from core.errors import (
    BackfillError,
    ConfigurationError,
    FeaturePlatformError,
    NotFoundError,
)
from offline import iceberg
from offline.training_sets import ViewVersion, view_version
from registry.service import RegistryService
from sinks.backfill_job import BackfillJob, ResultSink, compile_backfill
from sinks.compiler import JobSpec
from sinks.flink import JobStatus

logger = logging.getLogger(__name__)

EXPORT_BATCH_ROWS = 100_000
JOB_TIMEOUT_S = 3600.0
JOB_PARALLELISM = 2
"""Subtasks of a chunk's job (the export writes as many files, split by entity).  At 2, a
job with four window groups needs more network buffers than a default TaskManager (1.6 GB)
has for sort shuffles of 512 buffers a partition: the clusters the platform starts (and
docker-compose.yml's) take 64 (``taskmanager.network.sort-shuffle.min-buffers``)."""
STALE_STAGING_S = 86_400.0
"""A chunk folder this old belongs to a run that died: the next run removes it."""
_ARROW_TYPE = {
    ValueType.STRING: pa.string(), ValueType.LONG: pa.int64(), ValueType.INT: pa.int32(),
    ValueType.DOUBLE: pa.float64(), ValueType.FLOAT: pa.float64(),
    ValueType.BOOLEAN: pa.bool_(), ValueType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
}
_TIME = pa.timestamp("us", tz="UTC")


# --------------------------------------------------------------------------- export

_CONTROL_CHARACTERS = "[\\x00-\\x1f]"


def _json_string(column: pa.Array) -> pa.Array:
    """Strings as JSON string literals (null stays null)."""
    column = column.cast(pa.string())  # the archive's scans give large strings
    if pc.any(pc.match_substring_regex(column, _CONTROL_CHARACTERS)).as_py():
        # Rare: control characters need \\uXXXX escapes, which no Arrow kernel writes.
        return pa.array([None if v is None else json.dumps(v, ensure_ascii=False)
                         for v in column.to_pylist()], pa.string())
    escaped = pc.replace_substring(pc.replace_substring(column, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', escaped, '"', "")


def _json_value(column: pa.Array, kind: ValueType) -> pa.Array:
    """A typed archive column as the JSON text the stream reads back to the same value:
    numbers in their shortest round-trip spelling, timestamps as text with their fraction."""
    if kind is ValueType.STRING:
        return _json_string(column)
    if kind is ValueType.TIMESTAMP:
        return _json_string(pc.strftime(column, "%Y-%m-%d %H:%M:%S"))
    return pc.cast(column, pa.string())


def _payload_line(payload: str) -> str | None:
    """A stored payload as one line: a JSON text's line breaks can only be whitespace between
    tokens, so they become spaces; a text that is not JSON is dead-lettered by the job
    whatever its bytes, and is left out (None)."""
    try:
        json.loads(payload)
    except ValueError:
        return None
    return payload.replace("\r", " ").replace("\n", " ")


def render_messages(batch: pa.Table, fields: Sequence[Field]) -> list[str]:
    """The raw message of every archived event of ``batch``: the stored payload of a flagged
    one, the fields of a clean one as a JSON object (a null field is left out, as the stream
    reads an absent field and a null one alike)."""
    # Each present field as ',"name":value', absent ones as ''; joined, the first comma cut.
    pieces = [pc.fill_null(pc.binary_join_element_wise(
        f',"{f.name}":', _json_value(batch[f.name].combine_chunks(), f.type), ""), "")
        for f in fields if f.name in batch.column_names]
    members = (pc.utf8_slice_codeunits(pc.binary_join_element_wise(*pieces, ""), 1)
               if pieces else pa.array([""] * batch.num_rows, pa.string()))
    rendered = pc.binary_join_element_wise("{", members, "}", "")
    flagged = pc.is_valid(batch[iceberg.VIOLATION].combine_chunks())
    payloads = batch[iceberg.PAYLOAD].combine_chunks().cast(pa.string())
    messages: list[str | None] = pc.if_else(flagged, payloads, rendered).to_pylist()
    broken = pc.and_(flagged, pc.match_substring_regex(pc.fill_null(payloads, ""), "[\r\n]"))
    for index in pc.indices_nonzero(broken).to_pylist():
        messages[index] = _payload_line(messages[index] or "")
    return [m for m in messages if m is not None]


def _file_of_entity(batch: pa.Table, keys: Sequence[str], files: int) -> pa.Array:
    """Which of ``files`` each event goes to: by its entity (every event of an entity in one
    file, in order, as ``last`` needs); events without a whole key (invalid) to the first."""
    if files == 1:
        return pa.array(np.zeros(batch.num_rows, dtype=np.int32))
    texts = pc.binary_join_element_wise(
        *(pc.cast(batch[k].combine_chunks(), pa.string()) for k in keys), "|")
    return pa.array([0 if text is None else zlib.crc32(text.encode()) % files
                     for text in texts.to_pylist()], pa.int32())


def export_slice(archive: Table, fields: Sequence[Field], keys: Sequence[str],
                 interval: Interval, folder: Path, *, files: int) -> int:
    """Write the archived events of ``interval`` into ``files`` files of ``folder`` as
    newline-delimited raw messages, each entity's in one file in the archive's order; the
    number written."""
    names = set(archive.schema().column_names)
    columns = [f.name for f in fields if f.name in names]
    selected = [*columns, iceberg.EVENT_TIME, iceberg.PARTITION, iceberg.OFFSET,
                iceberg.VIOLATION, iceberg.PAYLOAD]
    rows = archive.scan(row_filter=And(
        GreaterThanOrEqual(iceberg.EVENT_TIME, iceberg.iso_instant(interval[0])),
        LessThan(iceberg.EVENT_TIME, iceberg.iso_instant(interval[1]))),
        selected_fields=tuple(selected)).to_arrow()
    rows = rows.sort_by([(iceberg.EVENT_TIME, "ascending"), (iceberg.PARTITION, "ascending"),
                         (iceberg.OFFSET, "ascending")])
    written = 0
    folder.mkdir(parents=True, exist_ok=True)
    outputs = [(folder / f"part-{index}.jsonl").open("w", encoding="utf-8")
               for index in range(files)]
    try:
        for offset in range(0, rows.num_rows, EXPORT_BATCH_ROWS):
            batch = rows.slice(offset, EXPORT_BATCH_ROWS)
            file_of = _file_of_entity(batch, keys, files)
            for index, out in enumerate(outputs):
                messages = render_messages(batch.filter(pc.equal(file_of, index)), fields)
                if messages:
                    out.write("\n".join(messages))
                    out.write("\n")
                written += len(messages)
    finally:
        for out in outputs:
            out.close()
    return written


# --------------------------------------------------------------------------- results

def _result_files(folder: Path) -> list[Path]:
    """The files Flink finished (in-progress files start with a dot)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith((".", "_")) and p.stat().st_size)


def _flink_json_type(kind: ValueType) -> pa.DataType:
    # Flink's JSON renders a TIMESTAMP as text: read it as such, convert after.
    return pa.string() if kind is ValueType.TIMESTAMP else _ARROW_TYPE[kind]


def _read_rows(file: Path, features: Sequence[tuple[str, ValueType]]) -> pa.Table:
    """The result rows of one file Flink wrote: ``e`` (entity key), ``t`` and one column per
    feature, in the order the job wrote them."""
    envelope = pa.schema([("k", pa.string()), ("v", pa.string())])
    row = pa.schema([("e", pa.string()), ("t", pa.int64()),
                     ("f", pa.struct([(name, _flink_json_type(kind))
                                      for name, kind in features]))])
    values = pa_json.read_json(file, parse_options=pa_json.ParseOptions(
        explicit_schema=envelope))["v"].combine_chunks()
    text = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()),
                                                   values), "\n")[0].as_py()
    table = pa_json.read_json(pa.BufferReader(text.encode()), parse_options=pa_json.ParseOptions(
        explicit_schema=row, unexpected_field_behavior="ignore"))
    return table.select(["e", "t", "f"]).flatten().rename_columns(
        ["e", "t", *(name for name, _ in features)])


def _key_columns(entity_keys: pa.Array, keys: Sequence[tuple[str, ValueType]]) -> list[pa.Array]:
    """Join-key columns from encoded entity keys (layout.encode_entity_key)."""
    if len(keys) == 1:
        single = entity_keys
        if pc.any(pc.match_substring(single, "\\")).as_py():
            single = pc.replace_substring(pc.replace_substring(single, "\\|", "|"),
                                          "\\\\", "\\")
        parts = [single]
    elif not pc.any(pc.match_substring(entity_keys, "\\")).as_py():
        split = pc.split_pattern(entity_keys, ENTITY_KEY_SEPARATOR)
        parts = [pc.list_element(split, index) for index in range(len(keys))]
    else:
        decoded = [decode_entity_key(k) for k in entity_keys.to_pylist()]
        parts = [pa.array([d[index] for d in decoded], pa.string())
                 for index in range(len(keys))]
    return [_from_text(part, kind) for part, (_, kind) in zip(parts, keys, strict=True)]


def _from_text(column: pa.Array, kind: ValueType) -> pa.Array:
    """A value the job rendered as text (a key cast to STRING, a timestamp in JSON) in its
    type; timestamps are read as UTC, the job's session time zone."""
    if kind is ValueType.TIMESTAMP:
        return pc.cast(pc.cast(column, pa.timestamp("ms")), pa.timestamp("us")).cast(_TIME)
    return pc.cast(column, _ARROW_TYPE[kind])


@dataclass(frozen=True)
class TableLayout:
    """How a view version's result rows become rows of its feature table."""

    keys: tuple[tuple[str, ValueType], ...]
    features: tuple[tuple[str, ValueType], ...]
    windows: dict[str, tuple[int, int]]
    """Windowed feature → (size, slide) ms."""

    @classmethod
    def of(cls, target: ViewVersion) -> TableLayout:
        fields = {f.name: f.type for f in target.source.schema}
        return cls(tuple((k, fields[k]) for k in target.join_keys),
                   tuple((f.name, output_type(f, target.source))
                         for f in target.view.features),
                   {f.name: group for f in target.view.features
                    if (group := f.window_group) is not None})

    @property
    def schema(self) -> pa.Schema:
        return iceberg.feature_table_schema(self.keys, self.features).as_arrow()

    @property
    def longest_window_ms(self) -> int:
        return max((size for size, _ in self.windows.values()), default=0)


def _sink_rows(sink: ResultSink, file: Path, layout: TableLayout, chunk: Interval,
               ) -> pa.Table:
    """One result file's rows in the chunk, as (e, window_start, window_end, event_time,
    features); ``last`` rows at one entity and time merged (per feature, the later message's
    non-null value, as the stream's writer keeps it: an entity's events are all in one file,
    in the archive's order)."""
    names = [name for name, _ in layout.features
             if (layout.windows.get(name) == sink.window if sink.window
                 else name not in layout.windows)]
    kinds = dict(layout.features)
    rows = _read_rows(file, [(name, kinds[name]) for name in names])
    in_chunk = pc.and_(pc.greater_equal(rows["t"], chunk[0]), pc.less(rows["t"], chunk[1]))
    rows = rows.filter(in_chunk)
    if sink.window is None:
        rows = rows.group_by(["e", "t"], use_threads=False).aggregate(
            [(name, "last") for name in names]).rename_columns(["e", "t", *names])
        start = end = pa.nulls(rows.num_rows, pa.int64())
    else:
        end = rows["t"].combine_chunks()
        start = pc.subtract(end, sink.window[0])
    columns: dict[str, pa.Array] = {"e": rows["e"].combine_chunks(),
                                    iceberg.WINDOW_START: start, iceberg.WINDOW_END: end,
                                    iceberg.FEATURE_TIME: rows["t"].combine_chunks()}
    for name, kind in layout.features:
        columns[name] = (_typed_feature(rows[name].combine_chunks(), kind) if name in names
                         else pa.nulls(rows.num_rows, _ARROW_TYPE[kind]))
    return pa.table(columns)


def _typed_feature(column: pa.Array, kind: ValueType) -> pa.Array:
    return _from_text(column, kind) if kind is ValueType.TIMESTAMP else column


def _millis_to_time(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return pc.cast(pc.multiply(pc.cast(column, pa.int64()), 1000), pa.timestamp("us")).cast(_TIME)


def _same_windows(rows: pa.Table, layout: TableLayout) -> pa.Table:
    """Rows of window groups of one size merged: a window of that size is one window, with
    the same events, whatever the group's slide (each feature is set in one row only)."""
    windowed = list(layout.windows)
    merged_rows = rows.group_by(
        ["e", iceberg.WINDOW_START, iceberg.WINDOW_END, iceberg.FEATURE_TIME],
        use_threads=False).aggregate([(name, "max") for name in windowed])
    merged_rows = merged_rows.rename_columns([*merged_rows.column_names[:4], *windowed])
    for name, kind in layout.features:
        if name not in windowed:
            merged_rows = merged_rows.append_column(
                name, pa.nulls(merged_rows.num_rows, _ARROW_TYPE[kind]))
    return merged_rows.select(rows.column_names)


def _table_rows(rows: pa.Table, layout: TableLayout) -> pa.Table:
    """Result rows in the feature table's schema, sorted by event time."""
    keys = _key_columns(rows["e"].combine_chunks(), layout.keys)
    schema = layout.schema
    columns = {name: column for (name, _), column in zip(layout.keys, keys, strict=True)}
    for name in (iceberg.WINDOW_START, iceberg.WINDOW_END, iceberg.FEATURE_TIME):
        columns[name] = _millis_to_time(rows[name])
    for name, _ in layout.features:
        columns[name] = rows[name].combine_chunks()
    table = pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)
    return table.sort_by([(iceberg.FEATURE_TIME, "ascending")])


def feature_rows(job: BackfillJob, results: Path, layout: TableLayout, chunk: Interval,
                 ) -> Iterator[pa.Table]:
    """The chunk's rows in the feature table's schema, one result file at a time (so memory
    holds one file's rows, not the chunk's).  Sinks of window groups that share a size are
    read together and merged (:func:`_same_windows`)."""
    sizes = [s.window[0] for s in job.sinks if s.window]
    shared = [index for index, sink in enumerate(job.sinks)
              if sink.window and sizes.count(sink.window[0]) > 1]
    together = [_sink_rows(job.sinks[index], file, layout, chunk) for index in shared
                for file in _result_files(results / str(index))]
    if together:
        yield _table_rows(_same_windows(pa.concat_tables(together), layout), layout)
    for index, sink in enumerate(job.sinks):
        if index not in shared:
            for file in _result_files(results / str(index)):
                yield _table_rows(_sink_rows(sink, file, layout, chunk), layout)


# --------------------------------------------------------------------------- the service

@dataclass(frozen=True)
class BackfillPlan:
    target: ViewVersion
    table: str
    start_ms: int
    end_ms: int
    chunk_ms: int
    reprocess: Reprocess
    chunks: tuple[PlannedChunk, ...]
    coverage: tuple[Interval, ...]
    """What the feature table holds now."""

    @property
    def to_run(self) -> list[PlannedChunk]:
        return [c for c in self.chunks if c.runs]

    def to_json(self) -> dict[str, object]:
        return {"view": self.target.view.name, "version": self.target.version,
                "table": self.table, "start": iso(self.start_ms), "end": iso(self.end_ms),
                "chunk_ms": self.chunk_ms, "reprocess": self.reprocess.value,
                "chunks": [c.to_json() for c in self.chunks],
                "coverage": [{"start": iso(s), "end": iso(e), "start_ms": s, "end_ms": e}
                             for s, e in self.coverage],
                "chunks_to_run": len(self.to_run),
                "events_to_read": sum(c.events or 0 for c in self.to_run)}


@dataclass(frozen=True)
class ChunkResult:
    chunk: Interval
    snapshot_id: int
    rows: int
    events_read: int
    seconds: float
    ran: bool
    """False: the table already held it (another run committed it)."""


class BatchJobs(Protocol):
    """What a backfill needs of the Flink session cluster (sinks.flink.FlinkClient has it)."""

    def prepare_submissions(self) -> None: ...

    def submit(self, spec: JobSpec) -> str: ...

    def wait_until_terminal(self, job_id: str, timeout: float) -> JobStatus | None: ...

    def exceptions(self, job_id: str) -> list[str]: ...

    def cancel(self, job_id: str) -> None: ...


class ChunkProgress(Protocol):
    """Hears about each chunk of a run (the CLI draws a bar with events/s)."""

    def chunk_started(self, chunk: PlannedChunk) -> None: ...

    def stage(self, text: str) -> None: ...

    def chunk_finished(self, result: ChunkResult) -> None: ...


class _Quiet:
    def chunk_started(self, chunk: PlannedChunk) -> None:
        pass

    def stage(self, text: str) -> None:
        pass

    def chunk_finished(self, result: ChunkResult) -> None:
        pass


@dataclass(frozen=True)
class RunSummary:
    backfill: int
    plan: BackfillPlan
    results: tuple[ChunkResult, ...]
    failed: tuple[Interval, ...]
    error: str | None


class Backfills:
    """Plans, runs and records backfills; the CLI runs whole ranges, the API (the Airflow
    DAG) one chunk per call."""

    def __init__(self, registry: RegistryService, catalog: Catalog, flink: BatchJobs | None,
                 staging: Path, *, parallelism: int = JOB_PARALLELISM,
                 job_timeout_s: float = JOB_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.catalog = catalog
        self.flink = flink
        self.staging = staging
        self.parallelism = parallelism
        self.job_timeout_s = job_timeout_s
        self.clock = clock

    # ------------------------------------------------------------------ plan

    def plan(self, view: str, version: int | None, start_ms: int, end_ms: int, *,
             chunk_ms: int = backfills.DEFAULT_CHUNK_MS,
             reprocess: Reprocess = Reprocess.MISSING) -> BackfillPlan:
        """What a run would do; writes nothing."""
        target = view_version(self.registry.store, view, version)
        if not target.view.offline:
            raise FeaturePlatformError(f"feature view {view!r} version {target.version} is "
                                       "not offline (its definition sets offline: false)")
        try:
            chunks = chunks_of(start_ms, end_ms, chunk_ms)
        except ValueError as error:
            raise FeaturePlatformError(str(error)) from None
        table_name = iceberg.feature_table_name(view, target.version)
        table = iceberg.load_feature_table(self.catalog, table_name)
        coverage = iceberg.feature_coverage(table.metadata) if table is not None else []
        failed = coverage_by_version(self._history(view)).get(target.version)
        planned = plan_chunks(chunks, coverage, failed.failed if failed else (), reprocess)
        archive = iceberg.load_archive(self.catalog, target.source.name)
        lookback = TableLayout.of(target).longest_window_ms
        counted = tuple(PlannedChunk(c.start_ms, c.end_ms, c.state, c.runs,
                                     iceberg.events_in(archive, (c.start_ms - lookback,
                                                                 c.end_ms)))
                        for c in planned)
        return BackfillPlan(target, table_name, start_ms, end_ms, chunk_ms, reprocess, counted,
                            tuple(coverage))

    def _history(self, view: str) -> list[RecordedEvent]:
        return self.registry.store.read_stream(backfill_stream(view))

    # ------------------------------------------------------------------ record

    def start(self, plan: BackfillPlan, provenance: Provenance) -> int:
        """Record the request; chunks the table holds but the log does not (a run that died
        between its commit and its record) are recorded now, under this backfill."""
        view, version = plan.target.view.name, plan.target.version
        requested = self.registry.append_backfill_event(view, lambda events: BackfillRequested(
            view=view, version=version, backfill=next_number(events), start_ms=plan.start_ms,
            end_ms=plan.end_ms, chunk_ms=plan.chunk_ms, reprocess=plan.reprocess.value,
            chunks=[c.interval for c in plan.to_run], table=plan.table), provenance)
        assert isinstance(requested.payload, BackfillRequested)
        number = requested.payload.backfill
        recorded = coverage_by_version(self._history(view)).get(version)
        table = iceberg.load_feature_table(self.catalog, plan.table)
        for chunk in plan.chunks:
            if chunk.state is not ChunkState.DONE or table is None or (
                    recorded and backfills.covered(backfills.merged(recorded.intervals),
                                                   chunk.interval)):
                continue
            done = iceberg.committed_chunk(table.metadata, chunk.interval)
            if done is not None:
                self._record_chunk(plan.target, number, chunk.interval, done, provenance)
        return number

    def _record_chunk(self, target: ViewVersion, number: int, chunk: Interval,
                      done: iceberg.ChunkCommit, provenance: Provenance) -> None:
        self._append(target, BackfillChunkCompleted(
            view=target.view.name, version=target.version, backfill=number,
            start_ms=chunk[0], end_ms=chunk[1], snapshot_id=done.snapshot_id, rows=done.rows,
            events_read=done.events_read), provenance)

    def _append(self, target: ViewVersion, event: BackfillEvent, provenance: Provenance
                ) -> None:
        self.registry.append_backfill_event(target.view.name, lambda _: event, provenance)

    def requested(self, view: str, number: int) -> BackfillRequested:
        for event in self._history(view):
            if isinstance(event.payload, BackfillRequested) and event.payload.backfill == number:
                return event.payload
        raise NotFoundError(f"feature view {view!r} has no backfill {number}")

    def finish(self, view: str, number: int, failed: Sequence[Interval], reason: str | None,
               provenance: Provenance) -> BackfillEvent:
        """Record the backfill's outcome: completed, or failed with the chunks that did not
        complete."""
        request = self.requested(view, number)
        target = view_version(self.registry.store, view, request.version)
        if failed:
            outcome: BackfillEvent = BackfillFailed(
                view=view, version=request.version, backfill=number,
                reason=reason or f"{len(failed)} chunk(s) failed", failed_chunks=list(failed))
        else:
            done = [e.payload for e in self._history(view)
                    if isinstance(e.payload, BackfillChunkCompleted)
                    and e.payload.backfill == number]
            outcome = BackfillCompleted(view=view, version=request.version, backfill=number,
                                        chunks=len(done), rows=sum(c.rows for c in done),
                                        events_read=sum(c.events_read for c in done))
        self._append(target, outcome, provenance)
        return outcome

    # ------------------------------------------------------------------ run

    def run_chunk(self, view: str, number: int, chunk: Interval, *, replace: bool,
                  provenance: Provenance, progress: ChunkProgress | None = None,
                  ) -> ChunkResult:
        """Compute and commit one chunk of backfill ``number`` (idempotent: a chunk the table
        holds is only recorded, unless ``replace``)."""
        request = self.requested(view, number)
        target = view_version(self.registry.store, view, request.version)
        result = self._compute(target, chunk, replace, progress or _Quiet())
        self._record_chunk(target, number, chunk, iceberg.ChunkCommit(
            result.snapshot_id, result.rows, result.events_read, result.ran), provenance)
        return result

    def _flink(self) -> BatchJobs:
        if self.flink is None:
            raise ConfigurationError("running a backfill needs a Flink session cluster: set "
                                     "FP_FLINK_URL")
        return self.flink

    def _compute(self, target: ViewVersion, chunk: Interval, replace: bool,
                 progress: ChunkProgress) -> ChunkResult:
        began = self.clock()
        self._flink()
        layout = TableLayout.of(target)
        table = iceberg.ensure_feature_table(
            self.catalog, iceberg.feature_table_name(target.view.name, target.version),
            iceberg.feature_table_schema(layout.keys, layout.features),
            {"fp.view": target.view.name, "fp.version": str(target.version)})
        done = iceberg.committed_chunk(table.metadata, chunk)
        if done is not None and not replace:
            return ChunkResult(chunk, done.snapshot_id, done.rows, done.events_read,
                               self.clock() - began, ran=False)
        self._flink().prepare_submissions()  # its JVM starts while the slice is exported
        with self._chunk_folder(target, chunk) as folder:
            progress.stage("exporting")
            archive = iceberg.load_archive(self.catalog, target.source.name)
            events = export_slice(archive, target.source.schema, target.join_keys,
                                  (chunk[0] - layout.longest_window_ms, chunk[1]),
                                  folder / "events", files=self.parallelism)
            progress.stage(f"planning the Flink batch job over {events:,} events")
            job = self._run_job(target, chunk, folder, progress)
            progress.stage("committing")
            rows = feature_rows(job, folder / "results", layout, chunk)
            commit = iceberg.commit_chunk(table, rows, chunk, events, replace)
        return ChunkResult(chunk, commit.snapshot_id, commit.rows, commit.events_read,
                           self.clock() - began, ran=commit.committed_now)

    def _run_job(self, target: ViewVersion, chunk: Interval, folder: Path,
                 progress: ChunkProgress) -> BackfillJob:
        attempt = uuid.uuid4().hex
        job = compile_backfill(
            target.view, target.definitions, target.version,
            job_id=hashlib.sha256(f"{target.view.name}/{target.version}/{chunk}/{attempt}"
                                  .encode()).hexdigest()[:32],
            job_name=f"fp:{target.view.name}:v{target.version}:backfill:{iso(chunk[0])}",
            events_uri=(folder / "events").as_uri(), results_uri=(folder / "results").as_uri(),
            parallelism=self.parallelism)
        flink = self._flink()
        job_id = flink.submit(job.spec)
        progress.stage("running the Flink batch job")
        try:
            status = flink.wait_until_terminal(job_id, self.job_timeout_s)
        except FeaturePlatformError:
            with contextlib.suppress(FeaturePlatformError):
                flink.cancel(job_id)
            raise
        if status is None or status.state != "FINISHED":
            reasons = "; ".join(flink.exceptions(job_id)[:3]) or "no exception reported"
            raise BackfillError(f"the backfill job of {iso(chunk[0])}..{iso(chunk[1])} ended "
                                f"{status.state if status else 'unknown'}: {reasons}")
        return job

    @contextlib.contextmanager
    def _chunk_folder(self, target: ViewVersion, chunk: Interval) -> Iterator[Path]:
        parent = self.staging / f"{target.view.name}__v{target.version}"
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.iterdir():
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > STALE_STAGING_S:
                    shutil.rmtree(stale, ignore_errors=True)
        folder = parent / f"{chunk[0]}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def run(self, plan: BackfillPlan, provenance: Provenance,
            progress: ChunkProgress | None = None) -> RunSummary:
        """Every chunk the plan runs, in order; the first failure ends the run (recorded as
        BackfillFailed with the chunks not done)."""
        progress = progress or _Quiet()
        number = self.start(plan, provenance)
        view = plan.target.view.name
        results: list[ChunkResult] = []
        pending = list(plan.to_run)
        while pending:
            chunk = pending[0]
            progress.chunk_started(chunk)
            try:
                result = self.run_chunk(view, number, chunk.interval,
                                        replace=plan.reprocess is Reprocess.ALL,
                                        provenance=provenance, progress=progress)
            except FeaturePlatformError as error:
                failed = tuple(c.interval for c in pending)
                self.finish(view, number, failed, f"{iso(chunk.start_ms)}: {error}",
                            provenance)
                return RunSummary(number, plan, tuple(results), failed, str(error))
            results.append(result)
            progress.chunk_finished(result)
            pending.pop(0)
        self.finish(view, number, (), None, provenance)
        return RunSummary(number, plan, tuple(results), (), None)


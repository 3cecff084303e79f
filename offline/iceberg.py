"""The offline store: one Iceberg table of raw events per source.

The tables are described in docs/reference.md, "Offline store".

Catalog: pyiceberg's SQL catalog named ``fp`` in the registry's PostgreSQL (it creates its own
``iceberg_tables`` / ``iceberg_namespace_properties`` tables); warehouse at ``FP_WAREHOUSE``.
More catalog settings (S3 endpoint and keys for MinIO, …) come from pyiceberg's own
environment variables, e.g. ``PYICEBERG_CATALOG__FP__S3__ENDPOINT``.

Table ``raw.{source}``: the contract's fields (all optional: invalid events are archived too),
then the ingestion metadata below, partitioned by ``day(_event_time)``.

Exactly once: every append carries, in its snapshot summary (``fp.kafka-offsets``), the next
Kafka offset of every partition archived so far; that is the archiver's only record of
progress.  An append states which stored offsets it continues from, and commits only if they
are still the stored ones — the check and the commit are one compare-and-set, since the
catalog commit asserts the snapshot the check read is still current.  A crash anywhere
either left the table as it was (the batch is read again) or committed batch and offsets
together (the batch is not read again).

pyiceberg 0.8.1 (the line that runs beside apache-flink 2.0.2's ``pyarrow<17``) has no
compaction, snapshot expiry or orphan-file removal: :func:`compact`, :func:`expire_snapshots`
and :func:`delete_orphan_files` do them with its lower-level API.  Private names used:
``_dataframe_to_data_files`` (what ``append`` itself writes files with), ``ArrowScan``,
``Transaction._apply`` and the metadata-update dispatcher (for snapshot removal).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow.fs import FileSelector, FileType
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    LessThan,
)
from pyiceberg.io.pyarrow import ArrowScan, PyArrowFileIO, _dataframe_to_data_files
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.table.update import (
    AssertRefSnapshotId,
    RemoveSnapshotsUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
)
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from core.domain.backfills import Interval, covered, merged, overlaps
from core.domain.definitions import Source, ValueType
from core.errors import ConfigurationError, FeaturePlatformError

logger = logging.getLogger(__name__)

ALL_ROWS: BooleanExpression = AlwaysTrue()  # type: ignore[no-untyped-call]

CATALOG_NAME = "fp"
RAW_NAMESPACE = "raw"
FEATURES_NAMESPACE = "features"
OFFSETS_PROPERTY = "fp.kafka-offsets"
COMMIT_ATTEMPTS = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Ingestion metadata, after the contract's fields.  Contract field names cannot start with
# "_", so these never collide with them.
EVENT_TIME = "_event_time"
"""Event time read from ``timestamp_field`` (µs, UTC); null when unreadable."""
TOPIC = "_topic"
PARTITION = "_partition"
OFFSET = "_offset"
INGESTED_AT = "_ingested_at"
VIOLATION = "_violation"
"""The first contract rule the event breaks, worded as the stream's dead letters; null = clean."""
PAYLOAD = "_payload"
"""The raw message, kept for invalid events only (valid ones are exactly their fields)."""
CONTRACT_VERSION = "_contract_version"
"""The version of the source's contract the event was judged by."""

_METADATA_COLUMNS: tuple[tuple[str, IcebergType], ...] = (
    (EVENT_TIME, TimestamptzType()), (TOPIC, StringType()), (PARTITION, IntegerType()),
    (OFFSET, LongType()), (INGESTED_AT, TimestamptzType()), (VIOLATION, StringType()),
    (PAYLOAD, StringType()), (CONTRACT_VERSION, IntegerType()),
)

_ICEBERG_TYPE: dict[ValueType, IcebergType] = {
    ValueType.STRING: StringType(), ValueType.LONG: LongType(), ValueType.INT: IntegerType(),
    # JSON numbers are read as doubles; a float column would round them.
    ValueType.DOUBLE: DoubleType(), ValueType.FLOAT: DoubleType(),
    ValueType.BOOLEAN: BooleanType(), ValueType.TIMESTAMP: TimestamptzType(),
}

# Iceberg's only type promotions a contract change can ask for.
_PROMOTIONS = {(IntegerType(), LongType())}

TABLE_PROPERTIES = {
    # Old metadata files fall out of the log and become deletable by delete_orphan_files.
    "write.metadata.previous-versions-max": "20",
    # Appends merge small manifests, so planning a scan stays fast after many micro-batches.
    "commit.manifest-merge.enabled": "true",
    "write.parquet.compression-codec": "zstd",
}


class ArchiveError(FeaturePlatformError):
    """The offline store cannot do what was asked (missing table, incompatible contract)."""


class StaleOffsetsError(FeaturePlatformError):
    """A batch continues from offsets that are no longer the stored ones: another archiver
    (or an earlier life of this one) committed those messages already."""

    def __init__(self, topic: str, stored: Mapping[int, int]) -> None:
        self.topic = topic
        self.stored = dict(stored)
        super().__init__(f"offsets of {topic} moved on to {self.stored}")


# --------------------------------------------------------------------------- catalog

def warehouse_uri(setting: str) -> str:
    """``FP_WAREHOUSE`` as a location: URIs pass through, a local path becomes ``file://``."""
    if "://" in setting:
        return setting
    return "file://" + os.path.abspath(os.path.expanduser(setting))


def open_catalog(database_url: str, warehouse: str | None = None) -> Catalog:
    """The ``fp`` SQL catalog in the registry database.  The warehouse is needed only to
    create tables: an existing table's location is in the catalog."""
    properties: dict[str, str] = {"type": "sql", "uri": database_url}
    if warehouse:
        properties["warehouse"] = warehouse_uri(warehouse)
    for attempt in range(3):
        try:
            catalog = load_catalog(CATALOG_NAME, **properties)
            break
        except Exception as error:  # two processes creating the catalog tables at once
            if attempt == 2:
                raise ArchiveError(f"cannot open the Iceberg catalog: {error}") from error
            time.sleep(0.2 * (attempt + 1))
    for namespace in (RAW_NAMESPACE, FEATURES_NAMESPACE):
        with contextlib.suppress(NamespaceAlreadyExistsError):
            catalog.create_namespace(namespace)
    return catalog


def table_name(source: str) -> str:
    return f"{RAW_NAMESPACE}.{source}"


def load_archive(catalog: Catalog, source: str) -> Table:
    try:
        return catalog.load_table(table_name(source))
    except NoSuchTableError:
        raise ArchiveError(f"source {source!r} has no archive table {table_name(source)} yet: "
                           "`fp archiver run` creates it when it first archives the source"
                           ) from None


# --------------------------------------------------------------------------- schema

def iceberg_type(value_type: ValueType) -> IcebergType:
    return _ICEBERG_TYPE[value_type]


def archive_schema(source: Source) -> Schema:
    """The table schema for a source's contract: its fields, then the ingestion metadata."""
    columns = [(f.name, iceberg_type(f.type)) for f in source.schema] + list(_METADATA_COLUMNS)
    return Schema(*(NestedField(field_id, name, kind, required=False)
                    for field_id, (name, kind) in enumerate(columns, start=1)))


def schema_changes(current: Schema, source: Source) -> tuple[list[tuple[str, IcebergType]],
                                                             list[tuple[str, IcebergType]]]:
    """(columns to add, columns to widen) for ``source``'s contract; raises ArchiveError for
    a type change Iceberg cannot make in place.  A field the contract dropped stays (null)."""
    additions: list[tuple[str, IcebergType]] = []
    promotions: list[tuple[str, IcebergType]] = []
    for field in source.schema:
        wanted = iceberg_type(field.type)
        existing = current.find_field(field.name) if field.name in current.column_names else None
        if existing is None:
            additions.append((field.name, wanted))
        elif existing.field_type != wanted:
            if (existing.field_type, wanted) not in _PROMOTIONS:
                raise ArchiveError(
                    f"source {source.name!r}: field {field.name!r} changed from "
                    f"{existing.field_type} to {wanted}, which the archive table cannot hold; "
                    "register the new contract as a new source")
            promotions.append((field.name, wanted))
    return additions, promotions


def _by_day(catalog: Catalog, name: str, schema: Schema, time_column: str,
            properties: Mapping[str, str]) -> Table:
    """The table ``name``, created partitioned by the day of ``time_column`` and sorted by it
    when missing (by this process or, meanwhile, another)."""
    try:
        return catalog.load_table(name)
    except NoSuchTableError:
        pass
    time_field = schema.find_field(time_column)
    spec = PartitionSpec(PartitionField(source_id=time_field.field_id, field_id=1000,
                                        transform=DayTransform(), name="event_day"))
    order = SortOrder(SortField(source_id=time_field.field_id, transform=IdentityTransform()))
    try:
        return catalog.create_table(name, schema=schema, partition_spec=spec, sort_order=order,
                                    properties={**TABLE_PROPERTIES, **properties})
    except TableAlreadyExistsError:
        return catalog.load_table(name)


def ensure_archive(catalog: Catalog, source: Source) -> Table:
    """The source's table, created or evolved to hold its current contract."""
    table = _by_day(catalog, table_name(source.name), archive_schema(source), EVENT_TIME,
                    {"fp.source": source.name})
    additions, promotions = schema_changes(table.schema(), source)
    if additions or promotions:
        with table.update_schema() as update:
            for column, kind in additions:
                update.add_column(column, kind)
            for column, kind in promotions:
                update.update_column(column, field_type=kind)
        logger.info("archive %s: added %s, widened %s", table_name(source.name),
                    [c for c, _ in additions],
                    [c for c, _ in promotions])
    return table


# --------------------------------------------------------------------------- offsets

Offsets = dict[str, dict[int, int]]
"""topic → partition → next offset to archive."""


def _decode_offsets(text: str) -> Offsets:
    return {topic: {int(p): int(o) for p, o in partitions.items()}
            for topic, partitions in json.loads(text).items()}


def _encode_offsets(offsets: Offsets) -> str:
    return json.dumps({topic: {str(p): o for p, o in sorted(partitions.items())}
                       for topic, partitions in sorted(offsets.items())}, separators=(",", ":"))


def stored_offsets(metadata: TableMetadata) -> Offsets:
    """The offsets of the newest snapshot that records them (maintenance copies them forward;
    walking back covers a snapshot written by another tool)."""
    snapshot = metadata.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        text = summary.get(OFFSETS_PROPERTY) if summary is not None else None
        if text is not None:
            return _decode_offsets(text)
        parent = snapshot.parent_snapshot_id
        snapshot = metadata.snapshot_by_id(parent) if parent is not None else None
    return {}


def _offsets_properties(metadata: TableMetadata) -> dict[str, str]:
    offsets = stored_offsets(metadata)
    return {OFFSETS_PROPERTY: _encode_offsets(offsets)} if offsets else {}


def append_batch(table: Table, rows: pa.Table, topic: str,
                 continues_from: Mapping[int, int | None], next_offsets: Mapping[int, int],
                 ) -> int:
    """Append ``rows`` and advance ``topic``'s stored offsets to ``next_offsets``, atomically.

    ``continues_from`` holds, per partition in the batch, the stored offset the batch was
    read from (None: nothing was stored, the batch starts at the earliest offset).  If any
    differs from what is stored when the commit happens, nothing is written and
    StaleOffsetsError says what is stored.  Returns the new snapshot id.
    """
    for _ in range(COMMIT_ATTEMPTS):
        table.refresh()
        offsets = stored_offsets(table.metadata)
        stored = offsets.get(topic, {})
        if any(stored.get(p) != start for p, start in continues_from.items()):
            raise StaleOffsetsError(topic, stored)
        offsets[topic] = {**stored, **next_offsets}
        try:
            table.append(rows, snapshot_properties={OFFSETS_PROPERTY: _encode_offsets(offsets)})
        except CommitFailedException:
            continue  # another writer committed first: check the offsets again
        snapshot = table.current_snapshot()
        assert snapshot is not None
        return snapshot.snapshot_id
    raise ArchiveError(f"{table.name()}: gave up after {COMMIT_ATTEMPTS} conflicting commits")


# --------------------------------------------------------------------------- feature tables

WINDOW_START = "window_start"
WINDOW_END = "window_end"
FEATURE_TIME = "event_time"
"""A row's event time: its window's end, or a ``last`` value's event time."""
COVERAGE_PROPERTY = "fp.backfill.coverage"
"""In every snapshot of a feature table: the event-time intervals it holds, ``[[start, end],
…]`` in epoch ms — the truth about what is done, committed with the rows themselves."""
CHUNK_PROPERTY = "fp.backfill.chunk"
ROWS_PROPERTY = "fp.backfill.rows"
EVENTS_PROPERTY = "fp.backfill.events-read"


def feature_table_name(view: str, version: int) -> str:
    return f"{FEATURES_NAMESPACE}.{view}__v{version}"


def feature_table_schema(keys: Sequence[tuple[str, ValueType]],
                         features: Sequence[tuple[str, ValueType]]) -> Schema:
    """Key columns, the window, the event time, then one column per feature."""
    columns = [*((name, iceberg_type(kind)) for name, kind in keys),
               (WINDOW_START, TimestamptzType()), (WINDOW_END, TimestamptzType()),
               (FEATURE_TIME, TimestamptzType()),
               *((name, iceberg_type(kind)) for name, kind in features)]
    names = [name for name, _ in columns]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise ArchiveError(f"a feature table cannot hold two columns named {clashes}: rename "
                           "the feature(s) that clash with a key or a window column")
    return Schema(*(NestedField(field_id, name, kind, required=False)
                    for field_id, (name, kind) in enumerate(columns, start=1)))


def ensure_feature_table(catalog: Catalog, name: str, schema: Schema,
                         properties: Mapping[str, str]) -> Table:
    return _by_day(catalog, name, schema, FEATURE_TIME, properties)


def load_feature_table(catalog: Catalog, name: str) -> Table | None:
    try:
        return catalog.load_table(name)
    except NoSuchTableError:
        return None


def feature_coverage(metadata: TableMetadata, snapshot_id: int | None = None,
                     ) -> list[Interval]:
    """The intervals a feature table's snapshot (default: the current one) holds."""
    snapshot = (metadata.snapshot_by_id(snapshot_id) if snapshot_id is not None
                else metadata.current_snapshot())
    if snapshot is None or snapshot.summary is None:
        return []
    text = snapshot.summary.get(COVERAGE_PROPERTY)
    return [(int(start), int(end)) for start, end in json.loads(text)] if text else []


@dataclass(frozen=True)
class ChunkCommit:
    snapshot_id: int
    rows: int
    events_read: int
    committed_now: bool
    """False: the table already held the chunk, committed by an earlier run."""


def _chunk_label(chunk: Interval) -> str:
    return f"{chunk[0]}/{chunk[1]}"


def committed_chunk(metadata: TableMetadata, chunk: Interval) -> ChunkCommit | None:
    """The newest snapshot that committed exactly ``chunk``, among the current one's
    ancestors, if the table still covers it."""
    if not covered(feature_coverage(metadata), chunk):
        return None
    snapshot = metadata.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        if summary is not None and summary.get(CHUNK_PROPERTY) == _chunk_label(chunk):
            return ChunkCommit(snapshot.snapshot_id, int(summary.get(ROWS_PROPERTY) or 0),
                               int(summary.get(EVENTS_PROPERTY) or 0), committed_now=False)
        parent = snapshot.parent_snapshot_id
        snapshot = metadata.snapshot_by_id(parent) if parent is not None else None
    return None


def _time_range(column: str, interval: Interval) -> BooleanExpression:
    return And(GreaterThanOrEqual(column, iso_instant(interval[0])),
               LessThan(column, iso_instant(interval[1])))


def iso_instant(epoch_ms: int) -> str:
    """An instant as pyiceberg's timestamptz literals are written."""
    return (_EPOCH + timedelta(milliseconds=epoch_ms)).isoformat()


def commit_chunk(table: Table, parts: Iterable[pa.Table], chunk: Interval, events_read: int,
                 replace: bool) -> ChunkCommit:
    """Commit the rows of ``parts`` — every row of ``chunk`` — as one snapshot that also
    records the chunk in the table's coverage.  Each part is written to data files as it
    comes (memory holds one part), then all are appended at once.  A chunk the table already
    covers is left alone unless ``replace``; rows the table holds in the chunk's range are
    deleted in the same commit, so a chunk's rows are never there twice.  The commit asserts
    the snapshot its check read is still current: of two runs of one chunk, the second
    re-checks and finds it done (its files are left unreferenced)."""
    done = committed_chunk(table.metadata, chunk)
    if done is not None and not replace:
        return done
    write = uuid.uuid4()
    counter = itertools.count(0)
    files = [data_file for part in parts if part.num_rows
             for data_file in _dataframe_to_data_files(table.metadata, part, table.io, write,
                                                       counter)]
    rows = sum(f.record_count for f in files)
    for _ in range(COMMIT_ATTEMPTS):
        table.refresh()
        done = committed_chunk(table.metadata, chunk)
        if done is not None and not replace:
            return done
        coverage = feature_coverage(table.metadata)
        properties = {COVERAGE_PROPERTY: json.dumps(merged([*coverage, chunk])),
                      CHUNK_PROPERTY: _chunk_label(chunk), ROWS_PROPERTY: str(rows),
                      EVENTS_PROPERTY: str(events_read)}
        try:
            with table.transaction() as transaction:
                if overlaps(coverage, chunk):
                    transaction.delete(_time_range(FEATURE_TIME, chunk),
                                       snapshot_properties=properties)
                with transaction.update_snapshot(
                        snapshot_properties=properties).fast_append() as append:
                    for data_file in files:
                        append.append_data_file(data_file)
        except CommitFailedException:
            continue  # another chunk committed first: check again on the new snapshot
        snapshot = table.current_snapshot()
        assert snapshot is not None
        return ChunkCommit(snapshot.snapshot_id, rows, events_read, committed_now=True)
    raise ArchiveError(f"{table.name()}: gave up after {COMMIT_ATTEMPTS} conflicting commits")


def events_in(table: Table, interval: Interval) -> int:
    """About how many archived events fall in ``interval``: the record counts of the data
    files whose statistics overlap it (no data is read)."""
    return sum(task.file.record_count
               for task in table.scan(row_filter=_time_range(EVENT_TIME, interval)).plan_files())


# --------------------------------------------------------------------------- reading

def scan(table: Table, columns: Sequence[str], row_filter: BooleanExpression | None = None,
         snapshot_id: int | None = None) -> pa.Table:
    """The rows of one snapshot (default: the current one) matching ``row_filter``."""
    return table.scan(row_filter=row_filter or ALL_ROWS, selected_fields=tuple(columns),
                      snapshot_id=snapshot_id).to_arrow()


# --------------------------------------------------------------------------- maintenance

@dataclass(frozen=True)
class CompactionReport:
    files_before: int
    files_after: int
    rewritten_groups: int


def data_files(table: Table) -> list[FileScanTask]:
    return list(table.scan().plan_files())


def _small_file_groups(tasks: Iterable[FileScanTask], target_bytes: int, min_files: int,
                       ) -> list[list[FileScanTask]]:
    """Per partition, the files smaller than the target, when there are enough to merge."""
    groups: dict[tuple[int, str], list[FileScanTask]] = defaultdict(list)
    for task in tasks:
        if task.file.file_size_in_bytes < target_bytes and not task.delete_files:
            groups[(task.file.spec_id, repr(task.file.partition))].append(task)
    return [g for g in groups.values() if len(g) >= min_files]


def compact(table: Table, target_file_bytes: int = 128 * 1024 * 1024,
            min_files: int = 2) -> CompactionReport:
    """Rewrite each partition's small files into files of about ``target_file_bytes``,
    rows sorted by event time, in one snapshot that keeps the stored offsets."""
    for _ in range(COMMIT_ATTEMPTS):
        table.refresh()
        tasks = data_files(table)
        groups = _small_file_groups(tasks, target_file_bytes, min_files)
        if not groups:
            return CompactionReport(len(tasks), len(tasks), 0)
        metadata = table.metadata
        rewritten = 0
        try:
            with table.transaction() as transaction, transaction.update_snapshot(
                    snapshot_properties=_offsets_properties(metadata)).overwrite() as rewrite:
                for group in groups:
                    rows = ArrowScan(metadata, table.io, metadata.schema(),
                                     ALL_ROWS).to_table(group)
                    rows = rows.sort_by([(EVENT_TIME, "ascending"), (PARTITION, "ascending"),
                                         (OFFSET, "ascending")])
                    for task in group:
                        rewrite.delete_data_file(task.file)
                    for new_file in _dataframe_to_data_files(metadata, rows, table.io,
                                                             rewrite.commit_uuid):
                        rewrite.append_data_file(new_file)
                        rewritten += 1
        except CommitFailedException:
            continue  # an append landed meanwhile: plan again on the new snapshot
        removed = sum(len(g) for g in groups)
        return CompactionReport(len(tasks), len(tasks) - removed + rewritten, len(groups))
    raise ArchiveError(f"{table.name()}: compaction gave up after {COMMIT_ATTEMPTS} conflicts")


def _remove_snapshots(update: RemoveSnapshotsUpdate, base: TableMetadata,
                      context: _TableMetadataUpdateContext) -> TableMetadata:
    """Metadata without the given snapshots (pyiceberg 0.8 cannot apply this update)."""
    removed = set(update.snapshot_ids)
    if any(ref.snapshot_id in removed for ref in base.refs.values()):
        raise ValueError("cannot remove a snapshot a branch or tag points at")
    context.add_update(update)
    return base.model_copy(update={
        "snapshots": [s for s in base.snapshots if s.snapshot_id not in removed],
        "snapshot_log": [e for e in base.snapshot_log if e.snapshot_id not in removed],
    })


if RemoveSnapshotsUpdate not in _apply_table_update.registry:
    _apply_table_update.register(RemoveSnapshotsUpdate)(_remove_snapshots)


def snapshots_to_expire(snapshots: Sequence[Snapshot], protected: set[int], now_ms: int,
                        max_age_ms: int, retain_last: int) -> list[int]:
    """Snapshots older than ``max_age_ms``, except the newest ``retain_last`` and those a
    branch or tag points at (pure)."""
    newest_first = sorted(snapshots, key=lambda s: s.timestamp_ms, reverse=True)
    kept = {s.snapshot_id for s in newest_first[:max(retain_last, 1)]} | protected
    return [s.snapshot_id for s in newest_first
            if s.snapshot_id not in kept and now_ms - s.timestamp_ms > max_age_ms]


def expire_snapshots(table: Table, max_age_ms: int, retain_last: int = 1) -> list[int]:
    """Forget snapshots older than ``max_age_ms`` (their files become unreferenced: see
    delete_orphan_files).  Datasets built on an expired snapshot can no longer be rebuilt."""
    for _ in range(COMMIT_ATTEMPTS):
        table.refresh()
        metadata = table.metadata
        protected = {ref.snapshot_id for ref in metadata.refs.values()}
        expired = snapshots_to_expire(metadata.snapshots, protected, int(time.time() * 1000),
                                      max_age_ms, retain_last)
        if not expired:
            return []
        transaction = table.transaction()
        # Pydantic models: constructed by their JSON aliases.
        remove = RemoveSnapshotsUpdate.model_validate({"snapshot-ids": expired})
        still_current = AssertRefSnapshotId.model_validate(
            {"snapshot-id": metadata.current_snapshot_id, "ref": "main"})
        transaction._apply((remove,), (still_current,))
        try:
            transaction.commit_transaction()
        except CommitFailedException:
            continue
        return expired
    raise ArchiveError(f"{table.name()}: snapshot expiry gave up after {COMMIT_ATTEMPTS} "
                       "conflicts")


def _path(location: str) -> str:
    """A location without its scheme, as the file system lists it."""
    return PyArrowFileIO.parse_location(location)[2]


def referenced_files(table: Table) -> set[str]:
    """Every file a retained snapshot or the metadata log still needs (scheme-less paths)."""
    metadata, io = table.metadata, table.io
    paths = {_path(table.metadata_location)} if table.metadata_location else set()
    paths |= {_path(entry.metadata_file) for entry in metadata.metadata_log}
    manifests: dict[str, Any] = {}
    for snapshot in metadata.snapshots:
        if snapshot.manifest_list:
            paths.add(_path(snapshot.manifest_list))
        for manifest in snapshot.manifests(io):
            manifests[manifest.manifest_path] = manifest
    for manifest_path, manifest in manifests.items():
        paths.add(_path(manifest_path))
        paths |= {_path(entry.data_file.file_path)
                  for entry in manifest.fetch_manifest_entry(io, discard_deleted=True)}
    return paths


def delete_orphan_files(table: Table, min_age_ms: int = 3_600_000) -> list[str]:
    """Delete files under the table's location that nothing references, once older than
    ``min_age_ms`` — younger ones may belong to an append still in flight."""
    table.refresh()
    scheme, netloc, root = PyArrowFileIO.parse_location(table.location())
    io = table.io
    if not isinstance(io, PyArrowFileIO):
        raise ConfigurationError("orphan-file removal needs pyiceberg's PyArrowFileIO")
    fs = io.fs_by_scheme(scheme, netloc)
    referenced = referenced_files(table)
    cutoff_ns = (time.time() * 1000 - min_age_ms) * 1_000_000
    deleted = []
    for info in fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type is not FileType.File or info.path in referenced:
            continue
        if info.mtime_ns is not None and info.mtime_ns > cutoff_ns:
            continue
        fs.delete_file(info.path)
        deleted.append(info.path)
    return deleted


@dataclass(frozen=True)
class MaintenanceReport:
    table: str
    compaction: CompactionReport
    expired_snapshots: int
    deleted_files: int

    def __str__(self) -> str:
        c = self.compaction
        return (f"{self.table}: data files {c.files_before} → {c.files_after}, "
                f"{self.expired_snapshots} snapshots expired, {self.deleted_files} "
                "unreferenced files deleted")


def maintain(table: Table, *, target_file_bytes: int, snapshot_max_age_ms: int,
             orphan_min_age_ms: int, retain_last: int = 1) -> MaintenanceReport:
    """Compact, expire old snapshots, then delete what no snapshot references any more."""
    compaction = compact(table, target_file_bytes)
    expired = expire_snapshots(table, snapshot_max_age_ms, retain_last)
    deleted = delete_orphan_files(table, orphan_min_age_ms)
    return MaintenanceReport(".".join(table.name()), compaction, len(expired), len(deleted))


def event_time_bounds(rows: pa.Table) -> tuple[int | None, int | None]:
    """(min, max) ``_event_time`` of a batch in µs, for logging."""
    bounds = pc.min_max(rows[EVENT_TIME].cast(pa.int64()))
    return bounds["min"].as_py(), bounds["max"].as_py()

"""Point-in-time training sets from the archive.

The files are described in docs/reference.md, "Offline store"; the rules in docs/offline.md.

``fp dataset --entities ROWS.parquet --features REF[,REF…] --out OUT.parquet`` and, from
Python, :func:`build_training_set` / :class:`TrainingSetBuilder`:

1. resolve each reference (``view:feature`` → the active version, or the latest when none is
   active yet; ``view@N:feature`` → N) with the source and entities as they were when that
   version was registered;
2. read each source's clean archived events once, from one pinned snapshot, limited to the
   time range the label rows can see;
3. compute every feature with :mod:`offline.point_in_time` (the streaming job's semantics);
4. write the label rows in their order, plus one column per reference, with the resolved
   versions and snapshot ids in the Parquet key-value metadata (``fp.dataset``), so that
   ``--reproduce OUT.parquet`` computes the same values later.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import (
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    IsNull,
    LessThan,
    LessThanOrEqual,
)

from core.domain.backfills import DAY_MS, covered, merged
from core.domain.definitions import (
    Definition,
    Entity,
    Feature,
    FeatureView,
    Kind,
    Source,
    ValueType,
    parse_definition,
)
from core.domain.layout import output_type, view_join_keys
from core.domain.references import FeatureReference, parse_references
from core.errors import InvalidFeatureRequestError, NotFoundError, Problem
from offline import iceberg
from offline.point_in_time import (
    Events,
    Int64Array,
    Labels,
    MaterialisedRows,
    encode_keys,
    feature_values,
    floor_to_millis,
    materialised_values,
)
from registry.store.base import DefinitionRecord, VersionRecord

TIMESTAMP_COLUMN = "event_timestamp"
METADATA_KEY = b"fp.dataset"
METADATA_FORMAT = 1
VISIBILITY_RULE = ("windowed: the newest window with end <= event_timestamp; last: the newest "
                   "non-null value with event time <= event_timestamp; ttl: null when "
                   "event_timestamp - value time > ttl")


_ARROW_TYPE: dict[ValueType, pa.DataType] = {
    ValueType.STRING: pa.string(), ValueType.LONG: pa.int64(), ValueType.INT: pa.int32(),
    ValueType.DOUBLE: pa.float64(), ValueType.FLOAT: pa.float64(),
    ValueType.BOOLEAN: pa.bool_(), ValueType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
}


class DefinitionReader(Protocol):
    """What a training set reads from the registry (PostgresRegistryStore has it)."""

    def definition(self, kind: str, name: str) -> DefinitionRecord | None: ...

    def version(self, kind: str, name: str, version: int) -> VersionRecord | None: ...

    def versions(self, kind: str, name: str) -> list[VersionRecord]: ...


class Progress(Protocol):
    """Reports steps of a long run (a rich progress bar on a terminal, nothing otherwise)."""

    def step(self, description: str) -> None: ...


class _Silent:
    def step(self, description: str) -> None:
        pass


# --------------------------------------------------------------------------- resolution

@dataclass(frozen=True)
class ViewVersion:
    """One version of a feature view with the definitions it was registered against."""

    view: FeatureView
    version: int
    spec_hash: str
    source: Source
    source_version: int
    join_keys: tuple[str, ...]
    definitions: Mapping[str, Definition]
    """The view, its source and entities as registered then, by ``kind:name`` (what the
    compiler reads)."""

    @property
    def key(self) -> tuple[str, int]:
        return (self.view.name, self.version)


@dataclass(frozen=True)
class Resolution:
    references: tuple[FeatureReference, ...]
    versions: Mapping[str, int]
    """Reference text → the version it resolved to."""
    views: Mapping[tuple[str, int], ViewVersion]

    def view_of(self, reference: FeatureReference) -> ViewVersion:
        return self.views[(reference.view, self.versions[reference.text])]

    def feature_of(self, reference: FeatureReference) -> Feature:
        feature = self.view_of(reference).view.feature_named(reference.feature)
        assert feature is not None, "resolution checked every feature"
        return feature


def _as_of(registry: DefinitionReader, kind: Kind, name: str, position: int,
           ) -> tuple[Definition, int]:
    """``kind:name`` as registered when the event log was at ``position``."""
    versions = registry.versions(kind.value, name)
    eligible = [v for v in versions if v.position <= position] or versions[-1:]
    if not eligible:
        raise NotFoundError(f"{kind.value} {name!r} is not registered")
    record = eligible[-1]
    return parse_definition(dict(record.spec)), record.version


def _view_version(registry: DefinitionReader, record: VersionRecord) -> ViewVersion:
    view = parse_definition(dict(record.spec))
    assert isinstance(view, FeatureView)
    source, source_version = _as_of(registry, Kind.SOURCE, view.source, record.position)
    assert isinstance(source, Source)
    catalog: dict[str, Definition] = {f"{Kind.FEATURE_VIEW}:{view.name}": view,
                                      f"{Kind.SOURCE}:{source.name}": source}
    for entity_name in view.entities:
        entity, _ = _as_of(registry, Kind.ENTITY, entity_name, record.position)
        assert isinstance(entity, Entity)
        catalog[f"{Kind.ENTITY}:{entity_name}"] = entity
    return ViewVersion(view, record.version, record.spec_hash, source, source_version,
                       view_join_keys(view, catalog), catalog)


def view_version(registry: DefinitionReader, name: str, version: int | None) -> ViewVersion:
    """Version ``version`` of feature view ``name`` (None: the active one, else the latest)
    with the definitions it was registered against; NotFoundError naming what is missing."""
    record = registry.definition(Kind.FEATURE_VIEW.value, name)
    if record is None:
        raise NotFoundError(f"feature view {name!r} is not registered")
    number = version or record.active_version or record.latest_version
    version_record = registry.version(Kind.FEATURE_VIEW.value, name, number)
    if version_record is None:
        raise NotFoundError(f"feature view {name!r} has no version {number} "
                            f"(versions 1..{record.latest_version})")
    return _view_version(registry, version_record)


def resolve(texts: Sequence[str], registry: DefinitionReader,
            pinned: Mapping[str, int] | None = None) -> Resolution:
    """Every reference resolved to a version, or one error listing every problem.

    ``pinned`` (reference text → version) replaces the active-version rule: how a
    reproduction uses the versions an earlier training set recorded.
    """
    references = parse_references(texts)
    problems: list[Problem] = []
    unknown = False  # a view or version that does not exist: not found, as when serving
    versions: dict[str, int] = {}
    views: dict[tuple[str, int], ViewVersion] = {}
    for index, reference in enumerate(references):
        path = f"features[{index}]"
        record = registry.definition(Kind.FEATURE_VIEW.value, reference.view)
        if record is None:
            on_demand = registry.definition(Kind.ON_DEMAND_FEATURE_VIEW.value, reference.view)
            unknown = unknown or on_demand is None
            problems.append(Problem(path, (
                f"{reference.view!r} is an on-demand feature view: training sets take "
                "feature views only" if on_demand else
                f"feature view {reference.view!r} is not registered")))
            continue
        version = (pinned or {}).get(reference.text) or reference.version or \
            record.active_version or record.latest_version
        if (reference.view, version) not in views:
            version_record = registry.version(Kind.FEATURE_VIEW.value, reference.view, version)
            if version_record is None:
                unknown = True
                problems.append(Problem(path, f"feature view {reference.view!r} has no version "
                                              f"{version} (versions 1..{record.latest_version})"))
                continue
            views[(reference.view, version)] = _view_version(registry, version_record)
        view = views[(reference.view, version)].view
        if view.feature_named(reference.feature) is None:
            known = ", ".join(f.name for f in view.features)
            problems.append(Problem(path, f"feature view {reference.view!r} version {version} "
                                          f"has no feature {reference.feature!r} (it has: "
                                          f"{known})"))
            continue
        versions[reference.text] = version
    if unknown:  # still naming every problem found, the others too
        raise NotFoundError("; ".join(str(p) for p in problems))
    if problems:
        raise InvalidFeatureRequestError(problems)
    return Resolution(references, versions, views)


# --------------------------------------------------------------------------- label rows

def check_label_rows(rows: pa.Table, resolution: Resolution) -> None:
    """Missing or mistyped columns, all reported at once."""
    problems: list[Problem] = []
    columns = set(rows.column_names)
    available = ", ".join(rows.column_names) or "none"
    if TIMESTAMP_COLUMN not in columns:
        problems.append(Problem(TIMESTAMP_COLUMN, f"column is missing (the rows have: "
                                                  f"{available})"))
    elif not pa.types.is_timestamp(rows.schema.field(TIMESTAMP_COLUMN).type):
        problems.append(Problem(TIMESTAMP_COLUMN, "must be a timestamp column (UTC), not "
                                                  f"{rows.schema.field(TIMESTAMP_COLUMN).type}"))
    for view in resolution.views.values():
        missing = [k for k in view.join_keys if k not in columns]
        if missing:
            problems.append(Problem(", ".join(missing), (
                f"join key column(s) of feature view {view.view.name!r} missing (the rows "
                f"have: {available})")))
    for reference in resolution.references:
        if reference.text in columns:
            problems.append(Problem(reference.text, "the rows already have a column of this "
                                                    "name, which the feature would overwrite"))
    if problems:
        raise InvalidFeatureRequestError(problems)


def _label_key_columns(rows: pa.Table, view: ViewVersion, events: pa.Table) -> list[pa.Array]:
    """The rows' join keys in the archive's column types."""
    columns = []
    for key in view.join_keys:
        wanted = events.schema.field(key).type
        try:
            columns.append(pc.cast(rows[key].combine_chunks(), wanted))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise InvalidFeatureRequestError.single(
                key, f"cannot be read as the source's column type {wanted}: {error}") from None
    return columns


# --------------------------------------------------------------------------- archive

@dataclass(frozen=True)
class SourceRead:
    """What one source's archive contributed: its clean events and the snapshot read."""

    table: str
    snapshot_id: int | None
    events: pa.Table


@dataclass
class _SourceNeeds:
    columns: set[str] = field(default_factory=set)
    lookback_ms: int | None = 0
    """How far before the earliest label a visible value can start; None = unbounded."""


def _needs_by_source(resolution: Resolution, skip: Collection[tuple[str, int]] = (),
                     ) -> dict[str, _SourceNeeds]:
    """What to read of each source for the view versions not in ``skip``."""
    needs: dict[str, _SourceNeeds] = {}
    for key, view in resolution.views.items():
        if key in skip:
            continue
        need = needs.setdefault(view.source.name, _SourceNeeds())
        need.columns.update(view.join_keys)
        need.columns.update(f.column for f in view.view.features if f.column)
        longest_window = max((f.window_ms or 0 for f in view.view.features), default=0)
        if need.lookback_ms is not None:
            need.lookback_ms = None if view.view.ttl_ms is None else \
                max(need.lookback_ms, view.view.ttl_ms + longest_window)
    return needs


def _read_source(catalog: Catalog, source: str, need: _SourceNeeds, label_ms: Int64Array,
                 snapshot_id: int | None) -> SourceRead:
    table = iceberg.load_archive(catalog, source)
    name = iceberg.table_name(source)
    if snapshot_id is None:
        current = table.current_snapshot()
        snapshot_id = current.snapshot_id if current is not None else None
    elif table.metadata.snapshot_by_id(snapshot_id) is None:
        raise NotFoundError(f"snapshot {snapshot_id} of {name} no longer exists (expired "
                                   "by maintenance): the training set cannot be reproduced")
    missing = sorted(need.columns - set(table.schema().column_names))
    if missing:
        raise NotFoundError(f"{name} has no column(s) {', '.join(missing)}: the archive "
                            "predates that contract version")
    columns = [*sorted(need.columns), iceberg.EVENT_TIME, iceberg.PARTITION, iceberg.OFFSET]
    seen = label_ms[label_ms > np.iinfo(np.int64).min]
    if snapshot_id is None or not len(seen):
        empty = table.schema().select(*columns).as_arrow()
        return SourceRead(name, snapshot_id, empty.empty_table())
    row_filter: BooleanExpression = And(IsNull(iceberg.VIOLATION),
                                        LessThanOrEqual(iceberg.EVENT_TIME,
                                                        iceberg.iso_instant(int(seen.max()))))
    if need.lookback_ms is not None:
        row_filter = And(row_filter, GreaterThanOrEqual(
            iceberg.EVENT_TIME, iceberg.iso_instant(int(seen.min()) - need.lookback_ms)))
    return SourceRead(name, snapshot_id, iceberg.scan(table, columns, row_filter, snapshot_id))


def _earliest_archived_ms(catalog: Catalog, source: str) -> int | None:
    """The start of the archive's first day partition (no data is read)."""
    try:
        archive = iceberg.load_archive(catalog, source)
    except iceberg.ArchiveError:
        return None
    days = [task.file.partition[0] for task in archive.scan().plan_files()
            if task.file.partition[0] is not None]
    return min(days) * DAY_MS if days else None


def _read_materialised(catalog: Catalog, view: ViewVersion, label_ms: Int64Array,
                       reproduction: Reproduction | None) -> SourceRead | None:
    """The view version's rows from its offline feature table, if the table covers every
    time a label row can see (``ttl`` back from the earliest label, or the whole archive
    without a ttl); None: compute from the archive instead."""
    name = iceberg.feature_table_name(view.view.name, view.version)
    table = iceberg.load_feature_table(catalog, name)
    seen = label_ms[label_ms > np.iinfo(np.int64).min]
    if table is None or not len(seen):
        return None
    if reproduction is not None:  # as the earlier training set did
        if name not in reproduction.snapshots:
            return None
        snapshot_id = reproduction.snapshots[name]
        if snapshot_id is None or table.metadata.snapshot_by_id(snapshot_id) is None:
            raise NotFoundError(f"snapshot {snapshot_id} of {name} no longer exists: the "
                                "training set cannot be reproduced")
    else:
        current = table.current_snapshot()
        if current is None:
            return None
        snapshot_id = current.snapshot_id
    ttl = view.view.ttl_ms
    earliest = int(seen.min()) - ttl if ttl is not None else \
        _earliest_archived_ms(catalog, view.source.name)
    needed = (min(earliest, int(seen.max())) if earliest is not None else int(seen.max()),
              int(seen.max()) + 1)
    coverage = merged(iceberg.feature_coverage(table.metadata, snapshot_id))
    if not covered(coverage, needed):
        return None
    columns = [*view.join_keys, iceberg.WINDOW_START, iceberg.FEATURE_TIME,
               *(f.name for f in view.view.features)]
    row_filter = And(GreaterThanOrEqual(iceberg.FEATURE_TIME, iceberg.iso_instant(needed[0])),
                     LessThan(iceberg.FEATURE_TIME, iceberg.iso_instant(needed[1])))
    return SourceRead(name, snapshot_id, iceberg.scan(table, columns, row_filter, snapshot_id))


def _materialised_values(read: SourceRead, view: ViewVersion, rows: pa.Table,
                         features: Sequence[Feature]) -> dict[str, pa.Array]:
    stored = read.events
    label_keys, row_keys = encode_keys(_label_key_columns(rows, view, stored),
                                       [stored[k].combine_chunks() for k in view.join_keys])
    materialised = MaterialisedRows(
        row_keys, floor_to_millis(stored[iceberg.WINDOW_START]),
        floor_to_millis(stored[iceberg.FEATURE_TIME]),
        {f.name: stored[f.name].combine_chunks() for f in features})
    return materialised_values(features, materialised,
                               Labels(label_keys, floor_to_millis(rows[TIMESTAMP_COLUMN])),
                               view.view.ttl_ms)


# --------------------------------------------------------------------------- computation

@dataclass(frozen=True)
class TrainingSet:
    table: pa.Table
    metadata: dict[str, Any]

    def write(self, path: str | Path) -> None:
        table = self.table.replace_schema_metadata({
            **(self.table.schema.metadata or {}),
            METADATA_KEY: json.dumps(self.metadata, sort_keys=True).encode(),
        })
        pq.write_table(table, str(path))


def _events(source_read: SourceRead, view: ViewVersion, rows: pa.Table) -> tuple[Events, Labels]:
    events = source_read.events
    label_keys, event_keys = encode_keys(
        _label_key_columns(rows, view, events),
        [events[k].combine_chunks() for k in view.join_keys])
    event_ms = floor_to_millis(events[iceberg.EVENT_TIME])
    partitions = events[iceberg.PARTITION].to_numpy()
    offsets = events[iceberg.OFFSET].to_numpy()
    rank = np.empty(len(offsets), dtype=np.int64)
    rank[np.lexsort((offsets, partitions))] = np.arange(len(offsets))
    columns = {f.column: events[f.column].combine_chunks()
               for f in view.view.features if f.column}
    label_ms = floor_to_millis(rows[TIMESTAMP_COLUMN])
    return (Events(event_keys, event_ms, rank, columns), Labels(label_keys, label_ms))


def _dataset_metadata(resolution: Resolution, reads: Mapping[str, SourceRead],
                      computed_from: Mapping[tuple[str, int], SourceRead]) -> dict[str, Any]:
    return {
        "format": METADATA_FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "rule": VISIBILITY_RULE,
        "references": [r.text for r in resolution.references],
        "features": {r.text: {"view": r.view, "version": resolution.versions[r.text],
                              "feature": r.feature} for r in resolution.references},
        "versions": {r.view_label: resolution.versions[r.text]
                     for r in resolution.references},
        "views": {f"{v.view.name}@{v.version}": {
            "spec_hash": v.spec_hash, "source": v.source.name,
            "source_version": v.source_version} for v in resolution.views.values()},
        "snapshots": {read.table: read.snapshot_id
                      for read in [*reads.values(), *computed_from.values()]},
        "computed_from": {f"{view}@{version}": read.table
                          for (view, version), read in computed_from.items()},
    }


@dataclass(frozen=True)
class Reproduction:
    """What an earlier training set recorded: its references, versions and snapshots."""

    references: tuple[str, ...]
    versions: Mapping[str, int]
    snapshots: Mapping[str, int | None]

    @classmethod
    def of(cls, path: str | Path) -> Reproduction:
        metadata = pq.read_schema(str(path)).metadata or {}
        if METADATA_KEY not in metadata:
            raise InvalidFeatureRequestError.single(
                "reproduce", f"{path} is not a training set written by `fp dataset` "
                             "(no fp.dataset metadata)")
        recorded = json.loads(metadata[METADATA_KEY])
        return cls(tuple(recorded["references"]),
                   {ref: f["version"] for ref, f in recorded["features"].items()},
                   recorded["snapshots"])


class TrainingSetBuilder:
    def __init__(self, registry: DefinitionReader, catalog: Catalog) -> None:
        self.registry = registry
        self.catalog = catalog

    def build(self, rows: pa.Table, references: Sequence[str],
              reproduction: Reproduction | None = None,
              progress: Progress | None = None) -> TrainingSet:
        progress = progress or _Silent()
        progress.step("resolving feature references")
        if reproduction is not None:
            references = references or reproduction.references
        resolution = resolve(references, self.registry,
                             reproduction.versions if reproduction else None)
        check_label_rows(rows, resolution)
        label_ms = floor_to_millis(rows[TIMESTAMP_COLUMN])
        values: dict[tuple[str, int], dict[str, pa.Array]] = {}
        materialised: dict[tuple[str, int], SourceRead] = {}
        for key, view in resolution.views.items():
            read = _read_materialised(self.catalog, view, label_ms, reproduction)
            if read is not None:
                progress.step(f"reading {view.view.name}@{view.version} from {read.table} "
                              f"({len(read.events):,} rows)")
                materialised[key] = read
                values[key] = _materialised_values(read, view, rows,
                                                   _wanted(resolution, key))
        reads: dict[str, SourceRead] = {}
        for source, need in _needs_by_source(resolution, skip=materialised.keys()).items():
            progress.step(f"reading {iceberg.table_name(source)}")
            pinned = reproduction.snapshots.get(iceberg.table_name(source)) \
                if reproduction else None
            reads[source] = _read_source(self.catalog, source, need, label_ms, pinned)
        for key, view in resolution.views.items():
            if key in materialised:
                continue
            progress.step(f"computing {view.view.name}@{view.version} "
                          f"({len(reads[view.source.name].events):,} events)")
            events, labels = _events(reads[view.source.name], view, rows)
            values[key] = feature_values(_wanted(resolution, key), events, labels,
                                         view.view.ttl_ms)
        table = rows
        for reference in resolution.references:
            view = resolution.view_of(reference)
            feature = resolution.feature_of(reference)
            column = values[view.key][feature.name]
            table = table.append_column(reference.text, column.cast(
                _ARROW_TYPE[output_type(feature, view.source)]))
        return TrainingSet(table, _dataset_metadata(resolution, reads, materialised))


def _wanted(resolution: Resolution, key: tuple[str, int]) -> list[Feature]:
    """The features of view version ``key`` the references ask for, each once."""
    wanted = [resolution.feature_of(r) for r in resolution.references
              if (r.view, resolution.versions[r.text]) == key]
    return list({f.name: f for f in wanted}.values())


# --------------------------------------------------------------------------- entry point

class RichProgress:
    """One progress bar on stderr, advanced step by step (hidden when not a terminal)."""

    def __init__(self, bar: Any, task: Any) -> None:
        self.bar, self.task = bar, task

    def step(self, description: str) -> None:
        self.bar.update(self.task, advance=1, description=description)


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress]:
    """A bar on stderr naming the current step; how many steps there are is known only once
    the references are resolved, so it pulses rather than pretending to a fraction."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, disable=not (enabled and console.is_terminal),
                  transient=False) as bar:
        task = bar.add_task("starting", total=None)
        yield RichProgress(bar, task)
        bar.update(task, total=1, completed=1, description="done")


def build_training_set(registry: DefinitionReader, catalog: Catalog, *, entities: str | Path,
                       references: Sequence[str], out: str | Path,
                       reproduce: str | Path | None = None,
                       show_progress: bool = True) -> TrainingSet:
    """Read label rows from ``entities``, write the training set to ``out``."""
    path = Path(entities)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file (expected the label rows as Parquet)")
    try:
        rows = pq.read_table(str(path))
    except pa.ArrowInvalid as error:
        raise InvalidFeatureRequestError.single(
            "entities", f"{path} is not a readable Parquet file: {error}") from None
    reproduction = Reproduction.of(reproduce) if reproduce else None
    with progress_bar(show_progress) as progress:
        training_set = TrainingSetBuilder(registry, catalog).build(rows, references,
                                                                   reproduction, progress)
        progress.step(f"writing {out}")
        training_set.write(out)
    return training_set

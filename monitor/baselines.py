"""Baselines: from a training set — the values `fp dataset` computed for a view version,
summed up per feature as the monitor compares them (core/domain/drift.py) —, from a time
range of the offline store, or from stored monitoring windows."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, GreaterThanOrEqual, IsNull, LessThan

from core.domain.definitions import Kind as DefinitionKind
from core.domain.drift import Kind, WindowStatistics, category_text, statistics_of_parts
from core.domain.references import parse_view_version
from core.errors import InvalidFeatureRequestError, NotFoundError, Problem
from offline import iceberg
from offline.point_in_time import floor_to_millis, window_ends
from offline.training_sets import (
    METADATA_KEY,
    TIMESTAMP_COLUMN,
    DefinitionReader,
    Reproduction,
    TrainingSetBuilder,
    ViewVersion,
    resolve,
)
from registry.store.drift import WindowParts


def pinned_view_version(text: str) -> tuple[str, int]:
    """``VIEW@N`` → (view, N): a baseline belongs to one version."""
    try:
        view, version = parse_view_version(text)
    except ValueError:
        version = None
    if not view or version is None:
        raise InvalidFeatureRequestError.single(
            "view", f"{text!r} is not VIEW@N: name the view version, e.g. user_transactions@3")
    return view, version


def column_kind(data_type: pa.DataType) -> Kind | None:
    """How the monitor judges a training set's column (its type is the feature's value type,
    offline/training_sets.py): as :func:`core.domain.drift.monitored_kind` does."""
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type):
        return Kind.NUMERIC
    if pa.types.is_string(data_type) or pa.types.is_boolean(data_type):
        return Kind.CATEGORICAL
    return None


def statistics_of_column(column: pa.ChunkedArray, kind: Kind) -> WindowStatistics:
    """A training set's column summarised as the stream summarises a feature's values."""
    if kind is Kind.CATEGORICAL:
        return WindowStatistics.of_strings(
            None if value is None else category_text(value) for value in column.to_pylist())
    numbers = column.cast(pa.float64()).fill_null(np.nan).to_numpy()
    return WindowStatistics.of_numbers(numbers)


def baseline_of_dataset(path: Path, view: str, version: int,
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(feature → statistics JSON, origin) of the columns of ``path`` that hold features of
    ``view@version`` the monitor judges."""
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file (expected a training set of `fp dataset`)")
    metadata = (pq.read_schema(str(path)).metadata or {}).get(METADATA_KEY)
    if metadata is None:
        raise InvalidFeatureRequestError.single(
            "dataset", f"{path} is not a training set written by `fp dataset` (no fp.dataset "
                       "metadata)")
    recorded = json.loads(metadata)
    schema = pq.read_schema(str(path))
    kinds = {reference: column_kind(schema.field(reference).type)
             for reference in recorded["features"] if reference in schema.names}
    columns = {reference: entry["feature"] for reference, entry in recorded["features"].items()
               if entry["view"] == view and entry["version"] == version
               and kinds.get(reference) is not None}
    if not columns:
        found = ", ".join(f"{e['view']}@{e['version']}:{e['feature']}"
                          for e in recorded["features"].values()) or "none"
        raise InvalidFeatureRequestError([Problem(
            "dataset", f"{path} holds no monitored feature of {view}@{version} (it holds: "
                       f"{found})")])
    table = pq.read_table(str(path), columns=list(columns))
    features = {}
    for reference, feature in columns.items():
        kind = kinds[reference]
        assert kind is not None, "only monitored columns are read"
        features[feature] = statistics_of_column(table[reference], kind).to_json()
    origin = {"kind": "dataset", "file": path.name, "rows": table.num_rows,
              "created_at": recorded.get("created_at"),
              "snapshots": recorded.get("snapshots", {})}
    return features, origin


def baseline_of_windows(windows: Sequence[WindowParts]) -> dict[str, Any]:
    """Feature → statistics JSON of the monitoring windows merged: a stretch of live values
    known to be good serves as a baseline too (the demo's)."""
    by_feature: dict[str, list[WindowStatistics]] = defaultdict(list)
    for window in windows:
        categorical = any(key.startswith("c:") for key in window.parts)
        numeric = any(key.startswith("b:") for key in window.parts)
        if categorical or numeric:  # a window of nulls only tells no kind
            by_feature[window.feature].append(
                statistics_of_parts(window.parts, categorical=categorical))
    return {feature: WindowStatistics.merge_all(statistics).to_json()
            for feature, statistics in sorted(by_feature.items())}


def baseline_of_archive(registry: DefinitionReader, catalog: Catalog, view: str, version: int,
                        *, from_ms: int, to_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(feature → statistics JSON, origin) of the values ``view@version``'s job would have
    emitted for the archived events of ``[from_ms, to_ms)``: a window feature's value for
    each entity and window ending in ``(from_ms, to_ms]`` that holds one of its events, a
    ``last`` feature's value at each event carrying it.  Computed by the training sets'
    point-in-time rules (the streaming job's semantics) at those label rows, from one
    snapshot of the source's archive."""
    if from_ms >= to_ms:
        raise InvalidFeatureRequestError.single("to", "must be after from")
    record = registry.version(DefinitionKind.FEATURE_VIEW.value, view, version)
    if record is None:
        raise NotFoundError(f"feature view {view!r} has no version {version}")
    resolution = resolve([f"{view}@{version}:{name}" for name in
                          (f["name"] for f in record.spec["features"])], registry)
    [resolved] = resolution.views.values()
    table = iceberg.load_archive(catalog, resolved.source.name)
    snapshot = table.current_snapshot()
    longest = max((f.window_ms or 0 for f in resolved.view.features), default=0)
    columns = [*resolved.join_keys, *sorted({f.column for f in resolved.view.features
                                             if f.column}), iceberg.EVENT_TIME]
    events = iceberg.scan(table, columns, And(
        IsNull(iceberg.VIOLATION), GreaterThanOrEqual(iceberg.EVENT_TIME, _iso(from_ms - longest)),
        LessThan(iceberg.EVENT_TIME, _iso(to_ms))), snapshot.snapshot_id if snapshot else None)
    event_ms = floor_to_millis(events[iceberg.EVENT_TIME])
    groups: dict[tuple[int, int] | None, list[str]] = defaultdict(list)
    for feature in resolved.view.features:
        groups[feature.window_group].append(feature.name)
    features: dict[str, Any] = {}
    builder = TrainingSetBuilder(registry, catalog)
    for group, names in groups.items():
        labels = _emitted_rows(events, event_ms, resolved, group, names, from_ms=from_ms,
                               to_ms=to_ms)
        if not labels.num_rows:
            continue
        references = [f"{view}@{version}:{name}" for name in names]
        built = builder.build(labels, references, Reproduction(
            tuple(references), dict.fromkeys(references, version),
            {iceberg.table_name(resolved.source.name): snapshot.snapshot_id
             if snapshot else None}))
        for reference, name in zip(references, names, strict=True):
            kind = column_kind(built.table.schema.field(reference).type)
            if kind is not None:
                features[name] = statistics_of_column(built.table[reference], kind).to_json()
    origin = {"kind": "archive", "from_ms": from_ms, "to_ms": to_ms,
              "snapshots": {iceberg.table_name(resolved.source.name):
                            snapshot.snapshot_id if snapshot else None}}
    return features, origin


def _emitted_rows(events: pa.Table, event_ms: npt.NDArray[np.int64], resolved: ViewVersion,
                  group: tuple[int, int] | None, names: Sequence[str], *, from_ms: int,
                  to_ms: int) -> pa.Table:
    """The label rows at which the job emitted values of one window group (each entity's
    windows ending in ``(from_ms, to_ms]`` that hold an event of it), or of ``last``
    features (each event of ``[from_ms, to_ms)`` carrying one of them)."""
    if group is None:
        columns = {f.column for f in resolved.view.features if f.name in names and f.column}
        carried = np.zeros(len(event_ms), dtype=bool)
        for column in columns:
            carried |= np.asarray(pc.is_valid(events[column]).to_numpy(zero_copy_only=False))
        index = np.flatnonzero(carried & (event_ms >= from_ms))
        times = event_ms[index]
    else:
        index, times = window_ends(event_ms, *group)
        kept = (times > from_ms) & (times <= to_ms)
        index, times = index[kept], times[kept]
    keys = list(resolved.join_keys)
    rows = pa.table({**{key: pc.take(events[key], pa.array(index)) for key in keys},
                     TIMESTAMP_COLUMN: pa.array(times, pa.timestamp("ms", tz="UTC"))})
    return rows.group_by([*keys, TIMESTAMP_COLUMN]).aggregate([])


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()

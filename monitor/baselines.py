"""Baselines: from a training set — the values `fp dataset` computed for a view version,
summed up per feature as the monitor compares them (core/domain/drift.py) — or from stored
monitoring windows."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.domain.drift import Kind, WindowStatistics, category_text, statistics_of_parts
from core.errors import InvalidFeatureRequestError, NotFoundError, Problem
from offline.training_sets import METADATA_KEY
from registry.store.drift import WindowParts


def parse_view_version(text: str) -> tuple[str, int]:
    """``VIEW@N`` → (view, N)."""
    view, separator, number = text.partition("@")
    if not separator or not view or not number.isdigit() or int(number) < 1:
        raise InvalidFeatureRequestError.single(
            "view", f"{text!r} is not VIEW@N: name the view version, e.g. user_transactions@3")
    return view, int(number)


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

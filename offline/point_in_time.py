"""Point-in-time feature values from raw events: the streaming job's semantics, in batch (pure).

The rule, for a label row with timestamp ``T`` (epoch ms; finer timestamps are floored to the
millisecond, which never changes a comparison against whole-millisecond times):

- A windowed feature (window ``size``, ``slide``; tumbling when equal) has one value per window
  ``[start, start + size)`` whose ``start`` is a multiple of ``slide`` since the epoch (Flink's
  TUMBLE/HOP alignment) and which holds at least one clean event of the entity — the stream
  emits no row for an entity's empty window, so the previous value stays.  The value's event
  time is the window's end; the row sees the window **iff ``end <= T``**.  So a row at
  ``end - 1 ms`` sees the previous window, a row at ``end`` sees this one.
- A ``last`` feature's value is the column of the entity's newest clean event whose column is
  not null; the value's event time is the event's; the row sees it iff ``event time <= T``.
  Equal event times go to the later message (partition, then offset).
- Of the visible values, the one with the newest event time is the row's value; with the
  view's ``ttl`` set, a value with ``T - event time > ttl`` is null, as serving reports it
  EXPIRED (``serving.decoding.is_expired``).
- Aggregates as the stream's SQL computes them: ``count`` counts events (rows with a null
  column too), ``sum``/``min``/``max`` skip nulls (null when every value is null),
  ``avg`` is the double mean, ``stddev`` the population standard deviation.

Everything here works on whole columns (numpy / pyarrow compute): no Python loop per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from core.domain.definitions import Aggregation, Feature

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def window_ends(event_ms: Int64Array, size_ms: int, slide_ms: int,
                ) -> tuple[Int64Array, Int64Array]:
    """Every (event index, window end) with the event inside the window: size/slide windows
    per event, starts aligned to multiples of ``slide_ms`` since the epoch."""
    if size_ms % slide_ms:
        raise ValueError(f"the slide {slide_ms} ms does not divide the window {size_ms} ms")
    per_event = size_ms // slide_ms
    # numpy's % floors, so this is right before 1970 too.
    last_start = event_ms - event_ms % slide_ms
    index = np.repeat(np.arange(len(event_ms), dtype=np.int64), per_event)
    back = np.tile(np.arange(per_event, dtype=np.int64) * slide_ms, len(event_ms))
    return index, np.repeat(last_start + size_ms, per_event) - back


def as_of_join(left_keys: Int64Array, left_ms: Int64Array, right_keys: Int64Array,
               right_ms: Int64Array, right_rank: Int64Array | None = None) -> Int64Array:
    """For each left row, the index of the right row with the same key and the greatest time
    ``<= left_ms`` (ties: the greatest ``right_rank``), or -1.  Keys < 0 never match."""
    n_right = len(right_keys)
    keys = np.concatenate([right_keys, left_keys])
    times = np.concatenate([right_ms, left_ms])
    # At equal times right rows sort first: a value whose time equals T is visible at T.
    side = np.concatenate([np.zeros(n_right, np.int8), np.ones(len(left_keys), np.int8)])
    rank = np.concatenate([right_rank if right_rank is not None
                           else np.zeros(n_right, np.int64), np.zeros(len(left_keys), np.int64)])
    order = np.lexsort((rank, side, times, keys))
    is_right = order < n_right
    positions = np.where(is_right, np.arange(len(order)), -1)
    latest_right = np.maximum.accumulate(positions) if len(positions) else positions
    left_positions = np.flatnonzero(~is_right)
    candidates = latest_right[left_positions]
    found = candidates >= 0
    candidate_rows = order[np.where(found, candidates, 0)]
    left_rows = order[left_positions]
    found &= (keys[candidate_rows] == keys[left_rows]) & (keys[left_rows] >= 0)
    result = np.full(len(left_keys), -1, dtype=np.int64)
    result[left_rows - n_right] = np.where(found, candidate_rows, -1)
    return result


def encode_keys(left: Sequence[pa.Array], right: Sequence[pa.Array],
                ) -> tuple[Int64Array, Int64Array]:
    """Integer codes for composite keys: equal tuples get equal codes across both sides;
    a tuple with a null gets -1.  Columns pair up by position and must share types."""
    n_left = len(left[0]) if left else 0
    codes = np.zeros(n_left + (len(right[0]) if right else 0), dtype=np.int64)
    valid = np.ones(len(codes), dtype=bool)
    for left_column, right_column in zip(left, right, strict=True):
        combined = pa.chunked_array([left_column, right_column]).combine_chunks()
        encoded = pc.dictionary_encode(combined)
        indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        valid &= indices >= 0
        # Mixed radix, re-compacted after each column so codes never overflow.
        codes = np.unique(codes * (len(encoded.dictionary) + 1) + indices + 1,
                          return_inverse=True)[1].astype(np.int64).reshape(-1)
    codes[~valid] = -1
    return codes[:n_left], codes[n_left:]


def floor_to_millis(timestamps: pa.Array | pa.ChunkedArray) -> Int64Array:
    """Epoch milliseconds of a timestamp column (floored; naive times are read as UTC);
    null times become the smallest int64, which sees nothing."""
    kind = timestamps.type
    if not pa.types.is_timestamp(kind):
        raise TypeError(f"expected a timestamp column, got {kind}")
    missing = np.iinfo(np.int64).min
    values: Int64Array = np.asarray(
        pc.cast(timestamps, pa.int64()).fill_null(missing).to_numpy(), dtype=np.int64)
    null = values == missing
    if kind.unit == "s":
        millis: Int64Array = values * 1000
    else:
        millis = values // {"ms": 1, "us": 1000, "ns": 1_000_000}[kind.unit]
    millis[null] = missing
    return millis


def expired(as_of_ms: Int64Array, value_ms: Int64Array, ttl_ms: int | None) -> BoolArray:
    """Serving's rule: a value older than the ttl is missing (``now - time > ttl``)."""
    if ttl_ms is None:
        return np.zeros(len(as_of_ms), dtype=np.bool_)
    older: BoolArray = as_of_ms - value_ms > ttl_ms
    return older


@dataclass(frozen=True)
class Events:
    """The clean events of one source, one entry per event."""

    keys: Int64Array
    """Entity code per event (from :func:`encode_keys`); events with a null key are -1."""
    time_ms: Int64Array
    rank: Int64Array
    """Message order (partition, offset), breaking ties between equal event times."""
    columns: Mapping[str, pa.Array]


@dataclass(frozen=True)
class Labels:
    keys: Int64Array
    time_ms: Int64Array


_ARROW_AGGREGATE = {Aggregation.SUM: "sum", Aggregation.MIN: "min", Aggregation.MAX: "max",
                    Aggregation.AVG: "mean", Aggregation.STDDEV: "stddev"}


def _take(values: pa.Array, indices: Int64Array) -> pa.Array:
    """``values[indices]``, null where the index is -1."""
    return pc.take(values, pa.array(indices, mask=indices < 0))


def _windowed(features: Sequence[Feature], window: tuple[int, int], events: Events,
              labels: Labels, ttl_ms: int | None) -> dict[str, pa.Array]:
    with_key = np.flatnonzero(events.keys >= 0)
    index, ends = window_ends(events.time_ms[with_key], *window)
    index = with_key[index]
    columns: dict[str, pa.Array] = {"key": pa.array(events.keys[index]), "end": pa.array(ends)}
    aggregations: list[tuple[str | list[str], str]] = [([], "count_all")]
    result_column: dict[str, str] = {}
    for feature in features:
        if feature.aggregation is Aggregation.COUNT:
            result_column[feature.name] = "count_all"
            continue
        column, function = feature.column or "", _ARROW_AGGREGATE[feature.aggregation]
        if column not in columns:
            columns[column] = pc.take(events.columns[column], pa.array(index))
        name = f"{column}_{function}"
        if name not in result_column.values():
            aggregations.append((column, function))
        result_column[feature.name] = name
    per_window = pa.table(columns).group_by(["key", "end"]).aggregate(aggregations)
    window_keys = per_window["key"].to_numpy()
    window_end = per_window["end"].to_numpy()
    match = as_of_join(labels.keys, labels.time_ms, window_keys, window_end)
    if len(window_end):
        match[expired(labels.time_ms, window_end[np.maximum(match, 0)], ttl_ms)] = -1
    return {name: _take(per_window[column].combine_chunks(), match)
            for name, column in result_column.items()}


def _latest(feature: Feature, events: Events, labels: Labels,
            ttl_ms: int | None) -> pa.Array:
    column = events.columns[feature.column or ""]
    present = np.flatnonzero(np.asarray(column.is_valid()) & (events.keys >= 0))
    if not len(present):
        return pa.nulls(len(labels.keys), type=column.type)
    match = as_of_join(labels.keys, labels.time_ms, events.keys[present],
                       events.time_ms[present], events.rank[present])
    rows = np.where(match >= 0, present[np.maximum(match, 0)], -1)
    rows[expired(labels.time_ms, events.time_ms[np.maximum(rows, 0)], ttl_ms)] = -1
    return _take(column, rows)


def feature_values(features: Sequence[Feature], events: Events, labels: Labels,
                   ttl_ms: int | None) -> dict[str, pa.Array]:
    """Each feature's value for each label row (see the module's rule)."""
    # Entities no label row asks for cannot change any result: drop their events first.
    wanted = np.isin(events.keys, labels.keys[labels.keys >= 0])
    if not wanted.all():
        rows = np.flatnonzero(wanted)
        events = Events(events.keys[rows], events.time_ms[rows], events.rank[rows],
                        {name: pc.take(column, pa.array(rows))
                         for name, column in events.columns.items()})
    values: dict[str, pa.Array] = {}
    groups: dict[tuple[int, int], list[Feature]] = {}
    for feature in features:
        group = feature.window_group
        if group is None:
            values[feature.name] = _latest(feature, events, labels, ttl_ms)
        else:
            groups.setdefault(group, []).append(feature)
    for window, grouped in groups.items():
        values.update(_windowed(grouped, window, events, labels, ttl_ms))
    return {f.name: values[f.name] for f in features}


@dataclass(frozen=True)
class MaterialisedRows:
    """Rows of an offline feature table (one per window of an entity, one per ``last``
    value), as written by a backfill: the same values the stream emitted."""

    keys: Int64Array
    window_start_ms: Int64Array
    """The smallest int64 for ``last`` rows."""
    time_ms: Int64Array
    """The window's end, or the ``last`` value's event time."""
    columns: Mapping[str, pa.Array]


def materialised_values(features: Sequence[Feature], rows: MaterialisedRows, labels: Labels,
                        ttl_ms: int | None) -> dict[str, pa.Array]:
    """Each feature's value for each label row, read from materialised rows by the module's
    rule: a windowed feature from the rows of its window's size and slide, ``last`` from the
    rows carrying a value of it."""
    no_window = np.iinfo(np.int64).min
    windowed = rows.window_start_ms != no_window
    values: dict[str, pa.Array] = {}
    for feature in features:
        column = rows.columns[feature.name]
        group = feature.window_group
        if group is None:
            wanted = ~windowed & np.asarray(column.is_valid())
        else:
            size, slide = group
            wanted = (windowed & (rows.time_ms - rows.window_start_ms == size)
                      & (rows.window_start_ms % slide == 0))
        candidates = np.flatnonzero(wanted & (rows.keys >= 0))
        match = as_of_join(labels.keys, labels.time_ms, rows.keys[candidates],
                           rows.time_ms[candidates])
        found = np.where(match >= 0, candidates[np.maximum(match, 0)], -1)
        if len(candidates):
            found[expired(labels.time_ms, rows.time_ms[np.maximum(found, 0)], ttl_ms)] = -1
        values[feature.name] = _take(column, found)
    return values

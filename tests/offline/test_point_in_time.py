"""Point-in-time rules (pure): window assignment, the as-of join, and whole views checked
row by row against the streaming tests' independent oracle."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.definitions import FeatureView, Source, parse_definition
from offline.point_in_time import (
    Events,
    Labels,
    as_of_join,
    encode_keys,
    feature_values,
    floor_to_millis,
    window_ends,
)
from tests.offline.support import BASE_MS, JOIN_KEYS, definitions, oracle_value, payloads, same
from tests.payments import FEATURES, SCHEMA
from tests.streaming.oracle import violation, windows_of


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-10**13, 10**13), min_size=1, max_size=20),
       st.sampled_from([(60_000, 60_000), (120_000, 60_000), (300_000, 60_000),
                        (86_400_000, 3_600_000), (7, 7)]))
def test_windows_are_the_oracles_epoch_aligned_windows(times: list[int],
                                                       window: tuple[int, int]) -> None:
    index, ends = window_ends(np.array(times, dtype=np.int64), *window)
    got = sorted(zip(index.tolist(), ends.tolist(), strict=True))
    want = sorted((i, end) for i, ts in enumerate(times) for _, end in windows_of(ts, *window))
    assert got == want


def brute_force_as_of(left: list[tuple[int, int]], right: list[tuple[int, int, int]]) -> list[int]:
    result = []
    for key, time in left:
        candidates = [(t, rank, i) for i, (k, t, rank) in enumerate(right)
                      if k == key and t <= time and key >= 0]
        result.append(max(candidates)[2] if candidates else -1)
    return result


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 20)), max_size=15),
       st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20)), max_size=15))
def test_as_of_join_equals_brute_force(left: list[tuple[int, int]],
                                       right: list[tuple[int, int]]) -> None:
    ranked = [(k, t, rank) for rank, (k, t) in enumerate(right)]  # unique ranks
    got = as_of_join(np.array([k for k, _ in left], dtype=np.int64),
                     np.array([t for _, t in left], dtype=np.int64),
                     np.array([k for k, _, _ in ranked], dtype=np.int64),
                     np.array([t for _, t, _ in ranked], dtype=np.int64),
                     np.array([r for _, _, r in ranked], dtype=np.int64))
    assert got.tolist() == brute_force_as_of(left, ranked)


def test_a_value_whose_time_equals_the_label_time_is_visible() -> None:
    match = as_of_join(np.array([0, 0]), np.array([99, 100]), np.array([0]), np.array([100]))
    assert match.tolist() == [-1, 0]


def test_composite_keys_encode_equal_tuples_equally_and_nulls_to_minus_one() -> None:
    left, right = encode_keys([pa.array(["a", "a", None, "b"]), pa.array(["x", "y", "x", "x"])],
                              [pa.array(["a", "b", "a"]), pa.array(["y", "x", "x"])])
    assert left[2] == -1
    assert left[1] == right[0] and left[3] == right[1] and left[0] == right[2]
    assert len({left[0], left[1], left[3]}) == 3


def test_timestamps_floor_to_milliseconds_in_every_unit() -> None:
    micros = pa.array([1_500, -1_500, None], pa.timestamp("us", tz="UTC"))
    assert floor_to_millis(micros).tolist() == [1, -2, np.iinfo(np.int64).min]
    assert floor_to_millis(pa.array([2], pa.timestamp("s"))).tolist() == [2000]
    assert floor_to_millis(pa.array([2_999_999], pa.timestamp("ns"))).tolist() == [2]
    with pytest.raises(TypeError):
        floor_to_millis(pa.array([1]))


# --------------------------------------------------------------------------- whole views

def clean_events(records: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
    return [json.loads(p) for _, p in records if violation(p, SCHEMA) is None]


def columnar(events: list[dict[str, Any]], label_rows: list[dict[str, Any]],
             ) -> tuple[Events, Labels]:
    label_keys, event_keys = encode_keys(
        [pa.array([r[k] for r in label_rows]) for k in JOIN_KEYS],
        [pa.array([e[k] for e in events], pa.string()) for k in JOIN_KEYS])
    columns = {"amount": pa.array([e.get("amount") for e in events], pa.float64()),
               "kind": pa.array([e.get("kind") for e in events], pa.string())}
    return (Events(event_keys, np.array([e["ts"] for e in events], dtype=np.int64),
                   np.arange(len(events), dtype=np.int64), columns),
            Labels(label_keys, np.array([r["t"] for r in label_rows], dtype=np.int64)))


def compare_with_oracle(view_json: dict[str, Any], events: list[dict[str, Any]],
                        label_rows: list[dict[str, Any]]) -> int:
    view = parse_definition(view_json)
    assert isinstance(view, FeatureView)
    computed = feature_values(view.features, *columnar(events, label_rows), view.ttl_ms)
    mismatches = []
    for index, row in enumerate(label_rows):
        want = oracle_value(events, view_json, row)
        for feature in view.features:
            got = computed[feature.name][index].as_py()
            if not same(want.get(feature.name), got):
                mismatches.append(f"{row} {feature.name}: want {want.get(feature.name)!r}, "
                                  f"got {got!r}")
    assert not mismatches, f"{len(mismatches)} mismatches, e.g. {mismatches[:5]}"
    return len(label_rows) * len(view.features)


def test_every_value_equals_the_latest_window_closed_by_the_label_time() -> None:
    rng = random.Random(3)
    events = clean_events(payloads(rng, 400))
    view_json = definitions("t")[2]
    label_rows = [{"account_id": a, "region": r, "t": BASE_MS + rng.randrange(-60_000, 560_000)}
                  for a, r in (rng.choice(ACCOUNT_KEYS) for _ in range(300))]
    assert compare_with_oracle(view_json, events, label_rows) == 300 * len(FEATURES)


ACCOUNT_KEYS = [("a1", "eu"), ("a1", "us"), ("b|2", "eu"), ("c\\3", "us"), ("d4", "eu"),
                ("nobody", "eu")]


def test_a_row_one_millisecond_before_a_window_closes_does_not_see_it() -> None:
    """Events in [0, 1m) and [1m, 2m): at 2m - 1 ms the 1m window is the newest closed one;
    at 2m the second window closes and becomes visible."""
    start = BASE_MS - BASE_MS % 60_000
    events = [{"account_id": "a1", "region": "eu", "amount": 1.0, "kind": "a", "ts": start},
              {"account_id": "a1", "region": "eu", "amount": 5.0, "kind": "b",
               "ts": start + 60_000},
              {"account_id": "a1", "region": "eu", "amount": 7.0, "ts": start + 119_999}]
    close = start + 120_000
    rows = [{"account_id": "a1", "region": "eu", "t": t} for t in (close - 1, close)]
    view_json = definitions("t")[2]
    view = parse_definition(view_json)
    assert isinstance(view, FeatureView)
    values = feature_values(view.features, *columnar(events, rows), None)
    assert values["amount_1m"].to_pylist() == [1.0, 12.0]
    assert values["payments_1m"].to_pylist() == [1, 2]
    assert values["last_kind"].to_pylist() == ["b", "b"], "last needs no window"
    compare_with_oracle(view_json, events, rows)


def test_values_older_than_the_ttl_are_null_as_serving_reports_them_expired() -> None:
    start = BASE_MS - BASE_MS % 60_000
    events = [{"account_id": "a1", "region": "eu", "amount": 2.0, "kind": "c", "ts": start}]
    ttl = 300_000
    rows = [{"account_id": "a1", "region": "eu", "t": t}
            for t in (start + 60_000 + ttl, start + 60_000 + ttl + 1, start + ttl,
                      start + ttl + 1)]
    view = parse_definition(definitions("t", ttl="5m")[2])
    assert isinstance(view, FeatureView)
    values = feature_values(view.features, *columnar(events, rows), view.ttl_ms)
    # The window's time is its end (start + 1m); the last value's time is the event's.
    assert values["amount_1m"].to_pylist() == [2.0, None, 2.0, 2.0]
    assert values["last_kind"].to_pylist() == [None, None, "c", None]


def test_equal_event_times_go_to_the_later_message() -> None:
    events = [{"account_id": "a1", "region": "eu", "kind": kind, "ts": 10}
              for kind in ("a", "b")]
    view = parse_definition(definitions("t")[2])
    assert isinstance(view, FeatureView)
    values = feature_values(view.features, *columnar(events, [{"account_id": "a1",
                                                               "region": "eu", "t": 10}]), None)
    assert values["last_kind"].to_pylist() == ["b"]


def test_sources_schema_is_the_one_the_views_read() -> None:
    source = parse_definition(definitions("t")[1])
    assert isinstance(source, Source)
    assert [f.name for f in source.schema] == [f["name"] for f in SCHEMA]

"""An independent computation of what a feature view must materialise, in plain Python.

Deliberately shares no code with the platform: it reads the definitions' JSON specs and
re-implements the contract checks, the windows and the aggregates from their definitions,
so a bug in the compiler or the writer cannot hide in both.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def millis(duration: str) -> int:
    for unit in ("ms", "s", "m", "h", "d"):
        number = duration.removesuffix(unit)
        if number != duration and number.isdigit():
            return int(number) * UNITS[unit]
    raise ValueError(duration)


def violation(payload: bytes, schema: list[dict[str, Any]]) -> str | None:
    """Why an event breaks the contract, or None for a clean event."""
    try:
        event = json.loads(payload)
    except ValueError:
        return "not JSON"
    if not isinstance(event, dict):
        return "not an object"
    for field in schema:
        value = event.get(field["name"])
        if value is None:
            if field.get("required"):
                return f"{field['name']} missing"
            continue
        kind = field["type"]
        if kind == "string" and not isinstance(value, str):
            return f"{field['name']} not a string"
        if kind in ("long", "int") and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{field['name']} not an integer"
        if kind in ("double", "float") and (isinstance(value, bool)
                                             or not isinstance(value, int | float)):
            return f"{field['name']} not a number"
        if "min" in field and value < field["min"]:
            return f"{field['name']} below min"
        if "max" in field and value > field["max"]:
            return f"{field['name']} above max"
        if "allowed" in field and value not in field["allowed"]:
            return f"{field['name']} not allowed"
    return None


def entity_key(values: list[str]) -> str:
    return "|".join(v.replace("\\", "\\\\").replace("|", "\\|") for v in values)


@dataclass
class Expected:
    features: dict[str, dict[str, Any]]
    """entity key → feature → value."""
    times: dict[str, dict[str, int]]
    """entity key → feature → event time of the value (window end, or event time for last)."""


def _aggregate(aggregation: str, values: list[Any], rows: int) -> Any:
    if aggregation == "count":
        return rows
    present = [v for v in values if v is not None]
    if not present:
        return None
    if aggregation == "sum":
        return sum(present)
    if aggregation == "min":
        return min(present)
    if aggregation == "max":
        return max(present)
    mean = sum(present) / len(present)
    if aggregation == "avg":
        return mean
    if aggregation == "stddev":  # population standard deviation
        return math.sqrt(sum((v - mean) ** 2 for v in present) / len(present))
    raise ValueError(aggregation)


def windows_of(ts: int, size: int, slide: int) -> list[tuple[int, int]]:
    last_start = ts - ts % slide
    return [(start, start + size) for start in range(last_start - size + slide, last_start + 1,
                                                     slide) if start <= ts < start + size]


def expected_features(events: list[dict[str, Any]], view: dict[str, Any], join_keys: list[str],
                      timestamp_field: str, watermark: int) -> Expected:
    """What Redis must hold once the watermark is ``watermark``, given the clean events.

    Windowed feature: the most recent window closed by the watermark (end - 1 <= watermark)
    that holds at least one of the entity's events.  ``last``: the value of the entity's
    newest event (by event time) whose column is not null.
    """
    features: dict[str, dict[str, Any]] = defaultdict(dict)
    times: dict[str, dict[str, int]] = defaultdict(dict)
    by_entity: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_entity[entity_key([str(event[k]) for k in join_keys])].append(event)
    for key, entity_events in by_entity.items():
        for feature in view["features"]:
            column = feature.get("column")
            if feature["aggregation"] == "last":
                candidates = [e for e in entity_events if e.get(column) is not None]
                if candidates:
                    newest = max(candidates, key=lambda e: e[timestamp_field])
                    features[key][feature["name"]] = newest[column]
                    times[key][feature["name"]] = newest[timestamp_field]
                continue
            size = millis(feature["window"])
            slide = millis(feature.get("slide", feature["window"]))
            windows: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
            for event in entity_events:
                for window in windows_of(event[timestamp_field], size, slide):
                    windows[window].append(event)
            closed = [w for w in windows if w[1] - 1 <= watermark]
            if not closed:
                continue
            window = max(closed, key=lambda w: w[1])
            rows = windows[window]
            values = [e.get(column) for e in rows] if column else [1] * len(rows)
            features[key][feature["name"]] = _aggregate(feature["aggregation"], values,
                                                        len(rows))
            times[key][feature["name"]] = window[1]
    return Expected(dict(features), dict(times))


def mismatches(expected: Expected, actual: dict[str, dict[str, Any]],
               actual_times: dict[str, dict[str, int]]) -> list[str]:
    """Every (entity, feature) whose value or event time differs; floats to 1e-9 relative."""
    found = []
    for key in sorted(set(expected.features) | set(actual)):
        want, got = expected.features.get(key, {}), actual.get(key, {})
        for name in sorted(set(want) | set(got)):
            a, b = want.get(name, "<absent>"), got.get(name, "<absent>")
            same = (math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
                    if isinstance(a, float | int) and isinstance(b, float | int)
                    and not isinstance(a, bool) else a == b)
            if not same:
                found.append(f"{key}.{name}: expected {a!r}, got {b!r}")
            elif expected.times.get(key, {}).get(name) != actual_times.get(key, {}).get(name):
                found.append(f"{key}.{name}: expected time "
                             f"{expected.times.get(key, {}).get(name)}, got "
                             f"{actual_times.get(key, {}).get(name)}")
    return found


def window_values(events: list[dict[str, Any]], view: dict[str, Any], join_keys: list[str],
                  timestamp_field: str) -> dict[str, dict[tuple[str, int], Any]]:
    """Every windowed feature's value in every window that holds an event of the entity:
    feature → (entity key, window end) → value.  What a job emits over its whole history."""
    values: dict[str, dict[tuple[str, int], Any]] = {}
    for feature in view["features"]:
        if feature["aggregation"] == "last":
            continue
        size = millis(feature["window"])
        slide = millis(feature.get("slide", feature["window"]))
        windows: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            key = entity_key([str(event[k]) for k in join_keys])
            for _, end in windows_of(event[timestamp_field], size, slide):
                windows[(key, end)].append(event)
        column = feature.get("column")
        values[feature["name"]] = {
            window: _aggregate(feature["aggregation"],
                               [e.get(column) for e in rows] if column else [1] * len(rows),
                               len(rows))
            for window, rows in windows.items()}
    return values


def last_values(events: list[dict[str, Any]], view: dict[str, Any], join_keys: list[str],
                timestamp_field: str) -> dict[str, dict[tuple[str, int], Any]]:
    """Every ``last`` feature's value at every event time of the entity with a non-null
    column: feature → (entity key, event time) → the value of the last such event there, in
    the events' order."""
    values: dict[str, dict[tuple[str, int], Any]] = {}
    for feature in view["features"]:
        if feature["aggregation"] != "last":
            continue
        column = feature["column"]
        values[feature["name"]] = {
            (entity_key([str(e[k]) for k in join_keys]), e[timestamp_field]): e[column]
            for e in events if e.get(column) is not None}
    return values

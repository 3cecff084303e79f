"""A source's data contract applied to one raw Kafka message, in Python (pure; no I/O).

The archiver judges every event exactly as the streaming job does (:mod:`sinks.compiler`,
``checked_events``), so that "clean" means the same online and offline:

- the payload must be a JSON object (UTF-8; ``NaN``/``Infinity`` are not JSON);
- then, field by field in contract order: a required field must be present and not null;
  a present value must be of the field's type as :func:`core.values.judge` decides it (so
  ``3.0`` is no long), except that a ``timestamp`` field must be a readable date-time string,
  since the stream casts its text; then ``min``, ``max`` and ``allowed``;
- the first broken rule is the event's violation, worded as the stream's dead letters word it;
- the event time must be readable from ``timestamp_field`` (the stream sends an event without
  one to the dead-letter topic as late, since it lands at epoch 0).

Lateness itself is not judged here: it depends on the stream's watermark, which the archive
cannot know (see docs/offline.md, "Lateness").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.domain.definitions import Field, Scalar, Source, TimestampFormat, ValueType
from core.values import judge

NOT_AN_OBJECT = "payload is not a JSON object"
UNREADABLE_EVENT_TIME = "event time is missing or unreadable"


class _NotJsonError(ValueError):
    pass


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity; JSON (and Flink's IS JSON) does not.
    raise _NotJsonError(name)


# One decoder for every message: json.loads with an option builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _parse_object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = _DECODER.decode(payload.decode("utf-8", errors="replace"))
    except ValueError:  # JSONDecodeError and _NotJsonError are both ValueErrors
        return None
    return value if isinstance(value, dict) else None


def parse_timestamp_text(text: str) -> datetime | None:
    """A date-time string as the stream reads it ('T' and 'Z' optional), in UTC; None if
    unreadable.  A string without an offset is UTC (the job's session time zone)."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _typed(field: Field, value: object) -> Any:
    """``value`` in the field's type, or None when it does not have that type."""
    if field.type is ValueType.TIMESTAMP:
        return parse_timestamp_text(value) if isinstance(value, str) else None
    return judge(field.type, value)


def _allowed_set(field: Field, allowed: Sequence[Scalar]) -> frozenset[object]:
    """The allowed values in the field's type, as the compiler's SQL literals are."""
    if field.type is ValueType.STRING:
        return frozenset(str(v) for v in allowed)
    if field.type is ValueType.BOOLEAN:
        return frozenset(bool(v) for v in allowed)
    return frozenset(v for v in allowed if not isinstance(v, str))


def _text(value: object) -> str:
    """The value as JSON_VALUE prints it in a violation message."""
    return value if isinstance(value, str) else json.dumps(value)


def _number(bound: float) -> str:
    return repr(float(bound)) if isinstance(bound, float) else str(int(bound))


FieldCheck = Callable[[object], tuple[object | None, str | None]]
"""A present (non-null) raw value → (typed value, violation or None)."""


def _field_check(field: Field) -> FieldCheck:
    allowed = _allowed_set(field, field.allowed) if field.allowed is not None else None
    not_typed = f"{field.name}: not a valid {field.type}"

    def check(raw: object) -> tuple[object | None, str | None]:
        value = _typed(field, raw)
        if value is None:
            return None, not_typed
        if field.min is not None and value < field.min:
            return value, (f"{field.name}: {_text(raw)} is below the minimum "
                           f"{_number(field.min)}")
        if field.max is not None and value > field.max:
            return value, (f"{field.name}: {_text(raw)} is above the maximum "
                           f"{_number(field.max)}")
        if allowed is not None and value not in allowed:
            return value, f"{field.name}: {_text(raw)} is not an allowed value"
        return value, None

    return check


def _event_millis(source: Source) -> Callable[[object], int | None]:
    fmt = source.timestamp_format

    def read(raw: object) -> int | None:
        if fmt is TimestampFormat.EPOCH_MILLIS:
            millis = judge(ValueType.LONG, raw)
            return millis if isinstance(millis, int) else None
        if fmt is TimestampFormat.EPOCH_SECONDS:
            seconds = judge(ValueType.DOUBLE, raw)
            if not isinstance(seconds, float) or not math.isfinite(seconds):
                return None
            return int(seconds * 1000)  # truncates, as the stream's CAST(... AS BIGINT)
        parsed = parse_timestamp_text(raw) if isinstance(raw, str) else None
        return None if parsed is None else _datetime_millis(parsed)

    return read


def _datetime_millis(value: datetime) -> int:
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@dataclass(frozen=True, slots=True)
class CheckedEvent:
    values: tuple[object | None, ...]
    """One value per contract field, in contract order; None when absent or mistyped."""
    event_time_ms: int | None
    violation: str | None
    """The first contract rule the event breaks; None for a clean event."""


class ContractChecker:
    """Checks raw messages against one version of a source's contract."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.field_names = tuple(f.name for f in source.schema)
        self._fields = [(f.name, f.required, _field_check(f)) for f in source.schema]
        self._read_time = _event_millis(source)

    def check(self, payload: bytes | None) -> CheckedEvent:
        event = _parse_object(payload) if payload is not None else None
        if event is None:
            return CheckedEvent((None,) * len(self._fields), None, NOT_AN_OBJECT)
        violation: str | None = None
        values: list[object | None] = []
        for name, required, check in self._fields:
            raw = event.get(name)
            if raw is None:
                values.append(None)
                if required and violation is None:
                    violation = f"{name}: required field is missing"
                continue
            value, problem = check(raw)
            values.append(value)
            violation = violation or problem
        event_time = self._read_time(event.get(self.source.timestamp_field))
        if event_time is None and violation is None:
            violation = UNREADABLE_EVENT_TIME
        return CheckedEvent(tuple(values), event_time, violation)

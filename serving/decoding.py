"""Turning stored JSON scalars into values of their declared type, and judging their status.

The stream sink writes every value as a JSON scalar.  Decoding parses it *and* judges it
by the type the definition declares, with the platform's one rule (:mod:`core.values`), so
a client never receives ``"12"`` for a long, ``1`` for a boolean or ``12.0`` for a long; a
stored value that does not fit its type is reported as ``ERROR`` rather than passed on.  The
common case decodes whole rows at once (:class:`RowDecoder`); the per-value decoders are the
fallback for a row holding a value that does not fit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

from core.domain.definitions import ValueType
from core.values import INTEGER_RANGES, judge

Scalar = str | int | float | bool
Decoder = Callable[[bytes], Scalar]


# Plain strings rather than an Enum: a batch hashes, compares and encodes thousands of them
# per request, and Enum members hash through Python code.
Status = Literal["PRESENT", "NOT_FOUND", "EXPIRED", "ERROR"]
PRESENT: Final = "PRESENT"
NOT_FOUND: Final = "NOT_FOUND"
"""No value: the entity, or this feature of it, has not been materialised."""
EXPIRED: Final = "EXPIRED"
"""A value exists but its event time is older than the view's ttl; it is served as null."""
ERROR: Final = "ERROR"
"""The value could not be produced: an on-demand expression failed on this row, or a stored
value does not fit its declared type.  Served as null; see docs/serving.md."""
STATUSES: tuple[Status, ...] = (PRESENT, NOT_FOUND, EXPIRED, ERROR)

# When several inputs of one value are missing, the status reported is the most severe.
STATUS_SEVERITY: dict[Status, int] = {PRESENT: 0, NOT_FOUND: 1, EXPIRED: 2, ERROR: 3}


class DecodeError(ValueError):
    """A stored value is not a JSON scalar of its declared type."""


_json_scalar = msgspec.json.Decoder(type=str | int | float | bool)


def _parse_json(raw: bytes) -> Scalar:
    try:
        value: Scalar = _json_scalar.decode(raw)
    except msgspec.DecodeError as error:
        raise DecodeError(f"{raw[:40]!r} is not a JSON scalar: {error}") from None
    return value


def _judged(value_type: ValueType) -> Decoder:
    def decode(raw: bytes) -> Scalar:
        value = judge(value_type, _parse_json(raw))
        if value is None:
            raise DecodeError(f"{raw[:40]!r} is not a {value_type}")
        return value

    return decode


_DECODERS: dict[ValueType, Decoder] = {value_type: _judged(value_type)
                                       for value_type in ValueType}


def decoder_for(value_type: ValueType | None) -> Decoder:
    """The decoder of one declared type; None (type unknown) accepts any JSON scalar."""
    return _parse_json if value_type is None else _DECODERS[value_type]


def _bounded(value_type: ValueType) -> Any:
    low, high = INTEGER_RANGES[value_type]
    return Annotated[int, msgspec.Meta(ge=low, le=high)]


# The table of core.values as msgspec types: a row decodes only when every value is judged
# as the per-value decoders judge it (msgspec's float takes an integer and widens it too).
_ROW_TYPES: dict[ValueType | None, Any] = {
    ValueType.LONG: _bounded(ValueType.LONG), ValueType.INT: _bounded(ValueType.INT),
    ValueType.DOUBLE: float, ValueType.FLOAT: float, ValueType.STRING: str,
    ValueType.BOOLEAN: bool, ValueType.TIMESTAMP: _bounded(ValueType.LONG) | str,
    None: str | int | float | bool,
}


class RowDecoder:
    """Decodes HMGET replies — the values, then ``times`` event-time fields — with msgspec,
    every row of a read in a single call.

    Parsing ten doubles with ``float()`` costs ≈2.7 µs; joining the row into one JSON array
    for msgspec, which checks each position against its type, ≈0.5 µs, and joining all rows
    into one document saves a call per row.  It judges as the per-value decoders do; a row
    it refuses is :data:`UNDECODED`, for the caller to decode value by value, so that one
    bad value is an error of its own.
    """

    def __init__(self, types: Sequence[ValueType | None], times: int) -> None:
        positions = [_ROW_TYPES[t] | None for t in types] + [int | None] * times
        shape = tuple.__class_getitem__(tuple(positions))
        self._row: msgspec.json.Decoder[tuple[Scalar | None, ...]] = msgspec.json.Decoder(shape)
        self._rows: msgspec.json.Decoder[list[tuple[Scalar | None, ...] | None]] = \
            msgspec.json.Decoder(list[shape | None])  # type: ignore[valid-type]

    def decode_rows(self, stored: Sequence[Sequence[bytes | None]]
                    ) -> list[tuple[Any, ...] | _Undecoded | None]:
        """Each row decoded; None for a row without any field (no such hash)."""
        if not stored:
            return []
        try:  # the common case: no field missing, so no row holds a None to replace
            pieces = [b",".join(row) for row in stored]  # type: ignore[arg-type]
            document = b"[[%b]]" % b"],[".join(pieces)
        except TypeError:
            document = b"[%b]" % b",".join(_json_row(row) for row in stored)
        try:
            return self._rows.decode(document)  # type: ignore[return-value]
        except msgspec.DecodeError:
            return [self._decode_one(_json_row(row)) for row in stored]

    def _decode_one(self, piece: bytes) -> tuple[Any, ...] | _Undecoded | None:
        if piece == b"null":
            return None
        try:
            return self._row.decode(piece)
        except msgspec.DecodeError:
            return UNDECODED


class _Undecoded:
    """A row the row decoder refused."""


UNDECODED = _Undecoded()


def _json_row(row: Sequence[bytes | None]) -> bytes:
    if None in row:
        if row.count(None) == len(row):
            return b"null"
        row = [b"null" if value is None else value for value in row]
    return b"[%b]" % b",".join(row)  # type: ignore[arg-type]


def event_time_millis(raw: bytes | None) -> int | None:
    """An event-time field (``__ts``, ``__ts:{feature}``); None when absent or unreadable."""
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        try:
            return int(float(raw))
        except ValueError:
            return None


def expiry_cutoff(ttl_ms: int | None, now_ms: int) -> int | None:
    """Event times before this one are expired; None when values never expire (no ttl)."""
    return None if ttl_ms is None else now_ms - ttl_ms


def is_expired(event_time: int | None, ttl_ms: int | None, now_ms: int) -> bool:
    """A value whose event time is older than ``ttl`` is served as missing
    (docs/reference.md, "Definitions").  A value without an event time cannot be judged and
    is kept."""
    cutoff = expiry_cutoff(ttl_ms, now_ms)
    return cutoff is not None and event_time is not None and event_time < cutoff


def coerce_to_type(value: object, value_type: ValueType) -> Scalar | None:
    """An on-demand result as its declared type, judged as any value is
    (:func:`core.values.judge`: an integer widens to a double, ``4.0`` is no long); TypeError
    when it does not fit."""
    if value is None:
        return None
    typed = judge(value_type, value)
    if typed is None:
        raise TypeError(f"{type(value).__name__} result {value!r:.40} is not a {value_type}")
    return typed

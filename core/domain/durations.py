"""Durations such as ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``, held as integer milliseconds, and
instants (dates and ISO 8601 date-times) as epoch milliseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNIT_MILLIS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
_DURATION = re.compile(r"^([1-9][0-9]{0,9})(ms|s|m|h|d)$")


def parse_duration(text: str) -> int:
    """Milliseconds in ``text``; raises ValueError with the accepted forms when malformed."""
    match = _DURATION.fullmatch(text)  # `$` alone would let a trailing newline in
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use a positive whole number and one unit of "
            "ms, s, m, h, d (e.g. '30s', '5m', '1h')"
        )
    return int(match.group(1)) * _UNIT_MILLIS[match.group(2)]


def format_duration(millis: int) -> str:
    """The canonical spelling of ``millis``: the largest unit that divides it exactly."""
    for unit, size in _UNIT_MILLIS.items():
        if millis % size == 0:
            return f"{millis // size}{unit}"
    raise AssertionError("unreachable: every integer is a whole number of milliseconds")


def parse_instant(text: str) -> int:
    """Epoch ms of a date (``2026-01-02``: its midnight, UTC) or an ISO 8601 date-time
    (``2026-01-02T06:00:00Z``; without an offset it is UTC); ValueError naming the forms."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date or date-time: use e.g. 2026-01-02 or "
                         "2026-01-02T06:00:00Z") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)

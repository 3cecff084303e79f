"""Durations: the spellings accepted, the canonical spelling, and the refusals; instants and
view versions as commands take them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.durations import format_duration, parse_duration, parse_instant
from core.domain.references import parse_view_version

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
UNITS = {"ms": 1, "s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY}


@pytest.mark.parametrize(("text", "millis"), [
    ("500ms", 500),
    ("1ms", 1),
    ("30s", 30 * SECOND),
    ("5m", 5 * MINUTE),
    ("1h", HOUR),
    ("1d", DAY),
    ("60m", HOUR),
    ("1000ms", SECOND),
    ("90m", 90 * MINUTE),
    ("9999999999d", 9_999_999_999 * DAY),  # ten digits is the longest number accepted
])
def test_parses_whole_numbers_of_one_unit(text: str, millis: int) -> None:
    assert parse_duration(text) == millis


@pytest.mark.parametrize(("millis", "text"), [
    (1, "1ms"),
    (1_500, "1500ms"),
    (SECOND, "1s"),
    (90 * SECOND, "90s"),
    (MINUTE, "1m"),
    (90 * MINUTE, "90m"),
    (HOUR, "1h"),
    (36 * HOUR, "36h"),
    (DAY, "1d"),
    (7 * DAY, "7d"),
])
def test_formats_with_the_largest_unit_that_divides_exactly(millis: int, text: str) -> None:
    assert format_duration(millis) == text


@pytest.mark.parametrize("text", [
    "5 minutes",  # words
    "5 m",  # blank between number and unit
    "0s",  # zero
    "0ms",
    "1.5h",  # fraction
    "-1m",  # negative
    "+1m",
    "01m",  # leading zero
    "",
    "1",  # no unit
    "h",  # no number
    "1H",  # units are lowercase
    "1w",  # no weeks
    "1h30m",  # one unit only
    " 1m",
    "1m ",
    "1m\n",  # a trailing newline is not a duration either
    "12345678901s",  # more than ten digits
    "\uff11m",  # non-ASCII digits (a full-width one)
])
def test_refuses_anything_else_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as raised:
        parse_duration(text)
    message = str(raised.value)
    assert message.startswith(repr(text))
    assert "positive whole number" in message
    assert "ms, s, m, h, d" in message


@given(st.integers(min_value=1, max_value=9_999_999_999))
def test_the_canonical_spelling_parses_back(millis: int) -> None:
    assert parse_duration(format_duration(millis)) == millis


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(sorted(UNITS)))
def test_every_spelling_of_a_duration_has_one_canonical_form(count: int, unit: str) -> None:
    millis = parse_duration(f"{count}{unit}")
    assert millis == count * UNITS[unit]
    canonical = format_duration(millis)
    assert parse_duration(canonical) == millis
    assert format_duration(parse_duration(canonical)) == canonical
    assert len(canonical) <= len(f"{count}{unit}")


def test_instants_are_dates_or_iso_times_in_utc() -> None:
    assert parse_instant("2026-01-02") == int(datetime(2026, 1, 2, tzinfo=UTC).timestamp()
                                              * 1000)
    assert parse_instant("2026-01-02T06:00:00+02:00") == parse_instant("2026-01-02T04:00:00")
    assert parse_instant("2026-01-02T04:00:00Z") == parse_instant("2026-01-02T04:00:00")
    with pytest.raises(ValueError, match="2026-01-02 or"):
        parse_instant("yesterday")


def test_view_versions_are_a_view_or_a_view_at_a_version() -> None:
    assert parse_view_version("clicks@3") == ("clicks", 3)
    assert parse_view_version("clicks") == ("clicks", None)
    with pytest.raises(ValueError, match="whole number"):
        parse_view_version("clicks@0")

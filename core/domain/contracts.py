"""A source's data contract: its rules as data, and their check of one raw message in Python
(pure; no I/O).

:func:`contract_rules` lists a source's rules in the order they are judged; each carries a
stable :class:`Reason` code and the message template of :data:`MESSAGES`.  Two checks are
built from that one list, so they cannot drift apart: :class:`ContractChecker` evaluates it
here (the archiver, and any door that judges events before they reach the stream), and the
streaming job's SQL renders it (:mod:`sinks.compiler`, ``checked_events``).  In order:

- the payload must be a JSON object (UTF-8; ``NaN``/``Infinity`` are not JSON), read as the
  stream reads it: its first JSON value after any JSON whitespace, whatever follows it;
- then, field by field in contract order: a required field must be present and not null;
  a present value must be of the field's type as :func:`core.values.judge` decides it for
  the number as written (so ``3.0`` is no long, ``1.5e1`` is), except that a ``timestamp``
  field must be a readable date-time string, since the stream casts its text; then ``min``,
  ``max`` and ``allowed``;
- the event time must be readable from ``timestamp_field`` (a string field of an
  ``iso8601`` source can hold any text, and an ``epoch_seconds`` time can overflow).

The first broken rule is the event's violation.  Lateness is not a rule of the contract: it
depends on the stream's watermark, which no other door can know (see docs/offline.md,
"Lateness").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from core.domain.definitions import Field, Scalar, Source, TimestampFormat, ValueType
from core.values import INT64_RANGE, judge, judge_of, rendered_number


class Reason(StrEnum):
    """Why an event breaks its source's contract: a stable code, for programs to act on."""

    NOT_AN_OBJECT = "not_an_object"
    MISSING_REQUIRED = "missing_required"
    WRONG_TYPE = "wrong_type"
    BELOW_MIN = "below_min"
    ABOVE_MAX = "above_max"
    NOT_ALLOWED = "not_allowed"
    UNREADABLE_EVENT_TIME = "unreadable_event_time"


VALUE_SLOT = "{value}"
"""Where a message quotes the offending value, as the message spelled it."""

MESSAGES: Mapping[Reason, str] = {
    Reason.NOT_AN_OBJECT: "payload is not a JSON object",
    Reason.MISSING_REQUIRED: "{field}: required field is missing",
    Reason.WRONG_TYPE: "{field}: not a valid {type}",
    Reason.BELOW_MIN: "{field}: " + VALUE_SLOT + " is below the minimum {limit}",
    Reason.ABOVE_MAX: "{field}: " + VALUE_SLOT + " is above the maximum {limit}",
    Reason.NOT_ALLOWED: "{field}: " + VALUE_SLOT + " is not an allowed value",
    Reason.UNREADABLE_EVENT_TIME: "event time is missing or unreadable",
}
"""The human wording of each reason, as dead letters and the archive's ``_violation`` read."""


EPOCH_SECONDS_LIMIT_MS = 2.0**63
"""An ``epoch_seconds`` time is readable when its milliseconds are below this in magnitude:
they fit in a BIGINT."""


def number_text(value: float) -> str:
    """A bound or allowed number as written in messages and the stream's SQL literals: an
    integer in the BIGINT range as digits, anything else as a double (Flink would read longer
    digits as a DECIMAL, which holds 38)."""
    low, high = INT64_RANGE
    if isinstance(value, int) and low <= value <= high:
        return str(value)
    return repr(float(value))


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a contract: ``field``'s (None for the event as a whole) ``reason`` rule,
    with its ``limit`` (``min``, ``max``) or its ``allowed`` values."""

    reason: Reason
    field: Field | None = None
    limit: float | None = None
    allowed: tuple[Scalar, ...] = ()

    @property
    def quotes_value(self) -> bool:
        return VALUE_SLOT in MESSAGES[self.reason]

    def message_around_value(self) -> tuple[str, str]:
        """The message before and after the offending value's text ("" after a message that
        quotes none): the stream concatenates the value in between, as :meth:`message` does."""
        field = self.field
        text = MESSAGES[self.reason].format(
            field=field.name if field else "", type=field.type if field else "",
            limit="" if self.limit is None else number_text(self.limit), value=VALUE_SLOT)
        before, _, after = text.partition(VALUE_SLOT)
        return before, after

    def message(self, value_text: str) -> str:
        before, after = self.message_around_value()
        return before + value_text + after if self.quotes_value else before


def _field_rules(field: Field) -> list[Rule]:
    rules = [Rule(Reason.MISSING_REQUIRED, field)] if field.required else []
    rules.append(Rule(Reason.WRONG_TYPE, field))
    if field.min is not None:
        rules.append(Rule(Reason.BELOW_MIN, field, limit=field.min))
    if field.max is not None:
        rules.append(Rule(Reason.ABOVE_MAX, field, limit=field.max))
    if field.allowed is not None:
        rules.append(Rule(Reason.NOT_ALLOWED, field, allowed=field.allowed))
    return rules


def contract_rules(source: Source) -> tuple[Rule, ...]:
    """Every rule of the source's contract, in the order they are judged."""
    return (Rule(Reason.NOT_AN_OBJECT),
            *(rule for field in source.schema for rule in _field_rules(field)),
            Rule(Reason.UNREADABLE_EVENT_TIME))


@dataclass(frozen=True, slots=True)
class Violation:
    """The first rule an event breaks."""

    field: str | None
    """The field the rule is about; None for a rule about the whole event."""
    reason: Reason
    message: str


# --------------------------------------------------------------------------- the Python check

class _NotJsonError(ValueError):
    pass


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity; JSON (and Flink's IS JSON) does not.
    raise _NotJsonError(name)


# One decoder for every message: json.loads with an option builds a new one per call.  Numbers
# stay as written, since the stream judges and quotes a number by its exact decimal form.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=Decimal,
                            parse_int=Decimal)
_JSON_WHITESPACE = " \t\n\r"


def _parse_object(payload: bytes) -> dict[str, Any] | None:
    """The payload's first JSON value if it is an object.  The stream's parser (Jackson) skips
    JSON whitespace before it and never reads past it: ``{}}`` is an object."""
    text = payload.decode("utf-8", errors="replace")
    try:
        value, _ = _DECODER.raw_decode(text, len(text) - len(text.lstrip(_JSON_WHITESPACE)))
    except ValueError:  # JSONDecodeError and _NotJsonError are both ValueErrors
        return None
    return value if isinstance(value, dict) else None


# The stream reads a timestamp's text as REPLACE(REPLACE(text, 'T', ' '), 'Z', '') cast to
# TIMESTAMP(3), and the Python check must read exactly the same texts to the same instant.  That
# cast parses with java.time pattern "yyyy-[MM][M]-[dd][d][ [HH][H]:[mm][m]:[ss][s][.fraction]]"
# and its SMART resolver, whose quirks this grammar and ``_flink_timestamp_millis`` reproduce
# (measured, probe by probe, in tests/offline/test_contract_check.py):
# - a year is 4 digits, or "+" and 5 to 19 digits; "-" years and year 0 are unreadable;
# - each other part may be written twice, 2 digits then 1 to 19 more ("012" reads 01 then 2):
#   both must agree;
# - a day needs a month ("2026--21" reads month -21, and fails);
# - a fraction has at most 9 digits, cut to milliseconds; no space, offset or zone is allowed.
_DIGIT_PAIR_THEN_DIGITS = r"(?P<{0}_pair>[0-9]{{2}})?+(?P<{0}>[0-9]{{1,19}}+)?+"
_TIMESTAMP_TEXT = re.compile(
    r"(?P<year>[0-9]{4}|\+[0-9]{5,19})-" + _DIGIT_PAIR_THEN_DIGITS.format("month") + "-"
    + _DIGIT_PAIR_THEN_DIGITS.format("day")
    + "(?: " + ":".join(_DIGIT_PAIR_THEN_DIGITS.format(part)
                        for part in ("hour", "minute", "second"))
    + r"(?:\.(?P<fraction>[0-9]{0,9}+))?+)?+")
_MAX_YEAR = 999_999_999
_MILLIS_PER_DAY = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _UnreadableError(ValueError):
    pass


def _part(match: re.Match[str], name: str) -> int | None:
    """A date-time part written as an optional 2-digit pair and optional further digits."""
    pair, digits = match.group(f"{name}_pair"), match.group(name)
    written = {int(text) for text in (pair, digits) if text is not None}
    if len(written) > 1:
        raise _UnreadableError(name)  # java.time refuses a part parsed twice, differently
    return written.pop() if written else None


def _in_range(value: int | None, low: int, high: int) -> int | None:
    if value is not None and not low <= value <= high:
        raise _UnreadableError(value)
    return value


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _epoch_day(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 in the proleptic Gregorian calendar, for any year (datetime only
    holds years up to 9999); the civil-from-days arithmetic of eras of 400 years."""
    year -= month <= 2
    era, year_of_era = divmod(year, 400)
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


_MAX_EPOCH_DAY = _epoch_day(_MAX_YEAR, 12, 31)


def timestamp_text_millis(text: str) -> int | None:
    """Epoch ms (UTC, the job's session time zone) of the TIMESTAMP(3) the stream reads from a
    timestamp's text; None where its cast yields NULL (see the grammar above)."""
    match = _TIMESTAMP_TEXT.fullmatch(text.replace("T", " ").replace("Z", ""))
    if match is None:
        return None
    try:
        return _flink_timestamp_millis(match)
    except _UnreadableError:
        return None


def _flink_timestamp_millis(match: re.Match[str]) -> int:
    year = int(match["year"])
    _in_range(year, 1, _MAX_YEAR)
    month = _in_range(_part(match, "month"), 1, 12)
    day = _in_range(_part(match, "day"), 1, 31)
    if month is None and day is not None:
        raise _UnreadableError(day)
    hour, minute, second = (_part(match, part) for part in ("hour", "minute", "second"))
    fraction = match["fraction"]
    # The resolver builds a time only from an hour followed by unbroken parts: then it reads
    # 24:00:00 as the end of the day, the next day's midnight.  Otherwise each part is checked
    # alone and 24 is no hour.
    builds_time = hour is not None and (
        minute is not None or (second is None and fraction is None)) and (
        second is not None or minute is None or fraction is None)
    end_of_day = (builds_time and hour == 24 and not minute and not second
                  and not (fraction or "0").strip("0"))
    if not end_of_day:
        _in_range(hour, 0, 23)
    _in_range(minute, 0, 59)
    _in_range(second, 0, 59)
    if month is not None and day is not None:
        # The resolver clamps a day past the month's end (2026-02-30 is 2026-02-28); without
        # a whole date it drops the day that 24:00 carries into.
        day = min(day, _days_in_month(year, month))
        epoch_day = _epoch_day(year, month, day) + (1 if end_of_day else 0)
    else:
        epoch_day = _epoch_day(year, month or 1, 1)
    if epoch_day > _MAX_EPOCH_DAY:
        raise _UnreadableError(epoch_day)
    millis = (epoch_day * _MILLIS_PER_DAY
              + (0 if end_of_day else ((hour or 0) * 60 + (minute or 0)) * 60_000)
              + (second or 0) * 1000 + int((fraction or "").ljust(3, "0")[:3]))
    # TimestampData keeps its milliseconds in a Java long, which wraps past 292 million years.
    return (millis + 2**63) % 2**64 - 2**63


def _timestamp_value(text: str) -> datetime | None:
    """A ``timestamp`` field's value as the archive holds it: the instant the stream reads,
    None if unreadable, or past year 9999, which a datetime cannot hold."""
    millis = timestamp_text_millis(text)
    if millis is None:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        return None


def _timestamp_field_value(value: object) -> datetime | None:
    return _timestamp_value(value) if isinstance(value, str) else None


def _judge_of(field: Field) -> Callable[[object], Any]:
    """What turns a value into one of the field's type, or None when it does not have that
    type: :func:`core.values.judge`, except that a ``timestamp`` field holds date-time text."""
    if field.type is ValueType.TIMESTAMP:
        return _timestamp_field_value
    return judge_of(field.type)


def _allowed_set(field: Field, allowed: Sequence[Scalar]) -> frozenset[object]:
    """The allowed values in the field's type, as the compiler's SQL literals are."""
    if field.type is ValueType.STRING:
        return frozenset(str(v) for v in allowed)
    if field.type is ValueType.BOOLEAN:
        return frozenset(bool(v) for v in allowed)
    return frozenset(v for v in allowed if not isinstance(v, str))


def _text(value: object) -> str:
    """A value of its field's type as the stream prints it in a violation message."""
    if isinstance(value, Decimal):
        return rendered_number(value)
    return value if isinstance(value, str) else json.dumps(value)


def _event_millis(source: Source) -> Callable[[object], int | None]:
    fmt = source.timestamp_format

    def read(raw: object) -> int | None:
        if fmt is TimestampFormat.EPOCH_MILLIS:
            millis = judge(ValueType.LONG, raw)
            return millis if isinstance(millis, int) else None
        if fmt is TimestampFormat.EPOCH_SECONDS:
            seconds = judge(ValueType.DOUBLE, raw)
            if not isinstance(seconds, float):
                return None
            millis_float = seconds * 1000
            # Beyond BIGINT (infinity too) a time is unreadable on both sides; within it the
            # conversion truncates, as the stream's CAST(... AS BIGINT).
            return int(millis_float) if abs(millis_float) < EPOCH_SECONDS_LIMIT_MS else None
        return timestamp_text_millis(raw) if isinstance(raw, str) else None

    return read


_FieldCheck = Callable[[object], tuple[Any, Rule | None]]
"""One field's rules, compiled: its raw value (None when absent) → (the value in the field's
type or None, the first of the field's rules it breaks or None)."""


def _value_broken_by(rule: Rule) -> Callable[[Any], bool]:
    """Whether a value of the field's type breaks ``rule`` (a bound or allowed-values rule)."""
    if rule.reason is Reason.NOT_ALLOWED:
        assert rule.field is not None, "allowed values belong to a field"
        allowed = _allowed_set(rule.field, rule.allowed)
        return lambda value: value not in allowed
    assert rule.limit is not None, "a bound rule has its limit"
    limit = rule.limit
    if rule.reason is Reason.BELOW_MIN:
        return lambda value: value < limit
    return lambda value: value > limit


def _field_check(field: Field) -> _FieldCheck:
    """The field's rules of :func:`_field_rules`, judged in their order: missing, then the
    type, then the value rules (a field has at most one rule of each reason)."""
    rules = {rule.reason: rule for rule in _field_rules(field)}
    missing, wrong_type = rules.get(Reason.MISSING_REQUIRED), rules[Reason.WRONG_TYPE]
    to_type = _judge_of(field)
    value_rules = [(rule, _value_broken_by(rule)) for rule in rules.values()
                   if rule.reason not in (Reason.MISSING_REQUIRED, Reason.WRONG_TYPE)]

    def check(raw: object) -> tuple[Any, Rule | None]:
        if raw is None:
            return None, missing
        value = to_type(raw)
        if value is None:
            return None, wrong_type
        return value, next((rule for rule, broken in value_rules if broken(value)), None)

    return check


@dataclass(frozen=True, slots=True)
class CheckedEvent:
    values: tuple[object | None, ...]
    """One value per contract field, in contract order; None when absent or mistyped."""
    event_time_ms: int | None
    violation: Violation | None
    """The first contract rule the event breaks; None for a clean event."""


class ContractChecker:
    """Checks raw messages against one version of a source's contract.

    The rules of :func:`contract_rules` are compiled once per field, so that an event costs
    one pass over its fields (the ingest API judges tens of thousands a second); the order
    they are judged in, and so the violation reported, is the list's."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.field_names = tuple(f.name for f in source.schema)
        self.rules = contract_rules(source)
        self._not_an_object, self._unreadable_time = self.rules[0], self.rules[-1]
        self._field_checks = [(f.name, _field_check(f)) for f in source.schema]
        self._read_time = _event_millis(source)

    def check(self, payload: bytes | None) -> CheckedEvent:
        event = _parse_object(payload) if payload is not None else None
        if event is None:
            return CheckedEvent((None,) * len(self._field_checks), None,
                                _violation(self._not_an_object, None))
        values: list[object | None] = []
        broken: Rule | None = None
        for name, check in self._field_checks:
            value, broken_here = check(event.get(name))
            values.append(value)
            broken = broken or broken_here
        event_time_ms = self._read_time(event.get(self.source.timestamp_field))
        if broken is None and event_time_ms is None:
            broken = self._unreadable_time
        return CheckedEvent(tuple(values), event_time_ms,
                            None if broken is None else _violation(broken, event))


def _violation(rule: Rule, event: Mapping[str, object] | None) -> Violation:
    field = rule.field.name if rule.field else None
    if event is None or field is None or not rule.quotes_value:
        return Violation(field, rule.reason, rule.message(""))
    # A quoting rule is broken by a value of the field's type only: never an array or object.
    return Violation(field, rule.reason, rule.message(_text(event[field])))

"""The archiver's contract checks agree with the streaming job's (via the independent oracle
and the dead-letter reasons the streaming e2e test observed from Flink)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.contracts import ContractChecker, Reason, Violation, timestamp_text_millis
from core.domain.definitions import Source, parse_definition
from tests.offline.support import source_spec
from tests.payments import INVALID_EVENTS, SCHEMA
from tests.streaming.oracle import violation

TS = 1_790_000_000_000


def checker(**overrides: Any) -> ContractChecker:
    source = parse_definition({**source_spec("t"), **overrides})
    assert isinstance(source, Source)
    return ContractChecker(source)


NOT_AN_OBJECT = "payload is not a JSON object"


def message(checked: ContractChecker, payload: bytes | None) -> str | None:
    violation = checked.check(payload).violation
    return None if violation is None else violation.message


def test_a_clean_event_yields_its_typed_values_and_event_time() -> None:
    checked = checker().check(json.dumps({"account_id": "a", "region": "eu", "amount": 3,
                                          "kind": "b", "ts": TS}).encode())
    assert checked.violation is None
    assert checked.values == ("a", "eu", 3.0, "b", TS)
    assert isinstance(checked.values[2], float), "a JSON integer in a double field is a double"
    assert checked.event_time_ms == TS


def test_violations_are_worded_as_the_streaming_dead_letters() -> None:
    """The reasons test_materialization observed from Flink for the same invalid events."""
    reasons = {message(checker(), make(TS)) for make in INVALID_EVENTS}
    assert reasons == {NOT_AN_OBJECT, "account_id: required field is missing",
                       "amount: not a valid double", "amount: -5 is below the minimum 0",
                       "kind: z is not an allowed value", "region: not a valid string",
                       "ts: not a valid long"}


def test_the_first_broken_rule_in_contract_order_is_reported() -> None:
    payload = json.dumps({"region": 1, "amount": -1, "ts": TS}).encode()
    assert message(checker(), payload) == "account_id: required field is missing"


def test_json_null_counts_as_absent() -> None:
    checked = checker().check(json.dumps({"account_id": "a", "region": "eu", "amount": None,
                                          "ts": TS}).encode())
    assert checked.violation is None and checked.values[2] is None
    missing = checker().check(json.dumps({"account_id": None, "region": "eu",
                                          "ts": TS}).encode())
    assert missing.violation == Violation("account_id", Reason.MISSING_REQUIRED,
                                         "account_id: required field is missing")


def test_what_json_refuses_is_not_an_object() -> None:
    for payload in (b"", b"null", b'"text"', b"{\"amount\": NaN}", b"\xff\xfe", None):
        assert message(checker(), payload) == NOT_AN_OBJECT


def test_integers_out_of_range_and_fractions_are_not_longs_or_ints() -> None:
    ints = checker(schema=[{"name": "n", "type": "int"},
                           {"name": "ts", "type": "long", "required": True}])
    assert message(ints, b'{"n": 2147483648, "ts": 1}') == "n: not a valid int"
    assert message(ints, b'{"n": 12.0, "ts": 1}') == "n: not a valid int"
    assert message(ints, b'{"n": true, "ts": 1}') == "n: not a valid int"
    assert ints.check(b'{"n": -7, "ts": 1}').values == (-7, 1)
    assert message(ints, b'{"ts": 9223372036854775808}') == "ts: not a valid long"


def test_a_number_is_judged_and_quoted_as_the_stream_renders_it() -> None:
    numbers = checker(schema=[{"name": "n", "type": "long", "min": 0},
                              {"name": "d", "type": "double", "max": 1},
                              {"name": "ts", "type": "long", "required": True}])
    assert numbers.check(b'{"n": 1.5e1, "ts": 1}').values == (15, None, 1)
    assert message(numbers, b'{"n": 1e3, "ts": 1}') == "n: not a valid long"  # 1E+3
    assert message(numbers, b'{"n": 1.50e1, "ts": 1}') == "n: not a valid long"  # 15.0
    assert message(numbers, b'{"n": -4.9083673383399016e+16, "ts": 1}') == (
        "n: -49083673383399016 is below the minimum 0")
    assert message(numbers, b'{"d": 6.777984012628634e+16, "ts": 1}') == (
        "d: 6.777984012628634E+16 is above the maximum 1")
    assert message(numbers, b'{"d": 1.50e1, "ts": 1}') == "d: 15.0 is above the maximum 1"


def test_the_first_json_value_is_read_and_whatever_follows_ignored() -> None:
    for payload in (b'{"ts": 1}}', b'{"ts": 1} x', b' \t\r\n{"ts": 1}{}', b'{"ts": 1}\x00'):
        assert checker().check(payload).violation == Violation(
            "account_id", Reason.MISSING_REQUIRED, "account_id: required field is missing")
    for payload in (b'\x0b{"ts": 1}', b'\xef\xbb\xbf{"ts": 1}', b'{"ts": 1,}', b'{"ts": 01}'):
        assert message(checker(), payload) == NOT_AN_OBJECT


def test_event_times_in_every_format() -> None:
    seconds = checker(timestamp_format="epoch_seconds",
                      schema=[{"name": "ts", "type": "double", "required": True}])
    assert seconds.check(b'{"ts": 1790000000.1234}').event_time_ms == 1_790_000_000_123
    iso = checker(timestamp_format="iso8601",
                  schema=[{"name": "ts", "type": "timestamp", "required": True}])
    checked = iso.check(b'{"ts": "2026-09-21T12:00:00.250Z"}')
    expected = datetime(2026, 9, 21, 12, 0, 0, 250_000, tzinfo=UTC)
    assert checked.values == (expected,) and checked.violation is None
    assert checked.event_time_ms == int(expected.timestamp() * 1000)
    assert iso.check(b'{"ts": "2026-09-21 12:00:00"}').violation is None
    assert message(iso, b'{"ts": "yesterday"}') == "ts: not a valid timestamp"


def test_an_unreadable_event_time_is_a_violation_of_its_own() -> None:
    """A string field of an iso8601 source holds any text, and seconds can overflow BIGINT
    milliseconds: both pass their field's rules and break the event-time rule (the stream
    once let them through to land at epoch 0, late for a window, clean for a last value)."""
    iso_text = checker(timestamp_format="iso8601",
                       schema=[{"name": "ts", "type": "string", "required": True}])
    assert iso_text.check(b'{"ts": "yesterday"}').violation == Violation(
        None, Reason.UNREADABLE_EVENT_TIME, "event time is missing or unreadable")
    seconds = checker(timestamp_format="epoch_seconds",
                      schema=[{"name": "ts", "type": "double", "required": True}])
    assert seconds.check(b'{"ts": 1e306}').violation is not None
    assert seconds.check(b'{"ts": -9.2e15}').event_time_ms == -9_200_000_000_000_000_000


def test_each_rule_has_its_reason_code_and_field() -> None:
    numbers = checker(schema=[{"name": "n", "type": "long", "min": 0, "max": 9},
                              {"name": "k", "type": "string", "allowed": ["a"]},
                              {"name": "ts", "type": "long", "required": True}])
    cases = {b"[]": (None, Reason.NOT_AN_OBJECT), b'{"n": 1}': ("ts", Reason.MISSING_REQUIRED),
             b'{"n": "1", "ts": 1}': ("n", Reason.WRONG_TYPE),
             b'{"n": -1, "ts": 1}': ("n", Reason.BELOW_MIN),
             b'{"n": 10, "ts": 1}': ("n", Reason.ABOVE_MAX),
             b'{"k": "b", "ts": 1}': ("k", Reason.NOT_ALLOWED)}
    for payload, (field, reason) in cases.items():
        violation = numbers.check(payload).violation
        assert violation is not None and (violation.field, violation.reason) == (field, reason)


def test_allowed_values_are_compared_in_the_fields_type() -> None:
    numbers = checker(schema=[{"name": "n", "type": "double", "allowed": [1, 2.5]},
                              {"name": "ts", "type": "long", "required": True}])
    assert numbers.check(b'{"n": 1.0, "ts": 1}').violation is None
    assert message(numbers, b'{"n": 2, "ts": 1}') == "n: 2 is not an allowed value"


json_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**62), 2**62),
                        st.floats(allow_nan=False, allow_infinity=False, width=32),
                        st.sampled_from(["a", "b", "z", "eu", ""]))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from([f["name"] for f in SCHEMA] + ["other"]), json_values,
                       max_size=6))
def test_clean_means_the_same_as_the_independent_oracle(event: dict[str, Any]) -> None:
    payload = json.dumps(event).encode()
    assert (checker().check(payload).violation is None) == (violation(payload, SCHEMA) is None)


# Flink's answer for each text, as the stream applies its cast to a timestamp's text:
# TRY_CAST(REPLACE(REPLACE(text, 'T', ' '), 'Z', '') AS TIMESTAMP(3)), printed, or None for
# NULL.  Measured on Flink 2.0.2 (a batch query over these texts); the Python reading must give
# the same instant, and NULL where Flink does.
FLINK_TIMESTAMP_CASTS: list[tuple[str, str | None]] = [
    ("2026-09-21", "2026-09-21 00:00:00.000"),
    ("2026-09-21 12", None),
    ("2026-09-21 12:00", None),
    ("2026-09-21T12:00", None),
    ("2026-09-21 12:00:00", "2026-09-21 12:00:00.000"),
    ("2026-09-21T12:00:00Z", "2026-09-21 12:00:00.000"),
    ("2026-09-21 12:00:00Z", "2026-09-21 12:00:00.000"),
    ("2026-09-21t12:00:00", None),
    ("2026-09-21 12:00:00z", None),
    ("2026-09-21 12:00:0", "2026-09-21 12:00:00.000"),
    ("2026-9-1 1:2:3", "2026-09-01 01:02:03.000"),
    ("2026-1-1 1:1:1.1", "2026-01-01 01:01:01.100"),
    ("2026-09-21 12:00:00.", "2026-09-21 12:00:00.000"),
    ("2026-09-21 12:00:00.1", "2026-09-21 12:00:00.100"),
    ("2026-09-21 12:00:00.12", "2026-09-21 12:00:00.120"),
    ("2026-09-21 12:00:00.123", "2026-09-21 12:00:00.123"),
    ("2026-09-21 12:00:00.1234", "2026-09-21 12:00:00.123"),
    ("2026-09-21 12:00:00.9995", "2026-09-21 12:00:00.999"),  # cut, not rounded
    ("2026-09-21 12:00:00.123456", "2026-09-21 12:00:00.123"),
    ("2026-09-21 12:00:00.123456789", "2026-09-21 12:00:00.123"),
    ("2026-09-21 12:00:00.1234567891", None),
    ("2026-09-21 12:00:00,5", None),
    (" 2026-09-21 12:00:00", None),
    ("2026-09-21 12:00:00 ", None),
    ("2026-09-21  12:00:00", None),
    ("\t2026-09-21 12:00:00\n", None),
    ("2026-09-21\u00a012:00:00", None),
    ("2028-02-29 00:00:00", "2028-02-29 00:00:00.000"),
    ("2026-02-29 00:00:00", "2026-02-28 00:00:00.000"),  # clamped to the month's last day
    ("2026-02-30 00:00:00", "2026-02-28 00:00:00.000"),
    ("2026-02-31 00:00:00", "2026-02-28 00:00:00.000"),
    ("2026-04-31", "2026-04-30 00:00:00.000"),
    ("1900-02-29", "1900-02-28 00:00:00.000"),
    ("2000-02-29", "2000-02-29 00:00:00.000"),
    ("2026-02-32", None),
    ("2026-13-01", None),
    ("2026-00-01", None),
    ("2026-01-00", None),
    ("2026-09-21 24:00:00", "2026-09-22 00:00:00.000"),  # the end of the day
    ("2026-12-31 24:00:00", "2027-01-01 00:00:00.000"),
    ("2026-02-30 24:00:00", "2026-03-01 00:00:00.000"),
    ("2026-09-21 24:00:00.000", "2026-09-22 00:00:00.000"),
    ("2026-09-21 24:00:00.001", None),
    ("2026-09-21 24:00:01", None),
    ("2026-09-21 24::00", None),
    ("2026-09-21 25:00:00", None),
    ("2026-09-21 23:60:00", None),
    ("2026-09-21 23:59:60", None),
    ("0000-01-01 00:00:00", None),
    ("0001-01-01 00:00:00", "0001-01-01 00:00:00.000"),
    ("1969-12-31 23:59:59.999", "1969-12-31 23:59:59.999"),
    ("9999-12-31 23:59:59.999", "9999-12-31 23:59:59.999"),
    ("10000-01-01 00:00:00", None),
    ("+2026-01-01", None),
    ("+01234-01-01", "1234-01-01 00:00:00.000"),
    ("-0001-01-01", None),
    ("-2026-01-01", None),
    ("202-01-01", None),
    ("02026-09-21", None),
    ("20260921", None),
    ("20260921T120000", None),
    ("2026-09-21 12:00:00+02:00", None),
    ("2026-09-21 12:00:00-05:00", None),
    ("2026-09-21 12:00:00 UTC", None),
    ("\u0662\u0660\u0662\u0666-\u0660\u0669-\u0662\u0661", None),  # Arabic-Indic digits
    ("\uff12\uff10\uff12\uff16-\uff10\uff19-\uff12\uff11", None),  # fullwidth digits
    ("", None),
    (" ", None),
    ("yesterday", None),
    ("2026/09/21 12:00:00", None),
    ("2026-09", None),
    # java.time's optional parts: a part may be missing between its separators...
    ("2026--", "2026-01-01 00:00:00.000"),
    ("2026-09-", "2026-09-01 00:00:00.000"),
    ("2026--21", None),
    ("2026-09-21 ::", "2026-09-21 00:00:00.000"),
    ("2026-09-21 12::00.5", "2026-09-21 12:00:00.500"),
    ("2026-09-21 1::", "2026-09-21 01:00:00.000"),
    ("2026-09-21 24::", "2026-09-22 00:00:00.000"),
    ("2026-09- 24::", "2026-09-01 00:00:00.000"),
    ("2026-09-21 12:", None),
    # ... or written twice, as two digits then more, which must agree.
    ("2026-011-21", "2026-01-21 00:00:00.000"),
    ("2026-09-022", "2026-09-02 00:00:00.000"),
    ("2026-09-021", None),
    ("2026-09-21 0000:00:00", "2026-09-21 00:00:00.000"),
    ("2026-09-21 012:00:00", None),
    ("2026-09-21 -1:00:00", None),
]


@pytest.mark.parametrize(("text", "flink_reads"), FLINK_TIMESTAMP_CASTS)
def test_timestamp_text_is_read_as_flinks_cast_reads_it(text: str,
                                                        flink_reads: str | None) -> None:
    expected = (None if flink_reads is None else
                (datetime.fromisoformat(flink_reads) - datetime(1970, 1, 1))
                // timedelta(milliseconds=1))
    assert timestamp_text_millis(text) == expected


def test_years_past_9999_are_read_as_flink_holds_them() -> None:
    """Flink reads a "+" year of 5 to 9 digits, and keeps its milliseconds in a long, which
    wraps past 292 million years (measured on Flink 2.0.2 as well)."""
    day = 86_400_000
    assert timestamp_text_millis("9999-12-31 24:00:00") == 253_402_300_800_000
    assert timestamp_text_millis("+10000-01-01") == 253_402_300_800_000
    ten_thousand_years = 25 * 146_097 * day  # 25 Gregorian cycles of 400 years
    assert timestamp_text_millis("+12345-06-07 01:02:03") == (
        datetime(2345, 6, 7, 1, 2, 3, tzinfo=UTC).timestamp() * 1000 + ten_thousand_years)
    assert timestamp_text_millis("+292278994-08-17 07:12:55.807") == 2**63 - 1
    wrapped = timestamp_text_millis("+999999999-01-01")
    assert wrapped is not None and wrapped % day == 68_896_768  # printed 19:08:16.768
    assert timestamp_text_millis("+1000000000-01-01") is None


def test_a_timestamp_field_and_an_iso8601_event_time_read_text_alike() -> None:
    iso = checker(timestamp_format="iso8601", timestamp_field="at",
                  schema=[{"name": "t", "type": "timestamp"},
                          {"name": "at", "type": "string", "required": True}])
    clamped = iso.check(b'{"t": "2026-02-30 00:00:00", "at": "2026-02-30T00:00:00Z"}')
    assert clamped.violation is None
    assert clamped.values == (datetime(2026, 2, 28, tzinfo=UTC), "2026-02-30T00:00:00Z")
    assert clamped.event_time_ms == datetime(2026, 2, 28, tzinfo=UTC).timestamp() * 1000
    with_offset = iso.check(b'{"t": "2026-09-21T12:00:00+02:00", "at": "2026-09-21"}')
    assert with_offset.violation == Violation("t", Reason.WRONG_TYPE,
                                              "t: not a valid timestamp")
    assert iso.check(b'{"at": "20260921T120000"}').violation == Violation(
        None, Reason.UNREADABLE_EVENT_TIME, "event time is missing or unreadable")

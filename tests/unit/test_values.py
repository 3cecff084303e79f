"""The one value-type table (core.values) and its three users: the contract check, serving
requests, and the values serving decodes or computes."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.contracts import ContractChecker
from core.domain.definitions import Field, Source, ValueType, json_type_name
from core.values import INT32_RANGE, INT64_RANGE, judge, rendered_number
from serving.decoding import DecodeError, RowDecoder, coerce_to_type, decoder_for
from serving.requests import checked_request_value
from sinks import compiler


@pytest.mark.parametrize(("value_type", "value", "judged"), [
    (ValueType.STRING, "x", "x"), (ValueType.BOOLEAN, False, False),
    (ValueType.LONG, 3, 3), (ValueType.LONG, INT64_RANGE[1], INT64_RANGE[1]),
    (ValueType.INT, INT32_RANGE[0], INT32_RANGE[0]),
    (ValueType.DOUBLE, 3, 3.0), (ValueType.FLOAT, 2.5, 2.5),
    (ValueType.LONG, Decimal("1.5e1"), 15), (ValueType.LONG, Decimal("-0"), 0),
    (ValueType.DOUBLE, Decimal("1.50e1"), 15.0), (ValueType.DOUBLE, Decimal("1e400"), math.inf),
    (ValueType.TIMESTAMP, 1_700_000_000_000, 1_700_000_000_000),
    (ValueType.TIMESTAMP, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
])
def test_values_of_their_type_are_judged_to_it(value_type: ValueType, value: object,
                                                judged: object) -> None:
    result = judge(value_type, value)
    assert result == judged and type(result) is type(judged)


@pytest.mark.parametrize(("value_type", "value"), [
    (ValueType.LONG, 3.0), (ValueType.INT, 3.0), (ValueType.LONG, True), (ValueType.LONG, "3"),
    (ValueType.LONG, INT64_RANGE[1] + 1), (ValueType.INT, INT32_RANGE[1] + 1),
    (ValueType.DOUBLE, True), (ValueType.DOUBLE, "2.5"), (ValueType.BOOLEAN, 1),
    (ValueType.STRING, 1), (ValueType.TIMESTAMP, 1.5), (ValueType.TIMESTAMP, False),
    (ValueType.STRING, None), (ValueType.LONG, [1]),
    (ValueType.LONG, Decimal("3.0")), (ValueType.LONG, Decimal("1e3")),
    (ValueType.INT, Decimal(INT32_RANGE[1] + 1)), (ValueType.STRING, Decimal(1)),
])
def test_values_of_another_kind_are_not_judged_to_a_type(value_type: ValueType,
                                                         value: object) -> None:
    assert judge(value_type, value) is None


def test_json_kind_names() -> None:
    values: tuple[object, ...] = (None, True, 1, 1.0, "", [], {})
    assert [json_type_name(v) for v in values] == [
        "null", "boolean", "integer", "number", "string", "array", "object"]


# --------------------------------------------------------------------------- the three users

SOURCE = Source(name="s", topic="t", timestamp_field="ts",
                schema=(Field("n", ValueType.LONG), Field("ts", ValueType.LONG)))


def contract_accepts(value: object) -> bool:
    payload = json.dumps({"n": value, "ts": 1_700_000_000_000}).encode()
    return ContractChecker(SOURCE).check(payload).violation is None


def request_accepts(value: object) -> bool:
    try:
        checked_request_value(Field("n", ValueType.LONG), value)
    except ValueError:
        return False
    return True


def store_accepts(value: object) -> bool:
    raw = json.dumps(value).encode()
    try:
        decoder_for(ValueType.LONG)(raw)
    except DecodeError:
        per_value = False
    else:
        per_value = True
    whole_row = RowDecoder([ValueType.LONG], 0).decode_rows([[raw]])[0] == (value,)
    assert per_value == whole_row, value  # the row decoder judges as the per-value one
    return per_value


def result_accepts(value: object) -> bool:
    try:
        coerce_to_type(value, ValueType.LONG)
    except TypeError:
        return False
    return True


USERS = [contract_accepts, request_accepts, store_accepts, result_accepts]


@pytest.mark.parametrize(("value", "accepted"), [
    (3, True), (-0, True), (INT64_RANGE[0], True),
    (3.0, False), (3.5, False), (1e3, False), (INT64_RANGE[1] + 1, False),
    ("3", False), (True, False),
])
@pytest.mark.parametrize("accepts", USERS, ids=lambda user: user.__name__)
def test_every_door_judges_a_long_alike(accepts: object, value: object, accepted: bool) -> None:
    assert callable(accepts)
    assert accepts(value) is accepted


@pytest.mark.parametrize(("text", "rendered"), [
    ("1e3", "1E+3"), ("1E3", "1E+3"), ("1.5e1", "15"), ("1.50e1", "15.0"), ("3.0", "3.0"),
    ("-0", "0"), ("-0.0", "0.0"), ("-0E+5", "0E+5"), ("0.000000000", "0E-9"),
    ("0.000001", "0.000001"), ("0.0000001", "1E-7"),
    ("-6.777984012628634e+16", "-6.777984012628634E+16"),
    ("-4.9083673383399016e+16", "-49083673383399016"), ("1e400", "1E+400"), ("10.50", "10.50"),
])
def test_a_number_is_rendered_as_the_streams_json_functions_render_it(text: str,
                                                                       rendered: str) -> None:
    # Measured with JSON_QUERY(... WITH ARRAY WRAPPER) in Flink 2.0: Java's BigDecimal.
    assert rendered_number(Decimal(text)) == rendered


json_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    st.builds("{}{}e{}".format, st.integers(-(10**20), 10**20),
              st.sampled_from(["", ".0", ".5", ".50", ".123456789"]), st.integers(-25, 25)))
"""A number as JSON spells it: integers, Python's floats, and mantissas with exponents."""


@given(json_numbers)
def test_a_long_is_what_the_streams_check_reads_as_one(text: str) -> None:
    exact = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    rendered = rendered_number(exact)
    rendered_as_integer = re.match(compiler._TYPE_PATTERN[ValueType.LONG], f"[{rendered}]")
    in_range = rendered_as_integer is not None and \
        INT64_RANGE[0] <= int(rendered) <= INT64_RANGE[1]  # TRY_CAST(... AS BIGINT)
    assert (judge(ValueType.LONG, exact) is not None) is in_range
    spelled_as_float = "." in text or "e" in text.lower()  # a float has lost its spelling
    assert judge(ValueType.LONG, json.loads(text)) == (
        None if spelled_as_float else judge(ValueType.LONG, exact))


@pytest.mark.parametrize(("value", "judged"), [(10**400, float("inf")),
                                               (-(10**400), -float("inf"))])
def test_an_integer_beyond_doubles_widens_to_an_infinity_never_an_error(value: int,
                                                                        judged: float) -> None:
    assert judge(ValueType.DOUBLE, value) == judged

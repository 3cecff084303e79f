"""Pure request-side logic, without services: references, request bodies, entity keys,
request context."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.definitions import Field, ValueType
from core.domain.layout import decode_entity_key, encode_entity_key
from core.domain.references import FeatureReference, parse_reference, parse_references
from core.errors import InvalidFeatureRequestError, MalformedBodyError
from serving.requests import (
    MAX_BATCH_ENTITIES,
    check_entity_rows,
    checked_request_value,
    decode_batch_request,
    parse_query_value,
    request_columns,
)
from sinks.online_store import redacted


def test_references_name_a_view_an_optional_version_and_a_feature() -> None:
    assert parse_reference("user_clicks:clicks_1h") == FeatureReference(
        "user_clicks:clicks_1h", "user_clicks", None, "clicks_1h")
    pinned = parse_reference("user_clicks@12:clicks_1h")
    assert (pinned.version, pinned.view_label) == (12, "user_clicks@12")


@pytest.mark.parametrize("text", ["clicks_1h", "user_clicks:", ":clicks", "user_clicks@0:x",
                                  "user_clicks@v2:x", "User:x", "a:b:c", "a@1@2:b", " a:b"])
def test_malformed_references_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a feature reference"):
        parse_reference(text)


def test_every_bad_reference_is_reported_with_its_position() -> None:
    with pytest.raises(InvalidFeatureRequestError) as caught:
        parse_references(["v:a", "bad", "v:a"])
    assert [p.path for p in caught.value.problems] == ["features[1]", "features[2]"]
    assert "requested twice" in caught.value.problems[1].message


def test_a_batch_body_is_decoded_and_bounded() -> None:
    request = decode_batch_request(b'{"entities": [{"user_id": "u1"}], "features": ["v:a"],'
                                   b' "request_context": {"x": [1]}}')
    assert request.entities == [{"user_id": "u1"}] and request.request_context == {"x": [1]}
    with pytest.raises(MalformedBodyError, match="not valid JSON"):
        decode_batch_request(b"{")
    for body, message in [(b'{"features": []}', "entities"),
                          (b'{"entities": [], "features": [], "extra": 1}', "extra"),
                          (b'{"entities": {}, "features": []}', "entities")]:
        with pytest.raises(InvalidFeatureRequestError, match=message):
            decode_batch_request(body)
    too_many = b'{"entities": [%s], "features": ["v:a"]}' % b",".join(
        [b"{}"] * (MAX_BATCH_ENTITIES + 1))
    with pytest.raises(InvalidFeatureRequestError, match="at most 10000"):
        decode_batch_request(too_many)


def test_entity_rows_must_hold_exactly_the_join_keys() -> None:
    check_entity_rows([{"user_id": "u1", "shop": 3}], ["user_id", "shop"])
    with pytest.raises(InvalidFeatureRequestError) as caught:
        check_entity_rows([{"user_id": "u1"}, {"user_id": None, "shop": 1, "x": 2}],
                          ["user_id", "shop"])
    messages = [(p.path, p.message) for p in caught.value.problems]
    assert messages[0] == ("entities[0]", "missing key columns shop")
    assert messages[1][1].startswith("unknown columns x")
    assert messages[2] == ("entities[1]", "key column user_id must be a string or an integer, "
                                          "got null")


def test_problems_of_huge_requests_are_capped() -> None:
    with pytest.raises(InvalidFeatureRequestError) as caught:
        check_entity_rows([{}] * 5000, ["user_id"])
    assert len(caught.value.problems) == 21
    assert caught.value.problems[-1].message == "... and 4980 more problems"


@given(st.lists(st.text(alphabet="ab|\\", max_size=5), min_size=1, max_size=4))
def test_entity_keys_decode_to_the_values_encoded(values: list[str]) -> None:
    assert decode_entity_key(encode_entity_key(values)) == values


CART = Field("cart_value", ValueType.DOUBLE, required=True, min=0)
COUPON = Field("coupon", ValueType.STRING, allowed=("A", "B"))
ITEMS = Field("items", ValueType.LONG)


def test_request_context_columns_are_checked_and_scalars_broadcast() -> None:
    columns = request_columns({"cart_value": [1, 2.5], "coupon": "A"}, [CART, COUPON, ITEMS], 2)
    assert columns == {"cart_value": [1, 2.5], "coupon": ["A", "A"], "items": [None, None]}


@pytest.mark.parametrize(("context", "path", "message"), [
    ({}, "request_context.cart_value", "is required"),
    ({"cart_value": [1.0, None]}, "request_context.cart_value[1]", "is required"),
    ({"cart_value": ["1"]}, "request_context.cart_value[0]", "must be of type double"),
    ({"cart_value": [True]}, "request_context.cart_value[0]", "must be of type double"),
    ({"cart_value": [-1]}, "request_context.cart_value[0]", "below the minimum"),
    ({"cart_value": 1, "coupon": "C"}, "request_context.coupon[0]", "not one of"),
    ({"cart_value": 1, "items": 1.5}, "request_context.items[0]", "must be of type long"),
    ({"cart_value": 1, "colour": 1}, "request_context.colour", "not a request field"),
    ({"cart_value": [[1]]}, "request_context.cart_value[0]", "got array"),
])
def test_bad_request_context_is_reported_by_field_and_row(
        context: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(InvalidFeatureRequestError) as caught:
        request_columns(context, [CART, COUPON, ITEMS], 1 if "[1]" not in path else 2)
    assert (caught.value.problems[0].path, ) == (path, )
    assert message in caught.value.problems[0].message


def test_integral_floats_are_not_longs_and_query_text_is_typed() -> None:
    assert checked_request_value(ITEMS, 3) == 3
    with pytest.raises(ValueError, match=r"must be of type long, got number 3\.0"):
        checked_request_value(ITEMS, 3.0)
    with pytest.raises(ValueError, match="must be of type int"):
        checked_request_value(Field("n", ValueType.INT), 2**31)
    assert type(checked_request_value(CART, 3)) is float
    assert parse_query_value(CART, "2.5") == 2.5
    assert parse_query_value(ITEMS, "7") == 7
    assert parse_query_value(Field("flag", ValueType.BOOLEAN), "True") is True
    with pytest.raises(ValueError, match="must be of type long"):
        parse_query_value(ITEMS, "seven")
    with pytest.raises(ValueError, match="must be of type double"):
        parse_query_value(CART, "nan")
    with pytest.raises(ValueError, match="must be of type long"):
        checked_request_value(ITEMS, parse_query_value(ITEMS, "7.0"))


def test_redis_passwords_stay_out_of_error_messages() -> None:
    assert redacted("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redacted("redis://app:s3cret@cache/1") == "redis://app:***@cache/1"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"

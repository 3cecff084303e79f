"""The SDK builds exactly the contract's JSON; the domain parser stays the only judge of it."""

from __future__ import annotations

import pytest

from core.domain.definitions import canonical_spec, parse_definition
from core.errors import InvalidDefinitionError
from registry.sdk import (
    Entity,
    Feature,
    FeatureView,
    Field,
    OnDemandFeature,
    OnDemandFeatureView,
    Source,
)

user = Entity("user", join_keys=["user_id"], description="A customer.")
clicks = Source(
    "clicks", topic="clicks.v1", timestamp_field="ts",
    schema=[Field("user_id", "string", required=True),
            Field("amount", "double", min=0, max=10_000, description="In euros."),
            Field("page", "string", allowed=("home", "cart")),
            Field("ts", "long", required=True)],
)
user_clicks = FeatureView(
    "user_clicks", entities=[user], source=clicks,
    features=[Feature("clicks_1h", "count", window="1h"),
              Feature("amount_1h", "sum", column="amount", window="1h"),
              Feature("amount_avg_1d", "avg", column="amount", window="1d", slide="1h"),
              Feature("last_page", "last", column="page", description="Latest page seen.")],
    ttl="2h", online=True, offline=False, owner="team-growth", description="Clicks.",
    tags={"tier": "1"},
)
user_ratios = OnDemandFeatureView(
    "user_ratios", inputs=[user_clicks],
    request_schema=[Field("cart_value", "double", required=True)],
    features=[OnDemandFeature("amount_per_click", "double",
                              "amount_1h / clicks_1h if clicks_1h else 0.0")],
    owner="team-growth", tags={"tier": "2"},
)
minimal_objects = [
    Entity("merchant", ["merchant_id"]),
    Source("orders", "orders", "ts", [Field("ts", "long", required=True)]),
    FeatureView("orders_by_user", ["user"], "orders", [Feature("orders_1d", "count", window="1d")]),
    OnDemandFeatureView("doubled", ["orders_by_user"],
                        [OnDemandFeature("orders_2d", "long", "orders_1d * 2")]),
]


@pytest.mark.parametrize("definition", [user, clicks, user_clicks, user_ratios, *minimal_objects],
                         ids=lambda d: d.name)
def test_to_json_round_trips_through_the_domain_parser_unchanged(definition):
    built = definition.to_json()

    assert canonical_spec(parse_definition(built)) == built
    assert next(iter(built)) == "kind"


def test_references_accept_objects_or_names():
    by_name = FeatureView("user_clicks", entities=["user"], source="clicks",
                          features=user_clicks.features, ttl="2h", offline=False,
                          owner="team-growth", description="Clicks.", tags={"tier": "1"})

    assert user_clicks.to_json() == by_name.to_json()
    assert user_ratios.to_json()["inputs"] == ["user_clicks"]


def test_only_keys_that_are_set_are_written():
    assert Entity("user", ["user_id"]).to_json() == {
        "kind": "entity", "name": "user", "join_keys": ["user_id"]}
    assert Feature("last_page", "last", column="page").to_json() == {
        "name": "last_page", "aggregation": "last", "column": "page"}


def test_source_json_matches_the_contract_example():
    assert clicks.to_json() == {
        "kind": "source", "name": "clicks", "topic": "clicks.v1", "format": "json",
        "timestamp_field": "ts", "timestamp_format": "epoch_millis", "watermark_delay": "5s",
        "schema": [
            {"name": "user_id", "type": "string", "required": True},
            {"name": "amount", "type": "double", "required": False, "min": 0, "max": 10_000,
             "description": "In euros."},
            {"name": "page", "type": "string", "required": False, "allowed": ["home", "cart"]},
            {"name": "ts", "type": "long", "required": True}],
    }


def test_invalid_objects_build_and_the_parser_reports_them():
    median = FeatureView("v", ["user"], "clicks", [Feature("f", "median", window="1h")])
    bare_string = Entity("user", join_keys="user_id")

    with pytest.raises(InvalidDefinitionError, match=r"features\[0\]\.aggregation"):
        parse_definition(median.to_json())
    with pytest.raises(InvalidDefinitionError, match="join_keys: must be an array, got string"):
        parse_definition(bare_string.to_json())

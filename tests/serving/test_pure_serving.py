"""Pure serving logic, without services: catalog, version maps, planning, decoding, TTL and
on-demand evaluation."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.definitions import ValueType
from core.domain.references import parse_references
from core.errors import InvalidFeatureRequestError, NotFoundError
from serving.assembly import assemble, decode_read, settle_expiry
from serving.catalog import DefinitionHistory
from serving.decoding import (
    ERROR,
    EXPIRED,
    NOT_FOUND,
    PRESENT,
    DecodeError,
    coerce_to_type,
    decoder_for,
    event_time_millis,
    is_expired,
)
from serving.planning import OnDemandColumn, Plan, Segment, plan_request, view_references
from serving.version_maps import VersionMaps
from sinks.online_store import VersionMap, parse_version_map
from tests.serving.definitions import ENTITY, SOURCE, feature_view, on_demand_view

NOW = 1_700_000_000_000
HOUR = 3_600_000


def history_of(*definitions: dict[str, Any]) -> DefinitionHistory:
    history = DefinitionHistory()
    versions: dict[str, int] = {}
    for definition in definitions:
        key = f"{definition['kind']}:{definition['name']}"
        versions[key] = versions.get(key, 0) + 1
        history.record(definition["kind"], definition["name"], versions[key], definition)
    history.mark_loaded()
    return history


EXTRA = [{"name": "amount_max_1h", "aggregation": "max", "column": "amount", "window": "1h"}]
HISTORY = history_of(ENTITY, SOURCE, feature_view("clicks"),
                     feature_view("clicks", ttl=None, extra=EXTRA),
                     on_demand_view("ratios", "clicks"))
CATALOG = HISTORY.catalog()
MAPS = VersionMaps(1, {"clicks": VersionMap(2, {1: "v1", 2: "v2"})})


def plan(*features: str) -> Plan:
    return plan_request(parse_references(features), CATALOG, MAPS)


# --------------------------------------------------------------------------- catalog

def test_the_catalog_holds_every_version_with_declared_types() -> None:
    assert sorted(CATALOG.views["clicks"]) == [1, 2]
    version_1 = CATALOG.views["clicks"][1]
    assert version_1.join_keys == ("user_id",) and version_1.ttl_ms == 2 * HOUR
    types = {name: f.type for name, f in version_1.features.items()}
    assert types == {"clicks_1h": ValueType.LONG, "amount_1h": ValueType.DOUBLE,
                     "quantity_1h": ValueType.LONG, "amount_avg_1d": ValueType.DOUBLE,
                     "last_page": ValueType.STRING, "premium": ValueType.BOOLEAN}
    assert CATALOG.on_demand_active == {"ratios": 1}


def test_snapshots_change_only_with_the_registry_and_expressions_compile_once() -> None:
    history = history_of(ENTITY, SOURCE, feature_view("clicks"), on_demand_view("r", "clicks"))
    first = history.catalog()
    assert history.catalog() is first
    history.record("feature_view", "clicks", 1, feature_view("clicks"))  # known: ignored
    assert history.catalog() is first
    history.record("entity", "shop", 1, {"kind": "entity", "name": "shop",
                                         "join_keys": ["shop_id"]})
    second = history.catalog()
    assert second.generation == first.generation + 1
    expression = first.on_demand["r"][1].features["amount_per_click"].expression
    assert second.on_demand["r"][1].features["amount_per_click"].expression is expression


def test_a_feature_whose_source_column_disappeared_is_served_untyped() -> None:
    reduced = {**SOURCE, "schema": [f for f in SOURCE["schema"] if f["name"] != "page"]}
    catalog = history_of(ENTITY, SOURCE, feature_view("clicks"), reduced).catalog()
    assert catalog.views["clicks"][1].features["last_page"].type is None


def test_version_maps_parse_the_active_version_and_namespaces() -> None:
    parsed = parse_version_map({b"active": b"3", b"1": b"v1", b"3": b"v1", b"junk": b"x"})
    assert parsed == VersionMap(3, {1: "v1", 3: "v1"})
    assert parse_version_map({b"active": b"2"}) == VersionMap(2, {2: "v2"})
    assert parse_version_map({}) is None


# --------------------------------------------------------------------------- planning

def test_a_plan_reads_each_view_version_once_in_contiguous_segments() -> None:
    planned = plan("clicks:clicks_1h", "clicks:amount_1h", "clicks@1:clicks_1h",
                   "clicks:amount_max_1h", "ratios:amount_per_click")
    assert planned.versions == {"clicks": 2, "clicks@1": 1, "ratios": 1}
    assert [(r.schema.version, r.namespace) for r in planned.reads] == [(2, "v2"), (1, "v1")]
    active = planned.reads[0]
    assert active.fields == ("clicks_1h", "amount_1h", "amount_max_1h", "__ts")
    segments = [c for c in planned.columns if isinstance(c, Segment)]
    assert [(s.read, s.start, s.stop) for s in segments] == [(0, 0, 2), (1, 0, 1), (0, 2, 3)]
    on_demand = planned.columns[-1]
    assert isinstance(on_demand, OnDemandColumn)
    # On-demand inputs are read at the view's active version, from the same read.
    assert [(s.name, s.read, s.position) for s in on_demand.inputs] == [
        ("amount_1h", 0, 1), ("clicks_1h", 0, 0)]
    assert planned.join_keys == ("user_id",)


def test_views_with_a_ttl_read_the_oldest_time_and_each_feature_time_only_when_needed() -> None:
    read = plan("clicks@1:clicks_1h").reads[0]
    assert read.fields == ("clicks_1h", "__ts", "__ts_min")
    assert read.time_fields == ("__ts:clicks_1h",)


def test_features_of_one_window_share_the_views_event_time() -> None:
    one_window = {**feature_view("hourly"), "features": [
        {"name": "clicks", "aggregation": "count", "window": "1h"},
        {"name": "amount", "aggregation": "sum", "column": "amount", "window": "1h"}]}
    catalog = history_of(ENTITY, SOURCE, one_window).catalog()
    maps = VersionMaps(1, {"hourly": VersionMap(1, {1: "v1"})})
    planned = plan_request(parse_references(["hourly:clicks", "hourly:amount"]), catalog, maps)
    assert planned.reads[0].fields == ("clicks", "amount", "__ts")
    decoded = decode_read(planned.reads[0], [[b"1", b"2.0", str(NOW - 3 * HOUR).encode()],
                                             [b"1", b"2.0", str(NOW).encode()]], NOW)
    assert [list(s) for s in decoded.statuses] == [[EXPIRED, EXPIRED], [PRESENT, PRESENT]]


def test_an_on_demand_input_missing_from_the_active_version_is_a_missing_input() -> None:
    # The expression reads a feature added in version 2, while version 1 is still active.
    catalog = history_of(ENTITY, SOURCE, feature_view("clicks"),
                         feature_view("clicks", extra=EXTRA),
                         {**on_demand_view("r", "clicks"),
                          "features": [{"name": "m", "type": "double",
                                        "expression": "coalesce(amount_max_1h, -1.0)"}]}
                         ).catalog()
    maps = VersionMaps(1, {"clicks": VersionMap(1, {1: "v1", 2: "v2"})})
    planned = plan_request(parse_references(["r:m"]), catalog, maps)
    column = planned.columns[0]
    assert isinstance(column, OnDemandColumn) and column.inputs[0].read is None
    assert planned.versions == {"r": 1, "clicks": 1}
    assembled = assemble(planned, [{"user_id": "u"}],
                         [decode_read(read, [[None]], NOW) for read in planned.reads], {})
    assert assembled.results == [{"user_id": "u", "r:m": -1.0}]
    assert assembled.statuses == [[NOT_FOUND]]


@pytest.mark.parametrize(("features", "message"), [
    (["nowhere:x"], "feature view 'nowhere' is not registered"),
    (["clicks@3:clicks_1h"], "version 3 of feature view 'clicks' is not serveable"),
    (["ratios@2:amount_per_click"], "has no version 2"),
])
def test_unknown_views_and_versions_are_not_found(features: list[str], message: str) -> None:
    with pytest.raises(NotFoundError, match=message):
        plan(*features)


def test_views_without_a_version_map_are_not_found() -> None:
    with pytest.raises(NotFoundError, match="not been deployed"):
        plan_request(parse_references(["clicks:clicks_1h"]), CATALOG, VersionMaps(0))
    with pytest.raises(NotFoundError, match="no active version"):
        plan_request(parse_references(["clicks:clicks_1h"]), CATALOG,
                     VersionMaps(1, {"clicks": VersionMap(None, {1: "v1"})}))


def test_unknown_features_are_all_reported() -> None:
    with pytest.raises(InvalidFeatureRequestError) as caught:
        plan("clicks@1:amount_max_1h", "clicks:clicks_1h", "ratios:nope")
    assert [p.path for p in caught.value.problems] == ["features[0]", "features[2]"]
    assert "'clicks' version 1 has no feature 'amount_max_1h'" in str(caught.value)


def test_the_single_entity_endpoint_plans_every_feature_of_the_version() -> None:
    version, references = view_references(CATALOG, MAPS, "clicks", None)
    assert version == 2 and references[-1].text == "amount_max_1h"
    assert [r.text for r in view_references(CATALOG, MAPS, "ratios", None)[1]] == [
        "amount_per_click", "cart_vs_avg", "log_amount"]


# --------------------------------------------------------------------------- decoding

@pytest.mark.parametrize(("value_type", "raw", "value"), [
    (ValueType.LONG, b"12", 12), (ValueType.INT, b"-3", -3),
    (ValueType.DOUBLE, b"3", 3.0), (ValueType.FLOAT, b"1e3", 1000.0),
    (ValueType.STRING, b'"caf\\u00e9"', "café"), (ValueType.BOOLEAN, b"false", False),
    (ValueType.TIMESTAMP, b"1700000000000", 1_700_000_000_000),
    (ValueType.TIMESTAMP, b'"2024-01-01T00:00:00Z"', "2024-01-01T00:00:00Z"),
    (None, b'"anything"', "anything"),
])
def test_stored_json_is_decoded_to_the_declared_type(value_type: ValueType | None, raw: bytes,
                                                     value: object) -> None:
    decoded = decoder_for(value_type)(raw)
    assert decoded == value and type(decoded) is type(value)


@pytest.mark.parametrize(("value_type", "raw"), [
    (ValueType.LONG, b"1.5"), (ValueType.LONG, b"true"), (ValueType.LONG, b'"1"'),
    (ValueType.LONG, b"12.0"), (ValueType.INT, b"2147483648"), (ValueType.TIMESTAMP, b"1.5"),
    (ValueType.DOUBLE, b'"1.5"'), (ValueType.DOUBLE, b"true"), (ValueType.STRING, b"12"),
    (ValueType.BOOLEAN, b"1"), (ValueType.TIMESTAMP, b"true"), (None, b"[1]"),
])
def test_stored_values_of_another_type_are_refused(value_type: ValueType | None,
                                                   raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decoder_for(value_type)(raw)


def test_event_times_and_ttl() -> None:
    assert event_time_millis(b"1700000000000") == NOW
    assert event_time_millis(b"1.7e12") == NOW
    assert event_time_millis(b"soon") is None and event_time_millis(None) is None
    assert is_expired(NOW - HOUR - 1, HOUR, NOW) and not is_expired(NOW - HOUR, HOUR, NOW)
    assert not is_expired(0, None, NOW) and not is_expired(None, HOUR, NOW)


def test_on_demand_results_are_coerced_to_their_declared_type() -> None:
    assert coerce_to_type(3, ValueType.DOUBLE) == 3.0
    assert type(coerce_to_type(3, ValueType.DOUBLE)) is float
    assert coerce_to_type(4, ValueType.LONG) == 4
    assert coerce_to_type(None, ValueType.STRING) is None
    for value, value_type in [(4.5, ValueType.LONG), (4.0, ValueType.LONG),
                              ("x", ValueType.DOUBLE), (True, ValueType.DOUBLE),
                              (1, ValueType.BOOLEAN), (2**63, ValueType.LONG)]:
        with pytest.raises(TypeError):
            coerce_to_type(value, value_type)


# --------------------------------------------------------------------------- assembly

def raw(*values: bytes | None) -> list[bytes | None]:
    return list(values)


def test_rows_decode_with_statuses_for_missing_expired_and_bad_values() -> None:
    planned = plan("clicks@1:clicks_1h", "clicks@1:last_page")
    read = planned.reads[0]  # fields: clicks_1h, last_page, __ts, __ts_min
    fresh, old = str(NOW - 1000).encode(), str(NOW - 3 * HOUR).encode()
    decoded = decode_read(read, [
        raw(b"4", b'"cart"', fresh, fresh),   # all present
        raw(None, None, None, None),          # no hash
        raw(b"4", None, fresh, fresh),        # one feature missing
        raw(b"4", b'"cart"', old, old),       # everything older than the ttl
        raw(b"4", b'"cart"', fresh, old),     # some feature's own time is too old
        raw(b'"x"', b'"cart"', fresh, fresh),  # a long that is not one
        raw(b"4", b'"cart"', fresh, None),    # written before __ts_min existed
    ], NOW)
    # Only the rows whose oldest time is too old, or unknown, need each feature's time.
    assert list(decoded.pending) == [4, 6]
    settle_expiry(read, decoded, [raw(old, None), raw(fresh, fresh)], NOW)
    assert not decoded.pending
    assert [list(v) for v in decoded.values] == [[4, "cart"], [None, None], [4, None],
                                                 [None, None], [None, "cart"], [None, "cart"],
                                                 [4, "cart"]]
    assert [list(s) for s in decoded.statuses] == [
        [PRESENT, PRESENT], [NOT_FOUND, NOT_FOUND], [PRESENT, NOT_FOUND], [EXPIRED, EXPIRED],
        [EXPIRED, PRESENT], [ERROR, PRESENT], [PRESENT, PRESENT]]
    assert decoded.found == [True, False, True, True, True, True, True]
    assert decoded.event_times[1] is None and decoded.event_times[0] == NOW - 1000


def test_on_demand_values_follow_their_inputs_and_fail_alone() -> None:
    planned = plan("ratios:amount_per_click", "ratios:cart_vs_avg", "ratios:log_amount",
                   "clicks:clicks_1h")
    # Active read (version 2, no ttl) fields: amount_1h, clicks_1h, amount_avg_1d, __ts
    read = planned.reads[0]
    assert read.fields == ("amount_1h", "clicks_1h", "amount_avg_1d", "__ts")
    rows = [raw(b"10.0", b"4", b"2.5", b"1"), raw(b"0.0", b"0", None, b"1"),
            raw(None, None, None, None)]
    assembled = assemble(planned, [{"user_id": "a"}, {"user_id": "b"}, {"user_id": "c"}],
                         [decode_read(read, rows, NOW)], {"cart_value": [5.0, 5.0, 5.0]})
    a, b, c = assembled.results
    assert a == {"user_id": "a", "ratios:amount_per_click": 2.5, "ratios:cart_vs_avg": 2.0,
                 "ratios:log_amount": pytest.approx(2.302585, rel=1e-5), "clicks:clicks_1h": 4}
    assert (b["ratios:amount_per_click"], b["ratios:log_amount"]) == (0.0, None)
    assert c["ratios:amount_per_click"] == 0.0  # the expression's own default
    assert assembled.statuses == [[PRESENT] * 4, [PRESENT, NOT_FOUND, ERROR, PRESENT],
                                  [NOT_FOUND] * 4]

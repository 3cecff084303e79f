"""Parsing definitions: the contract's examples, canonical form and spec hash, every refusal.

``contract()`` and ``edited()`` are also used by the validation and change tests: every case
there is "the contract's examples, with these edits".
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.definitions import (
    Aggregation,
    Entity,
    FeatureView,
    Kind,
    OnDemandFeatureView,
    Source,
    TimestampFormat,
    ValueType,
    canonical_json,
    canonical_spec,
    parse_definition,
    parse_definitions,
    spec_hash,
)
from core.domain.durations import parse_duration
from core.errors import InvalidDefinitionError, Problem
from tests.reference_definitions import reference_definitions

ENTITY, SOURCE, VIEW, ON_DEMAND = range(4)
"""Positions of the contract's examples in the fixture (and in ``contract()``)."""

DELETE = object()
"""An edit value that removes the key (or list item)."""

Edits = Mapping[Any, object]
"""JSON path (a tuple of keys and list indexes) -> new value; an index one past the end
appends."""


def contract() -> list[dict[str, Any]]:
    """Fresh copies of the contract's examples: user, clicks, user_clicks, user_ratios."""
    definitions: list[dict[str, Any]] = reference_definitions()
    return definitions


def edited(value: Any, edits: Edits) -> Any:
    """A deep copy of ``value`` with ``edits`` applied in order."""
    result = copy.deepcopy(value)
    for path, new in edits.items():
        *parents, last = path
        container = result
        for step in parents:
            container = container[step]
        if new is DELETE:
            del container[last]
        elif isinstance(container, list) and last == len(container):
            container.append(copy.deepcopy(new))
        else:
            container[last] = copy.deepcopy(new)
    return result


def problems_of(value: object) -> tuple[Problem, ...]:
    with pytest.raises(InvalidDefinitionError) as raised:
        parse_definition(value)
    assert raised.value.problems, "an InvalidDefinitionError must say why"
    return raised.value.problems


# --------------------------------------------------------------------------- the contract


def test_the_contract_examples_parse() -> None:
    entity, source, view, on_demand = (parse_definition(d) for d in contract())

    assert entity == Entity("user", ("user_id",), "A user")

    assert isinstance(source, Source)
    assert (source.name, source.topic, source.format) == ("clicks", "clicks", "json")
    assert source.timestamp_field == "ts"
    assert source.timestamp_format is TimestampFormat.EPOCH_MILLIS
    assert source.watermark_delay_ms == 5_000
    assert [(f.name, f.type, f.required) for f in source.schema] == [
        ("user_id", ValueType.STRING, True), ("amount", ValueType.DOUBLE, False),
        ("page", ValueType.STRING, False), ("ts", ValueType.LONG, True)]
    assert source.field_named("amount").min == 0
    assert source.field_named("page").allowed == ("home", "cart")

    assert isinstance(view, FeatureView)
    assert (view.entities, view.source) == (("user",), "clicks")
    assert [(f.name, f.aggregation, f.column, f.window_ms, f.slide_ms) for f in view.features] == [
        ("clicks_1h", Aggregation.COUNT, None, 3_600_000, None),
        ("amount_1h", Aggregation.SUM, "amount", 3_600_000, None),
        ("amount_avg_1d", Aggregation.AVG, "amount", 86_400_000, 3_600_000),
        ("last_page", Aggregation.LAST, "page", None, None)]
    assert [f.window_group for f in view.features] == [
        (3_600_000, 3_600_000), (3_600_000, 3_600_000), (86_400_000, 3_600_000), None]
    assert (view.ttl_ms, view.online, view.offline) == (7_200_000, True, True)
    assert (view.owner, view.tags) == ("team-growth", {"tier": "1"})

    assert isinstance(on_demand, OnDemandFeatureView)
    assert on_demand.inputs == ("user_clicks",)
    assert [f.name for f in on_demand.request_schema] == ["cart_value"]
    assert [(f.name, f.type) for f in on_demand.features] == [
        ("amount_per_click", ValueType.DOUBLE), ("cart_vs_avg", ValueType.DOUBLE)]


@pytest.mark.parametrize("index", [ENTITY, SOURCE, VIEW, ON_DEMAND])
def test_the_contract_examples_are_already_canonical(index: int) -> None:
    value = contract()[index]
    definition = parse_definition(value)
    assert definition.kind == value["kind"]
    assert canonical_spec(definition) == value


@pytest.mark.parametrize("index", [ENTITY, SOURCE, VIEW, ON_DEMAND])
def test_the_canonical_spec_parses_back_to_itself(index: int) -> None:
    spec = canonical_spec(parse_definition(contract()[index]))
    assert canonical_spec(parse_definition(spec)) == spec


def test_the_canonical_spec_spells_defaults_out_and_leaves_unset_keys_out() -> None:
    source = {"kind": "source", "name": "taps", "topic": "taps", "timestamp_field": "ts",
              "schema": [{"name": "ts", "type": "long", "required": True},
                         {"name": "x", "type": "double"}]}
    view = {"kind": "feature_view", "name": "taps_1m", "entities": ["user"], "source": "taps",
            "features": [{"name": "taps", "aggregation": "count", "window": "60s",
                          "slide": "1m"}]}
    on_demand = {"kind": "on_demand_feature_view", "name": "doubled", "inputs": ["taps_1m"],
                 "features": [{"name": "twice", "type": "long", "expression": "taps * 2"}]}

    assert canonical_spec(parse_definition(source)) == {
        "kind": "source", "name": "taps", "topic": "taps", "format": "json",
        "timestamp_field": "ts", "timestamp_format": "epoch_millis", "watermark_delay": "5s",
        "schema": [{"name": "ts", "type": "long", "required": True},
                   {"name": "x", "type": "double", "required": False}]}
    assert canonical_spec(parse_definition(view)) == {
        "kind": "feature_view", "name": "taps_1m", "entities": ["user"], "source": "taps",
        "features": [{"name": "taps", "aggregation": "count", "window": "1m"}],
        "online": True, "offline": True}
    assert canonical_spec(parse_definition(on_demand)) == {**on_demand, "request_schema": []}


def test_canonical_json_is_compact_with_sorted_keys_and_raw_unicode() -> None:
    assert canonical_json({"b": [1, {"d": "é", "c": None}], "a": True}) == (
        '{"a":true,"b":[1,{"c":null,"d":"é"}]}')


# --------------------------------------------------------------------------- spec hash

EQUIVALENT_SPELLINGS: list[tuple[str, int, Edits]] = [
    ("window 60m is 1h", VIEW, {("features", 0, "window"): "60m"}),
    ("window 3600s is 1h", VIEW, {("features", 0, "window"): "3600s"}),
    ("window 3600000ms is 1h", VIEW, {("features", 0, "window"): "3600000ms"}),
    ("window 24h slide 60m is 1d/1h", VIEW,
     {("features", 2, "window"): "24h", ("features", 2, "slide"): "60m"}),
    ("slide equal to window is no slide", VIEW, {("features", 1, "slide"): "1h"}),
    ("slide spelled differently but equal to window", VIEW, {("features", 1, "slide"): "60m"}),
    ("ttl 120m is 2h", VIEW, {("ttl",): "120m"}),
    ("online and offline default to true", VIEW, {("online",): DELETE, ("offline",): DELETE}),
    ("null optional key is absent", VIEW, {("features", 0, "description"): None}),
    ("format defaults to json", SOURCE, {("format",): DELETE}),
    ("timestamp_format defaults to epoch_millis", SOURCE, {("timestamp_format",): DELETE}),
    ("watermark_delay defaults to 5s", SOURCE, {("watermark_delay",): DELETE}),
    ("watermark_delay 5000ms is 5s", SOURCE, {("watermark_delay",): "5000ms"}),
    ("required defaults to false", SOURCE, {("schema", 1, "required"): DELETE}),
    ("min 0.0 is min 0", SOURCE, {("schema", 1, "min"): 0.0}),
    ("empty tags are no tags", SOURCE, {("tags",): {}}),
    ("null owner is no owner", SOURCE, {("owner",): None}),
    ("empty tags on an on-demand view", ON_DEMAND, {("tags",): {}}),
    ("null description on an on-demand view", ON_DEMAND, {("description",): None}),
]


@pytest.mark.parametrize(("index", "edits"), [pytest.param(i, e, id=name)
                                               for name, i, e in EQUIVALENT_SPELLINGS])
def test_equivalent_spellings_have_the_same_canonical_form_and_hash(index: int,
                                                                    edits: Edits) -> None:
    original = parse_definition(contract()[index])
    respelled = parse_definition(edited(contract()[index], edits))
    assert canonical_spec(respelled) == canonical_spec(original)
    assert spec_hash(respelled) == spec_hash(original)


DIFFERENT_DEFINITIONS: list[tuple[str, int, Edits]] = [
    ("another window", VIEW, {("features", 0, "window"): "2h"}),
    ("a slide", VIEW, {("features", 1, "slide"): "30m"}),
    ("not online", VIEW, {("online",): False}),
    ("another description", VIEW, {("description",): "Clicks"}),
    ("features in another order", VIEW, {("features", 0): {"name": "last_page",
                                                           "aggregation": "last",
                                                           "column": "page"},
                                         ("features", 3): {"name": "clicks_1h",
                                                           "aggregation": "count",
                                                           "window": "1h"}}),
    ("another min", SOURCE, {("schema", 1, "min"): 0.5}),
    ("a required field", SOURCE, {("schema", 1, "required"): True}),
    ("another join key", ENTITY, {("join_keys",): ["user_id", "tenant_id"]}),
]


@pytest.mark.parametrize(("index", "edits"), [pytest.param(i, e, id=name)
                                               for name, i, e in DIFFERENT_DEFINITIONS])
def test_different_definitions_have_different_hashes(index: int, edits: Edits) -> None:
    original = parse_definition(contract()[index])
    changed = parse_definition(edited(contract()[index], edits))
    assert spec_hash(changed) != spec_hash(original)


def test_spec_hash_is_the_sha256_of_the_canonical_json() -> None:
    definition = parse_definition(contract()[ENTITY])
    canonical = '{"description":"A user","join_keys":["user_id"],"kind":"entity","name":"user"}'
    assert canonical_json(canonical_spec(definition)) == canonical
    assert spec_hash(definition) == hashlib.sha256(canonical.encode()).hexdigest()


def shuffled(value: Any, rng: random.Random) -> Any:
    """``value`` with the keys of every object in a random order (lists keep their order)."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: shuffled(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [shuffled(item, rng) for item in value]
    return value


@settings(max_examples=50)
@given(rng=st.randoms(use_true_random=False), indent=st.none() | st.integers(0, 8),
       index=st.sampled_from([ENTITY, SOURCE, VIEW, ON_DEMAND]))
def test_key_order_and_formatting_never_change_the_hash(rng: random.Random, indent: int | None,
                                                        index: int) -> None:
    original = contract()[index]
    reformatted = json.loads(json.dumps(shuffled(original, rng), indent=indent))
    respelled = parse_definition(reformatted)
    assert canonical_json(canonical_spec(respelled)) == canonical_json(original)
    assert spec_hash(respelled) == spec_hash(parse_definition(original))


@given(st.integers(1, 48), st.sampled_from(["h", "m", "s", "ms"]))
def test_any_unit_spelling_of_a_window_keeps_the_hash(hours: int, unit: str) -> None:
    per_hour = {"h": 1, "m": 60, "s": 3_600, "ms": 3_600_000}[unit]
    spelled = edited(contract()[VIEW], {("features", 0, "window"): f"{hours * per_hour}{unit}"})
    canonical = edited(contract()[VIEW], {("features", 0, "window"): f"{hours}h"})
    assert spec_hash(parse_definition(spelled)) == spec_hash(parse_definition(canonical))


# --------------------------------------------------------------------------- refusals

VIEW_KEYS = ("description, drift, entities, features, kind, name, offline, online, owner, "
             "source, tags, ttl")
NAME_RULE = "is not a valid name: use 1-63 lowercase letters, digits or '_', starting with a letter"
BAD_DURATIONS = ["5 minutes", "0s", "1.5h", "-1m", "1h\n"]

INVALID: list[tuple[str, int, Edits, str, str]] = [
    # (case, example, edits, problem path, words the message contains)
    # unknown keys, at every level
    ("unknown top-level key", VIEW, {("colour",): "red"},
     "colour", f"unknown key (known keys: {VIEW_KEYS})"),
    ("unknown feature key", VIEW, {("features", 1, "colour"): "red"},
     "features[1].colour",
     "unknown key (known keys: aggregation, column, description, name, slide, window)"),
    ("unknown schema field key", SOURCE, {("schema", 0, "nullable"): True},
     "schema[0].nullable",
     "unknown key (known keys: allowed, description, max, min, name, required, type)"),
    ("unknown request field key", ON_DEMAND, {("request_schema", 0, "default"): 1.0},
     "request_schema[0].default", "unknown key"),
    ("unknown on-demand feature key", ON_DEMAND, {("features", 0, "window"): "1h"},
     "features[0].window", "unknown key (known keys: description, expression, name, type)"),
    ("entities take no tags", ENTITY, {("tags",): {"a": "b"}},
     "tags", "unknown key (known keys: description, join_keys, kind, name)"),
    ("sources take no ttl", SOURCE, {("ttl",): "1h"}, "ttl", "unknown key"),
    # names
    *[(f"name {name!r}", VIEW, {("name",): name}, "name", f"{name!r} {NAME_RULE}")
      for name in ["User_Clicks", "1clicks", "a" * 64, "", "user-clicks", "_clicks",
                   "user_clicks\n"]],
    ("feature name", VIEW, {("features", 0, "name"): "Clicks"}, "features[0].name", NAME_RULE),
    ("join key name", ENTITY, {("join_keys",): ["user id"]}, "join_keys[0]", NAME_RULE),
    ("entity reference", VIEW, {("entities",): ["user", "User"]}, "entities[1]", NAME_RULE),
    ("schema field name", SOURCE, {("schema", 1, "name"): "Amount"}, "schema[1].name", NAME_RULE),
    ("column name", VIEW, {("features", 1, "column"): "2amount"}, "features[1].column",
     NAME_RULE),
    # wrong types
    ("name not a string", VIEW, {("name",): 5}, "name", "must be a string, got integer"),
    ("online not a boolean", VIEW, {("online",): "yes"}, "online",
     "must be true or false, got string"),
    ("entities not an array", VIEW, {("entities",): "user"}, "entities",
     "must be an array, got string"),
    ("features not an array", VIEW, {("features",): {}}, "features",
     "must be an array, got object"),
    ("feature not an object", VIEW, {("features", 0): "clicks_1h"}, "features[0]",
     "must be an object, got string"),
    ("tag value not a string", VIEW, {("tags",): {"tier": 1}}, "tags",
     "must be an object of string keys to string values"),
    ("window not a string", VIEW, {("features", 0, "window"): 3600},
     "features[0].window", "must be a string, got integer"),
    ("min not a number", SOURCE, {("schema", 1, "min"): "0"}, "schema[1].min",
     "must be a number, got string"),
    ("min a boolean", SOURCE, {("schema", 1, "min"): False}, "schema[1].min",
     "must be a number, got boolean"),
    ("min not finite", SOURCE, {("schema", 1, "min"): float("nan")}, "schema[1].min",
     "must be a finite number"),
    ("max infinite", SOURCE, {("schema", 1, "max"): float("inf")}, "schema[1].max",
     "must be a finite number"),
    ("required not a boolean", SOURCE, {("schema", 0, "required"): "yes"},
     "schema[0].required", "must be true or false, got string"),
    ("allowed not an array", SOURCE, {("schema", 2, "allowed"): "home"}, "schema[2].allowed",
     "must be an array, got string"),
    ("allowed value an object", SOURCE, {("schema", 2, "allowed"): ["home", {"a": 1}]},
     "schema[2].allowed[1]", "must be a string, number or boolean, got object"),
    ("expression not a string", ON_DEMAND, {("features", 0, "expression"): 5},
     "features[0].expression", "must be a string, got integer"),
    ("description too long", ENTITY, {("description",): "x" * 10_001}, "description",
     "must be at most 10000 characters"),
    # required keys, missing or null
    ("name null", VIEW, {("name",): None}, "name", "must be a string, got null"),
    ("source missing", VIEW, {("source",): DELETE}, "source", "is required"),
    ("aggregation missing", VIEW, {("features", 0, "aggregation"): DELETE},
     "features[0].aggregation", "is required"),
    ("field type missing", SOURCE, {("schema", 0, "type"): DELETE}, "schema[0].type",
     "is required"),
    ("join keys missing", ENTITY, {("join_keys",): DELETE}, "join_keys", "is required"),
    ("expression missing", ON_DEMAND, {("features", 1, "expression"): DELETE},
     "features[1].expression", "is required"),
    # empty lists
    ("no features", VIEW, {("features",): []}, "features", "must not be empty"),
    ("no join keys", ENTITY, {("join_keys",): []}, "join_keys", "must not be empty"),
    ("no schema", SOURCE, {("schema",): []}, "schema", "must not be empty"),
    ("no inputs", ON_DEMAND, {("inputs",): []}, "inputs", "must not be empty"),
    ("allowed empty", SOURCE, {("schema", 2, "allowed"): []}, "schema[2].allowed",
     "must not be empty"),
    # kinds and other enumerations
    ("unknown kind", VIEW, {("kind",): "widget"}, "kind",
     "'widget' is not one of: entity, source, feature_view, on_demand_feature_view"),
    ("kind missing", VIEW, {("kind",): DELETE}, "kind", "is required"),
    ("kind not a string", VIEW, {("kind",): 3}, "kind", "must be a string, got integer"),
    ("unknown aggregation", VIEW, {("features", 0, "aggregation"): "median"},
     "features[0].aggregation", "'median' is not one of: count, sum, avg, min, max, stddev, last"),
    ("unknown type", SOURCE, {("schema", 0, "type"): "decimal"}, "schema[0].type",
     "'decimal' is not one of: string, long, int, double, float, boolean, timestamp"),
    ("unknown on-demand type", ON_DEMAND, {("features", 0, "type"): "number"},
     "features[0].type", "'number' is not one of"),
    ("unknown timestamp format", SOURCE, {("timestamp_format",): "rfc3339"}, "timestamp_format",
     "'rfc3339' is not one of: epoch_millis, epoch_seconds, iso8601"),
    ("unsupported format", SOURCE, {("format",): "avro"}, "format",
     "'avro' is not a supported format: only 'json'"),
    *[(f"topic {topic!r}", SOURCE, {("topic",): topic}, "topic",
       f"{topic!r} is not a valid Kafka topic name")
      for topic in ["my topic", "..", "", "t" * 250, "clicks\n"]],
    # durations
    *[(f"window {bad!r}", VIEW, {("features", 0, "window"): bad}, "features[0].window",
       f"{bad!r} is not a duration: use a positive whole number") for bad in BAD_DURATIONS],
    ("slide not a duration", VIEW, {("features", 2, "slide"): "1.5h"}, "features[2].slide",
     "'1.5h' is not a duration"),
    ("ttl not a duration", VIEW, {("ttl",): "2 hours"}, "ttl", "'2 hours' is not a duration"),
    ("watermark delay zero", SOURCE, {("watermark_delay",): "0s"}, "watermark_delay",
     "'0s' is not a duration"),
    # windows
    ("slide not dividing the window", VIEW, {("features", 2, "slide"): "7h"},
     "features[2].slide", "7h does not divide the window 1d"),
    ("slide longer than the window", VIEW, {("features", 2, "slide"): "2d"},
     "features[2].slide", "must not be longer than the window"),
    ("last with a window", VIEW, {("features", 3, "window"): "1h"}, "features[3].window",
     "'last' is the latest value by event time and takes no window"),
    ("last with a slide", VIEW, {("features", 3, "slide"): "1h"}, "features[3].slide",
     "'last' is the latest value by event time and takes no window"),
    ("count without window", VIEW, {("features", 0, "window"): DELETE}, "features[0].window",
     "is required for 'count'"),
    ("avg with a slide but no window", VIEW, {("features", 2, "window"): DELETE},
     "features[2].window", "is required for 'avg'"),
    ("sum without column", VIEW, {("features", 1, "column"): DELETE}, "features[1].column",
     "is required for 'sum'"),
    ("last without column", VIEW, {("features", 3, "column"): DELETE}, "features[3].column",
     "is required for 'last'"),
    # duplicates
    ("duplicate feature names", VIEW, {("features", 1, "name"): "clicks_1h"}, "features",
     "duplicate names: clicks_1h"),
    ("duplicate entities", VIEW, {("entities",): ["user", "user"]}, "entities",
     "duplicate names: user"),
    ("duplicate join keys", ENTITY, {("join_keys",): ["user_id", "user_id"]}, "join_keys",
     "duplicate names: user_id"),
    ("duplicate schema fields", SOURCE, {("schema", 1, "name"): "user_id"}, "schema",
     "duplicate names: user_id"),
    ("duplicate on-demand features", ON_DEMAND, {("features", 1, "name"): "amount_per_click"},
     "features", "duplicate names: amount_per_click"),
    ("duplicate inputs", ON_DEMAND, {("inputs",): ["user_clicks", "user_clicks"]}, "inputs",
     "duplicate names: user_clicks"),
    # field bounds
    ("min greater than max", SOURCE, {("schema", 1, "max"): -1}, "schema[1].min",
     "is greater than max"),
    ("min on a string", SOURCE, {("schema", 2, "min"): 1}, "schema[2].min",
     "min/max need a numeric type, not string"),
    ("max on a boolean request field", ON_DEMAND,
     {("request_schema", 0, "type"): "boolean", ("request_schema", 0, "max"): 1},
     "request_schema[0].max", "min/max need a numeric type, not boolean"),
    # what the streaming job cannot render
    *[(f"a field named {name}", SOURCE, {("schema", 2, "name"): name}, "schema[2].name",
       f"{name!r} is reserved for the streaming job's own columns")
      for name in ["event_time", "event_ms", "window_start", "window_end", "window_time"]],
    ("allowed timestamps", SOURCE, {("schema", 4): {"name": "seen", "type": "timestamp",
                                                    "allowed": ["2024-01-01T00:00:00Z"]}},
     "schema[4].allowed", "does not apply to a timestamp field"),
    ("a window of 100 days", VIEW, {("features", 0, "window"): "100d"}, "features[0].window",
     "100d is too long: it must be shorter than 100d (Flink intervals hold at most 99 days)"),
    ("a window of 9999999999 days", VIEW, {("features", 0, "window"): "9999999999d"},
     "features[0].window", "9999999999d is too long"),
    ("a watermark delay of 2400 hours", SOURCE, {("watermark_delay",): "2400h"},
     "watermark_delay", "100d is too long"),
    # limits on the size of one spec
    ("too many schema fields", SOURCE,
     {("schema",): [{"name": f"f{i}", "type": "long"} for i in range(1001)]},
     "schema", "has 1001 items: the limit is 1000 fields per schema"),
    ("too many features", VIEW,
     {("features",): [{"name": f"f{i}", "aggregation": "count", "window": "1h"}
                      for i in range(1001)]},
     "features", "has 1001 items: the limit is 1000 features per view"),
    ("too many on-demand features", ON_DEMAND,
     {("features",): [{"name": f"f{i}", "type": "double", "expression": "1.0"}
                      for i in range(1001)]},
     "features", "has 1001 items: the limit is 1000 features per view"),
    ("too many request fields", ON_DEMAND,
     {("request_schema",): [{"name": f"f{i}", "type": "long"} for i in range(1001)]},
     "request_schema", "the limit is 1000 fields per schema"),
    ("too many entities", VIEW, {("entities",): [f"e{i}" for i in range(101)]}, "entities",
     "has 101 items: the limit is 100 names per list"),
    ("too many join keys", ENTITY, {("join_keys",): [f"k{i}" for i in range(101)]},
     "join_keys", "the limit is 100 names per list"),
    ("too many allowed values", SOURCE, {("schema", 2, "allowed"): [str(i) for i in range(1001)]},
     "schema[2].allowed", "has 1001 items: the limit is 1000 allowed values"),
    ("an allowed value too long", SOURCE, {("schema", 2, "allowed"): ["home", "x" * 1001]},
     "schema[2].allowed[1]", "must be at most 1000 characters (the limit for an allowed value)"),
    ("too many tags", VIEW, {("tags",): {f"t{i}": "x" for i in range(51)}}, "tags",
     "has 51 tags: the limit is 50 tags"),
    ("a tag value too long", SOURCE, {("tags",): {"team": "x" * 257}}, "tags",
     "has a key or value of 257 characters: the limit is 256 characters per tag key or value"),
    ("a tag key too long", VIEW, {("tags",): {"k" * 257: "x"}}, "tags",
     "the limit is 256 characters per tag key or value"),
    ("an owner too long", VIEW, {("owner",): "o" * 10_001}, "owner",
     "must be at most 10000 characters (the limit for a description or an owner)"),
    ("an expression too long", ON_DEMAND, {("features", 0, "expression"): "1" * 1_001},
     "features[0].expression", "must be at most 1000 characters (the limit for an expression)"),
]


@pytest.mark.parametrize(("index", "edits", "path", "message"),
                         [pytest.param(i, e, p, m, id=case) for case, i, e, p, m in INVALID])
def test_each_invalid_definition_names_the_path_and_the_reason(index: int, edits: Edits,
                                                              path: str, message: str) -> None:
    value = edited(contract()[index], edits)
    problems = problems_of(value)
    assert [p.path for p in problems] == [path], problems
    assert message in problems[0].message
    name = value.get("name", "?")
    assert problems[0].definition == (f"{value['kind']}:{name}"
                                      if isinstance(value.get("kind"), str) else None)


@pytest.mark.parametrize("name", ["a", "a" * 63, "user_2", "x_"])
def test_names_at_the_edges_of_the_rule_are_accepted(name: str) -> None:
    assert parse_definition(edited(contract()[VIEW], {("name",): name})).name == name


@pytest.mark.parametrize(("value", "got"), [([], "array"), (None, "null"), ("user", "string"),
                                            (7, "integer"), (1.5, "number"), (True, "boolean")])
def test_a_definition_must_be_an_object(value: object, got: str) -> None:
    assert problems_of(value) == (Problem("$", f"must be an object, got {got}"),)


def test_every_problem_of_one_definition_is_reported_at_once() -> None:
    value = edited(contract()[VIEW], {
        ("entities",): ["User"], ("features", 0, "window"): "5 minutes",
        ("features", 1, "colour"): "red", ("online",): "yes", ("shape",): "round"})
    assert {p.path for p in problems_of(value)} == {
        "entities[0]", "features[0].window", "features[1].colour", "online", "shape"}


def test_problems_of_several_definitions_in_a_batch_are_reported_together() -> None:
    batch: list[Any] = contract()
    batch[ENTITY]["name"] = "User"
    batch[VIEW]["features"][1]["colour"] = "red"
    batch[VIEW]["features"][2]["slide"] = "7h"  # reported once the shape is right
    batch[ON_DEMAND]["features"][0]["type"] = "decimal"
    batch.append(42)

    with pytest.raises(InvalidDefinitionError) as raised:
        parse_definitions(batch)

    assert [(p.definition, p.path) for p in raised.value.problems] == [
        ("entity:User", "definitions[0].name"),
        ("feature_view:user_clicks", "definitions[2].features[1].colour"),
        ("on_demand_feature_view:user_ratios", "definitions[3].features[0].type"),
        (None, "definitions[4]"),
    ]
    message = str(raised.value)
    assert "feature_view:user_clicks definitions[2].features[1].colour: unknown key" in message
    assert "definitions[4]: must be an object, got integer" in message

    del batch[VIEW]["features"][1]["colour"]
    with pytest.raises(InvalidDefinitionError) as raised:
        parse_definitions(batch[VIEW:VIEW + 1], path="defs")
    assert raised.value.problems == (Problem("defs[0].features[2].slide",
                                             "7h does not divide the window 1d",
                                             "feature_view:user_clicks"),)


def test_a_valid_batch_parses_in_order() -> None:
    parsed = parse_definitions(contract())
    assert [(d.kind, d.name) for d in parsed] == [
        (Kind.ENTITY, "user"), (Kind.SOURCE, "clicks"), (Kind.FEATURE_VIEW, "user_clicks"),
        (Kind.ON_DEMAND_FEATURE_VIEW, "user_ratios")]


@pytest.mark.parametrize(("problem", "text"), [
    (Problem("name", "is required"), "name: is required"),
    (Problem("name", "is required", "entity:user"), "entity:user name: is required"),
])
def test_problems_read_as_where_and_why(problem: Problem, text: str) -> None:
    assert str(problem) == text
    assert str(InvalidDefinitionError([problem, problem])) == f"{text}; {text}"


@pytest.mark.parametrize("window", ["99d", "2399h", "8639999999ms"])
def test_windows_just_under_100_days_are_accepted(window: str) -> None:
    view = parse_definition(edited(contract()[VIEW], {("features", 0, "window"): window}))
    assert isinstance(view, FeatureView)
    assert view.features[0].window_ms == parse_duration(window)


# --------------------------------------------------------------------------- drift thresholds

def test_a_views_drift_block_sets_thresholds_and_keeps_only_those_off_default() -> None:
    view = parse_definition(edited(contract()[VIEW], {("drift",): {
        "psi_alert": 0.3, "min_samples": 200, "alpha": 0.001}}))
    assert isinstance(view, FeatureView)
    assert (view.drift.psi_alert, view.drift.min_samples, view.drift.psi_warn) == (0.3, 200, 0.1)
    assert canonical_spec(view)["drift"] == {"psi_alert": 0.3, "min_samples": 200}


@pytest.mark.parametrize(("drift", "path", "message"), [
    ({"psi_warn": 0.5}, "drift", "psi_warn (0.5) must be positive and at most psi_alert"),
    ({"min_samples": 10.5}, "drift.min_samples", "must be a whole number"),
    ({"js_alert": 2}, "drift", "js_alert must be at most 1"),
    ({"null_rate_alert": 0}, "drift", "null_rate_alert must be positive"),
    ({"psi": 0.2}, "drift.psi", "unknown key (known keys: alpha, js_alert"),
    ("high", "drift", "must be an object"),
])
def test_inconsistent_drift_thresholds_are_refused(drift: object, path: str,
                                                   message: str) -> None:
    problems = problems_of(edited(contract()[VIEW], {("drift",): drift}))
    assert [p.path for p in problems] == [path]
    assert message in problems[0].message

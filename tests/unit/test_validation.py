"""Rules across definitions: references, column types, expressions, and the registered catalog."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain import validation
from core.domain.definitions import Definition, definition_key, parse_definitions
from core.domain.events import Provenance
from core.domain.limits import MAX_DEFINITIONS_PER_BATCH
from core.domain.validation import (
    dependants,
    merged_catalog,
    references,
    validate_batch,
    validate_catalog,
)
from core.errors import InvalidDefinitionError, LimitExceededError, Problem
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from tests.unit.test_definitions import (
    DELETE,
    ENTITY,
    ON_DEMAND,
    SOURCE,
    VIEW,
    Edits,
    contract,
    edited,
)

ENTITY_KEY = "entity:user"
SOURCE_KEY = "source:clicks"
VIEW_KEY = "feature_view:user_clicks"
ON_DEMAND_KEY = "on_demand_feature_view:user_ratios"
LABELS = {ENTITY: ENTITY_KEY, SOURCE: SOURCE_KEY, VIEW: VIEW_KEY, ON_DEMAND: ON_DEMAND_KEY}

IS_BOT = {"name": "is_bot", "type": "boolean"}
"""A boolean field, appended to the source's schema where a case needs one."""


def batch_problems(batch: list[Any], registered: dict[str, Definition] | None = None
                   ) -> tuple[Problem, ...]:
    with pytest.raises(InvalidDefinitionError) as raised:
        validate_batch(registered or {}, parse_definitions(batch))
    assert raised.value.problems, "an InvalidDefinitionError must say why"
    return raised.value.problems


def registered_contract() -> dict[str, Definition]:
    return {definition_key(d): d for d in parse_definitions(contract())}


def test_the_contract_examples_are_valid_together() -> None:
    catalog = validate_batch({}, parse_definitions(contract()))
    assert sorted(catalog) == sorted([ENTITY_KEY, SOURCE_KEY, VIEW_KEY, ON_DEMAND_KEY])
    validate_catalog(catalog)


def expression_case(name: str, expression: str, message: str) -> tuple[str, Edits, str, str]:
    return (name, {(ON_DEMAND, "features", 0, "expression"): expression},
            f"definitions[{ON_DEMAND}].features[0].expression", message)


INVALID: list[tuple[str, Edits, str, str]] = [
    # (case, edits of the contract batch, problem path, words the message contains);
    # the problem belongs to the definition at the path's index.
    # references
    ("unknown entity", {(VIEW, "entities"): ["account"]},
     "definitions[2].entities[0]", "unknown entity 'account'"),
    ("unknown source", {(VIEW, "source"): "taps"},
     "definitions[2].source", "unknown source 'taps'"),
    ("an entity is not a source", {(VIEW, "source"): "user"}, "definitions[2].source",
     "unknown source 'user'"),
    ("unknown input view",
     {(ON_DEMAND, "inputs"): ["user_taps"], (ON_DEMAND, "features"): [
         {"name": "doubled", "type": "double", "expression": "cart_value * 2"}]},
     "definitions[3].inputs[0]", "unknown feature view 'user_taps'"),
    ("a source is not an input view",
     {(ON_DEMAND, "inputs"): ["clicks"], (ON_DEMAND, "features"): [
         {"name": "doubled", "type": "double", "expression": "cart_value * 2"}]},
     "definitions[3].inputs[0]", "unknown feature view 'clicks'"),
    # feature columns
    ("column not in the source", {(VIEW, "features", 1, "column"): "amt"},
     "definitions[2].features[1].column", "'amt' is not a field of source 'clicks'"),
    ("counted column not in the source", {(VIEW, "features", 0, "column"): "amt"},
     "definitions[2].features[0].column", "'amt' is not a field of source 'clicks'"),
    *[(f"{aggregation} of a string", {(VIEW, "features", 1, "aggregation"): aggregation,
                                      (VIEW, "features", 1, "column"): "page"},
       "definitions[2].features[1].column",
       f"'{aggregation}' needs a numeric column, but 'page' is string")
      for aggregation in ["sum", "avg", "stddev"]],
    ("stddev of a boolean", {(SOURCE, "schema", 4): IS_BOT,
                             (VIEW, "features", 1, "aggregation"): "stddev",
                             (VIEW, "features", 1, "column"): "is_bot"},
     "definitions[2].features[1].column",
     "'stddev' needs a numeric column, but 'is_bot' is boolean"),
    *[(f"{aggregation} of a boolean", {(SOURCE, "schema", 4): IS_BOT,
                                       (VIEW, "features", 1, "aggregation"): aggregation,
                                       (VIEW, "features", 1, "column"): "is_bot"},
       "definitions[2].features[1].column",
       f"'{aggregation}' needs an ordered column, but 'is_bot' is boolean")
      for aggregation in ["min", "max"]],
    # join keys
    ("join key not in the source", {(ENTITY, "join_keys"): ["account_id"]},
     "definitions[2].entities[0]",
     "join key 'account_id' of entity 'user' is not a field of source 'clicks'"),
    ("join key not required", {(SOURCE, "schema", 0, "required"): False},
     "definitions[2].entities[0]",
     "join key 'user_id' must be a required field of source 'clicks'"),
    # event time
    ("timestamp field missing", {(SOURCE, "timestamp_field"): "time"},
     "definitions[1].timestamp_field", "'time' is not a field of the schema"),
    ("epoch millis in a string", {(SOURCE, "schema", 3, "type"): "string"},
     "definitions[1].timestamp_field",
     "epoch_millis needs a field of type int, long, but 'ts' is string"),
    ("iso8601 in a long", {(SOURCE, "timestamp_format"): "iso8601"},
     "definitions[1].timestamp_field",
     "iso8601 needs a field of type string, timestamp, but 'ts' is long"),
    ("epoch seconds in a boolean", {(SOURCE, "timestamp_format"): "epoch_seconds",
                                    (SOURCE, "schema", 3, "type"): "boolean"},
     "definitions[1].timestamp_field",
     "epoch_seconds needs a field of type double, int, long, but 'ts' is boolean"),
    ("timestamp optional", {(SOURCE, "schema", 3, "required"): False},
     "definitions[1].timestamp_field",
     "field 'ts' must be required: an event without a time cannot be windowed"),
    ("timestamp required left unsaid", {(SOURCE, "schema", 3, "required"): DELETE},
     "definitions[1].timestamp_field", "field 'ts' must be required"),
    # on-demand expressions
    expression_case("unknown name", "amount_2h / clicks_1h",
                    "unknown name 'amount_2h' (known: amount_1h, amount_avg_1d, cart_value, "
                    "clicks_1h, last_page)"),
    expression_case("__import__", "__import__('os')", "function '__import__' is not allowed"),
    expression_case("eval", "eval('1')", "function 'eval' is not allowed; allowed functions:"),
    expression_case("attribute access", "cart_value.real", "attribute access is not allowed"),
    expression_case("method call", "last_page.upper()", "attribute access is not allowed"),
    expression_case("dunder name", "__builtins__", "names may not start with '_'"),
    expression_case("lambda", "lambda: 1", "lambda is not allowed"),
    expression_case("calling a call", "abs(1)(2)", "only functions named directly can be called"),
    expression_case("subscript", "last_page[0]", "subscripts (x[...]) are not allowed"),
    expression_case("syntax error", "amount_1h +", "syntax error"),
    expression_case("empty", " ", "expression is empty"),
    # on-demand names
    ("feature named like an input feature", {(ON_DEMAND, "features", 0, "name"): "clicks_1h"},
     "definitions[3].features[0].name", "'clicks_1h' clashes with feature view 'user_clicks'"),
    ("feature named like a request field", {(ON_DEMAND, "features", 0, "name"): "cart_value"},
     "definitions[3].features[0].name", "'cart_value' clashes with request_schema"),
    ("input feature named like a request field",
     {(ON_DEMAND, "request_schema", 1): {"name": "clicks_1h", "type": "long"}},
     "definitions[3].inputs[0]",
     "feature 'clicks_1h' of 'user_clicks' is ambiguous: also in request_schema"),
    ("the same feature in two inputs",
     {(4,): {"kind": "feature_view", "name": "user_clicks_2", "entities": ["user"],
             "source": "clicks",
             "features": [{"name": "clicks_1h", "aggregation": "count", "window": "2h"}]},
      (ON_DEMAND, "inputs"): ["user_clicks", "user_clicks_2"]},
     "definitions[3].inputs[1]",
     "feature 'clicks_1h' of 'user_clicks_2' is ambiguous: also in feature view 'user_clicks'"),
    # the batch itself
    ("the same definition twice", {(4,): contract()[ENTITY]},
     "definitions[4]", "defined more than once in one apply (first at definitions[0])"),
    ("the same definition twice, spelled differently", {(4,): contract()[SOURCE] | {
        "watermark_delay": "1m"}},
     "definitions[4]", "defined more than once in one apply (first at definitions[1])"),
    # bounds and allowed values: values of the field's type, in its range
    *[(case, {(SOURCE, "schema", 4): {"name": "score", "type": value_type, key: value}},
       f"definitions[1].schema[4].{where}", f"is not a value of type {value_type}: {expected}")
      for case, value_type, key, value, where, expected in [
          ("a string allowed in a long", "long", "allowed", [1, "abc"], "allowed[1]",
           f"expected an integer from {-2**63} to {2**63 - 1}"),
          ("a 400-digit min of a long", "long", "min", -10**400, "min", "expected an integer"),
          ("a max beyond int64", "long", "max", 2**63, "max", "expected an integer"),
          ("an allowed int beyond int32", "int", "allowed", [2**31], "allowed[0]",
           f"expected an integer from {-2**31} to {2**31 - 1}"),
          ("a fraction allowed in a long", "long", "allowed", [1.5], "allowed[0]",
           "expected an integer"),
          ("an integral float allowed in a long", "long", "allowed", [3.0], "allowed[0]",
           "expected an integer"),
          ("a boolean allowed in a long", "long", "allowed", [True], "allowed[0]",
           "expected an integer"),
          ("a fraction as min of an int", "int", "min", 0.5, "min", "expected an integer"),
          ("a 400-digit max of a double", "double", "max", 10**400, "max",
           "expected a finite number"),
          ("a 400-digit allowed float", "float", "allowed", [-10**400], "allowed[0]",
           "expected a finite number"),
          ("a string allowed in a double", "double", "allowed", ["1.5"], "allowed[0]",
           "expected a finite number"),
          ("a number allowed in a boolean", "boolean", "allowed", [1], "allowed[0]",
           "expected true or false"),
          ("a number allowed in a string", "string", "allowed", ["a", 5], "allowed[1]",
           "expected a string"),
      ]],
    ("a 400-digit max of a request field", {(ON_DEMAND, "request_schema", 0, "max"): 10**400},
     "definitions[3].request_schema[0].max",
     "is not a value of type double: expected a finite number"),
]


@pytest.mark.parametrize(("edits", "path", "message"),
                         [pytest.param(e, p, m, id=case) for case, e, p, m in INVALID])
def test_each_invalid_batch_names_the_definition_the_path_and_the_reason(
        edits: Edits, path: str, message: str) -> None:
    batch = edited(contract(), edits)
    index = int(path.removeprefix("definitions[").split("]")[0])
    problems = batch_problems(batch)
    assert [p.path for p in problems] == [path], problems
    assert message in problems[0].message
    assert problems[0].definition == f"{batch[index]['kind']}:{batch[index]['name']}"


@pytest.mark.parametrize(("value_type", "key", "value"), [
    ("long", "allowed", [-2**63, 0, 2**63 - 1]),
    ("int", "allowed", [-2**31, 2**31 - 1]),
    ("long", "min", -2**63),
    ("double", "allowed", [1, 2.5, -10**300]),
    ("float", "max", 10**300),
    ("boolean", "allowed", [True, False]),
])
def test_bounds_and_allowed_values_at_the_edges_of_the_types_range_are_accepted(
        value_type: str, key: str, value: object) -> None:
    batch = edited(contract(), {(SOURCE, "schema", 4): {"name": "score", "type": value_type,
                                                        key: value}})
    validate_batch({}, parse_definitions(batch))


def test_every_problem_of_every_definition_is_reported_with_its_definition() -> None:
    batch = edited(contract(), {
        (SOURCE, "schema", 3, "required"): False,
        (VIEW, "entities"): ["user", "account"],
        (VIEW, "features", 1, "column"): "page",
        (ON_DEMAND, "features", 1, "expression"): "cart_value.hex()",
    })
    assert sorted((p.definition or "", p.path) for p in batch_problems(batch)) == [
        (VIEW_KEY, "definitions[2].entities[1]"),
        (VIEW_KEY, "definitions[2].features[1].column"),
        (ON_DEMAND_KEY, "definitions[3].features[1].expression"),
        (SOURCE_KEY, "definitions[1].timestamp_field"),
    ]


def test_a_batch_path_other_than_definitions_is_used_as_given() -> None:
    batch = parse_definitions(edited(contract(), {(VIEW, "source"): "taps"}))
    with pytest.raises(InvalidDefinitionError) as raised:
        validate_batch({}, batch, path="repo")
    assert raised.value.problems == (Problem("repo[2].source", "unknown source 'taps'", VIEW_KEY),)


# --------------------------------------------------------------------------- the registered catalog


def test_dropping_a_column_a_registered_view_uses_is_refused_and_blamed_on_the_view() -> None:
    source = edited(contract()[SOURCE], {("schema", 1): DELETE})  # amount
    problems = batch_problems([source], registered_contract())
    assert problems == (
        Problem("features[1].column", "'amount' is not a field of source 'clicks'", VIEW_KEY),
        Problem("features[2].column", "'amount' is not a field of source 'clicks'", VIEW_KEY),
    )


def test_a_new_join_key_missing_from_a_registered_source_is_blamed_on_the_view() -> None:
    entity = edited(contract()[ENTITY], {("join_keys",): ["user_id", "tenant_id"]})
    assert batch_problems([entity], registered_contract()) == (Problem(
        "entities[0]", "join key 'tenant_id' of entity 'user' is not a field of source 'clicks'",
        VIEW_KEY),)


def test_removing_a_feature_an_on_demand_view_reads_is_refused_transitively() -> None:
    view = edited(contract()[VIEW], {("features", 1): DELETE})  # amount_1h
    problems = batch_problems([view], registered_contract())
    assert [(p.definition, p.path) for p in problems] == [
        (ON_DEMAND_KEY, "features[0].expression")]
    assert "unknown name 'amount_1h'" in problems[0].message


def test_problems_of_the_batch_keep_their_batch_path_next_to_dependants() -> None:
    source = edited(contract()[SOURCE], {("schema", 3, "required"): False,
                                         ("schema", 1): DELETE})
    problems = batch_problems([contract()[ENTITY], source], registered_contract())
    assert sorted((p.definition or "", p.path) for p in problems) == [
        (VIEW_KEY, "features[1].column"),
        (VIEW_KEY, "features[2].column"),
        (SOURCE_KEY, "definitions[1].timestamp_field"),
    ]


def test_a_change_that_keeps_every_dependant_valid_passes_and_returns_the_catalog() -> None:
    registered = registered_contract()
    source = edited(contract()[SOURCE], {("schema", 4): IS_BOT, ("watermark_delay",): "10s"})
    catalog = validate_batch(registered, parse_definitions([source]))
    assert catalog[SOURCE_KEY] == parse_definitions([source])[0]
    assert {k: v for k, v in catalog.items() if k != SOURCE_KEY} == {
        k: v for k, v in registered.items() if k != SOURCE_KEY}
    assert registered[SOURCE_KEY] == parse_definitions(contract())[SOURCE]  # not modified


def test_references_resolve_against_registered_definitions() -> None:
    view = edited(contract()[VIEW], {("name",): "user_clicks_daily",
                                     ("features",): [{"name": "clicks_1d",
                                                      "aggregation": "count", "window": "1d"}]})
    catalog = validate_batch(registered_contract(), parse_definitions([view]))
    assert "feature_view:user_clicks_daily" in catalog


def test_invalid_registered_definitions_the_change_does_not_touch_are_not_reported() -> None:
    registered = registered_contract()
    registered |= {definition_key(d): d for d in parse_definitions([edited(
        contract()[VIEW], {("name",): "orphan", ("source",): "gone"})])}
    merchant = {"kind": "entity", "name": "merchant", "join_keys": ["merchant_id"]}
    validate_batch(registered, parse_definitions([merchant]))
    with pytest.raises(InvalidDefinitionError, match="unknown source 'gone'"):
        validate_catalog(registered)


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(("index", "refs"), [
    (ENTITY, []),
    (SOURCE, []),
    (VIEW, [SOURCE_KEY, ENTITY_KEY]),
    (ON_DEMAND, [VIEW_KEY]),
])
def test_references(index: int, refs: list[str]) -> None:
    assert references(parse_definitions(contract())[index]) == refs


@pytest.mark.parametrize(("changed", "affected"), [
    ({ENTITY_KEY}, {ENTITY_KEY, VIEW_KEY, ON_DEMAND_KEY}),
    ({SOURCE_KEY}, {SOURCE_KEY, VIEW_KEY, ON_DEMAND_KEY}),
    ({VIEW_KEY}, {VIEW_KEY, ON_DEMAND_KEY}),
    ({ON_DEMAND_KEY}, {ON_DEMAND_KEY}),
    (set(), set()),
    ({"entity:merchant"}, {"entity:merchant"}),
])
def test_dependants_are_found_transitively(changed: set[str], affected: set[str]) -> None:
    assert dependants(registered_contract(), changed) == affected


def test_the_batch_replaces_its_namesakes_in_the_merged_catalog() -> None:
    registered = registered_contract()
    entity = parse_definitions([edited(contract()[ENTITY], {("description",): "Someone"})])[0]
    merged = merged_catalog(registered, [entity])
    assert merged[ENTITY_KEY] is entity
    assert registered[ENTITY_KEY] is not entity
    assert merged.keys() == registered.keys()


# --------------------------------------------------------------------------- scale

def test_validation_reads_each_definition_once_however_large_the_catalog(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation is linear: a change to a source read by many views reads the references of
    each registered definition once, and checks each affected definition once (timings:
    benchmarks/validation_scaling.py)."""
    views = [edited(contract()[VIEW], {("name",): f"view_{i}"}) for i in range(300)]
    # the on-demand view first, so that a pass over the catalog finds it before its input
    registered = {definition_key(d): d for d in parse_definitions([*contract()[::-1], *views])}
    counted: dict[str, int] = {"references": 0, "definition_problems": 0}

    def counting(name: str) -> Any:
        original = getattr(validation, name)

        def count(*args: Any) -> Any:
            counted[name] += 1
            return original(*args)

        return count

    for name in counted:
        monkeypatch.setattr(validation, name, counting(name))
    validate_batch(registered, parse_definitions([contract()[SOURCE]]))
    # the source, the 301 views reading it and the on-demand view reading one of them
    assert counted == {"references": len(registered), "definition_problems": 303}


def test_a_batch_over_the_limit_is_refused_before_it_is_parsed() -> None:
    service = RegistryService(MemoryRegistryStore())
    with pytest.raises(LimitExceededError) as raised:
        service.apply([{}] * (MAX_DEFINITIONS_PER_BATCH + 1), Provenance(actor="test"))
    assert raised.value.status == 413
    assert str(raised.value) == (f"{MAX_DEFINITIONS_PER_BATCH + 1} definitions in one batch: "
                                 f"the limit is {MAX_DEFINITIONS_PER_BATCH} definitions per "
                                 "batch")
    with pytest.raises(InvalidDefinitionError):  # at the limit, the elements are parsed
        service.apply([{}] * MAX_DEFINITIONS_PER_BATCH, Provenance(actor="test"))

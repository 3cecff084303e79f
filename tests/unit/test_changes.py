"""Diffs between versions, their change class, and what registering a definition would do."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.changes import (
    Action,
    ChangeClass,
    DiffEntry,
    RegisteredVersion,
    classify,
    diff_specs,
    plan_change,
    plan_changes,
)
from core.domain.definitions import (
    Definition,
    Kind,
    canonical_spec,
    definition_key,
    parse_definition,
    spec_hash,
)
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

METADATA, ADDITIVE, BREAKING = ChangeClass.METADATA, ChangeClass.ADDITIVE, ChangeClass.BREAKING
CLICKS_1D = {"name": "clicks_1d", "aggregation": "count", "window": "1d"}
COUNTRY = {"name": "country", "type": "string"}
VIEW_REORDERED = {("features", 0): contract()[VIEW]["features"][3],
                  ("features", 3): contract()[VIEW]["features"][0]}


def definition(index: int, edits: Edits | None = None) -> Definition:
    return parse_definition(edited(contract()[index], edits or {}))


def diff_of(index: int, edits: Edits) -> list[DiffEntry]:
    return diff_specs(canonical_spec(definition(index)), canonical_spec(definition(index, edits)))


CHANGES: list[tuple[str, int, Edits, ChangeClass, list[tuple[str, str]]]] = [
    # (case, example, edits, change class, [(diff path, op)])
    # feature views: what the job computes
    ("window", VIEW, {("features", 0, "window"): "2h"}, BREAKING,
     [("features.clicks_1h.window", "changed")]),
    ("slide added", VIEW, {("features", 1, "slide"): "30m"}, BREAKING,
     [("features.amount_1h.slide", "added")]),
    ("slide removed", VIEW, {("features", 2, "slide"): DELETE}, BREAKING,
     [("features.amount_avg_1d.slide", "removed")]),
    ("aggregation", VIEW, {("features", 1, "aggregation"): "avg"}, BREAKING,
     [("features.amount_1h.aggregation", "changed")]),
    ("column", VIEW, {("features", 3, "column"): "user_id"}, BREAKING,
     [("features.last_page.column", "changed")]),
    ("count gains a column", VIEW, {("features", 0, "column"): "amount"}, BREAKING,
     [("features.clicks_1h.column", "added")]),
    ("entities", VIEW, {("entities",): ["user", "session"]}, BREAKING, [("entities", "changed")]),
    ("source", VIEW, {("source",): "taps"}, BREAKING, [("source", "changed")]),
    ("online", VIEW, {("online",): False}, BREAKING, [("online", "changed")]),
    ("feature removed", VIEW, {("features", 3): DELETE}, BREAKING,
     [("features.last_page", "removed")]),
    ("feature renamed", VIEW, {("features", 0, "name"): "clicks_hourly"}, BREAKING,
     [("features.clicks_1h", "removed"), ("features.clicks_hourly", "added")]),
    ("feature added", VIEW, {("features", 4): CLICKS_1D}, ADDITIVE,
     [("features.clicks_1d", "added")]),
    ("feature named description added", VIEW,
     {("features", 4): {"name": "description", "aggregation": "last", "column": "page"}},
     ADDITIVE, [("features.description", "added")]),
    ("feature renamed to description", VIEW, {("features", 3, "name"): "description"}, BREAKING,
     [("features.last_page", "removed"), ("features.description", "added")]),
    ("feature named owner gets a window", VIEW,
     {("features", 3): {"name": "owner", "aggregation": "last", "column": "page"},
      ("features", 4): {"name": "owner_n", "aggregation": "count", "window": "1h"}},
     BREAKING, [("features.last_page", "removed"), ("features.owner", "added"),
                ("features.owner_n", "added")]),
    # feature views: metadata
    ("description", VIEW, {("description",): "Clicks"}, METADATA, [("description", "changed")]),
    ("description removed", VIEW, {("description",): DELETE}, METADATA,
     [("description", "removed")]),
    ("owner", VIEW, {("owner",): "team-ads"}, METADATA, [("owner", "changed")]),
    ("tag value", VIEW, {("tags", "tier"): "2"}, METADATA, [("tags.tier", "changed")]),
    ("tag added", VIEW, {("tags", "team"): "growth"}, METADATA, [("tags.team", "added")]),
    ("tags removed", VIEW, {("tags",): DELETE}, METADATA, [("tags", "removed")]),
    ("ttl", VIEW, {("ttl",): "4h"}, METADATA, [("ttl", "changed")]),
    ("ttl removed", VIEW, {("ttl",): DELETE}, METADATA, [("ttl", "removed")]),
    ("offline", VIEW, {("offline",): False}, METADATA, [("offline", "changed")]),
    ("drift thresholds set", VIEW, {("drift",): {"psi_alert": 0.3}}, METADATA,
     [("drift", "added")]),
    ("feature description", VIEW, {("features", 0, "description"): "Clicks"}, METADATA,
     [("features.clicks_1h.description", "added")]),
    ("features reordered", VIEW, VIEW_REORDERED, METADATA, [("features", "reordered")]),
    # feature views: mixtures take the strongest class
    ("feature added with metadata", VIEW, {("features", 4): CLICKS_1D, ("owner",): "team-ads"},
     ADDITIVE, [("features.clicks_1d", "added"), ("owner", "changed")]),
    ("feature added and a window changed", VIEW,
     {("features", 4): CLICKS_1D, ("features", 0, "window"): "2h"}, BREAKING,
     [("features.clicks_1h.window", "changed"), ("features.clicks_1d", "added")]),
    # sources
    ("optional field added", SOURCE, {("schema", 4): COUNTRY}, ADDITIVE,
     [("schema.country", "added")]),
    ("required field added", SOURCE, {("schema", 4): COUNTRY | {"required": True}}, BREAKING,
     [("schema.country", "added")]),
    ("field removed", SOURCE, {("schema", 2): DELETE}, BREAKING, [("schema.page", "removed")]),
    ("field made required", SOURCE, {("schema", 1, "required"): True}, BREAKING,
     [("schema.amount.required", "changed")]),
    ("field type", SOURCE, {("schema", 1, "type"): "float"}, BREAKING,
     [("schema.amount.type", "changed")]),
    ("field bound", SOURCE, {("schema", 1, "max"): 1000}, BREAKING,
     [("schema.amount.max", "added")]),
    ("allowed values", SOURCE, {("schema", 2, "allowed", 2): "checkout"}, BREAKING,
     [("schema.page.allowed", "changed")]),
    ("topic", SOURCE, {("topic",): "clicks_v2"}, BREAKING, [("topic", "changed")]),
    ("watermark", SOURCE, {("watermark_delay",): "10s"}, BREAKING,
     [("watermark_delay", "changed")]),
    ("timestamp format", SOURCE, {("timestamp_format",): "epoch_seconds"}, BREAKING,
     [("timestamp_format", "changed")]),
    ("field description", SOURCE, {("schema", 1, "description"): "EUR"}, METADATA,
     [("schema.amount.description", "added")]),
    ("source owner and tags", SOURCE, {("owner",): "team-data", ("tags",): {"pii": "no"}},
     METADATA, [("owner", "added"), ("tags", "added")]),
    ("schema reordered", SOURCE, {("schema", 0): contract()[SOURCE]["schema"][3],
                                  ("schema", 3): contract()[SOURCE]["schema"][0]},
     METADATA, [("schema", "reordered")]),
    # entities
    ("join keys", ENTITY, {("join_keys",): ["user_id", "tenant_id"]}, BREAKING,
     [("join_keys", "changed")]),
    ("entity description", ENTITY, {("description",): "Someone"}, METADATA,
     [("description", "changed")]),
    # on-demand views
    ("on-demand feature added", ON_DEMAND,
     {("features", 2): {"name": "double_cart", "type": "double", "expression": "cart_value * 2"}},
     ADDITIVE, [("features.double_cart", "added")]),
    ("expression", ON_DEMAND, {("features", 0, "expression"): "amount_1h"}, BREAKING,
     [("features.amount_per_click.expression", "changed")]),
    ("on-demand type", ON_DEMAND, {("features", 0, "type"): "float"}, BREAKING,
     [("features.amount_per_click.type", "changed")]),
    ("optional request field added", ON_DEMAND,
     {("request_schema", 1): {"name": "coupon", "type": "string"}}, ADDITIVE,
     [("request_schema.coupon", "added")]),
    ("required request field added", ON_DEMAND,
     {("request_schema", 1): {"name": "coupon", "type": "string", "required": True}}, BREAKING,
     [("request_schema.coupon", "added")]),
    ("inputs", ON_DEMAND, {("inputs",): ["user_clicks", "user_orders"]}, BREAKING,
     [("inputs", "changed")]),
    ("on-demand feature description", ON_DEMAND, {("features", 1, "description"): "ratio"},
     METADATA, [("features.cart_vs_avg.description", "added")]),
]


@pytest.mark.parametrize(("index", "edits", "change_class", "entries"),
                         [pytest.param(i, e, c, d, id=case) for case, i, e, c, d in CHANGES])
def test_each_change_has_its_diff_and_class(index: int, edits: Edits, change_class: ChangeClass,
                                            entries: list[tuple[str, str]]) -> None:
    diff = diff_of(index, edits)
    assert [(entry.path, entry.op) for entry in diff] == entries
    assert classify(definition(index).kind, diff) is change_class


def test_a_changed_value_records_both_sides() -> None:
    assert diff_of(VIEW, {("features", 0, "window"): "120m"}) == [
        DiffEntry("features.clicks_1h.window", "changed", "1h", "2h")]


def test_added_and_removed_items_record_the_whole_item() -> None:
    assert diff_of(VIEW, {("features", 4): CLICKS_1D, ("features", 3): DELETE}) == [
        DiffEntry("features.last_page", "removed",
                  {"name": "last_page", "aggregation": "last", "column": "page"}, None),
        DiffEntry("features.clicks_1d", "added", None, CLICKS_1D),
    ]


def test_a_reorder_records_the_names_in_both_orders() -> None:
    assert diff_of(VIEW, VIEW_REORDERED) == [DiffEntry(
        "features", "reordered",
        ["clicks_1h", "amount_1h", "amount_avg_1d", "last_page"],
        ["last_page", "amount_1h", "amount_avg_1d", "clicks_1h"])]


def test_equivalent_spellings_have_no_diff() -> None:
    assert diff_of(VIEW, {("features", 0, "window"): "60m", ("online",): DELETE}) == []


def test_entries_come_in_a_stable_order_kept_keys_first_then_new_ones() -> None:
    old = {"b": 1, "a": 1, "c": {"y": 1, "x": 1}, "d": 1}
    new = {"z": 1, "c": {"x": 2, "w": 1}, "a": 2, "b": 1}
    assert [(e.path, e.op) for e in diff_specs(old, new)] == [
        ("a", "changed"), ("c.x", "changed"), ("c.y", "removed"), ("c.w", "added"),
        ("d", "removed"), ("z", "added")]


@pytest.mark.parametrize(("entry", "shape"), [
    (DiffEntry("features.x", "added", None, {"name": "x"}),
     {"path": "features.x", "op": "added", "to": {"name": "x"}}),
    (DiffEntry("ttl", "removed", "2h", None), {"path": "ttl", "op": "removed", "from": "2h"}),
    (DiffEntry("online", "changed", True, False),
     {"path": "online", "op": "changed", "from": True, "to": False}),
    (DiffEntry("features", "reordered", ["a", "b"], ["b", "a"]),
     {"path": "features", "op": "reordered", "from": ["a", "b"], "to": ["b", "a"]}),
    (DiffEntry("description", "changed", None, "now set"),
     {"path": "description", "op": "changed", "from": None, "to": "now set"}),
])
def test_diff_entries_as_json(entry: DiffEntry, shape: dict[str, Any]) -> None:
    assert entry.to_json() == shape


@pytest.mark.parametrize(("kind", "path", "change_class"), [
    (Kind.FEATURE_VIEW, "ttl", METADATA),
    (Kind.FEATURE_VIEW, "offline", METADATA),
    (Kind.SOURCE, "offline", BREAKING),  # ttl and offline are metadata of feature views only
    (Kind.ON_DEMAND_FEATURE_VIEW, "ttl", BREAKING),
    (Kind.ENTITY, "description", METADATA),
])
def test_metadata_keys_depend_on_the_kind(kind: Kind, path: str,
                                          change_class: ChangeClass) -> None:
    assert classify(kind, [DiffEntry(path, "changed", 1, 2)]) is change_class


# --------------------------------------------------------------------------- planning


def registered(index: int, version: int, edits: Edits | None = None) -> RegisteredVersion:
    current = definition(index, edits)
    return RegisteredVersion(version, canonical_spec(current), spec_hash(current))


@pytest.mark.parametrize("index", [ENTITY, SOURCE, VIEW, ON_DEMAND])
def test_a_new_definition_is_created_at_version_one(index: int) -> None:
    new = definition(index)
    change = plan_change(new, None)
    assert (change.action, change.from_version, change.to_version) == (Action.CREATE, None, 1)
    assert change.change_class is None
    assert change.spec == canonical_spec(new) == contract()[index]
    assert change.spec_hash == spec_hash(new)
    assert change.key == definition_key(new)
    assert [entry.to_json() for entry in change.diff] == [
        {"path": key, "op": "added", "to": value} for key, value in change.spec.items()]


@pytest.mark.parametrize(("index", "edits"), [
    pytest.param(VIEW, {}, id="identical"),
    pytest.param(VIEW, {("features", 0, "window"): "60m", ("online",): DELETE}, id="respelled"),
    pytest.param(VIEW, {("drift",): {"psi_alert": 0.25, "min_samples": 1000}},
                 id="drift defaults spelled out"),
    pytest.param(SOURCE, {("schema", 1, "min"): 0.0}, id="min 0.0"),
    pytest.param(ENTITY, {("description",): "A user"}, id="entity"),
])
def test_an_equivalent_definition_is_unchanged(index: int, edits: Edits) -> None:
    change = plan_change(definition(index, edits), registered(index, 3))
    assert (change.action, change.from_version, change.to_version) == (Action.UNCHANGED, 3, 3)
    assert (change.change_class, change.diff) == (None, ())
    assert change.spec_hash == registered(index, 3).spec_hash


def test_a_changed_definition_is_a_new_version_with_its_diff_and_class() -> None:
    new = definition(VIEW, {("features", 0, "window"): "2h"})
    change = plan_change(new, registered(VIEW, 3))
    assert change.to_json() == {
        "kind": "feature_view", "name": "user_clicks", "action": "update",
        "from_version": 3, "to_version": 4, "change_class": "breaking",
        "diff": [{"path": "features.clicks_1h.window", "op": "changed", "from": "1h", "to": "2h"}],
    }
    assert (change.spec, change.spec_hash) == (canonical_spec(new), spec_hash(new))


def test_the_diff_is_taken_from_the_latest_registered_spec() -> None:
    latest = registered(VIEW, 7, {("features", 4): CLICKS_1D})
    change = plan_change(definition(VIEW, {("owner",): "team-ads"}), latest)
    assert (change.action, change.from_version, change.to_version) == (Action.UPDATE, 7, 8)
    assert change.change_class is BREAKING
    assert [(e.path, e.op) for e in change.diff] == [
        ("features.clicks_1d", "removed"), ("owner", "changed")]


def test_a_batch_is_planned_definition_by_definition_in_order() -> None:
    batch = [definition(ENTITY), definition(SOURCE, {("schema", 4): COUNTRY}),
             definition(VIEW, {("description",): "Clicks"}), definition(ON_DEMAND)]
    known = {"entity:user": registered(ENTITY, 2), "source:clicks": registered(SOURCE, 1),
             "feature_view:user_clicks": registered(VIEW, 5)}
    assert [(c.key, c.action, c.from_version, c.to_version, c.change_class)
            for c in plan_changes(batch, known)] == [
        ("entity:user", Action.UNCHANGED, 2, 2, None),
        ("source:clicks", Action.UPDATE, 1, 2, ADDITIVE),
        ("feature_view:user_clicks", Action.UPDATE, 5, 6, METADATA),
        ("on_demand_feature_view:user_ratios", Action.CREATE, None, 1, None),
    ]

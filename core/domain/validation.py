"""Rules that span definitions: references, column types, expression names.

Validation runs over the *catalog* a change would produce (everything registered, with the
batch's definitions replacing their namesakes), so a change that breaks a dependant — a
source losing a column a feature view aggregates — is refused as well.

It is linear in the size of the catalog and the batch: every lookup goes through a dict or
a set built once, and no list is searched inside a loop — a batch may hold
``limits.MAX_DEFINITIONS_PER_BATCH`` definitions and the registry far more.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from core.domain.definitions import (
    Aggregation,
    Definition,
    Entity,
    FeatureView,
    Field,
    Kind,
    OnDemandFeatureView,
    Source,
    TimestampFormat,
    ValueType,
    definition_key,
)
from core.domain.expressions import compile_expression
from core.errors import ExpressionError, InvalidDefinitionError, Problem
from core.values import INTEGER_RANGES, judge

Catalog = Mapping[str, Definition]
"""Definitions by ``kind:name``."""

_TIMESTAMP_TYPES = {
    TimestampFormat.EPOCH_MILLIS: {ValueType.LONG, ValueType.INT},
    TimestampFormat.EPOCH_SECONDS: {ValueType.LONG, ValueType.INT, ValueType.DOUBLE},
    TimestampFormat.ISO8601: {ValueType.STRING, ValueType.TIMESTAMP},
}

_NUMERIC_AGGREGATIONS = {Aggregation.SUM, Aggregation.AVG, Aggregation.STDDEV}
_ORDERED_AGGREGATIONS = {Aggregation.MIN, Aggregation.MAX}


def merged_catalog(registered: Catalog, batch: Iterable[Definition]) -> dict[str, Definition]:
    catalog = dict(registered)
    catalog.update({definition_key(d): d for d in batch})
    return catalog


def validate_catalog(catalog: Catalog, only: Iterable[str] | None = None) -> None:
    """Raise InvalidDefinitionError with every problem of the definitions keyed in ``only``
    (default: all).  Pass the batch's keys plus their dependants to check one change."""
    keys = sorted(catalog) if only is None else sorted(set(only))
    problems = [p for key in keys for p in definition_problems(catalog[key], catalog)]
    if problems:
        raise InvalidDefinitionError(problems)


def dependants(catalog: Catalog, keys: Iterable[str]) -> set[str]:
    """``keys`` plus every definition that references one of them, transitively."""
    referrers: dict[str, list[str]] = {}
    for key, definition in catalog.items():
        for ref in references(definition):
            referrers.setdefault(ref, []).append(key)
    result = set(keys)
    pending = list(result)
    while pending:
        for referrer in referrers.get(pending.pop(), ()):
            if referrer not in result:
                result.add(referrer)
                pending.append(referrer)
    return result


def references(definition: Definition) -> list[str]:
    if isinstance(definition, FeatureView):
        return [f"{Kind.SOURCE}:{definition.source}",
                *(f"{Kind.ENTITY}:{e}" for e in definition.entities)]
    if isinstance(definition, OnDemandFeatureView):
        return [f"{Kind.FEATURE_VIEW}:{name}" for name in definition.inputs]
    return []


def definition_problems(definition: Definition, catalog: Catalog) -> list[Problem]:
    label = definition_key(definition)
    if isinstance(definition, Source):
        found = [*_source_problems(definition), *_field_value_problems(definition.schema,
                                                                        "schema")]
    elif isinstance(definition, FeatureView):
        found = _feature_view_problems(definition, catalog)
    elif isinstance(definition, OnDemandFeatureView):
        found = [*_on_demand_problems(definition, catalog),
                 *_field_value_problems(definition.request_schema, "request_schema")]
    else:
        found = []
    return [Problem(path, message, label) for path, message in found]


def _source_problems(source: Source) -> list[tuple[str, str]]:
    timestamp = source.field_named(source.timestamp_field)
    if timestamp is None:
        return [("timestamp_field", f"{source.timestamp_field!r} is not a field of the schema")]
    problems = []
    if timestamp.type not in _TIMESTAMP_TYPES[source.timestamp_format]:
        accepted = ", ".join(sorted(_TIMESTAMP_TYPES[source.timestamp_format]))
        problems.append(("timestamp_field",
                         f"{source.timestamp_format} needs a field of type {accepted}, "
                         f"but {timestamp.name!r} is {timestamp.type}"))
    if not timestamp.required:
        problems.append(("timestamp_field", f"field {timestamp.name!r} must be required: "
                                            "an event without a time cannot be windowed"))
    return problems


_EXPECTED = {
    ValueType.STRING: "a string", ValueType.BOOLEAN: "true or false",
    **{t: f"an integer from {low} to {high}" for t, (low, high) in INTEGER_RANGES.items()},
    ValueType.DOUBLE: "a finite number", ValueType.FLOAT: "a finite number",
    ValueType.TIMESTAMP: "epoch milliseconds or a date-time string",
}


def _field_value_problems(fields: Sequence[Field], key: str) -> list[tuple[str, str]]:
    """Every ``allowed`` value and bound must be a value of its field's type, judged as an
    event's value is (:func:`core.values.judge`): the contract check compares them with values
    of that type, and the streaming job writes them as literals of it."""
    problems = []
    for index, field in enumerate(fields):
        values: dict[str, object] = {"min": field.min, "max": field.max}
        values.update({f"allowed[{i}]": v for i, v in enumerate(field.allowed or ())})
        for where, value in values.items():
            if value is None or (where in {"min", "max"} and not field.type.is_numeric):
                continue  # bounds of other types are refused with the definition itself
            judged = judge(field.type, value)
            if judged is None or (isinstance(judged, float) and not math.isfinite(judged)):
                problems.append((f"{key}[{index}].{where}",
                                 f"{value!r} is not a value of type {field.type}: expected "
                                 f"{_EXPECTED[field.type]}"))
    return problems


def _feature_view_problems(view: FeatureView, catalog: Catalog) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    source = catalog.get(f"{Kind.SOURCE}:{view.source}")
    if not isinstance(source, Source):
        problems.append(("source", f"unknown source {view.source!r}"))
    for index, entity_name in enumerate(view.entities):
        entity = catalog.get(f"{Kind.ENTITY}:{entity_name}")
        if not isinstance(entity, Entity):
            problems.append((f"entities[{index}]", f"unknown entity {entity_name!r}"))
        elif isinstance(source, Source):
            for key in entity.join_keys:
                field = source.field_named(key)
                if field is None:
                    problems.append((f"entities[{index}]", f"join key {key!r} of entity "
                                     f"{entity_name!r} is not a field of source {source.name!r}"))
                elif not field.required:
                    problems.append((f"entities[{index}]", f"join key {key!r} must be a "
                                     f"required field of source {source.name!r}"))
    for index, feature in enumerate(view.features):
        path = f"features[{index}]"
        if not isinstance(source, Source) or feature.column is None:
            continue
        column = source.field_named(feature.column)
        if column is None:
            problems.append((f"{path}.column", f"{feature.column!r} is not a field of source "
                                               f"{source.name!r}"))
        elif feature.aggregation in _NUMERIC_AGGREGATIONS and not column.type.is_numeric:
            problems.append((f"{path}.column", f"'{feature.aggregation}' needs a numeric column, "
                                               f"but {column.name!r} is {column.type}"))
        elif feature.aggregation in _ORDERED_AGGREGATIONS and column.type is ValueType.BOOLEAN:
            problems.append((f"{path}.column", f"'{feature.aggregation}' needs an ordered "
                                               f"column, but {column.name!r} is boolean"))
    return problems


def _on_demand_problems(view: OnDemandFeatureView,
                        catalog: Catalog) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    owners: dict[str, str] = {f.name: "request_schema" for f in view.request_schema}
    for index, input_name in enumerate(view.inputs):
        source_view = catalog.get(f"{Kind.FEATURE_VIEW}:{input_name}")
        if not isinstance(source_view, FeatureView):
            problems.append((f"inputs[{index}]", f"unknown feature view {input_name!r}"))
            continue
        for input_feature in source_view.features:
            if input_feature.name in owners:
                problems.append((f"inputs[{index}]", f"feature {input_feature.name!r} of "
                                 f"{input_name!r} is ambiguous: also in "
                                 f"{owners[input_feature.name]}"))
            owners[input_feature.name] = f"feature view {input_name!r}"
    for index, feature in enumerate(view.features):
        if feature.name in owners:
            problems.append((f"features[{index}].name",
                             f"{feature.name!r} clashes with {owners[feature.name]}"))
        try:
            compile_expression(feature.expression, owners)
        except ExpressionError as error:
            problems.append((f"features[{index}].expression", str(error)))
    return problems


def validate_batch(registered: Catalog, batch: list[Definition],
                   path: str = "definitions") -> dict[str, Definition]:
    """Validate ``batch`` (the elements of the array at ``path``) against what is registered;
    return the resulting catalog."""
    keys = [definition_key(d) for d in batch]
    index: dict[str, int] = {}  # each key's first place in the batch
    repeated = []
    for i, key in enumerate(keys):
        first = index.setdefault(key, i)
        if first != i:
            repeated.append(Problem(f"{path}[{i}]", f"defined more than once in one apply "
                                                    f"(first at {path}[{first}])", key))
    if repeated:
        raise InvalidDefinitionError(repeated)
    catalog = merged_catalog(registered, batch)
    try:
        validate_catalog(catalog, dependants(catalog, keys))
    except InvalidDefinitionError as error:
        # Address problems of the batch's own definitions by their place in the batch.
        raise InvalidDefinitionError([
            Problem(f"{path}[{index[p.definition]}].{p.path}", p.message, p.definition)
            if p.definition in index else p for p in error.problems
        ]) from None
    return catalog

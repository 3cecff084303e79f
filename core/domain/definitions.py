"""Feature definitions: parsing from canonical JSON, canonical form and spec hash.

A definition is an immutable value.  :func:`parse_definition` turns one JSON object into one,
collecting *every* problem (JSON path + reason) instead of stopping at the first;
:func:`canonical_spec` turns it back into the one JSON form the registry stores and hashes,
so that formatting, key order and equivalent spellings (``60m`` vs ``1h``) never matter.
Cross-definition rules (references, column types) live in :mod:`core.domain.validation`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, TypeVar

from core.domain import limits
from core.domain.durations import format_duration, parse_duration
from core.errors import InvalidDefinitionError, Problem

NAME = r"[a-z][a-z0-9_]{0,62}"
"""A name of a definition, feature or field (and so of every Redis key and topic part)."""
NAME_PATTERN = re.compile(rf"^{NAME}$")

STREAM_COLUMNS = frozenset({"event_time", "event_ms", "window_start", "window_end",
                            "window_time"})
"""Columns the streaming job adds next to a source's fields (its event time, and the window
columns of Flink's window functions): a source field by one of these names would clash."""


class Kind(StrEnum):
    ENTITY = "entity"
    SOURCE = "source"
    FEATURE_VIEW = "feature_view"
    ON_DEMAND_FEATURE_VIEW = "on_demand_feature_view"


class ValueType(StrEnum):
    STRING = "string"
    LONG = "long"
    INT = "int"
    DOUBLE = "double"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"

    @property
    def is_numeric(self) -> bool:
        return self in {ValueType.LONG, ValueType.INT, ValueType.DOUBLE, ValueType.FLOAT}


class Aggregation(StrEnum):
    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    STDDEV = "stddev"
    LAST = "last"


class TimestampFormat(StrEnum):
    EPOCH_MILLIS = "epoch_millis"
    EPOCH_SECONDS = "epoch_seconds"
    ISO8601 = "iso8601"


Scalar = str | int | float | bool


@dataclass(frozen=True)
class Field:
    """One field of a source's data contract or of an on-demand view's request schema."""

    name: str
    type: ValueType
    required: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[Scalar, ...] | None = None
    description: str | None = None


@dataclass(frozen=True)
class Entity:
    name: str
    join_keys: tuple[str, ...]
    description: str | None = None
    kind: Kind = field(default=Kind.ENTITY, init=False)


@dataclass(frozen=True)
class Source:
    name: str
    topic: str
    timestamp_field: str
    schema: tuple[Field, ...]
    format: str = "json"
    timestamp_format: TimestampFormat = TimestampFormat.EPOCH_MILLIS
    watermark_delay_ms: int = 5_000
    description: str | None = None
    owner: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    kind: Kind = field(default=Kind.SOURCE, init=False)

    def field_named(self, name: str) -> Field | None:
        return self._fields_by_name.get(name)

    @cached_property
    def _fields_by_name(self) -> dict[str, Field]:
        # Built once per source: validation looks up every column and join key of every view.
        return {f.name: f for f in self.schema}


@dataclass(frozen=True)
class Feature:
    """A windowed aggregate (or the latest value, for ``last``) of one source column."""

    name: str
    aggregation: Aggregation
    column: str | None = None
    window_ms: int | None = None
    slide_ms: int | None = None
    description: str | None = None

    @property
    def window_group(self) -> tuple[int, int] | None:
        """(window, slide) of the window this feature is computed in; None for ``last``."""
        if self.window_ms is None:
            return None
        return (self.window_ms, self.slide_ms or self.window_ms)


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature's drift metric breaches (core/domain/drift.py): a view's ``drift``
    block, each key defaulting to the value here.  Every threshold is raised to what chance
    alone exceeds with probability ``alpha`` at the sample sizes compared, when that is
    higher."""

    psi_warn: float = 0.1
    psi_alert: float = 0.25
    """0.1 and 0.25: the customary PSI levels of a moderate and a significant shift."""
    js_alert: float = 0.1
    """A JS distance of 0.1 is a JS divergence of 0.01 bit, about a PSI of 0.055: where the
    deciles of a normal feature shifted by a quarter of a standard deviation put it."""
    mean_shift_alert: float = 0.2
    """0.2 baseline standard deviations: a shift of 0.25 exceeds it by over three standard
    errors in a 5,000-value window (0.015 there), while PSI over deciles grows only as the
    square of a shift (0.06 at 0.25) and stays under its own thresholds."""
    null_rate_alert: float = 0.05
    """Five points of null rate."""
    min_samples: int = 1_000
    """Fewer values (rows, for the null rate) than this are not judged."""
    alpha: float = 0.001
    """The chance that a metric breaches without drift where its critical value, not its
    threshold, sets the bar (small samples, many bins); an alert then needs two such breaches
    among three evaluations."""

    def __post_init__(self) -> None:
        if not 0 < self.psi_warn <= self.psi_alert:
            raise ValueError(f"psi_warn ({self.psi_warn}) must be positive and at most "
                             f"psi_alert ({self.psi_alert})")
        for name in ("js_alert", "mean_shift_alert", "null_rate_alert"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.js_alert > 1:
            raise ValueError(f"js_alert must be at most 1 (the largest JS distance), not "
                             f"{self.js_alert}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, not {self.min_samples}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie strictly between 0 and 1, not {self.alpha}")

    def to_json(self) -> dict[str, float]:
        """The thresholds that differ from the defaults: spelling a default out changes
        nothing."""
        return {name: value for name, value in vars(self).items()
                if value != _DEFAULT_THRESHOLDS[name]}


_DEFAULT_THRESHOLDS: dict[str, float] = vars(DriftThresholds()).copy()


@dataclass(frozen=True)
class FeatureView:
    name: str
    entities: tuple[str, ...]
    source: str
    features: tuple[Feature, ...]
    ttl_ms: int | None = None
    online: bool = True
    offline: bool = True
    owner: str | None = None
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    drift: DriftThresholds = field(default_factory=DriftThresholds)
    """When the drift monitor alerts on this view's features (a metadata change)."""
    kind: Kind = field(default=Kind.FEATURE_VIEW, init=False)

    def feature_named(self, name: str) -> Feature | None:
        return self._features_by_name.get(name)

    @cached_property
    def _features_by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}


@dataclass(frozen=True)
class OnDemandFeature:
    name: str
    type: ValueType
    expression: str
    description: str | None = None


@dataclass(frozen=True)
class OnDemandFeatureView:
    name: str
    inputs: tuple[str, ...]
    features: tuple[OnDemandFeature, ...]
    request_schema: tuple[Field, ...] = ()
    owner: str | None = None
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    kind: Kind = field(default=Kind.ON_DEMAND_FEATURE_VIEW, init=False)


Definition = Entity | Source | FeatureView | OnDemandFeatureView


def definition_key(definition: Definition) -> str:
    """``kind:name``, the identity of a definition and the name of its event stream."""
    return f"{definition.kind}:{definition.name}"


# --------------------------------------------------------------------------- parsing

T = TypeVar("T")
_MISSING = object()


class _ObjectReader:
    """Reads keys of one JSON object, recording a :class:`Problem` for each bad or unknown key."""

    def __init__(self, value: object, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        self.valid = isinstance(value, dict)
        self.data: dict[str, Any] = value if isinstance(value, dict) else {}
        self.read: set[str] = set()
        if not self.valid:
            self.fail("", f"must be an object, got {json_type_name(value)}")

    def fail(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.join(key), message))

    def join(self, key: str) -> str:
        if not key:
            return self.path or "$"
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, parse: Callable[[object, str], T], default: object = _MISSING) -> Any:
        """The parsed value of ``key``; ``default`` when absent (absent + no default = problem)."""
        self.read.add(key)
        if key not in self.data or (self.data[key] is None and default is not _MISSING):
            if default is _MISSING:
                self.fail(key, "is required")
            return None if default is _MISSING else default
        try:
            return parse(self.data[key], self.join(key))
        except _ParseError as error:
            self.problems.extend(error.problems)
        except ValueError as error:
            self.fail(key, str(error))
        return None if default is _MISSING else default

    def finish(self) -> bool:
        """Report unknown keys; True when this object produced no problem."""
        known = ", ".join(sorted(self.read))
        for key in sorted(set(self.data) - self.read):
            self.fail(key, f"unknown key (known keys: {known})")
        return self.valid


class _ParseError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems


def json_type_name(value: object) -> str:
    """The JSON name of a parsed value's kind, for messages: ``number`` for 3.0."""
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def _string(value: object, _path: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {json_type_name(value)}")
    return value


def _bounded_string(limit: int, what: str) -> Callable[[object, str], str]:
    def parse(value: object, path: str) -> str:
        text = _string(value, path)
        if len(text) > limit:
            raise ValueError(f"must be at most {limit} characters (the limit for {what})")
        return text

    return parse


_text = _bounded_string(limits.MAX_TEXT_CHARS, "a description or an owner")
_expression = _bounded_string(limits.MAX_EXPRESSION_CHARS, "an expression")


def _name(value: object, path: str) -> str:
    name = _string(value, path)
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid name: use 1-63 lowercase letters, digits or '_', "
            "starting with a letter"
        )
    return name


def _boolean(value: object, _path: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {json_type_name(value)}")
    return value


def _number(value: object, _path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {json_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    # One spelling per number (0.0 -> 0), so that the spec hash does not depend on it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _duration(value: object, path: str) -> int:
    return parse_duration(_string(value, path))


def _enum(enum: type[StrEnum]) -> Callable[[object, str], Any]:
    def parse(value: object, path: str) -> StrEnum:
        text = _string(value, path)
        try:
            return enum(text)
        except ValueError:
            choices = ", ".join(member.value for member in enum)
            raise ValueError(f"{text!r} is not one of: {choices}") from None

    return parse


def _list_of(item: Callable[[object, str], T], limit: tuple[int, str], *, unique: bool = False,
             non_empty: bool = False) -> Callable[[object, str], tuple[T, ...]]:
    """A JSON array of ``item``s; ``limit`` is its most items and what that limit is called."""
    most, what = limit

    def parse(value: object, path: str) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise ValueError(f"must be an array, got {json_type_name(value)}")
        if non_empty and not value:
            raise ValueError("must not be empty")
        if len(value) > most:  # before parsing a single item of an oversized list
            raise ValueError(f"has {len(value)} items: the limit is {most} {what}")
        problems: list[Problem] = []
        items: list[T] = []
        for index, element in enumerate(value):
            item_path = f"{path}[{index}]"
            try:
                items.append(item(element, item_path))
            except _ParseError as error:
                problems.extend(error.problems)
            except ValueError as error:
                problems.append(Problem(item_path, str(error)))
        if problems:
            raise _ParseError(problems)
        if unique:
            _reject_duplicates([getattr(i, "name", i) for i in items], path)
        return tuple(items)

    return parse


def _reject_duplicates(names: list[Any], path: str) -> None:
    duplicates = sorted({str(n) for n, count in Counter(names).items() if count > 1})
    if duplicates:
        raise ValueError(f"duplicate names: {', '.join(duplicates)}")


def _tags(value: object, _path: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("must be an object of string keys to string values")
    if len(value) > limits.MAX_TAGS:
        raise ValueError(f"has {len(value)} tags: the limit is {limits.MAX_TAGS} tags")
    longest = max((len(text) for pair in value.items() for text in pair), default=0)
    if longest > limits.MAX_TAG_CHARS:
        raise ValueError(f"has a key or value of {longest} characters: the limit is "
                         f"{limits.MAX_TAG_CHARS} characters per tag key or value")
    return dict(value)


def _nested(build: Callable[[_ObjectReader], T]) -> Callable[[object, str], T]:
    """Parse a nested object with its own reader; its problems bubble up with full paths."""

    def parse(value: object, path: str) -> T:
        problems: list[Problem] = []
        reader = _ObjectReader(value, path, problems)
        built = build(reader) if reader.valid else None
        reader.finish()
        if problems or built is None:
            raise _ParseError(problems)
        return built

    return parse


_allowed_string = _bounded_string(limits.MAX_ALLOWED_VALUE_CHARS, "an allowed value")


def _allowed_value(value: object, path: str) -> Scalar:
    if not isinstance(value, str | int | float | bool):
        raise ValueError(f"must be a string, number or boolean, got {json_type_name(value)}")
    return _allowed_string(value, path) if isinstance(value, str) else value


_FIELDS = (limits.MAX_SCHEMA_FIELDS, "fields per schema")
_FEATURES = (limits.MAX_FEATURES_PER_VIEW, "features per view")
_NAMES = (limits.MAX_REFERENCES, "names per list")


def _build_field(r: _ObjectReader) -> Field:
    return Field(
        name=r.get("name", _name),
        type=r.get("type", _enum(ValueType)),
        required=r.get("required", _boolean, False),
        min=r.get("min", _number, None),
        max=r.get("max", _number, None),
        allowed=r.get("allowed", _list_of(_allowed_value, (limits.MAX_ALLOWED_VALUES,
                                                           "allowed values"), non_empty=True),
                      None),
        description=r.get("description", _text, None),
    )


def _build_feature(r: _ObjectReader) -> Feature:
    return Feature(
        name=r.get("name", _name),
        aggregation=r.get("aggregation", _enum(Aggregation)),
        column=r.get("column", _name, None),
        window_ms=r.get("window", _duration, None),
        slide_ms=r.get("slide", _duration, None),
        description=r.get("description", _text, None),
    )


def _build_on_demand_feature(r: _ObjectReader) -> OnDemandFeature:
    return OnDemandFeature(
        name=r.get("name", _name),
        type=r.get("type", _enum(ValueType)),
        expression=r.get("expression", _expression),
        description=r.get("description", _text, None),
    )


def _build_entity(r: _ObjectReader) -> Entity:
    return Entity(
        name=r.get("name", _name),
        join_keys=r.get("join_keys", _list_of(_name, _NAMES, unique=True, non_empty=True)),
        description=r.get("description", _text, None),
    )


def _build_source(r: _ObjectReader) -> Source:
    return Source(
        name=r.get("name", _name),
        topic=r.get("topic", _topic),
        format=r.get("format", _source_format, "json"),
        timestamp_field=r.get("timestamp_field", _name),
        timestamp_format=r.get("timestamp_format", _enum(TimestampFormat),
                               TimestampFormat.EPOCH_MILLIS),
        watermark_delay_ms=r.get("watermark_delay", _duration, 5_000),
        schema=r.get("schema", _list_of(_nested(_build_field), _FIELDS, unique=True,
                                        non_empty=True)),
        description=r.get("description", _text, None),
        owner=r.get("owner", _text, None),
        tags=r.get("tags", _tags, {}),
    )


def _whole_number(value: object, _path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number, got {json_type_name(value)}")
    return value


def _build_drift(r: _ObjectReader) -> DriftThresholds:
    given = {name: r.get(name, _whole_number if isinstance(default, int) else _number, default)
             for name, default in _DEFAULT_THRESHOLDS.items()}
    try:
        return DriftThresholds(**given)
    except ValueError as error:
        r.fail("", str(error))
        return DriftThresholds()


def _build_feature_view(r: _ObjectReader) -> FeatureView:
    return FeatureView(
        name=r.get("name", _name),
        entities=r.get("entities", _list_of(_name, _NAMES, unique=True, non_empty=True)),
        source=r.get("source", _name),
        features=r.get("features", _list_of(_nested(_build_feature), _FEATURES, unique=True,
                                            non_empty=True)),
        ttl_ms=r.get("ttl", _duration, None),
        online=r.get("online", _boolean, True),
        offline=r.get("offline", _boolean, True),
        owner=r.get("owner", _text, None),
        description=r.get("description", _text, None),
        tags=r.get("tags", _tags, {}),
        drift=r.get("drift", _nested(_build_drift), DriftThresholds()),
    )


def _build_on_demand_feature_view(r: _ObjectReader) -> OnDemandFeatureView:
    return OnDemandFeatureView(
        name=r.get("name", _name),
        inputs=r.get("inputs", _list_of(_name, _NAMES, unique=True, non_empty=True)),
        request_schema=r.get("request_schema", _list_of(_nested(_build_field), _FIELDS,
                                                        unique=True), ()),
        features=r.get("features", _list_of(_nested(_build_on_demand_feature), _FEATURES,
                                            unique=True, non_empty=True)),
        owner=r.get("owner", _text, None),
        description=r.get("description", _text, None),
        tags=r.get("tags", _tags, {}),
    )


_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _topic(value: object, path: str) -> str:
    topic = _string(value, path)
    if not _TOPIC.fullmatch(topic) or topic in {".", ".."}:
        raise ValueError(f"{topic!r} is not a valid Kafka topic name (letters, digits, . _ -)")
    return topic


def _source_format(value: object, path: str) -> str:
    text = _string(value, path)
    if text != "json":
        raise ValueError(f"{text!r} is not a supported format: only 'json'")
    return text


_BUILDERS: dict[Kind, Callable[[_ObjectReader], Definition]] = {
    Kind.ENTITY: _build_entity,
    Kind.SOURCE: _build_source,
    Kind.FEATURE_VIEW: _build_feature_view,
    Kind.ON_DEMAND_FEATURE_VIEW: _build_on_demand_feature_view,
}


def parse_definition(value: object, path: str = "") -> Definition:
    """One definition from its JSON object; raises InvalidDefinitionError listing every problem.

    Only the object's own shape is checked here (keys, types, names, durations, the rules
    local to one feature); references to other definitions are checked by validation.
    """
    problems: list[Problem] = []
    reader = _ObjectReader(value, path, problems)
    definition: Definition | None = None
    if reader.valid:
        kind = reader.get("kind", _enum(Kind))
        if kind is not None:
            definition = _BUILDERS[kind](reader)
            reader.finish()  # which keys are unknown depends on the kind
    if definition is not None and not problems:
        problems.extend(local_problems(definition, path))
    if problems or definition is None:
        label = _label(value)
        raise InvalidDefinitionError([Problem(p.path, p.message, label) for p in problems])
    return definition


def _label(value: object) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("kind"), str):
        return f"{value['kind']}:{value.get('name', '?')}"
    return None


def local_problems(definition: Definition, path: str = "") -> list[Problem]:
    """Rules that need only the definition itself (windows, reserved names, bounds), with
    paths under ``path``.  Parsing applies them; the compiler checks what it is given again."""
    prefix = f"{path}." if path else ""
    problems: list[Problem] = []
    if isinstance(definition, FeatureView):
        for index, feature in enumerate(definition.features):
            problems.extend(_feature_problems(feature, f"{prefix}features[{index}]"))
    if isinstance(definition, Source):
        problems.extend(_source_local_problems(definition, prefix))
    if isinstance(definition, Source | OnDemandFeatureView):
        fields = definition.schema if isinstance(definition, Source) else definition.request_schema
        key = "schema" if isinstance(definition, Source) else "request_schema"
        for index, f in enumerate(fields):
            if f.min is not None and f.max is not None and f.min > f.max:
                problems.append(Problem(f"{prefix}{key}[{index}].min", "is greater than max"))
            if (f.min is not None or f.max is not None) and not f.type.is_numeric:
                bound = "min" if f.min is not None else "max"
                problems.append(Problem(f"{prefix}{key}[{index}].{bound}",
                                        f"min/max need a numeric type, not {f.type}"))
    return problems


def _source_local_problems(source: Source, prefix: str) -> list[Problem]:
    problems = _duration_problems({"watermark_delay": source.watermark_delay_ms}, prefix)
    for index, f in enumerate(source.schema):
        if f.name in STREAM_COLUMNS:
            reserved = ", ".join(sorted(STREAM_COLUMNS))
            problems.append(Problem(f"{prefix}schema[{index}].name",
                                    f"{f.name!r} is reserved for the streaming job's own "
                                    f"columns ({reserved})"))
        if f.allowed is not None and f.type is ValueType.TIMESTAMP:
            # A timestamp has many spellings of one instant: comparing texts would refuse
            # events the field's type accepts.
            problems.append(Problem(f"{prefix}schema[{index}].allowed",
                                    "does not apply to a timestamp field"))
    return problems


def _duration_problems(durations: Mapping[str, int | None], prefix: str) -> list[Problem]:
    """Durations the streaming job writes as Flink intervals, which hold under 100 days."""
    bound = limits.STREAMED_DURATION_BOUND_MS
    return [Problem(f"{prefix}{key}", f"{format_duration(millis)} is too long: it must be "
                                      f"shorter than {format_duration(bound)} (Flink intervals "
                                      "hold at most 99 days)")
            for key, millis in durations.items() if millis is not None and millis >= bound]


def _feature_problems(feature: Feature, path: str) -> list[Problem]:
    problems = _duration_problems({"window": feature.window_ms, "slide": feature.slide_ms},
                                  f"{path}.")
    if feature.aggregation is Aggregation.LAST:
        if feature.window_ms is not None or feature.slide_ms is not None:
            key = "window" if feature.window_ms is not None else "slide"
            problems.append(Problem(f"{path}.{key}",
                                    "'last' is the latest value by event time and takes no window"))
    elif feature.window_ms is None:
        problems.append(Problem(f"{path}.window", f"is required for '{feature.aggregation}'"))
    if feature.aggregation is not Aggregation.COUNT and feature.column is None:
        problems.append(Problem(f"{path}.column", f"is required for '{feature.aggregation}'"))
    if feature.slide_ms is not None and feature.window_ms is not None:
        if feature.slide_ms > feature.window_ms:
            problems.append(Problem(f"{path}.slide", "must not be longer than the window"))
        elif feature.window_ms % feature.slide_ms:
            problems.append(Problem(
                f"{path}.slide",
                f"{format_duration(feature.slide_ms)} does not divide the window "
                f"{format_duration(feature.window_ms)}",
            ))
    return problems


def parse_definitions(values: Sequence[object], path: str = "definitions") -> list[Definition]:
    """Parse a batch; problems of every element are reported together, paths ``path[i]...``."""
    problems: list[Problem] = []
    parsed: list[Definition] = []
    for index, value in enumerate(values):
        try:
            parsed.append(parse_definition(value, f"{path}[{index}]"))
        except InvalidDefinitionError as error:
            problems.extend(error.problems)
    if problems:
        raise InvalidDefinitionError(problems)
    return parsed


# --------------------------------------------------------------------------- canonical form

def _drop_empty(obj: dict[str, Any]) -> dict[str, Any]:
    """Omit unset optional keys so that spelling a default out changes nothing."""
    return {k: v for k, v in obj.items() if v is not None and v != {}}


def _field_spec(f: Field) -> dict[str, Any]:
    return _drop_empty({
        "name": f.name, "type": f.type.value, "required": f.required, "min": f.min,
        "max": f.max, "allowed": list(f.allowed) if f.allowed is not None else None,
        "description": f.description,
    })


def _optional_duration(millis: int | None) -> str | None:
    return None if millis is None else format_duration(millis)


def canonical_spec(definition: Definition) -> dict[str, Any]:
    """The one JSON form of ``definition``: defaults explicit, durations canonical, no nulls."""
    common = {"kind": definition.kind.value, "name": definition.name}
    if isinstance(definition, Entity):
        return _drop_empty({**common, "join_keys": list(definition.join_keys),
                            "description": definition.description})
    if isinstance(definition, Source):
        return _drop_empty({
            **common, "topic": definition.topic, "format": definition.format,
            "timestamp_field": definition.timestamp_field,
            "timestamp_format": definition.timestamp_format.value,
            "watermark_delay": format_duration(definition.watermark_delay_ms),
            "schema": [_field_spec(f) for f in definition.schema],
            "description": definition.description, "owner": definition.owner,
            "tags": dict(definition.tags),
        })
    if isinstance(definition, FeatureView):
        return _drop_empty({
            **common, "entities": list(definition.entities), "source": definition.source,
            "features": [_drop_empty({
                "name": f.name, "aggregation": f.aggregation.value, "column": f.column,
                "window": _optional_duration(f.window_ms),
                "slide": _optional_duration(f.slide_ms if f.slide_ms != f.window_ms else None),
                "description": f.description,
            }) for f in definition.features],
            "ttl": _optional_duration(definition.ttl_ms), "online": definition.online,
            "offline": definition.offline, "owner": definition.owner,
            "description": definition.description, "tags": dict(definition.tags),
            "drift": definition.drift.to_json(),
        })
    return _drop_empty({
        **common, "inputs": list(definition.inputs),
        "request_schema": [_field_spec(f) for f in definition.request_schema],
        "features": [_drop_empty({"name": f.name, "type": f.type.value,
                                  "expression": f.expression, "description": f.description})
                     for f in definition.features],
        "owner": definition.owner, "description": definition.description,
        "tags": dict(definition.tags),
    })


def canonical_json(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(definition: Definition) -> str:
    """SHA-256 of the canonical JSON: equal for every spelling of the same definition."""
    return hashlib.sha256(canonical_json(canonical_spec(definition)).encode()).hexdigest()

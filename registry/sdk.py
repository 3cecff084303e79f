"""Python SDK for feature definitions: one class per definition kind.

The JSON objects they build are described in docs/reference.md, "Definitions".

Definitions written in the ``*.py`` files of a features repository::

    user = Entity("user", join_keys=["user_id"])
    clicks = Source("clicks", topic="clicks", timestamp_field="ts",
                    schema=[Field("user_id", "string", required=True),
                            Field("ts", "long", required=True)])
    user_clicks = FeatureView("user_clicks", entities=[user], source=clicks,
                              features=[Feature("clicks_1h", "count", window="1h")])

These classes only *build* the JSON: every rule lives in :mod:`core.domain.definitions`
(``parse_definition``) and :mod:`core.domain.validation`, so a definition behaves the same
whether it was written in Python, YAML or JSON.  References (``entities``, ``source``,
``inputs``) take either names or the SDK objects themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

Scalar = str | int | float | bool


def _without_unset(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if value is not None}


def _json_list(values: Sequence[Any] | None) -> list[Any] | str | None:
    # A bare string stays a string so that validation reports "must be an array" instead of
    # this spreading it into single-character names.
    if values is None or isinstance(values, str):
        return values
    return list(values)


def _name_of(reference: Entity | Source | FeatureView | str) -> str:
    # Anything but an SDK object passes through for the parser to judge.
    return reference.name if isinstance(reference, Entity | Source | FeatureView) else reference


def _names_of(references: Sequence[Entity | FeatureView | str]) -> list[str] | str:
    if isinstance(references, str):
        return references
    return [_name_of(reference) for reference in references]


@dataclass(frozen=True)
class Field:
    """One field of a source's data contract or of an on-demand view's request schema."""

    name: str
    type: str
    required: bool = False
    min: float | None = None
    max: float | None = None
    allowed: Sequence[Scalar] | None = None
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_unset({
            "name": self.name, "type": self.type, "required": self.required, "min": self.min,
            "max": self.max, "allowed": _json_list(self.allowed), "description": self.description,
        })


@dataclass(frozen=True)
class Entity:
    KIND: ClassVar[str] = "entity"

    name: str
    join_keys: Sequence[str]
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_unset({
            "kind": self.KIND, "name": self.name, "join_keys": _json_list(self.join_keys),
            "description": self.description,
        })


@dataclass(frozen=True)
class Source:
    KIND: ClassVar[str] = "source"

    name: str
    topic: str
    timestamp_field: str
    schema: Sequence[Field]
    format: str = "json"
    timestamp_format: str = "epoch_millis"
    watermark_delay: str = "5s"
    description: str | None = None
    owner: str | None = None
    tags: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_unset({
            "kind": self.KIND, "name": self.name, "topic": self.topic, "format": self.format,
            "timestamp_field": self.timestamp_field, "timestamp_format": self.timestamp_format,
            "watermark_delay": self.watermark_delay,
            "schema": [field.to_json() for field in self.schema],
            "description": self.description, "owner": self.owner,
            "tags": None if self.tags is None else dict(self.tags),
        })


@dataclass(frozen=True)
class Feature:
    """A windowed aggregate of a source column (``window`` alone: tumbling; with ``slide``:
    hopping), or the latest value of a column for ``aggregation="last"``."""

    name: str
    aggregation: str
    column: str | None = None
    window: str | None = None
    slide: str | None = None
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_unset({
            "name": self.name, "aggregation": self.aggregation, "column": self.column,
            "window": self.window, "slide": self.slide, "description": self.description,
        })


@dataclass(frozen=True)
class FeatureView:
    KIND: ClassVar[str] = "feature_view"

    name: str
    entities: Sequence[Entity | str]
    source: Source | str
    features: Sequence[Feature]
    ttl: str | None = None
    online: bool = True
    offline: bool = True
    owner: str | None = None
    description: str | None = None
    tags: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_unset({
            "kind": self.KIND, "name": self.name, "entities": _names_of(self.entities),
            "source": _name_of(self.source),
            "features": [feature.to_json() for feature in self.features],
            "ttl": self.ttl, "online": self.online, "offline": self.offline,
            "owner": self.owner, "description": self.description,
            "tags": None if self.tags is None else dict(self.tags),
        })


@dataclass(frozen=True)
class OnDemandFeature:
    """A feature computed at request time by a safe expression over input features and
    request fields."""

    name: str
    type: str
    expression: str
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_unset({
            "name": self.name, "type": self.type, "expression": self.expression,
            "description": self.description,
        })


@dataclass(frozen=True)
class OnDemandFeatureView:
    KIND: ClassVar[str] = "on_demand_feature_view"

    name: str
    inputs: Sequence[FeatureView | str]
    features: Sequence[OnDemandFeature]
    request_schema: Sequence[Field] = ()
    owner: str | None = None
    description: str | None = None
    tags: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return _without_unset({
            "kind": self.KIND, "name": self.name, "inputs": _names_of(self.inputs),
            "request_schema": [field.to_json() for field in self.request_schema],
            "features": [feature.to_json() for feature in self.features],
            "owner": self.owner, "description": self.description,
            "tags": None if self.tags is None else dict(self.tags),
        })


Definition = Entity | Source | FeatureView | OnDemandFeatureView
"""The top-level SDK objects: what a features repository's modules are scanned for."""

"""What can be served: every registered version of every feature view and on-demand view,
prepared for the hot path (types, decoders, join keys, compiled expressions).

:class:`DefinitionHistory` accumulates registered definition versions (pure, no I/O);
:meth:`DefinitionHistory.catalog` turns them into an immutable :class:`Catalog` snapshot that
requests read without locks.  A snapshot is rebuilt only when the registry changed (rare);
expressions are compiled once however often that happens.  Entities and sources are taken
at their latest version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from core.domain.definitions import (
    Definition,
    Entity,
    Feature,
    FeatureView,
    Field,
    Kind,
    OnDemandFeatureView,
    Source,
    ValueType,
    parse_definition,
)
from core.domain.expressions import Expression, compile_expression
from core.domain.layout import feature_time_field, output_type, view_join_keys
from core.errors import ExpressionError, InvalidDefinitionError
from serving.decoding import Decoder, decoder_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServedFeature:
    name: str
    type: ValueType | None
    """None when the source no longer declares the aggregated column: any scalar is served."""
    decode: Decoder = field(repr=False, compare=False)
    time_field: str
    """``__ts:{feature}``: this feature's own event time, when the sink writes one."""


@dataclass(frozen=True)
class ViewSchema:
    """One version of a feature view as the server reads it."""

    name: str
    version: int
    join_keys: tuple[str, ...]
    features: Mapping[str, ServedFeature]
    ttl_ms: int | None
    own_times: bool = True
    """Whether features may carry their own ``__ts:{feature}`` (when windows close at
    different times; docs/reference.md, "Online store layout").  False when every feature
    is computed in one window, which closes for all at once: then ``__ts`` is every
    feature's time and the fields are not read."""


@dataclass(frozen=True)
class OnDemandFeatureSchema:
    name: str
    type: ValueType
    expression: Expression | None
    compile_error: str | None
    """Why ``expression`` is None: served as ERROR (the registry refuses such expressions, so
    this happens only when an input view later lost a feature the expression reads)."""


@dataclass(frozen=True)
class OnDemandSchema:
    """One version of an on-demand view: compiled expressions and where each input lives."""

    name: str
    version: int
    inputs: tuple[str, ...]
    request_schema: tuple[Field, ...]
    features: Mapping[str, OnDemandFeatureSchema]
    input_views: Mapping[str, str]
    """Input feature name → the input view holding it (names are unique across inputs)."""


@dataclass(frozen=True)
class Catalog:
    generation: int
    """Grows with every change; plans cached for one generation are stale for the next."""
    views: Mapping[str, Mapping[int, ViewSchema]]
    on_demand: Mapping[str, Mapping[int, OnDemandSchema]]
    on_demand_active: Mapping[str, int]
    """On-demand views are not deployed: the registry's latest version is the active one."""
    loaded: bool = True
    """False until the registry has been read once."""


EMPTY_CATALOG = Catalog(0, MappingProxyType({}), MappingProxyType({}), MappingProxyType({}),
                        loaded=False)


def prepare_view(view: FeatureView, version: int, entities: Mapping[str, Entity],
                 sources: Mapping[str, Source]) -> ViewSchema | None:
    """None when the view references an entity the registry never registered (cannot be)."""
    try:
        join_keys = view_join_keys(view, {f"{Kind.ENTITY}:{n}": e for n, e in entities.items()})
    except KeyError as error:
        logger.error("feature view %s v%d references unknown entity %s", view.name, version, error)
        return None
    source = sources.get(view.source)
    features = {}
    for feature in view.features:
        value_type = _feature_type(feature, source)
        features[feature.name] = ServedFeature(feature.name, value_type, decoder_for(value_type),
                                               feature_time_field(feature.name))
    groups = {feature.window_group for feature in view.features}
    # 'last' features (no window) change with single events: each may have its own time.
    one_window = len(groups) == 1 and None not in groups
    return ViewSchema(view.name, version, join_keys, MappingProxyType(features), view.ttl_ms,
                      own_times=not one_window)


def _feature_type(feature: Feature, source: Source | None) -> ValueType | None:
    if source is None or (feature.column is not None
                          and source.field_named(feature.column) is None):
        return None
    return output_type(feature, source)


class ExpressionCompiler:
    """Compiles each expression once: results are kept per (source text, names allowed)."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, frozenset[str]], Expression | ExpressionError] = {}

    def compile(self, source: str, allowed: frozenset[str]) -> Expression | ExpressionError:
        key = (source, allowed)
        if key not in self._compiled:
            try:
                self._compiled[key] = compile_expression(source, allowed)
            except ExpressionError as error:
                self._compiled[key] = error
        return self._compiled[key]


def prepare_on_demand(view: OnDemandFeatureView, version: int,
                      input_features: Mapping[str, tuple[str, ...]],
                      compiler: ExpressionCompiler) -> OnDemandSchema:
    """``input_features``: feature names of each input view at its latest version."""
    input_views: dict[str, str] = {}
    for input_name in view.inputs:
        for feature_name in input_features.get(input_name, ()):
            input_views.setdefault(feature_name, input_name)
    allowed = frozenset(input_views) | {f.name for f in view.request_schema}
    features = {}
    for feature in view.features:
        compiled = compiler.compile(feature.expression, allowed)
        if isinstance(compiled, ExpressionError):
            features[feature.name] = OnDemandFeatureSchema(feature.name, feature.type, None,
                                                           str(compiled))
        else:
            features[feature.name] = OnDemandFeatureSchema(feature.name, feature.type, compiled,
                                                           None)
    read = {name for f in features.values() if f.expression for name in f.expression.names}
    return OnDemandSchema(view.name, version, view.inputs, view.request_schema,
                          MappingProxyType(features),
                          MappingProxyType({n: v for n, v in input_views.items() if n in read}))


class DefinitionHistory:
    """Every registered version of every definition, as read from the registry's event log."""

    def __init__(self) -> None:
        self._versions: dict[tuple[Kind, str], dict[int, Definition]] = {}
        self._compiler = ExpressionCompiler()
        self._generation = 0
        self._catalog = EMPTY_CATALOG
        self._dirty = False

    def record(self, kind: str, name: str, version: int, spec: Mapping[str, Any]) -> None:
        """Add one registered version; a version already known is ignored (they never change)."""
        versions = self._versions.setdefault((Kind(kind), name), {})
        if version in versions:
            return
        try:
            versions[version] = parse_definition(dict(spec))
        except InvalidDefinitionError as error:
            logger.error("registered %s %s v%d does not parse, not served: %s", kind, name,
                         version, error)
            return
        self._dirty = True

    def mark_loaded(self) -> None:
        if not self._catalog.loaded:
            self._dirty = True

    def catalog(self) -> Catalog:
        """The current snapshot, rebuilt only after something changed."""
        if self._dirty:
            self._generation += 1
            self._catalog = self._build()
            self._dirty = False
        return self._catalog

    def _latest(self, kind: Kind) -> dict[str, Definition]:
        return {name: versions[max(versions)] for (k, name), versions in self._versions.items()
                if k is kind and versions}

    def _build(self) -> Catalog:
        entities = {n: d for n, d in self._latest(Kind.ENTITY).items() if isinstance(d, Entity)}
        sources = {n: d for n, d in self._latest(Kind.SOURCE).items() if isinstance(d, Source)}
        latest_views = self._latest(Kind.FEATURE_VIEW)
        input_features = {name: tuple(f.name for f in view.features)
                          for name, view in latest_views.items()
                          if isinstance(view, FeatureView)}
        views: dict[str, Mapping[int, ViewSchema]] = {}
        on_demand: dict[str, Mapping[int, OnDemandSchema]] = {}
        for (kind, name), versions in self._versions.items():
            if kind is Kind.FEATURE_VIEW:
                prepared = {n: prepare_view(d, n, entities, sources)
                            for n, d in versions.items() if isinstance(d, FeatureView)}
                views[name] = MappingProxyType({n: s for n, s in prepared.items() if s})
            elif kind is Kind.ON_DEMAND_FEATURE_VIEW:
                on_demand[name] = MappingProxyType({
                    n: prepare_on_demand(d, n, input_features, self._compiler)
                    for n, d in versions.items() if isinstance(d, OnDemandFeatureView)})
        return Catalog(self._generation, MappingProxyType(views), MappingProxyType(on_demand),
                       MappingProxyType({n: max(v) for n, v in on_demand.items() if v}))


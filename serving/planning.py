"""From feature references to a plan: which hashes to read, which fields, and where each
requested column comes from.  Pure: the catalog and the version maps are snapshots.

Each view is resolved to one version (pinned, or the active one in the version-map snapshot)
exactly once per plan, and every column of that view (including on-demand inputs) reads that
version's namespace: this is what keeps one response from mixing versions of a view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from core.domain.definitions import Field
from core.domain.layout import EVENT_TIME_FIELD, OLDEST_TIME_FIELD
from core.domain.references import FeatureReference
from core.errors import InvalidFeatureRequestError, NotFoundError, Problem
from serving.catalog import (
    Catalog,
    OnDemandFeatureSchema,
    OnDemandSchema,
    ServedFeature,
    ViewSchema,
)
from serving.decoding import EXPIRED, NOT_FOUND, PRESENT, Decoder, RowDecoder, Status
from serving.version_maps import VersionMaps

ViewVersion = tuple[str, int]


@dataclass(frozen=True)
class ViewRead:
    """One HMGET per entity: ``fields`` of ``fp:{view}:{namespace}:{entity_key}``."""

    schema: ViewSchema
    namespace: str
    features: tuple[ServedFeature, ...]
    fields: tuple[str, ...] = field(init=False)
    """The features, then ``__ts``, then (views with a ttl whose features may carry their own
    times) ``__ts_min``, the oldest of those times."""
    time_fields: tuple[str, ...] = field(init=False)
    """Each feature's ``__ts:{feature}``, read for the rows whose ``__ts_min`` is too old (or
    missing) to tell that none of their values is expired; empty when it cannot matter."""
    decoders: tuple[Decoder, ...] = field(init=False, repr=False)
    row_decoder: RowDecoder = field(init=False, repr=False)
    all_present: tuple[Status, ...] = field(init=False, repr=False)
    all_missing: tuple[Status, ...] = field(init=False, repr=False)
    all_expired: tuple[Status, ...] = field(init=False, repr=False)
    no_values: tuple[None, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = tuple(f.name for f in self.features)
        # Per-feature times matter only for judging a ttl, and only when they can differ.
        own_times = self.schema.ttl_ms is not None and self.schema.own_times
        times = tuple(f.time_field for f in self.features) if own_times else ()
        count = len(self.features)
        # Rows are decoded by the million: precompute everything that does not vary per row.
        object.__setattr__(self, "fields", (*names, EVENT_TIME_FIELD,
                                            *((OLDEST_TIME_FIELD,) if own_times else ())))
        object.__setattr__(self, "time_fields", times)
        object.__setattr__(self, "decoders", tuple(f.decode for f in self.features))
        object.__setattr__(self, "row_decoder", RowDecoder([f.type for f in self.features],
                                                           times=2 if own_times else 1))
        object.__setattr__(self, "all_present", (PRESENT,) * count)
        object.__setattr__(self, "all_missing", (NOT_FOUND,) * count)
        object.__setattr__(self, "all_expired", (EXPIRED,) * count)
        object.__setattr__(self, "no_values", (None,) * count)


@dataclass(frozen=True, slots=True)
class Segment:
    """Requested columns that are consecutive features ``start:stop`` of one read."""

    read: int
    start: int
    stop: int
    names: tuple[str, ...]
    whole: bool = False
    """The segment is the whole read, in order: rows are taken without slicing."""


@dataclass(frozen=True, slots=True)
class InputSlot:
    """Where an on-demand expression finds one input feature; read None = the input view's
    resolved version has no such feature (served to the expression as None, NOT_FOUND)."""

    name: str
    read: int | None
    position: int


@dataclass(frozen=True, slots=True)
class OnDemandColumn:
    name: str
    view: OnDemandSchema
    feature: OnDemandFeatureSchema
    inputs: tuple[InputSlot, ...]
    request_fields: tuple[str, ...]


Column = Segment | OnDemandColumn


@dataclass(frozen=True)
class Plan:
    columns: tuple[Column, ...]
    column_names: tuple[str, ...]
    reads: tuple[ViewRead, ...]
    join_keys: tuple[str, ...]
    """Every key column an entity row must hold: the union of the views' join keys."""
    request_fields: tuple[Field, ...]
    versions: Mapping[str, int]
    """``view`` (resolved active version) or ``view@N`` (pinned) → version served."""
    row_template: MappingProxyType[str, object] = field(init=False, repr=False)
    """Every key of a result row: copying it gives a dict sized for the row at once, which
    then fills without growing (a third faster than building each row from empty)."""

    def __post_init__(self) -> None:
        template: dict[str, object] = dict.fromkeys((*self.join_keys, *self.column_names))
        object.__setattr__(self, "row_template", MappingProxyType(template))


def resolve_view(catalog: Catalog, maps: VersionMaps, view: str, version: int | None
                 ) -> tuple[ViewSchema, str]:
    """The schema and namespace of ``view`` at ``version`` (None: active); 404 otherwise."""
    versions = catalog.views.get(view)
    if versions is None:
        raise NotFoundError(f"feature view {view!r} is not registered")
    version_map = maps.maps.get(view)
    if version_map is None:
        raise NotFoundError(f"feature view {view!r} has no serveable version yet "
                            "(it has not been deployed)")
    if version is None:
        version = version_map.active
        if version is None:
            raise NotFoundError(f"feature view {view!r} has no active version")
    namespace = version_map.namespace(version)
    schema = versions.get(version)
    if namespace is None or schema is None:
        serveable = ", ".join(str(v) for v in sorted(version_map.namespaces)) or "none"
        raise NotFoundError(f"version {version} of feature view {view!r} is not serveable "
                            f"(serveable versions: {serveable})")
    return schema, namespace


def resolve_on_demand(catalog: Catalog, view: str, version: int | None) -> OnDemandSchema:
    versions = catalog.on_demand.get(view)
    if versions is None:
        raise NotFoundError(f"view {view!r} is not registered")
    chosen = catalog.on_demand_active[view] if version is None else version
    schema = versions.get(chosen)
    if schema is None:
        raise NotFoundError(f"on-demand view {view!r} has no version {chosen} "
                            f"(versions: {', '.join(str(v) for v in sorted(versions))})")
    return schema


class _ReadDraft:
    def __init__(self, schema: ViewSchema, namespace: str) -> None:
        self.schema = schema
        self.namespace = namespace
        self.features: dict[str, int] = {}

    def position(self, feature: str) -> int:
        return self.features.setdefault(feature, len(self.features))


class _PlanBuilder:
    def __init__(self, catalog: Catalog, maps: VersionMaps) -> None:
        self.catalog = catalog
        self.maps = maps
        self.reads: dict[ViewVersion, _ReadDraft] = {}
        self.read_index: dict[ViewVersion, int] = {}
        self.columns: list[Column] = []
        self.names: list[str] = []
        self.problems: list[Problem] = []
        self.versions: dict[str, int] = {}
        self.request_fields: dict[tuple[str, int], tuple[Field, ...]] = {}

    def read(self, view: str, version: int | None) -> tuple[int, _ReadDraft]:
        schema, namespace = resolve_view(self.catalog, self.maps, view, version)
        key = (view, schema.version)
        if key not in self.reads:
            self.read_index[key] = len(self.reads)
            self.reads[key] = _ReadDraft(schema, namespace)
        return self.read_index[key], self.reads[key]

    def add(self, index: int, reference: FeatureReference) -> None:
        if reference.view in self.catalog.on_demand:
            self.add_on_demand(index, reference)
            return
        read, draft = self.read(reference.view, reference.version)
        self.versions[reference.view_label] = draft.schema.version
        if reference.feature not in draft.schema.features:
            self.unknown(index, reference, list(draft.schema.features), draft.schema.version)
            return
        position = draft.position(reference.feature)
        self.names.append(reference.text)
        last = self.columns[-1] if self.columns else None
        if isinstance(last, Segment) and last.read == read and last.stop == position:
            self.columns[-1] = Segment(read, last.start, position + 1,
                                       (*last.names, reference.text))
        else:
            self.columns.append(Segment(read, position, position + 1, (reference.text,)))

    def add_on_demand(self, index: int, reference: FeatureReference) -> None:
        view = resolve_on_demand(self.catalog, reference.view, reference.version)
        self.versions[reference.view_label] = view.version
        feature = view.features.get(reference.feature)
        if feature is None:
            self.unknown(index, reference, list(view.features), view.version)
            return
        self.request_fields[(view.name, view.version)] = view.request_schema
        request_names = {f.name for f in view.request_schema}
        names = sorted(feature.expression.names) if feature.expression else []
        slots = []
        for name in names:
            if name in request_names:
                continue
            read, draft = self.read(view.input_views[name], None)
            self.versions[draft.schema.name] = draft.schema.version
            if name in draft.schema.features:
                slots.append(InputSlot(name, read, draft.position(name)))
            else:
                slots.append(InputSlot(name, None, 0))
        self.names.append(reference.text)
        self.columns.append(OnDemandColumn(reference.text, view, feature, tuple(slots),
                                           tuple(n for n in names if n in request_names)))

    def unknown(self, index: int, reference: FeatureReference, known: list[str],
                version: int) -> None:
        self.problems.append(Problem(
            f"features[{index}]", f"{reference.view!r} version {version} has no feature "
            f"{reference.feature!r} (features: {', '.join(known)})"))

    def build(self) -> Plan:
        if self.problems:
            raise InvalidFeatureRequestError(self.problems)
        reads = tuple(
            ViewRead(d.schema, d.namespace, tuple(d.schema.features[f] for f in d.features))
            for d in self.reads.values())
        columns = tuple(
            replace(c, whole=True) if isinstance(c, Segment) and c.start == 0
            and c.stop == len(reads[c.read].features) else c for c in self.columns)
        join_keys: dict[str, None] = {}
        for read in reads:
            join_keys.update(dict.fromkeys(read.schema.join_keys))
        request_fields = tuple(f for fields in self.request_fields.values() for f in fields)
        return Plan(columns, tuple(self.names), reads, tuple(join_keys),
                    request_fields, MappingProxyType(self.versions))


def plan_request(references: Sequence[FeatureReference], catalog: Catalog,
                 maps: VersionMaps) -> Plan:
    """Raises NotFoundError (unknown view or version: 404) or InvalidFeatureRequestError
    listing every unknown feature (422)."""
    builder = _PlanBuilder(catalog, maps)
    for index, reference in enumerate(references):
        builder.add(index, reference)
    return builder.build()


def view_references(catalog: Catalog, maps: VersionMaps, view: str, version: int | None
                    ) -> tuple[int, tuple[FeatureReference, ...]]:
    """Every feature of one view at one version, as references named by the bare feature
    name (the single-entity endpoint's response is keyed by feature name)."""
    if view in catalog.on_demand:
        on_demand = resolve_on_demand(catalog, view, version)
        version, names = on_demand.version, tuple(on_demand.features)
    else:
        schema, _ = resolve_view(catalog, maps, view, version)
        version, names = schema.version, tuple(schema.features)
    return version, tuple(FeatureReference(name, view, version, name) for name in names)


PlanKey = tuple[tuple[object, ...], int, int]
"""(request shape, catalog generation, version-map generation)."""


class PlanCache:
    """Plans by request shape (the references asked for), catalog and version-map generation.

    A plan depends only on those; repeated request shapes, the common case for a model
    server, skip planning entirely.  Bounded by clearing when full: shapes are few.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._plans: dict[PlanKey, Plan] = {}

    def get(self, key: PlanKey) -> Plan | None:
        return self._plans.get(key)

    def put(self, key: PlanKey, plan: Plan) -> None:
        if len(self._plans) >= self._capacity:
            self._plans.clear()
        self._plans[key] = plan

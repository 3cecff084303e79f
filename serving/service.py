"""The serving use cases: batch and single-entity reads, and keeping the caches current.

Orchestration only: the pure modules decide, the adapters (the online store's reading side,
:class:`sinks.online_store.FeatureReader`, and :mod:`registry.feed`) talk to the
outside.  Three background tasks keep the caches current: the registry poll (≈1 s), the
``fp:versions`` listener (immediate) and a safety refresh of every version map (≈5 s, in case
a publish was lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.domain.layout import decode_entity_key, feature_key
from core.domain.references import FeatureReference, parse_references
from core.errors import InfrastructureError, InvalidFeatureRequestError
from registry.feed import RegistryEvents
from serving import metrics
from serving.assembly import (
    Assembled,
    DecodedRead,
    assemble,
    decode_read,
    entity_key_of,
    settle_expiry,
)
from serving.catalog import Catalog, DefinitionHistory
from serving.decoding import Scalar
from serving.planning import Plan, PlanCache, plan_request, view_references
from serving.requests import (
    BatchRequest,
    check_entity_rows,
    parse_query_value,
    request_columns,
)
from serving.version_maps import VersionMaps
from sinks.online_store import FeatureReader, HashRead, RawRow, VersionMap

logger = logging.getLogger(__name__)

Clock = Callable[[], int]


def wall_clock_millis() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Intervals:
    registry_poll: float = 1.0
    version_safety_refresh: float = 5.0
    retry_after_error: float = 1.0


DEFAULT_INTERVALS = Intervals()


class VersionMapCache:
    """The version maps of every view, replaced as one immutable snapshot on each change."""

    def __init__(self, store: FeatureReader) -> None:
        self._store = store
        self.snapshot = VersionMaps(0)
        self.loaded = False
        """Whether Redis has been read once: before, "no map" would be a false 404."""

    async def read(self, views: Sequence[str]) -> dict[str, VersionMap | None]:
        return await self._store.version_maps(views)

    def apply(self, updates: Mapping[str, VersionMap | None]) -> None:
        current = self.snapshot.maps
        changed = {view: m for view, m in updates.items() if current.get(view) != m}
        if not changed:
            return
        maps = {view: m for view, m in {**current, **changed}.items() if m is not None}
        self.snapshot = VersionMaps(self.snapshot.generation + 1, maps)
        metrics.VERSION_SWITCHES.inc(len(changed))


def unknown_active_versions(maps: Mapping[str, VersionMap | None], catalog: Catalog
                            ) -> list[str]:
    """Views whose newly read active version the catalog does not hold yet."""
    return [view for view, version_map in maps.items()
            if version_map is not None and version_map.active is not None
            and version_map.active not in catalog.views.get(view, {})]


class FeatureService:
    def __init__(self, registry: RegistryEvents, store: FeatureReader,
                 history: DefinitionHistory, clock: Clock = wall_clock_millis,
                 intervals: Intervals = DEFAULT_INTERVALS) -> None:
        self.registry = registry
        self.store = store
        self.history = history
        self.versions = VersionMapCache(store)
        self.clock = clock
        self.intervals = intervals
        self._batch_plans = PlanCache()
        self._view_plans = PlanCache()
        self._tasks: list[asyncio.Task[None]] = []
        # Refreshes run from three tasks; unserialised, an older read applied after a newer
        # one would bring back a superseded map until the next refresh.
        self._refresh_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load what can be loaded now; what fails is retried by the background tasks."""
        with contextlib.suppress(InfrastructureError):
            await self._poll_registry()
        with contextlib.suppress(InfrastructureError):
            await self._refresh_all_versions()
        # What is loaded now lives as long as the process: keep it out of the collector's
        # full passes, which otherwise walk it on the request path (p99 spikes).
        gc.freeze()
        self._tasks = [asyncio.create_task(self._every(self.intervals.registry_poll,
                                                       self._follow_registry)),
                       asyncio.create_task(self._every(self.intervals.version_safety_refresh,
                                                       self._refresh_all_versions)),
                       asyncio.create_task(self._follow_version_switches())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.registry.close()
        await self.store.close()

    @property
    def catalog(self) -> Catalog:
        return self.history.catalog()

    async def _follow_registry(self) -> None:
        """Read registry changes; views new to the server get their version maps at once."""
        if await self._poll_registry():
            new_views = [view for view in self.catalog.views
                         if view not in self.versions.snapshot.maps]
            if new_views:
                await self._refresh_versions(new_views)

    async def _poll_registry(self) -> int:
        try:
            recorded = await self.registry.catch_up()
        except InfrastructureError:
            metrics.REGISTRY_ERRORS.inc()
            raise
        metrics.CATALOG_GENERATION.set(self.catalog.generation)
        return recorded

    async def _refresh_all_versions(self) -> None:
        await self._refresh_versions(list(self.catalog.views))

    async def _refresh_versions(self, views: Sequence[str]) -> None:
        """Re-read version maps.  A switch to a version this server has not read from the
        registry yet (its poll lags by up to a second) first triggers a registry read; if the
        version is still unknown, the view keeps its previous map until a later refresh, so
        that a switch never turns into 404s."""
        async with self._refresh_lock:
            maps = await self.versions.read(views)
            self.versions.loaded = True
            if unknown_active_versions(maps, self.catalog):
                with contextlib.suppress(InfrastructureError):
                    await self._poll_registry()
                for view in unknown_active_versions(maps, self.catalog):
                    logger.warning("%s: active version %s is not in the registry yet; serving "
                                   "the previous one meanwhile", view, maps[view])
                    if view in self.versions.snapshot.maps:
                        del maps[view]
            self.versions.apply(maps)

    async def _every(self, seconds: float, action: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except InfrastructureError as error:
                logger.debug("background refresh failed: %s", error)
            except Exception:
                logger.exception("background refresh failed")

    async def _follow_version_switches(self) -> None:
        while True:
            try:
                async for view in self.store.version_switches():
                    await self._refresh_versions([view] if view else list(self.catalog.views))
            except InfrastructureError as error:
                logger.warning("version map refresh failed: %s", error)
                await asyncio.sleep(self.intervals.retry_after_error)

    # ------------------------------------------------------------------ requests

    def health(self) -> dict[str, Any]:
        catalog = self.catalog
        return {"status": "ok", "catalog_loaded": catalog.loaded,
                "version_maps_loaded": self.versions.loaded,
                "registry": "unavailable" if self.registry.error else "ok",
                "feature_views": len(catalog.views),
                "version_maps": len(self.versions.snapshot.maps)}

    def _ready_catalog(self) -> Catalog:
        catalog = self.catalog
        if not catalog.loaded:
            raise InfrastructureError("the server has not read the registry yet "
                                      f"({self.registry.error or 'starting'}); retry shortly")
        if not self.versions.loaded:
            raise InfrastructureError("the server has not read the online store's version "
                                      "maps yet (is Redis reachable?); retry shortly")
        return catalog

    @staticmethod
    def _plan(cache: PlanCache, shape: tuple[object, ...],
              references: Callable[[], Sequence[FeatureReference]], catalog: Catalog,
              maps: VersionMaps) -> Plan:
        """The cached plan of a request ``shape``, planned on a miss (errors are not cached)."""
        key = (shape, catalog.generation, maps.generation)
        plan = cache.get(key)
        if plan is None:
            plan = plan_request(references(), catalog, maps)
            cache.put(key, plan)
        return plan

    async def batch(self, request: BatchRequest) -> dict[str, Any]:
        catalog = self._ready_catalog()
        # One snapshot for the whole request: every view resolves to one version.
        maps = self.versions.snapshot
        plan = self._plan(self._batch_plans, tuple(request.features),
                          lambda: parse_references(request.features), catalog, maps)
        check_entity_rows(request.entities, plan.join_keys)
        context = request_columns(request.request_context, plan.request_fields,
                                  len(request.entities))
        assembled, _ = await self._serve(plan, request.entities, context)
        return {"versions": dict(plan.versions), "results": assembled.results,
                "statuses": assembled.statuses}

    async def single(self, view: str, entity_key: str, version: int | None,
                     query: Mapping[str, str]) -> dict[str, Any]:
        catalog = self._ready_catalog()
        maps = self.versions.snapshot
        version, references = view_references(catalog, maps, view, version)
        plan = self._plan(self._view_plans, (view, version), lambda: references, catalog, maps)
        values = decode_entity_key(entity_key)
        if len(values) != len(plan.join_keys):
            raise InvalidFeatureRequestError.single(
                "entity_key", f"{entity_key!r} holds {len(values)} key values; {view!r} needs "
                f"{len(plan.join_keys)}: {'|'.join(plan.join_keys)} (escape '|' and '\\' "
                "inside a value with '\\')")
        row = dict(zip(plan.join_keys, values, strict=True))
        fields = {f.name: f for f in plan.request_fields}
        given: dict[str, Scalar] = {}
        for name, text in query.items():
            try:
                given[name] = parse_query_value(fields[name], text) if name in fields else text
            except ValueError as error:
                raise InvalidFeatureRequestError.single(f"request_context.{name}",
                                                        str(error)) from None
        context = request_columns(given, plan.request_fields, 1)
        assembled, reads = await self._serve(plan, [row], context)
        result, statuses = assembled.results[0], assembled.statuses[0]
        times = [t for read in reads if (t := read.event_times[0]) is not None]
        return {"view": view, "version": version, "entity_key": entity_key,
                "found": any(read.found[0] for read in reads),
                "features": {name: result[name] for name in plan.column_names},
                "statuses": dict(zip(plan.column_names, statuses, strict=True)),
                "event_time": max(times) if times else None}

    async def _serve(self, plan: Plan, rows: Sequence[Mapping[str, str | int]],
                     context: Mapping[str, Sequence[Scalar | None]]
                     ) -> tuple[Assembled, list[DecodedRead]]:
        hash_reads = []
        entity_keys: dict[tuple[str, ...], list[bytes]] = {}  # views of one entity share keys
        for read in plan.reads:
            join_keys = read.schema.join_keys
            if join_keys not in entity_keys:
                entity_keys[join_keys] = [entity_key_of(row, join_keys).encode() for row in rows]
            hash_reads.append(HashRead(feature_key(read.schema.name, read.namespace, ""),
                                       entity_keys[join_keys], read.fields))
        now = self.clock()
        decoded = await self.store.read_hashes(
            hash_reads, lambda position, raw: decode_read(plan.reads[position], raw, now))
        unsettled = [(read, hash_read, result) for read, hash_read, result
                     in zip(plan.reads, hash_reads, decoded, strict=True) if result.pending]
        if unsettled:  # rows whose oldest value may be expired: their per-feature times
            def settle(position: int, time_rows: list[RawRow]) -> None:
                read, _, result = unsettled[position]
                settle_expiry(read, result, time_rows, now)

            await self.store.read_hashes([
                HashRead(hash_read.key_prefix,
                         [hash_read.key_suffixes[row] for row in result.pending],
                         read.time_fields)
                for read, hash_read, result in unsettled], settle)
        assembled = assemble(plan, rows, decoded, context)
        metrics.ENTITIES.inc(len(rows))
        metrics.count_statuses(assembled.statuses)
        return assembled, decoded

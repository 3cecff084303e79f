"""The online store's version maps as the server holds them: one snapshot of every view's.

A map itself (:class:`sinks.online_store.VersionMap`) is read by the online store; the layout
is described in docs/reference.md, "Online store layout"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sinks.online_store import VersionMap


@dataclass(frozen=True, slots=True)
class VersionMaps:
    """One immutable snapshot of every view's map.  A request reads the snapshot once and
    resolves every view against it, so one response never mixes two versions of a view."""

    generation: int
    maps: Mapping[str, VersionMap] = field(default_factory=lambda: MappingProxyType({}))

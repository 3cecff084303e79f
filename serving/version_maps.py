"""The online store's version maps as the server holds them: pure parsing.

The layout is described in docs/reference.md, "Online store layout"."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from core.domain.layout import ACTIVE_FIELD, namespace_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VersionMap:
    """``fp:versions:{view}``: the active version and the namespace of every serveable one."""

    active: int | None
    namespaces: Mapping[int, str]

    def namespace(self, version: int) -> str | None:
        return self.namespaces.get(version)


@dataclass(frozen=True, slots=True)
class VersionMaps:
    """One immutable snapshot of every view's map.  A request reads the snapshot once and
    resolves every view against it, so one response never mixes two versions of a view."""

    generation: int
    maps: Mapping[str, VersionMap] = field(default_factory=lambda: MappingProxyType({}))


def parse_version_map(fields: Mapping[bytes, bytes]) -> VersionMap | None:
    """The map in a ``HGETALL`` reply; None when the hash is absent (view not deployed)."""
    if not fields:
        return None
    namespaces: dict[int, str] = {}
    active: int | None = None
    for raw_name, raw_value in fields.items():
        name, value = raw_name.decode(), raw_value.decode()
        try:
            if name == ACTIVE_FIELD:
                active = int(value)
            else:
                namespaces[int(name)] = value
        except ValueError:
            logger.warning("ignoring field %r=%r of a version map: not a version number",
                           name, value)
    if active is not None and active not in namespaces:
        # The writer adds the active version's field in the same HSET; if one ever does not,
        # the namespace a version's own job writes is still the conventional one.
        namespaces[active] = namespace_of(active)
    return VersionMap(active, MappingProxyType(namespaces))

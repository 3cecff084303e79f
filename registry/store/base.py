"""What the registry needs from its database: one interface, one adapter module per backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from core.domain.events import RecordedEvent, StreamAppend


@dataclass(frozen=True)
class DefinitionRecord:
    kind: str
    name: str
    latest_version: int
    active_version: int | None
    spec: Mapping[str, Any]
    spec_hash: str
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "latest_version": self.latest_version,
                "active_version": self.active_version, "spec_hash": self.spec_hash,
                "spec": dict(self.spec), "updated_at": self.updated_at.isoformat()}


@dataclass(frozen=True)
class VersionRecord:
    kind: str
    name: str
    version: int
    spec: Mapping[str, Any]
    spec_hash: str
    change_class: str | None
    provenance: Mapping[str, Any]
    registered_at: datetime
    position: int

    def to_json(self, with_spec: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "version": self.version, "spec_hash": self.spec_hash,
            "change_class": self.change_class, "provenance": dict(self.provenance),
            "registered_at": self.registered_at.isoformat(), "position": self.position,
        }
        if with_spec:
            body["spec"] = dict(self.spec)
        return body


class RegistryStore(Protocol):
    """An append-only event log with the definition projections kept beside it.

    ``append`` is all-or-nothing: every stream must be at its expected version and every
    stream in ``preconditions`` (streams the caller read to decide, e.g. a view's source)
    at the version given, else ConcurrencyConflictError and nothing is written.  Positions of
    committed events only grow in commit order, so ``read_events(after=p)`` never skips.
    Adapters: :mod:`.postgres`, :mod:`.memory`; tests/contracts/test_registry_store.py holds
    both to this contract.
    """

    def append(self, appends: Sequence[StreamAppend],
               preconditions: Mapping[str, int] | None = None) -> list[RecordedEvent]: ...

    def read_events(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]: ...

    def read_stream(self, stream: str) -> list[RecordedEvent]: ...

    def last_position(self) -> int: ...

    def definitions(self, kind: str | None = None) -> list[DefinitionRecord]: ...

    def definition(self, kind: str, name: str) -> DefinitionRecord | None: ...

    def versions(self, kind: str, name: str) -> list[VersionRecord]: ...

    def version(self, kind: str, name: str, version: int) -> VersionRecord | None: ...

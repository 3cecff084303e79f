"""The definition projections' rules, one pure function for every store.

A store turns each appended event into at most one projection change and applies it in the
transaction of the append; what the change *is* — which events count, which version becomes
active — is decided here only, so the PostgreSQL store and the in-memory one cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.domain.definitions import Kind
from core.domain.events import DefinitionRegistered, RecordedEvent, VersionActivated
from registry.store.base import DefinitionRecord, VersionRecord


@dataclass(frozen=True)
class AddVersion:
    """A new version row, and the definition's latest version moved to it."""

    version: VersionRecord
    activates: bool
    """Whether the new version is also the active one at once.  Feature views become
    active only when the deployer has rolled them out (:class:`ActivateVersion`)."""

    def definition_after(self, current: DefinitionRecord | None,
                         now: datetime) -> DefinitionRecord:
        """The definition row once this version is registered over ``current``."""
        record = self.version
        kept_active = current.active_version if current is not None else None
        return DefinitionRecord(kind=record.kind, name=record.name,
                                latest_version=record.version,
                                active_version=record.version if self.activates else kept_active,
                                spec=record.spec, spec_hash=record.spec_hash, updated_at=now)


@dataclass(frozen=True)
class ActivateVersion:
    """A feature view's active version moved (an existing definition row only)."""

    view: str
    version: int
    kind: str = Kind.FEATURE_VIEW.value


ProjectionChange = AddVersion | ActivateVersion


def projection_change(event: RecordedEvent) -> ProjectionChange | None:
    """What ``event`` changes in the definition projections; None for the other events."""
    payload = event.payload
    if isinstance(payload, DefinitionRegistered):
        return AddVersion(
            VersionRecord(kind=payload.kind, name=payload.name, version=payload.version,
                          spec=payload.spec, spec_hash=payload.spec_hash,
                          change_class=payload.change_class,
                          provenance=dict(event.metadata), registered_at=event.recorded_at,
                          position=event.position),
            activates=payload.kind != Kind.FEATURE_VIEW)
    if isinstance(payload, VersionActivated):
        return ActivateVersion(view=payload.view, version=payload.version)
    return None

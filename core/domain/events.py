"""The registry's event types and stream names.

Two stream families keep writers out of each other's way: ``{kind}:{name}`` holds only the
``DefinitionRegistered`` events of one definition (so its stream version *is* the definition
version), and ``deployment:{view}`` holds the rollout of one feature view, written by the
deployer.  A registry apply therefore never conflicts with a deployment in progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    DEFINITION_REGISTERED = "DefinitionRegistered"
    DEPLOYMENT_STARTED = "DeploymentStarted"
    DEPLOYMENT_READY = "DeploymentReady"
    VERSION_ACTIVATED = "VersionActivated"
    VERSION_RETIRED = "VersionRetired"
    DEPLOYMENT_FAILED = "DeploymentFailed"
    ROLLBACK_REQUESTED = "RollbackRequested"
    NAMESPACE_PURGED = "NamespacePurged"


DEPLOYMENT_STREAM_PREFIX = "deployment:"


def deployment_stream(view: str) -> str:
    return f"{DEPLOYMENT_STREAM_PREFIX}{view}"


@dataclass(frozen=True)
class NewEvent:
    type: EventType
    data: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamAppend:
    """Events to add to one stream, valid only while the stream is at ``expected_version``
    (0 = the stream must not exist yet)."""

    stream: str
    expected_version: int
    events: tuple[NewEvent, ...]


@dataclass(frozen=True)
class RecordedEvent:
    position: int
    stream: str
    version: int
    type: str
    data: Mapping[str, Any]
    metadata: Mapping[str, Any]
    recorded_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position, "stream": self.stream, "version": self.version,
            "type": self.type, "data": dict(self.data), "metadata": dict(self.metadata),
            "recorded_at": self.recorded_at.isoformat(),
        }


@dataclass(frozen=True)
class StoredEvent:
    """An event as every store keeps it: JSON-ready data and metadata under a type name.
    Stores write only this form and read back through :func:`decode_event`, so a fake and
    a database store see events exactly alike."""

    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]


def encode_event(event: NewEvent) -> StoredEvent:
    """The stored form of an event about to be appended."""
    return StoredEvent(str(event.type), dict(event.data), dict(event.metadata))


def decode_event(position: int, stream: str, version: int, stored: StoredEvent,
                 recorded_at: datetime) -> RecordedEvent:
    """An event read back from a store."""
    return RecordedEvent(position=position, stream=stream, version=version, type=stored.type,
                         data=stored.data, metadata=stored.metadata, recorded_at=recorded_at)


@dataclass(frozen=True)
class Provenance:
    """Who caused an event and from where; stored as every event's metadata."""

    actor: str
    message: str | None = None
    provider: str | None = None
    repository: str | None = None
    ref: str | None = None
    commit: str | None = None
    delivery_id: str | None = None
    pusher: str | None = None

    def to_metadata(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v is not None}

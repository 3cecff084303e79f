"""The registry's event types, their stored form and stream names.

Three stream families keep writers out of each other's way: ``{kind}:{name}`` holds only the
``DefinitionRegistered`` events of one definition (so its stream version *is* the definition
version), ``deployment:{view}`` holds the rollout of one feature view, written by the
deployer, and ``drift:{view}`` the view's drift baselines and alerts.  A registry apply
therefore never conflicts with a deployment in progress or an alert.

Every event type is a frozen :class:`msgspec.Struct`, stored as the JSON of its fields under
the type's name, with its schema version in the metadata (``schema_version``).  Reading
validates the stored data into the Struct after upcasting it from the version it was written
in: a shape can change by adding a version and the step from the one before (events stored
before versions existed have no marker and are version 1).  An event whose type this code
does not know (written by a newer writer) reads as :class:`UnknownEvent`, its data as stored:
the event log still serves it and every fold of the log skips it.  A known type whose data
does not validate is a broken log, not a newer one: reading it raises
:class:`UnreadableEventError` rather than letting a fold silently skip a step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol, TypedDict, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from core.errors import UnreadableEventError


class EventType(StrEnum):
    DEFINITION_REGISTERED = "DefinitionRegistered"
    DEPLOYMENT_STARTED = "DeploymentStarted"
    DEPLOYMENT_WAITING = "DeploymentWaiting"
    DEPLOYMENT_RESUMED = "DeploymentResumed"
    DEPLOYMENT_READY = "DeploymentReady"
    VERSION_ACTIVATED = "VersionActivated"
    VERSION_RETIRED = "VersionRetired"
    DEPLOYMENT_FAILED = "DeploymentFailed"
    ROLLBACK_REQUESTED = "RollbackRequested"
    NAMESPACE_PURGED = "NamespacePurged"
    BASELINE_REGISTERED = "BaselineRegistered"
    DRIFT_DETECTED = "DriftDetected"
    DRIFT_RESOLVED = "DriftResolved"
    BACKFILL_REQUESTED = "BackfillRequested"
    BACKFILL_CHUNK_COMPLETED = "BackfillChunkCompleted"
    BACKFILL_COMPLETED = "BackfillCompleted"
    BACKFILL_FAILED = "BackfillFailed"


DEPLOYMENT_STREAM_PREFIX = "deployment:"


def deployment_stream(view: str) -> str:
    return f"{DEPLOYMENT_STREAM_PREFIX}{view}"


DRIFT_STREAM_PREFIX = "drift:"


def drift_stream(view: str) -> str:
    """The baselines and drift alerts of one feature view (every version's)."""
    return f"{DRIFT_STREAM_PREFIX}{view}"
BACKFILL_STREAM_PREFIX = "backfill:"


def backfill_stream(view: str) -> str:
    """The backfills of one feature view (every version's), written by whoever runs them."""
    return f"{BACKFILL_STREAM_PREFIX}{view}"


class DeploymentKind(StrEnum):
    BLUE_GREEN = "blue_green"
    """A new job fills a fresh namespace (green) while the active one (blue) keeps serving."""
    FLIP = "flip"
    """A metadata-only change: the version shares a maintained namespace and needs no job."""


# --------------------------------------------------------------------------- payloads

class EventPayload(msgspec.Struct, frozen=True):
    """What one event says; the subclass is the event type."""

    TYPE: ClassVar[EventType]


class DefinitionRegistered(EventPayload, frozen=True, kw_only=True):
    TYPE = EventType.DEFINITION_REGISTERED
    kind: str
    name: str
    version: int
    from_version: int | None
    spec: dict[str, Any]
    spec_hash: str
    change_class: str | None


class RollbackRequested(EventPayload, frozen=True, kw_only=True):
    TYPE = EventType.ROLLBACK_REQUESTED
    view: str
    to_version: int


class NamespacePurged(EventPayload, frozen=True, kw_only=True):
    TYPE = EventType.NAMESPACE_PURGED
    view: str
    namespace: str
    keys_deleted: int


class DeploymentEvent(EventPayload, frozen=True):
    """A step of one deployment; every one names the view, deployment, version and namespace."""

    view: str
    deployment: int
    """The deployment's number, counting the view's deployments from 1."""
    version: int
    namespace: str


class DeploymentStarted(DeploymentEvent, frozen=True, kw_only=True):
    TYPE = EventType.DEPLOYMENT_STARTED
    kind: DeploymentKind
    job_id: str | None
    """Green's job (None for a flip)."""
    blue_version: int | None
    blue_namespace: str | None
    blue_job_id: str | None
    """The job maintaining the active namespace, retired once the version is active."""


class DeploymentWaiting(DeploymentEvent, frozen=True, kw_only=True):
    """Green cannot be submitted yet: its source topic does not exist.  Recorded once per
    wait; the deployer keeps looking and records :class:`DeploymentResumed` when it appears."""

    TYPE = EventType.DEPLOYMENT_WAITING
    reason: str
    """For people: ``source topic 'clicks' does not exist yet``."""
    topic: str
    """The source topic waited for."""


class DeploymentResumed(DeploymentEvent, frozen=True, kw_only=True):
    """What a waiting deployment waited for is there: green is submitted next, and its ready
    deadline counts from this event."""

    TYPE = EventType.DEPLOYMENT_RESUMED


class Readiness(TypedDict):
    """What a green job was checked against when it was found ready."""

    source_offsets: dict[str, int]
    """Source partition → the offset green had to read up to: blue's committed offset, or
    with no blue the end of the partition, when green first ran."""
    green_watermark: int | None
    blue_watermark: int | None


class DeploymentReady(DeploymentEvent, frozen=True, kw_only=True):
    """The version may be activated.  A blue/green records its :class:`Readiness`; a flip,
    having no green, none (the fields are then absent from the stored data)."""

    TYPE = EventType.DEPLOYMENT_READY
    source_offsets: dict[str, int] | UnsetType = UNSET
    green_watermark: int | UnsetType | None = UNSET
    blue_watermark: int | UnsetType | None = UNSET

    @property
    def readiness(self) -> dict[str, Any]:
        """The readiness recorded, as stored (empty for a flip)."""
        recorded = {"source_offsets": self.source_offsets,
                    "green_watermark": self.green_watermark,
                    "blue_watermark": self.blue_watermark}
        return {name: value for name, value in recorded.items() if value is not UNSET}


class VersionActivated(DeploymentEvent, frozen=True, kw_only=True):
    TYPE = EventType.VERSION_ACTIVATED


class VersionRetired(DeploymentEvent, frozen=True, kw_only=True):
    TYPE = EventType.VERSION_RETIRED
    retired_version: int | None
    retired_namespace: str | None
    job_id: str | None
    """The blue job stopped."""
    savepoint: str | None
    """Where blue's state was saved; None when stopping with a savepoint failed."""


class DeploymentFailed(DeploymentEvent, frozen=True, kw_only=True):
    TYPE = EventType.DEPLOYMENT_FAILED
    reason: str
    job_id: str | None
    """Green's job, cancelled."""


class BaselineRegistered(EventPayload, frozen=True, kw_only=True):
    """What a version's features looked like in training: the drift monitor compares the
    live values of ``view`` at ``version`` with it, replacing any earlier baseline of that
    version."""

    TYPE = EventType.BASELINE_REGISTERED
    view: str
    version: int
    features: dict[str, dict[str, Any]]
    """Feature name → its statistics (``WindowStatistics.to_json`` of core/domain/drift.py)."""
    origin: dict[str, Any]
    """Where the values came from: ``{"kind": "dataset", "file", "rows", "snapshots",
    "created_at"}`` for a training set, ``{"kind": "archive", "from_ms", "to_ms",
    "snapshots"}`` for a time range of the offline store, ``{"kind": "windows", ...}`` for
    stored monitoring windows."""


class DriftEvent(EventPayload, frozen=True, kw_only=True):
    """An alert of one feature and metric of a view version opened or resolved."""

    view: str
    version: int
    namespace: str
    """Whose job's statistics were judged."""
    feature: str
    metric: str
    value: float
    """The reading that opened or resolved the alert."""
    alert_at: float
    """The value at which the metric alerted then: its threshold, or the critical value of
    the sample sizes compared when higher."""
    window_end_ms: int
    """The end of the newest monitoring window judged."""
    horizon_start_ms: int
    """The start of the oldest window merged into the reading."""
    baseline_position: int
    """The position of the BaselineRegistered event judged against."""


class DriftDetected(DriftEvent, frozen=True, kw_only=True):
    TYPE = EventType.DRIFT_DETECTED


class DriftResolved(DriftEvent, frozen=True, kw_only=True):
    TYPE = EventType.DRIFT_RESOLVED
class BackfillEvent(EventPayload, frozen=True):
    """A step of one backfill of a view version into its offline feature table."""

    view: str
    version: int
    backfill: int
    """The backfill's number, counting the view's backfills from 1."""


class BackfillRequested(BackfillEvent, frozen=True, kw_only=True):
    TYPE = EventType.BACKFILL_REQUESTED
    start_ms: int
    end_ms: int
    """The range of event times asked for, ``[start_ms, end_ms)``."""
    chunk_ms: int
    reprocess: str
    """Which chunks run: ``missing`` (none done or failed), ``failed`` (also those that
    failed before) or ``all``."""
    chunks: list[tuple[int, int]]
    """The chunks this backfill runs, ``[start, end)`` each; the others were skipped."""
    table: str
    """The offline feature table written (``features.{view}__v{N}``)."""


class BackfillChunkCompleted(BackfillEvent, frozen=True, kw_only=True):
    TYPE = EventType.BACKFILL_CHUNK_COMPLETED
    start_ms: int
    end_ms: int
    snapshot_id: int
    """The feature table's snapshot holding the chunk's rows (one snapshot per chunk)."""
    rows: int
    events_read: int
    """Archived events handed to the job: the chunk's, and the windows' lookback before it."""


class BackfillCompleted(BackfillEvent, frozen=True, kw_only=True):
    TYPE = EventType.BACKFILL_COMPLETED
    chunks: int
    rows: int
    events_read: int


class BackfillFailed(BackfillEvent, frozen=True, kw_only=True):
    TYPE = EventType.BACKFILL_FAILED
    reason: str
    failed_chunks: list[tuple[int, int]]
    """The chunks that did not complete; the others are in the table."""


@dataclass(frozen=True)
class UnknownEvent:
    """An event of a type this code does not know, kept as stored."""

    type: str
    data: Mapping[str, Any]
    schema_version: int


# --------------------------------------------------------------------------- schemas

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class EventSchema:
    """How one event type is read: its payload Struct and, in order, the steps that turn
    data stored in version n into version n + 1 (``upcasters[n - 1]``)."""

    payload: type[EventPayload]
    upcasters: tuple[Upcaster, ...] = ()

    @property
    def version(self) -> int:
        """The version written now."""
        return len(self.upcasters) + 1

    def read(self, data: dict[str, Any], version: int) -> EventPayload:
        """The payload of data stored in ``version``.  Data from a newer writer is read as the
        current version: fields this version does not know are ignored."""
        for upcast in self.upcasters[version - 1:]:
            data = upcast(data)
        return msgspec.convert(data, self.payload)


def _frontier_offsets_are_source_offsets(data: dict[str, Any]) -> dict[str, Any]:
    """DeploymentReady 1 → 2.  Before readiness compared input offsets with blue's, a green
    with no blue recorded the input's end offsets when it started as ``frontier_offsets``:
    the same target that ``source_offsets`` holds now."""
    if "frontier_offsets" not in data:
        return data
    upcast = {name: value for name, value in data.items() if name != "frontier_offsets"}
    return upcast | {"source_offsets": data["frontier_offsets"]}


EVENT_SCHEMAS: Mapping[str, EventSchema] = {
    str(schema.payload.TYPE): schema for schema in (
        EventSchema(DefinitionRegistered),
        EventSchema(RollbackRequested),
        EventSchema(NamespacePurged),
        EventSchema(DeploymentStarted),
        EventSchema(DeploymentWaiting),
        EventSchema(DeploymentResumed),
        EventSchema(DeploymentReady, (_frontier_offsets_are_source_offsets,)),
        EventSchema(VersionActivated),
        EventSchema(VersionRetired),
        EventSchema(DeploymentFailed),
        EventSchema(BaselineRegistered),
        EventSchema(DriftDetected),
        EventSchema(DriftResolved),
        EventSchema(BackfillRequested),
        EventSchema(BackfillChunkCompleted),
        EventSchema(BackfillCompleted),
        EventSchema(BackfillFailed),
    )
}
SCHEMA_VERSION_KEY = "schema_version"
"""The metadata key holding the schema version an event's data was written in."""
UNVERSIONED = 1
"""The version of events stored before the schema version was recorded."""


# --------------------------------------------------------------------------- events

@dataclass(frozen=True)
class NewEvent:
    payload: EventPayload
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Who caused the event and from where (:meth:`Provenance.to_metadata`)."""


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
    payload: EventPayload | UnknownEvent
    """Upcast to the current schema version of its type."""
    metadata: Mapping[str, Any]
    recorded_at: datetime

    @property
    def type(self) -> str:
        return self.payload.type if isinstance(self.payload, UnknownEvent) \
            else str(self.payload.TYPE)

    @property
    def schema_version(self) -> int:
        """The schema version of :attr:`data`."""
        if isinstance(self.payload, UnknownEvent):
            return self.payload.schema_version
        return EVENT_SCHEMAS[self.type].version

    @property
    def data(self) -> dict[str, Any]:
        """The payload as JSON: the stored data, upcast to the current schema version."""
        if isinstance(self.payload, UnknownEvent):
            return dict(self.payload.data)
        return json_data(self.payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position, "stream": self.stream, "version": self.version,
            "type": self.type, "schema_version": self.schema_version, "data": self.data,
            "metadata": dict(self.metadata), "recorded_at": self.recorded_at.isoformat(),
        }


def json_data(payload: EventPayload) -> dict[str, Any]:
    """A payload's fields as JSON values (a tuple field as the list a database returns)."""
    data: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(payload))
    return data


@dataclass(frozen=True)
class StoredEvent:
    """An event as every store keeps it: JSON-ready data and metadata under a type name.
    Stores write only this form and read back through :func:`decode_event`, so a fake and
    a database store see events exactly alike."""

    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]


def encode_event(event: NewEvent) -> StoredEvent:
    """The stored form of an event about to be appended: its current schema version."""
    event_type = str(event.payload.TYPE)
    return StoredEvent(event_type, json_data(event.payload),
                       {**event.metadata, SCHEMA_VERSION_KEY: EVENT_SCHEMAS[event_type].version})


def decode_event(position: int, stream: str, version: int, stored: StoredEvent,
                 recorded_at: datetime) -> RecordedEvent:
    """An event read back from a store, validated and upcast to the current schema."""
    metadata = {k: v for k, v in stored.metadata.items() if k != SCHEMA_VERSION_KEY}
    schema_version = int(stored.metadata.get(SCHEMA_VERSION_KEY, UNVERSIONED))
    schema = EVENT_SCHEMAS.get(stored.type)
    payload: EventPayload | UnknownEvent
    if schema is None:
        payload = UnknownEvent(stored.type, stored.data, schema_version)
    else:
        try:
            payload = schema.read(stored.data, schema_version)
        except msgspec.ValidationError as error:
            raise UnreadableEventError(f"event {position} ({stored.type} version "
                                       f"{schema_version} in {stream}): {error}") from error
    return RecordedEvent(position=position, stream=stream, version=version, payload=payload,
                         metadata=metadata, recorded_at=recorded_at)


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


class Numbered(Protocol):
    @property
    def number(self) -> int: ...


ProcessT = TypeVar("ProcessT", bound=Numbered)


def numbered_histories(events: Iterable[RecordedEvent],
                       number_of: Callable[[EventPayload | UnknownEvent], int | None],
                       after: Callable[[ProcessT | None, RecordedEvent], ProcessT | None],
                       ) -> list[ProcessT]:
    """The numbered processes of one stream (deployments, backfills), newest first: each is
    folded from its events by ``after``; ``number_of`` names an event's process (None: the
    event is none of theirs)."""
    processes: dict[int, ProcessT] = {}
    for event in events:
        number = number_of(event.payload)
        if number is not None:
            folded = after(processes.get(number), event)
            if folded is not None:
                processes[folded.number] = folded
    return sorted(processes.values(), key=lambda process: process.number, reverse=True)


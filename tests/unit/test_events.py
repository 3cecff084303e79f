"""Typed, versioned events: the stored form, decoding with upcasting, unknown event types.

``tests/fixtures/events_before_schema_versions.json`` holds rows of a registry database as
the code before schema versions wrote them (registry apply and rollback, the deployer's
rollout events with green's readiness), with no version marker: every one must still read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.domain import events
from core.domain.deployments import deployment_history
from core.domain.events import (
    SCHEMA_VERSION_KEY,
    BackfillChunkCompleted,
    BackfillCompleted,
    BackfillFailed,
    BackfillRequested,
    BaselineRegistered,
    DefinitionRegistered,
    DeploymentFailed,
    DeploymentKind,
    DeploymentReady,
    DeploymentResumed,
    DeploymentStarted,
    DeploymentWaiting,
    DriftDetected,
    DriftResolved,
    EventSchema,
    EventType,
    NamespacePurged,
    NewEvent,
    RecordedEvent,
    RollbackRequested,
    StoredEvent,
    UnknownEvent,
    VersionActivated,
    VersionRetired,
    decode_event,
    deployment_stream,
    encode_event,
)
from core.errors import UnreadableEventError

FIXTURE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "events_before_schema_versions.json")
    .read_text())
T0 = datetime(2025, 3, 4, 5, 6, 7, 890_123, tzinfo=UTC)


def decode_row(row: dict[str, Any]) -> RecordedEvent:
    return decode_event(row["position"], row["stream"], row["version"],
                        StoredEvent(row["type"], row["data"], row["metadata"]),
                        datetime.fromisoformat(row["recorded_at"]))


def fixture_events() -> list[RecordedEvent]:
    """The fixture's rows, read as a store reads them."""
    return [decode_row(row) for row in FIXTURE["events"]]


def decode(event_type: str, data: dict[str, Any],
           metadata: dict[str, Any] | None = None) -> RecordedEvent:
    return decode_event(7, "deployment:user_clicks", 3,
                        StoredEvent(event_type, data, metadata or {"actor": "deployer"}), T0)


# --------------------------------------------------------------------------- today's rows

PAYLOAD_TYPES: dict[str, type[events.EventPayload]] = {
    "DefinitionRegistered": DefinitionRegistered, "DeploymentStarted": DeploymentStarted,
    "DeploymentReady": DeploymentReady, "VersionActivated": VersionActivated,
    "VersionRetired": VersionRetired, "DeploymentFailed": DeploymentFailed,
    "RollbackRequested": RollbackRequested, "NamespacePurged": NamespacePurged}
"""The event types of the fixture: every type there was before schema versions."""
TYPES_SINCE_SCHEMA_VERSIONS: dict[str, type[events.EventPayload]] = {
    "DeploymentWaiting": DeploymentWaiting, "DeploymentResumed": DeploymentResumed,
    "BaselineRegistered": BaselineRegistered, "DriftDetected": DriftDetected,
    "DriftResolved": DriftResolved,
    "BackfillRequested": BackfillRequested, "BackfillChunkCompleted": BackfillChunkCompleted,
    "BackfillCompleted": BackfillCompleted, "BackfillFailed": BackfillFailed}


def test_the_fixture_holds_every_event_type_older_than_schema_versions() -> None:
    assert {row["type"] for row in FIXTURE["events"]} == set(PAYLOAD_TYPES)
    assert set(EventType) == set(PAYLOAD_TYPES) | set(TYPES_SINCE_SCHEMA_VERSIONS)


@pytest.mark.parametrize("row", FIXTURE["events"],
                         ids=[f"{r['position']} {r['type']}" for r in FIXTURE["events"]])
def test_rows_stored_before_schema_versions_read_as_they_were_written(
        row: dict[str, Any]) -> None:
    event = decode_row(row)

    assert isinstance(event.payload, PAYLOAD_TYPES[row["type"]])
    assert event.type == row["type"]
    assert event.data == row["data"], "the event log serves the data as stored"
    assert event.metadata == row["metadata"]
    assert event.to_json() == {**{k: row[k] for k in ("position", "stream", "version", "type",
                                                      "data", "metadata", "recorded_at")},
                               "schema_version": event.schema_version}


@pytest.mark.parametrize("row", FIXTURE["events"],
                         ids=[f"{r['position']} {r['type']}" for r in FIXTURE["events"]])
def test_writing_an_event_again_stores_the_same_keys_with_its_schema_version(
        row: dict[str, Any]) -> None:
    event = decode_row(row)
    assert not isinstance(event.payload, UnknownEvent)

    stored = encode_event(NewEvent(event.payload, event.metadata))

    assert stored == StoredEvent(row["type"], row["data"],
                                 {**row["metadata"], SCHEMA_VERSION_KEY: event.schema_version})
    assert decode_event(1, row["stream"], 1, stored, T0).payload == event.payload


def test_typed_fields_are_read_from_the_stored_keys() -> None:
    by_position = {event.position: event.payload for event in fixture_events()}
    started, ready, flip_ready, retired = (by_position[p] for p in (9, 10, 15, 12))

    assert isinstance(started, DeploymentStarted)
    assert started.kind is DeploymentKind.BLUE_GREEN
    assert (started.blue_version, started.blue_namespace) == (1, "v1")
    assert isinstance(ready, DeploymentReady)
    assert ready.source_offsets == {"0": 1042, "1": 988}
    assert ready.readiness == {"source_offsets": {"0": 1042, "1": 988},
                               "green_watermark": 1741064400000,
                               "blue_watermark": 1741064399000}
    assert isinstance(flip_ready, DeploymentReady) and flip_ready.readiness == {}
    assert isinstance(retired, VersionRetired)
    assert retired.savepoint == "file:///savepoints/savepoint-7b1c"


def test_the_schema_version_is_stored_in_the_metadata_and_read_out_of_it() -> None:
    purged = NamespacePurged(view="user_clicks", namespace="v1", keys_deleted=3)
    stored = encode_event(NewEvent(purged, {"actor": "deployer"}))
    assert stored.metadata == {"actor": "deployer", SCHEMA_VERSION_KEY: 1}

    event = decode_event(1, deployment_stream("user_clicks"), 1, stored, T0)
    assert event.metadata == {"actor": "deployer"}, "provenance only"
    assert event.schema_version == 1


WAITING = DeploymentWaiting(view="user_clicks", deployment=1, version=1, namespace="v1",
                            reason="source topic 'clicks' does not exist yet", topic="clicks")
RESUMED = DeploymentResumed(view="user_clicks", deployment=1, version=1, namespace="v1")
BASELINE_DATA: dict[str, Any] = {"view": "user_clicks", "version": 2,
                 "features": {"clicks_1h": {"kind": "categorical", "nulls": 1,
                                            "categories": {"a": 3}, "other": 0}},
                 "origin": {"kind": "dataset", "file": "train.parquet",
                            "snapshots": {"raw.clicks": 17}}}
ALERT_DATA: dict[str, Any] = {
    "view": "user_clicks", "version": 2, "namespace": "v2", "feature": "clicks_1h",
    "metric": "psi", "value": 0.4, "alert_at": 0.25, "window_end_ms": 600_000,
    "horizon_start_ms": 0, "baseline_position": 12}

BACKFILL = {"view": "user_clicks", "version": 2, "backfill": 3}
DAY = 86_400_000


@pytest.mark.parametrize(("payload", "data"), [
    pytest.param(WAITING, {"view": "user_clicks", "deployment": 1, "version": 1,
                           "namespace": "v1", "reason": "source topic 'clicks' does not "
                           "exist yet", "topic": "clicks"}, id="waiting"),
    pytest.param(RESUMED, {"view": "user_clicks", "deployment": 1, "version": 1,
                           "namespace": "v1"}, id="resumed"),
    pytest.param(BaselineRegistered(**BASELINE_DATA), BASELINE_DATA, id="baseline"),
    pytest.param(DriftDetected(**ALERT_DATA), ALERT_DATA, id="drift detected"),
    pytest.param(DriftResolved(**ALERT_DATA), ALERT_DATA, id="drift resolved"),
    pytest.param(BackfillRequested(view="user_clicks", version=2, backfill=3, start_ms=0,
                                   end_ms=2 * DAY, chunk_ms=DAY, reprocess="missing",
                                   chunks=[(0, DAY), (DAY, 2 * DAY)],
                                   table="features.user_clicks__v2"),
                 BACKFILL | {"start_ms": 0, "end_ms": 2 * DAY, "chunk_ms": DAY,
                             "reprocess": "missing", "chunks": [[0, DAY], [DAY, 2 * DAY]],
                             "table": "features.user_clicks__v2"}, id="requested"),
    pytest.param(BackfillChunkCompleted(view="user_clicks", version=2, backfill=3, start_ms=0,
                                        end_ms=DAY, snapshot_id=2**62, rows=10, events_read=40),
                 BACKFILL | {"start_ms": 0, "end_ms": DAY, "snapshot_id": 2**62, "rows": 10,
                             "events_read": 40}, id="chunk completed"),
    pytest.param(BackfillCompleted(view="user_clicks", version=2, backfill=3, chunks=2, rows=20,
                                   events_read=80),
                 BACKFILL | {"chunks": 2, "rows": 20, "events_read": 80}, id="completed"),
    pytest.param(BackfillFailed(view="user_clicks", version=2, backfill=3, reason="job failed",
                                failed_chunks=[(DAY, 2 * DAY)]),
                 BACKFILL | {"reason": "job failed", "failed_chunks": [[DAY, 2 * DAY]]},
                 id="failed"),
])
def test_an_event_newer_than_schema_versions_round_trips_at_version_1(
        payload: events.EventPayload, data: dict[str, Any]) -> None:
    stored = encode_event(NewEvent(payload, {"actor": "deployer"}))
    assert stored == StoredEvent(str(payload.TYPE), data,
                                 {"actor": "deployer", SCHEMA_VERSION_KEY: 1})

    event = decode_event(7, deployment_stream("user_clicks"), 3, stored, T0)

    assert event.payload == payload
    assert (event.type, event.schema_version, event.data) == (payload.TYPE, 1, data)



# --------------------------------------------------------------------------- upcasting

BLUE_GREEN_READY = {"view": "user_clicks", "deployment": 1, "version": 1, "namespace": "v1"}


@pytest.mark.parametrize(("data", "readiness"), [
    pytest.param(BLUE_GREEN_READY | {"green_watermark": 7, "frontier_offsets": {"0": 12}},
                 {"green_watermark": 7, "source_offsets": {"0": 12}},
                 id="a green without blue: the frontier is its source target"),
    pytest.param(BLUE_GREEN_READY | {"green_watermark": 7, "blue_watermark": 6},
                 {"green_watermark": 7, "blue_watermark": 6},
                 id="a green with blue: watermarks only"),
])
def test_readiness_recorded_before_input_offsets_were_compared_is_upcast(
        data: dict[str, Any], readiness: dict[str, Any]) -> None:
    """DeploymentReady version 1 included the shapes green recorded when readiness was
    judged by watermarks (with ``frontier_offsets`` when there was no blue)."""
    event = decode(EventType.DEPLOYMENT_READY, data)

    assert isinstance(event.payload, DeploymentReady)
    assert event.payload.readiness == readiness
    assert event.schema_version == 2
    assert deployment_history([event]) == [], "a step of no deployment started here"


class Purged(events.EventPayload, frozen=True, kw_only=True):
    """A synthetic version 3 of an event once stored as ``{"ns": …, "deleted": …}`` (v1),
    then ``{"namespace": …, "deleted": …}`` (v2)."""

    TYPE = EventType.NAMESPACE_PURGED
    namespace: str
    keys_deleted: int


def _renamed(old: str, new: str) -> events.Upcaster:
    return lambda data: {(new if k == old else k): v for k, v in data.items()}


PURGED_SCHEMA = EventSchema(Purged, (_renamed("ns", "namespace"),
                                     _renamed("deleted", "keys_deleted")))


@pytest.mark.parametrize(("version", "data"), [
    pytest.param(1, {"ns": "v1", "deleted": 3}, id="from version 1, two steps"),
    pytest.param(2, {"namespace": "v1", "deleted": 3}, id="from version 2, one step"),
    pytest.param(3, {"namespace": "v1", "keys_deleted": 3}, id="current"),
    pytest.param(4, {"namespace": "v1", "keys_deleted": 3, "reason": "grace over"},
                 id="newer: unknown fields are ignored"),
])
def test_an_upcaster_chain_brings_every_older_version_to_the_current_one(
        version: int, data: dict[str, Any]) -> None:
    assert PURGED_SCHEMA.version == 3
    assert PURGED_SCHEMA.read(data, version) == Purged(namespace="v1", keys_deleted=3)


def test_decoding_runs_the_upcasters_of_the_version_stored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As if NamespacePurged had been stored as ``{"view", "ns", "keys_deleted"}`` once."""
    monkeypatch.setitem(events.EVENT_SCHEMAS, EventType.NAMESPACE_PURGED,
                        EventSchema(NamespacePurged, (_renamed("ns", "namespace"),)))
    current = NamespacePurged(view="user_clicks", namespace="v1", keys_deleted=3)

    unmarked = decode(EventType.NAMESPACE_PURGED,
                      {"view": "user_clicks", "ns": "v1", "keys_deleted": 3})
    written_now = encode_event(NewEvent(current))

    assert unmarked.payload == current
    assert unmarked.schema_version == 2
    assert written_now.metadata == {SCHEMA_VERSION_KEY: 2}
    assert decode_event(1, "s", 1, written_now, T0).payload == current


# --------------------------------------------------------------------------- the unexpected

def test_an_event_of_an_unknown_type_is_kept_as_stored() -> None:
    """A newer writer's event type: the event log serves it, folds skip it."""
    data = {"view": "user_clicks", "paused_by": "alice"}

    event = decode("DeploymentPaused", data, {"actor": "alice", SCHEMA_VERSION_KEY: 4})

    assert event.payload == UnknownEvent("DeploymentPaused", data, 4)
    assert event.to_json() == {
        "position": 7, "stream": "deployment:user_clicks", "version": 3,
        "type": "DeploymentPaused", "schema_version": 4, "data": data,
        "metadata": {"actor": "alice"}, "recorded_at": T0.isoformat()}
    assert deployment_history([event]) == []


@pytest.mark.parametrize("data", [
    pytest.param({"view": "user_clicks", "to_version": "two"}, id="wrong type"),
    pytest.param({"view": "user_clicks"}, id="missing field"),
])
def test_a_known_event_whose_data_does_not_fit_is_an_error(data: dict[str, Any]) -> None:
    """Skipping it would let the deployer fold past a step it never saw."""
    with pytest.raises(UnreadableEventError, match=r"event 7 \(RollbackRequested version 1 "
                                                   r"in deployment:user_clicks\)"):
        decode(EventType.ROLLBACK_REQUESTED, data)

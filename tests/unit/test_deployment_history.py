"""The deployment history read model: one record per deployment of a ``deployment:{view}``
stream, newest first, with its state, jobs, timings and error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.domain.deployments import deployment_history
from core.domain.events import EventType, RecordedEvent, deployment_stream
from deployer.rollout import BLUE_GREEN, FLIP, Deployment, Event, event_data
from tests.unit.test_rollout import DEPLOYMENT_STREAM, SCENARIOS, Sim, scenario

VIEW_NAME = "user_clicks"
STREAM = deployment_stream(VIEW_NAME)
T0 = datetime(2025, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC)
DEPLOYER = {"actor": "deployer"}

FIRST = Deployment(1, 1, BLUE_GREEN, "v1", "job-1", None, None, None, 0)
BREAKING = Deployment(2, 2, BLUE_GREEN, "v2", "job-2", 1, "v1", "job-1", 0)
METADATA = Deployment(3, 3, FLIP, "v2", None, 2, "v2", None, 0)
STARTED, READY, ACTIVATED, RETIRED, FAILED = (
    EventType.DEPLOYMENT_STARTED, EventType.DEPLOYMENT_READY, EventType.VERSION_ACTIVATED,
    EventType.VERSION_RETIRED, EventType.DEPLOYMENT_FAILED)

Step = tuple[EventType, Deployment, int, Mapping[str, Any]]
"""(event type, deployment, seconds after T0, extra data)."""


def at(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def recorded(steps: Sequence[Step], metadata: Mapping[str, Any] = DEPLOYER,
             ) -> list[RecordedEvent]:
    """The worker's events as the store returns them."""
    return [RecordedEvent(position=100 + i, stream=STREAM, version=i, type=event_type,
                          data=event_data(VIEW_NAME, deployment, event_type, **extra),
                          metadata=metadata, recorded_at=T0 + timedelta(seconds=seconds))
            for i, (event_type, deployment, seconds, extra) in enumerate(steps, start=1)]


WATERMARKS = {"green_watermark": 1_000, "blue_watermark": 990}
SAVEPOINT = "file:///savepoints/sp-1"
BREAKING_LIFECYCLE: list[Step] = [
    (STARTED, BREAKING, 0, {}),
    (READY, BREAKING, 90, WATERMARKS),
    (ACTIVATED, BREAKING, 91, {}),
    (RETIRED, BREAKING, 95, {"retired_version": 1, "retired_namespace": "v1",
                             "job_id": "job-1", "savepoint": SAVEPOINT}),
]
BREAKING_STARTED = {
    "deployment": 2, "version": 2, "kind": BLUE_GREEN, "namespace": "v2", "job_id": "job-2",
    "blue_version": 1, "blue_namespace": "v1", "blue_job_id": "job-1",
    "requested_by": "deployer", "started_at": at(0)}


@pytest.mark.parametrize(("recorded_steps", "expected"), [
    pytest.param(1, {"state": "started"}, id="started"),
    pytest.param(2, {"state": "ready", "ready_at": at(90), "readiness": WATERMARKS},
                 id="ready"),
    pytest.param(3, {"state": "activated", "ready_at": at(90), "readiness": WATERMARKS,
                     "activated_at": at(91)}, id="activated, blue still running"),
    pytest.param(4, {"state": "completed", "ready_at": at(90), "readiness": WATERMARKS,
                     "activated_at": at(91), "retired_at": at(95), "savepoint": SAVEPOINT},
                 id="completed once blue is retired"),
])
def test_a_blue_green_deployment_moves_through_its_states(recorded_steps: int,
                                                          expected: dict[str, Any]) -> None:
    history = deployment_history(recorded(BREAKING_LIFECYCLE[:recorded_steps]))
    assert history == [BREAKING_STARTED | expected]


@pytest.mark.parametrize(("deployment", "steps", "expected"), [
    pytest.param(FIRST, [(STARTED, FIRST, 0, {}),
                         (READY, FIRST, 30, {"green_watermark": 7,
                                             "frontier_offsets": {"0": 12, "1": 4}}),
                         (ACTIVATED, FIRST, 31, {})],
                 {"kind": BLUE_GREEN, "job_id": "job-1", "blue_version": None,
                  "readiness": {"green_watermark": 7, "frontier_offsets": {"0": 12, "1": 4}},
                  "ready_at": at(30), "activated_at": at(31)},
                 id="first version: nothing to retire"),
    pytest.param(METADATA, [(STARTED, METADATA, 0, {}), (READY, METADATA, 0, {}),
                            (ACTIVATED, METADATA, 1, {})],
                 {"kind": FLIP, "job_id": None, "blue_version": 2, "readiness": {},
                  "ready_at": at(0), "activated_at": at(1)},
                 id="metadata flip: no job"),
])
def test_an_activation_with_no_blue_job_is_complete(deployment: Deployment, steps: list[Step],
                                                    expected: dict[str, Any]) -> None:
    [record] = deployment_history(recorded(steps))
    assert record["state"] == "completed"
    assert record["deployment"] == record["version"] == deployment.version
    assert {k: record.get(k) for k in expected} == expected
    assert "retired_at" not in record and "savepoint" not in record


@pytest.mark.parametrize(("steps", "error"), [
    pytest.param([(STARTED, BREAKING, 0, {}),
                  (FAILED, BREAKING, 600, {"reason": "green was not ready within 600 s",
                                           "job_id": "job-2"})],
                 "green was not ready within 600 s", id="deadline"),
    pytest.param([(STARTED, BREAKING, 0, {}),
                  (FAILED, BREAKING, 600, {"reason": "superseded by version 3",
                                           "job_id": "job-2"})],
                 "superseded by version 3", id="abandoned"),
    pytest.param([(STARTED, BREAKING, 0, {}), (READY, BREAKING, 90, WATERMARKS),
                  (FAILED, BREAKING, 600, {"reason": "boom", "job_id": "job-2"})],
                 "boom", id="after ready"),
    pytest.param([(STARTED, BREAKING, 0, {}), (FAILED, BREAKING, 600, {})], None,
                 id="without a reason"),
])
def test_a_failed_deployment_says_why_and_when(steps: list[Step], error: str | None) -> None:
    [record] = deployment_history(recorded(steps))
    assert record["state"] == "failed"
    assert record["error"] == error
    assert (record["started_at"], record["failed_at"]) == (at(0), at(600))
    assert record["job_id"] == "job-2", "the failure's data does not overwrite the start's"
    assert "activated_at" not in record


def test_deployments_are_listed_newest_first_by_number() -> None:
    numbered = [Deployment(n, n, BLUE_GREEN, f"v{n}", f"job-{n}", None, None, None, 0)
                for n in (2, 9, 10, 1)]
    history = deployment_history(recorded([(STARTED, d, d.number, {}) for d in numbered]))
    assert [r["deployment"] for r in history] == [10, 9, 2, 1]
    assert [r["started_at"] for r in history] == [at(10), at(9), at(2), at(1)]


def test_events_that_are_not_about_a_deployment_are_skipped() -> None:
    others = [RecordedEvent(1, STREAM, 1, EventType.ROLLBACK_REQUESTED,
                            {"view": VIEW_NAME, "to_version": 1}, {"actor": "alice"}, T0),
              RecordedEvent(2, STREAM, 2, EventType.NAMESPACE_PURGED,
                            {"view": VIEW_NAME, "namespace": "v1", "keys_deleted": 3},
                            DEPLOYER, T0),
              RecordedEvent(3, f"feature_view:{VIEW_NAME}", 1, EventType.DEFINITION_REGISTERED,
                            {"kind": "feature_view", "name": VIEW_NAME, "version": 1},
                            {"actor": "alice"}, T0)]
    assert deployment_history([]) == []
    assert deployment_history(others) == []
    assert deployment_history([*others, *recorded(BREAKING_LIFECYCLE[:1])]) == [
        BREAKING_STARTED | {"state": "started"}]


def test_requested_by_is_the_actor_recorded_with_the_start() -> None:
    [record] = deployment_history(recorded(BREAKING_LIFECYCLE[:1], {"actor": "ci"}))
    assert record["requested_by"] == "ci"


def test_interleaved_deployments_keep_their_own_records() -> None:
    steps: list[Step] = [
        (STARTED, FIRST, 0, {}), (READY, FIRST, 1, {}), (ACTIVATED, FIRST, 2, {}),
        (STARTED, BREAKING, 10, {}),
        (FAILED, BREAKING, 20, {"reason": "superseded by version 3", "job_id": "job-2"}),
        (STARTED, METADATA, 21, {}), (READY, METADATA, 21, {}),
    ]
    history = deployment_history(recorded(steps))
    assert [(r["deployment"], r["state"], r.get("error")) for r in history] == [
        (3, "ready", None), (2, "failed", "superseded by version 3"), (1, "completed", None)]


# --------------------------------------------------------------------------- from the simulator

def history_of(sim: Sim) -> list[dict[str, Any]]:
    """What the registry serves for a simulated view: its deployment stream's history."""
    return deployment_history(as_recorded(sim.log))


def as_recorded(log: Sequence[Event]) -> list[RecordedEvent]:
    return [RecordedEvent(position, e.stream, e.stream_version, e.type, e.data, DEPLOYER,
                          datetime.fromtimestamp(e.recorded_at_ms / 1000, UTC))
            for position, e in enumerate(log, start=1) if e.stream == DEPLOYMENT_STREAM]


@pytest.mark.parametrize(("name", "expected"), [
    pytest.param("first version", [(1, 1, "completed", None)], id="first version"),
    pytest.param("breaking", [(2, 2, "completed", None), (1, 1, "completed", None)],
                 id="breaking"),
    pytest.param("metadata", [(3, 3, "completed", None), (2, 2, "completed", None),
                              (1, 1, "completed", None)], id="metadata"),
    pytest.param("rollback needing a new job", [(3, 1, "completed", None),
                                                (2, 2, "completed", None),
                                                (1, 1, "completed", None)], id="rollback"),
    pytest.param("failed green, then a rollback to it", [
        (3, 2, "completed", None), (2, 2, "failed", "green job {job} is FAILED: boom"),
        (1, 1, "completed", None)], id="failed, then retried"),
    pytest.param("superseded", [(3, 3, "completed", None),
                                (2, 2, "failed", "superseded by version 3"),
                                (1, 1, "completed", None)], id="superseded"),
    pytest.param("deadline", [(2, 2, "failed", "green was not ready within 4 s"),
                              (1, 1, "completed", None)], id="deadline"),
])
def test_the_history_of_simulated_rollouts(name: str,
                                           expected: list[tuple[int, int, str, str | None]],
                                           ) -> None:
    history = history_of(scenario(name))
    jobs = {r["deployment"]: r["job_id"] for r in history}
    assert [(r["deployment"], r["version"], r["state"], r.get("error")) for r in history] == [
        (n, v, state, error and error.format(job=jobs[n])) for n, v, state, error in expected]
    for record in history:
        assert record["started_at"] <= record.get("activated_at", record.get("failed_at", ""))


@pytest.mark.parametrize("name", SCENARIOS)
def test_simulated_timings_are_the_recorded_times(name: str) -> None:
    sim = scenario(name)
    history = history_of(sim)
    starts = {e.data["deployment"]: e.recorded_at_ms for e in sim.log
              if e.type == EventType.DEPLOYMENT_STARTED}
    assert {r["deployment"]: datetime.fromisoformat(r["started_at"]) for r in history} == {
        n: datetime.fromtimestamp(ms / 1000, UTC) for n, ms in starts.items()}
    assert [r["deployment"] for r in history] == sorted(starts, reverse=True)

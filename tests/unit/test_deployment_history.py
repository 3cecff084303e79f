"""The deployment history read model: one record per deployment of a ``deployment:{view}``
stream, newest first, with its state, jobs, timings and error — the same records whose
in-flight one the deployer acts on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.domain.deployments import Deployment, DeploymentState, deployment_history
from core.domain.events import (
    DefinitionRegistered,
    DeploymentKind,
    DeploymentStarted,
    EventPayload,
    NamespacePurged,
    Readiness,
    RecordedEvent,
    RollbackRequested,
    deployment_stream,
)
from deployer.rollout import (
    deployment_failed,
    deployment_ready,
    deployment_resumed,
    deployment_started,
    deployment_waiting,
    version_activated,
    version_retired,
)
from tests.unit.test_events import FIXTURE, fixture_events
from tests.unit.test_rollout import DEPLOYMENT_STREAM, SCENARIOS, Sim, fold, scenario

VIEW_NAME = "user_clicks"
STREAM = deployment_stream(VIEW_NAME)
T0 = datetime(2025, 3, 4, 5, 6, 7, 890_123, tzinfo=UTC)
DEPLOYER = {"actor": "deployer"}
BLUE_GREEN, FLIP = DeploymentKind.BLUE_GREEN, DeploymentKind.FLIP

FIRST = Deployment(1, 1, BLUE_GREEN, "v1", "job-1", None, None, None, T0)
BREAKING = Deployment(2, 2, BLUE_GREEN, "v2", "job-2", 1, "v1", "job-1", T0)
METADATA = Deployment(3, 3, FLIP, "v2", None, 2, "v2", None, T0)

Step = tuple[EventPayload, int]
"""(event, seconds after T0)."""


def at(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def recorded(steps: Sequence[Step], metadata: Mapping[str, Any] = DEPLOYER,
             ) -> list[RecordedEvent]:
    """The worker's events as the store returns them."""
    return [RecordedEvent(position=100 + i, stream=STREAM, version=i, payload=payload,
                          metadata=metadata, recorded_at=T0 + timedelta(seconds=seconds))
            for i, (payload, seconds) in enumerate(steps, start=1)]


def served(events: Sequence[RecordedEvent]) -> list[dict[str, Any]]:
    """What the registry API serves for the stream."""
    return [deployment.to_json() for deployment in deployment_history(events)]


def started(deployment: Deployment) -> EventPayload:
    return deployment_started(VIEW_NAME, deployment)


def ready(deployment: Deployment, readiness: Readiness | None = None) -> EventPayload:
    return deployment_ready(VIEW_NAME, deployment, readiness)


def activated(deployment: Deployment) -> EventPayload:
    return version_activated(VIEW_NAME, deployment)


def failed(deployment: Deployment, reason: str) -> EventPayload:
    return deployment_failed(VIEW_NAME, deployment, reason)


def waiting(deployment: Deployment) -> EventPayload:
    return deployment_waiting(VIEW_NAME, deployment, "clicks")


def resumed(deployment: Deployment) -> EventPayload:
    return deployment_resumed(VIEW_NAME, deployment)


READINESS: Readiness = {"source_offsets": {"0": 12, "1": 4}, "green_watermark": 1_000,
                        "blue_watermark": 990}
SAVEPOINT = "file:///savepoints/sp-1"
BREAKING_LIFECYCLE: list[Step] = [
    (started(BREAKING), 0),
    (ready(BREAKING, READINESS), 90),
    (activated(BREAKING), 91),
    (version_retired(VIEW_NAME, BREAKING, SAVEPOINT), 95),
]
BREAKING_STARTED = {
    "deployment": 2, "version": 2, "kind": "blue_green", "namespace": "v2", "job_id": "job-2",
    "blue_version": 1, "blue_namespace": "v1", "blue_job_id": "job-1",
    "requested_by": "deployer", "started_at": at(0)}


@pytest.mark.parametrize(("recorded_steps", "expected"), [
    pytest.param(1, {"state": "started"}, id="started"),
    pytest.param(2, {"state": "ready", "ready_at": at(90), "readiness": READINESS},
                 id="ready"),
    pytest.param(3, {"state": "activated", "ready_at": at(90), "readiness": READINESS,
                     "activated_at": at(91)}, id="activated, blue still running"),
    pytest.param(4, {"state": "completed", "ready_at": at(90), "readiness": READINESS,
                     "activated_at": at(91), "retired_at": at(95), "savepoint": SAVEPOINT},
                 id="completed once blue is retired"),
])
def test_a_blue_green_deployment_moves_through_its_states(recorded_steps: int,
                                                          expected: dict[str, Any]) -> None:
    history = served(recorded(BREAKING_LIFECYCLE[:recorded_steps]))
    assert history == [BREAKING_STARTED | expected]


FIRST_READINESS: Readiness = {"source_offsets": {"0": 12, "1": 4}, "green_watermark": 7,
                              "blue_watermark": None}
WAITED = {"waiting_since": at(1), "waiting_reason": "source topic 'clicks' does not exist yet"}
WAITING_LIFECYCLE: list[Step] = [
    (started(FIRST), 0),
    (waiting(FIRST), 1),
    (resumed(FIRST), 3600),
    (ready(FIRST, FIRST_READINESS), 3630),
    (activated(FIRST), 3631),
]


@pytest.mark.parametrize(("recorded_steps", "expected"), [
    pytest.param(2, {"state": "waiting", **WAITED}, id="waiting, with the reason and since when"),
    pytest.param(3, {"state": "started", **WAITED, "resumed_at": at(3600)},
                 id="started again once the topic is there"),
    pytest.param(5, {"state": "completed", **WAITED, "resumed_at": at(3600),
                     "ready_at": at(3630), "readiness": FIRST_READINESS,
                     "activated_at": at(3631)}, id="completed, the wait kept in the record"),
])
def test_a_deployment_waiting_for_its_source_topic_shows_it(recorded_steps: int,
                                                            expected: dict[str, Any]) -> None:
    [record] = served(recorded(WAITING_LIFECYCLE[:recorded_steps]))
    assert record == {
        "deployment": 1, "version": 1, "kind": "blue_green", "namespace": "v1",
        "job_id": "job-1", "blue_version": None, "blue_namespace": None, "blue_job_id": None,
        "requested_by": "deployer", "started_at": at(0)} | expected


@pytest.mark.parametrize(("deployment", "steps", "expected"), [
    pytest.param(FIRST, [(started(FIRST), 0), (ready(FIRST, FIRST_READINESS), 30),
                         (activated(FIRST), 31)],
                 {"kind": "blue_green", "job_id": "job-1", "blue_version": None,
                  "readiness": FIRST_READINESS, "ready_at": at(30), "activated_at": at(31)},
                 id="first version: nothing to retire"),
    pytest.param(METADATA, [(started(METADATA), 0), (ready(METADATA), 0),
                            (activated(METADATA), 1)],
                 {"kind": "flip", "job_id": None, "blue_version": 2, "readiness": {},
                  "ready_at": at(0), "activated_at": at(1)},
                 id="metadata flip: no job"),
])
def test_an_activation_with_no_blue_job_is_complete(deployment: Deployment, steps: list[Step],
                                                    expected: dict[str, Any]) -> None:
    [record] = served(recorded(steps))
    assert record["state"] == "completed"
    assert record["deployment"] == record["version"] == deployment.version
    assert {k: record.get(k) for k in expected} == expected
    assert "retired_at" not in record and "savepoint" not in record


@pytest.mark.parametrize(("steps", "error"), [
    pytest.param([(started(BREAKING), 0),
                  (failed(BREAKING, "green was not ready within 600 s"), 600)],
                 "green was not ready within 600 s", id="deadline"),
    pytest.param([(started(BREAKING), 0), (failed(BREAKING, "superseded by version 3"), 600)],
                 "superseded by version 3", id="abandoned"),
    pytest.param([(started(BREAKING), 0), (waiting(BREAKING), 1),
                  (failed(BREAKING, "superseded by version 3"), 600)],
                 "superseded by version 3", id="abandoned while waiting for its topic"),
    pytest.param([(started(BREAKING), 0), (ready(BREAKING, READINESS), 90),
                  (failed(BREAKING, "boom"), 600)],
                 "boom", id="after ready"),
])
def test_a_failed_deployment_says_why_and_when(steps: list[Step], error: str) -> None:
    [record] = served(recorded(steps))
    assert record["state"] == "failed"
    assert record["error"] == error
    assert (record["started_at"], record["failed_at"]) == (at(0), at(600))
    assert record["job_id"] == "job-2"
    assert "activated_at" not in record


def test_deployments_are_listed_newest_first_by_number() -> None:
    numbered = [Deployment(n, n, BLUE_GREEN, f"v{n}", f"job-{n}", None, None, None, T0)
                for n in (2, 9, 10, 1)]
    history = served(recorded([(started(d), d.number) for d in numbered]))
    assert [r["deployment"] for r in history] == [10, 9, 2, 1]
    assert [r["started_at"] for r in history] == [at(10), at(9), at(2), at(1)]


def test_events_that_are_not_about_a_deployment_are_skipped() -> None:
    others = [RecordedEvent(1, STREAM, 1, RollbackRequested(view=VIEW_NAME, to_version=1),
                            {"actor": "alice"}, T0),
              RecordedEvent(2, STREAM, 2, NamespacePurged(view=VIEW_NAME, namespace="v1",
                                                          keys_deleted=3), DEPLOYER, T0),
              RecordedEvent(3, f"feature_view:{VIEW_NAME}", 1, DefinitionRegistered(
                  kind="feature_view", name=VIEW_NAME, version=1, from_version=None, spec={},
                  spec_hash="h", change_class=None), {"actor": "alice"}, T0)]
    assert served([]) == []
    assert served(others) == []
    assert served([*others, *recorded(BREAKING_LIFECYCLE[:1])]) == [
        BREAKING_STARTED | {"state": "started"}]


def test_a_step_of_a_deployment_that_never_started_is_skipped() -> None:
    assert served(recorded([(ready(BREAKING, READINESS), 0), (activated(BREAKING), 1)])) == []


def test_requested_by_is_the_actor_recorded_with_the_start() -> None:
    [record] = served(recorded(BREAKING_LIFECYCLE[:1], {"actor": "ci"}))
    assert record["requested_by"] == "ci"


def test_interleaved_deployments_keep_their_own_records() -> None:
    steps: list[Step] = [
        (started(FIRST), 0), (ready(FIRST), 1), (activated(FIRST), 2),
        (started(BREAKING), 10), (failed(BREAKING, "superseded by version 3"), 20),
        (started(METADATA), 21), (ready(METADATA), 21),
    ]
    history = served(recorded(steps))
    assert [(r["deployment"], r["state"], r.get("error")) for r in history] == [
        (3, "ready", None), (2, "failed", "superseded by version 3"), (1, "completed", None)]


def test_the_history_of_stored_events_is_what_the_registry_served_before() -> None:
    """The fixture's events, written before events were typed, and the history the registry
    computed from them then."""
    stream = [e for e in fixture_events() if e.stream == STREAM]
    assert served(stream) == FIXTURE["deployments"]


@pytest.mark.parametrize("record", [
    Deployment(4, 3, BLUE_GREEN, "v3", "green", 2, "v2", "blue", T0),
    Deployment(4, 3, FLIP, "v2", None, 2, "v2", None, T0, DeploymentState.FAILED, "ci",
               T0 + timedelta(seconds=1), {"green_watermark": 5}, None, None, None,
               T0 + timedelta(seconds=2), "boom"),
    Deployment(4, 3, BLUE_GREEN, "v3", "green", 2, "v2", "blue", T0,
               DeploymentState.COMPLETED, "deployer", T0, dict(READINESS), T0, T0, None),
    replace(Deployment(4, 3, BLUE_GREEN, "v3", "green", 2, "v2", "blue", T0),
            state=DeploymentState.WAITING, waiting_since=T0 + timedelta(seconds=1),
            waiting_reason="source topic 'clicks' does not exist yet"),
    replace(Deployment(4, 3, BLUE_GREEN, "v3", "green", 2, "v2", "blue", T0),
            waiting_since=T0 + timedelta(seconds=1), waiting_reason="no topic",
            resumed_at=T0 + timedelta(hours=1)),
], ids=["started", "failed", "completed", "waiting", "resumed"])
def test_a_record_survives_its_json(record: Deployment) -> None:
    assert Deployment.from_json(record.to_json()) == record


# --------------------------------------------------------------------------- from the simulator

def history_of(sim: Sim) -> list[dict[str, Any]]:
    """What the registry serves for a simulated view: its deployment stream's history."""
    return served(deployment_events(sim.log))


def deployment_events(log: Sequence[RecordedEvent]) -> list[RecordedEvent]:
    return [event for event in log if event.stream == DEPLOYMENT_STREAM]


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_deployer_acts_on_the_in_flight_record_of_the_history(name: str) -> None:
    """One projection: after every event, the deployment the deployer holds in flight is
    the registry's record of the newest deployment, while that one is in flight."""
    sim = scenario(name)
    for logged in range(len(sim.log) + 1):
        newest = next(iter(deployment_history(deployment_events(sim.log[:logged]))), None)
        in_flight = fold(sim.log[:logged], sim.config).in_flight
        assert in_flight == (newest if newest is not None and newest.in_flight else None)


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
    pytest.param("waiting for the source topic", [(1, 1, "completed", None)],
                 id="waited for its source topic"),
    pytest.param("superseded while waiting for the source topic", [
        (2, 2, "completed", None), (1, 1, "failed", "superseded by version 2")],
                 id="superseded while waiting"),
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
    starts = {e.payload.deployment: e.recorded_at for e in sim.log
              if isinstance(e.payload, DeploymentStarted)}
    assert {r["deployment"]: datetime.fromisoformat(r["started_at"]) for r in history} == starts
    assert [r["deployment"] for r in history] == sorted(starts, reverse=True)

"""The rollout state machine, driven without services.

A tiny simulator stands in for the deployer worker: it asks :func:`decide` for the next
action, turns it into the event the worker would record (with a controllable outcome for
``AdvanceGreen``), appends it to an in-memory log and folds it with :func:`evolve`.  Every
scenario is therefore a readable list of actions, and every invariant is checked after
every recorded event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.domain.changes import ChangeClass, classify, diff_specs
from core.domain.definitions import Kind, canonical_spec, parse_definition
from core.domain.deployments import Deployment, DeploymentState, at_epoch_ms, epoch_ms
from core.domain.events import (
    DefinitionRegistered,
    DeploymentFailed,
    DeploymentKind,
    DeploymentReady,
    DeploymentResumed,
    DeploymentWaiting,
    EventPayload,
    EventType,
    NamespacePurged,
    NewEvent,
    Readiness,
    RecordedEvent,
    RollbackRequested,
    UnknownEvent,
    VersionActivated,
    VersionRetired,
    deployment_stream,
    encode_event,
)
from core.domain.layout import job_id, namespace_of
from deployer.rollout import (
    Action,
    Activate,
    AdvanceGreen,
    AwaitSourceTopic,
    MarkReady,
    PurgeNamespace,
    RetireBlue,
    RolloutConfig,
    StartDeployment,
    ViewState,
    decide,
    deployment_failed,
    deployment_ready,
    deployment_resumed,
    deployment_started,
    deployment_waiting,
    evolve,
    state_from_json,
    state_to_json,
    version_activated,
    version_map_after,
    version_retired,
    view_of,
)
from tests.unit.test_definitions import SOURCE, VIEW, Edits, contract, edited
from tests.unit.test_events import FIXTURE, fixture_events

VIEW_NAME = contract()[VIEW]["name"]
SOURCE_TOPIC = contract()[SOURCE]["topic"]
DEFINITION_STREAM = f"{Kind.FEATURE_VIEW}:{VIEW_NAME}"
DEPLOYMENT_STREAM = deployment_stream(VIEW_NAME)
CONFIG = RolloutConfig()
BLUE_GREEN, FLIP = DeploymentKind.BLUE_GREEN, DeploymentKind.FLIP
DEPLOYER = {"actor": "deployer"}
T0 = 1_700_000_000_000
TICK = 1_000
"""The simulated worker's clock moves one tick per decision."""


def job(namespace: str, deployment: int) -> str:
    return job_id(VIEW_NAME, namespace, deployment)


# --------------------------------------------------------------------------- specs

METADATA_EDIT: Edits = {("description",): "Clicks per user (edited)", ("ttl",): "3h"}
ADDITIVE_EDIT: Edits = {("features", 4): {"name": "clicks_1d", "aggregation": "count",
                                           "window": "1d"}}
BREAKING_EDIT: Edits = {("features", 0, "window"): "2h"}


def spec_of(*edits: Edits) -> dict[str, Any]:
    """The canonical spec of the contract's feature view with ``edits`` applied in order."""
    raw = contract()[VIEW]
    for edit in edits:
        raw = edited(raw, edit)
    return canonical_spec(parse_definition(raw))


V1 = spec_of()
BREAKING = spec_of(BREAKING_EDIT)
BREAKING_META = spec_of(BREAKING_EDIT, METADATA_EDIT)
ADDITIVE = spec_of(ADDITIVE_EDIT)


@pytest.mark.parametrize(("old", "new", "change_class"), [
    pytest.param(V1, BREAKING, ChangeClass.BREAKING, id="breaking"),
    pytest.param(BREAKING, BREAKING_META, ChangeClass.METADATA, id="metadata"),
    pytest.param(V1, ADDITIVE, ChangeClass.ADDITIVE, id="additive"),
    pytest.param(V1, BREAKING_META, ChangeClass.BREAKING, id="breaking plus metadata"),
])
def test_the_scenario_specs_have_the_intended_change_classes(
        old: dict[str, Any], new: dict[str, Any], change_class: ChangeClass) -> None:
    assert classify(Kind.FEATURE_VIEW, diff_specs(old, new)) is change_class


# --------------------------------------------------------------------------- the simulator

WAITING, GREEN_READY, GREEN_FAILED = "waiting", "ready", "failed"
TOPIC_MISSING = "topic missing"


@dataclass(frozen=True)
class Green:
    """What ``AdvanceGreen`` finds, standing in for ``GreenRunner.advance``: a function of the
    deployment and the clock only (a restarted worker sees the same)."""

    slow: Mapping[int, int] = field(default_factory=dict)
    """Version → how long its green takes to catch up (others are ready at once)."""
    failing: frozenset[int] = frozenset()
    """Versions whose green job dies."""
    topic_from: int | None = None
    """When the source topic appears (None: it always existed)."""

    def topic_exists(self, now_ms: int) -> bool:
        return self.topic_from is None or now_ms >= self.topic_from

    def outcome(self, action: AdvanceGreen, now_ms: int) -> tuple[str, str | None]:
        deployment = action.deployment
        if not self.topic_exists(now_ms):
            return TOPIC_MISSING, None
        if deployment.version in self.failing:
            return GREEN_FAILED, f"green job {deployment.job_id} is FAILED: boom"
        if now_ms > action.deadline_ms:
            waited_s = (action.deadline_ms - deployment.submittable_since_ms) // 1000
            return GREEN_FAILED, f"green was not ready within {waited_s} s"
        if now_ms - deployment.submittable_since_ms >= self.slow.get(deployment.version, 0):
            return GREEN_READY, None
        return WAITING, None


@dataclass(frozen=True)
class Step:
    now_ms: int
    logged: int
    """How many events the log held when the action was decided."""
    state: ViewState
    """The state the action was decided on."""
    action: Action
    event: RecordedEvent | None
    """What the worker recorded (None: a green still on its way)."""


def describe(action: Action) -> str:
    """One readable line per action, for asserting whole scenarios."""
    if isinstance(action, StartDeployment):
        d = action.deployment
        return f"start {d.kind} v{d.version} in {d.namespace}"
    if isinstance(action, PurgeNamespace):
        return f"purge {action.namespace}"
    d = action.deployment
    if isinstance(action, AdvanceGreen):
        return f"advance green v{d.version}"
    if isinstance(action, AwaitSourceTopic):
        return f"await the source topic of v{d.version}"
    if isinstance(action, MarkReady):
        return f"mark v{d.version} ready"
    if isinstance(action, Activate):
        return f"activate v{d.version}"
    if isinstance(action, RetireBlue):
        return f"retire v{d.blue_version}"
    return f"abandon v{d.version}: {action.reason}"


def fold(events: Sequence[RecordedEvent], config: RolloutConfig = CONFIG,
         state: ViewState | None = None) -> ViewState:
    for event in events:
        state = evolve(state or ViewState(VIEW_NAME), event, config)
    return state or ViewState(VIEW_NAME)


def round_trip(state: ViewState) -> ViewState:
    """Through the checkpoint table: ``state_to_json`` → JSON text → ``state_from_json``."""
    return state_from_json(json.loads(json.dumps(state_to_json(state))))


def revive(log: Sequence[RecordedEvent], config: RolloutConfig) -> ViewState:
    """A new worker's state: a checkpoint saved halfway, then the rest of the log."""
    checkpoint = round_trip(fold(log[:len(log) // 2], config))
    return fold(log[len(log) // 2:], config, checkpoint)


@dataclass
class Sim:
    """One feature view, its event log and a worker folding it; ``crash_after`` kills the
    worker once the log holds that many events (it restarts from a checkpoint and the log)."""

    config: RolloutConfig = CONFIG
    green: Green = field(default_factory=Green)
    crash_after: int | None = None
    log: list[RecordedEvent] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    state: ViewState = field(default_factory=lambda: ViewState(VIEW_NAME))
    now: int = T0
    registered: int = 0
    blocked: set[int] = field(default_factory=set)
    """Versions that failed and were not requested again since."""

    # ----------------------------------------------------------- what users do

    def register(self, spec: Mapping[str, Any]) -> int:
        self.registered += 1
        self._append(DEFINITION_STREAM, self.registered, DefinitionRegistered(
            kind=Kind.FEATURE_VIEW.value, name=VIEW_NAME, version=self.registered,
            from_version=self.registered - 1 or None, spec=dict(spec),
            spec_hash=f"hash of v{self.registered}", change_class=None))
        return self.registered

    def request_rollback(self, version: int) -> None:
        self._append(DEPLOYMENT_STREAM, self._deployment_stream_version() + 1,
                     RollbackRequested(view=VIEW_NAME, to_version=version))

    def wait(self, ms: int) -> None:
        self.now += ms

    # ----------------------------------------------------------- what the worker does

    def step(self, outcome: str | None = None) -> Action | None:
        """Decide, perform, record.  ``outcome`` overrides what an AdvanceGreen finds."""
        self.now += TICK
        state, logged = self.state, len(self.log)
        action = decide(state, self.now, self.config)
        if action is None:
            return None
        self._check_action(state, action)
        payload = self._outcome(action, outcome)
        event = None
        if payload is not None:
            assert self._deployment_stream_version() == state.stream_version, \
                "the worker appends at the stream version it folded"
            event = self._append(DEPLOYMENT_STREAM, state.stream_version + 1, payload)
        self.steps.append(Step(self.now, logged, state, action, event))
        if isinstance(action, Activate):
            assert self.state.serveable == action.version_map, "the map written is the map held"
        return action

    def run(self, max_steps: int = 500) -> list[str]:
        """Steps until the view is where it should be; the actions taken, described."""
        taken: list[str] = []
        for _ in range(max_steps):
            action = self.step()
            if action is None:
                return taken
            taken.append(describe(action))
        raise AssertionError(f"no quiescence after {max_steps} steps: {taken[-10:]}")

    def _outcome(self, action: Action, outcome: str | None) -> EventPayload | None:
        """The event the worker records for ``action`` (as deployer.worker does)."""
        if isinstance(action, PurgeNamespace):
            return NamespacePurged(view=VIEW_NAME, namespace=action.namespace, keys_deleted=7)
        d = action.deployment
        if isinstance(action, StartDeployment):
            return deployment_started(VIEW_NAME, d)
        if isinstance(action, MarkReady):
            return deployment_ready(VIEW_NAME, d)
        if isinstance(action, AdvanceGreen):
            found, reason = self.green.outcome(action, self.now)
            if outcome is not None:
                found, reason = outcome, f"green job {d.job_id} is FAILED: scripted"
            if found == GREEN_READY:
                return deployment_ready(VIEW_NAME, d, {
                    "source_offsets": {"0": self.now}, "green_watermark": self.now,
                    "blue_watermark": self.now})
            if found == GREEN_FAILED:
                assert reason is not None
                return deployment_failed(VIEW_NAME, d, reason)
            if found == TOPIC_MISSING:
                return deployment_waiting(VIEW_NAME, d, SOURCE_TOPIC)
            return None
        if isinstance(action, AwaitSourceTopic):
            appeared = self.green.topic_exists(self.now) if outcome is None \
                else outcome != TOPIC_MISSING
            return deployment_resumed(VIEW_NAME, d) if appeared else None
        if isinstance(action, Activate):
            return version_activated(VIEW_NAME, d)
        if isinstance(action, RetireBlue):
            return version_retired(VIEW_NAME, d, f"file:///savepoints/{d.blue_job_id}")
        return deployment_failed(VIEW_NAME, d, action.reason)

    # ----------------------------------------------------------- the log

    def _deployment_stream_version(self) -> int:
        return sum(e.stream == DEPLOYMENT_STREAM for e in self.log)

    def _append(self, stream: str, version: int, payload: EventPayload) -> RecordedEvent:
        event = RecordedEvent(len(self.log) + 1, stream, version, payload, DEPLOYER,
                              at_epoch_ms(self.now))
        self.log.append(event)
        self.state = evolve(self.state, event, self.config)
        if isinstance(payload, DeploymentFailed):
            self.blocked.add(payload.version)
        if isinstance(payload, RollbackRequested):
            self.blocked.discard(payload.to_version)
        if len(self.log) == self.crash_after:
            self.state = revive(self.log, self.config)
        check_state(self.state, self.log, self.config)
        return event

    # ----------------------------------------------------------- invariants

    def _check_action(self, state: ViewState, action: Action) -> None:
        if isinstance(action, StartDeployment):
            d = action.deployment
            assert state.in_flight is None, "one deployment at a time"
            assert d.version not in self.blocked, f"v{d.version} failed and was not re-requested"
            assert d.number == state.deployments + 1
            if d.kind == BLUE_GREEN:
                assert d.namespace == namespace_of(d.version)
                assert d.job_id == job(d.namespace, d.number)
                assert d.job_id not in state.jobs.values(), "a fresh job id"
                assert d.blue_job_id == state.jobs.get(state.active_namespace or "")
            else:
                assert d.kind == FLIP and d.job_id is None and d.blue_job_id is None
                assert d.namespace in state.jobs, "a flip shares a maintained namespace"
        if isinstance(action, Activate):
            d = action.deployment
            assert action.version_map.get(d.version) == d.namespace
            assert len(set(action.version_map.values())) <= self.config.keep_namespaces
        if isinstance(action, PurgeNamespace):
            assert action.namespace not in state.jobs, "never purge a maintained namespace"
            assert action.namespace not in state.serveable.values(), "never purge a mapped one"
            assert self.now - state.unmapped_since[action.namespace] >= \
                self.config.purge_grace_ms


def check_state(state: ViewState, log: Sequence[RecordedEvent], config: RolloutConfig,
                ) -> None:
    """What holds after every recorded event."""
    activations = [e.payload for e in log if isinstance(e.payload, VersionActivated)]
    if activations:
        last = activations[-1]
        assert state.active == last.version, "active is the last activated version"
        assert state.serveable.get(last.version) == last.namespace, "the map holds active"
        assert state.active_namespace in state.jobs, "the active namespace is maintained"
    else:
        assert state.active is None and not state.serveable
    assert len(set(state.serveable.values())) <= config.keep_namespaces
    assert len(set(state.jobs.values())) == len(state.jobs), "one job per namespace"
    if state.in_flight is None:
        assert set(state.jobs) <= {state.active_namespace}, "no job outlives its rollout"
    assert not set(state.unmapped_since) & set(state.serveable.values())
    assert state.active not in state.failed, "only a deployment in flight can fail"


# --------------------------------------------------------------------------- scenarios

Script = list[Callable[[Sim], object]]


def register(spec: Mapping[str, Any]) -> Callable[[Sim], object]:
    return lambda sim: sim.register(spec)


def rollback(version: int) -> Callable[[Sim], object]:
    return lambda sim: sim.request_rollback(version)


def run(sim: Sim) -> object:
    return sim.run()


def wait(ms: int) -> Callable[[Sim], object]:
    return lambda sim: sim.wait(ms)


def steps(n: int) -> Callable[[Sim], object]:
    return lambda sim: [sim.step() for _ in range(n)]


def heal(sim: Sim) -> None:
    """Whatever broke green is fixed (a later rollback to the failed version succeeds)."""
    sim.green = Green()


def play(script: Script, **sim_args: Any) -> Sim:
    sim = Sim(**sim_args)
    for item in script:
        item(sim)
    return sim


V1_ACTIVE: Script = [register(V1), run]
V2_ACTIVE: Script = [*V1_ACTIVE, register(BREAKING), run]
V3_ACTIVE: Script = [*V2_ACTIVE, register(BREAKING_META), run]
FIVE_VERSIONS: Script = [*V3_ACTIVE, register(ADDITIVE), run, register(V1), run]

SCENARIOS: dict[str, tuple[Script, dict[str, Any]]] = {
    "first version": (V1_ACTIVE, {}),
    "breaking": (V2_ACTIVE, {}),
    "metadata": (V3_ACTIVE, {}),
    "additive": ([*V1_ACTIVE, register(ADDITIVE), run], {}),
    "rollback needing a new job": ([*V2_ACTIVE, rollback(1), run], {}),
    "rollback by flip": ([*V3_ACTIVE, rollback(2), run], {}),
    "failed green, then a rollback to it": (
        [*V1_ACTIVE, register(BREAKING), run, heal, rollback(2), run],
        {"green": Green(failing=frozenset({2}))}),
    "superseded": ([*V1_ACTIVE, register(BREAKING), steps(2), register(BREAKING_META), run],
                   {"green": Green(slow={2: 5 * TICK, 3: 5 * TICK})}),
    "deadline": ([*V1_ACTIVE, register(BREAKING), run],
                 {"green": Green(slow={2: 10 * TICK}),
                  "config": RolloutConfig(ready_deadline_ms=4 * TICK)}),
    "rollback into a namespace awaiting its purge": (
        [*V2_ACTIVE, rollback(1), run, wait(CONFIG.purge_grace_ms), run],
        {"config": RolloutConfig(keep_namespaces=1)}),
    "namespaces dropped and purged": (
        [*FIVE_VERSIONS, wait(CONFIG.purge_grace_ms), run],
        {"config": RolloutConfig(keep_namespaces=2)}),
    "waiting for the source topic": (
        [register(V1), run],
        {"green": Green(slow={1: 3 * TICK}, topic_from=T0 + 10 * TICK),
         "config": RolloutConfig(ready_deadline_ms=4 * TICK)}),
    "superseded while waiting for the source topic": (
        [register(V1), steps(3), register(BREAKING), run],
        {"green": Green(topic_from=T0 + 10 * TICK)}),
}


def scenario(name: str, **overrides: Any) -> Sim:
    script, sim_args = SCENARIOS[name]
    return play(script, **{**sim_args, **overrides})


def event_types(sim: Sim, since: int = 0) -> list[str]:
    return [e.type for e in sim.log[since:]]


def test_the_first_version_is_blue_green_with_nothing_to_retire() -> None:
    sim = Sim()
    sim.register(V1)

    assert sim.run() == ["start blue_green v1 in v1", "advance green v1", "activate v1"]

    state = sim.state
    assert (state.desired, state.active, state.in_flight) == (1, 1, None)
    assert state.serveable == {1: "v1"}
    assert state.jobs == {"v1": job("v1", 1)}
    assert event_types(sim) == ["DefinitionRegistered", "DeploymentStarted", "DeploymentReady",
                                "VersionActivated"]
    started = sim.log[1].data
    assert started == {"view": VIEW_NAME, "deployment": 1, "version": 1, "namespace": "v1",
                       "kind": BLUE_GREEN, "job_id": job("v1", 1), "blue_version": None,
                       "blue_namespace": None, "blue_job_id": None}
    assert decide(state, sim.now + 10 * CONFIG.purge_grace_ms, CONFIG) is None


def test_a_breaking_version_goes_blue_green_and_retires_blue() -> None:
    sim = play(V1_ACTIVE)
    sim.register(BREAKING)

    assert sim.run() == ["start blue_green v2 in v2", "advance green v2", "activate v2",
                         "retire v1"]

    start = sim.steps[-4].action
    assert isinstance(start, StartDeployment)
    assert start.deployment == replace(start.deployment, number=2, job_id=job("v2", 2),
                                       blue_version=1, blue_namespace="v1",
                                       blue_job_id=job("v1", 1))
    activate = sim.steps[-2].action
    assert isinstance(activate, Activate) and activate.version_map == {1: "v1", 2: "v2"}
    retired = sim.log[-1].payload
    assert isinstance(retired, VersionRetired)
    assert retired.job_id == job("v1", 1)
    assert retired.retired_version == 1
    state = sim.state
    assert (state.active, state.in_flight) == (2, None)
    assert state.serveable == {1: "v1", 2: "v2"}, "v1 stays serveable for pinned reads"
    assert state.jobs == {"v2": job("v2", 2)}
    assert decide(state, sim.now, CONFIG) is None


def test_a_metadata_version_flips_into_the_active_namespace_without_a_job() -> None:
    sim = play(V2_ACTIVE)
    sim.register(BREAKING_META)

    assert sim.run() == ["start flip v3 in v2", "mark v3 ready", "activate v3"]

    flip = sim.steps[-3].action
    assert isinstance(flip, StartDeployment)
    assert (flip.deployment.job_id, flip.deployment.blue_job_id) == (None, None)
    assert (flip.deployment.blue_version, flip.deployment.blue_namespace) == (2, "v2")
    assert EventType.VERSION_RETIRED not in event_types(sim, since=-4), "nothing to retire"
    assert sim.state.serveable == {1: "v1", 2: "v2", 3: "v2"}
    assert sim.state.jobs == {"v2": job("v2", 2)}, "the running job is kept as it is"
    assert sim.state.in_flight is None


def test_an_additive_version_goes_blue_green() -> None:
    sim = play(V1_ACTIVE)
    sim.register(ADDITIVE)

    assert sim.run() == ["start blue_green v2 in v2", "advance green v2", "activate v2",
                         "retire v1"]
    assert sim.state.jobs == {"v2": job("v2", 2)}


def test_a_rollback_to_an_unmaintained_version_rebuilds_it_with_a_new_job() -> None:
    sim = play(V2_ACTIVE)
    sim.request_rollback(1)

    assert sim.run() == ["start blue_green v1 in v1", "advance green v1", "activate v1",
                         "retire v2"]

    start = sim.steps[-4].action
    assert isinstance(start, StartDeployment)
    assert start.deployment.number == 3
    assert start.deployment.job_id == job("v1", 3) != job("v1", 1), "a new job id"
    assert start.deployment.blue_job_id == job("v2", 2)
    assert (sim.state.active, sim.state.desired) == (1, 1)
    assert sim.state.serveable == {1: "v1", 2: "v2"}
    assert sim.state.jobs == {"v1": job("v1", 3)}


def test_a_rollback_between_metadata_versions_is_an_instant_flip() -> None:
    sim = play(V3_ACTIVE)
    sim.request_rollback(2)

    assert sim.run() == ["start flip v2 in v2", "mark v2 ready", "activate v2"]
    assert sim.state.active == 2
    assert sim.state.serveable == {1: "v1", 2: "v2", 3: "v2"}
    assert sim.state.jobs == {"v2": job("v2", 2)}


def test_a_rollback_to_the_active_version_does_nothing() -> None:
    sim = play(V2_ACTIVE)
    sim.request_rollback(2)
    assert sim.run() == []


def test_a_rollback_to_a_version_never_registered_waits_for_it() -> None:
    sim = play(V1_ACTIVE)
    sim.request_rollback(9)
    assert sim.run() == []
    assert (sim.state.desired, sim.state.active) == (9, 1)


@pytest.mark.parametrize("metadata_of", [1, 2])
def test_a_metadata_version_of_a_non_active_serveable_version_needs_a_job(
        metadata_of: int) -> None:
    """Only a *maintained* namespace can be shared: v1's data is no longer computed."""
    sim = play(V2_ACTIVE)
    sim.register(spec_of(METADATA_EDIT) if metadata_of == 1 else BREAKING_META)
    first = sim.run()[0]
    assert first == ("start blue_green v3 in v3" if metadata_of == 1 else "start flip v3 in v2")


# --------------------------------------------------------------------------- failures

def test_a_failed_green_leaves_blue_active_and_is_not_retried() -> None:
    sim = play(V1_ACTIVE, green=Green(failing=frozenset({2})))
    sim.register(BREAKING)

    assert sim.run() == ["start blue_green v2 in v2", "advance green v2"]

    failed = sim.log[-1].payload
    assert isinstance(failed, DeploymentFailed)
    assert failed.reason == f"green job {job('v2', 2)} is FAILED: boom"
    assert failed.job_id == job("v2", 2)
    state = sim.state
    assert (state.desired, state.active, state.in_flight) == (2, 1, None)
    assert state.failed == frozenset({2})
    assert state.serveable == {1: "v1"} and state.jobs == {"v1": job("v1", 1)}
    sim.wait(10 * CONFIG.purge_grace_ms)
    assert sim.run() == [], "no retry, no matter how long"


@pytest.mark.parametrize(("request_", "expected"), [
    pytest.param(register(BREAKING_META), "start blue_green v3 in v3", id="new registration"),
    pytest.param(rollback(2), "start blue_green v2 in v2", id="rollback request for it"),
])
def test_a_failed_version_is_deployed_again_only_when_asked(
        request_: Callable[[Sim], object], expected: str) -> None:
    sim = play([*V1_ACTIVE, register(BREAKING), run, heal],
               green=Green(failing=frozenset({2})))
    assert sim.run() == [], "a healed green is not retried on its own"

    request_(sim)

    actions = sim.run()
    assert actions[0] == expected
    start = sim.steps[-len(actions)].action
    assert isinstance(start, StartDeployment) and start.deployment.number == 3
    assert start.deployment.job_id == job(start.deployment.namespace, 3), "never the dead job"
    assert sim.state.active == sim.state.desired
    assert sim.state.failed == frozenset({2} if expected.endswith("v3") else ())


@pytest.mark.parametrize(("supersede", "expected"), [
    pytest.param(register(BREAKING_META), [
        "abandon v2: superseded by version 3", "start blue_green v3 in v3",
        "advance green v3", "advance green v3", "advance green v3", "advance green v3",
        "advance green v3", "activate v3", "retire v1"], id="by a new registration"),
    pytest.param(rollback(1), ["abandon v2: superseded by version 1"],
                 id="by a rollback to the active version"),
])
def test_a_deployment_superseded_while_starting_is_abandoned(
        supersede: Callable[[Sim], object], expected: list[str]) -> None:
    sim = play(V1_ACTIVE, green=Green(slow={2: 5 * TICK, 3: 5 * TICK}))
    sim.register(BREAKING)
    assert [describe(a) for a in (sim.step(), sim.step()) if a] == [
        "start blue_green v2 in v2", "advance green v2"]
    assert sim.state.in_flight is not None
    assert sim.state.in_flight.state is DeploymentState.STARTED

    supersede(sim)

    assert sim.run() == expected
    abandoned = next(e.payload for e in sim.log if isinstance(e.payload, DeploymentFailed))
    assert abandoned.job_id == job("v2", 2), "green is cancelled"
    assert sim.state.active == sim.state.desired
    assert 2 in sim.state.failed


def test_a_deployment_already_ready_is_activated_before_the_newer_version() -> None:
    sim = play(V1_ACTIVE)
    sim.register(BREAKING)
    assert [describe(a) for a in (sim.step(), sim.step()) if a] == [
        "start blue_green v2 in v2", "advance green v2"]
    sim.register(BREAKING_META)

    assert sim.run() == ["activate v2", "retire v1", "start flip v3 in v2", "mark v3 ready",
                         "activate v3"]


def test_the_green_deadline_is_counted_from_when_the_deployment_started() -> None:
    config = RolloutConfig(ready_deadline_ms=4 * TICK)
    sim = play(V1_ACTIVE, config=config, green=Green(slow={2: 10 * TICK}))
    sim.register(BREAKING)

    assert sim.run() == ["start blue_green v2 in v2"] + ["advance green v2"] * 5

    started = next(e for e in sim.log if e.type == EventType.DEPLOYMENT_STARTED
                   and e.payload.version == 2)
    advances = [s.action for s in sim.steps if isinstance(s.action, AdvanceGreen)
                and s.action.deployment.version == 2]
    assert {(a.deadline_ms, a.max_restarts) for a in advances} == {
        (epoch_ms(started.recorded_at) + config.ready_deadline_ms, config.max_restarts)}
    failed = sim.log[-1].payload
    assert isinstance(failed, DeploymentFailed)
    assert failed.reason == "green was not ready within 4 s"
    assert (sim.state.active, sim.state.failed) == (1, frozenset({2}))


@pytest.mark.parametrize("decided_at", [T0, T0 + 1, T0 + CONFIG.ready_deadline_ms * 3])
def test_advance_green_carries_started_at_plus_the_ready_deadline(decided_at: int) -> None:
    planned = decide(ViewState(VIEW_NAME, specs={1: V1}, desired=1), T0 - 50, CONFIG)
    assert isinstance(planned, StartDeployment)
    deployment = planned.deployment
    started = RecordedEvent(1, DEPLOYMENT_STREAM, 1, deployment_started(VIEW_NAME, deployment),
                            DEPLOYER, at_epoch_ms(T0 - 5))
    state = evolve(ViewState(VIEW_NAME, specs={1: V1}, desired=1), started, CONFIG)

    action = decide(state, decided_at, CONFIG)

    assert action == AdvanceGreen(
        replace(deployment, started_at=at_epoch_ms(T0 - 5), requested_by="deployer"),
        T0 - 5 + CONFIG.ready_deadline_ms, CONFIG.max_restarts)


# --------------------------------------------------------------------------- a missing source topic

def test_a_deployment_waits_for_its_source_topic_and_records_the_wait_once() -> None:
    sim = scenario("waiting for the source topic")

    assert [describe(step.action) for step in sim.steps] == [
        "start blue_green v1 in v1", "advance green v1",
        *["await the source topic of v1"] * 8, *["advance green v1"] * 3, "activate v1"]
    assert event_types(sim) == ["DefinitionRegistered", "DeploymentStarted",
                                "DeploymentWaiting", "DeploymentResumed", "DeploymentReady",
                                "VersionActivated"]
    waiting = sim.log[2].payload
    assert isinstance(waiting, DeploymentWaiting)
    assert (waiting.reason, waiting.topic) == (
        f"source topic {SOURCE_TOPIC!r} does not exist yet", SOURCE_TOPIC)
    awaited = [step.state.in_flight for step in sim.steps
               if isinstance(step.action, AwaitSourceTopic)]
    assert {d.state for d in awaited if d is not None} == {DeploymentState.WAITING}
    assert sim.state.active == 1


def test_the_ready_deadline_counts_from_when_the_source_topic_appeared() -> None:
    """The scenario waits 8 ticks with a deadline of 4: the wait does not count."""
    sim = scenario("waiting for the source topic")
    resumed = next(e for e in sim.log if isinstance(e.payload, DeploymentResumed))
    advances = [step.action for step in sim.steps if isinstance(step.action, AdvanceGreen)]

    assert {a.deadline_ms for a in advances[1:]} == {
        epoch_ms(resumed.recorded_at) + sim.config.ready_deadline_ms}
    assert advances[0].deadline_ms == advances[0].deployment.started_at_ms + \
        sim.config.ready_deadline_ms, "a deployment that never waited counts from its start"


def test_a_waiting_deployment_keeps_waiting_however_late_it_is() -> None:
    sim = play([register(V1), steps(2)], green=Green(topic_from=T0 + 10**9))
    waiting = sim.state.in_flight
    assert waiting is not None and waiting.state is DeploymentState.WAITING

    assert decide(sim.state, sim.now + 100 * CONFIG.ready_deadline_ms, CONFIG) == \
        AwaitSourceTopic(waiting)


def test_a_waiting_deployment_is_superseded_by_a_newer_version() -> None:
    sim = scenario("superseded while waiting for the source topic")

    assert [describe(step.action) for step in sim.steps[3:]] == [
        "abandon v1: superseded by version 2", "start blue_green v2 in v2",
        "advance green v2", *["await the source topic of v2"] * 4, "advance green v2",
        "activate v2"]
    assert [e.type for e in sim.log if isinstance(e.payload, DeploymentWaiting)] == [
        "DeploymentWaiting"] * 2, "each deployment records its own wait"
    assert (sim.state.active, sim.state.failed) == (2, frozenset({1}))


# --------------------------------------------------------------------------- namespaces

def test_the_version_map_keeps_the_newest_namespaces_and_purges_dropped_ones_later() -> None:
    config = RolloutConfig(keep_namespaces=2)
    sim = play(V3_ACTIVE, config=config)
    assert sim.state.serveable == {1: "v1", 2: "v2", 3: "v2"}, "v2 and v3 share one namespace"

    sim.register(ADDITIVE)
    assert sim.run() == ["start blue_green v4 in v4", "advance green v4", "activate v4",
                         "retire v3"]
    assert sim.state.serveable == {2: "v2", 3: "v2", 4: "v4"}
    dropped_at = sim.steps[-2].now_ms
    assert sim.state.unmapped_since == {"v1": dropped_at}

    sim.wait(dropped_at + config.purge_grace_ms - TICK - (sim.now + TICK))
    assert sim.run() == [], "one tick before the grace is over"
    assert sim.now == dropped_at + config.purge_grace_ms - TICK
    assert sim.run() == ["purge v1"], "the grace is over"
    assert sim.log[-1].data == {"view": VIEW_NAME, "namespace": "v1", "keys_deleted": 7}
    assert sim.state.unmapped_since == {}

    sim.register(V1)  # v5: the original spec again, a new namespace
    assert sim.run() == ["start blue_green v5 in v5", "advance green v5", "activate v5",
                         "retire v4"]
    assert sim.state.serveable == {4: "v4", 5: "v5"}
    sim.wait(config.purge_grace_ms)
    assert sim.run() == ["purge v2"], "v2 and v3 left together and are purged once"


def test_a_dropped_namespace_is_not_purged_while_its_blue_job_runs() -> None:
    config = RolloutConfig(keep_namespaces=1, purge_grace_ms=0)
    sim = play(V1_ACTIVE, config=config)
    sim.register(BREAKING)

    assert sim.run() == ["start blue_green v2 in v2", "advance green v2", "activate v2",
                         "retire v1", "purge v1"]

    retire = sim.steps[-2]
    assert retire.state.serveable == {2: "v2"}
    assert retire.state.unmapped_since == {"v1": sim.steps[-3].now_ms}
    assert retire.state.jobs == {"v1": job("v1", 1), "v2": job("v2", 2)}


DROPPED_V4 = ViewState(VIEW_NAME, specs={4: V1, 5: BREAKING}, desired=5, active=5,
                       serveable={5: "v5"}, jobs={"v5": job("v5", 5)},
                       unmapped_since={"v4": T0})


@pytest.mark.parametrize(("state", "elapsed", "expected"), [
    pytest.param(DROPPED_V4, CONFIG.purge_grace_ms - 1, None, id="within the grace"),
    pytest.param(DROPPED_V4, CONFIG.purge_grace_ms, PurgeNamespace("v4"), id="grace over"),
    pytest.param(replace(DROPPED_V4, jobs={**DROPPED_V4.jobs, "v4": job("v4", 4)}),
                 100 * CONFIG.purge_grace_ms, None, id="a job still maintains it"),
    pytest.param(replace(DROPPED_V4, unmapped_since={"v4": T0, "v1": T0 + 1}),
                 CONFIG.purge_grace_ms + 1, PurgeNamespace("v1"), id="in namespace order"),
    pytest.param(replace(DROPPED_V4, desired=4, failed=frozenset({4})),
                 CONFIG.purge_grace_ms, PurgeNamespace("v4"),
                 id="while the desired version is failed"),
])
def test_purging_waits_for_the_grace_and_for_no_job(state: ViewState, elapsed: int,
                                                    expected: Action | None) -> None:
    assert decide(state, T0 + elapsed, CONFIG) == expected


def test_a_rollback_into_a_namespace_awaiting_its_purge_keeps_it() -> None:
    config = RolloutConfig(keep_namespaces=1)
    sim = play(V2_ACTIVE, config=config)
    assert sim.state.unmapped_since == {"v1": sim.steps[-2].now_ms}
    sim.request_rollback(1)

    assert sim.run() == ["start blue_green v1 in v1", "advance green v1", "activate v1",
                         "retire v2"]
    assert sim.state.serveable == {1: "v1"}
    assert sim.state.unmapped_since == {"v2": sim.steps[-2].now_ms}, "v1 is mapped again"
    sim.wait(10 * config.purge_grace_ms)
    assert sim.run() == ["purge v2"]


@pytest.mark.parametrize(("serveable", "version", "namespace", "keep", "expected"), [
    pytest.param({}, 1, "v1", 3, {1: "v1"}, id="first"),
    pytest.param({1: "v1"}, 2, "v2", 3, {1: "v1", 2: "v2"}, id="second namespace"),
    pytest.param({1: "v1", 2: "v2"}, 3, "v2", 3, {1: "v1", 2: "v2", 3: "v2"},
                 id="metadata version shares"),
    pytest.param({1: "v1", 2: "v2", 3: "v2", 4: "v4"}, 5, "v5", 3,
                 {2: "v2", 3: "v2", 4: "v4", 5: "v5"}, id="shared namespace counts once"),
    pytest.param({1: "v1", 2: "v2", 3: "v2"}, 4, "v4", 1, {4: "v4"}, id="keep one"),
    pytest.param({2: "v2", 3: "v3", 4: "v4"}, 1, "v1", 3, {1: "v1", 3: "v3", 4: "v4"},
                 id="rollback keeps the active and the newest"),
    pytest.param({1: "v1", 2: "v2", 3: "v2"}, 2, "v2", 1, {2: "v2", 3: "v2"},
                 id="flip back within the namespace"),
    pytest.param({1: "v1", 2: "v2", 3: "v2"}, 3, "v3", 3, {1: "v1", 2: "v2", 3: "v3"},
                 id="a version rebuilt into its own namespace"),
    pytest.param({1: "v1", 2: "v2"}, 2, "v2", 3, {1: "v1", 2: "v2"}, id="unchanged"),
])
def test_version_map_after(serveable: dict[int, str], version: int, namespace: str,
                           keep: int, expected: dict[int, str]) -> None:
    result = version_map_after(serveable, version, namespace, keep)
    assert result == expected
    assert list(result) == sorted(result)


# --------------------------------------------------------------------------- small pieces

@pytest.mark.parametrize(("stream", "view"), [
    (f"feature_view:{VIEW_NAME}", VIEW_NAME),
    (DEPLOYMENT_STREAM, VIEW_NAME),
    ("source:clicks", None),
    ("entity:user", None),
    ("on_demand_feature_view:user_ratios", None),
])
def test_view_of(stream: str, view: str | None) -> None:
    assert view_of(stream) == view


DEPLOYMENT = Deployment(4, 3, BLUE_GREEN, "v3", "green", 2, "v2", "blue", at_epoch_ms(T0))
READINESS: Readiness = {"source_offsets": {"0": 12}, "green_watermark": 5,
                        "blue_watermark": None}


@pytest.mark.parametrize(("event", "expected_extra"), [
    pytest.param(deployment_started(VIEW_NAME, DEPLOYMENT), {
        "kind": "blue_green", "job_id": "green", "blue_version": 2, "blue_namespace": "v2",
        "blue_job_id": "blue"}, id="started names the jobs"),
    pytest.param(deployment_ready(VIEW_NAME, DEPLOYMENT, READINESS), dict(READINESS),
                 id="ready"),
    pytest.param(deployment_ready(VIEW_NAME, DEPLOYMENT), {}, id="ready without a green"),
    pytest.param(version_activated(VIEW_NAME, DEPLOYMENT), {}, id="activated"),
    pytest.param(version_retired(VIEW_NAME, DEPLOYMENT, "file:///sp"), {
        "retired_version": 2, "retired_namespace": "v2", "job_id": "blue",
        "savepoint": "file:///sp"}, id="retired names blue"),
    pytest.param(deployment_failed(VIEW_NAME, DEPLOYMENT, "x"),
                 {"reason": "x", "job_id": "green"}, id="failed names green"),
])
def test_rollout_events_name_view_deployment_version_and_namespace(
        event: EventPayload, expected_extra: dict[str, Any]) -> None:
    """As stored: the keys every reader of the event log knows."""
    assert encode_event(NewEvent(event)).data == {
        "view": VIEW_NAME, "deployment": 4, "version": 3, "namespace": "v3", **expected_extra}


@pytest.mark.parametrize("payload", [
    pytest.param(DeploymentReady(view=VIEW_NAME, deployment=1, version=1, namespace="v1"),
                 id="ready without a deployment"),
    pytest.param(UnknownEvent("SomethingElse", {}, 1), id="unknown type"),
])
def test_evolve_ignores_events_that_do_not_apply(payload: EventPayload | UnknownEvent,
                                                 ) -> None:
    state = fold(play(V1_ACTIVE).log)
    event = RecordedEvent(99, DEPLOYMENT_STREAM, state.stream_version + 1, payload, DEPLOYER,
                          at_epoch_ms(T0))
    assert evolve(state, event, CONFIG) == replace(state, stream_version=event.version)


def test_only_deployment_stream_events_move_the_stream_version() -> None:
    sim = play(V2_ACTIVE)
    assert sim.state.stream_version == sum(e.stream == DEPLOYMENT_STREAM for e in sim.log) == 7
    sim.register(BREAKING_META)
    assert sim.state.stream_version == 7
    sim.request_rollback(1)
    assert sim.state.stream_version == 8


# --------------------------------------------------------------------------- crash safety

@pytest.mark.parametrize("name", SCENARIOS)
def test_a_worker_dying_after_any_event_reaches_the_same_end(name: str) -> None:
    uninterrupted = scenario(name)
    for crash_after, event in enumerate(uninterrupted.log, start=1):
        resumed = scenario(name, crash_after=crash_after)

        where = f"died after event {crash_after} ({event.type})"
        assert resumed.state == uninterrupted.state, where
        assert resumed.log == uninterrupted.log, where


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_state_rebuilt_from_any_prefix_decides_the_same_action(name: str) -> None:
    sim = scenario(name)
    for step in sim.steps:
        prefix = sim.log[:step.logged]
        assert fold(prefix, sim.config) == step.state
        assert revive(prefix, sim.config) == step.state
        assert round_trip(step.state) == step.state
        assert decide(round_trip(step.state), step.now_ms, sim.config) == step.action


@pytest.mark.parametrize("name", SCENARIOS)
def test_checkpoints_are_plain_json(name: str) -> None:
    body = state_to_json(scenario(name).state)
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize("saved", ["in_flight", "settled"])
def test_a_checkpoint_written_before_the_shared_deployment_record_resumes_alike(
        saved: str) -> None:
    """The fixture's checkpoints were written by the deployer of the fixture's events, with
    the deployment in flight as a plan and a phase."""
    checkpoint = FIXTURE["checkpoints"][saved]
    log = [e for e in fixture_events() if view_of(e.stream) == VIEW_NAME]
    folded = [e for e in log if e.position <= checkpoint["position"]]
    fresh = fold(folded)

    revived = state_from_json(checkpoint["state"])

    if fresh.in_flight is not None:  # what the old checkpoint had no room for
        assert revived.in_flight is not None
        assert revived.in_flight.started_at_ms == fresh.in_flight.started_at_ms
        fresh = replace(fresh, in_flight=replace(
            fresh.in_flight, started_at=revived.in_flight.started_at, requested_by=None))
    assert revived == fresh
    assert fold(log[len(folded):], state=revived) == fold(log)


def test_the_version_map_always_holds_the_one_active_version() -> None:
    """Every scenario's every event was checked by ``check_state``; spot-check one trace."""
    sim = scenario("rollback by flip")
    actives = [fold(sim.log[:k]).active for k in range(len(sim.log) + 1)]
    activated = [e.payload.version for e in sim.log if isinstance(e.payload, VersionActivated)]
    assert activated == [1, 2, 3, 2]
    assert [a for i, a in enumerate(actives) if i == 0 or a != actives[i - 1]] == [
        None, 1, 2, 3, 2]


# --------------------------------------------------------------------------- random histories

EDITS_BY_CLASS: dict[ChangeClass, Callable[[dict[str, Any], int], None]] = {
    ChangeClass.METADATA: lambda raw, n: raw.update(description=f"revision {n}"),
    ChangeClass.ADDITIVE: lambda raw, n: raw["features"].append(
        {"name": f"extra_{n}", "aggregation": "count", "window": "1d"}),
    ChangeClass.BREAKING: lambda raw, n: raw["features"][0].update(window=f"{n + 1}h"),
}

requests = st.one_of(
    st.tuples(st.just("register"), st.sampled_from(list(ChangeClass))),
    st.tuples(st.just("rollback"), st.integers(min_value=0, max_value=30)),
    st.tuples(st.just("wait"), st.sampled_from([TICK, CONFIG.purge_grace_ms])),
)
outcomes = st.sampled_from([GREEN_READY, GREEN_READY, GREEN_READY, GREEN_FAILED, WAITING,
                            TOPIC_MISSING])
"""What each AdvanceGreen finds (ready most often, so that rollouts get somewhere), and
whether each AwaitSourceTopic finds the topic (anything but TOPIC_MISSING: it does)."""


History = list[tuple[tuple[str, Any], list[str]]]
"""Requests, each followed by worker steps (with what each AdvanceGreen among them finds)."""


def drive(sim: Sim, history: History) -> Sim:
    raw = contract()[VIEW]
    sim.register(canonical_spec(parse_definition(raw)))
    for n, ((request, arg), green_outcomes) in enumerate(history, start=1):
        if request == "register":
            EDITS_BY_CLASS[arg](raw, n)
            sim.register(canonical_spec(parse_definition(raw)))
        elif request == "rollback":
            sim.request_rollback(arg % sim.registered + 1)
        else:
            sim.wait(arg)
        for outcome in green_outcomes:
            sim.step(outcome)
    for _ in range(500):  # every green from now on catches up
        if sim.step(GREEN_READY) is None:
            return sim
    raise AssertionError("the rollout never settles")


histories = st.lists(st.tuples(requests, st.lists(outcomes, max_size=8)), max_size=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, st.integers(min_value=1, max_value=3))
def test_random_histories_keep_the_invariants(history: History, keep: int) -> None:
    """Every step is checked by the simulator (``_check_action``, ``check_state``)."""
    sim = drive(Sim(config=RolloutConfig(keep_namespaces=keep)), history)

    state = sim.state
    assert state.in_flight is None
    assert state.active == state.desired or state.desired in state.failed
    assert state.active is not None or state.desired in state.failed
    assert fold(sim.log, sim.config) == state
    assert round_trip(state) == state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, st.integers(min_value=1, max_value=120))
def test_random_histories_survive_a_worker_crash(history: History, crash_after: int) -> None:
    config = RolloutConfig(keep_namespaces=2)
    uninterrupted = drive(Sim(config=config), history)
    resumed = drive(Sim(config=config, crash_after=crash_after), history)

    assert resumed.log == uninterrupted.log
    assert resumed.state == uninterrupted.state

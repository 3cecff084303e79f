"""The rollout state machine: registry events in, the next actions out (pure; no I/O).

Per feature view, :func:`evolve` folds events into a :class:`ViewState` and :func:`decide`
says what must happen next.  The worker performs the action through adapters and records
its outcome as the next event, so a worker that dies at any point resumes from the log:

    DefinitionRegistered / RollbackRequested      (what should be active: ``desired``)
    DeploymentStarted(kind=blue_green|flip)       green job submitted for namespace v{N}
    DeploymentWaiting / DeploymentResumed         green's source topic missing / there
    DeploymentReady                               green caught up with blue
    VersionActivated                              version map flipped atomically
    VersionRetired                                blue stopped with a savepoint
    DeploymentFailed                              green cancelled, blue untouched
    NamespacePurged                               an old namespace deleted after the grace

A metadata-only change (relative to the *active* version) is a ``flip``: it shares the
active namespace and needs no job.  Any other change is blue/green into a fresh namespace.
The deployment in flight is the registry's projection of it
(:func:`core.domain.deployments.deployment_after`), so the deployer and the deployment
history name the same states.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict

from core.domain.changes import ChangeClass, classify, diff_specs
from core.domain.definitions import Kind
from core.domain.deployments import (
    Deployment,
    DeploymentState,
    at_epoch_ms,
    deployment_after,
    epoch_ms,
)
from core.domain.events import (
    DEPLOYMENT_STREAM_PREFIX,
    DefinitionRegistered,
    DeploymentFailed,
    DeploymentKind,
    DeploymentReady,
    DeploymentResumed,
    DeploymentStarted,
    DeploymentWaiting,
    NamespacePurged,
    Readiness,
    RecordedEvent,
    RollbackRequested,
    VersionActivated,
    VersionRetired,
)
from core.domain.layout import job_id, namespace_of


@dataclass(frozen=True)
class RolloutConfig:
    ready_deadline_ms: int = 600_000
    """A green not ready this long after it could be submitted fails (time spent waiting
    for its source topic does not count)."""
    max_restarts: int = 3
    """A green restarting more often than this is in a restart loop and fails."""
    keep_namespaces: int = 3
    """Namespaces (with every version sharing them) kept serveable for pinned reads."""
    purge_grace_ms: int = 600_000
    """How long a namespace that left the version map keeps its data."""


@dataclass(frozen=True)
class ViewState:
    view: str
    stream_version: int = 0
    """Version of the ``deployment:{view}`` stream, for appends with an expected version."""
    specs: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    desired: int | None = None
    active: int | None = None
    serveable: Mapping[int, str] = field(default_factory=dict)
    """The version map: version → namespace."""
    jobs: Mapping[str, str] = field(default_factory=dict)
    """Namespaces being maintained: namespace → running job id."""
    failed: frozenset[int] = frozenset()
    in_flight: Deployment | None = None
    deployments: int = 0
    unmapped_since: Mapping[str, int] = field(default_factory=dict)
    """Namespaces no longer in the version map (→ purge after the grace): since when."""

    @property
    def active_namespace(self) -> str | None:
        return None if self.active is None else self.serveable.get(self.active)


def view_of(stream: str) -> str | None:
    """The feature view an event stream belongs to, if any."""
    for prefix in (f"{Kind.FEATURE_VIEW}:", DEPLOYMENT_STREAM_PREFIX):
        if stream.startswith(prefix):
            return stream.removeprefix(prefix)
    return None


# --------------------------------------------------------------------------- evolve

def evolve(state: ViewState, event: RecordedEvent, config: RolloutConfig) -> ViewState:
    """The state after one event of the view's streams."""
    payload = event.payload
    if event.stream.startswith(DEPLOYMENT_STREAM_PREFIX):
        state = replace(state, stream_version=event.version)
    if isinstance(payload, DefinitionRegistered):
        return replace(state, specs={**state.specs, payload.version: payload.spec},
                       desired=payload.version)
    if isinstance(payload, RollbackRequested):
        return replace(state, desired=payload.to_version,
                       failed=state.failed - {payload.to_version})
    if isinstance(payload, NamespacePurged):
        unmapped = {ns: t for ns, t in state.unmapped_since.items() if ns != payload.namespace}
        return replace(state, unmapped_since=unmapped)
    if isinstance(payload, DeploymentStarted):
        state = replace(state, deployments=state.deployments + 1)
        if payload.kind is DeploymentKind.BLUE_GREEN:
            # green rebuilds its namespace: nobody may read it
            state = replace(state, serveable={v: ns for v, ns in state.serveable.items()
                                              if ns != payload.namespace})
    elif isinstance(payload, VersionActivated):
        state = _activated(state, payload, epoch_ms(event.recorded_at), config)
    elif isinstance(payload, VersionRetired):
        state = replace(state, jobs={ns: job for ns, job in state.jobs.items()
                                     if job != payload.job_id})
    elif isinstance(payload, DeploymentFailed):
        state = replace(state, failed=state.failed | {payload.version})
    deployment = deployment_after(state.in_flight, event)
    if deployment is None:
        return state
    return replace(state, in_flight=deployment if deployment.in_flight else None)


def _activated(state: ViewState, activated: VersionActivated, now_ms: int,
               config: RolloutConfig) -> ViewState:
    deployment = state.in_flight
    jobs = dict(state.jobs)
    if deployment is not None and deployment.kind is DeploymentKind.BLUE_GREEN \
            and deployment.job_id:
        jobs[deployment.namespace] = deployment.job_id
    serveable = version_map_after(state.serveable, activated.version, activated.namespace,
                                  config.keep_namespaces)
    dropped = set(state.serveable.values()) - set(serveable.values())
    unmapped = {ns: t for ns, t in state.unmapped_since.items() if ns not in serveable.values()}
    unmapped |= {ns: now_ms for ns in dropped}
    return replace(state, active=activated.version, serveable=serveable, jobs=jobs,
                   unmapped_since=unmapped)


def version_map_after(serveable: Mapping[int, str], version: int, namespace: str,
                      keep_namespaces: int) -> dict[int, str]:
    """The version map once ``version`` (in ``namespace``) is active: the newest namespaces
    first, at most ``keep_namespaces`` of them, each with every version sharing it."""
    merged = {**serveable, version: namespace}
    newest: dict[str, int] = {}
    for v, ns in merged.items():
        newest[ns] = max(v, newest.get(ns, v))
    ranked = sorted(newest, key=lambda ns: (ns == namespace, newest[ns]), reverse=True)
    kept = set(ranked[:keep_namespaces])
    return {v: ns for v, ns in sorted(merged.items()) if ns in kept}


# --------------------------------------------------------------------------- decide

@dataclass(frozen=True)
class StartDeployment:
    """Record DeploymentStarted (nothing else happens before it is in the log)."""

    deployment: Deployment


@dataclass(frozen=True)
class AdvanceGreen:
    """Make sure green runs (prepare namespace + submit, once) and check its readiness."""

    deployment: Deployment
    deadline_ms: int
    max_restarts: int


@dataclass(frozen=True)
class AwaitSourceTopic:
    """Look for the source topic a waiting deployment waits for; record DeploymentResumed
    once it exists, nothing while it does not."""

    deployment: Deployment


@dataclass(frozen=True)
class MarkReady:
    """A flip needs no job: it is ready as soon as it started."""

    deployment: Deployment


@dataclass(frozen=True)
class Activate:
    """Write the version map atomically, publish, then record VersionActivated."""

    deployment: Deployment
    version_map: Mapping[int, str]


@dataclass(frozen=True)
class RetireBlue:
    """Stop blue with a savepoint, then record VersionRetired."""

    deployment: Deployment


@dataclass(frozen=True)
class Abandon:
    """Cancel green and record DeploymentFailed with the reason."""

    deployment: Deployment
    reason: str


@dataclass(frozen=True)
class PurgeNamespace:
    namespace: str


Action = StartDeployment | AdvanceGreen | AwaitSourceTopic | MarkReady | Activate | \
    RetireBlue | Abandon | PurgeNamespace


def decide(state: ViewState, now_ms: int, config: RolloutConfig) -> Action | None:
    """The one next action for the view, or None when it is where it should be."""
    deployment = state.in_flight
    if deployment is not None:
        return _continue(state, deployment, config)
    if (state.desired is not None and state.desired != state.active
            and state.desired not in state.failed and state.desired in state.specs):
        return StartDeployment(_plan_deployment(state, state.desired, now_ms))
    for namespace, since in sorted(state.unmapped_since.items()):
        if now_ms - since >= config.purge_grace_ms and namespace not in state.jobs:
            return PurgeNamespace(namespace)
    return None


SUPERSEDABLE = frozenset({DeploymentState.STARTED, DeploymentState.WAITING})
"""States of a deployment that a newer desired version abandons: green never served."""


def _continue(state: ViewState, deployment: Deployment, config: RolloutConfig) -> Action:
    if deployment.state in SUPERSEDABLE and deployment.version != state.desired:
        return Abandon(deployment, f"superseded by version {state.desired}")
    if deployment.state is DeploymentState.WAITING:
        return AwaitSourceTopic(deployment)
    if deployment.state is DeploymentState.STARTED:
        if deployment.kind is DeploymentKind.FLIP:
            return MarkReady(deployment)
        return AdvanceGreen(deployment,
                            deployment.submittable_since_ms + config.ready_deadline_ms,
                            config.max_restarts)
    if deployment.state is DeploymentState.READY:
        return Activate(deployment, version_map_after(
            state.serveable, deployment.version, deployment.namespace, config.keep_namespaces))
    return RetireBlue(deployment)


def _plan_deployment(state: ViewState, version: int, now_ms: int) -> Deployment:
    number = state.deployments + 1
    active_namespace = state.active_namespace
    shared = _shared_namespace(state, version)
    if shared is not None:
        return Deployment(number, version, DeploymentKind.FLIP, shared, None, state.active,
                          active_namespace, None, at_epoch_ms(now_ms))
    namespace = namespace_of(version)
    blue_job = state.jobs.get(active_namespace) if active_namespace else None
    return Deployment(number, version, DeploymentKind.BLUE_GREEN, namespace,
                      job_id(state.view, namespace, number), state.active,
                      active_namespace, blue_job, at_epoch_ms(now_ms))


def _shared_namespace(state: ViewState, version: int) -> str | None:
    """A maintained namespace that already computes exactly what ``version`` needs."""
    for candidate in (state.active, *sorted(state.serveable, reverse=True)):
        if candidate is None:
            continue
        namespace = state.serveable.get(candidate)
        if namespace is None or namespace not in state.jobs:
            continue
        diff = diff_specs(state.specs[candidate], state.specs[version])
        if not diff or classify(Kind.FEATURE_VIEW, diff) is ChangeClass.METADATA:
            return namespace
    return None


# --------------------------------------------------------------------------- events out
# What the worker records for each step of a deployment.

class _Names(TypedDict):
    view: str
    deployment: int
    version: int
    namespace: str


def _names(view: str, deployment: Deployment) -> _Names:
    return {"view": view, "deployment": deployment.number, "version": deployment.version,
            "namespace": deployment.namespace}


def deployment_started(view: str, deployment: Deployment) -> DeploymentStarted:
    return DeploymentStarted(**_names(view, deployment), kind=deployment.kind,
                             job_id=deployment.job_id, blue_version=deployment.blue_version,
                             blue_namespace=deployment.blue_namespace,
                             blue_job_id=deployment.blue_job_id)


def deployment_waiting(view: str, deployment: Deployment, topic: str) -> DeploymentWaiting:
    """Green's source topic does not exist yet."""
    return DeploymentWaiting(**_names(view, deployment),
                             reason=f"source topic {topic!r} does not exist yet", topic=topic)


def deployment_resumed(view: str, deployment: Deployment) -> DeploymentResumed:
    return DeploymentResumed(**_names(view, deployment))


def deployment_ready(view: str, deployment: Deployment,
                     readiness: Readiness | None = None) -> DeploymentReady:
    """Green caught up as ``readiness`` says; a flip has no green and no readiness."""
    if readiness is None:
        return DeploymentReady(**_names(view, deployment))
    return DeploymentReady(**_names(view, deployment), **readiness)


def version_activated(view: str, deployment: Deployment) -> VersionActivated:
    return VersionActivated(**_names(view, deployment))


def version_retired(view: str, deployment: Deployment, savepoint: str | None,
                    ) -> VersionRetired:
    return VersionRetired(**_names(view, deployment), retired_version=deployment.blue_version,
                          retired_namespace=deployment.blue_namespace,
                          job_id=deployment.blue_job_id, savepoint=savepoint)


def deployment_failed(view: str, deployment: Deployment, reason: str) -> DeploymentFailed:
    return DeploymentFailed(**_names(view, deployment), reason=reason, job_id=deployment.job_id)


# --------------------------------------------------------------------------- checkpoints

def state_to_json(state: ViewState) -> dict[str, Any]:
    return {"view": state.view, "stream_version": state.stream_version,
            "specs": {str(v): spec for v, spec in state.specs.items()},
            "desired": state.desired, "active": state.active,
            "serveable": {str(v): ns for v, ns in state.serveable.items()},
            "jobs": dict(state.jobs), "failed": sorted(state.failed),
            "in_flight": state.in_flight.to_json() if state.in_flight else None,
            "deployments": state.deployments, "unmapped_since": dict(state.unmapped_since)}


def state_from_json(body: Mapping[str, Any]) -> ViewState:
    deployment = body.get("in_flight")
    return ViewState(
        view=body["view"], stream_version=body["stream_version"],
        specs={int(v): spec for v, spec in body["specs"].items()},
        desired=body["desired"], active=body["active"],
        serveable={int(v): ns for v, ns in body["serveable"].items()},
        jobs=dict(body["jobs"]), failed=frozenset(body["failed"]),
        in_flight=_in_flight_from_json(deployment) if deployment else None,
        deployments=body["deployments"], unmapped_since=dict(body["unmapped_since"]),
    )


def _in_flight_from_json(body: Mapping[str, Any]) -> Deployment:
    if "phase" not in body:
        return Deployment.from_json(body)
    # Written before the deployer shared the registry's deployment record: the plan and a
    # phase, which is the state.  The timings of steps taken are not in it, but nothing
    # the deployer decides depends on them.
    return Deployment(number=body["number"], version=body["version"],
                      kind=DeploymentKind(body["kind"]), namespace=body["namespace"],
                      job_id=body["job_id"], blue_version=body["blue_version"],
                      blue_namespace=body["blue_namespace"], blue_job_id=body["blue_job_id"],
                      started_at=at_epoch_ms(body["started_at_ms"]),
                      state=DeploymentState(body["phase"]))

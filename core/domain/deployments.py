"""The deployments of a feature view: the one projection of its ``deployment:{view}`` stream.

:func:`deployment_after` is the single rule for what each step of a deployment does to it.
The deployer folds it to know the deployment in flight (:mod:`deployer.rollout`), and the
registry to serve the history of every deployment (:func:`deployment_history`), so both
name the same states at the same events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, assert_never

from core.domain.events import (
    DeploymentEvent,
    DeploymentFailed,
    DeploymentKind,
    DeploymentReady,
    DeploymentResumed,
    DeploymentStarted,
    DeploymentWaiting,
    RecordedEvent,
    VersionActivated,
    VersionRetired,
    numbered_histories,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(at: datetime) -> int:
    """``at`` in whole epoch milliseconds (the deployer's clock)."""
    return (at - EPOCH) // _MILLISECOND


def at_epoch_ms(ms: int) -> datetime:
    return EPOCH + ms * _MILLISECOND


class DeploymentState(StrEnum):
    STARTED = "started"
    """Green submitted (blue/green) or about to be marked ready (flip)."""
    WAITING = "waiting"
    """Green not submitted: its source topic does not exist yet.  Started again when it does."""
    READY = "ready"
    ACTIVATED = "activated"
    """Active; blue's job still runs until it is retired."""
    COMPLETED = "completed"
    """Active, and no job of the version it replaced is left running."""
    FAILED = "failed"


IN_FLIGHT = frozenset({DeploymentState.STARTED, DeploymentState.WAITING,
                       DeploymentState.READY, DeploymentState.ACTIVATED})
"""States in which the deployer still has something to do."""


@dataclass(frozen=True)
class Deployment:
    number: int
    version: int
    kind: DeploymentKind
    namespace: str
    job_id: str | None
    blue_version: int | None
    blue_namespace: str | None
    blue_job_id: str | None
    started_at: datetime
    state: DeploymentState = DeploymentState.STARTED
    requested_by: str | None = None
    """The actor recorded with the start."""
    ready_at: datetime | None = None
    readiness: Mapping[str, Any] = field(default_factory=dict)
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    savepoint: str | None = None
    failed_at: datetime | None = None
    error: str | None = None
    waiting_since: datetime | None = None
    """When it last began waiting for its source topic."""
    waiting_reason: str | None = None
    resumed_at: datetime | None = None
    """When that wait last ended."""

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT

    @property
    def started_at_ms(self) -> int:
        return epoch_ms(self.started_at)

    @property
    def submittable_since_ms(self) -> int:
        """Since when green could be submitted: the start, or the end of the last wait for
        its source topic.  The ready deadline counts from here, so no wait uses it up."""
        return epoch_ms(self.resumed_at or self.started_at)

    def to_json(self) -> dict[str, Any]:
        """The registry API's record: each step's fields appear once the step happened."""
        body: dict[str, Any] = {
            "deployment": self.number, "state": self.state.value, "version": self.version,
            "kind": self.kind.value, "namespace": self.namespace, "job_id": self.job_id,
            "blue_version": self.blue_version, "blue_namespace": self.blue_namespace,
            "blue_job_id": self.blue_job_id, "requested_by": self.requested_by,
            "started_at": self.started_at.isoformat()}
        if self.waiting_since is not None:
            body |= {"waiting_since": self.waiting_since.isoformat(),
                     "waiting_reason": self.waiting_reason}
        if self.resumed_at is not None:
            body["resumed_at"] = self.resumed_at.isoformat()
        if self.ready_at is not None:
            body |= {"ready_at": self.ready_at.isoformat(), "readiness": dict(self.readiness)}
        if self.activated_at is not None:
            body["activated_at"] = self.activated_at.isoformat()
        if self.retired_at is not None:
            body |= {"retired_at": self.retired_at.isoformat(), "savepoint": self.savepoint}
        if self.failed_at is not None:
            body |= {"failed_at": self.failed_at.isoformat(), "error": self.error}
        return body

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Deployment:
        def moment(key: str) -> datetime | None:
            return datetime.fromisoformat(body[key]) if key in body else None

        return cls(number=body["deployment"], version=body["version"],
                   kind=DeploymentKind(body["kind"]), namespace=body["namespace"],
                   job_id=body["job_id"], blue_version=body["blue_version"],
                   blue_namespace=body["blue_namespace"], blue_job_id=body["blue_job_id"],
                   started_at=datetime.fromisoformat(body["started_at"]),
                   state=DeploymentState(body["state"]), requested_by=body["requested_by"],
                   ready_at=moment("ready_at"), readiness=dict(body.get("readiness", {})),
                   activated_at=moment("activated_at"), retired_at=moment("retired_at"),
                   savepoint=body.get("savepoint"), failed_at=moment("failed_at"),
                   error=body.get("error"), waiting_since=moment("waiting_since"),
                   waiting_reason=body.get("waiting_reason"), resumed_at=moment("resumed_at"))


DeploymentStep = DeploymentWaiting | DeploymentResumed | DeploymentReady | VersionActivated \
    | VersionRetired | DeploymentFailed


def deployment_after(deployment: Deployment | None, event: RecordedEvent) -> Deployment | None:
    """``deployment`` once ``event`` happened to it; a DeploymentStarted begins a new one.
    None when the event moves no deployment here: not a deployment event, or a step of
    another deployment than ``deployment``."""
    payload, at = event.payload, event.recorded_at
    if isinstance(payload, DeploymentStarted):
        return Deployment(number=payload.deployment, version=payload.version,
                          kind=payload.kind, namespace=payload.namespace, job_id=payload.job_id,
                          blue_version=payload.blue_version,
                          blue_namespace=payload.blue_namespace,
                          blue_job_id=payload.blue_job_id, started_at=at,
                          requested_by=event.metadata.get("actor"))
    if (deployment is None or not isinstance(payload, DeploymentStep)
            or payload.deployment != deployment.number):
        return None
    return _stepped(deployment, payload, at)


def _stepped(deployment: Deployment, step: DeploymentStep, at: datetime) -> Deployment:
    if isinstance(step, DeploymentWaiting):
        return replace(deployment, state=DeploymentState.WAITING, waiting_since=at,
                       waiting_reason=step.reason)
    if isinstance(step, DeploymentResumed):
        return replace(deployment, state=DeploymentState.STARTED, resumed_at=at)
    if isinstance(step, DeploymentReady):
        return replace(deployment, state=DeploymentState.READY, ready_at=at,
                       readiness=step.readiness)
    if isinstance(step, VersionActivated):
        # With no blue job to retire (a first version, a flip), activation is the last step.
        state = DeploymentState.ACTIVATED if deployment.blue_job_id else DeploymentState.COMPLETED
        return replace(deployment, state=state, activated_at=at)
    if isinstance(step, VersionRetired):
        return replace(deployment, state=DeploymentState.COMPLETED, retired_at=at,
                       savepoint=step.savepoint)
    if isinstance(step, DeploymentFailed):
        return replace(deployment, state=DeploymentState.FAILED, failed_at=at,
                       error=step.reason)
    assert_never(step)


def deployment_history(events: Iterable[RecordedEvent]) -> list[Deployment]:
    """Every deployment of a ``deployment:{view}`` stream, newest first."""
    return numbered_histories(
        events, lambda p: p.deployment if isinstance(p, DeploymentEvent) else None,
        deployment_after)

"""`fp deployer run`: one worker; several may run, the one elected leads
(:mod:`deployer.coordination`).

The leader folds registry events (in position order, from a durable checkpoint) into the
per-view rollout state of :mod:`deployer.rollout`, asks it for the next action, performs the
action through the adapters and appends the outcome as an event.  A wake-up on appended events
only makes it look early; polling by position is the truth.  A worker killed at any moment
leaves the log as the whole truth: the next leader resumes from the checkpoint and the log.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from core.domain.deployments import Deployment, DeploymentState
from core.domain.events import (
    EventPayload,
    NamespacePurged,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    deployment_stream,
)
from core.errors import ConcurrencyConflictError, FeaturePlatformError, InfrastructureError
from deployer.coordination import (
    CheckpointStore,
    LeaderElection,
    Leadership,
    SavedCheckpoint,
    lead_when_elected,
)
from deployer.faults import crash_point
from deployer.green import GreenOutcome, GreenRunner
from deployer.rollout import (
    Abandon,
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
    version_retired,
    view_of,
)
from registry.store.base import RegistryStore
from sinks.flink import FlinkJobs
from sinks.online_store import NamespaceControl

logger = logging.getLogger(__name__)

ACTOR = {"actor": "deployer"}


@dataclass
class Checkpoint:
    position: int = 0
    states: dict[str, ViewState] = field(default_factory=dict)


class DeployerWorker:
    def __init__(self, *, store: RegistryStore, checkpoints: CheckpointStore,
                 election: LeaderElection, flink: FlinkJobs, versions: NamespaceControl,
                 green: GreenRunner, config: RolloutConfig, poll_interval: float = 1.0,
                 ) -> None:
        self.store = store
        self.checkpoints = checkpoints
        self.election = election
        self.flink = flink
        self.versions = versions
        self.green = green
        self.config = config
        self.poll_interval = poll_interval
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Lead when elected, else wait to be; until :meth:`stop`."""
        lead_when_elected(self.election, self.stopping, self._lead, name="deployer",
                          poll_interval=self.poll_interval)

    def _lead(self, leadership: Leadership) -> None:
        checkpoint = self._load_checkpoint()
        while not self.stopping.is_set():
            events = self.store.read_events(checkpoint.position, limit=1000)
            for event in events:
                _fold(checkpoint, event, self.config)
            if events:
                self._save_checkpoint(checkpoint)
                continue
            acted = False
            for state in list(checkpoint.states.values()):
                action = decide(state, _now_ms(), self.config)
                if action is not None:
                    acted |= self._perform(state, action)
            if not acted:
                leadership.wait_for_events(self.poll_interval)

    # ------------------------------------------------------------------ actions

    def _perform(self, state: ViewState, action: Action) -> bool:
        """Carry out ``action``; True when it recorded an event (the state moved).

        An outside system failing (InfrastructureError) is transient: the action is retried
        on the next pass.  Any other failure would fail the same way on every retry, so it
        fails the deployment instead — whatever raised it, so that one view's bad definition
        or a bug on one path neither stops the worker nor blocks the other views."""
        action_name = type(action).__name__
        try:
            return self._dispatch(state, action)
        except ConcurrencyConflictError:
            return True  # someone appended first (e.g. a rollback request): re-read the log
        except InfrastructureError as error:
            logger.warning("%s: %s failed, will retry: %s", state.view, action_name, error)
            return False
        except FeaturePlatformError as error:
            logger.warning("%s: %s failed: %s", state.view, action_name, error)
            reason = f"{action_name} failed: {error}"
        except Exception as error:  # deliberately broad: see the docstring
            logger.exception("%s: %s failed unexpectedly", state.view, action_name)
            # The detail stays in the log: an unexpected exception's text is not written for
            # the deployment history's readers.
            reason = (f"{action_name} failed with an unexpected {type(error).__name__}; "
                      "the deployer's log has the detail")
        return self._give_up(state, action, reason)

    def _give_up(self, state: ViewState, action: Action, reason: str) -> bool:
        """Record the failure of ``action`` as its deployment's; True when recorded."""
        if isinstance(action, PurgeNamespace):
            # No deployment to fail: the purge is retried each pass, and it never blocks a
            # rollout, which :func:`decide` puts before it.
            return False
        deployment = action.deployment
        if deployment.job_id and deployment.state in {DeploymentState.STARTED,
                                                      DeploymentState.READY}:
            # Green never served: cancel it, best effort, since cancelling may be what failed.
            try:
                self.flink.cancel(deployment.job_id)
            except Exception:  # the failure is recorded either way
                logger.exception("%s: cancelling green %s failed", state.view,
                                 deployment.job_id)
        try:
            return self._record_failure(state, deployment, reason)
        except ConcurrencyConflictError:
            return True

    def _dispatch(self, state: ViewState, action: Action) -> bool:
        view = state.view
        if isinstance(action, StartDeployment):
            logger.info("%s: deploying v%s (%s)", view, action.deployment.version,
                        action.deployment.kind)
            return self._record(state, deployment_started(view, action.deployment))
        if isinstance(action, MarkReady):
            return self._record(state, deployment_ready(view, action.deployment))
        if isinstance(action, AdvanceGreen):
            return self._advance(state, action)
        if isinstance(action, AwaitSourceTopic):
            return self._await_source_topic(state, action.deployment)
        if isinstance(action, Activate):
            self.versions.switch(view, action.deployment.version, action.version_map)
            crash_point("switched")
            logger.info("%s: v%s active", view, action.deployment.version)
            return self._record(state, version_activated(view, action.deployment))
        if isinstance(action, RetireBlue):
            return self._retire(state, action.deployment)
        if isinstance(action, Abandon):
            return self._fail(state, action.deployment, action.reason)
        return self._purge(state, action)

    def _advance(self, state: ViewState, action: AdvanceGreen) -> bool:
        deployment = action.deployment
        outcome: GreenOutcome = self.green.advance(state, deployment, _now_ms(),
                                                   action.deadline_ms, action.max_restarts)
        if outcome.readiness is not None:
            return self._record(state, deployment_ready(state.view, deployment,
                                                        outcome.readiness))
        if outcome.failure is not None:
            return self._fail(state, deployment, outcome.failure)
        if outcome.missing_topic is not None:
            logger.info("%s: v%s waits for its source topic %r", state.view,
                        deployment.version, outcome.missing_topic)
            return self._record(state, deployment_waiting(state.view, deployment,
                                                          outcome.missing_topic))
        return False

    def _await_source_topic(self, state: ViewState, deployment: Deployment) -> bool:
        """Looked for on every pass; nothing is recorded until the topic is there."""
        if not self.green.source_topic_exists(state, deployment):
            return False
        logger.info("%s: v%s's source topic exists now", state.view, deployment.version)
        return self._record(state, deployment_resumed(state.view, deployment))

    def _fail(self, state: ViewState, deployment: Deployment, reason: str) -> bool:
        # A waiting deployment never submitted green: there is nothing to cancel.
        if deployment.job_id and deployment.state is not DeploymentState.WAITING:
            self.flink.cancel(deployment.job_id)
            self.flink.wait_until_terminal(deployment.job_id)
        return self._record_failure(state, deployment, reason)

    def _record_failure(self, state: ViewState, deployment: Deployment, reason: str) -> bool:
        logger.warning("%s: deployment of v%s failed: %s", state.view, deployment.version,
                       reason)
        return self._record(state, deployment_failed(state.view, deployment, reason))

    def _retire(self, state: ViewState, deployment: Deployment) -> bool:
        job = deployment.blue_job_id
        savepoint = None
        if job:
            try:
                savepoint = self.flink.stop_with_savepoint(job)
            except FeaturePlatformError as error:
                logger.warning("%s: stop-with-savepoint of %s failed (%s); cancelling",
                               state.view, job, error)
                self.flink.cancel(job)
            self.flink.wait_until_terminal(job)
        return self._record(state, version_retired(state.view, deployment, savepoint))

    def _purge(self, state: ViewState, action: PurgeNamespace) -> bool:
        deleted = self.versions.clear_namespace(state.view, action.namespace)
        self.green.drop_result_topics(state.view, action.namespace)
        return self._record(state, NamespacePurged(view=state.view, namespace=action.namespace,
                                                   keys_deleted=deleted))

    def _record(self, state: ViewState, event: EventPayload) -> bool:
        """Append ``event`` to the view's deployment stream at the version ``state`` folded."""
        self.store.append([StreamAppend(deployment_stream(state.view), state.stream_version,
                                        (NewEvent(event, ACTOR),))])
        crash_point(event.TYPE)
        return True

    # ------------------------------------------------------------------ checkpoint

    def _load_checkpoint(self) -> Checkpoint:
        saved = self.checkpoints.load()
        if saved is None:
            return Checkpoint()
        return Checkpoint(saved.position, {view: state_from_json(body)
                                           for view, body in saved.state.items()})

    def _save_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.checkpoints.save(SavedCheckpoint(checkpoint.position, {
            view: state_to_json(state) for view, state in checkpoint.states.items()}))


def _fold(checkpoint: Checkpoint, event: RecordedEvent, config: RolloutConfig) -> None:
    checkpoint.position = event.position
    view = view_of(event.stream)
    if view is None:
        return
    state = checkpoint.states.get(view, ViewState(view))
    checkpoint.states[view] = evolve(state, event, config)


def _now_ms() -> int:
    return int(time.time() * 1000)

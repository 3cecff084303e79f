"""Bringing a green job up and judging when it is ready to take over.

Readiness: the job and every task RUNNING, and the data caught up:

1. green has read its source at least as far as blue had when green first ran — its
   consumer group committed, on every partition, at least blue's committed offsets sampled
   then (with no blue: the end offsets then, the input's frontier).
   A fixed target, because chasing blue's latest commit races the two jobs' checkpoint
   clocks: green would be behind by a fraction of an interval at almost every look;
2. every row green emitted is in Redis — the writers' group committed the end of green's
   result topic.

Input positions are compared rather than the namespaces' watermarks: the meta watermark is
the newest window end written, and versions with different windows end their windows at
different times, so "green's watermark reached blue's" may never hold for a correct green.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.domain.definitions import (
    Definition,
    FeatureView,
    Kind,
    Source,
    definition_key,
    parse_definition,
)
from core.domain.deployments import Deployment
from core.domain.events import Readiness
from core.domain.layout import WRITER_GROUP, result_topic, source_group, statistics_topic
from core.domain.validation import references
from core.errors import FeaturePlatformError, InfrastructureError
from core.settings import DeployerStart
from deployer.faults import crash_point
from deployer.rollout import ViewState
from registry.store.base import RegistryStore
from sinks.compiler import (
    DEFAULT_MONITORING_WINDOW_MS,
    JobSpec,
    KafkaOptions,
    StartPosition,
    compile_view,
)
from sinks.flink import FlinkJobs
from sinks.kafka_admin import KafkaTopics
from sinks.online_store import NamespaceControl

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class GreenOutcome:
    readiness: Readiness | None = None
    """Set once green is ready: what it was checked against."""
    failure: str | None = None
    missing_topic: str | None = None
    """Set when green could not be submitted because this source topic does not exist yet:
    the deployment waits for it rather than failing (a view may be applied before anything
    produces to its topic)."""


NOT_READY_YET = GreenOutcome()
"""Green is on its way: submitted, or running but not caught up."""


class GreenRunner:
    def __init__(self, store: RegistryStore, flink: FlinkJobs, versions: NamespaceControl,
                 kafka: KafkaTopics, *, start_policy: DeployerStart = "window",
                 start_margin_ms: int = 60_000,
                 monitoring_window_ms: int = DEFAULT_MONITORING_WINDOW_MS) -> None:
        self.store = store
        self.flink = flink
        self.versions = versions
        self.kafka = kafka
        self.start_policy = start_policy
        self.start_margin_ms = start_margin_ms
        self.monitoring_window_ms = monitoring_window_ms
        self._targets: dict[str, dict[int, int]] = {}
        """Source offsets each green must reach (job id → partition → offset); in memory:
        a restarted deployer samples again, which only moves the target later."""

    def advance(self, state: ViewState, deployment: Deployment, now_ms: int, deadline_ms: int,
                max_restarts: int) -> GreenOutcome:
        assert deployment.job_id is not None, "blue/green deployments have a job"
        job = deployment.job_id
        status = self.flink.status(job)
        allowed_s = (deadline_ms - deployment.submittable_since_ms) // 1000
        if status is None:
            if now_ms > deadline_ms:
                return GreenOutcome(failure=f"green could not be submitted within {allowed_s} s")
            return self._submit(state, deployment, now_ms)
        if status.terminal:
            return GreenOutcome(failure=f"green job {job} is {status.state}: "
                                        f"{'; '.join(self.flink.exceptions(job)[:3])}")
        restarts = self.flink.restarts(job)
        if restarts > max_restarts:
            return GreenOutcome(failure=f"green job {job} is in a restart loop ({restarts} "
                                        f"restarts): {'; '.join(self.flink.exceptions(job)[:3])}")
        if now_ms > deadline_ms:
            return GreenOutcome(failure=f"green was not ready within {allowed_s} s")
        if not status.running:
            return NOT_READY_YET
        return self._caught_up(state, deployment)

    def _submit(self, state: ViewState, deployment: Deployment, now_ms: int) -> GreenOutcome:
        """First sight of this deployment's job: clean its namespace, submit it — or, while
        its source topic does not exist, nothing but say so."""
        try:
            spec = self._compile(state, deployment, now_ms)
            if not self.kafka.topic_exists(spec.source_topic):
                return GreenOutcome(missing_topic=spec.source_topic)
            self.versions.clear_namespace(state.view, deployment.namespace)
            self.kafka.ensure_topics(spec.topics)
            self.flink.submit(spec)
            crash_point("submitted")
        except InfrastructureError:
            raise  # transient: the worker retries, and a submit by job id is idempotent
        except FeaturePlatformError as error:
            return GreenOutcome(failure=f"submitting green failed: {error}")
        logger.info("%s: green %s submitted for %s", state.view, spec.job_id,
                    deployment.namespace)
        return NOT_READY_YET

    def source_topic_exists(self, state: ViewState, deployment: Deployment) -> bool:
        """Whether the topic green of ``deployment`` reads exists (now)."""
        return self.kafka.topic_exists(self._source_topic(_view(state, deployment)))

    def _compile(self, state: ViewState, deployment: Deployment, now_ms: int) -> JobSpec:
        view = _view(state, deployment)
        # Only what the view relies on: another definition, even one registered before a
        # rule it breaks existed, never fails this rollout.
        catalog: dict[str, Definition] = {definition_key(view): view}
        for key in references(view):
            kind, name = key.split(":", 1)
            record = self.store.definition(kind, name)
            if record is not None:
                catalog[key] = parse_definition(dict(record.spec))
        source = catalog.get(f"{Kind.SOURCE}:{view.source}")
        # Without its source the compiler refuses the view, naming what is missing.
        start = self._start(view, source, now_ms) if isinstance(source, Source) \
            else StartPosition()
        spec = compile_view(view, catalog, deployment.namespace, deployment.version,
                            kafka=KafkaOptions(self.kafka.bootstrap_servers, start),
                            deployment=deployment.number,
                            monitoring_window_ms=self.monitoring_window_ms)
        assert spec.job_id == deployment.job_id, "job ids are derived the same way"
        return spec

    def _start(self, view: FeatureView, source: Source, now_ms: int) -> StartPosition:
        """Early enough in Kafka to fill the longest window (``last`` needs all history)."""
        windows = [f.window_ms for f in view.features if f.window_ms is not None]
        if self.start_policy == "earliest" or len(windows) < len(view.features):
            return StartPosition()
        span = max(windows) + source.watermark_delay_ms + self.start_margin_ms
        return StartPosition(now_ms - span)

    def _caught_up(self, state: ViewState, deployment: Deployment) -> GreenOutcome:
        view = _view(state, deployment)
        topic = self._source_topic(view)
        target = self._target(state.view, deployment, topic)
        if not self.kafka.caught_up(source_group(state.view, deployment.namespace), topic,
                                    target):
            return NOT_READY_YET
        results = result_topic(state.view, deployment.namespace)
        written = self.kafka.end_offsets(results)
        if not self.kafka.caught_up(WRITER_GROUP, results, written):
            return NOT_READY_YET
        return GreenOutcome(readiness={
            "source_offsets": {str(p): o for p, o in target.items()},
            "green_watermark": self.versions.progress(state.view, deployment.namespace).watermark,
            "blue_watermark": self.versions.progress(state.view,
                                                     deployment.blue_namespace).watermark
            if deployment.blue_namespace else None})

    def _target(self, view: str, deployment: Deployment, topic: str) -> dict[int, int]:
        """Sampled at the first look once green runs, then fixed."""
        job = deployment.job_id or ""
        if job not in self._targets:
            target = self.kafka.end_offsets(topic)
            if deployment.blue_job_id and deployment.blue_namespace:
                blue = self.kafka.committed_offsets(
                    source_group(view, deployment.blue_namespace), topic, target)
                target = {p: offset for p, offset in blue.items() if offset >= 0}
            self._targets[job] = target
        return self._targets[job]

    def _source_topic(self, view: FeatureView) -> str:
        record = self.store.definition("source", view.source)
        assert record is not None, "a registered view's source is registered"
        return str(record.spec["topic"])

    def drop_result_topics(self, view: str, namespace: str) -> None:
        """The topics the namespace's job wrote for others to read: its results and its drift
        statistics."""
        self.kafka.delete_topics([result_topic(view, namespace),
                                  statistics_topic(view, namespace)])


def _view(state: ViewState, deployment: Deployment) -> FeatureView:
    """The definition of the version ``deployment`` rolls out."""
    view = parse_definition(dict(state.specs[deployment.version]))
    assert isinstance(view, FeatureView)
    return view

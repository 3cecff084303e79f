"""The deployer worker over in-memory adapters: the registry store, its coordination, the
online store, and stand-ins for Flink and Kafka administration.  Blue/green rollouts run
through the real worker, rollout rules and green runner in about a second, where
tests/deployer runs them on real services in minutes."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pytest

from core.domain.definitions import Kind
from core.domain.events import DeploymentWaiting, Provenance, deployment_stream
from core.errors import InfrastructureError
from deployer.coordination import MemoryCheckpointStore, MemoryLeaderElection
from deployer.green import GreenRunner
from deployer.rollout import RolloutConfig
from deployer.worker import DeployerWorker
from fp.cli import _deployment_summary
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from sinks.compiler import JobSpec
from sinks.flink import FlinkError, JobStatus
from sinks.online_memory import InMemoryOnlineStore
from tests.reference_definitions import reference_definitions

VIEW = "user_clicks"


class FakeFlink:
    """The Flink cluster as ``sinks.flink.FlinkJobs`` promises it: a submitted job runs at once with
    every task running, and stops or cancels at once."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobStatus] = {}
        self.savepoints: list[str] = []

    def submit(self, spec: JobSpec) -> str:
        self.jobs[spec.job_id] = JobStatus(spec.job_id, spec.job_name, "RUNNING", ("RUNNING",),
                                           int(time.time() * 1000))
        return spec.job_id

    def status(self, job_id: str) -> JobStatus | None:
        return self.jobs.get(job_id)

    def exceptions(self, job_id: str) -> list[str]:
        return []

    def restarts(self, job_id: str) -> int:
        return 0

    def stop_with_savepoint(self, job_id: str) -> str | None:
        if job_id not in self.jobs:
            return None
        self._end(job_id, "FINISHED")
        self.savepoints.append(f"file:///savepoints/{job_id}")
        return self.savepoints[-1]

    def wait_until_terminal(self, job_id: str) -> JobStatus | None:
        return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> None:
        self._end(job_id, "CANCELED")

    def _end(self, job_id: str, state: str) -> None:
        job = self.jobs[job_id]
        self.jobs[job_id] = JobStatus(job_id, job.name, state, (), job.start_time_ms)

    def running(self) -> list[str]:
        return [job.job_id for job in self.jobs.values() if job.state == "RUNNING"]


class FailingFlink(FakeFlink):
    """``FakeFlink`` whose submissions of the jobs of one view raise ``error`` (each time, or
    only the first ``times`` times)."""

    def __init__(self, view: str, error: Exception, times: int | None = None) -> None:
        super().__init__()
        self.view = view
        self.error = error
        self.times = times
        self.attempts = 0

    def submit(self, spec: JobSpec) -> str:
        if spec.view == self.view and (self.times is None or self.attempts < self.times):
            self.attempts += 1
            raise self.error
        return super().submit(spec)


class FakeKafkaAdmin:
    """Kafka as ``sinks.kafka_admin.KafkaTopics`` promises it: topics as a set; every
    consumer group is caught up."""

    bootstrap_servers = "fake-kafka:9092"

    def __init__(self, topics: set[str]) -> None:
        self.topics = topics

    def topic_exists(self, topic: str) -> bool:
        return topic in self.topics

    def ensure_topics(self, topics: Iterable[str], partitions: int = 4) -> None:
        self.topics.update(topics)

    def delete_topics(self, topics: Iterable[str]) -> None:
        self.topics.difference_update(topics)

    def end_offsets(self, topic: str) -> dict[int, int]:
        return {0: 0}

    def committed_offsets(self, group: str, topic: str, partitions: Iterable[int],
                          ) -> dict[int, int]:
        return dict.fromkeys(partitions, 0)

    def caught_up(self, group: str, topic: str, frontier: dict[int, int]) -> bool:
        return True


class Deployment:
    """A registry and one deployer worker, running on a thread, sharing in-memory state."""

    def __init__(self) -> None:
        self.store = MemoryRegistryStore()
        self.service = RegistryService(self.store)
        self.checkpoints = MemoryCheckpointStore()
        self.election = MemoryLeaderElection(self.store)
        self.flink = FakeFlink()
        self.kafka = FakeKafkaAdmin({"clicks"})
        self.online = InMemoryOnlineStore()
        self.definitions: list[dict[str, Any]] = reference_definitions()
        self._workers: list[tuple[DeployerWorker, threading.Thread]] = []

    def start_worker(self) -> DeployerWorker:
        green = GreenRunner(self.store, self.flink, self.online, self.kafka)
        worker = DeployerWorker(store=self.store, checkpoints=self.checkpoints,
                                election=self.election, flink=self.flink, versions=self.online,
                                green=green, config=RolloutConfig(), poll_interval=0.05)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        self._workers.append((worker, thread))
        return worker

    def stop_workers(self) -> None:
        for worker, thread in self._workers:
            worker.stop()
            thread.join(timeout=10)
        self._workers.clear()

    def apply(self) -> None:
        self.service.apply(self.definitions, Provenance(actor="test"))

    def active_version(self, view: str = VIEW) -> int | None:
        record = self.store.definition(Kind.FEATURE_VIEW.value, view)
        return record.active_version if record else None

    def add_view(self, name: str) -> None:
        """A second view of the same source and entity, under another name."""
        view = copy.deepcopy(self.definitions[2])
        view["name"] = name
        self.definitions.append(view)

    def states(self, view: str = VIEW) -> list[tuple[int, str]]:
        """(version, state) of every deployment of ``view``, newest first."""
        return [(d["version"], d["state"]) for d in self.service.deployments(view)]

    def waits_recorded(self, view: str = VIEW) -> int:
        return sum(isinstance(event.payload, DeploymentWaiting)
                   for event in self.store.read_stream(deployment_stream(view)))

    def served_namespace(self) -> str | None:
        version_map = asyncio.run(self.online.version_maps([VIEW]))[VIEW]
        if version_map is None or version_map.active is None:
            return None
        return version_map.namespace(version_map.active)


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    running = Deployment()
    yield running
    running.stop_workers()


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the deployer did not get there in time"
        time.sleep(0.02)


def test_a_first_version_is_deployed_and_activated(deployment: Deployment) -> None:
    deployment.apply()
    deployment.start_worker()
    eventually(lambda: deployment.active_version() == 1)
    [job] = deployment.flink.running()
    assert deployment.served_namespace() is not None
    [history] = deployment.service.deployments(VIEW)
    assert (history["version"], history["job_id"]) == (1, job)
    namespace = history["namespace"]
    assert {f"fp.features.{VIEW}.{namespace}", f"fp.statistics.{VIEW}.{namespace}"} \
        <= deployment.kafka.topics, "the job's result and drift statistics topics"


def test_a_breaking_version_goes_blue_green_and_retires_blue(deployment: Deployment) -> None:
    deployment.apply()
    deployment.start_worker()
    eventually(lambda: deployment.active_version() == 1)
    [blue] = deployment.flink.running()
    blue_namespace = deployment.served_namespace()

    deployment.definitions[2]["features"][0]["window"] = "2h"
    deployment.apply()
    eventually(lambda: deployment.active_version() == 2 and blue not in
               deployment.flink.running())
    [green] = deployment.flink.running()
    assert green != blue
    assert deployment.flink.savepoints == [f"file:///savepoints/{blue}"]
    assert deployment.served_namespace() not in {None, blue_namespace}


def test_a_rollback_request_is_carried_out(deployment: Deployment) -> None:
    deployment.apply()
    deployment.start_worker()
    eventually(lambda: deployment.active_version() == 1)
    deployment.definitions[2]["description"] = "edited"
    deployment.apply()
    eventually(lambda: deployment.active_version() == 2)
    deployment.service.request_rollback(VIEW, 1, Provenance(actor="test"))
    eventually(lambda: deployment.active_version() == 1)


def test_only_one_of_two_workers_leads_and_a_successor_resumes(deployment: Deployment) -> None:
    deployment.apply()
    deployment.start_worker()
    deployment.start_worker()
    eventually(lambda: deployment.active_version() == 1)
    assert len(deployment.flink.jobs) == 1, "one leader submitted one job"
    deployment.stop_workers()
    saved = deployment.checkpoints.load()
    assert saved is not None and saved.position == deployment.store.last_position()

    deployment.start_worker()
    deployment.definitions[2]["features"][0]["window"] = "2h"
    deployment.apply()
    eventually(lambda: deployment.active_version() == 2)
    assert len(deployment.flink.jobs) == 2, "the successor resumed; it redid nothing"


def test_an_unexpected_exception_fails_that_deployment_and_the_other_views_roll_out(
        deployment: Deployment) -> None:
    flink = deployment.flink = FailingFlink(VIEW, RuntimeError("a bug on one view's path"))
    deployment.add_view("user_clicks_again")
    deployment.apply()
    deployment.start_worker()
    eventually(lambda: deployment.active_version("user_clicks_again") == 1)
    eventually(lambda: [d["state"] for d in deployment.service.deployments(VIEW)] == ["failed"])
    [failed] = deployment.service.deployments(VIEW)
    assert failed["error"] == ("AdvanceGreen failed with an unexpected RuntimeError; the "
                               "deployer's log has the detail")
    assert flink.attempts == 1, "a failing action is not replayed"
    assert deployment.active_version() is None

    flink.times = 1  # the worker still runs: the view's next version rolls out
    deployment.definitions[2]["features"][0]["window"] = "2h"
    deployment.apply()
    eventually(lambda: deployment.active_version() == 2)


class FlakyOnlineStore(InMemoryOnlineStore):
    """The online store, unreachable for its first ``failures`` version-map switches."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def switch(self, view: str, active: int, namespaces: Mapping[int, str]) -> None:
        if self.failures:
            self.failures -= 1
            raise InfrastructureError("redis is unreachable")
        super().switch(view, active, namespaces)


class FlinkRefusingFirstSubmits(FakeFlink):
    """Flink unreachable for the first ``failures`` submissions."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def submit(self, spec: JobSpec) -> str:
        if self.failures:
            self.failures -= 1
            raise FlinkError("Flink unreachable")
        return super().submit(spec)


@pytest.mark.parametrize("unreachable", ["online store", "flink"])
def test_an_infrastructure_error_is_retried_until_it_passes(deployment: Deployment,
                                                            unreachable: str) -> None:
    flaky: FlakyOnlineStore | FlinkRefusingFirstSubmits
    if unreachable == "online store":
        flaky = deployment.online = FlakyOnlineStore(failures=3)
    else:  # a submission is retried, not failed: submitting by job id is idempotent
        flaky = deployment.flink = FlinkRefusingFirstSubmits(failures=2)
    deployment.apply()
    deployment.start_worker()
    eventually(lambda: deployment.active_version() == 1)
    assert flaky.failures == 0
    assert [d["state"] for d in deployment.service.deployments(VIEW)] == ["completed"]


def test_a_view_applied_before_its_source_topic_exists_waits_for_it(
        deployment: Deployment) -> None:
    deployment.kafka.topics.clear()
    deployment.apply()
    deployment.start_worker()
    eventually(lambda: deployment.states() == [(1, "waiting")])
    time.sleep(0.5)  # ten passes of the worker

    [waiting] = deployment.service.deployments(VIEW)
    assert waiting["waiting_reason"] == "source topic 'clicks' does not exist yet"
    assert "waiting_since" in waiting
    assert deployment.waits_recorded() == 1, "recorded once, however long it waits"
    assert _deployment_summary([waiting]) == (
        "v1 waiting: source topic 'clicks' does not exist yet", "-")
    assert deployment.flink.jobs == {} and deployment.active_version() is None

    deployment.kafka.topics.add("clicks")  # someone starts producing
    eventually(lambda: deployment.active_version() == 1)
    assert deployment.states() == [(1, "completed")]
    [job] = deployment.flink.running()
    assert _deployment_summary(deployment.service.deployments(VIEW)) == ("v1 completed", job)
    assert deployment.waits_recorded() == 1


def test_a_deployment_waiting_for_its_topic_is_superseded_by_a_new_version(
        deployment: Deployment) -> None:
    deployment.kafka.topics.clear()
    deployment.apply()
    deployment.start_worker()
    eventually(lambda: deployment.states() == [(1, "waiting")])

    deployment.definitions[2]["features"][0]["window"] = "2h"
    deployment.apply()
    eventually(lambda: deployment.states() == [(2, "waiting"), (1, "failed")])
    assert deployment.service.deployments(VIEW)[1]["error"] == "superseded by version 2"

    deployment.kafka.topics.add("clicks")
    eventually(lambda: deployment.active_version() == 2)
    assert deployment.states() == [(2, "completed"), (1, "failed")]
    assert len(deployment.flink.jobs) == 1, "the superseded version never had a job"

"""Drift detection end to end on real Postgres, Kafka (Tansu), Flink and Redis: the deployer
submits a view's job with 5-second monitoring windows, `fp monitor run` judges a 15-second
horizon against a baseline registered from the generator's distribution.  The view has two
streams of amounts, as two features of one job (one job to submit, not two): one shifts,
the other does not."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from confluent_kafka import Producer

from core.domain.drift import WindowStatistics, statistics_of_parts
from core.domain.events import DriftDetected, Provenance, drift_stream
from fp.local.flink import LocalFlink
from registry.drift import DriftRegistry
from registry.service import RegistryService
from registry.store.drift import PostgresDriftStore
from registry.store.postgres import PostgresRegistryStore
from sinks.flink import FlinkClient
from tests.conftest import RunningRegistry
from tests.services import PlatformProcess, create_topics, wait_for

pytestmark = pytest.mark.flink

WINDOW_MS = 5_000
HORIZON_MS = 15_000
ACCOUNTS = [f"a{n}" for n in range(20)]
KINDS = ["a", "b", "c"]
MEAN, STD, SHIFTED_MEAN = 100.0, 10.0, 130.0


def definitions(suffix: str) -> list[dict[str, Any]]:
    schema = [{"name": "account_id", "type": "string", "required": True},
              {"name": "shifting", "type": "double"}, {"name": "steady", "type": "double"},
              {"name": "kind", "type": "string"}, {"name": "ts", "type": "long",
                                                    "required": True}]
    features = [{"name": "shifting_amount", "aggregation": "last", "column": "shifting"},
                {"name": "steady_amount", "aggregation": "last", "column": "steady"},
                {"name": "last_kind", "aggregation": "last", "column": "kind"},
                {"name": "steady_5s", "aggregation": "sum", "column": "steady",
                 "window": "5s"}]
    return [
        {"kind": "entity", "name": "account", "join_keys": ["account_id"]},
        {"kind": "source", "name": "pay", "topic": f"pay_{suffix}", "timestamp_field": "ts",
         "watermark_delay": "1s", "schema": schema},
        {"kind": "feature_view", "name": f"pay_{suffix}", "entities": ["account"],
         "source": "pay", "features": features, "drift": {"min_samples": 400}},
    ]


@dataclass
class LiveProducer:
    """About 100 events a second with ts = now: ``steady`` amounts normal around MEAN,
    ``shifting`` ones around ``shifting_mean``."""

    bootstrap: str
    topic: str
    shifting_mean: float = MEAN
    produced: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = random.Random(self.topic)
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        while not self._stop.is_set():
            now = int(time.time() * 1000)
            for n in range(10):
                event = {"account_id": rng.choice(ACCOUNTS), "ts": now,
                         "shifting": round(rng.gauss(self.shifting_mean, STD), 2),
                         "steady": round(rng.gauss(MEAN, STD), 2),
                         "kind": rng.choice(KINDS)}
                producer.produce(self.topic, json.dumps(event).encode(), partition=n % 2)
                self.produced.append(event)
            producer.poll(0)
            time.sleep(0.1)
        producer.flush(10)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


@dataclass
class Monitoring:
    view: str
    service: RegistryService
    drift: PostgresDriftStore
    producer: LiveProducer

    def readings(self, feature: str) -> list[Any]:
        return [r for r in self.drift.readings(self.view) if r.feature == feature]

    def alerts(self, feature: str) -> list[DriftDetected]:
        return [e.payload for e in self.service.store.read_stream(drift_stream(self.view))
                if isinstance(e.payload, DriftDetected) and e.payload.feature == feature]


def training_values(seed: int) -> tuple[npt.NDArray[np.float64], list[str]]:
    rng = np.random.default_rng(seed)
    return (np.round(rng.normal(MEAN, STD, 20_000), 2),
            [KINDS[i] for i in rng.integers(0, 3, 20_000)])


@pytest.fixture
def monitoring(store: PostgresRegistryStore, database_url: str, kafka_bootstrap: str,
               flink: FlinkClient, flink_cluster: LocalFlink, stream_redis_url: str,
               writer: PlatformProcess, tmp_path: Path) -> Iterator[Monitoring]:
    suffix = uuid.uuid4().hex[:6]
    create_topics(kafka_bootstrap, {f"pay_{suffix}": 2})
    services = {"FP_DATABASE_URL": database_url, "FP_KAFKA_BOOTSTRAP": kafka_bootstrap}
    deployer = PlatformProcess(["deployer", "run"], {
        **services, "FP_FLINK_URL": flink_cluster.url, "FP_REDIS_URL": stream_redis_url,
        "FP_DEPLOYER_START": "earliest", "FP_READY_TIMEOUT": "5m",
        "FP_DRIFT_WINDOW": f"{WINDOW_MS}ms"}, tmp_path / "deployer.log")
    monitor = PlatformProcess(["monitor", "run"], {
        **services, "FP_DRIFT_HORIZON": f"{HORIZON_MS}ms"}, tmp_path / "monitor.log")
    producer = LiveProducer(kafka_bootstrap, f"pay_{suffix}")
    deployer.start()
    monitor.start()
    producer.start()
    service = RegistryService(store)
    service.apply(definitions(suffix), Provenance("test"))
    try:
        yield Monitoring(f"pay_{suffix}", service, PostgresDriftStore(store.engine), producer)
    finally:
        producer.stop()
        monitor.stop()
        deployer.stop()
        for job in flink.jobs():
            if job.name.startswith("fp:") and suffix in job.name and job.state == "RUNNING":
                flink.cancel(job.job_id)


def test_a_shifted_stream_raises_drift_within_the_horizon_and_a_steady_one_nothing(
        monitoring: Monitoring, registry_server: RunningRegistry) -> None:
    m = monitoring
    amounts, kinds = training_values(1)
    DriftRegistry(m.service, m.drift).register_baseline(m.view, 1, {
        "shifting_amount": WindowStatistics.of_numbers(amounts).to_json(),
        "steady_amount": WindowStatistics.of_numbers(amounts).to_json(),
        "last_kind": WindowStatistics.of_strings(kinds).to_json()},
        {"kind": "dataset", "file": "generator"}, Provenance("test"))

    def judged_clean() -> bool:
        readings = m.drift.readings(m.view)
        return {r.feature for r in readings} == {"shifting_amount", "steady_amount",
                                                 "last_kind"} \
            and all(r.severity == "ok" for r in readings)

    # The job is submitted (a cold PyFlink client plans it: slow on a loaded machine), its
    # first windows close and are judged.
    wait_for(judged_clean, "the view judged, without drift", timeout=240)
    shift_ms = int(time.time() * 1000)
    m.producer.shifting_mean = SHIFTED_MEAN
    wait_for(lambda: bool(m.alerts("shifting_amount")), "DriftDetected on the shifted feature",
             timeout=90)
    assert min(a.window_end_ms for a in m.alerts("shifting_amount")) - shift_ms \
        <= HORIZON_MS + WINDOW_MS, \
        "raised by a window ending within one horizon of the shift (plus the window it " \
        "started in)"
    # Each metric opens its own alert when two of its last three readings breach: PSI and
    # the mean shift may open a window apart.
    wait_for(lambda: {a.metric for a in m.alerts("shifting_amount")} >= {"mean_shift", "psi"},
             "DriftDetected for PSI and the mean shift", timeout=60)
    alerts = m.alerts("shifting_amount")
    # As long again for the steady feature: judged on, no alert.
    detected_window = max(a.window_end_ms for a in alerts)
    wait_for(lambda: min(r.window_end_ms for r in m.readings("steady_amount"))
             >= detected_window + (detected_window - shift_ms), "the steady feature judged on",
             timeout=60)
    assert m.alerts("steady_amount") == [] and m.alerts("last_kind") == []
    assert all(r.severity == "ok" for r in m.readings("steady_amount"))

    # The job's statistics of a window are the values it emitted: every clean event's
    # amount, counted exactly (the `last` rows), their mean to rounding.
    stored = [w for w in m.drift.windows(m.view, "v1", 0, shift_ms)
              if w.feature == "steady_amount"]
    window = stored[len(stored) // 2]
    emitted = [e["steady"] for e in m.producer.produced
               if window.window_start_ms <= e["ts"] < window.window_end_ms]
    statistics = statistics_of_parts(window.parts, categorical=False)
    assert statistics.count == len(emitted)
    assert statistics.numeric.mean == pytest.approx(float(np.mean(emitted)), rel=1e-12)

    status = subprocess.run([sys.executable, "-m", "fp.cli", "drift", "status", m.view],
                            env=registry_server.env, text=True, capture_output=True,
                            timeout=30, check=True)
    assert "mean_shift" in status.stdout and "alert" in status.stdout, status.stdout

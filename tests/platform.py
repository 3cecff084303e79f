"""The platform of the end-to-end tests: registry, deployer, Flink, Tansu, the writer, Redis and
the serving API, as real processes, with a producer of live events — shared by the deployer's
rollout tests (tests/deployer/test_deployer_e2e.py) and the UI's browser tests
(tests/ui/test_ui_browser.py).  Registered as a plugin in tests/conftest.py."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from core.domain.definitions import Kind
from core.domain.events import Provenance
from core.domain.layout import versions_key
from fp.local.base import free_port
from fp.local.flink import LocalFlink
from registry.service import RegistryService
from registry.store.postgres import PostgresRegistryStore
from sinks.flink import FlinkClient
from tests.conftest import RunningRegistry
from tests.services import PlatformProcess, create_topics, features_in_redis, produce, wait_for
from tests.streaming.oracle import expected_features, mismatches

CUSTOMERS = [f"c{n}" for n in range(10)]
DELAY_MS = 1000


def definitions(suffix: str, revision: str) -> list[dict[str, Any]]:
    """v1 counts per 5 s; ``breaking`` counts per 10 s and adds a max; ``metadata`` only
    redescribes ``breaking``; ``other_source`` reads a topic that does not exist yet."""
    features = {
        "v1": [{"name": "orders_5s", "aggregation": "count", "window": "5s"},
               {"name": "amount_5s", "aggregation": "sum", "column": "amount", "window": "5s"},
               {"name": "last_status", "aggregation": "last", "column": "status"}],
        "breaking": [{"name": "orders_10s", "aggregation": "count", "window": "10s"},
                     {"name": "amount_5s", "aggregation": "sum", "column": "amount",
                      "window": "5s"},
                     {"name": "amount_max_5s", "aggregation": "max", "column": "amount",
                      "window": "5s"},
                     {"name": "last_status", "aggregation": "last", "column": "status"}],
    }
    schema = [{"name": "customer_id", "type": "string", "required": True},
              {"name": "amount", "type": "double"}, {"name": "status", "type": "string"},
              {"name": "ts", "type": "long", "required": True}]
    view = {"kind": "feature_view", "name": f"orders_{suffix}", "entities": ["customer"],
            "source": "orders", "description": "Orders per customer",
            "features": features["v1" if revision == "v1" else "breaking"]}
    if revision == "metadata":
        view["description"] = "Orders per customer, now documented"
    if revision == "other_source":
        view["source"] = "orders_missing"
    return [
        {"kind": "entity", "name": "customer", "join_keys": ["customer_id"]},
        {"kind": "source", "name": "orders", "topic": f"orders_{suffix}",
         "timestamp_field": "ts", "watermark_delay": "1s", "schema": schema},
        {"kind": "source", "name": "orders_missing", "topic": f"missing_{suffix}",
         "timestamp_field": "ts", "watermark_delay": "1s", "schema": schema},
        view,
    ]


@dataclass
class LiveProducer:
    """Events with ts = now for random customers, 40 per second, until stopped."""

    bootstrap: str
    topic: str
    produced: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = random.Random(3)
        last_ts = 0
        while not self._stop.is_set():
            batch = []
            for _ in range(4):
                # Strictly increasing: `last` of two events at the same millisecond is
                # whichever arrives last, which the oracle cannot know.
                last_ts = max(int(time.time() * 1000), last_ts + 1)
                batch.append({"customer_id": rng.choice(CUSTOMERS), "ts": last_ts,
                              "amount": round(rng.uniform(1, 99), 2),
                              "status": rng.choice(["new", "paid", "shipped"])})
            produce(self.bootstrap, self.topic, [(n % 2, json.dumps(e).encode())
                                                 for n, e in enumerate(batch)])
            self.produced += batch
            time.sleep(0.1)

    def finish(self) -> int:
        """Stop, then close every window with one far-future event per partition;
        returns the watermark that implies."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        flush = {"customer_id": "flush", "ts": max(e["ts"] for e in self.produced) + 600_000}
        produce(self.bootstrap, self.topic, [(0, json.dumps(flush).encode()),
                                             (1, json.dumps(flush).encode())])
        self.produced += [flush, flush]
        return flush["ts"] - DELAY_MS - 1


@dataclass
class Platform:
    suffix: str
    service: RegistryService
    store: PostgresRegistryStore
    flink: FlinkClient
    redis: redis.Redis
    redis_url: str
    serving_url: str
    deployer: PlatformProcess
    producer: LiveProducer

    @property
    def view(self) -> str:
        return f"orders_{self.suffix}"

    def apply(self, revision: str) -> int:
        changes = self.service.apply(definitions(self.suffix, revision), Provenance("test"))
        return next(c.to_version or 0 for c in changes if c.name == self.view)

    def version_map(self) -> dict[str, str]:
        return self.redis.hgetall(versions_key(self.view))  # type: ignore[return-value]

    def wait_active(self, version: int, timeout: float = 180) -> None:
        def active() -> bool:
            history = self.service.deployments(self.view)
            newest = history[0] if history else {}
            if newest.get("version") != version:
                return False
            assert newest["state"] != "failed", f"deployment failed: {newest.get('error')}"
            return (newest["state"] == "completed"
                    and self.version_map().get("active") == str(version))

        wait_for(active, f"v{version} of {self.view} to be active", timeout)

    def running_jobs(self) -> list[str]:
        return [j.job_id for j in self.flink.jobs()
                if j.name.startswith(f"fp:{self.view}:") and j.state == "RUNNING"]

    def spec(self, version: int) -> dict[str, Any]:
        return dict(self.service.version(Kind.FEATURE_VIEW, self.view, version).spec)

    def active_in_registry(self) -> int | None:
        return self.service.definition(Kind.FEATURE_VIEW, self.view).active_version

    def assert_matches_oracle(self, version: int, watermark: int) -> None:
        namespace = self.version_map()[str(version)]
        expected = expected_features(self.producer.produced, self.spec(version), ["customer_id"],
                                     "ts", watermark)
        found: list[str] = ["not compared"]

        def matches() -> bool:
            found[:] = mismatches(expected, *features_in_redis(self.redis, self.view, namespace))
            return not found

        try:
            wait_for(matches, f"v{version} to equal the oracle", timeout=120)
        except AssertionError:
            pytest.fail(f"{len(found)} mismatches in v{version}: {found[:8]}")


@pytest.fixture
def serving_port() -> int:
    """The serving API's port, known before the registry starts (its UI reads from it)."""
    return free_port()


@pytest.fixture
def deployer_env() -> dict[str, str]:
    """Settings of the deployer beyond its services; a test module overrides this fixture."""
    return {"FP_DEPLOYER_START": "earliest", "FP_READY_TIMEOUT": "120s"}


@pytest.fixture
def platform(store: PostgresRegistryStore, database_url: str, kafka_bootstrap: str,
             flink: FlinkClient, flink_cluster: LocalFlink, stream_redis_url: str,
             stream_redis: redis.Redis, writer: PlatformProcess, tmp_path: Path,
             registry_server: RunningRegistry, serving_port: int,
             deployer_env: dict[str, str]) -> Iterator[Platform]:
    suffix = uuid.uuid4().hex[:6]
    create_topics(kafka_bootstrap, {f"orders_{suffix}": 2})
    deployer = PlatformProcess(["deployer", "run"], {
        "FP_DATABASE_URL": database_url, "FP_FLINK_URL": flink_cluster.url,
        "FP_REDIS_URL": stream_redis_url, "FP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        **deployer_env}, tmp_path / "deployer.log")
    deployer.start()
    serving = PlatformProcess(["serving", "serve", "--port", str(serving_port)], {
        "FP_REGISTRY_URL": registry_server.url, "FP_REDIS_URL": stream_redis_url},
        tmp_path / "serving.log")
    serving.start()
    producer = LiveProducer(kafka_bootstrap, f"orders_{suffix}")
    producer.start()
    platform = Platform(suffix, RegistryService(store), store, flink, stream_redis,
                        stream_redis_url, f"http://127.0.0.1:{serving_port}", deployer,
                        producer)
    try:
        yield platform
    finally:
        producer._stop.set()
        serving.stop()
        deployer.stop()
        for job in platform.running_jobs():
            flink.cancel(job)

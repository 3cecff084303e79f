"""Streaming fixtures: a Tansu broker, a Flink session cluster, Redis and the writer process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from fp.local.flink import LocalFlink
from fp.local.flink_jars import ensure_kafka_connector_jars
from fp.local.kafka import LocalKafka
from fp.local.redis import LocalRedis
from sinks.flink import FlinkClient


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker.url
    broker.stop()


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFlink]:
    cluster = LocalFlink(tmp_path_factory.mktemp("flink"), task_slots=4)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def flink(flink_cluster: LocalFlink) -> Iterator[FlinkClient]:
    client = FlinkClient(flink_cluster.url, jars=ensure_kafka_connector_jars(),
                         checkpoint_interval_ms=2000)
    yield client
    client.close()


@pytest.fixture(scope="session")
def stream_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = LocalRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def stream_redis(stream_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stream_redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


class WriterProcess:
    """`fp writer run` as a real process, so a test can kill it like a crash would."""

    def __init__(self, bootstrap: str, redis_url: str, log: Path) -> None:
        self.env = {**os.environ, "FP_KAFKA_BOOTSTRAP": bootstrap, "FP_REDIS_URL": redis_url}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "fp.cli", "writer", "run"],
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


@pytest.fixture
def writer(kafka_bootstrap: str, stream_redis_url: str, tmp_path: Path,
           ) -> Iterator[WriterProcess]:
    process = WriterProcess(kafka_bootstrap, stream_redis_url, tmp_path / "writer.log")
    process.start()
    yield process
    process.stop()


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, count, 1)
                                       for name, count in partitions.items()]).values():
        future.result(timeout=30)


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> None:
    """Records in order, each (partition, payload); one record per batch, so the broker's
    offsets stay exact (see STACK.md on Tansu's end offsets)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for partition, payload in records:
        producer.produce(topic, payload, partition=partition)
        producer.poll(0)
    assert producer.flush(30) == 0


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60,
                ) -> list[dict[str, Any]]:
    """Read ``topic`` from the start until ``expected`` records arrived (or the timeout)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            records.append(json.loads(message.value() or b"null"))
    consumer.close()
    return records


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)

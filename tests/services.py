"""Helpers for tests that talk to Kafka and run platform processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]


class PlatformProcess:
    """An `fp …` command as a real process, so a test can kill it like a crash would."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.command = command
        self.env = {**os.environ, **env}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, **extra_env: str) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "fp.cli", *self.command],
                                            env={**self.env, **extra_env}, stdout=log,
                                            stderr=subprocess.STDOUT)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, count, 1)
                                       for name, count in partitions.items()]).values():
        future.result(timeout=30)


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> None:
    """Records in order, each (partition, payload); one record per batch, so the broker's
    offsets stay exact (Tansu reports a partition's end as its last batch's base offset + 1)."""
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


def features_in_redis(client: Any, view: str, namespace: str,
                      ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]]]:
    """Every entity of a namespace: (feature values, per-feature event times)."""
    prefix = f"fp:{view}:{namespace}:"
    values: dict[str, dict[str, Any]] = {}
    times: dict[str, dict[str, int]] = {}
    for key in client.scan_iter(f"{prefix}*"):
        stored: dict[str, str] = client.hgetall(key)
        entity = key.removeprefix(prefix)
        values[entity] = {k: json.loads(v) for k, v in stored.items() if not k.startswith("__")}
        times[entity] = {k.removeprefix("__ts:"): int(v) for k, v in stored.items()
                         if k.startswith("__ts:")}
        if "__ts" in stored and not times[entity]:
            times[entity] = dict.fromkeys(values[entity], int(stored["__ts"]))
    return values, times

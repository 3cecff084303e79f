"""Kafka → Flink SQL → result topic → Redis on real services, checked against the oracle."""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import redis

from core.domain.definitions import FeatureView, parse_definitions
from core.domain.layout import meta_key
from core.domain.validation import validate_batch
from fp.local.flink import LocalFlink
from sinks.compiler import JobSpec, KafkaOptions, compile_view
from sinks.flink import FlinkClient
from tests.payments import ACCOUNTS, FEATURES, INVALID_EVENTS, SCHEMA, event
from tests.services import (
    PlatformProcess,
    consume_all,
    create_topics,
    features_in_redis,
    produce,
    wait_for,
)
from tests.streaming.oracle import expected_features, mismatches, violation

pytestmark = pytest.mark.flink

BASE_MS = 1_790_000_000_000 - 1_790_000_000_000 % 60_000
WATERMARK_DELAY_MS = 2_000

FLUSH_ACCOUNT = ("flush", "zz")


def definitions(suffix: str) -> list[dict[str, Any]]:
    """Fresh definitions (callers may change them) of the payments view ``suffix``."""
    return copy.deepcopy([
        {"kind": "entity", "name": "account", "join_keys": ["account_id", "region"]},
        {"kind": "source", "name": "payments", "topic": f"payments_{suffix}",
         "timestamp_field": "ts", "watermark_delay": "2s", "schema": SCHEMA},
        {"kind": "feature_view", "name": f"account_stats_{suffix}", "entities": ["account"],
         "source": "payments", "features": FEATURES},
    ])


@dataclass
class Stream:
    """The events of one test, in production order, and what the oracle makes of them."""

    records: list[tuple[int, bytes]] = field(default_factory=list)

    def add(self, partition: int, payload: bytes) -> None:
        self.records.append((partition, payload))

    def clean_events(self, schema: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [json.loads(p) for _, p in self.records if violation(p, schema) is None]


def main_events(rng: random.Random, first: int, count: int, stream: Stream) -> None:
    """``count`` events 1.2 s apart; every 7th is 1.5 s early (out of order, within the
    watermark delay); every 13th is followed by an invalid event."""
    for i in range(first, first + count):
        ts = BASE_MS + i * 1200 - (1500 if i % 7 == 6 else 0)
        stream.add(i % 2, json.dumps(event(rng.choice(ACCOUNTS), ts, rng)).encode())
        if i % 13 == 12:
            stream.add(i % 2, INVALID_EVENTS[(i // 13) % len(INVALID_EVENTS)](ts))


@dataclass
class Materialisation:
    spec: JobSpec
    view: dict[str, Any]
    schema: list[dict[str, Any]]
    topic: str
    bootstrap: str
    flink: FlinkClient

    def wait_until_redis_matches(self, client: redis.Redis, stream: Stream) -> None:
        clean = stream.clean_events(self.schema)
        watermark = max(e["ts"] for e in clean) - WATERMARK_DELAY_MS - 1
        expected = expected_features(clean, self.view, ["account_id", "region"], "ts", watermark)
        found: list[str] = ["nothing compared yet"]

        def matches() -> bool:
            found[:] = mismatches(expected, *features_in_redis(client, self.spec.view,
                                                                self.spec.namespace))
            return not found

        try:
            wait_for(matches, "Redis to equal the oracle", timeout=150)
        except AssertionError:
            pytest.fail(f"{len(found)} mismatches, e.g. {found[:10]}\njob exceptions: "
                        f"{self.flink.exceptions(self.spec.job_id)}")
        compared = sum(len(v) for v in expected.features.values())
        assert compared == len(ACCOUNTS) * len(self.view["features"]) + 1, "every account has " \
            "every feature, the far-future account its last value only"

    def wait_for_watermark(self, client: redis.Redis, at_least: int) -> None:
        key = meta_key(self.spec.view, self.spec.namespace)
        wait_for(lambda: int(cast(str, client.hget(key, "watermark") or 0)) >= at_least,
                 f"the job's watermark to reach {at_least}")


@pytest.fixture
def materialisation(kafka_bootstrap: str, flink: FlinkClient) -> Iterator[Materialisation]:
    suffix = uuid.uuid4().hex[:6]
    raw = definitions(suffix)
    catalog = validate_batch({}, parse_definitions(raw))
    view = catalog[f"feature_view:account_stats_{suffix}"]
    assert isinstance(view, FeatureView)
    spec = compile_view(view, catalog, "v1", 1, kafka=KafkaOptions(kafka_bootstrap))
    create_topics(kafka_bootstrap, {spec.source_topic: 2, spec.dlq_topic: 1,
                                    spec.result_topic: 2})
    flink.submit(spec)
    wait_for(lambda: (s := flink.status(spec.job_id)) is not None and s.running,
             "the job's tasks to run", timeout=90)
    yield Materialisation(spec, raw[2], raw[1]["schema"], spec.source_topic, kafka_bootstrap,
                          flink)
    flink.cancel(spec.job_id)


def finish(m: Materialisation, client: redis.Redis, stream: Stream) -> list[bytes]:
    """Once the main events' windows closed, add very late events (→ DLQ) and a far-future
    event per partition that closes every window; returns the late payloads."""
    clean = stream.clean_events(m.schema)
    m.wait_for_watermark(client, max(e["ts"] for e in clean) - 120_000)
    late = [json.dumps({"account_id": "a1", "region": "eu", "amount": 1.0,
                        "ts": BASE_MS + 1000 * n}).encode() for n in range(3)]
    flush_ts = max(e["ts"] for e in clean) + 3_600_000
    flush = [json.dumps({"account_id": FLUSH_ACCOUNT[0], "region": FLUSH_ACCOUNT[1],
                         "kind": "c", "ts": flush_ts}).encode()] * 2
    produce(m.bootstrap, m.topic, [(n % 2, p) for n, p in enumerate(late)])
    produce(m.bootstrap, m.topic, [(0, flush[0]), (1, flush[1])])
    stream.records += [(0, p) for p in flush]
    return late


def test_features_equal_an_independent_computation_and_nothing_is_dropped(
        materialisation: Materialisation, stream_redis: redis.Redis,
        writer: PlatformProcess) -> None:
    m, rng, stream = materialisation, random.Random(7), Stream()
    main_events(rng, 0, 500, stream)
    produce(m.bootstrap, m.topic, stream.records)
    late = finish(m, stream_redis, stream)
    m.wait_until_redis_matches(stream_redis, stream)

    invalid = [p for _, p in stream.records if violation(p, m.schema) is not None]
    dead = consume_all(m.bootstrap, m.spec.dlq_topic, len(invalid) + len(late))
    assert sorted(d["payload"].encode() for d in dead) == sorted(invalid + late)
    reasons = {d["reason"] for d in dead}
    assert {"late: its window has already closed", "payload is not a JSON object",
            "account_id: required field is missing", "amount: not a valid double",
            "amount: -5 is below the minimum 0", "kind: z is not an allowed value",
            "region: not a valid string", "ts: not a valid long"} == reasons

    rows = consume_all(m.bootstrap, m.spec.result_topic, 10**9, timeout=15)
    counted = {(r["e"], r["t"]): r["f"]["payments_1m"] for r in rows
               if "payments_1m" in r["f"]}
    clean = stream.clean_events(m.schema)
    assert sum(counted.values()) == len(clean) - 2, "every clean event aggregated once " \
        "(the 2 far-future events wait in open windows)"
    assert sum(counted.values()) + len(dead) + 2 == len(stream.records) + len(late)


@pytest.mark.parametrize("crash", ["writer", "taskmanager"])
def test_a_crash_mid_stream_loses_nothing(
        crash: str, materialisation: Materialisation, stream_redis: redis.Redis,
        writer: PlatformProcess, flink_cluster: LocalFlink) -> None:
    m, rng, first_half = materialisation, random.Random(11), Stream()
    main_events(rng, 0, 250, first_half)
    produce(m.bootstrap, m.topic, first_half.records)
    m.wait_for_watermark(stream_redis, BASE_MS + 120_000)

    second_half = Stream()
    main_events(rng, 250, 250, second_half)
    if crash == "writer":
        writer.kill()
        produce(m.bootstrap, m.topic, second_half.records)
        writer.start()
    else:
        flink_cluster.kill_taskmanager()
        produce(m.bootstrap, m.topic, second_half.records)
        flink_cluster.start_taskmanager()
        wait_for(lambda: (s := m.flink.status(m.spec.job_id)) is not None and s.running,
                 "the job to recover on the new TaskManager", timeout=150)
    stream = Stream(first_half.records + second_half.records)
    finish(m, stream_redis, stream)
    m.wait_until_redis_matches(stream_redis, stream)
    if crash == "taskmanager":
        assert m.flink.exceptions(m.spec.job_id), "the job saw the TaskManager go"

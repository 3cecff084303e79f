"""One semantics: the backfill's values equal the streaming job's and the oracle's.

The same events go through the streaming job (Kafka → Flink → result topic) and, archived,
through a backfill (Iceberg → Flink batch → feature table).  Both runs share one pair of jobs:
the payments domain's accounts carry ordinary traffic, and each generated case of the
randomized part has an account of its own — nulls, out-of-order events within the watermark
delay, events exactly on window edges, several events at one millisecond (``last``), late
events, events that break the contract — so one stream job and one backfill check them all.

Late events are dead-lettered by the stream and would be counted by a backfill (a bounded
input has no lateness, docs/backfill.md): the archive gets the events the stream did not
dead-letter as late, "the same on-time events".  Amounts are multiples of 1/4, so sums are
exact in any order and compare exactly; avg and stddev compare to 1e-9 relative.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from core.domain.definitions import FeatureView, parse_definitions
from core.domain.events import Provenance
from core.domain.validation import validate_batch
from offline import iceberg
from sinks.compiler import KafkaOptions, compile_view
from sinks.flink import FlinkClient
from tests.backfill.support import (
    DAY_MS,
    Values,
    differences,
    fresh_catalog,
    fresh_store,
    restricted,
    service,
    stream_values,
    table_values,
)
from tests.offline.support import apply, archive_directly
from tests.payments import ACCOUNTS, FEATURES, INVALID_EVENTS, SCHEMA
from tests.services import create_topics, produce
from tests.streaming.oracle import last_values, violation, window_values

pytestmark = pytest.mark.flink

JOIN_KEYS = ["account_id", "region"]
# 40 minutes before a day boundary: the traffic crosses it, so chunks split windows.
BASE_MS = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS + DAY_MS - 40 * 60_000
DELAY_MS = 2_000


def quarter(rng: random.Random) -> float:
    return round(rng.uniform(0, 500) * 4) / 4


def payment(account: tuple[str, str], ts: int, rng: random.Random) -> dict[str, Any]:
    event: dict[str, Any] = {"account_id": account[0], "region": account[1], "ts": ts}
    if rng.random() < 0.85:
        event["amount"] = quarter(rng)
    if rng.random() < 0.75:
        event["kind"] = rng.choice("abc")
    return event


@dataclass
class Traffic:
    on_time: list[bytes]
    """In production order: the payments traffic and the cases' events, interleaved."""
    late: list[bytes]
    """Produced after everything else, far behind the watermark."""


def traffic(rng: random.Random, cases: int) -> Traffic:
    """Payments every 4 s for 80 minutes (every 7th 1.5 s early), an invalid event now and
    then, and per case an account of its own with one kind of hard event."""
    timeline: list[tuple[int, int, bytes]] = []  # (production time, order, payload)
    for i in range(1200):
        ts = BASE_MS + i * 4000 - (1500 if i % 7 == 6 else 0)
        timeline.append((BASE_MS + i * 4000, len(timeline),
                         json.dumps(payment(rng.choice(ACCOUNTS), ts, rng)).encode()))
        if i % 50 == 49:
            timeline.append((BASE_MS + i * 4000, len(timeline),
                             INVALID_EVENTS[(i // 50) % len(INVALID_EVENTS)](ts)))
    late = []
    for case in range(cases):
        account = (f"case{case}", rng.choice(["eu", "us"]))
        minute = BASE_MS + rng.randrange(0, 75) * 60_000
        kind = case % 5
        for n in range(rng.randint(2, 6)):
            if kind == 0:    # exactly on window edges: first and last millisecond
                ts = minute + rng.choice([0, 59_999, 60_000, 119_999]) + n * 120_000
            elif kind == 1:  # only nulls in the aggregated column
                ts = minute + rng.randrange(0, 180_000)
            elif kind == 2:  # several events at one millisecond
                ts = minute + 30_000
            elif kind == 3:  # out of order, within the watermark delay
                ts = minute + n * 10_000 - rng.randrange(0, DELAY_MS)
            else:            # one ordinary event, then late ones
                ts = minute + n * 1000
            event = payment(account, ts, rng)
            if kind == 1:
                event.pop("amount", None)
            if kind == 4 and n > 0:
                late.append(json.dumps(event).encode())
                continue
            # Produced when the stream's clock is there (out-of-order ones a little later).
            produced = ts + (rng.randrange(0, DELAY_MS) if kind == 3 else 0)
            timeline.append((max(produced, ts), len(timeline), json.dumps(event).encode()))
    timeline.sort()
    return Traffic([payload for _, _, payload in timeline], late)


def definitions(topic: str) -> list[dict[str, Any]]:
    return [{"kind": "entity", "name": "account", "join_keys": JOIN_KEYS},
            {"kind": "source", "name": "payments", "topic": topic, "timestamp_field": "ts",
             "watermark_delay": "2s", "schema": SCHEMA},
            {"kind": "feature_view", "name": "account_stats", "entities": ["account"],
             "source": "payments", "features": FEATURES}]


class TopicReader:
    """Reads a topic's partitions from the start, incrementally (no group join)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.records: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        while (batch := self.consumer.consume(10_000, timeout=1.0)):
            self.records += [json.loads(m.value() or b"null") for m in batch
                             if m.error() is None]
        return self.records

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Run:
    view: dict[str, Any]
    stream: Values
    backfill: Values
    oracle: Values
    late_dead_lettered: int
    range_ms: tuple[int, int]


def _expected(on_time: list[bytes], view: dict[str, Any]) -> Values:
    clean = [json.loads(p) for p in on_time if violation(p, SCHEMA) is None]
    return {**window_values(clean, view, JOIN_KEYS, "ts"),
            **last_values(clean, view, JOIN_KEYS, "ts")}


@pytest.fixture(scope="module")
def run(database_url: str, kafka_bootstrap: str, flink: FlinkClient,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    topic = f"payments_{uuid.uuid4().hex[:6]}"
    specs = definitions(topic)
    view_spec = specs[2]
    catalog_definitions = validate_batch({}, parse_definitions(specs))
    view = catalog_definitions["feature_view:account_stats"]
    assert isinstance(view, FeatureView)
    spec = compile_view(view, catalog_definitions, "v1", 1, kafka=KafkaOptions(kafka_bootstrap))
    create_topics(kafka_bootstrap, {topic: 1, spec.dlq_topic: 1, spec.result_topic: 2})
    flink.submit(spec)
    rng = random.Random(20260916)
    sent = traffic(rng, cases=40)
    # After the backfilled range: its windows never close, its last value is not compared.
    flush = json.dumps({"account_id": "flush", "region": "zz", "kind": "c",
                        "ts": BASE_MS + 30 * 3_600_000}).encode()
    produce(kafka_bootstrap, topic, [(0, p) for p in sent.on_time])
    results = TopicReader(kafka_bootstrap, spec.result_topic, 2)
    dead = TopicReader(kafka_bootstrap, spec.dlq_topic, 1)
    first_day = BASE_MS - BASE_MS % DAY_MS
    range_ms = (first_day, first_day + 2 * DAY_MS)
    deadline = time.monotonic() + 180
    try:
        # The late events go in once the watermark is past their windows.
        while not any(r["t"] >= BASE_MS + 76 * 60_000 for r in results.read() if r["w"]):
            assert time.monotonic() < deadline, \
                f"the stream is stuck: {flink.exceptions(spec.job_id)}"
            time.sleep(1)
        produce(kafka_bootstrap, topic, [(0, p) for p in [*sent.late, flush]])
        while True:  # until the stream's rows are those of every event it did not drop
            late = [d["payload"].encode() for d in dead.read() if d["reason_code"] == "late"]
            on_time = sent.on_time + [p for p in sent.late if p not in late]
            oracle = restricted(_expected(on_time, view_spec), *range_ms)
            # The flush event's own windows never close: outside the range, not compared.
            stream = restricted(stream_values(results.read(), view_spec), *range_ms)
            if not differences(oracle, stream, view_spec) or time.monotonic() > deadline:
                break
            time.sleep(2)
    finally:
        results.close()
        dead.close()
        flink.cancel(spec.job_id)

    store = fresh_store(database_url)
    apply(store, specs)
    warehouse = tmp_path_factory.mktemp("warehouse")
    catalog = fresh_catalog(database_url, warehouse)
    archived = [(0, offset, payload) for offset, payload in enumerate(on_time)]
    archive_directly(catalog, specs[1], 1, archived)
    backfills = service(store, catalog, flink, tmp_path_factory.mktemp("staging"))
    summary = backfills.run(backfills.plan("account_stats", None, *range_ms),
                            Provenance(actor="test"))
    assert summary.error is None, summary.error
    table = catalog.load_table(iceberg.feature_table_name("account_stats", 1))
    backfill = table_values(table.scan().to_arrow(), view_spec, JOIN_KEYS)
    yield Run(view_spec, stream, backfill, oracle, len(late), range_ms)


def test_the_stream_equals_the_oracle(run: Run) -> None:
    """The reference itself: what the streaming job emitted for its on-time events."""
    assert not differences(run.oracle, run.stream, run.view)
    assert run.late_dead_lettered > 0, "some generated events were late, and dead-lettered"


def test_the_backfill_equals_the_stream_and_the_oracle(run: Run) -> None:
    compared = sum(len(v) for v in run.oracle.values())
    assert compared > 3000, "windows of every feature, cases included"
    assert not differences(run.stream, run.backfill, run.view)[:20]
    assert not differences(run.oracle, run.backfill, run.view)[:20]


def test_every_hard_case_reached_the_table(run: Run) -> None:
    keys = {key[0] for values in run.backfill.values() for key in values}
    assert {f"case{n}" for n in range(40)} <= {k.split("|")[0] for k in keys}
    edges = [t for (key, t) in run.backfill["payments_1m"] if key.startswith("case")]
    assert any(t % 60_000 == 0 for t in edges)
    nulls = [v for (key, _), v in run.backfill["amount_1m"].items() if key.startswith("case")]
    assert None in nulls, "a window of only null amounts has a null sum (and a count)"

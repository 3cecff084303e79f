"""Online/offline parity on the project's example views: the same events go through the
streaming job into Redis and through the archiver into Iceberg; a training set at a time
after the stream has processed everything equals what Redis holds.

Parity holds when the stream dead-lettered nothing as late (docs/offline.md, "Lateness").
On a busy machine a two-partition topic lets one partition run ahead while the other is
declared idle (``table.exec.source.idle-timeout``), and the stream then drops the other's
events as late — a real difference, not a parity bug.  So the source topic has one
partition, events are at most 1.5 s out of order (the watermark delay is 2 s), and the test
asserts that the dead-letter topic holds no late event."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
from pyiceberg.catalog import Catalog

from core.domain.definitions import FeatureView, parse_definitions
from core.domain.validation import validate_batch
from offline import iceberg
from offline.training_sets import TrainingSetBuilder
from registry.repo_loader import load_repository
from registry.store.postgres import PostgresRegistryStore
from sinks.compiler import JobSpec, KafkaOptions, compile_view
from sinks.flink import FlinkClient
from tests.offline.conftest import ArchiverFactory
from tests.offline.support import apply, same
from tests.services import (
    PlatformProcess,
    consume_all,
    create_topics,
    features_in_redis,
    produce,
    wait_for,
)
from tests.streaming.oracle import entity_key, expected_features, mismatches, violation

pytestmark = pytest.mark.flink

BASE_MS = 1_790_000_000_000 - 1_790_000_000_000 % 300_000
WATERMARK_DELAY_MS = 2_000
USERS = [f"u{n}" for n in range(12)]
MERCHANTS = ["m1", "m|2", "m3", "m4"]
VIEWS = {"user_transactions": "user_id", "merchant_transactions": "merchant_id"}


def example_definitions(topic: str) -> list[dict[str, Any]]:
    """The example repo, with its source on a topic of this test's own."""
    specs = load_repository(Path(__file__).resolve().parents[2] / "examples" / "features")
    for spec in specs:
        if spec["kind"] == "source":
            spec["topic"] = topic
    return specs


def transactions(rng: random.Random, count: int) -> list[tuple[int, bytes]]:
    """Events 1.1 s apart (every 7th 1.5 s early, within the watermark delay, so nothing is
    late), every 11th followed by one that breaks the contract."""
    records = []
    for i in range(count):
        ts = BASE_MS + i * 1100 - (1500 if i % 7 == 6 else 0)
        event: dict[str, Any] = {"user_id": rng.choice(USERS),
                                 "merchant_id": rng.choice(MERCHANTS), "ts": ts}
        if rng.random() < 0.9:
            event["amount"] = round(rng.uniform(0, 300), 2)
        if rng.random() < 0.8:
            event["currency"] = rng.choice(["EUR", "USD", "GBP"])
        if rng.random() < 0.8:
            event["channel"] = rng.choice(["web", "app", "pos"])
        records.append((0, json.dumps(event).encode()))
        if i % 11 == 10:
            records.append((0, json.dumps({**event, "amount": -1}).encode()))
    return records


@pytest.fixture
def jobs(store: PostgresRegistryStore, kafka_bootstrap: str, flink: FlinkClient,
         ) -> Iterator[tuple[list[dict[str, Any]], list[JobSpec]]]:
    specs = example_definitions(f"transactions_{uuid.uuid4().hex[:8]}")
    apply(store, specs)
    catalog = validate_batch({}, parse_definitions(specs))
    compiled = []
    for name in VIEWS:
        view = catalog[f"feature_view:{name}"]
        assert isinstance(view, FeatureView)
        compiled.append(compile_view(view, catalog, "v1", 1, kafka=KafkaOptions(kafka_bootstrap)))
    create_topics(kafka_bootstrap, {compiled[0].source_topic: 1, compiled[0].dlq_topic: 1,
                                    **{spec.result_topic: 1 for spec in compiled}})
    for spec in compiled:
        flink.submit(spec)
    def running(job: JobSpec) -> bool:
        status = flink.status(job.job_id)
        return status is not None and status.running

    for spec in compiled:
        wait_for(partial(running, spec), "the job's tasks to run", timeout=90)
    yield specs, compiled
    for spec in compiled:
        flink.cancel(spec.job_id)


def test_training_values_equal_what_the_stream_wrote_to_redis(
        jobs: tuple[list[dict[str, Any]], list[JobSpec]], store: PostgresRegistryStore,
        catalog: Catalog, archiver: ArchiverFactory, kafka_bootstrap: str,
        writer: PlatformProcess, stream_redis: redis.Redis) -> None:
    specs, compiled = jobs
    schema = next(s for s in specs if s["kind"] == "source")["schema"]
    view_specs = {s["name"]: s for s in specs if s["kind"] == "feature_view"}
    process = archiver()
    process.start()

    records = transactions(random.Random(21), 700)
    clean = [json.loads(p) for _, p in records if violation(p, schema) is None]
    last_ms = max(e["ts"] for e in clean)
    # A far event moves the watermark past every window of the main events.
    flush = json.dumps({"user_id": "flush", "merchant_id": "flush", "ts": last_ms + 1_200_000})
    records.append((0, flush.encode()))
    produce(kafka_bootstrap, compiled[0].source_topic, records)

    watermark = last_ms + 1_200_000 - WATERMARK_DELAY_MS - 1
    all_clean = [*clean, json.loads(flush)]
    for spec in compiled:
        expected = expected_features(all_clean, view_specs[spec.view], [VIEWS[spec.view]],
                                     "ts", watermark)
        left: list[str] = []

        def redis_complete(e: Any = expected, s: JobSpec = spec, found: list[str] = left,
                           ) -> bool:
            found[:] = mismatches(e, *features_in_redis(stream_redis, s.view, s.namespace))
            return not found

        try:
            wait_for(redis_complete, f"Redis to hold {spec.view}", timeout=180)
        except AssertionError:
            late = [d for d in consume_all(kafka_bootstrap, spec.dlq_topic, 10**6, timeout=10)
                    if d["reason"].startswith("late")]
            pytest.fail(f"the stream did not finish {spec.view}: {left[:10]}; "
                        f"{len(late)} events dead-lettered as late")

    def archive_complete() -> bool:
        try:
            table = iceberg.load_archive(catalog, "transactions")
        except iceberg.ArchiveError:  # a loaded machine: its first append has not come yet
            return False
        return iceberg.scan(table, [iceberg.OFFSET]).num_rows == len(records)

    wait_for(archive_complete, "the archive to hold every event", timeout=120)

    dead = consume_all(kafka_bootstrap, compiled[0].dlq_topic, 10**6, timeout=10)
    assert dead and not [d for d in dead if d["reason"].startswith("late")], \
        "the stream dead-lettered the invalid events and nothing as late"
    as_of = last_ms + 600_000  # every window of the main events has closed; ttl is 1 h
    compared, found = 0, []
    for spec in compiled:
        key = VIEWS[spec.view]
        online, _ = features_in_redis(stream_redis, spec.view, spec.namespace)
        entities = [k for k in online if k != "flush"]
        ids = [next(e[key] for e in clean if entity_key([e[key]]) == k) for k in entities]
        rows = pa.table({key: ids, "event_timestamp": pa.array([as_of] * len(ids),
                                                                pa.timestamp("ms"))})
        references = [f"{spec.view}:{f['name']}" for f in view_specs[spec.view]["features"]]
        offline = TrainingSetBuilder(store, catalog).build(rows, references).table
        for index, entity in enumerate(entities):
            for reference in references:
                feature = reference.split(":")[1]
                want, got = online[entity].get(feature), offline[reference][index].as_py()
                compared += 1
                if not same(want, got):
                    found.append(f"{spec.view} {entity} {feature}: Redis {want!r}, "
                                 f"training set {got!r}")
    assert len(USERS) * 6 + len(MERCHANTS) * 3 <= compared
    assert found == [], f"{len(found)} mismatches of {compared}"

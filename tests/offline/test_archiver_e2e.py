"""`fp archiver run` against a real broker, killed with SIGKILL at random points."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog

from offline import iceberg
from registry.store.postgres import PostgresRegistryStore
from tests.offline.conftest import ArchiverFactory
from tests.offline.support import DAY_MS, apply, definitions, payloads, run_fp, source_spec
from tests.payments import SCHEMA
from tests.services import create_topics, produce, wait_for
from tests.streaming.oracle import violation

PARTITIONS = 4


def archived(catalog: Catalog, source: str = "payments") -> list[dict[str, Any]]:
    try:
        table = iceberg.load_archive(catalog, source)
    except iceberg.ArchiveError:
        return []
    return iceberg.scan(table, [iceberg.PARTITION, iceberg.OFFSET, iceberg.VIOLATION,
                                iceberg.PAYLOAD]).to_pylist()


def count(catalog: Catalog, source: str = "payments") -> int:
    return len(archived(catalog, source))


def test_every_event_is_archived_exactly_once_across_crashes(
        store: PostgresRegistryStore, catalog: Catalog, archiver: ArchiverFactory,
        kafka_bootstrap: str, database_url: str, warehouse: Path, tmp_path: Path) -> None:
    topic = f"payments_{uuid.uuid4().hex[:8]}"
    apply(store, definitions(topic))
    create_topics(kafka_bootstrap, {topic: PARTITIONS})
    rng = random.Random(5)
    # Events over three days of event time, so several day partitions fill up.
    records = [(rng.randrange(PARTITIONS), p)
               for _, p in payloads(rng, 2400, spacing_ms=DAY_MS // 900)]
    rounds = [records[i:i + 300] for i in range(0, len(records), 300)]

    # Small batches: each life of the archiver appends several times before it is killed.
    process = archiver("--batch-rows", "100")
    process.start()
    kills = 0
    for index, batch in enumerate(rounds):
        produce(kafka_bootstrap, topic, batch)
        if index % 2 == 1:
            # Once this life has appended something, crash it at a random point: between
            # appends, while writing files, or between the Iceberg and the Kafka commit.
            archived_before = count(catalog)

            def appended(before: int = archived_before) -> bool:
                return count(catalog) > before

            wait_for(appended, "the archiver to append", 120)
            time.sleep(rng.uniform(0.0, 0.4))
            process.kill()
            kills += 1
            process.start()
    wait_for(lambda: count(catalog) >= len(records), "every event to be archived", 240)
    time.sleep(3)  # anything duplicated late would land now
    rows = archived(catalog)
    process.stop()

    produced: Counter[tuple[int, int]] = Counter()  # as the broker numbered them
    next_offset: Counter[int] = Counter()
    for partition, _ in records:
        produced[(partition, next_offset[partition])] += 1
        next_offset[partition] += 1
    keys = Counter((r[iceberg.PARTITION], r[iceberg.OFFSET]) for r in rows)
    assert kills >= 4
    assert len(rows) == len(records), "no event lost, none duplicated"
    assert keys == produced
    invalid = [p for _, p in records if violation(p, SCHEMA) is not None]
    flagged = [r for r in rows if r[iceberg.VIOLATION] is not None]
    assert sorted(r[iceberg.PAYLOAD] for r in flagged) == sorted(p.decode() for p in invalid)

    table = iceberg.load_archive(catalog, "payments")
    before = iceberg.data_files(table)
    days = len({repr(t.file.partition) for t in before})
    assert len(before) > days, "micro-batches left several files per day"
    maintain = run_fp(database_url, "archiver", "maintain", "--snapshot-retention", "1ms",
                      "--orphan-age", "1ms")
    assert maintain.returncode == 0, maintain.stderr
    assert "raw.payments" in maintain.stdout
    table = iceberg.load_archive(catalog, "payments")
    assert len(iceberg.data_files(table)) == days, "one file per day partition"
    assert Counter((r[iceberg.PARTITION], r[iceberg.OFFSET]) for r in archived(catalog)) == keys


def test_new_sources_and_contract_versions_are_picked_up_while_running(
        store: PostgresRegistryStore, catalog: Catalog, archiver: ArchiverFactory,
        kafka_bootstrap: str) -> None:
    topic, other_topic = (f"payments_{uuid.uuid4().hex[:8]}", f"refunds_{uuid.uuid4().hex[:8]}")
    apply(store, definitions(topic))
    create_topics(kafka_bootstrap, {topic: 2, other_topic: 2})
    process = archiver()
    process.start()
    first = {"account_id": "a1", "region": "eu", "ts": 1_000}
    produce(kafka_bootstrap, topic, [(0, json.dumps(first).encode())])
    wait_for(lambda: count(catalog) == 1, "the first event")

    apply(store, [source_spec(other_topic, name="refunds")])
    produce(kafka_bootstrap, other_topic, [(1, json.dumps(first).encode())])
    wait_for(lambda: count(catalog, "refunds") == 1, "the new source's event")

    apply(store, [source_spec(topic, extra_fields=[{"name": "channel", "type": "string"}])])
    wait_for(lambda: "channel" in iceberg.load_archive(catalog, "payments").schema()
             .column_names, "the table to gain the new field")
    produce(kafka_bootstrap, topic, [(1, json.dumps({**first, "ts": 2_000,
                                                     "channel": "web"}).encode())])
    wait_for(lambda: count(catalog) == 2, "the event with the new field")
    rows = iceberg.scan(iceberg.load_archive(catalog, "payments"),
                        ["ts", "channel", iceberg.CONTRACT_VERSION]).sort_by("ts").to_pylist()
    assert rows == [{"ts": 1_000, "channel": None, "_contract_version": 1},
                    {"ts": 2_000, "channel": "web", "_contract_version": 2}]

"""Archive throughput: events per second from Kafka into Iceberg, end to end.

Produces N events into a local Tansu topic (4 partitions) first, then runs the archiver
in this process until the table holds all N, and reports events/s, appends and files (before
and after maintenance).  The figure covers fetching, the contract check, building Arrow
batches, writing Parquet and the catalog commits.

    .venv/bin/python -m benchmarks.offline.archive_throughput --events 500000
"""

from __future__ import annotations

import argparse
import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from benchmarks.offline.support import DAY_MS, events, log, offline_stack
from fp.local.kafka import LocalKafka
from offline import iceberg
from offline.archiver import Archiver, ArchiverOptions


def produce(bootstrap: str, topic: str, count: int, users: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "batch.num.messages": 10_000, "queue.buffering.max.messages": 500_000})
    for index, payload in enumerate(events(count, users, DAY_MS)):
        while True:
            try:
                producer.produce(topic, payload, partition=index % 4)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    args = parser.parse_args()

    kafka = LocalKafka()
    kafka.start()
    try:
        with offline_stack() as stack:
            started = time.monotonic()
            produce(kafka.url, "transactions", args.events, args.users)
            log(f"produced {args.events:,} events in {time.monotonic() - started:.1f} s")
            archiver = Archiver(stack.store, stack.catalog, kafka.url, ArchiverOptions(
                batch_rows=args.batch_rows, batch_seconds=2.0, maintenance_every_seconds=0,
                consumer_properties={"session.timeout.ms": "6000"}))
            worker = threading.Thread(target=archiver.run)
            started = time.monotonic()
            worker.start()
            first_row_at = None
            while True:
                time.sleep(0.25)
                source = archiver.sources.get("transactions")
                archived = source.archived if source else 0
                if archived and first_row_at is None:
                    first_row_at = time.monotonic()
                if archived >= args.events:
                    break
            elapsed = time.monotonic() - started
            archiver.stop()
            worker.join()
            table = iceberg.load_archive(stack.catalog, "transactions")
            appends = len(table.metadata.snapshots)
            files = len(iceberg.data_files(table))
            log(f"archived {args.events:,} events in {elapsed:.1f} s "
                f"(including ≈{(first_row_at or started) - started:.1f} s consumer-group "
                f"join): {args.events / elapsed:,.0f} events/s; {appends} appends, "
                f"{files} data files")
            started = time.monotonic()
            report = iceberg.maintain(table, target_file_bytes=128 * 1024 * 1024,
                                      snapshot_max_age_ms=1, orphan_min_age_ms=1)
            log(f"maintenance in {time.monotonic() - started:.1f} s: {report}")
    finally:
        kafka.stop()


if __name__ == "__main__":
    main()

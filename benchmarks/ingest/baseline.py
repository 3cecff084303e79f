"""The baseline the ingest figures read against, in one Python process (run pinned to the
server's core by benchmarks/ingest/throughput.py; prints one JSON line):

* the pure part of a request, without I/O: a 500-event batch body read into events, each
  judged by the payments contract, the records built (CPU µs an event);
* the raw idempotent producer: the same events handed to a confluent-kafka ``Producer`` with
  the ingest API's settings (``enable.idempotence``, ``acks=all``, ``linger.ms=0``), one
  delivery callback per message, served by ``poll`` in the producing thread, for
  ``--seconds``; events/s counts the messages the broker acknowledged, over the time until
  the last was (``flush``).  That is what one worker could do with no HTTP, no contract and
  no event loop.  With its CPU (in cores), and the cores other processes used on its CPUs
  meanwhile (when pinned, the server's CPU: the noise of a shared machine).

    .venv/bin/python -m benchmarks.ingest.baseline --bootstrap HOST:PORT [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from benchmarks.ingest.support import SOURCE, batch_body, cpu_seconds, events
from core.domain.contracts import ContractChecker
from core.domain.definitions import Source, parse_definition
from ingest.batches import JSON, Mode, judge, read_events, records
from sinks.kafka_admin import KafkaAdmin

BATCH = 500
TOPIC = "bench_baseline"


def pure_pipeline(bodies: Sequence[bytes], seconds: float) -> dict[str, float]:
    """CPU µs an event (this thread's, so that sharing the CPU does not count) of reading a
    batch body, judging its events and building the records."""
    source = parse_definition(dict(SOURCE))
    assert isinstance(source, Source)
    checker = ContractChecker(source)
    read_s = judge_s = records_s = 0.0
    count = 0
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        for body in bodies:
            t0 = time.thread_time()
            batch = read_events(body, JSON)
            t1 = time.thread_time()
            verdict = judge(checker, batch)
            t2 = time.thread_time()
            records(verdict, Mode.PARTIAL, source="payments", contract_version=1,
                    topic="payments", dead_letter_topic="payments.dlq", request_id="0" * 32)
            t3 = time.thread_time()
            read_s, judge_s, records_s = read_s + t1 - t0, judge_s + t2 - t1, records_s + t3 - t2
            count += len(batch)
    return {"read_us": read_s / count * 1e6, "judge_us": judge_s / count * 1e6,
            "records_us": records_s / count * 1e6}


class _Counter:
    def __init__(self) -> None:
        self.acknowledged = 0
        self.failed = 0

    def report(self, error: KafkaError | None, _: Message) -> None:
        if error is None:
            self.acknowledged += 1
        else:
            self.failed += 1


def raw_producer(bootstrap: str, values: Sequence[bytes], seconds: float, warmup_s: float,
                 ) -> dict[str, float]:
    KafkaAdmin(bootstrap).ensure_topics([TOPIC], 4)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 0, "message.timeout.ms": 30_000,
                         "queue.buffering.max.messages": 1_000_000})
    _produce_for(producer, values, warmup_s, _Counter())
    producer.flush(30)
    counter = _Counter()
    cpus = frozenset(os.sched_getaffinity(0))
    started, cpu, (busy, steal) = time.perf_counter(), time.process_time(), cpu_seconds(cpus)
    _produce_for(producer, values, seconds, counter)
    left = producer.flush(60)
    elapsed = time.perf_counter() - started
    cores = (time.process_time() - cpu) / elapsed
    busy_after, steal_after = cpu_seconds(cpus)
    return {"events_per_s": counter.acknowledged / elapsed, "acknowledged": counter.acknowledged,
            "failed": counter.failed + left, "seconds": elapsed, "cores": cores,
            "others": max((busy_after - busy) / elapsed - cores, 0.0),
            "steal": (steal_after - steal) / elapsed / len(cpus)}


def _produce_for(producer: Producer, values: Sequence[bytes], seconds: float,
                 counter: _Counter) -> None:
    deadline = time.perf_counter() + seconds
    n, count = 0, len(values)
    while time.perf_counter() < deadline:
        for _ in range(BATCH):
            producer.produce(TOPIC, values[n % count], on_delivery=counter.report)
            n += 1
        producer.poll(0)
        while len(producer) > 100_000:  # keep the queue bounded, as requests would
            producer.poll(0.001)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--invalid", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    batches = [events(BATCH, args.invalid, rng) for _ in range(40)]
    figures: dict[str, Any] = {
        "pure": pure_pipeline([batch_body(batch) for batch in batches], 3.0),
        "producer": raw_producer(args.bootstrap, [e for batch in batches for e in batch],
                                 args.seconds, args.warmup)}
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

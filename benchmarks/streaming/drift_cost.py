"""What the drift statistics statement costs a job: its throughput with and without it.

One backlog of ``--events`` events (``--entities`` users, event times spread over
``--event-seconds`` so that windows keep closing as the job reads) is produced once; then, in
each of ``--rounds`` rounds, the benchmark view's job (three window queries, seven features:
benchmarks/streaming/support.py) drains it from the earliest offset twice — as compiled
(with the statistics statement) and with that statement removed — in alternating order, so
that both variants see the same machine load.  Throughput is the slope of the job's
committed source offsets (it commits on each 1 s checkpoint) between 10 % and 90 % of the
backlog: start-up and the last checkpoint are not counted.

    .venv/bin/python -m benchmarks.streaming.drift_cost [--events 400000] [--rounds 3]

Starts and stops its own Tansu, Redis and Flink on loopback; about 1.5 min a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time

from benchmarks.streaming.support import (
    GroupProgress,
    bulk_producer,
    compile_benchmark_view,
    create_topics,
    local_stack,
    log,
    produce_one,
)
from core.domain.layout import source_group
from sinks.compiler import JobSpec
from sinks.flink import FlinkClient
from sinks.flink_jars import ensure_kafka_connector_jars
from sinks.kafka_admin import KafkaAdmin

TOPIC = "bench_drift_events"
VIEW = "bench_drift"


def without_statistics(spec: JobSpec) -> JobSpec:
    """The same job without the statistics statement (and the view only it reads)."""
    return dataclasses.replace(spec, statements=tuple(
        s for s in spec.statements if "`feature_values`" not in s))


def fill(bootstrap: str, events: int, entities: int, event_seconds: int) -> None:
    producer, rng = bulk_producer(bootstrap, linger_ms=20), random.Random(5)
    start_ms = int(time.time() * 1000) - event_seconds * 1000
    for n in range(events):
        ts = start_ms + n * event_seconds * 1000 // events
        user = rng.randrange(entities)
        payload = (f'{{"user_id":"u{user}","amount":{rng.random() * 500:.2f},'
                   f'"items":{rng.randrange(1, 9)},"ts":{ts}}}')
        produce_one(producer, TOPIC, payload.encode(), f"u{user}".encode())
        if n % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)


def drain(flink: FlinkClient, spec: JobSpec, bootstrap: str, events: int) -> float:
    """Events/s the job read between 10 % and 90 % of the backlog."""
    KafkaAdmin(bootstrap).ensure_topics(spec.topics, partitions=2)  # the DLQ is shared
    flink.submit(spec)
    progress = GroupProgress(bootstrap, TOPIC, source_group(spec.view, spec.namespace),
                             interval=0.25)
    progress.start()
    deadline = time.monotonic() + 900
    try:
        while not progress.samples or progress.samples[-1][1] < 0.9 * events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{spec.job_name} did not drain the backlog in 15 min: "
                                   f"{flink.exceptions(spec.job_id)[:2]}")
            time.sleep(0.5)
    finally:
        progress.stop()
        progress.close()
        flink.cancel(spec.job_id)
    samples = progress.samples
    first = next(s for s in samples if s[1] >= 0.1 * events)
    last = next(s for s in samples if s[1] >= 0.9 * events)
    return (last[1] - first[1]) / (last[0] - first[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--event-seconds", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    rates: dict[str, list[float]] = {"with statistics": [], "without": []}
    with local_stack(with_flink=True) as stack:
        assert stack.flink is not None
        bootstrap = stack.kafka.url
        create_topics(bootstrap, {TOPIC: 2})
        fill(bootstrap, args.events, args.entities, args.event_seconds)
        log(f"{args.events:,} events in {TOPIC}")
        # Planning a job takes minutes on a loaded machine: submission is not measured.
        flink = FlinkClient(stack.flink.url, jars=ensure_kafka_connector_jars(),
                            checkpoint_interval_ms=1000, submit_timeout=900)
        try:
            for round_number in range(args.rounds):
                variants = list(rates)
                for variant in variants if round_number % 2 == 0 else variants[::-1]:
                    # A namespace (and so a consumer group) of its own per run.
                    namespace = f"r{round_number}{'n' if variant == 'without' else 's'}"
                    spec = compile_benchmark_view(VIEW, namespace, TOPIC, 2000, bootstrap)
                    if variant == "without":
                        spec = without_statistics(spec)
                    rate = drain(flink, spec, bootstrap, args.events)
                    rates[variant].append(rate)
                    log(f"round {round_number + 1} {variant}: {rate:,.0f} events/s")
        finally:
            flink.close()
    medians = {variant: statistics.median(values) for variant, values in rates.items()}
    print("\n| variant | events/s per round | median |\n|---|---|---|")
    for variant, values in rates.items():
        print(f"| {variant} | {', '.join(f'{v:,.0f}' for v in values)} | "
              f"{medians[variant]:,.0f} |")
    # Each round's two runs saw about the same machine: their ratio is the steadier figure.
    paired = [w / wo for w, wo in zip(rates["with statistics"], rates["without"], strict=True)]
    ratio = statistics.median(paired)
    print(f"\nwith / without, per round: {', '.join(f'{r:.3f}' for r in paired)}; "
          f"median {ratio:.3f} ({(1 - ratio) * 100:.1f} % slower); ratio of the medians "
          f"{medians['with statistics'] / medians['without']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Result topic → Redis: how many result rows/s ``sinks.redis_writer`` applies.

Pre-fills one result topic (4 partitions, keyed by entity as Flink's sink does) with
``--rows`` rows shaped as the compiler emits them — ``{"e","t","f":{10 features},"p","l","w"}``
over ``--entities`` entities, window after window — then times one ``ResultTopicWriter``
(in this process) draining it into Redis, from its first applied batch to the last row.
Finally checks Redis: the meta ``rows``/``watermark`` and every feature of a sample of
entities equal the newest row written for them.

    .venv/bin/python -m benchmarks.streaming.writer_throughput [--rows 500000]
        [--entities 50000] [--batch-size 5000] [--profile]

Starts and stops its own Tansu and Redis on loopback.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import sys
import time
from typing import Any, cast

from benchmarks.streaming.support import (
    ROW_FEATURES,
    Component,
    CpuMeter,
    Stack,
    create_topics,
    encode_row,
    format_shares,
    local_stack,
    log,
    meta,
    produce_keyed,
    result_row,
    stack_components,
)
from core.domain.layout import feature_key, result_topic
from sinks.online_store import OLDEST_TIME_REFRESH_MS
from sinks.redis_writer import ResultTopicWriter

VIEW, NAMESPACE = "bench_writer", "v1"
BASE_MS = 1_790_000_000_000
WINDOW_MS = 1_000


def prefill(stack: Stack, rows: int, entities: int, seed: int,
            ) -> dict[str, dict[str, Any]]:
    """Write the rows; returns the newest row of each entity (what Redis must end with)."""
    rng = random.Random(seed)
    names = [f"user_{n}" for n in range(entities)]
    newest: dict[str, dict[str, Any]] = {}

    def records() -> Any:
        for n in range(rows):
            window, position = divmod(n, entities)
            if position == 0:
                rng.shuffle(names)
            row = result_row(names[position], BASE_MS + window * WINDOW_MS, rng)
            newest[row["e"]] = row
            yield row["e"].encode(), encode_row(row)

    topic = result_topic(VIEW, NAMESPACE)
    create_topics(stack.kafka.url, {topic: 4})
    started = time.perf_counter()
    produce_keyed(stack.kafka.url, topic, records())
    log(f"pre-filled {topic} with {rows:,} rows in {time.perf_counter() - started:.1f} s")
    return newest


def drain(stack: Stack, rows: int, batch_size: int, profile: cProfile.Profile | None,
          timeout: float) -> tuple[float, int, dict[str, float]]:
    """Run the writer until every row is applied; (seconds, rows) from its first batch on,
    and the CPU each process used meanwhile (in cores)."""
    cpu = CpuMeter(stack_components(stack, [Component("writer", pid=os.getpid())]))
    writer = ResultTopicWriter(stack.kafka.url, stack.redis.url, group="bench-writer",
                               batch_size=batch_size)
    applied, first_batch_done, deadline = 0, 0.0, time.monotonic() + timeout
    counted_from = 0
    try:
        while applied < rows:
            if time.monotonic() > deadline:
                raise SystemExit(f"the writer applied only {applied:,} of {rows:,} rows "
                                 f"in {timeout:.0f} s")
            if profile is not None and first_batch_done:
                profile.enable()
            written = writer.poll_once(timeout=1.0)
            if profile is not None:
                profile.disable()
            applied += written
            if written and not first_batch_done:
                # The first batch waited for the group join: time from its end.
                first_batch_done, counted_from = time.perf_counter(), applied
                cpu.restart()
        return time.perf_counter() - first_batch_done, applied - counted_from, cpu.shares()
    finally:
        writer.stop()
        writer.run()  # returns at once, closing the consumer (leaves the group)


def check(stack: Stack, rows: int, newest: dict[str, dict[str, Any]], sample: int) -> None:
    client = stack.redis_client
    progress = meta(client, VIEW, NAMESPACE)
    last_time = max(r["t"] for r in newest.values())
    problems = []
    if progress.get("rows") != rows or progress.get("watermark") != last_time:
        problems.append(f"meta {progress} (expected rows {rows}, watermark {last_time})")
    for entity in random.Random(1).sample(sorted(newest), min(sample, len(newest))):
        stored = cast(dict[str, str], client.hgetall(feature_key(VIEW, NAMESPACE, entity)))
        row = newest[entity]
        expected = {name: json.dumps(row["f"][name]) for name in ROW_FEATURES}
        expected |= {f"__ts:{name}": str(row["t"]) for name in ROW_FEATURES}
        expected["__ts"] = str(row["t"])
        # A lower bound of the feature times, recomputed every OLDEST_TIME_REFRESH_MS.
        oldest, computed_at = int(stored.pop("__ts_min")), int(stored.pop("__ts_min_at"))
        if stored != expected or not row["t"] - OLDEST_TIME_REFRESH_MS < oldest == computed_at \
                <= row["t"]:
            problems.append(f"{entity}: {stored} != {expected}")
    if problems:
        raise SystemExit("Redis does not hold the newest rows:\n  " + "\n  ".join(problems[:5]))
    log(f"checked: meta rows/watermark and {min(sample, len(newest)):,} entities' hashes "
        "equal the newest rows")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--entities", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=5000,
                        help="ResultTopicWriter batch_size (messages per consume)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", type=int, default=2000, help="entities checked at the end")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the writer (slower) and print the top functions")
    args = parser.parse_args(argv)

    profile = cProfile.Profile() if args.profile else None
    with local_stack() as stack:
        newest = prefill(stack, args.rows, args.entities, args.seed)
        seconds, counted, shares = drain(stack, args.rows, args.batch_size, profile,
                                         args.timeout)
        check(stack, args.rows, newest, args.sample)
    rate = counted / seconds
    print(f"\nwriter: {counted:,} rows in {seconds:.2f} s = {rate:,.0f} rows/s "
          f"(rows of 10 features, {args.entities:,} entities, batch {args.batch_size}"
          f"{', under cProfile' if profile else ''})\n"
          f"CPU meanwhile, in cores: {format_shares(shares)}; machine load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
          "CPU per row (what the rate would be with a core each, undisturbed): "
          + ", ".join(f"{name} {share * seconds / counted * 1e6:.1f} µs"
                      for name, share in shares.items()))
    if profile is not None:
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())

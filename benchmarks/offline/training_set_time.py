"""Training-set generation time: label rows x features from the archive.

Archives N synthetic events (two days of event time) for the benchmark view's source
directly (check, Arrow, append — no Kafka), then times ``TrainingSetBuilder.build``
(registry reads, one Iceberg scan, windows, as-of joins) and the Parquet write for R label
rows x the view's 10 features.

    .venv/bin/python -m benchmarks.offline.training_set_time --rows 100000 --events 1000000
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog

from benchmarks.offline.support import (
    BENCH_VIEW,
    DAY_MS,
    SOURCE,
    START_MS,
    events,
    log,
    offline_stack,
)
from core.domain.contracts import ContractChecker
from core.domain.definitions import Source, parse_definition
from offline import iceberg
from offline.archiver import EventBuffer
from offline.training_sets import TrainingSetBuilder


def archive(catalog: Catalog, count: int, users: int, batch: int,
            span_ms: int = 2 * DAY_MS) -> float:
    source = parse_definition(SOURCE)
    assert isinstance(source, Source)
    table = iceberg.ensure_archive(catalog, source)
    payloads = list(events(count, users, span_ms))
    started = time.monotonic()
    buffer = EventBuffer(ContractChecker(source), 1)
    stored: int | None = None
    for offset, payload in enumerate(payloads):
        buffer.add(source.topic, 0, offset, payload, 0)
        if len(buffer) == batch or offset == count - 1:
            iceberg.append_batch(table, buffer.to_arrow(table.schema().as_arrow()),
                                 source.topic, {0: stored}, {0: offset + 1})
            stored = offset + 1
            buffer.clear()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--out", default="/tmp/fp-bench-training-set.parquet")
    args = parser.parse_args()

    with offline_stack() as stack:
        seconds = archive(stack.catalog, args.events, args.users, 100_000)
        log(f"archived {args.events:,} events without Kafka in {seconds:.1f} s "
            f"({args.events / seconds:,.0f} events/s: check + Arrow + Parquet + commit)")
        rng = random.Random(2)
        rows = pa.table({
            "user_id": [f"u{rng.randrange(args.users)}" for _ in range(args.rows)],
            # Label times in the second day: every window, the 1-day ones too, has closed
            # at least once by then.
            "event_timestamp": pa.array([START_MS + DAY_MS + rng.randrange(DAY_MS)
                                         for _ in range(args.rows)], pa.timestamp("ms")),
            "label": [rng.random() < 0.1 for _ in range(args.rows)]})
        references = [f"{BENCH_VIEW['name']}:{f['name']}" for f in BENCH_VIEW["features"]]
        builder = TrainingSetBuilder(stack.store, stack.catalog)
        for attempt in range(3):
            started = time.monotonic()
            result = builder.build(rows, references)
            built = time.monotonic() - started
            result.write(Path(args.out))
            total = time.monotonic() - started
            filled = sum(result.table[r].null_count < args.rows for r in references)
            log(f"run {attempt + 1}: {args.rows:,} rows x {len(references)} features in "
                f"{total:.2f} s (build {built:.2f} s, write {total - built:.2f} s); "
                f"{filled}/{len(references)} features have values")


if __name__ == "__main__":
    main()

"""Backfill throughput end to end, and the Python side's peak memory.

Archives N synthetic events of the benchmark source over D days (directly: check, Arrow,
append — no Kafka), then runs `fp backfill run` for the benchmark view (10 features over
four window shapes and a ``last``) over those days in a child process: export of each
day's slice, the Flink batch job on a local session cluster, the commit to
``features.user_spending__v1``.  Prints events/s over the whole run, the time per step, and
the child's peak RSS (``ru_maxrss``: Python, pyarrow and pyiceberg, not the Flink JVMs).

    .venv/bin/python -m benchmarks.offline.backfill_throughput --events 1000000 --days 1
    .venv/bin/python -m benchmarks.offline.backfill_throughput --events 1000000 --days 4

FP_FLINK_URL names a running session cluster; otherwise one is started (and stopped).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.offline.support import DAY_MS, START_MS, log, offline_stack
from benchmarks.offline.training_set_time import archive


@contextlib.contextmanager
def flink_cluster() -> Iterator[str]:
    if os.environ.get("FP_FLINK_URL"):
        yield os.environ["FP_FLINK_URL"]
        return
    from fp.local.flink import LocalFlink

    with tempfile.TemporaryDirectory(prefix="fp-bench-flink-") as folder:
        cluster = LocalFlink(Path(folder), task_slots=2)
        cluster.start()
        try:
            yield cluster.url
        finally:
            cluster.stop()


def run_backfill(days: int) -> None:
    """The child: one backfill run over ``days``, reported as one JSON line."""
    from core.domain.events import Provenance
    from core.settings import Settings
    from offline.bootstrap import backfills

    service = backfills(Settings.from_env())
    steps: dict[str, float] = {}

    class Timing:
        def __init__(self) -> None:
            self.step, self.since = "", time.monotonic()

        def chunk_started(self, chunk: object) -> None:
            self.stage("starting")

        def stage(self, text: str) -> None:
            now = time.monotonic()
            if self.step:
                steps[self.step] = steps.get(self.step, 0.0) + now - self.since
            self.step, self.since = text.split(" ", maxsplit=1)[0], now

        def chunk_finished(self, result: object) -> None:
            self.stage("")

    started = time.monotonic()
    plan = service.plan("user_spending", None, START_MS, START_MS + days * DAY_MS)
    summary = service.run(plan, Provenance(actor="benchmark"), Timing())
    seconds = time.monotonic() - started
    print(json.dumps({
        "seconds": seconds, "error": summary.error, "chunks": len(summary.results),
        "events": sum(r.events_read for r in summary.results),
        "rows": sum(r.rows for r in summary.results), "steps": steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # the child's entry
    args = parser.parse_args()
    if args.run:
        run_backfill(args.run)
        return
    with offline_stack() as stack, flink_cluster() as flink_url:
        log(f"archiving {args.events:,} events over {args.days} day(s)")
        archive_seconds = archive(stack.catalog, args.events, args.users, 100_000,
                                  span_ms=args.days * DAY_MS)
        log(f"archived in {archive_seconds:.1f} s; backfilling")
        env = {**os.environ, "FP_DATABASE_URL": stack.database_url, "FP_FLINK_URL": flink_url,
               "FP_WAREHOUSE": str(stack.warehouse)}
        child = subprocess.run([sys.executable, "-m", "benchmarks.offline.backfill_throughput",
                                "--run", str(args.days)], env=env, capture_output=True,
                               text=True, check=False)
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        if child.returncode or not lines:
            raise SystemExit(f"the backfill failed:\n{child.stdout}\n{child.stderr}")
        result = json.loads(lines[-1])
        log(f"{result['events']:,} events read (the chunks' own and their windows' lookback) "
            f"→ {result['rows']:,} rows in {result['chunks']} chunk(s): {result['seconds']:.1f} s"
            f", {args.events / result['seconds']:,.0f} archived events/s end to end")
        log("time per step: " + ", ".join(f"{step} {seconds:.1f} s"
                                          for step, seconds in result["steps"].items()))
        log(f"peak RSS of the backfill process: {result['peak_rss_mb']:.0f} MB; load average "
            f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Events → Flink SQL job → result topic → ``fp writer run`` → Redis, at fixed input rates.

For each ``--rates`` value: a fresh source topic and the compiled job of a view with 1 s and
5 s windows (tumbling and hopping: three window queries, seven features) on a local Flink
session cluster (parallelism 1, as the platform submits); a generator process produces
events with ``ts`` = now at that rate over ``--entities`` users for ``--seconds``; the writer
runs as its own process, as in production.  Reports sustained result rows/s into Redis (the
slope of the view's meta ``rows`` counter) and freshness: for each window end W, when its
row became visible in Redis minus (W + watermark delay) — sampled every 10 ms on probe
entities that have a row in every window (``support.RedisSampler``) — p50/p99/max after
``--warmup`` s; then the lag of the Flink job and of the writer when the input stopped, the
dead letters, and the CPU of each process (what saturates).

    .venv/bin/python -m benchmarks.streaming.end_to_end [--rates 5000,20000,50000]
        [--seconds 60] [--entities 10000] [--watermark-delay-ms 2000]

Starts and stops its own Tansu, Redis and Flink on loopback; ≈2 min per rate.
"""

from __future__ import annotations

import argparse
import functools
import sys

from benchmarks.streaming.support import (
    WriterProcess,
    add_load_arguments,
    compile_benchmark_view,
    loads,
    local_stack,
    print_table,
    run_under_load,
)
from sinks.flink import FlinkClient
from sinks.flink_jars import ensure_kafka_connector_jars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, rates="5000,20000,50000")
    args = parser.parse_args(argv)

    results = []
    with local_stack(with_flink=True) as stack:
        assert stack.flink is not None
        writer = WriterProcess(stack, stack.flink.conf_dir.parent / "writer.log")
        try:
            for load in loads(args):
                spec = compile_benchmark_view(f"bench_e2e_{load.rate}", "v1",
                                              f"bench_events_{load.rate}",
                                              args.watermark_delay_ms, stack.kafka.url)
                # A client (and PyFlink submitter process) per job: its JVM is not measured.
                flink = FlinkClient(stack.flink.url, jars=ensure_kafka_connector_jars())
                try:
                    results.append(run_under_load(
                        stack, flink, spec, functools.partial(flink.submit, spec), load,
                        watermark_delay_ms=args.watermark_delay_ms, warmup=args.warmup,
                        writer=writer.component))
                finally:
                    flink.close()
        finally:
            writer.stop()
    print_table("Flink SQL -> result topic -> Python writer process -> Redis", results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

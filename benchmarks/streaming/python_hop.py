"""The other design, for comparison: the same windowed SQL, but the rows go
``to_data_stream`` → a PyFlink ``KeyedProcessFunction`` that writes Redis itself
(:mod:`benchmarks.streaming.python_hop_job`), under the same input as
:mod:`benchmarks.streaming.end_to_end` and measured the same way (meta ``rows`` slope,
probe freshness, lag, CPU).

    .venv/bin/python -m benchmarks.streaming.python_hop [--rates 5000,20000]
        [--seconds 60] [--flush-ms 100] [--max-rows 2000] [--buckets 8]

Starts and stops its own Tansu, Redis and Flink on loopback; ≈2 min per rate.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.streaming.support import (
    add_load_arguments,
    compile_benchmark_view,
    loads,
    local_stack,
    print_table,
    run_under_load,
)
from sinks.compiler import JobSpec
from sinks.flink import FlinkClient
from sinks.flink_jars import ensure_kafka_connector_jars, flink_python_jar

REPO = Path(__file__).resolve().parents[2]


def submit(spec: JobSpec, flink_url: str, redis_url: str, args: argparse.Namespace) -> str:
    request = {"spec": spec.to_json(), "flink_url": flink_url, "redis_url": redis_url,
               "jars": [str(j) for j in [*ensure_kafka_connector_jars(), flink_python_jar()]],
               "checkpoint_interval_ms": 5000, "flush_ms": args.flush_ms,
               "max_rows": args.max_rows, "buckets": args.buckets}
    done = subprocess.run([sys.executable, "-m", "benchmarks.streaming.python_hop_job"],
                          input=json.dumps(request), capture_output=True, text=True,
                          timeout=180, check=False, cwd=REPO)
    replies = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not replies or "job_id" not in replies[-1]:
        raise SystemExit(f"submitting the python-hop job failed: "
                         f"{replies[-1] if replies else done.stderr[-3000:]}")
    return str(replies[-1]["job_id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, rates="5000,20000")
    parser.add_argument("--flush-ms", type=int, default=100,
                        help="processing-time timer that flushes a bucket's rows")
    parser.add_argument("--max-rows", type=int, default=2000,
                        help="a bucket is flushed at once when it holds this many rows")
    parser.add_argument("--buckets", type=int, default=8, help="keys the rows are spread over")
    args = parser.parse_args(argv)

    results = []
    with local_stack(with_flink=True) as stack:
        assert stack.flink is not None
        flink = FlinkClient(stack.flink.url)
        try:
            for load in loads(args):
                spec = compile_benchmark_view(f"bench_hop_{load.rate}", "v1",
                                              f"bench_hop_events_{load.rate}",
                                              args.watermark_delay_ms, stack.kafka.url)
                results.append(run_under_load(
                    stack, flink, spec,
                    functools.partial(submit, spec, flink.url, stack.redis.url, args), load,
                    watermark_delay_ms=args.watermark_delay_ms, warmup=args.warmup))
        finally:
            flink.close()
    print_table("Flink SQL -> to_data_stream -> PyFlink KeyedProcessFunction -> Redis", results,
                args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``fp ingest serve`` under cProfile: the same app (:func:`ingest.bootstrap.build`), run by
uvicorn as :func:`ingest.bootstrap.serve` runs it (uvloop, httptools, one process), with
one profiler on the event loop's thread and one on the producer's delivery-report thread
(cProfile sees one thread each), and the pause of every garbage collection timed
(``gc.callbacks``).  On SIGTERM it stops and writes ``main.prof``, ``poller.prof`` and
``gc.json`` (each generation's collections: count, total and longest pause) into
``--output``.

    FP_REGISTRY_URL=… FP_KAFKA_BOOTSTRAP=… FP_REDIS_URL=… \\
        .venv/bin/python -m benchmarks.ingest.profiled_server --port 8002 --output DIR

benchmarks/ingest/throughput.py starts it with ``--profile DIR``.  cProfile slows Python
calls down (C code, librdkafka and the kernel much less), so read shares, not rates.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn

from core.settings import Settings
from ingest.bootstrap import build
from ingest.event_log import KafkaEventLog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)

    poller = cProfile.Profile()
    serve_reports = KafkaEventLog._serve_reports

    def profiled_reports(self: KafkaEventLog) -> None:
        poller.enable()
        try:
            serve_reports(self)
        finally:
            poller.disable()
            poller.dump_stats(args.output / "poller.prof")

    KafkaEventLog._serve_reports = profiled_reports  # type: ignore[method-assign]
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def time_collections(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(time_collections)
    app = build(Settings.from_env())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, workers=1,
                                          loop="uvloop", http="httptools", access_log=False,
                                          log_config=None))
    # uvicorn re-raises the SIGTERM it caught once it has shut down: ignore that one, so
    # that the profile is written.
    signal.signal(signal.SIGTERM, lambda *_: None)
    main_thread = cProfile.Profile()
    main_thread.enable()
    try:
        server.run()
    finally:
        main_thread.disable()
        main_thread.dump_stats(args.output / "main.prof")
        gc.callbacks.remove(time_collections)
        (args.output / "gc.json").write_text(json.dumps({
            str(generation): {"count": len(times), "total_ms": sum(times) * 1000,
                              "max_ms": max(times, default=0.0) * 1000}
            for generation, times in pauses.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

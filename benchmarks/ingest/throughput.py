"""Ingest API throughput and latency: one ``fp ingest serve`` worker, the broker's
acknowledgement included (the answer waits for it), against the raw producer's.

Starts Tansu, Redis and ``fp registry serve`` on a scratch database (of the PostgreSQL at
``--postgres``, default ``FP_TEST_DATABASE_URL`` or 127.0.0.1:5432, else a throwaway local
server; or uses the registry at ``--registry-url``), registers the payments source
(tests/payments.py: its schema, ``ts`` in epoch millis) and starts ONE ``fp ingest serve``
process.  Events are tests/payments.event's over 100,000 accounts; ``--invalid`` of them
(2 %) break the contract in each way of tests/payments.INVALID_EVENTS that is JSON (a JSON
body cannot carry the others), so every request also writes dead letters.  Rows, each
measured for ``--seconds`` after ``--warmup`` s:

* ``batch``: ``{"events": [...]}`` of ``--batch`` events (500) at each ``--concurrency``
  (1, 2, 4, 8 keep-alive connections, each one request after the other);
* ``single``: one event a request at one connection;
* ``GET /healthz`` at one connection: the load generator's own cost per request (raw asyncio
  sockets under uvloop, benchmarks/ingest/load.py) next to an endpoint that does nothing;
* ``raw producer``, before and after the API rows: benchmarks/ingest/baseline.py, the same
  events through a confluent-kafka idempotent producer in one Python process on the
  server's core, and the pure part of a request (read, judge, build records) without I/O.

CPU is reported in cores for the server, the load generator and Tansu, with the cores
other processes took on the server's CPU and the hypervisor's steal (the machine is
shared), and the events per server CPU-second.  On a machine of two or more CPUs the server
(and the baseline) is pinned to the first one and everything else to the others
(``--no-pin`` to share them all).  Pinning keeps the benchmark's own processes apart; it
does not keep other processes off the server's CPU (the 'others' column says how much they
took).  ``--profile DIR`` then runs the batch load again at the best concurrency on the same
app under cProfile (benchmarks/ingest/profiled_server.py) and prints where the server's
time goes, and how long its garbage collections paused it.

    .venv/bin/python -m benchmarks.ingest.throughput [--seconds 15] [--warmup 3]
        [--concurrency 1,2,4,8] [--batch 500] [--invalid 0.02] [--profile DIR]

≈ 3 min with the defaults (≈ 4 min with ``--profile``).  Goals (the ingest issue): ≥ 25,000
events/s per worker in batches of 500 with p99 ≤ 50 ms; one event p99 ≤ 5 ms at one
connection.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pstats
import random
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.ingest import load
from benchmarks.ingest.support import (
    INGEST_PATH,
    Cores,
    CpuProbe,
    IngestServer,
    Services,
    batch_body,
    choose_cores,
    cores_used,
    events,
    log,
    services,
    thread_cores,
)
from core.domain.contracts import ContractChecker
from fp.local.base import LOOPBACK

GOAL_BATCH_EVENTS_S = 25_000
GOAL_BATCH_P99_MS = 50.0
GOAL_SINGLE_P99_MS = 5.0
EXPECTED = {"batch": {200, 207}, "single": {200, 422}, "healthz": {200}}


@dataclass
class Row:
    kind: str
    label: str
    result: load.LoadResult

    @property
    def events_per_s(self) -> float:
        return self.result.events / self.result.seconds

    @property
    def requests_per_s(self) -> float:
        return self.result.requests / self.result.seconds

    def latency_ms(self, p: float) -> float:
        ordered = sorted(self.result.latencies)
        if not ordered:
            return math.nan
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)] * 1000

    def cores(self) -> dict[str, float]:
        assert self.result.before is not None and self.result.after is not None
        return cores_used(self.result.before, self.result.after)

    def others(self, cores: Cores) -> float:
        """Cores that processes not ours used on the server's CPU (on every CPU when not
        pinned) during the row."""
        before, after = self.result.before, self.result.after
        assert before is not None and after is not None
        busy = (after.busy - before.busy) / (after.at - before.at)
        used = self.cores()
        ours = used.get("server", 0.0) if cores.server is not None else sum(used.values())
        return max(busy - ours, 0.0)

    def steal(self, cores: Cores) -> float:
        """Share of the server's CPU the hypervisor gave to other machines."""
        before, after = self.result.before, self.result.after
        assert before is not None and after is not None
        cpus = len(cores.server) if cores.server is not None else (os.cpu_count() or 1)
        return (after.steal - before.steal) / (after.at - before.at) / cpus

    @property
    def errors(self) -> int:
        return sum(count for status, count in self.result.statuses.items()
                   if status not in EXPECTED[self.kind])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15, help="measured, per row")
    parser.add_argument("--warmup", type=float, default=3, help="before each row")
    parser.add_argument("--concurrency", default="1,2,4,8",
                        help="connections for the batch rows, comma-separated")
    parser.add_argument("--batch", type=int, default=500, help="events a batch request")
    parser.add_argument("--invalid", type=float, default=0.02, help="share of invalid events")
    parser.add_argument("--postgres", default=os.environ.get("FP_TEST_DATABASE_URL"),
                        help="a PostgreSQL server URL for the registry's scratch database")
    parser.add_argument("--registry-url", default=os.environ.get("FP_BENCH_REGISTRY_URL"),
                        help="use this registry instead of starting one (the payments "
                             "source is applied to it)")
    parser.add_argument("--registry-token", default=os.environ.get("FP_BENCH_REGISTRY_TOKEN"),
                        help="bearer secret for applying to --registry-url")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="afterwards, profile the server under the best batch load")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    cores = choose_cores(not args.no_pin)
    log(cores.describe())
    with tempfile.TemporaryDirectory(prefix="fp-bench-ingest-") as scratch_name:
        scratch = Path(scratch_name)
        with services(scratch, postgres=args.postgres, registry_url=args.registry_url,
                      registry_token=args.registry_token) as stack:
            log(f"services up: Kafka {stack.kafka.url}, Redis {stack.redis.url}, registry "
                f"{stack.registry_url}")
            baselines = [baseline(stack, cores, args)]
            rows = measure(stack, cores, scratch, args, concurrencies)
            baselines.append(baseline(stack, cores, args))
            best = max((row for row in rows if row.kind == "batch"),
                       key=lambda row: row.events_per_s)
            profiled = None
            if args.profile is not None:
                profiled = profile(stack, cores, scratch, args, best.result.concurrency)
    print_table(rows, baselines, cores, args)
    print_thread_split(best)
    if profiled is not None:
        print_profile(args.profile, profiled)
    return 0


def requests_for(host: str, args: argparse.Namespace) -> dict[str, list[load.Prepared]]:
    rng = random.Random(args.seed)
    batches = [events(args.batch, args.invalid, rng) for _ in range(40)]
    singles = events(5_000, args.invalid, rng)
    return {
        "batch": [load.post(host, INGEST_PATH, batch_body(batch), len(batch))
                  for batch in batches],
        "single": [load.post(host, INGEST_PATH, single, 1) for single in singles],
        "healthz": [load.get(host, "/healthz")]}


def measure(stack: Services, cores: Cores, scratch: Path, args: argparse.Namespace,
            concurrencies: Sequence[int]) -> list[Row]:
    server = IngestServer(stack, cores, scratch / "ingest.log")
    log(f"fp ingest serve on {server.url} (pid {server.pid})")
    try:
        probe = CpuProbe({**stack.pids, "server": server.pid, "client": os.getpid()},
                         cores.server)
        prepared = requests_for(f"{LOOPBACK}:{server.port}", args)
        plan = [("batch", f"batch of {args.batch}", c) for c in concurrencies]
        plan += [("single", "single event", 1), ("healthz", "GET /healthz", 1)]
        rows = []
        for kind, label, concurrency in plan:
            log(f"{label}, {concurrency} connection(s): {args.warmup:g} s warm-up, "
                f"{args.seconds:g} s measured")
            result = load.run(LOOPBACK, server.port, prepared[kind], concurrency=concurrency,
                              warmup_s=args.warmup, seconds=args.seconds,
                              snapshot=probe.snapshot)
            rows.append(Row(kind, label, result))
            row = rows[-1]
            log(f"  {row.events_per_s:,.0f} events/s, {row.requests_per_s:,.0f} req/s, "
                f"p50 {row.latency_ms(0.5):.2f} ms, p99 {row.latency_ms(0.99):.2f} ms, "
                f"server {row.cores().get('server', 0):.2f} cores, statuses "
                f"{dict(result.statuses)}")
        return rows
    finally:
        server.stop()


def baseline(stack: Services, cores: Cores, args: argparse.Namespace) -> dict[str, Any]:
    log("baseline: the pure part of a request, then the raw idempotent producer "
        f"({args.seconds:g} s)")
    output = subprocess.run(
        [*cores.server_argv(), sys.executable, "-m", "benchmarks.ingest.baseline",
         "--bootstrap", stack.kafka.url, "--seconds", str(args.seconds), "--warmup",
         str(args.warmup), "--invalid", str(args.invalid), "--seed", str(args.seed)],
        check=True, stdout=subprocess.PIPE, text=True).stdout
    figures: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    log(f"  raw producer {figures['producer']['events_per_s']:,.0f} events/s")
    return figures


def profile(stack: Services, cores: Cores, scratch: Path, args: argparse.Namespace,
            concurrency: int) -> Row:
    log(f"profiling: batch load at {concurrency} connection(s) on the app under cProfile")
    server = IngestServer(stack, cores, scratch / "profiled.log", profile_to=args.profile)
    try:
        probe = CpuProbe({"server": server.pid}, cores.server)
        prepared = requests_for(f"{LOOPBACK}:{server.port}", args)["batch"]
        result = load.run(LOOPBACK, server.port, prepared, concurrency=concurrency,
                          warmup_s=args.warmup, seconds=args.seconds, snapshot=probe.snapshot)
    finally:
        server.stop()
    return Row("batch", f"batch of {args.batch}, profiled", result)


# --------------------------------------------------------------------------- printing


def print_table(rows: Sequence[Row], baselines: Sequence[dict[str, Any]], cores: Cores,
                args: argparse.Namespace) -> None:
    print()
    print(f"Ingest API, one `fp ingest serve` worker (uvicorn, uvloop, httptools); payments "
          f"contract, {args.invalid:.0%} invalid events (dead letters), answers after the "
          f"broker's acknowledgement (Tansu, in memory); {args.seconds:g} s per row after "
          f"{args.warmup:g} s warm-up; {os.cpu_count()} CPUs: {cores.describe()}; load "
          f"average {os.getloadavg()[0]:.1f}.")
    print("ev/CPU-s: events per CPU-second of the server (of the baseline's process for the "
          "raw producer), the figure least moved by sharing the machine.")
    print("CPU columns in cores over the row: the server, the load generator (client), Tansu, "
          "and 'others': processes not ours on the server's CPU (other engineers' suites); "
          "'steal': the share of that CPU the hypervisor gave to other machines.")
    print()
    header = (f"| {'request':<22} | {'conns':>5} | {'req/s':>7} | {'events/s':>8} | "
              f"{'p50 ms':>7} | {'p99 ms':>7} | {'ev/CPU-s':>8} | {'server':>6} | {'client':>6} | "
              f"{'Tansu':>5} | {'others':>6} | {'steal':>5} | {'errors':>6} |")
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for row in rows:
        used = row.cores()
        events_per_s = f"{row.events_per_s:,.0f}" if row.kind != "healthz" else "-"
        per_cpu = (f"{row.events_per_s / used['server']:,.0f}"
                   if row.kind != "healthz" and used.get("server") else "-")
        print(f"| {row.label:<22} | {row.result.concurrency:>5} | {row.requests_per_s:>7,.0f} | "
              f"{events_per_s:>8} | {row.latency_ms(0.5):>7.2f} | {row.latency_ms(0.99):>7.2f} | "
              f"{per_cpu:>8} | {used.get('server', 0):>6.2f} | {used.get('client', 0):>6.2f} | "
              f"{used.get('broker', 0):>5.2f} | {row.others(cores):>6.2f} | "
              f"{row.steal(cores):>5.1%} | {row.errors:>6} |")
    for when, figures in zip(("before", "after"), baselines, strict=False):
        producer = figures["producer"]
        print(f"| {'raw producer (' + when + ')':<22} | {'-':>5} | {'-':>7} | "
              f"{producer['events_per_s']:>8,.0f} | {'-':>7} | {'-':>7} | "
              f"{producer['events_per_s'] / producer['cores']:>8,.0f} | "
              f"{producer['cores']:>6.2f} | {'-':>6} | {'-':>5} | {producer['others']:>6.2f} | "
              f"{producer['steal']:>5.1%} | {producer['failed']:>6} |")
    print()
    batch_rows = [row for row in rows if row.kind == "batch"]
    best = max(batch_rows, key=lambda row: row.events_per_s)
    single = next(row for row in rows if row.kind == "single")
    healthz = next(row for row in rows if row.kind == "healthz")
    raw = sum(b["producer"]["events_per_s"] for b in baselines) / len(baselines)
    pure = baselines[0]["pure"]
    server_cpu = best.cores().get("server", math.nan)
    print(f"Best batch throughput: {best.events_per_s:,.0f} events/s at {best.result.concurrency} "
          f"connection(s), p50 {best.latency_ms(0.5):.1f} ms, p99 {best.latency_ms(0.99):.1f} ms; "
          f"{best.events_per_s / server_cpu:,.0f} events per server CPU-second; "
          f"{best.events_per_s / raw:.0%} of the raw producer's {raw:,.0f} events/s (mean of "
          f"before and after).")
    accepted = best.result.accepted / max(best.result.events, 1)
    print(f"  accepted {accepted:.1%} of the events sent (the rest dead-lettered); "
          f"at one connection {batch_rows[0].events_per_s:,.0f} events/s, p50 "
          f"{batch_rows[0].latency_ms(0.5):.1f} ms, p99 {batch_rows[0].latency_ms(0.99):.1f} ms.")
    raw_us = sum(b["producer"]["cores"] / b["producer"]["events_per_s"]
                 for b in baselines) / len(baselines) * 1e6
    server_us = server_cpu / best.events_per_s * 1e6
    pure_us = sum(pure.values())
    print(f"CPU an event: the server {server_us:.1f} µs at the best batch row, the raw producer "
          f"{raw_us:.1f} µs ({server_us / raw_us:.1f}x); the pure part of a request (no I/O, "
          f"CPU time): read {pure['read_us']:.2f} + judge {pure['judge_us']:.2f} + records "
          f"{pure['records_us']:.2f} µs = {pure_us:.1f} µs ({1e6 / pure_us:,.0f} events/s of "
          "one core at most).")
    client_us = single.result.client_cpu_s / max(single.result.requests, 1) * 1e6
    healthz_us = healthz.result.client_cpu_s / max(healthz.result.requests, 1) * 1e6
    print(f"Load generator: {client_us:.0f} µs of CPU a single-event request, {healthz_us:.0f} "
          f"µs a /healthz request ({1e6 / healthz_us:,.0f} req/s of one core), "
          f"{best.cores().get('client', 0):.2f} cores at the best batch row.")
    print()
    within = [row for row in batch_rows if row.latency_ms(0.99) <= GOAL_BATCH_P99_MS]
    fastest_within = max(within, key=lambda row: row.events_per_s, default=None)
    goals = [
        (f"batches of {args.batch}: >= {GOAL_BATCH_EVENTS_S:,} events/s per worker with p99 <= "
         f"{GOAL_BATCH_P99_MS:g} ms",
         fastest_within is not None and fastest_within.events_per_s >= GOAL_BATCH_EVENTS_S,
         "no row had p99 <= 50 ms" if fastest_within is None else
         f"best within p99 {GOAL_BATCH_P99_MS:g} ms: {fastest_within.events_per_s:,.0f} "
         f"events/s at {fastest_within.result.concurrency} connection(s), p99 "
         f"{fastest_within.latency_ms(0.99):.1f} ms"),
        (f"batches of {args.batch}: >= {GOAL_BATCH_EVENTS_S:,} events/s per worker, any "
         "latency", best.events_per_s >= GOAL_BATCH_EVENTS_S,
         f"{best.events_per_s:,.0f} events/s, p99 {best.latency_ms(0.99):.1f} ms"),
        (f"single event, one connection: p99 <= {GOAL_SINGLE_P99_MS:g} ms",
         single.latency_ms(0.99) <= GOAL_SINGLE_P99_MS,
         f"p50 {single.latency_ms(0.5):.2f} ms, p99 {single.latency_ms(0.99):.2f} ms, "
         f"{single.requests_per_s:,.0f} req/s")]
    for goal, met, figure in goals:
        print(f"  goal {goal}: {'met' if met else 'MISSED'} ({figure})")
    if any(row.errors for row in rows):
        print("Unexpected statuses: " + ", ".join(
            f"{row.label} x{row.result.concurrency}: {dict(row.result.statuses)}"
            for row in rows if row.errors))


def print_thread_split(best: Row) -> None:
    assert best.result.before is not None and best.result.after is not None
    split = thread_cores(best.result.before, best.result.after)
    print(f"Server CPU by thread at the best batch row ({best.result.concurrency} "
          "connection(s)), in cores:")
    for kind, used in sorted(split.items(), key=lambda item: -item[1]):
        print(f"  {used:5.2f}  {kind}")


GROUPS = (
    ("core/domain/contracts.py", "contract check (core/domain/contracts.py)"),
    ("core/values.py", "contract check: value types (core/values.py)"),
    ("json/", "contract check: stdlib json parsing (Decimal numbers)"),
    ("ingest/batches.py", "ingest/batches.py (read, judge, records)"),
    ("ingest/event_log.py", "ingest/event_log.py (produce, callbacks, settle)"),
    ("ingest/service.py", "ingest/service.py"),
    ("ingest/app.py", "ingest/app.py"),
    ("prometheus_client", "prometheus_client (metrics)"),
    ("litestar", "litestar"),
    ("uvicorn", "uvicorn"),
    ("asyncio", "asyncio (Python)"),
    ("httpx", "httpx (registry polling)"),
)


def _group(path: str, function: str) -> str:
    if path == "~":  # a builtin, named by its function
        if "run_until_complete" in function or "uvloop" in function:
            return "uvloop (C: polling, I/O, dispatch; includes idle)"
        if "cimpl" in function or "Producer" in function:
            return "confluent-kafka (C: produce, poll, callbacks' dispatch)"
        if "msgspec" in function:
            return "msgspec (C: decode, encode)"
        if "scanner" in function or "decimal" in function.lower():
            return "contract check: stdlib json parsing (Decimal numbers)"
        return "other builtins"
    for marker, group in GROUPS:
        if marker in path:
            return group
    return "other Python"


def print_profile(directory: Path, row: Row) -> None:
    print()
    used = row.cores().get("server", math.nan)
    print(f"Profile (cProfile) of the server at {row.result.concurrency} connection(s), "
          f"batches of 500: {row.events_per_s:,.0f} events/s under the profiler (p99 "
          f"{row.latency_ms(0.99):.1f} ms), server {used:.2f} cores; {directory}/main.prof "
          "and poller.prof hold the whole profiles.")
    collections = directory / "gc.json"
    if collections.exists():
        print("Garbage collections in the server (the whole run, startup included; pauses "
              "stretched by the profiler):")
        for generation, figures in json.loads(collections.read_text()).items():
            print(f"  generation {generation}: {figures['count']:>6,} collections, "
                  f"{figures['total_ms']:>8,.0f} ms in all, longest {figures['max_ms']:6.1f} ms")
    for name, title in (("main.prof", "event loop thread"),
                        ("poller.prof", "delivery-report thread")):
        path = directory / name
        if not path.exists():
            print(f"  ({path} missing)")
            continue
        stats = pstats.Stats(str(path))
        entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        total = sum(entry[2] for entry in entries.values())
        print(f"\n{title}: {total:.1f} s profiled (warm-up included); share of own time "
              "by component:")
        groups: dict[str, float] = {}
        for (path_, _, function), entry in entries.items():
            key = _group(path_, function)
            groups[key] = groups.get(key, 0.0) + entry[2]
        for key, seconds in sorted(groups.items(), key=lambda item: -item[1])[:12]:
            print(f"  {seconds / total:6.1%}  {key}")
        if name == "main.prof":
            judged = _calls(entries, "core/domain/contracts.py", "check",
                            ContractChecker.check.__code__.co_firstlineno)
            print(f"  cumulative time an event (µs, under the profiler; {judged:,} events "
                  "judged, the warm-up's included):")
            for path_suffix, wanted, line in KEY_FUNCTIONS:
                cumulative = sum(entry[3] for (path_, at, function), entry in entries.items()
                                 if path_.endswith(path_suffix) and function == wanted
                                 and line in (None, at))
                print(f"  {cumulative / max(judged, 1) * 1e6:8.2f}  {path_suffix}:{wanted} "
                      f"({_calls(entries, path_suffix, wanted, line):,} calls)")
        print("  top functions by own time (share, calls, cumulative):")
        ranked = sorted(entries.items(), key=lambda item: -item[1][2])[:18]
        for (path_, line, function), (_, calls, own, cumulative, _) in ranked:
            where = function if path_ == "~" else \
                f"{_short(path_)}:{line}({function})"
            print(f"  {own / total:6.1%}  {calls:>10,}  {cumulative:7.2f} s  {where}")


KEY_FUNCTIONS: tuple[tuple[str, str, int | None], ...] = (
    ("ingest/app.py", "ingest", None),
    ("ingest/service.py", "ingest", None),
    ("ingest/batches.py", "read_events", None),
    ("ingest/batches.py", "judge", None),
    ("core/domain/contracts.py", "check", ContractChecker.check.__code__.co_firstlineno),
    ("core/domain/contracts.py", "_parse_object", None),
    ("ingest/batches.py", "records", None),
    ("ingest/service.py", "_write", None),
    ("ingest/event_log.py", "append", None),
    ("ingest/event_log.py", "_produce", None),
    ("ingest/service.py", "_count", None),
)
"""Functions whose cumulative time an event the profile reports (coroutines: the time they
ran, not the time they waited)."""


def _calls(entries: dict[Any, Any], path_suffix: str, function: str,
           line: int | None = None) -> int:
    return sum(entry[1] for (path_, at, name), entry in entries.items()
               if path_.endswith(path_suffix) and name == function and line in (None, at))


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


if __name__ == "__main__":
    sys.exit(main())

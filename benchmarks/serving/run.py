"""Side by side: this platform's serving API vs Feast's Python feature server.

Both hold the same data (``--entities`` users x 5 views x 10 double features, Redis online
store, TTL checked) and serve it with one worker.  The same load generator (wrk, in its own
process, fixed concurrency) sends the same requests to each: single-entity and batch-100
reads of all 50 features of random users.  Prints req/s, p50 and p99 of each and the ratio.

    apt-get install -y wrk
    python3 -m venv .fp/feast-venv && .fp/feast-venv/bin/pip install "feast[redis]==0.67.0"
    .venv/bin/python -m benchmarks.serving.run [--entities 100000] [--duration 15]

Setup (writing both stores; Feast's ``feast materialize`` alone takes ≈1 min for 100k
entities) is excluded from the figures.  The keys written are removed at the end unless
``--keep-data``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from benchmarks.serving import fp_side
from benchmarks.serving.feast_repo import PROJECT, FeastRepo
from benchmarks.serving.shape import VIEWS, Shape, feature_references
from fp.local.base import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
LOAD_SCRIPT = Path(__file__).with_name("load.lua")
WARMUP_SECONDS = 3


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    path: str
    body_format: str


@dataclass(frozen=True)
class Figures:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


@contextmanager
def process(command: list[str], log: Path, cwd: Path = REPO,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process group, stopped (whole group) on exit."""
    with log.open("wb") as output:
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=output,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def wrk(server: Server, shape: Shape, batch: int, concurrency: int, seconds: int) -> Figures:
    env = {**os.environ, "BENCH_PATH": server.path, "BENCH_FORMAT": server.body_format,
           "BENCH_ENTITIES": str(shape.entities), "BENCH_BATCH": str(batch),
           "BENCH_FEATURES": json.dumps(feature_references())}
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
               "-s", str(LOAD_SCRIPT), server.url]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    requests, duration_us, p50_us, p99_us, errors = (int(v) for v in line.split()[1:])
    return Figures(requests / (duration_us / 1e6), p50_us / 1000, p99_us / 1000, errors)


def same_values(ours: Server, feast: Server) -> None:
    """Both servers answer the same numbers for one entity: the comparison is like for like."""
    features = feature_references()
    mine = httpx.post(ours.url + ours.path, json={
        "features": features, "entities": [{"user_id": "u7"}]}, timeout=30).json()
    theirs = httpx.post(feast.url + feast.path, json={
        "full_feature_names": True, "features": features, "entities": {"user_id": ["u7"]}},
        timeout=30).json()
    my_values = [mine["results"][0][f] for f in features]
    # Feast answers column-wise, in an order of its own, named "view__feature".
    their_columns = dict(zip(theirs["metadata"]["feature_names"], theirs["results"],
                             strict=True))
    their_values = [their_columns[f.replace(":", "__")]["values"][0] for f in features]
    if my_values != their_values or set(mine["statuses"][0]) != {"PRESENT"}:
        raise SystemExit(f"the servers disagree:\n  fp:    {my_values}\n  feast: {their_values}")


def start_fp(stack: ExitStack, args: argparse.Namespace, shape: Shape, work: Path) -> Server:
    redis_url = f"redis://127.0.0.1:{args.redis_port}/{args.fp_db}"
    database_url = stack.enter_context(fp_side.throwaway_database(args.postgres))
    registry_port, serving_port = free_port(), free_port()
    registry_url = f"http://127.0.0.1:{registry_port}"
    stack.enter_context(process(
        [str(REPO / ".venv/bin/fp"), "registry", "serve", "--port", str(registry_port)],
        work / "registry.log", env={**os.environ, "FP_DATABASE_URL": database_url}))
    wait_until(lambda: answers(f"{registry_url}/healthz"), 30, "the registry")
    fp_side.register(registry_url, args.one_window)
    if not fp_side.written_before(redis_url, shape, args.one_window):
        print(f"writing {shape.entities} entities x {len(VIEWS)} views to {redis_url} ...")
        fp_side.write_online_store(redis_url, shape, args.one_window)
    if not args.keep_data:
        stack.callback(fp_side.remove_online_store, redis_url)
    stack.enter_context(process(
        [str(REPO / ".venv/bin/fp"), "serving", "serve", "--port", str(serving_port)],
        work / "serving.log",
        env={**os.environ, "FP_REGISTRY_URL": registry_url, "FP_REDIS_URL": redis_url}))
    url = f"http://127.0.0.1:{serving_port}"
    wait_until(lambda: answers(f"{url}/v1/features/{VIEWS[0]}/u0"), 30, "the serving API")
    return Server("fp", url, "/v1/features/batch", "fp")


def start_feast(stack: ExitStack, args: argparse.Namespace, shape: Shape, work: Path) -> Server:
    repo = FeastRepo(Path(args.feast_venv), work / "feast_repo", args.redis_port, args.feast_db)
    print(f"feast apply + materialize {shape.entities} entities x {len(VIEWS)} views "
          "(skipped when kept from a previous run) ...")
    repo.prepare(shape)
    if not args.keep_data:
        stack.callback(remove_feast_keys, args.redis_port, args.feast_db)
        stack.callback(repo.forget)
    port = free_port()
    stack.enter_context(process(repo.serve_command(port), work / "feast.log",
                                cwd=repo.folder, env=repo.environment()))
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{url}/health"), 120, "feast serve")
    return Server("feast", url, "/get-online-features", "feast")


def remove_feast_keys(redis_port: int, db: int) -> None:
    """Feast's keys end with the project name (serialized entity key + project)."""
    client = redis.Redis(port=redis_port, db=db)
    keys = list(client.scan_iter(match=f"*{PROJECT}", count=5_000))
    for start in range(0, len(keys), 5_000):
        client.unlink(*keys[start:start + 5_000])
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements per server and cell, alternating; the median is shown")
    parser.add_argument("--concurrency", default="1,8", help="connections, comma-separated")
    parser.add_argument("--batches", default="1,100", help="entities per request")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--fp-db", type=int, default=12, help="Redis database of ours")
    parser.add_argument("--feast-db", type=int, default=13, help="Redis database of Feast's")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/"
                                              "postgres", help="for a throwaway registry db")
    parser.add_argument("--feast-venv", default=str(REPO / ".fp/feast-venv"))
    parser.add_argument("--work", default=str(REPO / ".fp/bench-serving"))
    parser.add_argument("--one-window", action="store_true",
                        help="every feature of a view in the same window: one event time per "
                             "view (Feast's model) instead of one per feature")
    parser.add_argument("--skip-feast", action="store_true")
    parser.add_argument("--keep-data", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    shape = Shape(args.entities, time.time_ns() // 1_000_000 - 60_000)
    with ExitStack() as stack:
        servers = [start_fp(stack, args, shape, work)]
        if not args.skip_feast:
            servers.append(start_feast(stack, args, shape, work))
            same_values(*servers)
        for batch in (int(b) for b in args.batches.split(",")):
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                runs: dict[str, list[Figures]] = {server.name: [] for server in servers}
                for server in servers:
                    wrk(server, shape, batch, concurrency, WARMUP_SECONDS)
                # Alternate the servers round by round: on a shared machine the background
                # load drifts, and each server should see the same drift.
                for _ in range(args.rounds):
                    for server in servers:
                        runs[server.name].append(wrk(server, shape, batch, concurrency,
                                                     args.duration))
                report_row(batch, concurrency, {name: median_run(r) for name, r in runs.items()})


def median_run(runs: list[Figures]) -> Figures:
    """The run of median throughput (its own latencies, not a mix of runs)."""
    return sorted(runs, key=lambda f: f.requests_per_second)[len(runs) // 2]


def report_row(batch: int, concurrency: int, figures: dict[str, Figures]) -> None:
    for name, f in figures.items():
        print(f"batch={batch:<4} c={concurrency:<3} {name:<6} {f.requests_per_second:9.1f} req/s"
              f"  p50 {f.p50_ms:8.2f} ms  p99 {f.p99_ms:8.2f} ms  errors {f.errors}",
              flush=True)
    if "feast" in figures and "fp" in figures:
        ours, theirs = figures["fp"], figures["feast"]
        print(f"{'':<17} ratio   {ours.requests_per_second / theirs.requests_per_second:7.1f}x"
              f" throughput, p99 {theirs.p99_ms / ours.p99_ms:.1f}x lower", flush=True)


if __name__ == "__main__":
    main()

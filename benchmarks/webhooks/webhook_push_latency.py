"""Time from a git webhook POST to the pushed definitions being registered.

Runs the real ``fp registry serve`` against a scratch database on the PostgreSQL at
``FP_DATABASE_URL`` (default: the local server on 127.0.0.1:5432), pushes to a local bare
repository (``file://``) holding the example features, and for each of N pushes (default 20)
that change one feature view's description:

1. commits and pushes the change with git (not timed),
2. POSTs GitHub's push payload for it, signed as GitHub signs it (the clock starts here),
3. polls ``GET /v1/feature-views/user_transactions`` every 5 ms until the new version is
   registered (the clock stops here).

One warm-up push first registers the six example definitions and fills the clone cache; it is
not counted.  Percentiles are nearest-rank.  Usage::

    .venv/bin/python benchmarks/webhooks/webhook_push_latency.py [--pushes 20]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from registry.store.migrate import upgrade_to_head
from tests.webhooks.support import (
    NULL_SHA,
    GitRemote,
    examples_file,
    finished,
    github_push,
    github_request,
    poll,
    registry_server,
    with_description,
)

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
VIEW_URL = "/v1/feature-views/user_transactions"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pushes", type=int, default=20)
    args = parser.parse_args(argv)
    server_url = os.environ.get("FP_DATABASE_URL", DEFAULT_SERVER)
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    database = f"fp_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        url = make_url(server_url).set(database=database).render_as_string(hide_password=False)
        upgrade_to_head(url)
        with tempfile.TemporaryDirectory(prefix="fp-bench-") as scratch:
            measure(url, Path(scratch), args.pushes)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
    return 0


def measure(database_url: str, scratch: Path, pushes: int) -> None:
    remote = GitRemote(scratch / "remote")
    views = examples_file("views.yaml")
    log = scratch / "registry.log"
    with registry_server(database_url, scratch / "cache", log, remote.url) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        warm_up = remote.commit_examples()
        deliver(client, remote, warm_up, NULL_SHA, expected_version=1)
        before = warm_up
        registered: list[float] = []
        answered: list[float] = []
        server_side: list[float] = []
        for n in range(1, pushes + 1):
            commit = remote.commit({"features/views.yaml": with_description(views, f"Push {n}.")})
            total, post = deliver(client, remote, commit, before, expected_version=n + 1)
            registered.append(total)
            answered.append(post)
            server_side.append(processing_seconds(client, f"bench-{commit}"))
            before = commit
    print(f"{pushes} pushes, one at a time, real `fp registry serve`, file:// repository")
    report("POST -> definitions registered", registered)
    report("POST answered (202)", answered)
    report("received -> delivery finished (server)", server_side)


def deliver(client: httpx.Client, remote: GitRemote, commit: str, before: str,
            expected_version: int) -> tuple[float, float]:
    """Seconds until the new version is registered, and until the POST was answered."""
    body, headers = github_request(github_push(remote.url, commit, before=before),
                                   delivery=f"bench-{commit}")
    started = time.perf_counter()
    response = client.post("/v1/webhooks/github", content=body, headers=headers)
    answered = time.perf_counter() - started
    if response.status_code != 202:
        raise SystemExit(f"webhook refused: {response.status_code} {response.text}")
    poll(lambda: client.get(VIEW_URL).json(),
         lambda view: view.get("latest_version") == expected_version, timeout=60, interval=0.005)
    return time.perf_counter() - started, answered


def processing_seconds(client: httpx.Client, delivery_id: str) -> float:
    delivery = poll(lambda: client.get(f"/v1/webhooks/deliveries/{delivery_id}").json(),
                    finished)
    return (datetime.fromisoformat(delivery["finished_at"])
            - datetime.fromisoformat(delivery["received_at"])).total_seconds()


def report(label: str, seconds: list[float]) -> None:
    ordered = sorted(seconds)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)] * 1000

    print(f"  {label:<42} p50 {rank(0.50):7.1f} ms   p95 {rank(0.95):7.1f} ms   "
          f"max {ordered[-1] * 1000:7.1f} ms")


if __name__ == "__main__":
    sys.exit(main())

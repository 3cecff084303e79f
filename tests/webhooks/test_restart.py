"""Deliveries queued when the registry dies are processed after it restarts: the real
``fp registry serve`` in a subprocess, killed with SIGKILL while it works."""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from registry.store.postgres import PostgresRegistryStore
from registry.store.tables import webhook_deliveries
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

# Each load takes a while, so deliveries are still queued when the server is killed.
SLOW_LOAD = "import time\ntime.sleep(1.5)\n"


def test_deliveries_queued_when_the_registry_is_killed_finish_after_restart(
        store: PostgresRegistryStore, database_url: str, tmp_path: Path) -> None:
    remote = GitRemote(tmp_path / "remote")
    remote.commit({"features/slow.py": SLOW_LOAD})
    remote.commit_examples()
    views = examples_file("views.yaml")
    commits = [remote.commit({"features/views.yaml": with_description(views, f"Push {n}.")})
               for n in range(3)]
    log = tmp_path / "registry.log"

    with registry_server(database_url, tmp_path / "cache", log, remote.url) as server:
        for n, commit in enumerate(commits):
            body, headers = github_request(
                github_push(remote.url, commit, before=commits[n - 1] if n else NULL_SHA),
                delivery=f"restart-{n}")
            response = httpx.post(f"{server.url}/v1/webhooks/github", content=body,
                                  headers=headers, timeout=5)
            assert response.status_code == 202, response.text
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)

    with store.engine.connect() as conn:
        statuses = dict(conn.execute(select(webhook_deliveries.c.delivery_id,
                                            webhook_deliveries.c.status)).all())
    assert statuses == {f"restart-{n}": "queued" for n in range(3)}, log.read_text()

    with registry_server(database_url, tmp_path / "cache", log, remote.url) as server:
        done = [poll(partial(read_json, f"{server.url}/v1/webhooks/deliveries/restart-{n}"),
                     finished, timeout=60) for n in range(3)]
        assert [d["status"] for d in done] == ["applied"] * 3, log.read_text()
        view = httpx.get(f"{server.url}/v1/feature-views/user_transactions").json()

    assert (view["latest_version"], view["spec"]["description"]) == (3, "Push 2.")


def read_json(url: str) -> Any:
    return httpx.get(url, timeout=5).json()

"""The worker thread's retention: run at start and then periodically, surviving failures."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from registry.webhooks.git import GitRepositoryCache
from registry.webhooks.inbox import (
    ClaimedDelivery,
    DeliveryOutcome,
    DeliveryStatus,
    NewDelivery,
)
from registry.webhooks.memory_inbox import MemoryDeliveryInbox
from registry.webhooks.worker import DeliveryWorker, Retention


def never_called(_: ClaimedDelivery) -> DeliveryOutcome:
    raise AssertionError("nothing is queued")


def test_the_retention_runs_at_start_and_then_periodically_even_after_a_failure() -> None:
    runs: list[int] = []
    enough = threading.Event()

    def retention() -> None:
        runs.append(1)
        if len(runs) == 3:
            enough.set()
        if len(runs) == 1:
            raise RuntimeError("database away")

    worker = DeliveryWorker(MemoryDeliveryInbox(), never_called, retention, poll_seconds=0.01,
                            retention_interval=0.05)
    worker.start()
    try:
        assert enough.wait(10), runs
    finally:
        worker.stop()


def test_the_retention_drops_expired_payloads_and_prunes_unused_clones(tmp_path: Path) -> None:
    inbox = MemoryDeliveryInbox()
    inbox.receive(NewDelivery(provider="github", delivery_id="d1", event="push",
                              payload=b"{}", status=DeliveryStatus.QUEUED,
                              repository="https://git.example/r.git", ref="refs/heads/main",
                              commit="c1"))
    inbox.process_next(lambda _: DeliveryOutcome(DeliveryStatus.APPLIED))
    unused = tmp_path / "cache" / "unused.git"
    unused.mkdir(parents=True)
    os.utime(unused, (time.time() - 60, time.time() - 60))

    Retention(inbox, GitRepositoryCache(tmp_path / "cache"), timedelta(seconds=30))()

    assert not unused.exists(), "unused for 60 s"
    assert inbox.drop_payloads(finished_before=datetime.now(UTC) + timedelta(days=1)) == 1, (
        "finished just now: the payload was kept")
    Retention(inbox, GitRepositoryCache(tmp_path / "cache"), timedelta(0))()
    assert inbox.drop_payloads(finished_before=datetime.now(UTC) + timedelta(days=1)) == 0

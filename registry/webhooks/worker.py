"""The background worker: processes queued deliveries, one at a time, in a thread.

Processing blocks (git, the sandboxed loader, the database), so it runs in a thread of its
own rather than on the server's event loop.  The thread is woken at once by a delivery this
process received and polls as a fallback, which picks up deliveries received by other registry
processes, left queued by a process that died, or stored while the database was unreachable.

The same thread applies the :class:`Retention` once an hour (and at start): what a finished
delivery leaves behind — its payload (up to 25 MB), the clone of its repository — is not kept
forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from registry.webhooks.git import GitRepositoryCache
from registry.webhooks.inbox import ClaimedDelivery, DeliveryInbox, DeliveryOutcome

logger = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 2.0
RETENTION_INTERVAL_SECONDS = 3600.0
"""How often the retention runs."""


@dataclass(frozen=True)
class Retention:
    """``FP_WEBHOOK_RETENTION``: drops the payloads of deliveries finished longer ago (those
    of skipped deliveries are never kept) and removes the clones no push used for as long."""

    inbox: DeliveryInbox
    repositories: GitRepositoryCache
    keep: timedelta

    def __call__(self) -> None:
        dropped = self.inbox.drop_payloads(finished_before=datetime.now(UTC) - self.keep)
        removed = self.repositories.prune(unused_for=self.keep.total_seconds())
        if dropped or removed:
            logger.info("webhook retention: dropped %d payloads, removed %d unused clones",
                        dropped, len(removed))


class DeliveryWorker:
    def __init__(self, inbox: DeliveryInbox,
                 process: Callable[[ClaimedDelivery], DeliveryOutcome],
                 retention: Callable[[], None], poll_seconds: float = DEFAULT_POLL_SECONDS,
                 retention_interval: float = RETENTION_INTERVAL_SECONDS) -> None:
        self.inbox = inbox
        self.process = process
        self.retention = retention
        self.poll_seconds = poll_seconds
        self.retention_interval = retention_interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="fp-webhook-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the delivery in progress; one still running after ``timeout`` is left to
        finish or to die with the process — either way it stays queued until recorded."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("the webhook worker is still processing a delivery after %g s", timeout)

    def wake(self) -> None:
        """A delivery was queued: look now rather than at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        retention_due = time.monotonic()
        while not self._stopping.is_set():
            # Cleared before draining, so a wake-up that arrives while draining is not lost.
            self._wake.clear()
            if time.monotonic() >= retention_due:
                self._apply_retention()
                retention_due = time.monotonic() + self.retention_interval
            self._drain()
            self._wake.wait(self.poll_seconds)

    def _apply_retention(self) -> None:
        try:
            self.retention()
        except Exception:
            # Typically the database is unreachable; nothing is lost by trying next time.
            logger.exception("webhook worker: the retention failed; retrying in %g s",
                             self.retention_interval)

    def _drain(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self.inbox.process_next(self.process):
                    return
            except Exception:
                # Typically the database is unreachable; the delivery stays queued.
                logger.exception("webhook worker: could not process the next delivery; "
                                 "retrying in %g s", self.poll_seconds)
                return

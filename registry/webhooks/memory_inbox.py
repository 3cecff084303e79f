"""In-memory adapter of :class:`registry.webhooks.inbox.DeliveryInbox`, for tests.

A claimed delivery is marked as taken (the row lock of the PostgreSQL inbox) and processed
outside the inbox's lock, so workers on other threads claim other deliveries meanwhile; it
stays ``queued`` until its outcome is recorded, and is released untouched if processing
raises — as a rolled-back transaction leaves the database row.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from registry.webhooks.inbox import (
    DROPPED_PAYLOAD,
    ClaimedDelivery,
    DeliveryOutcome,
    DeliveryRecord,
    DeliveryStatus,
    NewDelivery,
)


class MemoryDeliveryInbox:
    def __init__(self) -> None:
        self._records: list[DeliveryRecord] = []
        """In order received: the index is the delivery's place in the queue."""
        self._payloads: list[bytes] = []
        self._claimed: set[int] = set()
        self._applied_commits: dict[tuple[str | None, str | None], str] = {}
        """The commit last applied, by (repository, ref)."""
        self._lock = threading.Lock()

    def receive(self, delivery: NewDelivery) -> tuple[DeliveryRecord, bool]:
        with self._lock:
            for record in self._records:
                if (record.provider, record.delivery_id) == (delivery.provider,
                                                             delivery.delivery_id):
                    return record, False
            now = datetime.now(UTC)
            record = DeliveryRecord(
                provider=delivery.provider, delivery_id=delivery.delivery_id,
                event=delivery.event, status=delivery.status, repository=delivery.repository,
                ref=delivery.ref, commit=delivery.commit, reason=delivery.reason, error=None,
                changes=None, missing_from_repository=None, received_at=now,
                # A delivery skipped on arrival is finished when it is received.
                finished_at=None if delivery.status is DeliveryStatus.QUEUED else now)
            self._records.append(record)
            self._payloads.append(bytes(delivery.payload) if record.finished_at is None
                                  else DROPPED_PAYLOAD)
            return record, True

    def get(self, delivery_id: str) -> DeliveryRecord | None:
        with self._lock:
            return next((r for r in reversed(self._records) if r.delivery_id == delivery_id),
                        None)

    def process_next(self, process: Callable[[ClaimedDelivery], DeliveryOutcome]) -> bool:
        with self._lock:
            index = self._claimable()
            if index is None:
                return False
            self._claimed.add(index)
            record = self._records[index]
            branch = (record.repository, record.ref)
            claimed = ClaimedDelivery(record.provider, record.delivery_id, self._payloads[index],
                                      self._applied_commits.get(branch))
        try:
            outcome = process(claimed)
        except BaseException:
            with self._lock:
                self._claimed.discard(index)
            raise
        with self._lock:
            self._records[index] = replace(
                record, status=outcome.status,
                # Through JSON, as the database stores them.
                changes=json.loads(json.dumps(list(outcome.changes))),
                missing_from_repository=list(outcome.missing_from_repository),
                error=outcome.error, reason=outcome.reason, finished_at=datetime.now(UTC))
            if outcome.status is DeliveryStatus.SKIPPED:
                self._payloads[index] = DROPPED_PAYLOAD
            if outcome.status is DeliveryStatus.APPLIED and record.commit is not None:
                self._applied_commits[branch] = record.commit
            self._claimed.discard(index)
        return True

    def _claimable(self) -> int | None:
        """The oldest queued delivery nobody holds and no older queued one of its branch
        precedes (deliveries without a branch never wait)."""
        branches_ahead: set[tuple[str, str]] = set()
        for index, record in enumerate(self._records):
            if record.status is not DeliveryStatus.QUEUED:
                continue
            branch = ((record.repository, record.ref)
                      if record.repository is not None and record.ref is not None else None)
            if index not in self._claimed and branch not in branches_ahead:
                return index
            if branch is not None:
                branches_ahead.add(branch)
        return None

    def counts_by_status(self) -> dict[DeliveryStatus, int]:
        with self._lock:
            return {status: sum(r.status is status for r in self._records)
                    for status in DeliveryStatus}

    def drop_payloads(self, finished_before: datetime) -> int:
        with self._lock:
            expired = [index for index, record in enumerate(self._records)
                       if record.finished_at is not None and record.finished_at < finished_before
                       and self._payloads[index]]
            for index in expired:
                self._payloads[index] = DROPPED_PAYLOAD
            return len(expired)

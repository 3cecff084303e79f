"""The webhook inbox: deliveries are stored before they are answered.

:class:`DeliveryInbox` is what the webhooks need from storage; :class:`PostgresDeliveryInbox`
is the database adapter and :mod:`.memory_inbox` the in-memory one (one contract suite runs
over both: tests/contracts/test_webhook_inbox.py).

Claiming in PostgreSQL: a worker takes the oldest queued delivery with ``SELECT … FOR UPDATE
SKIP LOCKED`` and holds that row lock, in one transaction, while it processes the delivery;
the outcome is written and committed in the same transaction.  So several workers (threads or
registry processes) never take the same delivery, and a delivery whose worker dies — the
process is killed, the connection drops — is simply unlocked and still ``queued`` for the next
worker: no lease to expire, no sweeper.

The inbox also remembers the commit last applied from each repository and branch
(``fp_webhook_applied_commits``), written in the transaction that records the applying
delivery's outcome and handed to the next delivery of that branch, so a replayed or
out-of-order push of an older commit can be recognised (docs/webhooks.md, "Replays").

A payload is kept only as long as it may be needed: not at all for a delivery skipped, and
until :meth:`DeliveryInbox.drop_payloads` for one processed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Engine, and_, exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import RowMapping

from registry.store.postgres import database_errors
from registry.store.tables import webhook_applied_commits as applied_commits
from registry.store.tables import webhook_deliveries as deliveries

logger = logging.getLogger(__name__)

DROPPED_PAYLOAD = b""
"""What a payload is once dropped: nothing reads it after its delivery is finished."""


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    APPLIED = "applied"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class NewDelivery:
    provider: str
    delivery_id: str
    event: str
    payload: bytes
    status: DeliveryStatus
    repository: str | None = None
    ref: str | None = None
    commit: str | None = None
    reason: str | None = None
    """Why a delivery is skipped."""


@dataclass(frozen=True)
class DeliveryRecord:
    provider: str
    delivery_id: str
    event: str
    status: DeliveryStatus
    repository: str | None
    ref: str | None
    commit: str | None
    reason: str | None
    error: str | None
    changes: list[dict[str, Any]] | None
    missing_from_repository: list[str] | None
    received_at: datetime
    finished_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"delivery_id": self.delivery_id, "provider": self.provider, "event": self.event,
                "status": self.status.value, "repository": self.repository, "ref": self.ref,
                "commit": self.commit, "changes": self.changes,
                "missing_from_repository": self.missing_from_repository,
                "reason": self.reason, "error": self.error,
                "received_at": self.received_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None}


@dataclass(frozen=True)
class ClaimedDelivery:
    provider: str
    delivery_id: str
    payload: bytes
    applied_commit: str | None = None
    """The commit last applied from this delivery's repository and ref; None before the
    first."""


@dataclass(frozen=True)
class DeliveryOutcome:
    status: DeliveryStatus
    changes: Sequence[dict[str, Any]] = ()
    missing_from_repository: Sequence[str] = ()
    error: str | None = None
    reason: str | None = None


class DeliveryInbox(Protocol):
    """Stored deliveries and their processing.

    Deliveries of one branch are applied one at a time in the order received: a delivery is
    only claimable while no older delivery of the same repository and ref is still queued
    (which includes one being processed: its status is recorded last).  A delivery whose
    processing raises stays queued.
    """

    def receive(self, delivery: NewDelivery) -> tuple[DeliveryRecord, bool]:
        """Store ``delivery`` unless one with its provider and id exists; return the stored
        record and whether it is new (False: a redelivery, answered with what was recorded)."""
        ...

    def get(self, delivery_id: str) -> DeliveryRecord | None:
        """The delivery with this id (the newest, should two providers have used it)."""
        ...

    def process_next(self, process: Callable[[ClaimedDelivery], DeliveryOutcome]) -> bool:
        """Claim the next deliverable queued delivery, run ``process`` on it while holding it,
        and record the outcome — for ``applied``, its commit as the one last applied from its
        repository and ref; for ``skipped``, without the payload.  False when nothing was
        claimable."""
        ...

    def counts_by_status(self) -> dict[DeliveryStatus, int]:
        """How many deliveries are in each status, every status included."""
        ...

    def drop_payloads(self, finished_before: datetime) -> int:
        """Drop the payloads of the deliveries finished before ``finished_before``; how many
        were dropped.  Queued deliveries keep theirs."""
        ...


class PostgresDeliveryInbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def receive(self, delivery: NewDelivery) -> tuple[DeliveryRecord, bool]:
        queued = delivery.status is DeliveryStatus.QUEUED
        # A delivery skipped on arrival is finished when it is received, and never read again.
        finished = None if queued else func.now()
        statement = (insert(deliveries)
                     .values(provider=delivery.provider, delivery_id=delivery.delivery_id,
                             event=delivery.event, status=delivery.status.value,
                             payload=delivery.payload if queued else DROPPED_PAYLOAD,
                             repository=delivery.repository,
                             ref=delivery.ref, commit=delivery.commit, reason=delivery.reason,
                             finished_at=finished)
                     .on_conflict_do_nothing(constraint="fp_webhook_deliveries_delivery_key")
                     .returning(*_RECORD_COLUMNS))
        with database_errors("webhook inbox"), self.engine.begin() as conn:
            row = conn.execute(statement).mappings().one_or_none()
            if row is not None:
                return _record(row), True
            existing = conn.execute(
                select(*_RECORD_COLUMNS).where(deliveries.c.provider == delivery.provider,
                                               deliveries.c.delivery_id == delivery.delivery_id)
            ).mappings().one()
        return _record(existing), False

    def get(self, delivery_id: str) -> DeliveryRecord | None:
        query = (select(*_RECORD_COLUMNS).where(deliveries.c.delivery_id == delivery_id)
                 .order_by(deliveries.c.id.desc()).limit(1))
        with database_errors("webhook inbox"), self.engine.connect() as conn:
            row = conn.execute(query).mappings().one_or_none()
        return _record(row) if row else None

    def process_next(self, process: Callable[[ClaimedDelivery], DeliveryOutcome]) -> bool:
        with database_errors("webhook inbox"), self.engine.begin() as conn:
            row = conn.execute(_CLAIM).mappings().one_or_none()
            if row is None:
                return False
            outcome = process(ClaimedDelivery(row["provider"], row["delivery_id"],
                                              bytes(row["payload"]), row["applied_commit"]))
            skipped = outcome.status is DeliveryStatus.SKIPPED
            conn.execute(deliveries.update().where(deliveries.c.id == row["id"]).values(
                status=outcome.status.value, changes=list(outcome.changes),
                missing_from_repository=list(outcome.missing_from_repository),
                error=outcome.error, reason=outcome.reason,
                payload=DROPPED_PAYLOAD if skipped else deliveries.c.payload,
                # now() would be the start of this transaction, i.e. the claim.
                finished_at=func.clock_timestamp()))
            if outcome.status is DeliveryStatus.APPLIED and row["commit"] is not None:
                commit = {"commit": row["commit"], "delivery_id": row["delivery_id"],
                          "applied_at": func.clock_timestamp()}
                conn.execute(insert(applied_commits)
                             .values(repository=row["repository"], ref=row["ref"], **commit)
                             .on_conflict_do_update(constraint="fp_webhook_applied_commits_pkey",
                                                    set_=commit))
        return True

    def counts_by_status(self) -> dict[DeliveryStatus, int]:
        query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        with database_errors("webhook inbox"), self.engine.connect() as conn:
            counted = {DeliveryStatus(status): count for status, count in conn.execute(query)}
        return {status: counted.get(status, 0) for status in DeliveryStatus}

    def drop_payloads(self, finished_before: datetime) -> int:
        statement = (deliveries.update()
                     .where(deliveries.c.finished_at < finished_before,
                            func.octet_length(deliveries.c.payload) > 0)
                     .values(payload=DROPPED_PAYLOAD))
        with database_errors("webhook inbox"), self.engine.begin() as conn:
            return conn.execute(statement).rowcount




_RECORD_COLUMNS = [deliveries.c[name] for name in (
    "provider", "delivery_id", "event", "status", "repository", "ref", "commit", "reason",
    "error", "changes", "missing_from_repository", "received_at", "finished_at")]

_older = deliveries.alias("older")
_CLAIM = (
    select(deliveries.c.id, deliveries.c.provider, deliveries.c.delivery_id, deliveries.c.payload,
           deliveries.c.repository, deliveries.c.ref, deliveries.c.commit,
           applied_commits.c.commit.label("applied_commit"))
    .outerjoin(applied_commits, and_(applied_commits.c.repository == deliveries.c.repository,
                                     applied_commits.c.ref == deliveries.c.ref))
    .where(deliveries.c.status == DeliveryStatus.QUEUED.value,
           ~exists().where(and_(_older.c.status == DeliveryStatus.QUEUED.value,
                                _older.c.repository == deliveries.c.repository,
                                _older.c.ref == deliveries.c.ref,
                                _older.c.id < deliveries.c.id)))
    .order_by(deliveries.c.id)
    .limit(1)
    .with_for_update(skip_locked=True, of=deliveries)
)


def _record(row: RowMapping) -> DeliveryRecord:
    return DeliveryRecord(**{**row, "status": DeliveryStatus(row["status"])})

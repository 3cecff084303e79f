"""The DeliveryInbox contract, one suite over the in-memory and the PostgreSQL inbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from registry.store.postgres import PostgresRegistryStore
from registry.webhooks.inbox import (
    ClaimedDelivery,
    DeliveryInbox,
    DeliveryOutcome,
    DeliveryStatus,
    NewDelivery,
    PostgresDeliveryInbox,
)
from registry.webhooks.memory_inbox import MemoryDeliveryInbox

REPOSITORY = "https://git.example/features.git"
APPLIED = DeliveryOutcome(DeliveryStatus.APPLIED, changes=[{"key": "source:clicks"}],
                          missing_from_repository=["entity:gone"])


@pytest.fixture(params=["memory", "postgres"])
def inbox(request: pytest.FixtureRequest) -> Iterator[DeliveryInbox]:
    if request.param == "memory":
        yield MemoryDeliveryInbox()
    else:
        store: PostgresRegistryStore = request.getfixturevalue("store")
        yield PostgresDeliveryInbox(store.engine)


def push(delivery_id: str, ref: str = "refs/heads/main", provider: str = "github",
         payload: bytes = b"{}") -> NewDelivery:
    return NewDelivery(provider=provider, delivery_id=delivery_id, event="push",
                       payload=payload, status=DeliveryStatus.QUEUED, repository=REPOSITORY,
                       ref=ref, commit="c0ffee")


class Recorder:
    """A processor that notes what it was given and answers ``outcome``."""

    def __init__(self, outcome: DeliveryOutcome = APPLIED) -> None:
        self.outcome = outcome
        self.claimed: list[ClaimedDelivery] = []

    def __call__(self, delivery: ClaimedDelivery) -> DeliveryOutcome:
        self.claimed.append(delivery)
        return self.outcome

    @property
    def ids(self) -> list[str]:
        return [d.delivery_id for d in self.claimed]


def drain(inbox: DeliveryInbox, recorder: Recorder) -> None:
    while inbox.process_next(recorder):
        pass


def test_a_new_delivery_is_stored_queued(inbox: DeliveryInbox) -> None:
    record, new = inbox.receive(push("d1"))
    assert new
    assert (record.delivery_id, record.status, record.commit) == ("d1", DeliveryStatus.QUEUED,
                                                                  "c0ffee")
    assert record.finished_at is None and record.changes is None
    assert inbox.get("d1") == record


def test_a_delivery_skipped_on_arrival_is_finished(inbox: DeliveryInbox) -> None:
    record, _ = inbox.receive(NewDelivery(provider="github", delivery_id="d1", event="issues",
                                          payload=b"{}", status=DeliveryStatus.SKIPPED,
                                          reason="not a push"))
    assert (record.status, record.reason) == (DeliveryStatus.SKIPPED, "not a push")
    assert record.finished_at is not None
    assert not inbox.process_next(Recorder()), "a skipped delivery is never processed"


def test_a_redelivery_returns_what_was_recorded(inbox: DeliveryInbox) -> None:
    first, _ = inbox.receive(push("d1"))
    again, new = inbox.receive(push("d1", ref="refs/heads/other", payload=b'{"x": 1}'))
    assert not new
    assert again == first
    recorder = Recorder()
    assert inbox.process_next(recorder) and not inbox.process_next(recorder)
    assert recorder.claimed == [ClaimedDelivery("github", "d1", b"{}")]


def test_get_answers_the_newest_delivery_with_an_id(inbox: DeliveryInbox) -> None:
    assert inbox.get("d1") is None
    inbox.receive(push("d1", provider="github"))
    _, new = inbox.receive(push("d1", provider="gitlab"))
    assert new, "an id is unique per provider only"
    record = inbox.get("d1")
    assert record is not None and record.provider == "gitlab"


def test_processing_records_the_outcome(inbox: DeliveryInbox) -> None:
    received, _ = inbox.receive(push("d1", payload=b'{"after": "c0ffee"}'))
    recorder = Recorder()
    assert inbox.process_next(recorder)
    assert recorder.claimed == [ClaimedDelivery("github", "d1", b'{"after": "c0ffee"}')]
    record = inbox.get("d1")
    assert record is not None
    assert record.status is DeliveryStatus.APPLIED
    assert record.changes == [{"key": "source:clicks"}]
    assert record.missing_from_repository == ["entity:gone"]
    assert record.finished_at is not None and record.finished_at >= received.received_at


def test_a_failure_is_recorded_with_its_error(inbox: DeliveryInbox) -> None:
    inbox.receive(push("d1"))
    inbox.process_next(Recorder(DeliveryOutcome(DeliveryStatus.FAILED, error="boom")))
    record = inbox.get("d1")
    assert record is not None
    assert (record.status, record.error, record.changes) == (DeliveryStatus.FAILED, "boom", [])


def test_nothing_to_claim_processes_nothing(inbox: DeliveryInbox) -> None:
    recorder = Recorder()
    assert not inbox.process_next(recorder)
    assert recorder.claimed == []


def test_deliveries_are_processed_oldest_first(inbox: DeliveryInbox) -> None:
    for n in range(3):
        inbox.receive(push(f"d{n}", ref=f"refs/heads/b{n}"))
    recorder = Recorder()
    drain(inbox, recorder)
    assert recorder.ids == ["d0", "d1", "d2"]


def test_a_delivery_whose_processing_raises_stays_queued(inbox: DeliveryInbox) -> None:
    inbox.receive(push("d1"))

    def crash(_: ClaimedDelivery) -> DeliveryOutcome:
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        inbox.process_next(crash)
    record = inbox.get("d1")
    assert record is not None and record.status is DeliveryStatus.QUEUED
    recorder = Recorder()
    assert inbox.process_next(recorder) and recorder.ids == ["d1"]


def test_while_one_is_processed_others_claim_only_other_branches(inbox: DeliveryInbox) -> None:
    inbox.receive(push("main-1"))
    inbox.receive(push("main-2"))
    inbox.receive(push("other-1", ref="refs/heads/other"))
    held: list[str] = []
    meanwhile = Recorder()

    def process_holding(delivery: ClaimedDelivery) -> DeliveryOutcome:
        held.append(delivery.delivery_id)
        # Another worker, on its own thread (in PostgreSQL: its own connection).
        other_worker = threading.Thread(target=lambda: drain(inbox, meanwhile))
        other_worker.start()
        other_worker.join(timeout=30)
        return APPLIED

    assert inbox.process_next(process_holding)
    assert held == ["main-1"]
    assert meanwhile.ids == ["other-1"], "main-2 waits for main-1, which is being processed"
    later = Recorder()
    assert inbox.process_next(later) and later.ids == ["main-2"]


def test_counts_by_status_lists_every_status(inbox: DeliveryInbox) -> None:
    assert inbox.counts_by_status() == dict.fromkeys(DeliveryStatus, 0)
    inbox.receive(push("d1"))
    inbox.receive(push("d2", ref="refs/heads/other"))
    inbox.process_next(Recorder())
    assert inbox.counts_by_status() == {DeliveryStatus.QUEUED: 1, DeliveryStatus.APPLIED: 1,
                                        DeliveryStatus.SKIPPED: 0, DeliveryStatus.FAILED: 0}

"""The DeliveryInbox contract, one suite over the in-memory and the PostgreSQL inbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

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
         payload: bytes = b"{}", commit: str = "c0ffee",
         repository: str = REPOSITORY) -> NewDelivery:
    return NewDelivery(provider=provider, delivery_id=delivery_id, event="push",
                       payload=payload, status=DeliveryStatus.QUEUED, repository=repository,
                       ref=ref, commit=commit)


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


def test_the_commit_applied_last_is_handed_to_the_next_delivery_of_its_branch(
        inbox: DeliveryInbox) -> None:
    inbox.receive(push("d1", commit="c1"))
    first = Recorder()
    assert inbox.process_next(first)
    assert first.claimed[0].applied_commit is None, "nothing was applied before"
    inbox.receive(push("d2", commit="c2"))
    inbox.receive(push("other-ref", commit="c2", ref="refs/heads/other"))
    inbox.receive(push("other-repository", commit="c2", repository="https://git.example/x.git"))
    later = Recorder()
    drain(inbox, later)
    assert [(d.delivery_id, d.applied_commit) for d in later.claimed] == [
        ("d2", "c1"), ("other-ref", None), ("other-repository", None)]
    inbox.receive(push("d3", commit="c3"))
    last = Recorder()
    assert inbox.process_next(last) and last.claimed[0].applied_commit == "c2"


@pytest.mark.parametrize("status", [DeliveryStatus.SKIPPED, DeliveryStatus.FAILED])
def test_only_an_applied_outcome_moves_the_applied_commit(inbox: DeliveryInbox,
                                                          status: DeliveryStatus) -> None:
    inbox.receive(push("d1", commit="c1"))
    inbox.process_next(Recorder())
    inbox.receive(push("d2", commit="c0"))
    inbox.process_next(Recorder(DeliveryOutcome(status, reason="old", error="x")))
    inbox.receive(push("d3", commit="c3"))
    recorder = Recorder()
    assert inbox.process_next(recorder) and recorder.claimed[0].applied_commit == "c1"


def test_payloads_of_finished_deliveries_are_dropped_after_the_retention(
        inbox: DeliveryInbox) -> None:
    inbox.receive(push("applied", payload=b'{"after": "c1"}'))
    inbox.process_next(Recorder())
    inbox.receive(push("skipped-later", ref="refs/heads/b", payload=b'{"x": 1}'))
    inbox.process_next(Recorder(DeliveryOutcome(DeliveryStatus.SKIPPED, reason="old")))
    inbox.receive(NewDelivery(provider="github", delivery_id="skipped-at-once", event="issues",
                              payload=b'{"big": "body"}', status=DeliveryStatus.SKIPPED,
                              reason="not a push"))
    inbox.receive(push("queued", ref="refs/heads/q", payload=b'{"after": "c9"}'))

    assert inbox.drop_payloads(datetime.now(UTC) - timedelta(days=1)) == 0, "none is that old"
    # Only the applied one still held its payload: a skipped delivery's is never kept.
    assert inbox.drop_payloads(datetime.now(UTC) + timedelta(seconds=5)) == 1
    assert inbox.drop_payloads(datetime.now(UTC) + timedelta(seconds=5)) == 0
    recorder = Recorder()
    assert inbox.process_next(recorder)
    assert recorder.claimed[0].payload == b'{"after": "c9"}', "a queued delivery keeps its payload"
    record = inbox.get("applied")
    assert record is not None and record.status is DeliveryStatus.APPLIED

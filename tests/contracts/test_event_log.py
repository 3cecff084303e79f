"""One contract for the ingest API's event log, held by the Kafka adapter (an idempotent
producer on the real Tansu broker of the session) and the in-memory twin alike: topics are
created when missing and left alone when present, an append answers which records the broker
acknowledged (all of them, readable back in order), a record the broker refuses is not
acknowledged, an empty append writes nothing, and an idle log has nothing queued.

The Kafka adapter alone meets an outage: a broker cut off mid-append (a TCP proxy between
the producer and a broker of this test, which advertises the proxy's address) gives an error
and never acknowledges a record that is not in the topic, and the log writes again once the
broker is back (with a new producer: Tansu fences the old one for good).
The broker, the proxy and the reads are in tests/kafka_faults.py.

Neither creates a topic on demand (the adapter tells the broker not to: topics come from
``ensure_topics`` alone, with the partitions stated), so both refuse a record for a topic
never created, as they refuse one for a topic the broker cannot have (an invalid name).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fp.local.base import free_port, wait_until
from ingest.batches import Record
from ingest.event_log import TOPIC_PARTITIONS, Delivery, EventLog, KafkaEventLog, MemoryEventLog
from tests.kafka_faults import Tansu, TcpProxy, read_partitions, read_topic, topic_partitions
from tests.services import create_topics, produce

DELIVERY_TIMEOUT_MS = 3000
INVALID_TOPIC = "no such topic!"
"""A name no broker can have (a space, a '!'): a record for it is refused."""


# --------------------------------------------------------------------------- the two logs

@dataclass
class Subject:
    """An event log under test, and how the test sees the broker behind it."""

    log: EventLog
    read: Callable[[str, int], list[list[bytes]]]
    """All of a topic's records (at least ``expected``), by partition: (topic, expected)."""
    topics: Callable[[], dict[str, int]]
    """The topics and their partitions (1 for the twin, which has no partitions)."""
    create: Callable[[str, int, list[bytes]], None]
    """A topic made beside the log: (topic, partitions, records)."""


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop per test, as the ingest service's."""
    with asyncio.Runner() as runner:
        yield runner


def kafka_subject(bootstrap: str) -> Subject:
    def create(topic: str, partitions: int, values: list[bytes]) -> None:
        create_topics(bootstrap, {topic: partitions})
        produce(bootstrap, topic, [(0, value) for value in values])

    return Subject(
        KafkaEventLog(bootstrap, DELIVERY_TIMEOUT_MS),
        read=lambda topic, expected: read_partitions(bootstrap, topic, expected),
        topics=lambda: topic_partitions(bootstrap), create=create)


def memory_subject() -> Subject:
    log = MemoryEventLog()

    def create(topic: str, _: int, values: list[bytes]) -> None:
        log.topics[topic] = list(values)

    def read(topic: str, _: int = 0) -> list[list[bytes]]:
        return [list(log.topics[topic])] if topic in log.topics else []

    return Subject(log, read=read,
                   topics=lambda: dict.fromkeys(log.topics, 1), create=create)


@pytest.fixture(params=["kafka", "memory"])
def subject(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Iterator[Subject]:
    made = (kafka_subject(request.getfixturevalue("kafka_bootstrap"))
            if request.param == "kafka" else memory_subject())
    yield made
    runner.run(made.log.close())


@pytest.fixture
def topic() -> str:
    """A topic of this test alone: the broker of the session outlives every test."""
    return f"contract_{uuid.uuid4().hex[:10]}"


def records(topic: str, count: int, first: int = 0) -> list[Record]:
    return [Record(topic, b'{"n": %d}' % n, n) for n in range(first, first + count)]


# --------------------------------------------------------------------------- the contract

def test_missing_topics_are_created_and_existing_ones_left_alone(
        runner: asyncio.Runner, subject: Subject, topic: str) -> None:
    subject.create(topic, 2, [b"kept"])
    assert f"{topic}.new" not in subject.topics()
    runner.run(subject.log.ensure_topics([topic, f"{topic}.new", f"{topic}.dlq"]))
    topics = subject.topics()
    assert {topic, f"{topic}.new", f"{topic}.dlq"} <= topics.keys()
    if isinstance(subject.log, KafkaEventLog):
        assert (topics[topic], topics[f"{topic}.new"], topics[f"{topic}.dlq"]) == (
            2, TOPIC_PARTITIONS, TOPIC_PARTITIONS)
    assert [v for p in subject.read(topic, 1) for v in p] == [b"kept"]
    assert [v for p in subject.read(f"{topic}.new", 0) for v in p] == []
    runner.run(subject.log.ensure_topics([topic, f"{topic}.new"]))  # again: nothing changes
    assert subject.topics() == topics


def test_an_append_acknowledges_every_record_and_they_read_back_in_order(
        runner: asyncio.Runner, subject: Subject, topic: str) -> None:
    runner.run(subject.log.ensure_topics([topic, f"{topic}.dlq"]))
    events = records(topic, 300)
    letters = [Record(f"{topic}.dlq", b'{"n": %d}' % n, n) for n in range(300, 310)]
    delivery = runner.run(subject.log.append([*events[:150], *letters, *events[150:]]))
    assert delivery == Delivery(acknowledged=set(range(310)), error=None)
    assert_in_order(subject.read(topic, 300), events)
    assert_in_order(subject.read(f"{topic}.dlq", 10), letters)


def assert_in_order(by_partition: list[list[bytes]], sent: list[Record]) -> None:
    """Every record sent, once, each partition in the order of the append (the twin's one
    list in that order)."""
    assert sorted(value for partition in by_partition for value in partition) == sorted(
        record.value for record in sent)
    position = {record.value: record.index for record in sent}
    for partition in by_partition:
        indexes = [position[value] for value in partition]
        assert indexes == sorted(indexes)


def test_a_record_for_a_topic_the_broker_cannot_have_is_not_acknowledged(
        runner: asyncio.Runner, subject: Subject, topic: str) -> None:
    runner.run(subject.log.ensure_topics([topic]))
    delivery = runner.run(subject.log.append(
        [Record(topic, b"a", 0), Record(INVALID_TOPIC, b"b", 1), Record(topic, b"c", 2)]))
    assert delivery.error
    assert delivery.acknowledged == {0, 2}
    assert sorted(v for p in subject.read(topic, 2) for v in p) == [b"a", b"c"]
    assert INVALID_TOPIC not in subject.topics()


def test_a_record_for_a_topic_never_created_is_not_acknowledged(
        runner: asyncio.Runner, subject: Subject, topic: str) -> None:
    delivery = runner.run(subject.log.append([Record(topic, b"orphan", 7)]))
    assert delivery.error
    assert delivery.acknowledged == set()
    assert topic not in subject.topics()


def test_an_empty_append_writes_nothing_and_an_idle_log_holds_nothing(
        runner: asyncio.Runner, subject: Subject, topic: str) -> None:
    assert subject.log.queue_depth() == 0
    runner.run(subject.log.ensure_topics([topic]))
    assert runner.run(subject.log.append([])) == Delivery()
    runner.run(subject.log.append(records(topic, 50)))
    assert runner.run(subject.log.append([])) == Delivery()
    # A delivery report is counted until the poll that served it returns.
    wait_until(lambda: subject.log.queue_depth() == 0, 5, "an empty producer queue")
    assert sorted(v for p in subject.read(topic, 50) for v in p) == sorted(
        r.value for r in records(topic, 50))


# --------------------------------------------------------------------------- Kafka alone

@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[Tansu, TcpProxy]]:
    """A broker of this test behind a TCP proxy, whose address the broker advertises: every
    connection of a client goes through the proxy."""
    broker_port = free_port()
    proxy = TcpProxy(broker_port)
    broker = Tansu(tmp_path / "tansu.log", broker_port, advertised_port=proxy.port)
    proxy.start()
    broker.start()
    yield broker, proxy
    proxy.stop()
    broker.kill()


def test_an_outage_gives_an_error_and_never_acknowledges_a_record_not_written(
        runner: asyncio.Runner, proxied_broker: tuple[Tansu, TcpProxy], topic: str) -> None:
    broker, proxy = proxied_broker
    log = KafkaEventLog(broker.url, DELIVERY_TIMEOUT_MS)

    async def outage() -> tuple[Delivery, Delivery, Delivery, float]:
        await log.ensure_topics([topic])
        before = await log.append(records(topic, 100))
        # Cut while an append is in flight: part may be written, part not.
        during = asyncio.create_task(log.append(records(topic, 5_000, first=100)))
        await asyncio.sleep(0.005)
        proxy.cut()
        started = time.monotonic()
        cut_off = await log.append(records(topic, 100, first=5_100))
        waited = time.monotonic() - started
        return before, await during, cut_off, waited

    try:
        before, during, cut_off, waited = runner.run(outage())
        assert before == Delivery(acknowledged=set(range(100)))
        assert cut_off.error and cut_off.acknowledged == set()
        assert waited < DELIVERY_TIMEOUT_MS / 1000 + 2, "an outage is told within the timeout"
        proxy.restore()
        written = {int(value[6:-1]) for value in read_topic(broker.url, topic, 100)}
        assert before.acknowledged | during.acknowledged <= written
        assert not written & cut_off.acknowledged
        # The broker back, the log writes again (a new producer if the old one is stuck).
        after = runner.run(log.append(records(topic, 100, first=10_000)))
        assert after == Delivery(acknowledged=set(range(10_000, 10_100)))
    finally:
        runner.run(log.close())

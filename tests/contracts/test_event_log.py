"""One contract for the ingest API's event log, held by the Kafka adapter (an idempotent
producer on the real Tansu broker of the session) and the in-memory twin alike: topics are
created when missing and left alone when present, an append answers which records the broker
acknowledged (all of them, readable back in order), a record the broker refuses is not
acknowledged, an empty append writes nothing, and an idle log has nothing queued.

The Kafka adapter alone meets an outage: a broker cut off mid-append (a TCP proxy between
the producer and a broker of this test, which advertises the proxy's address) gives an error
and never acknowledges a record that is not in the topic, and the log writes again once the
broker is back (with a new producer: Tansu fences the old one for good).
tests/integration/test_ingest.py uses :class:`Tansu`, :class:`TcpProxy` and
:func:`read_topic` too.

Neither creates a topic on demand (the adapter tells the broker not to: topics come from
``ensure_topics`` alone, with the partitions stated), so both refuse a record for a topic
never created, as they refuse one for a topic the broker cannot have (an invalid name).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from fp.local.base import LOOPBACK, ServerProcess, free_port, port_open, wait_until
from fp.local.kafka import find_tansu
from ingest.batches import Record
from ingest.event_log import TOPIC_PARTITIONS, Delivery, EventLog, KafkaEventLog, MemoryEventLog
from tests.services import create_topics, produce

DELIVERY_TIMEOUT_MS = 3000
PRODUCE = b"\x00\x00"
"""The Kafka protocol's api key of a produce request."""
INVALID_TOPIC = "no such topic!"
"""A name no broker can have (a space, a '!'): a record for it is refused."""


# --------------------------------------------------------------------------- own broker

class Tansu:
    """A Tansu broker in memory on ``port``, advertising ``advertised_port`` (a proxy's, say)
    in its metadata; started again on the same port it is a new, empty broker."""

    def __init__(self, log: Path, port: int | None = None,
                 advertised_port: int | None = None) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self._log = log
        self._server: ServerProcess | None = None

    @property
    def url(self) -> str:
        """Where clients bootstrap: the advertised address."""
        return f"{LOOPBACK}:{self.advertised_port}"

    def start(self) -> None:
        self._server = ServerProcess(
            [find_tansu(), "broker", f"--listener-url=tcp://{LOOPBACK}:{self.port}",
             f"--advertised-listener-url=tcp://{LOOPBACK}:{self.advertised_port}",
             "--storage-engine=memory://tansu/"], self._log)
        self._server.start()
        self._server.wait_ready(lambda: port_open(self.port), 15, f"Tansu on {self.port}")

    def kill(self) -> None:
        """SIGKILL: the broker and everything it held are gone."""
        if self._server is not None:
            self._server.stop(signal.SIGKILL)
            self._server = None


class TcpProxy:
    """A loopback TCP proxy to a Kafka broker on ``target_port``, passing on one Kafka frame
    (its size, then that many bytes) at a time.  :meth:`cut` closes every connection and
    refuses new ones (nothing listens); :meth:`restore` listens on the same port again.

    ``hold`` (a topic's name) withholds the broker's answer to every produce request for
    that topic: its records are written, but the producer never learns it; ``withheld``
    counts those answers."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.hold: bytes | None = None
        self.withheld = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()

    def start(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True,
                         name="proxy-accept").start()

    restore = start

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            _shut(listener)  # wakes accept(); the port then refuses connections
        for connection in connections:
            _shut(connection)

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=2)
            except OSError:
                _shut(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    _shut(client)
                    _shut(upstream)
                    return
                self._connections |= {client, upstream}
            held: set[bytes] = set()  # the correlation ids of the requests held
            threading.Thread(target=self._requests, args=(client, upstream, held),
                             daemon=True, name="proxy-requests").start()
            threading.Thread(target=self._answers, args=(upstream, client, held),
                             daemon=True, name="proxy-answers").start()

    def _requests(self, client: socket.socket, upstream: socket.socket,
                  held: set[bytes]) -> None:
        with contextlib.suppress(OSError):
            while frame := _frame(client):
                # Size, api key (0: produce), api version, correlation id, …
                if self.hold is not None and frame[4:6] == PRODUCE and self.hold in frame:
                    held.add(frame[8:12])
                upstream.sendall(frame)
        self._close(client, upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket,
                 held: set[bytes]) -> None:
        with contextlib.suppress(OSError):
            while frame := _frame(upstream):
                if frame[4:8] in held:  # size, correlation id, …
                    self.withheld += 1
                else:
                    client.sendall(frame)
        self._close(client, upstream)

    def _close(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._connections -= set(sockets)
        for sock in sockets:
            _shut(sock)


def _frame(sock: socket.socket) -> bytes:
    """One Kafka frame (b"" once the peer closed)."""
    size = _exactly(sock, 4)
    return size + _exactly(sock, int.from_bytes(size, "big")) if size else b""


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# --------------------------------------------------------------------------- reading a topic

def topic_partitions(bootstrap: str) -> dict[str, int]:
    """Every topic of the broker and its partition count (the whole listing: a metadata
    request naming a topic may create it)."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()
            if topic.error is None}


def read_partitions(bootstrap: str, topic: str, expected: int = 0,
                    timeout: float = 30) -> list[list[bytes]]:
    """Every record of ``topic`` (at least ``expected``), by partition, in offset order.

    Read from the start to the end of every partition, which librdkafka signals once the
    consumer is past a partition's end offset.  Tansu reports that offset as its last batch's
    base offset + 1, short of the true end, but the consumer cannot be past it before it
    read that whole last batch: the signal comes at the true end."""
    partitions = topic_partitions(bootstrap).get(topic, 0)
    if partitions == 0:
        return []
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    records: list[list[bytes]] = [[] for _ in range(partitions)]
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < partitions or sum(map(len, records)) < expected:
            assert time.monotonic() < deadline, f"{topic}: {sum(map(len, records))} records read"
            message = consumer.poll(0.1)
            if message is None:
                continue
            partition, error = message.partition() or 0, message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                at_end.add(partition)
            else:
                at_end.discard(partition)
                records[partition].append(message.value() or b"")
    finally:
        consumer.close()
    return records


def read_topic(bootstrap: str, topic: str, expected: int = 0) -> list[bytes]:
    return [value for partition in read_partitions(bootstrap, topic, expected)
            for value in partition]


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

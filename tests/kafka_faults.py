"""Kafka under faults, for the tests of the ingest API's event log: a Tansu broker of a
test's own (killed and started again at will) advertising a TCP proxy that can cut every
connection or hold back the broker's answers, and exact reads of a topic."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from fp.local.base import LOOPBACK, ServerProcess, free_port, port_open
from fp.local.kafka import find_tansu

PRODUCE = b"\x00\x00"
"""The Kafka protocol's api key of a produce request."""


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

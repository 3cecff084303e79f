"""Where accepted events and dead letters go: the broker, behind one interface.

:class:`EventLog` is what the ingest service needs; :class:`KafkaEventLog` is its adapter
(an idempotent librdkafka producer, ``acks=all``) and :class:`MemoryEventLog` its in-memory
twin; tests/contracts/test_event_log.py runs one suite over both.

The promise :meth:`EventLog.append` keeps is the ingest API's: it returns once the broker has
acknowledged every record — replicated to every in-sync replica — or says which it has not.
Nothing is acknowledged by a timer: librdkafka reports every message exactly once, either
delivered or failed within ``message.timeout.ms``, and the answer waits for those reports.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from core.errors import InfrastructureError
from ingest.batches import Record
from sinks.kafka_admin import KafkaAdmin

logger = logging.getLogger(__name__)

TOPIC_PARTITIONS = 4
"""Partitions of a topic the ingest API creates (as the deployer creates its topics); the
broker's default retention applies."""


@dataclass
class Delivery:
    """What the broker acknowledged of an append."""

    acknowledged: set[int] = field(default_factory=set)
    """The records' indexes the broker acknowledged."""
    error: str | None = None
    """Why some record was not acknowledged; None when all were."""


class EventLog(Protocol):
    async def append(self, records: Sequence[Record]) -> Delivery:
        """Write the records; return once each is acknowledged or has failed."""

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        """Create the topics that do not exist yet.  Raises InfrastructureError."""

    def queue_depth(self) -> int:
        """Records handed to the log and not yet acknowledged or failed."""

    async def close(self) -> None: ...


class _PendingAppend:
    """One append's outstanding records, settled by the producer's delivery reports (on the
    polling thread) and awaited on the event loop."""

    __slots__ = ("delivery", "done", "loop", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.remaining = count
        self.delivery = Delivery()
        self.done: asyncio.Future[None] = loop.create_future()

    def settle(self, index: int, error: str | None) -> None:
        if error is None:
            self.delivery.acknowledged.add(index)
        elif self.delivery.error is None:
            self.delivery.error = error
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class KafkaEventLog:
    """An idempotent producer (``enable.idempotence``, hence ``acks=all`` and in-order
    retries without duplicates) and a thread that serves its delivery reports.

    An idempotent producer that meets a fatal error (the broker lost its sequence state, say)
    refuses every later message, and one whose messages timed out may never deliver again:
    it bumps its epoch to go on, and a broker may refuse every bump — Tansu, once a lost
    connection failed messages in flight, fences it ("a newer producer with the same
    transactionalId"), and once restarted empty answers "unknown producer id", forever.
    After either the producer is replaced by a new one at the next append, and the old one
    retired once its last reports are served (tests/contracts/test_event_log.py,
    tests/integration/test_ingest.py)."""

    _POLL_S = 0.05

    def __init__(self, bootstrap_servers: str, delivery_timeout_ms: int,
                 linger_ms: int = 0) -> None:
        """``linger_ms`` 0: a request's records leave at once (a batch's still travel
        together, produced faster than a round trip); 2 ms of lingering put a single event's
        p99 at 7.6 ms, against 1.5 ms without (benchmarks/ingest)."""
        self.bootstrap_servers = bootstrap_servers
        self.delivery_timeout_ms = delivery_timeout_ms
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all",
            "linger.ms": linger_ms, "message.timeout.ms": delivery_timeout_ms,
            "queue.buffering.max.messages": 1_000_000, "logger": logger,
            # Topics are created by ensure_topics alone, with the partitions stated: a broker
            # creating one on demand would give it its own default.
            "allow.auto.create.topics": False}
        self._generation = 0
        """Which producer is the current one: a report of an older one replaces nothing."""
        self._replace: str | None = None
        """Why the current producer is to be replaced at the next append (None: it is not)."""
        self._producer = self._new_producer()
        self._retired: list[Producer] = []
        self._admin = KafkaAdmin(bootstrap_servers)
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._serve_reports, name="ingest-producer",
                                        daemon=True)
        self._poller.start()

    def _new_producer(self) -> Producer:
        self._generation += 1
        generation = self._generation

        def on_error(error: KafkaError) -> None:
            # Without an error callback confluent-kafka raises a fatal error from poll(), on
            # the thread that serves the delivery reports.
            if error.fatal():
                self._to_replace(generation, f"a fatal error: {error.str()}")
            else:  # the broker unreachable, say: librdkafka retries; its log says more
                logger.debug("producer: %s", error.str())

        return Producer({**self._config, "error_cb": on_error})

    def _to_replace(self, generation: int, reason: str) -> None:
        if generation == self._generation and self._replace is None:
            self._replace = reason

    def _serve_reports(self) -> None:
        while not self._closed.is_set():
            self._poll(self._producer, self._POLL_S)
            for retired in list(self._retired):
                self._poll(retired, 0)
                if len(retired) == 0:
                    self._retired.remove(retired)

    def _poll(self, producer: Producer, timeout_s: float) -> None:
        # Whatever a poll raises (confluent-kafka raises a fatal error here as well as to
        # the error callback), this thread goes on: without it no append is answered.
        generation = self._generation
        try:
            producer.poll(timeout_s)
        except Exception as error:
            if not _is_fatal(error):
                logger.exception("serving the producer's delivery reports failed")
            elif producer is self._producer:
                self._to_replace(generation, f"a fatal error: {error}")

    def _renew_if_needed(self) -> None:
        if self._replace is not None:
            logger.warning("replacing the producer after %s", self._replace)
            self._retired.append(self._producer)
            self._producer = self._new_producer()
            self._replace = None

    async def append(self, records: Sequence[Record]) -> Delivery:
        if not records:
            return Delivery()
        self._renew_if_needed()
        generation = self._generation
        pending = _PendingAppend(asyncio.get_running_loop(), len(records))
        for position, record in enumerate(records):
            try:
                self._produce(record, pending)
            except (KafkaException, BufferError) as error:
                if _is_fatal(error):
                    self._to_replace(generation, f"a fatal error: {error}")
                # The rest is never handed over: settle it as failed, so that the count
                # of reports to wait for is right.
                for unsent in records[position:]:
                    pending.settle(unsent.index, f"not produced: {error}")
                break
        # librdkafka reports every message by message.timeout.ms; the margin covers the
        # poll interval and a loaded machine, and guards against a report never served.
        try:
            await asyncio.wait_for(asyncio.shield(pending.done),
                                   self.delivery_timeout_ms / 1000 + 5)
        except TimeoutError:
            pending.delivery.error = pending.delivery.error or "no delivery report in time"
            self._to_replace(generation, "delivery reports that did not come")
        return pending.delivery

    def _produce(self, record: Record, pending: _PendingAppend) -> None:
        generation = self._generation

        def report(error: KafkaError | None, _: Message) -> None:
            if error is not None and (error.fatal() or
                                      error.code() == KafkaError._MSG_TIMED_OUT):
                self._to_replace(generation, error.str())
            pending.settle(record.index, None if error is None else error.str())

        try:
            self._producer.produce(record.topic, record.value, on_delivery=report)
        except BufferError:
            # The local queue is full: wait for the broker to drain some, once.
            self._producer.poll(0.1)
            self._producer.produce(record.topic, record.value, on_delivery=report)

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        # The broker unreachable, the admin client would wait its own 15 s to list the
        # topics: a request waits for its topics no longer than for its records.
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self._admin.ensure_topics, list(topics), TOPIC_PARTITIONS),
                self.delivery_timeout_ms / 1000)
        except TimeoutError:
            raise InfrastructureError(
                f"Kafka at {self.bootstrap_servers} did not answer within "
                f"{self.delivery_timeout_ms} ms") from None

    def queue_depth(self) -> int:
        return len(self._producer)

    async def close(self) -> None:
        await asyncio.to_thread(self._producer.flush, self.delivery_timeout_ms / 1000)
        self._closed.set()
        await asyncio.to_thread(self._poller.join, 5)


def _is_fatal(error: BaseException) -> bool:
    """Whether ``error`` is a producer's fatal error (the producer refuses every later message)."""
    return isinstance(error, KafkaException) and bool(error.args) \
        and isinstance(error.args[0], KafkaError) and bool(error.args[0].fatal())


class MemoryEventLog:
    """The in-memory twin: every appended record, by topic; ``fail_with`` makes every
    append fail, as a broker outage does."""

    def __init__(self) -> None:
        self.topics: dict[str, list[bytes]] = {}
        self.fail_with: str | None = None

    async def append(self, records: Sequence[Record]) -> Delivery:
        if self.fail_with is not None:
            return Delivery(error=self.fail_with) if records else Delivery()
        delivery = Delivery()
        for record in records:
            if record.topic in self.topics:
                self.topics[record.topic].append(record.value)
                delivery.acknowledged.add(record.index)
            else:  # as a broker that does not create topics on demand
                delivery.error = f"topic {record.topic} does not exist"
        return delivery

    async def ensure_topics(self, topics: Iterable[str]) -> None:
        if self.fail_with is not None:
            raise InfrastructureError(self.fail_with)
        for topic in topics:
            self.topics.setdefault(topic, [])

    def queue_depth(self) -> int:
        return 0

    async def close(self) -> None:
        return None

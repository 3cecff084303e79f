"""Result topics → Redis: the online-store writer of every materialisation job.

Flink jobs write their feature rows to ``fp.features.{view}.{namespace}``; this writer
consumes every such topic (one consumer group; run several writers to share partitions)
and applies each batch to the online store (:mod:`sinks.online_store`: one pipelined round
trip), then commits the Kafka offsets.  A crash before the commit replays the batch, which is
harmless: the store applies a row only when it is not older than what the hash holds, so
replays and out-of-order rows never move a value backwards.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence

from confluent_kafka import Consumer, KafkaError, Message

from core.domain.layout import FETCH_WAIT_MS, RESULT_TOPIC_PREFIX, WRITER_GROUP
from sinks.online_store import FeatureRow, FeatureWriter, RedisOnlineStore

logger = logging.getLogger(__name__)


def parse_topic(topic: str) -> tuple[str, str]:
    """``fp.features.{view}.{namespace}`` → (view, namespace)."""
    view, _, namespace = topic.removeprefix(RESULT_TOPIC_PREFIX).rpartition(".")
    return view, namespace


class ResultTopicWriter:
    """Consumes every result topic and keeps Redis up to date; stop with :meth:`stop`."""

    def __init__(self, bootstrap_servers: str, redis_url: str, group: str = WRITER_GROUP,
                 batch_size: int = 5000) -> None:
        self.store: FeatureWriter = RedisOnlineStore(redis_url)
        self.batch_size = batch_size
        self._stopping = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            # New versions create new result topics: find them within seconds.
            "topic.metadata.refresh.interval.ms": 2000,
            "fetch.wait.max.ms": FETCH_WAIT_MS,
        })
        self._consumer.subscribe([f"^{RESULT_TOPIC_PREFIX.replace('.', '[.]')}.+"])

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self.poll_once(timeout=0.5)
        finally:
            self._consumer.close()

    def poll_once(self, timeout: float) -> int:
        """Apply one batch — what has arrived, as soon as something has (a consume call waits
        for a whole batch or the timeout) — and return the number of rows written."""
        first = self._consumer.poll(timeout)
        if first is None:
            return 0
        messages = [first, *self._consumer.consume(self.batch_size - 1, timeout=0)]
        batches = _group_rows(messages)
        if not batches:
            return 0
        self.store.apply(batches)
        self._consumer.commit(asynchronous=True)
        return sum(len(rows) for rows in batches.values())


def _group_rows(messages: Sequence[Message]) -> dict[tuple[str, str], list[FeatureRow]]:
    batches: dict[tuple[str, str], list[FeatureRow]] = defaultdict(list)
    views: dict[str, tuple[str, str]] = {}
    for message in _without_errors(messages):
        try:
            row = FeatureRow.parse(message.value() or b"")
        except (ValueError, KeyError, TypeError) as error:
            # Only Flink jobs write here; a bad row is a bug, logged rather than fatal.
            logger.error("skipping malformed row at %s[%s]@%s: %s", message.topic(),
                         message.partition(), message.offset(), error)
            continue
        topic = message.topic() or ""
        if (view := views.get(topic)) is None:
            view = views[topic] = parse_topic(topic)
        batches[view].append(row)
    return batches


def _without_errors(messages: Iterable[Message]) -> Iterable[Message]:
    for message in messages:
        error = message.error()
        if error is None:
            yield message
        elif error.code() != KafkaError._PARTITION_EOF:
            logger.warning("result topic consumer: %s", error)

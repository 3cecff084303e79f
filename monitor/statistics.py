"""The statistics topics' adapter: the rows every job writes to ``fp.statistics.{view}.{ns}``
(sinks/compiler.py), read by the monitor's leader in one consumer group and grouped into
the monitoring windows they belong to."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, Message

from core.domain.drift import part_key
from core.domain.layout import (
    FETCH_WAIT_MS,
    MONITOR_GROUP,
    STATISTICS_TOPIC_PREFIX,
    parse_statistics_topic,
)
from registry.store.drift import WindowParts

logger = logging.getLogger(__name__)

BATCH = 5000


class StatisticsSource(Protocol):
    def poll(self, timeout: float) -> list[WindowParts]:
        """The rows that arrived (waiting up to ``timeout`` for the first), by window."""
        ...

    def commit(self) -> None:
        """Everything polled is stored: do not deliver it again."""
        ...

    def close(self) -> None: ...


class StatisticsConsumer:
    def __init__(self, bootstrap_servers: str) -> None:
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap_servers, "group.id": MONITOR_GROUP,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            # New versions' jobs create new statistics topics: find them within seconds.
            "topic.metadata.refresh.interval.ms": 2000,
            "fetch.wait.max.ms": FETCH_WAIT_MS,
        })
        self._consumer.subscribe([f"^{STATISTICS_TOPIC_PREFIX.replace('.', '[.]')}.+"])

    def poll(self, timeout: float) -> list[WindowParts]:
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        return windows_of([first, *self._consumer.consume(BATCH - 1, timeout=0)])

    def commit(self) -> None:
        self._consumer.commit(asynchronous=False)

    def close(self) -> None:
        self._consumer.close()


def windows_of(messages: Sequence[Message]) -> list[WindowParts]:
    """Rows grouped by view, namespace, feature and window; a malformed row is logged and
    skipped (only the platform's jobs write these topics: it would be a bug)."""
    windows: dict[tuple[str, str, str, int], WindowParts] = {}
    for message in messages:
        error = message.error()
        if error is not None:
            # Before any job ran, no topic matches the subscription: nothing is wrong.
            if error.code() not in (KafkaError._PARTITION_EOF,
                                    KafkaError.UNKNOWN_TOPIC_OR_PART):
                logger.warning("statistics consumer: %s", error)
            continue
        try:
            row: dict[str, Any] = json.loads(message.value() or b"")
            view, namespace = parse_statistics_topic(message.topic() or "")
            key = (view, namespace, str(row["f"]), int(row["e"]))
            part: dict[str, float] = {"r": int(row["r"])}
            if row["b"] is not None:
                part |= {name: float(row[name]) for name in ("sum", "sq", "lo", "hi")}
            name = part_key(row["b"], row["c"])
        except (ValueError, KeyError, TypeError) as error:
            logger.error("skipping malformed statistics row at %s[%s]@%s: %s",
                         message.topic(), message.partition(), message.offset(), error)
            continue
        window = windows.get(key)
        parts = {**(window.parts if window else {}), name: part}
        windows[key] = WindowParts(view, namespace, key[2], int(row["s"]), key[3], parts)
    return list(windows.values())

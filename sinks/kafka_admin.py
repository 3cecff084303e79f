"""Kafka administration for materialisation jobs: topics and consumer progress."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from core.errors import InfrastructureError

TIMEOUT_S = 15.0


class KafkaTopics(Protocol):
    """What the deployer needs of Kafka: its topics, and how far consumer groups have read."""

    @property
    def bootstrap_servers(self) -> str: ...

    def topic_exists(self, topic: str) -> bool: ...

    def ensure_topics(self, topics: Iterable[str], partitions: int = 4) -> None: ...

    def delete_topics(self, topics: Iterable[str]) -> None: ...

    def end_offsets(self, topic: str) -> dict[int, int]: ...

    def committed_offsets(self, group: str, topic: str, partitions: Iterable[int],
                          ) -> dict[int, int]: ...

    def caught_up(self, group: str, topic: str, frontier: dict[int, int]) -> bool: ...


class KafkaAdmin:
    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._admin = AdminClient({"bootstrap.servers": bootstrap_servers})

    def topic_exists(self, topic: str) -> bool:
        try:
            # Listing all topics: asking for one by name would auto-create it on brokers
            # with auto.create.topics.enable, and "missing" must stay missing.
            metadata = self._admin.list_topics(timeout=TIMEOUT_S)
        except KafkaException as error:
            raise InfrastructureError(f"Kafka unreachable at {self.bootstrap_servers}: {error}"
                                      ) from error
        found = metadata.topics.get(topic)
        return found is not None and found.error is None

    def ensure_topics(self, topics: Iterable[str], partitions: int = 4) -> None:
        """Create the topics that do not exist yet (existing ones are left alone)."""
        missing = [t for t in topics if not self.topic_exists(t)]
        if not missing:
            return
        futures = self._admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
        for topic, future in futures.items():
            try:
                future.result(timeout=TIMEOUT_S)
            except KafkaException as error:
                if "TOPIC_ALREADY_EXISTS" not in str(error):
                    raise InfrastructureError(f"creating topic {topic} failed: {error}"
                                              ) from error

    def delete_topics(self, topics: Iterable[str]) -> None:
        existing = [t for t in topics if self.topic_exists(t)]
        for future in self._admin.delete_topics(existing).values() if existing else []:
            future.result(timeout=TIMEOUT_S)

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The next offset of each partition: what a consumer must reach to be caught up."""
        consumer = self._consumer("fp-admin-probe")
        try:
            partitions = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions
            return {p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                      timeout=TIMEOUT_S)[1]
                    for p in partitions}
        finally:
            consumer.close()

    def committed_offsets(self, group: str, topic: str, partitions: Iterable[int],
                          ) -> dict[int, int]:
        """Offsets ``group`` committed (-1 where it committed nothing yet)."""
        consumer = self._consumer(group)
        try:
            committed = consumer.committed([TopicPartition(topic, p) for p in partitions],
                                           timeout=TIMEOUT_S)
            return {tp.partition: tp.offset for tp in committed}
        finally:
            consumer.close()

    def caught_up(self, group: str, topic: str, frontier: dict[int, int]) -> bool:
        """Whether ``group`` committed at least the ``frontier`` offsets on every partition."""
        committed = self.committed_offsets(group, topic, frontier)
        return all(frontier[p] <= 0 or committed.get(p, -1) >= frontier[p] for p in frontier)

    def tail(self, topic: str, limit: int, timeout_s: float = 3.0) -> list[tuple[int, bytes]]:
        """At most the last ``limit`` messages of ``topic`` (shared evenly by its partitions),
        each as (its timestamp in epoch ms, its value); none when the topic does not exist.
        Reads for at most ``timeout_s``: a page waits for no slow broker past that."""
        if not self.topic_exists(topic):
            return []
        consumer = self._consumer("fp-tail")
        try:
            partitions = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions
            share = max(1, limit // max(1, len(partitions)))
            ends: dict[int, int] = {}
            starts = []
            for partition in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=TIMEOUT_S)
                if high > low:
                    ends[partition] = high
                    starts.append(TopicPartition(topic, partition, max(low, high - share)))
            if not starts:
                return []
            consumer.assign(starts)
            messages: list[tuple[int, bytes]] = []
            deadline = time.monotonic() + timeout_s
            while ends and time.monotonic() < deadline:
                for message in consumer.consume(500, timeout=0.2):
                    if message.error() is not None:
                        continue
                    messages.append((message.timestamp()[1], message.value() or b""))
                    partition, offset = message.partition(), message.offset()
                    if partition in ends and offset is not None and offset + 1 >= ends[partition]:
                        del ends[partition]
            return messages
        except KafkaException as error:
            raise InfrastructureError(f"reading {topic} failed: {error}") from error
        finally:
            consumer.close()

    def _consumer(self, group: str) -> Consumer:
        return Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})

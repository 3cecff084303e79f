"""Result topics → Redis: the online-store writer of every materialisation job.

Flink jobs write their feature rows to ``fp.features.{view}.{namespace}``; this writer
consumes every such topic (one consumer group; run several writers to share partitions)
and applies each batch to Redis in one pipeline, then commits the Kafka offsets.  A crash
before the commit replays the batch, which is harmless: a Lua script applies a row only
when it is not older than what the hash holds (per feature when the view's windows close at
different times), so replays and out-of-order rows never move a value backwards.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaError, Message

from registry.domain.layout import feature_key, meta_key
from registry.errors import InfrastructureError
from sinks.compiler import RESULT_TOPIC_PREFIX

logger = logging.getLogger(__name__)

WRITER_GROUP = "fp-redis-writer"

# KEYS[1] feature hash; ARGV: event time, per-feature times?, last-values row?, field/value…
_APPLY_ROW = """
local t = tonumber(ARGV[1])
if ARGV[2] == '0' then
  local current = redis.call('HGET', KEYS[1], '__ts')
  if current and tonumber(current) > t then return 0 end
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[1], '__ts', ARGV[1])
  return 1
end
local written = 0
for i = 4, #ARGV, 2 do
  if not (ARGV[3] == '1' and ARGV[i + 1] == 'null') then
    local time_field = '__ts:' .. ARGV[i]
    local current = redis.call('HGET', KEYS[1], time_field)
    if (not current) or tonumber(current) <= t then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1], time_field, ARGV[1])
      written = 1
    end
  end
end
if written == 1 then
  local newest = redis.call('HGET', KEYS[1], '__ts')
  if (not newest) or tonumber(newest) < t then redis.call('HSET', KEYS[1], '__ts', ARGV[1]) end
end
return written
"""

# KEYS[1] meta hash; ARGV: watermark candidate (or -1), rows, updated_at
_ADVANCE_META = """
local current = redis.call('HGET', KEYS[1], 'watermark')
if tonumber(ARGV[1]) >= 0 and ((not current) or tonumber(current) < tonumber(ARGV[1])) then
  redis.call('HSET', KEYS[1], 'watermark', ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'rows', ARGV[2])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
return 1
"""


@dataclass(frozen=True)
class FeatureRow:
    """One result row: the features of one entity as of ``event_time_ms``."""

    entity_key: str
    event_time_ms: int
    features: dict[str, Any]
    per_feature_times: bool
    last_values: bool
    advances_watermark: bool

    @classmethod
    def parse(cls, payload: bytes) -> FeatureRow:
        row = json.loads(payload)
        return cls(entity_key=row["e"], event_time_ms=int(row["t"]), features=row["f"],
                   per_feature_times=bool(row["p"]), last_values=bool(row["l"]),
                   advances_watermark=bool(row["w"]))


def parse_topic(topic: str) -> tuple[str, str]:
    """``fp.features.{view}.{namespace}`` → (view, namespace)."""
    view, _, namespace = topic.removeprefix(RESULT_TOPIC_PREFIX).rpartition(".")
    return view, namespace


class RedisFeatureStore:
    """Applies feature rows to the online store layout (CONTRACT.md §6)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._apply_row = client.register_script(_APPLY_ROW)
        self._advance_meta = client.register_script(_ADVANCE_META)

    def apply(self, batches: dict[tuple[str, str], list[FeatureRow]]) -> None:
        """Apply rows of several (view, namespace) pairs in one pipelined round trip."""
        pipeline = self.client.pipeline(transaction=False)
        now_ms = str(int(time.time() * 1000))
        for (view, namespace), rows in batches.items():
            for row in rows:
                args: list[Any] = [row.event_time_ms, int(row.per_feature_times),
                                   int(row.last_values)]
                for name, value in row.features.items():
                    args += [name, json.dumps(value)]
                self._apply_row(keys=[feature_key(view, namespace, row.entity_key)], args=args,
                                client=pipeline)
            watermark = max((r.event_time_ms for r in rows if r.advances_watermark), default=-1)
            self._advance_meta(keys=[meta_key(view, namespace)],
                               args=[watermark, len(rows), now_ms], client=pipeline)
        try:
            pipeline.execute()
        except redis.RedisError as error:
            raise InfrastructureError(f"writing features to Redis failed: {error}") from error


class ResultTopicWriter:
    """Consumes every result topic and keeps Redis up to date; stop with :meth:`stop`."""

    def __init__(self, bootstrap_servers: str, redis_url: str, group: str = WRITER_GROUP,
                 batch_size: int = 5000) -> None:
        self.store = RedisFeatureStore(redis.Redis.from_url(redis_url))
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
        """Apply one batch; the number of rows written."""
        messages = self._consumer.consume(self.batch_size, timeout=timeout)
        batches = _group_rows(messages)
        if not batches:
            return 0
        self.store.apply(batches)
        self._consumer.commit(asynchronous=False)
        return sum(len(rows) for rows in batches.values())


def _group_rows(messages: Sequence[Message]) -> dict[tuple[str, str], list[FeatureRow]]:
    batches: dict[tuple[str, str], list[FeatureRow]] = defaultdict(list)
    for message in _without_errors(messages):
        try:
            row = FeatureRow.parse(message.value() or b"")
        except (ValueError, KeyError, TypeError) as error:
            # Only Flink jobs write here; a bad row is a bug, logged rather than fatal.
            logger.error("skipping malformed row at %s[%s]@%s: %s", message.topic(),
                         message.partition(), message.offset(), error)
            continue
        batches[parse_topic(message.topic() or "")].append(row)
    return batches


def _without_errors(messages: Iterable[Message]) -> Iterable[Message]:
    for message in messages:
        error = message.error()
        if error is None:
            yield message
        elif error.code() != KafkaError._PARTITION_EOF:
            logger.warning("result topic consumer: %s", error)

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
from typing import Any, cast

import msgspec
import redis
from confluent_kafka import Consumer, KafkaError, Message

from core.domain.layout import (
    FETCH_WAIT_MS,
    RESULT_TOPIC_PREFIX,
    WRITER_GROUP,
    feature_key,
    meta_key,
)
from core.errors import InfrastructureError

logger = logging.getLogger(__name__)

OLDEST_TIME_REFRESH_MS = 10_000
"""How often (in event time) the writer recomputes a hash's ``__ts_min`` exactly; in between it
is a lower bound that may lag behind.  Serving reads per-feature times only for rows whose
bound is too old to rule out an expired value."""

# Applies many rows in one call (a script call per row cost more than the row itself).
# KEYS: the feature hash of each row.  ARGV, row after row in KEYS order: event time, mode
# (0: one time for the row; 1: a time per feature; 2: a time per feature and a last-values row,
# whose nulls are skipped), feature count n, the n feature names, then their n values.
# Returns the number of rows that changed something.
_APPLY_ROWS = """
local function hset(key, fields)
  for i = 1, #fields, 4000 do
    redis.call('HSET', key, unpack(fields, i, math.min(i + 3999, #fields)))
  end
end
local function hmget(key, fields)
  local values = {}
  for i = 1, #fields, 4000 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 3999, #fields)))
    for j = 1, #part do values[#values + 1] = part[j] end
  end
  return values
end
local OLDEST_REFRESH = {oldest_refresh_ms}
local a, applied = 1, 0
for k = 1, #KEYS do
  local key, time, mode, n = KEYS[k], ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local t, first, last = tonumber(time), a + 3, a + 2 + n
  a = last + n + 1
  if mode == '0' then
    local current = redis.call('HGET', key, '__ts')
    if (not current) or tonumber(current) <= t then
      local fields = {}
      for i = first, last do
        fields[#fields + 1] = ARGV[i]
        fields[#fields + 1] = ARGV[i + n]
      end
      fields[#fields + 1] = '__ts'
      fields[#fields + 1] = time
      hset(key, fields)
      applied = applied + 1
    end
  else
    local held = redis.call('HMGET', key, '__ts', '__ts_min', '__ts_min_at')
    local newest, oldest, oldest_at = held[1], held[2], held[3]
    local fields, written = {}, {}
    if newest and tonumber(newest) <= t then
      -- Every feature time of a hash is at most its __ts (this script keeps it so): all pass.
      for i = first, last do
        if not (mode == '2' and ARGV[i + n] == 'null') then
          fields[#fields + 1] = ARGV[i]
          fields[#fields + 1] = ARGV[i + n]
          fields[#fields + 1] = '__ts:' .. ARGV[i]
          fields[#fields + 1] = time
          written[ARGV[i]] = true
        end
      end
    else
      local names, times = {}, {}
      for i = first, last do
        if not (mode == '2' and ARGV[i + n] == 'null') then
          names[#names + 1] = i
          times[#times + 1] = '__ts:' .. ARGV[i]
        end
      end
      local previous = hmget(key, times)
      for j = 1, #names do
        if (not previous[j]) or tonumber(previous[j]) <= t then
          local i = names[j]
          fields[#fields + 1] = ARGV[i]
          fields[#fields + 1] = ARGV[i + n]
          fields[#fields + 1] = times[j]
          fields[#fields + 1] = time
          written[ARGV[i]] = true
        end
      end
    end
    if #fields > 0 then
      if (not newest) or tonumber(newest) < t then
        fields[#fields + 1] = '__ts'
        fields[#fields + 1] = time
      end
      -- __ts_min: a lower bound of the per-feature times, exact when computed (from the times
      -- the row leaves in place, and its own), then refreshed every OLDEST_REFRESH ms of event
      -- time.  Times only move forward, so in between it can only fall behind, never ahead.
      if (not oldest_at) or t - tonumber(oldest_at) >= OLDEST_REFRESH then
        local low, low_text, all = t, time, redis.call('HGETALL', key)
        for i = 1, #all, 2 do
          if string.sub(all[i], 1, 5) == '__ts:' and not written[string.sub(all[i], 6)] then
            local value = tonumber(all[i + 1])
            if value and value < low then low, low_text = value, all[i + 1] end
          end
        end
        fields[#fields + 1] = '__ts_min'
        fields[#fields + 1] = low_text
        fields[#fields + 1] = '__ts_min_at'
        fields[#fields + 1] = time
      elseif t < tonumber(oldest) then  -- a feature's first time, older than the bound
        fields[#fields + 1] = '__ts_min'
        fields[#fields + 1] = time
      end
      hset(key, fields)
      applied = applied + 1
    end
  end
end
return applied
""".replace("{oldest_refresh_ms}", str(OLDEST_TIME_REFRESH_MS))
ROWS_PER_CALL = 100
"""Rows per script call.  Redis runs one call at a time, so this bounds how long a write
holds up readers (≈ 1.5 ms at ≈ 14 µs a row of 10 features); 100 already saves the per-call
overhead (Redis CPU a row is the same from 50 to 500; 1000 is slower, and doubles p99 reads)."""

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
        try:
            r = _decode_row(payload)
        except msgspec.DecodeError:
            # Not the exact shape ("t" a float or string, …) or not JSON: the general path,
            # which accepts what it always accepted and raises ValueError/KeyError otherwise.
            row = json.loads(payload)
            return cls(entity_key=row["e"], event_time_ms=int(row["t"]), features=row["f"],
                       per_feature_times=bool(row["p"]), last_values=bool(row["l"]),
                       advances_watermark=bool(row["w"]))
        return cls(r.e, r.t, r.f, r.p, r.l, r.w)


class _ResultRow(msgspec.Struct):
    """The result row exactly as the compiler writes it, decoded in one C call."""

    e: str
    t: int
    f: dict[str, Any]
    p: bool
    l: bool  # noqa: E741 - the compiler's field name
    w: bool


_decode_row = msgspec.json.Decoder(_ResultRow).decode


def _json_values(values: list[Any]) -> list[str]:
    """``[json.dumps(v) for v in values]``, byte for byte, in one call of the C encoder: the
    list's text split at its separators.  When a value's own text holds a separator (a
    string with ", ", a container), the pieces do not add up and each value is encoded alone."""
    if not values:
        return []
    pieces = json.dumps(values)[1:-1].split(", ")
    return pieces if len(pieces) == len(values) else [json.dumps(v) for v in values]


def _row_arguments(rows: Sequence[FeatureRow]) -> list[Any]:
    """ARGV of :data:`_APPLY_ROWS` for ``rows``."""
    values = _json_values([v for row in rows for v in row.features.values()])
    args: list[Any] = []
    extend, position = args.extend, 0
    for row in rows:
        features, count = row.features, len(row.features)
        mode = (2 if row.last_values else 1) if row.per_feature_times else 0
        extend((row.event_time_ms, mode, count))
        extend(features)
        extend(values[position:position + count])
        position += count
    return args


def parse_topic(topic: str) -> tuple[str, str]:
    """``fp.features.{view}.{namespace}`` → (view, namespace)."""
    view, _, namespace = topic.removeprefix(RESULT_TOPIC_PREFIX).rpartition(".")
    return view, namespace


class RedisFeatureStore:
    """Applies feature rows to the online store layout (docs/reference.md)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._apply_rows = client.register_script(_APPLY_ROWS)
        self._advance_meta = client.register_script(_ADVANCE_META)

    def apply(self, batches: dict[tuple[str, str], list[FeatureRow]]) -> None:
        """Apply rows of several (view, namespace) pairs in one pipelined round trip.

        The script calls stream out on one connection as they are encoded, so Redis runs a
        call while the next one is being built; every reply is read at the end."""
        now_ms = str(int(time.time() * 1000))
        try:
            self._load_scripts()
            errors = self._send_and_read(batches, now_ms)
        except redis.RedisError as error:
            raise InfrastructureError(f"writing features to Redis failed: {error}") from error
        if errors:
            raise InfrastructureError(f"writing features to Redis failed: {errors[0]}")

    def _load_scripts(self) -> None:
        """What a redis-py pipeline does before it runs: load the scripts Redis lacks."""
        scripts = (self._apply_rows, self._advance_meta)
        present = cast(list[bool], self.client.script_exists(*(s.sha for s in scripts)))
        for script, exists in zip(scripts, present, strict=True):
            if not exists:
                script.sha = cast(str, self.client.script_load(script.script))

    def _send_and_read(self, batches: dict[tuple[str, str], list[FeatureRow]], now_ms: str,
                       ) -> list[redis.ResponseError]:
        pool = self.client.connection_pool
        connection = pool.get_connection()
        calls, errors = 0, []
        try:
            for (view, namespace), rows in batches.items():
                for start in range(0, len(rows), ROWS_PER_CALL):
                    chunk = rows[start:start + ROWS_PER_CALL]
                    keys = [feature_key(view, namespace, r.entity_key) for r in chunk]
                    # No health check (a PING) once replies are pending: it would read theirs.
                    connection.send_command("EVALSHA", self._apply_rows.sha, len(keys), *keys,
                                            *_row_arguments(chunk), check_health=calls == 0)
                    calls += 1
                watermark = max((r.event_time_ms for r in rows if r.advances_watermark),
                                default=-1)
                connection.send_command("EVALSHA", self._advance_meta.sha, 1,
                                        meta_key(view, namespace), watermark, len(rows), now_ms,
                                        check_health=calls == 0)
                calls += 1
            for _ in range(calls):
                try:
                    connection.read_response()
                except redis.ResponseError as error:  # the other replies are still read
                    errors.append(error)
        except BaseException:
            connection.disconnect()  # replies left unread would answer the next command
            raise
        finally:
            pool.release(connection)
        return errors


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

"""The composition root of the online store's processes: the Redis writer, the key-layout
migration."""

from __future__ import annotations

from core.settings import Settings
from sinks.online_store import RedisOnlineStore
from sinks.redis_writer import ResultTopicWriter


def build(settings: Settings) -> ResultTopicWriter:
    """The writer applying every job's result rows to the online store's Redis."""
    return ResultTopicWriter(settings.require_kafka_bootstrap(), settings.require_redis_url())


def online_store(settings: Settings) -> RedisOnlineStore:
    return RedisOnlineStore(settings.require_redis_url())

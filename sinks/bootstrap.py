"""The Redis writer's composition root."""

from __future__ import annotations

from core.settings import Settings
from sinks.redis_writer import ResultTopicWriter


def build(settings: Settings) -> ResultTopicWriter:
    """The writer applying every job's result rows to the online store's Redis."""
    return ResultTopicWriter(settings.require_kafka_bootstrap(), settings.require_redis_url())

"""How materialised features are keyed and typed (docs/reference.md, "Online store layout").

The stream sink writes and the serving API reads through these functions only, so the two
can never disagree on a key, an entity key encoding or the type of a feature value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from core.domain.definitions import (
    Aggregation,
    Entity,
    Feature,
    FeatureView,
    Kind,
    Source,
    ValueType,
)

VERSIONS_CHANNEL = "fp:versions"
ACTIVE_FIELD = "active"
# Reserved fields start with "__": no feature can take them, since names start with a letter.
EVENT_TIME_FIELD = "__ts"
OLDEST_TIME_FIELD = "__ts_min"
"""In hashes with per-feature times: a lower bound of them (never above the oldest), so that
a reader can tell that no value is expired from one field instead of one per feature."""
OLDEST_TIME_AT_FIELD = "__ts_min_at"
"""The row time at which ``__ts_min`` was last computed exactly."""
ENTITY_KEY_SEPARATOR = "|"


RESULT_TOPIC_PREFIX = "fp.features."


def namespace_of(version: int) -> str:
    return f"v{version}"


def result_topic(view: str, namespace: str) -> str:
    """The Kafka topic a materialisation job writes its feature rows to."""
    return f"{RESULT_TOPIC_PREFIX}{view}.{namespace}"


STATISTICS_TOPIC_PREFIX = "fp.statistics."


def statistics_topic(view: str, namespace: str) -> str:
    """The Kafka topic a materialisation job writes its drift statistics to."""
    return f"{STATISTICS_TOPIC_PREFIX}{view}.{namespace}"


def parse_statistics_topic(topic: str) -> tuple[str, str]:
    """``fp.statistics.{view}.{namespace}`` → (view, namespace)."""
    view, _, namespace = topic.removeprefix(STATISTICS_TOPIC_PREFIX).rpartition(".")
    return view, namespace


MONITOR_GROUP = "fp-drift-monitor"
"""The consumer group of the drift monitor's leader on the statistics topics."""

WRITER_GROUP = "fp-redis-writer"
"""The consumer group of every Redis writer (they share the result topics' partitions)."""

FETCH_WAIT_MS = 50
"""How long the pipeline's consumers (the jobs on their source topics, the writer on result
topics) let the broker hold an empty fetch.  Brokers that answer one only when the wait runs
out (Tansu does) would otherwise add up to the default 500 ms to every row's freshness."""


def source_group(view: str, namespace: str) -> str:
    """The Kafka consumer group a job reads its source with (its progress is visible)."""
    return f"fp.{view}.{namespace}"


def job_name(view: str, namespace: str) -> str:
    return f"fp:{view}:{namespace}"


def job_id(view: str, namespace: str, deployment: int = 0) -> str:
    """A deterministic Flink job id (32 hex): resubmitting the same deployment after a crash
    finds the job it already started instead of starting a second one."""
    return hashlib.sha256(f"{view}/{namespace}/{deployment}".encode()).hexdigest()[:32]


RESERVED_SEGMENT_MARK = "_"
"""The first character of the second segment of every key that is not a feature hash
(``fp:_meta:…``, ``fp:_versions:…``).  View names start with a letter, so no view's
feature hashes — nor the ``fp:{view}:{namespace}:*`` pattern a purge deletes — can reach
another kind's keys, whatever the view is called."""
META_SEGMENT = f"{RESERVED_SEGMENT_MARK}meta"
VERSIONS_SEGMENT = f"{RESERVED_SEGMENT_MARK}versions"


def feature_key(view: str, namespace: str, entity_key: str) -> str:
    """``fp:{view}:{namespace}:{entity_key}``.  Neither a view name nor a namespace (``v{N}``)
    holds a ``:``, so the first three segments alone tell a hash's view and namespace."""
    return f"fp:{view}:{namespace}:{entity_key}"


def versions_key(view: str) -> str:
    return f"fp:{VERSIONS_SEGMENT}:{view}"


def meta_key(view: str, namespace: str) -> str:
    return f"fp:{META_SEGMENT}:{view}:{namespace}"


def feature_time_field(feature: str) -> str:
    """Per-feature event time, written when a view's windows close at different times."""
    return f"{EVENT_TIME_FIELD}:{feature}"


def encode_entity_key(values: Sequence[str]) -> str:
    """Join-key values joined by ``|``; ``\\`` and ``|`` inside a value are escaped with ``\\``
    so that ('a|b', 'c') and ('a', 'b|c') never share a key."""
    return ENTITY_KEY_SEPARATOR.join(
        v.replace("\\", "\\\\").replace(ENTITY_KEY_SEPARATOR, "\\" + ENTITY_KEY_SEPARATOR)
        for v in values)


def decode_entity_key(entity_key: str) -> list[str]:
    """The join-key values of an encoded entity key: the inverse of ``encode_entity_key``."""
    values, current, escaped = [], [], False
    for char in entity_key:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ENTITY_KEY_SEPARATOR:
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return values


def view_join_keys(view: FeatureView, catalog: Mapping[str, object]) -> tuple[str, ...]:
    """The view's key columns: each entity's join keys, entities in the view's order."""
    keys: list[str] = []
    for name in view.entities:
        entity = catalog[f"{Kind.ENTITY}:{name}"]
        assert isinstance(entity, Entity), f"validated views reference entities, not {entity!r}"
        keys.extend(k for k in entity.join_keys if k not in keys)
    return tuple(keys)


_DOUBLE_AGGREGATIONS = {Aggregation.AVG, Aggregation.STDDEV}


def output_type(feature: Feature, source: Source) -> ValueType:
    """The type of the value a feature yields (what serving decodes it to)."""
    if feature.aggregation is Aggregation.COUNT:
        return ValueType.LONG
    if feature.aggregation in _DOUBLE_AGGREGATIONS:
        return ValueType.DOUBLE
    column = source.field_named(feature.column or "")
    assert column is not None, "validated features aggregate a column of their source"
    if feature.aggregation is Aggregation.SUM:
        return ValueType.DOUBLE if column.type in {ValueType.DOUBLE, ValueType.FLOAT} \
            else ValueType.LONG
    return column.type

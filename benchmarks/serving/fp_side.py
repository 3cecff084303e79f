"""The platform side of the benchmark: definitions registered in a real registry (on a
throwaway database), the same values written to Redis in the online-store layout, and
the serving API started as ``fp serving serve`` would start it (one worker, no access log).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.serving.shape import FEATURES_PER_VIEW, VIEWS, Shape
from core.domain.layout import (
    ACTIVE_FIELD,
    EVENT_TIME_FIELD,
    OLDEST_TIME_AT_FIELD,
    OLDEST_TIME_FIELD,
    VERSIONS_CHANNEL,
    feature_key,
    feature_time_field,
    namespace_of,
    versions_key,
)
from registry.store.migrate import upgrade_to_head

WRITE_CHUNK = 5_000


def definitions(one_window: bool) -> list[dict[str, Any]]:
    """``one_window``: every feature aggregates over the same 1 h window (one event time per
    view, like Feast's model); else ten windows of 1..10 h, whose values carry their own
    event times (21 fields read per entity and view instead of 11)."""
    entity = {"kind": "entity", "name": "user", "join_keys": ["user_id"]}
    source = {"kind": "source", "name": "bench_events", "topic": "bench_events",
              "timestamp_field": "ts",
              "schema": [{"name": "user_id", "type": "string", "required": True},
                         {"name": "amount", "type": "double"},
                         {"name": "ts", "type": "long", "required": True}]}
    views = [{"kind": "feature_view", "name": view, "entities": ["user"],
              "source": "bench_events", "ttl": "30d",
              "features": [{"name": f"f{j}", "aggregation": "sum", "column": "amount",
                            "window": "1h" if one_window else f"{j + 1}h"}
                           for j in range(FEATURES_PER_VIEW)]}
             for view in VIEWS]
    return [entity, source, *views]


@contextmanager
def throwaway_database(server_url: str) -> Iterator[str]:
    name = "fp_bench_serving"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    upgrade_to_head(url)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def register(registry_url: str, one_window: bool) -> None:
    response = httpx.post(f"{registry_url}/v1/apply",
                          json={"definitions": definitions(one_window)}, timeout=60)
    response.raise_for_status()


def _shape_key() -> str:
    return f"fp:{VIEWS[0]}:benchmark-shape"


def _shape_label(shape: Shape, one_window: bool) -> str:
    return f"{shape.entities}:{'one' if one_window else 'several'}:oldest"


def written_before(redis_url: str, shape: Shape, one_window: bool) -> bool:
    """Whether a previous run with ``--keep-data`` left exactly this data."""
    client = redis.Redis.from_url(redis_url)
    try:
        return client.get(_shape_key()) == _shape_label(shape, one_window).encode()
    finally:
        client.close()


def write_online_store(redis_url: str, shape: Shape, one_window: bool) -> None:
    """Every value with its event time — per feature too when the windows differ, and then
    the oldest of them, as the sink writes it — then version 1 made active."""
    client = redis.Redis.from_url(redis_url)
    remove_online_store(redis_url)
    namespace = namespace_of(1)
    times: dict[str, int] = {EVENT_TIME_FIELD: shape.event_millis}
    if not one_window:
        times.update({feature_time_field(f"f{j}"): shape.event_millis
                      for j in range(FEATURES_PER_VIEW)})
        times.update({OLDEST_TIME_FIELD: shape.event_millis,
                      OLDEST_TIME_AT_FIELD: shape.event_millis})
    pipeline = client.pipeline(transaction=False)
    for view_index, view in enumerate(VIEWS):
        for entity in range(shape.entities):
            values = {f"f{j}": repr(shape.value(entity, view_index, j))
                      for j in range(FEATURES_PER_VIEW)}
            pipeline.hset(feature_key(view, namespace, f"u{entity}"), mapping={**values, **times})
            if len(pipeline) >= WRITE_CHUNK:
                pipeline.execute()
    pipeline.execute()
    for view in VIEWS:
        client.hset(versions_key(view), mapping={ACTIVE_FIELD: 1, "1": namespace})
        client.publish(VERSIONS_CHANNEL, view)
    client.set(_shape_key(), _shape_label(shape, one_window))
    client.close()


def remove_online_store(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for view in VIEWS:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"fp:{view}:*", count=5_000):
            batch.append(key)
            if len(batch) >= WRITE_CHUNK:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
        client.delete(versions_key(view))
    client.close()


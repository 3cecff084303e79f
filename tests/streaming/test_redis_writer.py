"""The writer's Lua against a real Redis: random row histories (several window groups, `last`
rows with nulls, replays, rows out of order) leave exactly what a plain model of the rules
says — per feature the value of its newest row, `__ts` the newest time — and `__ts_min` never
above the oldest per-feature time (serving trusts it to rule out expired values), exact once
recomputed."""

from __future__ import annotations

import json
import random
from typing import Any, cast

import redis

from core.domain.layout import (
    EVENT_TIME_FIELD,
    OLDEST_TIME_AT_FIELD,
    OLDEST_TIME_FIELD,
    feature_key,
    feature_time_field,
)
from sinks.online_store import OLDEST_TIME_REFRESH_MS, FeatureRow, RedisOnlineStore

VIEW, NAMESPACE = "writer_model", "v1"
GROUPS = [("a", "b"), ("c",), ("d", "e")]
LAST = ("channel",)


def random_row(rng: random.Random, entity: str) -> FeatureRow:
    time = rng.randrange(1_000, 1_060) * 1_000
    if rng.random() < 0.25:
        value = rng.choice([None, "web", "app"])
        return FeatureRow(entity, time, {"channel": value}, per_feature_times=True,
                          last_values=True, advances_watermark=False)
    group = rng.choice(GROUPS)
    return FeatureRow(entity, time, {name: rng.randrange(100) for name in group},
                      per_feature_times=True, last_values=False, advances_watermark=True)


def stored_hash(client: redis.Redis, key: str) -> dict[str, str]:
    return cast(dict[str, str], client.hgetall(key))


def model(rows: list[FeatureRow]) -> dict[str, dict[str, Any]]:
    """Per entity, per feature: (time, value) of its newest row; ties go to the later row."""
    state: dict[str, dict[str, tuple[int, Any]]] = {}
    for row in rows:
        held = state.setdefault(row.entity_key, {})
        for name, value in row.features.items():
            if row.last_values and value is None:
                continue
            if name not in held or held[name][0] <= row.event_time_ms:
                held[name] = (row.event_time_ms, value)
    return state


def test_random_histories_match_the_model_and_keep_the_oldest_time(
        stream_redis: redis.Redis, stream_redis_url: str) -> None:
    rng = random.Random(11)
    store = RedisOnlineStore(stream_redis_url)
    entities = [f"e{i}" for i in range(40)]
    history: list[FeatureRow] = []
    for _ in range(30):
        batch = [random_row(rng, rng.choice(entities)) for _ in range(rng.randrange(1, 120))]
        batch += rng.sample(history, min(len(history), rng.randrange(0, 10)))  # replays
        history += batch
        store.apply({(VIEW, NAMESPACE): batch})

    def check(exact: bool) -> int:
        checked = 0
        for entity, features in model(history).items():
            stored = stored_hash(stream_redis, feature_key(VIEW, NAMESPACE, entity))
            times = {name: time for name, (time, _) in features.items()}
            assert {name: stored[name] for name in features} == {
                name: json.dumps(value) for name, (_, value) in features.items()}
            assert {name: int(stored[feature_time_field(name)]) for name in features} == times
            assert int(stored[EVENT_TIME_FIELD]) == max(times.values())
            oldest = int(stored[OLDEST_TIME_FIELD])
            assert oldest == min(times.values()) if exact else oldest <= min(times.values())
            checked += 1
        return checked

    assert check(exact=False) == len(entities)
    # A row more than the refresh interval after every other recomputes the bound exactly.
    later = OLDEST_TIME_REFRESH_MS + max(row.event_time_ms for row in history)
    final = [FeatureRow(entity, later, {"c": 1}, True, False, True) for entity in entities]
    history += final
    store.apply({(VIEW, NAMESPACE): final})
    assert check(exact=True) == len(entities)
    assert {int(stored_hash(stream_redis, feature_key(VIEW, NAMESPACE, entity))[
        OLDEST_TIME_AT_FIELD]) for entity in entities} == {later}


def test_a_hash_written_before_the_oldest_time_existed_gets_it_on_its_next_row(
        stream_redis: redis.Redis, stream_redis_url: str) -> None:
    key = feature_key(VIEW, NAMESPACE, "legacy")
    stream_redis.hset(key, mapping={"a": "1", feature_time_field("a"): 5_000,
                                    "d": "2", feature_time_field("d"): 9_000,
                                    EVENT_TIME_FIELD: 9_000})
    store = RedisOnlineStore(stream_redis_url)
    store.apply({(VIEW, NAMESPACE): [FeatureRow("legacy", 10_000, {"c": 3}, True, False, True)]})
    stored = stored_hash(stream_redis, key)
    assert (stored[OLDEST_TIME_FIELD], stored[OLDEST_TIME_AT_FIELD]) == ("5000", "10000")

"""One contract for the online store, held by the Redis adapter (a real Redis started for the
session) and the in-memory fake alike: rows written are read back as serving decodes them,
re-applying rows changes nothing, progress is kept per namespace, a version map switch is
atomic and announced, a purge deletes a namespace but never the active one, nor any key of
another view or kind whatever the views are called — and on random row histories the fake
leaves exactly the hashes the writer's Lua script leaves in Redis.  The Redis adapter alone
moves a store of the first key layout to the current one."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.domain.definitions import NAME_PATTERN
from core.domain.layout import (
    EVENT_TIME_FIELD,
    OLDEST_TIME_AT_FIELD,
    OLDEST_TIME_FIELD,
    feature_key,
    feature_time_field,
    meta_key,
    namespace_of,
    versions_key,
)
from core.errors import InfrastructureError
from fp.local.base import free_port
from sinks.online_memory import InMemoryOnlineStore
from sinks.online_store import (
    OLDEST_TIME_REFRESH_MS,
    FeatureRow,
    HashRead,
    KeyMigration,
    NamespaceProgress,
    OnlineStore,
    RedisOnlineStore,
    VersionMap,
)

SWITCH_NOTICE_SECONDS = 5
TIME_FIELDS = (EVENT_TIME_FIELD, OLDEST_TIME_FIELD, OLDEST_TIME_AT_FIELD)


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop per test: the Redis adapter's connections belong to the loop that
    opened them."""
    with asyncio.Runner() as runner:
        yield runner


OWN_DATABASE = 1
"""The Redis database of tests that write keys of any name and empty it between examples
(database 0 holds the other tests' keys)."""


def open_store(kind: str, request: pytest.FixtureRequest) -> OnlineStore:
    if kind == "redis":
        return RedisOnlineStore(request.getfixturevalue("stream_redis_url"))
    return InMemoryOnlineStore()


def own_database_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("stream_redis_url")
    return f"{url.rpartition('/')[0]}/{OWN_DATABASE}"


def open_empty_store(kind: str, request: pytest.FixtureRequest) -> OnlineStore:
    """A store holding no key at all."""
    if kind == "memory":
        return InMemoryOnlineStore()
    url = own_database_url(request)
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return RedisOnlineStore(url)


@pytest.fixture(params=["redis", "memory"])
def store(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Iterator[OnlineStore]:
    opened = open_store(request.param, request)
    yield opened
    runner.run(opened.close())


@pytest.fixture
def view() -> str:
    """A view of this test alone: the Redis of the session outlives every test."""
    return f"contract_{uuid.uuid4().hex[:8]}"


def row(entity: str, time_ms: int, features: dict[str, Any], *, per_feature: bool = False,
        last: bool = False, advances: bool = True) -> FeatureRow:
    return FeatureRow(entity, time_ms, features, per_feature_times=per_feature,
                      last_values=last, advances_watermark=advances)


def read(runner: asyncio.Runner, store: OnlineStore, view: str, namespace: str,
         entities: list[str], fields: tuple[str, ...]) -> list[dict[str, str]]:
    """The fields each entity's hash holds, as serving reads them (absent ones left out)."""
    def decoded(_: int, rows: list[list[bytes | None]]) -> list[dict[str, str]]:
        return [{name: value.decode() for name, value in zip(fields, raw, strict=True)
                 if value is not None} for raw in rows]

    reads = [HashRead(feature_key(view, namespace, ""), [e.encode() for e in entities], fields)]
    [rows] = runner.run(store.read_hashes(reads, decoded))
    return rows


async def next_switch(switches: AsyncIterator[str], view: str) -> str:
    """The next switch of ``view`` (the Redis of the session is shared with other tests)."""
    async with asyncio.timeout(SWITCH_NOTICE_SECONDS):
        while (switched := await anext(switches)) != view:
            pass
    return switched


def test_rows_are_read_back_with_the_times_serving_checks(
        runner: asyncio.Runner, store: OnlineStore, view: str) -> None:
    store.apply({(view, "v1"): [
        row("one_time", 5_000, {"clicks": 3, "channel": "web"}),
        row("per_feature", 5_000, {"a": 1.5, "b": None}, per_feature=True),
        row("per_feature", 7_000, {"c": 2}, per_feature=True),
        row("last", 6_000, {"channel": "app"}, per_feature=True, last=True),
        row("last", 8_000, {"channel": None}, per_feature=True, last=True),
    ]})
    fields = ("clicks", "channel", "a", "b", "c", feature_time_field("a"),
              feature_time_field("c"), feature_time_field("channel"), *TIME_FIELDS)
    one_time, per_feature, last, missing = read(
        runner, store, view, "v1", ["one_time", "per_feature", "last", "missing"], fields)
    assert one_time == {"clicks": "3", "channel": '"web"', EVENT_TIME_FIELD: "5000"}
    assert per_feature == {"a": "1.5", "b": "null", "c": "2", feature_time_field("a"): "5000",
                           feature_time_field("c"): "7000", EVENT_TIME_FIELD: "7000",
                           OLDEST_TIME_FIELD: "5000", OLDEST_TIME_AT_FIELD: "5000"}
    # A null of a last-values row is "no value yet": the value held stays, and so does its time.
    assert last == {"channel": '"app"', feature_time_field("channel"): "6000",
                    EVENT_TIME_FIELD: "6000", OLDEST_TIME_FIELD: "6000",
                    OLDEST_TIME_AT_FIELD: "6000"}
    assert missing == {}
    assert read(runner, store, view, "v2", ["one_time"], fields) == [{}]


def test_rows_applied_again_or_late_change_nothing_but_the_row_count(
        runner: asyncio.Runner, store: OnlineStore, view: str) -> None:
    batch = [row("u1", 9_000, {"clicks": 4}), row("u2", 9_000, {"a": 1}, per_feature=True),
             row("u2", 9_500, {"b": 2}, per_feature=True)]
    late = [row("u1", 8_000, {"clicks": 1}), row("u2", 9_200, {"b": 0}, per_feature=True),
            row("u2", 100, {"a": 7}, per_feature=True)]
    fields = ("clicks", "a", "b", feature_time_field("a"), feature_time_field("b"), *TIME_FIELDS)
    store.apply({(view, "v1"): batch})
    written = read(runner, store, view, "v1", ["u1", "u2"], fields)
    store.apply({(view, "v1"): batch})
    store.apply({(view, "v1"): late})
    assert read(runner, store, view, "v1", ["u1", "u2"], fields) == written
    assert store.progress(view, "v1").rows == len(batch) * 2 + len(late)


def test_progress_counts_rows_and_only_ever_advances_the_watermark(
        store: OnlineStore, view: str) -> None:
    assert store.progress(view, "v1") == NamespaceProgress(None, 0, None)
    before = int(time.time() * 1000)
    store.apply({(view, "v1"): [row("u1", 4_000, {"x": 1}, advances=False)]})
    assert store.progress(view, "v1").watermark is None
    store.apply({(view, "v1"): [row("u1", 5_000, {"x": 1}), row("u2", 7_000, {"x": 2}),
                                row("u3", 9_000, {"x": 3}, advances=False)]})
    store.apply({(view, "v1"): [row("u1", 6_000, {"x": 4})]})
    progress = store.progress(view, "v1")
    assert (progress.watermark, progress.rows) == (7_000, 5)
    assert progress.updated_at_ms is not None
    assert before <= progress.updated_at_ms <= int(time.time() * 1000)
    assert store.progress(view, "v2") == NamespaceProgress(None, 0, None)


def test_a_switch_replaces_the_whole_map_and_is_announced(
        runner: asyncio.Runner, store: OnlineStore, view: str) -> None:
    async def switch_and_watch() -> None:
        switches = store.version_switches()
        assert await anext(switches) == ""  # subscribed: re-read every map
        assert await store.version_maps([view]) == {view: None}
        store.switch(view, 1, {1: "v1"})
        assert await next_switch(switches, view) == view
        assert await store.version_maps([view]) == {view: VersionMap(1, {1: "v1"})}
        store.switch(view, 3, {2: "v2", 3: "v2"})
        assert await next_switch(switches, view) == view
        assert await store.version_maps([view]) == {view: VersionMap(3, {2: "v2", 3: "v2"})}
        await switches.aclose()

    runner.run(switch_and_watch())


def test_a_reader_sees_one_map_or_the_next_never_a_mix_or_none(
        runner: asyncio.Runner, store: OnlineStore, view: str) -> None:
    maps = [(1, {1: "v1"}), (2, {1: "v1", 2: "v2"}), (3, {3: "v3"})]
    store.switch(view, *maps[0])
    done = threading.Event()

    def keep_switching() -> None:
        for turn in range(300):
            store.switch(view, *maps[turn % len(maps)])
        done.set()

    async def read_while_switching() -> list[VersionMap | None]:
        seen: list[VersionMap | None] = []
        while not seen or not done.is_set():
            seen.append((await store.version_maps([view]))[view])
            await asyncio.sleep(0)
        return seen

    switcher = threading.Thread(target=keep_switching)
    switcher.start()
    seen = runner.run(read_while_switching())
    switcher.join()
    whole_maps = [VersionMap(active, namespaces) for active, namespaces in maps]
    assert all(version_map in whole_maps for version_map in seen)


def test_purging_a_namespace_deletes_its_hashes_and_progress_and_unmaps_it(
        runner: asyncio.Runner, store: OnlineStore, view: str) -> None:
    store.apply({(view, "v1"): [row(f"u{n}", 1_000, {"x": n}) for n in range(3)],
                 (view, "v2"): [row("u0", 2_000, {"x": 9})]})
    store.switch(view, 2, {1: "v1", 2: "v2", 3: "v1"})

    async def purge_and_watch() -> int:
        switches = store.version_switches()
        assert await anext(switches) == ""
        deleted = store.clear_namespace(view, "v1")
        assert await next_switch(switches, view) == view
        await switches.aclose()
        return deleted

    assert runner.run(purge_and_watch()) == 3
    assert read(runner, store, view, "v1", ["u0", "u1"], ("x", EVENT_TIME_FIELD)) == [{}, {}]
    assert read(runner, store, view, "v2", ["u0"], ("x",)) == [{"x": "9"}]
    assert runner.run(store.version_maps([view])) == {view: VersionMap(2, {2: "v2"})}
    assert store.progress(view, "v1") == NamespaceProgress(None, 0, None)
    assert store.progress(view, "v2").rows == 1
    assert store.clear_namespace(view, "v1") == 0  # purging again: nothing left to do


def test_the_active_namespace_is_never_purged(
        runner: asyncio.Runner, store: OnlineStore, view: str) -> None:
    store.apply({(view, "v1"): [row("u0", 1_000, {"x": 1})]})
    store.switch(view, 1, {1: "v1"})
    with pytest.raises(InfrastructureError, match="active"):
        store.clear_namespace(view, "v1")
    assert read(runner, store, view, "v1", ["u0"], ("x",)) == [{"x": "1"}]
    assert runner.run(store.version_maps([view])) == {view: VersionMap(1, {1: "v1"})}
    assert store.progress(view, "v1").rows == 1


# Names that spelled another kind's key segment in the first layout, and random ones.
view_names = st.one_of(st.sampled_from(["meta", "versions", "v1", "v2"]),
                       st.from_regex(NAME_PATTERN, fullmatch=True))
Placement = tuple[str, int]
"""A view and the version whose namespace holds its rows."""
UNPURGED_ACTIVE_VERSION = 9


@pytest.mark.parametrize("kind", ["redis", "memory"])
def test_a_purge_never_touches_another_views_or_kinds_keys(
        runner: asyncio.Runner, request: pytest.FixtureRequest, kind: str) -> None:
    """Purging the first placement's namespace leaves every other view's hashes, progress and
    version map, and its own view's other namespaces, as they were."""

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.tuples(view_names, st.integers(min_value=1, max_value=3)),
                    min_size=2, max_size=5, unique=True))
    @example([("meta", 1), ("v1", 2)])  # fp:meta:v1:* once held the progress of v1's v2
    def purge_one(placements: list[Placement]) -> None:
        store = open_empty_store(kind, request)
        try:
            views = sorted({view for view, _ in placements})
            for view, version in placements:
                store.apply({(view, namespace_of(version)): [row("u1", 1_000, {"x": version})]})
            for view in views:
                versions = [version for name, version in placements if name == view]
                store.switch(view, UNPURGED_ACTIVE_VERSION,
                             {v: namespace_of(v) for v in [*versions, UNPURGED_ACTIVE_VERSION]})

            def state(view: str, version: int) -> tuple[object, ...]:
                namespace = namespace_of(version)
                return (read(runner, store, view, namespace, ["u1"], ("x", EVENT_TIME_FIELD)),
                        store.progress(view, namespace).rows)

            maps_before = runner.run(store.version_maps(views))
            before = {placement: state(*placement) for placement in placements}
            (purged_view, purged_version), *kept = placements
            assert store.clear_namespace(purged_view, namespace_of(purged_version)) == 1
            assert state(purged_view, purged_version) == ([{}], 0)
            assert {placement: state(*placement) for placement in kept} == \
                {placement: before[placement] for placement in kept}
            purged_map = maps_before[purged_view]
            assert purged_map is not None
            maps_before[purged_view] = VersionMap(purged_map.active, {
                v: ns for v, ns in purged_map.namespaces.items() if v != purged_version})
            assert runner.run(store.version_maps(views)) == maps_before
        finally:
            runner.run(store.close())

    purge_one()


def test_a_store_of_the_first_layout_moves_to_the_current_one_once(
        runner: asyncio.Runner, request: pytest.FixtureRequest) -> None:
    store = open_empty_store("redis", request)
    assert isinstance(store, RedisOnlineStore)
    progress = {"watermark": "7000", "rows": "12", "updated_at": "9000"}
    first_layout = {
        "fp:meta:clicks:v1": progress,
        "fp:versions:clicks": {"active": "2", "1": "v1", "2": "v1"},
        # Feature hashes of views named meta and versions: each holds __ts, and stays.
        "fp:meta:v1:u1": {"x": "1", EVENT_TIME_FIELD: "5000"},
        "fp:versions:v1:u1": {"x": "2", EVENT_TIME_FIELD: "5000"},
        # Written again by the new release before the migration ran: the current key wins.
        "fp:meta:clicks:v2": {"rows": "1"},
        meta_key("clicks", "v2"): {"rows": "5"},
    }
    with redis.Redis.from_url(own_database_url(request), decode_responses=True) as client:
        for key, fields in first_layout.items():
            client.hset(key, mapping=fields)
        assert store.migrate_key_layout() == KeyMigration(moved=2, superseded=1)
        assert store.migrate_key_layout() == KeyMigration(moved=0, superseded=0)
        assert sorted(client.keys("*")) == sorted([
            meta_key("clicks", "v1"), versions_key("clicks"), meta_key("clicks", "v2"),
            "fp:meta:v1:u1", "fp:versions:v1:u1"])
    assert store.progress("clicks", "v1") == NamespaceProgress(7000, 12, 9000)
    assert store.progress("clicks", "v2").rows == 5
    assert runner.run(store.version_maps(["clicks"])) == {
        "clicks": VersionMap(2, {1: "v1", 2: "v1"})}
    assert read(runner, store, "meta", "v1", ["u1"], ("x",)) == [{"x": "1"}]
    assert read(runner, store, "versions", "v1", ["u1"], ("x",)) == [{"x": "2"}]
    runner.run(store.close())


def test_both_answer_a_ping(runner: asyncio.Runner, store: OnlineStore) -> None:
    assert runner.run(store.ping())


GROUPS = [("a", "b"), ("c",), ("d", "e")]
HISTORY_FIELDS = ("a", "b", "c", "d", "e", "channel", "n",
                  *(feature_time_field(name) for name in ("a", "b", "c", "d", "e", "channel")),
                  *TIME_FIELDS)


def random_row(rng: random.Random, entity: str, start: int) -> FeatureRow:
    """A row of one of the writer's three kinds, at a time that may be out of order."""
    time_ms = start + rng.randrange(0, 3 * OLDEST_TIME_REFRESH_MS, 500)
    kind = rng.random()
    if kind < 0.2:
        return row(entity, time_ms, {"n": rng.randrange(10)})
    if kind < 0.4:
        return row(entity, time_ms, {"channel": rng.choice([None, "web", "app"])},
                   per_feature=True, last=True, advances=False)
    return row(entity, time_ms, {name: rng.randrange(100) for name in rng.choice(GROUPS)},
               per_feature=True)


@pytest.mark.parametrize("seed", [3, 17])
def test_the_fake_leaves_the_hashes_the_lua_script_leaves(
        runner: asyncio.Runner, request: pytest.FixtureRequest, view: str, seed: int) -> None:
    rng = random.Random(seed)
    stores = [open_store("redis", request), open_store("memory", request)]
    entities = [f"e{n}" for n in range(25)]
    history: list[FeatureRow] = []
    for turn in range(20):
        batch = [random_row(rng, rng.choice(entities), turn * 2_000)
                 for _ in range(rng.randrange(1, 60))]
        batch += rng.sample(history, min(len(history), rng.randrange(0, 8)))  # replays
        history += batch
        for store in stores:
            store.apply({(view, "v1"): batch})
    in_redis, in_memory = (read(runner, store, view, "v1", entities, HISTORY_FIELDS)
                           for store in stores)
    assert in_memory == in_redis
    assert [s.progress(view, "v1").rows for s in stores] == [len(history)] * 2
    for store in stores:
        runner.run(store.close())


def test_every_deployer_call_of_an_unreachable_redis_is_an_outage() -> None:
    """The deployer retries an outage and fails a deployment for anything else, so a Redis
    that cannot be reached must never surface as another error."""
    store = RedisOnlineStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    calls = [lambda: store.progress("clicks", "v1"),
             lambda: store.clear_namespace("clicks", "v1"),
             lambda: store.switch("clicks", 1, {1: "v1"}),
             lambda: store.apply({}),
             store.migrate_key_layout]
    for call in calls:
        with pytest.raises(InfrastructureError, match="failed"):
            call()

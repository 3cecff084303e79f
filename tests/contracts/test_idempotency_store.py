"""One contract for the ingest API's idempotency records, held by the Redis adapter (the real
Redis of the session, its claim a Lua script) and the in-memory twin alike: a new key is
claimed, a claimed key is not claimed again, a finished request's answer comes back exactly
as stored, an interrupted request's key is claimed again by the same request only and keeps
what the broker acknowledged, keys expire (Redis's real TTLs, the twin's clock), and of many
concurrent claims of one key exactly one wins."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ingest.idempotency import (
    IdempotencyStore,
    KeyRecord,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    State,
    record_key,
)

LEASE_MS = 60_000
WINDOW_MS = 86_400_000
SHORT_MS = 1_000
"""A lease or a window short enough to watch it end in Redis (the twin's clock moves
instead), long enough not to end between two calls on a loaded machine."""
ANSWER: dict[str, Any] = {
    "accepted": 2, "request_id": "9f0c", "rejected": [
        {"index": 1, "field": "amount", "reason": "below_min",
         "message": "amount: -5 is below the minimum 0"},
        {"index": 3, "field": None, "reason": "not_an_object", "message": "ünïcode ✓"}],
    "nested": {"empty": [], "deeper": {"list": [1, 2.5, True, None], "object": {}}}}


@dataclass
class Subject:
    store: IdempotencyStore
    elapse: Callable[[int], Awaitable[None]]
    """Let ``ms`` milliseconds pass for the store's expiry."""


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    """One event loop per test: the Redis adapter's connections belong to the loop that
    opened them."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(params=["redis", "memory"])
def subject(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Iterator[Subject]:
    if request.param == "redis":
        redis_store = RedisIdempotencyStore(request.getfixturevalue("stream_redis_url"))

        async def sleep(ms: int) -> None:
            await asyncio.sleep(ms / 1000 + 0.05)

        made = Subject(redis_store, sleep)
    else:
        memory_store = MemoryIdempotencyStore()

        async def advance(ms: int) -> None:
            memory_store.now_ms += ms

        made = Subject(memory_store, advance)
    yield made
    runner.run(made.store.close())


@pytest.fixture
def key() -> str:
    """A key of this test alone: the Redis of the session outlives every test."""
    return record_key("contract", "payments", uuid.uuid4().hex)


def test_a_new_key_is_claimed_and_then_running(runner: asyncio.Runner, subject: Subject,
                                               key: str) -> None:
    async def scenario() -> None:
        assert await subject.store.claim(key, "fp-1", LEASE_MS) is None
        running = KeyRecord("fp-1", State.RUNNING)
        assert await subject.store.claim(key, "fp-1", LEASE_MS) == running
        # Another request's claim is not taken either: it learns the key is running.
        assert await subject.store.claim(key, "fp-2", LEASE_MS) == running

    runner.run(scenario())


def test_a_finished_request_answers_again_exactly_as_stored(
        runner: asyncio.Runner, subject: Subject, key: str) -> None:
    async def scenario() -> None:
        assert await subject.store.claim(key, "fp-1", LEASE_MS) is None
        done = KeyRecord("fp-1", State.DONE, status=207, answer=ANSWER)
        await subject.store.finish(key, done, WINDOW_MS)
        for fingerprint in ("fp-1", "fp-2", "fp-1"):  # nothing claims a done key
            assert await subject.store.claim(key, fingerprint, LEASE_MS) == done

        other = record_key("contract", "payments", uuid.uuid4().hex)
        await subject.store.claim(other, "fp-3", LEASE_MS)
        empty = KeyRecord("fp-3", State.DONE, status=200,
                          answer={"accepted": 1, "rejected": [], "request_id": "r"})
        await subject.store.finish(other, empty, WINDOW_MS)
        got = await subject.store.claim(other, "fp-3", LEASE_MS)
        assert got == empty and got.answer is not None and got.answer["rejected"] == []

    runner.run(scenario())


def test_an_interrupted_request_is_claimed_again_by_itself_alone(
        runner: asyncio.Runner, subject: Subject, key: str) -> None:
    async def scenario() -> None:
        assert await subject.store.claim(key, "fp-1", LEASE_MS) is None
        interrupted = KeyRecord("fp-1", State.INTERRUPTED, frozenset({1, 3}))
        await subject.store.finish(key, interrupted, WINDOW_MS)
        # Another body under the key: told what the key holds, and nothing claimed.
        assert await subject.store.claim(key, "fp-2", LEASE_MS) == interrupted
        # The same request again: claimed, the acknowledged records kept for it.
        assert await subject.store.claim(key, "fp-1", LEASE_MS) == interrupted
        again = KeyRecord("fp-1", State.RUNNING, frozenset({1, 3}))
        assert await subject.store.claim(key, "fp-1", LEASE_MS) == again
        assert await subject.store.claim(key, "fp-2", LEASE_MS) == again
        # Interrupted once more, having written more: the key holds it all.
        await subject.store.finish(key, KeyRecord("fp-1", State.INTERRUPTED,
                                                  frozenset({0, 1, 3})), WINDOW_MS)
        assert await subject.store.claim(key, "fp-1", LEASE_MS) == KeyRecord(
            "fp-1", State.INTERRUPTED, frozenset({0, 1, 3}))
        done = KeyRecord("fp-1", State.DONE, status=200, answer=ANSWER)
        await subject.store.finish(key, done, WINDOW_MS)
        assert await subject.store.claim(key, "fp-1", LEASE_MS) == done

    runner.run(scenario())


def test_a_lease_ends_and_the_key_is_free_again(runner: asyncio.Runner, subject: Subject,
                                                key: str) -> None:
    async def scenario() -> None:
        assert await subject.store.claim(key, "fp-1", SHORT_MS) is None
        assert await subject.store.claim(key, "fp-1", SHORT_MS) is not None
        await subject.elapse(SHORT_MS)
        # The request that claimed it died: another may claim the key.
        assert await subject.store.claim(key, "fp-2", LEASE_MS) is None
        # A claim of an interrupted key takes a new lease, which ends as the first did.
        await subject.store.finish(key, KeyRecord("fp-2", State.INTERRUPTED, frozenset({2})),
                                   WINDOW_MS)
        reclaimed = await subject.store.claim(key, "fp-2", SHORT_MS)
        assert reclaimed is not None and reclaimed.state is State.INTERRUPTED
        await subject.elapse(SHORT_MS)
        assert await subject.store.claim(key, "fp-2", LEASE_MS) is None

    runner.run(scenario())


def test_a_finished_key_is_kept_for_its_window_and_then_forgotten(
        runner: asyncio.Runner, subject: Subject, key: str) -> None:
    async def scenario() -> None:
        assert await subject.store.claim(key, "fp-1", 1) is None
        done = KeyRecord("fp-1", State.DONE, status=200, answer=ANSWER)
        await subject.store.finish(key, done, SHORT_MS)  # the window, not the lease
        await subject.elapse(1)
        assert await subject.store.claim(key, "fp-1", LEASE_MS) == done
        await subject.elapse(SHORT_MS)
        assert await subject.store.claim(key, "fp-1", LEASE_MS) is None

    runner.run(scenario())


def test_of_concurrent_claims_of_one_key_exactly_one_wins(
        runner: asyncio.Runner, subject: Subject, key: str) -> None:
    async def scenario() -> None:
        claims = await asyncio.gather(*(subject.store.claim(key, f"fp-{n % 2}", LEASE_MS)
                                        for n in range(20)))
        assert sum(claim is None for claim in claims) == 1
        winner = next(n for n, claim in enumerate(claims) if claim is None)
        assert {claim for claim in claims if claim is not None} == {
            KeyRecord(f"fp-{winner % 2}", State.RUNNING)}

    runner.run(scenario())


def test_concurrent_claims_of_an_interrupted_key_claim_it_once(
        runner: asyncio.Runner, subject: Subject, key: str) -> None:
    async def scenario() -> None:
        await subject.store.claim(key, "fp-1", LEASE_MS)
        await subject.store.finish(key, KeyRecord("fp-1", State.INTERRUPTED, frozenset({4})),
                                   WINDOW_MS)
        claims = await asyncio.gather(*(subject.store.claim(key, "fp-1", LEASE_MS)
                                        for _ in range(20)))
        states = [claim.state for claim in claims if claim is not None]
        assert len(states) == 20
        assert states.count(State.INTERRUPTED) == 1, "one retry takes the key, the rest wait"
        assert states.count(State.RUNNING) == 19

    runner.run(scenario())

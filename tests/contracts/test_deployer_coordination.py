"""The deployer's coordination contracts (checkpoint, leader election, wake-ups), one suite
over the in-memory and the PostgreSQL adapters."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from core.domain.events import NewEvent, RollbackRequested, StreamAppend
from deployer.coordination import (
    CheckpointStore,
    LeaderElection,
    MemoryCheckpointStore,
    MemoryLeaderElection,
    PostgresCheckpointStore,
    PostgresLeaderElection,
    SavedCheckpoint,
)
from registry.store.base import RegistryStore
from registry.store.memory import MemoryRegistryStore
from registry.store.postgres import PostgresRegistryStore


@dataclass(frozen=True)
class Coordination:
    registry: RegistryStore
    """The log whose appends wake the leader."""
    checkpoints: CheckpointStore
    election: Callable[[], LeaderElection]
    """The election as one more worker sees it."""


@pytest.fixture(params=["memory", "postgres"])
def coordination(request: pytest.FixtureRequest) -> Iterator[Coordination]:
    if request.param == "memory":
        registry = MemoryRegistryStore()
        shared = MemoryLeaderElection(registry)
        yield Coordination(registry, MemoryCheckpointStore(), lambda: shared)
    else:
        store: PostgresRegistryStore = request.getfixturevalue("store")
        # A key of this test's own: no other deployer in the database contends for it.
        key = random.randrange(1, 2**62)
        yield Coordination(store, PostgresCheckpointStore(store.engine),
                           lambda: PostgresLeaderElection(store.engine, lock_key=key))


def _append(registry: RegistryStore) -> None:
    stream = "deployment:v"
    registry.append([StreamAppend(stream, len(registry.read_stream(stream)),
                                  (NewEvent(RollbackRequested(view="v", to_version=1)),))])


# --------------------------------------------------------------------------- checkpoint

def test_there_is_no_checkpoint_before_the_first_save(coordination: Coordination) -> None:
    assert coordination.checkpoints.load() is None


def test_a_saved_checkpoint_loads_back_and_the_next_replaces_it(coordination: Coordination,
                                                                ) -> None:
    checkpoints = coordination.checkpoints
    state = {"user_clicks": {"versions": [1, 2], "active": None, "nested": {"a": "b"}}}
    checkpoints.save(SavedCheckpoint(7, state))
    assert checkpoints.load() == SavedCheckpoint(7, state)
    checkpoints.save(SavedCheckpoint(9, {}))
    assert checkpoints.load() == SavedCheckpoint(9, {})


# --------------------------------------------------------------------------- leadership

def test_one_worker_leads_at_a_time(coordination: Coordination) -> None:
    with coordination.election().try_lead() as first:
        assert first is not None
        with coordination.election().try_lead() as second:
            assert second is None
    with coordination.election().try_lead() as after:
        assert after is not None, "leaving the context hands leadership over"


def test_a_worker_on_another_thread_cannot_lead_meanwhile(coordination: Coordination) -> None:
    outcome: list[bool] = []

    def contend() -> None:
        with coordination.election().try_lead() as leadership:
            outcome.append(leadership is not None)

    with coordination.election().try_lead() as leader:
        assert leader is not None
        other = threading.Thread(target=contend)
        other.start()
        other.join(timeout=30)
    assert outcome == [False]


# --------------------------------------------------------------------------- wake-ups

def test_without_appends_the_leader_waits_the_timeout(coordination: Coordination) -> None:
    with coordination.election().try_lead() as leadership:
        assert leadership is not None
        started = time.monotonic()
        leadership.wait_for_events(0.3)
        assert time.monotonic() - started >= 0.25


def test_an_append_wakes_the_waiting_leader(coordination: Coordination) -> None:
    with coordination.election().try_lead() as leadership:
        assert leadership is not None
        appender = threading.Timer(0.2, _append, [coordination.registry])
        appender.start()
        started = time.monotonic()
        leadership.wait_for_events(20)
        appender.join()
        assert time.monotonic() - started < 10


def test_an_append_while_the_leader_was_busy_is_not_lost(coordination: Coordination) -> None:
    with coordination.election().try_lead() as leadership:
        assert leadership is not None
        _append(coordination.registry)  # between the leader's read and its wait
        started = time.monotonic()
        leadership.wait_for_events(20)
        assert time.monotonic() - started < 10
